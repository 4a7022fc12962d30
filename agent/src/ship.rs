//! The agent binary as shipped: gzip-compressed once per process (the
//! first stage decompresses it with Python's zlib or `gzip -d`), framed as
//! `"<size>\n" + bytes` for the first stage.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

use flate2::{write::GzEncoder, Compression};

use crate::platform::Platform;

/// A compressed agent, ready to send after `EC0`.
#[derive(Debug)]
pub struct Shipped {
    /// `"<size>\n"` followed by the gzip stream.
    pub framed: Vec<u8>,
    /// The uncompressed binary's size.
    pub binary_len: usize,
    /// SHA-256 of the uncompressed binary, hex: the name and the check of
    /// its copy in a target's cache ([`AgentOptions::cache`]).
    ///
    /// [`AgentOptions::cache`]: crate::AgentOptions::cache
    pub sha256: String,
    pub platform: Platform,
}

impl Shipped {
    /// Bytes on the wire (what the first stage reads).
    pub fn compressed_len(&self) -> usize {
        self.framed.len()
    }

    pub fn compress(binary: &[u8]) -> Result<Shipped, String> {
        let platform = Platform::of(binary)?;
        let mut z = GzEncoder::new(Vec::with_capacity(binary.len() / 3), Compression::default());
        z.write_all(binary).map_err(|e| e.to_string())?;
        let gz = z.finish().map_err(|e| e.to_string())?;
        let mut framed = format!("{}\n", gz.len()).into_bytes();
        framed.extend_from_slice(&gz);
        Ok(Shipped {
            framed,
            binary_len: binary.len(),
            sha256: hex::encode(<sha2::Sha256 as sha2::Digest>::digest(binary)),
            platform,
        })
    }
}

/// The compressed form of `path`, made once per process and path.
pub fn shipped(path: &Path) -> Result<Arc<Shipped>, String> {
    static CACHE: OnceLock<Mutex<HashMap<PathBuf, Arc<Shipped>>>> = OnceLock::new();
    let cache = CACHE.get_or_init(Default::default);
    if let Some(s) = cache.lock().expect("ship cache").get(path) {
        return Ok(s.clone());
    }
    let binary = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let s = Arc::new(Shipped::compress(&binary)?);
    cache
        .lock()
        .expect("ship cache")
        .insert(path.to_path_buf(), s.clone());
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    #[test]
    fn framed_binary_decompresses_to_itself() {
        let me = std::fs::read("/proc/self/exe").unwrap();
        let s = Shipped::compress(&me).unwrap();
        let nl = s.framed.iter().position(|&b| b == b'\n').unwrap();
        let n: usize = std::str::from_utf8(&s.framed[..nl])
            .unwrap()
            .parse()
            .unwrap();
        assert_eq!(n, s.framed.len() - nl - 1);
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(&s.framed[nl + 1..])
            .read_to_end(&mut out)
            .unwrap();
        assert!(out == me, "round trip differs");
        assert!(s.compressed_len() < me.len());
    }
}
