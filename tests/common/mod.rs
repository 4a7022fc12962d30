//! Shared helpers for the integration tests: the interpreters found on
//! this machine, a log capture, and running a test inside an actix system.

#![allow(dead_code)]

pub mod pypi;
pub mod sshd;
pub use sshd::skip;

use std::future::Future;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use econtext::{LocalOptions, Master, MasterOptions};
use slog::{o, Drain, Logger};

/// Every CPython the tests should cover: each pyenv version and the
/// system python3. Prints a loud SKIP line for what is missing.
pub fn interpreters() -> Vec<(PathBuf, String)> {
    let mut found = Vec::new();
    let mut paths: Vec<PathBuf> = std::fs::read_dir("/root/.pyenv/versions")
        .map(|rd| {
            rd.flatten()
                .map(|e| e.path().join("bin/python"))
                .filter(|p| p.exists())
                .collect()
        })
        .unwrap_or_default();
    paths.sort();
    paths.push(PathBuf::from("/usr/bin/python3"));
    for p in paths {
        let out = std::process::Command::new(&p)
            .args(["-c", "import platform; print(platform.python_version())"])
            .output();
        match out {
            Ok(o) if o.status.success() => {
                found.push((p, String::from_utf8_lossy(&o.stdout).trim().to_string()))
            }
            _ => skip(&format!("interpreter {} is not usable here", p.display())),
        }
    }
    if found.is_empty() {
        skip("no Python interpreter found; Python context tests cover nothing");
    }
    found
}

/// The default interpreter for tests that need just one.
pub fn python3() -> String {
    for p in [
        "/usr/bin/python3",
        "/root/.pyenv/versions/3.11.7/bin/python",
    ] {
        if std::path::Path::new(p).exists() {
            return p.to_string();
        }
    }
    "python3".to_string()
}

/// A log drain that keeps every record as one line of text.
#[derive(Clone, Default)]
pub struct Capture {
    pub lines: Arc<Mutex<Vec<String>>>,
}

impl Capture {
    pub fn logger(&self) -> Logger {
        Logger::root(CaptureDrain(self.clone()).fuse(), o!())
    }

    pub fn text(&self) -> String {
        self.lines.lock().unwrap().join("\n")
    }

    /// Waits up to `secs` for a line containing every needle.
    pub async fn wait_for(&self, needles: &[&str], secs: f64) -> bool {
        let end = std::time::Instant::now() + std::time::Duration::from_secs_f64(secs);
        loop {
            if self
                .lines
                .lock()
                .unwrap()
                .iter()
                .any(|l| needles.iter().all(|n| l.contains(n)))
            {
                return true;
            }
            if std::time::Instant::now() > end {
                return false;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    }
}

struct CaptureDrain(Capture);

impl Drain for CaptureDrain {
    type Ok = ();
    type Err = slog::Never;

    fn log(&self, record: &slog::Record, values: &slog::OwnedKVList) -> Result<(), slog::Never> {
        struct Kv(String);
        impl slog::Serializer for Kv {
            fn emit_arguments(
                &mut self,
                key: slog::Key,
                val: &std::fmt::Arguments,
            ) -> slog::Result {
                self.0.push_str(&format!(" {key}={val}"));
                Ok(())
            }
        }
        let mut kv = Kv(String::new());
        let _ = slog::KV::serialize(values, record, &mut kv);
        let _ = slog::KV::serialize(&record.kv(), record, &mut kv);
        self.0.lines.lock().unwrap().push(format!(
            "{} {}{}",
            record.level().as_short_str(),
            record.msg(),
            kv.0
        ));
        Ok(())
    }
}

/// Runs an async test body inside a fresh actix system.
/// The tests of one binary share a process. A test that counts the
/// process's children or open fds runs alone ([`run_alone`] takes this for
/// writing); every other test takes it for reading ([`run`]), so they still
/// run in parallel with each other.
static EXCLUSIVE: std::sync::RwLock<()> = std::sync::RwLock::new(());

pub fn run<F: Future<Output = ()>>(f: F) {
    let _shared = EXCLUSIVE.read().unwrap_or_else(|e| e.into_inner());
    actix_rt::System::new().block_on(f)
}

/// [`run`], with no other test of this binary running at the same time.
#[allow(dead_code)]
pub fn run_alone<F: Future<Output = ()>>(f: F) {
    let _alone = EXCLUSIVE.write().unwrap_or_else(|e| e.into_inner());
    actix_rt::System::new().block_on(f)
}

/// A master logging into `cap`.
pub fn master(cap: &Capture) -> Master {
    Master::new(MasterOptions::default().log(cap.logger()))
}

pub fn local(python: &str) -> LocalOptions {
    LocalOptions::new(python.to_string())
}

/// PIDs of this process's live children and zombies.
pub fn children_of_me() -> (Vec<i32>, Vec<i32>) {
    let me = std::process::id() as i32;
    let mut live = Vec::new();
    let mut zombies = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // Fields after the parenthesised command name: state, ppid, ...
        let Some(rest) = stat.rsplit_once(')').map(|x| x.1) else {
            continue;
        };
        let f: Vec<&str> = rest.split_whitespace().collect();
        if f.get(1).and_then(|p| p.parse::<i32>().ok()) == Some(me) {
            if f[0] == "Z" {
                zombies.push(pid);
            } else {
                live.push(pid);
            }
        }
    }
    (live, zombies)
}

pub fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

/// A module path holding `ecpkg`, a 20-module package only the master has:
/// the package, `ecpkg.mod00`..`mod17` importing each other in a chain, and
/// `ecpkg.entry`, whose `run()` touches every module and returns 18.
/// `tag` keeps parallel tests apart.
pub fn package_root(tag: &str) -> PathBuf {
    let root = std::env::temp_dir().join(format!("econtext-pkg-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    let pkg = root.join("ecpkg");
    std::fs::create_dir_all(&pkg).unwrap();
    std::fs::write(
        pkg.join("__init__.py"),
        "# A package only the master has.\nVERSION = 1\n",
    )
    .unwrap();
    for i in 0..18 {
        let next = if i < 17 {
            format!("from ecpkg import mod{:02} as _next\n", i + 1)
        } else {
            String::new()
        };
        std::fs::write(
            pkg.join(format!("mod{i:02}.py")),
            format!("{next}import os\n\ndef value():\n    \"\"\"Module {i}.\"\"\"\n    return 1\n"),
        )
        .unwrap();
    }
    let mut entry =
        String::from("from ecpkg import mod00\nimport ecpkg\n\ndef run():\n    total = 0\n");
    for i in 0..18 {
        entry.push_str(&format!(
            "    from ecpkg import mod{i:02}\n    total += mod{i:02}.value()\n"
        ));
    }
    entry.push_str("    return total\n");
    std::fs::write(pkg.join("entry.py"), entry).unwrap();
    root
}

/// Modules in [`package_root`]'s package, `ecpkg` itself included.
pub const ECPKG_MODULES: u64 = 20;

/// Starts `time.sleep(secs)` in `ctx` and returns the call in flight.
pub async fn start_sleep(ctx: &econtext::Context, secs: u32) -> econtext::PendingCall<()> {
    ctx.call_with("time", "sleep")
        .args((secs,))
        .unwrap()
        .start::<()>()
        .await
        .unwrap()
}

/// SIGKILLs `pid` and asserts that `pending` fails with Dead within 1 s;
/// returns how long that took.
pub async fn kill_and_expect_dead(
    pid: i32,
    pending: econtext::PendingCall<()>,
) -> std::time::Duration {
    // Let the call reach the child first.
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    let killed = std::time::Instant::now();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let res = tokio::time::timeout(std::time::Duration::from_secs(1), pending.result())
        .await
        .expect("the caller hears within 1 s");
    assert!(matches!(res, Err(econtext::Error::Dead { .. })), "{res:?}");
    let took = killed.elapsed();
    eprintln!("the caller failed {took:?} after SIGKILL of {pid}");
    took
}

/// A module of small functions that reach `econtext.core` from user code
/// (listen on a handle, send, collect, trace), for a master to serve.
pub const ECVIA: &str = include_str!("ecvia.py");
