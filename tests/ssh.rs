//! ssh, sudo and su straight from the master, against a throwaway sshd and
//! throwaway users (root only: elsewhere each test prints SKIP), and the
//! container methods' argv against stub programs.

mod common;

use std::process::{Command, Output};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::sshd::{skip_unless, skip_unless_installed, Sshd, Sudoers, TempDir, TestUser};
use common::*;
use econtext::bootstrap::{
    ContainerOptions, HostKeyCheck, KubectlOptions, Secret, SshOptions, SuOptions, SudoOptions,
};
use econtext::{ConnectError, ConnectOptions, Method};

const SSH: &[&str] = &["/usr/sbin/sshd", "ssh", "ssh-keygen", "useradd"];

fn ssh_opts(sshd: &Sshd, user: &str) -> SshOptions {
    let mut o = SshOptions::new("127.0.0.1");
    o.user = Some(user.into());
    o.port = Some(sshd.port);
    o.identity_file = Some(sshd.key.display().to_string());
    o.check_host_keys = HostKeyCheck::Ignore;
    o.python = python3();
    o
}

fn text(o: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

/// Scans every process's command line until stopped; returns the pids
/// whose argv contained `needle`.
fn watch_cmdlines(needle: String, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<Vec<String>> {
    std::thread::spawn(move || {
        let mut seen = Vec::new();
        let mut scans = 0;
        while !stop.load(Ordering::SeqCst) || scans == 0 {
            for e in std::fs::read_dir("/proc").unwrap().flatten() {
                if let Ok(c) = std::fs::read(e.path().join("cmdline")) {
                    let c = String::from_utf8_lossy(&c).replace('\0', " ");
                    if c.contains(&needle) {
                        seen.push(format!("{}: {c}", e.file_name().to_string_lossy()));
                    }
                }
            }
            scans += 1;
            std::thread::sleep(Duration::from_millis(2));
        }
        assert!(scans > 3, "the scanner ran only {scans} times");
        seen
    })
}

#[test]
fn ssh_key_auth_connects_and_calls() {
    if skip_unless(SSH, "ssh_key_auth_connects_and_calls") {
        return;
    }
    let sshd = Sshd::start(false);
    run(async move {
        let cap = Capture::default();
        let master = master(&cap);
        let started = Instant::now();
        let ctx = master
            .connect(ConnectOptions::new(Method::Ssh(ssh_opts(&sshd, "root"))))
            .await
            .unwrap_or_else(|e| panic!("{e}\nsshd log:\n{}", sshd.log_text()));
        let uid: u32 = ctx.call("os", "getuid", ()).await.unwrap();
        let took = started.elapsed();
        assert_eq!(uid, 0);
        let version: String = ctx.call("platform", "python_version", ()).await.unwrap();
        assert!(version.starts_with('3'), "{version}");
        // The context really is behind sshd: its parent is sshd's session.
        let ppid: i32 = ctx.call("os", "getppid", ()).await.unwrap();
        let parent = std::fs::read_to_string(format!("/proc/{ppid}/cmdline")).unwrap_or_default();
        assert!(parent.contains("sshd"), "parent {ppid}: {parent:?}");
        eprintln!("ssh connect + first call: {took:?}");
        ctx.shutdown().await.unwrap();
        tokio::time::timeout(Duration::from_secs(5), ctx.dead())
            .await
            .expect("the ssh context exits after SHUTDOWN");
    });
}

#[test]
fn cli_calls_over_ssh() {
    if skip_unless(SSH, "cli_calls_over_ssh") {
        return;
    }
    let sshd = Sshd::start(false);
    let target = format!(
        "ssh:root@127.0.0.1:{}?identity={}&check_host_keys=ignore&python={}",
        sshd.port,
        sshd.key.display(),
        python3()
    );
    let out = Command::new(env!("CARGO_BIN_EXE_econtext"))
        .args(["call", &target, "os.getuid"])
        .output()
        .unwrap();
    let (stdout, stderr) = text(&out);
    assert!(
        out.status.success(),
        "{stderr}\nsshd log:\n{}",
        sshd.log_text()
    );
    assert_eq!(stdout.trim(), "0");
}

#[test]
fn ssh_password_auth_on_a_pty() {
    if skip_unless(SSH, "ssh_password_auth_on_a_pty") {
        return;
    }
    let sshd = Sshd::start(true);
    let user = TestUser::create("sp");
    let mut o = ssh_opts(&sshd, &user.name);
    o.identity_file = None;
    // No agent, no default keys: only the password can work.
    o.ssh_options = vec![
        "IdentitiesOnly=yes".into(),
        "IdentityFile=/dev/null".into(),
        "PubkeyAuthentication=no".into(),
    ];
    o.password = Some(Secret::new(user.password.clone()));
    let uid = user.uid;
    run(async move {
        let cap = Capture::default();
        let master = master(&cap);
        let ctx = master
            .connect(ConnectOptions::new(Method::Ssh(o)))
            .await
            .unwrap_or_else(|e| panic!("{e}\nsshd log:\n{}", sshd.log_text()));
        let got: u32 = ctx.call("os", "getuid", ()).await.unwrap();
        assert_eq!(got, uid);
        assert!(
            sshd.log_text().contains("Accepted password for"),
            "{}",
            sshd.log_text()
        );
        assert!(
            cap.text().contains("answered the password prompt"),
            "{}",
            cap.text()
        );
        ctx.shutdown().await.unwrap();
    });
}

#[test]
fn wrong_ssh_password_is_a_typed_error_within_5s() {
    if skip_unless(SSH, "wrong_ssh_password_is_a_typed_error_within_5s") {
        return;
    }
    let sshd = Sshd::start(true);
    let user = TestUser::create("sw");
    let mut o = ssh_opts(&sshd, &user.name);
    o.identity_file = None;
    o.ssh_options = vec!["PubkeyAuthentication=no".into()];
    let wrong = format!("{}-wrong", user.password);
    o.password = Some(Secret::new(wrong.clone()));
    run(async move {
        let cap = Capture::default();
        let master = master(&cap);
        let started = Instant::now();
        let err = master
            .connect(ConnectOptions::new(Method::Ssh(o)).connect_timeout(Duration::from_secs(20)))
            .await
            .unwrap_err();
        let took = started.elapsed();
        assert!(
            matches!(err, ConnectError::PasswordRefused { ref method } if method == "ssh"),
            "{err:?}"
        );
        assert!(took < Duration::from_secs(5), "took {took:?}");
        eprintln!("wrong ssh password refused after {took:?}");
        assert!(!format!("{err} {err:?}").contains(&wrong));
        assert!(!cap.text().contains(&wrong), "{}", cap.text());
    });
}

#[test]
fn unknown_host_key_under_enforce_is_refused() {
    if skip_unless(SSH, "unknown_host_key_under_enforce_is_refused") {
        return;
    }
    let sshd = Sshd::start(false);
    let dir = TempDir::new("kh");
    let known = dir.path("known_hosts");
    std::fs::write(&known, "").unwrap();
    let mut o = ssh_opts(&sshd, "root");
    o.check_host_keys = HostKeyCheck::Enforce;
    o.ssh_options = vec![
        format!("UserKnownHostsFile={}", known.display()),
        "GlobalKnownHostsFile=/dev/null".into(),
    ];
    let known_line = sshd.known_hosts_line();
    run(async move {
        let master = master(&Capture::default());
        // No policy asked for (ssh_config decides) and none configured:
        // ssh's own `ask` has no terminal to ask on, so it refuses too.
        let mut default = o.clone();
        default.check_host_keys = HostKeyCheck::default();
        let err = master
            .connect(ConnectOptions::new(Method::Ssh(default)))
            .await
            .unwrap_err();
        assert!(
            matches!(&err, ConnectError::HostKeyRefused { .. }),
            "{err:?}"
        );
        let err = master
            .connect(ConnectOptions::new(Method::Ssh(o.clone())))
            .await
            .unwrap_err();
        let ConnectError::HostKeyRefused { detail } = &err else {
            panic!("{err:?}")
        };
        assert!(detail.contains("host key is known"), "{detail}");
        assert!(err.to_string().starts_with("host key refused: "), "{err}");
        // The same host, once its key is known, is let in.
        std::fs::write(&known, known_line).unwrap();
        let ctx = master
            .connect(ConnectOptions::new(Method::Ssh(o)))
            .await
            .unwrap();
        assert_eq!(ctx.call::<u32>("os", "getuid", ()).await.unwrap(), 0);
    });
}

/// A password login (ssh on our pty) with no host key policy asked for
/// passes no `StrictHostKeyChecking` and no environment of ours: what
/// ssh_config says stands. Left at `ask`, ssh's yes/no question on the pty
/// is answered "no" (a typed HostKeyRefused, not a wait for the connect
/// timeout), by the master and by a Python intermediate alike; with
/// `accept-new` in ssh_config, the unknown key is accepted and recorded.
#[test]
fn password_login_leaves_host_key_policy_to_ssh_config() {
    if skip_unless(SSH, "password_login_leaves_host_key_policy_to_ssh_config") {
        return;
    }
    let sshd = Sshd::start(true);
    let user = TestUser::create("hk");
    let dir = TempDir::new("hkcfg");
    let known = dir.path("known_hosts");
    std::fs::write(&known, "").unwrap();
    let config = dir.path("ssh_config");
    let write_config = |policy: &str| {
        std::fs::write(
            &config,
            format!(
                "Host *\n{policy}  UserKnownHostsFile {}\n  GlobalKnownHostsFile /dev/null\n",
                known.display()
            ),
        )
        .unwrap()
    };
    // ssh reading this file as its ssh_config (-F), as a user's own.
    let wrapper = dir.path("ssh");
    std::fs::write(
        &wrapper,
        format!("#!/bin/sh\nexec ssh -F {} \"$@\"\n", config.display()),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755)).unwrap();
    let mut o = ssh_opts(&sshd, &user.name);
    o.identity_file = None;
    o.check_host_keys = HostKeyCheck::SshConfig;
    o.ssh_options = vec!["PubkeyAuthentication=no".into()];
    o.password = Some(Secret::new(user.password.clone()));
    o.ssh_path = wrapper.display().to_string();
    let spec = Method::Ssh(o.clone())
        .spawn_spec("hk", Duration::from_secs(60))
        .unwrap();
    assert!(
        !spec
            .argv
            .iter()
            .any(|a| a.contains("StrictHostKeyChecking")),
        "{:?}",
        spec.argv
    );
    assert!(spec.env.is_empty(), "{:?}", spec.env);
    write_config("");
    run(async {
        let cap = Capture::default();
        let master = master(&cap);
        let refused = |err: ConnectError, via: &str| {
            assert!(
                matches!(&err, ConnectError::HostKeyRefused { detail }
                    if detail.to_lowercase().contains("host key verification failed")),
                "{via}: {err:?}\n{}",
                cap.text()
            );
        };
        let err = master
            .connect(
                ConnectOptions::new(Method::Ssh(o.clone()))
                    .connect_timeout(Duration::from_secs(60)),
            )
            .await
            .unwrap_err();
        refused(err, "from the master");
        let mid = connect(
            &master,
            ConnectOptions::new(Method::Ssh(ssh_opts(&sshd, "root"))).name("mid"),
            "ssh as root",
            &sshd,
        )
        .await;
        let err = master
            .connect(
                ConnectOptions::new(Method::Ssh(o.clone()))
                    .via(&mid)
                    .connect_timeout(Duration::from_secs(60)),
            )
            .await
            .unwrap_err();
        refused(err, "through a Python intermediate");
        assert_eq!(std::fs::read_to_string(&known).unwrap(), "");

        write_config("  StrictHostKeyChecking accept-new\n");
        let ctx = master
            .connect(ConnectOptions::new(Method::Ssh(o.clone())).name("accepted"))
            .await
            .unwrap_or_else(|e| panic!("{e}\n{}", cap.text()));
        assert_eq!(ctx.call::<u32>("os", "getuid", ()).await.unwrap(), user.uid);
        assert!(
            !std::fs::read_to_string(&known).unwrap().is_empty(),
            "accept-new recorded nothing"
        );
        ctx.shutdown().await.unwrap();
    });
}

#[test]
fn host_that_accepts_tcp_then_says_nothing_times_out() {
    if skip_unless_installed(
        &["ssh"],
        "host_that_accepts_tcp_then_says_nothing_times_out",
    ) {
        return;
    }
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let held = Arc::new(Mutex::new(Vec::new()));
    let h = held.clone();
    std::thread::spawn(move || {
        for s in listener.incoming().flatten() {
            h.lock().unwrap().push(s);
        }
    });
    let mut o = SshOptions::new("127.0.0.1");
    o.port = Some(port);
    o.check_host_keys = HostKeyCheck::Ignore;
    run(async move {
        let master = master(&Capture::default());
        let started = Instant::now();
        let err = master
            .connect(ConnectOptions::new(Method::Ssh(o)).connect_timeout(Duration::from_secs(2)))
            .await
            .unwrap_err();
        let took = started.elapsed();
        let ConnectError::Timeout { stage, after, .. } = &err else {
            panic!("{err:?}")
        };
        assert!(stage.contains("ssh"), "{err}");
        assert_eq!(*after, Duration::from_secs(2));
        assert!(err.to_string().contains("timed out after 2s"), "{err}");
        assert!(
            took >= Duration::from_millis(1900) && took < Duration::from_secs(4),
            "took {took:?}"
        );
        assert!(!held.lock().unwrap().is_empty(), "ssh never connected");
    });
}

#[test]
fn sudo_to_a_user_runs_as_that_user() {
    if skip_unless(&["sudo", "useradd"], "sudo_to_a_user_runs_as_that_user") {
        return;
    }
    let user = TestUser::create("su");
    let o = SudoOptions::default()
        .user(user.name.clone())
        .python(python3());
    let uid = user.uid;
    run(async move {
        let master = master(&Capture::default());
        let ctx = master
            .connect(ConnectOptions::new(Method::Sudo(o)))
            .await
            .unwrap();
        assert_eq!(ctx.call::<u32>("os", "getuid", ()).await.unwrap(), uid);
        ctx.shutdown().await.unwrap();
    });
}

/// Runs the CLI as `user` with `PW` in its environment.
fn cli_as(user: &TestUser, target: &str, password: &str) -> (Output, Duration) {
    let started = Instant::now();
    let out = user
        .command(env!("CARGO_BIN_EXE_econtext"))
        .args(["call", target, "os.getuid", "--connect-timeout", "20"])
        .env("PW", password)
        .output()
        .unwrap();
    (out, started.elapsed())
}

#[test]
fn wrong_sudo_password_is_a_typed_error_within_5s() {
    if skip_unless(
        &["sudo", "useradd", "setpriv"],
        "wrong_sudo_password_is_a_typed_error_within_5s",
    ) {
        return;
    }
    let user = TestUser::create("sd");
    let _sudoers = Sudoers::add("sd", &format!("{} ALL=(ALL:ALL) ALL\n", user.name));
    let target = format!("sudo:root?password_env=PW&python={}", python3());
    let (out, _) = cli_as(&user, &target, &user.password);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}");
    assert_eq!(stdout.trim(), "0");
    assert!(!stdout.contains(&user.password) && !stderr.contains(&user.password));

    let wrong = format!("{}-wrong", user.password);
    let (out, took) = cli_as(&user, &target, &wrong);
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(2), "{stdout}{stderr}");
    assert!(stderr.contains("password refused by sudo"), "{stderr}");
    assert!(took < Duration::from_secs(5), "took {took:?}");
    eprintln!("wrong sudo password refused after {took:?}");
    assert!(
        !stdout.contains(&wrong) && !stderr.contains(&wrong),
        "{stderr}"
    );

    // No password configured, and sudo wants one: said at once.
    let (out, took) = cli_as(&user, &format!("sudo:root?python={}", python3()), "");
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("asked for a password"), "{stderr}");
    assert!(took < Duration::from_secs(5), "took {took:?}");
}

#[test]
fn su_with_password() {
    if skip_unless(&["su", "useradd", "setpriv"], "su_with_password") {
        return;
    }
    let from = TestUser::create("sf");
    let to = TestUser::create("st");
    let target = format!("su:{}?password_env=PW&python={}", to.name, python3());
    let (out, _) = cli_as(&from, &target, &to.password);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}");
    assert_eq!(stdout.trim(), to.uid.to_string());
    assert!(!stderr.contains(&to.password), "{stderr}");

    let wrong = format!("{}-wrong", to.password);
    let (out, took) = cli_as(&from, &target, &wrong);
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(2), "{stdout}{stderr}");
    assert!(stderr.contains("password refused by su"), "{stderr}");
    // su says so only when it exits, after PAM's failure delay (about 3 s
    // here), so its bound is wider than sudo's.
    assert!(took < Duration::from_secs(8), "took {took:?}");
    eprintln!("wrong su password refused after {took:?}");
    assert!(
        !stdout.contains(&wrong) && !stderr.contains(&wrong),
        "{stderr}"
    );

    // Directly from the master too (as root, su asks nothing).
    let o = SuOptions::default().user(to.name.clone()).python(python3());
    let uid = to.uid;
    run(async move {
        let master = master(&Capture::default());
        let ctx = master
            .connect(ConnectOptions::new(Method::Su(o)))
            .await
            .unwrap();
        assert_eq!(ctx.call::<u32>("os", "getuid", ()).await.unwrap(), uid);
    });
}

#[test]
fn passwords_never_appear_in_ps_or_logs() {
    if skip_unless(SSH, "passwords_never_appear_in_ps_or_logs") {
        return;
    }
    let sshd = Sshd::start(true);
    let user = TestUser::create("ps");
    let mut o = ssh_opts(&sshd, &user.name);
    o.identity_file = None;
    o.ssh_options = vec!["PubkeyAuthentication=no".into()];
    o.password = Some(Secret::new(user.password.clone()));
    let password = user.password.clone();
    let uid = user.uid;
    run(async move {
        let cap = Capture::default();
        let master = master(&cap);
        let stop = Arc::new(AtomicBool::new(false));
        let scanner = watch_cmdlines(password.clone(), stop.clone());
        let ctx = master
            .connect(ConnectOptions::new(Method::Ssh(o.clone())))
            .await
            .unwrap();
        assert_eq!(ctx.call::<u32>("os", "getuid", ()).await.unwrap(), uid);
        // A wrong one too: its error and log lines.
        let wrong = format!("{password}-wrong");
        o.password = Some(Secret::new(wrong.clone()));
        let err = master
            .connect(ConnectOptions::new(Method::Ssh(o)))
            .await
            .unwrap_err();
        stop.store(true, Ordering::SeqCst);
        let seen = scanner.join().unwrap();
        assert!(seen.is_empty(), "password in argv: {seen:?}");
        let log = cap.text();
        assert!(log.contains("answered the password prompt"), "{log}");
        for secret in [&password, &wrong] {
            assert!(!log.contains(secret.as_str()), "{log}");
            assert!(!format!("{err} {err:?}").contains(secret.as_str()));
        }
    });
}

/// A stub engine: logs its argv (one per line) and execs the python argv
/// that follows `--` (and, for `skip`=1, the container name after it).
fn stub(dir: &TempDir, name: &str, skip: usize) -> (String, std::path::PathBuf) {
    let log = dir.path(&format!("{name}.argv"));
    let path = dir.path(name);
    std::fs::write(
        &path,
        format!(
            "#!/bin/sh\nfor a; do printf '%s\\n' \"$a\"; done > {log}\n\
             while [ \"$1\" != -- ]; do shift; done\nshift {n}\nexec \"$@\"\n",
            log = log.display(),
            n = 1 + skip
        ),
    )
    .unwrap();
    std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    (path.display().to_string(), log)
}

#[test]
fn container_methods_argv_against_stub_engines() {
    let dir = TempDir::new("stubs");
    let (docker, docker_log) = stub(&dir, "docker", 1);
    let (podman, podman_log) = stub(&dir, "podman", 1);
    let (kubectl, kubectl_log) = stub(&dir, "kubectl", 0);
    let py = python3();
    let mut d = ContainerOptions::new(&docker, "web");
    d.user = Some("app".into());
    d.python = py.clone();
    let mut p = ContainerOptions::new(&podman, "db");
    p.python = py.clone();
    let mut k = KubectlOptions::new("pod-7");
    k.namespace = Some("prod".into());
    k.container = Some("main".into());
    k.kubectl_path = kubectl.clone();
    k.python = py.clone();
    run(async move {
        let master = master(&Capture::default());
        for (method, log, expect) in [
            (
                Method::Docker(d),
                docker_log,
                vec!["exec", "-i", "-u", "app", "--", "web", &py, "-S", "-c"],
            ),
            (
                Method::Podman(p),
                podman_log,
                vec!["exec", "-i", "--", "db", &py, "-S", "-c"],
            ),
            (
                Method::Kubectl(k),
                kubectl_log,
                vec![
                    "--namespace=prod",
                    "exec",
                    "-i",
                    "--container=main",
                    "pod-7",
                    "--",
                    &py,
                    "-S",
                    "-c",
                ],
            ),
        ] {
            let kind = method.kind();
            let ctx = master
                .connect(ConnectOptions::new(method))
                .await
                .unwrap_or_else(|e| panic!("{kind}: {e}"));
            let pid: u32 = ctx.call("os", "getpid", ()).await.unwrap();
            assert!(pid > 0);
            let logged = std::fs::read_to_string(&log).unwrap();
            let lines: Vec<&str> = logged.lines().collect();
            assert_eq!(lines[..expect.len()], expect[..], "{kind}: {logged}");
            assert!(
                lines[expect.len()].starts_with("import binascii,zlib;N='"),
                "{kind}: {logged}"
            );
            ctx.shutdown().await.unwrap();
        }
    });
}

#[test]
fn sudo_through_a_rust_intermediate_runs_as_that_user() {
    if skip_unless(
        &["sudo", "useradd"],
        "sudo_through_a_rust_intermediate_runs_as_that_user",
    ) {
        return;
    }
    let user = TestUser::create("sv");
    let o = SudoOptions::default()
        .user(user.name.clone())
        .python(python3());
    let uid = user.uid;
    run(async move {
        let master = master(&Capture::default());
        let mid = master
            .rust_context("mid", None, econtext::Functions::default())
            .await
            .unwrap();
        let ctx = master
            .connect(ConnectOptions::new(Method::Sudo(o)).via(&mid))
            .await
            .unwrap();
        assert_eq!(ctx.call::<u32>("os", "getuid", ()).await.unwrap(), uid);
        assert_eq!(master.ancestors(ctx.id()).await, vec![mid.id(), 0]);
        ctx.shutdown().await.unwrap();
    });
}

// ---- Python intermediates over ssh: chains, passwords, deaths, routing ----

fn sudo_opts(user: &str, password: Option<&str>) -> SudoOptions {
    SudoOptions::default()
        .user(user.into())
        .password(password.map(Secret::new))
        .python(python3())
}

/// A master whose module path serves `ecvia` (and the dir holding it).
fn master_serving(cap: &Capture) -> (econtext::Master, TempDir) {
    let dir = TempDir::new("ecvia");
    std::fs::write(dir.path("ecvia.py"), ECVIA).unwrap();
    let m = econtext::Master::new(
        econtext::MasterOptions::default()
            .module_path(vec![dir.0.clone()])
            .log(cap.logger()),
    );
    (m, dir)
}

async fn connect(
    master: &econtext::Master,
    o: ConnectOptions,
    what: &str,
    sshd: &Sshd,
) -> econtext::Context {
    master
        .connect(o)
        .await
        .unwrap_or_else(|e| panic!("{what}: {e}\nsshd log:\n{}", sshd.log_text()))
}

#[test]
fn four_hop_chain_ssh_sudo_ssh_sudo() {
    if skip_unless(
        &[SSH, &["sudo"]].concat(),
        "four_hop_chain_ssh_sudo_ssh_sudo",
    ) {
        return;
    }
    let sshd = Sshd::start(false);
    let user = TestUser::create("fh");
    let uid = user.uid;
    let name = user.name.clone();
    let ssh = Method::Ssh(ssh_opts(&sshd, "root"));
    let target = {
        let hop = format!(
            "ssh:root@127.0.0.1:{}?identity={}&check_host_keys=ignore&python={}",
            sshd.port,
            sshd.key.display(),
            python3()
        );
        let py = python3();
        format!("{hop},sudo?python={py},{hop},sudo:{name}?python={py}")
    };
    run(async {
        let master = master(&Capture::default());
        let ssh1 = connect(
            &master,
            ConnectOptions::new(ssh.clone()).name("ssh1"),
            "ssh1",
            &sshd,
        )
        .await;
        let sudo1 = connect(
            &master,
            ConnectOptions::new(Method::Sudo(sudo_opts("root", None)))
                .name("sudo1")
                .via(&ssh1),
            "sudo1",
            &sshd,
        )
        .await;
        let ssh2 = connect(
            &master,
            ConnectOptions::new(ssh).name("ssh2").via(&sudo1),
            "ssh2",
            &sshd,
        )
        .await;
        let leaf = connect(
            &master,
            ConnectOptions::new(Method::Sudo(sudo_opts(&name, None)))
                .name("leaf")
                .via(&ssh2),
            "leaf",
            &sshd,
        )
        .await;
        assert_eq!(leaf.call::<u32>("os", "getuid", ()).await.unwrap(), uid);
        assert_eq!(
            master.ancestors(leaf.id()).await,
            vec![ssh2.id(), sudo1.id(), ssh1.id(), 0]
        );
        ssh1.shutdown().await.unwrap();
        tokio::time::timeout(Duration::from_secs(10), leaf.dead())
            .await
            .expect("shutting ssh1 down takes the chain below it");
    });
    // The same chain from the CLI.
    let out = Command::new(env!("CARGO_BIN_EXE_econtext"))
        .args(["call", &target, "os.getuid"])
        .output()
        .unwrap();
    let (stdout, stderr) = text(&out);
    assert!(
        out.status.success(),
        "{target}: {stderr}\nsshd log:\n{}",
        sshd.log_text()
    );
    assert_eq!(stdout.trim(), uid.to_string());
    // And the two-hop form the CLI documents: ssh, then sudo to a user.
    let two = format!(
        "ssh:root@127.0.0.1:{}?identity={}&check_host_keys=ignore,sudo:{name}",
        sshd.port,
        sshd.key.display()
    );
    let out = Command::new(env!("CARGO_BIN_EXE_econtext"))
        .args(["call", &two, "os.getuid"])
        .output()
        .unwrap();
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{two}: {stderr}");
    assert_eq!(stdout.trim(), uid.to_string());
}

#[test]
fn sudo_password_answered_by_a_python_intermediate() {
    if skip_unless(
        &[SSH, &["sudo"]].concat(),
        "sudo_password_answered_by_a_python_intermediate",
    ) {
        return;
    }
    let sshd = Sshd::start(false);
    let user = TestUser::create("pi");
    let _sudoers = Sudoers::add("pi", &format!("{} ALL=(ALL:ALL) ALL\n", user.name));
    let password = user.password.clone();
    let wrong = format!("{password}-wrong");
    let name = user.name.clone();
    run(async {
        let cap = Capture::default();
        let master = master(&cap);
        let mid = connect(
            &master,
            ConnectOptions::new(Method::Ssh(ssh_opts(&sshd, &name))).name("mid"),
            "ssh as the test user",
            &sshd,
        )
        .await;
        // The wrong one first: a right one would leave a sudo timestamp.
        let started = Instant::now();
        let err = master
            .connect(
                ConnectOptions::new(Method::Sudo(sudo_opts("root", Some(&wrong))))
                    .name("wrong")
                    .via(&mid)
                    .connect_timeout(Duration::from_secs(20)),
            )
            .await
            .unwrap_err();
        let took = started.elapsed();
        // The intermediate's refusal arrives as the same typed error a
        // direct connection gives.
        assert!(
            matches!(&err, ConnectError::PasswordRefused { method } if method == "sudo"),
            "{err:?}"
        );
        assert!(took < Duration::from_secs(5), "took {took:?}");
        eprintln!("wrong sudo password refused through a Python intermediate after {took:?}");

        let leaf = master
            .connect(
                ConnectOptions::new(Method::Sudo(sudo_opts("root", Some(&password))))
                    .name("root")
                    .via(&mid),
            )
            .await
            .unwrap_or_else(|e| panic!("{e}\n{}", cap.text()));
        assert_eq!(leaf.call::<u32>("os", "getuid", ()).await.unwrap(), 0);
        assert_eq!(master.ancestors(leaf.id()).await, vec![mid.id(), 0]);
        // No password, and sudo wants one (sudo -n): said at once.
        let started = Instant::now();
        let none = master
            .connect(
                ConnectOptions::new(Method::Sudo(sudo_opts("nobody", None)))
                    .name("none")
                    .via(&mid),
            )
            .await
            .unwrap_err();
        assert!(
            matches!(&none, ConnectError::PasswordRequired { method } if method == "sudo"),
            "{none}"
        );
        assert!(started.elapsed() < Duration::from_secs(5));
        // Whatever the intermediate forwarded has arrived by now.
        let _: u32 = mid.call("os", "getuid", ()).await.unwrap();
        let log = cap.text();
        for secret in [&password, &wrong] {
            assert!(!format!("{err} {err:?}").contains(secret.as_str()));
            assert!(!log.contains(secret.as_str()), "{log}");
        }
    });
}

/// The pid of this process's child `ssh` whose argv names `port`.
fn ssh_client_pid(port: u16) -> Option<i32> {
    let me = std::process::id().to_string();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        let ppid = stat
            .rsplit_once(')')
            .and_then(|(_, r)| r.split_whitespace().nth(1));
        if ppid != Some(me.as_str()) {
            continue;
        }
        let argv: Vec<String> = std::fs::read(format!("/proc/{pid}/cmdline"))
            .unwrap_or_default()
            .split(|&b| b == 0)
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        let is_ssh = argv
            .first()
            .is_some_and(|a| a == "ssh" || a.ends_with("/ssh"));
        if is_ssh
            && argv
                .windows(2)
                .any(|w| w[0] == "-p" && w[1] == port.to_string())
        {
            return Some(pid);
        }
    }
    None
}

#[test]
fn killing_the_ssh_client_fails_pending_calls_below_within_1s() {
    if skip_unless(
        &[SSH, &["sudo"]].concat(),
        "killing_the_ssh_client_fails_pending_calls_below_within_1s",
    ) {
        return;
    }
    let sshd = Sshd::start(false);
    let user = TestUser::create("kc");
    let name = user.name.clone();
    run(async {
        let master = master(&Capture::default());
        let ssh = connect(
            &master,
            ConnectOptions::new(Method::Ssh(ssh_opts(&sshd, "root"))).name("ssh"),
            "ssh",
            &sshd,
        )
        .await;
        let leaf = connect(
            &master,
            ConnectOptions::new(Method::Sudo(sudo_opts(&name, None)))
                .name("leaf")
                .via(&ssh),
            "leaf",
            &sshd,
        )
        .await;
        let pid = ssh_client_pid(sshd.port).expect("the master's ssh client");
        let (l, s) = (leaf.clone(), ssh.clone());
        let on_leaf = actix_rt::spawn(async move {
            let r = l.call::<()>("time", "sleep", (30,)).await;
            (r, Instant::now())
        });
        let on_ssh = actix_rt::spawn(async move {
            let r = s.call::<()>("time", "sleep", (30,)).await;
            (r, Instant::now())
        });
        // Both calls are running (their sleeps have started).
        tokio::time::sleep(Duration::from_millis(500)).await;
        let killed = Instant::now();
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGKILL,
        )
        .unwrap();
        for (what, h) in [("leaf", on_leaf), ("ssh", on_ssh)] {
            let (r, at) = tokio::time::timeout(Duration::from_secs(5), h)
                .await
                .unwrap_or_else(|_| panic!("the call on {what} is still pending after 5 s"))
                .unwrap();
            let took = at - killed;
            assert!(
                matches!(r, Err(econtext::Error::Dead { .. })),
                "{what}: {r:?}"
            );
            assert!(took < Duration::from_secs(1), "{what}: took {took:?}");
            eprintln!("call on {what} failed {took:?} after the ssh client was killed");
        }
    });
}

#[test]
fn leaves_of_two_ssh_branches_talk_along_the_tree() {
    if skip_unless(
        &[SSH, &["sudo"]].concat(),
        "leaves_of_two_ssh_branches_talk_along_the_tree",
    ) {
        return;
    }
    let sshd = Sshd::start(false);
    let a = TestUser::create("ta");
    let b = TestUser::create("tb");
    let (na, nb, ua, ub) = (a.name.clone(), b.name.clone(), a.uid, b.uid);
    run(async {
        let cap = Capture::default();
        let (master, _dir) = master_serving(&cap);
        let ssh = Method::Ssh(ssh_opts(&sshd, "root"));
        let ssh_a = connect(
            &master,
            ConnectOptions::new(ssh.clone()).name("ssh-a"),
            "ssh-a",
            &sshd,
        )
        .await;
        let ssh_b = connect(
            &master,
            ConnectOptions::new(ssh).name("ssh-b"),
            "ssh-b",
            &sshd,
        )
        .await;
        let leaf_a = connect(
            &master,
            ConnectOptions::new(Method::Sudo(sudo_opts(&na, None)))
                .name("leaf-a")
                .via(&ssh_a),
            "leaf-a",
            &sshd,
        )
        .await;
        let leaf_b = connect(
            &master,
            ConnectOptions::new(Method::Sudo(sudo_opts(&nb, None)))
                .name("leaf-b")
                .via(&ssh_b),
            "leaf-b",
            &sshd,
        )
        .await;
        assert_eq!(leaf_a.call::<u32>("os", "getuid", ()).await.unwrap(), ua);
        assert_eq!(leaf_b.call::<u32>("os", "getuid", ()).await.unwrap(), ub);
        for s in [&ssh_a, &ssh_b] {
            let _: bool = s.call("ecvia", "trace", (true,)).await.unwrap();
        }
        let handle: u32 = leaf_b.call("ecvia", "listen", ()).await.unwrap();
        let _: bool = leaf_a
            .call("ecvia", "send", (leaf_b.id(), handle, "from leaf-a"))
            .await
            .unwrap();
        let got: serde_json::Value = leaf_b.call("ecvia", "got", (1,)).await.unwrap();
        assert_eq!(
            got,
            serde_json::json!([[leaf_a.id(), "from leaf-a"]]),
            "delivered, with its true source"
        );
        // leaf-a -> ssh-a (in from leaf-a; up to the master, which has no
        // trace) -> ssh-b (out to leaf-b) -> leaf-b.
        let (src, dst) = (leaf_a.id() as i64, leaf_b.id() as i64);
        for (ctx, want) in [
            (&ssh_a, (leaf_a.id(), "in")),
            (&ssh_b, (leaf_b.id(), "out")),
        ] {
            let t: Vec<(i64, String, i64, i64, i64)> =
                ctx.call("ecvia", "traced", ()).await.unwrap();
            let ours: Vec<(i64, &str)> = t
                .iter()
                .filter(|f| f.2 == src && f.3 == dst && f.4 == handle as i64)
                .map(|f| (f.0, f.1.as_str()))
                .collect();
            assert_eq!(ours, vec![(want.0 as i64, want.1)], "{}: {t:?}", ctx.name());
        }
    });
}

#[test]
fn ssh_password_answered_on_a_pty_by_python_2_and_3_intermediates() {
    if skip_unless(
        SSH,
        "ssh_password_answered_on_a_pty_by_python_2_and_3_intermediates",
    ) {
        return;
    }
    let sshd = Sshd::start(true);
    let user = TestUser::create("pp");
    let mut o = ssh_opts(&sshd, &user.name);
    o.identity_file = None;
    o.ssh_options = vec![
        "IdentitiesOnly=yes".into(),
        "IdentityFile=/dev/null".into(),
        "PubkeyAuthentication=no".into(),
    ];
    let password = user.password.clone();
    let wrong = format!("{password}-wrong");
    let uid = user.uid;
    let pythons: Vec<String> = ["/root/.pyenv/versions/2.7.18/bin/python", &python3()]
        .iter()
        .filter(|p| std::path::Path::new(p).exists())
        .map(|p| p.to_string())
        .collect();
    run(async {
        let cap = Capture::default();
        let master = master(&cap);
        for py in &pythons {
            let mid = master
                .connect(ConnectOptions::new(Method::Local(local(py))).name("mid"))
                .await
                .unwrap();
            let mut good = o.clone();
            good.password = Some(Secret::new(password.clone()));
            let ctx = master
                .connect(ConnectOptions::new(Method::Ssh(good)).via(&mid))
                .await
                .unwrap_or_else(|e| panic!("{py}: {e}\nsshd log:\n{}", sshd.log_text()));
            assert_eq!(
                ctx.call::<u32>("os", "getuid", ()).await.unwrap(),
                uid,
                "{py}"
            );
            let mut bad = o.clone();
            bad.password = Some(Secret::new(wrong.clone()));
            let started = Instant::now();
            let err = master
                .connect(ConnectOptions::new(Method::Ssh(bad)).via(&mid))
                .await
                .unwrap_err();
            let took = started.elapsed();
            assert!(
                matches!(&err, ConnectError::PasswordRefused { method } if method == "ssh"),
                "{py}: {err}"
            );
            assert!(took < Duration::from_secs(5), "{py}: took {took:?}");
            eprintln!("{py}: wrong ssh password refused after {took:?}");
            for secret in [&password, &wrong] {
                assert!(!format!("{err} {err:?}").contains(secret.as_str()));
            }
            mid.shutdown().await.unwrap();
        }
        let log = cap.text();
        for secret in [&password, &wrong] {
            assert!(!log.contains(secret.as_str()), "{log}");
        }
    });
}

#[test]
fn su_password_answered_by_a_python_intermediate() {
    if skip_unless(
        &[SSH, &["su"]].concat(),
        "su_password_answered_by_a_python_intermediate",
    ) {
        return;
    }
    let sshd = Sshd::start(false);
    let from = TestUser::create("sa");
    let to = TestUser::create("sb");
    let su = |password: &str| {
        SuOptions::default()
            .user(to.name.clone())
            .password(Some(Secret::new(password)))
            .python(python3())
    };
    let wrong = format!("{}-wrong", to.password);
    run(async {
        let cap = Capture::default();
        let master = master(&cap);
        let mid = connect(
            &master,
            ConnectOptions::new(Method::Ssh(ssh_opts(&sshd, &from.name))).name("mid"),
            "ssh as the test user",
            &sshd,
        )
        .await;
        let ctx = master
            .connect(ConnectOptions::new(Method::Su(su(&to.password))).via(&mid))
            .await
            .unwrap_or_else(|e| panic!("{e}\n{}", cap.text()));
        assert_eq!(ctx.call::<u32>("os", "getuid", ()).await.unwrap(), to.uid);
        let started = Instant::now();
        let err = master
            .connect(ConnectOptions::new(Method::Su(su(&wrong))).via(&mid))
            .await
            .unwrap_err();
        let took = started.elapsed();
        assert!(
            matches!(&err, ConnectError::PasswordRefused { method } if method == "su"),
            "{err}"
        );
        // su says so only when it exits, after PAM's failure delay.
        assert!(took < Duration::from_secs(8), "took {took:?}");
        eprintln!("wrong su password refused through a Python intermediate after {took:?}");
        let log = cap.text();
        for secret in [&to.password, &wrong] {
            assert!(!format!("{err} {err:?}").contains(secret.as_str()));
            assert!(!log.contains(secret.as_str()), "{log}");
        }
    });
}
