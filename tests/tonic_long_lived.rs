//! tonic streams tracked long-lived and finished when the drain begins
//! (`OnDrain::Finish`): each ends at once, never with the clean end of a stream the server
//! completed. Over gRPC-web the status is UNAVAILABLE, a frame of the body; over gRPC it
//! would be a trailers frame, which the layer does not build (it would cost every frame of
//! every response), and the client reads the end without one as UNKNOWN.

#[path = "../examples/tonic/echo.rs"]
mod echo;
#[path = "tonic/server.rs"]
mod server;
mod support;

use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tonic::{Code, Status};
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

/// Starts a server with `options`, opens a server-streaming call (over gRPC-web if
/// `options.web` is set), drains once its first reply is in, and returns the status the call
/// ended with: an error, never the clean end of a stream the server completed. The drain
/// completes with the call counted as completed.
async fn server_stream_end_on_drain(options: Options) -> Status {
    let shutdown = Shutdown::new();
    let gate = Gate::new();
    let (addr, server) = start_with(shutdown, &gate, shutdown.closing(), options).await;
    let call = async {
        match options.web {
            None => EchoClient::new(connect(addr).await).count(3).await,
            Some(_) => {
                let http = Client::builder(TokioExecutor::new()).build_http();
                let origin = format!("http://{addr}").parse().unwrap();
                let web = GrpcWebClientService::new(http);
                EchoClient::with_origin(web, origin).count(3).await
            }
        }
    };
    let mut replies = bounded("the call", call).await.unwrap();
    let first = bounded("the first reply", replies.message()).await.unwrap();
    assert_eq!(first, Some(CountReply { n: 1 }));
    gate.entered(1).await;
    let drain = shutdown.drain(BOUND).unwrap();

    let end = bounded("the end of the stream", replies.message()).await;
    let status = end.expect_err("a stream finished on drain ended as if complete");
    gate.release(1);
    let report = finish(drain, server).await;
    assert_eq!(report.outcome, DrainOutcome::Drained, "{report}");
    assert_eq!(report.completed, 1);
    status
}

/// A client that took the end of the stream for its server's doing would not reconnect: it
/// must see an error, at once.
#[tokio::test]
async fn server_stream_finished_on_drain_ends_at_once_with_an_error() {
    let status = server_stream_end_on_drain(FINISH_STREAMS).await;
    assert_eq!(status.code(), Code::Unknown, "no status: {status:?}");
}

#[tokio::test]
async fn bidirectional_stream_finished_on_drain_ends_at_once_with_an_error() {
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
    assert_eq!(status.code(), Code::Unknown, "no status: {status:?}");
    drop(messages);
    let report = finish(drain, server).await;
    assert_eq!(report.outcome, DrainOutcome::Drained, "{report}");
    assert_eq!(report.completed, 1);
}

/// gRPC-web carries its status in the body, a trailer frame, which a stream finished on drain
/// gets where the shutdown layers see gRPC-web (inside tonic-web's layer): UNAVAILABLE. Where
/// they see gRPC (outside it) the stream ends as gRPC's does, without a status.
#[tokio::test]
async fn grpc_web_server_stream_finished_on_drain_ends_at_once_with_an_error() {
    for place in [WebLayer::Outside, WebLayer::Inside] {
        let options = Options {
            web: Some(place),
            ..FINISH_STREAMS
        };
        let status = server_stream_end_on_drain(options).await;
        let expected = match place {
            WebLayer::Inside => Code::Unavailable,
            WebLayer::Outside => Code::Unknown,
        };
        assert_eq!(status.code(), expected, "{status:?}");
    }
}

/// The same stream finished by `Shutdown::layer` through a rule that names gRPC responses
/// event streams: it ends at once, with no SSE final event written into it (which the client
/// would read as a broken message, INTERNAL) and without waiting for an event's end that
/// gRPC's frames never give.
#[tokio::test]
async fn server_stream_a_rule_calls_sse_ends_at_once_with_no_final_event() {
    let options = Options {
        finish_streams: false,
        grpc_as_sse: true,
        ..FINISH_STREAMS
    };
    let status = server_stream_end_on_drain(options).await;
    assert_eq!(status.code(), Code::Unknown, "no status: {status:?}");
}
