//! Pull: a context's `econtext.files` sender streams files to this
//! process, which writes them with [`LocalWriter`] on a writer thread.
//!
//! The child is not trusted: its manifest is checked before anything is
//! written, data beyond the granted window fails the transfer
//! ([`Inflow`]), and every wait is bounded by the stall timeout.

use std::path::PathBuf;
use std::time::Instant;

use econtext_actors::{Channel, Context, Sender};
use econtext_wire::Value;
use serde_bytes::ByteBuf;

use crate::error::{FileError, FileErrorKind};
use crate::manifest::Entry;
use crate::options::{TransferOptions, TransferReport};
use crate::progress::ProgressMeter;
use crate::proto;
use crate::push::call_error;
use crate::receive::{receive, Receive};
use crate::writer::{check_manifest, LocalWriter};

fn get<'a>(v: &'a Value, key: &str) -> Option<&'a Value> {
    v.as_map()?
        .iter()
        .find(|(k, _)| k.as_str() == Some(key))
        .map(|(_, v)| v)
}

/// Where a pulled entry set lands: `dest` itself for a file (or
/// `dest/<name>` when `dest` is a directory), `dest` as the root of a tree.
pub(crate) async fn pull(
    ctx: &Context,
    src: &[u8],
    tree: bool,
    dest: PathBuf,
    opts: &TransferOptions,
) -> Result<TransferReport, FileError> {
    let started = Instant::now();
    let host = ctx.name().to_string();
    let src_text = String::from_utf8_lossy(src).into_owned();
    let proto_err = |why: String| FileError::new(FileErrorKind::Protocol, &host, &src_text, why);
    let mut data = Channel::open_bulk(ctx.router(), ctx.me(), ctx.id())
        .await
        .map_err(|e| call_error(&host, &src_text, e))?;
    let o = Value::Map(vec![
        (Value::from("window"), Value::from(opts.window)),
        (Value::from("chunk"), Value::from(opts.chunk as u64)),
    ]);
    let reply: Value = ctx
        .call_with("econtext.files", "send_begin")
        .args((ByteBuf::from(src.to_vec()), tree, data.sender(), o))
        .map_err(|e| call_error(&host, &src_text, e))?
        .timeout(opts.stall_timeout)
        .returning()
        .await
        .map_err(|e| call_error(&host, &src_text, e))?;
    if let Some(err) = get(&reply, "error") {
        if let Ok(proto::Ack::Error { error, .. }) =
            proto::decode_ack(&Value::Array(vec![1.into(), (-1).into(), err.clone()]))
        {
            return Err(error.on(&host));
        }
        return Err(proto_err("bad error reply".into()));
    }
    let ack_handle = get(&reply, "ack")
        .and_then(|h| h.as_u64())
        .and_then(|h| u32::try_from(h).ok())
        .ok_or_else(|| proto_err("no ack handle".into()))?;
    // From here the child's sender waits on us: tell it if we give up.
    let mut guard = crate::guard::AbandonGuard::new(ctx, ack_handle);
    let entries: Vec<Entry> = get(&reply, "entries")
        .cloned()
        .ok_or_else(|| proto_err("no manifest".into()))
        .and_then(|v| rmpv::ext::from_value(v).map_err(|e| proto_err(format!("manifest: {e}"))))?;
    check_manifest(&entries, tree, &host).map_err(proto_err)?;
    let dest = if !tree && std::fs::metadata(&dest).is_ok_and(|m| m.is_dir()) {
        let name = std::path::Path::new(std::ffi::OsStr::new(&*String::from_utf8_lossy(
            src.rsplit(|b| *b == b'/').next().unwrap_or(b"file"),
        )))
        .to_path_buf();
        dest.join(name)
    } else {
        dest
    };
    let files_total = entries.len() as u64;
    let bytes_total: u64 = entries
        .iter()
        .filter(|e| e.is_file())
        .map(|e| e.size())
        .sum();
    let (writer, resume) = tokio::task::spawn_blocking({
        let (dest, entries, fsync) = (dest.clone(), entries.clone(), opts.fsync);
        move || LocalWriter::begin(dest, entries, tree, fsync)
    })
    .await
    .map_err(|e| proto_err(e.to_string()))?
    .map_err(|mut e| {
        e.host = crate::LOCAL_HOST.into();
        e
    })?;
    let resumed: u64 = resume.iter().map(|r| r.1).sum();
    let ack = Sender::new(ctx.router().clone(), ctx.me(), ctx.id(), ack_handle);
    let lost = |why: String| FileError::new(FileErrorKind::ConnectionLost, &host, &src_text, why);
    ack.send(&(proto::A_START, &resume))
        .await
        .map_err(|e| lost(e.to_string()))?;

    let mut meter = ProgressMeter::new(&host, started, bytes_total, files_total);
    let r = Receive {
        window: opts.window,
        chunk: opts.chunk as u64,
        stall: opts.stall_timeout,
        host: &host,
        path: &src_text,
    };
    let got = receive(&r, &mut data, &ack, writer, |written, files| {
        if let (Some(f), Some(p)) = (
            &opts.progress,
            meter.update(Instant::now(), written + resumed, files, false),
        ) {
            f(&p);
        }
    })
    .await?;
    let (files, written, errors) = (got.files, got.bytes, got.errors);
    // The sender keeps its ack handle for our last credits until this.
    guard.disarm();
    let _ = ack.send(&(proto::A_DONE, ctx.me(), files, written)).await;
    if let (Some(f), Some(p)) = (
        &opts.progress,
        meter.update(Instant::now(), written + resumed, files, true),
    ) {
        f(&p);
    }
    if let Some(e) = errors.into_iter().next() {
        return Err(e);
    }
    Ok(TransferReport {
        host,
        files,
        bytes: bytes_total,
        bytes_sent: written,
        bytes_resumed: resumed,
        elapsed: started.elapsed(),
    })
}
