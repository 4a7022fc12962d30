//! Writing a transfer into the local filesystem (the receiving side of a
//! pull): temporary files beside their destinations, SHA-256 checked,
//! fsync, rename. The sender is a child, so everything it says is checked:
//! paths stay under the root, no path goes through a symlink, sizes are
//! what the manifest said, and set-id bits and owners are never taken
//! from it.

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::io::{Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use nix::sys::stat::{utimensat, UtimensatFlags};
use nix::sys::time::TimeSpec;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::error::{FileError, FileErrorKind, LOCAL_HOST};
use crate::manifest::{self, Entry, KIND_DIR, KIND_FILE, KIND_LINK};

/// How a chunk's bytes are authenticated.
enum Check<'a> {
    /// An ordinary frame's (its MAC covered them): the file's SHA-256 is
    /// checked at its last chunk, which carries it.
    AtEnd(Option<&'a str>),
    /// A bulk frame's: the file's SHA-256 through this chunk, checked
    /// before the chunk is written.
    Running { sha256: &'a [u8; 32], last: bool },
}

/// A file that can be resumed: `(index, offset, sha256 hex of the prefix)`.
pub type Resume = (u32, u64, String);

/// Most entries one manifest may have.
pub const MAX_ENTRIES: usize = 1_000_000;

struct Open {
    file: File,
    tmp: PathBuf,
    hash: Sha256,
    written: u64,
    /// Where writeback was last started (see [`WRITEBACK_STEP`]).
    flushed: u64,
}

/// With fsync, writeback of each file starts every this many bytes
/// (posix_fadvise DONTNEED starts it without waiting), so the final fsync
/// has little left and the disk works while data still arrives.
pub const WRITEBACK_STEP: u64 = 8 << 20;

/// Files this process fsynced before renaming them into place (the
/// `fsynced` of `econtext.files.stats`): what shows the fsync path ran.
pub static FSYNCED: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Writes one transfer under `root` (a tree) or to `root` itself (one file).
pub struct LocalWriter {
    root: PathBuf,
    entries: Vec<Entry>,
    fsync: bool,
    open: HashMap<u32, Open>,
    failed: HashSet<u32>,
    resumed: HashMap<u32, (u64, Sha256)>,
    /// The sender is our master (a push to a Rust context): modes keep
    /// their set-id bits and, as root, files and links keep their owner.
    trusted: bool,
    pub files_done: u64,
    pub bytes_written: u64,
}

fn protocol(path: &Path, why: impl Into<String>) -> FileError {
    FileError::new(
        FileErrorKind::Protocol,
        LOCAL_HOST,
        path.to_string_lossy(),
        why,
    )
}

/// Checks a manifest from an untrusted peer: the shape (a tree starts
/// with its root directory; a single file is one entry), safe paths, and
/// every entry's parent a directory of the same manifest.
pub fn check_manifest(entries: &[Entry], tree: bool, host: &str) -> Result<(), String> {
    let _ = host;
    if entries.is_empty() || entries.len() > MAX_ENTRIES {
        return Err(format!("manifest of {} entries", entries.len()));
    }
    if !entries[0].rel().is_empty() {
        return Err("manifest does not start with its root".into());
    }
    if tree && entries[0].kind() != KIND_DIR {
        return Err("a tree's root is not a directory".into());
    }
    if !tree && (entries.len() != 1 || entries[0].kind() == KIND_DIR) {
        return Err("one file expected".into());
    }
    let mut dirs: HashSet<&[u8]> = HashSet::new();
    dirs.insert(b"");
    let mut seen: HashSet<&[u8]> = HashSet::new();
    for e in entries {
        if e.kind() > KIND_LINK {
            return Err(format!("unknown entry kind {}", e.kind()));
        }
        if !manifest::is_safe(e.rel()) || !seen.insert(e.rel()) {
            return Err(format!(
                "unsafe or repeated path {:?}",
                String::from_utf8_lossy(e.rel())
            ));
        }
        if !e.rel().is_empty() {
            let parent = match e.rel().iter().rposition(|b| *b == b'/') {
                Some(p) => &e.rel()[..p],
                None => b"",
            };
            if !dirs.contains(parent) {
                return Err(format!(
                    "{:?} is not under a directory of the manifest",
                    String::from_utf8_lossy(e.rel())
                ));
            }
        }
        if e.kind() == KIND_DIR {
            dirs.insert(e.rel());
        }
        if let Some(k) = e.key() {
            if k.is_empty() || k.len() > 64 || !k.bytes().all(|b| b.is_ascii_alphanumeric()) {
                return Err("bad key".into());
            }
        }
    }
    Ok(())
}

fn is_real_dir(p: &Path) -> bool {
    std::fs::symlink_metadata(p).is_ok_and(|m| m.is_dir())
}

fn hash_prefix(path: &Path, max: u64) -> Option<(u64, Sha256)> {
    let md = std::fs::symlink_metadata(path).ok()?;
    if !md.is_file() || md.len() == 0 || md.len() > max {
        return None;
    }
    let mut f = File::open(path).ok()?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut n = 0;
    loop {
        let k = f.read(&mut buf).ok()?;
        if k == 0 {
            break;
        }
        h.update(&buf[..k]);
        n += k as u64;
    }
    Some((n, h))
}

fn ts(ns: i64) -> TimeSpec {
    TimeSpec::new(ns.div_euclid(1_000_000_000), ns.rem_euclid(1_000_000_000))
}

impl LocalWriter {
    /// Prepares the destination; returns what can be resumed:
    /// `(index, offset, sha256 hex of the prefix)`.
    pub fn begin(
        root: PathBuf,
        entries: Vec<Entry>,
        tree: bool,
        fsync: bool,
    ) -> Result<(LocalWriter, Vec<Resume>), FileError> {
        let io = |p: &Path, e: std::io::Error| FileError::local(p, &e);
        if tree {
            if std::fs::symlink_metadata(&root).is_ok() && !is_real_dir(&root) {
                return Err(FileError::new(
                    FileErrorKind::NotADirectory,
                    LOCAL_HOST,
                    root.to_string_lossy(),
                    "destination exists and is not a directory",
                ));
            }
            std::fs::create_dir_all(&root).map_err(|e| io(&root, e))?;
            for e in entries.iter().skip(1).filter(|e| e.kind() == KIND_DIR) {
                let p = manifest::join(&root, e.rel());
                match std::fs::create_dir(&p) {
                    Ok(()) => {}
                    Err(_) if is_real_dir(&p) => {}
                    Err(x) => return Err(io(&p, x)),
                }
                std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o700))
                    .map_err(|x| io(&p, x))?;
            }
        } else {
            let dir = root.parent().unwrap_or(Path::new("."));
            if !is_real_dir(dir) {
                return Err(FileError::new(
                    FileErrorKind::NotFound,
                    LOCAL_HOST,
                    dir.to_string_lossy(),
                    "destination directory does not exist",
                ));
            }
        }
        let mut w = LocalWriter {
            root,
            entries,
            fsync,
            open: HashMap::new(),
            failed: HashSet::new(),
            resumed: HashMap::new(),
            trusted: false,
            files_done: 0,
            bytes_written: 0,
        };
        let mut dests = crate::stale::Destinations::new();
        for e in w.entries.iter().filter(|e| e.kind() != KIND_DIR) {
            crate::stale::add(&mut dests, &w.path(e), e.key().filter(|_| e.is_file()));
        }
        crate::stale::sweep(&dests);
        let mut resume = Vec::new();
        for (i, e) in w.entries.iter().enumerate() {
            if let (KIND_FILE, Some(key)) = (e.kind(), e.key()) {
                let tmp = manifest::tmp_path(&w.path(e), key);
                if let Some((n, h)) = hash_prefix(&tmp, e.size()) {
                    resume.push((i as u32, n, hex::encode(h.clone().finalize())));
                    w.resumed.insert(i as u32, (n, h));
                }
            }
        }
        Ok((w, resume))
    }

    /// Trusts the sender (our master) with set-id bits and, when we run
    /// as root, owners.
    pub fn trust_sender(mut self) -> Self {
        self.trusted = true;
        self
    }

    fn mode_of(&self, e: &Entry) -> u32 {
        e.mode() & if self.trusted { 0o7777 } else { 0o1777 }
    }

    /// The owner to give an entry: only from a trusted sender, as root.
    fn owner_of(&self, e: &Entry) -> Option<(u32, u32)> {
        (self.trusted && nix::unistd::geteuid().is_root()).then_some((e.6, e.7))
    }

    fn path(&self, e: &Entry) -> PathBuf {
        manifest::join(&self.root, e.rel())
    }

    /// One chunk of an ordinary frame; at the file's last chunk (`sha`),
    /// the file is finished.
    pub fn chunk(
        &mut self,
        index: u32,
        offset: u64,
        data: &[u8],
        sha: Option<&str>,
    ) -> Result<(), FileError> {
        self.checked(index, offset, data, Check::AtEnd(sha))
    }

    /// One chunk of a bulk frame, whose bytes no frame MAC covered:
    /// `sha256` is the sender's digest of the file from its start through
    /// `data`. The chunk is hashed into the file's running SHA-256, and
    /// written only if the digest matches (one pass over the bytes: the
    /// same buffer is hashed, then written); a mismatch fails the file
    /// (`checksum`) and removes its temporary. With `last`, the file is
    /// finished.
    pub fn bulk_chunk(
        &mut self,
        index: u32,
        offset: u64,
        data: &[u8],
        sha256: &[u8; 32],
        last: bool,
    ) -> Result<(), FileError> {
        self.checked(index, offset, data, Check::Running { sha256, last })
    }

    fn checked(
        &mut self,
        index: u32,
        offset: u64,
        data: &[u8],
        check: Check<'_>,
    ) -> Result<(), FileError> {
        // A chunk of a failed file still counts as received: credits
        // (and the sender's window) move on to the transfer's next file.
        if self.failed.contains(&index) {
            self.bytes_written += data.len() as u64;
            return Ok(());
        }
        let before = self.bytes_written;
        let r = self.write(index, offset, data, check);
        if r.is_err() {
            self.discard(index);
            if self.bytes_written == before {
                self.bytes_written += data.len() as u64;
            }
        }
        r
    }

    fn write(
        &mut self,
        index: u32,
        offset: u64,
        data: &[u8],
        check: Check<'_>,
    ) -> Result<(), FileError> {
        let e = self
            .entries
            .get(index as usize)
            .filter(|e| e.kind() == KIND_FILE)
            .cloned()
            .ok_or_else(|| protocol(&self.root, format!("chunk for entry {index}, not a file")))?;
        let path = self.path(&e);
        if !self.open.contains_key(&index) {
            let o = self.open_tmp(index, &e, &path, offset)?;
            self.open.insert(index, o);
        }
        let o = self.open.get_mut(&index).expect("just opened");
        if offset != o.written {
            return Err(protocol(
                &path,
                format!("chunk at {offset}, expected {}", o.written),
            ));
        }
        if o.written + data.len() as u64 > e.size() {
            return Err(protocol(&path, "more data than the manifest said"));
        }
        o.hash.update(data);
        if let Check::Running { sha256, .. } = check {
            let got: [u8; 32] = o.hash.clone().finalize().into();
            if !bool::from(got.ct_eq(sha256)) {
                return Err(FileError::new(
                    FileErrorKind::Checksum,
                    LOCAL_HOST,
                    path.to_string_lossy(),
                    format!("the chunk at offset {offset} does not match the sender's SHA-256"),
                ));
            }
        }
        o.file
            .write_all(data)
            .map_err(|x| FileError::local(&path, &x))?;
        o.written += data.len() as u64;
        if self.fsync && o.written - o.flushed >= WRITEBACK_STEP {
            // Only an optimisation: the fsync at the end still comes.
            let _ = nix::fcntl::posix_fadvise(
                std::os::fd::AsRawFd::as_raw_fd(&o.file),
                o.flushed as i64,
                (o.written - o.flushed) as i64,
                nix::fcntl::PosixFadviseAdvice::POSIX_FADV_DONTNEED,
            );
            o.flushed = o.written;
        }
        self.bytes_written += data.len() as u64;
        let sha = match check {
            Check::AtEnd(sha) => sha.map(str::to_string),
            Check::Running { sha256, last } => last.then(|| hex::encode(sha256)),
        };
        if let Some(sha) = sha {
            let o = self.open.remove(&index).expect("open");
            self.finish_file(&e, &path, o, &sha)?;
            self.files_done += 1;
        }
        Ok(())
    }

    fn open_tmp(
        &mut self,
        index: u32,
        e: &Entry,
        path: &Path,
        offset: u64,
    ) -> Result<Open, FileError> {
        let key = e.key().unwrap_or("pull");
        let tmp = manifest::tmp_path(path, key);
        let resumed = self.resumed.remove(&index);
        let hash = match (offset, resumed) {
            (0, _) => Sha256::new(),
            (o, Some((n, h))) if o == n => h,
            _ => {
                return Err(protocol(
                    path,
                    format!("chunk at {offset} for a file not resumed there"),
                ))
            }
        };
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .custom_flags(nix::libc::O_NOFOLLOW)
            .open(&tmp)
            .map_err(|x| FileError::local(&tmp, &x))?;
        let leftover = file.metadata().is_ok_and(|m| m.len() > 0);
        if offset == 0 && leftover {
            // Only a leftover needs it: on ext4 a truncate to 0 makes the
            // close flush the whole file (auto_da_alloc), a long stall.
            file.set_len(0).map_err(|x| FileError::local(&tmp, &x))?;
        } else if offset > 0 {
            use std::io::Seek;
            file.seek(std::io::SeekFrom::Start(offset))
                .map_err(|x| FileError::local(&tmp, &x))?;
        }
        Ok(Open {
            file,
            tmp,
            hash,
            written: offset,
            flushed: offset,
        })
    }

    fn finish_file(&mut self, e: &Entry, path: &Path, o: Open, sha: &str) -> Result<(), FileError> {
        let Open {
            file,
            tmp,
            hash,
            written,
            ..
        } = o;
        let fail = |err: FileError| {
            let _ = std::fs::remove_file(&tmp);
            err
        };
        if written != e.size() {
            return Err(fail(protocol(
                path,
                format!("{written} bytes received, the manifest said {}", e.size()),
            )));
        }
        let got = hex::encode(hash.finalize());
        if got != sha {
            return Err(fail(FileError::new(
                FileErrorKind::Checksum,
                LOCAL_HOST,
                path.to_string_lossy(),
                format!("SHA-256 mismatch: received {got}, sender read {sha}"),
            )));
        }
        let io = |x: std::io::Error| fail(FileError::local(path, &x));
        // Set-id bits are never taken from a child; chown clears them, so
        // the mode is set after it.
        if let Some((uid, gid)) = self.owner_of(e) {
            std::os::unix::fs::fchown(&file, Some(uid), Some(gid)).map_err(io)?;
        }
        file.set_permissions(std::fs::Permissions::from_mode(self.mode_of(e)))
            .map_err(io)?;
        if self.fsync {
            file.sync_all().map_err(io)?;
            FSYNCED.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        let t = ts(e.mtime_ns());
        nix::sys::stat::futimens(std::os::fd::AsRawFd::as_raw_fd(&file), &t, &t)
            .map_err(|x| fail(FileError::local(path, &std::io::Error::from(x))))?;
        drop(file);
        if is_real_dir(path) {
            return Err(fail(FileError::new(
                FileErrorKind::IsADirectory,
                LOCAL_HOST,
                path.to_string_lossy(),
                "destination is a directory",
            )));
        }
        std::fs::rename(&tmp, path).map_err(io)
    }

    /// Drops a file the sender gave up on (or that failed here).
    pub fn discard(&mut self, index: u32) {
        self.failed.insert(index);
        if let Some(o) = self.open.remove(&index) {
            drop(o.file);
            let _ = std::fs::remove_file(&o.tmp);
        }
    }

    /// Links, then directories deepest first (their mode and mtime last).
    pub fn end(&mut self) -> Vec<FileError> {
        let mut errors = Vec::new();
        for i in self.open.keys().copied().collect::<Vec<_>>() {
            let p = self.path(&self.entries[i as usize].clone());
            errors.push(protocol(
                &p,
                "the sender ended before the file was complete",
            ));
            self.discard(i);
        }
        for e in self
            .entries
            .clone()
            .iter()
            .filter(|e| e.kind() == KIND_LINK)
        {
            match self.link(e) {
                Ok(()) => self.files_done += 1,
                Err(x) => errors.push(x),
            }
        }
        let mut dirs: Vec<Entry> = self
            .entries
            .iter()
            .filter(|e| e.kind() == KIND_DIR)
            .cloned()
            .collect();
        dirs.sort_by_key(|e| {
            std::cmp::Reverse(if e.rel().is_empty() {
                0
            } else {
                1 + e.rel().iter().filter(|b| **b == b'/').count()
            })
        });
        for e in dirs {
            let p = self.path(&e);
            let t = ts(e.mtime_ns());
            let owner = self.owner_of(&e);
            let r = owner
                .map_or(Ok(()), |(u, g)| {
                    std::os::unix::fs::chown(&p, Some(u), Some(g))
                })
                .and_then(|_| {
                    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(self.mode_of(&e)))
                })
                .and_then(|_| {
                    utimensat(None, &p, &t, &t, UtimensatFlags::NoFollowSymlink)
                        .map_err(std::io::Error::from)
                });
            if let Err(x) = r {
                errors.push(FileError::local(&p, &x));
            }
        }
        errors
    }

    fn link(&self, e: &Entry) -> Result<(), FileError> {
        let path = self.path(e);
        let target = e.5.as_deref().map(|t| t.as_ref()).unwrap_or(&b""[..]);
        let tmp = manifest::tmp_path(&path, "link");
        let _ = std::fs::remove_file(&tmp);
        std::os::unix::fs::symlink(std::ffi::OsStr::from_bytes(target), &tmp)
            .map_err(|x| FileError::local(&path, &x))?;
        if let Some((uid, gid)) = self.owner_of(e) {
            std::os::unix::fs::lchown(&tmp, Some(uid), Some(gid)).map_err(|x| {
                let _ = std::fs::remove_file(&tmp);
                FileError::local(&path, &x)
            })?;
        }
        if is_real_dir(&path) {
            let _ = std::fs::remove_file(&tmp);
            return Err(FileError::new(
                FileErrorKind::IsADirectory,
                LOCAL_HOST,
                path.to_string_lossy(),
                "destination is a directory",
            ));
        }
        std::fs::rename(&tmp, &path).map_err(|x| FileError::local(&path, &x))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_bytes::ByteBuf;

    fn e(rel: &str, kind: u8) -> Entry {
        Entry(
            ByteBuf::from(rel.as_bytes().to_vec()),
            kind,
            0,
            0o644,
            0,
            None,
            0,
            0,
            None,
        )
    }

    #[test]
    fn manifest_that_escapes_through_a_symlink_is_refused() {
        let m = vec![e("", KIND_DIR), e("a", KIND_LINK), e("a/passwd", KIND_FILE)];
        assert!(check_manifest(&m, true, "h").is_err());
        let m = vec![e("", KIND_DIR), e("../x", KIND_FILE)];
        assert!(check_manifest(&m, true, "h").is_err());
        let m = vec![e("", KIND_DIR), e("d", KIND_DIR), e("d/x", KIND_FILE)];
        check_manifest(&m, true, "h").unwrap();
        let m = vec![e("", KIND_DIR), e("x", KIND_FILE), e("x", KIND_FILE)];
        assert!(check_manifest(&m, true, "h").is_err());
        assert!(check_manifest(&[e("", KIND_DIR)], false, "h").is_err());
    }

    /// A fresh directory holding `f` = "old", and the manifest entry of a
    /// new `f` of `size` bytes under temporary key `key`.
    fn old_file_and_entry(
        tag: &str,
        size: u64,
        key: &str,
    ) -> (std::path::PathBuf, std::path::PathBuf, Entry) {
        let d = std::env::temp_dir().join(format!("ecfiles-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        let dest = d.join("f");
        std::fs::write(&dest, b"old").unwrap();
        let mut ent = e("", KIND_FILE);
        ent.2 = size;
        ent.8 = Some(key.into());
        (d, dest, ent)
    }

    #[test]
    fn a_wrong_checksum_leaves_no_temporary_and_the_old_file_intact() {
        let (d, dest, ent) = old_file_and_entry("writer", 3, "k1");
        let (mut w, resume) = LocalWriter::begin(dest.clone(), vec![ent], false, false).unwrap();
        assert!(resume.is_empty());
        let err = w.chunk(0, 0, b"new", Some("00")).unwrap_err();
        assert_eq!(err.kind, FileErrorKind::Checksum);
        assert_eq!(std::fs::read(&dest).unwrap(), b"old");
        assert_eq!(std::fs::read_dir(&d).unwrap().count(), 1);
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn a_bulk_chunk_that_does_not_match_its_digest_is_never_written() {
        let (d, dest, ent) = old_file_and_entry("bulk", 6, "k2");
        let (mut w, _) = LocalWriter::begin(dest.clone(), vec![ent.clone()], false, false).unwrap();
        let first: [u8; 32] = Sha256::digest(b"abc").into();
        w.bulk_chunk(0, 0, b"abc", &first, false).unwrap();
        let tmp = manifest::tmp_path(&dest, "k2");
        assert_eq!(std::fs::read(&tmp).unwrap(), b"abc");
        // The second chunk flipped on the way: its digest is the file's.
        let both: [u8; 32] = Sha256::digest(b"abcdef").into();
        let err = w.bulk_chunk(0, 3, b"dEf", &both, true).unwrap_err();
        assert_eq!(err.kind, FileErrorKind::Checksum);
        assert!(err.detail.contains("offset 3"), "{err}");
        assert!(!tmp.exists(), "the temporary is removed");
        assert_eq!(std::fs::read(&dest).unwrap(), b"old");
        // Good chunks: finished at the last one.
        let (mut w, _) = LocalWriter::begin(dest.clone(), vec![ent], false, false).unwrap();
        w.bulk_chunk(0, 0, b"abc", &first, false).unwrap();
        w.bulk_chunk(0, 3, b"def", &both, true).unwrap();
        assert_eq!(std::fs::read(&dest).unwrap(), b"abcdef");
        assert_eq!(w.files_done, 1);
        std::fs::remove_dir_all(&d).unwrap();
    }
}
