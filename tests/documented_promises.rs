//! Promises the rustdoc makes that the other test files leave unchecked: the probes' caching
//! header, the sequence's defaults, the long-lived guard's admission and grace, the drain
//! report's wording, what a default controller and a static body are.

mod support;

use std::time::Duration;

use axum::Router;
use http::header::{CACHE_CONTROL, CONTENT_TYPE};
use http::{Method, StatusCode};
use http_body::Body;
use http_body_util::BodyExt;
use tower_drain::{
    DrainOutcome, DrainSignal, HookOutcome, Liveness, LongLivedKind, Phase, Readiness,
    SequenceError, Shutdown, ShutdownSequence, ShutdownTrigger, StaticBody,
};

use support::http::{get, http1_client, serve};
use support::{bounded, hook_outcomes};

/// The probe answers say `Cache-Control: no-store`, green or red: a cache in between must
/// not replay an answer that is only true now.
#[tokio::test]
async fn probe_answers_are_plain_text_that_no_cache_may_keep() {
    let shutdown = Shutdown::new();
    let app = Router::new()
        .route_service("/readyz", shutdown.readiness())
        .route_service("/livez", shutdown.liveness())
        .layer(shutdown.layer().bypass(&["/readyz", "/livez"]));
    let (addr, _server) = serve(app).await;
    let client = http1_client();

    let mut answers = Vec::new();
    for path in ["/readyz", "/livez"] {
        answers.push((path, get(&client, addr, path).await));
    }
    assert!(shutdown.begin_lame_duck());
    answers.push(("/readyz in lame duck", get(&client, addr, "/readyz").await));

    let statuses: Vec<_> = answers.iter().map(|(_, (status, ..))| *status).collect();
    assert_eq!(
        statuses,
        [
            StatusCode::OK,
            StatusCode::OK,
            StatusCode::SERVICE_UNAVAILABLE
        ]
    );
    for (path, (_, headers, _)) in &answers {
        assert_eq!(headers[CACHE_CONTROL], "no-store", "{path}: {headers:?}");
        assert_eq!(
            headers[CONTENT_TYPE], "text/plain; charset=utf-8",
            "{path}: {headers:?}"
        );
    }
}

/// The builder's defaults: a 5 s lame duck, a 20 s drain timeout and a 30 s budget. The
/// over-budget error names each figure, which tells the lame duck and drain apart.
#[test]
fn the_sequence_defaults_are_a_5s_lame_duck_a_20s_drain_and_a_30s_budget() {
    let sequence = ShutdownSequence::builder(Shutdown::new())
        .no_signals()
        .build()
        .expect("the defaults fit their own budget");
    assert_eq!(sequence.planned(), Duration::from_secs(25));
    assert_eq!(sequence.budget(), Duration::from_secs(30));

    let error = ShutdownSequence::builder(Shutdown::new())
        .no_signals()
        .hook("db", Duration::from_millis(5001), || async {
            Ok::<(), String>(())
        })
        .build()
        .unwrap_err();
    match error {
        SequenceError::OverBudget {
            lame_duck,
            drain_timeout,
            needed,
            budget,
            ..
        } => {
            assert_eq!(lame_duck, Duration::from_secs(5));
            assert_eq!(drain_timeout, Duration::from_secs(20));
            assert_eq!(needed, Duration::from_millis(30001));
            assert_eq!(budget, Duration::from_secs(30));
        }
        other => panic!("expected OverBudget, got {other:?}"),
    }
}

/// A long-lived guard counts in `in_flight` and `long_lived` until dropped, sees the drain
/// begin through `is_draining` and `signal()`, and none is handed out once admission has
/// closed: the refusal counts and registers nothing.
#[tokio::test]
async fn a_long_lived_guard_is_counted_until_dropped_and_refused_once_draining() {
    let shutdown = Shutdown::new();
    let guard = shutdown
        .long_lived_guard(LongLivedKind::Upgrade, Method::GET, "/ws")
        .expect("admitted while serving");
    assert_eq!((shutdown.in_flight(), shutdown.long_lived()), (1, 1));
    assert!(!guard.is_draining());
    let signal = guard.signal();

    let drain = shutdown.drain(Duration::from_secs(3600)).unwrap();
    assert!(guard.is_draining());
    bounded("the guard's drain signal", signal).await;
    assert!(shutdown
        .long_lived_guard(LongLivedKind::Upgrade, Method::GET, "/late")
        .is_none());
    assert_eq!((shutdown.in_flight(), shutdown.long_lived()), (1, 1));

    drop(guard);
    assert_eq!((shutdown.in_flight(), shutdown.long_lived()), (0, 0));
    let report = bounded("the drain", drain).await;
    assert!(report.is_drained(), "{report}");
    assert_eq!((report.in_flight_at_start, report.completed), (1, 1));
}

/// The long-lived deadline is fixed when the drain begins: a grace set afterwards changes
/// nothing. A zero grace set before still cuts at once, though an hour is set after.
#[tokio::test]
async fn a_grace_set_once_the_drain_has_begun_changes_nothing() {
    let shutdown = Shutdown::new();
    shutdown.set_long_lived_grace(Duration::ZERO);
    let guard = shutdown
        .long_lived_guard(LongLivedKind::Upgrade, Method::GET, "/ws")
        .unwrap();
    let drain = tokio::spawn(shutdown.drain(Duration::from_secs(3600)).unwrap());
    shutdown.set_long_lived_grace(Duration::from_secs(3600));

    bounded("the zero grace's deadline", guard.deadline()).await;
    drop(guard);
    let report = bounded("the drain", drain).await.unwrap();
    assert_eq!(report.outcome, DrainOutcome::Drained, "{report}");
    let cut: Vec<_> = report.long_lived.iter().map(|entry| &entry.path).collect();
    assert_eq!(cut, [&Some("/ws".to_owned())], "{report}");
}

/// `DrainReport`'s `Display` opens with the outcome (`drained in`, `forced after`) and gives
/// the figures in one wording; `DrainOutcome` reads as its snake-case name.
#[tokio::test]
async fn a_drain_report_reads_as_its_outcome_and_figures() {
    let quiet = Shutdown::new();
    let report = bounded("a drain of nothing", quiet.drain(Duration::ZERO).unwrap()).await;
    let text = report.to_string();
    assert!(text.starts_with("drained in "), "{text}");
    assert!(
        text.ends_with(": 0 in flight at start, 0 completed, 0 still running, 0 rejected"),
        "{text}"
    );
    assert_eq!(report.outcome.to_string(), "drained");

    let busy = Shutdown::new();
    let _work = busy.guard().unwrap();
    let drain = busy.drain(Duration::from_secs(3600)).unwrap();
    assert!(busy.force());
    let report = bounded("a forced drain", drain).await;
    let text = report.to_string();
    assert!(text.starts_with("forced after "), "{text}");
    assert!(
        text.ends_with(": 1 in flight at start, 0 completed, 1 still running, 0 rejected"),
        "{text}"
    );
    assert_eq!(report.outcome.as_str(), "timed_out");
    assert!(!report.is_drained());
}

/// `Shutdown::default()` is `Shutdown::new()`: a controller of its own, serving and ready.
#[tokio::test]
async fn a_default_controller_is_a_new_one_serving() {
    let first = Shutdown::default();
    let second = Shutdown::default();
    assert_eq!(first.phase(), Phase::Serving);
    assert!(first.is_ready());

    let report = bounded("the drain", first.drain(Duration::ZERO).unwrap()).await;
    assert_eq!(report.outcome, DrainOutcome::Drained);
    assert_eq!(second.phase(), Phase::Serving);
    assert!(second.is_ready());
    assert!(
        second.guard().is_some(),
        "the other controller still admits"
    );
}

/// A trigger outliving its sequence does nothing: dropped unrun, the sequence's controller
/// stays serving; run to its end, firing again changes nothing either.
#[tokio::test]
async fn a_trigger_whose_sequence_is_gone_does_nothing() {
    let shutdown = Shutdown::new();
    let sequence = support::by_hand(shutdown, Duration::ZERO).build().unwrap();
    let trigger = sequence.trigger();
    drop(sequence);
    trigger.fire();
    assert_eq!(shutdown.phase(), Phase::Serving);
    assert!(shutdown.guard().is_some());

    let finished = Shutdown::new();
    let sequence = support::by_hand(finished, Duration::ZERO).build().unwrap();
    let trigger = sequence.trigger();
    trigger.fire();
    let report = bounded("the sequence", sequence.run()).await;
    assert!(report.is_clean(), "{report}");
    trigger.fire();
    trigger.clone().fire();
    assert_eq!(finished.phase(), Phase::Drained);
}

/// `StaticBody::new` of an empty slice, `empty()` and `default()` are empty bodies that say
/// so; one of bytes gives them in one frame, with an exact size.
#[tokio::test]
async fn a_static_body_is_its_one_chunk_or_nothing() {
    for (what, body) in [
        ("new(b\"\")", StaticBody::new(b"")),
        ("empty()", StaticBody::empty()),
        ("default()", StaticBody::default()),
    ] {
        assert!(body.is_end_stream(), "{what}");
        assert_eq!(body.size_hint().exact(), Some(0), "{what}");
        assert!(
            body.collect().await.unwrap().to_bytes().is_empty(),
            "{what}"
        );
    }

    let body = StaticBody::new(b"ready\n");
    assert!(!body.is_end_stream());
    assert_eq!(body.size_hint().exact(), Some(6));
    assert_eq!(&body.collect().await.unwrap().to_bytes()[..], b"ready\n");
}

/// Handles documented as cheap to copy or clone and shareable across threads are so.
#[test]
fn handles_are_cheap_to_copy_and_shareable_across_threads() {
    fn copy_send_sync<T: Copy + Send + Sync + 'static>() {}
    fn clone_send_sync<T: Clone + Send + Sync + 'static>() {}
    fn clone_send<T: Clone + Send + 'static>() {}
    copy_send_sync::<Shutdown>();
    copy_send_sync::<Readiness>();
    copy_send_sync::<Liveness>();
    clone_send_sync::<ShutdownTrigger>();
    clone_send::<DrainSignal>();
}

/// `DrainSignal::recv` waits for the drain without consuming the signal, which still answers
/// and resolves afterwards.
#[tokio::test]
async fn a_drain_signal_received_by_reference_is_kept() {
    let shutdown = Shutdown::new();
    let signal = shutdown.signal();
    let mut waiting = Box::pin(signal.recv());
    assert!(futures_util::FutureExt::now_or_never(waiting.as_mut()).is_none());

    let _drain = shutdown.drain(Duration::from_secs(3600)).unwrap();
    bounded("recv after the drain began", waiting).await;
    bounded("recv again", signal.recv()).await;
    assert!(signal.is_draining());
    bounded("the signal itself", signal).await;
}

/// A long-lived guard's `deadline()` fires when the drain is cut short, long before the
/// long-lived deadline, and the report names what it held as cut.
#[tokio::test]
async fn a_long_lived_guard_deadline_fires_when_the_drain_is_forced() {
    let shutdown = Shutdown::new();
    shutdown.set_long_lived_grace(Duration::from_secs(3600));
    let guard = shutdown
        .long_lived_guard(LongLivedKind::Upgrade, Method::GET, "/ws")
        .unwrap();
    let drain = shutdown.drain(Duration::from_secs(3600)).unwrap();
    assert!(shutdown.force());

    bounded("the guard's deadline at the force", guard.deadline()).await;
    let report = bounded("the drain", drain).await;
    assert!(report.forced, "{report}");
    let cut: Vec<_> = report.long_lived.iter().map(|entry| entry.kind).collect();
    assert_eq!(cut, [LongLivedKind::Upgrade], "{report}");
}

/// A hook closure that panics as it is called, before it returns a future, is reported as
/// panicked like one whose future panics, and the next hook still runs.
#[tokio::test]
async fn a_hook_closure_that_panics_when_called_is_reported_and_the_next_runs() {
    let shutdown = Shutdown::new();
    let (ran_tx, ran_rx) = tokio::sync::oneshot::channel();
    let sequence = support::by_hand(shutdown, Duration::ZERO)
        .hook("panics when called", Duration::from_secs(5), || {
            if true {
                panic!("no pool to close");
            }
            async { Ok::<(), String>(()) }
        })
        .hook("next", Duration::from_secs(5), move || async move {
            let _ = ran_tx.send(());
            Ok::<(), String>(())
        })
        .build()
        .unwrap();
    sequence.trigger().fire();
    let report = bounded("the sequence", sequence.run()).await;

    let outcomes = hook_outcomes(&report);
    assert_eq!(
        outcomes,
        [
            (
                "panics when called",
                HookOutcome::Panicked("no pool to close".into())
            ),
            ("next", HookOutcome::Ok),
        ],
        "{report}"
    );
    bounded("the next hook ran", ran_rx).await.unwrap();
}

/// `DrainReport::long_lived` lists what was cut oldest first, whatever order the registry
/// keeps its entries in: a guard taken after another was dropped (and its place freed)
/// still comes last.
#[tokio::test(start_paused = true)]
async fn the_long_lived_cut_are_listed_oldest_first() {
    let shutdown = Shutdown::new();
    let guard = |path: &str| {
        shutdown
            .long_lived_guard(LongLivedKind::Upgrade, Method::GET, path)
            .unwrap()
    };
    let first = guard("/first");
    tokio::time::advance(Duration::from_secs(1)).await;
    let gone = guard("/gone");
    tokio::time::advance(Duration::from_secs(1)).await;
    let second = guard("/second");
    tokio::time::advance(Duration::from_secs(1)).await;
    drop(gone);
    let third = guard("/third");
    tokio::time::advance(Duration::from_secs(1)).await;

    let report = bounded("the drain", shutdown.drain(Duration::ZERO).unwrap()).await;
    let cut: Vec<_> = report
        .long_lived
        .iter()
        .map(|entry| (entry.path.as_deref(), entry.age))
        .collect();
    assert_eq!(
        cut,
        [
            (Some("/first"), Duration::from_secs(4)),
            (Some("/second"), Duration::from_secs(2)),
            (Some("/third"), Duration::from_secs(1)),
        ],
        "{report}"
    );
    drop((first, second, third));
}

/// An event stream on a marked route inside `Shutdown::layer` ends with the marked route's
/// final event, not the outer layer's: the setting that counts is the one beside the mark.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_marked_event_stream_ends_with_its_routes_final_event() {
    use axum::response::sse::{Event, Sse};
    use futures_util::stream::{self, StreamExt};
    use tower_drain::LongLivedLayer;

    let shutdown = Shutdown::new();
    let app = Router::new()
        .route(
            "/events",
            axum::routing::get(|| async {
                let hello = stream::once(async {
                    Ok::<_, std::convert::Infallible>(Event::default().data("hi"))
                });
                Sse::new(hello.chain(stream::pending()))
            })
            .layer(LongLivedLayer::route(shutdown).final_event(Some("event: inner\ndata: bye"))),
        )
        .layer(
            shutdown
                .layer()
                .final_event(Some("event: outer\ndata: bye")),
        );
    let server = support::http::serve_until_closing(app, shutdown).await;
    let reading = support::sse::open_until(server.addr, "/events", b"data: hi\n\n").await;

    let report = bounded(
        "the drain",
        shutdown.drain(Duration::from_secs(60)).unwrap(),
    )
    .await;
    assert!(report.is_drained(), "{report}");
    let decoded = reading.finish().await;
    assert!(decoded.terminated);
    let (events, rest) = support::sse::parse_events(&decoded.data);
    assert!(rest.is_empty(), "{rest:?}");
    assert_eq!(events, ["data: hi", "event: inner\ndata: bye"]);
}

/// `InFlightLayer` on its own counts while admission is open and never rejects: once the
/// drain has begun, requests pass through it uncounted and are answered by the service.
#[tokio::test]
async fn requests_pass_an_in_flight_layer_uncounted_once_draining() {
    let shutdown = Shutdown::new();
    let app = Router::new()
        .route(
            "/count",
            axum::routing::get(move || async move { format!("{}\n", shutdown.in_flight()) }),
        )
        .layer(tower_drain::InFlightLayer::new(shutdown));
    let (addr, _server) = serve(app).await;
    let client = http1_client();

    let (status, _, body) = get(&client, addr, "/count").await;
    assert_eq!(
        (status, &body[..]),
        (StatusCode::OK, &b"1\n"[..]),
        "counted"
    );

    let report = bounded(
        "the drain",
        shutdown.drain(Duration::from_secs(60)).unwrap(),
    )
    .await;
    assert_eq!(report.outcome, DrainOutcome::Drained);
    let (status, _, body) = get(&client, addr, "/count").await;
    assert_eq!(
        (status, &body[..]),
        (StatusCode::OK, &b"0\n"[..]),
        "passed through uncounted"
    );
    assert_eq!(shutdown.rejected(), 0);
}

/// `aborted()` never fires for a drain that ends `Drained`: neither when the long-lived
/// deadline cut something that then ended in time, nor for a `force` that came after and
/// found nothing running.
#[tokio::test]
async fn a_drain_that_ends_drained_never_fires_aborted() {
    use futures_util::FutureExt;

    let shutdown = Shutdown::new();
    shutdown.set_long_lived_grace(Duration::ZERO);
    let socket = shutdown
        .long_lived_guard(LongLivedKind::Upgrade, Method::GET, "/ws")
        .unwrap();
    let drain = tokio::spawn(shutdown.drain(Duration::from_secs(3600)).unwrap());
    bounded("the long-lived deadline", socket.deadline()).await;
    drop(socket);
    let report = bounded("the drain", drain).await.unwrap();
    assert_eq!(report.outcome, DrainOutcome::Drained, "{report}");
    assert_eq!(report.long_lived.len(), 1, "{report}");
    assert!(
        shutdown.aborted().now_or_never().is_none(),
        "fired by a long-lived cut"
    );

    assert!(!shutdown.force(), "nothing was running to cut short");
    assert!(
        shutdown.aborted().now_or_never().is_none(),
        "fired by a force that cut nothing"
    );
    assert_eq!(shutdown.phase(), Phase::Drained);
}

/// A trigger future that completes once the sequence runs forces it, as any later trigger
/// does: the hour-long lame duck ends, and the report names both causes.
#[tokio::test]
async fn a_trigger_future_completing_after_the_first_trigger_forces_the_sequence() {
    let shutdown = Shutdown::new();
    let (done_tx, done_rx) = tokio::sync::oneshot::channel::<()>();
    let sequence = support::by_hand(shutdown, Duration::from_secs(3600))
        .budget(Duration::from_secs(7200))
        .trigger_on(async move {
            let _ = done_rx.await;
        })
        .build()
        .unwrap();
    sequence.trigger().fire();
    let run = tokio::spawn(sequence.run());
    bounded("the lame duck", shutdown.shutting_down()).await;
    let _ = done_tx.send(());

    let report = bounded("the forced sequence", run).await.unwrap();
    assert_eq!(report.trigger, "manual trigger", "{report}");
    assert_eq!(report.forced_by, Some("trigger future"), "{report}");
    assert_eq!(report.drain.outcome, DrainOutcome::Drained, "{report}");
}

/// With no lame duck, `shutting_down()` fires as admission closes, whether a `drain` or a
/// `force` closes it; readiness fails at that moment.
#[tokio::test]
async fn shutting_down_fires_when_admission_closes_without_a_lame_duck() {
    use futures_util::FutureExt;

    let drained = Shutdown::new();
    let mut shutting_down = Box::pin(drained.shutting_down());
    assert!(shutting_down.as_mut().now_or_never().is_none());
    let _drain = drained.drain(Duration::from_secs(60)).unwrap();
    assert!(shutting_down.now_or_never().is_some(), "at a drain");
    assert!(!drained.is_ready());

    let forced = Shutdown::new();
    let mut shutting_down = Box::pin(forced.shutting_down());
    let mut closing = Box::pin(forced.closing());
    assert!(shutting_down.as_mut().now_or_never().is_none());
    assert!(!forced.force(), "nothing was running");
    assert!(shutting_down.now_or_never().is_some(), "at a force");
    assert!(
        closing.as_mut().now_or_never().is_some(),
        "admission closed"
    );
    assert!(!forced.is_ready());
    assert!(forced.guard().is_none());
}

/// A `force` with no drain begun cuts a long-lived guard too: its `deadline()` fires, and the
/// report a later `drain` call resolves to lists it.
#[tokio::test]
async fn a_force_before_any_drain_fires_a_long_lived_guards_deadline() {
    let shutdown = Shutdown::new();
    let guard = shutdown
        .long_lived_guard(LongLivedKind::Upgrade, Method::GET, "/ws")
        .unwrap();
    assert!(shutdown.force());
    bounded("the guard's deadline at the force", guard.deadline()).await;
    assert!(guard.is_draining());

    let report = bounded(
        "the drain",
        shutdown.drain(Duration::from_secs(60)).unwrap(),
    )
    .await;
    assert!(report.forced, "{report}");
    assert_eq!(report.still_running, 1, "{report}");
    let cut: Vec<_> = report.long_lived.iter().map(|entry| entry.kind).collect();
    assert_eq!(cut, [LongLivedKind::Upgrade], "{report}");
}

/// Only a marked route's requests carry a `DrainSignal`; an ordinary request under
/// `Shutdown::layer` gets none.
#[tokio::test]
async fn only_marked_routes_find_a_drain_signal_in_their_requests() {
    async fn has_signal(request: axum::extract::Request) -> &'static str {
        match request.extensions().get::<DrainSignal>() {
            Some(_) => "signal\n",
            None => "none\n",
        }
    }
    let shutdown = Shutdown::new();
    let app = Router::new()
        .route("/plain", axum::routing::get(has_signal))
        .route(
            "/marked",
            axum::routing::get(has_signal).layer(tower_drain::LongLivedLayer::route(shutdown)),
        )
        .layer(shutdown.layer());
    let (addr, _server) = serve(app).await;
    let client = http1_client();

    let (_, _, plain) = get(&client, addr, "/plain").await;
    let (_, _, marked) = get(&client, addr, "/marked").await;
    assert_eq!(
        (&plain[..], &marked[..]),
        (&b"none\n"[..], &b"signal\n"[..])
    );
}

/// A long-lived response recognised without a marked route is cut with no method nor path,
/// shown as `-` in the report's text.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unnamed_long_lived_cut_reads_with_dashes_for_method_and_path() {
    use futures_util::stream::{self, StreamExt};

    fn open_ended_ok_is_a_stream(
        status: StatusCode,
        _headers: &http::HeaderMap,
    ) -> Option<LongLivedKind> {
        (status == StatusCode::OK).then_some(LongLivedKind::Stream)
    }
    let shutdown = Shutdown::new();
    shutdown.set_long_lived_grace(Duration::ZERO);
    let app = Router::new()
        .route(
            "/lines",
            axum::routing::get(|| async {
                let first = stream::once(async {
                    Ok::<_, std::convert::Infallible>(bytes::Bytes::from("line 0\n"))
                });
                axum::body::Body::from_stream(first.chain(stream::pending()))
            }),
        )
        .layer(shutdown.layer().long_lived_when(open_ended_ok_is_a_stream));
    let server = support::http::serve_until_closing(app, shutdown).await;
    let reading = support::sse::open_until(server.addr, "/lines", b"line 0\n").await;

    let report = bounded(
        "the drain",
        shutdown.drain(Duration::from_secs(60)).unwrap(),
    )
    .await;
    let entries: Vec<_> = report
        .long_lived
        .iter()
        .map(|entry| (entry.kind, entry.method.clone(), entry.path.clone()))
        .collect();
    assert_eq!(entries, [(LongLivedKind::Stream, None, None)], "{report}");
    let text = report.to_string();
    assert!(
        text.contains("; 1 long-lived cut: [stream - - after "),
        "{text}"
    );
    assert!(!reading.finish().await.terminated, "cut, not ended cleanly");
}
