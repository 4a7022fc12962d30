//! Typed transfer errors: what went wrong, on which host, with which path.

use thiserror::Error;

/// What kind of failure a [`FileError`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum FileErrorKind {
    /// The source (or the destination's directory) does not exist.
    NotFound,
    /// Not allowed to read the source or write the destination.
    PermissionDenied,
    /// The destination's filesystem is full (or over quota).
    NoSpace,
    /// The source changed (size or mtime) while it was read.
    Changed,
    /// What arrived does not hash to what the sender read.
    Checksum,
    /// A directory stands where a file was wanted.
    IsADirectory,
    /// A file stands where a directory was wanted.
    NotADirectory,
    /// The context (or the route to it) went away mid-transfer.
    ConnectionLost,
    /// The peer broke the file protocol (a hostile or broken child).
    Protocol,
    /// Any other I/O error.
    Io,
}

impl FileErrorKind {
    /// The kind named on the wire (`econtext.files` sends these).
    pub fn from_wire(s: &str) -> FileErrorKind {
        match s {
            "not_found" => FileErrorKind::NotFound,
            "permission_denied" => FileErrorKind::PermissionDenied,
            "no_space" => FileErrorKind::NoSpace,
            "changed" => FileErrorKind::Changed,
            "checksum" => FileErrorKind::Checksum,
            "is_a_directory" => FileErrorKind::IsADirectory,
            "not_a_directory" => FileErrorKind::NotADirectory,
            "connection_lost" => FileErrorKind::ConnectionLost,
            "protocol" => FileErrorKind::Protocol,
            _ => FileErrorKind::Io,
        }
    }

    /// The wire name, also used in `--json` output.
    pub fn as_str(self) -> &'static str {
        match self {
            FileErrorKind::NotFound => "not_found",
            FileErrorKind::PermissionDenied => "permission_denied",
            FileErrorKind::NoSpace => "no_space",
            FileErrorKind::Changed => "changed",
            FileErrorKind::Checksum => "checksum",
            FileErrorKind::IsADirectory => "is_a_directory",
            FileErrorKind::NotADirectory => "not_a_directory",
            FileErrorKind::ConnectionLost => "connection_lost",
            FileErrorKind::Protocol => "protocol",
            FileErrorKind::Io => "io",
        }
    }

    /// Classifies a local I/O error (by errno: the io::ErrorKind names
    /// for these are newer than our minimum Rust).
    pub fn from_io(e: &std::io::Error) -> FileErrorKind {
        use nix::errno::Errno;
        match e.raw_os_error().map(Errno::from_raw) {
            Some(Errno::ENOENT) => FileErrorKind::NotFound,
            Some(Errno::EACCES | Errno::EPERM | Errno::EROFS) => FileErrorKind::PermissionDenied,
            Some(Errno::ENOSPC | Errno::EDQUOT) => FileErrorKind::NoSpace,
            Some(Errno::EISDIR) => FileErrorKind::IsADirectory,
            Some(Errno::ENOTDIR) => FileErrorKind::NotADirectory,
            _ if e.kind() == std::io::ErrorKind::NotFound => FileErrorKind::NotFound,
            _ if e.kind() == std::io::ErrorKind::PermissionDenied => {
                FileErrorKind::PermissionDenied
            }
            _ => FileErrorKind::Io,
        }
    }
}

impl std::fmt::Display for FileErrorKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A transfer failed for one path on one host.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("{host}:{path}: {kind}: {detail}")]
pub struct FileError {
    pub kind: FileErrorKind,
    /// The context's name, or `local` for this process's side.
    pub host: String,
    /// The path on that host (lossy UTF-8 for display).
    pub path: String,
    pub detail: String,
}

impl FileError {
    pub fn new(
        kind: FileErrorKind,
        host: impl Into<String>,
        path: impl Into<String>,
        detail: impl Into<String>,
    ) -> Self {
        FileError {
            kind,
            host: host.into(),
            path: path.into(),
            detail: detail.into(),
        }
    }

    /// A local I/O error on `path`.
    pub fn local(path: &std::path::Path, e: &std::io::Error) -> Self {
        FileError::new(
            FileErrorKind::from_io(e),
            LOCAL_HOST,
            path.to_string_lossy(),
            e.to_string(),
        )
    }
}

/// The `host` of errors on this process's side of a transfer.
pub const LOCAL_HOST: &str = "local";
