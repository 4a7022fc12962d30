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
use std::sync::{Arc, Mutex};

use actix::prelude::*;
use bytes::BytesMut;
use econtext_wire::{handles, ContextId, Header};
use slog::Logger;

use crate::announce::announce_route;
use crate::context::Context;
use crate::dispatch::Functions;
use crate::router::{CloseStream, ContextStarted, Router, RouterConfig, Trace};
use crate::rust_context::{start_rust_context, RustContextConfig};
use crate::stream::{Stream, StreamConfig};
use crate::supervision::{Stopper, Supervision, SupervisionOptions};

struct Node {
    name: String,
    parent: ContextId,
    router: Addr<Router>,
    /// The parent's end of the link to this node.
    uplink: Addr<Stream>,
}

pub use crate::announce::AddRouteRecord;

/// A tree of in-process Rust contexts under a master (context 0).
pub struct SimTree {
    key: Vec<u8>,
    log: Logger,
    master: Addr<Router>,
    nodes: HashMap<ContextId, Node>,
    next_id: ContextId,
    trace: Trace,
    add_routes: Vec<AddRouteRecord>,
    supervision: Supervision,
    /// Bytes each in-memory pipe buffers before the writer waits.
    pub pipe_capacity: usize,
}

impl SimTree {
    /// A tree holding just the master. Call inside an actix system.
    pub fn new(log: Logger) -> SimTree {
        let trace: Trace = Arc::new(Mutex::new(Vec::new()));
        let mut rc = RouterConfig::new(
            handles::MASTER_ID,
            None,
            Vec::new(),
            log.new(slog::o!("ctx" => "master")),
        );
        rc.trace = Some(trace.clone());
        let master = Router::new(rc).start();
        let supervision = Supervision::start(
            master.clone(),
            SupervisionOptions::new(std::time::Duration::from_secs(1), log.clone()),
        );
        SimTree {
            supervision,
            key: b"simulated tree secret".to_vec(),
            log,
            master,
            nodes: HashMap::new(),
            next_id: 1,
            trace,
            add_routes: Vec::new(),
            pipe_capacity: 256 * 1024,
        }
    }

    /// The tree's supervisors: events, monitors, `kill`, the tree's shape.
    /// Cutting a link shows up as the same events as a real disconnection.
    pub fn supervision(&self) -> &Supervision {
        &self.supervision
    }

    /// The master's router.
    pub fn master(&self) -> &Addr<Router> {
        &self.master
    }

    /// Ancestors of `id`, nearest first, ending with the master.
    pub fn ancestors(&self, id: ContextId) -> Vec<ContextId> {
        let mut out = Vec::new();
        let mut cur = id;
        while cur != handles::MASTER_ID {
            let p = self.nodes[&cur].parent;
            out.push(p);
            cur = p;
        }
        out
    }

    fn router_of(&self, id: ContextId) -> Addr<Router> {
        if id == handles::MASTER_ID {
            self.master.clone()
        } else {
            self.nodes[&id].router.clone()
        }
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
        let id = self.next_id;
        self.next_id += 1;
        let mut ancestors = vec![parent];
        if parent != handles::MASTER_ID {
            ancestors.extend(self.ancestors(parent));
        }
        let (parent_end, child_end) = tokio::io::duplex(self.pipe_capacity);
        let (cr, cw) = tokio::io::split(child_end);
        let mut config = RustContextConfig::new(
            id,
            name,
            parent,
            ancestors.clone(),
            &self.key,
            self.log.clone(),
        );
        config.trace = Some(self.trace.clone());
        let router = start_rust_context(config, functions, cr, cw, BytesMut::new());
        self.attach(id, name, parent, router, parent_end);
        let sent = announce_route(&self.master, id, &ancestors).await;
        self.add_routes.extend(sent);
        // A round trip to the new context: it is up, and (frames on one
        // link stay in order) every ancestor has applied its route.
        let _: bool = self
            .context(id)
            .call("econtext", "ping", ())
            .await
            .expect("a new simulated context answers");
        id
    }

    /// Attaches a context whose end of the link the test holds: a real
    /// Stream on the parent side, raw bytes on the returned end. Speak to
    /// it with [`SimTree::raw_codec`], or feed it garbage.
    pub fn attach_raw(
        &mut self,
        name: &str,
        parent: ContextId,
    ) -> (ContextId, tokio::io::DuplexStream) {
        let id = self.next_id;
        self.next_id += 1;
        let (parent_end, raw_end) = tokio::io::duplex(self.pipe_capacity);
        // A raw context has no router of its own; calls "to" it go to
        // the parent's stream and wait for whatever the test writes back.
        let router = self.router_of(parent);
        self.attach(id, name, parent, router, parent_end);
        (id, raw_end)
    }

    /// A codec for the raw end of [`SimTree::attach_raw`].
    pub fn raw_codec(&self) -> econtext_wire::FrameCodec {
        econtext_wire::FrameCodec::new(
            &self.key,
            econtext_wire::Direction::Up,
            econtext_wire::DEFAULT_MAX_MESSAGE_SIZE,
        )
    }

    /// Starts the parent's end of a new node's link and records the node.
    fn attach(
        &mut self,
        id: ContextId,
        name: &str,
        parent: ContextId,
        router: Addr<Router>,
        parent_end: tokio::io::DuplexStream,
    ) {
        let (pr, pw) = tokio::io::split(parent_end);
        let log = self.log.new(slog::o!("ctx" => self.name(parent)));
        let uplink = Stream::start(
            StreamConfig::new(id, false, &self.key, log),
            pr,
            pw,
            self.router_of(parent),
        );
        // Cutting or killing a node closes this end of its link.
        self.supervision
            .set_stopper(id, Stopper::Link(uplink.clone().recipient()));
        self.master.do_send(ContextStarted {
            id,
            name: name.to_string(),
            parent,
        });
        self.nodes.insert(
            id,
            Node {
                name: name.to_string(),
                parent,
                router,
                uplink,
            },
        );
    }

    pub fn name(&self, id: ContextId) -> String {
        match self.nodes.get(&id) {
            Some(n) => n.name.clone(),
            None if id == handles::MASTER_ID => "master".into(),
            None => format!("context{id}"),
        }
    }

    /// The ID of the context called `name`.
    pub fn id(&self, name: &str) -> ContextId {
        if name == "master" {
            return handles::MASTER_ID;
        }
        *self
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
        self.nodes[&id].uplink.do_send(CloseStream);
    }

    /// Every frame any router in the tree routed, in order.
    pub fn trace(&self) -> Vec<(ContextId, Header)> {
        self.trace.lock().expect("trace lock").clone()
    }

    pub fn clear_trace(&self) {
        self.trace.lock().expect("trace lock").clear();
    }

    /// Every ADD_ROUTE the master sent: `(to, target, via)`.
    pub fn add_routes(&self) -> &[AddRouteRecord] {
        &self.add_routes
    }
}
