//! Subscriptions to [`ContextEvent`]s: which events a subscriber wants
//! ([`Scope`]), where they go (a bounded [`EventStream`] or a user's
//! actor), and how a subscription ends (drop the stream, or
//! [`super::Supervision::unsubscribe`]).

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll};

use actix::{Addr, Recipient};
use econtext_wire::ContextId;
use tokio::sync::mpsc;

use super::hub::{Hub, Unsubscribe};
use crate::event::ContextEvent;

/// How many events an [`EventStream`] holds for a slow reader. Past it the
/// newest events are not queued and [`EventStream::missed`] counts them.
pub const EVENT_QUEUE: usize = 1024;

/// Identifies one subscription (stream, monitor or actor).
pub type SubscriptionId = u64;

/// Which events a subscription receives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// Every context of the tree.
    Tree,
    /// One context and every context created through it, at any depth.
    Subtree(ContextId),
    /// One context (a monitor): its death, its restarts, its give-up.
    Context(ContextId),
}

/// The contexts an event concerns (a restart concerns the old ID and the
/// new one).
pub(crate) fn event_ids(e: &ContextEvent) -> [ContextId; 2] {
    match e {
        ContextEvent::Restarted { id, old, .. } => [*id, *old],
        other => [other.id(), other.id()],
    }
}

impl Scope {
    /// Whether `e` is for this scope; `parents` is who created whom.
    pub(crate) fn wants(&self, e: &ContextEvent, parents: &HashMap<ContextId, ContextId>) -> bool {
        let ids = event_ids(e);
        match *self {
            Scope::Tree => true,
            Scope::Context(c) => ids.contains(&c),
            Scope::Subtree(root) => ids.iter().any(|&id| descends(id, root, parents)),
        }
    }
}

/// True when `id` is `root` or was created through it.
fn descends(mut id: ContextId, root: ContextId, parents: &HashMap<ContextId, ContextId>) -> bool {
    // The tree holds at most 65536 contexts, so the walk is bounded even
    // if the map were ever corrupted into a cycle.
    for _ in 0..=u16::MAX as u32 {
        if id == root {
            return true;
        }
        match parents.get(&id) {
            Some(&p) if p != id => id = p,
            _ => return false,
        }
    }
    false
}

/// Where a subscription's events go.
pub(crate) enum EventSink {
    Stream {
        tx: mpsc::Sender<ContextEvent>,
        missed: Arc<AtomicU64>,
    },
    Actor(Recipient<ContextEvent>),
}

impl EventSink {
    /// Delivers one event; false when the subscriber is gone for good.
    pub(crate) fn deliver(&self, e: &ContextEvent) -> bool {
        match self {
            EventSink::Stream { tx, missed } => match tx.try_send(e.clone()) {
                Ok(()) => true,
                Err(mpsc::error::TrySendError::Full(_)) => {
                    missed.fetch_add(1, Ordering::Relaxed);
                    true
                }
                Err(mpsc::error::TrySendError::Closed(_)) => false,
            },
            EventSink::Actor(r) => {
                if !r.connected() {
                    return false;
                }
                r.do_send(e.clone());
                true
            }
        }
    }
}

/// A subscription's events as a `futures::Stream`. Dropping it
/// unsubscribes. It ends if the supervision hub stops.
pub struct EventStream {
    pub(crate) id: SubscriptionId,
    pub(crate) rx: mpsc::Receiver<ContextEvent>,
    pub(crate) missed: Arc<AtomicU64>,
    pub(crate) hub: Addr<Hub>,
}

impl EventStream {
    /// This subscription's ID.
    pub fn id(&self) -> SubscriptionId {
        self.id
    }

    /// Events not queued because this stream was [`EVENT_QUEUE`] behind.
    pub fn missed(&self) -> u64 {
        self.missed.load(Ordering::Relaxed)
    }
}

impl futures::Stream for EventStream {
    type Item = ContextEvent;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Option<ContextEvent>> {
        self.rx.poll_recv(cx)
    }
}

impl Drop for EventStream {
    fn drop(&mut self) {
        self.hub.do_send(Unsubscribe(self.id));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::DeadReason;

    fn died(id: ContextId) -> ContextEvent {
        ContextEvent::Died {
            id,
            reason: DeadReason::Killed,
        }
    }

    #[test]
    fn subtree_scope_takes_descendants_and_nothing_else() {
        let parents: HashMap<_, _> = [(1, 0), (2, 1), (3, 2), (4, 0)].into_iter().collect();
        let s = Scope::Subtree(1);
        assert!(s.wants(&died(1), &parents));
        assert!(s.wants(&died(3), &parents));
        assert!(!s.wants(&died(4), &parents));
        assert!(!s.wants(&died(0), &parents));
        assert!(Scope::Tree.wants(&died(4), &parents));
    }

    #[test]
    fn a_monitor_hears_its_context_and_its_restarts() {
        let parents = HashMap::new();
        let m = Scope::Context(5);
        assert!(m.wants(&died(5), &parents));
        assert!(!m.wants(&died(6), &parents));
        let r = ContextEvent::Restarted {
            id: 9,
            old: 5,
            name: "x".into(),
            restarts: 1,
        };
        assert!(m.wants(&r, &parents));
    }
}
