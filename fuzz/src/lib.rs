//! econtext-fuzz: a mutation fuzzer for everything econtext decodes from a
//! peer. cargo-fuzz needs a nightly toolchain for its sanitizer flags, and
//! this project builds on stable, so this is a plain binary: seeds from
//! `wire/vectors` (every stream, and every payload inside them), mutated
//! by [`mutate::Mutator`], with an outcome-guided corpus (an input whose
//! outcome, say a new error variant, was not seen before joins the seeds).
//!
//! The principal types:
//! - [`targets::Target`]: frames (raw streams into `FrameCodec`), sealed
//!   (frames with valid MACs, so the payload path is reached),
//!   payload (`check_structure`, `decode_value`, every typed decoder),
//!   handshake (the `EC0`/`EC1` parser), sanitize (the sanitizer and
//!   IoLogger's splitter) and python (the Python core's `unpack`).
//! - [`run`]: runs targets for N inputs each and returns a [`Report`]:
//!   panics (each input saved), the slowest input (a hang shows there),
//!   and the process's peak memory.
//!
//! `cargo run --release -p econtext-fuzz -- --inputs 10000000` is the full
//! run (docs/SECURITY.md has its figures); `fuzz/tests/slice.rs` runs a
//! bounded slice in the test suite.

pub mod mutate;
pub mod python;
pub mod targets;

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use econtext_wire::{Direction, FrameCodec, DEFAULT_MAX_MESSAGE_SIZE};
use tokio_util::codec::Decoder;

use mutate::Mutator;
use targets::{Target, VECTOR_KEY};

/// What to run.
#[derive(Debug, Clone)]
pub struct Options {
    pub targets: Vec<Target>,
    /// Inputs per Rust target.
    pub inputs: u64,
    /// Inputs for the Python target (it runs about 100 times slower).
    pub python_inputs: u64,
    pub python: String,
    pub seed: u64,
    /// Where inputs that panicked are written.
    pub findings: PathBuf,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            targets: Target::ALL.to_vec(),
            inputs: 100_000,
            python_inputs: 10_000,
            python: "python3".into(),
            seed: 1,
            findings: std::env::temp_dir().join("econtext-fuzz-findings"),
        }
    }
}

/// One target's figures.
#[derive(Debug, Clone)]
pub struct TargetReport {
    pub target: Target,
    pub inputs: u64,
    pub elapsed: Duration,
    pub slowest: Duration,
    pub outcomes: usize,
    pub corpus: usize,
    /// Panics (Rust) or unexpected exceptions (Python), with the file
    /// each input was saved to.
    pub findings: Vec<String>,
}

/// The whole run.
#[derive(Debug, Clone)]
pub struct Report {
    pub targets: Vec<TargetReport>,
    /// Peak resident memory of this process, KiB.
    pub max_rss_kib: i64,
}

impl Report {
    pub fn findings(&self) -> usize {
        self.targets.iter().map(|t| t.findings.len()).sum()
    }
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "{:<10} {:>11} {:>9} {:>11} {:>11} {:>8} {:>7} {:>8}",
            "target", "inputs", "secs", "inputs/s", "slowest_us", "outcomes", "corpus", "findings"
        )?;
        for t in &self.targets {
            let secs = t.elapsed.as_secs_f64();
            writeln!(
                f,
                "{:<10} {:>11} {:>9.1} {:>11.0} {:>11} {:>8} {:>7} {:>8}",
                t.target.name(),
                t.inputs,
                secs,
                t.inputs as f64 / secs.max(1e-9),
                t.slowest.as_micros(),
                t.outcomes,
                t.corpus,
                t.findings.len()
            )?;
        }
        write!(f, "peak RSS: {} MiB", self.max_rss_kib / 1024)
    }
}

/// The seeds: every vector stream, and every frame's data inside them.
pub fn seeds() -> Vec<Vec<u8>> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../wire/vectors");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .map(|rd| rd.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    files.sort();
    let mut out = vec![
        Vec::new(),
        b"EC0\n".to_vec(),
        b"banner\nEC0\nEC1\n\x00".to_vec(),
    ];
    for p in files
        .iter()
        .filter(|p| p.extension().is_some_and(|e| e == "bin"))
    {
        let Ok(bytes) = std::fs::read(p) else {
            continue;
        };
        for dir in [Direction::Up, Direction::Down] {
            let mut codec = FrameCodec::new(VECTOR_KEY, dir, DEFAULT_MAX_MESSAGE_SIZE);
            let mut buf = BytesMut::from(&bytes[..]);
            while let Ok(Some(f)) = codec.decode(&mut buf) {
                let mut sealed = Vec::with_capacity(12 + f.data.len());
                let h = &f.header;
                sealed.extend_from_slice(&h.dst.to_be_bytes());
                sealed.extend_from_slice(&h.src.to_be_bytes());
                sealed.extend_from_slice(&h.handle.to_be_bytes());
                sealed.extend_from_slice(&h.reply_to.to_be_bytes());
                sealed.extend_from_slice(&f.data);
                out.push(sealed);
                out.push(f.data.to_vec());
            }
        }
        out.push(bytes);
    }
    out.retain(|s| s.len() <= mutate::MAX_INPUT);
    out
}

/// Most inputs a target's corpus grows by (new outcomes).
const MAX_CORPUS_GROWTH: usize = 4096;

/// Runs every target in `opts` and reports.
pub fn run(opts: &Options) -> Report {
    let seeds = seeds();
    let mut reports = Vec::new();
    for &t in &opts.targets {
        // Each target's stream depends only on the seed and the target, so
        // a finding reproduces with `--target NAME --seed N` alone.
        let mut m = Mutator::new(opts.seed.wrapping_add((t as u64 + 1) * 0x9e37_79b9));
        let r = match t {
            Target::Python => run_python(opts, &seeds, &mut m),
            _ => run_rust(t, opts, &seeds, &mut m),
        };
        reports.push(r);
    }
    Report {
        targets: reports,
        max_rss_kib: peak_rss_kib(),
    }
}

fn run_rust(t: Target, opts: &Options, seeds: &[Vec<u8>], m: &mut Mutator) -> TargetReport {
    // Panics are findings, reported once each, not printed by the hook.
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let mut corpus = seeds.to_vec();
    let mut seen = HashSet::new();
    let mut findings = Vec::new();
    let mut slowest = Duration::ZERO;
    let start = Instant::now();
    for _ in 0..opts.inputs {
        let input = m.input(&corpus);
        let t0 = Instant::now();
        let r = std::panic::catch_unwind(|| t.run(&input));
        slowest = slowest.max(t0.elapsed());
        match r {
            Ok(o) => {
                if seen.insert(o) && corpus.len() < seeds.len() + MAX_CORPUS_GROWTH {
                    corpus.push(input);
                }
            }
            Err(p) => {
                let why = p
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_default();
                if findings.len() < 20 {
                    findings.push(save(opts, t, findings.len(), &input, &why));
                }
            }
        }
    }
    std::panic::set_hook(hook);
    TargetReport {
        target: t,
        inputs: opts.inputs,
        elapsed: start.elapsed(),
        slowest,
        outcomes: seen.len(),
        corpus: corpus.len(),
        findings,
    }
}

fn run_python(opts: &Options, seeds: &[Vec<u8>], m: &mut Mutator) -> TargetReport {
    let start = Instant::now();
    let mut findings = Vec::new();
    let mut slowest = Duration::ZERO;
    let mut done = 0;
    match python::PythonCodec::start(&opts.python) {
        Err(e) => findings.push(format!("SKIP: cannot start {}: {e}", opts.python)),
        Ok(mut py) => {
            const BATCH: u64 = 500;
            while done < opts.python_inputs {
                let n = BATCH.min(opts.python_inputs - done);
                let batch: Vec<Vec<u8>> = (0..n).map(|_| m.input(seeds)).collect();
                let t0 = Instant::now();
                if let Err(f) = py.batch(&batch) {
                    // The whole batch, each input length-prefixed: one of
                    // them did it.
                    let mut all = Vec::new();
                    for i in &batch {
                        all.extend_from_slice(&(i.len() as u32).to_be_bytes());
                        all.extend_from_slice(i);
                    }
                    findings.push(save(opts, Target::Python, 0, &all, &f));
                    break;
                }
                slowest = slowest.max(t0.elapsed() / n as u32);
                done += n;
            }
        }
    }
    TargetReport {
        target: Target::Python,
        inputs: done,
        elapsed: start.elapsed(),
        slowest,
        outcomes: 0,
        corpus: seeds.len(),
        findings,
    }
}

fn save(opts: &Options, t: Target, n: usize, input: &[u8], why: &str) -> String {
    let _ = std::fs::create_dir_all(&opts.findings);
    let path = opts
        .findings
        .join(format!("{}-{}-{n}.bin", t.name(), opts.seed));
    let _ = std::fs::write(&path, input);
    format!("{}: {why}", path.display())
}

fn peak_rss_kib() -> i64 {
    nix::sys::resource::getrusage(nix::sys::resource::UsageWho::RUSAGE_SELF)
        .map(|u| u.max_rss())
        .unwrap_or(0)
}
