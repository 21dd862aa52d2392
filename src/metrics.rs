//! Optional figures through the `metrics` facade (cargo feature `metrics`).
//!
//! Recorded at each phase change of a [`ShutdownSequence`](crate::ShutdownSequence), and
//! whenever the application calls [`Shutdown::record_metrics`] (from a scrape handler or a
//! ticker): never on the per-request path, which stays free of any shared write.
//!
//! | name | kind | meaning |
//! |---|---|---|
//! | `tower_drain_in_flight` | gauge | requests and guards in flight |
//! | `tower_drain_long_lived` | gauge | long-lived responses (and long-lived guards) in flight |
//! | `tower_drain_phase` | gauge | 0 serving, 1 lame duck, 2 draining, 3 drained, 4 timed out |
//! | `tower_drain_rejected_total` | counter | requests rejected because admission was closed |
//! | `tower_drain_forced_total` | counter | shutdowns forced by a second trigger |

use crate::Shutdown;

/// Sets the gauges and the rejected counter from `shutdown`'s figures. No-op without the
/// `metrics` feature.
pub(crate) fn record(shutdown: &Shutdown) {
    #[cfg(feature = "metrics")]
    {
        ::metrics::gauge!("tower_drain_in_flight").set(shutdown.in_flight() as f64);
        ::metrics::gauge!("tower_drain_long_lived").set(shutdown.long_lived() as f64);
        ::metrics::gauge!("tower_drain_phase").set(f64::from(shutdown.phase() as u8));
        ::metrics::counter!("tower_drain_rejected_total").absolute(shutdown.rejected());
    }
    #[cfg(not(feature = "metrics"))]
    let _ = shutdown;
}

/// Counts one forced shutdown. No-op without the `metrics` feature.
pub(crate) fn forced() {
    #[cfg(feature = "metrics")]
    ::metrics::counter!("tower_drain_forced_total").increment(1);
}

#[cfg(feature = "metrics")]
impl Shutdown {
    /// Records the current figures through the `metrics` facade. Call it from a scrape
    /// handler or a ticker; the shutdown sequence also calls it at each phase change.
    ///
    /// | name | kind | meaning |
    /// |---|---|---|
    /// | `tower_drain_in_flight` | gauge | requests and guards in flight |
    /// | `tower_drain_long_lived` | gauge | long-lived responses and guards in flight |
    /// | `tower_drain_phase` | gauge | 0 serving, 1 lame duck, 2 draining, 3 drained, 4 timed out |
    /// | `tower_drain_rejected_total` | counter | requests rejected once admission closed |
    /// | `tower_drain_forced_total` | counter | shutdowns forced by a second trigger |
    pub fn record_metrics(&self) {
        record(self);
    }
}
