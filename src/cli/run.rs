//! `econtext run [OPTIONS] TARGET|PATTERN -- COMMAND [ARG...]`: a command
//! on every host (through `sh -c` when given as one string, else exec'd),
//! its rc, stdout and stderr reported as text.

use std::io::Write;

use clap::Args;
use econtext::fleet::{FleetError, Target};
use econtext::{Context, Master};

use super::drive::drive_on;
use super::fleet_args::FleetArgs;
use super::report::{HostOutput, HostReport};
use super::Env;

#[derive(Args, Debug)]
pub struct RunArgs {
    /// A TARGET (hops, as for `call`) or, with -i, a host pattern.
    pub target: String,
    /// The command and its arguments (after `--`).
    #[arg(last = true, required = true, value_name = "COMMAND")]
    pub command: Vec<String>,
    #[command(flatten)]
    pub fleet: FleetArgs,
}

/// The reply of `econtext.fleet.run`.
#[derive(serde::Deserialize)]
struct Ran {
    rc: i32,
    stdout: serde_bytes_compat::Bytes,
    stderr: serde_bytes_compat::Bytes,
    python: serde_bytes_compat::Bytes,
}

mod serde_bytes_compat {
    /// Bytes from a Python `bytes` (or `str`) value.
    #[derive(Default)]
    pub struct Bytes(pub Vec<u8>);

    impl<'de> serde::Deserialize<'de> for Bytes {
        fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            struct V;
            impl serde::de::Visitor<'_> for V {
                type Value = Bytes;
                fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                    f.write_str("bytes")
                }
                fn visit_bytes<E>(self, v: &[u8]) -> Result<Bytes, E> {
                    Ok(Bytes(v.to_vec()))
                }
                fn visit_str<E>(self, v: &str) -> Result<Bytes, E> {
                    Ok(Bytes(v.as_bytes().to_vec()))
                }
            }
            d.deserialize_bytes(V)
        }
    }
}

/// Runs `command` in `ctx`.
pub async fn run_in(
    ctx: Context,
    t: Target,
    command: std::rc::Rc<Vec<String>>,
) -> Result<HostOutput, FleetError> {
    let ran: Ran = ctx
        .call_with("econtext.fleet", "run")
        .args((&*command,))
        .map_err(FleetError::from)?
        .returning()
        .await?;
    let python = t
        .discover_python
        .then(|| String::from_utf8_lossy(&ran.python.0).into_owned());
    Ok(HostOutput {
        ok: ran.rc == 0,
        rc: Some(ran.rc),
        stdout: Some(ran.stdout.0),
        stderr: Some(ran.stderr.0),
        python,
        ..Default::default()
    })
}

pub fn main(env: Env, args: RunArgs) -> u8 {
    let targets = match args.fleet.targets(&args.target) {
        Ok(t) => t,
        Err(e) => return super::usage(e),
    };
    if args.fleet.listed(&targets) {
        return 0;
    }
    let single = !args.fleet.is_fleet() && !args.fleet.json;
    let command = std::rc::Rc::new(args.command);
    env.block_on(move |master: Master| async move {
        let f = move |ctx, t| run_in(ctx, t, command.clone());
        // `econtext.fleet.run` needs only the standard library: no second
        // interpreter, no `site` on the hosts; and it comes with the
        // payload instead of a GET_MODULE per host.
        let hosts = econtext::ManyHosts::new(master.clone())
            .lean_start(true)
            .preload(&["econtext.fleet"]);
        if single {
            let t = targets.into_iter().next().expect("one target");
            let r = super::single(hosts, t, &args.fleet, f).await;
            if args.fleet.stats {
                super::print_stats(&master);
            }
            return match r {
                Ok(r) => print_single(&r),
                Err(e) => super::usage(e),
            };
        }
        let code = match drive_on(hosts, targets, &args.fleet, env.verbose > 0, f).await {
            Ok(code) => code,
            Err(e) => super::usage(e),
        };
        if args.fleet.stats {
            super::print_stats(&master);
        }
        code
    })
}

/// One target, no inventory: the command's own output and exit status.
/// On a terminal, escape sequences are shown, never obeyed.
fn print_single(r: &HostReport) -> u8 {
    use std::io::IsTerminal;
    let o = &r.output;
    if let Some(b) = &o.stdout {
        let mut out = std::io::stdout();
        let _ = if out.is_terminal() {
            out.write_all(super::text::printable_bytes(b).as_bytes())
        } else {
            out.write_all(b)
        };
    }
    if let Some(b) = &o.stderr {
        let mut err = std::io::stderr();
        let _ = if err.is_terminal() {
            err.write_all(super::text::printable_bytes(b).as_bytes())
        } else {
            err.write_all(b)
        };
    }
    if let Some(e) = &o.error {
        eprintln!(
            "econtext: {}: {}",
            super::text::printable(&r.host),
            super::text::printable(e)
        );
    }
    match o.rc {
        Some(rc) => rc.clamp(0, 255) as u8,
        None => super::report::exit_code(&[r.status], false),
    }
}
