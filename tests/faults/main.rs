//! Faults and bad input against a real hyper server on 127.0.0.1: clients that hang up at
//! any byte, handlers and bodies that panic or fail mid-stream, absurd and zero drain
//! timeouts, drains and forces repeated from many tasks, and requests racing every phase
//! change.
//!
//! Every case checks three things: the report says what happened, the in-flight count returns
//! to zero (awaited through the crate's own `Drain`, or by waiting for every server connection
//! to close), and nothing hangs (every wait is bounded by a generous `tokio::time::timeout`
//! that only fails the test).
//!
//! Faults in shutdown hooks (a hook that hangs, errors or panics) belong to the shutdown
//! sequence and are tested with it.

#[path = "../support/mod.rs"]
mod support;

mod clients;
mod server;

mod deadlines;
mod failing;
mod hang_ups;
mod ordering;
mod races;
mod repetition;
mod timeouts;

use std::time::Duration;

use bytes::Bytes;
use http::Method;
use http_body_util::combinators::BoxBody;
use tower_drain::{LongLivedGuard, LongLivedKind, Shutdown};

type BoxError = Box<dyn std::error::Error + Send + Sync>;
type Body = BoxBody<Bytes, BoxError>;

/// A drain timeout that a passing test never reaches.
const LONG_DRAIN: Duration = Duration::from_secs(120);

/// A long-lived guard, as an upgraded connection holds, registered on `runtime`'s clock.
fn upgrade_guard(runtime: &tokio::runtime::Runtime, shutdown: Shutdown) -> LongLivedGuard {
    let _entered = runtime.enter();
    shutdown
        .long_lived_guard(LongLivedKind::Upgrade, Method::GET, "/ws")
        .unwrap()
}
