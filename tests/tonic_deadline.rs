//! tonic calls still running when the drain is cut short: each ends with a status a client
//! tells apart from success, and the server still returns.

#[path = "../examples/tonic/echo.rs"]
mod echo;
#[path = "tonic/server.rs"]
mod server;
mod support;

use futures_util::stream;
use tonic::Code;
use tower_drain::{DrainOutcome, Shutdown};

use echo::{CountReply, EchoClient};
use server::{client_stream, connect, finish, held_call_cut_short, start};
use support::gate::Gate;
use support::{bounded, BOUND};

#[tokio::test]
async fn unary_call_whose_handler_answers_after_the_deadline_gets_unavailable() {
    let shutdown = Shutdown::new();
    let gate = Gate::new();
    let (addr, server) = start(shutdown, &gate).await;
    let report = held_call_cut_short(shutdown, &gate, addr, server).await;
    assert_eq!(report.outcome, DrainOutcome::TimedOut);
    assert_eq!(report.still_running, 1);
}

#[tokio::test]
async fn client_streaming_call_whose_handler_answers_after_the_deadline_gets_unavailable() {
    let shutdown = Shutdown::new();
    let gate = Gate::new();
    let (addr, server) = start(shutdown, &gate).await;
    let mut client = EchoClient::new(connect(addr).await);

    let (numbers, sent) = client_stream();
    numbers.send(CountReply { n: 1 }).unwrap();
    let call = tokio::spawn(async move { client.sum(sent).await });
    gate.entered(1).await;
    let drain = shutdown.drain(BOUND).unwrap();
    assert!(shutdown.force(), "the held call was cut short");
    gate.release(1);
    numbers.send(CountReply { n: 2 }).unwrap();
    drop(numbers);

    let status = bounded("the call", call)
        .await
        .unwrap()
        .expect_err("a call cut at the deadline succeeded");
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert_eq!(finish(drain, server).await.outcome, DrainOutcome::TimedOut);
}

/// hyper resets a stream whose body fails with RST_STREAM(INTERNAL_ERROR), and tonic's client
/// reports that as INTERNAL: an error, never the stream's clean end.
#[tokio::test]
async fn server_stream_cut_at_the_deadline_fails_with_internal() {
    let shutdown = Shutdown::new();
    let gate = Gate::new();
    let (addr, server) = start(shutdown, &gate).await;
    let mut client = EchoClient::new(connect(addr).await);

    let mut replies = bounded("the call", client.count(3)).await.unwrap();
    let first = bounded("the first reply", replies.message()).await.unwrap();
    assert_eq!(first, Some(CountReply { n: 1 }));
    gate.entered(1).await;
    let drain = shutdown.drain(BOUND).unwrap();
    assert!(shutdown.force(), "the stream was cut short");
    gate.release(1);

    let status = bounded("the rest of the stream", replies.message())
        .await
        .expect_err("a stream cut at the deadline went on");
    assert_eq!(status.code(), Code::Internal, "{status:?}");
    assert_eq!(finish(drain, server).await.outcome, DrainOutcome::TimedOut);
}

/// The same for a bidirectional stream cut between two replies.
#[tokio::test]
async fn bidirectional_stream_cut_at_the_deadline_fails_with_internal() {
    let shutdown = Shutdown::new();
    let gate = Gate::new();
    let (addr, server) = start(shutdown, &gate).await;
    let mut client = EchoClient::new(connect(addr).await);

    let messages =
        stream::iter(["one", "held", "three"].map(|text| echo::SayRequest { text: text.into() }));
    let mut replies = bounded("the call", client.chat(messages)).await.unwrap();
    let first = bounded("the first reply", replies.message()).await.unwrap();
    assert_eq!(first.unwrap().text, "one");
    gate.entered(1).await;
    let drain = shutdown.drain(BOUND).unwrap();
    assert!(shutdown.force(), "the stream was cut short");
    gate.release(1);

    let status = bounded("the rest of the stream", replies.message())
        .await
        .expect_err("a stream cut at the deadline went on");
    assert_eq!(status.code(), Code::Internal, "{status:?}");
    assert_eq!(finish(drain, server).await.outcome, DrainOutcome::TimedOut);
}

/// On `tower_drain::server::serve`, which gives every HTTP/2 stream one last poll at the
/// deadline before it closes the connections still open: a unary call whose handler is
/// stalled gets the deadline's 503 with `grpc-status: 14`, which tonic reads as UNAVAILABLE
/// (retryable elsewhere), and a server stream stalled between two messages is cut, which
/// tonic reads as INTERNAL, as on tonic's own server. The report counts both cut.
#[tokio::test]
async fn calls_stalled_at_the_deadline_on_serve_fail_unavailable_and_cut() {
    use tower::Layer;

    let shutdown = Shutdown::new();
    let gate = Gate::new();
    let routes =
        tonic::service::Routes::new(echo::EchoServer::new(server::Held { gate: gate.clone() }));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let service = shutdown.layer().layer(routes);
    let served = tokio::spawn(tower_drain::server::serve(listener, service, shutdown));
    let channel = connect(addr).await;
    let mut unary = EchoClient::new(channel.clone());
    let call = tokio::spawn(async move { unary.say("held").await });
    let mut streaming = EchoClient::new(channel);
    let mut replies = bounded("the stream", streaming.count(3)).await.unwrap();
    let first = bounded("the first reply", replies.message()).await.unwrap();
    assert_eq!(first, Some(CountReply { n: 1 }));
    gate.entered(2).await;

    let drain = shutdown
        .drain(std::time::Duration::from_millis(20))
        .unwrap();
    bounded("serve to return at the deadline", served)
        .await
        .unwrap();
    let status = bounded("the call", call)
        .await
        .unwrap()
        .expect_err("a call cut at the deadline succeeded");
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    let status = bounded("the rest of the stream", replies.message())
        .await
        .expect_err("a stream cut at the deadline went on");
    assert_eq!(status.code(), Code::Internal, "{status:?}");
    let report = bounded("the drain", drain).await;
    assert_eq!(report.outcome, DrainOutcome::TimedOut, "{report}");
    assert_eq!(report.still_running, 2, "{report}");
    gate.release(2);
}
