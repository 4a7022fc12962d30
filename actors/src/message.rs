use bytes::Bytes;
use econtext_wire::{payload, ContextId, Frame, Handle, Header, Reply, WireError};
use serde::de::DeserializeOwned;

/// A frame delivered to a local handle.
#[derive(Debug, Clone, PartialEq, Eq, actix::Message)]
#[rtype(result = "()")]
pub struct Message {
    /// The context that sent it.
    pub src: ContextId,
    /// The handle it was delivered to.
    pub handle: Handle,
    /// Where the sender wants a reply (0: nowhere).
    pub reply_to: Handle,
    /// One encoded MessagePack value; for a bulk frame (only delivered to
    /// a handle registered for them) `covered_len:u32be covered bytes`,
    /// whose bytes no frame MAC covered (`econtext_wire::bulk`).
    pub data: Bytes,
    pub bulk: bool,
}

impl Message {
    pub fn from_frame(frame: Frame) -> Self {
        Message {
            src: frame.header.src,
            handle: frame.header.handle,
            reply_to: frame.header.reply_to,
            data: frame.data,
            bulk: frame.bulk,
        }
    }

    /// Decodes the data as `T`.
    pub fn decode<T: DeserializeOwned>(&self) -> Result<T, WireError> {
        payload::decode(&self.data)
    }

    /// Decodes the data as a reply: a value, a remote error, or Dead.
    pub fn reply<T: DeserializeOwned>(&self) -> Result<Reply<T>, WireError> {
        Reply::decode(&self.data)
    }

    pub fn is_dead(&self) -> bool {
        payload::is_dead(&self.data)
    }

    /// A synthesized Dead message, as delivered to waiters on a context
    /// that died.
    pub fn dead(src: ContextId, handle: Handle, reason: &crate::event::DeadReason) -> Self {
        Message {
            src,
            handle,
            reply_to: 0,
            data: payload::encode(&econtext_wire::Dead::from(reason)).expect("Dead encodes"),
            bulk: false,
        }
    }
}

/// Builds the frame for a reply to `msg` from context `me`.
pub fn reply_frame(me: ContextId, msg: &Message, data: Bytes) -> Frame {
    Frame::new(Header::new(msg.src, me, msg.reply_to, 0), data)
}
