//! The module importer: children import what only the master has, with
//! one GET_MODULE request per package, and never ask for what cannot exist.

mod common;

use std::path::{Path, PathBuf};

use common::*;
use econtext::{ConnectOptions, Error, LocalOptions, Master, MasterOptions, Method};

fn module_root(tag: &str) -> PathBuf {
    let root = package_root(&format!("importer-{tag}"));
    std::fs::write(root.join("badmod.py"), "x = 1\n\ndef f(:\n    pass\n").unwrap();
    root
}

fn requests(master: &Master) -> u64 {
    master.importer_stats().snapshot()[0].1
}

fn master_with_path(root: &Path) -> Master {
    Master::new(
        MasterOptions::default()
            .module_path(vec![root.to_path_buf()])
            .log(Capture::default().logger()),
    )
}

#[test]
fn package_of_20_modules_costs_one_request_under_every_interpreter() {
    let root = module_root("pkg");
    let pythons = interpreters();
    run(async move {
        let master = master_with_path(&root);
        for (python, version) in &pythons {
            let ctx = master.local(local(python.to_str().unwrap())).await.unwrap();
            let _: i64 = ctx.call("os", "getpid", ()).await.unwrap();
            let before = requests(&master);
            let total: i64 = ctx
                .call("ecpkg.entry", "run", ())
                .await
                .unwrap_or_else(|e| panic!("{version}: {e}"));
            assert_eq!(total, 18, "{version}");
            assert_eq!(
                requests(&master) - before,
                1,
                "{version}: one GET_MODULE for 20 modules"
            );
            let sent_before = master.importer_stats().snapshot()[1].1;
            let _: i64 = ctx.call("ecpkg.entry", "run", ()).await.unwrap();
            assert_eq!(
                requests(&master) - before,
                1,
                "{version}: a second call asks nothing"
            );
            assert_eq!(
                master.importer_stats().snapshot()[1].1,
                sent_before,
                "{version}: sends nothing"
            );
            // A name that the package listing says does not exist, and a
            // stdlib module: neither goes on the wire.
            let r = ctx
                .call::<()>("importlib", "import_module", ("ecpkg.nonexistent",))
                .await;
            assert!(
                matches!(r, Err(Error::Remote(ref e))
                    if e.type_name.contains("ImportError") || e.type_name.contains("ModuleNotFoundError")),
                "{version}: {r:?}"
            );
            let _: () = ctx
                .call::<serde_json::Value>("importlib", "import_module", ("json",))
                .await
                .map(|_| ())
                .unwrap_or(());
            assert_eq!(
                requests(&master) - before,
                1,
                "{version}: no request for pkg.nonexistent or json"
            );
            ctx.shutdown().await.unwrap();
        }
        let _ = std::fs::remove_dir_all(&root);
    });
}

#[test]
fn unknown_module_raises_import_error_naming_it() {
    let root = module_root("unknown");
    run(async move {
        let master = master_with_path(&root);
        let ctx = master.local(local(&python3())).await.unwrap();
        let r = ctx.call::<i64>("nosuchmodule_xyz", "f", ()).await;
        match r {
            Err(Error::Remote(e)) => {
                assert!(
                    e.type_name.contains("ImportError")
                        || e.type_name.contains("ModuleNotFoundError"),
                    "{e:?}"
                );
                assert!(e.message.contains("nosuchmodule_xyz"), "{e:?}");
            }
            other => panic!("expected ImportError, got {other:?}"),
        }
        let _ = std::fs::remove_dir_all(&root);
    });
}

#[test]
fn syntax_error_in_served_source_names_file_and_line() {
    let root = module_root("syntax");
    run(async move {
        let master = master_with_path(&root);
        let ctx = master.local(local(&python3())).await.unwrap();
        let r = ctx.call::<i64>("badmod", "f", ()).await;
        match r {
            Err(Error::Remote(e)) => {
                // An ImportError naming the file, the line and this
                // child's Python version (it may be a newer Python's syntax).
                assert!(e.type_name.contains("ImportError"), "{e:?}");
                assert!(
                    e.message.contains("master:") && e.message.contains("badmod.py"),
                    "{e:?}"
                );
                assert!(e.message.contains("line 3"), "{e:?}");
                assert!(e.message.contains("under Python 3."), "{e:?}");
                // A plain directory: the master's Python is the python3
                // on its PATH.
                let on_path = std::process::Command::new("python3")
                    .args(["-c", "import platform; print(platform.python_version())"])
                    .output()
                    .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
                    .unwrap_or_default();
                if !on_path.is_empty() {
                    let want = format!("the master's Python is {on_path}");
                    assert!(e.message.contains(&want), "{want}: {e:?}");
                }
            }
            other => panic!("expected ImportError, got {other:?}"),
        }
        let _ = std::fs::remove_dir_all(&root);
    });
}

/// A module with a `match` statement (Python 3.10+) in a 3.13
/// site-packages on the master: every older child names the file, the
/// line and both versions; every newer one imports it.
#[test]
fn newer_syntax_names_file_line_and_both_versions_under_every_older_interpreter() {
    let root = std::env::temp_dir().join(format!("econtext-newer-{}", std::process::id()));
    let site = root.join("lib/python3.13/site-packages");
    std::fs::create_dir_all(&site).unwrap();
    std::fs::write(
        site.join("ecnewer.py"),
        "def kind(x):\n    match x:\n        case 0:\n            return 'zero'\n        case _:\n            return 'other'\n",
    )
    .unwrap();
    let pythons = interpreters();
    run(async move {
        let master = master_with_path(&site);
        let mut older = 0;
        for (python, version) in &pythons {
            let ctx = master.local(local(python.to_str().unwrap())).await.unwrap();
            let r = ctx.call::<String>("ecnewer", "kind", (0,)).await;
            let v: Vec<u32> = version.split('.').map(|x| x.parse().unwrap_or(0)).collect();
            if v[..2] >= [3, 10][..] {
                assert_eq!(r.unwrap(), "zero", "{version}");
                continue;
            }
            older += 1;
            match r {
                Err(Error::Remote(e)) => {
                    assert!(e.type_name.contains("ImportError"), "{version}: {e:?}");
                    for want in [
                        "ecnewer.py".to_string(),
                        "line 2".to_string(),
                        format!("under Python {version}"),
                        "the master's Python is 3.13".to_string(),
                    ] {
                        assert!(e.message.contains(&want), "{version}: {want}: {e:?}");
                    }
                }
                other => panic!("{version}: expected ImportError, got {other:?}"),
            }
            ctx.shutdown().await.unwrap();
        }
        if older == 0 {
            skip("no interpreter older than 3.10: the too-new-syntax error is not exercised");
        }
        let _ = std::fs::remove_dir_all(&root);
    });
}

fn poison_root(tag: &str) -> PathBuf {
    let root = module_root(tag);
    std::fs::write(root.join("ecpoison.py"), include_str!("common/ecpoison.py")).unwrap();
    for v in ["victim", "victim2"] {
        std::fs::write(
            root.join(format!("{v}.py")),
            "def who():\n    return 'real'\n",
        )
        .unwrap();
    }
    root
}

#[test]
fn a_leaf_cannot_poison_its_intermediates_module_cache() {
    let root = poison_root("poison-mid");
    run(async move {
        let master = master_with_path(&root);
        let py = python3();
        let mid = master.local(local(&py)).await.unwrap();
        let via = |o: LocalOptions| ConnectOptions::new(Method::Local(o)).via(&mid);
        let attacker = master.connect(via(local(&py))).await.unwrap();
        let victim = master.connect(via(local(&py))).await.unwrap();
        let _: u64 = attacker.call("ecpoison", "refused", ()).await.unwrap();
        let _: bool = mid
            .call("ecpoison", "hold_next_module_request", ("victim",))
            .await
            .unwrap();
        let pending = victim
            .call_with("victim", "who")
            .start::<String>()
            .await
            .unwrap();
        let h: u32 = mid
            .call("ecpoison", "held_handle", ("victim",))
            .await
            .unwrap();
        let _: bool = attacker
            .call("ecpoison", "forge", (mid.id(), h, "victim"))
            .await
            .unwrap();
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        let refused: u64 = mid.call("ecpoison", "refused", ()).await.unwrap();
        assert!(refused >= 1, "the forged reply is refused");
        let _: bool = mid.call("ecpoison", "release", ("victim",)).await.unwrap();
        assert_eq!(pending.result().await.unwrap(), "real");
        // The cache holds the master's module only: another leaf gets it.
        let third = master.connect(via(local(&py))).await.unwrap();
        let who: String = third.call("victim", "who", ()).await.unwrap();
        assert_eq!(who, "real");
        let _ = std::fs::remove_dir_all(&root);
    });
}

#[test]
fn a_sibling_cannot_poison_a_leafs_import_through_the_master() {
    let root = poison_root("poison-sib");
    run(async move {
        let master = master_with_path(&root);
        let py = python3();
        let attacker = master.local(local(&py)).await.unwrap();
        let victim = master.local(local(&py)).await.unwrap();
        let _: u64 = attacker.call("ecpoison", "refused", ()).await.unwrap();
        let _: bool = victim
            .call("ecpoison", "hold_next_module_request", ("victim2",))
            .await
            .unwrap();
        let _: bool = victim
            .call("ecpoison", "import_in_background", ("victim2",))
            .await
            .unwrap();
        let h: u32 = victim
            .call("ecpoison", "held_handle", ("victim2",))
            .await
            .unwrap();
        // Refused at the master (siblings may not talk) or at the victim.
        let _ = attacker
            .call::<bool>("ecpoison", "forge", (victim.id(), h, "victim2"))
            .await;
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        let _: bool = victim
            .call("ecpoison", "release", ("victim2",))
            .await
            .unwrap();
        let who: String = victim.call("ecpoison", "who", ("victim2",)).await.unwrap();
        assert_eq!(who, "real");
        let _ = std::fs::remove_dir_all(&root);
    });
}

#[test]
fn python_leaves_under_a_rust_context_import_once_per_intermediate() {
    let root = module_root("rust-mid");
    run(async move {
        let master = master_with_path(&root);
        let mid = master
            .rust_context("rmid", None, econtext::Functions::default())
            .await
            .unwrap();
        let via = |o: LocalOptions| ConnectOptions::new(Method::Local(o)).via(&mid);
        let first = master.connect(via(local(&python3()))).await.unwrap();
        let before = requests(&master);
        let total: i64 = first.call("ecpkg.entry", "run", ()).await.unwrap();
        assert_eq!(total, 18);
        let asked = requests(&master) - before;
        assert!(asked >= 1, "the intermediate asked the master");
        let second = master.connect(via(local(&python3()))).await.unwrap();
        let total: i64 = second.call("ecpkg.entry", "run", ()).await.unwrap();
        assert_eq!(total, 18);
        assert_eq!(
            requests(&master) - before,
            asked,
            "the second leaf costs the master nothing"
        );
        let _ = std::fs::remove_dir_all(&root);
    });
}

#[test]
fn a_compiled_only_module_is_an_import_error_naming_it() {
    let root = module_root("compiled");
    std::fs::write(
        root.join("fastmod.cpython-311-x86_64-linux-gnu.so"),
        b"\x7fELF not really",
    )
    .unwrap();
    run(async move {
        let master = master_with_path(&root);
        let ctx = master.local(local(&python3())).await.unwrap();
        let t0 = std::time::Instant::now();
        let r = ctx.call::<()>("fastmod", "f", ()).await;
        match r {
            Err(Error::Remote(e)) => {
                assert!(e.type_name.contains("ImportError"), "{e:?}");
                assert!(e.message.contains("fastmod"), "{e:?}");
                assert!(e.message.contains("compiled extension module"), "{e:?}");
                assert!(e.message.contains("cannot be served"), "{e:?}");
            }
            other => panic!("expected ImportError, got {other:?}"),
        }
        assert!(t0.elapsed() < std::time::Duration::from_secs(30));
        let _ = std::fs::remove_dir_all(&root);
    });
}

#[test]
fn a_silent_parent_is_an_import_error_within_the_connect_timeout() {
    let root = module_root("silent");
    std::fs::write(root.join("ecpoison.py"), include_str!("common/ecpoison.py")).unwrap();
    run(async move {
        let master = master_with_path(&root);
        let ctx = master
            .connect(
                ConnectOptions::new(Method::Local(local(&python3())))
                    .connect_timeout(std::time::Duration::from_secs(3)),
            )
            .await
            .unwrap();
        // The parent never hears of the request (held, never released).
        let _: bool = ctx
            .call("ecpoison", "hold_next_module_request", ("silentmod",))
            .await
            .unwrap();
        let t0 = std::time::Instant::now();
        let r = ctx.call::<()>("silentmod", "f", ()).await;
        let took = t0.elapsed();
        match r {
            Err(Error::Remote(e)) => {
                assert!(e.type_name.contains("ImportError"), "{e:?}");
                assert!(e.message.contains("no answer from the parent"), "{e:?}");
            }
            other => panic!("expected ImportError, got {other:?}"),
        }
        assert!(
            took >= std::time::Duration::from_secs(2) && took < std::time::Duration::from_secs(20),
            "{took:?}"
        );
        let _ = std::fs::remove_dir_all(&root);
    });
}

/// Two module-path entries holding every import form of issue 13:
/// a PEP 420 namespace split across both, `pkgutil.extend_path` in both,
/// a package that appends its own directory to `__path__`, relative
/// imports three levels deep, a module importing inside a function, and
/// a package with data files. Returns (root, [entry a, entry b]).
fn forms_root(tag: &str) -> (PathBuf, Vec<PathBuf>) {
    let root = std::env::temp_dir().join(format!("econtext-forms-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    let (a, b) = (root.join("a"), root.join("b"));
    let ext_init = |who: &str| {
        format!("from pkgutil import extend_path\n__path__ = extend_path(__path__, __name__)\nINIT = '{who}'\n")
    };
    let files: &[(&Path, &str, String)] = &[
        (&a, "ecforms.py", include_str!("common/forms/ecforms.py").into()),
        (&a, "ecns/one.py", "WHO = 'one'\n".into()),
        (&a, "ecns/deep/three.py", "WHO = 'three'\n".into()),
        (&b, "ecns/two.py", "WHO = 'two'\n".into()),
        (&a, "ecext/__init__.py", ext_init("a")),
        (&a, "ecext/first.py", "WHO = 'first'\n".into()),
        (&b, "ecext/__init__.py", ext_init("b")),
        (&b, "ecext/second.py", "WHO = 'second'\n".into()),
        (
            &a,
            "ecpathx/__init__.py",
            "import os\n__path__.append(os.path.join(os.path.dirname(__file__), 'extra'))\n".into(),
        ),
        (&a, "ecpathx/extra/extra_mod.py", "WHO = 'extra'\n".into()),
        (&a, "ecrel/__init__.py", "from . import a\nWHO = 'ecrel'\n".into()),
        (&a, "ecrel/a.py", "WHO = 'a'\n".into()),
        (&a, "ecrel/b.py", "WHO = 'b'\n".into()),
        (&a, "ecrel/sub/__init__.py", "from .. import a as _a\n".into()),
        (&a, "ecrel/sub/b.py", "WHO = 'sub.b'\n".into()),
        (&a, "ecrel/sub/sibling.py", "X = 'sibling'\n".into()),
        (&a, "ecrel/sub/deep/__init__.py", "from ..sibling import X as SIB\n".into()),
        (&a, "ecrel/sub/deep/here.py", "H = 'here'\n".into()),
        (
            &a,
            "ecrel/sub/deep/leaf.py",
            "from . import here\nfrom .here import H\nfrom .. import sibling\nfrom ..sibling import X\n\
             from ... import a\nfrom ...a import WHO as A\nfrom ...sub.deep import here as here2\n\
             from . import SIB\n\n\
             def chain():\n    return [H, sibling.X, X, a.WHO, A, here2.H, SIB]\n"
                .into(),
        ),
        (
            &a,
            "ecinside.py",
            "def use():\n    import ecinside_dep\n    return ecinside_dep.WHO\n".into(),
        ),
        (&a, "ecinside_dep.py", "WHO = 'dep'\n".into()),
        (&a, "ecdata/__init__.py", "".into()),
        (&a, "ecdata/top.txt", "top".into()),
        (&a, "ecdata/sub/hello.txt", "hello".into()),
        (&a, "ecdata/sub/more/deeper.txt", "deeper".into()),
    ];
    for (entry, rel, text) in files {
        let p = entry.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    }
    (root, vec![a, b])
}

/// Calls `ecforms.FUNCTION(args)` under every interpreter, one context
/// each, and returns each version's answer and GET_MODULE count.
fn forms_under_every_interpreter(
    tag: &str,
    calls: &'static [(&'static str, &'static [&'static str])],
) -> Vec<(String, Vec<(serde_json::Value, u64)>)> {
    let (root, entries) = forms_root(tag);
    let pythons = interpreters();
    let mut out = Vec::new();
    let sink = &mut out;
    run(async move {
        let master = Master::new(
            MasterOptions::default()
                .module_path(entries)
                .log(Capture::default().logger()),
        );
        for (python, version) in &pythons {
            let ctx = master.local(local(python.to_str().unwrap())).await.unwrap();
            // ecforms itself first, so each count is the call's own.
            let _: Option<()> = ctx
                .call("ecforms", "import_refused", ("os",))
                .await
                .unwrap();
            let mut answers = Vec::new();
            for (function, args) in calls {
                let before = requests(&master);
                let got = ctx
                    .call::<serde_json::Value>("ecforms", function, args.to_vec())
                    .await
                    .unwrap_or_else(|e| panic!("{version}: ecforms.{function}: {e}"));
                answers.push((got, requests(&master) - before));
            }
            ctx.shutdown().await.unwrap();
            sink.push((version.clone(), answers));
        }
    });
    let _ = std::fs::remove_dir_all(&root);
    out
}

#[test]
fn namespace_packages_path_extension_relative_and_runtime_imports_under_every_interpreter() {
    use serde_json::json;
    let calls: &[(&str, &[&str])] = &[
        ("namespace_split", &[]),
        ("extend_path", &[]),
        ("path_append", &[]),
        ("relative_every_depth", &[]),
        ("import_module_runtime", &["b"]),
        ("dynamic_then_inside", &[]),
    ];
    let mut versions = Vec::new();
    for (version, answers) in forms_under_every_interpreter("forms", calls) {
        let want = [
            json!(["one", "two", "three", null]),
            json!(["first", "second", "a"]),
            json!(["extra"]),
            json!([
                "here",
                "sibling",
                "sibling",
                "a",
                "a",
                "here",
                "sibling",
                "ecrel.sub.deep"
            ]),
            json!(["b", "sub.b"]),
            json!([false, "dep"]),
        ];
        for (((function, _), (got, _)), want) in calls.iter().zip(&answers).zip(&want) {
            assert_eq!(got, want, "{version}: ecforms.{function}");
        }
        // The module came alone (its function's import is for later):
        // one request for ecinside, one for ecinside_dep when use() ran.
        assert_eq!(answers[5].1, 2, "{version}: imports inside functions");
        versions.push(version);
    }
    assert!(versions.iter().any(|v| v.starts_with("2.")), "{versions:?}");
    assert!(versions.iter().any(|v| v.starts_with("3.")), "{versions:?}");
}

#[test]
fn resources_as_file_is_a_real_temporary_file_or_directory_removed_afterwards() {
    use serde_json::json;
    let calls: &[(&str, &[&str])] = &[("as_file_on_a_file", &[]), ("as_file_on_a_directory", &[])];
    let mut checked = 0;
    for (version, answers) in forms_under_every_interpreter("asfile", calls) {
        let v: Vec<u32> = version.split('.').map(|x| x.parse().unwrap_or(0)).collect();
        let file = if v[..2] >= [3, 9][..] { "hello" } else { "top" };
        let want_file = if v[..2] >= [3, 7][..] {
            json!([true, file, false])
        } else {
            json!(null)
        };
        assert_eq!(answers[0].0, want_file, "{version}: as_file on a file");
        let want_dir = if v[..2] >= [3, 12][..] {
            checked += 1;
            json!([["hello.txt", "more"], "hello", "deeper", false])
        } else {
            json!(null)
        };
        assert_eq!(answers[1].0, want_dir, "{version}: as_file on a directory");
    }
    if checked == 0 {
        skip("no Python 3.12+: as_file on a directory is not exercised");
    }
}

#[test]
fn module_allow_refuses_a_name_not_listed_with_a_clear_import_error() {
    let (root, entries) = forms_root("allow");
    let path = entries[0].to_str().unwrap();
    for (python, version) in interpreters() {
        let target = format!("local?python={}", python.display());
        let cli = |function: &str, args: &[&str]| {
            let out = std::process::Command::new(env!("CARGO_BIN_EXE_econtext"))
                .args([
                    "--module-path",
                    path,
                    "--module-allow",
                    "ecforms",
                    "--module-allow",
                    "ecrel",
                ])
                .args(["call", &target, function])
                .args(args)
                .output()
                .unwrap();
            (
                out.status.code(),
                String::from_utf8_lossy(&out.stdout).into_owned(),
                String::from_utf8_lossy(&out.stderr).into_owned(),
            )
        };
        // Listed: served.
        let (code, out, err) = cli("ecforms.import_module_runtime", &["\"b\""]);
        assert_eq!(code, Some(0), "{version}: {err}");
        assert_eq!(out.trim(), r#"["b","sub.b"]"#, "{version}");
        // Not listed, though on the module path: a clear ImportError,
        // from an import inside served code and from the call itself.
        let (code, out, err) = cli("ecforms.import_refused", &["\"ecinside\""]);
        assert_eq!(code, Some(0), "{version}: {err}");
        let got: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
        assert_eq!(got[0], "ImportError", "{version}: {got}");
        let msg = got[1].as_str().unwrap();
        assert!(
            msg.contains("'ecinside' is not served") && msg.contains("--module-allow"),
            "{version}: {msg}"
        );
        let (code, _, err) = cli("ecinside.use", &[]);
        assert_eq!(code, Some(1), "{version}: {err}");
        assert!(
            err.contains("ImportError") && err.contains("--module-allow"),
            "{version}: {err}"
        );
    }
    let _ = std::fs::remove_dir_all(&root);
}

#[test]
fn a_preloaded_module_has_a_spec_so_find_spec_reload_and_pickle_work() {
    // `econtext.fleet` sent with the payload (ConnectOptions::preload, what
    // `econtext run` does) was made without a __spec__: find_spec raised
    // ValueError ("__spec__ is not set") and importlib.reload failed.
    run(async {
        let master = Master::new(MasterOptions::default().log(Capture::default().logger()));
        let ctx = master
            .connect(
                ConnectOptions::new(Method::Local(LocalOptions::new(python3())))
                    .preload(&["econtext.fleet"]),
            )
            .await
            .unwrap();
        let expr = concat!(
            "(lambda sys, il, pickle: (",
            "'econtext.fleet' in sys.modules and sys.modules['econtext.fleet'].__spec__.name,",
            " il.util.find_spec('econtext.fleet').name,",
            " il.reload(sys.modules['econtext.fleet']).__name__,",
            " pickle.loads(pickle.dumps(sys.modules['econtext.fleet'].run)).__module__))",
            "(__import__('sys'), __import__('importlib.util'), __import__('pickle'))",
        );
        let got: Vec<String> = ctx.call("builtins", "eval", (expr,)).await.unwrap();
        assert_eq!(got, ["econtext.fleet"; 4]);
        master.shutdown().await;
    });
}
