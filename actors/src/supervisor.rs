//! `ProcessWatch`: the owner of one context's process (its [`Carrier`]),
//! in the context that started it. The process's exit makes the context
//! dead; the context's death gives the process the grace period to exit
//! by itself (no orphans by design), then kills it. It watches its own
//! context only. The supervisor tree proper (one supervisor per context,
//! events, restarts) is [`crate::supervision`].

use std::time::Duration;

use actix::prelude::*;
use econtext_wire::ContextId;
use futures::future::LocalBoxFuture;
use slog::{debug, Logger};

use crate::event::DeadReason;
use crate::router::{DeclareDead, Router, WatchContext};
use crate::supervision::ProcessExited;

/// What a process watch needs from whatever carries a context.
pub trait Carrier: 'static {
    /// Resolves when the process exits, with how it ended.
    fn wait(&mut self) -> LocalBoxFuture<'static, DeadReason>;
    /// Stops it now (SIGKILL for a process).
    fn kill(&mut self);
}

/// How long a context that was asked to stop may take before it is killed.
pub const DEFAULT_GRACE: Duration = Duration::from_secs(3);

/// Owns one context's process; tells `on_exit` (the supervision hub) how
/// it exited.
pub struct ProcessWatch {
    id: ContextId,
    router: Addr<Router>,
    carrier: Box<dyn Carrier>,
    grace: Duration,
    exited: bool,
    on_exit: Option<Recipient<ProcessExited>>,
    log: Logger,
}

impl ProcessWatch {
    pub fn start(
        id: ContextId,
        router: Addr<Router>,
        carrier: Box<dyn Carrier>,
        grace: Duration,
        on_exit: Option<Recipient<ProcessExited>>,
        log: Logger,
    ) -> Addr<ProcessWatch> {
        ProcessWatch {
            id,
            router,
            carrier,
            grace,
            exited: false,
            on_exit,
            log,
        }
        .start()
    }
}

impl Actor for ProcessWatch {
    type Context = actix::Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        let exit = self.carrier.wait();
        ctx.spawn(exit.into_actor(self).map(|how, act, ctx| {
            act.exited = true;
            debug!(act.log, "context process exited"; "id" => act.id, "how" => %how);
            if let Some(r) = &act.on_exit {
                r.do_send(ProcessExited {
                    id: act.id,
                    reason: how.clone(),
                });
            }
            act.router.do_send(DeclareDead {
                id: act.id,
                reason: how,
            });
            ctx.stop();
        }));
        // Its own context's death only (not every death in the tree).
        let (router, id) = (self.router.clone(), self.id);
        let died = async move {
            if let Ok(rx) = router.send(WatchContext(id)).await {
                let _ = rx.await;
            }
        };
        ctx.spawn(
            died.into_actor(self)
                .map(|_, act, ctx| act.context_died(ctx)),
        );
    }

    fn stopped(&mut self, _: &mut Self::Context) {
        if !self.exited {
            self.carrier.kill();
        }
    }
}

impl ProcessWatch {
    /// The stream is gone: the process should exit by itself; give it the
    /// grace period, then kill it.
    fn context_died(&mut self, ctx: &mut actix::Context<Self>) {
        if self.exited {
            return;
        }
        ctx.run_later(self.grace, |act, _| {
            if !act.exited {
                act.carrier.kill();
            }
        });
    }
}
