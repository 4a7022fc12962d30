//! Round trip of a trivial call to a local Python context, alone, for
//! profiling the child (`--pause` prints the child's pid and waits 5 s
//! before measuring, so a profiler can attach).
//! `cargo run --release --example py_roundtrip [-- --python PATH] [--n N]`

use std::time::{Duration, Instant};

use econtext::{LocalOptions, Master, MasterOptions};

#[actix::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let arg = |k: &str| {
        args.iter()
            .position(|a| a == k)
            .and_then(|i| args.get(i + 1).cloned())
    };
    let python = arg("--python").unwrap_or_else(|| "/usr/bin/python3".into());
    let n: usize = arg("--n").and_then(|v| v.parse().ok()).unwrap_or(5000);
    let master = Master::new(MasterOptions::default());
    let ctx = master.local(LocalOptions::new(python)).await.unwrap();
    let pid: u32 = ctx.call("os", "getpid", ()).await.unwrap();
    if args.iter().any(|a| a == "--pause") {
        println!("child pid {pid}");
        tokio::time::sleep(Duration::from_secs(5)).await;
    }
    for i in 0..500i64 {
        let _: i64 = ctx.call("copy", "copy", (i,)).await.unwrap();
    }
    let mut lat = Vec::with_capacity(n);
    for i in 0..n as i64 {
        let t = Instant::now();
        let _: i64 = ctx.call("copy", "copy", (i,)).await.unwrap();
        lat.push(t.elapsed().as_secs_f64() * 1e6);
    }
    lat.sort_by(|a, b| a.partial_cmp(b).unwrap());
    println!(
        "Python round trip: median {:.1} µs, p99 {:.1} µs",
        lat[lat.len() / 2],
        lat[lat.len() * 99 / 100]
    );
    let t = Instant::now();
    ctx.shutdown().await.unwrap();
    let how = ctx.dead().await;
    println!("graceful shutdown took {:?} ({how})", t.elapsed());
}
