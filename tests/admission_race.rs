//! Admission races the start of the drain: every request is either counted and awaited, or
//! rejected; none is counted after the drain resolved.

mod support;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::routing::get;
use axum::Router;
use futures_util::future::join_all;
use support::bounded;
use support::http::{http1_client, serve};
use tokio::sync::Barrier;
use tower_drain::{DrainOutcome, Shutdown};

const CLIENTS: usize = 16;
const REQUESTS_PER_CLIENT: usize = 60;

#[derive(Default)]
struct Tally {
    entered: AtomicUsize,
    finished: AtomicUsize,
    /// Set by the test the moment its drain resolved.
    drain_resolved: AtomicBool,
    entered_after_drain: AtomicUsize,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_request_is_either_awaited_or_rejected() {
    let shutdown = Shutdown::new();
    let tally = Arc::new(Tally::default());
    let handler_tally = tally.clone();
    let app = Router::new()
        .route(
            "/work",
            get(move || {
                let tally = handler_tally.clone();
                async move {
                    tally.entered.fetch_add(1, Ordering::SeqCst);
                    if tally.drain_resolved.load(Ordering::SeqCst) {
                        tally.entered_after_drain.fetch_add(1, Ordering::SeqCst);
                    }
                    // Some work spanning several polls, so requests overlap the drain start.
                    for _ in 0..3 {
                        tokio::task::yield_now().await;
                    }
                    tally.finished.fetch_add(1, Ordering::SeqCst);
                    "done\n"
                }
            }),
        )
        .layer(shutdown.layer());
    let (addr, _server) = serve(app).await;

    // The drain starts once every client has had some answers, with all of them still sending.
    let halfway = Arc::new(Barrier::new(CLIENTS + 1));
    let clients = (0..CLIENTS).map(|_| {
        let halfway = halfway.clone();
        let client = http1_client();
        async move {
            let (mut ok, mut rejected) = (0usize, 0usize);
            for i in 0..REQUESTS_PER_CLIENT {
                if i == REQUESTS_PER_CLIENT / 4 {
                    halfway.wait().await;
                }
                let (status, _, body) = support::http::get(&client, addr, "/work").await;
                match status.as_u16() {
                    200 => {
                        assert_eq!(body, "done\n", "a counted request is served in full");
                        ok += 1;
                    }
                    503 => rejected += 1,
                    other => panic!("unexpected status {other}"),
                }
            }
            (ok, rejected)
        }
    });
    let clients = tokio::spawn(join_all(clients));

    halfway.wait().await;
    let report = bounded("drain", shutdown.drain(Duration::from_secs(60)).unwrap()).await;
    tally.drain_resolved.store(true, Ordering::SeqCst);
    // At the moment the drain resolved, every admitted handler had finished...
    let entered = tally.entered.load(Ordering::SeqCst);
    assert_eq!(tally.finished.load(Ordering::SeqCst), entered);
    assert_eq!(shutdown.in_flight(), 0);
    assert_eq!(report.outcome, DrainOutcome::Drained);

    let results = bounded("clients", clients).await.unwrap();
    let ok: usize = results.iter().map(|r| r.0).sum();
    let rejected: usize = results.iter().map(|r| r.1).sum();

    // ...and nothing was admitted after it: the clients kept sending and were all turned away.
    assert_eq!(tally.entered_after_drain.load(Ordering::SeqCst), 0);
    assert_eq!(tally.entered.load(Ordering::SeqCst), entered);
    assert_eq!(ok, entered, "every 200 was a counted handler run");
    assert_eq!(ok + rejected, CLIENTS * REQUESTS_PER_CLIENT);
    assert_eq!(rejected as u64, shutdown.rejected());
    assert!(
        rejected >= CLIENTS,
        "requests after the drain were rejected"
    );
    assert_eq!(shutdown.in_flight(), 0);
}
