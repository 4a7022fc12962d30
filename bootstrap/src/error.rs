use std::time::Duration;

use thiserror::Error;

/// Why a context could not be created. Each variant is a different thing
/// for the user to fix, and carries what the child printed last.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum ConnectError {
    /// The program could not be started at all (not found, not executable).
    #[error("cannot start {program}: {reason}")]
    Spawn { program: String, reason: String },

    /// A stage did not finish within the connect timeout.
    #[error("timed out after {after:?} waiting for {stage}{}", tail_suffix(.stderr))]
    Timeout {
        stage: &'static str,
        after: Duration,
        stderr: Vec<String>,
    },

    /// The child exited (or closed its stdout) before the handshake ended.
    #[error("child exited early during {stage} ({status}){}", tail_suffix(.stderr))]
    ExitedEarly {
        stage: &'static str,
        status: String,
        stderr: Vec<String>,
    },

    /// A password prompt came back after the password was sent.
    #[error("password refused by {method}")]
    PasswordRefused { method: String },

    /// A password was asked for and none was configured.
    #[error("{method} asked for a password and none was given")]
    PasswordRequired { method: String },

    /// Authentication failed without a password prompt to blame: ssh key
    /// auth refused, sudo not allowed for this user.
    #[error("{method} authentication failed: {detail}")]
    AuthFailed { method: String, detail: String },

    /// ssh refused the remote host's key.
    #[error("host key refused: {detail}")]
    HostKeyRefused { detail: String },

    /// The intermediate context could not spawn the child (via).
    #[error("via context {via}: {reason}")]
    Via { via: u16, reason: String },

    /// The child wrote something unexpected during the handshake.
    #[error("handshake failed: {0}")]
    Protocol(String),

    /// An I/O error on the master's side of the connection.
    #[error("I/O error: {0}")]
    Io(String),

    /// An option field would be unsafe in the method's argv (a leading
    /// `-`, a control character): nothing was started.
    #[error(transparent)]
    InvalidOption(#[from] crate::validate::InvalidOption),

    /// Every context ID is live or in quarantine (the message says how
    /// many of each).
    #[error("{0}")]
    IdsExhausted(String),

    /// The Rust agent was built for another platform than the target's
    /// (`uname -m`, or the ELF interpreter, i.e. the libc, is missing).
    /// Detected before anything was shipped.
    #[error("agent built for {expected}, target has {found}")]
    PlatformMismatch { expected: String, found: String },

    /// The target lacks programs the agent's `sh` first stage needs.
    #[error("target lacks {tools:?}, needed to start the Rust agent without Python")]
    ToolsMissing { tools: Vec<String> },
}

impl ConnectError {
    /// The variant's name: an intermediate reports a failed SPAWN as a
    /// CallError of type `econtext.ConnectError.<kind>`, which the master
    /// turns back into the typed variant ([`ConnectError::from_remote`]).
    pub fn kind(&self) -> &'static str {
        match self {
            ConnectError::Spawn { .. } => "Spawn",
            ConnectError::Timeout { .. } => "Timeout",
            ConnectError::ExitedEarly { .. } => "ExitedEarly",
            ConnectError::PasswordRefused { .. } => "PasswordRefused",
            ConnectError::PasswordRequired { .. } => "PasswordRequired",
            ConnectError::AuthFailed { .. } => "AuthFailed",
            ConnectError::HostKeyRefused { .. } => "HostKeyRefused",
            ConnectError::Via { .. } => "Via",
            ConnectError::Protocol(_) => "Protocol",
            ConnectError::Io(_) => "Io",
            ConnectError::InvalidOption(_) => "InvalidOption",
            ConnectError::IdsExhausted(_) => "IdsExhausted",
            ConnectError::PlatformMismatch { .. } => "PlatformMismatch",
            ConnectError::ToolsMissing { .. } => "ToolsMissing",
        }
    }

    /// The typed error for a SPAWN that intermediate `via` reported as a
    /// CallError (see [`ConnectError::kind`]). Kinds whose details did not
    /// survive the trip stay [`ConnectError::Via`], with the message.
    pub fn from_remote(
        via: u16,
        method: &str,
        timeout: Duration,
        type_name: &str,
        message: String,
    ) -> Self {
        match type_name
            .strip_prefix("econtext.ConnectError.")
            .unwrap_or("")
        {
            "PasswordRefused" => ConnectError::PasswordRefused {
                method: method.into(),
            },
            "PasswordRequired" => ConnectError::PasswordRequired {
                method: method.into(),
            },
            "HostKeyRefused" => ConnectError::HostKeyRefused { detail: message },
            "AuthFailed" => ConnectError::AuthFailed {
                method: method.into(),
                detail: message,
            },
            "Timeout" => ConnectError::Timeout {
                stage: "the connection made by an intermediate",
                after: timeout,
                stderr: vec![message],
            },
            _ => ConnectError::Via {
                via,
                reason: message,
            },
        }
    }
}

fn tail_suffix(lines: &[String]) -> String {
    if lines.is_empty() {
        String::new()
    } else {
        format!("; last output: {}", lines.join(" | "))
    }
}

impl From<std::io::Error> for ConnectError {
    fn from(e: std::io::Error) -> Self {
        ConnectError::Io(e.to_string())
    }
}
