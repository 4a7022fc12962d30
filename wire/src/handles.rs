//! Well-known handle numbers. The Python core mirrors these constants
//! (`bootstrap/python/econtext_core.py`); change both or neither.
//!
//! | handle | number | listens | data |
//! |---|---|---|---|
//! | [`GET_MODULE`] | 100 | master, intermediates | `fullname` |
//! | [`CALL_FUNCTION`] | 101 | every child | `[module, class or nil, function, args, kwargs]` |
//! | [`FORWARD_LOG`] | 102 | master | `[logger, level, message]` |
//! | [`ADD_ROUTE`] | 103 | every child | `[target_id, via_id]` |
//! | [`DEL_ROUTE`] | 104 | every context | `target_id` |
//! | [`SHUTDOWN`] | 105 | every child | nil |
//! | [`SPAWN`] | 106 | every child | a spawn request map |
//!
//! Replies travel to the `reply_to` handle the request named; those and
//! every other runtime-allocated handle start at [`FIRST_DYNAMIC`].

use crate::{ContextId, Handle};

/// Module source requests (the seed's `GET_MODULE`).
pub const GET_MODULE: Handle = 100;
/// Function calls into a child (the seed's `CALL_FUNCTION`).
pub const CALL_FUNCTION: Handle = 101;
/// Log records and stdio lines travelling up to the master.
pub const FORWARD_LOG: Handle = 102;
/// "Route frames for `target` through the stream to `via`."
pub const ADD_ROUTE: Handle = 103;
/// "`target` and everything reached through it is gone."
pub const DEL_ROUTE: Handle = 104;
/// Graceful shutdown of the receiving context and its subtree.
pub const SHUTDOWN: Handle = 105;
/// Create a grandchild on the master's behalf.
pub const SPAWN: Handle = 106;

/// The first handle number the runtime allocates dynamically.
pub const FIRST_DYNAMIC: Handle = 1000;

/// The master's context ID. It allocates every other ID.
pub const MASTER_ID: ContextId = 0;

/// Handles that only an ancestor may send to (DESIGN.md "Authority").
pub fn requires_ancestor(handle: Handle) -> bool {
    matches!(handle, CALL_FUNCTION | SPAWN | SHUTDOWN | ADD_ROUTE)
}
