//! `server::serve` when accepting fails for want of file descriptors: the error is the
//! process's, not the listener's, so the server waits for descriptors to be freed and then
//! serves the connection that was waiting, rather than ending or spinning.
//!
//! Alone in its test binary: it uses up every descriptor the process may open. Linux only:
//! `/dev/null` is opened to use them up.
#![cfg(target_os = "linux")]

mod support;

use std::convert::Infallible;
use std::fs::File;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Full;
use hyper::body::Incoming;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tower::{service_fn, Layer};
use tower_drain::{DrainOutcome, Shutdown};
use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::layer::{Context, SubscriberExt};

use support::raw::{read_response, write_get};
use support::sse::open_files_limit;
use support::{bounded, BOUND};

/// The most descriptors this test uses up: under a higher limit (containers often allow a
/// million) it first lowers this process's own soft limit with util-linux's `prlimit`, so
/// that using them up takes neither long nor much kernel memory.
const LIMIT: u64 = 4096;

/// Tells the test each time `serve` logs a failed accept: the moment the server has met the
/// error, which the test otherwise could only hope to have given it time to meet.
struct AcceptFailures(mpsc::UnboundedSender<()>);

struct Message(String);

impl Visit for Message {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            self.0 = format!("{value:?}");
        }
    }
}

impl<S: Subscriber> tracing_subscriber::Layer<S> for AcceptFailures {
    fn on_event(&self, event: &Event<'_>, _: Context<'_, S>) {
        let mut message = Message(String::new());
        event.record(&mut message);
        if *event.metadata().level() == Level::ERROR && message.0.starts_with("accept failed") {
            let _ = self.0.send(());
        }
    }
}

/// Opens `/dev/null` until the process may open nothing more.
fn use_up_descriptors() -> Vec<File> {
    let limit = || open_files_limit().unwrap_or(u64::MAX);
    if limit() > LIMIT {
        let lowered = std::process::Command::new("prlimit")
            .arg(format!("--pid={}", std::process::id()))
            .arg(format!("--nofile={LIMIT}:"))
            .status();
        assert!(
            matches!(lowered, Ok(status) if status.success()) && limit() <= LIMIT,
            "could not lower the open-files limit to {LIMIT} with prlimit (util-linux): {lowered:?}"
        );
    }
    let mut files = Vec::new();
    // Bounded: more than the limit.
    for _ in 0..2 * LIMIT {
        match File::open("/dev/null") {
            Ok(file) => files.push(file),
            Err(error) if error.raw_os_error() == Some(24) => return files,
            Err(error) => panic!("unexpected error opening /dev/null: {error}"),
        }
    }
    panic!("the descriptor limit was never reached");
}

#[tokio::test]
async fn a_connection_that_arrives_while_descriptors_run_out_is_served_once_they_are_freed() {
    let (failed_tx, mut failed) = mpsc::unbounded_channel();
    // Current-thread runtime: the server task runs on this thread, under this subscriber.
    let _subscriber = tracing::subscriber::set_default(
        tracing_subscriber::registry().with(AcceptFailures(failed_tx)),
    );
    let shutdown = Shutdown::new();
    let answer = service_fn(|_request: Request<Incoming>| async {
        Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"ok\n"))))
    });
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let service = shutdown.layer().layer(answer);
    let server = tokio::spawn(tower_drain::server::serve(listener, service, shutdown));

    let mut files = use_up_descriptors();
    // One descriptor for the client's socket: none is left for the server to accept it.
    drop(files.pop());
    let mut stream = TcpStream::connect(addr).await.unwrap();
    assert!(
        File::open("/dev/null").is_err(),
        "descriptors left: the accept would not fail"
    );
    write_get(&mut stream, "/").await;
    bounded("the accept to fail for want of descriptors", failed.recv())
        .await
        .expect("the subscriber is still set");
    assert!(!server.is_finished(), "serve ended on an accept error");
    drop(files);

    let response = read_response(&mut stream).await;
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    drop(stream);
    let report = bounded("the drain", shutdown.drain(BOUND).unwrap()).await;
    assert_eq!(report.outcome, DrainOutcome::Drained);
    bounded("the server to return", server).await.unwrap();
}
