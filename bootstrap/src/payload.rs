//! The bootstrap payload: the minimized core plus the line that calls
//! `main(config)`, zlib-compressed and size-prefixed for the first stage.

use std::io::Write;
use std::sync::{Arc, OnceLock};

use flate2::{write::ZlibEncoder, Compression};

use crate::compiled::Compiled;
use crate::minimize::minimize_source;
use crate::modules::builtin_source;

/// The Python core as it is in the repository.
pub const CORE_SOURCE: &str = include_str!("../python/econtext_core.py");

/// The core, minimized once per process.
pub fn minimized_core() -> &'static str {
    static CORE: OnceLock<String> = OnceLock::new();
    CORE.get_or_init(|| minimize_source(CORE_SOURCE))
}

/// The child's spin window when the config does not say (the master's
/// own default, econtext_actors::spin::SpinPolicy::DEFAULT_WINDOW).
pub const DEFAULT_SPIN_US: u64 =
    econtext_actors::spin::SpinPolicy::DEFAULT_WINDOW.as_micros() as u64;

/// What a child is told in its `main(config)` call. `Debug` never shows
/// the key, and the key is wiped from memory when the config is dropped.
#[derive(Clone, PartialEq, Eq)]
pub struct ChildConfig {
    pub context_id: u16,
    pub parent_id: u16,
    pub name: String,
    /// The tree's HMAC secret.
    pub key: Vec<u8>,
    /// Python's numeric level for the child's root logger.
    pub log_level: u8,
    pub max_message_size: usize,
    /// Ancestors, parent first, the master last.
    pub ancestors: Vec<u16>,
    /// The master's module search path, for ImportError messages.
    pub module_path: String,
    /// How long an import waits for the parent's GET_MODULE reply before
    /// it is an ImportError (the connect timeout), in milliseconds.
    pub import_timeout_ms: u64,
    /// How long the child polls its parent stream after writing to it
    /// before it sleeps, in microseconds (0: never; see
    /// econtext_actors::spin and docs/ARCHITECTURE.md).
    pub spin_us: u64,
}

impl std::fmt::Debug for ChildConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChildConfig")
            .field("context_id", &self.context_id)
            .field("parent_id", &self.parent_id)
            .field("name", &self.name)
            .field("key", &"********")
            .field("log_level", &self.log_level)
            .field("max_message_size", &self.max_message_size)
            .field("ancestors", &self.ancestors)
            .field("module_path", &self.module_path)
            .field("spin_us", &self.spin_us)
            .finish()
    }
}

impl Drop for ChildConfig {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.key);
    }
}

impl ChildConfig {
    /// The config as a MessagePack map (for SPAWN, where an intermediate
    /// writes the `main(...)` line itself).
    pub fn to_msgpack_map(&self) -> std::collections::BTreeMap<String, econtext_wire::Value> {
        use econtext_wire::Value;
        let key: String = self.key.iter().map(|b| format!("{b:02x}")).collect();
        [
            ("context_id", Value::from(self.context_id)),
            ("parent_id", Value::from(self.parent_id)),
            ("name", Value::from(self.name.as_str())),
            ("key", Value::from(key)),
            ("log_level", Value::from(self.log_level)),
            (
                "max_message_size",
                Value::from(self.max_message_size as u64),
            ),
            (
                "ancestors",
                Value::Array(self.ancestors.iter().map(|&a| Value::from(a)).collect()),
            ),
            ("module_path", Value::from(self.module_path.as_str())),
            ("import_timeout", Value::from(self.import_timeout_ms)),
            ("spin_us", Value::from(self.spin_us)),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect()
    }

    /// The config as a Python dict literal, valid on 2.7 and 3.x.
    pub fn to_python(&self) -> String {
        let key: String = self.key.iter().map(|b| format!("{b:02x}")).collect();
        let anc: Vec<String> = self.ancestors.iter().map(|a| a.to_string()).collect();
        format!(
            "{{'context_id': {}, 'parent_id': {}, 'name': {}, 'key': '{}', 'log_level': {}, \
             'max_message_size': {}, 'ancestors': [{}], 'module_path': {}, 'import_timeout': {}, \
             'spin_us': {}}}",
            self.context_id,
            self.parent_id,
            py_str(&self.name),
            key,
            self.log_level,
            self.max_message_size,
            anc.join(", "),
            py_str(&self.module_path),
            self.import_timeout_ms,
            self.spin_us
        )
    }
}

/// A Python string literal for `s` that means the same on 2.7 and 3.x.
fn py_str(s: &str) -> String {
    let mut out = String::from("'");
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\'' => out.push_str("\\'"),
            ' '..='~' => out.push(c),
            _ => out.push('_'),
        }
    }
    out.push('\'');
    out
}

/// The uncompressed script the child's interpreter runs.
pub fn script(config: &ChildConfig) -> String {
    let core = minimized_core();
    let mut s = String::with_capacity(core.len() + 256);
    s.push_str(core);
    if !s.ends_with('\n') {
        s.push('\n');
    }
    s.push_str("main(");
    s.push_str(&config.to_python());
    s.push_str(")\n");
    s
}

/// The minimized core ending in a newline: the bytes the payload carries
/// (and the master compiles, [`crate::compiled`]).
pub fn core_with_newline() -> &'static str {
    static CORE: OnceLock<String> = OnceLock::new();
    CORE.get_or_init(|| {
        let mut core = minimized_core().to_string();
        if !core.ends_with('\n') {
            core.push('\n');
        }
        core
    })
}

fn core_z() -> &'static [u8] {
    static CORE_Z: OnceLock<Vec<u8>> = OnceLock::new();
    CORE_Z.get_or_init(|| compress(core_with_newline().as_bytes()))
}

/// The bytes written after `EC0`: `"%d\n" % len(z) + z`, where `z` is the
/// core compressed once per process followed by the `main(...)` line as a
/// second zlib stream (the first stage inflates concatenated streams).
/// Compressing the core at level 9 costs 5 ms, on every connect before.
pub fn framed_payload(config: &ChildConfig) -> Vec<u8> {
    framed_preloading(config, None, &[], CoreSource::Send)
}

/// Whether a payload that carries the core compiled carries its source
/// too (without the compiled core it always does: it is what runs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CoreSource {
    /// For grandchildren: the context keeps it as CORE_SOURCE.
    Send,
    /// Left out (a lean start's leaf, 19 KB and a quarter of a millisecond
    /// of inflating less): if the context ever starts a child, it fetches
    /// the builtin `econtext.core` from the master first.
    OmitIfCompiled,
}

/// [`framed_payload`], with the core's code (and each module of `preload`
/// the master compiled too) first when `compiled` is given: the code
/// [`crate::compiled::core_for`] made for this target's interpreter, which
/// the first stage runs block by block before the `main(...)` line
/// (a lean start execs that line's source; the two-stage start compiles
/// it for the second interpreter). The builtin modules named in `preload`
/// (`econtext.fleet`...) are created at start, so a context that is sure
/// to need one never asks for it with GET_MODULE: compiled when they can
/// be, else minimized on the `main(...)` line. Names that are not builtin
/// modules are left out.
pub fn framed_preloading(
    config: &ChildConfig,
    compiled: Option<&Compiled>,
    preload: &[&str],
    source: CoreSource,
) -> Vec<u8> {
    let mut blocks: Vec<&[u8]> = Vec::new();
    let mut by_source = Vec::new();
    if let Some(c) = compiled {
        blocks.push(&c.core);
    }
    for &name in preload {
        match compiled.and_then(|c| c.module(name)) {
            Some(block) => blocks.push(block),
            None => by_source.push(name),
        }
    }
    if compiled.is_none() || source == CoreSource::Send {
        blocks.push(core_z());
    }
    let tail = match preload_z(&by_source) {
        // `main({config}` then the modules' `, {...})\n`, compressed once
        // per process (level 9 on their 4 KB was a tenth of the master's
        // CPU per fleet host): the first stage inflates streams in turn.
        Some(modules) => {
            let mut t = stored(format!("main({}", config.to_python()).as_bytes());
            t.extend_from_slice(&modules);
            t
        }
        None => stored(main_line(config, &[]).as_bytes()),
    };
    let len = blocks.iter().map(|b| b.len()).sum::<usize>() + tail.len();
    let mut out = format!("{len}\n").into_bytes();
    out.reserve(len);
    for b in blocks {
        out.extend_from_slice(b);
    }
    out.extend_from_slice(&tail);
    out
}

/// `main({config})`, or `main({config}, {name: (filename, source)...})`.
fn main_line(config: &ChildConfig, preload: &[&str]) -> String {
    match preload_arg(preload) {
        None => format!("main({})\n", config.to_python()),
        Some(modules) => format!("main({}{modules}", config.to_python()),
    }
}

/// `, {name: (filename, source)...})\n` for the builtin modules among
/// `preload`, or None when there is none.
fn preload_arg(preload: &[&str]) -> Option<String> {
    let modules: Vec<String> = preload
        .iter()
        .filter_map(|name| {
            let src = builtin_source(name)?;
            Some(format!(
                "{}: ({}, {})",
                py_str(name),
                py_str(&format!("<econtext builtin {name}>")),
                py_bytes(minimize_source(src).as_bytes())
            ))
        })
        .collect();
    (!modules.is_empty()).then(|| format!(", {{{}}})\n", modules.join(", ")))
}

/// Compressed [`preload_arg`]s by list of names (None: no builtin among
/// them).
type PreloadCache = std::sync::Mutex<std::collections::HashMap<String, Option<Arc<Vec<u8>>>>>;

/// [`preload_arg`] compressed, once per process and list of names.
fn preload_z(preload: &[&str]) -> Option<Arc<Vec<u8>>> {
    static Z: OnceLock<PreloadCache> = OnceLock::new();
    if preload.is_empty() {
        return None;
    }
    let key = preload.join(" ");
    let mut cache = Z
        .get_or_init(Default::default)
        .lock()
        .expect("preload cache");
    cache
        .entry(key)
        .or_insert_with(|| preload_arg(preload).map(|a| Arc::new(compress(a.as_bytes()))))
        .clone()
}

/// A bytes literal for `b` that means the same on 2.7 and 3.x.
fn py_bytes(b: &[u8]) -> String {
    let mut out = String::with_capacity(b.len() + 8);
    out.push_str("b'");
    for &c in b {
        match c {
            b'\\' => out.push_str("\\\\"),
            b'\'' => out.push_str("\\'"),
            b' '..=b'~' => out.push(c as char),
            _ => out.push_str(&format!("\\x{c:02x}")),
        }
    }
    out.push('\'');
    out
}

/// `data` as a zlib stream of stored (uncompressed) deflate blocks (RFC
/// 1950, 1951 3.2.4): for the per-host `main(...)` line. Deflating its few
/// hundred bytes at level 9 was a quarter of the master's CPU per fleet
/// host (miniz_oxide allocates and clears its tables for every stream), to
/// save about 150 bytes.
fn stored(data: &[u8]) -> Vec<u8> {
    const MAX: usize = u16::MAX as usize;
    let mut out = Vec::with_capacity(data.len() + 11 + 5 * (data.len() / MAX));
    out.extend_from_slice(&[0x78, 0x01]); // deflate, 32 KiB window, no dictionary
    let mut blocks = data.chunks(MAX).peekable();
    if data.is_empty() {
        out.extend_from_slice(&[1, 0, 0, 0xff, 0xff]);
    }
    while let Some(block) = blocks.next() {
        out.push(u8::from(blocks.peek().is_none())); // BFINAL, BTYPE 00
        let len = block.len() as u16;
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(&(!len).to_le_bytes());
        out.extend_from_slice(block);
    }
    out.extend_from_slice(&adler2::adler32_slice(data).to_be_bytes());
    out
}

/// `data` deflated at zlib's default level: what the core, its compiled
/// code and served modules travel as. Level 9 made them 1-2% smaller for
/// four to six times the CPU (37 ms for the core alone, once per master
/// process; more for its code and each module served).
pub fn compress(data: &[u8]) -> Vec<u8> {
    let mut z = ZlibEncoder::new(Vec::with_capacity(data.len() / 3), Compression::default());
    z.write_all(data).expect("in-memory write");
    z.finish().expect("in-memory write")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> ChildConfig {
        ChildConfig {
            context_id: 3,
            parent_id: 0,
            name: "h1".into(),
            key: vec![0xab],
            log_level: 20,
            max_message_size: 10,
            ancestors: vec![0],
            module_path: String::new(),
            import_timeout_ms: 30_000,
            spin_us: 50,
        }
    }

    #[test]
    fn preloaded_modules_ride_on_the_main_line_as_one_line_literals() {
        let plain = main_line(&config(), &[]);
        assert!(
            plain.starts_with("main({") && plain.ends_with("})\n"),
            "{plain}"
        );
        let line = main_line(&config(), &["econtext.fleet", "not.a.builtin"]);
        // One line (the first stage finds the last "\nmain("), the module
        // minimized, an unknown name left out.
        assert_eq!(line.matches('\n').count(), 1, "{line}");
        assert!(line.contains("}, {'econtext.fleet': ('<econtext builtin econtext.fleet>', b'"));
        assert!(!line.contains("not.a.builtin"));
        // Every byte value survives Python's reading of the literal.
        let all: Vec<u8> = (0..=255u8).collect();
        let code = format!(
            "import sys; sys.stdout.write(repr(list(bytearray({}))))",
            py_bytes(&all)
        );
        // (2.7 reads \\, \' and \xNN in b'' the same way.)
        let Ok(out) = std::process::Command::new("python3")
            .args(["-c", &code])
            .output()
        else {
            eprintln!("SKIP: no python3 to read the literal back");
            return;
        };
        let want = format!("{:?}", all).replace(' ', "");
        assert_eq!(String::from_utf8_lossy(&out.stdout).replace(' ', ""), want);
    }

    #[test]
    fn preloading_payload_inflates_to_core_and_the_one_main_line() {
        let framed = framed_preloading(&config(), None, &["econtext.fleet"], CoreSource::Send);
        let want = format!(
            "{}{}",
            core_with_newline(),
            main_line(&config(), &["econtext.fleet"])
        );
        assert_eq!(String::from_utf8(inflated(&framed)).unwrap(), want);
    }

    /// The zlib streams of a framed payload, inflated one after another
    /// as the first stage does.
    fn inflated(framed: &[u8]) -> Vec<u8> {
        use std::io::Read;
        let nl = framed.iter().position(|&b| b == b'\n').unwrap();
        let mut z = &framed[nl + 1..];
        let mut text = Vec::new();
        while !z.is_empty() {
            let mut d = flate2::bufread::ZlibDecoder::new(z);
            d.read_to_end(&mut text).unwrap();
            z = &z[d.total_in() as usize..];
        }
        text
    }

    #[test]
    fn compiled_pieces_go_first_and_a_lean_leaf_gets_no_core_source() {
        let modules = [("econtext.fleet".to_string(), compress(b"\x001\nF"))].into();
        let c = Compiled::from_parts(compress(b"\x001\nC"), modules);
        let main = main_line(&config(), &[]);
        // The compiled module goes as a block, so not on the main line;
        // a builtin with no block still rides there as source.
        let lean = framed_preloading(
            &config(),
            Some(&c),
            &["econtext.fleet"],
            CoreSource::OmitIfCompiled,
        );
        assert_eq!(
            inflated(&lean),
            format!("\x001\nC\x001\nF{main}").into_bytes()
        );
        let two = framed_preloading(&config(), Some(&c), &["econtext.fleet"], CoreSource::Send);
        let want = format!("\x001\nC\x001\nF{}{main}", core_with_newline());
        assert_eq!(inflated(&two), want.into_bytes());
        let mixed = framed_preloading(
            &config(),
            Some(&c),
            &["econtext.files", "econtext.fleet"],
            CoreSource::OmitIfCompiled,
        );
        let want = format!(
            "\x001\nC\x001\nF{}",
            main_line(&config(), &["econtext.files"])
        );
        assert_eq!(inflated(&mixed), want.into_bytes());
        // Without the compiled core the source always goes: it is what runs.
        let source = framed_preloading(&config(), None, &[], CoreSource::OmitIfCompiled);
        assert_eq!(
            inflated(&source),
            format!("{}{main}", core_with_newline()).into_bytes()
        );
    }

    #[test]
    fn stored_streams_inflate_to_their_data_in_zlib_and_in_python() {
        use std::io::Read;
        let big: Vec<u8> = (0..150_000u32).map(|i| (i % 251) as u8).collect();
        for data in [&b""[..], b"main({})\n", &big] {
            let z = stored(data);
            let mut back = Vec::new();
            flate2::read::ZlibDecoder::new(&z[..])
                .read_to_end(&mut back)
                .unwrap();
            assert_eq!(back, data);
        }
        // The first stage's own inflater (zlib's), stored stream after a
        // compressed one, as in a payload.
        let mut two = compress(b"core\n");
        two.extend(stored(b"main({})\n"));
        let code = "import sys,zlib,binascii\nz=binascii.unhexlify(sys.argv[1]);C=b''\n\
                    while z:d=zlib.decompressobj();C+=d.decompress(z);z=d.unused_data\n\
                    sys.stdout.write(C.decode())";
        let hex: String = two.iter().map(|b| format!("{b:02x}")).collect();
        // (python3 is what the project needs anyway: no skip.)
        let out = std::process::Command::new("python3")
            .args(["-c", code, &hex])
            .output()
            .expect("python3 to inflate the stream");
        assert_eq!(String::from_utf8_lossy(&out.stdout), "core\nmain({})\n");
    }

    #[test]
    fn config_literal_escapes_names() {
        let c = ChildConfig {
            context_id: 3,
            parent_id: 0,
            name: "it's\\x".into(),
            key: vec![0xab, 0x01],
            log_level: 20,
            max_message_size: 10,
            ancestors: vec![0],
            module_path: "/srv/lib".into(),
            import_timeout_ms: 30_000,
            spin_us: 50,
        };
        let s = c.to_python();
        assert!(s.contains("'name': 'it\\'s\\\\x'"));
        assert!(s.contains("'key': 'ab01'"));
        assert!(s.contains("'ancestors': [0]"));
        let debug = format!("{c:?}");
        assert!(!debug.contains("171") && !debug.contains("ab"), "{debug}");
        assert!(debug.contains("key: \"********\""), "{debug}");
    }
}
