//! The drain deadline, as seen by a request that is still running.

use std::future::Future;
use std::pin::Pin;
use std::task::Context;

use tokio_util::sync::WaitForCancellationFuture;

use crate::guard::InFlightGuard;

/// Lets a stalled request notice the drain deadline.
///
/// A handler or body waiting on something else (a slow query, an idle stream) is not polled
/// again until that something wakes it, so a flag check alone would miss the deadline. While
/// draining, a stalled request also waits for the abort. The wait is armed on the first stall
/// after admission closed, so it allocates once per stalled request and never while serving.
#[derive(Default)]
pub(crate) struct DeadlineWait {
    abort: Option<Pin<Box<WaitForCancellationFuture<'static>>>>,
}

impl DeadlineWait {
    /// True when the request holding `guard` must be cut short now; never for an uncounted
    /// request (`None`). Call it before polling the inner work (`stalled == false`) and again
    /// when that returned pending (`stalled`), so the wake-up is registered with this task.
    #[inline]
    pub(crate) fn expired(
        &mut self,
        guard: Option<&InFlightGuard>,
        stalled: bool,
        cx: &mut Context<'_>,
    ) -> bool {
        let Some(guard) = guard else {
            return false;
        };
        if guard.is_aborted() {
            return true;
        }
        if !stalled {
            return false;
        }
        let core = guard.core();
        if !core.phase().admission_closed() {
            return false;
        }
        let abort = self
            .abort
            .get_or_insert_with(|| Box::pin(core.abort_wait()));
        abort.as_mut().poll(cx).is_ready()
    }
}
