//! Channel and Sender: the user-facing ends of handles.

use std::pin::Pin;
use std::task::{Context as TaskContext, Poll};

use actix::Addr;
use econtext_wire::{payload, ContextId, Frame, Handle, Header, SenderRef};
use futures::Stream as FuturesStream;
use serde::Serialize;
use tokio::sync::mpsc;

use crate::context::dispatch;
use crate::error::{Error, Result};
use crate::event::DeadReason;
use crate::handles::Accept;
use crate::message::Message;
use crate::router::{Register, Router, Sink, Unregister, CHANNEL_CAPACITY};

/// A registered handle whose messages arrive as a `futures` Stream.
///
/// The stream ends when Dead arrives (the far end closed it, or the context
/// it watches died); [`Channel::dead_reason`] then says why. Dropping the
/// Channel frees the handle.
pub struct Channel {
    handle: Handle,
    context: ContextId,
    rx: mpsc::Receiver<Message>,
    router: Addr<Router>,
    dead: Option<DeadReason>,
}

impl Channel {
    /// Registers a fresh handle in the context that `router` serves.
    /// With `watch`, the channel ends with Dead when that context dies.
    pub async fn open(
        router: &Addr<Router>,
        context: ContextId,
        watch: Option<ContextId>,
    ) -> Result<Channel> {
        let accept = watch.map_or(Accept::Any, Accept::From);
        Channel::open_accepting(router, context, watch, accept).await
    }

    /// [`Channel::open`] taking messages only from the sources `accept`
    /// names (and from this context itself); others are refused and
    /// counted. `open` accepts the watched peer only, or anyone without one.
    pub async fn open_accepting(
        router: &Addr<Router>,
        context: ContextId,
        watch: Option<ContextId>,
        accept: Accept,
    ) -> Result<Channel> {
        Channel::register(router, context, watch, accept, false).await
    }

    /// [`Channel::open`] for a file receiver's data: it also takes bulk
    /// frames (`Message::bulk`), whose bytes no frame MAC covered, so its
    /// reader must authenticate them (econtext-files checks each chunk
    /// against the file's running SHA-256). No other handle takes them.
    pub async fn open_bulk(
        router: &Addr<Router>,
        context: ContextId,
        watch: ContextId,
    ) -> Result<Channel> {
        Channel::register(router, context, Some(watch), Accept::From(watch), true).await
    }

    async fn register(
        router: &Addr<Router>,
        context: ContextId,
        watch: Option<ContextId>,
        accept: Accept,
        bulk: bool,
    ) -> Result<Channel> {
        let (tx, rx) = mpsc::channel(CHANNEL_CAPACITY);
        let handle = router
            .send(Register {
                handle: None,
                sink: Sink::Channel(tx),
                persistent: true,
                waiting_on: watch,
                accept,
                bulk,
            })
            .await
            .map_err(|_| Error::RouterGone)?;
        Ok(Channel {
            handle,
            context,
            rx,
            router: router.clone(),
            dead: None,
        })
    }

    pub fn handle(&self) -> Handle {
        self.handle
    }

    /// A Sender that anyone in the tree can use to reach this channel.
    pub fn sender(&self) -> Sender {
        Sender::new(self.router.clone(), self.context, self.context, self.handle)
    }

    /// Why the channel ended, once it has.
    pub fn dead_reason(&self) -> Option<&DeadReason> {
        self.dead.as_ref()
    }
}

impl FuturesStream for Channel {
    type Item = Message;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Option<Message>> {
        if self.dead.is_some() {
            return Poll::Ready(None);
        }
        match self.rx.poll_recv(cx) {
            Poll::Ready(Some(m)) if m.is_dead() => {
                let reason = m
                    .decode::<econtext_wire::Dead>()
                    .map(DeadReason::from)
                    .unwrap_or_else(|e| DeadReason::Protocol(e.to_string()));
                self.dead = Some(reason);
                Poll::Ready(None)
            }
            Poll::Ready(None) => {
                self.dead = Some(DeadReason::RouterStopped);
                Poll::Ready(None)
            }
            other => other,
        }
    }
}

impl Drop for Channel {
    fn drop(&mut self) {
        self.router.do_send(Unregister(self.handle));
    }
}

/// A (context, handle) pair that can be sent to from anywhere in the tree,
/// and passed inside messages (it encodes as the Sender ext type).
#[derive(Clone)]
pub struct Sender {
    router: Addr<Router>,
    me: ContextId,
    pub target: SenderRef,
}

impl Sender {
    /// A sender from the context `router` serves (`me`) to `(context, handle)`.
    pub fn new(router: Addr<Router>, me: ContextId, context: ContextId, handle: Handle) -> Self {
        Sender {
            router,
            me,
            target: SenderRef { context, handle },
        }
    }

    /// Sends one value. Waits while the route's write queue is full.
    pub async fn send<T: Serialize + ?Sized>(&self, value: &T) -> Result<()> {
        let data = payload::encode(value)?;
        self.send_raw(data).await
    }

    /// Sends already-encoded data.
    pub async fn send_raw(&self, data: bytes::Bytes) -> Result<()> {
        let frame = Frame::new(
            Header::new(self.target.context, self.me, self.target.handle, 0),
            data,
        );
        dispatch(&self.router, frame, false).await
    }

    /// Sends a bulk frame: `data` is `covered_len:u32be covered bytes`
    /// (`econtext_wire::bulk`); the frame MAC covers only up to the end of
    /// `covered`. The target must be a handle opened with
    /// [`Channel::open_bulk`] (or a Python file receiver's): anything else
    /// refuses it.
    pub async fn send_bulk(&self, data: bytes::Bytes) -> Result<()> {
        let frame = Frame::bulk(
            Header::new(self.target.context, self.me, self.target.handle, 0),
            data,
        );
        dispatch(&self.router, frame, false).await
    }

    /// Sends Dead, closing the receiving Channel.
    pub async fn close(&self) -> Result<()> {
        self.send(&econtext_wire::Dead::from(&DeadReason::ClosedBySender))
            .await
    }
}

impl Serialize for Sender {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        self.target.serialize(s)
    }
}

impl std::fmt::Debug for Sender {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Sender({}, {})", self.target.context, self.target.handle)
    }
}
