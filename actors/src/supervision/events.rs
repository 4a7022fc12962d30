//! Subscriptions to [`ContextEvent`]s: which events a subscriber wants
//! ([`Scope`]), where they go (a bounded [`EventStream`], or a user's
//! actor through a bounded queue: [`super::queue`]), and how a subscription ends (drop the stream, or
//! [`super::Supervision::unsubscribe`]).

use std::collections::HashSet;
use std::pin::Pin;
use std::task::{Context as TaskContext, Poll};
use std::time::Instant;

use actix::{Addr, Recipient};
use econtext_wire::ContextId;

use super::hub::{Hub, Unsubscribe};
use super::queue::{Pushed, SharedQueue};
use crate::event::ContextEvent;

/// How many events a subscription holds for a slow reader by default.
/// Past it the newest events are not queued: they are counted
/// ([`EventStream::missed`]) and the reader gets one
/// [`ContextEvent::Lagged`] with the count where the gap is.
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

/// A subscription's [`Scope`] as the hub applies it. A subtree scope
/// holds its members: seeded from the master router's core (the one
/// record of the tree's parentage) when the subscription is made, grown by
/// the Started events of contexts created through a member, and shrunk
/// when a member's supervisor is gone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Filter {
    Tree,
    Context(ContextId),
    Subtree {
        root: ContextId,
        members: HashSet<ContextId>,
    },
}

impl Filter {
    /// `members`: the subtree's contexts now (subtree scopes only).
    pub(crate) fn new(scope: Scope, members: Vec<ContextId>) -> Filter {
        match scope {
            Scope::Tree => Filter::Tree,
            Scope::Context(c) => Filter::Context(c),
            Scope::Subtree(root) => {
                let mut members: HashSet<ContextId> = members.into_iter().collect();
                members.insert(root);
                Filter::Subtree { root, members }
            }
        }
    }

    /// Whether `e` is for this subscription.
    pub(crate) fn wants(&self, e: &ContextEvent) -> bool {
        let ids = event_ids(e);
        match self {
            Filter::Tree => true,
            Filter::Context(c) => ids.contains(c),
            Filter::Subtree { members, .. } => ids.iter().any(|id| members.contains(id)),
        }
    }

    /// `id` started, created through `parent`.
    pub(crate) fn started(&mut self, id: ContextId, parent: ContextId) {
        if let Filter::Subtree { root, members } = self {
            if members.contains(&parent) {
                members.insert(id);
            } else if id != *root {
                // A reused ID, now elsewhere in the tree.
                members.remove(&id);
            }
        }
    }

    /// `id`'s supervisor is done with it: nothing more comes about it.
    pub(crate) fn gone(&mut self, id: ContextId) {
        if let Filter::Subtree { root, members } = self {
            if id != *root {
                members.remove(&id);
            }
        }
    }
}

/// How a user's subscription is queued ([`super::Supervision::subscribe_with`]).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct SubscribeOptions {
    /// Events held for a subscriber that is behind (the Lagged marker
    /// included); past it events are counted and the subscriber gets one
    /// [`ContextEvent::Lagged`] with the count. Default [`EVENT_QUEUE`].
    pub capacity: usize,
}

impl Default for SubscribeOptions {
    fn default() -> Self {
        SubscribeOptions {
            capacity: EVENT_QUEUE,
        }
    }
}

impl SubscribeOptions {
    pub fn capacity(mut self, capacity: usize) -> Self {
        self.capacity = capacity;
        self
    }
}

/// Where a subscription's events go: its bounded queue, read by an
/// [`EventStream`] or by the pump that feeds a user's actor. Dropping the
/// sink (the subscription ended, or the hub stopped) closes the queue.
pub(crate) struct EventSink {
    pub(crate) queue: SharedQueue,
    /// A user's actor, fed by a pump the hub starts.
    pub(crate) actor: Option<Recipient<ContextEvent>>,
}

impl EventSink {
    /// Queues one event; None when the subscriber is gone for good.
    pub(crate) fn deliver(&self, e: &ContextEvent, now: Instant) -> Option<Pushed> {
        if self.actor.as_ref().is_some_and(|a| !a.connected()) {
            return None;
        }
        self.queue.push(e.clone(), now)
    }

    /// Starts feeding the actor, if this sink has one (inside the hub's
    /// actix system).
    pub(crate) fn start(&self) {
        if let Some(to) = self.actor.clone() {
            actix::spawn(pump(self.queue.clone(), to));
        }
    }
}

impl Drop for EventSink {
    fn drop(&mut self) {
        self.queue.close();
    }
}

/// Hands an actor its events one at a time, each after it has handled the
/// one before: what it has not read waits in the bounded queue, not in its
/// (unbounded for `do_send`) mailbox.
async fn pump(queue: SharedQueue, to: Recipient<ContextEvent>) {
    while let Some(e) = futures::future::poll_fn(|cx| queue.poll_pop(cx)).await {
        if to.send(e).await.is_err() {
            break;
        }
    }
    queue.close();
}

/// A subscription's events as a `futures::Stream`. Dropping it
/// unsubscribes. It ends if the supervision hub stops.
pub struct EventStream {
    pub(crate) id: SubscriptionId,
    pub(crate) queue: SharedQueue,
    pub(crate) hub: Addr<Hub>,
}

impl EventStream {
    /// This subscription's ID.
    pub fn id(&self) -> SubscriptionId {
        self.id
    }

    /// Events not queued because this stream was [`EVENT_QUEUE`] behind
    /// (each gap is also told in the stream as [`ContextEvent::Lagged`]).
    pub fn missed(&self) -> u64 {
        self.queue.missed_total()
    }
}

impl futures::Stream for EventStream {
    type Item = ContextEvent;

    fn poll_next(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Option<ContextEvent>> {
        self.queue.poll_pop(cx)
    }
}

impl Drop for EventStream {
    fn drop(&mut self) {
        self.queue.close();
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
        // 1 and 2 were there when it subscribed; 3 starts under 2 later,
        // 4 under the master.
        let mut s = Filter::new(Scope::Subtree(1), vec![1, 2]);
        s.started(3, 2);
        s.started(4, 0);
        assert!(s.wants(&died(1)));
        assert!(s.wants(&died(3)));
        assert!(!s.wants(&died(4)));
        assert!(!s.wants(&died(0)));
        assert!(Filter::new(Scope::Tree, vec![]).wants(&died(4)));
        // 3 is gone; its ID comes back elsewhere: not ours any more.
        s.gone(3);
        assert!(!s.wants(&died(3)));
        s.started(2, 4);
        assert!(!s.wants(&died(2)), "a reused ID under another parent");
        // The root stays, so that its own restart is heard.
        s.gone(1);
        assert!(s.wants(&died(1)));
    }

    #[test]
    fn a_monitor_hears_its_context_and_its_restarts() {
        let m = Filter::new(Scope::Context(5), vec![]);
        assert!(m.wants(&died(5)));
        assert!(!m.wants(&died(6)));
        let r = ContextEvent::Restarted {
            id: 9,
            old: 5,
            name: "x".into(),
            restarts: 1,
        };
        assert!(m.wants(&r));
    }
}
