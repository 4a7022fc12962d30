//! LogForwarder: FORWARD_LOG records from every context into slog.

use std::collections::HashMap;

use actix::prelude::*;
use econtext_wire::sanitize;
use econtext_wire::ContextId;
use slog::{debug, error, info, o, warn, Logger};

use crate::message::Message;
use crate::refusals::RefusalLog;

/// FORWARD_LOG as received ([`econtext_wire::messages::ForwardLog`]),
/// whose message may also be bytes: a line of a child's stderr that is not
/// UTF-8 comes as it was read, and the sanitizer shows the bad bytes
/// escaped (`\xNN`) instead of anyone replacing them.
#[derive(serde::Deserialize)]
struct Record {
    logger: String,
    level: u8,
    #[serde(with = "serde_bytes")]
    message: Vec<u8>,
}

/// Logs each record under `ctx.<name>`, at the record's level.
pub struct LogForwarder {
    log: Logger,
    names: HashMap<ContextId, String>,
    /// Malformed records: one warning per source per interval.
    malformed: RefusalLog,
}

impl LogForwarder {
    pub fn new(log: Logger) -> Self {
        LogForwarder {
            log,
            names: HashMap::new(),
            malformed: RefusalLog::new(crate::refusals::DEFAULT_INTERVAL),
        }
    }
}

impl Actor for LogForwarder {
    type Context = actix::Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        // A burst from a whole fleet fits; past it senders get Dead
        // (Overloaded), never silence.
        ctx.set_mailbox_capacity(crate::router::SERVICE_MAILBOX);
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

impl Handler<Message> for LogForwarder {
    type Result = ();

    fn handle(&mut self, msg: Message, _: &mut Self::Context) {
        let Ok(rec) = msg.decode::<Record>() else {
            if !msg.is_dead() {
                if let Some(n) = self.malformed.note(msg.src, std::time::Instant::now()) {
                    warn!(self.log, "malformed FORWARD_LOG"; "src" => msg.src, "suppressed" => n);
                }
            }
            return;
        };
        let name = self
            .names
            .get(&msg.src)
            .cloned()
            .unwrap_or_else(|| format!("context{}", msg.src));
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
    }
}
