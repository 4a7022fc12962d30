//! Python contexts over local pipes: the seed's bootstrap under every
//! interpreter found, calls, errors, logging and stdio, and cleanup.

mod common;

use std::time::{Duration, Instant};

use common::*;
use econtext::Error;

#[test]
fn every_interpreter_boots_and_answers_calls() {
    let pythons = interpreters();
    run(async move {
        let cap = Capture::default();
        let master = master(&cap);
        for (python, version) in &pythons {
            let ctx = master
                .local(local(python.to_str().unwrap()))
                .await
                .unwrap_or_else(|e| panic!("{}: {e}", python.display()));
            let got: String = ctx.call("platform", "python_version", ()).await.unwrap();
            assert_eq!(&got, version, "{}", python.display());
            // argv[0] names the context, for ps.
            let pid: i32 = ctx.call("os", "getpid", ()).await.unwrap();
            let cmdline = std::fs::read_to_string(format!("/proc/{pid}/cmdline")).unwrap();
            assert!(
                cmdline.contains(&format!("(econtext:{})", ctx.name())),
                "{}: cmdline {cmdline:?}",
                python.display()
            );
            // Arguments and results of every shape cross intact.
            let echoed: (i64, String, Vec<u8>, Option<bool>, f64) = ctx
                .call(
                    "copy",
                    "copy",
                    ((
                        -5i64,
                        "héllo",
                        serde_bytes::Bytes::new(b"\x00\xff"),
                        None::<bool>,
                        2.5,
                    ),),
                )
                .await
                .unwrap();
            assert_eq!(
                echoed,
                (-5, "héllo".into(), vec![0, 255], None, 2.5),
                "{}",
                python.display()
            );
            ctx.shutdown().await.unwrap();
            tokio::time::timeout(Duration::from_secs(5), ctx.dead())
                .await
                .expect("context exits after SHUTDOWN");
        }
    });
}

#[test]
fn remote_exception_comes_back_typed_with_traceback() {
    let pythons = interpreters();
    run(async move {
        let master = master(&Capture::default());
        for (python, version) in &pythons {
            let ctx = master.local(local(python.to_str().unwrap())).await.unwrap();
            let err = ctx
                .call::<i64>("operator", "floordiv", (1, 0))
                .await
                .unwrap_err();
            let Error::Remote(e) = err else {
                panic!("{version}: expected a remote error, got {err:?}")
            };
            assert!(
                e.type_name.ends_with("ZeroDivisionError"),
                "{version}: {}",
                e.type_name
            );
            assert!(
                e.traceback.contains("Traceback"),
                "{version}: {}",
                e.traceback
            );
            // The context keeps working after an exception.
            let n: i64 = ctx.call("operator", "add", (2, 3)).await.unwrap();
            assert_eq!(n, 5);
            // kwargs.
            let d: String = ctx
                .call_with("json", "dumps")
                .args(([1, 2],))
                .unwrap()
                .kwarg("separators", (",", ":"))
                .unwrap()
                .returning()
                .await
                .unwrap();
            assert_eq!(d, "[1,2]", "{version}");
        }
    });
}

#[test]
fn print_and_subprocess_output_reach_the_master_log() {
    run(async {
        let cap = Capture::default();
        let master = master(&cap);
        let ctx = master
            .connect(
                econtext::ConnectOptions::new(econtext::Method::Local(local(&python3())))
                    .name("printer"),
            )
            .await
            .unwrap();
        // A method of an object in a module: module.Class.method form.
        let _: Option<i64> = ctx
            .call_with("sys", "write")
            .class("stdout")
            .args(("from print\n",))
            .unwrap()
            .returning()
            .await
            .unwrap();
        let status: i32 = ctx
            .call("os", "system", ("echo hi from a subprocess",))
            .await
            .unwrap();
        assert!(
            cap.wait_for(&["from print", "ctx=printer", "logger=stdout"], 5.0)
                .await,
            "log was:\n{}",
            cap.text()
        );
        assert_eq!(status, 0, "the call still returns its value");
        let _: i32 = ctx
            .call("os", "system", ("echo to stderr >&2",))
            .await
            .unwrap();
        assert!(
            cap.wait_for(
                &["hi from a subprocess", "ctx=printer", "logger=stdout"],
                5.0
            )
            .await,
            "log was:\n{}",
            cap.text()
        );
        assert!(
            cap.wait_for(&["to stderr", "ctx=printer", "logger=stderr"], 5.0)
                .await,
            "log was:\n{}",
            cap.text()
        );
        // A Python logging record travels as FORWARD_LOG.
        let _: () = ctx
            .call("logging", "warning", ("a warning from %s", "the child"))
            .await
            .unwrap();
        assert!(
            cap.wait_for(&["a warning from the child", "ctx=printer"], 5.0)
                .await,
            "log was:\n{}",
            cap.text()
        );
    });
}

#[test]
fn child_killed_mid_call_fails_the_caller_within_1s() {
    run(async {
        let master = master(&Capture::default());
        let ctx = master.local(local(&python3())).await.unwrap();
        let pid: i32 = ctx.call("os", "getpid", ()).await.unwrap();
        let pending = start_sleep(&ctx, 30).await;
        kill_and_expect_dead(pid, pending).await;
        // Later calls fail at once with Dead too.
        let again = ctx.call::<i32>("os", "getpid", ()).await;
        assert!(matches!(again, Err(Error::Dead { .. })), "{again:?}");
    });
}

#[test]
fn call_with_deadline_times_out() {
    run(async {
        let master = master(&Capture::default());
        let ctx = master.local(local(&python3())).await.unwrap();
        let res = ctx
            .call_with("time", "sleep")
            .args((5,))
            .unwrap()
            .timeout(Duration::from_millis(200))
            .returning::<()>()
            .await;
        assert!(matches!(res, Err(Error::Timeout { .. })), "{res:?}");
    });
}

#[test]
fn connect_and_shutdown_cycles_leave_no_process_zombie_or_fd() {
    let cycles: usize = std::env::var("ECONTEXT_CYCLES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200);
    run_alone(async move {
        let master = master(&Capture::default());
        // One warm-up so lazily opened runtime fds are counted in the base.
        let ctx = master.local(local(&python3())).await.unwrap();
        ctx.shutdown().await.unwrap();
        ctx.dead().await;
        tokio::time::sleep(Duration::from_millis(200)).await;
        let fds_before = open_fds();
        for i in 0..cycles {
            let ctx = master.local(local(&python3())).await.unwrap();
            let _: i32 = ctx.call("os", "getpid", ()).await.unwrap();
            ctx.shutdown().await.unwrap();
            tokio::time::timeout(Duration::from_secs(5), ctx.dead())
                .await
                .unwrap_or_else(|_| panic!("cycle {i}: context did not exit"));
        }
        // Give the supervisors a moment to reap the last processes.
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let (live, zombies) = children_of_me();
            let fds = open_fds();
            if live.is_empty() && zombies.is_empty() && fds <= fds_before {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "after {cycles} cycles: live {live:?}, zombies {zombies:?}, fds {fds} (was {fds_before})"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    });
}

#[test]
fn logging_records_reach_the_master_under_every_interpreter() {
    // The core loads the logging package only when user code does, and
    // installs its forwarding handler at that moment.
    let pythons = interpreters();
    run(async move {
        let cap = Capture::default();
        let master = master(&cap);
        for (python, version) in &pythons {
            let ctx = master.local(local(python.to_str().unwrap())).await.unwrap();
            let _: () = ctx
                .call("logging", "warning", ("record from %s", version.as_str()))
                .await
                .unwrap();
            let _: () = ctx
                .call("logging", "debug", ("below the master's level",))
                .await
                .unwrap();
            let needle = format!("record from {version}");
            assert!(
                cap.wait_for(&[&needle, &format!("ctx={}", ctx.name())], 5.0)
                    .await,
                "{version}: log was:\n{}",
                cap.text()
            );
            ctx.shutdown().await.unwrap();
        }
        assert!(!cap.text().contains("below the master's level"));
    });
}

#[test]
fn calls_in_flight_all_return_and_none_waits_behind_a_slow_one() {
    // The child writes replies to queued calls together; a reply must
    // still never wait for the slow call queued after it.
    let pythons = interpreters();
    run(async move {
        let master = master(&Capture::default());
        for (python, version) in pythons
            .iter()
            .filter(|(_, v)| v.starts_with("2.7") || v.starts_with("3.1"))
        {
            let ctx = master.local(local(python.to_str().unwrap())).await.unwrap();
            let mut pending = Vec::new();
            for i in 0..2000i64 {
                pending.push(
                    ctx.call_with("copy", "copy")
                        .args((i,))
                        .unwrap()
                        .start::<i64>()
                        .await
                        .unwrap(),
                );
            }
            for (i, p) in pending.into_iter().enumerate() {
                assert_eq!(p.result().await.unwrap(), i as i64, "{version}");
            }
            let fast = ctx.call_with("os", "getpid").start::<i64>().await.unwrap();
            let slow = start_sleep(&ctx, 2).await;
            let t0 = Instant::now();
            fast.result().await.unwrap();
            assert!(
                t0.elapsed() < Duration::from_millis(500),
                "{version}: a fast reply waited {:?} behind a slow call",
                t0.elapsed()
            );
            slow.result().await.unwrap();
            ctx.shutdown().await.unwrap();
        }
    });
}
