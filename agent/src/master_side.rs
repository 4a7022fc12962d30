//! The master's half of starting an agent: the first stage for a method,
//! the shipped binary as the handshake's payload, the config after `EC1`,
//! and the first stage's last words turned into typed errors.

use std::sync::Arc;
use std::time::Duration;

use econtext_bootstrap::connect::{connect, Connected};
use econtext_bootstrap::{ChildConfig, ConnectError, Method, SpawnSpec};
use econtext_wire::messages::AgentStart;
use slog::{info, Logger};
use tokio::io::AsyncWriteExt;

use crate::first_stage::{self, AgentOptions};
use crate::ship::{shipped, Shipped};

/// How `method` starts context `name` as a Rust agent: its spawn spec
/// (the method's argv ending in the agent's `sh` first stage) and the
/// compressed binary. Shared by direct connects and SPAWNs through
/// intermediates, so both run the same first stage.
pub fn agent_spec(
    method: &Method,
    opts: &AgentOptions,
    name: &str,
    timeout: Duration,
) -> Result<(SpawnSpec, Arc<Shipped>), ConnectError> {
    let ship = shipped(&opts.binary).map_err(|reason| ConnectError::Spawn {
        program: opts.binary.display().to_string(),
        reason,
    })?;
    let (platform, sha256) = (ship.platform.clone(), ship.sha256.clone());
    let mut spec = method.spawn_spec_with(name, timeout, &|_python, name| {
        first_stage::argv(name, &platform, &sha256, opts)
    })?;
    // From its cache the agent says EC1 with no EC0: nothing is sent.
    spec.payload_skippable = opts.cache;
    Ok((spec, ship))
}

/// What a SPAWN carries so that an intermediate starts the agent: the
/// binary in place of the core, and the config for after `EC1`.
pub fn agent_start(ship: &Shipped, config: &ChildConfig) -> AgentStart {
    AgentStart {
        payload: ship.framed.clone(),
        config: crate::config::encode(config),
    }
}

/// Starts context `config.name` as a Rust agent with `method`: the `sh`
/// first stage, the compressed binary after `EC0`, the config after the
/// agent's own `EC1`. The caller then starts the Stream on `data`.
pub async fn connect_agent(
    method: &Method,
    opts: &AgentOptions,
    config: &ChildConfig,
    timeout: Duration,
    log: &Logger,
) -> Result<(Connected, Arc<Shipped>), ConnectError> {
    let (spec, ship) = agent_spec(method, opts, &config.name, timeout)?;
    let mut connected = connect(&spec, &ship.framed, timeout, log)
        .await
        .map_err(classify)?;
    let cfg = crate::config::encode(config);
    match tokio::time::timeout(timeout, connected.data.write_all(&cfg)).await {
        Ok(r) => r?,
        Err(_) => {
            return Err(ConnectError::Timeout {
                stage: "the agent to read its config",
                after: timeout,
                stderr: connected.stderr_tail.lines(),
            })
        }
    }
    let shipped_bytes = match connected.payload_sent {
        true => ship.compressed_len(),
        false => 0,
    };
    info!(log, "Rust agent started";
        "shipped_bytes" => shipped_bytes, "binary_bytes" => ship.binary_len,
        "pid" => connected.process.pid());
    Ok((connected, ship))
}

/// The first stage's own refusals, as typed errors.
pub fn classify(e: ConnectError) -> ConnectError {
    // Direct: the first stage's last lines. Through an intermediate: its
    // message, which ends with those lines joined by " | ".
    let lines: Vec<&str> = match &e {
        ConnectError::ExitedEarly { stderr, .. } => stderr.iter().map(String::as_str).collect(),
        ConnectError::Via { reason, .. } => reason.split(['\n', '|']).collect(),
        _ => return e,
    };
    for line in lines {
        if let Some(rest) = line
            .split("econtext-agent: platform mismatch: expected ")
            .nth(1)
        {
            let (expected, found) = rest.split_once(", found ").unwrap_or((rest, "?"));
            return ConnectError::PlatformMismatch {
                expected: expected.trim().to_string(),
                found: found.trim().to_string(),
            };
        }
        if let Some(rest) = line.split("econtext-agent: tools missing:").nth(1) {
            return ConnectError::ToolsMissing {
                tools: rest.split_whitespace().map(str::to_string).collect(),
            };
        }
    }
    e
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_stage_refusals_become_typed() {
        let exited = |line: &str| ConnectError::ExitedEarly {
            stage: "x",
            status: "exit status: 125".into(),
            stderr: vec!["noise".into(), line.into()],
        };
        assert_eq!(
            classify(exited(
                "econtext-agent: platform mismatch: expected x86_64 with /lib64/ld.so, found aarch64"
            )),
            ConnectError::PlatformMismatch {
                expected: "x86_64 with /lib64/ld.so".into(),
                found: "aarch64".into()
            }
        );
        assert_eq!(
            classify(exited("econtext-agent: tools missing: head gzip")),
            ConnectError::ToolsMissing {
                tools: vec!["head".into(), "gzip".into()]
            }
        );
        let via = ConnectError::Via {
            via: 3,
            reason: "exited early; last output: x | econtext-agent: tools missing: gzip".into(),
        };
        assert_eq!(
            classify(via),
            ConnectError::ToolsMissing {
                tools: vec!["gzip".into()]
            }
        );
        let other = exited("something else");
        assert_eq!(classify(other.clone()), other);
    }
}
