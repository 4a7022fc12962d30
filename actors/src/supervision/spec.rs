//! What a supervisor is told about a child: when to restart it, how often
//! at most, how long to wait between attempts, and which siblings go with
//! it. Plain data; [`super::restart::RestartCore`] applies it.

use std::time::Duration;

/// When a child that stopped is started again (OTP's restart types,
/// kameo's `restart_policy`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Restart {
    /// Always, however it stopped.
    #[default]
    Permanent,
    /// Only after a crash; a clean shutdown is final.
    Transient,
    /// Never.
    Temporary,
}

/// How a child stopped, as far as restarting is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// A clean shutdown (SHUTDOWN, exit status 0).
    Normal,
    /// Anything else: killed from outside, disconnected, crashed.
    Crash,
}

/// Which children restart when one of them crashes (OTP's strategies),
/// among the supervised children of one supervisor, in start order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Strategy {
    /// Only the child that stopped.
    #[default]
    OneForOne,
    /// Every supervised sibling is stopped and all are started again.
    OneForAll,
    /// The child and every sibling started after it.
    RestForOne,
}

/// At most `max_restarts` restarts within any `window` (OTP's intensity
/// and period, kameo's `restart_limit(n, window)`). One more crash inside
/// the window and the supervisor gives up on the child.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RestartLimit {
    pub max_restarts: u32,
    pub window: Duration,
}

impl RestartLimit {
    pub fn new(max_restarts: u32, window: Duration) -> Self {
        RestartLimit {
            max_restarts,
            window,
        }
    }
}

impl Default for RestartLimit {
    /// OTP's default intensity: 3 restarts in 5 seconds.
    fn default() -> Self {
        RestartLimit::new(3, Duration::from_secs(5))
    }
}

/// Exponential backoff between attempts, with jitter so that a fleet whose
/// contexts died together does not reconnect in lockstep.
///
/// Attempt `k` (1 for the first restart in the window) waits
/// `min(max, initial * factor^(k-1))`, scaled by a random factor in
/// `[1 - jitter, 1 + jitter]`.
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
pub struct Backoff {
    pub initial: Duration,
    pub max: Duration,
    pub factor: f64,
    /// Fraction of the delay, 0.0 to 1.0.
    pub jitter: f64,
}

impl Backoff {
    pub fn new(initial: Duration, max: Duration) -> Self {
        Backoff {
            initial,
            max,
            ..Backoff::default()
        }
    }

    /// No wait at all (tests, contexts that are cheap to start).
    pub fn none() -> Self {
        Backoff {
            initial: Duration::ZERO,
            max: Duration::ZERO,
            factor: 1.0,
            jitter: 0.0,
        }
    }

    pub fn factor(mut self, factor: f64) -> Self {
        self.factor = factor.max(1.0);
        self
    }

    pub fn jitter(mut self, jitter: f64) -> Self {
        self.jitter = jitter.clamp(0.0, 1.0);
        self
    }

    /// The wait before attempt `attempt` (1-based). `unit` is a random
    /// draw in `[0, 1)`, passed in so that this stays deterministic.
    pub fn delay(&self, attempt: u32, unit: f64) -> Duration {
        let exp = self.factor.powi(attempt.saturating_sub(1).min(64) as i32);
        let base = (self.initial.as_secs_f64() * exp).min(self.max.as_secs_f64());
        let scale = 1.0 + self.jitter * (2.0 * unit.clamp(0.0, 1.0) - 1.0);
        Duration::from_secs_f64((base * scale).max(0.0))
    }
}

impl Default for Backoff {
    /// 100 ms, doubling, at most 5 s, ±20 %.
    fn default() -> Self {
        Backoff {
            initial: Duration::from_millis(100),
            max: Duration::from_secs(5),
            factor: 2.0,
            jitter: 0.2,
        }
    }
}

/// A child's restart policy: the part of a child spec that does not
/// depend on how the context is created.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
#[non_exhaustive]
pub struct RestartPolicy {
    pub restart: Restart,
    pub limit: RestartLimit,
    pub backoff: Backoff,
}

impl RestartPolicy {
    pub fn new(restart: Restart) -> Self {
        RestartPolicy {
            restart,
            ..RestartPolicy::default()
        }
    }

    pub fn limit(mut self, max_restarts: u32, window: Duration) -> Self {
        self.limit = RestartLimit::new(max_restarts, window);
        self
    }

    pub fn backoff(mut self, backoff: Backoff) -> Self {
        self.backoff = backoff;
        self
    }
}

/// Why a supervisor stopped restarting a child.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum GiveUp {
    /// It crashed once more after `max_restarts` restarts within `window`.
    #[error("restart limit reached: {max_restarts} restarts within {window:?}")]
    RestartLimit { max_restarts: u32, window: Duration },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_its_cap_without_jitter() {
        let b = Backoff::new(Duration::from_millis(100), Duration::from_millis(350)).jitter(0.0);
        assert_eq!(b.delay(1, 0.7), Duration::from_millis(100));
        assert_eq!(b.delay(2, 0.7), Duration::from_millis(200));
        assert_eq!(b.delay(3, 0.7), Duration::from_millis(350));
        assert_eq!(b.delay(40, 0.7), Duration::from_millis(350));
    }

    #[test]
    fn jitter_spreads_the_delay_both_ways() {
        let b = Backoff::new(Duration::from_millis(100), Duration::from_secs(1)).jitter(0.5);
        assert_eq!(b.delay(1, 0.0), Duration::from_millis(50));
        assert_eq!(b.delay(1, 0.5), Duration::from_millis(100));
        let high = b.delay(1, 0.999_999);
        assert!(high > Duration::from_millis(149) && high <= Duration::from_millis(150));
    }
}
