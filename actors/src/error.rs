use econtext_wire::{CallError, ContextId, Dead, WireError};
use thiserror::Error;

use crate::event::DeadReason;

/// Why a call, send or request did not produce a value.
#[derive(Debug, Error, Clone, PartialEq)]
pub enum Error {
    /// The remote code raised: its type, message and traceback.
    #[error("remote {}: {}", .0.type_name, .0.message)]
    Remote(CallError),

    /// The target context (or the route to it) is gone.
    #[error("context {context} is dead: {reason}")]
    Dead {
        context: ContextId,
        reason: DeadReason,
    },

    /// No reply within the caller's deadline.
    #[error("no reply from context {context} within {after:?}")]
    Timeout {
        context: ContextId,
        after: std::time::Duration,
    },

    /// The reply could not be decoded as the type the caller asked for,
    /// or the arguments could not be encoded.
    #[error("payload: {0}")]
    Payload(WireError),

    /// This context's router has stopped.
    #[error("the local router has stopped")]
    RouterGone,
}

impl Error {
    pub fn dead(context: ContextId, d: Dead) -> Self {
        Error::Dead {
            context,
            reason: DeadReason::from(d),
        }
    }

    pub fn is_dead(&self) -> bool {
        matches!(self, Error::Dead { .. })
    }
}

impl From<WireError> for Error {
    fn from(e: WireError) -> Self {
        Error::Payload(e)
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
