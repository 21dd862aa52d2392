//! `tower_drain::server::serve` against HTTP/1 clients that misbehave across the drain: one
//! that never reads its response, one that pipelines, one that sends its request head a byte
//! at a time, one that half-closes after its request. Whatever the client does, `serve`
//! returns by the drain deadline with nothing counted, and every pipelined request is either
//! answered or visibly left unanswered by a `Connection: close` on the last answer.
//!
//! Real server on 127.0.0.1, raw `TcpStream` clients for the bytes on the wire.

mod support;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use futures_util::{stream, StreamExt};
use http::{Request, Response};
use http_body::Frame;
use http_body_util::{combinators::BoxBody, BodyExt, Full, StreamBody};
use hyper::body::Incoming;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tower::{service_fn, Layer};
use tower_drain::{DrainOutcome, DrainReport, Shutdown};

use support::gate::Gate;
use support::raw::{
    has_connection_close, kept_alive_connection, read_response, read_to_close, read_to_eof,
    write_get,
};
use support::{bounded, bounded_for, BOUND};

/// One frame of `/stream`.
const CHUNK: usize = 64 * 1024;
/// Frames of `/stream`: 64 MiB in all, far more than the socket buffers on both ends hold.
const CHUNKS: usize = 1024;

/// Serves: `/held` waits at the gate, `/stalled` never answers (counted, so the layer answers
/// it 503 at the deadline), `/stream` a 64 MiB body in many frames (counted until its last
/// frame is sent), anything else `ok` and its path, with `shutdown.layer()` in front.
async fn start(shutdown: Shutdown, gate: &Gate) -> (SocketAddr, JoinHandle<()>) {
    let gate = gate.clone();
    let routes = service_fn(move |request: Request<Incoming>| {
        let gate = gate.clone();
        async move {
            let path = request.uri().path().to_owned();
            let body: BoxBody<Bytes, Infallible> = match path.as_str() {
                "/stream" => {
                    gate.enter();
                    let chunk = Bytes::from(vec![b'x'; CHUNK]);
                    let frames = stream::iter(0..CHUNKS)
                        .map(move |_| Ok::<_, Infallible>(Frame::data(chunk.clone())));
                    BodyExt::boxed(StreamBody::new(frames))
                }
                "/stalled" => {
                    gate.enter();
                    std::future::pending().await
                }
                held => {
                    if held == "/held" {
                        gate.pass().await;
                    }
                    BodyExt::boxed(Full::new(Bytes::from(format!("ok {path}\n"))))
                }
            };
            Ok::<_, Infallible>(Response::new(body))
        }
    });
    let service = shutdown.layer().layer(routes);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(tower_drain::server::serve(listener, service, shutdown));
    (addr, server)
}

/// Longer than any bounded wait: a drain with this timeout ends by its deadline only if the
/// test fails.
const LONG: Duration = Duration::from_secs(3600);

/// Reads what the server sends until it closes the connection, a reset counting as a close:
/// a connection the server never wrote on is closed at once, and bytes the client sends
/// after that make the kernel reset it.
async fn read_unanswered_or_503(mut client: TcpStream) -> String {
    let mut received = Vec::new();
    bounded(
        "the server to close",
        read_to_close(&mut client, &mut received),
    )
    .await;
    String::from_utf8(received).unwrap()
}

/// Splits what a connection received into its responses (each `content-length` framed), and
/// returns them with what was left over.
fn responses(raw: &str) -> (Vec<String>, String) {
    let mut rest = raw;
    let mut found = Vec::new();
    while let Some(head_end) = rest.find("\r\n\r\n") {
        let head = &rest[..head_end];
        let length: usize = head
            .lines()
            .find_map(|line| {
                line.to_ascii_lowercase()
                    .strip_prefix("content-length:")
                    .map(|v| v.trim().parse().unwrap())
            })
            .unwrap_or(0);
        let end = head_end + 4 + length;
        if rest.len() < end {
            break;
        }
        found.push(rest[..end].to_owned());
        rest = &rest[end..];
    }
    (found, rest.to_owned())
}

#[tokio::test]
async fn a_client_that_never_reads_its_streamed_response_is_cut_at_the_deadline() {
    let shutdown = Shutdown::new();
    let gate = Gate::new();
    let (addr, server) = start(shutdown, &gate).await;

    let mut client = TcpStream::connect(addr).await.unwrap();
    write_get(&mut client, "/stream").await;
    gate.entered(1).await;

    // The body never ends: the client reads nothing, so the socket buffers fill and the body
    // is still being sent, and counted, at the deadline.
    let report = bounded(
        "the drain",
        shutdown.drain(Duration::from_millis(200)).unwrap(),
    )
    .await;
    assert_eq!(report.outcome, DrainOutcome::TimedOut, "{report}");
    assert_eq!(report.still_running, 1, "{report}");

    bounded("the server to return", server).await.unwrap();
    assert_eq!(
        shutdown.in_flight(),
        0,
        "a request still counted after serve"
    );
    drop(client);
}

#[tokio::test]
async fn pipelined_requests_at_drain_start_are_answered_or_visibly_left_unanswered() {
    let shutdown = Shutdown::new();
    let gate = Gate::new();
    let (addr, server) = start(shutdown, &gate).await;

    let mut client = TcpStream::connect(addr).await.unwrap();
    client
        .write_all(
            b"GET /held HTTP/1.1\r\nhost: localhost\r\n\r\n\
              GET /a HTTP/1.1\r\nhost: localhost\r\n\r\n\
              GET /b HTTP/1.1\r\nhost: localhost\r\n\r\n",
        )
        .await
        .unwrap();
    gate.entered(1).await;

    let drain = tokio::spawn(shutdown.drain(BOUND).unwrap());
    bounded("admission to close", shutdown.closing()).await;
    gate.release(1);

    let received = read_to_eof(client).await;
    let (answered, rest) = responses(&received);
    assert_eq!(rest, "", "a partial response: {received:?}");
    assert!(!answered.is_empty(), "the held request lost: {received:?}");
    let paths = ["/held", "/a", "/b"];
    for (response, path) in answered.iter().zip(paths) {
        assert!(
            response.ends_with(&format!("ok {path}\n")) || response.starts_with("HTTP/1.1 503"),
            "{path} answered out of order: {response:?}"
        );
    }
    let last = answered.last().unwrap();
    assert!(
        has_connection_close(last),
        "the last answer before the close does not say so: {received:?}"
    );
    for earlier in &answered[..answered.len() - 1] {
        assert!(!has_connection_close(earlier), "closed early: {received:?}");
    }

    drained_and_served(shutdown, drain, server).await;
}

#[tokio::test]
async fn pipelined_requests_behind_an_answered_one_end_with_connection_close_on_the_held_one() {
    let shutdown = Shutdown::new();
    let gate = Gate::new();
    let (addr, server) = start(shutdown, &gate).await;

    let mut client = TcpStream::connect(addr).await.unwrap();
    client
        .write_all(
            b"GET /a HTTP/1.1\r\nhost: localhost\r\n\r\n\
              GET /held HTTP/1.1\r\nhost: localhost\r\n\r\n\
              GET /b HTTP/1.1\r\nhost: localhost\r\n\r\n",
        )
        .await
        .unwrap();
    let first = read_response(&mut client).await;
    assert!(first.ends_with("ok /a\n"), "{first:?}");
    assert!(
        !has_connection_close(&first),
        "closed while serving: {first:?}"
    );
    gate.entered(1).await;

    let drain = tokio::spawn(shutdown.drain(BOUND).unwrap());
    bounded("admission to close", shutdown.closing()).await;
    gate.release(1);

    let received = read_to_eof(client).await;
    let (answered, rest) = responses(&received);
    assert_eq!(rest, "", "a partial response: {received:?}");
    assert_eq!(answered.len(), 1, "{received:?}");
    assert!(answered[0].ends_with("ok /held\n"), "{received:?}");
    assert!(has_connection_close(&answered[0]), "{received:?}");

    let report = drained_and_served(shutdown, drain, server).await;
    assert_eq!(report.completed, 1, "{report}");
}

#[tokio::test]
async fn a_second_request_head_sent_byte_by_byte_on_a_kept_alive_connection_is_not_admitted() {
    let shutdown = Shutdown::new();
    let gate = Gate::new();
    let (addr, server) = start(shutdown, &gate).await;
    let client = kept_alive_connection(addr).await;
    dribble_a_head_across_the_drain(shutdown, server, client, 25).await;
}

#[tokio::test]
async fn a_request_head_sent_byte_by_byte_across_the_drain_is_answered_or_closed() {
    let shutdown = Shutdown::new();
    let gate = Gate::new();
    let (addr, server) = start(shutdown, &gate).await;
    let client = TcpStream::connect(addr).await.unwrap();
    dribble_a_head_across_the_drain(shutdown, server, client, 10).await;
}

/// Writes a request head to `client` a byte at a time, its first `split` bytes before the
/// drain begins and the rest once admission has closed, then checks that it was not
/// admitted (a 503, or no answer at all), that the drain ends `Drained` and `serve` returns.
async fn dribble_a_head_across_the_drain(
    shutdown: Shutdown,
    server: JoinHandle<()>,
    mut client: TcpStream,
    split: usize,
) {
    let head = b"GET /slow HTTP/1.1\r\nhost: localhost\r\n\r\n";
    let (before, after) = head.split_at(split);
    for byte in before {
        client.write_all(&[*byte]).await.unwrap();
        client.flush().await.unwrap();
    }
    let drain = tokio::spawn(shutdown.drain(LONG).unwrap());
    bounded("admission to close", shutdown.closing()).await;
    for byte in after {
        // The server may have closed: the rest of the head then goes nowhere.
        if client.write_all(&[*byte]).await.is_err() {
            break;
        }
    }

    // A reset is as good as a close here: the server never wrote, so nothing was lost.
    let received = read_unanswered_or_503(client).await;
    assert!(
        received.is_empty() || received.starts_with("HTTP/1.1 503"),
        "a request head completed after admission closed was admitted: {received:?}"
    );
    drained_and_served(shutdown, drain, server).await;
}

#[tokio::test]
async fn a_request_head_never_finished_is_closed_when_the_drain_begins() {
    let shutdown = Shutdown::new();
    let gate = Gate::new();
    let (addr, server) = start(shutdown, &gate).await;

    let mut client = TcpStream::connect(addr).await.unwrap();
    for byte in b"GET /slow HTTP/1.1\r\nhost: local" {
        client.write_all(&[*byte]).await.unwrap();
    }
    // The deadline is far past the bound: `serve` must close this connection at drain start,
    // as it does an idle one, not wait for the head's end or the deadline.
    let report = bounded("the drain", shutdown.drain(LONG).unwrap()).await;
    assert_eq!(report.outcome, DrainOutcome::Drained, "{report}");
    bounded("the server to return", server).await.unwrap();
    assert_eq!(
        read_unanswered_or_503(client).await,
        "",
        "an answer to half a head"
    );
    assert_eq!(shutdown.in_flight(), 0);
}

#[tokio::test]
async fn a_client_that_half_closes_during_the_drain_does_not_hold_it() {
    let shutdown = Shutdown::new();
    let gate = Gate::new();
    let (addr, server) = start(shutdown, &gate).await;

    let mut client = TcpStream::connect(addr).await.unwrap();
    write_get(&mut client, "/held").await;
    gate.entered(1).await;

    let drain = tokio::spawn(shutdown.drain(BOUND).unwrap());
    bounded("admission to close", shutdown.closing()).await;
    client.shutdown().await.unwrap();

    drained_and_served(shutdown, drain, server).await;
    assert_eq!(read_to_eof(client).await, "");
}

#[tokio::test]
async fn a_client_that_half_closes_while_its_response_streams_does_not_hold_the_drain() {
    let shutdown = Shutdown::new();
    let gate = Gate::new();
    let (addr, server) = start(shutdown, &gate).await;

    let mut client = TcpStream::connect(addr).await.unwrap();
    write_get(&mut client, "/stream").await;
    gate.entered(1).await;
    // Taken as gone: the body it never reads is dropped rather than sent until the deadline.
    client.shutdown().await.unwrap();

    let report = bounded("the drain", shutdown.drain(LONG).unwrap()).await;
    assert_eq!(report.outcome, DrainOutcome::Drained, "{report}");
    bounded("the server to return", server).await.unwrap();
    assert_eq!(shutdown.in_flight(), 0, "{report}");
    drop(client);
}

#[tokio::test]
async fn a_stalled_request_with_pipelined_ones_behind_it_gets_its_503_at_the_deadline() {
    for round in 0..5 {
        let shutdown = Shutdown::new();
        let gate = Gate::new();
        let (addr, server) = start(shutdown, &gate).await;

        let mut client = TcpStream::connect(addr).await.unwrap();
        let mut pipeline = b"GET /stalled HTTP/1.1\r\nhost: localhost\r\n\r\n".to_vec();
        // Far more than hyper reads ahead: most stays unread in the server's socket.
        for _ in 0..2000 {
            pipeline.extend_from_slice(b"GET /b HTTP/1.1\r\nhost: localhost\r\n\r\n");
        }
        client.write_all(&pipeline).await.unwrap();
        gate.entered(1).await;

        let report = bounded(
            "the drain",
            shutdown.drain(Duration::from_millis(50)).unwrap(),
        )
        .await;
        assert_eq!(report.outcome, DrainOutcome::TimedOut, "{report}");
        bounded("the server to return", server).await.unwrap();
        let mut received = Vec::new();
        let mut chunk = [0u8; 4096];
        let mut error = None;
        for _ in 0..64 {
            match bounded("the answer", client.read(&mut chunk)).await {
                Ok(0) => break,
                Ok(n) => received.extend_from_slice(&chunk[..n]),
                Err(e) => {
                    error = Some(e);
                    break;
                }
            }
        }
        let received = String::from_utf8(received).unwrap();
        assert!(
            received.starts_with("HTTP/1.1 503 "),
            "round {round}: the stalled request's 503 lost ({error:?}): {received:?}"
        );
        assert!(
            has_connection_close(&received),
            "round {round}: {received:?}"
        );
        assert_eq!(shutdown.in_flight(), 0);
    }
}

#[tokio::test]
async fn a_client_dribbling_a_request_head_past_the_deadline_does_not_hold_serve() {
    let shutdown = Shutdown::new();
    let gate = Gate::new();
    let (addr, mut server) = start(shutdown, &gate).await;

    // Answered once, so the server lingers on it when the drain closes it, reading what the
    // client still sends: the head of a request that never ends.
    let mut client = kept_alive_connection(addr).await;
    client.write_all(b"GET /slow HTTP/1.1\r\n").await.unwrap();
    let drain = shutdown.drain(Duration::from_millis(200)).unwrap();
    let report = bounded("the drain", drain).await;
    assert_eq!(report.outcome, DrainOutcome::Drained, "{report}");

    // Well under the linger's own 30 s limit: only the drain deadline can end it this soon.
    let returned = bounded_for(Duration::from_secs(10), "serve to return", async {
        // A byte per pass, far more passes than fit before the deadline (each is a write).
        for _ in 0..50_000_000 {
            tokio::select! {
                returned = &mut server => return returned,
                written = client.write_all(b"x") => {
                    if written.is_err() {
                        return (&mut server).await;
                    }
                }
            }
        }
        panic!("the server still takes the head's bytes");
    })
    .await;
    returned.unwrap();
    assert_eq!(shutdown.in_flight(), 0);
}

#[tokio::test]
async fn pipelined_requests_on_an_idle_connection_as_the_drain_begins_are_refused_visibly() {
    let shutdown = Shutdown::new();
    let gate = Gate::new();
    let (addr, server) = start(shutdown, &gate).await;

    let mut client = kept_alive_connection(addr).await;
    let drain = tokio::spawn(shutdown.drain(BOUND).unwrap());
    bounded("admission to close", shutdown.closing()).await;
    // Either the server has closed the idle connection already (the requests go unread, or
    // reset the connection), or it reads the first one, which admission refuses.
    let _ = client
        .write_all(
            b"GET /a HTTP/1.1\r\nhost: localhost\r\n\r\n\
              GET /b HTTP/1.1\r\nhost: localhost\r\n\r\n\
              GET /c HTTP/1.1\r\nhost: localhost\r\n\r\n",
        )
        .await;

    let received = read_unanswered_or_503(client).await;
    let (answered, rest) = responses(&received);
    assert_eq!(rest, "", "a partial response: {received:?}");
    assert!(answered.len() <= 1, "answered after a 503: {received:?}");
    if let Some(refused) = answered.first() {
        assert!(
            refused.starts_with("HTTP/1.1 503 "),
            "admitted: {received:?}"
        );
        assert!(has_connection_close(refused), "{received:?}");
    }
    drained_and_served(shutdown, drain, server).await;
}

/// Waits for `drain` to end `Drained` and for `serve` to return, then checks that nothing
/// it ran is still counted; returns the report for further checks.
async fn drained_and_served(
    shutdown: Shutdown,
    drain: JoinHandle<DrainReport>,
    server: JoinHandle<()>,
) -> DrainReport {
    let report = bounded("the drain", drain).await.unwrap();
    assert_eq!(report.outcome, DrainOutcome::Drained, "{report}");
    bounded("the server to return", server).await.unwrap();
    assert_eq!(
        shutdown.in_flight(),
        0,
        "a request still counted after serve"
    );
    report
}
