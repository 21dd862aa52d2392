//! The sequence and the drain given what they cannot work with: a runtime without timers, a
//! sequence nothing can ever trigger, a drain the application began with a longer deadline.
//! Each must fail clearly, before it changes anything, or keep its own bounds.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::time::Duration;

use tower_drain::{DrainOutcome, Phase, Shutdown};

/// The text of a caught panic.
fn panic_text(payload: Box<dyn std::any::Any + Send>) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|message| (*message).to_owned())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_default()
}

/// A runtime built without `enable_time` (nor `enable_io`).
fn runtime_without_timers() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap()
}

/// `drain` inside a runtime without timers panics (tokio cannot make the deadline's timer),
/// and must do so before it closes admission: otherwise the server refuses every request
/// from then on, with no drain left to time out or report.
#[test]
fn drain_in_a_runtime_without_timers_panics_before_closing_admission() {
    let shutdown = Shutdown::new();
    let runtime = runtime_without_timers();
    let drained = catch_unwind(AssertUnwindSafe(|| {
        runtime.block_on(async { shutdown.drain(Duration::from_secs(10)).map(drop) })
    }));
    let message = panic_text(drained.expect_err("a drain needs timers, and there are none"));
    assert!(message.contains("enable_time"), "{message:?}");
    assert_eq!(
        shutdown.phase(),
        Phase::Serving,
        "the failed drain closed admission"
    );
    assert!(shutdown.guard().is_some(), "requests are still admitted");

    // Outside any runtime `drain` is allowed, and the same controller then drains normally.
    let drain = shutdown.drain(Duration::ZERO).unwrap();
    let report = tokio::runtime::Runtime::new().unwrap().block_on(drain);
    assert_eq!(report.outcome, DrainOutcome::Drained);
}
