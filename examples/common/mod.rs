//! What the benchmark examples share: `#[path = "common/mod.rs"] mod common;`.

use econtext::Context;
use futures::future::join_all;

/// Starts `per_context` calls of `module.function(i)` on each of `ctxs`
/// (a function that answers its argument), all in flight at once, then
/// waits for every result and checks that each one succeeded.
pub async fn calls_in_flight(ctxs: &[Context], per_context: usize, module: &str, function: &str) {
    let mut pending = Vec::with_capacity(ctxs.len() * per_context);
    for c in ctxs {
        for i in 0..per_context as i64 {
            pending.push(
                c.call_with(module, function)
                    .args((i,))
                    .unwrap()
                    .start::<i64>()
                    .await
                    .unwrap(),
            );
        }
    }
    let ok = join_all(pending.into_iter().map(|p| p.result()))
        .await
        .iter()
        .filter(|r| r.is_ok())
        .count();
    assert_eq!(ok, ctxs.len() * per_context);
}
