//! The clients: HTTP/1 as raw bytes on a socket, HTTP/2 through the `h2` crate, so that a
//! test chooses exactly how a request ends on the wire: read whole, connection closed, or
//! `RST_STREAM`.

use std::net::SocketAddr;

use bytes::Bytes;
use h2::client::{ResponseFuture, SendRequest};
use h2::{Reason, RecvStream, SendStream};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::JoinHandle;

use crate::servers::Proto;
use crate::support::bounded;
use crate::support::raw::{decode_chunked, split_head};

/// The most reads any response of these tests takes to arrive whole.
const MAX_READS: usize = 10_000;

/// One request on a connection of its own, at some point of its life.
pub enum Exchange {
    Http1 {
        stream: TcpStream,
        head_request: bool,
        received: Vec<u8>,
    },
    Http2 {
        /// Kept so the connection stays open for as long as the exchange.
        _sender: SendRequest<Bytes>,
        connection: JoinHandle<()>,
        response: Option<ResponseFuture>,
        body: Option<RecvStream>,
        stream: SendStream<Bytes>,
    },
}

/// Sends `method path` on a fresh connection.
pub async fn send(addr: SocketAddr, proto: Proto, method: &str, path: &str) -> Exchange {
    match proto {
        Proto::Http1 => {
            let head = format!("{method} {path} HTTP/1.1\r\nhost: 127.0.0.1\r\n\r\n");
            send_http1(addr, &head, method == "HEAD").await
        }
        Proto::Http2 => send_http2(addr, method, path, None).await,
    }
}

/// Sends `GET path` over HTTP/2 on a connection whose streams start with no flow-control
/// window: the server may send the response head, but no byte of its body.
pub async fn send_without_window(addr: SocketAddr, path: &str) -> Exchange {
    send_http2(addr, "GET", path, Some(0)).await
}

/// Sends a raw HTTP/1 request head.
pub async fn send_http1(addr: SocketAddr, head: &str, head_request: bool) -> Exchange {
    let mut stream = bounded("connect", TcpStream::connect(addr)).await.unwrap();
    stream.write_all(head.as_bytes()).await.unwrap();
    Exchange::Http1 {
        stream,
        head_request,
        received: Vec::new(),
    }
}

async fn send_http2(addr: SocketAddr, method: &str, path: &str, window: Option<u32>) -> Exchange {
    let socket = bounded("connect", TcpStream::connect(addr)).await.unwrap();
    let mut builder = h2::client::Builder::new();
    if let Some(window) = window {
        builder.initial_window_size(window);
    }
    let (sender, connection) = bounded("the HTTP/2 handshake", builder.handshake(socket))
        .await
        .unwrap();
    let connection = tokio::spawn(async move {
        // Ends with an error when the test closes it: a case under test.
        let _ = connection.await;
    });
    let mut sender = bounded("the HTTP/2 connection", sender.ready())
        .await
        .unwrap();
    let request = http::Request::builder()
        .method(method)
        .uri(format!("http://{addr}{path}"))
        .body(())
        .unwrap();
    let (response, stream) = sender.send_request(request, true).unwrap();
    Exchange::Http2 {
        _sender: sender,
        connection,
        response: Some(response),
        body: None,
        stream,
    }
}

impl Exchange {
    /// Waits for the response head and returns its status, or what ended the exchange
    /// before one came.
    pub async fn status(&mut self) -> Result<u16, String> {
        match self {
            Exchange::Http1 {
                stream, received, ..
            } => {
                for _ in 0..MAX_READS {
                    if let Some(end) = head_end(received) {
                        let status = std::str::from_utf8(&received[9..12]).unwrap();
                        assert!(end > 12, "a status line");
                        return Ok(status.parse().unwrap());
                    }
                    if read_more(stream, received).await == 0 {
                        return Err("connection closed before the response head".into());
                    }
                }
                panic!("no response head in {MAX_READS} reads");
            }
            Exchange::Http2 { response, body, .. } => {
                let future = response.take().expect("status read once");
                let response = bounded("the response head", future)
                    .await
                    .map_err(|error| error.to_string())?;
                let status = response.status().as_u16();
                *body = Some(response.into_body());
                Ok(status)
            }
        }
    }

    /// After [`Exchange::status`]: waits until some of the body has arrived.
    pub async fn some_body(&mut self) {
        match self {
            Exchange::Http1 {
                stream, received, ..
            } => {
                let end = head_end(received).expect("the head was read");
                if received.len() == end {
                    assert_ne!(read_more(stream, received).await, 0, "a body follows");
                }
            }
            Exchange::Http2 { body, .. } => {
                let body = body.as_mut().expect("the head was read");
                let data = bounded("a body chunk", body.data())
                    .await
                    .expect("a body follows")
                    .unwrap();
                body.flow_control().release_capacity(data.len()).unwrap();
            }
        }
    }

    /// After [`Exchange::status`]: reads the rest of the body. `Err` if it did not end
    /// cleanly.
    pub async fn rest(&mut self) -> Result<Vec<u8>, String> {
        match self {
            Exchange::Http1 {
                stream,
                head_request,
                received,
            } => {
                let end = head_end(received).expect("the head was read");
                let (head, _) = split_head(received);
                let head = head.to_ascii_lowercase();
                let status = &head[9..12];
                if *head_request || status == "204" || status == "304" {
                    return Ok(received[end..].to_vec());
                }
                let length: Option<usize> = head
                    .lines()
                    .find_map(|line| line.strip_prefix("content-length:"))
                    .map(|value| value.trim().parse().unwrap());
                for _ in 0..MAX_READS {
                    let body = &received[end..];
                    match length {
                        Some(length) if body.len() >= length => return Ok(body.to_vec()),
                        None => {
                            let chunked = decode_chunked(body);
                            if chunked.terminated {
                                return Ok(chunked.data);
                            }
                        }
                        Some(_) => {}
                    }
                    if read_more(stream, received).await == 0 {
                        return Err("connection closed mid-body".into());
                    }
                }
                panic!("the body did not end in {MAX_READS} reads");
            }
            Exchange::Http2 { body, .. } => {
                let body = body.as_mut().expect("the head was read");
                let mut data = Vec::new();
                for _ in 0..MAX_READS {
                    match bounded("a body chunk", body.data()).await {
                        None => return Ok(data),
                        Some(Ok(chunk)) => {
                            body.flow_control().release_capacity(chunk.len()).unwrap();
                            data.extend_from_slice(&chunk);
                        }
                        Some(Err(error)) => return Err(error.to_string()),
                    }
                }
                panic!("the body did not end in {MAX_READS} reads");
            }
        }
    }

    /// Cancels the request with `RST_STREAM`, leaving the connection open (HTTP/2 only).
    pub fn reset(&mut self) {
        match self {
            Exchange::Http1 { .. } => panic!("HTTP/1 has no way to cancel but a close"),
            Exchange::Http2 { stream, .. } => stream.send_reset(Reason::CANCEL),
        }
    }

    /// Closes the connection.
    pub fn close(self) {
        match self {
            Exchange::Http1 { stream, .. } => drop(stream),
            // The connection's task owns the socket: ending it closes the socket.
            Exchange::Http2 { connection, .. } => connection.abort(),
        }
    }
}

fn head_end(received: &[u8]) -> Option<usize> {
    received
        .windows(4)
        .position(|window| window == b"\r\n\r\n")
        .map(|position| position + 4)
}

/// Reads once more from the server; returns how much came (0 at its end, or a reset).
async fn read_more(stream: &mut TcpStream, received: &mut Vec<u8>) -> usize {
    let mut chunk = [0u8; 16 * 1024];
    let read = bounded("bytes from the server", stream.read(&mut chunk))
        .await
        .unwrap_or(0);
    received.extend_from_slice(&chunk[..read]);
    read
}
