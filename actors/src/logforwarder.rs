//! LogForwarder: FORWARD_LOG records from every context into slog.

use std::collections::HashMap;
use std::time::Instant;

use actix::prelude::*;
use econtext_wire::{handles, sanitize, CallError, ContextId};
use slog::{debug, error, info, o, warn, Logger};

use crate::logbudget::{cut_record, cut_shown, LogBudget, LogLimits, DEFAULT_LIMITS, REPORT_EVERY};
use crate::router::{Router, SubscribeService, SERVICE_MAILBOX};
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

/// A logger name longer than this is cut (it is shown on every line).
const MAX_LOGGER: usize = 256;

/// Logs each record under `ctx.<name>`, at the record's level, within
/// each context's [`LogBudget`]: past it, records are counted and one
/// line a second says how many were suppressed (docs/SECURITY.md).
pub struct LogForwarder {
    log: Logger,
    names: HashMap<ContextId, String>,
    limits: LogLimits,
    /// One per context that logged lately; as many as the tree has
    /// contexts (sources are checked by the Router), and a quiet one's is
    /// forgotten at the next tick.
    budgets: HashMap<ContextId, LogBudget>,
}

impl LogForwarder {
    pub fn new(log: Logger) -> Self {
        LogForwarder {
            log,
            names: HashMap::new(),
            limits: DEFAULT_LIMITS,
            budgets: HashMap::new(),
        }
    }

    /// The same with other limits than [`DEFAULT_LIMITS`].
    pub fn with_limits(mut self, limits: LogLimits) -> Self {
        self.limits = limits;
        self
    }

    fn name(&self, id: ContextId) -> String {
        self.names
            .get(&id)
            .cloned()
            .unwrap_or_else(|| format!("context{id}"))
    }

    /// The summary line for `id`, if it is due (or `force`d).
    fn report(&mut self, id: ContextId, now: Instant, force: bool) {
        let Some(s) = self.budgets.get_mut(&id).and_then(|b| b.report(now, force)) else {
            return;
        };
        let log = self
            .log
            .new(o!("ctx" => self.name(id), "logger" => "econtext"));
        warn!(log, "{}", s);
    }

    /// Every due summary; budgets back to full with nothing to say are
    /// forgotten.
    fn tick(&mut self, now: Instant) {
        let ids: Vec<ContextId> = self.budgets.keys().copied().collect();
        for id in ids {
            self.report(id, now, false);
        }
        self.budgets.retain(|_, b| !b.idle(now));
    }
}

impl Actor for LogForwarder {
    type Context = actix::Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        // Room for every record the adapter lets in flight.
        ctx.set_mailbox_capacity(SERVICE_MAILBOX);
        // Summaries for sources that went quiet while suppressed.
        ctx.run_interval(REPORT_EVERY, |me, _| me.tick(Instant::now()));
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
            self.report(id, Instant::now(), true);
            self.budgets.remove(&id);
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
        let now = Instant::now();
        // Everything in the record came from the child: escaped before it
        // reaches a terminal or a log file, and counted as escaped (up to
        // four times its raw length), cut again to MAX_RECORD.
        let (bytes, cut) = cut_record(&rec.message);
        let logger =
            sanitize::field_bytes(&rec.logger.as_bytes()[..rec.logger.len().min(MAX_LOGGER)]);
        let mut message = sanitize::text_bytes(bytes);
        let cut = cut_shown(&mut message) || cut;
        let limits = self.limits;
        let budget = self
            .budgets
            .entry(req.src)
            .or_insert_with(|| LogBudget::new(limits, now));
        if !budget.admit(message.len() + logger.len(), now) {
            return Ok(());
        }
        // Before the first record that passes after some were suppressed.
        self.report(req.src, now, false);
        if cut {
            message.push_str(" [record too long, cut]");
        }
        let log = self
            .log
            .new(o!("ctx" => self.name(req.src), "logger" => logger));
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
        router.do_send(SubscribeService(addr.clone().recipient()));
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
