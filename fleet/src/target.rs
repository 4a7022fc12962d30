//! A target: a named chain of hops, outermost first.

use econtext_bootstrap::first_stage::DISCOVER_PYTHON;
use econtext_bootstrap::Method;

/// One hop of a chain: how to start that context from the one before.
#[derive(Debug, Clone)]
pub struct Hop {
    pub method: Method,
    /// The context's name (shown in `ps` and logs).
    pub name: Option<String>,
    /// Start this hop as the Rust agent (`?agent=rust`) instead of Python.
    pub rust_agent: bool,
}

impl Hop {
    pub fn new(method: Method) -> Hop {
        Hop {
            method,
            name: None,
            rust_agent: false,
        }
    }

    pub fn named(method: Method, name: impl Into<String>) -> Hop {
        Hop {
            method,
            name: Some(name.into()),
            rust_agent: false,
        }
    }
}

/// A host of the fleet: its name in reports and the chain reaching it.
/// Two targets whose chains start with the same hops share those
/// contexts (a bastion is created once).
#[derive(Debug, Clone)]
pub struct Target {
    pub name: String,
    pub hops: Vec<Hop>,
    /// The interpreter was not named: the first stage discovers one, and
    /// the caller may want to report which.
    pub discover_python: bool,
}

impl Target {
    /// `discover_python` is set when the last hop names no interpreter.
    pub fn new(name: impl Into<String>, hops: Vec<Hop>) -> Target {
        let discover_python = hops
            .last()
            .is_some_and(|h| python_of(&h.method) == Some(DISCOVER_PYTHON));
        Target {
            name: name.into(),
            hops,
            discover_python,
        }
    }

    /// Identity of the first `n` hops: equal keys share one context.
    pub(crate) fn prefix_key(&self, n: usize) -> String {
        // Debug of the methods names every option (a Secret prints
        // redacted, so two passwords for the same hop would share, which
        // is the same login anyway).
        let mut k = String::new();
        for h in &self.hops[..n] {
            k.push_str(&format!("{:?}|{:?};", h.method, h.name));
        }
        k
    }
}

/// The interpreter a method starts.
fn python_of(m: &Method) -> Option<&str> {
    Some(match m {
        Method::Local(o) => &o.python,
        Method::Ssh(o) => &o.python,
        Method::Sudo(o) => &o.python,
        Method::Su(o) => &o.python,
        Method::Docker(o) | Method::Podman(o) => &o.python,
        Method::Kubectl(o) => &o.python,
        #[allow(unreachable_patterns)]
        _ => return None,
    })
}
