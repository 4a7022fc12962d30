//! Bulk frames: file chunks whose bytes the frame MAC does not cover.
//!
//! A bulk frame's data is `covered_len:u32be covered[covered_len] bytes`.
//! Its MAC (always in the header) covers the direction, sequence number,
//! the 16 header fields (with [`crate::BULK_FLAG`] set) and the data up to
//! the end of `covered`; `bytes` are authenticated by whoever asked for a
//! bulk frame: the file layer puts in `covered` the SHA-256 of the file
//! from its start through this chunk, and the receiver checks the chunk
//! against it before writing it (docs/PROTOCOL.md, "Bulk frames"). So each
//! byte of a file is hashed once per side instead of twice (HMAC-SHA1 and
//! SHA-256). Only handles registered for bulk frames take them.

/// Bytes of the `covered_len` prefix.
pub const BULK_PREFIX: usize = 4;

/// Where the MAC-covered part of a bulk frame's data ends (the prefix and
/// `covered`), or None when the prefix claims more than the data holds.
pub fn covered_end(data: &[u8]) -> Option<usize> {
    let prefix: [u8; BULK_PREFIX] = data.get(..BULK_PREFIX)?.try_into().ok()?;
    let end = BULK_PREFIX.checked_add(u32::from_be_bytes(prefix) as usize)?;
    (end <= data.len()).then_some(end)
}

/// A bulk frame's data split into its covered part (without the prefix)
/// and its bytes.
pub fn split(data: &[u8]) -> Option<(&[u8], &[u8])> {
    let end = covered_end(data)?;
    Some((&data[BULK_PREFIX..end], &data[end..]))
}

/// The data of a bulk frame with `covered` and `bytes` (a copy: senders
/// of large chunks build it in place, see `econtext-files`' proto).
pub fn join(covered: &[u8], bytes: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(BULK_PREFIX + covered.len() + bytes.len());
    v.extend_from_slice(&(covered.len() as u32).to_be_bytes());
    v.extend_from_slice(covered);
    v.extend_from_slice(bytes);
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_prefix_says_where_the_covered_part_ends() {
        let d = join(b"abc", b"0123456789");
        assert_eq!(covered_end(&d), Some(7));
        assert_eq!(split(&d), Some((&b"abc"[..], &b"0123456789"[..])));
        assert_eq!(split(&join(b"", b"")), Some((&b""[..], &b""[..])));
    }

    #[test]
    fn a_prefix_past_the_data_or_a_short_one_is_refused() {
        assert_eq!(covered_end(&[0, 0, 0]), None);
        assert_eq!(covered_end(&[0, 0, 0, 2, 9]), None);
        assert_eq!(covered_end(&[0xff, 0xff, 0xff, 0xff]), None);
        assert_eq!(covered_end(&[0, 0, 0, 1, 9]), Some(5));
    }
}
