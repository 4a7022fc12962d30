//! Finding Python modules on the master's module path, for GET_MODULE.
//!
//! [`ModuleFinder`] resolves a dotted name to a file under one of the
//! configured directories (like PYTHONPATH), minimizes and compresses each
//! module once, lists a package's submodules (the seed's "Child Module
//! Enumeration"), and scans a module's import statements so that the
//! modules it will import next can travel in the same reply (the seed's
//! "Minimizing Roundtrips").

use std::collections::{HashMap, HashSet, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use econtext_actors::importer::ModuleResolver;
use econtext_wire::messages::ModuleSource;

use crate::minimize::minimize_source;
use crate::payload::compress;

/// Compressed bytes of related modules one reply may carry besides the
/// requested module: enough for any reasonable package, small enough that
/// a huge one does not arrive whole when one module was wanted.
const RELATED_BUDGET: usize = 512 * 1024;

/// One module found on disk, prepared for sending.
#[derive(Debug)]
struct Prepared {
    record: ModuleSource,
    /// Absolute dotted names this module imports (candidates; only those
    /// found on the path are sent).
    imports: Vec<String>,
}

/// Modules every master serves whatever its module path: the parts of
/// the Python core that only some contexts need.
pub const BUILTIN_MODULES: &[(&str, &str)] = &[
    (
        "econtext.parent",
        include_str!("../python/econtext_parent.py"),
    ),
    // What `econtext run` calls: a command's rc, stdout and stderr.
    (
        "econtext.fleet",
        include_str!("../python/econtext_fleet.py"),
    ),
    (
        "econtext.files",
        include_str!("../python/econtext_files.py"),
    ),
];

/// Resolves and prepares modules from a list of directories.
#[derive(Debug, Default)]
pub struct ModuleFinder {
    path: Vec<PathBuf>,
    cache: HashMap<String, Option<Arc<Prepared>>>,
}

impl ModuleFinder {
    pub fn new(path: Vec<PathBuf>) -> Self {
        ModuleFinder {
            path,
            cache: HashMap::new(),
        }
    }

    fn builtin(fullname: &str) -> Option<Arc<Prepared>> {
        let (_, source) = BUILTIN_MODULES.iter().find(|(n, _)| *n == fullname)?;
        let package = fullname.rsplit_once('.').map(|(p, _)| p).unwrap_or("");
        Some(Arc::new(Prepared {
            record: ModuleSource {
                fullname: fullname.to_string(),
                filename: format!("<econtext builtin {fullname}>"),
                is_package: false,
                source: compress(minimize_source(source).as_bytes()),
                children: Vec::new(),
            },
            imports: scan_imports(source, package),
        }))
    }

    /// The module path from the `ECONTEXT_PATH` environment variable
    /// (colon-separated, like PYTHONPATH).
    pub fn path_from_env() -> Vec<PathBuf> {
        std::env::var_os("ECONTEXT_PATH")
            .map(|v| {
                std::env::split_paths(&v)
                    .filter(|p| !p.as_os_str().is_empty())
                    .collect()
            })
            .unwrap_or_default()
    }

    pub fn path(&self) -> &[PathBuf] {
        &self.path
    }

    fn locate(&self, fullname: &str) -> Option<(PathBuf, bool)> {
        if fullname.is_empty()
            || !fullname
                .split('.')
                .all(|p| !p.is_empty() && p.chars().all(|c| c.is_alphanumeric() || c == '_'))
        {
            return None;
        }
        let rel: PathBuf = fullname.split('.').collect();
        for dir in &self.path {
            let base = dir.join(&rel);
            let init = base.join("__init__.py");
            if init.is_file() {
                return Some((init, true));
            }
            let file = base.with_extension("py");
            if file.is_file() {
                return Some((file, false));
            }
        }
        None
    }

    fn prepare(&mut self, fullname: &str) -> Option<Arc<Prepared>> {
        if let Some(hit) = self.cache.get(fullname) {
            return hit.clone();
        }
        if let Some(b) = Self::builtin(fullname) {
            self.cache.insert(fullname.to_string(), Some(b.clone()));
            return Some(b);
        }
        let found = self.locate(fullname).and_then(|(file, is_package)| {
            let source = std::fs::read_to_string(&file).ok()?;
            let package = if is_package {
                fullname.to_string()
            } else {
                fullname
                    .rsplit_once('.')
                    .map(|(p, _)| p.to_string())
                    .unwrap_or_default()
            };
            let children = if is_package {
                list_children(file.parent().expect("__init__.py has a parent"))
            } else {
                Vec::new()
            };
            let imports = scan_imports(&source, &package);
            Some(Arc::new(Prepared {
                record: ModuleSource {
                    fullname: fullname.to_string(),
                    filename: file.to_string_lossy().into_owned(),
                    is_package,
                    source: compress(minimize_source(&source).as_bytes()),
                    children,
                },
                imports,
            }))
        });
        self.cache.insert(fullname.to_string(), found.clone());
        found
    }
}

impl ModuleResolver for ModuleFinder {
    fn resolve(
        &mut self,
        fullname: &str,
        already_sent: &HashSet<String>,
    ) -> Option<Vec<ModuleSource>> {
        let first = self.prepare(fullname)?;
        let mut out = vec![first.record.clone()];
        let mut budget = RELATED_BUDGET;
        let mut seen: HashSet<String> = HashSet::from([fullname.to_string()]);
        let mut queue: VecDeque<Arc<Prepared>> = VecDeque::from([first]);
        while let Some(m) = queue.pop_front() {
            // A package is asked for on the way to one of its submodules
            // (Python imports parents first), before the child knows which:
            // its submodules are related too, so one request brings the
            // package. Imports name further modules, each found as a
            // submodule or an attribute of its parent: try every prefix.
            let children = m
                .record
                .children
                .iter()
                .map(|c| format!("{}.{}", m.record.fullname, c));
            let candidates: Vec<String> = m
                .imports
                .iter()
                .flat_map(|name| {
                    let parts: Vec<&str> = name.split('.').collect();
                    (1..=parts.len()).map(move |i| parts[..i].join("."))
                })
                .chain(children)
                .collect();
            for cand in candidates {
                if seen.contains(&cand) || already_sent.contains(&cand) {
                    continue;
                }
                seen.insert(cand.clone());
                if let Some(p) = self.prepare(&cand) {
                    let size = p.record.source.len();
                    if size > budget {
                        continue;
                    }
                    budget -= size;
                    out.push(p.record.clone());
                    queue.push_back(p);
                }
            }
        }
        Some(out)
    }

    fn describe_path(&self) -> String {
        if self.path.is_empty() {
            "(empty module path)".into()
        } else {
            self.path
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(":")
        }
    }
}

/// The submodules of the package in `dir`: `*.py` files and directories
/// holding an `__init__.py`, sorted.
fn list_children(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            let p = e.path();
            let Some(name) = p.file_name().and_then(|n| n.to_str()) else {
                continue;
            };
            if p.is_dir() && p.join("__init__.py").is_file() {
                out.push(name.to_string());
            } else if let Some(stem) = name.strip_suffix(".py") {
                if stem != "__init__" {
                    out.push(stem.to_string());
                }
            }
        }
    }
    out.sort();
    out
}

/// The absolute dotted names that `source` imports, with relative imports
/// resolved against `package` (the module's package, or itself for a
/// package's `__init__`). For `from X import a, b` it yields `X.a` and
/// `X.b` (which may be submodules or attributes; the resolver tries both).
pub fn scan_imports(source: &str, package: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut lines = source.lines();
    while let Some(line) = lines.next() {
        let t = line.trim_start();
        let mut stmt = t.split('#').next().unwrap_or("").trim_end().to_string();
        if !(stmt.starts_with("import ") || stmt.starts_with("from ")) {
            continue;
        }
        // Parenthesised or backslash-continued import lists.
        while (stmt.contains('(') && !stmt.contains(')')) || stmt.ends_with('\\') {
            let Some(next) = lines.next() else { break };
            stmt = stmt.trim_end_matches('\\').to_string();
            stmt.push(' ');
            stmt.push_str(next.split('#').next().unwrap_or("").trim());
        }
        let stmt = stmt.replace(['(', ')'], " ");
        // One simple statement only: `import a; import b` is split.
        for part in stmt.split(';') {
            let part = part.trim();
            if let Some(rest) = part.strip_prefix("import ") {
                for item in rest.split(',') {
                    if let Some(name) = item.split_whitespace().next() {
                        out.push(name.to_string());
                    }
                }
            } else if let Some(rest) = part.strip_prefix("from ") {
                let Some((module, names)) = rest.split_once(" import ") else {
                    continue;
                };
                let module = module.trim();
                let base = match resolve_relative(module, package) {
                    Some(b) => b,
                    None => continue,
                };
                if !base.is_empty() {
                    out.push(base.clone());
                }
                for item in names.split(',') {
                    if let Some(name) = item.split_whitespace().next() {
                        if name != "*" {
                            out.push(if base.is_empty() {
                                name.to_string()
                            } else {
                                format!("{base}.{name}")
                            });
                        }
                    }
                }
            }
        }
    }
    out
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

    #[test]
    fn imports_are_found_and_resolved() {
        let src = "import os, sys as s\nfrom . import a, b\nfrom .c import (d,\n    e)\nfrom ..x import y\n  import z.w  # c\nfrom q import *\n";
        let got = scan_imports(src, "pkg.sub");
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
    fn package_with_children_and_related_modules_in_one_reply() {
        let dir = std::env::temp_dir().join(format!("econtext-modules-{}", std::process::id()));
        let pkg = dir.join("pkg");
        std::fs::create_dir_all(pkg.join("inner")).unwrap();
        std::fs::write(pkg.join("__init__.py"), "from . import a\n").unwrap();
        std::fs::write(pkg.join("a.py"), "from .inner import deep\nimport os\n").unwrap();
        std::fs::write(pkg.join("inner/__init__.py"), "").unwrap();
        std::fs::write(pkg.join("inner/deep.py"), "X = 1\n").unwrap();
        let mut f = ModuleFinder::new(vec![dir.clone()]);
        let reply = f.resolve("pkg", &HashSet::new()).unwrap();
        let names: Vec<&str> = reply.iter().map(|m| m.fullname.as_str()).collect();
        assert_eq!(names, ["pkg", "pkg.a", "pkg.inner", "pkg.inner.deep"]);
        assert_eq!(reply[0].children, ["a", "inner"]);
        assert!(f.resolve("pkg.nonexistent", &HashSet::new()).is_none());
        assert!(f.resolve("os", &HashSet::new()).is_none());
        let sent: HashSet<String> = names.iter().map(|s| s.to_string()).collect();
        assert_eq!(f.resolve("pkg.a", &sent).unwrap().len(), 1);
        std::fs::remove_dir_all(dir).unwrap();
    }
}
