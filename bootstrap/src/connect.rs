//! Driving a handshake over a freshly started child, within a deadline.

use std::time::Duration;

use bytes::BytesMut;
use econtext_actors::iologger::{IoLogger, Tail};
use slog::{debug, Logger};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::Instant;

use crate::error::ConnectError;
use crate::handshake::{Handshake, Stage, Step};
use crate::process::{spawn_local, ChildProcess};

/// A child that completed the handshake: its data socket, whatever was read
/// past `EC1`, its process, and the tail of its stderr.
pub struct Connected {
    pub data: tokio::net::UnixStream,
    pub initial: BytesMut,
    pub process: ChildProcess,
    pub stderr_tail: Tail,
}

/// Starts `argv` locally and runs the bootstrap handshake, sending
/// `payload` after `EC0`. Every stage shares the one `timeout`.
pub async fn connect_local(
    argv: &[String],
    env: &[(String, String)],
    payload: &[u8],
    timeout: Duration,
    log: &Logger,
) -> Result<Connected, ConnectError> {
    let deadline = Instant::now() + timeout;
    let spawned = spawn_local(argv, env)?;
    let tail = Tail::default();
    IoLogger::start(
        spawned.stderr,
        log.new(slog::o!("fd" => "stderr")),
        tail.clone(),
    );
    let mut data = spawned.data;
    let mut process = spawned.process;
    debug!(log, "spawned"; "pid" => process.pid());

    let mut hs = Handshake::default();
    let mut buf = vec![0u8; 4096];
    loop {
        let n = match tokio::time::timeout_at(deadline, data.read(&mut buf)).await {
            Err(_) => {
                return Err(ConnectError::Timeout {
                    stage: hs.stage().describe(),
                    after: timeout,
                    stderr: tail.lines(),
                })
            }
            Ok(r) => r?,
        };
        if n == 0 {
            let status = process.status_within(Duration::from_millis(500)).await;
            // Let the stderr logger drain what the child printed last.
            tokio::time::sleep(Duration::from_millis(20)).await;
            let mut stderr = tail.lines();
            if !hs.noise.is_empty() {
                stderr.extend(hs.noise.lines().map(str::to_string));
            }
            return Err(ConnectError::ExitedEarly {
                stage: hs.stage().describe(),
                status,
                stderr,
            });
        }
        match hs.feed(&buf[..n]).map_err(ConnectError::Protocol)? {
            Step::Read => {}
            Step::SendPayload => {
                match tokio::time::timeout_at(deadline, data.write_all(payload)).await {
                    Err(_) => {
                        return Err(ConnectError::Timeout {
                            stage: Stage::AwaitEc1.describe(),
                            after: timeout,
                            stderr: tail.lines(),
                        })
                    }
                    Ok(r) => r?,
                }
            }
            Step::Done(initial) => {
                return Ok(Connected {
                    data,
                    initial,
                    process,
                    stderr_tail: tail,
                })
            }
        }
    }
}
