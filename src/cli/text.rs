//! Text from a target made safe for the operator's terminal, with the
//! project's one sanitizer (`econtext::wire::sanitize`).

use econtext::wire::sanitize;

/// One line: every control character (escape sequences, bells, carriage
/// returns, bidi overrides) shown escaped, never obeyed.
pub fn printable(s: &str) -> String {
    sanitize::field(s)
}

/// Output bytes for a terminal: lines kept, each line escaped.
pub fn printable_bytes(b: &[u8]) -> String {
    b.split(|&c| c == b'\n')
        .map(sanitize::field_bytes)
        .collect::<Vec<_>>()
        .join("\n")
}
