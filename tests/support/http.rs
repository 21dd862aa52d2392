//! Real axum servers on a fresh 127.0.0.1 port, and real hyper clients.

use std::error::Error as StdError;
use std::net::SocketAddr;

use axum::Router;
use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Empty};
use hyper::body::Incoming;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tower::Service;
use tower_drain::Shutdown;

use super::bounded;

/// The clients these tests use: pooled, with empty request bodies.
pub type HttpClient = Client<HttpConnector, Empty<Bytes>>;

/// Serves `app` (HTTP/1 and HTTP/2 prior knowledge) with no graceful shutdown, so the server
/// keeps answering while draining and the middleware's own answers can be seen.
pub async fn serve(app: Router) -> (SocketAddr, JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (addr, server)
}

/// Serves `service` on plain hyper (HTTP/1 and HTTP/2 prior knowledge), a connection per
/// task, with no graceful shutdown: a request on a connection still open while draining
/// reaches the layers, as one does that races the server's close, and the layers' own
/// answers are seen as hyper sends them, without axum's router.
pub async fn serve_on_hyper<S, B>(service: S) -> SocketAddr
where
    S: Service<Request<Incoming>, Response = Response<B>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<Box<dyn StdError + Send + Sync>>,
    B: http_body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn StdError + Send + Sync>>,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            let service = TowerToHyperService::new(service.clone());
            tokio::spawn(async move {
                let _ = auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    addr
}

/// True when `error` says the server never processed the request because of its GOAWAY:
/// either h2's own error (GOAWAY, REFUSED_STREAM), or hyper's: once h2 reports the GOAWAY,
/// hyper stops taking requests on the connection and cancels new ones unsent.
pub fn is_refused_by_goaway(error: &hyper::Error) -> bool {
    let mut source: Option<&(dyn StdError + 'static)> = Some(error);
    while let Some(error) = source {
        if let Some(h2) = error.downcast_ref::<h2::Error>() {
            return h2.is_go_away() || h2.reason() == Some(h2::Reason::REFUSED_STREAM);
        }
        source = error.source();
    }
    error.is_canceled()
}

/// A server started by [`serve_until_closing`].
pub struct Server {
    pub addr: SocketAddr,
    pub task: JoinHandle<()>,
}

/// Serves `app` until the drain begins: axum's own graceful shutdown, driven by
/// `shutdown.closing()`.
pub async fn serve_until_closing(app: Router, shutdown: Shutdown) -> Server {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(shutdown.closing())
            .await
            .unwrap();
    });
    Server { addr, task }
}

/// A pooled HTTP/1 client.
pub fn http1_client() -> HttpClient {
    Client::builder(TokioExecutor::new()).build_http()
}

/// An HTTP/2 (prior knowledge) client.
pub fn http2_client() -> HttpClient {
    Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build_http()
}

/// GET `path` and return the status, headers and whole body.
pub async fn get(
    client: &HttpClient,
    addr: SocketAddr,
    path: &str,
) -> (http::StatusCode, http::HeaderMap, Bytes) {
    let uri: http::Uri = format!("http://{addr}{path}").parse().unwrap();
    let response = bounded("response", client.get(uri)).await.unwrap();
    let (parts, body) = response.into_parts();
    let body = bounded("body", body.collect()).await.unwrap().to_bytes();
    (parts.status, parts.headers, body)
}
