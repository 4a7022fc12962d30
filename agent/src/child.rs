//! The child side: a program started by a master as a Rust agent becomes
//! a context here and never returns to its `main`.

use std::io::{Read, Write};
use std::os::fd::OwnedFd;
use std::time::Duration;

use econtext_actors::rust_context::{start_rust_context, RustContextConfig};
use econtext_bootstrap::spawner::Spawner;
use econtext_bootstrap::ChildConfig;
use nix::sys::stat::{fstat, SFlag};
use slog::{info, o, Drain, Logger};
use tokio::io::{AsyncRead, AsyncWrite};

use crate::config;
use crate::services::Services;
use crate::stdio::{forward_lines, redirect_stdio, take_data_fds, ForwardDrain};

/// The environment variable the first stage sets: `1` to run as a
/// context, `probe` to exit 0 at once (the `sh` stage's noexec test).
pub const ROLE_ENV: &str = "ECONTEXT_AGENT";
/// The private directory the agent was run from, removed at start.
pub const TMP_ENV: &str = "ECONTEXT_AGENT_TMP";

/// Call first thing in `main`. When this process was started by a master
/// as a Rust agent, it runs as that context with the [`Services`] from
/// `services` and exits when its parent goes away or shuts it down;
/// otherwise it returns at once and costs nothing.
///
/// ```no_run
/// fn main() {
///     econtext_agent::run_if_child(|| {
///         let mut s = econtext_agent::Services::default();
///         s.functions.register("demo.hello", |(who,): (String,)| format!("hello {who}"));
///         s
///     });
///     // ... the program's own work, e.g. a Master that starts itself
///     // elsewhere with `ConnectOptions::agent`.
/// }
/// ```
#[allow(clippy::needless_doctest_main)]
pub fn run_if_child<F: FnOnce() -> Services>(services: F) {
    match std::env::var(ROLE_ENV).as_deref() {
        Ok("probe") => std::process::exit(0),
        Ok("1") => {}
        _ => return,
    }
    // Not inherited by the agent's own children.
    std::env::remove_var(ROLE_ENV);
    remove_own_file();
    let code = match run(services) {
        Ok(()) => 0,
        Err(e) => {
            // fd 2 is still the real stderr until the config is read, and
            // is forwarded to the master after that.
            eprintln!("econtext-agent: {e}");
            1
        }
    };
    std::process::exit(code)
}

/// The fallback ran us from a private temp dir: delete the file and the
/// directory now (the running image stays mapped).
fn remove_own_file() {
    let Some(dir) = std::env::var_os(TMP_ENV) else {
        return;
    };
    std::env::remove_var(TMP_ENV);
    let dir = std::path::PathBuf::from(dir);
    // Only what the first stage made: a `.econtext.*` directory.
    let ours = dir
        .file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| n.starts_with(".econtext."));
    if !ours {
        return;
    }
    if let Ok(entries) = std::fs::read_dir(&dir) {
        for e in entries.flatten() {
            let _ = std::fs::remove_file(e.path());
        }
    }
    let _ = std::fs::remove_dir(&dir);
}

/// Says `EC1`, then reads the config the master sends after it.
fn handshake(input: &mut std::fs::File, output: &mut std::fs::File) -> Result<ChildConfig, String> {
    output.write_all(b"EC1\n").map_err(|e| e.to_string())?;
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    loop {
        match input.read(&mut byte) {
            Ok(1) if byte[0] == b'\n' => break,
            Ok(1) if line.len() < 20 => line.push(byte[0]),
            Ok(1) => return Err("config length line too long".into()),
            Ok(_) => return Err("parent closed before sending the config".into()),
            Err(e) => return Err(format!("reading the config: {e}")),
        }
    }
    let mut body = vec![0u8; config::parse_len(&line)?];
    input
        .read_exact(&mut body)
        .map_err(|e| format!("reading the config: {e}"))?;
    config::decode(&body)
}

type Transport = (Box<dyn AsyncRead + Unpin>, Box<dyn AsyncWrite + Unpin>);

/// The data fds as async halves: a socket (local method) or two pipes
/// (ssh, sudo).
fn transport(input: OwnedFd, output: OwnedFd) -> std::io::Result<Transport> {
    let is_socket = |fd: &OwnedFd| {
        fstat(std::os::fd::AsRawFd::as_raw_fd(fd))
            .map(|st| SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT == SFlag::S_IFSOCK)
            .unwrap_or(false)
    };
    let reader: Box<dyn AsyncRead + Unpin> = if is_socket(&input) {
        let s = std::os::unix::net::UnixStream::from(input);
        s.set_nonblocking(true)?;
        Box::new(tokio::net::UnixStream::from_std(s)?)
    } else {
        Box::new(tokio::net::unix::pipe::Receiver::from_owned_fd(input)?)
    };
    let writer: Box<dyn AsyncWrite + Unpin> = if is_socket(&output) {
        let s = std::os::unix::net::UnixStream::from(output);
        s.set_nonblocking(true)?;
        Box::new(tokio::net::UnixStream::from_std(s)?)
    } else {
        Box::new(tokio::net::unix::pipe::Sender::from_owned_fd(output)?)
    };
    Ok((reader, writer))
}

/// `econtext:NAME` as the thread's name (`ps -o comm`, `top`), 15 bytes.
fn set_process_name(name: &str) {
    let full = format!("econtext:{}", crate::first_stage::safe_name(name));
    let short: String = full.chars().take(15).collect();
    if let Ok(c) = std::ffi::CString::new(short) {
        let _ = nix::sys::prctl::set_name(&c);
    }
}

fn run<F: FnOnce() -> Services>(services: F) -> Result<(), String> {
    let (input, output) = take_data_fds().map_err(|e| format!("dup of stdio: {e}"))?;
    let mut input = std::fs::File::from(input);
    let mut output = std::fs::File::from(output);
    let cfg = handshake(&mut input, &mut output)?;
    set_process_name(&cfg.name);
    let (out_pipe, err_pipe) = redirect_stdio().map_err(|e| format!("stdio pipes: {e}"))?;
    let (drain, router_slot) = ForwardDrain::new(cfg.context_id, cfg.log_level);
    let log = Logger::root(drain.fuse(), o!());
    let system = actix_rt::System::new();
    system.block_on(async move {
        let (reader, writer) = transport(OwnedFd::from(input), OwnedFd::from(output))
            .map_err(|e| format!("stream fds: {e}"))?;
        let mut rc = RustContextConfig::new(
            cfg.context_id,
            &cfg.name,
            cfg.parent_id,
            cfg.ancestors.clone(),
            &cfg.key,
            log.clone(),
        );
        rc.max_message_size = cfg.max_message_size;
        let mut services = services();
        crate::builtins::add_builtins(&mut services.functions);
        let router = start_rust_context(
            rc,
            // Every Rust context serves econtext.files, as Python ones do.
            econtext_files::service::with_files(&services.functions),
            reader,
            writer,
            Default::default(),
        );
        services.start_actors(&router, cfg.context_id);
        // An agent is an intermediate too: it spawns Python children.
        Spawner::new(cfg.context_id, router.clone(), &cfg.key, log.clone()).serve();
        *router_slot.lock().expect("router slot") = Some(router.clone());
        let me = cfg.context_id;
        actix::spawn(forward_lines(out_pipe, me, "stdout", 20, router.clone()));
        actix::spawn(forward_lines(err_pipe, me, "stderr", 30, router.clone()));
        info!(log, "Rust agent up"; "pid" => std::process::id());
        // The router stops when the parent stream ends or on SHUTDOWN
        // (no orphans): then so does the process.
        while router.connected() {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok::<(), String>(())
    })
}
