//! Frame codec throughput: encode + MAC and decode + verify, for a small
//! frame (100 bytes of data, the size of a typical call or reply) and a
//! large one (1 MiB, a module or file transfer).
//!
//! Every case is measured twice, once reporting bytes/s and once
//! frames/s, because criterion reports one throughput per benchmark.
//! One iteration is one frame either way, so the two groups measure the
//! same thing. `cargo bench -p econtext-wire --bench codec` runs it all in
//! about a minute; the figures are in docs/PERFORMANCE.md.

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use econtext_wire::{Direction, Frame, FrameCodec, Header, HEADER_LEN};
use tokio_util::codec::{Decoder, Encoder};

const KEY: &[u8] = b"0123456789abcdef0123456789abcdef";
const MAX: usize = 4 << 20;
const SIZES: [(&str, usize); 2] = [("100B", 100), ("1MiB", 1 << 20)];

fn frame(size: usize) -> Frame {
    let data: Vec<u8> = (0..size).map(|i| (i * 31 + 7) as u8).collect();
    Frame::new(Header::new(1, 0, 101, 1000), Bytes::from(data))
}

fn codec(c: &mut Criterion) {
    for unit in ["bytes", "frames"] {
        let mut group = c.benchmark_group(format!("codec_{unit}"));
        for (label, size) in SIZES {
            // Bytes on the wire per frame: the header counts too.
            group.throughput(match unit {
                "bytes" => Throughput::Bytes((HEADER_LEN + size) as u64),
                _ => Throughput::Elements(1),
            });
            let f = frame(size);

            // Encode: seal on a sequence that carries on across iterations (as
            // on a real stream) and copy header and data into the buffer.
            group.bench_function(format!("encode_mac/{label}"), |b| {
                let mut tx = FrameCodec::new(KEY, Direction::Down, MAX);
                let mut buf = BytesMut::with_capacity(HEADER_LEN + size);
                b.iter(|| {
                    buf.clear();
                    tx.encode(f.clone(), &mut buf).unwrap();
                });
            });

            // Decode: a fresh receiver and a buffer holding one sealed
            // frame are made outside the timed part (the sequence is
            // stateful, so every iteration needs its own); the timed part
            // parses the header, verifies the MAC and splits the frame off.
            let mut wire = BytesMut::new();
            FrameCodec::new(KEY, Direction::Down, MAX)
                .encode(f.clone(), &mut wire)
                .unwrap();
            group.bench_function(format!("decode_verify/{label}"), |b| {
                b.iter_batched(
                    || (FrameCodec::new(KEY, Direction::Up, MAX), wire.clone()),
                    |(mut rx, mut buf)| rx.decode(&mut buf).unwrap().unwrap(),
                    BatchSize::SmallInput,
                );
            });
        }
        group.finish();
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .sample_size(30);
    targets = codec
}
criterion_main!(benches);
