//! A WebSocket held by a `LongLivedGuard` is closed with 1001 on drain, and the drain waits
//! for its task to end.

mod support;

use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::{close_code, CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::State;
use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use futures_util::{FutureExt, SinkExt, StreamExt};
use support::http::serve_until_closing;
use support::BOUND;
use tokio::sync::Semaphore;
use tokio::time::timeout;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::Message as ClientMessage;
use tower_drain::{DrainOutcome, LongLivedGuard, LongLivedKind, Shutdown};

const LONG: Duration = Duration::from_secs(60);

#[derive(Clone)]
struct Ctx {
    shutdown: Shutdown,
    /// The socket task holds its guard until the test adds a permit.
    release: Arc<Semaphore>,
}

async fn upgrade(State(ctx): State<Ctx>, ws: WebSocketUpgrade) -> Response {
    let Some(guard) = ctx
        .shutdown
        .long_lived_guard(LongLivedKind::Upgrade, Method::GET, "/ws")
    else {
        return StatusCode::SERVICE_UNAVAILABLE.into_response();
    };
    ws.on_upgrade(move |socket| echo(socket, guard, ctx.release))
}

/// The example's socket task, plus a hold at the end so the test can see the drain wait.
async fn echo(mut socket: WebSocket, guard: LongLivedGuard, release: Arc<Semaphore>) {
    let mut draining = guard.signal();
    loop {
        tokio::select! {
            _ = &mut draining => {
                let close = CloseFrame { code: close_code::AWAY, reason: "server shutting down".into() };
                socket.send(Message::Close(Some(close))).await.unwrap();
                while let Some(Ok(message)) = socket.recv().await {
                    if matches!(message, Message::Close(_)) {
                        break;
                    }
                }
                break;
            }
            message = socket.recv() => match message {
                Some(Ok(Message::Text(text))) => socket.send(Message::Text(text)).await.unwrap(),
                _ => break,
            },
        }
    }
    // The connection is closed; the task has clean-up left before it ends.
    drop(socket);
    let _permit = release.acquire().await.unwrap();
    drop(guard);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_gets_close_1001_and_guard_holds_drain_until_task_ends() {
    let shutdown = Shutdown::new();
    let release = Arc::new(Semaphore::new(0));
    let ctx = Ctx {
        shutdown,
        release: release.clone(),
    };
    let app = Router::new()
        .route("/ws", get(upgrade))
        .with_state(ctx)
        .layer(shutdown.layer());
    let server = serve_until_closing(app, shutdown).await;

    let url = format!("ws://{}/ws", server.addr);
    let (mut client, _) = timeout(BOUND, tokio_tungstenite::connect_async(url))
        .await
        .unwrap()
        .unwrap();
    client.send(ClientMessage::text("hello")).await.unwrap();
    let echoed = timeout(BOUND, client.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(echoed, ClientMessage::text("hello"));
    // The upgrade's HTTP response is over; only the guard counts the socket now.
    assert_eq!(shutdown.in_flight(), 1);
    assert_eq!(shutdown.long_lived(), 1);

    let mut drain = Box::pin(shutdown.drain(LONG).unwrap());
    let closed = timeout(BOUND, client.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let ClientMessage::Close(Some(frame)) = closed else {
        panic!("expected a close frame, got {closed:?}");
    };
    assert_eq!(frame.code, CloseCode::Away, "1001 going away");
    // Reading on lets tungstenite send the close reply; the stream then ends.
    assert!(timeout(BOUND, client.next()).await.unwrap().is_none());

    // The socket task still holds its guard: the drain must still be waiting.
    assert!(
        (&mut drain).now_or_never().is_none(),
        "drain waits for the socket task"
    );
    assert_eq!(shutdown.in_flight(), 1);

    release.add_permits(1);
    let report = timeout(BOUND, drain).await.unwrap();
    assert_eq!(report.outcome, DrainOutcome::Drained);
    assert!(report.is_drained(), "{report}");
    assert_eq!(shutdown.long_lived(), 0);
    timeout(BOUND, server.task).await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_task_ignoring_the_signal_is_cut_at_the_long_lived_deadline_and_named() {
    let shutdown = Shutdown::new();
    shutdown.set_long_lived_grace(Duration::from_millis(100));
    // A task that never looks at the signal, but does stop at the guard's deadline.
    let guard = shutdown
        .long_lived_guard(LongLivedKind::Upgrade, Method::GET, "/ws/stubborn")
        .unwrap();
    let task = tokio::spawn(async move {
        guard.deadline().await;
        drop(guard);
    });
    let report = timeout(BOUND, shutdown.drain(LONG).unwrap()).await.unwrap();
    assert_eq!(report.long_lived.len(), 1, "{report}");
    assert_eq!(report.long_lived[0].kind, LongLivedKind::Upgrade);
    assert_eq!(report.long_lived[0].path.as_deref(), Some("/ws/stubborn"));
    assert_eq!(report.outcome, DrainOutcome::Drained);
    task.await.unwrap();
    assert!(shutdown
        .long_lived_guard(LongLivedKind::Upgrade, Method::GET, "/")
        .is_none());
}
