//! The Router actor: one per context. A thin shell around [`RoutingTable`]
//! and [`HandleTable`] that owns the streams' write links and delivers
//! frames to local handles.

use std::collections::{HashMap, HashSet};

use actix::prelude::*;
use bytes::Bytes;
use econtext_wire::handles::{self, requires_ancestor};
use econtext_wire::messages::AddRoute;
use econtext_wire::{payload, ContextId, Frame, Handle, Header};
use futures::future::{self, BoxFuture, FutureExt};
use slog::{debug, warn, Logger};
use tokio::sync::{mpsc, oneshot};

use crate::error::{Error, Result};
use crate::event::{ContextEvent, DeadReason};
use crate::handles::{Delivery, HandleTable};
use crate::link::StreamLink;
use crate::message::Message;
use crate::routing::{Route, RoutingTable};

/// Where a handle's messages go.
pub enum Sink {
    /// One reply, then the handle is freed.
    Once(oneshot::Sender<Message>),
    /// A stream of messages (a [`crate::Channel`]).
    Channel(mpsc::UnboundedSender<Message>),
    /// A user's actor.
    Recipient(Recipient<Message>),
}

impl Sink {
    fn deliver(self, msg: Message) {
        match self {
            Sink::Once(tx) => {
                let _ = tx.send(msg);
            }
            mut other => other.deliver_ref(msg),
        }
    }

    fn deliver_ref(&mut self, msg: Message) {
        match self {
            Sink::Once(_) => unreachable!("one-shot sinks are delivered by value"),
            Sink::Channel(tx) => {
                let _ = tx.send(msg);
            }
            // A closed mailbox (the actor stopped or panicked) drops the
            // message; the Router sees the closed sink at the next delivery.
            Sink::Recipient(r) => {
                let _ = r.try_send(msg);
            }
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
}

/// A shared record of `(router's context, frame header)` per routed frame.
pub type Trace = std::sync::Arc<std::sync::Mutex<Vec<(ContextId, Header)>>>;

/// Observes context deaths (the supervisor tree, users' watchers).
#[derive(Debug, Clone, PartialEq, Eq, Message)]
#[rtype(result = "()")]
pub struct ContextDied {
    pub id: ContextId,
    pub reason: DeadReason,
}

/// The Router actor.
pub struct Router {
    table: RoutingTable,
    handles: HandleTable<Sink>,
    links: HashMap<ContextId, StreamLink>,
    closers: HashMap<ContextId, Recipient<CloseStream>>,
    ancestors: HashSet<ContextId>,
    watchers: Vec<Recipient<ContextDied>>,
    subscribers: Vec<Recipient<ContextEvent>>,
    one_shot_watchers: HashMap<ContextId, Vec<oneshot::Sender<DeadReason>>>,
    dead: HashMap<ContextId, DeadReason>,
    trace: Option<Trace>,
    shutting_down: bool,
    log: Logger,
}

impl Router {
    pub fn new(config: RouterConfig) -> Self {
        Router {
            table: RoutingTable::new(config.id, config.parent),
            handles: HandleTable::default(),
            links: HashMap::new(),
            closers: HashMap::new(),
            ancestors: config.ancestors.into_iter().collect(),
            watchers: Vec::new(),
            subscribers: Vec::new(),
            one_shot_watchers: HashMap::new(),
            dead: HashMap::new(),
            trace: config.trace,
            shutting_down: false,
            log: config.log,
        }
    }

    fn me(&self) -> ContextId {
        self.table.me()
    }

    /// Tells every subscriber; those whose actor is gone are dropped.
    fn emit(&mut self, event: ContextEvent) {
        self.subscribers.retain(|s| s.connected());
        for s in &self.subscribers {
            s.do_send(event.clone());
        }
    }

    /// Sends Dead back to a frame's sender, when it asked for a reply.
    fn bounce(&mut self, frame: &Frame, reason: DeadReason) -> BoxFuture<'static, ()> {
        if frame.header.reply_to == 0 {
            return future::ready(()).boxed();
        }
        let data = payload::encode(&econtext_wire::Dead::from(&reason)).expect("Dead encodes");
        let back = Frame::new(
            Header::new(frame.header.src, self.me(), frame.header.reply_to, 0),
            data,
        );
        // A bounce that itself has nowhere to go is dropped (reply_to is 0).
        self.route_frame(back, None)
    }

    /// Routes one frame. `from` is the stream it arrived on (None: local).
    fn route_frame(&mut self, frame: Frame, from: Option<ContextId>) -> BoxFuture<'static, ()> {
        if let Some(t) = &self.trace {
            t.lock()
                .expect("trace lock")
                .push((self.me(), frame.header));
        }
        match self.table.route(frame.header.dst) {
            Route::Local => self.deliver_local(frame, from),
            Route::Stream(peer) => {
                if Some(peer) == from {
                    // Never send a frame back where it came from: that is
                    // a loop (or a child spoofing its parent's address).
                    warn!(self.log, "dropping frame that would loop";
                          "dst" => frame.header.dst, "src" => frame.header.src, "peer" => peer);
                    return self.bounce(&frame, DeadReason::Unreachable);
                }
                let Some(link) = self.links.get(&peer).cloned() else {
                    return self.bounce(&frame, DeadReason::Unreachable);
                };
                match link.try_send(frame) {
                    Ok(Ok(())) => future::ready(()).boxed(),
                    Ok(Err(frame)) => async move {
                        let _ = link.send(frame).await;
                    }
                    .boxed(),
                    Err(_) => future::ready(()).boxed(),
                }
            }
            Route::Nowhere => {
                let why = match self.dead.get(&frame.header.dst) {
                    Some(r) => r.clone(),
                    None => DeadReason::Unreachable,
                };
                debug!(self.log, "no route"; "dst" => frame.header.dst, "src" => frame.header.src);
                self.bounce(&frame, why)
            }
        }
    }

    /// Delivers to a local handle; the future is a bounce (Dead to the
    /// sender) that may have to wait for room on its link.
    fn deliver_local(&mut self, frame: Frame, from: Option<ContextId>) -> BoxFuture<'static, ()> {
        let h = frame.header;
        if requires_ancestor(h.handle) && from.is_some() {
            let ok = from == self.table.parent() && self.ancestors.contains(&h.src);
            if !ok {
                warn!(self.log, "refused: only an ancestor may use this handle";
                      "handle" => h.handle, "src" => h.src, "stream" => from);
                return self.bounce(
                    &frame,
                    DeadReason::Refused(format!(
                        "context {} may not send to handle {}",
                        h.src, h.handle
                    )),
                );
            }
        }
        match h.handle {
            handles::ADD_ROUTE if from.is_some() => {
                match payload::decode::<AddRoute>(&frame.data) {
                    Ok(r) => {
                        if !self.table.add_route(r.target, r.via) {
                            warn!(self.log, "ADD_ROUTE via unknown context"; "target" => r.target, "via" => r.via);
                        }
                    }
                    Err(e) => warn!(self.log, "bad ADD_ROUTE"; "error" => %e),
                }
                return future::ready(()).boxed();
            }
            handles::DEL_ROUTE if from.is_some() => {
                match payload::decode::<ContextId>(&frame.data) {
                    // Only a context's own subtree may be declared dead by
                    // the stream it sits behind.
                    Ok(target)
                        if self.table.route(target) == Route::Stream(from.unwrap())
                            && Some(target) != self.table.parent() =>
                    {
                        self.context_lost(target, DeadReason::Disconnected);
                    }
                    // Already gone (a DEL_ROUTE per member of a subtree).
                    Ok(target) if self.dead.contains_key(&target) => {}
                    Ok(target) => {
                        warn!(self.log, "ignoring DEL_ROUTE from outside its subtree"; "target" => target)
                    }
                    Err(e) => warn!(self.log, "bad DEL_ROUTE"; "error" => %e),
                }
                return future::ready(()).boxed();
            }
            _ => {}
        }
        let msg = Message::from_frame(frame);
        match self.handles.take_for_delivery(h.handle) {
            Some(Delivery::Once(sink)) => sink.deliver(msg),
            Some(Delivery::Keep(sink)) => sink.deliver_ref(msg),
            None if !msg.is_dead() => {
                debug!(self.log, "message for unknown handle"; "handle" => h.handle, "src" => h.src);
                let f = Frame::new(h, msg.data);
                return self.bounce(&f, DeadReason::NoHandle);
            }
            None => {}
        }
        future::ready(()).boxed()
    }

    /// `root` and everything reached through it is gone.
    fn context_lost(&mut self, root: ContextId, reason: DeadReason) -> bool {
        let dead = self.table.subtree(root);
        let lost_parent = self.table.forget(&dead);
        for d in &dead {
            self.dead.insert(*d, reason.clone());
            if let Some(link) = self.links.remove(d) {
                link.close();
            }
            if let Some(closer) = self.closers.remove(d) {
                closer.do_send(CloseStream);
            }
        }
        for (h, sink) in self.handles.waiting_on(&dead) {
            sink.deliver(Message::dead(root, h, &reason));
        }
        // Tell the parent, so the master can fail its own waiters (the
        // parent stream itself is among the dead when it is the one lost).
        if let Some(p) = self.table.parent() {
            if let Some(link) = self.links.get(&p) {
                for d in &dead {
                    let data = payload::encode(d).expect("u16 encodes");
                    let _ = link.try_send(Frame::new(
                        Header::new(p, self.me(), handles::DEL_ROUTE, 0),
                        data,
                    ));
                }
            }
        }
        for d in &dead {
            debug!(self.log, "context died"; "id" => *d, "reason" => %reason);
            for w in &self.watchers {
                w.do_send(ContextDied {
                    id: *d,
                    reason: reason.clone(),
                });
            }
            self.emit(ContextEvent::Died {
                id: *d,
                reason: reason.clone(),
            });
            for tx in self.one_shot_watchers.remove(d).unwrap_or_default() {
                let _ = tx.send(reason.clone());
            }
        }
        if lost_parent {
            for (h, sink) in self.handles.drain() {
                sink.deliver(Message::dead(root, h, &DeadReason::ParentLost));
            }
        }
        lost_parent
    }

    /// Graceful shutdown (the seed's "Shutdown"): children are told first,
    /// then after a moment every stream closes and the router stops, which
    /// delivers Dead to every handle still registered.
    fn begin_shutdown(&mut self, ctx: &mut actix::Context<Self>) {
        if self.shutting_down {
            return;
        }
        self.shutting_down = true;
        for child in self.table.children() {
            if let Some(link) = self.links.get(&child) {
                let f = Frame::new(
                    Header::new(child, self.me(), handles::SHUTDOWN, 0),
                    payload::encode(&()).expect("nil"),
                );
                let _ = link.try_send(f);
            }
        }
        ctx.run_later(std::time::Duration::from_millis(50), |act, ctx| {
            for closer in act.closers.values() {
                closer.do_send(CloseStream);
            }
            ctx.stop();
        });
    }
}

/// Shuts this context down gracefully.
#[derive(Message)]
#[rtype(result = "()")]
pub struct ShutdownContext;

impl Handler<ShutdownContext> for Router {
    type Result = ();

    fn handle(&mut self, _: ShutdownContext, ctx: &mut Self::Context) {
        self.begin_shutdown(ctx);
    }
}

impl Actor for Router {
    type Context = actix::Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        // Senders wait (backpressure) past this many queued messages.
        ctx.set_mailbox_capacity(1 << 16);
    }

    fn stopped(&mut self, _: &mut Self::Context) {
        for (h, sink) in self.handles.drain() {
            sink.deliver(Message::dead(self.me(), h, &DeadReason::RouterStopped));
        }
        for link in self.links.values() {
            link.close();
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
    router.do_send(Send(crate::message::reply_frame(me, msg, data)));
}

/// A frame read from the stream to `from`. The reply completes once the
/// frame is queued onward, which is how backpressure reaches the reader.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Inbound {
    pub from: ContextId,
    pub frame: Frame,
}

impl Handler<Inbound> for Router {
    type Result = ResponseFuture<()>;

    fn handle(&mut self, msg: Inbound, _: &mut Self::Context) -> Self::Result {
        let src = msg.frame.header.src;
        // Anti-spoofing: a frame from a child stream must come from that
        // child's subtree.
        if Some(msg.from) != self.table.parent() && self.table.route(src) != Route::Stream(msg.from)
        {
            warn!(self.log, "dropping frame with a source outside its stream's subtree";
                  "src" => src, "stream" => msg.from);
            return Box::pin(future::ready(()));
        }
        Box::pin(self.route_frame(msg.frame, Some(msg.from)))
    }
}

/// Sends a frame originated in this context.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Send(pub Frame);

impl Handler<Send> for Router {
    type Result = ResponseFuture<()>;

    fn handle(&mut self, msg: Send, _: &mut Self::Context) -> Self::Result {
        Box::pin(self.route_frame(msg.0, None))
    }
}

/// Sends a request to `(dst, handle)` with a fresh one-shot reply handle
/// that receives Dead if `dst` dies first.
#[derive(Message)]
#[rtype(result = "Result<(Handle, oneshot::Receiver<Message>)>")]
pub struct Request {
    pub dst: ContextId,
    pub handle: Handle,
    pub data: Bytes,
}

impl Handler<Request> for Router {
    type Result = ResponseFuture<Result<(Handle, oneshot::Receiver<Message>)>>;

    fn handle(&mut self, msg: Request, _: &mut Self::Context) -> Self::Result {
        let (tx, rx) = oneshot::channel();
        if let Some(reason) = self.dead.get(&msg.dst) {
            let e = Error::Dead {
                context: msg.dst,
                reason: reason.clone(),
            };
            return Box::pin(future::ready(Err(e)));
        }
        let reply_to = self.handles.allocate(Sink::Once(tx), false, Some(msg.dst));
        let frame = Frame::new(
            Header::new(msg.dst, self.me(), msg.handle, reply_to),
            msg.data,
        );
        let fut = self.route_frame(frame, None);
        Box::pin(async move {
            fut.await;
            Ok((reply_to, rx))
        })
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
}

impl Handler<Register> for Router {
    type Result = MessageResult<Register>;

    fn handle(&mut self, msg: Register, _: &mut Self::Context) -> Self::Result {
        if let Some(c) = msg.waiting_on {
            if let Some(reason) = self.dead.get(&c).cloned() {
                let h = msg.handle.unwrap_or(0);
                msg.sink.deliver(Message::dead(c, h, &reason));
                return MessageResult(h);
            }
        }
        MessageResult(match msg.handle {
            Some(h) => {
                self.handles.insert(h, msg.sink);
                h
            }
            None => self
                .handles
                .allocate(msg.sink, msg.persistent, msg.waiting_on),
        })
    }
}

/// Frees a handle.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Unregister(pub Handle);

impl Handler<Unregister> for Router {
    type Result = ();

    fn handle(&mut self, msg: Unregister, _: &mut Self::Context) {
        self.handles.remove(msg.0);
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
        if !msg.is_parent {
            self.table.add_child_stream(msg.peer);
        }
        self.dead.remove(&msg.peer);
        self.links.insert(msg.peer, msg.link);
        self.closers.insert(msg.peer, msg.closer);
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
        if self.links.contains_key(&msg.peer) && self.context_lost(msg.peer, msg.reason) {
            // A child whose parent is gone exits: no orphans.
            self.begin_shutdown(ctx);
        }
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
        self.dead.remove(&msg.target);
        self.table.note_parent(msg.target, msg.parent);
        self.table.add_route(msg.target, msg.via)
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
        if !self.dead.contains_key(&msg.id) && self.context_lost(msg.id, msg.reason) {
            self.begin_shutdown(ctx);
        }
    }
}

/// Subscribes to every death this router sees.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Watch(pub Recipient<ContextDied>);

impl Handler<Watch> for Router {
    type Result = ();

    fn handle(&mut self, msg: Watch, _: &mut Self::Context) {
        self.watchers.push(msg.0);
    }
}

/// Subscribes to every [`ContextEvent`] this router emits (starts and
/// deaths, children first).
#[derive(Message)]
#[rtype(result = "()")]
pub struct Subscribe(pub Recipient<ContextEvent>);

impl Handler<Subscribe> for Router {
    type Result = ();

    fn handle(&mut self, msg: Subscribe, _: &mut Self::Context) {
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

    fn handle(&mut self, msg: ContextStarted, _: &mut Self::Context) {
        self.emit(ContextEvent::Started {
            id: msg.id,
            name: msg.name,
            parent: msg.parent,
        });
    }
}

/// Resolves with the reason when `id` dies (at once if it already has).
#[derive(Message)]
#[rtype(result = "oneshot::Receiver<DeadReason>")]
pub struct WatchContext(pub ContextId);

impl Handler<WatchContext> for Router {
    type Result = MessageResult<WatchContext>;

    fn handle(&mut self, msg: WatchContext, _: &mut Self::Context) -> Self::Result {
        let (tx, rx) = oneshot::channel();
        if let Some(r) = self.dead.get(&msg.0) {
            let _ = tx.send(r.clone());
        } else {
            self.one_shot_watchers.entry(msg.0).or_default().push(tx);
        }
        MessageResult(rx)
    }
}

/// Snapshot for diagnostics and tests.
#[derive(Message)]
#[rtype(result = "RouterStats")]
pub struct GetStats;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RouterStats {
    pub handles: usize,
    pub streams: Vec<ContextId>,
    pub queued_bytes: HashMap<ContextId, usize>,
}

impl Handler<GetStats> for Router {
    type Result = MessageResult<GetStats>;

    fn handle(&mut self, _: GetStats, _: &mut Self::Context) -> Self::Result {
        let mut streams: Vec<ContextId> = self.links.keys().copied().collect();
        streams.sort_unstable();
        MessageResult(RouterStats {
            handles: self.handles.len(),
            queued_bytes: self
                .links
                .iter()
                .map(|(k, l)| (*k, l.queued_bytes()))
                .collect(),
            streams,
        })
    }
}
