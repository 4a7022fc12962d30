//! How much of one source's log reaches the operator: a token bucket in
//! records and one in bytes, so a child that logs in a loop (a hostile
//! one, or user code gone wrong) shows at most a burst and then a steady
//! trickle, plus one line every [`REPORT_EVERY`] saying how much was
//! suppressed. Plain struct, time passed in; the LogForwarder keeps one
//! per context and the IoLogger one per pipe.
//!
//! The Python core applies half these limits to what it sends
//! (`econtext_core._LogBudget`), so an honest child never reaches the
//! master's; the master's are for children that bypass their own.

use std::time::{Duration, Instant};

/// A record longer than this is cut before it is shown (and counted at
/// this length): one FORWARD_LOG may be up to `max_message_size`.
pub const MAX_RECORD: usize = 64 * 1024;

/// How often a source still being suppressed gets its summary line.
pub const REPORT_EVERY: Duration = Duration::from_secs(1);

/// The rates a source may log at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogLimits {
    /// Records that may come at once after a quiet period.
    pub burst_records: u32,
    /// Records per second after the burst.
    pub records_per_sec: u32,
    /// Bytes that may come at once (at least [`MAX_RECORD`]).
    pub burst_bytes: u32,
    /// Bytes per second after the burst.
    pub bytes_per_sec: u32,
}

/// 2,000 records or 2 MiB at once, then 200 records or 512 KiB a second:
/// twice what the Python core lets itself send (1,000 records or 1 MiB,
/// then 100 or 256 KiB a second), so an honest child's records and its own
/// "suppressed" summaries always pass; far above what a context's
/// diagnostics or a traceback need, far below what scrolls a terminal out
/// of use.
pub const DEFAULT_LIMITS: LogLimits = LogLimits {
    burst_records: 2000,
    records_per_sec: 200,
    burst_bytes: 2 << 20,
    bytes_per_sec: 512 << 10,
};

/// What was suppressed since the last summary.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Suppressed {
    pub records: u64,
    pub bytes: u64,
}

impl std::fmt::Display for Suppressed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "suppressed {} log records ({} bytes) from this source: over its log rate",
            self.records, self.bytes
        )
    }
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    burst: f64,
    rate: f64,
}

impl Bucket {
    fn new(burst: u32, rate: u32) -> Self {
        Bucket {
            tokens: f64::from(burst),
            burst: f64::from(burst),
            rate: f64::from(rate),
        }
    }

    fn refill(&mut self, secs: f64) {
        self.tokens = (self.tokens + secs * self.rate).min(self.burst);
    }
}

/// See the module documentation.
#[derive(Debug, Clone)]
pub struct LogBudget {
    records: Bucket,
    bytes: Bucket,
    at: Instant,
    suppressed: Suppressed,
    reported_at: Option<Instant>,
}

impl LogBudget {
    pub fn new(limits: LogLimits, now: Instant) -> Self {
        LogBudget {
            records: Bucket::new(limits.burst_records, limits.records_per_sec),
            bytes: Bucket::new(
                limits.burst_bytes.max(MAX_RECORD as u32),
                limits.bytes_per_sec,
            ),
            at: now,
            suppressed: Suppressed::default(),
            reported_at: None,
        }
    }

    /// Whether a record of `len` bytes (cut at [`MAX_RECORD`]) may be
    /// shown now; if not, it is counted as suppressed.
    pub fn admit(&mut self, len: usize, now: Instant) -> bool {
        let secs = now.saturating_duration_since(self.at).as_secs_f64();
        self.at = self.at.max(now);
        self.records.refill(secs);
        self.bytes.refill(secs);
        let len = len.min(MAX_RECORD) as f64;
        if self.records.tokens >= 1.0 && self.bytes.tokens >= len {
            self.records.tokens -= 1.0;
            self.bytes.tokens -= len;
            return true;
        }
        self.suppressed.records += 1;
        self.suppressed.bytes += len as u64;
        false
    }

    /// The summary to show now, if anything was suppressed and the last
    /// summary is at least [`REPORT_EVERY`] old (`force`: whatever the
    /// age, as when the source goes away).
    pub fn report(&mut self, now: Instant, force: bool) -> Option<Suppressed> {
        if self.suppressed.records == 0 {
            return None;
        }
        let due = self
            .reported_at
            .map_or(true, |t| now.saturating_duration_since(t) >= REPORT_EVERY);
        if !due && !force {
            return None;
        }
        self.reported_at = Some(now);
        Some(std::mem::take(&mut self.suppressed))
    }

    /// Whether this budget is back to its full burst, in records and in
    /// bytes, with nothing left to report: a caller keeping many may
    /// forget it (a fresh one then starts full, so forgetting one whose
    /// bytes were spent would hand the source another burst).
    pub fn idle(&self, now: Instant) -> bool {
        let secs = now.saturating_duration_since(self.at).as_secs_f64();
        let (mut r, mut b) = (self.records, self.bytes);
        r.refill(secs);
        b.refill(secs);
        self.suppressed.records == 0 && r.tokens >= r.burst && b.tokens >= b.burst
    }
}

/// `b` cut to at most [`MAX_RECORD`] bytes, not inside a UTF-8 sequence,
/// and whether it was cut.
pub fn cut_record(b: &[u8]) -> (&[u8], bool) {
    if b.len() <= MAX_RECORD {
        return (b, false);
    }
    let mut end = MAX_RECORD;
    // Back off at most 3 continuation bytes to the start of a character.
    while end > MAX_RECORD - 3 && (b[end] & 0xc0) == 0x80 {
        end -= 1;
    }
    (&b[..end], true)
}

/// `s` (already escaped) cut to at most [`MAX_RECORD`] bytes at a
/// character boundary; whether it was cut. Escaping can make a record
/// four times longer (`\xNN` for every control byte): the budget counts,
/// and the operator sees, what is shown, never more than this.
pub fn cut_shown(s: &mut String) -> bool {
    if s.len() <= MAX_RECORD {
        return false;
    }
    let mut end = MAX_RECORD;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s.truncate(end);
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(burst: u32, rate: u32) -> LogLimits {
        LogLimits {
            burst_records: burst,
            records_per_sec: rate,
            burst_bytes: 1 << 30,
            bytes_per_sec: 1 << 30,
        }
    }

    #[test]
    fn a_flood_gets_its_burst_then_the_rate() {
        let t0 = Instant::now();
        let mut b = LogBudget::new(limits(10, 5), t0);
        let passed = (0..1000).filter(|_| b.admit(10, t0)).count();
        assert_eq!(passed, 10);
        let t1 = t0 + Duration::from_secs(2);
        let passed = (0..1000).filter(|_| b.admit(10, t1)).count();
        assert_eq!(passed, 10, "two seconds at 5 a second");
        assert_eq!(
            b.report(t1, false),
            Some(Suppressed {
                records: 1980,
                bytes: 19800
            })
        );
        assert_eq!(b.report(t1, false), None, "nothing new");
    }

    #[test]
    fn a_summary_comes_at_most_once_a_second_unless_forced() {
        let t0 = Instant::now();
        let mut b = LogBudget::new(limits(0, 0), t0);
        assert!(!b.admit(1, t0));
        assert!(b.report(t0, false).is_some());
        assert!(!b.admit(1, t0));
        assert_eq!(b.report(t0 + Duration::from_millis(500), false), None);
        assert_eq!(
            b.report(t0 + Duration::from_millis(500), true),
            Some(Suppressed {
                records: 1,
                bytes: 1
            })
        );
    }

    #[test]
    fn bytes_are_limited_too_and_a_huge_record_costs_the_cut_length() {
        let t0 = Instant::now();
        let mut b = LogBudget::new(
            LogLimits {
                burst_records: 1000,
                records_per_sec: 0,
                burst_bytes: 2 * MAX_RECORD as u32,
                bytes_per_sec: 0,
            },
            t0,
        );
        assert!(b.admit(100 << 20, t0));
        assert!(b.admit(100 << 20, t0));
        assert!(!b.admit(100 << 20, t0));
        assert!(!b.idle(t0));
    }

    #[test]
    fn a_quiet_source_is_idle_again() {
        let t0 = Instant::now();
        let mut b = LogBudget::new(limits(10, 10), t0);
        assert!(b.admit(1, t0));
        assert!(!b.idle(t0));
        assert!(b.idle(t0 + Duration::from_secs(1)));
    }

    #[test]
    fn a_budget_whose_bytes_are_spent_is_not_forgotten() {
        // Records to spare, bytes gone: forgetting it (a fresh budget is
        // full) would let a source send 4x its byte limit.
        let t0 = Instant::now();
        let mut b = LogBudget::new(
            LogLimits {
                burst_records: 1000,
                records_per_sec: 1000,
                burst_bytes: 4 * MAX_RECORD as u32,
                bytes_per_sec: MAX_RECORD as u32,
            },
            t0,
        );
        for _ in 0..4 {
            assert!(b.admit(MAX_RECORD, t0));
        }
        let t1 = t0 + Duration::from_secs(1);
        assert!(!b.idle(t1), "records full again, bytes a quarter");
        assert!(!b.idle(t0 + Duration::from_secs(3)));
        assert!(b.idle(t0 + Duration::from_secs(4)), "both full again");
    }

    #[test]
    fn an_escaped_record_is_cut_to_the_limit_it_is_counted_at() {
        // 64 KiB of control bytes escape to 256 KiB: cut back to 64 KiB.
        let mut s = econtext_wire::sanitize::text_bytes(&vec![0x1b; MAX_RECORD]);
        assert_eq!(s.len(), 4 * MAX_RECORD);
        assert!(cut_shown(&mut s));
        assert_eq!(s.len(), MAX_RECORD);
        let mut s = "é".repeat(MAX_RECORD / 2 + 1);
        assert!(cut_shown(&mut s));
        assert_eq!(s.len(), MAX_RECORD);
        let mut s = String::from("short");
        assert!(!cut_shown(&mut s));
    }

    #[test]
    fn a_cut_never_splits_a_character() {
        let mut s = vec![b'a'; MAX_RECORD - 1];
        s.extend_from_slice("é and more".as_bytes());
        let (c, cut) = cut_record(&s);
        assert!(cut);
        assert_eq!(c.len(), MAX_RECORD - 1);
        assert!(std::str::from_utf8(c).is_ok());
        assert_eq!(cut_record(b"short"), (&b"short"[..], false));
    }
}
