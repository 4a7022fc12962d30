//! The supervisor tree: one actor per remote context, owning the process
//! (or connection) behind it. A context's death stops its process; its
//! process's exit makes the context dead. The Router orders deaths children
//! first, so a subtree is torn down from the leaves.

use std::time::Duration;

use actix::prelude::*;
use econtext_wire::ContextId;
use futures::future::LocalBoxFuture;
use slog::{debug, Logger};

use crate::event::DeadReason;
use crate::router::{ContextDied, DeclareDead, Router, Watch};

/// What a supervisor needs from whatever carries a context.
pub trait Carrier: 'static {
    /// Resolves when the process exits, with how it ended.
    fn wait(&mut self) -> LocalBoxFuture<'static, DeadReason>;
    /// Stops it now (SIGKILL for a process).
    fn kill(&mut self);
}

/// How long a context that was asked to stop may take before it is killed.
pub const DEFAULT_GRACE: Duration = Duration::from_secs(3);

/// Supervises one context's carrier.
pub struct Supervisor {
    id: ContextId,
    router: Addr<Router>,
    carrier: Box<dyn Carrier>,
    grace: Duration,
    exited: bool,
    log: Logger,
}

impl Supervisor {
    pub fn start(
        id: ContextId,
        router: Addr<Router>,
        carrier: Box<dyn Carrier>,
        grace: Duration,
        log: Logger,
    ) -> Addr<Supervisor> {
        Supervisor {
            id,
            router,
            carrier,
            grace,
            exited: false,
            log,
        }
        .start()
    }
}

impl Actor for Supervisor {
    type Context = actix::Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        self.router.do_send(Watch(ctx.address().recipient()));
        let exit = self.carrier.wait();
        ctx.spawn(exit.into_actor(self).map(|how, act, ctx| {
            act.exited = true;
            debug!(act.log, "context process exited"; "id" => act.id, "how" => %how);
            act.router.do_send(DeclareDead {
                id: act.id,
                reason: how,
            });
            ctx.stop();
        }));
    }

    fn stopped(&mut self, _: &mut Self::Context) {
        if !self.exited {
            self.carrier.kill();
        }
    }
}

impl Handler<ContextDied> for Supervisor {
    type Result = ();

    fn handle(&mut self, msg: ContextDied, ctx: &mut Self::Context) {
        if msg.id != self.id || self.exited {
            return;
        }
        // The stream is gone: the process should exit by itself (no orphans
        // by design); give it the grace period, then kill it.
        ctx.run_later(self.grace, |act, ctx| {
            if !act.exited {
                act.carrier.kill();
            }
            let _ = ctx;
        });
    }
}

/// Stops the supervised context's carrier at once.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Kill;

impl Handler<Kill> for Supervisor {
    type Result = ();

    fn handle(&mut self, _: Kill, _: &mut Self::Context) {
        if !self.exited {
            self.carrier.kill();
        }
    }
}
