//! Embedding: a [`MasterHandle`] that works from any tokio runtime
//! (multi-threaded included) by running the master's actix system on its
//! own thread when none is current. It is `Send + Sync + Clone`; the
//! [`Context`]s it hands back are too, and their calls can be awaited
//! from any task.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let master = econtext::MasterHandle::start(Default::default());
//! let ctx = master.local(Default::default()).await?;
//! let pid: u32 = ctx.call("os", "getpid", ()).await?;
//! master.shutdown().await;
//! # Ok(()) }
//! ```

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use futures::future::LocalBoxFuture;
use futures::FutureExt;
use tokio::sync::{mpsc, oneshot};

use crate::{ConnectError, ConnectOptions, Context, LocalOptions, Master, MasterOptions};

type Job = Box<dyn FnOnce(Master) -> LocalBoxFuture<'static, ()> + Send>;

/// The master's system stopped (after [`MasterHandle::shutdown`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the master has shut down")]
pub struct MasterGone;

/// A `Send + Sync` handle on a [`Master`]; see the module documentation.
#[derive(Clone)]
pub struct MasterHandle {
    jobs: mpsc::UnboundedSender<Job>,
    thread: Arc<Mutex<Option<JoinHandle<()>>>>,
}

impl MasterHandle {
    /// Starts a master. Inside a running actix system it lives there;
    /// otherwise (a plain `#[tokio::main]`, any thread) its actix system
    /// runs on a thread of its own, `econtext-master`.
    pub fn start(opts: MasterOptions) -> MasterHandle {
        let (jobs, rx) = mpsc::unbounded_channel::<Job>();
        let thread = if actix_rt::System::try_current().is_some() && on_an_arbiter() {
            actix_rt::spawn(async move { serve(Master::new(opts), rx).await });
            None
        } else {
            let t = std::thread::Builder::new()
                .name("econtext-master".into())
                .spawn(move || {
                    // Master::new starts actors: inside the system, not
                    // before; run() returns once shutdown() stops it.
                    let system = actix_rt::System::new();
                    system.block_on(async move {
                        actix_rt::spawn(serve(Master::new(opts), rx));
                    });
                    let _ = system.run();
                })
                .expect("spawn the master's thread");
            Some(t)
        };
        MasterHandle {
            jobs,
            thread: Arc::new(Mutex::new(thread)),
        }
    }

    /// Runs `f` with the master on its actix system and returns what it
    /// returns. Anything that must live in the actix system (starting
    /// contexts, serving handlers) goes through here.
    pub async fn run<T, F, Fut>(&self, f: F) -> Result<T, MasterGone>
    where
        F: FnOnce(Master) -> Fut + Send + 'static,
        Fut: Future<Output = T> + 'static,
        T: Send + 'static,
    {
        let (tx, rx) = oneshot::channel();
        let job: Job = Box::new(move |m| {
            async move {
                let _ = tx.send(f(m).await);
            }
            .boxed_local()
        });
        self.jobs.send(job).map_err(|_| MasterGone)?;
        rx.await.map_err(|_| MasterGone)
    }

    /// [`Master::connect`] from anywhere.
    pub async fn connect(&self, opts: ConnectOptions) -> Result<Context, ConnectError> {
        self.run(move |m| async move { m.connect(opts).await })
            .await
            .unwrap_or_else(|_| Err(ConnectError::Io(MasterGone.to_string())))
    }

    /// [`Master::local`] from anywhere.
    pub async fn local(&self, opts: LocalOptions) -> Result<Context, ConnectError> {
        self.connect(ConnectOptions::new(crate::Method::Local(opts)))
            .await
    }

    /// Ends every context ([`Master::shutdown`]), stops the master's actix
    /// system and, when it had a thread of its own, joins it.
    pub async fn shutdown(&self) {
        let _ = self.run(|m| async move { m.shutdown().await }).await;
        let _ = self
            .run(|_| async { actix_rt::System::current().stop() })
            .await;
        let thread = self.thread.lock().expect("thread lock").take();
        if let Some(t) = thread {
            let _ = tokio::task::spawn_blocking(move || t.join()).await;
        }
    }
}

/// Whether this thread runs an actix arbiter (where `actix::spawn` works).
fn on_an_arbiter() -> bool {
    std::panic::catch_unwind(actix_rt::Arbiter::current).is_ok()
}

async fn serve(master: Master, mut jobs: mpsc::UnboundedReceiver<Job>) {
    while let Some(job) = jobs.recv().await {
        actix_rt::spawn(job(master.clone()));
    }
}
