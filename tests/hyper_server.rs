//! `tower_drain::server::serve` over real connections: HTTP/2 GOAWAY, HTTP/1 keep-alive
//! closing, pooled clients, and the close at the drain deadline.

mod support;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tower::{service_fn, Layer};
use tower_drain::{DrainOutcome, Phase, Shutdown};

use support::gate::Gate;
use support::http::is_refused_by_goaway;
use support::raw::{has_connection_close, kept_alive_connection, read_to_eof, write_get};
use support::{bounded, BOUND};

/// Serves, until the drain: `/held` waits at the gate, `/stuck` never answers (and bypasses
/// the layer, so nothing counts it), anything else answers at once.
async fn start(shutdown: Shutdown, gate: &Gate) -> (SocketAddr, JoinHandle<()>) {
    let gate = gate.clone();
    let routes = service_fn(move |request: Request<Incoming>| {
        let gate = gate.clone();
        async move {
            match request.uri().path() {
                "/held" => gate.pass().await,
                "/stuck" => {
                    gate.enter();
                    std::future::pending().await
                }
                _ => {}
            }
            Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"ok\n"))))
        }
    });
    let service = shutdown.layer().bypass(&["/stuck"]).layer(routes);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(tower_drain::server::serve(listener, service, shutdown));
    (addr, server)
}

fn get(addr: SocketAddr, path: &str) -> Request<Empty<Bytes>> {
    Request::get(format!("http://{addr}{path}"))
        .body(Empty::new())
        .unwrap()
}

#[tokio::test]
async fn http2_streams_in_flight_complete_and_the_client_gets_goaway() {
    let shutdown = Shutdown::new();
    let gate = Gate::new();
    let (addr, server) = start(shutdown, &gate).await;

    let tcp = TcpStream::connect(addr).await.unwrap();
    let (mut sender, connection) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tcp))
            .await
            .unwrap();
    let connection = tokio::spawn(connection);
    let first = tokio::spawn(sender.send_request(get(addr, "/held")));
    let second = tokio::spawn(sender.send_request(get(addr, "/held")));
    gate.entered(2).await;

    let drain = shutdown.drain(BOUND).unwrap();

    // New streams on the same connection: answered 503 until the client has read the
    // server's GOAWAY, refused after. Each one gets an answer; none hangs.
    let mut refusal = None;
    for _ in 0..10_000 {
        let answer = bounded(
            "a new stream during the drain",
            sender.send_request(get(addr, "/")),
        );
        match answer.await {
            Ok(response) => assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE),
            Err(error) => {
                refusal = Some(error);
                break;
            }
        }
    }
    let refusal = refusal.expect("the client never saw GOAWAY");
    assert!(
        is_refused_by_goaway(&refusal),
        "not a GOAWAY refusal: {refusal:?}"
    );
    // Only GOAWAY closes the client's side while the connection still carries the held
    // streams: they finish on it below.
    assert!(sender.is_closed());
    assert_eq!(
        shutdown.phase(),
        Phase::Draining,
        "the held streams still run"
    );

    gate.release(2);
    for held in [first, second] {
        let response = bounded("a held stream", held).await.unwrap().unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        let body = bounded("its body", response.into_body().collect()).await;
        assert_eq!(body.unwrap().to_bytes(), "ok\n");
    }
    // The server closed the connection the HTTP/2 way: the client's connection ends cleanly.
    bounded("the client connection to end", connection)
        .await
        .unwrap()
        .expect("the connection ended with an error instead of GOAWAY and close");

    let report = bounded("the drain", drain).await;
    assert_eq!(report.outcome, DrainOutcome::Drained);
    assert_eq!(report.in_flight_at_start, 2);
    assert_eq!(report.completed, 2);
    bounded("the server to return", server).await.unwrap();
}

#[tokio::test]
async fn http1_response_during_drain_says_connection_close_and_the_server_closes() {
    let shutdown = Shutdown::new();
    let gate = Gate::new();
    let (addr, server) = start(shutdown, &gate).await;

    let mut stream = kept_alive_connection(addr).await;

    // Reuse the kept-alive connection for a request that is in flight when draining begins.
    write_get(&mut stream, "/held").await;
    gate.entered(1).await;
    let drain = shutdown.drain(BOUND).unwrap();
    gate.release(1);

    // Reading to EOF returns only if the server closes the connection after the response.
    let during = read_to_eof(stream).await;
    assert!(during.starts_with("HTTP/1.1 200 OK\r\n"), "{during}");
    assert!(
        has_connection_close(&during),
        "no `connection: close`: {during}"
    );
    assert!(
        during.ends_with("\r\n\r\nok\n"),
        "response incomplete: {during}"
    );

    assert_eq!(
        bounded("the drain", drain).await.outcome,
        DrainOutcome::Drained
    );
    bounded("the server to return", server).await.unwrap();
}

#[tokio::test]
async fn http1_idle_keep_alive_connection_is_closed_when_draining_begins() {
    let shutdown = Shutdown::new();
    let gate = Gate::new();
    let (addr, server) = start(shutdown, &gate).await;

    let idle = kept_alive_connection(addr).await;

    // A request held in flight keeps the drain going, so the close below happens at drain
    // start and not at its end.
    let mut busy = TcpStream::connect(addr).await.unwrap();
    write_get(&mut busy, "/held").await;
    gate.entered(1).await;
    let drain = shutdown.drain(BOUND).unwrap();

    assert_eq!(read_to_eof(idle).await, "", "idle connection not closed");
    assert_eq!(shutdown.phase(), Phase::Draining);

    gate.release(1);
    assert!(has_connection_close(&read_to_eof(busy).await));
    assert_eq!(
        bounded("the drain", drain).await.outcome,
        DrainOutcome::Drained
    );
    bounded("the server to return", server).await.unwrap();
}

#[tokio::test]
async fn http1_pooled_client_loses_no_request_to_a_reset() {
    let shutdown = Shutdown::new();
    let gate = Gate::new();
    let (addr, server) = start(shutdown, &gate).await;
    let client = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();

    // The client pools its connection; the held request reuses it.
    let warm = bounded("a request", client.request(get(addr, "/")))
        .await
        .unwrap();
    assert!(warm.headers().get(http::header::CONNECTION).is_none());
    bounded("its body", warm.into_body().collect())
        .await
        .unwrap();
    let held = tokio::spawn(client.request(get(addr, "/held")));
    gate.entered(1).await;

    let drain = shutdown.drain(BOUND).unwrap();
    gate.release(1);
    let response = bounded("the held request", held).await.unwrap().unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()[http::header::CONNECTION], "close");
    let body = bounded("its body", response.into_body().collect())
        .await
        .unwrap();
    assert_eq!(body.to_bytes(), "ok\n");
    assert_eq!(
        bounded("the drain", drain).await.outcome,
        DrainOutcome::Drained
    );
    bounded("the server to return", server).await.unwrap();

    assert_next_request_is_not_sent(&client, addr).await;
}

/// The client did not keep a connection the server closed: its next request is never written
/// to it, where it would die with a reset, but fails to connect, unsent and safe to retry.
async fn assert_next_request_is_not_sent(
    client: &Client<HttpConnector, Empty<Bytes>>,
    addr: SocketAddr,
) {
    let next = bounded("a request after shutdown", client.request(get(addr, "/"))).await;
    let error = next.expect_err("the server is gone");
    assert!(
        error.is_connect(),
        "request lost on a dead connection: {error:?}"
    );
}

#[tokio::test]
async fn http1_pooled_idle_connection_closed_by_the_drain_is_not_reused() {
    let shutdown = Shutdown::new();
    let gate = Gate::new();
    let (addr, server) = start(shutdown, &gate).await;
    let client = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();

    let warm = bounded("a request", client.request(get(addr, "/")))
        .await
        .unwrap();
    bounded("its body", warm.into_body().collect())
        .await
        .unwrap();

    // Nothing in flight: the drain is over at once and the pooled connection, idle, closed.
    let report = bounded("the drain", shutdown.drain(BOUND).unwrap()).await;
    assert_eq!(report.outcome, DrainOutcome::Drained);
    bounded("the server to return", server).await.unwrap();

    assert_next_request_is_not_sent(&client, addr).await;
}

#[tokio::test]
async fn connection_still_open_at_the_drain_deadline_is_closed() {
    let shutdown = Shutdown::new();
    let gate = Gate::new();
    let (addr, server) = start(shutdown, &gate).await;

    // `/stuck` never answers and is not counted; background work that is counted and never
    // ends makes the drain run to its deadline.
    let mut stuck = TcpStream::connect(addr).await.unwrap();
    write_get(&mut stuck, "/stuck").await;
    gate.entered(1).await;
    let work = shutdown.guard().expect("admission is open");

    let report = bounded(
        "the drain",
        shutdown.drain(Duration::from_millis(50)).unwrap(),
    )
    .await;
    assert_eq!(report.outcome, DrainOutcome::TimedOut);
    assert_eq!(report.still_running, 1);

    // Past the deadline the server stops waiting for the connection and closes it.
    assert_eq!(
        read_to_eof(stuck).await,
        "",
        "a stuck request got an answer"
    );
    bounded("the server to return", server).await.unwrap();
    drop(work);
}

#[tokio::test]
async fn server_started_after_admission_closed_returns_at_once() {
    let shutdown = Shutdown::new();
    let gate = Gate::new();
    let report = bounded("the drain", shutdown.drain(BOUND).unwrap()).await;
    assert_eq!(report.outcome, DrainOutcome::Drained);

    let (addr, server) = start(shutdown, &gate).await;
    bounded("the server to return", server).await.unwrap();
    let refused = TcpStream::connect(addr).await;
    assert!(refused.is_err(), "the listener still accepts");
}

#[tokio::test]
async fn http1_client_that_stops_sending_before_its_answer_is_taken_as_gone() {
    let shutdown = Shutdown::new();
    let gate = Gate::new();
    let (addr, server) = start(shutdown, &gate).await;
    let mut stream = TcpStream::connect(addr).await.unwrap();
    write_get(&mut stream, "/held").await;
    bounded("the request to reach the handler", gate.entered(1)).await;
    // A FIN is all the server sees of a client that gave up and closed (as nginx and Go's
    // server take it too): the request is cancelled, and the drain does not wait for an
    // answer nobody reads. The gate never opens: a request left running would hold the
    // drain to its deadline.
    stream.shutdown().await.unwrap();

    let report = bounded("the drain", shutdown.drain(BOUND).unwrap()).await;
    assert_eq!(report.outcome, DrainOutcome::Drained, "{report}");
    assert_eq!(read_to_eof(stream).await, "", "an answer nobody waited for");
    bounded("the server to return", server).await.unwrap();
}
