//! The platform an agent binary runs on: the architecture as `uname -m`
//! names it, and the ELF interpreter (which names the libc: glibc's
//! `/lib64/ld-linux-x86-64.so.2`, musl's `/lib/ld-musl-x86_64.so.1`, none
//! for a static binary). The first stage compares both with the target's
//! before anything is shipped.

/// What a binary needs from its target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Platform {
    /// `uname -m` on a machine that runs it (`x86_64`, `aarch64`).
    pub machine: String,
    /// The ELF interpreter's path; None for a static binary.
    pub interpreter: Option<String>,
}

/// `uname -m` for Rust's `target_arch`.
pub fn uname_machine(arch: &str) -> &str {
    match arch {
        "x86" => "i686",
        "arm" => "armv7l",
        "powerpc64" => "ppc64",
        other => other,
    }
}

impl Platform {
    /// The platform of `elf` (the bytes of an executable built for this
    /// machine's architecture).
    pub fn of(elf: &[u8]) -> Result<Platform, String> {
        Ok(Platform {
            machine: uname_machine(std::env::consts::ARCH).to_string(),
            interpreter: elf_interpreter(elf)?,
        })
    }

    /// How the first stage says what it needs, for errors.
    pub fn describe(&self) -> String {
        match &self.interpreter {
            Some(i) => format!("{} with {i}", self.machine),
            None => format!("{} (static)", self.machine),
        }
    }
}

fn field(elf: &[u8], at: usize, len: usize) -> Result<u64, String> {
    let b = elf
        .get(at..at + len)
        .ok_or_else(|| format!("ELF truncated at {at}"))?;
    Ok(b.iter()
        .rev()
        .fold(0u64, |acc, &byte| (acc << 8) | u64::from(byte)))
}

/// The PT_INTERP path of a 64-bit little-endian ELF executable.
pub fn elf_interpreter(elf: &[u8]) -> Result<Option<String>, String> {
    if elf.get(..4) != Some(b"\x7fELF") {
        return Err("not an ELF file".into());
    }
    if elf.get(4) != Some(&2) || elf.get(5) != Some(&1) {
        return Err("only 64-bit little-endian ELF agents are supported".into());
    }
    let phoff = field(elf, 0x20, 8)? as usize;
    let phentsize = field(elf, 0x36, 2)? as usize;
    let phnum = field(elf, 0x38, 2)? as usize;
    for i in 0..phnum {
        let ph = phoff + i * phentsize;
        if field(elf, ph, 4)? != 3 {
            continue;
        }
        let off = field(elf, ph + 8, 8)? as usize;
        let size = field(elf, ph + 0x20, 8)? as usize;
        let raw = elf
            .get(off..off + size)
            .ok_or("PT_INTERP outside the file")?;
        let path = raw.split(|&b| b == 0).next().unwrap_or_default();
        return String::from_utf8(path.to_vec())
            .map(Some)
            .map_err(|_| "PT_INTERP is not text".to_string());
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_test_binary_names_its_interpreter() {
        let me = std::fs::read("/proc/self/exe").unwrap();
        let p = Platform::of(&me).unwrap();
        assert_eq!(p.machine, uname_machine(std::env::consts::ARCH));
        let interp = p.interpreter.expect("a dynamically linked test binary");
        assert!(std::path::Path::new(&interp).exists(), "{interp}");
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        assert!(elf_interpreter(b"#!/bin/sh\n").is_err());
        assert!(elf_interpreter(b"\x7fELF\x02\x01").is_err());
        let mut short = b"\x7fELF\x02\x01".to_vec();
        short.resize(0x40, 0);
        short[0x20] = 0xff; // program headers far past the end
        short[0x38] = 1;
        short[0x36] = 56;
        assert!(elf_interpreter(&short).is_err());
    }
}
