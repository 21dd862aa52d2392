//! A drain's outcome is never seen before the signals that lead up to it: whoever sees the
//! drain decided also finds `closing()` fired, and, for a drain cut short, `aborted()`.
//!
//! Each case holds the deciding thread at the moment it fires one of the crate's own signals
//! (a waker that blocks it), and looks from another thread in that window.

use std::time::Duration;

use futures_util::FutureExt;
use tower_drain::{DrainOutcome, Phase, Shutdown};

use super::upgrade_guard;
use crate::support::pause::{pause_on, wait_turn};

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap()
}

/// The closer of an idle drain is held as shutdown begins, after its sweep found nothing in
/// flight; a second thread forces the drain in that window.
#[test]
fn an_idle_drain_is_not_seen_drained_before_closing_fires() {
    let runtime = runtime();
    for round in 0..20 {
        let shutdown = Shutdown::new();
        let armed = pause_on(shutdown.shutting_down());
        let (go, done) = (armed.go, armed.done);
        let handle = runtime.handle().clone();
        let second = std::thread::spawn(move || {
            let _entered = handle.enter();
            wait_turn(&go);
            let forced = shutdown.force();
            // In this order: an outcome seen first must find `closing()` already fired.
            let report = shutdown.drain(Duration::ZERO).unwrap().now_or_never();
            let phase = shutdown.phase();
            let closing_fired = shutdown.closing().now_or_never().is_some();
            done.send(()).unwrap();
            (forced, report, phase, closing_fired)
        });
        let closer = std::thread::spawn(move || shutdown.force());
        assert!(
            !closer.join().unwrap(),
            "round {round}: nothing was running"
        );
        let (forced, report, phase, closing_fired) = second.join().unwrap();
        assert!(armed.pause.fired());
        assert!(!forced, "round {round}: nothing was running");
        // The second force found nothing in flight and decided the drain itself.
        let report = report.expect("decided by the second force");
        assert_eq!(report.outcome, DrainOutcome::Drained, "round {round}");
        assert_eq!(phase, Phase::Drained, "round {round}");
        assert!(
            closing_fired,
            "round {round}: the drain was seen drained before closing() fired"
        );
    }
}

/// The thread forcing a drain with work running is held as it expires long-lived
/// responses; another thread polls the drain in that window.
#[test]
fn a_drain_seen_timed_out_finds_aborted_fired() {
    let runtime = runtime();
    for round in 0..20 {
        let shutdown = Shutdown::new();
        let held = upgrade_guard(&runtime, shutdown);
        let armed = pause_on(held.deadline());
        let (go, done) = (armed.go, armed.done);
        let drain = {
            let _entered = runtime.enter();
            shutdown.drain(Duration::from_secs(3600)).unwrap()
        };
        let observer = std::thread::spawn(move || {
            wait_turn(&go);
            // In this order: a drain resolved first must find `aborted()` already fired.
            let report = drain.now_or_never();
            let aborted_fired = shutdown.aborted().now_or_never().is_some();
            done.send(()).unwrap();
            (report, aborted_fired)
        });
        assert!(shutdown.force(), "round {round}: work was running");
        let (report, aborted_fired) = observer.join().unwrap();
        assert!(armed.pause.fired());
        drop(held);
        if let Some(report) = report {
            assert_eq!(report.outcome, DrainOutcome::TimedOut, "round {round}");
            assert!(
                aborted_fired,
                "round {round}: the drain resolved ({report}) before aborted() fired"
            );
        }
    }
}
