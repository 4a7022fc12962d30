//! GET_MODULE in a Rust intermediate: a child's request is answered from
//! this context's cache, else asked of our parent *as ourselves* (so the
//! master, which sends each module once per requester, sends it once for
//! this whole subtree), exactly as the Python intermediate's forwarder
//! does. Concurrent requests for one name share one request upward.
//!
//! [`ForwarderCore`] is the logic, with no I/O and no clock; the
//! [`ModuleForwarder`] actor pumps it. Only our parent's reply is taken
//! (the reply handle accepts nothing else), and the cache stores only the
//! records of that reply: what the parent sent for the name and the
//! related names it chose to send with it.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use actix::prelude::*;
use econtext_wire::messages::{ModuleReply, ModuleSource};
use econtext_wire::{handles, payload, CallError, ContextId, Frame, Handle, Header};
use futures::future::{self, FutureExt};
use slog::{debug, warn, Logger};
use tokio::sync::oneshot;

use crate::handles::Accept;
use crate::router::{Register, Router, Send, Sink, SubscribeService};
use crate::serve::{serve_with, Request, ServeOptions};

/// Longest name a child may ask for.
pub const MAX_NAME: usize = 512;
/// Names being fetched from our parent at once, at most; past it a child
/// is told "not found" (a child choosing names must not grow our memory).
pub const MAX_PENDING: usize = 1024;
/// How long a request upward may take before the waiting children are
/// told "not found" (they have their own, equal, import timeout).
pub const UPWARD_TIMEOUT: Duration = Duration::from_secs(30);

/// What the forwarder must do next.
#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    /// Reply to a child's request.
    Answer {
        to: ContextId,
        reply_to: Handle,
        reply: ModuleReply,
    },
    /// Ask our parent for this name.
    Ask(String),
}

/// The forwarder's state: the cache, who has what, who waits for what.
#[derive(Debug, Default)]
pub struct ForwarderCore {
    /// Records by name, as our parent sent them; None: known missing.
    cache: HashMap<String, Option<ModuleSource>>,
    /// Name -> the related names our parent sent with it.
    related: HashMap<String, Vec<String>>,
    /// Requester -> names already sent to it.
    sent: HashMap<ContextId, HashSet<String>>,
    /// Name -> children waiting for our parent's answer.
    pending: HashMap<String, Vec<(ContextId, Handle)>>,
}

impl ForwarderCore {
    /// A child's GET_MODULE.
    pub fn request(&mut self, src: ContextId, reply_to: Handle, name: String) -> Vec<Step> {
        if reply_to == 0 {
            return Vec::new();
        }
        if self.cache.contains_key(&name) {
            return vec![self.answer(src, reply_to, &name)];
        }
        if let Some(waiting) = self.pending.get_mut(&name) {
            waiting.push((src, reply_to));
            return Vec::new();
        }
        if name.len() > MAX_NAME || self.pending.len() >= MAX_PENDING {
            return vec![Step::Answer {
                to: src,
                reply_to,
                reply: None,
            }];
        }
        self.pending.insert(name.clone(), vec![(src, reply_to)]);
        vec![Step::Ask(name)]
    }

    /// Our parent's reply for `name`: Ok(reply) is cached, Err (Dead, a
    /// reply that does not decode, no reply in time) is not.
    pub fn fetched(&mut self, name: &str, reply: Result<ModuleReply, ()>) -> Vec<Step> {
        match reply {
            Ok(Some(records)) => {
                self.related.insert(
                    name.to_string(),
                    records.iter().skip(1).map(|r| r.fullname.clone()).collect(),
                );
                let first_is_name = records.first().is_some_and(|r| r.fullname == name);
                for r in records {
                    self.cache.insert(r.fullname.clone(), Some(r));
                }
                if !first_is_name {
                    self.cache.entry(name.to_string()).or_insert(None);
                }
            }
            Ok(None) => {
                self.cache.insert(name.to_string(), None);
            }
            Err(()) => {}
        }
        let waiting = self.pending.remove(name).unwrap_or_default();
        waiting
            .into_iter()
            .map(|(src, reply_to)| self.answer(src, reply_to, name))
            .collect()
    }

    /// A dead requester's memory goes (a reused ID starts empty).
    pub fn forget(&mut self, ctx: ContextId) {
        self.sent.remove(&ctx);
    }

    fn answer(&mut self, to: ContextId, reply_to: Handle, name: &str) -> Step {
        let reply = match self.cache.get(name) {
            Some(Some(rec)) => {
                let sent = self.sent.entry(to).or_default();
                let mut out = vec![rec.clone()];
                sent.insert(name.to_string());
                for r in self.related.get(name).into_iter().flatten() {
                    if let Some(Some(x)) = self.cache.get(r) {
                        if sent.insert(r.clone()) {
                            out.push(x.clone());
                        }
                    }
                }
                Some(out)
            }
            _ => None,
        };
        Step::Answer {
            to,
            reply_to,
            reply,
        }
    }
}

/// The actor on a Rust intermediate's GET_MODULE handle.
pub struct ModuleForwarder {
    me: ContextId,
    parent: ContextId,
    router: Addr<Router>,
    core: ForwarderCore,
    /// Children's requests waiting for an answer the core will give (a
    /// child may reuse a reply handle: each is answered in turn).
    waiting: HashMap<(ContextId, Handle), Vec<oneshot::Sender<ModuleReply>>>,
    log: Logger,
}

/// GET_MODULE as the forwarder takes it from a child: the name, decoded
/// by the typed adapter ([`crate::serve`]), with the requester and its
/// reply handle the per-hop cache keys on.
pub type ForwardRequest = Request<String, ModuleReply>;

impl ModuleForwarder {
    pub fn new(me: ContextId, parent: ContextId, router: Addr<Router>, log: Logger) -> Self {
        ModuleForwarder {
            me,
            parent,
            router,
            core: ForwarderCore::default(),
            waiting: HashMap::new(),
            log,
        }
    }

    /// Starts the forwarder and serves GET_MODULE with it on its router
    /// through the typed adapter, subscribed to the router's context events
    /// (it forgets what a dead child had). Requests in flight are bounded
    /// like every served handle's.
    pub fn serve(self) -> Addr<ModuleForwarder> {
        let (router, me) = (self.router.clone(), self.me);
        let addr = self.start();
        router.do_send(SubscribeService(addr.clone().recipient()));
        serve_with::<String, ModuleReply>(
            &router,
            me,
            handles::GET_MODULE,
            addr.clone().recipient(),
            ServeOptions::default(),
        );
        addr
    }

    fn run(&mut self, steps: Vec<Step>, ctx: &mut actix::Context<Self>) {
        for step in steps {
            match step {
                Step::Answer {
                    to,
                    reply_to,
                    reply,
                } => {
                    let key = (to, reply_to);
                    let Some(waiters) = self.waiting.get_mut(&key) else {
                        continue;
                    };
                    let tx = waiters.remove(0);
                    if waiters.is_empty() {
                        self.waiting.remove(&key);
                    }
                    let _ = tx.send(reply);
                }
                Step::Ask(name) => self.ask(name, ctx),
            }
        }
    }

    fn ask(&mut self, name: String, ctx: &mut actix::Context<Self>) {
        debug!(self.log, "asking our parent for a module"; "name" => &name);
        let (tx, rx) = oneshot::channel();
        let router = self.router.clone();
        let (me, parent) = (self.me, self.parent);
        let data = payload::encode(&name).expect("a string encodes");
        let fut = async move {
            let h = router
                .send(Register {
                    handle: None,
                    sink: Sink::Once(tx),
                    persistent: false,
                    waiting_on: Some(parent),
                    accept: Accept::From(parent),
                    bulk: false,
                })
                .await
                .map_err(|_| ())?;
            router
                .send(Send(Frame::new(
                    Header::new(parent, me, handles::GET_MODULE, h),
                    data,
                )))
                .await
                .map_err(|_| ())?;
            let msg = tokio::time::timeout(UPWARD_TIMEOUT, rx)
                .await
                .map_err(|_| ())?
                .map_err(|_| ())?;
            if msg.is_dead() {
                return Err(());
            }
            msg.decode::<ModuleReply>().map_err(|_| ())
        };
        ctx.spawn(fut.into_actor(self).map(move |reply, act, ctx| {
            if reply.is_err() {
                warn!(act.log, "no module reply from our parent"; "name" => &name);
            }
            let steps = act.core.fetched(&name, reply);
            act.run(steps, ctx);
        }));
    }
}

impl Actor for ModuleForwarder {
    type Context = actix::Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        // Room for every request the adapter lets in flight.
        ctx.set_mailbox_capacity(crate::router::SERVICE_MAILBOX);
    }
}

impl Handler<ForwardRequest> for ModuleForwarder {
    type Result = ResponseFuture<Result<ModuleReply, CallError>>;

    fn handle(&mut self, req: ForwardRequest, ctx: &mut Self::Context) -> Self::Result {
        if req.reply_to == 0 {
            // Nobody to answer: nothing to fetch.
            return Box::pin(future::ready(Ok(None)));
        }
        let (tx, rx) = oneshot::channel();
        self.waiting
            .entry((req.src, req.reply_to))
            .or_default()
            .push(tx);
        let steps = self.core.request(req.src, req.reply_to, req.value);
        self.run(steps, ctx);
        // The core answers every request it takes (a failed or late fetch
        // as "not found"); a waiter dropped unanswered is "not found" too.
        Box::pin(rx.map(|r| Ok(r.unwrap_or(None))))
    }
}
impl Handler<crate::event::ContextEvent> for ModuleForwarder {
    type Result = ();

    fn handle(&mut self, e: crate::event::ContextEvent, _: &mut Self::Context) {
        if let crate::event::ContextEvent::Died { id, .. } = e {
            self.core.forget(id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(name: &str) -> ModuleSource {
        ModuleSource {
            fullname: name.into(),
            filename: format!("/m/{name}.py"),
            is_package: false,
            source: vec![1],
            children: vec![],
            requires_python: String::new(),
            master_python: String::new(),
        }
    }

    #[test]
    fn one_request_upward_for_concurrent_children_then_the_cache() {
        let mut f = ForwarderCore::default();
        assert_eq!(f.request(5, 1000, "pkg".into()), [Step::Ask("pkg".into())]);
        assert!(
            f.request(6, 1001, "pkg".into()).is_empty(),
            "shares the request"
        );
        let steps = f.fetched("pkg", Ok(Some(vec![rec("pkg"), rec("pkg.a")])));
        assert_eq!(steps.len(), 2);
        for s in &steps {
            let Step::Answer { reply: Some(r), .. } = s else {
                panic!("{s:?}")
            };
            assert_eq!(r.len(), 2, "with the related module");
        }
        // A third child: from the cache, nothing upward.
        let s = f.request(7, 1002, "pkg.a".into());
        assert!(matches!(&s[..], [Step::Answer { reply: Some(r), .. }] if r.len() == 1));
        // Already sent to 5: the related module does not go again.
        let s = f.request(5, 1003, "pkg".into());
        assert!(matches!(&s[..], [Step::Answer { reply: Some(r), .. }] if r.len() == 1));
    }

    #[test]
    fn failures_are_not_cached_and_names_are_bounded() {
        let mut f = ForwarderCore::default();
        f.request(5, 1000, "x".into());
        let s = f.fetched("x", Err(()));
        assert!(matches!(&s[..], [Step::Answer { reply: None, .. }]));
        assert_eq!(f.request(5, 1001, "x".into()), [Step::Ask("x".into())]);
        let long = "a".repeat(MAX_NAME + 1);
        assert!(matches!(
            &f.request(5, 1002, long)[..],
            [Step::Answer { reply: None, .. }]
        ));
        for i in 0..MAX_PENDING * 2 {
            f.request(5, 2000 + i as u32, format!("n{i}"));
        }
        assert!(f.pending.len() <= MAX_PENDING);
    }
}
