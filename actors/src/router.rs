//! The Router actor: one per context, a pump around [`RouterCore`]. It
//! owns what the core must not (the streams' write links, the sinks'
//! channels, the clock) and carries out the core's [`Action`]s. Every
//! decision is the core's.
//!
//! Queues: a local sender waits for room on the one link its frame goes
//! to (the wait is the caller's, inside its deadline); frames forwarded
//! from a stream and replies are queued without waiting up to the link's
//! hard cap, past which their sender gets Dead; control frames skip the
//! byte budget. A reader therefore never waits on another peer's link.
//!
//! A call's fast path ([`Call`]) takes its room on the link before it is
//! sent here, so the Router never holds a frame waiting for room: a
//! frame waits only inside the future its sender awaits (and is dropped
//! with it), and frames reach each link in the order of the messages
//! that brought them (one mailbox, in order).

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use bytes::Bytes;
use econtext_wire::{handles, payload, ContextId, Frame, Handle, Header};
use futures::future::{self, BoxFuture, FutureExt};
use slog::{debug, warn, Logger};
use tokio::sync::{mpsc, oneshot};

use crate::core::{Action, CoreConfig, CoreStats, Lane, RouterCore};
use crate::error::{Error, Result};
use crate::event::{ContextEvent, DeadReason};
use crate::handles::Accept;
use crate::ids::IdsExhausted;
use crate::keys::OwnKeyMap;
use crate::link::{LinkRoom, PushError, Reservation, StreamLink};
use crate::message::Message;
use crate::refusals::RefusalLog;
use crate::supervision::events::EventSink;
use crate::supervision::queue::{Pushed, SharedQueue};
use crate::supervision::EVENT_QUEUE;

/// Messages a Channel buffers before its sender gets Dead (Overloaded).
pub const CHANNEL_CAPACITY: usize = 4096;
/// How often the pump tells the core the time and its links' progress.
const TICK: Duration = Duration::from_millis(250);

/// Where a handle's messages go.
pub enum Sink {
    /// One reply, then the handle is freed.
    Once(oneshot::Sender<Message>),
    /// A stream of messages (a [`crate::Channel`]), bounded.
    Channel(mpsc::Sender<Message>),
    /// An actor behind the typed adapter ([`crate::serve`]): users' and
    /// the built-in services'. Its in-flight bound is the bound.
    Served(crate::serve::Adapted),
    /// Resolves with the reason when a context dies.
    Watch(oneshot::Sender<DeadReason>),
}

impl Sink {
    fn deliver(self, msg: Message) {
        match self {
            Sink::Once(tx) => {
                let _ = tx.send(msg);
            }
            Sink::Watch(tx) => {
                let reason = msg
                    .decode::<econtext_wire::Dead>()
                    .map(DeadReason::from)
                    .unwrap_or(DeadReason::RouterStopped);
                let _ = tx.send(reason);
            }
            mut other => {
                let _ = other.deliver_ref(msg);
            }
        }
    }

    /// Delivers to a sink that stays registered. A full queue is an error
    /// for the sender, never silence.
    fn deliver_ref(&mut self, msg: Message) -> std::result::Result<(), DeadReason> {
        match self {
            Sink::Once(_) | Sink::Watch(_) => unreachable!("one-shot sinks are delivered by value"),
            Sink::Channel(tx) => tx.try_send(msg).map_err(|e| match e {
                mpsc::error::TrySendError::Full(_) => DeadReason::Overloaded,
                mpsc::error::TrySendError::Closed(_) => DeadReason::NoHandle,
            }),
            Sink::Served(s) => s.deliver(msg),
        }
    }
}

/// How a Router is configured.
#[derive(Clone)]
pub struct RouterConfig {
    /// This context's ID.
    pub id: ContextId,
    /// The parent's ID, for every context but the master.
    pub parent: Option<ContextId>,
    /// Contexts allowed to send CALL_FUNCTION, SPAWN, SHUTDOWN and
    /// ADD_ROUTE here (the parent first). Empty for the master.
    pub ancestors: Vec<ContextId>,
    pub log: Logger,
    /// Records every frame this router routes (simulated trees, tests).
    pub trace: Option<Trace>,
    /// A peer whose link makes no progress this long is declared dead.
    pub stall_after: Duration,
    /// How long a shutdown waits for children before closing anyway.
    pub shutdown_grace: Duration,
    /// Freed context IDs are reused no sooner than this (the master).
    pub id_quarantine: Duration,
    /// The largest frame data the tree's links carry (the streams'
    /// `max_message_size`): larger local frames are refused, typed.
    pub max_message_size: usize,
}

impl RouterConfig {
    pub fn new(
        id: ContextId,
        parent: Option<ContextId>,
        ancestors: Vec<ContextId>,
        log: Logger,
    ) -> Self {
        let defaults = CoreConfig::new(id, parent, Vec::new());
        RouterConfig {
            id,
            parent,
            ancestors,
            log,
            trace: None,
            stall_after: defaults.stall_after,
            shutdown_grace: defaults.shutdown_grace,
            id_quarantine: defaults.id_quarantine,
            max_message_size: defaults.max_message_size,
        }
    }
}

/// A shared record of `(router's context, frame header)` per routed frame.
pub type Trace = std::sync::Arc<std::sync::Mutex<Vec<(ContextId, Header)>>>;

struct Peer {
    link: StreamLink,
    closer: Recipient<CloseStream>,
    drained: u64,
}

/// A frame waiting for room on its link, for the caller to await (within
/// its own deadline). Resolves with Dead when the link closes first.
pub type Queueing = BoxFuture<'static, Result<()>>;

/// Local frames waiting for room on their links, counted: each is held by
/// the future its sender awaits, never by the Router itself.
#[derive(Default)]
struct WaitGauge {
    frames: AtomicUsize,
    bytes: AtomicUsize,
}

/// One waiting frame's share of the [`WaitGauge`], until its wait ends
/// (queued, failed, or dropped by a caller that gave up).
struct Waiting {
    gauge: Arc<WaitGauge>,
    bytes: usize,
}

impl Waiting {
    fn new(gauge: &Arc<WaitGauge>, frame: &Frame) -> Self {
        let bytes = frame.data.len() + econtext_wire::HEADER_LEN;
        gauge.frames.fetch_add(1, Ordering::Relaxed);
        gauge.bytes.fetch_add(bytes, Ordering::Relaxed);
        Waiting {
            gauge: gauge.clone(),
            bytes,
        }
    }
}

impl Drop for Waiting {
    fn drop(&mut self) {
        self.gauge.frames.fetch_sub(1, Ordering::Relaxed);
        self.gauge.bytes.fetch_sub(self.bytes, Ordering::Relaxed);
    }
}

/// The Router actor.
pub struct Router {
    core: RouterCore<Sink>,
    peers: OwnKeyMap<ContextId, Peer>,
    /// This crate's services ([`SubscribeService`]): every event, by
    /// `do_send`.
    subscribers: Vec<Recipient<ContextEvent>>,
    /// [`Subscribe`]rs: each behind a bounded queue (Lagged on overflow).
    bounded: Vec<EventSink>,
    on_stop: Vec<oneshot::Sender<()>>,
    /// Frames dropped because a link was over its cap, per peer.
    overflow: RefusalLog,
    /// Messages local handles refused (full, or not taken), per source.
    refused: RefusalLog,
    dropped: u64,
    /// Bytes written to links since closed (for `RouterStats::link_bytes`).
    drained_closed: u64,
    /// The room a [`Call`] took on its link, for the pump to queue its
    /// frame on; set only during that Call's turn.
    reserved: Option<Reservation>,
    /// Reply handles no caller's guard may know: those registered in
    /// place of the one a [`Call`]'s caller drew (that one was in use),
    /// and every [`Request`]'s until its caller has it (a caller dropped
    /// while the Router's answer is on its way never learns it). The tick
    /// frees each once its reply channel has closed.
    unguarded: Vec<Handle>,
    waiting: Arc<WaitGauge>,
    /// [`Call`]s taken (requests that came by the fast path).
    calls_fast: u64,
    log: Logger,
}

impl Router {
    pub fn new(config: RouterConfig) -> Self {
        let mut cc = CoreConfig::new(config.id, config.parent, config.ancestors);
        cc.trace = config.trace;
        cc.stall_after = config.stall_after;
        cc.shutdown_grace = config.shutdown_grace;
        cc.id_quarantine = config.id_quarantine;
        cc.max_message_size = config.max_message_size;
        Router {
            core: RouterCore::new(cc, Instant::now()),
            peers: OwnKeyMap::default(),
            subscribers: Vec::new(),
            bounded: Vec::new(),
            on_stop: Vec::new(),
            overflow: RefusalLog::new(crate::refusals::DEFAULT_INTERVAL),
            refused: RefusalLog::new(crate::refusals::DEFAULT_INTERVAL),
            dropped: 0,
            drained_closed: 0,
            reserved: None,
            unguarded: Vec::new(),
            waiting: Arc::default(),
            calls_fast: 0,
            log: config.log,
        }
    }

    fn me(&self) -> ContextId {
        self.core.me()
    }

    /// Carries out every queued action. A frame that must wait for room
    /// comes back as a future for the local sender to await.
    fn pump(&mut self, ctx: &mut actix::Context<Self>) -> Option<Queueing> {
        let mut waits: Vec<Queueing> = Vec::new();
        while let Some(action) = self.core.poll_action() {
            match action {
                Action::Forward { peer, frame, lane } => {
                    if let Some(w) = self.forward(peer, frame, lane, ctx) {
                        waits.push(w);
                    }
                }
                Action::Deliver { handle, msg } => {
                    let header = Header::new(self.me(), msg.src, msg.handle, msg.reply_to);
                    let res = self.core.sink_mut(handle).map(|s| s.deliver_ref(msg));
                    if let Some(Err(reason)) = res {
                        // Counted, and said once per source per interval:
                        // a refused message is never silent, a flood of
                        // them is never a flood of log lines.
                        if let Some(n) = self.refused.note(header.src, Instant::now()) {
                            warn!(self.log, "a handle refused a message";
                                  "handle" => handle, "src" => header.src,
                                  "reason" => %reason, "suppressed_since_last" => n);
                        }
                        if reason == DeadReason::NoHandle {
                            self.core.unregister(handle);
                        }
                        self.core.undeliverable(&header, reason, Instant::now());
                    }
                }
                Action::DeliverOnce { sink, msg } => sink.deliver(msg),
                Action::CloseStream { peer } => {
                    if let Some(p) = self.peers.remove(&peer) {
                        self.drained_closed += p.link.drained_bytes();
                        p.link.close();
                        p.closer.do_send(CloseStream);
                    }
                }
                Action::Event(event) => self.emit(event),
                Action::Refused {
                    src,
                    stream,
                    handle,
                    why,
                    suppressed,
                } => {
                    warn!(self.log, "refused frame";
                          "src" => src, "stream" => stream, "handle" => handle,
                          "why" => %why, "suppressed_since_last" => suppressed);
                }
                Action::Stop => ctx.stop(),
            }
        }
        match waits.len() {
            0 => None,
            1 => waits.pop(),
            _ => Some(
                future::join_all(waits)
                    .map(|r| r.into_iter().collect::<Result<Vec<()>>>().map(|_| ()))
                    .boxed(),
            ),
        }
    }

    fn forward(
        &mut self,
        peer: ContextId,
        frame: Frame,
        lane: Lane,
        ctx: &mut actix::Context<Self>,
    ) -> Option<Queueing> {
        let Some(p) = self.peers.get(&peer) else {
            self.core
                .undeliverable(&frame.header, DeadReason::Disconnected, Instant::now());
            return None;
        };
        let link = p.link.clone();
        let refused = match lane {
            Lane::Wait => match link.try_send(frame) {
                Ok(Ok(())) => return None,
                Ok(Err(frame)) => {
                    let header = frame.header;
                    let me = ctx.address();
                    let waiting = Waiting::new(&self.waiting, &frame);
                    return Some(
                        async move {
                            let _waiting = waiting;
                            match link.send(frame).await {
                                Ok(()) => Ok(()),
                                Err(_) => {
                                    me.do_send(Undeliverable(header, DeadReason::Disconnected));
                                    Err(Error::Dead {
                                        context: header.dst,
                                        reason: DeadReason::Disconnected,
                                    })
                                }
                            }
                        }
                        .boxed(),
                    );
                }
                Err(_) => Err(PushError::Closed(Frame::new(Header::default(), Vec::new()))),
            },
            Lane::Push => link.push(frame),
            Lane::Control => link.push_control(frame),
            Lane::Reserved => match self.reserved.take() {
                Some(room) => link.push_reserved(frame, room),
                None => link.push(frame),
            },
        };
        match refused {
            Ok(()) => {}
            Err(PushError::Full(frame)) => {
                self.dropped += 1;
                if let Some(n) = self.overflow.note(peer, Instant::now()) {
                    warn!(self.log, "link full: frames refused";
                          "peer" => peer, "queued" => link.queued_bytes(), "suppressed_since_last" => n);
                }
                self.core
                    .undeliverable(&frame.header, DeadReason::Overloaded, Instant::now());
            }
            Err(PushError::Closed(frame)) => {
                self.core
                    .undeliverable(&frame.header, DeadReason::Disconnected, Instant::now());
            }
        }
        None
    }

    fn emit(&mut self, event: ContextEvent) {
        if let ContextEvent::Died { id, reason } = &event {
            debug!(self.log, "context died"; "id" => *id, "reason" => %reason);
        }
        self.subscribers.retain(|s| s.connected());
        for s in &self.subscribers {
            s.do_send(event.clone());
        }
        let (now, log) = (Instant::now(), &self.log);
        self.bounded.retain(|sink| match sink.deliver(&event, now) {
            None => false,
            Some(Pushed::Missed { warn: Some(n) }) => {
                warn!(log, "event subscriber not keeping up: events counted, not queued (it gets Lagged)";
                      "missed_since_last_warning" => n);
                true
            }
            Some(_) => true,
        });
    }

    fn tick(&mut self, ctx: &mut actix::Context<Self>) {
        let now = Instant::now();
        for (&peer, p) in self.peers.iter_mut() {
            let drained = p.link.drained_bytes();
            let stuck = p.link.queued_bytes() > 0 && drained == p.drained;
            p.drained = drained;
            self.core.link_state(peer, stuck, now);
        }
        self.core.tick(now);
        self.sweep_unguarded();
        self.overflow.prune(now);
        self.refused.prune(now);
        // Large read and encode buffers nobody used lately are freed.
        crate::spare::release_idle(now);
        self.pump(ctx);
    }

    /// Frees the unguarded reply handles whose caller has gone; forgets
    /// those already answered.
    fn sweep_unguarded(&mut self) {
        let core = &mut self.core;
        self.unguarded.retain(|&h| match core.sink_mut(h) {
            Some(Sink::Once(tx)) if tx.is_closed() => {
                core.unregister(h);
                false
            }
            Some(Sink::Once(_)) => true,
            _ => false,
        });
    }

    /// Notes a [`Request`]'s reply handle as unguarded until the tick
    /// finds it answered or abandoned: the caller's guard is made only
    /// once the answer reaches it.
    fn unguard(&mut self, reply_to: Handle) -> Handle {
        self.unguarded.push(reply_to);
        reply_to
    }

    /// Runs `f` on the core, then pumps; the result is a wait for room, if
    /// the frame had to wait.
    fn with_core(
        &mut self,
        ctx: &mut actix::Context<Self>,
        f: impl FnOnce(&mut RouterCore<Sink>, Instant),
    ) -> Option<Queueing> {
        f(&mut self.core, Instant::now());
        self.pump(ctx)
    }
}

impl Actor for Router {
    type Context = actix::Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        // Senders wait (backpressure) past this many queued messages.
        ctx.set_mailbox_capacity(1 << 16);
        ctx.run_interval(TICK, |act, ctx| act.tick(ctx));
    }

    fn stopped(&mut self, ctx: &mut Self::Context) {
        self.core.stopping();
        self.pump(ctx);
        for p in self.peers.values() {
            p.link.close();
            p.closer.do_send(CloseStream);
        }
        for tx in self.on_stop.drain(..) {
            let _ = tx.send(());
        }
    }
}

/// Answers `msg` from context `me`: the value, or the CallError, goes to
/// the sender's `reply_to` (nowhere when it asked for no reply). A value
/// that cannot be encoded becomes a CallError, so the caller still hears.
pub fn send_reply<R: serde::Serialize>(
    router: &Addr<Router>,
    me: ContextId,
    msg: &Message,
    answer: std::result::Result<R, econtext_wire::CallError>,
) {
    let data = answer
        .map(|v| payload::encode(&v))
        .unwrap_or_else(|e| payload::encode(&e));
    send_reply_encoded(router, me, msg, data);
}

/// [`send_reply`] for an answer that is already encoded.
pub fn send_reply_encoded(
    router: &Addr<Router>,
    me: ContextId,
    msg: &Message,
    data: std::result::Result<Bytes, econtext_wire::WireError>,
) {
    if msg.reply_to == 0 {
        return;
    }
    let data = data.unwrap_or_else(|e| {
        let err = econtext_wire::CallError {
            type_name: "TypeError".into(),
            message: format!("reply cannot be encoded: {e}"),
            traceback: String::new(),
        };
        payload::encode(&err).expect("CallError encodes")
    });
    router.do_send(SendReply(crate::message::reply_frame(me, msg, data)));
}

/// Frames read from the stream to `from`, in order: every complete frame
/// one read brought (one mailbox message and one wake-up per read, not
/// per frame). Handled at once: the reader never waits for another
/// peer's link. The emptied Vec comes back for the reader's next batch.
#[derive(Message)]
#[rtype(result = "Vec<Frame>")]
pub struct Inbound {
    pub from: ContextId,
    pub frames: Vec<Frame>,
}

impl Handler<Inbound> for Router {
    type Result = MessageResult<Inbound>;

    fn handle(&mut self, mut msg: Inbound, ctx: &mut Self::Context) -> Self::Result {
        let from = msg.from;
        // Pumped after each frame, exactly as if each had come alone.
        for frame in msg.frames.drain(..) {
            self.with_core(ctx, |c, now| c.inbound(from, frame, now));
        }
        MessageResult(msg.frames)
    }
}

/// Sends a frame originated in this context; resolves once it is queued.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Send(pub Frame);

impl Handler<Send> for Router {
    type Result = ResponseFuture<()>;

    fn handle(&mut self, msg: Send, ctx: &mut Self::Context) -> Self::Result {
        match self.with_core(ctx, |c, now| c.send_local(msg.0, Lane::Wait, now)) {
            Some(w) => Box::pin(w.map(|_| ())),
            None => Box::pin(future::ready(())),
        }
    }
}

/// Sends a frame originated in this context and hands back the wait for
/// link room (if any), for the caller to await inside its own deadline;
/// dropping it abandons the frame.
#[derive(Message)]
#[rtype(result = "Option<Queueing>")]
pub struct Dispatch {
    pub frame: Frame,
    /// Control frames (SHUTDOWN) skip the byte budget.
    pub control: bool,
}

impl Handler<Dispatch> for Router {
    type Result = MessageResult<Dispatch>;

    fn handle(&mut self, msg: Dispatch, ctx: &mut Self::Context) -> Self::Result {
        let lane = if msg.control {
            Lane::Control
        } else {
            Lane::Wait
        };
        MessageResult(self.with_core(ctx, |c, now| c.send_local(msg.frame, lane, now)))
    }
}

/// A reply from a local service: queued without waiting, up to the
/// link's cap (a requester that does not read cannot pile them up).
#[derive(Message)]
#[rtype(result = "()")]
pub struct SendReply(pub Frame);

impl Handler<SendReply> for Router {
    type Result = ();

    fn handle(&mut self, msg: SendReply, ctx: &mut Self::Context) {
        self.with_core(ctx, |c, now| c.send_local(msg.0, Lane::Push, now));
    }
}

/// A frame the pump could not queue (its link closed while it waited).
#[derive(Message)]
#[rtype(result = "()")]
struct Undeliverable(Header, DeadReason);

impl Handler<Undeliverable> for Router {
    type Result = ();

    fn handle(&mut self, msg: Undeliverable, ctx: &mut Self::Context) {
        self.with_core(ctx, |c, now| c.undeliverable(&msg.0, msg.1, now));
    }
}

/// Sends a request to `(dst, handle)` with a fresh one-shot reply handle
/// that accepts only `dst`'s answer and receives Dead if `dst` dies first.
#[derive(Message)]
#[rtype(result = "Result<StartedRequest>")]
pub struct Request {
    pub dst: ContextId,
    pub handle: Handle,
    pub data: Bytes,
    /// Hand back the room of the link the request left by, for the
    /// caller's next requests to take the fast path ([`Call`]).
    pub want_room: bool,
}

/// A request on its way: its reply handle, the reply, and the wait for
/// link room (if the frame had to wait; the caller awaits it).
pub struct StartedRequest {
    pub reply_to: Handle,
    pub reply: oneshot::Receiver<Message>,
    pub queued: Option<Queueing>,
    /// The room of the link it left by, when asked for and it left by one.
    pub room: Option<LinkRoom>,
}

impl Handler<Request> for Router {
    type Result = MessageResult<Request>;

    fn handle(&mut self, msg: Request, ctx: &mut Self::Context) -> Self::Result {
        let (tx, rx) = oneshot::channel();
        let now = Instant::now();
        let res = self
            .core
            .request(msg.dst, msg.handle, msg.data, Sink::Once(tx), now);
        let room = msg
            .want_room
            .then(|| self.core.next_hop(msg.dst))
            .flatten()
            .and_then(|peer| self.peers.get(&peer))
            .map(|p| p.link.room());
        MessageResult(match res {
            Ok(reply_to) => Ok(StartedRequest {
                reply_to: self.unguard(reply_to),
                reply: rx,
                queued: self.pump(ctx),
                room,
            }),
            Err((e, _)) => Err(e),
        })
    }
}

/// A request whose caller does not wait for the Router's turn (a call's
/// fast path, sent with `try_send`): the caller took the frame's room on
/// its link ([`LinkRoom::reserve`]), drew its reply handle and made its
/// reply channel, and returned. The frame is queued on that room, so it
/// never waits here; the caller hears Dead through its reply channel if
/// the target is dead or the frame cannot be queued (Disconnected, or
/// Overloaded when the route moved to a link at its hard cap).
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct Call {
    pub dst: ContextId,
    pub handle: Handle,
    pub data: Bytes,
    /// The reply handle the caller drew; used when free (another one
    /// otherwise, which the tick frees once the caller has gone).
    pub reply_to: Handle,
    pub reply: oneshot::Sender<Message>,
    pub room: Reservation,
}

impl Handler<Call> for Router {
    type Result = ();

    fn handle(&mut self, msg: Call, ctx: &mut Self::Context) {
        let Call {
            dst,
            handle,
            data,
            reply_to,
            reply,
            room,
        } = msg;
        self.calls_fast += 1;
        self.reserved = Some(room);
        let sink = Sink::Once(reply);
        let drawn = Some(reply_to);
        let now = Instant::now();
        match (self.core).request_on(dst, handle, data, sink, drawn, Lane::Reserved, now) {
            Ok(h) if h != reply_to => self.unguarded.push(h),
            Ok(_) => {}
            Err((e, sink)) => {
                let reason = match e {
                    Error::Dead { reason, .. } => reason,
                    _ => DeadReason::Unreachable,
                };
                sink.deliver(Message::dead(dst, reply_to, &reason));
            }
        }
        // Only Lane::Wait frames come back as waits: none here.
        drop(self.pump(ctx));
        // Room not used (the frame went nowhere, or elsewhere) goes back.
        self.reserved = None;
    }
}

/// Frees a reply handle whose caller has gone (timed out, or dropped its
/// call), unless the handle has been given to another call since: only an
/// entry whose reply channel is closed is removed, so a stale guard never
/// frees a handle drawn again by another call.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct Abandon(pub Handle);

impl Handler<Abandon> for Router {
    type Result = ();

    fn handle(&mut self, msg: Abandon, _: &mut Self::Context) {
        if let Some(Sink::Once(tx)) = self.core.sink_mut(msg.0) {
            if tx.is_closed() {
                self.core.unregister(msg.0);
            }
        }
    }
}

/// Registers a sink on a handle (a fresh one when `handle` is None).
#[derive(Message)]
#[rtype(result = "Handle")]
pub struct Register {
    pub handle: Option<Handle>,
    pub sink: Sink,
    pub persistent: bool,
    /// Deliver Dead to this handle when that context dies.
    pub waiting_on: Option<ContextId>,
    /// Whose messages it takes (local ones always).
    pub accept: Accept,
    /// Takes bulk frames too (a file receiver's data handle, which checks
    /// their bytes itself); every other handle refuses them.
    pub bulk: bool,
}

impl Handler<Register> for Router {
    type Result = MessageResult<Register>;

    fn handle(&mut self, msg: Register, ctx: &mut Self::Context) -> Self::Result {
        let h = self.core.register(
            msg.handle,
            msg.sink,
            msg.persistent,
            msg.waiting_on,
            msg.accept,
        );
        if msg.bulk {
            self.core.allow_bulk(h);
        }
        self.pump(ctx);
        MessageResult(h)
    }
}

/// The mailbox capacity built-in services use: room for every child of a
/// large fleet asking at once.
pub const SERVICE_MAILBOX: usize = 1 << 14;

/// Frees a handle.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Unregister(pub Handle);

impl Handler<Unregister> for Router {
    type Result = ();

    fn handle(&mut self, msg: Unregister, _: &mut Self::Context) {
        self.core.unregister(msg.0);
    }
}

/// Asks a stream actor to close.
#[derive(Message, Debug, Clone, Copy)]
#[rtype(result = "()")]
pub struct CloseStream;

/// A stream to a directly connected peer is ready.
#[derive(Message)]
#[rtype(result = "()")]
pub struct AttachStream {
    pub peer: ContextId,
    pub link: StreamLink,
    pub closer: Recipient<CloseStream>,
    /// True for the stream to this context's parent.
    pub is_parent: bool,
}

impl Handler<AttachStream> for Router {
    type Result = ();

    fn handle(&mut self, msg: AttachStream, _: &mut Self::Context) {
        self.core.attach(msg.peer, msg.is_parent);
        self.peers.insert(
            msg.peer,
            Peer {
                drained: msg.link.drained_bytes(),
                link: msg.link,
                closer: msg.closer,
            },
        );
    }
}

/// A stream ended (EOF, error, bad frame, or closed on purpose).
#[derive(Message)]
#[rtype(result = "()")]
pub struct StreamClosed {
    pub peer: ContextId,
    pub reason: DeadReason,
}

impl Handler<StreamClosed> for Router {
    type Result = ();

    fn handle(&mut self, msg: StreamClosed, ctx: &mut Self::Context) {
        self.with_core(ctx, |c, now| c.stream_closed(msg.peer, msg.reason, now));
    }
}

/// Local routing changes: the master announcing a context it created
/// through `via` (the seed's "and itself" ADD_ROUTE). `parent` is the
/// context that created it, for subtree expansion on death.
#[derive(Message)]
#[rtype(result = "bool")]
pub struct AddLocalRoute {
    pub target: ContextId,
    pub via: ContextId,
    pub parent: ContextId,
}

impl Handler<AddLocalRoute> for Router {
    type Result = bool;

    fn handle(&mut self, msg: AddLocalRoute, _: &mut Self::Context) -> bool {
        self.core.add_local_route(msg.target, msg.via, msg.parent)
    }
}

/// Declares a context dead from this side (e.g. its process exited).
#[derive(Message)]
#[rtype(result = "()")]
pub struct DeclareDead {
    pub id: ContextId,
    pub reason: DeadReason,
}

impl Handler<DeclareDead> for Router {
    type Result = ();

    fn handle(&mut self, msg: DeclareDead, ctx: &mut Self::Context) {
        self.with_core(ctx, |c, now| c.declare_dead(msg.id, msg.reason, now));
    }
}

/// A fresh context ID from the master's allocator: never 0, never live,
/// reused only after a quarantine.
#[derive(Message)]
#[rtype(result = "std::result::Result<ContextId, IdsExhausted>")]
pub struct AllocateId;

impl Handler<AllocateId> for Router {
    type Result = std::result::Result<ContextId, IdsExhausted>;

    fn handle(&mut self, _: AllocateId, _: &mut Self::Context) -> Self::Result {
        self.core.allocate_id(Instant::now())
    }
}

/// The ancestors of a context as this router's core knows them, nearest
/// first, ending with this context (empty when unknown). The master's core
/// is the one record of the tree's parentage.
#[derive(Message)]
#[rtype(result = "Vec<ContextId>")]
pub struct Ancestors(pub ContextId);

impl Handler<Ancestors> for Router {
    type Result = MessageResult<Ancestors>;

    fn handle(&mut self, msg: Ancestors, _: &mut Self::Context) -> Self::Result {
        MessageResult(self.core.ancestors(msg.0))
    }
}

/// Runs `then` with `root` and every context created through it, as this
/// router's core knows them ([`RouterCore::subtree_members`]), inside the
/// router's turn: whatever `then` sends is ordered after every event the
/// router emitted before and before every event it emits after. How the
/// supervision hub seeds a subtree subscription without a parentage map
/// of its own.
#[derive(Message)]
#[rtype(result = "()")]
pub struct WithSubtree {
    pub root: ContextId,
    pub then: Box<dyn FnOnce(Vec<ContextId>) + std::marker::Send>,
}

impl Handler<WithSubtree> for Router {
    type Result = ();

    fn handle(&mut self, msg: WithSubtree, _: &mut Self::Context) {
        (msg.then)(self.core.subtree_members(msg.root));
    }
}

/// Runs a closure in the router's turn, after every event the router has
/// already emitted: a barrier for actors that follow its events (the
/// supervision hub's lookup of a context it may not have heard of yet).
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct InRouterTurn(pub Box<dyn FnOnce() + std::marker::Send>);

impl Handler<InRouterTurn> for Router {
    type Result = ();

    fn handle(&mut self, msg: InRouterTurn, _: &mut Self::Context) {
        (msg.0)();
    }
}

/// Subscribes an actor to every [`ContextEvent`] this router emits
/// (starts and deaths, children first).
///
/// Bounded: the router holds at most
/// [`EVENT_QUEUE`](crate::supervision::EVENT_QUEUE) events the actor has
/// not handled yet (it hands them over one at a time, each after the one
/// before was handled). Past that, events are counted, not queued, and
/// the actor gets one [`ContextEvent::Lagged`] with the count where the
/// gap is; the router warns once per 10 s. A subscriber that never reads
/// costs a bounded queue, never the router's (or its own mailbox's)
/// memory. The subscription ends when the actor stops.
/// ([`crate::supervision::Supervision::subscribe_with`] is the same with
/// a scope and a capacity of one's choosing.)
#[derive(Message)]
#[rtype(result = "()")]
pub struct Subscribe(pub Recipient<ContextEvent>);

impl Handler<Subscribe> for Router {
    type Result = ();

    fn handle(&mut self, msg: Subscribe, _: &mut Self::Context) {
        let sink = EventSink {
            queue: SharedQueue::new(EVENT_QUEUE),
            actor: Some(msg.0),
        };
        sink.start();
        self.bounded.push(sink);
    }
}

/// [`Subscribe`] for this crate's built-in services (importer, module
/// forwarder, log forwarder) and the supervision hub: events go out with
/// `do_send`, past the subscriber's mailbox capacity, because these
/// prune per-context state on each death and start a supervisor on each
/// start, so they must never miss one; they handle each event without
/// waiting.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct SubscribeService(pub(crate) Recipient<ContextEvent>);

impl Handler<SubscribeService> for Router {
    type Result = ();

    fn handle(&mut self, msg: SubscribeService, _: &mut Self::Context) {
        self.subscribers.push(msg.0);
    }
}

/// A context is up: a connect (direct or through an intermediate)
/// succeeded. Emitted to subscribers as [`ContextEvent::Started`].
#[derive(Message)]
#[rtype(result = "()")]
pub struct ContextStarted {
    pub id: ContextId,
    pub name: String,
    pub parent: ContextId,
}

impl Handler<ContextStarted> for Router {
    type Result = ();

    fn handle(&mut self, msg: ContextStarted, ctx: &mut Self::Context) {
        self.with_core(ctx, |c, _| c.started(msg.id, msg.name, msg.parent));
    }
}

/// Resolves with the reason when `id` dies (at once if it already has).
#[derive(Message)]
#[rtype(result = "oneshot::Receiver<DeadReason>")]
pub struct WatchContext(pub ContextId);

impl Handler<WatchContext> for Router {
    type Result = MessageResult<WatchContext>;

    fn handle(&mut self, msg: WatchContext, ctx: &mut Self::Context) -> Self::Result {
        let (tx, rx) = oneshot::channel();
        self.with_core(ctx, |c, _| c.watch(msg.0, Sink::Watch(tx)));
        MessageResult(rx)
    }
}

/// Shuts this context down gracefully: SHUTDOWN to every child, then the
/// streams close once they are gone (or the grace period ends), and the
/// router stops.
#[derive(Message)]
#[rtype(result = "()")]
pub struct ShutdownContext;

impl Handler<ShutdownContext> for Router {
    type Result = ();

    fn handle(&mut self, _: ShutdownContext, ctx: &mut Self::Context) {
        self.with_core(ctx, |c, now| c.begin_shutdown(now));
        // Enforce the deadline exactly, not at the next tick.
        ctx.run_later(self.core.shutdown_grace(), |act, ctx| act.tick(ctx));
    }
}

/// How long this router gives a context to go after SHUTDOWN (its own
/// shutdown's grace period; `Context::shutdown` waits this long).
#[derive(Message)]
#[rtype(result = "Duration")]
pub struct ShutdownGrace;

impl Handler<ShutdownGrace> for Router {
    type Result = MessageResult<ShutdownGrace>;

    fn handle(&mut self, _: ShutdownGrace, _: &mut Self::Context) -> Self::Result {
        MessageResult(self.core.shutdown_grace())
    }
}

/// Resolves when the router has stopped (after a shutdown).
#[derive(Message)]
#[rtype(result = "oneshot::Receiver<()>")]
pub struct WhenStopped;

impl Handler<WhenStopped> for Router {
    type Result = MessageResult<WhenStopped>;

    fn handle(&mut self, _: WhenStopped, _: &mut Self::Context) -> Self::Result {
        let (tx, rx) = oneshot::channel();
        self.on_stop.push(tx);
        MessageResult(rx)
    }
}

/// Snapshot for diagnostics and tests.
#[derive(Message)]
#[rtype(result = "RouterStats")]
pub struct GetStats;

/// Fields are added as the router learns to count more (hence
/// `non_exhaustive`: read it, never build it, outside this crate).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct RouterStats {
    pub handles: usize,
    pub streams: Vec<ContextId>,
    pub queued_bytes: HashMap<ContextId, usize>,
    /// The core's map sizes and counters.
    pub core: CoreStats,
    /// Frames refused because a link was over its cap.
    pub dropped_full: u64,
    /// Bytes (frames with headers) this router has written to all its
    /// links since it started, closed ones included.
    pub link_bytes: u64,
    /// Local frames waiting for room on a link, and their bytes (with
    /// headers). Each is held by the wait its sender awaits, so a sender
    /// that gives up takes its frame with it.
    pub waiting_frames: usize,
    pub waiting_bytes: usize,
    /// Requests that came by the fast path ([`Call`]), since the start.
    pub calls_fast: u64,
    /// Events held for [`Subscribe`]rs that have not handled them yet
    /// (each subscriber at most [`EVENT_QUEUE`]).
    pub subscriber_backlog: usize,
    /// Events counted instead of queued for [`Subscribe`]rs that were
    /// behind (they got [`ContextEvent::Lagged`]), current subscribers.
    pub subscriber_missed: u64,
    /// Bytes of large read and encode buffers this process keeps for
    /// reuse now (all streams' spares and the encode pool), freed once
    /// unused for [`crate::spare::KEEP_IDLE`].
    pub kept_buffer_bytes: usize,
}

impl Handler<GetStats> for Router {
    type Result = MessageResult<GetStats>;

    fn handle(&mut self, _: GetStats, _: &mut Self::Context) -> Self::Result {
        let mut streams: Vec<ContextId> = self.peers.keys().copied().collect();
        streams.sort_unstable();
        let core = self.core.stats();
        MessageResult(RouterStats {
            handles: core.handles,
            queued_bytes: self
                .peers
                .iter()
                .map(|(k, p)| (*k, p.link.queued_bytes()))
                .collect(),
            streams,
            core,
            dropped_full: self.dropped,
            waiting_frames: self.waiting.frames.load(Ordering::Relaxed),
            waiting_bytes: self.waiting.bytes.load(Ordering::Relaxed),
            calls_fast: self.calls_fast,
            subscriber_backlog: self.bounded.iter().map(|b| b.queue.len()).sum(),
            subscriber_missed: self.bounded.iter().map(|b| b.queue.missed_total()).sum(),
            kept_buffer_bytes: crate::spare::retained() + crate::bufpool::kept_bytes(),
            link_bytes: self.drained_closed
                + self
                    .peers
                    .values()
                    .map(|p| p.link.drained_bytes())
                    .sum::<u64>(),
        })
    }
}

/// Sends SHUTDOWN to `id` on the control lane (never behind data).
pub fn shutdown_frame(id: ContextId, me: ContextId) -> Frame {
    Frame::new(
        Header::new(id, me, handles::SHUTDOWN, 0),
        payload::encode(&()).expect("nil encodes"),
    )
}
