//! The shutdown sequence as an operator and an application meet it at its edges: signals at
//! every step and on unusual runtimes, hooks that misbehave in the ways real clean-up code
//! does, reports of every outcome mix, the log lines a real subscriber prints, and the
//! Kubernetes figures the README and `examples/kubernetes.yaml` give.
//!
//! Signal tests run this test binary again as a child process (only that test, with `CHILD`
//! set) and signal the child with `kill`: a signal sent to this process would reach every test
//! running beside it.

mod support;

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc as std_mpsc;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use serde_json::Value;
use tower_drain::{HookOutcome, SequenceError, Shutdown, ShutdownReport, ShutdownSequence};
use tracing::Instrument;

use support::{bounded, by_hand, hook_outcomes};

/// Set in the child's environment: the test then plays the child's part.
const CHILD: &str = "TOWER_DRAIN_SEQUENCE_ADVERSARIAL_CHILD";
/// Bound on every wait; only reached when something is broken.
const WAIT: Duration = Duration::from_secs(30);

// === a real subscriber's output ===

/// Everything a `tracing_subscriber::fmt` subscriber wrote, as an operator's log shows it.
#[derive(Clone, Default)]
struct LogText(Arc<Mutex<Vec<u8>>>);

impl Write for LogText {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl LogText {
    fn lines(&self) -> Vec<String> {
        String::from_utf8(self.0.lock().unwrap().clone())
            .unwrap()
            .lines()
            .map(str::to_owned)
            .collect()
    }

    /// The one line containing `needle`; fails unless there is exactly one.
    fn line(&self, needle: &str) -> String {
        let lines = self.lines();
        let found: Vec<&String> = lines.iter().filter(|l| l.contains(needle)).collect();
        assert_eq!(found.len(), 1, "{needle:?} in\n{}", lines.join("\n"));
        found[0].clone()
    }

    /// A subscriber writing here, plain text without colours or times.
    fn subscriber(&self) -> impl tracing::Subscriber + Send + Sync {
        let log = self.clone();
        tracing_subscriber::fmt()
            .with_writer(move || log.clone())
            .with_ansi(false)
            .without_time()
            .with_target(false)
            .finish()
    }
}

/// A line an application's hook logs is read in the log next to the sequence's own lines: it
/// must say which hook it comes from and keep the span the application runs the sequence in
/// (a service name, a pod), as the sequence's own lines do. Hooks run on tasks of their own,
/// and a spawned task starts with no span.
#[tokio::test]
async fn a_hooks_own_log_lines_keep_the_callers_span_and_name_the_hook() {
    let log = LogText::default();
    let _default = tracing::subscriber::set_default(log.subscriber());
    let shutdown = Shutdown::new();
    let sequence = by_hand(shutdown, Duration::ZERO)
        .hook("database pool", Duration::from_secs(5), || async {
            tracing::warn!("pool: 2 connections refused to close");
            Ok::<(), String>(())
        })
        .build()
        .unwrap();
    sequence.trigger().fire();
    // On this thread: the default subscriber is this thread's, and a current-thread runtime
    // runs the hook's task here too.
    let report = bounded(
        "the sequence",
        sequence
            .run()
            .instrument(tracing::info_span!("service", name = "billing")),
    )
    .await;
    assert!(report.is_clean(), "{report}");

    let own = log.line("clean-up hook starting");
    assert!(own.contains("service{name=\"billing\"}"), "{own}");
    let hooks = log.line("pool: 2 connections refused to close");
    assert!(
        hooks.contains("service{name=\"billing\"}"),
        "the hook's line lost the caller's span: {hooks}"
    );
    assert!(
        hooks.contains("database pool"),
        "the hook's line does not say which hook logged it: {hooks}"
    );
}

/// Each event is one line in a plain-text log, as each row of the report's table is: a
/// line-based log pipeline (a container runtime's) makes each line an entry of its own, so a
/// hook's `assert_eq!` panic or an error ending in a line break would leave entries with no
/// level and no hook name, and a message could forge a line that looks like the sequence's.
#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn hook_names_errors_and_panics_with_line_breaks_log_one_line_per_event() {
    let log = LogText::default();
    let _default = tracing::subscriber::set_default(log.subscriber());
    let shutdown = Shutdown::new();
    let sequence = by_hand(shutdown, Duration::ZERO)
        .hook("queue\nflush", Duration::from_secs(1), || async {
            Err::<(), _>("refused\n INFO shutdown sequence complete")
        })
        .hook("pool", Duration::from_secs(1), || async {
            if true {
                panic!("assertion `left == right` failed\n  left: 1\n right: 2");
            }
            Ok::<(), String>(())
        })
        .trigger_on(async {
            tokio::time::sleep(Duration::from_secs(3600)).await;
        })
        .trigger_on(async { panic!("sender gone\nfor good") })
        .build()
        .unwrap();
    sequence.trigger().fire();
    let report = bounded("the sequence", sequence.run()).await;
    assert!(!report.is_clean());
    let lines = log.lines();
    let levels = [" INFO ", " WARN ", "ERROR ", "DEBUG ", "TRACE "];
    for line in &lines {
        assert!(
            levels.iter().any(|level| line.starts_with(level)),
            "a line that is not an event of its own: {line:?} in\n{}",
            lines.join("\n")
        );
    }
    assert_eq!(
        lines
            .iter()
            .filter(|line| line[6..].starts_with("shutdown sequence complete"))
            .count(),
        1,
        "{}",
        lines.join("\n")
    );
}

/// A second signal while the hooks run, after a drain that timed out with a request still
/// running: the log must not say "nothing left running" beside `in_flight=1`. What was
/// running was cut at the deadline already, and the line says so.
#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_second_trigger_after_a_timed_out_drain_says_the_drain_was_already_cut() {
    let log = LogText::default();
    let _default = tracing::subscriber::set_default(log.subscriber());
    let shutdown = Shutdown::new();
    let _stuck = shutdown.guard().unwrap();
    let (hook_started, started) = tokio::sync::oneshot::channel::<()>();
    let (finish_hook, finish) = tokio::sync::oneshot::channel::<()>();
    let sequence = ShutdownSequence::builder(shutdown)
        .lame_duck(Duration::ZERO)
        .drain_timeout(Duration::from_secs(1))
        .hook("pool", Duration::from_secs(5), move || async move {
            let _ = hook_started.send(());
            let _ = finish.await;
            Ok::<(), String>(())
        })
        .no_signals()
        .build()
        .unwrap();
    let trigger = sequence.trigger();
    trigger.fire();
    let run = tokio::spawn(sequence.run());
    bounded("the hook", started).await.unwrap();
    trigger.fire();
    // The sequence hears the trigger before the hook is let go: both wait on this thread.
    tokio::task::yield_now().await;
    finish_hook.send(()).unwrap();
    let report = bounded("the sequence", run).await.unwrap();
    assert_eq!(report.forced_by, Some("manual trigger"), "{report}");
    assert_eq!(report.drain.still_running, 1, "{report}");

    let line = log.line("second trigger");
    assert!(line.contains("in_flight=1"), "{line}");
    assert!(
        !line.contains("nothing left running"),
        "says nothing runs while a request does: {line}"
    );
    assert!(line.contains("already"), "{line}");
}

// === signals, for real, in a child process ===

/// This test binary run again with only `test` selected, playing the child's part.
struct ChildTest {
    /// Taken by [`ChildTest::exit`].
    child: Option<Child>,
    lines: std_mpsc::Receiver<String>,
}

impl ChildTest {
    fn start(test: &str) -> ChildTest {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args([test, "--exact", "--nocapture", "--test-threads=1"])
            .env(CHILD, "1")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("the test binary starts again");
        let (send, lines) = std_mpsc::channel();
        let stdout = child.stdout.take().unwrap();
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = send.send(line);
            }
        });
        ChildTest {
            child: Some(child),
            lines,
        }
    }

    /// What follows `marker` on the next stdout line holding it.
    fn wait_for(&self, marker: &str) -> String {
        loop {
            match self.lines.recv_timeout(WAIT) {
                Ok(line) => {
                    if let Some((_, rest)) = line.split_once(marker) {
                        return rest.to_owned();
                    }
                }
                Err(error) => panic!("no child line with {marker:?}: {error}"),
            }
        }
    }

    /// The JSON report printed after `marker`.
    fn report(&self, marker: &str) -> Value {
        serde_json::from_str(&self.wait_for(marker)).unwrap()
    }

    fn signal(&self, name: &str) {
        let id = self.child.as_ref().unwrap().id();
        let status = Command::new("kill")
            .args([&format!("-{name}"), &id.to_string()])
            .status()
            .expect("kill runs");
        assert!(status.success(), "kill -{name} {id}");
    }

    /// How the child exits, if it does within [`WAIT`].
    fn exit(mut self) -> Option<std::process::ExitStatus> {
        let mut child = self.child.take().unwrap();
        let (send, exited) = std_mpsc::channel();
        thread::spawn(move || {
            let _ = send.send(child.wait().expect("the child is waited for"));
        });
        exited.recv_timeout(WAIT).ok()
    }
}

impl Drop for ChildTest {
    fn drop(&mut self) {
        // A failed test must not leave its child running.
        if let Some(child) = self.child.as_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn is_child() -> bool {
    std::env::var_os(CHILD).is_some()
}

/// Prints `marker` and the report as one JSON line, for the parent to read.
fn print_report(marker: &str, report: &ShutdownReport) {
    println!("\n{marker}{}", serde_json::to_string(report).unwrap());
}

/// Prints `lame duck:` once `shutdown`'s lame duck has begun, so the parent signals again
/// only then.
fn say_when_shutting_down(shutdown: Shutdown) {
    tokio::spawn(async move {
        shutdown.shutting_down().await;
        println!("\nlame duck:");
    });
}

/// Ctrl-C in a terminal, then `kill` from another: the first signal starts the sequence, the
/// second, of another kind, forces it, and the report names each.
#[cfg(unix)]
#[test]
fn sigint_then_sigterm_starts_then_forces_and_the_report_names_both() {
    if is_child() {
        let runtime = tokio::runtime::Runtime::new().unwrap();
        return runtime.block_on(async {
            let shutdown = Shutdown::new();
            let sequence = ShutdownSequence::builder(shutdown)
                .lame_duck(Duration::from_secs(20))
                .drain_timeout(Duration::from_secs(5))
                .build()
                .unwrap();
            say_when_shutting_down(shutdown);
            println!("\nready:");
            let report = tokio::time::timeout(WAIT, sequence.run()).await.unwrap();
            print_report("report:", &report);
        });
    }
    let child =
        ChildTest::start("sigint_then_sigterm_starts_then_forces_and_the_report_names_both");
    child.wait_for("ready:");
    child.signal("INT");
    child.wait_for("lame duck:");
    child.signal("TERM");
    let report = child.report("report:");
    assert_eq!(report["trigger"], "SIGINT", "{report}");
    assert_eq!(report["forced_by"], "SIGTERM", "{report}");
}

/// A signal that comes after the handlers are installed but before `run` is first polled (the
/// server still starting) is kept: `run` starts the sequence at once.
#[cfg(unix)]
#[test]
fn a_sigterm_before_run_is_polled_starts_the_sequence_at_once() {
    if is_child() {
        let runtime = tokio::runtime::Runtime::new().unwrap();
        return runtime.block_on(async {
            let shutdown = Shutdown::new();
            let sequence = ShutdownSequence::builder(shutdown)
                .lame_duck(Duration::ZERO)
                .build()
                .unwrap();
            // SIGTERM is handled by now: it reaches this listener too, which says it came.
            let mut came =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).unwrap();
            println!("\nready:");
            tokio::time::timeout(WAIT, came.recv()).await.unwrap();
            let report = tokio::time::timeout(WAIT, sequence.run()).await.unwrap();
            print_report("report:", &report);
        });
    }
    let child = ChildTest::start("a_sigterm_before_run_is_polled_starts_the_sequence_at_once");
    child.wait_for("ready:");
    child.signal("TERM");
    let report = child.report("report:");
    assert_eq!(report["trigger"], "SIGTERM", "{report}");
    assert_eq!(report["forced_by"], Value::Null, "{report}");
}

/// On a current-thread runtime (`#[tokio::main(flavor = "current_thread")]`) signals start
/// and force the sequence, and its hooks run, as on the default runtime.
#[cfg(unix)]
#[test]
fn a_sequence_on_a_current_thread_runtime_is_started_and_forced_by_signals() {
    if is_child() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        return runtime.block_on(async {
            let shutdown = Shutdown::new();
            let sequence = ShutdownSequence::builder(shutdown)
                .lame_duck(Duration::from_secs(20))
                .drain_timeout(Duration::from_secs(1))
                .hook("pool", Duration::from_secs(1), || async {
                    tokio::task::yield_now().await;
                    Ok::<(), String>(())
                })
                .build()
                .unwrap();
            say_when_shutting_down(shutdown);
            println!("\nready:");
            let report = tokio::time::timeout(WAIT, sequence.run()).await.unwrap();
            print_report("report:", &report);
        });
    }
    let child =
        ChildTest::start("a_sequence_on_a_current_thread_runtime_is_started_and_forced_by_signals");
    child.wait_for("ready:");
    child.signal("TERM");
    child.wait_for("lame duck:");
    child.signal("TERM");
    let report = child.report("report:");
    assert_eq!(report["trigger"], "SIGTERM", "{report}");
    assert_eq!(report["forced_by"], "SIGTERM", "{report}");
    assert_eq!(report["hooks"][0]["outcome"]["status"], "ok", "{report}");
}

/// Two sequences in one process (two servers, each with its controller) both hear one
/// SIGTERM: each runs once, and neither is forced by the other's signal.
#[cfg(unix)]
#[test]
fn one_sigterm_starts_two_sequences_in_one_process_without_forcing_either() {
    if is_child() {
        let runtime = tokio::runtime::Runtime::new().unwrap();
        return runtime.block_on(async {
            let build = |shutdown| {
                ShutdownSequence::builder(shutdown)
                    .lame_duck(Duration::from_millis(50))
                    .drain_timeout(Duration::from_secs(1))
                    .build()
                    .unwrap()
            };
            let (first, second) = (build(Shutdown::new()), build(Shutdown::new()));
            println!("\nready:");
            let (first, second) =
                tokio::time::timeout(WAIT, async { tokio::join!(first.run(), second.run()) })
                    .await
                    .unwrap();
            print_report("first:", &first);
            print_report("second:", &second);
        });
    }
    let child =
        ChildTest::start("one_sigterm_starts_two_sequences_in_one_process_without_forcing_either");
    child.wait_for("ready:");
    child.signal("TERM");
    for marker in ["first:", "second:"] {
        let report = child.report(marker);
        assert_eq!(report["trigger"], "SIGTERM", "{report}");
        assert_eq!(report["forced_by"], Value::Null, "{report}");
    }
}

/// Two SIGTERMs that both arrive before the sequence has taken the first (here, before `run`
/// is polled; likewise while its thread is held) count as one: Tokio merges the signals of
/// one kind that its listener has not yet seen. The sequence starts, and is not forced. The
/// README says so, so an operator knows to send the second one after the first is logged.
#[cfg(unix)]
#[test]
fn two_sigterms_before_the_sequence_takes_the_first_count_as_one() {
    if is_child() {
        let runtime = tokio::runtime::Runtime::new().unwrap();
        return runtime.block_on(async {
            let sequence = ShutdownSequence::builder(Shutdown::new())
                .lame_duck(Duration::from_millis(200))
                .drain_timeout(Duration::from_secs(1))
                .build()
                .unwrap();
            // Sent after both SIGTERMs, and numbered above SIGTERM: it comes after them.
            let mut after =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::window_change())
                    .unwrap();
            println!("\nready:");
            tokio::time::timeout(WAIT, after.recv()).await.unwrap();
            let report = tokio::time::timeout(WAIT, sequence.run()).await.unwrap();
            print_report("report:", &report);
        });
    }
    let child = ChildTest::start("two_sigterms_before_the_sequence_takes_the_first_count_as_one");
    child.wait_for("ready:");
    child.signal("TERM");
    child.signal("TERM");
    child.signal("WINCH");
    let report = child.report("report:");
    assert_eq!(report["trigger"], "SIGTERM", "{report}");
    assert_eq!(report["forced_by"], Value::Null, "{report}");
}

/// SIGHUP and SIGQUIT are not listened for by default: they keep their default action and end
/// the process at once, sequence or not, as an operator expects of them.
#[cfg(unix)]
#[test]
fn sighup_is_not_a_trigger_by_default_and_keeps_its_default_action() {
    use std::os::unix::process::ExitStatusExt;
    if is_child() {
        let runtime = tokio::runtime::Runtime::new().unwrap();
        return runtime.block_on(async {
            let sequence = ShutdownSequence::builder(Shutdown::new()).build().unwrap();
            println!("\nready:");
            let report = tokio::time::timeout(WAIT, sequence.run()).await;
            println!("\nsurvived: {report:?}");
        });
    }
    let child = ChildTest::start("sighup_is_not_a_trigger_by_default_and_keeps_its_default_action");
    child.wait_for("ready:");
    child.signal("HUP");
    let status = child.exit().expect("SIGHUP ends the child");
    assert_eq!(status.signal(), Some(1), "{status:?}");
}

/// `run` dropped while the drain runs (an application racing it against its server), then a
/// new sequence built for the same controller: the new one joins the drain under way instead
/// of starting a lame duck again, and reports it.
#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_sequence_built_after_one_dropped_mid_drain_joins_that_drain() {
    let shutdown = Shutdown::new();
    let guard = shutdown.guard().unwrap();
    let first = by_hand(shutdown, Duration::from_secs(1)).build().unwrap();
    first.trigger().fire();
    let mut run = Box::pin(first.run());
    // Polled until admission closes, then dropped mid-drain.
    tokio::select! {
        _ = &mut run => panic!("the drain cannot end while a guard is held"),
        () = shutdown.closing() => {}
    }
    drop(run);

    let second = by_hand(shutdown, Duration::from_secs(1)).build().unwrap();
    second.trigger().fire();
    let second = tokio::spawn(second.run());
    tokio::task::yield_now().await;
    drop(guard);
    let report = bounded("the second sequence", second).await.unwrap();
    assert_eq!(report.lame_duck, Duration::ZERO, "{report}");
    assert!(report.is_clean(), "{report}");
    assert_eq!(report.drain.in_flight_at_start, 1, "{report}");
}

// === hooks that misbehave ===

/// `panic_any` with an error value, `std::panic::resume_unwind` with a number: the report
/// still says the hook panicked, the next hook still runs.
#[tokio::test]
async fn hooks_panicking_with_payloads_that_are_not_text_are_reported_and_the_next_runs() {
    let shutdown = Shutdown::new();
    let sequence = by_hand(shutdown, Duration::ZERO)
        .hook("number", Duration::from_secs(5), || async {
            std::panic::resume_unwind(Box::new(42_u32));
            #[allow(unreachable_code)]
            Ok::<(), String>(())
        })
        .hook("error value", Duration::from_secs(5), || async {
            std::panic::panic_any(std::io::Error::other("disk gone"));
            #[allow(unreachable_code)]
            Ok::<(), String>(())
        })
        .hook("after", Duration::from_secs(5), || async {
            Ok::<(), String>(())
        })
        .build()
        .unwrap();
    sequence.trigger().fire();
    let report = bounded("the sequence", sequence.run()).await;
    let outcomes = hook_outcomes(&report);
    assert!(
        matches!(&outcomes[0].1, HookOutcome::Panicked(m) if !m.is_empty()),
        "{report}"
    );
    assert!(
        matches!(&outcomes[1].1, HookOutcome::Panicked(m) if !m.is_empty()),
        "{report}"
    );
    assert_eq!(outcomes[2].1, HookOutcome::Ok, "{report}");
    assert!(!report.is_clean());
}

/// An error whose text is a megabyte (a dumped response body) is kept whole in the report and
/// its JSON, and its table row stays one line.
#[tokio::test]
async fn a_hook_error_of_a_megabyte_is_kept_whole_and_its_row_stays_one_line() {
    let huge: String = "connection reset\n".repeat(64 * 1024);
    let expected = huge.clone();
    let shutdown = Shutdown::new();
    let sequence = by_hand(shutdown, Duration::ZERO)
        .hook("queue", Duration::from_secs(5), move || async move {
            Err::<(), _>(huge)
        })
        .build()
        .unwrap();
    sequence.trigger().fire();
    let report = bounded("the sequence", sequence.run()).await;
    assert_eq!(
        report.hooks[0].outcome,
        HookOutcome::Failed(expected.clone())
    );
    let table = report.to_string();
    assert_eq!(table.lines().count(), 4, "a title, two phases, one hook");
    let json = serde_json::to_value(&report).unwrap();
    assert_eq!(json["hooks"][0]["outcome"]["detail"], expected.as_str());
}

/// Hundreds of hooks run one after another in registration order, each reported once, the
/// budget check adding them all up.
#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn hundreds_of_hooks_run_in_order_and_are_each_reported() {
    const HOOKS: usize = 500;
    let order = Arc::new(Mutex::new(Vec::new()));
    let shutdown = Shutdown::new();
    let mut builder = ShutdownSequence::builder(shutdown)
        .lame_duck(Duration::ZERO)
        .drain_timeout(Duration::from_secs(1))
        .no_signals();
    for index in 0..HOOKS {
        let order = Arc::clone(&order);
        builder = builder.hook(
            format!("hook {index}"),
            Duration::from_secs(1),
            move || async move {
                tokio::task::yield_now().await;
                order.lock().unwrap().push(index);
                Ok::<(), String>(())
            },
        );
    }
    // One second short of what they need.
    let refused = builder
        .budget(Duration::from_secs(HOOKS as u64))
        .build()
        .expect_err("500 hooks of 1 s and a 1 s drain need 501 s");
    assert!(
        matches!(&refused, SequenceError::OverBudget { needed, .. } if *needed == Duration::from_secs(HOOKS as u64 + 1)),
        "{refused}"
    );

    let mut builder = ShutdownSequence::builder(shutdown)
        .lame_duck(Duration::ZERO)
        .drain_timeout(Duration::from_secs(1))
        .budget(Duration::from_secs(HOOKS as u64 + 1))
        .no_signals();
    for index in 0..HOOKS {
        let order = Arc::clone(&order);
        builder = builder.hook(
            format!("hook {index}"),
            Duration::from_secs(1),
            move || async move {
                tokio::task::yield_now().await;
                order.lock().unwrap().push(index);
                Ok::<(), String>(())
            },
        );
    }
    let sequence = builder.build().unwrap();
    sequence.trigger().fire();
    let report = bounded("the sequence", sequence.run()).await;
    assert!(report.is_clean());
    assert_eq!(*order.lock().unwrap(), (0..HOOKS).collect::<Vec<_>>());
    let names: Vec<String> = report.hooks.iter().map(|h| h.name.clone()).collect();
    assert_eq!(
        names,
        (0..HOOKS).map(|i| format!("hook {i}")).collect::<Vec<_>>()
    );
    assert_eq!(report.to_string().lines().count(), 3 + HOOKS);
}

/// A hook that blocks its thread for a moment (a synchronous flush) on a multi-thread
/// runtime, within its timeout, ends `Ok`; one that hands its tasks off and returns ends `Ok`
/// at once, and what it spawned runs on (hooks are not a task tracker).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hook_that_blocks_briefly_or_spawns_and_returns_is_reported_ok() {
    let (spawned_ran, ran) = tokio::sync::oneshot::channel::<()>();
    let (release, released) = tokio::sync::oneshot::channel::<()>();
    let shutdown = Shutdown::new();
    let sequence = by_hand(shutdown, Duration::ZERO)
        .hook("blocks", Duration::from_secs(20), || async {
            std::thread::sleep(Duration::from_millis(20));
            Ok::<(), String>(())
        })
        .hook("spawns", Duration::from_secs(20), move || async move {
            tokio::spawn(async move {
                let _ = released.await;
                let _ = spawned_ran.send(());
            });
            Ok::<(), String>(())
        })
        .build()
        .unwrap();
    sequence.trigger().fire();
    let report = bounded("the sequence", sequence.run()).await;
    assert!(report.is_clean(), "{report}");
    release.send(()).unwrap();
    bounded("the spawned task", ran).await.unwrap();
}

/// A zero hook timeout and `Duration::MAX` are refused, and the error names the hook, so
/// the operator can find the setting among several.
#[test]
fn zero_and_maximal_hook_timeouts_are_refused_naming_the_hook() {
    for (timeout, words) in [
        (Duration::ZERO, "is zero"),
        (Duration::MAX, "longer than the maximum"),
    ] {
        let error = ShutdownSequence::builder(Shutdown::new())
            .hook("search index", timeout, || async { Ok::<(), String>(()) })
            .no_signals()
            .build()
            .expect_err("refused");
        let text = error.to_string();
        assert!(text.contains("hook `search index`"), "{text}");
        assert!(text.contains(words), "{text}");
    }
}

// === the report, every outcome mix ===

/// Every mix of hook outcomes: the report is clean only when the drain drained and every
/// hook succeeded; a forced sequence that cut nothing is still clean; the JSON says each
/// outcome under `status`, and the table has a row for each.
#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn every_mix_of_hook_outcomes_reads_the_same_in_is_clean_the_table_and_the_json() {
    type Make =
        fn() -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), String>> + Send>>;
    let kinds: [(&str, Make, &str); 4] = [
        ("ok", || Box::pin(async { Ok(()) }), "ok"),
        (
            "fails",
            || Box::pin(async { Err("refused".to_owned()) }),
            "failed",
        ),
        ("hangs", || Box::pin(std::future::pending()), "timed_out"),
        (
            "panics",
            || {
                Box::pin(async {
                    if true {
                        panic!("pool poisoned");
                    }
                    Ok(())
                })
            },
            "panicked",
        ),
    ];
    // Every pair, in both orders, and each alone.
    for first in 0..kinds.len() {
        for second in 0..=kinds.len() {
            let mut chosen = vec![kinds[first]];
            if second < kinds.len() {
                chosen.push(kinds[second]);
            }
            let shutdown = Shutdown::new();
            let mut builder = by_hand(shutdown, Duration::ZERO);
            for (name, make, _) in &chosen {
                builder = builder.hook(*name, Duration::from_secs(1), *make);
            }
            let sequence = builder.build().unwrap();
            let trigger = sequence.trigger();
            trigger.fire();
            // A second trigger with nothing in flight: forced, nothing cut.
            trigger.fire();
            let report = bounded("the sequence", sequence.run()).await;
            assert_eq!(report.forced_by, Some("manual trigger"));
            let all_ok = chosen.iter().all(|(name, ..)| *name == "ok");
            assert_eq!(report.is_clean(), all_ok, "{report}");
            let table = report.to_string();
            assert_eq!(table.lines().count(), 3 + chosen.len(), "{table}");
            let json = serde_json::to_value(&report).unwrap();
            for (index, (name, _, status)) in chosen.iter().enumerate() {
                assert_eq!(json["hooks"][index]["name"], *name, "{json}");
                assert_eq!(json["hooks"][index]["outcome"]["status"], *status, "{json}");
                let row = table.lines().nth(3 + index).unwrap();
                assert!(row.contains(&format!("hook {name}")), "{table}");
            }
        }
    }
}

// === the Kubernetes figures ===

/// The first whole number after `key` in `text`.
fn figure_after(text: &str, key: &str) -> u64 {
    let at = text
        .find(key)
        .unwrap_or_else(|| panic!("{key:?} not found"))
        + key.len();
    let digits: String = text[at..]
        .chars()
        .skip_while(|c| !c.is_ascii_digit())
        .take_while(char::is_ascii_digit)
        .collect();
    digits
        .parse()
        .unwrap_or_else(|_| panic!("no figure after {key:?}"))
}

/// The rules of the README's Kubernetes table, checked against the figures
/// `examples/kubernetes.yaml` and the demo use. The liveness rule counts as kubelet does: it
/// restarts a container at the `failureThreshold`-th failure in a row, and the first failed
/// probe may come just after the listener closes, so a restart can come
/// `(failureThreshold - 1) × periodSeconds` after it.
#[test]
fn the_kubernetes_example_keeps_every_rule_of_the_readmes_table() {
    let root = env!("CARGO_MANIFEST_DIR");
    let yaml = std::fs::read_to_string(format!("{root}/examples/kubernetes.yaml")).unwrap();
    let demo = std::fs::read_to_string(format!("{root}/examples/demo.rs")).unwrap();

    let grace = figure_after(&yaml, "terminationGracePeriodSeconds:");
    let pre_stop = figure_after(&yaml, "command: [\"sleep\",");
    let lame_duck_ms = figure_after(&yaml, "--lame-duck-ms=");
    let drain_ms = figure_after(&yaml, "--drain-timeout-ms=");
    let readiness = &yaml[yaml.find("readinessProbe:").unwrap()..];
    let liveness = &yaml[yaml.find("livenessProbe:").unwrap()..];
    let budget = figure_after(&demo, "const BUDGET: Duration = Duration::from_secs(");
    let hook_ms =
        2 * 1000 * figure_after(&demo, "const HOOK_TIMEOUT: Duration = Duration::from_secs(");

    assert_eq!(grace - pre_stop, budget, "budget = grace period - preStop");
    assert!(
        figure_after(readiness, "periodSeconds:")
            * figure_after(readiness, "failureThreshold:")
            * 1000
            <= lame_duck_ms,
        "readiness noticed within the lame duck"
    );
    assert!(
        lame_duck_ms + drain_ms + hook_ms <= budget * 1000,
        "the plan fits"
    );
    // The listener is closed from the drain to the exit: at most budget - lame duck.
    let closed_ms = budget * 1000 - lame_duck_ms;
    let soonest_restart_ms = (figure_after(liveness, "failureThreshold:") - 1)
        * figure_after(liveness, "periodSeconds:")
        * 1000;
    assert!(
        soonest_restart_ms > closed_ms,
        "a liveness restart can come {soonest_restart_ms} ms after the listener closes, \
         within the {closed_ms} ms it stays closed"
    );
}
