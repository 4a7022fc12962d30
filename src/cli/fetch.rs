//! `econtext fetch [fleet options] TARGET|PATTERN SRC DEST_DIR`: pull a
//! file or directory from every host. With an inventory (several hosts)
//! each lands in `DEST_DIR/<host>/<name of SRC>`, like Ansible's fetch;
//! from one TARGET, in `DEST_DIR/<name of SRC>`.

use std::path::PathBuf;
use std::rc::Rc;

use clap::Args;
use econtext::fleet::{FleetError, Target};
use econtext::{Context, FileErrorKind, FilesExt, Master, TransferOptions};

use super::drive::drive_on;
use super::fleet_args::FleetArgs;
use super::report::{file_name, HostOutput};
use super::transfer::{failed, BytesBar, Totals};
use super::Env;

#[derive(Args, Debug)]
pub struct FetchArgs {
    /// A TARGET (hops, as for `call`) or, with -i, a host pattern.
    pub target: String,
    /// The file or directory on each host.
    pub src: PathBuf,
    /// The local directory to pull into (created if missing).
    pub dest_dir: PathBuf,
    /// fsync each file before renaming it into place (durable on power
    /// loss); without it each file is still replaced atomically.
    #[arg(long, conflicts_with = "no_fsync")]
    pub fsync: bool,
    /// The default: rename into place without an fsync (still atomic).
    #[arg(long)]
    pub no_fsync: bool,
    #[command(flatten)]
    pub fleet: FleetArgs,
}

struct Plan {
    src: PathBuf,
    dest_dir: PathBuf,
    per_host: bool,
    opts: TransferOptions,
}

async fn fetch_from(ctx: Context, t: Target, plan: Rc<Plan>) -> Result<HostOutput, FleetError> {
    let dir = if plan.per_host {
        // The host name as one safe path component: a hostile inventory
        // name cannot leave DEST_DIR.
        plan.dest_dir.join(file_name(&t.name))
    } else {
        plan.dest_dir.clone()
    };
    if let Err(e) = std::fs::create_dir_all(&dir) {
        return failed(econtext::FileError::local(&dir, &e));
    }
    let name = plan
        .src
        .file_name()
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("root"));
    let dest = dir.join(name);
    let r = match ctx.pull_with(&plan.src, &dest, &plan.opts).await {
        Err(e) if e.kind == FileErrorKind::IsADirectory => {
            ctx.pull_tree_with(&plan.src, &dest, &plan.opts).await
        }
        r => r,
    };
    match r {
        Ok(r) => {
            let mut t = Totals::default();
            t.add(&r);
            Ok(t.output(&dest.to_string_lossy()))
        }
        Err(e) => failed(e),
    }
}

pub fn main(env: Env, a: FetchArgs) -> u8 {
    let targets = match a.fleet.targets(&a.target) {
        Ok(t) => t,
        Err(e) => return super::usage(e),
    };
    let single = !a.fleet.is_fleet() && !a.fleet.json;
    let bar = BytesBar::new(!a.fleet.is_fleet());
    let mut opts = TransferOptions::default().fsync(a.fsync);
    opts.progress = BytesBar::callback(&bar);
    let plan = Rc::new(Plan {
        src: a.src.clone(),
        dest_dir: a.dest_dir.clone(),
        per_host: a.fleet.is_fleet(),
        opts,
    });
    env.block_on(move |master: Master| async move {
        let f = move |ctx, t| fetch_from(ctx, t, plan.clone());
        let code = if single {
            let t = targets.into_iter().next().expect("one target");
            match super::single(super::transfer::hosts(&master), t, &a.fleet, f).await {
                Ok(r) => {
                    if let Some(b) = &bar {
                        b.finish();
                    }
                    println!("{}", r.text_line(env.verbose > 0));
                    super::report::exit_code(&[r.status], false)
                }
                Err(e) => super::usage(e),
            }
        } else {
            let hosts = super::transfer::hosts(&master);
            match drive_on(hosts, targets, &a.fleet, env.verbose > 0, f).await {
                Ok(code) => code,
                Err(e) => super::usage(e),
            }
        };
        if a.fleet.stats {
            super::print_stats(&master);
        }
        code
    })
}
