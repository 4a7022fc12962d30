//! Supervision from the master: child specs that say how to create a
//! context again, and the [`Master`] methods over the supervisor tree
//! (events, monitors, `kill`, `stop_and_wait`, supervised children).
//!
//! ```no_run
//! # async fn demo(master: econtext::Master) -> Result<(), Box<dyn std::error::Error>> {
//! use std::time::Duration;
//! use econtext::supervise::{ChildSpec, Restart};
//!
//! let spec = ChildSpec::connect(econtext::ConnectOptions::new(
//!     econtext::Method::Local(Default::default()),
//! ))
//! .restart(Restart::Permanent)
//! .limit(3, Duration::from_secs(10));
//! let worker = master.supervise(spec).await?;
//! // Survives the worker's process being killed: waits for the restart.
//! let pid: u32 = worker.call("os", "getpid", ()).await?;
//! # Ok(()) }
//! ```

use std::sync::Arc;
use std::time::Duration;

use actix::Recipient;
use econtext_actors::dispatch::Functions;
use econtext_actors::supervision::ChildFactory;
pub use econtext_actors::supervision::{EventStream, Scope, SubscribeOptions, SubscriptionId};
use econtext_actors::{Context, ContextEvent, DeadReason};
use econtext_bootstrap::ConnectError;
use econtext_wire::{handles, ContextId};
use futures::future::{FutureExt, LocalBoxFuture};

pub use econtext_actors::supervision::{
    Backoff, GiveUp, Restart, RestartLimit, RestartPolicy, Strategy, Supervised, SupervisedState,
    SupervisionStats, SupervisorNode,
};

use crate::{ConnectOptions, Master};

/// How to create a supervised context, again and again.
#[derive(Clone)]
enum Start {
    /// `Master::connect` with these options (method, via, name, ...).
    Connect(Box<ConnectOptions>),
    /// `Master::rust_context`, with functions built afresh for each start.
    Rust {
        name: String,
        via: Option<Context>,
        functions: Arc<dyn Fn() -> Functions + Send + Sync>,
    },
}

/// A child spec: how to create the context, and its restart policy.
#[derive(Clone)]
#[non_exhaustive]
pub struct ChildSpec {
    start: Start,
    pub policy: RestartPolicy,
    /// How long a call through the [`Supervised`] handle waits for a
    /// restart in progress before it fails with Dead (default 30 s).
    pub restart_wait: Duration,
}

impl ChildSpec {
    fn new(start: Start) -> Self {
        ChildSpec {
            start,
            policy: RestartPolicy::default(),
            restart_wait: Duration::from_secs(30),
        }
    }

    /// A context made by [`Master::connect`] (directly or `via` another).
    pub fn connect(opts: ConnectOptions) -> Self {
        ChildSpec::new(Start::Connect(Box::new(opts)))
    }

    /// An in-process Rust context made by [`Master::rust_context`];
    /// `functions` builds what it serves, once per start.
    pub fn rust(
        name: &str,
        via: Option<&Context>,
        functions: impl Fn() -> Functions + Send + Sync + 'static,
    ) -> Self {
        ChildSpec::new(Start::Rust {
            name: name.to_string(),
            via: via.cloned(),
            functions: Arc::new(functions),
        })
    }

    /// Permanent (default), Transient or Temporary.
    pub fn restart(mut self, restart: Restart) -> Self {
        self.policy.restart = restart;
        self
    }

    /// At most `max_restarts` within `window`; one more crash and the
    /// supervisor gives up ([`GiveUp::RestartLimit`]).
    pub fn limit(mut self, max_restarts: u32, window: Duration) -> Self {
        self.policy.limit = RestartLimit::new(max_restarts, window);
        self
    }

    pub fn backoff(mut self, backoff: Backoff) -> Self {
        self.policy.backoff = backoff;
        self
    }

    pub fn restart_wait(mut self, wait: Duration) -> Self {
        self.restart_wait = wait;
        self
    }

    /// The context it is created through (0: the master).
    fn parent(&self) -> ContextId {
        let via = match &self.start {
            Start::Connect(o) => o.via.as_ref(),
            Start::Rust { via, .. } => via.as_ref(),
        };
        via.map_or(handles::MASTER_ID, Context::id)
    }
}

/// Creates a spec's context through the master.
struct SpecFactory {
    master: Master,
    start: Start,
}

impl SpecFactory {
    async fn create(master: Master, start: Start) -> Result<Context, ConnectError> {
        match start {
            Start::Connect(opts) => master.connect(*opts).await,
            Start::Rust {
                name,
                via,
                functions,
            } => master.rust_context(&name, via.as_ref(), functions()).await,
        }
    }
}

impl ChildFactory for SpecFactory {
    fn start(&self) -> LocalBoxFuture<'static, Result<Context, String>> {
        let (master, start) = (self.master.clone(), self.start.clone());
        async move { Self::create(master, start).await.map_err(|e| e.to_string()) }.boxed_local()
    }
}

impl Master {
    /// Creates the context `spec` describes and supervises it: it is
    /// restarted under `spec.policy` by the supervisor of the context it
    /// was created through, and the returned handle stays valid across
    /// restarts (see [`Supervised`] for when calls wait).
    pub async fn supervise(&self, spec: ChildSpec) -> Result<Supervised, ConnectError> {
        let first = SpecFactory::create(self.clone(), spec.start.clone()).await?;
        let factory = Arc::new(SpecFactory {
            master: self.clone(),
            start: spec.start.clone(),
        });
        self.supervision()
            .supervise(
                first,
                spec.parent(),
                spec.policy,
                spec.restart_wait,
                factory,
            )
            .await
            .map_err(|r| ConnectError::Via {
                via: spec.parent(),
                reason: r.to_string(),
            })
    }

    /// How the supervisor of `parent` (None: the master's) restarts its
    /// supervised children together when one crashes.
    pub async fn set_strategy(&self, parent: Option<&Context>, strategy: Strategy) {
        let id = parent.map_or(handles::MASTER_ID, Context::id);
        self.supervision().set_strategy(id, strategy).await
    }

    /// Every context event of the tree, as a Stream; drop it to stop.
    pub async fn events(&self) -> EventStream {
        self.supervision().events(Scope::Tree).await
    }

    /// The events of `ctx` and every context created through it.
    pub async fn events_under(&self, ctx: &Context) -> EventStream {
        self.supervision().events(Scope::Subtree(ctx.id())).await
    }

    /// Monitors `ctx`: its death (and restarts, give-up) as a Stream.
    /// Dropping the stream unmonitors.
    pub async fn monitor(&self, ctx: &Context) -> EventStream {
        self.supervision().monitor(ctx.id()).await
    }

    /// Sends the events of `scope` to a user's actor until
    /// [`Master::unsubscribe`].
    pub async fn subscribe(&self, scope: Scope, actor: Recipient<ContextEvent>) -> SubscriptionId {
        self.supervision().subscribe(scope, actor).await
    }

    /// [`Master::subscribe`] with a queue of `opts.capacity` events for
    /// an actor that falls behind; past it the actor gets
    /// [`ContextEvent::Lagged`] with how many it missed.
    pub async fn subscribe_with(
        &self,
        scope: Scope,
        actor: Recipient<ContextEvent>,
        opts: SubscribeOptions,
    ) -> SubscriptionId {
        self.supervision().subscribe_with(scope, actor, opts).await
    }

    /// Ends a subscription or monitor: nothing more reaches it.
    pub async fn unsubscribe(&self, id: SubscriptionId) {
        self.supervision().unsubscribe(id).await
    }

    /// Kills `ctx` and everything created through it, children first:
    /// processes get SIGTERM, then SIGKILL after the grace period. Resolves
    /// once it is dead. A supervised context killed this way stays dead.
    pub async fn kill(&self, ctx: &Context) -> DeadReason {
        self.supervision().kill(ctx.id()).await
    }

    /// Asks `ctx` to shut down, waits until it has (killing it after the
    /// grace period if it has not), and returns why it ended.
    pub async fn stop_and_wait(&self, ctx: &Context) -> DeadReason {
        self.supervision().stop_and_wait(ctx.id()).await
    }

    /// The supervisor tree now, from the master's supervisor down.
    pub async fn supervisor_tree(&self) -> SupervisorNode {
        self.supervision().tree().await
    }
}
