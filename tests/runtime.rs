//! The runtime core as a user sees it: typed lifecycle events, bounded
//! queues, IDs, embedding.

mod common;

use std::time::{Duration, Instant};

use actix::prelude::*;
use common::{run, Capture};
use econtext::actors::router::{ContextStarted, GetStats, ShutdownGrace, Subscribe};
use econtext::actors::supervision::EVENT_QUEUE;
use econtext::agent::AgentOptions;
use econtext::testing::SimTree;
use econtext::wire::ContextId;
use econtext::{
    ConnectError, ConnectOptions, ContextEvent, DeadReason, Error, Functions, LocalOptions, Master,
    MasterOptions, Method,
};

struct Events(tokio::sync::mpsc::UnboundedSender<ContextEvent>);

impl Actor for Events {
    type Context = Context<Self>;
}

impl Handler<ContextEvent> for Events {
    type Result = ();

    fn handle(&mut self, e: ContextEvent, _: &mut Context<Self>) {
        let _ = self.0.send(e);
    }
}

async fn next(rx: &mut tokio::sync::mpsc::UnboundedReceiver<ContextEvent>) -> ContextEvent {
    tokio::time::timeout(Duration::from_secs(5), rx.recv())
        .await
        .expect("an event within 5 s")
        .expect("the subscriber lives")
}

#[test]
fn subscribers_see_starts_then_deaths_children_first_with_typed_reasons() {
    run(async {
        let mut t = SimTree::new(Capture::default().logger());
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        t.master()
            .send(Subscribe(Events(tx).start().recipient()))
            .await
            .unwrap();
        let a = t.spawn("a", 0, Functions::default()).await;
        let b = t.spawn("b", a, Functions::default()).await;
        assert_eq!(
            next(&mut rx).await,
            ContextEvent::Started {
                id: a,
                name: "a".into(),
                parent: 0
            }
        );
        assert_eq!(
            next(&mut rx).await,
            ContextEvent::Started {
                id: b,
                name: "b".into(),
                parent: a
            }
        );
        t.cut(a);
        for id in [b, a] {
            assert_eq!(
                next(&mut rx).await,
                ContextEvent::Died {
                    id,
                    reason: DeadReason::Closed
                }
            );
        }
        assert_eq!(t.context(b).dead().await, DeadReason::Closed);
    });
}

/// A subscriber that does not read: its actor handles nothing until `go`
/// fires, then passes every event on.
struct Stuck {
    go: Option<tokio::sync::oneshot::Receiver<()>>,
    to: tokio::sync::mpsc::UnboundedSender<ContextEvent>,
}

impl Actor for Stuck {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        let go = self.go.take().expect("started once");
        ctx.wait(
            async move {
                let _ = go.await;
            }
            .into_actor(self),
        );
    }
}

impl Handler<ContextEvent> for Stuck {
    type Result = ();

    fn handle(&mut self, e: ContextEvent, _: &mut Context<Self>) {
        let _ = self.to.send(e);
    }
}

#[test]
fn a_subscriber_that_never_reads_does_not_grow_the_router() {
    run(async {
        let t = SimTree::new(Capture::default().logger());
        let (go, wait) = tokio::sync::oneshot::channel();
        let (to, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let stuck = Stuck { go: Some(wait), to }.start();
        t.master().send(Subscribe(stuck.recipient())).await.unwrap();
        // Three queues' worth of events while it does not read.
        let n = 3 * EVENT_QUEUE;
        for i in 0..n {
            t.master()
                .send(ContextStarted {
                    id: 1 + (i % 60_000) as ContextId,
                    name: "x".into(),
                    parent: 0,
                })
                .await
                .unwrap();
        }
        let stats = t.master().send(GetStats).await.unwrap();
        assert!(
            stats.subscriber_backlog <= EVENT_QUEUE,
            "{} events held for it",
            stats.subscriber_backlog
        );
        // The one in its mailbox (handed over, not handled) is neither.
        let held = stats.subscriber_backlog as u64 + stats.subscriber_missed;
        assert!(
            (n as u64 - 1..=n as u64).contains(&held),
            "{held} held or counted of {n}"
        );
        // Once it reads: what was queued, then one Lagged with the count.
        go.send(()).unwrap();
        let (mut started, mut missed, mut lagged) = (0u64, 0u64, 0);
        while started + missed < n as u64 {
            match next(&mut rx).await {
                ContextEvent::Started { .. } => started += 1,
                ContextEvent::Lagged { missed: m } => {
                    missed += m;
                    lagged += 1;
                }
                e => panic!("unexpected {e:?}"),
            }
        }
        assert_eq!(
            started + missed,
            n as u64,
            "every event delivered or counted"
        );
        assert_eq!(lagged, 1, "one gap, one Lagged");
        assert!(started <= EVENT_QUEUE as u64 + 1, "{started} delivered");
    });
}

// ---- a child that stops reading ----

/// A tree with a well-behaved Rust child "good" and a raw child that
/// never reads; the master's link to the raw child is filled past its
/// mark by [`fill_link`].
async fn tree_with_a_stalled_child(
    stall_after: Duration,
) -> (SimTree, ContextId, tokio::io::DuplexStream) {
    let (t, raw, end) = tree_with_a_raw_child(stall_after).await;
    fill_link(&t, raw).await;
    (t, raw, end)
}

/// A tree with a well-behaved Rust child "good" and a raw child whose
/// end of the link the test holds.
async fn tree_with_a_raw_child(
    stall_after: Duration,
) -> (SimTree, ContextId, tokio::io::DuplexStream) {
    let mut t = SimTree::with_stall_after(Capture::default().logger(), stall_after);
    let mut f = Functions::default();
    f.register("math.add", |(a, b): (i64, i64)| a + b);
    t.spawn("good", 0, f).await;
    let (raw, end) = t.attach_raw("stalled", 0).await;
    // Let the attach land before traffic.
    let _ = t.master().send(GetStats).await;
    (t, raw, end)
}

/// Fills the master's link to `raw` to its mark with 12 one-megabyte
/// frames sent in the background (eight are queued, four wait for room),
/// and one to make up for what was queued before them: then no frame at
/// all has room.
async fn fill_link(t: &SimTree, raw: ContextId) {
    for _ in 0..12 {
        let ctx = t.context(raw);
        actix::spawn(async move {
            // 1 MiB on the link with msgpack's 5 bytes and the header.
            let data = serde_bytes::ByteBuf::from(vec![0u8; (1 << 20) - 41]);
            let _ = ctx.send(4242, &data).await;
        });
    }
    // Until no more fit: the mark is 8 MiB, so the rest wait.
    let mark = 8 << 20;
    let deadline = Instant::now() + Duration::from_secs(5);
    let queued = loop {
        let s = t.master().send(GetStats).await.unwrap();
        let queued = s.queued_bytes.get(&raw).copied().unwrap_or(0);
        if queued + (1 << 20) > mark {
            break queued;
        }
        assert!(Instant::now() < deadline, "the link never filled: {s:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    if queued < mark {
        // The header (36 bytes) and msgpack's bin header (2, 3 or 5).
        let pad = mark - queued - econtext::wire::HEADER_LEN;
        let n = [5, 3, 2]
            .into_iter()
            .map(|h| pad - h)
            .find(|&n| match n {
                0..=255 => pad - n == 2,
                256..=65535 => pad - n == 3,
                _ => pad - n == 5,
            })
            .expect("a pad frame fits");
        let data = serde_bytes::ByteBuf::from(vec![0u8; n]);
        t.context(raw).send(4242, &data).await.unwrap();
    }
    let s = t.master().send(GetStats).await.unwrap();
    assert_eq!(s.queued_bytes[&raw], mark, "{s:?}");
}

#[test]
fn a_child_that_stops_reading_cannot_delay_its_siblings() {
    run(async {
        let (t, _raw, _end) = tree_with_a_stalled_child(Duration::from_secs(60)).await;
        let good = t.context(t.id("good"));
        let mut took = Vec::with_capacity(200);
        for i in 0..200 {
            let t0 = Instant::now();
            assert_eq!(
                good.call::<i64>("math", "add", (i, 1)).await.unwrap(),
                i + 1
            );
            took.push(t0.elapsed());
        }
        took.sort();
        let (median, worst) = (took[took.len() / 2], took[took.len() - 1]);
        eprintln!("sibling calls beside a stalled link: median {median:?}, worst {worst:?}");
        // A call queued behind the stalled link would wait until the
        // link's progress bound (60 s here) closes it; the median shows
        // calls are not slowed, the worst that none was held up. Both
        // bounds are far from what a 2-core CI machine under load does
        // to a local call (a scheduling hiccup there reached 250 ms);
        // the milliseconds themselves are measured by the benchmarks.
        assert!(
            median < Duration::from_millis(50),
            "median call took {median:?}"
        );
        assert!(worst < Duration::from_secs(2), "worst call took {worst:?}");
    });
}

#[test]
fn a_timeout_to_a_stalled_child_covers_the_wait_for_link_room() {
    run(async {
        let (t, raw, _end) = tree_with_a_stalled_child(Duration::from_secs(60)).await;
        let t0 = Instant::now();
        let r = t
            .context(raw)
            .call_with("math", "add")
            .args((1, 2))
            .unwrap()
            .timeout(Duration::from_secs(1))
            .returning::<i64>()
            .await;
        assert!(matches!(r, Err(Error::Timeout { .. })), "{r:?}");
        assert!(
            t0.elapsed() < Duration::from_millis(1500),
            "{:?}",
            t0.elapsed()
        );
        // The timed-out call left no handle behind, and its frame, which
        // never got room, was abandoned rather than queued late.
        tokio::time::sleep(Duration::from_millis(50)).await;
        let s = t.master().send(GetStats).await.unwrap();
        assert_eq!(s.handles, 0, "{s:?}");
        assert_eq!(s.queued_bytes[&raw], 8 << 20, "{s:?}");
    });
}

/// What the master wrote to a raw child, as far as these tests look: each
/// CALL_FUNCTION's first argument, and SHUTDOWN, in wire order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Wrote {
    Call(i64),
    Shutdown,
}

/// Reads the raw end of a link until `enough` is true of what it read.
async fn read_raw(
    end: &mut tokio::io::DuplexStream,
    enough: impl Fn(&[Wrote]) -> bool,
) -> Vec<Wrote> {
    use econtext::wire::{handles, is_batch, payload, split_length, Header, HEADER_LEN};
    use serde::de::IgnoredAny;
    use tokio::io::AsyncReadExt;
    let mut buf = Vec::new();
    let mut wrote = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut chunk = vec![0u8; 1 << 20];
    while !enough(&wrote) {
        assert!(Instant::now() < deadline, "read so far: {wrote:?}");
        let n = tokio::time::timeout(Duration::from_secs(5), end.read(&mut chunk))
            .await
            .expect("the link drains")
            .unwrap();
        assert!(n > 0, "the link stayed open; read so far: {wrote:?}");
        buf.extend_from_slice(&chunk[..n]);
        while buf.len() >= HEADER_LEN {
            let fields: [u8; 16] = buf[20..36].try_into().unwrap();
            let (h, raw) = Header::parse_fields(&fields);
            let (len, _) = split_length(raw);
            let total = HEADER_LEN + len as usize;
            if buf.len() < total {
                break;
            }
            // Small frames written together come as one batch frame: its
            // data is each frame's 16 fields and data.
            let mut frames = vec![(h, HEADER_LEN..total)];
            if is_batch(raw) {
                frames.clear();
                let mut pos = HEADER_LEN;
                while pos < total {
                    let f: [u8; 16] = buf[pos..pos + 16].try_into().unwrap();
                    let (h, n) = Header::parse_fields(&f);
                    frames.push((h, pos + 16..pos + 16 + n as usize));
                    pos += 16 + n as usize;
                }
            }
            for (h, range) in frames {
                match h.handle {
                    handles::CALL_FUNCTION => {
                        let data = &buf[range];
                        let (_, _, _, args, _): (
                            String,
                            IgnoredAny,
                            String,
                            (i64, i64),
                            IgnoredAny,
                        ) = payload::decode(data).unwrap();
                        wrote.push(Wrote::Call(args.0));
                    }
                    handles::SHUTDOWN => wrote.push(Wrote::Shutdown),
                    _ => {}
                }
            }
            buf.drain(..total);
        }
    }
    wrote
}

fn calls(range: std::ops::Range<i64>) -> Vec<Wrote> {
    range.map(Wrote::Call).collect()
}

#[test]
fn calls_made_while_a_link_is_full_go_out_in_the_order_they_were_made() {
    run(async {
        let (t, raw, mut end) = tree_with_a_stalled_child(Duration::from_secs(60)).await;
        // One task makes 20 calls one after another while the link is
        // full: the first ones wait for room in `start`, the later ones
        // (once the link drains) take the fast path. None may overtake
        // another.
        let ctx = t.context(raw);
        let caller = actix::spawn(async move {
            let mut pending = Vec::new();
            for i in 0..20i64 {
                let call = ctx.call_with("math", "add").args((i, 0)).unwrap();
                pending.push(call.start::<i64>().await.unwrap());
            }
            pending
        });
        let wrote = read_raw(&mut end, |w| w.len() >= 20).await;
        assert_eq!(wrote, calls(0..20));
        drop(caller.await.unwrap());
    });
}

#[test]
fn shutdown_never_overtakes_a_started_call() {
    run(async {
        // A call started while its link is at the mark (it waits for
        // room in `start`; the reverted fast path returned at once and
        // left the frame waiting in the router, where the SHUTDOWN sent
        // next went past it), then SHUTDOWN at once.
        let (mut t, raw, mut end) = tree_with_a_raw_child(Duration::from_secs(60)).await;
        let ctx = t.context(raw);
        let call = |i: i64| ctx.call_with("math", "add").args((i, 0)).unwrap();
        // This one learns the link's room: the next try the fast path.
        let first = call(-1).start::<i64>().await.unwrap();
        fill_link(&t, raw).await;
        let (c, started) = (ctx.clone(), call(0));
        let caller = actix::spawn(async move {
            let pending = started.start::<i64>().await.unwrap();
            // The raw child never goes: cut off after the grace period.
            let _ = c.shutdown().await;
            pending
        });
        let wrote = read_raw(&mut end, |w| w.contains(&Wrote::Shutdown)).await;
        assert_eq!(wrote, [Wrote::Call(-1), Wrote::Call(0), Wrote::Shutdown]);
        // 50 calls by the fast path (`start` returns before the router
        // has queued them), then SHUTDOWN: after every one.
        let (raw, mut end) = t.attach_raw("fast", 0).await;
        let ctx = t.context(raw);
        let mut pending = Vec::new();
        for i in 0..50i64 {
            let call = ctx.call_with("math", "add").args((i, 0)).unwrap();
            pending.push(call.start::<i64>().await.unwrap());
        }
        let c = ctx.clone();
        let shut = actix::spawn(async move { c.shutdown().await });
        let wrote = read_raw(&mut end, |w| w.contains(&Wrote::Shutdown)).await;
        let mut expected = calls(0..50);
        expected.push(Wrote::Shutdown);
        assert_eq!(wrote, expected);
        let s = t.master().send(GetStats).await.unwrap();
        assert!(s.calls_fast >= 49, "the fast path was taken: {s:?}");
        let bound = Duration::from_secs(10);
        let started = tokio::time::timeout(bound, caller).await.expect("bounded");
        let shut = tokio::time::timeout(bound, shut).await.expect("bounded");
        shut.unwrap().unwrap();
        drop((first, started, pending));
    });
}

#[test]
fn a_dropped_pending_call_is_not_silently_cancelled() {
    run(async {
        let (t, raw, mut end) = tree_with_a_raw_child(Duration::from_secs(60)).await;
        // Each PendingCall is dropped as soon as `start` returns: the
        // first one's after the router's turn (it learns the link's
        // room), the next nine's before the router has even seen them.
        let ctx = t.context(raw);
        for i in 0..10i64 {
            let call = ctx.call_with("math", "add").args((i, 0)).unwrap();
            drop(call.start::<i64>().await.unwrap());
        }
        // Then ten while the link is at its mark (where the reverted fast
        // path left a frame waiting in the router, and dropped it there
        // once its caller had gone).
        fill_link(&t, raw).await;
        let caller = actix::spawn(async move {
            for i in 10..20i64 {
                let call = ctx.call_with("math", "add").args((i, 0)).unwrap();
                drop(call.start::<i64>().await.unwrap());
            }
        });
        // Every started call is made; only its result is discarded.
        assert_eq!(read_raw(&mut end, |w| w.len() >= 20).await, calls(0..20));
        caller.await.unwrap();
        let s = t.master().send(GetStats).await.unwrap();
        assert!(s.calls_fast >= 9, "{s:?}");
        assert_eq!(s.handles, 0, "every dropped call's handle is freed: {s:?}");
    });
}

#[test]
fn a_call_cancelled_during_the_routers_turn_leaves_no_handle() {
    run(async {
        let (t, raw, _end) = tree_with_a_raw_child(Duration::from_secs(60)).await;
        // Each call's future is polled once (its request is in the
        // Router's mailbox: a fresh Context knows no link room, so it
        // takes the Router's turn), the Router answers it (GetStats
        // comes after), and then the future is dropped before it reads
        // that answer, which carries the reply handle its guard needed.
        let mut started = Vec::new();
        for i in 0..20i64 {
            let ctx = t.context(raw);
            let call = ctx.call_with("math", "add").args((i, 0)).unwrap();
            let mut start = Box::pin(call.start::<i64>());
            assert!(futures::poll!(&mut start).is_pending());
            started.push(start);
        }
        let s = t.master().send(GetStats).await.unwrap();
        assert_eq!(s.handles, 20, "the Router registered each: {s:?}");
        drop(started);
        // The tick (every 250 ms) frees the handles nobody waits on.
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let s = t.master().send(GetStats).await.unwrap();
            if s.handles == 0 {
                break;
            }
            assert!(Instant::now() < deadline, "handles left behind: {s:?}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    });
}

#[test]
fn timed_out_callers_frames_do_not_pile_up_behind_a_stalled_link() {
    run(async {
        let (t, raw, _end) = tree_with_a_stalled_child(Duration::from_secs(60)).await;
        let ctx = t.context(raw);
        // 200 callers, five calls each with 64 KiB of arguments and a
        // 100 ms deadline: 64 MiB of calls the stalled link never has
        // room for. A caller that gives up takes its frame with it.
        let mut callers = Vec::new();
        for _ in 0..200 {
            let ctx = ctx.clone();
            callers.push(actix::spawn(async move {
                let arg = serde_bytes::ByteBuf::from(vec![0u8; 64 << 10]);
                for _ in 0..5 {
                    let r = ctx
                        .call_with("math", "add")
                        .args((&arg, 0))
                        .unwrap()
                        .timeout(Duration::from_millis(100))
                        .returning::<i64>()
                        .await;
                    assert!(matches!(r, Err(Error::Timeout { .. })), "{r:?}");
                }
            }));
        }
        // While they wait: at most one frame per live caller (and the
        // helper's four 1 MiB senders) waits for room, never more.
        let mut most = 0;
        while !callers.iter().all(|c| c.is_finished()) {
            let s = t.master().send(GetStats).await.unwrap();
            most = most.max(s.waiting_frames);
            assert!(s.waiting_frames <= 200 + 4, "{s:?}");
            assert_eq!(s.queued_bytes[&raw], 8 << 20, "{s:?}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        for c in callers {
            c.await.unwrap();
        }
        assert!(most > 4, "the callers' frames were seen waiting: {most}");
        let s = t.master().send(GetStats).await.unwrap();
        assert!(s.waiting_frames <= 4, "{s:?}");
        assert!(s.waiting_bytes <= 4 << 20, "{s:?}");
        assert_eq!(s.queued_bytes[&raw], 8 << 20, "nothing queued late: {s:?}");
        assert_eq!(s.calls_fast, 0, "no call was admitted past the mark: {s:?}");
        assert_eq!(s.handles, 0, "{s:?}");
    });
}

#[test]
fn a_call_past_its_links_cap_is_never_queued_and_fails_typed() {
    run(async {
        let (t, raw, _end) = tree_with_a_stalled_child(Duration::from_secs(60)).await;
        // The first call learns the link's room, so the next ones try
        // the fast path: the link is at its mark, so they wait for room
        // in `start` instead, and fail with the typed Timeout at their
        // deadline, their frames never queued.
        let ctx = t.context(raw);
        for _ in 0..3 {
            let r = ctx
                .call_with("math", "add")
                .args((1, 2))
                .unwrap()
                .timeout(Duration::from_millis(200))
                .start::<i64>()
                .await;
            assert!(matches!(r, Err(Error::Timeout { .. })), "{:?}", r.err());
        }
        let s = t.master().send(GetStats).await.unwrap();
        assert_eq!(s.queued_bytes[&raw], 8 << 20, "{s:?}");
        assert_eq!(s.calls_fast, 0, "{s:?}");
        assert_eq!(s.handles, 0, "{s:?}");
    });
}

/// VmRSS of process `pid` in KiB (/proc/PID/status).
fn vm_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS in /proc/PID/status")
}

#[test]
fn buffers_kept_after_a_large_echo_are_freed_once_idle() {
    // A 64 MiB echo leaves a read buffer (spare.rs) and an encode buffer
    // (bufpool.rs) in the master and the read buffer (_SPARE) in the
    // Python child, for the next large frame; once idle (KEEP_IDLE, 2 s)
    // they are freed. A resource bound: the waits are bounded, not timed.
    run(async {
        let master = Master::new(MasterOptions::default().log(Capture::default().logger()));
        let ctx = master
            .local(LocalOptions::new(common::python3()))
            .await
            .unwrap();
        let pid: u32 = ctx.call("os", "getpid", ()).await.unwrap();
        let (child_idle, master_idle) = (vm_rss_kib(pid), vm_rss_kib(std::process::id()));
        let blob = serde_bytes::ByteBuf::from(vec![7u8; 64 << 20]);
        for _ in 0..2 {
            let back = ctx
                .call_with("builtins", "bytes")
                .args((&blob,))
                .unwrap()
                .returning_bytes()
                .await
                .unwrap();
            assert_eq!(back.len(), 64 << 20);
        }
        let kept = || async {
            master
                .router()
                .send(GetStats)
                .await
                .unwrap()
                .kept_buffer_bytes
        };
        let (child_busy, master_busy) = (vm_rss_kib(pid), vm_rss_kib(std::process::id()));
        assert!(kept().await >= 64 << 20, "kept for the next large frame");
        // Other tests of this binary may keep buffers of a few MiB.
        let end = Instant::now() + Duration::from_secs(30);
        while (kept().await >= 64 << 20 || vm_rss_kib(pid) > child_idle + 24 * 1024)
            && Instant::now() < end
        {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let (child_after, master_after) = (vm_rss_kib(pid), vm_rss_kib(std::process::id()));
        eprintln!(
            "VmRSS KiB: child {child_idle} idle, {child_busy} after the echoes, {child_after} once idle; \
             master (this test process) {master_idle}, {master_busy}, {master_after}"
        );
        assert!(kept().await < 64 << 20, "the master's buffers were freed");
        assert!(
            child_after <= child_idle + 24 * 1024,
            "the child's were freed: {child_idle} KiB idle, {child_busy} busy, {child_after} now"
        );
        master.shutdown().await;
    });
}

#[test]
fn a_bytes_result_comes_back_whole_without_a_copy_and_anything_else_is_refused() {
    run(async {
        let mut t = SimTree::new(Capture::default().logger());
        let mut f = Functions::default();
        f.register("blob.make", |(n,): (usize,)| {
            serde_bytes::ByteBuf::from((0..n).map(|i| i as u8).collect::<Vec<u8>>())
        });
        f.register("blob.number", |(): ()| 5i64);
        let a = t.spawn("a", 0, f).await;
        let ctx = t.context(a);
        for n in [0usize, 31, 70_000, 3 << 20] {
            let got = ctx
                .call_with("blob", "make")
                .args((n,))
                .unwrap()
                .returning_bytes()
                .await
                .unwrap();
            assert_eq!(got.len(), n);
            assert!(got.iter().enumerate().all(|(i, &b)| b == i as u8));
        }
        let r = ctx.call_with("blob", "number").returning_bytes().await;
        assert!(matches!(r, Err(Error::Payload(_))), "{r:?}");
    });
}

#[test]
fn shutdown_of_a_stalled_child_returns_within_the_grace_period_and_it_is_declared_dead() {
    run(async {
        // Stalls are detected after 1 s, inside the 3 s grace period.
        let (t, raw, _end) = tree_with_a_stalled_child(Duration::from_secs(1)).await;
        let ctx = t.context(raw);
        let t0 = Instant::now();
        tokio::time::timeout(Duration::from_secs(10), ctx.shutdown())
            .await
            .expect("shutdown() is bounded")
            .unwrap();
        let grace = t.master().send(ShutdownGrace).await.unwrap();
        assert!(
            t0.elapsed() < grace + Duration::from_millis(500),
            "{:?}",
            t0.elapsed()
        );
        // shutdown() waited for the death: it is already known.
        let why = tokio::time::timeout(Duration::from_millis(100), ctx.dead())
            .await
            .expect("dead when shutdown() returned");
        assert_eq!(why, DeadReason::Stalled);
        // The senders that were waiting for room heard about it too.
        let s = t.master().send(GetStats).await.unwrap();
        assert!(!s.streams.contains(&raw), "{s:?}");
    });
}

#[test]
fn shutdown_waits_for_the_context_to_be_gone() {
    run(async {
        let mut t = SimTree::new(Capture::default().logger());
        let id = t.spawn("leaf", 0, Functions::default()).await;
        let ctx = t.context(id);
        tokio::time::timeout(Duration::from_secs(10), ctx.shutdown())
            .await
            .expect("shutdown() is bounded")
            .unwrap();
        let why = tokio::time::timeout(Duration::from_millis(100), ctx.dead())
            .await
            .expect("dead when shutdown() returned");
        assert!(
            matches!(why, DeadReason::Disconnected | DeadReason::ShutDown),
            "{why:?}"
        );
        let s = t.master().send(GetStats).await.unwrap();
        assert!(s.streams.is_empty(), "{s:?}");
    });
}

#[test]
fn shutdown_of_a_context_that_ignores_it_cuts_it_off_at_the_grace_period() {
    run(async {
        let mut t = SimTree::new(Capture::default().logger());
        // A raw child reads nothing and answers nothing, but its link has
        // room: only the grace period ends it.
        let (raw, _end) = t.attach_raw("deaf", 0).await;
        let _ = t.master().send(GetStats).await;
        let ctx = t.context(raw);
        let grace = t.master().send(ShutdownGrace).await.unwrap();
        let t0 = Instant::now();
        tokio::time::timeout(grace * 3, ctx.shutdown())
            .await
            .expect("shutdown() is bounded")
            .unwrap();
        assert!(t0.elapsed() >= grace, "{:?}", t0.elapsed());
        let why = tokio::time::timeout(Duration::from_secs(1), ctx.dead())
            .await
            .expect("cut off when shutdown() returned");
        assert_eq!(why, DeadReason::Killed);
    });
}

// ---- IDs ----

#[test]
fn failed_connects_exhaust_the_id_space_without_handing_out_zero_or_a_live_id() {
    run(async {
        // A quarantine longer than any run of this test: no ID comes back
        // early.
        let master = Master::new(
            MasterOptions::default()
                .log(Capture::default().logger())
                .id_quarantine(Duration::from_secs(3600)),
        );
        let (tx, mut died) = tokio::sync::mpsc::unbounded_channel();
        master
            .router()
            .send(Subscribe(Events(tx).start().recipient()))
            .await
            .unwrap();
        let mut f = Functions::default();
        f.register("math.add", |(a, b): (i64, i64)| a + b);
        let keeper = master.rust_context("keeper", None, f).await.unwrap();
        // A few real failed connects (a program that does not exist) ...
        for _ in 0..20 {
            let o = LocalOptions::new("/nonexistent/python");
            let e = master.local(o).await.unwrap_err();
            assert!(matches!(e, ConnectError::Spawn { .. }), "{e:?}");
        }
        // ... then the rest of the 16-bit space through the same public
        // connect path, with a connect that fails before any process runs
        // (an agent binary that does not exist): each one takes an ID from
        // the master's allocator and gives it back to the quarantine.
        let failing = || {
            ConnectOptions::new(Method::Local(LocalOptions::default()))
                .agent(AgentOptions::default().binary("/nonexistent/econtext-agent"))
        };
        let mut failed = 20usize;
        let exhausted = loop {
            match master.connect(failing()).await.unwrap_err() {
                ConnectError::Spawn { .. } => failed += 1,
                ConnectError::IdsExhausted(m) => break m,
                e => panic!("{e:?}"),
            }
            if failed % 8192 == 0 {
                // The tree keeps working while its ID space fills.
                assert_eq!(keeper.call::<i64>("math", "add", (2, 3)).await.unwrap(), 5);
            }
            assert!(failed < 70_000, "the allocator never ran out");
        };
        assert!(exhausted.contains("16-bit ID space is full"), "{exhausted}");
        // Every failed connect had an ID of its own: never 0, never the
        // keeper's, never one handed out twice (all are in quarantine).
        let mut ids = std::collections::HashSet::new();
        while let Ok(e) = died.try_recv() {
            if let ContextEvent::Died { id, reason } = e {
                assert_eq!(reason, DeadReason::ConnectFailed);
                assert_ne!(id, 0, "the master's ID");
                assert_ne!(id, keeper.id(), "a live ID");
                assert!(ids.insert(id), "{id} handed out twice");
            }
        }
        assert_eq!(ids.len(), failed, "one death per failed connect");
        assert_eq!(failed, usize::from(u16::MAX) - 1, "all but the keeper's");
        // Full: any connect says so clearly, and runs nothing.
        let e = master.local(LocalOptions::default()).await.unwrap_err();
        assert!(matches!(&e, ConnectError::IdsExhausted(_)), "{e}");
        let e = master
            .rust_context("late", None, Functions::default())
            .await;
        assert!(matches!(e, Err(ConnectError::IdsExhausted(_))), "{e:?}");
        // The tree still works, and remembers a bounded number of the dead.
        assert_eq!(keeper.call::<i64>("math", "add", (2, 3)).await.unwrap(), 5);
        let s = master.router().send(GetStats).await.unwrap();
        assert_eq!(s.core.live_ids, 1, "only the keeper is alive: {:?}", s.core);
        assert!(s.core.dead_remembered <= 4096, "{:?}", s.core);
    });
}

// ---- embedding ----

#[test]
fn a_master_handle_serves_calls_from_a_multi_threaded_tokio_runtime() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let master = econtext::MasterHandle::start(
            MasterOptions::default().log(Capture::default().logger()),
        );
        let py = master
            .local(LocalOptions::new(common::python3()))
            .await
            .unwrap();
        let rust = master
            .run(|m| async move {
                let mut f = Functions::default();
                f.register("math.add", |(a, b): (i64, i64)| a + b);
                m.rust_context("adder", None, f).await
            })
            .await
            .unwrap()
            .unwrap();
        let mut tasks = Vec::new();
        for i in 0..8i64 {
            let (py, rust) = (py.clone(), rust.clone());
            tasks.push(tokio::spawn(async move {
                let pid: u32 = py.call("os", "getpid", ()).await.unwrap();
                let sum: i64 = rust.call("math", "add", (i, 1)).await.unwrap();
                (pid, sum)
            }));
        }
        for (i, t) in tasks.into_iter().enumerate() {
            let (pid, sum) = t.await.unwrap();
            assert!(pid > 0);
            assert_eq!(sum, i as i64 + 1);
        }
        let t0 = Instant::now();
        tokio::time::timeout(Duration::from_secs(10), master.shutdown())
            .await
            .expect("shutdown() returns when every context is gone");
        assert!(t0.elapsed() < Duration::from_secs(5), "{:?}", t0.elapsed());
        let r = py.call::<u32>("os", "getpid", ()).await;
        assert!(r.is_err(), "{r:?}");
    });
}

#[test]
fn connect_shutdown_cycles_leave_the_masters_maps_and_fds_flat() {
    // Alone: it counts this process's fds and resident memory.
    common::run_alone(async {
        let master = Master::new(MasterOptions::default().log(Capture::default().logger()));
        let cycle = || async {
            let mut f = Functions::default();
            f.register("math.add", |(a, b): (i64, i64)| a + b);
            let ctx = master.rust_context("cycle", None, f).await.unwrap();
            let _: i64 = ctx.call("math", "add", (1, 2)).await.unwrap();
            ctx.shutdown().await.unwrap();
            tokio::time::timeout(Duration::from_secs(5), ctx.dead())
                .await
                .expect("gone within 5 s");
        };
        for _ in 0..50 {
            cycle().await;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
        let before = master.router().send(GetStats).await.unwrap().core;
        let sup_before = master.supervision().stats().await;
        let fds_before = common::open_fds();
        let rss_before = rss_kib();
        for _ in 0..200 {
            cycle().await;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
        let after = master.router().send(GetStats).await.unwrap().core;
        assert_eq!(
            (
                after.handles,
                after.peers,
                after.routes_known,
                after.watchers,
                after.live_ids
            ),
            (
                before.handles,
                before.peers,
                before.routes_known,
                before.watchers,
                before.live_ids
            ),
            "{before:?} -> {after:?}"
        );
        assert!(after.dead_remembered <= 4096);
        assert!(common::open_fds() <= fds_before + 2, "fds grew");
        // The supervision layer forgot every cycle's context too.
        let sup_after = master.supervision().stats().await;
        assert_eq!(sup_after, sup_before, "supervision");
        // Memory: about 0.2 MiB of growth was measured here (allocator
        // slack); a leak of 20 KiB per cycle would pass 4 MiB.
        let grew = rss_kib().saturating_sub(rss_before);
        assert!(grew < 4 * 1024, "RSS grew by {grew} KiB over 200 cycles");
        master.shutdown().await;
    });
}

/// This process's resident set, in KiB.
fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS in /proc/self/status")
}

#[test]
fn a_call_larger_than_the_message_limit_fails_alone() {
    run(async {
        let mut t = SimTree::new(Capture::default().logger());
        let mut f = Functions::default();
        f.register("math.add", |(a, b): (i64, i64)| a + b);
        f.register("blob.len", |(b,): (serde_bytes::ByteBuf,)| b.len() as u64);
        let good = t.spawn("good", 0, f).await;
        let ctx = t.context(good);
        // One byte over the 128 MiB every link of the tree accepts.
        let big = serde_bytes::ByteBuf::from(vec![0u8; econtext::wire::DEFAULT_MAX_MESSAGE_SIZE]);
        let r = ctx
            .call_with("blob", "len")
            .args((&big,))
            .unwrap()
            .timeout(Duration::from_secs(30))
            .returning::<u64>()
            .await;
        assert!(
            matches!(
                r,
                Err(Error::Payload(
                    econtext::wire::WireError::TooLargeToSend { .. }
                ))
            ),
            "{r:?}"
        );
        // The link, and every other caller on it, is unaffected.
        let sum: i64 = ctx
            .call_with("math", "add")
            .args((2, 3))
            .unwrap()
            .returning()
            .await
            .unwrap();
        assert_eq!(sum, 5);
    });
}

/// utime + stime of a thread or process (`/proc/.../stat`), in clock
/// ticks (100 a second).
fn cpu_ticks(stat_path: &str) -> u64 {
    let stat = std::fs::read_to_string(stat_path).expect("/proc");
    let f: Vec<u64> = stat
        .rsplit_once(')')
        .expect("a stat line")
        .1
        .split_whitespace()
        .map(|x| x.parse().unwrap_or(0))
        .collect();
    f[11] + f[12]
}

#[test]
fn an_idle_context_does_not_spin() {
    // Both ends spin for a while after a call (actors/src/spin.rs, the
    // Python core's should_spin), the largest window here: once the calls
    // stop, neither the master (this thread) nor the child may use more
    // than a sliver of a second of idleness. A resource bound with a wide
    // margin: a side that kept spinning would use about 100 ticks.
    run(async {
        let cap = Capture::default();
        let master = Master::new(
            MasterOptions::default()
                .log(cap.logger())
                .spin_window(Duration::from_millis(1)),
        );
        let ctx = master
            .connect(ConnectOptions::new(Method::Local(common::local(
                &common::python3(),
            ))))
            .await
            .unwrap();
        let pid: u32 = ctx.call("os", "getpid", ()).await.unwrap();
        for i in 0..50i64 {
            let r: i64 = ctx.call("copy", "copy", (i,)).await.unwrap();
            assert_eq!(r, i);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        let child = format!("/proc/{pid}/stat");
        let (m0, c0) = (cpu_ticks("/proc/thread-self/stat"), cpu_ticks(&child));
        tokio::time::sleep(Duration::from_secs(1)).await;
        let (m1, c1) = (cpu_ticks("/proc/thread-self/stat"), cpu_ticks(&child));
        assert!(
            m1 - m0 < 10,
            "the idle master used {} ticks in 1 s",
            m1 - m0
        );
        assert!(c1 - c0 < 10, "the idle child used {} ticks in 1 s", c1 - c0);
        master.shutdown().await;
    });
}
