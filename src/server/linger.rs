//! Lingering close: once hyper is done with a connection, stop sending and read what the
//! client still sends until it closes, so that the close cannot reset the connection while
//! the last response is still on its way.
//!
//! Why it matters: a socket closed with received bytes still unread, or one that receives
//! bytes after it was closed, is reset by the kernel, and a reset throws away whatever the
//! send buffer still held: the tail of the last response. Clients keep sending while they
//! read a response: HTTP/2 clients send WINDOW_UPDATE and PING frames, and an HTTP/1 client
//! may still be uploading a request body the server answered without reading (a 503 while
//! draining). Graceful shutdown closes every connection right after its last response, so
//! without this the responses that shutdown waited for could be cut on the wire.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio::time::{timeout_at, Instant};

/// How long to wait for the client's next bytes before closing anyway (nginx's
/// `lingering_timeout` defaults to the same 5 s).
const LINGER_IDLE: Duration = Duration::from_secs(5);
/// The longest a connection lingers in all, however much the client keeps sending (nginx's
/// `lingering_time` defaults to 30 s).
const LINGER_LIMIT: Duration = Duration::from_secs(30);

/// The socket as hyper sees it. When hyper drops it, the socket is handed back instead of
/// closed, so [`Returned::linger`] can close it gently. An upgraded connection (WebSocket)
/// keeps it alive in the application's hands, and then nothing is handed back.
#[derive(Debug)]
pub(super) struct Lent {
    stream: Option<TcpStream>,
    home: Option<oneshot::Sender<Back>>,
    /// When the server last wrote; `None` while it has written nothing, and so has no
    /// response to protect.
    last_written: Option<Instant>,
    /// Whether the connection's last response is HTTP/1.0, as its status line shows: hyper
    /// answers an HTTP/1.0 request in HTTP/1.0, where a body of unknown length has no framing
    /// but the connection's end. A client may change versions from one request to the next
    /// on a kept-alive connection.
    http1_0: bool,
    /// Set when the client's bytes come in, cleared at the next status line: the next write
    /// that begins with one is the head of the answer to a new request.
    read_since_head: bool,
}

/// The socket handed back, with what closing it needs to know.
#[derive(Debug)]
struct Back {
    stream: TcpStream,
    /// When the server last wrote on it.
    last_written: Instant,
    /// Whether it speaks HTTP/1.0 (see `Lent::http1_0`).
    http1_0: bool,
}

/// Where the socket comes back once hyper has dropped it.
#[derive(Debug)]
pub(super) struct Returned {
    home: oneshot::Receiver<Back>,
}

/// Lends `stream` to hyper, keeping the way back.
pub(super) fn lend(stream: TcpStream) -> (Lent, Returned) {
    let (sender, home) = oneshot::channel();
    let lent = Lent {
        stream: Some(stream),
        home: Some(sender),
        last_written: None,
        http1_0: false,
        read_since_head: false,
    };
    (lent, Returned { home })
}

impl Returned {
    /// Closes the socket gently if hyper has handed it back: shuts the sending side (the
    /// client reads the response's end, then end of stream), then reads and discards until
    /// the client closes its side, nothing has been written or read for [`LINGER_IDLE`], or
    /// [`LINGER_LIMIT`] passes. The caller bounds this further (the drain deadline).
    ///
    /// `cut_short`: hyper ended the connection because the server's own side failed (a body
    /// cut at the drain deadline or failing by itself). An HTTP/1.0 connection is then
    /// reset instead: a body of unknown length sent to an HTTP/1.0 client ends where the
    /// connection does, so a clean end would complete the part sent, and only a reset tells
    /// the client it is not whole. Over HTTP/1.1 such a body is chunked and seen cut without
    /// its last chunk, and a reset would only risk the answers to pipelined requests before
    /// it, still in the kernel's buffer.
    pub(super) async fn linger(mut self, cut_short: bool) {
        // Empty: hyper still holds the socket (an upgrade); closed: nothing to return (the
        // server wrote nothing on it, so it was closed at once).
        let Ok(Back {
            mut stream,
            last_written,
            http1_0,
            ..
        }) = self.home.try_recv()
        else {
            return;
        };
        if cut_short && http1_0 {
            reset(stream);
            return;
        }
        if stream.shutdown().await.is_err() {
            return;
        }
        // On the heap: an array here would add its size to every connection's task, for the
        // connection's whole life.
        let mut discard = vec![0u8; 4096];
        let until = Instant::now() + LINGER_LIMIT;
        // The silence before hyper let go counts as much as the silence after: a keep-alive
        // connection closed after a long idle time (at drain start) is done at once, rather
        // than held for a client (a pool that does not watch idle connections) that will
        // not close it. A client still reading a response sends as it reads (HTTP/2 window
        // updates), and that traffic keeps the window open.
        let mut quiet_until = last_written + LINGER_IDLE;
        // Bounded by `until`: no pass waits past it, however recent the client's last bytes.
        while Instant::now() < until {
            match timeout_at(quiet_until.min(until), stream.read(&mut discard)).await {
                Ok(Ok(read)) if read > 0 => quiet_until = Instant::now() + LINGER_IDLE,
                // End of stream, an error, or silence: nothing more to protect.
                _ => return,
            }
        }
    }

    /// Closes the socket at the drain deadline, hyper having let go of it unfinished: with a
    /// reset if it speaks HTTP/1.0, for the reason given on [`linger`](Self::linger). hyper
    /// holds such a connection past the drain's start only while an exchange is unfinished
    /// (the graceful close ends idle ones and keep-alive), so the client has no whole answer
    /// to it: part of a response may still be unsent, in hyper's buffer (its client stopped
    /// reading) or not yet given by its body (one stalled that no layer counts, and so none
    /// cuts), and a clean end would pass a body only the close delimits for whole. Answers
    /// before it on the connection had a length (an HTTP/1.0 response without one ends the
    /// connection). Otherwise (HTTP/1.1 and HTTP/2, whose framing says where a response
    /// ends) the socket is simply closed.
    pub(super) fn close_at_deadline(mut self) {
        if let Ok(back) = self.home.try_recv() {
            if back.http1_0 {
                reset(back.stream);
            }
        }
    }
}

/// Closes `stream` with a reset rather than an end of stream.
fn reset(stream: TcpStream) {
    // Zero: the close resets at once and never blocks, unlike the other `SO_LINGER` settings
    // that the deprecation warns of (`set_zero_linger`, Tokio 1.50, is this same call).
    #[allow(deprecated)]
    if let Err(error) = stream.set_linger(Some(Duration::ZERO)) {
        tracing::debug!(%error, "could not set SO_LINGER to reset the connection");
    }
}

impl Lent {
    fn stream(&mut self) -> Pin<&mut TcpStream> {
        // Only `Drop` takes the stream out, and nothing polls the socket after that.
        Pin::new(self.stream.as_mut().expect("socket used after drop"))
    }

    /// Notes `bytes` written. Writes only: a clock read per write is about one per response
    /// (hyper writes a response with one vectored write), where reads would add one per
    /// request for nothing the linger needs: what the client sends while hyper still holds
    /// the socket is answered by a write, and what it sends after is read by the linger.
    ///
    /// `status_line` says whether what was written begins with an HTTP/1.0 status line, an
    /// HTTP/1.1 one, or neither. It is asked on the first write, which tells HTTP/1 from
    /// HTTP/2 (a SETTINGS frame), and after the client's bytes came in, until a status line
    /// shows the version of the answer to what they asked: a write in between (the rest of
    /// the answer before) begins with body bytes or a chunk's size.
    fn note_written(&mut self, status_line: impl FnOnce() -> Option<bool>, bytes: usize) {
        if bytes > 0 {
            if self.last_written.is_none() || self.read_since_head {
                if let Some(http1_0) = status_line() {
                    self.http1_0 = http1_0;
                    self.read_since_head = false;
                }
            }
            self.last_written = Some(Instant::now());
        }
    }
}

/// Whether `bytes` begin an HTTP/1.0 status line (`Some(true)`), an HTTP/1.1 one
/// (`Some(false)`), or neither.
fn status_line_version(bytes: &[u8]) -> Option<bool> {
    if bytes.starts_with(b"HTTP/1.0 ") {
        Some(true)
    } else if bytes.starts_with(b"HTTP/1.1 ") {
        Some(false)
    } else {
        None
    }
}

impl Drop for Lent {
    fn drop(&mut self) {
        let back = (self.stream.take(), self.home.take(), self.last_written);
        if let (Some(stream), Some(home), Some(last_written)) = back {
            // Fails only when nobody waits any more (the connection's task closed at the
            // deadline or stopped by a runtime shutting down, or an upgraded connection its
            // owner dropped after the task had moved on); the stream then closes here.
            let _ = home.send(Back {
                stream,
                last_written,
                http1_0: self.http1_0,
            });
        }
        // Otherwise the server never wrote on the socket (a client that connected and sent
        // nothing, or never a whole request head): no response can be cut, and lingering
        // would only hold the shutdown for a client that may never close.
    }
}

impl AsyncRead for Lent {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = self.stream().poll_read(cx, buf);
        // A flag, not a clock read: the clock is read on writes only (`note_written`).
        if buf.filled().len() > before {
            self.read_since_head = true;
        }
        polled
    }
}

impl AsyncWrite for Lent {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let polled = self.stream().poll_write(cx, buf);
        if let Poll::Ready(Ok(written)) = polled {
            self.note_written(|| status_line_version(buf), written);
        }
        polled
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let polled = self.stream().poll_write_vectored(cx, bufs);
        if let Poll::Ready(Ok(written)) = polled {
            let status_line = || {
                let first = bufs.iter().find(|buf| !buf.is_empty());
                first.and_then(|buf| status_line_version(buf))
            };
            self.note_written(status_line, written);
        }
        polled
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.as_ref().is_some_and(|s| s.is_write_vectored())
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.stream().poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.stream().poll_shutdown(cx)
    }
}
