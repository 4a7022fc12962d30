//! Stale temporaries: what an interrupted transfer left and nobody will
//! resume. The rule (the same in the Python receiver, `_sweep` in
//! `econtext_files.py`; docs/PROTOCOL.md, "Files"): when a transfer
//! starts writing into a directory,
//! - a temporary there for one of its destinations with another key is
//!   deleted: its source has changed since, so it can never be resumed;
//! - any other temporary untouched for [`PART_MAX_AGE`] is deleted: an
//!   interrupted transfer that was never rerun.
//!
//! The temporary with this transfer's own key is kept (it is resumed).

use std::collections::HashMap;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

/// How long a temporary nobody touches is kept for a resume.
pub const PART_MAX_AGE: Duration = Duration::from_secs(24 * 3600);

/// Directory -> (destination name -> this transfer's key).
pub type Destinations = HashMap<PathBuf, HashMap<Vec<u8>, String>>;

/// `(destination name, key)` of a temporary's file name
/// `.<name>.ec-<key>.part`.
pub fn parse_tmp_name(n: &[u8]) -> Option<(&[u8], &[u8])> {
    let rest = n.strip_prefix(b".")?.strip_suffix(b".part")?;
    let at = rest.windows(4).rposition(|w| w == b".ec-")?;
    let (name, key) = (&rest[..at], &rest[at + 4..]);
    let key_ok = !key.is_empty() && key.len() <= 64 && key.iter().all(u8::is_ascii_alphanumeric);
    (!name.is_empty() && key_ok).then_some((name, key))
}

/// Whether the rule deletes a temporary for `name` with `key`, `age` old.
pub fn is_stale(names: &HashMap<Vec<u8>, String>, name: &[u8], key: &[u8], age: Duration) -> bool {
    match names.get(name) {
        Some(mine) => mine.as_bytes() != key,
        None => age > PART_MAX_AGE,
    }
}

/// Applies the rule to every directory of `dests`; returns what it deleted.
pub fn sweep(dests: &Destinations) -> Vec<PathBuf> {
    let now = SystemTime::now();
    let mut gone = Vec::new();
    for (dir, names) in dests {
        let Ok(listing) = std::fs::read_dir(dir) else {
            continue;
        };
        for ent in listing.flatten() {
            let file_name = ent.file_name();
            let Some((name, key)) = parse_tmp_name(file_name.as_bytes()) else {
                continue;
            };
            let path = dir.join(&file_name);
            let Ok(md) = std::fs::symlink_metadata(&path) else {
                continue;
            };
            if md.is_dir() {
                continue;
            }
            let age = md
                .modified()
                .ok()
                .and_then(|m| now.duration_since(m).ok())
                .unwrap_or_default();
            if is_stale(names, name, key, age) && std::fs::remove_file(&path).is_ok() {
                gone.push(path);
            }
        }
    }
    gone
}

/// Adds `path` (a file or link about to be written, with `key` for a file)
/// to `dests`.
pub fn add(dests: &mut Destinations, path: &Path, key: Option<&str>) {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let names = dests.entry(dir.to_path_buf()).or_default();
    if let (Some(n), Some(k)) = (path.file_name(), key) {
        names.insert(n.as_bytes().to_vec(), k.to_string());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn temporary_names_parse() {
        assert_eq!(
            parse_tmp_name(b".a.b.ec-0123abcd.part"),
            Some((&b"a.b"[..], &b"0123abcd"[..]))
        );
        assert_eq!(parse_tmp_name(b".x.ec-.part"), None);
        assert_eq!(parse_tmp_name(b"x.ec-k.part"), None);
        assert_eq!(parse_tmp_name(b".x.ec-k/y.part"), None);
        assert_eq!(parse_tmp_name(b".ec-k.part"), None);
    }

    #[test]
    fn another_key_of_a_destination_is_stale_at_once_others_by_age() {
        let mut names = HashMap::new();
        names.insert(b"f".to_vec(), "k1".to_string());
        let young = Duration::from_secs(1);
        let old = PART_MAX_AGE + Duration::from_secs(1);
        assert!(!is_stale(&names, b"f", b"k1", young), "ours: resumed");
        assert!(!is_stale(&names, b"f", b"k1", old), "ours, however old");
        assert!(is_stale(&names, b"f", b"k0", young), "source changed");
        assert!(!is_stale(&names, b"g", b"k9", young), "another file's");
        assert!(is_stale(&names, b"g", b"k9", old), "abandoned");
    }
}
