//! Supervision: the supervisor tree, context events and restart policies.
//!
//! - [`Supervision`] (the [`hub`]): one per master. It starts a
//!   [`tree::ContextSupervisor`] for every context, under the supervisor of
//!   the context it was created through, so the supervisor tree mirrors the
//!   context tree. It fans [`crate::ContextEvent`]s out as [`EventStream`]s
//!   or to users' actors ([`Scope`]: the tree, a subtree, one context),
//!   each through its own bounded queue (`queue::EventQueue`, plain code:
//!   past its capacity events are counted and the subscriber gets one
//!   [`crate::ContextEvent::Lagged`]).
//! - [`Supervised`]: a stable handle on a restartable child.
//! - [`Stopper`]: how a context is ended (a process of ours, one an
//!   intermediate started, an in-process link).
//! - [`spec`]: a child's [`RestartPolicy`] ([`Restart`], [`RestartLimit`],
//!   [`Backoff`]), a supervisor's [`Strategy`], and [`GiveUp`].
//! - [`restart::RestartCore`]: one supervisor's restart decisions as a
//!   plain struct (time and randomness passed in).

pub mod events;
pub mod handle;
pub mod hub;
pub(crate) mod queue;
pub mod restart;
pub mod spec;
pub mod stopper;
pub mod tree;

pub use events::{EventStream, Scope, SubscribeOptions, SubscriptionId, EVENT_QUEUE};
pub use handle::{ChildFactory, Supervised, SupervisedState};
pub use hub::{Supervision, SupervisionOptions, SupervisionStats};
pub use restart::{Action, RestartCore, SlotId};
pub use spec::{Backoff, Exit, GiveUp, Restart, RestartLimit, RestartPolicy, Strategy};
pub use stopper::Stopper;
pub use tree::{ProcessExited, SupervisorNode};

#[cfg(test)]
mod sim_tests;
