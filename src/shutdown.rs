//! The `Shutdown` controller: the public handle on the state in `core.rs`, which every layer,
//! guard and drain shares.

use std::fmt;
use std::future::Future;
use std::panic::{catch_unwind, resume_unwind, AssertUnwindSafe};
use std::time::Duration;

use tokio::time::Instant;

use crate::core::Core;
use crate::drain::{Drain, DrainError};
use crate::guard::InFlightGuard;
use crate::middleware::ShutdownLayer;
use crate::phase::Phase;
use crate::report::DrainOutcome;

/// The shutdown controller: phase, counters and signals, shared by every layer built from it.
///
/// Cheap to clone (a pointer copy), `Send` and `Sync`. Create one per server with
/// [`Shutdown::new`], put [`Shutdown::layer`] on the service, pass [`Shutdown::closing`] to
/// the server's graceful shutdown and await [`Shutdown::drain`] when it is time to stop.
///
/// # Lifetime
///
/// The state behind a `Shutdown` (about 128 bytes per counter slot: four slots per CPU,
/// rounded up to a power of two, 256 at most) lives until the process exits. That is what
/// lets the per-request path hold a plain `&'static` reference instead of an `Arc` clone,
/// which would put one shared atomic back on every request. Create one controller per server, not one per request.
#[derive(Clone, Copy)]
pub struct Shutdown {
    pub(crate) core: &'static Core,
}

impl Shutdown {
    /// A controller in [`Phase::Serving`], with four counter slots per CPU, rounded up to a
    /// power of two (256 slots at most); threads beyond that share slots.
    pub fn new() -> Self {
        let cpus = std::thread::available_parallelism().map_or(4, |n| n.get());
        Shutdown {
            core: Box::leak(Box::new(Core::new(cpus.saturating_mul(4).clamp(4, 256)))),
        }
    }

    /// The current phase.
    pub fn phase(&self) -> Phase {
        self.core.phase()
    }

    /// Requests (and guards) in flight now. Exact when nothing is racing it.
    pub fn in_flight(&self) -> usize {
        self.core.counter.in_flight()
    }

    /// Requests rejected because admission was closed, so far.
    pub fn rejected(&self) -> u64 {
        self.core.rejected()
    }

    /// Counts a piece of work that is not a request (a spawned job, an upgraded WebSocket
    /// connection) as in flight until the returned guard is dropped, so the drain waits for it.
    ///
    /// Returns `None` once admission has closed: do not start the work.
    pub fn guard(&self) -> Option<InFlightGuard> {
        self.core.admit()
    }

    /// The combined layer: admission, rejection with 503 once draining, and whole-response
    /// in-flight counting in one pass. The recommended way to use this crate.
    pub fn layer(&self) -> ShutdownLayer {
        ShutdownLayer::new(*self)
    }

    /// Enters [`Phase::LameDuck`]: readiness fails from now on, but requests are still admitted.
    ///
    /// Returns `false`, and changes nothing, if shutdown had already begun.
    ///
    /// # Panics
    ///
    /// When a tracing subscriber or a metrics recorder panics on the phase change's event or
    /// figures, once the change is made: the phase has moved and
    /// [`shutting_down`](Self::shutting_down) has fired.
    pub fn begin_lame_duck(&self) -> bool {
        self.core.begin_lame_duck()
    }

    /// Closes admission if it is still open, and returns the future that waits for everything
    /// in flight to finish, for at most `timeout`.
    ///
    /// The first call starts the drain and fixes its deadline; later calls join the same drain
    /// and resolve to the same [`DrainReport`](crate::DrainReport) (their `timeout` is only checked). A zero
    /// timeout means "do not wait": the report says what was still running, and that is
    /// aborted. The call may be made outside a Tokio runtime (a signal thread, a synchronous
    /// callback), or inside one with the time driver enabled; inside one without it, tokio
    /// panics (asking for `enable_time`) before anything changes, so admission stays open.
    /// Polled inside a runtime, the future keeps its deadlines with that runtime's timers
    /// (which must be enabled), whichever runtime made it; polled outside any (a `futures`
    /// executor), it needs the runtime it was made in to be running, and one made outside
    /// every runtime must be polled inside one.
    ///
    /// The deadlines are kept by polling a `Drain`: with none awaited, nothing cuts long-lived
    /// responses at their deadline, nor decides the drain at its own (`server::serve`,
    /// feature `hyper-server`, does that one), and what is still running then is neither
    /// reported nor cut.
    ///
    /// # Errors
    ///
    /// [`DrainError::TimeoutTooLong`] for a timeout over [`Drain::MAX_TIMEOUT`]; nothing is
    /// changed in that case, so a corrected call can follow.
    ///
    /// # Panics
    ///
    /// Inside a runtime without the time driver, before anything changes (above). And when a
    /// tracing subscriber or a metrics recorder panics on the "admission closed" event or
    /// figures, once the drain has begun: admission is closed, [`closing`](Self::closing)
    /// has fired and the deadlines are fixed, so a later `drain` call joins that drain and
    /// gets the future this one could not return. The phase change that ends a drain is
    /// made, and logged and recorded, by whoever ends it (the last request's release, a
    /// `Drain` at its deadline, [`force`](Self::force)); a panic there is theirs, and the
    /// report is published all the same.
    pub fn drain(&self, timeout: Duration) -> Result<Drain, DrainError> {
        if timeout > Drain::MAX_TIMEOUT {
            return Err(DrainError::TimeoutTooLong {
                requested: timeout,
                max: Drain::MAX_TIMEOUT,
            });
        }
        crate::drain::check_timers();
        // Armed before the drain can be decided, so the decision's wake-up cannot be missed.
        let decided = self.core.decided.notified();
        self.core.begin_drain(Some(timeout));
        // Set by the call that closed admission, if it was a `drain` call; otherwise (closed
        // by `force`) by the first `drain` call to get here. Both deadlines come from the
        // same call's timeout.
        let (deadline, long_lived_deadline) = *self
            .core
            .deadlines
            .get_or_init(|| self.core.deadlines_for(Instant::now(), timeout));
        Ok(Drain::new(
            self.core,
            decided,
            deadline,
            long_lived_deadline,
        ))
    }

    /// Ends the drain now, as a timeout would: closes admission if needed, reports what is
    /// still running as cut short, and aborts it. For a second termination signal.
    ///
    /// Returns `true` if this call cut the drain short; `false` if the outcome had already
    /// been decided, or if nothing was left running (the drain then reports
    /// [`DrainOutcome::Drained`], not forced). Either way `server::serve` (feature
    /// `hyper-server`) closes the connections it still holds.
    ///
    /// # Panics
    ///
    /// When a tracing subscriber or a metrics recorder panics on the events or figures of the
    /// phase changes it makes, once they are made: the drain is decided as it would have
    /// been (what it cut is told to stop through [`aborted`](Self::aborted)) and its report
    /// published.
    pub fn force(&self) -> bool {
        // Cancelled as this call ends, however it ends: a tracing subscriber or a metrics
        // recorder panicking below must not leave a server holding its connections with no
        // deadline to come. What this wakes closes connections, and so drops the requests on
        // them, which must already be reported cut short: a server closes them only once the
        // report is out (`server::serve` does).
        let _called = self.core.force_called.clone().drop_guard();
        // A panic there (a subscriber failing on the "admission closed" event) comes once
        // admission is closed and the counter swept: the force still cuts the drain short,
        // which is what it was called for, and the panic goes on after.
        let began = catch_unwind(AssertUnwindSafe(|| self.core.begin_drain(None)));
        let forced = self.core.decide(DrainOutcome::TimedOut, true);
        if forced {
            crate::metrics::forced();
        }
        if let Err(payload) = began {
            resume_unwind(payload);
        }
        forced
    }

    /// Resolves when admission closes ([`Phase::Draining`]). Hand it to the server's graceful
    /// shutdown (`axum::serve(..).with_graceful_shutdown`, tonic's `serve_with_shutdown`) so
    /// it stops accepting connections and sends HTTP/2 GOAWAY at that moment.
    pub fn closing(&self) -> impl Future<Output = ()> + Send + Sync + 'static {
        self.core.closing.cancelled()
    }

    /// Resolves when shutdown begins: at [`Phase::LameDuck`], or at draining if there was no
    /// lame-duck period. Readiness flips at this moment.
    pub fn shutting_down(&self) -> impl Future<Output = ()> + Send + Sync + 'static {
        self.core.started.cancelled()
    }

    /// Resolves when the drain is cut short with work still running, at its deadline or by
    /// [`Shutdown::force`]: anything still going should stop now. This is when a server should
    /// drop the connections it still holds: requests stalled in a handler or body are not
    /// polled again, so only dropping them ends them. `server::serve` (feature `hyper-server`)
    /// does. axum's and tonic's servers run each connection on a task of its own, which
    /// dropping their `serve` future does not end: bound the wait for them and exit the
    /// process.
    ///
    /// A drain that ends [`Phase::Drained`] never fires it, a `force` that found nothing
    /// running included, though a server may still hold connections then (a client stalled
    /// before its request was counted): bound the wait for the server as well.
    pub fn aborted(&self) -> impl Future<Output = ()> + Send + Sync + 'static {
        self.core.aborted.cancelled()
    }
}

impl Default for Shutdown {
    fn default() -> Self {
        Shutdown::new()
    }
}

impl fmt::Debug for Shutdown {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Shutdown")
            .field("phase", &self.phase())
            .field("in_flight", &self.in_flight())
            .field("slots", &self.core.counter.slot_count())
            .finish_non_exhaustive()
    }
}
