//! The kind a layer is told to report (`LongLivedLayer::kind`) names its responses in the
//! report and nothing else: what a body does on drain is decided by the response itself.

mod support;

use std::convert::Infallible;
use std::time::Duration;

use axum::body::Body;
use axum::response::sse::{Event, Sse};
use axum::routing::get;
use axum::Router;
use bytes::Bytes;
use futures_util::stream::{self, StreamExt};
use support::bounded;
use support::http::serve_until_closing;
use support::sse::{open_until, parse_events, FINAL_EVENT};
use tower_drain::{LongLivedKind, LongLivedLayer, OnDrain, Shutdown};

const LONG: Duration = Duration::from_secs(60);

/// One event, then idle until the drain.
fn idle_events() -> Sse<impl futures_util::Stream<Item = Result<Event, Infallible>>> {
    let hello = stream::once(async { Ok::<_, Infallible>(Event::default().data("hi")) });
    Sse::new(hello.chain(stream::pending()))
}

/// Serves `app` and opens its event stream at `/feed`, which must be one long-lived entry;
/// then drains: the stream must end cleanly after its first event and the final one, and
/// nothing be cut. `case` names the app in failures.
async fn one_entry_ending_with_the_final_event(app: Router, shutdown: Shutdown, case: &str) {
    let server = serve_until_closing(app, shutdown).await;
    let reading = open_until(server.addr, "/feed", b"data: hi\n\n").await;
    assert_eq!(
        shutdown.long_lived(),
        1,
        "{case}: one entry for one response"
    );

    let report = bounded("drain", shutdown.drain(LONG).unwrap()).await;
    assert!(report.is_drained(), "{case}: nothing was cut: {report}");
    let decoded = reading.finish().await;
    assert!(decoded.terminated, "{case}: a clean end");
    let (events, rest) = parse_events(&decoded.data);
    assert!(rest.is_empty(), "{case}");
    assert_eq!(events, ["data: hi", FINAL_EVENT], "{case}");
}

/// An event stream on a route whose reports call it a long-poll still ends on drain with the
/// final event and a clean end, as every event stream does by default.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn event_stream_on_a_route_labelled_another_kind_still_finishes_with_the_final_event() {
    let shutdown = Shutdown::new();
    let app = Router::new()
        .route(
            "/feed",
            get(|| async { idle_events() })
                .layer(LongLivedLayer::route(shutdown).kind(LongLivedKind::LongPoll)),
        )
        .layer(shutdown.layer());
    one_entry_ending_with_the_final_event(app, shutdown, "").await;
    assert_eq!(shutdown.long_lived(), 0);
}

/// The same through `LongLivedLayer::new`: an event stream it reports as a stream is still
/// an event stream on the wire.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn detected_event_stream_labelled_a_stream_still_finishes_with_the_final_event() {
    let shutdown = Shutdown::new();
    let app = Router::new()
        .route("/feed", get(|| async { idle_events() }))
        .layer(LongLivedLayer::new(shutdown).kind(LongLivedKind::Stream))
        .layer(shutdown.layer());
    let server = serve_until_closing(app, shutdown).await;
    let reading = open_until(server.addr, "/feed", b"data: hi\n\n").await;

    let report = bounded("drain", shutdown.drain(LONG).unwrap()).await;
    assert!(report.is_drained(), "nothing was cut: {report}");
    let decoded = reading.finish().await;
    assert!(decoded.terminated, "a clean end");
    let (events, rest) = parse_events(&decoded.data);
    assert!(rest.is_empty());
    assert_eq!(events, ["data: hi", FINAL_EVENT]);
}

/// A plain-text stream on a route whose reports call it server-sent events gets no event
/// appended: the final event is an SSE frame, and this body is not an event stream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_stream_labelled_sse_gets_no_final_event() {
    let shutdown = Shutdown::new();
    let app = Router::new()
        .route(
            "/lines",
            get(|| async {
                let first = stream::once(async { Ok::<_, Infallible>(Bytes::from("line 0\n")) });
                Body::from_stream(first.chain(stream::pending()))
            })
            .layer(
                LongLivedLayer::route(shutdown)
                    .kind(LongLivedKind::Sse)
                    .on_drain(OnDrain::Finish),
            ),
        )
        .layer(shutdown.layer());
    let server = serve_until_closing(app, shutdown).await;
    let reading = open_until(server.addr, "/lines", b"line 0\n").await;

    let report = bounded("drain", shutdown.drain(LONG).unwrap()).await;
    assert!(report.is_drained(), "{report}");
    let decoded = reading.finish().await;
    assert!(decoded.terminated, "finished at a chunk boundary");
    assert_eq!(
        String::from_utf8_lossy(&decoded.data),
        "line 0\n",
        "an SSE frame appended to a plain-text stream"
    );
}

/// Builds an app around one event stream at `/feed`.
type Stack = fn(Shutdown) -> Router;

/// Each way of stacking this crate's layers twice around one event stream tracks it once:
/// one entry, one final event. The first is the documented one (a route's own mark inside
/// the router's); the others put the inner and outer layers the other way round, or nest
/// two `shutdown.layer()`, as merged routers that each carry one do.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_stream_under_two_layers_is_tracked_once() {
    let stacks: [(&str, Stack); 4] = [
        ("a route marked twice", |shutdown| {
            let feed = get(|| async { idle_events() }).layer(LongLivedLayer::route(shutdown));
            Router::new()
                .route("/feed", feed)
                .route_layer(LongLivedLayer::route(shutdown))
                .layer(shutdown.layer())
        }),
        ("a marked route outside the layer", |shutdown| {
            Router::new()
                .route("/feed", get(|| async { idle_events() }))
                .layer(shutdown.layer())
                .route_layer(LongLivedLayer::route(shutdown))
        }),
        ("two combined layers", |shutdown| {
            Router::new()
                .route("/feed", get(|| async { idle_events() }))
                .layer(shutdown.layer())
                .layer(shutdown.layer())
        }),
        ("a tracker outside the combined layer", |shutdown| {
            Router::new()
                .route("/feed", get(|| async { idle_events() }))
                .layer(shutdown.layer())
                .layer(LongLivedLayer::new(shutdown))
        }),
    ];
    for (stack, build) in stacks {
        let shutdown = Shutdown::new();
        one_entry_ending_with_the_final_event(build(shutdown), shutdown, stack).await;
    }
}

/// A long-poll on a route marked twice that ignores its signal gets the whole `503` at the
/// long-lived deadline, not one cut after its head, and is listed once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stubborn_long_poll_marked_twice_gets_a_whole_503_and_one_entry() {
    use support::raw::{read_to_close, split_head};
    use support::sse::open_event_stream;

    let shutdown = Shutdown::new();
    shutdown.set_long_lived_grace(Duration::from_millis(50));
    let (entered_tx, mut entered) = tokio::sync::mpsc::channel::<()>(1);
    let app = Router::new()
        .route(
            "/poll",
            get(move || async move {
                entered_tx.send(()).await.unwrap();
                std::future::pending::<&'static str>().await
            })
            .layer(LongLivedLayer::route(shutdown)),
        )
        .route_layer(LongLivedLayer::route(shutdown))
        .layer(shutdown.layer());
    let server = serve_until_closing(app, shutdown).await;
    let mut client = open_event_stream(server.addr, "/poll").await;
    bounded("the long-poll to start", entered.recv())
        .await
        .unwrap();

    let report = bounded("drain", shutdown.drain(LONG).unwrap()).await;
    let mut raw = Vec::new();
    bounded("the answer", read_to_close(&mut client, &mut raw)).await;
    let (head, body) = split_head(&raw);
    assert!(head.starts_with("HTTP/1.1 503"), "{head}");
    assert_eq!(
        String::from_utf8_lossy(body),
        "request cut short: the server is shutting down\n",
        "{head}"
    );
    assert_eq!(report.long_lived.len(), 1, "{report}");
}

/// A user rule that names every open-ended `200` a stream.
fn every_open_ended_ok_is_a_stream(
    status: axum::http::StatusCode,
    _headers: &axum::http::HeaderMap,
) -> Option<LongLivedKind> {
    (status == axum::http::StatusCode::OK).then_some(LongLivedKind::Stream)
}

/// An event stream that a user rule also picks, and names a stream, is still an event stream
/// on the wire: it finishes on drain with the final event, rather than running to the
/// long-lived deadline and being cut there. The rule's kind only names it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn event_stream_picked_by_a_rule_as_a_stream_still_finishes_with_the_final_event() {
    let shutdown = Shutdown::new();
    // Past the bound: a stream not finished at drain start hangs the test.
    shutdown.set_long_lived_grace(LONG);
    let app = Router::new()
        .route("/feed", get(|| async { idle_events() }))
        .layer(
            shutdown
                .layer()
                .long_lived_when(every_open_ended_ok_is_a_stream),
        );
    one_entry_ending_with_the_final_event(app, shutdown, "").await;
}

/// A user rule that names every open-ended `200` server-sent events.
fn every_open_ended_ok_is_sse(
    status: axum::http::StatusCode,
    _headers: &axum::http::HeaderMap,
) -> Option<LongLivedKind> {
    (status == axum::http::StatusCode::OK).then_some(LongLivedKind::Sse)
}

/// A plain-text stream that a user rule calls server-sent events finishes on drain, as the
/// kind `Sse` asks, at its next chunk boundary: it is not an event stream, so no final event
/// (an SSE frame) is appended, and its lines are not read as an event still being sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_stream_a_rule_calls_sse_finishes_without_a_final_event() {
    let shutdown = Shutdown::new();
    // Past the bound: a stream not finished at drain start hangs the test.
    shutdown.set_long_lived_grace(LONG);
    let app = Router::new()
        .route(
            "/lines",
            get(|| async {
                let first = stream::once(async { Ok::<_, Infallible>(Bytes::from("line 0\n")) });
                Body::from_stream(first.chain(stream::pending()))
            }),
        )
        .layer(shutdown.layer().long_lived_when(every_open_ended_ok_is_sse));
    let server = serve_until_closing(app, shutdown).await;
    let reading = open_until(server.addr, "/lines", b"line 0\n").await;
    assert_eq!(shutdown.long_lived(), 1, "the rule picked the stream");

    let report = bounded("drain", shutdown.drain(LONG).unwrap()).await;
    assert!(report.is_drained(), "{report}");
    let decoded = reading.finish().await;
    assert!(decoded.terminated, "finished at a chunk boundary");
    assert_eq!(
        String::from_utf8_lossy(&decoded.data),
        "line 0\n",
        "an SSE frame appended to a plain-text stream"
    );
}
