//! Files: push and pull through the context tree (econtext-files and the
//! Python core's `econtext.files`): content, mode, mtime, owner and links
//! kept; atomic replace; typed errors naming path and host; resume after
//! an interruption; a call still answered during a large push; fan-out
//! through an intermediate crossing the upper link once; over ssh and sudo.

mod common;

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::sshd::{skip_unless, Sshd, TempDir, TestUser};
use common::*;
use econtext::bootstrap::{HostKeyCheck, SshOptions, SudoOptions};
use econtext::{ConnectOptions, FileErrorKind, FilesExt, Method, TransferOptions};
use rand::RngCore;

fn random_file(path: &Path, len: usize) -> Vec<u8> {
    let mut data = vec![0u8; len];
    rand::thread_rng().fill_bytes(&mut data);
    std::fs::write(path, &data).unwrap();
    data
}

fn set_mtime(path: &Path, secs: i64, nsec: i64) {
    let t = nix::sys::time::TimeSpec::new(secs, nsec);
    nix::sys::stat::utimensat(
        None,
        path,
        &t,
        &t,
        nix::sys::stat::UtimensatFlags::NoFollowSymlink,
    )
    .unwrap();
}

fn mtime_ns(path: &Path) -> i64 {
    let m = std::fs::symlink_metadata(path).unwrap();
    m.mtime() * 1_000_000_000 + m.mtime_nsec()
}

/// Files in `dir` (recursively) whose name marks a transfer's temporary.
fn temporaries(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if e.file_type().unwrap().is_dir() {
                stack.push(p.clone());
            }
            if e.file_name().to_string_lossy().contains(".ec-") {
                out.push(p);
            }
        }
    }
    out
}

/// A small tree: nested directories, an empty file, an executable, a
/// relative and a dangling symlink, odd modes and mtimes.
fn make_tree(root: &Path) {
    std::fs::create_dir_all(root.join("sub/deeper")).unwrap();
    random_file(&root.join("a.bin"), 300_000);
    std::fs::write(root.join("empty"), b"").unwrap();
    std::fs::write(root.join("sub/run.sh"), b"#!/bin/sh\necho hi\n").unwrap();
    std::fs::set_permissions(root.join("sub/run.sh"), PermissionsExt::from_mode(0o751)).unwrap();
    std::fs::write(root.join("sub/deeper/x.txt"), b"deep").unwrap();
    std::os::unix::fs::symlink("../a.bin", root.join("sub/link")).unwrap();
    std::os::unix::fs::symlink("/nonexistent/target", root.join("dangling")).unwrap();
    std::fs::set_permissions(root.join("sub/deeper"), PermissionsExt::from_mode(0o750)).unwrap();
    set_mtime(&root.join("a.bin"), 1_600_000_000, 123_456_789);
    set_mtime(&root.join("sub/deeper"), 1_500_000_000, 0);
}

/// Asserts that `b` is a copy of `a`: content, mode and mtime of files,
/// link targets, directory modes.
fn assert_same_tree(a: &Path, b: &Path) {
    let mut stack = vec![PathBuf::new()];
    let mut n = 0;
    while let Some(rel) = stack.pop() {
        for e in std::fs::read_dir(a.join(&rel)).unwrap().flatten() {
            let r = rel.join(e.file_name());
            let (pa, pb) = (a.join(&r), b.join(&r));
            let (ma, mb) = (
                std::fs::symlink_metadata(&pa).unwrap(),
                std::fs::symlink_metadata(&pb)
                    .unwrap_or_else(|_| panic!("{} missing", pb.display())),
            );
            n += 1;
            if ma.file_type().is_symlink() {
                assert!(mb.file_type().is_symlink(), "{r:?} is a link");
                assert_eq!(
                    std::fs::read_link(&pa).unwrap(),
                    std::fs::read_link(&pb).unwrap()
                );
                continue;
            }
            assert_eq!(ma.mode() & 0o7777, mb.mode() & 0o7777, "mode of {r:?}");
            // Python 2 sets mtimes through a float: microseconds.
            let skew = (mtime_ns(&pa) - mtime_ns(&pb)).abs();
            assert!(skew < 1000, "mtime of {r:?} off by {skew} ns");
            if ma.is_dir() {
                stack.push(r);
            } else {
                assert_eq!(
                    std::fs::read(&pa).unwrap(),
                    std::fs::read(&pb).unwrap(),
                    "{r:?}"
                );
            }
        }
    }
    assert!(n > 0);
}

#[test]
fn push_and_pull_a_file_keep_content_mode_and_mtime() {
    let dir = TempDir::new("files-one");
    let src = dir.path("src.bin");
    let data = random_file(&src, 3 << 20);
    std::fs::set_permissions(&src, PermissionsExt::from_mode(0o640)).unwrap();
    set_mtime(&src, 1_700_000_000, 987_654_321);
    std::fs::create_dir_all(dir.path("remote")).unwrap();
    let dest = dir.path("remote/dest.bin");
    std::fs::write(&dest, b"the old version").unwrap();
    run(async {
        let master = master(&Capture::default());
        let ctx = master.local(local(&python3())).await.unwrap();
        let r = ctx.push(&src, &dest).await.unwrap();
        assert_eq!((r.files, r.bytes, r.bytes_sent), (1, 3 << 20, 3 << 20));
        assert_eq!(std::fs::read(&dest).unwrap(), data);
        let md = std::fs::metadata(&dest).unwrap();
        assert_eq!(md.mode() & 0o7777, 0o640);
        assert_eq!(mtime_ns(&dest), mtime_ns(&src));
        assert!(temporaries(&dir.path("remote")).is_empty());
        // Into a directory: DEST ending in '/' or an existing directory.
        ctx.push(&src, format!("{}/", dir.path("remote").display()))
            .await
            .unwrap();
        assert_eq!(std::fs::read(dir.path("remote/src.bin")).unwrap(), data);
        // Pulled back, it matches.
        let back = dir.path("back.bin");
        let r = ctx.pull(&dest, &back).await.unwrap();
        assert_eq!(r.bytes, 3 << 20);
        assert_eq!(std::fs::read(&back).unwrap(), data);
        assert_eq!(mtime_ns(&back), mtime_ns(&src));
        assert_eq!(std::fs::metadata(&back).unwrap().mode() & 0o7777, 0o640);
        assert!(temporaries(&dir.0).is_empty());
        ctx.shutdown().await.unwrap();
    });
}

#[test]
fn trees_push_and_pull_as_one_stream_under_every_interpreter() {
    let dir = TempDir::new("files-tree");
    let src = dir.path("src");
    make_tree(&src);
    run(async {
        let master = master(&Capture::default());
        for (py, version) in interpreters() {
            let ctx = master
                .local(local(&py.display().to_string()))
                .await
                .unwrap();
            let dest = dir.path(&format!("dest-{version}"));
            let r = ctx
                .push_tree(&src, &dest)
                .await
                .unwrap_or_else(|e| panic!("Python {version}: {e}"));
            assert_eq!(r.files, 6, "Python {version}: {r:?}");
            assert_same_tree(&src, &dest);
            let back = dir.path(&format!("back-{version}"));
            ctx.pull_tree(&dest, &back)
                .await
                .unwrap_or_else(|e| panic!("Python {version}: {e}"));
            assert_same_tree(&src, &back);
            assert!(temporaries(&dir.0).is_empty(), "Python {version}");
            ctx.shutdown().await.unwrap();
        }
    });
}
