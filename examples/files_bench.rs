//! The file-transfer benchmark (issue 15), in one sitting beside the
//! usual tools: one 256 MiB file and a 1,000-file tree of 4 KiB files,
//! local and over ssh (a throwaway sshd on 127.0.0.1, as the tests use),
//! beside `cp`/`tar | tar`, `ssh cat`, `scp` and `tar | ssh tar -x`; the
//! latency of a call during a 1 GiB push with the master's and the
//! child's peak RSS; and one file to 10 contexts under one intermediate.
//!
//! `cargo run --release --example files_bench [-- --runs N] [--json] [--no-ssh | --only-ssh]
//! [--window BYTES] [--chunk BYTES] [--latency-only | --breakdown | --cpu]`
//!
//! It ends with the "Done when" figures, each with its target.
//! `--latency-only`: only the call latency during a push over ssh (and
//! its RSS), `--runs` times, after 400 calls on an idle link; with
//! `FB_SIZE=BYTES` a smaller file than 1 GiB; `FB_DEBUG=1` names every
//! call slower than 25 ms and when it happened. `--breakdown`: connect,
//! first push, tree and 256 MiB pushes with and without fsync, over ssh.
//! `--cpu`: CPU seconds per process (and thread) of `ssh cat`, `tar |
//! ssh` and our pushes over ssh, from /proc: load barely changes them.
//! `--cpu --connected [--no-ssh] [--pause]`: only that push's per-process
//! lines (`--runs` pushes; `--no-ssh`: to a local child; `--pause`: the
//! pids, then a line on stdin, to attach perf or strace).
//! Contexts connect as `econtext copy` does (lean, `econtext.files`
//! preloaded); `FB_PLAIN=1` uses the default `ConnectOptions` instead.
//! `FB_CIPHER=NAME` (with `--cpu` or `--latency-only`): ssh and our
//! contexts use that cipher (e.g. aes128-gcm@openssh.com).
//!
//! ssh needs root, sshd, ssh, scp and ssh-keygen (what `./scripts/test`
//! installs); without them those rows print SKIP.

#[path = "../tests/common/sshd.rs"]
#[allow(dead_code)]
mod sshd;

#[path = "files_cpu/mod.rs"]
mod cpu;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use econtext::bootstrap::{HostKeyCheck, SshOptions};
use econtext::{
    ConnectOptions, Context, FilesExt, LocalOptions, Master, MasterOptions, Method, TransferOptions,
};
use serde_json::json;

const PY: &str = "/usr/bin/python3";

/// `--window BYTES` / `--chunk BYTES` override the defaults for every row.
fn tuned() -> TransferOptions {
    let args: Vec<String> = std::env::args().collect();
    let num = |flag: &str| {
        args.iter()
            .position(|a| a == flag)
            .and_then(|i| args.get(i + 1)?.parse::<u64>().ok())
    };
    let mut o = TransferOptions::default();
    if let Some(w) = num("--window") {
        o = o.window(w);
    }
    if let Some(c) = num("--chunk") {
        o = o.chunk(c as usize);
    }
    o
}
const BIG: u64 = 256 << 20;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

fn sh(cmd: &str) -> f64 {
    let t = Instant::now();
    let st = Command::new("sh").args(["-c", cmd]).status().expect("sh");
    assert!(st.success(), "{cmd}");
    t.elapsed().as_secs_f64()
}

/// Before each timed 256 MiB row over ssh: `sync`, so no writeback of
/// the rows before competes for the two cores, then 320 MiB of scratch
/// written and deleted, so the row writes into page cache the guest has
/// just used. On this VM a page the guest never touched, or gave back to
/// the host (it does within seconds of freeing it: free page reporting),
/// costs ~3 ns/byte of system time at first touch (~0.8 s per 256 MiB,
/// in whichever process writes): which writer of a row got such pages
/// decided the row (docs/PERFORMANCE.md, "Fresh pages on this VM").
///
/// It also waits (3 s at most) until no child of ours is still being
/// reaped: the contexts of earlier rows exit and are reaped a moment
/// after they are closed, and their CPU would land in the next row's
/// "CPU seconds" (6.36 s for one `ssh cat` once).
fn settle_memory(dir: &sshd::TempDir) {
    use std::io::Write;
    let me = std::process::id();
    let mut last = cpu::times(me).reaped;
    for _ in 0..15 {
        std::thread::sleep(Duration::from_millis(200));
        let now = cpu::times(me).reaped;
        if now == last {
            break;
        }
        last = now;
    }
    let _ = Command::new("sync").status();
    let p = dir.path("warm.scratch");
    if let Ok(mut f) = std::fs::File::create(&p) {
        let block = vec![0u8; 1 << 20];
        for _ in 0..320 {
            if f.write_all(&block).is_err() {
                break;
            }
        }
    }
    let _ = std::fs::remove_file(&p);
}

fn status_kib(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

fn make_tree(root: &Path) {
    std::fs::create_dir_all(root).unwrap();
    for d in 0..10 {
        let dir = root.join(format!("d{d}"));
        std::fs::create_dir_all(&dir).unwrap();
        for f in 0..100 {
            let mut data = vec![0u8; 4096];
            data[..8].copy_from_slice(&((d * 100 + f) as u64).to_le_bytes());
            std::fs::write(dir.join(format!("f{f:03}")), data).unwrap();
        }
    }
}

fn sha256(path: &Path) -> String {
    let out = Command::new("sha256sum").arg(path).output().unwrap();
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_string()
}

struct Bench {
    runs: usize,
    rows: Vec<(String, String)>,
    json: serde_json::Map<String, serde_json::Value>,
    /// The "Done when" figures: (line, figure, target, met).
    done: Vec<(String, String, String, bool)>,
}

impl Bench {
    fn row(&mut self, key: &str, label: &str, secs: f64, base: Option<f64>) {
        let text = match base {
            Some(b) => format!("{:.3} s ({:.2}x)", secs, secs / b),
            None => format!("{secs:.3} s"),
        };
        eprintln!("files_bench: {label}: {text}");
        self.rows.push((label.to_string(), text));
        self.json.insert(key.to_string(), json!(secs));
    }

    /// One of the "Done when" figures, with its target.
    fn done(&mut self, line: &str, figure: String, target: &str, met: bool) {
        eprintln!(
            "files_bench: DONE-WHEN {line}: {figure} (target {target}): {}",
            if met { "met" } else { "NOT met" }
        );
        self.json.insert(
            format!("done_{}", self.done.len() + 1),
            json!({"line": line, "figure": figure, "target": target, "met": met}),
        );
        self.done.push((line.into(), figure, target.into(), met));
    }

    fn note(&mut self, key: &str, label: &str, text: String, v: serde_json::Value) {
        eprintln!("files_bench: {label}: {text}");
        self.rows.push((label.to_string(), text));
        self.json.insert(key.to_string(), v);
    }
}

async fn close(ctx: Context) {
    let _ = ctx.shutdown().await;
    let _ = tokio::time::timeout(Duration::from_secs(5), ctx.dead()).await;
}

async fn local(master: &Master) -> Context {
    master
        .local(LocalOptions::new(PY))
        .await
        .expect("local context")
}

/// Latency percentiles (ms) of the calls made during a push.
struct Latency {
    n: usize,
    p50: f64,
    p90: f64,
    p99: f64,
    max: f64,
}

impl Latency {
    fn of(mut v: Vec<f64>) -> Latency {
        v.sort_by(|a, b| a.partial_cmp(b).unwrap());
        let at = |q: f64| v[((v.len() - 1) as f64 * q).round() as usize];
        Latency {
            n: v.len(),
            p50: at(0.5),
            p90: at(0.9),
            p99: at(0.99),
            max: at(1.0),
        }
    }

    fn text(&self) -> String {
        format!(
            "p50 {:.1} / p90 {:.1} / p99 {:.1} / max {:.1} ms ({} calls)",
            self.p50, self.p90, self.p99, self.max, self.n
        )
    }

    fn json(&self) -> serde_json::Value {
        json!({"calls": self.n, "p50": self.p50, "p90": self.p90, "p99": self.p99, "max": self.max})
    }
}

/// What a call during a 1 GiB push saw, and the memory it took.
struct DuringPush {
    lat: Latency,
    /// Peak VmRSS during the push above the figure just before it (KiB).
    child_above: u64,
    master_above: u64,
    child_before: u64,
    master_before: u64,
    window: u64,
}

impl DuringPush {
    fn rss_text(&self) -> String {
        format!(
            "child +{:.1} MiB (from {:.1}), master +{:.1} MiB (from {:.1}); window {:.1} MiB",
            self.child_above as f64 / 1024.0,
            self.child_before as f64 / 1024.0,
            self.master_above as f64 / 1024.0,
            self.master_before as f64 / 1024.0,
            self.window as f64 / (1 << 20) as f64
        )
    }

    /// The target: the window plus a few (4) MiB above the idle figure.
    fn rss_met(&self) -> bool {
        let bound = self.window / 1024 + 4096;
        self.child_above <= bound && self.master_above <= bound
    }
}

/// Calls `os.getpid` every 10 ms while `ctx` receives a 1 GiB push (the
/// default options: fsync on), sampling the child's and this process's
/// RSS at each call. The baselines are taken after a 1 MiB push (the
/// file module, hashlib and the threads are loaded then).
async fn calls_during_push(ctx: &Context, src: &Path, dest: &Path) -> DuringPush {
    let pid: u32 = ctx.call("os", "getpid", ()).await.unwrap();
    let me = std::process::id();
    let warm = dest.with_extension("warm");
    sh(&format!(
        "head -c 1048576 {} > {}",
        src.display(),
        warm.display()
    ));
    ctx.push_with(&warm, dest, &tuned()).await.unwrap();
    let _ = std::fs::remove_file(dest);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let (child_before, master_before) = (status_kib(pid, "VmRSS:"), status_kib(me, "VmRSS:"));
    let opts = tuned();
    let window = opts.window;
    if std::env::var_os("FB_DEBUG").is_some() {
        // Time to attach a tracer to the child before the push starts.
        eprintln!("files_bench: child pid {pid}, master pid {me}");
        tokio::time::sleep(Duration::from_secs(3)).await;
    }
    let (c, s, d) = (ctx.clone(), src.to_path_buf(), dest.to_path_buf());
    let started = Instant::now();
    let push = actix_rt::spawn(async move { c.push_with(&s, &d, &opts).await });
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (mut lat, mut child_peak, mut master_peak) = (Vec::new(), 0, 0);
    while !push.is_finished() {
        let t = Instant::now();
        let _: u32 = ctx.call("os", "getpid", ()).await.unwrap();
        lat.push(t.elapsed().as_secs_f64() * 1e3);
        if std::env::var_os("FB_DEBUG").is_some() && t.elapsed() > Duration::from_millis(25) {
            eprintln!(
                "files_bench: slow call {:.1} ms, {:.2} s into the push",
                t.elapsed().as_secs_f64() * 1e3,
                (t - started).as_secs_f64()
            );
        }
        child_peak = child_peak.max(status_kib(pid, "VmRSS:"));
        master_peak = master_peak.max(status_kib(me, "VmRSS:"));
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    push.await.unwrap().expect("1 GiB push");
    if std::env::var_os("FB_DEBUG").is_some() {
        eprintln!(
            "files_bench: the push took {:.2} s",
            started.elapsed().as_secs_f64()
        );
    }
    let _ = std::fs::remove_file(&warm);
    DuringPush {
        lat: Latency::of(lat),
        child_above: child_peak.saturating_sub(child_before),
        master_above: master_peak.saturating_sub(master_before),
        child_before,
        master_before,
        window,
    }
}

#[actix::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let runs = args
        .iter()
        .position(|a| a == "--runs")
        .and_then(|i| args.get(i + 1)?.parse().ok())
        .unwrap_or(3);
    let as_json = args.iter().any(|a| a == "--json");
    let no_ssh = args.iter().any(|a| a == "--no-ssh");
    let only_ssh = args.iter().any(|a| a == "--only-ssh");
    let latency_only = args.iter().any(|a| a == "--latency-only");
    let breakdown = args.iter().any(|a| a == "--breakdown");
    let cpu_only = args.iter().any(|a| a == "--cpu");
    let mut b = Bench {
        runs,
        rows: Vec::new(),
        json: serde_json::Map::new(),
        done: Vec::new(),
    };
    let dir = sshd::TempDir::new("files-bench");
    let big = dir.path("big.bin");
    let gib = dir.path("gib.bin");
    let tree = dir.path("tree");
    sh(&format!(
        "head -c {BIG} /dev/urandom > {0} && head -c {1} /dev/zero > {2}",
        big.display(),
        1u64 << 30,
        gib.display()
    ));
    make_tree(&tree);
    // A mode that is not the default, to check it arrives.
    std::fs::set_permissions(&big, std::os::unix::fs::PermissionsExt::from_mode(0o640)).unwrap();
    let big_sha = sha256(&big);
    let master = Master::new(MasterOptions::default());
    let rss0 = status_kib(std::process::id(), "VmHWM:");

    if no_ssh && cpu_only {
        let ctx = local(&master).await;
        connected_cpu(&ctx, &dir, &big, None).await;
        close(ctx).await;
    } else if !only_ssh && !latency_only && !breakdown && !cpu_only {
        local_rows(&mut b, &master, &dir, &big, &big_sha, &tree, rss0).await;
    }

    // ---- ssh ----
    let missing = sshd::missing(&["/usr/sbin/sshd", "ssh", "scp", "ssh-keygen"]);
    match (no_ssh, missing) {
        (true, _) if cpu_only => {}
        (true, _) => eprintln!("SKIP: files_bench ssh rows: --no-ssh"),
        (false, Some(why)) => eprintln!("SKIP: files_bench ssh rows: {why}"),
        (false, None) if latency_only => ssh_latency(&mut b, &master, &dir).await,
        (false, None) if breakdown => ssh_breakdown(&master, &dir, &big, &tree).await,
        (false, None) if cpu_only => ssh_cpu(runs, &master, &dir, &big, &tree).await,
        (false, None) => ssh_rows(&mut b, &master, &dir, &big, &big_sha, &tree).await,
    }

    if as_json {
        println!("{}", serde_json::Value::Object(b.json));
    } else {
        println!("| workload | time |\n|---|---|");
        for (k, v) in &b.rows {
            println!("| {k} | {v} |");
        }
        println!("\nDone when (issue 15):\n\n| line | figure | target | met |\n|---|---|---|---|");
        for (l, f, t, m) in &b.done {
            println!("| {l} | {f} | {t} | {} |", if *m { "yes" } else { "NO" });
        }
    }
}

async fn local_rows(
    b: &mut Bench,
    master: &Master,
    dir: &sshd::TempDir,
    big: &Path,
    big_sha: &str,
    tree: &Path,
    rss0: u64,
) {
    let out = |n: &str| -> PathBuf { dir.path(n) };
    let gib = dir.path("gib.bin");
    let (mut ours, mut base, mut pull, mut t_ours, mut t_nofs, mut t_base) =
        (vec![], vec![], vec![], vec![], vec![], vec![]);
    for i in 0..b.runs {
        let _ = std::fs::remove_file(out("cp.bin"));
        base.push(sh(&format!(
            "cp {} {}",
            big.display(),
            out("cp.bin").display()
        )));
        let t = Instant::now();
        let ctx = local(master).await;
        ctx.push_with(&big, out("ours.bin"), &tuned())
            .await
            .unwrap();
        ours.push(t.elapsed().as_secs_f64());
        assert_eq!(sha256(&out("ours.bin")), big_sha);
        let t = Instant::now();
        ctx.pull_with(out("ours.bin"), out("pulled.bin"), &tuned())
            .await
            .unwrap();
        pull.push(t.elapsed().as_secs_f64());
        assert_eq!(sha256(&out("pulled.bin")), big_sha);
        let _ = std::fs::remove_dir_all(out("tar"));
        std::fs::create_dir_all(out("tar")).unwrap();
        t_base.push(sh(&format!(
            "tar -C {} -cf - . | tar -C {} -xf -",
            tree.display(),
            out("tar").display()
        )));
        let t = Instant::now();
        ctx.push_tree_with(&tree, out(&format!("tree{i}")), &tuned().fsync(true))
            .await
            .unwrap();
        t_ours.push(t.elapsed().as_secs_f64());
        let t = Instant::now();
        ctx.push_tree_with(&tree, out(&format!("treenf{i}")), &tuned().fsync(false))
            .await
            .unwrap();
        t_nofs.push(t.elapsed().as_secs_f64());
        close(ctx).await;
        for f in ["ours.bin", "pulled.bin", "cp.bin"] {
            let _ = std::fs::remove_file(out(f));
        }
    }
    let cp = median(base);
    b.row("local_cp_256m_s", "local: cp 256 MiB", cp, None);
    b.row(
        "local_push_256m_s",
        "local: connect + push 256 MiB (default: no fsync)",
        median(ours),
        Some(cp),
    );
    b.row(
        "local_pull_256m_s",
        "local: pull 256 MiB (no fsync)",
        median(pull),
        Some(cp),
    );
    let tar = median(t_base);
    b.row(
        "local_tar_tree_s",
        "local: tar | tar -x, 1,000 x 4 KiB",
        tar,
        None,
    );
    b.row(
        "local_push_tree_s",
        "local: push_tree 1,000 x 4 KiB (fsync of every file)",
        median(t_ours),
        Some(tar),
    );
    b.row(
        "local_push_tree_nofsync_s",
        "local: push_tree 1,000 x 4 KiB (no fsync)",
        median(t_nofs),
        Some(tar),
    );

    // ---- a call during a 1 GiB push, memory ----
    let ctx = local(master).await;
    let d = calls_during_push(&ctx, &gib, &out("gib.out")).await;
    close(ctx).await;
    let _ = std::fs::remove_file(out("gib.out"));
    b.note(
        "local_call_during_1g_push_ms",
        "local: call latency during a 1 GiB push (default: no fsync; target: max < 50 ms)",
        d.lat.text(),
        d.lat.json(),
    );
    b.note(
        "local_rss_during_1g_push_kib",
        "local: peak RSS during it above the idle figure",
        d.rss_text(),
        json!({"child_above": d.child_above, "master_above": d.master_above,
               "child_before": d.child_before, "master_before": d.master_before,
               "master_at_start": rss0, "window": d.window}),
    );

    // ---- 10 contexts under one intermediate (64 MiB: 10 copies each way
    // fit the lead's three minutes) ----
    let fan_src = dir.path("fan64.bin");
    sh(&format!(
        "head -c {} {} > {}",
        64u64 << 20,
        big.display(),
        fan_src.display()
    ));
    let via = local(master).await;
    let mut leaves = Vec::new();
    for i in 0..10 {
        let c = master
            .connect(
                ConnectOptions::new(Method::Local(LocalOptions::new(PY)))
                    .name(format!("leaf{i}"))
                    .via(&via),
            )
            .await
            .unwrap();
        let d = out(&format!("leaf{i}"));
        std::fs::create_dir_all(&d).unwrap();
        let _: () = c
            .call("os", "chdir", (d.display().to_string(),))
            .await
            .unwrap();
        leaves.push(c);
    }
    let mut fan = Vec::new();
    let mut each = Vec::new();
    let opts = tuned().fsync(false);
    let mut link = 0;
    for _ in 0..b.runs {
        let before = link_bytes(master).await;
        let t = Instant::now();
        let r = via
            .push_fanout(&leaves, &fan_src, "fan.bin", false, &opts)
            .await
            .unwrap();
        fan.push(t.elapsed().as_secs_f64());
        link = link_bytes(master).await - before;
        assert!(r.iter().all(|(_, r)| r.is_ok()));
        let t = Instant::now();
        let pushes = leaves
            .iter()
            .map(|l| l.push_with(&fan_src, "each.bin", &opts));
        for r in futures::future::join_all(pushes).await {
            r.unwrap();
        }
        each.push(t.elapsed().as_secs_f64());
    }
    let e = median(each);
    b.row(
        "fanout10_each_s",
        "10 leaves under one intermediate: 10 pushes of 64 MiB",
        e,
        None,
    );
    b.row(
        "fanout10_relay_s",
        "10 leaves under one intermediate: push_fanout of 64 MiB",
        median(fan),
        Some(e),
    );
    let once = link as f64 / (64u64 << 20) as f64;
    b.done(
        "pushing one file to 10 contexts under one intermediate moves it across the master's link once (byte counter)",
        format!("{:.1} MiB written to the master's links for a 64 MiB file ({once:.3}x)", link as f64 / (1 << 20) as f64),
        "once (<= 1.05x the file)",
        (1.0..=1.05).contains(&once),
    );
    // The intermediate reaps its leaves as it exits and is reaped by us
    // some seconds later: their CPU (about 5 s) then lands in our
    // children's counters. Wait for that here, not in the next row's
    // "CPU seconds".
    let pid: u32 = via.call("os", "getpid", ()).await.unwrap_or(0);
    close(via).await;
    for _ in 0..100 {
        if pid == 0 || !Path::new(&format!("/proc/{pid}")).exists() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn ssh_rows(
    b: &mut Bench,
    master: &Master,
    dir: &sshd::TempDir,
    big: &Path,
    big_sha: &str,
    tree: &Path,
) {
    let server = sshd::Sshd::start(false);
    let ssh = format!(
        "ssh -i {} -p {} -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null \
         -o BatchMode=yes -o LogLevel=ERROR root@127.0.0.1",
        server.key.display(),
        server.port
    );
    let scp = format!(
        "scp -O -q -i {} -P {} -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null \
         -o BatchMode=yes -o LogLevel=ERROR",
        server.key.display(),
        server.port
    );
    let opts = || root_ssh(&server);
    let out = |n: &str| -> PathBuf { dir.path(n) };
    // The default (no fsync) against `cat > f` and `tar -x`, which do not
    // fsync either; the fsync rows beside `cat > f && sync f`.
    let (mut cat, mut catsync, mut scpt, mut ours, mut pull, mut catback, mut nofs, mut fs) = (
        vec![],
        vec![],
        vec![],
        vec![],
        vec![],
        vec![],
        vec![],
        vec![],
    );
    let (mut tar, mut scpr, mut tours, mut tnofs, mut tfs) =
        (vec![], vec![], vec![], vec![], vec![]);
    let (mut same, mut pulled_same) = (true, true);
    // CPU seconds of the first `cat` and of the first connect + push, all
    // processes on both sides (what two shared cores have to give).
    let (me, daemon) = (std::process::id(), server.pid());
    let (mut cat_cpu, mut ours_cpu) = (Vec::new(), Vec::new());
    for i in 0..b.runs {
        settle_memory(dir);
        let t0 = (cpu::times(me), cpu::times(daemon));
        cat.push(sh(&format!(
            "{ssh} 'cat > {}' < {}",
            out("cat.bin").display(),
            big.display()
        )));
        // The sshd session is reaped by the daemon just after ssh exits.
        tokio::time::sleep(Duration::from_millis(400)).await;
        let (m, d) = (cpu::times(me), cpu::times(daemon));
        cat_cpu.push(m.reaped - t0.0.reaped + d.reaped - t0.1.reaped);
        let _ = std::fs::remove_file(out("cat.bin"));
        settle_memory(dir);
        catsync.push(sh(&format!(
            "{ssh} 'cat > {0} && sync {0}' < {1}",
            out("catsync.bin").display(),
            big.display()
        )));
        let _ = std::fs::remove_file(out("catsync.bin"));
        settle_memory(dir);
        scpt.push(sh(&format!(
            "{scp} {} root@127.0.0.1:{}",
            big.display(),
            out("scp.bin").display()
        )));
        let _ = std::fs::remove_file(out("scp.bin"));
        settle_memory(dir);
        let t = Instant::now();
        let m0 = cpu::times(me).own();
        let ctx = master
            .connect(copy_like(Method::Ssh(opts())))
            .await
            .unwrap();
        ctx.push_with(big, out("ours.bin"), &tuned()).await.unwrap();
        ours.push(t.elapsed().as_secs_f64());
        ours_cpu.push(cpu::times(me).own() - m0 + session_cpu(&ctx, me, daemon).await);
        same &= sha256(&out("ours.bin")) == big_sha;
        same &= mode(&out("ours.bin")) == mode(big);
        settle_memory(dir);
        let t = Instant::now();
        ctx.push_with(big, out("nofs.bin"), &tuned().fsync(false))
            .await
            .unwrap();
        nofs.push(t.elapsed().as_secs_f64());
        let _ = std::fs::remove_file(out("nofs.bin"));
        settle_memory(dir);
        let t = Instant::now();
        ctx.push_with(big, out("fs.bin"), &tuned().fsync(true))
            .await
            .unwrap();
        fs.push(t.elapsed().as_secs_f64());
        same &= sha256(&out("fs.bin")) == big_sha;
        let _ = std::fs::remove_file(out("fs.bin"));
        settle_memory(dir);
        catback.push(sh(&format!(
            "{ssh} 'cat {}' > {}",
            out("ours.bin").display(),
            out("catback.bin").display()
        )));
        let _ = std::fs::remove_file(out("catback.bin"));
        settle_memory(dir);
        let t = Instant::now();
        ctx.pull_with(out("ours.bin"), out("pulled.bin"), &tuned())
            .await
            .unwrap();
        pull.push(t.elapsed().as_secs_f64());
        pulled_same &= sha256(&out("pulled.bin")) == big_sha;
        close(ctx).await;
        let d = out(&format!("sshtar{i}"));
        std::fs::create_dir_all(&d).unwrap();
        tar.push(sh(&format!(
            "tar -C {} -cf - . | {ssh} tar -C {} -xf -",
            tree.display(),
            d.display()
        )));
        scpr.push(sh(&format!(
            "{scp} -r {} root@127.0.0.1:{}",
            tree.display(),
            out(&format!("scpr{i}")).display()
        )));
        let t = Instant::now();
        let ctx = master
            .connect(copy_like(Method::Ssh(opts())))
            .await
            .unwrap();
        ctx.push_tree_with(tree, out(&format!("sshtree{i}")), &tuned())
            .await
            .unwrap();
        tours.push(t.elapsed().as_secs_f64());
        let t = Instant::now();
        ctx.push_tree_with(tree, out(&format!("sshtreenf{i}")), &tuned().fsync(false))
            .await
            .unwrap();
        tnofs.push(t.elapsed().as_secs_f64());
        let t = Instant::now();
        ctx.push_tree_with(tree, out(&format!("sshtreefs{i}")), &tuned().fsync(true))
            .await
            .unwrap();
        tfs.push(t.elapsed().as_secs_f64());
        close(ctx).await;
        for f in [
            "cat.bin",
            "catsync.bin",
            "scp.bin",
            "ours.bin",
            "pulled.bin",
            "catback.bin",
        ] {
            let _ = std::fs::remove_file(out(f));
        }
    }
    let c = median(cat);
    b.row(
        "ssh_cat_256m_s",
        "ssh: ssh 'cat > f' < 256 MiB (no fsync)",
        c,
        None,
    );
    let cs = median(catsync);
    b.row(
        "ssh_cat_sync_256m_s",
        "ssh: ssh 'cat > f && sync f' < 256 MiB (fsync)",
        cs,
        None,
    );
    b.row(
        "ssh_scp_256m_s",
        "ssh: scp 256 MiB (no fsync)",
        median(scpt),
        Some(c),
    );
    let o = median(ours.clone());
    b.row(
        "ssh_push_256m_s",
        "ssh: connect + push 256 MiB (default: no fsync), vs cat",
        o,
        Some(c),
    );
    let r = o / c;
    b.done(
        "a 256 MiB file pushed over ssh (connect included; default, no fsync) vs `ssh host 'cat > f'` (no fsync); same SHA-256 and mode; pulled back, it matches",
        format!(
            "{r:.2}x ({o:.3} s vs {c:.3} s); SHA-256 and mode {}; pulled back {}",
            if same { "same" } else { "DIFFERENT" },
            if pulled_same { "matches" } else { "DIFFERS" }
        ),
        "<= 1.15x, same, matches",
        r <= 1.15 && same && pulled_same,
    );
    let (cc, oc) = (median(cat_cpu), median(ours_cpu));
    b.row(
        "ssh_cat_256m_cpu_s",
        "ssh: CPU seconds (all processes, both sides) of ssh 'cat > f' < 256 MiB",
        cc,
        None,
    );
    b.row(
        "ssh_push_256m_cpu_s",
        "ssh: CPU seconds (all processes, both sides) of connect + push 256 MiB, vs cat",
        oc,
        Some(cc),
    );
    let n = median(nofs);
    b.row(
        "ssh_push_256m_nofsync_s",
        "ssh: push 256 MiB, no fsync, connected (no connect), vs cat (with its connect)",
        n,
        Some(c),
    );
    let f = median(fs);
    b.row(
        "ssh_push_256m_fsync_s",
        "ssh: push 256 MiB with fsync, connected, vs cat && sync f (with its connect)",
        f,
        Some(cs),
    );
    let cb = median(catback);
    b.row(
        "ssh_cat_back_256m_s",
        "ssh: ssh 'cat f' > 256 MiB",
        cb,
        None,
    );
    b.row(
        "ssh_pull_256m_s",
        "ssh: pull 256 MiB (connected, no fsync)",
        median(pull),
        Some(cb),
    );
    let t = median(tar);
    b.row(
        "ssh_tar_tree_s",
        "ssh: tar | ssh tar -x, 1,000 x 4 KiB (no fsync)",
        t,
        None,
    );
    b.row(
        "ssh_scp_r_tree_s",
        "ssh: scp -r, 1,000 x 4 KiB (no fsync)",
        median(scpr),
        Some(t),
    );
    let to = median(tours.clone());
    b.row(
        "ssh_push_tree_s",
        "ssh: connect + push_tree 1,000 x 4 KiB (default: no fsync), vs tar",
        to,
        Some(t),
    );
    b.done(
        "a 1,000-file tree pushes (over ssh, connect included; default, no fsync) vs `tar | ssh tar -x` (no fsync)",
        format!("{:.2}x ({to:.3} s vs {t:.3} s)", to / t),
        "<= 1.5x",
        to / t <= 1.5,
    );
    b.row(
        "ssh_push_tree_nofsync_s",
        "ssh: push_tree 1,000 x 4 KiB, no fsync, connected (no connect), vs tar (with its connect)",
        median(tnofs),
        Some(t),
    );
    let tf = median(tfs);
    b.row(
        "ssh_push_tree_fsync_s",
        "ssh: push_tree 1,000 x 4 KiB with fsync of every file, connected, vs tar (no fsync: not like for like)",
        tf,
        Some(t),
    );

    resume_over_ssh(b, master, dir, big, big_sha, &opts).await;

    // A call during a 1 GiB push over ssh.
    let ctx = master
        .connect(copy_like(Method::Ssh(opts())))
        .await
        .unwrap();
    let gib = dir.path("gib.bin");
    let d = calls_during_push(&ctx, &gib, &out("gib.ssh")).await;
    close(ctx).await;
    let _ = std::fs::remove_file(out("gib.ssh"));
    b.note(
        "ssh_call_during_1g_push_ms",
        "ssh: call latency during a 1 GiB push (default: no fsync; ssh's default cipher rekeys once in it; target: max < 50 ms)",
        d.lat.text(),
        d.lat.json(),
    );
    b.note(
        "ssh_rss_during_1g_push_kib",
        "ssh: peak RSS during it above the idle figure",
        d.rss_text(),
        json!({"child_above": d.child_above, "master_above": d.master_above,
               "child_before": d.child_before, "master_before": d.master_before,
               "window": d.window}),
    );
    b.done(
        "a call during a 1 GiB push returns within 50 ms (ssh; default cipher chacha20-poly1305, which rekeys at 1 GiB: docs/PERFORMANCE.md)",
        d.lat.text(),
        "max <= 50 ms",
        d.lat.max <= 50.0,
    );
    b.done(
        "the master's and the child's RSS stay within the window plus a few MiB (ssh, 1 GiB push)",
        d.rss_text(),
        "<= window + 4 MiB above idle",
        d.rss_met(),
    );
}

/// Options for root at the test sshd on 127.0.0.1, child Python `PY`.
/// How `econtext copy` and `fetch` connect (src/cli/transfer.rs): the
/// lean start with `econtext.files` in the payload. `FB_PLAIN=1`: the
/// default `ConnectOptions` instead (a user's `Master::connect`).
fn copy_like(method: Method) -> ConnectOptions {
    if std::env::var_os("FB_PLAIN").is_some() {
        return ConnectOptions::new(method);
    }
    ConnectOptions::new(method)
        .lean_start(true)
        .preload(&["econtext.files"])
}

fn root_ssh(server: &sshd::Sshd) -> SshOptions {
    let mut o = SshOptions::new("127.0.0.1");
    o.user = Some("root".into());
    o.port = Some(server.port);
    o.identity_file = Some(server.key.display().to_string());
    o.check_host_keys = HostKeyCheck::Ignore;
    o.python = PY.into();
    o
}

async fn ssh_latency(b: &mut Bench, master: &Master, dir: &sshd::TempDir) {
    let server = sshd::Sshd::start(false);
    let mut o = root_ssh(&server);
    if let Ok(c) = std::env::var("FB_CIPHER") {
        o.ssh_options.push(format!("Ciphers={c}"));
    }
    for _ in 0..b.runs {
        let ctx = master
            .connect(copy_like(Method::Ssh(o.clone())))
            .await
            .unwrap();
        let mut idle = Vec::new();
        for _ in 0..400 {
            let t = Instant::now();
            let _: u32 = ctx.call("os", "getpid", ()).await.unwrap();
            idle.push(t.elapsed().as_secs_f64() * 1e3);
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        println!("idle: {}", Latency::of(idle).text());
        let src = match std::env::var("FB_SIZE") {
            Ok(n) => {
                let p = dir.path("small.bin");
                sh(&format!(
                    "head -c {n} {} > {}",
                    dir.path("gib.bin").display(),
                    p.display()
                ));
                p
            }
            Err(_) => dir.path("gib.bin"),
        };
        let d = calls_during_push(&ctx, &src, &dir.path("gib.ssh")).await;
        close(ctx).await;
        let _ = std::fs::remove_file(dir.path("gib.ssh"));
        println!("{}; {}", d.lat.text(), d.rss_text());
    }
}

fn mode(p: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p)
        .map(|m| m.permissions().mode() & 0o7777)
        .unwrap_or(0)
}

/// Temporary files (`.NAME.ec-KEY.part`) directly in `dir`.
fn temporaries(dir: &Path) -> usize {
    std::fs::read_dir(dir)
        .map(|d| {
            d.filter_map(Result::ok)
                .filter(|e| {
                    let n = e.file_name().to_string_lossy().into_owned();
                    n.starts_with('.') && n.contains(".ec-") && n.ends_with(".part")
                })
                .count()
        })
        .unwrap_or(0)
}

/// Kills the child midway through a 256 MiB push over ssh, then pushes
/// again: it must resume, end with the right file, and leave no temporary.
async fn resume_over_ssh(
    b: &mut Bench,
    master: &Master,
    dir: &sshd::TempDir,
    big: &Path,
    big_sha: &str,
    opts: &dyn Fn() -> SshOptions,
) {
    let dest = dir.path("resumed.bin");
    let ctx = master
        .connect(copy_like(Method::Ssh(opts())))
        .await
        .unwrap();
    let pid: i32 = ctx.call("os", "getpid", ()).await.unwrap();
    let killed = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let k = killed.clone();
    let o = tuned().progress(move |p| {
        if p.bytes > BIG / 3 && !k.swap(true, std::sync::atomic::Ordering::SeqCst) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    });
    let first = ctx.push_with(big, &dest, &o).await;
    close(ctx).await;
    let kept = temporaries(&dir.0);
    let ctx = master
        .connect(copy_like(Method::Ssh(opts())))
        .await
        .unwrap();
    let again = ctx.push_with(big, &dest, &tuned()).await;
    close(ctx).await;
    let resumed = again.as_ref().map(|r| r.bytes_resumed).unwrap_or(0);
    let right = again.is_ok() && sha256(&dest) == big_sha;
    let left = temporaries(&dir.0);
    let _ = std::fs::remove_file(&dest);
    b.done(
        "killing the transfer midway and running it again resumes and ends with the right file; no temporary file remains (ssh, 256 MiB)",
        format!(
            "first push {}; {kept} temporary kept; rerun resumed {:.1} MiB, file {}, {left} temporaries left",
            if first.is_err() { "failed (killed)" } else { "finished (not killed?)" },
            resumed as f64 / (1 << 20) as f64,
            if right { "right" } else { "WRONG" }
        ),
        "resumed > 0, right file, 0 left",
        first.is_err() && resumed > 0 && right && left == 0,
    );
}

/// Bytes the master has written to its links (RouterStats::link_bytes).
async fn link_bytes(master: &Master) -> u64 {
    master
        .router()
        .send(econtext::actors::router::GetStats)
        .await
        .map(|s| s.link_bytes)
        .unwrap_or(0)
}

/// `--breakdown`: where a connect + push over ssh spends its time.
async fn ssh_breakdown(master: &Master, dir: &sshd::TempDir, big: &Path, tree: &Path) {
    let server = sshd::Sshd::start(false);
    let o = root_ssh(&server);
    let tiny = dir.path("tiny.bin");
    std::fs::write(&tiny, b"x").unwrap();
    let ssh = format!(
        "ssh -i {} -p {} -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null \
         -o BatchMode=yes -o LogLevel=ERROR root@127.0.0.1",
        server.key.display(),
        server.port
    );
    for i in 0..2 {
        let floor = sh(&format!("{ssh} true"));
        let py = sh(&format!("{ssh} {PY} -c pass"));
        println!("ssh true {floor:.3} s, ssh {PY} -c pass {py:.3} s");
        let t = Instant::now();
        let ctx = master
            .connect(copy_like(Method::Ssh(o.clone())))
            .await
            .unwrap();
        let connect = t.elapsed().as_secs_f64();
        let t = Instant::now();
        ctx.push(&tiny, dir.path("tiny.out")).await.unwrap();
        let first = t.elapsed().as_secs_f64();
        let t = Instant::now();
        ctx.push(&tiny, dir.path("tiny.out")).await.unwrap();
        let second = t.elapsed().as_secs_f64();
        let t = Instant::now();
        let _: u32 = ctx.call("os", "getpid", ()).await.unwrap();
        let call = t.elapsed().as_secs_f64();
        let mut row = format!(
            "connect {connect:.3} s, first 1-byte push {first:.3} s, second {second:.3} s, a call {call:.4} s"
        );
        for (name, fsync) in [("tree fsync", true), ("tree no fsync", false)] {
            let t = Instant::now();
            ctx.push_tree_with(
                tree,
                dir.path(&format!("bd-{i}-{fsync}")),
                &tuned().fsync(fsync),
            )
            .await
            .unwrap();
            row += &format!(", {name} {:.3} s", t.elapsed().as_secs_f64());
        }
        for (name, fsync) in [("256 MiB fsync", true), ("256 MiB no fsync", false)] {
            let t = Instant::now();
            ctx.push_with(big, dir.path("bd.bin"), &tuned().fsync(fsync))
                .await
                .unwrap();
            row += &format!(", {name} {:.3} s", t.elapsed().as_secs_f64());
            let _ = std::fs::remove_file(dir.path("bd.bin"));
        }
        close(ctx).await;
        println!("{row}");
    }
}

/// Seconds to connect over ssh and push `src` (a tree when `tree`) to
/// `dest`, then close the context (not timed).
async fn connect_and_push(
    master: &Master,
    o: &SshOptions,
    src: &Path,
    dest: &Path,
    tree: bool,
    fsync: bool,
) -> f64 {
    let t = Instant::now();
    let ctx = master
        .connect(copy_like(Method::Ssh(o.clone())))
        .await
        .unwrap();
    let opts = tuned().fsync(fsync);
    if tree {
        ctx.push_tree_with(src, dest, &opts).await.unwrap();
    } else {
        ctx.push_with(src, dest, &opts).await.unwrap();
    }
    let wall = t.elapsed().as_secs_f64();
    close(ctx).await;
    wall
}

/// `--cpu`: CPU seconds per side of `ssh cat` / `tar | ssh` and of our
/// pushes over ssh, then per process and thread of a connected push.
async fn ssh_cpu(runs: usize, master: &Master, dir: &sshd::TempDir, big: &Path, tree: &Path) {
    let connected_only = std::env::args().any(|a| a == "--connected");
    let runs = if connected_only { 0 } else { runs };
    let server = sshd::Sshd::start(false);
    let daemon = server.pid();
    let me = std::process::id();
    // FB_CIPHER=NAME: both ssh and our pushes use that cipher.
    let cipher = std::env::var("FB_CIPHER").ok();
    let ssh = format!(
        "ssh -i {} -p {} -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null \
         -o BatchMode=yes -o LogLevel=ERROR {} root@127.0.0.1",
        server.key.display(),
        server.port,
        cipher
            .as_ref()
            .map(|c| format!("-c {c}"))
            .unwrap_or_default()
    );
    let mut o = root_ssh(&server);
    if let Some(c) = &cipher {
        o.ssh_options.push(format!("Ciphers={c}"));
    }
    // Whole runs: our own CPU, our reaped children's (sh, ssh), and the
    // daemon's reaped sessions (sshd, python, cat, tar).
    let settle = || tokio::time::sleep(Duration::from_millis(400));
    let whole = |t0: (cpu::Times, cpu::Times), t1: (cpu::Times, cpu::Times)| {
        let (ours, kids, srv) = (
            t1.0.own() - t0.0.own(),
            t1.0.reaped - t0.0.reaped,
            t1.1.reaped - t0.1.reaped,
        );
        format!(
            "master {ours:.2} s, client children {kids:.2} s, server side {srv:.2} s, total {:.2} s",
            ours + kids + srv
        )
    };
    let snap = || (cpu::times(me), cpu::times(daemon));
    for run in 0..runs {
        let untar = dir.path(&format!("cputar{run}"));
        std::fs::create_dir_all(&untar).unwrap();
        // (what, the plain ssh command it is compared with, its label,
        // source, a tree?)
        let cases = [
            (
                "push 256 MiB",
                format!(
                    "{ssh} 'cat > {}' < {}",
                    dir.path("c.bin").display(),
                    big.display()
                ),
                "ssh 'cat > f' < 256 MiB",
                big,
                false,
            ),
            (
                "push_tree 1,000 files",
                format!(
                    "tar -C {} -cf - . | {ssh} tar -C {} -xf -",
                    tree.display(),
                    untar.display()
                ),
                "tar | ssh tar -x, 1,000 files",
                tree,
                true,
            ),
        ];
        for (what, command, label, src, is_tree) in cases {
            let _ = std::fs::remove_file(dir.path("c.bin"));
            settle_memory(dir);
            let t0 = snap();
            let wall = sh(&command);
            settle().await;
            println!("[{run}] {label} ({wall:.2} s): {}", whole(t0, snap()));
            for fsync in [false, true] {
                let dest = match is_tree {
                    true => dir.path(&format!("cputree{run}{fsync}")),
                    false => dir.path("e.bin"),
                };
                let _ = std::fs::remove_file(dir.path("e.bin"));
                settle_memory(dir);
                let t0 = snap();
                let wall = connect_and_push(master, &o, src, &dest, is_tree, fsync).await;
                if !is_tree {
                    let _ = std::fs::remove_file(&dest);
                }
                settle().await;
                println!(
                    "[{run}] connect + {what}, fsync {fsync} ({wall:.2} s): {}",
                    whole(t0, snap())
                );
            }
        }
    }
    // One connected push, per process and thread.
    let ctx = master
        .connect(copy_like(Method::Ssh(o.clone())))
        .await
        .unwrap();
    connected_cpu(&ctx, dir, big, Some(daemon)).await;
    close(ctx).await;
}

/// CPU seconds a context over ssh has cost outside the master's own
/// process: its ssh client, the child and the sshd session processes
/// above it, each over its whole life so far (with what they reaped).
async fn session_cpu(ctx: &Context, me: u32, daemon: u32) -> f64 {
    let child: u32 = ctx.call("os", "getpid", ()).await.unwrap();
    let mut pids = cpu::children_named(me, "ssh");
    pids.extend(cpu::chain_to(child, daemon));
    let each: Vec<(u32, f64)> = pids
        .into_iter()
        .map(|p| {
            let t = cpu::times(p);
            (p, t.own() + t.reaped)
        })
        .collect();
    if std::env::var_os("FB_DEBUG").is_some() {
        eprintln!("files_bench: session CPU per process (pid, s): {each:?}");
    }
    each.iter().map(|(_, s)| s).sum()
}

/// Connected pushes of `big` to `ctx`, CPU per process and thread: the
/// master, its ssh, and the child with the sshd session above it (up to
/// `daemon`). `--connected` does only this (`--runs` pushes without
/// fsync, or one each way otherwise), `--no-ssh` with it to a local
/// child; `--pause` prints the pids and waits for a line on stdin first,
/// to attach `perf record -p` or `strace -c -f -p`.
async fn connected_cpu(ctx: &Context, dir: &sshd::TempDir, big: &Path, daemon: Option<u32>) {
    let args: Vec<String> = std::env::args().collect();
    let me = std::process::id();
    let warm = dir.path("warm.bin");
    std::fs::write(&warm, b"warm").unwrap();
    ctx.push(&warm, dir.path("warm.out")).await.unwrap();
    let child: u32 = ctx.call("os", "getpid", ()).await.unwrap();
    let mut procs = vec![("master".to_string(), me)];
    for c in cpu::children_named(me, "ssh") {
        procs.push(("ssh".into(), c));
    }
    let chain = match daemon {
        Some(d) => cpu::chain_to(child, d),
        None => vec![child],
    };
    for (i, p) in chain.into_iter().enumerate() {
        procs.push((
            if i == 0 {
                "python".into()
            } else {
                "sshd session".into()
            },
            p,
        ));
    }
    if args.iter().any(|a| a == "--pause") {
        let pids: Vec<String> = procs.iter().map(|(l, p)| format!("{l} {p}")).collect();
        eprintln!("pids: {}; press enter to push", pids.join(", "));
        let mut line = String::new();
        let _ = std::io::stdin().read_line(&mut line);
    }
    let connected = args.iter().any(|a| a == "--connected");
    let runs = args
        .iter()
        .position(|a| a == "--runs")
        .and_then(|i| args.get(i + 1)?.parse().ok())
        .unwrap_or(1);
    let modes: Vec<bool> = match connected {
        true => vec![false; runs],
        false => vec![false, true],
    };
    for fsync in modes {
        let before = cpu::Snapshot::take(&procs);
        let t = Instant::now();
        ctx.push_with(big, dir.path("e.bin"), &tuned().fsync(fsync))
            .await
            .unwrap();
        let wall = t.elapsed().as_secs_f64();
        println!(
            "connected push 256 MiB, fsync {fsync} ({wall:.2} s):\n{}",
            cpu::Snapshot::take(&procs).since(&before)
        );
        // Not renamed over next time: freeing its pages would count.
        let _ = std::fs::remove_file(dir.path("e.bin"));
    }
}
