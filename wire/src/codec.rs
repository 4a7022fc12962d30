use bytes::{Buf, BufMut, Bytes, BytesMut};
use tokio_util::codec::{Decoder, Encoder};

use crate::batch::{self, Gathered, BATCH_ENTRY_LEN, BATCH_MAX};
use crate::header::{
    is_batch, is_bulk, split_length, Header, BATCH_FLAG, FIELDS_LEN, HEADER_LEN, MAC_LEN,
};
use crate::mac::{Direction, FrameMac, Opening, Sealing};
use crate::WireError;

/// The default for `max_message_size`: 128 MiB, as in the design brief.
/// Children inherit the master's setting in their bootstrap config.
pub const DEFAULT_MAX_MESSAGE_SIZE: usize = 128 * 1024 * 1024;

/// One authenticated frame: routing fields plus the data (one MessagePack
/// value, left encoded so that forwarding contexts never decode it).
///
/// A bulk frame's data is `covered_len:u32be covered bytes` ([`crate::bulk`]):
/// its MAC covers only the part up to the end of `covered`, so the
/// receiving layer authenticates the bytes itself; a relay forwards it as
/// a bulk frame, re-MACing only that part. It is never batched.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    pub header: Header,
    pub data: Bytes,
    pub bulk: bool,
}

impl Frame {
    pub fn new(header: Header, data: impl Into<Bytes>) -> Self {
        Frame {
            header,
            data: data.into(),
            bulk: false,
        }
    }

    /// A bulk frame: `data` is `covered_len:u32be covered bytes`
    /// ([`crate::bulk::join`] or built in place).
    pub fn bulk(header: Header, data: impl Into<Bytes>) -> Self {
        Frame {
            header,
            data: data.into(),
            bulk: true,
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
    /// The verified batch whose frames `decode` is handing out, one per
    /// call (never all of them made at once).
    unbatched: Option<batch::Unbatched>,
    /// The batch being gathered at the end of the writer's buffer.
    gathered: Option<Gathered>,
}

/// Frames at least this large are MACed as they arrive, so the hash of
/// the last piece is all that is left when the last byte comes.
const HASH_AS_IT_ARRIVES: usize = 1 << 20;

/// Outgoing frames of at least this many data bytes are sent with a
/// trailing MAC (see [`TRAILER_FLAG`]), so that the writer hashes each
/// piece as it writes it instead of all of it before the first byte.
/// Below it a leading MAC costs nothing (the frame is one write anyway).
pub const TRAILER_FROM: usize = 1 << 20;

/// The largest data length a frame can announce: below the length
/// field's flags (bit 31 the trailer, 30 reserved, 29 the batch).
pub const MAX_FRAME_DATA: usize = (BATCH_FLAG - 1) as usize;

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
            unbatched: None,
            gathered: None,
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
        self.check_gathered();
        self.check_send(data.len())?;
        Ok(self.tx.seal(header, data))
    }

    /// Seals an outgoing bulk frame ([`Frame::bulk`]) and returns its
    /// header bytes: the MAC covers the fields (bulk flag set) and `data`
    /// up to the end of its covered part only. Data without a well-formed
    /// covered part is refused.
    pub fn seal_bulk(
        &mut self,
        header: &Header,
        data: &[u8],
    ) -> Result<[u8; HEADER_LEN], WireError> {
        self.check_gathered();
        let len = self.check_send(data.len())?;
        let end = crate::bulk::covered_end(data)
            .ok_or_else(|| WireError::Malformed("bulk frame without its covered part".into()))?;
        Ok(self.tx.seal_fields(&header.fields_bulk(len), &data[..end]))
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
        self.check_gathered();
        let fields = header.fields_trailing(self.check_send(len)?);
        let mut out = [0u8; HEADER_LEN];
        out[MAC_LEN..].copy_from_slice(&fields);
        Ok((out, self.tx.begin_seal(&fields)))
    }
}

impl FrameCodec {
    /// Frames sealed one by one must not overtake a gathered batch: its
    /// sequence number is taken when it is sealed.
    fn check_gathered(&self) {
        assert!(
            self.gathered.is_none(),
            "seal_gathered before sealing another frame"
        );
    }

    /// The most data bytes one batch may carry.
    fn batch_cap(&self) -> usize {
        self.max_message_size.min(BATCH_MAX)
    }

    /// Appends a small frame to `buf`, in one batch with the small frames
    /// gathered just before it (see `docs/PROTOCOL.md`, "Batch frames"):
    /// [`FrameCodec::seal_gathered`] must seal them before `buf` is
    /// written or another frame is sealed. A frame too large for a batch
    /// (more than [`BATCH_MAX`] with its fields) follows what is gathered,
    /// sealed alone. A batch of one frame is sealed as that frame.
    pub fn gather(
        &mut self,
        buf: &mut BytesMut,
        header: &Header,
        data: &[u8],
    ) -> Result<(), WireError> {
        let len = self.check_send(data.len())?;
        let entry = BATCH_ENTRY_LEN + data.len();
        let cap = self.batch_cap();
        if let Some(g) = self.gathered {
            if buf.len() - g.start - HEADER_LEN + entry > cap {
                self.seal_gathered(buf);
            }
        }
        if entry > cap {
            let sealed = self.seal(header, data)?;
            buf.put_slice(&sealed);
            buf.put_slice(data);
            return Ok(());
        }
        let g = self.gathered.get_or_insert_with(|| {
            let start = buf.len();
            buf.put_bytes(0, HEADER_LEN);
            Gathered { start, frames: 0 }
        });
        g.frames += 1;
        buf.put_slice(&header.fields(len));
        buf.put_slice(data);
        Ok(())
    }

    /// Seals the frames [`FrameCodec::gather`] put in `buf` (nothing if
    /// there are none): two or more as one batch frame, one as itself.
    pub fn seal_gathered(&mut self, buf: &mut BytesMut) {
        let Some(Gathered { start, frames }) = self.gathered.take() else {
            return;
        };
        let sealed = if frames == 1 {
            // Its entry is its fields and data: close the outer header's
            // spare 16 bytes and give it a MAC of its own.
            buf.copy_within(start + HEADER_LEN.., start + MAC_LEN);
            buf.truncate(buf.len() - FIELDS_LEN);
            let fields: [u8; FIELDS_LEN] = buf[start + MAC_LEN..start + HEADER_LEN]
                .try_into()
                .expect("16 bytes");
            let mut out = [0u8; HEADER_LEN];
            out[..MAC_LEN].copy_from_slice(&self.tx.mac(&fields, &buf[start + HEADER_LEN..]));
            out[MAC_LEN..].copy_from_slice(&fields);
            out
        } else {
            self.batch_header(&buf[start + HEADER_LEN..])
        };
        buf[start..start + HEADER_LEN].copy_from_slice(&sealed);
    }

    /// Seals `inner` (entries back to back: each frame's 16 fields, then
    /// its data) as one batch frame and returns its header. The entries
    /// are not checked: a receiver does that. For writers that build a
    /// batch themselves (and tests that need a malformed one).
    pub fn seal_batch(&mut self, inner: &[u8]) -> Result<[u8; HEADER_LEN], WireError> {
        self.check_gathered();
        self.check_send(inner.len())?;
        Ok(self.batch_header(inner))
    }

    fn batch_header(&mut self, inner: &[u8]) -> [u8; HEADER_LEN] {
        let fields = Header::default().fields(inner.len() as u32 | BATCH_FLAG);
        let mut out = [0u8; HEADER_LEN];
        out[..MAC_LEN].copy_from_slice(&self.tx.mac(&fields, inner));
        out[MAC_LEN..].copy_from_slice(&fields);
        out
    }

    /// Seals `frames` into `dst` the way a stream's writer does: the small
    /// ones gathered into batches (see [`FrameCodec::gather`]), a frame
    /// with a trailing MAC (see [`FrameCodec::set_trailer_from`]) alone.
    pub fn encode_gathered(
        &mut self,
        frames: impl IntoIterator<Item = Frame>,
        dst: &mut BytesMut,
    ) -> Result<(), WireError> {
        for frame in frames {
            if self.trails(frame.data.len()) || frame.bulk {
                self.seal_gathered(dst);
                self.encode(frame, dst)?;
            } else {
                self.gather(dst, &frame.header, &frame.data)?;
            }
        }
        self.seal_gathered(dst);
        Ok(())
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
        if let Some(b) = &mut self.unbatched {
            match b.next_frame() {
                Some(frame) => return Ok(Some(frame)),
                None => self.unbatched = None,
            }
        }
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
        let batch = is_batch(raw);
        let bulk = is_bulk(raw);
        if batch {
            batch::check_header(&header, length, trailer)?;
        }
        // A bulk frame's MAC is always in its header (it covers only a
        // small part of the data), and it is never a batch: with either
        // other flag it is refused. A trailing frame's leading MAC bytes
        // are zero: the MAC does not cover them, so anything else there is
        // refused (no bit of a frame may change unnoticed).
        if (bulk && (trailer || batch)) || (trailer && src[..MAC_LEN].iter().any(|&b| b != 0)) {
            return Err(bad_mac());
        }
        let data_end = HEADER_LEN + length as usize;
        let total = wire_len(raw);
        if src.len() < total {
            if length as usize >= HASH_AS_IT_ARRIVES && !bulk {
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
            // A bulk frame whose prefix claims more than its data holds
            // has no covered part to check: refused like a bad MAC.
            None if bulk => match crate::bulk::covered_end(&data) {
                Some(end) => self.rx.open(&mac, &fields, &data[..end]),
                None => false,
            },
            None => self.rx.open(&mac, &fields, &data),
        };
        if !good {
            return Err(bad_mac());
        }
        if batch {
            let mut frames = batch::Unbatched::new(data, self.max_message_size)?;
            let first = frames.next_frame();
            self.unbatched = Some(frames);
            return Ok(first);
        }
        Ok(Some(Frame { header, data, bulk }))
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
        if frame.bulk {
            let header = self.seal_bulk(&frame.header, data)?;
            dst.reserve(HEADER_LEN + data.len());
            dst.put_slice(&header);
            dst.put_slice(data);
            return Ok(());
        }
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
    use crate::header::TRAILER_FLAG;
    use crate::BatchFault;

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
                length: 0x1fff_ffff,
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

    fn batch_frames(n: u32) -> Vec<Frame> {
        (0..n).map(|i| frame(i, (i as usize * 3) % 17)).collect()
    }

    fn gathered(tx: &mut FrameCodec, frames: &[Frame]) -> BytesMut {
        let mut buf = BytesMut::new();
        tx.encode_gathered(frames.iter().cloned(), &mut buf)
            .unwrap();
        buf
    }

    /// A batch frame sealed by hand around `inner` (entries as given, any
    /// fault included), with a good MAC, sequence number 0.
    fn raw_batch(fields: Header, flags: u32, inner: &[u8]) -> BytesMut {
        let mut tx = FrameCodec::new(KEY, Direction::Down, 1 << 20);
        let f = fields.fields(inner.len() as u32 | flags);
        let mac = tx.tx.mac(&f, inner);
        let mut buf = BytesMut::new();
        buf.put_slice(&mac);
        buf.put_slice(&f);
        buf.put_slice(inner);
        buf
    }

    fn entry(h: Header, len_field: u32, data: &[u8]) -> Vec<u8> {
        let mut v = h.fields(len_field).to_vec();
        v.extend_from_slice(data);
        v
    }

    fn decode_all(rx: &mut FrameCodec, buf: &mut BytesMut) -> Result<Vec<Frame>, WireError> {
        let mut got = Vec::new();
        while let Some(f) = rx.decode(buf)? {
            got.push(f);
        }
        Ok(got)
    }

    #[test]
    fn gathered_frames_go_as_one_batch_with_one_mac() {
        let (mut tx, mut rx) = pair(1 << 20);
        let frames = batch_frames(30);
        let mut wire = gathered(&mut tx, &frames);
        let data: usize = frames.iter().map(|f| f.data.len()).sum();
        assert_eq!(wire.len(), HEADER_LEN + 30 * BATCH_ENTRY_LEN + data);
        assert_eq!(&wire[MAC_LEN..MAC_LEN + 12], &[0; 12], "unaddressed");
        assert_eq!(wire[MAC_LEN + 12] & 0xe0, 0x20, "the batch flag");
        assert_eq!(tx.tx.next_seq(), 1, "one sequence number");
        assert_eq!(decode_all(&mut rx, &mut wire).unwrap(), frames);
        assert_eq!(rx.rx.next_seq(), 1);
        assert!(wire.is_empty());
    }

    #[test]
    fn a_batch_split_at_every_byte_boundary_decodes() {
        let frames = batch_frames(5);
        let wire = gathered(&mut pair(1 << 20).0, &frames);
        assert_every_split_decodes(&wire, &frames);
    }

    #[test]
    fn a_gathered_frame_alone_is_an_ordinary_frame() {
        let f = frame(1, 10);
        let alone = gathered(&mut pair(1 << 20).0, std::slice::from_ref(&f));
        let plain = encode_all(&mut pair(1 << 20).0, std::slice::from_ref(&f));
        assert_eq!(alone, plain);
    }

    #[test]
    fn batches_mix_with_lone_and_trailing_frames_in_sequence() {
        let (mut tx, mut rx) = pair(1 << 20);
        let mut wire = gathered(&mut tx, &batch_frames(3));
        wire.extend(encode_all(&mut tx, &[frame(9, 4)]));
        tx.set_trailer_from(20);
        let mixed = vec![frame(1, 2), frame(2, 30), frame(3, 1), frame(4, 1)];
        wire.extend(gathered(&mut tx, &mixed));
        let mut want = batch_frames(3);
        want.push(frame(9, 4));
        want.extend(mixed);
        assert_eq!(tx.tx.next_seq(), 5, "batch, lone, lone, trailing, batch");
        assert_eq!(decode_in_pieces(&mut rx, &wire, 7).unwrap(), want);
    }

    #[test]
    fn batches_stay_within_the_cap_and_the_message_size() {
        let (mut tx, mut rx) = pair(1 << 20);
        let frames: Vec<Frame> = (0..100).map(|n| frame(n, 1000)).collect();
        let wire = gathered(&mut tx, &frames);
        let mut pos = 0;
        let mut batches = 0;
        while pos < wire.len() {
            let len = FrameCodec::next_frame_len(&wire[pos..]).unwrap();
            assert!(len - HEADER_LEN <= BATCH_MAX, "batch of {len}");
            pos += len;
            batches += 1;
        }
        assert_eq!(batches, 7, "16 entries of 1,016 bytes fit in 16 KiB");
        assert_eq!(decode_in_pieces(&mut rx, &wire, 4096).unwrap(), frames);
        // A limit below an entry's size: every frame goes alone.
        let mut tx = FrameCodec::new(KEY, Direction::Down, 20);
        let mut rx = FrameCodec::new(KEY, Direction::Up, 20);
        let small = vec![frame(1, 5), frame(2, 5), frame(3, 0)];
        let wire = gathered(&mut tx, &small);
        assert_eq!(wire.len(), 3 * HEADER_LEN + 10);
        assert_eq!(decode_in_pieces(&mut rx, &wire, 3).unwrap(), small);
    }

    #[test]
    fn a_frame_too_large_for_a_batch_follows_the_gathered_ones_alone() {
        let (mut tx, mut rx) = pair(1 << 20);
        let frames = vec![frame(1, 3), frame(2, 4), frame(3, BATCH_MAX), frame(4, 5)];
        let wire = gathered(&mut tx, &frames);
        assert_eq!(tx.tx.next_seq(), 3);
        assert_eq!(decode_in_pieces(&mut rx, &wire, 1000).unwrap(), frames);
    }

    #[test]
    fn a_flipped_bit_in_a_batch_is_a_bad_mac() {
        let wire = gathered(&mut pair(1 << 20).0, &batch_frames(3));
        for byte in (0..MAC_LEN).chain(HEADER_LEN..wire.len()) {
            let mut bad = BytesMut::from(&wire[..]);
            bad[byte] ^= 4;
            let (_, mut rx) = pair(1 << 20);
            assert!(
                matches!(rx.decode(&mut bad), Err(WireError::BadMac { .. })),
                "byte {byte}"
            );
        }
    }

    fn assert_batch_refused(mut wire: BytesMut, want: WireError) {
        let (_, mut rx) = pair(1 << 20);
        assert_eq!(decode_all(&mut rx, &mut wire), Err(want));
    }

    fn bad(fault: BatchFault) -> WireError {
        WireError::BadBatch { fault }
    }

    #[test]
    fn an_inner_frame_running_past_its_batch_is_refused() {
        let h = Header::new(1, 0, 101, 1000);
        let mut inner = entry(h, 3, b"abc");
        inner.extend(entry(h, 10, b"short"));
        assert_batch_refused(
            raw_batch(Header::default(), BATCH_FLAG, &inner),
            bad(BatchFault::RunsPast),
        );
        let mut inner = entry(h, 3, b"abc");
        inner.extend(&h.fields(0)[..9]);
        assert_batch_refused(
            raw_batch(Header::default(), BATCH_FLAG, &inner),
            bad(BatchFault::RunsPast),
        );
    }

    #[test]
    fn a_nested_batch_is_refused() {
        let h = Header::new(1, 0, 101, 1000);
        let inner = entry(Header::default(), 3 | BATCH_FLAG, &entry(h, 0, b"")[..3]);
        assert_batch_refused(
            raw_batch(Header::default(), BATCH_FLAG, &inner),
            bad(BatchFault::Nested),
        );
    }

    #[test]
    fn an_inner_trailing_mac_frame_is_refused() {
        let h = Header::new(1, 0, 101, 1000);
        let mut inner = entry(h, 2 | TRAILER_FLAG, b"ab");
        inner.extend([0; MAC_LEN]);
        assert_batch_refused(
            raw_batch(Header::default(), BATCH_FLAG, &inner),
            bad(BatchFault::InnerTrailer),
        );
    }

    #[test]
    fn an_inner_frame_over_the_limit_is_refused() {
        // A whole inner frame over the limit makes its batch oversized;
        // an inner length field alone can claim more than the batch holds.
        let h = Header::new(1, 0, 101, 1000);
        let inner = entry(h, 101, &[1; 5]);
        let mut wire = raw_batch(Header::default(), BATCH_FLAG, &inner);
        let mut rx = FrameCodec::new(KEY, Direction::Up, 100);
        assert_eq!(
            decode_all(&mut rx, &mut wire),
            Err(WireError::Oversized {
                length: 101,
                max: 100
            })
        );
    }

    #[test]
    fn an_empty_or_addressed_or_trailing_batch_is_refused_from_its_header() {
        let cases = [
            (Header::default(), BATCH_FLAG, 0, BatchFault::Empty),
            (
                Header::new(1, 0, 0, 0),
                BATCH_FLAG,
                20,
                BatchFault::Addressed,
            ),
            (
                Header::new(0, 0, 101, 0),
                BATCH_FLAG,
                20,
                BatchFault::Addressed,
            ),
            (
                Header::default(),
                BATCH_FLAG | TRAILER_FLAG,
                20,
                BatchFault::Trailing,
            ),
        ];
        for (h, flags, len, fault) in cases {
            let h = raw_batch(h, flags, &vec![0; len]);
            // The header alone: nothing of the data has to arrive.
            assert_batch_refused(BytesMut::from(&h[..HEADER_LEN]), bad(fault));
        }
    }

    #[test]
    fn a_batch_takes_one_sequence_number_and_its_replay_fails() {
        let (mut tx, mut rx) = pair(1 << 20);
        let one = gathered(&mut tx, &batch_frames(2));
        let mut twice = one.clone();
        twice.extend_from_slice(&one);
        assert_eq!(rx.decode(&mut twice).unwrap().unwrap(), batch_frames(2)[0]);
        assert_eq!(rx.decode(&mut twice).unwrap().unwrap(), batch_frames(2)[1]);
        assert!(matches!(
            rx.decode(&mut twice),
            Err(WireError::BadMac { .. })
        ));
    }

    fn bulk(n: u32, covered: usize, bytes: usize) -> Frame {
        let data = crate::bulk::join(&vec![n as u8; covered], &vec![!(n as u8); bytes]);
        Frame::bulk(Header::new(1, 0, 100 + n, 0), data)
    }

    #[test]
    fn bulk_frames_split_at_every_byte_boundary_among_other_frames() {
        let frames = vec![bulk(1, 5, 40), frame(2, 3), bulk(3, 0, 0), bulk(4, 2, 1)];
        let (mut tx, _) = pair(1 << 20);
        let mut wire = BytesMut::new();
        for (i, f) in frames.iter().enumerate() {
            tx.set_trailer_from(if i == 1 { 0 } else { usize::MAX });
            tx.encode(f.clone(), &mut wire).unwrap();
        }
        assert_eq!(
            wire[MAC_LEN + 12] & 0xc0,
            0x40,
            "the bulk flag, not the trailer's"
        );
        assert_every_split_decodes(&wire, &frames);
    }

    #[test]
    fn a_large_bulk_frame_is_sent_with_its_mac_in_the_header() {
        let (mut tx, mut rx) = pair(8 << 20);
        let frames = vec![bulk(1, 50, 3 << 20), frame(2, 10)];
        let wire = encode_all(&mut tx, &frames);
        assert_ne!(&wire[..MAC_LEN], &[0u8; MAC_LEN]);
        assert_eq!(wire.len(), 2 * HEADER_LEN + 4 + 50 + (3 << 20) + 10);
        assert_eq!(decode_in_pieces(&mut rx, &wire, 100_000).unwrap(), frames);
    }

    #[test]
    fn a_flipped_bit_in_a_bulk_frames_covered_part_or_header_is_a_bad_mac() {
        let wire = encode_all(&mut pair(1 << 20).0, &[bulk(1, 6, 10)]);
        let covered_end = HEADER_LEN + 4 + 6;
        for bit in 0..covered_end * 8 {
            let byte = bit / 8;
            // Length bits other than the flags: oversized or incomplete.
            if (MAC_LEN + 12..HEADER_LEN).contains(&byte) && bit != (MAC_LEN + 12) * 8 + 1 {
                continue;
            }
            let mut bad = BytesMut::from(&wire[..]);
            bad[byte] ^= 0x80 >> (bit % 8);
            let (_, mut rx) = pair(1 << 20);
            assert!(
                matches!(rx.decode(&mut bad), Err(WireError::BadMac { .. })),
                "bit {bit}"
            );
        }
    }

    #[test]
    fn a_flipped_byte_in_a_bulk_frames_bytes_is_left_to_its_receiver() {
        // The frame MAC does not cover a bulk frame's bytes: the file
        // layer's running SHA-256 does (files/src/writer.rs).
        let (mut tx, mut rx) = pair(1 << 20);
        let mut wire = encode_all(&mut tx, &[bulk(1, 6, 10)]);
        let last = wire.len() - 1;
        wire[last] ^= 1;
        let got = rx.decode(&mut wire).unwrap().unwrap();
        assert!(got.bulk);
        assert_ne!(got, bulk(1, 6, 10));
    }

    #[test]
    fn a_bulk_frame_with_the_trailer_flag_too_is_refused() {
        let (mut tx, mut rx) = pair(1 << 20);
        let mut wire = encode_all(&mut tx, &[bulk(1, 6, 10)]);
        wire[..MAC_LEN].fill(0);
        wire[MAC_LEN + 12] |= 0x80;
        let mut header = BytesMut::from(&wire[..HEADER_LEN]);
        assert!(matches!(
            rx.decode(&mut header),
            Err(WireError::BadMac { .. })
        ));
    }

    #[test]
    fn the_bulk_flag_set_or_cleared_on_the_way_is_refused() {
        let (mut tx, mut rx) = pair(1 << 20);
        let mut wire = encode_all(&mut tx, &[bulk(1, 6, 10)]);
        wire[MAC_LEN + 12] &= !0x40;
        assert!(matches!(
            rx.decode(&mut wire),
            Err(WireError::BadMac { .. })
        ));
        let (mut tx, mut rx) = pair(1 << 20);
        // A plain frame whose data happens to parse as a bulk one.
        let plain = Frame::new(Header::new(1, 0, 5, 0), crate::bulk::join(b"ab", b"cd"));
        let mut wire = encode_all(&mut tx, &[plain]);
        wire[MAC_LEN + 12] |= 0x40;
        assert!(matches!(
            rx.decode(&mut wire),
            Err(WireError::BadMac { .. })
        ));
    }

    #[test]
    fn a_bulk_frame_whose_prefix_claims_more_than_its_data_is_refused() {
        let (mut tx, mut rx) = pair(1 << 20);
        let mut wire = encode_all(&mut tx, &[bulk(1, 6, 10)]);
        wire[HEADER_LEN..HEADER_LEN + 4].copy_from_slice(&100u32.to_be_bytes());
        assert!(matches!(
            rx.decode(&mut wire),
            Err(WireError::BadMac { .. })
        ));
        let mut tx = FrameCodec::new(KEY, Direction::Down, 1 << 20);
        let mut buf = BytesMut::new();
        let short = Frame::bulk(Header::new(1, 0, 5, 0), &[0u8, 0, 0, 9, 1][..]);
        assert!(matches!(
            tx.encode(short, &mut buf),
            Err(WireError::Malformed(_))
        ));
        assert!(buf.is_empty());
    }

    #[test]
    fn a_bulk_frame_over_the_limit_is_refused_from_its_header() {
        let (mut tx, _) = pair(1 << 20);
        let mut rx = FrameCodec::new(KEY, Direction::Up, 64);
        let mut buf = encode_all(&mut tx, &[bulk(1, 6, 60)]);
        buf.truncate(HEADER_LEN);
        assert_eq!(
            rx.decode(&mut buf),
            Err(WireError::Oversized {
                length: 70,
                max: 64
            })
        );
        let mut small = FrameCodec::new(KEY, Direction::Down, 64);
        assert!(matches!(
            small.encode(bulk(1, 6, 60), &mut BytesMut::new()),
            Err(WireError::TooLargeToSend {
                length: 70,
                max: 64
            })
        ));
    }

    #[test]
    fn a_replayed_bulk_frame_is_refused() {
        let (mut tx, mut rx) = pair(1 << 20);
        let one = encode_all(&mut tx, &[bulk(1, 6, 10)]);
        let mut twice = one.clone();
        twice.extend_from_slice(&one);
        assert!(rx.decode(&mut twice).unwrap().is_some());
        assert!(matches!(
            rx.decode(&mut twice),
            Err(WireError::BadMac { .. })
        ));
    }

    #[test]
    fn a_bulk_frame_is_never_gathered_into_a_batch() {
        let (mut tx, mut rx) = pair(1 << 20);
        let frames = vec![frame(1, 3), bulk(2, 4, 5), frame(3, 2), frame(4, 1)];
        let mut buf = gathered(&mut tx, &frames);
        assert_eq!(decode_all(&mut rx, &mut buf).unwrap(), frames);
    }

    #[test]
    fn a_bulk_frame_with_the_batch_flag_or_inside_a_batch_is_refused() {
        let (mut tx, mut rx) = pair(1 << 20);
        let mut wire = encode_all(&mut tx, &[bulk(1, 6, 10)]);
        wire[MAC_LEN + 12] |= 0x20;
        assert!(rx.decode(&mut wire).is_err(), "bulk and batch at once");
        let data = crate::bulk::join(b"c", b"b");
        let len = data.len() as u32 | crate::header::BULK_FLAG;
        let inner = entry(Header::new(1, 0, 5, 0), len, &data);
        let mut buf = raw_batch(Header::default(), BATCH_FLAG, &inner);
        let (_, mut rx) = pair(1 << 20);
        assert!(
            rx.decode(&mut buf).is_err(),
            "an inner length with the bulk bit"
        );
    }

    #[test]
    fn garbage_input_is_an_error_not_a_panic() {
        let (_, mut rx) = pair(1 << 20);
        let mut buf =
            BytesMut::from(&b"SSH-2.0-OpenSSH_9.2p1 Debian-2+deb12u3 garbage garbage"[..]);
        assert!(rx.decode(&mut buf).is_err());
    }
}
