//! RouterCore's rules, deterministically: no actix, no tokio, no clock.

use super::*;

type Core = RouterCore<&'static str>;

fn t0() -> Instant {
    // Any fixed instant will do; time only moves when a test says so.
    Instant::now()
}

fn core(id: ContextId, parent: Option<ContextId>, ancestors: &[ContextId], now: Instant) -> Core {
    let mut c = CoreConfig::new(id, parent, ancestors.to_vec());
    c.seed = 42;
    c.stall_after = Duration::from_secs(5);
    c.shutdown_grace = Duration::from_secs(3);
    RouterCore::new(c, now)
}

fn frame(dst: ContextId, src: ContextId, handle: Handle, reply_to: Handle) -> Frame {
    Frame::new(
        Header::new(dst, src, handle, reply_to),
        payload::encode(&1u8).unwrap(),
    )
}

fn data_frame<T: serde::Serialize>(dst: ContextId, src: ContextId, handle: Handle, v: &T) -> Frame {
    Frame::new(
        Header::new(dst, src, handle, 0),
        payload::encode(v).unwrap(),
    )
}

fn drain(c: &mut Core) -> Vec<Action<&'static str>> {
    std::iter::from_fn(|| c.poll_action()).collect()
}

fn forwards(actions: &[Action<&'static str>]) -> Vec<(ContextId, Header, Lane)> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Forward { peer, frame, lane } => Some((*peer, frame.header, *lane)),
            _ => None,
        })
        .collect()
}

fn dead_text(f: &Frame) -> Option<DeadReason> {
    payload::decode::<econtext_wire::Dead>(&f.data)
        .ok()
        .map(DeadReason::from)
}

fn bounced(actions: &[Action<&'static str>]) -> Vec<(ContextId, DeadReason)> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Forward { peer, frame, .. } => dead_text(frame).map(|d| (*peer, d)),
            _ => None,
        })
        .collect()
}

fn refusals(actions: &[Action<&'static str>]) -> Vec<Refusal> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Refused { why, .. } => Some(why.clone()),
            _ => None,
        })
        .collect()
}

fn delivered(actions: &[Action<&'static str>]) -> Vec<(&'static str, Message)> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::DeliverOnce { sink, msg } => Some((*sink, msg.clone())),
            _ => None,
        })
        .collect()
}

fn died(actions: &[Action<&'static str>]) -> Vec<(ContextId, DeadReason)> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Event(ContextEvent::Died { id, reason }) => Some((*id, reason.clone())),
            _ => None,
        })
        .collect()
}

/// A master with children 1 and 2, and 5 created through 1.
fn master_tree(now: Instant) -> Core {
    let mut m = core(0, None, &[], now);
    m.attach(1, false);
    m.attach(2, false);
    assert!(m.add_local_route(5, 1, 1));
    drain(&mut m);
    m
}

#[test]
fn routes_local_direct_routed_parent_and_nowhere() {
    let now = t0();
    let mut c = core(5, Some(1), &[1, 0], now);
    c.attach(1, true);
    c.attach(7, false);
    c.inbound(1, data_frame(5, 1, handles::ADD_ROUTE, &(9u16, 7u16)), now);
    assert!(
        drain(&mut c).is_empty(),
        "ADD_ROUTE from the parent applies"
    );
    c.send_local(frame(7, 5, 1000, 0), Lane::Wait, now);
    c.send_local(frame(9, 5, 1000, 0), Lane::Wait, now);
    c.send_local(frame(42, 5, 1000, 0), Lane::Wait, now);
    let f = forwards(&drain(&mut c));
    assert_eq!(
        f.iter().map(|x| (x.0, x.2)).collect::<Vec<_>>(),
        vec![(7, Lane::Wait), (7, Lane::Wait), (1, Lane::Wait)]
    );
    let mut m = core(0, None, &[], now);
    m.send_local(frame(42, 0, 1000, 1234), Lane::Wait, now);
    let a = drain(&mut m);
    assert_eq!(delivered(&a).len(), 0);
    assert!(
        a.is_empty(),
        "a bounce to ourselves for an unknown handle is dropped"
    );
}

#[test]
fn a_frame_to_nowhere_bounces_dead_to_its_sender() {
    let now = t0();
    let mut m = master_tree(now);
    m.inbound(1, frame(77, 1, 1000, 4242), now);
    let b = bounced(&drain(&mut m));
    assert_eq!(b, vec![(1, DeadReason::Unreachable)]);
}

#[test]
fn a_frame_is_never_sent_back_where_it_came_from() {
    let now = t0();
    let mut m = master_tree(now);
    // 5 is behind 1; a frame for 5 arriving on 1 would loop.
    m.inbound(1, frame(5, 1, 1000, 4242), now);
    let a = drain(&mut m);
    assert_eq!(refusals(&a), vec![Refusal::Loop]);
    assert_eq!(bounced(&a), vec![(1, DeadReason::Unreachable)]);
}

#[test]
fn a_child_cannot_spoof_a_source_outside_its_subtree() {
    let now = t0();
    let mut m = master_tree(now);
    // Child 2 claims to be 5 (which sits behind 1).
    m.inbound(2, frame(1, 5, handles::CALL_FUNCTION, 99), now);
    let a = drain(&mut m);
    assert_eq!(refusals(&a), vec![Refusal::Spoofed]);
    assert!(
        forwards(&a).is_empty(),
        "dropped, not forwarded, not bounced"
    );
}

#[test]
fn only_an_ancestor_on_the_parent_stream_may_call_in() {
    let now = t0();
    let mut c = core(5, Some(1), &[1, 0], now);
    c.attach(1, true);
    c.attach(7, false);
    c.register(
        Some(handles::CALL_FUNCTION),
        "dispatcher",
        true,
        None,
        Accept::Any,
    );
    c.inbound(1, frame(5, 0, handles::CALL_FUNCTION, 10), now);
    assert!(matches!(
        drain(&mut c)[..],
        [Action::Deliver {
            handle: handles::CALL_FUNCTION,
            ..
        }]
    ));
    // The child 7 calling its parent is refused, with Dead back.
    c.inbound(7, frame(5, 7, handles::CALL_FUNCTION, 11), now);
    let a = drain(&mut c);
    assert_eq!(refusals(&a), vec![Refusal::NotAnAncestor]);
    assert!(matches!(&bounced(&a)[..], [(7, DeadReason::Refused(_))]));
    // So is a non-ancestor arriving from the parent stream (a sibling).
    c.inbound(1, frame(5, 9, handles::SPAWN, 12), now);
    let a = drain(&mut c);
    assert!(matches!(&bounced(&a)[..], [(1, DeadReason::Refused(_))]));
}

#[test]
fn a_child_cannot_answer_a_call_made_to_a_sibling() {
    let now = t0();
    let mut m = master_tree(now);
    let h = m
        .request(
            2,
            handles::CALL_FUNCTION,
            payload::encode(&()).unwrap(),
            "call",
            now,
        )
        .unwrap();
    assert_eq!(forwards(&drain(&mut m))[0].0, 2);
    // Child 1 forges the answer (a value, then a Dead) to the reply handle.
    m.inbound(1, frame(0, 1, h, 0), now);
    let dead = payload::encode(&econtext_wire::Dead::new("forged")).unwrap();
    m.inbound(1, Frame::new(Header::new(0, 1, h, 0), dead), now);
    let a = drain(&mut m);
    assert!(delivered(&a).is_empty(), "nothing reaches the caller");
    assert_eq!(
        refusals(&a),
        vec![Refusal::WrongSource { expected: vec![2] }],
        "logged once per source per interval"
    );
    assert_eq!(m.stats().refused, 2, "but every one is counted");
    // The real answer still arrives.
    m.inbound(2, frame(0, 2, h, 0), now);
    let d = delivered(&drain(&mut m));
    assert_eq!(d.len(), 1);
    assert_eq!((d[0].0, d[0].1.src), ("call", 2));
}

#[test]
fn dead_from_a_hop_on_the_path_is_accepted_values_are_not() {
    let now = t0();
    let mut m = master_tree(now);
    let h = m
        .request(
            5,
            handles::CALL_FUNCTION,
            payload::encode(&()).unwrap(),
            "call",
            now,
        )
        .unwrap();
    drain(&mut m);
    m.inbound(1, frame(0, 1, h, 0), now);
    assert!(
        delivered(&drain(&mut m)).is_empty(),
        "1 cannot answer for 5"
    );
    let dead = payload::encode(&econtext_wire::Dead::new("no route to 5")).unwrap();
    m.inbound(1, Frame::new(Header::new(0, 1, h, 0), dead), now);
    let d = delivered(&drain(&mut m));
    assert_eq!(d.len(), 1, "1 is on the way to 5: its Dead is believed");
    assert!(d[0].1.is_dead());
}

#[test]
fn channels_accept_only_their_sources() {
    let now = t0();
    let mut m = master_tree(now);
    let h = m.register(None, "chan", true, Some(1), Accept::From(1));
    m.inbound(2, frame(0, 2, h, 0), now);
    assert_eq!(
        refusals(&drain(&mut m)),
        vec![Refusal::WrongSource { expected: vec![1] }]
    );
    m.inbound(1, frame(0, 1, h, 0), now);
    m.send_local(frame(0, 0, h, 0), Lane::Wait, now);
    let a = drain(&mut m);
    assert_eq!(
        a.iter()
            .filter(|x| matches!(x, Action::Deliver { .. }))
            .count(),
        2,
        "the peer and the context itself"
    );
}

fn bulk_frame(dst: ContextId, src: ContextId, handle: Handle, reply_to: Handle) -> Frame {
    let data = econtext_wire::bulk::join(b"covered", b"bytes no MAC covers");
    Frame::bulk(Header::new(dst, src, handle, reply_to), data)
}

#[test]
fn a_bulk_frame_reaches_only_a_handle_allowed_bulk() {
    let now = t0();
    let mut m = master_tree(now);
    let plain = m.register(None, "plain", true, Some(1), Accept::From(1));
    let files = m.register(None, "files", true, Some(1), Accept::From(1));
    assert!(m.allow_bulk(files));
    m.inbound(1, bulk_frame(0, 1, plain, 77), now);
    let a = drain(&mut m);
    assert_eq!(refusals(&a), vec![Refusal::BulkToNonFileHandle]);
    assert!(!a.iter().any(|x| matches!(x, Action::Deliver { .. })));
    assert!(
        matches!(&bounced(&a)[..], [(1, DeadReason::Refused(_))]),
        "its sender hears why: {a:?}"
    );
    for handle in [handles::CALL_FUNCTION, handles::GET_MODULE] {
        m.inbound(1, bulk_frame(0, 1, handle, 0), now);
        assert!(!drain(&mut m)
            .iter()
            .any(|x| matches!(x, Action::Deliver { .. })));
    }
    m.inbound(1, bulk_frame(0, 1, files, 0), now);
    match &drain(&mut m)[..] {
        [Action::Deliver { handle, msg }] => assert!(*handle == files && msg.bulk),
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_bulk_frame_is_forwarded_as_one() {
    let now = t0();
    let mut m = master_tree(now);
    m.send_local(bulk_frame(5, 0, 4000, 0), Lane::Wait, now);
    match &drain(&mut m)[..] {
        [Action::Forward { peer: 1, frame, .. }] => assert!(frame.bulk),
        other => panic!("{other:?}"),
    }
    // One a writer could not seal is bounced here, never put on a link.
    let bad = Frame::bulk(Header::new(5, 0, 4000, 9), &[0u8, 0, 0, 9][..]);
    m.send_local(bad, Lane::Wait, now);
    let a = drain(&mut m);
    assert!(forwards(&a).is_empty(), "{a:?}");
}

#[test]
fn a_sibling_cannot_make_a_child_declare_contexts_dead() {
    let now = t0();
    // Context 5 under 1, with its own child 7 (and 8 behind 7).
    let mut c = core(5, Some(1), &[1, 0], now);
    c.attach(1, true);
    c.attach(7, false);
    assert!(c.add_local_route(8, 7, 7));
    drain(&mut c);
    // DEL_ROUTE arriving from the parent stream (a sibling's, forwarded
    // by the master) for anything: refused.
    for target in [2u16, 7, 8, 1] {
        c.inbound(1, data_frame(5, 1, handles::DEL_ROUTE, &target), now);
    }
    let a = drain(&mut c);
    assert!(died(&a).is_empty(), "{a:?}");
    assert_eq!(refusals(&a).len(), 1, "one warning for source 1");
    assert_eq!(c.stats().refused, 4);
    // The child 7 may report its own subtree (8), not its parent (1).
    c.inbound(7, data_frame(5, 7, handles::DEL_ROUTE, &1u16), now);
    assert!(died(&drain(&mut c)).is_empty());
    c.inbound(7, data_frame(5, 7, handles::DEL_ROUTE, &8u16), now);
    assert_eq!(died(&drain(&mut c)), vec![(8, DeadReason::Disconnected)]);
}

#[test]
fn death_expands_to_the_subtree_children_first_and_prunes_everything() {
    let now = t0();
    let mut c = core(3, Some(0), &[0], now);
    c.attach(0, true);
    c.attach(1, false);
    assert!(c.add_local_route(5, 1, 1));
    assert!(c.add_local_route(6, 1, 5));
    let baseline = c.stats();
    let h5 = c
        .request(
            5,
            handles::CALL_FUNCTION,
            payload::encode(&()).unwrap(),
            "w5",
            now,
        )
        .unwrap();
    c.watch(6, "watch6");
    c.register(None, "chan1", true, Some(1), Accept::From(1));
    drain(&mut c);
    c.stream_closed(1, DeadReason::Disconnected, now);
    let a = drain(&mut c);
    let order: Vec<ContextId> = died(&a).into_iter().map(|d| d.0).collect();
    assert_eq!(order, vec![6, 5, 1], "children first");
    let d = delivered(&a);
    assert!(d
        .iter()
        .any(|(s, m)| *s == "w5" && m.is_dead() && m.handle == h5));
    assert!(d.iter().any(|(s, _)| *s == "watch6"));
    assert!(d.iter().any(|(s, _)| *s == "chan1"));
    // The parent hears of every member.
    let dels: Vec<_> = forwards(&a)
        .into_iter()
        .filter(|f| f.1.handle == handles::DEL_ROUTE)
        .collect();
    assert_eq!(dels.len(), 3);
    assert!(dels.iter().all(|f| f.0 == 0 && f.2 == Lane::Control));
    let s = c.stats();
    assert_eq!((s.handles, s.watchers), (baseline.handles, 0));
    assert_eq!(s.peers, 1, "only the parent stream is left");
    assert!(s.routes_known < baseline.routes_known);
    // Dead contexts are remembered for their reason, then forgotten.
    assert_eq!(c.dead_reason(5), Some(&DeadReason::Disconnected));
    c.tick(now + DEFAULT_QUARANTINE);
    assert_eq!(c.stats().dead_remembered, 0);
}

#[test]
fn requests_to_a_dead_context_fail_at_once() {
    let now = t0();
    let mut m = master_tree(now);
    m.declare_dead(2, DeadReason::Exited { status: 3 }, now);
    drain(&mut m);
    let e = m
        .request(
            2,
            handles::CALL_FUNCTION,
            payload::encode(&()).unwrap(),
            "x",
            now,
        )
        .unwrap_err()
        .0;
    assert_eq!(
        e,
        Error::Dead {
            context: 2,
            reason: DeadReason::Exited { status: 3 }
        }
    );
}

#[test]
fn losing_the_parent_fails_every_handle_and_shuts_down() {
    let now = t0();
    let mut c = core(5, Some(1), &[1, 0], now);
    c.attach(1, true);
    c.register(None, "h", true, None, Accept::Any);
    drain(&mut c);
    c.stream_closed(1, DeadReason::Disconnected, now);
    let a = drain(&mut c);
    assert!(delivered(&a).iter().any(|(s, m)| *s == "h"
        && dead_text(&Frame::new(Header::default(), m.data.clone()))
            == Some(DeadReason::ParentLost)));
    assert!(matches!(a.last(), Some(Action::Stop)));
}

#[test]
fn shutdown_tells_children_first_and_stops_when_they_are_gone() {
    let now = t0();
    let mut c = core(5, Some(1), &[1, 0], now);
    c.attach(1, true);
    c.attach(7, false);
    c.attach(8, false);
    c.begin_shutdown(now);
    let a = drain(&mut c);
    let shut: Vec<_> = forwards(&a)
        .into_iter()
        .filter(|f| f.1.handle == handles::SHUTDOWN)
        .map(|f| (f.0, f.2))
        .collect();
    assert_eq!(shut, vec![(7, Lane::Control), (8, Lane::Control)]);
    assert!(!a.iter().any(|x| matches!(x, Action::Stop)));
    c.stream_closed(7, DeadReason::Disconnected, now);
    assert!(!drain(&mut c).iter().any(|x| matches!(x, Action::Stop)));
    c.stream_closed(8, DeadReason::Disconnected, now);
    let a = drain(&mut c);
    assert!(a
        .iter()
        .any(|x| matches!(x, Action::CloseStream { peer: 1 })));
    assert!(matches!(a.last(), Some(Action::Stop)));
}

#[test]
fn shutdown_is_bounded_by_the_grace_period() {
    let now = t0();
    let mut c = core(0, None, &[], now);
    c.attach(7, false);
    c.begin_shutdown(now);
    drain(&mut c);
    c.tick(now + Duration::from_secs(2));
    assert!(!drain(&mut c).iter().any(|x| matches!(x, Action::Stop)));
    c.tick(now + Duration::from_secs(3));
    let a = drain(&mut c);
    assert!(a
        .iter()
        .any(|x| matches!(x, Action::CloseStream { peer: 7 })));
    assert!(matches!(a.last(), Some(Action::Stop)));
}

#[test]
fn a_stalled_peer_is_closed_as_dead_after_the_bound() {
    let now = t0();
    let mut m = master_tree(now);
    m.link_state(2, true, now);
    m.tick(now + Duration::from_secs(4));
    m.link_state(2, true, now + Duration::from_secs(4));
    assert!(died(&drain(&mut m)).is_empty());
    // Progress resets the clock.
    m.link_state(1, true, now);
    m.link_state(1, false, now + Duration::from_secs(2));
    m.tick(now + Duration::from_secs(5));
    let a = drain(&mut m);
    assert_eq!(died(&a), vec![(2, DeadReason::Stalled)]);
    assert!(a
        .iter()
        .any(|x| matches!(x, Action::CloseStream { peer: 2 })));
}

#[test]
fn refused_frames_are_reported_once_per_source_per_interval() {
    let now = t0();
    let mut m = master_tree(now);
    for _ in 0..10_000 {
        m.inbound(2, frame(1, 5, handles::CALL_FUNCTION, 0), now);
    }
    assert_eq!(refusals(&drain(&mut m)).len(), 1);
    m.inbound(
        2,
        frame(1, 5, handles::CALL_FUNCTION, 0),
        now + DEFAULT_INTERVAL,
    );
    let a = drain(&mut m);
    assert!(matches!(
        a[..],
        [Action::Refused {
            suppressed: 9_999,
            ..
        }]
    ));
}

#[test]
fn ids_are_never_zero_nor_live_and_return_after_quarantine() {
    let now = t0();
    let mut m = core(0, None, &[], now);
    m.attach(1, false); // claimed by attaching
    let mut seen = HashSet::new();
    while let Ok(id) = m.allocate_id(now) {
        assert!(id != 0 && id != 1, "{id}");
        assert!(seen.insert(id));
    }
    assert_eq!(seen.len(), 65534);
    assert_eq!(m.stats().live_ids, 65535);
    m.stream_closed(1, DeadReason::Disconnected, now);
    assert!(m.allocate_id(now).is_err(), "1 is in quarantine");
    assert_eq!(m.allocate_id(now + DEFAULT_QUARANTINE).unwrap(), 1);
}

#[test]
fn a_dropped_call_frees_its_handle() {
    let now = t0();
    let mut m = master_tree(now);
    let before = m.stats().handles;
    let h = m
        .request(
            1,
            handles::CALL_FUNCTION,
            payload::encode(&()).unwrap(),
            "x",
            now,
        )
        .unwrap();
    assert_eq!(m.stats().handles, before + 1);
    assert_eq!(m.unregister(h), Some("x"));
    assert_eq!(m.stats().handles, before);
}

#[test]
fn the_master_core_is_the_one_record_of_parentage() {
    let now = t0();
    let mut m = core(0, None, &[], now);
    m.attach(1, false);
    assert!(m.add_local_route(2, 1, 1));
    assert!(m.add_local_route(3, 1, 2));
    assert_eq!(m.ancestors(1), vec![0]);
    assert_eq!(m.ancestors(3), vec![2, 1, 0]);
    assert!(m.ancestors(99).is_empty(), "unknown");
    m.stream_closed(1, DeadReason::Disconnected, now);
    assert!(m.ancestors(3).is_empty(), "forgotten with its subtree");
}

#[test]
fn a_subtree_is_read_from_the_core_dead_members_until_forgotten() {
    let now = t0();
    let mut m = master_tree(now);
    assert!(m.add_local_route(6, 1, 5));
    let mut sub = m.subtree_members(1);
    sub.sort_unstable();
    assert_eq!(sub, vec![1, 5, 6]);
    assert_eq!(m.subtree_members(2), vec![2]);
    // 5 and 6 die: their supervisors may not have said so yet, so they
    // are still members while the core remembers them.
    m.declare_dead(5, DeadReason::Killed, now);
    drain(&mut m);
    let mut sub = m.subtree_members(1);
    sub.sort_unstable();
    assert_eq!(sub, vec![1, 5, 6]);
    m.tick(now + DEFAULT_QUARANTINE);
    assert_eq!(m.subtree_members(1), vec![1]);
    assert_eq!(m.subtree_members(99), vec![99], "unknown: the root alone");
}

#[test]
fn a_frame_to_a_closed_peer_bounces_dead_to_its_sender() {
    let now = t0();
    let mut m = master_tree(now);
    m.stream_closed(1, DeadReason::Disconnected, now);
    drain(&mut m);
    // Routed after the close: to 1 itself and to 5 behind it, the
    // sender hears why.
    m.inbound(2, frame(1, 2, 1000, 4242), now);
    m.inbound(2, frame(5, 2, 1000, 4243), now);
    assert_eq!(
        bounced(&drain(&mut m)),
        vec![(2, DeadReason::Disconnected), (2, DeadReason::Disconnected)]
    );
    // Queued while the link was closing: the pump hands it back and the
    // sender hears too (on the control lane, never behind data).
    m.undeliverable(
        &Header::new(1, 2, 1000, 4244),
        DeadReason::Disconnected,
        now,
    );
    m.undeliverable(&Header::new(1, 2, 1000, 0), DeadReason::Disconnected, now);
    let a = drain(&mut m);
    let f = forwards(&a);
    assert_eq!(
        f.len(),
        1,
        "a frame that asked for no reply bounces nowhere"
    );
    assert_eq!((f[0].0, f[0].1.handle, f[0].2), (2, 4244, Lane::Control));
}
