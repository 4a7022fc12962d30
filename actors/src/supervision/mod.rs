//! Supervision: restart policies and the supervisor tree.
//!
//! - [`spec`]: what a child spec says about restarting ([`Restart`],
//!   [`RestartLimit`], [`Backoff`], [`Strategy`]) and why a supervisor
//!   gives up ([`GiveUp`]).
//! - [`restart::RestartCore`]: one supervisor's restart decisions as a
//!   plain struct (time and randomness passed in).

pub mod restart;
pub mod spec;

pub use restart::{Action, RestartCore, SlotId};
pub use spec::{Backoff, Exit, GiveUp, Restart, RestartLimit, RestartPolicy, Strategy};
