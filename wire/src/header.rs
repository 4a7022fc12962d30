use crate::{ContextId, Handle};

/// Bytes of HMAC-SHA1 at the front of every frame.
pub const MAC_LEN: usize = 20;

/// Bytes of a whole frame header: the MAC and the five routing fields.
pub const HEADER_LEN: usize = MAC_LEN + FIELDS_LEN;

/// Bytes of the fields after the MAC (`dst src handle reply_to length`).
pub(crate) const FIELDS_LEN: usize = 2 + 2 + 4 + 4 + 4;

/// Set in the `length` field when the frame's MAC follows its data (a
/// trailer) instead of leading the header, whose MAC bytes are then
/// zero. The flag is one of the fields the MAC covers; the data length
/// is the 29 bits below the flags ([`split_length`]). A sender hashes a
/// trailing frame while writing it, where a leading MAC makes it hash
/// all the data before the first byte can go.
pub const TRAILER_FLAG: u32 = 1 << 31;

// The `length` field's top bits, as allotted by the lead on 2026-12-01
// (two developers each wanted bit 30 for a new frame kind):
//   bit 31: TRAILER_FLAG, the trailing MAC (above).
//   bit 30: BULK_FLAG, bulk frames of file chunks (developer onepass).
//   bit 29: BATCH_FLAG, a batch of small frames under one MAC (developer
//           batch).
// Each flag is defined here by the change that implements it; the data
// length is the bits below the lowest flag defined, so with all three a
// frame carries at most 512 MiB - 1 bytes (max_message_size is clamped
// below that). A kind's combination with another flag that the protocol
// does not define is refused like a bad MAC.

/// Set in the `length` field of a bulk frame (a file chunk): its data is
/// `covered_len:u32be covered[covered_len] bytes`, and the frame's MAC
/// (in the header, never a trailer) covers the fields and the data up to
/// the end of `covered` only. The bytes after it are authenticated by the
/// layer that asked for a bulk frame (the file's running SHA-256, in
/// `covered`), and only handles registered for bulk frames take them. A
/// bulk frame is never a batch nor inside one.
pub const BULK_FLAG: u32 = 1 << 30;

/// Set in the `length` field of a batch frame: its data is other frames,
/// each its 16 fields (no MAC) and its data, back to back, which the one
/// MAC of the batch covers (see `docs/PROTOCOL.md`, "Batch frames"). A
/// batch's own routing fields are zero.
pub const BATCH_FLAG: u32 = 1 << 29;

/// The flags defined so far: the rest of a raw `length` field is the data
/// length (a bit above them that no flag defines yet is left in it, so
/// such a frame is refused as oversized).
pub(crate) const FLAGS: u32 = TRAILER_FLAG | BULK_FLAG | BATCH_FLAG;

/// The data length announced by a raw `length` field (without the
/// flags), and whether the frame's MAC is a trailer (see [`TRAILER_FLAG`]).
pub fn split_length(raw: u32) -> (u32, bool) {
    (raw & !FLAGS, raw & TRAILER_FLAG != 0)
}

/// Whether a raw `length` field announces a bulk frame ([`BULK_FLAG`]).
pub fn is_bulk(raw: u32) -> bool {
    raw & BULK_FLAG != 0
}

/// True when a raw `length` field marks a batch frame ([`BATCH_FLAG`]).
pub fn is_batch(raw: u32) -> bool {
    raw & BATCH_FLAG != 0
}

/// The routing fields of a frame. The MAC is not part of this struct: it is
/// computed (see `FrameMac`) when a frame is sealed and checked when
/// one is opened, so a `Header` in memory is always an authenticated one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Header {
    /// The context the frame is addressed to.
    pub dst: ContextId,
    /// The context that sent it.
    pub src: ContextId,
    /// The handle in `dst` that receives it.
    pub handle: Handle,
    /// The handle in `src` that wants the reply, or 0 for none.
    pub reply_to: Handle,
}

impl Header {
    pub fn new(dst: ContextId, src: ContextId, handle: Handle, reply_to: Handle) -> Self {
        Header {
            dst,
            src,
            handle,
            reply_to,
        }
    }

    /// The 16 bytes after the MAC, as sent for data of `length` bytes.
    pub fn fields(&self, length: u32) -> [u8; FIELDS_LEN] {
        let mut b = [0u8; FIELDS_LEN];
        b[0..2].copy_from_slice(&self.dst.to_be_bytes());
        b[2..4].copy_from_slice(&self.src.to_be_bytes());
        b[4..8].copy_from_slice(&self.handle.to_be_bytes());
        b[8..12].copy_from_slice(&self.reply_to.to_be_bytes());
        b[12..16].copy_from_slice(&length.to_be_bytes());
        b
    }

    /// The 16 bytes after the (zeroed) MAC of a frame whose MAC follows
    /// its `length` bytes of data.
    pub fn fields_trailing(&self, length: u32) -> [u8; FIELDS_LEN] {
        debug_assert!(length & FLAGS == 0, "data length below 512 MiB");
        self.fields(length | TRAILER_FLAG)
    }

    /// The 16 bytes after the MAC of a bulk frame of `length` data bytes.
    pub fn fields_bulk(&self, length: u32) -> [u8; FIELDS_LEN] {
        debug_assert!(length & FLAGS == 0, "data length below the flags");
        self.fields(length | BULK_FLAG)
    }

    /// Parses the 16 field bytes into a header and the raw `length` field
    /// (the data length, with [`TRAILER_FLAG`] set for a trailing MAC:
    /// see [`split_length`]).
    pub fn parse_fields(b: &[u8; FIELDS_LEN]) -> (Header, u32) {
        let be16 = |i: usize| u16::from_be_bytes([b[i], b[i + 1]]);
        let be32 = |i: usize| u32::from_be_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
        (
            Header {
                dst: be16(0),
                src: be16(2),
                handle: be32(4),
                reply_to: be32(8),
            },
            be32(12),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_are_big_endian_in_seed_order() {
        let h = Header::new(0x0102, 0x0304, 0x05060708, 0x090a0b0c);
        assert_eq!(
            h.fields(0x0d0e0f10),
            [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16]
        );
        assert_eq!(Header::parse_fields(&h.fields(7)), (h, 7));
        assert_eq!(HEADER_LEN, 36);
    }

    #[test]
    fn the_trailer_flag_is_the_length_fields_top_bit() {
        let h = Header::new(1, 2, 3, 4);
        let f = h.fields_trailing(0x0102_0304);
        assert_eq!(&f[12..], &[0x81, 2, 3, 4]);
        let (back, raw) = Header::parse_fields(&f);
        assert_eq!(back, h);
        assert_eq!(split_length(raw), (0x0102_0304, true));
        assert_eq!(split_length(7), (7, false));
    }

    #[test]
    fn the_bulk_flag_is_the_length_fields_second_bit() {
        let h = Header::new(1, 2, 3, 4);
        let f = h.fields_bulk(0x0102_0304);
        assert_eq!(&f[12..], &[0x41, 2, 3, 4]);
        let (back, raw) = Header::parse_fields(&f);
        assert_eq!(back, h);
        assert!(is_bulk(raw) && !is_batch(raw));
        assert_eq!(split_length(raw), (0x0102_0304, false));
        let (_, trailing) = Header::parse_fields(&h.fields_trailing(5));
        assert!(!is_bulk(trailing));
    }

    #[test]
    fn the_batch_flag_is_the_length_fields_bit_29() {
        let f = Header::default().fields(5 | BATCH_FLAG);
        assert_eq!(&f[12..], &[0x20, 0, 0, 5]);
        let (_, raw) = Header::parse_fields(&f);
        assert!(is_batch(raw));
        assert_eq!(split_length(raw), (5, false));
        assert!(!is_batch(5 | TRAILER_FLAG));
    }
}
