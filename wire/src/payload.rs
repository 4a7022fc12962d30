//! Frame data: exactly one MessagePack value.
//!
//! Interop rules with the Python core: text is str, bytes are bin (use
//! `serde_bytes` on Rust fields), map keys are strings, tuples and structs
//! are arrays. Python 2's native `str` arrives as str when it is valid
//! UTF-8 and as bin otherwise.
//!
//! Decoding never executes or constructs anything but plain data, is depth
//! limited, and never preallocates from lengths the peer announced.

use bytes::Bytes;
use rmp::Marker;
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::ext::{self, CallError, Dead};
use crate::WireError;

/// The dynamic value type for arguments and results whose shape is not
/// known at compile time. Ext values appear as `Value::Ext(code, data)`.
pub use rmpv::Value;

/// Deepest nesting of arrays and maps accepted from a peer. Deep enough for
/// any real call, shallow enough that a hostile payload cannot exhaust the
/// stack of a recursive decoder.
pub const MAX_DEPTH: usize = 128;

/// Encodes any serde value as one MessagePack value.
pub fn encode<T: Serialize + ?Sized>(value: &T) -> Result<Bytes, WireError> {
    rmp_serde::to_vec(value)
        .map(Bytes::from)
        .map_err(|e| WireError::Malformed(e.to_string()))
}

/// Appends the MessagePack encoding of `value` to `out` (what [`encode`]
/// returns, written where the caller wants it: after room for a header,
/// say, so that header and value need no copy to become one buffer).
pub fn encode_into<T: Serialize + ?Sized>(value: &T, out: &mut Vec<u8>) -> Result<(), WireError> {
    encode_to(value, out)
}

/// Like [`encode_into`], into any writer (a 64 MiB bin is one write of it).
pub fn encode_to<T: Serialize + ?Sized, W: std::io::Write>(
    value: &T,
    out: &mut W,
) -> Result<(), WireError> {
    rmp_serde::encode::write(out, value).map_err(|e| WireError::Malformed(e.to_string()))
}

/// The bytes of `data` when it is exactly one MessagePack bin (or str)
/// value, as a slice of it: no copy, however large. For results that are
/// bytes (a 64 MiB echo), which a `serde_bytes::ByteBuf` would copy.
pub fn bin_value(data: &Bytes) -> Result<Bytes, WireError> {
    let (head, len) = match data.first() {
        Some(&m) if (0xa0..=0xbf).contains(&m) => (1, usize::from(m & 0x1f)),
        Some(0xc4 | 0xd9) => (2, usize::from(*data.get(1).unwrap_or(&0))),
        Some(0xc5 | 0xda) => (3, be_len(data.get(1..3))),
        Some(0xc6 | 0xdb) => (5, be_len(data.get(1..5))),
        _ => return Err(WireError::Malformed("expected bytes".into())),
    };
    if data.len() < head || data.len() - head != len {
        return Err(WireError::Malformed(format!(
            "bytes of {len} announced, {} present",
            data.len().saturating_sub(head)
        )));
    }
    Ok(data.slice(head..))
}

fn be_len(b: Option<&[u8]>) -> usize {
    b.map_or(usize::MAX, |b| {
        b.iter().fold(0usize, |a, &x| (a << 8) | usize::from(x))
    })
}

/// Decodes one MessagePack value into `T`, refusing trailing bytes.
pub fn decode<T: DeserializeOwned>(data: &[u8]) -> Result<T, WireError> {
    check_structure(data)?;
    // check_structure has already proved `data` is exactly one value.
    rmp_serde::from_slice(data).map_err(|e| WireError::Malformed(e.to_string()))
}

/// Decodes into the dynamic [`Value`], checking every ext code.
pub fn decode_value(data: &[u8]) -> Result<Value, WireError> {
    decode::<Value>(data)
}

/// Walks the encoded value without recursion or allocation and checks that
/// it is one complete value: depth within [`MAX_DEPTH`], every length inside
/// the buffer, every ext code known. Run before any serde decoder sees the
/// bytes, so that no decoder recurses deeply or trusts a length.
pub fn check_structure(data: &[u8]) -> Result<(), WireError> {
    check_structure_within(data, MAX_DECODED_VALUES).map(|_| ())
}

/// Most values (scalars, strings, containers, each counted once) a frame
/// may decode to. A MessagePack nil is one byte but a decoded
/// [`Value`] node is 32, so without a cap a 10 MB reply of small values
/// became about 700 MB in the CLI (value tree plus JSON), and a 128 MiB
/// frame could reach gigabytes. Strings and bytes are not counted: they
/// decode 1:1 and `max_message_size` bounds them. 2 Mi values is 64 MiB of
/// `Value` nodes; a frame with more is refused with
/// [`WireError::TooManyValues`].
pub const MAX_DECODED_VALUES: u64 = 1 << 21;

/// [`check_structure`] with a custom cap on the number of values; returns
/// how many there are.
pub fn check_structure_within(data: &[u8], max_values: u64) -> Result<u64, WireError> {
    let bad = |why: &str| Err(WireError::Malformed(why.to_string()));
    let mut values = 0u64;
    let mut pos = 0usize;
    // Values still to read at each open container level.
    let mut pending = Levels::default();
    pending.push(1);
    while let Some(top) = pending.last_mut() {
        if *top == 0 {
            pending.pop();
            continue;
        }
        *top -= 1;
        values += 1;
        if values > max_values {
            return Err(WireError::TooManyValues { max: max_values });
        }
        let Some(&b) = data.get(pos) else {
            return bad("value ends early");
        };
        pos += 1;
        let need = |n: usize, pos: usize| -> Result<u64, WireError> {
            data.get(pos..pos + n)
                .map(|s| s.iter().fold(0u64, |a, &x| (a << 8) | u64::from(x)))
                .ok_or_else(|| WireError::Malformed("value ends early".into()))
        };
        let (skip, children): (u64, u64) = match Marker::from_u8(b) {
            Marker::FixPos(_) | Marker::FixNeg(_) | Marker::Null | Marker::True | Marker::False => {
                (0, 0)
            }
            Marker::U8 | Marker::I8 => (1, 0),
            Marker::U16 | Marker::I16 => (2, 0),
            Marker::U32 | Marker::I32 | Marker::F32 => (4, 0),
            Marker::U64 | Marker::I64 | Marker::F64 => (8, 0),
            Marker::FixStr(n) => (u64::from(n), 0),
            Marker::Str8 | Marker::Bin8 => {
                pos += 1;
                (need(1, pos - 1)?, 0)
            }
            Marker::Str16 | Marker::Bin16 => {
                pos += 2;
                (need(2, pos - 2)?, 0)
            }
            Marker::Str32 | Marker::Bin32 => {
                pos += 4;
                (need(4, pos - 4)?, 0)
            }
            Marker::FixArray(n) => (0, u64::from(n)),
            Marker::Array16 => {
                pos += 2;
                (0, need(2, pos - 2)?)
            }
            Marker::Array32 => {
                pos += 4;
                (0, need(4, pos - 4)?)
            }
            Marker::FixMap(n) => (0, 2 * u64::from(n)),
            Marker::Map16 => {
                pos += 2;
                (0, 2 * need(2, pos - 2)?)
            }
            Marker::Map32 => {
                pos += 4;
                (0, 2 * need(4, pos - 4)?)
            }
            m @ (Marker::FixExt1
            | Marker::FixExt2
            | Marker::FixExt4
            | Marker::FixExt8
            | Marker::FixExt16
            | Marker::Ext8
            | Marker::Ext16
            | Marker::Ext32) => {
                let len = match m {
                    Marker::FixExt1 => 1,
                    Marker::FixExt2 => 2,
                    Marker::FixExt4 => 4,
                    Marker::FixExt8 => 8,
                    Marker::FixExt16 => 16,
                    Marker::Ext8 => {
                        pos += 1;
                        need(1, pos - 1)?
                    }
                    Marker::Ext16 => {
                        pos += 2;
                        need(2, pos - 2)?
                    }
                    _ => {
                        pos += 4;
                        need(4, pos - 4)?
                    }
                };
                let code = need(1, pos)? as u8 as i8;
                pos += 1;
                if !ext::is_known(code) {
                    return Err(WireError::UnknownExt(code));
                }
                (len, 0)
            }
            Marker::Reserved => return bad("reserved marker 0xc1"),
        };
        if skip > (data.len() - pos.min(data.len())) as u64 || pos > data.len() {
            return bad("value ends early");
        }
        pos += skip as usize;
        if children > 0 {
            // Every child takes at least one byte: a count larger than what
            // is left is a lie, refused before anything trusts it.
            if children > (data.len() - pos) as u64 {
                return bad("container announces more elements than bytes remain");
            }
            if pending.len() > MAX_DEPTH {
                return bad("nesting deeper than 128");
            }
            pending.push(children);
        }
    }
    if pos != data.len() {
        return Err(WireError::Malformed(format!(
            "{} trailing bytes after the value",
            data.len() - pos
        )));
    }
    Ok(values)
}

/// [`check_structure_within`]'s stack of open containers: the first
/// levels inline (a reply is a few levels deep), deeper ones in a Vec, so
/// that checking a small reply allocates nothing.
#[derive(Default)]
struct Levels {
    inline: [u64; INLINE_LEVELS],
    len: usize,
    deeper: Vec<u64>,
}

const INLINE_LEVELS: usize = 16;

impl Levels {
    fn len(&self) -> usize {
        self.len
    }

    fn push(&mut self, n: u64) {
        if self.len < INLINE_LEVELS {
            self.inline[self.len] = n;
        } else {
            self.deeper.push(n);
        }
        self.len += 1;
    }

    fn pop(&mut self) {
        self.len -= 1;
        if self.len >= INLINE_LEVELS {
            self.deeper.pop();
        }
    }

    fn last_mut(&mut self) -> Option<&mut u64> {
        match self.len {
            0 => None,
            n if n <= INLINE_LEVELS => Some(&mut self.inline[n - 1]),
            _ => self.deeper.last_mut(),
        }
    }
}

/// What came back to a request: a value, a remote exception, or Dead.
#[derive(Debug, Clone, PartialEq)]
pub enum Reply<T> {
    Value(T),
    Error(CallError),
    Dead(Dead),
}

impl<T: DeserializeOwned> Reply<T> {
    /// Classifies a reply by its leading ext code, then decodes it.
    pub fn decode(data: &[u8]) -> Result<Reply<T>, WireError> {
        match ext_code(data) {
            Some(ext::EXT_DEAD) => decode(data).map(Reply::Dead),
            Some(ext::EXT_CALL_ERROR) => decode(data).map(Reply::Error),
            _ => decode(data).map(Reply::Value),
        }
    }
}

/// The ext type code of the top-level value, if it is an ext value.
pub fn ext_code(data: &[u8]) -> Option<i8> {
    let at = match Marker::from_u8(*data.first()?) {
        Marker::FixExt1
        | Marker::FixExt2
        | Marker::FixExt4
        | Marker::FixExt8
        | Marker::FixExt16 => 1,
        Marker::Ext8 => 2,
        Marker::Ext16 => 3,
        Marker::Ext32 => 5,
        _ => return None,
    };
    data.get(at).map(|&b| b as i8)
}

/// Whether a frame's data is the Dead sentinel.
pub fn is_dead(data: &[u8]) -> bool {
    ext_code(data) == Some(ext::EXT_DEAD)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ext::SenderRef;

    #[test]
    fn a_frame_of_many_small_values_is_refused_before_decoding() {
        // 3 Mi nils: 3 MiB on the wire, about 100 MiB as a Value tree.
        let n = 3 << 20;
        let mut data = vec![0xdd];
        data.extend_from_slice(&(n as u32).to_be_bytes());
        data.resize(5 + n, 0xc0);
        assert_eq!(
            decode_value(&data),
            Err(WireError::TooManyValues {
                max: MAX_DECODED_VALUES
            })
        );
        // Under the cap, and one big string, are fine.
        data.truncate(5 + (1 << 20));
        data[1..5].copy_from_slice(&(1u32 << 20).to_be_bytes());
        assert_eq!(
            check_structure_within(&data, MAX_DECODED_VALUES),
            Ok(1 + (1 << 20))
        );
        let big = encode(
            &vec![b'x'; 8 << 20]
                .iter()
                .map(|&b| b as char)
                .collect::<String>(),
        )
        .unwrap();
        assert!(decode_value(&big).is_ok());
    }

    #[test]
    fn reply_classifies_values_errors_and_dead() {
        let v = encode(&(1, "two")).unwrap();
        assert_eq!(
            Reply::<(i32, String)>::decode(&v).unwrap(),
            Reply::Value((1, "two".to_string()))
        );
        let d = encode(&Dead::new("gone")).unwrap();
        assert_eq!(
            Reply::<i32>::decode(&d).unwrap(),
            Reply::Dead(Dead::new("gone"))
        );
        let e = CallError {
            type_name: "T".into(),
            message: "m".into(),
            traceback: "tb".into(),
        };
        assert_eq!(
            Reply::<i32>::decode(&encode(&e).unwrap()).unwrap(),
            Reply::Error(e)
        );
    }

    #[test]
    fn dynamic_values_keep_ext_types() {
        let s = SenderRef {
            context: 2,
            handle: 1000,
        };
        let v = decode_value(&encode(&(s, 5)).unwrap()).unwrap();
        let Value::Array(items) = v else { panic!() };
        assert!(matches!(items[0], Value::Ext(4, _)));
    }

    #[test]
    fn unknown_ext_type_is_an_error() {
        // fixext1, type 99, one data byte.
        assert_eq!(decode_value(&[0xd4, 99, 0]), Err(WireError::UnknownExt(99)));
    }

    #[test]
    fn malformed_messagepack_is_an_error() {
        for bad in [
            &[0xc1][..],
            &[0x92, 0x01],
            &[0xdb, 0, 0, 0, 9, b'a'],
            &[],
            &[1, 2],
        ] {
            assert!(
                matches!(decode_value(bad), Err(WireError::Malformed(_))),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn bin_value_slices_exactly_one_bytes_value() {
        for n in [0usize, 5, 31, 32, 255, 256, 70_000] {
            let v = vec![7u8; n];
            let enc = encode(&serde_bytes::Bytes::new(&v)).unwrap();
            assert_eq!(&bin_value(&enc).unwrap()[..], &v[..], "bin of {n}");
            let s = encode(&"x".repeat(n)).unwrap();
            assert_eq!(bin_value(&s).unwrap().len(), n, "str of {n}");
            let mut short = enc.to_vec();
            short.pop();
            if n > 0 {
                assert!(bin_value(&Bytes::from(short)).is_err(), "truncated {n}");
            }
            let mut long = enc.to_vec();
            long.push(0);
            assert!(bin_value(&Bytes::from(long)).is_err(), "trailing {n}");
        }
        assert!(bin_value(&encode(&5i64).unwrap()).is_err());
        assert!(bin_value(&Bytes::from_static(&[0xc6, 0xff])).is_err());
        assert!(bin_value(&Bytes::new()).is_err());
    }

    #[test]
    fn nesting_past_the_inline_levels_is_checked_like_any() {
        for depth in [15usize, 16, 17, 40, 128] {
            let mut v = vec![0x91u8; depth];
            v.push(0x01);
            assert_eq!(check_structure_within(&v, 1000), Ok(depth as u64 + 1));
            v.pop();
            assert!(check_structure(&v).is_err(), "depth {depth} truncated");
            v.extend_from_slice(&[0x01, 0x01]);
            assert!(check_structure(&v).is_err(), "depth {depth} trailing");
        }
    }

    #[test]
    fn deep_nesting_is_refused_without_recursion() {
        let mut deep = vec![0x91u8; 100_000];
        deep.push(0xc0);
        assert!(matches!(decode_value(&deep), Err(WireError::Malformed(_))));
    }

    #[test]
    fn huge_announced_array_is_refused_without_allocating() {
        // array32 claiming 4 billion elements in a 5-byte buffer.
        assert!(matches!(
            decode_value(&[0xdd, 0xff, 0xff, 0xff, 0xff]),
            Err(WireError::Malformed(_))
        ));
    }

    #[test]
    fn trailing_bytes_are_refused() {
        assert!(matches!(
            decode::<i32>(&[1, 2]),
            Err(WireError::Malformed(_))
        ));
    }
}
