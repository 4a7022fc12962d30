//! SPAWN in a Rust context: start a Python child (or a Rust agent) on the
//! master's behalf with the same connect code the master uses, then route
//! for it.

use std::collections::BTreeMap;
use std::time::Duration;

use actix::prelude::*;
use econtext_actors::attach::{attach_process, ChildLink, ChildProcess};
use econtext_actors::router::Router;
use econtext_actors::serve::{serve_on, Request};
use econtext_actors::supervision::ProcessExited;
use econtext_actors::supervisor::DEFAULT_GRACE;
use econtext_wire::messages::Spawn;
use econtext_wire::{handles, CallError, ContextId, Value};
use slog::{info, Logger};

use tokio::io::AsyncWriteExt;

use crate::connect::connect;
use crate::error::ConnectError;
use crate::method::SpawnSpec;
use crate::payload::{framed_payload, ChildConfig, DEFAULT_SPIN_US};
use crate::prompt::{PromptRules, Secret};

/// Answers SPAWN for the context whose Router it serves.
pub struct Spawner {
    me: ContextId,
    router: Addr<Router>,
    key: Vec<u8>,
    /// Where each child's exit status goes (the master's supervision hub,
    /// when this context runs in the master's process).
    on_exit: Option<Recipient<ProcessExited>>,
    log: Logger,
}

impl Spawner {
    pub fn new(me: ContextId, router: Addr<Router>, key: &[u8], log: Logger) -> Self {
        Spawner {
            me,
            router,
            key: key.to_vec(),
            on_exit: None,
            log,
        }
    }

    /// Starts the Spawner and serves SPAWN with it on `router`, through the
    /// typed adapter users' actors get (`serve::serve_on`): requests decode
    /// as [`Spawn`], at most `serve::MAX_IN_FLIGHT` connects run at once.
    pub fn serve(self) {
        let (router, me) = (self.router.clone(), self.me);
        serve_on::<Spawn, Vec<u32>, Spawner>(&router, me, handles::SPAWN, self.start());
    }

    /// Reports how each child's process exited to `sink`.
    pub fn with_exit_sink(mut self, sink: Recipient<ProcessExited>) -> Self {
        self.on_exit = Some(sink);
        self
    }
}

impl Actor for Spawner {
    type Context = actix::Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        // A burst from a whole fleet fits; past it senders get Dead
        // (Overloaded), never silence.
        ctx.set_mailbox_capacity(econtext_actors::router::SERVICE_MAILBOX);
    }
}

fn connect_error(message: String) -> CallError {
    CallError {
        type_name: "econtext.ConnectError".into(),
        message,
        traceback: String::new(),
    }
}

impl ChildConfig {
    /// Reads the config a SPAWN carries (see [`ChildConfig::to_msgpack_map`]).
    pub fn from_msgpack_map(m: &BTreeMap<String, Value>) -> Result<ChildConfig, String> {
        let int = |k: &str| {
            m.get(k)
                .and_then(Value::as_u64)
                .ok_or_else(|| format!("config.{k} missing or not an integer"))
        };
        let text = |k: &str| {
            m.get(k)
                .and_then(Value::as_str)
                .map(str::to_string)
                .ok_or_else(|| format!("config.{k} missing or not text"))
        };
        let hex = text("key")?;
        let key = (0..hex.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(hex.get(i..i + 2).unwrap_or("zz"), 16))
            .collect::<Result<Vec<u8>, _>>()
            .map_err(|_| "config.key is not hex".to_string())?;
        let ancestors = m
            .get("ancestors")
            .and_then(Value::as_array)
            .ok_or("config.ancestors missing")?
            .iter()
            .map(|v| {
                v.as_u64()
                    .map(|a| a as u16)
                    .ok_or("config.ancestors: not integers")
            })
            .collect::<Result<Vec<u16>, _>>()?;
        Ok(ChildConfig {
            context_id: int("context_id")? as u16,
            parent_id: int("parent_id")? as u16,
            name: text("name")?,
            key,
            log_level: int("log_level")? as u8,
            max_message_size: int("max_message_size")? as usize,
            ancestors,
            module_path: text("module_path").unwrap_or_default(),
            import_timeout_ms: int("import_timeout").unwrap_or(30_000),
            // From a master that does not say: the child's own default.
            spin_us: int("spin_us").unwrap_or(DEFAULT_SPIN_US),
        })
    }
}

type SpawnReply = Result<Vec<u32>, CallError>;

impl Handler<Request<Spawn, Vec<u32>>> for Spawner {
    type Result = ResponseActFuture<Self, SpawnReply>;

    fn handle(&mut self, msg: Request<Spawn, Vec<u32>>, _: &mut Self::Context) -> Self::Result {
        let refuse = |e: CallError| Box::pin(fut::ready(Err(e))) as Self::Result;
        let req = msg.value;
        let config = match ChildConfig::from_msgpack_map(&req.config) {
            Ok(c) if c.context_id == req.id && c.parent_id == self.me => c,
            Ok(_) => return refuse(connect_error("SPAWN config does not match".into())),
            Err(e) => return refuse(connect_error(e)),
        };
        let spec = SpawnSpec {
            method: req.method.clone(),
            argv: req.argv.clone(),
            env: req.env.clone().into_iter().collect(),
            new_session: req.new_session,
            tty: req.tty,
            prompts: PromptRules {
                custom: req.prompt.clone(),
                words: req.prompt_words.clone(),
            },
            exit_rules: req.exit_rules.clone(),
            password: req.password.clone().map(Secret::new),
            // Only an agent's first stage may have the payload cached.
            payload_skippable: req.agent.is_some(),
        };
        let log = self.log.new(slog::o!("ctx" => req.name.clone()));
        let timeout = Duration::from_secs_f64(req.timeout.clamp(0.1, 3600.0));
        // A Rust agent: its binary in place of our core, its config after
        // its own EC1 (the master built both).
        let (payload, after_ec1) = match req.agent.as_ref() {
            Some(a) => (a.payload.clone(), Some(a.config.clone())),
            None => (framed_payload(&config), None),
        };
        let fut = async move {
            let mut connected = connect(&spec, &payload, timeout, &log).await?;
            if let Some(mut cfg) = after_ec1 {
                let sent = tokio::time::timeout(timeout, connected.data.write_all(&cfg)).await;
                zeroize::Zeroize::zeroize(&mut cfg);
                match sent {
                    Ok(r) => r?,
                    Err(_) => {
                        return Err(ConnectError::Timeout {
                            stage: "the agent to read its config",
                            after: timeout,
                            stderr: connected.stderr_tail.lines(),
                        })
                    }
                }
            }
            Ok(connected)
        };
        Box::pin(fut.into_actor(self).map(move |res, act, _| match res {
            Ok(connected) => {
                let pid = connected.process.pid();
                info!(act.log, "spawned a child on the master's behalf"; "id" => req.id, "pid" => pid);
                // The master allocated its ID and announced its routes
                // (attach::Joining); the link is attached here the same
                // way the master attaches its own children.
                // Read side registered for readability only (socket.rs).
                let (reader, writer) = match econtext_actors::socket::split(connected.data) {
                    Ok(halves) => halves,
                    Err(e) => {
                        return Err(CallError {
                            type_name: "econtext.ConnectError.Io".into(),
                            message: e.to_string(),
                            traceback: String::new(),
                        })
                    }
                };
                let link = ChildLink {
                    id: req.id,
                    key: &act.key,
                    max_message_size: config.max_message_size,
                    initial: connected.initial,
                    log: act.log.clone(),
                    // An intermediate forwards others' calls: it awaits
                    // none of its own, so it would not spin.
                    spin: None,
                };
                let child = ChildProcess {
                    reader,
                    writer,
                    carrier: Box::new(connected.process),
                    grace: DEFAULT_GRACE,
                    on_exit: act.on_exit.clone(),
                };
                attach_process(&act.router, link, child);
                Ok(vec![pid])
            }
            Err(e) => Err(CallError {
                type_name: format!("econtext.ConnectError.{}", e.kind()),
                message: e.to_string(),
                traceback: String::new(),
            }),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_survives_the_spawn_map() {
        let c = ChildConfig {
            context_id: 7,
            parent_id: 3,
            name: "x".into(),
            key: vec![1, 0xab],
            log_level: 10,
            max_message_size: 99,
            ancestors: vec![3, 1, 0],
            module_path: "/a:/b".into(),
            import_timeout_ms: 2_500,
            spin_us: 70,
        };
        assert_eq!(
            ChildConfig::from_msgpack_map(&c.to_msgpack_map()).unwrap(),
            c
        );
    }
}
