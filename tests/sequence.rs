//! The shutdown sequence: ordering, bounded hooks, forcing, the budget check.

mod support;

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::Method;
use tokio::sync::oneshot;
use tower_drain::{
    DrainOutcome, HookOutcome, LongLivedKind, Phase, SequenceBuilder, SequenceError, Shutdown,
    ShutdownReport, ShutdownSequence,
};

use support::{bounded, by_hand, hook_outcomes};

/// Records `(hook name, phase when it started)` in order.
type Log = Arc<Mutex<Vec<(&'static str, Phase)>>>;

fn note(log: &Log, name: &'static str, shutdown: Shutdown) {
    log.lock().unwrap().push((name, shutdown.phase()));
}

/// Sends on drop: tells the test a hung hook's future was dropped (aborted).
struct DropSignal(Option<oneshot::Sender<()>>);

impl Drop for DropSignal {
    fn drop(&mut self) {
        let _ = self.0.take().unwrap().send(());
    }
}

#[tokio::test]
async fn hooks_run_in_order_after_the_drain_and_failures_never_skip_the_rest() {
    let shutdown = Shutdown::new();
    let log = Log::default();
    let (dropped_tx, dropped) = oneshot::channel();
    let sequence = ShutdownSequence::builder(shutdown)
        .lame_duck(Duration::ZERO)
        .drain_timeout(Duration::from_secs(60))
        .budget(Duration::from_secs(120))
        .no_signals()
        .hook("first", Duration::from_secs(5), {
            let log = log.clone();
            move || async move {
                note(&log, "first", shutdown);
                Ok::<(), String>(())
            }
        })
        .hook("fails", Duration::from_secs(5), {
            let log = log.clone();
            move || async move {
                note(&log, "fails", shutdown);
                Err("disk full")
            }
        })
        .hook("hangs", Duration::from_millis(100), {
            let log = log.clone();
            move || async move {
                note(&log, "hangs", shutdown);
                let _signal = DropSignal(Some(dropped_tx));
                std::future::pending::<Result<(), String>>().await
            }
        })
        .hook("panics", Duration::from_secs(5), {
            let log = log.clone();
            move || async move {
                note(&log, "panics", shutdown);
                panic!("boom");
                #[allow(unreachable_code)]
                Ok::<(), String>(())
            }
        })
        .hook("last", Duration::from_secs(5), {
            let log = log.clone();
            move || async move {
                note(&log, "last", shutdown);
                Ok::<(), String>(())
            }
        })
        .build()
        .unwrap();
    let trigger = sequence.trigger();

    // Work in flight holds the drain, and so the hooks, back.
    let work = shutdown.guard().unwrap();
    let run = tokio::spawn(sequence.run());
    trigger.fire();
    bounded("drain begins", shutdown.closing()).await;
    assert!(
        log.lock().unwrap().is_empty(),
        "no hook runs before the drain is over"
    );
    drop(work);

    let report = bounded("sequence ends", run).await.unwrap();
    assert_eq!(report.drain.outcome, DrainOutcome::Drained);
    assert_eq!(report.drain.completed, 1);
    assert_eq!(
        *log.lock().unwrap(),
        [
            ("first", Phase::Drained),
            ("fails", Phase::Drained),
            ("hangs", Phase::Drained),
            ("panics", Phase::Drained),
            ("last", Phase::Drained),
        ],
        "every hook ran, in registration order, after the drain"
    );
    let outcomes = hook_outcomes(&report);
    assert_eq!(
        outcomes,
        [
            ("first", HookOutcome::Ok),
            ("fails", HookOutcome::Failed("disk full".into())),
            ("hangs", HookOutcome::TimedOut(Duration::from_millis(100))),
            ("panics", HookOutcome::Panicked("boom".into())),
            ("last", HookOutcome::Ok),
        ]
    );
    bounded("the hung hook is aborted at its timeout", dropped)
        .await
        .unwrap();
    assert!(!report.is_clean());
    assert_eq!(report.forced_by, None);

    let table = report.to_string();
    for row in [
        "shutdown on manual trigger",
        "lame duck",
        "drain",
        "hook fails",
        "failed: disk full",
        "hook hangs",
        "timed out after 100ms",
        "panicked: boom",
        "hook last",
    ] {
        assert!(table.contains(row), "report table lacks {row:?}:\n{table}");
    }
}

/// `builder` with one more hook, which counts its runs in the count returned beside it.
fn with_counted_hook(builder: SequenceBuilder) -> (SequenceBuilder, Arc<Mutex<usize>>) {
    let runs = Arc::new(Mutex::new(0));
    let counted = runs.clone();
    let builder = builder.hook("counts runs", Duration::from_secs(5), move || {
        let counted = counted.clone();
        async move {
            *counted.lock().unwrap() += 1;
            Ok::<(), String>(())
        }
    });
    (builder, runs)
}

#[tokio::test]
async fn repeated_triggers_run_the_sequence_once_and_the_second_forces() {
    let shutdown = Shutdown::new();
    let (builder, runs) = with_counted_hook(by_hand(shutdown, Duration::ZERO));
    let sequence = builder.build().unwrap();
    let trigger = sequence.trigger();
    let work = shutdown.guard().unwrap();
    let run = tokio::spawn(sequence.run());

    trigger.fire();
    bounded("drain begins", shutdown.closing()).await;
    // The drain would wait ten minutes for `work`; the second trigger forces it now.
    trigger.fire();
    trigger.fire();
    let report = bounded("forced sequence ends", run).await.unwrap();

    assert_eq!(report.forced_by, Some("manual trigger"));
    assert!(report.forced());
    assert_eq!(report.drain.outcome, DrainOutcome::TimedOut);
    assert!(report.drain.forced);
    assert_eq!(report.drain.still_running, 1);
    assert!(work.is_aborted(), "forced work is told to stop");
    assert_eq!(
        report.hooks[0].outcome,
        HookOutcome::Ok,
        "hooks still run when forced"
    );
    assert_eq!(*runs.lock().unwrap(), 1, "the sequence ran once");
    trigger.fire(); // after the end: nothing happens
    assert_eq!(*runs.lock().unwrap(), 1);
}

/// Triggers that come while a hook runs (a second and a third SIGTERM during clean-up) mark
/// the report forced but cut nothing: the drain's outcome stays as it was, the running hook
/// keeps its own timeout, and the hooks after it still run.
#[tokio::test]
async fn triggers_during_the_hooks_leave_the_drain_and_the_hooks_alone() {
    let shutdown = Shutdown::new();
    let (entered_tx, entered) = oneshot::channel();
    let (release, released) = oneshot::channel::<()>();
    let (builder, runs) = with_counted_hook(by_hand(shutdown, Duration::ZERO).hook(
        "slow",
        Duration::from_secs(600),
        move || async move {
            entered_tx.send(()).unwrap();
            released.await.map_err(|_| "the test went away")
        },
    ));
    let sequence = builder.build().unwrap();
    let trigger = sequence.trigger();
    let run = tokio::spawn(sequence.run());
    trigger.fire();
    bounded("the slow hook starts", entered).await.unwrap();
    trigger.fire();
    trigger.fire();
    release.send(()).unwrap();
    let report = bounded("the sequence ends", run).await.unwrap();

    assert_eq!(report.forced_by, Some("manual trigger"), "{report}");
    assert_eq!(report.drain.outcome, DrainOutcome::Drained, "{report}");
    assert!(!report.drain.forced, "nothing was running to cut: {report}");
    assert_eq!(report.hooks[0].outcome, HookOutcome::Ok, "{report}");
    assert_eq!(report.hooks[1].outcome, HookOutcome::Ok, "{report}");
    assert_eq!(*runs.lock().unwrap(), 1, "the next hook ran once");
}

#[tokio::test]
async fn a_second_trigger_in_the_lame_duck_delay_skips_to_the_abort() {
    let shutdown = Shutdown::new();
    let sequence = by_hand(shutdown, Duration::from_secs(600)).build().unwrap();
    let trigger = sequence.trigger();
    let work = shutdown.guard().unwrap();
    let run = tokio::spawn(sequence.run());
    trigger.fire();
    bounded("shutting down", shutdown.shutting_down()).await;
    trigger.fire();
    let report = bounded("forced sequence ends", run).await.unwrap();
    assert_eq!(report.drain.outcome, DrainOutcome::TimedOut);
    assert!(report.drain.forced);
    assert_eq!(report.drain.still_running, 1);
    drop(work);
}

/// A long-lived response cut at the long-lived deadline leaves the drain `Drained` but not
/// clean (the demo exits 1): the report's table must name what was cut, or it reads
/// "drained" with nothing to explain the failure.
#[tokio::test]
async fn a_long_lived_response_cut_at_its_deadline_is_named_in_the_report_table() {
    let shutdown = Shutdown::new();
    shutdown.set_long_lived_grace(Duration::from_millis(50));
    let sequence = by_hand(shutdown, Duration::ZERO).build().unwrap();
    // A WebSocket whose peer never answers the close: its task drops the connection, and
    // so the guard, at the long-lived deadline.
    let socket = shutdown
        .long_lived_guard(LongLivedKind::Upgrade, Method::GET, "/ws")
        .unwrap();
    let connection = tokio::spawn(async move {
        socket.deadline().await;
        drop(socket);
    });
    sequence.trigger().fire();
    let report = bounded("sequence ends", sequence.run()).await;
    bounded("the connection ends", connection).await.unwrap();

    assert_eq!(report.drain.outcome, DrainOutcome::Drained, "{report}");
    assert_eq!(report.drain.long_lived.len(), 1, "{report}");
    assert!(!report.is_clean());
    let table = report.to_string();
    let drain_row = table
        .lines()
        .find(|line| line.trim_start().starts_with("drain"))
        .unwrap();
    assert!(
        drain_row.contains("1 long-lived cut") && drain_row.contains("upgrade GET /ws"),
        "the drain row does not name the cut connection:\n{table}"
    );
}

/// Admission closed by another hand during the lame-duck delay (`Shutdown::force` from the
/// application's own handler) ends the delay: requests are refused from then on, so there is
/// no lame duck left to wait out before the drain's outcome and the hooks.
#[tokio::test]
async fn a_force_from_outside_the_sequence_ends_its_lame_duck_delay() {
    let shutdown = Shutdown::new();
    let (builder, runs) = with_counted_hook(by_hand(shutdown, Duration::from_secs(600)));
    let sequence = builder.build().unwrap();
    let trigger = sequence.trigger();
    let work = shutdown.guard().unwrap();
    let run = tokio::spawn(sequence.run());
    trigger.fire();
    bounded("lame duck begins", shutdown.shutting_down()).await;

    assert!(shutdown.force(), "the force cuts `work` short");
    let report = bounded("the sequence ends after the force", run)
        .await
        .unwrap();
    assert_eq!(report.drain.outcome, DrainOutcome::TimedOut, "{report}");
    assert!(report.drain.forced, "{report}");
    assert_eq!(report.drain.still_running, 1, "{report}");
    assert_eq!(report.forced_by, None, "no second trigger came");
    assert_eq!(*runs.lock().unwrap(), 1, "the hooks ran");
    drop(work);
}

/// A lame duck the application began itself before the trigger (readiness flipped by a
/// `preStop` handler, say) still lasts the sequence's lame-duck delay: readiness must have
/// failed that long before admission closes, or load balancers may still route here when
/// requests start being refused. On Tokio's paused clock, so the figures are exact.
#[tokio::test(start_paused = true)]
async fn a_lame_duck_begun_by_hand_before_the_trigger_still_lasts_the_delay() {
    let shutdown = Shutdown::new();
    let lame_duck = Duration::from_secs(2);
    let sequence = by_hand(shutdown, lame_duck).build().unwrap();
    let trigger = sequence.trigger();
    assert!(shutdown.begin_lame_duck());
    let run = tokio::spawn(sequence.run());
    let triggered = tokio::time::Instant::now();
    trigger.fire();
    bounded("admission closes", shutdown.closing()).await;
    assert_eq!(
        triggered.elapsed(),
        lame_duck,
        "admission closed before the lame-duck delay was over"
    );
    let report = bounded("the sequence ends", run).await.unwrap();
    assert_eq!(report.lame_duck, lame_duck, "{report}");
    assert!(report.is_clean(), "{report}");
}

#[tokio::test]
async fn a_future_can_trigger_the_sequence() {
    let shutdown = Shutdown::new();
    let (stop, stopped) = oneshot::channel::<()>();
    let sequence = ShutdownSequence::builder(shutdown)
        .lame_duck(Duration::ZERO)
        .no_signals()
        .trigger_on(async move {
            let _ = stopped.await;
        })
        .build()
        .unwrap();
    let run = tokio::spawn(sequence.run());
    stop.send(()).unwrap();
    let report = bounded("sequence ends", run).await.unwrap();
    assert_eq!(report.trigger, "trigger future");
    assert_eq!(report.drain.outcome, DrainOutcome::Drained);
    assert!(report.is_clean());
}

/// A zero delay skips the lame duck: the report says so, with no time spent there, rather
/// than a lame duck of a few microseconds during which readiness failed.
#[tokio::test]
async fn a_skipped_lame_duck_is_reported_as_skipped() {
    let shutdown = Shutdown::new();
    let sequence = by_hand(shutdown, Duration::ZERO).build().unwrap();
    sequence.trigger().fire();
    let report = bounded("sequence ends", sequence.run()).await;
    assert_eq!(report.lame_duck, Duration::ZERO, "{report}");
    assert_lame_duck_row_says_skipped(&report);
}

/// A sequence triggered once the application has drained by itself (an admin endpoint
/// calling `drain`, a trigger future waiting on `closing()`) has no lame duck left to give:
/// requests were already refused. The report says the phase was skipped, not that requests
/// were admitted for the few microseconds the sequence took to see admission closed.
#[tokio::test]
async fn a_drain_finished_before_the_trigger_leaves_the_lame_duck_skipped() {
    let shutdown = Shutdown::new();
    let sequence = by_hand(shutdown, Duration::from_secs(600)).build().unwrap();
    let own = bounded(
        "the application's drain",
        shutdown.drain(Duration::from_secs(600)).unwrap(),
    )
    .await;
    sequence.trigger().fire();
    let report = bounded("sequence ends", sequence.run()).await;
    assert_eq!(report.drain, own, "the application's drain is joined");
    assert_eq!(report.lame_duck, Duration::ZERO, "{report}");
    assert_lame_duck_row_says_skipped(&report);
}

/// The report's table names the lame duck as skipped, not as time requests were admitted.
fn assert_lame_duck_row_says_skipped(report: &ShutdownReport) {
    let table = report.to_string();
    let row = table
        .lines()
        .find(|line| line.trim_start().starts_with("lame duck"))
        .unwrap();
    assert!(
        row.ends_with("skipped: readiness failed with the drain"),
        "{table}"
    );
}

/// A trigger future is the application's code: one that panics (an `expect` on a channel
/// whose sender went away with the admin server holding it) is dropped. It neither takes the
/// sequence down, which would skip the drain and every hook, nor counts as a trigger.
#[tokio::test]
async fn a_trigger_future_that_panics_is_dropped_and_the_sequence_runs_on() {
    let shutdown = Shutdown::new();
    let (admin, admin_requests) = oneshot::channel::<()>();
    let sequence = by_hand(shutdown, Duration::ZERO)
        .trigger_on(async move {
            admin_requests.await.expect("the admin server is running");
        })
        .build()
        .unwrap();
    let trigger = sequence.trigger();
    let work = shutdown.guard().unwrap();
    // Gone before the sequence first looks: its trigger future panics at its first poll.
    drop(admin);
    let run = tokio::spawn(sequence.run());
    tokio::task::yield_now().await;
    assert_eq!(
        shutdown.phase(),
        Phase::Serving,
        "a panicking trigger future does not start the sequence"
    );

    trigger.fire();
    bounded("drain begins", shutdown.closing()).await;
    drop(work);
    let report = bounded("sequence ends", run)
        .await
        .expect("the sequence survives a panicking trigger future");
    assert_eq!(report.trigger, "manual trigger");
    assert_eq!(report.forced_by, None);
    assert_eq!(report.drain.outcome, DrainOutcome::Drained);
}

#[test]
fn over_budget_configuration_is_refused_at_build_naming_the_numbers() {
    let error = ShutdownSequence::builder(Shutdown::new())
        .lame_duck(Duration::from_secs(5))
        .drain_timeout(Duration::from_secs(20))
        .hook("db", Duration::from_secs(3), || async {
            Ok::<(), String>(())
        })
        .hook("queue", Duration::from_millis(4500), || async {
            Ok::<(), String>(())
        })
        .budget(Duration::from_secs(30))
        .no_signals()
        .build()
        .unwrap_err();
    assert!(
        matches!(error, SequenceError::OverBudget { .. }),
        "{error:?}"
    );
    let message = error.to_string();
    for figure in [
        "needs 32.5s",
        "lame duck 5s",
        "drain timeout 20s",
        "hook `db` 3s",
        "hook `queue` 4.5s",
        "budget of 30s",
    ] {
        assert!(message.contains(figure), "{message:?} lacks {figure:?}");
    }

    // Exactly at the budget is fine.
    ShutdownSequence::builder(Shutdown::new())
        .lame_duck(Duration::from_secs(5))
        .drain_timeout(Duration::from_secs(22))
        .hook("db", Duration::from_secs(3), || async {
            Ok::<(), String>(())
        })
        .budget(Duration::from_secs(30))
        .no_signals()
        .build()
        .expect("a plan that fits its budget");
}

#[test]
fn zero_and_absurd_durations_are_refused_with_a_clear_error() {
    let builder = || ShutdownSequence::builder(Shutdown::new()).no_signals();

    let error = builder().budget(Duration::ZERO).build().unwrap_err();
    assert!(matches!(error, SequenceError::Zero { .. }), "{error:?}");
    assert!(
        error.to_string().contains("the shutdown budget is zero"),
        "{error}"
    );

    let error = builder()
        .hook("db", Duration::ZERO, || async { Ok::<(), String>(()) })
        .build()
        .unwrap_err();
    assert!(
        error
            .to_string()
            .contains("the timeout of hook `db` is zero"),
        "{error}"
    );

    let error = builder()
        .drain_timeout(Duration::from_secs(30 * 24 * 3600))
        .budget(Duration::from_secs(3600))
        .build()
        .unwrap_err();
    assert!(matches!(error, SequenceError::TooLong { .. }), "{error:?}");
    assert!(
        error.to_string().contains("the drain timeout of 2592000s"),
        "{error}"
    );

    // Zero lame duck and zero drain timeout are meaningful: skip it, do not wait.
    builder()
        .lame_duck(Duration::ZERO)
        .drain_timeout(Duration::ZERO)
        .build()
        .expect("zero delay and zero drain timeout are accepted");
}

#[test]
fn listening_for_signals_outside_a_runtime_is_a_clear_error() {
    let error = ShutdownSequence::builder(Shutdown::new())
        .build()
        .unwrap_err();
    assert!(matches!(error, SequenceError::NoRuntime), "{error:?}");
    assert!(error.to_string().contains("Tokio runtime"), "{error}");
}

/// An empty signal list listens for nothing, as `no_signals()` does: it needs no runtime,
/// and is not refused as if it listened.
#[cfg(unix)]
#[test]
fn an_empty_signal_list_listens_for_none_and_builds_outside_a_runtime() {
    let sequence = ShutdownSequence::builder(Shutdown::new())
        .signals([])
        .build()
        .expect("nothing to listen for, so no runtime is needed");
    drop(sequence);
}

/// Building a sequence that listens for signals inside a Tokio runtime whose I/O driver is
/// off (no `enable_io`) is a clear error, as outside a runtime, not a panic: tokio's signal
/// driver lives in its I/O driver.
#[test]
fn listening_for_signals_in_a_runtime_without_io_is_an_error_not_a_panic() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    let built = catch_unwind(AssertUnwindSafe(|| {
        runtime.block_on(async { ShutdownSequence::builder(Shutdown::new()).build() })
    }));
    let result = built.unwrap_or_else(|panic| {
        let message = panic
            .downcast_ref::<&str>()
            .map(|message| (*message).to_owned())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_default();
        panic!("build() panicked instead of returning an error: {message}")
    });
    let error = result.expect_err("no signal handler can be installed without the I/O driver");
    assert!(
        matches!(
            error,
            SequenceError::Signal { .. } | SequenceError::NoRuntime
        ),
        "{error:?}"
    );
}

#[test]
fn a_sequence_without_signals_builds_and_runs_in_a_runtime_without_io() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    runtime.block_on(async {
        let sequence = ShutdownSequence::builder(Shutdown::new())
            .no_signals()
            .lame_duck(std::time::Duration::ZERO)
            .build()
            .unwrap();
        sequence.trigger().fire();
        let report = sequence.run().await;
        assert!(report.is_clean(), "{report}");
    });
}

/// With `serde`, every duration in the report sits under a key ending in `_ms`, as the README
/// says, and a hook's `detail` is always text.
#[cfg(feature = "serde")]
#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_timed_out_hook_serialises_its_timeout_under_an_ms_key() {
    use serde_json::Value;

    let shutdown = Shutdown::new();
    let sequence = ShutdownSequence::builder(shutdown)
        .lame_duck(Duration::ZERO)
        .drain_timeout(Duration::from_secs(1))
        .hook("hangs", Duration::from_secs(3), || {
            std::future::pending::<Result<(), std::io::Error>>()
        })
        .hook("fails", Duration::from_secs(1), || async {
            Err::<(), _>(std::io::Error::other("boom"))
        })
        .budget(Duration::from_secs(60))
        .no_signals()
        .build()
        .unwrap();
    sequence.trigger().fire();
    let report = sequence.run().await;
    let json = serde_json::to_value(&report).unwrap();
    let hooks = json["hooks"].as_array().unwrap();
    let timed_out = &hooks[0]["outcome"];
    let failed = &hooks[1]["outcome"];
    assert_eq!(timed_out["status"], "timed_out", "{json}");
    assert_eq!(failed["status"], "failed", "{json}");
    assert_eq!(timed_out["timeout_ms"], 3000.0, "{json}");
    // Durations sit under `_ms` keys, and `detail` is always text.
    let number_keys: Vec<&String> = timed_out
        .as_object()
        .unwrap()
        .iter()
        .filter(|(_, value)| matches!(value, Value::Number(_)))
        .map(|(key, _)| key)
        .collect();
    assert!(
        number_keys.iter().all(|key| key.ends_with("_ms")),
        "duration under a key without `_ms`: {timed_out}"
    );
    assert!(failed["detail"].is_string(), "{failed}");
    assert!(
        timed_out.get("detail").is_none_or(Value::is_string),
        "`detail` changes type with the status: {failed} vs {timed_out}"
    );
}

/// A hook's error is reported with the causes its type shows in its alternate form, as
/// anyhow's and eyre's errors do: "closing the pool" alone would hide why.
#[tokio::test]
async fn a_failed_hook_is_reported_with_the_causes_its_error_carries() {
    struct WithCause;
    impl std::fmt::Display for WithCause {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("closing the pool")?;
            if f.alternate() {
                f.write_str(": connection refused")?;
            }
            Ok(())
        }
    }
    let shutdown = Shutdown::new();
    let sequence = by_hand(shutdown, Duration::ZERO)
        .hook("pool", Duration::from_secs(5), || async {
            Err::<(), _>(WithCause)
        })
        .build()
        .unwrap();
    let trigger = sequence.trigger();
    let run = tokio::spawn(sequence.run());
    trigger.fire();
    let report = bounded("the sequence", run).await.unwrap();
    assert_eq!(
        report.hooks[0].outcome,
        HookOutcome::Failed("closing the pool: connection refused".into())
    );
}

/// The table has one line per phase and per hook, whatever a hook's name or message holds:
/// `assert_eq!`'s panic message spans three lines, an error may end in a line break, and a
/// name may carry a terminal escape. Each is shown escaped on its row, the columns stay
/// aligned, and the report's values keep the text as it was.
#[tokio::test]
async fn line_breaks_in_hook_names_and_messages_keep_the_table_one_row_each() {
    let shutdown = Shutdown::new();
    let sequence = by_hand(shutdown, Duration::ZERO)
        .hook("queue\nflush", Duration::from_secs(5), || async {
            Ok::<(), String>(())
        })
        .hook("pool", Duration::from_secs(5), || async {
            if true {
                panic!("assertion `left == right` failed\n  left: 1\n right: 2");
            }
            Ok::<(), String>(())
        })
        .hook("\u{1b}[2Jcache ✓", Duration::from_secs(5), || async {
            Err::<(), _>("refused\r\n")
        })
        .build()
        .unwrap();
    let trigger = sequence.trigger();
    let run = tokio::spawn(sequence.run());
    trigger.fire();
    let report = bounded("the sequence", run).await.unwrap();
    assert_eq!(
        report.hooks[1].outcome,
        HookOutcome::Panicked("assertion `left == right` failed\n  left: 1\n right: 2".into()),
        "the value keeps the message whole"
    );

    let table = report.to_string();
    let rows: Vec<&str> = table.lines().collect();
    assert_eq!(
        rows.len(),
        1 + 2 + 3,
        "a title, two phases, three hooks:\n{table}"
    );
    for (row, expected) in
        rows[3..]
            .iter()
            .zip([r"hook queue\nflush", r"hook pool", r"hook \u{1b}[2Jcache ✓"])
    {
        assert!(
            row.trim_start().starts_with(expected),
            "{row:?} in\n{table}"
        );
    }
    assert!(
        rows[4].ends_with(r"failed\n  left: 1\n right: 2"),
        "{table}"
    );
    assert!(rows[5].ends_with(r"failed: refused\r\n"), "{table}");
    assert!(!table.contains('\u{1b}'), "{table:?}");
    // Every row's duration ends in the same column: where the lame-duck row's does.
    let column = rows[1].find("ms  ").expect("a lame-duck duration") + 2;
    for row in &rows[1..] {
        let chars: Vec<char> = row.chars().collect();
        assert_eq!(chars[column - 1], 's', "{row:?} in\n{table}");
        assert_eq!(
            &chars[column..column + 2],
            [' ', ' '],
            "{row:?} in\n{table}"
        );
    }
}
