//! Contexts created through other contexts (SPAWN, ADD_ROUTE).

mod common;

use common::*;
use econtext::{ConnectOptions, Functions, Method};

fn functions() -> Functions {
    let mut f = Functions::default();
    f.register("math.add", |(a, b): (i64, i64)| a + b);
    f
}

#[test]
fn python_context_through_a_rust_intermediate() {
    run(async {
        let cap = Capture::default();
        let master = master(&cap);
        let mid = master.rust_context("mid", None, functions()).await.unwrap();
        let leaf = master
            .connect(
                ConnectOptions::new(Method::Local(local(&python3())))
                    .name("leaf")
                    .via(&mid),
            )
            .await
            .unwrap();
        assert_eq!(master.ancestors(leaf.id()).await, vec![mid.id(), 0]);
        let pid: i32 = leaf.call("os", "getpid", ()).await.unwrap();
        let ppid: u32 = leaf.call("os", "getppid", ()).await.unwrap();
        assert_eq!(
            ppid,
            std::process::id(),
            "the in-process intermediate spawned it"
        );
        // Its log lines come up through the intermediate, named.
        let _: i32 = leaf
            .call("os", "system", ("echo via the middle",))
            .await
            .unwrap();
        assert!(
            cap.wait_for(&["via the middle", "ctx=leaf"], 5.0).await,
            "{}",
            cap.text()
        );
        // Killing the leaf fails its pending call; the intermediate lives on.
        let pending = start_sleep(&leaf, 30).await;
        kill_and_expect_dead(pid, pending).await;
        assert_eq!(mid.call::<i64>("math", "add", (1, 2)).await.unwrap(), 3);
    });
}

#[test]
fn rust_contexts_nest_and_route() {
    run(async {
        let master = master(&Capture::default());
        let a = master.rust_context("a", None, functions()).await.unwrap();
        let b = master
            .rust_context("b", Some(&a), functions())
            .await
            .unwrap();
        let c = master
            .rust_context("c", Some(&b), functions())
            .await
            .unwrap();
        assert_eq!(master.ancestors(c.id()).await, vec![b.id(), a.id(), 0]);
        assert_eq!(c.call::<i64>("math", "add", (20, 22)).await.unwrap(), 42);
        // A Python leaf three hops down.
        let leaf = master
            .connect(ConnectOptions::new(Method::Local(local(&python3()))).via(&c))
            .await
            .unwrap();
        let v: String = leaf.call("platform", "python_version", ()).await.unwrap();
        assert!(!v.is_empty());
    });
}

#[test]
fn failed_spawn_through_an_intermediate_is_a_typed_error() {
    run(async {
        let master = master(&Capture::default());
        let mid = master.rust_context("mid", None, functions()).await.unwrap();
        let err = master
            .connect(ConnectOptions::new(Method::Local(local("/nonexistent/python"))).via(&mid))
            .await
            .unwrap_err();
        assert!(err.to_string().contains("/nonexistent/python"), "{err}");
        assert!(matches!(err, econtext::ConnectError::Via { .. }), "{err:?}");
        // The intermediate is unharmed.
        assert_eq!(mid.call::<i64>("math", "add", (1, 1)).await.unwrap(), 2);
    });
}
