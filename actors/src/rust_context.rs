//! Rust contexts: a child context that is a Rust actor system, with the
//! same Router and Stream as the master and a [`Dispatcher`] on
//! CALL_FUNCTION.

use actix::prelude::*;
use bytes::BytesMut;
use econtext_wire::{ContextId, DEFAULT_MAX_MESSAGE_SIZE};
use slog::Logger;
use tokio::io::{AsyncRead, AsyncWrite};

use crate::dispatch::{Dispatcher, Functions};
use crate::router::{Router, RouterConfig, Trace};
use crate::stream::{Stream, StreamConfig};

/// Who a Rust child context is and how it reaches its parent.
#[derive(Clone)]
pub struct RustContextConfig {
    pub id: ContextId,
    pub name: String,
    pub parent: ContextId,
    /// Ancestors allowed to call in, the parent first.
    pub ancestors: Vec<ContextId>,
    pub key: Vec<u8>,
    pub max_message_size: usize,
    pub log: Logger,
    pub trace: Option<Trace>,
}

impl RustContextConfig {
    pub fn new(
        id: ContextId,
        name: &str,
        parent: ContextId,
        ancestors: Vec<ContextId>,
        key: &[u8],
        log: Logger,
    ) -> Self {
        RustContextConfig {
            id,
            name: name.to_string(),
            parent,
            ancestors,
            key: key.to_vec(),
            max_message_size: DEFAULT_MAX_MESSAGE_SIZE,
            log,
            trace: None,
        }
    }
}

/// Starts a Rust child context on the current actix arbiter, talking to
/// its parent over `reader`/`writer`. Returns its Router.
pub fn start_rust_context<R, W>(
    config: RustContextConfig,
    functions: Functions,
    reader: R,
    writer: W,
    initial: BytesMut,
) -> Addr<Router>
where
    R: AsyncRead + Unpin + 'static,
    W: AsyncWrite + Unpin + 'static,
{
    let log = config.log.new(slog::o!("ctx" => config.name.clone()));
    let mut rc = RouterConfig::new(
        config.id,
        Some(config.parent),
        config.ancestors.clone(),
        log.clone(),
    );
    rc.trace = config.trace.clone();
    rc.max_message_size = config.max_message_size;
    let router = Router::new(rc).start();
    Dispatcher::new(config.id, router.clone(), functions, log.clone()).serve();
    // Its Python children import through it, with a per-hop cache.
    crate::module_forwarder::ModuleForwarder::new(
        config.id,
        config.parent,
        router.clone(),
        log.clone(),
    )
    .serve();
    let mut sc = StreamConfig::new(config.parent, true, &config.key, log);
    sc.max_message_size = config.max_message_size;
    sc.initial = initial;
    Stream::start(sc, reader, writer, router.clone());
    router
}
