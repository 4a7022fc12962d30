//! Driving a handshake over a freshly started child, within a deadline:
//! answering its password prompt (on its pty, or on stdin when the prompt
//! came on stderr, as su does), then `EC0`, the payload, `EC1`.

use std::time::Duration;

use bytes::BytesMut;
use econtext_actors::iologger::{IoLogger, Tail};
use econtext_wire::sanitize;
use slog::{debug, info, Logger};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::process::ChildStderr;
use tokio::time::Instant;

use crate::error::ConnectError;
use crate::handshake::{Handshake, Stage, Step};
use crate::method::SpawnSpec;
use crate::payload::{framed_preloading, ChildConfig, CoreSource};
use crate::process::{spawn_spec, ChildProcess};
use crate::prompt::{classify_exit, Asked, Auth, PromptRules, PromptScanner, Secret};
use crate::pty::PtyMaster;

/// A child that completed the handshake: its data socket, whatever was read
/// past `EC1`, its process, and the tail of its stderr.
pub struct Connected {
    pub data: tokio::net::UnixStream,
    pub initial: BytesMut,
    pub process: ChildProcess,
    pub stderr_tail: Tail,
    /// Whether the payload went out: not when the first stage already had
    /// it ([`SpawnSpec::payload_skippable`]).
    pub payload_sent: bool,
}

/// One output of the child other than its data: stderr or its pty. Split
/// into log lines, kept in the tail (redacted), and watched for prompts.
struct Side {
    name: &'static str,
    buf: Vec<u8>,
    scanner: PromptScanner,
    open: bool,
}

impl Side {
    fn new(name: &'static str, open: bool) -> Self {
        Side {
            name,
            buf: Vec::new(),
            scanner: PromptScanner::default(),
            open,
        }
    }

    /// Logs complete lines; what the output now ends with asking, if
    /// anything.
    fn feed(&mut self, bytes: &[u8], cx: &Cx<'_>, watch: bool) -> Option<Asked> {
        self.buf.extend_from_slice(bytes);
        while let Some(i) = self.buf.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = self.buf.drain(..=i).collect();
            cx.line(self.name, &line);
        }
        if self.buf.len() > 64 * 1024 {
            let rest = std::mem::take(&mut self.buf);
            cx.line(self.name, &rest);
        }
        let asked = if watch {
            self.scanner.feed(cx.rules, bytes, self.name == "tty")
        } else {
            None
        };
        if asked.is_some() {
            // The prompt is a line of its own in the log.
            let rest = std::mem::take(&mut self.buf);
            cx.line(self.name, &rest);
        }
        asked
    }

    fn flush(&mut self, cx: &Cx<'_>) {
        let rest = std::mem::take(&mut self.buf);
        if !rest.is_empty() {
            cx.line(self.name, &rest);
        }
    }
}

struct Cx<'a> {
    log: &'a Logger,
    tail: &'a Tail,
    password: Option<&'a Secret>,
    rules: &'a PromptRules,
}

impl Cx<'_> {
    fn line(&self, fd: &'static str, raw: &[u8]) {
        let raw = raw.strip_suffix(b"\n").unwrap_or(raw);
        let raw = raw.strip_suffix(b"\r").unwrap_or(raw);
        let raw = raw.strip_prefix(b"\r").unwrap_or(raw);
        if raw.iter().all(|b| b.is_ascii_whitespace()) {
            return;
        }
        // Every control character and bad byte escaped (this reaches a
        // terminal), then the password redacted.
        let text = self.redact(&sanitize::field_bytes(raw));
        // ssh's note on every host it adds to known_hosts (each time with
        // UserKnownHostsFile=/dev/null, which ssh_config or an inventory
        // may set): debug level, so a fleet does not log one per host.
        // It stays in the tail for errors.
        if text.starts_with("Warning: Permanently added ") {
            debug!(self.log, "{}", text; "fd" => fd);
        } else {
            info!(self.log, "{}", text; "fd" => fd);
        }
        self.tail.push(text);
    }

    fn redact(&self, text: &str) -> String {
        match self.password {
            Some(p) => p.redact(text),
            None => text.to_string(),
        }
    }

    fn lines(&self) -> Vec<String> {
        self.tail.lines().iter().map(|l| self.redact(l)).collect()
    }
}

/// What the timeout says it was waiting for.
fn stage_name(method: &str, stage: Stage) -> &'static str {
    match (method, stage) {
        ("ssh", Stage::AwaitEc0) => "ssh to log in and start the first stage (EC0)",
        ("sudo", Stage::AwaitEc0) => "sudo to authenticate and start the first stage (EC0)",
        ("su", Stage::AwaitEc0) => "su to authenticate and start the first stage (EC0)",
        (_, s) => s.describe(),
    }
}

/// What is written after `EC0`.
pub enum Payload<'a> {
    /// These bytes (an agent's, or a payload built beforehand).
    Bytes(&'a [u8]),
    /// The Python core for `config`. With `compiled`, the core's code
    /// object for the interpreter the first stage named (its `ECT` line)
    /// goes first when a local interpreter has the same tag
    /// ([`crate::compiled`]; `python` is the one the target was told to
    /// run, a hint for finding it); else the source alone.
    Core {
        config: &'a ChildConfig,
        compiled: bool,
        python: &'a str,
        /// Builtin modules sent with the payload and created at start
        /// ([`crate::payload::framed_preloading`]).
        preload: &'a [&'a str],
        /// Whether the source goes too when the core goes compiled.
        source: CoreSource,
    },
}

/// Starts what `spec` describes and runs the bootstrap handshake, sending
/// `payload` after `EC0` and answering a password prompt on the way.
/// Every stage shares the one `timeout`.
pub async fn connect(
    spec: &SpawnSpec,
    payload: &[u8],
    timeout: Duration,
    log: &Logger,
) -> Result<Connected, ConnectError> {
    connect_with(spec, Payload::Bytes(payload), timeout, log).await
}

/// The payload `p` as bytes, for the interpreter `tag` names.
async fn payload_bytes<'a>(
    p: &Payload<'a>,
    tag: Option<&str>,
    log: &Logger,
) -> std::borrow::Cow<'a, [u8]> {
    match *p {
        Payload::Bytes(b) => b.into(),
        Payload::Core {
            config,
            compiled,
            python,
            preload,
            source,
        } => {
            let code = match tag {
                Some(tag) if compiled => crate::compiled::core_for(tag, python).await,
                _ => None,
            };
            if let Some(c) = &code {
                debug!(log, "sending the core compiled"; "for" => tag, "bytes" => c.core.len());
            }
            framed_preloading(config, code.as_deref(), preload, source).into()
        }
    }
}

/// [`connect`] with the payload chosen once the first stage has said
/// `EC0` (and which interpreter it runs).
pub async fn connect_with(
    spec: &SpawnSpec,
    payload: Payload<'_>,
    timeout: Duration,
    log: &Logger,
) -> Result<Connected, ConnectError> {
    let deadline = Instant::now() + timeout;
    let spawned = spawn_spec(spec)?;
    let tail = Tail::default();
    let cx = Cx {
        log,
        tail: &tail,
        password: spec.password.as_ref(),
        rules: &spec.prompts,
    };
    let mut data = spawned.data;
    let mut process = spawned.process;
    let mut stderr: ChildStderr = spawned.stderr;
    let tty: Option<PtyMaster> = spawned.tty;
    debug!(log, "spawned"; "pid" => process.pid(), "method" => &spec.method, "tty" => tty.is_some());

    // Prompts are only looked for where a method can ask one.
    let watch = spec.method != "local";
    let mut err_side = Side::new("stderr", true);
    let mut tty_side = Side::new("tty", tty.is_some());
    let mut password_sent = false;
    let auth = |sent: bool| Auth {
        password_given: spec.password.is_some(),
        password_sent: sent,
    };
    let timed_out = |stage: Stage, cx: &Cx<'_>| ConnectError::Timeout {
        stage: stage_name(&spec.method, stage),
        after: timeout,
        stderr: cx.lines(),
    };

    let mut hs = Handshake::payload_skippable(spec.payload_skippable);
    let mut payload_sent = false;
    let mut buf = vec![0u8; 4096];
    let mut ebuf = vec![0u8; 4096];
    let mut tbuf = vec![0u8; 1024];
    loop {
        // Which output asked for the password, if one did.
        let mut prompt_on: Option<&'static str> = None;
        let mut host_key_asked = false;
        tokio::select! {
            r = data.read(&mut buf) => {
                let n = r?;
                if n == 0 {
                    return Err(exited_early(
                        spec, &hs, &mut process, &mut stderr, tty.as_ref(),
                        (&mut err_side, &mut tty_side), &cx, auth(password_sent), timeout,
                    ).await);
                }
                match hs.feed(&buf[..n]).map_err(ConnectError::Protocol)? {
                    Step::Read => {}
                    Step::SendPayload => {
                        payload_sent = true;
                        let send = async {
                            let bytes = payload_bytes(&payload, hs.interpreter_tag(), log).await;
                            data.write_all(&bytes).await
                        };
                        match tokio::time::timeout_at(deadline, send).await {
                            Err(_) => return Err(timed_out(Stage::AwaitEc1, &cx)),
                            Ok(r) => r?,
                        }
                    }
                    Step::Done(initial) => {
                        err_side.flush(&cx);
                        tty_side.flush(&cx);
                        IoLogger::start(stderr, log.new(slog::o!("fd" => "stderr")), tail.clone());
                        if let Some(t) = tty {
                            // Keeps the pty drained for as long as the
                            // child writes to it.
                            IoLogger::start(t, log.new(slog::o!("fd" => "tty")), tail.clone());
                        }
                        if let Some(p) = &spec.password {
                            tail.redact(p.expose());
                        }
                        return Ok(Connected {
                            data,
                            initial,
                            process,
                            stderr_tail: tail,
                            payload_sent,
                        });
                    }
                }
            }
            r = stderr.read(&mut ebuf), if err_side.open => {
                match r {
                    Ok(0) | Err(_) => err_side.open = false,
                    Ok(n) => {
                        let w = watch && hs.stage() == Stage::AwaitEc0;
                        if err_side.feed(&ebuf[..n], &cx, w) == Some(Asked::Password) {
                            prompt_on = Some("stderr");
                        }
                    }
                }
            }
            r = async { tty.as_ref().expect("tty side open").read(&mut tbuf).await }, if tty_side.open => {
                match r {
                    Ok(0) | Err(_) => tty_side.open = false,
                    Ok(n) => {
                        let w = watch && hs.stage() == Stage::AwaitEc0;
                        match tty_side.feed(&tbuf[..n], &cx, w) {
                            Some(Asked::Password) => prompt_on = Some("tty"),
                            Some(Asked::HostKey) => host_key_asked = true,
                            None => {}
                        }
                    }
                }
            }
            _ = tokio::time::sleep_until(deadline) => {
                err_side.flush(&cx);
                tty_side.flush(&cx);
                return Err(timed_out(hs.stage(), &cx));
            }
        }
        if host_key_asked {
            // ssh_config left `StrictHostKeyChecking` at `ask` and ssh
            // asks on our pty: "no", as `ask` says without a terminal.
            // ssh then exits with "Host key verification failed."
            // (HostKeyRefused by the exit rules).
            debug!(log, "host key question: answered no");
            if let Some(t) = &tty {
                match tokio::time::timeout_at(deadline, t.write_all(b"no\n")).await {
                    Err(_) => return Err(timed_out(hs.stage(), &cx)),
                    Ok(r) => r?,
                }
            }
            continue;
        }
        let Some(on) = prompt_on else { continue };
        let method = spec.method.clone();
        let Some(password) = &spec.password else {
            debug!(log, "password prompt and no password"; "on" => on);
            return Err(ConnectError::PasswordRequired { method });
        };
        if password_sent {
            debug!(log, "second password prompt: refused"; "on" => on);
            return Err(ConnectError::PasswordRefused { method });
        }
        let mut answer = password.expose().as_bytes().to_vec();
        answer.push(b'\n');
        // Answer where we were asked: prompts on the terminal are read
        // from it; a prompt on stderr (su with PAM) reads stdin.
        let wrote = match (on, &tty) {
            ("tty", Some(t)) => tokio::time::timeout_at(deadline, t.write_all(&answer)).await,
            _ => tokio::time::timeout_at(deadline, data.write_all(&answer)).await,
        };
        answer.iter_mut().for_each(|b| *b = 0);
        match wrote {
            Err(_) => return Err(timed_out(hs.stage(), &cx)),
            Ok(r) => r?,
        }
        password_sent = true;
        debug!(log, "answered the password prompt"; "on" => on);
    }
}

/// The child closed its data channel before `EC1`: say why, as precisely
/// as its last words allow.
#[allow(clippy::too_many_arguments)]
async fn exited_early(
    spec: &SpawnSpec,
    hs: &Handshake,
    process: &mut ChildProcess,
    stderr: &mut ChildStderr,
    tty: Option<&PtyMaster>,
    sides: (&mut Side, &mut Side),
    cx: &Cx<'_>,
    auth: Auth,
    timeout: Duration,
) -> ConnectError {
    let (err_side, tty_side) = sides;
    let status = process.status_within(Duration::from_millis(500)).await;
    // Drain what the child printed last (it has exited or is exiting).
    let mut b = vec![0u8; 4096];
    let drain_until = Instant::now() + Duration::from_millis(200);
    while err_side.open {
        match tokio::time::timeout_at(drain_until, stderr.read(&mut b)).await {
            Ok(Ok(n)) if n > 0 => {
                err_side.feed(&b[..n], cx, false);
            }
            _ => err_side.open = false,
        }
    }
    if let Some(t) = tty {
        while tty_side.open {
            match tokio::time::timeout_at(drain_until, t.read(&mut b)).await {
                Ok(Ok(n)) if n > 0 => {
                    tty_side.feed(&b[..n], cx, false);
                }
                _ => tty_side.open = false,
            }
        }
    }
    err_side.flush(cx);
    tty_side.flush(cx);
    let mut lines = cx.lines();
    if !hs.noise.is_empty() {
        lines.extend(hs.noise.lines().map(|l| cx.redact(&sanitize::field(l))));
    }
    if spec.method != "local" {
        if let Some(e) = classify_exit(&spec.exit_rules, &spec.method, &lines, auth, timeout) {
            return e;
        }
    }
    ConnectError::ExitedEarly {
        stage: stage_name(&spec.method, hs.stage()),
        status,
        stderr: lines,
    }
}
