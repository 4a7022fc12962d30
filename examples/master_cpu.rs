//! The master's own CPU per call under fan-out, alone, for profiling:
//! N local Python children, M calls in flight to each, R rounds.
//!
//! `cargo run --release --example master_cpu [-- --children 200 --calls 100 --rounds 5]`
//!
//! Prints the master's task-clock (user + system CPU of this process,
//! from getrusage, so microsecond resolution) per call for each round, and
//! the median. CPU time is far less sensitive to other load on the machine
//! than wall time. To profile only the call rounds:
//!
//! `perf record -e cpu-clock -g -p $(pgrep -n master_cpu)` after the
//! "calls" line appears on stderr, or `--pause`, which waits on stdin
//! between the connects and the rounds.

#[path = "common/mod.rs"]
mod common;

use std::io::BufRead;
use std::time::{Duration, Instant};

use econtext::{Context, LocalOptions, Master, MasterOptions};
use futures::future::join_all;

fn arg(args: &[String], name: &str, default: usize) -> usize {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1)?.parse().ok())
        .unwrap_or(default)
}

/// User + system CPU seconds of this whole process (every thread).
fn process_cpu_s() -> f64 {
    let r = nix::sys::resource::getrusage(nix::sys::resource::UsageWho::RUSAGE_SELF)
        .expect("getrusage");
    let tv = |t: nix::sys::time::TimeVal| t.tv_sec() as f64 + t.tv_usec() as f64 / 1e6;
    tv(r.user_time()) + tv(r.system_time())
}

async fn round(kids: &[Context], calls: usize) {
    common::calls_in_flight(kids, calls, "copy", "copy").await;
}

#[actix::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let n = arg(&args, "--children", 200);
    let calls = arg(&args, "--calls", 100);
    let rounds = arg(&args, "--rounds", 5);
    let python = args
        .iter()
        .position(|a| a == "--python")
        .and_then(|i| args.get(i + 1).cloned())
        .unwrap_or_else(|| "/usr/bin/python3".into());
    let master = Master::new(MasterOptions::default());
    eprintln!("master_cpu: connecting {n} children");
    let mut kids: Vec<Context> = Vec::new();
    while kids.len() < n {
        let batch = (kids.len()..n.min(kids.len() + 25))
            .map(|_| master.local(LocalOptions::new(python.clone())));
        kids.extend(
            join_all(batch)
                .await
                .into_iter()
                .map(|c| c.expect("connect")),
        );
    }
    for c in &kids {
        let _: u32 = c.call("os", "getpid", ()).await.unwrap();
    }
    // One warm-up round: every pool and buffer at its working size.
    round(&kids, calls).await;
    if args.iter().any(|a| a == "--pause") {
        eprintln!("master_cpu: pid {}, press enter", std::process::id());
        let _ = std::io::stdin().lock().lines().next();
    }
    eprintln!("master_cpu: calls ({rounds} rounds)");
    let mut per_call = Vec::new();
    for r in 0..rounds {
        let (cpu0, t0) = (process_cpu_s(), Instant::now());
        round(&kids, calls).await;
        let (cpu, wall) = (process_cpu_s() - cpu0, t0.elapsed().as_secs_f64());
        let us = cpu / (n * calls) as f64 * 1e6;
        println!(
            "round {r}: {us:.2} µs of master CPU per call ({cpu:.3} s CPU, {wall:.3} s wall, {} calls)",
            n * calls
        );
        per_call.push(us);
    }
    per_call.sort_by(|a, b| a.partial_cmp(b).unwrap());
    println!(
        "master CPU per call, {n} children x {calls} calls: median {:.2} µs (target <= 4)",
        per_call[per_call.len() / 2]
    );
    join_all(kids.into_iter().map(|c| async move {
        let _ = c.shutdown().await;
        let _ = tokio::time::timeout(Duration::from_secs(5), c.dead()).await;
    }))
    .await;
}
