//! The `Drain` future.

use std::error::Error;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use pin_project_lite::pin_project;
use tokio::runtime::{Handle, Id};
use tokio::sync::futures::Notified;
use tokio::time::{Instant, Sleep};

use crate::core::Core;
use crate::report::{DrainOutcome, DrainReport};

pin_project! {
    /// Waits until every request admitted before draining began has finished, or the deadline
    /// passes; resolves to the [`DrainReport`]. Made by
    /// [`Shutdown::drain`](crate::Shutdown::drain).
    ///
    /// Event driven: it wakes when the last in-flight request ends, at the long-lived deadline
    /// (to cut long-lived responses) and at the drain deadline, and never polls the count. If
    /// nothing is in flight it is ready at once.
    #[must_use = "a Drain does nothing unless awaited; the drain itself has already begun"]
    pub struct Drain {
        core: &'static Core,
        #[pin]
        decided: Notified<'static>,
        // The timers are made with the future when `drain` is called inside a runtime, so it
        // can then be polled anywhere, a `futures` executor included; otherwise (a signal
        // thread, a synchronous callback) at the first poll that has to wait, which must be
        // inside one. Polled inside a runtime other than the one that made them, they are
        // made again there: a timer only fires while its own runtime drives it, and the
        // runtime that made them may be idle (a current-thread one nobody blocks on) or gone.
        deadline_at: Instant,
        long_lived_at: Instant,
        // The runtime whose timers `deadline` and `long_lived` are; `None` until made.
        timers_of: Option<Id>,
        // The runtime the future was made in, if any: polled outside every runtime, the
        // future keeps its deadlines with that one's timers, whichever runtime polled it last
        // (that one may be gone, and a timer of a runtime shut down panics when polled).
        made_in: Option<Handle>,
        // `None` until the timers are made.
        #[pin]
        deadline: Option<Sleep>,
        // The long-lived deadline; `None` once it has fired.
        #[pin]
        long_lived: Option<Sleep>,
    }
}

impl Drain {
    /// The longest drain timeout accepted: one day. A deploy's grace period is minutes; a
    /// longer value is almost always a unit mistake (`Duration::MAX`, milliseconds read as
    /// seconds), and would leave a shutdown hanging for good.
    pub const MAX_TIMEOUT: Duration = Duration::from_secs(24 * 60 * 60);

    pub(crate) fn new(
        core: &'static Core,
        decided: Notified<'static>,
        deadline: Instant,
        long_lived_deadline: Instant,
    ) -> Self {
        let made_in = Handle::try_current().ok();
        let in_runtime = made_in.is_some();
        Drain {
            core,
            decided,
            deadline_at: deadline,
            long_lived_at: long_lived_deadline,
            timers_of: made_in.as_ref().map(Handle::id),
            made_in,
            deadline: in_runtime.then(|| tokio::time::sleep_until(deadline)),
            long_lived: in_runtime.then(|| tokio::time::sleep_until(long_lived_deadline)),
        }
    }
}

/// The runtime this thread is inside, if any.
fn current_runtime() -> Option<Id> {
    tokio::runtime::Handle::try_current()
        .ok()
        .map(|handle| handle.id())
}

/// Panics, with tokio's message naming the fix (`enable_time`), inside a runtime whose time
/// driver is off; nothing otherwise. Called before anything changes: a `Drain` made there
/// would panic as it makes its timers, after admission had closed for good with no drain
/// left to time it out. Making a timer registers nothing until it is polled.
pub(crate) fn check_timers() {
    if tokio::runtime::Handle::try_current().is_ok() {
        drop(tokio::time::sleep(Duration::ZERO));
    }
}

impl Future for Drain {
    type Output = DrainReport;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<DrainReport> {
        let mut this = self.project();
        // Outside any runtime, the timers are those of the runtime that made the future: the
        // documented case of a future made inside one and polled by another executor while
        // that runtime runs.
        let here = current_runtime();
        let owner = here.or_else(|| this.made_in.as_ref().map(Handle::id));
        loop {
            // The `Notified` was created before this check, so a decision made after the check
            // wakes it (tokio's `notify_waiters` reaches every `Notified` created before it).
            if let Some(report) = this.core.report() {
                return Poll::Ready(report);
            }
            // A deadline already past (a zero timeout) is decided here rather than by a timer,
            // which would wait for the runtime's next tick: zero means "don't wait".
            let now = Instant::now();
            let past_deadline = now >= *this.deadline_at;
            if past_deadline {
                this.core.decide(DrainOutcome::TimedOut, false);
                if let Some(report) = this.core.report() {
                    return Poll::Ready(report);
                }
            } else if this.deadline.is_none() || (owner.is_some() && owner != *this.timers_of) {
                // Made before, a missing long-lived timer has fired: it is not made again.
                let long_lived_left = this.deadline.is_none() || this.long_lived.is_some();
                // Outside any runtime, made in the one that made the future, entered for it.
                let _made_in = match here {
                    Some(_) => None,
                    None => this.made_in.as_ref().map(Handle::enter),
                };
                *this.timers_of = owner;
                this.deadline
                    .set(Some(tokio::time::sleep_until(*this.deadline_at)));
                if long_lived_left {
                    this.long_lived
                        .set(Some(tokio::time::sleep_until(*this.long_lived_at)));
                }
            }
            if this.decided.as_mut().poll(cx).is_ready() {
                this.decided.set(this.core.decided_notify().notified());
                continue;
            }
            if past_deadline {
                // Decided on another thread, which is still putting the decision's effects in
                // place; it wakes `decided` once the report is out. Looping here instead would
                // spin on this runtime thread for as long as that takes.
                return Poll::Pending;
            }
            if let Some(long_lived) = this.long_lived.as_mut().as_pin_mut() {
                // Past already (a zero grace), it passes here too, not at the timer's next
                // tick: a zero grace cuts at once what cannot finish.
                if now >= *this.long_lived_at || long_lived.poll(cx).is_ready() {
                    this.long_lived.set(None);
                    this.core.long_lived.expire();
                    continue;
                }
            }
            let deadline = this.deadline.as_mut().as_pin_mut();
            if deadline.is_some_and(|deadline| deadline.poll(cx).is_ready()) {
                this.core.decide(DrainOutcome::TimedOut, false);
                continue;
            }
            return Poll::Pending;
        }
    }
}

impl fmt::Debug for Drain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Drain")
            .field("deadline", &self.deadline_at)
            .finish_non_exhaustive()
    }
}

/// Why a drain could not be started.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum DrainError {
    /// The timeout is longer than [`Drain::MAX_TIMEOUT`].
    TimeoutTooLong {
        /// The timeout asked for.
        requested: Duration,
        /// The longest accepted.
        max: Duration,
    },
}

impl fmt::Display for DrainError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DrainError::TimeoutTooLong { requested, max } => write!(
                f,
                "drain timeout of {requested:?} is longer than the maximum of {max:?}; \
                 nothing was changed, pass a bounded timeout"
            ),
        }
    }
}

impl Error for DrainError {}
