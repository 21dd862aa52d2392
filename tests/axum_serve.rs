//! axum's own server driven by `closing()`, as `examples/axum.rs` sets it up: requests in
//! flight finish, and `serve` returns within the drain even with an SSE client connected
//! (the layer ends the stream when the drain begins) or a plain stream still sending (cut at
//! the deadline).

mod support;

use std::convert::Infallible;
use std::future::IntoFuture;
use std::net::SocketAddr;
use std::time::Duration;

use axum::http::StatusCode;
use axum::response::sse::{Event, Sse};
use axum::routing::get;
use axum::Router;
use bytes::Bytes;
use futures_util::stream::{self, Stream};
use futures_util::StreamExt;
use http::Request;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tower_drain::{DrainOutcome, Phase, Shutdown};

use support::gate::Gate;
use support::raw::{has_connection_close, read_to_eof, write_get};
use support::{bounded, BOUND};

/// `/held` waits at the gate; `/events` (server-sent events) and `/ticks` (a plain chunked
/// stream) tick every few milliseconds for ever.
async fn start(shutdown: Shutdown, gate: &Gate) -> (SocketAddr, JoinHandle<std::io::Result<()>>) {
    let gate = gate.clone();
    let app = Router::new()
        .route("/", get(|| async { "ok\n" }))
        .route(
            "/held",
            get(move || async move {
                gate.pass().await;
                "held\n"
            }),
        )
        .route("/events", get(|| async { Sse::new(ticks()) }))
        .route(
            "/ticks",
            get(|| async {
                axum::body::Body::from_stream(
                    ticks().map(|event| event.map(|_| Bytes::from_static(b"tick\n"))),
                )
            }),
        )
        .route(
            "/readyz",
            get(move || async move {
                if shutdown.phase().shutting_down() {
                    StatusCode::SERVICE_UNAVAILABLE
                } else {
                    StatusCode::OK
                }
            }),
        )
        .layer(shutdown.layer().bypass(&["/readyz"]));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = axum::serve(listener, app).with_graceful_shutdown(shutdown.closing());
    (addr, tokio::spawn(server.into_future()))
}

fn ticks() -> impl Stream<Item = Result<Event, Infallible>> {
    stream::unfold(0u64, |i| async move {
        tokio::time::sleep(Duration::from_millis(5)).await;
        Some((Ok(Event::default().data(format!("tick {i}"))), i + 1))
    })
}

/// A stream that never sends anything.
fn quiet() -> impl Stream<Item = Result<Bytes, Infallible>> {
    stream::pending()
}

fn get_request(addr: SocketAddr, path: &str) -> Request<Empty<Bytes>> {
    Request::get(format!("http://{addr}{path}"))
        .body(Empty::new())
        .unwrap()
}

#[tokio::test]
async fn serve_returns_after_the_drain_with_an_sse_client_connected() {
    let shutdown = Shutdown::new();
    let (addr, server) = start(shutdown, &Gate::new()).await;
    let client = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();

    let response = bounded(
        "the SSE response",
        client.request(get_request(addr, "/events")),
    )
    .await
    .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let mut events = response.into_body();
    let first = bounded("the first event", events.frame())
        .await
        .unwrap()
        .unwrap();
    assert!(first.into_data().unwrap().starts_with(b"data: tick 0"));

    // The stream is ended when draining begins, so the drain does not wait for its deadline.
    let report = bounded("the drain", shutdown.drain(BOUND).unwrap()).await;
    assert_eq!(report.outcome, DrainOutcome::Drained, "{report}");

    // axum's connection, and axum, ended; the client got the final event and a clean end.
    bounded("axum to return", server).await.unwrap().unwrap();
    let rest = bounded("the end of the stream", events.collect())
        .await
        .expect("a clean end, not a cut")
        .to_bytes();
    assert!(
        rest.windows(15).any(|w| w == b"event: shutdown"),
        "no final event in {rest:?}"
    );
}

#[tokio::test]
async fn serve_returns_at_the_drain_deadline_with_a_stream_still_sending() {
    let shutdown = Shutdown::new();
    let (addr, server) = start(shutdown, &Gate::new()).await;
    let client = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();

    let response = bounded("the response", client.request(get_request(addr, "/ticks")))
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let mut ticks = response.into_body();
    bounded("the first tick", ticks.frame())
        .await
        .unwrap()
        .unwrap();

    let report = bounded(
        "the drain",
        shutdown.drain(Duration::from_millis(100)).unwrap(),
    )
    .await;
    assert_eq!(report.outcome, DrainOutcome::TimedOut);
    assert_eq!(report.still_running, 1);

    // The stream was aborted at its next chunk after the deadline, so axum's connection,
    // and axum, ended.
    bounded("axum to return", server).await.unwrap().unwrap();
    // The client sees a cut stream (an error), not a clean end it would take as complete.
    let rest = bounded("the end of the stream", ticks.collect()).await;
    assert!(rest.is_err(), "the stream ended as if complete");
}

#[tokio::test]
async fn request_in_flight_completes_with_connection_close_and_serve_returns() {
    let shutdown = Shutdown::new();
    let gate = Gate::new();
    let (addr, server) = start(shutdown, &gate).await;

    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    write_get(&mut stream, "/held").await;
    gate.entered(1).await;
    let drain = shutdown.drain(BOUND).unwrap();
    gate.release(1);

    let response = read_to_eof(stream).await;
    assert!(response.starts_with("HTTP/1.1 200 OK\r\n"), "{response}");
    assert!(has_connection_close(&response), "{response}");
    assert!(response.ends_with("held\n"), "{response}");
    assert_eq!(
        bounded("the drain", drain).await.outcome,
        DrainOutcome::Drained
    );
    bounded("axum to return", server).await.unwrap().unwrap();
}

#[tokio::test]
async fn lame_duck_fails_readiness_and_still_serves() {
    let shutdown = Shutdown::new();
    let (addr, server) = start(shutdown, &Gate::new()).await;
    let client = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
    let status = |path: &'static str| {
        let request = client.request(get_request(addr, path));
        async move { bounded(path, request).await.unwrap().status() }
    };

    assert_eq!(status("/readyz").await, StatusCode::OK);
    assert!(shutdown.begin_lame_duck());
    assert_eq!(status("/readyz").await, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(status("/").await, StatusCode::OK);
    assert_eq!(shutdown.phase(), Phase::LameDuck);

    let report = bounded("the drain", shutdown.drain(BOUND).unwrap()).await;
    assert_eq!(report.outcome, DrainOutcome::Drained);
    assert_eq!(report.rejected, 0);
    bounded("axum to return", server).await.unwrap().unwrap();
}

/// A counted plain stream that sends nothing is not polled again, so the deadline cannot cut
/// it from inside (server-sent events are tracked and woken; this is not); axum's own server
/// would keep its connection open. Served by `tower_drain::server::serve` instead, the same
/// router's connection is closed at the deadline and the server returns.
#[cfg(feature = "hyper-server")]
#[tokio::test]
async fn router_on_tower_drain_server_returns_at_the_deadline_with_an_idle_stream() {
    let shutdown = Shutdown::new();
    let app = Router::new()
        .route(
            "/quiet",
            get(|| async { axum::body::Body::from_stream(quiet()) }),
        )
        .layer(shutdown.layer());
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(tower_drain::server::serve(listener, app, shutdown));
    let client = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();

    let response = bounded(
        "the SSE response",
        client.request(get_request(addr, "/quiet")),
    )
    .await
    .unwrap();
    assert_eq!(response.status(), StatusCode::OK);

    let report = bounded(
        "the drain",
        shutdown.drain(Duration::from_millis(50)).unwrap(),
    )
    .await;
    assert_eq!(report.outcome, DrainOutcome::TimedOut);
    assert_eq!(report.still_running, 1);
    bounded("the server to return", server).await.unwrap();
    let rest = bounded("the end of the stream", response.into_body().collect()).await;
    assert!(rest.is_err(), "the stream ended as if complete");
}

/// `serve_with_peer` gives each connection its own service made from the client's address:
/// a router reads it through axum's `ConnectInfo`, which plain `serve` cannot pass on, and the
/// server still closes its kept-alive connections and returns when the drain begins.
#[cfg(feature = "hyper-server")]
#[tokio::test]
async fn router_on_serve_with_peer_sees_each_clients_address() {
    use axum::extract::ConnectInfo;
    use axum::Extension;
    use tower::Layer;

    let shutdown = Shutdown::new();
    let app = Router::new()
        .route(
            "/peer",
            get(|ConnectInfo(peer): ConnectInfo<SocketAddr>| async move { format!("{peer}") }),
        )
        .layer(shutdown.layer());
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(tower_drain::server::serve_with_peer(
        listener,
        move |peer: SocketAddr| Extension(ConnectInfo(peer)).layer(app.clone()),
        shutdown,
    ));

    // Two connections, two addresses: the service is made per connection, not once.
    for _ in 0..2 {
        let mut client = tokio::net::TcpStream::connect(addr).await.unwrap();
        let local = client.local_addr().unwrap();
        write_get(&mut client, "/peer").await;
        let response = support::raw::read_response(&mut client).await;
        assert!(response.starts_with("HTTP/1.1 200 "), "{response}");
        assert!(
            response.ends_with(&local.to_string()),
            "{local}: {response}"
        );
    }

    let report = bounded("the drain", shutdown.drain(BOUND).unwrap()).await;
    assert_eq!(report.outcome, DrainOutcome::Drained, "{report}");
    assert_eq!(report.in_flight_at_start, 0, "{report}");
    bounded("the server to return", server).await.unwrap();
}

/// A `make_service` that panics for one connection closes that connection unanswered and
/// leaves `serve` running: the next client is served, and the drain still ends the server.
#[cfg(feature = "hyper-server")]
#[tokio::test]
async fn a_make_service_panicking_for_one_connection_leaves_serve_running() {
    use std::sync::atomic::{AtomicBool, Ordering};

    let shutdown = Shutdown::new();
    let app = Router::new()
        .route("/", get(|| async { "ok" }))
        .layer(shutdown.layer());
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let first = AtomicBool::new(true);
    let server = tokio::spawn(tower_drain::server::serve_with_peer(
        listener,
        move |_peer: SocketAddr| {
            // Relaxed: only the accepting task touches it.
            assert!(
                !first.swap(false, Ordering::Relaxed),
                "no service for the first client"
            );
            app.clone()
        },
        shutdown,
    ));

    let mut refused = tokio::net::TcpStream::connect(addr).await.unwrap();
    write_get(&mut refused, "/").await;
    // Closed with the request unread, the socket may end with a reset rather than an EOF:
    // either way, no answer.
    let mut unanswered = Vec::new();
    let _ = bounded(
        "the first connection to close",
        tokio::io::AsyncReadExt::read_to_end(&mut refused, &mut unanswered),
    )
    .await;
    assert!(
        unanswered.is_empty(),
        "{:?}",
        String::from_utf8_lossy(&unanswered)
    );

    let mut served = tokio::net::TcpStream::connect(addr).await.unwrap();
    write_get(&mut served, "/").await;
    let response = support::raw::read_response(&mut served).await;
    assert!(response.starts_with("HTTP/1.1 200 "), "{response}");
    assert!(!server.is_finished(), "serve ended");

    let report = bounded("the drain", shutdown.drain(BOUND).unwrap()).await;
    assert_eq!(report.outcome, DrainOutcome::Drained, "{report}");
    bounded("the server to return", server).await.unwrap();
}
