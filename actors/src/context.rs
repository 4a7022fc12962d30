//! `Context`: what a user holds to talk to one context of the tree.

use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use actix::Addr;
use bytes::Bytes;
use econtext_wire::{handles, payload, ContextId, Frame, Handle, Header, Reply};
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::sync::oneshot;

use crate::bufpool;
use crate::error::{Error, Result};
use crate::event::DeadReason;
use crate::link::LinkRoom;
use crate::message::Message;
use crate::router::{
    Abandon, Call, DeclareDead, Dispatch, Request, Router, ShutdownGrace, WatchContext,
};

/// A handle on one context of the tree, local or remote. Cheap to clone.
///
/// Calls go through the Router of the context that holds this handle (the
/// master, usually), which routes them however many hops away the target
/// is, and delivers Dead to the caller if the target dies first.
#[derive(Clone)]
pub struct Context {
    id: ContextId,
    name: Arc<str>,
    me: ContextId,
    // Behind an Arc: cloning an actix Addr allocates twice (its sender
    // task), and every call clones its Context twice (the builder and
    // the reply guard).
    router: Arc<RouterRef>,
}

/// The largest request data that may skip the Router's turn.
const FAST_MAX: usize = 1 << 20;

/// The Router a Context sends through, and the room of the link its
/// requests leave by, once the Router has said which (shared by the
/// Context's clones).
struct RouterRef {
    addr: Addr<Router>,
    /// Learnt from the Router's answer to this handle's first request.
    /// A request that finds room on it there and then takes the fast
    /// path; one that does not (the link at its mark, or closed) waits
    /// for the Router's turn as every request did before.
    room: OnceLock<LinkRoom>,
}

impl std::fmt::Debug for Context {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Context({}, {:?})", self.id, self.name)
    }
}

impl Context {
    /// A handle on context `id`, used from the context `router` serves (`me`).
    pub fn new(id: ContextId, name: &str, me: ContextId, router: Addr<Router>) -> Self {
        Context {
            id,
            name: name.into(),
            me,
            router: Arc::new(RouterRef {
                addr: router,
                room: OnceLock::new(),
            }),
        }
    }

    pub fn id(&self) -> ContextId {
        self.id
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn router(&self) -> &Addr<Router> {
        &self.router.addr
    }

    /// The context this handle is used from (whose router sends for it).
    pub fn me(&self) -> ContextId {
        self.me
    }

    /// Calls `module.function(*args)` and decodes the result as `T`.
    /// `args` is a tuple: `()` for none, `(x,)` for one.
    pub async fn call<T: DeserializeOwned>(
        &self,
        module: &str,
        function: &str,
        args: impl Serialize,
    ) -> Result<T> {
        self.call_with(module, function)
            .args(args)?
            .returning()
            .await
    }

    /// Starts building a call with a class, kwargs, a deadline or no reply.
    pub fn call_with<'a>(&self, module: &'a str, function: &'a str) -> CallBuilder<'a> {
        CallBuilder {
            ctx: self.clone(),
            module,
            function,
            class: None,
            args: Bytes::from_static(&[0x90]),
            roomy: None,
            kwargs: Vec::new(),
            timeout: None,
        }
    }

    /// Sends `value` to `handle` in this context, without waiting for a reply.
    /// Waits while the route's write queue is full.
    pub async fn send<T: Serialize + ?Sized>(&self, handle: Handle, value: &T) -> Result<()> {
        let frame = Frame::new(
            Header::new(self.id, self.me, handle, 0),
            payload::encode(value)?,
        );
        dispatch(&self.router.addr, frame, false).await
    }

    /// Sends `value` to `handle` and waits for the one reply.
    pub async fn request<T: DeserializeOwned>(
        &self,
        handle: Handle,
        value: &impl Serialize,
        timeout: Option<Duration>,
    ) -> Result<T> {
        let data = payload::encode(value)?;
        self.request_encoded(handle, data, timeout).await
    }

    /// Sends already-encoded `data` to `handle` and waits for the one reply.
    /// `timeout` covers the wait for link room as well as for the reply.
    pub async fn request_encoded<T: DeserializeOwned>(
        &self,
        handle: Handle,
        data: Bytes,
        timeout: Option<Duration>,
    ) -> Result<T> {
        let deadline = timeout.map(|t| (Instant::now() + t, t));
        let inflight = self.start_request(handle, data, deadline).await?;
        self.finish(inflight, deadline).await
    }

    async fn start_request(
        &self,
        handle: Handle,
        data: Bytes,
        deadline: Option<(Instant, Duration)>,
    ) -> Result<InFlight> {
        let data = match self.start_fast(handle, data) {
            Ok(started) => return started,
            Err(data) => data,
        };
        let started = self
            .router
            .addr
            .send(Request {
                dst: self.id,
                handle,
                data,
                want_room: self.router.room.get().is_none(),
            })
            .await
            .map_err(|_| Error::RouterGone)??;
        if let Some(room) = started.room {
            let _ = self.router.room.set(room);
        }
        let inflight = InFlight {
            reply: started.reply,
            guard: ReplyGuard {
                router: self.router.clone(),
                handle: started.reply_to,
                armed: true,
            },
        };
        if let Some(queued) = started.queued {
            match deadline {
                None => queued.await?,
                Some((at, after)) => match tokio::time::timeout_at(at.into(), queued).await {
                    Ok(r) => r?,
                    Err(_) => {
                        return Err(Error::Timeout {
                            context: self.id,
                            after,
                        })
                    }
                },
            }
        }
        Ok(inflight)
    }

    /// A request's fast path, which skips the Router's turn (an actix
    /// `send`, its envelope and response channel, and two task switches)
    /// when the frame's room on its link can be taken here and now, on
    /// the terms the Router's `try_send` would queue it. The reply handle
    /// is drawn here (unpredictable, like the Router's), and the request
    /// goes with `try_send`: once this returns, the frame is in the
    /// Router's mailbox with its room taken, ahead of anything this caller
    /// sends next, and it goes out whatever becomes of the reply. Hands
    /// the data back when the request must wait for the Router's turn:
    /// no room known or left, or the Router's mailbox full.
    fn start_fast(
        &self,
        handle: Handle,
        data: Bytes,
    ) -> std::result::Result<Result<InFlight>, Bytes> {
        // Large frames gain nothing from skipping the Router's turn, and
        // that turn refuses a frame over the message size, typed.
        if data.len() > FAST_MAX {
            return Err(data);
        }
        let Some(room) = self.router.room.get() else {
            return Err(data);
        };
        let Some(room) = room.reserve(data.len() + econtext_wire::HEADER_LEN) else {
            return Err(data);
        };
        let reply_to = rand::Rng::gen_range(
            &mut rand::thread_rng(),
            handles::FIRST_DYNAMIC..=Handle::MAX,
        );
        let (tx, rx) = oneshot::channel();
        let call = Call {
            dst: self.id,
            handle,
            data,
            reply_to,
            reply: tx,
            room,
        };
        match self.router.addr.try_send(call) {
            Ok(()) => Ok(Ok(InFlight {
                reply: rx,
                guard: ReplyGuard {
                    router: self.router.clone(),
                    handle: reply_to,
                    armed: true,
                },
            })),
            Err(actix::prelude::SendError::Full(call)) => Err(call.data),
            Err(actix::prelude::SendError::Closed(_)) => Ok(Err(Error::RouterGone)),
        }
    }

    async fn finish<T: DeserializeOwned>(
        &self,
        inflight: InFlight,
        deadline: Option<(Instant, Duration)>,
    ) -> Result<T> {
        let msg = self.wait_reply(inflight, deadline).await?;
        match msg.reply::<T>()? {
            Reply::Value(v) => Ok(v),
            Reply::Error(e) => Err(Error::Remote(e)),
            Reply::Dead(d) => Err(Error::dead(self.id, d)),
        }
    }

    /// [`Context::finish`] keeping a value as its checked bytes, decoded
    /// into nothing.
    async fn finish_encoded(
        &self,
        inflight: InFlight,
        deadline: Option<(Instant, Duration)>,
    ) -> Result<Bytes> {
        let msg = self.wait_reply(inflight, deadline).await?;
        match msg.reply::<serde::de::IgnoredAny>()? {
            Reply::Value(_) => Ok(msg.data),
            Reply::Error(e) => Err(Error::Remote(e)),
            Reply::Dead(d) => Err(Error::dead(self.id, d)),
        }
    }

    async fn wait_reply(
        &self,
        mut inflight: InFlight,
        deadline: Option<(Instant, Duration)>,
    ) -> Result<Message> {
        // Unconstrained: a reply that has arrived is taken at once. Under
        // tokio's cooperative budget, a join of thousands of calls whose
        // replies are all in had each one refuse (Pending plus a deferred
        // self-wake) once the budget ran out: the joins re-polled every
        // call again and again, half the master's CPU at 20,000 calls in
        // flight. A oneshot resolves once, so it cannot starve anyone.
        let reply = tokio::task::unconstrained(&mut inflight.reply);
        let msg = match deadline {
            None => reply.await.map_err(|_| Error::RouterGone)?,
            Some((at, after)) => match tokio::time::timeout_at(at.into(), reply).await {
                Ok(m) => m.map_err(|_| Error::RouterGone)?,
                Err(_) => {
                    return Err(Error::Timeout {
                        context: self.id,
                        after,
                    })
                }
            },
        };
        inflight.guard.armed = false;
        Ok(msg)
    }

    /// Shuts the context down gracefully (SHUTDOWN) and returns once it
    /// is dead, within the grace period of the router this handle sends
    /// through (`MasterOptions::grace`). The frame goes on the control
    /// lane, so it never waits for link room, even when the context has
    /// stopped reading. A context still there when the grace period ends
    /// is cut off (`DeadReason::Killed`): its link closes, its waiters hear
    /// Dead, and the watch that owns its process kills it.
    pub async fn shutdown(&self) -> Result<()> {
        let died = self
            .router
            .addr
            .send(WatchContext(self.id))
            .await
            .map_err(|_| Error::RouterGone)?;
        let grace = self
            .router
            .addr
            .send(ShutdownGrace)
            .await
            .map_err(|_| Error::RouterGone)?;
        let deadline = tokio::time::Instant::now() + grace;
        dispatch(
            &self.router.addr,
            crate::router::shutdown_frame(self.id, self.me),
            true,
        )
        .await?;
        if tokio::time::timeout_at(deadline, died).await.is_err() {
            self.router.addr.do_send(DeclareDead {
                id: self.id,
                reason: DeadReason::Killed,
            });
        }
        Ok(())
    }

    /// Resolves with the reason once this context is dead.
    pub async fn dead(&self) -> DeadReason {
        match self.router.addr.send(WatchContext(self.id)).await {
            Ok(rx) => rx.await.unwrap_or(DeadReason::RouterStopped),
            Err(_) => DeadReason::RouterStopped,
        }
    }
}

/// A call under construction; see [`Context::call_with`].
pub struct CallBuilder<'a> {
    ctx: Context,
    // Borrowed until the call is encoded: a copy of them was an
    // allocation per call.
    module: &'a str,
    function: &'a str,
    class: Option<String>,
    args: Bytes,
    /// The arguments encoded after room for the call's other fields
    /// (`.1` bytes of it), so the call is built around them in place: a
    /// 64 MiB argument is not copied a second time. Replaces `args`.
    roomy: Option<(Vec<u8>, usize)>,
    kwargs: Vec<(String, Bytes)>,
    timeout: Option<Duration>,
}

/// Room for the array header, a nil class and the two strings' headers
/// (at most 5 bytes each), besides the strings themselves.
const CALL_PREFIX_ROOM: usize = 1 + 1 + 5 + 5;

impl<'a> CallBuilder<'a> {
    /// Calls `module.Class.function` instead of `module.function`.
    pub fn class(mut self, class: &str) -> Self {
        self.class = Some(class.to_string());
        self
    }

    /// Positional arguments: a tuple, `()` for none, `(x,)` for one; or a
    /// Vec or array of one type.
    pub fn args(mut self, args: impl Serialize) -> Result<Self> {
        // One more byte of room for wrapping a single value.
        let room = CALL_PREFIX_ROOM + self.module.len() + self.function.len() + 1;
        let mut buf = Vec::with_capacity(room + 32);
        buf.resize(room, 0);
        // A large argument continues in a kept buffer (bufpool.rs).
        payload::encode_to(&args, &mut bufpool::Growing(&mut buf))?;
        let mut at = room;
        match buf[room] {
            0xc0 => {
                buf.truncate(room);
                buf.push(0x90);
            }
            0x90..=0x9f | 0xdc | 0xdd => {}
            _ => {
                // A single non-sequence value: wrap it as the only argument.
                at -= 1;
                buf[at] = 0x91;
            }
        }
        self.roomy = Some((buf, at));
        Ok(self)
    }

    /// Positional arguments already encoded as a MessagePack array.
    pub fn raw_args(mut self, array: Bytes) -> Self {
        self.args = array;
        self.roomy = None;
        self
    }

    /// One keyword argument.
    pub fn kwarg(mut self, name: &str, value: impl Serialize) -> Result<Self> {
        self.kwargs
            .push((name.to_string(), payload::encode(&value)?));
        Ok(self)
    }

    /// Fails with [`Error::Timeout`] when no reply arrives in time.
    pub fn timeout(mut self, after: Duration) -> Self {
        self.timeout = Some(after);
        self
    }

    fn module(&self) -> &'a str {
        self.module
    }

    fn function(&self) -> &'a str {
        self.function
    }

    /// The length [`CallBuilder::prefix`] writes.
    fn prefix_len(&self) -> usize {
        prefix_len(self.module(), self.class.as_deref(), self.function())
    }

    /// `[module, class, function]` with its array header (of five).
    fn prefix<W: rmp::encode::RmpWrite>(&self, w: &mut W)
    where
        W::Error: std::fmt::Debug,
    {
        rmp::encode::write_array_len(w, 5).expect("vec write");
        rmp::encode::write_str(w, self.module()).expect("vec write");
        match &self.class {
            Some(c) => rmp::encode::write_str(w, c).expect("vec write"),
            None => rmp::encode::write_nil(w).expect("vec write"),
        }
        rmp::encode::write_str(w, self.function()).expect("vec write");
    }

    fn kwargs(&self, w: &mut Vec<u8>) {
        rmp::encode::write_map_len(w, self.kwargs.len() as u32).expect("vec write");
        for (k, v) in &self.kwargs {
            rmp::encode::write_str(w, k).expect("vec write");
            w.extend_from_slice(v);
        }
    }

    fn encode(&mut self) -> Bytes {
        if let Some((mut buf, at)) = self.roomy.take() {
            let len = self.prefix_len();
            if len <= at {
                // In place: the fields are written just before the
                // arguments, with no buffer of their own (one allocation
                // fewer per call).
                let start = at - len;
                let mut w = &mut buf[start..at];
                self.prefix(&mut w);
                debug_assert!(w.is_empty(), "prefix_len matches prefix");
                self.kwargs(&mut buf);
                return bufpool::frozen(buf).slice(start..);
            }
            // A class longer than the room left for it: copy after all.
            self.args = bufpool::frozen(buf).slice(at..);
        }
        let kwargs: usize = self.kwargs.iter().map(|(k, v)| 5 + k.len() + v.len()).sum();
        let mut head = Vec::with_capacity(self.prefix_len() + self.args.len() + 5 + kwargs);
        self.prefix(&mut head);
        head.extend_from_slice(&self.args);
        self.kwargs(&mut head);
        Bytes::from(head)
    }

    /// Sends the call and waits for its result.
    pub async fn returning<T: DeserializeOwned>(self) -> Result<T> {
        self.start().await?.result().await
    }

    /// Sends the call and returns its result as the one MessagePack value
    /// it came as (structure and value count checked like every decode):
    /// for printing a big result without building a tree of it.
    pub async fn returning_encoded(self) -> Result<Bytes> {
        let p = self.start::<serde::de::IgnoredAny>().await?;
        p.ctx.finish_encoded(p.inflight, p.deadline).await
    }

    /// Sends the call and returns its result, which must be bytes (or a
    /// str), as a slice of the reply as it arrived: no copy, however
    /// large (a `serde_bytes::ByteBuf` result is a copy of it).
    pub async fn returning_bytes(self) -> Result<Bytes> {
        let value = self.returning_encoded().await?;
        Ok(payload::bin_value(&value)?)
    }

    /// Sends the call and returns at once; await the result later (many
    /// calls can be in flight at once). The timeout counts from here and
    /// covers the wait for link room. Once this has returned the call is
    /// made: it goes out before anything sent after it through the same
    /// router (a SHUTDOWN, say), and dropping the PendingCall only
    /// discards its result and frees its reply handle.
    pub async fn start<T: DeserializeOwned>(mut self) -> Result<PendingCall<T>> {
        let deadline = self.timeout.map(|t| (Instant::now() + t, t));
        let data = self.encode();
        let inflight = self
            .ctx
            .start_request(handles::CALL_FUNCTION, data, deadline)
            .await?;
        Ok(PendingCall {
            ctx: self.ctx,
            inflight,
            deadline,
            _t: std::marker::PhantomData,
        })
    }

    /// Sends the call with no reply handle: nothing comes back, not even
    /// an exception (it is logged in the child).
    pub async fn no_reply(mut self) -> Result<()> {
        let frame = Frame::new(
            Header::new(self.ctx.id, self.ctx.me, handles::CALL_FUNCTION, 0),
            self.encode(),
        );
        dispatch(&self.ctx.router.addr, frame, false).await
    }
}

/// The length of a call's `[module, class, function]` prefix with its
/// array header, as `rmp` writes it (the shortest string headers).
fn prefix_len(module: &str, class: Option<&str>, function: &str) -> usize {
    fn str_len(s: &str) -> usize {
        let header = match s.len() {
            0..=31 => 1,
            32..=255 => 2,
            256..=65535 => 3,
            _ => 5,
        };
        header + s.len()
    }
    1 + str_len(module) + class.map_or(1, str_len) + str_len(function)
}

/// A call in flight; see [`CallBuilder::start`].
pub struct PendingCall<T> {
    ctx: Context,
    inflight: InFlight,
    deadline: Option<(Instant, Duration)>,
    _t: std::marker::PhantomData<fn() -> T>,
}

impl<T: DeserializeOwned> PendingCall<T> {
    pub async fn result(self) -> Result<T> {
        self.ctx.finish(self.inflight, self.deadline).await
    }
}

/// A request's reply handle and reply; the handle is freed unless the
/// reply arrived (a timed-out or dropped call leaves nothing behind).
/// `reply` is declared first so that it is dropped first: the Router
/// frees the handle only while its reply channel is closed ([`Abandon`]),
/// so a guard never frees a handle another call has drawn since.
struct InFlight {
    reply: oneshot::Receiver<Message>,
    guard: ReplyGuard,
}

struct ReplyGuard {
    router: Arc<RouterRef>,
    handle: Handle,
    armed: bool,
}

impl Drop for ReplyGuard {
    fn drop(&mut self) {
        if self.armed {
            self.router.addr.do_send(Abandon(self.handle));
        }
    }
}

/// Hands a locally originated frame to the router and waits (only) for
/// room on the one link it goes to.
pub(crate) async fn dispatch(router: &Addr<Router>, frame: Frame, control: bool) -> Result<()> {
    let queued = router
        .send(Dispatch { frame, control })
        .await
        .map_err(|_| Error::RouterGone)?;
    match queued {
        Some(q) => q.await,
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::prefix_len;

    #[test]
    fn prefix_len_matches_what_rmp_writes() {
        for n in [0, 1, 31, 32, 255, 256, 65535, 65536] {
            let long = "m".repeat(n);
            for class in [None, Some("C"), Some(long.as_str())] {
                let mut w = Vec::new();
                rmp::encode::write_array_len(&mut w, 5).unwrap();
                rmp::encode::write_str(&mut w, &long).unwrap();
                match class {
                    Some(c) => rmp::encode::write_str(&mut w, c).unwrap(),
                    None => rmp::encode::write_nil(&mut w).unwrap(),
                }
                rmp::encode::write_str(&mut w, "f").unwrap();
                assert_eq!(
                    prefix_len(&long, class, "f"),
                    w.len(),
                    "n={n} class={class:?}"
                );
            }
        }
    }
}
