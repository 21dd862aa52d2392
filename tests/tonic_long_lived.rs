//! tonic streams tracked long-lived and finished when the drain begins
//! (`OnDrain::Finish`): each ends with a status the client reads as UNAVAILABLE, never with
//! the clean end of a stream the server completed.

#[path = "../examples/tonic/echo.rs"]
mod echo;
#[path = "tonic/server.rs"]
mod server;
mod support;

use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tonic::Code;
use tonic_web::GrpcWebClientService;
use tower_drain::{DrainOutcome, Shutdown};

use echo::{CountReply, EchoClient, SayRequest};
use server::{client_stream, connect, finish, start_with, Options, WebLayer};
use support::gate::Gate;
use support::{bounded, BOUND};

const FINISH_STREAMS: Options = Options {
    gzip: false,
    web: None,
    split: false,
    finish_streams: true,
    grpc_as_sse: false,
};

/// A client that took the end of the stream for its server's doing would not reconnect: it
/// must see UNAVAILABLE, which says "retry elsewhere".
#[tokio::test]
async fn server_stream_finished_on_drain_ends_with_unavailable() {
    let shutdown = Shutdown::new();
    let gate = Gate::new();
    let (addr, server) = start_with(shutdown, &gate, shutdown.closing(), FINISH_STREAMS).await;
    let mut client = EchoClient::new(connect(addr).await);

    let mut replies = bounded("the call", client.count(3)).await.unwrap();
    let first = bounded("the first reply", replies.message()).await.unwrap();
    assert_eq!(first, Some(CountReply { n: 1 }));
    gate.entered(1).await;
    let drain = shutdown.drain(BOUND).unwrap();

    let end = bounded("the end of the stream", replies.message()).await;
    let status = end.expect_err("a stream finished on drain ended as if complete");
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    gate.release(1);
    let report = finish(drain, server).await;
    assert_eq!(report.outcome, DrainOutcome::Drained, "{report}");
    assert_eq!(report.completed, 1);
}

#[tokio::test]
async fn bidirectional_stream_finished_on_drain_ends_with_unavailable() {
    let shutdown = Shutdown::new();
    let gate = Gate::new();
    let (addr, server) = start_with(shutdown, &gate, shutdown.closing(), FINISH_STREAMS).await;
    let mut client = EchoClient::new(connect(addr).await);

    let (messages, sent) = client_stream();
    messages.send(SayRequest { text: "one".into() }).unwrap();
    let mut replies = bounded("the call", client.chat(sent)).await.unwrap();
    let first = bounded("the first reply", replies.message()).await.unwrap();
    assert_eq!(first.unwrap().text, "one");
    let drain = shutdown.drain(BOUND).unwrap();

    let end = bounded("the end of the stream", replies.message()).await;
    let status = end.expect_err("a stream finished on drain ended as if complete");
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    drop(messages);
    let report = finish(drain, server).await;
    assert_eq!(report.outcome, DrainOutcome::Drained, "{report}");
    assert_eq!(report.completed, 1);
}

/// gRPC-web carries its status in the body: a trailer frame, which the stream finished on
/// drain gets too, whether the shutdown layers see gRPC-web (inside tonic-web's layer) or
/// gRPC (outside it).
#[tokio::test]
async fn grpc_web_server_stream_finished_on_drain_ends_with_unavailable() {
    for place in [WebLayer::Outside, WebLayer::Inside] {
        let shutdown = Shutdown::new();
        let gate = Gate::new();
        let options = Options {
            web: Some(place),
            ..FINISH_STREAMS
        };
        let (addr, server) = start_with(shutdown, &gate, shutdown.closing(), options).await;
        let http = Client::builder(TokioExecutor::new()).build_http();
        let origin = format!("http://{addr}").parse().unwrap();
        let mut client = EchoClient::with_origin(GrpcWebClientService::new(http), origin);

        let mut replies = bounded("the call", client.count(3)).await.unwrap();
        let first = bounded("the first reply", replies.message()).await.unwrap();
        assert_eq!(first, Some(CountReply { n: 1 }));
        gate.entered(1).await;
        let drain = shutdown.drain(BOUND).unwrap();

        let end = bounded("the end of the stream", replies.message()).await;
        let status = end.expect_err("a stream finished on drain ended as if complete");
        assert_eq!(status.code(), Code::Unavailable, "{status:?}");
        gate.release(1);
        let report = finish(drain, server).await;
        assert_eq!(report.outcome, DrainOutcome::Drained, "{report}");
        assert_eq!(report.completed, 1);
    }
}

/// The same stream finished by `Shutdown::layer` through a rule that names gRPC responses
/// event streams: it ends with UNAVAILABLE, with no SSE final event written into it.
#[tokio::test]
async fn server_stream_a_rule_calls_sse_ends_with_unavailable() {
    let shutdown = Shutdown::new();
    let gate = Gate::new();
    let options = Options {
        finish_streams: false,
        grpc_as_sse: true,
        ..FINISH_STREAMS
    };
    let (addr, server) = start_with(shutdown, &gate, shutdown.closing(), options).await;
    let mut client = EchoClient::new(connect(addr).await);

    let mut replies = bounded("the call", client.count(3)).await.unwrap();
    let first = bounded("the first reply", replies.message()).await.unwrap();
    assert_eq!(first, Some(CountReply { n: 1 }));
    gate.entered(1).await;
    let drain = shutdown.drain(BOUND).unwrap();

    let end = bounded("the end of the stream", replies.message()).await;
    let status = end.expect_err("a stream finished on drain ended as if complete");
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    gate.release(1);
    let report = finish(drain, server).await;
    assert_eq!(report.outcome, DrainOutcome::Drained, "{report}");
    assert_eq!(report.completed, 1);
}
