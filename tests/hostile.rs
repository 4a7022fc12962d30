//! Tests that play the attacker: one hostile target (code inside a real
//! Python child, or a raw child speaking the wire protocol) against the
//! master, its siblings and the operator. One test per attack, named after
//! it; each checks that the attack fails safely: the frame is dropped or
//! refused, the caller gets the real answer or a typed error, nothing is
//! executed, nothing leaks, memory stays bounded. docs/SECURITY.md is the
//! threat model these tests check.

mod common;

use std::process::{Command, Output};

fn econtext(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_econtext"))
        .args(args)
        .output()
        .expect("run econtext")
}

fn py_target() -> String {
    format!("local?python={}", common::python3())
}

/// A test's own directory, removed when it goes out of scope (also when
/// the test fails: the value drops while the panic unwinds).
fn scratch_dir(tag: &str) -> common::sshd::TempDir {
    common::sshd::TempDir::new(&format!("hostile-{tag}"))
}

/// A program that records that it ran: what an injected option would run.
fn marker_program(dir: &std::path::Path) -> (std::path::PathBuf, std::path::PathBuf) {
    use std::os::unix::fs::PermissionsExt;
    let marker = dir.join("it-ran");
    let prog = dir.join("fake-tool");
    std::fs::write(
        &prog,
        format!("#!/bin/sh\necho \"$@\" > {}\nexit 1\n", marker.display()),
    )
    .unwrap();
    std::fs::set_permissions(&prog, std::fs::Permissions::from_mode(0o755)).unwrap();
    (prog, marker)
}

// ---- item 5: option injection through argv fields ----

#[test]
fn a_kubectl_pod_named_like_an_option_is_refused_before_anything_runs() {
    let out = econtext(&["call", "kubectl:--kubeconfig=x", "os.getpid"]);
    assert_eq!(out.status.code(), Some(64));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("pod") && err.contains("--kubeconfig=x") && err.contains("option"),
        "{err}"
    );
    assert!(out.stdout.is_empty());

    // Nor does the program itself run, whatever field carries the option.
    let dir = scratch_dir("kubectl");
    let (prog, marker) = marker_program(&dir);
    let p = prog.display();
    for target in [
        format!("kubectl:--kubeconfig=x?path={p}"),
        format!("kubectl:pod?namespace=--kubeconfig=x&path={p}"),
        format!("kubectl:pod?container=-x&path={p}"),
        format!("kubectl:pod?context=--exec=x&path={p}"),
        format!("docker:--privileged?path={p}"),
        format!("docker:c?user=-0&path={p}"),
        format!("ssh:-oProxyCommand=x?ssh_path={p}"),
        format!("ssh:-F/tmp/x@host?ssh_path={p}"),
        format!("sudo:-s?sudo_path={p}"),
        format!("su:-c?su_path={p}"),
    ] {
        let out = econtext(&["call", &target, "os.getpid"]);
        assert_eq!(out.status.code(), Some(64), "{target}");
        assert!(!marker.exists(), "{target} ran the program");
    }
}

#[test]
fn option_injection_through_the_library_is_a_typed_error() {
    use econtext::bootstrap::KubectlOptions;
    common::run(async {
        let master = econtext::Master::new(Default::default());
        let method = econtext::Method::Kubectl(KubectlOptions::new("--kubeconfig=x"));
        let err = master
            .connect(econtext::ConnectOptions::new(method))
            .await
            .unwrap_err();
        assert!(
            matches!(err, econtext::ConnectError::InvalidOption(ref e) if e.field == "pod"),
            "{err:?}"
        );
    });
}

// ---- item 4: terminal injection ----

#[test]
fn a_childs_terminal_escapes_reach_the_operator_escaped() {
    // The child prints an OSC title sequence, a clipboard write (OSC 52)
    // and a screen clear on its stdout.
    let out = econtext(&[
        "call",
        &py_target(),
        "builtins.print",
        r#""\u001b]0;title\u0007 \u001b]52;c;aGk=\u0007 \u001b[2J""#,
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.stderr.contains(&0x1b) && !out.stderr.contains(&0x07),
        "{err:?}"
    );
    assert!(err.contains(r"\x1b]0;title\x07"), "{err}");
    assert!(err.contains(r"\x1b]52;c;aGk=\x07"), "{err}");
}

#[test]
fn a_grandchilds_non_utf8_stderr_reaches_the_operator_escaped() {
    use std::os::unix::fs::PermissionsExt;
    // The grandchild's interpreter prints bad bytes and an escape on its
    // stderr before bootstrap (the intermediate reads that pipe), then its
    // code writes more to fd 2 (its own IoLogger).
    let dir = scratch_dir("stderr-bytes");
    let script = dir.join("python-noisy");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\nprintf 'early \\377\\376 \\033]0;t\\007\\n' >&2\nexec {} \"$@\"\n",
            common::python3()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    let target = format!("{},local?python={}", py_target(), script.display());
    // base64 of b"late \xfa\xfb\n"
    let out = econtext(&[
        "call",
        &target,
        "os.write",
        "2",
        r#"{"$bytes": "bGF0ZSD6+wo="}"#,
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "8");
    assert!(err.contains(r"early \xff\xfe \x1b]0;t\x07"), "{err}");
    assert!(err.contains(r"late \xfa\xfb"), "{err}");
    assert!(!err.contains('\u{fffd}'), "replaced, not escaped: {err}");
    assert!(
        !out.stderr.iter().any(|&b| b == 0x1b || b >= 0xf8),
        "raw bytes reached the terminal: {err:?}"
    );
}

#[test]
fn a_childs_exception_text_cannot_write_escapes_or_forge_lines() {
    // A CallError's type, message and traceback are the child's text.
    let out = econtext(&[
        "call",
        &py_target(),
        "builtins.exec",
        r#""raise ValueError('\u001b]0;pwned\u0007\\necontext: call succeeded')""#,
    ]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.stderr.contains(&0x1b) && !out.stderr.contains(&0x07),
        "{err:?}"
    );
    assert!(err.contains(r"\x1b]0;pwned\x07"), "{err}");
    // The embedded newline starts a marked continuation line, not a line
    // of its own.
    assert!(
        !err.lines()
            .any(|l| l.starts_with("econtext: call succeeded")),
        "{err}"
    );
    assert!(err.contains("| econtext: call succeeded"), "{err}");
}

/// Runs `code` in a Python child through the CLI: its stderr and how long
/// the run took.
fn exec_in_child(code: &str) -> (String, Vec<u8>, f64) {
    let started = std::time::Instant::now();
    let out = econtext(&[
        "call",
        &py_target(),
        "builtins.exec",
        &serde_json::to_string(code).unwrap(),
    ]);
    let secs = started.elapsed().as_secs_f64();
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        out.status.success(),
        "{}",
        &err[err.len().saturating_sub(2000)..]
    );
    (err, out.stderr, secs)
}

/// Lines of `err` containing `what`, and the records the summaries say
/// were suppressed ("suppressed N log records (B bytes) ...").
fn shown_and_suppressed(err: &str, what: &str) -> (u64, u64) {
    let shown = err.lines().filter(|l| l.contains(what)).count() as u64;
    let suppressed = err
        .lines()
        .filter_map(|l| l.split("suppressed ").nth(1))
        .filter_map(|rest| rest.split(' ').next()?.parse::<u64>().ok())
        .sum();
    (shown, suppressed)
}

#[test]
fn a_child_flooding_logs_cannot_flood_the_operator() {
    // Hostile code sends FORWARD_LOG frames itself, past its core's own
    // budget: a 10 MB record with an escape in it, then 30,000 small ones.
    // The operator sees a burst, a trickle (the master's budget: 2,000,
    // then 200 a second) and lines saying how many were suppressed.
    let (err, raw_err, secs) = exec_in_child(concat!(
        "import econtext.core as c\n",
        "c.router.send(0, c.FORWARD_LOG, [u'evil', 30, u'\\x1b[2J' + u'x' * 10000000])\n",
        "for i in range(30000): c.router.send(0, c.FORWARD_LOG, [u'evil', 30, u'raw flood %d' % i])\n",
    ));
    assert!(
        !raw_err.contains(&0x1b),
        "a raw escape reached the terminal"
    );
    assert!(
        err.lines().all(|l| l.len() < 80 * 1024),
        "a line longer than the cut"
    );
    let (raw, suppressed) = shown_and_suppressed(&err, "raw flood");
    let (huge, _) = shown_and_suppressed(&err, "[record too long, cut]");
    assert_eq!(huge, 1, "the 10 MB record is shown once, cut");
    assert_eq!(
        raw + huge + suppressed,
        30_001,
        "every record is shown or counted as suppressed"
    );
    // The bound grows with the time taken: a slow machine does not fail it.
    let bound = 2_000 + (200.0 * (secs + 2.0)) as u64;
    assert!(
        raw + huge <= bound,
        "{raw} records shown in {secs:.1} s (bound {bound})"
    );

    // User code printing and logging in a loop: the child's own budget
    // (half the master's) suppresses and counts, so its summaries reach
    // the operator too.
    let (err, _, secs) = exec_in_child(concat!(
        "import logging, sys\n",
        "for i in range(5000):\n",
        "    print('printed flood %d' % i)\n",
        "    logging.getLogger('user').warning('logged flood %d', i)\n",
        "sys.stdout.flush()\n",
    ));
    let (shown, suppressed) = shown_and_suppressed(&err, " flood ");
    assert_eq!(
        shown + suppressed,
        10_000,
        "every record is shown or counted as suppressed"
    );
    let bound = 1_000 + (100.0 * (secs + 2.0)) as u64;
    assert!(
        shown <= bound,
        "{shown} records shown in {secs:.1} s (bound {bound})"
    );
}

// ---- item 6: secrets ----

#[test]
fn a_password_env_variable_never_reaches_a_child() {
    // The second hop's fake su records the environment it was given; the
    // first hop (a real Python context) started before it and is its
    // parent, so both would have inherited the variable.
    let dir = scratch_dir("pwenv");
    let seen = dir.join("env-seen");
    let su = dir.join("fake-su");
    std::fs::write(
        &su,
        format!("#!/bin/sh\nenv > {}\nexit 1\n", seen.display()),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&su, std::fs::Permissions::from_mode(0o755)).unwrap();
    let target = format!(
        "{},su:root?password_env=ECONTEXT_HOSTILE_PW&su_path={}",
        py_target(),
        su.display()
    );
    let out = Command::new(env!("CARGO_BIN_EXE_econtext"))
        .args(["call", &target, "os.getpid", "--connect-timeout", "10"])
        .env("ECONTEXT_HOSTILE_PW", "s3cret-hostile")
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let env = std::fs::read_to_string(&seen).expect("the fake su ran");
    assert!(env.contains("PATH="), "{env}");
    assert!(!env.contains("ECONTEXT_HOSTILE_PW"), "{env}");
    assert!(!env.contains("s3cret-hostile"), "{env}");
    assert!(!String::from_utf8_lossy(&out.stderr).contains("s3cret-hostile"));
}

// ---- item 3: the password goes only to the method's own prompt ----

/// A stand-in for sudo: takes `-p PROMPT` like sudo, then does `act` (a
/// bash snippet that may print prompts and read answers, recording them
/// in $MARK), then runs the command after `--`, as sudo would.
fn fake_sudo(dir: &std::path::Path, act: &str) -> (std::path::PathBuf, std::path::PathBuf) {
    use std::os::unix::fs::PermissionsExt;
    let mark = dir.join("answers");
    let prog = dir.join("fake-sudo");
    std::fs::write(
        &prog,
        format!(
            "#!/bin/bash\nMARK={}\nprompt=\nwhile [ \"$1\" != -- ]; do [ \"$1\" = -p ] && {{ shift; prompt=\"$1\"; }}; shift; done; shift\n{act}\nexec \"$@\"\n",
            mark.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&prog, std::fs::Permissions::from_mode(0o755)).unwrap();
    (prog, mark)
}

fn sudo_method(prog: &std::path::Path, password: &str) -> econtext::Method {
    use econtext::bootstrap::{Secret, SudoOptions};
    econtext::Method::Sudo(
        SudoOptions::default()
            .password(Some(Secret::new(password)))
            .sudo_path(prog.display().to_string())
            .python(common::python3()),
    )
}

/// Connects with the fake sudo directly and through a Python intermediate
/// (whose prompt rules come from the master in SPAWN); returns what the
/// fake sudo recorded each time.
fn answers_seen(tag: &str, act: &str) -> Vec<String> {
    let mut seen = Vec::new();
    for via in [false, true] {
        let dir = scratch_dir(&format!("{tag}-{via}"));
        let (prog, mark) = fake_sudo(&dir, act);
        common::run(async {
            let master = econtext::Master::new(Default::default());
            let mut opts = econtext::ConnectOptions::new(sudo_method(&prog, "pw-hostile-1"))
                .connect_timeout(std::time::Duration::from_secs(20));
            if via {
                let mid = master
                    .connect(econtext::ConnectOptions::new(econtext::Method::Local(
                        common::local(&common::python3()),
                    )))
                    .await
                    .unwrap();
                opts = opts.via(&mid);
            }
            let ctx = master.connect(opts).await.expect("connects");
            let pid: u32 = ctx.call("os", "getpid", ()).await.unwrap();
            assert!(pid > 0);
        });
        seen.push(std::fs::read_to_string(&mark).unwrap_or_default());
    }
    seen
}

#[test]
fn a_plain_password_line_on_the_tty_before_ec0_does_not_get_the_sudo_password() {
    // What a login profile under `sudo -i` (or sudo's cached credentials
    // and a hostile rc file) can print: the generic prompt shape.
    let seen = answers_seen(
        "plainprompt",
        r#"printf 'Password: ' > /dev/tty; if read -t 2 l < /dev/tty; then echo "got:$l" >> $MARK; else echo none >> $MARK; fi"#,
    );
    for s in seen {
        assert_eq!(
            s.trim(),
            "none",
            "the password went to a prompt that was not sudo's"
        );
    }
}

#[test]
fn the_sudo_prompt_on_stderr_is_not_answered() {
    // Only on the tty: the exact prompt printed on stderr is not sudo's.
    let seen = answers_seen(
        "stderrprompt",
        r#"printf '%s' "$prompt" >&2; if read -t 2 l; then echo "got:$l" >> $MARK; else echo none >> $MARK; fi"#,
    );
    for s in seen {
        assert_eq!(s.trim(), "none");
    }
}

#[test]
fn the_sudo_prompt_with_its_random_token_is_answered_once() {
    let seen = answers_seen(
        "realprompt",
        r#"case "$prompt" in "[econtext-sudo "????????????????"] password:") ;; *) echo "bad prompt $prompt" >> $MARK; exit 1;; esac
printf '%s' "$prompt" > /dev/tty; read -t 5 l < /dev/tty; echo "got:$l" >> $MARK"#,
    );
    for s in seen {
        assert_eq!(s.trim(), "got:pw-hostile-1");
    }
}

// ---- item 1 in the Python core: a Receiver takes its peer's messages ----

#[test]
fn a_sibling_cannot_write_into_a_receiver_made_for_its_caller() {
    let root = scratch_dir("receiver");
    std::fs::write(
        root.join("ecreceiver.py"),
        include_str!("common/ecreceiver.py"),
    )
    .unwrap();
    common::run(async move {
        let master = econtext::Master::new(
            econtext::MasterOptions::default()
                .module_path(vec![root.clone()])
                .log(common::Capture::default().logger()),
        );
        let py = common::python3();
        let victim = master.local(common::local(&py)).await.unwrap();
        let evil = master.local(common::local(&py)).await.unwrap();
        // The master calls a function that makes a Receiver (its peer: the
        // caller, the master) and learns its handle.
        let h: u32 = victim
            .call("ecreceiver", "open_receiver", ())
            .await
            .unwrap();
        // Hostile code in a sibling that learned the handle writes into it.
        let _: bool = evil
            .call("ecreceiver", "send_into", (victim.id(), h, "forged"))
            .await
            .unwrap();
        let sender =
            econtext::actors::channel::Sender::new(master.router().clone(), 0, victim.id(), h);
        sender.send("real").await.unwrap();
        let got: Vec<String> = victim
            .call("ecreceiver", "received", (h, 2.0))
            .await
            .unwrap();
        assert_eq!(got, ["real"], "only the caller's message");
        let refused: u64 = victim
            .call("ecreceiver", "refused", (evil.id(),))
            .await
            .unwrap();
        assert_eq!(refused, 1, "the sibling's message was refused and counted");
    });
}

// ---- item 7: the master's memory ----

#[test]
fn a_reply_of_millions_of_small_values_is_refused_with_bounded_memory() {
    // 3 M nils are 3 MB on the wire; 10 M (10 MB) were about 700 MB in the CLI's
    // value tree and JSON; now the frame is refused before decoding.
    let out = econtext(&[
        "call",
        &py_target(),
        "builtins.eval",
        r#""[None] * 3000000""#,
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{err}");
    assert!(err.contains("more than 2097152 values"), "{err}");
    let usage =
        nix::sys::resource::getrusage(nix::sys::resource::UsageWho::RUSAGE_CHILDREN).unwrap();
    // ru_maxrss is in KiB: the largest child this test process waited for.
    assert!(
        usage.max_rss() < 300 * 1024,
        "peak RSS {} KiB",
        usage.max_rss()
    );
}

/// The CLI's peak RSS (VmHWM, KiB) from /proc while it prints a call's
/// result of `len` bytes: once it has begun (it has the whole reply by
/// then) and again with 100 KB still to come (more than a pipe holds, so
/// it cannot have exited). Not its `--stats` figure: getrusage's maximum
/// survives execve, so it would include the RSS of the test process it
/// was forked from.
fn cli_peak_rss_printing(expr: &str, len: usize) -> u64 {
    use std::io::Read;
    /// Kills and reaps the CLI if an assertion below fails first.
    struct Reaped(std::process::Child);
    impl Drop for Reaped {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let mut child = Reaped(
        Command::new(env!("CARGO_BIN_EXE_econtext"))
            .args(["call", &py_target(), "builtins.eval", expr])
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("run econtext"),
    );
    let pid = child.0.id();
    let hwm = || -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmHWM in /proc/PID/status")
    };
    let mut out = child.0.stdout.take().unwrap();
    let mut first = [0u8; 1];
    out.read_exact(&mut first).expect("the result begins");
    let at_start = hwm();
    let most = (len - 1).saturating_sub(100_000) as u64;
    let read = std::io::copy(&mut (&mut out).take(most), &mut std::io::sink()).unwrap();
    assert_eq!(read, most, "{expr}: the result is shorter than {len}");
    let near_end = hwm();
    let rest = std::io::copy(&mut out, &mut std::io::sink()).unwrap();
    assert_eq!(
        1 + read + rest,
        len as u64,
        "{expr}: the whole result is printed"
    );
    assert!(child.0.wait().unwrap().success(), "{expr}");
    at_start.max(near_end)
}

#[test]
fn a_ten_megabyte_reply_does_not_inflate_the_clis_memory() {
    // The reporter printed a tree of values and a tree of JSON: 1 M short
    // strings (10 MB on the wire) took the CLI from 13 to 150 MB, 2 M nils
    // (2 MB) to 155 MB. It now prints JSON straight from the reply's bytes.
    // The baseline: a reply just bigger than a pipe holds.
    let base = cli_peak_rss_printing(r#""'x' * 200000""#, 200_003);
    for (expr, len) in [
        (r#""['abcdefghi'] * 1000000""#, 12_000_002),
        (r#""[None] * 2000000""#, 10_000_002),
    ] {
        let peak = cli_peak_rss_printing(expr, len);
        let bound = 30 * 1024; // KiB: three times the largest reply
        assert!(
            peak.saturating_sub(base) < bound,
            "{expr}: peak RSS {peak} KiB while printing, {base} KiB for a small reply"
        );
    }
}

// ---- item 1, 2 and 7 on the Rust side: a raw child against the router ----

mod router_side {
    use std::time::{Duration, Instant};

    use bytes::BytesMut;
    use econtext::actors::router::GetStats;
    use econtext::testing::SimTree;
    use econtext::wire::{handles, payload, ContextId, Frame, Handle, Header};
    use econtext::{DeadReason, Error, Functions};
    use tokio::io::AsyncWriteExt;
    use tokio_util::codec::Encoder;

    use super::common::{run, Capture};

    fn functions() -> Functions {
        let mut f = Functions::default();
        f.register("math.add", |(a, b): (i64, i64)| a + b);
        f.register_async("slow.answer", |(): ()| async {
            tokio::time::sleep(Duration::from_millis(1500)).await;
            42i64
        });
        f
    }

    /// The raw (hostile) child's end: frames sealed with the tree's key,
    /// on one MAC chain.
    struct Evil {
        codec: econtext::wire::FrameCodec,
        end: tokio::io::DuplexStream,
    }

    impl Evil {
        fn new(t: &SimTree, end: tokio::io::DuplexStream) -> Evil {
            Evil {
                codec: t.raw_codec(),
                end,
            }
        }

        async fn write(&mut self, frames: Vec<Frame>) {
            let mut buf = BytesMut::new();
            for f in frames {
                self.codec.encode(f, &mut buf).unwrap();
            }
            self.end.write_all(&buf).await.unwrap();
        }

        /// The next frame the parent sent, waiting at most `secs`.
        async fn read(&mut self, buf: &mut BytesMut, secs: u64) -> Frame {
            use tokio::io::AsyncReadExt;
            use tokio_util::codec::Decoder;
            let end = Instant::now() + Duration::from_secs(secs);
            loop {
                if let Some(f) = self.codec.decode(buf).unwrap() {
                    return f;
                }
                let left = end.saturating_duration_since(Instant::now());
                let n = tokio::time::timeout(left, self.end.read_buf(buf))
                    .await
                    .expect("a frame within the bound")
                    .unwrap();
                assert!(n > 0, "the parent closed the stream");
            }
        }
    }

    /// The reply handle of the latest call the master sent to `dst`, as if
    /// the attacker had learned it (it cannot guess it: see below).
    fn leaked_reply_handle(t: &SimTree, dst: ContextId) -> Handle {
        t.trace()
            .iter()
            .rev()
            .find(|(at, h)| *at == 0 && h.dst == dst && h.handle == handles::CALL_FUNCTION)
            .map(|(_, h)| h.reply_to)
            .expect("the call was routed")
    }

    #[test]
    fn a_child_cannot_answer_a_call_made_to_a_sibling() {
        run(async {
            let cap = Capture::default();
            let mut t = SimTree::new(cap.logger());
            let sibling = t.spawn("sibling", 0, functions()).await;
            let (evil, end) = t.attach_raw("evil", 0).await;
            let mut raw = Evil::new(&t, end);
            let pending = t
                .context(sibling)
                .call_with("slow", "answer")
                .start::<i64>()
                .await
                .unwrap();
            let h = leaked_reply_handle(&t, sibling);
            let value = payload::encode(&666i64).unwrap();
            let dead = payload::encode(&econtext::wire::Dead::new("forged")).unwrap();
            let forged = vec![
                Frame::new(Header::new(0, evil, h, 0), value),
                Frame::new(Header::new(0, evil, h, 0), dead),
            ];
            raw.write(forged).await;
            assert_eq!(pending.result().await.unwrap(), 42, "the real answer");
            assert!(
                cap.wait_for(&["refused frame", "accepts only"], 20.0).await,
                "{}",
                cap.text()
            );
        });
    }

    #[test]
    fn a_bulk_frame_to_a_non_file_handle_is_refused() {
        // A bulk frame's bytes are covered by no MAC: only a file
        // receiver's data handle (which checks them against the file's
        // SHA-256) may take one. To a reply handle or a service it is
        // dropped with a refusal (a log line), and the real traffic goes on.
        run(async {
            let cap = Capture::default();
            let mut t = SimTree::new(cap.logger());
            let sibling = t.spawn("sibling", 0, functions()).await;
            let (evil, end) = t.attach_raw("evil", 0).await;
            let mut raw = Evil::new(&t, end);
            let pending = t
                .context(evil)
                .call_with("anything", "at_all")
                .start::<i64>()
                .await
                .unwrap();
            let mut buf = BytesMut::new();
            let call = raw.read(&mut buf, 20).await;
            assert_eq!(call.header.handle, handles::CALL_FUNCTION);
            let reply_to = call.header.reply_to;
            let bulk = |dst: ContextId, handle: Handle, v: i64| {
                let covered = payload::encode(&v).unwrap();
                let data = econtext::wire::bulk::join(&covered, b"uncovered bytes");
                Frame::bulk(Header::new(dst, evil, handle, 0), data)
            };
            let call_sibling = {
                let covered = payload::encode(&("math", (), "add", (1, 2), ())).unwrap();
                let data = econtext::wire::bulk::join(&covered, b"");
                Frame::bulk(Header::new(sibling, evil, handles::CALL_FUNCTION, 7), data)
            };
            raw.write(vec![bulk(0, reply_to, 666), call_sibling]).await;
            assert!(
                cap.wait_for(
                    &["refused frame", "bulk frame for a handle not registered"],
                    20.0
                )
                .await,
                "{}",
                cap.text()
            );
            // The sibling refused it too, and told evil why (a Dead to 7).
            let back = raw.read(&mut buf, 20).await;
            assert_eq!((back.header.dst, back.header.handle), (evil, 7));
            assert!(payload::is_dead(&back.data), "{back:?}");
            // The refused frame answered nothing: the real reply does.
            let value = payload::encode(&42i64).unwrap();
            raw.write(vec![Frame::new(Header::new(0, evil, reply_to, 0), value)])
                .await;
            assert_eq!(pending.result().await.unwrap(), 42);
            let s = t.router(0).send(GetStats).await.unwrap();
            assert!(s.core.refused >= 1, "{:?}", s.core);
        });
    }

    #[test]
    fn reply_handles_cannot_be_guessed() {
        run(async {
            let mut t = SimTree::new(Capture::default().logger());
            let a = t.spawn("a", 0, functions()).await;
            t.clear_trace();
            for i in 0..50 {
                let _: i64 = t.context(a).call("math", "add", (i, 1)).await.unwrap();
            }
            let hs: Vec<Handle> = t
                .trace()
                .iter()
                .filter(|(at, h)| *at == 0 && h.handle == handles::CALL_FUNCTION)
                .map(|(_, h)| h.reply_to)
                .collect();
            assert_eq!(hs.len(), 50);
            assert!(hs.iter().all(|&h| h >= handles::FIRST_DYNAMIC));
            let close = hs
                .windows(2)
                .filter(|w| w[0].abs_diff(w[1]) < 1 << 16)
                .count();
            assert!(close <= 1, "handles look sequential: {hs:?}");
        });
    }

    #[test]
    fn a_sibling_cannot_make_a_child_declare_contexts_dead() {
        run(async {
            let cap = Capture::default();
            let mut t = SimTree::new(cap.logger());
            let a = t.spawn("a", 0, functions()).await;
            let c = t.spawn("c", a, functions()).await;
            let b = t.spawn("b", 0, functions()).await;
            let (evil, end) = t.attach_raw("evil", 0).await;
            let mut raw = Evil::new(&t, end);
            let del = |dst: ContextId, target: ContextId| {
                Frame::new(
                    Header::new(dst, evil, handles::DEL_ROUTE, 0),
                    payload::encode(&target).unwrap(),
                )
            };
            // To a (through the master) about a's child and a's parent;
            // to the master about a sibling.
            raw.write(vec![del(a, c), del(a, 0), del(0, b), del(0, a)])
                .await;
            assert!(
                cap.wait_for(&["refused frame", "DEL_ROUTE"], 20.0).await,
                "{}",
                cap.text()
            );
            for id in [a, b, c] {
                let r: i64 = t.context(id).call("math", "add", (1, 1)).await.unwrap();
                assert_eq!(r, 2, "context {id} is still alive and routed");
            }
            let s = t.router(a).send(GetStats).await.unwrap();
            assert!(s.core.refused >= 2, "{:?}", s.core);
        });
    }

    /// Writes `inner` (batch entries: each frame's 16 fields and data) as
    /// one batch frame with a good MAC, well-formed or not.
    async fn write_batch(raw: &mut Evil, inner: &[u8]) {
        let header = raw.codec.seal_batch(inner).unwrap();
        raw.end.write_all(&header).await.unwrap();
        raw.end.write_all(inner).await.unwrap();
    }

    fn entry(h: Header, length: u32, data: &[u8]) -> Vec<u8> {
        let mut v = h.fields(length).to_vec();
        v.extend_from_slice(data);
        v
    }

    #[test]
    fn a_batch_cannot_smuggle_a_frame_from_another_source() {
        run(async {
            let cap = Capture::default();
            let mut t = SimTree::new(cap.logger());
            let sibling = t.spawn("sibling", 0, functions()).await;
            let (evil, end) = t.attach_raw("evil", 0).await;
            let mut raw = Evil::new(&t, end);
            let pending = t
                .context(sibling)
                .call_with("slow", "answer")
                .start::<i64>()
                .await
                .unwrap();
            let h = leaked_reply_handle(&t, sibling);
            let forged = payload::encode(&666i64).unwrap();
            let own = payload::encode(&()).unwrap();
            // One MAC over a frame of evil's own (to a handle nobody has)
            // and the sibling's answer, forged, then one from evil again.
            let mut inner = entry(Header::new(0, evil, 4242, 0), own.len() as u32, &own);
            inner.extend(entry(
                Header::new(0, sibling, h, 0),
                forged.len() as u32,
                &forged,
            ));
            inner.extend(entry(Header::new(0, evil, 4243, 0), own.len() as u32, &own));
            write_batch(&mut raw, &inner).await;
            assert!(
                cap.wait_for(&["refused frame"], 20.0).await,
                "{}",
                cap.text()
            );
            assert_eq!(pending.result().await.unwrap(), 42, "the real answer");
            let s = t.master().send(GetStats).await.unwrap();
            assert!(s.core.refused >= 1, "{:?}", s.core);
        });
    }

    /// `inner` as a batch from a raw child closes that child's stream
    /// (logged with `why`), and only that one: a sibling still answers.
    fn assert_a_malformed_batch_closes_only_its_stream(inner: fn(ContextId) -> Vec<u8>, why: &str) {
        run(async {
            let cap = Capture::default();
            let mut t = SimTree::new(cap.logger());
            let good = t.spawn("good", 0, functions()).await;
            let (evil, end) = t.attach_raw("evil", 0).await;
            let mut raw = Evil::new(&t, end);
            write_batch(&mut raw, &inner(evil)).await;
            assert!(cap.wait_for(&[why], 20.0).await, "{}", cap.text());
            // The master closed its end: the raw child reads EOF.
            let mut buf = BytesMut::new();
            let eof = tokio::time::timeout(Duration::from_secs(20), async {
                use tokio::io::AsyncReadExt;
                while raw.end.read_buf(&mut buf).await.unwrap_or(0) > 0 {}
            })
            .await;
            assert!(eof.is_ok(), "the evil stream stayed open");
            let r: i64 = t.context(good).call("math", "add", (2, 2)).await.unwrap();
            assert_eq!(r, 4);
            let r = t
                .context(evil)
                .call_with("math", "add")
                .args((1, 1))
                .unwrap()
                .timeout(Duration::from_secs(5))
                .returning::<i64>()
                .await;
            assert!(matches!(r, Err(Error::Dead { .. })), "{r:?}");
        });
    }

    #[test]
    fn a_truncated_batch_closes_only_its_stream() {
        assert_a_malformed_batch_closes_only_its_stream(
            |evil| {
                let mut inner = entry(Header::new(0, evil, 4242, 0), 1, &[0xc0]);
                // The second frame claims 100 bytes; the batch ends after 3.
                inner.extend(entry(Header::new(0, evil, 4243, 0), 100, &[0xc0; 3]));
                inner
            },
            "an inner frame runs past its batch",
        );
    }

    #[test]
    fn a_nested_batch_is_refused() {
        assert_a_malformed_batch_closes_only_its_stream(
            |evil| {
                let one = entry(Header::new(0, evil, 4242, 0), 1, &[0xc0]);
                let nested = entry(
                    Header::default(),
                    one.len() as u32 | econtext::wire::BATCH_FLAG,
                    &one,
                );
                [one, nested].concat()
            },
            "a batch inside a batch",
        );
    }

    #[test]
    fn a_batch_hiding_a_trailing_mac_frame_is_refused() {
        assert_a_malformed_batch_closes_only_its_stream(
            |evil| {
                entry(
                    Header::new(0, evil, 4242, 0),
                    1 | econtext::wire::TRAILER_FLAG,
                    &[0xc0; 21],
                )
            },
            "an inner frame with a trailing MAC",
        );
    }

    #[test]
    fn an_empty_batch_is_refused() {
        assert_a_malformed_batch_closes_only_its_stream(|_| Vec::new(), "an empty batch");
    }

    #[test]
    fn a_flood_of_forged_frames_logs_one_warning_and_stays_bounded() {
        run(async {
            let cap = Capture::default();
            let mut t = SimTree::new(cap.logger());
            let good = t.spawn("good", 0, functions()).await;
            let (_evil, end) = t.attach_raw("evil", 0).await;
            let mut raw = Evil::new(&t, end);
            // 20,000 frames claiming to come from `good` (spoofed).
            for _ in 0..20 {
                let frames = (0..1000)
                    .map(|_| {
                        Frame::new(
                            Header::new(good, good, handles::CALL_FUNCTION, 7),
                            payload::encode(&()).unwrap(),
                        )
                    })
                    .collect();
                raw.write(frames).await;
            }
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                let s = t.master().send(GetStats).await.unwrap();
                if s.core.refused >= 20_000 {
                    break;
                }
                assert!(Instant::now() < deadline, "{:?}", s.core);
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            let warnings = cap
                .lines
                .lock()
                .unwrap()
                .iter()
                .filter(|l| l.contains("refused frame"))
                .count();
            assert_eq!(warnings, 1, "{}", cap.text());
            let r: i64 = t.context(good).call("math", "add", (2, 2)).await.unwrap();
            assert_eq!(r, 4);
        });
    }

    #[test]
    fn replies_piled_up_for_a_child_that_does_not_read_are_capped() {
        run(async {
            let mut t = SimTree::new(Capture::default().logger());
            let good = t.spawn("good", 0, functions()).await;
            let (evil, end) = t.attach_raw("evil", 0).await;
            let mut raw = Evil::new(&t, end);
            // 50,000 requests whose answers (Dead: no such handle) go back
            // to a child that never reads them.
            for round in 0..50u32 {
                let frames = (0..1000u32)
                    .map(|i| {
                        Frame::new(
                            Header::new(0, evil, 4242, 1000 + round * 1000 + i),
                            payload::encode(&()).unwrap(),
                        )
                    })
                    .collect();
                raw.write(frames).await;
            }
            // Until the excess has been refused (no fixed sleep: CI is slow).
            let deadline = Instant::now() + Duration::from_secs(30);
            let s = loop {
                let s = t.master().send(GetStats).await.unwrap();
                if s.dropped_full > 0 || Instant::now() > deadline {
                    break s;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            };
            let queued = s.queued_bytes.get(&evil).copied().unwrap_or(0);
            assert!(queued < 1 << 20, "{queued} bytes queued for evil");
            assert!(s.dropped_full > 0, "the excess was refused: {s:?}");
            let r: i64 = t.context(good).call("math", "add", (2, 2)).await.unwrap();
            assert_eq!(r, 4);
            let r = t
                .context(evil)
                .call_with("math", "add")
                .timeout(Duration::from_millis(200))
                .returning::<i64>()
                .await;
            assert!(
                matches!(r, Err(Error::Timeout { .. }) | Err(Error::Dead { .. })),
                "{r:?}"
            );
            let _ = DeadReason::Stalled;
        });
    }

    /// A module of `kib` KiB that zlib cannot shrink much: each reply
    /// carrying it is about that big.
    fn big_module(dir: &std::path::Path, name: &str, kib: usize) -> usize {
        use rand::Rng;
        const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
        let mut rng = rand::thread_rng();
        let noise: String = (0..kib * 1024)
            .map(|_| ALPHABET[rng.gen_range(0..ALPHABET.len())] as char)
            .collect();
        let text = format!("DATA = '{noise}'\n");
        std::fs::write(dir.join(format!("{name}.py")), &text).unwrap();
        text.len()
    }

    #[test]
    fn a_child_flooding_module_requests_cannot_grow_the_masters_memory() {
        use econtext::actors::importer::{Importer, ImporterStats, MAX_OUTSTANDING_REPLIES};
        use econtext::wire::messages::ModuleReply;
        use std::sync::atomic::Ordering;
        use std::sync::Arc;
        run(async {
            let cap = Capture::default();
            let mut t = SimTree::new(cap.logger());
            let dir = super::scratch_dir("module-flood");
            let size = big_module(&dir, "bigmod", 256);
            let stats = Arc::new(ImporterStats::default());
            let finder = econtext::bootstrap::modules::ModuleFinder::new(vec![dir.to_path_buf()]);
            Importer::new(
                0,
                t.master().clone(),
                Box::new(finder),
                stats.clone(),
                cap.logger(),
            )
            .serve();
            let ask = |src: ContextId, reply_to: Handle| {
                Frame::new(
                    Header::new(0, src, handles::GET_MODULE, reply_to),
                    payload::encode(&"bigmod").unwrap(),
                )
            };
            // 2,000 requests for a 256 KiB module (500 MB of replies) from
            // a child that reads none of them.
            let (evil, end) = t.attach_raw("evil", 0).await;
            let mut raw = Evil::new(&t, end);
            const N: u64 = 2000;
            for round in 0..(N as u32 / 100) {
                raw.write(
                    (0..100)
                        .map(|i| ask(evil, 5000 + round * 100 + i))
                        .collect(),
                )
                .await;
            }
            let deadline = Instant::now() + Duration::from_secs(60);
            while stats.get_module_requests.load(Ordering::Relaxed) < N {
                assert!(Instant::now() < deadline, "{:?}", stats);
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            let s = t.master().send(GetStats).await.unwrap();
            let queued = s.queued_bytes.get(&evil).copied().unwrap_or(0);
            let bound = (MAX_OUTSTANDING_REPLIES + 1) * (size + 4096);
            assert!(
                queued <= bound,
                "{queued} bytes queued for evil (bound {bound})"
            );
            // Served: what is queued plus what the pipe took; the rest was
            // refused without being resolved or encoded.
            let sent = stats.modules_sent.load(Ordering::Relaxed);
            let refused = stats.refused_outstanding.load(Ordering::Relaxed);
            assert!(sent <= MAX_OUTSTANDING_REPLIES as u64 + 4, "{stats:?}");
            assert_eq!(sent + refused, N, "{stats:?}");
            let warnings = cap
                .lines
                .lock()
                .unwrap()
                .iter()
                .filter(|l| l.contains("module requests refused"))
                .count();
            assert_eq!(warnings, 1, "one warning per interval: {}", cap.text());

            // A sibling is served in full meanwhile.
            let (good, end) = t.attach_raw("good", 0).await;
            let mut sibling = Evil::new(&t, end);
            sibling.write(vec![ask(good, 77)]).await;
            let mut buf = BytesMut::new();
            let f = sibling.read(&mut buf, 30).await;
            assert_eq!(f.header.handle, 77);
            let reply: ModuleReply = payload::decode(&f.data).unwrap();
            let rec = &reply.expect("served")[0];
            assert!(
                rec.fullname == "bigmod" && !rec.filename.is_empty(),
                "{rec:?}"
            );

            // The flooder, reading at last, finds an answer to every
            // request: the module for the first ones, a typed refusal (an
            // ImportError record: no file, the reason as its text) for the
            // rest, never silence. (Small frames may overtake big ones.)
            let mut buf = BytesMut::new();
            let (mut full, mut refusals) = (0u64, 0u64);
            for _ in 0..N {
                let f = raw.read(&mut buf, 30).await;
                let reply: ModuleReply = payload::decode(&f.data).unwrap();
                let rec = &reply.expect("a record")[0];
                assert_eq!(rec.fullname, "bigmod");
                if rec.filename.is_empty() {
                    assert!(!rec.source.is_empty(), "the refusal says why");
                    refusals += 1;
                } else {
                    full += 1;
                }
            }
            assert_eq!((full, refusals), (sent, refused), "{stats:?}");
        });
    }

    /// Malformed requests to the built-in services (a Rust intermediate's
    /// module forwarder, the master's log forwarder) go through the same
    /// typed adapter as users' handlers: one that wants a reply gets a
    /// TypeError, one that wants none is counted and said in the log, and
    /// the services go on serving.
    #[test]
    fn malformed_requests_to_built_in_services_get_a_typed_answer() {
        use econtext::actors::logforwarder::LogForwarder;
        use econtext::wire::CallError;
        run(async {
            let cap = Capture::default();
            let mut t = SimTree::new(cap.logger());
            LogForwarder::new(cap.logger()).serve(t.master(), 0);
            let mid = t.spawn("mid", 0, functions()).await;
            let (evil, end) = t.attach_raw("evil", mid).await;
            let mut raw = Evil::new(&t, end);
            let not_a_name = payload::encode(&42u32).unwrap();
            raw.write(vec![
                // GET_MODULE whose name is a number, asking for a reply.
                Frame::new(
                    Header::new(mid, evil, handles::GET_MODULE, 7001),
                    not_a_name.clone(),
                ),
                // The same with no reply, and a FORWARD_LOG that is nil.
                Frame::new(Header::new(mid, evil, handles::GET_MODULE, 0), not_a_name),
                Frame::new(
                    Header::new(0, evil, handles::FORWARD_LOG, 0),
                    payload::encode(&()).unwrap(),
                ),
            ])
            .await;
            let mut buf = BytesMut::new();
            let f = raw.read(&mut buf, 10).await;
            assert_eq!((f.header.dst, f.header.handle), (evil, 7001));
            let e: CallError = payload::decode(&f.data).expect("a CallError");
            assert_eq!(e.type_name, "TypeError", "{e:?}");
            for (at, handle) in [(mid, handles::GET_MODULE), (0, handles::FORWARD_LOG)] {
                let seen = cap
                    .wait_for(
                        &[
                            "a handle refused a message",
                            &format!("handle={handle}"),
                            &format!("src={evil}"),
                        ],
                        10.0,
                    )
                    .await;
                assert!(seen, "refusal at {at} not logged:\n{}", cap.text());
            }
            // Still serving: a well-formed record is logged.
            let rec = econtext::wire::messages::ForwardLog {
                logger: "evil.log".into(),
                level: 20,
                message: "still heard".into(),
            };
            raw.write(vec![Frame::new(
                Header::new(0, evil, handles::FORWARD_LOG, 0),
                payload::encode(&rec).unwrap(),
            )])
            .await;
            assert!(cap.wait_for(&["still heard"], 10.0).await, "{}", cap.text());
        });
    }
}

// ---- spinning before sleeping (actors/src/spin.rs) ----

mod spin_side {
    use std::io::Write;
    use std::time::{Duration, Instant};

    use econtext::actors::spin::SpinPolicy;
    use econtext::testing::SimTree;
    use econtext::wire::{handles, Header};

    use super::common::{run, Capture};

    /// utime + stime of the calling thread, in clock ticks (100 a second).
    fn thread_ticks() -> u64 {
        let stat = std::fs::read_to_string("/proc/thread-self/stat").expect("/proc");
        let f: Vec<u64> = stat
            .rsplit_once(')')
            .expect("a stat line")
            .1
            .split_whitespace()
            .map(|x| x.parse().unwrap_or(0))
            .collect();
        f[11] + f[12]
    }

    /// `k` calls to `evil` that it never answers: `k` replies due.
    async fn calls_never_answered(
        t: &SimTree,
        evil: econtext::wire::ContextId,
        k: usize,
    ) -> Vec<impl Sized> {
        let mut pending = Vec::new();
        for _ in 0..k {
            let call = t.context(evil).call_with("never", "answered");
            pending.push(call.start::<i64>().await.expect("a call sent"));
        }
        pending
    }

    #[test]
    fn a_child_trickling_bytes_cannot_make_the_master_spin() {
        run(async {
            let mut t = SimTree::new(Capture::default().logger());
            // The longest window, far longer than the gaps between the
            // child's bytes: a rule that spun after whatever arrives would
            // never stop.
            let window = SpinPolicy::MAX_WINDOW;
            let (evil, mut sock) = t
                .attach_raw_socket("evil", 0, SpinPolicy::new(window))
                .await;
            // The master calls it k times (k replies due: the most windows
            // anything it sends can restart) and the windows those calls
            // opened run out.
            const K: u64 = 3;
            let _pending = calls_never_answered(&t, evil, K as usize).await;
            tokio::time::sleep(Duration::from_millis(50)).await;
            // It answers none, but sends 200 tiny whole frames, one every
            // 200 µs or more, then announces a 1 MiB frame and sends its
            // bytes one at a time: 3,000 of them.
            let mut codec = t.raw_codec();
            let mut tiny = Vec::new();
            for _ in 0..200 {
                let mut f = codec
                    .seal(&Header::new(0, evil, 4242, 0), &[0xc0])
                    .unwrap()
                    .to_vec();
                f.push(0xc0);
                tiny.push(f);
            }
            let data = vec![7u8; 1 << 20];
            let header = codec
                .seal(&Header::new(0, evil, handles::FORWARD_LOG, 0), &data)
                .unwrap();
            let peer = std::thread::spawn(move || {
                for f in &tiny {
                    sock.write_all(f).unwrap();
                    std::thread::sleep(Duration::from_micros(200));
                }
                sock.write_all(&header).unwrap();
                for sent in 0..3000 {
                    sock.write_all(&data[sent..sent + 1]).unwrap();
                    std::thread::sleep(Duration::from_micros(200));
                }
                sock
            });
            // This thread runs the master. The spin windows its links
            // started are counted (deterministic); its CPU while the bytes
            // come is a resource bound, not a timing: each byte costs a
            // wake-up and a read (17-19 ticks for 3,000 bytes in a debug
            // build); a master spinning through it used 88-95.
            let windows = econtext::actors::spin::windows_started();
            let before = thread_ticks();
            let started = Instant::now();
            while !peer.is_finished() {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            let used = thread_ticks() - before;
            let elapsed = started.elapsed();
            let _sock = peer.join().unwrap();
            let paid = econtext::actors::spin::windows_started() - windows;
            assert!(
                paid <= K,
                "{paid} spin windows for 200 frames and 3,000 bytes from a child with {K} \
                 replies due"
            );
            assert!(
                used < 60,
                "the master used {used} ticks of CPU in {elapsed:?} while a child with {K} \
                 calls unanswered sent 200 frames and 3,000 bytes"
            );
        });
    }

    #[test]
    fn a_master_awaiting_a_reply_spins_for_it() {
        // The other side of the rule: a call's window is spun in (counted
        // per window, not timed). One call at a time until one window
        // was spun (the first, unless a loaded machine let the whole
        // window pass before the reader was polled).
        run(async {
            let mut t = SimTree::new(Capture::default().logger());
            let (evil, _sock) = t
                .attach_raw_socket("evil", 0, SpinPolicy::new(SpinPolicy::MAX_WINDOW))
                .await;
            let before = econtext::actors::spin::windows_started();
            let mut pending = Vec::new();
            for _ in 0..100 {
                pending.extend(calls_never_answered(&t, evil, 1).await);
                tokio::time::sleep(Duration::from_millis(5)).await;
                if econtext::actors::spin::windows_started() > before {
                    break;
                }
            }
            assert!(
                econtext::actors::spin::windows_started() > before,
                "no window spun in {} calls",
                pending.len()
            );
        });
    }

    #[test]
    fn a_fan_out_to_three_children_does_not_spin() {
        // Three links awaiting replies on the master's thread: a fan-out,
        // throughput-bound, where spinning (and its sched_yield, which a
        // CPU hog can stretch to a time slice) would only cost the
        // master. Further calls start no window (counted, not timed).
        run(async {
            let mut t = SimTree::new(Capture::default().logger());
            let policy = SpinPolicy::new(SpinPolicy::MAX_WINDOW);
            let mut links = Vec::new();
            for name in ["a", "b", "c"] {
                links.push(t.attach_raw_socket(name, 0, policy).await);
            }
            let mut pending = Vec::new();
            for (id, _) in &links {
                pending.extend(calls_never_answered(&t, *id, 1).await);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
            let before = econtext::actors::spin::windows_started();
            for _ in 0..20 {
                for (id, _) in &links {
                    pending.extend(calls_never_answered(&t, *id, 1).await);
                }
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            let paid = econtext::actors::spin::windows_started() - before;
            assert_eq!(paid, 0, "{} calls to three children", pending.len());
        });
    }
}
