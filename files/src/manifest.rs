//! The manifest: every entry of a transfer, sent before any data so that a
//! whole tree travels as one stream.
//!
//! On the wire an entry is the array
//! `[path(bin), kind, size, mode, mtime_ns, link_target(bin|nil), uid, gid, key(str|nil)]`;
//! `path` is relative to the transfer's root, `/`-separated, and empty for
//! the root itself. `key` names the temporary file a receiver writes, so
//! that a rerun of the same transfer (same source path, size and mtime)
//! finds what an interrupted one left and resumes after it.

use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_bytes::ByteBuf;
use sha2::{Digest, Sha256};

pub const KIND_FILE: u8 = 0;
pub const KIND_DIR: u8 = 1;
pub const KIND_LINK: u8 = 2;

/// One file, directory or symlink of a transfer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry(
    pub ByteBuf,
    pub u8,
    pub u64,
    pub u32,
    pub i64,
    pub Option<ByteBuf>,
    pub u32,
    pub u32,
    pub Option<String>,
);

impl Entry {
    pub fn rel(&self) -> &[u8] {
        &self.0
    }
    pub fn kind(&self) -> u8 {
        self.1
    }
    pub fn size(&self) -> u64 {
        self.2
    }
    pub fn mode(&self) -> u32 {
        self.3
    }
    pub fn mtime_ns(&self) -> i64 {
        self.4
    }
    pub fn key(&self) -> Option<&str> {
        self.8.as_deref()
    }
    pub fn is_file(&self) -> bool {
        self.1 == KIND_FILE
    }
}

/// `root` joined with a manifest path (the root itself for an empty one).
pub fn join(root: &Path, rel: &[u8]) -> PathBuf {
    if rel.is_empty() {
        root.to_path_buf()
    } else {
        root.join(std::ffi::OsStr::from_bytes(rel))
    }
}

/// True when `rel` stays under the root: relative, no `.`/`..`/empty
/// components, no NUL. Checked on every manifest a peer sends.
pub fn is_safe(rel: &[u8]) -> bool {
    if rel.is_empty() {
        return true;
    }
    !rel.contains(&0)
        && rel[0] != b'/'
        && rel
            .split(|b| *b == b'/')
            .all(|p| !p.is_empty() && p != b"." && p != b"..")
}

/// The temporary file a receiver writes for `path`: a hidden sibling in
/// the destination directory, so the final rename is atomic.
pub fn tmp_path(path: &Path, key: &str) -> PathBuf {
    let name = path.file_name().map(|n| n.as_bytes()).unwrap_or(b"file");
    let mut t = Vec::with_capacity(name.len() + key.len() + 10);
    t.push(b'.');
    t.extend_from_slice(name);
    t.extend_from_slice(b".ec-");
    t.extend_from_slice(key.as_bytes());
    t.extend_from_slice(b".part");
    path.with_file_name(std::ffi::OsStr::from_bytes(&t))
}

fn key_for(base: &Path, rel: &[u8], size: u64, mtime: i64) -> String {
    let mut h = Sha256::new();
    h.update(base.as_os_str().as_bytes());
    h.update([0]);
    h.update(size.to_string());
    h.update([0]);
    h.update(mtime.to_string());
    h.update([0]);
    h.update(rel);
    hex::encode(&h.finalize()[..8])
}

fn entry(base: &Path, rel: Vec<u8>, md: &std::fs::Metadata) -> std::io::Result<Entry> {
    let ft = md.file_type();
    let kind = if ft.is_dir() {
        KIND_DIR
    } else if ft.is_symlink() {
        KIND_LINK
    } else {
        KIND_FILE
    };
    let mtime = md.mtime() * 1_000_000_000 + md.mtime_nsec();
    let target = if kind == KIND_LINK {
        Some(ByteBuf::from(
            std::fs::read_link(join(base, &rel))?
                .as_os_str()
                .as_bytes()
                .to_vec(),
        ))
    } else {
        None
    };
    let size = if kind == KIND_FILE { md.size() } else { 0 };
    let key = (kind == KIND_FILE).then(|| key_for(base, &rel, size, mtime));
    Ok(Entry(
        ByteBuf::from(rel),
        kind,
        size,
        md.mode() & 0o7777,
        mtime,
        target,
        md.uid(),
        md.gid(),
        key,
    ))
}

/// The manifest of one local file (or symlink) under the name `name`.
pub fn of_file(src: &Path, name: &[u8]) -> std::io::Result<Entry> {
    let md = std::fs::symlink_metadata(src)?;
    if md.is_dir() {
        return Err(std::io::Error::from_raw_os_error(nix::libc::EISDIR));
    }
    if !md.is_file() && !md.file_type().is_symlink() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "not a regular file or symlink",
        ));
    }
    let mut e = entry(src, Vec::new(), &md)?;
    e.0 = ByteBuf::from(name.to_vec());
    Ok(e)
}

/// The manifest of a local tree: the root (empty path) first, then every
/// entry below it in sorted depth-first order. Symlinks are entries, never
/// followed; other special files (sockets, devices) are skipped.
pub fn of_tree(root: &Path) -> std::io::Result<Vec<Entry>> {
    let md = std::fs::symlink_metadata(root)?;
    if !md.is_dir() {
        return Err(std::io::Error::from_raw_os_error(nix::libc::ENOTDIR));
    }
    let mut out = vec![entry(root, Vec::new(), &md)?];
    let mut stack: Vec<Vec<u8>> = vec![Vec::new()];
    while let Some(dir) = stack.pop() {
        let mut names: Vec<_> = std::fs::read_dir(join(root, &dir))?
            .filter_map(|d| d.ok())
            .map(|d| d.file_name())
            .collect();
        names.sort();
        let mut subdirs = Vec::new();
        for n in names {
            let mut rel = dir.clone();
            if !rel.is_empty() {
                rel.push(b'/');
            }
            rel.extend_from_slice(n.as_bytes());
            let Ok(md) = std::fs::symlink_metadata(join(root, &rel)) else {
                continue; // vanished while we walked
            };
            let ft = md.file_type();
            if !(ft.is_dir() || ft.is_file() || ft.is_symlink()) {
                continue;
            }
            if ft.is_dir() {
                subdirs.push(rel.clone());
            }
            out.push(entry(root, rel, &md)?);
        }
        stack.extend(subdirs.into_iter().rev());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unsafe_paths_are_refused() {
        for bad in [
            &b"/etc/passwd"[..],
            b"a/../b",
            b"..",
            b"a//b",
            b"./a",
            b"a\0b",
            b"a/",
        ] {
            assert!(!is_safe(bad), "{:?}", String::from_utf8_lossy(bad));
        }
        for good in [&b""[..], b"a", b"a/b/c", b"..a", b"a.."] {
            assert!(is_safe(good));
        }
    }

    #[test]
    fn tmp_is_a_hidden_sibling() {
        let t = tmp_path(Path::new("/d/x/file.txt"), "abc");
        assert_eq!(t, Path::new("/d/x/.file.txt.ec-abc.part"));
    }

    #[test]
    fn tree_lists_root_first_and_keeps_links() {
        let d = std::env::temp_dir().join(format!("ecfiles-manifest-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(d.join("sub")).unwrap();
        std::fs::write(d.join("sub/f"), b"hello").unwrap();
        std::fs::write(d.join("a"), b"x").unwrap();
        std::os::unix::fs::symlink("a", d.join("l")).unwrap();
        let m = of_tree(&d).unwrap();
        let names: Vec<_> = m
            .iter()
            .map(|e| String::from_utf8_lossy(e.rel()).into_owned())
            .collect();
        assert_eq!(names, ["", "a", "l", "sub", "sub/f"]);
        assert_eq!(m[2].kind(), KIND_LINK);
        assert_eq!(m[2].5.as_deref().map(|b| b.as_ref()), Some(&b"a"[..]));
        assert_eq!(m[4].size(), 5);
        assert!(m[4].key().is_some());
        std::fs::remove_dir_all(&d).unwrap();
    }
}
