use hmac::{Hmac, Mac};
use sha1::Sha1;
use subtle::ConstantTimeEq;

use crate::header::{Header, FIELDS_LEN, HEADER_LEN, MAC_LEN};

type HmacSha1 = Hmac<Sha1>;

/// Which way along a stream a [`ChainedMac`] authenticates.
///
/// Both ends share one secret, so without a direction label a peer could
/// reflect our own frames back at us and they would verify. Each chain
/// absorbs one direction byte before any frame, which separates the two.
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

/// The running HMAC-SHA1 state of one direction of one stream.
///
/// The state absorbs, for every frame in order, the 16 header bytes after
/// the MAC and then the frame's data; a frame's MAC is the digest of the
/// state at that point (the state itself carries on). Python mirrors this
/// exactly: `h.update(fields); h.update(data); mac = h.copy().digest()`.
#[derive(Clone)]
pub struct ChainedMac {
    state: HmacSha1,
}

impl ChainedMac {
    pub fn new(key: &[u8], direction: Direction) -> Self {
        let mut state = HmacSha1::new_from_slice(key).expect("HMAC accepts keys of any length");
        state.update(&[direction.label()]);
        ChainedMac { state }
    }

    fn absorb(&mut self, fields: &[u8; FIELDS_LEN], data: &[u8]) -> [u8; MAC_LEN] {
        self.state.update(fields);
        self.state.update(data);
        self.state.clone().finalize().into_bytes().into()
    }

    /// Advances the chain over an outgoing frame and returns its complete
    /// 36-byte header. `data.len()` must fit in a u32 (the caller checks
    /// the configured limit first).
    pub fn seal(&mut self, header: &Header, data: &[u8]) -> [u8; HEADER_LEN] {
        let len = u32::try_from(data.len()).expect("frame data longer than u32::MAX");
        let fields = header.fields(len);
        let mac = self.absorb(&fields, data);
        let mut out = [0u8; HEADER_LEN];
        out[..MAC_LEN].copy_from_slice(&mac);
        out[MAC_LEN..].copy_from_slice(&fields);
        out
    }

    /// Advances the chain over an incoming frame and says whether its MAC
    /// matched, comparing in constant time. After a mismatch the chain is
    /// out of step with the peer for good: the stream must be closed.
    pub fn open(&mut self, mac: &[u8; MAC_LEN], fields: &[u8; FIELDS_LEN], data: &[u8]) -> bool {
        let expected = self.absorb(fields, data);
        bool::from(expected.ct_eq(mac))
    }
}

impl std::fmt::Debug for ChainedMac {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print key material, even derived state.
        f.write_str("ChainedMac { .. }")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_frame_opens_on_the_matching_chain() {
        let h = Header::new(1, 0, 101, 1000);
        let mut tx = ChainedMac::new(b"k", Direction::Down);
        let mut rx = ChainedMac::new(b"k", Direction::Down);
        for data in [&b"one"[..], b"", b"three"] {
            let sealed = tx.seal(&h, data);
            let mac: [u8; MAC_LEN] = sealed[..MAC_LEN].try_into().unwrap();
            let fields: [u8; FIELDS_LEN] = sealed[MAC_LEN..].try_into().unwrap();
            assert!(rx.open(&mac, &fields, data));
        }
    }

    #[test]
    fn reflected_frame_fails_on_the_other_direction() {
        let h = Header::new(1, 0, 101, 1000);
        let mut tx = ChainedMac::new(b"k", Direction::Down);
        let mut rx = ChainedMac::new(b"k", Direction::Up);
        let sealed = tx.seal(&h, b"x");
        let mac: [u8; MAC_LEN] = sealed[..MAC_LEN].try_into().unwrap();
        let fields: [u8; FIELDS_LEN] = sealed[MAC_LEN..].try_into().unwrap();
        assert!(!rx.open(&mac, &fields, b"x"));
    }

    #[test]
    fn wrong_key_fails() {
        let h = Header::new(1, 0, 101, 1000);
        let sealed = ChainedMac::new(b"k1", Direction::Down).seal(&h, b"x");
        let mac: [u8; MAC_LEN] = sealed[..MAC_LEN].try_into().unwrap();
        let fields: [u8; FIELDS_LEN] = sealed[MAC_LEN..].try_into().unwrap();
        assert!(!ChainedMac::new(b"k2", Direction::Down).open(&mac, &fields, b"x"));
    }
}
