//! The supervisor tree against real contexts: Python processes (direct,
//! through a Python intermediate, through an in-process Rust intermediate)
//! and in-process Rust contexts. Faults are injected from outside, as a
//! crash would happen: SIGKILL of a context's process.

mod common;

use std::time::{Duration, Instant};

use actix::prelude::*;
use common::*;
use econtext::supervise::{
    Backoff, ChildSpec, GiveUp, Restart, Scope, Strategy, Supervised, SupervisedState,
    SupervisorNode,
};
use econtext::{ConnectOptions, Context, ContextEvent, DeadReason, Functions, Master, Method};
use econtext_actors::router::GetStats;
use econtext_actors::supervision::EventStream;
use futures::StreamExt;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

fn opts(name: &str) -> ConnectOptions {
    ConnectOptions::new(Method::Local(local(&python3()))).name(name)
}

async fn py(m: &Master, name: &str, via: Option<&Context>) -> Context {
    let mut o = opts(name);
    if let Some(v) = via {
        o = o.via(v);
    }
    m.connect(o)
        .await
        .unwrap_or_else(|e| panic!("connect {name}: {e}"))
}

async fn pid_of(ctx: &Context) -> i32 {
    ctx.call("os", "getpid", ()).await.expect("getpid")
}

fn sigkill(pid: i32) {
    kill(Pid::from_raw(pid), Signal::SIGKILL).expect("SIGKILL");
}

/// Running: neither gone nor a zombie.
fn running(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|state| state != "Z" && state != "X"),
        Err(_) => false,
    }
}

/// Events from `s` until `done` says so, or panics after `secs`.
async fn collect_until(
    s: &mut EventStream,
    secs: f64,
    mut done: impl FnMut(&[ContextEvent]) -> bool,
) -> Vec<ContextEvent> {
    let end = tokio::time::Instant::now() + Duration::from_secs_f64(secs);
    let mut got = Vec::new();
    while !done(&got) {
        match tokio::time::timeout_at(end, s.next()).await {
            Ok(Some(e)) => got.push(e),
            Ok(None) => panic!("event stream ended; got {got:?}"),
            Err(_) => panic!("not within {secs} s; got {got:?}"),
        }
    }
    got
}

fn died(events: &[ContextEvent]) -> Vec<ContextId> {
    events
        .iter()
        .filter_map(|e| match e {
            ContextEvent::Died { id, .. } => Some(*id),
            _ => None,
        })
        .collect()
}

fn restarted_from(events: &[ContextEvent]) -> Vec<ContextId> {
    events
        .iter()
        .filter_map(|e| match e {
            ContextEvent::Restarted { old, .. } => Some(*old),
            _ => None,
        })
        .collect()
}

type ContextId = u16;

/// `name(child,child)` with children in ID order.
fn shape(n: &SupervisorNode) -> String {
    if n.children.is_empty() {
        return n.name.clone();
    }
    let mut kids = n.children.clone();
    kids.sort_by_key(|k| k.id);
    let inner: Vec<String> = kids.iter().map(shape).collect();
    format!("{}({})", n.name, inner.join(","))
}

/// The supervisor tree once it holds `count` contexts besides the master
/// (supervisors start from the router's Started events, asynchronously).
async fn tree_with(m: &Master, count: usize) -> SupervisorNode {
    for _ in 0..250 {
        let t = m.supervisor_tree().await;
        if t.ids().len() == count + 1 {
            return t;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!(
        "tree never had {count} contexts: {:?}",
        m.supervisor_tree().await
    );
}

async fn wait_state(w: &Supervised, secs: f64, want: impl Fn(&SupervisedState) -> bool) {
    let end = Instant::now() + Duration::from_secs_f64(secs);
    while !want(&w.state()) {
        assert!(Instant::now() < end, "state stayed {:?}", w.state());
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[test]
fn supervisor_tree_has_the_shape_of_the_context_tree_through_python_and_rust_intermediates() {
    run(async {
        let cap = Capture::default();
        let m = master(&cap);
        let py1 = py(&m, "py1", None).await;
        let py2 = py(&m, "py2", Some(&py1)).await;
        let rs1 = m
            .rust_context("rs1", None, Functions::default())
            .await
            .unwrap();
        let py3 = py(&m, "py3", Some(&rs1)).await;
        let rs2 = m
            .rust_context("rs2", Some(&rs1), Functions::default())
            .await
            .unwrap();
        let tree = tree_with(&m, 5).await;
        assert_eq!(shape(&tree), "master(py1(py2),rs1(py3,rs2))");
        // Every supervisor sits under the supervisor of the context the
        // master created it through.
        for c in [&py1, &py2, &rs1, &py3, &rs2] {
            let parent = m.ancestors(c.id()).await[0];
            let under = tree.find(parent).expect("parent supervisor");
            assert!(under.children.iter().any(|k| k.id == c.id()), "{c:?}");
        }
    });
}

#[test]
fn killing_an_intermediate_gives_died_for_it_and_each_descendant_children_first_within_1s() {
    run(async {
        let cap = Capture::default();
        let m = master(&cap);
        let a = py(&m, "a", None).await;
        let b = py(&m, "b", Some(&a)).await;
        let c = py(&m, "c", Some(&b)).await;
        tree_with(&m, 3).await;
        let mut events = m.events_under(&a).await;
        let pid = pid_of(&a).await;
        let killed = Instant::now();
        sigkill(pid);
        let got = collect_until(&mut events, 1.0, |e| died(e).len() == 3).await;
        let took = killed.elapsed();
        eprintln!("deaths {took:?} after SIGKILL: {got:?}");
        assert_eq!(died(&got), vec![c.id(), b.id(), a.id()], "children first");
        for e in &got {
            if let ContextEvent::Died { reason, .. } = e {
                assert!(!matches!(reason, DeadReason::Other(_)), "typed: {reason:?}");
            }
        }
        // The intermediate's own death carries how its process ended.
        assert!(got.iter().any(|e| matches!(e,
            ContextEvent::Died { id, reason: DeadReason::Signalled { signal: 9 } } if *id == a.id())));
        assert!(took < Duration::from_secs(1));
    });
}

#[test]
fn permanent_restarts_a_killed_context_and_a_call_through_the_held_handle_succeeds() {
    run(async {
        let cap = Capture::default();
        let m = master(&cap);
        let spec = ChildSpec::connect(opts("worker"))
            .restart(Restart::Permanent)
            .backoff(Backoff::new(
                Duration::from_millis(400),
                Duration::from_secs(1),
            ));
        let w = m.supervise(spec).await.unwrap();
        let mut events = m.events().await;
        let first = w.current();
        let old_pid: i32 = w.call("os", "getpid", ()).await.unwrap();
        sigkill(old_pid);
        // A call made while the restart is under way waits for it.
        wait_state(&w, 5.0, |s| matches!(s, SupervisedState::Restarting { .. })).await;
        let new_pid: i32 = w.call("os", "getpid", ()).await.unwrap();
        assert_ne!(new_pid, old_pid);
        assert_ne!(w.current().id(), first.id());
        let got = collect_until(&mut events, 5.0, |e| !restarted_from(e).is_empty()).await;
        assert_eq!(restarted_from(&got), vec![first.id()]);
        assert!(!running(old_pid));
    });
}

#[test]
fn transient_does_not_restart_after_a_clean_shutdown_but_does_after_a_crash() {
    run(async {
        let cap = Capture::default();
        let m = master(&cap);
        let spec = ChildSpec::connect(opts("transient"))
            .restart(Restart::Transient)
            .backoff(Backoff::none());
        let w = m.supervise(spec).await.unwrap();
        let mut events = m.events().await;
        let crashed = w.current();
        sigkill(w.call("os", "getpid", ()).await.unwrap());
        let got = collect_until(&mut events, 10.0, |e| !restarted_from(e).is_empty()).await;
        assert_eq!(restarted_from(&got), vec![crashed.id()], "{got:?}");
        let pid: i32 = w.call("os", "getpid", ()).await.unwrap();

        let clean = w.current();
        clean.shutdown().await.unwrap();
        let got = collect_until(&mut events, 10.0, |e| died(e).contains(&clean.id())).await;
        eprintln!("clean shutdown: {got:?}");
        wait_state(&w, 5.0, |s| matches!(s, SupervisedState::Stopped { .. })).await;
        // And it stays down: no restart follows.
        let later = tokio::time::timeout(Duration::from_secs(1), events.next()).await;
        assert!(later.is_err(), "nothing after a clean shutdown: {later:?}");
        assert!(!running(pid));
        assert!(w
            .call::<i32>("os", "getpid", ())
            .await
            .unwrap_err()
            .is_dead());
    });
}

#[test]
fn temporary_never_restarts() {
    run(async {
        let cap = Capture::default();
        let m = master(&cap);
        let spec = ChildSpec::connect(opts("temporary"))
            .restart(Restart::Temporary)
            .backoff(Backoff::none());
        let w = m.supervise(spec).await.unwrap();
        let mut events = m.events().await;
        let id = w.current().id();
        sigkill(w.call("os", "getpid", ()).await.unwrap());
        collect_until(&mut events, 5.0, |e| died(e).contains(&id)).await;
        let later = tokio::time::timeout(Duration::from_secs(1), events.next()).await;
        assert!(later.is_err(), "no restart: {later:?}");
        assert!(matches!(w.state(), SupervisedState::Stopped { .. }));
        assert!(w
            .call::<i32>("os", "getpid", ())
            .await
            .unwrap_err()
            .is_dead());
    });
}

#[test]
fn restart_limit_of_3_in_10s_gives_up_on_the_4th_crash_and_backoff_spaces_the_attempts() {
    run(async {
        let cap = Capture::default();
        let m = master(&cap);
        let jitter = 0.25;
        let backoff =
            Backoff::new(Duration::from_millis(150), Duration::from_secs(5)).jitter(jitter);
        let spec = ChildSpec::connect(opts("flaky"))
            .restart(Restart::Permanent)
            .limit(3, Duration::from_secs(10))
            .backoff(backoff);
        let w = m.supervise(spec).await.unwrap();
        let mut events = m.events().await;
        let mut gaps = Vec::new();
        for crash in 1..=3 {
            let id = w.current().id();
            sigkill(w.call("os", "getpid", ()).await.unwrap());
            let got = collect_until(&mut events, 10.0, |e| died(e).contains(&id)).await;
            let down = Instant::now();
            let _ = got;
            collect_until(&mut events, 10.0, |e| restarted_from(e).contains(&id)).await;
            gaps.push(down.elapsed());
            eprintln!(
                "crash {crash}: restarted {:?} after the death",
                down.elapsed()
            );
        }
        // 150 ms, 300 ms, 600 ms, each within the jitter (the connect
        // itself only adds to it).
        for (k, gap) in gaps.iter().enumerate() {
            let base = 0.15 * 2f64.powi(k as i32);
            let floor = Duration::from_secs_f64(base * (1.0 - jitter) - 0.02);
            assert!(*gap >= floor, "attempt {}: {gap:?} < {floor:?}", k + 1);
        }
        assert!(gaps[2] > gaps[0], "backoff grows: {gaps:?}");

        let id = w.current().id();
        sigkill(w.call("os", "getpid", ()).await.unwrap());
        let got = collect_until(&mut events, 10.0, |e| {
            e.iter().any(|e| matches!(e, ContextEvent::GaveUp { .. }))
        })
        .await;
        let want = GiveUp::RestartLimit {
            max_restarts: 3,
            window: Duration::from_secs(10),
        };
        assert!(
            got.contains(&ContextEvent::GaveUp { id, reason: want }),
            "{got:?}"
        );
        assert!(matches!(w.state(), SupervisedState::GaveUp { reason, .. } if reason == want));
        // Fail fast: no waiting for a restart that will not come.
        let t = Instant::now();
        assert!(w
            .call::<i32>("os", "getpid", ())
            .await
            .unwrap_err()
            .is_dead());
        assert!(t.elapsed() < Duration::from_secs(1));
    });
}

/// Three supervised siblings under the master's supervisor.
async fn siblings(m: &Master, strategy: Strategy) -> Vec<Supervised> {
    m.set_strategy(None, strategy).await;
    let mut out = Vec::new();
    for name in ["s1", "s2", "s3"] {
        let spec = ChildSpec::connect(opts(name)).backoff(Backoff::none());
        out.push(m.supervise(spec).await.unwrap());
    }
    out
}

#[test]
fn one_for_all_restarts_the_siblings() {
    run(async {
        let cap = Capture::default();
        let m = master(&cap);
        let s = siblings(&m, Strategy::OneForAll).await;
        let old: Vec<ContextId> = s.iter().map(|w| w.current().id()).collect();
        let mut events = m.events().await;
        sigkill(s[1].call("os", "getpid", ()).await.unwrap());
        let got = collect_until(&mut events, 15.0, |e| restarted_from(e).len() == 3).await;
        let mut restarted = restarted_from(&got);
        restarted.sort_unstable();
        assert_eq!(restarted, old);
        for w in &s {
            let _: i32 = w.call("os", "getpid", ()).await.unwrap();
            assert!(!old.contains(&w.current().id()));
        }
    });
}

#[test]
fn rest_for_one_restarts_the_ones_started_after_the_crashed_one() {
    run(async {
        let cap = Capture::default();
        let m = master(&cap);
        let s = siblings(&m, Strategy::RestForOne).await;
        let old: Vec<ContextId> = s.iter().map(|w| w.current().id()).collect();
        let first_pid: i32 = s[0].call("os", "getpid", ()).await.unwrap();
        let mut events = m.events().await;
        sigkill(s[1].call("os", "getpid", ()).await.unwrap());
        let got = collect_until(&mut events, 15.0, |e| restarted_from(e).len() == 2).await;
        assert_eq!(restarted_from(&got), vec![old[1], old[2]], "in start order");
        tokio::time::sleep(Duration::from_millis(500)).await;
        while let Ok(Some(e)) = tokio::time::timeout(Duration::ZERO, events.next()).await {
            assert!(
                !restarted_from(std::slice::from_ref(&e)).contains(&old[0]),
                "{e:?}"
            );
        }
        assert_eq!(s[0].current().id(), old[0]);
        assert_eq!(
            s[0].call::<i32>("os", "getpid", ()).await.unwrap(),
            first_pid
        );
        let _: i32 = s[2].call("os", "getpid", ()).await.unwrap();
    });
}

#[test]
fn kill_ends_the_process_and_its_subtree() {
    run(async {
        let cap = Capture::default();
        let m = master(&cap);
        let a = py(&m, "a", None).await;
        let b = py(&m, "b", Some(&a)).await;
        let c = py(&m, "c", Some(&b)).await;
        let rs = m
            .rust_context("rs", None, Functions::default())
            .await
            .unwrap();
        let d = py(&m, "d", Some(&rs)).await;
        let pids = [pid_of(&a).await, pid_of(&b).await, pid_of(&c).await];
        let d_pid = pid_of(&d).await;
        tree_with(&m, 5).await;
        let mut events = m.events().await;

        assert_eq!(m.kill(&a).await, DeadReason::Killed);
        let got = collect_until(&mut events, 5.0, |e| died(e).len() == 3).await;
        assert_eq!(died(&got), vec![c.id(), b.id(), a.id()], "children first");
        for p in pids {
            assert!(!running(p), "process {p} is gone");
        }
        assert!(a
            .call::<i32>("os", "getpid", ())
            .await
            .unwrap_err()
            .is_dead());
        assert!(c
            .call::<i32>("os", "getpid", ())
            .await
            .unwrap_err()
            .is_dead());

        // An in-process Rust intermediate and the process it started.
        m.kill(&rs).await;
        assert!(!running(d_pid), "process {d_pid} is gone");
        assert_eq!(shape(&tree_with(&m, 0).await), "master");
    });
}

/// A user's actor that counts the events it receives.
struct Counter(std::sync::Arc<std::sync::atomic::AtomicUsize>);

impl Actor for Counter {
    type Context = actix::Context<Self>;
}

impl Handler<ContextEvent> for Counter {
    type Result = ();

    fn handle(&mut self, _: ContextEvent, _: &mut Self::Context) {
        self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    }
}

#[test]
fn an_unsubscribed_monitor_receives_nothing_more() {
    run(async {
        let cap = Capture::default();
        let m = master(&cap);
        let x = py(&m, "x", None).await;
        tree_with(&m, 1).await;
        let seen = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let kept_seen = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let gone = Counter(seen.clone()).start();
        let kept = Counter(kept_seen.clone()).start();
        let sub = m.subscribe(Scope::Context(x.id()), gone.recipient()).await;
        m.subscribe(Scope::Context(x.id()), kept.recipient()).await;
        let dropped = m.monitor(&x).await;
        let mut stream = m.monitor(&x).await;
        m.unsubscribe(sub).await;
        drop(dropped);

        sigkill(pid_of(&x).await);
        collect_until(&mut stream, 5.0, |e| died(e) == vec![x.id()]).await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(kept_seen.load(std::sync::atomic::Ordering::SeqCst), 1);
        assert_eq!(seen.load(std::sync::atomic::Ordering::SeqCst), 0);
        // The two actors' subscriptions and the live stream remain.
        assert_eq!(m.supervision().stats().await.subscriptions, 2);
    });
}

#[test]
fn no_supervisor_watcher_or_handle_is_left_behind_after_1000_create_kill_cycles() {
    run(async {
        let cap = Capture::default();
        let m = master(&cap);
        let before = m.router().send(GetStats).await.unwrap();
        let started = Instant::now();
        for i in 0..1000 {
            let ctx = m
                .rust_context(&format!("r{i}"), None, Functions::default())
                .await
                .unwrap();
            let mon = m.monitor(&ctx).await;
            assert_eq!(m.kill(&ctx).await, DeadReason::Killed, "cycle {i}");
            drop(mon);
        }
        eprintln!("1000 in-process cycles in {:?}", started.elapsed());
        let mut pids = Vec::new();
        for i in 0..20 {
            let ctx = py(&m, &format!("p{i}"), None).await;
            pids.push(pid_of(&ctx).await);
            let mut mon = m.monitor(&ctx).await;
            m.kill(&ctx).await;
            collect_until(&mut mon, 5.0, |e| !died(e).is_empty()).await;
        }
        let mut stats = m.supervision().stats().await;
        for _ in 0..250 {
            if stats.supervisors == 1 && stats.subscriptions == 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
            stats = m.supervision().stats().await;
        }
        assert_eq!(stats.supervisors, 1, "only the master's: {stats:?}");
        assert_eq!(stats.contexts, 0, "{stats:?}");
        assert_eq!(stats.subscriptions, 0, "{stats:?}");
        assert_eq!(stats.pending_stoppers, 0, "{stats:?}");
        let after = m.router().send(GetStats).await.unwrap();
        assert_eq!(after.handles, before.handles, "router handles");
        assert!(after.streams.is_empty(), "streams: {:?}", after.streams);
        // Other tests run in this process too: look at this test's own.
        let (live, zombies) = children_of_me();
        let left: Vec<_> = pids
            .iter()
            .filter(|p| live.contains(p) || zombies.contains(p))
            .collect();
        assert!(left.is_empty(), "processes left: {left:?}");
        assert!(
            m.ancestors(1000).await.is_empty(),
            "the master forgot the dead"
        );
    });
}

#[test]
fn stop_and_wait_shuts_a_context_down_cleanly_and_returns_once_its_process_is_gone() {
    run(async {
        let cap = Capture::default();
        let m = master(&cap);
        let x = py(&m, "x", None).await;
        let pid = pid_of(&x).await;
        tree_with(&m, 1).await;
        let reason = tokio::time::timeout(Duration::from_secs(10), m.stop_and_wait(&x))
            .await
            .expect("stop_and_wait is bounded by the grace period");
        assert_eq!(reason, DeadReason::Exited { status: 0 });
        assert!(!running(pid));
        // A supervised child stopped through its handle stays stopped.
        let w = m
            .supervise(ChildSpec::connect(opts("w")).backoff(Backoff::none()))
            .await
            .unwrap();
        let wpid: i32 = w.call("os", "getpid", ()).await.unwrap();
        w.stop().await;
        assert!(!running(wpid));
        assert!(matches!(w.state(), SupervisedState::Stopped { .. }));
        assert!(w
            .call::<i32>("os", "getpid", ())
            .await
            .unwrap_err()
            .is_dead());
    });
}

/// A user's subscriber that handles nothing until `gate` opens (an
/// actor whose handler blocks it), then records what it gets.
struct StopsReading {
    gate: tokio::sync::watch::Receiver<bool>,
    got: std::sync::Arc<std::sync::Mutex<Vec<ContextEvent>>>,
}

impl Actor for StopsReading {
    type Context = actix::Context<Self>;
}

impl Handler<ContextEvent> for StopsReading {
    type Result = AtomicResponse<Self, ()>;

    fn handle(&mut self, e: ContextEvent, _: &mut Self::Context) -> Self::Result {
        let (mut gate, got) = (self.gate.clone(), self.got.clone());
        let wait = async move {
            let _ = gate.wait_for(|open| *open).await;
            got.lock().unwrap().push(e);
        };
        AtomicResponse::new(Box::pin(wait.into_actor(self)))
    }
}

#[test]
fn a_subscriber_that_stops_reading_cannot_grow_the_masters_memory() {
    use econtext::supervise::SubscribeOptions;
    const CAPACITY: usize = 8;
    const CYCLES: usize = 40;
    run(async {
        let cap = Capture::default();
        let m = master(&cap);
        let (open, gate) = tokio::sync::watch::channel(false);
        let got = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let stuck = StopsReading {
            gate,
            got: got.clone(),
        }
        .start();
        let opts = SubscribeOptions::default().capacity(CAPACITY);
        m.subscribe_with(Scope::Tree, stuck.recipient(), opts).await;
        let mut reference = m.events().await;

        for i in 0..CYCLES {
            let ctx = m
                .rust_context(&format!("r{i}"), None, Functions::default())
                .await
                .unwrap();
            // In the hub's turn after the Started: its supervisor exists.
            let mon = m.monitor(&ctx).await;
            assert_eq!(m.kill(&ctx).await, DeadReason::Killed, "cycle {i}");
            drop(mon);
        }
        let all = collect_until(&mut reference, 10.0, |e| died(e).len() == CYCLES).await;
        tokio::time::sleep(Duration::from_millis(100)).await;
        let stats = m.supervision().stats().await;
        assert!(
            stats.queued_events <= CAPACITY,
            "{} events for the stalled subscriber: {stats:?}",
            all.len()
        );
        assert!(
            cap.wait_for(&["event subscriber not keeping up"], 5.0)
                .await,
            "the overflow is said: {}",
            cap.text()
        );

        // It reads again: what was queued, then one Lagged with the rest.
        open.send(true).unwrap();
        let end = Instant::now() + Duration::from_secs(10);
        let seen = loop {
            let seen = got.lock().unwrap().clone();
            if matches!(seen.last(), Some(ContextEvent::Lagged { .. })) {
                break seen;
            }
            assert!(Instant::now() < end, "no Lagged within 10 s: {seen:?}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        let (last, delivered) = seen.split_last().unwrap();
        let ContextEvent::Lagged { missed } = *last else {
            unreachable!()
        };
        assert!(
            delivered.len() <= CAPACITY + 1,
            "queued plus the one in its handler: {delivered:?}"
        );
        assert!(!delivered
            .iter()
            .any(|e| matches!(e, ContextEvent::Lagged { .. })));
        assert_eq!(delivered, &all[..delivered.len()], "in order, a prefix");
        assert_eq!(
            delivered.len() as u64 + missed,
            all.len() as u64,
            "every event delivered or counted"
        );
    });
}

#[test]
fn kill_and_stop_right_after_connect_find_the_new_context() {
    run(async {
        let cap = Capture::default();
        let m = master(&cap);
        // No monitor or other round trip in between: the hub may not have
        // handled the context's Started yet when kill() asks for it.
        for i in 0..200 {
            let ctx = m
                .rust_context(&format!("k{i}"), None, Functions::default())
                .await
                .unwrap();
            assert_eq!(m.kill(&ctx).await, DeadReason::Killed, "kill, cycle {i}");
        }
        for i in 0..50 {
            let ctx = m
                .rust_context(&format!("s{i}"), None, Functions::default())
                .await
                .unwrap();
            let why = m.stop_and_wait(&ctx).await;
            assert_ne!(why, DeadReason::Unreachable, "stop, cycle {i}");
        }
        let ctx = py(&m, "p", None).await;
        assert_eq!(m.kill(&ctx).await, DeadReason::Killed, "a Python child");
    });
}
