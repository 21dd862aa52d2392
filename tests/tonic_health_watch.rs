//! A client that watches gRPC health (`grpc.health.v1.Health/Watch`, kept open on every
//! backend by client-side health checking) does not hold the shutdown open: the watch, which
//! the layer bypasses like any probe, ends once the drain is over, after its NOT_SERVING, and
//! the server returns then, on tonic's server and on `tower_drain::server::serve`.

#[path = "../examples/tonic/echo.rs"]
mod echo;
#[path = "tonic/server.rs"]
mod server;
mod support;

use std::time::Duration;

use tonic::{Code, Status};
use tonic_health::pb::health_client::HealthClient;
use tonic_health::ServingStatus;
use tower::Layer;
use tower_drain::{DrainOutcome, Shutdown};

use echo::EchoServer;
use server::{
    connect, finish, held_call_cut_short, start, start_with, watch_through_lame_duck, Held,
    Options, WebLayer, HEALTH,
};
use support::bounded;
use support::gate::Gate;

/// Far beyond every bounded wait: a server that waits for this deadline fails the test.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(600);

/// How the watch ended: an error its client's load balancer reads as "go elsewhere". grpc-go's
/// health checking marks the backend unhealthy on any end but UNIMPLEMENTED (which means "no
/// health service: take it as healthy"); a clean end (`Ok(None)`) would be read by tonic's
/// users as "the server said all it had to say".
fn assert_ended_go_elsewhere(end: Result<Option<tonic_health::pb::HealthCheckResponse>, Status>) {
    let status = end.expect_err("the watch ended cleanly or sent more after NOT_SERVING");
    assert_eq!(status.code(), Code::Unknown, "{status:?}");
}

#[tokio::test]
async fn health_watch_ends_once_drained_and_tonic_server_returns() {
    let shutdown = Shutdown::new();
    let gate = Gate::new();
    let (addr, server) = start(shutdown, &gate).await;
    let mut health = HealthClient::new(connect(addr).await);
    let mut watch = watch_through_lame_duck(shutdown, &mut health).await;

    let report = finish(shutdown.drain(DRAIN_TIMEOUT).unwrap(), server).await;
    assert_eq!(report.outcome, DrainOutcome::Drained, "{report}");
    assert!(report.is_drained(), "{report}");
    assert_ended_go_elsewhere(bounded("the watch's end", watch.message()).await);
    assert_eq!(shutdown.rejected(), 0);
}

/// The same with the split layers, `InFlightLayer` outside `RejectWhenDrainingLayer`: the
/// counting one ends the watch.
#[tokio::test]
async fn health_watch_ends_once_drained_under_split_layers() {
    let shutdown = Shutdown::new();
    let gate = Gate::new();
    let options = Options {
        split: true,
        ..Options::default()
    };
    let (addr, server) = start_with(shutdown, &gate, shutdown.closing(), options).await;
    let mut health = HealthClient::new(connect(addr).await);
    let mut watch = watch_through_lame_duck(shutdown, &mut health).await;

    let report = finish(shutdown.drain(DRAIN_TIMEOUT).unwrap(), server).await;
    assert_eq!(report.outcome, DrainOutcome::Drained, "{report}");
    assert_ended_go_elsewhere(bounded("the watch's end", watch.message()).await);
}

/// A drain cut short ends the watch too (tonic's server has no deadline of its own to close
/// its connection): the server returns once the held call is answered.
#[tokio::test]
async fn health_watch_ends_when_the_drain_is_cut_short() {
    let shutdown = Shutdown::new();
    let gate = Gate::new();
    let (addr, server) = start(shutdown, &gate).await;
    let mut health = HealthClient::new(connect(addr).await);
    let mut watch = watch_through_lame_duck(shutdown, &mut health).await;

    // Forces the drain with a call held, then waits for the server to return.
    let report = held_call_cut_short(shutdown, &gate, addr, server).await;
    assert_eq!(report.outcome, DrainOutcome::TimedOut, "{report}");
    assert_eq!(report.still_running, 1, "{report}");
    assert!(report.long_lived.is_empty(), "{report}");
    assert_ended_go_elsewhere(bounded("the watch's end", watch.message()).await);
}

/// The same on `tower_drain::server::serve`, which would otherwise keep the watch's connection
/// until the drain deadline.
#[tokio::test]
async fn health_watch_ends_once_drained_and_serve_returns() {
    let shutdown = Shutdown::new();
    let (health_reporter, health_service) = tonic_health::server::health_reporter();
    tokio::spawn(async move {
        shutdown.shutting_down().await;
        health_reporter
            .set_service_status("", ServingStatus::NotServing)
            .await;
    });
    let routes = tonic::service::Routes::new(health_service)
        .add_service(EchoServer::new(Held { gate: Gate::new() }));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let service = shutdown.layer().bypass(HEALTH).layer(routes);
    let served = tokio::spawn(tower_drain::server::serve(listener, service, shutdown));
    let mut health = HealthClient::new(connect(addr).await);
    let mut watch = watch_through_lame_duck(shutdown, &mut health).await;

    let report = bounded("the drain", shutdown.drain(DRAIN_TIMEOUT).unwrap()).await;
    assert_eq!(report.outcome, DrainOutcome::Drained, "{report}");
    bounded("serve to return once drained", served)
        .await
        .unwrap();
    assert_ended_go_elsewhere(bounded("the watch's end", watch.message()).await);
}

/// gRPC-web over HTTP/1 (tonic-web's client and layer): the watch ends once drained, and the
/// server returns. With the shutdown layer inside tonic-web's, it sees gRPC-web, and the
/// watch ends with UNAVAILABLE in its trailer frame; outside, it sees gRPC, and the watch ends
/// without a status, as over HTTP/2.
#[tokio::test]
async fn grpc_web_health_watch_ends_once_drained() {
    use hyper_util::client::legacy::Client;
    use hyper_util::rt::TokioExecutor;
    use tonic_web::GrpcWebClientService;

    for (place, code) in [
        (WebLayer::Inside, Code::Unavailable),
        (WebLayer::Outside, Code::Unknown),
    ] {
        let shutdown = Shutdown::new();
        let gate = Gate::new();
        let options = Options {
            web: Some(place),
            ..Options::default()
        };
        let (addr, server) = start_with(shutdown, &gate, shutdown.closing(), options).await;
        let http = Client::builder(TokioExecutor::new()).build_http();
        let origin = format!("http://{addr}").parse().unwrap();
        let mut health = HealthClient::with_origin(GrpcWebClientService::new(http), origin);

        let mut watch = watch_through_lame_duck(shutdown, &mut health).await;

        let report = finish(shutdown.drain(DRAIN_TIMEOUT).unwrap(), server).await;
        assert_eq!(report.outcome, DrainOutcome::Drained, "{report}");
        let status = bounded("the watch's end", watch.message())
            .await
            .expect_err("the watch ended cleanly or sent more after NOT_SERVING");
        assert_eq!(status.code(), code, "{status:?}");
    }
}
