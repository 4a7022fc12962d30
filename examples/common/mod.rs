//! What the benchmark examples share: `#[path = "common/mod.rs"] mod common;`.

use econtext::Context;
use futures::future::join_all;

/// Starts `per_context` calls of `module.function(i)` on each of `ctxs`
/// (a function that answers its argument), all in flight at once, then
/// waits for every result and checks that each one succeeded.
/// `--spin-us N`: the master's and its children's spin window
/// (`MasterOptions::spin_window`, 0: off), for A/B runs; the default
/// otherwise.
#[allow(dead_code)]
pub fn spin_window(args: &[String]) -> std::time::Duration {
    args.iter()
        .position(|a| a == "--spin-us")
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .map(std::time::Duration::from_micros)
        .unwrap_or(econtext::actors::spin::SpinPolicy::DEFAULT_WINDOW)
}

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

/// The 64 MiB value of the echo rows: the same bytes in every example.
#[allow(dead_code)] // master_cpu has no echo row
pub fn echo_payload() -> Vec<u8> {
    (0..64 << 20)
        .map(|i: u32| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect()
}

/// One echo of `data` through the child's `copy.copy`, the result taken
/// as a slice of the reply (`returning_bytes`: no copy into a fresh
/// buffer); MiB/s counting both directions.
#[allow(dead_code)] // master_cpu has no echo row
pub async fn echo_once(ctx: &Context, data: &[u8]) -> f64 {
    let t0 = std::time::Instant::now();
    let back = ctx
        .call_with("copy", "copy")
        .args((serde_bytes::Bytes::new(data),))
        .unwrap()
        .returning_bytes()
        .await
        .unwrap();
    let rate = 2.0 * data.len() as f64 / (1 << 20) as f64 / t0.elapsed().as_secs_f64();
    assert_eq!(back.len(), data.len());
    rate
}
