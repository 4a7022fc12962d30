//! econtext-bootstrap: creating contexts.
//!
//! The principal types:
//!
//! - [`Method`]: a connection method as data (argv, and later prompt rules
//!   and timeouts). Method logic lives once, here, in Rust.
//! - [`Handshake`](handshake::Handshake): the seed's `EC0`/payload/`EC1`
//!   exchange as a plain state machine; [`connect::connect_local`] drives
//!   it over a child process within one deadline.
//! - [`ChildConfig`](payload::ChildConfig) and [`payload`]: the minimized
//!   Python core plus its `main(config)` line, compressed and size-prefixed
//!   as the first stage ([`first_stage`]) expects.
//!
//! The Python core itself is `bootstrap/python/econtext_core.py`, stdlib
//! only, and runs unchanged on CPython 2.7 and 3.6 to 3.13.

pub mod connect;
pub mod error;
pub mod first_stage;
pub mod handshake;
pub mod method;
pub mod minimize;
pub mod modules;
pub mod payload;
pub mod process;
pub mod prompt;
pub mod pty;
pub mod spawner;

pub use error::ConnectError;
pub use method::{
    ContainerOptions, HostKeyCheck, KubectlOptions, LocalOptions, Method, SpawnSpec, SshOptions,
    SuOptions, SudoOptions,
};
pub use payload::ChildConfig;
pub use prompt::Secret;
