//! The order in which a stream's writer takes its queued frames: small
//! frames (calls, replies, credits, control) overtake bulk ones (file
//! chunks, large values), so a call issued during a 1 GiB push waits for
//! the frame being written, not for the push's whole window.
//!
//! Rules (plain data, no I/O, no clock):
//! - a frame of [`BULK_FRAME`] bytes or more is bulk;
//! - a frame for a (destination, handle) that still has bulk frames
//!   queued is bulk too, so the frames of one handle stay in the order
//!   they were queued (a transfer's last short chunk and its end marker
//!   never pass its big chunks; a big call never loses its place to a
//!   small one after it);
//! - SHUTDOWN is a barrier: it goes behind every queued bulk frame, so
//!   nothing sent before it is lost to it;
//! - bulk gets its share: after [`URGENT_RUN`] bytes of small frames in a
//!   row while bulk waits, one bulk frame goes.
//!
//! The frames' MACs are sealed by the writer in the order it takes them,
//! so reordering here is invisible to the peer's replay check.

use std::collections::{HashMap, VecDeque};

use econtext_wire::{handles, ContextId, Handle, Header};

/// Frames at least this large go in the bulk lane.
pub const BULK_FRAME: usize = 64 * 1024;
/// Bytes of small frames taken in a row, while bulk waits, before one bulk
/// frame is taken anyway (bulk is never starved by a flood of small ones).
pub const URGENT_RUN: usize = 1024 * 1024;

type Key = (ContextId, Handle);

/// Two FIFO lanes with per-handle ordering across them.
pub struct Lanes<T> {
    urgent: VecDeque<(usize, T)>,
    bulk: VecDeque<(Key, usize, T)>,
    /// Bulk frames queued per (destination, handle).
    pending: HashMap<Key, usize>,
    urgent_run: usize,
}

impl<T> Default for Lanes<T> {
    fn default() -> Self {
        Lanes {
            urgent: VecDeque::new(),
            bulk: VecDeque::new(),
            pending: HashMap::new(),
            urgent_run: 0,
        }
    }
}

impl<T> Lanes<T> {
    pub fn new() -> Self {
        Self::default()
    }

    /// Queues `item`, a frame with `header` and `len` bytes of data.
    pub fn push(&mut self, header: &Header, len: usize, item: T) {
        let key = (header.dst, header.handle);
        let barrier = header.handle == handles::SHUTDOWN && !self.bulk.is_empty();
        if len >= BULK_FRAME || barrier || self.pending.contains_key(&key) {
            *self.pending.entry(key).or_insert(0) += 1;
            self.bulk.push_back((key, len, item));
        } else {
            self.urgent.push_back((len, item));
        }
    }

    /// The next frame to write.
    pub fn pop(&mut self) -> Option<T> {
        let starved = self.urgent_run >= URGENT_RUN && !self.bulk.is_empty();
        if !starved {
            if let Some((len, item)) = self.urgent.pop_front() {
                if !self.bulk.is_empty() {
                    self.urgent_run += len;
                }
                return Some(item);
            }
        }
        let (key, _, item) = self.bulk.pop_front()?;
        self.urgent_run = 0;
        match self.pending.get_mut(&key) {
            Some(n) if *n > 1 => *n -= 1,
            _ => {
                self.pending.remove(&key);
            }
        }
        Some(item)
    }

    pub fn is_empty(&self) -> bool {
        self.urgent.is_empty() && self.bulk.is_empty()
    }

    pub fn len(&self) -> usize {
        self.urgent.len() + self.bulk.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(dst: ContextId, handle: Handle) -> Header {
        Header::new(dst, 0, handle, 0)
    }

    fn drain(l: &mut Lanes<&'static str>) -> Vec<&'static str> {
        std::iter::from_fn(|| l.pop()).collect()
    }

    #[test]
    fn a_small_frame_overtakes_queued_bulk() {
        let mut l = Lanes::new();
        l.push(&h(1, 2000), BULK_FRAME, "chunk1");
        l.push(&h(1, 2000), BULK_FRAME, "chunk2");
        l.push(&h(1, handles::CALL_FUNCTION), 100, "call");
        assert_eq!(drain(&mut l), ["call", "chunk1", "chunk2"]);
    }

    #[test]
    fn frames_of_one_handle_keep_their_order() {
        let mut l = Lanes::new();
        l.push(&h(1, 2000), BULK_FRAME, "chunk");
        l.push(&h(1, 2000), 10, "last short chunk");
        l.push(&h(1, 2000), 2, "end");
        l.push(&h(2, 2000), 2, "same handle, other context");
        assert_eq!(
            drain(&mut l),
            [
                "same handle, other context",
                "chunk",
                "last short chunk",
                "end"
            ]
        );
        // Once the bulk is written, the handle's small frames are urgent again.
        l.push(&h(1, 2000), 2, "later");
        l.push(&h(1, 3000), BULK_FRAME, "bulk");
        l.push(&h(1, 2000), 2, "later still");
        assert_eq!(drain(&mut l), ["later", "later still", "bulk"]);
    }

    #[test]
    fn a_big_call_keeps_its_place_before_a_small_one() {
        let mut l = Lanes::new();
        l.push(&h(1, handles::CALL_FUNCTION), 1 << 20, "big call");
        l.push(&h(1, handles::CALL_FUNCTION), 10, "small call");
        assert_eq!(drain(&mut l), ["big call", "small call"]);
    }

    #[test]
    fn shutdown_waits_for_queued_bulk() {
        let mut l = Lanes::new();
        l.push(&h(1, 2000), BULK_FRAME, "chunk");
        l.push(&h(1, handles::SHUTDOWN), 1, "shutdown");
        l.push(&h(1, 2001), 1, "reply");
        assert_eq!(drain(&mut l), ["reply", "chunk", "shutdown"]);
        l.push(&h(1, handles::SHUTDOWN), 1, "shutdown alone");
        assert_eq!(drain(&mut l), ["shutdown alone"]);
    }

    #[test]
    fn bulk_is_not_starved_by_a_flood_of_small_frames() {
        let mut l: Lanes<usize> = Lanes::new();
        l.push(&h(1, 2000), BULK_FRAME, usize::MAX);
        let n = URGENT_RUN / 1000 + 10;
        for i in 0..n {
            l.push(&h(1, 3000 + i as u32), 1000, i);
        }
        let order: Vec<usize> = std::iter::from_fn(|| l.pop()).collect();
        let at = order.iter().position(|x| *x == usize::MAX).unwrap();
        assert_eq!(at, URGENT_RUN / 1000 + 1, "after one run of urgent bytes");
        assert_eq!(order.len(), n + 1);
        assert!(l.is_empty());
    }
}
