//! WebSockets through a graceful shutdown: each socket's task holds a `LongLivedGuard`, so
//! the drain waits for it, and closes the socket with code 1001 (going away) when the drain
//! begins, so clients reconnect elsewhere.
//!
//! ```text
//! cargo run --example websocket
//! # connect a client to ws://127.0.0.1:3001/ws (it echoes), then press Ctrl-C or send
//! # SIGTERM; a second signal forces the shutdown
//! ```

use std::future::IntoFuture;
use std::time::Duration;

use axum::extract::ws::{close_code, CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::State;
use axum::http::{Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use tower_drain::{LongLivedGuard, LongLivedKind, Shutdown, ShutdownSequence};

async fn upgrade(State(shutdown): State<Shutdown>, ws: WebSocketUpgrade, uri: Uri) -> Response {
    // Taken before upgrading, so the socket counts from its first moment; `None` once the
    // drain has begun: refuse rather than open a socket that must close at once.
    let Some(guard) = shutdown.long_lived_guard(LongLivedKind::Upgrade, Method::GET, uri.path())
    else {
        return StatusCode::SERVICE_UNAVAILABLE.into_response();
    };
    ws.on_upgrade(move |socket| echo(socket, guard))
}

/// Echoes text until the client leaves or the drain begins; the guard drops when it returns.
async fn echo(mut socket: WebSocket, guard: LongLivedGuard) {
    let mut draining = guard.signal();
    loop {
        tokio::select! {
            _ = &mut draining => {
                going_away(&mut socket, &guard).await;
                return;
            }
            message = socket.recv() => match message {
                Some(Ok(Message::Text(text))) => {
                    if socket.send(Message::Text(text)).await.is_err() {
                        return;
                    }
                }
                Some(Ok(Message::Close(_))) | Some(Err(_)) | None => return,
                Some(Ok(_)) => {}
            },
        }
    }
}

/// Sends close code 1001 and waits for the client's close reply, for at most the long-lived
/// deadline.
async fn going_away(socket: &mut WebSocket, guard: &LongLivedGuard) {
    let close = CloseFrame {
        code: close_code::AWAY,
        reason: "server shutting down".into(),
    };
    if socket.send(Message::Close(Some(close))).await.is_err() {
        return;
    }
    let reply = async {
        while let Some(Ok(message)) = socket.recv().await {
            if matches!(message, Message::Close(_)) {
                break;
            }
        }
    };
    tokio::select! {
        _ = reply => {}
        _ = guard.deadline() => {}
    }
}

#[tokio::main]
async fn main() {
    let shutdown = Shutdown::new();
    // SIGTERM or Ctrl-C starts it (no lame duck: this example has no readiness probe);
    // drain up to 10 s; a second signal forces.
    let sequence = ShutdownSequence::builder(shutdown)
        .lame_duck(Duration::ZERO)
        .drain_timeout(Duration::from_secs(10))
        .budget(Duration::from_secs(15))
        .build()
        .unwrap();
    let app = Router::new()
        .route("/ws", get(upgrade))
        .with_state(shutdown)
        .layer(shutdown.layer());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:3001")
        .await
        .unwrap();
    println!("listening on ws://{}/ws", listener.local_addr().unwrap());
    let server = tokio::spawn(
        axum::serve(listener, app)
            .with_graceful_shutdown(shutdown.closing())
            .into_future(),
    );

    let report = sequence.run().await;
    println!("{report}");
    // Upgraded sockets have left axum; bound the wait for anything else still open.
    if let Ok(served) = tokio::time::timeout(Duration::from_secs(1), server).await {
        served.unwrap().unwrap();
    }
    std::process::exit(if report.is_clean() { 0 } else { 1 });
}
