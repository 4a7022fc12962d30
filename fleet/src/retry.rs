//! Jittered exponential backoff for connect retries, as plain data.

use std::time::Duration;

/// The delays before each retry: `base * 2^n`, scaled by a jitter factor
/// in [0.5, 1.5) so that a fleet's retries do not arrive in step.
#[derive(Debug, Clone)]
pub struct Backoff {
    base: Duration,
    left: u32,
    attempt: u32,
}

/// Longest single delay, whatever the attempt count.
const MAX_DELAY: Duration = Duration::from_secs(30);

impl Backoff {
    pub fn new(base: Duration, retries: u32) -> Backoff {
        Backoff {
            base,
            left: retries,
            attempt: 0,
        }
    }

    /// The delay before the next attempt, or None when none is left.
    /// `unit` is a uniform random number in [0, 1).
    pub fn next_delay(&mut self, unit: f64) -> Option<Duration> {
        if self.left == 0 {
            return None;
        }
        self.left -= 1;
        let exp = self.base.saturating_mul(1 << self.attempt.min(16));
        self.attempt += 1;
        let jitter = 0.5 + unit.clamp(0.0, 1.0);
        Some(exp.mul_f64(jitter).min(MAX_DELAY))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_off_then_doubling_with_jitter() {
        assert_eq!(
            Backoff::new(Duration::from_secs(1), 0).next_delay(0.5),
            None
        );
        let mut b = Backoff::new(Duration::from_millis(100), 3);
        assert_eq!(b.next_delay(0.5), Some(Duration::from_millis(100)));
        assert_eq!(b.next_delay(0.0), Some(Duration::from_millis(100)));
        assert_eq!(b.next_delay(0.99).map(|d| d.as_millis()), Some(596));
        assert_eq!(b.next_delay(0.5), None);
        let mut big = Backoff::new(Duration::from_secs(20), 5);
        big.next_delay(0.5);
        assert_eq!(big.next_delay(0.99), Some(MAX_DELAY));
    }
}
