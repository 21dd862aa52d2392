//! Optional figures through the `metrics` facade (cargo feature `metrics`).
//!
//! Recorded by the controller at each phase change, with or without a
//! [`ShutdownSequence`](crate::ShutdownSequence), and whenever the application calls
//! [`Shutdown::record_metrics`] (from a scrape handler or a ticker): never on the per-request
//! path, which stays free of any shared write. The names are listed once, on
//! [`Shutdown::record_metrics`].

use crate::core::Core;
use crate::Shutdown;

/// Sets the gauges and the rejected counter from `shutdown`'s figures. No-op without the
/// `metrics` feature.
pub(crate) fn record(shutdown: &Shutdown) {
    record_core(shutdown.core);
}

/// [`record`] from the controller's state; called by the controller at each phase change.
pub(crate) fn record_core(core: &Core) {
    #[cfg(feature = "metrics")]
    {
        // Figures can be recorded from two threads at once (the closer, the last release, an
        // application's ticker), and nobody records again once the drain is over. Phases only
        // move forward and each change records after it: re-read the phase after writing, and
        // write again if it moved, so the gauges end on figures read after the latest phase
        // change whichever write lands last (at most one retry per phase).
        let in_flight = ::metrics::gauge!("tower_drain_in_flight");
        let long_lived = ::metrics::gauge!("tower_drain_long_lived");
        let rejected = ::metrics::counter!("tower_drain_rejected_total");
        let phase = ::metrics::gauge!("tower_drain_phase");
        loop {
            let seen = core.phase();
            in_flight.set(core.counter.in_flight() as f64);
            long_lived.set(core.long_lived.count() as f64);
            rejected.absolute(core.rejected());
            phase.set(f64::from(seen as u8));
            if core.phase() == seen {
                break;
            }
        }
    }
    #[cfg(not(feature = "metrics"))]
    let _ = core;
}

/// Counts one drain cut short by [`Shutdown::force`]. No-op without the `metrics` feature.
pub(crate) fn forced() {
    #[cfg(feature = "metrics")]
    ::metrics::counter!("tower_drain_forced_total").increment(1);
}

#[cfg(feature = "metrics")]
impl Shutdown {
    /// Records the current figures through the `metrics` facade. Call it from a scrape
    /// handler or a ticker; the controller also records them at each phase change, with or
    /// without a [`ShutdownSequence`](crate::ShutdownSequence). Available with the `metrics`
    /// cargo feature.
    ///
    /// | name | kind | meaning |
    /// |---|---|---|
    /// | `tower_drain_in_flight` | gauge | requests and guards in flight |
    /// | `tower_drain_long_lived` | gauge | long-lived responses and guards in flight |
    /// | `tower_drain_phase` | gauge | 0 serving, 1 lame duck, 2 draining, 3 drained, 4 timed out |
    /// | `tower_drain_rejected_total` | counter | requests rejected once admission closed |
    /// | `tower_drain_forced_total` | counter | drains cut short by `Shutdown::force` |
    pub fn record_metrics(&self) {
        record(self);
    }
}
