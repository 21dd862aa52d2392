//! Health probes: readiness (fails from lame duck on) and liveness (green until exit).
//!
//! Both are plain tower services with a fixed answer and a static body, so they mount anywhere:
//! axum's `route_service`, a tonic server's extra routes, or a hand-written hyper service.
//! Mount them on paths the layer bypasses (`shutdown.layer().bypass(&["/readyz", "/livez"])`)
//! so probes are never counted and never rejected while draining.
//!
//! ```
//! use axum::{routing::get, Router};
//! use tower_drain::Shutdown;
//!
//! let shutdown = Shutdown::new();
//! let app: Router = Router::new()
//!     .route("/", get(|| async { "ok\n" }))
//!     .route_service("/readyz", shutdown.readiness())
//!     .route_service("/livez", shutdown.liveness())
//!     .layer(shutdown.layer().bypass(&["/readyz", "/livez"]));
//! ```

use std::convert::Infallible;
use std::fmt;
use std::future::{ready, Ready};
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};

use http::header::{HeaderValue, CACHE_CONTROL};
use http::{Request, Response, StatusCode};
use tower_service::Service;

use crate::static_body::{fit_to, plain_text, StaticBody};
use crate::Shutdown;

/// The readiness flags the application sets by hand; the phase is the other input.
///
/// Relaxed loads and stores throughout: each flag is an independent yes/no read by probes,
/// publishes no other data, and a probe answer is a snapshot either way.
#[derive(Debug)]
pub(crate) struct ReadinessFlags {
    /// False while start-up holds readiness down, until [`Shutdown::mark_ready`].
    started: AtomicBool,
    /// True while [`Shutdown::set_maintenance`] holds readiness down.
    maintenance: AtomicBool,
}

impl ReadinessFlags {
    pub(crate) const fn new() -> Self {
        ReadinessFlags {
            started: AtomicBool::new(true),
            maintenance: AtomicBool::new(false),
        }
    }
}

/// Why readiness fails, or `None` when ready. Most decisive reason first.
fn not_ready_reason(shutdown: &Shutdown) -> Option<&'static str> {
    let flags = &shutdown.core.readiness;
    if shutdown.phase().shutting_down() {
        Some("shutting down\n")
    } else if !flags.started.load(Ordering::Relaxed) {
        Some("starting\n")
    } else if flags.maintenance.load(Ordering::Relaxed) {
        Some("maintenance\n")
    } else {
        None
    }
}

// === impl Shutdown (probes) ===

impl Shutdown {
    /// The readiness probe service: `200 ready` while serving, `503` from
    /// [`Phase::LameDuck`](crate::Phase::LameDuck) on, and also while start-up holds it down
    /// ([`Shutdown::hold_until_ready`]) or maintenance is on ([`Shutdown::set_maintenance`]).
    /// The body names the reason (`shutting down`, `starting`, `maintenance`).
    pub fn readiness(&self) -> Readiness {
        Readiness { shutdown: *self }
    }

    /// The liveness probe service: `200 alive` whenever it is asked, until the process exits.
    /// Draining never fails it, so an orchestrator does not restart a server that is shutting
    /// down on purpose. Once the server stops accepting connections at drain start, no probe
    /// reaches it until the process exits: size the orchestrator's liveness threshold
    /// (period × failure threshold) above that whole time, the drain, the hooks and the wait
    /// for the server's connections; with a [`ShutdownSequence`](crate::ShutdownSequence),
    /// above its budget minus the lame duck.
    pub fn liveness(&self) -> Liveness {
        Liveness { _private: () }
    }

    /// Holds readiness down until [`Shutdown::mark_ready`], for start-up work (warming caches,
    /// connecting to a database) during which the server should get no traffic. Returns the
    /// controller, so it chains onto [`Shutdown::new`].
    pub fn hold_until_ready(self) -> Self {
        self.core.readiness.started.store(false, Ordering::Relaxed);
        self
    }

    /// Ends the start-up hold of [`Shutdown::hold_until_ready`]. Readiness turns green unless
    /// maintenance is on or shutdown has begun.
    pub fn mark_ready(&self) {
        self.core.readiness.started.store(true, Ordering::Relaxed);
    }

    /// Holds readiness down (`true`) or releases it (`false`) by hand, for maintenance: the
    /// load balancer stops routing here while requests keep being served. Releasing it never
    /// brings readiness back once shutdown has begun.
    pub fn set_maintenance(&self, on: bool) {
        self.core.readiness.maintenance.store(on, Ordering::Relaxed);
    }

    /// What the readiness probe answers now: serving, started and not in maintenance.
    pub fn is_ready(&self) -> bool {
        not_ready_reason(self).is_none()
    }
}

fn answer(status: StatusCode, body: &'static str) -> Response<StaticBody> {
    let mut response = plain_text(status, body);
    // A probe answer is only true now; no cache in between may replay it.
    response
        .headers_mut()
        .insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

// === impl Readiness ===

/// The readiness probe from [`Shutdown::readiness`]. Accepts any request body; cloning it
/// copies a pointer.
#[derive(Clone, Copy)]
pub struct Readiness {
    shutdown: Shutdown,
}

impl<B> Service<Request<B>> for Readiness {
    type Response = Response<StaticBody>;
    type Error = Infallible;
    type Future = Ready<Result<Response<StaticBody>, Infallible>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let response = match not_ready_reason(&self.shutdown) {
            None => answer(StatusCode::OK, "ready\n"),
            Some(reason) => answer(StatusCode::SERVICE_UNAVAILABLE, reason),
        };
        ready(Ok(fit_to(&request, response)))
    }
}

impl fmt::Debug for Readiness {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Readiness")
            .field("ready", &self.shutdown.is_ready())
            .finish_non_exhaustive()
    }
}

// === impl Liveness ===

/// The liveness probe from [`Shutdown::liveness`]. Accepts any request body.
#[derive(Clone, Copy)]
pub struct Liveness {
    _private: (),
}

impl<B> Service<Request<B>> for Liveness {
    type Response = Response<StaticBody>;
    type Error = Infallible;
    type Future = Ready<Result<Response<StaticBody>, Infallible>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        ready(Ok(fit_to(&request, answer(StatusCode::OK, "alive\n"))))
    }
}

impl fmt::Debug for Liveness {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Liveness").finish_non_exhaustive()
    }
}
