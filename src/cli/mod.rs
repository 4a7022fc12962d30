//! The `econtext` command line: one module per subcommand, plus the
//! pieces every fleet subcommand shares ([`fleet_args::FleetArgs`], the
//! fan-out driver [`drive::drive`], the reporter in [`report`]).

pub mod call;
pub mod copy;
pub mod copy_groups;
pub mod drive;
pub mod fetch;
pub mod fleet_args;
pub mod report;
pub mod run;
pub mod text;
pub mod transfer;

use std::future::Future;
use std::time::Duration;

use clap::{Parser, Subcommand};
use econtext::fleet::{Fleet, FleetError, Target};
use econtext::{Context, ManyHosts, Master, MasterOptions};
use futures::StreamExt;
use slog::{o, Drain, Logger};

use fleet_args::FleetArgs;
use report::{HostOutput, HostReport};

#[derive(Parser)]
#[command(
    name = "econtext",
    version,
    about = "Run Python functions and commands on other machines with nothing installed there",
    after_help = "Exit status: 0 every host succeeded; 2 a host was unreachable; else 3 a host \
                  died or timed out; else 1 a host failed (a command's non-zero rc, a raised \
                  exception); 64 bad usage; 130 interrupted (hosts never started are reported as \
                  `skipped`). `econtext run TARGET` on one \
                  target without -i exits with the command's own status."
)]
pub struct Cli {
    /// More log output (-v: whole outputs, debug records from children).
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,
    /// A directory of Python modules to serve to children that cannot
    /// import them locally (repeatable; ECONTEXT_PATH is searched too).
    #[arg(long = "module-path", value_name = "DIR", global = true)]
    pub module_path: Vec<std::path::PathBuf>,
    /// Serve only modules under this top-level name from the module path
    /// (repeatable; default: everything on it).
    #[arg(long = "module-allow", value_name = "NAME", global = true)]
    pub module_allow: Vec<String>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand)]
pub enum Command {
    /// Call a function in a context (or every host of a pattern) and print
    /// its result as JSON.
    Call(call::CallArgs),
    /// Run a command on a target or every host of a pattern.
    Run(run::RunArgs),
    /// Push local files and directories to a target or every host of a
    /// pattern (DEST ending in '/' is a directory).
    Copy(copy::CopyArgs),
    /// Pull a file or directory from a target or every host of a pattern
    /// (into DEST_DIR/<host>/ with an inventory).
    Fetch(fetch::FetchArgs),
}

/// What every subcommand needs to start: verbosity and the master's options.
#[derive(Clone)]
pub struct Env {
    pub verbose: u8,
    pub module_path: Vec<std::path::PathBuf>,
    pub module_allow: Option<Vec<String>>,
    pub connect_timeout: Duration,
}

impl Env {
    pub fn new(cli: &Cli) -> Env {
        let mut module_path = cli.module_path.clone();
        module_path.extend(econtext::bootstrap::modules::ModuleFinder::path_from_env());
        Env {
            verbose: cli.verbose,
            module_path,
            module_allow: (!cli.module_allow.is_empty()).then(|| cli.module_allow.clone()),
            connect_timeout: Duration::from_secs(30),
        }
    }

    /// Runs `f` with a master inside an actix system.
    pub fn block_on<F, Fut>(&self, f: F) -> u8
    where
        F: FnOnce(Master) -> Fut,
        Fut: Future<Output = u8>,
    {
        let (log, flushed) = logger(self.verbose);
        let opts = MasterOptions::default()
            .module_path(self.module_path.clone())
            .module_allow(self.module_allow.clone())
            .log(log)
            .log_level(if self.verbose > 0 { 10 } else { 20 })
            .connect_timeout(self.connect_timeout);
        let system = actix_rt::System::new();
        let rc = system.block_on(async move { f(Master::new(opts)).await });
        drop(flushed); // every record queued so far is on stderr
        rc
    }
}

pub fn main(cli: Cli) -> u8 {
    let mut env = Env::new(&cli);
    match cli.command {
        Command::Call(a) => {
            env.connect_timeout = secs(a.fleet.connect_timeout);
            call::main(env, a)
        }
        Command::Run(a) => {
            env.connect_timeout = secs(a.fleet.connect_timeout);
            run::main(env, a)
        }
        Command::Copy(a) => {
            env.connect_timeout = secs(a.fleet.connect_timeout);
            copy::main(env, a)
        }
        Command::Fetch(a) => {
            env.connect_timeout = secs(a.fleet.connect_timeout);
            fetch::main(env, a)
        }
    }
}

fn secs(s: f64) -> Duration {
    Duration::try_from_secs_f64(s).unwrap_or(Duration::from_secs(30))
}

/// Records queued for stderr at most; beyond, they are counted and the
/// count is logged ("dropped messages due to channel overflow").
const LOG_QUEUE: usize = 8192;

/// The CLI's logger: records go through a bounded queue to a thread that
/// writes them to stderr, so a stalled stderr (a paused terminal, a full
/// pipe nobody reads) stalls no host's traffic, only that thread. The
/// guard, once dropped, has written every record queued before.
fn logger(verbose: u8) -> (Logger, slog_async::AsyncGuard) {
    let decorator = slog_term::PlainSyncDecorator::new(std::io::stderr());
    let drain = slog_term::CompactFormat::new(decorator).build().fuse();
    let (drain, guard) = slog_async::Async::new(drain)
        .chan_size(LOG_QUEUE)
        .overflow_strategy(slog_async::OverflowStrategy::DropAndReport)
        .thread_name("econtext-log".into())
        .build_with_guard();
    let level = if verbose > 0 {
        slog::Level::Debug
    } else {
        slog::Level::Info
    };
    // After the guard is gone a record has nowhere to go: ignored.
    let drain = slog::LevelFilter::new(drain.ignore_res(), level).ignore_res();
    (Logger::root(drain, o!()), guard)
}

/// A usage error (bad JSON, bad function name, bad target): 64.
pub fn usage(msg: impl std::fmt::Display) -> u8 {
    eprintln!("econtext: {msg}");
    64
}

/// One target without an inventory: the same fan-out (deadlines and
/// retries apply), its one report for the subcommand to print its way.
/// `hosts` makes the context: a subcommand's own start (lean, preloaded
/// modules), never the core compiled here (for one host the local compile
/// costs more than it saves).
pub async fn single<F, Fut>(
    hosts: ManyHosts,
    target: Target,
    args: &FleetArgs,
    f: F,
) -> Result<HostReport, String>
where
    F: Fn(Context, Target) -> Fut + 'static,
    Fut: Future<Output = Result<HostOutput, FleetError>> + 'static,
{
    let fleet = Fleet::new(hosts.compiled_core(false), args.fleet_options()?);
    let name = target.name.clone();
    let mut results = fleet.run(vec![target], f);
    let (t, r) = results
        .next()
        .await
        .ok_or_else(|| "the fan-out ended without a result".to_string())?;
    drop(results);
    fleet.release_shared().await;
    let elapsed = fleet.elapsed(&t.name).unwrap_or_default();
    Ok(HostReport::new(&name, r, elapsed))
}

/// `--stats`: the importer's counters, and the master's own CPU seconds
/// and peak RSS (children not included), as one JSON line on stderr.
pub fn print_stats(master: &Master) {
    print_stats_with(master, &[]);
}

/// [`print_stats`] with a subcommand's own counters added.
pub fn print_stats_with(master: &Master, extra: &[(&str, u64)]) {
    let mut counters: serde_json::Map<String, serde_json::Value> = master
        .importer_stats()
        .snapshot()
        .iter()
        .map(|(k, v)| (k.to_string(), (*v).into()))
        .collect();
    use nix::sys::resource::{getrusage, UsageWho};
    if let Ok(u) = getrusage(UsageWho::RUSAGE_SELF) {
        let secs = |t: nix::sys::time::TimeVal| t.tv_sec() as f64 + t.tv_usec() as f64 / 1e6;
        let cpu = secs(u.user_time()) + secs(u.system_time());
        counters.insert(
            "master_cpu_s".into(),
            ((cpu * 1000.0).round() / 1000.0).into(),
        );
        counters.insert("master_max_rss_kb".into(), u.max_rss().into());
    }
    for (k, v) in extra {
        counters.insert(k.to_string(), (*v).into());
    }
    eprintln!("{}", serde_json::Value::Object(counters));
}
