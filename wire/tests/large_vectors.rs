//! Shared vectors for frames of 1 MiB and more (`wire/vectors/large.json`),
//! generated rather than committed: the JSON gives each frame's recipe (a
//! MessagePack bin of a byte pattern) and the SHA-1 of the whole stream the
//! Rust encoder makes of them, so no multi-megabyte file is in the
//! repository. The Python core builds the same frames with its own
//! encoder and must produce the same bytes (same SHA-1), then decodes them
//! with its own reader (bootstrap/python/tests/vectors.py, `check_large`).
//! The frames sit on both sides of `TRAILER_FROM` (1 MiB): one byte under
//! (MAC in the header), exactly at it and 3 MiB + 1 (MAC after the data),
//! and a small frame after them (the sequence goes on).
//!
//! `ECONTEXT_REGEN_VECTORS=1 cargo test -p econtext-wire --test large_vectors`
//! rewrites `large.json` from the recipes below.

use std::path::PathBuf;

use bytes::{Bytes, BytesMut};
use econtext_wire::{
    Direction, Frame, FrameCodec, Header, DEFAULT_MAX_MESSAGE_SIZE, HEADER_LEN, MAC_LEN,
    TRAILER_FLAG, TRAILER_FROM,
};
use serde_json::{json, Value as Json};
use sha1::{Digest, Sha1};
use tokio_util::codec::{Decoder, Encoder};

/// The same key as vectors.json's (its bytes, not its hex).
const KEY: &[u8] = b"econtext test vector key, not a secret";
const FORMAT: u64 = 1;
const PATTERN: &str = "byte i of each bin's payload is (i * 31 + 7) % 256";

/// The bins' payload lengths: a bin32 has a 5-byte MessagePack header, so
/// the first two frames are one byte under TRAILER_FROM and exactly it.
fn bin_lens() -> [usize; 4] {
    [TRAILER_FROM - 6, TRAILER_FROM - 5, (3 << 20) + 1, 10]
}

fn header(n: usize) -> Header {
    Header::new(0, 5, 1000 + n as u32, 7 * n as u32)
}

fn bin(len: usize) -> Bytes {
    let payload: Vec<u8> = (0..len).map(|i| (i * 31 + 7) as u8).collect();
    let mut data = Vec::with_capacity(len + 5);
    rmp::encode::write_bin(&mut data, &payload).unwrap();
    Bytes::from(data)
}

fn path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("vectors/large.json")
}

/// What the encoder made of one recipe.
struct Sealed {
    length: usize,
    trailer: bool,
    mac: Vec<u8>,
}

/// The stream a child's encoder makes of the recipes (direction up), and
/// each frame as sealed.
fn encode() -> (Vec<u8>, Vec<Sealed>) {
    let mut tx = FrameCodec::new(KEY, Direction::Up, DEFAULT_MAX_MESSAGE_SIZE);
    let mut wire = BytesMut::new();
    let mut frames = Vec::new();
    for (n, len) in bin_lens().into_iter().enumerate() {
        let data = bin(len);
        let at = wire.len();
        tx.encode(Frame::new(header(n), data.clone()), &mut wire)
            .unwrap();
        let field = u32::from_be_bytes(wire[at + 32..at + 36].try_into().unwrap());
        let trailer = field & TRAILER_FLAG != 0;
        let mac = if trailer {
            wire[wire.len() - MAC_LEN..].to_vec()
        } else {
            wire[at..at + MAC_LEN].to_vec()
        };
        assert_eq!(
            wire.len() - at,
            HEADER_LEN + data.len() + usize::from(trailer) * MAC_LEN
        );
        frames.push(Sealed {
            length: data.len(),
            trailer,
            mac,
        });
    }
    (wire.to_vec(), frames)
}

fn describe(wire: &[u8], frames: &[Sealed]) -> Json {
    let list: Vec<Json> = frames
        .iter()
        .zip(bin_lens())
        .enumerate()
        .map(|(n, (f, bin_len))| {
            let h = header(n);
            json!({"dst": h.dst, "src": h.src, "handle": h.handle, "reply_to": h.reply_to,
                   "bin_len": bin_len, "length": f.length, "trailer": f.trailer,
                   "mac_hex": hex::encode(&f.mac)})
        })
        .collect();
    json!({
        "format": FORMAT,
        "description": "frames of 1 MiB and more, generated from these recipes: each frame's \
                        data is one MessagePack bin (bin32 from 64 KiB) of bin_len bytes; sealed \
                        in order as frames 0, 1, ... of a fresh stream, direction up (a child to \
                        its parent), with the key of vectors.json; a frame of TRAILER_FROM bytes \
                        or more carries its MAC after the data",
        "key_hex": hex::encode(KEY),
        "direction": "up",
        "trailer_from": TRAILER_FROM,
        "pattern": PATTERN,
        "frames": list,
        "size": wire.len(),
        "sha1_hex": hex::encode(Sha1::digest(wire)),
    })
}

#[test]
fn large_frames_match_their_generated_description() {
    let (wire, frames) = encode();
    let want = describe(&wire, &frames);
    if std::env::var_os("ECONTEXT_REGEN_VECTORS").is_some() {
        let text = serde_json::to_string_pretty(&want).unwrap() + "\n";
        std::fs::write(path(), text).unwrap();
        return;
    }
    let text = std::fs::read_to_string(path()).expect("wire/vectors/large.json");
    let got: Json = serde_json::from_str(&text).unwrap();
    assert_eq!(
        got, want,
        "the encoder's output changed: regenerate only on purpose"
    );
    let trailers: Vec<bool> = frames.iter().map(|f| f.trailer).collect();
    assert_eq!(
        trailers,
        [false, true, true, false],
        "both sides of TRAILER_FROM"
    );

    // The parent's decoder takes the stream in 64 KiB pieces, as a reader
    // would, and yields each frame whole.
    let mut rx = FrameCodec::new(KEY, Direction::Down, DEFAULT_MAX_MESSAGE_SIZE);
    let mut buf = BytesMut::new();
    let mut decoded = Vec::new();
    for piece in wire.chunks(64 << 10) {
        buf.extend_from_slice(piece);
        while let Some(f) = rx.decode(&mut buf).unwrap() {
            decoded.push(f);
        }
    }
    assert!(buf.is_empty());
    assert_eq!(decoded.len(), bin_lens().len());
    for (n, (f, len)) in decoded.iter().zip(bin_lens()).enumerate() {
        assert_eq!(f.header, header(n));
        assert_eq!(f.data, bin(len), "frame {n}");
    }
}
