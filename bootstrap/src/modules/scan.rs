//! Static analysis of a module's imports, for planning what one GET_MODULE
//! reply carries (the seed's "Minimizing Roundtrips").
//!
//! Only what runs when the module is imported counts: statements at module
//! level and in class bodies, including conditional and `try` imports
//! (marked `optional`: the module works without them). Imports inside
//! function bodies are left for later (they run when the function does,
//! if ever), and so are `if TYPE_CHECKING:` blocks (never run). Literal
//! `importlib.import_module('x')` and `__import__('x')` at module level
//! count like `import x`.
//!
//! The scanner is a small tokenizer over logical lines: strings (every
//! prefix, triple quotes), comments, brackets and backslash continuations
//! are understood, so `import` inside a docstring is never taken for one.

/// One name a module imports when it is itself imported.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScannedImport {
    /// Absolute dotted name: a module, or `module.attribute` for
    /// `from module import attribute` (the resolver tries both).
    pub name: String,
    /// Under `try`/`except`/`if`/`else`: the module may do without it.
    pub optional: bool,
}

/// One logical line: its indentation, its code with every string literal
/// replaced by `\x01N\x02` (N indexes `strings`), and those literals.
struct Logical {
    indent: usize,
    code: String,
    strings: Vec<String>,
}

/// Splits source into logical lines. None if the source does not
/// tokenize (an unterminated string): then nothing is planned.
fn logical_lines(src: &str) -> Option<Vec<Logical>> {
    let chars: Vec<char> = src.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    let n = chars.len();
    while i < n {
        // Start of a physical line: measure indentation.
        let mut indent = 0;
        while i < n && (chars[i] == ' ' || chars[i] == '\t' || chars[i] == '\x0c') {
            indent += if chars[i] == '\t' { 8 - indent % 8 } else { 1 };
            i += 1;
        }
        let mut line = Logical {
            indent,
            code: String::new(),
            strings: Vec::new(),
        };
        let mut depth = 0usize;
        while i < n {
            let c = chars[i];
            match c {
                '#' => {
                    while i < n && chars[i] != '\n' {
                        i += 1;
                    }
                }
                '\\' if i + 1 < n && chars[i + 1] == '\n' => {
                    line.code.push(' ');
                    i += 2;
                }
                '\n' => {
                    i += 1;
                    if depth == 0 {
                        break;
                    }
                    line.code.push(' ');
                }
                '(' | '[' | '{' => {
                    depth += 1;
                    line.code.push(c);
                    i += 1;
                }
                ')' | ']' | '}' => {
                    depth = depth.saturating_sub(1);
                    line.code.push(c);
                    i += 1;
                }
                '\'' | '"' => {
                    let triple = i + 2 < n && chars[i + 1] == c && chars[i + 2] == c;
                    let q = if triple { 3 } else { 1 };
                    i += q;
                    let mut lit = String::new();
                    loop {
                        if i >= n {
                            return None;
                        }
                        let d = chars[i];
                        if d == '\\' && i + 1 < n {
                            lit.push(d);
                            lit.push(chars[i + 1]);
                            i += 2;
                            continue;
                        }
                        if d == c
                            && (!triple || (i + 2 < n && chars[i + 1] == c && chars[i + 2] == c))
                        {
                            i += q;
                            break;
                        }
                        if d == '\n' && !triple {
                            return None;
                        }
                        lit.push(d);
                        i += 1;
                    }
                    line.code
                        .push_str(&format!("\x01{}\x02", line.strings.len()));
                    line.strings.push(lit);
                }
                _ => {
                    line.code.push(c);
                    i += 1;
                }
            }
        }
        if !line.code.trim().is_empty() {
            out.push(line);
        }
    }
    Some(out)
}

/// Why a block's body is special.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Block {
    /// A function body: runs later, if ever.
    Def,
    /// `if TYPE_CHECKING:`: never runs.
    TypeOnly,
    /// try/except/if/else: may or may not run.
    Optional,
    /// Anything else (class, with, for): runs.
    Plain,
}

fn opener(stmt: &str) -> Block {
    let word = stmt
        .split(|c: char| !c.is_alphanumeric() && c != '_')
        .next()
        .unwrap_or("");
    match word {
        "def" => Block::Def,
        "async" if stmt[5..].trim_start().starts_with("def") => Block::Def,
        "if" | "elif" if stmt.contains("TYPE_CHECKING") => Block::TypeOnly,
        "if" | "elif" | "else" | "try" | "except" | "finally" => Block::Optional,
        _ => Block::Plain,
    }
}

/// The absolute dotted names that `source` imports when it is imported,
/// with relative imports resolved against `package` (the module's
/// package, or itself for a package's `__init__`).
pub fn scan_imports(source: &str, package: &str) -> Vec<ScannedImport> {
    let Some(lines) = logical_lines(source) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    let mut stack: Vec<(usize, Block)> = Vec::new();
    // `for name in ("a", "b"):` at module level: name -> the literals, for
    // `__import__(name)` in the loop body (requests.packages does this).
    let mut loops: Vec<(String, Vec<String>)> = Vec::new();
    for line in &lines {
        while stack.last().is_some_and(|&(ind, _)| ind >= line.indent) {
            stack.pop();
        }
        let skip = stack
            .iter()
            .any(|&(_, b)| b == Block::Def || b == Block::TypeOnly);
        let optional = stack.iter().any(|&(_, b)| b == Block::Optional);
        let code = line.code.trim();
        let kind = opener(code);
        if code.ends_with(':') {
            stack.push((line.indent, kind));
        }
        if skip || kind == Block::Def || kind == Block::TypeOnly {
            continue;
        }
        if let Some(l) = literal_loop(line) {
            loops.push(l);
        }
        for stmt in code.split(';') {
            let mut stmt = stmt.trim();
            let mut opt = optional;
            // `try: import x` and `if c: import x` on one line.
            if kind == Block::Optional {
                if let Some((_, body)) = stmt.split_once(':') {
                    stmt = body.trim();
                    opt = true;
                }
            }
            import_statement(stmt, package, opt, &mut out);
        }
        dynamic_imports(line, package, optional, &loops, &mut out);
    }
    out
}

/// `for NAME in ("lit", ...):` / `[...]`: NAME and the literals.
fn literal_loop(line: &Logical) -> Option<(String, Vec<String>)> {
    let rest = line.code.trim().strip_prefix("for ")?;
    let (var, iter) = rest.split_once(" in ")?;
    let var = var.trim();
    if !var.chars().all(|c| c.is_alphanumeric() || c == '_') {
        return None;
    }
    let iter = iter.trim().strip_suffix(':')?.trim();
    let inner = iter
        .strip_prefix('(')
        .and_then(|i| i.strip_suffix(')'))
        .or_else(|| iter.strip_prefix('[').and_then(|i| i.strip_suffix(']')))?;
    let mut lits = Vec::new();
    for item in inner.split(',').map(str::trim).filter(|i| !i.is_empty()) {
        let idx: usize = item
            .strip_prefix('\x01')?
            .strip_suffix('\x02')?
            .parse()
            .ok()?;
        lits.push(line.strings[idx].clone());
    }
    Some((var.to_string(), lits))
}

fn push(out: &mut Vec<ScannedImport>, name: String, optional: bool) {
    if !name.is_empty() && !out.iter().any(|s| s.name == name) {
        out.push(ScannedImport { name, optional });
    } else if !optional {
        if let Some(s) = out.iter_mut().find(|s| s.name == name) {
            s.optional = false;
        }
    }
}

fn import_statement(stmt: &str, package: &str, optional: bool, out: &mut Vec<ScannedImport>) {
    let clean = stmt.replace(['(', ')'], " ");
    if let Some(rest) = clean.strip_prefix("import ") {
        for item in rest.split(',') {
            if let Some(name) = item.split_whitespace().next() {
                push(out, name.to_string(), optional);
            }
        }
    } else if let Some(rest) = clean.strip_prefix("from ") {
        let Some((module, names)) = rest.split_once(" import ") else {
            return;
        };
        let module = module.trim();
        if module == "__future__" {
            return;
        }
        let Some(base) = resolve_relative(module, package) else {
            return;
        };
        push(out, base.clone(), optional);
        for item in names.split(',') {
            if let Some(name) = item.split_whitespace().next() {
                if name != "*" {
                    let full = if base.is_empty() {
                        name.to_string()
                    } else {
                        format!("{base}.{name}")
                    };
                    push(out, full, optional);
                }
            }
        }
    }
}

/// `import_module('x')`, `import_module('.x', __name__)` and
/// `__import__('x')` with a literal name.
fn dynamic_imports(
    line: &Logical,
    package: &str,
    optional: bool,
    loops: &[(String, Vec<String>)],
    out: &mut Vec<ScannedImport>,
) {
    for call in ["import_module(", "__import__("] {
        let mut rest = line.code.as_str();
        while let Some(at) = rest.find(call) {
            rest = &rest[at + call.len()..];
            let arg = rest.trim_start();
            let lits: Vec<&str> = match arg
                .strip_prefix('\x01')
                .and_then(|a| a.split_once('\x02'))
                .and_then(|(n, _)| n.parse::<usize>().ok())
            {
                Some(idx) => vec![line.strings[idx].as_str()],
                None => {
                    let var: String = arg
                        .chars()
                        .take_while(|c| c.is_alphanumeric() || *c == '_')
                        .collect();
                    match loops.iter().rev().find(|(v, _)| *v == var) {
                        Some((_, l)) => l.iter().map(String::as_str).collect(),
                        None => continue,
                    }
                }
            };
            for lit in lits {
                if !lit
                    .chars()
                    .all(|c| c.is_alphanumeric() || c == '_' || c == '.')
                {
                    continue;
                }
                if let Some(name) = resolve_relative(lit, package) {
                    push(out, name, optional);
                }
            }
        }
    }
}

fn resolve_relative(module: &str, package: &str) -> Option<String> {
    let dots = module.chars().take_while(|&c| c == '.').count();
    if dots == 0 {
        return Some(module.to_string());
    }
    let mut base: Vec<&str> = if package.is_empty() {
        Vec::new()
    } else {
        package.split('.').collect()
    };
    for _ in 1..dots {
        base.pop()?;
    }
    let tail = &module[dots..];
    if !tail.is_empty() {
        base.push(tail);
    }
    Some(base.join("."))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(src: &str, pkg: &str) -> Vec<String> {
        scan_imports(src, pkg).into_iter().map(|s| s.name).collect()
    }

    #[test]
    fn imports_are_found_and_resolved() {
        let src = "import os, sys as s\nfrom . import a, b\nfrom .c import (d,\n    e)\nfrom ..x import y\nif 1:\n  import z.w  # c\nfrom q import *\n";
        let got = names(src, "pkg.sub");
        for want in [
            "os",
            "sys",
            "pkg.sub.a",
            "pkg.sub.b",
            "pkg.sub.c",
            "pkg.sub.c.d",
            "pkg.sub.c.e",
            "pkg.x",
            "pkg.x.y",
            "z.w",
            "q",
        ] {
            assert!(got.contains(&want.to_string()), "{want} in {got:?}");
        }
    }

    #[test]
    fn function_bodies_type_checking_and_strings_are_not_imports() {
        let src = r#"
"""Docstring.
import fake_in_docstring
"""
import top
def f():
    import in_function
    if x:
        import deeper_in_function
class C:
    import in_class_body
    def m(self):
        from lazy import thing
if TYPE_CHECKING:
    import typing_only
else:
    import runtime_else
s = "import not_code"
async def g():
    import in_async
import after
"#;
        assert_eq!(
            names(src, ""),
            ["top", "in_class_body", "runtime_else", "after"]
        );
    }

    #[test]
    fn try_and_if_imports_are_optional() {
        let src = "try:\n    import fast\nexcept ImportError:\n    fast = None\nimport hard\nif sys.version_info > (3,): import three\n";
        let got = scan_imports(src, "");
        let opt: Vec<(&str, bool)> = got.iter().map(|s| (s.name.as_str(), s.optional)).collect();
        assert_eq!(opt, [("fast", true), ("hard", false), ("three", true)]);
    }

    #[test]
    fn literal_import_module_counts_at_module_level_only() {
        let src = "import importlib\nm = importlib.import_module('plug.a')\nn = importlib.import_module('.b', __name__)\n__import__(\"c\")\nv = import_module(name)\ndef f():\n    importlib.import_module('later')\n";
        assert_eq!(names(src, "pkg"), ["importlib", "plug.a", "pkg.b", "c"]);
    }

    #[test]
    fn import_in_a_loop_over_literal_names() {
        let src = "for package in (\"urllib3\", \"idna\"):\n    locals()[package] = __import__(package)\n";
        assert_eq!(names(src, "requests"), ["urllib3", "idna"]);
    }

    #[test]
    fn unterminated_source_plans_nothing() {
        assert!(scan_imports("import a\nx = '''\n", "").is_empty());
    }
}
