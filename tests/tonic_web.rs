//! gRPC-web over HTTP/1 (tonic-web on the server, tonic-web's client over hyper-util's), with
//! tonic-web's layer outside the shutdown layer and inside it: calls in flight complete, later
//! calls and calls cut at the deadline get UNAVAILABLE.

#[path = "../examples/tonic/echo.rs"]
mod echo;
#[path = "tonic/server.rs"]
mod server;
mod support;

use std::net::SocketAddr;

use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tonic::Code;
use tonic_web::{GrpcWebCall, GrpcWebClientService};
use tower_drain::{DrainOutcome, Shutdown};

use echo::{CountReply, EchoClient};
use server::{finish, start_with, Options, Served, WebLayer};
use support::gate::Gate;
use support::{bounded, BOUND};

type WebClient =
    EchoClient<GrpcWebClientService<Client<HttpConnector, GrpcWebCall<tonic::body::Body>>>>;

fn web_client(addr: SocketAddr) -> WebClient {
    let http = Client::builder(TokioExecutor::new()).build_http();
    let origin = format!("http://{addr}").parse().unwrap();
    EchoClient::with_origin(GrpcWebClientService::new(http), origin)
}

const PLACES: [WebLayer; 2] = [WebLayer::Outside, WebLayer::Inside];

async fn start_web(
    shutdown: Shutdown,
    gate: &Gate,
    place: WebLayer,
    signal: impl std::future::Future<Output = ()> + Send + 'static,
) -> (SocketAddr, Served) {
    let options = Options {
        web: Some(place),
        ..Options::default()
    };
    start_with(shutdown, gate, signal, options).await
}

#[tokio::test]
async fn grpc_web_unary_call_in_flight_when_draining_begins_completes() {
    for place in PLACES {
        let shutdown = Shutdown::new();
        let gate = Gate::new();
        let (addr, server) = start_web(shutdown, &gate, place, shutdown.closing()).await;
        let mut client = web_client(addr);

        let call = tokio::spawn(async move { client.say("held").await });
        gate.entered(1).await;
        let drain = shutdown.drain(BOUND).unwrap();
        gate.release(1);

        let reply = bounded("the call", call).await.unwrap();
        assert_eq!(reply.expect("the call failed").text, "held");
        let report = finish(drain, server).await;
        assert_eq!(report.outcome, DrainOutcome::Drained, "{report}");
        assert_eq!(report.completed, 1);
    }
}

#[tokio::test]
async fn grpc_web_calls_while_draining_get_unavailable() {
    for place in PLACES {
        let shutdown = Shutdown::new();
        let gate = Gate::new();
        // A server that ignores `closing()` keeps listening, so each call reaches the layer.
        let (addr, server) = start_web(shutdown, &gate, place, std::future::pending()).await;
        let mut client = web_client(addr);
        assert_eq!(
            bounded("a call", client.say("hi")).await.unwrap().text,
            "hi"
        );

        bounded("the drain", shutdown.drain(BOUND).unwrap()).await;
        let status = bounded("a call while draining", client.say("late"))
            .await
            .expect_err("a call was admitted while draining");
        assert_eq!(status.code(), Code::Unavailable, "{status:?}");
        assert_eq!(status.message(), "server is shutting down");
        let streaming = bounded("a streaming call while draining", client.count(3)).await;
        let status = streaming.expect_err("a call was admitted while draining");
        assert_eq!(status.code(), Code::Unavailable, "{status:?}");
        assert_eq!(shutdown.rejected(), 2);
        server.abort();
    }
}

#[tokio::test]
async fn grpc_web_calls_cut_at_the_deadline_fail() {
    for place in PLACES {
        let shutdown = Shutdown::new();
        let gate = Gate::new();
        let (addr, server) = start_web(shutdown, &gate, place, shutdown.closing()).await;
        let mut unary = web_client(addr);
        let mut streaming = web_client(addr);

        let call = tokio::spawn(async move { unary.say("held").await });
        let mut replies = bounded("the stream", streaming.count(3)).await.unwrap();
        let first = bounded("the first reply", replies.message()).await.unwrap();
        assert_eq!(first, Some(CountReply { n: 1 }));
        gate.entered(2).await;
        let drain = shutdown.drain(BOUND).unwrap();
        assert!(shutdown.force(), "the held calls were cut short");
        gate.release(2);

        let status = bounded("the call", call)
            .await
            .unwrap()
            .expect_err("a call cut at the deadline succeeded");
        assert_eq!(status.code(), Code::Unavailable, "{status:?}");
        // HTTP/1 has no stream reset: hyper closes the connection mid-body, and tonic-web's
        // client reports the broken body as INTERNAL.
        let cut = bounded("the rest of the stream", replies.message()).await;
        let status = cut.expect_err("a stream cut at the deadline went on");
        assert_eq!(status.code(), Code::Internal, "{status:?}");
        let report = finish(drain, server).await;
        assert_eq!(report.still_running, 2, "{report}");
    }
}
