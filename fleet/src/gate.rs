//! The connect gate: the async side of [`Pacer`]. A target holds a
//! [`Permit`] while it connects; waiting targets retry when a permit is
//! dropped or when the next CPU sample is due.

use std::cell::{Cell, RefCell};
use std::time::Duration;

use tokio::sync::Notify;
// tokio's clock: the same as std's, and paused in the tests.
use tokio::time::Instant;

use crate::cpu_load::CpuLoad;
use crate::pacer::Pacer;

/// How often the CPUs' load is sampled while targets wait: /proc/stat
/// counts in ticks of 10 ms per CPU, so 100 ms is 20 ticks on 2 CPUs,
/// and one tick of rounding cannot turn a saturated interval idle.
const INTERVAL: Duration = Duration::from_millis(100);

/// The CPUs' busy fraction since the previous call (None: unknown).
type LoadSource = Box<dyn FnMut() -> Option<f64>>;

pub(crate) struct ConnectGate {
    pacer: RefCell<Pacer>,
    load: RefCell<LoadSource>,
    sampled_at: Cell<Option<Instant>>,
    freed: Notify,
    /// Off: every target starts at once (bounded by forks only).
    paced: bool,
}

/// A place among the targets connecting; given back on drop.
pub(crate) struct Permit<'a> {
    gate: &'a ConnectGate,
}

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        if self.gate.paced {
            self.gate.pacer.borrow_mut().finished();
            self.gate.wake_all();
        }
    }
}

impl ConnectGate {
    /// A gate for this machine: its CPU count and /proc/stat.
    pub(crate) fn new(paced: bool) -> ConnectGate {
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        let mut cpu = CpuLoad::default();
        ConnectGate::with_load(paced, cpus, Box::new(move || cpu.busy_since_last()))
    }

    fn with_load(paced: bool, cpus: usize, load: LoadSource) -> ConnectGate {
        ConnectGate {
            pacer: RefCell::new(Pacer::new(cpus)),
            load: RefCell::new(load),
            sampled_at: Cell::new(None),
            freed: Notify::new(),
            paced,
        }
    }

    /// Waits for a place; None once `stop` is set (checked at every
    /// wake-up, and [`ConnectGate::wake_all`] wakes the waiters at once).
    /// Bounded: places are given back when connects end, and every
    /// connect has its deadline.
    pub(crate) async fn enter(&self, stop: Option<&Cell<bool>>) -> Option<Permit<'_>> {
        loop {
            if stop.is_some_and(Cell::get) {
                return None;
            }
            if self.paced {
                self.sample_if_due();
            }
            let freed = self.freed.notified();
            if !self.paced || self.pacer.borrow_mut().try_start() {
                return Some(Permit { gate: self });
            }
            tokio::select! {
                _ = freed => {}
                _ = tokio::time::sleep(INTERVAL) => {}
            }
        }
    }

    /// Wakes every waiting target (to take a freed place, or see a stop).
    pub(crate) fn wake_all(&self) {
        self.freed.notify_waiters();
    }

    fn sample_if_due(&self) {
        let now = Instant::now();
        match self.sampled_at.get() {
            // The first reading only sets the baseline.
            None => {
                (self.load.borrow_mut())();
            }
            Some(t) if now.duration_since(t) >= INTERVAL => {
                let busy = (self.load.borrow_mut())();
                self.pacer.borrow_mut().sample(busy);
            }
            Some(_) => return,
        }
        self.sampled_at.set(Some(now));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::rc::Rc;

    /// Runs `n` connects of one second each (time is paused: it only
    /// advances when every task waits) and returns the most that held a
    /// place at once.
    async fn peak_connecting(gate: ConnectGate, n: usize) -> usize {
        let gate = Rc::new(gate);
        let now = Rc::new(Cell::new(0usize));
        let peak = Rc::new(Cell::new(0usize));
        let connects = (0..n).map(|_| {
            let (gate, now, peak) = (gate.clone(), now.clone(), peak.clone());
            async move {
                let _permit = gate.enter(None).await.expect("no stop");
                now.set(now.get() + 1);
                peak.set(peak.get().max(now.get()));
                tokio::time::sleep(Duration::from_secs(1)).await;
                now.set(now.get() - 1);
            }
        });
        futures::future::join_all(connects).await;
        assert_eq!(now.get(), 0);
        peak.get()
    }

    #[tokio::test(start_paused = true)]
    async fn a_saturated_machine_holds_connects_at_the_floor() {
        let gate = ConnectGate::with_load(true, 2, Box::new(|| Some(1.0)));
        assert_eq!(peak_connecting(gate, 40).await, 8);
    }

    #[tokio::test(start_paused = true)]
    async fn connects_that_wait_on_the_network_all_start() {
        // Idle CPUs: the handshakes are waiting, not computing.
        let gate = ConnectGate::with_load(true, 2, Box::new(|| Some(0.2)));
        assert_eq!(peak_connecting(gate, 40).await, 40);
    }

    #[tokio::test(start_paused = true)]
    async fn a_stop_ends_the_wait_for_a_place_at_once() {
        let gate = ConnectGate::with_load(true, 1, Box::new(|| Some(1.0)));
        let mut held = Vec::new();
        for _ in 0..4 {
            held.push(gate.enter(None).await.expect("a place"));
        }
        let stop = Cell::new(false);
        let start = Instant::now();
        let stopper = async {
            tokio::time::sleep(Duration::from_millis(10)).await;
            stop.set(true);
            gate.wake_all();
        };
        let (waited, ()) = futures::join!(gate.enter(Some(&stop)), stopper);
        assert!(waited.is_none());
        // Paused time: only the stopper's sleep passed, not a sampling
        // interval, and the four places are still held.
        assert_eq!(start.elapsed(), Duration::from_millis(10));
        assert_eq!(held.len(), 4);
    }

    #[tokio::test(start_paused = true)]
    async fn without_pacing_every_connect_starts_at_once() {
        let gate = ConnectGate::with_load(false, 2, Box::new(|| Some(1.0)));
        assert_eq!(peak_connecting(gate, 40).await, 40);
    }
}
