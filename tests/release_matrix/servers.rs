//! The servers the matrix runs on, each with the graceful shutdown it is documented with,
//! driven by `shutdown.closing()`.

use std::convert::Infallible;
use std::fmt;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::{pin, Pin};
use std::task::{ready, Context, Poll};

use axum::body::Body;
use bytes::Bytes;
use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tonic::server::NamedService;
use tonic::transport::server::TcpIncoming;
use tower::make::Shared;
use tower::util::BoxCloneSyncService;
use tower::{Service, ServiceExt};
use tower_drain::Shutdown;

use crate::BoxError;

/// What every server serves: the layers under test around the app, boxed so that any stack
/// fits every server.
pub type Endpoint = BoxCloneSyncService<Request<Body>, Response<Body>, Infallible>;

/// Boxes a stack into an [`Endpoint`]. A service error (a timeout, a load shed) becomes a
/// `500`, as an application's error handling would make it; by then the layers under test
/// have seen the error.
pub fn endpoint<S, B>(service: S) -> Endpoint
where
    S: Service<Request<Body>, Response = Response<B>> + Clone + Send + Sync + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    BoxCloneSyncService::new(Recover(service))
}

/// Answers a service error with a `500`.
#[derive(Clone)]
struct Recover<S>(S);

impl<S, B> Service<Request<Body>> for Recover<S>
where
    S: Service<Request<Body>, Response = Response<B>>,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response<Body>, Infallible>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        // None of the stacks fails to become ready: shedders answer from `call`.
        match ready!(self.0.poll_ready(cx)) {
            Ok(()) => Poll::Ready(Ok(())),
            Err(error) => panic!("not ready: {}", error.into()),
        }
    }

    fn call(&mut self, request: Request<Body>) -> Self::Future {
        let future = self.0.call(request);
        Box::pin(async move {
            Ok(match future.await {
                Ok(response) => response.map(Body::new),
                Err(error) => {
                    let mut response = Response::new(Body::from(error.into().to_string()));
                    *response.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
                    response
                }
            })
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Server {
    /// `axum::serve` with `with_graceful_shutdown`.
    Axum,
    /// `tower_drain::server::serve`.
    Crate,
    /// hyper-util's automatic connection builder, each connection watched by hyper-util's
    /// `GracefulShutdown`.
    Hyper,
    /// tonic's `Server`, with the stack added as a named service.
    Tonic,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Proto {
    Http1,
    /// With prior knowledge, as gRPC clients speak it.
    Http2,
}

/// Every server with every protocol it speaks (tonic's server speaks HTTP/2 only).
pub const EVERY: [On; 7] = [
    On(Server::Axum, Proto::Http1),
    On(Server::Axum, Proto::Http2),
    On(Server::Crate, Proto::Http1),
    On(Server::Crate, Proto::Http2),
    On(Server::Hyper, Proto::Http1),
    On(Server::Hyper, Proto::Http2),
    On(Server::Tonic, Proto::Http2),
];

/// A server and the protocol its client speaks.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct On(pub Server, pub Proto);

impl fmt::Display for On {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?} over {:?}", self.0, self.1)
    }
}

pub struct Running {
    pub addr: SocketAddr,
    /// Ends when the server has returned.
    pub task: JoinHandle<()>,
}

/// Serves `endpoint` on `server` on a fresh port, shutting down gracefully when `shutdown`
/// closes admission.
pub async fn start(server: Server, shutdown: Shutdown, endpoint: Endpoint) -> Running {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = match server {
        Server::Axum => tokio::spawn(async move {
            axum::serve(listener, Shared::new(endpoint))
                .with_graceful_shutdown(shutdown.closing())
                .await
                .unwrap();
        }),
        Server::Crate => tokio::spawn(tower_drain::server::serve(
            listener,
            endpoint.map_request(to_axum::<Incoming>),
            shutdown,
        )),
        Server::Hyper => tokio::spawn(serve_hyper(listener, endpoint, shutdown)),
        Server::Tonic => tokio::spawn(async move {
            tonic::transport::Server::builder()
                .add_service(Named(endpoint))
                .serve_with_incoming_shutdown(TcpIncoming::from(listener), shutdown.closing())
                .await
                .unwrap();
        }),
    };
    Running { addr, task }
}

fn to_axum<B>(request: Request<B>) -> Request<Body>
where
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    request.map(Body::new)
}

/// hyper-util's own accept loop and graceful shutdown, as its documentation shows them.
async fn serve_hyper(listener: TcpListener, endpoint: Endpoint, shutdown: Shutdown) {
    let builder = auto::Builder::new(TokioExecutor::new());
    let graceful = GracefulShutdown::new();
    let mut closing = pin!(shutdown.closing());
    loop {
        let (stream, _) = tokio::select! {
            () = &mut closing => break,
            accepted = listener.accept() => accepted.unwrap(),
        };
        let service = TowerToHyperService::new(endpoint.clone().map_request(to_axum::<Incoming>));
        let connection = builder
            .serve_connection_with_upgrades(TokioIo::new(stream), service)
            .into_owned();
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            // A client that goes away ends its connection with an error: a case under test.
            let _ = connection.await;
        });
    }
    drop(listener);
    graceful.shutdown().await;
}

/// The stack as a tonic service named `release`, so tonic routes `/release/*` to it.
#[derive(Clone)]
struct Named(Endpoint);

impl NamedService for Named {
    const NAME: &'static str = "release";
}

impl Service<Request<tonic::body::Body>> for Named {
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = <Endpoint as Service<Request<Body>>>::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, request: Request<tonic::body::Body>) -> Self::Future {
        self.0.call(request.map(Body::new))
    }
}
