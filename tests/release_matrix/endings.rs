//! Requests that end by themselves or by their client: a body sent whole, a body that fails,
//! a client that closes its connection or cancels its stream.

use crate::client::{send, Exchange};
use crate::servers::{Proto, EVERY};
use crate::support::bounded;
use crate::{back_to_zero, drained, serve, Stack, LONG};

/// How a client gives up on a request.
#[derive(Debug, Clone, Copy)]
enum GiveUp {
    /// Closes its connection (on HTTP/2, the whole connection, with every stream on it).
    Close,
    /// Cancels the stream with `RST_STREAM` and keeps the connection (HTTP/2 only).
    Reset,
}

impl GiveUp {
    fn every(proto: Proto) -> &'static [GiveUp] {
        match proto {
            Proto::Http1 => &[GiveUp::Close],
            Proto::Http2 => &[GiveUp::Close, GiveUp::Reset],
        }
    }

    fn apply(self, mut exchange: Exchange) -> Option<Exchange> {
        match self {
            GiveUp::Close => {
                exchange.close();
                None
            }
            // The connection stays open until the test is done, so only the reset can have
            // ended the request.
            GiveUp::Reset => {
                exchange.reset();
                Some(exchange)
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_sent_whole_ends_its_count() {
    for on in EVERY {
        let (app, server) = serve(on, Stack::Plain).await;
        let mut exchange = send(server.addr, on.1, "GET", "/release/full").await;
        assert_eq!(exchange.status().await, Ok(200), "{on}");
        assert_eq!(exchange.rest().await.unwrap(), b"hello", "{on}");
        assert_eq!(app.seen(), 1, "{on}: counted while running");
        back_to_zero(on, app.shutdown).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_sent_whole_during_the_drain_ends_its_count() {
    for on in EVERY {
        let (app, server) = serve(on, Stack::Plain).await;
        let mut exchange = send(server.addr, on.1, "GET", "/release/held").await;
        app.gate.entered(1).await;
        assert_eq!(app.shutdown.in_flight(), 1, "{on}");
        let drain = app.shutdown.drain(LONG).unwrap();
        app.gate.release(1);
        assert_eq!(exchange.status().await, Ok(200), "{on}");
        assert_eq!(exchange.rest().await.unwrap(), b"done", "{on}");
        let report = drained(on, drain, app.shutdown).await;
        assert_eq!(report.in_flight_at_start, 1, "{on}: {report}");
        exchange.close();
        bounded(&format!("{on}: the server to return"), server.task)
            .await
            .unwrap();
    }
}

/// A body that yields an error, or panics, after its first chunk.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_failing_or_panicking_mid_stream_ends_its_count() {
    for on in EVERY {
        for path in ["/release/fail", "/release/body-panic"] {
            let case = format!("{on}, {path}");
            let (app, server) = serve(on, Stack::Plain).await;
            let mut exchange = send(server.addr, on.1, "GET", path).await;
            assert_eq!(exchange.status().await, Ok(200), "{case}");
            exchange.some_body().await;
            // The handler, then its body waiting to fail.
            app.gate.entered(2).await;
            assert_eq!(app.shutdown.in_flight(), 1, "{case}");
            let drain = app.shutdown.drain(LONG).unwrap();
            app.gate.release(1);
            assert!(
                exchange.rest().await.is_err(),
                "{case}: a failed body looks cut"
            );
            let report = drained(&case, drain, app.shutdown).await;
            assert_eq!(report.in_flight_at_start, 1, "{case}: {report}");
        }
    }
}

/// Whether the client gives up before the drain begins or during it: a server shutting down
/// gracefully may watch its connections differently.
const DURING_DRAIN: [bool; 2] = [false, true];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_giving_up_before_the_response_head_ends_its_count() {
    for on in EVERY {
        for &give_up in GiveUp::every(on.1) {
            for during_drain in DURING_DRAIN {
                let case = format!("{on}, {give_up:?}, during the drain: {during_drain}");
                let (app, server) = serve(on, Stack::Plain).await;
                let exchange = send(server.addr, on.1, "GET", "/release/pending").await;
                app.gate.entered(1).await;
                assert_eq!(app.shutdown.in_flight(), 1, "{case}");
                let drain = during_drain.then(|| app.shutdown.drain(LONG).unwrap());
                let _open = give_up.apply(exchange);
                let drain = drain.unwrap_or_else(|| app.shutdown.drain(LONG).unwrap());
                drained(&case, drain, app.shutdown).await;
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_giving_up_mid_body_ends_its_count() {
    for on in EVERY {
        for &give_up in GiveUp::every(on.1) {
            for during_drain in DURING_DRAIN {
                let case = format!("{on}, {give_up:?}, during the drain: {during_drain}");
                let (app, server) = serve(on, Stack::Plain).await;
                let mut exchange = send(server.addr, on.1, "GET", "/release/endless").await;
                app.gate.entered(1).await;
                assert_eq!(exchange.status().await, Ok(200), "{case}");
                exchange.some_body().await;
                assert_eq!(app.shutdown.in_flight(), 1, "{case}");
                let drain = during_drain.then(|| app.shutdown.drain(LONG).unwrap());
                let _open = give_up.apply(exchange);
                let drain = drain.unwrap_or_else(|| app.shutdown.drain(LONG).unwrap());
                drained(&case, drain, app.shutdown).await;
            }
        }
    }
}
