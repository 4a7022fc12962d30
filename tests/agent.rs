//! Rust agents: this test binary is itself the agent it ships (`main`
//! calls `run_if_child` first), locally and over a throwaway sshd to a
//! user with no Python on PATH. `harness = false`: libtest's own `main`
//! would print to the stdout that carries the handshake; the small runner
//! at the bottom takes a name filter and `--list` like libtest.

mod common;

use std::io::BufRead;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use actix::prelude::*;
use common::sshd::{skip_unless, Sshd, TempDir, TestUser};
use common::*;
use econtext::actors::serve::Request;
use econtext::agent::{AgentOptions, Services};
use econtext::bootstrap::{HostKeyCheck, SshOptions};
use econtext::{CallError, ConnectOptions, Method};

/// The handle the test's served actor listens on.
const COUNTER: u32 = 500;

struct Counter(u64);

impl Actor for Counter {
    type Context = actix::Context<Self>;
}

impl Handler<Request<u64, u64>> for Counter {
    type Result = Result<u64, CallError>;
    fn handle(&mut self, r: Request<u64, u64>, _: &mut Self::Context) -> Self::Result {
        self.0 += r.value;
        Ok(self.0)
    }
}

/// What the agent offers: the same `Services` an in-process context takes.
fn services() -> Services {
    let mut s = Services::default();
    s.functions
        .register("demo.add", |(a, b): (i64, i64)| a + b)
        .register("demo.uid", |(): ()| nix::unistd::getuid().as_raw())
        .register("demo.pid", |(): ()| std::process::id())
        .register("demo.exe", |(): ()| {
            std::fs::read_link("/proc/self/exe")
                .map(|p| p.display().to_string())
                .unwrap_or_default()
        })
        .register("demo.say", |(text,): (String,)| {
            println!("{text}");
            eprintln!("err:{text}");
            true
        });
    s.serve::<u64, u64, _, _>(COUNTER, || Counter(0));
    s
}

fn agent_opts(name: &str, method: Method) -> ConnectOptions {
    ConnectOptions::new(method)
        .name(name)
        .agent(AgentOptions::default())
        .connect_timeout(Duration::from_secs(60))
}

/// The parent pid of `pid`, from /proc (after the `(comm)` field).
fn parent_pid(pid: u32) -> u32 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let after_comm = stat.rsplit(") ").next().unwrap();
    after_comm.split(' ').nth(1).unwrap().parse().unwrap()
}

/// Whether `pid` exists and is not a zombie.
fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| !s.contains(") Z "))
        .unwrap_or(false)
}

/// Checks the agent's functions, served actor and stdio forwarding.
async fn exercise(ctx: &econtext::Context, cap: &Capture) {
    let sum: i64 = ctx.call("demo", "add", (2, 40)).await.unwrap();
    assert_eq!(sum, 42);
    let a: u64 = ctx.request(COUNTER, &5u64, None).await.unwrap();
    let b: u64 = ctx.request(COUNTER, &7u64, None).await.unwrap();
    assert_eq!((a, b), (5, 12), "one actor, state kept between requests");
    let said: bool = ctx.call("demo", "say", ("hello-agent",)).await.unwrap();
    assert!(said);
    assert!(
        cap.wait_for(&["hello-agent", "logger=stdout"], 10.0).await,
        "stdout not forwarded:\n{}",
        cap.text()
    );
    assert!(
        cap.wait_for(&["err:hello-agent", "logger=stderr"], 10.0)
            .await,
        "stderr not forwarded:\n{}",
        cap.text()
    );
}

fn rust_agent_local_calls_functions_and_served_actor() {
    run(async {
        let cap = Capture::default();
        let master = master(&cap);
        let ctx = master
            .connect(agent_opts("agentloc", Method::Local(Default::default())))
            .await
            .unwrap_or_else(|e| panic!("{e}\n{}", cap.text()));
        exercise(&ctx, &cap).await;
        // From memory: the running image is a memfd, not a file.
        let exe: String = ctx.call("demo", "exe", ()).await.unwrap();
        assert!(exe.starts_with("/memfd:econtext:agentloc"), "{exe}");
        let pid: u32 = ctx.call("demo", "pid", ()).await.unwrap();
        let args = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap();
        assert_eq!(String::from_utf8_lossy(&args), "econtext:agentloc\0");
        assert!(cap.text().contains("shipped_bytes="), "{}", cap.text());
        ctx.shutdown().await.unwrap();
        tokio::time::timeout(Duration::from_secs(10), ctx.dead())
            .await
            .expect("the agent ends on SHUTDOWN");
    });
}

fn same_services_in_process_serve_the_actor_too() {
    run(async {
        let cap = Capture::default();
        let master = master(&cap);
        let ctx = master
            .rust_context("inproc", None, services())
            .await
            .unwrap();
        let sum: i64 = ctx.call("demo", "add", (3, 4)).await.unwrap();
        assert_eq!(sum, 7);
        let a: u64 = ctx.request(COUNTER, &2u64, None).await.unwrap();
        let b: u64 = ctx.request(COUNTER, &2u64, None).await.unwrap();
        assert_eq!((a, b), (2, 4));
        let pid: u32 = ctx.call("demo", "pid", ()).await.unwrap();
        assert_eq!(pid, std::process::id(), "in this process");
    });
}

fn rust_agent_is_an_intermediate_for_python() {
    run(async {
        let cap = Capture::default();
        let master = master(&cap);
        let agent = master
            .connect(agent_opts("agentmid", Method::Local(Default::default())))
            .await
            .unwrap_or_else(|e| panic!("{e}\n{}", cap.text()));
        let py = master
            .connect(
                ConnectOptions::new(Method::Local(local(&python3())))
                    .name("pyunder")
                    .via(&agent),
            )
            .await
            .unwrap_or_else(|e| panic!("{e}\n{}", cap.text()));
        let ppid: u32 = py.call("os", "getppid", ()).await.unwrap();
        let agent_pid: u32 = agent.call("demo", "pid", ()).await.unwrap();
        assert_eq!(ppid, agent_pid, "the Python child is the agent's child");
        let sum: i64 = agent.call("demo", "add", (1, 1)).await.unwrap();
        assert_eq!(sum, 2);
    });
}

/// Supervision's kill through an agent: the master asks the agent to
/// signal the Python child it started (`os.kill`, a built-in limited to
/// the agent's own children), and the process really ends.
fn killing_a_python_child_of_an_agent_ends_its_process() {
    run(async {
        let cap = Capture::default();
        let master = master(&cap);
        let agent = master
            .connect(agent_opts("agentkill", Method::Local(Default::default())))
            .await
            .unwrap_or_else(|e| panic!("{e}\n{}", cap.text()));
        let py = master
            .connect(ConnectOptions::new(Method::Local(local(&python3()))).via(&agent))
            .await
            .unwrap_or_else(|e| panic!("{e}\n{}", cap.text()));
        let pid: u32 = py.call("os", "getpid", ()).await.unwrap();
        let reason = tokio::time::timeout(Duration::from_secs(30), master.kill(&py))
            .await
            .expect("kill resolves");
        assert_eq!(reason, econtext::DeadReason::Killed);
        let end = Instant::now() + Duration::from_secs(10);
        while alive(pid) && Instant::now() < end {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(!alive(pid), "python child {pid} outlived its kill");
        // The agent refuses to signal what is not its child.
        let me = std::process::id();
        let refused = agent.call::<()>("os", "kill", (me, 0)).await.unwrap_err();
        assert!(refused.to_string().contains("not a child"), "{refused}");
        let sum: i64 = agent.call("demo", "add", (1, 2)).await.unwrap();
        assert_eq!(sum, 3, "the agent lives on");
    });
}

/// Rust -> Python -> Rust: the Python intermediate starts the agent with
/// the binary and config the master put in the SPAWN.
fn rust_agent_under_a_python_intermediate() {
    run(async {
        let cap = Capture::default();
        let master = master(&cap);
        let py = master
            .connect(ConnectOptions::new(Method::Local(local(&python3()))).name("pymid"))
            .await
            .unwrap_or_else(|e| panic!("{e}\n{}", cap.text()));
        let agent = master
            .connect(agent_opts("agentunderpy", Method::Local(Default::default())).via(&py))
            .await
            .unwrap_or_else(|e| panic!("{e}\n{}", cap.text()));
        exercise(&agent, &cap).await;
        let exe: String = agent.call("demo", "exe", ()).await.unwrap();
        assert!(exe.starts_with("/memfd:econtext:agentunderpy"), "{exe}");
        let py_pid: u32 = py.call("os", "getpid", ()).await.unwrap();
        let agent_pid: u32 = agent.call("demo", "pid", ()).await.unwrap();
        let ppid = parent_pid(agent_pid);
        assert_eq!(ppid, py_pid, "the agent is the Python context's child");
        agent.shutdown().await.unwrap();
        tokio::time::timeout(Duration::from_secs(10), agent.dead())
            .await
            .expect("the agent ends on SHUTDOWN");
        let still: u32 = py.call("os", "getpid", ()).await.unwrap();
        assert_eq!(still, py_pid, "the intermediate lives on");
    });
}

/// Rust -> Rust -> Rust: an agent starts another agent for the master.
fn rust_agent_under_a_rust_agent() {
    run(async {
        let cap = Capture::default();
        let master = master(&cap);
        let upper = master
            .connect(agent_opts("agentupper", Method::Local(Default::default())))
            .await
            .unwrap_or_else(|e| panic!("{e}\n{}", cap.text()));
        let lower = master
            .connect(agent_opts("agentlower", Method::Local(Default::default())).via(&upper))
            .await
            .unwrap_or_else(|e| panic!("{e}\n{}", cap.text()));
        let sum: i64 = lower.call("demo", "add", (20, 22)).await.unwrap();
        assert_eq!(sum, 42);
        let upper_pid: u32 = upper.call("demo", "pid", ()).await.unwrap();
        let lower_pid: u32 = lower.call("demo", "pid", ()).await.unwrap();
        let ppid = parent_pid(lower_pid);
        assert_eq!(
            ppid, upper_pid,
            "the lower agent is the upper agent's child"
        );
    });
}

fn memfd_refused_falls_back_to_private_dir_and_deletes_it() {
    run(async {
        let cap = Capture::default();
        let master = master(&cap);
        let mut o = agent_opts("agentfb", Method::Local(Default::default()));
        o.agent = Some(AgentOptions::default().force_fallback(true));
        let ctx = master
            .connect(o)
            .await
            .unwrap_or_else(|e| panic!("{e}\n{}", cap.text()));
        exercise(&ctx, &cap).await;
        assert!(
            cap.text()
                .contains("memfd exec refused (the master forced the fallback)"),
            "the fallback is not in the log:\n{}",
            cap.text()
        );
        let exe: String = ctx.call("demo", "exe", ()).await.unwrap();
        assert!(exe.ends_with(" (deleted)"), "{exe}");
        let dir = Path::new(exe.trim_end_matches(" (deleted)"))
            .parent()
            .unwrap();
        assert!(!dir.exists(), "{} left behind", dir.display());
    });
}

/// Opt-in cache: the first connect ships the binary and stores it under
/// `$XDG_CACHE_HOME/econtext`; the second ships nothing (the stage checks
/// the SHA-256 and runs it; the agent says EC1 with no EC0); a tampered
/// copy fails the check and is shipped again.
fn agent_cache_second_connect_ships_nothing() {
    let dir = TempDir::new("agent-cache");
    // Read by the first stage of local children: this runner is serial.
    std::env::set_var("XDG_CACHE_HOME", dir.path(""));
    run(async {
        let cap = Capture::default();
        let master = master(&cap);
        let cached = |name: &str| {
            let mut o = agent_opts(name, Method::Local(Default::default()));
            o.agent = Some(AgentOptions::default().cache(true));
            o
        };
        let first = master
            .connect(cached("agentcache1"))
            .await
            .unwrap_or_else(|e| panic!("{e}\n{}", cap.text()));
        assert_eq!(first.call::<i64>("demo", "add", (1, 1)).await.unwrap(), 2);
        let files: Vec<_> = std::fs::read_dir(dir.path("econtext"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        assert_eq!(files.len(), 1, "one cached binary, no temp file: {files:?}");
        let name = files[0].file_name().unwrap().to_string_lossy().to_string();
        assert!(name.starts_with("agent-") && name.len() == 6 + 64, "{name}");
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&files[0]).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o700);
        assert!(!cap.text().contains("shipped_bytes=0"), "{}", cap.text());

        let second = master
            .connect(cached("agentcache2"))
            .await
            .unwrap_or_else(|e| panic!("{e}\n{}", cap.text()));
        exercise(&second, &cap).await;
        assert!(cap.text().contains("shipped_bytes=0"), "{}", cap.text());
        assert!(
            cap.text().contains("running the cached binary"),
            "{}",
            cap.text()
        );
        let pid: u32 = second.call("demo", "pid", ()).await.unwrap();
        let args = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap();
        assert_eq!(String::from_utf8_lossy(&args), "econtext:agentcache2\0");

        // A copy that no longer matches its name is not run: shipped again.
        let mut bytes = std::fs::read(&files[0]).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 0xff;
        // A new file renamed over it: the running agent holds the old one.
        let tmp = files[0].with_extension("tamper");
        std::fs::write(&tmp, &bytes).unwrap();
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o700)).unwrap();
        std::fs::rename(&tmp, &files[0]).unwrap();
        let before = cap.text().matches("shipped_bytes=0").count();
        let third = master
            .connect(cached("agentcache3"))
            .await
            .unwrap_or_else(|e| panic!("{e}\n{}", cap.text()));
        assert_eq!(third.call::<i64>("demo", "add", (2, 2)).await.unwrap(), 4);
        assert_eq!(
            cap.text().matches("shipped_bytes=0").count(),
            before,
            "tampered copy ran"
        );

        // Through a Python intermediate, the copy the third connect stored
        // again runs as well (the intermediate takes EC1 with no EC0).
        let hits = cap.text().matches("running the cached binary").count();
        let py = master.local(local(&python3())).await.unwrap();
        let fourth = master
            .connect(cached("agentcache4").via(&py))
            .await
            .unwrap_or_else(|e| panic!("{e}\n{}", cap.text()));
        assert_eq!(fourth.call::<i64>("demo", "add", (3, 3)).await.unwrap(), 6);
        assert!(
            cap.wait_for(&["running the cached binary", "agentcache4"], 10.0)
                .await,
            "not run from the cache through the intermediate:\n{}",
            cap.text()
        );
        assert!(cap.text().matches("running the cached binary").count() > hits);
    });
    std::env::remove_var("XDG_CACHE_HOME");
}

/// The real refusal, not the forced flag: `vm.memfd_noexec=2` set in a
/// new pid namespace (the sysctl is per namespace and inherited, so only
/// this test's master and its agent see it). The agent's first stage must
/// find the memfd exec refused and fall back to the private temp dir.
fn memfd_noexec_sysctl_falls_back_to_private_dir() {
    let test = "memfd_noexec_sysctl_falls_back_to_private_dir";
    if skip_unless(&["unshare"], test) {
        return;
    }
    let me = std::env::current_exe().unwrap();
    let out = Command::new("unshare")
        .args(["--pid", "--fork", "/bin/sh", "-c"])
        .arg("echo 2 > /proc/sys/vm/memfd_noexec && exec \"$0\"")
        .arg(&me)
        .env("AGENT_TEST_ROLE", "noexec-master")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    // The role prints NOEXEC only once the namespace and the sysctl are
    // set: no line means this machine cannot (no pid namespaces, an old
    // kernel, a read-only /proc/sys in a container).
    if !stdout.contains("NOEXEC ") {
        skip(&format!(
            "{test}: cannot set vm.memfd_noexec in a new pid namespace here: {}",
            stderr.trim()
        ));
        return;
    }
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(
        stdout.contains("NOEXEC 2"),
        "the sysctl was not set:\n{stdout}"
    );
    let exe = stdout
        .lines()
        .find_map(|l| l.strip_prefix("EXE "))
        .unwrap_or_else(|| panic!("no EXE line:\n{stdout}\n{stderr}"));
    assert!(exe.ends_with(" (deleted)"), "not the fallback: {exe}");
    assert!(
        stdout.contains("REFUSED memfd exec refused"),
        "the fallback is not logged:\n{stdout}"
    );
}

/// `AGENT_TEST_ROLE=noexec-master`: starts an agent under the namespace's
/// `vm.memfd_noexec`, prints what the test checks, and exits.
fn noexec_master_role() {
    run(async {
        let noexec = std::fs::read_to_string("/proc/sys/vm/memfd_noexec").unwrap_or_default();
        println!("NOEXEC {}", noexec.trim());
        let cap = Capture::default();
        let master = master(&cap);
        let ctx = master
            .connect(agent_opts("agentnoexec", Method::Local(Default::default())))
            .await
            .unwrap_or_else(|e| panic!("{e}\n{}", cap.text()));
        let exe: String = ctx.call("demo", "exe", ()).await.unwrap();
        println!("EXE {exe}");
        let sum: i64 = ctx.call("demo", "add", (1, 2)).await.unwrap();
        assert_eq!(sum, 3);
        // The stage's stderr line may still be on its way through the
        // IoLogger: wait for it (bounded) before looking.
        cap.wait_for(&["memfd exec refused"], 10.0).await;
        for line in cap.text().lines() {
            if let Some(i) = line.find("memfd exec refused") {
                println!("REFUSED {}", &line[i..]);
            }
        }
        ctx.shutdown().await.unwrap();
    });
}

/// A shell for a user that has only `sh` and the first stage's tools on
/// its PATH: no Python anywhere it looks.
fn no_python_user(dir: &TempDir) -> TestUser {
    let user = TestUser::create("ag");
    let bin = dir.path("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let which = |t: &str| {
        let o = Command::new("sh")
            .args(["-c", &format!("command -v {t}")])
            .output()
            .unwrap();
        String::from_utf8_lossy(&o.stdout).trim().to_string()
    };
    for t in ["sh", "mv", "ps"]
        .iter()
        .chain(econtext::agent::first_stage::SH_TOOLS)
    {
        std::os::unix::fs::symlink(which(t), bin.join(t)).unwrap();
    }
    let shell = dir.path("nopy-shell");
    std::fs::write(
        &shell,
        format!(
            "#!/bin/sh\nPATH={}\nexport PATH\nexec /bin/sh \"$@\"\n",
            bin.display()
        ),
    )
    .unwrap();
    let perm = |p: &Path, m| {
        std::fs::set_permissions(p, std::os::unix::fs::PermissionsExt::from_mode(m)).unwrap()
    };
    perm(&dir.0, 0o755);
    perm(&shell, 0o755);
    let st = Command::new("usermod")
        .args(["-s"])
        .arg(&shell)
        .arg(&user.name)
        .status()
        .unwrap();
    assert!(st.success());
    user
}

/// Every `.econtext.*` entry the fallback could have left.
fn leftovers(user: &TestUser) -> Vec<String> {
    let mut out = Vec::new();
    let home = format!("/home/{}", user.name);
    for d in ["/dev/shm", "/tmp", home.as_str()] {
        for e in std::fs::read_dir(d).into_iter().flatten().flatten() {
            let n = e.file_name().to_string_lossy().into_owned();
            let owned = std::os::unix::fs::MetadataExt::uid(&e.metadata().unwrap()) == user.uid;
            if n.starts_with(".econtext.") && owned {
                out.push(e.path().display().to_string());
            }
        }
    }
    out
}

fn rust_agent_over_ssh_to_user_without_python_leaves_nothing_on_disk() {
    const NEED: &[&str] = &[
        "/usr/sbin/sshd",
        "ssh",
        "ssh-keygen",
        "useradd",
        "usermod",
        "ps",
    ];
    if skip_unless(
        NEED,
        "rust_agent_over_ssh_to_user_without_python_leaves_nothing_on_disk",
    ) {
        return;
    }
    let sshd = Sshd::start(false);
    let dir = TempDir::new("agent-nopy");
    let user = no_python_user(&dir);
    // The user really has no Python: the shell finds none.
    let probe = user
        .command(dir.path("nopy-shell"))
        .args(["-c", "command -v python3 python; echo end"])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&probe.stdout).trim(), "end");
    run(async {
        let cap = Capture::default();
        let master = master(&cap);
        let mut o = SshOptions::new("127.0.0.1");
        o.user = Some(user.name.clone());
        o.port = Some(sshd.port);
        o.identity_file = Some(sshd.key.display().to_string());
        o.check_host_keys = HostKeyCheck::Ignore;
        let ctx = master
            .connect(agent_opts("agentssh", Method::Ssh(o)))
            .await
            .unwrap_or_else(|e| panic!("{e}\n{}\nsshd:\n{}", cap.text(), sshd.log_text()));
        exercise(&ctx, &cap).await;
        let uid: u32 = ctx.call("demo", "uid", ()).await.unwrap();
        assert_eq!(uid, user.uid);
        assert!(
            cap.text().contains("no Python on the target"),
            "{}",
            cap.text()
        );
        let ps = Command::new("ps")
            .args(["-u", &user.name, "-o", "pid=,comm=,args="])
            .output()
            .unwrap();
        let ps = String::from_utf8_lossy(&ps.stdout);
        assert!(ps.contains("econtext:agentssh"), "ps:\n{ps}");
        assert_eq!(leftovers(&user), Vec::<String>::new(), "while running");
        ctx.shutdown().await.unwrap();
        tokio::time::timeout(Duration::from_secs(10), ctx.dead())
            .await
            .expect("the agent ends on SHUTDOWN");
    });
    assert_eq!(leftovers(&user), Vec::<String>::new(), "after the end");
}

/// The issue's own command: the CLI ships itself to a user with no Python.
fn cli_call_agent_rust_over_ssh_to_user_without_python() {
    const NEED: &[&str] = &["/usr/sbin/sshd", "ssh", "ssh-keygen", "useradd", "usermod"];
    if skip_unless(NEED, "cli_call_agent_rust_over_ssh_to_user_without_python") {
        return;
    }
    let sshd = Sshd::start(false);
    let dir = TempDir::new("agent-cli");
    let user = no_python_user(&dir);
    let target = format!(
        "ssh:{}@127.0.0.1:{}?agent=rust&identity={}&check_host_keys=ignore&name=clirust",
        user.name,
        sshd.port,
        sshd.key.display()
    );
    let out = Command::new(env!("CARGO_BIN_EXE_econtext"))
        .args(["call", "--connect-timeout", "120", &target, "econtext.ping"])
        .output()
        .unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert_eq!(stdout.trim(), "true", "{stderr}");
    assert!(stderr.contains("shipped_bytes"), "{stderr}");
    assert_eq!(leftovers(&user), Vec::<String>::new());
}

fn rust_agent_dies_when_master_killed() {
    let mut master = Command::new("/proc/self/exe")
        .env("AGENT_TEST_ROLE", "master")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufReader::new(master.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let pid: u32 = line
        .strip_prefix("AGENT ")
        .and_then(|p| p.trim().parse().ok())
        .unwrap_or_else(|| panic!("the master said {line:?}"));
    assert!(alive(pid));
    master.kill().unwrap();
    master.wait().unwrap();
    let end = Instant::now() + Duration::from_secs(20);
    while alive(pid) && Instant::now() < end {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(!alive(pid), "agent {pid} outlived its master");
}

/// `AGENT_TEST_ROLE=master`: a master that starts one agent, prints its
/// pid and waits to be killed.
fn master_role() {
    run(async {
        let master = econtext::Master::new(Default::default());
        let ctx = master
            .connect(agent_opts("orphan", Method::Local(Default::default())))
            .await
            .expect("agent");
        let pid: u32 = ctx.call("demo", "pid", ()).await.unwrap();
        println!("AGENT {pid}");
        tokio::time::sleep(Duration::from_secs(120)).await;
    });
}

const TESTS: &[(&str, fn())] = &[
    (
        "rust_agent_local_calls_functions_and_served_actor",
        rust_agent_local_calls_functions_and_served_actor,
    ),
    (
        "same_services_in_process_serve_the_actor_too",
        same_services_in_process_serve_the_actor_too,
    ),
    (
        "rust_agent_is_an_intermediate_for_python",
        rust_agent_is_an_intermediate_for_python,
    ),
    (
        "killing_a_python_child_of_an_agent_ends_its_process",
        killing_a_python_child_of_an_agent_ends_its_process,
    ),
    (
        "rust_agent_under_a_python_intermediate",
        rust_agent_under_a_python_intermediate,
    ),
    (
        "rust_agent_under_a_rust_agent",
        rust_agent_under_a_rust_agent,
    ),
    (
        "memfd_refused_falls_back_to_private_dir_and_deletes_it",
        memfd_refused_falls_back_to_private_dir_and_deletes_it,
    ),
    (
        "agent_cache_second_connect_ships_nothing",
        agent_cache_second_connect_ships_nothing,
    ),
    (
        "memfd_noexec_sysctl_falls_back_to_private_dir",
        memfd_noexec_sysctl_falls_back_to_private_dir,
    ),
    (
        "rust_agent_over_ssh_to_user_without_python_leaves_nothing_on_disk",
        rust_agent_over_ssh_to_user_without_python_leaves_nothing_on_disk,
    ),
    (
        "cli_call_agent_rust_over_ssh_to_user_without_python",
        cli_call_agent_rust_over_ssh_to_user_without_python,
    ),
    (
        "rust_agent_dies_when_master_killed",
        rust_agent_dies_when_master_killed,
    ),
];

fn main() {
    econtext::agent::run_if_child(services);
    match std::env::var("AGENT_TEST_ROLE").as_deref() {
        Ok("master") => return master_role(),
        Ok("noexec-master") => return noexec_master_role(),
        _ => {}
    }
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|a| a == "--list") {
        for (name, _) in TESTS {
            println!("{name}: test");
        }
        return;
    }
    // Name filters, as libtest takes them; flags (and a flag's value)
    // are ignored.
    let mut filters = Vec::new();
    let mut skip_value = false;
    for a in &args {
        if skip_value {
            skip_value = false;
        } else if a.starts_with("--") {
            skip_value = !a.contains('=')
                && ["--test-threads", "--skip", "--format", "--color"].contains(&a.as_str());
        } else {
            filters.push(a.clone());
        }
    }
    let exact = args.iter().any(|a| a == "--exact");
    let chosen: Vec<_> = TESTS
        .iter()
        .filter(|(n, _)| {
            filters.is_empty()
                || filters.iter().any(|f| {
                    if exact {
                        n == f
                    } else {
                        n.contains(f.as_str())
                    }
                })
        })
        .collect();
    println!("\nrunning {} tests", chosen.len());
    let mut failed = Vec::new();
    for (name, test) in &chosen {
        let ok = std::panic::catch_unwind(test).is_ok();
        println!("test {name} ... {}", if ok { "ok" } else { "FAILED" });
        if !ok {
            failed.push(*name);
        }
    }
    println!(
        "\ntest result: {}. {} passed; {} failed",
        if failed.is_empty() { "ok" } else { "FAILED" },
        chosen.len() - failed.len(),
        failed.len()
    );
    if !failed.is_empty() {
        println!("failures: {failed:?}");
        std::process::exit(101);
    }
}
