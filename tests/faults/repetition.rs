//! Drains and forces repeated from many tasks at once: decided once, one report.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use http::StatusCode;
use tokio::sync::Barrier;
use tower_drain::DrainOutcome;

use super::clients::{fetch, looks_cut};
use super::server::Server;
use super::LONG_DRAIN;
use crate::support::bounded;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_called_from_many_tasks_at_once_resolves_to_one_report() {
    let mut server = Server::start().await;
    let addr = server.addr;
    let clients: Vec<_> = (0..3)
        .map(|_| tokio::spawn(async move { fetch(addr, "/gate").await }))
        .collect();
    server.wait_entered(3).await;

    let tasks = 64;
    // The test itself is one more drainer, so it knows the drain has begun.
    let barrier = Arc::new(Barrier::new(tasks + 1));
    let drains: Vec<_> = (0..tasks)
        .map(|i| {
            let shutdown = server.shutdown;
            let barrier = barrier.clone();
            tokio::spawn(async move {
                barrier.wait().await;
                // Timeouts differ per task: only the first call's deadline counts.
                let timeout = LONG_DRAIN + Duration::from_millis(i as u64);
                shutdown.drain(timeout).unwrap().await
            })
        })
        .collect();
    barrier.wait().await;
    // Whichever call starts the drain, every call returns only after admission has closed
    // and the in-flight requests have been counted, so releasing them now cannot race that.
    let own = server.shutdown.drain(LONG_DRAIN).unwrap();
    server.open_gate();

    let mut reports = vec![bounded("the test's own drain", own).await];
    for drain in drains {
        reports.push(bounded("a drain", drain).await.unwrap());
    }
    let first = reports[0].clone();
    assert_eq!(first.outcome, DrainOutcome::Drained, "{first}");
    assert_eq!(first.in_flight_at_start, 3, "{first}");
    assert_eq!(first.completed, 3, "{first}");
    assert!(reports.iter().all(|report| *report == first));
    for client in clients {
        let seen = bounded("a client", client).await.unwrap().unwrap();
        assert_eq!(seen.status, StatusCode::OK);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn force_and_drain_racing_from_many_tasks_decide_once() {
    let mut server = Server::start().await;
    let addr = server.addr;
    let clients: Vec<_> = (0..2)
        .map(|_| tokio::spawn(async move { fetch(addr, "/gate").await }))
        .collect();
    server.wait_entered(2).await;

    let tasks = 64;
    let barrier = Arc::new(Barrier::new(tasks));
    let forced_here = Arc::new(AtomicUsize::new(0));
    let racers: Vec<_> = (0..tasks)
        .map(|i| {
            let shutdown = server.shutdown;
            let barrier = barrier.clone();
            let forced_here = forced_here.clone();
            tokio::spawn(async move {
                barrier.wait().await;
                if i % 2 == 0 && shutdown.force() {
                    // Relaxed: a tally, read after every task has been joined.
                    forced_here.fetch_add(1, Ordering::Relaxed);
                }
                shutdown.drain(LONG_DRAIN).unwrap().await
            })
        })
        .collect();
    let mut reports = Vec::new();
    for racer in racers {
        reports.push(bounded("a racer", racer).await.unwrap());
    }
    assert_eq!(
        forced_here.load(Ordering::Relaxed),
        1,
        "exactly one force decides"
    );
    let first = reports[0].clone();
    assert_eq!(first.outcome, DrainOutcome::TimedOut, "{first}");
    assert!(first.forced, "{first}");
    assert_eq!(first.in_flight_at_start, 2, "{first}");
    assert_eq!(first.still_running, 2, "{first}");
    assert!(reports.iter().all(|report| *report == first));
    assert!(
        !server.shutdown.force(),
        "a decided drain cannot be forced again"
    );

    server.open_gate();
    for client in clients {
        let outcome = bounded("a client", client).await.unwrap();
        assert!(
            looks_cut(&outcome),
            "a forced response must look cut: {outcome:?}"
        );
    }
    let shutdown = server.close().await;
    assert_eq!(shutdown.in_flight(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forcing_an_idle_server_from_many_tasks_reports_drained() {
    let server = Server::start().await;
    let tasks = 32;
    let barrier = Arc::new(Barrier::new(tasks));
    let racers: Vec<_> = (0..tasks)
        .map(|_| {
            let shutdown = server.shutdown;
            let barrier = barrier.clone();
            tokio::spawn(async move {
                barrier.wait().await;
                let forced = shutdown.force();
                (forced, shutdown.drain(Duration::ZERO).unwrap().await)
            })
        })
        .collect();
    for racer in racers {
        let (forced, report) = bounded("a racer", racer).await.unwrap();
        assert!(
            !forced,
            "nothing was running, so there was nothing to force"
        );
        assert_eq!(report.outcome, DrainOutcome::Drained, "{report}");
        assert!(!report.forced, "{report}");
    }
}

/// The narrow case behind the test above, many times over: two threads force an idle
/// controller at the same instant. One of them closes admission; the other may arrive while
/// the first is still between its sweep (which found nothing in flight) and its end. Neither
/// has anything to cut short, so the outcome is `Drained` and neither call says it forced.
#[tokio::test]
async fn two_threads_forcing_an_idle_controller_at_once_report_drained() {
    let rounds = 2_000;
    for round in 0..rounds {
        let shutdown = tower_drain::Shutdown::new();
        let barrier = Arc::new(std::sync::Barrier::new(2));
        let racers: Vec<_> = (0..2)
            .map(|_| {
                let barrier = Arc::clone(&barrier);
                std::thread::spawn(move || {
                    barrier.wait();
                    shutdown.force()
                })
            })
            .collect();
        for racer in racers {
            assert!(!racer.join().unwrap(), "round {round}: nothing to force");
        }
        // Decided already, so the drain is ready on its first poll.
        let report = futures_util::FutureExt::now_or_never(shutdown.drain(Duration::ZERO).unwrap())
            .expect("decided by the forces");
        assert_eq!(
            report.outcome,
            DrainOutcome::Drained,
            "round {round}: {report}"
        );
        assert!(!report.forced, "round {round}: {report}");
    }
}
