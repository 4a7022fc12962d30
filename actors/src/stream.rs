//! The Stream actor: one per connection. It owns the transport, decodes and
//! verifies frames on the way in, seals and writes them on the way out, and
//! tells its Router when it ends and why.

use actix::prelude::*;
use bytes::{BufMut, BytesMut};
use econtext_wire::{ContextId, Direction, Frame, FrameCodec, WireError, HEADER_LEN};
use futures::future::LocalBoxFuture;
use slog::{debug, warn, Logger};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio_util::codec::Decoder;

use crate::event::DeadReason;
use crate::lanes::Lanes;
use crate::link::{LinkReceiver, Queued, StreamLink, DEFAULT_HIGH_WATER_MARK};
use crate::router::{AttachStream, CloseStream, Inbound, Router, StreamClosed};
use crate::spare::{Spare, LARGE};
use crate::spin::{self, LinkSpin, SharedSpin, SpinRead};

/// Frames at least this large are written straight from their buffer
/// instead of being copied into the batch buffer.
const DIRECT_WRITE: usize = 64 * 1024;
/// Small frames are batched into one write up to this many bytes.
const BATCH: usize = 256 * 1024;
/// Frames handed to the Router in one message, at most.
const MAX_BATCH_FRAMES: usize = 1024;
/// A writer lets the runtime turn at most this many times to gather
/// frames into one write.
const MAX_GATHER_TURNS: usize = 128;
/// A frame with a trailing MAC is hashed and written this many bytes at a
/// time.
const TRAILER_PIECE: usize = 256 * 1024;
/// Bytes asked of the kernel per read.
const READ_CHUNK: usize = 256 * 1024;

/// Everything needed to start a stream.
pub struct StreamConfig {
    /// The context at the other end.
    pub peer: ContextId,
    /// True when the peer is this context's parent.
    pub is_parent: bool,
    /// The tree's HMAC secret.
    pub key: Vec<u8>,
    pub max_message_size: usize,
    pub high_water_mark: usize,
    /// Bytes already read from the transport (after a handshake).
    pub initial: BytesMut,
    pub log: Logger,
    /// Spinning before the reader sleeps (`spin.rs`): None (the default)
    /// for links whose peer runs on this thread, where it cannot help.
    pub spin: Option<LinkSpin>,
}

impl StreamConfig {
    pub fn new(peer: ContextId, is_parent: bool, key: &[u8], log: Logger) -> Self {
        StreamConfig {
            peer,
            is_parent,
            key: key.to_vec(),
            max_message_size: econtext_wire::DEFAULT_MAX_MESSAGE_SIZE,
            high_water_mark: DEFAULT_HIGH_WATER_MARK,
            initial: BytesMut::new(),
            log,
            spin: None,
        }
    }
}

/// The Stream actor.
pub struct Stream {
    peer: ContextId,
    router: Addr<Router>,
    reason: Option<DeadReason>,
    link: StreamLink,
    log: Logger,
    loops: Option<(LoopFuture, LoopFuture)>,
}

type LoopFuture = LocalBoxFuture<'static, Result<(), WireError>>;

impl Stream {
    /// Starts a stream over `reader`/`writer` and attaches it to `router`.
    pub fn start<R, W>(
        config: StreamConfig,
        reader: R,
        writer: W,
        router: Addr<Router>,
    ) -> Addr<Stream>
    where
        R: AsyncRead + Unpin + 'static,
        W: AsyncWrite + Unpin + 'static,
    {
        let outgoing = if config.is_parent {
            Direction::Up
        } else {
            Direction::Down
        };
        let (link, queue) = StreamLink::new(config.high_water_mark);
        let rx_codec = FrameCodec::new(&config.key, outgoing, config.max_message_size);
        let tx_codec = FrameCodec::new(&config.key, outgoing, config.max_message_size);
        let peer = config.peer;
        let is_parent = config.is_parent;
        let initial = config.initial;
        let log = config.log.new(slog::o!("stream" => peer));
        let spin = spin::shared(config.spin);
        let read: LoopFuture = match &spin {
            Some(s) => Box::pin(read_loop(
                SpinRead::new(reader, s.clone()),
                rx_codec,
                initial,
                peer,
                router.clone(),
                spin.clone(),
            )),
            None => Box::pin(read_loop(
                reader,
                rx_codec,
                initial,
                peer,
                router.clone(),
                None,
            )),
        };
        let addr = Stream {
            peer,
            router: router.clone(),
            reason: None,
            link: link.clone(),
            log,
            loops: Some((read, Box::pin(write_loop(writer, tx_codec, queue, spin)))),
        }
        .start();
        router.do_send(AttachStream {
            peer,
            link,
            closer: addr.clone().recipient(),
            is_parent,
        });
        addr
    }

    fn finish(&mut self, res: Result<(), WireError>, side: &str, ctx: &mut actix::Context<Self>) {
        if self.reason.is_none() {
            self.reason = Some(match res {
                Ok(()) if side == "read" => DeadReason::Disconnected,
                Ok(()) => DeadReason::Closed,
                // A transport error ends the connection like EOF does; the
                // rest is the peer breaking the protocol.
                Err(WireError::Io(_)) => DeadReason::Disconnected,
                Err(e) => DeadReason::Protocol(e.to_string()),
            });
        }
        ctx.stop();
    }
}

impl Actor for Stream {
    type Context = actix::Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        let (read, write) = self.loops.take().expect("started once");
        ctx.spawn(
            read.into_actor(self)
                .map(|res, act, ctx| act.finish(res, "read", ctx)),
        );
        ctx.spawn(
            write
                .into_actor(self)
                .map(|res, act, ctx| act.finish(res, "write", ctx)),
        );
    }

    fn stopping(&mut self, _: &mut Self::Context) -> Running {
        let reason = self.reason.clone().unwrap_or(DeadReason::Closed);
        match reason {
            DeadReason::Disconnected | DeadReason::Closed => {
                debug!(self.log, "stream ended"; "reason" => %reason)
            }
            _ => warn!(self.log, "stream failed"; "reason" => %reason),
        }
        self.link.close();
        self.router.do_send(StreamClosed {
            peer: self.peer,
            reason,
        });
        Running::Stop
    }
}

impl Handler<CloseStream> for Stream {
    type Result = ();

    fn handle(&mut self, _: CloseStream, ctx: &mut Self::Context) {
        self.reason.get_or_insert(DeadReason::Closed);
        ctx.stop();
    }
}

async fn read_loop<R: AsyncRead + Unpin>(
    mut reader: R,
    mut codec: FrameCodec,
    mut buf: BytesMut,
    peer: ContextId,
    router: Addr<Router>,
    spin: Option<SharedSpin>,
) -> Result<(), WireError> {
    let mut batch = Vec::new();
    let mut spare = Spare::default();
    loop {
        spare.place(&mut buf);
        while batch.len() < MAX_BATCH_FRAMES {
            match codec.decode(&mut buf)? {
                Some(frame) => {
                    if frame.data.len() >= LARGE {
                        spare.keep(&mut buf, frame.data.len(), READ_CHUNK);
                    }
                    batch.push(frame);
                }
                None => break,
            }
        }
        if !batch.is_empty() {
            spin::received(&spin, batch.len());
            // Waiting for the Router to queue the frames onward is what
            // stops us reading faster than the next hop drains.
            match router
                .send(Inbound {
                    from: peer,
                    frames: batch,
                })
                .await
            {
                Ok(empty) => batch = empty,
                Err(_) => return Ok(()),
            }
            continue;
        }
        if buf.capacity() - buf.len() < HEADER_LEN {
            buf.reserve(READ_CHUNK);
        }
        if reader.read_buf(&mut buf).await? == 0 {
            return match codec.decode_eof(&mut buf)? {
                Some(frame) => {
                    let frames = vec![frame];
                    let _ = router.send(Inbound { from: peer, frames }).await;
                    Ok(())
                }
                None => Ok(()),
            };
        }
    }
}

async fn write_loop<W: AsyncWrite + Unpin>(
    mut writer: W,
    mut codec: FrameCodec,
    mut queue: LinkReceiver,
    spin: Option<SharedSpin>,
) -> Result<(), WireError> {
    let mut buf = BytesMut::with_capacity(BATCH);
    let mut written = Vec::new();
    // Frames taken off the link's queue, in the order they are to be
    // written: small ones before bulk (see lanes.rs). Their bytes still
    // count against the link's budget until written.
    let mut lanes = Lanes::new();
    loop {
        if lanes.is_empty() {
            match queue.recv().await {
                Some(item) => take(&mut lanes, item),
                None => break,
            }
        }
        let (mut turns, mut idle) = (0, 0);
        loop {
            let before = written.len();
            let mut direct = false;
            loop {
                // Everything queued since the last frame joins the lanes
                // first, so a call queued during a bulk write goes next.
                while let Ok(item) = queue.try_recv() {
                    take(&mut lanes, item);
                }
                let Some(item) = lanes.pop() else { break };
                let data = &item.frame.data;
                direct = data.len() >= DIRECT_WRITE;
                if codec.trails(data.len()) && !item.frame.bulk {
                    codec.seal_gathered(&mut buf);
                    write_trailing(&mut writer, &mut codec, &mut buf, &item.frame).await?;
                } else if direct || item.frame.bulk {
                    // A bulk frame is never batched, and its MAC covers its
                    // small covered part only: its bytes are not hashed here.
                    codec.seal_gathered(&mut buf);
                    let header = match item.frame.bulk {
                        true => codec.seal_bulk(&item.frame.header, data)?,
                        false => codec.seal(&item.frame.header, data)?,
                    };
                    buf.put_slice(&header);
                    writer.write_all(&buf).await?;
                    buf.clear();
                    writer.write_all(data).await?;
                } else {
                    // Small frames written together share one MAC: a
                    // batch frame (docs/PROTOCOL.md, "Batch frames").
                    codec.gather(&mut buf, &item.frame.header, data)?;
                }
                written.push(item);
                if direct || buf.len() >= BATCH {
                    break;
                }
            }
            // One write per burst, not per frame. A caller that issues
            // calls one after another (each `start().await` a turn of the
            // runtime) queues one frame per turn, and may run after or
            // before our pass in that turn; so we write once two turns in
            // a row brought nothing (or the batch is full). A turn costs
            // far less than a write (and the peer's wake-up); a lone frame
            // waits two turns. After a bulk frame, the lanes are looked at
            // again at once.
            idle = if written.len() == before { idle + 1 } else { 0 };
            if direct
                || buf.is_empty()
                || buf.len() >= BATCH
                || idle == 2
                || turns == MAX_GATHER_TURNS
            {
                break;
            }
            turns += 1;
            tokio::task::yield_now().await;
        }
        codec.seal_gathered(&mut buf);
        if !buf.is_empty() {
            writer.write_all(&buf).await?;
            buf.clear();
        }
        // The reader may spin for the replies to requests now sent.
        spin::sent(&spin, written.iter().map(|q| &q.frame.header)).await;
        // Releasing the budget only now keeps the bound honest: bytes
        // count until the kernel has them.
        written.clear();
        // Flush when going idle, not after every burst: for the socket
        // writer a flush may end its writability registration, which a
        // bulk transfer would only make again for its next frame.
        while let Ok(item) = queue.try_recv() {
            take(&mut lanes, item);
        }
        if lanes.is_empty() {
            writer.flush().await?;
        }
    }
    let _ = writer.shutdown().await;
    Ok(())
}

/// Writes a large frame with a trailing MAC: whatever `buf` holds and the
/// header first, then each piece of data hashed just before it is written
/// (so the hash overlaps the peer's reading, and the piece is still in
/// cache for the kernel's copy), then the MAC.
async fn write_trailing<W: AsyncWrite + Unpin>(
    writer: &mut W,
    codec: &mut FrameCodec,
    buf: &mut BytesMut,
    frame: &Frame,
) -> Result<(), WireError> {
    let (header, mut sealing) = codec.seal_trailing(&frame.header, frame.data.len())?;
    buf.put_slice(&header);
    writer.write_all(buf).await?;
    buf.clear();
    for piece in frame.data.chunks(TRAILER_PIECE) {
        sealing.update(piece);
        writer.write_all(piece).await?;
    }
    writer.write_all(&sealing.finish()).await?;
    Ok(())
}

fn take(lanes: &mut Lanes<Queued>, item: Queued) {
    let (header, len) = (item.frame.header, item.frame.data.len());
    lanes.push(&header, len, item);
}
