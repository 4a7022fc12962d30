//! econtext-wire: the stream protocol, with no I/O.
//!
//! Every econtext context, Rust or Python, speaks one framed protocol. This
//! crate is that protocol and nothing else: no sockets, no actors, no
//! threads, so it can be unit-tested, property-tested and fuzzed in isolation.
//!
//! The principal types:
//!
//! - [`Header`]: the 36-byte big-endian frame header
//!   (`hmac[20] dst:u16 src:u16 handle:u32 reply_to:u32 length:u32`).
//! - [`FrameMac`]: one direction of a stream's MACs: each frame's HMAC-SHA1
//!   covers the direction, an implicit per-direction sequence number, the
//!   header fields and the data, so a flipped bit, a dropped, replayed,
//!   reordered or reflected frame fails verification.
//! - [`FrameCodec`]: a tokio-util `Decoder`/`Encoder` that pairs the two:
//!   it checks `length` against the size limit before buffering anything,
//!   verifies MACs in constant time and yields [`Frame`]s. A large frame's
//!   MAC may follow its data instead ([`TRAILER_FLAG`], [`Sealing`]), so
//!   that its writer hashes it while writing. Small frames written together
//!   may share one MAC as a batch ([`BATCH_FLAG`], [`FrameCodec::gather`]),
//!   split again by the receiver's codec.
//!
//! Frame data is one MessagePack value ([`payload`]). The special values of
//! the protocol are MessagePack ext types ([`ext`]); the well-known handle
//! numbers live in [`handles`]; the messages the runtime exchanges on them
//! are in [`messages`]; [`sanitize`] makes a child's text safe to show.
//! The Python core (`bootstrap/python/`) mirrors every
//! number defined here, and `wire/vectors/` holds frames encoded by this
//! crate that both implementations decode in their tests.
//!
//! ```
//! use bytes::BytesMut;
//! use econtext_wire::{Direction, Frame, FrameCodec, Header};
//! use tokio_util::codec::{Decoder, Encoder};
//!
//! let key = b"a secret shared by the whole tree";
//! let mut parent = FrameCodec::new(key, Direction::Down, 1 << 20);
//! let mut child = FrameCodec::new(key, Direction::Up, 1 << 20);
//!
//! let mut buf = BytesMut::new();
//! let frame = Frame::new(Header::new(1, 0, 101, 1000), &b"\x90"[..]);
//! parent.encode(frame.clone(), &mut buf).unwrap();
//! let got = child.decode(&mut buf).unwrap().unwrap();
//! assert_eq!(got, frame);
//! ```

mod batch;
pub mod bulk;
mod codec;
mod error;
pub mod ext;
pub mod handles;
mod header;
mod mac;
pub mod messages;
pub mod payload;
pub mod sanitize;

pub use batch::{BatchFault, BATCH_ENTRY_LEN, BATCH_MAX};
pub use codec::{Frame, FrameCodec, DEFAULT_MAX_MESSAGE_SIZE, MAX_FRAME_DATA, TRAILER_FROM};
pub use error::WireError;
pub use ext::{CallError, ContextRef, Dead, SenderRef};
pub use header::{
    is_batch, is_bulk, split_length, Header, BATCH_FLAG, BULK_FLAG, HEADER_LEN, MAC_LEN,
    TRAILER_FLAG,
};
pub use mac::{Direction, FrameMac, Sealing};
pub use payload::{decode, encode, Reply, Value};

/// A context's identity in the tree. The master is context 0 and allocates
/// every other ID.
pub type ContextId = u16;

/// A handle number inside one context: well-known ones below 1000
/// ([`handles`]), dynamic ones from [`handles::FIRST_DYNAMIC`].
pub type Handle = u32;
