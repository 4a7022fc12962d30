//! Users' own actors on handles, and watching contexts die.

mod common;

use std::time::Duration;

use actix::prelude::*;
use common::{run, Capture};
use econtext::actors::router::Subscribe;
use econtext::actors::serve::{serve, Request};
use econtext::testing::SimTree;
use econtext::{CallError, ContextEvent, Error, Functions};

struct Counter(u64);

impl Actor for Counter {
    type Context = Context<Self>;
}

impl Handler<Request<u64, u64>> for Counter {
    type Result = Result<u64, CallError>;

    fn handle(&mut self, r: Request<u64, u64>, _: &mut Context<Self>) -> Self::Result {
        if r.value == 13 {
            panic!("unlucky number");
        }
        if r.value == 0 {
            return Err(CallError {
                type_name: "ValueError".into(),
                message: "zero".into(),
                traceback: String::new(),
            });
        }
        self.0 += r.value;
        Ok(self.0)
    }
}

#[test]
fn user_actor_on_a_handle_answers_typed_requests() {
    run(async {
        let mut t = SimTree::new(Capture::default().logger());
        let node = t.spawn("node", 0, Functions::default()).await;
        let handle = serve::<u64, u64, _>(&t.router(node), node, None, Counter(0).start())
            .await
            .unwrap();
        let ctx = t.context(node);
        let timeout = Some(Duration::from_secs(2));
        assert_eq!(ctx.request::<u64>(handle, &5u64, timeout).await.unwrap(), 5);
        assert_eq!(ctx.request::<u64>(handle, &2u64, timeout).await.unwrap(), 7);
        let e = ctx
            .request::<u64>(handle, &0u64, timeout)
            .await
            .unwrap_err();
        assert!(
            matches!(e, Error::Remote(ref c) if c.type_name == "ValueError"),
            "{e:?}"
        );
        let e = ctx
            .request::<u64>(handle, &"not a number", timeout)
            .await
            .unwrap_err();
        assert!(
            matches!(e, Error::Remote(ref c) if c.type_name == "TypeError"),
            "{e:?}"
        );
    });
}

#[test]
fn panic_in_a_users_handler_is_an_error_for_its_caller() {
    run(async {
        let mut t = SimTree::new(Capture::default().logger());
        let node = t.spawn("node", 0, Functions::default()).await;
        let handle = serve::<u64, u64, _>(&t.router(node), node, None, Counter(0).start())
            .await
            .unwrap();
        let ctx = t.context(node);
        let timeout = Some(Duration::from_secs(2));
        let e = ctx
            .request::<u64>(handle, &13u64, timeout)
            .await
            .unwrap_err();
        assert!(
            matches!(e, Error::Remote(ref c) if c.type_name == "panic"),
            "{e:?}"
        );
        // The actor is gone: later requests fail at once, never hang.
        let e = ctx
            .request::<u64>(handle, &1u64, timeout)
            .await
            .unwrap_err();
        assert!(
            matches!(e, Error::Remote(ref c) if c.type_name == "panic"),
            "{e:?}"
        );
        // The context itself is fine.
        assert!(ctx.call::<bool>("econtext", "ping", ()).await.unwrap());
    });
}

/// Passes on the ids of the contexts that die.
struct Watcher(tokio::sync::mpsc::UnboundedSender<u16>);

impl Actor for Watcher {
    type Context = Context<Self>;
}

impl Handler<ContextEvent> for Watcher {
    type Result = ();

    fn handle(&mut self, e: ContextEvent, _: &mut Context<Self>) {
        if let ContextEvent::Died { id, .. } = e {
            let _ = self.0.send(id);
        }
    }
}

#[test]
fn watchers_hear_of_deaths_children_first() {
    run(async {
        let mut t = SimTree::new(Capture::default().logger());
        let a = t.spawn("a", 0, Functions::default()).await;
        let b = t.spawn("b", a, Functions::default()).await;
        let c = t.spawn("c", b, Functions::default()).await;
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        t.master()
            .send(Subscribe(Watcher(tx).start().recipient()))
            .await
            .unwrap();
        let dead_b = t.context(b);
        t.cut(a);
        let reason = tokio::time::timeout(Duration::from_secs(1), dead_b.dead())
            .await
            .unwrap();
        assert_eq!(reason, econtext::actors::DeadReason::Closed);
        let mut order = Vec::new();
        while order.len() < 3 {
            let m = tokio::time::timeout(Duration::from_secs(1), rx.recv())
                .await
                .unwrap()
                .unwrap();
            order.push(m);
        }
        assert_eq!(order, vec![c, b, a], "children before parents");
    });
}

/// Holds every request it gets until the test ends.
struct Sink;

impl Actor for Sink {
    type Context = Context<Self>;
}

impl Handler<Request<u64, u64>> for Sink {
    type Result = ResponseFuture<Result<u64, CallError>>;

    fn handle(&mut self, _: Request<u64, u64>, _: &mut Context<Self>) -> Self::Result {
        Box::pin(futures::future::pending())
    }
}

#[test]
fn a_handler_that_never_answers_holds_a_bounded_number_of_requests() {
    use econtext::actors::serve::{MAX_IN_FLIGHT, OVERLOADED};
    run(async {
        let mut t = SimTree::new(Capture::default().logger());
        let node = t.spawn("node", 0, Functions::default()).await;
        let handle = serve::<u64, u64, _>(&t.router(node), node, None, Sink.start())
            .await
            .unwrap();
        let ctx = t.context(node);
        let timeout = Some(Duration::from_secs(30));
        // Fill the handle: these never return.
        let mut held = Vec::new();
        for i in 0..MAX_IN_FLIGHT as u64 {
            let ctx = ctx.clone();
            held.push(actix::spawn(async move {
                let _ = ctx.request::<u64>(handle, &i, timeout).await;
            }));
        }
        // Past the bound, every request is refused at once, typed.
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        let (mut refused, mut held_probes) = (0, 0);
        while refused < 10 {
            // A probe that went in before the held ones filled the handle
            // is held too (and times out here).
            let probe = Some(Duration::from_millis(500));
            match ctx.request::<u64>(handle, &1u64, probe).await {
                Err(Error::Remote(c)) if c.type_name == OVERLOADED => refused += 1,
                Err(Error::Timeout { .. }) => {
                    assert_eq!(refused, 0, "held after a refusal");
                    held_probes += 1;
                }
                other => panic!("{other:?}"),
            }
            assert!(std::time::Instant::now() < deadline, "never refused");
        }
        // Exactly MAX_IN_FLIGHT are held: a held probe cost one of the
        // others its place (it was refused), nothing more.
        let done = held.iter().filter(|h| h.is_finished()).count();
        assert!(done <= held_probes, "{done} of the held ones ended");
    });
}

/// The built-in services are served through the same adapter: Dead on a
/// Rust context's CALL_FUNCTION (the seed's way of ending a context) goes
/// to the Dispatcher's `on_dead` and the context shuts down, while a
/// malformed call is a TypeError for its caller.
#[test]
fn dead_on_a_rust_contexts_call_function_shuts_it_down_a_bad_call_is_a_type_error() {
    use econtext::actors::router::Send;
    use econtext::wire::{handles, payload, Dead, Frame, Header};
    run(async {
        let mut t = SimTree::new(Capture::default().logger());
        let node = t.spawn("node", 0, Functions::default()).await;
        let ctx = t.context(node);
        let timeout = Some(Duration::from_secs(5));
        let e = ctx
            .request::<u64>(handles::CALL_FUNCTION, &"not a call", timeout)
            .await
            .unwrap_err();
        assert!(
            matches!(e, Error::Remote(ref c) if c.type_name == "TypeError"),
            "{e:?}"
        );
        let dead = payload::encode(&Dead::new("shutting down")).unwrap();
        let frame = Frame::new(Header::new(node, 0, handles::CALL_FUNCTION, 0), dead);
        t.master().send(Send(frame)).await.unwrap();
        let why = tokio::time::timeout(Duration::from_secs(10), ctx.dead())
            .await
            .expect("the context ended");
        assert_eq!(why, econtext::actors::DeadReason::Disconnected, "{why:?}");
    });
}
