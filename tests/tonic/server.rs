//! The tonic server the gRPC tests run: the echo service with handlers the test holds at a
//! gate, and gRPC health, served the way `examples/tonic.rs` serves them.
#![allow(dead_code)] // Each test crate uses part of it.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;

use futures_util::{stream, Stream, StreamExt};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tonic::codegen::BoxStream;
use tonic::transport::server::TcpIncoming;
use tonic::transport::{Channel, Server};
use tonic::{Code, Status, Streaming};
use tonic_health::pb::health_check_response::ServingStatus as Reported;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::{HealthCheckRequest, HealthCheckResponse};
use tonic_health::ServingStatus;
use tonic_web::GrpcWebLayer;
use tower_drain::{
    DrainReport, InFlightLayer, LongLivedKind, LongLivedLayer, OnDrain, RejectWhenDrainingLayer,
    Shutdown,
};

use crate::echo::{CountReply, CountRequest, Echo, EchoClient, EchoServer, SayReply, SayRequest};
use crate::support::gate::Gate;
use crate::support::{bounded, BOUND};

/// `Say` of a text starting "held" waits at the gate; `Count` sends its first reply, then
/// waits at the gate before the rest; `Sum` waits at the gate after its first message; `Chat`
/// echoes each message as it comes, and waits at the gate before echoing one starting "held".
pub struct Held {
    pub gate: Gate,
}

impl Echo for Held {
    async fn say(&self, request: SayRequest) -> Result<SayReply, Status> {
        if request.text.starts_with("held") {
            self.gate.pass().await;
        }
        Ok(SayReply { text: request.text })
    }

    fn count(&self, request: CountRequest) -> BoxStream<CountReply> {
        let gate = self.gate.clone();
        Box::pin(stream::unfold(1, move |n| {
            let gate = gate.clone();
            async move {
                if n > request.to {
                    return None;
                }
                if n == 2 {
                    gate.pass().await;
                }
                Some((Ok(CountReply { n }), n + 1))
            }
        }))
    }

    async fn sum(&self, mut requests: Streaming<CountReply>) -> Result<CountRequest, Status> {
        let mut to = 0;
        let mut first = true;
        // Bounded by the client, which ends its stream.
        while let Some(number) = requests.message().await? {
            to += number.n;
            if std::mem::take(&mut first) {
                self.gate.pass().await;
            }
        }
        Ok(CountRequest { to })
    }

    fn chat(&self, requests: Streaming<SayRequest>) -> BoxStream<SayReply> {
        let gate = self.gate.clone();
        Box::pin(requests.then(move |message| {
            let gate = gate.clone();
            async move {
                let message = message?;
                if message.text.starts_with("held") {
                    gate.pass().await;
                }
                Ok(SayReply { text: message.text })
            }
        }))
    }
}

/// Health checks pass the layer: never counted, never rejected.
pub const HEALTH: &[&str] = &[
    "/grpc.health.v1.Health/Check",
    "/grpc.health.v1.Health/Watch",
];

pub type Served = JoinHandle<Result<(), tonic::transport::Error>>;

/// The end of every scenario: the drain's report, once the server has also returned cleanly.
pub async fn finish(drain: impl Future<Output = DrainReport>, server: Served) -> DrainReport {
    let report = bounded("the drain", drain).await;
    bounded("the server to return", server)
        .await
        .unwrap()
        .unwrap();
    report
}

/// A unary call held in its handler when a `force` cuts the drain short: the layer answers
/// it UNAVAILABLE when the handler does answer. Returns the drain's report.
pub async fn held_call_cut_short(
    shutdown: Shutdown,
    gate: &Gate,
    addr: SocketAddr,
    server: Served,
) -> DrainReport {
    let mut client = EchoClient::new(connect(addr).await);
    let call = tokio::spawn(async move { client.say("held").await });
    gate.entered(1).await;
    let drain = shutdown.drain(BOUND).unwrap();
    assert!(shutdown.force(), "the held call was cut short");
    // The handler answers now; the layer answers for it instead.
    gate.release(1);

    let status = bounded("the call", call)
        .await
        .unwrap()
        .expect_err("a call cut at the deadline succeeded");
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    finish(drain, server).await
}

/// Serves the echo and health services the way `examples/tonic.rs` does.
pub async fn start(shutdown: Shutdown, gate: &Gate) -> (SocketAddr, Served) {
    start_with_signal(shutdown, gate, shutdown.closing()).await
}

pub async fn start_with_signal(
    shutdown: Shutdown,
    gate: &Gate,
    signal: impl Future<Output = ()> + Send + 'static,
) -> (SocketAddr, Served) {
    start_with(shutdown, gate, signal, Options::default()).await
}

/// What a test server does beyond what `examples/tonic.rs` does.
#[derive(Default, Clone, Copy)]
pub struct Options {
    /// The echo service accepts and sends gzip.
    pub gzip: bool,
    /// gRPC-web over HTTP/1 too, through tonic-web: outside the shutdown layer (which then
    /// sees plain gRPC calls) or inside it (which then sees gRPC-web ones).
    pub web: Option<WebLayer>,
    /// `InFlightLayer` outside `RejectWhenDrainingLayer` instead of `Shutdown::layer` (not
    /// with `web`).
    pub split: bool,
    /// Every gRPC response tracked long-lived by a `LongLivedLayer` inside `Shutdown::layer`,
    /// and finished when the drain begins (`OnDrain::Finish`), as an application would have
    /// its watch streams end so that their clients reconnect elsewhere (not with `split`).
    pub finish_streams: bool,
    /// `Shutdown::layer` itself tracks every gRPC response, by a rule that names it an event
    /// stream: the combined layer's way to have a stream finished when the drain begins.
    pub grpc_as_sse: bool,
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub enum WebLayer {
    Outside,
    Inside,
}

/// As [`start`], with [`Options`].
pub async fn start_with(
    shutdown: Shutdown,
    gate: &Gate,
    signal: impl Future<Output = ()> + Send + 'static,
    options: Options,
) -> (SocketAddr, Served) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();

    let (health, health_service) = tonic_health::server::health_reporter();
    health.set_serving::<EchoServer<Held>>().await;
    tokio::spawn(async move {
        shutdown.shutting_down().await;
        health
            .set_service_status("", ServingStatus::NotServing)
            .await;
        health.set_not_serving::<EchoServer<Held>>().await;
    });

    let mut echo = EchoServer::new(Held { gate: gate.clone() });
    if options.gzip {
        echo = echo.gzip();
    }
    let mut drain = shutdown.layer().bypass(HEALTH);
    if options.grpc_as_sse {
        drain = drain.long_lived_when(grpc_as_sse);
    }
    let incoming = TcpIncoming::from(listener);
    // tonic's layers wrap in the order given: the first is the outermost.
    let server: Pin<Box<dyn Future<Output = _> + Send>> = match options.web {
        None if options.split => Box::pin(
            Server::builder()
                .layer(InFlightLayer::new(shutdown).bypass(HEALTH))
                .layer(RejectWhenDrainingLayer::new(shutdown).bypass(HEALTH))
                .add_service(health_service)
                .add_service(echo)
                .serve_with_incoming_shutdown(incoming, signal),
        ),
        None if options.finish_streams => Box::pin(
            Server::builder()
                .layer(drain)
                .layer(finish_grpc(shutdown))
                .add_service(health_service)
                .add_service(echo)
                .serve_with_incoming_shutdown(incoming, signal),
        ),
        None => Box::pin(
            Server::builder()
                .layer(drain)
                .add_service(health_service)
                .add_service(echo)
                .serve_with_incoming_shutdown(incoming, signal),
        ),
        Some(WebLayer::Outside) if options.finish_streams => Box::pin(
            Server::builder()
                .accept_http1(true)
                .layer(GrpcWebLayer::new())
                .layer(drain)
                .layer(finish_grpc(shutdown))
                .add_service(health_service)
                .add_service(echo)
                .serve_with_incoming_shutdown(incoming, signal),
        ),
        Some(WebLayer::Inside) if options.finish_streams => Box::pin(
            Server::builder()
                .accept_http1(true)
                .layer(drain)
                .layer(finish_grpc(shutdown))
                .layer(GrpcWebLayer::new())
                .add_service(health_service)
                .add_service(echo)
                .serve_with_incoming_shutdown(incoming, signal),
        ),
        Some(WebLayer::Outside) => Box::pin(
            Server::builder()
                .accept_http1(true)
                .layer(GrpcWebLayer::new())
                .layer(drain)
                .add_service(health_service)
                .add_service(echo)
                .serve_with_incoming_shutdown(incoming, signal),
        ),
        Some(WebLayer::Inside) => Box::pin(
            Server::builder()
                .accept_http1(true)
                .layer(drain)
                .layer(GrpcWebLayer::new())
                .add_service(health_service)
                .add_service(echo)
                .serve_with_incoming_shutdown(incoming, signal),
        ),
    };
    (addr, tokio::spawn(server))
}

/// Tracks every gRPC response long-lived, finished when the drain begins.
fn finish_grpc(shutdown: Shutdown) -> LongLivedLayer {
    LongLivedLayer::new(shutdown)
        .when(grpc_response)
        .on_drain(OnDrain::Finish)
}

/// A rule for `LongLivedLayer::when`: every gRPC response is a long-lived stream.
fn grpc_response(_: http::StatusCode, headers: &http::HeaderMap) -> Option<LongLivedKind> {
    let content_type = headers.get(http::header::CONTENT_TYPE)?.as_bytes();
    content_type
        .starts_with(b"application/grpc")
        .then_some(LongLivedKind::Stream)
}

/// A rule for `ShutdownLayer::long_lived_when`: every gRPC response is finished on drain.
fn grpc_as_sse(status: http::StatusCode, headers: &http::HeaderMap) -> Option<LongLivedKind> {
    grpc_response(status, headers).map(|_| LongLivedKind::Sse)
}

pub async fn connect(addr: SocketAddr) -> Channel {
    let endpoint = Channel::from_shared(format!("http://{addr}")).unwrap();
    bounded("the connection", endpoint.connect()).await.unwrap()
}

/// A client stream of what the test sends on the returned sender; it ends when the sender is
/// dropped.
pub fn client_stream<T: Send + 'static>() -> (
    mpsc::UnboundedSender<T>,
    impl Stream<Item = T> + Send + 'static,
) {
    let (tx, rx) = mpsc::unbounded_channel();
    let stream = stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    });
    (tx, stream)
}

/// The overall health, as a health request names it.
pub fn overall() -> HealthCheckRequest {
    HealthCheckRequest {
        service: String::new(),
    }
}

/// Opens a watch on the overall health, sees SERVING, begins the lame duck and sees
/// NOT_SERVING; returns the watch, still open.
pub async fn watch_through_lame_duck<T>(
    shutdown: Shutdown,
    health: &mut HealthClient<T>,
) -> Streaming<HealthCheckResponse>
where
    T: tonic::client::GrpcService<tonic::body::Body>,
    T::Error: Into<tonic::codegen::StdError>,
    T::ResponseBody: http_body::Body<Data = bytes::Bytes> + Send + 'static,
    <T::ResponseBody as http_body::Body>::Error: Into<tonic::codegen::StdError> + Send,
{
    let mut watch = bounded("a health watch", health.watch(overall()))
        .await
        .unwrap()
        .into_inner();
    let status = bounded("the first status", watch.message()).await.unwrap();
    assert_eq!(status.unwrap().status(), Reported::Serving);
    assert!(shutdown.begin_lame_duck());
    let status = bounded("the next status", watch.message()).await.unwrap();
    assert_eq!(status.unwrap().status(), Reported::NotServing);
    watch
}
