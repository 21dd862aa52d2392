//! The drain's own costs: how fast it notices the end, and how long a big one takes.
//!
//! * `drain/wake_latency`: a `Drain` is awaited by a task on a Tokio runtime whose worker is
//!   parked; another thread drops the last in-flight guard. Measured from just before that
//!   drop until the awaiting task holds the report, so it includes the release, the
//!   decision, the `Notify` wake-up, the worker's unpark and the report.
//! * `drain/10000_guards`: 10,000 guards in flight; `drain()` (the sweep that closes every
//!   counter slot) and the release of every guard, until the `Drain` future is ready.
//!
//! Each drain needs its own `Shutdown`, and a `Shutdown`'s state lives for the whole process
//! (see its documentation). To keep that bounded, each criterion batch runs at most
//! `MAX_REAL` real drains and reports their mean for the whole batch: the figure per
//! iteration is the same, only fewer drains leak.

use std::sync::mpsc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion};
use futures_util::task::noop_waker_ref;
use std::future::Future;
use std::pin::pin;
use std::task::{Context, Poll};
use tower_drain::{DrainOutcome, Shutdown};

/// Real drains per criterion batch at most; see the module documentation.
const MAX_REAL: u64 = 64;

/// How long the drainer's worker is left to go idle before the guard is dropped, so the
/// wake-up measured is that of a parked worker, as in a server waiting for its last request.
const SETTLE: Duration = Duration::from_micros(200);

/// Runs `real` measured drains and scales their total to `iters` iterations.
fn scaled(iters: u64, mut one: impl FnMut() -> Duration) -> Duration {
    let real = iters.clamp(1, MAX_REAL);
    let total: Duration = (0..real).map(|_| one()).sum();
    total.mul_f64(iters as f64 / real as f64)
}

/// One wake-latency sample: drop the last guard here, observe the report on the runtime.
fn wake_latency(runtime: &tokio::runtime::Runtime) -> Duration {
    let shutdown = Shutdown::new();
    let guard = shutdown.guard().expect("admission is open");
    // The `Drain` owns a Tokio timer, which must be created inside a runtime.
    let drain = {
        let _entered = runtime.enter();
        shutdown
            .drain(Duration::from_secs(60))
            .expect("valid timeout")
    };
    let (armed_tx, armed_rx) = mpsc::sync_channel::<()>(1);
    let (done_tx, done_rx) = mpsc::sync_channel::<(Instant, DrainOutcome)>(1);
    runtime.spawn(async move {
        let mut drain = pin!(drain);
        // One poll registers the waiter; only then may the guard go.
        let first = std::future::poll_fn(|cx| Poll::Ready(drain.as_mut().poll(cx))).await;
        assert!(first.is_pending(), "a guard is still held");
        armed_tx.send(()).expect("bench waits for this");
        let report = drain.await;
        done_tx
            .send((Instant::now(), report.outcome))
            .expect("bench waits for this");
    });
    armed_rx
        .recv_timeout(Duration::from_secs(10))
        .expect("the drain task started");
    std::thread::sleep(SETTLE);
    let dropped_at = Instant::now();
    drop(guard);
    let (observed_at, outcome) = done_rx
        .recv_timeout(Duration::from_secs(10))
        .expect("the drain resolved");
    assert_eq!(outcome, DrainOutcome::Drained);
    observed_at - dropped_at
}

/// One sample of draining `guards` in-flight guards: the sweep, every release, the report.
fn drain_many(runtime: &tokio::runtime::Runtime, guards: usize) -> Duration {
    let shutdown = Shutdown::new();
    let held: Vec<_> = (0..guards)
        .map(|_| shutdown.guard().expect("admission is open"))
        .collect();
    // The `Drain` owns a Tokio timer, which must be created inside a runtime.
    let _entered = runtime.enter();
    let mut cx = Context::from_waker(noop_waker_ref());
    let start = Instant::now();
    let drain = shutdown
        .drain(Duration::from_secs(60))
        .expect("valid timeout");
    drop(held);
    let report = match pin!(drain).poll(&mut cx) {
        Poll::Ready(report) => report,
        Poll::Pending => panic!("every guard was released, so the drain is over"),
    };
    let elapsed = start.elapsed();
    assert_eq!(report.outcome, DrainOutcome::Drained);
    assert_eq!(report.in_flight_at_start, guards);
    elapsed
}

fn drain(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let mut group = c.benchmark_group("drain");
    group.bench_function("wake_latency", |b| {
        b.iter_custom(|iters| scaled(iters, || wake_latency(&runtime)))
    });
    group.bench_function("10000_guards", |b| {
        b.iter_custom(|iters| scaled(iters, || drain_many(&runtime, 10_000)))
    });
    group.finish();
}

criterion_group!(benches, drain);
criterion_main!(benches);
