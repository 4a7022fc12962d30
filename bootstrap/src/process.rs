//! Starting a child process with its data channel on a socketpair.

use std::os::fd::{AsRawFd, OwnedFd};
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use econtext_actors::supervisor::Carrier;
use econtext_actors::DeadReason;
use futures::future::{FutureExt, LocalBoxFuture};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use tokio::process::{Child, ChildStderr, Command};

use crate::error::ConnectError;
use crate::method::SpawnSpec;
use crate::pty::{self, PtyMaster};

/// A started child: its data socket (stdin and stdout), stderr, the pty
/// master when it has a controlling terminal, and the process itself.
pub struct Spawned {
    pub data: tokio::net::UnixStream,
    pub stderr: ChildStderr,
    pub tty: Option<PtyMaster>,
    pub process: ChildProcess,
}

/// Spawns `argv` with stdin and stdout on one end of a socketpair.
pub fn spawn_local(argv: &[String], env: &[(String, String)]) -> Result<Spawned, ConnectError> {
    spawn(argv, env, false, false)
}

/// Spawns what `spec` describes (argv, env, session and pty).
pub fn spawn_spec(spec: &SpawnSpec) -> Result<Spawned, ConnectError> {
    spawn(&spec.argv, &spec.env, spec.new_session, spec.tty)
}

/// Spawns `argv` with stdin and stdout on one end of a socketpair and
/// stderr on a pipe. `new_session`: the child gets its own session, so it
/// never reads the user's terminal; `tty`: and a fresh pty as its
/// controlling terminal, whose master is returned.
pub fn spawn(
    argv: &[String],
    env: &[(String, String)],
    new_session: bool,
    tty: bool,
) -> Result<Spawned, ConnectError> {
    if argv.is_empty() {
        return Err(ConnectError::Spawn {
            program: String::new(),
            reason: "empty argv".into(),
        });
    }
    let (ours, theirs) = std::os::unix::net::UnixStream::pair()?;
    grow_send_buffer(&ours);
    grow_send_buffer(&theirs);
    let theirs_out = theirs.try_clone()?;
    let pty = if tty { Some(pty::open()?) } else { None };
    let mut cmd = Command::new(&argv[0]);
    cmd.args(&argv[1..])
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::from(OwnedFd::from(theirs)))
        .stdout(Stdio::from(OwnedFd::from(theirs_out)))
        .stderr(Stdio::piped())
        .kill_on_drop(false);
    if let Some(p) = &pty {
        let slave = p.slave.as_raw_fd();
        // SAFETY: make_controlling only makes async-signal-safe syscalls.
        unsafe {
            cmd.pre_exec(move || pty::make_controlling(slave));
        }
    } else if new_session {
        // SAFETY: setsid is async-signal-safe.
        unsafe {
            cmd.pre_exec(|| {
                if libc::setsid() < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
    }
    let mut child = cmd.spawn().map_err(|e| ConnectError::Spawn {
        program: argv[0].clone(),
        reason: e.to_string(),
    })?;
    let stderr = child.stderr.take().expect("stderr was piped");
    ours.set_nonblocking(true)?;
    let data = tokio::net::UnixStream::from_std(ours)?;
    let pid = child.id().unwrap_or(0);
    // We keep the slave open too, for as long as the process lives: a
    // master whose slave no process has open reads EIO, and the child
    // opens /dev/tty only when it prompts. The master is kept twice: one
    // to read and answer, one held by the process so that the child's
    // terminal never hangs up under it.
    let (tty, keep) = match pty {
        Some(p) => {
            let keep = vec![p.master.try_clone()?, p.slave];
            (Some(PtyMaster::new(p.master)?), keep)
        }
        None => (None, Vec::new()),
    };
    Ok(Spawned {
        data,
        stderr,
        tty,
        process: ChildProcess {
            child: Some(child),
            pid,
            exited: Arc::new(AtomicBool::new(false)),
            _tty: keep,
        },
    })
}

/// What a socketpair's end may hold unread: the kernel doubles it (and
/// caps it at twice `net.core.wmem_max`), so 512 KiB. A file chunk (256
/// KiB) then goes in one write: with the default 208 KiB it took four
/// `sendto`s and as many waits for writability per chunk, because a Unix
/// socket signals room only once three quarters of its buffer are free.
/// Not more: what sits in the socket is ahead of any call (our own queue
/// lets calls overtake file chunks).
const SEND_BUFFER: libc::c_int = 256 << 10;

fn grow_send_buffer(s: &std::os::unix::net::UnixStream) {
    let size = SEND_BUFFER;
    // SAFETY: a valid socket fd and a c_int option of the size given.
    // Only an optimisation: a refusal leaves the default.
    unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_SNDBUF,
            (&size as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        );
    }
}

/// A child process as a supervisor's [`Carrier`]: it can be waited for
/// once and killed until it has been reaped.
pub struct ChildProcess {
    child: Option<Child>,
    pid: u32,
    exited: Arc<AtomicBool>,
    /// The pty's master and slave, if any: closing the master would hang
    /// up the child; the slave keeps the master from reading EIO.
    _tty: Vec<OwnedFd>,
}

impl ChildProcess {
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Waits briefly for an exit status, for error messages.
    pub async fn status_within(&mut self, after: std::time::Duration) -> String {
        let Some(child) = self.child.as_mut() else {
            return "already reaped".into();
        };
        match tokio::time::timeout(after, child.wait()).await {
            Ok(Ok(st)) => {
                self.exited.store(true, Ordering::SeqCst);
                describe(st).to_string()
            }
            Ok(Err(e)) => e.to_string(),
            Err(_) => "still running".into(),
        }
    }
}

fn describe(st: std::process::ExitStatus) -> DeadReason {
    use std::os::unix::process::ExitStatusExt;
    match (st.code(), st.signal()) {
        (Some(status), _) => DeadReason::Exited { status },
        (_, Some(signal)) => DeadReason::Signalled { signal },
        _ => DeadReason::Other(st.to_string()),
    }
}

impl Carrier for ChildProcess {
    fn wait(&mut self) -> LocalBoxFuture<'static, DeadReason> {
        let exited = self.exited.clone();
        match self.child.take() {
            Some(mut child) => async move {
                let how = match child.wait().await {
                    Ok(st) => describe(st),
                    Err(e) => DeadReason::Other(e.to_string()),
                };
                exited.store(true, Ordering::SeqCst);
                how
            }
            .boxed_local(),
            None => {
                futures::future::ready(DeadReason::Other("already reaped".into())).boxed_local()
            }
        }
    }

    fn kill(&mut self) {
        // Only while not yet reaped: after that the pid may be reused.
        if !self.exited.load(Ordering::SeqCst) && self.pid != 0 {
            let _ = kill(Pid::from_raw(self.pid as i32), Signal::SIGKILL);
        }
    }
}

impl Drop for ChildProcess {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.start_kill();
            // tokio reaps orphaned children in the background.
            drop(c);
        }
    }
}
