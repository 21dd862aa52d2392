//! HTTP/1 and HTTP/2 at the edges of the protocol while a server drains, through
//! `tower_drain::server::serve` (and plain hyper without graceful close, to see the layer's
//! own answer to a late HTTP/2 stream): responses cut at the deadline as each framing shows
//! them (a body delimited by the connection's close, chunked, HTTP/2 trailers), request
//! bodies still arriving or reset, `Expect: 100-continue`, a request stream the client never
//! ends, an `Upgrade: h2c` request, a `CONNECT` tunnel, and a client's own
//! `Connection: close`.

mod support;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use futures_util::StreamExt;
use http::{Request, Response, StatusCode};
use http_body::Frame;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::Incoming;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, Mutex};
use tokio::task::JoinHandle;
use tower::{service_fn, Layer};
use tower_drain::{DrainOutcome, Shutdown};

use support::gate::Gate;
use support::raw::{
    contains, decode_chunked, has_connection_close, read_to_eof, read_until, split_head,
};
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
/// * `/upload`: reads the request body, passing the gate's `enter` after its first frame,
///   and answers its length and its `x-checksum` trailer (`-` if none), or `400` if the
///   body failed;
/// * `/refuse`: waits at the gate, then answers `413` without reading the request body;
/// * `CONNECT`: waits at the gate, answers `200` and then, on the tunnel, echoes four bytes;
/// * `/big`: [`BIG`] bytes in 64 KiB frames, of unknown length, then nothing more;
/// * `/whole`: [`BIG`] bytes in one [`OneFrame`];
/// * anything else: `ok\n`.
async fn start(shutdown: Shutdown, streams: &Streams) -> (SocketAddr, JoinHandle<()>) {
    start_with_gate(shutdown, streams, &Gate::new()).await
}

async fn start_with_gate(
    shutdown: Shutdown,
    streams: &Streams,
    gate: &Gate,
) -> (SocketAddr, JoinHandle<()>) {
    let streams = streams.clone();
    let gate = gate.clone();
    let routes = service_fn(move |request: Request<Incoming>| {
        let streams = streams.clone();
        let gate = gate.clone();
        async move {
            let text = |status: StatusCode, text: String| {
                let mut response =
                    Response::new(Full::new(Bytes::from(text)).map_err(Into::into).boxed());
                *response.status_mut() = status;
                response
            };
            if request.method() == http::Method::CONNECT {
                gate.pass().await;
                tokio::spawn(async move {
                    let tunnel = hyper::upgrade::on(request).await.unwrap();
                    let mut tunnel = hyper_util::rt::TokioIo::new(tunnel);
                    let mut echo = [0u8; 4];
                    tunnel.read_exact(&mut echo).await.unwrap();
                    tunnel.write_all(&echo).await.unwrap();
                    tunnel.shutdown().await.unwrap();
                });
                return Ok(Response::new(
                    Full::new(Bytes::new()).map_err(Into::into).boxed(),
                ));
            }
            let response = match request.uri().path() {
                "/upload" => {
                    let mut body = request.into_body();
                    let mut length = 0;
                    let mut checksum = String::from("-");
                    let mut entered = false;
                    loop {
                        match body.frame().await {
                            None => break text(StatusCode::OK, format!("{length} {checksum}")),
                            Some(Ok(frame)) => match frame.into_data() {
                                Ok(data) => length += data.len(),
                                Err(frame) => {
                                    if let Some(value) = frame
                                        .trailers_ref()
                                        .and_then(|trailers| trailers.get("x-checksum"))
                                    {
                                        checksum = value.to_str().unwrap().to_owned();
                                    }
                                }
                            },
                            Some(Err(_)) => {
                                break text(StatusCode::BAD_REQUEST, "body failed".into())
                            }
                        }
                        if !entered {
                            entered = true;
                            gate.enter();
                        }
                    }
                }
                "/refuse" => {
                    gate.pass().await;
                    text(StatusCode::PAYLOAD_TOO_LARGE, "too large\n".into())
                }
                "/big" => {
                    let chunk = Bytes::from(vec![b'x'; 64 * 1024]);
                    let frames = futures_util::stream::iter(0..BIG / chunk.len())
                        .map(move |_| Ok::<_, Infallible>(Frame::data(chunk.clone())))
                        .chain(futures_util::stream::pending());
                    Response::new(StreamBody::new(frames).map_err(Into::into).boxed())
                }
                "/whole" => {
                    let body = OneFrame(Some(Bytes::from(vec![b'x'; BIG])));
                    Response::new(body.map_err(Into::into).boxed())
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

/// A body of one frame whose length it does not announce (HTTP/1.0 then delimits it by the
/// connection's close), and which says it has ended as soon as the frame is taken: hyper
/// then ends the response, and its count, at once, whether or not it could send the frame.
struct OneFrame(Option<Bytes>);

impl http_body::Body for OneFrame {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        std::task::Poll::Ready(self.0.take().map(|data| Ok(Frame::data(data))))
    }

    fn is_end_stream(&self) -> bool {
        self.0.is_none()
    }
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

// === request bodies ===

/// An `Expect: 100-continue` upload admitted before the drain, whose handler refuses it
/// without reading its body once the drain has begun: the client gets the `413` with
/// `Connection: close` and no `100 Continue`, and the connection closes without the client
/// ever sending its body (it waits for a `100 Continue` that will not come).
#[tokio::test]
async fn expect_continue_upload_refused_unread_during_the_drain_closes_without_its_body() {
    let shutdown = Shutdown::new();
    let gate = Gate::new();
    let (addr, server) = start_with_gate(shutdown, &Streams::new(), &gate).await;

    let mut client = TcpStream::connect(addr).await.unwrap();
    client
        .write_all(
            b"POST /refuse HTTP/1.1\r\nhost: x\r\ncontent-length: 1000000\r\n\
              expect: 100-continue\r\n\r\n",
        )
        .await
        .unwrap();
    gate.entered(1).await;
    let drain = tokio::spawn(shutdown.drain(BOUND).unwrap());
    bounded("closing", shutdown.closing()).await;
    gate.release(1);

    let answer = read_to_eof(client).await;
    assert!(answer.starts_with("HTTP/1.1 413 "), "{answer}");
    assert!(!answer.contains("100 Continue"), "{answer}");
    assert!(has_connection_close(&answer), "{answer}");
    let report = bounded("the drain", drain).await.unwrap();
    assert_eq!(report.outcome, DrainOutcome::Drained, "{report}");
    bounded("the server to return", server).await.unwrap();
}

/// A chunked upload still arriving at the drain deadline, its handler waiting for the rest:
/// the handler's request is answered `503` with `Retry-After` and `Connection: close` as
/// `serve` closes the connection, its count ends, and `serve` returns.
#[tokio::test]
async fn http1_upload_still_arriving_at_the_deadline_gets_the_503() {
    let shutdown = Shutdown::new();
    let gate = Gate::new();
    let (addr, server) = start_with_gate(shutdown, &Streams::new(), &gate).await;

    let mut client = TcpStream::connect(addr).await.unwrap();
    client
        .write_all(
            b"POST /upload HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\n\
              5\r\nhello\r\n",
        )
        .await
        .unwrap();
    gate.entered(1).await;
    let drain = tokio::spawn(shutdown.drain(BOUND).unwrap());
    bounded("closing", shutdown.closing()).await;
    assert!(shutdown.force(), "the upload was in flight");
    let report = bounded("the drain", drain).await.unwrap();
    assert_eq!(report.outcome, DrainOutcome::TimedOut, "{report}");
    bounded("the server to return", server).await.unwrap();
    assert_eq!(shutdown.in_flight(), 0);

    // Read to its end: the server closes after the answer.
    let mut received = Vec::new();
    read_to_end_or_reset(&mut client, &mut received).await;
    let answer = String::from_utf8_lossy(&received);
    assert!(answer.starts_with("HTTP/1.1 503 "), "{answer}");
    assert!(has_connection_close(&answer), "{answer}");
    assert!(
        answer.to_ascii_lowercase().contains("retry-after: 1"),
        "{answer}"
    );
}

/// The same over HTTP/2: a stream whose request body is still arriving at the deadline is
/// answered `503` with `Retry-After`, not left without an answer.
#[tokio::test]
async fn http2_upload_still_arriving_at_the_deadline_gets_the_503() {
    let shutdown = Shutdown::new();
    let gate = Gate::new();
    let (addr, server) = start_with_gate(shutdown, &Streams::new(), &gate).await;

    let (mut sender, connection) = http2_connect(addr).await;
    let request = Request::post(format!("http://{addr}/upload"))
        .body(())
        .unwrap();
    let (response, mut upload) = sender.send_request(request, false).unwrap();
    upload
        .send_data(Bytes::from_static(b"hello"), false)
        .unwrap();
    gate.entered(1).await;
    let drain = tokio::spawn(shutdown.drain(BOUND).unwrap());
    bounded("closing", shutdown.closing()).await;
    assert!(shutdown.force(), "the upload was in flight");
    let report = bounded("the drain", drain).await.unwrap();
    assert_eq!(report.outcome, DrainOutcome::TimedOut, "{report}");

    let response = bounded("the answer", response).await.unwrap();
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(response.headers()["retry-after"], "1");
    bounded("the server to return", server).await.unwrap();
    assert_eq!(shutdown.in_flight(), 0);
    drop(upload);
    connection.abort();
}

/// An h2 client connection to `addr`, driven on a task of its own.
async fn http2_connect(addr: SocketAddr) -> (h2::client::SendRequest<Bytes>, JoinHandle<()>) {
    let tcp = TcpStream::connect(addr).await.unwrap();
    let (sender, connection) = bounded("the HTTP/2 handshake", h2::client::handshake(tcp))
        .await
        .unwrap();
    let connection = tokio::spawn(async move {
        // Ends with an error when the server closes it at the deadline.
        let _ = connection.await;
    });
    let sender = bounded("the HTTP/2 connection", sender.ready())
        .await
        .unwrap();
    (sender, connection)
}

/// A client that resets its connection (HTTP/1) or its stream (HTTP/2) in the middle of an
/// upload while the drain waits for it: the handler's read fails, the request's count ends,
/// and the drain ends `Drained` then, not at its deadline.
#[tokio::test]
async fn upload_reset_by_its_client_during_the_drain_ends_its_count() {
    for http2 in [false, true] {
        let shutdown = Shutdown::new();
        let gate = Gate::new();
        let (addr, server) = start_with_gate(shutdown, &Streams::new(), &gate).await;

        // What resets the upload, and the HTTP/2 connection, which stays open: only the
        // stream is reset.
        let mut connection = None;
        let reset: Box<dyn FnOnce()> = if http2 {
            let (mut sender, driver) = http2_connect(addr).await;
            let request = Request::post(format!("http://{addr}/upload"))
                .body(())
                .unwrap();
            let (_response, mut upload) = sender.send_request(request, false).unwrap();
            upload
                .send_data(Bytes::from_static(b"hello"), false)
                .unwrap();
            connection = Some((sender, driver));
            Box::new(move || upload.send_reset(h2::Reason::CANCEL))
        } else {
            let mut client = TcpStream::connect(addr).await.unwrap();
            client
                .write_all(b"POST /upload HTTP/1.1\r\nhost: x\r\ncontent-length: 100\r\n\r\nhello")
                .await
                .unwrap();
            Box::new(move || {
                // Zero linger: the close is a reset.
                #[allow(deprecated)]
                client.set_linger(Some(std::time::Duration::ZERO)).unwrap();
                drop(client);
            })
        };
        gate.entered(1).await;
        let drain = tokio::spawn(shutdown.drain(BOUND).unwrap());
        bounded("closing", shutdown.closing()).await;
        assert_eq!(shutdown.in_flight(), 1, "http2: {http2}");
        reset();

        let report = bounded("the drain", drain).await.unwrap();
        assert_eq!(
            report.outcome,
            DrainOutcome::Drained,
            "http2: {http2}: {report}"
        );
        assert_eq!(shutdown.in_flight(), 0, "http2: {http2}");
        if let Some((sender, driver)) = connection {
            drop(sender);
            driver.abort();
        }
        bounded("the server to return", server).await.unwrap();
    }
}

// === HTTP/2 ===

/// Reads an h2 response body to its end: its data, and its trailers or the error that ended
/// it.
async fn read_h2_body(
    body: &mut h2::RecvStream,
) -> (Vec<u8>, Result<Option<http::HeaderMap>, h2::Error>) {
    let mut data = Vec::new();
    // Bounded: the bodies of these tests are a few frames.
    for _ in 0..64 {
        match bounded("a body frame", body.data()).await {
            Some(Ok(chunk)) => {
                let _ = body.flow_control().release_capacity(chunk.len());
                data.extend_from_slice(&chunk);
            }
            Some(Err(error)) => return (data, Err(error)),
            None => return (data, bounded("the trailers", body.trailers()).await),
        }
    }
    panic!("more frames than expected");
}

/// A response whose trailers are still to come when the drain begins: the client gets its
/// data and then its trailers, and the drain waits for them.
#[tokio::test]
async fn http2_trailers_sent_after_the_drain_began_reach_the_client() {
    let shutdown = Shutdown::new();
    let streams = Streams::new();
    let (addr, server) = start(shutdown, &streams).await;

    let (mut sender, connection) = http2_connect(addr).await;
    let request = Request::get(format!("http://{addr}/stream"))
        .body(())
        .unwrap();
    let (response, _) = sender.send_request(request, true).unwrap();
    let frames = streams.next().await;
    frames.send(data("part 1\n")).unwrap();
    let response = bounded("the response head", response).await.unwrap();
    let mut body = response.into_body();
    let first = bounded("the first part", body.data())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&first[..], b"part 1\n");

    let drain = tokio::spawn(shutdown.drain(BOUND).unwrap());
    bounded("closing", shutdown.closing()).await;
    assert_eq!(shutdown.in_flight(), 1, "counted until its trailers");
    let mut trailers = http::HeaderMap::new();
    trailers.insert("x-checksum", "42".parse().unwrap());
    frames.send(Ok(Frame::trailers(trailers))).unwrap();
    drop(frames);

    let (rest, trailers) = read_h2_body(&mut body).await;
    assert!(rest.is_empty());
    let trailers = trailers.expect("a clean end").expect("trailers");
    assert_eq!(trailers["x-checksum"], "42");
    let report = bounded("the drain", drain).await.unwrap();
    assert_eq!(report.outcome, DrainOutcome::Drained, "{report}");
    assert_eq!(report.completed, 1);
    drop(sender);
    bounded("the server to return", server).await.unwrap();
    connection.abort();
}

/// A response whose trailers are still to come at the drain deadline is reset: the client
/// sees an error, never an end of stream without the trailers it would read as whole.
#[tokio::test]
async fn http2_response_awaiting_its_trailers_at_the_deadline_is_reset() {
    let shutdown = Shutdown::new();
    let streams = Streams::new();
    let (addr, server) = start(shutdown, &streams).await;

    let (mut sender, connection) = http2_connect(addr).await;
    let request = Request::get(format!("http://{addr}/stream"))
        .body(())
        .unwrap();
    let (response, _) = sender.send_request(request, true).unwrap();
    let frames = streams.next().await;
    frames.send(data("part 1\n")).unwrap();
    let response = bounded("the response head", response).await.unwrap();
    let mut body = response.into_body();

    let drain = tokio::spawn(shutdown.drain(BOUND).unwrap());
    bounded("closing", shutdown.closing()).await;
    assert!(shutdown.force(), "the stream was still running");
    let report = bounded("the drain", drain).await.unwrap();
    assert_eq!(report.outcome, DrainOutcome::TimedOut, "{report}");

    let (data, end) = read_h2_body(&mut body).await;
    assert_eq!(data, b"part 1\n");
    let error = end.expect_err("cut, not ended");
    assert!(
        error.is_reset() || error.is_io() || error.is_go_away(),
        "{error:?}"
    );
    drop((sender, frames));
    bounded("the server to return", server).await.unwrap();
    connection.abort();
}

/// A request whose stream the client never ends (no `END_STREAM` after its headers), answered
/// whole by a handler that does not read its body: its count ends with the response, the
/// drain ends `Drained` at once, and `serve` returns well before the drain deadline (h2
/// resets the half-open stream, so the GOAWAY's graceful close is not held by it).
#[tokio::test]
async fn http2_request_without_end_stream_answered_whole_does_not_hold_serve() {
    let shutdown = Shutdown::new();
    let (addr, server) = start(shutdown, &Streams::new()).await;

    let (mut sender, connection) = http2_connect(addr).await;
    let request = Request::post(format!("http://{addr}/")).body(()).unwrap();
    let (response, upload) = sender.send_request(request, false).unwrap();
    let response = bounded("the response head", response).await.unwrap();
    let (data, end) = read_h2_body(&mut response.into_body()).await;
    assert_eq!(data, b"ok\n");
    assert!(end.is_ok(), "{end:?}");

    // Ten minutes: `serve` must not wait for it.
    let drain = shutdown.drain(std::time::Duration::from_secs(600)).unwrap();
    let report = bounded("the drain", drain).await;
    assert_eq!(report.outcome, DrainOutcome::Drained, "{report}");
    assert_eq!(report.in_flight_at_start, 0);
    bounded("the server to return", server).await.unwrap();
    drop((upload, sender));
    connection.abort();
}

// === h2c upgrade ===

/// An HTTP/1.1 request asking to upgrade to cleartext HTTP/2 (`Upgrade: h2c`), in flight
/// when the drain begins: hyper does not speak h2c, so it is answered over HTTP/1.1, whole,
/// never switched, with `Connection: close` in place of the client's `Upgrade` token, and
/// the connection closes.
#[tokio::test]
async fn h2c_upgrade_request_in_flight_is_answered_over_http1_with_connection_close() {
    let shutdown = Shutdown::new();
    let gate = Gate::new();
    let (addr, server) = start_with_gate(shutdown, &Streams::new(), &gate).await;

    let mut client = TcpStream::connect(addr).await.unwrap();
    client
        .write_all(
            b"POST /refuse HTTP/1.1\r\nhost: x\r\nconnection: Upgrade, HTTP2-Settings\r\n\
              upgrade: h2c\r\nhttp2-settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\
              content-length: 0\r\n\r\n",
        )
        .await
        .unwrap();
    gate.entered(1).await;
    let drain = tokio::spawn(shutdown.drain(BOUND).unwrap());
    bounded("closing", shutdown.closing()).await;
    gate.release(1);

    let answer = read_to_eof(client).await;
    assert!(
        answer.starts_with("HTTP/1.1 413 "),
        "not switched: {answer}"
    );
    assert!(has_connection_close(&answer), "{answer}");
    assert!(!answer.to_ascii_lowercase().contains("upgrade"), "{answer}");
    assert!(answer.ends_with("\r\n\r\ntoo large\n"), "{answer}");
    let report = bounded("the drain", drain).await.unwrap();
    assert_eq!(report.outcome, DrainOutcome::Drained, "{report}");
    bounded("the server to return", server).await.unwrap();
}

// === request trailers ===

/// An upload whose trailers come after the drain began, over HTTP/1.1 (chunked) and HTTP/2:
/// the handler gets its data and its trailers, and the drain waits for its answer.
#[tokio::test]
async fn request_trailers_sent_after_the_drain_began_reach_the_handler() {
    for http2 in [false, true] {
        let shutdown = Shutdown::new();
        let gate = Gate::new();
        let (addr, server) = start_with_gate(shutdown, &Streams::new(), &gate).await;
        let mut trailers = http::HeaderMap::new();
        trailers.insert("x-checksum", "42".parse().unwrap());

        let answer = if http2 {
            let (mut sender, connection) = http2_connect(addr).await;
            let request = Request::post(format!("http://{addr}/upload"))
                .body(())
                .unwrap();
            let (response, mut upload) = sender.send_request(request, false).unwrap();
            upload
                .send_data(Bytes::from_static(b"hello"), false)
                .unwrap();
            gate.entered(1).await;
            let drain = tokio::spawn(shutdown.drain(BOUND).unwrap());
            bounded("closing", shutdown.closing()).await;
            upload.send_trailers(trailers).unwrap();
            let response = bounded("the answer", response).await.unwrap();
            let (data, end) = read_h2_body(&mut response.into_body()).await;
            assert!(end.is_ok(), "{end:?}");
            drop(sender);
            let report = bounded("the drain", drain).await.unwrap();
            assert_eq!(report.outcome, DrainOutcome::Drained, "{report}");
            bounded("the server to return", server).await.unwrap();
            connection.abort();
            String::from_utf8(data).unwrap()
        } else {
            let mut client = TcpStream::connect(addr).await.unwrap();
            client
                .write_all(
                    b"POST /upload HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\n\
                      5\r\nhello\r\n",
                )
                .await
                .unwrap();
            gate.entered(1).await;
            let drain = tokio::spawn(shutdown.drain(BOUND).unwrap());
            bounded("closing", shutdown.closing()).await;
            client
                .write_all(b"0\r\nx-checksum: 42\r\n\r\n")
                .await
                .unwrap();
            let answer = read_to_eof(client).await;
            assert!(answer.starts_with("HTTP/1.1 200 OK\r\n"), "{answer}");
            assert!(has_connection_close(&answer), "{answer}");
            let report = bounded("the drain", drain).await.unwrap();
            assert_eq!(report.outcome, DrainOutcome::Drained, "{report}");
            bounded("the server to return", server).await.unwrap();
            answer.split("\r\n\r\n").nth(1).unwrap().to_owned()
        };
        assert_eq!(answer, "5 42", "http2: {http2}");
    }
}

// === CONNECT ===

/// A `CONNECT` admitted before the drain and answered `200` after it began opens its tunnel
/// all the same (hyper hands the connection over on a `2xx` to `CONNECT`, as on a `101`):
/// bytes pass both ways, and the request's count ends with the answer.
#[tokio::test]
async fn connect_answered_after_the_drain_began_still_opens_its_tunnel() {
    let shutdown = Shutdown::new();
    let gate = Gate::new();
    let (addr, server) = start_with_gate(shutdown, &Streams::new(), &gate).await;

    let mut client = TcpStream::connect(addr).await.unwrap();
    client
        .write_all(b"CONNECT example.com:443 HTTP/1.1\r\nhost: example.com:443\r\n\r\n")
        .await
        .unwrap();
    gate.entered(1).await;
    let drain = tokio::spawn(shutdown.drain(BOUND).unwrap());
    bounded("closing", shutdown.closing()).await;
    gate.release(1);

    let mut head = Vec::new();
    assert!(
        bounded(
            "the answer",
            read_until(&mut client, &mut head, b"\r\n\r\n")
        )
        .await
    );
    let head = String::from_utf8(head).unwrap();
    assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
    assert!(head.ends_with("\r\n\r\n"), "nothing after the head: {head}");
    let report = bounded("the drain", drain).await.unwrap();
    assert_eq!(report.outcome, DrainOutcome::Drained, "{report}");
    assert_eq!(report.completed, 1);

    client.write_all(b"ping").await.unwrap();
    let echoed = read_to_eof(client).await;
    assert_eq!(echoed, "ping", "the tunnel carries bytes");
    bounded("the server to return", server).await.unwrap();
}

/// An HTTP/1.0 client that stopped reading a body delimited by the close, which the server
/// has produced whole (the drain ends `Drained`) but not yet sent: the server still holds
/// its tail at the drain deadline, where `serve` closes the connection. The client, reading
/// again, must find it reset after what it gets, not a clean end that completes the body.
#[tokio::test]
async fn http1_0_body_delimited_by_the_close_is_reset_when_serve_closes_it_unsent() {
    let shutdown = Shutdown::new();
    let (addr, server) = start(shutdown, &Streams::new()).await;

    let mut client = TcpStream::connect(addr).await.unwrap();
    client
        .write_all(b"GET /whole HTTP/1.0\r\n\r\n")
        .await
        .unwrap();
    // The response has begun: its one frame is in hyper's hands, and its count has ended.
    let mut waiting = [0u8; 1];
    bounded("the response to begin", client.peek(&mut waiting))
        .await
        .unwrap();
    let report = bounded("the drain", shutdown.drain(BOUND).unwrap()).await;
    assert_eq!(report.outcome, DrainOutcome::Drained, "{report}");
    // The deadline, as far as `serve` is concerned: it closes what is still open.
    shutdown.force();
    bounded("the server to return", server).await.unwrap();

    let mut received = Vec::new();
    let end = read_to_end_or_reset(&mut client, &mut received).await;
    assert!(received.len() < BIG, "the tail was never sent");
    assert_eq!(
        end,
        End::Reset,
        "a close-delimited body closed unsent ended cleanly after {} bytes",
        received.len()
    );
}

// === Expect: 100-continue over HTTP/2 ===

/// An HTTP/2 upload with `Expect: 100-continue` that reaches the layer once admission has
/// closed (its stream opened before the client had the GOAWAY; here, a server with no
/// graceful close) is answered `503` with `Retry-After` while the client still holds back
/// its body, and counts nothing.
#[tokio::test]
async fn http2_expect_continue_upload_refused_while_draining_needs_no_body() {
    let shutdown = Shutdown::new();
    let hello = service_fn(|_: Request<Incoming>| async {
        Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"ok\n"))))
    });
    let addr = support::http::serve_on_hyper(shutdown.layer().layer(hello)).await;
    let report = bounded("the drain", shutdown.drain(BOUND).unwrap()).await;
    assert_eq!(report.outcome, DrainOutcome::Drained, "{report}");

    let (mut sender, connection) = http2_connect(addr).await;
    let request = Request::post(format!("http://{addr}/"))
        .header("expect", "100-continue")
        .header("content-length", "1000000")
        .body(())
        .unwrap();
    // The body is never sent: the client waits for a `100 Continue`.
    let (response, _upload) = sender.send_request(request, false).unwrap();
    let response = bounded("the refusal", response).await.unwrap();
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(response.headers()["retry-after"], "1");
    let (body, end) = read_h2_body(&mut response.into_body()).await;
    assert_eq!(body, b"service is shutting down\n");
    assert!(end.is_ok(), "{end:?}");
    assert_eq!(shutdown.rejected(), 1);
    assert_eq!(shutdown.in_flight(), 0);
    connection.abort();
}

// === Connection: close from the client ===

/// A request that itself says `Connection: close`, in flight when the drain begins: its
/// answer says `close` once (the layer's and hyper's own are not both sent), whole, and the
/// connection then closes.
#[tokio::test]
async fn client_connection_close_in_flight_gets_one_close_and_a_whole_answer() {
    let shutdown = Shutdown::new();
    let gate = Gate::new();
    let (addr, server) = start_with_gate(shutdown, &Streams::new(), &gate).await;

    let mut client = TcpStream::connect(addr).await.unwrap();
    client
        .write_all(b"GET /refuse HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
        .await
        .unwrap();
    gate.entered(1).await;
    let drain = tokio::spawn(shutdown.drain(BOUND).unwrap());
    bounded("closing", shutdown.closing()).await;
    gate.release(1);

    let answer = read_to_eof(client).await;
    let (head, body) = answer.split_once("\r\n\r\n").unwrap();
    let connection: Vec<_> = head
        .lines()
        .filter(|line| line.to_ascii_lowercase().starts_with("connection:"))
        .collect();
    assert_eq!(connection, ["connection: close"], "{head}");
    assert_eq!(body, "too large\n");
    let report = bounded("the drain", drain).await.unwrap();
    assert_eq!(report.outcome, DrainOutcome::Drained, "{report}");
    bounded("the server to return", server).await.unwrap();
}
