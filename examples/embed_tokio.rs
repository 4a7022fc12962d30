//! Embedding econtext in a plain multi-threaded tokio program (an axum or
//! tonic service, say): no actix in sight. `MasterHandle` runs the
//! master's actix system on its own thread; contexts are `Send + Sync`
//! and their calls can be awaited from any task.
//!
//! ```text
//! cargo run --example embed_tokio [PYTHON]
//! ```

use econtext::{Functions, LocalOptions, MasterHandle, MasterOptions};

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let python = std::env::args().nth(1).unwrap_or_else(|| "python3".into());
    let master = MasterHandle::start(MasterOptions::default());

    // A Python child, started from this runtime.
    let py = master.local(LocalOptions::new(python)).await?;
    // An in-process Rust context: its functions are built on the
    // master's thread (they need not be Send).
    let rust = master
        .run(|m| async move {
            let mut f = Functions::default();
            f.register("math.add", |(a, b): (i64, i64)| a + b);
            m.rust_context("adder", None, f).await
        })
        .await??;

    // Calls from many tasks of the multi-threaded runtime at once.
    let mut tasks = Vec::new();
    for i in 0..8i64 {
        let (py, rust) = (py.clone(), rust.clone());
        tasks.push(tokio::spawn(async move {
            let pid: u32 = py.call("os", "getpid", ()).await?;
            let sum: i64 = rust.call("math", "add", (i, 100)).await?;
            Ok::<_, econtext::Error>((pid, sum))
        }));
    }
    for t in tasks {
        let (pid, sum) = t.await??;
        println!("python pid {pid}, rust sum {sum}");
    }
    master.shutdown().await;
    println!("shut down");
    Ok(())
}
