//! Shared by the long-lived tests: a real axum server on 127.0.0.1 and a raw HTTP/1 client
//! that sees the bytes on the wire (chunk framing included).

#![allow(dead_code)] // each test file uses a different part

use std::net::SocketAddr;

use axum::Router;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tower_drain::Shutdown;

/// The bound on every wait: generous, it only turns a hang into a failure.
pub const BOUND: std::time::Duration = std::time::Duration::from_secs(20);

/// The default final event, as it appears in a parsed event list (without the blank line).
pub const FINAL_EVENT: &str = "event: shutdown\ndata: draining\nretry: 1000";

pub struct Server {
    pub addr: SocketAddr,
    pub task: JoinHandle<()>,
}

/// Serves `app` on a fresh port until the drain begins (axum's own graceful shutdown, driven
/// by `closing()`).
pub async fn serve(app: Router, shutdown: Shutdown) -> Server {
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

/// Opens a connection and sends `GET path` as an event-stream client would.
pub async fn get(addr: SocketAddr, path: &str) -> TcpStream {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: test\r\nAccept: text/event-stream\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    stream
}

/// Reads into `buf` until it contains `needle`. Returns false at end of stream.
pub async fn read_until(stream: &mut TcpStream, buf: &mut Vec<u8>, needle: &[u8]) -> bool {
    let mut chunk = [0u8; 4096];
    while !contains(buf, needle) {
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return false,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
    true
}

/// Reads until the peer closes the connection (or resets it).
pub async fn read_to_close(stream: &mut TcpStream, buf: &mut Vec<u8>) {
    let mut chunk = [0u8; 16 * 1024];
    loop {
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

pub fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack
        .windows(needle.len())
        .any(|window| window == needle)
}

/// Splits a raw HTTP/1 response into its head and body bytes.
pub fn split_head(raw: &[u8]) -> (String, &[u8]) {
    let end = raw
        .windows(4)
        .position(|window| window == b"\r\n\r\n")
        .expect("a complete response head");
    (
        String::from_utf8_lossy(&raw[..end]).into_owned(),
        &raw[end + 4..],
    )
}

/// A chunked body, decoded.
pub struct Chunked {
    pub data: Vec<u8>,
    /// True when the body ended with the last-chunk `0\r\n\r\n`: a clean end.
    pub terminated: bool,
    pub chunks: usize,
}

/// Decodes HTTP/1 chunked framing as far as the bytes go.
pub fn decode_chunked(mut body: &[u8]) -> Chunked {
    let mut decoded = Chunked {
        data: Vec::new(),
        terminated: false,
        chunks: 0,
    };
    loop {
        let Some(line_end) = body.windows(2).position(|window| window == b"\r\n") else {
            return decoded;
        };
        let size_text = std::str::from_utf8(&body[..line_end]).unwrap();
        let size = usize::from_str_radix(size_text.split(';').next().unwrap().trim(), 16)
            .expect("a chunk size");
        body = &body[line_end + 2..];
        if size == 0 {
            decoded.terminated = body == b"\r\n";
            return decoded;
        }
        if body.len() < size + 2 {
            // Cut inside a chunk.
            decoded
                .data
                .extend_from_slice(&body[..size.min(body.len())]);
            return decoded;
        }
        decoded.data.extend_from_slice(&body[..size]);
        decoded.chunks += 1;
        body = &body[size + 2..];
    }
}

/// Splits an event stream into its complete events (each ended by a blank line) and the
/// bytes after the last complete one.
pub fn parse_events(data: &[u8]) -> (Vec<String>, Vec<u8>) {
    let text = String::from_utf8(data.to_vec()).expect("an event stream is UTF-8");
    let mut events: Vec<String> = text.split("\n\n").map(str::to_owned).collect();
    let rest = events.pop().unwrap_or_default();
    (events, rest.into_bytes())
}

/// The open-files soft limit of this process, from `/proc/self/limits` (Linux); `None` where
/// it cannot be read.
pub fn open_files_limit() -> Option<u64> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits
        .lines()
        .find(|line| line.starts_with("Max open files"))?;
    line.split_whitespace().nth(3)?.parse().ok()
}

/// How many SSE connections one process can hold open, server and client side both, out of
/// `wanted`; says so when the limit forces fewer.
pub fn connections_allowed(wanted: usize) -> usize {
    // Two descriptors per connection (client and server ends) and room for the rest.
    let allowed = open_files_limit().map_or(wanted, |limit| {
        usize::try_from(limit.saturating_sub(200) / 2).unwrap_or(wanted)
    });
    if allowed < wanted {
        eprintln!("open-files limit allows {allowed} connections, not {wanted}: using {allowed}");
    }
    allowed.min(wanted)
}

/// An app with `/events`: one `data: ready` event, then idle until the drain.
pub fn idle_sse_app(shutdown: Shutdown) -> Router {
    use axum::response::sse::{Event, Sse};
    use futures_util::stream::{self, StreamExt};
    Router::new()
        .route(
            "/events",
            axum::routing::get(|| async {
                let ready = stream::once(async {
                    Ok::<_, std::convert::Infallible>(Event::default().data("ready"))
                });
                Sse::new(ready.chain(stream::pending()))
            }),
        )
        .layer(shutdown.layer())
}

/// Opens `count` SSE clients on `/events`; resolves once every one has seen its first event,
/// returning tasks that read each stream to its end.
pub async fn open_idle_clients(addr: SocketAddr, count: usize) -> Vec<JoinHandle<Vec<u8>>> {
    let (ready_tx, mut ready_rx) = tokio::sync::mpsc::channel(count.max(1));
    let clients: Vec<_> = (0..count)
        .map(|_| {
            let ready_tx = ready_tx.clone();
            tokio::spawn(async move {
                let mut stream = get(addr, "/events").await;
                let mut raw = Vec::new();
                assert!(read_until(&mut stream, &mut raw, b"data: ready\n\n").await);
                ready_tx.send(()).await.unwrap();
                read_to_close(&mut stream, &mut raw).await;
                raw
            })
        })
        .collect();
    for _ in 0..count {
        ready_rx.recv().await.unwrap();
    }
    clients
}

/// One raw HTTP/1 response being read, from a request made by [`open_until`].
pub struct Reading {
    client: TcpStream,
    raw: Vec<u8>,
}

/// Sends `GET path` and reads until `marker` has arrived, so the response is known to be live
/// (streaming, and tracked) before the test goes on.
pub async fn open_until(addr: SocketAddr, path: &str, marker: &[u8]) -> Reading {
    let mut client = get(addr, path).await;
    let mut raw = Vec::new();
    let arrived = tokio::time::timeout(BOUND, read_until(&mut client, &mut raw, marker))
        .await
        .expect("the response's first bytes within the bound");
    assert!(
        arrived,
        "the stream ended before {:?}",
        String::from_utf8_lossy(marker)
    );
    Reading { client, raw }
}

impl Reading {
    /// Reads until the server closes the connection; returns every byte of the response.
    pub async fn finish_raw(mut self) -> Vec<u8> {
        tokio::time::timeout(BOUND, read_to_close(&mut self.client, &mut self.raw))
            .await
            .expect("the server closes the connection within the bound");
        self.raw
    }

    /// Reads until the server closes the connection and decodes the chunked body.
    pub async fn finish(self) -> Chunked {
        decode_chunked(split_head(&self.finish_raw().await).1)
    }
}
