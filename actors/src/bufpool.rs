//! Large outgoing buffers, kept for the next large call.
//!
//! A call with a 64 MiB argument encodes it into a buffer of its own,
//! which is freed once the frame is written; the next such call's buffer
//! is fresh memory again, and filling it costs a page fault per 4 KiB
//! (16,384 for 64 MiB: most of the encode's CPU, and all of it before the
//! first byte can go). So an encode that grows past [`LARGE`] continues in
//! a kept buffer when there is one big enough, and the frame's data
//! ([`frozen`]) returns its buffer here when the last slice of it is
//! dropped. At most [`KEEP`] buffers and [`KEEP_BYTES`] bytes are kept
//! for the whole process, and none unused for longer than
//! [`crate::spare::KEEP_IDLE`] ([`release_idle`]).

use std::io::Write;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use bytes::Bytes;

/// Buffers at least this big are worth keeping.
pub(crate) const LARGE: usize = 1 << 20;
/// Buffers kept at most.
const KEEP: usize = 2;
/// Bytes of kept buffers at most.
pub const KEEP_BYTES: usize = 256 << 20;

/// Kept buffers, each with when [`release_idle`] first saw it unused.
static KEPT: Mutex<Vec<(Vec<u8>, Option<Instant>)>> = Mutex::new(Vec::new());

/// A kept buffer with room for at least `need` bytes, emptied.
fn take(need: usize) -> Option<Vec<u8>> {
    let mut kept = KEPT.lock().ok()?;
    let i = kept.iter().position(|(v, _)| v.capacity() >= need)?;
    let (mut v, _) = kept.swap_remove(i);
    v.clear();
    Some(v)
}

/// Keeps `v` for a later large encode, if the bounds allow.
fn give(v: Vec<u8>) {
    let Ok(mut kept) = KEPT.lock() else { return };
    let bytes: usize = kept.iter().map(|(v, _)| v.capacity()).sum();
    if kept.len() < KEEP && bytes + v.capacity() <= KEEP_BYTES {
        kept.push((v, None));
    }
}

/// Frees the kept buffers unused for `idle` by `now` (as first seen
/// unused by an earlier call): a context that sent one large value does
/// not keep its buffer for life ([`crate::spare::release_idle`] calls
/// this from every Router's tick).
pub(crate) fn release_idle(now: Instant, idle: Duration) {
    if let Ok(mut kept) = KEPT.lock() {
        keep_recent(&mut kept, now, idle);
    }
}

fn keep_recent(kept: &mut Vec<(Vec<u8>, Option<Instant>)>, now: Instant, idle: Duration) {
    kept.retain_mut(|(_, seen)| now.saturating_duration_since(*seen.get_or_insert(now)) < idle);
}

/// Bytes of kept buffers now.
pub(crate) fn kept_bytes() -> usize {
    KEPT.lock()
        .map(|k| k.iter().map(|(v, _)| v.capacity()).sum())
        .unwrap_or(0)
}

/// The encoded bytes of a large buffer; the buffer goes back to the pool
/// when the last `Bytes` sliced from it is dropped.
struct Kept(Vec<u8>);

impl AsRef<[u8]> for Kept {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

impl Drop for Kept {
    fn drop(&mut self) {
        give(std::mem::take(&mut self.0));
    }
}

/// `buf` as `Bytes`: a large one returns to the pool when dropped.
pub(crate) fn frozen(buf: Vec<u8>) -> Bytes {
    if buf.capacity() >= LARGE {
        Bytes::from_owner(Kept(buf))
    } else {
        Bytes::from(buf)
    }
}

/// A `Write` into `buf` that, when one write would grow it past
/// [`LARGE`], moves what it holds into a kept buffer with room for it all
/// (if there is one) and goes on there: the encode of a 64 MiB argument
/// writes it in one piece, into pages that are already there.
pub(crate) struct Growing<'a>(pub(crate) &'a mut Vec<u8>);

impl Write for Growing<'_> {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        let v = &mut *self.0;
        let need = v.len() + b.len();
        if need > v.capacity() && need >= LARGE {
            if let Some(mut kept) = take(need) {
                kept.extend_from_slice(v);
                *v = kept;
            }
        }
        v.extend_from_slice(b);
        Ok(b.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The pool is process-wide: these tests take turns with it.
    static TURN: Mutex<()> = Mutex::new(());

    #[test]
    fn a_large_buffer_dropped_is_the_next_large_encode() {
        let _turn = TURN.lock().unwrap();
        let mut a = vec![0u8; 16];
        Growing(&mut a).write_all(&[7u8; 3 << 20]).unwrap();
        let bytes = frozen(a).slice(16..);
        let at = bytes.as_ptr() as usize - 16;
        assert!(bytes.iter().all(|&b| b == 7));
        drop(bytes);
        let mut b = vec![1u8; 16];
        Growing(&mut b).write_all(&[9u8; 3 << 20]).unwrap();
        assert_eq!(b.as_ptr() as usize, at, "the kept buffer");
        assert_eq!(&b[..16], &[1u8; 16]);
        assert_eq!(b.len(), 16 + (3 << 20));
        assert!(b[16..].iter().all(|&x| x == 9));
    }

    #[test]
    fn a_buffer_still_held_is_not_reused() {
        let _turn = TURN.lock().unwrap();
        let mut a = Vec::new();
        Growing(&mut a).write_all(&[3u8; 2 << 20]).unwrap();
        let held = frozen(a);
        let mut b = Vec::new();
        Growing(&mut b).write_all(&[4u8; 2 << 20]).unwrap();
        assert_ne!(held.as_ptr(), b.as_ptr());
        assert!(held.iter().all(|&x| x == 3));
    }

    #[test]
    fn a_kept_buffer_unused_for_the_idle_time_is_freed() {
        let t0 = Instant::now();
        let idle = Duration::from_secs(2);
        let mut kept = vec![(vec![0u8; 16], None)];
        keep_recent(&mut kept, t0, idle);
        keep_recent(&mut kept, t0 + idle / 2, idle);
        assert_eq!(kept.len(), 1);
        // One given back meanwhile is seen from the next call on.
        kept.push((vec![0u8; 16], None));
        keep_recent(&mut kept, t0 + idle, idle);
        assert_eq!(kept.len(), 1, "the first one went, the second stays");
        keep_recent(&mut kept, t0 + 2 * idle, idle);
        assert!(kept.is_empty());
    }

    #[test]
    fn small_buffers_are_not_kept() {
        let small = frozen(vec![0u8; 100]);
        assert_eq!(small.len(), 100);
    }
}
