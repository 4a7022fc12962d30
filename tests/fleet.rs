//! The fleet CLI (`econtext run` / `econtext call -i`) on a fleet of 20
//! distinct loopback hosts started here: two sshd (sshd takes at most 16
//! listen addresses), 10 addresses each, INI and YAML inventories. Every
//! test asserts on the `--json` lines and the exit code.

mod common;

use std::collections::BTreeMap;
use std::io::Read;
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::sshd::{self, free_port, skip_unless, Sshd, TempDir, TestUser};
use serde_json::Value;

const EXE: &str = env!("CARGO_BIN_EXE_econtext");

/// 20 hosts: 127.0.0.B .. 127.0.0.(B+19) on one port, two sshd.
struct Fleet {
    _one: std::sync::MutexGuard<'static, ()>,
    sshd: Vec<Sshd>,
    port: u16,
    base: u8,
    key: PathBuf,
    dir: TempDir,
}

/// One fleet at a time: 20 hosts' sshd and interpreters starting at once
/// already load a 2-core machine; several fleets at once would make the
/// connect timeouts these tests assert on a matter of luck.
static ONE_FLEET: std::sync::Mutex<()> = std::sync::Mutex::new(());

impl Fleet {
    fn start(base: u8) -> Fleet {
        let guard = ONE_FLEET.lock().unwrap_or_else(|p| p.into_inner());
        let port = free_port();
        let addrs: Vec<String> = (0..20).map(|i| format!("127.0.0.{}", base + i)).collect();
        let a: Vec<&str> = addrs[..10].iter().map(String::as_str).collect();
        let b: Vec<&str> = addrs[10..].iter().map(String::as_str).collect();
        let first = Sshd::start_on(&a, port, false);
        let second = Sshd::start_on(&b, port, false);
        // One client key for the whole fleet.
        std::fs::copy(
            first.dir.path("authorized_keys"),
            second.dir.path("authorized_keys"),
        )
        .unwrap();
        let key = first.key.clone();
        Fleet {
            _one: guard,
            sshd: vec![first, second],
            port,
            base,
            key,
            dir: TempDir::new("fleet"),
        }
    }

    fn addr(&self, i: u8) -> String {
        format!("127.0.0.{}", self.base + i)
    }

    /// web: hosts 0-9, db: 10-19 (named by address, through a host
    /// range), odd: the odd ones; `extra` lines go under `[extra]`.
    fn ini(&self, extra: &str) -> PathBuf {
        let b = self.base;
        let odd: String = (0..20)
            .filter(|i| i % 2 == 1)
            .map(|i| format!("{}\n", self.addr(i)))
            .collect();
        let text = format!(
            "[web]\n127.0.0.[{b}:{}]\n\n[db]\n127.0.0.[{}:{}]\n\n[odd]\n{odd}\n\
             [fleet:children]\nweb\ndb\n\n[extra]\n{extra}\n\n\
             [all:vars]\nansible_port={}\nansible_user=root\nansible_ssh_private_key_file={}\n",
            b + 9,
            b + 10,
            b + 19,
            self.port,
            self.key.display()
        );
        let p = self.dir.path(&format!("inv{}.ini", seq()));
        std::fs::write(&p, text).unwrap();
        p
    }

    /// How many ssh connections the sshd of `addr` accepted on it.
    fn connections_to(&self, addr: &str) -> usize {
        let needle = format!(" on {addr} port {}", self.port);
        self.sshd
            .iter()
            .map(|s| {
                s.log_text()
                    .lines()
                    .filter(|l| l.contains("Connection from") && l.contains(&needle))
                    .count()
            })
            .sum()
    }
}

fn seq() -> usize {
    static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    N.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}

fn econtext(args: &[&str]) -> Output {
    Command::new(EXE)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run econtext")
}

/// The `--json` lines by host.
fn lines(out: &Output) -> BTreeMap<String, Value> {
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines()
        .map(|l| {
            let v: Value =
                serde_json::from_str(l).unwrap_or_else(|e| panic!("not a JSON line ({e}): {l:?}"));
            (v["host"].as_str().unwrap().to_string(), v)
        })
        .collect()
}

/// The `--json` lines of a command that must have exited 0 (its whole
/// output in the failure message otherwise).
fn succeeded(out: &Output) -> BTreeMap<String, Value> {
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        stderr(out)
    );
    lines(out)
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

const NEEDS: &[&str] = &["/usr/sbin/sshd", "ssh", "ssh-keygen", "sudo", "useradd"];

/// The remote side prints the address it was reached on: proof that each
/// line comes from a distinct host.
const WHERE: &str = "set -- $SSH_CONNECTION; echo $3";

#[test]
fn ini_fleet_of_20_runs_and_calls_on_every_host() {
    if skip_unless(NEEDS, "ini_fleet_of_20_runs_and_calls_on_every_host") {
        return;
    }
    let f = Fleet::start(110);
    let inv = f.ini("");
    let inv = inv.to_str().unwrap();
    let outdir = f.dir.path("out");
    let failed = f.dir.path("failed.txt");
    let out = econtext(&[
        "run",
        "-i",
        inv,
        "--check-host-keys",
        "ignore",
        "--json",
        "-f",
        "8",
        "--output-dir",
        outdir.to_str().unwrap(),
        "--failed-to",
        failed.to_str().unwrap(),
        "fleet",
        "--",
        WHERE,
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let l = lines(&out);
    assert_eq!(l.len(), 20, "{l:?}");
    for i in 0..20 {
        let h = f.addr(i);
        let v = &l[&h];
        assert_eq!(v["status"], "ok", "{v}");
        assert_eq!(v["rc"], 0);
        assert_eq!(v["stdout"], format!("{h}\n"), "{v}");
        assert_eq!(v["stderr"], "");
        // No interpreter named: discovery chose one, reported once here.
        assert!(
            v["python"].as_str().is_some_and(|p| p.contains("python")),
            "{v}"
        );
        assert!(v["elapsed_ms"].as_u64().is_some());
        let file = std::fs::read_to_string(outdir.join(format!("{h}.stdout"))).unwrap();
        assert_eq!(file, format!("{h}\n"));
        assert!(outdir.join(format!("{h}.json")).exists());
    }
    assert_eq!(std::fs::read_to_string(&failed).unwrap(), "");

    // The same fleet, a Python call on every host.
    let out = econtext(&[
        "call",
        "-i",
        inv,
        "--check-host-keys",
        "ignore",
        "--json",
        "all",
        "platform.python_version",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let l = lines(&out);
    assert_eq!(l.len(), 20);
    for v in l.values() {
        assert_eq!(v["status"], "ok", "{v}");
        assert!(
            v["result"]
                .as_str()
                .is_some_and(|s| s.starts_with('3') || s.starts_with('2')),
            "{v}"
        );
        assert!(v["python"].is_string(), "{v}");
    }

    // Without --json: one text line per host, no escape codes off a terminal.
    let out = econtext(&[
        "run",
        "-i",
        inv,
        "--check-host-keys",
        "ignore",
        "web",
        "--",
        "echo",
        "hi",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(text.lines().count(), 10, "{text}");
    assert!(
        text.lines().all(|l| l.ends_with(" | ok | rc=0 | hi")),
        "{text}"
    );
    assert!(!out.stdout.contains(&0x1b) && !out.stderr.contains(&0x1b));
}

#[test]
fn yaml_inventory_and_host_patterns() {
    if skip_unless(NEEDS, "yaml_inventory_and_host_patterns") {
        return;
    }
    let f = Fleet::start(130);
    let hosts: String = (0..20)
        .map(|i| format!("        n{i:02}:\n          ansible_host: {}\n", f.addr(i)))
        .collect();
    let odd: String = (0..20)
        .filter(|i| i % 2 == 1)
        .map(|i| format!("        n{i:02}:\n"))
        .collect();
    let yaml = format!(
        "all:\n  vars:\n    ansible_port: {}\n    ansible_user: root\n    \
         ansible_ssh_private_key_file: {}\n    ansible_python_interpreter: /usr/bin/python3\n  \
         children:\n    nodes:\n      hosts:\n{hosts}    odd:\n      hosts:\n{odd}",
        f.port,
        f.key.display()
    );
    let inv = f.dir.path("inventory.yml");
    std::fs::write(&inv, yaml).unwrap();
    let inv = inv.to_str().unwrap();
    let list = |pattern: &str| -> Vec<String> {
        let out = econtext(&["run", "-i", inv, "--list-hosts", pattern, "--", "true"]);
        assert_eq!(out.status.code(), Some(0), "{pattern}: {}", stderr(&out));
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(str::to_string)
            .collect()
    };
    assert_eq!(list("all").len(), 20);
    assert_eq!(list("n0*:&odd"), ["n01", "n03", "n05", "n07", "n09"]);
    assert_eq!(list("nodes:!odd").len(), 10);
    // Exclusions apply after every union, wherever they stand.
    assert_eq!(
        list("n1?:!odd:n02:n03"),
        ["n02", "n10", "n12", "n14", "n16", "n18"]
    );
    assert_eq!(list("n02,n05"), ["n02", "n05"]);
    let file = f.dir.path("some.txt");
    std::fs::write(&file, "n07\nn11\n").unwrap();
    assert_eq!(list(&format!("@{}", file.display())), ["n07", "n11"]);
    // A name that matches nothing is bad usage, before anything connects.
    let out = econtext(&["run", "-i", inv, "nosuchhost", "--", "true"]);
    assert_eq!(out.status.code(), Some(64), "{}", stderr(&out));

    let out = econtext(&[
        "run",
        "-i",
        inv,
        "--check-host-keys",
        "ignore",
        "--json",
        "n1*:&odd",
        "--",
        WHERE,
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let l = lines(&out);
    let names: Vec<&String> = l.keys().collect();
    assert_eq!(names, ["n11", "n13", "n15", "n17", "n19"]);
    assert_eq!(l["n13"]["stdout"], format!("{}\n", f.addr(13)));
    // The inventory named the interpreter: nothing to report.
    assert!(l["n13"].get("python").is_none(), "{}", l["n13"]);
}

#[test]
fn failing_command_on_three_hosts_exits_1_and_reruns_only_the_failed() {
    if skip_unless(
        NEEDS,
        "failing_command_on_three_hosts_exits_1_and_reruns_only_the_failed",
    ) {
        return;
    }
    let f = Fleet::start(150);
    let inv = f.ini("");
    let inv = inv.to_str().unwrap();
    let bad = [f.addr(2), f.addr(9), f.addr(17)];
    let cmd = format!(
        "set -- $SSH_CONNECTION; case \" {} \" in *\" $3 \"*) echo broken >&2; exit 3;; esac; echo fine",
        bad.join(" ")
    );
    let failed = f.dir.path("failed.txt");
    let out = econtext(&[
        "run",
        "-i",
        inv,
        "--check-host-keys",
        "ignore",
        "--json",
        "--failed-to",
        failed.to_str().unwrap(),
        "all",
        "--",
        &cmd,
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let l = lines(&out);
    assert_eq!(l.len(), 20);
    for (h, v) in &l {
        if bad.contains(h) {
            assert_eq!(
                (v["status"].as_str(), v["rc"].as_i64()),
                (Some("failed"), Some(3)),
                "{v}"
            );
            assert_eq!(v["stderr"], "broken\n");
        } else {
            assert_eq!(v["status"], "ok", "{v}");
        }
    }
    let mut listed: Vec<String> = std::fs::read_to_string(&failed)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect();
    listed.sort();
    let mut want = bad.to_vec();
    want.sort();
    assert_eq!(listed, want);

    // Rerun only those: -l @FILE.
    let out = econtext(&[
        "run",
        "-i",
        inv,
        "--check-host-keys",
        "ignore",
        "--json",
        "-l",
        &format!("@{}", failed.display()),
        "all",
        "--",
        "exit 0",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(lines(&out).keys().cloned().collect::<Vec<_>>(), {
        let mut b = bad.to_vec();
        b.sort();
        b
    });

    // A call deadline: timeout, exit 3; the others still answer.
    let out = econtext(&[
        "run",
        "-i",
        inv,
        "--check-host-keys",
        "ignore",
        "--json",
        "--timeout",
        "2",
        &format!("{},{}", f.addr(0), f.addr(1)),
        "--",
        &format!(
            "set -- $SSH_CONNECTION; [ $3 = {} ] && sleep 60; echo quick",
            f.addr(0)
        ),
    ]);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    let l = lines(&out);
    assert_eq!(l[&f.addr(0)]["status"], "timeout", "{}", l[&f.addr(0)]);
    assert_eq!(l[&f.addr(1)]["status"], "ok");
}

/// Accepts TCP connections and never says a word.
fn silent_listener(addr: &str) -> TcpListener {
    let l = TcpListener::bind((addr, 0)).unwrap();
    let c = l.try_clone().unwrap();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for s in c.incoming().flatten() {
            held.push(s);
        }
    });
    l
}

#[test]
fn host_down_and_host_that_hangs_are_unreachable_within_the_connect_timeout() {
    if skip_unless(
        NEEDS,
        "host_down_and_host_that_hangs_are_unreachable_within_the_connect_timeout",
    ) {
        return;
    }
    let f = Fleet::start(170);
    let hang = silent_listener("127.0.0.191");
    let hang_port = hang.local_addr().unwrap().port();
    // Nothing listens on 127.0.0.190 at the fleet's port.
    let inv = f.ini(&format!(
        "down ansible_host=127.0.0.190\nhang ansible_host=127.0.0.191 ansible_port={hang_port}"
    ));
    let start = Instant::now();
    let out = econtext(&[
        "run",
        "-i",
        inv.to_str().unwrap(),
        "--check-host-keys",
        "ignore",
        "--json",
        "--connect-timeout",
        "15",
        "-f",
        "32",
        "all",
        "--",
        "true",
    ]);
    let took = start.elapsed();
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let l = lines(&out);
    assert_eq!(l.len(), 22, "{l:?}");
    let not_ok: Vec<&Value> = l.values().filter(|v| v["status"] != "ok").collect();
    assert_eq!(not_ok.len(), 2, "{not_ok:?}");
    for h in ["down", "hang"] {
        assert_eq!(l[h]["status"], "unreachable", "{}", l[h]);
        assert!(l[h]["error"].as_str().is_some_and(|e| !e.is_empty()));
        assert_eq!(l[h]["rc"], Value::Null);
    }
    // The hung host is given up at the connect timeout, not later (margin
    // for a loaded machine).
    let hung_ms = l["hang"]["elapsed_ms"].as_u64().unwrap();
    assert!((14_500..45_000).contains(&hung_ms), "{hung_ms} ms");
    assert!(took < Duration::from_secs(120), "{took:?}");
    drop(hang);
}

#[test]
fn become_and_a_bastion_chain_through_econtext_via() {
    if skip_unless(NEEDS, "become_and_a_bastion_chain_through_econtext_via") {
        return;
    }
    let f = Fleet::start(200);
    let user = TestUser::create("flt");
    let b = f.addr(0);
    // bastion -> dc -> racks (the seed's tree); r2 and r4 become the user.
    let inv = f.ini(&format!(
        "bastion ansible_host={b}\n\
         dc ansible_host={} econtext_via=bastion\n\
         r1 ansible_host={} econtext_via=dc\n\
         r2 ansible_host={} econtext_via=dc ansible_become=yes ansible_become_user={u}\n\
         r3 ansible_host={} econtext_via=dc\n\
         r4 ansible_host={} econtext_via=bastion ansible_become=true ansible_become_user={u} ansible_become_method=sudo\n\
         [racks]\nr1\nr2\nr3\nr4",
        f.addr(1),
        f.addr(2),
        f.addr(3),
        f.addr(4),
        f.addr(5),
        u = user.name
    ));
    let out = econtext(&[
        "run",
        "-i",
        inv.to_str().unwrap(),
        "--check-host-keys",
        "ignore",
        "--json",
        "racks",
        "--",
        "set -- $SSH_CONNECTION; echo ${3:-sudo} $(id -un)",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let l = lines(&out);
    assert_eq!(l.len(), 4, "{l:?}");
    assert_eq!(l["r1"]["stdout"], format!("{} root\n", f.addr(2)));
    // sudo resets the environment (no SSH_CONNECTION): the user says it.
    assert_eq!(l["r2"]["stdout"], format!("sudo {}\n", user.name));
    assert_eq!(l["r3"]["stdout"], format!("{} root\n", f.addr(4)));
    assert_eq!(l["r4"]["stdout"], format!("sudo {}\n", user.name));
    // The bastion and dc were connected once for the whole fleet.
    assert_eq!(f.connections_to(&b), 1, "bastion connections");
    assert_eq!(f.connections_to(&f.addr(1)), 1, "dc connections");
}

#[test]
fn interrupt_stops_starting_hosts_then_aborts_the_running() {
    if skip_unless(
        NEEDS,
        "interrupt_stops_starting_hosts_then_aborts_the_running",
    ) {
        return;
    }
    let f = Fleet::start(230);
    let inv = f.ini("");
    let failed = f.dir.path("failed.txt");
    let start = |cmd: &str| {
        Command::new(EXE)
            .args([
                "run",
                "-i",
                inv.to_str().unwrap(),
                "--check-host-keys",
                "ignore",
                "--json",
                "-f",
                "2",
                "--failed-to",
                failed.to_str().unwrap(),
                "all",
                "--",
                cmd,
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let sigint = |c: &std::process::Child| {
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(c.id() as i32),
            nix::sys::signal::Signal::SIGINT,
        )
        .unwrap();
    };
    let wait = |mut c: std::process::Child| -> Output {
        let end = Instant::now() + Duration::from_secs(60);
        while Instant::now() < end {
            if let Some(status) = c.try_wait().unwrap() {
                let (mut so, mut se) = (Vec::new(), Vec::new());
                c.stdout.take().unwrap().read_to_end(&mut so).unwrap();
                c.stderr.take().unwrap().read_to_end(&mut se).unwrap();
                return Output {
                    status,
                    stdout: so,
                    stderr: se,
                };
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = c.kill();
        panic!("econtext did not exit within 60 s of the interrupt");
    };

    // One Ctrl+C: the two running hosts finish, no other host starts.
    let c = start("sleep 4; echo done");
    std::thread::sleep(Duration::from_secs(2));
    sigint(&c);
    let out = wait(c);
    assert_eq!(out.status.code(), Some(130), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("still running (2)"),
        "{}",
        stderr(&out)
    );
    // Every host has its line: the two that ran, 18 never started.
    let l = lines(&out);
    assert_eq!(l.len(), 20, "{l:?}");
    let (ran, skipped): (Vec<&Value>, Vec<&Value>) =
        l.values().partition(|v| v["status"] != "skipped");
    assert_eq!(ran.len(), 2, "{l:?}");
    assert!(
        ran.iter()
            .all(|v| v["status"] == "ok" && v["stdout"] == "done\n"),
        "{l:?}"
    );
    assert_skipped(&skipped, 18);
    let not_done = std::fs::read_to_string(&failed).unwrap();
    assert_eq!(not_done.lines().count(), 18, "{not_done}");

    // Two: the running hosts are aborted at once and reported as died.
    let c = start("sleep 60");
    std::thread::sleep(Duration::from_secs(2));
    sigint(&c);
    std::thread::sleep(Duration::from_millis(300));
    sigint(&c);
    let t = Instant::now();
    let out = wait(c);
    assert!(t.elapsed() < Duration::from_secs(20), "{:?}", t.elapsed());
    assert_eq!(out.status.code(), Some(130), "{}", stderr(&out));
    let l = lines(&out);
    assert_eq!(l.len(), 20, "{l:?}");
    let (died, skipped): (Vec<&Value>, Vec<&Value>) =
        l.values().partition(|v| v["status"] != "skipped");
    assert_eq!(died.len(), 2, "{l:?}");
    assert!(died.iter().all(|v| v["status"] == "died"), "{l:?}");
    assert_skipped(&skipped, 18);
    assert_eq!(
        std::fs::read_to_string(&failed).unwrap().lines().count(),
        20
    );
}

/// ssh_config is the user's: a Host alias whose HostName, Port, User,
/// IdentityFile, StrictHostKeyChecking and UserKnownHostsFile come only
/// from ~/.ssh/config (the inventory names nothing but the alias) is
/// reached as that config says; what the inventory or the command line
/// asks for (`ansible_user`, `--check-host-keys`) wins over it.
#[test]
fn users_ssh_config_is_honoured_unless_the_inventory_asks() {
    if skip_unless(
        &["/usr/sbin/sshd", "ssh", "ssh-keygen", "useradd", "setpriv"],
        "users_ssh_config_is_honoured_unless_the_inventory_asks",
    ) {
        return;
    }
    let f = Fleet::start(40);
    let user = TestUser::create("cfg");
    let home = PathBuf::from(format!("/home/{}", user.name));
    let dot_ssh = home.join(".ssh");
    std::fs::create_dir_all(&dot_ssh).unwrap();
    std::fs::copy(&f.key, dot_ssh.join("id_fleet")).unwrap();
    // The specific block first: ssh keeps the first value it reads.
    std::fs::write(
        dot_ssh.join("config"),
        format!(
            "Host cfg-b\n  HostName {b}\n\n\
             Host cfg-*\n  HostName {a}\n  Port {port}\n  User {u}\n\
             \x20 IdentityFile ~/.ssh/id_fleet\n  StrictHostKeyChecking no\n\
             \x20 UserKnownHostsFile /dev/null\n  LogLevel ERROR\n",
            a = f.addr(0),
            b = f.addr(1),
            port = f.port,
            u = user.name
        ),
    )
    .unwrap();
    let own = |p: &std::path::Path, mode: u32| {
        nix::unistd::chown(
            p,
            Some(nix::unistd::Uid::from_raw(user.uid)),
            Some(nix::unistd::Gid::from_raw(user.gid)),
        )
        .unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
    };
    own(&dot_ssh, 0o700);
    own(&dot_ssh.join("config"), 0o600);
    own(&dot_ssh.join("id_fleet"), 0o600);
    let inv = f.dir.path("cfg.ini");
    std::fs::write(&inv, "[cfg]\ncfg-a\ncfg-b ansible_user=root\n").unwrap();
    // The binary where the user can run it (a CI checkout may be private).
    let exe = f.dir.path("econtext");
    std::fs::copy(EXE, &exe).unwrap();
    let run_as_user = |extra: &[&str]| {
        let mut c = user.command(&exe);
        c.args(["run", "-i", inv.to_str().unwrap(), "--json"])
            .args(extra)
            .args(["cfg", "--", "set -- $SSH_CONNECTION; echo $3 $(id -un)"])
            .stdin(Stdio::null());
        c.output().unwrap()
    };
    let out = run_as_user(&[]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let l = lines(&out);
    assert_eq!(
        l["cfg-a"]["stdout"],
        format!("{} {}\n", f.addr(0), user.name)
    );
    // The inventory's ansible_user beats the config's User.
    assert_eq!(l["cfg-b"]["stdout"], format!("{} root\n", f.addr(1)));
    // No warning for a host key the config says not to check.
    assert_eq!(l["cfg-a"]["stderr"], "", "{}", l["cfg-a"]);

    // Asked for on the command line, host key checking wins over the
    // config's `StrictHostKeyChecking no`: unknown keys are refused.
    let out = run_as_user(&["--check-host-keys", "enforce"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let l = lines(&out);
    for h in ["cfg-a", "cfg-b"] {
        assert_eq!(l[h]["status"], "unreachable", "{}", l[h]);
        let e = l[h]["error"].as_str().unwrap_or_default().to_lowercase();
        assert!(e.contains("host key"), "{e}");
    }
}

/// `n` lines of hosts never started after an interrupt: `"status":
/// "skipped"`, no rc, no output, the reason in `error`.
fn assert_skipped(lines: &[&Value], n: usize) {
    assert_eq!(lines.len(), n, "{lines:?}");
    for v in lines {
        assert_eq!(v["status"], "skipped", "{v}");
        assert_eq!(v["rc"], Value::Null, "{v}");
        assert_eq!(v["stdout"], Value::Null, "{v}");
        assert!(
            v["error"]
                .as_str()
                .is_some_and(|e| e.contains("not started")),
            "{v}"
        );
    }
}

#[test]
fn single_target_run_prints_text_and_exits_with_the_remote_rc() {
    if sshd::skip_unless_installed(
        &["uname"],
        "single_target_run_prints_text_and_exits_with_the_remote_rc",
    ) {
        return;
    }
    let out = econtext(&["run", "local", "--", "uname", "-r"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let want = Command::new("uname").arg("-r").output().unwrap().stdout;
    assert_eq!(out.stdout, want);
    let out = econtext(&["run", "local", "--", "echo oops >&2; exit 7"]);
    assert_eq!(out.status.code(), Some(7));
    assert_eq!(stderr(&out), "oops\n");
    // Bad usage: 64.
    assert_eq!(econtext(&["run", "local"]).status.code(), Some(64));
    assert_eq!(
        econtext(&["run", "-f", "0", "local", "--", "true"])
            .status
            .code(),
        Some(64)
    );
}

/// `econtext.fleet.run` on every interpreter (posix_spawn on 3.8+,
/// subprocess before): rc, both outputs apart, a command killed by a
/// signal as 128+N, SIGPIPE at its default for the command (Python
/// ignores it), no fd of the context leaked to the command.
#[test]
fn run_on_every_interpreter_keeps_rc_outputs_signals_and_fds_apart() {
    for (py, version) in common::interpreters() {
        let target = format!("local?python={}", py.display());
        let out = econtext(&[
            "run",
            &target,
            "--",
            "echo out; echo err >&2; yes | head -c 4; ls /proc/self/fd >&2; exit 3",
        ]);
        assert_eq!(out.status.code(), Some(3), "{version}: {}", stderr(&out));
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            "out\ny\ny\n",
            "{version}"
        );
        // ls sees 0, 1, 2 and its own directory (3): nothing of the context's.
        assert_eq!(stderr(&out), "err\n0\n1\n2\n3\n", "{version}");
        let out = econtext(&["run", &target, "--", "kill -TERM $$"]);
        assert_eq!(out.status.code(), Some(143), "{version}: {}", stderr(&out));
        let out = econtext(&["run", &target, "--", "/nonexistent/cmd", "arg"]);
        assert_eq!(out.status.code(), Some(1), "{version}: {}", stderr(&out));
        assert!(
            stderr(&out).contains("No such file"),
            "{version}: {}",
            stderr(&out)
        );
    }
}

/// With an inventory the fleet CLI sends the core compiled on the master
/// for each host's interpreter (a local CPython with the same bytecode
/// magic compiles it once): every interpreter answers, each 3.x host runs
/// code it did not compile (`econtext.core.COMPILED`), and 2.7, which
/// names no magic, gets the source as before. Commands run there too,
/// in contexts started lean (the first stage runs the core, no `site`).
#[test]
fn inventory_hosts_get_the_core_compiled_for_their_interpreter() {
    let dir = TempDir::new("compiled");
    let pythons = common::interpreters();
    let inv = dir.path("local.ini");
    let mut text = String::from("[py]\n");
    for (i, (py, _)) in pythons.iter().enumerate() {
        text.push_str(&format!(
            "p{i} ansible_connection=local ansible_python_interpreter={}\n",
            py.display()
        ));
    }
    std::fs::write(&inv, text).unwrap();
    std::fs::write(
        dir.path("ecprobe_compiled.py"),
        "import sys\nimport econtext.core\n\n\ndef compiled():\n    \
         return [sys.version_info[0], econtext.core.COMPILED, sys.flags.no_site]\n",
    )
    .unwrap();
    let out = econtext(&[
        "call",
        "-i",
        inv.to_str().unwrap(),
        "--json",
        "--module-path",
        dir.0.to_str().unwrap(),
        "py",
        "ecprobe_compiled.compiled",
    ]);
    let l = succeeded(&out);
    assert_eq!(l.len(), pythons.len(), "{l:?}");
    for (i, (_, version)) in pythons.iter().enumerate() {
        let r = &l[&format!("p{i}")]["result"];
        let py3 = r[0] == 3;
        assert_eq!(r[1], Value::Bool(py3), "{version}: {r}");
        // `call` keeps the two-stage start: site-packages are there.
        assert_eq!(r[2], 0, "{version}: {r}");
    }
    // `run` starts lean: the context that spawns the command is the first
    // stage's own `python -S -c` (no re-executed `python(econtext:p0)`),
    // and econtext.fleet came with the payload (no GET_MODULE).
    let out = econtext(&[
        "run",
        "-i",
        inv.to_str().unwrap(),
        "--json",
        "--stats",
        "py",
        "--",
        "echo ok; tr '\\0' ' ' </proc/$PPID/cmdline >&2",
    ]);
    let l = succeeded(&out);
    assert_eq!(l.len(), pythons.len(), "{l:?}");
    for (host, v) in &l {
        assert_eq!(v["stdout"], "ok\n", "{host}: {v}");
        let parent = v["stderr"].as_str().unwrap_or_default();
        assert!(
            parent.contains(" -S -c import binascii,zlib;") && !parent.contains("(econtext:"),
            "{host}: {parent}"
        );
    }
    let stats = stderr(&out);
    assert!(stats.contains("\"get_module_requests\":0,"), "{stats}");
}

// ---- the Rust fan-out API, on local Python contexts ----

mod api {
    use std::cell::{Cell, RefCell};
    use std::collections::BTreeMap;
    use std::rc::Rc;
    use std::time::Duration;

    use econtext::bootstrap::ConnectError;
    use econtext::fleet::{Connector, Fleet, FleetError, FleetOptions, Hop, Target};
    use econtext::{Context, LocalOptions, Master, Method};
    use futures::future::LocalBoxFuture;
    use futures::StreamExt;

    use super::common;

    /// The master, counting the contexts it is asked to create per hop
    /// name (the real connect happens; only the count is ours).
    #[derive(Clone)]
    struct Counting {
        master: Master,
        connects: Rc<RefCell<BTreeMap<String, usize>>>,
    }

    impl Connector for Counting {
        fn connect(
            &self,
            hop: &Hop,
            via: Option<&Context>,
            timeout: Duration,
        ) -> LocalBoxFuture<'static, Result<Context, ConnectError>> {
            let name = hop.name.clone().unwrap_or_default();
            *self.connects.borrow_mut().entry(name).or_default() += 1;
            Connector::connect(&self.master, hop, via, timeout)
        }
    }

    fn local(name: &str, python: &str) -> Hop {
        Hop::named(Method::Local(LocalOptions::new(python)), name)
    }

    /// What a probe expression evaluates to in `ctx` (eval, from
    /// `builtins` or, on Python 2, `__builtin__`).
    async fn probe(ctx: &Context, version: &str, expr: &str) -> serde_json::Value {
        let builtins = match version.starts_with("2.") {
            true => "__builtin__",
            false => "builtins",
        };
        ctx.call::<serde_json::Value>(builtins, "eval", (expr,))
            .await
            .unwrap_or_else(|e| panic!("{expr}: {e}"))
    }

    /// `[major, len(CORE_SOURCE), COMPILED, econtext.fleet compiled on the
    /// master, os loaded]` (the fourth: its code has no column table, which
    /// only the master's `-X no_debug_ranges` leaves out; true before
    /// 3.11, which has none).
    const START_PROBE: &str = "(lambda s, c, r: [s.version_info[0], len(c.CORE_SOURCE or b''), \
        c.COMPILED, all(p[2] is None for p in \
        getattr(r.__code__, 'co_positions', lambda: [(0, 0, None)])()), 'os' in s.modules])\
        (__import__('sys'), __import__('econtext.core').core, \
        __import__('sys').modules['econtext.fleet'].run)";

    /// A lean start with the core compiled is a leaf's: the code of the
    /// core and of its preloaded econtext.fleet comes compiled and the
    /// core's source stays home. Asked to start a child anyway, it fetches
    /// the source from the master (builtin econtext.core) and the
    /// grandchild gets it whole. 2.7, which names no bytecode magic, gets
    /// the source as always.
    #[test]
    fn a_lean_leaf_without_the_core_source_fetches_it_to_start_a_child() {
        common::run(async move {
            let master = Master::new(Default::default());
            for (py, version) in common::interpreters() {
                let py = py.display().to_string();
                let opts = econtext::ConnectOptions::new(Method::Local(LocalOptions::new(&py)))
                    .lean_start(true)
                    .compiled_core(true)
                    .preload(&["econtext.fleet"]);
                let leaf = master.connect(opts).await.expect("lean leaf");
                let v = probe(&leaf, &version, START_PROBE).await;
                if v[0] == 3 {
                    assert_eq!(v[1], 0, "{version}: the source went too: {v}");
                    assert_eq!(v[2], true, "{version}: {v}");
                    let columns_left_out = !version.starts_with("3.") || {
                        let minor: u32 = version[2..].split('.').next().unwrap().parse().unwrap();
                        minor < 11 || v[3] == true
                    };
                    assert!(
                        columns_left_out,
                        "{version}: econtext.fleet compiled here: {v}"
                    );
                    // Neither the first stage, the core nor econtext.fleet
                    // loads os.py (1 ms of a leaf's start).
                    assert_eq!(v[4], false, "{version}: os was imported: {v}");
                } else {
                    assert!(v[1].as_u64().unwrap() > 10_000, "{version}: {v}");
                }
                let via =
                    econtext::ConnectOptions::new(Method::Local(LocalOptions::new(&py))).via(&leaf);
                let grandchild = master.connect(via).await.expect("a child of the leaf");
                let g = probe(
                    &grandchild,
                    &version,
                    "len(__import__('econtext.core').core.CORE_SOURCE)",
                )
                .await;
                assert!(g.as_u64().unwrap() > 10_000, "{version}: {g}");
                let l = probe(
                    &leaf,
                    &version,
                    "len(__import__('econtext.core').core.CORE_SOURCE)",
                )
                .await;
                // (the grandchild's has one more newline: its parent's
                // script put one before the `main(...)` line)
                assert!(
                    l.as_u64().unwrap() > 10_000,
                    "{version}: the leaf keeps what it fetched: {l}"
                );
                let _ = grandchild.shutdown().await;
                let _ = leaf.shutdown().await;
            }
        });
    }

    #[test]
    fn fan_out_yields_in_completion_order_within_the_forks_limit() {
        let py = common::python3();
        common::run(async move {
            let master = Master::new(Default::default());
            let fleet = Fleet::new(master, FleetOptions::default().forks(2));
            // t0 sleeps 6 s, the others not at all: with two at once, t1,
            // t2 and t3 go through the second slot one after the other
            // (connecting each takes well under 2 s) while t0 holds the first.
            let targets: Vec<Target> = (0..4)
                .map(|i| Target::new(format!("t{i}"), vec![local(&format!("t{i}"), &py)]))
                .collect();
            let sleeps = Rc::new(vec![6.0f64, 0.0, 0.0, 0.0]);
            let peak = Rc::new(Cell::new(0usize));
            let (f2, p2) = (fleet.clone(), peak.clone());
            let mut s = fleet.run(targets, move |ctx: Context, t: Target| {
                let i: usize = t.name[1..].parse().unwrap();
                let secs = sleeps[i];
                p2.set(p2.get().max(f2.running().len()));
                async move {
                    ctx.call::<()>("time", "sleep", (secs,)).await?;
                    Ok(t.name.clone())
                }
            });
            let mut order = Vec::new();
            while let Some((t, r)) = s.next().await {
                assert_eq!(r.unwrap(), t.name);
                order.push(t.name);
            }
            assert_eq!(order, ["t1", "t2", "t3", "t0"]);
            assert!(peak.get() <= 2, "{} in flight with forks=2", peak.get());
        });
    }

    #[test]
    fn one_bad_target_never_stops_the_others_and_each_error_is_typed() {
        let py = common::python3();
        common::run(async move {
            let master = Master::new(Default::default());
            let opts = FleetOptions::default()
                .call_timeout(Some(Duration::from_secs(1)))
                .connect_timeout(Duration::from_secs(20));
            let fleet = Fleet::new(master, opts);
            let targets = vec![
                Target::new("ok", vec![local("ok", &py)]),
                Target::new("nopython", vec![local("nopython", "/nonexistent/python")]),
                Target::new("raises", vec![local("raises", &py)]),
                Target::new("slow", vec![local("slow", &py)]),
                Target::new("dies", vec![local("dies", &py)]),
            ];
            let mut s = fleet.run(targets, |ctx: Context, t: Target| async move {
                match t.name.as_str() {
                    "raises" => ctx.call::<()>("json", "loads", ("{",)).await?,
                    "slow" => ctx.call::<()>("time", "sleep", (30,)).await?,
                    "dies" => ctx.call::<()>("os", "_exit", (3,)).await?,
                    _ => {}
                }
                Ok(())
            });
            let mut got = BTreeMap::new();
            while let Some((t, r)) = s.next().await {
                got.insert(t.name, r);
            }
            assert!(got["ok"].is_ok());
            assert!(
                matches!(
                    &got["nopython"],
                    Err(FleetError::Unreachable(ConnectError::Spawn { .. }))
                ),
                "{:?}",
                got["nopython"]
            );
            assert!(
                matches!(&got["raises"], Err(FleetError::Failed(e)) if e.type_name.contains("JSONDecodeError")),
                "{:?}",
                got["raises"]
            );
            assert!(
                matches!(&got["slow"], Err(FleetError::Timeout(_))),
                "{:?}",
                got["slow"]
            );
            assert!(
                matches!(&got["dies"], Err(FleetError::Died(_))),
                "{:?}",
                got["dies"]
            );
        });
    }

    #[test]
    fn a_shared_bastion_is_connected_once_and_retries_are_off_by_default() {
        let py = common::python3();
        common::run(async move {
            let c = Counting {
                master: Master::new(Default::default()),
                connects: Default::default(),
            };
            let fleet = Fleet::new(c.clone(), FleetOptions::default().forks(8));
            let targets: Vec<Target> = (0..4)
                .map(|i| {
                    Target::new(
                        format!("leaf{i}"),
                        vec![local("bastion", &py), local(&format!("leaf{i}"), &py)],
                    )
                })
                .collect();
            let results: Vec<_> = fleet
                .run(targets, |ctx: Context, _t| async move {
                    Ok(ctx.call::<u32>("os", "getppid", ()).await?)
                })
                .collect()
                .await;
            // Every leaf's parent is the one bastion process.
            let parents: std::collections::BTreeSet<u32> =
                results.iter().map(|(_, r)| *r.as_ref().unwrap()).collect();
            assert_eq!(parents.len(), 1, "{parents:?}");
            assert_eq!(c.connects.borrow()["bastion"], 1);
            fleet.release_shared().await;

            // A failing connect is tried once by default, 1 + N with retries.
            let bad = || {
                vec![Target::new(
                    "bad",
                    vec![local("bad", "/nonexistent/python")],
                )]
            };
            let _: Vec<_> = fleet.run(bad(), |_c, _t| async { Ok(()) }).collect().await;
            assert_eq!(c.connects.borrow()["bad"], 1);
            let retrying = Fleet::new(
                c.clone(),
                FleetOptions::default()
                    .retries(2)
                    .retry_delay(Duration::from_millis(10)),
            );
            let r: Vec<_> = retrying
                .run(bad(), |_c, _t| async { Ok(()) })
                .collect()
                .await;
            assert!(matches!(r[0].1, Err(FleetError::Unreachable(_))));
            assert_eq!(c.connects.borrow()["bad"], 4);
        });
    }
}

// ---- on a real terminal: the binary on a pty of its own ----

mod on_a_terminal {
    use std::io::{Read, Write};
    use std::os::fd::OwnedFd;
    use std::os::unix::process::CommandExt;
    use std::process::{Child, Command, ExitStatus, Stdio};
    use std::sync::{Arc, Mutex};
    use std::time::{Duration, Instant};

    use super::common::sshd::{skip_unless, Sshd, Sudoers, TestUser};
    use super::{lines, stderr, Fleet, EXE, NEEDS};

    /// econtext with a pty as its controlling terminal and its stdin,
    /// stdout and stderr: the session's foreground process group, so
    /// Ctrl+C (0x03 written to the pty) is the line discipline's SIGINT,
    /// and /dev/tty is where -k/-K prompt.
    struct OnPty {
        master: std::fs::File,
        child: Child,
        out: Arc<Mutex<Vec<u8>>>,
    }

    impl OnPty {
        fn spawn(args: &[&str]) -> OnPty {
            let ws = nix::pty::Winsize {
                ws_row: 50,
                ws_col: 160,
                ws_xpixel: 0,
                ws_ypixel: 0,
            };
            let pty = nix::pty::openpty(Some(&ws), None).expect("openpty");
            let slave: OwnedFd = pty.slave;
            let mut c = Command::new(EXE);
            c.args(args)
                .env("TERM", "xterm-256color")
                .stdin(Stdio::from(slave.try_clone().unwrap()))
                .stdout(Stdio::from(slave.try_clone().unwrap()))
                .stderr(Stdio::from(slave.try_clone().unwrap()));
            // SAFETY: only async-signal-safe calls between fork and exec.
            unsafe {
                c.pre_exec(|| {
                    nix::unistd::setsid().map_err(std::io::Error::from)?;
                    if nix::libc::ioctl(0, nix::libc::TIOCSCTTY as _, 0) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
            let child = c.spawn().expect("start econtext on a pty");
            drop(c);
            drop(slave);
            let master = std::fs::File::from(pty.master);
            let out = Arc::new(Mutex::new(Vec::new()));
            let (mut r, o) = (master.try_clone().unwrap(), out.clone());
            // Reads until the last slave fd closes (EIO).
            std::thread::spawn(move || {
                let mut buf = [0u8; 4096];
                while let Ok(n) = r.read(&mut buf) {
                    if n == 0 {
                        break;
                    }
                    o.lock().unwrap().extend_from_slice(&buf[..n]);
                }
            });
            OnPty { master, child, out }
        }

        fn raw(&self) -> Vec<u8> {
            self.out.lock().unwrap().clone()
        }

        /// What a person would read: escape sequences and CRs removed.
        fn text(&self) -> String {
            plain(&String::from_utf8_lossy(&self.raw()))
        }

        fn send(&mut self, bytes: &[u8]) {
            self.master.write_all(bytes).unwrap();
            self.master.flush().unwrap();
        }

        /// Waits (at most `secs`) until the screen shows `needle`.
        fn wait_for(&mut self, needle: &str, secs: u64) {
            let end = Instant::now() + Duration::from_secs(secs);
            while Instant::now() < end {
                if self.text().contains(needle) {
                    return;
                }
                if let Ok(Some(st)) = self.child.try_wait() {
                    std::thread::sleep(Duration::from_millis(200));
                    if self.text().contains(needle) {
                        return;
                    }
                    panic!("exited ({st}) without showing {needle:?}:\n{}", self.text());
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = self.child.kill();
            panic!("{needle:?} not shown within {secs} s:\n{}", self.text());
        }

        /// The exit status (within `secs`), then what was shown.
        fn finish(mut self, secs: u64) -> (ExitStatus, OnPty) {
            let end = Instant::now() + Duration::from_secs(secs);
            loop {
                if let Some(st) = self.child.try_wait().unwrap() {
                    // The reader drains what is left.
                    std::thread::sleep(Duration::from_millis(300));
                    return (st, self);
                }
                if Instant::now() > end {
                    let _ = self.child.kill();
                    panic!("did not exit within {secs} s:\n{}", self.text());
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }

    impl Drop for OnPty {
        fn drop(&mut self) {
            if let Ok(None) = self.child.try_wait() {
                let _ = self.child.kill();
                let _ = self.child.wait();
            }
        }
    }

    /// Removes CSI/OSC escape sequences and carriage returns.
    fn plain(s: &str) -> String {
        let mut out = String::new();
        let mut it = s.chars().peekable();
        while let Some(c) = it.next() {
            match c {
                '\u{1b}' => match it.next() {
                    Some('[') => {
                        for c in it.by_ref() {
                            if ('@'..='~').contains(&c) {
                                break;
                            }
                        }
                    }
                    Some(']') => {
                        for c in it.by_ref() {
                            if c == '\u{7}' {
                                break;
                            }
                        }
                    }
                    _ => {}
                },
                '\r' => {}
                c => out.push(c),
            }
        }
        out
    }

    /// The per-host text lines (`host | status | ...`) shown (on a
    /// terminal, after what is left of the progress line they replaced).
    fn host_lines(text: &str) -> Vec<String> {
        text.lines()
            .filter_map(|l| l.find("127.0.0.").map(|i| &l[i..]))
            .filter(|l| l.contains(" | "))
            .map(str::to_string)
            .collect()
    }

    #[test]
    fn progress_lines_summary_and_two_stage_ctrl_c_on_a_tty() {
        if skip_unless(
            NEEDS,
            "progress_lines_summary_and_two_stage_ctrl_c_on_a_tty",
        ) {
            return;
        }
        let f = Fleet::start(60);
        let inv = f.ini("");
        let inv = inv.to_str().unwrap();
        let common = ["run", "-i", inv, "--check-host-keys", "ignore"];

        // Every host finishes: a line each, a progress line, the table.
        let mut args = common.to_vec();
        args.extend([
            "-f",
            "8",
            "fleet",
            "--",
            "echo hi from $(hostname) >&2; exit 0",
        ]);
        let mut p = OnPty::spawn(&args);
        p.wait_for("STATUS", 120);
        let (st, p) = p.finish(30);
        assert_eq!(st.code(), Some(0), "{}", p.text());
        let text = p.text();
        let hosts = host_lines(&text);
        assert_eq!(hosts.len(), 20, "{text}");
        assert!(
            hosts.iter().all(|l| l.contains(" | ok | rc=0 | hi from ")),
            "{hosts:?}"
        );
        // indicatif's line: elapsed, done/total and the counts.
        assert!(text.contains("/20 ok="), "{text}");
        assert!(text.contains("unreachable=0"), "{text}");
        let raw = String::from_utf8_lossy(&p.raw()).into_owned();
        assert!(raw.contains("\u{1b}["), "no progress drawing on a tty");
        assert!(text.contains("20 hosts in "), "{text}");
        let ok_row = text
            .lines()
            .find(|l| l.trim_start().starts_with("ok "))
            .unwrap_or_default();
        assert!(ok_row.split_whitespace().nth(1) == Some("20"), "{text}");
        drop(p);

        // Ctrl+C once: hosts still running are named, no new one starts;
        // twice: they are aborted (died), the others skipped, exit 130.
        let mut args = common.to_vec();
        args.extend(["-f", "2", "all", "--", "sleep 60"]);
        let all_connections = || (0..20).map(|i| f.connections_to(&f.addr(i))).sum::<usize>();
        let before = all_connections();
        let connections = || all_connections() - before;
        let mut p = OnPty::spawn(&args);
        p.wait_for("/20 ok=", 60);
        // Both slots busy: two ssh connections made.
        let end = Instant::now() + Duration::from_secs(60);
        while connections() < 2 {
            assert!(Instant::now() < end, "two hosts never connected");
            std::thread::sleep(Duration::from_millis(100));
        }
        p.send(b"\x03");
        p.wait_for("still running (2)", 30);
        std::thread::sleep(Duration::from_secs(2));
        assert_eq!(connections(), 2, "a host started after the first Ctrl+C");
        let t = Instant::now();
        p.send(b"\x03");
        let (st, p) = p.finish(30);
        assert!(t.elapsed() < Duration::from_secs(20), "{:?}", t.elapsed());
        assert_eq!(st.code(), Some(130), "{}", p.text());
        let text = p.text();
        let hosts = host_lines(&text);
        assert_eq!(hosts.len(), 20, "{text}");
        let died = hosts.iter().filter(|l| l.contains(" | died | ")).count();
        let skipped = hosts.iter().filter(|l| l.contains(" | skipped | ")).count();
        assert_eq!((died, skipped), (2, 18), "{hosts:?}");
        let row = |s: &str| {
            text.lines()
                .find(|l| l.trim_start().starts_with(&format!("{s} ")))
                .and_then(|l| l.split_whitespace().nth(1).map(str::to_string))
        };
        assert_eq!(row("died").as_deref(), Some("2"), "{text}");
        assert_eq!(row("skipped").as_deref(), Some("18"), "{text}");

        // Not a terminal: the same lines, no progress, no table, and not
        // one escape code on stdout or stderr.
        let out = Command::new(EXE)
            .args(common)
            .args(["-f", "8", "fleet", "--", "echo hi"])
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
        let so = String::from_utf8_lossy(&out.stdout);
        assert_eq!(host_lines(&so).len(), 20, "{so}");
        assert!(so.lines().all(|l| l.ends_with(" | ok | rc=0 | hi")), "{so}");
        for b in [&out.stdout, &out.stderr] {
            assert!(!b.contains(&0x1b), "{:?}", String::from_utf8_lossy(b));
        }
        assert!(!stderr(&out).contains("STATUS"), "{}", stderr(&out));
    }

    /// -k asks for the ssh password and -K for the become password, on
    /// the terminal, with echo off; both are used (an ssh login by
    /// password, a sudo that needs one).
    #[test]
    fn ask_pass_and_ask_become_pass_prompt_on_the_tty_and_never_echo() {
        if skip_unless(
            NEEDS,
            "ask_pass_and_ask_become_pass_prompt_on_the_tty_and_never_echo",
        ) {
            return;
        }
        let f = Fleet::start(90);
        let user = TestUser::create("askp");
        // sudo asks `user` for its own password.
        let _sudoers = Sudoers::add("askp", &format!("{} ALL=(ALL:ALL) ALL\n", user.name));
        // A host that takes passwords only (no key named for it).
        let pw_sshd = Sshd::start(true);
        let inv = f.dir.path("ask.ini");
        std::fs::write(
            &inv,
            format!(
                "bypw ansible_host=127.0.0.1 ansible_port={} ansible_user={u}\n\
                 become ansible_host={} ansible_port={} ansible_user={u} \
                 ansible_ssh_private_key_file={} ansible_become=yes ansible_become_user=root\n",
                pw_sshd.port,
                f.addr(0),
                f.port,
                f.key.display(),
                u = user.name
            ),
        )
        .unwrap();
        let mut p = OnPty::spawn(&[
            "run",
            "-i",
            inv.to_str().unwrap(),
            "--check-host-keys",
            "ignore",
            "--json",
            "-k",
            "-K",
            "all",
            "--",
            "id -un",
        ]);
        p.wait_for("SSH password:", 30);
        p.send(format!("{}\r", user.password).as_bytes());
        p.wait_for("BECOME password:", 30);
        p.send(format!("{}\r", user.password).as_bytes());
        let (st, p) = p.finish(120);
        let text = p.text();
        assert_eq!(st.code(), Some(0), "{text}");
        let json: String = text
            .lines()
            .filter_map(|l| l.find("{\"host\"").map(|i| format!("{}\n", &l[i..])))
            .collect();
        let l = lines(&std::process::Output {
            status: st,
            stdout: json.into_bytes(),
            stderr: Vec::new(),
        });
        assert_eq!(l["bypw"]["stdout"], format!("{}\n", user.name), "{text}");
        assert_eq!(l["become"]["stdout"], "root\n", "{text}");
        assert!(
            !String::from_utf8_lossy(&p.raw()).contains(&user.password),
            "the password was echoed:\n{text}"
        );
    }
}
