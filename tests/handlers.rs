//! Users' own actors on handles, and watching contexts die.

mod common;

use std::time::Duration;

use actix::prelude::*;
use common::{run, Capture};
use econtext::actors::router::{ContextDied, Watch};
use econtext::actors::serve::{serve, Request};
use econtext::testing::SimTree;
use econtext::{CallError, Error, Functions};

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

struct Watcher(tokio::sync::mpsc::UnboundedSender<ContextDied>);

impl Actor for Watcher {
    type Context = Context<Self>;
}

impl Handler<ContextDied> for Watcher {
    type Result = ();

    fn handle(&mut self, m: ContextDied, _: &mut Context<Self>) {
        let _ = self.0.send(m);
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
            .send(Watch(Watcher(tx).start().recipient()))
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
            order.push(m.id);
        }
        assert_eq!(order, vec![c, b, a], "children before parents");
    });
}
