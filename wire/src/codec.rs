use bytes::{Buf, BufMut, Bytes, BytesMut};
use tokio_util::codec::{Decoder, Encoder};

use crate::header::{split_length, Header, FIELDS_LEN, HEADER_LEN, MAC_LEN, TRAILER_FLAG};
use crate::mac::{Direction, FrameMac, Opening, Sealing};
use crate::WireError;

/// The default for `max_message_size`: 128 MiB, as in the design brief.
/// Children inherit the master's setting in their bootstrap config.
pub const DEFAULT_MAX_MESSAGE_SIZE: usize = 128 * 1024 * 1024;

/// One authenticated frame: routing fields plus the data (one MessagePack
/// value, left encoded so that forwarding contexts never decode it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    pub header: Header,
    pub data: Bytes,
}

impl Frame {
    pub fn new(header: Header, data: impl Into<Bytes>) -> Self {
        Frame {
            header,
            data: data.into(),
        }
    }
}

/// Frames in and out of one stream, with both directions' MAC sequences.
///
/// A decode error leaves the receive sequence out of step with the peer, so
/// after any `Err` the stream must be closed; `FramedRead` does that by
/// ending the stream.
#[derive(Debug)]
pub struct FrameCodec {
    tx: FrameMac,
    rx: FrameMac,
    max_message_size: usize,
    /// Outgoing frames of at least this many data bytes get a trailing MAC.
    trailer_from: usize,
    /// The MAC of a large frame still arriving, over its first `.1` data
    /// bytes (which stay where they are in the buffer until it is whole).
    opening: Option<(Opening, usize)>,
}

/// Frames at least this large are MACed as they arrive, so the hash of
/// the last piece is all that is left when the last byte comes.
const HASH_AS_IT_ARRIVES: usize = 1 << 20;

/// Outgoing frames of at least this many data bytes are sent with a
/// trailing MAC (see [`TRAILER_FLAG`]), so that the writer hashes each
/// piece as it writes it instead of all of it before the first byte.
/// Below it a leading MAC costs nothing (the frame is one write anyway).
pub const TRAILER_FROM: usize = 1 << 20;

/// The largest data length a frame can announce: the length field's other
/// bit is the trailer flag.
pub const MAX_FRAME_DATA: usize = (TRAILER_FLAG - 1) as usize;

impl FrameCodec {
    /// `outgoing` is the direction this end sends in: a parent's codec for
    /// its child link is `Direction::Down`, the child's is `Direction::Up`.
    pub fn new(key: &[u8], outgoing: Direction, max_message_size: usize) -> Self {
        FrameCodec {
            tx: FrameMac::new(key, outgoing),
            rx: FrameMac::new(key, outgoing.reverse()),
            max_message_size,
            trailer_from: TRAILER_FROM,
            opening: None,
        }
    }

    pub fn max_message_size(&self) -> usize {
        self.max_message_size
    }

    /// Outgoing frames of at least `n` data bytes get a trailing MAC
    /// (default [`TRAILER_FROM`]; `0` for all, `usize::MAX` for none).
    /// The receiver accepts either form at any size; tests and the shared
    /// vectors use this to make small trailing frames.
    pub fn set_trailer_from(&mut self, n: usize) {
        self.trailer_from = n;
    }

    /// True when a frame of `len` data bytes is to be sent with a
    /// trailing MAC ([`FrameCodec::seal_trailing`]), false for a leading
    /// one ([`FrameCodec::seal`]).
    pub fn trails(&self, len: usize) -> bool {
        len >= self.trailer_from
    }

    fn check_send(&self, len: usize) -> Result<u32, WireError> {
        if len > self.max_message_size || len > MAX_FRAME_DATA {
            return Err(WireError::TooLargeToSend {
                length: len,
                max: self.max_message_size.min(MAX_FRAME_DATA),
            });
        }
        Ok(len as u32)
    }

    /// Seals an outgoing frame and returns its header bytes, for writers
    /// that send header and data separately (vectored writes of large data
    /// without copying it into a buffer).
    pub fn seal(&mut self, header: &Header, data: &[u8]) -> Result<[u8; HEADER_LEN], WireError> {
        self.check_send(data.len())?;
        Ok(self.tx.seal(header, data))
    }

    /// Starts an outgoing frame of `len` data bytes whose MAC follows the
    /// data: returns its header (MAC bytes zero, trailer flag set) and the
    /// [`Sealing`] to feed each piece of data as it is written; its
    /// `finish()` is the 20 bytes to write after the data.
    pub fn seal_trailing(
        &mut self,
        header: &Header,
        len: usize,
    ) -> Result<([u8; HEADER_LEN], Sealing), WireError> {
        let fields = header.fields_trailing(self.check_send(len)?);
        let mut out = [0u8; HEADER_LEN];
        out[MAC_LEN..].copy_from_slice(&fields);
        Ok((out, self.tx.begin_seal(&fields)))
    }
}

impl FrameCodec {
    /// Feeds the MAC of the frame being received with the data bytes
    /// `arrived` has beyond those already hashed.
    fn hash_arrived(&mut self, fields: &[u8; FIELDS_LEN], arrived: &[u8]) {
        let (o, hashed) = match &mut self.opening {
            Some(open) => open,
            None => self.opening.insert((self.rx.begin_open(fields), 0)),
        };
        o.update(&arrived[*hashed..]);
        *hashed = arrived.len();
    }
}

impl FrameCodec {
    /// The bytes the frame at the front of `src` takes on the wire (header,
    /// data and any trailing MAC), once its header has arrived; for a
    /// reader that places a large frame's buffer itself before decoding.
    /// Unchecked: `decode` still refuses an oversized one.
    pub fn next_frame_len(src: &[u8]) -> Option<usize> {
        let fields: &[u8; FIELDS_LEN] = src.get(MAC_LEN..HEADER_LEN)?.try_into().ok()?;
        Some(wire_len(Header::parse_fields(fields).1))
    }
}

/// Bytes a frame takes on the wire, from its raw `length` field.
fn wire_len(raw: u32) -> usize {
    let (length, trailer) = split_length(raw);
    HEADER_LEN + length as usize + if trailer { MAC_LEN } else { 0 }
}

impl Decoder for FrameCodec {
    type Item = Frame;
    type Error = WireError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Frame>, WireError> {
        if src.len() < HEADER_LEN {
            return Ok(None);
        }
        let fields: [u8; FIELDS_LEN] = src[MAC_LEN..HEADER_LEN].try_into().expect("16 bytes");
        let (header, raw) = Header::parse_fields(&fields);
        let (length, trailer) = split_length(raw);
        let bad_mac = || WireError::BadMac {
            dst: header.dst,
            src: header.src,
            handle: header.handle,
            length,
        };
        // The limit is checked on the header alone, before any data is
        // buffered or any buffer is grown for it.
        if length as usize > self.max_message_size {
            return Err(WireError::Oversized {
                length: length.into(),
                max: self.max_message_size,
            });
        }
        // A trailing frame's leading MAC bytes are zero: the MAC does not
        // cover them, so anything else there is refused (no bit of a
        // frame may change unnoticed).
        if trailer && src[..MAC_LEN].iter().any(|&b| b != 0) {
            return Err(bad_mac());
        }
        let data_end = HEADER_LEN + length as usize;
        let total = wire_len(raw);
        if src.len() < total {
            if length as usize >= HASH_AS_IT_ARRIVES {
                let arrived = src.len().min(data_end);
                self.hash_arrived(&fields, &src[HEADER_LEN..arrived]);
            }
            // Room for the next header too: a reader that finds less
            // than a header's room grows the buffer, which here would copy
            // the whole frame for its last few bytes.
            src.reserve(total - src.len() + HEADER_LEN);
            return Ok(None);
        }
        let mac: [u8; MAC_LEN] = if trailer {
            src[data_end..total].try_into().expect("20 bytes")
        } else {
            src[..MAC_LEN].try_into().expect("20 bytes")
        };
        src.advance(HEADER_LEN);
        let data = src.split_to(length as usize).freeze();
        src.advance(total - data_end);
        let good = match self.opening.take() {
            Some((mut o, hashed)) => {
                o.update(&data[hashed..]);
                o.verify(&mac)
            }
            None => self.rx.open(&mac, &fields, &data),
        };
        if !good {
            return Err(bad_mac());
        }
        Ok(Some(Frame { header, data }))
    }

    fn decode_eof(&mut self, src: &mut BytesMut) -> Result<Option<Frame>, WireError> {
        match self.decode(src)? {
            Some(frame) => Ok(Some(frame)),
            None if src.is_empty() => Ok(None),
            None => {
                let need = if src.len() < HEADER_LEN {
                    HEADER_LEN
                } else {
                    let fields: [u8; FIELDS_LEN] =
                        src[MAC_LEN..HEADER_LEN].try_into().expect("16 bytes");
                    wire_len(Header::parse_fields(&fields).1)
                };
                Err(WireError::Truncated {
                    have: src.len(),
                    need,
                })
            }
        }
    }
}

impl Encoder<Frame> for FrameCodec {
    type Error = WireError;

    fn encode(&mut self, frame: Frame, dst: &mut BytesMut) -> Result<(), WireError> {
        let data = &frame.data;
        if self.trails(data.len()) {
            let (header, mut sealing) = self.seal_trailing(&frame.header, data.len())?;
            sealing.update(data);
            dst.reserve(HEADER_LEN + data.len() + MAC_LEN);
            dst.put_slice(&header);
            dst.put_slice(data);
            dst.put_slice(&sealing.finish());
            return Ok(());
        }
        let header = self.seal(&frame.header, data)?;
        dst.reserve(HEADER_LEN + data.len());
        dst.put_slice(&header);
        dst.put_slice(data);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &[u8] = b"0123456789abcdef0123456789abcdef";

    fn pair(max: usize) -> (FrameCodec, FrameCodec) {
        (
            FrameCodec::new(KEY, Direction::Down, max),
            FrameCodec::new(KEY, Direction::Up, max),
        )
    }

    fn frame(n: u32, len: usize) -> Frame {
        Frame::new(Header::new(1, 0, 100 + n, 1000 + n), vec![n as u8; len])
    }

    fn encode_all(tx: &mut FrameCodec, frames: &[Frame]) -> BytesMut {
        let mut buf = BytesMut::new();
        for f in frames {
            tx.encode(f.clone(), &mut buf).unwrap();
        }
        buf
    }

    #[test]
    fn many_frames_in_one_read() {
        let (mut tx, mut rx) = pair(1 << 20);
        let frames: Vec<Frame> = (0..50).map(|n| frame(n, n as usize * 7)).collect();
        let mut buf = encode_all(&mut tx, &frames);
        let mut got = Vec::new();
        while let Some(f) = rx.decode(&mut buf).unwrap() {
            got.push(f);
        }
        assert_eq!(got, frames);
        assert!(buf.is_empty());
    }

    /// Decodes `wire` cut in two at every byte, each cut by a fresh
    /// receiver: every one yields `frames` and leaves nothing behind.
    fn assert_every_split_decodes(wire: &[u8], frames: &[Frame]) {
        for cut in 0..=wire.len() {
            let (_, mut rx) = pair(1 << 20);
            let mut buf = BytesMut::new();
            let mut got = Vec::new();
            for chunk in [&wire[..cut], &wire[cut..]] {
                buf.extend_from_slice(chunk);
                while let Some(f) = rx.decode(&mut buf).unwrap() {
                    got.push(f);
                }
            }
            assert_eq!(got, frames, "split at byte {cut}");
            assert!(buf.is_empty());
        }
    }

    #[test]
    fn frame_split_at_every_byte_boundary() {
        let frames = vec![frame(1, 0), frame(2, 40), frame(3, 3)];
        let wire = encode_all(&mut pair(1 << 20).0, &frames);
        assert_every_split_decodes(&wire, &frames);
    }

    #[test]
    fn frame_fed_one_byte_at_a_time() {
        let frames = vec![frame(1, 5), frame(2, 0), frame(3, 100)];
        let wire = encode_all(&mut pair(1 << 20).0, &frames);
        let (_, mut rx) = pair(1 << 20);
        let mut buf = BytesMut::new();
        let mut got = Vec::new();
        for b in wire.iter() {
            buf.put_u8(*b);
            while let Some(f) = rx.decode(&mut buf).unwrap() {
                got.push(f);
            }
        }
        assert_eq!(got, frames);
    }

    #[test]
    fn a_large_frame_arriving_in_pieces_is_checked_as_it_comes() {
        let (mut tx, mut rx) = pair(8 << 20);
        let frames = vec![frame(1, 3 << 20), frame(2, 10), frame(3, 2 << 20)];
        let wire = encode_all(&mut tx, &frames);
        let mut buf = BytesMut::new();
        let mut got = Vec::new();
        for piece in wire.chunks(200_000) {
            buf.extend_from_slice(piece);
            while let Some(f) = rx.decode(&mut buf).unwrap() {
                got.push(f);
            }
        }
        assert_eq!(got, frames);
    }

    #[test]
    fn a_large_frame_flipped_after_its_first_piece_is_a_bad_mac() {
        let (mut tx, mut rx) = pair(8 << 20);
        let mut wire = encode_all(&mut tx, &[frame(1, 3 << 20)]);
        wire[HEADER_LEN + (2 << 20)] ^= 1;
        let mut buf = BytesMut::new();
        let mut res = Ok(None);
        for piece in wire.chunks(100_000) {
            buf.extend_from_slice(piece);
            res = rx.decode(&mut buf);
            if !matches!(res, Ok(None)) {
                break;
            }
        }
        assert!(matches!(res, Err(WireError::BadMac { .. })), "{res:?}");
    }

    #[test]
    fn truncated_header_is_an_error() {
        let wire = encode_all(&mut pair(1 << 20).0, &[frame(1, 10)]);
        let (_, mut rx) = pair(1 << 20);
        let mut buf = BytesMut::from(&wire[..HEADER_LEN - 1]);
        assert_eq!(rx.decode(&mut buf).unwrap(), None);
        assert_eq!(
            rx.decode_eof(&mut buf),
            Err(WireError::Truncated {
                have: HEADER_LEN - 1,
                need: HEADER_LEN
            })
        );
    }

    #[test]
    fn truncated_data_is_an_error() {
        let wire = encode_all(&mut pair(1 << 20).0, &[frame(1, 10)]);
        let (_, mut rx) = pair(1 << 20);
        let mut buf = BytesMut::from(&wire[..HEADER_LEN + 4]);
        assert_eq!(
            rx.decode_eof(&mut buf),
            Err(WireError::Truncated {
                have: HEADER_LEN + 4,
                need: HEADER_LEN + 10
            })
        );
    }

    #[test]
    fn clean_eof_between_frames_is_not_an_error() {
        let wire = encode_all(&mut pair(1 << 20).0, &[frame(1, 10)]);
        let (_, mut rx) = pair(1 << 20);
        let mut buf = BytesMut::from(&wire[..]);
        assert!(rx.decode_eof(&mut buf).unwrap().is_some());
        assert_eq!(rx.decode_eof(&mut buf).unwrap(), None);
    }

    #[test]
    fn flipped_bit_is_a_bad_mac() {
        let wire = encode_all(&mut pair(1 << 20).0, &[frame(1, 10)]);
        for bit in 0..wire.len() * 8 {
            // Flipping a length bit may instead make the frame oversized or
            // incomplete; every other flip must fail the MAC.
            if (MAC_LEN + 12..HEADER_LEN).contains(&(bit / 8)) {
                continue;
            }
            let mut bad = BytesMut::from(&wire[..]);
            bad[bit / 8] ^= 1 << (bit % 8);
            let (_, mut rx) = pair(1 << 20);
            assert!(
                matches!(rx.decode(&mut bad), Err(WireError::BadMac { .. })),
                "bit {bit}"
            );
        }
    }

    #[test]
    fn bad_mac_is_an_error() {
        let (mut tx, mut rx) = pair(1 << 20);
        let mut buf = encode_all(&mut tx, &[frame(1, 10)]);
        buf[0] ^= 0xff;
        assert_eq!(
            rx.decode(&mut buf),
            Err(WireError::BadMac {
                dst: 1,
                src: 0,
                handle: 101,
                length: 10
            })
        );
    }

    #[test]
    fn oversized_length_rejected_before_buffering() {
        let (mut tx, _) = pair(1 << 20);
        let mut rx = FrameCodec::new(KEY, Direction::Up, 64);
        let mut buf = encode_all(&mut tx, &[frame(1, 65)]);
        // Only the header has arrived: the announced length alone decides.
        buf.truncate(HEADER_LEN);
        let cap_before = buf.capacity();
        assert_eq!(
            rx.decode(&mut buf),
            Err(WireError::Oversized {
                length: 65,
                max: 64
            })
        );
        assert_eq!(buf.capacity(), cap_before, "no buffer was grown for it");
    }

    #[test]
    fn header_claiming_4_gib_is_refused() {
        let mut rx = FrameCodec::new(KEY, Direction::Up, DEFAULT_MAX_MESSAGE_SIZE);
        let mut buf = BytesMut::from(&[0xffu8; HEADER_LEN][..]);
        assert!(matches!(
            rx.decode(&mut buf),
            Err(WireError::Oversized {
                length: 0x7fff_ffff,
                ..
            })
        ));
    }

    #[test]
    fn oversized_send_is_refused() {
        let mut tx = FrameCodec::new(KEY, Direction::Down, 8);
        let mut buf = BytesMut::new();
        assert_eq!(
            tx.encode(frame(1, 9), &mut buf),
            Err(WireError::TooLargeToSend { length: 9, max: 8 })
        );
        assert!(buf.is_empty());
    }

    #[test]
    fn replayed_frame_is_rejected() {
        let (mut tx, mut rx) = pair(1 << 20);
        let one = encode_all(&mut tx, &[frame(1, 10)]);
        let mut buf = one.clone();
        assert!(rx.decode(&mut buf).unwrap().is_some());
        let mut again = one;
        assert!(matches!(
            rx.decode(&mut again),
            Err(WireError::BadMac { .. })
        ));
    }

    #[test]
    fn reordered_frame_is_rejected() {
        let (mut tx, mut rx) = pair(1 << 20);
        let a = encode_all(&mut tx, &[frame(1, 10)]);
        let mut b = encode_all(&mut tx, &[frame(2, 10)]);
        assert!(matches!(rx.decode(&mut b), Err(WireError::BadMac { .. })));
        drop(a);
    }

    #[test]
    fn dropped_frame_is_rejected() {
        let (mut tx, mut rx) = pair(1 << 20);
        let _lost = encode_all(&mut tx, &[frame(1, 10)]);
        let mut next = encode_all(&mut tx, &[frame(2, 10)]);
        assert!(matches!(
            rx.decode(&mut next),
            Err(WireError::BadMac { .. })
        ));
    }

    #[test]
    fn reflected_frame_is_rejected() {
        // A peer echoing our own first frame back must not pass.
        let (mut parent, _) = pair(1 << 20);
        let mut buf = encode_all(&mut parent, &[frame(1, 10)]);
        let mut parent_rx = FrameCodec::new(KEY, Direction::Down, 1 << 20);
        assert!(matches!(
            parent_rx.decode(&mut buf),
            Err(WireError::BadMac { .. })
        ));
    }

    fn trailing_pair(max: usize) -> (FrameCodec, FrameCodec) {
        let (mut tx, rx) = pair(max);
        tx.set_trailer_from(0);
        (tx, rx)
    }

    fn decode_in_pieces(
        rx: &mut FrameCodec,
        wire: &[u8],
        piece: usize,
    ) -> Result<Vec<Frame>, WireError> {
        let mut buf = BytesMut::new();
        let mut got = Vec::new();
        for p in wire.chunks(piece) {
            buf.extend_from_slice(p);
            while let Some(f) = rx.decode(&mut buf)? {
                got.push(f);
            }
        }
        if let Some(f) = rx.decode_eof(&mut buf)? {
            got.push(f);
        }
        Ok(got)
    }

    #[test]
    fn frames_of_a_mib_or_more_are_sent_with_a_trailing_mac() {
        let (mut tx, mut rx) = pair(8 << 20);
        let frames = vec![
            frame(1, TRAILER_FROM - 1),
            frame(2, TRAILER_FROM),
            frame(3, 3),
        ];
        let wire = encode_all(&mut tx, &frames);
        let second = HEADER_LEN + TRAILER_FROM - 1;
        assert_ne!(
            &wire[..MAC_LEN],
            &[0u8; MAC_LEN],
            "below the threshold: leading"
        );
        assert_eq!(&wire[second..second + MAC_LEN], &[0u8; MAC_LEN], "trailing");
        assert_eq!(wire.len(), 3 * HEADER_LEN + 2 * TRAILER_FROM + 2 + MAC_LEN);
        assert_eq!(decode_in_pieces(&mut rx, &wire, 200_000).unwrap(), frames);
    }

    #[test]
    fn the_next_frames_wire_length_counts_its_trailer() {
        let (mut tx, _) = pair(1 << 20);
        let wire = encode_all(&mut tx, &[frame(1, 10)]);
        assert_eq!(FrameCodec::next_frame_len(&wire[..HEADER_LEN - 1]), None);
        assert_eq!(FrameCodec::next_frame_len(&wire), Some(HEADER_LEN + 10));
        let (mut tx, _) = trailing_pair(1 << 20);
        let wire = encode_all(&mut tx, &[frame(1, 10)]);
        assert_eq!(
            FrameCodec::next_frame_len(&wire[..HEADER_LEN]),
            Some(HEADER_LEN + 10 + MAC_LEN)
        );
    }

    #[test]
    fn trailing_mac_frames_split_at_every_byte_boundary() {
        let frames = vec![frame(1, 0), frame(2, 40), frame(3, 3)];
        let wire = encode_all(&mut trailing_pair(1 << 20).0, &frames);
        assert_eq!(wire.len(), 3 * (HEADER_LEN + MAC_LEN) + 43);
        assert_every_split_decodes(&wire, &frames);
    }

    #[test]
    fn leading_and_trailing_frames_mix_on_one_stream() {
        let (mut tx, mut rx) = pair(1 << 20);
        let mut wire = BytesMut::new();
        let frames: Vec<Frame> = (0..20).map(|n| frame(n, n as usize * 5)).collect();
        for f in &frames {
            tx.set_trailer_from(if f.header.handle % 2 == 0 {
                0
            } else {
                usize::MAX
            });
            tx.encode(f.clone(), &mut wire).unwrap();
        }
        assert_eq!(decode_in_pieces(&mut rx, &wire, 7).unwrap(), frames);
    }

    #[test]
    fn a_large_frame_with_a_forged_trailing_mac_is_refused() {
        let (mut tx, mut rx) = pair(8 << 20);
        let mut wire = encode_all(&mut tx, &[frame(1, 3 << 20)]);
        let last = wire.len() - 1;
        wire[last] ^= 1;
        let res = decode_in_pieces(&mut rx, &wire, 100_000);
        assert_eq!(
            res,
            Err(WireError::BadMac {
                dst: 1,
                src: 0,
                handle: 101,
                length: 3 << 20
            })
        );
    }

    #[test]
    fn a_large_frame_flipped_under_its_trailing_mac_is_refused() {
        let (mut tx, mut rx) = pair(8 << 20);
        let mut wire = encode_all(&mut tx, &[frame(1, 3 << 20)]);
        wire[HEADER_LEN + (2 << 20)] ^= 1;
        let res = decode_in_pieces(&mut rx, &wire, 100_000);
        assert!(matches!(res, Err(WireError::BadMac { .. })), "{res:?}");
    }

    #[test]
    fn a_frame_truncated_inside_its_trailing_mac_is_truncated() {
        let (mut tx, mut rx) = trailing_pair(1 << 20);
        let wire = encode_all(&mut tx, &[frame(1, 10)]);
        let mut buf = BytesMut::from(&wire[..wire.len() - 1]);
        assert_eq!(rx.decode(&mut buf).unwrap(), None);
        assert_eq!(
            rx.decode_eof(&mut buf),
            Err(WireError::Truncated {
                have: HEADER_LEN + 10 + MAC_LEN - 1,
                need: HEADER_LEN + 10 + MAC_LEN
            })
        );
    }

    #[test]
    fn reordered_trailing_mac_frames_are_refused() {
        let (mut tx, mut rx) = pair(8 << 20);
        let _first = encode_all(&mut tx, &[frame(1, 2 << 20)]);
        let second = encode_all(&mut tx, &[frame(2, 2 << 20)]);
        let res = decode_in_pieces(&mut rx, &second, 1 << 20);
        assert!(matches!(res, Err(WireError::BadMac { .. })), "{res:?}");
    }

    #[test]
    fn a_replayed_trailing_mac_frame_is_refused() {
        let (mut tx, mut rx) = trailing_pair(1 << 20);
        let one = encode_all(&mut tx, &[frame(1, 10)]);
        let mut twice = one.clone();
        twice.extend_from_slice(&one);
        assert!(rx.decode(&mut twice).unwrap().is_some());
        assert!(matches!(
            rx.decode(&mut twice),
            Err(WireError::BadMac { .. })
        ));
    }

    #[test]
    fn a_trailing_mac_frame_with_bytes_in_its_header_mac_is_refused() {
        let (mut tx, mut rx) = trailing_pair(1 << 20);
        let mut wire = encode_all(&mut tx, &[frame(1, 10)]);
        wire[7] = 1;
        // Refused from the header alone, before the data is waited for.
        let mut header = BytesMut::from(&wire[..HEADER_LEN]);
        assert!(matches!(
            rx.decode(&mut header),
            Err(WireError::BadMac { .. })
        ));
    }

    #[test]
    fn a_leading_mac_frame_given_the_trailer_flag_is_refused() {
        let (mut tx, mut rx) = pair(1 << 20);
        let mut wire = encode_all(&mut tx, &[frame(1, 10), frame(2, 10)]);
        wire[MAC_LEN + 12] |= 0x80;
        assert!(matches!(
            rx.decode(&mut wire),
            Err(WireError::BadMac { .. })
        ));
    }

    #[test]
    fn a_trailing_mac_frame_with_its_flag_cleared_is_refused() {
        let (mut tx, mut rx) = trailing_pair(1 << 20);
        let mut wire = encode_all(&mut tx, &[frame(1, 10), frame(2, 10)]);
        wire[MAC_LEN + 12] &= 0x7f;
        assert!(matches!(
            rx.decode(&mut wire),
            Err(WireError::BadMac { .. })
        ));
    }

    #[test]
    fn a_trailing_mac_frame_over_the_limit_is_refused_from_its_header() {
        let (mut tx, _) = trailing_pair(1 << 20);
        let mut rx = FrameCodec::new(KEY, Direction::Up, 64);
        let mut buf = encode_all(&mut tx, &[frame(1, 65)]);
        buf.truncate(HEADER_LEN);
        assert_eq!(
            rx.decode(&mut buf),
            Err(WireError::Oversized {
                length: 65,
                max: 64
            })
        );
    }

    #[test]
    fn flipped_bit_in_a_trailing_mac_frame_is_a_bad_mac() {
        let wire = encode_all(&mut trailing_pair(1 << 20).0, &[frame(1, 10)]);
        for bit in 0..wire.len() * 8 {
            if (MAC_LEN + 12..HEADER_LEN).contains(&(bit / 8)) && bit != (MAC_LEN + 12) * 8 + 7 {
                continue; // a length bit: oversized or incomplete instead
            }
            let mut bad = BytesMut::from(&wire[..]);
            bad[bit / 8] ^= 1 << (bit % 8);
            let (_, mut rx) = pair(1 << 20);
            assert!(
                matches!(rx.decode(&mut bad), Err(WireError::BadMac { .. })),
                "bit {bit}"
            );
        }
    }

    #[test]
    fn garbage_input_is_an_error_not_a_panic() {
        let (_, mut rx) = pair(1 << 20);
        let mut buf =
            BytesMut::from(&b"SSH-2.0-OpenSSH_9.2p1 Debian-2+deb12u3 garbage garbage"[..]);
        assert!(rx.decode(&mut buf).is_err());
    }
}
