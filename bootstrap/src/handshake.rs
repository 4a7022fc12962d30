//! The handshake as a plain state machine: wait for `EC0\n`, send the
//! payload, wait for `EC1\n`. It never reads past `EC1\n`'s end: whatever
//! follows is the first frame, handed to the Stream.

use bytes::BytesMut;

/// Where a handshake stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// Waiting for the first stage to say `EC0`.
    AwaitEc0,
    /// Payload sent; waiting for `EC1`.
    AwaitEc1,
    Done,
}

impl Stage {
    pub fn describe(self) -> &'static str {
        match self {
            Stage::AwaitEc0 => "the first stage to start (EC0)",
            Stage::AwaitEc1 => "the payload to be received (EC1)",
            Stage::Done => "nothing",
        }
    }
}

/// What the driver should do next.
#[derive(Debug, PartialEq, Eq)]
pub enum Step {
    /// Read more bytes.
    Read,
    /// Write the payload, then read more.
    SendPayload,
    /// Done; these bytes were read past `EC1\n`.
    Done(BytesMut),
}

/// Bytes that are never a real first stage: stop buffering past this.
const MAX_NOISE: usize = 64 * 1024;

#[derive(Debug)]
pub struct Handshake {
    stage: Stage,
    buf: BytesMut,
    /// How much of `buf` is known not to hold the marker's start: each
    /// feed searches only the new bytes (and the 3 before them), so a child
    /// dribbling noise a byte at a time costs linear, not quadratic, work.
    scanned: usize,
    /// Text seen before a marker (a banner, a shell's noise): kept for
    /// error messages.
    pub noise: String,
    /// `EC1` may come without `EC0`: the first stage already had the
    /// payload (a Rust agent's content-hash cache), so none is sent.
    payload_skippable: bool,
    /// The first stage's interpreter, from its `ECT <cache_tag> <magic>`
    /// line just before `EC0` ([`Handshake::interpreter_tag`]).
    tag: Option<String>,
}

impl Default for Handshake {
    fn default() -> Self {
        Handshake {
            stage: Stage::AwaitEc0,
            buf: BytesMut::new(),
            scanned: 0,
            noise: String::new(),
            payload_skippable: false,
            tag: None,
        }
    }
}

impl Handshake {
    /// A handshake whose first stage may say `EC1` straight away, having
    /// the payload already ([`SpawnSpec::payload_skippable`]).
    ///
    /// [`SpawnSpec::payload_skippable`]: crate::SpawnSpec::payload_skippable
    pub fn payload_skippable(skippable: bool) -> Self {
        Handshake {
            payload_skippable: skippable,
            ..Handshake::default()
        }
    }

    pub fn stage(&self) -> Stage {
        self.stage
    }

    /// What the first stage said its interpreter is, in the line
    /// `ECT <sys.implementation.cache_tag> <hex of the bytecode magic>`
    /// that ends right where `EC0\n` starts (e.g. `cpython-311 a70d0d0a`):
    /// the master may send the core compiled for it. Only a short string
    /// of `[a-z0-9._ -]`; anything else is no tag (and stays noise).
    pub fn interpreter_tag(&self) -> Option<&str> {
        self.tag.as_deref()
    }

    /// Feeds bytes read from the child's stdout.
    pub fn feed(&mut self, data: &[u8]) -> Result<Step, String> {
        self.buf.extend_from_slice(data);
        let marker: &[u8] = match self.stage {
            Stage::AwaitEc0 => b"EC0\n",
            Stage::AwaitEc1 => b"EC1\n",
            Stage::Done => return Ok(Step::Done(std::mem::take(&mut self.buf))),
        };
        let from = self.scanned.saturating_sub(marker.len() - 1);
        let found = find(&self.buf[from..], marker).map(|i| from + i);
        let early_ec1 = match self.stage {
            Stage::AwaitEc0 if self.payload_skippable => {
                find(&self.buf[from..], b"EC1\n").map(|i| from + i)
            }
            _ => None,
        };
        self.scanned = self.buf.len();
        if let Some(at) = early_ec1.filter(|&e| found.map_or(true, |f| e < f)) {
            let before = self.buf.split_to(at);
            self.note_noise(&before);
            let _ = self.buf.split_to(4);
            self.stage = Stage::Done;
            return Ok(Step::Done(std::mem::take(&mut self.buf)));
        }
        match found {
            Some(at) => {
                self.scanned = 0;
                let mut before = self.buf.split_to(at);
                if self.stage == Stage::AwaitEc0 {
                    self.tag = take_tag(&mut before);
                }
                self.note_noise(&before);
                let _ = self.buf.split_to(marker.len());
                if self.stage == Stage::AwaitEc0 {
                    self.stage = Stage::AwaitEc1;
                    if !self.buf.is_empty() {
                        // Nothing may follow EC0 until the payload is sent.
                        let extra = std::mem::take(&mut self.buf);
                        self.note_noise(&extra);
                    }
                    Ok(Step::SendPayload)
                } else {
                    self.stage = Stage::Done;
                    Ok(Step::Done(std::mem::take(&mut self.buf)))
                }
            }
            None if self.buf.len() > MAX_NOISE => Err(format!(
                "no {} marker in {} bytes of output",
                String::from_utf8_lossy(&marker[..3]),
                self.buf.len()
            )),
            None => Ok(Step::Read),
        }
    }

    fn note_noise(&mut self, b: &[u8]) {
        if !b.is_empty() && self.noise.len() < 4096 {
            self.noise.push_str(&String::from_utf8_lossy(b));
        }
    }
}

/// Removes and returns the tag of a well-formed `ECT ...\n` line ending
/// `before` (what preceded `EC0`).
fn take_tag(before: &mut BytesMut) -> Option<String> {
    let body = before.strip_suffix(b"\n")?;
    let start = body.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
    let tag = body[start..].strip_prefix(b"ECT ")?;
    let ok = |b: &u8| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._- ".contains(b);
    if tag.is_empty() || tag.len() > 64 || !tag.iter().all(ok) {
        return None;
    }
    let tag = String::from_utf8_lossy(tag).into_owned();
    before.truncate(start);
    Some(tag)
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markers_split_across_reads_and_leftover_kept() {
        let mut h = Handshake::default();
        assert_eq!(h.feed(b"E").unwrap(), Step::Read);
        assert_eq!(h.feed(b"C0").unwrap(), Step::Read);
        assert_eq!(h.feed(b"\n").unwrap(), Step::SendPayload);
        assert_eq!(h.feed(b"EC1").unwrap(), Step::Read);
        assert_eq!(
            h.feed(b"\nFRAME").unwrap(),
            Step::Done(BytesMut::from(&b"FRAME"[..]))
        );
    }

    #[test]
    fn banner_before_ec0_is_kept_as_noise() {
        let mut h = Handshake::default();
        assert_eq!(h.feed(b"Welcome!\nEC0\n").unwrap(), Step::SendPayload);
        assert_eq!(h.noise, "Welcome!\n");
    }

    #[test]
    fn interpreter_tag_just_before_ec0_is_taken_and_not_noise() {
        let mut h = Handshake::default();
        assert_eq!(
            h.feed(b"motd\nECT cpython-311 a70d0d0a\nEC").unwrap(),
            Step::Read
        );
        assert_eq!(h.feed(b"0\n").unwrap(), Step::SendPayload);
        assert_eq!(h.interpreter_tag(), Some("cpython-311 a70d0d0a"));
        assert_eq!(h.noise, "motd\n");
        // Not right before EC0, or not made of tag characters: no tag.
        for junk in [
            &b"ECT cpython-311 a70d0d0a\nmore\nEC0\n"[..],
            b"ECT $(rm -rf /)\nEC0\n",
            b"ECT \nEC0\n",
            b"xECT cpython-311 a70d0d0a EC0\n",
        ] {
            let mut h = Handshake::default();
            assert_eq!(h.feed(junk).unwrap(), Step::SendPayload);
            assert_eq!(h.interpreter_tag(), None, "{junk:?}");
        }
    }

    #[test]
    fn ec1_without_ec0_only_when_the_payload_is_skippable() {
        let mut h = Handshake::default();
        assert_eq!(h.feed(b"EC1\n").unwrap(), Step::Read);
        let mut h = Handshake::payload_skippable(true);
        assert_eq!(h.feed(b"cached\nEC").unwrap(), Step::Read);
        assert_eq!(
            h.feed(b"1\nFRAME").unwrap(),
            Step::Done(BytesMut::from(&b"FRAME"[..]))
        );
        assert_eq!(h.noise, "cached\n");
        // EC0 first: the ordinary path.
        let mut h = Handshake::payload_skippable(true);
        assert_eq!(h.feed(b"EC0\n").unwrap(), Step::SendPayload);
        assert_eq!(h.feed(b"EC1\n").unwrap(), Step::Done(BytesMut::new()));
    }

    #[test]
    fn endless_garbage_is_an_error() {
        let mut h = Handshake::default();
        assert!(h.feed(&vec![b'x'; MAX_NOISE + 1]).is_err());
    }
}
