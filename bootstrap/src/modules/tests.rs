use super::*;

fn tree(tag: &str, files: &[(&str, &str)]) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("econtext-modules-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    for (path, text) in files {
        let p = dir.join(path);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    }
    dir
}

fn names(reply: &[ModuleSource]) -> Vec<&str> {
    reply.iter().map(|m| m.fullname.as_str()).collect()
}

#[test]
fn package_and_what_it_imports_in_one_reply_but_not_unimported_submodules() {
    let dir = tree(
        "pkg",
        &[
            ("pkg/__init__.py", "from . import a\n"),
            (
                "pkg/a.py",
                "from .inner import deep\nimport os\ndef f():\n    from . import heavy\n",
            ),
            ("pkg/inner/__init__.py", ""),
            ("pkg/inner/deep.py", "X = 1\n"),
            ("pkg/heavy.py", "X = 2\n"),
            ("pkg/aws_keys.py", "SECRET = 1\n"),
        ],
    );
    let mut f = ModuleFinder::new(vec![dir.clone()]);
    let reply = f.resolve("pkg", &HashSet::new()).unwrap();
    assert_eq!(
        names(&reply),
        ["pkg", "pkg.a", "pkg.inner", "pkg.inner.deep"]
    );
    assert_eq!(reply[0].children, ["a", "aws_keys", "heavy", "inner"]);
    assert!(f.resolve("pkg.nonexistent", &HashSet::new()).is_none());
    assert!(f.resolve("os", &HashSet::new()).is_none());
    let sent: HashSet<String> = names(&reply).iter().map(|s| s.to_string()).collect();
    assert_eq!(f.resolve("pkg.a", &sent).unwrap().len(), 1);
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn namespace_package_split_over_two_entries() {
    let a = tree("ns-a", &[("ns/one.py", "from . import two\nV = 1\n")]);
    let b = tree("ns-b", &[("ns/two.py", "V = 2\n")]);
    let mut f = ModuleFinder::new(vec![a.clone(), b.clone()]);
    let reply = f.resolve("ns", &HashSet::new()).unwrap();
    assert!(reply[0].is_package && reply[0].source.is_empty());
    assert_eq!(reply[0].children, ["one", "two"]);
    let one = f
        .resolve("ns.one", &HashSet::from(["ns".to_string()]))
        .unwrap();
    assert_eq!(names(&one), ["ns.one", "ns.two"]);
    assert!(one[1].filename.starts_with(b.to_str().unwrap()));
    std::fs::remove_dir_all(a).unwrap();
    std::fs::remove_dir_all(b).unwrap();
}

#[test]
fn extend_path_package_spans_entries() {
    let init = "from pkgutil import extend_path\n__path__ = extend_path(__path__, __name__)\n";
    let a = tree("ext-a", &[("ep/__init__.py", init), ("ep/x.py", "")]);
    let b = tree("ext-b", &[("ep/__init__.py", init), ("ep/y.py", "")]);
    let mut f = ModuleFinder::new(vec![a.clone(), b.clone()]);
    let reply = f.resolve("ep", &HashSet::new()).unwrap();
    assert_eq!(reply[0].children, ["x", "y"]);
    assert!(f.resolve("ep.y", &HashSet::new()).is_some());
    std::fs::remove_dir_all(a).unwrap();
    std::fs::remove_dir_all(b).unwrap();
}

#[test]
fn resources_files_and_listings_never_outside_the_package() {
    let dir = tree(
        "res",
        &[
            ("rp/__init__.py", ""),
            ("rp/data.txt", "hello"),
            ("rp/zone/Asia/Tokyo", "TZif"),
            ("secret.txt", "no"),
        ],
    );
    let mut f = ModuleFinder::new(vec![dir.clone()]);
    let r = f.resolve("rp", &HashSet::new()).unwrap();
    assert_eq!(
        names(&r),
        ["rp", RESOURCES_MODULE],
        "resource loader travels with data"
    );
    let data = f.resolve("rp/data.txt", &HashSet::new()).unwrap();
    assert!(!data[0].is_package);
    let listing = f.resolve("rp/zone", &HashSet::new()).unwrap();
    assert_eq!(listing[0].children, ["Asia/"]);
    let root = f.resolve("rp/", &HashSet::new()).unwrap();
    assert_eq!(root[0].children, ["__init__.py", "data.txt", "zone/"]);
    assert!(f.resolve("rp/zone/Asia/Tokyo", &HashSet::new()).is_some());
    std::os::unix::fs::symlink(dir.join("secret.txt"), dir.join("rp/link")).unwrap();
    for bad in [
        "rp/../secret.txt",
        "rp/link",
        "rp/missing",
        "nopkg/x",
        "rp/data.txt/x",
    ] {
        assert!(f.resolve(bad, &HashSet::new()).is_none(), "{bad}");
    }
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn compiled_only_module_is_a_refusal_with_its_reason() {
    let dir = tree(
        "so",
        &[
            (
                "cp/__init__.py",
                "try:\n    from . import _speed\nexcept ImportError:\n    pass\nimport cp._both\n",
            ),
            ("cp/_speed.cpython-311-x86_64-linux-gnu.so", "\x7fELF"),
            ("cp/_both.py", ""),
            ("cp/_both.cpython-311-x86_64-linux-gnu.so", "\x7fELF"),
        ],
    );
    let mut f = ModuleFinder::new(vec![dir.clone()]);
    let reply = f.resolve("cp", &HashSet::new()).unwrap();
    assert_eq!(names(&reply), ["cp", "cp._speed", "cp._both"]);
    assert!(reply[1].filename.is_empty(), "a refusal has no file name");
    assert!(
        !reply[2].filename.is_empty(),
        "a .py beside the .so is served"
    );
    assert_eq!(reply[0].children, ["_both", "_speed"]);
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn optional_imports_missing_on_the_master_are_announced_missing() {
    let dir = tree(
        "opt",
        &[(
            "om.py",
            "try:\n    import simplejson\nexcept ImportError:\n    import json\nimport os\n",
        )],
    );
    let mut f = ModuleFinder::new(vec![dir.clone()]);
    let reply = f.resolve("om", &HashSet::new()).unwrap();
    // json is everybody's stdlib: not even announced.
    assert_eq!(names(&reply), ["om", "simplejson"]);
    assert!(reply[1..]
        .iter()
        .all(|r| r.filename.is_empty() && r.source.is_empty()));
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn allow_list_and_bounded_negative_cache() {
    let dir = tree("allow", &[("ok.py", "import nope\n"), ("nope.py", "")]);
    let mut f = ModuleFinder::new(vec![dir.clone()]).with_allow_list(Some(vec!["ok".into()]));
    assert_eq!(names(&f.resolve("ok", &HashSet::new()).unwrap()), ["ok"]);
    // A name outside the list is refused with the reason, whether or not
    // the master has it, and nothing of it is remembered.
    for name in ["nope", "nope.sub", "absent"] {
        let r = f.resolve(name, &HashSet::new()).unwrap();
        assert_eq!(names(&r), [name]);
        assert!(r[0].filename.is_empty());
        let mut why = String::new();
        std::io::Read::read_to_string(
            &mut flate2::read::ZlibDecoder::new(&r[0].source[..]),
            &mut why,
        )
        .unwrap();
        assert!(
            why.contains("--module-allow") && why.contains("'nope'") | why.contains("'absent'"),
            "{why}"
        );
    }
    assert!(f.cache.len() <= 1 && f.misses.is_empty());
    assert!(f.resolve("econtext.parent", &HashSet::new()).is_some());
    let mut f = ModuleFinder::new(vec![dir.clone()]);
    for i in 0..(NEGATIVE_CACHE * 3) {
        assert!(f.resolve(&format!("missing{i}"), &HashSet::new()).is_none());
    }
    assert!(f.misses.len() <= NEGATIVE_CACHE);
    let long = "a".repeat(10_000);
    assert!(f.resolve(&long, &HashSet::new()).is_none());
    assert!(f.misses.len() <= NEGATIVE_CACHE);
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn stdlib_names_on_the_module_path_are_never_pushed_but_served_when_asked() {
    let dir = tree(
        "stdlib",
        &[
            (
                "app.py",
                "import json\nimport os.path\nimport typing\nimport helper\n",
            ),
            ("json.py", "SHADOW = 1\n"),
            ("os.py", ""),
            ("typing.py", "# a backport: 2.7 needs it\n"),
            ("helper.py", ""),
        ],
    );
    let mut f = ModuleFinder::new(vec![dir.clone()]);
    let reply = f.resolve("app", &HashSet::new()).unwrap();
    assert_eq!(names(&reply), ["app", "typing", "helper"]);
    // A child that asks has no json of its own.
    assert_eq!(
        names(&f.resolve("json", &HashSet::new()).unwrap()),
        ["json"]
    );
    std::fs::remove_dir_all(dir).unwrap();
}
