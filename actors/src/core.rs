//! [`RouterCore`]: one context's whole routing state and every rule the
//! Router enforces, as a plain struct with no I/O and no clock. Inputs are
//! method calls (a frame arrived on a peer's stream, a stream closed, a
//! local send, a registration, a tick) with the time passed in; outputs
//! are [`Action`]s queued for the pump (the actix [`crate::Router`]) to
//! carry out, drained with [`RouterCore::poll_action`]. quinn-proto's
//! `Endpoint`/`Connection` are the model.
//!
//! Rules, each with a unit test below:
//! - routing: local, direct stream, ADD_ROUTE, parent, nowhere (Dead);
//!   never back where a frame came from;
//! - anti-spoofing: a frame from a child stream must come from that
//!   child's subtree;
//! - authority: CALL_FUNCTION, SPAWN, SHUTDOWN and ADD_ROUTE only from an
//!   ancestor on the parent stream; DEL_ROUTE only from a child stream for
//!   contexts in that child's subtree;
//! - replies: a handle takes messages only from the sources it accepts
//!   (a one-shot reply handle: the context its request went to, or Dead
//!   from a hop on the way there); refusals are counted and reported once
//!   per source per interval;
//! - deaths expand to the subtree, children first; waiters get Dead, the
//!   parent gets DEL_ROUTE, subscribers get events, every per-context map
//!   is pruned;
//! - shutdown: SHUTDOWN to every child, then the streams close once the
//!   children are gone or the grace period ends;
//! - stalled peers: a link that makes no progress for a bound is closed
//!   and its context declared dead;
//! - IDs (master only): see [`crate::ids`].

use std::collections::{HashMap, HashSet, VecDeque};
use std::time::{Duration, Instant};

use econtext_wire::handles::{self, requires_ancestor};
use econtext_wire::messages::AddRoute;
use econtext_wire::{payload, ContextId, Frame, Handle, Header};

use crate::error::Error;
use crate::event::{ContextEvent, DeadReason};
use crate::handles::{Accept, Delivery, HandleTable};
use crate::ids::{IdAllocator, IdsExhausted, DEFAULT_QUARANTINE};
use crate::keys::{OwnKeyMap, OwnKeySet};
use crate::message::Message;
use crate::refusals::{RefusalLog, DEFAULT_INTERVAL};
use crate::router::Trace;
use crate::routing::{Route, RoutingTable};

/// How a frame handed to [`Action::Forward`] may be queued on its link.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lane {
    /// Originated here by a sender that waits for room (backpressure).
    Wait,
    /// Forwarded from another stream, or a reply: queued without waiting
    /// up to the link's hard cap; past it the sender gets Dead.
    Push,
    /// DEL_ROUTE, SHUTDOWN, Dead bounces: never lost to a full data queue.
    Control,
    /// Originated here by a caller that took its room on the link before
    /// handing the frame over (a call's fast path): queued on that room.
    /// Should the route have moved to another link meanwhile, queued there
    /// as [`Lane::Push`] is.
    Reserved,
}

/// Why a frame was refused (reported through [`Action::Refused`]).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Refusal {
    /// Its source is not in the subtree behind the stream it came on.
    Spoofed,
    /// Only an ancestor on the parent stream may use this handle.
    NotAnAncestor,
    /// DEL_ROUTE for a context outside the sending stream's subtree, or
    /// from the parent stream.
    DelRouteOutsideSubtree { target: ContextId },
    /// A message for a handle that does not accept this source (a forged
    /// reply, for instance).
    WrongSource { expected: Vec<ContextId> },
    /// It would go back where it came from.
    Loop,
    /// Malformed control payload.
    Malformed(String),
    /// A bulk frame (bytes no frame MAC covers) for a handle that no
    /// file receiver registered for bulk frames.
    BulkToNonFileHandle,
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refusal::Spoofed => f.write_str("source outside its stream's subtree"),
            Refusal::NotAnAncestor => f.write_str("only an ancestor may use this handle"),
            Refusal::DelRouteOutsideSubtree { target } => {
                write!(f, "DEL_ROUTE for {target}, outside the stream's subtree")
            }
            Refusal::WrongSource { expected } => {
                write!(f, "handle accepts only {expected:?}")
            }
            Refusal::Loop => f.write_str("frame would loop back to its stream"),
            Refusal::Malformed(e) => write!(f, "malformed: {e}"),
            Refusal::BulkToNonFileHandle => {
                f.write_str("bulk frame for a handle not registered for bulk frames")
            }
        }
    }
}

/// What the pump must do.
#[derive(Debug)]
pub enum Action<S> {
    /// Queue `frame` on the link to `peer`, the way `lane` says.
    Forward {
        peer: ContextId,
        frame: Frame,
        lane: Lane,
    },
    /// Deliver to a registered handle that stays registered; the pump
    /// finds the sink with [`RouterCore::sink_mut`].
    Deliver { handle: Handle, msg: Message },
    /// Deliver to a sink that has just been released (a one-shot reply,
    /// Dead to a waiter, a death to a watcher).
    DeliverOnce { sink: S, msg: Message },
    /// Close the stream to `peer`.
    CloseStream { peer: ContextId },
    /// Tell subscribers.
    Event(ContextEvent),
    /// A refused frame, to be logged: the first from `src` this interval,
    /// `suppressed` more since the last one logged.
    Refused {
        src: ContextId,
        stream: Option<ContextId>,
        handle: Handle,
        why: Refusal,
        suppressed: u64,
    },
    /// Shutdown is complete: the router stops.
    Stop,
}

/// How a [`RouterCore`] is set up.
#[derive(Clone)]
pub struct CoreConfig {
    pub id: ContextId,
    pub parent: Option<ContextId>,
    /// Contexts allowed to send CALL_FUNCTION, SPAWN, SHUTDOWN and
    /// ADD_ROUTE here (the parent first). Empty for the master.
    pub ancestors: Vec<ContextId>,
    /// A peer whose link makes no progress this long is declared dead.
    pub stall_after: Duration,
    /// How long shutdown waits for children to go before closing anyway.
    pub shutdown_grace: Duration,
    /// One refusal warning per source per this interval.
    pub refusal_interval: Duration,
    /// Freed IDs are reused no sooner than this (master only), and dead
    /// contexts are remembered this long for their Dead reason.
    pub id_quarantine: Duration,
    /// Seeds the handle numbers (random in production, fixed in tests).
    pub seed: u64,
    pub trace: Option<Trace>,
    /// The largest frame data every link of the tree carries: a local
    /// frame above it is refused here, before any link sees it (a link's
    /// codec would end the whole stream on it).
    pub max_message_size: usize,
}

impl CoreConfig {
    pub fn new(id: ContextId, parent: Option<ContextId>, ancestors: Vec<ContextId>) -> Self {
        CoreConfig {
            id,
            parent,
            ancestors,
            stall_after: Duration::from_secs(30),
            shutdown_grace: Duration::from_secs(3),
            refusal_interval: DEFAULT_INTERVAL,
            id_quarantine: DEFAULT_QUARANTINE,
            seed: rand::random(),
            trace: None,
            max_message_size: econtext_wire::DEFAULT_MAX_MESSAGE_SIZE,
        }
    }
}

/// A handle's source rule: its accepted peers, and for Dead also any
/// context on the path to one of them (a hop that lost the route).
fn accepts(table: &RoutingTable, accept: &Accept, src: ContextId, msg: &Message) -> bool {
    if accept.allows(src) {
        return true;
    }
    msg.is_dead()
        && accept
            .peers()
            .iter()
            .any(|&peer| on_path_to(table, src, peer))
}

/// Whether `hop` sits between here and `target`: our parent (every
/// upward route passes it) or an ancestor of `target` as known here.
fn on_path_to(table: &RoutingTable, hop: ContextId, target: ContextId) -> bool {
    if Some(hop) == table.parent() {
        return true;
    }
    let mut cur = target;
    for _ in 0..64 {
        match table.creator(cur) {
            Some(p) if p == hop => return true,
            Some(p) if p != cur => cur = p,
            _ => return false,
        }
    }
    false
}

/// Dead contexts remembered for their reason, at most this many.
pub const MAX_DEAD_REMEMBERED: usize = 4096;

#[derive(Debug, Default, Clone, Copy)]
struct PeerState {
    /// Since when its link has been full without progress.
    stuck_since: Option<Instant>,
}

/// Counters for diagnostics and tests.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CoreStats {
    pub handles: usize,
    pub peers: usize,
    pub routes_known: usize,
    pub dead_remembered: usize,
    pub watchers: usize,
    pub refused: u64,
    pub refusal_sources: usize,
    pub live_ids: usize,
}

/// See the module documentation. `S` is the pump's sink type.
pub struct RouterCore<S> {
    table: RoutingTable,
    ancestors: OwnKeySet<ContextId>,
    handles: HandleTable<S>,
    peers: OwnKeyMap<ContextId, PeerState>,
    watchers: HashMap<ContextId, Vec<S>>,
    /// Dead contexts remembered (for Dead to late senders and waiters),
    /// with when they died and who had created them.
    dead: OwnKeyMap<ContextId, (DeadReason, Instant, Option<ContextId>)>,
    dead_order: VecDeque<ContextId>,
    refusals: RefusalLog,
    ids: Option<IdAllocator>,
    shutdown_deadline: Option<Instant>,
    stopped: bool,
    actions: VecDeque<Action<S>>,
    config: CoreConfig,
}

impl<S> RouterCore<S> {
    pub fn new(config: CoreConfig, now: Instant) -> Self {
        let ids = config
            .parent
            .is_none()
            .then(|| IdAllocator::new(now, config.id_quarantine));
        RouterCore {
            table: RoutingTable::new(config.id, config.parent),
            ancestors: config.ancestors.iter().copied().collect(),
            handles: HandleTable::with_seed(config.seed),
            peers: OwnKeyMap::default(),
            watchers: HashMap::new(),
            dead: OwnKeyMap::default(),
            dead_order: VecDeque::new(),
            refusals: RefusalLog::new(config.refusal_interval),
            ids,
            shutdown_deadline: None,
            stopped: false,
            actions: VecDeque::new(),
            config,
        }
    }

    pub fn me(&self) -> ContextId {
        self.table.me()
    }

    pub fn parent(&self) -> Option<ContextId> {
        self.table.parent()
    }

    /// The next action for the pump, if any.
    pub fn poll_action(&mut self) -> Option<Action<S>> {
        self.actions.pop_front()
    }

    pub fn sink_mut(&mut self, handle: Handle) -> Option<&mut S> {
        self.handles.sink_mut(handle)
    }

    /// Why `id` is dead, if it is known to be.
    pub fn dead_reason(&self, id: ContextId) -> Option<&DeadReason> {
        self.dead.get(&id).map(|(r, _, _)| r)
    }

    pub fn shutdown_grace(&self) -> Duration {
        self.config.shutdown_grace
    }

    pub fn is_shutting_down(&self) -> bool {
        self.shutdown_deadline.is_some()
    }

    /// The ancestors of `id` as this context knows them (who created it,
    /// who created that one, ...), nearest first, ending with this
    /// context; empty for a context it does not know. In the master this
    /// is the whole tree's parentage: nobody else keeps a copy.
    pub fn ancestors(&self, id: ContextId) -> Vec<ContextId> {
        let me = self.me();
        let mut out = Vec::new();
        let mut cur = id;
        while cur != me && out.len() < usize::from(u16::MAX) {
            match self.table.creator(cur) {
                Some(p) if p != cur => {
                    out.push(p);
                    cur = p;
                }
                _ => return Vec::new(),
            }
        }
        out
    }

    /// `root` and every context created through it, at any depth, as
    /// this context knows them: the live ones, and the dead ones it still
    /// remembers (whose deaths their supervisors may not have reported
    /// yet). The supervision hub seeds a subtree subscription with it, so
    /// that nobody else keeps the tree's parentage.
    pub fn subtree_members(&self, root: ContextId) -> Vec<ContextId> {
        let mut children: HashMap<ContextId, Vec<ContextId>> = HashMap::new();
        let dead = self
            .dead
            .iter()
            .filter_map(|(&c, (_, _, p))| p.map(|p| (c, p)));
        for (child, creator) in self.table.creators().chain(dead) {
            if child != creator {
                children.entry(creator).or_default().push(child);
            }
        }
        let mut out = vec![root];
        let mut seen: HashSet<ContextId> = out.iter().copied().collect();
        let mut i = 0;
        while i < out.len() {
            for &c in children.get(&out[i]).into_iter().flatten() {
                if seen.insert(c) {
                    out.push(c);
                }
            }
            i += 1;
        }
        out
    }

    /// Direct peers whose links exist.
    pub fn peers(&self) -> Vec<ContextId> {
        let mut v: Vec<_> = self.peers.keys().copied().collect();
        v.sort_unstable();
        v
    }

    pub fn stats(&self) -> CoreStats {
        CoreStats {
            handles: self.handles.len(),
            peers: self.peers.len(),
            routes_known: self.table.known(),
            dead_remembered: self.dead.len(),
            watchers: self.watchers.values().map(Vec::len).sum(),
            refused: self.refusals.total(),
            refusal_sources: self.refusals.sources(),
            live_ids: self.ids.as_ref().map_or(0, IdAllocator::live),
        }
    }

    // ---- inputs: the tree ----

    /// A stream to a directly connected peer is ready.
    pub fn attach(&mut self, peer: ContextId, is_parent: bool) {
        if !is_parent {
            self.table.add_child_stream(peer);
        }
        self.forget_dead(peer);
        if let Some(ids) = &mut self.ids {
            ids.claim(peer);
        }
        self.peers.insert(peer, PeerState::default());
    }

    /// A context created through `via` (by `parent`) is now routed.
    pub fn add_local_route(
        &mut self,
        target: ContextId,
        via: ContextId,
        parent: ContextId,
    ) -> bool {
        self.forget_dead(target);
        if let Some(ids) = &mut self.ids {
            ids.claim(target);
        }
        self.table.note_parent(target, parent);
        self.table.add_route(target, via)
    }

    /// A context is up (its connect succeeded).
    pub fn started(&mut self, id: ContextId, name: String, parent: ContextId) {
        self.actions
            .push_back(Action::Event(ContextEvent::Started { id, name, parent }));
    }

    /// A fresh context ID (master only).
    pub fn allocate_id(&mut self, now: Instant) -> Result<ContextId, IdsExhausted> {
        match &mut self.ids {
            Some(ids) => {
                let id = ids.allocate(now)?;
                self.forget_dead(id);
                Ok(id)
            }
            None => Err(IdsExhausted {
                live: 0,
                quarantined: 0,
            }),
        }
    }

    /// The stream to `peer` ended.
    pub fn stream_closed(&mut self, peer: ContextId, reason: DeadReason, now: Instant) {
        if self.peers.contains_key(&peer) {
            self.context_lost(peer, reason, now);
        }
    }

    /// `id` is gone, as seen from this side (its process exited, its
    /// connect failed).
    pub fn declare_dead(&mut self, id: ContextId, reason: DeadReason, now: Instant) {
        if !self.dead.contains_key(&id) {
            self.context_lost(id, reason, now);
        }
    }

    /// Whether the link to `peer` is full and made no progress since the
    /// last report (the pump reports every tick).
    pub fn link_state(&mut self, peer: ContextId, stuck: bool, now: Instant) {
        if let Some(p) = self.peers.get_mut(&peer) {
            p.stuck_since = match (stuck, p.stuck_since) {
                (false, _) => None,
                (true, None) => Some(now),
                (true, since) => since,
            };
        }
    }

    /// Time passes: stalled peers are closed, the shutdown deadline is
    /// enforced, old memories are pruned.
    pub fn tick(&mut self, now: Instant) {
        let stall = self.config.stall_after;
        let stalled: Vec<ContextId> = self
            .peers
            .iter()
            .filter(|(_, p)| p.stuck_since.is_some_and(|t| now >= t + stall))
            .map(|(&c, _)| c)
            .collect();
        for peer in stalled {
            self.context_lost(peer, DeadReason::Stalled, now);
        }
        if self.shutdown_deadline.is_some_and(|d| now >= d) {
            self.finish_shutdown();
        }
        let keep = self.config.id_quarantine;
        while let Some(&id) = self.dead_order.front() {
            match self.dead.get(&id) {
                Some((_, at, _)) if now.saturating_duration_since(*at) < keep => break,
                _ => {
                    self.dead_order.pop_front();
                    self.dead.remove(&id);
                }
            }
        }
        self.refusals.prune(now);
    }

    /// Graceful shutdown (the seed's "Shutdown"): SHUTDOWN to every child;
    /// the streams close when the children are gone or at the deadline.
    pub fn begin_shutdown(&mut self, now: Instant) {
        if self.shutdown_deadline.is_some() || self.stopped {
            return;
        }
        self.shutdown_deadline = Some(now + self.config.shutdown_grace);
        let me = self.me();
        for child in self.table.children() {
            if self.peers.contains_key(&child) {
                let f = Frame::new(
                    Header::new(child, me, handles::SHUTDOWN, 0),
                    payload::encode(&()).expect("nil encodes"),
                );
                self.forward(child, f, Lane::Control);
            }
        }
        self.maybe_finish_shutdown();
    }

    fn maybe_finish_shutdown(&mut self) {
        if self.shutdown_deadline.is_some() && self.table.children().is_empty() {
            self.finish_shutdown();
        }
    }

    fn finish_shutdown(&mut self) {
        if self.stopped {
            return;
        }
        self.stopped = true;
        for peer in self.peers() {
            self.actions.push_back(Action::CloseStream { peer });
        }
        self.actions.push_back(Action::Stop);
    }

    // ---- inputs: handles ----

    /// Registers `sink` on `handle` (a fresh random one when None).
    /// Waiting on a context already dead delivers Dead at once.
    pub fn register(
        &mut self,
        handle: Option<Handle>,
        sink: S,
        persistent: bool,
        waiting_on: Option<ContextId>,
        accept: Accept,
    ) -> Handle {
        if let Some(c) = waiting_on {
            if let Some(reason) = self.dead_reason(c).cloned() {
                let h = handle.unwrap_or(0);
                self.actions.push_back(Action::DeliverOnce {
                    sink,
                    msg: Message::dead(c, h, &reason),
                });
                return h;
            }
        }
        match handle {
            Some(h) => {
                self.handles.insert(h, sink);
                h
            }
            None => self.handles.allocate(sink, persistent, waiting_on, accept),
        }
    }

    /// Lets `handle` take bulk frames (see [`Refusal::BulkToNonFileHandle`]).
    pub fn allow_bulk(&mut self, handle: Handle) -> bool {
        self.handles.allow_bulk(handle)
    }

    pub fn unregister(&mut self, handle: Handle) -> Option<S> {
        self.handles.remove(handle)
    }

    /// Sends a request to `(dst, handle)` with a fresh one-shot reply
    /// handle that accepts only `dst`'s answer and receives Dead if `dst`
    /// dies first. Returns the reply handle.
    pub fn request(
        &mut self,
        dst: ContextId,
        handle: Handle,
        data: bytes::Bytes,
        sink: S,
        now: Instant,
    ) -> Result<Handle, (Error, S)> {
        self.request_on(dst, handle, data, sink, None, Lane::Wait, now)
    }

    /// [`RouterCore::request`] on the reply handle `drawn` when it is free
    /// (one the requester drew itself, so that it need not wait to learn
    /// it; another one otherwise), queued on `lane`.
    #[allow(clippy::too_many_arguments)]
    pub fn request_on(
        &mut self,
        dst: ContextId,
        handle: Handle,
        data: bytes::Bytes,
        sink: S,
        drawn: Option<Handle>,
        lane: Lane,
        now: Instant,
    ) -> Result<Handle, (Error, S)> {
        if let Err(e) = self.check_size(data.len()) {
            return Err((e, sink));
        }
        if let Some(reason) = self.dead_reason(dst).cloned() {
            return Err((
                Error::Dead {
                    context: dst,
                    reason,
                },
                sink,
            ));
        }
        let accept = Accept::From(dst);
        let reply_to = match drawn {
            Some(h) => self
                .handles
                .allocate_preferring(h, sink, false, Some(dst), accept),
            None => self.handles.allocate(sink, false, Some(dst), accept),
        };
        let frame = Frame::new(Header::new(dst, self.me(), handle, reply_to), data);
        self.route(frame, None, lane, now);
        Ok(reply_to)
    }

    /// The directly connected peer a local frame to `dst` leaves by, if
    /// it leaves by a stream.
    pub fn next_hop(&self, dst: ContextId) -> Option<ContextId> {
        match self.table.route(dst) {
            Route::Stream(peer) if self.peers.contains_key(&peer) => Some(peer),
            _ => None,
        }
    }

    /// Resolves `sink` (with Dead) when `id` dies; at once if it has.
    pub fn watch(&mut self, id: ContextId, sink: S) {
        match self.dead_reason(id).cloned() {
            Some(reason) => self.actions.push_back(Action::DeliverOnce {
                sink,
                msg: Message::dead(id, 0, &reason),
            }),
            None => self.watchers.entry(id).or_default().push(sink),
        }
    }

    // ---- inputs: frames ----

    /// A frame read from the stream to `from`.
    pub fn inbound(&mut self, from: ContextId, frame: Frame, now: Instant) {
        let src = frame.header.src;
        if Some(from) != self.parent() && self.table.route(src) != Route::Stream(from) {
            self.refuse(&frame.header, Some(from), Refusal::Spoofed, now);
            return;
        }
        self.route(frame, Some(from), Lane::Push, now);
    }

    /// A frame originated here; `lane` is [`Lane::Wait`] for senders that
    /// wait for room, [`Lane::Push`] for replies.
    pub fn send_local(&mut self, frame: Frame, lane: Lane, now: Instant) {
        if frame.bulk && econtext_wire::bulk::covered_end(&frame.data).is_none() {
            // A writer could not seal it: refused here, not on the link.
            let why = DeadReason::Protocol("bulk frame without its covered part".into());
            self.bounce(&frame.header, why, now);
            return;
        }
        if let Err(e) = self.check_size(frame.data.len()) {
            // Its requester (if it asked for a reply) hears why; the
            // link, and everyone else's traffic on it, is untouched.
            self.bounce(&frame.header, DeadReason::Protocol(e.to_string()), now);
            return;
        }
        self.route(frame, None, lane, now);
    }

    /// A local frame's data within the tree's message size.
    fn check_size(&self, len: usize) -> Result<(), Error> {
        let max = self.config.max_message_size;
        match len > max {
            true => Err(Error::Payload(econtext_wire::WireError::TooLargeToSend {
                length: len,
                max,
            })),
            false => Ok(()),
        }
    }

    /// The pump could not queue a frame (its link is full or closed):
    /// its sender gets Dead.
    pub fn undeliverable(&mut self, header: &Header, reason: DeadReason, now: Instant) {
        self.bounce(header, reason, now);
    }

    // ---- the rules ----

    fn route(&mut self, frame: Frame, from: Option<ContextId>, lane: Lane, now: Instant) {
        if let Some(t) = &self.config.trace {
            t.lock()
                .expect("trace lock")
                .push((self.me(), frame.header));
        }
        match self.table.route(frame.header.dst) {
            Route::Local => self.deliver_local(frame, from, now),
            Route::Stream(peer) if Some(peer) == from => {
                // Never back where it came from: a loop, or a child
                // spoofing its parent's address.
                self.refuse(&frame.header, from, Refusal::Loop, now);
                self.bounce(&frame.header, DeadReason::Unreachable, now);
            }
            Route::Stream(peer) if self.peers.contains_key(&peer) => {
                let lane = if from.is_some() { Lane::Push } else { lane };
                self.forward(peer, frame, lane);
            }
            Route::Stream(_) | Route::Nowhere => {
                let why = self
                    .dead_reason(frame.header.dst)
                    .cloned()
                    .unwrap_or(DeadReason::Unreachable);
                self.bounce(&frame.header, why, now);
            }
        }
    }

    fn forward(&mut self, peer: ContextId, frame: Frame, lane: Lane) {
        self.actions
            .push_back(Action::Forward { peer, frame, lane });
    }

    /// Sends Dead back to a frame's sender, when it asked for a reply.
    fn bounce(&mut self, h: &Header, reason: DeadReason, _now: Instant) {
        if h.reply_to == 0 {
            return;
        }
        let data = payload::encode(&econtext_wire::Dead::from(&reason)).expect("Dead encodes");
        let back = Frame::new(Header::new(h.src, self.me(), h.reply_to, 0), data);
        // A bounce never asks for a reply, so it cannot bounce again.
        match self.table.route(back.header.dst) {
            Route::Local => self.deliver_local(back, None, _now),
            Route::Stream(peer) if self.peers.contains_key(&peer) => {
                self.forward(peer, back, Lane::Control)
            }
            _ => {}
        }
    }

    fn refuse(&mut self, h: &Header, stream: Option<ContextId>, why: Refusal, now: Instant) {
        if let Some(suppressed) = self.refusals.note(h.src, now) {
            self.actions.push_back(Action::Refused {
                src: h.src,
                stream,
                handle: h.handle,
                why,
                suppressed,
            });
        }
    }

    fn deliver_local(&mut self, frame: Frame, from: Option<ContextId>, now: Instant) {
        let h = frame.header;
        if from.is_some() && requires_ancestor(h.handle) {
            let ok = from == self.parent() && self.ancestors.contains(&h.src);
            if !ok {
                self.refuse(&h, from, Refusal::NotAnAncestor, now);
                let why = DeadReason::Refused(format!(
                    "context {} may not send to handle {}",
                    h.src, h.handle
                ));
                self.bounce(&h, why, now);
                return;
            }
        }
        if frame.bulk && !self.handles.takes_bulk(h.handle) {
            // Its bytes are covered by no MAC: only a receiver that checks
            // them itself (a file's running SHA-256) may have them. Dropped,
            // logged (rate-limited per source) and its sender told.
            self.refuse(&h, from, Refusal::BulkToNonFileHandle, now);
            let why = DeadReason::Refused(format!(
                "bulk frame for handle {}, which takes none",
                h.handle
            ));
            self.bounce(&h, why, now);
            return;
        }
        match (h.handle, from) {
            (handles::ADD_ROUTE, Some(_)) => return self.on_add_route(&frame, from, now),
            (handles::DEL_ROUTE, Some(stream)) => return self.on_del_route(&frame, stream, now),
            _ => {}
        }
        let msg = Message::from_frame(frame);
        // One lookup for the entry, its source rule and its removal (a
        // reply's whole path through the table).
        let table = &self.table;
        let checked = from.is_some();
        let rule = |accept: &Accept| !checked || accepts(table, accept, h.src, &msg);
        match self.handles.deliver_to(h.handle, rule) {
            Delivery::Missing => {
                if !msg.is_dead() {
                    self.bounce(&h, DeadReason::NoHandle, now);
                }
            }
            Delivery::Refused(expected) => {
                self.refuse(&h, from, Refusal::WrongSource { expected }, now);
            }
            Delivery::Once(sink) => self.actions.push_back(Action::DeliverOnce { sink, msg }),
            Delivery::Keep => self.actions.push_back(Action::Deliver {
                handle: h.handle,
                msg,
            }),
        }
    }

    fn on_add_route(&mut self, frame: &Frame, from: Option<ContextId>, now: Instant) {
        match payload::decode::<AddRoute>(&frame.data) {
            Ok(r) => {
                if self.table.add_route(r.target, r.via) {
                    self.forget_dead(r.target);
                    self.table.note_parent(r.target, r.via);
                }
            }
            Err(e) => self.refuse(
                &frame.header,
                from,
                Refusal::Malformed(format!("ADD_ROUTE: {e}")),
                now,
            ),
        }
    }

    fn on_del_route(&mut self, frame: &Frame, stream: ContextId, now: Instant) {
        let target = match payload::decode::<ContextId>(&frame.data) {
            Ok(t) => t,
            Err(e) => {
                let why = Refusal::Malformed(format!("DEL_ROUTE: {e}"));
                return self.refuse(&frame.header, Some(stream), why, now);
            }
        };
        // Only a child stream may declare contexts dead, and only those
        // in its own subtree (never the parent, never this context).
        let from_child = Some(stream) != self.parent();
        let in_subtree = target != self.me() && self.table.route(target) == Route::Stream(stream);
        if from_child && in_subtree {
            self.context_lost(target, DeadReason::Disconnected, now);
        } else if self.dead.contains_key(&target) && from_child {
            // Already gone (a DEL_ROUTE per member of a subtree).
        } else {
            let why = Refusal::DelRouteOutsideSubtree { target };
            self.refuse(&frame.header, Some(stream), why, now);
        }
    }

    /// `root` and everything reached through it is gone.
    fn context_lost(&mut self, root: ContextId, reason: DeadReason, now: Instant) {
        let dead = self.table.subtree(root);
        let creators: Vec<Option<ContextId>> =
            dead.iter().map(|&d| self.table.creator(d)).collect();
        let lost_parent = self.table.forget(&dead);
        for (&d, creator) in dead.iter().zip(creators) {
            self.remember_dead(d, reason.clone(), now, creator);
            if self.peers.remove(&d).is_some() {
                self.actions.push_back(Action::CloseStream { peer: d });
            }
            if let Some(ids) = &mut self.ids {
                ids.free(d, now);
            }
            self.refusals.forget(d);
        }
        for (h, sink) in self.handles.waiting_on(&dead) {
            self.actions.push_back(Action::DeliverOnce {
                sink,
                msg: Message::dead(root, h, &reason),
            });
        }
        // Tell the parent, so the master can fail its own waiters.
        if let Some(p) = self.parent().filter(|p| self.peers.contains_key(p)) {
            for &d in &dead {
                let data = payload::encode(&d).expect("u16 encodes");
                let f = Frame::new(Header::new(p, self.me(), handles::DEL_ROUTE, 0), data);
                self.forward(p, f, Lane::Control);
            }
        }
        for &d in &dead {
            for sink in self.watchers.remove(&d).unwrap_or_default() {
                self.actions.push_back(Action::DeliverOnce {
                    sink,
                    msg: Message::dead(d, 0, &reason),
                });
            }
            self.actions.push_back(Action::Event(ContextEvent::Died {
                id: d,
                reason: reason.clone(),
            }));
        }
        if lost_parent {
            for (h, sink) in self.handles.drain() {
                self.actions.push_back(Action::DeliverOnce {
                    sink,
                    msg: Message::dead(root, h, &DeadReason::ParentLost),
                });
            }
            // A child whose parent is gone exits: no orphans.
            self.begin_shutdown(now);
        } else {
            self.maybe_finish_shutdown();
        }
    }

    fn remember_dead(
        &mut self,
        id: ContextId,
        reason: DeadReason,
        now: Instant,
        creator: Option<ContextId>,
    ) {
        if self.dead.insert(id, (reason, now, creator)).is_none() {
            self.dead_order.push_back(id);
        }
        while self.dead.len() > MAX_DEAD_REMEMBERED {
            match self.dead_order.pop_front() {
                Some(old) => {
                    self.dead.remove(&old);
                }
                None => break,
            }
        }
    }

    fn forget_dead(&mut self, id: ContextId) {
        if self.dead.remove(&id).is_some() {
            self.dead_order.retain(|&d| d != id);
        }
    }

    /// The router is stopping: every handle and watcher still registered
    /// gets Dead.
    pub fn stopping(&mut self) {
        let me = self.me();
        for (h, sink) in self.handles.drain() {
            self.actions.push_back(Action::DeliverOnce {
                sink,
                msg: Message::dead(me, h, &DeadReason::RouterStopped),
            });
        }
        for (id, sinks) in self.watchers.drain() {
            for sink in sinks {
                self.actions.push_back(Action::DeliverOnce {
                    sink,
                    msg: Message::dead(id, 0, &DeadReason::RouterStopped),
                });
            }
        }
    }
}

#[cfg(test)]
mod tests;
