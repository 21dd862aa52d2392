//! Time from drain start to `Drain` resolving with 1,000 idle SSE connections open on a real
//! axum server on 127.0.0.1: each stream is woken, sends its final event and ends.
//!
//! Only the drain is timed; opening the connections is set-up. Fewer connections are used,
//! with a message, if the open-files limit is too low for 1,000.

#[path = "../tests/support/mod.rs"]
mod support;

use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion};
use support::http::serve_until_closing;
use support::sse::{connections_allowed, idle_sse_app, open_idle_clients};
use tower_drain::{DrainOutcome, Shutdown};

fn sse_drain(c: &mut Criterion) {
    let count = connections_allowed(1_000);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let mut group = c.benchmark_group("sse_drain");
    // Each round opens every connection again before the timed part, so keep the rounds few.
    group.sample_size(10);
    group.warm_up_time(Duration::from_millis(500));
    group.measurement_time(Duration::from_secs(1));
    group.bench_function(format!("{count}_idle_connections"), |b| {
        b.iter_custom(|iterations| {
            runtime.block_on(async {
                let mut total = Duration::ZERO;
                for _ in 0..iterations {
                    // A controller per round: a drain happens once per controller.
                    let shutdown = Shutdown::new();
                    let server = serve_until_closing(idle_sse_app(shutdown), shutdown).await;
                    let clients = open_idle_clients(server.addr, count).await;
                    let started = Instant::now();
                    let report = shutdown.drain(Duration::from_secs(60)).unwrap().await;
                    total += started.elapsed();
                    assert_eq!(report.outcome, DrainOutcome::Drained);
                    for client in clients {
                        client.await.unwrap();
                    }
                    server.task.await.unwrap();
                }
                total
            })
        })
    });
    group.finish();
}

criterion_group!(benches, sse_drain);
criterion_main!(benches);
