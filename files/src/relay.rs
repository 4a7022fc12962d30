//! Relaying a push in a Rust context (an in-process one or the agent) that
//! is the intermediate of [`crate::FilesExt::push_fanout`]: `recv_begin`
//! with `opts.relay` starts a receiver in each named child, then forwards
//! every data message of the one incoming stream to each of them, raw
//! (never decoded, the same `Bytes` for all). The Python core's `_Relay`
//! does the same (docs/PROTOCOL.md, "Files").
//!
//! Memory: the credit sent upward is the smallest any child has given
//! ([`Fanin`]), so the sender above keeps at most one window unacked and
//! this context holds at most that much per child (queued on its links).

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use econtext_actors::dispatch::CallEnv;
use econtext_actors::{Channel, Context, Sender};
use econtext_wire::{ContextId, SenderRef, Value};
use futures::stream::{self, SelectAll, StreamExt};
use serde_bytes::ByteBuf;

use crate::error::{FileError, FileErrorKind, LOCAL_HOST};
use crate::manifest::Entry;
use crate::proto;

/// Children one relay may serve: a bound on what a caller can make us
/// start (each costs a call and a handle).
pub const MAX_RELAY_TARGETS: usize = 1024;

/// Bytes this process relayed (every copy counted), for `stats()`.
pub(crate) static RELAYED: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// The upward credit of a relay: the smallest (bytes, files) credit of
/// the children still receiving; plain data, no I/O.
#[derive(Debug, Default)]
pub struct Fanin {
    credit: BTreeMap<ContextId, (u64, u64)>,
    sent: u64,
}

impl Fanin {
    pub fn new(children: impl IntoIterator<Item = ContextId>) -> Fanin {
        Fanin {
            credit: children.into_iter().map(|c| (c, (0, 0))).collect(),
            sent: 0,
        }
    }

    /// A child's credit; returns the credit to send upward, if it grew.
    pub fn credit(&mut self, child: ContextId, bytes: u64, files: u64) -> Option<(u64, u64)> {
        if let Some(c) = self.credit.get_mut(&child) {
            *c = (c.0.max(bytes), c.1.max(files));
        }
        self.upward()
    }

    /// A child is done (or gone): it no longer holds the others back.
    pub fn remove(&mut self, child: ContextId) -> Option<(u64, u64)> {
        self.credit.remove(&child);
        self.upward()
    }

    pub fn is_empty(&self) -> bool {
        self.credit.is_empty()
    }

    fn upward(&mut self) -> Option<(u64, u64)> {
        // No child left: nothing holds the sender back any more.
        let b = self.credit.values().map(|c| c.0).min().unwrap_or(1 << 62);
        let f = self.credit.values().map(|c| c.1).min().unwrap_or(0);
        (b > self.sent).then(|| {
            self.sent = b;
            (b, f)
        })
    }
}

fn failure(kind: FileErrorKind, path: &str, why: impl Into<String>) -> FileError {
    FileError::new(kind, LOCAL_HOST, path, why)
}

fn wire_error(e: &FileError) -> Value {
    Value::Array(vec![
        Value::from(e.kind.as_str()),
        Value::from(e.path.as_str()),
        Value::from(e.detail.as_str()),
    ])
}

/// The relay's targets and the options each child gets (without `relay`).
pub(crate) fn split_opts(opts: &Value, root: &str) -> Result<(Vec<ContextId>, Value), FileError> {
    let bad = |why: &str| failure(FileErrorKind::Protocol, root, why);
    let map = opts.as_map().ok_or_else(|| bad("options are not a map"))?;
    let mut targets = Vec::new();
    let mut rest = Vec::new();
    for (k, v) in map {
        if k.as_str() == Some("relay") {
            for c in v.as_array().ok_or_else(|| bad("relay is not a list"))? {
                let c = c
                    .as_u64()
                    .and_then(|c| ContextId::try_from(c).ok())
                    .ok_or_else(|| bad("relay names a bad context id"))?;
                if !targets.contains(&c) {
                    targets.push(c);
                }
            }
        } else {
            rest.push((k.clone(), v.clone()));
        }
    }
    if targets.is_empty() || targets.len() > MAX_RELAY_TARGETS {
        return Err(bad("relay needs 1 to 1024 targets"));
    }
    Ok((targets, Value::Map(rest)))
}

/// One child's receiver, started: its data handle and its ack channel.
struct Started {
    child: ContextId,
    data: Sender,
    acks: Channel,
}

/// A child the pump forwards to.
struct Child {
    id: ContextId,
    data: Sender,
}

async fn start_child(
    env: &CallEnv,
    child: ContextId,
    root: &[u8],
    entries: &[Entry],
    opts: &Value,
    stall: Duration,
) -> Result<Started, Value> {
    let root_text = String::from_utf8_lossy(root).into_owned();
    let io = |why: String| wire_error(&failure(FileErrorKind::Io, &root_text, why));
    // The child's acks, from it only; the channel ends if it dies.
    let acks = Channel::open(&env.router, env.me, Some(child))
        .await
        .map_err(|e| io(e.to_string()))?;
    let ctx = Context::new(child, "relay target", env.me, env.router.clone());
    let reply: Value = ctx
        .call_with("econtext.files", "recv_begin")
        .args((ByteBuf::from(root.to_vec()), entries, opts, acks.sender()))
        .map_err(|e| io(e.to_string()))?
        .timeout(stall)
        .returning()
        .await
        .map_err(|e| {
            let lost = failure(FileErrorKind::ConnectionLost, &root_text, e.to_string());
            wire_error(&lost)
        })?;
    let get = |k: &str| {
        reply
            .as_map()
            .and_then(|m| m.iter().find(|(key, _)| key.as_str() == Some(k)))
            .map(|(_, v)| v.clone())
    };
    if let Some(err) = get("error") {
        return Err(err);
    }
    let handle = get("handle")
        .and_then(|h| h.as_u64())
        .and_then(|h| u32::try_from(h).ok())
        .ok_or_else(|| io(format!("no data handle in {reply}")))?;
    Ok(Started {
        child,
        data: Sender::new(env.router.clone(), env.me, child, handle),
        acks,
    })
}

/// `recv_begin` with `opts.relay`: starts each child's receiver, answers
/// the caller with our data handle (nothing to resume: each child would
/// resume differently, so a relayed push sends everything), and spawns
/// the forwarding pump.
pub(crate) async fn relay_begin(
    env: CallEnv,
    root: Vec<u8>,
    entries: Vec<Entry>,
    opts: Value,
    ack: SenderRef,
    stall: Duration,
) -> Result<Value, FileError> {
    let root_text = String::from_utf8_lossy(&root).into_owned();
    let (targets, child_opts) = split_opts(&opts, &root_text)?;
    let up = Sender::new(env.router.clone(), env.me, ack.context, ack.handle);
    let started = futures::future::join_all(
        targets
            .iter()
            .map(|c| start_child(&env, *c, &root, &entries, &child_opts, stall)),
    )
    .await;
    let mut children = Vec::new();
    for (c, r) in targets.iter().zip(started) {
        match r {
            Ok(s) => children.push(s),
            Err(err) => {
                let _ = up.send(&(proto::A_ERROR, -1, err, *c)).await;
                let _ = up.send(&(proto::A_DONE, *c, 0, 0)).await;
            }
        }
    }
    // Data from the caller only; the channel ends if it dies.
    let data = Channel::open_bulk(&env.router, env.me, env.src)
        .await
        .map_err(|e| failure(FileErrorKind::Io, &root_text, e.to_string()))?;
    let handle = data.handle();
    let relayed: Vec<Value> = children.iter().map(|s| Value::from(s.child)).collect();
    let mut channels = Vec::new();
    let mut kids = Vec::new();
    for s in children {
        channels.push((s.child, s.acks));
        kids.push(Child {
            id: s.child,
            data: s.data,
        });
    }
    actix::spawn(pump(
        data,
        up,
        kids,
        merged_acks(channels),
        root_text,
        stall,
    ));
    Ok(Value::Map(vec![
        (Value::from("handle"), Value::from(handle)),
        (Value::from("resume"), Value::Array(Vec::new())),
        (Value::from("relayed"), Value::Array(relayed)),
    ]))
}

/// A child's ack, or the end of its ack channel (it died).
type ChildAcks = SelectAll<stream::LocalBoxStream<'static, (ContextId, Option<Value>)>>;

fn merged_acks(channels: Vec<(ContextId, Channel)>) -> ChildAcks {
    stream::select_all(channels.into_iter().map(|(c, ch)| {
        ch.map(move |m| (c, Some(m.decode::<Value>().unwrap_or(Value::Nil))))
            .chain(stream::once(async move { (c, None) }))
            .boxed_local()
    }))
}

/// Forwards data down and acks up until every child is done.
async fn pump(
    mut data: Channel,
    up: Sender,
    children: Vec<Child>,
    mut acks: ChildAcks,
    root: String,
    stall: Duration,
) {
    let mut fanin = Fanin::new(children.iter().map(|s| s.id));
    let mut live: HashSet<ContextId> = children.iter().map(|s| s.id).collect();
    let mut upstream_open = true;
    let lost = |c: ContextId, why: String| {
        let e = failure(FileErrorKind::ConnectionLost, &root, why);
        (proto::A_ERROR, -1, wire_error(&e), c)
    };
    while !live.is_empty() {
        tokio::select! {
            m = tokio::time::timeout(stall, data.next()), if upstream_open => match m {
                Ok(Some(m)) => {
                    // The end marker: nothing more comes; the children
                    // still write and fsync, and their acks end the pump.
                    if !m.bulk && m.data.len() < 16 && matches!(proto::decode_data(&m.data), Ok(proto::Data::End)) {
                        upstream_open = false;
                    }
                    for s in children.iter().filter(|s| live.contains(&s.id)) {
                        // A chunk goes on as the bulk frame it came as: its
                        // bytes are never hashed here (each child checks
                        // them against the file's SHA-256 it carries).
                        let sent = match m.bulk {
                            true => s.data.send_bulk(m.data.clone()).await,
                            false => s.data.send_raw(m.data.clone()).await,
                        };
                        if sent.is_ok() {
                            RELAYED.fetch_add(m.data.len() as u64, std::sync::atomic::Ordering::Relaxed);
                        }
                        // A failed send: the child is gone, and its ack
                        // channel's end reports it.
                    }
                }
                // The sender is gone (or silent past the bound): the
                // children must not wait for the rest; they fail the
                // transfer as lost and remove their temporaries.
                _ => {
                    upstream_open = false;
                    for s in children.iter().filter(|s| live.contains(&s.id)) {
                        let _ = s.data.close().await;
                    }
                }
            },
            a = tokio::time::timeout(stall, acks.next()) => {
                let Ok(Some((c, m))) = a else {
                    // No child said anything for the whole bound, or all
                    // ack channels ended: report the rest as lost.
                    for c in live.drain() {
                        let _ = up.send(&lost(c, format!("relay: no word from context {c} for {stall:?}"))).await;
                        let _ = up.send(&(proto::A_DONE, c, 0, 0)).await;
                    }
                    break;
                };
                if !live.contains(&c) {
                    continue;
                }
                let ack = m.as_ref().map(proto::decode_ack);
                let grew = match ack {
                    Some(Ok(proto::Ack::Credit { bytes, files })) => fanin.credit(c, bytes, files),
                    Some(Ok(proto::Ack::Error { index, error, .. })) => {
                        let e = (proto::A_ERROR, index, (error.kind.as_str(), &error.path, &error.detail), c);
                        let _ = up.send(&e).await;
                        None
                    }
                    Some(Ok(proto::Ack::Done { files, bytes, .. })) => {
                        live.remove(&c);
                        let _ = up.send(&(proto::A_DONE, c, files, bytes)).await;
                        fanin.remove(c)
                    }
                    // Gone, or talking nonsense: that child is lost; the
                    // others go on.
                    None | Some(Err(_)) => {
                        live.remove(&c);
                        let why = match m {
                            None => format!("context {c} is gone"),
                            Some(v) => format!("context {c} sent a bad ack {v}"),
                        };
                        let _ = up.send(&lost(c, why)).await;
                        let _ = up.send(&(proto::A_DONE, c, 0, 0)).await;
                        fanin.remove(c)
                    }
                };
                if let Some((b, f)) = grew {
                    let _ = up.send(&(proto::A_CREDIT, b, f)).await;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upward_credit_is_the_slowest_childs_and_a_done_child_stops_holding_back() {
        let mut f = Fanin::new([1, 2]);
        assert_eq!(f.credit(1, 100, 1), None, "child 2 has given nothing");
        assert_eq!(f.credit(2, 40, 0), Some((40, 0)));
        assert_eq!(f.credit(2, 30, 0), None, "credit never goes back");
        assert_eq!(f.credit(2, 150, 2), Some((100, 1)));
        assert_eq!(f.credit(9, 1000, 9), None, "not a child of this relay");
        assert_eq!(f.remove(1), Some((150, 2)));
        assert_eq!(f.remove(2), Some((1 << 62, 0)));
        assert!(f.is_empty());
    }

    #[test]
    fn relay_options_are_split_and_bounded() {
        let opts = Value::Map(vec![
            (Value::from("window"), Value::from(10)),
            (
                Value::from("relay"),
                Value::Array(vec![Value::from(3), Value::from(3), Value::from(4)]),
            ),
        ]);
        let (t, rest) = split_opts(&opts, "/d").unwrap();
        assert_eq!(t, vec![3, 4]);
        assert_eq!(rest.as_map().unwrap().len(), 1);
        let bad = Value::Map(vec![(
            Value::from("relay"),
            Value::Array(vec![Value::from(1 << 20)]),
        )]);
        assert_eq!(
            split_opts(&bad, "/d").unwrap_err().kind,
            FileErrorKind::Protocol
        );
        let none = Value::Map(vec![(Value::from("relay"), Value::Array(vec![]))]);
        assert!(split_opts(&none, "/d").is_err());
    }
}
