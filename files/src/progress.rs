//! Progress events (bytes, files, rate) and the meter that paces them.

use std::sync::Arc;
use std::time::{Duration, Instant};

/// Where a transfer stands. Emitted at most every
/// [`ProgressMeter::INTERVAL`] and once more at the end (`done`).
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Progress {
    /// The context the transfer is with.
    pub host: String,
    /// Bytes the receiver has written (acknowledged), resumed ones included.
    pub bytes: u64,
    pub bytes_total: u64,
    /// Files (and links) finished.
    pub files: u64,
    pub files_total: u64,
    /// Bytes per second since the transfer started.
    pub rate: f64,
    pub elapsed: Duration,
    pub done: bool,
}

/// A user's progress callback. Called on the actor thread: keep it short.
pub type ProgressFn = Arc<dyn Fn(&Progress) + Send + Sync>;

/// Paces progress events. Plain data: the caller passes the clock in.
#[derive(Debug)]
pub struct ProgressMeter {
    host: String,
    started: Instant,
    last: Option<Instant>,
    bytes_total: u64,
    files_total: u64,
}

impl ProgressMeter {
    pub const INTERVAL: Duration = Duration::from_millis(100);

    pub fn new(host: &str, now: Instant, bytes_total: u64, files_total: u64) -> Self {
        ProgressMeter {
            host: host.to_string(),
            started: now,
            last: None,
            bytes_total,
            files_total,
        }
    }

    /// An event, when one is due (always when `done`).
    pub fn update(&mut self, now: Instant, bytes: u64, files: u64, done: bool) -> Option<Progress> {
        if !done
            && self
                .last
                .is_some_and(|l| now.duration_since(l) < Self::INTERVAL)
        {
            return None;
        }
        self.last = Some(now);
        let elapsed = now.duration_since(self.started);
        let secs = elapsed.as_secs_f64();
        Some(Progress {
            host: self.host.clone(),
            bytes,
            bytes_total: self.bytes_total,
            files,
            files_total: self.files_total,
            rate: if secs > 0.0 { bytes as f64 / secs } else { 0.0 },
            elapsed,
            done,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_are_paced_but_the_last_always_comes() {
        let t0 = Instant::now();
        let mut m = ProgressMeter::new("h", t0, 1000, 2);
        assert!(m.update(t0, 0, 0, false).is_some());
        assert!(m
            .update(t0 + Duration::from_millis(50), 10, 0, false)
            .is_none());
        let p = m
            .update(t0 + Duration::from_millis(150), 300, 1, false)
            .unwrap();
        assert_eq!((p.bytes, p.files), (300, 1));
        assert!((p.rate - 2000.0).abs() < 1.0);
        let p = m
            .update(t0 + Duration::from_millis(151), 1000, 2, true)
            .unwrap();
        assert!(p.done);
    }
}
