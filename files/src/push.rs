//! Push: this process sends local files to a context's `econtext.files`
//! receiver (or to an intermediate that relays them to several).
//!
//! A reader thread reads and hashes each file into chunk messages (the
//! data lands in its frame buffer, never copied again) a few chunks
//! ahead; the async side sends them while the window is open and reads
//! acks. Memory: the window on the link, plus the reader's lookahead.

use std::collections::HashMap;
use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::time::Instant;

use bytes::Bytes;
use econtext_actors::{Channel, Context, Error, Sender};
use econtext_wire::{ContextId, Value};
use futures::StreamExt;
use serde_bytes::ByteBuf;
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;

use crate::error::{FileError, FileErrorKind, LOCAL_HOST};
use crate::manifest::Entry;
use crate::options::{FanoutResult, TransferOptions, TransferReport};
use crate::progress::ProgressMeter;
use crate::proto::{self, Ack, Window, CHUNK_HEADROOM};

/// What to push: the manifest for the far side and, for each file entry,
/// where it is read from here.
pub(crate) struct PushPlan {
    /// The destination root on the far side (a directory).
    pub root: Vec<u8>,
    pub entries: Vec<Entry>,
    pub sources: Vec<Option<PathBuf>>,
    /// A single file's own name: where it goes if the destination turns
    /// out to be a directory.
    pub src_name: Option<Vec<u8>>,
}

pub(crate) enum ReadItem {
    Chunk { frame: Bytes, len: u64 },
    Skipped(u64),
    Fail { index: u32, error: FileError },
}

/// Maps a failed call into the transfer's error type.
pub(crate) fn call_error(host: &str, path: &str, e: Error) -> FileError {
    let kind = match &e {
        Error::Dead { .. } | Error::RouterGone | Error::Timeout { .. } => {
            FileErrorKind::ConnectionLost
        }
        _ => FileErrorKind::Io,
    };
    FileError::new(kind, host, path, e.to_string())
}

fn opts_value(o: &TransferOptions, relay: &[ContextId], name: Option<&[u8]>) -> Value {
    let mut m = vec![
        (Value::from("window"), Value::from(o.window)),
        (Value::from("chunk"), Value::from(o.chunk as u64)),
        (Value::from("fsync"), Value::from(o.fsync)),
    ];
    if let Some(n) = name {
        m.push((Value::from("name"), Value::Binary(n.to_vec())));
    }
    if !relay.is_empty() {
        m.push((
            Value::from("relay"),
            Value::Array(relay.iter().map(|c| Value::from(*c)).collect()),
        ));
    }
    Value::Map(m)
}

fn get<'a>(v: &'a Value, key: &str) -> Option<&'a Value> {
    v.as_map()?
        .iter()
        .find(|(k, _)| k.as_str() == Some(key))
        .map(|(_, v)| v)
}

/// Pushes `plan` to `ctx`; with `relay`, `ctx` is an intermediate that
/// forwards the one stream to each of `relay` (its children).
pub(crate) async fn push(
    ctx: &Context,
    plan: PushPlan,
    opts: &TransferOptions,
    relay: &[Context],
) -> Result<FanoutResult, FileError> {
    let started = Instant::now();
    let host = ctx.name().to_string();
    let root_text = String::from_utf8_lossy(&plan.root).into_owned();
    let relay_ids: Vec<ContextId> = relay.iter().map(|c| c.id()).collect();
    let mut ack = Channel::open(ctx.router(), ctx.me(), Some(ctx.id()))
        .await
        .map_err(|e| call_error(&host, &root_text, e))?;
    let reply: Value = ctx
        .call_with("econtext.files", "recv_begin")
        .args((
            ByteBuf::from(plan.root.clone()),
            &plan.entries,
            opts_value(opts, &relay_ids, plan.src_name.as_deref()),
            ack.sender(),
        ))
        .map_err(|e| call_error(&host, &root_text, e))?
        .timeout(opts.stall_timeout)
        .returning()
        .await
        .map_err(|e| call_error(&host, &root_text, e))?;
    if let Some(err) = get(&reply, "error") {
        let e = proto::decode_ack(&Value::Array(vec![1.into(), (-1).into(), err.clone()]))
            .map_err(|m| FileError::new(FileErrorKind::Protocol, &host, &root_text, m))?;
        if let Ack::Error { error, .. } = e {
            return Err(error.on(&host));
        }
    }
    let handle = get(&reply, "handle")
        .and_then(|h| h.as_u64())
        .and_then(|h| u32::try_from(h).ok())
        .ok_or_else(|| {
            FileError::new(FileErrorKind::Protocol, &host, &root_text, "no data handle")
        })?;
    let mut resume = HashMap::new();
    for r in get(&reply, "resume")
        .and_then(|r| r.as_array())
        .into_iter()
        .flatten()
    {
        if let (Some(i), Some(off), Some(sha)) = (r[0].as_u64(), r[1].as_u64(), r[2].as_str()) {
            resume.insert(i as u32, (off, sha.to_string()));
        }
    }
    // Who we expect a Done from, and their names for errors.
    let mut names: HashMap<ContextId, String> = HashMap::new();
    if relay.is_empty() {
        names.insert(ctx.id(), host.clone());
    } else {
        let relayed: Vec<u64> = get(&reply, "relayed")
            .and_then(|r| r.as_array())
            .map(|a| a.iter().filter_map(|x| x.as_u64()).collect())
            .unwrap_or_default();
        for c in relay {
            names.insert(c.id(), c.name().to_string());
            let _ = relayed; // failures to start are reported as acks
        }
    }
    let data = Sender::new(ctx.router().clone(), ctx.me(), ctx.id(), handle);
    let mut guard = crate::guard::AbandonGuard::new(ctx, handle);
    let (tx, mut rx) = mpsc::channel::<ReadItem>(4);
    let files_total = plan.entries.len() as u64;
    let bytes_total: u64 = plan
        .entries
        .iter()
        .filter(|e| e.is_file())
        .map(|e| e.size())
        .sum();
    let chunk = opts.chunk;
    let entries = plan.entries.clone();
    let sources = plan.sources;
    let corrupt = opts.corrupt_at();
    std::thread::Builder::new()
        .name("econtext-push-reader".into())
        .spawn(move || read_all(entries, sources, resume, chunk, corrupt, tx))
        .map_err(|e| FileError::local(std::path::Path::new("reader thread"), &e))?;

    let mut window = Window::new(opts.window);
    let mut meter = ProgressMeter::new(&host, started, bytes_total, files_total);
    let mut errors: HashMap<ContextId, Vec<FileError>> = HashMap::new();
    let mut done: HashMap<ContextId, (u64, u64)> = HashMap::new();
    let mut local_errors: Vec<FileError> = Vec::new();
    let (mut sent, mut skipped, mut files) = (0u64, 0u64, 0u64);
    let mut reading = true;
    let mut ended = false;
    let lost = |why: String| FileError::new(FileErrorKind::ConnectionLost, &host, &root_text, why);
    while done.len() < names.len() {
        if !reading && !ended {
            data.send(&(proto::D_END,))
                .await
                .map_err(|e| lost(e.to_string()))?;
            ended = true;
        }
        tokio::select! {
            item = rx.recv(), if reading && window.open() => match item {
                Some(ReadItem::Chunk { frame, len }) => {
                    data.send_bulk(frame).await.map_err(|e| lost(e.to_string()))?;
                    window.sent(len);
                    sent += len;
                }
                Some(ReadItem::Skipped(n)) => skipped += n,
                Some(ReadItem::Fail { index, error }) => {
                    let wire = (error.kind.as_str(), &error.path, &error.detail);
                    data.send(&(proto::D_FAIL, index, wire)).await.map_err(|e| lost(e.to_string()))?;
                    local_errors.push(error);
                }
                None => reading = false,
            },
            msg = tokio::time::timeout(opts.stall_timeout, ack.next()) => {
                let msg = match msg {
                    Err(_) => return Err(lost(format!("no progress for {:?}", opts.stall_timeout))),
                    Ok(None) => {
                        let why = ack.dead_reason().map(|r| r.to_string()).unwrap_or_else(|| "closed".into());
                        for (c, n) in &names {
                            if !done.contains_key(c) {
                                errors.entry(*c).or_default().push(FileError::new(
                                    FileErrorKind::ConnectionLost, n, &root_text, why.clone()));
                                done.insert(*c, (0, 0));
                            }
                        }
                        break;
                    }
                    Ok(Some(m)) => m,
                };
                let v = msg.decode::<Value>().map_err(|e| FileError::new(
                    FileErrorKind::Protocol, &host, &root_text, e.to_string()))?;
                match proto::decode_ack(&v) {
                    Ok(Ack::Credit { bytes, files: f }) => {
                        window.credit(bytes);
                        files = files.max(f);
                    }
                    Ok(Ack::Error { error, context, .. }) => {
                        let c = context.unwrap_or(ctx.id());
                        let name = names.get(&c).cloned().unwrap_or_else(|| host.clone());
                        errors.entry(c).or_default().push(error.on(&name));
                    }
                    Ok(Ack::Done { context, files: f, bytes }) => {
                        let c = if relay.is_empty() { ctx.id() } else { context };
                        done.insert(c, (f, bytes));
                    }
                    Err(m) => return Err(FileError::new(FileErrorKind::Protocol, &host, &root_text, m)),
                }
            }
        }
        if let (Some(f), Some(p)) = (
            &opts.progress,
            meter.update(Instant::now(), window.acked() + skipped, files, false),
        ) {
            f(&p);
        }
    }
    if let (Some(f), Some(p)) = (
        &opts.progress,
        meter.update(Instant::now(), window.acked() + skipped, files, true),
    ) {
        f(&p);
    }
    guard.disarm();
    let elapsed = started.elapsed();
    let mut out = Vec::new();
    let mut ids: Vec<_> = names.keys().copied().collect();
    ids.sort_unstable();
    for c in ids {
        let mut errs = local_errors.clone();
        errs.extend(errors.remove(&c).unwrap_or_default());
        let (f, _) = done.get(&c).copied().unwrap_or_default();
        let r = match errs.into_iter().next() {
            Some(e) => Err(e),
            None => Ok(TransferReport {
                host: names[&c].clone(),
                files: f,
                bytes: bytes_total,
                bytes_sent: sent,
                bytes_resumed: skipped,
                elapsed,
            }),
        };
        out.push((c, r));
    }
    Ok(out)
}

/// The reader thread: every file entry in order, as chunk messages (the
/// data of bulk frames: [`proto::bulk_chunk`]). `corrupt`: see
/// [`TransferOptions::corrupt_after_sealing`] (tests only).
pub(crate) fn read_all(
    entries: Vec<Entry>,
    sources: Vec<Option<PathBuf>>,
    resume: HashMap<u32, (u64, String)>,
    chunk: usize,
    corrupt: Option<u64>,
    tx: mpsc::Sender<ReadItem>,
) {
    for (i, e) in entries.iter().enumerate() {
        let Some(Some(path)) = sources.get(i).filter(|_| e.is_file()) else {
            continue;
        };
        let i = i as u32;
        let r = read_file(i, e, path, resume.get(&i), chunk, corrupt, &tx);
        match r {
            Ok(true) => {}
            Ok(false) => return, // the transfer is gone
            Err(error) => {
                if tx
                    .blocking_send(ReadItem::Fail { index: i, error })
                    .is_err()
                {
                    return;
                }
            }
        }
    }
}

fn mtime_ns(md: &std::fs::Metadata) -> i64 {
    md.mtime() * 1_000_000_000 + md.mtime_nsec()
}

/// Sends one file's chunks; Ok(false) when the receiving side is gone.
fn read_file(
    index: u32,
    e: &Entry,
    path: &PathBuf,
    resume: Option<&(u64, String)>,
    chunk: usize,
    corrupt: Option<u64>,
    tx: &mpsc::Sender<ReadItem>,
) -> Result<bool, FileError> {
    let io = |err: std::io::Error| FileError::local(path, &err);
    let changed = || {
        FileError::new(
            FileErrorKind::Changed,
            LOCAL_HOST,
            path.to_string_lossy(),
            "file changed while it was read",
        )
    };
    let mut f = std::fs::File::open(path).map_err(io)?;
    let size = e.size();
    let mut hash = Sha256::new();
    let mut off = 0u64;
    if let Some((at, sha)) = resume {
        // Resume only after a prefix that hashes the same here.
        let mut pre = Sha256::new();
        let n = std::io::copy(&mut (&mut f).take(*at), &mut HashWriter(&mut pre)).map_err(io)?;
        if n == *at && hex::encode(pre.clone().finalize()) == *sha {
            hash = pre;
            off = *at;
            if tx.blocking_send(ReadItem::Skipped(off)).is_err() {
                return Ok(false);
            }
        } else {
            use std::io::Seek;
            f.seek(std::io::SeekFrom::Start(0)).map_err(io)?;
        }
    }
    loop {
        let want = (size - off).min(chunk as u64) as usize;
        let mut buf = proto::chunk_buffer(want);
        let got = read_into_spare(&f, &mut buf, want).map_err(io)?;
        if got < want {
            return Err(changed());
        }
        // The only pass over the bytes here: the frame MAC of a bulk
        // frame does not cover them; this digest (one more block per
        // chunk) does, end to end.
        hash.update(&buf[CHUNK_HEADROOM..]);
        let sha256: [u8; 32] = hash.clone().finalize().into();
        let last = off + want as u64 >= size;
        if last {
            let md = f.metadata().map_err(io)?;
            let mut probe = [0u8; 1];
            if md.len() != size
                || mtime_ns(&md) != e.mtime_ns()
                || f.read(&mut probe).map_err(io)? != 0
            {
                return Err(changed());
            }
        }
        if let Some(at) = corrupt.filter(|at| (off..off + want as u64).contains(at)) {
            buf[CHUNK_HEADROOM + (at - off) as usize] ^= 1;
        }
        let frame = proto::bulk_chunk(buf, index, off, &sha256, last);
        if tx
            .blocking_send(ReadItem::Chunk {
                frame,
                len: want as u64,
            })
            .is_err()
        {
            return Ok(false);
        }
        off += want as u64;
        if last {
            return Ok(true);
        }
    }
}

/// Reads up to `want` bytes of `f` onto the end of `buf`, into its spare
/// capacity (reserved here) without zeroing it first: zeroing each 256
/// KiB chunk was 3% of the master's CPU in a push. (`read_to_end` would
/// not zero either, but without a size hint it reads 8 KiB, then 16 KiB,
/// and so on: six syscalls per chunk.) Fewer than `want` only at EOF.
fn read_into_spare(f: &std::fs::File, buf: &mut Vec<u8>, want: usize) -> std::io::Result<usize> {
    use std::os::fd::AsRawFd;
    buf.reserve(want);
    let mut got = 0;
    while got < want {
        let spare = buf.spare_capacity_mut();
        // SAFETY: read(2) writes at most `want - got` bytes at the start of
        // the spare capacity, which has at least that much room (reserved
        // above, minus what earlier reads appended); `set_len` then covers
        // exactly the bytes it wrote.
        let n = unsafe { nix::libc::read(f.as_raw_fd(), spare.as_mut_ptr().cast(), want - got) };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        if n == 0 {
            break;
        }
        // SAFETY: see above.
        unsafe { buf.set_len(buf.len() + n as usize) };
        got += n as usize;
    }
    Ok(got)
}

struct HashWriter<'a>(&'a mut Sha256);

impl std::io::Write for HashWriter<'_> {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.update(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}
