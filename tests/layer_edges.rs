//! Edges of the layers' settings: the split layers stacked, huge `retry_after`, the SSE
//! media type and final event (a custom one without its blank line, a compressed stream), and
//! the headers of the layers' own answers on HTTP/2. Driven at the service level: no server,
//! no sleeps.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures_util::FutureExt;
use http::{Request, Response};
use http_body::{Body, Frame, SizeHint};
use http_body_util::{BodyExt, Empty};
use tower::{Service, ServiceBuilder, ServiceExt};
use tower_drain::{InFlightLayer, RejectWhenDrainingLayer, Shutdown};

type BoxFut<T> = Pin<Box<dyn Future<Output = T> + Send>>;

/// A service in the middle of a stack that starts the drain when a request passes through it:
/// the interleaving "the outer layer saw Serving, then the drain began" made deterministic.
#[derive(Clone)]
struct DrainHere<S> {
    inner: S,
    shutdown: Shutdown,
}

impl<S, B> Service<Request<B>> for DrainHere<S>
where
    S: Service<Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }
    fn call(&mut self, request: Request<B>) -> S::Future {
        drop(self.shutdown.drain(Duration::from_secs(60)).unwrap());
        self.inner.call(request)
    }
}

/// A handler that never answers, and records that it ran.
fn stalled_handler(
    ran: Arc<AtomicBool>,
) -> impl Service<Request<Empty<Bytes>>, Response = Response<Empty<Bytes>>, Error = Infallible> + Clone
{
    tower::service_fn(move |_req: Request<Empty<Bytes>>| {
        ran.store(true, Ordering::SeqCst);
        Box::pin(std::future::pending()) as BoxFut<_>
    })
}

/// The split layers in the documented order (`InFlightLayer` outside): a request the counting
/// layer admits just before the drain begins is then rejected by the inner layer, never run
/// uncounted. The drain begins in a service between the two, so the order is exact.
#[tokio::test]
async fn split_layers_stacked_in_flight_outside_never_run_a_request_uncounted() {
    let shutdown = Shutdown::new();
    let ran = Arc::new(AtomicBool::new(false));
    let mut svc = ServiceBuilder::new()
        .layer(InFlightLayer::new(shutdown))
        .layer_fn(|inner| DrainHere { inner, shutdown })
        .layer(RejectWhenDrainingLayer::new(shutdown))
        .service(stalled_handler(ran.clone()));
    let svc = svc.ready().await.unwrap();
    // A rejection is answered at the first poll; a request run instead waits in the stalled
    // handler for ever.
    let response = svc
        .call(Request::new(Empty::new()))
        .now_or_never()
        .expect("the request ran instead of being rejected")
        .unwrap();
    assert_eq!(response.status(), 503);
    assert!(!ran.load(Ordering::SeqCst));
}

/// `retry_after(Duration::MAX)` saturates: rounding it up to whole seconds must neither panic
/// nor wrap to `Retry-After: 0`, "retry at once".
#[tokio::test]
async fn retry_after_huge_value_saturates_instead_of_overflowing() {
    let shutdown = Shutdown::new();
    let layer = std::panic::catch_unwind(|| shutdown.layer().retry_after(Duration::MAX));
    let layer = layer.expect("retry_after(Duration::MAX) must not panic");
    let mut svc = ServiceBuilder::new()
        .layer(layer)
        .service(stalled_handler(Arc::default()));
    drop(shutdown.drain(Duration::from_secs(1)).unwrap());
    let response = bounded(svc.ready().await.unwrap().call(Request::new(Empty::new())))
        .await
        .unwrap();
    assert_eq!(response.status(), 503);
    assert_ne!(response.headers()["retry-after"], "0");
}

/// An SSE body of unknown length: one given chunk, then pending forever.
struct OneThenPending(Option<Bytes>);

impl Body for OneThenPending {
    type Data = Bytes;
    type Error = Infallible;
    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        match self.0.take() {
            Some(chunk) => Poll::Ready(Some(Ok(Frame::data(chunk)))),
            None => Poll::Pending,
        }
    }
    fn size_hint(&self) -> SizeHint {
        SizeHint::default()
    }
}

/// Collects the data frames the body yields until it ends or would wait.
fn frames_now<B: Body<Data = Bytes> + Unpin>(body: &mut B) -> (Vec<Bytes>, bool)
where
    B::Error: std::fmt::Debug,
{
    let mut frames = Vec::new();
    loop {
        match body.frame().now_or_never() {
            Some(Some(frame)) => frames.push(frame.unwrap().into_data().unwrap()),
            Some(None) => return (frames, true),
            None => return (frames, false),
        }
    }
}

/// One request through `layer` to an event stream (with `encoding` as its
/// `Content-Encoding`, if any) that sends `first` and then waits.
async fn event_stream(
    layer: tower_drain::ShutdownLayer,
    encoding: Option<&'static str>,
    first: Bytes,
) -> Response<impl Body<Data = Bytes, Error: std::fmt::Debug> + Unpin> {
    streamed(layer, "text/event-stream", encoding, first).await
}

/// One request through `layer` to a body of unknown length, of `content_type` (and
/// `encoding` as its `Content-Encoding`, if any), that sends `first` and then waits.
async fn streamed(
    layer: tower_drain::ShutdownLayer,
    content_type: &'static str,
    encoding: Option<&'static str>,
    first: Bytes,
) -> Response<impl Body<Data = Bytes, Error: std::fmt::Debug> + Unpin> {
    let mut svc = ServiceBuilder::new()
        .layer(layer)
        .service(tower::service_fn(move |_req: Request<Empty<Bytes>>| {
            let mut response = Response::builder().header("content-type", content_type);
            if let Some(encoding) = encoding {
                response = response.header("content-encoding", encoding);
            }
            let response = response.body(OneThenPending(Some(first.clone()))).unwrap();
            async move { Ok::<_, Infallible>(response) }
        }));
    svc.ready()
        .await
        .unwrap()
        .call(Request::new(Empty::new()))
        .await
        .unwrap()
}

/// A compressed event stream (`Content-Encoding: gzip`, e.g. tower-http's compression with
/// a predicate that allows SSE) gets no plain-text final event: appended to the gzip stream,
/// it would only corrupt it. Its bytes say nothing about where its events end, so it ends on
/// drain between frames: a stream read as plain events would wait instead for the blank line
/// that the gzip bytes so far do not end with, and send the final event after it.
#[tokio::test]
async fn sse_with_content_encoding_gets_no_plain_text_final_event() {
    let shutdown = Shutdown::new();
    // The first bytes of a gzip member (magic, deflate, no flags): what a compressor has
    // flushed so far.
    let gzip_head = Bytes::from_static(&[0x1f, 0x8b, 0x08, 0x00, 0, 0, 0, 0, 0x00, 0xff]);
    let response = event_stream(shutdown.layer(), Some("gzip"), gzip_head).await;
    let mut body = response.into_body();
    let (first, _) = frames_now(&mut body);
    assert_eq!(first.len(), 1);
    let _drain = shutdown.drain(Duration::from_secs(60)).unwrap();
    let (after, ended) = frames_now(&mut body);
    for frame in &after {
        assert!(
            !frame.starts_with(b"event: shutdown"),
            "plain-text final event appended to a gzip stream: {frame:?}"
        );
    }
    assert!(
        ended,
        "the compressed stream did not end between frames on drain"
    );
}

/// What an event stream under `shutdown.layer()` with the custom `final_event` sends once the
/// drain begins, after a first event `first`; the stream must end there.
async fn final_bytes(final_event: &'static str, first: &'static [u8]) -> Vec<u8> {
    let shutdown = Shutdown::new();
    let layer = shutdown.layer().final_event(Some(final_event));
    let response = event_stream(layer, None, Bytes::from_static(first)).await;
    let mut body = response.into_body();
    let _ = frames_now(&mut body);
    let _drain = shutdown.drain(Duration::from_secs(60)).unwrap();
    let (after, ended) = frames_now(&mut body);
    assert!(ended, "the stream ends after its final event");
    after.concat()
}

/// A custom final event without its blank line is sent as a whole event: SSE clients discard
/// an event not ended by a blank line when the stream ends.
#[tokio::test]
async fn sse_custom_final_event_is_sent_as_a_whole_event() {
    let tail = final_bytes("event: bye\ndata: x\n", b"data: 1\n\n").await;
    assert!(
        tail.ends_with(b"\n\n"),
        "final bytes: {:?}",
        String::from_utf8_lossy(&tail)
    );
}

/// Server-sent events are recognised by their media type, `text/event-stream`, compared
/// whole and case-insensitively, with or without parameters; another media type that merely
/// begins with the same letters is an ordinary stream: not long-lived, not ended on drain.
#[tokio::test]
async fn sse_is_recognised_by_its_exact_media_type() {
    let cases = [
        ("text/event-stream", true),
        ("Text/Event-Stream", true),
        ("TEXT/EVENT-STREAM", true),
        ("text/event-stream; charset=utf-8", true),
        ("text/event-stream;charset=utf-8", true),
        ("text/event-stream ; charset=utf-8", true),
        ("text/event-streaming", false),
        ("text/event-stream-v2", false),
        ("text/event-streamx; charset=utf-8", false),
        ("text/event-stream+json", false),
    ];
    for (content_type, sse) in cases {
        let shutdown = Shutdown::new();
        let first = Bytes::from_static(b"data: 1\n\n");
        let response = streamed(shutdown.layer(), content_type, None, first).await;
        let mut body = response.into_body();
        let _ = frames_now(&mut body);
        assert_eq!(
            shutdown.long_lived(),
            usize::from(sse),
            "{content_type:?} tracked as server-sent events: {}",
            !sse
        );
        let _drain = shutdown.drain(Duration::from_secs(60)).unwrap();
        let (_, ended) = frames_now(&mut body);
        assert_eq!(ended, sse, "{content_type:?} ended on drain");
    }
}

/// The header fields HTTP/2 forbids (RFC 9113, 8.2.2): a response carrying one is malformed.
const CONNECTION_SPECIFIC: [&str; 5] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "transfer-encoding",
    "upgrade",
];

fn http2_request(content_type: Option<&str>) -> Request<Empty<Bytes>> {
    let mut request = Request::builder().version(http::Version::HTTP_2);
    if let Some(content_type) = content_type {
        request = request.header("content-type", content_type);
    }
    request.body(Empty::new()).unwrap()
}

fn assert_no_connection_specific_headers<B>(response: &Response<B>, what: &str) {
    for name in CONNECTION_SPECIFIC {
        assert!(
            !response.headers().contains_key(name),
            "{what}: {name} on an HTTP/2 answer: {:?}",
            response.headers()
        );
    }
}

/// Every answer the layers make themselves to an HTTP/2 request, the 503, gRPC's and
/// gRPC-web's UNAVAILABLE, the 503 at the drain deadline and the one at the long-lived
/// deadline, carries no connection-specific header. (hyper strips them, so this is checked
/// on the service, where a server that does not strip them would see them.)
#[tokio::test]
async fn answers_on_http2_carry_no_connection_specific_headers() {
    // Refused once draining.
    let shutdown = Shutdown::new();
    let mut svc = ServiceBuilder::new()
        .layer(shutdown.layer())
        .service(stalled_handler(Arc::default()));
    drop(shutdown.drain(Duration::from_secs(60)).unwrap());
    for content_type in [
        None,
        Some("application/grpc"),
        Some("application/grpc-web-text"),
    ] {
        let response = bounded(svc.ready().await.unwrap().call(http2_request(content_type)))
            .await
            .unwrap();
        assert_no_connection_specific_headers(&response, &format!("refused {content_type:?}"));
    }

    // Still running at the drain deadline.
    let shutdown = Shutdown::new();
    let mut svc = ServiceBuilder::new()
        .layer(shutdown.layer())
        .service(stalled_handler(Arc::default()));
    let mut running = std::pin::pin!(svc.ready().await.unwrap().call(http2_request(None)));
    assert!(running.as_mut().now_or_never().is_none());
    let report = bounded(shutdown.drain(Duration::ZERO).unwrap()).await;
    assert_eq!(report.still_running, 1);
    let response = bounded(running).await.unwrap();
    assert_eq!(response.status(), 503);
    assert_no_connection_specific_headers(&response, "aborted at the drain deadline");

    // A marked route still waiting at the long-lived deadline.
    let shutdown = Shutdown::new();
    shutdown.set_long_lived_grace(Duration::ZERO);
    let mut svc = ServiceBuilder::new()
        .layer(shutdown.layer())
        .layer(tower_drain::LongLivedLayer::route(shutdown))
        .service(stalled_handler(Arc::default()));
    let mut waiting = std::pin::pin!(svc.ready().await.unwrap().call(http2_request(None)));
    assert!(waiting.as_mut().now_or_never().is_none());
    tokio::spawn(shutdown.drain(Duration::from_secs(60)).unwrap());
    let response = bounded(waiting).await.unwrap();
    assert_eq!(response.status(), 503);
    assert_no_connection_specific_headers(&response, "cut at the long-lived deadline");
}

/// A wait bounded so that a hang fails the test.
async fn bounded<F: Future>(future: F) -> F::Output {
    tokio::time::timeout(Duration::from_secs(30), future)
        .await
        .expect("hung")
}

/// True when `stream` ends with an empty line by the event-stream rules, where a line ends
/// with CRLF, LF or CR alone, and a CR followed by LF is one line end, not two: only then
/// does a client dispatch the last event before the stream's end.
fn ends_with_blank_line(stream: &[u8]) -> bool {
    let mut lines = Vec::new();
    let (mut start, mut i) = (0, 0);
    while i < stream.len() {
        match stream[i] {
            b'\r' => {
                lines.push(&stream[start..i]);
                if stream.get(i + 1) == Some(&b'\n') {
                    i += 1;
                }
                start = i + 1;
            }
            b'\n' => {
                lines.push(&stream[start..i]);
                start = i + 1;
            }
            _ => {}
        }
        i += 1;
    }
    start == stream.len() && lines.last().is_some_and(|line| line.is_empty())
}

/// A custom final event written with CR line ends, as the event-stream format allows, and
/// without its blank line: completed so that it ends with one. A LF added after its last CR
/// would only turn that CR into a CRLF, one line end, and leave the event undispatched.
#[tokio::test]
async fn sse_custom_final_event_with_cr_line_ends_is_sent_as_a_whole_event() {
    let tail = final_bytes("event: bye\rdata: x\r", b"data: 1\r\r").await;
    assert!(
        tail.starts_with(b"event: bye\rdata: x\r") && ends_with_blank_line(&tail),
        "final bytes: {:?}",
        String::from_utf8_lossy(&tail)
    );
}

/// An event stream is finished on drain only between events, whichever line ends it uses;
/// one left inside an event (a handler that wrote part of one) gets neither the final event
/// nor an end, goes on waiting for its inner body, and is aborted when shutdown is cut short.
#[tokio::test]
async fn sse_is_finished_on_drain_only_between_events() {
    let cases: [(&[u8], bool); 10] = [
        (b"data: 1\n\n", true),
        (b"data: 1\r\n\r\n", true),
        (b"data: 1\r\r", true),
        (b"data: 1\n\r\n", true),
        (b": keep-alive\n\n", true),
        (b"data: 1\n", false),
        (b"data: 1\r\n", false),
        (b"data: 1\r", false),
        (b"data: 1", false),
        (b"data: 1\n\ndata: 2\n", false),
    ];
    for (first, between) in cases {
        let shown = String::from_utf8_lossy(first);
        let shutdown = Shutdown::new();
        let response = event_stream(shutdown.layer(), None, Bytes::from_static(first)).await;
        let mut body = response.into_body();
        let (sent, _) = frames_now(&mut body);
        assert_eq!(sent, [first]);
        let _drain = shutdown.drain(Duration::from_secs(60)).unwrap();
        if between {
            let (after, ended) = frames_now(&mut body);
            assert!(ended, "{shown:?}: not ended on drain");
            assert_eq!(
                after.concat(),
                tower_drain::long_lived::DEFAULT_FINAL_EVENT.as_bytes()
            );
            continue;
        }
        assert!(
            body.frame().now_or_never().is_none(),
            "{shown:?}: finished inside an event"
        );
        assert_eq!(shutdown.long_lived(), 1);
        assert!(shutdown.force(), "{shown:?}: the stream still runs");
        let frame = body.frame().now_or_never().expect("aborted at once");
        let error = frame.unwrap().expect_err("an abort, not data");
        // The helper's body hides its error type; `Aborted` shows in its debug form.
        assert_eq!(format!("{error:?}"), "Aborted", "{shown:?}");
        assert_eq!(shutdown.long_lived(), 0);
        assert_eq!(shutdown.in_flight(), 0);
    }
}
