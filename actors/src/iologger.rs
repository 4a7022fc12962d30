//! IoLogger: turns a pipe into log lines (a child's stderr in the master:
//! ssh and sudo diagnostics, Python warnings, tracebacks of a core that
//! failed to start).

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use actix::prelude::*;
use slog::{info, Logger};
use tokio::io::AsyncRead;
use tokio_util::codec::{FramedRead, LinesCodec, LinesCodecError};

/// Lines longer than this are cut (a child printing megabytes without a
/// newline must not grow the master's memory).
const MAX_LINE: usize = 64 * 1024;

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

/// The IoLogger actor: logs each line under `stream`, keeps a [`Tail`], and
/// stops at EOF.
pub struct IoLogger {
    log: Logger,
    tail: Tail,
}

impl IoLogger {
    pub fn start<R: AsyncRead + Unpin + 'static>(
        reader: R,
        log: Logger,
        tail: Tail,
    ) -> Addr<IoLogger> {
        IoLogger::create(|ctx| {
            ctx.add_stream(FramedRead::new(
                reader,
                LinesCodec::new_with_max_length(MAX_LINE),
            ));
            IoLogger { log, tail }
        })
    }
}

impl Actor for IoLogger {
    type Context = actix::Context<Self>;
}

impl StreamHandler<Result<String, LinesCodecError>> for IoLogger {
    fn handle(&mut self, item: Result<String, LinesCodecError>, _: &mut Self::Context) {
        let line = match item {
            Ok(l) => l,
            Err(LinesCodecError::MaxLineLengthExceeded) => "[line too long, cut]".to_string(),
            Err(LinesCodecError::Io(_)) => return,
        };
        let line = line.trim_end_matches('\r').to_string();
        info!(self.log, "{}", line);
        self.tail.push(line);
    }
}
