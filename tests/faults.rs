//! Faults injected on a link: each ends in a typed error for whoever was
//! waiting, closes only the link it hit, and the rest of the tree works.

mod common;

use std::time::Duration;

use bytes::BytesMut;
use common::{run, Capture};
use econtext::testing::SimTree;
use econtext::{Channel, Error, Functions};
use econtext_actors::router::GetStats;
use econtext_wire::{handles, Frame, Header, HEADER_LEN};
use futures::StreamExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::codec::{Decoder, Encoder};

fn functions() -> Functions {
    let mut f = Functions::default();
    f.register("math.add", |(a, b): (i64, i64)| a + b);
    f
}

/// A tree with one real Rust child and one raw link the test controls,
/// plus a call to the raw child already in flight.
async fn tree_with_raw_child() -> (
    SimTree,
    econtext::PendingCall<i64>,
    tokio::io::DuplexStream,
    Capture,
) {
    let cap = Capture::default();
    let mut t = SimTree::new(cap.logger());
    t.spawn("good", 0, functions()).await;
    let (raw, end) = t.attach_raw("raw", 0).await;
    let pending = t
        .context(raw)
        .call_with("math", "add")
        .args((1, 2))
        .unwrap()
        .start::<i64>()
        .await
        .unwrap();
    (t, pending, end, cap)
}

async fn assert_dead_and_others_fine(t: &SimTree, pending: econtext::PendingCall<i64>) {
    let r = tokio::time::timeout(Duration::from_secs(1), pending.result())
        .await
        .expect("the caller hears within 1 s");
    assert!(matches!(r, Err(Error::Dead { .. })), "{r:?}");
    let good = t.context(t.id("good"));
    assert_eq!(good.call::<i64>("math", "add", (2, 3)).await.unwrap(), 5);
}

#[test]
fn bad_mac_closes_only_its_own_link() {
    run(async {
        let (t, pending, mut end, cap) = tree_with_raw_child().await;
        // A well-formed frame sealed with the wrong key.
        let mut wrong = econtext_wire::FrameCodec::new(
            b"not the tree key",
            econtext_wire::Direction::Up,
            1 << 20,
        );
        let mut buf = BytesMut::new();
        wrong
            .encode(
                Frame::new(Header::new(0, 2, handles::FORWARD_LOG, 0), &b"\xc0"[..]),
                &mut buf,
            )
            .unwrap();
        end.write_all(&buf).await.unwrap();
        assert_dead_and_others_fine(&t, pending).await;
        assert!(
            cap.wait_for(&["stream failed", "bad MAC"], 2.0).await,
            "{}",
            cap.text()
        );
    });
}

#[test]
fn flipped_bit_in_a_real_frame_closes_the_link() {
    run(async {
        let (t, pending, mut end, _) = tree_with_raw_child().await;
        let mut codec = t.raw_codec();
        let mut buf = BytesMut::new();
        codec
            .encode(
                Frame::new(Header::new(0, 2, handles::FORWARD_LOG, 0), &b"\xc0"[..]),
                &mut buf,
            )
            .unwrap();
        let last = buf.len() - 1;
        buf[last] ^= 0x01;
        end.write_all(&buf).await.unwrap();
        assert_dead_and_others_fine(&t, pending).await;
    });
}

#[test]
fn oversized_length_closes_the_link_without_buffering() {
    run(async {
        let (t, pending, mut end, cap) = tree_with_raw_child().await;
        let mut header = [0u8; HEADER_LEN];
        header[32..36].copy_from_slice(&u32::MAX.to_be_bytes());
        end.write_all(&header).await.unwrap();
        assert_dead_and_others_fine(&t, pending).await;
        assert!(
            cap.wait_for(&["exceeds max_message_size"], 2.0).await,
            "{}",
            cap.text()
        );
    });
}

#[test]
fn truncated_frame_then_eof_is_an_error() {
    run(async {
        let (t, pending, mut end, cap) = tree_with_raw_child().await;
        let mut codec = t.raw_codec();
        let mut buf = BytesMut::new();
        codec
            .encode(
                Frame::new(Header::new(0, 2, handles::FORWARD_LOG, 0), vec![0xc0; 100]),
                &mut buf,
            )
            .unwrap();
        end.write_all(&buf[..50]).await.unwrap();
        drop(end);
        assert_dead_and_others_fine(&t, pending).await;
        assert!(
            cap.wait_for(&["stream ended mid-frame"], 2.0).await,
            "{}",
            cap.text()
        );
    });
}

#[test]
fn garbage_input_closes_the_link() {
    run(async {
        let (t, pending, mut end, _) = tree_with_raw_child().await;
        end.write_all(b"Last login: yesterday\r\nWelcome to Ubuntu! Have a lot of fun...\r\n")
            .await
            .unwrap();
        assert_dead_and_others_fine(&t, pending).await;
    });
}

#[test]
fn spoofed_source_from_a_child_is_dropped() {
    run(async {
        let (t, _pending, mut end, cap) = tree_with_raw_child().await;
        let good = t.id("good");
        let mut inbox = Channel::open(t.master(), 0, None).await.unwrap();
        let mut codec = t.raw_codec();
        let mut buf = BytesMut::new();
        // The raw child pretends to be `good`.
        codec
            .encode(
                Frame::new(
                    Header::new(0, good, inbox.handle(), 0),
                    econtext_wire::encode(&"forged").unwrap(),
                ),
                &mut buf,
            )
            .unwrap();
        end.write_all(&buf).await.unwrap();
        assert!(
            tokio::time::timeout(Duration::from_millis(300), inbox.next())
                .await
                .is_err(),
            "a forged frame must not be delivered"
        );
        assert!(
            cap.wait_for(&["source outside its stream"], 1.0).await,
            "{}",
            cap.text()
        );
    });
}

#[test]
fn replies_from_a_raw_child_are_delivered() {
    // The raw link is a faithful peer when the test speaks the protocol:
    // this keeps the fault tests above honest.
    run(async {
        let (t, pending, mut end, _) = tree_with_raw_child().await;
        let mut codec = t.raw_codec();
        let mut buf = BytesMut::with_capacity(4096);
        let call = loop {
            if let Some(f) = codec.decode(&mut buf).unwrap() {
                break f;
            }
            end.read_buf(&mut buf).await.unwrap();
        };
        assert_eq!(call.header.handle, handles::CALL_FUNCTION);
        let mut out = BytesMut::new();
        codec
            .encode(
                Frame::new(
                    Header::new(0, call.header.dst, call.header.reply_to, 0),
                    econtext_wire::encode(&3i64).unwrap(),
                ),
                &mut out,
            )
            .unwrap();
        end.write_all(&out).await.unwrap();
        assert_eq!(pending.result().await.unwrap(), 3);
        let _ = t;
    });
}

#[test]
fn peer_that_stops_reading_keeps_writer_memory_bounded() {
    run(async {
        let (t, _pending, end, _) = tree_with_raw_child().await;
        let raw = t.id("raw");
        let ctx = t.context(raw);
        let frame = vec![0u8; 64 * 1024];
        let sent = std::rc::Rc::new(std::cell::Cell::new(0usize));
        let s2 = sent.clone();
        // Try to push 64 MiB at a peer that never reads.
        let writer = actix_rt::spawn(async move {
            for _ in 0..1024 {
                ctx.send(5000, &serde_bytes::Bytes::new(&frame))
                    .await
                    .unwrap();
                s2.set(s2.get() + 1);
            }
        });
        tokio::time::sleep(Duration::from_millis(500)).await;
        let stats = t.master().send(GetStats).await.unwrap();
        let queued = stats.queued_bytes[&raw];
        let hwm = econtext_actors::link::DEFAULT_HIGH_WATER_MARK;
        assert!(!writer.is_finished(), "the sender must be waiting");
        assert!(queued <= hwm, "queued {queued} bytes, mark {hwm}");
        assert!(
            sent.get() * 64 * 1024 <= hwm + t.pipe_capacity + 2 * 64 * 1024,
            "{} frames accepted",
            sent.get()
        );
        writer.abort();
        drop(end);
    });
}
