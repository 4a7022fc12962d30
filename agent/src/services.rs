//! What a Rust context offers, registered once and used the same way by an
//! in-process context and by an agent in another process.

use std::rc::Rc;

use actix::prelude::*;
use econtext_actors::dispatch::Functions;
use econtext_actors::serve::{serve_on, Request};
use econtext_actors::Router;
use econtext_wire::{ContextId, Handle};
use serde::de::DeserializeOwned;
use serde::Serialize;

type Setup = Rc<dyn Fn(&Addr<Router>, ContextId)>;

/// Functions by dotted name plus users' actors served on fixed handles.
///
/// ```
/// let mut s = econtext_agent::Services::default();
/// s.functions.register("math.add", |(a, b): (i64, i64)| a + b);
/// ```
#[derive(Clone, Default)]
pub struct Services {
    /// Called through CALL_FUNCTION (`ctx.call("math", "add", (1, 2))`).
    pub functions: Functions,
    actors: Vec<Setup>,
}

impl Services {
    pub fn new(functions: Functions) -> Self {
        Services {
            functions,
            actors: Vec::new(),
        }
    }

    /// Serves an actor made by `make` on `handle` (pick one below 1000 and
    /// above the protocol's, e.g. 500) in every context these services
    /// start: callers use `ctx.request::<R>(handle, &value)`. `make` runs
    /// inside the context's actix system when the context starts.
    pub fn serve<T, R, A, F>(&mut self, handle: Handle, make: F) -> &mut Self
    where
        T: DeserializeOwned + std::marker::Send + 'static,
        R: Serialize + std::marker::Send + 'static,
        A: Actor<Context = actix::Context<A>> + Handler<Request<T, R>>,
        F: Fn() -> A + 'static,
    {
        self.actors.push(Rc::new(move |router, me| {
            serve_on::<T, R, A>(router, me, handle, make().start());
        }));
        self
    }

    /// Starts the served actors on `router` (context `me`). Their handles
    /// are registered before this returns.
    pub fn start_actors(&self, router: &Addr<Router>, me: ContextId) {
        for setup in &self.actors {
            setup(router, me);
        }
    }
}

impl From<Functions> for Services {
    fn from(functions: Functions) -> Self {
        Services::new(functions)
    }
}
