//! A stream's spare buffer for large incoming frames.
//!
//! A large frame is read into one allocation of its size, and its data is
//! handed on as a slice of it (no copy). Freshly allocated, those pages
//! are faulted in one by one as the kernel fills them: for a 64 MiB frame
//! 16,384 page faults, about as much CPU as hashing it. So after a large
//! frame the reader keeps a handle on its allocation; once whoever got the
//! frame has dropped it, the next large frame that fits is read into the
//! same (already resident) pages. All streams of the process together keep
//! at most [`RETAIN_AT_MOST`] bytes this way, so a master with 200
//! children that each sent one big reply does not keep 200 of them.
//!
//! A spare nobody used for [`KEEP_IDLE`] is freed ([`release_idle`], from
//! every Router's tick), so a context that moved one large value is not
//! that much bigger for the rest of its life; back-to-back large frames
//! (the echo benchmark) still reuse it.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use econtext_wire::{FrameCodec, HEADER_LEN};

/// Frames of at least this many bytes on the wire get a buffer of their
/// own, worth keeping.
pub(crate) const LARGE: usize = 1 << 20;

/// Bytes of spare buffers all streams of the process may keep at once.
pub const RETAIN_AT_MOST: usize = 256 << 20;

/// How long a kept buffer (a spare, or [`crate::bufpool`]'s) may go
/// unused before it is freed.
pub const KEEP_IDLE: Duration = Duration::from_secs(2);

/// Bytes of spare buffers kept by all streams now.
static RETAINED: AtomicUsize = AtomicUsize::new(0);

/// Every stream's spare slot, for [`release_idle`].
static SLOTS: Mutex<Vec<Weak<Mutex<Option<Held>>>>> = Mutex::new(Vec::new());

/// A kept allocation: its size, and when [`release_idle`] first saw it
/// unused (None: not yet).
struct Held {
    buf: BytesMut,
    size: usize,
    seen: Option<Instant>,
}

/// One stream's spare: the allocation of the last large frame it read
/// (shared with that frame's data until it is dropped), and its size. The
/// slot is shared with [`release_idle`] (registered at the first keep).
#[derive(Default)]
pub(crate) struct Spare {
    slot: Option<Arc<Mutex<Option<Held>>>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Spare {
    fn take(&self) -> Option<Held> {
        let held = lock(self.slot.as_ref()?).take()?;
        RETAINED.fetch_sub(held.size, Ordering::Relaxed);
        Some(held)
    }

    /// Before decoding: when `buf` begins a large frame it has no room
    /// for (and a header after it, as the decoder reserves), moves what
    /// has arrived of it into the spare allocation, if nothing else uses
    /// that any more and it is big enough.
    pub(crate) fn place(&mut self, buf: &mut BytesMut) {
        let Some(need) = FrameCodec::next_frame_len(buf) else {
            return;
        };
        if need < LARGE || buf.capacity() >= need + HEADER_LEN {
            return;
        }
        let Some(Held { buf: mut spare, .. }) = self.take() else {
            return;
        };
        // Succeeds only when this is the allocation's last handle (the
        // frame read into it was dropped) and it holds `need` bytes.
        if spare.try_reclaim(need + HEADER_LEN) {
            // `buf` holds the start of this frame and nothing after it.
            spare.extend_from_slice(buf);
            *buf = spare;
        }
    }

    /// After a large frame was split off the front of `buf`: keeps its
    /// allocation as the spare (if the process-wide bound allows) and
    /// gives `buf` a fresh small buffer with the bytes that followed it.
    pub(crate) fn keep(&mut self, buf: &mut BytesMut, size: usize, fresh: usize) {
        let slot = self.slot.get_or_insert_with(|| {
            let slot = Arc::new(Mutex::new(None));
            let mut slots = lock(&SLOTS);
            slots.retain(|w| w.strong_count() > 0);
            slots.push(Arc::downgrade(&slot));
            slot
        });
        let mut held = lock(slot);
        if held.is_some() {
            return; // one per stream: the frame did not use the spare
        }
        let retained = RETAINED.fetch_add(size, Ordering::Relaxed);
        if retained + size > RETAIN_AT_MOST {
            RETAINED.fetch_sub(size, Ordering::Relaxed);
            return;
        }
        let mut tail = std::mem::replace(buf, BytesMut::with_capacity(fresh.max(buf.len())));
        buf.extend_from_slice(&tail);
        tail.clear();
        *held = Some(Held {
            buf: tail,
            size,
            seen: None,
        });
    }
}

impl Drop for Spare {
    fn drop(&mut self) {
        drop(self.take());
    }
}

/// Frees every stream's spare that has been unused for [`KEEP_IDLE`] by
/// `now` (as first seen unused by an earlier call), and the same of
/// [`crate::bufpool`]'s kept buffers. Cheap: a lock and a look per
/// stream that ever kept one.
pub(crate) fn release_idle(now: Instant) {
    let slots: Vec<_> = lock(&SLOTS).iter().filter_map(Weak::upgrade).collect();
    for slot in slots {
        release_if_idle(&slot, now);
    }
    crate::bufpool::release_idle(now, KEEP_IDLE);
}

/// Frees the spare in `slot` if unused for [`KEEP_IDLE`] by `now`; true
/// if it did.
fn release_if_idle(slot: &Mutex<Option<Held>>, now: Instant) -> bool {
    let mut held = lock(slot);
    let idle = match held.as_mut() {
        None => false,
        Some(h) => now.saturating_duration_since(*h.seen.get_or_insert(now)) >= KEEP_IDLE,
    };
    if idle {
        if let Some(h) = held.take() {
            RETAINED.fetch_sub(h.size, Ordering::Relaxed);
        }
    }
    idle
}

/// Bytes of spare buffers kept by all streams now.
pub(crate) fn retained() -> usize {
    RETAINED.load(Ordering::Relaxed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use econtext_wire::{Direction, Frame, Header};
    use tokio_util::codec::{Decoder, Encoder};

    const KEY: &[u8] = b"k";
    /// A 3 MiB frame on the wire: header, data, trailing MAC.
    const FRAME: usize = HEADER_LEN + (3 << 20) + econtext_wire::MAC_LEN;

    fn wire(frames: usize, len: usize) -> Vec<u8> {
        let mut tx = FrameCodec::new(KEY, Direction::Down, 8 << 20);
        let mut out = BytesMut::new();
        for n in 0..frames {
            let f = Frame::new(Header::new(1, 0, 100, 0), vec![n as u8; len]);
            tx.encode(f, &mut out).unwrap();
        }
        out.to_vec()
    }

    /// Reads `wire` (frames of `size` bytes) in 256 KiB pieces the way the
    /// stream's read loop does, each frame arriving after the one before
    /// was handed on, calling `on_frame` with each frame as it comes.
    fn read(spare: &mut Spare, wire: &[u8], size: usize, mut on_frame: impl FnMut(Bytes)) {
        let mut rx = FrameCodec::new(KEY, Direction::Up, 8 << 20);
        let mut buf = BytesMut::new();
        let pieces = wire.chunks(size).flat_map(|f| f.chunks(256 << 10));
        for piece in pieces {
            spare.place(&mut buf);
            buf.extend_from_slice(piece);
            spare.place(&mut buf);
            while let Some(f) = rx.decode(&mut buf).unwrap() {
                if f.data.len() >= LARGE {
                    spare.keep(&mut buf, f.data.len(), 64 << 10);
                }
                on_frame(f.data);
            }
        }
        assert!(buf.is_empty());
    }

    #[test]
    fn a_dropped_large_frames_pages_take_the_next_one() {
        let mut spare = Spare::default();
        let mut seen = Vec::new();
        read(&mut spare, &wire(3, 3 << 20), FRAME, |data| {
            seen.push((data.as_ptr() as usize, data[0]));
        });
        assert_eq!(seen.iter().map(|s| s.1).collect::<Vec<_>>(), [0, 1, 2]);
        // Each frame was dropped before the next arrived: one allocation.
        assert_eq!(seen[0].0, seen[1].0);
        assert_eq!(seen[1].0, seen[2].0);
    }

    #[test]
    fn a_spare_unused_for_keep_idle_is_freed_and_one_in_use_is_not() {
        let t0 = Instant::now();
        let slot = Mutex::new(Some(Held {
            buf: BytesMut::with_capacity(4 << 20),
            size: 0,
            seen: None,
        }));
        assert!(!release_if_idle(&slot, t0), "first seen unused now");
        assert!(!release_if_idle(&slot, t0 + KEEP_IDLE / 2));
        assert!(release_if_idle(&slot, t0 + KEEP_IDLE));
        assert!(lock(&slot).is_none());
        // Used again (taken and kept anew): its age starts over.
        *lock(&slot) = Some(Held {
            buf: BytesMut::with_capacity(4 << 20),
            size: 0,
            seen: None,
        });
        assert!(!release_if_idle(&slot, t0 + 10 * KEEP_IDLE));
        assert!(lock(&slot).is_some());
    }

    #[test]
    fn a_large_frame_still_held_is_never_overwritten() {
        let mut spare = Spare::default();
        let mut kept = Vec::new();
        read(&mut spare, &wire(3, 3 << 20), FRAME, |data| kept.push(data));
        for (n, data) in kept.iter().enumerate() {
            assert!(data.iter().all(|&b| b == n as u8), "frame {n} intact");
        }
        assert_ne!(kept[0].as_ptr(), kept[1].as_ptr());
    }
}
