//! Every way a request can end returns the in-flight count to zero, on every server the
//! crate is used with: `axum::serve`, `tower_drain::server::serve`, hyper-util's automatic
//! connection builder on its own, and tonic's server, over HTTP/1 and HTTP/2 where each
//! speaks it.
//!
//! The ways a request ends: its body sent whole; its body failing or panicking mid-stream;
//! its client closing the connection or cancelling the stream (`RST_STREAM`) before the
//! response head or mid-body; its handler panicking, with and without a panic catcher; a
//! timeout layer dropping it, outside the crate's layer and inside it; a load shedder
//! turning it away; an upgrade; a `HEAD`, `204` or `304` whose body the server never sends;
//! a body the client's flow control never lets the server poll; and a request refused while
//! draining.
//!
//! The count is read the crate's own way: a drain resolving `Drained` with nothing still
//! running, `in_flight()` where nothing races it, or the server returning at the drain
//! deadline. No sleeps: the test waits on the app's gate, the client's bytes and the drain.

#[path = "../support/mod.rs"]
mod support;

mod app;
mod client;
mod servers;
mod stacks;

mod bodiless;
mod endings;
mod layers;

use std::fmt;
use std::time::Duration;

use tower_drain::{Drain, DrainOutcome, DrainReport, Shutdown};

use app::App;
use servers::{start, On, Running};
use stacks::Stack;
use support::bounded;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A drain timeout no passing test reaches.
const LONG: Duration = Duration::from_secs(600);

/// A fresh controller, app and server with `stack` around the app.
async fn serve(on: On, stack: Stack) -> (App, Running) {
    let app = App::new(Shutdown::new());
    let running = start(on.0, app.shutdown, stack.build(app.clone())).await;
    (app, running)
}

/// Awaits `drain` and checks that every request it waited for ended: the count is back at
/// zero.
async fn drained(on: impl fmt::Display, drain: Drain, shutdown: Shutdown) -> DrainReport {
    let report = bounded(&format!("{on}: the drain"), drain).await;
    assert_eq!(report.outcome, DrainOutcome::Drained, "{on}: {report}");
    assert_eq!(report.still_running, 0, "{on}: {report}");
    assert_eq!(
        report.completed, report.in_flight_at_start,
        "{on}: {report}"
    );
    assert_eq!(shutdown.in_flight(), 0, "{on}");
    report
}

/// Begins the drain and checks that the count gets back to zero.
async fn back_to_zero(on: On, shutdown: Shutdown) -> DrainReport {
    drained(on, shutdown.drain(LONG).unwrap(), shutdown).await
}
