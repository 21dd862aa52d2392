//! Per-request overhead of this crate's layers and of their peers, side by side.
//!
//! Every variant wraps the same ready inner `tower::service_fn` and is driven by hand: one
//! request is `poll_ready`, `call`, one poll of the response future with a no-op waker, then
//! `poll_frame` until the body ends. No runtime runs in the timed loop, so what is measured is
//! the middleware's own work (atomics, allocations, wrappers), not a scheduler.
//!
//! Groups:
//! * `per_request_1_thread`: one thread, a one-frame body.
//! * `per_request_2_threads`: two threads run the same loop at once against clones of one
//!   layered service, so whatever state the middleware shares is contended. The figure is the
//!   wall time for N requests on each thread divided by N: with no contention at all it would
//!   equal the one-thread figure.
//! * `per_request_16_chunks`: one thread, a sixteen-frame body, to price body wrappers per
//!   frame.
//!
//! Peers: tower-http's `InFlightRequests`, tokio-util's `TaskTracker::track_future` around the
//! call, linkerd's `drain::Retain`, tower's `ConcurrencyLimit` with a limit never reached, and a
//! tokio-graceful `ShutdownGuard` cloned before the call and dropped after the body.

use std::any::Any;
use std::convert::Infallible;
use std::fmt::Debug;
use std::future::Future;
use std::hint::black_box;
use std::pin::{pin, Pin};
use std::sync::mpsc;
use std::sync::{Arc, Barrier};
use std::task::{Context, Poll};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, BenchmarkGroup, Criterion};
use futures_util::task::noop_waker_ref;
use http::{Request, Response};
use http_body::{Body, Frame};
use tower::limit::ConcurrencyLimitLayer;
use tower::{service_fn, Layer, Service};
use tower_drain::{InFlightLayer, RejectWhenDrainingLayer, Shutdown};
use tower_http::metrics::InFlightRequestsLayer;

// === the inner service and its body ===

/// A response body of `left` static frames: no allocation, so only wrappers add cost.
#[derive(Debug, Clone, Copy)]
struct Chunks {
    left: u8,
}

impl Body for Chunks {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        if self.left == 0 {
            return Poll::Ready(None);
        }
        self.left -= 1;
        Poll::Ready(Some(Ok(Frame::data(Bytes::from_static(b"chunk\n")))))
    }

    fn is_end_stream(&self) -> bool {
        self.left == 0
    }
}

/// The ready inner service every variant wraps: answers at once with `frames` frames.
fn inner(
    frames: u8,
) -> impl Service<
    Request<()>,
    Response = Response<Chunks>,
    Error = Infallible,
    Future = std::future::Ready<Result<Response<Chunks>, Infallible>>,
> + Clone
       + Send
       + 'static {
    service_fn(move |_request: Request<()>| {
        std::future::ready(Ok::<_, Infallible>(Response::new(Chunks { left: frames })))
    })
}

// === driving one request by hand ===

/// Polls a future that must be ready on its first poll.
fn ready_now<F: Future>(future: F, cx: &mut Context<'_>) -> F::Output {
    match pin!(future).poll(cx) {
        Poll::Ready(output) => output,
        Poll::Pending => panic!("the inner service is ready at once, so no variant may pend"),
    }
}

/// Polls `body` to its end, as a server writing it out would.
fn consume<B>(body: B, cx: &mut Context<'_>)
where
    B: Body,
    B::Error: Debug,
{
    let mut body = pin!(body);
    loop {
        match body.as_mut().poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                black_box(frame);
            }
            Poll::Ready(None) => return,
            Poll::Ready(Some(Err(error))) => panic!("body failed: {error:?}"),
            Poll::Pending => panic!("the body is ready at once, so no variant may pend"),
        }
    }
}

/// One whole request through `service`: readiness, call, response, body to the end.
fn request_once<S, B>(service: &mut S, cx: &mut Context<'_>)
where
    S: Service<Request<()>, Response = Response<B>>,
    S::Error: Debug,
    B: Body,
    B::Error: Debug,
{
    match service.poll_ready(cx) {
        Poll::Ready(Ok(())) => {}
        Poll::Ready(Err(error)) => panic!("poll_ready failed: {error:?}"),
        Poll::Pending => panic!("every variant is ready at once"),
    }
    let response = ready_now(service.call(Request::new(())), cx).expect("call failed");
    consume(response.into_body(), cx);
}

/// Something that serves one request per call; cloning it shares its middleware's state.
trait Target: Clone + Send + 'static {
    fn request(&mut self, cx: &mut Context<'_>);
}

/// A service built from layers.
#[derive(Clone)]
struct Layered<S>(S);

impl<S, B> Target for Layered<S>
where
    S: Service<Request<()>, Response = Response<B>> + Clone + Send + 'static,
    S::Error: Debug,
    B: Body,
    B::Error: Debug,
{
    #[inline]
    fn request(&mut self, cx: &mut Context<'_>) {
        request_once(&mut self.0, cx);
    }
}

/// tokio-util: the response future is tracked by a `TaskTracker`.
#[derive(Clone)]
struct Tracked<S> {
    inner: S,
    tracker: tokio_util::task::TaskTracker,
}

impl<S, B> Target for Tracked<S>
where
    S: Service<Request<()>, Response = Response<B>> + Clone + Send + 'static,
    S::Error: Debug,
    B: Body,
    B::Error: Debug,
{
    #[inline]
    fn request(&mut self, cx: &mut Context<'_>) {
        assert!(self.inner.poll_ready(cx).is_ready());
        let future = self.tracker.track_future(self.inner.call(Request::new(())));
        let response = ready_now(future, cx).expect("call failed");
        consume(response.into_body(), cx);
    }
}

/// tokio-graceful: a `ShutdownGuard` clone held for the whole request, body included.
#[derive(Clone)]
struct Guarded<S> {
    inner: S,
    guard: tokio_graceful::ShutdownGuard,
}

impl<S, B> Target for Guarded<S>
where
    S: Service<Request<()>, Response = Response<B>> + Clone + Send + 'static,
    S::Error: Debug,
    B: Body,
    B::Error: Debug,
{
    #[inline]
    fn request(&mut self, cx: &mut Context<'_>) {
        let guard = self.guard.clone();
        request_once(&mut self.inner, cx);
        drop(guard);
    }
}

// === timing ===

/// `iters` requests on the calling thread.
fn run_here<T: Target>(target: &mut T, iters: u64) -> Duration {
    let mut cx = Context::from_waker(noop_waker_ref());
    let start = Instant::now();
    for _ in 0..iters {
        target.request(&mut cx);
    }
    start.elapsed()
}

/// Two worker threads, each with its own clone of one target, started together per batch.
struct Pair {
    jobs: Vec<mpsc::Sender<u64>>,
    spans: mpsc::Receiver<(Instant, Instant)>,
    workers: Vec<JoinHandle<()>>,
}

impl Pair {
    fn new<T: Target>(target: &T) -> Self {
        let barrier = Arc::new(Barrier::new(2));
        let (span_tx, spans) = mpsc::channel();
        let mut jobs = Vec::new();
        let mut workers = Vec::new();
        for _ in 0..2 {
            let (job_tx, job_rx) = mpsc::channel::<u64>();
            let mut target = target.clone();
            let barrier = Arc::clone(&barrier);
            let span_tx = span_tx.clone();
            workers.push(std::thread::spawn(move || {
                let mut cx = Context::from_waker(noop_waker_ref());
                while let Ok(iters) = job_rx.recv() {
                    // Both threads leave the barrier together, so their loops overlap.
                    barrier.wait();
                    let start = Instant::now();
                    for _ in 0..iters {
                        target.request(&mut cx);
                    }
                    let end = Instant::now();
                    if span_tx.send((start, end)).is_err() {
                        return;
                    }
                }
            }));
            jobs.push(job_tx);
        }
        Pair {
            jobs,
            spans,
            workers,
        }
    }

    /// Wall time, first start to last end, for `iters` requests on each thread.
    fn run(&self, iters: u64) -> Duration {
        for job in &self.jobs {
            job.send(iters).expect("worker alive");
        }
        let (start_a, end_a) = self.spans.recv().expect("worker alive");
        let (start_b, end_b) = self.spans.recv().expect("worker alive");
        end_a.max(end_b) - start_a.min(start_b)
    }
}

impl Drop for Pair {
    fn drop(&mut self) {
        self.jobs.clear();
        for worker in self.workers.drain(..) {
            worker.join().expect("worker panicked");
        }
    }
}

fn bench_one<T: Target>(
    group: &mut BenchmarkGroup<'_, criterion::measurement::WallTime>,
    name: &str,
    threads: usize,
    mut target: T,
) {
    // A warm-up request outside the timing: first use of a thread's counter slot, lazy
    // statics in the peers.
    run_here(&mut target, 1);
    if threads == 1 {
        group.bench_function(name, |b| {
            b.iter_custom(|iters| run_here(&mut target, iters))
        });
    } else {
        let pair = Pair::new(&target);
        group.bench_function(name, |b| b.iter_custom(|iters| pair.run(iters)));
    }
}

/// Runs every variant for one body size and thread count.
fn bench_variants(c: &mut Criterion, group_name: &str, frames: u8, threads: usize) {
    // Peers' controllers must outlive their services, as in a server.
    let mut keep: Vec<Box<dyn Any>> = Vec::new();
    let mut group = c.benchmark_group(group_name);

    bench_one(&mut group, "bare", threads, Layered(inner(frames)));

    let shutdown = Shutdown::new();
    bench_one(
        &mut group,
        "shutdown_layer",
        threads,
        Layered(shutdown.layer().layer(inner(frames))),
    );
    let shutdown = Shutdown::new();
    bench_one(
        &mut group,
        "in_flight_layer",
        threads,
        Layered(InFlightLayer::new(shutdown).layer(inner(frames))),
    );
    let shutdown = Shutdown::new();
    bench_one(
        &mut group,
        "reject_when_draining_layer",
        threads,
        Layered(RejectWhenDrainingLayer::new(shutdown).layer(inner(frames))),
    );

    let (layer, counter) = InFlightRequestsLayer::pair();
    keep.push(Box::new(counter));
    bench_one(
        &mut group,
        "tower_http_in_flight",
        threads,
        Layered(layer.layer(inner(frames))),
    );

    let tracker = tokio_util::task::TaskTracker::new();
    bench_one(
        &mut group,
        "task_tracker",
        threads,
        Tracked {
            inner: inner(frames),
            tracker,
        },
    );

    let (signal, watch) = drain::channel();
    keep.push(Box::new(signal));
    bench_one(
        &mut group,
        "drain_retain",
        threads,
        Layered(drain::Retain::layer(watch).layer(inner(frames))),
    );

    bench_one(
        &mut group,
        "concurrency_limit",
        threads,
        Layered(
            ConcurrencyLimitLayer::new(tokio::sync::Semaphore::MAX_PERMITS).layer(inner(frames)),
        ),
    );

    // tokio-graceful spawns its watcher task when built, so it needs a runtime; the runtime
    // is never driven and plays no part in the timed loop.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    let graceful = {
        let _entered = runtime.enter();
        tokio_graceful::Shutdown::no_signal()
    };
    bench_one(
        &mut group,
        "tokio_graceful_guard",
        threads,
        Guarded {
            inner: inner(frames),
            guard: graceful.guard(),
        },
    );

    group.finish();
    drop(graceful);
    drop(runtime);
    drop(keep);
}

fn per_request(c: &mut Criterion) {
    bench_variants(c, "per_request_1_thread", 1, 1);
    bench_variants(c, "per_request_2_threads", 1, 2);
    bench_variants(c, "per_request_16_chunks", 16, 1);
}

criterion_group!(benches, per_request);
criterion_main!(benches);
