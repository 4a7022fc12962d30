//! [`ContextSupervisor`]: one actor per context, child of the supervisor
//! of the context it was created through, so the supervisor tree has the
//! shape of the context tree. It ends its context (children first), turns
//! the context's death into a `Died` event after its children's, and
//! restarts its supervised children under their policies through a
//! [`RestartCore`].

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use econtext_wire::ContextId;
use futures::future::{join_all, LocalBoxFuture};
use slog::{debug, warn, Logger};
use tokio::sync::{oneshot, watch};

use super::handle::{ChildFactory, Shared, Supervised, SupervisedState};
use super::hub::{Gone, Hub, Publish};
use super::restart::{Action, RestartCore, SlotId};
use super::spec::{Exit, RestartPolicy, Strategy};
use super::stopper::Stopper;
use crate::event::{ContextEvent, DeadReason};
use crate::router::{DeclareDead, Router};
use crate::Context;

/// A supervisor and its children, for inspection and tests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SupervisorNode {
    pub id: ContextId,
    pub name: String,
    pub children: Vec<SupervisorNode>,
}

impl SupervisorNode {
    /// Every context ID in this subtree, depth first.
    pub fn ids(&self) -> Vec<ContextId> {
        let mut out = vec![self.id];
        for c in &self.children {
            out.extend(c.ids());
        }
        out
    }

    /// The node for `id` in this subtree.
    pub fn find(&self, id: ContextId) -> Option<&SupervisorNode> {
        if self.id == id {
            return Some(self);
        }
        self.children.iter().find_map(|c| c.find(id))
    }
}

/// One supervised child: how to create it again, and its handle.
struct Slot {
    factory: Arc<dyn ChildFactory>,
    shared: Arc<Shared>,
    current: ContextId,
    restarts: u32,
}

/// A clean end for restart purposes: the context shut down, or its
/// process exited with status 0. A link closed from this side without the
/// user asking (a cut, a dead subtree) is a crash: the child did not
/// choose to end.
fn exit_kind(reason: &DeadReason) -> Exit {
    match reason {
        DeadReason::ShutDown | DeadReason::Exited { status: 0 } => Exit::Normal,
        _ => Exit::Crash,
    }
}

/// How long a disconnection of one of our processes waits for its exit
/// status before it is reported as a disconnection.
const EXIT_STATUS_WAIT: Duration = Duration::from_millis(300);

/// How many deaths of unsupervised children a supervisor remembers.
const RECENT_DEATHS: usize = 64;

/// What every supervisor of one tree shares.
#[derive(Clone)]
pub(crate) struct TreeShared {
    pub(crate) hub: Addr<Hub>,
    /// The router that sees every death: the master's.
    pub(crate) router: Addr<Router>,
    pub(crate) grace: Duration,
    /// Supervisor actors alive now (the leak check).
    pub(crate) live: Arc<AtomicUsize>,
    pub(crate) log: Logger,
}

/// The supervisor of one context.
pub struct ContextSupervisor {
    id: ContextId,
    name: String,
    parent: Option<Addr<ContextSupervisor>>,
    tree: TreeShared,
    stopper: Option<Stopper>,
    children: Vec<(ContextId, Addr<ContextSupervisor>)>,
    restart: RestartCore,
    slots: HashMap<SlotId, Slot>,
    slot_of: HashMap<ContextId, SlotId>,
    /// The last deaths of children that had no slot (yet): a start whose
    /// result arrives after its context already died finds it here.
    recent_deaths: VecDeque<(ContextId, DeadReason)>,
    start_queue: VecDeque<(SlotId, Instant)>,
    starting: bool,
    dead: Option<DeadReason>,
    on_dead: Vec<oneshot::Sender<DeadReason>>,
    /// Down was received; `Died` follows.
    going_down: bool,
    /// A disconnection waiting for the process's exit status.
    pending_down: Option<DeadReason>,
    /// How the process exited, once its ProcessWatch said.
    exit: Option<DeadReason>,
    /// Down senders waiting for `Died` to be published.
    published: Vec<oneshot::Sender<()>>,
}

impl ContextSupervisor {
    pub(crate) fn new(
        id: ContextId,
        name: String,
        parent: Option<Addr<ContextSupervisor>>,
        stopper: Option<Stopper>,
        tree: TreeShared,
    ) -> Self {
        ContextSupervisor {
            id,
            name,
            parent,
            tree,
            stopper,
            children: Vec::new(),
            restart: RestartCore::new(Strategy::OneForOne),
            slots: HashMap::new(),
            slot_of: HashMap::new(),
            recent_deaths: VecDeque::new(),
            start_queue: VecDeque::new(),
            starting: false,
            dead: None,
            on_dead: Vec::new(),
            going_down: false,
            pending_down: None,
            exit: None,
            published: Vec::new(),
        }
    }

    fn publish(&self, e: ContextEvent) {
        self.tree.hub.do_send(Publish(e));
    }

    fn child_addr(&self, id: ContextId) -> Option<Addr<ContextSupervisor>> {
        self.children
            .iter()
            .find(|(c, _)| *c == id)
            .map(|(_, a)| a.clone())
    }

    /// A death waiter: resolves with the reason once this context is dead.
    fn dead_waiter(&mut self) -> oneshot::Receiver<DeadReason> {
        let (tx, rx) = oneshot::channel();
        match &self.dead {
            Some(r) => {
                let _ = tx.send(r.clone());
            }
            None => self.on_dead.push(tx),
        }
        rx
    }

    /// The child `id` died; restart it if its slot says so.
    fn child_down(&mut self, id: ContextId, reason: DeadReason, ctx: &mut actix::Context<Self>) {
        self.children.retain(|(c, _)| *c != id);
        let Some(slot) = self.slot_of.remove(&id) else {
            if self.recent_deaths.len() == RECENT_DEATHS {
                self.recent_deaths.pop_front();
            }
            self.recent_deaths.push_back((id, reason));
            return;
        };
        let exit = exit_kind(&reason);
        if let Some(s) = self.slots.get(&slot) {
            let last = Context::new(id, &self.name_of(s), 0, self.tree.router.clone());
            s.shared.state.send_replace(SupervisedState::Restarting {
                last,
                reason: reason.clone(),
            });
        }
        let actions = self
            .restart
            .exited(slot, exit, Instant::now(), rand::random());
        self.apply(actions, reason, ctx);
    }

    fn name_of(&self, s: &Slot) -> String {
        s.shared.state.borrow().last().name().to_string()
    }

    fn apply(&mut self, actions: Vec<Action>, reason: DeadReason, ctx: &mut actix::Context<Self>) {
        for a in actions {
            match a {
                Action::Stop(slot) => {
                    let Some(cur) = self.slots.get(&slot).map(|s| s.current) else {
                        continue;
                    };
                    if let Some(addr) = self.child_addr(cur) {
                        addr.do_send(Kill { deliberate: false });
                    }
                }
                Action::Start { slot, after } => {
                    self.start_queue.push_back((slot, Instant::now() + after));
                }
                Action::Forget(slot) => {
                    if let Some(s) = self.slots.remove(&slot) {
                        let last = s.shared.state.borrow().last().clone();
                        s.shared.state.send_replace(SupervisedState::Stopped {
                            last,
                            reason: reason.clone(),
                        });
                    }
                }
                Action::GiveUp { slot, reason: why } => {
                    if let Some(s) = self.slots.remove(&slot) {
                        let last = s.shared.state.borrow().last().clone();
                        warn!(self.tree.log, "supervisor gave up on a child";
                              "supervisor" => self.id, "child" => last.id(), "why" => %why);
                        self.publish(ContextEvent::GaveUp {
                            id: last.id(),
                            reason: why,
                        });
                        s.shared
                            .state
                            .send_replace(SupervisedState::GaveUp { last, reason: why });
                    }
                }
            }
        }
        self.pump_starts(ctx);
    }

    /// Starts queued children one at a time, in order, each when due.
    fn pump_starts(&mut self, ctx: &mut actix::Context<Self>) {
        if self.starting || self.dead.is_some() {
            return;
        }
        let Some((slot, due)) = self.start_queue.pop_front() else {
            return;
        };
        let Some(factory) = self.slots.get(&slot).map(|s| s.factory.clone()) else {
            return self.pump_starts(ctx);
        };
        self.starting = true;
        let fut = async move {
            tokio::time::sleep_until(due.into()).await;
            factory.start().await
        };
        ctx.spawn(fut.into_actor(self).map(move |res, act, ctx| {
            act.starting = false;
            act.restarted(slot, res, ctx);
            act.pump_starts(ctx);
        }));
    }

    fn restarted(
        &mut self,
        slot: SlotId,
        res: Result<Context, String>,
        ctx: &mut actix::Context<Self>,
    ) {
        let Some(s) = self.slots.get_mut(&slot) else {
            return;
        };
        match res {
            Ok(c) => {
                let old = s.current;
                s.current = c.id();
                s.restarts += 1;
                let restarts = s.restarts;
                s.shared
                    .state
                    .send_replace(SupervisedState::Running(c.clone()));
                self.slot_of.insert(c.id(), slot);
                self.restart.started(slot);
                debug!(self.tree.log, "restarted"; "old" => old, "new" => c.id());
                self.publish(ContextEvent::Restarted {
                    id: c.id(),
                    old,
                    name: c.name().to_string(),
                    restarts,
                });
                self.claim(c.id(), ctx);
            }
            Err(e) => {
                warn!(self.tree.log, "restart failed"; "slot" => slot, "error" => &e);
                let actions = self
                    .restart
                    .start_failed(slot, Instant::now(), rand::random());
                self.apply(actions, DeadReason::ConnectFailed, ctx);
            }
        }
    }

    /// A start created `id`: if it already died, that counts now.
    fn claim(&mut self, id: ContextId, ctx: &mut actix::Context<Self>) {
        if let Some(i) = self.recent_deaths.iter().position(|(d, _)| *d == id) {
            let (_, reason) = self.recent_deaths.remove(i).expect("index in range");
            self.child_down(id, reason, ctx);
        }
    }

    /// The kill of this context and its subtree, children first. The
    /// future owns what it needs, so it finishes even after this actor
    /// stops on the context's death.
    fn kill_future(&mut self, reason: DeadReason) -> LocalBoxFuture<'static, DeadReason> {
        if let Some(r) = &self.dead {
            return Box::pin(futures::future::ready(r.clone()));
        }
        let dead = self.dead_waiter();
        let children: Vec<_> = self.children.iter().map(|(_, a)| a.clone()).collect();
        let stopper = self.stopper.clone();
        let router = self.tree.router.clone();
        let grace = self.tree.grace;
        let id = self.id;
        Box::pin(async move {
            join_all(children.iter().map(|c| c.send(Kill { deliberate: false }))).await;
            router.do_send(DeclareDead {
                id,
                reason: reason.clone(),
            });
            if let Some(s) = &stopper {
                s.terminate(grace).await;
            }
            match tokio::time::timeout(grace + Duration::from_secs(2), dead).await {
                Ok(Ok(r)) => r,
                _ => reason,
            }
        })
    }

    /// The context is asked to go: it leaves its slot, so it is not
    /// restarted.
    fn leave_slot(&self) {
        if let Some(p) = &self.parent {
            p.do_send(Unsupervise(self.id));
        }
    }
}

impl Actor for ContextSupervisor {
    type Context = actix::Context<Self>;

    fn started(&mut self, _: &mut Self::Context) {
        self.tree.live.fetch_add(1, Ordering::SeqCst);
    }

    fn stopped(&mut self, _: &mut Self::Context) {
        self.tree.live.fetch_sub(1, Ordering::SeqCst);
    }
}

/// A child supervisor was started under this one.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct ChildAdded {
    pub id: ContextId,
    pub addr: Addr<ContextSupervisor>,
}

impl Handler<ChildAdded> for ContextSupervisor {
    type Result = ();

    fn handle(&mut self, msg: ChildAdded, _: &mut Self::Context) {
        if self.dead.is_some() {
            msg.addr.do_send(Down(DeadReason::ParentLost));
        } else {
            self.children.push((msg.id, msg.addr));
        }
    }
}

/// How this context can be ended, learnt after it started.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct SetStopper(pub Stopper);

impl Handler<SetStopper> for ContextSupervisor {
    type Result = ();

    fn handle(&mut self, msg: SetStopper, _: &mut Self::Context) {
        self.stopper = Some(msg.0);
    }
}

/// The supervised context died. Its children's supervisors finish first,
/// so `Died` events come children first. Resolves once this supervisor has
/// published the death.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct Down(pub DeadReason);

impl Handler<Down> for ContextSupervisor {
    type Result = ResponseFuture<()>;

    fn handle(&mut self, msg: Down, ctx: &mut Self::Context) -> Self::Result {
        if self.dead.is_some() {
            return Box::pin(futures::future::ready(()));
        }
        let (tx, rx) = oneshot::channel();
        self.published.push(tx);
        self.begin_down(msg.0, ctx);
        Box::pin(async move {
            let _ = rx.await;
        })
    }
}

/// The supervised context's process exited (from its ProcessWatch).
#[derive(Message)]
#[rtype(result = "()")]
pub struct ProcessExited {
    pub id: ContextId,
    pub reason: DeadReason,
}

impl Handler<ProcessExited> for ContextSupervisor {
    type Result = ();

    fn handle(&mut self, msg: ProcessExited, ctx: &mut Self::Context) {
        self.exit = Some(msg.reason.clone());
        if self.pending_down.take().is_some() {
            self.finish_down(msg.reason, ctx);
        }
    }
}

impl ContextSupervisor {
    /// The context is dead. A bare disconnection of a process of ours is
    /// held back briefly for the process's exit status, which says more
    /// (a clean exit is not a crash).
    fn begin_down(&mut self, reason: DeadReason, ctx: &mut actix::Context<Self>) {
        if self.going_down {
            return;
        }
        self.going_down = true;
        let vague = matches!(reason, DeadReason::Disconnected | DeadReason::Closed);
        let ours = matches!(self.stopper, Some(Stopper::LocalProcess { .. }));
        match (&self.exit, vague, ours) {
            (Some(exit), true, _) => {
                let exit = exit.clone();
                self.finish_down(exit, ctx)
            }
            (None, true, true) => {
                self.pending_down = Some(reason);
                ctx.run_later(EXIT_STATUS_WAIT, |act, ctx| {
                    if let Some(r) = act.pending_down.take() {
                        act.finish_down(r, ctx);
                    }
                });
            }
            _ => self.finish_down(reason, ctx),
        }
    }

    /// Children's supervisors first, then this context's `Died`.
    fn finish_down(&mut self, reason: DeadReason, ctx: &mut actix::Context<Self>) {
        let children: Vec<_> = self.children.drain(..).map(|(_, a)| a).collect();
        let wait = async move {
            join_all(
                children
                    .iter()
                    .map(|c| c.send(Down(DeadReason::ParentLost))),
            )
            .await;
        };
        ctx.wait(wait.into_actor(self).map(move |_, act, ctx| {
            act.dead = Some(reason.clone());
            act.publish(ContextEvent::Died {
                id: act.id,
                reason: reason.clone(),
            });
            for tx in act.on_dead.drain(..) {
                let _ = tx.send(reason.clone());
            }
            for tx in act.published.drain(..) {
                let _ = tx.send(());
            }
            // Supervised children of a dead context die with it.
            for (_, s) in act.slots.drain() {
                let last = s.shared.state.borrow().last().clone();
                s.shared.state.send_replace(SupervisedState::Stopped {
                    last,
                    reason: DeadReason::ParentLost,
                });
            }
            if let Some(p) = &act.parent {
                p.do_send(ChildDown { id: act.id, reason });
            }
            act.tree.hub.do_send(Gone(act.id));
            ctx.stop();
        }));
    }
}

/// A child's context died.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct ChildDown {
    pub id: ContextId,
    pub reason: DeadReason,
}

impl Handler<ChildDown> for ContextSupervisor {
    type Result = ();

    fn handle(&mut self, msg: ChildDown, ctx: &mut Self::Context) {
        self.child_down(msg.id, msg.reason, ctx);
    }
}

/// The child `id` was stopped on purpose: it is no longer restarted.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct Unsupervise(pub ContextId);

impl Handler<Unsupervise> for ContextSupervisor {
    type Result = ();

    fn handle(&mut self, msg: Unsupervise, _: &mut Self::Context) {
        if let Some(slot) = self.slot_of.remove(&msg.0) {
            self.restart.remove(slot);
            if let Some(s) = self.slots.remove(&slot) {
                let last = s.shared.state.borrow().last().clone();
                s.shared.state.send_replace(SupervisedState::Stopped {
                    last,
                    reason: DeadReason::Killed,
                });
            }
        }
    }
}

/// Kills the context and its subtree (children first; SIGTERM, then
/// SIGKILL after the grace period) and resolves once it is dead.
/// `deliberate`: the user asked, so it is not restarted.
#[derive(Message)]
#[rtype(result = "DeadReason")]
pub(crate) struct Kill {
    pub deliberate: bool,
}

impl Handler<Kill> for ContextSupervisor {
    type Result = ResponseFuture<DeadReason>;

    fn handle(&mut self, msg: Kill, _: &mut Self::Context) -> Self::Result {
        if msg.deliberate {
            self.leave_slot();
        }
        self.kill_future(DeadReason::Killed)
    }
}

/// Asks the context to shut down (SHUTDOWN) and waits for it; kills it
/// if it is still there after the grace period. It is not restarted.
#[derive(Message)]
#[rtype(result = "DeadReason")]
pub(crate) struct StopAndWait;

impl Handler<StopAndWait> for ContextSupervisor {
    type Result = ResponseFuture<DeadReason>;

    fn handle(&mut self, _: StopAndWait, ctx: &mut Self::Context) -> Self::Result {
        if let Some(r) = &self.dead {
            return Box::pin(futures::future::ready(r.clone()));
        }
        self.leave_slot();
        let dead = self.dead_waiter();
        let target = Context::new(self.id, &self.name, 0, self.tree.router.clone());
        let grace = self.tree.grace;
        let me = ctx.address();
        let stopper = self.stopper.clone();
        Box::pin(async move {
            let _ = target.shutdown().await;
            match tokio::time::timeout(grace, dead).await {
                Ok(Ok(r)) => {
                    if let Some(s) = &stopper {
                        if !s.exited_within(grace).await {
                            s.terminate(grace).await;
                        }
                    }
                    r
                }
                _ => me
                    .send(Kill { deliberate: true })
                    .await
                    .unwrap_or(DeadReason::Killed),
            }
        })
    }
}

/// Stops a supervised child of this supervisor for good.
#[derive(Message)]
#[rtype(result = "DeadReason")]
pub(crate) struct StopSlot {
    pub slot: SlotId,
    pub kill: bool,
}

impl Handler<StopSlot> for ContextSupervisor {
    type Result = ResponseFuture<DeadReason>;

    fn handle(&mut self, msg: StopSlot, _: &mut Self::Context) -> Self::Result {
        self.restart.remove(msg.slot);
        let Some(s) = self.slots.remove(&msg.slot) else {
            return Box::pin(futures::future::ready(DeadReason::Killed));
        };
        self.slot_of.remove(&s.current);
        let reason = if msg.kill {
            DeadReason::Killed
        } else {
            DeadReason::ShutDown
        };
        let last = s.shared.state.borrow().last().clone();
        s.shared.state.send_replace(SupervisedState::Stopped {
            last,
            reason: reason.clone(),
        });
        let Some(addr) = self.child_addr(s.current) else {
            return Box::pin(futures::future::ready(reason));
        };
        Box::pin(async move {
            let r = if msg.kill {
                addr.send(Kill { deliberate: true }).await
            } else {
                addr.send(StopAndWait).await
            };
            r.unwrap_or(reason)
        })
    }
}

/// A snapshot of this supervisor's subtree.
#[derive(Message)]
#[rtype(result = "SupervisorNode")]
pub(crate) struct Snapshot;

impl Handler<Snapshot> for ContextSupervisor {
    type Result = ResponseFuture<SupervisorNode>;

    fn handle(&mut self, _: Snapshot, _: &mut Self::Context) -> Self::Result {
        let children: Vec<_> = self.children.iter().map(|(_, a)| a.clone()).collect();
        let (id, name) = (self.id, self.name.clone());
        Box::pin(async move {
            let nodes = join_all(children.iter().map(|c| c.send(Snapshot))).await;
            SupervisorNode {
                id,
                name,
                children: nodes.into_iter().filter_map(Result::ok).collect(),
            }
        })
    }
}

/// Supervises `first`, a child of this supervisor's context that was just
/// created through `factory`, which creates it again on restarts.
#[derive(Message)]
#[rtype(result = "Supervised")]
pub(crate) struct Supervise {
    pub first: Context,
    pub policy: RestartPolicy,
    pub restart_wait: Duration,
    pub factory: Arc<dyn ChildFactory>,
}

impl Handler<Supervise> for ContextSupervisor {
    type Result = MessageResult<Supervise>;

    fn handle(&mut self, msg: Supervise, ctx: &mut Self::Context) -> Self::Result {
        let c = msg.first;
        let slot = self.restart.add(msg.policy);
        let shared = Arc::new(Shared {
            state: watch::channel(SupervisedState::Running(c.clone())).0,
            restart_wait: msg.restart_wait,
            supervisor: ctx.address(),
            slot,
        });
        self.slots.insert(
            slot,
            Slot {
                factory: msg.factory,
                shared: shared.clone(),
                current: c.id(),
                restarts: 0,
            },
        );
        self.slot_of.insert(c.id(), slot);
        self.claim(c.id(), ctx);
        MessageResult(Supervised { shared })
    }
}

/// Sets how this supervisor restarts its supervised children together.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct SetStrategy(pub Strategy);

impl Handler<SetStrategy> for ContextSupervisor {
    type Result = ();

    fn handle(&mut self, msg: SetStrategy, _: &mut Self::Context) {
        self.restart.set_strategy(msg.0);
    }
}
