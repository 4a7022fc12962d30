//! The file protocol's messages and flow-control window, as plain data:
//! no I/O and no clock, so every rule is unit-tested here.
//!
//! Data (sender to the receiver's data handle): a bulk frame per chunk
//! (`econtext_wire::bulk`), whose MAC-covered part is `[1, index, offset,
//! sha256, last]` (`sha256`: the 32-byte digest of the file from its
//! start through this chunk) and whose bytes are the chunk, which no frame
//! MAC covers: the receiver checks them against `sha256` before writing
//! them. `[0, index, offset, bytes, sha256_hex|nil]` a chunk in an
//! ordinary frame (accepted, no longer sent), `[2, index, [kind, path,
//! detail]]` the sender gave up on a file, `[3]` the end of the transfer.
//!
//! Acks (receiver to the sender's ack handle): `[0, bytes, files]`
//! credit (bytes written so far), `[1, index, [kind, path, detail], ctx?]`
//! a file failed, `[2, ctx, files, bytes]` one receiver is done, and (to a
//! Python sender only) `[5, [[index, offset, sha256_hex], ...]]` start,
//! resuming those files after the given verified prefix.

use bytes::Bytes;
use econtext_wire::Value;

use crate::error::{FileError, FileErrorKind};

pub const D_CHUNK: u8 = 0;
pub const D_BULK: u8 = 1;
pub const D_FAIL: u8 = 2;
pub const D_END: u8 = 3;
pub const A_CREDIT: u8 = 0;
pub const A_ERROR: u8 = 1;
pub const A_DONE: u8 = 2;
pub const A_START: u8 = 5;

/// Room kept before a chunk's data for its bulk prefix and covered part
/// (or an ordinary chunk's MessagePack header), so the data is read into
/// place and never copied into a frame.
pub const CHUNK_HEADROOM: usize = 64;

/// Bytes of a file chunk's running SHA-256.
pub const DIGEST_LEN: usize = 32;

/// A sender's view of one transfer's window: at most `size` bytes sent
/// and not yet acknowledged.
#[derive(Debug, Clone)]
pub struct Window {
    size: u64,
    sent: u64,
    credit: u64,
}

impl Window {
    pub fn new(size: u64) -> Self {
        Window {
            size: size.max(1),
            sent: 0,
            credit: 0,
        }
    }

    /// True while another chunk may go.
    pub fn open(&self) -> bool {
        self.sent - self.credit < self.size
    }

    pub fn sent(&mut self, n: u64) {
        self.sent += n;
    }

    /// Applies a credit (total bytes the receiver has written). Credits
    /// never go backwards and never past what was sent: a receiver that
    /// claims more cannot make us overrun anyone.
    pub fn credit(&mut self, total: u64) {
        self.credit = self.credit.max(total.min(self.sent));
    }

    pub fn in_flight(&self) -> u64 {
        self.sent - self.credit
    }

    pub fn acked(&self) -> u64 {
        self.credit
    }
}

/// A receiver's check on a sender it does not trust: data beyond the
/// window it was granted is a protocol error, so a hostile sender cannot
/// make us queue more than `window + slack` bytes.
#[derive(Debug, Clone)]
pub struct Inflow {
    limit: u64,
    received: u64,
    granted: u64,
}

impl Inflow {
    pub fn new(window: u64, slack: u64) -> Self {
        Inflow {
            limit: window + slack,
            received: 0,
            granted: 0,
        }
    }

    pub fn received(&mut self, n: u64) -> Result<(), String> {
        self.received += n;
        if self.received - self.granted > self.limit {
            return Err(format!(
                "sender overran its window: {} bytes unacknowledged, {} allowed",
                self.received - self.granted,
                self.limit
            ));
        }
        Ok(())
    }

    /// Records a credit we sent (bytes written so far).
    pub fn granted(&mut self, total: u64) {
        self.granted = self.granted.max(total.min(self.received));
    }
}

/// Room after a chunk's data for its trailer (the file's SHA-256 as a
/// MessagePack string, or nil), so that finishing a frame never grows its
/// buffer: growing it copied every chunk once more.
pub const CHUNK_TRAILER: usize = 2 + 64;

/// A buffer for a chunk of `len` bytes: its headroom, then room for the
/// data (appended, e.g. by `read_to_end`, which reads into spare capacity
/// without zeroing it first) and an ordinary chunk's trailer.
pub fn chunk_buffer(len: usize) -> Vec<u8> {
    let mut v = Vec::with_capacity(CHUNK_HEADROOM + len + CHUNK_TRAILER);
    v.resize(CHUNK_HEADROOM, 0);
    v
}

/// One chunk as a bulk frame's data, built around data read straight
/// into `buf` after [`CHUNK_HEADROOM`] bytes: `covered_len`, then
/// `[D_BULK, index, offset, sha256, last]` end just before the data, which
/// is never copied. `sha256` is the file's digest from its start through
/// this chunk (sha2's `clone().finalize()` of the running hash).
pub fn bulk_chunk(
    mut buf: Vec<u8>,
    index: u32,
    offset: u64,
    sha256: &[u8; DIGEST_LEN],
    last: bool,
) -> Bytes {
    let mut covered = Vec::with_capacity(CHUNK_HEADROOM);
    rmp::encode::write_array_len(&mut covered, 5).expect("vec");
    rmp::encode::write_uint(&mut covered, D_BULK as u64).expect("vec");
    rmp::encode::write_uint(&mut covered, index as u64).expect("vec");
    rmp::encode::write_uint(&mut covered, offset).expect("vec");
    rmp::encode::write_bin(&mut covered, sha256).expect("vec");
    rmp::encode::write_bool(&mut covered, last).expect("vec");
    let start = CHUNK_HEADROOM - covered.len() - econtext_wire::bulk::BULK_PREFIX;
    buf[start..start + 4].copy_from_slice(&(covered.len() as u32).to_be_bytes());
    buf[start + 4..CHUNK_HEADROOM].copy_from_slice(&covered);
    Bytes::from(buf).slice(start..)
}

/// Decodes a bulk frame's data (`Message::bulk`): only a chunk may come
/// as one. The bytes stay a slice of the frame; nothing here checks them
/// (the writer does, against `sha256`, before writing them).
pub fn decode_bulk(frame: &Bytes) -> Result<Data, String> {
    let end = econtext_wire::bulk::covered_end(frame).ok_or_else(|| bad("bulk prefix"))?;
    let mut rd: &[u8] = &frame[econtext_wire::bulk::BULK_PREFIX..end];
    let len = rmp::decode::read_array_len(&mut rd).map_err(|_| bad("not an array"))?;
    let tag: u8 = rmp::decode::read_int(&mut rd).map_err(|_| bad("no type"))?;
    if (tag, len) != (D_BULK, 5) {
        return Err(bad("a bulk frame that is not a chunk"));
    }
    let index: u32 = rmp::decode::read_int(&mut rd).map_err(|_| bad("index"))?;
    let offset: u64 = rmp::decode::read_int(&mut rd).map_err(|_| bad("offset"))?;
    // A Python 2 sender may send the digest as str.
    let marker = rmp::decode::read_marker(&mut rd).map_err(|_| bad("sha256"))?;
    let n = read_len(marker, &mut rd).ok_or_else(|| bad("sha256 is not bytes"))?;
    if n != DIGEST_LEN || rd.len() < n {
        return Err(bad("sha256 is not 32 bytes"));
    }
    let sha256: [u8; DIGEST_LEN] = rd[..n].try_into().expect("32 bytes");
    rd = &rd[n..];
    let last = match rd {
        [0xc3] => true,
        [0xc2] => false,
        _ => return Err(bad("last")),
    };
    Ok(Data::Bulk {
        index,
        offset,
        data: frame.slice(end..),
        sha256,
        last,
    })
}

/// One chunk message, built around data read straight into `buf` after
/// [`CHUNK_HEADROOM`] bytes: `buf[CHUNK_HEADROOM..]` is the data.
pub fn chunk_frame(mut buf: Vec<u8>, index: u32, offset: u64, sha: Option<&str>) -> Bytes {
    let n = buf.len() - CHUNK_HEADROOM;
    let mut hdr = Vec::with_capacity(CHUNK_HEADROOM);
    rmp::encode::write_array_len(&mut hdr, 5).expect("vec");
    rmp::encode::write_uint(&mut hdr, D_CHUNK as u64).expect("vec");
    rmp::encode::write_uint(&mut hdr, index as u64).expect("vec");
    rmp::encode::write_uint(&mut hdr, offset).expect("vec");
    rmp::encode::write_bin_len(&mut hdr, n as u32).expect("vec");
    let start = CHUNK_HEADROOM - hdr.len();
    buf[start..CHUNK_HEADROOM].copy_from_slice(&hdr);
    match sha {
        Some(s) => rmp::encode::write_str(&mut buf, s).expect("vec"),
        None => buf.push(0xc0),
    }
    Bytes::from(buf).slice(start..)
}

/// A data message as a receiver sees it.
#[derive(Debug, Clone, PartialEq)]
pub enum Data {
    Chunk {
        index: u32,
        offset: u64,
        /// A slice of the frame: no copy.
        data: Bytes,
        sha: Option<String>,
    },
    /// A chunk from a bulk frame: `sha256` is the sender's digest of the
    /// file from its start through `data`, which no frame MAC covered.
    Bulk {
        index: u32,
        offset: u64,
        data: Bytes,
        sha256: [u8; DIGEST_LEN],
        last: bool,
    },
    Fail {
        index: u32,
        error: WireFileError,
    },
    End,
}

/// `[kind, path, detail]` as sent by a peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WireFileError {
    pub kind: FileErrorKind,
    pub path: String,
    pub detail: String,
}

impl WireFileError {
    pub fn on(self, host: &str) -> FileError {
        FileError::new(self.kind, host, self.path, self.detail)
    }

    fn from_value(v: &Value) -> Option<WireFileError> {
        let a = v.as_array()?;
        let text = |i: usize| -> String {
            match a.get(i) {
                Some(Value::String(s)) => String::from_utf8_lossy(s.as_bytes()).into_owned(),
                Some(Value::Binary(b)) => String::from_utf8_lossy(b).into_owned(),
                _ => String::new(),
            }
        };
        Some(WireFileError {
            kind: FileErrorKind::from_wire(&text(0)),
            path: text(1),
            detail: text(2),
        })
    }
}

fn bad(why: &str) -> String {
    format!("bad data message: {why}")
}

/// Decodes a data message. Chunks are parsed by hand so the bytes stay a
/// slice of the frame; a Python 2 sender may send them as str.
pub fn decode_data(frame: &Bytes) -> Result<Data, String> {
    let mut rd: &[u8] = frame;
    let len = rmp::decode::read_array_len(&mut rd).map_err(|_| bad("not an array"))?;
    let tag: u8 = rmp::decode::read_int(&mut rd).map_err(|_| bad("no type"))?;
    match (tag, len) {
        (D_CHUNK, 5) => {
            let index: u32 = rmp::decode::read_int(&mut rd).map_err(|_| bad("index"))?;
            let offset: u64 = rmp::decode::read_int(&mut rd).map_err(|_| bad("offset"))?;
            let marker = rmp::decode::read_marker(&mut rd).map_err(|_| bad("data"))?;
            let n = read_len(marker, &mut rd).ok_or_else(|| bad("data is not bytes"))?;
            if rd.len() < n {
                return Err(bad("truncated data"));
            }
            let start = frame.len() - rd.len();
            let data = frame.slice(start..start + n);
            rd = &rd[n..];
            let sha = match rd.first() {
                Some(0xc0) if rd.len() == 1 => None,
                _ => {
                    let v = econtext_wire::payload::decode_value(rd)
                        .map_err(|e| bad(&e.to_string()))?;
                    match v {
                        Value::String(s) => Some(s.into_str().ok_or_else(|| bad("sha"))?),
                        _ => return Err(bad("sha")),
                    }
                }
            };
            Ok(Data::Chunk {
                index,
                offset,
                data,
                sha,
            })
        }
        (D_FAIL, 3) => {
            let index: u32 = rmp::decode::read_int(&mut rd).map_err(|_| bad("index"))?;
            let v = econtext_wire::payload::decode_value(rd).map_err(|e| bad(&e.to_string()))?;
            let error = WireFileError::from_value(&v).ok_or_else(|| bad("error"))?;
            Ok(Data::Fail { index, error })
        }
        (D_END, 1) if rd.is_empty() => Ok(Data::End),
        _ => Err(bad("unknown type")),
    }
}

fn read_len(marker: rmp::Marker, rd: &mut &[u8]) -> Option<usize> {
    use rmp::Marker as M;
    let take = |rd: &mut &[u8], k: usize| -> Option<usize> {
        if rd.len() < k {
            return None;
        }
        let mut v = 0usize;
        for b in &rd[..k] {
            v = (v << 8) | *b as usize;
        }
        *rd = &rd[k..];
        Some(v)
    };
    match marker {
        M::FixStr(n) => Some(n as usize),
        M::Bin8 | M::Str8 => take(rd, 1),
        M::Bin16 | M::Str16 => take(rd, 2),
        M::Bin32 | M::Str32 => take(rd, 4),
        _ => None,
    }
}

/// An ack message as a sender sees it.
#[derive(Debug, Clone, PartialEq)]
pub enum Ack {
    Credit {
        bytes: u64,
        files: u64,
    },
    Error {
        index: i64,
        error: WireFileError,
        /// Which context failed, when an intermediate relays for several.
        context: Option<u16>,
    },
    Done {
        context: u16,
        files: u64,
        bytes: u64,
    },
}

/// Decodes an ack message.
pub fn decode_ack(v: &Value) -> Result<Ack, String> {
    let a = v
        .as_array()
        .ok_or_else(|| "ack is not an array".to_string())?;
    let int = |i: usize| a.get(i).and_then(|x| x.as_u64());
    let bad = || format!("bad ack message {v}");
    match int(0) {
        Some(0) => Ok(Ack::Credit {
            bytes: int(1).ok_or_else(bad)?,
            files: int(2).unwrap_or(0),
        }),
        Some(1) => Ok(Ack::Error {
            index: a.get(1).and_then(|x| x.as_i64()).ok_or_else(bad)?,
            error: a
                .get(2)
                .and_then(WireFileError::from_value)
                .ok_or_else(bad)?,
            context: int(3).and_then(|c| u16::try_from(c).ok()),
        }),
        Some(2) => Ok(Ack::Done {
            context: int(1).and_then(|c| u16::try_from(c).ok()).ok_or_else(bad)?,
            files: int(2).unwrap_or(0),
            bytes: int(3).unwrap_or(0),
        }),
        _ => Err(bad()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn window_stops_at_size_and_reopens_on_credit() {
        let mut w = Window::new(10);
        assert!(w.open());
        w.sent(6);
        assert!(w.open());
        w.sent(6);
        assert!(!w.open());
        w.credit(4);
        assert!(w.open());
        assert_eq!(w.in_flight(), 8);
    }

    #[test]
    fn credit_past_what_was_sent_is_clamped_and_never_goes_back() {
        let mut w = Window::new(10);
        w.sent(20);
        w.credit(1 << 40);
        assert_eq!(w.in_flight(), 0);
        w.credit(3);
        assert_eq!(w.acked(), 20);
    }

    #[test]
    fn sender_overrunning_the_window_is_an_error() {
        let mut f = Inflow::new(100, 10);
        f.received(100).unwrap();
        f.received(10).unwrap();
        assert!(f.received(1).is_err());
        let mut f = Inflow::new(100, 10);
        f.received(100).unwrap();
        f.granted(100);
        f.received(100).unwrap();
    }

    #[test]
    fn chunk_frame_round_trips_without_copy() {
        let mut buf = chunk_buffer(0);
        buf.extend_from_slice(b"hello world");
        let f = chunk_frame(buf, 7, 1 << 33, Some("ab"));
        // Plain rmpv sees the same value.
        let v = econtext_wire::payload::decode_value(&f).unwrap();
        assert_eq!(v[4].as_str(), Some("ab"));
        match decode_data(&f).unwrap() {
            Data::Chunk {
                index,
                offset,
                data,
                sha,
            } => {
                assert_eq!(
                    (index, offset, &data[..]),
                    (7, 1 << 33, &b"hello world"[..])
                );
                assert_eq!(sha.as_deref(), Some("ab"));
            }
            other => panic!("{other:?}"),
        }
        let mut buf = chunk_buffer(0);
        buf.extend_from_slice(&[0u8; 300]);
        let f = chunk_frame(buf, 0, 0, None);
        assert!(matches!(
            decode_data(&f).unwrap(),
            Data::Chunk { sha: None, .. }
        ));
    }

    #[test]
    fn a_chunk_frame_is_built_in_its_read_buffer_without_growing_it() {
        let mut buf = chunk_buffer(256 << 10);
        buf.resize(CHUNK_HEADROOM + (256 << 10), 7);
        let data_at = buf[CHUNK_HEADROOM..].as_ptr();
        let f = chunk_frame(buf, 3, 0, Some(&"a".repeat(64)));
        match decode_data(&f).unwrap() {
            Data::Chunk { data, sha, .. } => {
                assert_eq!(data.as_ptr(), data_at, "the data was copied");
                assert_eq!(sha.map(|s| s.len()), Some(64));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_bulk_chunk_is_built_in_its_read_buffer_and_round_trips() {
        let mut buf = chunk_buffer(256 << 10);
        buf.resize(CHUNK_HEADROOM + (256 << 10), 7);
        let data_at = buf[CHUNK_HEADROOM..].as_ptr();
        let cap = buf.capacity();
        let d = [9u8; DIGEST_LEN];
        for (index, offset) in [(0, 0), (u32::MAX, u64::MAX)] {
            let f = bulk_chunk(buf.clone(), index, offset, &d, true);
            let (covered, bytes) = econtext_wire::bulk::split(&f).unwrap();
            assert_eq!(bytes.len(), 256 << 10);
            let v = econtext_wire::payload::decode_value(covered).unwrap();
            assert_eq!(v[0].as_u64(), Some(D_BULK as u64));
            assert_eq!(
                decode_bulk(&f).unwrap(),
                Data::Bulk {
                    index,
                    offset,
                    data: Bytes::copy_from_slice(bytes),
                    sha256: d,
                    last: true
                }
            );
        }
        let f = bulk_chunk(buf, 3, 0, &d, false);
        match decode_bulk(&f).unwrap() {
            Data::Bulk { data, last, .. } => {
                assert_eq!(data.as_ptr(), data_at, "the data was copied");
                assert!(!last);
            }
            other => panic!("{other:?}"),
        }
        assert!(cap >= CHUNK_HEADROOM + (256 << 10), "never grown");
    }

    #[test]
    fn hostile_bulk_chunks_are_typed_errors() {
        let good =
            econtext_wire::payload::encode(&(1, 0, 0, serde_bytes::Bytes::new(&[0; 32]), true))
                .unwrap();
        assert!(decode_bulk(&Bytes::from(econtext_wire::bulk::join(&good, b"x"))).is_ok());
        for covered in [
            econtext_wire::payload::encode(&(0, 0, 0, serde_bytes::Bytes::new(&[0; 32]), true))
                .unwrap(),
            econtext_wire::payload::encode(&(1, 0, 0, serde_bytes::Bytes::new(&[0; 31]), true))
                .unwrap(),
            econtext_wire::payload::encode(&(1, 0, 0, serde_bytes::Bytes::new(&[0; 32]), 1))
                .unwrap(),
            econtext_wire::payload::encode(&(1, -1, 0, serde_bytes::Bytes::new(&[0; 32]), true))
                .unwrap(),
            econtext_wire::payload::encode(&(3,)).unwrap(),
        ] {
            let f = Bytes::from(econtext_wire::bulk::join(&covered, b"x"));
            assert!(decode_bulk(&f).is_err(), "{covered:?}");
        }
        assert!(decode_bulk(&Bytes::from_static(&[0, 0, 1, 0])).is_err());
    }

    #[test]
    fn hostile_data_messages_are_typed_errors() {
        for raw in [
            &[0x95u8, 0, 1, 2, 0xc4, 200, 1][..], // bin longer than the frame
            &[0x92, 0, 1],
            &[0x91, 9],
            &[0xc0],
            &[0x95, 0, 1, 2, 0x01, 0xc0], // data is an int
        ] {
            assert!(
                decode_data(&Bytes::copy_from_slice(raw)).is_err(),
                "{raw:?}"
            );
        }
        assert_eq!(
            decode_data(&Bytes::from_static(&[0x91, 3])).unwrap(),
            Data::End
        );
    }

    #[test]
    fn acks_decode() {
        let v = econtext_wire::payload::decode_value(
            &econtext_wire::payload::encode(&(1, 4, ("no_space", "/x", "full"), 9)).unwrap(),
        )
        .unwrap();
        match decode_ack(&v).unwrap() {
            Ack::Error {
                index,
                error,
                context,
            } => {
                assert_eq!((index, context), (4, Some(9)));
                assert_eq!(error.kind, FileErrorKind::NoSpace);
            }
            other => panic!("{other:?}"),
        }
        let v =
            econtext_wire::payload::decode_value(&econtext_wire::payload::encode(&(7,)).unwrap())
                .unwrap();
        assert!(decode_ack(&v).is_err());
    }
}
