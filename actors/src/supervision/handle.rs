//! [`Supervised`]: the handle a user holds on a restartable child. It
//! stays valid across restarts, each of which gives the child a new
//! context ID.
//!
//! **The waiting rule.** A call made while the child is being restarted
//! waits for the restart, for at most the spec's `restart_wait`, then
//! fails with [`Error::Dead`]. A call already in flight when the child dies
//! fails at once with [`Error::Dead`] and is not retried (it may have had
//! effects). Once the supervisor has given up, or the child was stopped for
//! good, every call fails at once.

use std::sync::Arc;
use std::time::Duration;

use actix::Addr;
use futures::future::LocalBoxFuture;
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::sync::watch;

use super::spec::GiveUp;
use super::tree::{ContextSupervisor, StopSlot};
use super::SlotId;
use crate::error::{Error, Result};
use crate::event::DeadReason;
use crate::Context;

/// How to create a child again. The facade implements it over its
/// connect options (method, via, name); tests implement it over SimTree.
pub trait ChildFactory: Send + Sync + 'static {
    /// Creates the context. The error says why it could not be created.
    fn start(&self) -> LocalBoxFuture<'static, std::result::Result<Context, String>>;
}

impl<F> ChildFactory for F
where
    F: Fn() -> LocalBoxFuture<'static, std::result::Result<Context, String>>
        + Send
        + Sync
        + 'static,
{
    fn start(&self) -> LocalBoxFuture<'static, std::result::Result<Context, String>> {
        self()
    }
}

/// Where a supervised child is in its life.
#[derive(Debug, Clone)]
pub enum SupervisedState {
    /// Up, reachable through this context.
    Running(Context),
    /// Down and about to be started again (attempt `attempt` in the window).
    Restarting { last: Context, reason: DeadReason },
    /// Stopped for good under its policy or by the user.
    Stopped { last: Context, reason: DeadReason },
    /// Crashed past its restart limit.
    GaveUp { last: Context, reason: GiveUp },
}

impl SupervisedState {
    /// The context it runs as, or ran as last.
    pub fn last(&self) -> &Context {
        match self {
            SupervisedState::Running(c)
            | SupervisedState::Restarting { last: c, .. }
            | SupervisedState::Stopped { last: c, .. }
            | SupervisedState::GaveUp { last: c, .. } => c,
        }
    }
}

pub(crate) struct Shared {
    pub(crate) state: watch::Sender<SupervisedState>,
    pub(crate) restart_wait: Duration,
    pub(crate) supervisor: Addr<ContextSupervisor>,
    pub(crate) slot: SlotId,
}

/// A stable handle on a supervised child. Cheap to clone.
#[derive(Clone)]
pub struct Supervised {
    pub(crate) shared: Arc<Shared>,
}

impl std::fmt::Debug for Supervised {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Supervised({:?})", *self.shared.state.borrow())
    }
}

impl Supervised {
    /// The child's state now.
    pub fn state(&self) -> SupervisedState {
        self.shared.state.borrow().clone()
    }

    /// The context it runs as now (or ran as last).
    pub fn current(&self) -> Context {
        self.shared.state.borrow().last().clone()
    }

    /// Waits (under the waiting rule above) for the child to be running.
    pub async fn context(&self) -> Result<Context> {
        let mut rx = self.shared.state.subscribe();
        let wait = tokio::time::timeout(self.shared.restart_wait, async {
            loop {
                let fail = match &*rx.borrow_and_update() {
                    SupervisedState::Running(c) => return Ok(c.clone()),
                    SupervisedState::Restarting { .. } => None,
                    SupervisedState::Stopped { last, reason } => Some(Error::Dead {
                        context: last.id(),
                        reason: reason.clone(),
                    }),
                    SupervisedState::GaveUp { last, reason } => Some(Error::Dead {
                        context: last.id(),
                        reason: DeadReason::Other(reason.to_string()),
                    }),
                };
                if let Some(e) = fail {
                    return Err(e);
                }
                if rx.changed().await.is_err() {
                    return Err(Error::RouterGone);
                }
            }
        });
        match wait.await {
            Ok(r) => r,
            Err(_) => Err(match self.state() {
                SupervisedState::Restarting { last, reason } => Error::Dead {
                    context: last.id(),
                    reason,
                },
                other => Error::Dead {
                    context: other.last().id(),
                    reason: DeadReason::Unreachable,
                },
            }),
        }
    }

    /// Calls `module.function(*args)` on the child as it is now, waiting
    /// for a restart in progress (the waiting rule above).
    pub async fn call<T: DeserializeOwned>(
        &self,
        module: &str,
        function: &str,
        args: impl Serialize,
    ) -> Result<T> {
        self.context().await?.call(module, function, args).await
    }

    /// Stops the child for good (SHUTDOWN, then kill after the grace
    /// period) and waits until it is gone: it is not restarted.
    pub async fn stop(&self) -> DeadReason {
        let stop = StopSlot {
            slot: self.shared.slot,
            kill: false,
        };
        self.shared
            .supervisor
            .send(stop)
            .await
            .unwrap_or(DeadReason::RouterStopped)
    }

    /// Kills the child for good (SIGTERM, SIGKILL after the grace period)
    /// and waits until it and its subtree are gone: it is not restarted.
    pub async fn kill(&self) -> DeadReason {
        let stop = StopSlot {
            slot: self.shared.slot,
            kill: true,
        };
        self.shared
            .supervisor
            .send(stop)
            .await
            .unwrap_or(DeadReason::RouterStopped)
    }
}
