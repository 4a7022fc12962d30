//! The master's context ID allocator, as a plain struct with time passed
//! in: it never hands out 0 (the master) or a live ID, reuses freed IDs
//! only after a quarantine (so late frames for a dead context are not
//! delivered to its successor), and says so when the 16-bit space is full.
//!
//! Allocation walks the space in order from where it last stopped, so a
//! freed ID comes back only after every other free ID has been used once,
//! and never within the quarantine. Memory is fixed (one slot per ID).

use std::time::{Duration, Instant};

use econtext_wire::ContextId;

/// IDs can be handed out again this long after their context died.
pub const DEFAULT_QUARANTINE: Duration = Duration::from_secs(30);

/// Every ID is live or in quarantine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error(
    "no context ID free: {live} contexts are alive and {quarantined} IDs are in quarantine \
     (the 16-bit ID space is full; shut contexts down or wait for the quarantine)"
)]
pub struct IdsExhausted {
    pub live: usize,
    pub quarantined: usize,
}

const SLOTS: usize = 1 << 16;
/// Slot state: 0 free, 1 live, otherwise (freed at ms since epoch) + 2.
const FREE: u64 = 0;
const LIVE: u64 = 1;

/// See the module documentation.
pub struct IdAllocator {
    slots: Vec<u64>,
    next: usize,
    live: usize,
    epoch: Instant,
    quarantine: Duration,
}

impl IdAllocator {
    pub fn new(now: Instant, quarantine: Duration) -> Self {
        let mut slots = vec![FREE; SLOTS];
        slots[0] = LIVE; // the master
        IdAllocator {
            slots,
            next: 1,
            live: 0,
            epoch: now,
            quarantine,
        }
    }

    fn ms(&self, now: Instant) -> u64 {
        now.saturating_duration_since(self.epoch).as_millis() as u64
    }

    fn is_free(&self, slot: u64, now_ms: u64) -> bool {
        slot == FREE || (slot > LIVE && now_ms >= slot - 2 + self.quarantine.as_millis() as u64)
    }

    /// A fresh ID, now live.
    pub fn allocate(&mut self, now: Instant) -> Result<ContextId, IdsExhausted> {
        let now_ms = self.ms(now);
        for step in 0..SLOTS - 1 {
            let id = 1 + (self.next - 1 + step) % (SLOTS - 1);
            if self.is_free(self.slots[id], now_ms) {
                self.slots[id] = LIVE;
                self.live += 1;
                self.next = 1 + id % (SLOTS - 1);
                return Ok(id as ContextId);
            }
        }
        Err(IdsExhausted {
            live: self.live,
            quarantined: SLOTS - 1 - self.live,
        })
    }

    /// Marks `id` live (an ID chosen elsewhere, e.g. a test's fixed one).
    pub fn claim(&mut self, id: ContextId) {
        if id != 0 && self.slots[id as usize] != LIVE {
            self.slots[id as usize] = LIVE;
            self.live += 1;
        }
    }

    /// `id`'s context is gone: quarantine it. Unknown IDs are ignored.
    pub fn free(&mut self, id: ContextId, now: Instant) {
        if id != 0 && self.slots[id as usize] == LIVE {
            self.slots[id as usize] = self.ms(now) + 2;
            self.live -= 1;
        }
    }

    pub fn is_live(&self, id: ContextId) -> bool {
        self.slots[id as usize] == LIVE
    }

    /// Contexts alive (the master not counted).
    pub fn live(&self) -> usize {
        self.live
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn never_zero_never_live_and_full_is_an_error() {
        let t0 = Instant::now();
        let mut a = IdAllocator::new(t0, Duration::from_secs(1));
        let mut seen = std::collections::HashSet::new();
        for _ in 0..65535 {
            let id = a.allocate(t0).unwrap();
            assert_ne!(id, 0);
            assert!(seen.insert(id), "{id} handed out twice while live");
        }
        let e = a.allocate(t0).unwrap_err();
        assert_eq!(e.live, 65535);
        assert!(e.to_string().contains("16-bit ID space is full"), "{e}");
    }

    #[test]
    fn freed_ids_come_back_only_after_the_quarantine() {
        let t0 = Instant::now();
        let q = Duration::from_secs(10);
        let mut a = IdAllocator::new(t0, q);
        let ids: Vec<_> = (0..65535).map(|_| a.allocate(t0).unwrap()).collect();
        a.free(ids[100], t0);
        assert!(
            a.allocate(t0 + Duration::from_secs(9)).is_err(),
            "quarantined"
        );
        assert_eq!(a.allocate(t0 + q).unwrap(), ids[100]);
        assert!(a.is_live(ids[100]));
    }

    #[test]
    fn reuse_waits_for_the_whole_space_to_be_used_once() {
        let t0 = Instant::now();
        let mut a = IdAllocator::new(t0, Duration::ZERO);
        let first = a.allocate(t0).unwrap();
        a.free(first, t0);
        let second = a.allocate(t0).unwrap();
        assert_ne!(first, second, "the next ID, not the one just freed");
        let mut last = second;
        for _ in 0..65533 {
            last = a.allocate(t0).unwrap();
        }
        assert_eq!(last, 65535);
        assert_eq!(a.allocate(t0).unwrap(), first, "wraps to the freed one");
    }
}
