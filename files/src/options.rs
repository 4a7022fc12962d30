//! Options and results of a transfer.

use std::time::Duration;

use crate::error::FileError;
use crate::progress::ProgressFn;

/// How a transfer runs. `Default` is what `econtext copy` uses.
#[derive(Clone)]
#[non_exhaustive]
pub struct TransferOptions {
    /// Bytes in flight per transfer (sent, not yet written by the
    /// receiver). Bounds the memory every hop spends on it, and how long a
    /// call queued behind it waits (window / link speed): over ssh nearly
    /// all of it sits in ssh's and the pipes' buffers, where a call cannot
    /// overtake it. 1 MiB by default (4 chunks; about 4 ms at 250 MB/s):
    /// 2 MiB doubled that wait, and pushes of 256 MiB over ssh were no
    /// faster with it here (A/B runs on the loaded 2-core machine).
    pub window: u64,
    /// Bytes per data message.
    pub chunk: usize,
    /// fsync each file before renaming it into place: durable across a
    /// power cut or a kernel crash once the transfer has reported
    /// success. Off (the default, like `cat > f`, `tar -x`, `scp`,
    /// `rsync` and Ansible's copy): still atomic (a reader sees the old
    /// file or the new one, never a mix), but a crash shortly after the
    /// transfer can leave the previous version or an empty file at the
    /// destination, whatever the kernel had not written back yet.
    pub fsync: bool,
    /// A receiver that neither writes nor acks for this long fails the
    /// transfer (`ConnectionLost`): every wait has a bound.
    pub stall_timeout: Duration,
    /// Called with progress events.
    pub progress: Option<ProgressFn>,
    /// Tests only ([`TransferOptions::corrupt_after_sealing`]).
    #[cfg(feature = "fault-injection")]
    #[doc(hidden)]
    pub corrupt_at: Option<u64>,
}

impl Default for TransferOptions {
    fn default() -> Self {
        TransferOptions {
            window: 1 << 20,
            chunk: 256 << 10,
            fsync: false,
            stall_timeout: Duration::from_secs(60),
            progress: None,
            #[cfg(feature = "fault-injection")]
            corrupt_at: None,
        }
    }
}

impl TransferOptions {
    pub fn window(mut self, bytes: u64) -> Self {
        self.window = bytes.max(1);
        self
    }

    pub fn chunk(mut self, bytes: usize) -> Self {
        self.chunk = bytes.clamp(4096, 16 << 20);
        self
    }

    pub fn fsync(mut self, on: bool) -> Self {
        self.fsync = on;
        self
    }

    pub fn stall_timeout(mut self, t: Duration) -> Self {
        self.stall_timeout = t;
        self
    }

    /// Tests only: the pushing reader flips one bit of the file byte at
    /// `offset` after that chunk's SHA-256 is computed, as a corruption
    /// on a link below the frame MAC would (a bulk frame's MAC does not
    /// cover the chunk's bytes): the receiver must refuse the chunk.
    /// Only with the `fault-injection` feature, which the workspace's
    /// tests and examples enable (a dev-dependency) and no build for use
    /// has.
    #[cfg(feature = "fault-injection")]
    #[doc(hidden)]
    pub fn corrupt_after_sealing(mut self, offset: u64) -> Self {
        self.corrupt_at = Some(offset);
        self
    }

    /// The offset [`TransferOptions::corrupt_after_sealing`] named: never
    /// one without the `fault-injection` feature.
    pub(crate) fn corrupt_at(&self) -> Option<u64> {
        #[cfg(feature = "fault-injection")]
        return self.corrupt_at;
        #[cfg(not(feature = "fault-injection"))]
        None
    }

    pub fn progress(mut self, f: impl Fn(&crate::Progress) + Send + Sync + 'static) -> Self {
        self.progress = Some(std::sync::Arc::new(f));
        self
    }
}

impl std::fmt::Debug for TransferOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TransferOptions")
            .field("window", &self.window)
            .field("chunk", &self.chunk)
            .field("fsync", &self.fsync)
            .field("stall_timeout", &self.stall_timeout)
            .finish()
    }
}

/// What one transfer did, on one host.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct TransferReport {
    pub host: String,
    /// Files and links written.
    pub files: u64,
    /// Bytes of file data in the transfer (resumed ones included).
    pub bytes: u64,
    /// Bytes actually sent by this process (less when resumed; once for
    /// all targets when relayed).
    pub bytes_sent: u64,
    /// Bytes skipped because a verified prefix was already there.
    pub bytes_resumed: u64,
    pub elapsed: Duration,
}

impl TransferReport {
    pub fn rate(&self) -> f64 {
        let s = self.elapsed.as_secs_f64();
        if s > 0.0 {
            self.bytes as f64 / s
        } else {
            0.0
        }
    }
}

/// The outcome on each target of a fanned-out push.
pub type FanoutResult = Vec<(econtext_wire::ContextId, Result<TransferReport, FileError>)>;
