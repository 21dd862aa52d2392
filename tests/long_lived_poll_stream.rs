//! Long-polls answer early on drain; streams on marked routes run until the long-lived
//! deadline and are then aborted and named in the report.

mod support;

use std::convert::Infallible;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{Method, StatusCode};
use axum::routing::get;
use axum::{Extension, Router};
use bytes::Bytes;
use futures_util::stream::{self, StreamExt};
use support::http::serve_until_closing;
use support::raw::{decode_chunked, read_to_close, read_until, split_head};
use support::sse::{open_event_stream, open_until};
use support::{assert_only_the_watcher_was_cut, BOUND};
use tokio::sync::mpsc;
use tokio::time::timeout;
use tower_drain::{DrainOutcome, DrainSignal, LongLivedKind, LongLivedLayer, OnDrain, Shutdown};

const LONG: Duration = Duration::from_secs(60);

/// Waits up to 60 s for something to report, or answers early once the drain begins.
async fn long_poll(
    State(entered): State<mpsc::Sender<()>>,
    Extension(signal): Extension<DrainSignal>,
) -> &'static str {
    entered.send(()).await.unwrap();
    tokio::select! {
        _ = signal => "draining\n",
        _ = tokio::time::sleep(LONG) => "timeout\n",
    }
}

/// `/poll` as a marked route under `marked`; the receiver hears each long-poll start.
fn long_poll_app(marked: LongLivedLayer) -> (Router, mpsc::Receiver<()>) {
    let (entered_tx, entered) = mpsc::channel(1);
    let app = Router::new().route("/poll", get(long_poll).with_state(entered_tx).layer(marked));
    (app, entered)
}

/// A short route: it must see no `DrainSignal` and no registration.
async fn short(State(shutdown): State<Shutdown>, request: Request) -> StatusCode {
    let untouched =
        request.extensions().get::<DrainSignal>().is_none() && shutdown.long_lived() == 0;
    if untouched {
        StatusCode::OK
    } else {
        StatusCode::INTERNAL_SERVER_ERROR
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_poll_answers_early_on_drain_and_short_requests_get_no_signal() {
    let shutdown = Shutdown::new();
    let (app, mut entered) = long_poll_app(LongLivedLayer::route(shutdown));
    let app = app
        .route("/", get(short).with_state(shutdown))
        .layer(shutdown.layer());
    let server = serve_until_closing(app, shutdown).await;

    let mut plain = open_event_stream(server.addr, "/").await;
    let mut raw = Vec::new();
    assert!(
        timeout(BOUND, read_until(&mut plain, &mut raw, b"\r\n\r\n"))
            .await
            .unwrap()
    );
    assert!(
        raw.starts_with(b"HTTP/1.1 200"),
        "short route saw no signal"
    );

    let mut client = open_event_stream(server.addr, "/poll").await;
    timeout(BOUND, entered.recv()).await.unwrap().unwrap();
    assert_eq!(shutdown.long_lived(), 1, "the long-poll is registered");

    let drain = shutdown.drain(LONG).unwrap();
    let mut raw = Vec::new();
    timeout(BOUND, read_to_close(&mut client, &mut raw))
        .await
        .unwrap();
    let (head, body) = split_head(&raw);
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert_eq!(
        body, b"draining\n",
        "ended by the drain, not by its 60 s wait"
    );

    let report = timeout(BOUND, drain).await.unwrap();
    assert_eq!(report.outcome, DrainOutcome::Drained);
    assert!(report.is_drained(), "nothing cut: {report}");
    assert_eq!(shutdown.long_lived(), 0);
    timeout(BOUND, server.task).await.unwrap().unwrap();
}

/// `chunk i\n` every 20 ms, for far longer than any test runs.
fn endless_chunks() -> Body {
    let chunks = stream::iter(0u64..100_000).then(|i| async move {
        tokio::time::sleep(Duration::from_millis(20)).await;
        Ok::<_, Infallible>(Bytes::from(format!("chunk {i}\n")))
    });
    Body::from_stream(chunks)
}

fn expected_prefix(data: &[u8]) -> bool {
    let text = String::from_utf8_lossy(data);
    let whole: String = (0..)
        .map(|i| format!("chunk {i}\n"))
        .take(text.len() / 8 + 2)
        .collect();
    whole.starts_with(&*text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_past_the_long_lived_deadline_is_aborted_and_reported() {
    let shutdown = Shutdown::new();
    let grace = Duration::from_millis(200);
    shutdown.set_long_lived_grace(grace);
    let app = Router::new()
        .route(
            "/stream",
            get(|| async { endless_chunks() }).layer(LongLivedLayer::route(shutdown)),
        )
        .layer(shutdown.layer());
    let server = serve_until_closing(app, shutdown).await;

    let reading = open_until(server.addr, "/stream", b"chunk 0\n").await;

    let drain = shutdown.drain(LONG).unwrap();
    let reader = tokio::spawn(reading.finish_raw());
    let report = timeout(BOUND, drain).await.unwrap();
    // The count reached zero long before the 60 s timeout: the abort released it.
    assert_eq!(report.outcome, DrainOutcome::Drained);
    assert!(!report.is_drained(), "a long-lived response was cut");
    assert_eq!(report.long_lived.len(), 1, "{report}");
    let entry = &report.long_lived[0];
    assert_eq!(entry.path.as_deref(), Some("/stream"));
    assert_eq!(entry.method, Some(Method::GET));
    assert_eq!(entry.kind, LongLivedKind::Stream);
    // Started before the drain, cut at drain start + grace.
    assert!(entry.age >= grace, "{entry}");
    assert_eq!(shutdown.long_lived(), 0);

    let raw = reader.await.unwrap();
    let (head, body) = split_head(&raw);
    assert!(head.contains("transfer-encoding: chunked"), "{head}");
    let decoded = decode_chunked(body);
    assert!(!decoded.terminated, "an aborted body has no clean end");
    assert!(decoded.chunks > 1, "it kept streaming after drain start");
    assert!(expected_prefix(&decoded.data));
    timeout(BOUND, server.task).await.unwrap().unwrap();
}

/// Marking a route names its stream in the report and cuts it at the long-lived deadline;
/// the same stream unmarked is counted like any request and runs on to the drain timeout.
/// The drain runs on Tokio's paused clock: the marked stream's cut must land between the two
/// deadlines, 400 ms apart on the real clock, a gap a loaded machine can stall through.
/// Paused, time moves only when every task waits, so the cut, woken by the first deadline,
/// always lands before the clock moves on to the second.
#[tokio::test]
async fn a_marked_stream_is_cut_at_the_long_lived_deadline_an_unmarked_one_at_the_drain_timeout() {
    let shutdown = Shutdown::new();
    shutdown.set_long_lived_grace(Duration::from_millis(100));
    let app = Router::new()
        .route(
            "/marked",
            get(|| async { endless_chunks() }).layer(LongLivedLayer::route(shutdown)),
        )
        .route("/plain", get(|| async { endless_chunks() }))
        .layer(shutdown.layer());
    let server = serve_until_closing(app, shutdown).await;
    let marked = open_until(server.addr, "/marked", b"chunk 0\n").await;
    let plain = open_until(server.addr, "/plain", b"chunk 0\n").await;

    tokio::time::pause();
    let drain = shutdown.drain(Duration::from_millis(500)).unwrap();
    let readers = (
        tokio::spawn(marked.finish_raw()),
        tokio::spawn(plain.finish_raw()),
    );
    let report = timeout(BOUND, drain).await.unwrap();
    // Still running at the drain timeout, which comes after the long-lived deadline.
    assert_eq!(report.outcome, DrainOutcome::TimedOut, "{report}");
    assert_eq!(report.still_running, 1, "{report}");
    assert_eq!(report.long_lived.len(), 1, "{report}");
    assert_eq!(report.long_lived[0].path.as_deref(), Some("/marked"));

    for reader in [readers.0, readers.1] {
        let raw = timeout(BOUND, reader).await.unwrap().unwrap();
        assert!(
            !decode_chunked(split_head(&raw).1).terminated,
            "a cut body ended cleanly"
        );
    }
    timeout(BOUND, server.task).await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn route_policy_finish_ends_a_stream_cleanly_at_drain_start() {
    let shutdown = Shutdown::new();
    let app = Router::new()
        .route(
            "/stream",
            get(|| async { endless_chunks() })
                .layer(LongLivedLayer::route(shutdown).on_drain(OnDrain::Finish)),
        )
        .layer(shutdown.layer());
    let server = serve_until_closing(app, shutdown).await;

    let reading = open_until(server.addr, "/stream", b"chunk 0\n").await;
    let report = timeout(BOUND, shutdown.drain(LONG).unwrap()).await.unwrap();
    assert!(report.is_drained(), "{report}");
    let decoded = reading.finish().await;
    assert!(decoded.terminated, "finished cleanly at a chunk boundary");
    assert!(expected_prefix(&decoded.data));
    assert!(decoded.data.ends_with(b"\n"), "only whole chunks");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sse_route_kept_until_deadline_is_aborted_there() {
    use axum::response::sse::{Event, Sse};
    let shutdown = Shutdown::new();
    shutdown.set_long_lived_grace(Duration::from_millis(100));
    let app = Router::new()
        .route(
            "/feed",
            get(|| async {
                let hello =
                    stream::once(async { Ok::<_, Infallible>(Event::default().data("hi")) });
                Sse::new(hello.chain(stream::pending()))
            })
            .layer(LongLivedLayer::route(shutdown).on_drain(OnDrain::KeepUntilDeadline)),
        )
        .layer(shutdown.layer());
    let server = serve_until_closing(app, shutdown).await;
    let reading = open_until(server.addr, "/feed", b"data: hi\n\n").await;
    let report = timeout(BOUND, shutdown.drain(LONG).unwrap()).await.unwrap();
    assert_eq!(report.long_lived.len(), 1, "{report}");
    assert_eq!(report.long_lived[0].kind, LongLivedKind::Sse);
    assert_eq!(report.long_lived[0].path.as_deref(), Some("/feed"));
    let decoded = reading.finish().await;
    assert!(!decoded.terminated);
    assert_eq!(
        decoded.data, b"data: hi\n\n",
        "no final event: it was not finished"
    );
}

/// A user rule: NDJSON watch streams are long-lived too.
fn ndjson_is_long_lived(
    _status: StatusCode,
    headers: &axum::http::HeaderMap,
) -> Option<LongLivedKind> {
    let ndjson = headers
        .get(axum::http::header::CONTENT_TYPE)
        .is_some_and(|value| value.as_bytes() == b"application/x-ndjson");
    ndjson.then_some(LongLivedKind::Stream)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn predicate_makes_a_stream_long_lived_without_marking_the_route() {
    let shutdown = Shutdown::new();
    shutdown.set_long_lived_grace(Duration::from_millis(100));
    let app = Router::new()
        .route(
            "/watch",
            get(|| async {
                let mut response = axum::response::Response::new(endless_chunks());
                response.headers_mut().insert(
                    axum::http::header::CONTENT_TYPE,
                    axum::http::HeaderValue::from_static("application/x-ndjson"),
                );
                response
            }),
        )
        .layer(shutdown.layer().long_lived_when(ndjson_is_long_lived));
    let server = serve_until_closing(app, shutdown).await;
    let reading = open_until(server.addr, "/watch", b"chunk 0\n").await;
    assert_eq!(shutdown.long_lived(), 1);
    let report = timeout(BOUND, shutdown.drain(LONG).unwrap()).await.unwrap();
    assert_eq!(report.long_lived.len(), 1, "{report}");
    assert_eq!(report.long_lived[0].kind, LongLivedKind::Stream);
    assert_eq!(report.long_lived[0].path, None, "unmarked: not named");
    assert!(!reading.finish().await.terminated);
}

/// A long-poll that ignores its signal and would wait the full 60 s.
async fn stubborn_poll(State(entered): State<mpsc::Sender<()>>) -> &'static str {
    entered.send(()).await.unwrap();
    tokio::time::sleep(LONG).await;
    "timeout\n"
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_poll_ignoring_the_signal_is_answered_503_at_the_long_lived_deadline() {
    let shutdown = Shutdown::new();
    let grace = Duration::from_millis(100);
    shutdown.set_long_lived_grace(grace);
    let (entered_tx, mut entered) = mpsc::channel(1);
    let app = Router::new()
        .route(
            "/stubborn",
            get(stubborn_poll)
                .with_state(entered_tx)
                .layer(LongLivedLayer::route(shutdown)),
        )
        .layer(shutdown.layer());
    let server = serve_until_closing(app, shutdown).await;
    let mut client = open_event_stream(server.addr, "/stubborn").await;
    timeout(BOUND, entered.recv()).await.unwrap().unwrap();

    let report = timeout(BOUND, shutdown.drain(LONG).unwrap()).await.unwrap();
    assert_eq!(report.outcome, DrainOutcome::Drained, "{report}");
    assert_eq!(report.long_lived.len(), 1, "{report}");
    let entry = &report.long_lived[0];
    assert_eq!(entry.kind, LongLivedKind::LongPoll);
    assert_eq!(entry.path.as_deref(), Some("/stubborn"));
    assert!(entry.age >= grace);

    let mut raw = Vec::new();
    timeout(BOUND, read_to_close(&mut client, &mut raw))
        .await
        .unwrap();
    let (head, _) = split_head(&raw);
    assert!(head.starts_with("HTTP/1.1 503"), "{head}");
    assert!(head.contains("retry-after: 1"), "{head}");
    timeout(BOUND, server.task).await.unwrap().unwrap();
}

/// A marked route's answer of known length is sent whole, whatever its `on_drain`: a
/// long-poll under `OnDrain::Finish` that answers its `DrainSignal` delivers that answer.
/// `Finish` ends a stream between frames; a body whose length is announced in
/// `Content-Length` has no boundary to end at short of its end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_poll_marked_finish_on_drain_still_delivers_its_answer() {
    let shutdown = Shutdown::new();
    let marked = LongLivedLayer::route(shutdown).on_drain(OnDrain::Finish);
    let (app, mut entered) = long_poll_app(marked);
    let app = app.layer(shutdown.layer());
    let server = serve_until_closing(app, shutdown).await;

    let mut client = open_event_stream(server.addr, "/poll").await;
    timeout(BOUND, entered.recv()).await.unwrap().unwrap();

    let drain = shutdown.drain(LONG).unwrap();
    let mut raw = Vec::new();
    timeout(BOUND, read_to_close(&mut client, &mut raw))
        .await
        .unwrap();
    assert!(
        raw.windows(4).any(|window| window == b"\r\n\r\n"),
        "the connection closed without a whole response: {:?}",
        String::from_utf8_lossy(&raw)
    );
    let (head, body) = split_head(&raw);
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(head.contains("content-length: 9"), "{head}");
    assert_eq!(
        body, b"draining\n",
        "the long-poll's answer was dropped: {head}"
    );

    let report = timeout(BOUND, drain).await.unwrap();
    assert!(report.is_drained(), "{report}");
    timeout(BOUND, server.task).await.unwrap().unwrap();
}

/// A long-lived body cut at the long-lived deadline gets `Aborted`, and its message does not
/// claim the drain deadline passed: the drain, an hour long, then ends `Drained`.
#[tokio::test(flavor = "current_thread")]
async fn a_stream_cut_at_the_long_lived_deadline_is_aborted_without_blaming_the_drain_deadline() {
    use tower::{Layer, Service, ServiceExt};

    let shutdown = Shutdown::new();
    // The long-lived deadline falls at drain start; the drain deadline an hour later.
    shutdown.set_long_lived_grace(Duration::ZERO);
    let inner = tower::service_fn(|_request: http::Request<()>| async {
        // A stream of unknown length that never ends.
        let body = http_body_util::StreamBody::new(stream::pending::<
            Result<http_body::Frame<Bytes>, Infallible>,
        >());
        Ok::<_, Infallible>(http::Response::new(body))
    });
    let mut service = shutdown
        .layer()
        .layer(LongLivedLayer::route(shutdown).layer(inner));
    let response = service
        .ready()
        .await
        .unwrap()
        .call(http::Request::get("/stream").body(()).unwrap())
        .await
        .unwrap();
    let mut body = response.into_body();

    let mut drain = Box::pin(shutdown.drain(Duration::from_secs(3600)).unwrap());
    // The drain's long-lived timer, due at once, cuts the stream while this waits for a frame.
    let frame = tokio::select! {
        frame = std::future::poll_fn(|cx| http_body::Body::poll_frame(std::pin::Pin::new(&mut body), cx)) => frame,
        _ = drain.as_mut() => panic!("the drain ended first"),
    };
    let error = match frame {
        Some(Err(error)) => error,
        other => panic!(
            "the stream was not cut: {:?}",
            other.map(|frame| frame.is_ok())
        ),
    };
    assert!(
        error.downcast_ref::<tower_drain::Aborted>().is_some(),
        "{error}"
    );
    assert!(
        !error.to_string().contains("drain deadline"),
        "cut at the long-lived deadline, but the error says: {error}"
    );
    drop(body);
    let report = drain.await;
    assert_eq!(report.outcome, DrainOutcome::Drained, "{report}");
}

/// A marked route whose handler answers as the long-lived deadline passes (it woke at the
/// deadline itself) has its answer delivered whole: cut before its first byte, the answer
/// would leave the client with a closed connection and no response at all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_poll_answering_as_the_long_lived_deadline_passes_is_answered_whole() {
    let (raw, report, shutdown) = answered_at_the_long_lived_deadline(|| "late answer\n").await;
    assert!(
        raw.windows(4).any(|window| window == b"\r\n\r\n"),
        "no response at all: {:?}",
        String::from_utf8_lossy(&raw)
    );
    let (head, body) = split_head(&raw);
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert_eq!(body, b"late answer\n");
    assert_eq!(report.outcome, DrainOutcome::Drained, "{report}");
    assert_only_the_watcher_was_cut(&report);
    assert_eq!(shutdown.long_lived(), 0);
}

/// Serves `answer` on a marked route whose handler makes it only once the long-lived deadline
/// has passed (it waits on that deadline itself), drains, and returns what an HTTP/1 client
/// read to the connection's close, the report, and the controller. The server has returned.
async fn answered_at_the_long_lived_deadline<R>(
    answer: fn() -> R,
) -> (Vec<u8>, tower_drain::DrainReport, Shutdown)
where
    R: axum::response::IntoResponse + Send + 'static,
{
    let shutdown = Shutdown::new();
    shutdown.set_long_lived_grace(Duration::from_millis(50));
    let (entered_tx, mut entered) = mpsc::channel(1);
    let late = move || {
        let entered = entered_tx.clone();
        async move {
            // Taken while serving: its deadline is the long-lived deadline.
            let watch = shutdown
                .long_lived_guard(LongLivedKind::Upgrade, Method::GET, "/watch")
                .unwrap();
            entered.send(()).await.unwrap();
            watch.deadline().await;
            answer()
        }
    };
    let app = Router::new()
        .route("/late", get(late).layer(LongLivedLayer::route(shutdown)))
        .layer(shutdown.layer());
    let server = serve_until_closing(app, shutdown).await;
    let mut client = open_event_stream(server.addr, "/late").await;
    timeout(BOUND, entered.recv()).await.unwrap().unwrap();

    let report = timeout(BOUND, shutdown.drain(LONG).unwrap()).await.unwrap();
    let mut raw = Vec::new();
    timeout(BOUND, read_to_close(&mut client, &mut raw))
        .await
        .unwrap();
    timeout(BOUND, server.task).await.unwrap().unwrap();
    (raw, report, shutdown)
}

/// A body of known length in two frames, the second made only once the first is taken.
struct TwoFrames {
    frames: Vec<Bytes>,
    length: u64,
}

impl TwoFrames {
    fn new(first: &'static [u8], second: &'static [u8]) -> Self {
        TwoFrames {
            frames: vec![Bytes::from_static(second), Bytes::from_static(first)],
            length: (first.len() + second.len()) as u64,
        }
    }
}

impl http_body::Body for TwoFrames {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, Infallible>>> {
        let frame = self.frames.pop();
        if let Some(data) = &frame {
            self.length -= data.len() as u64;
        }
        std::task::Poll::Ready(frame.map(|data| Ok(http_body::Frame::data(data))))
    }

    fn is_end_stream(&self) -> bool {
        self.frames.is_empty()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        http_body::SizeHint::with_exact(self.length)
    }
}

/// An answer of known length that begins only after the long-lived deadline is sent whole,
/// every frame of it, not cut after its first: the client was told its length.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answer_begun_after_the_long_lived_deadline_is_sent_whole_in_several_frames() {
    let (raw, report, shutdown) =
        answered_at_the_long_lived_deadline(|| Body::new(TwoFrames::new(b"first ", b"second\n")))
            .await;
    let (head, body) = split_head(&raw);
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(
        head.to_ascii_lowercase().contains("content-length: 13"),
        "{head}"
    );
    assert_eq!(body, b"first second\n");
    assert_eq!(report.outcome, DrainOutcome::Drained, "{report}");
    assert_only_the_watcher_was_cut(&report);
    assert_eq!(shutdown.long_lived(), 0);
}

/// An empty answer (a `204`) that comes as the long-lived deadline passes is whole before the
/// server looks at its body, which it never polls: it is not listed as cut.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_answer_at_the_long_lived_deadline_is_not_listed_as_cut() {
    let (raw, report, shutdown) =
        answered_at_the_long_lived_deadline(|| StatusCode::NO_CONTENT).await;
    let (head, body) = split_head(&raw);
    assert!(head.starts_with("HTTP/1.1 204"), "{head}");
    assert!(body.is_empty());
    assert_eq!(report.outcome, DrainOutcome::Drained, "{report}");
    assert_only_the_watcher_was_cut(&report);
    assert_eq!(shutdown.long_lived(), 0);
}
