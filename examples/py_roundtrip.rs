//! Round trip of a trivial call to a local Python context, alone, for
//! profiling the child (`--pause` prints the child's pid and waits 5 s
//! before measuring, so a profiler can attach).
//! `cargo run --release --example py_roundtrip [-- --python PATH] [--n N] [--inflight N] [--echo N] [--connect N] [--threads] [--spin-us N]`
//!
//! Besides the latency it prints counts that do not depend on the
//! machine's load, per call: context switches (voluntary: a thread went
//! to sleep and had to be woken; involuntary: preempted) of every thread
//! of the master and of the child, from /proc/PID/task/*/status, and CPU
//! microseconds of each side. `--inflight N` also runs N calls in flight
//! (started one after another, then joined) with the same counts.

#[path = "common/mod.rs"]
mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use econtext::{Context, LocalOptions, Master, MasterOptions};

/// Voluntary and involuntary context switches of each thread of `pid`,
/// by thread id (with its name).
fn thread_switches(pid: &str) -> BTreeMap<String, (u64, u64)> {
    let mut out = BTreeMap::new();
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return out;
    };
    for t in tasks.flatten() {
        let s = std::fs::read_to_string(t.path().join("status")).unwrap_or_default();
        let mut v = (0, 0);
        let mut name = String::new();
        for l in s.lines() {
            let n = || {
                l.split_whitespace()
                    .nth(1)
                    .and_then(|n| n.parse::<u64>().ok())
            };
            if l.starts_with("voluntary_ctxt_switches") {
                v.0 = n().unwrap_or(0);
            } else if l.starts_with("nonvoluntary_ctxt_switches") {
                v.1 = n().unwrap_or(0);
            } else if let Some(x) = l.strip_prefix("Name:") {
                name = x.trim().to_string();
            }
        }
        out.insert(format!("{} {name}", t.file_name().to_string_lossy()), v);
    }
    out
}

/// (voluntary, involuntary) context switches of every thread of `pid`.
fn ctx_switches(pid: &str) -> (u64, u64) {
    thread_switches(pid)
        .values()
        .fold((0, 0), |a, v| (a.0 + v.0, a.1 + v.1))
}

/// Per-thread switches per call between two readings (`--threads`).
fn print_threads(
    who: &str,
    a: &BTreeMap<String, (u64, u64)>,
    b: &BTreeMap<String, (u64, u64)>,
    n: usize,
) {
    for (k, v) in b {
        let w = a.get(k).copied().unwrap_or((0, 0));
        let d = ((v.0 - w.0) as f64 / n as f64, (v.1 - w.1) as f64 / n as f64);
        if d.0 + d.1 >= 0.01 {
            println!("  {who} thread {k}: {:.2} + {:.2}", d.0, d.1);
        }
    }
}

/// User + system CPU seconds of `pid` (clock ticks, 100 per second).
fn cpu_s(pid: &str) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let f: Vec<f64> = stat
        .rsplit_once(')')
        .map(|(_, r)| {
            r.split_whitespace()
                .map(|x| x.parse().unwrap_or(0.0))
                .collect()
        })
        .unwrap_or_default();
    f.get(11..13).map_or(0.0, |t| t.iter().sum::<f64>() / 100.0)
}

struct Counts {
    master: (u64, u64),
    child: (u64, u64),
    cpu: (f64, f64),
}

fn counts(child: &str) -> Counts {
    Counts {
        master: ctx_switches("self"),
        child: ctx_switches(child),
        cpu: (cpu_s("self"), cpu_s(child)),
    }
}

fn report(what: &str, a: &Counts, b: &Counts, n: usize) {
    let per = |x: u64, y: u64| (y - x) as f64 / n as f64;
    println!(
        "{what}: per call: master ctx switches {:.2} voluntary + {:.2} involuntary, \
         child {:.2} + {:.2}; CPU master {:.1} µs, child {:.1} µs",
        per(a.master.0, b.master.0),
        per(a.master.1, b.master.1),
        per(a.child.0, b.child.0),
        per(a.child.1, b.child.1),
        (b.cpu.0 - a.cpu.0) / n as f64 * 1e6,
        (b.cpu.1 - a.cpu.1) / n as f64 * 1e6,
    );
}

async fn inflight(ctx: &Context, child: &str, n: usize) {
    let a = counts(child);
    let t0 = Instant::now();
    common::calls_in_flight(std::slice::from_ref(ctx), n, "copy", "copy").await;
    let rate = n as f64 / t0.elapsed().as_secs_f64();
    let b = counts(child);
    println!("{n} calls in flight: {rate:.0} calls/s");
    report("in flight", &a, &b, n);
}

/// `k` echoes of 64 MiB (`copy.copy` of a bin), with each side's CPU.
async fn echo(ctx: &Context, child: &str, k: usize) {
    if k == 0 {
        return; // `--echo 0`: no echo row
    }
    let data = common::echo_payload();
    let _: serde_bytes::ByteBuf = ctx
        .call("copy", "copy", (serde_bytes::Bytes::new(&data),))
        .await
        .unwrap();
    let a = counts(child);
    let mut rates = Vec::new();
    for _ in 0..k {
        rates.push(common::echo_once(ctx, &data).await);
    }
    let b = counts(child);
    rates.sort_by(|a, b| a.partial_cmp(b).unwrap());
    println!("64 MiB echo: median {:.0} MiB/s", rates[rates.len() / 2]);
    println!(
        "per echo: CPU master {:.0} ms, child {:.0} ms",
        (b.cpu.0 - a.cpu.0) / k as f64 * 1e3,
        (b.cpu.1 - a.cpu.1) / k as f64 * 1e3
    );
}

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
    let master = Master::new(MasterOptions::default().spin_window(common::spin_window(&args)));
    if let Some(k) = arg("--connect").and_then(|v| v.parse::<usize>().ok()) {
        // Connect + first call, k times (as bench's first row).
        let mut ms = Vec::new();
        for _ in 0..k {
            let t0 = Instant::now();
            let c = master
                .local(LocalOptions::new(python.clone()))
                .await
                .unwrap();
            let _: u32 = c.call("os", "getpid", ()).await.unwrap();
            ms.push(t0.elapsed().as_secs_f64() * 1e3);
            c.shutdown().await.unwrap();
        }
        ms.sort_by(|a, b| a.partial_cmp(b).unwrap());
        println!("connect + first call: median {:.1} ms of {k}", ms[k / 2]);
    }
    let ctx = master.local(LocalOptions::new(python)).await.unwrap();
    let pid: u32 = ctx.call("os", "getpid", ()).await.unwrap();
    let child = pid.to_string();
    // What bench's "child RSS after bootstrap" row reads, for this child.
    let rss = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .map(|l| l.to_string())
        .unwrap_or_default();
    println!("child after its first call: {rss}");
    if args.iter().any(|a| a == "--pause") {
        println!("child pid {pid}");
        tokio::time::sleep(Duration::from_secs(5)).await;
    }
    for i in 0..500i64 {
        let _: i64 = ctx.call("copy", "copy", (i,)).await.unwrap();
    }
    let mut lat = Vec::with_capacity(n);
    let a = counts(&child);
    let ta = (thread_switches("self"), thread_switches(&child));
    for i in 0..n as i64 {
        let t = Instant::now();
        let _: i64 = ctx.call("copy", "copy", (i,)).await.unwrap();
        lat.push(t.elapsed().as_secs_f64() * 1e6);
    }
    let b = counts(&child);
    let tb = (thread_switches("self"), thread_switches(&child));
    lat.sort_by(|a, b| a.partial_cmp(b).unwrap());
    println!(
        "Python round trip: median {:.1} µs, p99 {:.1} µs",
        lat[lat.len() / 2],
        lat[lat.len() * 99 / 100]
    );
    report("round trip", &a, &b, n);
    if args.iter().any(|a| a == "--threads") {
        print_threads("master", &ta.0, &tb.0, n);
        print_threads("child", &ta.1, &tb.1, n);
    }
    if let Some(k) = arg("--inflight").and_then(|v| v.parse().ok()) {
        inflight(&ctx, &child, k).await;
    }
    if let Some(k) = arg("--echo").and_then(|v| v.parse().ok()) {
        echo(&ctx, &child, k).await;
    }
    let t = Instant::now();
    ctx.shutdown().await.unwrap();
    let how = ctx.dead().await;
    println!("graceful shutdown took {:?} ({how})", t.elapsed());
}
