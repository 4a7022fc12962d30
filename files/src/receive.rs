//! The receiving pump, shared by a pull (this process receives from a
//! child) and by a Rust context's `econtext.files` receiver (a push to
//! it): data messages from a channel go to a [`LocalWriter`] on a writer
//! thread, credits go back as it writes.
//!
//! The sender is checked: data beyond the granted window fails the
//! transfer ([`Inflow`]), and every wait is bounded by the stall timeout.

use std::time::Duration;

use econtext_actors::{Channel, Sender};
use futures::StreamExt;
use tokio::sync::mpsc;

use crate::error::{FileError, FileErrorKind};
use crate::proto::{self, Data, Inflow};
use crate::writer::LocalWriter;

enum Job {
    Chunk {
        index: u32,
        offset: u64,
        data: bytes::Bytes,
        sha: Option<String>,
    },
    Bulk {
        index: u32,
        offset: u64,
        data: bytes::Bytes,
        sha256: [u8; proto::DIGEST_LEN],
        last: bool,
    },
    Fail(u32),
    End,
}

enum Written {
    Progress { bytes: u64, files: u64 },
    Error(FileError),
    Finished(Vec<FileError>),
}

/// How one receive is run, and what its errors name.
pub(crate) struct Receive<'a> {
    pub window: u64,
    pub chunk: u64,
    pub stall: Duration,
    /// Who sends (for errors about the sender).
    pub host: &'a str,
    pub path: &'a str,
}

/// What a finished receive did.
pub(crate) struct Received {
    pub files: u64,
    pub bytes: u64,
    /// Files that failed (the transfer itself went to its end).
    pub errors: Vec<FileError>,
}

/// Receives one transfer into `writer` until the sender's end marker.
/// `progress(bytes_written, files_done)` is called as the writer advances.
pub(crate) async fn receive(
    r: &Receive<'_>,
    data: &mut Channel,
    ack: &Sender,
    mut writer: LocalWriter,
    mut progress: impl FnMut(u64, u64),
) -> Result<Received, FileError> {
    let proto_err = |why: String| FileError::new(FileErrorKind::Protocol, r.host, r.path, why);
    let lost = |why: String| FileError::new(FileErrorKind::ConnectionLost, r.host, r.path, why);
    // The writer thread: jobs in (bounded: the window is the real bound),
    // progress out.
    let depth = (r.window / r.chunk.max(1)).max(4) as usize + 4;
    let (jobs, job_rx) = std::sync::mpsc::sync_channel::<Job>(depth);
    let (out_tx, mut out) = mpsc::unbounded_channel::<Written>();
    std::thread::Builder::new()
        .name("econtext-file-writer".into())
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
                    Job::Bulk {
                        index,
                        offset,
                        data,
                        sha256,
                        last,
                    } => {
                        if let Err(e) = writer.bulk_chunk(index, offset, &data, &sha256, last) {
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

    let mut inflow = Inflow::new(r.window, r.chunk + 4096);
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
                    if written - credited >= r.window / 4 && !ended {
                        credited = written;
                        inflow.granted(written);
                        let _ = ack.send(&(proto::A_CREDIT, written, files)).await;
                    }
                }
                Some(Written::Error(mut e)) => {
                    if e.kind == FileErrorKind::Checksum && r.host != crate::LOCAL_HOST {
                        // The bytes came from the sender: say which.
                        e.detail = format!("{} (sent by {})", e.detail, r.host);
                    }
                    errors.push(e)
                }
                Some(Written::Finished(errs)) => break errs,
                None => return Err(proto_err("writer thread stopped".into())),
            },
            m = tokio::time::timeout(r.stall, data.next()), if !ended => {
                let m = match m {
                    Err(_) => {
                        let _ = jobs_send(&jobs, Job::End);
                        return Err(lost(format!("no data for {:?}", r.stall)));
                    }
                    Ok(None) => {
                        let why = data.dead_reason().map(|r| r.to_string()).unwrap_or_else(|| "closed".into());
                        let _ = jobs_send(&jobs, Job::End);
                        return Err(lost(why));
                    }
                    Ok(Some(m)) => m,
                };
                let decoded = match m.bulk {
                    true => proto::decode_bulk(&m.data),
                    false => proto::decode_data(&m.data),
                };
                match decoded {
                    Ok(Data::Chunk { index, offset, data, sha }) => {
                        inflow.received(data.len() as u64).map_err(&proto_err)?;
                        jobs_send(&jobs, Job::Chunk { index, offset, data, sha })?;
                    }
                    Ok(Data::Bulk { index, offset, data, sha256, last }) => {
                        inflow.received(data.len() as u64).map_err(&proto_err)?;
                        jobs_send(&jobs, Job::Bulk { index, offset, data, sha256, last })?;
                    }
                    Ok(Data::Fail { index, error }) => {
                        errors.push(error.on(r.host));
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
        progress(written, files);
    };
    errors.extend(finished);
    progress(written, files);
    Ok(Received {
        files,
        bytes: written,
        errors,
    })
}
