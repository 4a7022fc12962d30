//! The fan-out: run one closure per target, at most `forks` at once,
//! yielding each target's outcome as soon as it is known.

use std::cell::{Cell, RefCell};
use std::collections::{BTreeSet, HashMap, HashSet};
use std::future::Future;
use std::rc::Rc;
use std::time::Duration;

use econtext_actors::Context;
use econtext_bootstrap::ConnectError;
use futures::future::{LocalBoxFuture, Shared};
use futures::stream::{self, LocalBoxStream};
use futures::{FutureExt, StreamExt};

use crate::gate::{ConnectGate, Permit};
use crate::retry::Backoff;
use crate::{FleetError, Hop, Target};

/// How contexts are created and ended. `econtext::Master` implements it;
/// the fan-out never starts processes itself.
pub trait Connector: 'static {
    /// Creates the context `hop` describes, through `via` when given.
    fn connect(
        &self,
        hop: &Hop,
        via: Option<&Context>,
        timeout: Duration,
    ) -> LocalBoxFuture<'static, Result<Context, ConnectError>>;

    /// Ends a context this fan-out created and no longer needs. Must not
    /// wait for the remote side for long.
    fn release(&self, ctx: Context) -> LocalBoxFuture<'static, ()> {
        async move {
            let _ = ctx.shutdown().await;
        }
        .boxed_local()
    }
}

/// Limits of one fan-out.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct FleetOptions {
    /// Targets worked on at once.
    pub forks: usize,
    /// Deadline for creating one target's own contexts (its whole chain).
    pub connect_timeout: Duration,
    /// Deadline for the closure once connected (None: no limit).
    pub call_timeout: Option<Duration>,
    /// Connect attempts after the first that failed (default 0: off).
    pub retries: u32,
    /// First retry's mean delay; doubled each time, jittered by ±50%.
    pub retry_delay: Duration,
    /// Connects at once beyond a floor of 4 per CPU only while the CPUs
    /// have idle time (default on; see `pacer.rs` for why). Off: up to
    /// `forks` connect at once whatever the load.
    pub pace_connects: bool,
}

impl Default for FleetOptions {
    fn default() -> Self {
        FleetOptions {
            forks: 32,
            connect_timeout: Duration::from_secs(30),
            call_timeout: None,
            retries: 0,
            retry_delay: Duration::from_millis(500),
            pace_connects: true,
        }
    }
}

impl FleetOptions {
    pub fn forks(mut self, n: usize) -> Self {
        self.forks = n.max(1);
        self
    }
    pub fn connect_timeout(mut self, d: Duration) -> Self {
        self.connect_timeout = d;
        self
    }
    pub fn call_timeout(mut self, d: Option<Duration>) -> Self {
        self.call_timeout = d;
        self
    }
    pub fn retries(mut self, n: u32) -> Self {
        self.retries = n;
        self
    }
    pub fn retry_delay(mut self, d: Duration) -> Self {
        self.retry_delay = d;
        self
    }
    pub fn pace_connects(mut self, on: bool) -> Self {
        self.pace_connects = on;
        self
    }
}

type SharedConnect = Shared<LocalBoxFuture<'static, Result<Context, ConnectError>>>;

struct Inner<C> {
    connector: C,
    opts: FleetOptions,
    /// Contexts that several targets reach through (by chain prefix).
    shared: RefCell<HashMap<String, SharedConnect>>,
    shared_keys: RefCell<HashSet<String>>,
    running: RefCell<BTreeSet<String>>,
    /// How long each finished target took, connect and call together.
    took: RefCell<HashMap<String, Duration>>,
    stopped: Cell<bool>,
    gate: ConnectGate,
}

/// A fan-out over a fleet. Cheap to clone: clones share the bastion
/// contexts, the set of running targets and the stop flag.
pub struct Fleet<C> {
    inner: Rc<Inner<C>>,
}

impl<C> Clone for Fleet<C> {
    fn clone(&self) -> Self {
        Fleet {
            inner: self.inner.clone(),
        }
    }
}

/// One target's outcome.
pub type Outcome<T> = (Target, Result<T, FleetError>);

impl<C: Connector> Fleet<C> {
    pub fn new(connector: C, opts: FleetOptions) -> Fleet<C> {
        Fleet {
            inner: Rc::new(Inner {
                connector,
                gate: ConnectGate::new(opts.pace_connects),
                opts,
                shared: RefCell::new(HashMap::new()),
                shared_keys: RefCell::new(HashSet::new()),
                running: RefCell::new(BTreeSet::new()),
                took: RefCell::new(HashMap::new()),
                stopped: Cell::new(false),
            }),
        }
    }

    /// Runs `f` on each target's context; yields `(target, result)` in
    /// completion order. Targets not yet started when [`Fleet::stop`] is
    /// called yield [`FleetError::NotStarted`].
    pub fn run<T, F, Fut>(&self, targets: Vec<Target>, f: F) -> LocalBoxStream<'static, Outcome<T>>
    where
        T: 'static,
        F: Fn(Context, Target) -> Fut + 'static,
        Fut: Future<Output = Result<T, FleetError>> + 'static,
    {
        {
            // A chain prefix used by another target is shared: created
            // once, never released by one target.
            let mut keys = self.inner.shared_keys.borrow_mut();
            for t in &targets {
                for n in 1..t.hops.len() {
                    keys.insert(t.prefix_key(n));
                }
            }
        }
        let inner = self.inner.clone();
        let f = Rc::new(f);
        let forks = self.inner.opts.forks.max(1);
        stream::iter(targets)
            .map(move |t| one(inner.clone(), t, f.clone()))
            .buffer_unordered(forks)
            .boxed_local()
    }

    /// Stops starting new targets; those running go on.
    pub fn stop(&self) {
        self.inner.stopped.set(true);
        self.inner.gate.wake_all();
    }

    pub fn is_stopped(&self) -> bool {
        self.inner.stopped.get()
    }

    /// Names of the targets being connected or called right now.
    pub fn running(&self) -> Vec<String> {
        self.inner.running.borrow().iter().cloned().collect()
    }

    /// How long a finished target took (connect and call), once its
    /// outcome has been yielded.
    pub fn elapsed(&self, target: &str) -> Option<Duration> {
        self.inner.took.borrow().get(target).copied()
    }

    /// Ends the shared (bastion) contexts this fleet created.
    pub async fn release_shared(&self) {
        let shared: Vec<SharedConnect> = self
            .inner
            .shared
            .borrow_mut()
            .drain()
            .map(|(_, f)| f)
            .collect();
        for s in shared {
            if let Some(Ok(ctx)) = s.peek().cloned() {
                self.inner.connector.release(ctx).await;
            }
        }
    }
}

async fn one<C, T, F, Fut>(inner: Rc<Inner<C>>, t: Target, f: Rc<F>) -> Outcome<T>
where
    C: Connector,
    F: Fn(Context, Target) -> Fut,
    Fut: Future<Output = Result<T, FleetError>>,
{
    // A stop before or while waiting for a place: never started.
    let Some(permit) = inner.gate.enter(Some(&inner.stopped)).await else {
        return (t, Err(FleetError::NotStarted));
    };
    inner.running.borrow_mut().insert(t.name.clone());
    let start = std::time::Instant::now();
    let owned = RefCell::new(Vec::new());
    let r = async {
        let ctx = connect_with_retries(&inner, &t, &owned, permit)
            .await
            .map_err(FleetError::Unreachable)?;
        let call = f(ctx, t.clone());
        match inner.opts.call_timeout {
            Some(d) => tokio::time::timeout(d, call)
                .await
                .unwrap_or(Err(FleetError::Timeout(d))),
            None => call.await,
        }
    }
    .await;
    release_all(&inner, &owned).await;
    inner.running.borrow_mut().remove(&t.name);
    inner
        .took
        .borrow_mut()
        .insert(t.name.clone(), start.elapsed());
    (t, r)
}

async fn release_all<C: Connector>(inner: &Inner<C>, owned: &RefCell<Vec<Context>>) {
    let owned: Vec<Context> = owned.borrow_mut().drain(..).collect();
    for ctx in owned.into_iter().rev() {
        inner.connector.release(ctx).await;
    }
}

async fn connect_with_retries<C: Connector>(
    inner: &Inner<C>,
    t: &Target,
    owned: &RefCell<Vec<Context>>,
    first: Permit<'_>,
) -> Result<Context, ConnectError> {
    let mut backoff = Backoff::new(inner.opts.retry_delay, inner.opts.retries);
    let mut permit = Some(first);
    loop {
        // The place is held for one attempt, not across the backoff; the
        // deadline starts once the target has its place.
        let held = match permit.take() {
            Some(p) => p,
            // A retry is part of a started target: a stop does not end it.
            None => inner.gate.enter(None).await.expect("no stop to see"),
        };
        let deadline = inner.opts.connect_timeout;
        let r = tokio::time::timeout(deadline, connect_chain(inner, t, owned))
            .await
            .unwrap_or_else(|_| {
                Err(ConnectError::Timeout {
                    stage: "the target's connect deadline",
                    after: deadline,
                    stderr: Vec::new(),
                })
            });
        drop(held);
        match r {
            Ok(ctx) => return Ok(ctx),
            Err(e) => {
                release_all(inner, owned).await;
                match backoff.next_delay(rand::random::<f64>()) {
                    Some(d) => tokio::time::sleep(d).await,
                    None => return Err(e),
                }
            }
        }
    }
}

async fn connect_chain<C: Connector>(
    inner: &Inner<C>,
    t: &Target,
    owned: &RefCell<Vec<Context>>,
) -> Result<Context, ConnectError> {
    let timeout = inner.opts.connect_timeout;
    let mut via: Option<Context> = None;
    for n in 1..=t.hops.len() {
        let hop = &t.hops[n - 1];
        let key = t.prefix_key(n);
        let ctx = if inner.shared_keys.borrow().contains(&key) {
            let fut = inner
                .shared
                .borrow_mut()
                .entry(key.clone())
                .or_insert_with(|| inner.connector.connect(hop, via.as_ref(), timeout).shared())
                .clone();
            let r = fut.await;
            if r.is_err() {
                // A later attempt (a retry) tries again.
                inner.shared.borrow_mut().remove(&key);
            }
            r?
        } else {
            let ctx = inner.connector.connect(hop, via.as_ref(), timeout).await?;
            owned.borrow_mut().push(ctx.clone());
            ctx
        };
        via = Some(ctx);
    }
    via.ok_or_else(|| ConnectError::Protocol(format!("target {} has no hops", t.name)))
}
