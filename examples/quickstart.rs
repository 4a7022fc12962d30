//! econtext in one screen: start a local Python context with nothing
//! installed, call a few functions in it, catch a remote exception.
//!
//! `cargo run --example quickstart` (needs a `python3` on PATH; set
//! ECONTEXT_PYTHON to try another interpreter).

use std::sync::Mutex;
use std::time::Instant;

use econtext::{Error, LocalOptions, Master, MasterOptions};
use slog::{o, Drain, Logger};

#[actix::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let decorator = slog_term::PlainSyncDecorator::new(std::io::stderr());
    let drain = slog_term::CompactFormat::new(decorator).build().fuse();
    let log = Logger::root(Mutex::new(drain).fuse(), o!());
    let master = Master::new(MasterOptions::default().log(log));

    let python = std::env::var("ECONTEXT_PYTHON").unwrap_or_else(|_| "python3".into());
    let started = Instant::now();
    let ctx = master.local(LocalOptions::new(python.clone())).await?;
    let pid: u32 = ctx.call("os", "getpid", ()).await?;
    println!(
        "connected {} ({python}), pid {pid}, in {:?}",
        ctx.name(),
        started.elapsed()
    );

    let version: String = ctx.call("platform", "python_version", ()).await?;
    println!("its Python is {version}");

    let joined: String = ctx
        .call("os.path", "join", ("/srv", "app", "current"))
        .await?;
    println!("os.path.join there: {joined}");

    // A subprocess started by remote code: its output goes to our log,
    // tagged with the context's name, and never corrupts the stream.
    let out: String = ctx
        .call_with("subprocess", "check_output")
        .args((vec!["uname", "-sr"],))?
        .kwarg("universal_newlines", true)?
        .returning()
        .await?;
    println!("uname there: {}", out.trim());
    let status: i32 = ctx
        .call("os", "system", ("echo hello from a child subprocess",))
        .await?;
    println!("os.system returned {status}");

    // A remote exception comes back typed, with the remote traceback.
    match ctx.call::<f64>("operator", "truediv", (1, 0)).await {
        Err(Error::Remote(e)) => {
            println!("caught remote {}: {}", e.type_name, e.message);
            println!("remote traceback:\n{}", e.traceback.trim_end());
        }
        other => println!("unexpected: {other:?}"),
    }

    let started = Instant::now();
    for _ in 0..1000 {
        let _: u32 = ctx.call("os", "getpid", ()).await?;
    }
    println!("1000 sequential calls took {:?}", started.elapsed());

    ctx.shutdown().await?;
    println!("{} shut down: {}", ctx.name(), ctx.dead().await);
    Ok(())
}
