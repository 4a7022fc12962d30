//! `econtext copy [fleet options] TARGET|PATTERN SRC... DEST`: push local
//! files and directories to every host. DEST ending in `/` (or several
//! SRCs) is a directory each SRC goes into under its own name; otherwise
//! a file SRC becomes DEST (inside it if DEST is a directory there) and a
//! directory SRC becomes the tree DEST.

use std::path::PathBuf;
use std::rc::Rc;

use clap::Args;
use econtext::fleet::{FleetError, Target};
use econtext::{Context, FilesExt, Master, TransferOptions};

use super::drive::drive;
use super::fleet_args::FleetArgs;
use super::report::HostOutput;
use super::transfer::{failed, BytesBar, Totals};
use super::Env;

#[derive(Args, Debug)]
pub struct CopyArgs {
    /// A TARGET (hops, as for `call`) or, with -i, a host pattern.
    pub target: String,
    /// Local files or directories, then the destination on each host.
    #[arg(required = true, num_args = 2.., value_name = "SRC... DEST")]
    pub paths: Vec<PathBuf>,
    /// Do not fsync each file before renaming it into place (still
    /// atomic; faster for many small files, not durable on power loss).
    #[arg(long)]
    pub no_fsync: bool,
    #[command(flatten)]
    pub fleet: FleetArgs,
}

struct Plan {
    srcs: Vec<PathBuf>,
    dest: PathBuf,
    into_dir: bool,
    opts: TransferOptions,
}

impl Plan {
    /// Where `src` goes on the host.
    fn dest_for(&self, src: &std::path::Path) -> PathBuf {
        if self.into_dir {
            let name = src.file_name().map(PathBuf::from).unwrap_or_default();
            self.dest.join(name)
        } else {
            self.dest.clone()
        }
    }
}

async fn copy_to(ctx: Context, _t: Target, plan: Rc<Plan>) -> Result<HostOutput, FleetError> {
    let mut totals = Totals::default();
    for src in &plan.srcs {
        let is_dir = std::fs::symlink_metadata(src).is_ok_and(|m| m.is_dir());
        let r = if is_dir {
            ctx.push_tree_with(src, plan.dest_for(src), &plan.opts)
                .await
        } else if plan.into_dir {
            let mut d = plan.dest.clone().into_os_string();
            if !d.to_string_lossy().ends_with('/') {
                d.push("/");
            }
            ctx.push_with(src, d, &plan.opts).await
        } else {
            ctx.push_with(src, &plan.dest, &plan.opts).await
        };
        match r {
            Ok(r) => totals.add(&r),
            Err(e) => return failed(e),
        }
    }
    Ok(totals.output(&plan.dest.to_string_lossy()))
}

pub fn main(env: Env, mut a: CopyArgs) -> u8 {
    let targets = match a.fleet.targets(&a.target) {
        Ok(t) => t,
        Err(e) => return super::usage(e),
    };
    let dest = a.paths.pop().expect("clap: at least two paths");
    let into_dir = dest.as_os_str().to_string_lossy().ends_with('/') || a.paths.len() > 1;
    let single = !a.fleet.is_fleet() && !a.fleet.json;
    let bar = BytesBar::new(!a.fleet.is_fleet());
    let mut opts = TransferOptions::default().fsync(!a.no_fsync);
    opts.progress = BytesBar::callback(&bar);
    let plan = Rc::new(Plan {
        srcs: std::mem::take(&mut a.paths),
        dest,
        into_dir,
        opts,
    });
    env.block_on(move |master: Master| async move {
        let f = move |ctx, t| copy_to(ctx, t, plan.clone());
        let code = if single {
            let t = targets.into_iter().next().expect("one target");
            match super::single(&master, t, &a.fleet, f).await {
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
            match drive(&master, targets, &a.fleet, env.verbose > 0, f).await {
                Ok(code) => code,
                Err(e) => super::usage(e),
            }
        };
        code
    })
}
