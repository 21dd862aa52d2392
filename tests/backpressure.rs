//! The crate's layers stacked with tower's backpressure: a concurrency limit, a buffer and a
//! load shedder, inside and outside `shutdown.layer()`, on a real hyper server. A request is
//! counted at `call`, never at `poll_ready`; one that arrives while draining is answered
//! `503` at once, even when the service inside the layer has no room for it.

mod support;

use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tower::buffer::BufferLayer;
use tower::limit::ConcurrencyLimitLayer;
use tower::util::BoxCloneSyncService;
use tower::{service_fn, Layer, ServiceExt};
use tower_drain::{DrainOutcome, Shutdown};

use support::bounded;
use support::gate::Gate;
use support::http::serve_on_hyper;
use support::pending::ReportsPending;
use support::raw::{has_connection_close, raw_get, read_response, split_head, write_get};

type BoxError = Box<dyn std::error::Error + Send + Sync>;
type Handler = BoxCloneSyncService<Request<Incoming>, Response<Full<Bytes>>, BoxError>;

const LONG: Duration = Duration::from_secs(600);

/// `/held` waits at `gate`, then answers `done`; anything else answers `ok`.
fn handler(gate: Gate) -> Handler {
    BoxCloneSyncService::new(service_fn(move |request: Request<Incoming>| {
        let gate = gate.clone();
        async move {
            if request.uri().path() == "/held" {
                gate.pass().await;
                return Ok::<_, BoxError>(Response::new(Full::from("done")));
            }
            Ok(Response::new(Full::from("ok")))
        }
    }))
}

/// A service inside the layer that has no room while `/held` runs: the layer must still
/// turn a late request away at once, rather than make it wait for room it will never use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Inside {
    /// tower's `ConcurrencyLimitLayer` of one, taken by `/held`.
    ConcurrencyLimit,
    /// tower's `BufferLayer` of one slot over a concurrency limit of one: `/held` has the
    /// limit, and a second request admitted before the drain waits in the buffer's slot.
    Buffer,
}

impl Inside {
    /// The stack inside the layer; `called` hears of each request the layer passes on.
    fn around(self, handler: Handler, called: mpsc::UnboundedSender<()>) -> Handler {
        let limited = ConcurrencyLimitLayer::new(1).layer(handler);
        let inner = match self {
            Inside::ConcurrencyLimit => BoxCloneSyncService::new(limited),
            Inside::Buffer => BoxCloneSyncService::new(BufferLayer::new(1).layer(limited)),
        };
        BoxCloneSyncService::new(inner.map_request(move |request| {
            let _ = called.send(());
            request
        }))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_arriving_while_draining_is_refused_at_once_when_the_inner_service_is_full() {
    for inside in [Inside::ConcurrencyLimit, Inside::Buffer] {
        let shutdown = Shutdown::new();
        let gate = Gate::new();
        let (called, mut passed_on) = mpsc::unbounded_channel();
        let service = shutdown
            .layer()
            .layer(inside.around(handler(gate.clone()), called));
        let addr = serve_on_hyper(service).await;

        let mut admitted = vec![tokio::spawn(raw_get(addr, "/held", usize::MAX))];
        gate.entered(1).await;
        if inside == Inside::Buffer {
            admitted.push(tokio::spawn(raw_get(addr, "/held", usize::MAX)));
            bounded("the second request", passed_on.recv()).await;
            bounded("the second request", passed_on.recv()).await;
        }
        let admitted_count = admitted.len();
        assert_eq!(shutdown.in_flight(), admitted_count, "{inside:?}");
        let drain = tokio::spawn(shutdown.drain(LONG).unwrap());
        bounded("closing", shutdown.closing()).await;

        // The requests admitted before the drain still hold the inner service's room: the
        // late one is answered without it, while they are still running.
        let refused = bounded("the late request's answer", raw_get(addr, "/", usize::MAX)).await;
        let (head, body) = split_head(&refused);
        assert!(head.starts_with("HTTP/1.1 503 "), "{inside:?}: {head}");
        assert!(has_connection_close(&head), "{inside:?}: {head}");
        assert_eq!(body, b"service is shutting down\n", "{inside:?}");
        assert_eq!(shutdown.rejected(), 1, "{inside:?}");
        assert!(
            admitted.iter().all(|held| !held.is_finished()),
            "{inside:?}: answered only after the admitted requests"
        );

        gate.release(admitted_count);
        for held in admitted {
            let held = bounded("an admitted request", held).await.unwrap();
            let (head, body) = split_head(&held);
            assert!(head.starts_with("HTTP/1.1 200 "), "{inside:?}: {head}");
            assert_eq!(body, b"done", "{inside:?}");
        }
        let report = bounded("the drain", drain).await.unwrap();
        assert_eq!(
            report.outcome,
            DrainOutcome::Drained,
            "{inside:?}: {report}"
        );
        assert_eq!(
            (report.in_flight_at_start, report.completed, report.rejected),
            (admitted_count, admitted_count, 1),
            "{inside:?}: {report}"
        );
    }
}

/// A probe on a bypassed path while draining, with no room inside the layer: the layer was
/// ready without the inner service (see above), which must then not be called (tower's
/// concurrency limit panics if it is). The probe is refused like a late request; a probe
/// on a fresh connection once there is room passes through again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probe_while_draining_with_the_inner_service_full_is_refused_not_passed_to_it() {
    let shutdown = Shutdown::new();
    let gate = Gate::new();
    let (called, _passed_on) = mpsc::unbounded_channel();
    let service = shutdown
        .layer()
        .bypass(&["/livez"])
        .layer(Inside::ConcurrencyLimit.around(handler(gate.clone()), called));
    let addr = serve_on_hyper(service).await;

    let held = tokio::spawn(raw_get(addr, "/held", usize::MAX));
    gate.entered(1).await;
    let drain = tokio::spawn(shutdown.drain(LONG).unwrap());
    bounded("closing", shutdown.closing()).await;

    let probe = bounded("the probe's answer", raw_get(addr, "/livez", usize::MAX)).await;
    let (head, _) = split_head(&probe);
    assert!(head.starts_with("HTTP/1.1 503 "), "{head}");
    assert_eq!(shutdown.rejected(), 1, "refused like a late request");
    assert!(!held.is_finished());

    gate.release(1);
    let held = bounded("/held", held).await.unwrap();
    let (head, body) = split_head(&held);
    assert!(head.starts_with("HTTP/1.1 200 "), "{head}");
    assert_eq!(body, b"done");
    let report = bounded("the drain", drain).await.unwrap();
    assert_eq!(report.outcome, DrainOutcome::Drained, "{report}");
    assert_eq!((report.completed, report.rejected), (1, 1), "{report}");

    // Kept alive, as a probe passed through is: read the one response.
    let mut stream = TcpStream::connect(addr).await.unwrap();
    write_get(&mut stream, "/livez").await;
    let probe = read_response(&mut stream).await;
    assert!(probe.starts_with("HTTP/1.1 200 "), "{probe}");
    assert!(probe.ends_with("\r\n\r\nok"), "{probe}");
}

/// A `BufferLayer` outside the layer, its worker waiting for room inside: a request queued
/// in the buffer when the drain begins has not reached the layer, so it is not counted, and
/// the drain does not wait for it; once the layer gets it, it is refused with a 503, counted
/// as rejected, never lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_queued_in_a_buffer_outside_the_layer_when_the_drain_begins_is_refused() {
    let shutdown = Shutdown::new();
    let gate = Gate::new();
    let (queued_tx, mut queued) = mpsc::unbounded_channel();
    let limited = ConcurrencyLimitLayer::new(1).layer(handler(gate.clone()));
    let buffered = BufferLayer::new(4).layer(shutdown.layer().layer(limited));
    let service = buffered.map_request(move |request: Request<Incoming>| {
        let _ = queued_tx.send(());
        request
    });
    let addr = serve_on_hyper(service).await;

    let held = tokio::spawn(raw_get(addr, "/held", usize::MAX));
    gate.entered(1).await;
    bounded("/held to be queued", queued.recv()).await;
    let late = tokio::spawn(raw_get(addr, "/", usize::MAX));
    bounded("the second request to be queued", queued.recv()).await;
    assert_eq!(shutdown.in_flight(), 1, "only /held reached the layer");

    let drain = tokio::spawn(shutdown.drain(LONG).unwrap());
    bounded("closing", shutdown.closing()).await;
    gate.release(1);
    let held = bounded("/held", held).await.unwrap();
    let (head, body) = split_head(&held);
    assert!(head.starts_with("HTTP/1.1 200 "), "{head}");
    assert_eq!(body, b"done");
    let late = bounded("the queued request", late).await.unwrap();
    let (head, body) = split_head(&late);
    assert!(head.starts_with("HTTP/1.1 503 "), "{head}");
    assert_eq!(body, b"service is shutting down\n");

    let report = bounded("the drain", drain).await.unwrap();
    assert_eq!(report.outcome, DrainOutcome::Drained, "{report}");
    assert_eq!(report.in_flight_at_start, 1, "{report}");
    assert_eq!(shutdown.rejected(), 1);
}

/// tower's `LoadShedLayer` outside the layer, a concurrency limit inside it: while serving,
/// a request with no room is shed (an error, which hyper answers by closing the
/// connection); while draining, the layer is ready, so a late request gets the layer's 503
/// with `Retry-After`, which tells its client to go elsewhere, instead of being shed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn load_shedder_outside_the_layer_lets_late_requests_get_the_503() {
    let shutdown = Shutdown::new();
    let gate = Gate::new();
    let (called, _passed_on) = mpsc::unbounded_channel();
    let inner = Inside::ConcurrencyLimit.around(handler(gate.clone()), called);
    let service = tower::load_shed::LoadShedLayer::new().layer(shutdown.layer().layer(inner));
    let addr = serve_on_hyper(service).await;

    let held = tokio::spawn(raw_get(addr, "/held", usize::MAX));
    gate.entered(1).await;
    let shed = bounded("a request shed", raw_get(addr, "/", usize::MAX)).await;
    assert!(shed.is_empty(), "shed: closed without an answer: {shed:?}");

    let drain = tokio::spawn(shutdown.drain(LONG).unwrap());
    bounded("closing", shutdown.closing()).await;
    let refused = bounded("the late request's answer", raw_get(addr, "/", usize::MAX)).await;
    let (head, body) = split_head(&refused);
    assert!(head.starts_with("HTTP/1.1 503 "), "{head}");
    assert!(
        head.to_ascii_lowercase().contains("\r\nretry-after: 1"),
        "{head}"
    );
    assert_eq!(body, b"service is shutting down\n");
    assert_eq!(shutdown.rejected(), 1);

    gate.release(1);
    let held = bounded("/held", held).await.unwrap();
    assert!(split_head(&held).0.starts_with("HTTP/1.1 200 "));
    let report = bounded("the drain", drain).await.unwrap();
    assert_eq!(report.outcome, DrainOutcome::Drained, "{report}");
}

/// A request already waiting for room inside the layer when the drain begins, on
/// `tower_drain::server::serve`: it was never counted, so the drain does not wait for it,
/// and it is refused when it is next polled. Over HTTP/1 that is at the drain's start: the
/// server's graceful shutdown wakes each connection, which polls its request again. An
/// HTTP/2 stream runs on a task of its own, which nothing wakes then: it is refused once
/// there is room.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_waiting_for_room_when_the_drain_begins_is_refused_uncounted() {
    for http2 in [false, true] {
        let shutdown = Shutdown::new();
        let gate = Gate::new();
        let (pending, mut waited) = mpsc::unbounded_channel();
        let inner = ReportsPending {
            inner: ConcurrencyLimitLayer::new(1).layer(handler(gate.clone())),
            pending,
        };
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(tower_drain::server::serve(
            listener,
            shutdown.layer().layer(inner),
            shutdown,
        ));
        let client = Client::builder(TokioExecutor::new())
            .http2_only(http2)
            .build_http::<Empty<Bytes>>();
        let get = |path: &str| client.get(format!("http://{addr}{path}").parse().unwrap());
        let held = tokio::spawn(get("/held"));
        gate.entered(1).await;
        let late = tokio::spawn(get("/"));
        bounded("the late request to wait for room", waited.recv()).await;
        assert_eq!(shutdown.in_flight(), 1, "http2: {http2}: not counted");

        let drain = tokio::spawn(shutdown.drain(LONG).unwrap());
        if !http2 {
            // Refused while `/held` still has the room.
            let late = bounded("the refusal", late).await.unwrap().unwrap();
            assert_eq!(late.status(), StatusCode::SERVICE_UNAVAILABLE);
            gate.release(1);
        } else {
            gate.release(1);
            let late = bounded("the refusal", late).await.unwrap().unwrap();
            assert_eq!(late.status(), StatusCode::SERVICE_UNAVAILABLE);
        }
        let held = bounded("/held", held).await.unwrap().unwrap();
        assert_eq!(held.status(), StatusCode::OK, "http2: {http2}");
        bounded("its body", held.into_body().collect())
            .await
            .unwrap();
        let report = bounded("the drain", drain).await.unwrap();
        assert_eq!(report.outcome, DrainOutcome::Drained, "{report}");
        assert_eq!(report.in_flight_at_start, 1, "http2: {http2}: {report}");
        assert_eq!(shutdown.rejected(), 1, "http2: {http2}");
        drop(client);
        bounded("the server", server).await.unwrap();
    }
}
