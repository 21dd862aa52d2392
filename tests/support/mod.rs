//! What the integration tests share: bounded waits, a gate to hold handlers in flight, and
//! byte-level HTTP/1 helpers for checks a pooling client would hide.
#![allow(dead_code)] // Each test crate uses its own part of this module.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, Mutex, Semaphore};

/// The bound on every wait. Generous: it only turns a hang into a failure.
pub const WAIT: Duration = Duration::from_secs(10);

/// Awaits `future`, failing the test if it takes longer than [`WAIT`].
pub async fn within<F: Future>(what: &str, future: F) -> F::Output {
    tokio::time::timeout(WAIT, future)
        .await
        .unwrap_or_else(|_| panic!("timed out waiting for {what}"))
}

/// Holds handlers in flight until the test lets them go, and tells the test when each one
/// has started.
#[derive(Clone)]
pub struct Gate {
    inner: Arc<GateInner>,
}

struct GateInner {
    entered_tx: mpsc::UnboundedSender<()>,
    entered_rx: Mutex<mpsc::UnboundedReceiver<()>>,
    release: Semaphore,
}

impl Gate {
    pub fn new() -> Self {
        let (entered_tx, entered_rx) = mpsc::unbounded_channel();
        Gate {
            inner: Arc::new(GateInner {
                entered_tx,
                entered_rx: Mutex::new(entered_rx),
                release: Semaphore::new(0),
            }),
        }
    }

    /// Called by a handler: reports that it started.
    pub fn enter(&self) {
        let _ = self.inner.entered_tx.send(());
    }

    /// Called by a handler: reports that it started, then waits to be released.
    pub async fn pass(&self) {
        self.enter();
        self.inner
            .release
            .acquire()
            .await
            .expect("the gate is never closed")
            .forget();
    }

    /// Waits until `count` more handlers have started.
    pub async fn entered(&self, count: usize) {
        let mut entered = self.inner.entered_rx.lock().await;
        for _ in 0..count {
            within("a handler to start", entered.recv())
                .await
                .expect("the gate keeps a sender");
        }
    }

    /// Lets `count` held handlers finish.
    pub fn release(&self, count: usize) {
        self.inner.release.add_permits(count);
    }
}

/// Writes a `GET` for `path` on a raw HTTP/1.1 connection (keep-alive, the 1.1 default).
pub async fn write_get(stream: &mut TcpStream, path: &str) {
    let request = format!("GET {path} HTTP/1.1\r\nhost: localhost\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
}

/// Reads one whole response with a `content-length` body, leaving the connection open.
/// Header names come back lower-cased, as hyper writes them.
pub async fn read_response(stream: &mut TcpStream) -> String {
    let mut bytes = Vec::new();
    let mut chunk = [0u8; 4096];
    // Bounded: a response of these tests is far smaller than 64 reads.
    for _ in 0..64 {
        if let Some(length) = complete_length(&bytes) {
            assert_eq!(length, bytes.len(), "more bytes than one response");
            return String::from_utf8(bytes).unwrap();
        }
        let read = within("response bytes", stream.read(&mut chunk))
            .await
            .unwrap();
        assert_ne!(read, 0, "connection closed mid-response: {bytes:?}");
        bytes.extend_from_slice(&chunk[..read]);
    }
    panic!("response never completed: {bytes:?}");
}

/// Opens a connection to `addr`, has `GET /` answered on it, and checks the server kept it
/// open for more: the connection a client would reuse.
pub async fn kept_alive_connection(addr: SocketAddr) -> TcpStream {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    write_get(&mut stream, "/").await;
    let response = read_response(&mut stream).await;
    assert!(
        !has_connection_close(&response),
        "kept alive while serving: {response}"
    );
    stream
}

/// Reads until the server closes the connection, returning everything read.
pub async fn read_to_eof(stream: &mut TcpStream) -> String {
    let mut bytes = Vec::new();
    within(
        "the server to close the connection",
        stream.read_to_end(&mut bytes),
    )
    .await
    .unwrap();
    String::from_utf8(bytes).unwrap()
}

/// The length of the first response in `bytes` once it is all there.
fn complete_length(bytes: &[u8]) -> Option<usize> {
    let head_end = bytes.windows(4).position(|w| w == b"\r\n\r\n")? + 4;
    let head = std::str::from_utf8(&bytes[..head_end])
        .unwrap()
        .to_ascii_lowercase();
    let body_len: usize = head
        .lines()
        .find_map(|line| line.strip_prefix("content-length:"))
        .map_or(0, |value| value.trim().parse().unwrap());
    (bytes.len() >= head_end + body_len).then_some(head_end + body_len)
}

/// True when the response head has `connection: close`.
pub fn has_connection_close(response: &str) -> bool {
    let head = response.split("\r\n\r\n").next().unwrap_or_default();
    head.lines()
        .any(|line| line.eq_ignore_ascii_case("connection: close"))
}
