//! Random sequences of operations checked against a small model of the counter and phases.
//!
//! Operations: admit (a guard, or a request through `Shutdown::layer` held either before its
//! response exists or with its body unread), release (finish it normally), cancel (drop it
//! half-way), begin lame duck, begin drain, let the deadline pass, force. After every step:
//!
//! * the phase equals the model's, and only moves forward;
//! * admission fails exactly from `Draining` on, and every refused request is a counted 503;
//! * `in_flight()` equals the number of live guards and requests;
//! * a `Drain` is ready exactly when the model has decided, its outcome is `Drained` exactly
//!   when the count reached zero before a timeout or force, and every figure of its report
//!   (elapsed included: the clock is tokio's paused clock) matches the model;
//! * a body read after the deadline yields `Aborted`, and one read before it is whole;
//! * a response made after admission closed carries `Connection: close`, and one made
//!   before does not.
//!
//! `PROPTEST_CASES` raises the number of sequences tried (default 256).

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::task::Poll;
use std::time::Duration;

use bytes::Bytes;
use http::header::CONNECTION;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use proptest::prelude::*;
use tokio::sync::oneshot;
use tower::{Layer, Service, ServiceExt};
use tower_drain::middleware::ResponseBody;
use tower_drain::{Aborted, Drain, DrainOutcome, InFlightGuard, Phase, Shutdown};

#[derive(Debug, Clone)]
enum Op {
    AdmitGuard,
    /// A request through the layer; `pending` holds it before its response exists, otherwise
    /// its response is held with the body unread.
    AdmitRequest {
        pending: bool,
    },
    /// Finishes a live item normally (index taken modulo the number live).
    Release(usize),
    /// Drops a live item half-way.
    Cancel(usize),
    BeginLameDuck,
    BeginDrain {
        timeout_secs: u64,
    },
    /// Moves the paused clock forward.
    Advance {
        ms: u64,
    },
    /// Moves the clock past any possible deadline.
    Timeout,
    Force,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => Just(Op::AdmitGuard),
        3 => any::<bool>().prop_map(|pending| Op::AdmitRequest { pending }),
        3 => any::<usize>().prop_map(Op::Release),
        2 => any::<usize>().prop_map(Op::Cancel),
        1 => Just(Op::BeginLameDuck),
        2 => (0u64..=5).prop_map(|timeout_secs| Op::BeginDrain { timeout_secs }),
        2 => (1u64..=3_000).prop_map(|ms| Op::Advance { ms }),
        1 => Just(Op::Timeout),
        1 => Just(Op::Force),
    ]
}

// === the model ===

#[derive(Debug, Clone, PartialEq)]
struct Decision {
    outcome: DrainOutcome,
    forced: bool,
    at: Duration,
    still_running: usize,
    rejected: u64,
}

/// The specification: a count, the phases, and when the outcome is fixed.
#[derive(Debug, Default)]
struct Model {
    lame_duck: bool,
    live: usize,
    rejected: u64,
    /// Time on the paused clock since the case began.
    now: Duration,
    drain_started: Option<Duration>,
    deadline: Option<Duration>,
    in_flight_at_start: usize,
    decision: Option<Decision>,
}

impl Model {
    fn phase(&self) -> Phase {
        match (&self.decision, self.drain_started, self.lame_duck) {
            (Some(decision), _, _) if decision.outcome == DrainOutcome::Drained => Phase::Drained,
            (Some(_), _, _) => Phase::TimedOut,
            (None, Some(_), _) => Phase::Draining,
            (None, None, true) => Phase::LameDuck,
            (None, None, false) => Phase::Serving,
        }
    }

    fn admits(&self) -> bool {
        self.drain_started.is_none()
    }

    fn decide(&mut self, outcome: DrainOutcome, forced: bool) -> bool {
        if self.decision.is_some() {
            return false;
        }
        self.decision = Some(Decision {
            outcome,
            forced,
            at: self.now,
            still_running: match outcome {
                DrainOutcome::Drained => 0,
                DrainOutcome::TimedOut => self.live,
            },
            rejected: self.rejected,
        });
        true
    }

    fn begin_drain(&mut self) {
        if self.drain_started.is_some() {
            return;
        }
        self.drain_started = Some(self.now);
        self.in_flight_at_start = self.live;
        if self.live == 0 {
            self.decide(DrainOutcome::Drained, false);
        }
    }

    fn drain(&mut self, timeout: Duration) {
        self.begin_drain();
        self.deadline.get_or_insert(self.now + timeout);
    }

    fn force(&mut self) -> bool {
        self.begin_drain();
        self.decide(DrainOutcome::TimedOut, true)
    }

    fn end_one(&mut self) {
        self.live -= 1;
        if self.drain_started.is_some() && self.live == 0 {
            self.decide(DrainOutcome::Drained, false);
        }
    }

    fn advance(&mut self, by: Duration) {
        self.now += by;
        if self.deadline.is_some_and(|deadline| self.now >= deadline) {
            self.decide(DrainOutcome::TimedOut, false);
        }
    }

    fn aborted(&self) -> bool {
        self.phase() == Phase::TimedOut
    }
}

// === the system ===

type Served = Response<ResponseBody<Full<Bytes>>>;
type Pending = Pin<Box<dyn Future<Output = Result<Served, Infallible>>>>;

/// Something the system holds in flight, in the same order as the model counts it.
enum Live {
    Guard(InFlightGuard),
    /// Admitted; the handler waits for `release` before it answers.
    Pending {
        release: oneshot::Sender<()>,
        future: Pending,
    },
    /// Answered; the body has not been read.
    Body(Served),
}

/// The inner service: answers at once, or once the request's receiver fires.
async fn handler(
    request: Request<Option<oneshot::Receiver<()>>>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    if let Some(release) = request.into_body() {
        let _ = release.await;
    }
    Ok(Response::new(Full::new(Bytes::from_static(b"done"))))
}

/// Reads a served body to its end, and checks it is whole, or cut when the model says the
/// deadline has passed. A handler that had not answered by the deadline is answered by the
/// middleware instead, with a 503 saying the request was aborted.
async fn read_body(response: Served, model: &Model) -> Result<(), TestCaseError> {
    let status = response.status();
    match (response.into_body().collect().await, model.aborted()) {
        (Ok(body), false) => prop_assert_eq!(&body.to_bytes()[..], b"done"),
        (Ok(body), true) if status == 503 => {
            prop_assert!(body.to_bytes().starts_with(b"request aborted"));
        }
        (Err(error), true) => {
            prop_assert!(error.is::<Aborted>(), "cut by something else: {error}");
        }
        (Ok(_), true) => prop_assert!(false, "a body read after the deadline must be cut"),
        (Err(error), false) => prop_assert!(false, "a body read in time was cut: {error}"),
    }
    Ok(())
}

async fn run(ops: Vec<Op>) -> Result<(), TestCaseError> {
    let shutdown = Shutdown::new();
    let mut service = shutdown.layer().layer(tower::service_fn(handler));
    let mut model = Model::default();
    let mut live: Vec<Live> = Vec::new();
    let mut drains: Vec<Pin<Box<Drain>>> = Vec::new();
    let mut last_phase = Phase::Serving;

    for op in ops {
        match op {
            Op::AdmitGuard => {
                let guard = shutdown.guard();
                prop_assert_eq!(
                    guard.is_some(),
                    model.admits(),
                    "guard() in {:?}",
                    model.phase()
                );
                if let Some(guard) = guard {
                    live.push(Live::Guard(guard));
                    model.live += 1;
                }
            }
            Op::AdmitRequest { pending } => {
                let (release, receiver) = oneshot::channel();
                let request = Request::new(pending.then_some(receiver));
                let mut future: Pending = Box::pin(service.ready().await.unwrap().call(request));
                let polled = futures_util::poll!(future.as_mut());
                if !model.admits() {
                    let Poll::Ready(Ok(response)) = polled else {
                        return Err(TestCaseError::fail("a rejection must be ready at once"));
                    };
                    prop_assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
                    model.rejected += 1;
                } else if pending {
                    prop_assert!(polled.is_pending(), "the handler is waiting");
                    live.push(Live::Pending { release, future });
                    model.live += 1;
                } else {
                    let Poll::Ready(Ok(response)) = polled else {
                        return Err(TestCaseError::fail("an immediate handler is ready at once"));
                    };
                    prop_assert_eq!(response.status(), StatusCode::OK);
                    live.push(Live::Body(response));
                    model.live += 1;
                }
            }
            Op::Release(index) if !live.is_empty() => {
                let item = live.remove(index % live.len());
                match item {
                    Live::Guard(guard) => {
                        prop_assert_eq!(guard.is_aborted(), model.aborted());
                        drop(guard);
                        model.end_one();
                    }
                    Live::Pending { release, future } => {
                        let _ = release.send(());
                        let response = future.await.unwrap();
                        let closing = response
                            .headers()
                            .get(CONNECTION)
                            .is_some_and(|v| v == "close");
                        // Told to close the connection exactly when the response was made
                        // after admission closed.
                        prop_assert_eq!(closing, !model.admits());
                        read_body(response, &model).await?;
                        model.end_one();
                    }
                    Live::Body(response) => {
                        read_body(response, &model).await?;
                        model.end_one();
                    }
                }
            }
            Op::Cancel(index) if !live.is_empty() => {
                drop(live.remove(index % live.len()));
                model.end_one();
            }
            Op::Release(_) | Op::Cancel(_) => {}
            Op::BeginLameDuck => {
                let expected = model.phase() == Phase::Serving;
                prop_assert_eq!(shutdown.begin_lame_duck(), expected);
                if expected {
                    model.lame_duck = true;
                }
            }
            Op::BeginDrain { timeout_secs } => {
                let timeout = Duration::from_secs(timeout_secs);
                drains.push(Box::pin(shutdown.drain(timeout).unwrap()));
                model.drain(timeout);
            }
            Op::Advance { ms } => {
                let by = Duration::from_millis(ms);
                tokio::time::advance(by).await;
                model.now += by;
            }
            Op::Timeout => {
                let by = Drain::MAX_TIMEOUT * 2;
                tokio::time::advance(by).await;
                model.now += by;
            }
            Op::Force => {
                let expected = model.force();
                prop_assert_eq!(shutdown.force(), expected);
            }
        }

        // A deadline passes when a `Drain` notices it: poll every drain, then let the model
        // catch up the same way.
        let mut ready = Vec::new();
        for drain in &mut drains {
            if let Poll::Ready(report) = futures_util::poll!(drain.as_mut()) {
                ready.push(report);
            }
        }
        model.advance(Duration::ZERO);

        let phase = shutdown.phase();
        prop_assert_eq!(phase, model.phase());
        prop_assert!(
            phase >= last_phase,
            "phase went back from {} to {}",
            last_phase,
            phase
        );
        last_phase = phase;
        prop_assert_eq!(shutdown.in_flight(), model.live);
        prop_assert_eq!(shutdown.in_flight(), live.len());
        prop_assert_eq!(shutdown.rejected(), model.rejected);

        match &model.decision {
            None => prop_assert!(ready.is_empty(), "a drain resolved before its outcome"),
            Some(decision) => {
                prop_assert_eq!(
                    ready.len(),
                    drains.len(),
                    "every drain resolves at the outcome"
                );
                let started = model.drain_started.unwrap();
                for report in &ready {
                    prop_assert_eq!(report.outcome, decision.outcome);
                    prop_assert_eq!(report.forced, decision.forced);
                    prop_assert_eq!(report.elapsed, decision.at - started);
                    prop_assert_eq!(report.in_flight_at_start, model.in_flight_at_start);
                    prop_assert_eq!(report.still_running, decision.still_running);
                    prop_assert_eq!(
                        report.completed,
                        model.in_flight_at_start - decision.still_running
                    );
                    prop_assert_eq!(report.rejected, decision.rejected);
                }
                // Resolved drains are done with; later ones join the same report.
                drains.clear();
            }
        }
    }
    Ok(())
}

proptest! {
    #[test]
    fn operations_match_the_model(ops in proptest::collection::vec(op(), 0..60)) {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .start_paused(true)
            .build()
            .unwrap();
        runtime.block_on(run(ops))?;
    }
}
