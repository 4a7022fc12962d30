//! Round trip of a trivial call to an in-process Rust context: the Rust
//! runtime's own share of a call (framing, HMAC, routing, wakeups), with
//! no Python involved. `cargo run --release --example rust_roundtrip`

use std::time::Instant;

use econtext::testing::SimTree;
use econtext::Functions;

#[actix::main]
async fn main() {
    let mut f = Functions::default();
    f.register("m.echo", |(x,): (i64,)| x);
    let mut tree = SimTree::new(slog::Logger::root(slog::Discard, slog::o!()));
    let node = tree.spawn("node", 0, f).await;
    let ctx = tree.context(node);
    for i in 0..1000 {
        let _: i64 = ctx.call("m", "echo", (i,)).await.unwrap();
    }
    let mut lat = Vec::new();
    for i in 0..20_000i64 {
        let t = Instant::now();
        let _: i64 = ctx.call("m", "echo", (i,)).await.unwrap();
        lat.push(t.elapsed().as_secs_f64() * 1e6);
    }
    lat.sort_by(|a, b| a.partial_cmp(b).unwrap());
    println!(
        "Rust-to-Rust round trip: median {:.1} µs, p99 {:.1} µs",
        lat[lat.len() / 2],
        lat[lat.len() * 99 / 100]
    );
}
