//! What `copy` and `fetch` share: how their contexts start, the
//! bytes/rate progress bar on a terminal, a transfer's result as a host's
//! output, and how a [`FileError`] maps onto the fleet's statuses.

use std::collections::HashMap;
use std::io::IsTerminal;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use econtext::actors::DeadReason;
use econtext::files::{Progress, ProgressFn};
use econtext::fleet::FleetError;
use econtext::{FileError, FileErrorKind, ManyHosts, Master, TransferReport};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde_json::json;

use super::report::HostOutput;

/// How `copy` and `fetch` start their contexts: `econtext.files` needs
/// only the standard library, so no second interpreter and no `site`
/// (the lean start), and it comes with the payload instead of a
/// GET_MODULE round trip before the first transfer.
pub fn hosts(master: &Master) -> ManyHosts {
    ManyHosts::new(master.clone())
        .lean_start(true)
        .preload(&["econtext.files"])
}

/// Totals over the transfers one host makes (one per SRC).
#[derive(Default)]
pub struct Totals {
    pub files: u64,
    pub bytes: u64,
    pub bytes_sent: u64,
    pub bytes_resumed: u64,
    pub elapsed: Duration,
}

impl Totals {
    pub fn add(&mut self, r: &TransferReport) {
        self.files += r.files;
        self.bytes += r.bytes;
        self.bytes_sent += r.bytes_sent;
        self.bytes_resumed += r.bytes_resumed;
        self.elapsed += r.elapsed;
    }

    /// The host's `result` (JSON) and a one-line summary as its stdout.
    pub fn output(&self, dest: &str) -> HostOutput {
        let secs = self.elapsed.as_secs_f64();
        let rate = if secs > 0.0 {
            self.bytes as f64 / secs
        } else {
            0.0
        };
        HostOutput {
            ok: true,
            result: Some(
                json!({
                    "dest": dest,
                    "files": self.files,
                    "bytes": self.bytes,
                    "bytes_sent": self.bytes_sent,
                    "bytes_resumed": self.bytes_resumed,
                    "rate": rate.round(),
                })
                .into(),
            ),
            ..Default::default()
        }
    }
}

/// A transfer that failed: a lost connection is the host dying (exit 3);
/// anything else (missing source, no permission, full disk, a file that
/// changed) is the host failing (exit 1), with the typed error's kind,
/// host and path in the JSON result.
pub fn failed(e: FileError) -> Result<HostOutput, FleetError> {
    if e.kind == FileErrorKind::ConnectionLost {
        return Err(FleetError::Died(DeadReason::Other(e.to_string())));
    }
    Ok(HostOutput {
        ok: false,
        result: Some(
            json!({
                "kind": e.kind.as_str(),
                "host": e.host,
                "path": e.path,
                "detail": e.detail,
            })
            .into(),
        ),
        error: Some(e.to_string()),
        ..Default::default()
    })
}

/// Bytes and rate summed over every host, as one bar on stderr (only on
/// a terminal, and only without a host-count bar: one target).
pub struct BytesBar {
    bar: ProgressBar,
    hosts: Mutex<HashMap<String, (u64, u64)>>,
}

impl BytesBar {
    pub fn new(enabled: bool) -> Option<Arc<BytesBar>> {
        if !enabled || !std::io::stderr().is_terminal() {
            return None;
        }
        let bar = ProgressBar::with_draw_target(Some(0), ProgressDrawTarget::stderr());
        bar.set_style(
            ProgressStyle::with_template(
                "[{elapsed_precise}] {bytes}/{total_bytes} {binary_bytes_per_sec} {msg}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        Some(Arc::new(BytesBar {
            bar,
            hosts: Mutex::new(HashMap::new()),
        }))
    }

    /// The progress callback for transfers, or None without a bar.
    pub fn callback(this: &Option<Arc<BytesBar>>) -> Option<ProgressFn> {
        let b = this.clone()?;
        Some(Arc::new(move |p: &Progress| b.update(p)))
    }

    fn update(&self, p: &Progress) {
        let mut h = self.hosts.lock().unwrap_or_else(|e| e.into_inner());
        h.insert(p.host.clone(), (p.bytes, p.bytes_total));
        let (done, total) = h.values().fold((0, 0), |a, v| (a.0 + v.0, a.1 + v.1));
        self.bar.set_length(total);
        self.bar.set_position(done);
        self.bar
            .set_message(format!("{} files", p.files.min(p.files_total)));
    }

    pub fn finish(&self) {
        self.bar.finish_and_clear();
    }
}
