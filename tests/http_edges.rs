//! HTTP at its edges, through `tower_drain::server::serve` (and axum without graceful
//! shutdown, to see the layer's own answers while draining): HTTP/1.0 keep-alive, `HEAD`,
//! bodiless statuses, known lengths, HTTP/2 trailers, `Expect: 100-continue`, uploads in
//! flight when the drain begins, and pipelined requests across the close.

mod support;

use std::convert::Infallible;
use std::net::SocketAddr;

use bytes::Bytes;
use http::{HeaderMap, Method, Request, Response, StatusCode};
use http_body::Frame;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tower::{service_fn, Layer};
use tower_drain::{DrainOutcome, DrainReport, LongLivedLayer, Shutdown};

use support::gate::Gate;
use support::raw::{has_connection_close, read_response, read_to_eof, read_until};
use support::{bounded, BOUND};

/// The body of `/`: a known length, sent as `Content-Length`.
const HELLO: &[u8] = b"hello world\n";

type BoxBody =
    http_body_util::combinators::BoxBody<Bytes, Box<dyn std::error::Error + Send + Sync>>;

/// Serves, under `shutdown.layer()`, until the drain:
/// * `/held` waits at the gate, then answers [`HELLO`];
/// * `/upload` waits at the gate, then reads the whole request body and answers its length;
/// * `/stream-upload` reads the request body, passing the gate after its first chunk, and
///   answers its length;
/// * `/204`, `/304`: those statuses, no body;
/// * `/trailers`: one chunk, then trailers `x-checksum: 42`;
/// * anything else: [`HELLO`].
async fn start(shutdown: Shutdown, gate: &Gate) -> (SocketAddr, JoinHandle<()>) {
    let gate = gate.clone();
    let routes = service_fn(move |request: Request<Incoming>| {
        let gate = gate.clone();
        async move { Ok::<_, Infallible>(route(request, gate).await) }
    });
    let service = shutdown.layer().layer(routes);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(tower_drain::server::serve(listener, service, shutdown));
    (addr, server)
}

async fn route(request: Request<Incoming>, gate: Gate) -> Response<BoxBody> {
    let full = |bytes: Bytes| Full::new(bytes).map_err(Into::into).boxed();
    let status = |status: StatusCode| {
        let mut response = Response::new(full(Bytes::new()));
        *response.status_mut() = status;
        response
    };
    match request.uri().path() {
        "/held" => {
            gate.pass().await;
            Response::new(full(Bytes::from_static(HELLO)))
        }
        "/upload" => {
            gate.pass().await;
            let body = request.into_body().collect().await.unwrap().to_bytes();
            Response::new(full(Bytes::from(body.len().to_string())))
        }
        "/stream-upload" => {
            let mut body = request.into_body();
            let mut length = 0;
            let mut entered = false;
            while let Some(frame) = body.frame().await {
                length += frame.unwrap().into_data().map_or(0, |data| data.len());
                if !entered {
                    entered = true;
                    gate.enter();
                }
            }
            Response::new(full(Bytes::from(length.to_string())))
        }
        "/204" => status(StatusCode::NO_CONTENT),
        "/304" => status(StatusCode::NOT_MODIFIED),
        "/trailers" => {
            let mut trailers = HeaderMap::new();
            trailers.insert("x-checksum", "42".parse().unwrap());
            let frames = futures_util::stream::iter([
                Ok::<_, Infallible>(Frame::data(Bytes::from_static(HELLO))),
                Ok(Frame::trailers(trailers)),
            ]);
            Response::new(StreamBody::new(frames).map_err(Into::into).boxed())
        }
        _ => Response::new(full(Bytes::from_static(HELLO))),
    }
}

/// Serves `/` with [`HELLO`] under `shutdown.layer()` on axum, with no graceful shutdown: the
/// server keeps answering while draining, so the layer's own answers can be seen.
async fn serve_without_graceful_close(shutdown: Shutdown) -> SocketAddr {
    let app = axum::Router::new()
        .route("/", axum::routing::get(|| async { HELLO }))
        .layer(shutdown.layer());
    support::http::serve(app).await.0
}

/// Serves [`HELLO`] under `shutdown.layer()` on plain hyper (HTTP/1 and HTTP/2), with no
/// graceful shutdown: the layer's answers as hyper sends them, without axum's router, which
/// leaves out the body of an answer to `HEAD` by itself.
async fn serve_on_hyper_without_graceful_close(shutdown: Shutdown) -> SocketAddr {
    let hello = service_fn(|_: Request<Incoming>| async {
        Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(HELLO))))
    });
    let service = shutdown.layer().layer(hello);
    support::http::serve_on_hyper(service).await
}

/// `method uri` over HTTP/2 (prior knowledge) on a client of its own: the response, its body
/// left to the caller.
async fn over_http2(method: Method, uri: String) -> Response<Incoming> {
    let h2 = Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build_http::<http_body_util::Empty<Bytes>>();
    let request = Request::builder()
        .method(method)
        .uri(uri)
        .body(http_body_util::Empty::new())
        .unwrap();
    bounded("an HTTP/2 response", h2.request(request))
        .await
        .unwrap()
}

/// Waits for the drain, which must have found every request ended (none leaked, none cut).
async fn assert_drained(drain: impl std::future::Future<Output = DrainReport>) -> DrainReport {
    let report = bounded("the drain", drain).await;
    assert_eq!(report.outcome, DrainOutcome::Drained, "{report}");
    report
}

async fn connect_and_write(addr: SocketAddr, request: &str) -> TcpStream {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(request.as_bytes()).await.unwrap();
    stream
}

/// The value of header `name` in a raw response head, lower-cased.
fn header(response: &str, name: &str) -> Option<String> {
    let head = response.split("\r\n\r\n").next().unwrap_or_default();
    head.lines().skip(1).find_map(|line| {
        let (key, value) = line.split_once(':')?;
        key.eq_ignore_ascii_case(name)
            .then(|| value.trim().to_ascii_lowercase())
    })
}

/// True when the response's `Connection` header has the `close` token.
fn has_close_token(response: &str) -> bool {
    header(response, "connection")
        .is_some_and(|value| value.split(',').any(|token| token.trim() == "close"))
}

// === HTTP/1.0 ===

/// An HTTP/1.0 client asking for keep-alive is kept alive while serving, and a response
/// finished during the drain says `close` and closes the connection. (hyper may append
/// `keep-alive` to that header if it writes the response before the server's graceful close
/// has reached the connection: the layer does not keep the request's exact version.)
#[tokio::test]
async fn http1_0_keep_alive_response_during_the_drain_closes_the_connection() {
    let shutdown = Shutdown::new();
    let gate = Gate::new();
    let (addr, server) = start(shutdown, &gate).await;
    let request = |path: &str| format!("GET {path} HTTP/1.0\r\nconnection: keep-alive\r\n\r\n");

    let mut stream = connect_and_write(addr, &request("/")).await;
    let serving = read_response(&mut stream).await;
    assert!(serving.starts_with("HTTP/1.0 200 OK\r\n"), "{serving}");
    assert_eq!(
        header(&serving, "connection").as_deref(),
        Some("keep-alive")
    );

    stream.write_all(request("/held").as_bytes()).await.unwrap();
    gate.entered(1).await;
    let drain = shutdown.drain(BOUND).unwrap();
    gate.release(1);
    let during = read_to_eof(stream).await;
    assert!(during.starts_with("HTTP/1.0 200 OK\r\n"), "{during}");
    assert!(has_close_token(&during), "{during}");
    assert!(during.ends_with("\r\n\r\nhello world\n"), "{during}");

    assert_drained(drain).await;
    bounded("the server to return", server).await.unwrap();
}

/// An HTTP/1.0 keep-alive request refused while draining gets the 503 with
/// `Connection: close` (never `keep-alive`), and the connection closes.
#[tokio::test]
async fn http1_0_keep_alive_request_refused_while_draining_is_closed() {
    let shutdown = Shutdown::new();
    let addr = serve_without_graceful_close(shutdown).await;
    assert_drained(shutdown.drain(BOUND).unwrap()).await;

    let stream = connect_and_write(addr, "GET / HTTP/1.0\r\nconnection: keep-alive\r\n\r\n").await;
    let refused = read_to_eof(stream).await;
    assert!(refused.starts_with("HTTP/1.0 503 "), "{refused}");
    assert_eq!(
        header(&refused, "connection").as_deref(),
        Some("close"),
        "{refused}"
    );
    assert!(
        refused.ends_with("\r\n\r\nservice is shutting down\n"),
        "{refused}"
    );
}

// === HEAD, bodiless statuses, known lengths, trailers ===

/// A response of known length keeps it through the layer: `Content-Length`, not chunked, on
/// HTTP/1 (also while draining) and HTTP/2; an HTTP/1 `HEAD` gets the same length and no
/// body. (An HTTP/2 `HEAD` answered with a body is refused by hyper itself, layer or not:
/// the handler must leave the body out, as axum's router does.)
#[tokio::test]
async fn known_length_is_sent_as_content_length_and_head_gets_no_body() {
    let shutdown = Shutdown::new();
    let gate = Gate::new();
    let (addr, server) = start(shutdown, &gate).await;
    let length = HELLO.len().to_string();

    let mut stream = connect_and_write(addr, "GET / HTTP/1.1\r\nhost: x\r\n\r\n").await;
    let get = read_response(&mut stream).await;
    assert_eq!(
        header(&get, "content-length"),
        Some(length.clone()),
        "{get}"
    );
    assert_eq!(header(&get, "transfer-encoding"), None, "{get}");

    // A HEAD answered, then a GET on the same connection: the HEAD carried no body bytes,
    // or they would be read as the start of the next response.
    stream
        .write_all(b"HEAD / HTTP/1.1\r\nhost: x\r\n\r\nGET /204 HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
        .await
        .unwrap();
    let both = read_to_eof(stream).await;
    let (head, next) = both.split_once("\r\n\r\n").unwrap();
    assert!(head.starts_with("HTTP/1.1 200 OK"), "{both}");
    assert_eq!(
        header(head, "content-length"),
        Some(length.clone()),
        "{both}"
    );
    assert!(next.starts_with("HTTP/1.1 204 No Content\r\n"), "{both}");

    let response = over_http2(Method::GET, format!("http://{addr}/")).await;
    assert_eq!(response.headers()["content-length"], length.as_str());
    let body = bounded("its body", response.into_body().collect())
        .await
        .unwrap();
    assert_eq!(body.to_bytes(), HELLO);

    // While draining: a response passed through keeps its length, with `Connection: close`.
    let held = connect_and_write(addr, "GET /held HTTP/1.1\r\nhost: x\r\n\r\n").await;
    gate.entered(1).await;
    let drain = shutdown.drain(BOUND).unwrap();
    gate.release(1);
    let during = read_to_eof(held).await;
    assert!(has_connection_close(&during), "{during}");
    assert_eq!(header(&during, "content-length"), Some(length), "{during}");
    assert!(during.ends_with("\r\n\r\nhello world\n"), "{during}");

    // Every one of them ended its count: none leaked into the drain.
    let report = assert_drained(drain).await;
    assert_eq!(report.in_flight_at_start, 1);
    bounded("the server to return", server).await.unwrap();
}

/// Sends `HEAD /` over HTTP/1.1 to a server that is draining: the answer must be the 503's
/// head alone, with the `Content-Length` a `GET` gets, and the connection closed after it.
async fn assert_http1_head_refused_head_only(addr: SocketAddr) {
    let stream = connect_and_write(addr, "HEAD / HTTP/1.1\r\nhost: x\r\n\r\n").await;
    let refused = read_to_eof(stream).await;
    assert!(refused.starts_with("HTTP/1.1 503 "), "{refused}");
    assert!(has_connection_close(&refused), "{refused}");
    assert_eq!(header(&refused, "content-length").as_deref(), Some("25"));
    assert!(
        refused.ends_with("\r\n\r\n"),
        "a body after the head: {refused}"
    );
}

/// A `HEAD` refused while draining: the 503's head with its `Content-Length`, no body, and
/// the connection closed.
#[tokio::test]
async fn head_refused_while_draining_gets_the_503_head_only() {
    let shutdown = Shutdown::new();
    let addr = serve_without_graceful_close(shutdown).await;
    assert_drained(shutdown.drain(BOUND).unwrap()).await;

    assert_http1_head_refused_head_only(addr).await;
}

/// A `HEAD` refused while draining on plain hyper: the 503's head with its `Content-Length`
/// and no body, over HTTP/2 as over HTTP/1. hyper sends whatever body it is given on HTTP/2,
/// and the client resets a `HEAD` stream that carries data as malformed: it would never see
/// the 503.
#[tokio::test]
async fn head_refused_while_draining_on_hyper_gets_the_503_head_only_on_http1_and_http2() {
    let shutdown = Shutdown::new();
    let addr = serve_on_hyper_without_graceful_close(shutdown).await;
    assert_drained(shutdown.drain(BOUND).unwrap()).await;

    let response = over_http2(Method::HEAD, format!("http://{addr}/")).await;
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(response.headers()["content-length"], "25");
    assert_eq!(response.headers()["retry-after"], "1");
    let body = bounded("its body", response.into_body().collect())
        .await
        .expect("a clean end of stream, not a reset");
    assert!(body.to_bytes().is_empty());

    assert_http1_head_refused_head_only(addr).await;
    assert_eq!(shutdown.rejected(), 2);
}

/// `204` and `304` carry no body: their count ends, on HTTP/1 (keep-alive, the connection
/// reused after each) and HTTP/2.
#[tokio::test]
async fn bodiless_statuses_end_their_count() {
    let shutdown = Shutdown::new();
    let gate = Gate::new();
    let (addr, server) = start(shutdown, &gate).await;

    let mut stream = TcpStream::connect(addr).await.unwrap();
    for (path, status) in [
        ("/204", "204 No Content"),
        ("/304", "304 Not Modified"),
        ("/204", "204 No Content"),
    ] {
        let request = format!("GET {path} HTTP/1.1\r\nhost: x\r\n\r\n");
        stream.write_all(request.as_bytes()).await.unwrap();
        let response = read_response(&mut stream).await;
        assert!(
            response.starts_with(&format!("HTTP/1.1 {status}\r\n")),
            "{response}"
        );
        assert!(!has_connection_close(&response), "{response}");
    }
    // Done with it, as a client would be: an idle connection left open would keep the
    // server's lingering close waiting for it.
    drop(stream);
    let h2 = Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build_http::<http_body_util::Empty<Bytes>>();
    for path in ["/204", "/304"] {
        let request = Request::get(format!("http://{addr}{path}"))
            .body(http_body_util::Empty::new())
            .unwrap();
        let response = bounded("an HTTP/2 response", h2.request(request))
            .await
            .unwrap();
        assert!(response.status().as_u16() == 204 || response.status().as_u16() == 304);
        let body = bounded("its body", response.into_body().collect())
            .await
            .unwrap();
        assert!(body.to_bytes().is_empty());
    }

    assert_eq!(
        assert_drained(shutdown.drain(BOUND).unwrap())
            .await
            .in_flight_at_start,
        0
    );
    bounded("the server to return", server).await.unwrap();
}

/// HTTP/2 trailers pass through the layer's body untouched.
#[tokio::test]
async fn http2_trailers_pass_through() {
    let shutdown = Shutdown::new();
    let gate = Gate::new();
    let (addr, server) = start(shutdown, &gate).await;
    let response = over_http2(Method::GET, format!("http://{addr}/trailers")).await;
    let body = bounded("its body", response.into_body().collect())
        .await
        .unwrap();
    assert_eq!(body.trailers().expect("trailers")["x-checksum"], "42");
    assert_eq!(body.to_bytes(), HELLO);

    assert_drained(shutdown.drain(BOUND).unwrap()).await;
    bounded("the server to return", server).await.unwrap();
}

// === request bodies in flight ===

/// An upload with `Expect: 100-continue`, admitted before the drain, whose handler reads the
/// body only after the drain began: the drain waits for it, the server still says
/// `100 Continue`, takes the body and answers it whole, with `Connection: close`.
#[tokio::test]
async fn expect_continue_upload_admitted_before_the_drain_is_awaited_and_answered() {
    let shutdown = Shutdown::new();
    let gate = Gate::new();
    let (addr, server) = start(shutdown, &gate).await;

    let mut stream = connect_and_write(
        addr,
        "POST /upload HTTP/1.1\r\nhost: x\r\ncontent-length: 5\r\nexpect: 100-continue\r\n\r\n",
    )
    .await;
    gate.entered(1).await;
    let drain = tokio::spawn(shutdown.drain(BOUND).unwrap());
    bounded("closing", shutdown.closing()).await;
    assert_eq!(shutdown.in_flight(), 1, "the upload is counted");

    gate.release(1);
    let mut received = Vec::new();
    let continued = bounded(
        "100 Continue",
        read_until(&mut stream, &mut received, b"\r\n\r\n"),
    )
    .await;
    assert!(continued, "closed before 100 Continue");
    assert!(
        received.starts_with(b"HTTP/1.1 100 Continue\r\n\r\n"),
        "{:?}",
        String::from_utf8_lossy(&received)
    );
    assert!(
        !drain.is_finished(),
        "the drain did not wait for the upload"
    );
    stream.write_all(b"hello").await.unwrap();
    let rest = read_to_eof(stream).await;
    let response = String::from_utf8(received).unwrap() + &rest;
    let response = response
        .strip_prefix("HTTP/1.1 100 Continue\r\n\r\n")
        .unwrap();
    assert!(response.starts_with("HTTP/1.1 200 OK\r\n"), "{response}");
    assert!(has_connection_close(response), "{response}");
    assert!(response.ends_with("\r\n\r\n5"), "{response}");

    let report = bounded("the drain", drain).await.unwrap();
    assert_eq!(report.outcome, DrainOutcome::Drained, "{report}");
    assert_eq!(report.completed, 1);
    bounded("the server to return", server).await.unwrap();
}

/// An `Expect: 100-continue` upload refused while draining is answered 503 at once, before
/// any `100 Continue`: the client need not send its body. The connection then closes.
#[tokio::test]
async fn expect_continue_upload_refused_while_draining_gets_no_100_continue() {
    let shutdown = Shutdown::new();
    let addr = serve_without_graceful_close(shutdown).await;
    assert_drained(shutdown.drain(BOUND).unwrap()).await;

    let stream = connect_and_write(
        addr,
        "POST / HTTP/1.1\r\nhost: x\r\ncontent-length: 1000000\r\nexpect: 100-continue\r\n\r\n",
    )
    .await;
    let refused = read_to_eof(stream).await;
    assert!(refused.starts_with("HTTP/1.1 503 "), "{refused}");
    assert!(!refused.contains("100 Continue"), "{refused}");
    assert!(has_connection_close(&refused), "{refused}");
    assert_eq!(shutdown.rejected(), 1);
}

/// A streaming upload in flight when the drain begins, on HTTP/1 and on HTTP/2 (where the
/// server's GOAWAY arrives mid-upload): counted until its response ends, awaited by the
/// drain, and received whole.
#[tokio::test]
async fn upload_in_flight_when_the_drain_begins_is_received_whole() {
    for http2 in [false, true] {
        let shutdown = Shutdown::new();
        let gate = Gate::new();
        let (addr, server) = start(shutdown, &gate).await;
        let client = Client::builder(TokioExecutor::new())
            .http2_only(http2)
            .build_http::<UploadBody>();
        let (sender, body) = upload_body();
        let request = Request::post(format!("http://{addr}/stream-upload"))
            .body(body)
            .unwrap();
        let response = tokio::spawn(client.request(request));
        let chunk = Bytes::from(vec![b'x'; 64 * 1024]);
        sender.send(chunk.clone()).await.unwrap();
        // The handler has the first chunk: the upload is in flight.
        gate.entered(1).await;
        let drain = tokio::spawn(shutdown.drain(BOUND).unwrap());
        bounded("closing", shutdown.closing()).await;
        assert_eq!(shutdown.in_flight(), 1, "http2: {http2}");

        // Bounded: 16 chunks of 64 KiB, 1 MiB in all.
        for _ in 1..16 {
            bounded("a chunk to be taken", sender.send(chunk.clone()))
                .await
                .unwrap();
        }
        assert!(
            !drain.is_finished(),
            "the drain did not wait (http2: {http2})"
        );
        drop(sender);
        let response = bounded("the response", response).await.unwrap().unwrap();
        assert_eq!(response.status(), StatusCode::OK, "http2: {http2}");
        let body = bounded("its body", response.into_body().collect())
            .await
            .unwrap();
        assert_eq!(
            body.to_bytes(),
            (16 * 64 * 1024).to_string(),
            "http2: {http2}"
        );

        let report = bounded("the drain", drain).await.unwrap();
        assert_eq!(
            report.outcome,
            DrainOutcome::Drained,
            "http2: {http2}: {report}"
        );
        assert_eq!(report.completed, 1);
        bounded("the server to return", server).await.unwrap();
    }
}

type UploadBody = http_body_util::combinators::UnsyncBoxBody<Bytes, Infallible>;

/// A request body the test writes chunk by chunk; dropping the sender ends it.
fn upload_body() -> (tokio::sync::mpsc::Sender<Bytes>, UploadBody) {
    let (sender, receiver) = tokio::sync::mpsc::channel::<Bytes>(1);
    let chunks = futures_util::stream::unfold(receiver, |mut receiver| async move {
        let chunk = receiver.recv().await?;
        Some((Ok(Frame::data(chunk)), receiver))
    });
    (sender, StreamBody::new(chunks).boxed_unsync())
}

// === pipelining ===

/// Two pipelined HTTP/1.1 requests, the first in flight when the drain begins: the first is
/// answered whole with `Connection: close`, and the second is neither run, nor answered, nor
/// counted (a server that closes must not process later requests; the client resends them).
#[tokio::test]
async fn pipelined_request_behind_the_close_is_left_unprocessed() {
    let shutdown = Shutdown::new();
    let gate = Gate::new();
    let (addr, server) = start(shutdown, &gate).await;

    let stream = connect_and_write(
        addr,
        "GET /held HTTP/1.1\r\nhost: x\r\n\r\nGET /held HTTP/1.1\r\nhost: x\r\n\r\n",
    )
    .await;
    gate.entered(1).await;
    let drain = shutdown.drain(BOUND).unwrap();
    gate.release(1);
    let answered = read_to_eof(stream).await;
    assert!(answered.starts_with("HTTP/1.1 200 OK\r\n"), "{answered}");
    assert!(has_connection_close(&answered), "{answered}");
    assert!(
        answered.ends_with("\r\n\r\nhello world\n"),
        "one response only: {answered}"
    );

    let report = assert_drained(drain).await;
    assert_eq!((report.in_flight_at_start, report.completed), (1, 1));
    assert_eq!(report.rejected, 0, "the second request was processed");
    bounded("the server to return", server).await.unwrap();
}

/// A `HEAD` long-poll on a marked route whose handler ignores its signal is answered at the
/// long-lived deadline with the `503`'s head alone: over HTTP/2 a body sent to a `HEAD` is
/// malformed, and the client would reset the stream instead of reading the answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stubborn_head_long_poll_gets_the_503_head_only_over_http2() {
    let shutdown = Shutdown::new();
    shutdown.set_long_lived_grace(std::time::Duration::from_millis(50));
    let (entered_tx, mut entered) = tokio::sync::mpsc::channel::<()>(1);
    let stubborn = service_fn(move |_: Request<Incoming>| {
        let entered_tx = entered_tx.clone();
        async move {
            entered_tx.send(()).await.unwrap();
            std::future::pending::<Result<Response<Full<Bytes>>, Infallible>>().await
        }
    });
    let service = shutdown
        .layer()
        .layer(LongLivedLayer::route(shutdown).layer(stubborn));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(tower_drain::server::serve(listener, service, shutdown));

    let response = tokio::spawn(over_http2(Method::HEAD, format!("http://{addr}/poll")));
    bounded("the long-poll to start", entered.recv())
        .await
        .unwrap();

    let report = assert_drained(shutdown.drain(BOUND).unwrap()).await;
    assert_eq!(report.long_lived.len(), 1, "cut at its deadline: {report}");
    let response = bounded("the answer", response).await.unwrap();
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(response.headers()["content-length"], "47");
    let body = bounded("its body", response.into_body().collect())
        .await
        .expect("a clean end of stream, not a reset");
    assert!(body.to_bytes().is_empty());
    bounded("the server", server).await.unwrap();
}
