//! The canonical axum setup: an axum router that shuts down without losing a request.
//!
//! ```sh
//! cargo run --example axum                # serves on 127.0.0.1:3000; Ctrl-C or SIGTERM to stop
//! curl -N localhost:3000/events           # an SSE stream: cut at the drain deadline
//! curl -i 'localhost:3000/slow?ms=5000'   # in flight at the signal: still answered
//! ```

use std::collections::HashMap;
use std::convert::Infallible;
use std::error::Error;
use std::future::IntoFuture;
use std::time::Duration;

use axum::extract::Query;
use axum::http::StatusCode;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::routing::get;
use axum::Router;
use futures_util::stream::{self, Stream};
use tokio::net::TcpListener;
use tower_drain::Shutdown;

const LAME_DUCK: Duration = Duration::from_secs(2);
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

#[tokio::main]
async fn main() -> Result<(), Box<dyn Error>> {
    let shutdown = Shutdown::new();

    let app = Router::new()
        .route("/", get(|| async { "ok\n" }))
        .route("/slow", get(slow))
        .route("/events", get(events))
        .route("/readyz", get(move || ready(shutdown)))
        .route("/livez", get(|| async { "ok\n" }))
        // Counts every request until its response body ends; 503 once draining.
        // Probes pass through: never counted, never rejected.
        .layer(shutdown.layer().bypass(&["/readyz", "/livez"]));

    let listener = TcpListener::bind("127.0.0.1:3000").await?;
    println!("listening on http://{}", listener.local_addr()?);
    let server = axum::serve(listener, app)
        // When admission closes: stop accepting, GOAWAY on HTTP/2, close idle connections.
        .with_graceful_shutdown(shutdown.closing())
        .into_future();
    let server = tokio::spawn(server);

    terminate().await;
    shutdown.begin_lame_duck();
    println!("lame duck: /readyz answers 503, requests still served");
    tokio::time::sleep(LAME_DUCK).await;

    // Closes admission and waits for the requests in flight, up to the timeout; past it,
    // what still runs (an SSE stream) is aborted.
    let report = shutdown.drain(DRAIN_TIMEOUT)?.await;
    println!("{report}");

    // axum returns once its last connection has closed: at once when everything drained,
    // just after the abort otherwise. axum cannot close a connection itself, so the bound
    // covers one that nothing wakes (an SSE stream with nothing to send). Serving the same
    // router with `tower_drain::server::serve` (feature `hyper-server`) needs no bound.
    match tokio::time::timeout(Duration::from_secs(1), server).await {
        Ok(served) => served??,
        Err(_) => println!("connections still open after the drain; exiting anyway"),
    }
    // Clean-up (pools, telemetry) goes here: no request needs them any more.
    std::process::exit(if report.is_drained() { 0 } else { 1 })
}

/// 200 while serving, 503 from lame duck on, so load balancers stop sending traffic here.
async fn ready(shutdown: Shutdown) -> (StatusCode, &'static str) {
    if shutdown.phase().shutting_down() {
        (StatusCode::SERVICE_UNAVAILABLE, "shutting down\n")
    } else {
        (StatusCode::OK, "ok\n")
    }
}

/// `/slow?ms=N`: answers after N milliseconds.
async fn slow(Query(query): Query<HashMap<String, String>>) -> String {
    let ms = query
        .get("ms")
        .and_then(|ms| ms.parse().ok())
        .unwrap_or(1000);
    tokio::time::sleep(Duration::from_millis(ms)).await;
    format!("slow {ms}\n")
}

/// `/events`: a tick every 100 ms, for ever.
async fn events() -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let ticks = stream::unfold(0u64, |i| async move {
        tokio::time::sleep(Duration::from_millis(100)).await;
        Some((Ok(Event::default().data(format!("tick {i}"))), i + 1))
    });
    Sse::new(ticks).keep_alive(KeepAlive::default())
}

/// Ctrl-C, or SIGTERM (what Kubernetes sends).
async fn terminate() {
    #[cfg(unix)]
    let sigterm = async {
        use tokio::signal::unix::{signal, SignalKind};
        signal(SignalKind::terminate())
            .expect("SIGTERM handler")
            .recv()
            .await;
    };
    #[cfg(not(unix))]
    let sigterm = std::future::pending::<()>();
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        () = sigterm => {}
    }
}
