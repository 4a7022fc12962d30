//! Spinning before sleeping: a reader that expects a reply soon polls
//! again instead of letting its thread halt.
//!
//! Why: on a VM whose idle vCPU halts at once (Firecracker with
//! `haltpoll.guest_halt_poll_ns=0`), waking a halted vCPU costs an IPI
//! and a VM exit, and that costs more CPU than polling for a few tens of
//! microseconds. Two Python processes ping-ponging a byte over a
//! socketpair took 95-147 µs and 87-126 µs of CPU (both sides) per round
//! trip when each slept in `poll()`, and 7-9 µs and 21-25 µs of CPU when
//! each polled `poll(0)` for up to 50 µs first (docs/PERFORMANCE.md,
//! "Spinning before sleeping (fifth session, spin)"): bounded spinning is both faster and
//! cheaper there. The Python child does the same after writing to its
//! parent (`econtext_core.py`, `should_spin`).
//!
//! - [`SpinPolicy`]: the rule, with no clock (the caller passes `now`).
//! - [`LinkSpin`]: what one link's rule needs to know, kept so that a
//!   hostile child cannot make its parent spin: the parent spins on a link
//!   only while it awaits a reply there (requests it sent itself, not yet
//!   matched by a frame back) and for at most the window since the last
//!   of its own requests or of the frames that came back. Each extension
//!   of the window is paid for by a request this context made, so
//!   spinning costs at most two windows per own request, whatever the
//!   child sends (a child never called makes its parent spin not at all).
//! - [`SpinRead`]: the reader wrapper that acts on it.
//!
//! How a spin turn runs (tokio 1.54, actix-rt 2.15): actix runs every
//! actor in a `LocalSet` inside a current-thread runtime's `block_on`. A
//! task that wakes itself with `wake_by_ref` goes back on the LocalSet's
//! queue and is polled again in the same tick (up to 61 tasks per tick)
//! without the I/O driver being polled: other links' readiness would wait
//! behind the spin. `tokio::task::yield_now` instead hands the waker to
//! the scheduler's deferred list; when the LocalSet has nothing left to
//! run, `block_on` sees pending work and calls `park_yield`, which polls
//! the I/O driver and timers with a zero timeout (`epoll_wait(.., 0)`)
//! and only then wakes the deferred tasks. So each spin turn is: every
//! other ready task runs, one non-blocking epoll, then this reader polls
//! its socket's readiness again. The thread never blocks in a spin and no
//! other link's traffic waits behind it; when data arrives, the epoll of
//! that turn reports it and the read completes as usual.

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};
use std::time::{Duration, Instant};

use econtext_wire::{ContextId, Header};
use tokio::io::{AsyncRead, ReadBuf};

/// How long a reader keeps polling before it lets its thread sleep.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SpinPolicy {
    window: Duration,
}

impl SpinPolicy {
    /// What measured best on the project's 2-vCPU Firecracker VM
    /// (docs/PERFORMANCE.md, "Spinning before sleeping (fifth session, spin)").
    pub const DEFAULT_WINDOW: Duration = Duration::from_micros(50);
    /// Longer windows are cut to this: past a wake-up's cost (tens of µs)
    /// a longer spin only burns CPU.
    pub const MAX_WINDOW: Duration = Duration::from_millis(1);
    /// Never spins.
    pub const OFF: SpinPolicy = SpinPolicy {
        window: Duration::ZERO,
    };

    /// A policy spinning for `window` (zero: off; at most [`Self::MAX_WINDOW`]).
    pub fn new(window: Duration) -> SpinPolicy {
        SpinPolicy {
            window: window.min(Self::MAX_WINDOW),
        }
    }

    pub fn window(&self) -> Duration {
        self.window
    }

    pub fn is_off(&self) -> bool {
        self.window.is_zero()
    }

    /// The rule: spin while less than the window has passed since
    /// `last_activity` (`0 <= now - last_activity < window`).
    pub fn should_spin(&self, now: Instant, last_activity: Instant) -> bool {
        now.checked_duration_since(last_activity)
            .is_some_and(|since| since < self.window)
    }
}

impl Default for SpinPolicy {
    fn default() -> Self {
        SpinPolicy::new(Self::DEFAULT_WINDOW)
    }
}

/// What a read that would block does (decided by [`ThreadSpin::decide`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SpinAction {
    /// Wait for readiness as usual: the thread may sleep.
    Sleep,
    /// Poll again after the runtime's next non-blocking driver pass.
    Spin,
    /// The same, after letting another runnable thread on this CPU run
    /// first (at most once per runtime thread per turn).
    YieldAndSpin,
}

/// The rule for one runtime thread (all its links at once), with no
/// clock and no I/O: the thread keeps what it needs in thread-locals
/// ([`SpinRead`]) and asks this.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ThreadSpin {
    /// Links on this thread with replies to own requests still due.
    pub awaiting_links: u32,
    /// Whether a reader on this thread already yielded the CPU in this
    /// turn (since the runtime's last driver pass).
    pub yielded_this_turn: bool,
}

impl ThreadSpin {
    /// At most this many links awaiting replies: a latency-bound caller
    /// (one call at a time, perhaps one per child of two). A fan-out to
    /// more children is throughput-bound: replies keep arriving anyway,
    /// and spinning on each link only burns the master's CPU.
    pub const MAX_AWAITING_LINKS: u32 = 2;

    /// What a would-block read on a link whose own rule says
    /// `link_spins` does.
    pub fn decide(&self, link_spins: bool) -> SpinAction {
        if !link_spins || self.awaiting_links > Self::MAX_AWAITING_LINKS {
            SpinAction::Sleep
        } else if self.yielded_this_turn {
            SpinAction::Spin
        } else {
            SpinAction::YieldAndSpin
        }
    }
}

/// One link's spinning state: its policy, the replies this context awaits
/// on it, and when the window last (re)started. No clock: every method
/// takes `now`.
#[derive(Clone, Copy, Debug)]
pub struct LinkSpin {
    policy: SpinPolicy,
    /// This context: only requests it sent itself count (frames it
    /// forwards for others are not its own wait).
    local: ContextId,
    /// Own requests sent, less frames received since (saturating): an
    /// upper bound on the replies still due, never grown by the peer.
    awaited: u32,
    last: Option<Instant>,
    /// Whether the window started at `last` has been spun in yet.
    spun: bool,
    /// Windows in which this link spun at least once.
    windows: u64,
}

impl LinkSpin {
    /// The state of a new link of `local`'s.
    pub fn new(policy: SpinPolicy, local: ContextId) -> LinkSpin {
        LinkSpin {
            policy,
            local,
            awaited: 0,
            last: None,
            spun: false,
            windows: 0,
        }
    }

    pub fn policy(&self) -> SpinPolicy {
        self.policy
    }

    /// Whether replies to own requests are still due on this link.
    pub fn awaits(&self) -> bool {
        self.awaited > 0
    }

    /// Windows in which this link spun (each paid for by an own request
    /// or by a frame back while replies were due: at most two per own
    /// request).
    pub fn windows(&self) -> u64 {
        self.windows
    }

    /// True when `header`, written on this link, is this context's own
    /// request: it asks for a reply (`reply_to`) and comes from here.
    pub fn is_own_request(&self, header: &Header) -> bool {
        header.reply_to != 0 && header.src == self.local
    }

    /// `n` own requests reached the kernel at `now`.
    pub fn sent_requests(&mut self, n: usize, now: Instant) {
        if n > 0 {
            self.awaited = self.awaited.saturating_add(n.min(u32::MAX as usize) as u32);
            self.restart(now);
        }
    }

    /// `n` whole frames arrived at `now`. While replies are awaited each
    /// restarts the window and uses one up; otherwise nothing changes, so
    /// a peer that was not asked anything cannot start a spin.
    pub fn received(&mut self, n: usize, now: Instant) {
        if n > 0 && self.awaited > 0 {
            self.restart(now);
            self.awaited = self.awaited.saturating_sub(n.min(u32::MAX as usize) as u32);
        }
    }

    fn restart(&mut self, now: Instant) {
        self.last = Some(now);
        self.spun = false;
    }

    /// Whether a read that would block should poll again at `now`.
    pub fn should_spin(&self, now: Instant) -> bool {
        self.awaited > 0
            && self
                .last
                .is_some_and(|last| self.policy.should_spin(now, last))
    }

    /// A read is spinning now: counts the window once.
    pub fn spinning(&mut self) {
        if !self.spun {
            self.spun = true;
            self.windows += 1;
        }
    }
}

thread_local! {
    /// Links on this thread whose `LinkSpin::awaits()` (kept by [`SpinCell`]).
    static AWAITING_LINKS: Cell<u32> = const { Cell::new(0) };
    /// A reader on this thread yielded the CPU since the last driver pass.
    static YIELDED: Cell<bool> = const { Cell::new(false) };
    /// Spin windows started on this thread (all links, ever).
    static WINDOWS: Cell<u64> = const { Cell::new(0) };
}

/// Spin windows the links on the calling thread have spun in, ever (each
/// link's [`LinkSpin::windows`], summed): a deterministic count for tests
/// and benchmarks of what spinning cost.
pub fn windows_started() -> u64 {
    WINDOWS.with(Cell::get)
}

/// A link's spin state, shared by its Stream's read and write loops (one
/// thread: the Stream actor's), keeping the thread's count of awaiting
/// links true, also when the link goes away with replies due.
pub struct SpinCell {
    state: RefCell<LinkSpin>,
}

impl SpinCell {
    /// Applies `f` and brings the thread's awaiting count up to date.
    fn update(&self, f: impl FnOnce(&mut LinkSpin)) {
        let mut s = self.state.borrow_mut();
        let before = s.awaits();
        f(&mut s);
        match (before, s.awaits()) {
            (false, true) => AWAITING_LINKS.with(|c| c.set(c.get().saturating_add(1))),
            (true, false) => AWAITING_LINKS.with(|c| c.set(c.get().saturating_sub(1))),
            _ => {}
        }
    }

    /// This link's spin state (a copy).
    pub fn get(&self) -> LinkSpin {
        *self.state.borrow()
    }
}

impl Drop for SpinCell {
    fn drop(&mut self) {
        if self.state.get_mut().awaits() {
            AWAITING_LINKS.with(|c| c.set(c.get().saturating_sub(1)));
        }
    }
}

/// See [`SpinCell`].
pub type SharedSpin = Rc<SpinCell>;

/// The shared state for a Stream's two loops, or None when the link does
/// not spin (none given, or a zero window): then nothing reads the clock.
pub fn shared(spin: Option<LinkSpin>) -> Option<SharedSpin> {
    spin.filter(|s| !s.policy().is_off()).map(|s| {
        Rc::new(SpinCell {
            state: RefCell::new(s),
        })
    })
}

/// The read loop handed `n` whole frames on.
pub fn received(spin: &Option<SharedSpin>, n: usize) {
    if let Some(s) = spin {
        if s.state.borrow().awaits() {
            s.update(|s| s.received(n, Instant::now()));
        }
    }
}

/// The write loop's frames with these headers are in the kernel. When own
/// requests were among them, the reader (polled in the same actor task,
/// but perhaps already waiting for readiness) is polled again after the
/// runtime's next driver pass, so that it starts spinning.
pub async fn sent<'a>(spin: &Option<SharedSpin>, headers: impl Iterator<Item = &'a Header>) {
    let Some(s) = spin else { return };
    let requests = {
        let s = s.state.borrow();
        headers.filter(|h| s.is_own_request(h)).count()
    };
    if requests > 0 {
        s.update(|s| s.sent_requests(requests, Instant::now()));
        std::future::poll_fn(|cx| {
            wake_after_driver(cx);
            Poll::Ready(())
        })
        .await;
    }
}

/// A reader that, when a read would block and the rules say so (its
/// link's [`LinkSpin`], then its thread's [`ThreadSpin`]), has its task
/// polled again after the runtime's next non-blocking pass over the I/O
/// driver (see the module's comment) instead of sleeping.
pub struct SpinRead<R> {
    inner: R,
    spin: SharedSpin,
}

impl<R> SpinRead<R> {
    pub fn new(inner: R, spin: SharedSpin) -> SpinRead<R> {
        SpinRead { inner, spin }
    }
}

impl<R: AsyncRead + Unpin> AsyncRead for SpinRead<R> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let res = Pin::new(&mut self.inner).poll_read(cx, buf);
        // Pending: the inner reader has registered our waker with the I/O
        // driver, so data wakes us as usual; spinning adds a deferred wake.
        // Nothing awaited (the usual case): no clock read.
        if res.is_pending() && self.spin.state.borrow().awaits() {
            let link_spins = self.spin.state.borrow().should_spin(Instant::now());
            let thread = ThreadSpin {
                awaiting_links: AWAITING_LINKS.with(Cell::get),
                yielded_this_turn: YIELDED.with(Cell::get),
            };
            match thread.decide(link_spins) {
                SpinAction::Sleep => return res,
                SpinAction::YieldAndSpin => yield_cpu_once_this_turn(),
                SpinAction::Spin => {}
            }
            let mut s = self.spin.state.borrow_mut();
            if !s.spun {
                WINDOWS.with(|c| c.set(c.get() + 1));
            }
            s.spinning();
            drop(s);
            wake_after_driver(cx);
        }
        res
    }
}

/// Lets another runnable thread on this CPU run first (the peer, often:
/// under load the scheduler keeps both ends of a link on one CPU, where
/// a spin that kept the CPU would only delay the reply it waits for).
/// Without other runnable threads it returns at once. With a CPU hog
/// runnable it can keep this thread off the CPU for a time slice
/// (milliseconds), which is why it happens at most once per thread per
/// turn: the flag is cleared by a deferred wake, run after the driver pass
/// that ends the turn, before any spinning reader is polled again.
fn yield_cpu_once_this_turn() {
    YIELDED.with(|y| y.set(true));
    // SAFETY: sched_yield takes no arguments and cannot fail on Linux.
    unsafe { nix::libc::sched_yield() };
    let waker = Waker::from(Arc::new(TurnEnds));
    wake_after_driver(&mut Context::from_waker(&waker));
}

/// Woken (through the scheduler's deferred list) when a turn ends.
struct TurnEnds;

impl Wake for TurnEnds {
    fn wake(self: Arc<Self>) {
        YIELDED.with(|y| y.set(false));
    }
}

/// Wakes this task once the runtime has polled its I/O driver without
/// blocking: `yield_now`'s first poll defers the waker and returns
/// Pending; dropping the future then leaves the deferred wake in place.
fn wake_after_driver(cx: &mut Context<'_>) {
    let yielding = std::pin::pin!(tokio::task::yield_now());
    let _ = yielding.poll(cx);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn us(n: u64) -> Duration {
        Duration::from_micros(n)
    }

    fn call(src: ContextId) -> Header {
        Header::new(5, src, econtext_wire::handles::CALL_FUNCTION, 1234)
    }

    #[test]
    fn the_rule_spins_only_inside_the_window() {
        let t0 = Instant::now();
        let p = SpinPolicy::new(us(50));
        assert!(p.should_spin(t0, t0));
        assert!(p.should_spin(t0 + us(49), t0));
        assert!(!p.should_spin(t0 + us(50), t0));
        assert!(!p.should_spin(t0 + us(5000), t0));
        // A last activity after `now` (never with one monotonic clock) is
        // no reason to spin.
        assert!(!p.should_spin(t0, t0 + us(1)));
    }

    #[test]
    fn a_zero_window_never_spins_and_a_huge_one_is_capped() {
        let t0 = Instant::now();
        assert!(SpinPolicy::OFF.is_off());
        assert!(!SpinPolicy::OFF.should_spin(t0, t0));
        assert!(!SpinPolicy::new(Duration::ZERO).should_spin(t0, t0));
        let huge = SpinPolicy::new(Duration::from_secs(3600));
        assert_eq!(huge.window(), SpinPolicy::MAX_WINDOW);
        assert!(!huge.should_spin(t0 + Duration::from_millis(2), t0));
        assert_eq!(SpinPolicy::default().window(), SpinPolicy::DEFAULT_WINDOW);
    }

    #[test]
    fn a_link_spins_after_an_own_request_until_the_reply_or_the_window() {
        let t0 = Instant::now();
        let mut s = LinkSpin::new(SpinPolicy::new(us(50)), 0);
        assert!(!s.should_spin(t0), "nothing asked: no spin");
        s.sent_requests(1, t0);
        assert!(s.should_spin(t0 + us(10)));
        assert!(!s.should_spin(t0 + us(50)), "the window is over");
        s.received(1, t0 + us(30));
        assert!(
            !s.should_spin(t0 + us(31)),
            "the reply came: nothing awaited"
        );
    }

    #[test]
    fn frames_back_restart_the_window_only_while_replies_are_awaited() {
        let t0 = Instant::now();
        let mut s = LinkSpin::new(SpinPolicy::new(us(50)), 0);
        s.sent_requests(3, t0);
        s.received(1, t0 + us(40));
        assert!(s.should_spin(t0 + us(80)), "one reply in, two awaited");
        s.received(2, t0 + us(85));
        assert!(!s.should_spin(t0 + us(90)));
        // More frames than requests: no debt, and no further window.
        s.received(10, t0 + us(95));
        assert!(!s.should_spin(t0 + us(96)));
    }

    #[test]
    fn a_peer_never_asked_anything_cannot_start_a_spin() {
        let t0 = Instant::now();
        let mut s = LinkSpin::new(SpinPolicy::new(us(50)), 0);
        for i in 0..10_000 {
            s.received(1, t0 + us(i * 20));
            assert!(!s.should_spin(t0 + us(i * 20 + 1)));
        }
    }

    #[test]
    fn a_trickling_peer_extends_the_window_at_most_once_per_own_request() {
        // One call in flight; the peer then sends frames every 20 µs: the
        // first uses up the awaited reply, the rest change nothing.
        let t0 = Instant::now();
        let mut s = LinkSpin::new(SpinPolicy::new(us(50)), 0);
        s.sent_requests(1, t0);
        let spinning: u64 = (1..1000)
            .filter(|i| {
                s.received(1, t0 + us(i * 20));
                s.should_spin(t0 + us(i * 20 + 10))
            })
            .count() as u64;
        assert_eq!(spinning, 0);
    }

    #[test]
    fn only_this_contexts_own_requests_count() {
        let s = LinkSpin::new(SpinPolicy::default(), 0);
        assert!(s.is_own_request(&call(0)));
        assert!(!s.is_own_request(&call(7)), "forwarded for context 7");
        let mut reply = call(0);
        reply.reply_to = 0;
        assert!(!s.is_own_request(&reply), "no reply wanted");
    }

    #[test]
    fn awaited_replies_saturate_instead_of_wrapping() {
        let t0 = Instant::now();
        let mut s = LinkSpin::new(SpinPolicy::default(), 0);
        s.sent_requests(usize::MAX, t0);
        s.sent_requests(5, t0);
        assert!(s.should_spin(t0));
        s.received(usize::MAX, t0);
        assert!(!s.should_spin(t0));
    }

    #[test]
    fn a_thread_yields_at_most_once_a_turn_and_spins_only_for_few_awaiting_links() {
        let t = |awaiting_links, yielded_this_turn| ThreadSpin {
            awaiting_links,
            yielded_this_turn,
        };
        assert_eq!(
            t(1, false).decide(false),
            SpinAction::Sleep,
            "the link's window is over"
        );
        assert_eq!(t(1, false).decide(true), SpinAction::YieldAndSpin);
        assert_eq!(
            t(1, true).decide(true),
            SpinAction::Spin,
            "one yield a turn"
        );
        assert_eq!(t(2, true).decide(true), SpinAction::Spin);
        // A fan-out (200 children called at once) is throughput-bound.
        assert_eq!(t(3, false).decide(true), SpinAction::Sleep);
        assert_eq!(t(200, true).decide(true), SpinAction::Sleep);
    }

    #[test]
    fn a_window_is_counted_once_however_many_turns_spin_in_it() {
        let t0 = Instant::now();
        let mut s = LinkSpin::new(SpinPolicy::new(us(50)), 0);
        s.sent_requests(2, t0);
        for _ in 0..100 {
            s.spinning();
        }
        assert_eq!(s.windows(), 1);
        s.received(1, t0 + us(10));
        s.spinning();
        assert_eq!(s.windows(), 2, "a reply restarted the window");
        s.received(5, t0 + us(20));
        s.received(5, t0 + us(30));
        assert!(!s.awaits());
        assert_eq!(s.windows(), 2, "frames not awaited start none");
    }

    #[test]
    fn the_threads_awaiting_count_follows_links_and_their_drop() {
        let count = || AWAITING_LINKS.with(Cell::get);
        let base = count();
        let a = shared(Some(LinkSpin::new(SpinPolicy::default(), 0))).unwrap();
        let b = shared(Some(LinkSpin::new(SpinPolicy::default(), 0))).unwrap();
        a.update(|s| s.sent_requests(3, Instant::now()));
        b.update(|s| s.sent_requests(1, Instant::now()));
        assert_eq!(count(), base + 2);
        a.update(|s| s.received(1, Instant::now()));
        assert_eq!(count(), base + 2, "two replies still due on a");
        b.update(|s| s.received(1, Instant::now()));
        assert_eq!(count(), base + 1);
        drop(a);
        assert_eq!(count(), base, "a link gone with replies due");
        drop(b);
        assert_eq!(count(), base);
    }
}
