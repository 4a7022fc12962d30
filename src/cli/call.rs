//! `econtext call TARGET|PATTERN FUNCTION [ARG...]`: a Python function on
//! one target (its result printed as JSON, as before) or, with `-i`, on
//! every host a pattern selects.

use std::rc::Rc;

use clap::Args;
use econtext::fleet::{FleetError, Target};
use econtext::{json, Context, Master, Value};

use super::drive::drive;
use super::fleet_args::FleetArgs;
use super::report::{HostOutput, HostReport, HostResult, Status};
use super::Env;

#[derive(Args, Debug)]
pub struct CallArgs {
    /// Hops joined by commas, each METHOD[:SPEC][?key=value&...], e.g.
    /// `local?python=/usr/bin/python2.7` or
    /// `ssh:root@host?identity=KEY,sudo:www-data`. Methods: local,
    /// ssh, sudo, su, docker, podman, kubectl (see README). With -i, a
    /// host pattern instead.
    pub target: String,
    /// `module.func` or `module.Class.method`.
    pub function: String,
    /// Positional arguments, each a JSON value.
    pub args: Vec<String>,
    /// A keyword argument, NAME=JSON (repeatable).
    #[arg(long = "kwarg", value_name = "NAME=JSON")]
    pub kwargs: Vec<String>,
    #[command(flatten)]
    pub fleet: FleetArgs,
}

/// A parsed FUNCTION with its arguments.
struct Call {
    module: String,
    class: Option<String>,
    func: String,
    args: Vec<Value>,
    kwargs: Vec<(String, Value)>,
}

impl Call {
    fn parse(a: &CallArgs) -> Result<Call, String> {
        let function = &a.function;
        let mut parts: Vec<&str> = function.split('.').collect();
        if parts.len() < 2 || parts.iter().any(|p| p.is_empty()) {
            return Err(format!(
                "FUNCTION {function:?} must be module.func or module.Class.method"
            ));
        }
        let func = parts.pop().unwrap_or_default().to_string();
        // `a.b.c`: module `a.b`, function `c`; a capitalised last module
        // part is taken as a class (`module.Class.method`).
        let class = match parts.last() {
            Some(p) if parts.len() >= 2 && p.chars().next().is_some_and(char::is_uppercase) => {
                parts.pop().map(str::to_string)
            }
            _ => None,
        };
        let mut args = Vec::new();
        for s in &a.args {
            let j = serde_json::from_str::<serde_json::Value>(s)
                .map_err(|e| format!("argument {s:?} is not JSON: {e}"))?;
            args.push(json::from_json(&j));
        }
        let mut kwargs = Vec::new();
        for k in &a.kwargs {
            let (name, val) = k
                .split_once('=')
                .ok_or_else(|| format!("--kwarg {k:?} must be NAME=JSON"))?;
            let j = serde_json::from_str::<serde_json::Value>(val)
                .map_err(|e| format!("--kwarg {name}: not JSON: {e}"))?;
            kwargs.push((name.to_string(), json::from_json(&j)));
        }
        Ok(Call {
            module: parts.join("."),
            class,
            func,
            args,
            kwargs,
        })
    }

    /// The result as it came (checked, not decoded): it is printed
    /// straight from its bytes.
    async fn invoke(&self, ctx: &Context) -> Result<bytes::Bytes, FleetError> {
        let mut b = ctx.call_with(&self.module, &self.func);
        if let Some(c) = &self.class {
            b = b.class(c);
        }
        let mut b = b.args(&self.args)?;
        for (name, v) in &self.kwargs {
            b = b.kwarg(name, v)?;
        }
        Ok(b.returning_encoded().await?)
    }
}

/// The call on one host; with interpreter discovery, which interpreter
/// was chosen travels alongside (two calls in flight, no extra round trip).
async fn call_in(ctx: Context, t: Target, call: Rc<Call>) -> Result<HostOutput, FleetError> {
    let python = async {
        if !t.discover_python {
            return None;
        }
        ctx.call::<Value>("econtext.fleet", "interpreter", ())
            .await
            .ok()
            .map(|v| match v {
                Value::String(s) => s.into_str().unwrap_or_default(),
                Value::Binary(b) => String::from_utf8_lossy(&b).into_owned(),
                other => json::to_json(&other).to_string(),
            })
    };
    let (result, python) = futures::join!(call.invoke(&ctx), python);
    let v = result?;
    Ok(HostOutput {
        ok: true,
        result: Some(HostResult::Encoded(v)),
        python,
        ..Default::default()
    })
}

pub fn main(env: Env, a: CallArgs) -> u8 {
    let call = match Call::parse(&a) {
        Ok(c) => Rc::new(c),
        Err(e) => return super::usage(e),
    };
    let targets = match a.fleet.targets(&a.target) {
        Ok(t) => t,
        Err(e) => return super::usage(e),
    };
    if a.fleet.listed(&targets) {
        return 0;
    }
    let single = !a.fleet.is_fleet() && !a.fleet.json;
    env.block_on(move |master: Master| async move {
        let f = move |ctx, t| call_in(ctx, t, call.clone());
        let code = if single {
            let t = targets.into_iter().next().expect("one target");
            match super::single(econtext::ManyHosts::new(master.clone()), t, &a.fleet, f).await {
                Ok(r) => print_single(&r),
                Err(e) => super::usage(e),
            }
        } else {
            match drive(&master, targets, &a.fleet, env.verbose > 0, f).await {
                Ok(code) => code,
                Err(e) => super::usage(e),
            }
        };
        if a.fleet.stats {
            super::print_stats(&master);
        }
        code
    })
}

/// One target, no inventory: the result as JSON on stdout, errors on
/// stderr, as `econtext call` always did.
fn print_single(r: &HostReport) -> u8 {
    let o = &r.output;
    if let Some(v) = &o.result {
        // Written as it is made: no copy of the whole text either.
        let mut out = std::io::BufWriter::new(std::io::stdout().lock());
        let written = v.write_to(&mut out).and_then(|()| {
            use std::io::Write;
            out.write_all(b"\n")?;
            out.flush()
        });
        if let Err(e) = written {
            eprintln!("econtext: cannot write the result: {e}");
        }
    }
    if let Some(e) = &o.error {
        // The child wrote the text: escaped, its newlines marked as
        // continuation lines so it cannot forge lines of ours.
        let e = econtext::wire::sanitize::text(e);
        match r.status {
            Status::Unreachable => eprintln!("econtext: cannot connect: {e}"),
            Status::Failed => eprintln!("econtext: {e}"),
            _ => eprintln!("econtext: call failed: {e}"),
        }
    }
    super::report::exit_code(&[r.status], false)
}
