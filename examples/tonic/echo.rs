//! `tower_drain.example.Echo`: a small gRPC service with a method of each kind (unary, server
//! streaming, client streaming, bidirectional), written the way `tonic-build` would generate
//! it, so no `protoc` is needed.
//!
//! ```proto
//! service Echo {
//!   rpc Say(SayRequest) returns (SayReply);
//!   rpc Count(CountRequest) returns (stream CountReply);
//!   rpc Sum(stream CountReply) returns (CountRequest);
//!   rpc Chat(stream SayRequest) returns (stream SayReply);
//! }
//! ```
//!
//! Shared by `examples/tonic.rs` and `tests/tonic_grpc.rs`.
#![allow(dead_code)] // Each user of this module needs only part of it.

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures_util::Stream;
use http::uri::PathAndQuery;
use http_body::Body;
use tonic::codec::CompressionEncoding;
use tonic::codegen::{BoxFuture, BoxStream, Bytes, StdError};
use tonic::server::{
    ClientStreamingService, Grpc, NamedService, ServerStreamingService, StreamingService,
    UnaryService,
};
use tonic::transport::Channel;
use tonic::{Request, Response, Status, Streaming};
use tonic_prost::ProstCodec;

const SAY: &str = "/tower_drain.example.Echo/Say";
const COUNT: &str = "/tower_drain.example.Echo/Count";
const SUM: &str = "/tower_drain.example.Echo/Sum";
const CHAT: &str = "/tower_drain.example.Echo/Chat";

/// Larger than tonic's default limit of 4 MiB, so that the tests can send messages of a few
/// MiB in both directions.
const MAX_MESSAGE: usize = 16 * 1024 * 1024;

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
    /// Adds up the `n` of every message: the reply's `to` is the total.
    fn sum(
        &self,
        requests: Streaming<CountReply>,
    ) -> impl Future<Output = Result<CountRequest, Status>> + Send;
    fn chat(&self, requests: Streaming<SayRequest>) -> BoxStream<SayReply>;
}

/// The service to add to a tonic `Server`: routes each call to its method of `T`.
pub struct EchoServer<T> {
    inner: Arc<T>,
    gzip: bool,
}

impl<T> EchoServer<T> {
    pub fn new(inner: T) -> Self {
        EchoServer {
            inner: Arc::new(inner),
            gzip: false,
        }
    }

    /// Accepts gzip-compressed calls and compresses replies for clients that accept it.
    pub fn gzip(mut self) -> Self {
        self.gzip = true;
        self
    }
}

impl<T> Clone for EchoServer<T> {
    fn clone(&self) -> Self {
        EchoServer {
            inner: Arc::clone(&self.inner),
            gzip: self.gzip,
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
        let gzip = self.gzip;
        match request.uri().path() {
            SAY => Box::pin(async move {
                let mut grpc = server_grpc(gzip);
                Ok(grpc.unary(Say(inner), request).await)
            }),
            COUNT => Box::pin(async move {
                let mut grpc = server_grpc(gzip);
                Ok(grpc.server_streaming(Count(inner), request).await)
            }),
            SUM => Box::pin(async move {
                let mut grpc = server_grpc(gzip);
                Ok(grpc.client_streaming(Sum(inner), request).await)
            }),
            CHAT => Box::pin(async move {
                let mut grpc = server_grpc(gzip);
                Ok(grpc.streaming(Chat(inner), request).await)
            }),
            _ => Box::pin(async { Ok(Status::unimplemented("no such method").into_http()) }),
        }
    }
}

fn server_grpc<E, D>(gzip: bool) -> Grpc<ProstCodec<E, D>>
where
    E: prost::Message + Send + 'static,
    D: prost::Message + Default + Send + 'static,
{
    let grpc = Grpc::new(ProstCodec::default())
        .max_decoding_message_size(MAX_MESSAGE)
        .max_encoding_message_size(MAX_MESSAGE);
    if gzip {
        grpc.accept_compressed(CompressionEncoding::Gzip)
            .send_compressed(CompressionEncoding::Gzip)
    } else {
        grpc
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

struct Sum<T>(Arc<T>);

impl<T: Echo> ClientStreamingService<CountReply> for Sum<T> {
    type Response = CountRequest;
    type Future = BoxFuture<Response<CountRequest>, Status>;

    fn call(&mut self, request: Request<Streaming<CountReply>>) -> Self::Future {
        let inner = Arc::clone(&self.0);
        Box::pin(async move { inner.sum(request.into_inner()).await.map(Response::new) })
    }
}

struct Chat<T>(Arc<T>);

impl<T: Echo> StreamingService<SayRequest> for Chat<T> {
    type Response = SayReply;
    type ResponseStream = BoxStream<SayReply>;
    type Future = BoxFuture<Response<BoxStream<SayReply>>, Status>;

    fn call(&mut self, request: Request<Streaming<SayRequest>>) -> Self::Future {
        let stream = self.0.chat(request.into_inner());
        Box::pin(async move { Ok(Response::new(stream)) })
    }
}

// === client ===

/// A client of the service over a tonic `Channel`, or any other gRPC transport (a gRPC-web
/// client, for one).
#[derive(Clone)]
pub struct EchoClient<T = Channel> {
    grpc: tonic::client::Grpc<T>,
}

impl<T> EchoClient<T>
where
    T: tonic::client::GrpcService<tonic::body::Body>,
    T::Error: Into<StdError>,
    T::ResponseBody: Body<Data = Bytes> + Send + 'static,
    <T::ResponseBody as Body>::Error: Into<StdError> + Send,
{
    pub fn new(transport: T) -> Self {
        Self::configured(tonic::client::Grpc::new(transport))
    }

    /// A client whose calls go to `origin` (`http://host:port`): for a transport that needs
    /// absolute URIs, as a plain HTTP client does.
    pub fn with_origin(transport: T, origin: http::Uri) -> Self {
        Self::configured(tonic::client::Grpc::with_origin(transport, origin))
    }

    fn configured(grpc: tonic::client::Grpc<T>) -> Self {
        let grpc = grpc
            .max_decoding_message_size(MAX_MESSAGE)
            .max_encoding_message_size(MAX_MESSAGE);
        EchoClient { grpc }
    }

    /// Compresses calls with gzip and accepts gzip-compressed replies.
    pub fn gzip(mut self) -> Self {
        self.grpc = self
            .grpc
            .send_compressed(CompressionEncoding::Gzip)
            .accept_compressed(CompressionEncoding::Gzip);
        self
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

    /// Sends every `n` of `numbers`; the reply's `to` is their total.
    pub async fn sum(
        &mut self,
        numbers: impl Stream<Item = CountReply> + Send + 'static,
    ) -> Result<CountRequest, Status> {
        self.ready().await?;
        let path = PathAndQuery::from_static(SUM);
        let codec = ProstCodec::default();
        let request = Request::new(numbers);
        let response = self.grpc.client_streaming(request, path, codec).await?;
        Ok(response.into_inner())
    }

    pub async fn chat(
        &mut self,
        messages: impl Stream<Item = SayRequest> + Send + 'static,
    ) -> Result<Streaming<SayReply>, Status> {
        self.ready().await?;
        let path = PathAndQuery::from_static(CHAT);
        let codec = ProstCodec::default();
        let response = self
            .grpc
            .streaming(Request::new(messages), path, codec)
            .await?;
        Ok(response.into_inner())
    }

    async fn ready(&mut self) -> Result<(), Status> {
        self.grpc
            .ready()
            .await
            .map_err(|error| Status::unavailable(format!("channel not ready: {}", error.into())))
    }
}
