//! Property tests for the frame codec and the payload checker.
//!
//! Each test is named after the fault it injects. Case counts are kept low
//! enough that the file runs in a few seconds in a debug build; set
//! `PROPTEST_CASES=N` to run more (proptest reads it for every test here,
//! because the config below starts from `ProptestConfig::default()`, which
//! honours the variable, and only lowers the count when it is unset).

use bytes::BytesMut;
use econtext_wire::payload::{check_structure, decode_value, Value};
use econtext_wire::{Direction, Frame, FrameCodec, Header, WireError, HEADER_LEN, MAC_LEN};
use proptest::prelude::*;
use tokio_util::codec::{Decoder, Encoder};

const KEY: &[u8] = b"proptest key: not a secret";

/// The receive limit used by the hostile-input tests: small, so that a
/// buffer grown from an announced length would stand out at once.
const SMALL_MAX: usize = 4096;

/// Largest chunk the tests hand the decoder in one "read".
const MAX_CHUNK: usize = 700;

fn config(default_cases: u32) -> ProptestConfig {
    let base = ProptestConfig::default();
    let cases = if std::env::var_os("PROPTEST_CASES").is_some() {
        base.cases
    } else {
        default_cases
    };
    ProptestConfig {
        cases,
        // Failure persistence files would land in wire/tests/; the
        // shrunk case is printed in the panic message anyway.
        failure_persistence: None,
        ..base
    }
}

fn header() -> impl Strategy<Value = Header> {
    (any::<u16>(), any::<u16>(), any::<u32>(), any::<u32>())
        .prop_map(|(dst, src, handle, reply_to)| Header::new(dst, src, handle, reply_to))
}

fn frame(max_data: usize) -> impl Strategy<Value = Frame> {
    (header(), prop::collection::vec(any::<u8>(), 0..=max_data))
        .prop_map(|(h, data)| Frame::new(h, data))
}

/// Frames with an odd handle are sealed with a trailing MAC, so every
/// property holds for both forms mixed on one stream.
fn trails(f: &Frame) -> bool {
    f.header.handle % 2 == 1
}

fn encode_stream(frames: &[Frame], max: usize) -> Vec<u8> {
    let mut tx = FrameCodec::new(KEY, Direction::Down, max);
    let mut buf = BytesMut::new();
    for f in frames {
        tx.set_trailer_from(if trails(f) { 0 } else { usize::MAX });
        tx.encode(f.clone(), &mut buf)
            .expect("frames within the limit");
    }
    buf.to_vec()
}

/// What feeding a byte stream to a fresh receiver produced.
struct Fed {
    frames: Vec<Frame>,
    error: Option<WireError>,
}

/// Feeds `wire` to a fresh receiving codec in chunks of the given sizes
/// (cycled; a 0 is a read that returned nothing new), the way `FramedRead`
/// does: decode until `None` after each read, `decode_eof` at the end.
/// After every call it checks that the buffer never held or reserved more
/// than one maximal frame plus one read.
fn feed(wire: &[u8], chunks: &[usize], max: usize) -> Fed {
    let mut rx = FrameCodec::new(KEY, Direction::Up, max);
    let mut buf = BytesMut::new();
    let mut frames = Vec::new();
    let mut at = 0;
    // The most the buffer can legitimately hold: an incomplete maximal
    // frame plus one chunk. `reserve` and `extend_from_slice` may round a
    // Vec allocation up to twice what was asked (amortized growth) and the
    // buffer keeps the space of frames already split off until it is
    // reclaimed, so capacity is allowed 4x that; a decoder that trusted an
    // announced length (up to 4 GiB) would exceed it by orders of magnitude.
    let len_bound = HEADER_LEN + max + MAX_CHUNK;
    let cap_bound = 4 * len_bound;
    let check = |buf: &BytesMut| {
        assert!(buf.len() <= len_bound, "buffer holds {} bytes", buf.len());
        assert!(
            buf.capacity() <= cap_bound,
            "buffer capacity {} exceeds {cap_bound}",
            buf.capacity()
        );
    };
    // A run of empty reads is fine, but only reads that deliver bytes end
    // the stream: with no non-empty size at all, read everything at once.
    let chunks = if chunks.iter().all(|&c| c == 0) {
        &[MAX_CHUNK][..]
    } else {
        chunks
    };
    let mut sizes = chunks.iter().cycle();
    loop {
        let eof = at == wire.len();
        let step = loop {
            let result = if eof {
                rx.decode_eof(&mut buf)
            } else {
                rx.decode(&mut buf)
            };
            check(&buf);
            match result {
                Ok(Some(f)) => frames.push(f),
                Ok(None) => break None,
                Err(e) => break Some(e),
            }
        };
        if step.is_some() || eof {
            return Fed {
                frames,
                error: step,
            };
        }
        let n = (*sizes.next().unwrap_or(&MAX_CHUNK)).min(wire.len() - at);
        buf.extend_from_slice(&wire[at..at + n]);
        at += n;
        check(&buf);
    }
}

/// The errors that bytes off the wire may produce in the codec. Payload
/// errors (Malformed, UnknownExt) belong to a later layer, and the sending
/// and I/O errors cannot come out of `decode`.
fn is_codec_error(e: &WireError) -> bool {
    // BadBatch: a mutated length field can set the batch bit on a frame
    // with routing fields (or a trailer), refused from the header alone,
    // before any MAC is checked.
    matches!(
        e,
        WireError::Truncated { .. }
            | WireError::BadMac { .. }
            | WireError::Oversized { .. }
            | WireError::BadBatch { .. }
    )
}

#[derive(Debug, Clone)]
enum Mutation {
    FlipBit {
        at: prop::sample::Index,
        bit: u8,
    },
    SetByte {
        at: prop::sample::Index,
        value: u8,
    },
    Truncate {
        at: prop::sample::Index,
    },
    Delete {
        at: prop::sample::Index,
        len: usize,
    },
    Insert {
        at: prop::sample::Index,
        bytes: Vec<u8>,
    },
    /// Overwrites one frame's `length` field (the first frame's when the
    /// stream is short), the field the decoder trusts for buffering.
    SetLength {
        frame_start: prop::sample::Index,
        length: u32,
    },
}

fn mutation() -> impl Strategy<Value = Mutation> {
    let idx = any::<prop::sample::Index>;
    prop_oneof![
        3 => (idx(), 0u8..8).prop_map(|(at, bit)| Mutation::FlipBit { at, bit }),
        2 => (idx(), any::<u8>()).prop_map(|(at, value)| Mutation::SetByte { at, value }),
        1 => idx().prop_map(|at| Mutation::Truncate { at }),
        1 => (idx(), 1usize..64).prop_map(|(at, len)| Mutation::Delete { at, len }),
        1 => (idx(), prop::collection::vec(any::<u8>(), 1..64))
            .prop_map(|(at, bytes)| Mutation::Insert { at, bytes }),
        2 => (idx(), prop_oneof![
            Just(0u32),
            Just(u32::MAX),
            Just(SMALL_MAX as u32),
            Just(SMALL_MAX as u32 + 1),
            0u32..(2 * SMALL_MAX as u32),
            any::<u32>(),
        ])
            .prop_map(|(frame_start, length)| Mutation::SetLength { frame_start, length }),
    ]
}

/// Applies a mutation; `starts` are the offsets where frames begin.
fn mutate(wire: &mut Vec<u8>, starts: &[usize], m: &Mutation) {
    if wire.is_empty() {
        return;
    }
    let n = wire.len();
    match m {
        Mutation::FlipBit { at, bit } => wire[at.index(n)] ^= 1 << bit,
        Mutation::SetByte { at, value } => wire[at.index(n)] = *value,
        Mutation::Truncate { at } => wire.truncate(at.index(n)),
        Mutation::Delete { at, len } => {
            let a = at.index(n);
            wire.drain(a..(a + len).min(n));
        }
        Mutation::Insert { at, bytes } => {
            let a = at.index(n + 1);
            wire.splice(a..a, bytes.iter().copied());
        }
        Mutation::SetLength {
            frame_start,
            length,
        } => {
            let s = starts[frame_start.index(starts.len())];
            wire[s + 32..s + 36].copy_from_slice(&length.to_be_bytes());
        }
    }
}

proptest! {
    #![proptest_config(config(96))]

    /// Fault: the transport delivers the stream in arbitrary pieces (down to
    /// single bytes and empty reads). Every frame must come out intact, in
    /// order, and a clean EOF after the last one is not an error.
    #[test]
    fn random_chunk_splits_decode_every_frame_identically(
        frames in prop::collection::vec(frame(600), 0..12),
        chunks in prop::collection::vec(
            prop_oneof![Just(0usize), Just(1usize), 1usize..40, 1usize..=MAX_CHUNK],
            1..24,
        ),
    ) {
        let wire = encode_stream(&frames, 1 << 20);
        let fed = feed(&wire, &chunks, 1 << 20);
        prop_assert_eq!(fed.error, None);
        prop_assert_eq!(fed.frames, frames);
    }

    /// Fault: frames at exactly the receive limit, and one byte over it, in
    /// random chunks. At the limit they decode; over it the stream is
    /// refused with Oversized carrying the announced length.
    #[test]
    fn frames_at_and_over_the_limit(
        h in header(),
        over in any::<bool>(),
        fill in any::<u8>(),
        chunks in prop::collection::vec(1usize..=MAX_CHUNK, 1..8),
    ) {
        let len = SMALL_MAX + usize::from(over);
        let f = Frame::new(h, vec![fill; len]);
        let wire = encode_stream(std::slice::from_ref(&f), 1 << 20);
        let fed = feed(&wire, &chunks, SMALL_MAX);
        if over {
            prop_assert!(fed.frames.is_empty());
            prop_assert_eq!(
                fed.error,
                Some(WireError::Oversized { length: len as u64, max: SMALL_MAX })
            );
        } else {
            prop_assert_eq!(fed.error, None);
            prop_assert_eq!(fed.frames, vec![f]);
        }
    }
}

proptest! {
    #![proptest_config(config(256))]

    /// Fault: a peer that sends noise (or a different protocol). The decoder
    /// must not panic, must not buffer more than one maximal frame, and must
    /// end with a codec error or a clean end, never a forged frame.
    #[test]
    fn random_bytes_never_panic_or_overallocate(
        wire in prop::collection::vec(any::<u8>(), 0..3 * SMALL_MAX),
        chunks in prop::collection::vec(1usize..=MAX_CHUNK, 1..8),
    ) {
        let fed = feed(&wire, &chunks, SMALL_MAX);
        // 36 random bytes pass a 160-bit MAC with probability 2^-160.
        prop_assert!(fed.frames.is_empty());
        if let Some(e) = &fed.error {
            prop_assert!(is_codec_error(e), "unexpected error {e:?}");
        } else {
            prop_assert!(wire.is_empty());
        }
    }

    /// Fault: a header whose length field lies (any u32, mostly above the
    /// limit, half of them with the trailer bit) with a random amount of
    /// data after it. The limit is enforced
    /// from the header alone, before buffering the data.
    #[test]
    fn lying_length_field_is_refused_before_buffering(
        h in header(),
        length in prop_oneof![any::<u32>(), (SMALL_MAX as u32 + 1)..=u32::MAX],
        tail in prop::collection::vec(any::<u8>(), 0..2 * MAX_CHUNK),
        chunks in prop::collection::vec(1usize..=MAX_CHUNK, 1..8),
    ) {
        let mut wire = encode_stream(&[Frame::new(h, &b"\xc0"[..])], 1 << 20);
        wire.truncate(HEADER_LEN);
        wire[32..36].copy_from_slice(&length.to_be_bytes());
        wire.extend_from_slice(&tail);
        let fed = feed(&wire, &chunks, SMALL_MAX);
        prop_assert!(fed.frames.is_empty());
        let e = fed.error.expect("a lying header cannot end cleanly");
        // The top bit is the trailer flag; the data length is the rest.
        let (data_len, _) = econtext_wire::split_length(length);
        if data_len as usize > SMALL_MAX {
            prop_assert_eq!(e, WireError::Oversized { length: data_len.into(), max: SMALL_MAX });
        } else {
            prop_assert!(
                matches!(e, WireError::BadMac { .. } | WireError::Truncated { .. }),
                "unexpected error {:?}", e
            );
        }
    }

    /// Fault: a valid stream with bits flipped, bytes overwritten, cut short,
    /// bytes deleted or inserted, or a length field rewritten. Whatever comes
    /// out before the error must be a prefix of what was sent (the MAC sequence
    /// lets nothing altered through), the error must be a codec error, and
    /// the buffer stays bounded throughout.
    #[test]
    fn mutated_streams_yield_a_prefix_then_a_codec_error(
        frames in prop::collection::vec(frame(300), 1..6),
        mutations in prop::collection::vec(mutation(), 1..4),
        chunks in prop::collection::vec(1usize..=MAX_CHUNK, 1..8),
    ) {
        let mut wire = encode_stream(&frames, SMALL_MAX);
        let mut starts = Vec::new();
        let mut at = 0;
        for f in &frames {
            starts.push(at);
            at += HEADER_LEN + f.data.len() + if trails(f) { MAC_LEN } else { 0 };
        }
        let original = wire.clone();
        for m in &mutations {
            // SetLength needs the frame offsets of the unmutated layout.
            if matches!(m, Mutation::SetLength { .. }) && wire.len() != original.len() {
                continue;
            }
            mutate(&mut wire, &starts, m);
        }
        let fed = feed(&wire, &chunks, SMALL_MAX);
        prop_assert!(fed.frames.len() <= frames.len());
        prop_assert_eq!(&fed.frames[..], &frames[..fed.frames.len()]);
        match &fed.error {
            Some(e) => prop_assert!(is_codec_error(e), "unexpected error {e:?}"),
            // A clean end: the mutation was a no-op or cut at a frame
            // boundary, and every byte left was a whole frame.
            None => prop_assert!(original.starts_with(&wire)),
        }
    }
}

// ---------------------------------------------------------------------------
// Payload: check_structure / decode_value against rmpv.

/// Arbitrary MessagePack values, including ext values with any code and
/// containers large enough to need the 16-bit width classes.
fn msgpack_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Nil),
        any::<bool>().prop_map(Value::Boolean),
        any::<u64>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        (-40i64..300).prop_map(Value::from),
        any::<f32>()
            .prop_filter("NaN is not equal to itself", |f| !f.is_nan())
            .prop_map(Value::F32),
        any::<f64>()
            .prop_filter("NaN is not equal to itself", |f| !f.is_nan())
            .prop_map(Value::F64),
        ".{0,40}".prop_map(Value::from),
        prop::collection::vec(any::<u8>(), 0..300).prop_map(Value::Binary),
        (-3i8..8, prop::collection::vec(any::<u8>(), 0..20))
            .prop_map(|(code, data)| Value::Ext(code, data)),
    ];
    leaf.prop_recursive(6, 96, 20, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..20).prop_map(Value::Array),
            prop::collection::vec((inner.clone(), inner), 0..10).prop_map(Value::Map),
        ]
    })
}

fn to_bytes(v: &Value) -> Vec<u8> {
    let mut out = Vec::new();
    rmpv::encode::write_value(&mut out, v).expect("writing to a Vec");
    out
}

/// Whether every ext value inside `v` uses one of the protocol's codes.
fn ext_codes_known(v: &Value) -> bool {
    match v {
        Value::Ext(code, _) => econtext_wire::ext::is_known(*code),
        Value::Array(items) => items.iter().all(ext_codes_known),
        Value::Map(pairs) => pairs
            .iter()
            .all(|(k, v)| ext_codes_known(k) && ext_codes_known(v)),
        _ => true,
    }
}

/// Runs both checkers on `data` and asserts they agree with rmpv: anything
/// decode_value accepts, rmpv reads as exactly one value that uses the whole
/// input and equals what decode_value returned; check_structure accepts
/// exactly what decode_value accepts.
fn assert_consistent_with_rmpv(data: &[u8]) -> Result<(), TestCaseError> {
    let structure = check_structure(data);
    let decoded = decode_value(data);
    match (&structure, &decoded) {
        (Ok(()), Ok(_)) => {}
        (Err(a), Err(b)) => prop_assert_eq!(a, b),
        _ => prop_assert!(
            false,
            "check_structure {:?} but decode_value {:?}",
            structure,
            decoded
        ),
    }
    if let Ok(v) = decoded {
        let mut rest = data;
        let theirs = rmpv::decode::read_value(&mut rest);
        prop_assert!(theirs.is_ok(), "rmpv refused {:02x?}: {:?}", data, theirs);
        prop_assert!(rest.is_empty(), "rmpv left {} bytes", rest.len());
        let theirs = theirs.unwrap();
        // rmpv keeps a str that is not UTF-8 as a str; rmp-serde hands it
        // to the Value visitor as bytes. Compare on the re-encoded form
        // except for that documented difference.
        if !contains_invalid_utf8(&theirs) {
            prop_assert_eq!(&v, &theirs);
        }
        prop_assert!(ext_codes_known(&v), "accepted an unknown ext code: {:?}", v);
    }
    Ok(())
}

fn contains_invalid_utf8(v: &Value) -> bool {
    match v {
        Value::String(s) => s.as_str().is_none(),
        Value::Array(items) => items.iter().any(contains_invalid_utf8),
        Value::Map(pairs) => pairs
            .iter()
            .any(|(k, v)| contains_invalid_utf8(k) || contains_invalid_utf8(v)),
        _ => false,
    }
}

proptest! {
    #![proptest_config(config(512))]

    /// Fault: random bytes where a payload should be. Never a panic; what
    /// is accepted is something rmpv accepts too.
    #[test]
    fn random_payload_bytes_never_panic(
        data in prop::collection::vec(any::<u8>(), 0..200),
    ) {
        assert_consistent_with_rmpv(&data)?;
    }

    /// Fault: byte-level damage to a well-formed value (a length or count
    /// changed, a marker replaced, the value cut short or given trailing
    /// bytes). Same contract as random bytes.
    #[test]
    fn mutated_payloads_never_panic(
        v in msgpack_value(),
        edits in prop::collection::vec(
            (any::<prop::sample::Index>(), any::<u8>(), 0u8..4),
            1..4,
        ),
    ) {
        let mut data = to_bytes(&v);
        for (at, byte, kind) in edits {
            if data.is_empty() {
                data.push(byte);
                continue;
            }
            let i = at.index(data.len());
            match kind {
                0 => data[i] = byte,
                1 => data.truncate(i),
                2 => data.insert(i, byte),
                _ => data[i] ^= 1 << (byte % 8),
            }
        }
        assert_consistent_with_rmpv(&data)?;
    }

    /// Fault: none (the control). A well-formed value is accepted exactly
    /// when all its ext codes are the protocol's, and then decodes to the
    /// value that was encoded, or is refused as UnknownExt.
    #[test]
    fn well_formed_payloads_round_trip_unless_ext_unknown(v in msgpack_value()) {
        let data = to_bytes(&v);
        match decode_value(&data) {
            Ok(got) => {
                prop_assert!(ext_codes_known(&v));
                prop_assert_eq!(got, v);
            }
            Err(WireError::UnknownExt(code)) => {
                prop_assert!(!ext_codes_known(&v));
                prop_assert!(!econtext_wire::ext::is_known(code));
            }
            Err(e) => prop_assert!(false, "refused a well-formed value: {e:?}"),
        }
        assert_consistent_with_rmpv(&data)?;
    }

    /// Fault: nesting past MAX_DEPTH, built from arrays, maps and both
    /// mixed, with a random amount of well-formed content at the bottom.
    #[test]
    fn deep_nesting_is_refused_and_shallow_accepted(
        depth in 1usize..400,
        kinds in prop::collection::vec(0u8..3, 1..8),
    ) {
        let mut data = Vec::new();
        for i in 0..depth {
            match kinds[i % kinds.len()] {
                0 => data.push(0x91),            // [x]
                1 => data.extend([0x81, 0xc0]),  // {nil: x}
                _ => data.extend([0xdc, 0, 1]),  // array16 of one
            }
        }
        data.push(0x2a);
        let got = decode_value(&data);
        if depth <= econtext_wire::payload::MAX_DEPTH {
            prop_assert!(got.is_ok(), "depth {} refused: {:?}", depth, got);
        } else {
            prop_assert!(matches!(got, Err(WireError::Malformed(_))), "depth {}", depth);
        }
        assert_consistent_with_rmpv(&data)?;
    }
}
