//! Handlers and bodies that fail: a handler panic, a body error or panic mid-stream.

use http::StatusCode;
use http_body_util::BodyExt;

use super::clients::{connect, fetch, get};
use super::server::{expect_drained, Server};
use super::LONG_DRAIN;
use crate::support::bounded;

#[tokio::test]
async fn handler_panicking_while_counted_releases_its_request() {
    let mut server = Server::start().await;
    let addr = server.addr;
    let client = tokio::spawn(async move { fetch(addr, "/gate-panic").await });
    server.wait_entered(1).await;

    let drain = server.shutdown.drain(LONG_DRAIN).unwrap();
    server.open_gate();

    let report = expect_drained(drain).await;
    assert_eq!(report.in_flight_at_start, 1, "{report}");
    let error = bounded("the client", client)
        .await
        .unwrap()
        .expect_err("a panicking handler cannot have sent a response");
    assert!(
        error.is_incomplete_message() || error.is_closed(),
        "the client should see the connection closed: {error}"
    );
}

#[tokio::test]
async fn body_failing_mid_stream_ends_the_request_and_the_client_sees_a_cut_body() {
    let mut server = Server::start().await;
    let mut sender = connect(server.addr).await;
    let response = bounded("the headers", sender.send_request(get("/body-error")))
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    server.wait_entered(1).await;
    let mut body = response.into_body();
    let first = bounded("the first chunk", body.frame())
        .await
        .expect("a first frame")
        .expect("the first chunk is whole");
    assert_eq!(first.data_ref().map(|data| &data[..]), Some(&b"part\n"[..]));

    let drain = server.shutdown.drain(LONG_DRAIN).unwrap();
    server.open_gate();
    let report = expect_drained(drain).await;
    assert_eq!(report.in_flight_at_start, 1, "{report}");

    let rest = bounded("the rest of the body", body.collect()).await;
    assert!(
        rest.is_err(),
        "a body that failed on the server must not look complete to the client"
    );
}

#[tokio::test]
async fn body_panicking_mid_stream_releases_its_request() {
    let mut server = Server::start().await;
    let mut sender = connect(server.addr).await;
    let response = bounded("the headers", sender.send_request(get("/body-panic")))
        .await
        .unwrap();
    server.wait_entered(1).await;

    let drain = server.shutdown.drain(LONG_DRAIN).unwrap();
    server.open_gate();
    let report = expect_drained(drain).await;
    assert_eq!(report.in_flight_at_start, 1, "{report}");
    let body = bounded("the body", response.into_body().collect()).await;
    assert!(body.is_err(), "a panicked body must not look complete");
}
