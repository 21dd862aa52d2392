//! Edges of the newest behaviour, each through a real server: a gRPC response finished on
//! drain whose handler has more ready than one poll of its task takes; HTTP/1.0 responses
//! only the connection's end delimits, closed by `serve` at the drain deadline while their
//! body is stalled outside any count.

#[path = "../examples/tonic/echo.rs"]
mod echo;
#[path = "tonic/server.rs"]
mod server;
mod support;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use futures_util::{stream, StreamExt};
use http::{Request, Response};
use http_body::Frame;
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Incoming;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tonic::codegen::BoxStream;
use tonic::transport::server::TcpIncoming;
use tonic::transport::Server;
use tonic::{Status, Streaming};
use tower_drain::{DrainOutcome, LongLivedKind, Shutdown};

use echo::{CountReply, CountRequest, Echo, EchoClient, EchoServer, SayReply, SayRequest};
use server::{connect, finish};
use support::gate::Gate;
use support::raw::{read_until, split_head};
use support::{bounded, BOUND};

/// Longer than any test runs: a drain that resolves did so because nothing was left.
const NEVER: Duration = Duration::from_secs(600);

/// `Count` sends its first reply, waits at the gate, then sends the rest from a channel that
/// already holds them all (its sender gone), and ends with OK.
struct Queued {
    gate: Gate,
}

impl Echo for Queued {
    async fn say(&self, request: SayRequest) -> Result<SayReply, Status> {
        Ok(SayReply { text: request.text })
    }

    fn count(&self, request: CountRequest) -> BoxStream<CountReply> {
        let (replies, queued) = mpsc::channel(request.to as usize);
        for n in 2..=request.to {
            replies.try_send(CountReply { n }).unwrap();
        }
        drop(replies);
        let first = stream::once(async { Ok(CountReply { n: 1 }) });
        let gate = Some(self.gate.clone());
        let rest = stream::unfold((gate, queued), |(gate, mut queued)| async move {
            if let Some(gate) = gate {
                gate.pass().await;
            }
            let reply = queued.recv().await?;
            Some((Ok(reply), (None, queued)))
        });
        Box::pin(first.chain(rest))
    }

    async fn sum(&self, _: Streaming<CountReply>) -> Result<CountRequest, Status> {
        Err(Status::unimplemented("sum"))
    }

    fn chat(&self, _: Streaming<SayRequest>) -> BoxStream<SayReply> {
        Box::pin(stream::once(async { Err(Status::unimplemented("chat")) }))
    }
}

/// A rule for `long_lived_when`: every gRPC response is finished on drain.
fn grpc_as_sse(_: http::StatusCode, headers: &http::HeaderMap) -> Option<LongLivedKind> {
    let content_type = headers.get(http::header::CONTENT_TYPE)?.as_bytes();
    content_type
        .starts_with(b"application/grpc")
        .then_some(LongLivedKind::Sse)
}

/// A server stream finished on drain whose handler, once the drain has begun, has all its
/// remaining replies and its end ready in a tokio channel, more of them than one poll of the
/// body's task may take (tokio's cooperative budget makes the channel answer "pending" with
/// replies in it): every reply and the OK status reach the client. The handler completed the
/// call; ending it at the budget's pause would fail it after part of its replies.
#[tokio::test]
async fn grpc_stream_with_more_ready_than_one_task_poll_takes_is_sent_whole_on_drain() {
    // Several times tokio's budget of 128 operations per task poll; a few kilobytes, well
    // within HTTP/2's initial window.
    const REPLIES: u32 = 1000;
    let shutdown = Shutdown::new();
    let gate = Gate::new();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let served = Server::builder()
        .layer(shutdown.layer().long_lived_when(grpc_as_sse))
        .add_service(EchoServer::new(Queued { gate: gate.clone() }))
        .serve_with_incoming_shutdown(TcpIncoming::from(listener), shutdown.closing());
    let server = tokio::spawn(served);
    let mut client = EchoClient::new(connect(addr).await);

    let mut replies = bounded("the call", client.count(REPLIES)).await.unwrap();
    let first = bounded("the first reply", replies.message()).await.unwrap();
    assert_eq!(first, Some(CountReply { n: 1 }));
    gate.entered(1).await;
    // On this one-thread runtime, the body's task runs only after both: it finds the drain
    // begun and every reply ready.
    let drain = shutdown.drain(NEVER).unwrap();
    gate.release(1);

    let mut last = 1;
    // Bounded by `REPLIES`: each pass takes one reply or ends.
    for _ in 0..REPLIES {
        match bounded("a reply", replies.message()).await {
            Ok(Some(reply)) => {
                assert_eq!(reply.n, last + 1, "a reply lost");
                last = reply.n;
            }
            Ok(None) => break,
            Err(status) => panic!("the call failed after {last} replies: {status:?}"),
        }
    }
    assert_eq!(last, REPLIES);
    let report = finish(drain, server).await;
    assert_eq!(report.outcome, DrainOutcome::Drained, "{report}");
    assert_eq!(report.completed, 1, "{report}");
    assert!(report.long_lived.is_empty(), "{report}");
}

// === HTTP/1.0 bodies delimited by the close, on `serve` ===

type BoxBody =
    http_body_util::combinators::BoxBody<Bytes, Box<dyn std::error::Error + Send + Sync>>;

/// Serves, on `serve` and with no layer (as a bypassed or marked route's stream is neither
/// counted nor cut), a handler that reads the whole request body, then answers `/whole` with
/// `ok\n` (of known length), and anything else with a body of unknown length (HTTP/1.0
/// delimits it by the connection's close): `part 1\n`, then nothing more, ever.
async fn start_stalled(shutdown: Shutdown) -> (SocketAddr, JoinHandle<()>) {
    let routes = tower::service_fn(|request: Request<Incoming>| async move {
        let whole = request.uri().path() == "/whole";
        request.into_body().collect().await.unwrap();
        if whole {
            let body = http_body_util::Full::new(Bytes::from_static(b"ok\n"));
            return Ok::<_, Infallible>(Response::new(body.map_err(Into::into).boxed()));
        }
        let frames = stream::once(async {
            Ok::<_, Infallible>(Frame::data(Bytes::from_static(b"part 1\n")))
        })
        .chain(stream::pending());
        let body: BoxBody = StreamBody::new(frames).map_err(Into::into).boxed();
        Ok::<_, Infallible>(Response::new(body))
    });
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(tower_drain::server::serve(listener, routes, shutdown));
    (addr, server)
}

/// How a raw connection ended, once the server was done with it.
#[derive(Debug, PartialEq, Eq)]
enum End {
    /// A FIN: end of stream, which ends a body delimited by the close.
    Clean,
    /// A reset.
    Reset,
}

/// Reads until the server closes `stream`, keeping what was read; says how it ended.
async fn read_to_end_or_reset(stream: &mut TcpStream, received: &mut Vec<u8>) -> End {
    let mut chunk = [0u8; 16 * 1024];
    bounded("the server to close", async {
        // Bounded by the server, which closes the connection at the drain deadline.
        loop {
            match stream.read(&mut chunk).await {
                Ok(0) => return End::Clean,
                Ok(n) => received.extend_from_slice(&chunk[..n]),
                Err(error) if error.kind() == std::io::ErrorKind::ConnectionReset => {
                    return End::Reset
                }
                Err(error) => panic!("read failed: {error}"),
            }
        }
    })
    .await
}

/// Reads the response head and the first part of its body; checks that the body is
/// delimited by the close.
async fn read_first_part(client: &mut TcpStream, received: &mut Vec<u8>) {
    assert!(bounded("the first part", read_until(client, received, b"part 1\n")).await);
    let (head, _) = split_head(received);
    let head = head.to_ascii_lowercase();
    assert!(head.starts_with("http/1.0 200 ok"), "{head}");
    assert!(
        !head.contains("content-length") && !head.contains("transfer-encoding"),
        "delimited by the close: {head}"
    );
}

/// An HTTP/1.0 response that no layer counts (a bypassed or marked route's stream, or a
/// service without the layer), its body stalled mid-way when `serve` closes the connection
/// at the drain deadline: hyper still holds part of the response unsent (all it has not yet
/// been given), and the client must find the connection reset, not a clean end that
/// completes the part it got.
#[tokio::test]
async fn http1_0_body_stalled_outside_any_count_is_reset_when_serve_closes_it() {
    let shutdown = Shutdown::new();
    let (addr, server) = start_stalled(shutdown).await;

    let mut client = TcpStream::connect(addr).await.unwrap();
    client
        .write_all(b"POST / HTTP/1.0\r\ncontent-length: 5\r\n\r\nhello")
        .await
        .unwrap();
    let mut received = Vec::new();
    read_first_part(&mut client, &mut received).await;

    let report = bounded("the drain", shutdown.drain(BOUND).unwrap()).await;
    assert_eq!(report.outcome, DrainOutcome::Drained, "{report}");
    // The deadline, as far as `serve` is concerned: it closes what is still open.
    shutdown.force();
    bounded("the server to return", server).await.unwrap();

    let end = read_to_end_or_reset(&mut client, &mut received).await;
    assert_eq!(
        end,
        End::Reset,
        "a close-delimited body closed mid-way ended cleanly: {:?}",
        String::from_utf8_lossy(&received)
    );
}

/// A client that asks in HTTP/1.1 and then, on the same kept-alive connection, in HTTP/1.0:
/// the second answer is HTTP/1.0, delimited by the close. Closed by `serve` at the deadline
/// with its body stalled, the connection must be reset, as one that spoke HTTP/1.0 from its
/// first request is: the version of the last answer counts, not that of the first.
#[tokio::test]
async fn http1_0_body_after_an_http1_1_answer_on_one_connection_is_reset_when_serve_closes_it() {
    let shutdown = Shutdown::new();
    let (addr, server) = start_stalled(shutdown).await;

    let mut client = TcpStream::connect(addr).await.unwrap();
    client
        .write_all(b"GET /whole HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    let mut first = Vec::new();
    assert!(
        bounded(
            "the first answer",
            read_until(&mut client, &mut first, b"ok\n")
        )
        .await
    );
    assert!(first.starts_with(b"HTTP/1.1 200 OK\r\n"));
    client.write_all(b"GET / HTTP/1.0\r\n\r\n").await.unwrap();
    let mut received = Vec::new();
    read_first_part(&mut client, &mut received).await;

    let report = bounded("the drain", shutdown.drain(BOUND).unwrap()).await;
    assert_eq!(report.outcome, DrainOutcome::Drained, "{report}");
    // The deadline, as far as `serve` is concerned: it closes what is still open.
    shutdown.force();
    bounded("the server to return", server).await.unwrap();

    let end = read_to_end_or_reset(&mut client, &mut received).await;
    assert_eq!(
        end,
        End::Reset,
        "a close-delimited body closed mid-way ended cleanly: {:?}",
        String::from_utf8_lossy(&received)
    );
}

/// An HTTP/1.0 request whose counted handler is still stalled at the drain deadline: `serve`
/// polls its connection once more, in which the layer answers 503, and then closes it. The
/// 503, which has a length, reaches the client whole.
#[tokio::test]
async fn http1_0_request_stalled_at_the_deadline_gets_its_503_whole() {
    let shutdown = Shutdown::new();
    let gate = Gate::new();
    let held = gate.clone();
    let routes = tower::service_fn(move |_: Request<Incoming>| {
        let held = held.clone();
        async move {
            held.enter();
            std::future::pending::<()>().await;
            Ok::<_, Infallible>(Response::new(http_body_util::Empty::<Bytes>::new()))
        }
    });
    let service = tower::Layer::layer(&shutdown.layer(), routes);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(tower_drain::server::serve(listener, service, shutdown));

    let mut client = TcpStream::connect(addr).await.unwrap();
    client.write_all(b"GET / HTTP/1.0\r\n\r\n").await.unwrap();
    gate.entered(1).await;
    let drain = tokio::spawn(shutdown.drain(BOUND).unwrap());
    bounded("closing", shutdown.closing()).await;
    assert!(shutdown.force(), "the request was still running");
    let report = bounded("the drain", drain).await.unwrap();
    assert_eq!(report.outcome, DrainOutcome::TimedOut, "{report}");
    bounded("the server to return", server).await.unwrap();

    let mut received = Vec::new();
    let end = read_to_end_or_reset(&mut client, &mut received).await;
    let answer = String::from_utf8_lossy(&received);
    assert!(answer.starts_with("HTTP/1.0 503 "), "{answer}");
    assert_eq!(end, End::Clean, "{answer}");
}
