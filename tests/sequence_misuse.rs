//! The sequence and the drain given what they cannot work with: a runtime without timers, a
//! sequence nothing can ever trigger, a drain the application began with a longer deadline.
//! Each must fail clearly, before it changes anything, or keep its own bounds.

mod support;

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::time::Duration;

use tower_drain::{DrainOutcome, Phase, Shutdown, ShutdownSequence};

use support::{bounded, bounded_for};

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

/// A sequence run in a runtime without timers cannot wait out its lame duck, drain or hooks.
/// It must say so at its first poll, while the server starts, not at the first SIGTERM,
/// where the panic would come with readiness already failed and skip the drain and every
/// hook.
#[test]
fn a_sequence_in_a_runtime_without_timers_fails_at_its_first_poll() {
    let shutdown = Shutdown::new();
    let runtime = runtime_without_timers();
    let sequence = ShutdownSequence::builder(shutdown)
        .lame_duck(Duration::from_secs(1))
        .no_signals()
        .build()
        .unwrap();
    let trigger = sequence.trigger();
    let first_poll = catch_unwind(AssertUnwindSafe(|| {
        runtime.block_on(async {
            tokio::select! {
                biased;
                _ = sequence.run() => unreachable!("nothing triggered the sequence"),
                () = std::future::ready(()) => {}
            }
        })
    }));
    let message = panic_text(first_poll.expect_err("the sequence needs timers, and has none"));
    assert!(message.contains("enable_time"), "{message:?}");
    assert_eq!(shutdown.phase(), Phase::Serving);
    drop(trigger);
}

/// The panic message of `run` on a sequence nothing can trigger, which must panic at its
/// first poll rather than return a report or wait for ever.
async fn panic_of_untriggerable(sequence: ShutdownSequence) -> String {
    let run = tokio::spawn(sequence.run());
    let ended = bounded("a sequence nothing can trigger", run).await;
    panic_text(
        ended
            .expect_err("a sequence nothing can trigger must not return a report")
            .into_panic(),
    )
}

/// A sequence that listens for no signal, has no trigger future, and whose every
/// `ShutdownTrigger` is gone can never start: `run` would wait for ever, and the process
/// would never shut down gracefully. It says so instead.
#[tokio::test]
async fn a_sequence_nothing_can_trigger_says_so_instead_of_waiting_for_ever() {
    let shutdown = Shutdown::new();
    let sequence = ShutdownSequence::builder(shutdown)
        .no_signals()
        .build()
        .unwrap();
    let message = panic_of_untriggerable(sequence).await;
    assert!(
        message.contains("nothing can trigger") && message.contains("trigger()"),
        "{message:?}"
    );
    assert_eq!(shutdown.phase(), Phase::Serving);
}

/// The same when the only source was a trigger future that panicked at its first poll: the
/// message names the panic, not a missing future.
#[tokio::test]
async fn a_sequence_whose_only_trigger_future_panicked_says_so() {
    let shutdown = Shutdown::new();
    let sequence = ShutdownSequence::builder(shutdown)
        .no_signals()
        .trigger_on(async { panic!("the trigger's channel is gone") })
        .build()
        .unwrap();
    let message = panic_of_untriggerable(sequence).await;
    assert!(
        message.contains("nothing can trigger") && message.contains("trigger futures panicked"),
        "{message:?}"
    );
    assert_eq!(shutdown.phase(), Phase::Serving);
}

/// A trigger fired before `run` and then dropped still starts the sequence: the check above
/// is about what could come, not what has come.
#[tokio::test]
async fn a_trigger_fired_and_dropped_before_run_still_starts_it() {
    let shutdown = Shutdown::new();
    let sequence = ShutdownSequence::builder(shutdown)
        .lame_duck(Duration::ZERO)
        .no_signals()
        .build()
        .unwrap();
    sequence.trigger().fire();
    let report = bounded("the sequence", sequence.run()).await;
    assert_eq!(report.trigger, "manual trigger");
    assert!(report.is_clean(), "{report}");
}

/// A drain the application began itself (an admin endpoint's `drain(1 h)`) before the
/// trigger: the sequence joins it, and must still not wait past its own drain timeout, or
/// it overruns the budget it was checked against (the orchestrator's grace period), and the
/// hooks are killed with the process. On Tokio's paused clock, so the figures are exact.
#[tokio::test(start_paused = true)]
async fn a_drain_begun_with_a_later_deadline_is_cut_at_the_sequences_own_timeout() {
    let shutdown = Shutdown::new();
    let work = shutdown.guard().unwrap();
    let own_drain = shutdown.drain(Duration::from_secs(3600)).unwrap();
    let drain_timeout = Duration::from_secs(10);
    let sequence = ShutdownSequence::builder(shutdown)
        .lame_duck(Duration::from_secs(5))
        .drain_timeout(drain_timeout)
        .hook("pool", Duration::from_secs(1), || async {
            Ok::<(), String>(())
        })
        .budget(Duration::from_secs(30))
        .no_signals()
        .build()
        .unwrap();
    let planned = sequence.planned();
    sequence.trigger().fire();
    let report = bounded_for(Duration::from_secs(7200), "the sequence", sequence.run()).await;

    assert_eq!(
        report.draining, drain_timeout,
        "the drain step outlasted the sequence's drain timeout: {report}"
    );
    assert!(report.total <= planned, "over the plan: {report}");
    assert_eq!(report.drain.outcome, DrainOutcome::TimedOut, "{report}");
    assert!(!report.drain.forced, "a timeout, not a force: {report}");
    assert_eq!(report.drain.still_running, 1, "{report}");
    assert!(work.is_aborted(), "the work left is told to stop");
    assert!(report.hooks[0].outcome.is_ok(), "{report}");
    assert_eq!(own_drain.await, report.drain, "one drain, one report");
}

/// The other way round, nothing changes: a drain the application began with an earlier
/// deadline keeps it, and the sequence reports that drain's outcome.
#[tokio::test(start_paused = true)]
async fn a_drain_begun_with_an_earlier_deadline_keeps_it() {
    let shutdown = Shutdown::new();
    let _work = shutdown.guard().unwrap();
    let own_drain = shutdown.drain(Duration::from_secs(2)).unwrap();
    let sequence = ShutdownSequence::builder(shutdown)
        .lame_duck(Duration::ZERO)
        .drain_timeout(Duration::from_secs(10))
        .no_signals()
        .build()
        .unwrap();
    sequence.trigger().fire();
    let report = bounded("the sequence", sequence.run()).await;
    assert_eq!(report.drain.elapsed, Duration::from_secs(2), "{report}");
    assert_eq!(report.drain.outcome, DrainOutcome::TimedOut, "{report}");
    assert_eq!(own_drain.await, report.drain);
}

/// Sends on drop: tells the test a hook's future was dropped (aborted).
struct DropSignal(Option<tokio::sync::oneshot::Sender<()>>);

impl Drop for DropSignal {
    fn drop(&mut self) {
        let _ = self.0.take().unwrap().send(());
    }
}

/// The sequence dropped while a hook runs (`run` raced against a hard deadline of the
/// application's, a test ending): the hook's task must not be left running detached, where
/// nothing would ever enforce its timeout. It is aborted with the sequence.
#[tokio::test]
async fn a_hook_running_when_the_sequence_is_dropped_is_aborted_with_it() {
    let shutdown = Shutdown::new();
    let (entered_tx, entered) = tokio::sync::oneshot::channel();
    let (dropped_tx, dropped) = tokio::sync::oneshot::channel();
    let sequence = ShutdownSequence::builder(shutdown)
        .lame_duck(Duration::ZERO)
        .no_signals()
        .hook("hangs", Duration::from_secs(3), move || async move {
            let _signal = DropSignal(Some(dropped_tx));
            entered_tx.send(()).unwrap();
            std::future::pending::<Result<(), String>>().await
        })
        .build()
        .unwrap();
    sequence.trigger().fire();
    let run = sequence.run();
    tokio::select! {
        _ = run => unreachable!("the hook hangs for its whole timeout"),
        entered = entered => entered.unwrap(),
    }
    // `run` is dropped here, with the hook running.
    bounded("the hook is aborted with the sequence", dropped)
        .await
        .unwrap();
}
