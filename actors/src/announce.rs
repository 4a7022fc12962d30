//! The seed's ADD_ROUTE rule, in one place: when a context is created
//! through another, every ancestor that did not create it learns a route,
//! the master included.

use actix::Addr;
use econtext_wire::messages::AddRoute;
use econtext_wire::{handles, ContextId};

use crate::context::Context;
use crate::router::{AddLocalRoute, Router};

/// `(to, target, via)`: one ADD_ROUTE sent.
pub type AddRouteRecord = (ContextId, ContextId, ContextId);

/// Announces `target`, created by `ancestors[0]`, to `ancestors[1..]`
/// (which end with the master). `via` on each is that ancestor's child on
/// the path down. Frames on one link keep their order, so anything the
/// master sends to `target` afterwards finds the routes in place.
pub async fn announce_route(
    master: &Addr<Router>,
    target: ContextId,
    ancestors: &[ContextId],
) -> Vec<AddRouteRecord> {
    let mut sent = Vec::new();
    let mut path = vec![target];
    path.extend(ancestors.iter().copied());
    for w in path.windows(2).skip(1) {
        let (via, to) = (w[0], w[1]);
        sent.push((to, target, via));
        if to == handles::MASTER_ID {
            let _ = master
                .send(AddLocalRoute {
                    target,
                    via,
                    parent: ancestors[0],
                })
                .await;
        } else {
            let ctx = Context::new(to, "", handles::MASTER_ID, master.clone());
            let _ = ctx
                .send(handles::ADD_ROUTE, &AddRoute { target, via })
                .await;
        }
    }
    sent
}
