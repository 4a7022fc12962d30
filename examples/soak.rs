//! Connect/shutdown soak of in-process Rust contexts: prints the master's
//! map sizes, open fds and resident memory every 1,000 cycles; they must
//! stay flat.
//!
//! ```text
//! cargo run --release --example soak [CYCLES]   # default 10000
//! ```

use std::time::{Duration, Instant};

use econtext::actors::router::GetStats;
use econtext::{Functions, Master, MasterOptions};

fn fds() -> usize {
    std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count())
}

fn rss_kib() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    pages * 4
}

#[actix::main]
async fn main() {
    let cycles: u32 = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(10_000);
    let master = Master::new(MasterOptions::default());
    let t0 = Instant::now();
    println!(
        "cycle\thandles\tpeers\troutes\tdead_kept\twatchers\tlive_ids\tfds\trss_kib\tms_per_cycle"
    );
    let mut last = Instant::now();
    for i in 1..=cycles {
        let mut f = Functions::default();
        f.register("math.add", |(a, b): (i64, i64)| a + b);
        let ctx = master.rust_context("soak", None, f).await.expect("connect");
        let _: i64 = ctx.call("math", "add", (1, 2)).await.expect("call");
        ctx.shutdown().await.expect("shutdown");
        tokio::time::timeout(Duration::from_secs(5), ctx.dead())
            .await
            .expect("gone within 5 s");
        if i % 1000 == 0 || i == cycles {
            let s = master.router().send(GetStats).await.unwrap().core;
            let per = last.elapsed().as_secs_f64() * 1000.0 / f64::from(i.min(1000));
            last = Instant::now();
            println!(
                "{i}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{per:.2}",
                s.handles,
                s.peers,
                s.routes_known,
                s.dead_remembered,
                s.watchers,
                s.live_ids,
                fds(),
                rss_kib()
            );
        }
    }
    println!("{cycles} cycles in {:.1} s", t0.elapsed().as_secs_f64());
    master.shutdown().await;
}
