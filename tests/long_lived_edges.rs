//! Long-lived responses at the edges of what a body can do: an answer of known length whose
//! bytes are all out when the long-lived deadline passes but whose end (its trailers) is not;
//! one that sent only an empty frame before that deadline.

mod support;

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use axum::body::Body;
use axum::routing::get;
use axum::Router;
use bytes::Bytes;
use http::{HeaderMap, HeaderValue};
use http_body::{Frame, SizeHint};
use http_body_util::{BodyExt, Full};
use support::http::{http1_client, http2_client, serve};
use support::{assert_only_the_watcher_was_cut, bounded, drain_past_the_long_lived_deadline};
use tokio::sync::{mpsc, oneshot};
use tower_drain::{DrainOutcome, LongLivedLayer, Shutdown};

const LONG: Duration = Duration::from_secs(60);

/// An answer of known length on a marked route, served over HTTP/2, whose bytes all went out
/// before the long-lived deadline and whose trailers come only after it: the client was sent
/// every byte it was told of, and the report does not list it as cut, so the stream must not
/// be reset at that deadline either. Over HTTP/1 the server stops at the announced length and
/// the question does not arise; over HTTP/2 it asks the body for its end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answer_whose_bytes_are_all_out_is_not_reset_at_the_long_lived_deadline() {
    let shutdown = Shutdown::new();
    shutdown.set_long_lived_grace(Duration::ZERO);
    // The handler hands the test the sender of its body's trailers.
    let (trailers_tx, mut trailers_rx) = mpsc::channel::<oneshot::Sender<HeaderMap>>(1);
    let download = move || {
        let trailers_tx = trailers_tx.clone();
        async move {
            let (send, trailers) = oneshot::channel();
            trailers_tx.send(send).await.unwrap();
            let body = Full::new(Bytes::from_static(b"hello"))
                .with_trailers(async move { Some(Ok(trailers.await.unwrap_or_default())) });
            Body::new(body)
        }
    };
    let app = Router::new()
        .route(
            "/download",
            get(download).layer(LongLivedLayer::route(shutdown)),
        )
        .layer(shutdown.layer());
    let (addr, _server) = serve(app).await;

    let client = http2_client();
    let uri: http::Uri = format!("http://{addr}/download").parse().unwrap();
    let response = bounded("the response", client.get(uri)).await.unwrap();
    assert_eq!(response.headers()["content-length"], "5");
    let mut body = response.into_body();
    let first = bounded("the data", body.frame()).await.unwrap().unwrap();
    assert_eq!(first.into_data().unwrap(), "hello");
    // The body now waits for its trailers.
    let trailers = bounded("the handler", trailers_rx.recv()).await.unwrap();
    assert_eq!(shutdown.long_lived(), 1);

    let drain = drain_past_the_long_lived_deadline(shutdown, LONG).await;
    // Past the long-lived deadline, the trailers come.
    let mut checksum = HeaderMap::new();
    checksum.insert("x-checksum", HeaderValue::from_static("42"));
    let _ = trailers.send(checksum);
    let rest = bounded("the rest of the body", body.collect()).await;
    let rest = rest.expect("a whole answer must not be reset");
    assert_eq!(rest.trailers().unwrap()["x-checksum"], "42");

    let report = bounded("the drain", drain).await.unwrap();
    assert_eq!(report.outcome, DrainOutcome::Drained, "{report}");
    assert_only_the_watcher_was_cut(&report);
    assert_eq!(shutdown.long_lived(), 0);
}

/// A body of known length (`hello`) that sends an empty frame, reports that it did, then
/// waits for `go` before sending its bytes.
struct EmptyFirst {
    step: u8,
    sent_empty: Option<oneshot::Sender<()>>,
    go: oneshot::Receiver<()>,
}

impl http_body::Body for EmptyFirst {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        match self.step {
            0 => {
                self.step = 1;
                Poll::Ready(Some(Ok(Frame::data(Bytes::new()))))
            }
            1 => {
                if let Some(sent_empty) = self.sent_empty.take() {
                    let _ = sent_empty.send(());
                }
                let _ = ready!(Pin::new(&mut self.go).poll(cx));
                self.step = 2;
                Poll::Ready(Some(Ok(Frame::data(Bytes::from_static(b"hello")))))
            }
            _ => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.step == 2
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(if self.step == 2 { 0 } else { 5 })
    }
}

/// An answer of known length on a marked route that had sent only an empty frame when the
/// long-lived deadline passed has sent nothing: like one that had not begun, it is sent
/// whole, not cut before its first byte with its `Content-Length` already told.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answer_that_sent_only_an_empty_frame_by_the_long_lived_deadline_is_sent_whole() {
    let shutdown = Shutdown::new();
    shutdown.set_long_lived_grace(Duration::ZERO);
    // The handler hands the test what it needs to see and drive its body.
    let (body_tx, mut body_rx) = mpsc::channel(1);
    let answer = move || {
        let body_tx = body_tx.clone();
        async move {
            let (sent_empty, sent_empty_rx) = oneshot::channel();
            let (go_tx, go) = oneshot::channel();
            body_tx.send((sent_empty_rx, go_tx)).await.unwrap();
            Body::new(EmptyFirst {
                step: 0,
                sent_empty: Some(sent_empty),
                go,
            })
        }
    };
    let app = Router::new()
        .route(
            "/answer",
            get(answer).layer(LongLivedLayer::route(shutdown)),
        )
        .layer(shutdown.layer());
    let (addr, _server) = serve(app).await;

    let client = http1_client();
    let uri: http::Uri = format!("http://{addr}/answer").parse().unwrap();
    let response = tokio::spawn(async move { client.get(uri).await });
    let (sent_empty, go) = bounded("the handler", body_rx.recv()).await.unwrap();
    bounded("the empty frame", sent_empty).await.unwrap();

    let drain = drain_past_the_long_lived_deadline(shutdown, LONG).await;
    let _ = go.send(());
    let response = bounded("the response", response).await.unwrap().unwrap();
    assert_eq!(response.headers()["content-length"], "5");
    let body = bounded("the body", response.into_body().collect()).await;
    let body = body.expect("an answer not begun by the deadline must not be cut");
    assert_eq!(body.to_bytes(), "hello");

    let report = bounded("the drain", drain).await.unwrap();
    assert_eq!(report.outcome, DrainOutcome::Drained, "{report}");
    assert_only_the_watcher_was_cut(&report);
    assert_eq!(shutdown.long_lived(), 0);
}
