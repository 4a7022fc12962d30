//! What is fuzzed, and what each target asserts besides "no panic".
//!
//! Every target returns an outcome code (which error, which kind of
//! success): inputs with a new outcome join the corpus, a cheap stand-in
//! for coverage feedback.

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};

use bytes::BytesMut;
use econtext_actors::iologger::ByteLines;
use econtext_bootstrap::handshake::{Handshake, Step};
use econtext_wire::messages::{AddRoute, CallFunctionRequest, ForwardLog, ModuleReply, Spawn};
use econtext_wire::payload::{check_structure, decode_value};
use econtext_wire::{
    decode, sanitize, CallError, Dead, Direction, Frame, FrameCodec, Header, Reply, Value,
    DEFAULT_MAX_MESSAGE_SIZE,
};
use tokio_util::codec::{Decoder, Encoder};

/// The key `wire/vectors` are sealed with (see its README).
pub const VECTOR_KEY: &[u8] = b"econtext test vector key, not a secret";

/// The fuzz targets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Target {
    /// Raw streams into `FrameCodec` (both directions, real max size).
    Frames,
    /// Frames sealed with a valid MAC (so decoding gets past the MAC),
    /// round-tripped, their data through the payload checks.
    Sealed,
    /// `check_structure`, `decode_value` and every typed message decoder.
    Payload,
    /// The `EC0`/`EC1` handshake parser, fed in random chunks.
    Handshake,
    /// The sanitizer and IoLogger's line splitter.
    Sanitize,
    /// The Python core's `unpack` (a Python child process).
    Python,
}

impl Target {
    pub const ALL: [Target; 6] = [
        Target::Frames,
        Target::Sealed,
        Target::Payload,
        Target::Handshake,
        Target::Sanitize,
        Target::Python,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Target::Frames => "frames",
            Target::Sealed => "sealed",
            Target::Payload => "payload",
            Target::Handshake => "handshake",
            Target::Sanitize => "sanitize",
            Target::Python => "python",
        }
    }

    pub fn from_name(s: &str) -> Option<Target> {
        Target::ALL.into_iter().find(|t| t.name() == s)
    }

    /// Runs one input through a Rust target (not [`Target::Python`]).
    pub fn run(self, input: &[u8]) -> u64 {
        match self {
            Target::Frames => frames(input),
            Target::Sealed => sealed(input),
            Target::Payload => payload(input),
            Target::Handshake => handshake(input),
            Target::Sanitize => sanitized(input),
            Target::Python => unreachable!("the Python target runs in a child process"),
        }
    }
}

fn outcome<T: Hash>(t: T) -> u64 {
    let mut h = DefaultHasher::new();
    t.hash(&mut h);
    h.finish()
}

/// The error's text up to its first digit: the variant, not the numbers.
fn error_class(e: &impl std::fmt::Display) -> String {
    e.to_string()
        .chars()
        .take_while(|c| !c.is_ascii_digit())
        .take(40)
        .collect()
}

fn frames(input: &[u8]) -> u64 {
    let mut out = 0;
    for dir in [Direction::Up, Direction::Down] {
        let mut codec = FrameCodec::new(VECTOR_KEY, dir, DEFAULT_MAX_MESSAGE_SIZE);
        let mut buf = BytesMut::from(input);
        let mut n = 0u32;
        let end = loop {
            match codec.decode(&mut buf) {
                Ok(Some(f)) => {
                    n += 1;
                    payload(&f.data);
                }
                Ok(None) => match codec.decode_eof(&mut buf) {
                    Ok(Some(f)) => {
                        n += 1;
                        payload(&f.data);
                    }
                    Ok(None) => break String::from("eof"),
                    Err(e) => break error_class(&e),
                },
                Err(e) => break error_class(&e),
            }
        };
        out ^= outcome((dir as u8, n.min(4), end));
    }
    out
}

fn sealed(input: &[u8]) -> u64 {
    if input.len() < 12 {
        return 0;
    }
    let be16 = |i: usize| u16::from_be_bytes([input[i], input[i + 1]]);
    let be32 = |i: usize| u32::from_be_bytes([input[i], input[i + 1], input[i + 2], input[i + 3]]);
    let header = Header::new(be16(0), be16(2), be32(4), be32(8));
    let frame = Frame::new(header, input[12..].to_vec());
    let mut tx = FrameCodec::new(VECTOR_KEY, Direction::Down, DEFAULT_MAX_MESSAGE_SIZE);
    let mut rx = FrameCodec::new(VECTOR_KEY, Direction::Up, DEFAULT_MAX_MESSAGE_SIZE);
    let mut buf = BytesMut::new();
    tx.encode(frame.clone(), &mut buf)
        .expect("a small frame encodes");
    let got = rx
        .decode(&mut buf)
        .expect("a sealed frame decodes")
        .expect("a whole frame");
    assert_eq!(got, frame, "a sealed frame round-trips");
    assert!(buf.is_empty());
    payload(&frame.data)
}

fn payload(data: &[u8]) -> u64 {
    let structure = check_structure(data);
    let value = decode_value(data);
    match (&structure, &value) {
        (Ok(()), Ok(_)) => {}
        (Err(a), Err(b)) => assert_eq!(a, b, "check_structure and decode_value disagree"),
        _ => panic!("check_structure {structure:?} but decode_value {value:?}"),
    }
    if let Ok(v) = &value {
        // Anything we accept re-encodes to something we accept again, and
        // that encodes the same (bytes, not values: NaN != NaN).
        let enc = |v: &Value| {
            let mut out = Vec::new();
            rmpv::encode::write_value(&mut out, v).expect("writing to a Vec");
            out
        };
        let again = enc(v);
        let back = decode_value(&again).expect("a re-encoded value decodes");
        assert_eq!(enc(&back), again, "re-encoded value differs");
    }
    // Every typed decoder the runtime applies to a peer's data.
    let typed = [
        decode::<Spawn>(data).is_ok(),
        decode::<CallFunctionRequest>(data).is_ok(),
        decode::<ForwardLog>(data).is_ok(),
        decode::<ModuleReply>(data).is_ok(),
        decode::<AddRoute>(data).is_ok(),
        decode::<u16>(data).is_ok(),
        decode::<Dead>(data).is_ok(),
        decode::<CallError>(data).is_ok(),
        matches!(Reply::<Value>::decode(data), Ok(Reply::Value(_))),
        Reply::<Vec<u64>>::decode(data).is_ok(),
    ];
    let head = data.first().copied().unwrap_or(0);
    outcome((structure.map_err(|e| error_class(&e)), typed, head >> 4))
}

fn handshake(input: &[u8]) -> u64 {
    let mut hs = Handshake::default();
    let step = (input.first().copied().unwrap_or(1) as usize % 7) + 1;
    let mut fed = 0usize;
    let mut sends = 0;
    for chunk in input.chunks(step) {
        fed += chunk.len();
        match hs.feed(chunk) {
            Ok(Step::Read) => {}
            Ok(Step::SendPayload) => sends += 1,
            Ok(Step::Done(rest)) => {
                // Nothing past EC1 is lost or invented.
                assert!(
                    input[..fed].ends_with(&rest),
                    "Done bytes are not the input's tail"
                );
                assert_eq!(sends, 1, "the payload is sent exactly once");
                return outcome(("done", rest.is_empty()));
            }
            Err(e) => return outcome(("err", error_class(&e))),
        }
        assert!(hs.noise.len() <= 64 * 1024 + 4096, "noise kept unbounded");
    }
    outcome(("read", sends))
}

fn sanitized(input: &[u8]) -> u64 {
    let field = sanitize::field_bytes(input);
    assert!(
        !field.chars().any(|c| c.is_control() && c != '\t'),
        "a control character survived field_bytes: {field:?}"
    );
    let text = sanitize::text_bytes(input);
    assert!(
        !text
            .chars()
            .any(|c| c.is_control() && c != '\t' && c != '\n'),
        "a control character survived text_bytes: {text:?}"
    );
    for (i, _) in text.match_indices('\n') {
        assert!(
            text[i..].starts_with(sanitize::CONTINUATION),
            "an unmarked line in {text:?}"
        );
    }
    // IoLogger's splitter: every line bounded, newline-free, and reading
    // never stops.
    let max = 16;
    let mut lines = ByteLines::new(max);
    let mut buf = BytesMut::new();
    let mut n = 0usize;
    for chunk in input.chunks(7) {
        buf.extend_from_slice(chunk);
        while let Some(l) = lines.decode(&mut buf).expect("ByteLines never fails") {
            assert!(l.bytes.len() <= max && !l.bytes.contains(&b'\n'));
            n += 1;
        }
    }
    while let Some(l) = lines.decode_eof(&mut buf).expect("ByteLines never fails") {
        assert!(l.bytes.len() <= max);
        n += 1;
    }
    outcome((n.min(8), field.len() == input.len()))
}
