//! What the integration tests share: bounded waits, a gate that holds handlers in flight, real
//! servers and clients on 127.0.0.1, and byte-level HTTP/1 and event-stream helpers for checks
//! a pooling client would hide, and the demo server run as a child process.
//!
//! Every test crate compiles all of it and uses its own part.
#![allow(dead_code)]

pub mod demo;
pub mod example;
pub mod gate;
pub mod http;
pub mod pause;
pub mod pending;
pub mod raw;
pub mod sse;

use std::future::Future;
use std::time::Duration;

use ::http::Method;
use tokio::task::JoinHandle;
use tower_drain::{
    DrainReport, HookOutcome, LongLivedKind, SequenceBuilder, Shutdown, ShutdownReport,
    ShutdownSequence,
};

/// The bound on every wait. Generous: it only turns a hang into a failure.
pub const BOUND: Duration = Duration::from_secs(30);

/// A current-thread runtime on the paused clock, which moves only when the runtime is idle,
/// and then only to its own next timer: deadlines pass at once, and in order, with no real
/// wait.
pub fn paused_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .unwrap()
}

/// Awaits `future`, failing the test with `what` if it takes longer than [`BOUND`].
pub async fn bounded<F: Future>(what: &str, future: F) -> F::Output {
    bounded_for(BOUND, what, future).await
}

/// Awaits `future`, failing the test with `what` if it takes longer than `limit`: for the
/// few waits that are longer by design (thousands of connections, a million requests).
pub async fn bounded_for<F: Future>(limit: Duration, what: &str, future: F) -> F::Output {
    tokio::time::timeout(limit, future)
        .await
        .unwrap_or_else(|_| panic!("hung: {what} did not finish within {limit:?}"))
}

/// A sequence started only by hand, after `lame_duck`, whose ten-minute drain and hour-long
/// budget no test waits out: the tests end it some other way.
pub fn by_hand(shutdown: Shutdown, lame_duck: Duration) -> SequenceBuilder {
    ShutdownSequence::builder(shutdown)
        .lame_duck(lame_duck)
        .drain_timeout(Duration::from_secs(600))
        .budget(Duration::from_secs(3600))
        .no_signals()
}

/// Each hook's name and outcome, in the order the sequence ran them.
pub fn hook_outcomes(report: &ShutdownReport) -> Vec<(&str, HookOutcome)> {
    report
        .hooks
        .iter()
        .map(|hook| (hook.name.as_str(), hook.outcome.clone()))
        .collect()
}

/// Checks that the report lists as cut only the `/watch` guard that
/// [`drain_past_the_long_lived_deadline`] took to see the deadline pass: whatever else was
/// long-lived ended whole.
pub fn assert_only_the_watcher_was_cut(report: &DrainReport) {
    let paths: Vec<_> = report
        .long_lived
        .iter()
        .map(|entry| entry.path.as_deref())
        .collect();
    assert_eq!(paths, [Some("/watch")], "{report}");
}

/// Begins a drain of `timeout` on a task of its own and returns once its long-lived deadline
/// has passed. A guard named `GET /watch` is taken first, only to see that deadline pass:
/// the report lists it as cut.
pub async fn drain_past_the_long_lived_deadline(
    shutdown: Shutdown,
    timeout: Duration,
) -> JoinHandle<DrainReport> {
    let watcher = shutdown
        .long_lived_guard(LongLivedKind::Upgrade, Method::GET, "/watch")
        .unwrap();
    let drain = tokio::spawn(shutdown.drain(timeout).unwrap());
    bounded("the long-lived deadline", watcher.deadline()).await;
    drain
}
