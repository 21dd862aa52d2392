//! Readiness and liveness probes through real servers: axum and plain hyper.

mod support;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::routing::get;
use axum::Router;
use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Empty};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, Semaphore};
use tower::{service_fn, Service, ServiceExt};
use tower_drain::{DrainOutcome, Phase, Shutdown, ShutdownSequence};

use support::bounded;
use support::http::{
    get as get_response, http1_client, http2_client, serve, serve_on_hyper, HttpClient,
};

async fn get_text(client: &HttpClient, addr: SocketAddr, path: &str) -> (StatusCode, String) {
    let (status, _, body) = get_response(client, addr, path).await;
    (status, String::from_utf8(body.to_vec()).unwrap())
}

fn app(shutdown: Shutdown) -> Router {
    Router::new()
        .route("/", get(|| async { "ok\n" }))
        .route_service("/readyz", shutdown.readiness())
        .route_service("/livez", shutdown.liveness())
        .layer(shutdown.layer().bypass(&["/readyz", "/livez"]))
}

#[tokio::test]
async fn readiness_fails_at_the_signal_while_requests_are_still_served() {
    let shutdown = Shutdown::new();
    let (addr, _server) = serve(app(shutdown)).await;
    let client = http1_client();
    // A lame-duck delay far longer than the test: it ends by being forced.
    let sequence = ShutdownSequence::builder(shutdown)
        .lame_duck(Duration::from_secs(600))
        .drain_timeout(Duration::from_secs(5))
        .budget(Duration::from_secs(3600))
        .no_signals()
        .build()
        .unwrap();
    let trigger = sequence.trigger();
    let run = tokio::spawn(sequence.run());

    assert_eq!(
        get_text(&client, addr, "/readyz").await,
        (StatusCode::OK, "ready\n".into())
    );
    assert_eq!(
        get_text(&client, addr, "/livez").await,
        (StatusCode::OK, "alive\n".into())
    );

    trigger.fire();
    bounded("lame duck begins", shutdown.shutting_down()).await;

    assert_eq!(
        get_text(&client, addr, "/readyz").await,
        (StatusCode::SERVICE_UNAVAILABLE, "shutting down\n".into())
    );
    assert_eq!(
        get_text(&client, addr, "/").await,
        (StatusCode::OK, "ok\n".into())
    );
    assert_eq!(
        get_text(&client, addr, "/livez").await,
        (StatusCode::OK, "alive\n".into())
    );
    assert_eq!(
        shutdown.phase(),
        Phase::LameDuck,
        "still in the lame-duck delay"
    );

    trigger.fire(); // forces: the rest of the delay is skipped
    let report = bounded("sequence ends", run).await.unwrap();
    assert_eq!(report.forced_by, Some("manual trigger"));
    assert_eq!(report.drain.outcome, DrainOutcome::Drained);

    // Draining: new requests are refused, liveness still green, readiness still down.
    let (status, body) = get_text(&client, addr, "/").await;
    assert_eq!(
        (status, body.as_str()),
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "service is shutting down\n"
        )
    );
    assert_eq!(
        get_text(&client, addr, "/livez").await,
        (StatusCode::OK, "alive\n".into())
    );
    assert_eq!(
        get_text(&client, addr, "/readyz").await.0,
        StatusCode::SERVICE_UNAVAILABLE
    );
}

/// A route whose handler signals `entered` and then waits for a permit on `gate`.
fn gated<S>(
    inner: S,
    entered: mpsc::UnboundedSender<&'static str>,
    gate: Arc<Semaphore>,
    name: &'static str,
) -> impl tower::Service<
    Request<axum::body::Body>,
    Response = axum::response::Response,
    Error = Infallible,
    Future = impl Send,
> + Clone
       + Send
       + Sync
       + 'static
where
    S: tower::Service<Request<axum::body::Body>, Error = Infallible>
        + Clone
        + Send
        + Sync
        + 'static,
    S::Response: axum::response::IntoResponse,
    S::Future: Send,
{
    service_fn(move |request: Request<axum::body::Body>| {
        let (inner, entered, gate) = (inner.clone(), entered.clone(), gate.clone());
        async move {
            entered.send(name).unwrap();
            gate.acquire().await.unwrap().forget();
            let response = inner.oneshot(request).await?;
            Ok::<_, Infallible>(axum::response::IntoResponse::into_response(response))
        }
    })
}

#[tokio::test]
async fn probes_are_never_counted_nor_rejected() {
    let shutdown = Shutdown::new();
    let (entered_tx, mut entered) = mpsc::unbounded_channel();
    let gate = Arc::new(Semaphore::new(0));
    let ok = service_fn(|_: Request<axum::body::Body>| async { Ok::<_, Infallible>("ok\n") });
    let app = Router::new()
        .route_service("/work", gated(ok, entered_tx.clone(), gate.clone(), "work"))
        .route_service(
            "/readyz",
            gated(
                shutdown.readiness(),
                entered_tx.clone(),
                gate.clone(),
                "readyz",
            ),
        )
        .route_service("/livez", shutdown.liveness())
        .layer(shutdown.layer().bypass(&["/readyz", "/livez"]));
    let (addr, _server) = serve(app).await;
    let client = http1_client();

    // Control: an ordinary request in progress is counted.
    let work = tokio::spawn({
        let client = client.clone();
        async move { get_text(&client, addr, "/work").await }
    });
    assert_eq!(
        bounded("the handler to start", entered.recv()).await,
        Some("work")
    );
    assert_eq!(shutdown.in_flight(), 1);
    gate.add_permits(1);
    assert_eq!(bounded("work", work).await.unwrap().0, StatusCode::OK);
    assert_eq!(shutdown.in_flight(), 0);

    // A probe in progress is not.
    let probe = tokio::spawn({
        let client = client.clone();
        async move { get_text(&client, addr, "/readyz").await }
    });
    assert_eq!(
        bounded("the handler to start", entered.recv()).await,
        Some("readyz")
    );
    assert_eq!(
        shutdown.in_flight(),
        0,
        "a probe in progress must not be counted"
    );

    // So it does not hold the drain up: the drain ends while the probe is still waiting.
    let report = bounded(
        "drain is not held by a probe",
        shutdown.drain(Duration::from_secs(60)).unwrap(),
    )
    .await;
    assert_eq!(report.outcome, DrainOutcome::Drained);
    assert_eq!(report.in_flight_at_start, 0);

    // And it is answered by the probe while draining, not by the rejection.
    gate.add_permits(1);
    assert_eq!(
        bounded("probe", probe).await.unwrap(),
        (StatusCode::SERVICE_UNAVAILABLE, "shutting down\n".into())
    );
    assert_eq!(
        get_text(&client, addr, "/livez").await,
        (StatusCode::OK, "alive\n".into())
    );
    assert_eq!(shutdown.rejected(), 0, "probes are never rejected");

    // Control: an ordinary request now is rejected, and counted as such.
    let (status, body) = get_text(&client, addr, "/work").await;
    assert_eq!(
        (status, body.as_str()),
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "service is shutting down\n"
        )
    );
    assert_eq!(shutdown.rejected(), 1);
}

/// Serves the readiness probe alone on plain hyper (no axum), one connection per request.
async fn serve_readiness_on_hyper(shutdown: Shutdown) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            let service = TowerToHyperService::new(shutdown.readiness());
            tokio::spawn(
                hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service),
            );
        }
    });
    addr
}

#[tokio::test]
async fn readiness_is_held_at_start_up_and_flipped_by_hand_on_plain_hyper() {
    let shutdown = Shutdown::new().hold_until_ready();
    let addr = serve_readiness_on_hyper(shutdown).await;
    let client = http1_client();
    let readiness = || get_text(&client, addr, "/readyz");

    assert_eq!(
        readiness().await,
        (StatusCode::SERVICE_UNAVAILABLE, "starting\n".into())
    );
    shutdown.mark_ready();
    assert_eq!(readiness().await, (StatusCode::OK, "ready\n".into()));

    shutdown.set_maintenance(true);
    assert_eq!(
        readiness().await,
        (StatusCode::SERVICE_UNAVAILABLE, "maintenance\n".into())
    );
    assert!(!shutdown.is_ready());
    shutdown.set_maintenance(false);
    assert_eq!(readiness().await, (StatusCode::OK, "ready\n".into()));

    // Once shutdown has begun, ending maintenance does not bring readiness back.
    shutdown.set_maintenance(true);
    assert!(shutdown.begin_lame_duck());
    shutdown.set_maintenance(false);
    assert_eq!(
        readiness().await,
        (StatusCode::SERVICE_UNAVAILABLE, "shutting down\n".into())
    );
}

/// Serves both probes on plain hyper (no axum, whose router leaves `HEAD` bodies out itself),
/// speaking HTTP/1 or HTTP/2 as the client does: `/livez` is liveness, anything else readiness.
async fn serve_probes_on_hyper(shutdown: Shutdown) -> SocketAddr {
    let probes = service_fn(move |request: Request<Incoming>| {
        if request.uri().path() == "/livez" {
            shutdown.liveness().call(request)
        } else {
            shutdown.readiness().call(request)
        }
    });
    serve_on_hyper(probes).await
}

/// `HEAD` on a probe, over HTTP/1 and HTTP/2: the status and `Content-Length` a `GET` gets,
/// and no body. hyper sends whatever body a service gives it on HTTP/2, and the client resets
/// a `HEAD` stream that carries data as malformed, so a body there hides the answer.
#[tokio::test]
async fn head_on_a_probe_gets_its_head_without_a_body() {
    let shutdown = Shutdown::new();
    let addr = serve_probes_on_hyper(shutdown).await;
    let head = |client: HttpClient, path: &'static str| async move {
        let request = Request::head(format!("http://{addr}{path}"))
            .body(Empty::<Bytes>::new())
            .unwrap();
        let response = bounded("a HEAD response", client.request(request))
            .await
            .unwrap();
        let (parts, body) = response.into_parts();
        let body = bounded("its body", body.collect())
            .await
            .unwrap_or_else(|error| panic!("HEAD {path}: the body failed: {error:?}"));
        assert!(body.to_bytes().is_empty(), "HEAD {path}: a body");
        (parts.status, parts.headers["content-length"].clone())
    };

    for (name, client) in [("HTTP/1", http1_client()), ("HTTP/2", http2_client())] {
        assert_eq!(
            head(client.clone(), "/readyz").await,
            (StatusCode::OK, "6".parse().unwrap()),
            "{name}: ready"
        );
        assert_eq!(
            head(client.clone(), "/livez").await,
            (StatusCode::OK, "6".parse().unwrap()),
            "{name}: alive"
        );
    }
    assert!(shutdown.begin_lame_duck());
    for (name, client) in [("HTTP/1", http1_client()), ("HTTP/2", http2_client())] {
        assert_eq!(
            head(client.clone(), "/readyz").await,
            (StatusCode::SERVICE_UNAVAILABLE, "14".parse().unwrap()),
            "{name}: shutting down"
        );
        assert_eq!(
            head(client.clone(), "/livez").await,
            (StatusCode::OK, "6".parse().unwrap()),
            "{name}: alive"
        );
        // A GET still gets the body.
        assert_eq!(
            get_text(&client, addr, "/readyz").await,
            (StatusCode::SERVICE_UNAVAILABLE, "shutting down\n".into()),
            "{name}"
        );
    }
}

/// Flips every readiness switch by hand (start-up hold ended, maintenance on, then off) and
/// probes after each: once shutdown has begun, readiness stays down and liveness green.
async fn flip_and_probe(shutdown: Shutdown, client: &HttpClient, addr: SocketAddr) {
    let phase = shutdown.phase();
    for flip in ["mark_ready", "maintenance on", "maintenance off"] {
        match flip {
            "mark_ready" => shutdown.mark_ready(),
            "maintenance on" => shutdown.set_maintenance(true),
            _ => shutdown.set_maintenance(false),
        }
        assert_eq!(
            get_text(client, addr, "/readyz").await,
            (StatusCode::SERVICE_UNAVAILABLE, "shutting down\n".into()),
            "{phase} after {flip}"
        );
        assert!(!shutdown.is_ready(), "{phase} after {flip}");
        assert_eq!(
            get_text(client, addr, "/livez").await,
            (StatusCode::OK, "alive\n".into()),
            "{phase} after {flip}"
        );
    }
}

/// Readiness flipped by hand never reopens once shutdown has begun, in any phase up to the
/// end, drained or cut short; liveness stays green throughout.
#[tokio::test]
async fn readiness_flipped_by_hand_stays_down_in_every_phase_of_shutdown() {
    for cut_short in [false, true] {
        let shutdown = Shutdown::new().hold_until_ready();
        let addr = serve_probes_on_hyper(shutdown).await;
        let client = http1_client();
        let work = shutdown.guard().unwrap();

        // Still held at start-up when shutdown begins.
        assert_eq!(
            get_text(&client, addr, "/readyz").await,
            (StatusCode::SERVICE_UNAVAILABLE, "starting\n".into())
        );
        assert!(shutdown.begin_lame_duck());
        flip_and_probe(shutdown, &client, addr).await;
        let drain = shutdown.drain(Duration::from_secs(60)).unwrap();
        assert_eq!(shutdown.phase(), Phase::Draining);
        flip_and_probe(shutdown, &client, addr).await;
        if cut_short {
            assert!(shutdown.force());
        } else {
            drop(work);
        }
        let report = bounded("the drain", drain).await;
        let ended = if cut_short {
            Phase::TimedOut
        } else {
            Phase::Drained
        };
        assert_eq!(shutdown.phase(), ended, "{report}");
        flip_and_probe(shutdown, &client, addr).await;
    }
}
