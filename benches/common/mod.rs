//! The variants every overhead measurement runs, shared by `overhead.rs` (criterion, wall
//! time) and `instructions.rs` (instruction counts under valgrind).
//!
//! Every variant wraps the same ready inner `tower::service_fn` and is driven by hand: one
//! request is `poll_ready`, `call`, one poll of the response future with a no-op waker, then
//! `poll_frame` until the body ends. No runtime runs in the loop, so what is measured is the
//! middleware's own work (atomics, allocations, wrappers, moves), not a scheduler.

// Each bench target uses part of this module (`instructions.rs` runs no thread pairs).
#![allow(dead_code)]

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
use futures_util::task::noop_waker_ref;
use http::{Request, Response};
use http_body::{Body, Frame};
use tower::limit::ConcurrencyLimitLayer;
use tower::{service_fn, Layer, Service};
use tower_drain::{InFlightLayer, LongLivedLayer, RejectWhenDrainingLayer, Shutdown};
use tower_http::metrics::InFlightRequestsLayer;

use reference::{AtEnd, Counting, OnDrop, Passthrough, StaticCounter, ThreadCounter};

mod reference;

// === the inner service and its body ===

/// A response body of `left` static frames: no allocation, so only wrappers add cost.
#[derive(Debug, Clone, Copy)]
pub struct Chunks {
    left: u8,
}

impl Chunks {
    /// A body of `frames` frames.
    pub fn new(frames: u8) -> Self {
        Chunks { left: frames }
    }
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
pub fn inner(
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
//
// Always inlined into each variant's loop, so that every variant is measured in the same
// shape. Left to the inliner, whether these (and a middleware's own functions) were inlined
// changed from one build to the next with code that plays no part in the loop, and moved a
// variant's figure by up to 15 ns (`report-notes.md`).

/// Polls a future that must be ready on its first poll.
#[inline(always)]
pub fn ready_now<F: Future>(future: F, cx: &mut Context<'_>) -> F::Output {
    match pin!(future).poll(cx) {
        Poll::Ready(output) => output,
        Poll::Pending => panic!("the inner service is ready at once, so no variant may pend"),
    }
}

/// Polls `body` to its end, as a server writing it out would.
#[inline(always)]
pub fn consume<B>(body: B, cx: &mut Context<'_>)
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

/// A request as a server hands it over: built elsewhere (by the HTTP parser), so the
/// compiler cannot fuse its construction with the handler that ignores it. Without the
/// `black_box`, the bare service would build and drop the request in place, a saving no real
/// server gets and every middleware that inspects the request would appear to lose.
#[inline]
pub fn request() -> Request<()> {
    black_box(Request::new(()))
}

/// One whole request through `service`: readiness, call, response, body to the end.
#[inline(always)]
pub fn request_once<S, B>(service: &mut S, cx: &mut Context<'_>)
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
    let response = ready_now(service.call(request()), cx).expect("call failed");
    consume(response.into_body(), cx);
}

/// Something that serves one request per call; cloning it shares its middleware's state.
pub trait Target: Clone + Send + 'static {
    fn request(&mut self, cx: &mut Context<'_>);
    /// Serves one request like [`Target::request`], measuring what it holds on the way.
    fn footprint(&mut self, cx: &mut Context<'_>) -> Footprint;
}

/// What one request in flight holds besides the heap: the bytes a server keeps in the
/// connection's task while the handler runs (the response future) and then while the body
/// is sent (the response body), each with whatever the middleware holds beside it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Footprint {
    pub future_bytes: usize,
    pub body_bytes: usize,
}

/// One whole request through `service`, as [`request_once`], measuring its future and body;
/// `beside` is what the caller holds for the request's whole length.
pub fn footprint_once<S, B>(service: &mut S, cx: &mut Context<'_>, beside: usize) -> Footprint
where
    S: Service<Request<()>, Response = Response<B>>,
    S::Error: Debug,
    B: Body,
    B::Error: Debug,
{
    assert!(
        service.poll_ready(cx).is_ready(),
        "every variant is ready at once"
    );
    footprint_of(service.call(request()), cx, beside)
}

/// Measures `future` and then its response's body, consuming both.
pub fn footprint_of<F, B, E>(future: F, cx: &mut Context<'_>, beside: usize) -> Footprint
where
    F: Future<Output = Result<Response<B>, E>>,
    E: Debug,
    B: Body,
    B::Error: Debug,
{
    let future_bytes = std::mem::size_of_val(&future) + beside;
    let body = ready_now(future, cx).expect("call failed").into_body();
    let body_bytes = std::mem::size_of_val(&body) + beside;
    consume(body, cx);
    Footprint {
        future_bytes,
        body_bytes,
    }
}

/// A service built from layers.
#[derive(Clone)]
pub struct Layered<S>(S);

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

    fn footprint(&mut self, cx: &mut Context<'_>) -> Footprint {
        footprint_once(&mut self.0, cx, 0)
    }
}

/// tokio-util: the response future is tracked by a `TaskTracker`.
#[derive(Clone)]
pub struct Tracked<S> {
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
        let future = self.tracker.track_future(self.inner.call(request()));
        let response = ready_now(future, cx).expect("call failed");
        consume(response.into_body(), cx);
    }

    fn footprint(&mut self, cx: &mut Context<'_>) -> Footprint {
        assert!(self.inner.poll_ready(cx).is_ready());
        footprint_of(self.tracker.track_future(self.inner.call(request())), cx, 0)
    }
}

/// tokio-graceful: a `ShutdownGuard` clone held for the whole request, body included.
#[derive(Clone)]
pub struct Guarded<S> {
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

    fn footprint(&mut self, cx: &mut Context<'_>) -> Footprint {
        let guard = self.guard.clone();
        let footprint = footprint_once(&mut self.inner, cx, std::mem::size_of_val(&guard));
        drop(guard);
        footprint
    }
}

/// A control for the two-thread case: every clone gets a controller of its own, so the two
/// threads share no state at all. What the shared version costs beyond this is contention;
/// what this costs beyond its one-thread figure is the machine (two threads on two vCPUs).
pub struct PerThread<S, F> {
    service: S,
    make: F,
}

impl<S, F: Fn() -> S + Clone> Clone for PerThread<S, F> {
    fn clone(&self) -> Self {
        PerThread {
            service: (self.make)(),
            make: self.make.clone(),
        }
    }
}

impl<S, B, F> Target for PerThread<S, F>
where
    S: Service<Request<()>, Response = Response<B>> + Send + 'static,
    S::Error: Debug,
    B: Body,
    B::Error: Debug,
    F: Fn() -> S + Clone + Send + 'static,
{
    #[inline]
    fn request(&mut self, cx: &mut Context<'_>) {
        request_once(&mut self.service, cx);
    }

    fn footprint(&mut self, cx: &mut Context<'_>) -> Footprint {
        footprint_once(&mut self.service, cx, 0)
    }
}

// === timing ===

/// `iters` requests on the calling thread.
pub fn run_here<T: Target>(target: &mut T, iters: u64) -> Duration {
    let mut cx = Context::from_waker(noop_waker_ref());
    let start = Instant::now();
    for _ in 0..iters {
        target.request(&mut cx);
    }
    start.elapsed()
}

/// Two worker threads, each with its own clone of one target, started together per batch.
pub struct Pair {
    jobs: Vec<mpsc::Sender<u64>>,
    spans: mpsc::Receiver<(Instant, Instant)>,
    workers: Vec<JoinHandle<()>>,
}

impl Pair {
    pub fn new<T: Target>(target: &T) -> Self {
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
    pub fn run(&self, iters: u64) -> Duration {
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

/// A variant, type-erased at the batch level: dynamic dispatch once per batch, never per
/// request.
pub trait Runner {
    /// `iters` requests on the calling thread; the wall time they took.
    fn run_here(&mut self, iters: u64) -> Duration;
    /// Two threads hammering clones of this variant's service.
    fn pair(&self) -> Pair;
    /// One request on the calling thread, measured.
    fn footprint(&mut self) -> Footprint;
}

impl<T: Target> Runner for T {
    fn run_here(&mut self, iters: u64) -> Duration {
        run_here(self, iters)
    }

    fn footprint(&mut self) -> Footprint {
        Target::footprint(self, &mut Context::from_waker(noop_waker_ref()))
    }

    fn pair(&self) -> Pair {
        Pair::new(self)
    }
}

/// Every variant for one body size, in the order they are reported.
pub struct Variants {
    /// Name and runner of each variant.
    pub list: Vec<(&'static str, Box<dyn Runner>)>,
    // Peers' controllers outlive their services, as in a server. Declared after `list` so
    // they are dropped after it.
    _keep: Vec<Box<dyn Any>>,
    _runtime: tokio::runtime::Runtime,
}

/// The names of all variants, in report order.
pub const NAMES: [&str; 15] = [
    "bare",
    "reference_passthrough",
    "reference_counting",
    "reference_counting_crate_guard",
    "reference_counting_crate_guard_on_drop",
    "reference_counting_thread_local",
    "shutdown_layer",
    "in_flight_layer",
    "reject_when_draining_layer",
    "long_lived_layer",
    "tower_http_in_flight",
    "task_tracker",
    "drain_retain",
    "concurrency_limit",
    "tokio_graceful_guard",
];

impl Variants {
    /// Builds every variant with a response body of `frames` frames.
    pub fn new(frames: u8) -> Self {
        Self::build(frames, false)
    }

    /// Every variant, then `shutdown_layer_per_thread`: [`PerThread`]'s control for the
    /// two-thread case.
    pub fn with_per_thread_control(frames: u8) -> Self {
        Self::build(frames, true)
    }

    fn build(frames: u8, per_thread_control: bool) -> Self {
        let mut keep: Vec<Box<dyn Any>> = Vec::new();
        let mut list: Vec<(&'static str, Box<dyn Runner>)> = vec![
            ("bare", Box::new(Layered(inner(frames)))),
            (
                "reference_passthrough",
                Box::new(Layered(Passthrough(inner(frames)))),
            ),
            (
                "reference_counting",
                Box::new(Layered(Counting::<_, _, AtEnd>::new(
                    inner(frames),
                    StaticCounter::new(),
                ))),
            ),
            (
                "reference_counting_crate_guard",
                Box::new(Layered(Counting::<_, _, AtEnd>::new(
                    inner(frames),
                    Shutdown::new(),
                ))),
            ),
            (
                "reference_counting_crate_guard_on_drop",
                Box::new(Layered(Counting::<_, _, OnDrop>::new(
                    inner(frames),
                    Shutdown::new(),
                ))),
            ),
            (
                "reference_counting_thread_local",
                Box::new(Layered(Counting::<_, _, AtEnd>::new(
                    inner(frames),
                    ThreadCounter::new(),
                ))),
            ),
        ];

        // One controller per variant, so no variant inherits another's counter state.
        let layered = Shutdown::new().layer().layer(inner(frames));
        list.push(("shutdown_layer", Box::new(Layered(layered))));
        let layered = InFlightLayer::new(Shutdown::new()).layer(inner(frames));
        list.push(("in_flight_layer", Box::new(Layered(layered))));
        let layered = RejectWhenDrainingLayer::new(Shutdown::new()).layer(inner(frames));
        list.push(("reject_when_draining_layer", Box::new(Layered(layered))));
        let layered = LongLivedLayer::new(Shutdown::new()).layer(inner(frames));
        list.push(("long_lived_layer", Box::new(Layered(layered))));

        let (layer, counter) = InFlightRequestsLayer::pair();
        keep.push(Box::new(counter));
        list.push((
            "tower_http_in_flight",
            Box::new(Layered(layer.layer(inner(frames)))),
        ));

        let tracker = tokio_util::task::TaskTracker::new();
        let tracked = Tracked {
            inner: inner(frames),
            tracker,
        };
        list.push(("task_tracker", Box::new(tracked)));

        let (signal, watch) = drain::channel();
        keep.push(Box::new(signal));
        let layered = drain::Retain::layer(watch).layer(inner(frames));
        list.push(("drain_retain", Box::new(Layered(layered))));

        let limit = ConcurrencyLimitLayer::new(tokio::sync::Semaphore::MAX_PERMITS);
        list.push((
            "concurrency_limit",
            Box::new(Layered(limit.layer(inner(frames)))),
        ));

        // tokio-graceful spawns its watcher task when built, so it needs a runtime; the
        // runtime is never driven and plays no part in any measurement.
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime");
        let graceful = {
            let _entered = runtime.enter();
            tokio_graceful::Shutdown::no_signal()
        };
        let guarded = Guarded {
            inner: inner(frames),
            guard: graceful.guard(),
        };
        keep.push(Box::new(graceful));
        list.push(("tokio_graceful_guard", Box::new(guarded)));

        debug_assert!(list.iter().map(|(name, _)| *name).eq(NAMES));
        if per_thread_control {
            let make = move || Shutdown::new().layer().layer(inner(frames));
            let control = PerThread {
                service: make(),
                make,
            };
            list.push(("shutdown_layer_per_thread", Box::new(control)));
        }
        for (_, runner) in &mut list {
            // One request outside any measurement: a thread's first use of its counter
            // slot, lazy statics in the peers.
            runner.run_here(1);
        }
        Variants {
            list,
            _keep: keep,
            _runtime: runtime,
        }
    }
}
