//! Every way a request can end returns the in-flight count to zero, and none counts twice.

mod support;

use std::convert::Infallible;
use std::future::{pending, ready};
use std::io;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::routing::get;
use axum::Router;
use bytes::Bytes;
use futures_util::{stream, FutureExt};
use http::{Request, Response};
use http_body::Frame;
use http_body_util::{BodyExt, Full, StreamBody};
use support::bounded;
use support::http::serve;
use support::raw::raw_get;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tower::{service_fn, Layer, Service, ServiceExt};
use tower_drain::{DrainOutcome, Shutdown};

/// Waits for the count to reach zero using the crate's own zero edge: the drain resolves
/// `Drained` exactly when every admitted request has ended.
async fn assert_returns_to_zero(shutdown: &Shutdown) {
    let report = bounded("drain", shutdown.drain(Duration::from_secs(60)).unwrap()).await;
    assert_eq!(report.outcome, DrainOutcome::Drained, "{report}");
    assert_eq!(shutdown.in_flight(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_disconnect_mid_body_releases_the_request() {
    let shutdown = Shutdown::new();
    let app = Router::new()
        .route(
            "/endless",
            get(|| async {
                let chunk = Bytes::from(vec![b'x'; 16 * 1024]);
                Body::from_stream(stream::repeat_with(move || {
                    Ok::<_, Infallible>(chunk.clone())
                }))
            }),
        )
        .layer(shutdown.layer());
    let (addr, _server) = serve(app).await;

    // Read part of an endless body while the connection is open: the request is counted.
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let request = format!("GET /endless HTTP/1.1\r\nHost: {addr}\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut head = [0u8; 64 * 1024];
    bounded("first bytes", stream.read_exact(&mut head))
        .await
        .unwrap();
    assert!(head.starts_with(b"HTTP/1.1 200 OK"));
    assert_eq!(shutdown.in_flight(), 1, "the body is still streaming");

    // Then hang up mid-body.
    drop(stream);
    assert_returns_to_zero(&shutdown).await;
}

async fn panicking_handler() -> &'static str {
    panic!("handler failure under test")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handler_panic_releases_the_request() {
    let shutdown = Shutdown::new();
    let counted_inside = Arc::new(AtomicUsize::new(usize::MAX));
    let seen = counted_inside.clone();
    let app = Router::new()
        .route(
            "/panic",
            get(move || {
                seen.store(shutdown.in_flight(), Ordering::SeqCst);
                panicking_handler()
            }),
        )
        .layer(shutdown.layer());
    let (addr, _server) = serve(app).await;

    let received = raw_get(addr, "/panic", 1).await;
    assert!(received.is_empty(), "the connection dies with the handler");
    assert_eq!(
        counted_inside.load(Ordering::SeqCst),
        1,
        "counted while running"
    );

    assert_returns_to_zero(&shutdown).await;
}

#[tokio::test]
async fn dropped_service_future_releases_the_request() {
    let shutdown = Shutdown::new();
    let mut service = shutdown.layer().layer(service_fn(|_: Request<()>| {
        pending::<Result<Response<Full<Bytes>>, Infallible>>()
    }));

    let mut future = service.ready().await.unwrap().call(Request::new(()));
    assert!((&mut future).now_or_never().is_none());
    assert_eq!(shutdown.in_flight(), 1);

    drop(future);
    assert_eq!(shutdown.in_flight(), 0);
    assert_returns_to_zero(&shutdown).await;
}

/// A body that sends one chunk and then fails.
fn failing_body() -> StreamBody<impl futures_util::Stream<Item = Result<Frame<Bytes>, io::Error>>> {
    StreamBody::new(stream::iter([
        Ok(Frame::data(Bytes::from_static(b"partial"))),
        Err(io::Error::other("storage went away")),
    ]))
}

#[tokio::test]
async fn body_error_releases_the_request_and_reaches_the_server() {
    let shutdown = Shutdown::new();
    let service = shutdown.layer().layer(service_fn(|_: Request<()>| {
        ready(Ok::<_, Infallible>(Response::new(failing_body())))
    }));

    let response = service.oneshot(Request::new(())).await.unwrap();
    let mut body = response.into_body();
    let first = body.frame().await.unwrap().unwrap();
    assert_eq!(first.into_data().unwrap(), "partial");
    assert_eq!(shutdown.in_flight(), 1);

    let error = body.frame().await.unwrap().unwrap_err();
    assert_eq!(error.to_string(), "storage went away");
    assert_eq!(
        shutdown.in_flight(),
        0,
        "released at the error, before the body is dropped"
    );
    drop(body);
    assert_eq!(shutdown.in_flight(), 0, "and not released twice");
    assert_returns_to_zero(&shutdown).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn body_error_over_a_real_connection_releases_the_request() {
    let shutdown = Shutdown::new();
    let app = Router::new()
        .route(
            "/fails",
            get(|| async {
                let chunks = stream::iter([
                    Ok(Bytes::from_static(b"partial")),
                    Err(io::Error::other("storage went away")),
                ]);
                Body::from_stream(chunks)
            }),
        )
        .layer(shutdown.layer());
    let (addr, _server) = serve(app).await;

    let received = raw_get(addr, "/fails", usize::MAX).await;
    let text = String::from_utf8_lossy(&received);
    // hyper may drop the connection before flushing the head; either way, no clean end.
    assert!(
        !text.ends_with("0\r\n\r\n"),
        "a failed body must not end cleanly: {text}"
    );

    assert_returns_to_zero(&shutdown).await;
}

#[tokio::test]
async fn service_error_releases_the_request() {
    let shutdown = Shutdown::new();
    let service = shutdown.layer().layer(service_fn(|_: Request<()>| {
        ready(Err::<Response<Full<Bytes>>, _>(io::Error::other(
            "refused by the handler",
        )))
    }));

    let error = service.oneshot(Request::new(())).await.unwrap_err();
    assert_eq!(error.to_string(), "refused by the handler");
    assert_eq!(shutdown.in_flight(), 0);
    assert_returns_to_zero(&shutdown).await;
}

#[tokio::test]
async fn background_guard_counts_until_dropped_and_is_refused_once_draining() {
    let shutdown = Shutdown::new();
    let guard = shutdown.guard().expect("admitted while serving");
    assert_eq!(shutdown.in_flight(), 1);

    let mut drain = Box::pin(shutdown.drain(Duration::from_secs(60)).unwrap());
    assert!(
        drain.as_mut().now_or_never().is_none(),
        "the guard holds the drain"
    );
    assert!(shutdown.guard().is_none(), "no new work once draining");

    drop(guard);
    let report = bounded("drain", drain).await;
    assert_eq!(report.outcome, DrainOutcome::Drained);
    assert_eq!((report.in_flight_at_start, report.completed), (1, 1));
}
