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

#[cfg(test)]
mod tests {
    #[test]
    #[cfg(target_os = "linux")]
    fn core_dumps_are_disabled() {
        assert!(super::disable_core_dumps());
        assert!(!nix::sys::prctl::get_dumpable().unwrap());
    }
}
