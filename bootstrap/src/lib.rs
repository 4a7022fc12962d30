//! econtext-bootstrap: creating contexts.
//!
//! The principal types:
//!
//! - [`Method`]: a connection method as data (local, ssh, sudo, su,
//!   docker, podman, kubectl). [`Method::spawn_spec`] turns it into a
//!   [`SpawnSpec`]: argv, environment, session and pty needs, prompt rules
//!   and password. Method logic lives once, here, in Rust; intermediates
//!   receive the spec in SPAWN. [`Method::validate`] ([`validate`])
//!   refuses any field that could pass for an option in that argv.
//! - [`connect::connect`]: starts a SpawnSpec (on a pty when it needs one,
//!   [`pty`]), answers password prompts ([`prompt`]) and drives the seed's
//!   `EC0`/payload/`EC1` exchange ([`handshake::Handshake`], a plain state
//!   machine) within one deadline, turning every failure into a typed
//!   [`ConnectError`].
//! - [`ChildConfig`] and [`payload`]: the minimized Python core plus its
//!   `main(config)` line, compressed and size-prefixed as the first stage
//!   ([`first_stage`]) expects; [`compiled`]: the core compiled on the
//!   master for a target's interpreter, when a connect asks for it.
//!
//! Also here: [`modules::ModuleFinder`] (what the master's Importer serves),
//! [`minimize::minimize_source`], and [`spawner::Spawner`] (SPAWN in a Rust
//! context). The Python core itself is `bootstrap/python/econtext_core.py`
//! (stdlib only, unchanged on CPython 2.7 and 3.6 to 3.13), and the code
//! only a parent needs is `bootstrap/python/econtext_parent.py`.

pub mod compiled;
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
pub mod secrets;
pub mod spawner;
pub mod validate;

pub use error::ConnectError;
pub use method::{
    ContainerOptions, HostKeyCheck, KubectlOptions, LocalOptions, Method, SpawnSpec, SshOptions,
    SuOptions, SudoOptions,
};
pub use payload::ChildConfig;
pub use prompt::Secret;
pub use validate::InvalidOption;
