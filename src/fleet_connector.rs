//! The master as the fan-out's [`Connector`]: each hop is a
//! [`Master::connect`], through the hop before it. [`ManyHosts`] is the
//! same with the core compiled once on the master for every host
//! ([`ConnectOptions::compiled_core`]) and, when asked, the lean start
//! ([`ConnectOptions::lean_start`]): what the fleet CLI uses with an
//! inventory.

use std::time::Duration;

use econtext_actors::Context;
use econtext_bootstrap::ConnectError;
use econtext_fleet::{Connector, Hop};
use futures::future::LocalBoxFuture;
use futures::FutureExt;

use crate::{ConnectOptions, Master};

/// A [`Master`] connecting many hosts: the core compiled once here (a
/// local interpreter's ~40 ms, started at the first connect) beats
/// compiling it on every host (13-14 ms each); for one host it does not.
#[derive(Clone)]
pub struct ManyHosts {
    master: Master,
    compiled_core: bool,
    lean_start: bool,
    preload: &'static [&'static str],
}

impl ManyHosts {
    pub fn new(master: Master) -> Self {
        ManyHosts {
            master,
            compiled_core: true,
            lean_start: false,
            preload: &[],
        }
    }

    /// Whether direct hops get the core compiled here (default yes:
    /// [`ConnectOptions::compiled_core`]). The CLI turns it off for a
    /// single target, where the local compile costs more than it saves.
    pub fn compiled_core(mut self, yes: bool) -> Self {
        self.compiled_core = yes;
        self
    }

    /// Direct hops get these builtin modules with their payload
    /// ([`ConnectOptions::preload`]): `econtext.fleet` for `run`.
    pub fn preload(mut self, modules: &'static [&'static str]) -> Self {
        self.preload = modules;
        self
    }

    /// Direct hops start lean ([`ConnectOptions::lean_start`]): for
    /// closures that need nothing from the hosts' site-packages.
    pub fn lean_start(mut self, yes: bool) -> Self {
        self.lean_start = yes;
        self
    }
}

impl Connector for ManyHosts {
    fn connect(
        &self,
        hop: &Hop,
        via: Option<&Context>,
        timeout: Duration,
    ) -> LocalBoxFuture<'static, Result<Context, ConnectError>> {
        if self.compiled_core {
            econtext_bootstrap::compiled::prewarm(hop.method.python());
        }
        let start = Start {
            compiled_core: self.compiled_core,
            lean: self.lean_start,
            preload: self.preload,
        };
        connect_hop(&self.master, hop, via, timeout, start)
    }

    fn release(&self, ctx: Context) -> LocalBoxFuture<'static, ()> {
        self.master.release(ctx)
    }
}

impl Connector for Master {
    fn connect(
        &self,
        hop: &Hop,
        via: Option<&Context>,
        timeout: Duration,
    ) -> LocalBoxFuture<'static, Result<Context, ConnectError>> {
        connect_hop(self, hop, via, timeout, Start::default())
    }

    /// Shuts the context down and gives it a moment (2 s at most) to
    /// flush its last log lines and exit.
    fn release(&self, ctx: Context) -> LocalBoxFuture<'static, ()> {
        async move {
            let _ = ctx.shutdown().await;
            let _ = tokio::time::timeout(Duration::from_secs(2), ctx.dead()).await;
        }
        .boxed_local()
    }
}

/// How a hop's context starts.
#[derive(Clone, Copy, Default)]
struct Start {
    compiled_core: bool,
    lean: bool,
    preload: &'static [&'static str],
}

fn connect_hop(
    master: &Master,
    hop: &Hop,
    via: Option<&Context>,
    timeout: Duration,
    start: Start,
) -> LocalBoxFuture<'static, Result<Context, ConnectError>> {
    let mut o = ConnectOptions::new(hop.method.clone())
        .connect_timeout(timeout)
        .compiled_core(start.compiled_core)
        .lean_start(start.lean)
        .preload(start.preload);
    o.name = hop.name.clone();
    if hop.rust_agent {
        o.agent = Some(econtext_agent::AgentOptions::default());
    }
    if let Some(v) = via {
        o = o.via(v);
    }
    let master = master.clone();
    async move { master.connect(o).await }.boxed_local()
}
