//! A fleet's burst: 100 local children at once, each importing a package
//! only the master serves and logging 100 records. In its own file so its
//! load does not share the machine with the latency checks of runtime.rs.

mod common;

use std::time::{Duration, Instant};

use common::{run, Capture};
use econtext::{LocalOptions, Master, MasterOptions};

async fn hundred_children(master: &Master) -> Vec<econtext::Context> {
    let python = common::python3();
    let connects = (0..100).map(|_| {
        let (m, python) = (master.clone(), python.clone());
        async move { m.local(LocalOptions::new(python)).await.unwrap() }
    });
    futures::future::join_all(connects).await
}

#[test]
fn a_hundred_children_import_a_master_only_package_at_once_and_log_every_record() {
    let root = common::package_root("runtime-burst");
    std::fs::write(
        root.join("ecburst.py"),
        "import logging\n\ndef burst(n):\n    log = logging.getLogger('burst')\n    \
         for i in range(n):\n        log.warning('record %d', i)\n    return n\n",
    )
    .unwrap();
    let cap = Capture::default();
    let scratch = root.clone();
    run(async move {
        let master = Master::new(
            MasterOptions::default()
                .module_path(vec![root.clone()])
                .log(cap.logger())
                .connect_timeout(Duration::from_secs(60)),
        );
        let children = hundred_children(&master).await;
        let t0 = Instant::now();
        let calls = children
            .iter()
            .map(|c| c.call::<i64>("ecpkg.entry", "run", ()));
        for r in futures::future::join_all(calls).await {
            assert_eq!(r.unwrap(), 18);
        }
        assert!(t0.elapsed() < Duration::from_secs(10), "{:?}", t0.elapsed());
        let calls = children
            .iter()
            .map(|c| c.call::<i64>("ecburst", "burst", (100,)));
        for r in futures::future::join_all(calls).await {
            assert_eq!(r.unwrap(), 100);
        }
        let count = || {
            cap.lines
                .lock()
                .unwrap()
                .iter()
                .filter(|l| l.contains("logger=burst"))
                .count()
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while count() < 10_000 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(count(), 10_000, "every record of every child arrived");
        master.shutdown().await;
    });
    let _ = std::fs::remove_dir_all(scratch);
}
