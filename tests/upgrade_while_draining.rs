//! An upgrade (`101 Switching Protocols`) admitted before the drain keeps its
//! `Connection: upgrade` when its response is ready after admission closed: `Connection: close`
//! is for responses after which the HTTP/1 connection would be reused, and on a 101 it replaces
//! the `upgrade` token the handshake needs.

mod support;

use std::convert::Infallible;
use std::future::Future;
use std::task::Context;
use std::time::Duration;

use axum::extract::ws::{close_code, CloseFrame, Message, WebSocketUpgrade};
use axum::extract::State;
use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use futures_util::task::noop_waker_ref;
use http::header::{CONNECTION, UPGRADE};
use http::{Request, Version};
use http_body_util::Empty;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tower::{service_fn, Layer, Service, ServiceExt};
use tower_drain::{LongLivedKind, Shutdown};

use support::bounded;
use support::gate::Gate;
use support::http::serve_until_closing;
use support::raw::read_until;

const LONG: Duration = Duration::from_secs(60);

fn has_upgrade_token(value: &http::HeaderValue) -> bool {
    value
        .to_str()
        .unwrap()
        .split(',')
        .any(|token| token.trim().eq_ignore_ascii_case("upgrade"))
}

/// Straight through the tower service: the 101 of a request admitted while serving, ready once
/// admission has closed.
#[tokio::test]
async fn switching_protocols_ready_after_admission_closed_keeps_connection_upgrade() {
    let shutdown = Shutdown::new();
    let (answer, answered) = oneshot::channel::<()>();
    let mut answered = Some(answered);
    let inner = service_fn(move |_request: Request<Empty<bytes::Bytes>>| {
        let answered = answered.take().expect("one request");
        async move {
            answered.await.unwrap();
            let response = http::Response::builder()
                .status(StatusCode::SWITCHING_PROTOCOLS)
                .header(CONNECTION, "upgrade")
                .header(UPGRADE, "websocket")
                .body(Empty::<bytes::Bytes>::new())
                .unwrap();
            Ok::<_, Infallible>(response)
        }
    });
    let mut service = shutdown.layer().layer(inner);
    let request = Request::get("/ws")
        .version(Version::HTTP_11)
        .header(CONNECTION, "upgrade")
        .header(UPGRADE, "websocket")
        .body(Empty::new())
        .unwrap();
    let mut future = Box::pin(service.ready().await.unwrap().call(request));
    // Admitted while serving; the handler has not answered yet.
    let mut cx = Context::from_waker(noop_waker_ref());
    assert!(future.as_mut().poll(&mut cx).is_pending());
    assert_eq!(shutdown.in_flight(), 1);

    let _drain = shutdown.drain(LONG).unwrap();
    answer.send(()).unwrap();
    let response = bounded("the 101", future).await.unwrap();

    assert_eq!(response.status(), StatusCode::SWITCHING_PROTOCOLS);
    let connection = response
        .headers()
        .get(CONNECTION)
        .expect("a 101 keeps its Connection header");
    assert!(
        has_upgrade_token(connection),
        "a 101 must keep `Connection: upgrade`, got `Connection: {connection:?}`"
    );
}

#[derive(Clone)]
struct Ctx {
    shutdown: Shutdown,
    gate: Gate,
}

/// The README's WebSocket handler, with one asynchronous check (authentication, say) between
/// taking the guard and answering the upgrade.
async fn upgrade(State(ctx): State<Ctx>, ws: WebSocketUpgrade) -> Response {
    let Some(guard) = ctx
        .shutdown
        .long_lived_guard(LongLivedKind::Upgrade, Method::GET, "/ws")
    else {
        return StatusCode::SERVICE_UNAVAILABLE.into_response();
    };
    ctx.gate.pass().await;
    ws.on_upgrade(move |mut socket| async move {
        // Already draining: say goodbye at once.
        guard.signal().await;
        let close = CloseFrame {
            code: close_code::AWAY,
            reason: "server shutting down".into(),
        };
        let _ = socket.send(Message::Close(Some(close))).await;
        drop(guard);
    })
}

/// Over a real server (axum with its graceful shutdown on `closing()`) and a raw client
/// reading the 101's head as a browser does: the `Connection` header must hold the
/// `upgrade` token (RFC 6455 4.1; hyper itself appends `close` while shutting down, which
/// keeps the token).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_admitted_before_the_drain_gets_a_101_with_the_upgrade_token() {
    let shutdown = Shutdown::new();
    let gate = Gate::new();
    let app = Router::new()
        .route("/ws", get(upgrade))
        .with_state(Ctx {
            shutdown,
            gate: gate.clone(),
        })
        .layer(shutdown.layer());
    let server = serve_until_closing(app, shutdown).await;

    let mut client = TcpStream::connect(server.addr).await.unwrap();
    client
        .write_all(
            b"GET /ws HTTP/1.1\r\nhost: localhost\r\nconnection: Upgrade\r\n\
              upgrade: websocket\r\nsec-websocket-version: 13\r\n\
              sec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
        )
        .await
        .unwrap();
    // The handler holds its guard and waits at the gate: the drain begins now.
    gate.entered(1).await;
    let _drain = shutdown.drain(LONG).unwrap();
    gate.release(1);

    let mut head = Vec::new();
    let complete = bounded(
        "the 101's head",
        read_until(&mut client, &mut head, b"\r\n\r\n"),
    )
    .await;
    assert!(
        complete,
        "connection closed before a response head: {head:?}"
    );
    let head = String::from_utf8_lossy(&head).to_ascii_lowercase();
    assert!(head.starts_with("http/1.1 101"), "{head}");
    let connection = head
        .lines()
        .filter_map(|line| line.strip_prefix("connection:"))
        .collect::<Vec<_>>()
        .join(",");
    assert!(
        connection.split(',').any(|token| token.trim() == "upgrade"),
        "the 101 lost its `Connection: upgrade` (a browser fails the handshake): {head}"
    );
}
