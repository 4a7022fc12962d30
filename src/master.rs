//! The master: context 0, which allocates every ID and creates contexts.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix::prelude::*;
use econtext_actors::attach::{
    ancestors_of, attach_process, start_in_process, ChildLink, ChildProcess, JoinError, Joining,
};
use econtext_actors::importer::{Importer, ImporterStats};
use econtext_actors::logforwarder::{LogForwarder, NameContext};
use econtext_actors::router::{ShutdownContext, WhenStopped};
use econtext_actors::rust_context::RustContextConfig;
use econtext_actors::spin::{LinkSpin, SpinPolicy};
use econtext_actors::supervision::{Stopper, Supervision, SupervisionOptions};
use econtext_actors::supervisor::DEFAULT_GRACE;
use econtext_actors::{Context, Router, RouterConfig};
use econtext_agent::master_side::{agent_spec, agent_start};
use econtext_bootstrap::connect::{connect_with, Payload};
use econtext_bootstrap::first_stage::{python_argv_for, Start};
use econtext_bootstrap::modules::ModuleFinder;
use econtext_bootstrap::payload::CoreSource;
use econtext_bootstrap::spawner::Spawner;
use econtext_bootstrap::{ChildConfig, ConnectError, LocalOptions, Method};
use econtext_wire::messages::Spawn;
use econtext_wire::{handles, ContextId, DEFAULT_MAX_MESSAGE_SIZE};
use rand::RngCore;
use slog::{debug, o, Logger};

/// Bytes an in-process Rust context's pipe buffers before its writer waits.
const IN_PROCESS_PIPE: usize = 256 * 1024;

/// How the master and the contexts it creates behave. Build it with
/// `MasterOptions::default()` and the setters below (it is
/// `#[non_exhaustive]`: new options do not break callers).
#[derive(Clone)]
#[non_exhaustive]
pub struct MasterOptions {
    /// Where the master's own records and every forwarded child record go.
    pub log: Logger,
    /// Python's numeric level copied into children (10 debug, 20 info):
    /// records below it are never sent over the wire.
    pub log_level: u8,
    /// Largest frame accepted or sent, inherited by every child.
    pub max_message_size: usize,
    /// Bounds every stage of creating a context.
    pub connect_timeout: Duration,
    /// How long a dying context may take before it is killed.
    pub grace: Duration,
    /// Directories searched for modules that children cannot import
    /// locally (like PYTHONPATH). Defaults to `ECONTEXT_PATH`.
    pub module_path: Vec<PathBuf>,
    /// When set, only these top-level names are served from the module
    /// path (docs/ARCHITECTURE.md, "What a child can fetch").
    pub module_allow: Option<Vec<String>>,
    /// A dead context's ID is handed out again no sooner than this, so
    /// late frames for it are never delivered to a successor.
    pub id_quarantine: Duration,
    /// How long a reader awaiting a reply polls before its thread sleeps,
    /// in the master (on a child's link while it awaits replies there)
    /// and in every Python child (after it writes to its parent). Zero
    /// turns it off; at most 1 ms. Default 50 µs: on a VM a halted vCPU's
    /// wake-up costs more than that much polling. The master spins only
    /// while at most two of a thread's links await replies (not in a
    /// fan-out). docs/ARCHITECTURE.md, "actors: the runtime" (`spin`);
    /// docs/PERFORMANCE.md, "Spinning before sleeping (fifth session, spin)".
    pub spin_window: Duration,
}

impl Default for MasterOptions {
    fn default() -> Self {
        MasterOptions {
            log: Logger::root(slog::Discard, o!()),
            log_level: 20,
            max_message_size: DEFAULT_MAX_MESSAGE_SIZE,
            connect_timeout: Duration::from_secs(30),
            grace: DEFAULT_GRACE,
            module_path: ModuleFinder::path_from_env(),
            module_allow: None,
            id_quarantine: econtext_actors::ids::DEFAULT_QUARANTINE,
            spin_window: SpinPolicy::DEFAULT_WINDOW,
        }
    }
}

macro_rules! setters {
    ($($(#[$doc:meta])* $name:ident: $ty:ty;)*) => {
        $($(#[$doc])* pub fn $name(mut self, v: $ty) -> Self {
            self.$name = v;
            self
        })*
    };
}

impl MasterOptions {
    setters! {
        /// Where the master's records and every forwarded child record go.
        log: Logger;
        /// Python's numeric level copied into children (10 debug, 20 info).
        log_level: u8;
        /// Largest frame accepted or sent, inherited by every child.
        max_message_size: usize;
        /// Bounds every stage of creating a context.
        connect_timeout: Duration;
        /// How long a dying context may take before it is killed.
        grace: Duration;
        /// Directories searched for modules children cannot import.
        module_path: Vec<PathBuf>;
        /// Only these top-level names are served from the module path.
        module_allow: Option<Vec<String>>;
        /// A dead context's ID is handed out again no sooner than this.
        id_quarantine: Duration;
        /// How long a reader awaiting a reply polls before sleeping (0: off).
        spin_window: Duration;
    }
}

/// Options for one new context: `ConnectOptions::new(method)` and the
/// setters below (`#[non_exhaustive]`).
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct ConnectOptions {
    pub method: Method,
    /// The context's name (default `METHOD.ID`), shown in `ps` and logs.
    pub name: Option<String>,
    /// Overrides the master's connect timeout for this context.
    pub connect_timeout: Option<Duration>,
    /// Create the context through this one (SPAWN) instead of directly.
    pub via: Option<Context>,
    /// Overrides the master's log level (Python's numbers) for this context.
    pub log_level: Option<u8>,
    /// Start the context as a Rust agent (a binary that calls
    /// `econtext::agent::run_if_child`) instead of Python: see econtext-agent.
    pub agent: Option<econtext_agent::AgentOptions>,
    /// Send the Python core compiled for the target's interpreter when a
    /// local CPython has the same bytecode magic (compiled once per master
    /// process and interpreter kind, econtext_bootstrap::compiled): the
    /// target skips 13-14 ms of compiling. Worth it for many contexts
    /// (the fleet CLI sets it); for one, the local compile costs more
    /// than it saves. Direct connections only (not `via`).
    pub compiled_core: bool,
    /// Start the core in the first stage's own `python -S` instead of a
    /// second interpreter (econtext_bootstrap::first_stage::Start::Lean):
    /// about 10-15 ms less CPU per context, but no `site`, so nothing
    /// from the target's site-packages is importable (the master's module
    /// path still is, through the importer), and `ps` shows the `-c`
    /// command line instead of `python(econtext:NAME)`. What `econtext
    /// run` uses. Direct connections only (not `via`).
    pub lean_start: bool,
    /// Builtin modules (`econtext.fleet`, `econtext.files`...) sent with
    /// the payload and created at start, for a context sure to call them:
    /// no GET_MODULE round trip. Direct connections only (not `via`).
    pub preload: Vec<&'static str>,
}

impl ConnectOptions {
    pub fn new(method: Method) -> Self {
        ConnectOptions {
            method,
            name: None,
            connect_timeout: None,
            via: None,
            log_level: None,
            agent: None,
            compiled_core: false,
            lean_start: false,
            preload: Vec::new(),
        }
    }

    /// See [`ConnectOptions::preload`].
    pub fn preload(mut self, modules: &[&'static str]) -> Self {
        self.preload = modules.to_vec();
        self
    }

    /// See [`ConnectOptions::lean_start`].
    pub fn lean_start(mut self, yes: bool) -> Self {
        self.lean_start = yes;
        self
    }

    /// See [`ConnectOptions::compiled_core`].
    pub fn compiled_core(mut self, yes: bool) -> Self {
        self.compiled_core = yes;
        self
    }

    /// Starts the context as a Rust agent shipped from memory (`?agent=rust`).
    pub fn agent(mut self, agent: econtext_agent::AgentOptions) -> Self {
        self.agent = Some(agent);
        self
    }

    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }

    pub fn connect_timeout(mut self, t: Duration) -> Self {
        self.connect_timeout = Some(t);
        self
    }

    /// Records below this Python level (10 debug, 20 info, 30 warning) are
    /// not sent from this context.
    pub fn log_level(mut self, level: u8) -> Self {
        self.log_level = Some(level);
        self
    }

    /// Creates the context through `via` (which spawns it and routes for it).
    pub fn via(mut self, via: &Context) -> Self {
        self.via = Some(via.clone());
        self
    }
}

struct Inner {
    router: Addr<Router>,
    log_forwarder: Addr<LogForwarder>,
    key: Vec<u8>,
    importer_stats: Arc<ImporterStats>,
    /// Routers of the Rust contexts running in this process.
    in_process: Mutex<HashMap<ContextId, Addr<Router>>>,
    /// The supervisor tree, one supervisor per context (src/supervise.rs).
    supervision: Supervision,
    opts: MasterOptions,
}

impl Inner {
    /// A context's supervisor is done with it: forget it here too, so
    /// nothing grows with every context created and lost.
    /// (The tree's parentage is the router core's, pruned there.)
    fn forget(&self, id: ContextId) {
        self.in_process.lock().expect("in-process lock").remove(&id);
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        // The tree's key does not outlive the master in memory.
        self.key.iter_mut().for_each(|b| *b = 0);
        std::hint::black_box(&self.key);
    }
}

/// The master context. Create it inside a running actix system
/// (`#[actix::main]`, `actix_rt::System::new().block_on(..)`).
#[derive(Clone)]
pub struct Master {
    inner: Arc<Inner>,
}

impl Master {
    pub fn new(mut opts: MasterOptions) -> Master {
        // A frame's length field has 31 bits (the top one is the trailing
        // MAC's flag): a larger limit would let honest senders announce
        // lengths no receiver can read.
        opts.max_message_size = opts.max_message_size.min(econtext_wire::MAX_FRAME_DATA);
        // The master holds the tree's key and passwords from here on.
        if !econtext_bootstrap::secrets::disable_core_dumps() {
            slog::warn!(opts.log, "could not disable core dumps of the master");
        }
        let mut key = vec![0u8; 32];
        rand::thread_rng().fill_bytes(&mut key);
        let mut rc = RouterConfig::new(
            handles::MASTER_ID,
            None,
            Vec::new(),
            opts.log.new(o!("router" => 0)),
        );
        rc.stall_after = opts.connect_timeout;
        rc.shutdown_grace = opts.grace;
        rc.id_quarantine = opts.id_quarantine;
        rc.max_message_size = opts.max_message_size;
        let router = Router::new(rc).start();
        // Both forget what they kept for a context when it dies.
        let log_forwarder = LogForwarder::new(opts.log.clone()).serve(&router, handles::MASTER_ID);
        let importer_stats = Arc::new(ImporterStats::default());
        Importer::new(
            handles::MASTER_ID,
            router.clone(),
            Box::new(
                ModuleFinder::new(opts.module_path.clone())
                    .with_allow_list(opts.module_allow.clone()),
            ),
            importer_stats.clone(),
            opts.log.new(o!("importer" => 0)),
        )
        .serve();
        let inner = Arc::new_cyclic(|me: &std::sync::Weak<Inner>| {
            let me = me.clone();
            let mut sup = SupervisionOptions::new(opts.grace, opts.log.new(o!("supervision" => 0)));
            sup.on_gone = Some(Box::new(move |id| {
                if let Some(inner) = me.upgrade() {
                    inner.forget(id);
                }
            }));
            Inner {
                supervision: Supervision::start(router.clone(), sup),
                router,
                log_forwarder,
                key,
                importer_stats,
                in_process: Mutex::new(HashMap::new()),
                opts,
            }
        });
        Master { inner }
    }

    /// The supervisor tree: events, monitors, kill, supervised children
    /// (see also the methods in src/supervise.rs).
    pub fn supervision(&self) -> &Supervision {
        &self.inner.supervision
    }

    /// Whether `id` is a Rust context running in this process.
    pub(crate) fn is_in_process(&self, id: ContextId) -> bool {
        self.inner
            .in_process
            .lock()
            .expect("in-process lock")
            .contains_key(&id)
    }

    pub fn router(&self) -> &Addr<Router> {
        &self.inner.router
    }

    /// Counters of the module importer (requests, modules and bytes sent).
    pub fn importer_stats(&self) -> &ImporterStats {
        &self.inner.importer_stats
    }

    pub fn log(&self) -> &Logger {
        &self.inner.opts.log
    }

    /// Starts a Python context in a local child process.
    pub async fn local(&self, opts: LocalOptions) -> Result<Context, ConnectError> {
        self.connect(ConnectOptions::new(Method::Local(opts))).await
    }

    /// Starts a context with any method, directly or through `opts.via`.
    pub async fn connect(&self, opts: ConnectOptions) -> Result<Context, ConnectError> {
        // Before anything is allocated, announced or started.
        opts.method.validate()?;
        let parent = opts.via.as_ref().map_or(handles::MASTER_ID, Context::id);
        // Dropped unfinished (an error, or this future cancelled), it
        // declares the context dead: its ID returns, its routes go.
        let joining = self.join(parent).await?;
        let id = joining.id;
        let name = opts
            .name
            .clone()
            .unwrap_or_else(|| format!("{}.{}", opts.method.kind(), id));
        let ctx = match opts.via.clone() {
            None => self.connect_direct(id, name, opts).await,
            Some(via) => self.connect_via(&joining, name, &via, opts).await,
        }?;
        joining.started(ctx.name());
        self.inner
            .log_forwarder
            .do_send(NameContext(id, ctx.name().to_string()));
        Ok(ctx)
    }

    /// Starts a Rust context in this process, under the master or under
    /// another in-process Rust context (`via`), joined to its parent by an
    /// in-memory pipe with real framing and HMAC. It serves `services`
    /// (`Functions`, or the `econtext::agent::Services` an agent takes)
    /// and can itself create Python contexts (`ConnectOptions::via`).
    pub async fn rust_context(
        &self,
        name: &str,
        via: Option<&Context>,
        services: impl Into<econtext_agent::Services>,
    ) -> Result<Context, ConnectError> {
        let inner = &self.inner;
        let parent = via.map_or(handles::MASTER_ID, Context::id);
        let parent_router = if parent == handles::MASTER_ID {
            inner.router.clone()
        } else {
            inner
                .in_process
                .lock()
                .expect("in-process lock")
                .get(&parent)
                .cloned()
                .ok_or_else(|| ConnectError::Via {
                    via: parent,
                    reason: "not an in-process Rust context".into(),
                })?
        };
        let joining = self.join(parent).await?;
        let id = joining.id;
        let log = inner.opts.log.new(o!("ctx" => name.to_string()));
        let mut config = RustContextConfig::new(
            id,
            name,
            parent,
            joining.ancestors.clone(),
            &inner.key,
            log.clone(),
        );
        config.max_message_size = inner.opts.max_message_size;
        let services = services.into();
        let child = start_in_process(
            &parent_router,
            config,
            // Every Rust context serves econtext.files, as Python ones do.
            econtext_files::service::with_files(&services.functions),
            IN_PROCESS_PIPE,
        );
        let router = child.router;
        // The same served actors an out-of-process agent would start.
        services.start_actors(&router, id);
        Spawner::new(id, router.clone(), &inner.key, log)
            .with_exit_sink(inner.supervision.exit_sink())
            .serve();
        // Closing the parent's end of its link ends an in-process context.
        inner
            .supervision
            .set_stopper(id, Stopper::Link(child.uplink.recipient()));
        inner
            .in_process
            .lock()
            .expect("in-process lock")
            .insert(id, router);
        inner
            .log_forwarder
            .do_send(NameContext(id, name.to_string()));
        let ctx = Context::new(id, name, handles::MASTER_ID, inner.router.clone());
        // A round trip: the context is up and every route to it is in place.
        ctx.call::<bool>("econtext", "ping", ())
            .await
            .map_err(|e| ConnectError::Io(format!("in-process context {name}: {e}")))?;
        joining.started(name);
        Ok(ctx)
    }

    /// Ends every context and returns when they are gone: SHUTDOWN to
    /// each child, the master's streams close once the children have
    /// gone (or after the grace period), and its router stops. Bounded
    /// by the grace period (plus a second); the master is unusable after.
    pub async fn shutdown(&self) {
        let router = &self.inner.router;
        let Ok(stopped) = router.send(WhenStopped).await else {
            return; // already stopped
        };
        router.do_send(ShutdownContext);
        let bound = self.inner.opts.grace + Duration::from_secs(1);
        let _ = tokio::time::timeout(bound, stopped).await;
    }

    /// Begins a child under `parent` through the one shared path
    /// (`econtext_actors::attach`): a fresh ID (never 0, never a live
    /// one; freed IDs come back after a quarantine), its ancestors, its
    /// routes announced.
    async fn join(&self, parent: ContextId) -> Result<Joining, ConnectError> {
        Joining::begin(&self.inner.router, parent)
            .await
            .map_err(|e| match e {
                JoinError::IdsExhausted(e) => ConnectError::IdsExhausted(e.to_string()),
                JoinError::UnknownParent(p) => ConnectError::Via {
                    via: p,
                    reason: "not a live context of this tree".into(),
                },
                other => ConnectError::Io(other.to_string()),
            })
    }

    /// The ancestors of `id`, its parent first, ending with the master
    /// (empty for a context the master does not know: it keeps no record
    /// of the dead). The master's router core is the one record of this.
    pub async fn ancestors(&self, id: ContextId) -> Vec<ContextId> {
        ancestors_of(&self.inner.router, id)
            .await
            .unwrap_or_default()
    }

    fn config(
        &self,
        id: ContextId,
        name: &str,
        ancestors: Vec<ContextId>,
        opts: &ConnectOptions,
    ) -> ChildConfig {
        ChildConfig {
            context_id: id,
            parent_id: ancestors[0],
            name: name.to_string(),
            key: self.inner.key.clone(),
            log_level: opts.log_level.unwrap_or(self.inner.opts.log_level),
            max_message_size: self.inner.opts.max_message_size,
            ancestors,
            module_path: self
                .inner
                .opts
                .module_path
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(":"),
            import_timeout_ms: opts
                .connect_timeout
                .unwrap_or(self.inner.opts.connect_timeout)
                .as_millis() as u64,
            spin_us: self.spin_policy().window().as_micros() as u64,
        }
    }

    /// The spin rule for the master's links and its children's.
    fn spin_policy(&self) -> SpinPolicy {
        SpinPolicy::new(self.inner.opts.spin_window)
    }

    /// Creates a context through `via`: routes first (so that nothing the
    /// new context sends is taken for a spoof), then SPAWN.
    async fn connect_via(
        &self,
        joining: &Joining,
        name: String,
        via: &Context,
        opts: ConnectOptions,
    ) -> Result<Context, ConnectError> {
        let inner = &self.inner;
        let id = joining.id;
        let config = self.config(id, &name, joining.ancestors.clone(), &opts);
        let timeout = opts.connect_timeout.unwrap_or(inner.opts.connect_timeout);
        let (spec, agent) = match &opts.agent {
            None => (opts.method.spawn_spec(&name, timeout)?, None),
            Some(agent) => {
                let (spec, ship) = agent_spec(&opts.method, agent, &name, timeout)?;
                (spec, Some(agent_start(&ship, &config)))
            }
        };
        let spawn = Spawn {
            id,
            name: name.clone(),
            argv: spec.argv,
            env: spec.env.into_iter().collect(),
            config: config.to_msgpack_map(),
            timeout: timeout.as_secs_f64(),
            method: spec.method,
            new_session: spec.new_session,
            tty: spec.tty,
            prompt: spec.prompts.custom.clone(),
            prompt_words: spec.prompts.words.clone(),
            exit_rules: spec.exit_rules.clone(),
            password: spec.password.map(|p| p.expose().to_string()),
            agent,
        };
        // The frame carries the password: its bytes are wiped once written.
        let mut wiped = econtext_bootstrap::secrets::WipedBuf::default();
        spawn
            .encode_into(&mut wiped)
            .map_err(|e| ConnectError::Protocol(e.to_string()))?;
        let data = wiped.into_bytes();
        let reply = via
            .request_encoded::<Vec<u64>>(
                handles::SPAWN,
                data,
                Some(timeout + Duration::from_secs(5)),
            )
            .await;
        match reply {
            Ok(pids) => {
                if let Some(&pid) = pids.first() {
                    // A Rust intermediate in this process started it as our
                    // own child; a Python intermediate must signal it.
                    let stopper = if self.is_in_process(via.id()) {
                        Stopper::LocalProcess { pid: pid as u32 }
                    } else {
                        Stopper::RemoteProcess {
                            via: via.clone(),
                            pid: pid as u32,
                        }
                    };
                    inner.supervision.set_stopper(id, stopper);
                }
                Ok(Context::new(
                    id,
                    &name,
                    handles::MASTER_ID,
                    inner.router.clone(),
                ))
            }
            Err(e) => Err(match e {
                econtext_actors::Error::Remote(ce) => ConnectError::from_remote(
                    via.id(),
                    opts.method.kind(),
                    timeout,
                    &ce.type_name,
                    ce.message,
                ),
                other => ConnectError::Via {
                    via: via.id(),
                    reason: other.to_string(),
                },
            })
            .map_err(|e| match opts.agent {
                Some(_) => econtext_agent::master_side::classify(e),
                None => e,
            }),
        }
    }

    async fn connect_direct(
        &self,
        id: ContextId,
        name: String,
        opts: ConnectOptions,
    ) -> Result<Context, ConnectError> {
        let inner = &self.inner;
        let log = inner.opts.log.new(o!("ctx" => name.clone()));
        let config = self.config(id, &name, vec![handles::MASTER_ID], &opts);
        let timeout = opts.connect_timeout.unwrap_or(inner.opts.connect_timeout);
        let connected = match &opts.agent {
            Some(agent) => {
                econtext_agent::master_side::connect_agent(
                    &opts.method,
                    agent,
                    &config,
                    timeout,
                    &log,
                )
                .await?
                .0
            }
            None => {
                let start = match opts.lean_start {
                    true => Start::Lean,
                    false => Start::TwoStage,
                };
                let spec = opts
                    .method
                    .spawn_spec_with(&name, timeout, &|py, n| python_argv_for(py, n, start))?;
                let payload = Payload::Core {
                    config: &config,
                    compiled: opts.compiled_core,
                    python: opts.method.python(),
                    preload: &opts.preload,
                    // A lean start is a leaf (direct, never an intermediate
                    // unless asked later: then it fetches the source).
                    source: match opts.lean_start {
                        true => CoreSource::OmitIfCompiled,
                        false => CoreSource::Send,
                    },
                };
                connect_with(&spec, payload, timeout, &log).await?
            }
        };
        let pid = connected.process.pid();
        debug!(log, "connected"; "id" => id, "pid" => pid);
        // Read side registered for readability only (actors/src/socket.rs).
        let (reader, writer) = econtext_actors::socket::split(connected.data)?;
        let link = ChildLink {
            id,
            key: &inner.key,
            max_message_size: inner.opts.max_message_size,
            initial: connected.initial,
            log,
            spin: Some(LinkSpin::new(self.spin_policy(), handles::MASTER_ID)),
        };
        let child = ChildProcess {
            reader,
            writer,
            carrier: Box::new(connected.process),
            grace: inner.opts.grace,
            on_exit: Some(inner.supervision.exit_sink()),
        };
        attach_process(&inner.router, link, child);
        inner
            .supervision
            .set_stopper(id, Stopper::LocalProcess { pid });
        Ok(Context::new(
            id,
            &name,
            handles::MASTER_ID,
            inner.router.clone(),
        ))
    }
}
