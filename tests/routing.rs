//! Routing through a tree of contexts, with simulated in-process Rust
//! contexts (real framing and HMAC over in-memory pipes).

mod common;

use std::time::{Duration, Instant};

use common::{run, Capture};
use econtext::testing::SimTree;
use econtext::{Channel, DeadReason, Error, Functions};
use econtext_wire::ContextId;
use futures::StreamExt;

fn functions() -> Functions {
    let mut f = Functions::default();
    f.register("math.add", |(a, b): (i64, i64)| a + b);
    f.register_fallible("math.div", |(a, b): (i64, i64)| {
        a.checked_div(b).ok_or("division by zero")
    });
    f.register_async("time.sleep", |(secs,): (f64,)| async move {
        tokio::time::sleep(Duration::from_secs_f64(secs)).await;
    });
    f
}

/// The seed's example tree ("How econtext Works", Message Routing).
async fn seed_tree(log: slog::Logger) -> SimTree {
    let mut t = SimTree::new(log);
    let f = functions();
    let bastion = t.spawn("bastion", 0, f.clone()).await;
    let dc1 = t.spawn("dc1", bastion, f.clone()).await;
    let dc2 = t.spawn("dc2", bastion, f.clone()).await;
    let rack12 = t.spawn("rack12", dc1, f.clone()).await;
    let rack22 = t.spawn("rack22", dc2, f.clone()).await;
    let node12b = t.spawn("node12b", rack12, f.clone()).await;
    let node22a = t.spawn("node22a", rack22, f.clone()).await;
    t.spawn("sudo:node12b:webapp", node12b, f.clone()).await;
    t.spawn("sudo:node22a:webapp", node22a, f).await;
    t
}

fn names(t: &SimTree, ids: &[ContextId]) -> Vec<String> {
    ids.iter().map(|&i| t.name(i)).collect()
}

#[test]
fn seed_example_add_routes_go_exactly_where_the_seed_says() {
    run(async {
        let t = seed_tree(Capture::default().logger()).await;
        let webapp = t.id("sudo:node12b:webapp");
        let mut to: Vec<String> = t
            .add_routes()
            .iter()
            .filter(|(_, target, _)| *target == webapp)
            .map(|(to, _, _)| t.name(*to))
            .collect();
        to.sort();
        // "it must send ADD_ROUTE messages to rack12, dc1, bastion, and
        // itself; node12b does not require an ADD_ROUTE message".
        assert_eq!(to, ["bastion", "dc1", "master", "rack12"]);
        // A direct child of the master needs none at all.
        let bastion = t.id("bastion");
        assert!(t
            .add_routes()
            .iter()
            .all(|(_, target, _)| *target != bastion));
    });
}

#[test]
fn message_between_leaves_follows_the_seed_route_hop_by_hop() {
    run(async {
        let t = seed_tree(Capture::default().logger()).await;
        let from = t.id("sudo:node22a:webapp");
        let to = t.id("sudo:node12b:webapp");
        let mut inbox = Channel::open(&t.router(to), to, None).await.unwrap();
        t.clear_trace();
        t.context_from(from, to)
            .send(inbox.handle(), &"hello across the tree")
            .await
            .unwrap();
        let got = tokio::time::timeout(Duration::from_secs(2), inbox.next())
            .await
            .expect("delivered")
            .unwrap();
        assert_eq!(got.decode::<String>().unwrap(), "hello across the tree");
        assert_eq!(got.src, from);
        let hops: Vec<ContextId> = t
            .trace()
            .iter()
            .filter(|(_, h)| h.handle == inbox.handle() && h.dst == to)
            .map(|(at, _)| *at)
            .collect();
        assert_eq!(
            names(&t, &hops),
            [
                "sudo:node22a:webapp",
                "node22a",
                "rack22",
                "dc2",
                "bastion",
                "dc1",
                "rack12",
                "node12b",
                "sudo:node12b:webapp"
            ]
        );
    });
}

#[test]
fn call_three_hops_down_returns_result_and_errors_as_call_error() {
    run(async {
        let t = seed_tree(Capture::default().logger()).await;
        let rack12 = t.context(t.id("rack12"));
        assert_eq!(
            rack12.call::<i64>("math", "add", (40, 2)).await.unwrap(),
            42
        );
        let err = rack12.call::<i64>("math", "div", (1, 0)).await.unwrap_err();
        match err {
            Error::Remote(e) => assert!(e.message.contains("division by zero"), "{e:?}"),
            other => panic!("expected CallError, got {other:?}"),
        }
        let err = rack12.call::<i64>("math", "nope", ()).await.unwrap_err();
        assert!(
            matches!(err, Error::Remote(ref e) if e.type_name == "AttributeError"),
            "{err:?}"
        );
        // Five hops down, too.
        let deep = t.context(t.id("sudo:node12b:webapp"));
        assert_eq!(deep.call::<i64>("math", "add", (1, 1)).await.unwrap(), 2);
    });
}

#[test]
fn cutting_rack12_mid_call_fails_pending_calls_under_it_within_100ms() {
    run(async {
        let mut t = seed_tree(Capture::default().logger()).await;
        let under: Vec<ContextId> = ["rack12", "node12b", "sudo:node12b:webapp"]
            .iter()
            .map(|n| t.id(n))
            .collect();
        let mut pending = Vec::new();
        for &id in &under {
            pending.push(
                t.context(id)
                    .call_with("time", "sleep")
                    .args((30.0,))
                    .unwrap()
                    .start::<()>()
                    .await
                    .unwrap(),
            );
        }
        let other = t.context(t.id("sudo:node22a:webapp"));
        let other_pending = other
            .call_with("time", "sleep")
            .args((0.3,))
            .unwrap()
            .start::<()>()
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
        let cut_at = Instant::now();
        t.cut(t.id("rack12"));
        for p in pending {
            let r = tokio::time::timeout(Duration::from_millis(100), p.result())
                .await
                .expect("Dead within 100 ms");
            assert!(matches!(r, Err(Error::Dead { .. })), "{r:?}");
        }
        eprintln!(
            "all pending calls under rack12 failed {:?} after the cut",
            cut_at.elapsed()
        );
        // The other branch keeps working, including the call in flight.
        other_pending.result().await.unwrap();
        assert_eq!(other.call::<i64>("math", "add", (2, 2)).await.unwrap(), 4);
        // New calls to the dead subtree fail at once.
        let r = t.context(under[2]).call::<i64>("math", "add", (1, 1)).await;
        assert!(matches!(r, Err(Error::Dead { .. })), "{r:?}");
    });
}

#[test]
fn sibling_cannot_call_a_sibling() {
    run(async {
        let t = seed_tree(Capture::default().logger()).await;
        let dc1 = t.id("dc1");
        let dc2 = t.id("dc2");
        let r = t
            .context_from(dc1, dc2)
            .call::<i64>("math", "add", (1, 1))
            .await;
        match r {
            Err(Error::Dead { reason, .. }) => {
                assert!(matches!(reason, DeadReason::Refused(_)), "{reason}")
            }
            other => panic!("expected a refusal, got {other:?}"),
        }
        // A child calling its parent is refused too.
        let r = t
            .context_from(dc1, t.id("bastion"))
            .call::<i64>("math", "add", (1, 1))
            .await;
        assert!(matches!(r, Err(Error::Dead { .. })), "{r:?}");
    });
}
