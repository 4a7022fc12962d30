//! Simulated context trees for tests: any shape of in-process Rust
//! contexts, joined by in-memory duplex streams with real framing and real
//! HMAC, where any link can be cut.
//!
//! ```no_run
//! # async fn demo() {
//! use econtext_actors::dispatch::Functions;
//! use econtext_actors::testing::SimTree;
//!
//! let mut f = Functions::default();
//! f.register("math.add", |(a, b): (i64, i64)| a + b);
//! let mut tree = SimTree::new(slog::Logger::root(slog::Discard, slog::o!()));
//! let web = tree.spawn("web", 0, f.clone()).await;
//! let db = tree.spawn("db", web, f).await;
//! let sum: i64 = tree.context(db).call("math", "add", (2, 3)).await.unwrap();
//! tree.cut(web); // every pending call under `web` now fails with Dead
//! # }
//! ```

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use actix::prelude::*;
use bytes::BytesMut;
use econtext_wire::{handles, ContextId, Header};
use futures::future::{FutureExt, LocalBoxFuture};
use slog::Logger;

use crate::attach::{ancestors_of, attach_stream, start_in_process, ChildLink, InProcess, Joining};
use crate::context::Context;
use crate::dispatch::Functions;
use crate::router::{CloseStream, Router, RouterConfig, Trace};
use crate::rust_context::RustContextConfig;
use crate::spin::{LinkSpin, SpinPolicy};
use crate::stream::Stream;
use crate::supervision::{
    ChildFactory, RestartPolicy, Stopper, Supervised, Supervision, SupervisionOptions,
};

struct Node {
    name: String,
    router: Addr<Router>,
    /// The parent's end of the link to this node.
    uplink: Addr<Stream>,
}

pub use crate::announce::AddRouteRecord;

/// What changes as the tree grows; shared with supervised children's
/// factories, which add nodes when they restart one. IDs and parentage
/// are the master's core's, as for real contexts ([`crate::attach`]).
#[derive(Default)]
struct Nodes {
    nodes: HashMap<ContextId, Node>,
    add_routes: Vec<AddRouteRecord>,
}

/// Everything needed to add a node; cheap to clone.
#[derive(Clone)]
struct Env {
    key: Arc<[u8]>,
    log: Logger,
    master: Addr<Router>,
    trace: Trace,
    supervision: Supervision,
    state: Arc<Mutex<Nodes>>,
}

impl Env {
    fn state(&self) -> MutexGuard<'_, Nodes> {
        self.state.lock().expect("sim tree lock")
    }

    fn router_of(&self, id: ContextId) -> Option<Addr<Router>> {
        if id == handles::MASTER_ID {
            Some(self.master.clone())
        } else {
            self.state().nodes.get(&id).map(|n| n.router.clone())
        }
    }

    fn name(&self, id: ContextId) -> String {
        match self.state().nodes.get(&id) {
            Some(n) => n.name.clone(),
            None if id == handles::MASTER_ID => "master".into(),
            None => format!("context{id}"),
        }
    }

    /// Begins a node under `parent` the way the master begins any child:
    /// an ID from the master's allocator, its routes announced.
    async fn join(&self, parent: ContextId) -> Result<(Joining, Addr<Router>), String> {
        let parent_router = self
            .router_of(parent)
            .ok_or_else(|| format!("no context {parent} in the tree"))?;
        let joining = Joining::begin(&self.master, parent)
            .await
            .map_err(|e| e.to_string())?;
        self.state()
            .add_routes
            .extend(joining.routes.iter().copied());
        Ok((joining, parent_router))
    }

    /// Creates a Rust context under `parent` and waits for a round trip
    /// to it.
    async fn spawn(
        &self,
        name: &str,
        parent: ContextId,
        functions: Functions,
        pipe_capacity: usize,
    ) -> Result<ContextId, String> {
        let (joining, parent_router) = self.join(parent).await?;
        let id = joining.id;
        let mut config = RustContextConfig::new(
            id,
            name,
            parent,
            joining.ancestors.clone(),
            &self.key,
            self.log.clone(),
        );
        config.trace = Some(self.trace.clone());
        let child = start_in_process(&parent_router, config, functions, pipe_capacity);
        self.record(id, name, child);
        // A round trip to the new context: it is up, and (frames on one
        // link stay in order) every ancestor has applied its route.
        let ctx = Context::new(id, name, handles::MASTER_ID, self.master.clone());
        ctx.call::<bool>("econtext", "ping", ())
            .await
            .map_err(|e| format!("simulated context {name}: {e}"))?;
        joining.started(name);
        Ok(id)
    }

    /// Records a node; cutting or killing it closes the parent's end of
    /// its link.
    fn record(&self, id: ContextId, name: &str, child: InProcess) {
        self.supervision
            .set_stopper(id, Stopper::Link(child.uplink.clone().recipient()));
        self.state().nodes.insert(
            id,
            Node {
                name: name.to_string(),
                router: child.router,
                uplink: child.uplink,
            },
        );
    }
}

/// Creates a supervised SimTree node again.
struct SimFactory {
    env: Env,
    name: String,
    parent: ContextId,
    functions: Arc<dyn Fn() -> Functions + Send + Sync>,
    pipe_capacity: usize,
}

impl ChildFactory for SimFactory {
    fn start(&self) -> LocalBoxFuture<'static, Result<Context, String>> {
        let env = self.env.clone();
        let (name, parent, cap) = (self.name.clone(), self.parent, self.pipe_capacity);
        let functions = (self.functions)();
        async move {
            let id = env.spawn(&name, parent, functions, cap).await?;
            Ok(Context::new(
                id,
                &name,
                handles::MASTER_ID,
                env.master.clone(),
            ))
        }
        .boxed_local()
    }
}

/// A tree of in-process Rust contexts under a master (context 0).
pub struct SimTree {
    env: Env,
    /// Bytes each in-memory pipe buffers before the writer waits.
    pub pipe_capacity: usize,
}

impl SimTree {
    /// A tree holding just the master. Call inside an actix system.
    pub fn new(log: Logger) -> SimTree {
        let defaults = RouterConfig::new(0, None, Vec::new(), log.clone());
        SimTree::with_stall_after(log, defaults.stall_after)
    }

    /// A tree whose master declares a peer dead once its link has made no
    /// progress for `stall_after`.
    pub fn with_stall_after(log: Logger, stall_after: Duration) -> SimTree {
        let trace: Trace = Arc::new(Mutex::new(Vec::new()));
        let mut rc = RouterConfig::new(
            handles::MASTER_ID,
            None,
            Vec::new(),
            log.new(slog::o!("ctx" => "master")),
        );
        rc.trace = Some(trace.clone());
        rc.stall_after = stall_after;
        let master = Router::new(rc).start();
        let supervision = Supervision::start(
            master.clone(),
            SupervisionOptions::new(Duration::from_secs(1), log.clone()),
        );
        SimTree {
            env: Env {
                key: Arc::from(&b"simulated tree secret"[..]),
                log,
                master,
                trace,
                supervision,
                state: Arc::new(Mutex::new(Nodes::default())),
            },
            pipe_capacity: 256 * 1024,
        }
    }

    /// The tree's supervisors: events, monitors, `kill`, the tree's shape.
    /// Cutting a link shows up as the same events as a real disconnection.
    pub fn supervision(&self) -> &Supervision {
        &self.env.supervision
    }

    /// The master's router.
    pub fn master(&self) -> &Addr<Router> {
        &self.env.master
    }

    /// Ancestors of `id`, nearest first, ending with the master (the
    /// master's core's record; empty for a context it does not know).
    pub async fn ancestors(&self, id: ContextId) -> Vec<ContextId> {
        ancestors_of(&self.env.master, id).await.unwrap_or_default()
    }

    fn router_of(&self, id: ContextId) -> Addr<Router> {
        self.env
            .router_of(id)
            .unwrap_or_else(|| panic!("no context {id} in the tree"))
    }

    /// Creates a Rust context named `name` under `parent`, offering
    /// `functions`, announces its route to every ancestor that did not
    /// create it (the seed's ADD_ROUTE rule), and returns its ID once
    /// those routes are in place.
    pub async fn spawn(
        &mut self,
        name: &str,
        parent: ContextId,
        functions: Functions,
    ) -> ContextId {
        self.env
            .spawn(name, parent, functions, self.pipe_capacity)
            .await
            .expect("a new simulated context answers")
    }

    /// Creates a Rust context under `parent` and supervises it under
    /// `policy`: after a cut (or a kill from outside) the supervisor of
    /// `parent` creates it again, with `functions()` afresh, as a new
    /// node. Calls through the handle wait at most 5 s for a restart.
    pub async fn supervise(
        &mut self,
        name: &str,
        parent: ContextId,
        policy: RestartPolicy,
        functions: impl Fn() -> Functions + Send + Sync + 'static,
    ) -> Supervised {
        let factory = Arc::new(SimFactory {
            env: self.env.clone(),
            name: name.to_string(),
            parent,
            functions: Arc::new(functions),
            pipe_capacity: self.pipe_capacity,
        });
        let first = factory
            .start()
            .await
            .expect("a new simulated context answers");
        self.env
            .supervision
            .supervise(first, parent, policy, Duration::from_secs(5), factory)
            .await
            .expect("the parent's supervisor is there")
    }

    /// Attaches a context whose end of the link the test holds: a real
    /// Stream on the parent side, raw bytes on the returned end. Speak to
    /// it with [`SimTree::raw_codec`], or feed it garbage.
    pub async fn attach_raw(
        &mut self,
        name: &str,
        parent: ContextId,
    ) -> (ContextId, tokio::io::DuplexStream) {
        let (parent_end, raw_end) = tokio::io::duplex(self.pipe_capacity);
        let (pr, pw) = tokio::io::split(parent_end);
        let id = self.attach_raw_with(name, parent, pr, pw, None).await;
        (id, raw_end)
    }

    /// [`SimTree::attach_raw`] over a real Unix socket pair, the parent
    /// reading it as a master reads a child process (`crate::socket`) and
    /// spinning by `spin` (`crate::spin`). The returned end is blocking,
    /// for a peer on a thread of its own.
    pub async fn attach_raw_socket(
        &mut self,
        name: &str,
        parent: ContextId,
        spin: SpinPolicy,
    ) -> (ContextId, std::os::unix::net::UnixStream) {
        let (parent_end, raw_end) = tokio::net::UnixStream::pair().expect("a socket pair");
        let (pr, pw) = crate::socket::split(parent_end).expect("a socket split");
        let spin = Some(LinkSpin::new(spin, parent));
        let id = self.attach_raw_with(name, parent, pr, pw, spin).await;
        let raw_end = raw_end.into_std().expect("a std socket");
        raw_end.set_nonblocking(false).expect("a blocking socket");
        (id, raw_end)
    }

    async fn attach_raw_with<R, W>(
        &mut self,
        name: &str,
        parent: ContextId,
        reader: R,
        writer: W,
        spin: Option<LinkSpin>,
    ) -> ContextId
    where
        R: tokio::io::AsyncRead + Unpin + 'static,
        W: tokio::io::AsyncWrite + Unpin + 'static,
    {
        let (joining, parent_router) = self
            .env
            .join(parent)
            .await
            .expect("the tree can take a raw context");
        let id = joining.id;
        let link = ChildLink {
            id,
            key: &self.env.key,
            max_message_size: econtext_wire::DEFAULT_MAX_MESSAGE_SIZE,
            initial: BytesMut::new(),
            log: self.env.log.new(slog::o!("ctx" => self.env.name(parent))),
            spin,
        };
        let uplink = attach_stream(&parent_router, link, reader, writer);
        // A raw context has no router of its own; calls "to" it go to
        // the parent's stream and wait for whatever the test writes back.
        let child = InProcess {
            router: parent_router,
            uplink,
        };
        self.env.record(id, name, child);
        joining.started(name);
        id
    }

    /// A codec for the raw end of [`SimTree::attach_raw`].
    pub fn raw_codec(&self) -> econtext_wire::FrameCodec {
        econtext_wire::FrameCodec::new(
            &self.env.key,
            econtext_wire::Direction::Up,
            econtext_wire::DEFAULT_MAX_MESSAGE_SIZE,
        )
    }

    pub fn name(&self, id: ContextId) -> String {
        self.env.name(id)
    }

    /// The ID of the context called `name`.
    pub fn id(&self, name: &str) -> ContextId {
        if name == "master" {
            return handles::MASTER_ID;
        }
        *self
            .env
            .state()
            .nodes
            .iter()
            .find(|(_, n)| n.name == name)
            .unwrap_or_else(|| panic!("no context {name:?}"))
            .0
    }

    /// A handle for the master to call `id`.
    pub fn context(&self, id: ContextId) -> Context {
        self.context_from(handles::MASTER_ID, id)
    }

    /// A handle for context `from` to send to `to`.
    pub fn context_from(&self, from: ContextId, to: ContextId) -> Context {
        Context::new(to, &self.name(to), from, self.router_of(from))
    }

    /// The router of any context in the tree.
    pub fn router(&self, id: ContextId) -> Addr<Router> {
        self.router_of(id)
    }

    /// Cuts the link between `id` and its parent, as if the connection
    /// dropped.
    pub fn cut(&mut self, id: ContextId) {
        self.env.state().nodes[&id].uplink.do_send(CloseStream);
    }

    /// Every frame any router in the tree routed, in order.
    pub fn trace(&self) -> Vec<(ContextId, Header)> {
        self.env.trace.lock().expect("trace lock").clone()
    }

    pub fn clear_trace(&self) {
        self.env.trace.lock().expect("trace lock").clear();
    }

    /// Every ADD_ROUTE the master sent: `(to, target, via)`.
    pub fn add_routes(&self) -> Vec<AddRouteRecord> {
        self.env.state().add_routes.clone()
    }
}
