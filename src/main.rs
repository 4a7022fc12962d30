//! The `econtext` command-line tool.
//!
//! `econtext call TARGET FUNCTION [ARG ...]` connects TARGET, calls
//! FUNCTION (`module.func` or `module.Class.method`) with each ARG parsed
//! as JSON, and prints the result as JSON. Exit status: 0 success, 1 the
//! remote code raised, 2 the connection failed, 3 the context died or the
//! call failed otherwise, 64 bad usage.

use std::process::ExitCode;
use std::sync::Mutex;
use std::time::Duration;

use clap::{Parser, Subcommand};
use econtext::wire::sanitize;
use econtext::{json, target, Context, Error, Master, MasterOptions};
use slog::{o, Drain, Logger};

#[derive(Parser)]
#[command(
    name = "econtext",
    version,
    about = "Run Python functions on other machines with nothing installed there"
)]
struct Cli {
    /// More log output (-v: debug records from children too).
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    verbose: u8,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Call a function in a context and print its result as JSON.
    Call {
        /// Hops joined by commas, each METHOD[:SPEC][?key=value&...], e.g.
        /// `local?python=/usr/bin/python2.7` or
        /// `ssh:root@host?identity=KEY,sudo:www-data`. Methods: local,
        /// ssh, sudo, su, docker, podman, kubectl (see README).
        target: String,
        /// `module.func` or `module.Class.method`.
        function: String,
        /// Positional arguments, each a JSON value.
        args: Vec<String>,
        /// A keyword argument, NAME=JSON (repeatable).
        #[arg(long = "kwarg", value_name = "NAME=JSON")]
        kwargs: Vec<String>,
        /// Seconds allowed for each connection stage.
        #[arg(long, default_value_t = 30.0)]
        connect_timeout: f64,
        /// Seconds allowed for the call itself (default: no limit).
        #[arg(long)]
        timeout: Option<f64>,
        /// A directory of Python modules to serve to children that cannot
        /// import them locally (repeatable; ECONTEXT_PATH is searched too).
        #[arg(long = "module-path", value_name = "DIR")]
        module_path: Vec<std::path::PathBuf>,
        /// Print one JSON line of counters on stderr at exit.
        #[arg(long)]
        stats: bool,
    },
}

fn logger(verbose: u8) -> Logger {
    let decorator = slog_term::PlainSyncDecorator::new(std::io::stderr());
    let drain = slog_term::CompactFormat::new(decorator).build().fuse();
    let level = if verbose > 0 {
        slog::Level::Debug
    } else {
        slog::Level::Info
    };
    let drain = slog::LevelFilter::new(Mutex::new(drain), level).fuse();
    Logger::root(drain, o!())
}

/// A usage error: bad JSON, bad function name, bad target.
fn usage(msg: impl std::fmt::Display) -> ExitCode {
    eprintln!("econtext: {msg}");
    ExitCode::from(64)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let Command::Call {
        target,
        function,
        args,
        kwargs,
        connect_timeout,
        timeout,
        module_path,
        stats,
    } = cli.command;

    let hops = match target::parse(&target) {
        Ok(h) => h,
        Err(e) => return usage(e),
    };
    // Every hop is parsed and validated before anything runs.
    let mut hop_options = Vec::new();
    for hop in &hops {
        match hop.options() {
            Ok(o) => hop_options.push(o),
            Err(e) => return usage(e),
        }
    }
    // The passwords are read: no child may inherit them.
    for var in hops.iter().flat_map(|h| h.password_vars()) {
        std::env::remove_var(var);
    }
    let mut parts: Vec<&str> = function.split('.').collect();
    if parts.len() < 2 || parts.iter().any(|p| p.is_empty()) {
        return usage(format!(
            "FUNCTION {function:?} must be module.func or module.Class.method"
        ));
    }
    let func = parts.pop().unwrap_or_default().to_string();
    // `a.b.c`: module `a.b`, function `c`; a capitalised last module part
    // is taken as a class (`module.Class.method`).
    let class = match parts.last() {
        Some(p) if parts.len() >= 2 && p.chars().next().is_some_and(char::is_uppercase) => {
            parts.pop().map(str::to_string)
        }
        _ => None,
    };
    let module = parts.join(".");
    let mut arg_values = Vec::new();
    for a in &args {
        match serde_json::from_str::<serde_json::Value>(a) {
            Ok(j) => arg_values.push(json::from_json(&j)),
            Err(e) => return usage(format!("argument {a:?} is not JSON: {e}")),
        }
    }
    let mut kw = Vec::new();
    for k in &kwargs {
        let Some((name, val)) = k.split_once('=') else {
            return usage(format!("--kwarg {k:?} must be NAME=JSON"));
        };
        match serde_json::from_str::<serde_json::Value>(val) {
            Ok(j) => kw.push((name.to_string(), json::from_json(&j))),
            Err(e) => return usage(format!("--kwarg {name}: not JSON: {e}")),
        }
    }

    let log = logger(cli.verbose);
    let mut path = module_path;
    path.extend(econtext::bootstrap::modules::ModuleFinder::path_from_env());
    let opts = MasterOptions {
        module_path: path,
        log: log.clone(),
        log_level: if cli.verbose > 0 { 10 } else { 20 },
        connect_timeout: Duration::from_secs_f64(connect_timeout),
        ..Default::default()
    };
    let system = actix_rt::System::new();
    system.block_on(async move {
        let master = Master::new(opts);
        let mut ctx: Option<Context> = None;
        for (hop, o) in hops.iter().zip(hop_options) {
            // Each hop after the first is created through the one before.
            let o = match &ctx {
                Some(prev) => o.via(prev),
                None => o,
            };
            match master.connect(o).await {
                Ok(c) => ctx = Some(c),
                Err(e) => {
                    let e = sanitize::text(&e.to_string());
                    eprintln!("econtext: cannot connect {}: {e}", hop.method);
                    return ExitCode::from(2);
                }
            }
        }
        let ctx = ctx.expect("at least one hop");
        let mut call = ctx.call_with(&module, &func);
        if let Some(c) = &class {
            call = call.class(c);
        }
        if let Some(t) = timeout {
            call = call.timeout(Duration::from_secs_f64(t));
        }
        let mut call = match call.args(&arg_values) {
            Ok(c) => c,
            Err(e) => return usage(e),
        };
        for (name, v) in kw {
            call = match call.kwarg(&name, &v) {
                Ok(c) => c,
                Err(e) => return usage(e),
            };
        }
        let result = call.returning::<econtext::Value>().await;
        let code = match result {
            Ok(v) => {
                println!("{}", json::to_json(&v));
                ExitCode::SUCCESS
            }
            Err(Error::Remote(e)) => {
                // The child wrote all three: escaped before they reach the
                // terminal.
                eprintln!(
                    "econtext: remote {}: {}",
                    sanitize::field(&e.type_name),
                    sanitize::text(&e.message)
                );
                eprintln!("{}", sanitize::text(&e.traceback));
                ExitCode::from(1)
            }
            Err(e) => {
                eprintln!("econtext: call failed: {}", sanitize::text(&e.to_string()));
                ExitCode::from(3)
            }
        };
        let _ = ctx.shutdown().await;
        // Give the child a moment to flush its last log lines and exit.
        let _ = tokio::time::timeout(Duration::from_secs(2), ctx.dead()).await;
        if stats {
            let counters: serde_json::Map<String, serde_json::Value> = master
                .importer_stats()
                .snapshot()
                .iter()
                .map(|(k, v)| (k.to_string(), (*v).into()))
                .collect();
            eprintln!("{}", serde_json::Value::Object(counters));
        }
        code
    })
}
