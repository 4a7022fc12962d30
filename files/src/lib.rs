//! econtext-files: push and pull files and trees through the context tree.
//!
//! [`FilesExt`] adds to every [`Context`]:
//!
//! - [`FilesExt::push`] / [`FilesExt::push_tree`]: local file or tree to
//!   the context, into a temporary file beside each destination, SHA-256
//!   checked, renamed into place (fsynced first with
//!   [`TransferOptions::fsync`]) with mode and mtime (and, when
//!   the receiver runs as root, owner); symlinks stay links; a rerun after
//!   an interruption resumes after the last verified byte;
//! - [`FilesExt::pull`] / [`FilesExt::pull_tree`]: the same in the other
//!   direction, with everything the child says checked;
//! - [`FilesExt::push_fanout`]: one push to many children of an
//!   intermediate, crossing the link above it once.
//!
//! The principal types: [`TransferOptions`] (window, chunk, fsync,
//! progress callback), [`TransferReport`], [`Progress`], and the typed
//! [`FileError`] (kind, host, path). The far side is the `econtext.files`
//! module of the Python core (`bootstrap/python/econtext_files.py`),
//! served built in and imported on first use. Protocol logic (window,
//! messages, manifest checks) is plain data in [`proto`] and [`manifest`];
//! [`push`] and [`pull`] are the pumps, with a reader or writer thread
//! each so disk and hashing never run on the actor thread. [`service`]
//! is `econtext.files` in a Rust context, and [`relay`] its side of a
//! fan-out when it is the intermediate.

pub mod error;
mod guard;
pub mod manifest;
pub mod options;
pub mod progress;
pub mod proto;
mod pull;
mod push;
mod receive;
pub mod relay;
pub mod service;
pub mod stale;
pub mod writer;

use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

pub use error::{FileError, FileErrorKind, LOCAL_HOST};
pub use options::{FanoutResult, TransferOptions, TransferReport};
pub use progress::{Progress, ProgressFn};

use econtext_actors::Context;
use push::PushPlan;

fn bytes(p: &Path) -> Vec<u8> {
    p.as_os_str().as_bytes().to_vec()
}

/// Where a single-file push lands: `dest`, or `dest/<name of src>` when
/// `dest` ends with `/`.
fn file_plan(src: &Path, dest: &Path) -> Result<PushPlan, FileError> {
    let d = bytes(dest);
    let src_name = src
        .file_name()
        .map(|n| n.as_bytes().to_vec())
        .unwrap_or_else(|| b"file".to_vec());
    let (root, name) = if d.ends_with(b"/") || d.is_empty() {
        (d, src_name)
    } else {
        let parent = dest.parent().map(bytes).unwrap_or_default();
        let name = dest
            .file_name()
            .map(|n| n.as_bytes().to_vec())
            .unwrap_or(src_name);
        (
            if parent.is_empty() {
                b".".to_vec()
            } else {
                parent
            },
            name,
        )
    };
    let entry = manifest::of_file(src, &name).map_err(|e| FileError::local(src, &e))?;
    Ok(PushPlan {
        root,
        entries: vec![entry],
        sources: vec![Some(src.to_path_buf())],
        src_name: src.file_name().map(|n| n.as_bytes().to_vec()),
    })
}

fn tree_plan(src: &Path, dest: &Path) -> Result<PushPlan, FileError> {
    let entries = manifest::of_tree(src).map_err(|e| FileError::local(src, &e))?;
    let sources = entries
        .iter()
        .map(|e| e.is_file().then(|| manifest::join(src, e.rel())))
        .collect();
    Ok(PushPlan {
        root: bytes(dest),
        entries,
        sources,
        src_name: None,
    })
}

fn single(ctx: &Context, r: Result<FanoutResult, FileError>) -> Result<TransferReport, FileError> {
    r?.into_iter()
        .find(|(c, _)| *c == ctx.id())
        .map(|(_, r)| r)
        .unwrap_or_else(|| {
            Err(FileError::new(
                FileErrorKind::Protocol,
                ctx.name(),
                "",
                "no result",
            ))
        })
}

/// File transfers on a [`Context`]. Paths on the far side are taken as
/// bytes (`Path`), so any Unix name works.
#[allow(async_fn_in_trait)]
pub trait FilesExt {
    /// Pushes one local file (or symlink) to `dest` in this context
    /// (`dest/` or an existing directory: inside it, under its own name).
    async fn push(
        &self,
        src: impl AsRef<Path>,
        dest: impl AsRef<Path>,
    ) -> Result<TransferReport, FileError> {
        self.push_with(src, dest, &TransferOptions::default()).await
    }

    async fn push_with(
        &self,
        src: impl AsRef<Path>,
        dest: impl AsRef<Path>,
        opts: &TransferOptions,
    ) -> Result<TransferReport, FileError>;

    /// Pushes the local directory `src` so that `dest` becomes a copy of
    /// it (created if missing; files not in `src` are left alone).
    async fn push_tree(
        &self,
        src: impl AsRef<Path>,
        dest: impl AsRef<Path>,
    ) -> Result<TransferReport, FileError> {
        self.push_tree_with(src, dest, &TransferOptions::default())
            .await
    }

    async fn push_tree_with(
        &self,
        src: impl AsRef<Path>,
        dest: impl AsRef<Path>,
        opts: &TransferOptions,
    ) -> Result<TransferReport, FileError>;

    /// Pulls the file `src` of this context to the local `dest` (inside
    /// it when it is an existing directory).
    async fn pull(
        &self,
        src: impl AsRef<Path>,
        dest: impl AsRef<Path>,
    ) -> Result<TransferReport, FileError> {
        self.pull_with(src, dest, &TransferOptions::default()).await
    }

    async fn pull_with(
        &self,
        src: impl AsRef<Path>,
        dest: impl AsRef<Path>,
        opts: &TransferOptions,
    ) -> Result<TransferReport, FileError>;

    /// Pulls the directory `src` of this context so that the local `dest`
    /// becomes a copy of it.
    async fn pull_tree(
        &self,
        src: impl AsRef<Path>,
        dest: impl AsRef<Path>,
    ) -> Result<TransferReport, FileError> {
        self.pull_tree_with(src, dest, &TransferOptions::default())
            .await
    }

    async fn pull_tree_with(
        &self,
        src: impl AsRef<Path>,
        dest: impl AsRef<Path>,
        opts: &TransferOptions,
    ) -> Result<TransferReport, FileError>;

    /// Pushes one file to each of `targets`, children of this context
    /// (an intermediate), sending it across the link to this context once.
    /// `tree` pushes a directory instead.
    async fn push_fanout(
        &self,
        targets: &[Context],
        src: impl AsRef<Path>,
        dest: impl AsRef<Path>,
        tree: bool,
        opts: &TransferOptions,
    ) -> Result<FanoutResult, FileError>;
}

impl FilesExt for Context {
    async fn push_with(
        &self,
        src: impl AsRef<Path>,
        dest: impl AsRef<Path>,
        opts: &TransferOptions,
    ) -> Result<TransferReport, FileError> {
        let plan = file_plan(src.as_ref(), dest.as_ref())?;
        single(self, push::push(self, plan, opts, &[]).await)
    }

    async fn push_tree_with(
        &self,
        src: impl AsRef<Path>,
        dest: impl AsRef<Path>,
        opts: &TransferOptions,
    ) -> Result<TransferReport, FileError> {
        let plan = tree_plan(src.as_ref(), dest.as_ref())?;
        single(self, push::push(self, plan, opts, &[]).await)
    }

    async fn pull_with(
        &self,
        src: impl AsRef<Path>,
        dest: impl AsRef<Path>,
        opts: &TransferOptions,
    ) -> Result<TransferReport, FileError> {
        pull::pull(
            self,
            &bytes(src.as_ref()),
            false,
            PathBuf::from(dest.as_ref()),
            opts,
        )
        .await
    }

    async fn pull_tree_with(
        &self,
        src: impl AsRef<Path>,
        dest: impl AsRef<Path>,
        opts: &TransferOptions,
    ) -> Result<TransferReport, FileError> {
        pull::pull(
            self,
            &bytes(src.as_ref()),
            true,
            PathBuf::from(dest.as_ref()),
            opts,
        )
        .await
    }

    async fn push_fanout(
        &self,
        targets: &[Context],
        src: impl AsRef<Path>,
        dest: impl AsRef<Path>,
        tree: bool,
        opts: &TransferOptions,
    ) -> Result<FanoutResult, FileError> {
        let plan = if tree {
            tree_plan(src.as_ref(), dest.as_ref())?
        } else {
            file_plan(src.as_ref(), dest.as_ref())?
        };
        if targets.is_empty() {
            return Ok(Vec::new());
        }
        push::push(self, plan, opts, targets).await
    }
}
