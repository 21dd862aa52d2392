//! Why a sequence could not be built.

use std::error::Error;
use std::fmt;
use std::io;
use std::time::Duration;

/// Why [`SequenceBuilder::build`](super::SequenceBuilder::build) refused a configuration.
///
/// Every message names the numbers involved, so a wrong setting can be found from the log.
#[derive(Debug)]
#[non_exhaustive]
pub enum SequenceError {
    /// Lame-duck delay, drain timeout and hook timeouts add up to more than the budget.
    OverBudget {
        /// The lame-duck delay.
        lame_duck: Duration,
        /// The drain timeout.
        drain_timeout: Duration,
        /// Each hook's name and timeout, in order.
        hooks: Vec<(String, Duration)>,
        /// Their sum.
        needed: Duration,
        /// The budget it must fit in.
        budget: Duration,
    },
    /// A duration that must be positive is zero (`what` names it).
    Zero {
        /// Which setting.
        what: String,
    },
    /// A duration is longer than any real shutdown (`what` names it): most likely a unit
    /// mistake, such as milliseconds passed as seconds.
    TooLong {
        /// Which setting.
        what: String,
        /// The value given.
        value: Duration,
        /// The longest accepted.
        max: Duration,
    },
    /// Signal handlers are installed when the sequence is built, which needs a Tokio runtime.
    NoRuntime,
    /// A signal handler could not be installed.
    Signal {
        /// The signal's name.
        signal: &'static str,
        /// The operating system's error.
        source: io::Error,
    },
}

impl fmt::Display for SequenceError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SequenceError::OverBudget {
                lame_duck,
                drain_timeout,
                hooks,
                needed,
                budget,
            } => {
                write!(
                    f,
                    "shutdown sequence needs {needed:?} (lame duck {lame_duck:?} + drain timeout \
                     {drain_timeout:?}"
                )?;
                for (name, timeout) in hooks {
                    write!(f, " + hook `{name}` {timeout:?}")?;
                }
                write!(
                    f,
                    "), over its budget of {budget:?}; shorten a phase or raise the budget \
                     (and the grace period it mirrors, e.g. terminationGracePeriodSeconds)"
                )
            }
            SequenceError::Zero { what } => {
                write!(f, "{what} is zero; give it a positive duration")
            }
            SequenceError::TooLong { what, value, max } => write!(
                f,
                "{what} of {value:?} is longer than the maximum of {max:?}; \
                 check the unit (milliseconds read as seconds?)"
            ),
            SequenceError::NoRuntime => f.write_str(
                "building a shutdown sequence that listens for signals needs a Tokio runtime: \
                 build it inside one, or turn signals off with `no_signals()`",
            ),
            SequenceError::Signal { signal, source } => {
                write!(f, "could not listen for {signal}: {source}")
            }
        }
    }
}

impl Error for SequenceError {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        match self {
            SequenceError::Signal { source, .. } => Some(source),
            _ => None,
        }
    }
}
