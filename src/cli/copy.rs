//! `econtext copy [fleet options] TARGET|PATTERN SRC... DEST`: push local
//! files and directories to every host. DEST ending in `/` (or several
//! SRCs) is a directory each SRC goes into under its own name; otherwise
//! a file SRC becomes DEST (inside it if DEST is a directory there) and a
//! directory SRC becomes the tree DEST.

use std::cell::RefCell;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::Instant;

use clap::Args;
use econtext::actors::DeadReason;
use econtext::fleet::{FleetError, Target};
use econtext::wire::ContextId;
use econtext::{Context, FileError, FileErrorKind, FilesExt, Master, TransferOptions};
use tokio::sync::oneshot;

use super::copy_groups::{group_key, Gatherer};
use super::drive::drive_on;
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
    /// fsync each file before renaming it into place: durable on power
    /// loss once copy reports success (slower, most for many small
    /// files). Without it (the default, as with scp, rsync and tar) each
    /// file is still replaced atomically.
    #[arg(long, conflicts_with = "no_fsync")]
    pub fsync: bool,
    /// The default: rename into place without an fsync (still atomic).
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
    /// Where `src` goes on the host, and whether it is a tree.
    fn target_of(&self, src: &Path) -> (PathBuf, bool) {
        let is_dir = std::fs::symlink_metadata(src).is_ok_and(|m| m.is_dir());
        if is_dir {
            let dest = if self.into_dir {
                let name = src.file_name().map(PathBuf::from).unwrap_or_default();
                self.dest.join(name)
            } else {
                self.dest.clone()
            };
            (dest, true)
        } else if self.into_dir {
            let mut d = self.dest.clone().into_os_string();
            if !d.to_string_lossy().ends_with('/') {
                d.push("/");
            }
            (d.into(), false)
        } else {
            (self.dest.clone(), false)
        }
    }
}

/// One host's pushes, on its own.
async fn copy_to(ctx: Context, plan: &Plan) -> Result<HostOutput, FleetError> {
    let mut totals = Totals::default();
    for src in &plan.srcs {
        let r = match plan.target_of(src) {
            (dest, true) => ctx.push_tree_with(src, dest, &plan.opts).await,
            (dest, false) => ctx.push_with(src, dest, &plan.opts).await,
        };
        match r {
            Ok(r) => totals.add(&r),
            Err(e) => return failed(e),
        }
    }
    Ok(totals.output(&plan.dest.to_string_lossy()))
}

type HostResult = Result<HostOutput, FleetError>;

/// A connected host waiting for its group's push.
struct Member {
    ctx: Context,
    /// Its parent: the intermediate that relays to it.
    via: ContextId,
    via_name: String,
    tx: oneshot::Sender<HostResult>,
}

/// What every host's closure shares.
struct Copy {
    master: Master,
    plan: Plan,
    gather: RefCell<Gatherer<Member>>,
}

/// One host: alone when no other host of the copy shares its
/// intermediate, else through its group's `push_fanout`.
async fn copy_host(ctx: Context, t: Target, c: Rc<Copy>) -> HostResult {
    let key = group_key(&t).filter(|k| c.gather.borrow().gathers(k));
    let via = c.master.ancestors(ctx.id()).await.first().copied();
    let (Some(key), Some(via)) = (key, via) else {
        return copy_to(ctx, &c.plan).await;
    };
    let via_name = t
        .hops
        .iter()
        .rev()
        .nth(1)
        .and_then(|h| h.name.clone())
        .unwrap_or_else(|| format!("context {via}"));
    let (tx, mut rx) = oneshot::channel();
    let m = Member {
        ctx,
        via,
        via_name,
        tx,
    };
    let batches = c.gather.borrow_mut().arrive(&key, m, Instant::now());
    start(&c, batches);
    loop {
        let deadline = c.gather.borrow().deadline(&key);
        let quiet = async {
            match deadline {
                Some(d) => tokio::time::sleep_until(d.into()).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            r = &mut rx => {
                return r.unwrap_or_else(|_| Err(FleetError::Died(DeadReason::Other(
                    "the group's push ended without a result".into(),
                ))));
            }
            _ = quiet => {
                let batch = c.gather.borrow_mut().tick(&key, Instant::now());
                start(&c, batch.into_iter().collect());
            }
        }
    }
}

fn start(c: &Rc<Copy>, batches: Vec<Vec<Member>>) {
    for b in batches {
        actix_rt::spawn(run_batch(c.clone(), b));
    }
}

/// A batch: one `push_fanout` per intermediate (one, normally), each
/// member's outcome sent to its closure.
async fn run_batch(c: Rc<Copy>, batch: Vec<Member>) {
    let mut by_via: HashMap<ContextId, Vec<Member>> = HashMap::new();
    for m in batch {
        by_via.entry(m.via).or_default().push(m);
    }
    for (_, mut members) in by_via {
        if members.len() == 1 {
            let m = members.pop().expect("one");
            let r = copy_to(m.ctx, &c.plan).await;
            let _ = m.tx.send(r);
        } else {
            fanout(&c.plan, members).await;
        }
    }
}

/// Pushes every SRC to `members` (children of one intermediate) with one
/// `push_fanout` each: the data crosses the master's link once.
async fn fanout(plan: &Plan, members: Vec<Member>) {
    let first = &members[0];
    let via = Context::new(
        first.via,
        &first.via_name,
        first.ctx.me(),
        first.ctx.router().clone(),
    );
    let mut alive: Vec<(Member, Totals)> = members
        .into_iter()
        .map(|m| (m, Totals::default()))
        .collect();
    for src in &plan.srcs {
        if alive.is_empty() {
            return;
        }
        let (dest, tree) = plan.target_of(src);
        let kids: Vec<Context> = alive.iter().map(|(m, _)| m.ctx.clone()).collect();
        let results = match via.push_fanout(&kids, src, dest, tree, &plan.opts).await {
            Ok(r) => r,
            Err(e) => {
                for (m, _) in alive {
                    let _ = m.tx.send(failed(e.clone()));
                }
                return;
            }
        };
        let mut results: HashMap<ContextId, _> = results.into_iter().collect();
        let mut still = Vec::new();
        for (m, mut totals) in alive {
            match results.remove(&m.ctx.id()) {
                Some(Ok(r)) => {
                    totals.add(&r);
                    still.push((m, totals));
                }
                Some(Err(e)) => {
                    let _ = m.tx.send(failed(e));
                }
                None => {
                    let e = FileError::new(FileErrorKind::Protocol, m.ctx.name(), "", "no result");
                    let _ = m.tx.send(failed(e));
                }
            }
        }
        alive = still;
    }
    for (m, totals) in alive {
        let _ = m.tx.send(Ok(totals.output(&plan.dest.to_string_lossy())));
    }
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
    let mut opts = TransferOptions::default().fsync(a.fsync);
    opts.progress = BytesBar::callback(&bar);
    let plan = Plan {
        srcs: std::mem::take(&mut a.paths),
        dest,
        into_dir,
        opts,
    };
    // Hosts under one intermediate are pushed together (push_fanout).
    let mut sizes: HashMap<String, usize> = HashMap::new();
    for k in targets.iter().filter_map(group_key) {
        *sizes.entry(k).or_default() += 1;
    }
    let gather = Gatherer::new(sizes, a.fleet.forks);
    env.block_on(move |master: Master| async move {
        let c = Rc::new(Copy {
            master: master.clone(),
            plan,
            gather: RefCell::new(gather),
        });
        let f = move |ctx, t| copy_host(ctx, t, c.clone());
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
            match drive_on(
                super::transfer::hosts(&master),
                targets,
                &a.fleet,
                env.verbose > 0,
                f,
            )
            .await
            {
                Ok(code) => code,
                Err(e) => super::usage(e),
            }
        };
        if a.fleet.stats {
            // Bytes the master wrote to its links: one bastion's group
            // carries the files once.
            let link_bytes = master
                .router()
                .send(econtext::actors::router::GetStats)
                .await
                .map(|s| s.link_bytes)
                .unwrap_or(0);
            super::print_stats_with(&master, &[("master_link_bytes", link_bytes)]);
        }
        code
    })
}
