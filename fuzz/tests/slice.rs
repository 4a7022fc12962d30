//! A bounded slice of the fuzz run, in the test suite: every target, a few
//! thousand inputs each (the full run is `cargo run --release -p
//! econtext-fuzz -- --inputs 10000000`, see docs/SECURITY.md).

use std::time::Duration;

use econtext_fuzz::targets::Target;
use econtext_fuzz::{run, Options};

fn python() -> Option<String> {
    [
        "/usr/bin/python3",
        "/root/.pyenv/versions/2.7.18/bin/python",
    ]
    .iter()
    .find(|p| std::path::Path::new(p).exists())
    .map(|p| p.to_string())
}

#[test]
fn hostile_bytes_into_every_decoder_never_panic_hang_or_grow() {
    let mut opts = Options {
        inputs: 5_000,
        python_inputs: 3_000,
        seed: 12,
        ..Default::default()
    };
    match python() {
        Some(p) => opts.python = p,
        None => {
            eprintln!("SKIP: no Python interpreter: the python fuzz target is not run");
            opts.targets.retain(|t| *t != Target::Python);
        }
    }
    let report = run(&opts);
    eprintln!("{report}");
    for t in &report.targets {
        assert!(
            t.findings.is_empty(),
            "{}: {:?}",
            t.target.name(),
            t.findings
        );
        assert!(t.inputs > 0, "{} ran nothing", t.target.name());
        // A hang shows as one slow input; the margin is for a loaded
        // machine running a debug build.
        assert!(
            t.slowest < Duration::from_secs(5),
            "{}: {:?}",
            t.target.name(),
            t.slowest
        );
    }
    assert!(
        report.max_rss_kib < 512 * 1024,
        "peak RSS {} KiB",
        report.max_rss_kib
    );
}

#[test]
fn the_python_codec_also_holds_on_python_2() {
    let py2 = "/root/.pyenv/versions/2.7.18/bin/python";
    if !std::path::Path::new(py2).exists() {
        eprintln!("SKIP: {py2} not found: the Python 2 codec is not fuzzed");
        return;
    }
    let report = run(&Options {
        targets: vec![Target::Python],
        python_inputs: 3_000,
        python: py2.into(),
        seed: 3,
        ..Default::default()
    });
    let t = &report.targets[0];
    assert!(
        t.findings.is_empty() && t.inputs == 3_000,
        "{:?}",
        t.findings
    );
}
