//! Every way a long-lived response can end takes it out of the registry and the in-flight
//! count: the client going away (from a long-poll, from an event stream), a handler
//! panicking, an event stream's body failing or panicking, a WebSocket task panicking. Each
//! test then drains: a drain that finds something left would wait for the long-lived deadline
//! and name it in the report.

mod support;

use std::convert::Infallible;
use std::time::Duration;

use axum::body::Body;
use axum::extract::State;
use axum::http::{header::CONTENT_TYPE, Method, Response};
use axum::routing::get;
use axum::Router;
use bytes::Bytes;
use futures_util::stream::{self, StreamExt};
use support::bounded;
use support::http::serve;
use support::raw::{read_to_close, read_until};
use support::sse::open_event_stream;
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tower_drain::{LongLivedKind, LongLivedLayer, Shutdown};

const LONG: Duration = Duration::from_secs(60);

/// Drains, and checks that nothing long-lived was left to cut.
async fn assert_nothing_left(shutdown: Shutdown) {
    // Short enough that a leftover shows in the report well before the bound.
    shutdown.set_long_lived_grace(Duration::from_secs(5));
    let report = bounded("drain", shutdown.drain(LONG).unwrap()).await;
    assert!(report.is_drained(), "something was left: {report}");
    assert_eq!(shutdown.long_lived(), 0);
    assert_eq!(shutdown.in_flight(), 0);
}

/// Serves `app`, opens its `/events` and reads its first event, up to `first`: the stream is
/// then in the registry. Returns the connection and what was read.
async fn first_event(app: Router, shutdown: Shutdown, first: &[u8]) -> (TcpStream, Vec<u8>) {
    let (addr, _server) = serve(app).await;
    let mut client = open_event_stream(addr, "/events").await;
    let mut raw = Vec::new();
    assert!(bounded("the first event", read_until(&mut client, &mut raw, first)).await);
    assert_eq!(shutdown.long_lived(), 1);
    (client, raw)
}

/// Held by a handler or a body: the test's receiver resolves when it is dropped. What holds
/// it drops before the request's registration and count (the handler's future or the inner
/// body comes first in what carries them), so the drain that follows finds that path taken.
struct DropNotice(#[allow(dead_code)] tokio::sync::oneshot::Sender<()>);

fn drop_notice() -> (DropNotice, tokio::sync::oneshot::Receiver<()>) {
    let (sender, receiver) = tokio::sync::oneshot::channel();
    (DropNotice(sender), receiver)
}

/// A long-poll that never answers; it reports that it started, and hands over a notice of
/// its own drop.
async fn stubborn(
    State(entered): State<mpsc::Sender<tokio::sync::oneshot::Receiver<()>>>,
) -> &'static str {
    let (notice, dropped) = drop_notice();
    entered.send(dropped).await.unwrap();
    let _notice = notice;
    std::future::pending().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_poll_whose_client_goes_away_leaves_the_registry() {
    let shutdown = Shutdown::new();
    let (entered_tx, mut entered) = mpsc::channel(1);
    let app = Router::new()
        .route(
            "/poll",
            get(stubborn)
                .with_state(entered_tx)
                .layer(LongLivedLayer::route(shutdown)),
        )
        .layer(shutdown.layer());
    let (addr, _server) = serve(app).await;
    let client = open_event_stream(addr, "/poll").await;
    let dropped = bounded("the long-poll to start", entered.recv())
        .await
        .unwrap();
    assert_eq!(shutdown.long_lived(), 1);
    drop(client);
    // The server drops the handler when it sees the client gone; the drain begins after.
    let _ = bounded("the handler to be dropped", dropped).await;
    assert_nothing_left(shutdown).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn marked_route_whose_handler_panics_leaves_the_registry() {
    let shutdown = Shutdown::new();
    let app = Router::new()
        .route(
            "/poll",
            get(|| async {
                if true {
                    panic!("the handler fails");
                }
                "never\n"
            })
            .layer(LongLivedLayer::route(shutdown)),
        )
        .layer(shutdown.layer());
    let (addr, _server) = serve(app).await;
    let mut client = open_event_stream(addr, "/poll").await;
    // Closed as the connection's task, its handler in it, is dropped after the panic: the
    // drain begins after.
    let mut raw = Vec::new();
    bounded(
        "the connection to close",
        read_to_close(&mut client, &mut raw),
    )
    .await;
    assert_nothing_left(shutdown).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn event_stream_whose_body_fails_leaves_the_registry() {
    let shutdown = Shutdown::new();
    let (fail_tx, fail_rx) = tokio::sync::oneshot::channel::<()>();
    let fail_rx = std::sync::Arc::new(std::sync::Mutex::new(Some(fail_rx)));
    let app = Router::new()
        .route(
            "/events",
            get(move || {
                let fail = fail_rx.lock().unwrap().take().unwrap();
                async move {
                    let first = stream::once(async { Ok(Bytes::from_static(b"data: one\n\n")) });
                    let failure = stream::once(async move {
                        let _ = fail.await;
                        Err(std::io::Error::other("the source failed"))
                    });
                    Response::builder()
                        .header(CONTENT_TYPE, "text/event-stream")
                        .body(Body::from_stream(first.chain(failure)))
                        .unwrap()
                }
            }),
        )
        .layer(shutdown.layer());
    let (mut client, mut raw) = first_event(app, shutdown, b"data: one\n\n").await;
    fail_tx.send(()).unwrap();
    // Closed once the server has the error, which ended the body: the drain begins after.
    bounded("the stream to end", read_to_close(&mut client, &mut raw)).await;
    assert_nothing_left(shutdown).await;
}

/// The body panics inside its `poll_frame`, mid-event, once the drain has begun: the server's
/// task unwinds and drops it, which must take it out of the registry and the count like any
/// other ending, and the drain then ends without waiting for the long-lived deadline.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn event_stream_whose_body_panics_mid_event_while_draining_leaves_the_registry() {
    let shutdown = Shutdown::new();
    let (panic_tx, panic_rx) = tokio::sync::oneshot::channel::<()>();
    let panic_rx = std::sync::Arc::new(std::sync::Mutex::new(Some(panic_rx)));
    let app = Router::new()
        .route(
            "/events",
            get(move || {
                let panic = panic_rx.lock().unwrap().take().unwrap();
                async move {
                    // Half an event: the drain lets it go on to the event's end.
                    let first = stream::once(async { Ok(Bytes::from_static(b"data: one\n")) });
                    let failure = stream::once(async move {
                        let _ = panic.await;
                    })
                    .map(|()| -> Result<Bytes, Infallible> {
                        panic!("the event source panicked on purpose")
                    });
                    Response::builder()
                        .header(CONTENT_TYPE, "text/event-stream")
                        .body(Body::from_stream(first.chain(failure)))
                        .unwrap()
                }
            }),
        )
        .layer(shutdown.layer());
    let (mut client, mut raw) = first_event(app, shutdown, b"data: one\n").await;
    shutdown.set_long_lived_grace(LONG);
    let drain = shutdown.drain(LONG).unwrap();
    panic_tx.send(()).unwrap();
    bounded("the stream to end", read_to_close(&mut client, &mut raw)).await;
    let report = bounded("the drain", drain).await;
    assert!(report.is_drained(), "{report}");
    assert_eq!(shutdown.long_lived(), 0);
    assert_eq!(shutdown.in_flight(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn event_stream_whose_client_goes_away_leaves_the_registry() {
    let shutdown = Shutdown::new();
    let (dropped_tx, mut dropped_rx) = mpsc::unbounded_channel();
    let app = Router::new()
        .route(
            "/events",
            get(move || {
                let (notice, dropped) = drop_notice();
                dropped_tx.send(dropped).unwrap();
                async move {
                    let first =
                        stream::once(async { Ok::<_, Infallible>(Bytes::from("data: 1\n\n")) });
                    // The body's stream holds the notice: dropped with the body.
                    let idle = stream::pending().map(move |item: Result<Bytes, Infallible>| {
                        let _ = &notice;
                        item
                    });
                    Response::builder()
                        .header(CONTENT_TYPE, "text/event-stream")
                        .body(Body::from_stream(first.chain(idle)))
                        .unwrap()
                }
            }),
        )
        .layer(shutdown.layer());
    let (client, _) = first_event(app, shutdown, b"data: 1\n\n").await;
    let dropped = dropped_rx.recv().await.unwrap();
    drop(client);
    let _ = bounded("the body to be dropped", dropped).await;
    assert_nothing_left(shutdown).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_lived_guard_in_a_task_that_panics_leaves_the_registry() {
    let shutdown = Shutdown::new();
    let guard = shutdown
        .long_lived_guard(LongLivedKind::Upgrade, Method::GET, "/ws")
        .unwrap();
    assert_eq!(shutdown.long_lived(), 1);
    let task = tokio::spawn(async move {
        let _guard = guard;
        panic!("the connection's task fails");
    });
    assert!(bounded("the task", task).await.is_err());
    assert_nothing_left(shutdown).await;
}

/// Many long-lived responses one after another reuse the registry's room: each leaves, and
/// the count is back to zero after every one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_event_streams_in_turn_each_leave_the_registry() {
    let shutdown = Shutdown::new();
    let app = Router::new()
        .route(
            "/events",
            get(|| async {
                let events = stream::iter([Ok::<_, Infallible>(Bytes::from("data: 1\n\n"))]);
                Response::builder()
                    .header(CONTENT_TYPE, "text/event-stream")
                    .body(Body::from_stream(events))
                    .unwrap()
            }),
        )
        .layer(shutdown.layer());
    let (addr, _server) = serve(app).await;
    for _ in 0..200 {
        let mut client = open_event_stream(addr, "/events").await;
        let mut raw = Vec::new();
        // The body's end is written only once it has left the registry.
        assert!(bounded("the end", read_until(&mut client, &mut raw, b"0\r\n\r\n")).await);
        assert_eq!(shutdown.long_lived(), 0);
    }
    assert_nothing_left(shutdown).await;
}
