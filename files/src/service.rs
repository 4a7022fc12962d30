//! `econtext.files` served by a Rust context (in-process or an agent): the
//! same two functions as the Python core's module, so push and pull work
//! to a Rust context as they do to a Python one (docs/PROTOCOL.md,
//! "Files").
//!
//! - `recv_begin` receives a push with [`LocalWriter`] and the shared
//!   receive pump; the caller is our master, so set-id bits and (as root)
//!   owners are kept, as the Python receiver does.
//! - `send_begin` streams a pull with the push's reader thread, keeping at
//!   most the caller's window unacknowledged.
//!
//! - `recv_begin` with `opts.relay` relays a fanned-out push to our
//!   children ([`crate::relay`]), as a Python intermediate does;
//! - `stats` returns this process's counters (`bytes_in`, `relayed`).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use econtext_actors::dispatch::{CallEnv, Functions};
use econtext_actors::{Channel, Sender};
use econtext_wire::{SenderRef, Value};
use futures::StreamExt;
use serde_bytes::ByteBuf;
use tokio::sync::mpsc;

use crate::error::{FileError, FileErrorKind, LOCAL_HOST};
use crate::manifest::{self, Entry, KIND_DIR};
use crate::proto::{self, Window};
use crate::push::{read_all, ReadItem};
use crate::receive::{receive, Receive};
use crate::writer::LocalWriter;

/// How long a sender waits for the receiver's start or credit, and a
/// receiver for data, before giving up (the master's default).
const STALL: Duration = Duration::from_secs(60);

/// File bytes this process's receivers wrote (every context in it).
static BYTES_IN: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Adds `econtext.files.recv_begin` and `econtext.files.send_begin` to
/// `functions` (Rust contexts get them unless their own replace them).
pub fn register(functions: &mut Functions) {
    functions.register_in_context(
        "econtext.files.recv_begin",
        |env, (root, entries, opts, ack): (ByteBuf, Vec<Entry>, Value, SenderRef)| async move {
            recv_begin(env, root.into_vec(), entries, opts, ack)
                .await
                .unwrap_or_else(|e| error_reply(&e))
        },
    );
    functions.register("econtext.files.stats", |(): ()| {
        use std::sync::atomic::Ordering::Relaxed;
        let mut m = HashMap::new();
        m.insert("bytes_in", BYTES_IN.load(Relaxed));
        m.insert("relayed", crate::relay::RELAYED.load(Relaxed));
        m.insert("fsynced", crate::writer::FSYNCED.load(Relaxed));
        m
    });
    functions.register_in_context(
        "econtext.files.send_begin",
        |env, (src, tree, data, opts): (ByteBuf, bool, SenderRef, Value)| async move {
            send_begin(env, src.into_vec(), tree, data, opts)
                .await
                .unwrap_or_else(|e| error_reply(&e))
        },
    );
}

/// Functions with the file service registered, for a Rust context.
pub fn with_files(functions: &Functions) -> Functions {
    let mut f = Functions::default();
    register(&mut f);
    f.extend(functions);
    f
}

fn error_reply(e: &FileError) -> Value {
    Value::Map(vec![(Value::from("error"), wire_error(e))])
}

fn wire_error(e: &FileError) -> Value {
    Value::Array(vec![
        Value::from(e.kind.as_str()),
        Value::from(e.path.as_str()),
        Value::from(e.detail.as_str()),
    ])
}

fn opt<'a>(v: &'a Value, key: &str) -> Option<&'a Value> {
    v.as_map()?
        .iter()
        .find(|(k, _)| k.as_str() == Some(key))
        .map(|(_, v)| v)
}

fn opt_u64(v: &Value, key: &str, default: u64) -> u64 {
    opt(v, key).and_then(Value::as_u64).unwrap_or(default)
}

fn path_of(b: &[u8]) -> PathBuf {
    PathBuf::from(<std::ffi::OsStr as std::os::unix::ffi::OsStrExt>::from_bytes(b))
}

fn failure(kind: FileErrorKind, path: &Path, why: &str) -> FileError {
    FileError::new(kind, LOCAL_HOST, path.to_string_lossy(), why)
}

/// Where a push lands: the tree's root, or the one file's path (inside
/// `root/name` when the destination is a directory, as cp does).
fn destination(root: &Path, entries: &mut [Entry], opts: &Value) -> Result<PathBuf, FileError> {
    let tree = entries.first().is_some_and(|e| e.rel().is_empty());
    if tree {
        if std::fs::symlink_metadata(root).is_ok_and(|m| !m.is_dir()) {
            return Err(failure(
                FileErrorKind::NotADirectory,
                root,
                "destination exists and is not a directory",
            ));
        }
        return Ok(root.to_path_buf());
    }
    if entries.len() != 1 || entries[0].kind() == KIND_DIR || entries[0].rel().contains(&b'/') {
        return Err(failure(FileErrorKind::Protocol, root, "one file expected"));
    }
    if !root.is_dir() {
        return Err(failure(
            FileErrorKind::NotFound,
            root,
            "destination directory does not exist",
        ));
    }
    let mut dest = manifest::join(root, entries[0].rel());
    if let Some(Value::Binary(name)) = opt(opts, "name") {
        if dest.is_dir() && manifest::is_safe(name) && !name.is_empty() {
            dest = manifest::join(&dest, name);
        }
    }
    let dir = dest.parent().unwrap_or(Path::new("."));
    if nix::unistd::access(
        dir,
        nix::unistd::AccessFlags::W_OK | nix::unistd::AccessFlags::X_OK,
    )
    .is_err()
    {
        return Err(failure(
            FileErrorKind::PermissionDenied,
            dir,
            "destination directory is not writable",
        ));
    }
    entries[0].0 = ByteBuf::new();
    Ok(dest)
}

async fn recv_begin(
    env: CallEnv,
    root: Vec<u8>,
    mut entries: Vec<Entry>,
    opts: Value,
    ack: SenderRef,
) -> Result<Value, FileError> {
    if opt(&opts, "relay").is_some() {
        return crate::relay::relay_begin(env, root, entries, opts, ack, STALL).await;
    }
    let root = path_of(&root);
    let tree = entries.first().is_some_and(|e| e.rel().is_empty());
    for e in &entries {
        if !manifest::is_safe(e.rel()) {
            return Err(failure(
                FileErrorKind::Protocol,
                &root,
                "unsafe path in manifest",
            ));
        }
    }
    let dest = destination(&root, &mut entries, &opts)?;
    let fsync = opt(&opts, "fsync").and_then(Value::as_bool).unwrap_or(true);
    let window = opt_u64(&opts, "window", 1 << 20).max(1);
    let chunk = opt_u64(&opts, "chunk", 256 << 10).max(1);
    let (writer, resume) =
        tokio::task::spawn_blocking(move || LocalWriter::begin(dest, entries, tree, fsync))
            .await
            .map_err(|e| failure(FileErrorKind::Io, &root, &e.to_string()))??;
    let writer = writer.trust_sender();
    // Data from the caller only (this writer trusts its sender with
    // set-id bits and owners); the channel ends if it dies.
    let mut data = Channel::open_bulk(&env.router, env.me, env.src)
        .await
        .map_err(|e| failure(FileErrorKind::Io, &root, &e.to_string()))?;
    let handle = data.handle();
    let acks = Sender::new(env.router.clone(), env.me, ack.context, ack.handle);
    let me = env.me;
    let root_text = root.to_string_lossy().into_owned();
    actix::spawn(async move {
        let r = Receive {
            window,
            chunk,
            stall: STALL,
            host: LOCAL_HOST,
            path: &root_text,
        };
        let (errors, files, bytes) = match receive(&r, &mut data, &acks, writer, |_, _| {}).await {
            Ok(got) => {
                BYTES_IN.fetch_add(got.bytes, std::sync::atomic::Ordering::Relaxed);
                (got.errors, got.files, got.bytes)
            }
            Err(e) => (vec![e], 0, 0),
        };
        for e in &errors {
            let _ = acks.send(&(proto::A_ERROR, -1, wire_error(e))).await;
        }
        let _ = acks.send(&(proto::A_CREDIT, bytes, files)).await;
        let _ = acks.send(&(proto::A_DONE, me, files, bytes)).await;
    });
    let resume: Vec<Value> = resume
        .into_iter()
        .map(|(i, off, sha)| Value::Array(vec![i.into(), off.into(), sha.into()]))
        .collect();
    Ok(Value::Map(vec![
        (Value::from("handle"), Value::from(handle)),
        (Value::from("resume"), Value::Array(resume)),
    ]))
}

async fn send_begin(
    env: CallEnv,
    src: Vec<u8>,
    tree: bool,
    data: SenderRef,
    opts: Value,
) -> Result<Value, FileError> {
    let src = path_of(&src);
    let io = |e: std::io::Error| FileError::local(&src, &e);
    let entries = if tree {
        manifest::of_tree(&src).map_err(io)?
    } else {
        vec![manifest::of_file(&src, b"").map_err(io)?]
    };
    let sources: Vec<Option<PathBuf>> = entries
        .iter()
        .map(|e| e.is_file().then(|| manifest::join(&src, e.rel())))
        .collect();
    let window = opt_u64(&opts, "window", 1 << 20).max(1);
    let chunk = opt_u64(&opts, "chunk", 256 << 10).clamp(4096, 16 << 20) as usize;
    // Acks come from the caller only; the channel ends if it dies.
    let acks = Channel::open(&env.router, env.me, Some(env.src))
        .await
        .map_err(|e| failure(FileErrorKind::Io, &src, &e.to_string()))?;
    let handle = acks.handle();
    let out = Sender::new(env.router.clone(), env.me, data.context, data.handle);
    let reply = Value::Map(vec![
        (Value::from("ack"), Value::from(handle)),
        (
            Value::from("entries"),
            rmpv::ext::to_value(&entries)
                .map_err(|e| failure(FileErrorKind::Io, &src, &e.to_string()))?,
        ),
    ]);
    actix::spawn(stream_out(acks, out, entries, sources, window, chunk));
    Ok(reply)
}

/// The sending pump: waits for the receiver's start (what to resume),
/// then sends every file's chunks while the window is open.
async fn stream_out(
    mut acks: Channel,
    out: Sender,
    entries: Vec<Entry>,
    sources: Vec<Option<PathBuf>>,
    window: u64,
    chunk: usize,
) {
    let start = match tokio::time::timeout(STALL, acks.next()).await {
        Ok(Some(m)) => m.decode::<Value>().ok(),
        _ => None,
    };
    let Some(resume) = start.as_ref().and_then(parse_start) else {
        return; // the receiver gave up (or never started): nothing to send
    };
    let (tx, mut rx) = mpsc::channel::<ReadItem>(4);
    if std::thread::Builder::new()
        .name("econtext-file-reader".into())
        .spawn(move || read_all(entries, sources, resume, chunk, None, tx))
        .is_err()
    {
        return;
    }
    let mut w = Window::new(window);
    loop {
        tokio::select! {
            item = rx.recv(), if w.open() => match item {
                Some(ReadItem::Chunk { frame, len }) => {
                    if out.send_bulk(frame).await.is_err() {
                        return;
                    }
                    w.sent(len);
                }
                Some(ReadItem::Skipped(_)) => {}
                Some(ReadItem::Fail { index, error }) => {
                    let wire = (error.kind.as_str(), &error.path, &error.detail);
                    if out.send(&(proto::D_FAIL, index, wire)).await.is_err() {
                        return;
                    }
                }
                None => {
                    let _ = out.send(&(proto::D_END,)).await;
                    return until_done(acks).await;
                }
            },
            m = tokio::time::timeout(STALL, acks.next()) => match m {
                Ok(Some(m)) => {
                    if let Ok(proto::Ack::Credit { bytes, .. }) =
                        m.decode::<Value>().map_err(|e| e.to_string()).and_then(|v| proto::decode_ack(&v))
                    {
                        w.credit(bytes);
                    }
                }
                // Dead (the receiver abandoned it), or no credit for too
                // long: stop; dropping rx stops the reader thread.
                _ => return,
            },
        }
    }
}

/// After the end: the receiver's credits for the last window are still
/// on their way, so the ack handle stays until it says done (or gives
/// up, or goes quiet for [`STALL`]); a late credit never meets a closed
/// handle.
async fn until_done(mut acks: Channel) {
    while let Ok(Some(m)) = tokio::time::timeout(STALL, acks.next()).await {
        let ack = m.decode::<Value>().map_err(|e| e.to_string());
        if !matches!(
            ack.and_then(|v| proto::decode_ack(&v)),
            Ok(proto::Ack::Credit { .. })
        ) {
            return;
        }
    }
}

/// `[5, [[index, offset, sha256_hex], ...]]`: where to resume each file.
fn parse_start(v: &Value) -> Option<HashMap<u32, (u64, String)>> {
    let a = v.as_array()?;
    if a.first()?.as_u64()? != proto::A_START as u64 {
        return None;
    }
    let mut out = HashMap::new();
    for r in a.get(1)?.as_array()? {
        let (i, off, sha) = (r[0].as_u64()?, r[1].as_u64()?, r[2].as_str()?);
        out.insert(u32::try_from(i).ok()?, (off, sha.to_string()));
    }
    Some(out)
}
