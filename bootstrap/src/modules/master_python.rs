//! Which Python the master's module path is for, so a child that cannot
//! compile a served module (syntax of a newer Python) names both
//! versions: its own and this one.
//!
//! The master is not a Python process, so "the master's Python" is the
//! interpreter the module path belongs to: the `pythonX.Y` of an entry
//! such as `.../lib/python3.11/site-packages` (a venv, a distribution's
//! site-packages, pip's `--user` directory), else the `python3` on the
//! master's PATH, asked once in the background when the finder is made
//! (so no request waits for it unless it is slower than a child's
//! start-up), else unknown (left out of the record).

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::mpsc::{channel, Receiver};
use std::time::Duration;

/// How long the first served module may wait for the PATH probe.
const PROBE_WAIT: Duration = Duration::from_secs(3);

/// The version, known or still being probed.
#[derive(Debug, Default)]
pub(crate) struct MasterPython {
    known: Option<String>,
    probe: Option<Receiver<String>>,
}

impl MasterPython {
    /// From the module path; starts the PATH probe only when no entry
    /// names a version (and only for a non-empty path: an empty one
    /// serves built-ins only, which never fail to compile).
    pub(crate) fn for_path(path: &[PathBuf]) -> Self {
        if let Some(v) = path.iter().find_map(|p| version_in_path(p)) {
            return MasterPython {
                known: Some(v),
                probe: None,
            };
        }
        if path.is_empty() {
            return MasterPython::default();
        }
        let (tx, rx) = channel();
        std::thread::spawn(move || {
            let _ = tx.send(probe_path_python().unwrap_or_default());
        });
        MasterPython {
            known: None,
            probe: Some(rx),
        }
    }

    /// The version ("" when unknown); waits for the probe at most
    /// [`PROBE_WAIT`], once.
    pub(crate) fn get(&mut self) -> &str {
        if let Some(rx) = self.probe.take() {
            self.known = Some(rx.recv_timeout(PROBE_WAIT).unwrap_or_default());
        }
        self.known.as_deref().unwrap_or("")
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
/// with something shaped like a version.
fn probe_path_python() -> Option<String> {
    let out = Command::new("python3")
        .args([
            "-I",
            "-S",
            "-c",
            "import platform; print(platform.python_version())",
        ])
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .ok()?;
    let v = String::from_utf8(out.stdout).ok()?.trim().to_string();
    let ok = out.status.success()
        && !v.is_empty()
        && v.len() <= 16
        && v.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'+');
    ok.then_some(v)
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
        assert_eq!(MasterPython::for_path(&p).get(), "3.12");
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
        assert_eq!(MasterPython::for_path(&[]).get(), "");
    }
}
