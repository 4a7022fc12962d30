//! Functions every agent offers besides the program's own.
//!
//! - `os.kill(pid, signal)`: what the master's supervision calls on an
//!   intermediate to stop a child the intermediate started
//!   (`Stopper::RemoteProcess`), with the signature of Python's. Unlike
//!   Python's it reaches only this agent's own children: the master may
//!   stop what it created through us, nothing else on the host.

use econtext_actors::dispatch::Functions;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

/// Adds the built-ins the program did not define itself.
pub fn add_builtins(functions: &mut Functions) {
    if !functions.contains("os.kill") {
        functions.register_fallible("os.kill", |(pid, signal): (u32, i32)| {
            kill_own_child(pid, signal)
        });
    }
}

/// Sends `signal` (0 probes) to `pid` if it is a child of this process.
fn kill_own_child(pid: u32, signal: i32) -> Result<(), String> {
    let ppid = parent_of(pid).ok_or_else(|| format!("no such process: {pid}"))?;
    if ppid != std::process::id() {
        return Err(format!("process {pid} is not a child of this agent"));
    }
    let signal = match signal {
        0 => None,
        s => Some(Signal::try_from(s).map_err(|e| format!("signal {s}: {e}"))?),
    };
    kill(Pid::from_raw(pid as i32), signal).map_err(|e| format!("kill {pid}: {e}"))
}

/// The parent pid in /proc/PID/stat (after the `(comm)` field, which may
/// hold spaces and parentheses).
fn parent_of(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 2..];
    rest.split(' ').nth(1)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_own_children_are_signalled() {
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        assert_eq!(kill_own_child(child.id(), 0), Ok(()));
        // Our parent (the test harness's) is not our child.
        let parent = std::os::unix::process::parent_id();
        let err = kill_own_child(parent, 15).unwrap_err();
        assert!(err.contains("not a child"), "{err}");
        assert_eq!(kill_own_child(child.id(), 9), Ok(()));
        child.wait().unwrap();
        assert!(kill_own_child(child.id(), 0).is_err(), "reaped: gone");
    }
}
