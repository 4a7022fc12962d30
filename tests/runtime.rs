//! The runtime core as a user sees it: typed lifecycle events, bounded
//! queues, IDs, embedding.

mod common;

use std::time::Duration;

use actix::prelude::*;
use common::{run, Capture};
use econtext::actors::router::Subscribe;
use econtext::testing::SimTree;
use econtext::{ContextEvent, DeadReason, Functions};

struct Events(tokio::sync::mpsc::UnboundedSender<ContextEvent>);

impl Actor for Events {
    type Context = Context<Self>;
}

impl Handler<ContextEvent> for Events {
    type Result = ();

    fn handle(&mut self, e: ContextEvent, _: &mut Context<Self>) {
        let _ = self.0.send(e);
    }
}

async fn next(rx: &mut tokio::sync::mpsc::UnboundedReceiver<ContextEvent>) -> ContextEvent {
    tokio::time::timeout(Duration::from_secs(5), rx.recv())
        .await
        .expect("an event within 5 s")
        .expect("the subscriber lives")
}

#[test]
fn subscribers_see_starts_then_deaths_children_first_with_typed_reasons() {
    run(async {
        let mut t = SimTree::new(Capture::default().logger());
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        t.master()
            .send(Subscribe(Events(tx).start().recipient()))
            .await
            .unwrap();
        let a = t.spawn("a", 0, Functions::default()).await;
        let b = t.spawn("b", a, Functions::default()).await;
        assert_eq!(
            next(&mut rx).await,
            ContextEvent::Started {
                id: a,
                name: "a".into(),
                parent: 0
            }
        );
        assert_eq!(
            next(&mut rx).await,
            ContextEvent::Started {
                id: b,
                name: "b".into(),
                parent: a
            }
        );
        t.cut(a);
        for id in [b, a] {
            assert_eq!(
                next(&mut rx).await,
                ContextEvent::Died {
                    id,
                    reason: DeadReason::Closed
                }
            );
        }
        assert_eq!(t.context(b).dead().await, DeadReason::Closed);
    });
}
