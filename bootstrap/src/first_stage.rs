//! The `python -c` command line that starts the first stage.

use std::io::Write;
use std::sync::OnceLock;

use base64::Engine;
use flate2::{write::ZlibEncoder, Compression};

/// The first stage's source; it finds the context's name in `N`.
pub const FIRST_STAGE: &str = include_str!("../python/first_stage.py");

/// How the first stage hands over to the core.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Start {
    /// The seed's two stages: the first stage forks, its parent re-executes
    /// the interpreter (named `python(econtext:NAME)` in `ps`, with `site`
    /// and site-packages) and that interpreter runs the core.
    #[default]
    TwoStage,
    /// The first stage runs the core itself, in its own `python -S`
    /// interpreter: no second interpreter start, no fork, no `site` (8-15
    /// ms of CPU per context here). For contexts that need nothing from
    /// the target's site-packages, such as `econtext run`'s; `ps` shows
    /// the `-c` command line instead of the context's name.
    Lean,
}

/// The argv that runs `python` with the first stage for context `name`.
///
/// The source is compressed and base64-encoded so that the command line
/// survives any shell quoting (ssh and sudo pass it through a shell) and
/// stays short. `-S` skips `site` for the first stage only (it needs
/// nothing beyond posix or os, sys and zlib): 9 ms of every connect here,
/// 46 ms on an interpreter with .pth files. The re-executed interpreter
/// that runs the core starts normally, with site-packages.
pub fn python_argv(python: &str, name: &str) -> Vec<String> {
    python_argv_for(python, name, Start::TwoStage)
}

/// [`python_argv`] with the hand-over `start` asks for.
pub fn python_argv_for(python: &str, name: &str, start: Start) -> Vec<String> {
    if python == DISCOVER_PYTHON {
        return discover_argv(name, start);
    }
    vec![
        python.to_string(),
        "-S".to_string(),
        "-c".to_string(),
        python_c_arg_for(name, start),
    ]
}

/// The interpreter name that asks for discovery: the first of
/// [`PYTHON_CANDIDATES`] found on the target's PATH.
pub const DISCOVER_PYTHON: &str = "auto";

/// The ranked interpreters tried when none is named.
pub const PYTHON_CANDIDATES: &[&str] = &[
    "python3",
    "python3.13",
    "python3.12",
    "python3.11",
    "python3.10",
    "python3.9",
    "python3.8",
    "python3.7",
    "python3.6",
    "/usr/libexec/platform-python",
    "python2.7",
    "python",
];

/// One `sh` command that starts the first stage with the first candidate
/// that exists: no extra round trip to find out which one the target has.
fn discover_argv(name: &str, start: Start) -> Vec<String> {
    let candidates = PYTHON_CANDIDATES.join(" ");
    let script = format!(
        "c={code}; for p in {candidates}; do \
         command -v \"$p\" >/dev/null 2>&1 && exec \"$p\" -S -c \"$c\"; done; \
         echo 'econtext: no Python interpreter found (tried {candidates})' >&2; exit 127",
        code = crate::method::shell_quote(&python_c_arg_for(name, start)),
    );
    vec!["/bin/sh".to_string(), "-c".to_string(), script]
}

/// The argument that follows `-c`.
pub fn python_c_arg(name: &str) -> String {
    python_c_arg_for(name, Start::TwoStage)
}

/// [`python_c_arg`] for the hand-over `start` asks for.
pub fn python_c_arg_for(name: &str, start: Start) -> String {
    // The name lands inside a Python string literal (`N`, which the first
    // stage reads): keep it to characters that cannot end or escape it.
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
    // binascii, not base64: importing base64 imports re (with enum and
    // functools), which costs more instructions than starting Python does.
    format!(
        "import binascii,zlib;N='{safe}';exec(zlib.decompress(binascii.a2b_base64('{}')))",
        compressed_source(start)
    )
}

/// The first stage's source for `start`, compressed and base64-encoded
/// once per process: the context's name stays out of it (`N`), because
/// deflating it anew for every host was 1.4 ms of the master's CPU each.
fn compressed_source(start: Start) -> &'static str {
    static TWO: OnceLock<String> = OnceLock::new();
    static LEAN: OnceLock<String> = OnceLock::new();
    let cell = match start {
        Start::TwoStage => &TWO,
        Start::Lean => &LEAN,
    };
    cell.get_or_init(|| {
        let mut src = FIRST_STAGE.to_string();
        if start == Start::Lean {
            src = src.replacen("\nL=0\n", "\nL=1\n", 1);
        }
        let mut z = ZlibEncoder::new(Vec::new(), Compression::best());
        z.write_all(src.as_bytes()).expect("in-memory write");
        base64::engine::general_purpose::STANDARD.encode(z.finish().expect("in-memory"))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The first stage's source inside a `-c` argument.
    fn source_of(c_arg: &str) -> String {
        use std::io::Read;
        let b64 = c_arg.split('\'').nth(3).unwrap();
        let z = base64::engine::general_purpose::STANDARD
            .decode(b64)
            .unwrap();
        let mut src = String::new();
        flate2::read::ZlibDecoder::new(&z[..])
            .read_to_string(&mut src)
            .unwrap();
        src
    }

    #[test]
    fn hostile_names_are_neutralised() {
        let argv = python_argv("python3", "local.1'; rm -rf / #");
        assert_eq!(argv[1..3], ["-S", "-c"]);
        // The name, restricted to characters that cannot end a Python
        // string literal, then only base64 between the quotes: no shell or
        // Python metacharacter from the name survives into the command.
        assert!(
            argv[3].starts_with("import binascii,zlib;N='local.1___rm_-rf_/__';exec("),
            "{}",
            argv[3]
        );
        let b64 = argv[3].split('\'').nth(3).unwrap();
        assert!(b64
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "+/=".contains(c)));
        let src = source_of(&argv[3]);
        assert!(src.contains("(econtext:'+N+')"), "{src}");
        // The same compressed source for every name.
        assert_eq!(source_of(&python_argv("python3", "h2")[3]), src);
    }

    #[test]
    fn lean_start_sets_only_the_first_stages_switch() {
        let two = source_of(&python_argv("python3", "h1")[3]);
        let lean = source_of(&python_argv_for("python3", "h1", Start::Lean)[3]);
        assert!(two.contains("\nL=0\n") && !two.contains("\nL=1\n"), "{two}");
        assert_eq!(lean, two.replacen("\nL=0\n", "\nL=1\n", 1));
        let discover = python_argv_for(DISCOVER_PYTHON, "h1", Start::Lean);
        let quoted = crate::method::shell_quote(&python_c_arg_for("h1", Start::Lean));
        assert!(discover[2].contains(&quoted));
    }

    #[test]
    fn discovery_is_one_sh_command_trying_the_ranked_list() {
        let argv = python_argv(DISCOVER_PYTHON, "h1");
        assert_eq!(argv[..2], ["/bin/sh", "-c"]);
        assert!(
            argv[2].contains("for p in python3 python3.13"),
            "{}",
            argv[2]
        );
        assert!(argv[2].contains("/usr/libexec/platform-python python2.7 python;"));
        // It really starts the first stage with an interpreter found here.
        let out = std::process::Command::new("/bin/sh")
            .args([
                "-c",
                &argv[2].replace("exec \"$p\"", "echo \"$p\"; exit 0; exec \"$p\""),
            ])
            .output()
            .unwrap();
        assert!(String::from_utf8_lossy(&out.stdout).starts_with("python"));
    }
}
