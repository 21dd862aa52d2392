//! The state behind a [`Shutdown`](crate::Shutdown): phase, counter, deadlines, the drain's
//! decision and the signals it fires, shared by every layer, guard and drain.

use std::cell::Cell;
use std::panic::{catch_unwind, resume_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock, PoisonError};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::counter::Counter;
use crate::guard::InFlightGuard;
use crate::long_lived::Registry;
use crate::phase::Phase;
use crate::probe::ReadinessFlags;
use crate::report::{DrainOutcome, DrainReport};

/// The outcome of a drain, fixed once by whichever comes first: the last release, a deadline,
/// or a forced shutdown.
struct Decision {
    outcome: DrainOutcome,
    forced: bool,
    at: Instant,
    still_running: usize,
    rejected: u64,
}

/// Everything behind a [`Shutdown`](crate::Shutdown). Allocated once and never freed (see
/// [`Shutdown`](crate::Shutdown)).
pub(crate) struct Core {
    pub(crate) counter: Counter,
    /// Long-lived responses; touched only by them, never by short requests.
    pub(crate) long_lived: Registry,
    /// Read on every admission and written only at phase changes, so it gets its own line.
    phase: PaddedPhase,
    rejected: AtomicU64,
    /// Held across the lame duck's and the drain's phase change and its event, so the events
    /// come in the order the phases did. Phase changes only; never taken by a request.
    transitions: Mutex<()>,
    /// Set once, by the call that closes admission. Concurrent `drain` calls wait inside
    /// `get_or_init` until its sweep is done, so every one returns after the sweep.
    drain_start: OnceLock<DrainStart>,
    /// The drain deadline and the long-lived deadline, fixed together by one call.
    pub(crate) deadlines: OnceLock<(Instant, Instant)>,
    decision: OnceLock<Decision>,
    /// Set once the decision's effects (phase, signals, long-lived expiry) are all in place:
    /// no report is handed out before.
    published: AtomicBool,
    report: OnceLock<DrainReport>,
    /// Woken once, when the decision is made. Only drainers ever wait on it.
    pub(crate) decided: Notify,
    pub(crate) started: CancellationToken,
    pub(crate) closing: CancellationToken,
    pub(crate) aborted: CancellationToken,
    /// Cancelled by every `force` call, whatever it decided: a server still holding
    /// connections closes them then.
    pub(crate) force_called: CancellationToken,
    /// Start-up hold and maintenance, read by the readiness probe.
    pub(crate) readiness: ReadinessFlags,
}

#[repr(align(128))]
struct PaddedPhase(AtomicU8);

/// When admission closed, and how much was in flight at that instant.
struct DrainStart {
    at: Instant,
    in_flight: usize,
}

impl Core {
    pub(crate) fn new(slots: usize) -> Self {
        Core {
            counter: Counter::new(slots),
            long_lived: Registry::new(),
            phase: PaddedPhase(AtomicU8::new(Phase::Serving as u8)),
            rejected: AtomicU64::new(0),
            transitions: Mutex::new(()),
            drain_start: OnceLock::new(),
            deadlines: OnceLock::new(),
            decision: OnceLock::new(),
            published: AtomicBool::new(false),
            report: OnceLock::new(),
            decided: Notify::new(),
            started: CancellationToken::new(),
            closing: CancellationToken::new(),
            aborted: CancellationToken::new(),
            force_called: CancellationToken::new(),
            readiness: ReadinessFlags::new(),
        }
    }

    #[inline]
    pub(crate) fn phase(&self) -> Phase {
        // Relaxed: a flag check. Exactness of admission comes from the counter's slot words,
        // not from this load; it only turns most late requests away before touching a slot.
        Phase::from_u8(self.phase.0.load(Ordering::Relaxed))
    }

    #[inline]
    pub(crate) fn is_aborted(&self) -> bool {
        self.phase() == Phase::TimedOut
    }

    /// Admits one request, or returns `None` once admission has closed.
    ///
    /// Cost: one load of the phase (a line that is only read while serving) and one
    /// compare-and-swap on this thread's own counter slot.
    #[inline]
    pub(crate) fn admit(&'static self) -> Option<InFlightGuard> {
        if self.phase().admission_closed() {
            return None;
        }
        let slot = self.counter.slot_index(thread_ticket());
        self.counter
            .try_acquire(slot)
            .then(|| InFlightGuard::new(self, slot))
    }

    /// Requests rejected because admission was closed, so far.
    pub(crate) fn rejected(&self) -> u64 {
        self.rejected.load(Ordering::Relaxed)
    }

    #[cold]
    pub(crate) fn note_rejected(&self) {
        // Relaxed: a statistic, read for reports only.
        self.rejected.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn begin_lame_duck(&self) -> bool {
        // Cancels `started` when dropped: after the lock below is released (waking a waiter
        // under the lock would let it block the next transition), and also as a subscriber
        // panicking on the event unwinds, so that `shutting_down()` fires with the phase
        // change whatever the logging does.
        let mut started = None;
        let moved = {
            let _in_order = self.transitions();
            // SeqCst: phase changes are rare and ordering them totally keeps them easy to
            // reason about; the hot path only ever loads.
            let moved = self
                .phase
                .0
                .compare_exchange(
                    Phase::Serving as u8,
                    Phase::LameDuck as u8,
                    Ordering::SeqCst,
                    Ordering::SeqCst,
                )
                .is_ok();
            if moved {
                started = Some(self.started.clone().drop_guard());
                tracing::info!(
                    phase = %Phase::LameDuck,
                    in_flight = self.counter.in_flight(),
                    "shutdown began: lame duck, readiness now fails, requests still admitted"
                );
            }
            moved
        };
        drop(started);
        if moved {
            crate::metrics::record_core(self);
        }
        moved
    }

    fn transitions(&self) -> std::sync::MutexGuard<'_, ()> {
        // Guards no data, so a panic while it was held leaves nothing inconsistent.
        self.transitions
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Closes admission and sweeps the counter, once. Returns `true` for the call that did it.
    pub(crate) fn begin_drain(&'static self, timeout: Option<Duration>) -> bool {
        let mut first = false;
        let mut event_panicked = None;
        self.drain_start.get_or_init(|| {
            first = true;
            let _in_order = self.transitions();
            let at = Instant::now();
            // SeqCst: see `begin_lame_duck`.
            self.phase.0.store(Phase::Draining as u8, Ordering::SeqCst);
            let in_flight = self.counter.close();
            // Inside the initialisation: every call that returns from `get_or_init` above
            // (every later `drain`) finds the closer's deadlines.
            if let Some(timeout) = timeout {
                let _ = self.deadlines.set(self.deadlines_for(at, timeout));
            }
            // Inside the initialisation too: nothing can decide the drain before it ends
            // (later `drain` and `force` calls wait for it, and the closer's hold keeps the
            // counter from draining), so this event always comes before the outcome's.
            // A subscriber panicking on it must not leave the counter closed and this cell
            // empty (a later call would sweep again, and nothing would tell the server to
            // stop accepting): the panic goes on once the closer's steps below are done.
            event_panicked = catch_unwind(AssertUnwindSafe(|| {
                tracing::info!(
                    phase = %Phase::Draining,
                    in_flight,
                    "admission closed: rejecting new requests, waiting for those in flight"
                );
            }))
            .err();
            DrainStart { at, in_flight }
        });
        if !first {
            return false;
        }
        // Only after the sweep: what these wake (long-lived bodies ending on drain) releases
        // requests at once, and a release racing the sweep would be missing from the figure.
        self.started.cancel();
        self.closing.cancel();
        // After the figure is set above: the call that completes the drain (this one, or
        // the last release) may take the report at once.
        if self.counter.finish_close() {
            self.on_drained();
        }
        // After the closer's hold is dropped: a metrics recorder that panics here must not
        // leave the drain unable to end before its deadline.
        crate::metrics::record_core(self);
        if let Some(payload) = event_panicked {
            resume_unwind(payload);
        }
        true
    }

    /// The drain deadline, once a `drain` call has fixed it.
    #[cfg_attr(not(feature = "hyper-server"), allow(dead_code))]
    pub(crate) fn drain_deadline(&self) -> Option<Instant> {
        self.deadlines.get().map(|(deadline, _)| *deadline)
    }

    /// The drain deadline and the long-lived deadline for a drain of `timeout` from `start`.
    pub(crate) fn deadlines_for(&self, start: Instant, timeout: Duration) -> (Instant, Instant) {
        (start + timeout, self.long_lived.deadline(start, timeout))
    }

    /// The counter's zero edge: every admitted request has ended.
    #[cold]
    pub(crate) fn on_drained(&self) {
        debug_assert!(self.counter.is_drained());
        self.decide(DrainOutcome::Drained, false);
    }

    /// Fixes the drain's outcome if nobody has yet. Returns `true` for the call that did, when
    /// the outcome is the one it asked for.
    ///
    /// Only a counter that has been closed may be decided `TimedOut`; one that then has
    /// nothing in flight is decided `Drained` instead (see below).
    pub(crate) fn decide(&self, outcome: DrainOutcome, forced: bool) -> bool {
        let mut first = false;
        let decision = self.decision.get_or_init(|| {
            first = true;
            let still_running = match outcome {
                DrainOutcome::Drained => 0,
                DrainOutcome::TimedOut => self.counter.in_flight(),
            };
            // A timeout or a force that finds nothing in flight has nothing to cut short. The
            // drain is over, and whoever holds its last step (the closer between its sweep
            // and `finish_close`, or the last release between its slot and `pending`) is
            // about to say so. The zero is final: the caller closed the counter first, and a
            // closed slot never grows.
            let (outcome, forced) = if still_running == 0 {
                (DrainOutcome::Drained, false)
            } else {
                (outcome, forced)
            };
            Decision {
                outcome,
                forced,
                at: Instant::now(),
                still_running,
                rejected: self.rejected.load(Ordering::Relaxed),
            }
        });
        if !first {
            return false;
        }
        // Before the phase store: a long-lived body polled on another thread aborts as soon as
        // it reads `TimedOut`, and leaves the registry as it does. Recorded first, it is named
        // in the report as cut, as `still_running` (read just above) counts it.
        let recorded_cut = match decision.outcome {
            DrainOutcome::TimedOut => self.long_lived.record_cut(),
            DrainOutcome::Drained => None,
        };
        // Admission closed before any decision, but the closer may still be before these
        // (waking what waits on them): nobody may see the outcome before they fire.
        self.started.cancel();
        self.closing.cancel();
        let phase = match decision.outcome {
            DrainOutcome::Drained => Phase::Drained,
            DrainOutcome::TimedOut => Phase::TimedOut,
        };
        // SeqCst: see `begin_lame_duck`.
        self.phase.0.store(phase as u8, Ordering::SeqCst);
        // Published however this call ends: a tracing subscriber or a metrics recorder that
        // panics below (the long-lived cut's warning included) must not leave every `Drain`
        // waiting for ever for the report of a decision already made.
        let _publish = Publish {
            core: self,
            decision,
        };
        if phase == Phase::TimedOut {
            // Long-lived responses still running are cut too, named in the report above.
            self.long_lived.abort_recorded(recorded_cut);
            self.aborted.cancel();
        }
        // Fixed here, once the long-lived responses the timeout cut are recorded; its figures
        // make the log line, the only one a user of `drain` without the sequence gets.
        let report = self.report.get_or_init(|| self.report_of(decision));
        let elapsed_ms = report.elapsed.as_micros() as f64 / 1000.0;
        if phase == Phase::TimedOut {
            tracing::warn!(
                phase = %phase,
                forced = report.forced,
                elapsed_ms,
                in_flight_at_start = report.in_flight_at_start,
                completed = report.completed,
                still_running = report.still_running,
                rejected = report.rejected,
                "drain cut short: aborting what is still running"
            );
        } else {
            tracing::info!(
                phase = %phase,
                elapsed_ms,
                in_flight_at_start = report.in_flight_at_start,
                completed = report.completed,
                still_running = report.still_running,
                rejected = report.rejected,
                "drained: every admitted request has finished"
            );
        }
        crate::metrics::record_core(self);
        decision.outcome == outcome
    }

    /// The report, once the outcome is decided. Every caller gets the same one.
    pub(crate) fn report(&self) -> Option<DrainReport> {
        // Acquire: pairs with `decide`'s Release; the report and everything before it is set.
        if !self.published.load(Ordering::Acquire) {
            return None;
        }
        self.report.get().cloned()
    }

    fn report_of(&self, decision: &Decision) -> DrainReport {
        // Set before any decision can be made: a drain is decided only once begun.
        let (started, in_flight_at_start) = self
            .drain_start
            .get()
            .map_or((decision.at, 0), |start| (start.at, start.in_flight));
        DrainReport {
            outcome: decision.outcome,
            forced: decision.forced,
            elapsed: decision.at.saturating_duration_since(started),
            in_flight_at_start,
            completed: in_flight_at_start.saturating_sub(decision.still_running),
            rejected: decision.rejected,
            still_running: decision.still_running,
            long_lived: self.long_lived.cut(),
        }
    }

    pub(crate) fn decided_notify(&'static self) -> &'static Notify {
        &self.decided
    }

    /// Resolves at the first `force` call, once its decision is made.
    #[cfg(feature = "hyper-server")]
    pub(crate) fn force_called(
        &'static self,
    ) -> impl std::future::Future<Output = ()> + Send + 'static {
        self.force_called.cancelled()
    }
}

/// Publishes the decided report as it drops, at the end of [`Core::decide`]: after a panic
/// there, it also puts in place what the panic skipped (the report, the abort).
struct Publish<'a> {
    core: &'a Core,
    decision: &'a Decision,
}

impl Drop for Publish<'_> {
    fn drop(&mut self) {
        let core = self.core;
        // Both already done unless `decide` panicked before them; neither runs user code.
        if self.decision.outcome == DrainOutcome::TimedOut {
            core.aborted.cancel();
        }
        core.report.get_or_init(|| core.report_of(self.decision));
        // Release: pairs with `report`; the report and the decision's effects before it are in
        // place for whoever reads it.
        core.published.store(true, Ordering::Release);
        core.decided.notify_waiters();
    }
}

/// This thread's ticket: a number handed out once per thread, mapped onto a counter slot.
#[inline]
fn thread_ticket() -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local! {
        static TICKET: Cell<usize> = const { Cell::new(usize::MAX) };
    }
    TICKET.with(|ticket| {
        let current = ticket.get();
        if current != usize::MAX {
            return current;
        }
        // Relaxed: only spreads threads over slots; any value is correct.
        let fresh = NEXT.fetch_add(1, Ordering::Relaxed) & (usize::MAX >> 1);
        ticket.set(fresh);
        fresh
    })
}
