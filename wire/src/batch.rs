//! Batch frames: small frames written together under one MAC.
//!
//! A batch is an ordinary frame (one leading MAC, one sequence number)
//! whose `length` carries [`BATCH_FLAG`] and whose routing fields are
//! zero. Its data is other frames back to back, each as its 16 header
//! fields without a MAC (`dst src handle reply_to length`) and its data.
//! The receiver verifies the batch once, checks every inner frame (this
//! module, before any is handed on), then handles each exactly as if it
//! had arrived alone. See `docs/PROTOCOL.md`, "Batch frames".

use std::fmt;

use bytes::Bytes;

use crate::codec::Frame;
use crate::header::{Header, BATCH_FLAG, BULK_FLAG, FIELDS_LEN, TRAILER_FLAG};
use crate::WireError;

/// A sender puts at most this many data bytes in one batch (and at most
/// `max_message_size`): the MAC of up to 16 KiB is what a Python receiver
/// computes with its built-in SHA-1 in one call, and 350 small calls
/// share it. A receiver accepts any batch within `max_message_size`.
pub const BATCH_MAX: usize = 16 * 1024;

/// The bytes before each inner frame's data in a batch: its fields.
pub const BATCH_ENTRY_LEN: usize = FIELDS_LEN;

/// What is wrong with a batch frame whose MAC was good (or, for the
/// first three, whose header alone gives it away).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum BatchFault {
    /// The batch holds no frame (its length is 0).
    Empty,
    /// The batch's own `dst`, `src`, `handle` or `reply_to` is not zero.
    Addressed,
    /// The batch has a trailing MAC: batches are small, their MAC leads.
    Trailing,
    /// An inner frame's fields or data run past the end of the batch.
    RunsPast,
    /// An inner frame is itself a batch.
    Nested,
    /// An inner frame has the trailing-MAC flag.
    InnerTrailer,
}

impl BatchFault {
    /// The fault's name in the shared vectors (`wire/vectors/README.md`).
    pub fn name(self) -> &'static str {
        match self {
            BatchFault::Empty => "empty",
            BatchFault::Addressed => "addressed",
            BatchFault::Trailing => "trailing",
            BatchFault::RunsPast => "runs_past",
            BatchFault::Nested => "nested",
            BatchFault::InnerTrailer => "inner_trailer",
        }
    }
}

impl fmt::Display for BatchFault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            BatchFault::Empty => "an empty batch",
            BatchFault::Addressed => "a batch with routing fields",
            BatchFault::Trailing => "a batch with a trailing MAC",
            BatchFault::RunsPast => "an inner frame runs past its batch",
            BatchFault::Nested => "a batch inside a batch",
            BatchFault::InnerTrailer => "an inner frame with a trailing MAC",
        })
    }
}

fn fault(fault: BatchFault) -> WireError {
    WireError::BadBatch { fault }
}

/// The faults a batch's header shows on its own, checked before its data
/// is buffered: `header` and `length` as read (flags removed),
/// `trailer` its trailing-MAC flag.
pub(crate) fn check_header(header: &Header, length: u32, trailer: bool) -> Result<(), WireError> {
    if trailer {
        return Err(fault(BatchFault::Trailing));
    }
    if *header != Header::default() {
        return Err(fault(BatchFault::Addressed));
    }
    if length == 0 {
        return Err(fault(BatchFault::Empty));
    }
    Ok(())
}

/// The frames of a verified batch, handed out one at a time: the batch's
/// data and where the next inner frame starts. Every inner frame is
/// checked when it is made ([`Unbatched::new`], one pass that allocates
/// nothing), so a batch with any fault yields none, and a batch of
/// millions of empty frames costs its bytes and this, never a `Frame`
/// per entry held at once.
#[derive(Debug)]
pub(crate) struct Unbatched {
    data: Bytes,
    pos: usize,
}

impl Unbatched {
    /// Checks every inner frame of `data` (each at most `max` bytes).
    pub(crate) fn new(data: Bytes, max: usize) -> Result<Self, WireError> {
        let mut pos = 0;
        while pos < data.len() {
            pos = entry_at(&data, pos, max)?.2;
        }
        Ok(Unbatched { data, pos: 0 })
    }

    /// The next inner frame (a slice of the batch, no copy), or `None`
    /// once all are out.
    pub(crate) fn next_frame(&mut self) -> Option<Frame> {
        if self.pos >= self.data.len() {
            return None;
        }
        // Checked in new: cannot fail here.
        let (header, start, end) = entry_at(&self.data, self.pos, usize::MAX).ok()?;
        self.pos = end;
        Some(Frame::new(header, self.data.slice(start..end)))
    }
}

/// The inner frame whose fields start at `pos` in `data`: its header and
/// where its data starts and ends, or the fault that refuses the batch.
fn entry_at(data: &[u8], pos: usize, max: usize) -> Result<(Header, usize, usize), WireError> {
    let fields: &[u8; FIELDS_LEN] = data
        .get(pos..pos + FIELDS_LEN)
        .and_then(|f| f.try_into().ok())
        .ok_or(fault(BatchFault::RunsPast))?;
    let (header, raw) = Header::parse_fields(fields);
    if raw & BATCH_FLAG != 0 {
        return Err(fault(BatchFault::Nested));
    }
    if raw & TRAILER_FLAG != 0 {
        return Err(fault(BatchFault::InnerTrailer));
    }
    if raw & BULK_FLAG != 0 {
        // Never inside a batch, whatever max_message_size is: refused as
        // oversized (its length with the flag is past any frame's), as
        // the Python core refuses it.
        return Err(WireError::Oversized {
            length: raw.into(),
            max,
        });
    }
    let length = raw as usize;
    if length > max {
        return Err(WireError::Oversized {
            length: length as u64,
            max,
        });
    }
    let start = pos + FIELDS_LEN;
    let end = start + length;
    if end > data.len() {
        return Err(fault(BatchFault::RunsPast));
    }
    Ok((header, start, end))
}

/// Where the batch being gathered starts in the writer's buffer (its
/// outer header's room), and how many frames it holds so far.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Gathered {
    pub(crate) start: usize,
    pub(crate) frames: usize,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(h: Header, data: &[u8]) -> Vec<u8> {
        let mut v = h.fields(data.len() as u32).to_vec();
        v.extend_from_slice(data);
        v
    }

    fn split_all(data: Vec<u8>, max: usize) -> Result<Vec<Frame>, WireError> {
        let mut batch = Unbatched::new(Bytes::from(data), max)?;
        Ok(std::iter::from_fn(|| batch.next_frame()).collect())
    }

    #[test]
    fn inner_frames_come_out_in_order_as_slices() {
        let a = Header::new(1, 0, 101, 1000);
        let b = Header::new(2, 0, 1001, 0);
        let mut data = entry(a, b"one");
        data.extend(entry(b, b""));
        data.extend(entry(a, b"three"));
        let got = split_all(data, 1 << 20).unwrap();
        assert_eq!(
            got,
            vec![
                Frame::new(a, &b"one"[..]),
                Frame::new(b, &b""[..]),
                Frame::new(a, &b"three"[..])
            ]
        );
    }

    #[test]
    fn every_truncation_of_a_batch_runs_past_and_yields_nothing() {
        let h = Header::new(1, 0, 101, 1000);
        let mut data = entry(h, b"0123456789");
        data.extend(entry(h, b"abc"));
        let whole = data.len();
        let ends = [FIELDS_LEN + 10, whole];
        for cut in 1..whole {
            let res = split_all(data[..cut].to_vec(), 1 << 20);
            if ends.contains(&cut) {
                assert!(res.is_ok(), "cut {cut}");
            } else {
                assert_eq!(res, Err(fault(BatchFault::RunsPast)), "cut {cut}");
            }
        }
    }

    #[test]
    fn a_fault_after_good_frames_leaves_nothing_behind() {
        let h = Header::new(1, 0, 101, 1000);
        let mut data = entry(h, b"good");
        let mut nested = entry(h, b"x");
        nested[12] |= 0x20;
        data.extend(nested);
        let res = split_all(data, 1 << 20);
        assert_eq!(res, Err(fault(BatchFault::Nested)));
    }

    #[test]
    fn inner_flags_and_sizes_are_refused() {
        let h = Header::new(1, 0, 101, 1000);
        let mut trailing = entry(h, b"x");
        trailing[12] |= 0x80;
        assert_eq!(
            split_all(trailing, 1 << 20),
            Err(fault(BatchFault::InnerTrailer))
        );
        assert_eq!(
            split_all(entry(h, &[7; 9]), 8),
            Err(WireError::Oversized { length: 9, max: 8 })
        );
        assert!(split_all(entry(h, &[7; 8]), 8).is_ok());
    }

    #[test]
    fn an_inner_bulk_frame_is_refused_whatever_the_limit() {
        // Not only because its flag makes it larger than a clamped
        // max_message_size: a codec made with no limit refuses it too.
        let h = Header::new(1, 0, 101, 1000);
        let mut bulk = entry(h, b"x");
        bulk[12] |= 0x40;
        assert_eq!(
            split_all(bulk, usize::MAX),
            Err(WireError::Oversized {
                length: (BULK_FLAG | 1).into(),
                max: usize::MAX
            })
        );
    }

    #[test]
    fn inner_frames_are_made_one_at_a_time() {
        let h = Header::new(1, 0, 101, 1000);
        let data: Vec<u8> = (0..1000).flat_map(|_| entry(h, b"")).collect();
        let mut batch = Unbatched::new(Bytes::from(data), 1 << 20).unwrap();
        assert_eq!(batch.pos, 0, "checked, nothing made yet");
        assert!(batch.next_frame().is_some());
        assert_eq!(batch.pos, FIELDS_LEN, "one made");
    }

    #[test]
    fn a_batch_header_must_be_unaddressed_leading_and_not_empty() {
        let zero = Header::default();
        assert_eq!(check_header(&zero, 5, false), Ok(()));
        assert_eq!(
            check_header(&zero, 5, true),
            Err(fault(BatchFault::Trailing))
        );
        assert_eq!(check_header(&zero, 0, false), Err(fault(BatchFault::Empty)));
        for h in [
            Header::new(1, 0, 0, 0),
            Header::new(0, 1, 0, 0),
            Header::new(0, 0, 1, 0),
            Header::new(0, 0, 0, 1),
        ] {
            assert_eq!(
                check_header(&h, 5, false),
                Err(fault(BatchFault::Addressed))
            );
        }
    }
}
