//! tonic over real HTTP/2 connections: calls in flight finish, later calls get UNAVAILABLE,
//! and gRPC health follows readiness.

#[path = "../examples/tonic/echo.rs"]
mod echo;
#[path = "tonic/server.rs"]
mod server;
mod support;

use futures_util::stream;
use tonic::transport::Channel;
use tonic::{Code, Status};
use tonic_health::pb::health_check_response::ServingStatus as Reported;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;
use tower_drain::{DrainOutcome, Phase, Shutdown};

use echo::{CountReply, EchoClient, SayRequest};
use server::{client_stream, connect, finish, start, start_with_signal};
use support::gate::Gate;
use support::{bounded, BOUND};

#[tokio::test]
async fn unary_call_in_flight_when_draining_begins_completes() {
    let shutdown = Shutdown::new();
    let gate = Gate::new();
    let (addr, server) = start(shutdown, &gate).await;
    let mut client = EchoClient::new(connect(addr).await);

    let call = tokio::spawn(async move { client.say("held").await });
    gate.entered(1).await;
    let drain = shutdown.drain(BOUND).unwrap();
    gate.release(1);

    let reply = bounded("the call", call)
        .await
        .unwrap()
        .expect("the call failed");
    assert_eq!(reply.text, "held");
    let report = finish(drain, server).await;
    assert_eq!(report.outcome, DrainOutcome::Drained);
    assert_eq!(report.completed, 1);
}

#[tokio::test]
async fn server_streaming_call_in_flight_when_draining_begins_completes() {
    let shutdown = Shutdown::new();
    let gate = Gate::new();
    let (addr, server) = start(shutdown, &gate).await;
    let mut client = EchoClient::new(connect(addr).await);

    let mut replies = bounded("the call", client.count(3)).await.unwrap();
    let first = bounded("the first reply", replies.message()).await.unwrap();
    assert_eq!(first, Some(CountReply { n: 1 }));
    gate.entered(1).await;

    let drain = shutdown.drain(BOUND).unwrap();
    gate.release(1);
    let mut rest = Vec::new();
    // Bounded: the stream has two replies left, then its end (with status OK).
    for _ in 0..3 {
        match bounded("a reply", replies.message()).await {
            Ok(Some(reply)) => rest.push(reply.n),
            Ok(None) => break,
            Err(status) => panic!("the stream was cut: {status:?}"),
        }
    }
    assert_eq!(rest, [2, 3]);
    assert_eq!(finish(drain, server).await.outcome, DrainOutcome::Drained);
}

/// True for the two ways tonic's client reports a call the server never processed because
/// it raced the connection's GOAWAY; its next call reconnects. hyper hands a call it had not
/// sent yet back as canceled ("connection closed"), which tonic reports as CANCELLED; h2
/// fails a stream opened above the last stream id of the server's final GOAWAY with that
/// GOAWAY's NO_ERROR, which tonic reports as INTERNAL. Neither is UNAVAILABLE.
fn refused_unprocessed(status: &Status) -> bool {
    let mut source = std::error::Error::source(status);
    while let Some(error) = source {
        if let Some(hyper) = error.downcast_ref::<hyper::Error>() {
            if status.code() == Code::Cancelled && hyper.is_canceled() {
                return true;
            }
        }
        if let Some(h2) = error.downcast_ref::<h2::Error>() {
            return status.code() == Code::Internal
                && h2.is_go_away()
                && h2.is_remote()
                && h2.reason() == Some(h2::Reason::NO_ERROR);
        }
        source = error.source();
    }
    false
}

#[tokio::test]
async fn calls_after_draining_began_get_unavailable() {
    let shutdown = Shutdown::new();
    let gate = Gate::new();
    let (addr, server) = start(shutdown, &gate).await;
    let mut client = EchoClient::new(connect(addr).await);
    assert_eq!(
        bounded("a call", client.say("hi")).await.unwrap().text,
        "hi"
    );

    // A held call keeps the connection open while new calls arrive on it.
    let mut held_client = client.clone();
    let held = tokio::spawn(async move { held_client.say("held").await });
    gate.entered(1).await;
    let drain = shutdown.drain(BOUND).unwrap();

    // Each late call on the same channel is answered by the middleware or meets the
    // server's GOAWAY (and then its closed listener): UNAVAILABLE, which tells a client to
    // retry elsewhere. The exception is tonic's own: the one call that races the GOAWAY
    // comes back CANCELLED or INTERNAL, unprocessed. None is admitted, none hangs.
    let mut unprocessed = 0;
    for _ in 0..20 {
        let late = bounded("a call while draining", client.say("late")).await;
        let status = late.expect_err("a call was admitted while draining");
        if refused_unprocessed(&status) {
            unprocessed += 1;
        } else {
            assert_eq!(status.code(), Code::Unavailable, "{status:?}");
        }
    }
    assert!(
        unprocessed <= 1,
        "{unprocessed} calls refused by one GOAWAY"
    );

    gate.release(1);
    let reply = bounded("the held call", held).await.unwrap();
    assert_eq!(reply.unwrap().text, "held");
    let report = finish(drain, server).await;
    assert_eq!(report.outcome, DrainOutcome::Drained);

    // And a client that comes after the server is gone.
    let endpoint = Channel::from_shared(format!("http://{addr}")).unwrap();
    let mut latecomer = EchoClient::new(endpoint.connect_lazy());
    let after = bounded("a call after shutdown", latecomer.say("later")).await;
    let status = after.expect_err("nothing should answer");
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
}

/// Many callers on one channel as the GOAWAY lands: each late call fails, and the ones tonic
/// reports other than UNAVAILABLE never reached the service.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_calls_racing_the_goaway_fail_and_only_refusals_reach_the_service() {
    const CALLERS: usize = 16;
    const CALLS: usize = 10;
    let shutdown = Shutdown::new();
    let gate = Gate::new();
    let (addr, server) = start(shutdown, &gate).await;
    let client = EchoClient::new(connect(addr).await);

    let mut held_client = client.clone();
    let held = tokio::spawn(async move { held_client.say("held").await });
    gate.entered(1).await;
    let drain = shutdown.drain(BOUND).unwrap();

    let callers: Vec<_> = (0..CALLERS)
        .map(|_| {
            let mut client = client.clone();
            tokio::spawn(async move {
                let mut statuses = Vec::with_capacity(CALLS);
                for _ in 0..CALLS {
                    let late = client.say("late").await;
                    statuses.push(late.expect_err("a call was admitted while draining"));
                }
                statuses
            })
        })
        .collect();
    let mut refused_by_the_layer = 0;
    let mut other = Vec::new();
    for caller in callers {
        for status in bounded("a caller", caller).await.unwrap() {
            if !refused_unprocessed(&status) {
                assert_eq!(status.code(), Code::Unavailable, "{status:?}");
            }
            if status.message() == "server is shutting down" {
                refused_by_the_layer += 1;
            } else {
                other.push(status);
            }
        }
    }
    // The others were refused before the service (by the GOAWAY, or by the closed listener),
    // except that tonic's server closes its socket outright once its last stream ends: a
    // client whose unread calls are still in that socket gets a reset, which can take the
    // layer's answer to a call with it (README, Limits). So each refusal the layer counted
    // was seen as such, or lost among the others; none reached the handler.
    let rejected = shutdown.rejected();
    assert!(
        (refused_by_the_layer..=refused_by_the_layer + other.len() as u64).contains(&rejected),
        "the layer refused {rejected}, clients saw {refused_by_the_layer} refusals and {other:?}"
    );

    gate.release(1);
    let reply = bounded("the held call", held).await.unwrap();
    assert_eq!(reply.unwrap().text, "held");
    let report = finish(drain, server).await;
    assert_eq!(report.outcome, DrainOutcome::Drained, "{report}");
    assert_eq!(report.completed, 1);
}

#[tokio::test]
async fn middleware_answers_calls_while_draining_with_grpc_unavailable() {
    let shutdown = Shutdown::new();
    let gate = Gate::new();
    // A server that ignores `closing()` keeps its connection open, so each call below
    // reaches the middleware rather than a GOAWAY.
    let (addr, server) = start_with_signal(shutdown, &gate, std::future::pending()).await;
    let mut client = EchoClient::new(connect(addr).await);
    assert_eq!(
        bounded("a call", client.say("hi")).await.unwrap().text,
        "hi"
    );

    let report = bounded("the drain", shutdown.drain(BOUND).unwrap()).await;
    assert_eq!(report.outcome, DrainOutcome::Drained);
    for _ in 0..3 {
        let status = bounded("a call while draining", client.say("late"))
            .await
            .expect_err("a call was admitted while draining");
        assert_eq!(status.code(), Code::Unavailable, "{status:?}");
        assert_eq!(status.message(), "server is shutting down");
    }
    let streaming = bounded("a streaming call", client.count(3)).await;
    let status = streaming.expect_err("a call was admitted while draining");
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    // Calls that stream their requests are answered without waiting for them; the client
    // stops sending.
    let numbers = stream::iter([1, 2, 3].map(|n| CountReply { n }));
    let summing = bounded("a client-streaming call", client.sum(numbers)).await;
    let status = summing.expect_err("a call was admitted while draining");
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    let (messages, sent) = client_stream::<SayRequest>();
    let chat = bounded("a bidirectional call", client.chat(sent)).await;
    let status = chat.expect_err("a call was admitted while draining");
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    drop(messages);
    assert_eq!(shutdown.rejected(), 6);
    server.abort();
}

#[tokio::test]
async fn call_abandoned_by_its_client_while_draining_ends_its_count() {
    let shutdown = Shutdown::new();
    let gate = Gate::new();
    let (addr, server) = start(shutdown, &gate).await;
    let mut client = EchoClient::new(connect(addr).await);

    let call = tokio::spawn(async move { client.say("held").await });
    gate.entered(1).await;
    let drain = shutdown.drain(BOUND).unwrap();
    // The client gives up (a deadline, a cancelled request): its stream is reset, tonic's
    // server drops the handler, and the count ends with it.
    call.abort();
    let report = finish(drain, server).await;
    assert_eq!(report.outcome, DrainOutcome::Drained, "{report}");
    assert_eq!(report.completed, 1);
}

/// A call whose deadline (`grpc-timeout`, sent by the client) passes while its handler waits:
/// tonic's own timeout, outside the shutdown layer, answers it and drops the call, and the
/// count ends with it. A raw HTTP/2 request, so that only the server enforces the deadline.
#[tokio::test]
async fn call_past_its_grpc_deadline_ends_its_count() {
    let shutdown = Shutdown::new();
    let gate = Gate::new();
    let (addr, server) = start(shutdown, &gate).await;
    let socket = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (sender, connection) = bounded("the handshake", h2::client::handshake(socket))
        .await
        .unwrap();
    tokio::spawn(connection);
    let mut sender = bounded("the connection", sender.ready()).await.unwrap();
    let request = http::Request::post(format!("http://{addr}/tower_drain.example.Echo/Say"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .header("grpc-timeout", "50m")
        .body(())
        .unwrap();
    let (response, mut body) = sender.send_request(request, false).unwrap();
    // One message, uncompressed: `SayRequest { text: "held" }`.
    let message = b"\x00\x00\x00\x00\x06\x0a\x04held";
    body.send_data(bytes::Bytes::from_static(message), true)
        .unwrap();
    gate.entered(1).await;
    assert_eq!(shutdown.in_flight(), 1);

    // The gate never opens: only the deadline ends the call.
    let response = bounded("the answer at the deadline", response)
        .await
        .unwrap();
    let status = response.headers()["grpc-status"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        status == "1" || status == "4",
        "CANCELLED or DEADLINE_EXCEEDED, not {status}"
    );
    let report = finish(shutdown.drain(BOUND).unwrap(), server).await;
    assert_eq!(report.outcome, DrainOutcome::Drained, "{report}");
    assert_eq!(shutdown.in_flight(), 0);
}

#[tokio::test]
async fn health_reports_not_serving_from_lame_duck_on() {
    let shutdown = Shutdown::new();
    let gate = Gate::new();
    let (addr, server) = start(shutdown, &gate).await;
    let channel = connect(addr).await;
    let mut health = HealthClient::new(channel.clone());
    let mut client = EchoClient::new(channel);
    let echo = || HealthCheckRequest {
        service: "tower_drain.example.Echo".into(),
    };

    let watch = server::watch_through_lame_duck(shutdown, &mut health).await;
    drop(watch);
    for request in [server::overall(), echo()] {
        let response = bounded("a health check", health.check(request))
            .await
            .unwrap();
        assert_eq!(response.into_inner().status(), Reported::NotServing);
    }
    // Lame duck: not ready, but still serving everyone who comes.
    assert_eq!(shutdown.phase(), Phase::LameDuck);
    assert_eq!(
        bounded("a call", client.say("hi")).await.unwrap().text,
        "hi"
    );

    let drain = shutdown.drain(BOUND).unwrap();
    assert_eq!(finish(drain, server).await.outcome, DrainOutcome::Drained);
}

/// gRPC clients that balance by health (client-side health checking in grpc-go and
/// grpc-java) keep a `Watch` open on every backend. It is a probe like `Check`: it must not
/// hold the drain, nor be refused while draining; it ends once the drain is over.
#[tokio::test]
async fn health_watch_is_neither_counted_nor_rejected() {
    let shutdown = Shutdown::new();
    let gate = Gate::new();
    // A server that ignores `closing()` keeps its connection open, so the watch opened while
    // draining below reaches the layer.
    let (addr, server) = start_with_signal(shutdown, &gate, std::future::pending()).await;
    let channel = connect(addr).await;
    let mut health = HealthClient::new(channel.clone());

    let watch = server::watch_through_lame_duck(shutdown, &mut health).await;

    // A held call keeps the drain open; the watch is not part of what it waits for.
    let mut client = EchoClient::new(channel);
    let call = tokio::spawn(async move { client.say("held").await });
    gate.entered(1).await;
    let drain = shutdown.drain(BOUND).unwrap();
    let mut late = bounded(
        "a health watch while draining",
        health.watch(server::overall()),
    )
    .await
    .expect("a health watch was refused while draining")
    .into_inner();
    let status = bounded("its first status", late.message()).await.unwrap();
    assert_eq!(status.unwrap().status(), Reported::NotServing);
    assert_eq!(shutdown.phase(), Phase::Draining);
    assert_eq!(shutdown.rejected(), 0);

    gate.release(1);
    bounded("the held call", call).await.unwrap().unwrap();
    let report = bounded("the drain", drain).await;
    assert_eq!(report.in_flight_at_start, 1, "{report}");
    assert_eq!(report.outcome, DrainOutcome::Drained, "{report}");
    // Both watches end once the drain is over, as a failed call: their clients go elsewhere.
    for mut watch in [watch, late] {
        let status = bounded("the watch's end", watch.message())
            .await
            .expect_err("a health watch ended cleanly or went on after the drain");
        assert_eq!(status.code(), Code::Unknown, "{status:?}");
    }
    assert_eq!(shutdown.rejected(), 0);
    server.abort();
}
