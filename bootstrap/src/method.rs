//! Connection methods as data: how to start a context's interpreter.

use crate::first_stage::python_argv;

/// Options of the `local` method: a child process on this machine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalOptions {
    /// The interpreter to run (a path, or a name looked up on PATH).
    pub python: String,
}

impl Default for LocalOptions {
    fn default() -> Self {
        LocalOptions {
            python: "python3".into(),
        }
    }
}

/// A connection method: turns into the argv that starts the first stage.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Method {
    Local(LocalOptions),
}

impl Method {
    /// Short name for logs, errors and default context names.
    pub fn kind(&self) -> &'static str {
        match self {
            Method::Local(_) => "local",
        }
    }

    /// The argv that starts context `name` with this method.
    pub fn argv(&self, name: &str) -> Vec<String> {
        match self {
            Method::Local(o) => python_argv(&o.python, name),
        }
    }
}
