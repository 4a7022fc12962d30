//! Where a frame goes next: the seed's routing rules as a plain struct.

use econtext_wire::ContextId;

use crate::keys::{OwnKeyMap, OwnKeySet};

/// The decision for one frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// Addressed to this context.
    Local,
    /// Write it on the stream to this directly connected peer.
    Stream(ContextId),
    /// No stream, no route, no parent: the sender gets Dead.
    Nowhere,
}

/// The routing state of one context.
///
/// Rules, in order (the seed's "Message Routing"): a frame for this context
/// is local; else the stream directly connected to `dst`; else the stream an
/// ADD_ROUTE named for `dst`; else the parent stream; else nowhere.
///
/// The table also remembers which context each known context was created
/// through (`parents`), so that a death can be expanded into the whole
/// subtree that died with it.
#[derive(Debug, Default, Clone)]
pub struct RoutingTable {
    me: ContextId,
    parent: Option<ContextId>,
    direct: OwnKeySet<ContextId>,
    routes: OwnKeyMap<ContextId, ContextId>,
    parents: OwnKeyMap<ContextId, ContextId>,
}

impl RoutingTable {
    pub fn new(me: ContextId, parent: Option<ContextId>) -> Self {
        let mut t = RoutingTable {
            me,
            parent,
            ..Default::default()
        };
        if let Some(p) = parent {
            t.direct.insert(p);
        }
        t
    }

    pub fn me(&self) -> ContextId {
        self.me
    }

    pub fn parent(&self) -> Option<ContextId> {
        self.parent
    }

    pub fn is_direct(&self, peer: ContextId) -> bool {
        self.direct.contains(&peer)
    }

    pub fn route(&self, dst: ContextId) -> Route {
        if dst == self.me {
            Route::Local
        } else if self.direct.contains(&dst) {
            Route::Stream(dst)
        } else if let Some(&via) = self.routes.get(&dst) {
            Route::Stream(via)
        } else if let Some(p) = self.parent {
            Route::Stream(p)
        } else {
            Route::Nowhere
        }
    }

    /// A stream to a child was attached.
    pub fn add_child_stream(&mut self, child: ContextId) {
        self.direct.insert(child);
        self.routes.remove(&child);
        self.parents.insert(child, self.me);
    }

    /// ADD_ROUTE: frames for `target` go the way frames for `via` go.
    /// `via` may itself be routed; the route is stored resolved to the
    /// directly connected peer. Returns false when `via` is unknown here.
    pub fn add_route(&mut self, target: ContextId, via: ContextId) -> bool {
        let peer = if self.direct.contains(&via) {
            via
        } else if let Some(&p) = self.routes.get(&via) {
            p
        } else {
            return false;
        };
        if Some(peer) == self.parent {
            // Routing something "down" toward our own parent is how a
            // malicious child would steal traffic; upward is the default.
            return false;
        }
        self.routes.insert(target, peer);
        true
    }

    /// Records that `child` was created through `creator` (for subtree
    /// expansion on death), without changing routes.
    pub fn note_parent(&mut self, child: ContextId, creator: ContextId) {
        self.parents.insert(child, creator);
    }

    /// The context `id` was created through, when known.
    pub fn creator(&self, id: ContextId) -> Option<ContextId> {
        self.parents.get(&id).copied()
    }

    /// Every (context, the context it was created through) known.
    pub fn creators(&self) -> impl Iterator<Item = (ContextId, ContextId)> + '_ {
        self.parents.iter().map(|(&c, &p)| (c, p))
    }

    /// Entries held for other contexts (for checks that maps are pruned).
    pub fn known(&self) -> usize {
        self.direct.len() + self.routes.len() + self.parents.len()
    }

    /// The contexts that die with `root`: `root` and everything created
    /// through it, deepest first (children before their parents).
    pub fn subtree(&self, root: ContextId) -> Vec<ContextId> {
        let mut out = vec![root];
        let mut i = 0;
        while i < out.len() {
            let p = out[i];
            let mut kids: Vec<ContextId> = self
                .parents
                .iter()
                .filter(|&(&c, &par)| par == p && c != p)
                .map(|(&c, _)| c)
                .collect();
            kids.sort_unstable();
            out.extend(kids);
            i += 1;
        }
        // Also every target routed through `root` (routes learned by
        // ADD_ROUTE without parent information).
        if self.direct.contains(&root) {
            let mut extra: Vec<ContextId> = self
                .routes
                .iter()
                .filter(|&(t, &via)| via == root && !out.contains(t))
                .map(|(&t, _)| t)
                .collect();
            extra.sort_unstable();
            out.extend(extra);
        }
        out.reverse();
        out
    }

    /// Forgets `dead` contexts entirely. Returns true when the parent
    /// stream was among them (a child context then shuts itself down).
    pub fn forget(&mut self, dead: &[ContextId]) -> bool {
        let mut lost_parent = false;
        for d in dead {
            if Some(*d) == self.parent {
                lost_parent = true;
                self.parent = None;
            }
            self.direct.remove(d);
            self.routes.remove(d);
            self.parents.remove(d);
        }
        lost_parent
    }

    /// Direct child streams (every direct peer but the parent).
    pub fn children(&self) -> Vec<ContextId> {
        let mut v: Vec<ContextId> = self
            .direct
            .iter()
            .copied()
            .filter(|&c| Some(c) != self.parent)
            .collect();
        v.sort_unstable();
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_direct_route_parent_then_nowhere() {
        let mut t = RoutingTable::new(5, Some(1));
        t.add_child_stream(7);
        assert!(t.add_route(9, 7));
        assert_eq!(t.route(5), Route::Local);
        assert_eq!(t.route(7), Route::Stream(7));
        assert_eq!(t.route(9), Route::Stream(7));
        assert_eq!(t.route(42), Route::Stream(1));
        let master = RoutingTable::new(0, None);
        assert_eq!(master.route(42), Route::Nowhere);
    }

    #[test]
    fn route_via_a_routed_context_resolves_to_the_direct_peer() {
        let mut t = RoutingTable::new(0, None);
        t.add_child_stream(1);
        assert!(t.add_route(2, 1));
        assert!(t.add_route(3, 2));
        assert_eq!(t.route(3), Route::Stream(1));
        assert!(!t.add_route(4, 99), "unknown via is refused");
    }

    #[test]
    fn route_toward_the_parent_is_refused() {
        let mut t = RoutingTable::new(5, Some(1));
        assert!(!t.add_route(9, 1));
    }

    #[test]
    fn subtree_lists_children_first() {
        let mut t = RoutingTable::new(0, None);
        t.add_child_stream(1);
        t.note_parent(2, 1);
        t.note_parent(3, 2);
        t.note_parent(4, 1);
        t.add_route(2, 1);
        t.add_route(3, 1);
        t.add_route(4, 1);
        let dead = t.subtree(1);
        assert_eq!(dead.len(), 4);
        assert_eq!(*dead.last().unwrap(), 1);
        let pos = |x| dead.iter().position(|&d| d == x).unwrap();
        assert!(pos(3) < pos(2));
        t.forget(&dead);
        assert_eq!(t.route(3), Route::Nowhere);
    }
}
