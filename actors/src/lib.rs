//! econtext-actors: the actor runtime every Rust context runs.
//!
//! A context is a small actix system. Its principal types:
//!
//! - [`Router`]: one per context. It owns the handle registry and the
//!   routing table ([`routing::RoutingTable`], a plain struct with the
//!   seed's rules), delivers frames to local handles, forwards the rest,
//!   and turns every death into Dead for whoever was waiting.
//! - [`Stream`]: one per connection to a parent or child. It owns the
//!   transport, frames and MACs traffic through `econtext-wire`, and keeps
//!   its write queue bounded ([`link::StreamLink`]) so a peer that stops
//!   reading makes senders wait instead of growing memory; its writer
//!   takes small frames before bulk ones ([`lanes::Lanes`]).
//! - [`Context`], [`Channel`] and [`Sender`]: what users hold. A `Context`
//!   makes calls; a `Channel` is a handle whose messages arrive as a
//!   `futures` Stream; a `Sender` is a (context, handle) pair that can be
//!   passed to remote code.
//! - [`serve`]: the one way an actor serves a handle, for users' actors
//!   and the built-in services alike ([`importer::Importer`],
//!   [`logforwarder::LogForwarder`], [`dispatch::Dispatcher`],
//!   [`module_forwarder::ModuleForwarder`], the Spawner): typed
//!   requests, bounded in flight, every failure an answer.
//! - [`supervision::Supervision`]: the supervisor tree, one
//!   `ContextSupervisor` per context under its creator's, with typed
//!   [`ContextEvent`]s, monitors, `kill` and restart policies
//!   ([`supervision::RestartCore`], a plain struct).
//!
//! - [`spin::SpinPolicy`] and [`spin::LinkSpin`]: spinning before a
//!   child process's reader sleeps, only while this context awaits its
//!   own replies on that link, and [`spin::ThreadSpin`]: only while few
//!   links on the thread await replies, one `sched_yield` a turn (plain
//!   rules; [`spin::SpinRead`] acts on them).
//!
//! A Stream reads frames and hands each to its Router, waiting until the
//! Router has queued it on the next hop; the Router's handlers are thin and
//! all decisions live in [`routing`] and [`handles`].

pub mod announce;
pub mod attach;
mod bufpool;
pub mod channel;
pub mod context;
pub mod core;
pub mod dispatch;
pub mod error;
pub mod event;
pub mod handles;
pub mod ids;
pub mod importer;
pub mod iologger;
pub mod keys;
pub mod lanes;
pub mod link;
pub mod logbudget;
pub mod logforwarder;
pub mod message;
pub mod module_forwarder;
pub mod refusals;
pub mod router;
pub mod routing;
pub mod rust_context;
pub mod serve;
pub mod socket;
mod spare;
pub mod spin;
pub mod stream;
pub mod supervision;
pub mod supervisor;
pub mod testing;

pub use channel::{Channel, Sender};
pub use context::{CallBuilder, Context, PendingCall};
pub use error::{Error, Result};
pub use event::{ContextEvent, DeadReason};
pub use message::Message;
pub use router::{Router, RouterConfig};
pub use stream::{Stream, StreamConfig};
