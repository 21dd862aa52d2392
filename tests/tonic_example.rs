//! `examples/tonic.rs` run as a child process and stopped with SIGTERM, with a stream and a
//! health watch open on it.
//!
//! Needs the built example (`cargo test` builds it; for this file alone, run
//! `cargo build --example tonic` first).

#[path = "../examples/tonic/echo.rs"]
mod echo;
mod support;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Stdio;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;
use tonic::transport::Channel;
use tonic_health::pb::health_check_response::ServingStatus as Reported;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;

use echo::EchoClient;
use support::bounded;

fn example_binary() -> PathBuf {
    support::example::example_binary("tonic", &["examples/tonic.rs", "examples/tonic", "src"])
}

/// The example's timeline end to end: health turns NOT_SERVING at the signal, a stream
/// running across the drain's start completes whole, and the health watch a client keeps
/// open neither holds the drain (exit status 0) nor keeps tonic's server waiting: it ends
/// once the drain is over, as a failed call, and the server returns within the example's
/// bounded wait for it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_a_stream_and_exits_0_with_a_health_watch_open() {
    const REPLIES: u32 = 40; // 4 s at one every 100 ms: past the 2 s lame duck
    let mut child = Command::new(example_binary())
        .arg("127.0.0.1:0")
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("the example starts");
    let mut stdout = BufReader::new(child.stdout.take().unwrap()).lines();
    let banner = bounded("the example to listen", stdout.next_line())
        .await
        .unwrap()
        .expect("a first line");
    let addr: SocketAddr = banner
        .strip_prefix("serving gRPC on ")
        .unwrap_or_else(|| panic!("not the banner: {banner}"))
        .parse()
        .unwrap();

    let endpoint = Channel::from_shared(format!("http://{addr}")).unwrap();
    let channel = bounded("the connection", endpoint.connect()).await.unwrap();
    let mut health = HealthClient::new(channel.clone());
    let overall = HealthCheckRequest {
        service: String::new(),
    };
    let mut watch = bounded("a health watch", health.watch(overall))
        .await
        .unwrap()
        .into_inner();
    let status = bounded("the first status", watch.message()).await.unwrap();
    assert_eq!(status.unwrap().status(), Reported::Serving);
    let mut replies = bounded("the stream", EchoClient::new(channel).count(REPLIES))
        .await
        .unwrap();
    let first = bounded("the first reply", replies.message()).await.unwrap();
    assert_eq!(first.unwrap().n, 1);

    let pid = child.id().expect("still running").to_string();
    let killed = Command::new("kill").args(["-TERM", &pid]).status().await;
    assert!(killed.unwrap().success());

    let status = bounded("the next status", watch.message()).await.unwrap();
    assert_eq!(status.unwrap().status(), Reported::NotServing);
    let mut received = vec![1];
    // Bounded: the stream has REPLIES replies, then its end.
    for _ in 0..REPLIES {
        match bounded("a reply", replies.message()).await {
            Ok(Some(reply)) => received.push(reply.n),
            Ok(None) => break,
            Err(status) => panic!("the stream was cut: {status:?}"),
        }
    }
    assert_eq!(received, (1..=REPLIES).collect::<Vec<_>>());

    let exit = bounded("the example to exit", child.wait()).await.unwrap();
    let mut rest = Vec::new();
    // Bounded: the example has exited, so its output ends.
    while let Some(line) = bounded("the output", stdout.next_line()).await.unwrap() {
        rest.push(line);
    }
    assert_eq!(exit.code(), Some(0), "{rest:#?}");
    assert!(
        !rest
            .iter()
            .any(|line| line.contains("connections still open after the drain")),
        "the health watch kept its connection open, so the wait was cut: {rest:#?}"
    );
    let status = bounded("the watch's end", watch.message())
        .await
        .expect_err("the health watch ended cleanly or went on after NOT_SERVING");
    assert_eq!(status.code(), tonic::Code::Unknown, "{status:?}");
}
