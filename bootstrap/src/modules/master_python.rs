//! Which Python the master's module path is for, so a child that cannot
//! compile a served module (syntax of a newer Python) names both
//! versions: its own and this one.
//!
//! The master is not a Python process, so "the master's Python" is the
//! interpreter the module path belongs to: the `pythonX.Y` of an entry
//! such as `.../lib/python3.11/site-packages` (a venv, a distribution's
//! site-packages, pip's `--user` directory), else the `python3` on the
//! master's PATH, else unknown (left out of the record).
//!
//! The PATH probe runs once per process, in a thread of its own, and is
//! killed after [`PROBE_WAIT`]. Nothing waits for it: the importer runs
//! on the runtime's thread, so a module prepared before the probe answers
//! goes out without the version, and the finder fills it in on a later
//! hit ([`MasterPython::get`] is a non-blocking read).

use std::io::Read;
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Once, OnceLock};
use std::time::{Duration, Instant};

/// How long the PATH probe may run before it is killed.
const PROBE_WAIT: Duration = Duration::from_secs(3);

/// The PATH probe's answer ("" when it failed or timed out), once known.
static PATH_PYTHON: OnceLock<String> = OnceLock::new();
static PROBE_STARTED: Once = Once::new();

/// The version, known from the path or read from the process-wide probe.
#[derive(Debug, Default)]
pub(crate) struct MasterPython {
    known: Option<String>,
    probed: bool,
}

impl MasterPython {
    /// From the module path; starts the PATH probe (once per process)
    /// only when no entry names a version (and only for a non-empty
    /// path: an empty one serves built-ins only, which never fail to
    /// compile).
    pub(crate) fn for_path(path: &[PathBuf]) -> Self {
        if let Some(v) = path.iter().find_map(|p| version_in_path(p)) {
            return MasterPython {
                known: Some(v),
                probed: false,
            };
        }
        if path.is_empty() {
            return MasterPython::default();
        }
        PROBE_STARTED.call_once(|| {
            std::thread::spawn(|| {
                let _ = PATH_PYTHON.set(probe_path_python().unwrap_or_default());
            });
        });
        MasterPython {
            known: None,
            probed: true,
        }
    }

    /// The version: `None` while the probe has not answered yet, `""`
    /// when it is unknown. Never waits.
    pub(crate) fn get(&self) -> Option<&str> {
        match (&self.known, self.probed) {
            (Some(v), _) => Some(v),
            (None, true) => PATH_PYTHON.get().map(String::as_str),
            (None, false) => Some(""),
        }
    }
}

/// `X.Y` from the last path component shaped `pythonX.Y`.
fn version_in_path(p: &std::path::Path) -> Option<String> {
    p.components().rev().find_map(|c| {
        let v = c.as_os_str().to_str()?.strip_prefix("python")?;
        let (major, minor) = v.split_once('.')?;
        let digits =
            |s: &str| !s.is_empty() && s.len() <= 3 && s.bytes().all(|b| b.is_ascii_digit());
        (digits(major) && digits(minor)).then(|| v.to_string())
    })
}

/// `platform.python_version()` of the `python3` on PATH, if it answers
/// within [`PROBE_WAIT`] with something shaped like a version.
fn probe_path_python() -> Option<String> {
    let mut child = Command::new("python3")
        .args([
            "-I",
            "-S",
            "-c",
            "import platform; print(platform.python_version())",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .ok()?;
    let exited_ok = wait_bounded(&mut child, PROBE_WAIT)?;
    // The child has exited and its few bytes are in the pipe; read them
    // without waiting for EOF (a grandchild may still hold the pipe).
    let mut stdout = child.stdout.take()?;
    let flags = nix::fcntl::fcntl(stdout.as_raw_fd(), nix::fcntl::FcntlArg::F_GETFL).ok()?;
    let flags = nix::fcntl::OFlag::from_bits_truncate(flags) | nix::fcntl::OFlag::O_NONBLOCK;
    nix::fcntl::fcntl(stdout.as_raw_fd(), nix::fcntl::FcntlArg::F_SETFL(flags)).ok()?;
    let mut buf = [0u8; 64];
    let n = stdout.read(&mut buf).unwrap_or(0);
    let out = String::from_utf8_lossy(&buf[..n]);
    let v = out.trim();
    let ok = exited_ok
        && !v.is_empty()
        && v.len() <= 16
        && v.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'+');
    ok.then(|| v.to_string())
}

/// Whether `child` exited successfully within `limit`; killed and reaped
/// (`None`) when it did not, or when waiting for it failed.
fn wait_bounded(child: &mut Child, limit: Duration) -> Option<bool> {
    let deadline = Instant::now() + limit;
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return Some(status.success()),
            Ok(None) if Instant::now() < deadline => {}
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                return None;
            }
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_site_packages_entry_names_the_version() {
        let p = [
            PathBuf::from("/srv/app"),
            PathBuf::from("/opt/venv/lib/python3.12/site-packages"),
        ];
        assert_eq!(MasterPython::for_path(&p).get(), Some("3.12"));
        assert_eq!(
            version_in_path("/usr/lib/python2.7/dist-packages".as_ref()).as_deref(),
            Some("2.7")
        );
        assert_eq!(
            version_in_path("/usr/lib/python3/dist-packages".as_ref()),
            None
        );
        assert_eq!(version_in_path("/home/pythonx.y/lib".as_ref()), None);
    }

    #[test]
    fn an_empty_path_probes_nothing() {
        assert_eq!(MasterPython::for_path(&[]).get(), Some(""));
    }

    #[test]
    fn a_probe_that_hangs_is_killed_at_its_bound() {
        let mut child = Command::new("sleep").arg("30").spawn().unwrap();
        let pid = child.id();
        assert_eq!(wait_bounded(&mut child, Duration::from_millis(50)), None);
        // Reaped: no such process remains.
        assert!(!std::path::Path::new(&format!("/proc/{pid}")).exists());
    }
}
