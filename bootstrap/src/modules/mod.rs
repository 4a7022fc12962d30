//! Finding Python modules on the master's module path, for GET_MODULE.
//!
//! [`ModuleFinder`] resolves a dotted name the way Python's path finder
//! does (regular packages, modules, PEP 420 namespace packages split over
//! several path entries, `pkgutil.extend_path` packages), minimizes and
//! compresses each module once, lists a package's submodules (the seed's
//! "Child Module Enumeration") and plans, from a static scan of what the
//! module imports when it is imported ([`scan`]), which other modules go
//! in the same reply (the seed's "Minimizing Roundtrips").
//!
//! It also answers resource requests (`package/rel/path`) with a file's
//! bytes or a directory's listing, for the child's resource loader, and
//! names compiled-only modules instead of pretending they do not exist.
//! docs/PROTOCOL.md ("Modules") is the wire contract; what a child can
//! fetch at all is the serving policy in docs/ARCHITECTURE.md ("What a
//! child can fetch").

mod master_python;
pub mod names;
pub mod scan;
mod stdlib;

use std::collections::{HashMap, HashSet, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use econtext_actors::importer::ModuleResolver;
use econtext_wire::messages::ModuleSource;

use crate::minimize::{minimize_source, strip_comments};
use crate::payload::compress;
pub use names::{split_resource, valid_module_name};
pub use scan::{scan_imports, ScannedImport};

/// Compressed bytes of related modules one reply may carry besides the
/// requested module. Bigger means fewer round trips and more bytes for
/// modules the call may not use; docs/PERFORMANCE.md has the figures.
pub const RELATED_BUDGET: usize = 768 * 1024;

/// Largest resource file served (its bytes travel in one frame).
pub const MAX_RESOURCE_BYTES: u64 = 32 << 20;

/// Names remembered as not found, at most (oldest forgotten first): a
/// child choosing names must not grow the master's memory.
pub const NEGATIVE_CACHE: usize = 1024;

/// The builtin module that gives served packages their resource loader.
pub const RESOURCES_MODULE: &str = "econtext.resources";

/// Modules every master serves whatever its module path: the parts of
/// the Python core that only some contexts need.
pub const BUILTIN_MODULES: &[(&str, &str)] = &[
    (
        "econtext.parent",
        include_str!("../../python/econtext_parent.py"),
    ),
    (
        RESOURCES_MODULE,
        include_str!("../../python/econtext_resources.py"),
    ),
    // What `econtext run` calls: a command's rc, stdout and stderr.
    (
        "econtext.fleet",
        include_str!("../../python/econtext_fleet.py"),
    ),
    (
        "econtext.files",
        include_str!("../../python/econtext_files.py"),
    ),
    // The core itself, for a context started without its source (a lean
    // start with the core compiled, crate::payload::CoreSource) that is
    // asked to start a child: it has it in sys.modules, never imports it.
    ("econtext.core", crate::payload::CORE_SOURCE),
];

/// The source of the builtin module `name`, if it is one.
pub fn builtin_source(name: &str) -> Option<&'static str> {
    BUILTIN_MODULES
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, src)| *src)
}

/// One module found on disk, prepared for sending.
#[derive(Debug, Clone)]
struct Prepared {
    record: ModuleSource,
    /// What it imports when imported (candidates; only those found on
    /// the path are sent).
    imports: Vec<ScannedImport>,
    /// For packages: the directories searched for its submodules and
    /// resources (its `__path__` on the master).
    dirs: Vec<PathBuf>,
    /// A package whose directory holds files that are not modules.
    has_data: bool,
}

impl Prepared {
    /// A name the child must not import, with the reason it is shown.
    fn refusal(fullname: &str, message: &str) -> Prepared {
        Prepared {
            record: ModuleSource {
                fullname: fullname.to_string(),
                filename: String::new(),
                is_package: false,
                source: if message.is_empty() {
                    Vec::new()
                } else {
                    compress(message.as_bytes())
                },
                children: Vec::new(),
                requires_python: String::new(),
                master_python: String::new(),
            },
            imports: Vec::new(),
            dirs: Vec::new(),
            has_data: false,
        }
    }

    fn is_refusal(&self) -> bool {
        self.record.filename.is_empty()
    }
}

/// Where a name was found.
enum Located {
    Module(PathBuf),
    /// `init` is None for a namespace package.
    Package {
        init: Option<PathBuf>,
        dirs: Vec<PathBuf>,
    },
    Compiled(PathBuf),
}

/// Resolves and prepares modules from a list of directories.
#[derive(Debug, Default)]
pub struct ModuleFinder {
    path: Vec<PathBuf>,
    /// Top-level names that may be served (None: all on the path).
    allow: Option<HashSet<String>>,
    cache: HashMap<String, Arc<Prepared>>,
    misses: HashSet<String>,
    miss_order: VecDeque<String>,
    /// Top-level name -> its distribution's Requires-Python ("" unknown).
    requires: HashMap<String, String>,
    /// The version of the Python the module path is for.
    master_python: master_python::MasterPython,
    /// Cached modules prepared before that version was known.
    awaiting_version: Vec<String>,
}

impl ModuleFinder {
    pub fn new(path: Vec<PathBuf>) -> Self {
        ModuleFinder {
            master_python: master_python::MasterPython::for_path(&path),
            path,
            ..Default::default()
        }
    }

    /// Serve only packages and modules whose top-level name is listed
    /// (the core's own `econtext.*` modules always).
    pub fn with_allow_list(mut self, allow: Option<Vec<String>>) -> Self {
        self.allow = allow.map(|a| a.into_iter().collect());
        self
    }

    fn builtin(fullname: &str) -> Option<Arc<Prepared>> {
        let source = builtin_source(fullname)?;
        let package = fullname.rsplit_once('.').map(|(p, _)| p).unwrap_or("");
        Some(Arc::new(Prepared {
            record: ModuleSource {
                fullname: fullname.to_string(),
                filename: format!("<econtext builtin {fullname}>"),
                is_package: false,
                source: compress(minimize_source(source).as_bytes()),
                children: Vec::new(),
                requires_python: String::new(),
                master_python: String::new(),
            },
            imports: scan_imports(source, package),
            dirs: Vec::new(),
            has_data: false,
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

    /// The allow list's verdict (built-ins are always served).
    fn allowed(&self, fullname: &str) -> bool {
        let top = fullname.split('.').next().unwrap_or("");
        self.allow.as_ref().map_or(true, |a| a.contains(top)) || builtin_source(fullname).is_some()
    }

    /// Python's search for `short` in `dirs`, entry by entry: a regular
    /// package or a module (or an extension module, which wins over a
    /// `.py` only in another entry) ends it; directories without
    /// `__init__.py` are namespace portions, used when nothing else is.
    fn find_in(dirs: &[PathBuf], short: &str) -> Option<Located> {
        let mut portions = Vec::new();
        for d in dirs {
            let base = d.join(short);
            let init = base.join("__init__.py");
            if init.is_file() {
                return Some(Located::Package {
                    init: Some(init),
                    dirs: vec![base],
                });
            }
            let file = d.join(format!("{short}.py"));
            if file.is_file() {
                return Some(Located::Module(file));
            }
            if let Some(ext) = extension_module(d, short) {
                return Some(Located::Compiled(ext));
            }
            if base.is_dir() {
                portions.push(base);
            }
        }
        (!portions.is_empty()).then_some(Located::Package {
            init: None,
            dirs: portions,
        })
    }

    fn locate(&mut self, fullname: &str) -> Option<Located> {
        let (parent, short) = match fullname.rsplit_once('.') {
            Some((p, s)) => (Some(p), s),
            None => (None, fullname),
        };
        let search = match parent {
            None => self.path.clone(),
            Some(p) => {
                let pkg = self.prepare(p)?;
                if pkg.is_refusal() || !pkg.record.is_package {
                    return None;
                }
                pkg.dirs.clone()
            }
        };
        match Self::find_in(&search, short)? {
            // `__path__ = pkgutil.extend_path(__path__, __name__)` (or
            // pkg_resources' declare_namespace): every entry's directory
            // of that name is part of the package.
            Located::Package {
                init: Some(init),
                dirs,
            } if std::fs::read_to_string(&init)
                .is_ok_and(|s| s.contains("extend_path(") || s.contains("declare_namespace(")) =>
            {
                let mut all = dirs;
                for d in &search {
                    let b = d.join(short);
                    if b.is_dir() && !all.contains(&b) {
                        all.push(b);
                    }
                }
                Some(Located::Package {
                    init: Some(init),
                    dirs: all,
                })
            }
            // `__path__.append(os.path.join(os.path.dirname(__file__),
            // 'extra'))`: a directory of the package's own joins it.
            Located::Package {
                init: Some(init),
                mut dirs,
            } => {
                let source = std::fs::read_to_string(&init).unwrap_or_default();
                for extra in appended_dirs(&source, &dirs[0]) {
                    if !dirs.contains(&extra) {
                        dirs.push(extra);
                    }
                }
                Some(Located::Package {
                    init: Some(init),
                    dirs,
                })
            }
            other => Some(other),
        }
    }

    fn remember_miss(&mut self, fullname: &str) {
        if self.misses.insert(fullname.to_string()) {
            self.miss_order.push_back(fullname.to_string());
            while self.miss_order.len() > NEGATIVE_CACHE {
                if let Some(old) = self.miss_order.pop_front() {
                    self.misses.remove(&old);
                }
            }
        }
    }

    /// Writes the master's Python version into the cached modules that
    /// were prepared before the probe answered, once it has.
    fn fill_in_version(&mut self) {
        let Some(v) = self.master_python.get() else {
            return;
        };
        for name in std::mem::take(&mut self.awaiting_version) {
            if v.is_empty() {
                break;
            }
            if let Some(p) = self.cache.get_mut(&name) {
                Arc::make_mut(p).record.master_python = v.to_string();
            }
        }
    }

    fn prepare(&mut self, fullname: &str) -> Option<Arc<Prepared>> {
        if !self.awaiting_version.is_empty() {
            self.fill_in_version();
        }
        if let Some(hit) = self.cache.get(fullname) {
            return Some(hit.clone());
        }
        if self.misses.contains(fullname) || !valid_module_name(fullname) {
            return None;
        }
        let found = match Self::builtin(fullname) {
            Some(b) => Some(b),
            // Not cached: the child chooses the names.
            None if !self.allowed(fullname) => return Some(Arc::new(not_allowed(fullname))),
            None => match self
                .locate(fullname)
                .and_then(|l| prepare_located(fullname, l))
            {
                Some(mut p) => {
                    if !p.is_refusal() {
                        p.record.requires_python =
                            self.requires_python(fullname, &p.record.filename);
                        match self.master_python.get() {
                            Some(v) => p.record.master_python = v.to_string(),
                            None => self.awaiting_version.push(fullname.to_string()),
                        }
                    }
                    Some(Arc::new(p))
                }
                None => None,
            },
        };
        match &found {
            Some(p) => {
                self.cache.insert(fullname.to_string(), p.clone());
            }
            None => self.remember_miss(fullname),
        }
        found
    }

    /// The distribution's `Requires-Python` for module `fullname` found
    /// at `filename`, looked up once per top-level name.
    fn requires_python(&mut self, fullname: &str, filename: &str) -> String {
        let top = fullname.split('.').next().unwrap_or(fullname).to_string();
        if let Some(r) = self.requires.get(&top) {
            return r.clone();
        }
        let depth = fullname.split('.').count() + usize::from(filename.ends_with("__init__.py"));
        let r = Path::new(filename)
            .ancestors()
            .nth(depth)
            .map(|entry| requires_python(entry, &top))
            .unwrap_or_default();
        self.requires.insert(top, r.clone());
        r
    }

    /// `package/rel/path`: a file's bytes or a directory's listing, from
    /// the first of the package's directories that has it.
    fn resource(&mut self, request: &str) -> Option<ModuleSource> {
        let (package, parts) = split_resource(request)?;
        let pkg = self.prepare(package)?;
        if pkg.is_refusal() || !pkg.record.is_package {
            return None;
        }
        for dir in &pkg.dirs {
            let (Ok(root), Ok(path)) = (
                dir.canonicalize(),
                parts
                    .iter()
                    .collect::<PathBuf>()
                    .as_path()
                    .pipe(|r| dir.join(r))
                    .canonicalize(),
            ) else {
                continue;
            };
            // A symlink out of the package is not part of it.
            if !path.starts_with(&root) {
                continue;
            }
            let meta = std::fs::metadata(&path).ok()?;
            let filename = path.to_string_lossy().into_owned();
            if meta.is_dir() {
                return Some(ModuleSource {
                    fullname: request.to_string(),
                    filename,
                    is_package: true,
                    source: Vec::new(),
                    children: list_entries(&path),
                    requires_python: String::new(),
                    master_python: String::new(),
                });
            }
            if meta.len() > MAX_RESOURCE_BYTES {
                return None;
            }
            let data = std::fs::read(&path).ok()?;
            return Some(ModuleSource {
                fullname: request.to_string(),
                filename,
                is_package: false,
                source: compress(&data),
                children: Vec::new(),
                requires_python: String::new(),
                master_python: String::new(),
            });
        }
        None
    }
}

/// Directories a package's `__init__.py` adds to its own `__path__` by
/// literal names under its directory (`__path__.append(os.path.join(
/// os.path.dirname(__file__), 'a', 'b'))`, `insert`, `extend`, `+=`): the
/// lines that mention both `__path__` and `dirname(__file__)`. Anything
/// computed at run time, or outside the package, is not followed.
fn appended_dirs(source: &str, base: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for line in source.lines() {
        let code = line.split('#').next().unwrap_or("");
        if !code.contains("__path__") || !code.contains("dirname(__file__)") {
            continue;
        }
        let parts: Vec<&str> = code
            .split(['\'', '"'])
            .skip(1)
            .step_by(2)
            .filter(|p| !p.is_empty())
            .collect();
        let safe = !parts.is_empty()
            && parts
                .iter()
                .all(|p| valid_module_name(p) || p.split('/').all(valid_module_name));
        let dir = parts.iter().fold(base.to_path_buf(), |d, p| d.join(p));
        if safe && dir.is_dir() {
            out.push(dir);
        }
    }
    out
}

/// The refusal of a name outside `--module-allow`: an ImportError that
/// says why, whether or not the master has it.
fn not_allowed(fullname: &str) -> Prepared {
    let top = fullname.split('.').next().unwrap_or(fullname);
    Prepared::refusal(
        fullname,
        &format!(
            "module '{fullname}' is not served: the master serves only the top-level \
             names in its allow list (--module-allow), and '{top}' is not one of them"
        ),
    )
}

/// `x.pipe(f)` is `f(x)`: keeps the path-building chain readable.
trait Pipe: Sized {
    fn pipe<R>(self, f: impl FnOnce(Self) -> R) -> R {
        f(self)
    }
}
impl<T> Pipe for T {}

fn prepare_located(fullname: &str, located: Located) -> Option<Prepared> {
    let package_of_module = fullname
        .rsplit_once('.')
        .map(|(p, _)| p.to_string())
        .unwrap_or_default();
    let prepared = match located {
        Located::Compiled(path) => Prepared::refusal(
            fullname,
            &format!(
                "module '{fullname}' is a compiled extension module on the master ({}): \
                 machine code cannot be served to another interpreter; install it on the target",
                path.display()
            ),
        ),
        Located::Module(file) => {
            let (source, text) = read_source(&file)?;
            Prepared {
                record: ModuleSource {
                    fullname: fullname.to_string(),
                    filename: file.to_string_lossy().into_owned(),
                    is_package: false,
                    source,
                    children: Vec::new(),
                    requires_python: String::new(),
                    master_python: String::new(),
                },
                imports: scan_imports(&text, &package_of_module),
                dirs: Vec::new(),
                has_data: false,
            }
        }
        Located::Package { init, dirs } => {
            let (source, text, filename) = match &init {
                Some(f) => {
                    let (z, t) = read_source(f)?;
                    (z, t, f.to_string_lossy().into_owned())
                }
                // A namespace package: no code (empty, not even zlib's
                // header), named by its first directory with a slash.
                None => (
                    Vec::new(),
                    String::new(),
                    format!("{}/", dirs[0].to_string_lossy()),
                ),
            };
            let mut children = Vec::new();
            let mut has_data = false;
            for d in &dirs {
                let (c, data) = list_children(d);
                has_data |= data;
                for name in c {
                    if !children.contains(&name) {
                        children.push(name);
                    }
                }
            }
            children.sort();
            Prepared {
                record: ModuleSource {
                    fullname: fullname.to_string(),
                    filename,
                    is_package: true,
                    source,
                    children,
                    requires_python: String::new(),
                    master_python: String::new(),
                },
                imports: scan_imports(&text, fullname),
                dirs,
                has_data,
            }
        }
    };
    Some(prepared)
}

/// Compressed source without comments (docstrings stay: code may read
/// them), and the text for scanning. A file that is not UTF-8 (a
/// `coding:` line) is sent as it is.
fn read_source(file: &Path) -> Option<(Vec<u8>, String)> {
    let bytes = std::fs::read(file).ok()?;
    Some(match String::from_utf8(bytes) {
        Ok(text) => (compress(strip_comments(&text).as_bytes()), text),
        Err(e) => {
            let text = String::from_utf8_lossy(e.as_bytes()).into_owned();
            (compress(e.as_bytes()), text)
        }
    })
}

/// `Requires-Python` of the installed distribution (a `*.dist-info` in
/// `entry`, the module path entry) whose RECORD lists top-level `top`
/// (`top/...` or `top.py`); empty when unknown.
fn requires_python(entry: &Path, top: &str) -> String {
    let Ok(dir) = std::fs::read_dir(entry) else {
        return String::new();
    };
    let (as_dir, as_file) = (format!("{top}/"), format!("{top}.py,"));
    for e in dir.flatten() {
        let p = e.path();
        if !p.extension().is_some_and(|x| x == "dist-info") {
            continue;
        }
        let listed = std::fs::read_to_string(p.join("RECORD")).is_ok_and(|r| {
            r.lines()
                .any(|l| l.starts_with(&as_dir) || l.starts_with(&as_file))
        });
        if listed {
            let meta = std::fs::read_to_string(p.join("METADATA")).unwrap_or_default();
            return meta
                .lines()
                .take_while(|l| !l.is_empty())
                .find_map(|l| l.strip_prefix("Requires-Python:"))
                .map(|v| {
                    v.trim()
                        .chars()
                        .filter(|c| !c.is_control())
                        .take(64)
                        .collect()
                })
                .unwrap_or_default();
        }
    }
    String::new()
}

/// An extension module `short` in `dir` (`short.so`, `short.pyd`,
/// `short.cpython-311-x86_64-linux-gnu.so`, `short.abi3.so`...).
fn extension_module(dir: &Path, short: &str) -> Option<PathBuf> {
    let prefix = format!("{short}.");
    std::fs::read_dir(dir).ok()?.flatten().find_map(|e| {
        let name = e.file_name();
        let name = name.to_str()?;
        (name.starts_with(&prefix) && (name.ends_with(".so") || name.ends_with(".pyd")))
            .then(|| e.path())
    })
}

fn is_module_file(name: &str) -> bool {
    name.ends_with(".py")
        || name.ends_with(".so")
        || name.ends_with(".pyd")
        || name.ends_with(".pyc")
}

/// The submodules of the package directory `dir` (`*.py`, extension
/// modules, directories holding `__init__.py` or any `.py`), sorted; and
/// whether it holds anything else (data files, data directories).
fn list_children(dir: &Path) -> (Vec<String>, bool) {
    let mut out = Vec::new();
    let mut has_data = false;
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            let p = e.path();
            let Some(name) = p.file_name().and_then(|n| n.to_str()) else {
                continue;
            };
            if name == "__pycache__" {
                continue;
            }
            if p.is_dir() {
                let has_code = std::fs::read_dir(&p).is_ok_and(|mut it| {
                    it.any(|e| e.is_ok_and(|e| e.file_name().to_str().is_some_and(is_module_file)))
                });
                if has_code && valid_module_name(name) {
                    out.push(name.to_string());
                } else {
                    has_data = true;
                }
            } else if is_module_file(name) {
                let stem = name.split('.').next().unwrap_or("");
                if stem != "__init__" && valid_module_name(stem) && !out.iter().any(|n| n == stem) {
                    out.push(stem.to_string());
                }
            } else {
                has_data = true;
            }
        }
    }
    out.sort();
    (out, has_data)
}

/// A resource directory's entries, sorted; directories end with `/`.
fn list_entries(dir: &Path) -> Vec<String> {
    let mut out: Vec<String> = std::fs::read_dir(dir)
        .map(|it| {
            it.flatten()
                .filter_map(|e| {
                    let name = e.file_name().to_str()?.to_string();
                    if name == "__pycache__" {
                        return None;
                    }
                    Some(if e.path().is_dir() {
                        format!("{name}/")
                    } else {
                        name
                    })
                })
                .collect()
        })
        .unwrap_or_default();
    out.sort();
    out
}

impl ModuleResolver for ModuleFinder {
    fn resolve(
        &mut self,
        request: &str,
        already_sent: &HashSet<String>,
    ) -> Option<Vec<ModuleSource>> {
        if request.contains('/') {
            return self.resource(request).map(|r| vec![r]);
        }
        let first = self.prepare(request)?;
        let mut out = vec![first.record.clone()];
        if first.is_refusal() {
            return Some(out);
        }
        let mut need_resources = first.has_data;
        let mut budget = RELATED_BUDGET;
        let mut seen: HashSet<String> = HashSet::from([request.to_string()]);
        let mut queue: VecDeque<Arc<Prepared>> = VecDeque::from([first]);
        // A child asks for `a.b.c` before it has `a` when it knows the
        // whole name (Python 3 imports parents first): the parents come
        // too, and what they import.
        let mut parent = request;
        while let Some((p, _)) = parent.rsplit_once('.') {
            parent = p;
            if already_sent.contains(p) || !seen.insert(p.to_string()) {
                continue;
            }
            if let Some(pp) = self.prepare(p) {
                budget = budget.saturating_sub(pp.record.source.len());
                need_resources |= pp.has_data;
                out.push(pp.record.clone());
                queue.push_back(pp);
            }
        }
        while let Some(m) = queue.pop_front() {
            for import in &m.imports {
                // `import a.b.c` needs a, a.b and a.b.c; `from a import x`
                // names a.x, a submodule or an attribute.
                let parts: Vec<&str> = import.name.split('.').collect();
                for i in 1..=parts.len() {
                    let cand = parts[..i].join(".");
                    if seen.contains(&cand) || already_sent.contains(&cand) {
                        continue;
                    }
                    // Every child has the stdlib; a name outside the allow
                    // list the child asks for itself (and hears why not).
                    if i == 1 && (stdlib::everywhere(&cand) || !self.allowed(&cand)) {
                        break;
                    }
                    seen.insert(cand.clone());
                    let Some(p) = self.prepare(&cand) else {
                        // A top-level optional import the master does not
                        // have either: say so, or the child would ask.
                        if i == 1 && import.optional && valid_module_name(&cand) {
                            out.push(Prepared::refusal(&cand, "").record);
                        }
                        break;
                    };
                    let size = p.record.source.len();
                    if size > budget {
                        break;
                    }
                    budget -= size;
                    out.push(p.record.clone());
                    if p.is_refusal() {
                        break;
                    }
                    need_resources |= p.has_data;
                    queue.push_back(p);
                }
            }
        }
        if need_resources
            && !seen.contains(RESOURCES_MODULE)
            && !already_sent.contains(RESOURCES_MODULE)
        {
            if let Some(r) = self.prepare(RESOURCES_MODULE) {
                out.push(r.record.clone());
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

#[cfg(test)]
mod tests;
