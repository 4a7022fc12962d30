//! The one way a child joins the tree. The master (direct, through an
//! intermediate, in-process Rust contexts), a Rust intermediate's Spawner
//! and [`crate::testing::SimTree`] all go through it:
//!
//! 1. [`Joining::begin`]: an ID from the master's [`crate::core::RouterCore`]
//!    allocator (never 0, never a live ID), the ancestors from the master's
//!    core (the one record of the tree's parentage: nobody keeps a copy),
//!    and the routes announced to every ancestor that did not create the
//!    context, before anything runs (the seed's ADD_ROUTE rule);
//! 2. [`attach_stream`], [`attach_process`] or [`start_in_process`]: the
//!    parent's end of the link as a [`Stream`] on the parent's router, plus
//!    the [`ProcessWatch`] that owns a child process;
//! 3. [`Joining::started`] (a `Started` event), or the `Joining` dropped
//!    unfinished (a failed or cancelled connect): the context is declared
//!    dead (`ConnectFailed`), so its ID returns after the quarantine and its
//!    routes go.

use std::time::Duration;

use actix::prelude::*;
use bytes::BytesMut;
use econtext_wire::{handles, ContextId};
use slog::Logger;
use tokio::io::{AsyncRead, AsyncWrite};

use crate::announce::{announce_route, AddRouteRecord};
use crate::dispatch::Functions;
use crate::event::DeadReason;
use crate::ids::IdsExhausted;
use crate::router::{AllocateId, Ancestors, ContextStarted, DeclareDead, Router};
use crate::rust_context::{start_rust_context, RustContextConfig};
use crate::spin::LinkSpin;
use crate::stream::{Stream, StreamConfig};
use crate::supervision::ProcessExited;
use crate::supervisor::{Carrier, ProcessWatch};

/// Why a child could not begin to join.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum JoinError {
    #[error(transparent)]
    IdsExhausted(#[from] IdsExhausted),
    #[error("the master's router has stopped")]
    RouterGone,
    #[error("context {0} is not in the tree")]
    UnknownParent(ContextId),
}

/// A context on its way into the tree: its ID is allocated and its routes
/// announced. Finish with [`Joining::started`]; dropping it declares the
/// context dead.
pub struct Joining {
    pub id: ContextId,
    /// Its parent first, ending with the master.
    pub ancestors: Vec<ContextId>,
    /// The ADD_ROUTEs sent for it: `(to, target, via)`.
    pub routes: Vec<AddRouteRecord>,
    master: Addr<Router>,
    done: bool,
}

impl Joining {
    /// Allocates an ID under `parent` and announces its routes.
    pub async fn begin(master: &Addr<Router>, parent: ContextId) -> Result<Joining, JoinError> {
        let mut ancestors = vec![parent];
        if parent != handles::MASTER_ID {
            let above = ancestors_of(master, parent).await?;
            if above.is_empty() {
                return Err(JoinError::UnknownParent(parent));
            }
            ancestors.extend(above);
        }
        let id = master
            .send(AllocateId)
            .await
            .map_err(|_| JoinError::RouterGone)??;
        let mut joining = Joining {
            id,
            ancestors,
            routes: Vec::new(),
            master: master.clone(),
            done: false,
        };
        joining.routes = announce_route(master, id, &joining.ancestors).await;
        Ok(joining)
    }

    pub fn parent(&self) -> ContextId {
        self.ancestors[0]
    }

    /// The context is up: subscribers hear `Started`.
    pub fn started(mut self, name: &str) {
        self.done = true;
        self.master.do_send(ContextStarted {
            id: self.id,
            name: name.to_string(),
            parent: self.parent(),
        });
    }
}

impl Drop for Joining {
    fn drop(&mut self) {
        if !self.done {
            // Its ID goes back (after the quarantine), its routes away.
            self.master.do_send(DeclareDead {
                id: self.id,
                reason: DeadReason::ConnectFailed,
            });
        }
    }
}

/// The ancestors of `id` as the master's core knows them, nearest first,
/// ending with the master; empty for a context it does not know.
pub async fn ancestors_of(
    master: &Addr<Router>,
    id: ContextId,
) -> Result<Vec<ContextId>, JoinError> {
    master
        .send(Ancestors(id))
        .await
        .map_err(|_| JoinError::RouterGone)
}

/// The parent's end of a child's link.
pub struct ChildLink<'a> {
    pub id: ContextId,
    pub key: &'a [u8],
    pub max_message_size: usize,
    /// Bytes read past the handshake.
    pub initial: BytesMut,
    pub log: Logger,
    /// Spinning before the parent's reader sleeps (`crate::spin`): for a
    /// child in another process; None when it runs on this thread.
    pub spin: Option<LinkSpin>,
}

/// Starts the parent's end of `link` on `parent_router`.
pub fn attach_stream<R, W>(
    parent_router: &Addr<Router>,
    link: ChildLink<'_>,
    reader: R,
    writer: W,
) -> Addr<Stream>
where
    R: AsyncRead + Unpin + 'static,
    W: AsyncWrite + Unpin + 'static,
{
    let mut sc = StreamConfig::new(link.id, false, link.key, link.log);
    sc.max_message_size = link.max_message_size;
    sc.initial = link.initial;
    sc.spin = link.spin;
    Stream::start(sc, reader, writer, parent_router.clone())
}

/// A child process: its link, and the watch that owns the process (its
/// exit makes the context dead; the context's death gives it `grace`).
pub struct ChildProcess<R, W> {
    pub reader: R,
    pub writer: W,
    pub carrier: Box<dyn Carrier>,
    pub grace: Duration,
    /// Where the exit status goes (the master's supervision hub).
    pub on_exit: Option<Recipient<ProcessExited>>,
}

/// [`attach_stream`] plus the [`ProcessWatch`] for a child process.
pub fn attach_process<R, W>(
    parent_router: &Addr<Router>,
    link: ChildLink<'_>,
    child: ChildProcess<R, W>,
) -> Addr<Stream>
where
    R: AsyncRead + Unpin + 'static,
    W: AsyncWrite + Unpin + 'static,
{
    let (id, log) = (link.id, link.log.clone());
    let stream = attach_stream(parent_router, link, child.reader, child.writer);
    ProcessWatch::start(
        id,
        parent_router.clone(),
        child.carrier,
        child.grace,
        child.on_exit,
        log,
    );
    stream
}

/// A Rust context running in this process.
pub struct InProcess {
    pub router: Addr<Router>,
    /// The parent's end of its link: closing it ends the context.
    pub uplink: Addr<Stream>,
}

/// Starts a Rust context (`config`) under `parent_router`, joined by an
/// in-memory pipe of `pipe_capacity` bytes with real framing and HMAC.
/// Register further services on the returned router before the next
/// await: no frame is read before then.
pub fn start_in_process(
    parent_router: &Addr<Router>,
    config: RustContextConfig,
    functions: Functions,
    pipe_capacity: usize,
) -> InProcess {
    let (parent_end, child_end) = tokio::io::duplex(pipe_capacity);
    let (pr, pw) = tokio::io::split(parent_end);
    let (cr, cw) = tokio::io::split(child_end);
    let link = ChildLink {
        id: config.id,
        key: &config.key,
        max_message_size: config.max_message_size,
        initial: BytesMut::new(),
        log: config.log.clone(),
        spin: None,
    };
    let uplink = attach_stream(parent_router, link, pr, pw);
    let router = start_rust_context(config, functions, cr, cw, BytesMut::new());
    InProcess { router, uplink }
}
