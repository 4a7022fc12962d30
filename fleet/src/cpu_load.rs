//! The machine's CPU busy fraction between two readings, from Linux's
//! /proc/stat (elsewhere: unknown, and the pacer only ramps).

use std::fs;

/// Busy and total jiffies of all CPUs together.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Jiffies {
    busy: u64,
    total: u64,
}

/// Reads successive busy fractions.
#[derive(Debug, Default)]
pub(crate) struct CpuLoad {
    last: Option<Jiffies>,
}

impl CpuLoad {
    /// The busy fraction since the previous call (None on the first call,
    /// when nothing elapsed, or when /proc/stat cannot be read).
    pub(crate) fn busy_since_last(&mut self) -> Option<f64> {
        let now = fs::read_to_string("/proc/stat")
            .ok()
            .and_then(|s| parse(&s));
        let before = std::mem::replace(&mut self.last, now);
        fraction(before?, now?)
    }
}

fn fraction(a: Jiffies, b: Jiffies) -> Option<f64> {
    let total = b.total.checked_sub(a.total).filter(|&t| t > 0)?;
    let busy = b.busy.saturating_sub(a.busy);
    Some((busy as f64 / total as f64).min(1.0))
}

/// The first line: `cpu user nice system idle iowait irq softirq steal
/// guest guest_nice` (guest time is already in user and nice).
fn parse(stat: &str) -> Option<Jiffies> {
    let line = stat.lines().next()?.strip_prefix("cpu ")?;
    let v: Vec<u64> = line
        .split_whitespace()
        .take(8)
        .map(|f| f.parse().ok())
        .collect::<Option<_>>()?;
    if v.len() < 5 {
        return None;
    }
    let total: u64 = v.iter().sum();
    let idle = v[3] + v[4];
    Some(Jiffies {
        busy: total - idle,
        total,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_summary_line() {
        let s = "cpu  100 5 50 800 45 0 0 0 0 0\ncpu0 1 2 3 4 5 6 7 8 0 0\n";
        assert_eq!(
            parse(s),
            Some(Jiffies {
                busy: 155,
                total: 1000
            })
        );
    }

    #[test]
    fn busy_fraction_between_readings() {
        let a = Jiffies {
            busy: 100,
            total: 1000,
        };
        let b = Jiffies {
            busy: 190,
            total: 1100,
        };
        assert_eq!(fraction(a, b), Some(0.9));
        assert_eq!(fraction(b, b), None, "no time elapsed");
    }

    #[test]
    fn garbage_is_unknown() {
        assert_eq!(parse(""), None);
        assert_eq!(parse("intr 1 2 3"), None);
        assert_eq!(parse("cpu  1 x 3 4 5"), None);
    }

    #[test]
    fn reads_this_machine_on_linux() {
        let mut c = CpuLoad::default();
        assert_eq!(c.busy_since_last(), None);
        if cfg!(target_os = "linux") {
            std::thread::sleep(std::time::Duration::from_millis(30));
            let b = c.busy_since_last();
            assert!(b.map_or(true, |b| (0.0..=1.0).contains(&b)), "{b:?}");
        }
    }
}
