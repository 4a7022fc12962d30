//! IoLogger: turns a pipe into log lines (a child's stderr in the master:
//! ssh and sudo diagnostics, Python warnings, tracebacks of a core that
//! failed to start).

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use actix::prelude::*;
use bytes::{Buf, BytesMut};
use econtext_wire::sanitize;
use slog::{info, warn, Logger};
use tokio::io::AsyncRead;
use tokio_util::codec::{Decoder, FramedRead};

use crate::logbudget::{cut_shown, LogBudget, DEFAULT_LIMITS, REPORT_EVERY};

/// Lines longer than this are cut (a child printing megabytes without a
/// newline must not grow the master's memory).
const MAX_LINE: usize = 64 * 1024;

/// What a cut line ends with in the log.
const CUT_MARK: &str = " [line too long, cut]";

/// Splits bytes into lines without ever failing: bytes that are not UTF-8
/// are kept (and shown escaped later), and a line longer than `max` is
/// cut there; the rest of it up to the next newline is discarded, and
/// reading goes on. (tokio-util's `LinesCodec` ends the stream for good at
/// the first non-UTF-8 byte or over-long line.)
#[derive(Debug)]
pub struct ByteLines {
    max: usize,
    /// Inside an over-long line whose head was already emitted.
    discarding: bool,
}

/// One line from [`ByteLines`], without its newline.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawLine {
    pub bytes: Vec<u8>,
    pub cut: bool,
}

impl ByteLines {
    pub fn new(max: usize) -> Self {
        ByteLines {
            max,
            discarding: false,
        }
    }
}

impl Decoder for ByteLines {
    type Item = RawLine;
    type Error = std::io::Error;

    fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<RawLine>, std::io::Error> {
        loop {
            let nl = buf.iter().position(|&b| b == b'\n');
            if self.discarding {
                match nl {
                    Some(i) => {
                        buf.advance(i + 1);
                        self.discarding = false;
                    }
                    None => {
                        buf.clear();
                        return Ok(None);
                    }
                }
                continue;
            }
            return Ok(match nl {
                Some(i) if i <= self.max => {
                    let line = buf.split_to(i + 1);
                    Some(RawLine {
                        bytes: line[..i].to_vec(),
                        cut: false,
                    })
                }
                _ if buf.len() > self.max => {
                    let head = buf.split_to(self.max).to_vec();
                    self.discarding = true;
                    Some(RawLine {
                        bytes: head,
                        cut: true,
                    })
                }
                _ => None,
            });
        }
    }

    fn decode_eof(&mut self, buf: &mut BytesMut) -> Result<Option<RawLine>, std::io::Error> {
        if let Some(line) = self.decode(buf)? {
            return Ok(Some(line));
        }
        if buf.is_empty() || self.discarding {
            buf.clear();
            return Ok(None);
        }
        let rest = buf.split().to_vec();
        Ok(Some(RawLine {
            bytes: rest,
            cut: false,
        }))
    }
}

/// A raw line as it may be shown: trailing `\r` dropped, controls and bad
/// bytes escaped ([`sanitize`]), and the cut marked.
pub fn show_line(line: &RawLine) -> String {
    let b = line.bytes.strip_suffix(b"\r").unwrap_or(&line.bytes);
    let mut s = sanitize::field_bytes(b);
    // Escaped, a line of control bytes is four times longer: cut again,
    // so what the budget counts (the shown length) is what is shown.
    if cut_shown(&mut s) || line.cut {
        s.push_str(CUT_MARK);
    }
    s
}

/// The last few lines a pipe carried, for error messages such as "child
/// exited early" that should say what the child printed.
#[derive(Clone, Default, Debug)]
pub struct Tail {
    lines: Arc<Mutex<VecDeque<String>>>,
}

impl Tail {
    const KEEP: usize = 20;

    pub fn push(&self, line: String) {
        let mut l = self.lines.lock().expect("tail lock");
        if l.len() == Self::KEEP {
            l.pop_front();
        }
        l.push_back(line);
    }

    pub fn lines(&self) -> Vec<String> {
        self.lines
            .lock()
            .expect("tail lock")
            .iter()
            .cloned()
            .collect()
    }

    /// Removes every occurrence of `secret` from what is kept.
    pub fn redact(&self, secret: &str) {
        if secret.is_empty() {
            return;
        }
        for l in self.lines.lock().expect("tail lock").iter_mut() {
            *l = l.replace(secret, "********");
        }
    }
}

/// The IoLogger actor: logs each line under `stream` within a
/// [`LogBudget`] (a child printing in a loop shows a burst, then a trickle
/// and a line a second saying how much was suppressed), keeps a [`Tail`]
/// of every line, and stops at EOF.
pub struct IoLogger {
    log: Logger,
    tail: Tail,
    budget: LogBudget,
}

impl IoLogger {
    fn report(&mut self, now: Instant, force: bool) {
        if let Some(s) = self.budget.report(now, force) {
            warn!(self.log, "{}", s);
        }
    }
}

impl IoLogger {
    pub fn start<R: AsyncRead + Unpin + 'static>(
        reader: R,
        log: Logger,
        tail: Tail,
    ) -> Addr<IoLogger> {
        IoLogger::create(|ctx| {
            ctx.add_stream(FramedRead::new(reader, ByteLines::new(MAX_LINE)));
            ctx.run_interval(REPORT_EVERY, |me, _| me.report(Instant::now(), false));
            IoLogger {
                log,
                tail,
                budget: LogBudget::new(DEFAULT_LIMITS, Instant::now()),
            }
        })
    }
}

impl Actor for IoLogger {
    type Context = actix::Context<Self>;
}

impl StreamHandler<Result<RawLine, std::io::Error>> for IoLogger {
    fn handle(&mut self, item: Result<RawLine, std::io::Error>, _: &mut Self::Context) {
        // An I/O error (EIO on a pty whose child exited) ends the stream.
        let Ok(raw) = item else { return };
        let line = show_line(&raw);
        let now = Instant::now();
        if self.budget.admit(line.len(), now) {
            self.report(now, false);
            info!(self.log, "{}", line);
        }
        self.tail.push(line);
    }

    fn finished(&mut self, ctx: &mut Self::Context) {
        self.report(Instant::now(), true);
        ctx.stop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(max: usize, chunks: &[&[u8]]) -> Vec<String> {
        let mut codec = ByteLines::new(max);
        let mut buf = BytesMut::new();
        let mut out = Vec::new();
        for c in chunks {
            buf.extend_from_slice(c);
            while let Some(l) = codec.decode(&mut buf).unwrap() {
                out.push(show_line(&l));
            }
        }
        while let Some(l) = codec.decode_eof(&mut buf).unwrap() {
            out.push(show_line(&l));
        }
        out
    }

    #[test]
    fn keeps_reading_after_bytes_that_are_not_utf8() {
        assert_eq!(
            lines(64, &[b"a\xff\xfeb\r\n", b"next\n"]),
            ["a\\xff\\xfeb", "next"]
        );
    }

    #[test]
    fn cuts_over_long_lines_and_keeps_reading() {
        let long = [b'x'; 100];
        let got = lines(10, &[&long[..50], &long[50..], b"\nafter\n", b"tail"]);
        assert_eq!(
            got,
            [
                format!("xxxxxxxxxx{CUT_MARK}"),
                "after".into(),
                "tail".into()
            ]
        );
    }

    #[test]
    fn a_line_of_control_bytes_is_shown_no_longer_than_it_is_counted() {
        // 64 KiB of ESC escape to 256 KiB; the budget counts at most
        // MAX_RECORD a line, so that is all that may be shown.
        let line = RawLine {
            bytes: vec![0x1b; MAX_LINE],
            cut: false,
        };
        let shown = show_line(&line);
        assert_eq!(shown.len(), crate::logbudget::MAX_RECORD + CUT_MARK.len());
        assert!(shown.ends_with(CUT_MARK));
    }

    #[test]
    fn escapes_terminal_controls() {
        assert_eq!(lines(64, &[b"\x1b]0;title\x07\n"]), ["\\x1b]0;title\\x07"]);
    }
}
