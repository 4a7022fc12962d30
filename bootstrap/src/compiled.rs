//! The core compiled on the master for a target's interpreter, so that
//! the target loads code (`marshal.loads`, 0.2 ms) instead of compiling
//! 45 KB of source (13-14 ms of CPU on python3.11 here, the biggest piece
//! of a fleet host's Python start after the two interpreter starts).
//!
//! The first stage names its interpreter just before `EC0`
//! (`ECT <cache_tag> <magic>`, [`crate::handshake::Handshake::interpreter_tag`]).
//! When a connect asks for it ([`crate::connect::Payload::Core`] with
//! `compiled`), the master looks for a local CPython with the same
//! `cache_tag` and bytecode magic (the format `marshal` and `.pyc` files
//! share), has it compile the minimized core once, and sends the code
//! object ahead of the source (docs/PROTOCOL.md, "Payload"). Nothing is
//! written to any disk, the target's or the master's: one compile per
//! interpreter kind per master process, shared by every host (a fleet of
//! 50 same-version hosts compiles once). No match, a failure or a timeout:
//! the source alone, as always. A target that lies about its tag only
//! gets code its interpreter cannot load.

use std::collections::HashMap;
use std::process::Stdio;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::OnceCell;

use crate::minimize::minimize_source;
use crate::modules::builtin_source;
use crate::payload::{compress, core_with_newline};

/// A local interpreter's answer: its tag on a line, then, for each piece
/// on stdin (`<len> <name> <filename>\n<source>`, the core first), the
/// size of its marshal data on a line and the data: the core's code, and
/// for each module a block that appends `(name, filename, code)` to the
/// core's `_PRE` (so the target neither parses the module nor a literal of
/// it). Only when the tag is the one asked for or `*` was asked (run as
/// `python -S -X no_debug_ranges -c SCRIPT TAG`: nothing from
/// site-packages runs, and 3.11's column tables, a third of the compressed
/// code, stay out; tracebacks keep their line numbers).
const COMPILE_SCRIPT: &str = r#"import sys,marshal,binascii
I=sys.implementation;M=sys.modules['_frozen_importlib_external'].MAGIC_NUMBER
t=I.cache_tag+' '+binascii.hexlify(M).decode()
if sys.argv[1] not in(t,'*'):sys.exit(3)
r=sys.stdin.buffer;w=sys.stdout.buffer;w.write(t.encode()+b'\n');first=1
while 1:
 h=r.readline()
 if not h:break
 h=h[:-1].split(b' ',2)
 c=compile(r.read(int(h[0])),h[2].decode(),'exec')
 if not first:c=compile('_PRE.append((%r,%r,marshal.loads(%r)))'%(h[1].decode(),h[2].decode(),marshal.dumps(c)),'<preload>','exec')
 d=marshal.dumps(c);w.write(b'%d\n'%len(d)+d);first=0
"#;

/// The builtin modules compiled with the core, for
/// [`crate::payload::framed_preloading`]: the ones a subcommand preloads.
pub const PRELOADABLE: &[&str] = &["econtext.fleet", "econtext.files"];

/// The most a compiled core may take (it is about 100 KB).
const MAX_COMPILED: usize = 8 << 20;
/// How long one local interpreter may take to answer.
const COMPILE_TIMEOUT: Duration = Duration::from_secs(20);

/// The core, and the [`PRELOADABLE`] modules, compiled for one kind of
/// interpreter: each the zlib stream of `NUL <size> \n <marshal data>`,
/// the pieces the first stage runs in turn before the `main(...)` line.
#[derive(Debug, Default)]
pub struct Compiled {
    pub core: Vec<u8>,
    modules: HashMap<String, Vec<u8>>,
}

impl Compiled {
    /// From the pieces' zlib streams (the core's, each module's block).
    pub(crate) fn from_parts(core: Vec<u8>, modules: HashMap<String, Vec<u8>>) -> Self {
        Compiled { core, modules }
    }

    /// The block that creates the builtin module `name`, if compiled.
    pub fn module(&self, name: &str) -> Option<&[u8]> {
        self.modules.get(name).map(Vec::as_slice)
    }
}

type Cell = Arc<OnceCell<Option<Arc<Compiled>>>>;

fn cells() -> &'static Mutex<HashMap<String, Cell>> {
    static CELLS: OnceLock<Mutex<HashMap<String, Cell>>> = OnceLock::new();
    CELLS.get_or_init(Default::default)
}

fn cell(tag: &str) -> Cell {
    let mut m = cells().lock().expect("compiled cores lock");
    m.entry(tag.to_string()).or_default().clone()
}

/// The head start: `python` (the interpreter the targets were told to
/// run, when it is a path here, else `python3`) compiles the core for
/// itself while the first connections are still being made, so that
/// hosts with its tag need not wait at `EC0`. Once per process.
pub fn prewarm(python: &str) {
    let python = if python.starts_with('/') && std::path::Path::new(python).exists() {
        python.to_string()
    } else {
        "python3".to_string()
    };
    PREWARM.get_or_init(|| {
        let task = tokio::spawn(async move {
            if let Some((tag, compiled)) = compile_with(&python, "*").await {
                let _ = cell(&tag).set(Some(Arc::new(compiled)));
            }
        });
        Mutex::new(Some(task))
    });
}

static PREWARM: OnceLock<Mutex<Option<tokio::task::JoinHandle<()>>>> = OnceLock::new();

/// Waits for the head start, if one is running (bounded by the caller).
async fn prewarmed() {
    let task = PREWARM
        .get()
        .and_then(|m| m.lock().expect("prewarm lock").take());
    if let Some(t) = task {
        let _ = t.await;
    }
}

fn framed(code: &[u8]) -> Vec<u8> {
    let mut framed = format!("\0{}\n", code.len()).into_bytes();
    framed.extend_from_slice(code);
    compress(&framed)
}

/// The core (and the preloadable modules) compiled for `tag`, or `None`
/// when no local interpreter has that tag. `hint` is the interpreter the
/// target was told to run (tried too when it is an absolute path here).
/// Concurrent callers with one tag share one compile; its outcome, either
/// way, is kept for this process.
pub async fn core_for(tag: &str, hint: &str) -> Option<Arc<Compiled>> {
    prewarmed().await;
    cell(tag)
        .get_or_init(|| compile_for(tag.to_string(), hint.to_string()))
        .await
        .clone()
}

/// Local interpreters that may have `tag` (`cpython-311 ...`): the
/// versioned names first.
fn candidates(tag: &str, hint: &str) -> Vec<String> {
    let mut out = Vec::new();
    if let Some(v) = tag
        .split(' ')
        .next()
        .and_then(|t| t.strip_prefix("cpython-"))
        .filter(|v| v.len() >= 2 && v.bytes().all(|b| b.is_ascii_digit()))
    {
        let name = format!("python{}.{}", &v[..1], &v[1..]);
        for dir in ["/usr/bin/", "/usr/local/bin/"] {
            out.push(format!("{dir}{name}"));
        }
        out.push(name);
    }
    if hint.starts_with('/') {
        out.push(hint.to_string());
    }
    out.push("python3".into());
    let mut seen = std::collections::HashSet::new();
    out.retain(|p| seen.insert(p.clone()));
    out
}

async fn compile_for(tag: String, hint: String) -> Option<Arc<Compiled>> {
    for python in candidates(&tag, &hint) {
        if python.starts_with('/') && !std::path::Path::new(&python).exists() {
            continue;
        }
        if let Some((_, compiled)) = compile_with(&python, &tag).await {
            return Some(Arc::new(compiled));
        }
    }
    None
}

/// What the compile script reads: the minimized core, then each
/// preloadable module, each under its `<len> <name> <filename>` line.
fn compile_input() -> Vec<u8> {
    let mut input = Vec::new();
    let mut piece = |name: &str, filename: &str, src: &str| {
        input.extend_from_slice(format!("{} {name} {filename}\n", src.len()).as_bytes());
        input.extend_from_slice(src.as_bytes());
    };
    piece("econtext.core", "<stdin>", core_with_newline());
    for name in PRELOADABLE {
        if let Some(src) = builtin_source(name) {
            piece(
                name,
                &format!("<econtext builtin {name}>"),
                &minimize_source(src),
            );
        }
    }
    input
}

/// `python`'s tag and what it compiled, if its tag is `tag` (or `tag` is
/// `*`).
async fn compile_with(python: &str, tag: &str) -> Option<(String, Compiled)> {
    let mut child = tokio::process::Command::new(python)
        .args(["-S", "-X", "no_debug_ranges", "-c", COMPILE_SCRIPT, tag])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .ok()?;
    let mut stdin = child.stdin.take()?;
    let mut stdout = child.stdout.take()?;
    let work = async {
        let feed = async {
            let r = stdin.write_all(&compile_input()).await;
            drop(stdin);
            r
        };
        let mut out = Vec::new();
        let read = async {
            (&mut stdout)
                .take(MAX_COMPILED as u64 + 1)
                .read_to_end(&mut out)
                .await
        };
        let (fed, read) = tokio::join!(feed, read);
        fed.ok()?;
        read.ok()?;
        let status = child.wait().await.ok()?;
        if !status.success() || out.len() > MAX_COMPILED {
            return None;
        }
        let (got, compiled) = parse_output(&out)?;
        (tag == "*" || got == tag).then_some((got, compiled))
    };
    tokio::time::timeout(COMPILE_TIMEOUT, work)
        .await
        .ok()
        .flatten()
}

/// The compile script's answer: the tag, the core and every preloadable
/// module (all of them, or it is not an answer).
fn parse_output(out: &[u8]) -> Option<(String, Compiled)> {
    let nl = out.iter().position(|&b| b == b'\n')?;
    let tag = std::str::from_utf8(&out[..nl]).ok()?.trim_end().to_string();
    let mut pieces = Vec::new();
    let mut rest = &out[nl + 1..];
    while !rest.is_empty() {
        let nl = rest.iter().position(|&b| b == b'\n')?;
        let len: usize = std::str::from_utf8(&rest[..nl]).ok()?.parse().ok()?;
        let end = (nl + 1).checked_add(len)?;
        pieces.push(rest.get(nl + 1..end)?);
        rest = &rest[end..];
    }
    let (core, modules) = pieces.split_first()?;
    if modules.len() != PRELOADABLE.len() || core.is_empty() {
        return None;
    }
    let modules = PRELOADABLE
        .iter()
        .zip(modules)
        .map(|(name, code)| (name.to_string(), framed(code)))
        .collect();
    Some((tag, Compiled::from_parts(framed(core), modules)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn candidates_come_from_the_cache_tag() {
        assert_eq!(
            candidates("cpython-311 a70d0d0a", "/opt/py/bin/python3"),
            [
                "/usr/bin/python3.11",
                "/usr/local/bin/python3.11",
                "python3.11",
                "/opt/py/bin/python3",
                "python3"
            ]
        );
        assert_eq!(candidates("pypy39 0d0d", "python3"), ["python3"]);
        assert_eq!(candidates("cpython-3x; rm", "auto"), ["python3"]);
    }

    #[test]
    fn a_local_python_compiles_the_core_for_its_own_tag_only() {
        let Some(python) = ["/usr/bin/python3", "python3"]
            .into_iter()
            .find(|p| std::process::Command::new(p).arg("-V").output().is_ok())
        else {
            eprintln!("SKIP: no python3 to compile the core with");
            return;
        };
        let out = std::process::Command::new(python)
            .args([
                "-S",
                "-c",
                "import sys,binascii;print(sys.implementation.cache_tag+' '+binascii.hexlify(\
                 sys.modules['_frozen_importlib_external'].MAGIC_NUMBER).decode())",
            ])
            .output()
            .unwrap();
        let tag = String::from_utf8(out.stdout).unwrap().trim().to_string();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let (got, compiled) = rt.block_on(compile_with(python, &tag)).expect("compiled");
        assert_eq!(got, tag);
        assert!(compiled.core.len() > 10_000, "{}", compiled.core.len());
        for name in PRELOADABLE {
            assert!(compiled.module(name).is_some(), "{name}");
        }
        assert!(compiled.module("econtext.parent").is_none());
        assert_eq!(rt.block_on(compile_with(python, "*")).expect("any").0, tag);
        assert!(rt
            .block_on(compile_with(python, "cpython-10 00000000"))
            .is_none());
    }
}
