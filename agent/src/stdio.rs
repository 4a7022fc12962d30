//! The agent's stdio and logs, forwarded like a Python child's: what the
//! program writes on fds 1 and 2 becomes FORWARD_LOG lines (`stdout` at
//! level 20, `stderr` at 30), and its slog records go to the master at
//! their level. fd 0 and 1 themselves carry the stream, so they are moved
//! away first ([`take_data_fds`]) and a stray `println!` can never corrupt
//! a frame.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::{Arc, Mutex};

use actix::prelude::*;
use econtext_actors::router::{Router, Send};
use econtext_wire::messages::ForwardLog;
use econtext_wire::{handles, payload, ContextId, Frame, Header};
use nix::fcntl::{fcntl, FcntlArg, OFlag};
use slog::{Drain, OwnedKVList, Record, KV};
use tokio::io::AsyncReadExt;

/// Longest forwarded line; the rest of a longer one follows as more lines.
const MAX_LINE: usize = 16 * 1024;

/// Copies of fds 0 and 1 (close-on-exec, above 2) for the stream.
pub fn take_data_fds() -> nix::Result<(OwnedFd, OwnedFd)> {
    let dup = |fd: RawFd| -> nix::Result<OwnedFd> {
        let n = fcntl(fd, FcntlArg::F_DUPFD_CLOEXEC(3))?;
        // SAFETY: fcntl just returned this new descriptor; we own it.
        Ok(unsafe { OwnedFd::from_raw_fd(n) })
    };
    Ok((dup(0)?, dup(1)?))
}

/// Puts /dev/null on fd 0 and a pipe on fds 1 and 2 each; returns the
/// pipes' read ends (stdout's, stderr's).
pub fn redirect_stdio() -> nix::Result<(OwnedFd, OwnedFd)> {
    let null = nix::fcntl::open("/dev/null", OFlag::O_RDWR, nix::sys::stat::Mode::empty())?;
    nix::unistd::dup2(null, 0)?;
    if null > 2 {
        nix::unistd::close(null)?;
    }
    let mut ends = Vec::new();
    for fd in [1, 2] {
        let (r, w) = nix::unistd::pipe2(OFlag::O_CLOEXEC)?;
        nix::unistd::dup2(w.as_raw_fd(), fd)?;
        ends.push(r);
    }
    let err = ends.pop().expect("two pipes");
    let out = ends.pop().expect("two pipes");
    Ok((out, err))
}

fn forward_log(me: ContextId, logger: &str, level: u8, message: String) -> Frame {
    let rec = ForwardLog {
        logger: logger.to_string(),
        level,
        message,
    };
    let data = payload::encode(&rec).expect("a log record encodes");
    Frame::new(
        Header::new(handles::MASTER_ID, me, handles::FORWARD_LOG, 0),
        data,
    )
}

/// Forwards each line read from `fd` as a FORWARD_LOG record, waiting on
/// the router (backpressure) rather than buffering without bound.
pub async fn forward_lines(
    fd: OwnedFd,
    me: ContextId,
    logger: &'static str,
    level: u8,
    router: Addr<Router>,
) {
    let Ok(mut rx) = tokio::net::unix::pipe::Receiver::from_owned_fd(fd) else {
        return;
    };
    let mut buf = Vec::new();
    let mut chunk = vec![0u8; 4096];
    loop {
        let n = match rx.read(&mut chunk).await {
            Ok(0) | Err(_) => 0,
            Ok(n) => n,
        };
        if n == 0 {
            if !buf.is_empty() {
                let line = String::from_utf8_lossy(&buf).into_owned();
                let _ = router
                    .send(Send(forward_log(me, logger, level, line)))
                    .await;
            }
            return;
        }
        buf.extend_from_slice(&chunk[..n]);
        while let Some(end) = buf
            .iter()
            .position(|&b| b == b'\n')
            .or((buf.len() >= MAX_LINE).then_some(MAX_LINE - 1))
        {
            let raw: Vec<u8> = buf.drain(..=end).collect();
            let raw = raw.strip_suffix(b"\n").unwrap_or(&raw);
            let line = String::from_utf8_lossy(raw).into_owned();
            if router
                .send(Send(forward_log(me, logger, level, line)))
                .await
                .is_err()
            {
                return;
            }
        }
    }
}

/// Python's number for a slog level.
pub fn python_level(l: slog::Level) -> u8 {
    match l {
        slog::Level::Critical => 50,
        slog::Level::Error => 40,
        slog::Level::Warning => 30,
        slog::Level::Info => 20,
        slog::Level::Debug => 10,
        slog::Level::Trace => 5,
    }
}

/// A slog drain that sends records to the master as FORWARD_LOG. Records
/// made before the router exists, or while its mailbox is full, are
/// dropped (logging never blocks the context, and a start-up buffer would
/// be one more queue to bound) but counted: the next record that goes is
/// preceded by a warning saying how many were lost.
pub struct ForwardDrain {
    me: ContextId,
    min_level: u8,
    router: Arc<Mutex<Option<Addr<Router>>>>,
    dropped: std::sync::atomic::AtomicU64,
}

impl ForwardDrain {
    pub fn new(me: ContextId, min_level: u8) -> (Self, Arc<Mutex<Option<Addr<Router>>>>) {
        let router = Arc::new(Mutex::new(None));
        (
            ForwardDrain {
                me,
                min_level,
                router: router.clone(),
                dropped: Default::default(),
            },
            router,
        )
    }
}

struct KvText<'a>(&'a mut String);

impl slog::Serializer for KvText<'_> {
    fn emit_arguments(&mut self, key: slog::Key, val: &std::fmt::Arguments) -> slog::Result {
        use std::fmt::Write;
        let _ = write!(self.0, " {key}={val}");
        Ok(())
    }
}

impl Drain for ForwardDrain {
    type Ok = ();
    type Err = slog::Never;

    fn log(&self, r: &Record, kv: &OwnedKVList) -> Result<(), slog::Never> {
        let level = python_level(r.level());
        if level < self.min_level {
            return Ok(());
        }
        use std::sync::atomic::Ordering;
        let Some(router) = self.router.lock().ok().and_then(|g| g.clone()) else {
            self.dropped.fetch_add(1, Ordering::Relaxed);
            return Ok(());
        };
        let lost = self.dropped.swap(0, Ordering::Relaxed);
        if lost > 0 {
            let why = format!("{lost} log records dropped (router not up yet, or busy)");
            let f = forward_log(self.me, "econtext.agent", 30, why);
            if router.try_send(Send(f)).is_err() {
                self.dropped.fetch_add(lost, Ordering::Relaxed);
            }
        }
        let mut text = r.msg().to_string();
        let _ = r.kv().serialize(r, &mut KvText(&mut text));
        let _ = kv.serialize(r, &mut KvText(&mut text));
        if router
            .try_send(Send(forward_log(self.me, r.module(), level, text)))
            .is_err()
        {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
        Ok(())
    }
}

#[cfg(test)]
mod forward_drain_tests {
    use super::*;
    use std::sync::atomic::Ordering;

    #[test]
    fn records_made_before_the_router_exists_are_counted() {
        let (drain, _router) = ForwardDrain::new(1, 20);
        let drain = Arc::new(drain);
        let log = slog::Logger::root(drain.clone(), slog::o!());
        slog::info!(log, "early"; "k" => 1);
        slog::warn!(log, "early too");
        slog::debug!(log, "below the level: not forwarded, not lost");
        assert_eq!(drain.dropped.load(Ordering::Relaxed), 2);
    }
}
