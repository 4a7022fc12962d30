//! The restart decisions of one supervisor as a plain struct: no actors,
//! no clock, no randomness of its own. The supervisor actor feeds it what
//! happened (a child exited, a start succeeded or failed) with the time
//! and a random draw, and carries out the [`Action`]s it returns.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use super::spec::{Exit, GiveUp, Restart, RestartPolicy, Strategy};

/// One supervised child of a supervisor, stable across its restarts.
pub type SlotId = u64;

/// What the supervisor must do next.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Stop this running sibling; it is restarted with the group, so its
    /// exit is expected and is not a crash.
    Stop(SlotId),
    /// Start the child again once `after` has passed. Starts are issued in
    /// start order and must be carried out in that order, one at a time.
    Start { slot: SlotId, after: Duration },
    /// The child stopped for good under its policy (Temporary, or
    /// Transient after a clean exit).
    Forget(SlotId),
    /// The child crashed past its restart limit; it is not started again.
    GiveUp { slot: SlotId, reason: GiveUp },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Running,
    /// Asked to stop for a group restart; waiting for its exit.
    Stopping,
    /// Down, to be started with the pending group.
    Pending,
    /// A Start was issued; waiting for `started` or `start_failed`.
    Starting,
}

#[derive(Debug)]
struct Slot {
    id: SlotId,
    policy: RestartPolicy,
    state: State,
    /// When each restart within the window happened, oldest first.
    restarts: VecDeque<Instant>,
}

/// The restart state of one supervisor's children, in start order.
#[derive(Debug, Default)]
pub struct RestartCore {
    strategy: Strategy,
    slots: Vec<Slot>,
    next: SlotId,
    /// The wait before the pending group starts (the crashed child's).
    pending_delay: Duration,
}

impl RestartCore {
    pub fn new(strategy: Strategy) -> Self {
        RestartCore {
            strategy,
            next: 1,
            ..RestartCore::default()
        }
    }

    pub fn strategy(&self) -> Strategy {
        self.strategy
    }

    pub fn set_strategy(&mut self, strategy: Strategy) {
        self.strategy = strategy;
    }

    /// A new child was started under `policy`; it goes last in start order.
    pub fn add(&mut self, policy: RestartPolicy) -> SlotId {
        let id = self.next;
        self.next += 1;
        self.slots.push(Slot {
            id,
            policy,
            state: State::Running,
            restarts: VecDeque::new(),
        });
        id
    }

    /// The child was stopped on purpose (the user's `kill`, `stop`): it is
    /// no longer supervised and its exit means nothing.
    pub fn remove(&mut self, slot: SlotId) {
        self.slots.retain(|s| s.id != slot);
    }

    pub fn len(&self) -> usize {
        self.slots.len()
    }

    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    pub fn contains(&self, slot: SlotId) -> bool {
        self.index(slot).is_some()
    }

    fn index(&self, slot: SlotId) -> Option<usize> {
        self.slots.iter().position(|s| s.id == slot)
    }

    /// The child in `slot` stopped, cleanly or not, at `now`; `unit` is a
    /// random draw in `[0, 1)` for the backoff's jitter.
    pub fn exited(&mut self, slot: SlotId, exit: Exit, now: Instant, unit: f64) -> Vec<Action> {
        let Some(i) = self.index(slot) else {
            return Vec::new();
        };
        match self.slots[i].state {
            State::Stopping => {
                self.slots[i].state = State::Pending;
                return self.release_group();
            }
            // Already down and waiting to be started (or being started):
            // nothing new to decide.
            State::Pending | State::Starting => return Vec::new(),
            State::Running => {}
        }
        let restart = match (self.slots[i].policy.restart, exit) {
            (Restart::Permanent, _) | (Restart::Transient, Exit::Crash) => true,
            (Restart::Transient, Exit::Normal) | (Restart::Temporary, _) => false,
        };
        if !restart {
            self.slots.remove(i);
            return vec![Action::Forget(slot)];
        }
        self.crashed(i, now, unit)
    }

    /// A Start for `slot` succeeded: the child runs again.
    pub fn started(&mut self, slot: SlotId) {
        if let Some(i) = self.index(slot) {
            self.slots[i].state = State::Running;
        }
    }

    /// A Start for `slot` failed (the context could not be created): that
    /// counts as one more crash of this child alone.
    pub fn start_failed(&mut self, slot: SlotId, now: Instant, unit: f64) -> Vec<Action> {
        let Some(i) = self.index(slot) else {
            return Vec::new();
        };
        if self.slots[i].state != State::Starting {
            return Vec::new();
        }
        self.slots[i].state = State::Running;
        let saved = self.strategy;
        // A failed start retries that child only: its siblings are up.
        self.strategy = Strategy::OneForOne;
        let out = self.crashed(i, now, unit);
        self.strategy = saved;
        out
    }

    /// Slot `i` crashed: give up past the limit, else restart its group.
    fn crashed(&mut self, i: usize, now: Instant, unit: f64) -> Vec<Action> {
        let slot = &mut self.slots[i];
        let limit = slot.policy.limit;
        while slot
            .restarts
            .front()
            .is_some_and(|&t| now.saturating_duration_since(t) >= limit.window)
        {
            slot.restarts.pop_front();
        }
        if slot.restarts.len() >= limit.max_restarts as usize {
            let id = slot.id;
            self.slots.remove(i);
            return vec![Action::GiveUp {
                slot: id,
                reason: GiveUp::RestartLimit {
                    max_restarts: limit.max_restarts,
                    window: limit.window,
                },
            }];
        }
        slot.restarts.push_back(now);
        let delay = slot.policy.backoff.delay(slot.restarts.len() as u32, unit);
        slot.state = State::Pending;
        self.pending_delay = self.pending_delay.max(delay);
        let mut out = Vec::new();
        let group: Vec<usize> = match self.strategy {
            Strategy::OneForOne => Vec::new(),
            Strategy::OneForAll => (0..self.slots.len()).filter(|&j| j != i).collect(),
            Strategy::RestForOne => (i + 1..self.slots.len()).collect(),
        };
        for j in group {
            let s = &mut self.slots[j];
            // Temporary siblings are never restarted, so they are left
            // running rather than stopped for nothing.
            if s.state == State::Running && s.policy.restart != Restart::Temporary {
                s.state = State::Stopping;
                out.push(Action::Stop(s.id));
            }
        }
        out.extend(self.release_group());
        out
    }

    /// Once no sibling is still stopping, every pending child starts, in
    /// start order, after the pending delay.
    fn release_group(&mut self) -> Vec<Action> {
        if self.slots.iter().any(|s| s.state == State::Stopping) {
            return Vec::new();
        }
        let after = std::mem::take(&mut self.pending_delay);
        self.slots
            .iter_mut()
            .filter(|s| s.state == State::Pending)
            .map(|s| {
                s.state = State::Starting;
                Action::Start { slot: s.id, after }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::supervision::spec::Backoff;

    fn policy(restart: Restart) -> RestartPolicy {
        RestartPolicy::new(restart)
            .limit(3, Duration::from_secs(10))
            .backoff(Backoff::new(Duration::from_millis(100), Duration::from_secs(1)).jitter(0.0))
    }

    fn starts(actions: &[Action]) -> Vec<SlotId> {
        actions
            .iter()
            .filter_map(|a| match a {
                Action::Start { slot, .. } => Some(*slot),
                _ => None,
            })
            .collect()
    }

    fn stops(actions: &[Action]) -> Vec<SlotId> {
        actions
            .iter()
            .filter_map(|a| match a {
                Action::Stop(s) => Some(*s),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn permanent_restarts_after_a_crash_and_after_a_clean_exit() {
        let mut c = RestartCore::new(Strategy::OneForOne);
        let a = c.add(policy(Restart::Permanent));
        let t = Instant::now();
        let out = c.exited(a, Exit::Crash, t, 0.5);
        assert_eq!(
            out,
            vec![Action::Start {
                slot: a,
                after: Duration::from_millis(100)
            }]
        );
        c.started(a);
        assert_eq!(starts(&c.exited(a, Exit::Normal, t, 0.5)), vec![a]);
    }

    #[test]
    fn transient_restarts_only_after_a_crash() {
        let mut c = RestartCore::new(Strategy::OneForOne);
        let a = c.add(policy(Restart::Transient));
        let t = Instant::now();
        assert_eq!(starts(&c.exited(a, Exit::Crash, t, 0.5)), vec![a]);
        c.started(a);
        assert_eq!(c.exited(a, Exit::Normal, t, 0.5), vec![Action::Forget(a)]);
        assert!(c.is_empty());
    }

    #[test]
    fn temporary_never_restarts() {
        let mut c = RestartCore::new(Strategy::OneForOne);
        let a = c.add(policy(Restart::Temporary));
        let out = c.exited(a, Exit::Crash, Instant::now(), 0.5);
        assert_eq!(out, vec![Action::Forget(a)]);
    }

    #[test]
    fn fourth_crash_within_the_window_gives_up_with_the_limit() {
        let mut c = RestartCore::new(Strategy::OneForOne);
        let a = c.add(policy(Restart::Permanent));
        let t0 = Instant::now();
        let mut delays = Vec::new();
        for k in 0..3 {
            let out = c.exited(a, Exit::Crash, t0 + Duration::from_secs(k), 0.5);
            match out.as_slice() {
                [Action::Start { after, .. }] => delays.push(*after),
                other => panic!("crash {k}: {other:?}"),
            }
            c.started(a);
        }
        assert_eq!(
            delays,
            [100, 200, 400].map(Duration::from_millis).to_vec(),
            "backoff doubles per restart within the window"
        );
        let out = c.exited(a, Exit::Crash, t0 + Duration::from_secs(3), 0.5);
        assert_eq!(
            out,
            vec![Action::GiveUp {
                slot: a,
                reason: GiveUp::RestartLimit {
                    max_restarts: 3,
                    window: Duration::from_secs(10)
                }
            }]
        );
        assert!(!c.contains(a));
    }

    #[test]
    fn crashes_older_than_the_window_do_not_count() {
        let mut c = RestartCore::new(Strategy::OneForOne);
        let a = c.add(policy(Restart::Permanent));
        let t0 = Instant::now();
        for k in 0..10u64 {
            let out = c.exited(a, Exit::Crash, t0 + Duration::from_secs(4 * k), 0.5);
            assert_eq!(starts(&out), vec![a], "crash {k}");
            c.started(a);
        }
    }

    #[test]
    fn a_failed_start_counts_against_the_limit() {
        let mut c = RestartCore::new(Strategy::OneForOne);
        let a = c.add(policy(Restart::Permanent));
        let t = Instant::now();
        assert_eq!(starts(&c.exited(a, Exit::Crash, t, 0.5)), vec![a]);
        assert_eq!(starts(&c.start_failed(a, t, 0.5)), vec![a]);
        assert_eq!(starts(&c.start_failed(a, t, 0.5)), vec![a]);
        assert!(matches!(
            c.start_failed(a, t, 0.5).as_slice(),
            [Action::GiveUp { .. }]
        ));
    }

    #[test]
    fn one_for_all_stops_the_siblings_then_starts_everyone_in_order() {
        let mut c = RestartCore::new(Strategy::OneForAll);
        let [a, b, d] = [(); 3].map(|_| c.add(policy(Restart::Permanent)));
        let t = Instant::now();
        let out = c.exited(b, Exit::Crash, t, 0.5);
        assert_eq!(stops(&out), vec![a, d]);
        assert!(
            starts(&out).is_empty(),
            "nothing starts before all are down"
        );
        assert!(c.exited(a, Exit::Crash, t, 0.5).is_empty());
        let out = c.exited(d, Exit::Normal, t, 0.5);
        assert_eq!(starts(&out), vec![a, b, d]);
    }

    #[test]
    fn rest_for_one_restarts_the_crashed_and_the_later_ones() {
        let mut c = RestartCore::new(Strategy::RestForOne);
        let [a, b, d] = [(); 3].map(|_| c.add(policy(Restart::Permanent)));
        let t = Instant::now();
        let out = c.exited(b, Exit::Crash, t, 0.5);
        assert_eq!(stops(&out), vec![d]);
        let out = c.exited(d, Exit::Crash, t, 0.5);
        assert_eq!(starts(&out), vec![b, d]);
        assert!(c.contains(a));
    }

    #[test]
    fn group_restarts_leave_temporary_siblings_alone() {
        let mut c = RestartCore::new(Strategy::OneForAll);
        let a = c.add(policy(Restart::Permanent));
        let tmp = c.add(policy(Restart::Temporary));
        let out = c.exited(a, Exit::Crash, Instant::now(), 0.5);
        assert!(!stops(&out).contains(&tmp));
        assert_eq!(starts(&out), vec![a]);
    }

    #[test]
    fn a_removed_child_is_not_restarted() {
        let mut c = RestartCore::new(Strategy::OneForOne);
        let a = c.add(policy(Restart::Permanent));
        c.remove(a);
        assert!(c.exited(a, Exit::Crash, Instant::now(), 0.5).is_empty());
    }
}
