//! econtext-agent: Rust contexts in other processes, on hosts with or
//! without Python.
//!
//! A program that links econtext calls [`run_if_child`] at the top of
//! `main`. Started by a master as a context, it never returns: it becomes a
//! child context running the same runtime as the master (Router, Stream,
//! Dispatcher, [`Spawner`](econtext_bootstrap::spawner::Spawner)) with the
//! [`Services`] the program registers. Otherwise it returns at once.
//!
//! The principal types:
//!
//! - [`Services`]: what a Rust context offers (functions by dotted name and
//!   served actors on fixed handles). The same value configures an
//!   in-process context and an agent in another process.
//! - [`AgentOptions`]: how the master ships and starts the agent (which
//!   binary, forced temp-dir fallback).
//! - [`first_stage`]: the POSIX `sh` first stage: platform check, tool
//!   check, then the binary run from a `memfd` through Python when the
//!   target has Python, else from a private temp dir deleted once started.
//! - [`ship::Shipped`]: the gzip-compressed binary, compressed once per
//!   process, and its size.
//! - [`config`]: the config line the master sends after `EC1` (sans-IO).
//! - [`platform`]: the build's architecture and ELF interpreter (libc).
//! - [`builtins`]: what every agent offers besides the program's own
//!   functions (`os.kill` of its own children, for supervision).
//! - [`child`] and [`stdio`]: the child side (fds, log forwarding, exit
//!   with the parent).

pub mod builtins;
pub mod child;
pub mod config;
pub mod first_stage;
pub mod master_side;
pub mod platform;
pub mod services;
pub mod ship;
pub mod stdio;

pub use child::run_if_child;
pub use first_stage::AgentOptions;
pub use services::Services;
