//! Python contexts in the middle of the tree: a Python context answers
//! SPAWN (econtext.parent), routes for its subtree, forwards modules, and
//! takes its subtree down with it.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;
use econtext::{ConnectOptions, Context, Error, Master, MasterOptions, Method};
use serde_json::Value as Json;

fn module_root(tag: &str) -> PathBuf {
    let root = package_root(&format!("pyvia-{tag}"));
    std::fs::write(root.join("ecvia.py"), ECVIA).unwrap();
    root
}

fn master_with(cap: &Capture, root: &Path) -> Master {
    Master::new(
        MasterOptions::default()
            .module_path(vec![root.to_path_buf()])
            .log(cap.logger()),
    )
}

async fn spawn(master: &Master, python: &str, name: &str, via: Option<&Context>) -> Context {
    let mut o = ConnectOptions::new(Method::Local(local(python))).name(name);
    if let Some(v) = via {
        o = o.via(v);
    }
    master
        .connect(o)
        .await
        .unwrap_or_else(|e| panic!("connect {name} ({python}): {e}"))
}

async fn ids(ctx: &Context) -> Vec<i64> {
    ctx.call("ecvia", "ids", ()).await.unwrap()
}

/// Running (not gone, not a zombie).
fn running(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|state| state != "Z" && state != "X"),
        Err(_) => false,
    }
}

async fn wait_gone(pids: &[i32], secs: f64) -> Vec<i32> {
    let end = Instant::now() + Duration::from_secs_f64(secs);
    loop {
        let alive: Vec<i32> = pids.iter().copied().filter(|&p| running(p)).collect();
        if alive.is_empty() || Instant::now() > end {
            return alive;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Every descendant of `pid` (children first found by scanning /proc).
fn descendants(pid: i32) -> Vec<i32> {
    let mut parent_of = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(p) = e.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{p}/stat")) else {
            continue;
        };
        let Some(rest) = stat.rsplit_once(')').map(|x| x.1) else {
            continue;
        };
        if let Some(pp) = rest
            .split_whitespace()
            .nth(1)
            .and_then(|x| x.parse::<i32>().ok())
        {
            parent_of.push((p, pp));
        }
    }
    let mut out = Vec::new();
    let mut frontier = vec![pid];
    while let Some(x) = frontier.pop() {
        for &(p, pp) in &parent_of {
            if pp == x && !out.contains(&p) {
                out.push(p);
                frontier.push(p);
            }
        }
    }
    out
}

#[test]
fn chain_of_three_local_contexts_getppid_is_the_middle() {
    let root = module_root("chain");
    let r = root.clone();
    run(async move {
        let cap = Capture::default();
        let master = master_with(&cap, &r);
        let py = python3();
        let a = spawn(&master, &py, "a", None).await;
        let b = spawn(&master, &py, "b", Some(&a)).await;
        let c = spawn(&master, &py, "c", Some(&b)).await;
        assert_eq!(master.ancestors(c.id()).await, vec![b.id(), a.id(), 0]);
        let (ia, ib, ic) = (ids(&a).await, ids(&b).await, ids(&c).await);
        assert_eq!(ic[3], ib[2], "c's parent process is b");
        assert_eq!(ib[3], ia[2], "b's parent process is a");
        assert_eq!(ic[..2], [c.id() as i64, b.id() as i64]);
        let ppid: i64 = c.call("os", "getppid", ()).await.unwrap();
        assert_eq!(ppid, ib[2]);
        // Shutting the top down takes the chain with it.
        a.shutdown().await.unwrap();
        let gone = wait_gone(&[ia[2] as i32, ib[2] as i32, ic[2] as i32], 5.0).await;
        assert!(gone.is_empty(), "still running: {gone:?}");
    });

    // The CLI: each hop after the first is created through the one before.
    let out = Command::new(env!("CARGO_BIN_EXE_econtext"))
        .args(["call", "local,local,local", "os.getppid"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let ppid: i64 = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap();
    assert!(ppid > 1);
    let out = Command::new(env!("CARGO_BIN_EXE_econtext"))
        .args(["call", "--module-path", root.to_str().unwrap()])
        .args(["local,local,local", "ecvia.ppid_cmdline"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Json = serde_json::from_slice(&out.stdout).unwrap();
    let cmdline = v[2].as_str().unwrap();
    // The CLI names hops METHOD.ID: the middle one is local.2.
    assert!(cmdline.contains("(econtext:local.2)"), "{v}");
    let _ = std::fs::remove_dir_all(&root);
}

#[test]
fn every_interpreter_is_an_intermediate_for_another() {
    let pythons = interpreters();
    let root = module_root("every");
    let r = root.clone();
    run(async move {
        let cap = Capture::default();
        let master = master_with(&cap, &r);
        let n = pythons.len();
        for (i, (py, ver)) in pythons.iter().enumerate() {
            let (lpy, lver) = &pythons[(i + 1) % n];
            let mid = spawn(&master, py.to_str().unwrap(), &format!("mid{i}"), None).await;
            let leaf = spawn(
                &master,
                lpy.to_str().unwrap(),
                &format!("leaf{i}"),
                Some(&mid),
            )
            .await;
            let v: String = leaf.call("platform", "python_version", ()).await.unwrap();
            assert_eq!(&v, lver, "leaf under a {ver} intermediate");
            let (im, il) = (ids(&mid).await, ids(&leaf).await);
            assert_eq!(
                il[3], im[2],
                "{ver} -> {lver}: the leaf's parent is the intermediate"
            );
            // A leaf's import goes through the intermediate's forwarder.
            let total: i64 = leaf
                .call("ecpkg.entry", "run", ())
                .await
                .unwrap_or_else(|e| panic!("{ver} -> {lver}: {e}"));
            assert_eq!(total, 18);
            // The intermediate can call its own child.
            let r: Json = mid
                .call("ecvia", "call_child", (leaf.id(), "os", "getpid"))
                .await
                .unwrap();
            assert_eq!(r[1].as_i64(), Some(il[2]), "{ver}: {r}");
            mid.shutdown().await.unwrap();
            let gone = wait_gone(&[im[2] as i32, il[2] as i32], 6.0).await;
            assert!(gone.is_empty(), "{ver} -> {lver}: still running {gone:?}");
            let r = tokio::time::timeout(Duration::from_secs(2), leaf.dead()).await;
            assert!(r.is_ok(), "{ver}: the master saw the leaf die");
            eprintln!("intermediate {ver} -> leaf {lver}: ok");
        }
    });
    let _ = std::fs::remove_dir_all(&root);
}

#[test]
fn tree_like_the_seeds_example_routes_leaf_to_leaf_across_branches() {
    let pythons = interpreters();
    let pick = |i: usize| pythons[i % pythons.len()].0.to_str().unwrap().to_string();
    let root = module_root("tree");
    let r = root.clone();
    run(async move {
        let cap = Capture::default();
        let master = master_with(&cap, &r);
        let bastion = spawn(&master, &pick(0), "bastion", None).await;
        let dc1 = spawn(&master, &pick(1), "dc1", Some(&bastion)).await;
        let dc2 = spawn(&master, &pick(2), "dc2", Some(&bastion)).await;
        let rack12 = spawn(&master, &pick(3), "rack12", Some(&dc1)).await;
        let rack22 = spawn(&master, &pick(4), "rack22", Some(&dc2)).await;
        let node12b = spawn(&master, &pick(5), "node12b", Some(&rack12)).await;
        let node22a = spawn(&master, &pick(6), "node22a", Some(&rack22)).await;
        assert_eq!(
            master.ancestors(node22a.id()).await,
            vec![rack22.id(), dc2.id(), bastion.id(), 0]
        );
        let hops = [&bastion, &dc1, &dc2, &rack12, &rack22];
        for h in hops {
            let _: bool = h.call("ecvia", "trace", (true,)).await.unwrap();
        }
        let handle: u32 = node12b.call("ecvia", "listen", ()).await.unwrap();
        let _: bool = node22a
            .call("ecvia", "send", (node12b.id(), handle, "from node22a"))
            .await
            .unwrap();
        let got: Json = node12b.call("ecvia", "got", (1,)).await.unwrap();
        assert_eq!(
            got,
            serde_json::json!([[node22a.id(), "from node22a"]]),
            "delivered, with its true source"
        );
        // Each hop saw it: node22a -> rack22 -> dc2 -> bastion -> dc1 ->
        // rack12 -> node12b, never the master.
        let (src, dst) = (node22a.id() as i64, node12b.id() as i64);
        let want = [
            (&bastion, vec![(dc2.id(), "in"), (dc1.id(), "out")]),
            (&dc2, vec![(rack22.id(), "in")]),
            (&dc1, vec![(rack12.id(), "out")]),
            (&rack22, vec![(node22a.id(), "in")]),
            (&rack12, vec![(node12b.id(), "out")]),
        ];
        for (ctx, crossings) in want {
            let t: Vec<(i64, String, i64, i64, i64)> =
                ctx.call("ecvia", "traced", ()).await.unwrap();
            let ours: Vec<(i64, &str)> = t
                .iter()
                .filter(|f| f.2 == src && f.3 == dst && f.4 == handle as i64)
                .map(|f| (f.0, f.1.as_str()))
                .collect();
            let want: Vec<(i64, &str)> = crossings.iter().map(|(c, d)| (*c as i64, *d)).collect();
            assert_eq!(ours, want, "{}: {t:?}", ctx.name());
        }
        // The other way round, with a reply: node12b asks node22a's handle.
        let h2: u32 = node22a.call("ecvia", "listen", ()).await.unwrap();
        let _: bool = node12b
            .call("ecvia", "send", (node22a.id(), h2, [1, 2, 3]))
            .await
            .unwrap();
        let got: Json = node22a.call("ecvia", "got", (1,)).await.unwrap();
        assert_eq!(got, serde_json::json!([[node12b.id(), [1, 2, 3]]]));
        bastion.shutdown().await.unwrap();
        let r = tokio::time::timeout(Duration::from_secs(8), node12b.dead()).await;
        assert!(r.is_ok(), "shutting bastion down takes its tree with it");
    });
    let _ = std::fs::remove_dir_all(&root);
}

#[test]
fn module_imported_by_10_children_of_one_intermediate_crosses_the_master_link_once() {
    let root = module_root("ten");
    let path = root.clone();
    run(async move {
        let cap = Capture::default();
        let master = master_with(&cap, &path);
        let py = python3();
        let mid = spawn(&master, &py, "mid", None).await;
        let mut leaves = Vec::new();
        for i in 0..10 {
            // Half of them another interpreter, where there is one.
            let p = if i % 2 == 1 {
                interpreters()
                    .first()
                    .map(|x| x.0.to_str().unwrap().to_string())
                    .unwrap_or(py.clone())
            } else {
                py.clone()
            };
            leaves.push(spawn(&master, &p, &format!("leaf{i}"), Some(&mid)).await);
        }
        let stats = |m: &Master| {
            let s = m.importer_stats().snapshot();
            (s[0].1, s[1].1)
        };
        let (req0, sent0) = stats(&master);
        let calls = leaves
            .iter()
            .map(|l| async move { l.call::<i64>("ecpkg.entry", "run", ()).await });
        for r in futures::future::join_all(calls).await {
            assert_eq!(r.unwrap(), 18);
        }
        let (req1, sent1) = stats(&master);
        assert_eq!(req1 - req0, 1, "one GET_MODULE reached the master");
        assert_eq!(
            sent1 - sent0,
            ECPKG_MODULES,
            "each module crossed the link once"
        );
        // Again: nothing.
        for l in &leaves {
            assert_eq!(l.call::<i64>("ecpkg.entry", "run", ()).await.unwrap(), 18);
        }
        assert_eq!(stats(&master), (req1, sent1));
        // A missing module: one request for all ten, and the error names
        // the master's module path.
        let calls = leaves
            .iter()
            .map(|l| async move { l.call::<i64>("ec_no_such_mod", "f", ()).await });
        for r in futures::future::join_all(calls).await {
            match r {
                Err(Error::Remote(e)) => {
                    assert!(e.type_name.contains("Error"), "{e:?}");
                    assert!(e.message.contains("ec_no_such_mod"), "{e:?}");
                    assert!(e.message.contains(path.to_str().unwrap()), "{e:?}");
                }
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(stats(&master).0, req1 + 1);
    });
    let _ = std::fs::remove_dir_all(&root);
}

#[test]
fn intermediate_killed_mid_call() {
    let root = module_root("kill");
    let r = root.clone();
    run(async move {
        let cap = Capture::default();
        let master = master_with(&cap, &r);
        let py = python3();
        let mid = spawn(&master, &py, "mid", None).await;
        let leaf1 = spawn(&master, &py, "leaf1", Some(&mid)).await;
        let leaf2 = spawn(&master, &py, "leaf2", Some(&mid)).await;
        let other = spawn(&master, &py, "other", None).await;
        let leaf3 = spawn(&master, &py, "leaf3", Some(&other)).await;
        let mid_pid = ids(&mid).await[2] as i32;
        let pids = [ids(&leaf1).await[2] as i32, ids(&leaf2).await[2] as i32];
        let mut pending = Vec::new();
        for l in [&leaf1, &leaf2, &leaf1] {
            pending.push(
                l.call_with("time", "sleep")
                    .args((30,))
                    .unwrap()
                    .start::<()>()
                    .await
                    .unwrap(),
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        let t0 = Instant::now();
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(mid_pid),
            nix::sys::signal::Signal::SIGKILL,
        )
        .unwrap();
        for p in pending {
            let r = tokio::time::timeout(Duration::from_secs(1), p.result())
                .await
                .expect("the pending call fails within 1 s");
            assert!(matches!(r, Err(Error::Dead { .. })), "{r:?}");
        }
        eprintln!("pending calls failed {:?} after SIGKILL", t0.elapsed());
        // New calls into the dead branch fail at once.
        let r = leaf2.call::<i64>("os", "getpid", ()).await;
        assert!(matches!(r, Err(Error::Dead { .. })), "{r:?}");
        // The other branch is unharmed.
        let v: String = leaf3.call("platform", "python_version", ()).await.unwrap();
        assert!(!v.is_empty());
        let alive = wait_gone(&pids, 5.0).await;
        assert!(
            alive.is_empty(),
            "leaves still running 5 s later: {alive:?}"
        );
        eprintln!("leaves gone {:?} after SIGKILL", t0.elapsed());
        let v: String = leaf3.call("platform", "python_version", ()).await.unwrap();
        assert!(!v.is_empty());
    });
    let _ = std::fs::remove_dir_all(&root);
}

#[test]
fn child_calling_its_parent_or_sibling_is_refused() {
    let root = module_root("refuse");
    let r = root.clone();
    run(async move {
        let cap = Capture::default();
        let master = master_with(&cap, &r);
        let py = python3();
        let mid = spawn(&master, &py, "mid", None).await;
        let leaf1 = spawn(&master, &py, "leaf1", Some(&mid)).await;
        let leaf2 = spawn(&master, &py, "leaf2", Some(&mid)).await;
        let call = serde_json::json!(["os", null, "getpid", [], {}]);
        for (target, what) in [(mid.id(), "parent"), (leaf2.id(), "sibling"), (0, "master")] {
            for handle in [101u32, 106, 105] {
                let r: Json = leaf1
                    .call("ecvia", "ask", (target, handle, &call))
                    .await
                    .unwrap();
                assert_eq!(r[0], "dead", "{what}, handle {handle}: {r}");
                assert!(
                    r[1].as_str().unwrap().starts_with("refused"),
                    "{what}, handle {handle}: {r}"
                );
            }
        }
        // A spoofed source never gets past the intermediate: leaf1 claims
        // to be leaf2 on a log record for the master.
        let _: bool = leaf1
            .call(
                "ecvia",
                "spoof",
                (0, leaf2.id(), 102, ("spoofer", 40, "SPOOFED RECORD")),
            )
            .await
            .unwrap();
        assert!(
            cap.wait_for(&["not in its subtree", "ctx=mid"], 5.0).await,
            "{}",
            cap.text()
        );
        let _: i64 = mid.call("os", "getpid", ()).await.unwrap();
        assert!(!cap.text().contains("SPOOFED RECORD"), "{}", cap.text());
        // Everyone is still fine.
        for c in [&mid, &leaf1, &leaf2] {
            let _: i64 = c.call("os", "getpid", ()).await.unwrap();
        }
    });
    let _ = std::fs::remove_dir_all(&root);
}

#[test]
fn a_batch_through_a_python_intermediate_cannot_smuggle_a_frame_from_another_source() {
    let root = module_root("batch-spoof");
    let r = root.clone();
    run(async move {
        let cap = Capture::default();
        let master = master_with(&cap, &r);
        let py = python3();
        let mid = spawn(&master, &py, "mid", None).await;
        let leaf1 = spawn(&master, &py, "leaf1", Some(&mid)).await;
        let leaf2 = spawn(&master, &py, "leaf2", Some(&mid)).await;
        // One batch frame (one good MAC) from leaf1: a log record of its
        // own, one claiming to come from leaf2, another of its own.
        let records = (
            ("batcher", 40, "OWN RECORD ONE"),
            ("batcher", 40, "SPOOFED RECORD"),
            ("batcher", 40, "OWN RECORD TWO"),
        );
        let _: bool = leaf1
            .call("ecvia", "spoof_in_batch", (0, leaf2.id(), 102, records))
            .await
            .unwrap();
        assert!(
            cap.wait_for(&["not in its subtree", "ctx=mid"], 10.0).await,
            "{}",
            cap.text()
        );
        assert!(
            cap.wait_for(&["OWN RECORD TWO"], 10.0).await,
            "{}",
            cap.text()
        );
        assert!(cap.text().contains("OWN RECORD ONE"), "{}", cap.text());
        let _: i64 = mid.call("os", "getpid", ()).await.unwrap();
        assert!(!cap.text().contains("SPOOFED RECORD"), "{}", cap.text());
        for c in [&mid, &leaf1, &leaf2] {
            let _: i64 = c.call("os", "getpid", ()).await.unwrap();
        }
    });
    let _ = std::fs::remove_dir_all(&root);
}

#[test]
fn master_going_away_takes_every_context_below_with_it() {
    let mut cli = Command::new(env!("CARGO_BIN_EXE_econtext"))
        .args(["call", "local,local,local", "time.sleep", "60"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let pid = cli.id() as i32;
    let end = Instant::now() + Duration::from_secs(20);
    let tree = loop {
        let d: Vec<i32> = descendants(pid)
            .into_iter()
            .filter(|p| {
                std::fs::read(format!("/proc/{p}/cmdline"))
                    .map(|c| String::from_utf8_lossy(&c).contains("(econtext:"))
                    .unwrap_or(false)
            })
            .collect();
        if d.len() >= 3 {
            break d;
        }
        assert!(Instant::now() < end, "the chain never came up: {d:?}");
        std::thread::sleep(Duration::from_millis(50));
    };
    // Let the call reach the leaf.
    std::thread::sleep(Duration::from_millis(300));
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    cli.wait().unwrap();
    let t0 = Instant::now();
    let alive = loop {
        let alive: Vec<i32> = tree.iter().copied().filter(|&p| running(p)).collect();
        if alive.is_empty() || t0.elapsed() > Duration::from_secs(6) {
            break alive;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(
        alive.is_empty(),
        "orphans left behind: {alive:?} of {tree:?}"
    );
    eprintln!(
        "{} contexts gone {:?} after the master",
        tree.len(),
        t0.elapsed()
    );
}

/// Writes an executable shell script standing in for Python.
fn fake_python(dir: &Path, name: &str, body: &str) -> String {
    use std::os::unix::fs::PermissionsExt;
    let p = dir.join(name);
    std::fs::write(&p, format!("#!/bin/sh\n{body}\n")).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    p.to_str().unwrap().to_string()
}

/// Connects `python` through `mid`, expecting it to fail within `secs`.
async fn connect_failing_via(
    master: &Master,
    python: &str,
    mid: &Context,
    secs: u64,
) -> econtext::ConnectError {
    master
        .connect(
            ConnectOptions::new(Method::Local(local(python)))
                .via(mid)
                .connect_timeout(Duration::from_secs(secs)),
        )
        .await
        .unwrap_err()
}

#[test]
fn failed_spawns_through_a_python_intermediate_are_typed_and_reaped() {
    let root = module_root("fail");
    let r = root.clone();
    run(async move {
        let cap = Capture::default();
        let master = master_with(&cap, &r);
        let mid = spawn(&master, &python3(), "mid", None).await;
        let mid_pid = ids(&mid).await[2] as i32;
        let cases = [
            (
                "/nonexistent/python".to_string(),
                vec!["cannot start /nonexistent/python"],
            ),
            (
                fake_python(&r, "early.sh", "echo 'boom: no python here' >&2\nexit 3"),
                vec![
                    "exited early",
                    "EC0",
                    "exit status 3",
                    "boom: no python here",
                ],
            ),
            (
                fake_python(
                    &r,
                    "garbage.sh",
                    "head -c 70000 /dev/zero | tr '\\0' x\nsleep 5",
                ),
                vec!["no EC0 marker"],
            ),
            (
                fake_python(&r, "silent.sh", "echo 'waiting forever' >&2\nexec sleep 30"),
                vec!["timed out after 1.0s", "EC0", "waiting forever"],
            ),
        ];
        for (python, needles) in cases {
            let t0 = Instant::now();
            let err = connect_failing_via(&master, &python, &mid, 1).await;
            // A timeout keeps its type across the intermediate; the others
            // arrive as Via with the intermediate's account.
            assert!(
                matches!(
                    err,
                    econtext::ConnectError::Via { .. } | econtext::ConnectError::Timeout { .. }
                ),
                "{err:?}"
            );
            let text = err.to_string();
            eprintln!("{text}");
            for n in needles {
                assert!(text.contains(n), "{python}: {n:?} not in {text}");
            }
            assert!(
                t0.elapsed() < Duration::from_secs(4),
                "{python}: {:?}",
                t0.elapsed()
            );
            // Killed and reaped: the intermediate has no child left.
            let end = Instant::now() + Duration::from_secs(2);
            while !descendants(mid_pid).is_empty() && Instant::now() < end {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            assert_eq!(descendants(mid_pid), Vec::<i32>::new(), "{python}");
            let _: i64 = mid.call("os", "getpid", ()).await.unwrap();
        }
    });
    let _ = std::fs::remove_dir_all(&root);
}

/// An intermediate with many children has fds past select()'s limit of
/// 1024: spawning through it (the handshake's wait) and reading a failed
/// child's last words (its stderr) must not depend on that limit.
#[test]
fn an_intermediate_whose_fds_pass_1024_still_spawns_and_reports_failures() {
    let root = module_root("fds");
    let r = root.clone();
    run(async move {
        let cap = Capture::default();
        let master = master_with(&cap, &r);
        let mid = spawn(&master, &python3(), "mid", None).await;
        let high: i64 = mid.call("ecvia", "hold_fds_past", (1100,)).await.unwrap();
        assert!(high > 1100, "{high}");
        let leaf = spawn(&master, &python3(), "leaf", Some(&mid)).await;
        let ppid: i64 = leaf.call("os", "getppid", ()).await.unwrap();
        assert_eq!(ppid, ids(&mid).await[2]);
        let early = fake_python(&r, "early.sh", "echo 'boom: no python here' >&2\nexit 3");
        let err = connect_failing_via(&master, &early, &mid, 5).await;
        let text = err.to_string();
        assert!(text.contains("exited early"), "{text}");
        assert!(text.contains("boom: no python here"), "{text}");
    });
    let _ = std::fs::remove_dir_all(&root);
}

#[test]
fn leaf_killed_under_a_python_intermediate_is_reported_and_reaped() {
    let root = module_root("leafkill");
    let r = root.clone();
    run(async move {
        let cap = Capture::default();
        let master = master_with(&cap, &r);
        let py = python3();
        let mid = spawn(&master, &py, "mid", None).await;
        let leaf = spawn(&master, &py, "leaf", Some(&mid)).await;
        let mid_pid = ids(&mid).await[2] as i32;
        let leaf_pid = ids(&leaf).await[2] as i32;
        let pending = start_sleep(&leaf, 30).await;
        kill_and_expect_dead(leaf_pid, pending).await;
        let end = Instant::now() + Duration::from_secs(2);
        while !descendants(mid_pid).is_empty() && Instant::now() < end {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(descendants(mid_pid), Vec::<i32>::new(), "reaped, no zombie");
        // The intermediate forgot it, and can make another.
        let s: Json = mid.call("econtext.parent", "stats", ()).await.unwrap();
        assert_eq!(s["children"], serde_json::json!([]), "{s}");
        let again = spawn(&master, &py, "again", Some(&mid)).await;
        assert_eq!(ids(&again).await[3], mid_pid as i64);
    });
    let _ = std::fs::remove_dir_all(&root);
}

/// Lines from `ctx` that are a number (`seq`'s output) and what that
/// context's "suppressed N log records" summaries counted.
fn shown_and_counted(cap: &Capture, ctx: &str) -> (u64, u64) {
    let lines = cap.lines.lock().unwrap();
    let mut shown = 0;
    let mut counted = 0;
    for l in lines.iter().filter(|l| l.split(' ').any(|w| w == ctx)) {
        let mut words = l.split(' ').skip(1);
        match (words.next(), words.next()) {
            (Some(n), _) if !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()) => shown += 1,
            (Some("suppressed"), Some(n)) => counted += n.parse::<u64>().unwrap_or(0),
            _ => {}
        }
    }
    (shown, counted)
}

#[test]
fn large_values_and_log_floods_cross_a_python_intermediate() {
    let root = module_root("large");
    let r = root.clone();
    run(async move {
        let cap = Capture::default();
        let master = master_with(&cap, &r);
        let py = python3();
        let mid = spawn(&master, &py, "mid", None).await;
        let leaf = spawn(&master, &py, "leaf", Some(&mid)).await;
        let blob: Vec<u8> = (0..32 * 1024 * 1024u32).map(|i| (i % 251) as u8).collect();
        let t0 = Instant::now();
        let back: serde_bytes::ByteBuf = mid
            .call("copy", "copy", (serde_bytes::Bytes::new(&blob),))
            .await
            .unwrap();
        assert_eq!(back.len(), blob.len());
        eprintln!("32 MiB echo, direct child: {:?}", t0.elapsed());
        let t0 = Instant::now();
        let back: serde_bytes::ByteBuf = leaf
            .call("copy", "copy", (serde_bytes::Bytes::new(&blob),))
            .await
            .unwrap();
        let dt = t0.elapsed();
        assert!(back.as_ref() == blob.as_slice());
        eprintln!(
            "32 MiB echo through a Python intermediate: {:?} ({:.0} MiB/s each way)",
            dt,
            64.0 / dt.as_secs_f64()
        );
        // The leaf floods its log (up through the intermediate) while a
        // large value goes down to it: neither side may wedge.
        let flood = leaf
            .call_with("os", "system")
            .args(("seq 1 100000",))
            .unwrap()
            .start::<i64>()
            .await
            .unwrap();
        let back: serde_bytes::ByteBuf = leaf
            .call("copy", "copy", (serde_bytes::Bytes::new(&blob[..8 << 20]),))
            .await
            .unwrap();
        assert_eq!(back.len(), 8 << 20);
        assert_eq!(flood.result().await.unwrap(), 0);
        // The leaf's log budget shows a burst and counts the rest: its
        // summaries come within a second or two of the flood's end, and
        // every line is shown or counted.
        let end = Instant::now() + Duration::from_secs(10);
        let (shown, counted) = loop {
            let (shown, counted) = shown_and_counted(&cap, "ctx=leaf");
            if shown + counted >= 100_000 || Instant::now() > end {
                break (shown, counted);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        assert!(counted > 0, "a burst, then counted");
        assert_eq!(shown + counted, 100_000, "every line shown or counted");
    });
    let _ = std::fs::remove_dir_all(&root);
}

#[test]
fn a_child_that_stops_reading_is_closed_by_its_python_intermediate_past_the_cap() {
    let root = module_root("cap");
    run(async {
        let cap = Capture::default();
        let master = master_with(&cap, &root);
        let py = python3();
        let mid = spawn(&master, &py, "mid", None).await;
        let deaf = spawn(&master, &py, "deaf", Some(&mid)).await;
        let loud = spawn(&master, &py, "loud", Some(&mid)).await;
        let deaf_pid = ids(&deaf).await[2];
        let handle: i64 = deaf.call("ecvia", "listen", ()).await.unwrap();
        // `deaf` stops reading altogether (SIGSTOP)...
        deaf.call_with("ecvia", "stop").no_reply().await.unwrap();
        // ... and its sibling sends it 48 MiB, past the intermediate's
        // 32 MiB hard cap for one child's queue (econtext_parent.HARD).
        let sent: Json = loud
            .call_with("ecvia", "flood")
            .args((deaf.id(), handle, 48, 1 << 20))
            .unwrap()
            .timeout(Duration::from_secs(120))
            .returning()
            .await
            .unwrap();
        assert!(sent[0].as_i64().is_some(), "{sent}");
        // The intermediate closed `deaf`, and the master heard it die.
        let why = tokio::time::timeout(Duration::from_secs(30), deaf.dead()).await;
        assert!(why.is_ok(), "deaf is declared dead");
        // Its siblings and the intermediate itself are unaffected.
        for _ in 0..5 {
            assert_eq!(ids(&loud).await[0], i64::from(loud.id()));
            assert_eq!(ids(&mid).await[0], i64::from(mid.id()));
        }
        // Closed for the cap, not for anything else.
        let why = format!("closing child {}: over 33554432 bytes queued", deaf.id());
        let warned = Instant::now() + Duration::from_secs(10);
        while !cap.text().contains(&why) && Instant::now() < warned {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(cap.text().contains(&why), "{}", cap.text());
        let _ = Command::new("kill")
            .args(["-KILL", &deaf_pid.to_string()])
            .status();
        mid.shutdown().await.unwrap();
    });
    let _ = std::fs::remove_dir_all(&root);
}

#[test]
fn master_shutdown_ends_every_context_and_returns_when_they_are_gone() {
    let root = module_root("shutdown");
    run(async {
        let cap = Capture::default();
        let master = master_with(&cap, &root);
        let py = python3();
        let a = spawn(&master, &py, "a", None).await;
        let b = spawn(&master, &py, "b", Some(&a)).await;
        let c = spawn(&master, &py, "c", None).await;
        let mut pids = Vec::new();
        for ctx in [&a, &b, &c] {
            pids.push(ids(ctx).await[2] as i32);
        }
        tokio::time::timeout(Duration::from_secs(15), master.shutdown())
            .await
            .expect("Master::shutdown() is bounded");
        // Every stream closed before it returned; the processes are gone
        // (or exiting) by then: a generous margin for a loaded machine.
        let alive = wait_gone(&pids, 3.0).await;
        assert!(alive.is_empty(), "still running after shutdown: {alive:?}");
        let e = a.call::<i64>("os", "getpid", ()).await.unwrap_err();
        assert!(matches!(e, Error::RouterGone | Error::Dead { .. }), "{e:?}");
    });
    let _ = std::fs::remove_dir_all(&root);
}
