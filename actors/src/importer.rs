//! The Importer: answers GET_MODULE. In the master it serves modules from a
//! [`ModuleResolver`] (the bootstrap crate's finder over the module path);
//! it remembers what each child already has, so a module crosses a link at
//! most once. A requester has at most [`MAX_OUTSTANDING_REPLIES`] replies
//! not yet written to its stream; past that it is refused (an ImportError
//! record) without the importer resolving or encoding anything for it.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use actix::prelude::*;
use bytes::Bytes;
use econtext_wire::messages::{ModuleReply, ModuleSource};
use econtext_wire::{handles, payload, CallError, ContextId};
use slog::{debug, warn, Logger};

use crate::refusals::{RefusalLog, DEFAULT_INTERVAL};
use crate::router::{Router, SubscribeService, SERVICE_MAILBOX};
use crate::serve::{serve_with, Encoded, Request, ServeOptions};

/// Replies to one requester queued and not yet written to its stream, at
/// most. A child that asks without reading (or faster than it reads) is
/// refused past this: each further request costs the master a small
/// refusal, not a resolved and encoded module. Imports in one context are
/// a few at a time (one per importing thread; an intermediate asks once
/// per name for its whole subtree), far below this.
pub const MAX_OUTSTANDING_REPLIES: usize = 32;

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
    /// Requests refused because the requester had
    /// [`MAX_OUTSTANDING_REPLIES`] replies not yet written.
    pub refused_outstanding: AtomicU64,
}

impl ImporterStats {
    pub fn snapshot(&self) -> [(&'static str, u64); 5] {
        [
            (
                "get_module_requests",
                self.get_module_requests.load(Ordering::Relaxed),
            ),
            ("modules_sent", self.modules_sent.load(Ordering::Relaxed)),
            ("bytes_sent", self.bytes_sent.load(Ordering::Relaxed)),
            ("modules_not_found", self.not_found.load(Ordering::Relaxed)),
            (
                "module_requests_refused",
                self.refused_outstanding.load(Ordering::Relaxed),
            ),
        ]
    }
}

pub struct Importer {
    me: ContextId,
    router: Addr<Router>,
    resolver: Box<dyn ModuleResolver>,
    sent: HashMap<ContextId, HashSet<String>>,
    in_flight: InFlight,
    refusals: RefusalLog,
    stats: Arc<ImporterStats>,
    log: Logger,
}

/// Counts each requester's replies not yet written: a reply's bytes hold
/// a clone of the requester's token until the link's writer has written
/// the frame (or the frame was dropped), so the count is the token's
/// other owners. No I/O, no clock.
#[derive(Debug, Default)]
struct InFlight(HashMap<ContextId, Arc<()>>);

/// Reply bytes that keep their requester's token while they exist.
struct Tracked {
    data: Bytes,
    _token: Arc<()>,
}

impl AsRef<[u8]> for Tracked {
    fn as_ref(&self) -> &[u8] {
        &self.data
    }
}

impl InFlight {
    fn count(&self, requester: ContextId) -> usize {
        self.0
            .get(&requester)
            .map_or(0, |token| Arc::strong_count(token) - 1)
    }

    fn track(&mut self, requester: ContextId, data: Bytes) -> Bytes {
        let token = self.0.entry(requester).or_default().clone();
        Bytes::from_owner(Tracked {
            data,
            _token: token,
        })
    }

    fn forget(&mut self, requester: ContextId) {
        self.0.remove(&requester);
    }
}

/// What a refused requester gets: a record with no file, whose source is
/// the reason, which the child raises as ImportError (the form the module
/// finder uses for names it will not serve; docs/PROTOCOL.md, "Modules").
fn refusal(fullname: &str) -> ModuleReply {
    use std::io::Write;
    let why = format!(
        "{fullname}: refused by the master: this context has {MAX_OUTSTANDING_REPLIES} \
         module replies not yet read"
    );
    let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::fast());
    z.write_all(why.as_bytes()).expect("in-memory write");
    Some(vec![ModuleSource {
        fullname: fullname.to_string(),
        source: z.finish().expect("in-memory write"),
        ..ModuleSource::default()
    }])
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
            in_flight: InFlight::default(),
            refusals: RefusalLog::new(DEFAULT_INTERVAL),
            stats,
            log,
        }
    }
}

impl Actor for Importer {
    type Context = actix::Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        // Room for every request the adapter lets in flight.
        ctx.set_mailbox_capacity(SERVICE_MAILBOX);
    }
}

impl Handler<crate::event::ContextEvent> for Importer {
    type Result = ();

    /// What a dead requester had is forgotten: its successor (an ID is
    /// reused after quarantine) starts with nothing.
    fn handle(&mut self, e: crate::event::ContextEvent, _: &mut Self::Context) {
        if let crate::event::ContextEvent::Died { id, .. } = e {
            self.sent.remove(&id);
            self.in_flight.forget(id);
            self.refusals.forget(id);
        }
    }
}

/// GET_MODULE as the Importer takes it: the dotted name, decoded by the
/// typed adapter ([`crate::serve`]); the answer is the encoded
/// [`ModuleReply`], its bytes tracked until written.
pub type ModuleRequest = Request<String, Encoded>;

impl Handler<ModuleRequest> for Importer {
    type Result = Result<Encoded, CallError>;

    fn handle(&mut self, req: ModuleRequest, _: &mut Self::Context) -> Self::Result {
        let (src, fullname) = (req.src, req.value);
        self.stats
            .get_module_requests
            .fetch_add(1, Ordering::Relaxed);
        if self.in_flight.count(src) >= MAX_OUTSTANDING_REPLIES {
            return self.refuse(src, &fullname);
        }
        // What a child has is what went down the stream it sits behind:
        // key by requester (intermediates forward on their children's
        // behalf and cache themselves).
        let sent = self.sent.entry(src).or_default();
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
                // The names of the records with code or data (built only
                // when debug is on; not the "not here" announcements), so
                // a test can check what went down, e.g. never the stdlib.
                let served = slog::FnValue(|_: &slog::Record| {
                    mods.iter()
                        .filter(|m| !m.filename.is_empty())
                        .map(|m| m.fullname.as_str())
                        .collect::<Vec<_>>()
                        .join(",")
                });
                debug!(self.log, "serving module"; "name" => &fullname, "with_related" => mods.len() - 1, "to" => src, "served" => served);
            }
            None => {
                self.stats.not_found.fetch_add(1, Ordering::Relaxed);
                debug!(self.log, "module not found"; "name" => &fullname, "path" => self.resolver.describe_path());
            }
        }
        encoded(payload::encode(&reply).map(|d| self.in_flight.track(src, d)))
    }
}

fn encoded(data: Result<Bytes, econtext_wire::WireError>) -> Result<Encoded, CallError> {
    data.map(Encoded).map_err(|e| CallError {
        type_name: "TypeError".into(),
        message: format!("module reply cannot be encoded: {e}"),
        traceback: String::new(),
    })
}

impl Importer {
    /// Starts the Importer and serves GET_MODULE with it on `router`
    /// through the typed adapter, subscribed to the router's context
    /// events (it forgets what a dead context had).
    pub fn serve(self) -> Addr<Importer> {
        let (router, me) = (self.router.clone(), self.me);
        let addr = self.start();
        router.do_send(SubscribeService(addr.clone().recipient()));
        // The whole fleet may ask at once: the bound is the mailbox's.
        let opts = ServeOptions::default().with_max_in_flight(SERVICE_MAILBOX);
        serve_with(
            &router,
            me,
            handles::GET_MODULE,
            addr.clone().recipient(),
            opts,
        );
        addr
    }

    /// Counted, answered with an ImportError, logged once per requester
    /// per interval.
    fn refuse(&mut self, src: ContextId, fullname: &str) -> Result<Encoded, CallError> {
        self.stats
            .refused_outstanding
            .fetch_add(1, Ordering::Relaxed);
        if let Some(suppressed) = self.refusals.note(src, Instant::now()) {
            warn!(self.log, "module requests refused: too many replies not yet read";
                  "src" => src, "outstanding" => MAX_OUTSTANDING_REPLIES,
                  "suppressed_since_last" => suppressed);
        }
        encoded(payload::encode(&refusal(fullname)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reply_counts_as_outstanding_until_its_bytes_are_dropped() {
        let mut f = InFlight::default();
        let a = f.track(7, Bytes::from_static(b"module"));
        let b = f.track(7, Bytes::from_static(b"other"));
        let _c = f.track(8, Bytes::new());
        assert_eq!((f.count(7), f.count(8), f.count(9)), (2, 1, 0));
        assert_eq!(&a[..], b"module", "the bytes are the reply's");
        let shared = a.clone();
        drop(a);
        assert_eq!(f.count(7), 2, "a clone of the frame's bytes still counts");
        drop((shared, b));
        assert_eq!(f.count(7), 0);
        f.forget(8);
        assert_eq!(f.count(8), 0);
    }

    #[test]
    fn a_refusal_is_a_record_the_child_raises_as_import_error() {
        use std::io::Read;
        let mods = refusal("pkg.mod").expect("a record");
        assert_eq!(mods.len(), 1);
        let rec = &mods[0];
        assert_eq!(rec.fullname, "pkg.mod");
        assert!(
            rec.filename.is_empty(),
            "no file: the child raises the text"
        );
        let mut why = String::new();
        flate2::read::ZlibDecoder::new(&rec.source[..])
            .read_to_string(&mut why)
            .unwrap();
        assert!(why.contains("refused") && why.contains("pkg.mod"), "{why}");
    }
}
