//! The messages the runtime exchanges on the well-known handles.
//!
//! Structs encode as MessagePack arrays in field order (rmp-serde's compact
//! form), which is what the Python core packs and unpacks as tuples.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::payload::Value;
use crate::{ContextId, Handle};

/// CALL_FUNCTION data: `[module, class or nil, function, args, kwargs]`.
/// Generic over the argument types so callers encode straight from their
/// own values with no intermediate dynamic tree.
#[derive(Debug, Clone, Serialize)]
pub struct CallFunction<'a, A: Serialize, K: Serialize> {
    pub module: &'a str,
    pub class: Option<&'a str>,
    pub function: &'a str,
    /// Must encode as an array: a tuple of one or more, a Vec, or
    /// [`NoArgs`] for none. Not `()`: serde encodes the unit type as nil,
    /// which the receiver refuses (it cannot be `*args`).
    pub args: A,
    /// Must encode as a map with string keys.
    pub kwargs: K,
}

/// CALL_FUNCTION data as a receiver decodes it.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct CallFunctionRequest {
    pub module: String,
    pub class: Option<String>,
    pub function: String,
    pub args: Vec<Value>,
    pub kwargs: BTreeMap<String, Value>,
}

impl CallFunctionRequest {
    /// The dotted name the function is registered under:
    /// `module.function` or `module.Class.function`.
    pub fn qualified_name(&self) -> String {
        match &self.class {
            Some(c) => format!("{}.{}.{}", self.module, c, self.function),
            None => format!("{}.{}", self.module, self.function),
        }
    }
}

/// An empty kwargs map that encodes as `{}` rather than nil or `[]`.
pub type NoKwargs = BTreeMap<String, ()>;

/// Empty args that encode as `[]` (`()` would encode as nil). Use
/// `NoArgs::default()` or `[]`.
pub type NoArgs = [(); 0];

/// FORWARD_LOG data: one log record or stdio line from a context.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ForwardLog {
    /// The logger name in the child (`stdout` and `stderr` for stdio lines).
    pub logger: String,
    /// Python's numeric levels: 10 debug, 20 info, 30 warning, 40 error.
    pub level: u8,
    pub message: String,
}

/// ADD_ROUTE data: frames for `target` go down the stream to `via`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct AddRoute {
    pub target: ContextId,
    pub via: ContextId,
}

/// DEL_ROUTE data: `target` and its subtree are gone.
pub type DelRoute = ContextId;

/// GET_MODULE request data: the module's full dotted name. The reply goes
/// to the frame's `reply_to` handle.
pub type GetModule = String;

/// One module in a GET_MODULE reply: an array of 5 elements, 6 with
/// `requires_python`, 7 with `master_python` (docs/PROTOCOL.md, "Modules").
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct ModuleSource {
    pub fullname: String,
    /// The file name to give `compile()`, so tracebacks name it.
    pub filename: String,
    pub is_package: bool,
    /// zlib-compressed, minimized source.
    #[serde(with = "serde_bytes")]
    pub source: Vec<u8>,
    /// For packages: the names of the submodules the master knows, so the
    /// child never asks for one that does not exist.
    pub children: Vec<String>,
    /// The distribution's `Requires-Python` when the master found one,
    /// for the child's error when the source does not compile there.
    #[serde(default)]
    pub requires_python: String,
    /// The version of the Python the master's module path is for (`3.11`,
    /// `3.11.7`), for the same error: the child names both versions.
    #[serde(default)]
    pub master_python: String,
}

impl Serialize for ModuleSource {
    /// Trailing empty strings are left off (the record stays 5 elements
    /// when neither version is known), as Python's unpacking expects.
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeTuple;
        let len = if !self.master_python.is_empty() {
            7
        } else if !self.requires_python.is_empty() {
            6
        } else {
            5
        };
        let mut t = s.serialize_tuple(len)?;
        t.serialize_element(&self.fullname)?;
        t.serialize_element(&self.filename)?;
        t.serialize_element(&self.is_package)?;
        t.serialize_element(serde_bytes::Bytes::new(&self.source))?;
        t.serialize_element(&self.children)?;
        if len > 5 {
            t.serialize_element(&self.requires_python)?;
        }
        if len > 6 {
            t.serialize_element(&self.master_python)?;
        }
        t.end()
    }
}

/// GET_MODULE reply data: the requested module first, then related modules
/// the child is likely to import next; nil when the module is unknown.
pub type ModuleReply = Option<Vec<ModuleSource>>;

/// SPAWN data: create a child of the receiving context on the master's
/// behalf. Encoded as a map with these string keys (the Python core reads
/// it as a dict). The reply is `[pid]`, or a CallError whose type is
/// `econtext.ConnectError` and whose message says what failed.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
pub struct Spawn {
    /// The new context's ID, allocated by the master.
    pub id: ContextId,
    pub name: String,
    /// The program to run: the connection method's argv, ending with the
    /// `python -c` first stage.
    pub argv: Vec<String>,
    /// Extra environment variables for the program.
    pub env: BTreeMap<String, String>,
    /// The new context's `main(config)` argument: context_id, parent_id,
    /// name, key (hex), log_level, max_message_size, ancestors.
    pub config: BTreeMap<String, Value>,
    /// Seconds allowed for the whole connection, handshake included.
    pub timeout: f64,
    /// The connection method's name, for error messages.
    #[serde(default)]
    pub method: String,
    /// Start the program in its own session.
    #[serde(default)]
    pub new_session: bool,
    /// Give the program a pty as its controlling terminal, and answer
    /// password prompts that appear on it.
    #[serde(default)]
    pub tty: bool,
    /// A prompt the method chose itself (`sudo -p`, with a random token
    /// per connection): when given, it is the only prompt answered, and
    /// only when it appears on the pty.
    #[serde(default)]
    pub prompt: Option<String>,
    /// Without `prompt`: a prompt is a last line ending in `:` that
    /// contains one of these words (lowercase). The rules live once, in
    /// Rust (`bootstrap/src/prompt.rs`); intermediates apply this data.
    #[serde(default)]
    pub prompt_words: Vec<String>,
    /// How the child's last words classify a failed connection, in order
    /// (the first rule with a matching line wins).
    #[serde(default)]
    pub exit_rules: Vec<ExitRule>,
    /// The password to answer prompts with. It travels inside the tree's
    /// authenticated stream, as the key did.
    #[serde(default)]
    pub password: Option<String>,
    /// Start a Rust agent instead of the Python core: `argv` is then the
    /// agent's `sh` first stage, and the intermediate sends these bytes
    /// where it would send its own core.
    #[serde(default)]
    pub agent: Option<AgentStart>,
}

/// What an intermediate sends a Rust agent it starts for the master: the
/// framed, compressed binary after `EC0` (in place of the core payload),
/// and the agent's config after the agent's own `EC1`.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
pub struct AgentStart {
    #[serde(with = "serde_bytes")]
    pub payload: Vec<u8>,
    /// `"<len>\n"` and the MessagePack config map (it holds the key).
    #[serde(with = "serde_bytes")]
    pub config: Vec<u8>,
}

/// Sizes only: the config holds the tree's key.
impl std::fmt::Debug for AgentStart {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AgentStart")
            .field("payload_bytes", &self.payload.len())
            .field("config_bytes", &self.config.len())
            .finish()
    }
}

/// One rule of exit classification: when a line of what a child printed
/// before it failed contains one of `needles` (compared in lowercase), the
/// connection failed with the `ConnectError` kind `if_sent` (the password
/// was sent), `if_given` (one was configured but never asked for) or
/// `if_none` (none was configured); the matching lines are the detail.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExitRule {
    pub needles: Vec<String>,
    pub if_sent: String,
    pub if_given: String,
    pub if_none: String,
}

/// Never shows the password, nor the tree's key inside `config`.
impl std::fmt::Debug for Spawn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let config: BTreeMap<&str, &dyn std::fmt::Debug> = self
            .config
            .iter()
            .map(|(k, v)| {
                let v: &dyn std::fmt::Debug = if k == "key" { &"********" } else { v };
                (k.as_str(), v)
            })
            .collect();
        f.debug_struct("Spawn")
            .field("id", &self.id)
            .field("name", &self.name)
            .field("argv", &self.argv)
            .field("env", &self.env)
            .field("config", &config)
            .field("timeout", &self.timeout)
            .field("method", &self.method)
            .field("new_session", &self.new_session)
            .field("tty", &self.tty)
            .field("prompt", &self.prompt)
            .field("prompt_words", &self.prompt_words)
            .field("exit_rules", &self.exit_rules)
            .field("password", &self.password.as_ref().map(|_| "********"))
            .field("agent", &self.agent)
            .finish()
    }
}

/// The password is wiped from memory with the request.
impl Drop for Spawn {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.password);
        if let Some(a) = &mut self.agent {
            zeroize::Zeroize::zeroize(&mut a.config);
        }
    }
}

impl Spawn {
    /// SPAWN data is a map with string keys (the Python core reads a dict).
    pub fn encode(&self) -> Result<bytes::Bytes, crate::WireError> {
        rmp_serde::to_vec_named(self)
            .map(bytes::Bytes::from)
            .map_err(|e| crate::WireError::Malformed(e.to_string()))
    }

    /// [`Spawn::encode`] into `out`: a buffer that wipes what it leaves
    /// behind, since SPAWN may carry a password.
    pub fn encode_into<W: std::io::Write>(&self, out: &mut W) -> Result<(), crate::WireError> {
        rmp_serde::encode::write_named(out, self)
            .map_err(|e| crate::WireError::Malformed(e.to_string()))
    }
}

/// A handle a reply should go to, for the runtime's request helpers.
pub type ReplyTo = Handle;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::payload::{decode, encode};

    #[test]
    fn module_record_is_5_6_or_7_elements_as_versions_are_known() {
        let mut rec = ModuleSource {
            fullname: "m".into(),
            filename: "/p/m.py".into(),
            source: vec![1, 2],
            ..Default::default()
        };
        for (requires, master, head) in [("", "", 0x95), (">=3.8", "", 0x96), ("", "3.12", 0x97)] {
            rec.requires_python = requires.into();
            rec.master_python = master.into();
            let bytes = encode(&rec).unwrap();
            assert_eq!(bytes[0], head, "{requires:?} {master:?}");
            assert_eq!(decode::<ModuleSource>(&bytes).unwrap(), rec);
        }
    }

    #[test]
    fn call_function_round_trips_as_an_array() {
        let kwargs: BTreeMap<&str, i32> = [("b", 2)].into_iter().collect();
        let bytes = encode(&CallFunction {
            module: "math",
            class: None,
            function: "pow",
            args: (2, 10),
            kwargs,
        })
        .unwrap();
        assert_eq!(bytes[0], 0x95, "a 5-element array");
        let req: CallFunctionRequest = decode(&bytes).unwrap();
        assert_eq!(req.qualified_name(), "math.pow");
        assert_eq!(req.args, vec![Value::from(2), Value::from(10)]);
        assert_eq!(req.kwargs["b"], Value::from(2));
    }

    #[test]
    fn call_without_arguments_encodes_empty_array_and_map() {
        let bytes = encode(&CallFunction {
            module: "m",
            class: Some("C"),
            function: "f",
            args: NoArgs::default(),
            kwargs: NoKwargs::new(),
        })
        .unwrap();
        assert_eq!(&bytes[..], b"\x95\xa1m\xa1C\xa1f\x90\x80");
        let req: CallFunctionRequest = decode(&bytes).unwrap();
        assert_eq!(req.qualified_name(), "m.C.f");
        assert!(req.args.is_empty() && req.kwargs.is_empty());
    }

    #[test]
    fn spawn_debug_shows_neither_password_nor_key() {
        let spawn = Spawn {
            id: 2,
            name: "n".into(),
            argv: vec!["sudo".into()],
            env: BTreeMap::new(),
            config: [("key".to_string(), Value::from("deadbeef"))]
                .into_iter()
                .collect(),
            timeout: 1.0,
            method: "sudo".into(),
            new_session: true,
            tty: true,
            prompt: None,
            prompt_words: Vec::new(),
            exit_rules: Vec::new(),
            password: Some("hunter2".into()),
            agent: Some(AgentStart {
                payload: vec![1; 10],
                config: b"cafebabe".to_vec(),
            }),
        };
        let debug = format!("{spawn:?}");
        assert!(
            !debug.contains("hunter2") && !debug.contains("deadbeef"),
            "{debug}"
        );
        // The agent's config (it holds the key) shows as a size only.
        assert!(
            debug.contains("config_bytes: 8") && !debug.contains("[99, 97"),
            "{debug}"
        );
    }

    #[test]
    fn add_route_is_a_pair() {
        let bytes = encode(&AddRoute { target: 5, via: 2 }).unwrap();
        assert_eq!(&bytes[..], &[0x92, 5, 2]);
    }
}
