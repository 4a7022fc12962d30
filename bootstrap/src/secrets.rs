//! Keeping the master's secrets (the tree's key, passwords) out of places
//! they could leak from besides its memory.

/// Makes this process non-dumpable (Linux `PR_SET_DUMPABLE` 0): a crash
/// writes no core file with the key and passwords in it, and processes of
/// the same user cannot ptrace it or read its `/proc/PID/mem`. Children
/// are not affected (the flag is reset by `execve`), which is why we do not
/// lower `RLIMIT_CORE` on Linux: that limit would be inherited by every
/// local child. Elsewhere, the soft core limit is set to 0. Returns whether
/// the OS allowed it; failing is not fatal (a log line says so).
pub fn disable_core_dumps() -> bool {
    #[cfg(target_os = "linux")]
    {
        nix::sys::prctl::set_dumpable(false).is_ok()
    }
    #[cfg(not(target_os = "linux"))]
    {
        use nix::sys::resource::{getrlimit, setrlimit, Resource};
        match getrlimit(Resource::RLIMIT_CORE) {
            Ok((_, hard)) => setrlimit(Resource::RLIMIT_CORE, 0, hard).is_ok(),
            Err(_) => false,
        }
    }
}

/// A growing buffer for an encoded frame that carries a password (SPAWN):
/// every allocation it outgrows is wiped before it is freed, and the last
/// one is wiped when the last [`bytes::Bytes`] made of it
/// ([`WipedBuf::into_bytes`]) is dropped, that is once the link's writer
/// has written the frame (or it was refused). Copies made on the way (the
/// writer's batch buffer for small frames, the kernel's pipe buffer) are
/// not covered; docs/SECURITY.md says so.
#[derive(Default)]
pub struct WipedBuf(Vec<u8>);

impl WipedBuf {
    pub fn into_bytes(self) -> bytes::Bytes {
        bytes::Bytes::from_owner(self)
    }
}

impl std::io::Write for WipedBuf {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        let need = self.0.len() + b.len();
        if need > self.0.capacity() {
            let mut bigger = Vec::with_capacity(need.max(self.0.capacity() * 2).max(256));
            bigger.extend_from_slice(&self.0);
            zeroize::Zeroize::zeroize(&mut self.0);
            self.0 = bigger;
        }
        self.0.extend_from_slice(b);
        Ok(b.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl AsRef<[u8]> for WipedBuf {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

impl Drop for WipedBuf {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.0);
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_wiped_buffer_holds_what_was_written_across_growth() {
        use std::io::Write;
        let mut w = super::WipedBuf::default();
        let data: Vec<u8> = (0..10_000u32).map(|i| i as u8).collect();
        for chunk in data.chunks(7) {
            w.write_all(chunk).unwrap();
        }
        let b = w.into_bytes();
        assert_eq!(&b[..], &data[..]);
        let shared = b.clone();
        drop(b);
        assert_eq!(&shared[..], &data[..], "wiped only when the last one goes");
    }

    #[test]
    #[cfg(target_os = "linux")]
    fn core_dumps_are_disabled() {
        assert!(super::disable_core_dumps());
        assert!(!nix::sys::prctl::get_dumpable().unwrap());
    }
}
