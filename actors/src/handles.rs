//! The handle registry of one context, as a plain struct.
//!
//! Dynamic handles are random in `[FIRST_DYNAMIC, u32::MAX]` so that a
//! hostile context cannot guess the reply handle of a call made to another
//! context, and every entry says which sources it accepts ([`Accept`]).

use std::collections::hash_map::Entry;

use econtext_wire::{handles::FIRST_DYNAMIC, ContextId, Handle};

use crate::keys::OwnKeyMap;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// Which senders a handle takes messages from. Local senders (this
/// context itself) are always accepted.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Accept {
    /// Anyone (well-known service handles, channels opened for anyone).
    #[default]
    Any,
    /// Only this context: a one-shot reply handle remembers the context
    /// its request went to; a Channel its peer. Dead from a context on the
    /// path to it (a hop that lost the route) is accepted too.
    From(ContextId),
    /// Only these contexts.
    AnyOf(Vec<ContextId>),
}

impl Accept {
    /// Whether a value from `src` is accepted (before path rules).
    pub fn allows(&self, src: ContextId) -> bool {
        match self {
            Accept::Any => true,
            Accept::From(c) => *c == src,
            Accept::AnyOf(cs) => cs.contains(&src),
        }
    }

    /// The contexts this accepts, for path rules (Dead from a hop).
    pub fn peers(&self) -> &[ContextId] {
        match self {
            Accept::Any => &[],
            Accept::From(c) => std::slice::from_ref(c),
            Accept::AnyOf(cs) => cs,
        }
    }
}

/// One registered handle: where its messages go, whether it outlives its
/// first message, which context (if any) it is waiting on, so that the
/// death of that context can be delivered to it as Dead, and whose
/// messages it takes.
#[derive(Debug)]
pub struct HandleEntry<S> {
    pub sink: S,
    pub persistent: bool,
    pub waiting_on: Option<ContextId>,
    pub accept: Accept,
    /// Takes bulk frames (file chunks whose bytes no frame MAC covers:
    /// its owner authenticates them); every other handle refuses them.
    pub bulk: bool,
}

/// Handle number allocation and lookup. `S` is the sink type (the Router
/// uses [`crate::router::Sink`]); keeping it generic keeps this testable.
#[derive(Debug)]
pub struct HandleTable<S> {
    rng: StdRng,
    entries: OwnKeyMap<Handle, HandleEntry<S>>,
}

impl<S> Default for HandleTable<S> {
    fn default() -> Self {
        HandleTable::with_seed(rand::random())
    }
}

impl<S> HandleTable<S> {
    /// A table whose handle numbers come from `seed` (tests use a fixed
    /// one; the Router a random one).
    pub fn with_seed(seed: u64) -> Self {
        HandleTable {
            rng: StdRng::seed_from_u64(seed),
            entries: OwnKeyMap::default(),
        }
    }

    /// Registers `sink` on a fresh, unpredictable dynamic handle.
    pub fn allocate(
        &mut self,
        sink: S,
        persistent: bool,
        waiting_on: Option<ContextId>,
        accept: Accept,
    ) -> Handle {
        loop {
            let h = self.rng.gen_range(FIRST_DYNAMIC..=Handle::MAX);
            if let Entry::Vacant(v) = self.entries.entry(h) {
                v.insert(HandleEntry {
                    sink,
                    persistent,
                    waiting_on,
                    accept,
                    bulk: false,
                });
                return h;
            }
        }
    }

    /// Registers `sink` on `drawn` when that dynamic handle is free (one
    /// the requester drew itself, unpredictably), on a fresh one
    /// otherwise: a handle in use is never shared. Returns the handle used.
    pub fn allocate_preferring(
        &mut self,
        drawn: Handle,
        sink: S,
        persistent: bool,
        waiting_on: Option<ContextId>,
        accept: Accept,
    ) -> Handle {
        if drawn < FIRST_DYNAMIC || self.entries.contains_key(&drawn) {
            return self.allocate(sink, persistent, waiting_on, accept);
        }
        self.entries.insert(
            drawn,
            HandleEntry {
                sink,
                persistent,
                waiting_on,
                accept,
                bulk: false,
            },
        );
        drawn
    }

    /// Registers `sink` on a well-known handle, replacing any previous one.
    pub fn insert(&mut self, handle: Handle, sink: S) -> Option<S> {
        self.entries
            .insert(
                handle,
                HandleEntry {
                    sink,
                    persistent: true,
                    waiting_on: None,
                    accept: Accept::Any,
                    bulk: false,
                },
            )
            .map(|e| e.sink)
    }

    pub fn remove(&mut self, handle: Handle) -> Option<S> {
        self.entries.remove(&handle).map(|e| e.sink)
    }

    pub fn get(&self, handle: Handle) -> Option<&HandleEntry<S>> {
        self.entries.get(&handle)
    }

    /// Lets `handle` take bulk frames (a file receiver's data handle);
    /// false when there is no such handle.
    pub fn allow_bulk(&mut self, handle: Handle) -> bool {
        self.entries
            .get_mut(&handle)
            .map(|e| e.bulk = true)
            .is_some()
    }

    /// Whether `handle` takes bulk frames.
    pub fn takes_bulk(&self, handle: Handle) -> bool {
        self.entries.get(&handle).is_some_and(|e| e.bulk)
    }

    pub fn sink_mut(&mut self, handle: Handle) -> Option<&mut S> {
        self.entries.get_mut(&handle).map(|e| &mut e.sink)
    }

    /// A delivery to `handle`, if `rule` takes the entry's source rule:
    /// a one-shot entry is removed and its sink handed out, a persistent
    /// one stays (find it with [`HandleTable::sink_mut`]). One lookup.
    pub fn deliver_to(
        &mut self,
        handle: Handle,
        rule: impl FnOnce(&Accept) -> bool,
    ) -> Delivery<S> {
        match self.entries.entry(handle) {
            Entry::Vacant(_) => Delivery::Missing,
            Entry::Occupied(e) if !rule(&e.get().accept) => {
                Delivery::Refused(e.get().accept.peers().to_vec())
            }
            Entry::Occupied(e) if e.get().persistent => Delivery::Keep,
            Entry::Occupied(e) => Delivery::Once(e.remove().sink),
        }
    }

    /// Removes and returns every entry waiting on one of `dead`.
    pub fn waiting_on(&mut self, dead: &[ContextId]) -> Vec<(Handle, S)> {
        let hit: Vec<Handle> = self
            .entries
            .iter()
            .filter(|(_, e)| e.waiting_on.is_some_and(|c| dead.contains(&c)))
            .map(|(&h, _)| h)
            .collect();
        hit.into_iter()
            .filter_map(|h| self.entries.remove(&h).map(|e| (h, e.sink)))
            .collect()
    }

    /// Removes every entry (router shutdown).
    pub fn drain(&mut self) -> Vec<(Handle, S)> {
        self.entries.drain().map(|(h, e)| (h, e.sink)).collect()
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// What [`HandleTable::deliver_to`] found.
#[derive(Debug)]
pub enum Delivery<S> {
    /// No such handle.
    Missing,
    /// The handle does not take this source; these are the ones it takes.
    Refused(Vec<ContextId>),
    /// A persistent handle, still registered.
    Keep,
    /// A one-shot handle, now freed: its sink.
    Once(S),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dynamic_handles_are_random_above_the_well_known_and_one_shots_vanish() {
        let mut t = HandleTable::with_seed(7);
        let a = t.allocate("a", false, Some(3), Accept::From(3));
        let b = t.allocate("b", true, None, Accept::Any);
        assert!(a >= FIRST_DYNAMIC && b >= FIRST_DYNAMIC && a != b);
        let any = |_: &Accept| true;
        assert!(matches!(t.deliver_to(a, any), Delivery::Once("a")));
        assert!(matches!(t.deliver_to(a, any), Delivery::Missing));
        assert!(matches!(t.deliver_to(b, any), Delivery::Keep));
        assert!(matches!(t.deliver_to(b, any), Delivery::Keep));
        let c = t.allocate("c", false, None, Accept::From(3));
        let refused = t.deliver_to(c, |acc| acc.allows(4));
        assert!(matches!(refused, Delivery::Refused(ref e) if e == &[3]));
        assert!(matches!(
            t.deliver_to(c, |acc| acc.allows(3)),
            Delivery::Once("c")
        ));
        let mut other = HandleTable::with_seed(8);
        let c = other.allocate("c", false, None, Accept::Any);
        assert_ne!(a, c, "different seeds, different handles");
        assert!(
            a.max(c) - a.min(c) > 1000,
            "not sequential: {a} and {c} are far apart"
        );
    }

    #[test]
    fn a_drawn_handle_is_used_when_free_and_replaced_when_taken() {
        let mut t = HandleTable::with_seed(7);
        let h = FIRST_DYNAMIC + 12345;
        assert_eq!(t.allocate_preferring(h, "a", false, None, Accept::Any), h);
        let again = t.allocate_preferring(h, "b", false, None, Accept::Any);
        assert_ne!(again, h, "a handle in use is never shared");
        assert!(again >= FIRST_DYNAMIC);
        let low = t.allocate_preferring(3, "c", false, None, Accept::Any);
        assert!(low >= FIRST_DYNAMIC, "well-known handles are never drawn");
        assert_eq!(t.len(), 3);
        assert!(matches!(t.deliver_to(h, |_| true), Delivery::Once("a")));
    }

    #[test]
    fn waiters_on_dead_contexts_are_removed() {
        let mut t = HandleTable::default();
        t.allocate(1, false, Some(3), Accept::Any);
        t.allocate(2, true, Some(4), Accept::Any);
        t.allocate(3, false, None, Accept::Any);
        let mut hit: Vec<i32> = t.waiting_on(&[3, 4]).into_iter().map(|x| x.1).collect();
        hit.sort();
        assert_eq!(hit, vec![1, 2]);
        assert_eq!(t.len(), 1);
    }

    #[test]
    fn only_a_handle_allowed_bulk_takes_it() {
        let mut t = HandleTable::with_seed(7);
        let a = t.allocate("a", true, None, Accept::Any);
        let b = t.allocate("b", true, None, Accept::Any);
        assert!(t.allow_bulk(a));
        assert!(t.takes_bulk(a) && !t.takes_bulk(b));
        assert!(!t.allow_bulk(1), "no such handle");
        t.remove(a);
        assert!(!t.takes_bulk(a), "gone with its handle");
    }

    #[test]
    fn accept_rules() {
        assert!(Accept::Any.allows(9));
        assert!(Accept::From(3).allows(3));
        assert!(!Accept::From(3).allows(4));
        assert!(Accept::AnyOf(vec![1, 2]).allows(2));
        assert!(!Accept::AnyOf(vec![1, 2]).allows(5));
    }
}
