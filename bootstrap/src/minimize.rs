//! Strips comments and docstrings from Python source, keeping line numbers.
//!
//! The master sends Python source to remote interpreters (the bootstrap core
//! and user modules served to children).  [`minimize_source`] shrinks that
//! source before compression while guaranteeing that line `N` of the output
//! corresponds to line `N` of the input, so tracebacks stay accurate.
//!
//! The implementation is a small single-pass tokenizer that understands
//! Python 2.7 and 3.x string literals (all prefixes, triple quotes, escapes,
//! 3.12+ f-strings with nested quotes), comments, brackets (implicit line
//! joining) and backslash continuations.  It records a list of edits which are
//! then applied in a second pass.  Whenever the input cannot be tokenized
//! (e.g. an unterminated string) the source is returned unchanged, so the
//! interpreter reports exactly the error it would have reported anyway.

/// Strip comments, docstrings and trailing whitespace from Python source.
///
/// * Comments are removed, except a shebang on line 1 and an encoding
///   declaration (`coding[:=]`) on lines 1-2.
/// * A docstring (the first statement of a module, `class`, `def` or
///   `async def` body, when it consists only of plain / `u` / `r` string
///   literals) is removed; `pass` is left on its first line whenever removing
///   it could leave the body empty or promote a following string statement to
///   docstring.  The other lines of a multi-line docstring become empty.
/// * Trailing whitespace outside string literals is removed; comment-only
///   lines become empty lines.
/// * `\r\n` and lone `\r` line endings are normalized to `\n`, as Python's
///   universal newline handling does when importing a file.
///
/// The output always has exactly as many lines as the input.
pub fn minimize_source(source: &str) -> String {
    if source.contains('\r') {
        let normalized = source.replace("\r\n", "\n").replace('\r', "\n");
        minimize_normalized(&normalized).unwrap_or(normalized)
    } else {
        minimize_normalized(source).unwrap_or_else(|| source.to_string())
    }
}

/// An edit of the source, sorted by position.
#[derive(Clone, Copy, Debug)]
enum Edit {
    /// Placeholder for a docstring candidate that was not confirmed.
    Nop,
    /// A `\n` outside string literals at this offset: strip trailing
    /// whitespace before it.
    Newline(usize),
    /// A comment occupying `start..end` (not including the newline).
    Comment(usize, usize),
    /// A docstring occupying `start..end`; replaced by `pass` (if the flag is
    /// set) followed by as many newlines as it spanned.
    Docstring(usize, usize, bool),
}

/// What kind of body the next statement would be the first statement of.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum DocContext {
    Module,
    Block,
}

/// A docstring waiting for the first token of the next logical line, which
/// decides whether `pass` must be left in its place.
#[derive(Clone, Copy, Debug)]
struct Pending {
    edit: usize,
    start: usize,
    end: usize,
    ctx: DocContext,
    /// Indentation of the docstring's line (`None` if unknown).
    indent: Option<(usize, usize)>,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Tok {
    /// A string literal; `true` if it may be (part of) a docstring.
    Str(bool),
    Word,
    Colon,
    Other,
}

#[derive(Default)]
struct Line {
    /// A token has been seen on this logical line.
    active: bool,
    ntok: usize,
    first_tok_start: usize,
    indent: Option<(usize, usize)>,
    /// Every token so far is a docstring-eligible string.
    all_doc_strings: bool,
    last_end: usize,
    /// `Some(ctx)` if this line may be a docstring; edit index of the
    /// placeholder.
    doc_ctx: Option<DocContext>,
    doc_edit: usize,
    /// Header detection (`def`, `class`, `async def`).
    first_is_async: bool,
    is_header: bool,
    header_colon: bool,
    /// Same-line body after the header colon (`def f(): "doc"`).
    after_colon_ntok: usize,
    after_colon_ok: bool,
    after_colon_start: usize,
    after_colon_edit: usize,
}

struct Minimizer<'a> {
    src: &'a [u8],
    edits: Vec<Edit>,
    depth: usize,
    /// Offset where the current physical line starts.
    phys_line_start: usize,
    /// A backslash continuation occurred before the first token of the
    /// current logical line (indentation is then unreliable).
    cont_before_first: bool,
    line: Line,
    expect_doc: Option<DocContext>,
    pending: Option<Pending>,
    /// End of line 2 (comments before it may be shebang/encoding lines).
    line2_end: usize,
}

const BOM: &[u8] = "\u{feff}".as_bytes();

#[inline]
fn is_word_byte(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'_' || c >= 0x80
}

#[inline]
fn is_trailing_ws(c: u8) -> bool {
    c == b' ' || c == b'\t' || c == b'\x0c'
}

/// String prefix flags: `(raw, formatted, docstring_eligible)`, or `None` if
/// `word` is not a string prefix.
fn prefix_flags(word: &[u8]) -> Option<(bool, bool, bool)> {
    if word.is_empty() || word.len() > 3 {
        return None;
    }
    let (mut raw, mut fmt, mut bytes) = (false, false, false);
    for &c in word {
        match c.to_ascii_lowercase() {
            b'r' => raw = true,
            b'f' | b't' => fmt = true,
            b'b' => bytes = true,
            b'u' => {}
            _ => return None,
        }
    }
    Some((raw, fmt, !fmt && !bytes))
}

#[inline]
fn at(s: &[u8], i: usize) -> u8 {
    s.get(i).copied().unwrap_or(0)
}

/// Is there a triple quote `q` at `i`?
#[inline]
fn triple_at(s: &[u8], i: usize, q: u8) -> bool {
    at(s, i) == q && at(s, i + 1) == q && at(s, i + 2) == q
}

/// Scan a string literal whose opening quote is at `i`; returns the offset
/// just past its closing quote.
fn scan_string(s: &[u8], i: usize, fmt: bool, raw: bool) -> Option<usize> {
    if fmt {
        if let Some(end) = scan_fstring(s, i, raw, 0) {
            return Some(end);
        }
        // Conservative fallback: pre-3.12 tokenization, where an f-string
        // is tokenized exactly like any other string.
    }
    scan_plain_string(s, i)
}

fn scan_plain_string(s: &[u8], i: usize) -> Option<usize> {
    let q = s[i];
    if triple_at(s, i, q) {
        let mut j = i + 3;
        loop {
            let c = *s.get(j)?;
            if c == b'\\' {
                j += 2;
            } else if c == q && triple_at(s, j, q) {
                return Some(j + 3);
            } else {
                j += 1;
            }
        }
    } else {
        let mut j = i + 1;
        loop {
            let c = *s.get(j)?;
            if c == b'\\' {
                j += 2;
            } else if c == q {
                return Some(j + 1);
            } else if c == b'\n' {
                return None;
            } else {
                j += 1;
            }
        }
    }
}

/// Maximum nesting of f-strings inside f-string replacement fields.
const MAX_FSTRING_NESTING: usize = 32;

/// Scan an f-string (PEP 701 rules: replacement fields may contain any
/// expression, including strings using the same quotes and comments).
fn scan_fstring(s: &[u8], i: usize, raw: bool, nesting: usize) -> Option<usize> {
    if nesting > MAX_FSTRING_NESTING {
        return None;
    }
    let q = s[i];
    let triple = triple_at(s, i, q);
    let mut j = if triple { i + 3 } else { i + 1 };
    loop {
        let c = *s.get(j)?;
        if c == q {
            if !triple {
                return Some(j + 1);
            }
            if triple_at(s, j, q) {
                return Some(j + 3);
            }
            j += 1;
        } else if c == b'\\' {
            let n = at(s, j + 1);
            if n == b'{' || n == b'}' {
                // `\{` is a backslash followed by a replacement field.
                j += 1;
            } else if !raw && n == b'N' && at(s, j + 2) == b'{' {
                // `\N{NAME}` is an escape, not a replacement field.
                j += 3;
                while *s.get(j)? != b'}' {
                    if s[j] == b'\n' || s[j] == q {
                        return None;
                    }
                    j += 1;
                }
                j += 1;
            } else {
                j += 2;
            }
        } else if c == b'\n' && !triple {
            return None;
        } else if c == b'{' {
            if at(s, j + 1) == b'{' {
                j += 2;
            } else {
                j = scan_fexpr(s, j + 1, q, triple, nesting)?;
            }
        } else {
            j += 1;
        }
    }
}

/// Scan a replacement field starting just after its `{`; returns the offset
/// just past its closing `}`.
fn scan_fexpr(s: &[u8], mut j: usize, q: u8, triple: bool, nesting: usize) -> Option<usize> {
    let mut depth = 0usize;
    loop {
        let c = *s.get(j)?;
        match c {
            b'\'' | b'"' => {
                j = scan_nested_string(s, j, false, false, nesting)?;
            }
            b'#' => {
                while *s.get(j)? != b'\n' {
                    j += 1;
                }
            }
            b'(' | b'[' | b'{' => {
                depth += 1;
                j += 1;
            }
            b')' | b']' => {
                depth = depth.checked_sub(1)?;
                j += 1;
            }
            b'}' => {
                if depth == 0 {
                    return Some(j + 1);
                }
                depth -= 1;
                j += 1;
            }
            b':' if depth == 0 => {
                return scan_fspec(s, j + 1, q, triple, nesting);
            }
            b'\\' => {
                // Only a line continuation is valid here.
                j += 2;
            }
            c if is_word_byte(c) => {
                let start = j;
                while j < s.len() && is_word_byte(s[j]) {
                    j += 1;
                }
                let n = at(s, j);
                if n == b'\'' || n == b'"' {
                    if let Some((raw, fmt, _)) = prefix_flags(&s[start..j]) {
                        j = scan_nested_string(s, j, fmt, raw, nesting)?;
                    }
                }
            }
            _ => j += 1,
        }
    }
}

fn scan_nested_string(s: &[u8], j: usize, fmt: bool, raw: bool, nesting: usize) -> Option<usize> {
    if fmt {
        scan_fstring(s, j, raw, nesting + 1)
    } else {
        scan_plain_string(s, j)
    }
}

/// Scan a format spec starting just after the `:`; returns the offset just
/// past the replacement field's closing `}`.
fn scan_fspec(s: &[u8], mut j: usize, q: u8, triple: bool, nesting: usize) -> Option<usize> {
    loop {
        let c = *s.get(j)?;
        if c == b'}' {
            return Some(j + 1);
        } else if c == b'{' {
            j = scan_fexpr(s, j + 1, q, triple, nesting)?;
        } else if c == q && (!triple || triple_at(s, j, q)) {
            // The enclosing string ends inside the spec: not valid.
            return None;
        } else if c == b'\n' && !triple {
            return None;
        } else if c == b'\\' {
            j += 2;
        } else {
            j += 1;
        }
    }
}

impl<'a> Minimizer<'a> {
    fn new(src: &'a [u8]) -> Self {
        let mut line2_end = src.len();
        let mut newlines = 0;
        for (i, &c) in src.iter().enumerate() {
            if c == b'\n' {
                newlines += 1;
                if newlines == 2 {
                    line2_end = i;
                    break;
                }
            }
        }
        Minimizer {
            src,
            edits: Vec::with_capacity(src.len() / 24 + 16),
            depth: 0,
            phys_line_start: 0,
            cont_before_first: false,
            line: Line::default(),
            expect_doc: Some(DocContext::Module),
            pending: None,
            line2_end,
        }
    }

    /// Tokenize the whole source, recording edits.  `None` on a tokenization
    /// error.
    fn run(&mut self) -> Option<()> {
        let s = self.src;
        let n = s.len();
        // A UTF-8 BOM is not part of the first line's tokens.
        let mut i = if s.starts_with(BOM) { BOM.len() } else { 0 };
        self.phys_line_start = i;
        while i < n {
            let c = s[i];
            match c {
                b'\n' => {
                    self.edits.push(Edit::Newline(i));
                    if self.depth == 0 && self.line.active {
                        self.end_logical_line();
                    }
                    i += 1;
                    self.phys_line_start = i;
                }
                b' ' | b'\t' | b'\x0c' => i += 1,
                b'#' => {
                    let end = memchr_newline(s, i);
                    if !self.keep_comment(i) {
                        self.edits.push(Edit::Comment(i, end));
                    }
                    i = end;
                }
                b'\\' if at(s, i + 1) == b'\n' => {
                    if !self.line.active {
                        self.cont_before_first = true;
                    }
                    self.edits.push(Edit::Newline(i + 1));
                    i += 2;
                    self.phys_line_start = i;
                }
                b'\'' | b'"' => {
                    let end = scan_plain_string(s, i)?;
                    self.token(Tok::Str(true), i, end);
                    i = end;
                }
                c if is_word_byte(c) => {
                    let start = i;
                    while i < n && is_word_byte(s[i]) {
                        i += 1;
                    }
                    let q = at(s, i);
                    if q == b'\'' || q == b'"' {
                        if let Some((raw, fmt, doc)) = prefix_flags(&s[start..i]) {
                            let end = scan_string(s, i, fmt, raw)?;
                            self.token(Tok::Str(doc), start, end);
                            i = end;
                            continue;
                        }
                    }
                    self.token(Tok::Word, start, i);
                }
                b'(' | b'[' | b'{' => {
                    self.token(Tok::Other, i, i + 1);
                    self.depth += 1;
                    i += 1;
                }
                b')' | b']' | b'}' => {
                    self.token(Tok::Other, i, i + 1);
                    self.depth = self.depth.saturating_sub(1);
                    i += 1;
                }
                b':' => {
                    self.token(Tok::Colon, i, i + 1);
                    i += 1;
                }
                _ => {
                    self.token(Tok::Other, i, i + 1);
                    i += 1;
                }
            }
        }
        if self.line.active {
            self.end_logical_line();
        }
        if let Some(p) = self.pending.take() {
            // End of file: a block body would be empty; a module may be.
            self.edits[p.edit] = Edit::Docstring(p.start, p.end, p.ctx == DocContext::Block);
        }
        Some(())
    }

    /// Comments kept because they change semantics: a shebang on line 1 and
    /// an encoding declaration on lines 1-2.
    fn keep_comment(&self, i: usize) -> bool {
        if i >= self.line2_end {
            return false;
        }
        let s = self.src;
        let end = memchr_newline(s, i);
        let text = &s[i..end];
        if (i == 0 || i == BOM.len() && s.starts_with(BOM)) && text.starts_with(b"#!") {
            return true;
        }
        text.windows(7)
            .any(|w| w.starts_with(b"coding") && (w[6] == b':' || w[6] == b'='))
    }

    fn token(&mut self, tok: Tok, start: usize, end: usize) {
        if !self.line.active {
            self.start_logical_line(tok, start);
        } else {
            self.line.ntok += 1;
            if !matches!(tok, Tok::Str(true)) {
                self.line.all_doc_strings = false;
            }
            if self.line.ntok == 2 && self.line.first_is_async {
                self.line.is_header = tok == Tok::Word && &self.src[start..end] == b"def";
            }
            if self.line.is_header {
                if self.line.header_colon {
                    self.line.after_colon_ntok += 1;
                    if self.line.after_colon_ntok == 1 {
                        self.line.after_colon_start = start;
                        self.line.after_colon_ok = matches!(tok, Tok::Str(true));
                        if self.line.after_colon_ok {
                            self.line.after_colon_edit = self.edits.len();
                            self.edits.push(Edit::Nop);
                        }
                    } else if !matches!(tok, Tok::Str(true)) {
                        self.line.after_colon_ok = false;
                    }
                } else if tok == Tok::Colon && self.depth == 0 {
                    self.line.header_colon = true;
                }
            }
        }
        self.line.last_end = end;
        if self.line.ntok == 1 {
            // First token: detect headers.
            let w = &self.src[start..end];
            if tok == Tok::Word {
                self.line.is_header = w == b"def" || w == b"class";
                self.line.first_is_async = w == b"async";
            }
        }
    }

    fn start_logical_line(&mut self, tok: Tok, start: usize) {
        let indent = if self.cont_before_first {
            None
        } else {
            Some((self.phys_line_start, start))
        };
        if let Some(p) = self.pending.take() {
            // A following string statement (possibly parenthesized) would
            // become the docstring: keep a `pass` in front of it.
            let is_str = matches!(tok, Tok::Str(_)) || self.src[start] == b'(';
            let pass = match p.ctx {
                DocContext::Module => is_str,
                DocContext::Block => {
                    let same_indent = match (p.indent, indent) {
                        (Some((a0, a1)), Some((b0, b1))) => self.src[a0..a1] == self.src[b0..b1],
                        _ => false,
                    };
                    is_str || !same_indent
                }
            };
            self.edits[p.edit] = Edit::Docstring(p.start, p.end, pass);
        }
        self.line = Line {
            active: true,
            ntok: 1,
            first_tok_start: start,
            indent,
            all_doc_strings: matches!(tok, Tok::Str(true)),
            ..Line::default()
        };
        self.line.doc_ctx = self.expect_doc.take();
        if self.line.doc_ctx.is_some() && self.line.all_doc_strings {
            self.line.doc_edit = self.edits.len();
            self.edits.push(Edit::Nop);
        }
    }

    fn end_logical_line(&mut self) {
        let line = std::mem::take(&mut self.line);
        self.cont_before_first = false;
        if let Some(ctx) = line.doc_ctx {
            if line.all_doc_strings {
                self.pending = Some(Pending {
                    edit: line.doc_edit,
                    start: line.first_tok_start,
                    end: line.last_end,
                    ctx,
                    indent: line.indent,
                });
            }
        }
        if line.is_header && line.header_colon {
            if line.after_colon_ntok == 0 {
                self.expect_doc = Some(DocContext::Block);
            } else if line.after_colon_ok {
                self.edits[line.after_colon_edit] =
                    Edit::Docstring(line.after_colon_start, line.last_end, true);
            }
        }
    }

    /// Apply the recorded edits.
    fn output(&self) -> String {
        let s = self.src;
        let mut out: Vec<u8> = Vec::with_capacity(s.len());
        let mut pos = 0;
        for &e in &self.edits {
            match e {
                Edit::Nop => {}
                Edit::Newline(i) => {
                    if i < pos {
                        continue;
                    }
                    out.extend_from_slice(&s[pos..i]);
                    trim_trailing(&mut out);
                    out.push(b'\n');
                    pos = i + 1;
                }
                Edit::Comment(a, b) => {
                    if a < pos {
                        continue;
                    }
                    out.extend_from_slice(&s[pos..a]);
                    pos = b;
                }
                Edit::Docstring(a, b, pass) => {
                    if a < pos {
                        continue;
                    }
                    out.extend_from_slice(&s[pos..a]);
                    if pass {
                        out.extend_from_slice(b"pass");
                    }
                    let newlines = s[a..b].iter().filter(|&&c| c == b'\n').count();
                    for _ in 0..newlines {
                        trim_trailing(&mut out);
                        out.push(b'\n');
                    }
                    pos = b;
                }
            }
        }
        out.extend_from_slice(&s[pos..]);
        trim_trailing(&mut out);
        // Only whole ASCII ranges were removed or inserted, so the result is
        // valid UTF-8.
        String::from_utf8(out).expect("minimize_source produced invalid UTF-8")
    }
}

#[inline]
fn memchr_newline(s: &[u8], i: usize) -> usize {
    s[i..]
        .iter()
        .position(|&c| c == b'\n')
        .map_or(s.len(), |p| i + p)
}

#[inline]
fn trim_trailing(out: &mut Vec<u8>) {
    while let Some(&c) = out.last() {
        if is_trailing_ws(c) {
            out.pop();
        } else {
            break;
        }
    }
}

fn minimize_normalized(source: &str) -> Option<String> {
    let mut m = Minimizer::new(source.as_bytes());
    m.run()?;
    Some(m.output())
}

/// Like [`minimize_source`] but docstrings stay: for users' modules, whose
/// code may read `__doc__` (click's help text, jinja2 2.x appends to one).
pub fn strip_comments(source: &str) -> String {
    let normalized;
    let source = if source.contains('\r') {
        normalized = source.replace("\r\n", "\n").replace('\r', "\n");
        normalized.as_str()
    } else {
        source
    };
    let mut m = Minimizer::new(source.as_bytes());
    if m.run().is_none() {
        return source.to_string();
    }
    for e in m.edits.iter_mut() {
        if matches!(e, Edit::Docstring(..)) {
            *e = Edit::Nop;
        }
    }
    m.output()
}

#[cfg(test)]
mod tests {
    use super::minimize_source as m;

    #[test]
    fn strip_comments_keeps_docstrings() {
        let src = "def f():\n    \"\"\"Help.\"\"\"  # c\n    return 1\n";
        assert_eq!(
            super::strip_comments(src),
            "def f():\n    \"\"\"Help.\"\"\"\n    return 1\n"
        );
    }

    #[test]
    fn minimize_basic() {
        assert_eq!(m("x = 1  # c\n# only\ny = '#'\n"), "x = 1\n\ny = '#'\n");
    }

    #[test]
    fn minimize_docstrings() {
        assert_eq!(m("\"\"\"mod\"\"\"\nx = 1\n"), "\nx = 1\n");
        assert_eq!(
            m("def f():\n    \"\"\"a\n    b\"\"\"\n"),
            "def f():\n    pass\n\n"
        );
        assert_eq!(
            m("class A:\n    'doc'\n    x = 1\n"),
            "class A:\n\n    x = 1\n"
        );
        assert_eq!(m("def f(): 'doc'\n"), "def f(): pass\n");
    }

    #[test]
    fn minimize_unterminated_is_unchanged() {
        let src = "x = '''abc  # c\n";
        assert_eq!(m(src), src);
    }
}
