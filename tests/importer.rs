//! The module importer: children import what only the master has, with
//! one GET_MODULE request per package, and never ask for what cannot exist.

mod common;

use std::path::{Path, PathBuf};

use common::*;
use econtext::{Error, Master, MasterOptions};

fn module_root(tag: &str) -> PathBuf {
    let root = package_root(&format!("importer-{tag}"));
    std::fs::write(root.join("badmod.py"), "x = 1\n\ndef f(:\n    pass\n").unwrap();
    root
}

fn requests(master: &Master) -> u64 {
    master.importer_stats().snapshot()[0].1
}

fn master_with_path(root: &Path) -> Master {
    Master::new(MasterOptions {
        module_path: vec![root.to_path_buf()],
        log: Capture::default().logger(),
        ..Default::default()
    })
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
