//! What a fleet subcommand reports per host: a [`HostReport`] (the JSON
//! line's fields), the text line, per-host files, the failed-hosts file,
//! the progress line on a terminal, and the exit code.

use std::collections::BTreeMap;
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use econtext::fleet::FleetError;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde_json::Value;

use super::fleet_args::FleetArgs;
use super::text::printable;

/// A host's outcome, as the `status` field names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Status {
    Ok,
    /// The command exited non-zero, or the remote code raised.
    Failed,
    Unreachable,
    Died,
    Timeout,
    /// Never started: the run was interrupted first (exit 130).
    Skipped,
}

impl Status {
    /// Every status, in the summary table's order.
    pub const ALL: [Status; 6] = [
        Status::Ok,
        Status::Failed,
        Status::Unreachable,
        Status::Died,
        Status::Timeout,
        Status::Skipped,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Status::Ok => "ok",
            Status::Failed => "failed",
            Status::Unreachable => "unreachable",
            Status::Died => "died",
            Status::Timeout => "timeout",
            Status::Skipped => "skipped",
        }
    }
}

/// What a subcommand's per-host closure returns once connected. `ok`
/// false with an `rc` is a command that failed.
#[derive(Debug, Clone, Default)]
pub struct HostOutput {
    pub ok: bool,
    pub rc: Option<i32>,
    pub stdout: Option<Vec<u8>>,
    pub stderr: Option<Vec<u8>>,
    pub result: Option<HostResult>,
    pub error: Option<String>,
    /// The interpreter discovery chose (reported once per host).
    pub python: Option<String>,
}

/// A host's `result`: JSON the CLI made (a transfer's summary), or a
/// reply as it came, printed straight from its bytes
/// ([`econtext::json::EncodedView`]): a 10 MB reply costs its 10 MB, not
/// a tree of values and another of JSON.
#[derive(Debug, Clone)]
pub enum HostResult {
    Json(Value),
    /// One MessagePack value, structure checked.
    Encoded(bytes::Bytes),
}

impl From<Value> for HostResult {
    fn from(v: Value) -> Self {
        HostResult::Json(v)
    }
}

impl serde::Serialize for HostResult {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            HostResult::Json(v) => v.serialize(s),
            HostResult::Encoded(b) => econtext::json::EncodedView::new(b)
                .map_err(serde::ser::Error::custom)?
                .serialize(s),
        }
    }
}

impl HostResult {
    /// Writes the JSON text, as it is made, to `out`.
    pub fn write_to(&self, out: impl Write) -> std::io::Result<()> {
        serde_json::to_writer(out, self).map_err(std::io::Error::other)
    }
}

impl std::fmt::Display for HostResult {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let text = serde_json::to_string(self).map_err(|_| std::fmt::Error)?;
        f.write_str(&text)
    }
}

#[derive(serde::Serialize)]
struct JsonLine<'a> {
    host: &'a str,
    status: &'static str,
    rc: Option<i32>,
    stdout: Option<String>,
    stderr: Option<String>,
    result: Option<&'a HostResult>,
    error: Option<&'a str>,
    elapsed_ms: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    python: Option<&'a str>,
}

/// One host's line.
#[derive(Debug, Clone)]
pub struct HostReport {
    pub host: String,
    pub status: Status,
    pub output: HostOutput,
    pub elapsed: Duration,
}

impl HostReport {
    pub fn new(host: &str, r: Result<HostOutput, FleetError>, elapsed: Duration) -> HostReport {
        let (status, output) = match r {
            Ok(o) => (if o.ok { Status::Ok } else { Status::Failed }, o),
            Err(e) => {
                let status = match &e {
                    FleetError::Unreachable(_) => Status::Unreachable,
                    FleetError::Failed(_) => Status::Failed,
                    FleetError::Timeout(_) => Status::Timeout,
                    FleetError::NotStarted => Status::Skipped,
                    _ => Status::Died,
                };
                let error = match &e {
                    FleetError::Failed(c) if !c.traceback.is_empty() => {
                        format!("{e}\n{}", c.traceback.trim_end())
                    }
                    _ => e.to_string(),
                };
                let out = HostOutput {
                    error: Some(error),
                    ..Default::default()
                };
                (status, out)
            }
        };
        HostReport {
            host: host.to_string(),
            status,
            output,
            elapsed,
        }
    }

    /// The `--json` line: host, status, rc, stdout, stderr, result,
    /// error, elapsed_ms in this order (and python when discovery chose
    /// one).
    pub fn to_json_line(&self) -> String {
        serde_json::to_string(&self.line()).unwrap_or_default()
    }

    fn line(&self) -> JsonLine<'_> {
        let o = &self.output;
        let text =
            |b: &Option<Vec<u8>>| b.as_ref().map(|b| String::from_utf8_lossy(b).into_owned());
        JsonLine {
            host: &self.host,
            status: self.status.as_str(),
            rc: o.rc,
            stdout: text(&o.stdout),
            stderr: text(&o.stderr),
            result: o.result.as_ref(),
            error: o.error.as_deref(),
            elapsed_ms: self.elapsed.as_millis() as u64,
            python: o.python.as_deref(),
        }
    }

    /// `host | status | rc=N | first line of output` (every line with -v).
    pub fn text_line(&self, verbose: bool) -> String {
        let o = &self.output;
        let mut s = format!("{} | {}", printable(&self.host), self.status.as_str());
        if let Some(rc) = o.rc {
            s.push_str(&format!(" | rc={rc}"));
        }
        let body = self.body();
        if verbose {
            if let Some(p) = &o.python {
                s.push_str(&format!(" | python={}", printable(p)));
            }
            if !body.trim().is_empty() {
                s.push_str(" >>\n");
                s.push_str(&printable_block(body.trim_end()));
            }
        } else if let Some(first) = body.lines().find(|l| !l.trim().is_empty()) {
            s.push_str(" | ");
            s.push_str(&printable(first));
        }
        s
    }

    fn body(&self) -> String {
        let o = &self.output;
        let mut b = String::new();
        if let Some(out) = &o.stdout {
            b.push_str(&String::from_utf8_lossy(out));
        }
        if let Some(r) = &o.result {
            b.push_str(&r.to_string());
        }
        if let Some(err) = &o.stderr {
            if !b.is_empty() && !b.ends_with('\n') {
                b.push('\n');
            }
            b.push_str(&String::from_utf8_lossy(err));
        }
        if let Some(e) = &o.error {
            if !b.is_empty() && !b.ends_with('\n') {
                b.push('\n');
            }
            b.push_str(e);
        }
        b
    }
}

/// A host's whole output under its line: escaped, every line indented
/// and marked so none can pass for another host's line.
fn printable_block(s: &str) -> String {
    s.lines()
        .map(|l| format!("    | {}", printable(l)))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The documented exit code: 0 all ok; 2 any unreachable; else 3 any
/// died or timed out (or was skipped, which only an interrupt causes);
/// else 1 any failed; 130 after an interrupt.
pub fn exit_code<'a>(statuses: impl IntoIterator<Item = &'a Status>, interrupted: bool) -> u8 {
    if interrupted {
        return 130;
    }
    let mut code = 0;
    for s in statuses {
        let c = match s {
            Status::Ok => 0,
            Status::Unreachable => 2,
            Status::Died | Status::Timeout | Status::Skipped => 3,
            Status::Failed => 1,
        };
        let rank = |c: u8| match c {
            2 => 3,
            3 => 2,
            1 => 1,
            _ => 0,
        };
        if rank(c) > rank(code) {
            code = c;
        }
    }
    code
}

/// Prints and records host reports as they arrive.
pub struct Reporter {
    json: bool,
    verbose: bool,
    tty: bool,
    bar: Option<ProgressBar>,
    output_dir: Option<PathBuf>,
    failed_to: Option<PathBuf>,
    started: Instant,
    total: usize,
    hosts: Vec<String>,
    statuses: BTreeMap<String, Status>,
}

impl Reporter {
    /// `hosts`: every host of the run, in order (those never reported
    /// end up in the failed-hosts file).
    pub fn new(args: &FleetArgs, verbose: bool, hosts: Vec<String>) -> std::io::Result<Reporter> {
        let total = hosts.len();
        if let Some(d) = &args.output_dir {
            std::fs::create_dir_all(d)?;
        }
        let tty = std::io::stderr().is_terminal() && std::io::stdout().is_terminal();
        let bar = tty.then(|| {
            let b = ProgressBar::with_draw_target(Some(total as u64), ProgressDrawTarget::stderr());
            b.set_style(
                ProgressStyle::with_template("[{elapsed_precise}] {pos}/{len} {msg}")
                    .unwrap_or_else(|_| ProgressStyle::default_bar()),
            );
            b.set_message("ok=0 failed=0 unreachable=0 died=0 timeout=0");
            b.enable_steady_tick(Duration::from_millis(200));
            b
        });
        Ok(Reporter {
            json: args.json,
            verbose,
            tty,
            bar,
            output_dir: args.output_dir.clone(),
            failed_to: args.failed_to.clone(),
            started: Instant::now(),
            total,
            hosts,
            statuses: BTreeMap::new(),
        })
    }

    /// One host's outcome: its line, its files, the progress counts.
    pub fn host(&mut self, r: &HostReport) {
        let line = if self.json {
            r.to_json_line()
        } else {
            r.text_line(self.verbose)
        };
        self.print(&line);
        if let Some(d) = &self.output_dir {
            if let Err(e) = write_host_files(d, r) {
                self.note(&format!(
                    "cannot write {}'s files in {}: {e}",
                    r.host,
                    d.display()
                ));
            }
        }
        self.statuses.insert(r.host.clone(), r.status);
        if let Some(b) = &self.bar {
            b.inc(1);
            b.set_message(self.counts());
        }
    }

    /// A message on stderr that does not tear the progress line.
    pub fn note(&self, msg: &str) {
        match &self.bar {
            Some(b) => b.suspend(|| eprintln!("econtext: {msg}")),
            None => eprintln!("econtext: {msg}"),
        }
    }

    fn print(&self, line: &str) {
        let out = || {
            let mut o = std::io::stdout().lock();
            let _ = writeln!(o, "{line}");
            let _ = o.flush();
        };
        match &self.bar {
            Some(b) => b.suspend(out),
            None => out(),
        }
    }

    fn count(&self, s: Status) -> usize {
        self.statuses.values().filter(|&&v| v == s).count()
    }

    fn counts(&self) -> String {
        let mut s = format!(
            "ok={} failed={} unreachable={} died={} timeout={}",
            self.count(Status::Ok),
            self.count(Status::Failed),
            self.count(Status::Unreachable),
            self.count(Status::Died),
            self.count(Status::Timeout)
        );
        let skipped = self.count(Status::Skipped);
        if skipped > 0 {
            s.push_str(&format!(" skipped={skipped}"));
        }
        s
    }

    /// A `skipped` line for every host that has none yet (never started,
    /// or not yet yielded when a second interrupt ended the run): every
    /// host of the run gets exactly one line.
    pub fn skip_unreported(&mut self) {
        let missing: Vec<String> = self
            .hosts
            .iter()
            .filter(|h| !self.statuses.contains_key(*h))
            .cloned()
            .collect();
        for h in missing {
            self.host(&HostReport::new(
                &h,
                Err(FleetError::NotStarted),
                Duration::ZERO,
            ));
        }
    }

    /// The summary table on a terminal: one row per status that occurred,
    /// its count, and (except for ok) the first hosts that had it.
    fn summary(&self) {
        eprintln!(
            "{} hosts in {:.1} s",
            self.total,
            self.started.elapsed().as_secs_f64()
        );
        eprintln!("  {:<12} {:>6}  HOSTS", "STATUS", "COUNT");
        for s in Status::ALL {
            let hosts: Vec<&str> = self
                .hosts
                .iter()
                .filter(|h| self.statuses.get(*h) == Some(&s))
                .map(String::as_str)
                .collect();
            if hosts.is_empty() {
                continue;
            }
            let names = if s == Status::Ok {
                String::new()
            } else {
                summary_names(&hosts)
            };
            eprintln!("  {:<12} {:>6}  {names}", s.as_str(), hosts.len());
        }
    }

    /// The summary (on a terminal), the failed-hosts file, the exit code.
    pub fn finish(mut self, interrupted: bool) -> u8 {
        self.skip_unreported();
        if let Some(b) = &self.bar {
            b.finish_and_clear();
        }
        if self.tty {
            self.summary();
        }
        if let Some(f) = &self.failed_to {
            // Every host that did not succeed, reported or never started.
            let not_ok: Vec<&str> = self
                .hosts
                .iter()
                .filter(|h| self.statuses.get(*h) != Some(&Status::Ok))
                .map(String::as_str)
                .collect();
            let mut text = not_ok.join("\n");
            if !text.is_empty() {
                text.push('\n');
            }
            if let Err(e) = std::fs::write(f, text) {
                eprintln!("econtext: cannot write {}: {e}", f.display());
            }
        }
        exit_code(self.statuses.values(), interrupted)
    }
}

/// At most 8 host names (escaped), then how many more.
fn summary_names(hosts: &[&str]) -> String {
    const SHOWN: usize = 8;
    let mut s: Vec<String> = hosts.iter().take(SHOWN).map(|h| printable(h)).collect();
    if hosts.len() > SHOWN {
        s.push(format!("(+{} more)", hosts.len() - SHOWN));
    }
    s.join(" ")
}

/// `DIR/HOST.json` (the JSON line), plus `HOST.stdout`/`HOST.stderr` as
/// raw bytes when the host produced them.
fn write_host_files(dir: &Path, r: &HostReport) -> std::io::Result<()> {
    let name = file_name(&r.host);
    std::fs::write(
        dir.join(format!("{name}.json")),
        format!("{}\n", r.to_json_line()),
    )?;
    if let Some(b) = &r.output.stdout {
        std::fs::write(dir.join(format!("{name}.stdout")), b)?;
    }
    if let Some(b) = &r.output.stderr {
        std::fs::write(dir.join(format!("{name}.stderr")), b)?;
    }
    Ok(())
}

/// A host name as one safe file name: no separators, no leading dot.
pub fn file_name(host: &str) -> String {
    let s: String = host
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "._-@+".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect();
    match s.strip_prefix('.') {
        Some(rest) => format!("_{rest}"),
        None if s.is_empty() => "_".into(),
        None => s,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_code_ranks_unreachable_then_died_then_failed() {
        use Status::*;
        assert_eq!(exit_code(&[Ok, Ok], false), 0);
        assert_eq!(exit_code(&[Ok, Failed], false), 1);
        assert_eq!(exit_code(&[Failed, Timeout], false), 3);
        assert_eq!(exit_code(&[Died, Failed], false), 3);
        assert_eq!(exit_code(&[Failed, Unreachable, Died], false), 2);
        assert_eq!(exit_code(&[Ok], true), 130);
    }

    #[test]
    fn hostile_host_names_stay_in_their_directory() {
        let f = file_name("../../etc/passwd");
        assert!(!f.contains('/') && !f.starts_with('.'), "{f}");
        assert_eq!(file_name("web01"), "web01");
        assert_eq!(file_name(""), "_");
    }

    #[test]
    fn escape_sequences_never_reach_the_text_line() {
        let r = HostReport::new(
            "h\u{1b}[2J",
            Ok(HostOutput {
                ok: false,
                rc: Some(3),
                stdout: Some(b"\x1b]0;pwned\x07first\nsecond\n".to_vec()),
                ..Default::default()
            }),
            Duration::from_millis(5),
        );
        let line = r.text_line(false);
        assert!(
            !line.contains('\u{1b}') && !line.contains('\u{7}'),
            "{line:?}"
        );
        assert!(line.contains("| failed | rc=3 |"), "{line}");
        let v: Value = serde_json::from_str(&r.to_json_line()).unwrap();
        assert_eq!(v["rc"], 3);
        assert_eq!(v["elapsed_ms"], 5);
    }
}
