//! Tests for `econtext_bootstrap::minimize::minimize_source`.
//!
//! Unit cases for each rule, plus a differential test that minimizes every
//! standard library module of real Python 2.7 and 3.13 interpreters and lets
//! the interpreter check that the result compiles, keeps its line count and
//! produces the same AST (with line numbers) once docstrings are removed.

use econtext_bootstrap::minimize::minimize_source as m;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

fn lines(s: &str) -> usize {
    s.matches('\n').count()
}

/// Minimize and check the invariant that the line count is preserved.
fn mm(src: &str) -> String {
    let out = m(src);
    let expected = lines(&src.replace("\r\n", "\n").replace('\r', "\n"));
    assert_eq!(
        lines(&out),
        expected,
        "line count changed for {src:?} -> {out:?}"
    );
    out
}

#[test]
fn comments_removed_and_lines_blanked() {
    assert_eq!(mm("x = 1  # comment\n"), "x = 1\n");
    assert_eq!(mm("# only a comment\nx = 1\n"), "\nx = 1\n");
    assert_eq!(mm("if x:\n    # indented\n    y()\n"), "if x:\n\n    y()\n");
    assert_eq!(mm("x = 1 # no newline at eof"), "x = 1");
    assert_eq!(mm("x = 1\n# last"), "x = 1\n");
}

#[test]
fn hash_inside_strings_kept() {
    assert_eq!(
        mm("s = '# not a comment'  # yes\n"),
        "s = '# not a comment'\n"
    );
    assert_eq!(mm("s = \"a#b\" + 'c#d'\n"), "s = \"a#b\" + 'c#d'\n");
    assert_eq!(
        mm("s = '''\n# inside\n'''  # out\n"),
        "s = '''\n# inside\n'''\n"
    );
    assert_eq!(mm("s = 'it\\'s # x'  # c\n"), "s = 'it\\'s # x'\n");
}

#[test]
fn fstring_format_spec_hash() {
    assert_eq!(mm("s = f\"{x!r:#>10}\"  # c\n"), "s = f\"{x!r:#>10}\"\n");
    assert_eq!(mm("s = f'{x:#x}' # c\n"), "s = f'{x:#x}'\n");
    assert_eq!(mm("s = F'{x:{w}#}' # c\n"), "s = F'{x:{w}#}'\n");
    assert_eq!(mm("s = rf'{x}\\#' # c\n"), "s = rf'{x}\\#'\n");
    assert_eq!(mm("s = f'{{#}}' # c\n"), "s = f'{{#}}'\n");
    assert_eq!(mm("s = f'\\N{DASH}#' # c\n"), "s = f'\\N{DASH}#'\n");
}

#[test]
fn fstring_nested_quotes_312() {
    // PEP 701: same quotes nested inside replacement fields.
    assert_eq!(mm("s = f\"{d[\"k#\"]}\"  # c\n"), "s = f\"{d[\"k#\"]}\"\n");
    assert_eq!(mm("s = f\"{f\"{'#'}\"}\" # c\n"), "s = f\"{f\"{'#'}\"}\"\n");
    // Comments and newlines inside a replacement field are left alone.
    let src = "s = f'''{x # inner\n}'''  # outer\n";
    assert_eq!(mm(src), "s = f'''{x # inner\n}'''\n");
    // Pre-3.12 style: other quotes inside the expression.
    assert_eq!(mm("s = f\"{d['#']}\" # c\n"), "s = f\"{d['#']}\"\n");
}

#[test]
fn shebang_and_encoding_kept() {
    let src = "#!/usr/bin/env python\n# -*- coding: utf-8 -*-\n# other\nx = 1\n";
    assert_eq!(
        mm(src),
        "#!/usr/bin/env python\n# -*- coding: utf-8 -*-\n\nx = 1\n"
    );
    assert_eq!(mm("# coding=latin-1\nx = 1\n"), "# coding=latin-1\nx = 1\n");
    // An encoding declaration on line 3 means nothing: removed.
    assert_eq!(mm("\n\n# coding: utf-8\n"), "\n\n\n");
    // `#!` only counts on line 1.
    assert_eq!(mm("x = 1\n#!foo\n"), "x = 1\n\n");
}

#[test]
fn module_docstring_after_shebang_and_encoding() {
    let src = "#!/usr/bin/python\n# -*- coding: utf-8 -*-\n\"\"\"Module doc.\n\nMore.\n\"\"\"\nimport os\n";
    assert_eq!(
        mm(src),
        "#!/usr/bin/python\n# -*- coding: utf-8 -*-\n\n\n\n\nimport os\n"
    );
    // `from __future__` must stay the first statement: no `pass` inserted.
    let src = "'''doc'''\nfrom __future__ import print_function\n";
    assert_eq!(mm(src), "\nfrom __future__ import print_function\n");
    // Docstring-only module.
    assert_eq!(mm("'''doc'''\n"), "\n");
}

#[test]
fn docstring_only_function_body() {
    assert_eq!(
        mm("def f():\n    \"\"\"Doc.\n\n    More.\n    \"\"\"\n\nx = 1\n"),
        "def f():\n    pass\n\n\n\n\nx = 1\n"
    );
    assert_eq!(mm("def f():\n    'doc'\n"), "def f():\n    pass\n");
    assert_eq!(
        mm("async def f():\n    'doc'\n"),
        "async def f():\n    pass\n"
    );
    assert_eq!(mm("def f(): 'doc'\n"), "def f(): pass\n");
    assert_eq!(
        mm("class E(Exception): \"doc\"  # c\n"),
        "class E(Exception): pass\n"
    );
    // Dedent to an outer block that continues.
    assert_eq!(
        mm("class A:\n    def f(self):\n        'doc'\n    x = 1\n"),
        "class A:\n    def f(self):\n        pass\n    x = 1\n"
    );
}

#[test]
fn class_and_def_docstrings_removed() {
    assert_eq!(
        mm("class A(object):\n    \"\"\"Doc.\"\"\"\n    x = 1\n"),
        "class A(object):\n\n    x = 1\n"
    );
    assert_eq!(
        mm("def f(a,\n      b):  # c\n    u'''doc'''\n    return a\n"),
        "def f(a,\n      b):\n\n    return a\n"
    );
    assert_eq!(
        mm("async def f():\n\tr'doc'\n\treturn 1\n"),
        "async def f():\n\n\treturn 1\n"
    );
    // Implicit concatenation, also across a backslash continuation.
    assert_eq!(
        mm("def f():\n    'a' \\\n    'b'\n    return 1\n"),
        "def f():\n\n\n    return 1\n"
    );
    // Python 2's ur prefix.
    assert_eq!(
        mm("def f():\n    ur'doc'\n    return 1\n"),
        "def f():\n\n    return 1\n"
    );
}

#[test]
fn non_docstrings_kept() {
    // Not the first statement.
    let src = "def f():\n    x = 1\n    'not doc'\n";
    assert_eq!(mm(src), src);
    // f-strings and bytes are not docstrings.
    let src = "def f():\n    f'x'\n    return 1\n";
    assert_eq!(mm(src), src);
    let src = "def f():\n    b'x'\n    return 1\n";
    assert_eq!(mm(src), src);
    // Not a def/class body.
    let src = "x = 1\nif x:\n    'str'\n    y = 2\n";
    assert_eq!(mm(src), src);
    // Followed by `;`, parenthesized or part of an expression: kept.
    let src = "def f():\n    'doc'; return 1\n";
    assert_eq!(mm(src), src);
    let src = "def f():\n    ('doc')\n    return 1\n";
    assert_eq!(mm(src), src);
    let src = "def f():\n    'a'.join(x)\n";
    assert_eq!(mm(src), src);
}

#[test]
fn removing_docstring_does_not_promote_next_string() {
    assert_eq!(
        mm("def f():\n    'doc'\n    'second'\n    return 1\n"),
        "def f():\n    pass\n    'second'\n    return 1\n"
    );
    assert_eq!(mm("'doc'\n'second'\n"), "pass\n'second'\n");
    assert_eq!(mm("'doc'\n('second')\n"), "pass\n('second')\n");
    assert_eq!(
        mm("class A:\n    'doc'\n    # c\n    u'second'\n"),
        "class A:\n    pass\n\n    u'second'\n"
    );
}

#[test]
fn triple_quotes_with_escapes_and_other_quotes() {
    let src = "s = \"\"\"a \\\"\"\" b ''' c # d\n\"\"\"  # e\n";
    assert_eq!(mm(src), "s = \"\"\"a \\\"\"\" b ''' c # d\n\"\"\"\n");
    let src = "s = '''x \"\"\" y \\''' # z\n'''\n";
    assert_eq!(mm(src), "s = '''x \"\"\" y \\''' # z\n'''\n");
    let src = "def f():\n    \"\"\"Use '''x''' and \\\"\"\" here.\n    # not a comment\n    \"\"\"\n    return 1\n";
    assert_eq!(mm(src), "def f():\n\n\n\n    return 1\n");
    assert_eq!(mm("s = ''''''  # c\n"), "s = ''''''\n");
    assert_eq!(mm("s = '' + \"\"  # c\n"), "s = '' + \"\"\n");
}

#[test]
fn backslash_continuations() {
    assert_eq!(mm("x = 1 + \\\n    2  # c\n"), "x = 1 + \\\n    2\n");
    assert_eq!(mm("s = 'a\\\n# b'  # c\n"), "s = 'a\\\n# b'\n");
    assert_eq!(mm("s = r'a\\'#'  # c\n"), "s = r'a\\'#'\n");
    assert_eq!(mm("s = r'\\\\'  # c\n"), "s = r'\\\\'\n");
}

#[test]
fn bytes_and_other_prefixes() {
    for p in [
        "b", "B", "br", "Br", "bR", "BR", "rb", "rB", "Rb", "RB", "u", "U", "r", "R", "ur", "UR",
        "f", "F", "fr", "Rf", "rF", "FR",
    ] {
        let src = format!("s = {p}'#' + {p}\"#\" + {p}'''#\n#'''  # c\n");
        let out = mm(&src);
        assert_eq!(out, format!("s = {p}'#' + {p}\"#\" + {p}'''#\n#'''\n"));
    }
    // Not a prefix: a name followed by a string (Python 2's print statement).
    assert_eq!(mm("print'#'  # c\n"), "print'#'\n");
}

#[test]
fn brackets_and_trailing_whitespace() {
    assert_eq!(
        mm("x = [  # c\n    1,  # d\n\n    # e\n    2,\n]   \n"),
        "x = [\n    1,\n\n\n    2,\n]\n"
    );
    // Trailing whitespace inside a string is preserved.
    assert_eq!(mm("s = '''a   \nb\t\n'''   \n"), "s = '''a   \nb\t\n'''\n");
    // Indentation with tabs and form feeds is kept; whitespace-only lines emptied.
    assert_eq!(
        mm("if x:\n\t \ty = 1\t\n  \t\n\x0c\n"),
        "if x:\n\t \ty = 1\n\n\n"
    );
}

#[test]
fn crlf_normalized() {
    assert_eq!(mm("x = 1  # c\r\ny = 2\r\n"), "x = 1\ny = 2\n");
    assert_eq!(mm("s = '''a\r\nb'''\r\n"), "s = '''a\nb'''\n");
    assert_eq!(mm("x = 1\ry = 2\r"), "x = 1\ny = 2\n");
}

#[test]
fn line_count_preserved() {
    let src = "#!/bin/python\n'''doc\n\n'''\nimport os  # c\n\nclass A:\n    '''x\n    y'''\n    def f(self, a=\"#\",\n          b=(1,  # c\n             2)):\n        \"doc\"\n\nx = f'''{1\n}'''\n";
    let out = mm(src);
    assert_eq!(out.lines().count(), src.lines().count());
}

#[test]
fn invalid_source_returned_unchanged() {
    let src = "x = 'unterminated  # c\ny = 1  # d\n";
    assert_eq!(mm(src), src);
    let src = "x = '''never closed  # c\n";
    assert_eq!(mm(src), src);
}

#[test]
fn non_ascii_kept() {
    assert_eq!(mm("é = 'ü#'  # ç\n"), "é = 'ü#'\n");
    // A byte order mark does not hide the module docstring.
    assert_eq!(mm("\u{feff}'''doc'''\nx = 1\n"), "\u{feff}\nx = 1\n");
    assert_eq!(mm("\u{feff}#!/bin/py\n# c\n"), "\u{feff}#!/bin/py\n\n");
}

#[test]
fn docstring_body_continuation_decisions() {
    // Decorated method after a class docstring: same indentation, no `pass`.
    assert_eq!(
        mm("class A:\n    'doc'\n    @d\n    def f(self): pass\n"),
        "class A:\n\n    @d\n    def f(self): pass\n"
    );
    // Comments and blank lines between docstring and next statement.
    assert_eq!(
        mm("def f():\n    'doc'\n\n    # c\n    return 1\n"),
        "def f():\n\n\n\n    return 1\n"
    );
    // Docstring of a nested function at the end of the outer body.
    assert_eq!(
        mm("def f():\n    def g():\n        'doc'\n    return g\n"),
        "def f():\n    def g():\n        pass\n    return g\n"
    );
    // Different indentation strings (tab vs spaces): conservative `pass`.
    assert_eq!(
        mm("def f():\n\t'doc'\n        return 1\n"),
        "def f():\n\tpass\n        return 1\n"
    );
    // A continuation line before the next statement: conservative `pass`.
    assert_eq!(
        mm("def f():\n    'doc'\n    \\\nreturn 1\n"),
        "def f():\n    pass\n    \\\nreturn 1\n"
    );
    // Class keyword arguments, type parameters and annotations in headers.
    assert_eq!(
        mm("class A[T: int](B, metaclass=M):\n    'doc'\n"),
        "class A[T: int](B, metaclass=M):\n    pass\n"
    );
    assert_eq!(
        mm("def f(a: int = {1: 2}, *, b=lambda: 0) -> dict[str, int]:\n    'doc'\n    return 1\n"),
        "def f(a: int = {1: 2}, *, b=lambda: 0) -> dict[str, int]:\n\n    return 1\n"
    );
    // Not headers: other compound statements, names starting with def/class.
    let src = "while x:\n    'doc'\n    x()\n";
    assert_eq!(mm(src), src);
    let src = "define()\nclassify = 1\n'x'\n";
    assert_eq!(mm(src), src);
}

#[test]
fn performance_4000_lines() {
    let unit = "class Foo(object):\n    \"\"\"Doc string.\n\n    More text # here.\n    \"\"\"\n\n    def method(self, a, b=\"#\"):  # comment\n        '''Method doc.'''\n        # a comment line\n        x = [a, b,  # trailing\n             f\"{a!r:#>10}\"]\n        return x  \n\n";
    let mut src = String::new();
    while lines(&src) < 4000 {
        src.push_str(unit);
    }
    let runs = 20;
    let start = Instant::now();
    for _ in 0..runs {
        std::hint::black_box(m(std::hint::black_box(&src)));
    }
    let per = start.elapsed() / runs;
    println!(
        "minimize_source: {} lines, {} bytes in {:?}",
        lines(&src),
        src.len(),
        per
    );
    #[cfg(not(debug_assertions))]
    assert!(per.as_millis() < 5, "too slow: {per:?}");
}

#[test]
fn econtext_core_size_reduction() {
    use flate2::{write::ZlibEncoder, Compression};
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("python/econtext_core.py");
    let Ok(src) = std::fs::read_to_string(&path) else {
        println!("SKIP: {} does not exist (yet)", path.display());
        return;
    };
    let z = |s: &str| {
        let mut e = ZlibEncoder::new(Vec::new(), Compression::best());
        e.write_all(s.as_bytes()).unwrap();
        e.finish().unwrap().len()
    };
    let out = mm(&src);
    let (zb, za) = (z(&src), z(&out));
    println!(
        "econtext_core.py: raw {} -> {} bytes, zlib {} -> {} bytes ({:.1}% smaller)",
        src.len(),
        out.len(),
        zb,
        za,
        100.0 * (zb - za) as f64 / zb as f64
    );
}

// ---------------------------------------------------------------------------
// Differential test against real interpreters.

/// Runs under both Python 2.7 and 3.x.  Reads `original<TAB>minimized` path
/// pairs on stdin; prints one result line per pair.
const CHECKER: &str = r#"
import ast, io, sys
try:
    import cPickle as pickle
except ImportError:
    import pickle

PY3 = sys.version_info[0] >= 3
DOC_PARENTS = tuple(getattr(ast, n) for n in
                    ('Module', 'ClassDef', 'FunctionDef', 'AsyncFunctionDef')
                    if hasattr(ast, n))
BODY_FIELDS = ('body', 'orelse', 'finalbody', 'handlers', 'cases')
try:
    STR_TYPES = (str, unicode)
except NameError:
    STR_TYPES = (str,)

def compile_oo(src, path):
    # Docstrings are not compiled with optimize=2 (python2.7 runs with -OO).
    if PY3:
        return compile(src, path, 'exec', 0, True, 2)
    return compile(src, path, 'exec', 0, True)

def is_doc(stmt):
    if not isinstance(stmt, ast.Expr):
        return False
    v = stmt.value
    if hasattr(ast, 'Constant') and isinstance(v, ast.Constant):
        return isinstance(v.value, str)
    return type(v).__name__ == 'Str' and isinstance(v.s, STR_TYPES)

_starts = [None, None]

def string_starts(lines):
    """{end line: (start line, start column)} of the strings of a source."""
    if _starts[0] is not lines:
        import tokenize
        it = iter([l + b'\n' for l in lines])
        res = {}
        for tok in tokenize.generate_tokens(lambda: next(it, b'')):
            if tok[0] == tokenize.STRING:
                res[tok[3][0]] = tok[2]
        _starts[0] = lines
        _starts[1] = res
    return _starts[1]

def strip_docs(node, lines):
    """Remove docstrings below `node`, leaving `pass` where a body would
    become empty (exactly what minimize_source does) and dropping a leading
    `pass` before other statements.  End positions of compound statements
    are dropped as they legitimately change."""
    for field in BODY_FIELDS:
        stmts = getattr(node, field, None)
        if isinstance(stmts, list):
            for s in stmts:
                strip_docs(s, lines)
    if isinstance(node, DOC_PARENTS) and node.body:
        body = node.body
        if is_doc(body[0]):
            doc = body.pop(0)
            if not body and not isinstance(node, ast.Module):
                col = doc.col_offset
                lineno = doc.lineno
                if col < 0:
                    # Python 2.7 gives multi-line strings the position
                    # (last line, -1): find where the literal starts.
                    lineno, col = string_starts(lines)[lineno]
                p = ast.Pass()
                p.lineno = lineno
                p.col_offset = col
                if hasattr(doc, 'end_lineno'):
                    p.end_lineno = doc.lineno
                    p.end_col_offset = col + 4
                body.append(p)
        if len(body) > 1 and isinstance(body[0], ast.Pass):
            body.pop(0)
    if getattr(node, 'body', None) is not None:
        for attr in ('end_lineno', 'end_col_offset'):
            try:
                delattr(node, attr)
            except AttributeError:
                pass
    return node

def code_names(code, acc, top=True):
    # Python 2 gives the module code object the line of its first statement.
    acc.add((code.co_name, 0 if top else code.co_firstlineno))
    for c in code.co_consts:
        if hasattr(c, 'co_code'):
            code_names(c, acc, False)
    return acc

CODE_ATTRS = ('co_argcount', 'co_nlocals', 'co_flags', 'co_code', 'co_names',
              'co_varnames', 'co_freevars', 'co_cellvars', 'co_name')

def same_code(a, b, top=True):
    if PY3:
        return a == b  # includes co_linetable and co_firstlineno
    import dis
    for attr in CODE_ATTRS:
        if getattr(a, attr) != getattr(b, attr):
            return False
    if not top and a.co_firstlineno != b.co_firstlineno:
        return False
    if list(dis.findlinestarts(a)) != list(dis.findlinestarts(b)):
        return False
    if len(a.co_consts) != len(b.co_consts):
        return False
    for x, y in zip(a.co_consts, b.co_consts):
        if hasattr(x, 'co_code') and hasattr(y, 'co_code'):
            if not same_code(x, y, False):
                return False
        elif type(x) != type(y) or x != y:
            return False
    return True

def fast_pickle(tree):
    f = io.BytesIO()
    p = pickle.Pickler(f, 2)
    p.fast = 1
    p.dump(tree)
    return f.getvalue()

def nlines(data):
    return data.replace(b'\r\n', b'\n').replace(b'\r', b'\n').count(b'\n')

def load(path):
    f = open(path, 'rb')
    try:
        return f.read()
    finally:
        f.close()

def check(orig_path, min_path):
    orig = load(orig_path)
    try:
        c1 = compile_oo(orig, orig_path)
    except Exception:
        return 'SKIPPED'
    mini = load(min_path)
    try:
        c2 = compile_oo(mini, orig_path)
    except Exception as e:
        return 'FAIL does not compile: %r' % (e,)
    if nlines(orig) != nlines(mini):
        return 'FAIL line count %d != %d' % (nlines(orig), nlines(mini))
    n1 = code_names(c1, set())
    n2 = code_names(c2, set())
    if n1 != n2:
        return 'FAIL code objects differ: %r' % (sorted(n1 ^ n2)[:5],)
    if same_code(c1, c2):
        # Identical bytecode, constants and line tables with docstrings
        # compiled out.
        return 'OK'
    # Slow path (e.g. `pass` left for a docstring-only body): compare the
    # ASTs including line numbers and column offsets.
    t1 = strip_docs(ast.parse(orig, orig_path), orig.replace(b'\r\n', b'\n').split(b'\n'))
    t2 = strip_docs(ast.parse(mini, orig_path), mini.split(b'\n'))
    if fast_pickle(t1) == fast_pickle(t2):
        return 'OK-AST'
    d1 = ast.dump(t1, include_attributes=True)
    d2 = ast.dump(t2, include_attributes=True)
    if d1 == d2:
        return 'OK-AST'
    i = 0
    while i < min(len(d1), len(d2)) and d1[i] == d2[i]:
        i += 1
    return 'FAIL ast differs at %d: %s | %s' % (i, d1[max(0, i - 150):i + 80],
                                                d2[max(0, i - 150):i + 80])

out = sys.stdout
for line in sys.stdin:
    line = line.rstrip('\n')
    if not line:
        continue
    a, b = line.split('\t')
    try:
        res = check(a, b)
    except Exception as e:
        res = 'FAIL checker error: %r' % (e,)
    out.write('%s\t%s\n' % (res, a))
out.flush()
"#;

fn collect_py_files(dir: &Path, root: &Path, skip: bool, acc: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let rel = path
            .strip_prefix(root)
            .unwrap()
            .to_string_lossy()
            .into_owned();
        let Ok(ft) = entry.file_type() else { continue };
        if ft.is_dir() {
            if rel.ends_with("__pycache__")
                || skip
                    && (rel == "test"
                        || rel == "idlelib"
                        || rel == "lib2to3/tests"
                        || rel == "site-packages")
            {
                continue;
            }
            collect_py_files(&path, root, skip, acc);
        } else if ft.is_file() && rel.ends_with(".py") {
            acc.push(path);
        }
    }
}

struct Outcome {
    elapsed: std::time::Duration,
    ok: usize,
    /// Files whose bytecode differed (`pass` left for a docstring-only body)
    /// and were checked by comparing ASTs with positions instead.
    ok_ast: usize,
    skipped_compile: usize,
    skipped_utf8: usize,
    failures: Vec<String>,
}

fn differential(python: &str, libdir: &str, tag: &str, skip: bool) -> Result<Outcome, String> {
    let python = Path::new(python);
    let libdir = Path::new(libdir);
    if !python.exists() {
        return Err(format!("interpreter {} not found", python.display()));
    }
    if !libdir.is_dir() {
        return Err(format!("library {} not found", libdir.display()));
    }
    let start = Instant::now();
    let mut files = Vec::new();
    collect_py_files(libdir, libdir, skip, &mut files);
    files.sort();
    let tmp = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("minimize-{tag}"));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp).map_err(|e| e.to_string())?;
    let checker = tmp.join("checker.py");
    std::fs::write(&checker, CHECKER).map_err(|e| e.to_string())?;

    let mut list = String::new();
    let mut skipped_utf8 = 0;
    for (n, path) in files.iter().enumerate() {
        let Ok(src) = std::fs::read_to_string(path) else {
            // Not UTF-8 (e.g. a latin-1 Python 2 module): the master only
            // serves UTF-8 &str, so there is nothing to check.
            skipped_utf8 += 1;
            continue;
        };
        let out = m(&src);
        let dst = tmp.join(format!("{n}.py"));
        std::fs::write(&dst, out).map_err(|e| e.to_string())?;
        list.push_str(&format!("{}\t{}\n", path.display(), dst.display()));
    }

    let mut child = Command::new(python)
        .arg("-OO")
        .arg(&checker)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .env("PYTHONWARNINGS", "ignore")
        .spawn()
        .map_err(|e| format!("cannot run {}: {e}", python.display()))?;
    let mut stdin = child.stdin.take().unwrap();
    let writer = std::thread::spawn(move || stdin.write_all(list.as_bytes()));
    let output = child.wait_with_output().map_err(|e| e.to_string())?;
    writer.join().unwrap().map_err(|e| e.to_string())?;
    if !output.status.success() {
        return Err(format!("checker failed: {}", output.status));
    }
    let mut outcome = Outcome {
        elapsed: start.elapsed(),
        ok: 0,
        ok_ast: 0,
        skipped_compile: 0,
        skipped_utf8,
        failures: Vec::new(),
    };
    for line in String::from_utf8_lossy(&output.stdout).lines() {
        if line.starts_with("OK\t") {
            outcome.ok += 1;
        } else if line.starts_with("OK-AST\t") {
            outcome.ok += 1;
            outcome.ok_ast += 1;
        } else if line.starts_with("SKIPPED\t") {
            outcome.skipped_compile += 1;
        } else {
            outcome.failures.push(line.to_string());
        }
    }
    let _ = std::fs::remove_dir_all(&tmp);
    Ok(outcome)
}

#[test]
fn differential_against_real_interpreters() {
    run_differential(
        &[
            (
                "/root/.pyenv/versions/3.13.0/bin/python3.13".into(),
                "/root/.pyenv/versions/3.13.0/lib/python3.13".into(),
                "3.13".into(),
                true,
            ),
            (
                "/root/.pyenv/versions/2.7.18/bin/python2.7".into(),
                "/root/.pyenv/versions/2.7.18/lib/python2.7".into(),
                "2.7".into(),
                true,
            ),
        ],
        100,
    );
}

/// Extra trees to check, e.g. test suites and site-packages:
/// `MINIMIZE_DIFF='/path/python=/path/dir;...' cargo test --release
/// -p econtext-bootstrap --test minimize -- --ignored --nocapture`
#[test]
#[ignore]
fn differential_extra_trees() {
    let spec = std::env::var("MINIMIZE_DIFF").unwrap_or_default();
    let targets: Vec<_> = spec
        .split(';')
        .filter(|s| !s.is_empty())
        .enumerate()
        .map(|(i, s)| {
            let (py, dir) = s.split_once('=').expect("python=dir");
            (py.to_string(), dir.to_string(), format!("extra{i}"), false)
        })
        .collect();
    run_differential(&targets, 1);
}

fn run_differential(targets: &[(String, String, String, bool)], min_ok: usize) {
    let start = Instant::now();
    // Run the interpreters in parallel.
    let handles: Vec<_> = targets
        .iter()
        .cloned()
        .map(|(py, lib, tag, skip)| {
            std::thread::spawn(move || {
                let res = differential(&py, &lib, &tag, skip);
                (format!("{tag} ({lib})"), res)
            })
        })
        .collect();
    let mut failures = Vec::new();
    for h in handles {
        let (tag, res) = h.join().unwrap();
        match res {
            Err(reason) => println!("SKIP: Python {tag}: {reason}"),
            Ok(o) => {
                println!(
                    "Python {tag}: {} files checked OK ({} of them via AST), {} failed, {} \
                     skipped (interpreter cannot compile), {} skipped (not UTF-8) in {:?}",
                    o.ok,
                    o.ok_ast,
                    o.failures.len(),
                    o.skipped_compile,
                    o.skipped_utf8,
                    o.elapsed
                );
                assert!(
                    o.ok >= min_ok,
                    "Python {tag}: suspiciously few files checked"
                );
                failures.extend(o.failures.into_iter().map(|f| format!("[{tag}] {f}")));
            }
        }
    }
    println!("differential test took {:?}", start.elapsed());
    for f in failures.iter().take(20) {
        println!("{f}");
    }
    assert!(failures.is_empty(), "{} files failed", failures.len());
}
