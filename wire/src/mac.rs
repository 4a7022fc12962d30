use hmac::{Hmac, Mac};
use sha1::Sha1;
use subtle::ConstantTimeEq;

use crate::header::{Header, FIELDS_LEN, HEADER_LEN, MAC_LEN};

type HmacSha1 = Hmac<Sha1>;

/// Which way along a stream a [`FrameMac`] authenticates.
///
/// Both ends share one secret, so without a direction label a peer could
/// reflect our own frames back at us and they would verify. Every frame's
/// MAC covers one direction byte, which separates the two.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Parent to child (away from the master).
    Down,
    /// Child to parent (toward the master).
    Up,
}

impl Direction {
    fn label(self) -> u8 {
        match self {
            Direction::Down => 0,
            Direction::Up => 1,
        }
    }

    pub fn reverse(self) -> Direction {
        match self {
            Direction::Down => Direction::Up,
            Direction::Up => Direction::Down,
        }
    }
}

/// The bytes MACed before a frame's fields: the direction byte and the
/// frame's sequence number on this direction of the stream.
const PREFIX_LEN: usize = 1 + 8;

/// One direction of one stream: a per-frame HMAC-SHA1 over an implicit
/// sequence number.
///
/// Frame number `seq` (0 for the first frame sent in this direction) has
/// `mac = HMAC-SHA1(key, direction || seq:u64be || fields[16] || data)`.
/// The sequence number is never sent: both ends count. So a replayed,
/// reordered or dropped frame fails (its number is not the one expected),
/// and a reflected one fails on the direction byte, as with a chained
/// MAC. Unlike a chain, each frame's MAC stands alone, so an
/// implementation may compute it with any SHA-1 it likes frame by frame
/// (the Python core uses the small built-in `_sha1` for small frames and
/// OpenSSL's only for large ones).
#[derive(Clone)]
pub struct FrameMac {
    keyed: HmacSha1,
    direction: Direction,
    seq: u64,
}

impl FrameMac {
    pub fn new(key: &[u8], direction: Direction) -> Self {
        FrameMac {
            keyed: HmacSha1::new_from_slice(key).expect("HMAC accepts keys of any length"),
            direction,
            seq: 0,
        }
    }

    /// The sequence number the next frame will be sealed or opened with.
    pub fn next_seq(&self) -> u64 {
        self.seq
    }

    /// The keyed state for the next frame, fed its direction, sequence
    /// number and fields; the sequence moves on.
    fn start(&mut self, fields: &[u8; FIELDS_LEN]) -> HmacSha1 {
        let mut prefix = [0u8; PREFIX_LEN];
        prefix[0] = self.direction.label();
        prefix[1..].copy_from_slice(&self.seq.to_be_bytes());
        self.seq += 1;
        let mut h = self.keyed.clone();
        h.update(&prefix);
        h.update(fields);
        h
    }

    /// The MAC of the next frame, whose fields (as sent) and data are
    /// given; the sequence moves on.
    pub(crate) fn mac(&mut self, fields: &[u8; FIELDS_LEN], data: &[u8]) -> [u8; MAC_LEN] {
        let mut h = self.start(fields);
        h.update(data);
        h.finalize().into_bytes().into()
    }

    /// Starts checking the next incoming frame whose data arrives in
    /// pieces: feed them in order with [`Opening::update`], then
    /// [`Opening::verify`]. Same MAC as [`FrameMac::open`]; a reader
    /// hashes a large frame while the rest is still arriving.
    pub fn begin_open(&mut self, fields: &[u8; FIELDS_LEN]) -> Opening {
        Opening {
            h: self.start(fields),
        }
    }

    /// Starts sealing the next outgoing frame whose data is hashed in
    /// pieces as it is written (a trailing MAC): feed every data byte in
    /// order with [`Sealing::update`], then send [`Sealing::finish`]'s
    /// MAC after the data. `fields` must carry the trailer flag
    /// ([`Header::fields_trailing`]).
    pub fn begin_seal(&mut self, fields: &[u8; FIELDS_LEN]) -> Sealing {
        Sealing {
            h: self.start(fields),
        }
    }

    /// Seals the next outgoing frame and returns its complete 36-byte
    /// header. `data.len()` must fit in a u32 (the caller checks the
    /// configured limit first).
    pub fn seal(&mut self, header: &Header, data: &[u8]) -> [u8; HEADER_LEN] {
        let len = u32::try_from(data.len()).expect("frame data longer than u32::MAX");
        let fields = header.fields(len);
        let mac = self.mac(&fields, data);
        let mut out = [0u8; HEADER_LEN];
        out[..MAC_LEN].copy_from_slice(&mac);
        out[MAC_LEN..].copy_from_slice(&fields);
        out
    }

    /// Seals the next outgoing frame whose MAC covers `fields` as given
    /// (a bulk frame's, [`Header::fields_bulk`]) and `covered`, the part
    /// of its data the MAC covers; returns the complete 36-byte header.
    pub fn seal_fields(&mut self, fields: &[u8; FIELDS_LEN], covered: &[u8]) -> [u8; HEADER_LEN] {
        let mac = self.mac(fields, covered);
        let mut out = [0u8; HEADER_LEN];
        out[..MAC_LEN].copy_from_slice(&mac);
        out[MAC_LEN..].copy_from_slice(fields);
        out
    }

    /// Checks the next incoming frame's MAC in constant time. After a
    /// mismatch the stream must be closed: the sequence has moved on, and
    /// a frame that failed is never retried.
    pub fn open(&mut self, mac: &[u8; MAC_LEN], fields: &[u8; FIELDS_LEN], data: &[u8]) -> bool {
        let expected = self.mac(fields, data);
        bool::from(expected.ct_eq(mac))
    }
}

/// One outgoing frame's trailing MAC being computed piece by piece.
pub struct Sealing {
    h: HmacSha1,
}

impl Sealing {
    pub fn update(&mut self, data: &[u8]) {
        self.h.update(data);
    }

    /// The MAC to send after the frame's data.
    pub fn finish(self) -> [u8; MAC_LEN] {
        self.h.finalize().into_bytes().into()
    }
}

impl std::fmt::Debug for Sealing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sealing").finish_non_exhaustive()
    }
}

/// One incoming frame's MAC being computed piece by piece.
pub struct Opening {
    h: HmacSha1,
}

impl Opening {
    pub fn update(&mut self, data: &[u8]) {
        self.h.update(data);
    }

    /// Compares in constant time with the MAC the frame came with.
    pub fn verify(self, mac: &[u8; MAC_LEN]) -> bool {
        let expected: [u8; MAC_LEN] = self.h.finalize().into_bytes().into();
        bool::from(expected.ct_eq(mac))
    }
}

impl std::fmt::Debug for Opening {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Opening").finish_non_exhaustive()
    }
}

impl std::fmt::Debug for FrameMac {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print key material, even derived state.
        f.debug_struct("FrameMac")
            .field("direction", &self.direction)
            .field("seq", &self.seq)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(sealed: &[u8; HEADER_LEN]) -> ([u8; MAC_LEN], [u8; FIELDS_LEN]) {
        (
            sealed[..MAC_LEN].try_into().unwrap(),
            sealed[MAC_LEN..].try_into().unwrap(),
        )
    }

    #[test]
    fn sealed_frame_opens_on_the_matching_direction() {
        let h = Header::new(1, 0, 101, 1000);
        let mut tx = FrameMac::new(b"k", Direction::Down);
        let mut rx = FrameMac::new(b"k", Direction::Down);
        for data in [&b"one"[..], b"", b"three"] {
            let (mac, fields) = split(&tx.seal(&h, data));
            assert!(rx.open(&mac, &fields, data));
        }
        assert_eq!(rx.next_seq(), 3);
    }

    #[test]
    fn mac_is_hmac_sha1_of_direction_seq_fields_data() {
        // What another implementation computes with a plain HMAC-SHA1.
        let h = Header::new(1, 0, 101, 1000);
        let mut tx = FrameMac::new(b"k", Direction::Up);
        tx.seal(&h, b"first");
        let (mac, fields) = split(&tx.seal(&h, b"second"));
        let mut plain = HmacSha1::new_from_slice(b"k").unwrap();
        plain.update(&[1, 0, 0, 0, 0, 0, 0, 0, 1]);
        plain.update(&fields);
        plain.update(b"second");
        assert_eq!(mac, <[u8; MAC_LEN]>::from(plain.finalize().into_bytes()));
    }

    #[test]
    fn reflected_frame_fails_on_the_other_direction() {
        let h = Header::new(1, 0, 101, 1000);
        let mut tx = FrameMac::new(b"k", Direction::Down);
        let mut rx = FrameMac::new(b"k", Direction::Up);
        let (mac, fields) = split(&tx.seal(&h, b"x"));
        assert!(!rx.open(&mac, &fields, b"x"));
    }

    #[test]
    fn replayed_frame_fails_on_the_next_sequence_number() {
        let h = Header::new(1, 0, 101, 1000);
        let mut tx = FrameMac::new(b"k", Direction::Down);
        let mut rx = FrameMac::new(b"k", Direction::Down);
        let (mac, fields) = split(&tx.seal(&h, b"x"));
        assert!(rx.open(&mac, &fields, b"x"));
        assert!(!rx.open(&mac, &fields, b"x"));
    }

    #[test]
    fn a_frame_opened_in_pieces_checks_like_a_whole_one() {
        let h = Header::new(1, 0, 101, 1000);
        let mut tx = FrameMac::new(b"k", Direction::Down);
        let mut rx = FrameMac::new(b"k", Direction::Down);
        let data = b"one two three four";
        let (mac, fields) = split(&tx.seal(&h, data));
        let mut o = rx.begin_open(&fields);
        for piece in data.chunks(5) {
            o.update(piece);
        }
        assert!(o.verify(&mac));
        // The sequence moved on: the same frame again fails.
        let mut o = rx.begin_open(&fields);
        o.update(data);
        assert!(!o.verify(&mac));
    }

    #[test]
    fn a_trailing_mac_sealed_in_pieces_opens_like_a_whole_frame() {
        let h = Header::new(1, 0, 101, 1000);
        let mut tx = FrameMac::new(b"k", Direction::Up);
        let mut rx = FrameMac::new(b"k", Direction::Up);
        let data = b"one two three four";
        let fields = h.fields_trailing(data.len() as u32);
        let mut s = tx.begin_seal(&fields);
        for piece in data.chunks(4) {
            s.update(piece);
        }
        let mac = s.finish();
        assert!(rx.open(&mac, &fields, data));
        // The flag is MACed: the same MAC with the flag cleared fails.
        let mut rx = FrameMac::new(b"k", Direction::Up);
        assert!(!rx.open(&mac, &h.fields(data.len() as u32), data));
    }

    #[test]
    fn wrong_key_fails() {
        let h = Header::new(1, 0, 101, 1000);
        let (mac, fields) = split(&FrameMac::new(b"k1", Direction::Down).seal(&h, b"x"));
        assert!(!FrameMac::new(b"k2", Direction::Down).open(&mac, &fields, b"x"));
    }
}
