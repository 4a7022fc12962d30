//! The mutator: seeds from `wire/vectors`, changed a few bytes at a time
//! the way a hostile peer or a corrupting link would.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// Values that sit on the edges of MessagePack markers, lengths and the
/// frame header's fields.
const INTERESTING8: &[u8] = &[
    0x00, 0x01, 0x7f, 0x80, 0x8f, 0x90, 0x9f, 0xa0, 0xbf, 0xc0, 0xc1, 0xc2, 0xc4, 0xc7, 0xc9, 0xd4,
    0xd8, 0xdb, 0xdc, 0xdd, 0xde, 0xdf, 0xe0, 0xff, b'\n', b'E', b'C', b'0', b'1',
];
const INTERESTING32: &[u32] = &[
    0,
    1,
    2,
    0x7f,
    0x80,
    0xff,
    0x100,
    0xffff,
    0x1_0000,
    0x7fff_ffff,
    0x8000_0000,
    0xffff_ffff,
    128 << 20,
    (128 << 20) + 1,
];

/// Largest input the mutator makes: lengths inside may claim far more.
pub const MAX_INPUT: usize = 64 * 1024;

/// A seeded source of inputs: reproducible from its seed.
pub struct Mutator {
    rng: StdRng,
}

impl Mutator {
    pub fn new(seed: u64) -> Self {
        Mutator {
            rng: StdRng::seed_from_u64(seed),
        }
    }

    pub fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            self.rng.gen_range(0..n)
        }
    }

    /// A new input from `corpus`: one seed, 1 to 8 mutations (one of which
    /// may splice in a piece of another seed).
    pub fn input(&mut self, corpus: &[Vec<u8>]) -> Vec<u8> {
        let mut v = corpus[self.below(corpus.len())].clone();
        let n = 1 + self.below(8);
        for _ in 0..n {
            self.mutate(&mut v, corpus);
        }
        v.truncate(MAX_INPUT);
        v
    }

    fn mutate(&mut self, v: &mut Vec<u8>, corpus: &[Vec<u8>]) {
        let len = v.len();
        match self.below(10) {
            0 if len > 0 => {
                let i = self.below(len);
                v[i] ^= 1 << self.below(8);
            }
            1 if len > 0 => {
                let i = self.below(len);
                v[i] = INTERESTING8[self.below(INTERESTING8.len())];
            }
            2 if len > 0 => {
                let i = self.below(len);
                v[i] = self.rng.gen();
            }
            3 if len >= 4 => {
                let i = self.below(len - 3);
                let x = INTERESTING32[self.below(INTERESTING32.len())];
                let b = if self.rng.gen() {
                    x.to_be_bytes()
                } else {
                    x.to_le_bytes()
                };
                v[i..i + 4].copy_from_slice(&b);
            }
            4 => {
                let at = self.below(len + 1);
                let n = 1 + self.below(16);
                let bytes: Vec<u8> = (0..n).map(|_| self.rng.gen()).collect();
                v.splice(at..at, bytes);
            }
            5 if len > 0 => {
                let a = self.below(len);
                let b = (a + 1 + self.below(64)).min(len);
                v.drain(a..b);
            }
            6 if len > 0 => {
                let a = self.below(len);
                let b = (a + 1 + self.below(256)).min(len);
                let piece = v[a..b].to_vec();
                let at = self.below(len + 1);
                v.splice(at..at, piece);
            }
            7 => {
                let other = &corpus[self.below(corpus.len())];
                if !other.is_empty() {
                    let a = self.below(other.len());
                    let b = (a + 1 + self.below(1024)).min(other.len());
                    let at = self.below(len + 1);
                    v.splice(at..at, other[a..b].iter().copied());
                }
            }
            8 if len > 0 => {
                let n = self.below(len);
                v.truncate(n);
            }
            _ => {
                // Repeat one byte: deep nesting, long runs.
                let b = INTERESTING8[self.below(INTERESTING8.len())];
                let n = 1 + self.below(512);
                let at = self.below(len + 1);
                v.splice(at..at, std::iter::repeat(b).take(n));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_inputs() {
        let corpus = vec![b"\x92\x01\xa1x".to_vec(), Vec::new()];
        let (mut a, mut b) = (Mutator::new(7), Mutator::new(7));
        for _ in 0..1000 {
            let x = a.input(&corpus);
            assert!(x.len() <= MAX_INPUT);
            assert_eq!(x, b.input(&corpus));
        }
    }
}
