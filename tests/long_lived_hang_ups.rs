//! A client that goes away from an event stream during the long-lived grace, while the stream
//! is inside an event (so it cannot finish yet), ends it then: the drain does not wait for the
//! long-lived deadline, and nothing is listed as cut. Over HTTP/1 (the connection closes) and
//! HTTP/2 (the stream is reset, the connection stays).

mod support;

use std::convert::Infallible;
use std::time::Duration;

use axum::body::Body;
use axum::routing::get;
use axum::Router;
use bytes::Bytes;
use futures_util::stream::{self, StreamExt};
use http::header::CONTENT_TYPE;
use http::Response;
use http_body_util::BodyExt;
use hyper_util::rt::{TokioExecutor, TokioIo};
use support::bounded;
use support::http::{serve_until_closing, Server};
use support::sse::open_until;
use tower_drain::{Drain, Shutdown};

/// Past the bound: a drain that waits for the long-lived deadline fails the test.
const LONG: Duration = Duration::from_secs(60);

/// `/events`: half an event, then idle: the stream cannot finish on drain until the event ends.
async fn half_event_server(shutdown: Shutdown) -> Server {
    shutdown.set_long_lived_grace(LONG);
    let app = Router::new()
        .route(
            "/events",
            get(|| async {
                let half = stream::once(async { Ok::<_, Infallible>(Bytes::from("data: half")) });
                Response::builder()
                    .header(CONTENT_TYPE, "text/event-stream")
                    .body(Body::from_stream(half.chain(stream::pending())))
                    .unwrap()
            }),
        )
        .layer(shutdown.layer());
    serve_until_closing(app, shutdown).await
}

/// Begins the drain and checks it waits for the stream.
async fn draining(shutdown: Shutdown) -> std::pin::Pin<Box<Drain>> {
    let mut drain = Box::pin(shutdown.drain(LONG).unwrap());
    assert!(futures_util::poll!(drain.as_mut()).is_pending());
    assert_eq!(shutdown.long_lived(), 1, "the stream is still running");
    drain
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http1_client_leaving_mid_event_during_the_grace_releases_the_drain() {
    let shutdown = Shutdown::new();
    let server = half_event_server(shutdown).await;
    let reading = open_until(server.addr, "/events", b"data: half").await;
    let drain = draining(shutdown).await;
    drop(reading);
    let report = bounded("the drain", drain).await;
    assert!(report.is_drained(), "{report}");
    assert_eq!(shutdown.long_lived(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_client_resetting_mid_event_during_the_grace_releases_the_drain() {
    let shutdown = Shutdown::new();
    let server = half_event_server(shutdown).await;
    let tcp = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    let (mut sender, connection) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tcp))
            .await
            .unwrap();
    tokio::spawn(connection);
    let request = http::Request::get(format!("http://{}/events", server.addr))
        .body(http_body_util::Empty::<Bytes>::new())
        .unwrap();
    let response = bounded("the response", sender.send_request(request))
        .await
        .unwrap();
    let mut body = response.into_body();
    let frame = bounded("the first frame", body.frame())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(frame.into_data().unwrap(), "data: half");

    let drain = draining(shutdown).await;
    // Dropping the body resets the stream (RST_STREAM); the connection stays open.
    drop(body);
    let report = bounded("the drain", drain).await;
    assert!(report.is_drained(), "{report}");
    assert_eq!(shutdown.long_lived(), 0);
}
