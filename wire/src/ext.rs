//! The protocol's special values, as MessagePack ext types.
//!
//! | code | Rust | Python core | ext data (itself MessagePack) |
//! |---|---|---|---|
//! | 1 | [`Dead`] | `Dead` (the seed's `_DEAD`) | `reason` (str) |
//! | 2 | [`CallError`] | `CallError` | `[type, message, traceback]` (str, str, str) |
//! | 3 | [`ContextRef`] | `Context` | `[id, name]` (uint, str) |
//! | 4 | [`SenderRef`] | `Sender` | `[context_id, handle]` (uint, uint) |
//!
//! Any other code is refused with [`WireError::UnknownExt`](crate::WireError).

use serde::de::{DeserializeOwned, Error as _};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_bytes::ByteBuf;

use crate::{ContextId, Handle};

pub const EXT_DEAD: i8 = 1;
pub const EXT_CALL_ERROR: i8 = 2;
pub const EXT_CONTEXT: i8 = 3;
pub const EXT_SENDER: i8 = 4;

/// Whether `code` is one of the protocol's ext types.
pub fn is_known(code: i8) -> bool {
    (EXT_DEAD..=EXT_SENDER).contains(&code)
}

/// rmp-serde's convention for ext values: a newtype struct with this name
/// holding `(type code, data)`.
#[derive(Serialize, Deserialize)]
#[serde(rename = "_ExtStruct")]
struct RawExt((i8, ByteBuf));

fn ser_ext<S: Serializer, T: Serialize>(s: S, code: i8, inner: &T) -> Result<S::Ok, S::Error> {
    let data = rmp_serde::to_vec(inner).map_err(serde::ser::Error::custom)?;
    RawExt((code, ByteBuf::from(data))).serialize(s)
}

fn de_ext<'de, D: Deserializer<'de>, T: DeserializeOwned>(d: D, code: i8) -> Result<T, D::Error> {
    let RawExt((got, data)) = RawExt::deserialize(d)?;
    if got != code {
        return Err(D::Error::custom(format!(
            "expected ext type {code}, found {got}"
        )));
    }
    // The ext data must be exactly one value, like a frame's data: refuse
    // trailing bytes (rmp_serde::from_slice alone ignores them).
    crate::payload::check_structure(&data).map_err(D::Error::custom)?;
    rmp_serde::from_slice(&data).map_err(D::Error::custom)
}

macro_rules! ext_type {
    ($ty:ident, $code:expr, $inner:ty, |$v:ident| $to:expr, |$i:ident| $from:expr) => {
        impl Serialize for $ty {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                let $v = self;
                ser_ext(s, $code, &$to)
            }
        }
        impl<'de> Deserialize<'de> for $ty {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let $i: $inner = de_ext(d, $code)?;
                Ok($from)
            }
        }
    };
}

/// The seed's `_DEAD`: the far end is gone or closed this handle. Every
/// waiter on a context that dies receives one, so no call hangs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dead {
    pub reason: String,
}

impl Dead {
    pub fn new(reason: impl Into<String>) -> Self {
        Dead {
            reason: reason.into(),
        }
    }
}

impl std::fmt::Display for Dead {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "dead: {}", self.reason)
    }
}

ext_type!(Dead, EXT_DEAD, String, |v| v.reason, |r| Dead { reason: r });

/// An exception raised by remote code, with the remote traceback.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallError {
    /// The exception's qualified type name, e.g. `builtins.ZeroDivisionError`.
    pub type_name: String,
    pub message: String,
    pub traceback: String,
}

impl std::fmt::Display for CallError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.type_name, self.message)
    }
}

ext_type!(
    CallError,
    EXT_CALL_ERROR,
    (String, String, String),
    |v| (&v.type_name, &v.message, &v.traceback),
    |t| CallError {
        type_name: t.0,
        message: t.1,
        traceback: t.2
    }
);

/// A reference to a context, as passed to and from remote code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContextRef {
    pub id: ContextId,
    pub name: String,
}

ext_type!(
    ContextRef,
    EXT_CONTEXT,
    (ContextId, String),
    |v| (v.id, &v.name),
    |t| ContextRef { id: t.0, name: t.1 }
);

/// A (context, handle) pair that anyone in the tree can send to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SenderRef {
    pub context: ContextId,
    pub handle: Handle,
}

ext_type!(
    SenderRef,
    EXT_SENDER,
    (ContextId, Handle),
    |v| (v.context, v.handle),
    |t| SenderRef {
        context: t.0,
        handle: t.1
    }
);

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip<T: Serialize + DeserializeOwned + PartialEq + std::fmt::Debug>(v: T) {
        let bytes = rmp_serde::to_vec(&v).unwrap();
        assert_eq!(rmp_serde::from_slice::<T>(&bytes).unwrap(), v);
    }

    #[test]
    fn ext_values_round_trip() {
        round_trip(Dead::new("no route"));
        round_trip(CallError {
            type_name: "builtins.ValueError".into(),
            message: "bad".into(),
            traceback: "Traceback...".into(),
        });
        round_trip(ContextRef {
            id: 7,
            name: "local.7".into(),
        });
        round_trip(SenderRef {
            context: 3,
            handle: 1001,
        });
    }

    #[test]
    fn dead_encodes_as_ext_1() {
        let bytes = rmp_serde::to_vec(&Dead::new("x")).unwrap();
        // fixext2: marker, type, then the msgpack str "x" (0xa1 'x').
        assert_eq!(bytes, [0xd5, 1, 0xa1, b'x']);
    }

    #[test]
    fn trailing_bytes_inside_ext_data_are_refused() {
        // fixext4 Dead whose data is the str "x" and then two stray nils.
        let bytes = [0xd6, 1, 0xa1, b'x', 0xc0, 0xc0];
        assert!(rmp_serde::from_slice::<Dead>(&bytes).is_err());
        assert!(crate::payload::decode::<Dead>(&bytes).is_err());
    }

    #[test]
    fn wrong_ext_code_is_refused() {
        let bytes = rmp_serde::to_vec(&Dead::new("x")).unwrap();
        assert!(rmp_serde::from_slice::<CallError>(&bytes).is_err());
    }
}
