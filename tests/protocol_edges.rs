//! HTTP/1 and HTTP/2 at the edges of the protocol while a server drains, through
//! `tower_drain::server::serve`: responses cut at the deadline as each framing shows them
//! (a body delimited by the connection's close, chunked, HTTP/2 trailers), request bodies
//! still arriving, and requests whose end is delayed.

mod support;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use futures_util::StreamExt;
use http::{Request, Response};
use http_body::Frame;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::Incoming;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, Mutex};
use tokio::task::JoinHandle;
use tower::{service_fn, Layer};
use tower_drain::{DrainOutcome, Shutdown};

use support::raw::{contains, decode_chunked, read_until, split_head};
use support::{bounded, BOUND};

type BoxBody =
    http_body_util::combinators::BoxBody<Bytes, Box<dyn std::error::Error + Send + Sync>>;

/// The frames of one streamed response, sent by the test.
type Frames = mpsc::UnboundedSender<Result<Frame<Bytes>, Infallible>>;

/// Hands the test the frame sender of each `/stream` response as its handler starts.
#[derive(Clone)]
struct Streams {
    tx: mpsc::UnboundedSender<Frames>,
    rx: Arc<Mutex<mpsc::UnboundedReceiver<Frames>>>,
}

impl Streams {
    fn new() -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        Streams {
            tx,
            rx: Arc::new(Mutex::new(rx)),
        }
    }

    /// The frame sender of the next `/stream` response.
    async fn next(&self) -> Frames {
        bounded("a stream to start", self.rx.lock().await.recv())
            .await
            .expect("the server keeps a sender")
    }
}

/// Serves, under `shutdown.layer()`, until the drain:
/// * `/stream`: a body of unknown length whose frames the test sends through [`Streams`];
/// * `/big`: [`BIG`] bytes in 64 KiB frames, of unknown length, then nothing more;
/// * anything else: `ok\n`.
async fn start(shutdown: Shutdown, streams: &Streams) -> (SocketAddr, JoinHandle<()>) {
    let streams = streams.clone();
    let routes = service_fn(move |request: Request<Incoming>| {
        let streams = streams.clone();
        async move {
            let response = match request.uri().path() {
                "/big" => {
                    let chunk = Bytes::from(vec![b'x'; 64 * 1024]);
                    let frames = futures_util::stream::iter(0..BIG / chunk.len())
                        .map(move |_| Ok::<_, Infallible>(Frame::data(chunk.clone())))
                        .chain(futures_util::stream::pending());
                    Response::new(StreamBody::new(frames).map_err(Into::into).boxed())
                }
                "/stream" => {
                    let (frames, rx) = mpsc::unbounded_channel();
                    streams.tx.send(frames).unwrap();
                    let body = StreamBody::new(tokio_stream_of(rx));
                    Response::new(body.map_err(Into::into).boxed())
                }
                _ => Response::new(
                    Full::new(Bytes::from_static(b"ok\n"))
                        .map_err(Into::into)
                        .boxed(),
                ),
            };
            Ok::<Response<BoxBody>, Infallible>(response)
        }
    });
    let service = shutdown.layer().layer(routes);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(tower_drain::server::serve(listener, service, shutdown));
    (addr, server)
}

/// The frames a receiver gets, as a stream that ends when every sender is gone.
fn tokio_stream_of<T>(rx: mpsc::UnboundedReceiver<T>) -> impl futures_util::Stream<Item = T> {
    futures_util::stream::unfold(rx, |mut rx| async move {
        let item = rx.recv().await?;
        Some((item, rx))
    })
}

fn data(text: &'static str) -> Result<Frame<Bytes>, Infallible> {
    Ok(Frame::data(Bytes::from_static(text.as_bytes())))
}

/// How a raw connection ended, once the server was done with it.
#[derive(Debug, PartialEq, Eq)]
enum End {
    /// A FIN: end of stream, which ends a body delimited by the close.
    Clean,
    /// A reset.
    Reset,
}

/// Reads until the server closes `stream`, returning what was read and how it ended.
async fn read_to_end_or_reset(stream: &mut TcpStream, received: &mut Vec<u8>) -> End {
    let mut chunk = [0u8; 16 * 1024];
    bounded("the server to close", async {
        loop {
            match stream.read(&mut chunk).await {
                Ok(0) => return End::Clean,
                Ok(n) => received.extend_from_slice(&chunk[..n]),
                Err(error) if error.kind() == std::io::ErrorKind::ConnectionReset => {
                    return End::Reset
                }
                Err(error) => panic!("read failed: {error}"),
            }
        }
    })
    .await
}

// === responses cut at the deadline ===

/// An HTTP/1.0 client gets a body of unknown length delimited by the connection's close
/// (HTTP/1.0 has no chunked framing): a clean close is its end. Cut at the drain deadline,
/// the connection must be reset, or the client (curl, ApacheBench, nginx proxying with its
/// default `proxy_http_version 1.0`) reads the part it got as the whole response.
#[tokio::test]
async fn http1_0_body_delimited_by_the_close_is_reset_when_cut_at_the_deadline() {
    let shutdown = Shutdown::new();
    let streams = Streams::new();
    let (addr, server) = start(shutdown, &streams).await;

    let mut client = TcpStream::connect(addr).await.unwrap();
    client
        .write_all(b"GET /stream HTTP/1.0\r\n\r\n")
        .await
        .unwrap();
    let frames = streams.next().await;
    frames.send(data("part 1\n")).unwrap();
    let mut received = Vec::new();
    assert!(
        bounded(
            "the first part",
            read_until(&mut client, &mut received, b"part 1\n")
        )
        .await
    );
    let (head, _) = split_head(&received);
    assert!(head.starts_with("HTTP/1.0 200 OK"), "{head}");
    assert!(
        !head.to_ascii_lowercase().contains("content-length")
            && !head.to_ascii_lowercase().contains("transfer-encoding"),
        "delimited by the close: {head}"
    );

    let drain = tokio::spawn(shutdown.drain(BOUND).unwrap());
    bounded("closing", shutdown.closing()).await;
    assert!(shutdown.force(), "the stream was still running");
    let report = bounded("the drain", drain).await.unwrap();
    assert_eq!(report.outcome, DrainOutcome::TimedOut, "{report}");

    let end = read_to_end_or_reset(&mut client, &mut received).await;
    assert_eq!(
        end,
        End::Reset,
        "a cut close-delimited body must not end cleanly: {:?}",
        String::from_utf8_lossy(&received)
    );
    drop(frames);
    bounded("the server to return", server).await.unwrap();
}

/// The same cut over HTTP/1.1: the chunked body stops without its last chunk, so the client
/// sees it incomplete however the connection then ends.
#[tokio::test]
async fn http1_1_chunked_body_cut_at_the_deadline_has_no_last_chunk() {
    let shutdown = Shutdown::new();
    let streams = Streams::new();
    let (addr, server) = start(shutdown, &streams).await;

    let mut client = TcpStream::connect(addr).await.unwrap();
    client
        .write_all(b"GET /stream HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    let frames = streams.next().await;
    frames.send(data("part 1\n")).unwrap();
    let mut received = Vec::new();
    assert!(
        bounded(
            "the first part",
            read_until(&mut client, &mut received, b"part 1\n")
        )
        .await
    );

    let drain = tokio::spawn(shutdown.drain(BOUND).unwrap());
    bounded("closing", shutdown.closing()).await;
    assert!(shutdown.force());
    let report = bounded("the drain", drain).await.unwrap();
    assert_eq!(report.outcome, DrainOutcome::TimedOut, "{report}");

    read_to_end_or_reset(&mut client, &mut received).await;
    let (head, body) = split_head(&received);
    assert!(head.contains("transfer-encoding: chunked"), "{head}");
    let decoded = decode_chunked(body);
    assert_eq!(decoded.data, b"part 1\n");
    assert!(!decoded.terminated, "cut, not ended: {received:?}");
    assert!(!contains(body, b"0\r\n\r\n"));
    drop(frames);
    bounded("the server to return", server).await.unwrap();
}

/// Far more than the kernel buffers on both ends of a loopback connection hold.
const BIG: usize = 64 * 1024 * 1024;

/// An HTTP/1.0 client that stopped reading a body delimited by the close: at the deadline
/// the server stops with part of the body still in the socket buffers. The client, reading
/// again, must find the connection reset after what it gets of them, not a clean end that
/// completes the body.
#[tokio::test]
async fn http1_0_body_delimited_by_the_close_is_reset_when_its_client_stopped_reading() {
    let shutdown = Shutdown::new();
    let (addr, server) = start(shutdown, &Streams::new()).await;

    let mut client = TcpStream::connect(addr).await.unwrap();
    client
        .write_all(b"GET /big HTTP/1.0\r\n\r\n")
        .await
        .unwrap();
    // The client has 64 KiB waiting, unread: the body is streaming into its buffers.
    let mut waiting = vec![0u8; 64 * 1024];
    // Bounded: each look returns what has arrived, and the server keeps sending.
    for _ in 0..1_000_000 {
        let peeked = bounded("the body to arrive", client.peek(&mut waiting))
            .await
            .unwrap();
        if peeked == waiting.len() {
            break;
        }
        tokio::task::yield_now().await;
    }

    let drain = tokio::spawn(shutdown.drain(BOUND).unwrap());
    bounded("closing", shutdown.closing()).await;
    assert!(shutdown.force(), "the body was still streaming");
    let report = bounded("the drain", drain).await.unwrap();
    assert_eq!(report.outcome, DrainOutcome::TimedOut, "{report}");
    bounded("the server to return", server).await.unwrap();

    let mut received = Vec::new();
    let end = read_to_end_or_reset(&mut client, &mut received).await;
    assert!(received.len() >= waiting.len(), "{}", received.len());
    assert_eq!(
        end,
        End::Reset,
        "a cut close-delimited body ended cleanly after {} bytes",
        received.len()
    );
}
