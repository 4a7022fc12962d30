//! A hostile peer's batch of millions of empty frames: the decoder hands
//! them out one per `decode` call, never all of them made at once (which
//! cost 400-800 MB at the master for one 128 MiB batch). Counted with a
//! global allocator that tracks the bytes live, so this file holds one
//! test only (nothing else allocates while it measures).

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::Relaxed};

use bytes::BytesMut;
use econtext_wire::{Direction, FrameCodec, Header, BATCH_ENTRY_LEN as FIELDS_LEN};
use tokio_util::codec::Decoder;

struct Counting;

static ARMED: AtomicBool = AtomicBool::new(false);
static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if ARMED.load(Relaxed) {
            let live = LIVE.fetch_add(layout.size(), Relaxed) + layout.size();
            PEAK.fetch_max(live, Relaxed);
        }
        System.alloc(layout)
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if ARMED.load(Relaxed) {
            LIVE.fetch_sub(layout.size().min(LIVE.load(Relaxed)), Relaxed);
        }
        System.dealloc(ptr, layout)
    }
}

#[global_allocator]
static COUNTING: Counting = Counting;

#[test]
fn a_batch_of_a_million_empty_frames_is_never_held_as_a_million_frames() {
    const N: usize = 1 << 20;
    let key = b"batch memory test key";
    let entry = Header::new(1, 0, 101, 0).fields(0);
    let mut inner = Vec::with_capacity(N * FIELDS_LEN);
    for _ in 0..N {
        inner.extend_from_slice(&entry);
    }
    let mut tx = FrameCodec::new(key, Direction::Up, 64 << 20);
    let mut rx = FrameCodec::new(key, Direction::Down, 64 << 20);
    let header = tx.seal_batch(&inner).unwrap();
    let mut wire = BytesMut::with_capacity(header.len() + inner.len());
    wire.extend_from_slice(&header);
    wire.extend_from_slice(&inner);
    drop(inner);

    // The batch's own bytes are in `wire` already: anything the decoder
    // allocates past them while it hands out every frame is counted.
    ARMED.store(true, Relaxed);
    let mut got = 0;
    while let Some(frame) = rx.decode(&mut wire).unwrap() {
        assert!(frame.data.is_empty());
        got += 1;
        drop(frame);
    }
    ARMED.store(false, Relaxed);
    let peak = PEAK.load(Relaxed);
    assert_eq!(got, N);
    // One Frame per entry held at once would be N x 48+ bytes (48 MiB+).
    assert!(
        peak < 64 * 1024,
        "the decoder held {peak} bytes at its peak"
    );
}
