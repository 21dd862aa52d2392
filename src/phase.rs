//! The shutdown phases.

use std::fmt;

/// Where a server is in its shutdown. Phases only move forward.
///
/// ```text
/// Serving ──▶ LameDuck ──▶ Draining ──▶ Drained | TimedOut
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[repr(u8)]
pub enum Phase {
    /// Normal operation: readiness is green and every request is admitted.
    Serving = 0,
    /// Shutdown has begun: readiness fails so load balancers stop routing here, but requests
    /// are still admitted and served normally.
    LameDuck = 1,
    /// Admission is closed: new requests are rejected and the in-flight ones are awaited.
    Draining = 2,
    /// Every request admitted before draining began has finished.
    Drained = 3,
    /// The drain deadline passed (or shutdown was forced) with requests still running; those
    /// are aborted.
    TimedOut = 4,
}

impl Phase {
    pub(crate) fn from_u8(value: u8) -> Phase {
        match value {
            0 => Phase::Serving,
            1 => Phase::LameDuck,
            2 => Phase::Draining,
            3 => Phase::Drained,
            _ => Phase::TimedOut,
        }
    }

    /// True from [`Phase::Draining`] on: new requests are no longer admitted.
    pub fn admission_closed(self) -> bool {
        self >= Phase::Draining
    }

    /// True from [`Phase::LameDuck`] on: readiness probes fail.
    pub fn shutting_down(self) -> bool {
        self >= Phase::LameDuck
    }

    /// The lower-case name used in logs and reports.
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Serving => "serving",
            Phase::LameDuck => "lame_duck",
            Phase::Draining => "draining",
            Phase::Drained => "drained",
            Phase::TimedOut => "timed_out",
        }
    }
}

impl fmt::Display for Phase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
