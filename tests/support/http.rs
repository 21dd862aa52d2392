//! Real axum servers on a fresh 127.0.0.1 port, and real hyper clients.

use std::net::SocketAddr;

use axum::Router;
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
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
