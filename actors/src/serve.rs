//! Users' own actors on handles: typed requests in, typed replies out, and
//! a handler that panics (or stops) becomes an error for its caller, never
//! a silently closed mailbox and a caller waiting forever.
//!
//! Requests in flight (handed to the actor, not yet answered) are bounded
//! per served handle by [`MAX_IN_FLIGHT`]: past it a request is answered
//! at once with a CallError of type [`OVERLOADED`], never queued without
//! bound and never dropped in silence.

use std::marker::PhantomData;

use actix::prelude::*;
use econtext_wire::{CallError, ContextId, Handle};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::error::{Error, Result};
use crate::message::Message;
use crate::router::{send_reply, Register, Router, Sink};

/// A request delivered to a user's actor: the decoded value, and who sent
/// it. The actor answers with `Ok(reply)` or a `CallError` of its own.
pub struct Request<T, R> {
    pub src: ContextId,
    pub value: T,
    _r: PhantomData<fn() -> R>,
}

impl<T: std::marker::Send + 'static, R: std::marker::Send + 'static> actix::Message
    for Request<T, R>
{
    type Result = std::result::Result<R, CallError>;
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
    R: Serialize + std::marker::Send + 'static,
    A: Actor + Handler<Request<T, R>>,
    A::Context: actix::dev::ToEnvelope<A, Request<T, R>>,
{
    router
        .send(registration::<T, R, A>(router, me, handle, actor))
        .await
        .map_err(|_| Error::RouterGone)
}

/// The Register message that puts `actor`, behind its typed adapter, on a
/// persistent handle (`serve` awaits it, `serve_on` queues it).
fn registration<T, R, A>(
    router: &Addr<Router>,
    me: ContextId,
    handle: Option<Handle>,
    actor: Addr<A>,
) -> Register
where
    T: DeserializeOwned + std::marker::Send + 'static,
    R: Serialize + std::marker::Send + 'static,
    A: Actor + Handler<Request<T, R>>,
    A::Context: actix::dev::ToEnvelope<A, Request<T, R>>,
{
    let adapter = Adapter::<T, R> {
        me,
        router: router.clone(),
        target: actor.recipient(),
        in_flight: 0,
        max_in_flight: MAX_IN_FLIGHT,
        refused: 0,
    }
    .start();
    Register {
        handle,
        sink: Sink::Recipient(adapter.recipient()),
        persistent: true,
        waiting_on: None,
        accept: crate::handles::Accept::Any,
    }
}

/// Like [`serve`] on a fixed handle, registered before this returns (the
/// Register message is queued at once), so that a frame read after it
/// finds the handle. For contexts that set up their served actors before
/// their parent may call them (econtext-agent).
pub fn serve_on<T, R, A>(router: &Addr<Router>, me: ContextId, handle: Handle, actor: Addr<A>)
where
    T: DeserializeOwned + std::marker::Send + 'static,
    R: Serialize + std::marker::Send + 'static,
    A: Actor + Handler<Request<T, R>>,
    A::Context: actix::dev::ToEnvelope<A, Request<T, R>>,
{
    router.do_send(registration::<T, R, A>(router, me, Some(handle), actor));
}

struct Adapter<T: std::marker::Send + 'static, R: std::marker::Send + 'static> {
    me: ContextId,
    router: Addr<Router>,
    target: Recipient<Request<T, R>>,
    /// Handed to the actor and not answered yet.
    in_flight: usize,
    max_in_flight: usize,
    /// Refused for want of room (no-reply ones included).
    refused: u64,
}

impl<T: std::marker::Send + 'static, R: std::marker::Send + 'static> Actor for Adapter<T, R> {
    type Context = actix::Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        // A burst from a whole fleet fits; past it senders get Dead
        // (Overloaded), never silence.
        ctx.set_mailbox_capacity(crate::router::SERVICE_MAILBOX);
    }
}

/// Requests one served handle holds in flight at most.
pub const MAX_IN_FLIGHT: usize = 1024;

/// The CallError type of a request refused because its handle already
/// holds [`MAX_IN_FLIGHT`] requests.
pub const OVERLOADED: &str = "econtext.Overloaded";

fn failure(type_name: &str, message: String) -> CallError {
    CallError {
        type_name: type_name.into(),
        message,
        traceback: String::new(),
    }
}

impl<T, R> Handler<Message> for Adapter<T, R>
where
    T: DeserializeOwned + std::marker::Send + 'static,
    R: Serialize + std::marker::Send + 'static,
{
    type Result = ();

    fn handle(&mut self, msg: Message, ctx: &mut Self::Context) {
        if msg.is_dead() {
            return;
        }
        if self.in_flight >= self.max_in_flight {
            self.refused += 1;
            let why = format!(
                "handle {} has {} requests in flight (refused so far: {})",
                msg.handle, self.in_flight, self.refused
            );
            return send_reply::<R>(&self.router, self.me, &msg, Err(failure(OVERLOADED, why)));
        }
        let value = match msg.decode::<T>() {
            Ok(v) => v,
            Err(e) => {
                return send_reply::<R>(
                    &self.router,
                    self.me,
                    &msg,
                    Err(failure("TypeError", e.to_string())),
                )
            }
        };
        let req = Request {
            src: msg.src,
            value,
            _r: PhantomData,
        };
        let sent = self.target.send(req);
        self.in_flight += 1;
        ctx.spawn(sent.into_actor(self).map(move |res, act, _| {
            act.in_flight -= 1;
            let answer = match res {
                Ok(r) => r,
                // The handler panicked or its actor stopped while holding
                // this request: the caller hears about it.
                Err(e) => Err(failure("panic", format!("handler failed: {e}"))),
            };
            send_reply(&act.router, act.me, &msg, answer);
        }));
    }
}
