//! The master as the fan-out's [`Connector`]: each hop is a
//! [`Master::connect`], through the hop before it.

use std::time::Duration;

use econtext_actors::Context;
use econtext_bootstrap::ConnectError;
use econtext_fleet::{Connector, Hop};
use futures::future::LocalBoxFuture;
use futures::FutureExt;

use crate::{ConnectOptions, Master};

impl Connector for Master {
    fn connect(
        &self,
        hop: &Hop,
        via: Option<&Context>,
        timeout: Duration,
    ) -> LocalBoxFuture<'static, Result<Context, ConnectError>> {
        let mut o = ConnectOptions::new(hop.method.clone()).connect_timeout(timeout);
        o.name = hop.name.clone();
        if hop.rust_agent {
            o.agent = Some(econtext_agent::AgentOptions::default());
        }
        if let Some(v) = via {
            o = o.via(v);
        }
        let master = self.clone();
        async move { master.connect(o).await }.boxed_local()
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
