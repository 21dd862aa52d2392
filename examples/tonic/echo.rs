//! `tower_drain.example.Echo`: a small gRPC service with one unary and one server-streaming
//! method, written the way `tonic-build` would generate it, so no `protoc` is needed.
//!
//! ```proto
//! service Echo {
//!   rpc Say(SayRequest) returns (SayReply);
//!   rpc Count(CountRequest) returns (stream CountReply);
//! }
//! ```
//!
//! Shared by `examples/tonic.rs` and `tests/tonic_grpc.rs`.
#![allow(dead_code)] // Each user of this module needs only part of it.

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::uri::PathAndQuery;
use http_body::Body;
use tonic::codegen::{BoxFuture, BoxStream};
use tonic::server::{Grpc, NamedService, ServerStreamingService, UnaryService};
use tonic::transport::Channel;
use tonic::{Request, Response, Status, Streaming};
use tonic_prost::ProstCodec;

const SAY: &str = "/tower_drain.example.Echo/Say";
const COUNT: &str = "/tower_drain.example.Echo/Count";

// === messages ===

#[derive(Clone, PartialEq, prost::Message)]
pub struct SayRequest {
    #[prost(string, tag = "1")]
    pub text: String,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct SayReply {
    #[prost(string, tag = "1")]
    pub text: String,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct CountRequest {
    #[prost(uint32, tag = "1")]
    pub to: u32,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct CountReply {
    #[prost(uint32, tag = "1")]
    pub n: u32,
}

// === server ===

/// What an implementation of the service provides.
pub trait Echo: Send + Sync + 'static {
    fn say(&self, request: SayRequest) -> impl Future<Output = Result<SayReply, Status>> + Send;
    fn count(&self, request: CountRequest) -> BoxStream<CountReply>;
}

/// The service to add to a tonic `Server`: routes each call to its method of `T`.
pub struct EchoServer<T> {
    inner: Arc<T>,
}

impl<T> EchoServer<T> {
    pub fn new(inner: T) -> Self {
        EchoServer {
            inner: Arc::new(inner),
        }
    }
}

impl<T> Clone for EchoServer<T> {
    fn clone(&self) -> Self {
        EchoServer {
            inner: Arc::clone(&self.inner),
        }
    }
}

impl<T> NamedService for EchoServer<T> {
    const NAME: &'static str = "tower_drain.example.Echo";
}

impl<T, B> tower_service::Service<http::Request<B>> for EchoServer<T>
where
    T: Echo,
    B: Body + Send + 'static,
    B::Error: Into<tonic::codegen::StdError> + Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = BoxFuture<Self::Response, Infallible>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let inner = Arc::clone(&self.inner);
        match request.uri().path() {
            SAY => Box::pin(async move {
                let mut grpc = Grpc::new(ProstCodec::default());
                Ok(grpc.unary(Say(inner), request).await)
            }),
            COUNT => Box::pin(async move {
                let mut grpc = Grpc::new(ProstCodec::default());
                Ok(grpc.server_streaming(Count(inner), request).await)
            }),
            _ => Box::pin(async { Ok(Status::unimplemented("no such method").into_http()) }),
        }
    }
}

struct Say<T>(Arc<T>);

impl<T: Echo> UnaryService<SayRequest> for Say<T> {
    type Response = SayReply;
    type Future = BoxFuture<Response<SayReply>, Status>;

    fn call(&mut self, request: Request<SayRequest>) -> Self::Future {
        let inner = Arc::clone(&self.0);
        Box::pin(async move { inner.say(request.into_inner()).await.map(Response::new) })
    }
}

struct Count<T>(Arc<T>);

impl<T: Echo> ServerStreamingService<CountRequest> for Count<T> {
    type Response = CountReply;
    type ResponseStream = BoxStream<CountReply>;
    type Future = BoxFuture<Response<BoxStream<CountReply>>, Status>;

    fn call(&mut self, request: Request<CountRequest>) -> Self::Future {
        let stream = self.0.count(request.into_inner());
        Box::pin(async move { Ok(Response::new(stream)) })
    }
}

// === client ===

/// A client of the service over a tonic `Channel`.
#[derive(Clone)]
pub struct EchoClient {
    grpc: tonic::client::Grpc<Channel>,
}

impl EchoClient {
    pub fn new(channel: Channel) -> Self {
        EchoClient {
            grpc: tonic::client::Grpc::new(channel),
        }
    }

    pub async fn say(&mut self, text: &str) -> Result<SayReply, Status> {
        self.ready().await?;
        let request = Request::new(SayRequest { text: text.into() });
        let path = PathAndQuery::from_static(SAY);
        let response = self
            .grpc
            .unary(request, path, ProstCodec::default())
            .await?;
        Ok(response.into_inner())
    }

    pub async fn count(&mut self, to: u32) -> Result<Streaming<CountReply>, Status> {
        self.ready().await?;
        let request = Request::new(CountRequest { to });
        let path = PathAndQuery::from_static(COUNT);
        let codec = ProstCodec::default();
        let response = self.grpc.server_streaming(request, path, codec).await?;
        Ok(response.into_inner())
    }

    async fn ready(&mut self) -> Result<(), Status> {
        self.grpc
            .ready()
            .await
            .map_err(|error| Status::unavailable(format!("channel not ready: {error}")))
    }
}
