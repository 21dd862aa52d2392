//! Server-sent events end cleanly on drain: a final event with a retry hint, the chunked
//! terminator, and never a cut event; the drain does not wait for its timeout.

mod support;

use std::convert::Infallible;
use std::time::Duration;

use axum::body::Body;
use axum::response::sse::{Event, Sse};
use axum::routing::get;
use axum::Router;
use bytes::Bytes;
use futures_util::stream::{self, Stream, StreamExt};
use http::header::CONTENT_TYPE;
use http::{Method, Request, Response};
use http_body_util::BodyExt;
use support::http::serve_until_closing;
use support::raw::{decode_chunked, split_head};
use support::sse::{open_until, parse_events, FINAL_EVENT};
use support::BOUND;
use tokio::sync::oneshot;
use tokio::time::timeout;
use tower::{Layer, Service, ServiceExt};
use tower_drain::{DrainOutcome, LongLivedKind, Shutdown};

const LONG: Duration = Duration::from_secs(60);

/// Events as fast as the connection takes them, each spread over three lines, so a drain
/// lands while frames are being produced; never ends on its own.
fn ticks() -> impl Stream<Item = Result<Event, Infallible>> {
    stream::unfold(0u64, |i| async move {
        tokio::task::yield_now().await;
        let event = Event::default()
            .event("tick")
            .data(format!("tick {i}\nsecond line of {i}"));
        Some((Ok(event), i + 1))
    })
}

fn app(shutdown: Shutdown) -> Router {
    Router::new()
        .route("/events", get(|| async { Sse::new(ticks()) }))
        .layer(shutdown.layer())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sse_stream_gets_final_event_and_clean_end_and_drain_does_not_wait_for_timeout() {
    let shutdown = Shutdown::new();
    let server = serve_until_closing(app(shutdown), shutdown).await;

    // Synchronise on the stream being live: the first complete event has arrived.
    let reading = open_until(server.addr, "/events", b"tick 0\n").await;
    assert_eq!(shutdown.long_lived(), 1, "the SSE response is tracked");

    let drain = shutdown.drain(LONG).unwrap();
    let reader = tokio::spawn(reading.finish_raw());
    let report = timeout(BOUND, drain).await.expect("drain resolved");
    assert_eq!(report.outcome, DrainOutcome::Drained);
    assert!(report.long_lived.is_empty(), "nothing was cut: {report}");
    assert_eq!(shutdown.long_lived(), 0);
    assert_eq!(shutdown.in_flight(), 0);

    let raw = reader.await.unwrap();
    let (head, body) = split_head(&raw);
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(head.contains("content-type: text/event-stream"), "{head}");
    assert!(head.contains("transfer-encoding: chunked"), "{head}");
    assert!(body.ends_with(b"0\r\n\r\n"), "clean chunked end");

    let decoded = decode_chunked(body);
    assert!(decoded.terminated);
    let (events, rest) = parse_events(&decoded.data);
    assert!(
        rest.is_empty(),
        "the stream ended inside an event: {rest:?}"
    );
    let (last, ticks) = events.split_last().unwrap();
    assert_eq!(last, FINAL_EVENT);
    assert!(!ticks.is_empty());
    for (i, event) in ticks.iter().enumerate() {
        assert_eq!(
            event,
            &format!("event: tick\ndata: tick {i}\ndata: second line of {i}"),
            "every event before the final one is whole and in order"
        );
    }
    timeout(BOUND, server.task).await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sse_final_event_is_configurable_and_can_be_left_out() {
    let shutdown = Shutdown::new();
    let custom = "event: bye\ndata: moving\nretry: 250\n\n";
    let app = Router::new()
        .route("/events", get(|| async { Sse::new(ticks()) }))
        .layer(shutdown.layer().final_event(Some(custom)));
    let server = serve_until_closing(app, shutdown).await;
    let quiet = Shutdown::new();
    let quiet_app = Router::new()
        .route("/events", get(|| async { Sse::new(ticks()) }))
        .layer(quiet.layer().final_event(None));
    let quiet_server = serve_until_closing(quiet_app, quiet).await;

    for (shutdown, addr, expected_last) in [
        (
            shutdown,
            server.addr,
            Some("event: bye\ndata: moving\nretry: 250"),
        ),
        (quiet, quiet_server.addr, None),
    ] {
        let reading = open_until(addr, "/events", b"tick 0\n").await;
        let report = timeout(BOUND, shutdown.drain(LONG).unwrap()).await.unwrap();
        assert_eq!(report.outcome, DrainOutcome::Drained);
        let decoded = reading.finish().await;
        assert!(decoded.terminated);
        let (events, rest) = parse_events(&decoded.data);
        assert!(rest.is_empty());
        let last = events.last().unwrap();
        match expected_last {
            Some(expected) => assert_eq!(last, expected),
            None => assert!(last.starts_with("event: tick\n"), "{last}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_sse_stream_is_woken_at_drain_start() {
    let shutdown = Shutdown::new();
    // One event, then nothing: the body is pending when the drain begins.
    let app = Router::new()
        .route(
            "/events",
            get(|| async {
                let hello =
                    stream::once(async { Ok::<_, Infallible>(Event::default().data("hi")) });
                Sse::new(hello.chain(stream::pending()))
            }),
        )
        .layer(shutdown.layer());
    let server = serve_until_closing(app, shutdown).await;
    let reading = open_until(server.addr, "/events", b"data: hi\n\n").await;

    let report = timeout(BOUND, shutdown.drain(LONG).unwrap()).await.unwrap();
    assert_eq!(report.outcome, DrainOutcome::Drained);
    let decoded = reading.finish().await;
    assert!(decoded.terminated);
    let (events, rest) = parse_events(&decoded.data);
    assert!(rest.is_empty());
    assert_eq!(events, ["data: hi", FINAL_EVENT]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nested_tracking_layers_register_one_entry_and_send_one_final_event() {
    let shutdown = Shutdown::new();
    let app = Router::new()
        .route("/events", get(|| async { Sse::new(ticks()) }))
        .layer(tower_drain::LongLivedLayer::new(shutdown))
        .layer(shutdown.layer());
    let server = serve_until_closing(app, shutdown).await;
    let reading = open_until(server.addr, "/events", b"tick 0\n").await;
    assert_eq!(shutdown.long_lived(), 1, "one entry for one response");
    let report = timeout(BOUND, shutdown.drain(LONG).unwrap()).await.unwrap();
    assert!(report.is_drained(), "{report}");
    let decoded = reading.finish().await;
    assert!(decoded.terminated);
    let (events, rest) = parse_events(&decoded.data);
    assert!(rest.is_empty());
    assert_eq!(
        events.iter().filter(|event| *event == FINAL_EVENT).count(),
        1
    );
    assert_eq!(events.last().unwrap(), FINAL_EVENT);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sse_over_http2_ends_with_final_event_and_end_of_stream() {
    use http_body_util::BodyExt;
    use hyper_util::rt::{TokioExecutor, TokioIo};

    let shutdown = Shutdown::new();
    let server = serve_until_closing(app(shutdown), shutdown).await;
    let tcp = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    let (mut sender, connection) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tcp))
            .await
            .unwrap();
    tokio::spawn(connection);
    let request = http::Request::get(format!("http://{}/events", server.addr))
        .body(http_body_util::Empty::<bytes::Bytes>::new())
        .unwrap();
    let response = timeout(BOUND, sender.send_request(request))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(response.version(), http::Version::HTTP_2);
    let mut body = response.into_body();
    let mut data = Vec::new();
    // Synchronise on the first event before draining.
    while !support::raw::contains(&data, b"\n\n") {
        let frame = timeout(BOUND, body.frame())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        data.extend_from_slice(&frame.into_data().unwrap());
    }
    let drain = shutdown.drain(LONG).unwrap();
    // Every frame up to a clean end of stream: an error here would mean a reset stream.
    for _ in 0..1_000_000 {
        match timeout(BOUND, body.frame()).await.unwrap() {
            Some(frame) => data.extend_from_slice(&frame.unwrap().into_data().unwrap()),
            None => break,
        }
    }
    assert!(http_body::Body::is_end_stream(&body));
    let report = timeout(BOUND, drain).await.unwrap();
    assert_eq!(report.outcome, DrainOutcome::Drained);
    let (events, rest) = parse_events(&data);
    assert!(rest.is_empty(), "the stream ended inside an event");
    assert_eq!(events.last().unwrap(), FINAL_EVENT);
}

/// An event stream whose first poll starts the drain and then finds nothing to send.
struct StartsDrainWhenPolled {
    shutdown: Shutdown,
}

impl http_body::Body for StartsDrainWhenPolled {
    type Data = bytes::Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<bytes::Bytes>, Infallible>>> {
        let _drain = self.shutdown.drain(Duration::from_secs(600)).unwrap();
        std::task::Poll::Pending
    }
}

#[tokio::test]
async fn sse_body_that_goes_idle_as_the_drain_begins_ends_in_the_same_poll() {
    use futures_util::FutureExt;
    use http_body_util::BodyExt;
    use tower::{Layer, ServiceExt};

    // The body reads "serving" before polling the stream, and finds it pending once the
    // drain has begun. What it then waits on must still be the drain's start (already
    // past, so ready at once), not the long-lived deadline five minutes away. A server
    // usually re-polls a body for its own reasons, which would hide the difference, so the
    // body is polled here directly.
    let shutdown = Shutdown::new();
    let service = shutdown
        .layer()
        .layer(tower::service_fn(move |_| async move {
            let response = http::Response::builder()
                .header(http::header::CONTENT_TYPE, "text/event-stream")
                .body(StartsDrainWhenPolled { shutdown })
                .unwrap();
            Ok::<_, Infallible>(response)
        }));
    let response = service.oneshot(http::Request::new(())).await.unwrap();
    assert_eq!(shutdown.long_lived(), 1, "the SSE response is tracked");
    let mut body = response.into_body();

    // One poll, no waiting: a body left waiting for the long-lived deadline would only end
    // when something polled it again.
    let frame = body
        .frame()
        .now_or_never()
        .expect("the final event comes in the poll that saw the drain begin")
        .unwrap()
        .unwrap();
    assert_eq!(
        frame.into_data().unwrap(),
        tower_drain::long_lived::DEFAULT_FINAL_EVENT.as_bytes()
    );
    assert!(timeout(BOUND, body.frame()).await.unwrap().is_none());
    let report = timeout(BOUND, shutdown.drain(LONG).unwrap()).await.unwrap();
    assert!(report.is_drained(), "{report}");
}

/// A request admitted before the drain whose handler answers with an event stream only after
/// the long-lived deadline: the stream is asked to finish and can, at once, being between
/// events: it ends with the final event alone, cleanly, so its client reconnects elsewhere,
/// rather than being cut before its first byte; it is not listed as cut.
#[tokio::test]
async fn event_stream_starting_after_the_long_lived_deadline_ends_with_its_final_event() {
    let shutdown = Shutdown::new();
    // The long-lived deadline falls as the drain starts; the drain itself has an hour.
    shutdown.set_long_lived_grace(Duration::ZERO);

    let (answer_tx, answer_rx) = oneshot::channel::<()>();
    let answer_rx = std::sync::Mutex::new(Some(answer_rx));
    let handler = tower::service_fn(move |_request: Request<Body>| {
        let answer = answer_rx.lock().unwrap().take().unwrap();
        async move {
            answer.await.unwrap();
            let events = stream::iter(std::iter::repeat_with(|| {
                Ok::<_, Infallible>(Bytes::from_static(b"data: tick\n\n"))
            }));
            Ok::<_, Infallible>(
                Response::builder()
                    .header(CONTENT_TYPE, "text/event-stream")
                    .body(Body::from_stream(events))
                    .unwrap(),
            )
        }
    });
    let mut service = shutdown.layer().layer(handler);

    // Admitted while serving: counted from here on.
    let call = service
        .ready()
        .await
        .unwrap()
        .call(Request::new(Body::empty()));
    let response = tokio::spawn(call);
    assert_eq!(shutdown.in_flight(), 1);

    // A guard only to see the long-lived deadline pass; it is listed in the report too.
    let watcher = shutdown
        .long_lived_guard(LongLivedKind::Upgrade, Method::GET, "/watch")
        .unwrap();
    let drain = tokio::spawn(shutdown.drain(LONG).unwrap());
    timeout(BOUND, watcher.deadline()).await.unwrap();
    drop(watcher);

    answer_tx.send(()).unwrap();
    let response = timeout(BOUND, response).await.unwrap().unwrap().unwrap();
    let mut body = response.into_body();
    let first = timeout(BOUND, body.frame())
        .await
        .unwrap()
        .expect("a first frame")
        .expect("not cut");
    assert_eq!(
        first.into_data().unwrap(),
        tower_drain::long_lived::DEFAULT_FINAL_EVENT.as_bytes()
    );
    assert!(timeout(BOUND, body.frame()).await.unwrap().is_none());
    drop(body);

    let report = timeout(BOUND, drain).await.unwrap().unwrap();
    assert_eq!(report.outcome, DrainOutcome::Drained, "{report}");
    let kinds: Vec<_> = report.long_lived.iter().map(|entry| entry.kind).collect();
    assert_eq!(kinds, [LongLivedKind::Upgrade], "{report}");
}

/// An event stream whose handler writes one event in two frames, and the drain begins
/// between them: the final event follows the whole event, never the half of one (a client
/// would read the two as one event, of the wrong type and with the wrong data).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn final_event_waits_for_an_event_split_over_frames_to_end() {
    // The handler is told nothing: it finishes its event when it gets to it.
    let (data, report) =
        stream_with_drain_between(&["data: one\n\n", "data: tw"], b"data: tw", &["o\n\n"]).await;
    assert!(report.is_drained(), "{report}");
    let (events, rest) = parse_events(&data);
    assert!(rest.is_empty(), "ended inside an event: {rest:?}");
    assert_eq!(events, ["data: one", "data: two", FINAL_EVENT]);
}

/// Serves `before` as frames of an event stream, begins the drain once the client has read
/// `seen`, then sends `after`; returns what the client read and the drain's report.
async fn stream_with_drain_between(
    before: &[&'static str],
    seen: &[u8],
    after: &[&'static str],
) -> (Vec<u8>, tower_drain::DrainReport) {
    let shutdown = Shutdown::new();
    // Past the bound: a stream that is not finished at drain start hangs the test.
    shutdown.set_long_lived_grace(LONG);
    let (frames_tx, frames_rx) = tokio::sync::mpsc::unbounded_channel::<&'static str>();
    let frames_rx = std::sync::Arc::new(std::sync::Mutex::new(Some(frames_rx)));
    let app = Router::new()
        .route(
            "/events",
            get(move || {
                let frames = frames_rx.lock().unwrap().take().unwrap();
                async move {
                    let frames = stream::unfold(frames, |mut frames| async move {
                        let frame = frames.recv().await?;
                        Some((
                            Ok::<_, Infallible>(Bytes::from_static(frame.as_bytes())),
                            frames,
                        ))
                    });
                    Response::builder()
                        .header(CONTENT_TYPE, "text/event-stream")
                        .body(Body::from_stream(frames))
                        .unwrap()
                }
            }),
        )
        .layer(shutdown.layer());
    let server = serve_until_closing(app, shutdown).await;
    for frame in before {
        frames_tx.send(frame).unwrap();
    }
    let reading = open_until(server.addr, "/events", seen).await;
    let drain = shutdown.drain(LONG).unwrap();
    for frame in after {
        frames_tx.send(frame).unwrap();
    }
    let report = support::bounded("the drain", drain).await;
    let decoded = reading.finish().await;
    assert!(decoded.terminated, "a clean end");
    (decoded.data, report)
}

/// An event whose last line ends in CR in one frame and whose LF (the same line end) and
/// empty line come in the next: the final event follows the empty line, not the CR.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn final_event_waits_for_a_crlf_split_over_frames() {
    let (data, report) =
        stream_with_drain_between(&["data: one\r"], b"data: one\r", &["\n", "\r\n"]).await;
    assert!(report.is_drained(), "{report}");
    let expected = format!("data: one\r\n\r\n{FINAL_EVENT}\n\n");
    assert_eq!(String::from_utf8_lossy(&data), expected);
}

/// An event ended by a lone CR line end and a CR empty line is whole: the final event
/// follows at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn final_event_follows_an_event_ended_by_cr_alone() {
    let (data, report) = stream_with_drain_between(&["data: one\r\r"], b"data: one\r\r", &[]).await;
    assert!(report.is_drained(), "{report}");
    let expected = format!("data: one\r\r{FINAL_EVENT}\n\n");
    assert_eq!(String::from_utf8_lossy(&data), expected);
}

/// A comment line on its own after a whole event (a keep-alive written as `:\n`, without a
/// blank line) leaves nothing pending: a client ignores comments, so the final event follows
/// at once rather than at the long-lived deadline.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn final_event_follows_a_keep_alive_comment_without_a_blank_line() {
    let (data, report) =
        stream_with_drain_between(&["data: one\n\n", ":keep-alive\n"], b":keep-alive\n", &[]).await;
    assert!(report.is_drained(), "{report}");
    let expected = format!("data: one\n\n:keep-alive\n{FINAL_EVENT}\n\n");
    assert_eq!(String::from_utf8_lossy(&data), expected);
}

/// A stream that opens with a padding comment (as the `EventSource` polyfills ask for, with
/// CRLF here) and then waits for its first event finishes at once, too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn final_event_follows_an_opening_comment_line() {
    let (data, report) = stream_with_drain_between(&[":padding\r\n"], b":padding\r\n", &[]).await;
    assert!(report.is_drained(), "{report}");
    let expected = format!(":padding\r\n{FINAL_EVENT}\n\n");
    assert_eq!(String::from_utf8_lossy(&data), expected);
}

/// A comment inside an event does not end it: the body still goes on to the event's blank
/// line before the final event.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn final_event_waits_for_an_event_with_a_comment_inside_to_end() {
    let (data, report) =
        stream_with_drain_between(&["data: one\n:note\n"], b":note\n", &["data: two\n\n"]).await;
    assert!(report.is_drained(), "{report}");
    let (events, rest) = parse_events(&data);
    assert!(rest.is_empty(), "ended inside an event: {rest:?}");
    assert_eq!(events, ["data: one\n:note\ndata: two", FINAL_EVENT]);
}

/// A byte order mark sent on its own at the start of the stream is not part of any line
/// (clients drop it): the final event follows it at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn final_event_follows_a_byte_order_mark_sent_alone() {
    let (data, report) = stream_with_drain_between(&["\u{FEFF}"], "\u{FEFF}".as_bytes(), &[]).await;
    assert!(report.is_drained(), "{report}");
    let expected = format!("\u{FEFF}{FINAL_EVENT}\n\n");
    assert_eq!(String::from_utf8_lossy(&data), expected);
}
