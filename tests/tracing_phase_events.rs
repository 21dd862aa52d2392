//! Contract 9: a `tracing` event at each phase change, exactly once, carrying the figures a
//! user reads a shutdown by. A user of `Shutdown::drain` without the sequence gets no other
//! log line, so the terminal phase event is the final report's log line.

mod support;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use support::by_hand;
use tower_drain::{DrainOutcome, LongLivedKind, Shutdown, ShutdownSequence};
use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::Layer;

type Fields = BTreeMap<String, String>;

#[derive(Clone, Default)]
struct Events(Arc<Mutex<Vec<Fields>>>);

struct Collect<'a>(&'a mut Fields);

impl Visit for Collect<'_> {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.0.insert(field.name().to_owned(), format!("{value:?}"));
    }
}

impl<S: Subscriber> Layer<S> for Events {
    fn on_event(&self, event: &Event<'_>, _: Context<'_, S>) {
        let mut fields = Fields::new();
        event.record(&mut Collect(&mut fields));
        self.0.lock().unwrap().push(fields);
    }
}

impl Events {
    /// Events that name a phase, in order.
    fn phases(&self) -> Vec<Fields> {
        let events = self.0.lock().unwrap();
        events
            .iter()
            .filter(|e| e.contains_key("phase"))
            .cloned()
            .collect()
    }
}

#[tokio::test(flavor = "current_thread")]
async fn every_phase_change_emits_one_event_with_the_figures() {
    let events = Events::default();
    let _default =
        tracing::subscriber::set_default(tracing_subscriber::registry().with(events.clone()));
    let shutdown = Shutdown::new();

    let guard = shutdown.guard().unwrap();
    assert!(shutdown.begin_lame_duck());
    assert!(!shutdown.begin_lame_duck());
    let drain = shutdown.drain(Duration::from_secs(60)).unwrap();
    let again = shutdown.drain(Duration::from_secs(60)).unwrap();
    drop(guard);
    let report = drain.await;
    let _ = again.await;

    let phases = events.phases();
    let names: Vec<&str> = phases.iter().map(|e| e["phase"].as_str()).collect();
    assert_eq!(names, ["lame_duck", "draining", "drained"], "{phases:#?}");

    // The last phase event is the only log line of the outcome for a user of `drain`: it
    // should carry the report's figures, as the sequence's "drain over" line does.
    let last = phases.last().unwrap();
    for field in ["elapsed_ms", "in_flight_at_start", "completed", "rejected"] {
        assert!(
            last.contains_key(field),
            "drained event lacks `{field}`: {last:?} (report: {report})"
        );
    }
}

#[tokio::test(flavor = "current_thread")]
async fn a_timed_out_drain_event_carries_the_figures() {
    let events = Events::default();
    let _default =
        tracing::subscriber::set_default(tracing_subscriber::registry().with(events.clone()));
    let shutdown = Shutdown::new();

    let _guard = shutdown.guard().unwrap();
    let report = shutdown.drain(Duration::ZERO).unwrap().await;
    let phases = events.phases();
    let names: Vec<&str> = phases.iter().map(|e| e["phase"].as_str()).collect();
    assert_eq!(names, ["draining", "timed_out"], "{phases:#?}");
    let last = phases.last().unwrap();
    for field in [
        "elapsed_ms",
        "in_flight_at_start",
        "completed",
        "still_running",
        "rejected",
    ] {
        assert!(
            last.contains_key(field),
            "timed-out event lacks `{field}`: {last:?} (report: {report})"
        );
    }
}

/// A zero lame-duck delay skips that phase, as the builder promises: the sequence goes from
/// serving straight to draining, with no lame-duck event and no wait for a timer tick.
#[tokio::test(flavor = "current_thread")]
async fn a_sequence_with_a_zero_lame_duck_goes_straight_to_draining() {
    let events = Events::default();
    let _default =
        tracing::subscriber::set_default(tracing_subscriber::registry().with(events.clone()));
    let shutdown = Shutdown::new();
    let sequence = ShutdownSequence::builder(shutdown)
        .lame_duck(Duration::ZERO)
        .no_signals()
        .build()
        .unwrap();
    sequence.trigger().fire();
    let report = tokio::time::timeout(Duration::from_secs(30), sequence.run())
        .await
        .expect("the sequence did not finish");
    assert_eq!(report.drain.outcome, DrainOutcome::Drained, "{report}");

    let phases = events.phases();
    let names: Vec<&str> = phases.iter().map(|e| e["phase"].as_str()).collect();
    assert_eq!(names, ["draining", "drained"], "{phases:#?}");
}

/// The sequence's last event says why a shutdown was not clean. A long-lived connection cut
/// at its deadline leaves the drain `Drained` with nothing still running and no failed hook:
/// without its count the event would say "not cleanly" and show nothing wrong.
#[tokio::test(flavor = "current_thread")]
async fn the_last_sequence_event_counts_the_long_lived_responses_cut() {
    let events = Events::default();
    let _default =
        tracing::subscriber::set_default(tracing_subscriber::registry().with(events.clone()));
    let shutdown = Shutdown::new();
    shutdown.set_long_lived_grace(Duration::from_millis(50));
    let sequence = by_hand(shutdown, Duration::ZERO).build().unwrap();
    // A WebSocket whose peer never answers the close: dropped at the long-lived deadline.
    let socket = shutdown
        .long_lived_guard(LongLivedKind::Upgrade, http::Method::GET, "/ws")
        .unwrap();
    let connection = tokio::spawn(async move {
        socket.deadline().await;
        drop(socket);
    });
    sequence.trigger().fire();
    let report = tokio::time::timeout(Duration::from_secs(30), sequence.run())
        .await
        .expect("the sequence did not finish");
    connection.await.unwrap();
    assert_eq!(report.drain.outcome, DrainOutcome::Drained, "{report}");
    assert!(!report.is_clean(), "{report}");

    let events = events.0.lock().unwrap();
    let last = events
        .iter()
        .rev()
        .find(|event| {
            event
                .get("message")
                .is_some_and(|message| message.contains("shutdown sequence complete"))
        })
        .expect("the sequence's last event");
    assert_eq!(
        last.get("long_lived_cut").map(String::as_str),
        Some("1"),
        "{last:?}"
    );
}

/// A second trigger that finds nothing running (here during the lame duck, with nothing in
/// flight) forces the shutdown but aborts nothing, and its event says so: "aborting what is
/// still running" would send an operator looking for lost work.
#[tokio::test(flavor = "current_thread")]
async fn a_second_trigger_with_nothing_running_says_nothing_was_aborted() {
    let events = Events::default();
    let _default =
        tracing::subscriber::set_default(tracing_subscriber::registry().with(events.clone()));
    let shutdown = Shutdown::new();
    let sequence = by_hand(shutdown, Duration::from_secs(600)).build().unwrap();
    let trigger = sequence.trigger();
    let run = tokio::spawn(sequence.run());
    trigger.fire();
    tokio::time::timeout(Duration::from_secs(30), shutdown.shutting_down())
        .await
        .expect("the lame duck did not begin");
    trigger.fire();
    let report = tokio::time::timeout(Duration::from_secs(30), run)
        .await
        .expect("the sequence did not finish")
        .unwrap();
    assert_eq!(report.forced_by, Some("manual trigger"), "{report}");
    assert_eq!(report.drain.still_running, 0, "{report}");

    let events = events.0.lock().unwrap();
    let forcing: Vec<&String> = events
        .iter()
        .filter_map(|event| event.get("message"))
        .filter(|message| message.starts_with("second trigger"))
        .collect();
    assert_eq!(forcing.len(), 1, "{forcing:?}");
    assert!(
        forcing[0].contains("nothing left running to abort"),
        "{forcing:?}"
    );
}

/// The closer of an idle drain is held as shutdown begins, after its sweep and before its own
/// event; a second thread forces the drain in that window and decides it. The events still
/// come in phase order: a log that says "drained" and then "waiting for those in flight"
/// reads as a drain that began again.
#[test]
fn phase_events_keep_phase_order_when_another_thread_decides_first() {
    let events = Events::default();
    let shutdown = Shutdown::new();
    let armed = support::pause::pause_on(shutdown.shutting_down());
    let (go, done) = (armed.go, armed.done);
    let second = {
        let events = events.clone();
        std::thread::spawn(move || {
            let _default = tracing::subscriber::set_default(
                tracing_subscriber::registry().with(events.clone()),
            );
            support::pause::wait_turn(&go);
            assert!(!shutdown.force(), "nothing was running");
            done.send(()).unwrap();
        })
    };
    let closer = {
        let events = events.clone();
        std::thread::spawn(move || {
            let _default = tracing::subscriber::set_default(
                tracing_subscriber::registry().with(events.clone()),
            );
            shutdown.drain(Duration::from_secs(3600)).unwrap()
        })
    };
    let _drain = closer.join().unwrap();
    second.join().unwrap();
    assert!(armed.pause.fired(), "the closer was held");
    assert_eq!(shutdown.phase(), tower_drain::Phase::Drained);

    let phases = events.phases();
    let names: Vec<&str> = phases.iter().map(|e| e["phase"].as_str()).collect();
    assert_eq!(names, ["draining", "drained"], "{phases:#?}");
}

/// A thread entering the lame duck is held as shutdown begins; another thread drains in that
/// window. The lame duck began first, and its event comes first: logged after the drain's,
/// it would read as readiness failing after the server had stopped admitting.
#[test]
fn a_lame_duck_racing_the_drain_is_logged_before_it() {
    let events = Events::default();
    let shutdown = Shutdown::new();
    let armed = support::pause::pause_on(shutdown.shutting_down());
    let (go, done) = (armed.go, armed.done);
    let drainer = {
        let events = events.clone();
        std::thread::spawn(move || {
            let _default = tracing::subscriber::set_default(
                tracing_subscriber::registry().with(events.clone()),
            );
            support::pause::wait_turn(&go);
            let drain = shutdown.drain(Duration::from_secs(3600)).unwrap();
            done.send(()).unwrap();
            drain
        })
    };
    let lame_duck = {
        let events = events.clone();
        std::thread::spawn(move || {
            let _default = tracing::subscriber::set_default(
                tracing_subscriber::registry().with(events.clone()),
            );
            shutdown.begin_lame_duck()
        })
    };
    assert!(lame_duck.join().unwrap(), "the lame duck began");
    let _drain = drainer.join().unwrap();
    assert!(armed.pause.fired(), "the lame duck was held");

    let phases = events.phases();
    let names: Vec<&str> = phases.iter().map(|e| e["phase"].as_str()).collect();
    assert_eq!(names, ["lame_duck", "draining", "drained"], "{phases:#?}");
}

/// A faulty subscriber: the event of this phase panics.
struct PanicsAt(&'static str);

impl<S: Subscriber> Layer<S> for PanicsAt {
    fn on_event(&self, event: &Event<'_>, _: Context<'_, S>) {
        let mut fields = Fields::new();
        event.record(&mut Collect(&mut fields));
        let phase = fields.get("phase").map(String::as_str);
        assert_ne!(phase, Some(self.0), "the subscriber fails on this phase");
    }
}

/// The lame duck's start has the subscriber panic on its event: that call panics, yet the
/// phase has moved and whoever waits on `shutting_down()` (a readiness flip, a health
/// reporter) is still told, rather than only when draining begins.
#[test]
fn a_subscriber_panicking_at_the_lame_ducks_start_still_says_shutdown_began() {
    use futures_util::FutureExt;

    let shutdown = Shutdown::new();
    let starter = std::thread::spawn(move || {
        let panics = tracing_subscriber::registry().with(PanicsAt("lame_duck"));
        tracing::subscriber::with_default(panics, || shutdown.begin_lame_duck())
    });
    assert!(starter.join().is_err(), "the subscriber panicked");
    assert_eq!(shutdown.phase(), tower_drain::Phase::LameDuck);
    assert!(
        shutdown.shutting_down().now_or_never().is_some(),
        "those waiting for shutdown to begin are told"
    );
}

/// The `drain` call that closes admission has the subscriber panic on its "admission closed"
/// event: that call panics, yet admission stays closed, the server is still told to stop
/// accepting, and a later `drain` joins the drain begun (one sweep, one figure) and ends the
/// moment nothing is left in flight.
#[tokio::test(flavor = "current_thread")]
async fn a_subscriber_panicking_at_the_drains_start_leaves_the_drain_able_to_end() {
    use futures_util::FutureExt;

    let shutdown = Shutdown::new();
    let work = shutdown.guard().unwrap();
    let closer = std::thread::spawn(move || {
        let panics = tracing_subscriber::registry().with(PanicsAt("draining"));
        tracing::subscriber::with_default(panics, || {
            let _ = shutdown.drain(Duration::from_secs(60));
        });
    });
    assert!(closer.join().is_err(), "the subscriber panicked");
    assert!(shutdown.guard().is_none(), "admission closed");
    assert!(
        shutdown.closing().now_or_never().is_some(),
        "the server is told to stop accepting"
    );

    let drain = shutdown.drain(Duration::from_secs(60)).unwrap();
    drop(work);
    let report = tokio::time::timeout(support::BOUND, drain)
        .await
        .expect("hung: nothing in flight, yet the drain waits for its deadline");
    assert_eq!(report.outcome, DrainOutcome::Drained, "{report}");
    assert_eq!((report.in_flight_at_start, report.completed), (1, 1));
}

/// A faulty subscriber: every warning panics.
struct PanicsOnWarnings;

impl<S: Subscriber> Layer<S> for PanicsOnWarnings {
    fn on_event(&self, event: &Event<'_>, _: Context<'_, S>) {
        let level = *event.metadata().level();
        assert_ne!(
            level,
            tracing::Level::WARN,
            "the subscriber fails on warnings"
        );
    }
}

/// A force cuts a long-lived connection short on a thread whose subscriber panics on the
/// warning that counts the long-lived work cut: the `force` call panics, yet the drain
/// resolves to its report, which names the connection, rather than waiting for ever for a
/// report of a decision already made; and the work still running, the connection first, is
/// told to stop.
#[tokio::test(flavor = "current_thread")]
async fn a_subscriber_panicking_as_a_force_cuts_long_lived_work_leaves_the_drain_resolved() {
    use futures_util::FutureExt;

    let shutdown = Shutdown::new();
    let connection = shutdown
        .long_lived_guard(LongLivedKind::Upgrade, http::Method::GET, "/ws")
        .unwrap();
    let drain = shutdown.drain(Duration::from_secs(60)).unwrap();
    let forcer = std::thread::spawn(move || {
        let panics = tracing_subscriber::registry().with(PanicsOnWarnings);
        tracing::subscriber::with_default(panics, || shutdown.force())
    });
    assert!(forcer.join().is_err(), "the subscriber panicked");
    assert_eq!(shutdown.phase(), tower_drain::Phase::TimedOut);

    let report = tokio::time::timeout(support::BOUND, drain)
        .await
        .expect("hung: the drain was decided, but its report never published");
    assert_eq!(report.outcome, DrainOutcome::TimedOut, "{report}");
    assert!(report.forced, "{report}");
    assert_eq!(report.still_running, 1, "{report}");
    assert_eq!(report.long_lived.len(), 1, "{report}");
    assert!(
        shutdown.aborted().now_or_never().is_some(),
        "what is still running is told to stop"
    );
    assert!(
        connection.deadline().now_or_never().is_some(),
        "the long-lived connection is told it was cut"
    );
    drop(connection);
}

/// A `force` that closes admission itself (no `drain` came first) has the subscriber panic on
/// the "admission closed" event: that call panics, yet it still does what a second signal
/// asks, cutting the drain short and telling what still runs to stop, rather than leaving the
/// drain to wait for work that may never end (and a server told to close its connections
/// waiting for a report that never comes).
#[test]
fn a_subscriber_panicking_as_a_force_closes_admission_still_cuts_the_drain() {
    use futures_util::FutureExt;

    let shutdown = Shutdown::new();
    let work = shutdown.guard().unwrap();
    let forcer = std::thread::spawn(move || {
        let panics = tracing_subscriber::registry().with(PanicsAt("draining"));
        tracing::subscriber::with_default(panics, || shutdown.force())
    });
    assert!(forcer.join().is_err(), "the subscriber panicked");
    assert_eq!(shutdown.phase(), tower_drain::Phase::TimedOut);
    assert!(
        shutdown.aborted().now_or_never().is_some(),
        "what is still running is told to stop"
    );
    let report = shutdown
        .drain(Duration::from_secs(60))
        .unwrap()
        .now_or_never()
        .expect("the forced drain's report is out");
    assert_eq!(report.outcome, DrainOutcome::TimedOut, "{report}");
    assert!(report.forced, "{report}");
    assert_eq!(report.still_running, 1, "{report}");
    drop(work);
}
