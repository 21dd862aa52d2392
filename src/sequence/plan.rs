//! What a sequence will do, as configured: shared by the builder and the built sequence.

use std::fmt;
use std::time::Duration;

use super::hook::Hook;
use crate::Shutdown;

/// The controller, the durations and the hooks of one sequence.
pub(super) struct Plan {
    pub(super) shutdown: Shutdown,
    pub(super) lame_duck: Duration,
    pub(super) drain_timeout: Duration,
    pub(super) budget: Duration,
    pub(super) hooks: Vec<Hook>,
}

impl Plan {
    /// The lame-duck delay, drain timeout and hook timeouts added up.
    ///
    /// Callers check each term against its bound first (at most a day each), so the sum
    /// cannot overflow.
    pub(super) fn planned(&self) -> Duration {
        self.lame_duck
            + self.drain_timeout
            + self.hooks.iter().map(|hook| hook.timeout).sum::<Duration>()
    }
}

impl fmt::Debug for Plan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Plan")
            .field("lame_duck", &self.lame_duck)
            .field("drain_timeout", &self.drain_timeout)
            .field("budget", &self.budget)
            .field("hooks", &self.hooks.len())
            .finish()
    }
}
