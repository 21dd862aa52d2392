//! Requests racing the phase changes: each is served whole, cut visibly, or rejected cleanly.

use std::net::SocketAddr;
use std::sync::{Arc, Barrier};
use std::time::Duration;

use futures_util::FutureExt;
use http::header::{CONNECTION, RETRY_AFTER};
use http::StatusCode;
use tokio::sync::mpsc;
use tower_drain::{DrainOutcome, Shutdown};

use super::clients::{connect, fetch, looks_cut, send, Seen};
use super::server::{expect_drained, Server};
use super::LONG_DRAIN;
use crate::support::bounded;

/// One response as a racing client saw it, with the phase around it.
struct Raced {
    sent_while_closed: bool,
    received_while_open: bool,
    seen: Seen,
}

/// Sends `path` over and over on one connection until the server closes it (which it does
/// once draining), reconnecting never; records each response.
async fn race_client(
    addr: SocketAddr,
    shutdown: Shutdown,
    path: &'static str,
    progress: mpsc::UnboundedSender<()>,
) -> Vec<Raced> {
    let mut sender = connect(addr).await;
    let mut raced = Vec::new();
    for _ in 0..100_000 {
        let sent_while_closed = shutdown.phase().admission_closed();
        let seen = match send(&mut sender, path).await {
            Ok(seen) => seen,
            Err(error) => panic!("transport error while racing phase changes: {error}"),
        };
        let received_while_open = !shutdown.phase().admission_closed();
        let closes = seen.headers.get(CONNECTION).is_some_and(|v| v == "close");
        raced.push(Raced {
            sent_while_closed,
            received_while_open,
            seen,
        });
        let _ = progress.send(());
        if closes {
            return raced;
        }
    }
    panic!("the server never closed the connection while draining");
}

async fn wait_progress(progress: &mut mpsc::UnboundedReceiver<()>, n: usize) {
    for _ in 0..n {
        bounded("client progress", progress.recv())
            .await
            .expect("all racing clients stopped early");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_racing_lame_duck_and_drain_are_served_or_cleanly_rejected() {
    let server = Server::start().await;
    let shutdown = server.shutdown;
    let (progress_tx, mut progress) = mpsc::unbounded_channel();
    let clients: Vec<_> = (0..16)
        .map(|_| tokio::spawn(race_client(server.addr, shutdown, "/", progress_tx.clone())))
        .collect();
    drop(progress_tx);

    wait_progress(&mut progress, 200).await;
    assert!(shutdown.begin_lame_duck());
    assert!(!shutdown.begin_lame_duck(), "lame duck begins once");
    wait_progress(&mut progress, 200).await;
    let report = expect_drained(shutdown.drain(LONG_DRAIN).unwrap()).await;

    let mut served = 0;
    let mut rejected = 0;
    for client in clients {
        for raced in bounded("a racing client", client).await.unwrap() {
            let seen = raced.seen;
            match seen.status {
                StatusCode::OK => {
                    served += 1;
                    assert!(!raced.sent_while_closed, "served after admission closed");
                    assert_eq!(&seen.body.unwrap()[..], b"ok\n", "a served body was cut");
                }
                StatusCode::SERVICE_UNAVAILABLE => {
                    rejected += 1;
                    assert!(!raced.received_while_open, "rejected while admitting");
                    assert!(seen.headers.contains_key(RETRY_AFTER));
                    assert_eq!(seen.headers[CONNECTION], "close");
                    assert!(seen.body.is_ok(), "a rejection is a whole response");
                }
                other => panic!("unexpected status {other} while racing phase changes"),
            }
        }
    }
    assert!(served >= 400, "the load was served before draining");
    assert_eq!(shutdown.rejected(), rejected, "{report}");
    assert!(report.rejected <= rejected, "{report}");
    // The racing clients may all have stopped at a served `Connection: close` before any
    // was turned away; one request now is certainly late, and is rejected cleanly.
    let late = bounded("a late request", fetch(server.addr, "/"))
        .await
        .unwrap();
    assert_eq!(late.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(late.headers.contains_key(RETRY_AFTER));
    assert_eq!(late.headers[CONNECTION], "close");
    assert_eq!(shutdown.rejected(), rejected + 1);
    let shutdown = server.close().await;
    assert_eq!(shutdown.in_flight(), 0);
    // After a resolved drain nothing is admitted, on any connection.
    assert!(shutdown.guard().is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_racing_a_forced_drain_are_served_whole_cut_or_rejected() {
    let mut server = Server::start().await;
    let shutdown = server.shutdown;
    // Held open across the force, so there is always something for it to cut.
    let held: Vec<_> = (0..4)
        .map(|_| {
            let addr = server.addr;
            tokio::spawn(async move { fetch(addr, "/gate").await })
        })
        .collect();
    server.wait_entered(held.len()).await;
    let (progress_tx, mut progress) = mpsc::unbounded_channel();
    let clients: Vec<_> = (0..16)
        .map(|_| {
            let progress = progress_tx.clone();
            let addr = server.addr;
            tokio::spawn(async move {
                // A forced drain cuts bodies, and hyper then closes their connections: a
                // client reads that as a cut body, which is the behaviour under test.
                let mut sender = connect(addr).await;
                let mut raced = Vec::new();
                for _ in 0..100_000 {
                    let outcome = send(&mut sender, "/stream").await;
                    let ends = match &outcome {
                        Ok(seen) => {
                            seen.body.is_err()
                                || seen.headers.get(CONNECTION).is_some_and(|v| v == "close")
                        }
                        Err(error) if error.is_incomplete_message() => true,
                        Err(error) => panic!("transport error while racing a force: {error}"),
                    };
                    raced.push(outcome);
                    let _ = progress.send(());
                    if ends {
                        break;
                    }
                }
                raced
            })
        })
        .collect();
    drop(progress_tx);

    wait_progress(&mut progress, 100).await;
    assert!(shutdown.begin_lame_duck());
    wait_progress(&mut progress, 100).await;
    let drain = shutdown.drain(LONG_DRAIN).unwrap();
    assert!(shutdown.force(), "the held requests were still running");
    let report = bounded("the forced drain", drain).await;
    assert_eq!(report.outcome, DrainOutcome::TimedOut, "{report}");
    assert!(report.forced, "{report}");
    assert!(report.still_running >= held.len(), "{report}");
    assert_eq!(
        report.completed + report.still_running,
        report.in_flight_at_start,
        "{report}"
    );

    let whole_stream: String = (0..16).map(|i| format!("chunk {i}\n")).collect();
    let (mut whole, mut cut, mut rejected) = (0, 0, 0u64);
    for client in clients {
        for outcome in bounded("a racing client", client).await.unwrap() {
            let Ok(seen) = outcome else {
                // Cut before the headers were written.
                cut += 1;
                continue;
            };
            match (seen.status, &seen.body) {
                (StatusCode::OK, Ok(body)) => {
                    whole += 1;
                    assert_eq!(
                        &body[..],
                        whole_stream.as_bytes(),
                        "a whole body has every chunk"
                    );
                }
                (StatusCode::OK, Err(_)) => cut += 1,
                (StatusCode::SERVICE_UNAVAILABLE, Ok(_)) => rejected += 1,
                (status, body) => panic!("unexpected response {status} {body:?}"),
            }
        }
    }
    server.open_gate();
    for client in held {
        let outcome = bounded("a held request", client).await.unwrap();
        assert!(
            looks_cut(&outcome),
            "a forced response must look cut: {outcome:?}"
        );
        cut += 1;
    }
    assert!(whole >= 200, "the load was served before the force");
    assert!(
        cut <= report.still_running,
        "cut more than were running: {report}"
    );
    let shutdown = server.close().await;
    assert_eq!(shutdown.rejected(), rejected);
    assert_eq!(shutdown.in_flight(), 0, "a cut or rejected request leaked");
}

/// Guards taken by hand (`Shutdown::guard`, for background work) from two threads while a
/// third forces the drain: each is admitted or refused exactly, and the report counts every
/// admitted guard and no refused one.
#[test]
fn guards_racing_the_close_are_counted_exactly() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    let _entered = runtime.enter();
    for round in 0..500 {
        let shutdown = Shutdown::new();
        let barrier = Arc::new(Barrier::new(3));
        let takers: Vec<_> = (0..2)
            .map(|_| {
                let barrier = Arc::clone(&barrier);
                std::thread::spawn(move || {
                    barrier.wait();
                    let mut held = Vec::new();
                    // Bounded: the force below closes admission right after the barrier.
                    for _ in 0..1_000_000 {
                        match shutdown.guard() {
                            Some(guard) => held.push(guard),
                            None => return held,
                        }
                    }
                    panic!("admission never closed");
                })
            })
            .collect();
        barrier.wait();
        let forced = shutdown.force();
        let held: Vec<_> = takers.into_iter().flat_map(|t| t.join().unwrap()).collect();
        let report = shutdown
            .drain(Duration::ZERO)
            .unwrap()
            .now_or_never()
            .expect("decided by the force");
        assert!(shutdown.guard().is_none());
        assert_eq!(
            report.in_flight_at_start,
            held.len(),
            "round {round}: {report}"
        );
        assert_eq!(report.still_running, held.len(), "round {round}: {report}");
        assert_eq!(shutdown.in_flight(), held.len(), "round {round}");
        assert_eq!(forced, !held.is_empty(), "round {round}: {report}");
        let expected = if held.is_empty() {
            DrainOutcome::Drained
        } else {
            DrainOutcome::TimedOut
        };
        assert_eq!(report.outcome, expected, "round {round}: {report}");
        drop(held);
        assert_eq!(shutdown.in_flight(), 0);
    }
}
