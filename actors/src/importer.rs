//! The Importer: answers GET_MODULE. In the master it serves modules from a
//! [`ModuleResolver`] (the bootstrap crate's finder over the module path);
//! it remembers what each child already has, so a module crosses a link at
//! most once.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use actix::prelude::*;
use econtext_wire::messages::{ModuleReply, ModuleSource};
use econtext_wire::{payload, ContextId};
use slog::{debug, warn, Logger};

use crate::message::Message;
use crate::router::{send_reply_encoded, Router};

/// Finds modules by dotted name.
pub trait ModuleResolver: 'static {
    /// The module, then related modules not in `already_sent`; None when
    /// the module is unknown.
    fn resolve(
        &mut self,
        fullname: &str,
        already_sent: &HashSet<String>,
    ) -> Option<Vec<ModuleSource>>;
    /// The search path, for error messages in the child.
    fn describe_path(&self) -> String;
}

/// Counters a user can print (`econtext call --stats`).
#[derive(Debug, Default)]
pub struct ImporterStats {
    pub get_module_requests: AtomicU64,
    pub modules_sent: AtomicU64,
    pub bytes_sent: AtomicU64,
    pub not_found: AtomicU64,
}

impl ImporterStats {
    pub fn snapshot(&self) -> [(&'static str, u64); 4] {
        [
            (
                "get_module_requests",
                self.get_module_requests.load(Ordering::Relaxed),
            ),
            ("modules_sent", self.modules_sent.load(Ordering::Relaxed)),
            ("bytes_sent", self.bytes_sent.load(Ordering::Relaxed)),
            ("modules_not_found", self.not_found.load(Ordering::Relaxed)),
        ]
    }
}

pub struct Importer {
    me: ContextId,
    router: Addr<Router>,
    resolver: Box<dyn ModuleResolver>,
    sent: HashMap<ContextId, HashSet<String>>,
    stats: Arc<ImporterStats>,
    log: Logger,
}

impl Importer {
    pub fn new(
        me: ContextId,
        router: Addr<Router>,
        resolver: Box<dyn ModuleResolver>,
        stats: Arc<ImporterStats>,
        log: Logger,
    ) -> Self {
        Importer {
            me,
            router,
            resolver,
            sent: HashMap::new(),
            stats,
            log,
        }
    }
}

impl Actor for Importer {
    type Context = actix::Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        // A burst from a whole fleet fits; past it senders get Dead
        // (Overloaded), never silence.
        ctx.set_mailbox_capacity(crate::router::SERVICE_MAILBOX);
    }
}

impl Handler<crate::event::ContextEvent> for Importer {
    type Result = ();

    /// What a dead requester had is forgotten: its successor (an ID is
    /// reused after quarantine) starts with nothing.
    fn handle(&mut self, e: crate::event::ContextEvent, _: &mut Self::Context) {
        if let crate::event::ContextEvent::Died { id, .. } = e {
            self.sent.remove(&id);
        }
    }
}

impl Handler<Message> for Importer {
    type Result = ();

    fn handle(&mut self, msg: Message, _: &mut Self::Context) {
        if msg.is_dead() {
            return;
        }
        let fullname: String = match msg.decode() {
            Ok(n) => n,
            Err(e) => {
                warn!(self.log, "malformed GET_MODULE"; "src" => msg.src, "error" => %e);
                return;
            }
        };
        self.stats
            .get_module_requests
            .fetch_add(1, Ordering::Relaxed);
        // What a child has is what went down the stream it sits behind:
        // key by requester (intermediates forward on their children's
        // behalf and cache themselves).
        let sent = self.sent.entry(msg.src).or_default();
        let reply: ModuleReply = self.resolver.resolve(&fullname, sent);
        match &reply {
            Some(mods) => {
                for m in mods {
                    sent.insert(m.fullname.clone());
                    self.stats.modules_sent.fetch_add(1, Ordering::Relaxed);
                    self.stats
                        .bytes_sent
                        .fetch_add(m.source.len() as u64, Ordering::Relaxed);
                }
                debug!(self.log, "serving module"; "name" => &fullname, "with_related" => mods.len() - 1, "to" => msg.src);
            }
            None => {
                self.stats.not_found.fetch_add(1, Ordering::Relaxed);
                debug!(self.log, "module not found"; "name" => &fullname, "path" => self.resolver.describe_path());
            }
        }
        send_reply_encoded(&self.router, self.me, &msg, payload::encode(&reply));
    }
}
