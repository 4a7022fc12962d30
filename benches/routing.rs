//! Routed messages per second through simulated trees (real framing and
//! HMAC over in-memory pipes): one hop (master → child) and a 3-hop chain
//! (master → a → b → c). Each iteration sends a batch of messages to a
//! Channel at the far end and waits until all have arrived.

use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use econtext::testing::SimTree;
use econtext::{Channel, Functions};
use futures::StreamExt;

const BATCH: u64 = 1000;

fn bench_routing(c: &mut Criterion) {
    let mut group = c.benchmark_group("routing");
    group.throughput(Throughput::Elements(BATCH));
    group.measurement_time(Duration::from_secs(5));
    group.sample_size(20);
    for hops in [1u16, 3] {
        group.bench_function(format!("{hops}_hop_messages"), |b| {
            b.iter_custom(|iters| {
                actix_rt::System::new().block_on(async move {
                    let log = slog::Logger::root(slog::Discard, slog::o!());
                    let mut tree = SimTree::new(log);
                    let mut parent = 0;
                    for i in 0..hops {
                        parent = tree
                            .spawn(&format!("n{i}"), parent, Functions::default())
                            .await;
                    }
                    let far = parent;
                    let mut inbox = Channel::open(&tree.router(far), far, None).await.unwrap();
                    let to = tree.context(far);
                    let handle = inbox.handle();
                    let t0 = Instant::now();
                    for _ in 0..iters {
                        let sender = to.clone();
                        let send = actix_rt::spawn(async move {
                            for i in 0..BATCH {
                                sender.send(handle, &i).await.unwrap();
                            }
                        });
                        for _ in 0..BATCH {
                            inbox.next().await.unwrap();
                        }
                        send.await.unwrap();
                    }
                    t0.elapsed()
                })
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench_routing);
criterion_main!(benches);
