//! Actors on handles, users' and the built-in services' alike: typed
//! requests in, typed replies out, through one adapter.
//!
//! The adapter runs inside the Router's delivery (no actor hop of its
//! own): it decodes each message as the handler's request type, hands it
//! to the actor, and sends the actor's answer to the sender's `reply_to`.
//! Every outcome reaches the sender: a message that does not decode is a
//! `TypeError`, a handler that panics (or whose actor stopped) a `panic`
//! CallError. Requests in flight (handed to the actor, not yet answered)
//! are bounded per handle ([`ServeOptions::max_in_flight`], by default
//! [`MAX_IN_FLIGHT`]): past it a request is answered at once with a
//! CallError of type [`OVERLOADED`], never queued without bound and never
//! dropped in silence. A message that asked for no reply and cannot be
//! taken (it does not decode, or the handle is full) is refused to the
//! Router, which counts and logs it.

use std::marker::PhantomData;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use actix::prelude::*;
use bytes::Bytes;
use econtext_wire::{payload, CallError, ContextId, Handle, WireError};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::error::{Error, Result};
use crate::event::DeadReason;
use crate::message::Message;
use crate::router::{send_reply_encoded, Register, Router, Sink};

/// A request delivered to an actor on a handle: the decoded value, who
/// sent it, and where its answer goes. The actor answers with `Ok(reply)`
/// or a `CallError` of its own; the adapter sends either to `reply_to`.
pub struct Request<T, R> {
    /// The context that sent it.
    pub src: ContextId,
    /// The sender's reply handle; 0 when it asked for no reply (its
    /// answer is then discarded).
    pub reply_to: Handle,
    pub value: T,
    _r: PhantomData<fn() -> R>,
}

impl<T: std::marker::Send + 'static, R: std::marker::Send + 'static> actix::Message
    for Request<T, R>
{
    type Result = std::result::Result<R, CallError>;
}

/// What a handler answers with, as the reply's bytes: any `Serialize`
/// value, or bytes the handler encoded itself ([`Encoded`]).
pub trait Answer: std::marker::Send + 'static {
    fn encode(self) -> std::result::Result<Bytes, WireError>;
}

impl<T: Serialize + std::marker::Send + 'static> Answer for T {
    fn encode(self) -> std::result::Result<Bytes, WireError> {
        payload::encode(&self)
    }
}

/// An answer already encoded as one MessagePack value: for services that
/// encode once and reuse, or whose reply bytes carry an owner that
/// accounts for them until the link has written them (the Importer).
pub struct Encoded(pub Bytes);

impl Answer for Encoded {
    fn encode(self) -> std::result::Result<Bytes, WireError> {
        Ok(self.0)
    }
}

/// Dead delivered to a served handle (it is no request, so it does not
/// reach the handler): for services that treat it as a signal (a Rust
/// context's CALL_FUNCTION ends the context, as the seed's does).
#[derive(Debug, Clone, PartialEq, Eq, actix::Message)]
#[rtype(result = "()")]
pub struct HandleDead {
    pub handle: Handle,
    pub src: ContextId,
}

/// How a handle is served.
#[non_exhaustive]
#[derive(Clone)]
pub struct ServeOptions {
    /// Requests handed to the actor and not answered yet, at most.
    pub max_in_flight: usize,
    /// Where Dead arriving on the handle goes; None: it is ignored.
    pub on_dead: Option<Recipient<HandleDead>>,
}

impl Default for ServeOptions {
    fn default() -> Self {
        ServeOptions {
            max_in_flight: MAX_IN_FLIGHT,
            on_dead: None,
        }
    }
}

impl ServeOptions {
    pub fn with_max_in_flight(mut self, n: usize) -> Self {
        self.max_in_flight = n.max(1);
        self
    }

    pub fn with_on_dead(mut self, r: Recipient<HandleDead>) -> Self {
        self.on_dead = Some(r);
        self
    }
}

/// Registers `actor` on a handle of the context `router` serves (a fresh
/// dynamic handle when `handle` is None) and returns the handle. Each
/// message is decoded as `T` and handed to the actor; its answer goes back
/// to the sender's `reply_to`.
///
/// ```ignore
/// struct Counter(u64);
/// impl Actor for Counter { type Context = Context<Self>; }
/// impl Handler<Request<u64, u64>> for Counter {
///     type Result = Result<u64, CallError>;
///     fn handle(&mut self, r: Request<u64, u64>, _: &mut Context<Self>) -> Self::Result {
///         self.0 += r.value;
///         Ok(self.0)
///     }
/// }
/// let h = serve::<u64, u64, _>(&router, me, None, Counter(0).start()).await?;
/// ```
pub async fn serve<T, R, A>(
    router: &Addr<Router>,
    me: ContextId,
    handle: Option<Handle>,
    actor: Addr<A>,
) -> Result<Handle>
where
    T: DeserializeOwned + std::marker::Send + 'static,
    R: Answer,
    A: Actor + Handler<Request<T, R>>,
    A::Context: actix::dev::ToEnvelope<A, Request<T, R>>,
{
    let reg = registration::<T, R>(
        router,
        me,
        handle,
        actor.recipient(),
        ServeOptions::default(),
    );
    router.send(reg).await.map_err(|_| Error::RouterGone)
}

/// Like [`serve`] on a fixed handle, registered before this returns (the
/// Register message is queued at once), so that a frame read after it
/// finds the handle. For contexts that set up their served actors before
/// their parent may call them (econtext-agent), and the built-in services.
pub fn serve_on<T, R, A>(router: &Addr<Router>, me: ContextId, handle: Handle, actor: Addr<A>)
where
    T: DeserializeOwned + std::marker::Send + 'static,
    R: Answer,
    A: Actor + Handler<Request<T, R>>,
    A::Context: actix::dev::ToEnvelope<A, Request<T, R>>,
{
    serve_with(
        router,
        me,
        handle,
        actor.recipient(),
        ServeOptions::default(),
    );
}

/// [`serve_on`] with options, for any recipient of the request type.
pub fn serve_with<T, R>(
    router: &Addr<Router>,
    me: ContextId,
    handle: Handle,
    target: Recipient<Request<T, R>>,
    opts: ServeOptions,
) where
    T: DeserializeOwned + std::marker::Send + 'static,
    R: Answer,
{
    router.do_send(registration::<T, R>(router, me, Some(handle), target, opts));
}

/// The Register message that puts `target`, behind its typed adapter, on
/// a persistent handle.
fn registration<T, R>(
    router: &Addr<Router>,
    me: ContextId,
    handle: Option<Handle>,
    target: Recipient<Request<T, R>>,
    opts: ServeOptions,
) -> Register
where
    T: DeserializeOwned + std::marker::Send + 'static,
    R: Answer,
{
    let adapter = Adapter::<T, R> {
        me,
        router: router.clone(),
        target,
        in_flight: Arc::new(AtomicUsize::new(0)),
        opts,
        refused: 0,
    };
    Register {
        handle,
        sink: Sink::Served(Adapted(Box::new(adapter))),
        persistent: true,
        waiting_on: None,
        accept: crate::handles::Accept::Any,
        bulk: false,
    }
}

/// A handle's typed adapter, as a Router's handle table holds it.
pub struct Adapted(Box<dyn Served>);

impl Adapted {
    pub(crate) fn deliver(&mut self, msg: Message) -> std::result::Result<(), DeadReason> {
        self.0.deliver(msg)
    }
}

/// A served handle as the Router's delivery sees it.
trait Served: std::marker::Send {
    /// Takes one message. `Err` only for a message the sender cannot be
    /// told about by a reply (it asked for none): the Router counts it.
    fn deliver(&mut self, msg: Message) -> std::result::Result<(), DeadReason>;
}

struct Adapter<T: std::marker::Send + 'static, R: std::marker::Send + 'static> {
    me: ContextId,
    router: Addr<Router>,
    target: Recipient<Request<T, R>>,
    /// Handed to the actor and not answered yet (decremented by the task
    /// that awaits the answer).
    in_flight: Arc<AtomicUsize>,
    opts: ServeOptions,
    /// Refused for want of room (no-reply ones included).
    refused: u64,
}

/// Requests one served handle holds in flight at most, by default.
pub const MAX_IN_FLIGHT: usize = 1024;

/// The CallError type of a request refused because its handle already
/// holds its maximum of requests in flight.
pub const OVERLOADED: &str = "econtext.Overloaded";

fn failure(type_name: &str, message: String) -> CallError {
    CallError {
        type_name: type_name.into(),
        message,
        traceback: String::new(),
    }
}

impl<T: std::marker::Send + 'static, R: std::marker::Send + 'static> Adapter<T, R> {
    /// Answers `msg` with an error, or refuses it to the Router when the
    /// sender asked for no reply.
    fn fail(&self, msg: &Message, e: CallError) -> std::result::Result<(), DeadReason> {
        if msg.reply_to == 0 {
            return Err(DeadReason::Refused(format!(
                "{}: {}",
                e.type_name, e.message
            )));
        }
        send_reply_encoded(&self.router, self.me, msg, payload::encode(&e));
        Ok(())
    }
}

impl<T, R> Served for Adapter<T, R>
where
    T: DeserializeOwned + std::marker::Send + 'static,
    R: Answer,
{
    fn deliver(&mut self, msg: Message) -> std::result::Result<(), DeadReason> {
        if msg.is_dead() {
            if let Some(r) = &self.opts.on_dead {
                r.do_send(HandleDead {
                    handle: msg.handle,
                    src: msg.src,
                });
            }
            return Ok(());
        }
        let held = self.in_flight.load(Ordering::Relaxed);
        if held >= self.opts.max_in_flight {
            self.refused += 1;
            let why = format!(
                "handle {} has {held} requests in flight (refused so far: {})",
                msg.handle, self.refused
            );
            return self.fail(&msg, failure(OVERLOADED, why));
        }
        let value = match msg.decode::<T>() {
            Ok(v) => v,
            Err(e) => return self.fail(&msg, failure("TypeError", e.to_string())),
        };
        // The task keeps the reply's address, not the request's bytes.
        let back = Message {
            data: Bytes::new(),
            bulk: false,
            ..msg
        };
        let sent = self.target.send(Request {
            src: back.src,
            reply_to: back.reply_to,
            value,
            _r: PhantomData,
        });
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        let (in_flight, router, me) = (self.in_flight.clone(), self.router.clone(), self.me);
        actix::spawn(async move {
            let res = sent.await;
            in_flight.fetch_sub(1, Ordering::Relaxed);
            let data = match res {
                Ok(Ok(r)) => r.encode(),
                Ok(Err(e)) => payload::encode(&e),
                // The handler panicked or its actor stopped while holding
                // this request: the caller hears about it.
                Err(e) => payload::encode(&failure("panic", format!("handler failed: {e}"))),
            };
            send_reply_encoded(&router, me, &back, data);
        });
        Ok(())
    }
}
