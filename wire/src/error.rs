use thiserror::Error;

use crate::batch::BatchFault;

/// Everything that can be wrong with bytes received from a peer.
///
/// Each variant is a distinct fault a caller may want to tell apart: a
/// truncated stream is a dead peer, a bad MAC is an attack or a bug, an
/// oversized frame is a policy refusal.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum WireError {
    /// The stream ended part-way through a frame.
    #[error("stream ended mid-frame: {have} of {need} bytes received")]
    Truncated { have: usize, need: usize },

    /// The frame's MAC did not match the one expected for the next frame: the frame was
    /// corrupted, forged, replayed, reordered, or a frame before it was lost.
    #[error("bad MAC on frame (dst={dst} src={src} handle={handle} length={length})")]
    BadMac {
        dst: u16,
        src: u16,
        handle: u32,
        length: u32,
    },

    /// A batch frame (its MAC good) whose content breaks the batch rules:
    /// the peer is broken or hostile, and the stream is closed as for a
    /// bad MAC, none of the batch's frames delivered.
    #[error("malformed batch frame: {fault}")]
    BadBatch { fault: BatchFault },

    /// The header announced more data than `max_message_size` allows. It is
    /// refused before any of the data is buffered.
    #[error("frame of {length} bytes exceeds max_message_size {max}")]
    Oversized { length: u64, max: usize },

    /// The frame data is not one well-formed MessagePack value, or not the
    /// shape the receiver expected.
    #[error("malformed MessagePack payload: {0}")]
    Malformed(String),

    /// The payload holds more values than a frame may decode to
    /// (`payload::MAX_DECODED_VALUES`): refused before any is decoded.
    #[error("payload holds more than {max} values")]
    TooManyValues { max: u64 },

    /// The payload used an ext type code that this protocol does not define.
    #[error("unknown MessagePack ext type {0}")]
    UnknownExt(i8),

    /// Writing a frame: the data is larger than the protocol can express or
    /// than the configured limit.
    #[error("cannot send {length} bytes: max_message_size is {max}")]
    TooLargeToSend { length: usize, max: usize },

    /// An I/O error from the transport under a codec (kept as text so the
    /// error stays `Clone` and comparable).
    #[error("I/O error: {0}")]
    Io(String),
}

impl From<std::io::Error> for WireError {
    fn from(e: std::io::Error) -> Self {
        WireError::Io(e.to_string())
    }
}
