//! The supervisor tree driven by a SimTree: shape, events, kill, monitors.

use std::time::Duration;

use futures::StreamExt;

use super::*;
use crate::dispatch::Functions;
use crate::event::{ContextEvent, DeadReason};
use crate::testing::SimTree;

fn functions() -> Functions {
    let mut f = Functions::default();
    f.register("math.add", |(a, b): (i64, i64)| a + b);
    f
}

fn log() -> slog::Logger {
    slog::Logger::root(slog::Discard, slog::o!())
}

async fn next(s: &mut EventStream) -> ContextEvent {
    tokio::time::timeout(Duration::from_secs(5), s.next())
        .await
        .expect("an event within 5 s")
        .expect("stream open")
}

async fn settle(sup: &Supervision, supervisors: usize) {
    for _ in 0..250 {
        if sup.stats().await.supervisors == supervisors {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("supervisors: {:?}, want {supervisors}", sup.stats().await);
}

#[actix_rt::test]
async fn sim_tree_supervisors_mirror_the_tree_and_cut_dies_children_first() {
    let mut tree = SimTree::new(log());
    let sup = tree.supervision().clone();
    let mut all = sup.events(Scope::Tree).await;
    let web = tree.spawn("web", 0, functions()).await;
    let db = tree.spawn("db", web, functions()).await;
    let other = tree.spawn("other", 0, functions()).await;
    let mut under_web = sup.events(Scope::Subtree(web)).await;
    for want in [web, db, other] {
        assert!(matches!(next(&mut all).await, ContextEvent::Started { id, .. } if id == want));
    }
    settle(&sup, 4).await;
    let shape = sup.tree().await;
    assert_eq!(shape.find(web).unwrap().children[0].id, db);
    assert_eq!(shape.children.len(), 2);

    tree.cut(web);
    let first = next(&mut under_web).await;
    let second = next(&mut under_web).await;
    assert!(
        matches!(first, ContextEvent::Died { id, .. } if id == db),
        "{first:?}"
    );
    assert!(
        matches!(second, ContextEvent::Died { id, .. } if id == web),
        "{second:?}"
    );
    settle(&sup, 2).await;

    let reason = sup.kill(other).await;
    assert_eq!(reason, DeadReason::Killed);
    settle(&sup, 1).await;
    assert_eq!(sup.stats().await.contexts, 0);
}

#[actix_rt::test]
async fn an_unsubscribed_monitor_hears_nothing_more() {
    let mut tree = SimTree::new(log());
    let sup = tree.supervision().clone();
    let a = tree.spawn("a", 0, functions()).await;
    let mon = sup.monitor(a).await;
    let id = mon.id();
    drop(mon);
    let mut kept = sup.monitor(a).await;
    sup.unsubscribe(id).await;
    assert_eq!(sup.stats().await.subscriptions, 1);
    assert_eq!(sup.kill(a).await, DeadReason::Killed);
    assert!(matches!(next(&mut kept).await, ContextEvent::Died { id, .. } if id == a));
}

#[actix_rt::test]
async fn a_supervised_sim_node_comes_back_after_a_cut_and_its_handle_calls_again() {
    let mut tree = SimTree::new(log());
    let sup = tree.supervision().clone();
    let web = tree.spawn("web", 0, functions()).await;
    let policy = RestartPolicy::new(Restart::Transient).backoff(Backoff::none());
    let db = tree.supervise("db", web, policy, functions).await;
    let mut events = sup.events(Scope::Subtree(web)).await;
    let old = db.current().id();
    tree.cut(old);
    loop {
        if let ContextEvent::Restarted { old: o, id, .. } = next(&mut events).await {
            assert_eq!(o, old);
            assert_ne!(id, old);
            break;
        }
    }
    let sum: i64 = db.call("math", "add", (2, 3)).await.unwrap();
    assert_eq!(sum, 5);
    let shape = sup.tree().await;
    assert_eq!(shape.find(web).unwrap().children[0].id, db.current().id());
}
