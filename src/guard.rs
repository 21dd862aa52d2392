//! The in-flight guard: one admitted request or unit of background work.

use std::fmt;

use crate::core::Core;

/// Counts one request, or one piece of background work, as in flight until it is dropped.
///
/// The middleware keeps one inside each admitted request's response future and then its
/// response body, so the count lasts until the body has been sent or dropped. Obtain one for
/// other work with [`Shutdown::guard`](crate::Shutdown::guard): a spawned job, an upgraded
/// WebSocket connection. The drain waits for it like for a request.
///
/// Dropping it is the release: there is no other way to end it, and no way to end it twice.
pub struct InFlightGuard {
    core: &'static Core,
    /// The counter slot this guard was admitted on; releasing on the same slot keeps every
    /// slot non-negative.
    slot: usize,
}

impl InFlightGuard {
    pub(crate) fn new(core: &'static Core, slot: usize) -> Self {
        InFlightGuard { core, slot }
    }

    pub(crate) fn core(&self) -> &'static Core {
        self.core
    }

    /// True once the drain deadline passed (or shutdown was forced): work holding this guard
    /// should stop now. The middleware ends response bodies with an error at this point.
    #[inline]
    pub fn is_aborted(&self) -> bool {
        self.core.is_aborted()
    }
}

impl Drop for InFlightGuard {
    #[inline]
    fn drop(&mut self) {
        if self.core.counter.release(self.slot) {
            self.core.on_drained();
        }
    }
}

impl fmt::Debug for InFlightGuard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("InFlightGuard")
            .field("slot", &self.slot)
            .finish_non_exhaustive()
    }
}
