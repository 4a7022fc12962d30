//! Drives a fleet subcommand: the fan-out, Ctrl+C, the reporter. `run`
//! and `call` (and later subcommands) differ only in their per-host
//! closure.

use std::future::Future;

use econtext::actors::DeadReason;
use econtext::fleet::{Fleet, FleetError, Target};
use econtext::{Context, ManyHosts, Master};
use futures::StreamExt;

use super::fleet_args::FleetArgs;
use super::report::{HostOutput, HostReport, Reporter};

/// Runs `f` on every target, printing each host as it finishes; returns
/// the exit code. The first SIGINT stops starting hosts and names those
/// still running; the second aborts them (reported as died). Hosts never
/// started are reported as skipped.
pub async fn drive<F, Fut>(
    master: &Master,
    targets: Vec<Target>,
    args: &FleetArgs,
    verbose: bool,
    f: F,
) -> Result<u8, String>
where
    F: Fn(Context, Target) -> Fut + 'static,
    Fut: Future<Output = Result<HostOutput, FleetError>> + 'static,
{
    let hosts = ManyHosts::new(master.clone());
    drive_on(hosts, targets, args, verbose, f).await
}

/// [`drive`] with the contexts made by `hosts` (a lean start for `run`).
pub async fn drive_on<F, Fut>(
    hosts: ManyHosts,
    targets: Vec<Target>,
    args: &FleetArgs,
    verbose: bool,
    f: F,
) -> Result<u8, String>
where
    F: Fn(Context, Target) -> Fut + 'static,
    Fut: Future<Output = Result<HostOutput, FleetError>> + 'static,
{
    let opts = args.fleet_options()?;
    let names = targets.iter().map(|t| t.name.clone()).collect();
    let mut reporter = Reporter::new(args, verbose, names)
        .map_err(|e| format!("cannot create the output directory: {e}"))?;
    let fleet = Fleet::new(hosts, opts);
    let mut results = fleet.run(targets, f);
    let mut sigint = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())
        .map_err(|e| format!("cannot handle SIGINT: {e}"))?;
    let (mut interrupted, mut aborted) = (false, false);
    loop {
        tokio::select! {
            next = results.next() => {
                let Some((t, r)) = next else { break };
                // A host never started (after Ctrl+C) is reported too:
                // `skipped`.
                let elapsed = fleet.elapsed(&t.name).unwrap_or_default();
                reporter.host(&HostReport::new(&t.name, r, elapsed));
            }
            _ = sigint.recv() => {
                if !interrupted {
                    interrupted = true;
                    fleet.stop();
                    let running = fleet.running();
                    reporter.note(&format!(
                        "interrupted: not starting more hosts; still running ({}): {} (Ctrl+C again to abort them)",
                        running.len(),
                        running.join(" ")
                    ));
                } else {
                    for host in fleet.running() {
                        let r = Err(FleetError::Died(DeadReason::Other(
                            "aborted by a second interrupt".into(),
                        )));
                        reporter.host(&HostReport::new(&host, r, Default::default()));
                    }
                    aborted = true;
                    break;
                }
            }
        }
    }
    // Hosts the stream did not get to yield (a second Ctrl+C) get their
    // `skipped` line from finish().
    drop(results);
    if !aborted {
        // The bastions (contexts shared by several hosts) end in order,
        // their last log lines flushed, each within its own bound.
        fleet.release_shared().await;
    }
    Ok(reporter.finish(interrupted))
}
