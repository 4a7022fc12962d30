//! Rust contexts' CALL_FUNCTION: functions registered by name, called with
//! decoded arguments, their results or failures (panics included) sent
//! back as values or CallError.

use std::collections::HashMap;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::rc::Rc;

use actix::prelude::*;
use bytes::Bytes;
use econtext_wire::messages::CallFunctionRequest;
use econtext_wire::{handles, payload, CallError, ContextId, Value};
use futures::future::{FutureExt, LocalBoxFuture};
use serde::de::{DeserializeOwned, IgnoredAny};
use serde::Serialize;
use slog::{warn, Logger};

use crate::router::{Router, ShutdownContext};
use crate::serve::{serve_with, Encoded, HandleDead, Request, ServeOptions};

type Outcome = Result<Bytes, CallError>;

/// A registered function: sync ones answer at once, async ones later.
#[derive(Clone)]
enum Function {
    Sync(Rc<dyn Fn(Vec<Value>) -> Outcome>),
    Async(Rc<dyn Fn(Vec<Value>) -> LocalBoxFuture<'static, Outcome>>),
    InContext(Rc<dyn Fn(CallEnv, Vec<Value>) -> LocalBoxFuture<'static, Outcome>>),
}

/// The context a call runs in, for functions that open handles or send
/// messages of their own (econtext-files' receiver and sender).
#[derive(Clone)]
pub struct CallEnv {
    pub router: Addr<Router>,
    /// This context.
    pub me: ContextId,
    /// The caller.
    pub src: ContextId,
}

/// What a call produced: a result now, or a future of one.
pub enum Answer {
    Now(Outcome),
    Later(LocalBoxFuture<'static, Outcome>),
}

fn panic_message(name: &str, panic: Box<dyn std::any::Any + std::marker::Send>) -> CallError {
    let what = panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "panic".to_string());
    call_error("panic", format!("{name} panicked: {what}"))
}

fn call_error(type_name: &str, message: impl Into<String>) -> CallError {
    CallError {
        type_name: type_name.to_string(),
        message: message.into(),
        traceback: String::new(),
    }
}

fn decode_args<A: DeserializeOwned>(args: Vec<Value>) -> Result<A, CallError> {
    // `()` is how a function says it takes no arguments; serde reads it
    // from nil, not from an empty array.
    if args.is_empty() {
        if let Ok(a) = rmpv::ext::from_value(Value::Nil) {
            return Ok(a);
        }
    }
    rmpv::ext::from_value(Value::Array(args))
        .map_err(|e| call_error("TypeError", format!("bad arguments: {e}")))
}

fn encode_result<R: Serialize>(r: &R) -> Result<Bytes, CallError> {
    payload::encode(r)
        .map_err(|e| call_error("TypeError", format!("result cannot be encoded: {e}")))
}

/// The functions a Rust context offers, by dotted name
/// (`module.function` or `module.Class.function`, as Python callers name
/// them).
///
/// ```
/// let mut f = econtext_actors::dispatch::Functions::default();
/// f.register("math.add", |(a, b): (i64, i64)| a + b);
/// f.register_fallible("math.div", |(a, b): (i64, i64)| {
///     a.checked_div(b).ok_or("division by zero")
/// });
/// ```
#[derive(Clone, Default)]
pub struct Functions {
    map: HashMap<String, Function>,
}

impl Functions {
    /// Whether a function of that dotted name is registered.
    pub fn contains(&self, name: &str) -> bool {
        self.map.contains_key(name)
    }

    /// Registers `f`, which takes its arguments as one tuple.
    pub fn register<A, R, F>(&mut self, name: &str, f: F) -> &mut Self
    where
        A: DeserializeOwned,
        R: Serialize,
        F: Fn(A) -> R + 'static,
    {
        self.map.insert(
            name.to_string(),
            Function::Sync(Rc::new(move |args| encode_result(&f(decode_args(args)?)))),
        );
        self
    }

    /// Registers an async function: the context keeps serving other calls
    /// while it runs.
    pub fn register_async<A, R, F, Fut>(&mut self, name: &str, f: F) -> &mut Self
    where
        A: DeserializeOwned,
        R: Serialize,
        F: Fn(A) -> Fut + 'static,
        Fut: std::future::Future<Output = R> + 'static,
    {
        let f = Rc::new(f);
        self.map.insert(
            name.to_string(),
            Function::Async(Rc::new(move |args| {
                let f = f.clone();
                async move {
                    let a = decode_args(args)?;
                    encode_result(&f(a).await)
                }
                .boxed_local()
            })),
        );
        self
    }

    /// Registers an async function that also gets the context it runs in
    /// ([`CallEnv`]), to open channels and send messages itself.
    pub fn register_in_context<A, R, F, Fut>(&mut self, name: &str, f: F) -> &mut Self
    where
        A: DeserializeOwned,
        R: Serialize,
        F: Fn(CallEnv, A) -> Fut + 'static,
        Fut: std::future::Future<Output = R> + 'static,
    {
        let f = Rc::new(f);
        self.map.insert(
            name.to_string(),
            Function::InContext(Rc::new(move |env, args| {
                let f = f.clone();
                async move {
                    let a = decode_args(args)?;
                    encode_result(&f(env, a).await)
                }
                .boxed_local()
            })),
        );
        self
    }

    /// Adds every function of `other` (replacing those of the same name).
    pub fn extend(&mut self, other: &Functions) -> &mut Self {
        for (k, v) in &other.map {
            self.map.insert(k.clone(), v.clone());
        }
        self
    }

    /// Registers `f` whose `Err` becomes a CallError for the caller.
    pub fn register_fallible<A, R, E, F>(&mut self, name: &str, f: F) -> &mut Self
    where
        A: DeserializeOwned,
        R: Serialize,
        E: std::fmt::Display,
        F: Fn(A) -> Result<R, E> + 'static,
    {
        self.map.insert(
            name.to_string(),
            Function::Sync(Rc::new(move |args| match f(decode_args(args)?) {
                Ok(r) => encode_result(&r),
                Err(e) => Err(call_error("Error", e.to_string())),
            })),
        );
        self
    }

    /// Runs the named function; a panic becomes a CallError of type `panic`.
    /// Functions registered with [`Functions::register_in_context`] need
    /// [`Functions::call_in`].
    pub fn call(&self, req: CallFunctionRequest) -> Answer {
        self.call_env(None, req)
    }

    /// [`Functions::call`] in the context `env`.
    pub fn call_in(&self, env: CallEnv, req: CallFunctionRequest) -> Answer {
        self.call_env(Some(env), req)
    }

    fn call_env(&self, env: Option<CallEnv>, req: CallFunctionRequest) -> Answer {
        let name = req.qualified_name();
        if name == "econtext.ping" {
            return Answer::Now(encode_result(&true));
        }
        let Some(f) = self.map.get(&name).cloned() else {
            return Answer::Now(Err(call_error(
                "AttributeError",
                format!("no function {name:?} in this context"),
            )));
        };
        if !req.kwargs.is_empty() {
            return Answer::Now(Err(call_error(
                "TypeError",
                "Rust functions take no keyword arguments",
            )));
        }
        let f = match (f, env) {
            (Function::InContext(f), Some(env)) => {
                Function::Async(Rc::new(move |args| f(env.clone(), args)))
            }
            (Function::InContext(_), None) => {
                return Answer::Now(Err(call_error(
                    "RuntimeError",
                    format!("{name} needs a context to run in"),
                )))
            }
            (f, _) => f,
        };
        match f {
            Function::InContext(_) => unreachable!("resolved above"),
            Function::Sync(f) => Answer::Now(
                catch_unwind(AssertUnwindSafe(|| f(req.args)))
                    .unwrap_or_else(|p| Err(panic_message(&name, p))),
            ),
            Function::Async(f) => {
                let fut = match catch_unwind(AssertUnwindSafe(|| f(req.args))) {
                    Ok(fut) => fut,
                    Err(p) => return Answer::Now(Err(panic_message(&name, p))),
                };
                Answer::Later(
                    AssertUnwindSafe(fut)
                        .catch_unwind()
                        .map(move |r| r.unwrap_or_else(|p| Err(panic_message(&name, p))))
                        .boxed_local(),
                )
            }
        }
    }

    /// Runs a call to completion (tests, and callers outside an actor).
    pub async fn call_now(&self, req: CallFunctionRequest) -> Outcome {
        match self.call(req) {
            Answer::Now(r) => r,
            Answer::Later(f) => f.await,
        }
    }
}

/// The actor on CALL_FUNCTION (and SHUTDOWN) in a Rust context.
pub struct Dispatcher {
    me: ContextId,
    router: Addr<Router>,
    functions: Functions,
    log: Logger,
}

impl Dispatcher {
    pub fn new(me: ContextId, router: Addr<Router>, functions: Functions, log: Logger) -> Self {
        Dispatcher {
            me,
            router,
            functions,
            log,
        }
    }
}

impl Actor for Dispatcher {
    type Context = actix::Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        // Room for every call the adapter lets in flight.
        ctx.set_mailbox_capacity(crate::router::SERVICE_MAILBOX);
    }
}

impl Dispatcher {
    /// Starts the Dispatcher and serves CALL_FUNCTION and SHUTDOWN with it
    /// on its router through the typed adapter ([`crate::serve`]): calls
    /// decode as [`CallFunctionRequest`] (a malformed one is a TypeError
    /// for its caller), at most `serve::MAX_IN_FLIGHT` run at once, and
    /// SHUTDOWN, or Dead on either handle (the seed's way of ending a
    /// context), shuts the context down.
    pub fn serve(self) -> Addr<Dispatcher> {
        let (router, me) = (self.router.clone(), self.me);
        let addr = self.start();
        let opts = ServeOptions::default().with_on_dead(addr.clone().recipient());
        let call = addr.clone().recipient::<CallRequest>();
        serve_with(&router, me, handles::CALL_FUNCTION, call, opts.clone());
        let shutdown = addr.clone().recipient::<Request<IgnoredAny, ()>>();
        serve_with(&router, me, handles::SHUTDOWN, shutdown, opts);
        addr
    }
}

/// CALL_FUNCTION as the Dispatcher takes it; the answer is the function's
/// encoded result.
pub type CallRequest = Request<CallFunctionRequest, Encoded>;

impl Handler<CallRequest> for Dispatcher {
    type Result = ResponseFuture<Result<Encoded, CallError>>;

    fn handle(&mut self, req: CallRequest, _: &mut Self::Context) -> Self::Result {
        let env = CallEnv {
            router: self.router.clone(),
            me: self.me,
            src: req.src,
        };
        let answer = self.functions.call_in(env, req.value);
        // Nobody hears a failure of a call that asked for no reply: it is
        // logged here instead.
        let log = (req.reply_to == 0).then(|| self.log.clone());
        Box::pin(async move {
            let result = match answer {
                Answer::Now(r) => r,
                Answer::Later(f) => f.await,
            };
            if let (Err(e), Some(log)) = (&result, log) {
                warn!(log, "call with no reply failed"; "error" => %e);
            }
            result.map(Encoded)
        })
    }
}

/// SHUTDOWN (any payload): this context ends.
impl Handler<Request<IgnoredAny, ()>> for Dispatcher {
    type Result = Result<(), CallError>;

    fn handle(&mut self, _: Request<IgnoredAny, ()>, _: &mut Self::Context) -> Self::Result {
        self.router.do_send(ShutdownContext);
        Ok(())
    }
}

impl Handler<HandleDead> for Dispatcher {
    type Result = ();

    fn handle(&mut self, _: HandleDead, _: &mut Self::Context) {
        self.router.do_send(ShutdownContext);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(name: &str, args: Vec<Value>) -> CallFunctionRequest {
        let (m, f) = name.rsplit_once('.').unwrap();
        CallFunctionRequest {
            module: m.into(),
            class: None,
            function: f.into(),
            args,
            kwargs: Default::default(),
        }
    }

    #[test]
    fn registered_functions_run_and_fail_typed() {
        let mut f = Functions::default();
        f.register("math.add", |(a, b): (i64, i64)| a + b);
        f.register("math.boom", |(): ()| -> i64 { panic!("kaboom") });
        let call = |r| futures::executor::block_on(f.call_now(r));
        let ok = call(req("math.add", vec![2.into(), 3.into()])).unwrap();
        assert_eq!(payload::decode::<i64>(&ok).unwrap(), 5);
        let bad = call(req("math.add", vec!["x".into()])).unwrap_err();
        assert_eq!(bad.type_name, "TypeError");
        let missing = call(req("math.nope", vec![])).unwrap_err();
        assert_eq!(missing.type_name, "AttributeError");
        let panicked = call(req("math.boom", vec![])).unwrap_err();
        assert_eq!(panicked.type_name, "panic", "{panicked:?}");
        assert!(panicked.message.contains("kaboom"));
    }
}
