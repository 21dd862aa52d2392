//! A tonic gRPC server that shuts down without failing a call.
//!
//! ```sh
//! cargo run --example tonic        # serves on 127.0.0.1:50051; Ctrl-C or SIGTERM to stop
//! cargo run --example tonic -- 127.0.0.1:0   # or on the address given
//! ```
//!
//! The timeline: on the signal the gRPC health service turns NOT_SERVING (load balancers and
//! Kubernetes gRPC probes stop sending calls here) while calls are still served; after the
//! lame-duck delay admission closes: tonic stops accepting and sends GOAWAY on each
//! connection, late calls get UNAVAILABLE (clients retry elsewhere), and the drain waits for
//! the calls in flight, streams included, up to its timeout.

#[path = "tonic/echo.rs"]
mod echo; // The service, written as generated code would be.

use std::error::Error;
use std::time::Duration;

use echo::{CountReply, CountRequest, Echo, EchoServer, SayReply, SayRequest};
use futures_util::{stream, StreamExt};
use tokio::net::TcpListener;
use tonic::codegen::BoxStream;
use tonic::transport::server::TcpIncoming;
use tonic::transport::Server;
use tonic::{Status, Streaming};
use tonic_health::ServingStatus;
use tower_drain::{Shutdown, ShutdownSequence};

/// The gRPC health methods: probes, never counted nor refused.
const HEALTH_CHECKS: &[&str] = &[
    "/grpc.health.v1.Health/Check",
    "/grpc.health.v1.Health/Watch",
];

/// `Say` answers after half a second; `Count` streams one reply every 100 ms; `Sum` adds up
/// what it is sent; `Chat` echoes each message.
struct Service;

impl Echo for Service {
    async fn say(&self, request: SayRequest) -> Result<SayReply, Status> {
        tokio::time::sleep(Duration::from_millis(500)).await;
        Ok(SayReply { text: request.text })
    }

    fn count(&self, request: CountRequest) -> BoxStream<CountReply> {
        Box::pin(stream::unfold(1, move |n| async move {
            tokio::time::sleep(Duration::from_millis(100)).await;
            (n <= request.to).then_some((Ok(CountReply { n }), n + 1))
        }))
    }

    async fn sum(&self, mut numbers: Streaming<CountReply>) -> Result<CountRequest, Status> {
        let mut to = 0u32;
        while let Some(number) = numbers.message().await? {
            to = to.saturating_add(number.n);
        }
        Ok(CountRequest { to })
    }

    fn chat(&self, messages: Streaming<SayRequest>) -> BoxStream<SayReply> {
        Box::pin(messages.map(|message| message.map(|message| SayReply { text: message.text })))
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn Error>> {
    let shutdown = Shutdown::new();
    // SIGTERM or Ctrl-C starts it: lame duck 2 s, drain up to 10 s; a second signal forces.
    let sequence = ShutdownSequence::builder(shutdown)
        .lame_duck(Duration::from_secs(2))
        .drain_timeout(Duration::from_secs(10))
        .budget(Duration::from_secs(15))
        .build()?;

    // gRPC health follows readiness: NOT_SERVING from lame duck on.
    let (health, health_service) = tonic_health::server::health_reporter();
    health.set_serving::<EchoServer<Service>>().await;
    tokio::spawn(async move {
        shutdown.shutting_down().await;
        health
            .set_service_status("", ServingStatus::NotServing)
            .await;
        health.set_not_serving::<EchoServer<Service>>().await;
    });

    // The address is the first argument if there is one (port 0 picks a free port).
    let addr = std::env::args().nth(1);
    let listener = TcpListener::bind(addr.as_deref().unwrap_or("127.0.0.1:50051")).await?;
    let addr = listener.local_addr()?;
    let server = Server::builder()
        // Counts every call until its last message; answers UNAVAILABLE once draining.
        // Health checks pass through, so they can still say NOT_SERVING, and a client that
        // keeps a health watch open (client-side health checking) does not hold the drain;
        // the layer ends that watch once the drain is over, so it does not hold tonic either.
        .layer(shutdown.layer().bypass(HEALTH_CHECKS))
        .add_service(health_service)
        .add_service(EchoServer::new(Service))
        // When admission closes: stop accepting, GOAWAY on every connection.
        .serve_with_incoming_shutdown(TcpIncoming::from(listener), shutdown.closing());
    let server = tokio::spawn(server);
    println!("serving gRPC on {addr}");

    // Lame duck (health NOT_SERVING, calls still served), then the drain, which closes
    // admission (firing `closing()` above) and waits for the calls in flight.
    let report = sequence.run().await;
    println!("{report}");

    // tonic returns once its last connection has closed. Calls the drain cut short end at
    // once, and so does a health watch once the drain is over; the bound covers a connection
    // that something else keeps open: a stream idle at the deadline, which nothing wakes, or
    // a client that never answers the GOAWAY.
    match tokio::time::timeout(Duration::from_secs(1), server).await {
        Ok(served) => served??,
        Err(_) => println!("connections still open after the drain; exiting anyway"),
    }
    std::process::exit(if report.is_clean() { 0 } else { 1 })
}
