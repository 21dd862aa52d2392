//! Edges of the newest behaviour, each through a real server: a gRPC response finished on
//! drain whose handler has more ready than one poll of its task takes.

#[path = "../examples/tonic/echo.rs"]
mod echo;
#[path = "tonic/server.rs"]
mod server;
mod support;

use std::time::Duration;

use futures_util::{stream, StreamExt};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tonic::codegen::BoxStream;
use tonic::transport::server::TcpIncoming;
use tonic::transport::Server;
use tonic::{Status, Streaming};
use tower_drain::{DrainOutcome, LongLivedKind, Shutdown};

use echo::{CountReply, CountRequest, Echo, EchoClient, EchoServer, SayReply, SayRequest};
use server::{connect, finish};
use support::bounded;
use support::gate::Gate;

/// Longer than any test runs: a drain that resolves did so because nothing was left.
const NEVER: Duration = Duration::from_secs(600);

/// `Count` sends its first reply, waits at the gate, then sends the rest from a channel that
/// already holds them all (its sender gone), and ends with OK.
struct Queued {
    gate: Gate,
}

impl Echo for Queued {
    async fn say(&self, request: SayRequest) -> Result<SayReply, Status> {
        Ok(SayReply { text: request.text })
    }

    fn count(&self, request: CountRequest) -> BoxStream<CountReply> {
        let (replies, queued) = mpsc::channel(request.to as usize);
        for n in 2..=request.to {
            replies.try_send(CountReply { n }).unwrap();
        }
        drop(replies);
        let first = stream::once(async { Ok(CountReply { n: 1 }) });
        let gate = Some(self.gate.clone());
        let rest = stream::unfold((gate, queued), |(gate, mut queued)| async move {
            if let Some(gate) = gate {
                gate.pass().await;
            }
            let reply = queued.recv().await?;
            Some((Ok(reply), (None, queued)))
        });
        Box::pin(first.chain(rest))
    }

    async fn sum(&self, _: Streaming<CountReply>) -> Result<CountRequest, Status> {
        Err(Status::unimplemented("sum"))
    }

    fn chat(&self, _: Streaming<SayRequest>) -> BoxStream<SayReply> {
        Box::pin(stream::once(async { Err(Status::unimplemented("chat")) }))
    }
}

/// A rule for `long_lived_when`: every gRPC response is finished on drain.
fn grpc_as_sse(_: http::StatusCode, headers: &http::HeaderMap) -> Option<LongLivedKind> {
    let content_type = headers.get(http::header::CONTENT_TYPE)?.as_bytes();
    content_type
        .starts_with(b"application/grpc")
        .then_some(LongLivedKind::Sse)
}

/// A server stream finished on drain whose handler, once the drain has begun, has all its
/// remaining replies and its end ready in a tokio channel, more of them than one poll of the
/// body's task may take (tokio's cooperative budget makes the channel answer "pending" with
/// replies in it): every reply and the OK status reach the client. The handler completed the
/// call; ending it at the budget's pause would fail it after part of its replies.
#[tokio::test]
async fn grpc_stream_with_more_ready_than_one_task_poll_takes_is_sent_whole_on_drain() {
    // Several times tokio's budget of 128 operations per task poll; a few kilobytes, well
    // within HTTP/2's initial window.
    const REPLIES: u32 = 1000;
    let shutdown = Shutdown::new();
    let gate = Gate::new();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let served = Server::builder()
        .layer(shutdown.layer().long_lived_when(grpc_as_sse))
        .add_service(EchoServer::new(Queued { gate: gate.clone() }))
        .serve_with_incoming_shutdown(TcpIncoming::from(listener), shutdown.closing());
    let server = tokio::spawn(served);
    let mut client = EchoClient::new(connect(addr).await);

    let mut replies = bounded("the call", client.count(REPLIES)).await.unwrap();
    let first = bounded("the first reply", replies.message()).await.unwrap();
    assert_eq!(first, Some(CountReply { n: 1 }));
    gate.entered(1).await;
    // On this one-thread runtime, the body's task runs only after both: it finds the drain
    // begun and every reply ready.
    let drain = shutdown.drain(NEVER).unwrap();
    gate.release(1);

    let mut last = 1;
    // Bounded by `REPLIES`: each pass takes one reply or ends.
    for _ in 0..REPLIES {
        match bounded("a reply", replies.message()).await {
            Ok(Some(reply)) => {
                assert_eq!(reply.n, last + 1, "a reply lost");
                last = reply.n;
            }
            Ok(None) => break,
            Err(status) => panic!("the call failed after {last} replies: {status:?}"),
        }
    }
    assert_eq!(last, REPLIES);
    let report = finish(drain, server).await;
    assert_eq!(report.outcome, DrainOutcome::Drained, "{report}");
    assert_eq!(report.completed, 1, "{report}");
    assert!(report.long_lived.is_empty(), "{report}");
}
