//! A drain's deadlines come from the call that closed admission. A `drain` call made once
//! admission has closed joins that drain; its own timeout never becomes the drain deadline
//! nor the long-lived deadline.
//!
//! Time is Tokio's paused clock, which moves only when the idle runtime jumps to its next
//! timer: every deadline below is exact, and no assertion depends on real time.

use std::future::Future;
use std::sync::{Arc, Barrier};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use tower_drain::{Drain, DrainOutcome, DrainReport, LongLivedGuard, Shutdown};

use super::upgrade_guard;
use crate::support::pause::{pause_on, wait_turn};
use crate::support::paused_runtime;

const HOUR: Duration = Duration::from_secs(3600);

/// Which of a drain's deadlines came from the later call, judged from its report: it was
/// started with `HOUR` (so the long-lived grace is half of it) while one long-lived guard was
/// held to the end.
#[derive(Debug, PartialEq)]
enum Deadlines {
    Closer,
    DrainFromLater,
    LongLivedFromLater,
}

fn deadlines(report: &DrainReport) -> Deadlines {
    assert_eq!(report.outcome, DrainOutcome::TimedOut, "{report}");
    assert_eq!(report.long_lived.len(), 1, "{report}");
    if report.elapsed < HOUR {
        Deadlines::DrainFromLater
    } else if report.long_lived[0].age < HOUR / 2 {
        Deadlines::LongLivedFromLater
    } else {
        Deadlines::Closer
    }
}

/// Runs the closer's drain `first` to its end, with the later call's drain dropped and the
/// long-lived guard held throughout, so the drain times out and the guard is cut.
async fn run_out(first: Drain, later: Drain, held: LongLivedGuard) -> DrainReport {
    drop(later);
    let report = first.await;
    drop(held);
    report
}

/// Thread A calls `drain(HOUR)` and closes admission. While A is still inside the close
/// (firing `closing()`), thread B, which saw admission closed, calls `drain(ZERO)`.
#[test]
fn a_drain_call_made_after_admission_closed_does_not_set_the_deadlines() {
    let runtime = paused_runtime();
    for round in 0..20 {
        let shutdown = Shutdown::new();
        let held = upgrade_guard(&runtime, shutdown);
        let armed = pause_on(shutdown.closing());
        let (go, done) = (armed.go, armed.done);

        let handle = runtime.handle().clone();
        let later = std::thread::spawn({
            let handle = handle.clone();
            move || {
                let _entered = handle.enter();
                wait_turn(&go);
                assert!(
                    shutdown.phase().admission_closed(),
                    "B comes after the close"
                );
                let drain = shutdown.drain(Duration::ZERO).unwrap();
                done.send(()).unwrap();
                drain
            }
        });
        let first = std::thread::spawn(move || {
            let _entered = handle.enter();
            shutdown.drain(HOUR).unwrap()
        });
        let first = first.join().unwrap();
        let later = later.join().unwrap();
        assert!(armed.pause.fired());

        let report = runtime.block_on(run_out(first, later, held));
        assert_eq!(
            deadlines(&report),
            Deadlines::Closer,
            "round {round}: {report}"
        );
    }
}

/// The same race left free, many times: B spins until `closing()` has fired, then calls
/// `drain(ZERO)`.
#[test]
fn a_drain_call_racing_the_closer_sets_neither_deadline() {
    let runtime = paused_runtime();
    for round in 0..2_000 {
        let shutdown = Shutdown::new();
        let held = upgrade_guard(&runtime, shutdown);
        let barrier = Arc::new(Barrier::new(2));
        let handle = runtime.handle().clone();
        let later = std::thread::spawn({
            let handle = handle.clone();
            let barrier = Arc::clone(&barrier);
            move || {
                let _entered = handle.enter();
                let mut closing = Box::pin(shutdown.closing());
                let mut cx = Context::from_waker(Waker::noop());
                barrier.wait();
                // Bounded: the other thread closes admission right after the barrier.
                for _ in 0..100_000_000u64 {
                    if let Poll::Ready(()) = closing.as_mut().poll(&mut cx) {
                        return shutdown.drain(Duration::ZERO).unwrap();
                    }
                    std::hint::spin_loop();
                }
                panic!("closing() never fired");
            }
        });
        let first = std::thread::spawn(move || {
            let _entered = handle.enter();
            barrier.wait();
            shutdown.drain(HOUR).unwrap()
        });
        let first = first.join().unwrap();
        let later = later.join().unwrap();
        let report = runtime.block_on(run_out(first, later, held));
        assert_eq!(
            deadlines(&report),
            Deadlines::Closer,
            "round {round}: {report}"
        );
    }
}
