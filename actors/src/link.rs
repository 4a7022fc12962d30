//! The write side of a stream as the Router sees it: a queue bounded in
//! bytes, so that a peer that stops reading makes senders wait instead of
//! growing memory without limit.

use std::sync::Arc;

use econtext_wire::Frame;
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};

/// Bytes that may sit in one stream's write queue before senders wait.
pub const DEFAULT_HIGH_WATER_MARK: usize = 8 * 1024 * 1024;

/// A frame waiting to be written, holding its share of the byte budget
/// until the writer has handed it to the kernel.
pub struct Queued {
    pub frame: Frame,
    pub(crate) _permit: OwnedSemaphorePermit,
}

/// The Router's handle on one stream's writer. Cloning is cheap.
#[derive(Clone)]
pub struct StreamLink {
    tx: mpsc::UnboundedSender<Queued>,
    budget: Arc<Semaphore>,
    high_water_mark: usize,
}

/// The writer task's end of a [`StreamLink`].
pub type LinkReceiver = mpsc::UnboundedReceiver<Queued>;

/// The queue was closed: the stream is gone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LinkClosed;

impl StreamLink {
    pub fn new(high_water_mark: usize) -> (StreamLink, LinkReceiver) {
        let (tx, rx) = mpsc::unbounded_channel();
        let hwm = high_water_mark.clamp(1, Semaphore::MAX_PERMITS);
        (
            StreamLink {
                tx,
                budget: Arc::new(Semaphore::new(hwm)),
                high_water_mark: hwm,
            },
            rx,
        )
    }

    fn cost(&self, frame: &Frame) -> u32 {
        // A frame larger than the whole budget waits for an empty queue,
        // then goes alone: memory stays within the mark plus one frame.
        (frame.data.len() + econtext_wire::HEADER_LEN).min(self.high_water_mark) as u32
    }

    /// Queues without waiting when the budget allows; hands the frame back
    /// when the caller must wait (see [`StreamLink::send`]).
    pub fn try_send(&self, frame: Frame) -> Result<Result<(), Frame>, LinkClosed> {
        match self
            .budget
            .clone()
            .try_acquire_many_owned(self.cost(&frame))
        {
            Ok(permit) => self
                .tx
                .send(Queued {
                    frame,
                    _permit: permit,
                })
                .map(Ok)
                .map_err(|_| LinkClosed),
            Err(tokio::sync::TryAcquireError::NoPermits) => Ok(Err(frame)),
            Err(tokio::sync::TryAcquireError::Closed) => Err(LinkClosed),
        }
    }

    /// Queues the frame, waiting while the queue is above its mark.
    pub async fn send(&self, frame: Frame) -> Result<(), LinkClosed> {
        let permit = self
            .budget
            .clone()
            .acquire_many_owned(self.cost(&frame))
            .await
            .map_err(|_| LinkClosed)?;
        self.tx
            .send(Queued {
                frame,
                _permit: permit,
            })
            .map_err(|_| LinkClosed)
    }

    /// Bytes currently queued and not yet written.
    pub fn queued_bytes(&self) -> usize {
        self.high_water_mark - self.budget.available_permits()
    }

    pub fn high_water_mark(&self) -> usize {
        self.high_water_mark
    }

    pub fn is_closed(&self) -> bool {
        self.tx.is_closed()
    }

    /// Wakes every waiting sender with [`LinkClosed`].
    pub fn close(&self) {
        self.budget.close();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use econtext_wire::Header;

    #[tokio::test]
    async fn senders_wait_above_the_mark() {
        let (link, mut rx) = StreamLink::new(100);
        let f = |n| Frame::new(Header::default(), vec![0u8; n]);
        assert!(link.try_send(f(50)).unwrap().is_ok());
        assert!(link.try_send(f(50)).unwrap().is_err(), "50+36+50+36 > 100");
        assert_eq!(link.queued_bytes(), 86);
        let l2 = link.clone();
        let waiter = tokio::spawn(async move { l2.send(f(1000)).await });
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished());
        drop(rx.recv().await.unwrap());
        waiter.await.unwrap().unwrap();
        assert_eq!(
            link.queued_bytes(),
            100,
            "a jumbo frame takes the whole budget"
        );
    }
}
