//! The `metrics` feature: figures recorded at phase changes and on demand. The recorder is
//! also where these tests hold the controller in the middle of a phase change.
#![cfg(feature = "metrics")]

mod support;

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;

use http::{Method, Request, Response, StatusCode};
use metrics::{
    Counter, CounterFn, Gauge, GaugeFn, Histogram, Key, KeyName, Metadata, Recorder, SharedString,
    Unit,
};
use support::by_hand;
use tokio::time::timeout;
use tower::{service_fn, Layer, ServiceExt};
use tower_drain::{LongLivedKind, Shutdown};

/// The last value of every counter and gauge, by name.
#[derive(Default, Clone)]
struct Figures {
    values: Arc<Mutex<HashMap<String, f64>>>,
    hold: Arc<Mutex<Option<Hold>>>,
}

/// Stops the thread that records `value` for `name`, once, until the test lets it go: a way
/// to hold the controller at a chosen point of a phase change while another thread acts.
struct Hold {
    name: &'static str,
    value: f64,
    reached: mpsc::SyncSender<()>,
    go: mpsc::Receiver<()>,
}

/// The test's side of a [`Hold`].
struct Held {
    reached: mpsc::Receiver<()>,
    go: mpsc::SyncSender<()>,
}

impl Held {
    fn wait_reached(&self) {
        self.reached
            .recv_timeout(support::BOUND)
            .expect("hung: the held figure was never recorded");
    }

    fn release(&self) {
        self.go.send(()).unwrap();
    }
}

impl Figures {
    fn get(&self, name: &str) -> Option<f64> {
        self.values.lock().unwrap().get(name).copied()
    }

    /// Holds the next thread that records `value` for `name`.
    fn hold(&self, name: &'static str, value: f64) -> Held {
        let (reached_tx, reached) = mpsc::sync_channel(1);
        let (go, go_rx) = mpsc::sync_channel(1);
        *self.hold.lock().unwrap() = Some(Hold {
            name,
            value,
            reached: reached_tx,
            go: go_rx,
        });
        Held { reached, go }
    }

    fn stop_if_held(&self, name: &str, value: f64) {
        let hold = {
            let mut hold = self.hold.lock().unwrap();
            match hold.as_ref() {
                Some(held) if held.name == name && held.value == value => hold.take(),
                _ => None,
            }
        };
        if let Some(hold) = hold {
            hold.reached.send(()).unwrap();
            hold.go
                .recv_timeout(support::BOUND)
                .expect("hung: the test never let the held thread go");
        }
    }
}

struct Handle {
    name: String,
    figures: Figures,
}

impl Handle {
    fn update(&self, change: impl FnOnce(f64) -> f64) {
        let mut figures = self.figures.values.lock().unwrap();
        let value = figures.entry(self.name.clone()).or_insert(0.0);
        *value = change(*value);
    }
}

impl CounterFn for Handle {
    fn increment(&self, value: u64) {
        self.update(|old| old + value as f64);
    }
    fn absolute(&self, value: u64) {
        self.update(|old| old.max(value as f64));
    }
}

impl GaugeFn for Handle {
    fn increment(&self, value: f64) {
        self.update(|old| old + value);
    }
    fn decrement(&self, value: f64) {
        self.update(|old| old - value);
    }
    fn set(&self, value: f64) {
        // The value was read before this call; holding here delays only its write.
        self.figures.stop_if_held(&self.name, value);
        self.update(|_| value);
    }
}

impl Recorder for Figures {
    fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> Counter {
        Counter::from_arc(Arc::new(self.handle(key)))
    }
    fn register_gauge(&self, key: &Key, _: &Metadata<'_>) -> Gauge {
        Gauge::from_arc(Arc::new(self.handle(key)))
    }
    fn register_histogram(&self, _: &Key, _: &Metadata<'_>) -> Histogram {
        Histogram::noop()
    }
}

impl Figures {
    fn handle(&self, key: &Key) -> Handle {
        Handle {
            name: key.name().to_owned(),
            figures: self.clone(),
        }
    }
}

// A current-thread runtime: the recorder is installed for this thread only, so figures
// from tests running beside this one cannot leak in.
#[tokio::test(flavor = "current_thread")]
async fn figures_follow_the_phases_and_count_rejections_and_forced_shutdowns() {
    let figures = Figures::default();
    let _recorder = metrics::set_default_local_recorder(&figures);
    let shutdown = Shutdown::new();

    let work = shutdown.guard().unwrap();
    shutdown.record_metrics();
    assert_eq!(figures.get("tower_drain_in_flight"), Some(1.0));
    assert_eq!(figures.get("tower_drain_phase"), Some(0.0), "serving");
    assert_eq!(figures.get("tower_drain_long_lived"), Some(0.0));

    // An upgraded connection is long-lived, and in flight too.
    let connection = shutdown
        .long_lived_guard(LongLivedKind::Upgrade, Method::GET, "/ws")
        .unwrap();
    shutdown.record_metrics();
    assert_eq!(figures.get("tower_drain_long_lived"), Some(1.0));
    assert_eq!(figures.get("tower_drain_in_flight"), Some(2.0));
    drop(connection);
    shutdown.record_metrics();
    assert_eq!(figures.get("tower_drain_long_lived"), Some(0.0));

    let sequence = by_hand(shutdown, Duration::ZERO).build().unwrap();
    let trigger = sequence.trigger();
    trigger.fire(); // starts
    trigger.fire(); // forces: `work` is never released
    let report = timeout(Duration::from_secs(10), sequence.run())
        .await
        .unwrap();
    assert!(report.forced());
    assert_eq!(figures.get("tower_drain_forced_total"), Some(1.0));
    assert_eq!(figures.get("tower_drain_phase"), Some(4.0), "timed out");
    assert_eq!(figures.get("tower_drain_in_flight"), Some(1.0));

    let service = shutdown.layer().layer(service_fn(|_: Request<()>| async {
        Ok::<_, Infallible>(Response::new(http_body_util::Empty::<bytes::Bytes>::new()))
    }));
    let response = service.oneshot(Request::new(())).await.unwrap();
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    drop(work);
    shutdown.record_metrics();
    assert_eq!(figures.get("tower_drain_rejected_total"), Some(1.0));
    assert_eq!(figures.get("tower_drain_in_flight"), Some(0.0));
}

/// A server that drives `Shutdown` itself (`server::serve` and `drain`, the hyper example)
/// never runs the sequence: the controller records at each of its own phase changes.
#[tokio::test(flavor = "current_thread")]
async fn phase_gauge_follows_phase_changes_made_without_the_sequence() {
    let figures = Figures::default();
    let _recorder = metrics::set_default_local_recorder(&figures);
    let shutdown = Shutdown::new();

    let guard = shutdown.guard().unwrap();
    shutdown.begin_lame_duck();
    assert_eq!(figures.get("tower_drain_phase"), Some(1.0), "lame duck");
    let drain = shutdown.drain(Duration::from_secs(60)).unwrap();
    assert_eq!(figures.get("tower_drain_phase"), Some(2.0), "draining");
    assert_eq!(figures.get("tower_drain_in_flight"), Some(1.0));
    drop(guard);
    let _ = drain.await;
    assert_eq!(figures.get("tower_drain_phase"), Some(3.0), "drained");
    assert_eq!(figures.get("tower_drain_in_flight"), Some(0.0));
}

#[tokio::test(flavor = "current_thread")]
async fn forcing_through_shutdown_counts_a_forced_shutdown() {
    let figures = Figures::default();
    let _recorder = metrics::set_default_local_recorder(&figures);
    let shutdown = Shutdown::new();

    let _guard = shutdown.guard().unwrap();
    let drain = shutdown.drain(Duration::from_secs(60)).unwrap();
    assert!(shutdown.force(), "this call cut the drain short");
    let report = drain.await;
    assert!(report.forced);
    assert_eq!(figures.get("tower_drain_phase"), Some(4.0), "timed out");
    assert_eq!(figures.get("tower_drain_forced_total"), Some(1.0));
}

/// A ticker recording the figures while the drain ends: the figures it read before the end
/// may be written after the controller recorded the drained ones. Whichever write lands last,
/// the gauges must end on the drained figures: a drained server showing a request in flight
/// (and nobody records again once it has drained) would read as a stuck request.
#[test]
fn gauges_end_on_the_drained_figures_when_a_ticker_races_the_end() {
    let figures = Figures::default();
    let shutdown = Shutdown::new();
    let work = shutdown.guard().unwrap();
    let _drain = shutdown.drain(Duration::from_secs(60)).unwrap();
    // The ticker reads one in flight, and is held just before writing it.
    let held = figures.hold("tower_drain_in_flight", 1.0);
    let ticker = {
        let figures = figures.clone();
        std::thread::spawn(move || {
            let _recorder = metrics::set_default_local_recorder(&figures);
            shutdown.record_metrics();
        })
    };
    held.wait_reached();

    // The last release drains, and records the drained figures while the ticker is held.
    {
        let _recorder = metrics::set_default_local_recorder(&figures);
        drop(work);
    }
    assert_eq!(shutdown.phase(), tower_drain::Phase::Drained);
    assert_eq!(figures.get("tower_drain_in_flight"), Some(0.0));
    held.release();
    ticker.join().unwrap();

    assert_eq!(figures.get("tower_drain_phase"), Some(3.0), "drained");
    assert_eq!(
        figures.get("tower_drain_in_flight"),
        Some(0.0),
        "a drained server shows nothing in flight"
    );
}

/// A drain polled past its deadline while another thread is still putting a decision in place
/// (here: held in the metrics recorder, the step before the report is published) returns
/// `Pending` and is woken when the report is out. It never spins, which would block the
/// runtime thread polling it for as long as the other thread takes.
#[test]
fn drain_past_its_deadline_waits_for_a_decision_published_elsewhere() {
    use futures_util::FutureExt;

    let figures = Figures::default();
    let shutdown = Shutdown::new();
    let work = shutdown.guard().unwrap();
    let mut drain = Box::pin(shutdown.drain(Duration::ZERO).unwrap());
    // The deciding thread is held as it records the drained phase, before publishing.
    let held = figures.hold("tower_drain_phase", 3.0);
    let releaser = {
        let figures = figures.clone();
        std::thread::spawn(move || {
            let _recorder = metrics::set_default_local_recorder(&figures);
            drop(work);
        })
    };
    held.wait_reached();

    let (polled_tx, polled) = mpsc::sync_channel(1);
    let poller = std::thread::spawn(move || {
        let ready = drain.as_mut().now_or_never().is_some();
        polled_tx.send(ready).unwrap();
        drain
    });
    let first_poll = polled.recv_timeout(support::BOUND);
    // Let the held thread go whatever happened, so a failure does not leave it hanging.
    held.release();
    releaser.join().unwrap();
    let first_poll = first_poll.expect("hung: Drain::poll spun while the decision was published");
    assert!(
        !first_poll,
        "nothing was published yet, so the drain is pending"
    );

    let drain = poller.join().unwrap();
    let report = drain
        .now_or_never()
        .expect("ready once the decision is published");
    assert_eq!(
        report.outcome,
        tower_drain::DrainOutcome::Drained,
        "{report}"
    );
}

/// The controller's own recordings, with no `record_metrics` call: at each phase change every
/// gauge holds the figures of that moment, and the drain's end carries the rejections made
/// while draining.
#[tokio::test(flavor = "current_thread")]
async fn each_phase_change_records_exact_figures_by_itself() {
    let figures = Figures::default();
    let _recorder = metrics::set_default_local_recorder(&figures);
    let shutdown = Shutdown::new();
    let work = shutdown.guard().unwrap();
    let connection = shutdown
        .long_lived_guard(LongLivedKind::Upgrade, Method::GET, "/ws")
        .unwrap();
    let figures_now = || {
        [
            "tower_drain_phase",
            "tower_drain_in_flight",
            "tower_drain_long_lived",
            "tower_drain_rejected_total",
        ]
        .map(|name| figures.get(name))
    };
    assert_eq!(figures_now(), [None; 4], "nothing recorded while serving");

    assert!(shutdown.begin_lame_duck());
    assert_eq!(
        figures_now(),
        [Some(1.0), Some(2.0), Some(1.0), Some(0.0)],
        "lame duck"
    );
    let drain = shutdown.drain(Duration::from_secs(60)).unwrap();
    assert_eq!(
        figures_now(),
        [Some(2.0), Some(2.0), Some(1.0), Some(0.0)],
        "draining"
    );

    let service = shutdown.layer().layer(service_fn(|_: Request<()>| async {
        Ok::<_, Infallible>(Response::new(http_body_util::Empty::<bytes::Bytes>::new()))
    }));
    for _ in 0..3 {
        let response = service.clone().oneshot(Request::new(())).await.unwrap();
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    }
    drop(connection);
    drop(work);
    let report = timeout(support::BOUND, drain).await.unwrap();
    assert_eq!(report.rejected, 3, "{report}");
    assert_eq!(
        figures_now(),
        [Some(3.0), Some(0.0), Some(0.0), Some(3.0)],
        "drained"
    );
    assert_eq!(figures.get("tower_drain_forced_total"), None);
}

/// A faulty recorder: setting the phase gauge to this phase's value panics.
struct PanicsAtPhase(f64);

struct PhaseGauge(f64);

impl GaugeFn for PhaseGauge {
    fn increment(&self, _: f64) {}
    fn decrement(&self, _: f64) {}
    fn set(&self, value: f64) {
        assert_ne!(value, self.0, "the recorder fails on this phase");
    }
}

impl Recorder for PanicsAtPhase {
    fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn register_counter(&self, _: &Key, _: &Metadata<'_>) -> Counter {
        Counter::noop()
    }
    fn register_gauge(&self, key: &Key, _: &Metadata<'_>) -> Gauge {
        if key.name() == "tower_drain_phase" {
            Gauge::from_arc(Arc::new(PhaseGauge(self.0)))
        } else {
            Gauge::noop()
        }
    }
    fn register_histogram(&self, _: &Key, _: &Metadata<'_>) -> Histogram {
        Histogram::noop()
    }
}

/// The last request's release decides the drain, and the recorder panics as the controller
/// records that phase change: the panic is the releasing thread's, and the drain still
/// resolves to its report, rather than every `Drain` waiting for ever for one already made.
#[tokio::test(flavor = "current_thread")]
async fn a_recorder_panicking_at_the_drains_end_leaves_the_drain_resolved() {
    let shutdown = Shutdown::new();
    let work = shutdown.guard().unwrap();
    let drain = shutdown.drain(Duration::from_secs(60)).unwrap();
    let releaser = std::thread::spawn(move || {
        metrics::with_local_recorder(&PanicsAtPhase(3.0), || drop(work));
    });
    assert!(releaser.join().is_err(), "the recorder panicked");
    assert_eq!(shutdown.phase(), tower_drain::Phase::Drained);

    let report = timeout(support::BOUND, drain)
        .await
        .expect("hung: the drain never resolved");
    assert_eq!(
        report.outcome,
        tower_drain::DrainOutcome::Drained,
        "{report}"
    );
    let late = timeout(support::BOUND, shutdown.drain(Duration::ZERO).unwrap())
        .await
        .expect("hung: a later drain never resolved");
    assert_eq!(late, report);
}

/// The `drain` call that closes admission has the recorder panic as it records the draining
/// phase: that call panics, and the drain it began still ends the moment nothing is left in
/// flight, rather than at its deadline for want of the closer's last step.
#[tokio::test(flavor = "current_thread")]
async fn a_recorder_panicking_at_the_drains_start_leaves_the_drain_able_to_end() {
    let shutdown = Shutdown::new();
    let work = shutdown.guard().unwrap();
    let closer = std::thread::spawn(move || {
        metrics::with_local_recorder(&PanicsAtPhase(2.0), || {
            let _ = shutdown.drain(Duration::from_secs(60));
        });
    });
    assert!(closer.join().is_err(), "the recorder panicked");
    assert_eq!(shutdown.phase(), tower_drain::Phase::Draining);
    assert!(shutdown.guard().is_none(), "admission closed");

    let drain = shutdown.drain(Duration::from_secs(60)).unwrap();
    drop(work);
    let report = timeout(support::BOUND, drain)
        .await
        .expect("hung: nothing in flight, yet the drain waits for its deadline");
    assert_eq!(
        report.outcome,
        tower_drain::DrainOutcome::Drained,
        "{report}"
    );
    assert_eq!((report.in_flight_at_start, report.completed), (1, 1));
}
