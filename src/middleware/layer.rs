//! The three layers. Each wraps a service in a [`DrainService`] with its own policy.

use std::time::Duration;

use tower_layer::Layer;

use super::{DrainService, Policy};
use crate::long_lived::{Track, Tracking};
use crate::Shutdown;

/// Adds the builder methods shared by the layers that accept them.
macro_rules! policy_methods {
    (bypass) => {
        /// Requests whose path is exactly one of `paths` (health probes such as `/readyz` and
        /// `/livez`) are passed through: never counted, never rejected.
        ///
        /// One thing is done to them under a layer that counts ([`Shutdown::layer`],
        /// [`InFlightLayer`]): a gRPC stream on such a path (the health `Watch` that
        /// client-side health checking keeps open on every server) is ended once the drain
        /// is over, `Drained` or cut short, after passing on what it has ready, between two
        /// messages and without a status (its client reads UNKNOWN; gRPC-web: UNAVAILABLE).
        /// Left open, it would keep its connection, and the server's graceful shutdown,
        /// waiting after everything counted had finished. It is never registered as
        /// long-lived; each gRPC response on such a path costs an allocation (about 100
        /// bytes), and a stream that waits one more for its wake-up.
        ///
        /// One exception while draining, under a layer that rejects: once the service inside
        /// the layer has had no room (a full concurrency limit or buffer), the layer is ready
        /// without it, so that late requests are refused at once, and from then on refuses
        /// probes too, like any late request, since a service that is not ready must not be
        /// called. That lasts for the copy of the service that was polled: servers copy it
        /// per connection or per request, but a `Buffer` outside the layer keeps one copy,
        /// whose probes are then refused until exit, liveness included. Route probes around
        /// such a stack, or put the limit outside the layer.
        pub fn bypass(mut self, paths: &'static [&'static str]) -> Self {
            self.policy.bypass = paths;
            self
        }
    };
    (reject) => {
        /// The `Retry-After` sent with rejections (default one second; rounded up to whole
        /// seconds, as the header requires).
        pub fn retry_after(mut self, after: Duration) -> Self {
            self.policy = self.policy.retry_after(after);
            self
        }

        /// The body of a plain-HTTP rejection (default `"service is shutting down\n"`).
        pub fn message(mut self, message: &'static str) -> Self {
            self.policy.message = message;
            self
        }
    };
}

/// The combined layer from [`Shutdown::layer`]: admission, rejection once draining, and
/// whole-response in-flight counting, in one pass.
///
/// Admission and counting are one step, so a request is either counted before draining
/// begins (and awaited) or rejected; none slips between the two.
///
/// Put one counting layer on each request's path. A request under two (a router carrying
/// this layer nested in one that carries it too) counts twice in [`Shutdown::in_flight`]
/// and the drain's figures: telling the layers apart would take a mark on every request,
/// which allocates. Routers merged with axum's `Router::merge` keep each its own layers, so
/// merging routers that each carry it counts each request once.
/// Put layers that must see every answer, such as CORS, outside this one, so that its
/// refusals pass through them.
#[derive(Debug, Clone)]
pub struct ShutdownLayer {
    shutdown: Shutdown,
    policy: Policy,
}

impl ShutdownLayer {
    /// The combined layer for `shutdown`.
    pub fn new(shutdown: Shutdown) -> Self {
        let mut policy = Policy::new(true, true);
        policy.track = Track::Detect(Tracking::DEFAULT);
        ShutdownLayer { shutdown, policy }
    }

    /// The event sent before a server-sent event (`text/event-stream`) response ends on drain:
    /// a whole event, ending in a blank line. Default
    /// [`DEFAULT_FINAL_EVENT`](crate::long_lived::DEFAULT_FINAL_EVENT); `None` ends the stream
    /// without one. Call it at start-up: the setting is kept for the life of the process.
    ///
    /// An event stream tracked by a [`LongLivedLayer`](crate::LongLivedLayer) inside this
    /// layer (a marked route) gets that layer's final event instead: set it there too.
    pub fn final_event(self, event: Option<&'static str>) -> Self {
        let event = event.map(crate::long_lived::whole_event);
        self.change_tracking(|tracking| tracking.final_event = event)
    }

    /// Also tracks as long-lived the responses `predicate` picks, besides
    /// `text/event-stream`; see [`Predicate`](crate::long_lived::Predicate). Call it at
    /// start-up: the setting is kept for the life of the process.
    pub fn long_lived_when(self, predicate: crate::long_lived::Predicate) -> Self {
        self.change_tracking(|tracking| tracking.predicate = Some(predicate))
    }

    fn change_tracking(mut self, change: impl FnOnce(&mut Tracking)) -> Self {
        self.policy.track = self.policy.track.with(change);
        self
    }

    policy_methods!(bypass);
    policy_methods!(reject);
}

/// Counts each request from admission until its response body ends, errors or is dropped.
///
/// It does not reject: once admission has closed, requests pass through uncounted. Pair it
/// with [`RejectWhenDrainingLayer`], or use [`Shutdown::layer`] which does both exactly.
///
/// When pairing, put this layer **outside** the rejecting one (first in a `ServiceBuilder`,
/// last in a chain of `Router::layer` calls): a request it admits is counted, and one it
/// does not is then rejected. The other order lets a request that passed the rejecting layer
/// just before the drain began run uncounted: the drain does not wait for it.
#[derive(Debug, Clone)]
pub struct InFlightLayer {
    shutdown: Shutdown,
    policy: Policy,
}

impl InFlightLayer {
    /// A counting layer for `shutdown`.
    pub fn new(shutdown: Shutdown) -> Self {
        InFlightLayer {
            shutdown,
            policy: Policy::new(true, false),
        }
    }

    policy_methods!(bypass);
}

/// Once admission has closed, answers every request with `503 Service Unavailable`,
/// `Retry-After` and (on HTTP/1) `Connection: close`; gRPC and gRPC-web calls get a
/// trailers-only response with `grpc-status: 14` (UNAVAILABLE), in the content type of their
/// protocol, encoding and codec. While draining, HTTP/1 responses it passes through also get
/// `Connection: close`.
///
/// With [`InFlightLayer`], put this layer inside it (see there), or use [`Shutdown::layer`].
#[derive(Debug, Clone)]
pub struct RejectWhenDrainingLayer {
    shutdown: Shutdown,
    policy: Policy,
}

impl RejectWhenDrainingLayer {
    /// A rejecting layer for `shutdown`.
    pub fn new(shutdown: Shutdown) -> Self {
        RejectWhenDrainingLayer {
            shutdown,
            policy: Policy::new(false, true),
        }
    }

    policy_methods!(bypass);
    policy_methods!(reject);
}

// Every layer wraps the service the same way; only the policy differs.
macro_rules! drain_service_layer {
    ($($layer:ty),+) => {$(
        impl<S> Layer<S> for $layer {
            type Service = DrainService<S>;

            fn layer(&self, inner: S) -> DrainService<S> {
                DrainService::new(inner, self.shutdown, self.policy)
            }
        }
    )+};
}

drain_service_layer!(ShutdownLayer, InFlightLayer, RejectWhenDrainingLayer);
