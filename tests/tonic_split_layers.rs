//! tonic with the split layers, `InFlightLayer` outside `RejectWhenDrainingLayer`, instead of
//! `Shutdown::layer`: the same answers.

#[path = "../examples/tonic/echo.rs"]
mod echo;
#[path = "tonic/server.rs"]
mod server;
mod support;

use tonic::Code;
use tower_drain::{DrainOutcome, Shutdown};

use echo::EchoClient;
use server::{connect, held_call_cut_short, start_with, Options};
use support::gate::Gate;
use support::{bounded, BOUND};

const SPLIT: Options = Options {
    gzip: false,
    web: None,
    split: true,
    finish_streams: false,
    grpc_as_sse: false,
};

#[tokio::test]
async fn split_layers_complete_calls_in_flight_and_refuse_later_ones() {
    let shutdown = Shutdown::new();
    let gate = Gate::new();
    // A server that ignores `closing()` keeps its connection open, so the late call below
    // reaches the layers.
    let (addr, server) = start_with(shutdown, &gate, std::future::pending(), SPLIT).await;
    let mut client = EchoClient::new(connect(addr).await);

    let mut held_client = client.clone();
    let held = tokio::spawn(async move { held_client.say("held").await });
    gate.entered(1).await;
    let drain = shutdown.drain(BOUND).unwrap();

    let status = bounded("a call while draining", client.say("late"))
        .await
        .expect_err("a call was admitted while draining");
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert_eq!(shutdown.rejected(), 1);

    gate.release(1);
    let reply = bounded("the held call", held).await.unwrap();
    assert_eq!(reply.expect("the held call failed").text, "held");
    let report = bounded("the drain", drain).await;
    assert_eq!(report.outcome, DrainOutcome::Drained, "{report}");
    assert_eq!(report.completed, 1);
    server.abort();
}

#[tokio::test]
async fn split_layers_answer_a_call_cut_at_the_deadline_with_unavailable() {
    let shutdown = Shutdown::new();
    let gate = Gate::new();
    let (addr, server) = start_with(shutdown, &gate, shutdown.closing(), SPLIT).await;
    let report = held_call_cut_short(shutdown, &gate, addr, server).await;
    assert_eq!(report.outcome, DrainOutcome::TimedOut);
}
