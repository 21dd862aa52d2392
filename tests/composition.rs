//! How the crate's layers compose in applications as they are built: routers merged and
//! nested, fallbacks and services mounted by hand, layers on either side, several gRPC
//! services in one server, and one controller shared by two servers.

#[path = "../examples/tonic/echo.rs"]
mod echo;
mod support;

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::error_handling::HandleErrorLayer;
use axum::extract::Extension;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use bytes::Bytes;
use http::header::{CONTENT_TYPE, RETRY_AFTER};
use http::{HeaderMap, Request, StatusCode};
use http_body_util::{BodyExt, Empty};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tonic::server::NamedService;
use tonic::service::interceptor::InterceptedService;
use tonic::service::Routes;
use tonic::transport::server::TcpIncoming;
use tonic::transport::{Channel, Server};
use tonic::Code;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;
use tower::{service_fn, BoxError, ServiceBuilder};
use tower_drain::{DrainOutcome, DrainSignal, LongLivedLayer, Shutdown};

use echo::{Echo, EchoClient, EchoServer, SayReply, SayRequest};
use support::gate::Gate;
use support::http::{get as http_get, http1_client, http2_client, serve, HttpClient};
use support::pending::ReportsPending;
use support::{bounded, BOUND};

/// The answer of `shutdown.layer()` to a plain HTTP request it refuses.
const REFUSED: &[u8] = b"service is shutting down\n";

/// A route at `path` whose handler waits at `gate`.
fn held(gate: &Gate, path: &str) -> Router {
    let gate = gate.clone();
    Router::new().route(
        path,
        get(move || {
            let gate = gate.clone();
            async move {
                gate.pass().await;
                "held\n"
            }
        }),
    )
}

/// GET `path` on a task of its own, for a request the test holds at a gate.
fn spawn_get(
    client: &HttpClient,
    addr: SocketAddr,
    path: &'static str,
) -> tokio::task::JoinHandle<(StatusCode, HeaderMap, Bytes)> {
    let client = client.clone();
    tokio::spawn(async move { http_get(&client, addr, path).await })
}

/// Sends a request with `content_type` and returns the status, headers and body.
async fn request_with_type(
    client: &HttpClient,
    addr: SocketAddr,
    method: http::Method,
    path: &str,
    content_type: &'static str,
) -> (StatusCode, HeaderMap, Bytes) {
    let request = Request::builder()
        .method(method)
        .uri(format!("http://{addr}{path}"))
        .header(CONTENT_TYPE, content_type)
        .body(Empty::new())
        .unwrap();
    let response = bounded("response", client.request(request)).await.unwrap();
    let (parts, body) = response.into_parts();
    let body = bounded("body", body.collect()).await.unwrap().to_bytes();
    (parts.status, parts.headers, body)
}

/// A plain-HTTP refusal from the layer: 503, `Retry-After`, its text, no gRPC status.
fn assert_http_refusal((status, headers, body): &(StatusCode, HeaderMap, Bytes)) {
    assert_eq!(*status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(headers[RETRY_AFTER], "1");
    assert_eq!(&body[..], REFUSED);
    assert!(headers.get("grpc-status").is_none(), "{headers:?}");
}

/// A gRPC refusal from the layer: trailers-only UNAVAILABLE, no text body.
fn assert_grpc_refusal((status, headers, body): &(StatusCode, HeaderMap, Bytes)) {
    assert_eq!(*status, StatusCode::OK, "gRPC answers with HTTP 200");
    assert_eq!(headers["grpc-status"], "14");
    assert_eq!(headers[CONTENT_TYPE], "application/grpc");
    assert!(body.is_empty(), "{body:?}");
}

// === axum: merge and nest ===

/// Two routers that each carry `shutdown.layer()`, merged: each request passes one of the
/// two layers, so it counts once, and a request refused while draining is refused once.
#[tokio::test]
async fn merged_routers_each_with_the_layer_count_and_refuse_each_request_once() {
    let shutdown = Shutdown::new();
    let gate = Gate::new();
    let app = held(&gate, "/a")
        .layer(shutdown.layer())
        .merge(held(&gate, "/b").layer(shutdown.layer()));
    let (addr, _server) = serve(app).await;
    let client = http1_client();

    let a = spawn_get(&client, addr, "/a");
    let b = spawn_get(&client, addr, "/b");
    gate.entered(2).await;
    assert_eq!(shutdown.in_flight(), 2, "one count per request");

    let drain = shutdown.drain(BOUND).unwrap();
    for path in ["/a", "/b", "/missing"] {
        assert_http_refusal(&http_get(&client, addr, path).await);
    }
    assert_eq!(shutdown.rejected(), 3, "one refusal per request");

    gate.release(2);
    for call in [a, b] {
        let (status, _, body) = bounded("a held request", call).await.unwrap();
        assert_eq!((status, &body[..]), (StatusCode::OK, &b"held\n"[..]));
    }
    let report = bounded("the drain", drain).await;
    assert_eq!(report.outcome, DrainOutcome::Drained);
    assert_eq!(
        (report.in_flight_at_start, report.completed, report.rejected),
        (2, 2, 3),
        "{report}"
    );
}

/// A router carrying `shutdown.layer()` nested in one that carries it too: each request
/// passes both layers and counts twice, as the layer's documentation warns; both counts
/// end with the response, and the drain with them.
#[tokio::test]
async fn a_layered_router_nested_in_a_layered_router_counts_twice_and_drains() {
    let shutdown = Shutdown::new();
    let gate = Gate::new();
    let app = Router::new()
        .nest("/api", held(&gate, "/held").layer(shutdown.layer()))
        .layer(shutdown.layer());
    let (addr, _server) = serve(app).await;
    let client = http1_client();

    let call = spawn_get(&client, addr, "/api/held");
    gate.entered(1).await;
    assert_eq!(shutdown.in_flight(), 2, "counted by both layers");
    let drain = shutdown.drain(BOUND).unwrap();
    assert_http_refusal(&http_get(&client, addr, "/api/held").await);
    assert_eq!(shutdown.rejected(), 1, "refused by the outer layer alone");

    gate.release(1);
    let (status, _, _) = bounded("the held request", call).await.unwrap();
    assert_eq!(status, StatusCode::OK);
    let report = bounded("the drain", drain).await;
    assert_eq!(report.outcome, DrainOutcome::Drained);
    assert_eq!((report.in_flight_at_start, report.completed), (2, 2));
    assert_eq!(shutdown.in_flight(), 0);
}

/// Probes in a router nested under `/admin`: the layer on the nested router sees the path
/// without the prefix, the layer on the outer router sees it whole; bypassed by the path
/// each sees, readiness and liveness answer for themselves while draining.
#[tokio::test]
async fn probes_in_a_nested_router_are_bypassed_by_the_path_each_layer_sees() {
    let shutdown = Shutdown::new();
    let probes = Router::new()
        .route_service("/readyz", shutdown.readiness())
        .route_service("/livez", shutdown.liveness());
    // The outer router's layer comes before the nest, so it covers `/` alone.
    let inner_layer = Router::new()
        .route("/", get(|| async { "ok\n" }))
        .layer(shutdown.layer())
        .nest(
            "/admin",
            probes
                .clone()
                .layer(shutdown.layer().bypass(&["/readyz", "/livez"])),
        );
    let outer_layer = Router::new()
        .nest("/admin", probes)
        .route("/", get(|| async { "ok\n" }))
        .layer(shutdown.layer().bypass(&["/admin/readyz", "/admin/livez"]));
    let client = http1_client();
    let mut servers = Vec::new();
    for app in [inner_layer, outer_layer] {
        servers.push(serve(app).await.0);
    }

    let report = bounded("the drain", shutdown.drain(BOUND).unwrap()).await;
    assert_eq!(report.outcome, DrainOutcome::Drained);
    for addr in servers {
        let (status, _, body) = http_get(&client, addr, "/admin/readyz").await;
        assert_eq!(
            (status, &body[..]),
            (StatusCode::SERVICE_UNAVAILABLE, &b"shutting down\n"[..])
        );
        let (status, _, body) = http_get(&client, addr, "/admin/livez").await;
        assert_eq!((status, &body[..]), (StatusCode::OK, &b"alive\n"[..]));
        assert_http_refusal(&http_get(&client, addr, "/").await);
    }
    assert_eq!(shutdown.rejected(), 2, "only the two requests for `/`");
}

/// A long-poll marked with `LongLivedLayer::route` in a router nested under `/api`, under
/// the outer router's `shutdown.layer()`: cut at the long-lived deadline with its 503,
/// listed once, with its method and the path its router sees, without the nest's prefix
/// (axum strips it before the nested router's layers and handlers).
#[tokio::test]
async fn a_marked_route_in_a_nested_router_is_listed_once_when_cut() {
    let shutdown = Shutdown::new();
    shutdown.set_long_lived_grace(Duration::ZERO);
    let (entered_tx, mut entered) = mpsc::unbounded_channel();
    let inner = Router::new().route(
        "/poll",
        get(move |Extension(signal): Extension<DrainSignal>| {
            let entered_tx = entered_tx.clone();
            async move {
                let _ = entered_tx.send(());
                // Ignores its signal: only the deadline ends it.
                let _signal = signal;
                std::future::pending::<&'static str>().await
            }
        })
        .layer(LongLivedLayer::route(shutdown)),
    );
    let app = Router::new().nest("/api", inner).layer(shutdown.layer());
    let (addr, _server) = serve(app).await;
    let client = http1_client();

    let poll = spawn_get(&client, addr, "/api/poll");
    bounded("the handler", entered.recv()).await.unwrap();
    assert_eq!((shutdown.in_flight(), shutdown.long_lived()), (1, 1));
    let report = bounded("the drain", shutdown.drain(BOUND).unwrap()).await;
    let (status, headers, _) = bounded("the long-poll", poll).await.unwrap();
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(headers[RETRY_AFTER], "1");

    assert_eq!(report.outcome, DrainOutcome::Drained, "{report}");
    assert_eq!(report.long_lived.len(), 1, "{report}");
    let entry = &report.long_lived[0];
    assert_eq!(entry.method, Some(http::Method::GET));
    assert_eq!(entry.path.as_deref(), Some("/poll"));
    assert_eq!((shutdown.in_flight(), shutdown.long_lived()), (0, 0));
}

// === axum: services mounted by hand, and layers on either side ===

/// A tower service mounted with `route_service` and another as `fallback_service`, under
/// `Router::layer(shutdown.layer())`: both counted while they run, both refused while
/// draining, in the form of the request's protocol.
#[tokio::test]
async fn route_service_and_fallback_service_are_counted_and_refused_by_protocol() {
    let shutdown = Shutdown::new();
    let gate = Gate::new();
    let holding = |gate: Gate| {
        service_fn(move |_request: axum::extract::Request| {
            let gate = gate.clone();
            async move {
                gate.pass().await;
                Ok::<_, Infallible>("held\n".into_response())
            }
        })
    };
    let app = Router::new()
        .route_service("/service", holding(gate.clone()))
        .fallback_service(holding(gate.clone()))
        .layer(shutdown.layer());
    let (addr, _server) = serve(app).await;
    let client = http1_client();

    let mounted = spawn_get(&client, addr, "/service");
    let fallback = spawn_get(&client, addr, "/anything/else");
    gate.entered(2).await;
    assert_eq!(shutdown.in_flight(), 2);

    let drain = shutdown.drain(BOUND).unwrap();
    for path in ["/service", "/anything/else"] {
        assert_http_refusal(&http_get(&client, addr, path).await);
        let grpc = http2_client();
        assert_grpc_refusal(
            &request_with_type(&grpc, addr, http::Method::POST, path, "application/grpc").await,
        );
    }
    assert_eq!(shutdown.rejected(), 4);

    gate.release(2);
    for call in [mounted, fallback] {
        let (status, _, body) = bounded("a held request", call).await.unwrap();
        assert_eq!((status, &body[..]), (StatusCode::OK, &b"held\n"[..]));
    }
    let report = bounded("the drain", drain).await;
    assert_eq!(
        (report.outcome, report.in_flight_at_start, report.completed),
        (DrainOutcome::Drained, 2, 2)
    );
}

/// `axum::middleware::from_fn` outside the layer sees (and marks) its refusals; one inside
/// that answers without calling the handler is counted until its answer is sent, like any
/// other answer.
#[tokio::test]
async fn from_fn_on_either_side_of_the_layer() {
    async fn mark(request: axum::extract::Request, next: Next) -> Response {
        let mut response = next.run(request).await;
        response
            .headers_mut()
            .insert("x-outer", http::HeaderValue::from_static("seen"));
        response
    }
    let shutdown = Shutdown::new();
    let gate = Gate::new();
    let inner_gate = gate.clone();
    let app = held(&gate, "/held")
        .route("/denied", get(|| async { "never\n" }))
        .layer(middleware::from_fn(
            move |request: axum::extract::Request, next: Next| {
                let gate = inner_gate.clone();
                async move {
                    if request.uri().path() == "/denied" {
                        // Answers for the handler, held so the count can be seen.
                        gate.pass().await;
                        return StatusCode::FORBIDDEN.into_response();
                    }
                    next.run(request).await
                }
            },
        ))
        .layer(shutdown.layer())
        .layer(middleware::from_fn(mark));
    let (addr, _server) = serve(app).await;
    let client = http1_client();

    let denied = spawn_get(&client, addr, "/denied");
    gate.entered(1).await;
    assert_eq!(
        shutdown.in_flight(),
        1,
        "an answer made inside the layer counts"
    );
    gate.release(1);
    let (status, headers, _) = bounded("the denial", denied).await.unwrap();
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(headers["x-outer"], "seen");
    assert_eq!(shutdown.in_flight(), 0);

    let report = bounded("the drain", shutdown.drain(BOUND).unwrap()).await;
    assert_eq!(report.outcome, DrainOutcome::Drained);
    let refusal = http_get(&client, addr, "/held").await;
    assert_http_refusal(&refusal);
    assert_eq!(
        refusal.1["x-outer"], "seen",
        "the outer middleware saw the refusal"
    );
}

/// Serves `/held` behind a concurrency limit of one, with a load shedder turning away what
/// finds no room (answered 429 by `HandleErrorLayer`), inside the layer or outside it.
fn limited(shutdown: Shutdown, gate: &Gate, limit_inside: bool) -> Router {
    let shed = |_: BoxError| async { StatusCode::TOO_MANY_REQUESTS };
    let routes = held(gate, "/held");
    if limit_inside {
        routes.layer(
            ServiceBuilder::new()
                .layer(shutdown.layer())
                .layer(HandleErrorLayer::new(shed))
                .load_shed()
                .concurrency_limit(1),
        )
    } else {
        routes.layer(
            ServiceBuilder::new()
                .layer(HandleErrorLayer::new(shed))
                .load_shed()
                .concurrency_limit(1)
                .layer(shutdown.layer()),
        )
    }
}

/// A load shedder over a concurrency limit of one, inside or outside the layer: while the
/// one place is taken, a second request is shed (429) and leaves no count behind; once
/// draining, a late request is refused by the layer (inside: even though the limit has no
/// room), never shed, and never counted.
#[tokio::test]
async fn load_shed_and_concurrency_limit_inside_or_outside_the_layer() {
    for limit_inside in [true, false] {
        let shutdown = Shutdown::new();
        let gate = Gate::new();
        let (addr, _server) = serve(limited(shutdown, &gate, limit_inside)).await;
        // One connection: axum builds its routes, and so a limit given with
        // `Router::layer`, once per connection.
        let client = http2_client();

        let first = spawn_get(&client, addr, "/held");
        gate.entered(1).await;
        let (status, _, _) = http_get(&client, addr, "/held").await;
        assert_eq!(
            status,
            StatusCode::TOO_MANY_REQUESTS,
            "inside: {limit_inside}"
        );
        assert_eq!(shutdown.in_flight(), 1, "inside: {limit_inside}");

        let drain = shutdown.drain(BOUND).unwrap();
        let late = http_get(&client, addr, "/held").await;
        if limit_inside {
            assert_http_refusal(&late);
            assert_eq!(shutdown.rejected(), 1);
        } else {
            // Outside, the shedder answers first: the layer never sees the request.
            assert_eq!(late.0, StatusCode::TOO_MANY_REQUESTS);
            assert_eq!(shutdown.rejected(), 0);
        }

        gate.release(1);
        let (status, _, _) = bounded("the held request", first).await.unwrap();
        assert_eq!(status, StatusCode::OK);
        let report = bounded("the drain", drain).await;
        assert_eq!(
            (report.outcome, report.in_flight_at_start, report.completed),
            (DrainOutcome::Drained, 1, 1),
            "inside: {limit_inside}"
        );
        if !limit_inside {
            // The place is free again: the layer now answers late requests itself.
            assert_http_refusal(&http_get(&client, addr, "/held").await);
        }
    }
}

// === one controller, two servers ===

/// A public server (`server::serve`) and an admin server (axum, not stopped by the drain)
/// sharing one controller, each with its own `shutdown.layer()`, probes only on the admin
/// one: both servers' requests count towards one drain, both are refused while draining,
/// readiness fails for both from the lame duck on, and the report counts them all.
#[tokio::test]
async fn one_controller_drains_a_public_and_an_admin_server_together() {
    let shutdown = Shutdown::new();
    let gate = Gate::new();
    let public = held(&gate, "/held")
        .route("/", get(|| async { "ok\n" }))
        .layer(shutdown.layer());
    let admin = held(&gate, "/metrics")
        .route_service("/readyz", shutdown.readiness())
        .route_service("/livez", shutdown.liveness())
        .layer(shutdown.layer().bypass(&["/readyz", "/livez"]));

    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let public_addr = listener.local_addr().unwrap();
    let public_server = tokio::spawn(tower_drain::server::serve(listener, public, shutdown));
    let (admin_addr, _admin_server) = serve(admin).await;
    let client = http1_client();

    let on_public = spawn_get(&client, public_addr, "/held");
    let on_admin = spawn_get(&client, admin_addr, "/metrics");
    gate.entered(2).await;
    assert_eq!(shutdown.in_flight(), 2);

    assert!(shutdown.begin_lame_duck());
    let (status, _, _) = http_get(&client, admin_addr, "/readyz").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    let (status, _, _) = http_get(&http1_client(), public_addr, "/").await;
    assert_eq!(status, StatusCode::OK, "the lame duck still serves");

    let drain = shutdown.drain(BOUND).unwrap();
    assert_http_refusal(&http_get(&client, admin_addr, "/metrics").await);
    let (status, _, body) = http_get(&client, admin_addr, "/livez").await;
    assert_eq!((status, &body[..]), (StatusCode::OK, &b"alive\n"[..]));
    let (status, _, body) = http_get(&client, admin_addr, "/readyz").await;
    assert_eq!(
        (status, &body[..]),
        (StatusCode::SERVICE_UNAVAILABLE, &b"shutting down\n"[..])
    );
    assert_eq!(shutdown.in_flight(), 2, "probes are not counted");

    gate.release(2);
    for call in [on_public, on_admin] {
        let (status, _, body) = bounded("a held request", call).await.unwrap();
        assert_eq!((status, &body[..]), (StatusCode::OK, &b"held\n"[..]));
    }
    let report = bounded("the drain", drain).await;
    assert_eq!(report.outcome, DrainOutcome::Drained);
    assert_eq!(
        (report.in_flight_at_start, report.completed, report.rejected),
        (2, 2, 1),
        "{report}"
    );
    bounded("the public server", public_server).await.unwrap();
    // The admin server, not tied to the drain, still answers its probes.
    let (status, _, _) = http_get(&http1_client(), admin_addr, "/livez").await;
    assert_eq!(status, StatusCode::OK);
}

// === tonic ===

/// `Say` of a text starting "held" waits at the gate.
struct HeldEcho {
    gate: Gate,
}

impl Echo for HeldEcho {
    async fn say(&self, request: SayRequest) -> Result<SayReply, tonic::Status> {
        if request.text.starts_with("held") {
            self.gate.pass().await;
        }
        Ok(SayReply { text: request.text })
    }

    fn count(&self, _: echo::CountRequest) -> tonic::codegen::BoxStream<echo::CountReply> {
        Box::pin(futures_util::stream::empty())
    }

    async fn sum(
        &self,
        _: tonic::Streaming<echo::CountReply>,
    ) -> Result<echo::CountRequest, tonic::Status> {
        Err(tonic::Status::unimplemented("sum"))
    }

    fn chat(&self, _: tonic::Streaming<SayRequest>) -> tonic::codegen::BoxStream<SayReply> {
        Box::pin(futures_util::stream::empty())
    }
}

/// A third gRPC service, written by hand: every call waits at the gate, then fails with
/// PERMISSION_DENIED in trailers-only form.
#[derive(Clone)]
struct Other {
    gate: Gate,
}

impl NamedService for Other {
    const NAME: &'static str = "tower_drain.test.Other";
}

impl tower::Service<Request<tonic::body::Body>> for Other {
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _: Request<tonic::body::Body>) -> Self::Future {
        let gate = self.gate.clone();
        Box::pin(async move {
            gate.pass().await;
            Ok(tonic::Status::permission_denied("held").into_http())
        })
    }
}

/// Refuses calls that carry `deny` in their metadata.
#[allow(clippy::result_large_err)]
fn deny(request: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
    if request.metadata().contains_key("deny") {
        return Err(tonic::Status::unauthenticated("denied"));
    }
    Ok(request)
}

/// What a client interceptor is, as a plain function.
type Intercept = fn(tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status>;

/// A client whose calls carry `deny`, which the server's interceptor refuses.
#[allow(clippy::result_large_err)]
fn denied_client(channel: &Channel) -> EchoClient<InterceptedService<Channel, Intercept>> {
    fn add_deny(mut request: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        request.metadata_mut().insert("deny", "1".parse().unwrap());
        Ok(request)
    }
    EchoClient::new(InterceptedService::new(
        channel.clone(),
        add_deny as Intercept,
    ))
}

async fn channel(addr: SocketAddr) -> Channel {
    let endpoint = Channel::from_shared(format!("http://{addr}")).unwrap();
    bounded("the connection", endpoint.connect()).await.unwrap()
}

async fn check_health(channel: Channel) -> Result<i32, tonic::Status> {
    let mut health = HealthClient::new(channel);
    let request = HealthCheckRequest {
        service: String::new(),
    };
    bounded("a health check", health.check(request))
        .await
        .map(|response| response.into_inner().status)
}

/// Three services in one tonic server (health, the echo service behind an interceptor, and
/// a service written by hand) under one `shutdown.layer()` given to the server: a held call
/// on each of two services counts once; a call the interceptor refuses counts while it
/// lasts; while draining, calls to every service, to a service the server does not have,
/// and one the interceptor would refuse all get UNAVAILABLE from the layer, health checks
/// still answer, and the report counts it all. The server keeps its connections open (no
/// graceful shutdown) so that late calls reach the layer rather than race a GOAWAY.
#[tokio::test]
async fn three_services_in_one_tonic_server_under_one_layer() {
    let shutdown = Shutdown::new();
    let gate = Gate::new();
    let (_reporter, health_service) = tonic_health::server::health_reporter();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let echo = InterceptedService::new(EchoServer::new(HeldEcho { gate: gate.clone() }), deny);
    let _server = tokio::spawn(
        Server::builder()
            .layer(shutdown.layer().bypass(&["/grpc.health.v1.Health/Check"]))
            .add_service(health_service)
            .add_service(echo)
            .add_service(Other { gate: gate.clone() })
            .serve_with_incoming(TcpIncoming::from(listener)),
    );
    let channel = channel(addr).await;
    let grpc = http2_client();
    let other_path = "/tower_drain.test.Other/Call";

    let mut client = EchoClient::new(channel.clone());
    let say = tokio::spawn(async move { client.say("held").await });
    let other = {
        let grpc = grpc.clone();
        tokio::spawn(async move {
            request_with_type(
                &grpc,
                addr,
                http::Method::POST,
                other_path,
                "application/grpc",
            )
            .await
        })
    };
    gate.entered(2).await;
    assert_eq!(shutdown.in_flight(), 2, "one count per call");

    let status = denied_client(&channel).say("x").await.unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated);
    assert_eq!(shutdown.in_flight(), 2, "the refused call's count ended");
    assert_eq!(check_health(channel.clone()).await.unwrap(), 1, "SERVING");

    let drain = shutdown.drain(BOUND).unwrap();
    let status = EchoClient::new(channel.clone())
        .say("late")
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    let status = denied_client(&channel).say("x").await.unwrap_err();
    assert_eq!(
        status.code(),
        Code::Unavailable,
        "refused before the interceptor"
    );
    for path in [other_path, "/no.such.Service/Call"] {
        assert_grpc_refusal(
            &request_with_type(&grpc, addr, http::Method::POST, path, "application/grpc").await,
        );
    }
    assert_eq!(check_health(channel.clone()).await.unwrap(), 1, "bypassed");
    assert_eq!(shutdown.rejected(), 4);

    gate.release(2);
    let reply = bounded("the held call", say).await.unwrap().unwrap();
    assert_eq!(reply.text, "held");
    let (status, headers, _) = bounded("the other held call", other).await.unwrap();
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        headers["grpc-status"], "7",
        "PERMISSION_DENIED, as the service answered"
    );
    let report = bounded("the drain", drain).await;
    assert_eq!(report.outcome, DrainOutcome::Drained);
    assert_eq!(
        (report.in_flight_at_start, report.completed, report.rejected),
        (2, 2, 4),
        "{report}"
    );
}

/// tonic's `Routes`, made an axum router with its own `shutdown.layer()`, merged with an
/// HTTP router carrying another, served by axum: one count per call or request, and each
/// refused while draining in its own protocol's form.
#[tokio::test]
async fn tonic_routes_merged_with_an_http_router_each_with_its_layer() {
    let shutdown = Shutdown::new();
    let gate = Gate::new();
    let grpc_routes = Routes::new(EchoServer::new(HeldEcho { gate: gate.clone() }))
        .into_axum_router()
        .layer(shutdown.layer());
    let http_routes = held(&gate, "/held").layer(shutdown.layer());
    let (addr, _server) = serve(grpc_routes.merge(http_routes)).await;
    let channel = channel(addr).await;
    let client = http1_client();

    let mut echo = EchoClient::new(channel.clone());
    let say = tokio::spawn(async move { echo.say("held").await });
    let get = spawn_get(&client, addr, "/held");
    gate.entered(2).await;
    assert_eq!(shutdown.in_flight(), 2, "one count per call or request");

    let drain = shutdown.drain(BOUND).unwrap();
    let status = EchoClient::new(channel.clone())
        .say("late")
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert_http_refusal(&http_get(&client, addr, "/held").await);
    assert_grpc_refusal(
        &request_with_type(
            &http2_client(),
            addr,
            http::Method::POST,
            "/no.such.Service/Call",
            "application/grpc",
        )
        .await,
    );
    assert_http_refusal(&http_get(&client, addr, "/missing").await);
    assert_eq!(shutdown.rejected(), 4);

    gate.release(2);
    let reply = bounded("the held call", say).await.unwrap().unwrap();
    assert_eq!(reply.text, "held");
    let (status, _, _) = bounded("the held request", get).await.unwrap();
    assert_eq!(status, StatusCode::OK);
    let report = bounded("the drain", drain).await;
    assert_eq!(
        (
            report.outcome,
            report.in_flight_at_start,
            report.completed,
            report.rejected
        ),
        (DrainOutcome::Drained, 2, 2, 4),
        "{report}"
    );
}

/// A mark outside the layer (`route_layer` after `layer`, which the documentation allows):
/// a long-poll running when the drain begins is counted once and listed once when cut; a
/// request that reaches the mark after the long-lived deadline is refused by the layer
/// inside it, and the refusal, sent whole, is not listed as a long-lived response cut.
#[tokio::test]
async fn a_mark_outside_the_layer_lists_only_what_it_cut() {
    let shutdown = Shutdown::new();
    shutdown.set_long_lived_grace(Duration::ZERO);
    let (entered_tx, mut entered) = mpsc::unbounded_channel();
    let app = Router::new()
        .route(
            "/poll",
            get(move || {
                let entered_tx = entered_tx.clone();
                async move {
                    let _ = entered_tx.send(());
                    std::future::pending::<&'static str>().await
                }
            }),
        )
        .layer(shutdown.layer())
        .route_layer(LongLivedLayer::route(shutdown));
    let (addr, _server) = serve(app).await;
    let client = http1_client();

    let poll = spawn_get(&client, addr, "/poll");
    bounded("the handler", entered.recv()).await.unwrap();
    assert_eq!((shutdown.in_flight(), shutdown.long_lived()), (1, 1));

    // Holds the drain open past the long-lived deadline.
    let job = shutdown.guard().unwrap();
    let drain = support::drain_past_the_long_lived_deadline(shutdown, BOUND).await;
    let (status, _, _) = bounded("the long-poll", poll).await.unwrap();
    assert_eq!(
        status,
        StatusCode::SERVICE_UNAVAILABLE,
        "cut at the deadline"
    );
    let late = http_get(&client, addr, "/poll").await;
    assert_http_refusal(&late);
    assert_eq!(shutdown.rejected(), 1);
    assert_eq!(shutdown.long_lived(), 0);

    drop(job);
    let report = bounded("the drain", drain).await.unwrap();
    assert_eq!(report.outcome, DrainOutcome::Drained, "{report}");
    let listed: Vec<_> = report
        .long_lived
        .iter()
        .map(|entry| (entry.kind, entry.path.as_deref()))
        .collect();
    assert_eq!(
        listed,
        [
            (tower_drain::LongLivedKind::LongPoll, Some("/poll")),
            (tower_drain::LongLivedKind::Upgrade, Some("/watch")),
        ],
        "{report}"
    );
}

/// A concurrency limit of one in axum, held by one request while a second waits for room
/// when the drain begins, over HTTP/2. Given in the same `Router::layer` call as the layer,
/// inside it, the limit is the layer's inner service: the second request waits in the
/// layer's `poll_ready`, uncounted, and is refused. Given in a call of its own, it waits
/// inside axum's `Route`, which is always ready: the layer has admitted the second request,
/// which the drain then counts, waits for, and serves.
#[tokio::test]
async fn a_concurrency_limit_in_axum_waits_before_or_after_admission_as_it_is_given() {
    for one_call in [true, false] {
        let shutdown = Shutdown::new();
        let gate = Gate::new();
        let (pending_tx, mut pending) = mpsc::unbounded_channel();
        let limit = ServiceBuilder::new()
            .layer_fn(move |inner| ReportsPending {
                inner,
                pending: pending_tx.clone(),
            })
            .concurrency_limit(1);
        let app = if one_call {
            held(&gate, "/held").layer(ServiceBuilder::new().layer(shutdown.layer()).layer(limit))
        } else {
            held(&gate, "/held").layer(limit).layer(shutdown.layer())
        };
        let (addr, _server) = serve(app).await;
        // One connection: axum builds its routes, and so the limit, once per connection.
        let client = http2_client();

        let first = spawn_get(&client, addr, "/held");
        gate.entered(1).await;
        let second = spawn_get(&client, addr, "/held");
        bounded("the second request to wait for room", pending.recv())
            .await
            .unwrap();
        let counted = if one_call { 1 } else { 2 };
        assert_eq!(shutdown.in_flight(), counted, "one call: {one_call}");

        let drain = shutdown.drain(BOUND).unwrap();
        gate.release(2);
        let (status, _, _) = bounded("the held request", first).await.unwrap();
        assert_eq!(status, StatusCode::OK);
        let second = bounded("the waiting request", second).await.unwrap();
        if one_call {
            assert_http_refusal(&second);
        } else {
            assert_eq!((second.0, &second.2[..]), (StatusCode::OK, &b"held\n"[..]));
        }
        let report = bounded("the drain", drain).await;
        assert_eq!(
            (report.outcome, report.in_flight_at_start, report.completed),
            (DrainOutcome::Drained, counted, counted),
            "one call: {one_call}"
        );
        // Not the report's figure: the room frees as the first handler returns, and the
        // refusal may come after the drain ended, or before.
        assert_eq!(
            shutdown.rejected(),
            u64::from(one_call),
            "one call: {one_call}"
        );
    }
}

/// An event stream in a router nested under `/api`, with `shutdown.layer()` on the outer
/// router and, inside, either a second `shutdown.layer()` on the nested router or a mark on
/// the route: one long-lived entry whichever layers see it (the double layer counts the
/// request twice, as documented), one final event on drain, a clean end, every count back to
/// zero and nothing listed as cut.
#[tokio::test]
async fn an_event_stream_in_a_nested_router_is_tracked_once_and_ends_with_one_final_event() {
    use axum::response::sse::{Event, Sse};
    use futures_util::stream::{self, StreamExt};

    for double_layer in [true, false] {
        let shutdown = Shutdown::new();
        let events = get(|| async {
            let ready = stream::once(async { Ok::<_, Infallible>(Event::default().data("ready")) });
            Sse::new(ready.chain(stream::pending()))
        });
        let inner = if double_layer {
            Router::new()
                .route("/events", events)
                .layer(shutdown.layer())
        } else {
            Router::new().route("/events", events.layer(LongLivedLayer::route(shutdown)))
        };
        let app = Router::new().nest("/api", inner).layer(shutdown.layer());
        let server = support::http::serve_until_closing(app, shutdown).await;

        let reading =
            support::sse::open_until(server.addr, "/api/events", b"data: ready\n\n").await;
        let counted = if double_layer { 2 } else { 1 };
        assert_eq!(
            (shutdown.in_flight(), shutdown.long_lived()),
            (counted, 1),
            "double layer: {double_layer}"
        );

        let drain = shutdown.drain(BOUND).unwrap();
        let body = reading.finish().await;
        assert!(body.terminated, "double layer: {double_layer}: a clean end");
        let (events, rest) = support::sse::parse_events(&body.data);
        assert_eq!(
            events,
            ["data: ready", support::sse::FINAL_EVENT],
            "double layer: {double_layer}"
        );
        assert!(rest.is_empty());
        let report = bounded("the drain", drain).await;
        assert!(
            report.is_drained(),
            "double layer: {double_layer}: {report}"
        );
        assert_eq!(report.in_flight_at_start, counted);
        assert_eq!((shutdown.in_flight(), shutdown.long_lived()), (0, 0));
        bounded("the server", server.task).await.unwrap();
    }
}

/// Where each of axum's ways of adding a layer puts `shutdown.layer()`, seen from what it
/// refuses while draining: `Router::layer` every request, the router's fallback (404) and a
/// method a route does not have (405) included; `MethodRouter::layer` and `route_layer`
/// the requests whose path a route matches, 405 included, not the router's 404. What a
/// layer does not cover is neither refused nor counted.
#[tokio::test]
async fn router_layer_method_router_layer_and_route_layer_cover_what_axum_says() {
    let shutdown = Shutdown::new();
    let ok = || get(|| async { "ok\n" });
    let router_layer = Router::new().route("/x", ok()).layer(shutdown.layer());
    let method_layer = Router::new().route("/x", ok().layer(shutdown.layer()));
    let route_layer = Router::new()
        .route("/x", ok())
        .route_layer(shutdown.layer());
    let mut servers = Vec::new();
    for app in [router_layer, method_layer, route_layer] {
        servers.push(serve(app).await.0);
    }
    let report = bounded("the drain", shutdown.drain(BOUND).unwrap()).await;
    assert_eq!(report.outcome, DrainOutcome::Drained);

    let client = http1_client();
    let post = |addr: SocketAddr| {
        let client = client.clone();
        async move { request_with_type(&client, addr, http::Method::POST, "/x", "text/plain").await }
    };
    // (GET /x, POST /x, GET /missing) refused, for each way.
    let expected = [(true, true, true), (true, true, false), (true, true, false)];
    for (addr, (get_refused, post_refused, missing_refused)) in servers.into_iter().zip(expected) {
        let refused = |answer: &(StatusCode, HeaderMap, Bytes)| {
            answer.0 == StatusCode::SERVICE_UNAVAILABLE && &answer.2[..] == REFUSED
        };
        assert_eq!(refused(&http_get(&client, addr, "/x").await), get_refused);
        let answer = post(addr).await;
        assert_eq!(refused(&answer), post_refused);
        if !post_refused {
            assert_eq!(answer.0, StatusCode::METHOD_NOT_ALLOWED);
        }
        let answer = http_get(&client, addr, "/missing").await;
        assert_eq!(refused(&answer), missing_refused);
        if !missing_refused {
            assert_eq!(answer.0, StatusCode::NOT_FOUND);
        }
    }
    assert_eq!(shutdown.rejected(), 7);
}

/// HTTP probes mounted among a tonic server's gRPC services (`RoutesBuilder`, then the
/// routes' axum router), served over HTTP/1 too, under one `shutdown.layer()` that bypasses
/// them: a Kubernetes `httpGet` probe reads readiness fail from the lame duck on and
/// liveness pass, while draining too, and neither is counted, while gRPC calls are refused.
#[tokio::test]
async fn http_probes_among_tonic_services_answer_for_themselves_while_draining() {
    let shutdown = Shutdown::new();
    let gate = Gate::new();
    let mut builder = Routes::builder();
    builder.add_service(EchoServer::new(HeldEcho { gate: gate.clone() }));
    let router = builder
        .routes()
        .into_axum_router()
        .route_service("/readyz", shutdown.readiness())
        .route_service("/livez", shutdown.liveness());
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let _server = tokio::spawn(
        Server::builder()
            .accept_http1(true)
            .layer(shutdown.layer().bypass(&["/readyz", "/livez"]))
            .add_routes(Routes::from(router))
            .serve_with_incoming(TcpIncoming::from(listener)),
    );
    let client = http1_client();
    let channel = channel(addr).await;

    let (status, _, body) = http_get(&client, addr, "/readyz").await;
    assert_eq!((status, &body[..]), (StatusCode::OK, &b"ready\n"[..]));
    let mut echo = EchoClient::new(channel.clone());
    let call = tokio::spawn(async move { echo.say("held").await });
    gate.entered(1).await;

    assert!(shutdown.begin_lame_duck());
    let (status, _, body) = http_get(&client, addr, "/readyz").await;
    assert_eq!(
        (status, &body[..]),
        (StatusCode::SERVICE_UNAVAILABLE, &b"shutting down\n"[..])
    );
    let drain = shutdown.drain(BOUND).unwrap();
    for (path, expected) in [
        (
            "/readyz",
            (StatusCode::SERVICE_UNAVAILABLE, &b"shutting down\n"[..]),
        ),
        ("/livez", (StatusCode::OK, &b"alive\n"[..])),
    ] {
        let (status, _, body) = http_get(&client, addr, path).await;
        assert_eq!((status, &body[..]), expected, "{path}");
    }
    assert_eq!(shutdown.in_flight(), 1, "probes are not counted");
    let status = EchoClient::new(channel).say("late").await.unwrap_err();
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");

    gate.release(1);
    let reply = bounded("the held call", call).await.unwrap().unwrap();
    assert_eq!(reply.text, "held");
    let report = bounded("the drain", drain).await;
    assert_eq!(
        (report.outcome, report.in_flight_at_start, report.rejected),
        (DrainOutcome::Drained, 1, 1),
        "{report}"
    );
}

/// One shutdown sequence for two `server::serve` servers on one controller: the trigger
/// drains both at once, both stop accepting as admission closes, the drain waits for a
/// request on each, the report counts both, and both servers return.
#[tokio::test]
async fn one_sequence_drains_two_served_servers() {
    let shutdown = Shutdown::new();
    let gate = Gate::new();
    let sequence = support::by_hand(shutdown, Duration::ZERO).build().unwrap();
    let trigger = sequence.trigger();
    let mut addrs = Vec::new();
    let mut servers = Vec::new();
    for path in ["/public", "/admin"] {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        addrs.push(listener.local_addr().unwrap());
        let app = held(&gate, path).layer(shutdown.layer());
        servers.push(tokio::spawn(tower_drain::server::serve(
            listener, app, shutdown,
        )));
    }
    let client = http1_client();
    let calls = [
        spawn_get(&client, addrs[0], "/public"),
        spawn_get(&client, addrs[1], "/admin"),
    ];
    gate.entered(2).await;

    let run = tokio::spawn(sequence.run());
    trigger.fire();
    bounded("admission to close", shutdown.closing()).await;
    for addr in &addrs {
        // Bounded: `serve` drops its listener as admission closes, and the connect is
        // refused from then on; each attempt is answered at once either way.
        let mut refused = false;
        for _ in 0..1000 {
            if tokio::net::TcpStream::connect(addr).await.is_err() {
                refused = true;
                break;
            }
            tokio::task::yield_now().await;
        }
        assert!(refused, "{addr} still accepts");
    }
    assert_eq!(shutdown.in_flight(), 2);

    gate.release(2);
    for call in calls {
        let (status, _, _) = bounded("a held request", call).await.unwrap();
        assert_eq!(status, StatusCode::OK);
    }
    let report = bounded("the sequence", run).await.unwrap();
    assert!(report.is_clean(), "{report}");
    assert_eq!(
        (report.drain.in_flight_at_start, report.drain.completed),
        (2, 2)
    );
    for server in servers {
        bounded("a server to return", server).await.unwrap();
    }
}

/// A request waiting for room in a concurrency limit inside the layer when the drain begins,
/// over HTTP/2 on axum's server with its graceful shutdown (which does not wake the stream's
/// task), is refused at once, as one arriving while draining is, while the request holding
/// the room runs on, not when room frees.
#[tokio::test]
async fn a_request_waiting_for_room_inside_the_layer_is_refused_when_the_drain_begins() {
    let shutdown = Shutdown::new();
    let gate = Gate::new();
    let (pending_tx, mut pending) = mpsc::unbounded_channel();
    let app = held(&gate, "/held").layer(
        ServiceBuilder::new()
            .layer(shutdown.layer())
            .layer_fn(move |inner| ReportsPending {
                inner,
                pending: pending_tx.clone(),
            })
            .concurrency_limit(1),
    );
    let addr = support::http::serve_until_closing(app, shutdown).await.addr;
    let client = http2_client();

    let first = spawn_get(&client, addr, "/held");
    gate.entered(1).await;
    let second = spawn_get(&client, addr, "/held");
    bounded("the second request to wait for room", pending.recv())
        .await
        .unwrap();

    let drain = shutdown.drain(BOUND).unwrap();
    let refused = bounded("the waiting request to be refused", second)
        .await
        .unwrap();
    assert_http_refusal(&refused);
    assert_eq!(shutdown.in_flight(), 1, "the first request still runs");

    gate.release(1);
    let (status, _, _) = bounded("the held request", first).await.unwrap();
    assert_eq!(status, StatusCode::OK);
    let report = bounded("the drain", drain).await;
    assert_eq!(
        (report.outcome, report.in_flight_at_start, report.rejected),
        (DrainOutcome::Drained, 1, 1)
    );
}

/// The same in a tonic server, whose streams are HTTP/2: a concurrency limit inside the
/// layer, in the stack given to `Server::layer`; a call waiting for room when the drain
/// begins gets UNAVAILABLE then, while the call holding the room runs on and completes.
#[tokio::test]
async fn a_call_waiting_for_room_inside_the_layer_in_tonic_gets_unavailable_when_the_drain_begins()
{
    let shutdown = Shutdown::new();
    let gate = Gate::new();
    let (pending_tx, mut pending) = mpsc::unbounded_channel();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(
        Server::builder()
            .layer(
                ServiceBuilder::new()
                    .layer(shutdown.layer())
                    .layer_fn(move |inner| ReportsPending {
                        inner,
                        pending: pending_tx.clone(),
                    })
                    .concurrency_limit(1),
            )
            .add_service(EchoServer::new(HeldEcho { gate: gate.clone() }))
            .serve_with_incoming_shutdown(TcpIncoming::from(listener), shutdown.closing()),
    );
    let channel = channel(addr).await;

    let mut echo = EchoClient::new(channel.clone());
    let held = tokio::spawn(async move { echo.say("held").await });
    gate.entered(1).await;
    let mut echo = EchoClient::new(channel);
    let waiting = tokio::spawn(async move { echo.say("waiting").await });
    bounded("the second call to wait for room", pending.recv())
        .await
        .unwrap();

    let drain = shutdown.drain(BOUND).unwrap();
    let status = bounded("the waiting call", waiting)
        .await
        .unwrap()
        .unwrap_err();
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert_eq!(shutdown.in_flight(), 1, "the held call still runs");

    gate.release(1);
    let reply = bounded("the held call", held).await.unwrap().unwrap();
    assert_eq!(reply.text, "held");
    let report = bounded("the drain", drain).await;
    assert_eq!(
        (report.outcome, report.in_flight_at_start, report.rejected),
        (DrainOutcome::Drained, 1, 1),
        "{report}"
    );
    bounded("the server", server).await.unwrap().unwrap();
}
