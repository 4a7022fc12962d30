//! Maps keyed by this context's own numbers: the handle numbers it drew
//! (at random) or registered in code, and the context IDs of its tree
//! (allocated by the master, routed by ancestors). A peer's frame only
//! looks such a key up, never inserts one, so these maps need no keyed
//! hash (SipHash) against a flood of colliding keys, and SipHash was the
//! largest cost of a lookup on every frame's path. Maps keyed by what a
//! peer says (a refusal log's sources) keep the standard hasher.

use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasherDefault, Hasher};

/// A HashMap keyed by this context's own numbers.
pub type OwnKeyMap<K, V> = HashMap<K, V, BuildHasherDefault<OwnKeyHasher>>;
/// A HashSet of this context's own numbers.
pub type OwnKeySet<K> = HashSet<K, BuildHasherDefault<OwnKeyHasher>>;

/// A multiply by an odd constant: it keeps distinct keys' low bits (the
/// bucket) distinct, random handles' random and sequential IDs'
/// sequential, and mixes every bit into the high ones (the tag).
#[derive(Default, Clone, Copy)]
pub struct OwnKeyHasher(u64);

const SPREAD: u64 = 0x9e37_79b9_7f4a_7c15;

impl Hasher for OwnKeyHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(b)).wrapping_mul(SPREAD);
        }
    }

    fn write_u16(&mut self, n: u16) {
        self.write_u64(u64::from(n));
    }

    fn write_u32(&mut self, n: u32) {
        self.write_u64(u64::from(n));
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = (self.0 ^ n).wrapping_mul(SPREAD);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::hash::BuildHasher;

    #[test]
    fn sequential_ids_and_random_handles_land_in_distinct_buckets() {
        let b = BuildHasherDefault::<OwnKeyHasher>::default();
        // The low 10 bits (a table of 1,024 buckets) of 1,024 sequential
        // IDs are all different: a multiply by an odd number is a
        // bijection on them.
        let low: OwnKeySet<u64> = (0..1024u16).map(|i| b.hash_one(i) & 1023).collect();
        assert_eq!(low.len(), 1024);
        // The high 7 bits (hashbrown's tag) are spread, not constant.
        let tags: OwnKeySet<u64> = (0..1024u16).map(|i| b.hash_one(i) >> 57).collect();
        assert!(tags.len() > 100, "{}", tags.len());
        let mut m: OwnKeyMap<u32, u32> = OwnKeyMap::default();
        for h in [1000u32, 4_000_000_000, 77_777] {
            m.insert(h, h);
        }
        assert_eq!(m.get(&77_777), Some(&77_777));
    }
}
