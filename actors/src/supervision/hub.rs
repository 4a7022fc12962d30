//! The supervision hub: one per master (or SimTree). It hears the master
//! router's [`ContextEvent`]s, starts a [`ContextSupervisor`] for every
//! context that starts (under its creator's supervisor), hands each death
//! to that context's supervisor, and fans the supervisors' events out to
//! subscribers. [`Supervision`] is its public face.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use econtext_wire::{handles, ContextId};
use slog::{debug, warn, Logger};

use super::events::{
    EventSink, EventStream, Filter, Scope, SubscribeOptions, SubscriptionId, EVENT_QUEUE,
};
use super::handle::{ChildFactory, Supervised};
use super::queue::{Pushed, SharedQueue};
use super::spec::{RestartPolicy, Strategy};
use super::stopper::Stopper;
use super::tree::{
    ChildAdded, ContextSupervisor, Down, Kill, ProcessExited, SetStopper, SetStrategy, Snapshot,
    StopAndWait, Supervise, SupervisorNode, TreeShared,
};
use crate::event::{ContextEvent, DeadReason};
use crate::router::{InRouterTurn, Router, SubscribeService, WithSubtree};
use crate::Context;

/// Counters for leak checks: what the supervision layer holds now.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SupervisionStats {
    /// Supervisor actors alive, the master's own included.
    pub supervisors: usize,
    /// Contexts the hub indexes (alive and not yet torn down).
    pub contexts: usize,
    /// Event subscriptions and monitors.
    pub subscriptions: usize,
    /// Events queued for subscribers that have not read them yet (each
    /// subscription holds at most its capacity).
    pub queued_events: usize,
    /// Stoppers registered for contexts that have not started.
    pub pending_stoppers: usize,
}

/// The hub actor.
pub struct Hub {
    tree: TreeShared,
    root: Option<Addr<ContextSupervisor>>,
    index: HashMap<ContextId, Addr<ContextSupervisor>>,
    stoppers: HashMap<ContextId, Stopper>,
    /// Restarted events whose new context's Started has not come yet (the
    /// router's event takes one hop more than the supervisor's).
    held: HashMap<ContextId, ContextEvent>,
    subs: HashMap<SubscriptionId, (Filter, EventSink)>,
    on_gone: Option<Box<dyn Fn(ContextId)>>,
}

impl Hub {
    fn lookup(&self, id: ContextId) -> Option<Addr<ContextSupervisor>> {
        if id == handles::MASTER_ID {
            self.root.clone()
        } else {
            self.index.get(&id).cloned()
        }
    }

    fn started(&mut self, id: ContextId, name: String, parent: ContextId) {
        if self.index.contains_key(&id) || id == handles::MASTER_ID {
            return;
        }
        let Some(parent_addr) = self.lookup(parent).or_else(|| self.root.clone()) else {
            return;
        };
        let addr = ContextSupervisor::new(
            id,
            name.clone(),
            Some(parent_addr.clone()),
            self.stoppers.remove(&id),
            self.tree.clone(),
        )
        .start();
        parent_addr.do_send(ChildAdded {
            id,
            addr: addr.clone(),
        });
        self.index.insert(id, addr);
        for (filter, _) in self.subs.values_mut() {
            filter.started(id, parent);
        }
        self.publish(ContextEvent::Started { id, name, parent });
        if let Some(e) = self.held.remove(&id) {
            self.publish(e);
        }
    }

    fn publish(&mut self, e: ContextEvent) {
        let (now, log) = (Instant::now(), &self.tree.log);
        self.subs.retain(|id, (filter, sink)| {
            if !filter.wants(&e) {
                return true;
            }
            match sink.deliver(&e, now) {
                None => false,
                Some(Pushed::Missed { warn: Some(n) }) => {
                    warn!(log, "event subscriber not keeping up: events counted, not queued (it gets Lagged)";
                          "subscription" => *id, "missed_since_last_warning" => n);
                    true
                }
                Some(_) => true,
            }
        });
    }
}

impl Actor for Hub {
    type Context = actix::Context<Self>;
}

impl Handler<ContextEvent> for Hub {
    type Result = ();

    fn handle(&mut self, e: ContextEvent, _: &mut Self::Context) {
        match e {
            ContextEvent::Started { id, name, parent } => self.started(id, name, parent),
            ContextEvent::Died { id, reason } => match self.index.get(&id) {
                Some(addr) => addr.do_send(Down(reason)),
                None => {
                    self.stoppers.remove(&id);
                    if let Some(e) = self.held.remove(&id) {
                        self.publish(e);
                    }
                }
            },
            other => self.publish(other),
        }
    }
}

impl Handler<ProcessExited> for Hub {
    type Result = ();

    fn handle(&mut self, msg: ProcessExited, _: &mut Self::Context) {
        if let Some(addr) = self.index.get(&msg.id) {
            addr.do_send(msg);
        }
    }
}

/// An event from a supervisor, for subscribers.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct Publish(pub ContextEvent);

impl Handler<Publish> for Hub {
    type Result = ();

    fn handle(&mut self, msg: Publish, _: &mut Self::Context) {
        match msg.0 {
            // Started comes first: the restarted context is announced
            // before its restart is.
            ContextEvent::Restarted { id, .. } if !self.index.contains_key(&id) => {
                self.held.insert(id, msg.0);
            }
            e => self.publish(e),
        }
    }
}

/// A supervisor has finished with its dead context.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct Gone(pub ContextId);

impl Handler<Gone> for Hub {
    type Result = ();

    fn handle(&mut self, msg: Gone, _: &mut Self::Context) {
        self.index.remove(&msg.0);
        for (filter, _) in self.subs.values_mut() {
            filter.gone(msg.0);
        }
        if let Some(f) = &self.on_gone {
            f(msg.0);
        }
        debug!(self.tree.log, "supervisor gone"; "id" => msg.0);
    }
}

#[derive(Message)]
#[rtype(result = "()")]
struct RegisterStopper(ContextId, Stopper);

impl Handler<RegisterStopper> for Hub {
    type Result = ();

    fn handle(&mut self, msg: RegisterStopper, _: &mut Self::Context) {
        match self.index.get(&msg.0) {
            Some(addr) => addr.do_send(SetStopper(msg.1)),
            None => {
                self.stoppers.insert(msg.0, msg.1);
            }
        }
    }
}

#[derive(Message)]
#[rtype(result = "()")]
struct AddSubscription(SubscriptionId, Filter, EventSink);

impl Handler<AddSubscription> for Hub {
    type Result = ();

    fn handle(&mut self, msg: AddSubscription, _: &mut Self::Context) {
        msg.2.start();
        self.subs.insert(msg.0, (msg.1, msg.2));
    }
}

/// Ends a subscription: nothing more is delivered to it.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct Unsubscribe(pub SubscriptionId);

impl Handler<Unsubscribe> for Hub {
    type Result = ();

    fn handle(&mut self, msg: Unsubscribe, _: &mut Self::Context) {
        self.subs.remove(&msg.0);
    }
}

#[derive(Message)]
#[rtype(result = "Option<Addr<ContextSupervisor>>")]
struct Lookup(ContextId);

impl Handler<Lookup> for Hub {
    type Result = Option<Addr<ContextSupervisor>>;

    fn handle(&mut self, msg: Lookup, _: &mut Self::Context) -> Self::Result {
        self.lookup(msg.0)
    }
}

/// [`Lookup`] whose answer goes to `tx`: queued at the hub by the router
/// (see `Supervision::supervisor`), so it comes after the router's events.
#[derive(Message)]
#[rtype(result = "()")]
struct LookupThen {
    id: ContextId,
    tx: futures::channel::oneshot::Sender<Option<Addr<ContextSupervisor>>>,
}

impl Handler<LookupThen> for Hub {
    type Result = ();

    fn handle(&mut self, msg: LookupThen, _: &mut Self::Context) {
        let _ = msg.tx.send(self.lookup(msg.id));
    }
}

#[derive(Message)]
#[rtype(result = "SupervisionStats")]
struct GetStats;

impl Handler<GetStats> for Hub {
    type Result = MessageResult<GetStats>;

    fn handle(&mut self, _: GetStats, _: &mut Self::Context) -> Self::Result {
        MessageResult(SupervisionStats {
            supervisors: self.tree.live.load(Ordering::SeqCst),
            contexts: self.index.len(),
            subscriptions: self.subs.len(),
            queued_events: self.subs.values().map(|(_, s)| s.queue.len()).sum(),
            pending_stoppers: self.stoppers.len() + self.held.len(),
        })
    }
}

/// How a [`Supervision`] is set up.
#[non_exhaustive]
pub struct SupervisionOptions {
    /// How long a context asked to stop may take before it is killed.
    pub grace: Duration,
    pub log: Logger,
    /// Called once each context's supervisor is done with it (the facade
    /// forgets its own bookkeeping for the context then).
    pub on_gone: Option<Box<dyn Fn(ContextId)>>,
}

impl SupervisionOptions {
    pub fn new(grace: Duration, log: Logger) -> Self {
        SupervisionOptions {
            grace,
            log,
            on_gone: None,
        }
    }
}

/// The supervisor tree of one master: events, monitors, kill, stop and
/// supervised children. Cheap to clone.
#[derive(Clone)]
pub struct Supervision {
    hub: Addr<Hub>,
    /// The master's router: its core holds the tree's parentage.
    router: Addr<Router>,
    next_sub: Arc<AtomicU64>,
}

impl Supervision {
    /// Starts the hub and the master's own supervisor, listening to the
    /// master's `router`. Call inside an actix system.
    pub fn start(router: Addr<Router>, opts: SupervisionOptions) -> Supervision {
        let master_router = router.clone();
        let hub = Hub::create(|ctx| {
            // Subscribed before this returns, so no start is missed.
            router.do_send(SubscribeService(ctx.address().recipient()));
            let tree = TreeShared {
                hub: ctx.address(),
                router,
                grace: opts.grace,
                live: Arc::new(AtomicUsize::new(0)),
                log: opts.log,
            };
            let root = ContextSupervisor::new(
                handles::MASTER_ID,
                "master".into(),
                None,
                None,
                tree.clone(),
            );
            Hub {
                tree,
                root: Some(root.start()),
                index: HashMap::new(),
                stoppers: HashMap::new(),
                held: HashMap::new(),
                subs: HashMap::new(),
                on_gone: opts.on_gone,
            }
        });
        Supervision {
            hub,
            router: master_router,
            next_sub: Arc::new(AtomicU64::new(1)),
        }
    }

    /// Registers a subscription; resolves once it is queued at the hub
    /// (ahead of every event emitted after this returns). A subtree
    /// scope's members come from the master router's core, handed to the
    /// hub in the router's turn, so that no start is missed in between.
    async fn add_subscription(&self, scope: Scope, sink: EventSink) -> SubscriptionId {
        let id = self.next_sub.fetch_add(1, Ordering::Relaxed);
        let Scope::Subtree(root) = scope else {
            let _ = self
                .hub
                .send(AddSubscription(id, Filter::new(scope, Vec::new()), sink))
                .await;
            return id;
        };
        // Whoever runs first takes the sink: the router, in its turn, or
        // this function when the router has stopped (then no more starts
        // come, and the root alone is the subtree).
        let slot = Arc::new(std::sync::Mutex::new(Some(sink)));
        let (hub, taken) = (self.hub.clone(), slot.clone());
        let then = Box::new(move |members: Vec<ContextId>| {
            if let Some(sink) = taken.lock().ok().and_then(|mut s| s.take()) {
                hub.do_send(AddSubscription(id, Filter::new(scope, members), sink));
            }
        });
        let _ = self.router.send(WithSubtree { root, then }).await;
        let left = slot.lock().ok().and_then(|mut s| s.take());
        if let Some(sink) = left {
            let filter = Filter::new(scope, vec![root]);
            let _ = self.hub.send(AddSubscription(id, filter, sink)).await;
        }
        id
    }

    /// Tells the supervisor of `id` how to end it (before or after the
    /// context's Started event).
    pub fn set_stopper(&self, id: ContextId, stopper: Stopper) {
        self.hub.do_send(RegisterStopper(id, stopper));
    }

    /// Where a [`crate::supervisor::ProcessWatch`] reports its process's
    /// exit, so that the death is reported with the exit status.
    pub fn exit_sink(&self) -> Recipient<ProcessExited> {
        self.hub.clone().recipient()
    }

    /// The events of `scope` as a Stream; drop it to unsubscribe.
    pub async fn events(&self, scope: Scope) -> EventStream {
        let queue = SharedQueue::new(EVENT_QUEUE);
        let sink = EventSink {
            queue: queue.clone(),
            actor: None,
        };
        let id = self.add_subscription(scope, sink).await;
        EventStream {
            id,
            queue,
            hub: self.hub.clone(),
        }
    }

    /// Monitors one context: its death, restarts and give-up, as a Stream.
    /// Dropping the stream is unmonitoring.
    pub async fn monitor(&self, id: ContextId) -> EventStream {
        self.events(Scope::Context(id)).await
    }

    /// Sends the events of `scope` to a user's actor until
    /// [`Self::unsubscribe`] (or until the actor stops), with the default
    /// [`SubscribeOptions`].
    pub async fn subscribe(&self, scope: Scope, actor: Recipient<ContextEvent>) -> SubscriptionId {
        self.subscribe_with(scope, actor, SubscribeOptions::default())
            .await
    }

    /// Sends the events of `scope` to a user's actor, one at a time (the
    /// next once it has handled the last), through a queue of
    /// `opts.capacity`: an actor that stops reading costs at most that,
    /// and when it reads again it gets [`ContextEvent::Lagged`] with how
    /// many events it missed.
    pub async fn subscribe_with(
        &self,
        scope: Scope,
        actor: Recipient<ContextEvent>,
        opts: SubscribeOptions,
    ) -> SubscriptionId {
        let sink = EventSink {
            queue: SharedQueue::new(opts.capacity),
            actor: Some(actor),
        };
        self.add_subscription(scope, sink).await
    }

    /// Ends a subscription or monitor; once this resolves, nothing more is
    /// delivered to it.
    pub async fn unsubscribe(&self, id: SubscriptionId) {
        let _ = self.hub.send(Unsubscribe(id)).await;
    }

    async fn supervisor(&self, id: ContextId) -> Option<Addr<ContextSupervisor>> {
        if let Some(found) = self.hub.send(Lookup(id)).await.ok().flatten() {
            return Some(found);
        }
        // The context may be so new that its Started is still on its way
        // from the router to the hub (a kill right after connect): ask
        // again behind every event the router has emitted so far. The
        // router queues the lookup in its turn, after those events, so
        // the hub handles it after their Started.
        let (tx, rx) = futures::channel::oneshot::channel();
        let hub = self.hub.clone();
        let then = Box::new(move || hub.do_send(LookupThen { id, tx }));
        self.router.send(InRouterTurn(then)).await.ok()?;
        rx.await.ok().flatten()
    }

    /// Kills `id` and its subtree (children first; processes get SIGTERM,
    /// then SIGKILL after the grace period) and resolves once it is dead.
    /// A supervised child killed this way is not restarted.
    pub async fn kill(&self, id: ContextId) -> DeadReason {
        match self.supervisor(id).await {
            Some(s) => s
                .send(Kill { deliberate: true })
                .await
                .unwrap_or(DeadReason::Killed),
            None => DeadReason::Unreachable,
        }
    }

    /// Asks `id` to shut down and waits until it has; kills it if it is
    /// still there after the grace period. It is not restarted.
    pub async fn stop_and_wait(&self, id: ContextId) -> DeadReason {
        match self.supervisor(id).await {
            Some(s) => s.send(StopAndWait).await.unwrap_or(DeadReason::Killed),
            None => DeadReason::Unreachable,
        }
    }

    /// The supervisor tree now, from the master's supervisor down.
    pub async fn tree(&self) -> SupervisorNode {
        let empty = SupervisorNode {
            id: handles::MASTER_ID,
            name: "master".into(),
            children: Vec::new(),
        };
        match self.supervisor(handles::MASTER_ID).await {
            Some(root) => root.send(Snapshot).await.unwrap_or(empty),
            None => empty,
        }
    }

    /// Supervises `first`, just created through `factory` as a child of
    /// `parent` (the context it was created through; 0 for the master):
    /// `factory` creates it again whenever `policy` says so. Calls through
    /// the returned handle wait for a restart in progress for at most
    /// `restart_wait`.
    pub async fn supervise(
        &self,
        first: Context,
        parent: ContextId,
        policy: RestartPolicy,
        restart_wait: Duration,
        factory: Arc<dyn ChildFactory>,
    ) -> Result<Supervised, DeadReason> {
        let Some(s) = self.supervisor(parent).await else {
            return Err(DeadReason::Unreachable);
        };
        let msg = Supervise {
            first,
            policy,
            restart_wait,
            factory,
        };
        s.send(msg).await.map_err(|_| DeadReason::RouterStopped)
    }

    /// How the supervisor of `parent` restarts its supervised children
    /// when one crashes.
    pub async fn set_strategy(&self, parent: ContextId, strategy: Strategy) {
        if let Some(s) = self.supervisor(parent).await {
            let _ = s.send(SetStrategy(strategy)).await;
        }
    }

    pub async fn stats(&self) -> SupervisionStats {
        self.hub.send(GetStats).await.unwrap_or_default()
    }
}
