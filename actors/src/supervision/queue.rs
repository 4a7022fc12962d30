//! One subscriber's bounded event queue, and what happens when the
//! subscriber stops reading: the events past its capacity are not queued
//! but counted, and the subscriber gets one [`ContextEvent::Lagged`] with
//! the count at the place of the gap (before the next event that fits, or
//! when it has read everything queued). Nothing is lost silently and the
//! queue never holds more than its capacity. [`EventQueue`] is the plain
//! decision logic (time passed in, for the rate of warnings);
//! [`SharedQueue`] puts it between the hub and a reader (an
//! [`super::EventStream`] or the pump feeding a user's actor).

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::task::{Context as TaskContext, Poll, Waker};
use std::time::{Duration, Instant};

use crate::event::ContextEvent;

/// How often a lagging subscription is warned about.
pub(crate) const WARN_INTERVAL: Duration = Duration::from_secs(10);

/// What [`EventQueue::push`] did with an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Pushed {
    /// Queued for the reader.
    Queued,
    /// Not queued: the reader is `capacity` behind. `warn` is
    /// `Some(missed since the last warning)` at most once per
    /// [`WARN_INTERVAL`].
    Missed { warn: Option<u64> },
}

/// See the module documentation.
#[derive(Debug)]
pub(crate) struct EventQueue {
    capacity: usize,
    queue: VecDeque<ContextEvent>,
    /// Missed since the last Lagged was queued (the open gap).
    gap: u64,
    missed_total: u64,
    unwarned: u64,
    warned_at: Option<Instant>,
}

impl EventQueue {
    /// `capacity` counts the Lagged marker too; at least 1.
    pub(crate) fn new(capacity: usize) -> Self {
        EventQueue {
            capacity: capacity.max(1),
            queue: VecDeque::new(),
            gap: 0,
            missed_total: 0,
            unwarned: 0,
            warned_at: None,
        }
    }

    pub(crate) fn push(&mut self, e: ContextEvent, now: Instant) -> Pushed {
        // An open gap needs a slot for its Lagged before the next event.
        let reserved = usize::from(self.gap > 0);
        if self.queue.len() + reserved >= self.capacity {
            self.gap += 1;
            self.missed_total += 1;
            self.unwarned += 1;
            let due = self
                .warned_at
                .map_or(true, |t| now.saturating_duration_since(t) >= WARN_INTERVAL);
            if !due {
                return Pushed::Missed { warn: None };
            }
            self.warned_at = Some(now);
            let n = std::mem::take(&mut self.unwarned);
            return Pushed::Missed { warn: Some(n) };
        }
        self.close_gap();
        self.queue.push_back(e);
        Pushed::Queued
    }

    /// The next event for the reader; the gap's Lagged once it has read
    /// everything queued before it.
    pub(crate) fn pop(&mut self) -> Option<ContextEvent> {
        if self.queue.is_empty() {
            self.close_gap();
        }
        self.queue.pop_front()
    }

    fn close_gap(&mut self) {
        if self.gap > 0 {
            let missed = std::mem::take(&mut self.gap);
            self.queue.push_back(ContextEvent::Lagged { missed });
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.queue.len()
    }

    pub(crate) fn missed_total(&self) -> u64 {
        self.missed_total
    }

    fn clear(&mut self) {
        self.queue.clear();
        self.gap = 0;
    }
}

struct State {
    queue: EventQueue,
    reader: Option<Waker>,
    closed: bool,
}

/// An [`EventQueue`] shared by the hub (which pushes) and one reader.
/// Either side closes it: the reader by going away, the hub by ending the
/// subscription (what is still queued is then discarded).
#[derive(Clone)]
pub(crate) struct SharedQueue(Arc<Mutex<State>>);

impl SharedQueue {
    pub(crate) fn new(capacity: usize) -> Self {
        SharedQueue(Arc::new(Mutex::new(State {
            queue: EventQueue::new(capacity),
            reader: None,
            closed: false,
        })))
    }

    fn with<R>(&self, f: impl FnOnce(&mut State) -> R) -> R {
        let mut s = self.0.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut s)
    }

    /// None when the queue is closed (the subscription is over).
    pub(crate) fn push(&self, e: ContextEvent, now: Instant) -> Option<Pushed> {
        self.with(|s| {
            if s.closed {
                return None;
            }
            let pushed = s.queue.push(e, now);
            if let Some(w) = s.reader.take() {
                w.wake();
            }
            Some(pushed)
        })
    }

    /// Ready(None) once closed.
    pub(crate) fn poll_pop(&self, cx: &mut TaskContext<'_>) -> Poll<Option<ContextEvent>> {
        self.with(|s| {
            if s.closed {
                return Poll::Ready(None);
            }
            match s.queue.pop() {
                Some(e) => Poll::Ready(Some(e)),
                None => {
                    s.reader = Some(cx.waker().clone());
                    Poll::Pending
                }
            }
        })
    }

    pub(crate) fn close(&self) {
        self.with(|s| {
            s.closed = true;
            s.queue.clear();
            if let Some(w) = s.reader.take() {
                w.wake();
            }
        })
    }

    pub(crate) fn len(&self) -> usize {
        self.with(|s| s.queue.len())
    }

    pub(crate) fn missed_total(&self) -> u64 {
        self.with(|s| s.queue.missed_total())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::DeadReason;

    fn died(id: u16) -> ContextEvent {
        ContextEvent::Died {
            id,
            reason: DeadReason::Killed,
        }
    }

    fn drain(q: &mut EventQueue) -> Vec<ContextEvent> {
        std::iter::from_fn(|| q.pop()).collect()
    }

    #[test]
    fn a_reader_that_stops_gets_its_capacity_then_one_lagged_with_the_count() {
        let t = Instant::now();
        let mut q = EventQueue::new(3);
        let pushed: Vec<_> = (1..=10).map(|i| q.push(died(i), t)).collect();
        assert_eq!(&pushed[..3], &[Pushed::Queued; 3]);
        assert!(pushed[3..]
            .iter()
            .all(|p| matches!(p, Pushed::Missed { .. })));
        assert_eq!(q.len(), 3, "bounded");
        assert_eq!(
            drain(&mut q),
            vec![
                died(1),
                died(2),
                died(3),
                ContextEvent::Lagged { missed: 7 }
            ]
        );
        assert_eq!(q.missed_total(), 7);
        // Caught up: events flow again, no second Lagged.
        assert_eq!(q.push(died(11), t), Pushed::Queued);
        assert_eq!(drain(&mut q), vec![died(11)]);
    }

    #[test]
    fn the_lagged_marks_the_gap_where_it_was_and_takes_a_slot() {
        let t = Instant::now();
        let mut q = EventQueue::new(3);
        for i in 1..=5 {
            q.push(died(i), t); // 4 and 5 missed
        }
        assert_eq!(q.pop(), Some(died(1)));
        // One slot free: not enough for the Lagged and an event.
        assert!(matches!(q.push(died(6), t), Pushed::Missed { .. }));
        assert_eq!(q.pop(), Some(died(2)));
        // Two slots free now: the Lagged and event 7.
        assert_eq!(q.push(died(7), t), Pushed::Queued);
        assert!(matches!(q.push(died(8), t), Pushed::Missed { .. }));
        assert_eq!(q.len(), 3, "the marker counts against the capacity");
        assert_eq!(
            drain(&mut q),
            vec![
                died(3),
                ContextEvent::Lagged { missed: 3 },
                died(7),
                ContextEvent::Lagged { missed: 1 },
            ]
        );
        assert_eq!(q.missed_total(), 4);
    }

    #[test]
    fn warnings_come_once_per_interval_with_the_count_since_the_last() {
        let t = Instant::now();
        let mut q = EventQueue::new(1);
        q.push(died(1), t);
        assert_eq!(q.push(died(2), t), Pushed::Missed { warn: Some(1) });
        assert_eq!(q.push(died(3), t), Pushed::Missed { warn: None });
        assert_eq!(q.push(died(4), t), Pushed::Missed { warn: None });
        let later = t + WARN_INTERVAL;
        assert_eq!(q.push(died(5), later), Pushed::Missed { warn: Some(3) });
    }

    #[test]
    fn a_capacity_of_one_still_says_what_it_missed() {
        let t = Instant::now();
        let mut q = EventQueue::new(0);
        q.push(died(1), t);
        q.push(died(2), t);
        assert_eq!(q.pop(), Some(died(1)));
        assert!(matches!(q.push(died(3), t), Pushed::Missed { .. }));
        assert_eq!(q.pop(), Some(ContextEvent::Lagged { missed: 2 }));
        assert_eq!(q.push(died(4), t), Pushed::Queued);
        assert_eq!(drain(&mut q), vec![died(4)]);
    }
}
