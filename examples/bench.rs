//! The local-child benchmark: the same workloads as ../shared/peer-bench
//! runs on Mitogen and execnet, printed as a table (and as JSON with
//! `--json`). Run it in the same sitting as peer-bench and compare ratios.
//!
//! `cargo run --release --example bench [-- --json] [--python PATH] [--children N] [--imports] [--spin-us N]`
//!
//! `--imports` runs the import rows only (20-module package, first call
//! into requests and into rich), beside `benches/mitogen_realpkg.py`.
//!
//! Every child runs /usr/bin/python3 (as peer-bench's children do) unless
//! --python says otherwise. The 20-module import workload uses peer-bench's
//! package at /tmp/mitobench/pkg when `setup.sh` has made it.

#[path = "common/mod.rs"]
mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use econtext::bootstrap::first_stage::python_c_arg;
use econtext::bootstrap::payload::{framed_payload, ChildConfig};
use econtext::{ConnectOptions, Context, LocalOptions, Master, MasterOptions, Method};
use futures::future::join_all;
use serde_json::json;

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

fn pct(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[((v.len() as f64 * p) as usize).min(v.len() - 1)]
}

fn vm_rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1).map(|n| n.parse().unwrap_or(0)))
        })
        .unwrap_or(0)
}

/// CPU seconds of a process from /proc/PID/stat (`self` for this one):
/// user + system, plus its waited-for children's when `with_children`
/// (a child's reaped first stage). Clock ticks are 100 per second here.
fn cpu_s(pid: &str, with_children: bool) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let rest: Vec<f64> = stat
        .rsplit_once(')')
        .map(|(_, r)| {
            r.split_whitespace()
                .map(|f| f.parse().unwrap_or(0.0))
                .collect()
        })
        .unwrap_or_default();
    let n = if with_children { 4 } else { 2 };
    rest.get(11..11 + n)
        .map_or(0.0, |t| t.iter().sum::<f64>() / 100.0)
}

/// User + system CPU seconds of this whole process (every thread), from
/// getrusage: microsecond resolution.
fn rusage_cpu_s() -> f64 {
    let r = nix::sys::resource::getrusage(nix::sys::resource::UsageWho::RUSAGE_SELF)
        .expect("getrusage");
    let tv = |t: nix::sys::time::TimeVal| t.tv_sec() as f64 + t.tv_usec() as f64 / 1e6;
    tv(r.user_time()) + tv(r.system_time())
}

async fn connect(master: &Master, python: &str) -> Context {
    master
        .local(LocalOptions::new(python.to_string()))
        .await
        .expect("connect")
}

/// A local context sent the core compiled on the master.
async fn connect_compiled(master: &Master, python: &str) -> Context {
    let method = Method::Local(LocalOptions::new(python.to_string()));
    master
        .connect(ConnectOptions::new(method).compiled_core(true))
        .await
        .expect("connect")
}

async fn close(ctx: Context) {
    let _ = ctx.shutdown().await;
    let _ = tokio::time::timeout(Duration::from_secs(5), ctx.dead()).await;
}

/// `/tmp/mitobench/realpkg/<version>`: the wheels `python` supports of
/// requests, rich and pygments, downloaded with its pip and unpacked,
/// plus tests/common/ecprobe.py. None (with a SKIP line) without the
/// registry.
fn real_packages(python: &str) -> Option<PathBuf> {
    let version = std::process::Command::new(python)
        .args(["-c", "import platform; print(platform.python_version())"])
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())?;
    let dir = PathBuf::from(format!("/tmp/mitobench/realpkg/{version}"));
    if !dir.join("ecprobe.py").exists() {
        let wheels = PathBuf::from(format!("/tmp/mitobench/realpkg/wheels-{version}"));
        let ok = std::process::Command::new(python)
            .args(["-m", "pip", "download", "-q", "--disable-pip-version-check"])
            .args(["--only-binary=:all:", "-d"])
            .arg(&wheels)
            .args(["requests", "rich", "pygments"])
            .status()
            .is_ok_and(|s| s.success())
            && std::process::Command::new(python)
                .args([
                    "-c",
                    "import sys, os, zipfile\n[zipfile.ZipFile(os.path.join(sys.argv[1], w)).extractall(sys.argv[2]) for w in os.listdir(sys.argv[1])]",
                ])
                .arg(&wheels)
                .arg(&dir)
                .status()
                .is_ok_and(|s| s.success());
        if !ok {
            eprintln!("SKIP: real-package workloads: cannot download wheels with {python} -m pip");
            return None;
        }
        std::fs::write(
            dir.join("ecprobe.py"),
            include_str!("../tests/common/ecprobe.py"),
        )
        .ok()?;
    }
    Some(dir)
}

#[actix::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let as_json = args.iter().any(|a| a == "--json");
    let python = args
        .iter()
        .position(|a| a == "--python")
        .and_then(|i| args.get(i + 1).cloned())
        .unwrap_or_else(|| "/usr/bin/python3".into());
    let pkg_dir = PathBuf::from("/tmp/mitobench/pkg");
    // Real PyPI packages for the child's Python (the same tree
    // benches/mitogen_realpkg.py serves to Mitogen), made on first use.
    let real_dir = real_packages(&python);
    let master = Master::new(
        MasterOptions::default()
            .module_path(
                std::iter::once(pkg_dir.clone())
                    .chain(real_dir.clone())
                    .collect(),
            )
            .spin_window(common::spin_window(&args)),
    );
    let mut rows: Vec<(String, String)> = Vec::new();
    let mut out = serde_json::Map::new();
    let progress = |s: &str| eprintln!("bench: {s}");

    // `--imports`: only the import workloads (the 20-module package and
    // the first calls into requests and rich), a sitting of their own.
    if args.iter().any(|a| a == "--imports") {
        import_rows(
            &master,
            &python,
            &pkg_dir,
            real_dir.is_some(),
            &mut rows,
            &mut out,
        )
        .await;
        return print_rows(as_json, &python, rows, out);
    }

    // Bootstrap: connect + first call, child RSS, bytes sent.
    progress("connect + first call (1 cold + 20 runs)");
    let mut connect_ms = Vec::new();
    let mut rss = Vec::new();
    for i in 0..21 {
        let t0 = Instant::now();
        let ctx = connect(&master, &python).await;
        let pid: u32 = ctx.call("os", "getpid", ()).await.unwrap();
        let took = t0.elapsed().as_secs_f64() * 1e3;
        if i > 0 {
            connect_ms.push(took);
            rss.push(vm_rss_kib(pid) as f64);
        }
        close(ctx).await;
    }
    let config = ChildConfig {
        context_id: 1,
        parent_id: 0,
        name: "local.1".into(),
        key: vec![0; 32],
        log_level: 20,
        max_message_size: 128 << 20,
        ancestors: vec![0],
        module_path: String::new(),
        import_timeout_ms: 30_000,
        spin_us: 50,
    };
    let bytes = python_c_arg("local.1").len() + framed_payload(&config).len();
    let c = median(&mut connect_ms);
    let r = median(&mut rss) / 1024.0;
    rows.push(("connect + first call".into(), format!("{c:.1} ms")));
    rows.push(("child RSS after bootstrap".into(), format!("{r:.1} MiB")));
    rows.push((
        "bootstrap bytes to the child".into(),
        format!("{:.1} KB", bytes as f64 / 1000.0),
    ));
    out.insert("connect_first_call_ms".into(), json!(c));
    out.insert("child_rss_mib".into(), json!(r));
    out.insert("bootstrap_bytes".into(), json!(bytes));

    let ctx = connect(&master, &python).await;

    // Round trip of a trivial call.
    progress("round trip (200 warm-up + 2000 sequential calls)");
    for i in 0..200 {
        let _: i64 = ctx.call("copy", "copy", (i,)).await.unwrap();
    }
    let mut lat = Vec::new();
    let t0 = Instant::now();
    for i in 0..2000i64 {
        let t = Instant::now();
        let v: i64 = ctx.call("copy", "copy", (i,)).await.unwrap();
        assert_eq!(v, i);
        lat.push(t.elapsed().as_secs_f64() * 1e6);
    }
    let wall = t0.elapsed().as_secs_f64();
    let (m, p99) = (median(&mut lat), pct(&mut lat, 0.99));
    rows.push((
        "round trip, trivial call".into(),
        format!(
            "{m:.0} µs median, p99 {p99:.0} µs, {:.0} calls/s",
            2000.0 / wall
        ),
    ));
    out.insert("roundtrip_median_us".into(), json!(m));
    out.insert("roundtrip_p99_us".into(), json!(p99));

    // 10,000 calls in flight.
    progress("10,000 calls in flight (3 runs)");
    let mut rates = Vec::new();
    for _ in 0..3 {
        let t0 = Instant::now();
        let mut pending = Vec::with_capacity(10_000);
        for i in 0..10_000i64 {
            pending.push(
                ctx.call_with("copy", "copy")
                    .args((i,))
                    .unwrap()
                    .start::<i64>()
                    .await
                    .unwrap(),
            );
        }
        let results = join_all(pending.into_iter().map(|p| p.result())).await;
        assert!(results
            .iter()
            .enumerate()
            .all(|(i, r)| r.as_ref().ok() == Some(&(i as i64))));
        rates.push(10_000.0 / t0.elapsed().as_secs_f64());
    }
    let rate = median(&mut rates);
    rows.push((
        "10,000 calls in flight".into(),
        format!("{rate:.0} calls/s"),
    ));
    out.insert("inflight_calls_per_s".into(), json!(rate));

    // 64 MiB echo, upload, download.
    progress("64 MiB echo / upload / download (3 runs)");
    let data = common::echo_payload();
    let blob = serde_bytes::Bytes::new(&data);
    let (mut echo, mut up, mut down) = (Vec::new(), Vec::new(), Vec::new());
    let mut echo_copied = Vec::new();
    for _ in 0..3 {
        // The result as a slice of the reply (returning_bytes), and, for
        // comparison with earlier sittings, copied into a ByteBuf.
        echo.push(common::echo_once(&ctx, &data).await);
        let t0 = Instant::now();
        let back: serde_bytes::ByteBuf = ctx.call("copy", "copy", (blob,)).await.unwrap();
        echo_copied.push(128.0 / t0.elapsed().as_secs_f64());
        assert_eq!(back.len(), data.len());
        let t0 = Instant::now();
        let n: usize = ctx.call("builtins", "len", (blob,)).await.unwrap();
        up.push(64.0 / t0.elapsed().as_secs_f64());
        assert_eq!(n, data.len());
        let t0 = Instant::now();
        let z: serde_bytes::ByteBuf = ctx
            .call("builtins", "bytes", (64usize << 20,))
            .await
            .unwrap();
        down.push(64.0 / t0.elapsed().as_secs_f64());
        assert_eq!(z.len(), data.len());
    }
    let (e, u, d) = (median(&mut echo), median(&mut up), median(&mut down));
    let ec = median(&mut echo_copied);
    rows.push((
        "64 MiB echo".into(),
        format!("{e:.0} MiB/s (into a ByteBuf {ec:.0}; upload {u:.0}, download {d:.0})"),
    ));
    out.insert("echo_64mib_mib_per_s".into(), json!(e));
    out.insert("echo_64mib_bytebuf_mib_per_s".into(), json!(ec));
    out.insert("upload_mib_per_s".into(), json!(u));
    out.insert("download_mib_per_s".into(), json!(d));
    close(ctx).await;

    // 50 children at once. With the core compiled once on the master
    // (`ConnectOptions::compiled_core`, the option for many contexts), so
    // no child compiles it; the compile is warmed by one connect first,
    // as execnet_fanout.py warms one gateway before timing.
    progress("50 children, connect + first call, concurrently");
    close(connect_compiled(&master, &python).await).await;
    let t0 = Instant::now();
    let ctxs = join_all((0..50).map(|_| {
        let m = master.clone();
        let p = python.clone();
        async move {
            let c = connect_compiled(&m, &p).await;
            let pid: u32 = c.call("os", "getpid", ()).await.unwrap();
            (c, pid)
        }
    }))
    .await;
    let fan = t0.elapsed().as_secs_f64();
    // Each child's CPU so far, with its reaped first stage.
    let children_cpu: f64 = ctxs
        .iter()
        .map(|(_, pid)| cpu_s(&pid.to_string(), true))
        .sum();
    join_all(ctxs.into_iter().map(|(c, _)| close(c))).await;
    rows.push((
        "50 children, connect + first call".into(),
        format!("{fan:.2} s (the children's CPU: {children_cpu:.2} s)"),
    ));
    out.insert("fanout_50_s".into(), json!(fan));
    out.insert("fanout_50_children_cpu_s".into(), json!(children_cpu));

    // The master's CPU per call: 200 children, 100 calls in flight to each.
    let n_children: usize = args
        .iter()
        .position(|a| a == "--children")
        .and_then(|i| args.get(i + 1)?.parse().ok())
        .unwrap_or(200);
    progress(&format!(
        "master CPU per call: {n_children} children x 100 calls in flight"
    ));
    let mut kids = Vec::new();
    for _ in 0..n_children.div_ceil(25) {
        let batch =
            (kids.len()..n_children.min(kids.len() + 25)).map(|_| connect(&master, &python));
        kids.extend(join_all(batch).await);
    }
    for c in &kids {
        let _: u32 = c.call("os", "getpid", ()).await.unwrap();
    }
    // The first round also grows every pool and buffer to its working
    // size; the figure for the target is the median of the rounds after
    // it (as examples/master_cpu measures it), from getrusage, whose
    // microseconds resolve a 0.1 s round (/proc/PID/stat counts 10 ms).
    let mut per_round = Vec::new();
    let mut wall = 0.0;
    for _ in 0..4 {
        let cpu0 = rusage_cpu_s();
        let t0 = Instant::now();
        common::calls_in_flight(&kids, 100, "copy", "copy").await;
        let cpu = rusage_cpu_s() - cpu0;
        wall = t0.elapsed().as_secs_f64();
        per_round.push(cpu / (n_children * 100) as f64 * 1e6);
    }
    let cold = per_round.remove(0);
    let per_call = median(&mut per_round);
    join_all(kids.into_iter().map(close)).await;
    rows.push((
        format!("master CPU per call, {n_children} children x 100 calls"),
        format!(
            "{per_call:.1} µs (median of 3 rounds after a first of {cold:.1} µs; \
             last round {wall:.2} s wall)"
        ),
    ));
    out.insert("master_cpu_us_per_call".into(), json!(per_call));
    out.insert("master_cpu_us_per_call_first_round".into(), json!(cold));
    out.insert("master_cpu_children".into(), json!(n_children));

    // 1,000 in-process Rust contexts (real framing and HMAC over in-memory
    // pipes): the process's CPU per call and RSS per context. Everything
    // runs in this process, so the CPU includes the contexts' own share.
    progress("1,000 in-process Rust contexts x 100 calls in flight");
    let rss0 = vm_rss_kib(std::process::id());
    let mut tree = econtext::testing::SimTree::new(slog::Logger::root(slog::Discard, slog::o!()));
    let mut nodes = Vec::new();
    for i in 0..1000 {
        let mut f = econtext::Functions::default();
        f.register("m.echo", |(x,): (i64,)| x);
        nodes.push(tree.spawn(&format!("n{i}"), 0, f).await);
    }
    let rss_per_ctx = (vm_rss_kib(std::process::id()) as f64 - rss0 as f64) / 1000.0;
    let cpu0 = cpu_s("self", false);
    let ctxs: Vec<Context> = nodes.iter().map(|&n| tree.context(n)).collect();
    common::calls_in_flight(&ctxs, 100, "m", "echo").await;
    let cpu = cpu_s("self", false) - cpu0;
    drop(tree);
    rows.push((
        "1,000 in-process Rust contexts x 100 calls".into(),
        format!(
            "{:.1} µs of process CPU per call ({cpu:.2} s), {rss_per_ctx:.0} KiB RSS per context",
            cpu / 100_000.0 * 1e6
        ),
    ));
    out.insert(
        "rust_1000_cpu_us_per_call".into(),
        json!(cpu / 100_000.0 * 1e6),
    );
    out.insert("rust_1000_process_cpu_s".into(), json!(cpu));
    out.insert("rust_1000_rss_kib_per_context".into(), json!(rss_per_ctx));

    import_rows(
        &master,
        &python,
        &pkg_dir,
        real_dir.is_some(),
        &mut rows,
        &mut out,
    )
    .await;

    // ssh to peer-bench's private sshd (127.0.0.1:2222, key from setup.sh).
    let key = PathBuf::from("/tmp/mitobench/ssh/id");
    // An sshd that is not running skips the row (loudly) instead of
    // losing every figure above to a panic.
    let sshd_up = std::net::TcpStream::connect_timeout(
        &std::net::SocketAddr::from(([127, 0, 0, 1], 2222)),
        Duration::from_secs(2),
    )
    .is_ok();
    if !sshd_up && key.exists() {
        eprintln!("SKIP: ssh workload: nothing listens on 127.0.0.1:2222 (run ../shared/peer-bench/setup.sh)");
    }
    if key.exists() && sshd_up {
        progress("ssh: plain `ssh true` and connect + first call (10 runs each)");
        let ssh_base = [
            "-C",
            "-p",
            "2222",
            "-i",
            "/tmp/mitobench/ssh/id",
            "-o",
            "StrictHostKeyChecking=no",
            "-o",
            "UserKnownHostsFile=/dev/null",
            "-o",
            "LogLevel=ERROR",
            "-o",
            "BatchMode=yes",
            "root@127.0.0.1",
            "true",
        ];
        let mut plain = Vec::new();
        for _ in 0..10 {
            let t0 = Instant::now();
            let st = std::process::Command::new("ssh")
                .args(ssh_base)
                .stdin(std::process::Stdio::null())
                .status()
                .expect("ssh");
            assert!(st.success());
            plain.push(t0.elapsed().as_secs_f64() * 1e3);
        }
        let mut ours = Vec::new();
        for _ in 0..10 {
            let mut o = econtext::bootstrap::method::SshOptions::new("127.0.0.1");
            o.user = Some("root".into());
            o.port = Some(2222);
            o.identity_file = Some("/tmp/mitobench/ssh/id".into());
            o.check_host_keys = econtext::bootstrap::method::HostKeyCheck::Ignore;
            o.compression = true;
            o.python = python.clone();
            let t0 = Instant::now();
            let ctx = master
                .connect(econtext::ConnectOptions::new(econtext::Method::Ssh(o)))
                .await
                .expect("ssh connect");
            let _: u32 = ctx.call("os", "getpid", ()).await.unwrap();
            ours.push(t0.elapsed().as_secs_f64() * 1e3);
            close(ctx).await;
        }
        let (p, o) = (median(&mut plain), median(&mut ours));
        rows.push((
            "ssh connect + first call".into(),
            format!("{o:.0} ms (plain `ssh true` {p:.0} ms: +{:.0} ms)", o - p),
        ));
        out.insert("ssh_plain_true_ms".into(), json!(p));
        out.insert("ssh_connect_first_call_ms".into(), json!(o));
    } else {
        eprintln!(
            "SKIP: ssh workload: /tmp/mitobench/ssh/id missing (run ../shared/peer-bench/setup.sh)"
        );
    }

    print_rows(as_json, &python, rows, out);
}

/// The import workloads: the 20-module package only the master has, and
/// the first call into requests and into rich (real PyPI packages).
async fn import_rows(
    master: &Master,
    python: &str,
    pkg_dir: &Path,
    has_real: bool,
    rows: &mut Vec<(String, String)>,
    out: &mut serde_json::Map<String, serde_json::Value>,
) {
    let progress = |s: &str| eprintln!("bench: {s}");
    // 20-module package that only the master has.
    if pkg_dir.join("mbpkg").is_dir() {
        progress("20-module package, first call (10 runs)");
        let mut first = Vec::new();
        let mut reqs = Vec::new();
        for _ in 0..10 {
            let ctx = connect(master, python).await;
            let _: u32 = ctx.call("os", "getpid", ()).await.unwrap();
            let before = master.importer_stats().snapshot()[0].1;
            let t0 = Instant::now();
            let r: i64 = ctx.call("mbpkg.entry", "run", ()).await.unwrap();
            first.push(t0.elapsed().as_secs_f64() * 1e3);
            assert_eq!(r, 18);
            reqs.push(master.importer_stats().snapshot()[0].1 - before);
            close(ctx).await;
        }
        let f = median(&mut first);
        rows.push((
            "20-module package, first call".into(),
            format!("{f:.1} ms, {} request(s)", reqs[reqs.len() / 2]),
        ));
        out.insert("import_first_call_ms".into(), json!(f));
        out.insert("import_requests".into(), json!(reqs[reqs.len() / 2]));
    } else {
        eprintln!("SKIP: 20-module package workload: /tmp/mitobench/pkg/mbpkg missing (run ../shared/peer-bench/setup.sh)");
    }

    // Real packages: the first call into requests and into rich.
    if has_real {
        for (label, key, module, function, arg) in [
            (
                "requests.utils.requote_uri, first call",
                "requests",
                "requests.utils",
                "requote_uri",
                Some("http://example.com/a b"),
            ),
            (
                "rich Console render, first call",
                "rich",
                "ecprobe",
                "rich_render",
                None,
            ),
        ] {
            progress(&format!("{label} (5 runs)"));
            let (mut ms, mut reqs, mut kb) = (Vec::new(), Vec::new(), Vec::new());
            for _ in 0..5 {
                let ctx = connect(master, python).await;
                let _: u32 = ctx.call("os", "getpid", ()).await.unwrap();
                if key == "rich" {
                    let _: Vec<u32> = ctx.call("ecprobe", "whoami", ()).await.unwrap();
                }
                let s0 = master.importer_stats().snapshot();
                let t0 = Instant::now();
                let r: serde_json::Value = match arg {
                    Some(a) => ctx.call(module, function, (a,)).await,
                    None => ctx.call(module, function, ()).await,
                }
                .unwrap();
                ms.push(t0.elapsed().as_secs_f64() * 1e3);
                assert!(r.is_string(), "{r}");
                let s1 = master.importer_stats().snapshot();
                reqs.push((s1[0].1 - s0[0].1) as f64);
                kb.push((s1[2].1 - s0[2].1) as f64 / 1024.0);
                close(ctx).await;
            }
            let (m, r, k) = (median(&mut ms), median(&mut reqs), median(&mut kb));
            rows.push((
                label.into(),
                format!("{m:.0} ms, {r} GET_MODULE round trip(s), {k:.0} KB"),
            ));
            out.insert(format!("{key}_first_call_ms"), json!(m));
            out.insert(format!("{key}_requests"), json!(r));
            out.insert(format!("{key}_kb"), json!(k));
        }
    }
}

fn print_rows(
    as_json: bool,
    python: &str,
    rows: Vec<(String, String)>,
    out: serde_json::Map<String, serde_json::Value>,
) {
    if as_json {
        println!("{}", serde_json::Value::Object(out));
    } else {
        println!("\n| workload (local child, {python}) | econtext |");
        println!("|---|---|");
        for (k, v) in rows {
            println!("| {k} | {v} |");
        }
    }
}
