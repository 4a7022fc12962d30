//! The write side of a stream as the Router sees it: a queue bounded in
//! bytes, with three ways in so that one slow peer never blocks another:
//!
//! - [`StreamLink::send`]: a local sender waits while the queue is above
//!   its mark (backpressure onto the caller, who has a deadline).
//! - [`StreamLink::push`]: a frame forwarded from another stream, or a
//!   reply, is queued without waiting up to a hard cap (twice the mark);
//!   past it the frame is handed back and its sender gets Dead.
//! - [`StreamLink::push_control`]: DEL_ROUTE, SHUTDOWN and Dead bounces
//!   ignore the byte budget, up to a count of outstanding control frames
//!   (a peer that reads nothing at all is closed as stalled long before).
//!
//! - [`LinkRoom::reserve`]: a call's fast path takes its room on the link
//!   before its frame is handed to the Router, on the same terms as
//!   `try_send` (below the mark), and the Router queues the frame on that
//!   room ([`StreamLink::push_reserved`]) without a second check: a call
//!   never waits in the Router, and its bytes are in the link's budget
//!   from the moment it was made.
//!
//! Bytes count until the writer has handed them to the kernel; the drained
//! counter tells the Router whether a peer is making progress.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use econtext_wire::Frame;
use tokio::sync::{mpsc, Notify};

/// Bytes that may sit in one stream's write queue before senders wait.
pub const DEFAULT_HIGH_WATER_MARK: usize = 8 * 1024 * 1024;
/// Control frames that may be outstanding on one link.
pub const MAX_CONTROL_FRAMES: usize = 4096;

struct Shared {
    queued: AtomicUsize,
    control: AtomicUsize,
    drained: AtomicU64,
    closed: AtomicBool,
    room: Notify,
}

/// A frame waiting to be written; its bytes leave the budget when it is
/// dropped (after the writer has written it).
pub struct Queued {
    pub frame: Frame,
    cost: usize,
    control: bool,
    shared: Arc<Shared>,
}

impl Drop for Queued {
    fn drop(&mut self) {
        self.shared.queued.fetch_sub(self.cost, Ordering::AcqRel);
        if self.control {
            self.shared.control.fetch_sub(1, Ordering::AcqRel);
        }
        self.shared
            .drained
            .fetch_add(self.cost as u64, Ordering::Relaxed);
        self.shared.room.notify_waiters();
    }
}

/// Room taken on a link for one frame that is on its way to the Router
/// ([`LinkRoom::reserve`]). Dropped without being queued, it gives the
/// bytes back (and wakes senders waiting for room).
pub struct Reservation {
    cost: usize,
    shared: Arc<Shared>,
}

impl Reservation {
    pub fn cost(&self) -> usize {
        self.cost
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        if self.cost != 0 {
            self.shared.queued.fetch_sub(self.cost, Ordering::AcqRel);
            self.shared.room.notify_waiters();
        }
    }
}

/// The budget of one link, without its queue: what a `Context` holds to
/// take room for its calls before it hands them to the Router. It cannot
/// write to the link.
#[derive(Clone)]
pub struct LinkRoom {
    shared: Arc<Shared>,
    high_water_mark: usize,
}

impl LinkRoom {
    /// Room for a frame of `cost` bytes (data and header) when the link
    /// is open and below its mark, exactly as [`StreamLink::try_send`]
    /// would queue it; None when the sender must wait for room.
    pub fn reserve(&self, cost: usize) -> Option<Reservation> {
        if self.shared.closed.load(Ordering::Acquire) {
            return None;
        }
        reserve(&self.shared, cost, self.high_water_mark).then(|| Reservation {
            cost,
            shared: self.shared.clone(),
        })
    }
}

/// Reserves `cost` bytes if the queue stays within `cap` (a frame larger
/// than the cap goes alone into an empty queue).
fn reserve(shared: &Shared, cost: usize, cap: usize) -> bool {
    let q = &shared.queued;
    let mut cur = q.load(Ordering::Acquire);
    loop {
        if cur != 0 && cur + cost > cap {
            return false;
        }
        match q.compare_exchange_weak(cur, cur + cost, Ordering::AcqRel, Ordering::Acquire) {
            Ok(_) => return true,
            Err(now) => cur = now,
        }
    }
}

/// The Router's handle on one stream's writer. Cloning is cheap.
#[derive(Clone)]
pub struct StreamLink {
    tx: mpsc::UnboundedSender<Queued>,
    shared: Arc<Shared>,
    high_water_mark: usize,
}

/// The writer task's end of a [`StreamLink`].
pub type LinkReceiver = mpsc::UnboundedReceiver<Queued>;

/// The queue was closed: the stream is gone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LinkClosed;

/// Why [`StreamLink::push`] or [`StreamLink::push_control`] refused.
#[derive(Debug)]
pub enum PushError {
    /// Over the cap: the peer is not reading fast enough.
    Full(Frame),
    Closed(Frame),
}

impl StreamLink {
    pub fn new(high_water_mark: usize) -> (StreamLink, LinkReceiver) {
        let (tx, rx) = mpsc::unbounded_channel();
        let shared = Arc::new(Shared {
            queued: AtomicUsize::new(0),
            control: AtomicUsize::new(0),
            drained: AtomicU64::new(0),
            closed: AtomicBool::new(false),
            room: Notify::new(),
        });
        (
            StreamLink {
                tx,
                shared,
                high_water_mark: high_water_mark.max(1),
            },
            rx,
        )
    }

    fn cost(frame: &Frame) -> usize {
        frame.data.len() + econtext_wire::HEADER_LEN
    }

    fn reserve(&self, cost: usize, cap: usize) -> bool {
        reserve(&self.shared, cost, cap)
    }

    /// This link's budget, for senders that take their room before they
    /// hand a frame to the Router.
    pub fn room(&self) -> LinkRoom {
        LinkRoom {
            shared: self.shared.clone(),
            high_water_mark: self.high_water_mark,
        }
    }

    /// Queues a frame whose room was reserved on this link beforehand,
    /// without checking the budget again. A reservation taken on another
    /// link (the route changed on the way) is given back and the frame
    /// is pushed as a forwarded one is, up to the hard cap.
    pub fn push_reserved(&self, frame: Frame, mut room: Reservation) -> Result<(), PushError> {
        if !Arc::ptr_eq(&room.shared, &self.shared) || room.cost != Self::cost(&frame) {
            drop(room);
            return self.push(frame);
        }
        if self.is_closed() {
            return Err(PushError::Closed(frame));
        }
        // The bytes pass from the reservation to the queued frame.
        let cost = std::mem::take(&mut room.cost);
        self.enqueue(frame, cost, false).map_err(PushError::Closed)
    }

    fn enqueue(&self, frame: Frame, cost: usize, control: bool) -> Result<(), Frame> {
        let item = Queued {
            frame,
            cost,
            control,
            shared: self.shared.clone(),
        };
        self.tx.send(item).map_err(|e| {
            let mut item = e.0;
            // Hand the frame back; the budget is released by the drop.
            std::mem::replace(&mut item.frame, Frame::new(Default::default(), Vec::new()))
        })
    }

    /// Queues without waiting when the queue is below its mark; hands the
    /// frame back when the caller must wait (see [`StreamLink::send`]).
    pub fn try_send(&self, frame: Frame) -> Result<Result<(), Frame>, LinkClosed> {
        if self.is_closed() {
            return Err(LinkClosed);
        }
        let cost = Self::cost(&frame);
        if !self.reserve(cost, self.high_water_mark) {
            return Ok(Err(frame));
        }
        self.enqueue(frame, cost, false)
            .map(Ok)
            .map_err(|_| LinkClosed)
    }

    /// Queues the frame, waiting while the queue is above its mark.
    pub async fn send(&self, mut frame: Frame) -> Result<(), LinkClosed> {
        loop {
            let room = self.shared.room.notified();
            tokio::pin!(room);
            room.as_mut().enable();
            match self.try_send(frame)? {
                Ok(()) => return Ok(()),
                Err(back) => frame = back,
            }
            room.await;
        }
    }

    /// Queues without waiting up to twice the mark (forwarded frames and
    /// replies: their sender is not here to wait).
    pub fn push(&self, frame: Frame) -> Result<(), PushError> {
        if self.is_closed() {
            return Err(PushError::Closed(frame));
        }
        let cost = Self::cost(&frame);
        if !self.reserve(cost, self.high_water_mark.saturating_mul(2)) {
            return Err(PushError::Full(frame));
        }
        self.enqueue(frame, cost, false).map_err(PushError::Closed)
    }

    /// Queues a control frame regardless of the byte budget, up to
    /// [`MAX_CONTROL_FRAMES`] outstanding.
    pub fn push_control(&self, frame: Frame) -> Result<(), PushError> {
        if self.is_closed() {
            return Err(PushError::Closed(frame));
        }
        if self.shared.control.fetch_add(1, Ordering::AcqRel) >= MAX_CONTROL_FRAMES {
            self.shared.control.fetch_sub(1, Ordering::AcqRel);
            return Err(PushError::Full(frame));
        }
        let cost = Self::cost(&frame);
        self.shared.queued.fetch_add(cost, Ordering::AcqRel);
        self.enqueue(frame, cost, true).map_err(PushError::Closed)
    }

    /// Bytes currently queued and not yet written.
    pub fn queued_bytes(&self) -> usize {
        self.shared.queued.load(Ordering::Acquire)
    }

    /// Bytes written since the link was made (progress, for stall checks).
    pub fn drained_bytes(&self) -> u64 {
        self.shared.drained.load(Ordering::Relaxed)
    }

    /// True when local senders would have to wait.
    pub fn is_above_mark(&self) -> bool {
        self.queued_bytes() >= self.high_water_mark
    }

    pub fn high_water_mark(&self) -> usize {
        self.high_water_mark
    }

    pub fn is_closed(&self) -> bool {
        self.shared.closed.load(Ordering::Acquire) || self.tx.is_closed()
    }

    /// Wakes every waiting sender with [`LinkClosed`].
    pub fn close(&self) {
        self.shared.closed.store(true, Ordering::Release);
        self.shared.room.notify_waiters();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use econtext_wire::Header;

    fn f(n: usize) -> Frame {
        Frame::new(Header::default(), vec![0u8; n])
    }

    #[tokio::test]
    async fn senders_wait_above_the_mark() {
        let (link, mut rx) = StreamLink::new(100);
        assert!(link.try_send(f(50)).unwrap().is_ok());
        assert!(link.try_send(f(50)).unwrap().is_err(), "50+36+50+36 > 100");
        assert_eq!(link.queued_bytes(), 86);
        let l2 = link.clone();
        let waiter = tokio::spawn(async move { l2.send(f(1000)).await });
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished());
        drop(rx.recv().await.unwrap());
        waiter.await.unwrap().unwrap();
        assert_eq!(link.queued_bytes(), 1036, "a jumbo frame goes alone");
    }

    #[tokio::test]
    async fn pushes_go_to_twice_the_mark_then_refuse() {
        let (link, _rx) = StreamLink::new(100);
        assert!(link.push(f(50)).is_ok());
        assert!(link.push(f(50)).is_ok());
        assert!(matches!(link.push(f(50)), Err(PushError::Full(_))));
        assert!(link.push_control(f(50)).is_ok(), "control ignores bytes");
    }

    #[tokio::test]
    async fn control_frames_are_capped_by_count() {
        let (link, _rx) = StreamLink::new(100);
        for _ in 0..MAX_CONTROL_FRAMES {
            link.push_control(f(0)).unwrap();
        }
        assert!(matches!(link.push_control(f(0)), Err(PushError::Full(_))));
    }

    #[tokio::test]
    async fn closing_wakes_waiters_and_refuses() {
        let (link, _rx) = StreamLink::new(10);
        link.try_send(f(10)).unwrap().unwrap();
        let l2 = link.clone();
        let waiter = tokio::spawn(async move { l2.send(f(10)).await });
        tokio::task::yield_now().await;
        link.close();
        assert_eq!(waiter.await.unwrap(), Err(LinkClosed));
        assert!(matches!(link.push(f(1)), Err(PushError::Closed(_))));
    }

    #[tokio::test]
    async fn reservations_stop_at_the_mark_and_give_their_bytes_back() {
        let (link, mut rx) = StreamLink::new(100);
        let room = link.room();
        let a = room.reserve(86).expect("room below the mark");
        assert_eq!(link.queued_bytes(), 86);
        assert!(room.reserve(86).is_none(), "86 + 86 > 100");
        assert!(
            link.try_send(f(50)).unwrap().is_err(),
            "the reservation counts"
        );
        // Queued on its reservation: no second charge, even at the mark.
        link.push_reserved(f(50), a).unwrap();
        assert_eq!(link.queued_bytes(), 86);
        drop(rx.recv().await.unwrap());
        assert_eq!(link.queued_bytes(), 0);
        assert_eq!(link.drained_bytes(), 86);
        // A reservation dropped unused gives its bytes back.
        drop(room.reserve(86).unwrap());
        assert_eq!(link.queued_bytes(), 0);
        link.close();
        assert!(room.reserve(1).is_none(), "a closed link has no room");
    }

    #[tokio::test]
    async fn a_reservation_taken_on_another_link_is_pushed_up_to_the_hard_cap() {
        let (a, _ra) = StreamLink::new(100);
        let (b, _rb) = StreamLink::new(100);
        b.push(f(150)).unwrap();
        let stray = a.room().reserve(86).unwrap();
        assert!(
            matches!(b.push_reserved(f(50), stray), Err(PushError::Full(_))),
            "b is at twice its mark"
        );
        assert_eq!(a.queued_bytes(), 0, "a's room was given back");
        assert_eq!(b.queued_bytes(), 186);
    }

    #[tokio::test]
    async fn drained_bytes_count_progress() {
        let (link, mut rx) = StreamLink::new(1000);
        link.try_send(f(4)).unwrap().unwrap();
        assert_eq!(link.drained_bytes(), 0);
        drop(rx.recv().await.unwrap());
        assert_eq!(link.drained_bytes(), 40);
    }
}
