//! Typed context lifecycle: why a context died ([`DeadReason`]) and what
//! the router tells its subscribers ([`ContextEvent`]).
//!
//! The wire's Dead ext carries text (the Python core writes it too), so
//! [`DeadReason::to_wire`] and [`DeadReason::from_wire`] are the one place
//! where reasons become text and back; text this side does not know is
//! kept as [`DeadReason::Other`].

use std::fmt;

use econtext_wire::ContextId;

/// Why a context (or the route to it) is gone.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum DeadReason {
    /// It was asked to shut down (SHUTDOWN, `Master::shutdown`) and did.
    ShutDown,
    /// Its stream ended: EOF on the connection, no error.
    Disconnected,
    /// Its stream was closed on purpose from this side.
    Closed,
    /// This context's parent went away, taking everything with it.
    ParentLost,
    /// Its process exited with this status.
    Exited { status: i32 },
    /// Its process was ended by this signal.
    Signalled { signal: i32 },
    /// It was killed from this side (the grace period ran out, or a kill
    /// was asked for).
    Killed,
    /// Its stream broke the protocol (bad MAC, bad frame, oversized, ...).
    Protocol(String),
    /// No route leads to it (never existed here, or its route is gone).
    Unreachable,
    /// Its peer stopped reading and its link made no progress for too long.
    Stalled,
    /// The frame was refused by an authority rule (not an ancestor, ...).
    Refused(String),
    /// There is no such handle in that context.
    NoHandle,
    /// The receiver's bounded queue was full (it is not keeping up).
    Overloaded,
    /// Its connect failed (SPAWN refused or timed out); it never ran.
    ConnectFailed,
    /// The local router stopped.
    RouterStopped,
    /// A Channel's sender closed it.
    ClosedBySender,
    /// Text from another context (or an older peer) that this side does
    /// not recognise, kept verbatim.
    Other(String),
}

const CLOSED_BY_SENDER: &str = "closed by sender";
const NO_ROUTE: &str = "no route to context";

impl DeadReason {
    /// The text carried by the wire's Dead ext.
    pub fn to_wire(&self) -> String {
        self.to_string()
    }

    /// Reads the text of a Dead ext back; the inverse of [`Self::to_wire`]
    /// for every reason this side writes, and tolerant of the Python
    /// core's wording ("parent disconnected", "context N is dead: R").
    pub fn from_wire(text: &str) -> DeadReason {
        if let Some(rest) = text.strip_prefix("context ") {
            // "context N is dead: REASON" (a bounce): the inner reason.
            if let Some((_, inner)) = rest.split_once(" is dead: ") {
                return DeadReason::from_wire(inner);
            }
        }
        match text {
            "shut down" | "shutdown" => return DeadReason::ShutDown,
            "disconnected" | "child disconnected" => return DeadReason::Disconnected,
            "closed" => return DeadReason::Closed,
            "parent lost" | "parent disconnected" | "parent unreachable" => {
                return DeadReason::ParentLost
            }
            "killed" => return DeadReason::Killed,
            "unreachable" => return DeadReason::Unreachable,
            "stalled" => return DeadReason::Stalled,
            "no such handle" => return DeadReason::NoHandle,
            "overloaded" => return DeadReason::Overloaded,
            "router stopped" => return DeadReason::RouterStopped,
            "connect failed" => return DeadReason::ConnectFailed,
            CLOSED_BY_SENDER => return DeadReason::ClosedBySender,
            _ => {}
        }
        if text.starts_with(NO_ROUTE) || text.starts_with("no route to") {
            return DeadReason::Unreachable;
        }
        if text.starts_with("no handle ") {
            return DeadReason::NoHandle;
        }
        let num = |p: &str| {
            text.strip_prefix(p)
                .and_then(|n| n.trim().parse::<i32>().ok())
        };
        if let Some(status) = num("exit status ") {
            return DeadReason::Exited { status };
        }
        if let Some(signal) = num("killed by signal ") {
            return DeadReason::Signalled { signal };
        }
        if let Some(why) = text.strip_prefix("protocol error: ") {
            return DeadReason::Protocol(why.to_string());
        }
        if let Some(why) = text.strip_prefix("refused: ") {
            return DeadReason::Refused(why.to_string());
        }
        DeadReason::Other(text.to_string())
    }

    /// True for the deaths that end with a process's exit status.
    pub fn is_exit(&self) -> bool {
        matches!(
            self,
            DeadReason::Exited { .. } | DeadReason::Signalled { .. }
        )
    }

    /// True when the context ended because it was asked to (shutdown,
    /// close, a clean exit): what a supervisor does not restart on
    /// `OnFailure`.
    pub fn is_orderly(&self) -> bool {
        matches!(
            self,
            DeadReason::ShutDown
                | DeadReason::Closed
                | DeadReason::ClosedBySender
                | DeadReason::Exited { status: 0 }
        )
    }
}

impl fmt::Display for DeadReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DeadReason::ShutDown => f.write_str("shut down"),
            DeadReason::Disconnected => f.write_str("disconnected"),
            DeadReason::Closed => f.write_str("closed"),
            DeadReason::ParentLost => f.write_str("parent lost"),
            DeadReason::Exited { status } => write!(f, "exit status {status}"),
            DeadReason::Signalled { signal } => write!(f, "killed by signal {signal}"),
            DeadReason::Killed => f.write_str("killed"),
            DeadReason::Protocol(why) => write!(f, "protocol error: {why}"),
            DeadReason::Unreachable => f.write_str("unreachable"),
            DeadReason::Stalled => f.write_str("stalled"),
            DeadReason::Refused(why) => write!(f, "refused: {why}"),
            DeadReason::NoHandle => f.write_str("no such handle"),
            DeadReason::Overloaded => f.write_str("overloaded"),
            DeadReason::RouterStopped => f.write_str("router stopped"),
            DeadReason::ConnectFailed => f.write_str("connect failed"),
            DeadReason::ClosedBySender => f.write_str(CLOSED_BY_SENDER),
            DeadReason::Other(text) => f.write_str(text),
        }
    }
}

impl From<econtext_wire::Dead> for DeadReason {
    fn from(d: econtext_wire::Dead) -> Self {
        DeadReason::from_wire(&d.reason)
    }
}

impl From<&DeadReason> for econtext_wire::Dead {
    fn from(r: &DeadReason) -> Self {
        econtext_wire::Dead::new(r.to_wire())
    }
}

/// What a router tells its subscribers about the contexts it knows.
#[derive(Debug, Clone, PartialEq, Eq, actix::Message)]
#[rtype(result = "()")]
#[non_exhaustive]
pub enum ContextEvent {
    /// A context became reachable: a child stream attached here, or a
    /// context created further down was announced. `parent` is the
    /// context it was created through.
    Started {
        id: ContextId,
        name: String,
        parent: ContextId,
    },
    /// A context died; deaths of a subtree arrive children first.
    Died { id: ContextId, reason: DeadReason },
    /// A supervisor started a crashed child again: it runs as `id` now
    /// (it was `old`); `restarts` counts its restarts so far.
    /// (Emitted by the supervision layer, not by routers.)
    Restarted {
        id: ContextId,
        old: ContextId,
        name: String,
        restarts: u32,
    },
    /// A supervisor stopped restarting the child last seen as `id`.
    /// (Emitted by the supervision layer, not by routers.)
    GaveUp {
        id: ContextId,
        reason: crate::supervision::GiveUp,
    },
    /// This subscriber fell its queue's capacity behind, and `missed`
    /// events at this place in the sequence were not queued for it
    /// (counted, never dropped silently). It is about the subscription,
    /// not a context: [`ContextEvent::id`] is 0. (Made by the
    /// supervision layer's per-subscriber queue, not by routers.)
    Lagged { missed: u64 },
}

impl ContextEvent {
    /// The context this event is about (0, the master's ID, for
    /// [`ContextEvent::Lagged`]).
    pub fn id(&self) -> ContextId {
        match self {
            ContextEvent::Started { id, .. }
            | ContextEvent::Died { id, .. }
            | ContextEvent::Restarted { id, .. }
            | ContextEvent::GaveUp { id, .. } => *id,
            ContextEvent::Lagged { .. } => econtext_wire::handles::MASTER_ID,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_reason_survives_the_wire_text() {
        let all = [
            DeadReason::ShutDown,
            DeadReason::Disconnected,
            DeadReason::Closed,
            DeadReason::ParentLost,
            DeadReason::Exited { status: 3 },
            DeadReason::Signalled { signal: 9 },
            DeadReason::Killed,
            DeadReason::Protocol("bad MAC".into()),
            DeadReason::Unreachable,
            DeadReason::Stalled,
            DeadReason::Refused("context 4 may not send to handle 101".into()),
            DeadReason::NoHandle,
            DeadReason::Overloaded,
            DeadReason::RouterStopped,
            DeadReason::ConnectFailed,
            DeadReason::ClosedBySender,
            DeadReason::Other("something new".into()),
        ];
        for r in all {
            assert_eq!(DeadReason::from_wire(&r.to_wire()), r, "{r}");
        }
    }

    #[test]
    fn python_wording_and_bounces_are_understood() {
        assert_eq!(
            DeadReason::from_wire("parent disconnected"),
            DeadReason::ParentLost
        );
        assert_eq!(
            DeadReason::from_wire("context 7 is dead: exit status 1"),
            DeadReason::Exited { status: 1 }
        );
        assert_eq!(
            DeadReason::from_wire("no route to 777"),
            DeadReason::Unreachable
        );
    }
}
