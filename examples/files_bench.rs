//! The file-transfer benchmark (issue 15), in one sitting beside the
//! usual tools: one 256 MiB file and a 1,000-file tree of 4 KiB files,
//! local and over ssh (a throwaway sshd on 127.0.0.1, as the tests use),
//! beside `cp`/`tar | tar`, `ssh cat`, `scp` and `tar | ssh tar -x`; the
//! latency of a call during a 1 GiB push with the master's and the
//! child's peak RSS; and one file to 10 contexts under one intermediate.
//!
//! `cargo run --release --example files_bench [-- --runs N] [--json] [--no-ssh | --only-ssh]
//! [--window BYTES] [--chunk BYTES]`
//!
//! ssh needs root, sshd, ssh, scp and ssh-keygen (what `./scripts/test`
//! installs); without them those rows print SKIP.

#[path = "../tests/common/sshd.rs"]
#[allow(dead_code)]
mod sshd;

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

/// Calls `os.getpid` every 10 ms while `ctx` receives a 1 GiB push;
/// returns the call latencies and the peak RSS of the child and of this
/// process (KiB).
async fn calls_during_push(ctx: &Context, src: &Path, dest: &Path) -> (Latency, u64, u64) {
    let pid: u32 = ctx.call("os", "getpid", ()).await.unwrap();
    let (c, s, d) = (ctx.clone(), src.to_path_buf(), dest.to_path_buf());
    let push = actix_rt::spawn(async move { c.push_with(&s, &d, &tuned().fsync(false)).await });
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut lat = Vec::new();
    while !push.is_finished() {
        let t = Instant::now();
        let _: u32 = ctx.call("os", "getpid", ()).await.unwrap();
        lat.push(t.elapsed().as_secs_f64() * 1e3);
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let child_hwm = status_kib(pid, "VmHWM:");
    push.await.unwrap().expect("1 GiB push");
    (
        Latency::of(lat),
        child_hwm,
        status_kib(std::process::id(), "VmHWM:"),
    )
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
    let mut b = Bench {
        runs,
        rows: Vec::new(),
        json: serde_json::Map::new(),
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
    let big_sha = sha256(&big);
    let master = Master::new(MasterOptions::default());
    let rss0 = status_kib(std::process::id(), "VmHWM:");

    if !only_ssh {
        local_rows(&mut b, &master, &dir, &big, &big_sha, &tree, rss0).await;
    }

    // ---- ssh ----
    let missing = sshd::missing(&["/usr/sbin/sshd", "ssh", "scp", "ssh-keygen"]);
    match (no_ssh, missing) {
        (true, _) => eprintln!("SKIP: files_bench ssh rows: --no-ssh"),
        (false, Some(why)) => eprintln!("SKIP: files_bench ssh rows: {why}"),
        (false, None) => ssh_rows(&mut b, &master, &dir, &big, &big_sha, &tree).await,
    }

    if as_json {
        println!("{}", serde_json::Value::Object(b.json));
    } else {
        println!("| workload | time |\n|---|---|");
        for (k, v) in &b.rows {
            println!("| {k} | {v} |");
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
        ctx.push_tree_with(&tree, out(&format!("tree{i}")), &tuned())
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
        "local: connect + push 256 MiB",
        median(ours),
        Some(cp),
    );
    b.row(
        "local_pull_256m_s",
        "local: pull 256 MiB",
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
        "local: push_tree 1,000 x 4 KiB (fsync)",
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
    let (lat, child, me) = calls_during_push(&ctx, &gib, &out("gib.out")).await;
    close(ctx).await;
    let _ = std::fs::remove_file(out("gib.out"));
    b.note(
        "local_call_during_1g_push_ms",
        "local: call latency during a 1 GiB push (target: max < 50 ms)",
        lat.text(),
        lat.json(),
    );
    b.note(
        "local_rss_during_1g_push_kib",
        "local: peak RSS during it (child / master, master before)",
        format!(
            "{:.1} / {:.1} MiB ({:.1} MiB before)",
            child as f64 / 1024.0,
            me as f64 / 1024.0,
            rss0 as f64 / 1024.0
        ),
        json!({"child": child, "master": me, "master_before": rss0}),
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
    for _ in 0..b.runs {
        let t = Instant::now();
        let r = via
            .push_fanout(&leaves, &fan_src, "fan.bin", false, &opts)
            .await
            .unwrap();
        fan.push(t.elapsed().as_secs_f64());
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
    close(via).await;
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
    let opts = || {
        let mut o = SshOptions::new("127.0.0.1");
        o.user = Some("root".into());
        o.port = Some(server.port);
        o.identity_file = Some(server.key.display().to_string());
        o.check_host_keys = HostKeyCheck::Ignore;
        o.python = PY.into();
        o
    };
    let out = |n: &str| -> PathBuf { dir.path(n) };
    let (mut cat, mut scpt, mut ours, mut pull, mut catback, mut nofs) =
        (vec![], vec![], vec![], vec![], vec![], vec![]);
    let (mut tar, mut scpr, mut tours, mut tnofs) = (vec![], vec![], vec![], vec![]);
    for i in 0..b.runs {
        cat.push(sh(&format!(
            "{ssh} 'cat > {}' < {}",
            out("cat.bin").display(),
            big.display()
        )));
        scpt.push(sh(&format!(
            "{scp} {} root@127.0.0.1:{}",
            big.display(),
            out("scp.bin").display()
        )));
        let t = Instant::now();
        let ctx = master
            .connect(ConnectOptions::new(Method::Ssh(opts())))
            .await
            .unwrap();
        ctx.push_with(big, out("ours.bin"), &tuned()).await.unwrap();
        ours.push(t.elapsed().as_secs_f64());
        assert_eq!(sha256(&out("ours.bin")), big_sha);
        // `cat > f` does not fsync: the like-for-like row.
        let t = Instant::now();
        ctx.push_with(big, out("nofs.bin"), &tuned().fsync(false))
            .await
            .unwrap();
        nofs.push(t.elapsed().as_secs_f64());
        let _ = std::fs::remove_file(out("nofs.bin"));
        catback.push(sh(&format!(
            "{ssh} 'cat {}' > {}",
            out("ours.bin").display(),
            out("catback.bin").display()
        )));
        let t = Instant::now();
        ctx.pull_with(out("ours.bin"), out("pulled.bin"), &tuned())
            .await
            .unwrap();
        pull.push(t.elapsed().as_secs_f64());
        assert_eq!(sha256(&out("pulled.bin")), big_sha);
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
            .connect(ConnectOptions::new(Method::Ssh(opts())))
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
        close(ctx).await;
        for f in [
            "cat.bin",
            "scp.bin",
            "ours.bin",
            "pulled.bin",
            "catback.bin",
        ] {
            let _ = std::fs::remove_file(out(f));
        }
    }
    let c = median(cat);
    b.row("ssh_cat_256m_s", "ssh: ssh 'cat > f' < 256 MiB", c, None);
    b.row("ssh_scp_256m_s", "ssh: scp 256 MiB", median(scpt), Some(c));
    b.row(
        "ssh_push_256m_s",
        "ssh: connect + push 256 MiB",
        median(ours),
        Some(c),
    );
    b.row(
        "ssh_push_256m_nofsync_s",
        "ssh: push 256 MiB, no fsync (connected; target: <= 1.15x cat)",
        median(nofs),
        Some(c),
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
        "ssh: pull 256 MiB (connected)",
        median(pull),
        Some(cb),
    );
    let t = median(tar);
    b.row(
        "ssh_tar_tree_s",
        "ssh: tar | ssh tar -x, 1,000 x 4 KiB",
        t,
        None,
    );
    b.row(
        "ssh_scp_r_tree_s",
        "ssh: scp -r, 1,000 x 4 KiB",
        median(scpr),
        Some(t),
    );
    b.row(
        "ssh_push_tree_s",
        "ssh: connect + push_tree 1,000 x 4 KiB (fsync)",
        median(tours),
        Some(t),
    );
    b.row(
        "ssh_push_tree_nofsync_s",
        "ssh: push_tree 1,000 x 4 KiB (no fsync, connected)",
        median(tnofs),
        Some(t),
    );

    // A call during a 1 GiB push over ssh.
    let ctx = master
        .connect(ConnectOptions::new(Method::Ssh(opts())))
        .await
        .unwrap();
    let gib = dir.path("gib.bin");
    let (lat, child, me) = calls_during_push(&ctx, &gib, &out("gib.ssh")).await;
    close(ctx).await;
    let _ = std::fs::remove_file(out("gib.ssh"));
    b.note(
        "ssh_call_during_1g_push_ms",
        "ssh: call latency during a 1 GiB push (target: max < 50 ms)",
        lat.text(),
        lat.json(),
    );
    b.note(
        "ssh_rss_during_1g_push_kib",
        "ssh: peak RSS (child / master)",
        format!(
            "{:.1} / {:.1} MiB",
            child as f64 / 1024.0,
            me as f64 / 1024.0
        ),
        json!({"child": child, "master": me}),
    );
}
