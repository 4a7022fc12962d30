//! Text from a child, made safe for a terminal or a log.
//!
//! Everything a child sends that an operator may see (log records, stdout
//! and stderr lines, logger names, CallError text, the last lines of a
//! failed connection) goes through here once, at the master, before it
//! reaches slog or stderr. A hostile child must not be able to set the
//! window title, clear the screen, write the clipboard (OSC 52), reorder
//! text with bidi overrides, or forge whole log lines "from" another
//! context with an embedded newline.
//!
//! The rules:
//! - C0 controls (U+0000..U+001F) except tab, DEL and C1 controls
//!   (U+0080..U+009F) are shown as `\xNN` (`\n`, `\r` for the common two
//!   in a single-line field, see below).
//! - Bidi overrides and isolates (U+202A..U+202E, U+2066..U+2069) are shown
//!   as `\u{NNNN}`.
//! - Bytes that are not UTF-8 are shown as `\xNN`.
//! - In [`text`], a newline starts a continuation line, indented and
//!   marked with [`CONTINUATION`], so it can never pass for a record of
//!   its own. [`field`] (names, one-line values) escapes newlines too.

use std::fmt::Write;

/// What starts every continuation line of a multi-line record.
pub const CONTINUATION: &str = "\n    | ";

/// One line or a name: every control character is escaped, newlines too.
pub fn field(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    push_escaped(&mut out, s, false);
    out
}

/// A message that may span lines: controls are escaped, and each line after
/// the first is indented and marked (a trailing newline is dropped).
pub fn text(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    push_escaped(&mut out, s.strip_suffix('\n').unwrap_or(s), true);
    out
}

/// Like [`text`] for raw bytes: invalid UTF-8 is shown as `\xNN`.
pub fn text_bytes(b: &[u8]) -> String {
    let mut out = String::with_capacity(b.len());
    let b = b.strip_suffix(b"\n").unwrap_or(b);
    for chunk in b.utf8_chunks() {
        push_escaped(&mut out, chunk.valid(), true);
        for byte in chunk.invalid() {
            let _ = write!(out, "\\x{byte:02x}");
        }
    }
    out
}

/// Like [`field`] for raw bytes.
pub fn field_bytes(b: &[u8]) -> String {
    let mut out = String::with_capacity(b.len());
    for chunk in b.utf8_chunks() {
        push_escaped(&mut out, chunk.valid(), false);
        for byte in chunk.invalid() {
            let _ = write!(out, "\\x{byte:02x}");
        }
    }
    out
}

/// Whether `s` would come out of [`field`] unchanged.
pub fn is_clean(s: &str) -> bool {
    !s.chars().any(needs_escape)
}

fn needs_escape(c: char) -> bool {
    (c.is_control() && c != '\t') || is_bidi_control(c)
}

fn is_bidi_control(c: char) -> bool {
    matches!(c, '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}')
}

fn push_escaped(out: &mut String, s: &str, multiline: bool) {
    for c in s.chars() {
        match c {
            '\n' if multiline => out.push_str(CONTINUATION),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            c if c.is_control() && c != '\t' => {
                let _ = write!(out, "\\x{:02x}", c as u32);
            }
            c if is_bidi_control(c) => {
                let _ = write!(out, "\\u{{{:04x}}}", c as u32);
            }
            c => out.push(c),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn terminal_escapes_are_shown_not_sent() {
        assert_eq!(field("\x1b]0;title\x07"), "\\x1b]0;title\\x07");
        assert_eq!(
            text("\x1b[2J\x1b]52;c;aGk=\x07"),
            "\\x1b[2J\\x1b]52;c;aGk=\\x07"
        );
        assert_eq!(field("a\u{9b}31mb"), "a\\x9b31mb");
        assert_eq!(field("\u{202e}txt.exe"), "\\u{202e}txt.exe");
        assert_eq!(field("tab\tok é 密码"), "tab\tok é 密码");
        assert_eq!(field("\x7f"), "\\x7f");
    }

    #[test]
    fn newlines_cannot_forge_a_record() {
        assert_eq!(
            text("boom\nINFO ctx=master fake\n"),
            "boom\n    | INFO ctx=master fake"
        );
        assert_eq!(field("a\nb\rc"), "a\\nb\\rc");
    }

    #[test]
    fn invalid_utf8_is_shown_escaped() {
        assert_eq!(text_bytes(b"ok\xff\xfe\x1b!"), "ok\\xff\\xfe\\x1b!");
        assert_eq!(field_bytes(b"\xc3"), "\\xc3");
        assert_eq!(text_bytes("é\n".as_bytes()), "é");
    }

    #[test]
    fn clean_text_is_unchanged() {
        assert!(is_clean("plain text\twith tab"));
        assert!(!is_clean("a\x1bb"));
        assert_eq!(text("plain"), "plain");
    }
}
