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
use futures::StreamExt;
use serde_bytes::ByteBuf;
use tokio::sync::mpsc;

use crate::error::{FileError, FileErrorKind};
use crate::manifest::Entry;
use crate::options::{TransferOptions, TransferReport};
use crate::progress::ProgressMeter;
use crate::proto::{self, Data, Inflow};
use crate::push::call_error;
use crate::writer::{check_manifest, LocalWriter};

enum Job {
    Chunk {
        index: u32,
        offset: u64,
        data: bytes::Bytes,
        sha: Option<String>,
    },
    Fail(u32),
    End,
}

enum Written {
    Progress { bytes: u64, files: u64 },
    Error(FileError),
    Finished(Vec<FileError>),
}

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
    let mut data = Channel::open(ctx.router(), ctx.me(), Some(ctx.id()))
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
    let (mut writer, resume) = tokio::task::spawn_blocking({
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

    // The writer thread: jobs in (bounded: the window is the real bound),
    // progress out.
    let depth = (opts.window as usize / opts.chunk.max(1)).max(4) + 4;
    let (jobs, job_rx) = std::sync::mpsc::sync_channel::<Job>(depth);
    let (out_tx, mut out) = mpsc::unbounded_channel::<Written>();
    std::thread::Builder::new()
        .name("econtext-pull-writer".into())
        .spawn(move || {
            let mut last = (0, 0);
            for job in job_rx {
                match job {
                    Job::Chunk {
                        index,
                        offset,
                        data,
                        sha,
                    } => {
                        if let Err(e) = writer.chunk(index, offset, &data, sha.as_deref()) {
                            let _ = out_tx.send(Written::Error(e));
                        }
                    }
                    Job::Fail(i) => writer.discard(i),
                    Job::End => {
                        let errs = writer.end();
                        let _ = out_tx.send(Written::Progress {
                            bytes: writer.bytes_written,
                            files: writer.files_done,
                        });
                        let _ = out_tx.send(Written::Finished(errs));
                        return;
                    }
                }
                if (writer.bytes_written, writer.files_done) != last {
                    last = (writer.bytes_written, writer.files_done);
                    let _ = out_tx.send(Written::Progress {
                        bytes: last.0,
                        files: last.1,
                    });
                }
            }
        })
        .map_err(|e| FileError::local(std::path::Path::new("writer thread"), &e))?;

    let mut inflow = Inflow::new(opts.window, opts.chunk as u64 + 4096);
    let mut meter = ProgressMeter::new(&host, started, bytes_total, files_total);
    let (mut credited, mut written, mut files) = (0u64, 0u64, 0u64);
    let mut errors: Vec<FileError> = Vec::new();
    let mut ended = false;
    let jobs_send = |jobs: &std::sync::mpsc::SyncSender<Job>, j: Job| {
        // Never blocks for long: the sender cannot exceed the window.
        jobs.send(j)
            .map_err(|_| proto_err("writer thread stopped".into()))
    };
    let finished = loop {
        tokio::select! {
            w = out.recv() => match w {
                Some(Written::Progress { bytes, files: f }) => {
                    written = bytes;
                    files = f;
                    if written - credited >= opts.window / 4 && !ended {
                        credited = written;
                        inflow.granted(written);
                        let _ = ack.send(&(proto::A_CREDIT, written, files)).await;
                    }
                }
                Some(Written::Error(e)) => errors.push(e),
                Some(Written::Finished(errs)) => break errs,
                None => return Err(proto_err("writer thread stopped".into())),
            },
            m = tokio::time::timeout(opts.stall_timeout, data.next()), if !ended => {
                let m = match m {
                    Err(_) => {
                        let _ = jobs_send(&jobs, Job::End);
                        return Err(lost(format!("no data for {:?}", opts.stall_timeout)));
                    }
                    Ok(None) => {
                        let why = data.dead_reason().map(|r| r.to_string()).unwrap_or_else(|| "closed".into());
                        let _ = jobs_send(&jobs, Job::End);
                        return Err(lost(why));
                    }
                    Ok(Some(m)) => m,
                };
                match proto::decode_data(&m.data) {
                    Ok(Data::Chunk { index, offset, data, sha }) => {
                        inflow.received(data.len() as u64).map_err(&proto_err)?;
                        jobs_send(&jobs, Job::Chunk { index, offset, data, sha })?;
                    }
                    Ok(Data::Fail { index, error }) => {
                        errors.push(error.on(&host));
                        jobs_send(&jobs, Job::Fail(index))?;
                    }
                    Ok(Data::End) => {
                        ended = true;
                        jobs_send(&jobs, Job::End)?;
                    }
                    Err(why) => {
                        let _ = jobs_send(&jobs, Job::End);
                        return Err(proto_err(why));
                    }
                }
            }
        }
        if let (Some(f), Some(p)) = (
            &opts.progress,
            meter.update(Instant::now(), written + resumed, files, false),
        ) {
            f(&p);
        }
    };
    errors.extend(finished);
    guard.disarm();
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
