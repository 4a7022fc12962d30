//! LogForwarder: FORWARD_LOG records from every context into slog.

use std::collections::HashMap;

use actix::prelude::*;
use econtext_wire::{handles, sanitize, CallError, ContextId};
use slog::{debug, error, info, o, warn, Logger};

use crate::router::{Router, Subscribe, SERVICE_MAILBOX};
use crate::serve::{serve_with, Request, ServeOptions};

/// FORWARD_LOG as received ([`econtext_wire::messages::ForwardLog`]),
/// whose message may also be bytes: a line of a child's stderr that is not
/// UTF-8 comes as it was read, and the sanitizer shows the bad bytes
/// escaped (`\xNN`) instead of anyone replacing them.
#[derive(serde::Deserialize)]
pub struct LogRecord {
    logger: String,
    level: u8,
    #[serde(with = "serde_bytes")]
    message: Vec<u8>,
}

/// Logs each record under `ctx.<name>`, at the record's level.
pub struct LogForwarder {
    log: Logger,
    names: HashMap<ContextId, String>,
}

impl LogForwarder {
    pub fn new(log: Logger) -> Self {
        LogForwarder {
            log,
            names: HashMap::new(),
        }
    }
}

impl Actor for LogForwarder {
    type Context = actix::Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        // Room for every record the adapter lets in flight.
        ctx.set_mailbox_capacity(SERVICE_MAILBOX);
    }
}

/// Names a context for the log lines it sends.
#[derive(Message)]
#[rtype(result = "()")]
pub struct NameContext(pub ContextId, pub String);

impl Handler<NameContext> for LogForwarder {
    type Result = ();

    fn handle(&mut self, msg: NameContext, _: &mut Self::Context) {
        self.names.insert(msg.0, msg.1);
    }
}

impl Handler<crate::event::ContextEvent> for LogForwarder {
    type Result = ();

    /// A dead context's name is forgotten (the map stays as big as the tree).
    fn handle(&mut self, e: crate::event::ContextEvent, _: &mut Self::Context) {
        if let crate::event::ContextEvent::Died { id, .. } = e {
            self.names.remove(&id);
        }
    }
}

/// FORWARD_LOG as the LogForwarder takes it, decoded by the typed
/// adapter ([`crate::serve`]). A record that does not decode is refused
/// by the adapter to the Router, which counts it and warns once per source
/// per interval.
pub type LogRequest = Request<LogRecord, ()>;

impl Handler<LogRequest> for LogForwarder {
    type Result = Result<(), CallError>;

    fn handle(&mut self, req: LogRequest, _: &mut Self::Context) -> Self::Result {
        let rec = req.value;
        let name = self
            .names
            .get(&req.src)
            .cloned()
            .unwrap_or_else(|| format!("context{}", req.src));
        // Everything in the record came from the child: escaped before it
        // reaches a terminal or a log file.
        let logger = sanitize::field(&rec.logger);
        let message = sanitize::text_bytes(&rec.message);
        let log = self.log.new(o!("ctx" => name, "logger" => logger));
        match rec.level {
            0..=10 => debug!(log, "{}", message),
            11..=20 => info!(log, "{}", message),
            21..=30 => warn!(log, "{}", message),
            _ => error!(log, "{}", message),
        }
        Ok(())
    }
}

impl LogForwarder {
    /// Starts the LogForwarder and serves FORWARD_LOG with it on `router`
    /// through the typed adapter, subscribed to the router's context
    /// events (it forgets a dead context's name).
    pub fn serve(self, router: &Addr<Router>, me: ContextId) -> Addr<LogForwarder> {
        let addr = self.start();
        router.do_send(Subscribe(addr.clone().recipient()));
        // Every child of a fleet logging at once: the bound is the
        // mailbox's; past it the Router counts and warns.
        let opts = ServeOptions::default().with_max_in_flight(SERVICE_MAILBOX);
        serve_with(
            router,
            me,
            handles::FORWARD_LOG,
            addr.clone().recipient(),
            opts,
        );
        addr
    }
}
