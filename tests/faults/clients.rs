//! Real clients of the server under test: hyper's HTTP/1 client, and a raw socket that hangs
//! up at a chosen byte.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http::header::HOST;
use http::{HeaderMap, Request, StatusCode};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

use crate::support::bounded;
use crate::support::raw::write_get;

/// A real HTTP/1 client connection (hyper's).
pub(super) async fn connect(
    addr: SocketAddr,
) -> hyper::client::conn::http1::SendRequest<Empty<Bytes>> {
    let stream = bounded("connect", TcpStream::connect(addr)).await.unwrap();
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(connection);
    sender
}

pub(super) fn get(path: &str) -> Request<Empty<Bytes>> {
    Request::get(path)
        .header(HOST, "127.0.0.1")
        .body(Empty::new())
        .unwrap()
}

/// What a client saw of one response.
#[derive(Debug)]
pub(super) struct Seen {
    pub(super) status: StatusCode,
    pub(super) headers: HeaderMap,
    /// The whole body, or the error that cut it.
    pub(super) body: Result<Bytes, hyper::Error>,
}

/// Sends `GET path` on a fresh connection and reads the whole response.
pub(super) async fn fetch(addr: SocketAddr, path: &str) -> Result<Seen, hyper::Error> {
    let mut sender = connect(addr).await;
    send(&mut sender, path).await
}

pub(super) async fn send(
    sender: &mut hyper::client::conn::http1::SendRequest<Empty<Bytes>>,
    path: &str,
) -> Result<Seen, hyper::Error> {
    sender.ready().await?;
    let response = sender.send_request(get(path)).await?;
    let (parts, body) = response.into_parts();
    Ok(Seen {
        status: parts.status,
        headers: parts.headers,
        body: body.collect().await.map(|collected| collected.to_bytes()),
    })
}

/// True when the client can tell the response was not delivered whole: the connection
/// ended before the headers (hyper sends none when the body fails on its first poll), the
/// body was cut after them, or, when the handler had not answered by the deadline, the
/// middleware answered in its place with a 503 saying the request was aborted.
pub(super) fn looks_cut(outcome: &Result<Seen, hyper::Error>) -> bool {
    match outcome {
        Err(error) => error.is_incomplete_message(),
        Ok(seen) => {
            seen.body.is_err()
                || (seen.status == 503
                    && seen
                        .body
                        .as_ref()
                        .is_ok_and(|body| body.starts_with(b"request aborted")))
        }
    }
}

/// Sends `GET path` over a raw socket, reads `cut_after` bytes of the response (or to its
/// end), then hangs up, with a reset when `reset` (linger 0) and a plain close otherwise.
pub(super) async fn hang_up_after(
    addr: SocketAddr,
    path: &str,
    cut_after: usize,
    reset: bool,
) -> usize {
    let mut stream = bounded("connect", TcpStream::connect(addr)).await.unwrap();
    write_get(&mut stream, path).await;
    let mut buffer = vec![0; 64 * 1024];
    let mut read = 0;
    while read < cut_after {
        let want = buffer.len().min(cut_after - read);
        match bounded("reading the response", stream.read(&mut buffer[..want])).await {
            Ok(0) | Err(_) => break,
            Ok(n) => read += n,
        }
    }
    if reset {
        // Linger zero makes the close a reset; it never blocks (it is a nonzero linger
        // that would), which is what the deprecation warns about.
        #[allow(deprecated)]
        stream.set_linger(Some(Duration::ZERO)).unwrap();
    }
    drop(stream);
    read
}
