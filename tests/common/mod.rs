//! Real servers and clients on 127.0.0.1 for the tests.
#![allow(dead_code)] // each test file uses a different part of this module

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// The bound on every wait in the tests: generous, it only turns a hang into a failure.
pub const BOUND: Duration = Duration::from_secs(20);

/// Awaits `future`, failing the test if it takes longer than [`BOUND`].
pub async fn bounded<F: Future>(what: &str, future: F) -> F::Output {
    tokio::time::timeout(BOUND, future)
        .await
        .unwrap_or_else(|_| panic!("{what}: no result within {BOUND:?}"))
}

/// Serves `app` on a fresh 127.0.0.1 port (HTTP/1 and HTTP/2 prior knowledge).
pub async fn serve(app: axum::Router) -> (SocketAddr, JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (addr, server)
}

/// A pooled HTTP/1 client.
pub fn http1_client() -> Client<HttpConnector, Empty<Bytes>> {
    Client::builder(TokioExecutor::new()).build_http()
}

/// An HTTP/2 (prior knowledge) client.
pub fn http2_client() -> Client<HttpConnector, Empty<Bytes>> {
    Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build_http()
}

/// GET `path` and return the status, headers and whole body.
pub async fn get(
    client: &Client<HttpConnector, Empty<Bytes>>,
    addr: SocketAddr,
    path: &str,
) -> (http::StatusCode, http::HeaderMap, Bytes) {
    let uri: http::Uri = format!("http://{addr}{path}").parse().unwrap();
    let response = bounded("response", client.get(uri)).await.unwrap();
    let (parts, body) = response.into_parts();
    let body = bounded("body", body.collect()).await.unwrap().to_bytes();
    (parts.status, parts.headers, body)
}

/// Sends a raw HTTP/1.1 GET and reads until the server closes or `limit` bytes arrived.
pub async fn raw_get(addr: SocketAddr, path: &str, limit: usize) -> Vec<u8> {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut received = Vec::new();
    let mut buffer = [0u8; 4096];
    while received.len() < limit {
        match bounded("raw read", stream.read(&mut buffer)).await {
            Ok(0) | Err(_) => break,
            Ok(n) => received.extend_from_slice(&buffer[..n]),
        }
    }
    received
}
