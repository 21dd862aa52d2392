//! Responses whose body the server never sends or never polls: `HEAD`, `204`, `304`, a `101`
//! that hands the connection over, and a body the client's flow control holds back.

use std::time::Duration;

use tower_drain::{DrainOutcome, DrainReport};

use crate::client::{send, send_http1, send_without_window, Exchange};
use crate::servers::{On, Proto, Server, EVERY};
use crate::support::bounded;
use crate::{back_to_zero, drained, serve, Stack, LONG};

/// On HTTP/1 the server drops a body it will not send before it writes the response head,
/// so the count is already back at zero when the client has read the response; on HTTP/2
/// the stream's task may drop it just after.
fn ended_with_its_response(on: On, report: &DrainReport) {
    if on.1 == Proto::Http1 {
        assert_eq!(
            report.in_flight_at_start, 0,
            "{on}: still counted after its response: {report}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_head_request_ends_its_count() {
    for on in EVERY {
        let (app, server) = serve(on, Stack::Plain).await;
        let mut exchange = send(server.addr, on.1, "HEAD", "/release/head").await;
        assert_eq!(exchange.status().await, Ok(200), "{on}");
        let body = exchange.rest().await;
        // hyper's HTTP/2 server sends a body it is handed, even for `HEAD` (routers strip
        // it first); the client refuses it. Either way the count must end.
        if on.1 == Proto::Http1 {
            assert_eq!(body.unwrap(), b"", "{on}");
        }
        let report = back_to_zero(on, app.shutdown).await;
        ended_with_its_response(on, &report);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_204_or_304_with_a_body_ends_its_count() {
    for on in EVERY {
        for (path, status) in [("/release/no-content", 204), ("/release/not-modified", 304)] {
            let case = format!("{on}, {status}");
            let (app, server) = serve(on, Stack::Plain).await;
            let mut exchange = send(server.addr, on.1, "GET", path).await;
            assert_eq!(exchange.status().await, Ok(status), "{case}");
            // What an HTTP/2 server does with the body is the server's business; that the
            // count ends is what is checked.
            let _ = exchange.rest().await;
            let report = drained(&case, app.shutdown.drain(LONG).unwrap(), app.shutdown).await;
            ended_with_its_response(on, &report);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upgrade_ends_its_count_at_the_switch() {
    for server in [Server::Axum, Server::Crate, Server::Hyper] {
        let on = On(server, Proto::Http1);
        let (app, running) = serve(on, Stack::Plain).await;
        let head = "GET /release/upgrade HTTP/1.1\r\nhost: 127.0.0.1\r\n\
                    connection: upgrade\r\nupgrade: test\r\n\r\n";
        let mut exchange = send_http1(running.addr, head, false).await;
        assert_eq!(exchange.status().await, Ok(101), "{on}");
        // The handler, then the task holding the upgraded connection.
        app.gate.entered(2).await;
        // The upgraded connection is still open: it is not a request, and does not count.
        let report = back_to_zero(on, app.shutdown).await;
        assert_eq!(report.in_flight_at_start, 0, "{on}: {report}");
        app.gate.release(1);
        exchange.close();
    }
}

/// The HTTP/2 servers.
fn http2() -> impl Iterator<Item = On> {
    EVERY.into_iter().filter(|on| on.1 == Proto::Http2)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_never_polled_ends_its_count_when_its_client_gives_up() {
    for on in http2() {
        for reset in [false, true] {
            let case = format!("{on}, reset: {reset}");
            let (app, server) = serve(on, Stack::Plain).await;
            let mut exchange = send_without_window(server.addr, "/release/endless").await;
            app.gate.entered(1).await;
            assert_eq!(exchange.status().await, Ok(200), "{case}");
            assert_eq!(app.shutdown.in_flight(), 1, "{case}");
            let drain = app.shutdown.drain(LONG).unwrap();
            let _open = give_up(exchange, reset);
            let report = drained(&case, drain, app.shutdown).await;
            assert_eq!(report.in_flight_at_start, 1, "{case}: {report}");
        }
    }
}

fn give_up(mut exchange: Exchange, reset: bool) -> Option<Exchange> {
    if reset {
        exchange.reset();
        Some(exchange)
    } else {
        exchange.close();
        None
    }
}

/// axum's server runs each connection on a task of its own, which its `serve` future does not
/// own: dropping that future at the deadline leaves a body that is never polled counted, for
/// as long as its client stays (or the process lives).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_never_polled_outlives_the_axum_serve_future() {
    let on = On(Server::Axum, Proto::Http2);
    let (app, server) = serve(on, Stack::Plain).await;
    let mut exchange = send_without_window(server.addr, "/release/endless").await;
    app.gate.entered(1).await;
    assert_eq!(exchange.status().await, Ok(200));
    let report = bounded("the drain", app.shutdown.drain(Duration::ZERO).unwrap()).await;
    assert_eq!(report.outcome, DrainOutcome::TimedOut, "{report}");
    server.task.abort();
    let ended = bounded("the serve future to be dropped", server.task).await;
    assert!(ended.unwrap_err().is_cancelled());
    assert_eq!(
        app.shutdown.in_flight(),
        1,
        "the connection's task outlives the serve future"
    );
    exchange.close();
}

/// A client that never opens its flow-control window holds the body unpolled for good:
/// `tower_drain::server::serve` closes its connection at the deadline, and has ended the
/// request by the time it returns. Several rounds, as the stream's own task ends it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_never_polled_has_ended_when_serve_returns_at_the_deadline() {
    let on = On(Server::Crate, Proto::Http2);
    for round in 0..20 {
        let (app, server) = serve(on, Stack::Plain).await;
        let mut exchange = send_without_window(server.addr, "/release/endless").await;
        app.gate.entered(1).await;
        assert_eq!(exchange.status().await, Ok(200));
        let report = bounded("the drain", app.shutdown.drain(Duration::ZERO).unwrap()).await;
        assert_eq!(report.outcome, DrainOutcome::TimedOut, "{report}");
        assert_eq!(report.still_running, 1, "{report}");
        bounded("the server to return", server.task).await.unwrap();
        assert_eq!(
            app.shutdown.in_flight(),
            0,
            "round {round}: serve returned first"
        );
        assert!(exchange.rest().await.is_err(), "cut, not ended");
    }
}

/// A handler still stalled at the drain deadline is answered `503` by the layer as `serve`
/// closes its connection, on HTTP/2 too, where the handler runs on the stream's own task.
/// Several rounds: a race decided at random would show within a few.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handler_stalled_at_the_deadline_gets_its_503_from_serve_over_http2() {
    let on = On(Server::Crate, Proto::Http2);
    for round in 0..10 {
        let (app, server) = serve(on, Stack::Plain).await;
        let mut exchange = send(server.addr, on.1, "GET", "/release/pending").await;
        app.gate.entered(1).await;
        let drain = app.shutdown.drain(Duration::from_millis(20)).unwrap();
        bounded("the server to return", server.task).await.unwrap();
        assert_eq!(exchange.status().await, Ok(503), "round {round}");
        let report = bounded("the drain", drain).await;
        assert_eq!(report.outcome, DrainOutcome::TimedOut, "{report}");
        assert_eq!(app.shutdown.in_flight(), 0, "round {round}");
    }
}

/// The same for a `HEAD`: the 503 at the drain deadline keeps its text body (the request's
/// method is not kept on the path of every request), which an HTTP/2 client refuses on a
/// `HEAD`: it reads the 503's head, then a reset stream where the body would be.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_head_stalled_at_the_deadline_gets_the_503_head_then_a_reset_over_http2() {
    let on = On(Server::Crate, Proto::Http2);
    let (app, server) = serve(on, Stack::Plain).await;
    let mut exchange = send(server.addr, on.1, "HEAD", "/release/pending").await;
    app.gate.entered(1).await;
    let drain = app.shutdown.drain(Duration::from_millis(20)).unwrap();
    bounded("the server to return", server.task).await.unwrap();
    assert_eq!(exchange.status().await, Ok(503));
    assert!(
        exchange.rest().await.is_err(),
        "a body on a HEAD is malformed over HTTP/2"
    );
    let report = bounded("the drain", drain).await;
    assert_eq!(report.outcome, DrainOutcome::TimedOut, "{report}");
    assert_eq!(app.shutdown.in_flight(), 0);
}
