//! econtext: start and drive processes on other machines with nothing
//! installed on the target, call functions in them, and route messages
//! through a tree of such contexts.
//!
//! This crate is the facade. Its principal type is [`Master`], context 0,
//! which creates contexts ([`Master::local`], [`Master::connect`]) and hands
//! back [`Context`] handles to call into them. The work is done by three
//! crates, re-exported here:
//!
//! - [`wire`] (econtext-wire): the frame format, chained HMAC, payload types;
//! - [`actors`] (econtext-actors): Router, Stream, Channel, supervisor tree;
//! - [`bootstrap`] (econtext-bootstrap): connection methods, first stage,
//!   handshake, and the Python core;
//! - [`fleet`] (econtext-fleet): fan-out over many targets (a `Stream` of
//!   per-target results), Ansible inventories and host patterns. `Master`
//!   is its [`fleet::Connector`].
//! - [`files`] (econtext-files): push and pull files and trees
//!   ([`FilesExt`] on every [`Context`]).
//! - [`agent`] (econtext-agent): this program as a context elsewhere
//!   ([`agent::run_if_child`], [`agent::Services`], `ConnectOptions::agent`),
//!   shipped from memory to targets with or without Python.
//!
//! [`supervise`] adds child specs with restart policies ([`Master::supervise`])
//! and the supervisor tree's events, monitors and `kill` to the master.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let master = econtext::Master::new(Default::default());
//! let ctx = master.local(Default::default()).await?;
//! let pid: u32 = ctx.call("os", "getpid", ()).await?;
//! # Ok(()) }
//! ```

pub use econtext_actors as actors;
pub use econtext_agent as agent;
pub use econtext_bootstrap as bootstrap;
pub use econtext_files as files;
pub use econtext_fleet as fleet;
pub use econtext_wire as wire;

pub use econtext_actors::dispatch::Functions;
pub use econtext_actors::testing;
pub use econtext_actors::{
    CallBuilder, Channel, Context, ContextEvent, DeadReason, Error, PendingCall, Sender,
};
pub use econtext_bootstrap::{ConnectError, LocalOptions, Method};
pub use econtext_files::{FileError, FileErrorKind, FilesExt, TransferOptions, TransferReport};
pub use econtext_wire::{CallError, Value};

pub mod embed;
mod fleet_connector;
pub mod json;
mod master;
pub mod supervise;
pub mod target;

pub use embed::{MasterGone, MasterHandle};
pub use fleet_connector::ManyHosts;
pub use master::{ConnectOptions, Master, MasterOptions};
