//! Bad drain timeouts: absurdly large (refused, nothing changes) and zero (no wait).

use std::time::Duration;

use http::StatusCode;
use tower_drain::{Drain, DrainError, DrainOutcome, Phase};

use super::clients::{fetch, looks_cut};
use super::server::{expect_drained, Server};
use super::LONG_DRAIN;
use crate::support::bounded;

#[tokio::test]
async fn drain_timeout_of_duration_max_is_refused_clearly_and_changes_nothing() {
    let mut server = Server::start().await;
    let addr = server.addr;
    let client = tokio::spawn(async move { fetch(addr, "/gate").await });
    server.wait_entered(1).await;

    let error = server
        .shutdown
        .drain(Duration::MAX)
        .expect_err("an unbounded drain must be refused");
    assert_eq!(
        error,
        DrainError::TimeoutTooLong {
            requested: Duration::MAX,
            max: Drain::MAX_TIMEOUT
        }
    );
    let message = error.to_string();
    assert!(
        message.contains("longer than the maximum") && message.contains("nothing was changed"),
        "unclear message: {message}"
    );
    // Just over the limit is refused the same way; the limit itself would be accepted.
    assert!(server
        .shutdown
        .drain(Drain::MAX_TIMEOUT + Duration::from_nanos(1))
        .is_err());

    // Nothing changed: still serving, still counting, still admitting.
    assert_eq!(server.shutdown.phase(), Phase::Serving);
    assert_eq!(server.shutdown.in_flight(), 1);
    let fresh = bounded("a new request", fetch(addr, "/")).await.unwrap();
    assert_eq!(fresh.status, StatusCode::OK);
    assert_eq!(server.shutdown.rejected(), 0);

    // A corrected call drains normally.
    let drain = server.shutdown.drain(LONG_DRAIN).unwrap();
    // And an absurd call while draining is refused without disturbing that drain.
    assert!(server.shutdown.drain(Duration::MAX).is_err());
    assert_eq!(server.shutdown.phase(), Phase::Draining);
    server.open_gate();
    let report = expect_drained(drain).await;
    assert_eq!(report.in_flight_at_start, 1, "{report}");
    let seen = bounded("the gated request", client).await.unwrap().unwrap();
    assert_eq!(seen.status, StatusCode::OK);
    assert_eq!(&seen.body.unwrap()[..], b"done\n");
}

#[tokio::test]
async fn drain_timeout_of_zero_with_nothing_in_flight_reports_drained() {
    let server = Server::start().await;
    let report = expect_drained(server.shutdown.drain(Duration::ZERO).unwrap()).await;
    assert_eq!(report.in_flight_at_start, 0, "{report}");
    assert!(!report.forced, "{report}");
    assert_eq!(server.shutdown.phase(), Phase::Drained);
}

#[tokio::test]
async fn drain_timeout_of_zero_does_not_wait_and_aborts_what_is_running() {
    let mut server = Server::start().await;
    let addr = server.addr;
    let client = tokio::spawn(async move { fetch(addr, "/gate").await });
    server.wait_entered(1).await;

    let report = bounded(
        "a zero drain",
        server.shutdown.drain(Duration::ZERO).unwrap(),
    )
    .await;
    assert_eq!(report.outcome, DrainOutcome::TimedOut, "{report}");
    assert!(!report.forced, "a zero timeout is a timeout, not a force");
    assert_eq!(report.in_flight_at_start, 1, "{report}");
    assert_eq!(report.still_running, 1, "{report}");
    assert_eq!(report.completed, 0, "{report}");
    assert_eq!(server.shutdown.phase(), Phase::TimedOut);
    // Joining later, with another timeout, gives the same report.
    let again = bounded("a second drain", server.shutdown.drain(LONG_DRAIN).unwrap()).await;
    assert_eq!(again, report);

    // The handler finishes after the deadline: its response is cut, not sent as if whole.
    server.open_gate();
    let outcome = bounded("the aborted request", client).await.unwrap();
    assert!(
        looks_cut(&outcome),
        "an aborted response must not look complete: {outcome:?}"
    );
    let shutdown = server.close().await;
    assert_eq!(shutdown.in_flight(), 0);
}
