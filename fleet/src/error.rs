//! What can go wrong for one target of a fan-out.

use std::time::Duration;

use econtext_actors::{DeadReason, Error as CallFailure};
use econtext_bootstrap::ConnectError;
use econtext_wire::CallError;

/// Why one target did not produce a result. A failing target never stops
/// the others: each gets its own `FleetError`.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum FleetError {
    /// No context could be created (after any retries): the typed reason.
    #[error("unreachable: {0}")]
    Unreachable(ConnectError),
    /// The remote code raised.
    #[error("remote {}: {}", .0.type_name, .0.message)]
    Failed(CallError),
    /// The context (or a context on its route) died during the call.
    #[error("died: {0}")]
    Died(DeadReason),
    /// The call did not finish within the per-target call deadline.
    #[error("timed out after {0:?}")]
    Timeout(Duration),
    /// The fan-out was told to stop before this target started.
    #[error("not started: interrupted")]
    NotStarted,
}

impl FleetError {
    /// The error for a failed call on a live context.
    pub fn from_call(e: CallFailure) -> FleetError {
        match e {
            CallFailure::Remote(c) => FleetError::Failed(c),
            CallFailure::Timeout { after, .. } => FleetError::Timeout(after),
            CallFailure::Dead { reason, .. } => FleetError::Died(reason),
            other => FleetError::Died(DeadReason::Other(other.to_string())),
        }
    }
}

impl From<CallFailure> for FleetError {
    fn from(e: CallFailure) -> Self {
        FleetError::from_call(e)
    }
}
