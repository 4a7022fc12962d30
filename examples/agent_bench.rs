//! The Rust agent beside the Python child, in one sitting: connect + first
//! call, round trip, the child's RSS and the bytes shipped to start it.
//!
//! `cargo run --release --example agent_bench [-- --python PATH] [--calls N]`
//!
//! The agent is this example's own binary (its `main` calls
//! `run_if_child` first), shipped from memory like any `?agent=rust` hop.

use std::time::{Duration, Instant};

use econtext::agent::{AgentOptions, Services};
use econtext::{ConnectOptions, Context, LocalOptions, Master, MasterOptions, Method};

fn services() -> Services {
    let mut s = Services::default();
    s.functions
        .register("os.getpid", |(): ()| std::process::id());
    s
}

fn vm_rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

struct Row {
    connect_ms: Vec<f64>,
    rtt_us: f64,
    rss_kib: u64,
}

async fn measure(master: &Master, opts: impl Fn() -> ConnectOptions, calls: usize) -> Row {
    let mut connect_ms = Vec::new();
    let mut last: Option<Context> = None;
    for _ in 0..5 {
        let t = Instant::now();
        let ctx = master.connect(opts()).await.expect("connect");
        let _: u32 = ctx.call("os", "getpid", ()).await.expect("first call");
        connect_ms.push(t.elapsed().as_secs_f64() * 1e3);
        if let Some(old) = last.replace(ctx) {
            let _ = old.shutdown().await;
        }
    }
    let ctx = last.expect("one context");
    let pid: u32 = ctx.call("os", "getpid", ()).await.unwrap();
    let t = Instant::now();
    for _ in 0..calls {
        let _: u32 = ctx.call("os", "getpid", ()).await.unwrap();
    }
    let rtt_us = t.elapsed().as_secs_f64() * 1e6 / calls as f64;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let rss_kib = vm_rss_kib(pid);
    let _ = ctx.shutdown().await;
    Row {
        connect_ms,
        rtt_us,
        rss_kib,
    }
}

fn main() {
    econtext::agent::run_if_child(services);
    let args: Vec<String> = std::env::args().collect();
    let arg = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1).cloned())
    };
    let python = arg("--python").unwrap_or_else(|| "/usr/bin/python3".into());
    let calls: usize = arg("--calls").and_then(|c| c.parse().ok()).unwrap_or(2000);
    actix_rt::System::new().block_on(async move {
        let master = Master::new(MasterOptions::default());
        let py = measure(
            &master,
            || {
                ConnectOptions::new(Method::Local(LocalOptions::new(python.clone())))
            },
            calls,
        )
        .await;
        let rust = measure(
            &master,
            || ConnectOptions::new(Method::Local(Default::default())).agent(AgentOptions::default()),
            calls,
        )
        .await;
        let shipped = econtext::agent::ship::shipped(std::path::Path::new("/proc/self/exe"))
            .expect("shipped");
        let core = econtext::bootstrap::payload::framed_payload(
            &econtext::bootstrap::payload::ChildConfig {
                context_id: 1,
                parent_id: 0,
                name: "x".into(),
                key: vec![0; 32],
                log_level: 20,
                max_message_size: 1 << 27,
                ancestors: vec![0],
                module_path: String::new(),
                import_timeout_ms: 30_000,
                spin_us: 50,
            },
        );
        println!("| child | connect + first call (median of 5) | round trip | child RSS | bytes shipped |");
        println!("|---|---|---|---|---|");
        for (name, mut row, bytes) in [
            (format!("Python ({python})"), py, core.len()),
            ("Rust agent (memfd)".to_string(), rust, shipped.compressed_len()),
        ] {
            println!(
                "| {name} | {:.1} ms | {:.1} µs | {:.1} MiB | {bytes} |",
                median(&mut row.connect_ms),
                row.rtt_us,
                row.rss_kib as f64 / 1024.0
            );
        }
        println!(
            "\nagent binary {} bytes uncompressed, {} shipped (gzip)",
            shipped.binary_len,
            shipped.compressed_len()
        );
    });
}
