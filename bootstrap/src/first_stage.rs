//! The `python -c` command line that starts the first stage.

use std::io::Write;

use base64::Engine;
use flate2::{write::ZlibEncoder, Compression};

/// The first stage's source; `CONTEXT_NAME` is replaced per context.
pub const FIRST_STAGE: &str = include_str!("../python/first_stage.py");

/// The argv that runs `python` with the first stage for context `name`.
///
/// The source is compressed and base64-encoded so that the command line
/// survives any shell quoting (ssh and sudo pass it through a shell) and
/// stays short. `-S` skips `site` for the first stage only (it needs
/// nothing beyond os, sys and zlib): 9 ms of every connect here, 46 ms on
/// an interpreter with .pth files. The re-executed interpreter that runs
/// the core starts normally, with site-packages.
pub fn python_argv(python: &str, name: &str) -> Vec<String> {
    vec![
        python.to_string(),
        "-S".to_string(),
        "-c".to_string(),
        python_c_arg(name),
    ]
}

/// The argument that follows `-c`.
pub fn python_c_arg(name: &str) -> String {
    // The name lands inside a Python string literal in the first stage:
    // keep it to characters that cannot end or escape that literal.
    let safe: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "._-:@/+=,".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect();
    let src = FIRST_STAGE.replace("CONTEXT_NAME", &safe);
    let mut z = ZlibEncoder::new(Vec::new(), Compression::best());
    z.write_all(src.as_bytes()).expect("in-memory write");
    let b64 = base64::engine::general_purpose::STANDARD.encode(z.finish().expect("in-memory"));
    format!("import base64,zlib;exec(zlib.decompress(base64.b64decode('{b64}')))")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostile_names_are_neutralised() {
        use std::io::Read;
        let argv = python_argv("python3", "local.1'; rm -rf / #");
        assert_eq!(argv[1..3], ["-S", "-c"]);
        // Only base64 between the quotes: no shell or Python metacharacter
        // from the name survives into the command line.
        let b64 = argv[3].split('\'').nth(1).unwrap();
        assert!(b64
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "+/=".contains(c)));
        let z = base64::engine::general_purpose::STANDARD
            .decode(b64)
            .unwrap();
        let mut src = String::new();
        flate2::read::ZlibDecoder::new(&z[..])
            .read_to_string(&mut src)
            .unwrap();
        assert!(src.contains("(econtext:local.1___rm_-rf_/__)"), "{src}");
    }
}
