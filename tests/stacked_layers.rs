//! `shutdown.layer()` among the layers users stack around it on real servers: tower-http's
//! compression, tracing and CORS, an axum WebSocket route, and a handler whose service
//! fails. What the client gets while draining, and that every count ends.

mod support;

use std::convert::Infallible;
use std::io;
use std::time::Duration;

use axum::extract::ws::WebSocketUpgrade;
use axum::response::sse::{Event, Sse};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use bytes::Bytes;
use futures_util::stream::{self, Stream, StreamExt};
use http::{Request, Response, StatusCode};
use http_body_util::{Empty, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tokio::net::TcpListener;
use tower::{service_fn, Layer};
use tower_drain::{DrainOutcome, Shutdown};
use tower_http::compression::CompressionLayer;
use tower_http::cors::CorsLayer;
use tower_http::trace::TraceLayer;

use support::bounded;
use support::gate::Gate;
use support::raw::{has_connection_close, raw_get, split_head};
use support::sse::{parse_events, FINAL_EVENT};

const LONG: Duration = Duration::from_secs(600);

/// An event stream of one event, then silence until the drain ends it.
fn one_event_then_quiet() -> impl Stream<Item = Result<Event, Infallible>> {
    stream::once(async { Ok(Event::default().data("first")) }).chain(stream::pending())
}

/// With tower-http's `CompressionLayer` (and `TraceLayer`) around or inside the crate's
/// layer, and a client that accepts gzip: the event stream is still recognised, gets its
/// final event and ends cleanly. Compression's default rule leaves `text/event-stream`
/// alone, so neither order hides the stream's type or its events from the layer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compression_either_side_leaves_the_event_stream_its_final_event() {
    for compression_outside in [true, false] {
        let shutdown = Shutdown::new();
        let routes = Router::new().route(
            "/events",
            get(|| async { Sse::new(one_event_then_quiet()) }),
        );
        let app = if compression_outside {
            routes
                .layer(shutdown.layer())
                .layer(CompressionLayer::new())
                .layer(TraceLayer::new_for_http())
        } else {
            routes
                .layer(CompressionLayer::new())
                .layer(TraceLayer::new_for_http())
                .layer(shutdown.layer())
        };
        let server = support::http::serve_until_closing(app, shutdown).await;

        let mut client = tokio::net::TcpStream::connect(server.addr).await.unwrap();
        tokio::io::AsyncWriteExt::write_all(
            &mut client,
            b"GET /events HTTP/1.1\r\nhost: x\r\naccept: text/event-stream\r\naccept-encoding: gzip\r\n\r\n",
        )
        .await
        .unwrap();
        let mut raw = Vec::new();
        assert!(
            bounded(
                "the first event",
                support::raw::read_until(&mut client, &mut raw, b"data: first\n\n")
            )
            .await,
            "outside: {compression_outside}: {:?}",
            String::from_utf8_lossy(&raw)
        );
        assert_eq!(shutdown.long_lived(), 1, "outside: {compression_outside}");

        let drain = shutdown.drain(LONG).unwrap();
        bounded(
            "the end",
            support::raw::read_to_close(&mut client, &mut raw),
        )
        .await;
        let (head, body) = split_head(&raw);
        assert!(
            !head.to_ascii_lowercase().contains("content-encoding"),
            "outside: {compression_outside}: {head}"
        );
        let chunked = support::raw::decode_chunked(body);
        assert!(
            chunked.terminated,
            "outside: {compression_outside}: a clean end"
        );
        let (events, rest) = parse_events(&chunked.data);
        assert_eq!(
            events,
            ["data: first", FINAL_EVENT],
            "outside: {compression_outside}"
        );
        assert!(rest.is_empty(), "outside: {compression_outside}");

        let report = bounded("the drain", drain).await;
        assert_eq!(report.outcome, DrainOutcome::Drained, "{report}");
        assert!(report.long_lived.is_empty(), "{report}");
        bounded("the server", server.task).await.unwrap();
    }
}

/// What a browser's CORS preflight and its request get while draining, with tower-http's
/// `CorsLayer` inside the crate's layer (a chain that ends with `shutdown.layer()`, as the
/// README's examples do) and outside it (the order the README advises).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cors_preflight_and_refusal_while_draining_in_both_orders() {
    for cors_outside in [false, true] {
        let shutdown = Shutdown::new();
        let routes = Router::new().route("/api", get(|| async { "ok" }));
        let app = if cors_outside {
            routes
                .layer(shutdown.layer())
                .layer(CorsLayer::permissive())
        } else {
            routes
                .layer(CorsLayer::permissive())
                .layer(shutdown.layer())
        };
        let (addr, _server) = support::http::serve(app).await;
        let _ = bounded("the drain", shutdown.drain(LONG).unwrap()).await;

        let preflight = raw_request(
            addr,
            "OPTIONS /api HTTP/1.1\r\nhost: x\r\norigin: http://example.com\r\n\
             access-control-request-method: GET\r\nconnection: close\r\n\r\n",
        )
        .await;
        let request = raw_request(
            addr,
            "GET /api HTTP/1.1\r\nhost: x\r\norigin: http://example.com\r\nconnection: close\r\n\r\n",
        )
        .await;
        let allows = |head: &str| {
            head.to_ascii_lowercase()
                .contains("\r\naccess-control-allow-origin: *")
        };
        assert!(request.starts_with("HTTP/1.1 503 "), "{request}");
        if cors_outside {
            // The preflight never reaches the crate's layer; the refusal carries the CORS
            // headers, so a browser's script sees the 503 and its `Retry-After`.
            assert!(preflight.starts_with("HTTP/1.1 200 "), "{preflight}");
            assert!(allows(&preflight), "{preflight}");
            assert!(allows(&request), "{request}");
            assert_eq!(shutdown.rejected(), 1);
        } else {
            // Refused before CORS: the browser reports a CORS failure, not the 503.
            assert!(preflight.starts_with("HTTP/1.1 503 "), "{preflight}");
            assert!(!allows(&preflight), "{preflight}");
            assert!(!allows(&request), "{request}");
            assert_eq!(shutdown.rejected(), 2);
        }
    }
}

async fn raw_request(addr: std::net::SocketAddr, request: &str) -> String {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    tokio::io::AsyncWriteExt::write_all(&mut stream, request.as_bytes())
        .await
        .unwrap();
    let mut raw = Vec::new();
    bounded(
        "the response",
        support::raw::read_to_close(&mut stream, &mut raw),
    )
    .await;
    String::from_utf8(raw).unwrap()
}

/// A WebSocket handshake refused while draining: the client's handshake fails with the 503
/// (an HTTP error it can act on), not with a hang or a broken connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_handshake_while_draining_gets_the_503() {
    let shutdown = Shutdown::new();
    let app = Router::new()
        .route(
            "/ws",
            get(|ws: WebSocketUpgrade| async move { ws.on_upgrade(|_socket| async {}) }),
        )
        .layer(shutdown.layer());
    let (addr, _server) = support::http::serve(app).await;
    let _ = bounded("the drain", shutdown.drain(LONG).unwrap()).await;

    let error = bounded(
        "the handshake",
        tokio_tungstenite::connect_async(format!("ws://{addr}/ws")),
    )
    .await
    .expect_err("refused");
    match error {
        tokio_tungstenite::tungstenite::Error::Http(response) => {
            assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
            assert_eq!(response.headers()["retry-after"], "1");
        }
        other => panic!("not the 503: {other:?}"),
    }
    assert_eq!(shutdown.rejected(), 1);
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A service whose future fails (a plain hyper `service_fn` with an error type of its own),
/// while counted and draining: the count ends once, the drain completes `Drained`, and the
/// client sees a failed exchange (HTTP/1: the connection closed with no response; HTTP/2:
/// the stream reset), never a response it could take as whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn service_error_while_draining_ends_the_count_once_and_fails_the_exchange() {
    for http2 in [false, true] {
        let shutdown = Shutdown::new();
        let gate = Gate::new();
        let failing = {
            let gate = gate.clone();
            service_fn(move |request: Request<Incoming>| {
                let gate = gate.clone();
                async move {
                    if request.uri().path() == "/fail" {
                        gate.pass().await;
                        return Err::<Response<Full<Bytes>>, BoxError>(Box::new(io::Error::other(
                            "storage unavailable",
                        )));
                    }
                    Ok(Response::new(Full::from("ok")))
                }
            })
        };
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(tower_drain::server::serve(
            listener,
            shutdown.layer().layer(failing),
            shutdown,
        ));
        let client = Client::builder(TokioExecutor::new())
            .http2_only(http2)
            .build_http::<Empty<Bytes>>();
        let failed = tokio::spawn(client.get(format!("http://{addr}/fail").parse().unwrap()));
        gate.entered(1).await;
        assert_eq!(shutdown.in_flight(), 1, "http2: {http2}");
        let drain = shutdown.drain(LONG).unwrap();
        gate.release(1);

        let error = bounded("the failed exchange", failed)
            .await
            .unwrap()
            .expect_err("no response for a failed service");
        let report = bounded("the drain", drain).await;
        assert_eq!(
            report.outcome,
            DrainOutcome::Drained,
            "http2: {http2}: {report}"
        );
        assert_eq!(
            (
                report.in_flight_at_start,
                report.completed,
                report.still_running
            ),
            (1, 1, 0),
            "http2: {http2}: {report}"
        );
        assert_eq!(shutdown.in_flight(), 0, "http2: {http2}: {error:?}");
        bounded("the server", server).await.unwrap();
    }
}

/// The requests a draining server refuses, answered through the layers above: a refused
/// request's 503 keeps `Connection: close` through compression and tracing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusal_through_compression_and_tracing_keeps_its_close() {
    let shutdown = Shutdown::new();
    let app = Router::new()
        .route("/", get(|| async { "ok".into_response() }))
        .layer(shutdown.layer())
        .layer(CompressionLayer::new())
        .layer(TraceLayer::new_for_http());
    let (addr, _server) = support::http::serve(app).await;
    let _ = bounded("the drain", shutdown.drain(LONG).unwrap()).await;
    let refused = raw_get(addr, "/", usize::MAX).await;
    let (head, body) = split_head(&refused);
    assert!(head.starts_with("HTTP/1.1 503 "), "{head}");
    assert!(has_connection_close(&head), "{head}");
    assert_eq!(body, b"service is shutting down\n");
}
