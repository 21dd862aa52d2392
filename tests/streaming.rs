//! Whole-response counting: a streaming response counts until its last chunk is sent.

mod support;

use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::routing::get;
use axum::Router;
use bytes::Bytes;
use futures_util::{stream, FutureExt};
use http_body_util::BodyExt;
use support::bounded;
use support::http::{http1_client, serve};
use tokio::sync::mpsc;
use tower_drain::{DrainOutcome, Shutdown};

/// A route whose body is whatever the test sends on the returned channel, ending when the
/// sender is dropped.
fn streaming_app(shutdown: &Shutdown) -> (Router, mpsc::Sender<Bytes>) {
    let (tx, rx) = mpsc::channel::<Bytes>(1);
    let rx = Arc::new(Mutex::new(Some(rx)));
    let app = Router::new()
        .route(
            "/stream",
            get(move || {
                let rx = rx.lock().unwrap().take().expect("one request");
                let chunks = stream::unfold(rx, |mut rx| async move {
                    let chunk = rx.recv().await?;
                    Some((Ok::<_, Infallible>(chunk), rx))
                });
                async move { Body::from_stream(chunks) }
            }),
        )
        .layer(shutdown.layer());
    (app, tx)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streaming_response_counts_until_its_last_chunk_and_drain_waits_for_it() {
    let shutdown = Shutdown::new();
    let (app, tx) = streaming_app(&shutdown);
    let (addr, _server) = serve(app).await;
    let client = http1_client();

    let uri = format!("http://{addr}/stream").parse().unwrap();
    let response = bounded("response head", client.get(uri)).await.unwrap();
    assert_eq!(response.status(), 200);
    let mut body = response.into_body();

    // The handler has returned, the headers are out, but the body is not: still counted.
    tx.send(Bytes::from_static(b"chunk 0\n")).await.unwrap();
    let frame = bounded("chunk 0", body.frame()).await.unwrap().unwrap();
    assert_eq!(frame.into_data().unwrap(), "chunk 0\n");
    assert_eq!(shutdown.in_flight(), 1);

    // Draining begins mid-stream; the drain must wait for the rest of the body.
    let mut drain = Box::pin(shutdown.drain(Duration::from_secs(60)).unwrap());
    assert!(
        drain.as_mut().now_or_never().is_none(),
        "drained mid-stream"
    );

    tx.send(Bytes::from_static(b"chunk 1\n")).await.unwrap();
    let frame = bounded("chunk 1", body.frame()).await.unwrap().unwrap();
    assert_eq!(frame.into_data().unwrap(), "chunk 1\n");
    assert_eq!(shutdown.in_flight(), 1);
    assert!(
        drain.as_mut().now_or_never().is_none(),
        "drained mid-stream"
    );

    // The last chunk: the stream ends, the client sees a clean end, the drain resolves.
    tx.send(Bytes::from_static(b"chunk 2\n")).await.unwrap();
    drop(tx);
    let rest = bounded("rest of body", body.collect()).await.unwrap();
    assert_eq!(rest.to_bytes(), "chunk 2\n");

    let report = bounded("drain", drain).await;
    assert_eq!(report.outcome, DrainOutcome::Drained);
    assert_eq!(report.in_flight_at_start, 1);
    assert_eq!(report.completed, 1);
    assert_eq!(report.still_running, 0);
    assert_eq!(shutdown.in_flight(), 0);
}
