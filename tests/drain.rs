//! The `Drain` future: immediate when idle, bounded by its timeout, idempotent.

mod support;

use std::time::Duration;

use axum::routing::get;
use axum::Router;
use futures_util::FutureExt;
use http::Method;
use support::http::{http1_client, serve};
use support::{bounded, paused_runtime};
use tokio::sync::oneshot;
use tower_drain::{DrainError, DrainOutcome, LongLivedKind, Phase, Shutdown};

#[tokio::test]
async fn drain_with_nothing_in_flight_is_ready_on_first_poll() {
    let shutdown = Shutdown::new();
    let report = shutdown
        .drain(Duration::from_secs(3600))
        .unwrap()
        .now_or_never()
        .expect("ready without waiting");
    assert_eq!(report.outcome, DrainOutcome::Drained);
    assert_eq!(report.in_flight_at_start, 0);
    assert_eq!(shutdown.phase(), Phase::Drained);
}

/// A server whose `/hang` handler never answers, and a client request stuck in it.
/// Returns the client's task and the server's.
async fn hung_request(
    shutdown: &Shutdown,
) -> (
    tokio::task::JoinHandle<Result<http::Response<hyper::body::Incoming>, String>>,
    tokio::task::JoinHandle<()>,
) {
    let (entered_tx, entered_rx) = oneshot::channel::<()>();
    let entered_tx = std::sync::Arc::new(std::sync::Mutex::new(Some(entered_tx)));
    let app = Router::new()
        .route(
            "/hang",
            get(move || {
                if let Some(tx) = entered_tx.lock().unwrap().take() {
                    let _ = tx.send(());
                }
                std::future::pending::<&'static str>()
            }),
        )
        .layer(shutdown.layer());
    let (addr, server) = serve(app).await;
    let client = tokio::spawn(async move {
        let uri = format!("http://{addr}/hang").parse().unwrap();
        http1_client().get(uri).await.map_err(|e| format!("{e:?}"))
    });
    bounded("handler entered", entered_rx).await.unwrap();
    (client, server)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_times_out_reporting_what_still_runs_and_aborts_it() {
    let shutdown = Shutdown::new();
    let (client, server) = hung_request(&shutdown).await;
    assert_eq!(shutdown.in_flight(), 1);

    let report = bounded("drain", shutdown.drain(Duration::from_millis(50)).unwrap()).await;
    assert_eq!(report.outcome, DrainOutcome::TimedOut);
    assert!(!report.forced);
    assert_eq!(report.in_flight_at_start, 1);
    assert_eq!(report.still_running, 1);
    assert_eq!(report.completed, 0);
    assert_eq!(shutdown.phase(), Phase::TimedOut);

    // What the deadline tells the server to do: drop the connections it still holds. The
    // stuck request then ends and stops counting. Its client sees the connection cut, or a
    // 503 if the server happened to poll the request after the deadline; never a success.
    bounded("aborted signal", shutdown.aborted()).await;
    server.abort();
    match bounded("client", client).await.unwrap() {
        Ok(response) => assert_eq!(response.status(), 503),
        Err(_cut) => {}
    }
    assert_eq!(shutdown.in_flight(), 0);
}

#[tokio::test]
async fn request_polled_after_the_deadline_is_answered_as_aborted() {
    use tower::{service_fn, Layer, Service, ServiceExt};
    let shutdown = Shutdown::new();
    let (answer_tx, answer_rx) = oneshot::channel::<()>();
    let answer_rx = std::sync::Mutex::new(Some(answer_rx));
    let mut service = shutdown
        .layer()
        .layer(service_fn(move |_: http::Request<()>| {
            let answer = answer_rx.lock().unwrap().take().unwrap();
            async move {
                answer.await.unwrap();
                Ok::<_, std::convert::Infallible>(http::Response::new(String::from("late")))
            }
        }));
    let mut call = Box::pin(service.ready().await.unwrap().call(http::Request::new(())));
    assert!(call.as_mut().now_or_never().is_none());

    let report = bounded("drain", shutdown.drain(Duration::ZERO).unwrap()).await;
    assert_eq!(report.still_running, 1);
    // The handler is ready to answer, but the deadline has passed: the client gets a 503.
    answer_tx.send(()).unwrap();
    let response = call.await.unwrap();
    assert_eq!(response.status(), 503);
    // The client may retry elsewhere, as after a rejection; the request is HTTP/1.1, so the
    // connection closes.
    assert_eq!(response.headers()[http::header::RETRY_AFTER], "1");
    assert_eq!(response.headers()[http::header::CONNECTION], "close");
    assert_eq!(shutdown.in_flight(), 0);
    // The aborted answer, not the ordinary rejection: this request was admitted.
    let body = http_body_util::BodyExt::collect(response.into_body())
        .await
        .unwrap()
        .to_bytes();
    assert!(body.starts_with(b"request aborted"), "{body:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zero_timeout_does_not_wait() {
    let shutdown = Shutdown::new();
    let (_client, _server) = hung_request(&shutdown).await;

    let report = bounded("drain", shutdown.drain(Duration::ZERO).unwrap()).await;
    assert_eq!(report.outcome, DrainOutcome::TimedOut);
    assert_eq!(report.still_running, 1);

    let idle = Shutdown::new();
    let report = bounded("idle drain", idle.drain(Duration::ZERO).unwrap()).await;
    assert_eq!(report.outcome, DrainOutcome::Drained, "nothing to wait for");
}

// "Don't wait" means the first poll decides: no timer tick, no second poll.
#[tokio::test]
async fn zero_timeout_is_decided_at_the_first_poll() {
    let shutdown = Shutdown::new();
    let _work = shutdown.guard().unwrap();
    let report = shutdown
        .drain(Duration::ZERO)
        .unwrap()
        .now_or_never()
        .expect("a zero timeout waits for nothing");
    assert_eq!(report.outcome, DrainOutcome::TimedOut);
    assert_eq!(report.still_running, 1);
    assert_eq!(shutdown.phase(), Phase::TimedOut);

    let idle = Shutdown::new();
    let report = idle
        .drain(Duration::ZERO)
        .unwrap()
        .now_or_never()
        .expect("idle");
    assert_eq!(report.outcome, DrainOutcome::Drained, "nothing to wait for");
}

// On a paused clock time moves only when everything waits, and then only to the next
// deadline: the report's elapsed time is what the drain waited for, exactly.
#[tokio::test(start_paused = true)]
async fn zero_timeout_waits_for_no_deadline() {
    let shutdown = Shutdown::new();
    let _work = shutdown.guard().unwrap();
    let report = shutdown.drain(Duration::ZERO).unwrap().await;
    assert_eq!(report.outcome, DrainOutcome::TimedOut);
    assert_eq!(report.still_running, 1);
    // The paused clock never moved: the drain waited for no timer at all.
    assert_eq!(report.elapsed, Duration::ZERO, "{report}");
}

// A paused clock, so that "after the second call's own deadline" is a fact, not a race.
#[tokio::test(start_paused = true)]
async fn drain_called_twice_resolves_to_the_same_report() {
    let shutdown = Shutdown::new();
    let guard = shutdown.guard().unwrap();
    let first = shutdown.drain(Duration::from_secs(60)).unwrap();
    // The second call joins the first drain; its own (shorter) timeout does not cut it.
    let second = shutdown.drain(Duration::ZERO).unwrap();
    let waiter = tokio::spawn(second);
    // Past the second call's zero timeout, with the second drain polled there.
    tokio::time::advance(Duration::from_secs(1)).await;
    tokio::task::yield_now().await;
    assert_eq!(
        shutdown.phase(),
        Phase::Draining,
        "the zero timeout cut the drain"
    );
    drop(guard);

    let first = bounded("first drain", first).await;
    let second = bounded("second drain", waiter).await.unwrap();
    assert_eq!(first, second);
    assert_eq!(first.outcome, DrainOutcome::Drained);

    let third = bounded(
        "late drain",
        shutdown.drain(Duration::from_secs(1)).unwrap(),
    )
    .await;
    assert_eq!(first, third);
}

/// The deadline is kept by whoever polls a `Drain`: one dropped unawaited (`let _ =
/// shutdown.drain(..)`) leaves the drain undecided past its deadline, as `Shutdown::drain`
/// says, and the next `Drain` polled decides it at once, with the first call's deadline.
#[tokio::test(start_paused = true)]
async fn a_drain_dropped_unawaited_is_decided_by_the_next_one_polled() {
    let shutdown = Shutdown::new();
    let work = shutdown.guard().unwrap();
    drop(shutdown.drain(Duration::from_secs(10)).unwrap());
    tokio::time::advance(Duration::from_secs(3600)).await;
    assert_eq!(
        shutdown.phase(),
        Phase::Draining,
        "decided with no drain polled"
    );
    assert!(!work.is_aborted());

    let report = shutdown.drain(Duration::from_secs(10)).unwrap().await;
    assert_eq!(report.outcome, DrainOutcome::TimedOut, "{report}");
    assert_eq!(report.still_running, 1, "{report}");
    assert!(work.is_aborted());
}

#[tokio::test]
async fn absurd_timeout_is_refused_and_changes_nothing() {
    let shutdown = Shutdown::new();
    let error = shutdown.drain(Duration::MAX).unwrap_err();
    assert!(matches!(error, DrainError::TimeoutTooLong { .. }));
    let message = error.to_string();
    assert!(
        message.contains("maximum") && message.contains("nothing was changed"),
        "{message}"
    );
    assert_eq!(shutdown.phase(), Phase::Serving);
    assert!(shutdown.guard().is_some(), "still admitting");

    let report = bounded("drain", shutdown.drain(Duration::from_secs(1)).unwrap()).await;
    assert_eq!(report.outcome, DrainOutcome::Drained);
}

#[tokio::test]
async fn force_cuts_the_drain_short_and_says_so() {
    let shutdown = Shutdown::new();
    let guard = shutdown.guard().unwrap();
    let drain = shutdown.drain(Duration::from_secs(3600)).unwrap();
    assert!(!guard.is_aborted());

    assert!(shutdown.force());
    assert!(!shutdown.force(), "decided once");
    let report = bounded("drain", drain).await;
    assert_eq!(report.outcome, DrainOutcome::TimedOut);
    assert!(report.forced);
    assert_eq!(report.still_running, 1);
    assert!(guard.is_aborted(), "work still running is told to stop");
    bounded("aborted signal", shutdown.aborted()).await;
}

#[tokio::test]
async fn phase_signals_fire_in_order() {
    let shutdown = Shutdown::new();
    let mut closing = Box::pin(shutdown.closing());
    let mut shutting_down = Box::pin(shutdown.shutting_down());
    assert!(shutting_down.as_mut().now_or_never().is_none());

    assert!(shutdown.begin_lame_duck());
    assert!(!shutdown.begin_lame_duck());
    assert_eq!(shutdown.phase(), Phase::LameDuck);
    assert!(shutting_down.now_or_never().is_some());
    assert!(
        closing.as_mut().now_or_never().is_none(),
        "lame duck still admits"
    );
    assert!(shutdown.guard().is_some());

    let _drain = shutdown.drain(Duration::from_secs(1)).unwrap();
    assert!(closing.now_or_never().is_some());
    assert!(!shutdown.begin_lame_duck(), "phases never go back");
}

/// `drain` may be called from a thread without a runtime (a signal-handling thread, a
/// synchronous callback); its future is then awaited inside one. The timers are made at the
/// first poll, so the call neither panics nor leaves admission closed behind a panic.
#[test]
fn drain_called_outside_a_runtime_is_awaited_inside_one() {
    let shutdown = Shutdown::new();
    let drain = std::thread::spawn(move || shutdown.drain(Duration::from_secs(5)).unwrap())
        .join()
        .unwrap_or_else(|_| panic!("drain() panicked; phase now {}", shutdown.phase()));
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    let report = runtime.block_on(drain);
    assert_eq!(report.outcome, DrainOutcome::Drained);
    assert_eq!(shutdown.phase(), Phase::Drained);
}

/// Without `set_long_lived_grace`, long-lived work is cut at half the drain timeout: a drain
/// of 10 s cuts an upgraded connection's guard at 5 s, and, once that guard is dropped, ends
/// `Drained` with the connection listed as cut. On Tokio's paused clock, which moves only to
/// the next timer, so the figures are exact and no assertion depends on real time.
#[tokio::test(start_paused = true)]
async fn long_lived_work_is_cut_at_half_the_drain_timeout_by_default() {
    let shutdown = Shutdown::new();
    let guard = shutdown
        .long_lived_guard(LongLivedKind::Upgrade, Method::GET, "/ws")
        .unwrap();
    let drain = tokio::spawn(shutdown.drain(Duration::from_secs(10)).unwrap());
    bounded("the long-lived deadline", guard.deadline()).await;
    drop(guard);
    let report = bounded("the drain", drain).await.unwrap();
    assert_eq!(report.outcome, DrainOutcome::Drained, "{report}");
    assert_eq!(report.elapsed, Duration::from_secs(5), "{report}");
    assert_eq!(report.long_lived.len(), 1, "{report}");
    assert_eq!(report.long_lived[0].age, Duration::from_secs(5), "{report}");
    assert!(
        !report.is_drained(),
        "a cut connection is not a clean drain"
    );
}

/// Awaits `drain` on `runtime`, failing if a bound far past its deadline comes first. Biased
/// toward the bound: had the drain no timer of this runtime, the paused clock would jump
/// straight to the bound, and the drain, polled there, would find itself past its deadline.
fn await_on(
    runtime: &tokio::runtime::Runtime,
    drain: impl std::future::Future<Output = tower_drain::DrainReport>,
) -> tower_drain::DrainReport {
    runtime.block_on(async {
        tokio::select! {
            biased;
            () = tokio::time::sleep(Duration::from_secs(3600)) => {
                panic!("hung: the drain was never woken at its deadline")
            }
            report = drain => report,
        }
    })
}

/// A `Drain` made inside one runtime and awaited on another keeps its deadline with the
/// timers of the runtime that polls it, so the runtime that made it may be idle (a
/// current-thread runtime nobody is blocking on drives no timer) or gone.
#[test]
fn a_drain_awaited_on_another_runtime_keeps_its_deadline() {
    for maker_dropped in [false, true] {
        let shutdown = Shutdown::new();
        let _work = shutdown.guard().unwrap();
        let maker = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        let drain = {
            let _entered = maker.enter();
            shutdown.drain(Duration::from_secs(60)).unwrap()
        };
        if maker_dropped {
            drop(maker);
        }
        let report = await_on(&paused_runtime(), drain);
        assert_eq!(report.outcome, DrainOutcome::TimedOut, "{report}");
        assert_eq!(report.still_running, 1, "{report}");
    }
}

/// A `Drain` polled on one runtime, which then shuts down, and awaited to its end on another.
#[test]
fn a_drain_moved_to_another_runtime_while_waiting_keeps_its_deadline() {
    let shutdown = Shutdown::new();
    let _work = shutdown.guard().unwrap();
    let first = paused_runtime();
    let mut drain = {
        let _entered = first.enter();
        Box::pin(shutdown.drain(Duration::from_secs(60)).unwrap())
    };
    first.block_on(async {
        assert!(
            futures_util::poll!(drain.as_mut()).is_pending(),
            "work is running"
        );
    });
    drop(first);
    let report = await_on(&paused_runtime(), drain);
    assert_eq!(report.outcome, DrainOutcome::TimedOut, "{report}");
    assert_eq!(report.still_running, 1, "{report}");
}

/// A guard leaked with `mem::forget` is never released: the drain waits for it until its
/// deadline, reports it still running and the guard released beside it completed, and asked
/// again afterwards gives that same report at once.
#[tokio::test(start_paused = true)]
async fn a_leaked_guard_is_reported_still_running_at_the_deadline() {
    let shutdown = Shutdown::new();
    let finishing = shutdown.guard().unwrap();
    std::mem::forget(shutdown.guard().unwrap());
    let drain = tokio::spawn(shutdown.drain(Duration::from_secs(10)).unwrap());
    assert!(shutdown.guard().is_none(), "admission closed");
    drop(finishing);

    let report = bounded("the drain", drain).await.unwrap();
    assert_eq!(report.outcome, DrainOutcome::TimedOut, "{report}");
    assert!(!report.forced, "{report}");
    assert_eq!(report.elapsed, Duration::from_secs(10), "{report}");
    assert_eq!(report.in_flight_at_start, 2, "{report}");
    assert_eq!(report.completed, 1, "{report}");
    assert_eq!(report.still_running, 1, "{report}");
    bounded("aborted signal", shutdown.aborted()).await;
    assert_eq!(shutdown.in_flight(), 1, "a leaked guard is never released");

    let again = shutdown
        .drain(Duration::ZERO)
        .unwrap()
        .now_or_never()
        .expect("decided already");
    assert_eq!(again, report);
    assert!(!shutdown.force(), "decided already");
}

/// Polls `drain` to its end on this thread, outside any runtime, as a `futures` executor
/// does: parked between polls, woken by its waker. Fails if the bound passes first.
fn await_outside_any_runtime(
    mut drain: std::pin::Pin<Box<tower_drain::Drain>>,
) -> tower_drain::DrainReport {
    use std::future::Future;
    use std::sync::Arc;
    use std::task::{Context, Poll, Wake, Waker};

    struct Unpark(std::thread::Thread);
    impl Wake for Unpark {
        fn wake(self: Arc<Self>) {
            self.0.unpark();
        }
    }
    let waker = Waker::from(Arc::new(Unpark(std::thread::current())));
    let mut cx = Context::from_waker(&waker);
    let until = std::time::Instant::now() + support::BOUND;
    loop {
        if let Poll::Ready(report) = drain.as_mut().poll(&mut cx) {
            return report;
        }
        let left = until
            .checked_duration_since(std::time::Instant::now())
            .expect("hung: the drain was never woken at its deadline");
        std::thread::park_timeout(left);
    }
}

/// A `Drain` made inside a runtime that keeps running, polled for a while on another runtime
/// that then shuts down, and awaited to its end outside any runtime: as documented, it keeps
/// its deadline with the timers of the runtime that made it, not those of the one gone.
#[test]
fn a_drain_polled_on_another_runtime_then_outside_any_keeps_its_deadline() {
    let shutdown = Shutdown::new();
    let _work = shutdown.guard().unwrap();
    let maker = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_time()
        .build()
        .unwrap();
    let mut drain = {
        let _entered = maker.enter();
        Box::pin(shutdown.drain(Duration::from_millis(100)).unwrap())
    };
    let other = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    other.block_on(async {
        assert!(
            futures_util::poll!(drain.as_mut()).is_pending(),
            "work is running"
        );
    });
    drop(other);
    let report = await_outside_any_runtime(drain);
    assert_eq!(report.outcome, DrainOutcome::TimedOut, "{report}");
    assert_eq!(report.still_running, 1, "{report}");
}
