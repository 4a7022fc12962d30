//! The agent's first stage: one POSIX `sh -c` script, whatever the method.
//!
//! 1. Checks the platform: `uname -m` must be the build's, and the
//!    binary's ELF interpreter (its libc) must exist. Otherwise it says
//!    `econtext-agent: platform mismatch` and exits 125, before anything is
//!    shipped ([`ConnectError::PlatformMismatch`]).
//! 2. Looks for a Python on PATH to load the binary with: the ranked
//!    [`PYTHON_CANDIDATES`] that Python contexts use (`python3`,
//!    `python3.13` ... `python2.7`, `python`), run with `-S`. When the one
//!    found is a script (a version manager's shim, which costs a shell
//!    script per connect: ~150 ms with pyenv) and `/usr/bin/python3`
//!    exists, that is used instead: Python only copies bytes here. Without
//!    one,
//!    checks for the tools it needs instead ([`SH_TOOLS`]); a missing one is
//!    `econtext-agent: tools missing` and exit 124
//!    ([`ConnectError::ToolsMissing`]).
//! 3. Says `EC0`, reads the size line (sh's `read` takes one byte at a
//!    time from a pipe, never more than the line).
//! 4. With Python: Python reads exactly that many bytes, decompresses
//!    them, writes them into a `memfd_create` file and execs
//!    `/proc/self/fd/N` with argv `[econtext:NAME]`: nothing touches disk.
//!    If memfd or its exec is refused (`vm.memfd_noexec`, no /proc, or the
//!    master's [`AgentOptions::force_fallback`]), it says so on stderr
//!    (which the master logs) and runs the binary from a private temp dir.
//! 5. Without Python: `head -c | gzip -dc` into a private (0700) temp dir
//!    on the first of `$XDG_RUNTIME_DIR`, `/dev/shm`, `$TMPDIR`, `/tmp`,
//!    `$HOME` where a probe run of the binary works (noexec mounts fail the
//!    probe), said on stderr.
//!
//! In both fallbacks the agent deletes its file and the directory as the
//! first thing it does (`ECONTEXT_AGENT_TMP`), so nothing is left on disk.
//!
//! [`ConnectError::PlatformMismatch`]: econtext_bootstrap::ConnectError::PlatformMismatch
//! [`ConnectError::ToolsMissing`]: econtext_bootstrap::ConnectError::ToolsMissing

use std::path::PathBuf;

use econtext_bootstrap::first_stage::PYTHON_CANDIDATES;

use crate::platform::Platform;

/// What the `sh` first stage needs when the target has no Python.
pub const SH_TOOLS: &[&str] = &["uname", "head", "gzip", "mkdir", "chmod", "rm", "cat"];

/// How a context is started as a Rust agent
/// (`ConnectOptions::agent`, `?agent=rust` in a TARGET).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct AgentOptions {
    /// The binary shipped and run as the context. Default: this program
    /// (`/proc/self/exe`), which must call [`crate::run_if_child`] first
    /// thing in `main`.
    pub binary: PathBuf,
    /// Skip memfd and run from the private temp dir (tests, and targets
    /// where memfd exec is known to be refused).
    pub force_fallback: bool,
    /// Opt-in: keep the binary in the target user's cache directory
    /// (`${XDG_CACHE_HOME:-$HOME/.cache}/econtext/agent-SHA256`, mode 0700)
    /// and run it from there when its SHA-256 matches, so a second connect
    /// ships nothing. It leaves that file on the target's disk.
    pub cache: bool,
}

impl Default for AgentOptions {
    fn default() -> Self {
        AgentOptions {
            binary: PathBuf::from("/proc/self/exe"),
            force_fallback: false,
            cache: false,
        }
    }
}

impl AgentOptions {
    pub fn binary(mut self, path: impl Into<PathBuf>) -> Self {
        self.binary = path.into();
        self
    }

    pub fn force_fallback(mut self, yes: bool) -> Self {
        self.force_fallback = yes;
        self
    }

    /// See [`AgentOptions::cache`].
    pub fn cache(mut self, yes: bool) -> Self {
        self.cache = yes;
        self
    }
}

/// Python's half (2.7 and 3.x): argv is `SIZE NAME FORCE CACHEFILE`
/// (`CACHEFILE` empty without a cache). No single quote anywhere: it sits
/// inside sh single quotes.
const PY_STAGE: &str = r#"import os,sys,zlib
a=sys.argv;n=int(a[1]);N="econtext:"+a[2];F=a[3]=="1";K=a[4]
b=b""
while len(b)<n:
 c=os.read(0,n-len(b))
 if not c:os._exit(1)
 b+=c
b=zlib.decompress(b,31)
e=dict(os.environ);e["ECONTEXT_AGENT"]="1"
def w(fd):
 i=0
 while i<len(b):i+=os.write(fd,b[i:i+1048576])
if K:
 try:
  d=os.path.dirname(K)
  if not os.path.isdir(d):os.makedirs(d,448)
  t="%s.%d"%(K,os.getpid());fd=os.open(t,os.O_WRONLY|os.O_CREAT|os.O_EXCL,448);w(fd);os.close(fd);os.rename(t,K)
  sys.stderr.write("econtext-agent: cached the binary at %s\n"%K)
 except OSError as x:
  sys.stderr.write("econtext-agent: cannot cache the binary at %s: %s\n"%(K,x))
try:
 if F:raise OSError("the master forced the fallback")
 if hasattr(os,"memfd_create"):fd=os.memfd_create(N,1)
 else:
  import ctypes;L=ctypes.CDLL(None,use_errno=True)
  if not hasattr(L,"memfd_create"):raise OSError("no memfd_create in libc")
  fd=L.memfd_create(N.encode(),1)
  if fd<0:raise OSError(ctypes.get_errno(),"memfd_create")
 w(fd);os.execve("/proc/self/fd/%d"%fd,[N],e)
except OSError as x:
 sys.stderr.write("econtext-agent: memfd exec refused (%s): running from a private temp dir, deleted once started\n"%(x,))
 import tempfile;t=tempfile.mkdtemp(prefix=".econtext.");p=t+"/"+N
 fd=os.open(p,os.O_WRONLY|os.O_CREAT|os.O_EXCL,448);w(fd);os.close(fd)
 e["ECONTEXT_AGENT_TMP"]=t;os.chdir(t);os.execve(p,["./"+N],e)
"#;

/// The shell's half; `@NAME@`, `@MACHINE@`, `@INTERP@`, `@FORCE@`,
/// `@HASH@`, `@TOOLS@`, `@PYTHONS@` and `@PY@` are substituted (all made
/// of safe characters). With a cache (`@HASH@` not empty), a binary in
/// `${XDG_CACHE_HOME:-$HOME/.cache}/econtext/agent-HASH` whose SHA-256 is
/// HASH runs at once: the stage says nothing and the agent itself says
/// `EC1`, so the master sends nothing (`SpawnSpec::payload_skippable`).
/// Otherwise the received binary is stored there for next time.
const SH_STAGE: &str = r#"n=@NAME@; M=@MACHINE@; I=@INTERP@; x=$(uname -m 2>/dev/null)
if [ "$x" != "$M" ] || { [ -n "$I" ] && [ ! -e "$I" ]; }; then
 i=; [ -n "$I" ] && [ ! -e "$I" ] && i=" without $I"
 echo "econtext-agent: platform mismatch: expected $M${I:+ with $I}, found ${x:-unknown}$i" >&2; exit 125
fi
p=; for c in @PYTHONS@; do x=$(command -v $c 2>/dev/null) || continue; p=$x
 case $(head -c 2 "$x" 2>/dev/null) in '#!') [ -x /usr/bin/python3 ] && p=/usr/bin/python3;; esac; break; done
if [ -z "$p" ]; then
 m=; for t in @TOOLS@; do command -v $t >/dev/null 2>&1 || m="$m $t"; done
 [ -z "$m" ] || { echo "econtext-agent: tools missing:$m" >&2; exit 124; }
fi
H=@HASH@; cf=
if [ -n "$H" ]; then
 c=${XDG_CACHE_HOME:-}; [ -n "$c" ] || { [ -n "${HOME:-}" ] && c="$HOME/.cache"; }
 [ -n "$c" ] && cf="$c/econtext/agent-$H"
 if [ -n "$cf" ] && [ -f "$cf" ] && [ -x "$cf" ]; then
  h=
  if command -v sha256sum >/dev/null 2>&1; then h=$(sha256sum "$cf" 2>/dev/null); h=${h%% *}
  elif [ -n "$p" ]; then h=$("$p" -c 'import hashlib,sys;print(hashlib.sha256(open(sys.argv[1],"rb").read()).hexdigest())' "$cf" 2>/dev/null); fi
  if [ "$h" = "$H" ]; then
   echo "econtext-agent: running the cached binary $cf (nothing shipped)" >&2
   [ -n "$p" ] && exec "$p" -S -c 'import os,sys;e=dict(os.environ);e["ECONTEXT_AGENT"]="1";os.execve(sys.argv[1],[sys.argv[2]],e)' "$cf" "econtext:$n"
   ECONTEXT_AGENT=1 exec "$cf"
  fi
 fi
fi
echo EC0
read s || exit 1
case $s in ''|*[!0-9]*) echo "econtext-agent: bad size line" >&2; exit 1;; esac
[ -n "$p" ] && exec "$p" -S -c '@PY@' "$s" "$n" @FORCE@ "$cf"
umask 077; f=
for d in "${XDG_RUNTIME_DIR:-}" /dev/shm "${TMPDIR:-/tmp}" /tmp "${HOME:-}"; do
 [ -n "$d" ] && [ -d "$d" ] && [ -w "$d" ] || continue
 t="$d/.econtext.$$"; mkdir "$t" 2>/dev/null || continue
 if [ -z "$f" ]; then head -c "$s" | gzip -dc > "$t/a" || { rm -rf "$t"; exit 1; }
 else cat "$f" > "$t/a" || { rm -rf "$t"; continue; }; rm -rf "${f%/a}"; fi
 f="$t/a"; chmod 700 "$f"
 if ECONTEXT_AGENT=probe "$f" </dev/null >/dev/null 2>&1; then
  echo "econtext-agent: no Python on the target: running from a private temp dir ($t), deleted once started" >&2
  if [ -n "$cf" ] && mkdir -p -m 700 "${cf%/*}" 2>/dev/null && cat "$f" > "$cf.$$" 2>/dev/null && chmod 700 "$cf.$$" && mv "$cf.$$" "$cf" 2>/dev/null; then
   echo "econtext-agent: cached the binary at $cf" >&2
  else rm -f "$cf.$$" 2>/dev/null; fi
  mv "$f" "$t/econtext:$n" 2>/dev/null && f="$t/econtext:$n"
  cd "$t" && ECONTEXT_AGENT=1 ECONTEXT_AGENT_TMP="$t" exec "./${f##*/}"
 fi
done
[ -n "$f" ] && rm -rf "${f%/*}"
echo "econtext-agent: no directory where the agent may run (all noexec or unwritable)" >&2; exit 123
"#;

/// The context name as it may appear in argv, a file name and Python
/// strings: safe characters only, no `/`.
pub fn safe_name(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "._-:@+=,".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect()
}

fn quoted_safe_path(p: &Option<String>) -> String {
    let p = p.as_deref().unwrap_or("");
    if p.chars()
        .all(|c| c.is_ascii_alphanumeric() || "._-/+".contains(c))
    {
        format!("'{p}'")
    } else {
        // A path we cannot quote safely is not checked (never happens for
        // real interpreters).
        "''".into()
    }
}

/// The script for context `name`; `sha256` is the binary's, used when
/// `opts.cache` is on.
pub fn script(name: &str, platform: &Platform, sha256: &str, opts: &AgentOptions) -> String {
    let hash = match opts.cache && sha256.chars().all(|c| c.is_ascii_hexdigit()) {
        true => sha256,
        false => "",
    };
    SH_STAGE
        .replace("@HASH@", &format!("'{hash}'"))
        .replace("@NAME@", &format!("'{}'", safe_name(name)))
        .replace("@MACHINE@", &format!("'{}'", safe_name(&platform.machine)))
        .replace("@INTERP@", &quoted_safe_path(&platform.interpreter))
        .replace("@FORCE@", if opts.force_fallback { "1" } else { "0" })
        .replace("@TOOLS@", &SH_TOOLS.join(" "))
        .replace("@PYTHONS@", &PYTHON_CANDIDATES.join(" "))
        .replace("@PY@", PY_STAGE)
}

/// The argv a method starts on the target (in place of `python -c ...`).
pub fn argv(name: &str, platform: &Platform, sha256: &str, opts: &AgentOptions) -> Vec<String> {
    vec![
        "/bin/sh".into(),
        "-c".into(),
        script(name, platform, sha256, opts),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn here() -> Platform {
        Platform::of(&std::fs::read("/proc/self/exe").unwrap()).unwrap()
    }

    #[test]
    fn hostile_names_cannot_leave_their_quotes() {
        let s = script(
            "a'; rm -rf / #$(x)`y`",
            &here(),
            "",
            &AgentOptions::default(),
        );
        assert!(s.starts_with("n='a___rm_-rf______x__y_';"), "{s}");
        assert!(!PY_STAGE.contains('\''));
    }

    #[test]
    fn wrong_machine_is_refused_before_ec0() {
        let mut p = here();
        p.machine = "sparc64".into();
        let out = std::process::Command::new("/bin/sh")
            .args(["-c", &script("t", &p, "", &AgentOptions::default())])
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(125));
        assert!(out.stdout.is_empty(), "EC0 was sent");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("econtext-agent: platform mismatch: expected sparc64 with /"),
            "{err}"
        );
    }

    #[test]
    fn missing_libc_is_refused_before_ec0() {
        let mut p = here();
        p.interpreter = Some("/lib/ld-musl-x86_64.so.404".into());
        let out = std::process::Command::new("/bin/sh")
            .args(["-c", &script("t", &p, "", &AgentOptions::default())])
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(125));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("without /lib/ld-musl-x86_64.so.404"), "{err}");
    }
}
