//! Graceful shutdown for tower servers that loses no request and never hangs.
//!
//! ```text
//!  Serving ──signal──▶ LameDuck ──delay──▶ Draining ──zero or timeout──▶ Drained / TimedOut
//!  readiness 200      readiness 503       readiness 503                 report
//!  admit all          admit all           reject new (503)              remaining aborted
//! ```
//!
//! * [`Shutdown`] is the controller: one per server, cheap to copy.
//! * [`Shutdown::layer`] is the middleware. It counts each request from admission until its
//!   response body has been sent or dropped, and answers 503 (gRPC: UNAVAILABLE) once
//!   admission has closed. Per request it costs one flag check and one compare-and-swap on a
//!   per-thread counter slot, and one atomic subtract when the body ends: no `Arc` clone, no
//!   lock, no allocation.
//! * [`Shutdown::closing`] resolves when admission closes; hand it to the server's own graceful
//!   shutdown so it stops accepting connections.
//! * [`Shutdown::drain`] closes admission and returns a [`Drain`] future that resolves the
//!   moment the last in-flight request ends, or at its timeout, with a [`DrainReport`]; a
//!   timeout over [`Drain::MAX_TIMEOUT`] (a day) is a [`DrainError`] that changes nothing.
//! * [`Shutdown::readiness`] and [`Shutdown::liveness`] are the health probes: readiness fails
//!   from the lame duck on, liveness stays green until exit.
//! * [`ShutdownSequence`] runs the whole timeline from a signal (lame duck, drain, ordered
//!   clean-up hooks, each bounded), checks it against a budget when built, and returns a
//!   [`ShutdownReport`].
//! * `server::serve` (cargo feature `hyper-server`) runs a tower service on plain hyper and
//!   drains its connections: GOAWAY on HTTP/2, idle keep-alive connections closed, what is
//!   left closed at the drain deadline.
//! * Long-lived responses do not hold the drain hostage ([`long_lived`]): server-sent event
//!   streams end between events after a final event with a `retry:` hint, long-polls get a
//!   [`DrainSignal`], WebSockets a [`LongLivedGuard`], and whatever cannot finish by the
//!   long-lived deadline is aborted and named in the report.
//! * Cargo features, all off by default: `hyper-server` (`server::serve`), `serde`
//!   (`Serialize` for the reports) and `metrics` (gauges and counters through the `metrics`
//!   facade, recorded at each phase change).
//!
//! # Example
//!
//! ```
//! use std::convert::Infallible;
//! use std::time::Duration;
//!
//! use http::{Request, Response, StatusCode};
//! use http_body_util::{BodyExt, Full};
//! use tower::{service_fn, Layer, ServiceExt};
//! use tower_drain::{DrainOutcome, Shutdown};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let shutdown = Shutdown::new();
//! let hello = service_fn(|_req: Request<()>| async {
//!     Ok::<_, Infallible>(Response::new(Full::new(&b"hello"[..])))
//! });
//! let service = shutdown.layer().layer(hello);
//!
//! // While serving, requests pass and are counted until their body is consumed.
//! let response = service.clone().oneshot(Request::new(())).await.unwrap();
//! assert_eq!(shutdown.in_flight(), 1);
//! let body = response.into_body().collect().await.unwrap().to_bytes();
//! assert_eq!(&body[..], b"hello");
//! assert_eq!(shutdown.in_flight(), 0);
//!
//! // Draining: nothing in flight, so the drain is over at once...
//! let report = shutdown.drain(Duration::from_secs(10)).unwrap().await;
//! assert_eq!(report.outcome, DrainOutcome::Drained);
//!
//! // ...and new requests are turned away.
//! let response = service.oneshot(Request::new(())).await.unwrap();
//! assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
//! # }
//! ```
#![deny(missing_docs)]
#![forbid(unsafe_code)]

mod core;
mod counter;
mod drain;
mod guard;
pub mod long_lived;
mod metrics;
pub mod middleware;
mod phase;
pub mod probe;
mod report;
pub mod sequence;
#[cfg(feature = "serde")]
mod serde_fields;
#[cfg(feature = "hyper-server")]
pub mod server;
mod shutdown;
mod static_body;
mod sync;

pub use drain::{Drain, DrainError};
pub use guard::InFlightGuard;
pub use long_lived::{
    DrainSignal, LongLivedEntry, LongLivedGuard, LongLivedKind, LongLivedLayer, OnDrain,
};
pub use middleware::body::Aborted;
pub use middleware::{InFlightLayer, RejectWhenDrainingLayer, ShutdownLayer};
pub use phase::Phase;
pub use probe::{Liveness, Readiness};
pub use report::{DrainOutcome, DrainReport};
pub use sequence::{
    HookOutcome, HookReport, SequenceBuilder, SequenceError, ShutdownReport, ShutdownSequence,
    ShutdownTrigger,
};
pub use shutdown::Shutdown;
pub use static_body::StaticBody;

// The README's complete example is compiled with the doctests (`no_run`: it waits for a
// signal). Its fragments are marked `ignore` and not compiled here: `tests/readme_excerpts.rs`
// checks that the server fragments are still found in `examples/`, which holds the complete
// programs, and compiles the other two itself.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
