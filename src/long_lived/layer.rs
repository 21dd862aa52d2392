//! `LongLivedLayer`: long-lived tracking on its own, for a whole app or one route.

use tower_layer::Layer;

use super::{LongLivedKind, OnDrain, Track, Tracking};
use crate::middleware::{DrainService, Policy};
use crate::Shutdown;

/// Tracks long-lived responses and asks them to finish when the drain begins.
///
/// [`Shutdown::layer`] already tracks server-sent events; this layer adds what it cannot
/// know on its own:
///
/// * [`LongLivedLayer::route`] marks a route long-lived. Every request through it is
///   registered from the start with its method and path (so reports name it), and its
///   handler finds a [`DrainSignal`](super::DrainSignal) in the request extensions. A body of
///   unknown length streamed by such a route runs until the long-lived deadline unless
///   [`on_drain`](LongLivedLayer::on_drain) says otherwise.
/// * [`LongLivedLayer::new`] tracks `text/event-stream` responses of whatever it wraps, for
///   a stack that counts with [`InFlightLayer`](crate::InFlightLayer) instead of
///   [`Shutdown::layer`].
///
/// It neither counts nor rejects: put it inside [`Shutdown::layer`], whose count is what the
/// drain waits for. Build it at start-up: the layer's settings are kept for the life of the
/// process (a few bytes per constructor or builder call), so that each request carries a
/// plain reference to them.
///
/// ```
/// use axum::{routing::get, Router};
/// use tower_drain::{LongLivedLayer, Shutdown};
///
/// async fn poll(signal: axum::Extension<tower_drain::DrainSignal>) -> &'static str {
///     tokio::select! {
///         _ = signal.0 => "draining\n",
///         _ = tokio::time::sleep(std::time::Duration::from_secs(60)) => "timeout\n",
///     }
/// }
///
/// let shutdown = Shutdown::new();
/// let app: Router = Router::new()
///     .route("/poll", get(poll).layer(LongLivedLayer::route(shutdown)))
///     .layer(shutdown.layer());
/// ```
#[derive(Debug, Clone)]
pub struct LongLivedLayer {
    shutdown: Shutdown,
    policy: Policy,
}

impl LongLivedLayer {
    /// Tracks the `text/event-stream` responses of the service it wraps.
    pub fn new(shutdown: Shutdown) -> Self {
        // It does not count, so there is no guard to find the controller in: keep it here.
        let tracking = Tracking::DEFAULT.with(|tracking| tracking.shutdown = Some(shutdown));
        Self::with(shutdown, Track::Detect(tracking))
    }

    /// Marks every request through it long-lived: for a route, with axum's `route_layer` or
    /// `MethodRouter::layer`. A request marked twice (a route's own layer under the router's
    /// `route_layer`) is tracked once, by the outer mark and its settings. A response that a
    /// layer further in tracks by its content type or a rule ([`LongLivedLayer::new`],
    /// [`Shutdown::layer`]) is tracked by that layer, with its settings, and named by this
    /// mark: one entry, with this route's method and path.
    pub fn route(shutdown: Shutdown) -> Self {
        Self::with(shutdown, Track::Route(Tracking::DEFAULT))
    }

    fn with(shutdown: Shutdown, track: Track) -> Self {
        let mut policy = Policy::new(false, false);
        policy.track = track;
        LongLivedLayer { shutdown, policy }
    }

    fn change(mut self, change: impl FnOnce(&mut Tracking)) -> Self {
        self.policy.track = self.policy.track.with(change);
        self
    }

    /// The event sent before a server-sent event stream ends on drain: a whole event, ending
    /// in a blank line. Default
    /// [`DEFAULT_FINAL_EVENT`](super::DEFAULT_FINAL_EVENT); `None` ends the stream without one.
    pub fn final_event(self, event: Option<&'static str>) -> Self {
        let event = event.map(super::whole_event);
        self.change(|tracking| tracking.final_event = event)
    }

    /// What the body does when the drain begins; by default [`OnDrain::Finish`] for
    /// server-sent events and [`OnDrain::KeepUntilDeadline`] for everything else. A response
    /// of known length (a long-poll's answer) is always sent whole, until the long-lived
    /// deadline: ending it early would break its `Content-Length`. One that has not begun by
    /// then (the handler answered as the deadline passed) is sent whole too: cut before its
    /// first byte, it would leave the client no response at all.
    pub fn on_drain(self, on_drain: OnDrain) -> Self {
        self.change(|tracking| tracking.on_drain = Some(on_drain))
    }

    /// Also tracks the responses `predicate` picks (for [`LongLivedLayer::new`]); see
    /// [`Predicate`](super::Predicate).
    pub fn when(self, predicate: super::Predicate) -> Self {
        self.change(|tracking| tracking.predicate = Some(predicate))
    }

    /// The kind reports give this route's responses, instead of one read from the response.
    /// Only the name changes: what a body does on drain still follows what it is (an event
    /// stream finishes with the final event, other streams keep until the deadline).
    pub fn kind(self, kind: LongLivedKind) -> Self {
        self.change(|tracking| tracking.kind = Some(kind))
    }
}

impl<S> Layer<S> for LongLivedLayer {
    type Service = DrainService<S>;

    fn layer(&self, inner: S) -> DrainService<S> {
        DrainService::new(inner, self.shutdown, self.policy)
    }
}
