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
            }
            other => panic!("expected ImportError, got {other:?}"),
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
