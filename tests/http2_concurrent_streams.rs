//! Many HTTP/2 streams on one connection across the drain's start, on
//! `tower_drain::server::serve`: every stream that reached the service is served whole (if
//! it was admitted) or refused by the layer (if it came late), and every other one fails
//! with the GOAWAY without having been processed.

mod support;

use std::convert::Infallible;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::{TcpListener, TcpStream};
use tower::{service_fn, Layer, Service};
use tower_drain::{DrainOutcome, Shutdown};

use support::bounded;
use support::gate::Gate;
use support::http::is_refused_by_goaway;

/// Streams in flight when the drain begins.
const HELD: usize = 16;
/// Streams opened at once at each step: as the drain begins, while it runs, and after the
/// client has the GOAWAY.
const WAVE: usize = 16;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_racing_the_drain_are_served_refused_by_the_layer_or_never_processed() {
    let shutdown = Shutdown::new();
    let gate = Gate::new();
    // Every stream the server's service sees, before the layer decides.
    let arrived = Arc::new(AtomicUsize::new(0));
    let handler = {
        let gate = gate.clone();
        service_fn(move |request: Request<Incoming>| {
            let gate = gate.clone();
            async move {
                if request.uri().path() == "/held" {
                    gate.pass().await;
                }
                Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"ok"))))
            }
        })
    };
    let layered = shutdown.layer().layer(handler);
    let service = {
        let arrived = arrived.clone();
        service_fn(move |request: Request<Incoming>| {
            arrived.fetch_add(1, Ordering::SeqCst);
            let mut layered = layered.clone();
            async move { layered.call(request).await }
        })
    };
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(tower_drain::server::serve(listener, service, shutdown));

    let tcp = TcpStream::connect(addr).await.unwrap();
    let (sender, connection) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tcp))
            .await
            .unwrap();
    let connection = tokio::spawn(connection);
    let send = |path: &'static str| {
        let mut sender = sender.clone();
        let request = Request::get(format!("http://{addr}{path}"))
            .body(Empty::<Bytes>::new())
            .unwrap();
        tokio::spawn(async move {
            let response = sender.send_request(request).await?;
            let status = response.status();
            let body = response.into_body().collect().await?.to_bytes();
            Ok::<_, hyper::Error>((status, body))
        })
    };
    let held: Vec<_> = (0..HELD).map(|_| send("/held")).collect();
    gate.entered(HELD).await;
    // Opened as the drain begins, racing it, then while it runs and the GOAWAY is on its
    // way, then once the client has it.
    let mut racing: Vec<_> = (0..WAVE).map(|_| send("/")).collect();
    let drain = shutdown.drain(Duration::from_secs(600)).unwrap();
    racing.extend((0..WAVE).map(|_| send("/")));
    // Bounded: the GOAWAY reaches the client within a few round trips. Until the client's
    // connection task has taken it in, a stream may already fail (refused) while the sender
    // still reads open, so the loop waits for the sender itself.
    for _ in 0..10_000 {
        let stream = send("/");
        let outcome = bounded("a stream during the drain", stream).await.unwrap();
        racing.push(tokio::spawn(async move { outcome }));
        if sender.is_closed() {
            break;
        }
    }
    assert!(sender.is_closed(), "the client never had the GOAWAY");
    racing.extend((0..WAVE).map(|_| send("/")));
    gate.release(HELD);

    for held in held {
        let (status, body) = bounded("a held stream", held).await.unwrap().unwrap();
        assert_eq!((status, &body[..]), (StatusCode::OK, &b"ok"[..]));
    }
    let racing_count = racing.len();
    let (mut served, mut refused, mut never_processed) = (0, 0, 0);
    for racing in racing {
        match bounded("a racing stream", racing).await.unwrap() {
            Ok((StatusCode::OK, body)) => {
                assert_eq!(&body[..], b"ok");
                served += 1;
            }
            Ok((StatusCode::SERVICE_UNAVAILABLE, body)) => {
                assert_eq!(&body[..], b"service is shutting down\n");
                refused += 1;
            }
            Ok((status, _)) => panic!("unexpected status {status}"),
            Err(error) => {
                assert!(
                    is_refused_by_goaway(&error),
                    "a processed stream failed: {error:?}"
                );
                never_processed += 1;
            }
        }
    }
    let report = bounded("the drain", drain).await;
    assert_eq!(report.outcome, DrainOutcome::Drained, "{report}");
    // Once in about twenty runs, h2's client reports one stream that the layer refused as
    // failed by the GOAWAY (`GoAway(NO_ERROR, Remote)`), as the connection closes: the
    // refusals the layer counted, and the streams that reached the service, may exceed what
    // the client read by the streams it saw fail, never by more. The report counts refusals
    // up to the outcome; the controller, all of them.
    let rejected = shutdown.rejected();
    assert!(
        (refused as u64..=(refused + never_processed) as u64).contains(&rejected),
        "{rejected} refusals counted, {refused} read, {never_processed} failed"
    );
    assert!(report.rejected <= rejected, "{report}");
    let arrived = arrived.load(Ordering::SeqCst);
    assert!(
        (HELD + served + refused..=HELD + served + refused + never_processed).contains(&arrived),
        "{arrived} streams reached the service \
         ({served} served, {refused} refused, {never_processed} never processed)"
    );
    assert_eq!(served + refused + never_processed, racing_count);
    assert!(
        never_processed >= WAVE,
        "the last wave was sent after the GOAWAY"
    );
    assert!(report.in_flight_at_start >= HELD, "{report}");
    assert_eq!(report.completed, report.in_flight_at_start, "{report}");
    bounded("the client connection", connection)
        .await
        .unwrap()
        .expect("a clean end after the GOAWAY");
    bounded("the server", server).await.unwrap();
}
