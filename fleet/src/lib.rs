//! econtext-fleet: one operation on many targets at once.
//!
//! - [`Fleet`]: the fan-out. Given [`Target`]s (each a chain of [`Hop`]s)
//!   and [`FleetOptions`] (concurrency limit, per-target connect and call
//!   deadlines, jittered connect retries, off by default), it runs a
//!   closure per context and yields `(Target, Result<T, FleetError>)` as a
//!   `futures::Stream` in completion order. Hops shared by several targets
//!   (a bastion) are connected once and reused. Connects are paced by the
//!   CPUs' load (`pacer.rs`, `gate.rs`, `cpu_load.rs`).
//! - [`Connector`]: how contexts are created; `econtext::Master` is one.
//! - [`FleetError`]: unreachable (with the typed `ConnectError`), failed
//!   remotely, died mid-call, timed out, not started.
//! - [`inventory`]: Ansible INI and YAML inventories, host ranges, host
//!   patterns, and the variables that make a host's [`Target`].

mod cpu_load;
mod error;
mod fanout;
mod gate;
pub mod inventory;
mod pacer;
mod retry;
mod target;

pub use error::FleetError;
pub use fanout::{Connector, Fleet, FleetOptions, Outcome};
pub use inventory::{HostOptions, Inventory, InventoryError, PasswordSource};
pub use retry::Backoff;
pub use target::{Hop, Target};
