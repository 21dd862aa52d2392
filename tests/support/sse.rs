//! Long-lived responses seen from a raw HTTP/1 client: event streams, their final event, and
//! many idle connections at once.

use std::net::SocketAddr;

use axum::Router;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::task::JoinHandle;
use tower_drain::Shutdown;

use super::bounded;
use super::raw::{decode_chunked, read_to_close, read_until, split_head, Chunked};

/// The default final event, as it appears in a parsed event list (without the blank line).
pub const FINAL_EVENT: &str = "event: shutdown\ndata: draining\nretry: 1000";

/// Opens a connection and sends `GET path` as an event-stream client would.
pub async fn open_event_stream(addr: SocketAddr, path: &str) -> TcpStream {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: test\r\nAccept: text/event-stream\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    stream
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
                // A thousand connections opened at once can overflow the listen queue of a
                // loaded machine; a client then reconnects, as an `EventSource` would.
                for _ in 0..5 {
                    let mut stream = open_event_stream(addr, "/events").await;
                    let mut raw = Vec::new();
                    if !read_until(&mut stream, &mut raw, b"data: ready\n\n").await {
                        continue;
                    }
                    ready_tx.send(()).await.unwrap();
                    read_to_close(&mut stream, &mut raw).await;
                    return raw;
                }
                panic!("no first event in five connections");
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
    let mut client = open_event_stream(addr, path).await;
    let mut raw = Vec::new();
    let arrived = bounded(
        "the response's first bytes",
        read_until(&mut client, &mut raw, marker),
    )
    .await;
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
        bounded(
            "the server to close the connection",
            read_to_close(&mut self.client, &mut self.raw),
        )
        .await;
        self.raw
    }

    /// Reads until the server closes the connection and decodes the chunked body.
    pub async fn finish(self) -> Chunked {
        decode_chunked(split_head(&self.finish_raw().await).1)
    }
}
