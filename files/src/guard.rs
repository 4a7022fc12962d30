//! Tells the far side when a transfer is abandoned (its future dropped,
//! or ended by an error on our side), so its writer or reader thread
//! stops instead of waiting for data or credit that will never come.

use actix::Addr;
use econtext_actors::router::Send;
use econtext_actors::{Context, Router};
use econtext_wire::{payload, Dead, Frame, Header};

/// Sends Dead to a handle of the far side when dropped, unless disarmed.
pub(crate) struct AbandonGuard {
    router: Addr<Router>,
    frame: Option<Frame>,
}

impl AbandonGuard {
    pub fn new(ctx: &Context, handle: econtext_wire::Handle) -> Self {
        let frame = payload::encode(&Dead::new("transfer abandoned"))
            .ok()
            .map(|d| Frame::new(Header::new(ctx.id(), ctx.me(), handle, 0), d));
        AbandonGuard {
            router: ctx.router().clone(),
            frame,
        }
    }

    /// The transfer finished: the far side needs no word.
    pub fn disarm(&mut self) {
        self.frame = None;
    }
}

impl Drop for AbandonGuard {
    fn drop(&mut self) {
        if let Some(f) = self.frame.take() {
            self.router.do_send(Send(f));
        }
    }
}
