//! Supervision in one screen: keep 5 local Python contexts alive while
//! their processes are killed at random, print every context event, and
//! show calls through the same handles resuming after each restart.
//!
//! `cargo run --example supervise` (needs a `python3` on PATH; set
//! ECONTEXT_PYTHON to try another interpreter, ECONTEXT_KILLS for how many
//! processes to kill, default 10).

use std::time::{Duration, Instant};

use econtext::supervise::{Backoff, ChildSpec, Restart, Supervised};
use econtext::{ConnectOptions, ContextEvent, LocalOptions, Master, MasterOptions, Method};
use futures::StreamExt;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use rand::Rng;

const WORKERS: usize = 5;

#[actix::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let python = std::env::var("ECONTEXT_PYTHON").unwrap_or_else(|_| "python3".into());
    let kills: usize = std::env::var("ECONTEXT_KILLS")
        .ok()
        .and_then(|k| k.parse().ok())
        .unwrap_or(10);
    let master = Master::new(MasterOptions::default());

    // Print every event of the tree as it happens.
    let mut events = master.events().await;
    actix::spawn(async move {
        let t0 = Instant::now();
        while let Some(e) = events.next().await {
            let at = t0.elapsed().as_secs_f64();
            match e {
                ContextEvent::Started { id, name, .. } => {
                    println!("{at:7.3}s  started    {name} (context {id})")
                }
                ContextEvent::Died { id, reason } => {
                    println!("{at:7.3}s  died       context {id}: {reason}")
                }
                ContextEvent::Restarted {
                    id, old, restarts, ..
                } => println!("{at:7.3}s  restarted  context {old} as {id} (restart {restarts})"),
                ContextEvent::GaveUp { id, reason } => {
                    println!("{at:7.3}s  gave up    on context {id}: {reason}")
                }
                other => println!("{at:7.3}s  {other:?}"),
            }
        }
    });

    let mut workers: Vec<Supervised> = Vec::new();
    for i in 0..WORKERS {
        let opts = ConnectOptions::new(Method::Local(LocalOptions::new(python.clone())))
            .name(format!("worker{i}"));
        let spec = ChildSpec::connect(opts)
            .restart(Restart::Permanent)
            .limit(kills as u32 + 1, Duration::from_secs(60))
            .backoff(Backoff::new(
                Duration::from_millis(50),
                Duration::from_secs(1),
            ));
        workers.push(master.supervise(spec).await?);
    }

    for round in 0..kills {
        let victim = rand::thread_rng().gen_range(0..WORKERS);
        let pid: i32 = workers[victim].call("os", "getpid", ()).await?;
        println!("-- round {round}: SIGKILL worker{victim} (pid {pid})");
        kill(Pid::from_raw(pid), Signal::SIGKILL)?;
        tokio::time::sleep(Duration::from_millis(300)).await;
        // Every handle still works: calls wait for a restart in progress.
        let mut pids = Vec::new();
        for w in &workers {
            pids.push(w.call::<i32>("os", "getpid", ()).await?);
        }
        println!("-- calls resumed on every worker, pids {pids:?}");
    }

    for w in &workers {
        w.stop().await;
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    println!("-- all {WORKERS} workers stopped");
    Ok(())
}
