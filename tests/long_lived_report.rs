//! What the report says of long-lived responses: one entry per response, named by the marked
//! route it came through, and only the ones that were cut.

mod support;

use std::convert::Infallible;
use std::time::Duration;

use axum::body::Body;
use axum::extract::Request;
use axum::middleware::Next;
use axum::response::sse::{Event, Sse};
use axum::routing::get;
use axum::Router;
use bytes::Bytes;
use futures_util::stream::{self, StreamExt};
use http::{HeaderMap, Method, StatusCode};
use support::gate::Gate;
use support::http::serve_until_closing;
use support::raw::{read_to_close, split_head};
use support::sse::{open_event_stream, open_until};
use support::{bounded, drain_past_the_long_lived_deadline};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tower_drain::{DrainOutcome, LongLivedKind, LongLivedLayer, OnDrain, Shutdown};

const LONG: Duration = Duration::from_secs(60);

/// One event, then idle.
fn idle_events() -> Sse<impl futures_util::Stream<Item = Result<Event, Infallible>>> {
    let hello = stream::once(async { Ok::<_, Infallible>(Event::default().data("hi")) });
    Sse::new(hello.chain(stream::pending()))
}

/// A handler that answers with an idle event stream once the long-lived deadline has
/// passed. It holds a guard named `GET /watch`, only to see that deadline pass, and says so
/// on `entered` once it holds it.
async fn events_after_the_deadline(
    shutdown: Shutdown,
    entered: mpsc::Sender<()>,
) -> Sse<impl futures_util::Stream<Item = Result<Event, Infallible>>> {
    let watch = shutdown
        .long_lived_guard(LongLivedKind::Upgrade, Method::GET, "/watch")
        .unwrap();
    entered.send(()).await.unwrap();
    watch.deadline().await;
    idle_events()
}

/// Sends `HEAD /feed` to `app`, whose handler is [`events_after_the_deadline`], and drains
/// once the handler has started. The answer must be a `200` head alone, whole once made, and
/// so the report lists only the handler's `/watch` guard. Returns the head.
async fn head_answered_after_the_deadline(
    app: Router,
    shutdown: Shutdown,
    mut entered: mpsc::Receiver<()>,
) -> String {
    let server = serve_until_closing(app, shutdown).await;
    let mut head = TcpStream::connect(server.addr).await.unwrap();
    head.write_all(b"HEAD /feed HTTP/1.1\r\nHost: test\r\n\r\n")
        .await
        .unwrap();
    bounded("the handler to start", entered.recv())
        .await
        .unwrap();
    let report = bounded("drain", shutdown.drain(LONG).unwrap()).await;
    let mut raw = Vec::new();
    bounded("the answer", read_to_close(&mut head, &mut raw)).await;
    let (answer, body) = split_head(&raw);
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert_eq!(body, b"", "{answer}");
    let listed: Vec<_> = report
        .long_lived
        .iter()
        .map(|entry| (entry.path.as_deref(), entry.kind))
        .collect();
    assert_eq!(
        listed,
        [(Some("/watch"), LongLivedKind::Upgrade)],
        "{report}"
    );
    answer.to_owned()
}

/// One line of plain text, then idle.
fn idle_lines() -> Body {
    let first = stream::once(async { Ok::<_, Infallible>(Bytes::from("data: hi\n\n")) });
    Body::from_stream(first.chain(stream::pending()))
}

/// A user rule that names every open-ended `200` a stream.
fn open_ended_ok_is_a_stream(status: StatusCode, _headers: &HeaderMap) -> Option<LongLivedKind> {
    (status == StatusCode::OK).then_some(LongLivedKind::Stream)
}

type Stack = fn(Shutdown) -> Router;

/// A marked route around a layer that tracks by content type or by a rule: that inner layer
/// tracks the response (its settings apply), but the one entry it makes carries the route's
/// method and path, and its age runs from the request, as for any marked route. Each stack
/// keeps its stream running to the long-lived deadline, so that the report lists it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_marked_route_around_a_tracking_layer_names_its_one_entry() {
    let stacks: [(&str, LongLivedKind, Stack); 3] = [
        (
            "the route's own mark around LongLivedLayer::new",
            LongLivedKind::Sse,
            |shutdown| {
                let tracker = LongLivedLayer::new(shutdown).on_drain(OnDrain::KeepUntilDeadline);
                let feed = get(|| async { idle_events() })
                    .layer::<_, Infallible>(tracker)
                    .layer(LongLivedLayer::route(shutdown));
                Router::new().route("/feed", feed).layer(shutdown.layer())
            },
        ),
        (
            "route_layer around LongLivedLayer::when",
            LongLivedKind::Stream,
            |shutdown| {
                let tracker = LongLivedLayer::new(shutdown).when(open_ended_ok_is_a_stream);
                Router::new()
                    .route("/feed", get(|| async { idle_lines() }))
                    .layer(tracker)
                    .route_layer(LongLivedLayer::route(shutdown))
                    .layer(shutdown.layer())
            },
        ),
        (
            "route_layer around long_lived_when",
            LongLivedKind::Stream,
            |shutdown| {
                Router::new()
                    .route("/feed", get(|| async { idle_lines() }))
                    .layer(shutdown.layer().long_lived_when(open_ended_ok_is_a_stream))
                    .route_layer(LongLivedLayer::route(shutdown))
            },
        ),
    ];
    for (stack, kind, build) in stacks {
        let shutdown = Shutdown::new();
        let grace = Duration::from_millis(50);
        shutdown.set_long_lived_grace(grace);
        let server = serve_until_closing(build(shutdown), shutdown).await;
        let reading = open_until(server.addr, "/feed", b"data: hi\n\n").await;
        assert_eq!(shutdown.long_lived(), 1, "{stack}: one entry");

        let report = bounded("drain", shutdown.drain(LONG).unwrap()).await;
        assert_eq!(report.long_lived.len(), 1, "{stack}: {report}");
        let entry = &report.long_lived[0];
        assert_eq!(entry.method, Some(Method::GET), "{stack}: {entry}");
        assert_eq!(entry.path.as_deref(), Some("/feed"), "{stack}: {entry}");
        assert_eq!(entry.kind, kind, "{stack}: {entry}");
        assert!(entry.age >= grace, "{stack}: {entry}");
        assert!(!reading.finish().await.terminated, "{stack}: cut");
    }
}

/// The same when the handler answers only after the long-lived deadline: the route's entry,
/// listed as cut at the deadline, and the inner layer's, listed as it registers, are one
/// response: the report lists it once, named, with the route's age.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_marked_route_answering_after_the_deadline_around_a_tracking_layer_is_listed_once() {
    let shutdown = Shutdown::new();
    let grace = Duration::from_millis(50);
    shutdown.set_long_lived_grace(grace);
    let (entered_tx, mut entered) = mpsc::channel::<()>(1);
    let late = move || events_after_the_deadline(shutdown, entered_tx.clone());
    let tracker = LongLivedLayer::new(shutdown).on_drain(OnDrain::KeepUntilDeadline);
    let feed = get(late)
        .layer::<_, Infallible>(tracker)
        .layer(LongLivedLayer::route(shutdown));
    let app = Router::new().route("/feed", feed).layer(shutdown.layer());
    let server = serve_until_closing(app, shutdown).await;
    let mut client = open_event_stream(server.addr, "/feed").await;
    bounded("the handler to start", entered.recv())
        .await
        .unwrap();

    let report = bounded("drain", shutdown.drain(LONG).unwrap()).await;
    let mut raw = Vec::new();
    bounded("the cut", read_to_close(&mut client, &mut raw)).await;
    let listed: Vec<_> = report
        .long_lived
        .iter()
        .map(|entry| (entry.method.clone(), entry.path.as_deref(), entry.kind))
        .collect();
    assert_eq!(
        listed,
        [
            (Some(Method::GET), Some("/feed"), LongLivedKind::Sse),
            (Some(Method::GET), Some("/watch"), LongLivedKind::Upgrade),
        ],
        "{report}"
    );
    assert!(report.long_lived[0].age >= grace, "{report}");
}

/// The same answered to a `HEAD`: the answer is its head, whole once made (axum drops the
/// body further out, unread). The response the tracking layer registered is not listed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_head_answered_after_the_deadline_by_a_marked_route_around_a_tracking_layer_is_not_listed(
) {
    let shutdown = Shutdown::new();
    shutdown.set_long_lived_grace(Duration::from_millis(50));
    let (entered_tx, entered) = mpsc::channel::<()>(1);
    let late = move || events_after_the_deadline(shutdown, entered_tx.clone());
    let tracker = LongLivedLayer::new(shutdown).on_drain(OnDrain::KeepUntilDeadline);
    let feed = get(late)
        .layer::<_, Infallible>(tracker)
        .layer(LongLivedLayer::route(shutdown));
    let app = Router::new().route("/feed", feed).layer(shutdown.layer());
    let answer = head_answered_after_the_deadline(app, shutdown, entered).await;
    assert!(answer.contains("text/event-stream"), "{answer}");
}

/// A `HEAD` answered after the long-lived deadline with an event stream, which the layer
/// recognises by its content type: the answer is its head, whole once made (its body is
/// dropped unread), and not listed as cut.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_head_answered_after_the_deadline_with_an_event_stream_is_not_listed() {
    let shutdown = Shutdown::new();
    shutdown.set_long_lived_grace(Duration::from_millis(50));
    let (entered_tx, entered) = mpsc::channel::<()>(1);
    let late = move || events_after_the_deadline(shutdown, entered_tx.clone());
    let app = Router::new()
        .route("/feed", get(late))
        .layer(shutdown.layer());
    head_answered_after_the_deadline(app, shutdown, entered).await;
}

/// Requests admitted before the drain that reach their marked route only after the
/// long-lived deadline (a middleware held them): one whose handler answers at once is sent
/// whole and not listed, nor is the same answer to a `HEAD`; one whose handler would wait
/// is cut with a 503, and one whose handler answers with a stream is cut at its first
/// frame: both are listed, named, as what was cut.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn marked_routes_first_reached_after_the_long_lived_deadline_are_listed_only_if_cut() {
    let shutdown = Shutdown::new();
    // The long-lived deadline falls at drain start; the drain has a minute.
    shutdown.set_long_lived_grace(Duration::ZERO);
    let gate = Gate::new();
    let held = gate.clone();
    let app = Router::new()
        .route(
            "/answer",
            get(|| async { "at once\n" }).layer(LongLivedLayer::route(shutdown)),
        )
        .route(
            "/wait",
            get(std::future::pending::<&'static str>).layer(LongLivedLayer::route(shutdown)),
        )
        .route(
            "/stream",
            get(|| async { idle_lines() }).layer(LongLivedLayer::route(shutdown)),
        )
        .layer(axum::middleware::from_fn(
            move |request: Request, next: Next| {
                let gate = held.clone();
                async move {
                    gate.pass().await;
                    next.run(request).await
                }
            },
        ))
        .layer(shutdown.layer());
    let server = serve_until_closing(app, shutdown).await;
    let mut answer = open_event_stream(server.addr, "/answer").await;
    let mut wait = open_event_stream(server.addr, "/wait").await;
    let mut stream = open_event_stream(server.addr, "/stream").await;
    let mut head = TcpStream::connect(server.addr).await.unwrap();
    head.write_all(b"HEAD /answer HTTP/1.1\r\nHost: test\r\n\r\n")
        .await
        .unwrap();
    gate.entered(4).await;
    assert_eq!(shutdown.in_flight(), 4, "all admitted");

    let drain = drain_past_the_long_lived_deadline(shutdown, LONG).await;
    gate.release(4);

    for (client, status, body) in [
        (&mut answer, "HTTP/1.1 200", &b"at once\n"[..]),
        (&mut head, "HTTP/1.1 200", b""),
        (
            &mut wait,
            "HTTP/1.1 503",
            b"request cut short: the server is shutting down\n",
        ),
    ] {
        let mut raw = Vec::new();
        bounded("the answer", read_to_close(client, &mut raw)).await;
        let (head, received) = split_head(&raw);
        assert!(head.starts_with(status), "{head}");
        assert_eq!(received, body, "{head}");
    }
    // Cut before its first byte: the connection closes with no response.
    let mut raw = Vec::new();
    bounded("the cut", read_to_close(&mut stream, &mut raw)).await;
    assert!(!support::raw::contains(&raw, b"data: hi"), "{raw:?}");

    let report = bounded("drain", drain).await.unwrap();
    assert_eq!(report.outcome, DrainOutcome::Drained, "{report}");
    let mut listed: Vec<_> = report
        .long_lived
        .iter()
        .map(|entry| (entry.path.as_deref(), entry.kind))
        .collect();
    listed.sort_by_key(|(path, _)| *path);
    assert_eq!(
        listed,
        [
            (Some("/stream"), LongLivedKind::Stream),
            (Some("/wait"), LongLivedKind::LongPoll),
            (Some("/watch"), LongLivedKind::Upgrade)
        ],
        "{report}"
    );
}
