//! Soak: many requests through `Shutdown::layer` on a multi-thread runtime, with random
//! cancellation (response futures dropped mid-poll, bodies dropped mid-stream, whole tasks
//! aborted), and a drain-then-restart cycle every so often, each with a fresh `Shutdown`.
//! After every cycle the drain must have drained, the in-flight count must be zero, and every
//! request must be accounted for exactly once: served whole, cancelled, or rejected.
//!
//! Sized by environment variables, so the default `cargo test` run stays short:
//!
//! * `SOAK_REQUESTS` (default 100 000): total requests. The full soak is one million, in
//!   release: `SOAK_REQUESTS=1000000 cargo test --release --test soak -- --nocapture`.
//! * `SOAK_CYCLES` (default one per 10 000 requests, at least 20): drain/restart cycles the
//!   requests are split over.
//! * `SOAK_SEED`: the generator's seed, printed at the start so a failure can be replayed.

mod support;

use std::convert::Infallible;
use std::pin::{pin, Pin};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body::{Body, Frame};
use http_body_util::BodyExt;
use tokio::sync::Notify;
use tower::{Layer, Service, ServiceExt};
use tower_drain::{DrainOutcome, Shutdown};

use support::bounded_for;

/// The bound on any single wait, longer than the shared one: a million requests run here.
const BOUND: Duration = Duration::from_secs(120);
const WORKERS: u64 = 16;
const CHUNK: &[u8] = b"0123456789abcdef";

fn env_u64(name: &str, default: u64) -> u64 {
    match std::env::var(name) {
        Ok(value) => value
            .parse()
            .unwrap_or_else(|_| panic!("{name} must be a whole number, not {value:?}")),
        Err(_) => default,
    }
}

// === the inner service ===

/// What the backend is asked to do for one request: yield to the scheduler `yields` times
/// before answering, then stream `chunks` chunks, yielding between them.
#[derive(Clone, Copy)]
struct Plan {
    yields: u8,
    chunks: u8,
}

/// A streaming body that gives the scheduler a turn before every chunk, so a body is often
/// mid-stream when it is dropped or a drain begins.
struct Chunks {
    left: u8,
    yield_next: bool,
}

impl Body for Chunks {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        if self.left == 0 {
            return Poll::Ready(None);
        }
        if self.yield_next {
            self.yield_next = false;
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        self.left -= 1;
        self.yield_next = true;
        Poll::Ready(Some(Ok(Frame::data(Bytes::from_static(CHUNK)))))
    }

    fn is_end_stream(&self) -> bool {
        self.left == 0
    }
}

async fn backend(request: Request<Plan>) -> Result<Response<Chunks>, Infallible> {
    let plan = *request.body();
    for _ in 0..plan.yields {
        tokio::task::yield_now().await;
    }
    Ok(Response::new(Chunks {
        left: plan.chunks,
        yield_next: false,
    }))
}

// === one request, and the ways it can end ===

#[derive(Default)]
struct Tally {
    whole: AtomicU64,
    cancelled: AtomicU64,
    rejected: AtomicU64,
}

enum Ended {
    Whole,
    Cancelled,
    Rejected,
}

impl Tally {
    fn add(&self, ended: Ended) {
        let counter = match ended {
            Ended::Whole => &self.whole,
            Ended::Cancelled => &self.cancelled,
            Ended::Rejected => &self.rejected,
        };
        // Relaxed: totals read after every worker has been joined.
        counter.fetch_add(1, Ordering::Relaxed);
    }

    fn get(&self) -> (u64, u64, u64) {
        (
            self.whole.load(Ordering::Relaxed),
            self.cancelled.load(Ordering::Relaxed),
            self.rejected.load(Ordering::Relaxed),
        )
    }
}

/// Sends one request and ends it one of several ways, picked by `rng`.
async fn one_request<S>(mut service: S, shutdown: Shutdown, rng: &mut fastrand::Rng) -> Ended
where
    S: Service<Request<Plan>, Response = Served, Error = Infallible> + Send + 'static,
    S::Future: Send + 'static,
{
    let plan = Plan {
        yields: rng.u64(..3) as u8,
        chunks: rng.u64(..5) as u8,
    };
    let way = rng.u64(..10);
    let frames_before_drop = rng.u64(..u64::from(plan.chunks) + 1);
    let polls_before_abort = rng.u64(..6);
    if way == 4 {
        // The whole request runs in its own task, aborted after a few turns (perhaps before
        // it was even sent). A rejection is ready at its first poll, so an abort can never
        // hide one.
        let task = tokio::spawn(async move {
            let response = service.oneshot(Request::new(plan)).await.unwrap();
            finish(response, plan, shutdown).await
        });
        for _ in 0..polls_before_abort {
            tokio::task::yield_now().await;
        }
        task.abort();
        return match bounded_for(BOUND, "an aborted request task", task).await {
            Ok(ended) => ended,
            Err(error) if error.is_cancelled() => Ended::Cancelled,
            Err(error) => panic!("a request task failed: {error}"),
        };
    }
    let ready = service.ready().await.unwrap();
    let future = ready.call(Request::new(plan));
    match way {
        // Dropped after a single poll: before the response exists, if the backend yields.
        0 => {
            let mut future = pin!(future);
            match futures_util::poll!(future.as_mut()) {
                Poll::Ready(response) => classify_dropped(response.unwrap(), shutdown),
                Poll::Pending => Ended::Cancelled,
            }
        }
        // The response is dropped without reading its body.
        1 => classify_dropped(future.await.unwrap(), shutdown),
        // The body is dropped after some of its frames.
        2 | 3 => {
            let response = future.await.unwrap();
            if let Some(rejected) = rejection(&response, shutdown) {
                return rejected;
            }
            let mut body = pin!(response.into_body());
            for _ in 0..frames_before_drop {
                match body.as_mut().frame().await {
                    Some(Ok(_)) => {}
                    Some(Err(error)) => panic!("a body failed while serving: {error}"),
                    None => return Ended::Whole,
                }
            }
            if body.is_end_stream() {
                Ended::Whole
            } else {
                Ended::Cancelled
            }
        }
        // Read to the end.
        _ => finish(future.await.unwrap(), plan, shutdown).await,
    }
}

type Served = Response<tower_drain::middleware::ResponseBody<Chunks>>;

/// A 503 is only ever sent once admission has closed.
fn rejection(response: &Served, shutdown: Shutdown) -> Option<Ended> {
    if response.status() != StatusCode::SERVICE_UNAVAILABLE {
        assert_eq!(response.status(), StatusCode::OK);
        return None;
    }
    assert!(
        shutdown.phase().admission_closed(),
        "rejected while admission was open"
    );
    Some(Ended::Rejected)
}

fn classify_dropped(response: Served, shutdown: Shutdown) -> Ended {
    if let Some(rejected) = rejection(&response, shutdown) {
        return rejected;
    }
    if response.body().is_end_stream() {
        Ended::Whole
    } else {
        Ended::Cancelled
    }
}

async fn finish(response: Served, plan: Plan, shutdown: Shutdown) -> Ended {
    if let Some(rejected) = rejection(&response, shutdown) {
        return rejected;
    }
    let body = match response.into_body().collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(error) => panic!("a body failed while the drain still had time: {error}"),
    };
    assert_eq!(body.len(), CHUNK.len() * usize::from(plan.chunks));
    Ended::Whole
}

// === the soak ===

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn soak_random_cancellation_with_drain_restart_cycles_leaves_counts_at_zero() {
    let total = env_u64("SOAK_REQUESTS", 100_000).max(1);
    let cycles = env_u64("SOAK_CYCLES", (total / 10_000).clamp(20, 1_000)).clamp(1, total);
    let seed = env_u64("SOAK_SEED", 0x00c0_ffee);
    eprintln!("soak: {total} requests over {cycles} drain/restart cycles, seed {seed:#x}");
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut sums = (0, 0, 0);

    for cycle in 0..cycles {
        let budget = total / cycles + u64::from(cycle < total % cycles);
        // Drain somewhere in the second half, so it lands on requests at every stage.
        let drain_at = budget / 2 + rng.u64(..budget / 2 + 1);
        let lame_duck_first = rng.u64(..2) == 0;

        let shutdown = Shutdown::new();
        let service = shutdown.layer().layer(tower::service_fn(backend));
        let tally = Arc::new(Tally::default());
        let issued = Arc::new(AtomicU64::new(0));
        let reached = Arc::new(Notify::new());

        let workers: Vec<_> = (0..WORKERS)
            .map(|worker| {
                let service = service.clone();
                let tally = tally.clone();
                let issued = issued.clone();
                let reached = reached.clone();
                let mut rng = fastrand::Rng::with_seed(rng.u64(..) ^ worker);
                tokio::spawn(async move {
                    loop {
                        // Relaxed: hands out distinct request numbers; nothing else is
                        // published through it.
                        let n = issued.fetch_add(1, Ordering::Relaxed);
                        if n >= budget {
                            break;
                        }
                        if n == drain_at {
                            reached.notify_one();
                        }
                        let ended = one_request(service.clone(), shutdown, &mut rng).await;
                        tally.add(ended);
                    }
                })
            })
            .collect();

        if drain_at < budget {
            bounded_for(BOUND, "the drain point", reached.notified()).await;
        }
        if lame_duck_first {
            assert!(shutdown.begin_lame_duck());
        }
        let report = bounded_for(
            BOUND,
            "the drain",
            shutdown.drain(Duration::from_secs(60)).unwrap(),
        )
        .await;
        assert_eq!(
            report.outcome,
            DrainOutcome::Drained,
            "cycle {cycle}, seed {seed:#x}: {report}"
        );
        assert_eq!(report.completed, report.in_flight_at_start, "{report}");
        for worker in workers {
            bounded_for(BOUND, "a worker", worker).await.unwrap();
        }

        let (whole, cancelled, rejected) = tally.get();
        assert_eq!(
            whole + cancelled + rejected,
            budget,
            "cycle {cycle}: a request was lost or counted twice"
        );
        assert_eq!(shutdown.in_flight(), 0, "cycle {cycle}: leaked count");
        assert_eq!(shutdown.rejected(), rejected, "cycle {cycle}");
        assert!(report.rejected <= rejected, "cycle {cycle}: {report}");
        assert!(
            shutdown.guard().is_none(),
            "admission reopened after a drain"
        );
        sums = (sums.0 + whole, sums.1 + cancelled, sums.2 + rejected);
    }
    let (whole, cancelled, rejected) = sums;
    eprintln!(
        "soak: {total} requests, {cycles} cycles: {whole} served whole, {cancelled} cancelled, \
         {rejected} rejected while draining; in flight after every cycle: 0"
    );
    assert!(
        whole > 0 && cancelled > 0 && rejected > 0,
        "the mix exercised nothing"
    );
}
