//! `econtext-fuzz [--inputs N] [--python-inputs N] [--target NAME]...
//! [--seed N] [--python PATH]`: runs the fuzz targets and prints a table;
//! exits 1 if any input panicked or was refused in an unexpected way.

use std::process::ExitCode;

use econtext_fuzz::targets::Target;
use econtext_fuzz::{run, Options};

fn main() -> ExitCode {
    let mut opts = Options::default();
    let mut chosen = Vec::new();
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut val = || args.next().unwrap_or_default();
        match a.as_str() {
            "--inputs" => opts.inputs = val().replace('_', "").parse().unwrap_or(opts.inputs),
            "--python-inputs" => {
                opts.python_inputs = val().replace('_', "").parse().unwrap_or(opts.python_inputs)
            }
            "--seed" => opts.seed = val().parse().unwrap_or(opts.seed),
            "--python" => opts.python = val(),
            "--target" => match Target::from_name(&val()) {
                Some(t) => chosen.push(t),
                None => {
                    eprintln!("econtext-fuzz: targets are frames, sealed, payload, handshake, sanitize, python");
                    return ExitCode::from(64);
                }
            },
            _ => {
                eprintln!("usage: econtext-fuzz [--inputs N] [--python-inputs N] [--target NAME]... [--seed N] [--python PATH]");
                return ExitCode::from(64);
            }
        }
    }
    if !chosen.is_empty() {
        opts.targets = chosen;
    }
    let report = run(&opts);
    println!("{report}");
    for t in &report.targets {
        for f in &t.findings {
            println!("{}: {f}", t.target.name());
        }
    }
    if report.findings() > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}
