//! What a drain reports.

use std::fmt;
use std::time::Duration;

/// How a drain ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(
    feature = "serde",
    derive(serde::Serialize),
    serde(rename_all = "snake_case")
)]
pub enum DrainOutcome {
    /// Everything admitted before draining began finished.
    Drained,
    /// The deadline passed (or shutdown was forced) with work still running; it was aborted.
    TimedOut,
}

impl DrainOutcome {
    /// `"drained"` or `"timed_out"`.
    pub fn as_str(self) -> &'static str {
        match self {
            DrainOutcome::Drained => "drained",
            DrainOutcome::TimedOut => "timed_out",
        }
    }
}

impl fmt::Display for DrainOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a [`Drain`](crate::Drain) saw, from the moment admission closed to its outcome.
///
/// Every `Drain` of one [`Shutdown`](crate::Shutdown) resolves to the same report.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[non_exhaustive]
pub struct DrainReport {
    /// Drained, or timed out.
    pub outcome: DrainOutcome,
    /// True when the drain was ended early by [`Shutdown::force`](crate::Shutdown::force).
    pub forced: bool,
    /// From admission closing to the outcome.
    #[cfg_attr(
        feature = "serde",
        serde(rename = "elapsed_ms", serialize_with = "crate::serde_fields::millis")
    )]
    pub elapsed: Duration,
    /// Requests and guards in flight when admission closed.
    pub in_flight_at_start: usize,
    /// Of those, how many finished before the outcome.
    pub completed: usize,
    /// Requests rejected because admission was closed, up to the outcome.
    pub rejected: u64,
    /// Still running at the outcome, and so aborted; zero when drained.
    pub still_running: usize,
    /// Long-lived responses (and [`LongLivedGuard`](crate::LongLivedGuard)s) still running at
    /// the long-lived deadline, or at a timed-out outcome, and so aborted; oldest first. One
    /// that was sent whole after all is not here: an event stream that could still end
    /// cleanly with its final event, or an answer that came as the deadline passed.
    ///
    /// The outcome can be `Drained` with entries here: the long-lived deadline cut them, and
    /// everything then finished before the drain timeout.
    pub long_lived: Vec<crate::LongLivedEntry>,
}

impl DrainReport {
    /// True when nothing was cut short: drained, and no long-lived response was aborted at
    /// the long-lived deadline.
    pub fn is_drained(&self) -> bool {
        self.outcome == DrainOutcome::Drained && self.long_lived.is_empty()
    }

    /// The figures every text form of a report shows, in one wording.
    pub(crate) fn write_counts(&self, out: &mut impl fmt::Write) -> fmt::Result {
        write!(
            out,
            "{} in flight at start, {} completed, {} still running, {} rejected",
            self.in_flight_at_start, self.completed, self.still_running, self.rejected
        )
    }

    /// The long-lived responses cut, in every text form of a report; nothing when none was.
    /// A drain can end `Drained` with some cut, and this is then all that says why it is not
    /// clean.
    pub(crate) fn write_long_lived(&self, out: &mut impl fmt::Write) -> fmt::Result {
        if !self.long_lived.is_empty() {
            write!(out, "; {} long-lived cut:", self.long_lived.len())?;
            for entry in &self.long_lived {
                write!(out, " [{entry}]")?;
            }
        }
        Ok(())
    }
}

impl fmt::Display for DrainReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.outcome {
            DrainOutcome::Drained => write!(f, "drained in {:?}", self.elapsed)?,
            DrainOutcome::TimedOut if self.forced => write!(f, "forced after {:?}", self.elapsed)?,
            DrainOutcome::TimedOut => write!(f, "timed out after {:?}", self.elapsed)?,
        }
        f.write_str(": ")?;
        self.write_counts(f)?;
        self.write_long_lived(f)
    }
}
