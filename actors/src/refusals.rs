//! Counting refused frames and deciding when to say so: one warning per
//! source per interval, however many frames a hostile context sends, with
//! the number suppressed since the last one. Plain struct, time passed in,
//! memory bounded by [`MAX_SOURCES`].

use std::collections::HashMap;
use std::time::{Duration, Instant};

use econtext_wire::ContextId;

/// How often a warning about one source may be logged.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(10);
/// Sources remembered at once; past this, refusals are only counted.
pub const MAX_SOURCES: usize = 1024;

#[derive(Debug, Clone, Copy)]
struct Window {
    logged_at: Instant,
    suppressed: u64,
}

/// See the module documentation.
#[derive(Debug)]
pub struct RefusalLog {
    interval: Duration,
    windows: HashMap<ContextId, Window>,
    total: u64,
}

impl RefusalLog {
    pub fn new(interval: Duration) -> Self {
        RefusalLog {
            interval,
            windows: HashMap::new(),
            total: 0,
        }
    }

    /// Counts one refusal from `src`. Returns `Some(suppressed)` when it
    /// should be logged now, with how many were not logged before it.
    pub fn note(&mut self, src: ContextId, now: Instant) -> Option<u64> {
        self.total += 1;
        if let Some(w) = self.windows.get_mut(&src) {
            if now.saturating_duration_since(w.logged_at) < self.interval {
                w.suppressed += 1;
                return None;
            }
            let n = w.suppressed;
            *w = Window {
                logged_at: now,
                suppressed: 0,
            };
            return Some(n);
        }
        if self.windows.len() >= MAX_SOURCES {
            self.prune(now);
            if self.windows.len() >= MAX_SOURCES {
                return None;
            }
        }
        self.windows.insert(
            src,
            Window {
                logged_at: now,
                suppressed: 0,
            },
        );
        Some(0)
    }

    /// Forgets sources quiet for a whole interval.
    pub fn prune(&mut self, now: Instant) {
        let interval = self.interval;
        self.windows
            .retain(|_, w| now.saturating_duration_since(w.logged_at) < interval);
    }

    /// Forgets a source (its context died).
    pub fn forget(&mut self, src: ContextId) {
        self.windows.remove(&src);
    }

    /// Every refusal ever counted.
    pub fn total(&self) -> u64 {
        self.total
    }

    pub fn sources(&self) -> usize {
        self.windows.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_warning_per_source_per_interval() {
        let t0 = Instant::now();
        let mut r = RefusalLog::new(Duration::from_secs(10));
        assert_eq!(r.note(5, t0), Some(0));
        for _ in 0..499_999 {
            assert_eq!(r.note(5, t0 + Duration::from_secs(1)), None);
        }
        assert_eq!(r.note(6, t0), Some(0), "another source is its own");
        assert_eq!(r.note(5, t0 + Duration::from_secs(10)), Some(499_999));
        assert_eq!(r.total(), 500_002);
    }

    #[test]
    fn memory_is_bounded_by_the_source_cap() {
        let t0 = Instant::now();
        let mut r = RefusalLog::new(Duration::from_secs(10));
        for src in 0..=u16::MAX {
            r.note(src, t0);
        }
        assert_eq!(r.sources(), MAX_SOURCES);
        r.prune(t0 + Duration::from_secs(11));
        assert_eq!(r.sources(), 0);
    }
}
