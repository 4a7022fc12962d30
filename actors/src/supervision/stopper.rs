//! How a supervisor ends the context it supervises, for each kind of
//! context: a process of ours, a process an intermediate started, or an
//! in-process context behind an in-memory link.

use std::time::Duration;

use actix::Recipient;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use crate::router::CloseStream;
use crate::Context;

/// What ends one context.
#[derive(Clone)]
pub enum Stopper {
    /// A process that is a child of this OS process: a direct child of the
    /// master, or one an in-process Rust intermediate started.
    LocalProcess { pid: u32 },
    /// A process a Python intermediate started: signalled through that
    /// intermediate (`os.kill`), since it is not ours.
    RemoteProcess { via: Context, pid: u32 },
    /// An in-process Rust context: closing the parent's end of its link
    /// ends it (it shuts down when its parent is lost).
    Link(Recipient<CloseStream>),
}

impl std::fmt::Debug for Stopper {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Stopper::LocalProcess { pid } => write!(f, "LocalProcess({pid})"),
            Stopper::RemoteProcess { via, pid } => {
                write!(f, "RemoteProcess({pid} via {})", via.id())
            }
            Stopper::Link(_) => f.write_str("Link"),
        }
    }
}

/// How often a stopper checks whether its process is gone.
const POLL: Duration = Duration::from_millis(20);

impl Stopper {
    /// Sends `signal` (SIGTERM, SIGKILL), or closes the link.
    async fn signal(&self, signal: Signal) {
        match self {
            Stopper::LocalProcess { pid } => {
                let _ = kill(Pid::from_raw(*pid as i32), signal);
            }
            Stopper::RemoteProcess { via, pid } => {
                if let Ok(c) = via.call_with("os", "kill").args((*pid, signal as i32)) {
                    let _ = c.timeout(Duration::from_secs(2)).returning::<()>().await;
                }
            }
            Stopper::Link(closer) => closer.do_send(CloseStream),
        }
    }

    /// True once the process no longer exists (reaped). A link is gone as
    /// soon as it is closed.
    async fn gone(&self) -> bool {
        match self {
            Stopper::LocalProcess { pid } => {
                kill(Pid::from_raw(*pid as i32), None) == Err(nix::errno::Errno::ESRCH)
            }
            Stopper::RemoteProcess { via, pid } => {
                let probe = via.call_with("os", "kill").args((*pid, 0));
                match probe {
                    // OSError (no such process), or the intermediate is gone.
                    Ok(c) => c
                        .timeout(Duration::from_secs(2))
                        .returning::<()>()
                        .await
                        .is_err(),
                    Err(_) => true,
                }
            }
            Stopper::Link(closer) => !closer.connected(),
        }
    }

    async fn wait_gone(&self, within: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            if self.gone().await {
                return true;
            }
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// SIGTERM, then SIGKILL if it is still there after `grace`; resolves
    /// once it is gone or a bounded wait after SIGKILL has passed.
    pub async fn terminate(&self, grace: Duration) -> bool {
        if let Stopper::Link(_) = self {
            self.signal(Signal::SIGTERM).await;
            return true;
        }
        self.signal(Signal::SIGTERM).await;
        if self.wait_gone(grace).await {
            return true;
        }
        self.signal(Signal::SIGKILL).await;
        self.wait_gone(Duration::from_secs(2)).await
    }

    /// Waits at most `within` for it to be gone by itself.
    pub async fn exited_within(&self, within: Duration) -> bool {
        self.wait_gone(within).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_process_that_ignores_sigterm_gets_sigkill_after_the_grace_period() {
        let mut child = tokio::process::Command::new("sh")
            .args(["-c", "trap '' TERM; echo ready; sleep 30"])
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("sh");
        let pid = child.id().expect("pid");
        // Wait until the trap is set.
        let mut out = child.stdout.take().unwrap();
        let mut b = [0u8; 6];
        tokio::io::AsyncReadExt::read_exact(&mut out, &mut b)
            .await
            .unwrap();
        // Reap it when it dies, as a ProcessWatch would.
        let reaper = tokio::spawn(async move { child.wait().await });
        let grace = Duration::from_millis(300);
        let t = std::time::Instant::now();
        assert!(Stopper::LocalProcess { pid }.terminate(grace).await);
        assert!(
            t.elapsed() >= grace,
            "SIGTERM was ignored: {:?}",
            t.elapsed()
        );
        use std::os::unix::process::ExitStatusExt;
        let status = reaper.await.unwrap().unwrap();
        assert_eq!(status.signal(), Some(9));
    }
}
