//! The canonical axum setup: an axum router that shuts down without losing a request.
//!
//! ```sh
//! cargo run --example axum                # serves on 127.0.0.1:3000; Ctrl-C or SIGTERM to stop
//! curl -N localhost:3000/events           # an SSE stream: ends with `event: shutdown`
//! curl -i 'localhost:3000/slow?ms=5000'   # in flight at the signal: still answered
//! ```

use std::collections::HashMap;
use std::convert::Infallible;
use std::error::Error;
use std::future::IntoFuture;
use std::time::Duration;

use axum::extract::Query;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::routing::get;
use axum::Router;
use futures_util::stream::{self, Stream};
use tokio::net::TcpListener;
use tower_drain::{Shutdown, ShutdownSequence};

#[tokio::main]
async fn main() -> Result<(), Box<dyn Error>> {
    let shutdown = Shutdown::new();
    // SIGTERM or Ctrl-C starts it: lame duck 2 s, drain up to 10 s; a second signal forces.
    let sequence = ShutdownSequence::builder(shutdown)
        .lame_duck(Duration::from_secs(2))
        .drain_timeout(Duration::from_secs(10))
        .budget(Duration::from_secs(15))
        .build()?;

    let app = Router::new()
        .route("/", get(|| async { "ok\n" }))
        .route("/slow", get(slow))
        .route("/events", get(events))
        // 200 while serving, 503 from the lame duck on: load balancers move away first.
        .route_service("/readyz", shutdown.readiness())
        .route_service("/livez", shutdown.liveness())
        // Counts every request until its response body ends; 503 once draining; ends SSE
        // streams with a final event when the drain begins. Probes pass through untouched.
        .layer(shutdown.layer().bypass(&["/readyz", "/livez"]));

    let listener = TcpListener::bind("127.0.0.1:3000").await?;
    println!("listening on http://{}", listener.local_addr()?);
    let server = axum::serve(listener, app)
        // When admission closes: stop accepting, GOAWAY on HTTP/2, close idle connections.
        .with_graceful_shutdown(shutdown.closing())
        .into_future();
    let server = tokio::spawn(server);

    let report = sequence.run().await;
    println!("{report}");

    // axum returns once its last connection has closed: at once when everything drained.
    // axum cannot close a connection itself, so bound the wait for one that nothing wakes
    // at the deadline (a stalled handler). `tower_drain::server::serve` (feature
    // `hyper-server`) closes those itself.
    match tokio::time::timeout(Duration::from_secs(1), server).await {
        Ok(served) => served??,
        Err(_) => println!("connections still open after the drain; exiting anyway"),
    }
    std::process::exit(if report.is_clean() { 0 } else { 1 })
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
