//! The `econtext` command line, as other tools drive it.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

fn econtext(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_econtext"))
        .args(args)
        .output()
        .expect("run econtext")
}

#[test]
fn call_prints_python_version_for_every_interpreter() {
    for (python, version) in common::interpreters() {
        let target = format!("local?python={}", python.display());
        let out = econtext(&["call", &target, "platform.python_version"]);
        assert!(
            out.status.success(),
            "{target}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(
            String::from_utf8_lossy(&out.stdout).trim(),
            format!("\"{version}\""),
            "{target}"
        );
    }
}

#[test]
fn arguments_and_kwargs_are_json() {
    let py = format!("local?python={}&name=jsonctx", common::python3());
    let out = econtext(&[
        "call",
        &py,
        "json.dumps",
        r#"{"a": [1, 2.5, null]}"#,
        "--kwarg",
        "sort_keys=true",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        r#""{\"a\": [1, 2.5, null]}""#
    );
}

#[test]
fn remote_exception_exits_1_with_type_and_traceback() {
    let py = format!("local?python={}", common::python3());
    let out = econtext(&["call", &py, "operator.truediv", "1", "0"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("ZeroDivisionError"), "{err}");
    assert!(err.contains("Traceback"), "{err}");
}

#[test]
fn connect_failure_exits_2_with_one_line_reason() {
    let out = econtext(&["call", "local?python=/nonexistent/python", "os.getpid"]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("/nonexistent/python"), "{err}");
}

#[test]
fn child_that_exits_early_is_reported_with_its_output() {
    let dir = std::env::temp_dir().join(format!("econtext-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let fake = dir.join("fakepython");
    std::fs::write(
        &fake,
        "#!/bin/sh\necho 'fakepython: no such interpreter' >&2\nexit 3\n",
    )
    .unwrap();
    std::fs::set_permissions(&fake, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let out = econtext(&[
        "call",
        &format!("local?python={}", fake.display()),
        "os.getpid",
    ]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("exited early") && err.contains("exit status 3"),
        "{err}"
    );
    assert!(err.contains("fakepython: no such interpreter"), "{err}");
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn host_that_says_nothing_times_out_at_the_connect_timeout() {
    let dir = std::env::temp_dir().join(format!("econtext-hang-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let fake = dir.join("hangs");
    std::fs::write(&fake, "#!/bin/sh\nexec sleep 30\n").unwrap();
    std::fs::set_permissions(&fake, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let started = Instant::now();
    let out = econtext(&[
        "call",
        &format!("local?python={}", fake.display()),
        "os.getpid",
        "--connect-timeout",
        "1",
    ]);
    let took = started.elapsed();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("timed out"), "{err}");
    assert!(took < Duration::from_secs(5), "took {took:?}");
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn bad_usage_exits_64() {
    let out = econtext(&["call", "local", "nodots"]);
    assert_eq!(out.status.code(), Some(64));
    let out = econtext(&["call", "local", "os.getpid", "{not json"]);
    assert_eq!(out.status.code(), Some(64));
    let out = econtext(&["call", "warp:somewhere", "os.getpid"]);
    assert_eq!(out.status.code(), Some(64));
}

#[test]
fn stats_print_importer_counters_and_module_path_serves_packages() {
    let root = common::package_root("cli-stats");
    let target = format!("local?python={}", common::python3());
    let out = econtext(&[
        "call",
        "--module-path",
        root.to_str().unwrap(),
        "--stats",
        &target,
        "ecpkg.entry.run",
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "18");
    let line = err
        .lines()
        .rev()
        .find(|l| l.starts_with('{'))
        .unwrap_or_else(|| panic!("no JSON counters on stderr: {err}"));
    let stats: serde_json::Value = serde_json::from_str(line).unwrap();
    assert_eq!(stats["get_module_requests"], 1, "{line}");
    assert_eq!(stats["modules_sent"], common::ECPKG_MODULES, "{line}");
    assert!(stats["bytes_sent"].as_u64().unwrap() > 1000, "{line}");
    let _ = std::fs::remove_dir_all(root);
}

/// A child logs 300 records of 1 KB while the operator's stderr is a pipe
/// nobody reads (a paused terminal, `2>&1 | less` at rest): the call's
/// result still comes out on stdout, because the CLI writes records from a
/// bounded queue on a thread of its own; once stderr is read, every record
/// is there and the exit status is 0.
#[test]
fn a_stalled_stderr_stalls_no_call() {
    use std::io::{BufRead, Read};
    use std::process::Stdio;
    let dir = common::sshd::TempDir::new("stalled-stderr");
    std::fs::write(
        dir.0.join("ecflood.py"),
        "import logging\n\n\ndef flood(n):\n    for i in range(n):\n        \
         logging.warning('record %d %s', i, 'x' * 1000)\n    return 'done'\n",
    )
    .unwrap();
    let target = format!("local?python={}", common::python3());
    let mut child = Command::new(env!("CARGO_BIN_EXE_econtext"))
        .args(["call", "--module-path", dir.0.to_str().unwrap(), &target])
        .args(["ecflood.flood", "300"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = std::io::BufReader::new(stdout).read_line(&mut line);
        let _ = tx.send(line);
    });
    // A bound on a hang, not a timing: a blocked writer never prints.
    let line = rx.recv_timeout(Duration::from_secs(60));
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    let status = child.wait().unwrap();
    assert_eq!(
        line.as_deref().map(str::trim),
        Ok("\"done\""),
        "no result while stderr was not read"
    );
    assert!(status.success(), "{err}");
    let records = err.matches("WARN record ").count();
    assert_eq!(records, 300, "{}", &err[err.len().saturating_sub(2000)..]);
}
