//! Faults and bad input against a real hyper server on 127.0.0.1: clients that hang up at
//! any byte, handlers and bodies that panic or fail mid-stream, absurd and zero drain
//! timeouts, drains and forces repeated from many tasks, and requests racing every phase
//! change.
//!
//! Every case checks three things: the report says what happened, the in-flight count returns
//! to zero (awaited through the crate's own `Drain`, or by waiting for every server connection
//! to close), and nothing hangs (every wait is bounded by a generous `tokio::time::timeout`
//! that only fails the test).
//!
//! Faults in shutdown hooks (a hook that hangs, errors or panics) belong to the shutdown
//! sequence and are tested with it.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::stream::{self, StreamExt};
use http::header::{CONNECTION, HOST, RETRY_AFTER};
use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Empty, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch, Barrier};
use tokio::task::JoinHandle;
use tokio::time::timeout;
use tower::{Layer, ServiceExt};
use tower_drain::{Drain, DrainError, DrainOutcome, DrainReport, Phase, Shutdown};

type BoxError = Box<dyn std::error::Error + Send + Sync>;
type Body = BoxBody<Bytes, BoxError>;

/// Generous bound on any single wait: reaching it means a hang, and fails the test.
const BOUND: Duration = Duration::from_secs(30);
/// A drain timeout that a passing test never reaches.
const LONG_DRAIN: Duration = Duration::from_secs(120);

/// Awaits `future`, failing the test with `what` if it has not finished within [`BOUND`].
async fn bounded<F: Future>(what: &str, future: F) -> F::Output {
    match timeout(BOUND, future).await {
        Ok(output) => output,
        Err(_) => panic!("hung: {what} did not finish within {BOUND:?}"),
    }
}

// === the server under test ===

/// What a handler tells the test, and what the test lets handlers do.
#[derive(Clone)]
struct Routes {
    /// A handler announces itself here once it runs, i.e. once it has been admitted.
    entered: mpsc::UnboundedSender<&'static str>,
    /// Gated handlers wait until this turns `true`.
    gate: watch::Receiver<bool>,
}

static CHUNK: [u8; 16 * 1024] = [b'x'; 16 * 1024];

impl Routes {
    async fn handle(self, request: Request<Incoming>) -> Result<Response<Body>, Infallible> {
        let path = request.uri().path().to_owned();
        let body = match path.as_str() {
            "/" => full("ok\n"),
            // Never ends: the count can only come back through the body being dropped.
            "/infinite" => {
                let _ = self.entered.send("/infinite");
                boxed(StreamBody::new(stream::repeat_with(|| {
                    Ok(Frame::data(Bytes::from_static(&CHUNK)))
                })))
            }
            "/stream" => boxed(StreamBody::new(stream::iter(0..16).then(|i| async move {
                // Yields to the scheduler between chunks so that bodies are often mid-stream
                // when a phase changes.
                tokio::task::yield_now().await;
                Ok(Frame::data(Bytes::from(format!("chunk {i}\n"))))
            }))),
            "/gate" => {
                self.announce_and_wait("/gate").await;
                full("done\n")
            }
            "/gate-panic" => {
                self.announce_and_wait("/gate-panic").await;
                panic!("handler panicked on purpose (fault test)");
            }
            "/pending" => {
                let _ = self.entered.send("/pending");
                std::future::pending::<()>().await;
                unreachable!()
            }
            "/body-error" | "/body-panic" => {
                let _ = self.entered.send("/body-error");
                let panics = path == "/body-panic";
                let mut gate = self.gate.clone();
                let first = stream::iter([Ok(Frame::data(Bytes::from_static(b"part\n")))]);
                let last = stream::once(async move {
                    let _ = gate.wait_for(|open| *open).await;
                    if panics {
                        panic!("response body panicked on purpose (fault test)");
                    }
                    Err::<Frame<Bytes>, BoxError>(Box::new(io::Error::other(
                        "storage failed mid-stream (fault test)",
                    )))
                });
                boxed(StreamBody::new(first.chain(last)))
            }
            _ => {
                let mut response = Response::new(full("not found\n"));
                *response.status_mut() = StatusCode::NOT_FOUND;
                return Ok(response);
            }
        };
        Ok(Response::new(body))
    }

    async fn announce_and_wait(&self, name: &'static str) {
        let _ = self.entered.send(name);
        let mut gate = self.gate.clone();
        let _ = gate.wait_for(|open| *open).await;
    }
}

fn full(text: &'static str) -> Body {
    Full::new(Bytes::from_static(text.as_bytes()))
        .map_err(|never| match never {})
        .boxed()
}

fn boxed<B>(body: B) -> Body
where
    B: hyper::body::Body<Data = Bytes, Error = BoxError> + Send + Sync + 'static,
{
    BodyExt::boxed(body)
}

/// A hyper HTTP/1 server on 127.0.0.1 with `shutdown.layer()` in front of [`Routes`].
struct Server {
    addr: SocketAddr,
    shutdown: Shutdown,
    entered: mpsc::UnboundedReceiver<&'static str>,
    gate: watch::Sender<bool>,
    accept: JoinHandle<()>,
    /// Every connection task holds a sender; `recv` returns `None` once all have ended.
    connections: mpsc::Receiver<()>,
}

impl Server {
    async fn start() -> Server {
        let shutdown = Shutdown::new();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (entered_tx, entered) = mpsc::unbounded_channel();
        let (gate, gate_rx) = watch::channel(false);
        let routes = Routes {
            entered: entered_tx,
            gate: gate_rx,
        };
        let service = shutdown.layer().layer(tower::service_fn(move |request| {
            routes.clone().handle(request)
        }));
        let (alive, connections) = mpsc::channel::<()>(1);
        let accept = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let service = service.clone();
                let alive = alive.clone();
                tokio::spawn(async move {
                    let service =
                        hyper::service::service_fn(move |request| service.clone().oneshot(request));
                    // A connection error (client gone, body failed) ends the connection; that
                    // is the behaviour under test, not a test failure.
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                    drop(alive);
                });
            }
        });
        Server {
            addr,
            shutdown,
            entered,
            gate,
            accept,
            connections,
        }
    }

    /// Waits until `n` gated or streaming handlers have been admitted and are running.
    async fn wait_entered(&mut self, n: usize) {
        for _ in 0..n {
            bounded("a handler to be admitted", self.entered.recv())
                .await
                .expect("the server is gone");
        }
    }

    fn open_gate(&self) {
        self.gate.send_replace(true);
    }

    /// Stops accepting, then waits for every connection to end, so that every response body
    /// the server held has been dropped. Clients must have closed their connections first.
    async fn close(mut self) -> Shutdown {
        self.accept.abort();
        let _ = self.accept.await;
        bounded("every server connection to end", self.connections.recv()).await;
        self.shutdown
    }
}

/// Awaits `drain` and checks that it drained: the way to wait for the count to return to zero.
async fn expect_drained(drain: Drain) -> DrainReport {
    let report = bounded("the drain", drain).await;
    assert_eq!(
        report.outcome,
        DrainOutcome::Drained,
        "a request was never released: {report}"
    );
    assert_eq!(report.still_running, 0, "{report}");
    assert_eq!(report.completed, report.in_flight_at_start, "{report}");
    report
}

// === clients ===

/// A real HTTP/1 client connection (hyper's).
async fn connect(addr: SocketAddr) -> hyper::client::conn::http1::SendRequest<Empty<Bytes>> {
    let stream = bounded("connect", TcpStream::connect(addr)).await.unwrap();
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(connection);
    sender
}

fn get(path: &str) -> Request<Empty<Bytes>> {
    Request::get(path)
        .header(HOST, "127.0.0.1")
        .body(Empty::new())
        .unwrap()
}

/// What a client saw of one response.
#[derive(Debug)]
struct Seen {
    status: StatusCode,
    headers: HeaderMap,
    /// The whole body, or the error that cut it.
    body: Result<Bytes, hyper::Error>,
}

/// Sends `GET path` on a fresh connection and reads the whole response.
async fn fetch(addr: SocketAddr, path: &str) -> Result<Seen, hyper::Error> {
    let mut sender = connect(addr).await;
    send(&mut sender, path).await
}

async fn send(
    sender: &mut hyper::client::conn::http1::SendRequest<Empty<Bytes>>,
    path: &str,
) -> Result<Seen, hyper::Error> {
    sender.ready().await?;
    let response = sender.send_request(get(path)).await?;
    let (parts, body) = response.into_parts();
    Ok(Seen {
        status: parts.status,
        headers: parts.headers,
        body: body.collect().await.map(|collected| collected.to_bytes()),
    })
}

/// True when the client can tell the response was not delivered whole: the connection
/// ended before the headers (hyper sends none when the body fails on its first poll), the
/// body was cut after them, or, when the handler had not answered by the deadline, the
/// middleware answered in its place with a 503 saying the request was aborted.
fn looks_cut(outcome: &Result<Seen, hyper::Error>) -> bool {
    match outcome {
        Err(error) => error.is_incomplete_message(),
        Ok(seen) => {
            seen.body.is_err()
                || (seen.status == 503
                    && seen
                        .body
                        .as_ref()
                        .is_ok_and(|body| body.starts_with(b"request aborted")))
        }
    }
}

/// Sends `GET path` over a raw socket, reads `cut_after` bytes of the response (or to its
/// end), then hangs up, with a reset when `reset` (linger 0) and a plain close otherwise.
async fn hang_up_after(addr: SocketAddr, path: &str, cut_after: usize, reset: bool) -> usize {
    let mut stream = bounded("connect", TcpStream::connect(addr)).await.unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut buffer = vec![0; 64 * 1024];
    let mut read = 0;
    while read < cut_after {
        let want = buffer.len().min(cut_after - read);
        match bounded("reading the response", stream.read(&mut buffer[..want])).await {
            Ok(0) | Err(_) => break,
            Ok(n) => read += n,
        }
    }
    if reset {
        // Linger zero makes the close a reset; it never blocks (it is a nonzero linger
        // that would), which is what the deprecation warns about.
        #[allow(deprecated)]
        stream.set_linger(Some(Duration::ZERO)).unwrap();
    }
    drop(stream);
    read
}

// === clients that go away ===

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_hanging_up_at_random_points_mid_body_release_every_request() {
    let server = Server::start().await;
    let seed = 0x5eed_f00d;
    let mut rng = fastrand::Rng::with_seed(seed);
    // The response never ends, so the only way for its count to come back is the server
    // noticing the client is gone and dropping the body. Cut points range from "before the
    // status line" through the headers to deep in the body.
    let mut cuts: Vec<(usize, bool)> = vec![(0, true), (0, false), (1, true), (40, false)];
    cuts.extend((0..40).map(|_| (rng.u64(..512 * 1024) as usize, rng.u64(..2) == 0)));
    let clients: Vec<_> = cuts
        .iter()
        .map(|&(cut, reset)| tokio::spawn(hang_up_after(server.addr, "/infinite", cut, reset)))
        .collect();
    // A client that hangs up before reading anything may be gone before its request is read;
    // every other one has read from a running handler once it returns.
    for (client, &(cut, _)) in clients.into_iter().zip(&cuts) {
        let read = bounded("a client", client).await.unwrap();
        assert_eq!(
            read, cut,
            "seed {seed:#x}: the server sent less than {cut} bytes"
        );
    }

    let report = expect_drained(server.shutdown.drain(LONG_DRAIN).unwrap()).await;
    assert_eq!(server.shutdown.in_flight(), 0, "{report}");
}

#[tokio::test]
async fn client_hanging_up_mid_body_during_the_drain_completes_the_drain() {
    let mut server = Server::start().await;
    let mut stream = TcpStream::connect(server.addr).await.unwrap();
    stream
        .write_all(b"GET /infinite HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        .await
        .unwrap();
    server.wait_entered(1).await;
    let mut first = [0; 1024];
    bounded("the first bytes", stream.read_exact(&mut first))
        .await
        .unwrap();

    let drain = server.shutdown.drain(LONG_DRAIN).unwrap();
    assert_eq!(server.shutdown.in_flight(), 1);
    // Linger zero: the close is a reset, and does not block.
    #[allow(deprecated)]
    stream.set_linger(Some(Duration::ZERO)).unwrap();
    drop(stream);

    let report = expect_drained(drain).await;
    assert_eq!(report.in_flight_at_start, 1, "{report}");
    assert_eq!(report.completed, 1, "{report}");
}

#[tokio::test]
async fn client_hanging_up_before_the_response_exists_releases_its_request() {
    // The handler never returns. hyper notices the client's hang-up while it waits (an HTTP/1
    // connection without half-close support ends at the read side's EOF) and drops the
    // service future: that drop is the only way this request can stop counting.
    let mut server = Server::start().await;
    let mut stream = TcpStream::connect(server.addr).await.unwrap();
    stream
        .write_all(b"GET /pending HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        .await
        .unwrap();
    server.wait_entered(1).await;

    let drain = server.shutdown.drain(LONG_DRAIN).unwrap();
    assert_eq!(server.shutdown.in_flight(), 1);
    drop(stream);

    let report = expect_drained(drain).await;
    assert_eq!(report.in_flight_at_start, 1, "{report}");
    assert_eq!(report.completed, 1, "{report}");
}

// === handlers and bodies that fail ===

#[tokio::test]
async fn handler_panicking_while_counted_releases_its_request() {
    let mut server = Server::start().await;
    let addr = server.addr;
    let client = tokio::spawn(async move { fetch(addr, "/gate-panic").await });
    server.wait_entered(1).await;

    let drain = server.shutdown.drain(LONG_DRAIN).unwrap();
    server.open_gate();

    let report = expect_drained(drain).await;
    assert_eq!(report.in_flight_at_start, 1, "{report}");
    let error = bounded("the client", client)
        .await
        .unwrap()
        .expect_err("a panicking handler cannot have sent a response");
    assert!(
        error.is_incomplete_message() || error.is_closed(),
        "the client should see the connection closed: {error}"
    );
}

#[tokio::test]
async fn body_failing_mid_stream_ends_the_request_and_the_client_sees_a_cut_body() {
    let mut server = Server::start().await;
    let mut sender = connect(server.addr).await;
    let response = bounded("the headers", sender.send_request(get("/body-error")))
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    server.wait_entered(1).await;
    let mut body = response.into_body();
    let first = bounded("the first chunk", body.frame())
        .await
        .expect("a first frame")
        .expect("the first chunk is whole");
    assert_eq!(first.data_ref().map(|data| &data[..]), Some(&b"part\n"[..]));

    let drain = server.shutdown.drain(LONG_DRAIN).unwrap();
    server.open_gate();
    let report = expect_drained(drain).await;
    assert_eq!(report.in_flight_at_start, 1, "{report}");

    let rest = bounded("the rest of the body", body.collect()).await;
    assert!(
        rest.is_err(),
        "a body that failed on the server must not look complete to the client"
    );
}

#[tokio::test]
async fn body_panicking_mid_stream_releases_its_request() {
    let mut server = Server::start().await;
    let mut sender = connect(server.addr).await;
    let response = bounded("the headers", sender.send_request(get("/body-panic")))
        .await
        .unwrap();
    server.wait_entered(1).await;

    let drain = server.shutdown.drain(LONG_DRAIN).unwrap();
    server.open_gate();
    let report = expect_drained(drain).await;
    assert_eq!(report.in_flight_at_start, 1, "{report}");
    let body = bounded("the body", response.into_body().collect()).await;
    assert!(body.is_err(), "a panicked body must not look complete");
}

// === bad timeouts ===

#[tokio::test]
async fn drain_timeout_of_duration_max_is_refused_clearly_and_changes_nothing() {
    let mut server = Server::start().await;
    let addr = server.addr;
    let client = tokio::spawn(async move { fetch(addr, "/gate").await });
    server.wait_entered(1).await;

    let error = server
        .shutdown
        .drain(Duration::MAX)
        .expect_err("an unbounded drain must be refused");
    assert_eq!(
        error,
        DrainError::TimeoutTooLong {
            requested: Duration::MAX,
            max: Drain::MAX_TIMEOUT
        }
    );
    let message = error.to_string();
    assert!(
        message.contains("longer than the maximum") && message.contains("nothing was changed"),
        "unclear message: {message}"
    );
    // Just over the limit is refused the same way; the limit itself would be accepted.
    assert!(server
        .shutdown
        .drain(Drain::MAX_TIMEOUT + Duration::from_nanos(1))
        .is_err());

    // Nothing changed: still serving, still counting, still admitting.
    assert_eq!(server.shutdown.phase(), Phase::Serving);
    assert_eq!(server.shutdown.in_flight(), 1);
    let fresh = bounded("a new request", fetch(addr, "/")).await.unwrap();
    assert_eq!(fresh.status, StatusCode::OK);
    assert_eq!(server.shutdown.rejected(), 0);

    // A corrected call drains normally.
    let drain = server.shutdown.drain(LONG_DRAIN).unwrap();
    // And an absurd call while draining is refused without disturbing that drain.
    assert!(server.shutdown.drain(Duration::MAX).is_err());
    assert_eq!(server.shutdown.phase(), Phase::Draining);
    server.open_gate();
    let report = expect_drained(drain).await;
    assert_eq!(report.in_flight_at_start, 1, "{report}");
    let seen = bounded("the gated request", client).await.unwrap().unwrap();
    assert_eq!(seen.status, StatusCode::OK);
    assert_eq!(&seen.body.unwrap()[..], b"done\n");
}

#[tokio::test]
async fn drain_timeout_of_zero_with_nothing_in_flight_reports_drained() {
    let server = Server::start().await;
    let report = expect_drained(server.shutdown.drain(Duration::ZERO).unwrap()).await;
    assert_eq!(report.in_flight_at_start, 0, "{report}");
    assert!(!report.forced, "{report}");
    assert_eq!(server.shutdown.phase(), Phase::Drained);
}

#[tokio::test]
async fn drain_timeout_of_zero_does_not_wait_and_aborts_what_is_running() {
    let mut server = Server::start().await;
    let addr = server.addr;
    let client = tokio::spawn(async move { fetch(addr, "/gate").await });
    server.wait_entered(1).await;

    let report = bounded(
        "a zero drain",
        server.shutdown.drain(Duration::ZERO).unwrap(),
    )
    .await;
    assert_eq!(report.outcome, DrainOutcome::TimedOut, "{report}");
    assert!(!report.forced, "a zero timeout is a timeout, not a force");
    assert_eq!(report.in_flight_at_start, 1, "{report}");
    assert_eq!(report.still_running, 1, "{report}");
    assert_eq!(report.completed, 0, "{report}");
    assert_eq!(server.shutdown.phase(), Phase::TimedOut);
    // Joining later, with another timeout, gives the same report.
    let again = bounded("a second drain", server.shutdown.drain(LONG_DRAIN).unwrap()).await;
    assert_eq!(again, report);

    // The handler finishes after the deadline: its response is cut, not sent as if whole.
    server.open_gate();
    let outcome = bounded("the aborted request", client).await.unwrap();
    assert!(
        looks_cut(&outcome),
        "an aborted response must not look complete: {outcome:?}"
    );
    let shutdown = server.close().await;
    assert_eq!(shutdown.in_flight(), 0);
}

// === repetition from many tasks ===

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_called_from_many_tasks_at_once_resolves_to_one_report() {
    let mut server = Server::start().await;
    let addr = server.addr;
    let clients: Vec<_> = (0..3)
        .map(|_| tokio::spawn(async move { fetch(addr, "/gate").await }))
        .collect();
    server.wait_entered(3).await;

    let tasks = 64;
    // The test itself is one more drainer, so it knows the drain has begun.
    let barrier = Arc::new(Barrier::new(tasks + 1));
    let drains: Vec<_> = (0..tasks)
        .map(|i| {
            let shutdown = server.shutdown;
            let barrier = barrier.clone();
            tokio::spawn(async move {
                barrier.wait().await;
                // Timeouts differ per task: only the first call's deadline counts.
                let timeout = LONG_DRAIN + Duration::from_millis(i as u64);
                shutdown.drain(timeout).unwrap().await
            })
        })
        .collect();
    barrier.wait().await;
    // Whichever call starts the drain, every call returns only after admission has closed
    // and the in-flight requests have been counted, so releasing them now cannot race that.
    let own = server.shutdown.drain(LONG_DRAIN).unwrap();
    server.open_gate();

    let mut reports = vec![bounded("the test's own drain", own).await];
    for drain in drains {
        reports.push(bounded("a drain", drain).await.unwrap());
    }
    let first = reports[0].clone();
    assert_eq!(first.outcome, DrainOutcome::Drained, "{first}");
    assert_eq!(first.in_flight_at_start, 3, "{first}");
    assert_eq!(first.completed, 3, "{first}");
    assert!(reports.iter().all(|report| *report == first));
    for client in clients {
        let seen = bounded("a client", client).await.unwrap().unwrap();
        assert_eq!(seen.status, StatusCode::OK);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn force_and_drain_racing_from_many_tasks_decide_once() {
    let mut server = Server::start().await;
    let addr = server.addr;
    let clients: Vec<_> = (0..2)
        .map(|_| tokio::spawn(async move { fetch(addr, "/gate").await }))
        .collect();
    server.wait_entered(2).await;

    let tasks = 64;
    let barrier = Arc::new(Barrier::new(tasks));
    let forced_here = Arc::new(AtomicUsize::new(0));
    let racers: Vec<_> = (0..tasks)
        .map(|i| {
            let shutdown = server.shutdown;
            let barrier = barrier.clone();
            let forced_here = forced_here.clone();
            tokio::spawn(async move {
                barrier.wait().await;
                if i % 2 == 0 && shutdown.force() {
                    // Relaxed: a tally, read after every task has been joined.
                    forced_here.fetch_add(1, Ordering::Relaxed);
                }
                shutdown.drain(LONG_DRAIN).unwrap().await
            })
        })
        .collect();
    let mut reports = Vec::new();
    for racer in racers {
        reports.push(bounded("a racer", racer).await.unwrap());
    }
    assert_eq!(
        forced_here.load(Ordering::Relaxed),
        1,
        "exactly one force decides"
    );
    let first = reports[0].clone();
    assert_eq!(first.outcome, DrainOutcome::TimedOut, "{first}");
    assert!(first.forced, "{first}");
    assert_eq!(first.in_flight_at_start, 2, "{first}");
    assert_eq!(first.still_running, 2, "{first}");
    assert!(reports.iter().all(|report| *report == first));
    assert!(
        !server.shutdown.force(),
        "a decided drain cannot be forced again"
    );

    server.open_gate();
    for client in clients {
        let outcome = bounded("a client", client).await.unwrap();
        assert!(
            looks_cut(&outcome),
            "a forced response must look cut: {outcome:?}"
        );
    }
    let shutdown = server.close().await;
    assert_eq!(shutdown.in_flight(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forcing_an_idle_server_from_many_tasks_reports_drained() {
    let server = Server::start().await;
    let tasks = 32;
    let barrier = Arc::new(Barrier::new(tasks));
    let racers: Vec<_> = (0..tasks)
        .map(|_| {
            let shutdown = server.shutdown;
            let barrier = barrier.clone();
            tokio::spawn(async move {
                barrier.wait().await;
                let forced = shutdown.force();
                (forced, shutdown.drain(Duration::ZERO).unwrap().await)
            })
        })
        .collect();
    for racer in racers {
        let (forced, report) = bounded("a racer", racer).await.unwrap();
        assert!(
            !forced,
            "nothing was running, so there was nothing to force"
        );
        assert_eq!(report.outcome, DrainOutcome::Drained, "{report}");
        assert!(!report.forced, "{report}");
    }
}

// === requests racing the phase changes ===

/// One response as a racing client saw it, with the phase around it.
struct Raced {
    sent_while_closed: bool,
    received_while_open: bool,
    seen: Seen,
}

/// Sends `path` over and over on one connection until the server closes it (which it does
/// once draining), reconnecting never; records each response.
async fn race_client(
    addr: SocketAddr,
    shutdown: Shutdown,
    path: &'static str,
    progress: mpsc::UnboundedSender<()>,
) -> Vec<Raced> {
    let mut sender = connect(addr).await;
    let mut raced = Vec::new();
    for _ in 0..100_000 {
        let sent_while_closed = shutdown.phase().admission_closed();
        let seen = match send(&mut sender, path).await {
            Ok(seen) => seen,
            Err(error) => panic!("transport error while racing phase changes: {error}"),
        };
        let received_while_open = !shutdown.phase().admission_closed();
        let closes = seen.headers.get(CONNECTION).is_some_and(|v| v == "close");
        raced.push(Raced {
            sent_while_closed,
            received_while_open,
            seen,
        });
        let _ = progress.send(());
        if closes {
            return raced;
        }
    }
    panic!("the server never closed the connection while draining");
}

async fn wait_progress(progress: &mut mpsc::UnboundedReceiver<()>, n: usize) {
    for _ in 0..n {
        bounded("client progress", progress.recv())
            .await
            .expect("all racing clients stopped early");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_racing_lame_duck_and_drain_are_served_or_cleanly_rejected() {
    let server = Server::start().await;
    let shutdown = server.shutdown;
    let (progress_tx, mut progress) = mpsc::unbounded_channel();
    let clients: Vec<_> = (0..16)
        .map(|_| tokio::spawn(race_client(server.addr, shutdown, "/", progress_tx.clone())))
        .collect();
    drop(progress_tx);

    wait_progress(&mut progress, 200).await;
    assert!(shutdown.begin_lame_duck());
    assert!(!shutdown.begin_lame_duck(), "lame duck begins once");
    wait_progress(&mut progress, 200).await;
    let report = expect_drained(shutdown.drain(LONG_DRAIN).unwrap()).await;

    let mut served = 0;
    let mut rejected = 0;
    for client in clients {
        for raced in bounded("a racing client", client).await.unwrap() {
            let seen = raced.seen;
            match seen.status {
                StatusCode::OK => {
                    served += 1;
                    assert!(!raced.sent_while_closed, "served after admission closed");
                    assert_eq!(&seen.body.unwrap()[..], b"ok\n", "a served body was cut");
                }
                StatusCode::SERVICE_UNAVAILABLE => {
                    rejected += 1;
                    assert!(!raced.received_while_open, "rejected while admitting");
                    assert!(seen.headers.contains_key(RETRY_AFTER));
                    assert_eq!(seen.headers[CONNECTION], "close");
                    assert!(seen.body.is_ok(), "a rejection is a whole response");
                }
                other => panic!("unexpected status {other} while racing phase changes"),
            }
        }
    }
    assert!(served >= 400, "the load was served before draining");
    assert_eq!(shutdown.rejected(), rejected, "{report}");
    assert!(report.rejected <= rejected, "{report}");
    // The racing clients may all have stopped at a served `Connection: close` before any
    // was turned away; one request now is certainly late, and is rejected cleanly.
    let late = bounded("a late request", fetch(server.addr, "/"))
        .await
        .unwrap();
    assert_eq!(late.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(late.headers.contains_key(RETRY_AFTER));
    assert_eq!(late.headers[CONNECTION], "close");
    assert_eq!(shutdown.rejected(), rejected + 1);
    let shutdown = server.close().await;
    assert_eq!(shutdown.in_flight(), 0);
    // After a resolved drain nothing is admitted, on any connection.
    assert!(shutdown.guard().is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_racing_a_forced_drain_are_served_whole_cut_or_rejected() {
    let mut server = Server::start().await;
    let shutdown = server.shutdown;
    // Held open across the force, so there is always something for it to cut.
    let held: Vec<_> = (0..4)
        .map(|_| {
            let addr = server.addr;
            tokio::spawn(async move { fetch(addr, "/gate").await })
        })
        .collect();
    server.wait_entered(held.len()).await;
    let (progress_tx, mut progress) = mpsc::unbounded_channel();
    let clients: Vec<_> = (0..16)
        .map(|_| {
            let progress = progress_tx.clone();
            let addr = server.addr;
            tokio::spawn(async move {
                // A forced drain cuts bodies, and hyper then closes their connections: a
                // client reads that as a cut body, which is the behaviour under test.
                let mut sender = connect(addr).await;
                let mut raced = Vec::new();
                for _ in 0..100_000 {
                    let outcome = send(&mut sender, "/stream").await;
                    let ends = match &outcome {
                        Ok(seen) => {
                            seen.body.is_err()
                                || seen.headers.get(CONNECTION).is_some_and(|v| v == "close")
                        }
                        Err(error) if error.is_incomplete_message() => true,
                        Err(error) => panic!("transport error while racing a force: {error}"),
                    };
                    raced.push(outcome);
                    let _ = progress.send(());
                    if ends {
                        break;
                    }
                }
                raced
            })
        })
        .collect();
    drop(progress_tx);

    wait_progress(&mut progress, 100).await;
    assert!(shutdown.begin_lame_duck());
    wait_progress(&mut progress, 100).await;
    let drain = shutdown.drain(LONG_DRAIN).unwrap();
    assert!(shutdown.force(), "the held requests were still running");
    let report = bounded("the forced drain", drain).await;
    assert_eq!(report.outcome, DrainOutcome::TimedOut, "{report}");
    assert!(report.forced, "{report}");
    assert!(report.still_running >= held.len(), "{report}");
    assert_eq!(
        report.completed + report.still_running,
        report.in_flight_at_start,
        "{report}"
    );

    let whole_stream: String = (0..16).map(|i| format!("chunk {i}\n")).collect();
    let (mut whole, mut cut, mut rejected) = (0, 0, 0u64);
    for client in clients {
        for outcome in bounded("a racing client", client).await.unwrap() {
            let Ok(seen) = outcome else {
                // Cut before the headers were written.
                cut += 1;
                continue;
            };
            match (seen.status, &seen.body) {
                (StatusCode::OK, Ok(body)) => {
                    whole += 1;
                    assert_eq!(
                        &body[..],
                        whole_stream.as_bytes(),
                        "a whole body has every chunk"
                    );
                }
                (StatusCode::OK, Err(_)) => cut += 1,
                (StatusCode::SERVICE_UNAVAILABLE, Ok(_)) => rejected += 1,
                (status, body) => panic!("unexpected response {status} {body:?}"),
            }
        }
    }
    server.open_gate();
    for client in held {
        let outcome = bounded("a held request", client).await.unwrap();
        assert!(
            looks_cut(&outcome),
            "a forced response must look cut: {outcome:?}"
        );
        cut += 1;
    }
    assert!(whole >= 200, "the load was served before the force");
    assert!(
        cut <= report.still_running,
        "cut more than were running: {report}"
    );
    let shutdown = server.close().await;
    assert_eq!(shutdown.rejected(), rejected);
    assert_eq!(shutdown.in_flight(), 0, "a cut or rejected request leaked");
}
