//! tonic calls that end badly while the drain is under way: a handler that fails or panics
//! mid-stream, a client that walks away from half of a call, tonic's own limits and timeouts
//! around the shutdown layer, calls queued behind HTTP/2's stream limit when the GOAWAY
//! comes. Each call ends in a way its client tells apart from success (or succeeds whole),
//! the count returns to zero whichever side ends first, and the drain resolves without
//! waiting for its timeout.

#[path = "../examples/tonic/echo.rs"]
mod echo;
#[path = "tonic/server.rs"]
mod server;
mod support;

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures_util::{stream, FutureExt, StreamExt};
use tokio::net::TcpListener;
use tonic::codegen::BoxStream;
use tonic::transport::server::TcpIncoming;
use tonic::transport::Server;
use tonic::{Code, Status, Streaming};
use tower_drain::{DrainOutcome, DrainReport, LongLivedKind, Shutdown};

use echo::{CountReply, CountRequest, Echo, EchoClient, EchoServer, SayReply, SayRequest};
use server::{client_stream, connect, finish, Served};
use support::bounded;
use support::gate::Gate;

/// Longer than any test runs: a drain that resolves did so because nothing was left, never
/// because its timeout passed.
const NEVER: Duration = Duration::from_secs(600);

/// `Count` to this fails with ABORTED after its first reply (and the gate).
const FAIL_AFTER_FIRST: u32 = 100;
/// `Count` to this panics after its first reply (and the gate).
const PANIC_AFTER_FIRST: u32 = 101;

/// A handler that misbehaves on request. `Say` of "held…" waits at the gate, and one of
/// "…panic" then panics; `Count` sends
/// its first reply, waits at the gate, then goes on, fails or panics (see the constants);
/// `Sum` waits at the gate after its first message and fails on a message of 0; `Chat`
/// echoes, waits at the gate before echoing "held…", fails on "fail" and panics on "panic".
/// Every call that reaches a handler is counted in `calls`.
struct Faulty {
    gate: Gate,
    calls: Arc<AtomicUsize>,
}

impl Faulty {
    fn entered(&self) {
        // Relaxed: read by the test only after the calls it counts have ended.
        self.calls.fetch_add(1, Ordering::Relaxed);
    }
}

impl Echo for Faulty {
    async fn say(&self, request: SayRequest) -> Result<SayReply, Status> {
        self.entered();
        if request.text.starts_with("held") {
            self.gate.pass().await;
        }
        if request.text.ends_with("panic") {
            panic!("the handler panicked");
        }
        Ok(SayReply { text: request.text })
    }

    fn count(&self, request: CountRequest) -> BoxStream<CountReply> {
        self.entered();
        let gate = self.gate.clone();
        Box::pin(stream::unfold(1, move |n| {
            let gate = gate.clone();
            async move {
                if n > request.to {
                    return None;
                }
                if n == 2 {
                    gate.pass().await;
                    match request.to {
                        FAIL_AFTER_FIRST => {
                            return Some((Err(Status::aborted("the handler gave up")), u32::MAX))
                        }
                        PANIC_AFTER_FIRST => panic!("the handler panicked mid-stream"),
                        _ => {}
                    }
                }
                Some((Ok(CountReply { n }), n + 1))
            }
        }))
    }

    async fn sum(&self, mut requests: Streaming<CountReply>) -> Result<CountRequest, Status> {
        self.entered();
        let mut to = 0;
        let mut first = true;
        // Bounded by the client, which ends its stream or sends a 0.
        while let Some(number) = requests.message().await? {
            if number.n == 0 {
                return Err(Status::invalid_argument("a zero"));
            }
            to += number.n;
            if std::mem::take(&mut first) {
                self.gate.pass().await;
            }
        }
        Ok(CountRequest { to })
    }

    fn chat(&self, requests: Streaming<SayRequest>) -> BoxStream<SayReply> {
        self.entered();
        let gate = self.gate.clone();
        Box::pin(requests.then(move |message| {
            let gate = gate.clone();
            async move {
                let message = message?;
                match message.text.as_str() {
                    "fail" => return Err(Status::aborted("the handler gave up")),
                    "panic" => panic!("the handler panicked mid-stream"),
                    text if text.starts_with("held") => gate.pass().await,
                    _ => {}
                }
                Ok(SayReply { text: message.text })
            }
        }))
    }
}

/// tonic's server options a test sets around the shutdown layer.
#[derive(Default, Clone, Copy)]
struct Tuning {
    concurrency_limit_per_connection: Option<usize>,
    timeout: Option<Duration>,
    max_concurrent_streams: Option<u32>,
    keepalive: Option<Duration>,
    /// The layer finishes every gRPC response on drain, by a rule that names it an event
    /// stream.
    finish_grpc: bool,
}

struct Started {
    addr: SocketAddr,
    server: Served,
    gate: Gate,
    calls: Arc<AtomicUsize>,
}

/// Serves [`Faulty`] under `shutdown.layer()` on tonic's server, tuned by `tuning`.
async fn start(shutdown: Shutdown, tuning: Tuning) -> Started {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let gate = Gate::new();
    let calls = Arc::new(AtomicUsize::new(0));
    let echo = EchoServer::new(Faulty {
        gate: gate.clone(),
        calls: Arc::clone(&calls),
    });
    let mut builder = Server::builder();
    if let Some(limit) = tuning.concurrency_limit_per_connection {
        builder = builder.concurrency_limit_per_connection(limit);
    }
    if let Some(timeout) = tuning.timeout {
        builder = builder.timeout(timeout);
    }
    if let Some(max) = tuning.max_concurrent_streams {
        builder = builder.max_concurrent_streams(max);
    }
    if let Some(interval) = tuning.keepalive {
        builder = builder
            .http2_keepalive_interval(Some(interval))
            .tcp_keepalive(Some(interval));
    }
    let mut layer = shutdown.layer();
    if tuning.finish_grpc {
        layer = layer.long_lived_when(grpc_as_sse);
    }
    let served = builder
        .layer(layer)
        .add_service(echo)
        .serve_with_incoming_shutdown(TcpIncoming::from(listener), shutdown.closing());
    let served: Pin<Box<dyn std::future::Future<Output = _> + Send>> = Box::pin(served);
    Started {
        addr,
        server: tokio::spawn(served),
        gate,
        calls,
    }
}

/// A rule for `long_lived_when`: every gRPC response is finished on drain.
fn grpc_as_sse(_: http::StatusCode, headers: &http::HeaderMap) -> Option<LongLivedKind> {
    let content_type = headers.get(http::header::CONTENT_TYPE)?.as_bytes();
    content_type
        .starts_with(b"application/grpc")
        .then_some(LongLivedKind::Sse)
}

fn say(text: &str) -> SayRequest {
    SayRequest { text: text.into() }
}

fn assert_drained(report: &DrainReport, completed: usize) {
    assert_eq!(report.outcome, DrainOutcome::Drained, "{report}");
    assert_eq!(report.completed, completed, "{report}");
    assert_eq!(report.still_running, 0, "{report}");
}

/// A bidirectional handler that fails mid-stream while the drain waits for it: the client
/// gets the handler's status, and the count ends with the response, though the client still
/// has its request stream open.
#[tokio::test]
async fn bidirectional_handler_failing_mid_stream_while_draining_ends_the_count() {
    let shutdown = Shutdown::new();
    let started = start(shutdown, Tuning::default()).await;
    let mut client = EchoClient::new(connect(started.addr).await);

    let (messages, sent) = client_stream();
    messages.send(say("one")).unwrap();
    let mut replies = bounded("the call", client.chat(sent)).await.unwrap();
    let first = bounded("the first reply", replies.message()).await.unwrap();
    assert_eq!(first.unwrap().text, "one");

    let mut drain = std::pin::pin!(shutdown.drain(NEVER).unwrap());
    assert!(drain.as_mut().now_or_never().is_none(), "drained too early");
    messages.send(say("fail")).unwrap();
    let status = bounded("the end of the stream", replies.message())
        .await
        .expect_err("a stream its handler failed ended cleanly");
    assert_eq!(status.code(), Code::Aborted, "{status:?}");
    assert_eq!(status.message(), "the handler gave up");

    // The request stream is still open: the drain does not wait for it.
    let report = finish(drain, started.server).await;
    assert_drained(&report, 1);
    drop(messages);
}

/// A server stream whose handler fails after the drain began: the client reads the reply sent
/// before, then the handler's status, never the stream's clean end.
#[tokio::test]
async fn server_stream_failing_after_draining_began_gets_its_status() {
    let shutdown = Shutdown::new();
    let started = start(shutdown, Tuning::default()).await;
    let mut client = EchoClient::new(connect(started.addr).await);

    let mut replies = bounded("the call", client.count(FAIL_AFTER_FIRST))
        .await
        .unwrap();
    let first = bounded("the first reply", replies.message()).await.unwrap();
    assert_eq!(first, Some(CountReply { n: 1 }));
    started.gate.entered(1).await;
    let drain = shutdown.drain(NEVER).unwrap();
    started.gate.release(1);

    let status = bounded("the end of the stream", replies.message())
        .await
        .expect_err("a stream its handler failed ended cleanly");
    assert_eq!(status.code(), Code::Aborted, "{status:?}");
    assert_drained(&finish(drain, started.server).await, 1);
}

/// A handler that panics mid-stream while the drain waits for it: the client sees a failed
/// call, the count ends as the server's task unwinds, and the drain resolves.
#[tokio::test]
async fn handlers_panicking_mid_stream_while_draining_fail_their_calls_and_end_the_count() {
    let shutdown = Shutdown::new();
    let started = start(shutdown, Tuning::default()).await;
    let channel = connect(started.addr).await;
    let mut streaming = EchoClient::new(channel.clone());
    let mut chatting = EchoClient::new(channel);

    let mut counted = bounded("the server stream", streaming.count(PANIC_AFTER_FIRST))
        .await
        .unwrap();
    let first = bounded("the first reply", counted.message()).await.unwrap();
    assert_eq!(first, Some(CountReply { n: 1 }));
    started.gate.entered(1).await;
    let (messages, sent) = client_stream();
    messages.send(say("one")).unwrap();
    let mut replies = bounded("the chat", chatting.chat(sent)).await.unwrap();
    let first = bounded("the chat's reply", replies.message())
        .await
        .unwrap();
    assert_eq!(first.unwrap().text, "one");
    assert_eq!(shutdown.in_flight(), 2);

    let drain = shutdown.drain(NEVER).unwrap();
    messages.send(say("panic")).unwrap();
    let end = bounded("the end of the chat", replies.message()).await;
    let status = end.expect_err("a stream whose handler panicked ended cleanly");
    assert_ne!(status.code(), Code::Ok, "{status:?}");
    started.gate.release(1);
    let end = bounded("the end of the server stream", counted.message()).await;
    let status = end.expect_err("a stream whose handler panicked ended cleanly");
    assert_ne!(status.code(), Code::Ok, "{status:?}");

    let report = finish(drain, started.server).await;
    assert_eq!(report.outcome, DrainOutcome::Drained, "{report}");
    assert_eq!(report.still_running, 0, "{report}");
    assert_eq!(shutdown.in_flight(), 0);
    drop(messages);
}

/// A client-streaming handler that refuses the call while its client is still uploading:
/// the client gets the handler's status, the count ends, though the client never ended its
/// request stream.
#[tokio::test]
async fn client_streaming_handler_failing_mid_upload_while_draining_ends_the_count() {
    let shutdown = Shutdown::new();
    let started = start(shutdown, Tuning::default()).await;
    let mut client = EchoClient::new(connect(started.addr).await);

    let (numbers, sent) = client_stream();
    numbers.send(CountReply { n: 1 }).unwrap();
    let call = tokio::spawn(async move { client.sum(sent).await });
    started.gate.entered(1).await;
    let drain = shutdown.drain(NEVER).unwrap();
    started.gate.release(1);
    numbers.send(CountReply { n: 0 }).unwrap();

    let status = bounded("the call", call)
        .await
        .unwrap()
        .expect_err("a call its handler refused succeeded");
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert_drained(&finish(drain, started.server).await, 1);
    drop(numbers);
}

/// A client that gives up on a client-streaming call in the middle of its upload, after the
/// drain began: its stream is reset, the handler reading it fails, and the count ends.
#[tokio::test]
async fn client_abandoning_its_upload_while_draining_ends_the_count() {
    let shutdown = Shutdown::new();
    let started = start(shutdown, Tuning::default()).await;
    let mut client = EchoClient::new(connect(started.addr).await);

    let (numbers, sent) = client_stream();
    numbers.send(CountReply { n: 1 }).unwrap();
    let call = tokio::spawn(async move { client.sum(sent).await });
    started.gate.entered(1).await;
    let drain = shutdown.drain(NEVER).unwrap();
    // The handler goes back to reading a request stream that never ends by itself.
    started.gate.release(1);
    numbers.send(CountReply { n: 2 }).unwrap();
    call.abort();
    assert!(bounded("the call's task", call).await.is_err());

    assert_drained(&finish(drain, started.server).await, 1);
    drop(numbers);
}

/// A client that drops the replies of a bidirectional call while still sending: the call is
/// not over for the server, which goes on reading, so the drain waits; once the client ends
/// its requests too, the count ends and the drain resolves.
#[tokio::test]
async fn bidirectional_call_whose_client_dropped_its_replies_ends_with_its_requests() {
    let shutdown = Shutdown::new();
    let started = start(shutdown, Tuning::default()).await;
    let mut client = EchoClient::new(connect(started.addr).await);

    let (messages, sent) = client_stream();
    messages.send(say("one")).unwrap();
    let mut replies = bounded("the call", client.chat(sent)).await.unwrap();
    let first = bounded("the first reply", replies.message()).await.unwrap();
    assert_eq!(first.unwrap().text, "one");

    let drain = shutdown.drain(NEVER).unwrap();
    drop(replies);
    messages.send(say("two")).unwrap();
    drop(messages);

    let report = finish(drain, started.server).await;
    assert_drained(&report, 1);
}

/// A call that waits for room in tonic's `concurrency_limit_per_connection`, which wraps the
/// service outside the shutdown layer, when the drain begins: once the call ahead of it
/// finishes, it reaches the layer and gets UNAVAILABLE, never its handler; the drain counts
/// only the first.
#[tokio::test]
async fn call_waiting_in_tonics_concurrency_limit_gets_unavailable_once_there_is_room() {
    let shutdown = Shutdown::new();
    let tuning = Tuning {
        concurrency_limit_per_connection: Some(1),
        ..Tuning::default()
    };
    let started = start(shutdown, tuning).await;
    let channel = connect(started.addr).await;
    let mut first = EchoClient::new(channel.clone());
    let mut second = EchoClient::new(channel);

    let held = tokio::spawn(async move { first.say("held").await });
    started.gate.entered(1).await;
    let waiting = tokio::spawn(async move { second.say("waiting").await });
    // The second call waits in the limit, outside the layer: not counted.
    let drain = shutdown.drain(NEVER).unwrap();
    started.gate.release(1);

    let reply = bounded("the held call", held).await.unwrap();
    assert_eq!(reply.expect("the held call failed").text, "held");
    let status = bounded("the waiting call", waiting)
        .await
        .unwrap()
        .expect_err("a call that waited past the drain's start was served");
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert_drained(&finish(drain, started.server).await, 1);
    assert_eq!(started.calls.load(Ordering::Relaxed), 1);
}

/// tonic's server-wide `timeout`, outside the shutdown layer, gives up on a held call while
/// the drain waits for it: the call fails, and its count ends with it.
#[tokio::test]
async fn tonics_server_timeout_ends_a_held_calls_count_while_draining() {
    let shutdown = Shutdown::new();
    let tuning = Tuning {
        timeout: Some(Duration::from_millis(200)),
        ..Tuning::default()
    };
    let started = start(shutdown, tuning).await;
    let mut client = EchoClient::new(connect(started.addr).await);

    let call = tokio::spawn(async move { client.say("held").await });
    started.gate.entered(1).await;
    let drain = shutdown.drain(NEVER).unwrap();
    // The gate never opens: only tonic's timeout ends the call.
    let status = bounded("the call", call)
        .await
        .unwrap()
        .expect_err("a call tonic gave up on succeeded");
    assert_eq!(status.code(), Code::Cancelled, "{status:?}");
    let report = finish(drain, started.server).await;
    assert_eq!(report.outcome, DrainOutcome::Drained, "{report}");
    assert_eq!(shutdown.in_flight(), 0);
}

/// Many calls multiplexed on one connection whose server allows one stream at a time: one is
/// held when the GOAWAY comes, the rest wait in the client for a stream. The held one
/// completes; none of the others is served, each fails, and the server returns.
#[tokio::test]
async fn calls_queued_behind_max_concurrent_streams_when_the_goaway_comes_fail() {
    const QUEUED: usize = 8;
    let shutdown = Shutdown::new();
    let tuning = Tuning {
        max_concurrent_streams: Some(1),
        ..Tuning::default()
    };
    let started = start(shutdown, tuning).await;
    let channel = connect(started.addr).await;

    let mut held_client = EchoClient::new(channel.clone());
    let held = tokio::spawn(async move { held_client.say("held").await });
    started.gate.entered(1).await;
    let queued: Vec<_> = (0..QUEUED)
        .map(|_| {
            let mut client = EchoClient::new(channel.clone());
            tokio::spawn(async move { client.say("queued").await })
        })
        .collect();
    let drain = shutdown.drain(NEVER).unwrap();
    started.gate.release(1);

    let reply = bounded("the held call", held).await.unwrap();
    assert_eq!(reply.expect("the held call failed").text, "held");
    let mut refused_by_the_layer = 0;
    for call in queued {
        let result = bounded("a queued call", call).await.unwrap();
        let status = result.expect_err("a call sent after the GOAWAY was served");
        if status.code() == Code::Unavailable {
            assert_eq!(status.message(), "server is shutting down", "{status:?}");
            refused_by_the_layer += 1;
        } else {
            assert!(never_sent(&status), "{status:?}");
        }
    }
    let report = finish(drain, started.server).await;
    assert_drained(&report, 1);
    assert_eq!(started.calls.load(Ordering::Relaxed), 1);
    assert_eq!(shutdown.rejected(), refused_by_the_layer);
}

/// True for the ways tonic's client reports a call hyper never sent, the connection having
/// closed first: one still in hyper's queue comes back canceled ("connection closed"),
/// which tonic reports as CANCELLED; one hyper had taken from its queue and held for a free
/// stream (the server's `max_concurrent_streams` reached) comes back as hyper's "dispatch
/// task is gone", which tonic reports as UNKNOWN.
fn never_sent(status: &Status) -> bool {
    let mut source = std::error::Error::source(status);
    // Bounded by the depth of the error chain.
    while let Some(error) = source {
        if let Some(hyper) = error.downcast_ref::<hyper::Error>() {
            return match status.code() {
                Code::Cancelled => hyper.is_canceled(),
                Code::Unknown => hyper.is_user() && hyper.to_string().contains("dispatch task"),
                _ => false,
            };
        }
        source = error.source();
    }
    false
}

/// HTTP/2 keep-alive pings (and TCP keep-alive) on tonic's server do not hold the drain nor
/// cut a stream in flight: a bidirectional call open across the drain's start completes.
#[tokio::test]
async fn stream_in_flight_completes_under_http2_keepalive() {
    let shutdown = Shutdown::new();
    let tuning = Tuning {
        keepalive: Some(Duration::from_millis(20)),
        ..Tuning::default()
    };
    let started = start(shutdown, tuning).await;
    let mut client = EchoClient::new(connect(started.addr).await);

    let (messages, sent) = client_stream();
    messages.send(say("one")).unwrap();
    let mut replies = bounded("the call", client.chat(sent)).await.unwrap();
    let first = bounded("the first reply", replies.message()).await.unwrap();
    assert_eq!(first.unwrap().text, "one");
    let drain = shutdown.drain(NEVER).unwrap();
    messages.send(say("held")).unwrap();
    started.gate.entered(1).await;
    started.gate.release(1);
    let second = bounded("the second reply", replies.message())
        .await
        .unwrap();
    assert_eq!(second.unwrap().text, "held");
    drop(messages);
    let end = bounded("the end of the stream", replies.message()).await;
    assert_eq!(end.expect("the stream ended with an error"), None);
    assert_drained(&finish(drain, started.server).await, 1);
}

/// A gzip-compressed server stream, both sides compressing, finished when the drain begins
/// by a layer that tracks every gRPC response: the client reads the reply sent before, then
/// a failed call, never the clean end of a compressed stream cut between two messages. The
/// drain does not wait for the held handler.
#[tokio::test]
async fn compressed_server_stream_finished_on_drain_ends_with_an_error() {
    let shutdown = Shutdown::new();
    let gate = Gate::new();
    let options = server::Options {
        gzip: true,
        finish_streams: true,
        ..server::Options::default()
    };
    let (addr, server) = server::start_with(shutdown, &gate, shutdown.closing(), options).await;
    let mut client = EchoClient::new(connect(addr).await).gzip();

    let mut replies = bounded("the call", client.count(3)).await.unwrap();
    let first = bounded("the first reply", replies.message()).await.unwrap();
    assert_eq!(first, Some(CountReply { n: 1 }));
    gate.entered(1).await;
    let drain = shutdown.drain(NEVER).unwrap();

    let end = bounded("the end of the stream", replies.message()).await;
    let status = end.expect_err("a compressed stream finished on drain ended as if complete");
    assert_eq!(status.code(), Code::Unknown, "{status:?}");
    let report = finish(drain, server).await;
    assert_drained(&report, 1);
    gate.release(1);
}

/// Decodes standard, padded base64, a group of four at a time: gRPC-web-text bodies are
/// pieces each padded on its own.
fn base64_decode(text: &[u8]) -> Vec<u8> {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut bytes = Vec::new();
    for group in text.chunks(4) {
        let mut bits = 0u32;
        let mut padding = 0;
        for &symbol in group {
            bits <<= 6;
            match ALPHABET.iter().position(|&known| known == symbol) {
                Some(value) => bits |= value as u32,
                None => padding += 1,
            }
        }
        bytes.extend_from_slice(&bits.to_be_bytes()[1..4 - padding]);
    }
    bytes
}

/// gRPC-web frames: each flag byte with its payload.
fn grpc_web_frames(mut body: &[u8]) -> Vec<(u8, Vec<u8>)> {
    let mut frames = Vec::new();
    // Bounded: each pass consumes a frame head of five bytes or returns.
    while body.len() >= 5 {
        let length = u32::from_be_bytes(body[1..5].try_into().unwrap()) as usize;
        assert!(body.len() >= 5 + length, "a frame cut short: {body:?}");
        frames.push((body[0], body[5..5 + length].to_vec()));
        body = &body[5 + length..];
    }
    assert!(body.is_empty(), "bytes after the last frame: {body:?}");
    frames
}

/// gRPC-web in base64 (`application/grpc-web-text`, as browsers' clients speak it) over raw
/// HTTP/1, the shutdown layer seeing gRPC-web: a server stream finished on drain ends with
/// the reply sent before and one trailer frame saying UNAVAILABLE, in base64 the client can
/// decode piece by piece, and a clean end of the chunked body.
#[tokio::test]
async fn grpc_web_text_server_stream_finished_on_drain_ends_with_one_unavailable_trailer() {
    use tokio::io::AsyncWriteExt;

    let shutdown = Shutdown::new();
    let gate = Gate::new();
    let options = server::Options {
        web: Some(server::WebLayer::Inside),
        finish_streams: true,
        ..server::Options::default()
    };
    let (addr, server) = server::start_with(shutdown, &gate, shutdown.closing(), options).await;
    let mut socket = tokio::net::TcpStream::connect(addr).await.unwrap();
    // `CountRequest { to: 3 }`, framed, in base64.
    let body = "AAAAAAIIAw==";
    let request = format!(
        "POST /tower_drain.example.Echo/Count HTTP/1.1\r\nhost: localhost\r\n\
         content-type: application/grpc-web-text\r\naccept: application/grpc-web-text\r\n\
         x-grpc-web: 1\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    socket.write_all(request.as_bytes()).await.unwrap();
    let mut received = Vec::new();
    // `CountReply { n: 1 }`, framed, in base64.
    let first = b"AAAAAAIIAQ==";
    let read = support::raw::read_until(&mut socket, &mut received, first);
    assert!(bounded("the first reply", read).await, "{received:?}");
    gate.entered(1).await;
    let drain = shutdown.drain(NEVER).unwrap();

    bounded(
        "the end of the response",
        support::raw::read_to_close(&mut socket, &mut received),
    )
    .await;
    let (head, body) = support::raw::split_head(&received);
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: application/grpc-web-text"),
        "{head}"
    );
    let chunked = support::raw::decode_chunked(body);
    assert!(chunked.terminated, "the body was cut: {received:?}");
    let frames = grpc_web_frames(&base64_decode(&chunked.data));
    assert_eq!(frames.len(), 2, "{frames:?}");
    assert_eq!(frames[0], (0, vec![0x08, 0x01]), "the first reply");
    let (flag, trailers) = &frames[1];
    assert_eq!(*flag, 0x80, "a trailer frame");
    let trailers = String::from_utf8_lossy(trailers).to_ascii_lowercase();
    assert!(trailers.contains("grpc-status:14\r\n"), "{trailers}");
    assert!(trailers.contains("grpc-message:"), "{trailers}");
    assert_drained(&finish(drain, server).await, 1);
    gate.release(1);
}

/// A call arriving while draining on a connection still open (a server that has not sent
/// its GOAWAY), seen on the wire: the layer's answer is trailers-only, one HEADERS frame that
/// ends the stream, with status 200, the gRPC content type, `grpc-status: 14` and a
/// `grpc-message`, and no body, though the call's request stream was still open.
#[tokio::test]
async fn refusal_while_draining_is_trailers_only_on_the_wire() {
    let shutdown = Shutdown::new();
    let gate = Gate::new();
    let (addr, server) = server::start_with_signal(shutdown, &gate, std::future::pending()).await;
    let socket = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (sender, connection) = bounded("the handshake", h2::client::handshake(socket))
        .await
        .unwrap();
    tokio::spawn(connection);
    bounded("the drain", shutdown.drain(NEVER).unwrap()).await;

    let mut sender = bounded("the connection", sender.ready()).await.unwrap();
    let request = http::Request::post(format!("http://{addr}/tower_drain.example.Echo/Sum"))
        .header("content-type", "application/grpc+proto")
        .header("te", "trailers")
        .body(())
        .unwrap();
    // The request stream stays open: a client-streaming call still uploading.
    let (response, mut upload) = sender.send_request(request, false).unwrap();
    upload
        .send_data(
            bytes::Bytes::from_static(b"\x00\x00\x00\x00\x02\x08\x01"),
            false,
        )
        .unwrap();
    let response = bounded("the refusal", response).await.unwrap();
    assert_eq!(response.status(), http::StatusCode::OK);
    let headers = response.headers();
    assert_eq!(headers["content-type"], "application/grpc");
    assert_eq!(headers["grpc-status"], "14");
    assert!(!headers["grpc-message"].is_empty(), "{headers:?}");
    let mut body = response.into_body();
    assert!(
        body.is_end_stream(),
        "the HEADERS frame did not end the stream"
    );
    assert!(bounded("the body", body.data()).await.is_none());
    let trailers = bounded("the trailers", body.trailers()).await.unwrap();
    assert!(trailers.is_none(), "{trailers:?}");
    assert_eq!(shutdown.rejected(), 1);
    server.abort();
}

/// A unary call whose handler is still running when the drain begins, on a server whose
/// layers finish every gRPC response on drain (a rule cannot tell a unary answer from a
/// stream: both are `application/grpc`): the answer, ready whole when its body is first
/// polled, is sent whole, and the call succeeds. Ended before its message, it would fail
/// (UNKNOWN) although its handler ran to the end, and a client retrying it would run it
/// twice.
#[tokio::test]
async fn unary_answer_ready_after_draining_began_is_sent_whole_under_a_finishing_rule() {
    let finishing = [
        server::Options {
            finish_streams: true,
            ..server::Options::default()
        },
        server::Options {
            grpc_as_sse: true,
            ..server::Options::default()
        },
    ];
    for options in finishing {
        let shutdown = Shutdown::new();
        let gate = Gate::new();
        let (addr, server) = server::start_with(shutdown, &gate, shutdown.closing(), options).await;
        let mut client = EchoClient::new(connect(addr).await);

        let call = tokio::spawn(async move { client.say("held").await });
        gate.entered(1).await;
        let drain = shutdown.drain(NEVER).unwrap();
        gate.release(1);

        let reply = bounded("the call", call).await.unwrap();
        assert_eq!(
            reply.expect("a call its handler answered failed").text,
            "held"
        );
        assert_drained(&finish(drain, server).await, 1);
    }
}

/// The same over gRPC-web, with the shutdown layers seeing gRPC-web (inside tonic-web's
/// layer: the answer and its own status go out, and no second status is added) or gRPC
/// (outside it).
#[tokio::test]
async fn grpc_web_unary_answer_ready_after_draining_began_is_sent_whole_under_a_finishing_rule() {
    use hyper_util::client::legacy::Client;
    use hyper_util::rt::TokioExecutor;
    use tonic_web::GrpcWebClientService;

    for place in [server::WebLayer::Inside, server::WebLayer::Outside] {
        let shutdown = Shutdown::new();
        let gate = Gate::new();
        let options = server::Options {
            web: Some(place),
            finish_streams: true,
            ..server::Options::default()
        };
        let (addr, server) = server::start_with(shutdown, &gate, shutdown.closing(), options).await;
        let http = Client::builder(TokioExecutor::new()).build_http();
        let origin = format!("http://{addr}").parse().unwrap();
        let mut client = EchoClient::with_origin(GrpcWebClientService::new(http), origin);

        let call = tokio::spawn(async move { client.say("held").await });
        gate.entered(1).await;
        let drain = shutdown.drain(NEVER).unwrap();
        gate.release(1);

        let reply = bounded("the call", call).await.unwrap();
        assert_eq!(
            reply.expect("a call its handler answered failed").text,
            "held"
        );
        assert_drained(&finish(drain, server).await, 1);
    }
}

/// A client-streaming call whose handler answers after the drain began, under the same
/// layers: its answer is sent whole.
#[tokio::test]
async fn client_streaming_answer_ready_after_draining_began_is_sent_whole_under_a_finishing_rule() {
    let shutdown = Shutdown::new();
    let gate = Gate::new();
    let options = server::Options {
        finish_streams: true,
        ..server::Options::default()
    };
    let (addr, server) = server::start_with(shutdown, &gate, shutdown.closing(), options).await;
    let mut client = EchoClient::new(connect(addr).await);

    let (numbers, sent) = client_stream();
    numbers.send(CountReply { n: 1 }).unwrap();
    let call = tokio::spawn(async move { client.sum(sent).await });
    gate.entered(1).await;
    let drain = shutdown.drain(NEVER).unwrap();
    gate.release(1);
    numbers.send(CountReply { n: 2 }).unwrap();
    drop(numbers);

    let reply = bounded("the call", call).await.unwrap();
    assert_eq!(
        reply.expect("a call its handler answered failed"),
        CountRequest { to: 3 }
    );
    assert_drained(&finish(drain, server).await, 1);
}

/// A server stream that always has its next message ready, finished on drain: it goes on
/// while it has messages ready, and ends at the long-lived deadline, between two messages,
/// as a stream finished on drain does (UNKNOWN), not cut (INTERNAL), and the report does not
/// list it as cut.
#[tokio::test]
async fn grpc_stream_always_ready_ends_at_the_long_lived_deadline() {
    // Far more replies than the stream sends before its deadline.
    const REPLIES: u32 = u32::MAX;
    let shutdown = Shutdown::new();
    shutdown.set_long_lived_grace(Duration::from_millis(100));
    let tuning = Tuning {
        finish_grpc: true,
        ..Tuning::default()
    };
    let started = start(shutdown, tuning).await;
    let mut client = EchoClient::new(connect(started.addr).await);

    let mut replies = bounded("the call", client.count(REPLIES)).await.unwrap();
    let first = bounded("the first reply", replies.message()).await.unwrap();
    assert_eq!(first, Some(CountReply { n: 1 }));
    started.gate.entered(1).await;
    // Polled on a task of its own: the drain's future is what moves its deadlines.
    let drain = tokio::spawn(shutdown.drain(NEVER).unwrap());
    started.gate.release(1);

    let end = bounded("the end of the stream", async {
        let mut last = 1;
        // Bounded by the long-lived deadline, well within `REPLIES`.
        loop {
            match replies.message().await {
                Ok(Some(reply)) => {
                    assert_eq!(reply.n, last + 1, "a reply lost");
                    last = reply.n;
                }
                Ok(None) => panic!("a stream finished on drain ended cleanly"),
                Err(status) => return (status, last),
            }
        }
    })
    .await;
    let (status, last) = end;
    assert_eq!(status.code(), Code::Unknown, "{status:?}");
    assert!(last > 1, "no reply sent after the drain began");
    let report = finish(async { drain.await.unwrap() }, started.server).await;
    assert_drained(&report, 1);
    assert!(report.long_lived.is_empty(), "{report}");
}

/// With a zero grace, a gRPC stream finished on drain that is waiting for its handler ends
/// at once, as one past the long-lived deadline does: without a status (UNKNOWN), not cut.
#[tokio::test]
async fn grpc_stream_finished_on_drain_with_a_zero_grace_ends_at_once() {
    let shutdown = Shutdown::new();
    shutdown.set_long_lived_grace(Duration::ZERO);
    let tuning = Tuning {
        finish_grpc: true,
        ..Tuning::default()
    };
    let started = start(shutdown, tuning).await;
    let mut client = EchoClient::new(connect(started.addr).await);

    let mut replies = bounded("the call", client.count(3)).await.unwrap();
    let first = bounded("the first reply", replies.message()).await.unwrap();
    assert_eq!(first, Some(CountReply { n: 1 }));
    started.gate.entered(1).await;
    let drain = shutdown.drain(NEVER).unwrap();

    let end = bounded("the end of the stream", replies.message()).await;
    let status = end.expect_err("a stream finished on drain ended cleanly");
    assert_eq!(status.code(), Code::Unknown, "{status:?}");
    let report = finish(drain, started.server).await;
    assert_drained(&report, 1);
    assert!(report.long_lived.is_empty(), "{report}");
    started.gate.release(1);
}

/// A client that drops a server stream whose handler is idle (waiting for its next reply)
/// while draining: the stream is reset, hyper drops the idle body, and the count ends at
/// once, not at the drain's timeout.
#[tokio::test]
async fn idle_server_stream_dropped_by_its_client_while_draining_ends_the_count() {
    let shutdown = Shutdown::new();
    let started = start(shutdown, Tuning::default()).await;
    let mut client = EchoClient::new(connect(started.addr).await);

    let mut replies = bounded("the call", client.count(3)).await.unwrap();
    let first = bounded("the first reply", replies.message()).await.unwrap();
    assert_eq!(first, Some(CountReply { n: 1 }));
    started.gate.entered(1).await;
    let mut drain = std::pin::pin!(shutdown.drain(NEVER).unwrap());
    assert!(drain.as_mut().now_or_never().is_none(), "drained too early");

    // The handler stays at the gate: only the client's reset ends the call.
    drop(replies);
    assert_drained(&finish(drain, started.server).await, 1);
}

/// A gRPC-web-text call over HTTP/1 arriving while draining, seen on the wire: the layer's
/// answer is trailers-only in the call's own content type (a gRPC-web client refuses any
/// other), with `grpc-status: 14` and a `grpc-message` in the head, an empty body, and
/// `Connection: close`.
#[tokio::test]
async fn grpc_web_text_refusal_while_draining_is_trailers_only_on_the_wire() {
    use tokio::io::AsyncWriteExt;

    let shutdown = Shutdown::new();
    let gate = Gate::new();
    let options = server::Options {
        web: Some(server::WebLayer::Inside),
        ..server::Options::default()
    };
    let (addr, server) = server::start_with(shutdown, &gate, std::future::pending(), options).await;
    let mut socket = tokio::net::TcpStream::connect(addr).await.unwrap();
    bounded("the drain", shutdown.drain(NEVER).unwrap()).await;

    let body = "AAAAAAIIAw==";
    let request = format!(
        "POST /tower_drain.example.Echo/Count HTTP/1.1\r\nhost: localhost\r\n\
         content-type: application/grpc-web-text+proto\r\n\
         accept: application/grpc-web-text+proto\r\nx-grpc-web: 1\r\n\
         content-length: {}\r\n\r\n{body}",
        body.len()
    );
    socket.write_all(request.as_bytes()).await.unwrap();
    let mut received = Vec::new();
    bounded(
        "the refusal",
        support::raw::read_to_close(&mut socket, &mut received),
    )
    .await;
    let (head, body) = support::raw::split_head(&received);
    let head = head.to_ascii_lowercase();
    assert!(head.starts_with("http/1.1 200 ok"), "{head}");
    for line in [
        "content-type: application/grpc-web-text+proto",
        "grpc-status: 14",
        "grpc-message: server is shutting down",
        "content-length: 0",
        "connection: close",
    ] {
        assert!(
            head.lines().any(|header| header == line),
            "no {line}: {head}"
        );
    }
    assert!(body.is_empty(), "{body:?}");
    assert_eq!(shutdown.rejected(), 1);
    server.abort();
}

/// A unary handler that panics while the drain waits for it: tonic's server has no catch,
/// so the call's task unwinds, dropping the count with it; the client sees a failed call.
#[tokio::test]
async fn unary_handler_panicking_while_draining_fails_the_call_and_ends_the_count() {
    let shutdown = Shutdown::new();
    let started = start(shutdown, Tuning::default()).await;
    let mut client = EchoClient::new(connect(started.addr).await);

    let call = tokio::spawn(async move { client.say("held, then panic").await });
    started.gate.entered(1).await;
    let drain = shutdown.drain(NEVER).unwrap();
    started.gate.release(1);

    let status = bounded("the call", call)
        .await
        .unwrap()
        .expect_err("a call whose handler panicked succeeded");
    assert_ne!(status.code(), Code::Ok, "{status:?}");
    let report = finish(drain, started.server).await;
    assert_eq!(report.outcome, DrainOutcome::Drained, "{report}");
    assert_eq!(shutdown.in_flight(), 0);
}
