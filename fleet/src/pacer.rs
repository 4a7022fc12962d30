//! Connect pacing, as plain data: how many targets may be connecting at
//! once, given how busy the machine's CPUs were over the last interval.
//!
//! Why: a connect is mostly CPU work on the master's side (each ssh
//! client's key exchange is tens of milliseconds of CPU, and a local or
//! loopback target's interpreter start and bootstrap run here too).
//! Started all at once, `forks` handshakes share the cores and every one
//! of them finishes late: the first results arrive only when nearly all
//! are done, and with many targets on few cores the connect deadlines
//! fire because of our own load, not the targets'. So a fan-out keeps a
//! floor of handshakes going (enough to hide network round trips) and
//! starts more only while the CPUs have idle time: on a network of real
//! hosts, where a handshake mostly waits, that soon becomes every fork
//! (the number grows by a floor per interval); on a saturated master it
//! is the floor. The load is the whole machine's (/proc/stat): other work
//! on a shared master holds the connects to the floor too, and a CPU
//! quota the machine's counters do not show goes unseen. Measured on 50
//! loopback hosts on 2 cores (docs/PERFORMANCE.md): 4 to 12 handshakes at
//! once finish the fleet 25-35% sooner than 64 do, and 2 leave the cores
//! idle.

/// At or above this busy fraction the machine has no time to spare
/// (over an interval of 20 ticks, two idle ticks are not spare time).
const BUSY: f64 = 0.9;

/// Handshakes kept going per CPU whatever the load.
const FLOOR_PER_CPU: usize = 4;

#[derive(Debug)]
pub(crate) struct Pacer {
    floor: usize,
    connecting: usize,
    /// Starts allowed above the floor until the next sample.
    credit: usize,
}

impl Pacer {
    /// A pacer for a machine with `cpus` CPUs. Until the first sample it
    /// starts the floor only: nothing is known of the load yet.
    pub(crate) fn new(cpus: usize) -> Pacer {
        Pacer {
            floor: FLOOR_PER_CPU * cpus.max(1),
            connecting: 0,
            credit: 0,
        }
    }

    /// Whether one more target may start connecting now; counts it if so.
    pub(crate) fn try_start(&mut self) -> bool {
        if self.connecting >= self.floor {
            if self.credit == 0 {
                return false;
            }
            self.credit -= 1;
        }
        self.connecting += 1;
        true
    }

    /// A target's connect has ended (connected or not).
    pub(crate) fn finished(&mut self) {
        self.connecting = self.connecting.saturating_sub(1);
    }

    /// The CPUs' busy fraction over the interval that just ended, or None
    /// when it cannot be read (then the ramp is the only limit). Idle time
    /// buys up to a floor's worth of starts in the next interval, so the
    /// number connecting grows by at most the floor per interval.
    pub(crate) fn sample(&mut self, busy: Option<f64>) {
        self.credit = match busy {
            Some(b) if b >= BUSY => 0,
            _ => self.floor,
        };
    }

    #[cfg(test)]
    fn connecting(&self) -> usize {
        self.connecting
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn start_all(p: &mut Pacer) -> usize {
        let mut n = 0;
        while p.try_start() {
            n += 1;
        }
        n
    }

    #[test]
    fn starts_the_floor_before_anything_is_known() {
        let mut p = Pacer::new(2);
        assert_eq!(start_all(&mut p), 8);
        assert_eq!(p.connecting(), 8);
    }

    #[test]
    fn a_busy_machine_holds_at_the_floor() {
        let mut p = Pacer::new(2);
        start_all(&mut p);
        p.sample(Some(0.97));
        assert_eq!(start_all(&mut p), 0);
        p.finished();
        assert_eq!(start_all(&mut p), 1, "a finished handshake frees its place");
    }

    #[test]
    fn idle_time_ramps_up_by_a_floor_per_interval() {
        let mut p = Pacer::new(2);
        start_all(&mut p);
        p.sample(Some(0.3));
        assert_eq!(start_all(&mut p), 8);
        p.sample(Some(0.5));
        assert_eq!(start_all(&mut p), 8);
        assert_eq!(p.connecting(), 24);
        p.sample(Some(BUSY));
        assert_eq!(start_all(&mut p), 0);
    }

    #[test]
    fn unknown_load_ramps_like_idle() {
        let mut p = Pacer::new(1);
        start_all(&mut p);
        p.sample(None);
        assert_eq!(start_all(&mut p), 4);
    }

    #[test]
    fn finishing_more_than_started_does_not_underflow() {
        let mut p = Pacer::new(1);
        p.finished();
        assert_eq!(p.connecting(), 0);
        assert_eq!(start_all(&mut p), 4);
    }
}
