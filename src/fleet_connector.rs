//! The master as the fan-out's [`Connector`]: each hop is a
//! [`Master::connect`], through the hop before it. [`ManyHosts`] is the
//! same with the core compiled once on the master for every host
//! ([`ConnectOptions::compiled_core`]): what the fleet CLI uses with an
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
pub struct ManyHosts(pub Master);

impl Connector for ManyHosts {
    fn connect(
        &self,
        hop: &Hop,
        via: Option<&Context>,
        timeout: Duration,
    ) -> LocalBoxFuture<'static, Result<Context, ConnectError>> {
        econtext_bootstrap::compiled::prewarm(hop.method.python());
        connect_hop(&self.0, hop, via, timeout, true)
    }

    fn release(&self, ctx: Context) -> LocalBoxFuture<'static, ()> {
        self.0.release(ctx)
    }
}

impl Connector for Master {
    fn connect(
        &self,
        hop: &Hop,
        via: Option<&Context>,
        timeout: Duration,
    ) -> LocalBoxFuture<'static, Result<Context, ConnectError>> {
        connect_hop(self, hop, via, timeout, false)
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

fn connect_hop(
    master: &Master,
    hop: &Hop,
    via: Option<&Context>,
    timeout: Duration,
    compiled_core: bool,
) -> LocalBoxFuture<'static, Result<Context, ConnectError>> {
    let mut o = ConnectOptions::new(hop.method.clone())
        .connect_timeout(timeout)
        .compiled_core(compiled_core);
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
