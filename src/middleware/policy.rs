//! What a layer asks the engine to do; `Copy`, so cloning a service costs nothing.

use std::time::Duration;

use http::Request;

use crate::long_lived::Track;

/// The per-layer choices. Kept `Copy` (no `Arc`, no allocation) because axum clones the
/// service for every request.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Policy {
    /// Count admitted requests until their response body ends.
    pub(crate) count: bool,
    /// Answer requests with 503 (or gRPC UNAVAILABLE) once admission has closed.
    pub(crate) reject: bool,
    /// `Retry-After` on rejections, in whole seconds.
    pub(crate) retry_after_secs: u64,
    /// Body of a plain-HTTP rejection.
    pub(crate) message: &'static str,
    /// Exact request paths never counted nor rejected: health probes. Emptied in a service
    /// that has been ready without its inner service while draining (see
    /// `DrainService::ready_to_reject`).
    pub(crate) bypass: &'static [&'static str],
    /// Which responses are tracked as long-lived.
    pub(crate) track: Track,
}

impl Policy {
    pub(crate) const fn new(count: bool, reject: bool) -> Self {
        Policy {
            count,
            reject,
            retry_after_secs: 1,
            message: "service is shutting down\n",
            bypass: &[],
            track: Track::Off,
        }
    }

    pub(crate) fn retry_after(mut self, after: Duration) -> Self {
        // Retry-After carries whole seconds; round up so a sub-second value never reads as 0.
        // Saturating: `Duration::MAX` must not overflow (a panic, or a wrap to "retry now").
        self.retry_after_secs = after
            .as_secs()
            .saturating_add(u64::from(after.subsec_nanos() > 0));
        self
    }

    #[inline]
    pub(crate) fn bypasses<B>(&self, request: &Request<B>) -> bool {
        // Empty by default: a length check, no string compare, on the hot path.
        !self.bypass.is_empty() && self.bypass.contains(&request.uri().path())
    }
}
