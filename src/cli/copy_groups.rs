//! Which hosts of an `econtext copy` share an intermediate, and when the
//! ones that have connected go together as one `push_fanout` (so the
//! files cross the master's link once per group). Plain data: arrivals
//! and the clock are inputs, batches are outputs.
//!
//! A group's batch goes when every member still expected has arrived;
//! when the hosts waiting fill every fork (no other host can start, so
//! waiting longer would deadlock); or when no member arrived for
//! [`QUIET`] (one failed to connect, or is slow: the rest do not wait
//! for it; it goes in a later batch).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use econtext::fleet::Target;

/// How long a group waits for more members after the last arrival.
pub const QUIET: Duration = Duration::from_secs(1);

/// The chain of contexts above a target's own (its intermediate's
/// identity), or None when the master is its parent. Two targets with
/// the same key reach their hosts through the same shared context.
pub fn group_key(t: &Target) -> Option<String> {
    let n = t.hops.len().checked_sub(1).filter(|n| *n > 0)?;
    let mut k = String::new();
    for h in &t.hops[..n] {
        k.push_str(&format!("{:?}|{:?};", h.method, h.name));
    }
    Some(k)
}

struct Group<M> {
    expected: usize,
    waiting: Vec<M>,
    last_arrival: Option<Instant>,
}

/// Members waiting per group, released in batches.
pub struct Gatherer<M> {
    groups: HashMap<String, Group<M>>,
    forks: usize,
}

impl<M> Gatherer<M> {
    /// `sizes`: each group key and how many targets it has.
    pub fn new(sizes: impl IntoIterator<Item = (String, usize)>, forks: usize) -> Gatherer<M> {
        Gatherer {
            groups: sizes
                .into_iter()
                .map(|(k, n)| {
                    let g = Group {
                        expected: n,
                        waiting: Vec::new(),
                        last_arrival: None,
                    };
                    (k, g)
                })
                .collect(),
            forks: forks.max(1),
        }
    }

    /// Whether hosts of `key` are gathered (a group of at least two).
    pub fn gathers(&self, key: &str) -> bool {
        self.groups.get(key).is_some_and(|g| g.expected > 1)
    }

    /// A member of `key` connected; returns the batches to run now.
    pub fn arrive(&mut self, key: &str, member: M, now: Instant) -> Vec<Vec<M>> {
        let Some(g) = self.groups.get_mut(key) else {
            return vec![vec![member]];
        };
        g.waiting.push(member);
        g.last_arrival = Some(now);
        if g.waiting.len() >= g.expected {
            return vec![Self::release(g)];
        }
        let waiting: usize = self.groups.values().map(|g| g.waiting.len()).sum();
        if waiting >= self.forks {
            // Every fork is a host waiting here: nobody else can start.
            return self
                .groups
                .values_mut()
                .filter(|g| !g.waiting.is_empty())
                .map(Self::release)
                .collect();
        }
        Vec::new()
    }

    /// When `key`'s waiting members go if nobody else arrives.
    pub fn deadline(&self, key: &str) -> Option<Instant> {
        let g = self.groups.get(key)?;
        (!g.waiting.is_empty()).then(|| g.last_arrival.map(|t| t + QUIET))?
    }

    /// The clock reached `now`: `key`'s members go if it has been quiet.
    pub fn tick(&mut self, key: &str, now: Instant) -> Option<Vec<M>> {
        let due = self.deadline(key)?;
        if now < due {
            return None;
        }
        self.groups.get_mut(key).map(Self::release)
    }

    fn release(g: &mut Group<M>) -> Vec<M> {
        let batch = std::mem::take(&mut g.waiting);
        g.expected = g.expected.saturating_sub(batch.len());
        batch
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gatherer(forks: usize) -> Gatherer<u32> {
        Gatherer::new([("a".to_string(), 3), ("b".to_string(), 2)], forks)
    }

    #[test]
    fn a_group_goes_when_every_member_has_arrived() {
        let mut g = gatherer(32);
        let t = Instant::now();
        assert!(g.arrive("a", 1, t).is_empty());
        assert!(g.arrive("b", 10, t).is_empty());
        assert!(g.arrive("a", 2, t).is_empty());
        assert_eq!(g.arrive("a", 3, t), vec![vec![1, 2, 3]]);
        assert_eq!(g.arrive("b", 11, t), vec![vec![10, 11]]);
        assert_eq!(g.deadline("a"), None);
    }

    #[test]
    fn waiting_hosts_filling_every_fork_go_at_once() {
        let mut g = gatherer(3);
        let t = Instant::now();
        assert!(g.arrive("a", 1, t).is_empty());
        assert!(g.arrive("b", 10, t).is_empty());
        let mut out = g.arrive("a", 2, t);
        out.sort();
        assert_eq!(out, vec![vec![1, 2], vec![10]]);
        // The one left of each group goes alone when it arrives.
        assert_eq!(g.arrive("a", 3, t), vec![vec![3]]);
        assert_eq!(g.arrive("b", 11, t), vec![vec![11]]);
    }

    #[test]
    fn a_member_that_never_arrives_does_not_hold_the_others_past_quiet() {
        let mut g = gatherer(32);
        let t = Instant::now();
        assert!(g.arrive("a", 1, t).is_empty());
        assert!(g.arrive("a", 2, t + QUIET / 2).is_empty());
        assert_eq!(g.deadline("a"), Some(t + QUIET / 2 + QUIET));
        assert_eq!(g.tick("a", t + QUIET), None, "quiet since the last arrival");
        assert_eq!(g.tick("a", t + 2 * QUIET), Some(vec![1, 2]));
        assert_eq!(g.tick("a", t + 3 * QUIET), None);
        // The late one goes alone.
        assert_eq!(g.arrive("a", 3, t + 4 * QUIET), vec![vec![3]]);
    }

    #[test]
    fn hosts_without_a_group_go_alone() {
        let mut g = gatherer(32);
        assert!(!g.gathers("c"));
        assert_eq!(g.arrive("c", 7, Instant::now()), vec![vec![7]]);
    }
}
