//! `LongLivedGuard` and the controller's long-lived methods.

use std::fmt;
use std::future::Future;
use std::time::Duration;

use http::Method;

use super::{DrainSignal, LongLivedKind, Registration};
use crate::guard::InFlightGuard;
use crate::Shutdown;

/// Holds an upgraded connection (or other long-lived work outside a response body) in
/// flight and in the long-lived registry until dropped.
///
/// An upgraded WebSocket leaves the HTTP server's view once the `101` response is sent, so
/// nothing else would keep the drain waiting for it. Move this guard into the connection's
/// task, close the connection when [`signal`](LongLivedGuard::signal) fires (for a WebSocket:
/// close code 1001, going away), and drop the guard when the task ends.
pub struct LongLivedGuard {
    // Dropped in declaration order: the entry leaves the registry before the count drops,
    // so a report taken at the zero edge never lists finished work.
    _registration: Registration,
    in_flight: InFlightGuard,
}

impl LongLivedGuard {
    fn shutdown(&self) -> Shutdown {
        Shutdown {
            core: self.in_flight.core(),
        }
    }

    /// Resolves when the drain begins: time to close the connection.
    pub fn signal(&self) -> DrainSignal {
        self.shutdown().signal()
    }

    /// True once the drain has begun.
    pub fn is_draining(&self) -> bool {
        self.shutdown().phase().admission_closed()
    }

    /// Resolves at the long-lived deadline (or when the drain is cut short): the connection
    /// is now listed in the report as cut, and should be dropped without further ceremony.
    pub fn deadline(&self) -> impl Future<Output = ()> + Send + Sync + 'static {
        self.in_flight.core().long_lived.expired().cancelled()
    }
}

impl fmt::Debug for LongLivedGuard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LongLivedGuard")
            .field("draining", &self.is_draining())
            .finish_non_exhaustive()
    }
}

// === impl Shutdown (long-lived) ===

impl Shutdown {
    /// Long-lived responses (and [`LongLivedGuard`]s) in progress now. They are also counted
    /// in [`in_flight`](Shutdown::in_flight), since the drain waits for them too.
    pub fn long_lived(&self) -> usize {
        self.core.long_lived.count()
    }

    /// A signal that resolves when the drain begins; for long-poll handlers and the tasks of
    /// upgraded connections.
    pub fn signal(&self) -> DrainSignal {
        DrainSignal::new(*self)
    }

    /// How long after the drain begins long-lived responses may keep running before they are
    /// aborted and listed in the report. Never later than the drain timeout.
    ///
    /// The default is half the drain timeout: long enough for streams that cannot resume to
    /// finish, while leaving the other half for what is aborted to unwind and for short
    /// requests. Has no effect once the drain has begun.
    ///
    /// A zero grace asks long-lived responses to finish and cuts at once whatever cannot:
    /// an event stream between events still ends with its final event, a long-poll that
    /// answers its [`DrainSignal`] at once still sends that answer, whichever the server gets
    /// to first; an event stream inside an event, a stream kept until the deadline and a
    /// long-poll still waiting are cut. A [`LongLivedGuard`]'s `signal()` and `deadline()`
    /// then fire together, so an upgraded connection that needs a round trip to close (a
    /// WebSocket's close handshake) is listed as cut even if it closes cleanly.
    pub fn set_long_lived_grace(&self, grace: Duration) {
        self.core.long_lived.set_grace(grace);
    }

    /// Counts long-lived work outside a response body (an upgraded WebSocket's task) as in
    /// flight, and lists it in the long-lived registry as `kind`, `method` `path`, until the
    /// returned guard is dropped.
    ///
    /// Returns `None` once admission has closed: do not start the work.
    pub fn long_lived_guard(
        &self,
        kind: LongLivedKind,
        method: Method,
        path: impl Into<String>,
    ) -> Option<LongLivedGuard> {
        let in_flight = self.guard()?;
        let registry = &self.core.long_lived;
        Some(LongLivedGuard {
            _registration: registry.register(kind, Some(method), Some(path.into())),
            in_flight,
        })
    }
}
