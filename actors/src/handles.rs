//! The handle registry of one context, as a plain struct.

use std::collections::HashMap;

use econtext_wire::{handles::FIRST_DYNAMIC, ContextId, Handle};

/// One registered handle: where its messages go, whether it outlives its
/// first message, and which context (if any) it is waiting on, so that the
/// death of that context can be delivered to it as Dead.
#[derive(Debug)]
pub struct HandleEntry<S> {
    pub sink: S,
    pub persistent: bool,
    pub waiting_on: Option<ContextId>,
}

/// Handle number allocation and lookup. `S` is the sink type (the Router
/// uses [`crate::router::Sink`]); keeping it generic keeps this testable.
#[derive(Debug)]
pub struct HandleTable<S> {
    next: Handle,
    entries: HashMap<Handle, HandleEntry<S>>,
}

impl<S> Default for HandleTable<S> {
    fn default() -> Self {
        HandleTable {
            next: FIRST_DYNAMIC,
            entries: HashMap::new(),
        }
    }
}

impl<S> HandleTable<S> {
    /// Registers `sink` on a fresh dynamic handle.
    pub fn allocate(&mut self, sink: S, persistent: bool, waiting_on: Option<ContextId>) -> Handle {
        loop {
            let h = self.next;
            self.next = self.next.checked_add(1).unwrap_or(FIRST_DYNAMIC);
            if let std::collections::hash_map::Entry::Vacant(v) = self.entries.entry(h) {
                v.insert(HandleEntry {
                    sink,
                    persistent,
                    waiting_on,
                });
                return h;
            }
        }
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
                },
            )
            .map(|e| e.sink)
    }

    pub fn remove(&mut self, handle: Handle) -> Option<S> {
        self.entries.remove(&handle).map(|e| e.sink)
    }

    /// The sink for a delivery; one-shot entries are removed by it.
    pub fn take_for_delivery(&mut self, handle: Handle) -> Option<Delivery<'_, S>> {
        let persistent = self.entries.get(&handle)?.persistent;
        if persistent {
            self.entries
                .get_mut(&handle)
                .map(|e| Delivery::Keep(&mut e.sink))
        } else {
            self.entries.remove(&handle).map(|e| Delivery::Once(e.sink))
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

/// What [`HandleTable::take_for_delivery`] hands out.
pub enum Delivery<'a, S> {
    Keep(&'a mut S),
    Once(S),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dynamic_handles_start_at_1000_and_one_shots_vanish() {
        let mut t = HandleTable::default();
        let a = t.allocate("a", false, Some(3));
        let b = t.allocate("b", true, None);
        assert_eq!((a, b), (1000, 1001));
        assert!(matches!(t.take_for_delivery(a), Some(Delivery::Once("a"))));
        assert!(t.take_for_delivery(a).is_none());
        assert!(matches!(t.take_for_delivery(b), Some(Delivery::Keep(_))));
        assert!(t.take_for_delivery(b).is_some());
    }

    #[test]
    fn waiters_on_dead_contexts_are_removed() {
        let mut t = HandleTable::default();
        t.allocate(1, false, Some(3));
        t.allocate(2, true, Some(4));
        t.allocate(3, false, None);
        let mut hit: Vec<i32> = t.waiting_on(&[3, 4]).into_iter().map(|x| x.1).collect();
        hit.sort();
        assert_eq!(hit, vec![1, 2]);
        assert_eq!(t.len(), 1);
    }
}
