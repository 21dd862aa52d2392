//! `tower_drain::server::serve` returns by the drain's deadline even when the drain itself
//! finished `Drained`: a connection that is still open for reasons the counter cannot see (a
//! client that stopped reading the tail of a response whose body was already handed to hyper,
//! an HTTP/2 client that never answers the GOAWAY's PING) must not hold `serve` for ever.
//!
//! Real server on 127.0.0.1, real clients. The drain resolves on real I/O; only after it has
//! resolved is the clock paused, so "an hour later" is Tokio's paused clock, not a wait.

mod support;

use std::convert::Infallible;
use std::time::Duration;

use bytes::Bytes;
use futures_util::{stream, StreamExt};
use http::{Request, Response};
use http_body::Frame;
use http_body_util::{Full, StreamBody};
use hyper::body::Incoming;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tower::{service_fn, Layer};
use tower_drain::{DrainOutcome, Shutdown};

use support::bounded;
use support::raw::{read_to_eof, read_until, write_get};

/// Far more than the kernel buffers on both ends of a loopback connection hold.
const BIG: usize = 64 * 1024 * 1024;

/// The drain's timeout: long, so the drain can only resolve `Drained` on real I/O.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(60);

/// Serves `/big` (a 64 MiB body of known length, one frame) and anything else `ok`, with
/// `shutdown.layer()` in front. `entered` gets one message per request that reached a handler.
async fn start(
    shutdown: Shutdown,
) -> (
    std::net::SocketAddr,
    tokio::task::JoinHandle<()>,
    mpsc::UnboundedReceiver<()>,
) {
    let (entered_tx, entered) = mpsc::unbounded_channel();
    let body = Bytes::from(vec![b'x'; BIG]);
    let routes = service_fn(move |request: Request<Incoming>| {
        let _ = entered_tx.send(());
        let body = if request.uri().path() == "/big" {
            body.clone()
        } else {
            Bytes::from_static(b"ok\n")
        };
        async move { Ok::<_, Infallible>(Response::new(Full::new(body))) }
    });
    let service = shutdown.layer().layer(routes);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(tower_drain::server::serve(listener, service, shutdown));
    (addr, server, entered)
}

/// After a `Drained` drain, pauses the clock and gives `server` an hour past the drain
/// deadline; fails if it has not returned by then.
async fn assert_returns_by_the_deadline(server: tokio::task::JoinHandle<()>, what: &str) {
    tokio::time::pause();
    let returned = tokio::time::timeout(DRAIN_TIMEOUT + Duration::from_secs(3600), server).await;
    assert!(
        returned.is_ok(),
        "serve still running an hour after the drain deadline ({what}); the drain was Drained, \
         so aborted() never fired and nothing closed the connection"
    );
}

#[tokio::test]
async fn serve_returns_by_the_drain_deadline_when_a_client_stops_reading_a_finished_body() {
    let shutdown = Shutdown::new();
    let (addr, server, mut entered) = start(shutdown).await;

    // An HTTP/1 client that asks for the big body and never reads a byte of it.
    let mut client = TcpStream::connect(addr).await.unwrap();
    client
        .write_all(b"GET /big HTTP/1.1\r\nhost: localhost\r\n\r\n")
        .await
        .unwrap();
    bounded("the handler to be called", entered.recv())
        .await
        .unwrap();

    // The body's only frame is handed to hyper at once, so the request stops counting and
    // the drain is Drained; most of the 64 MiB is still unsent.
    let report = bounded("the drain", shutdown.drain(DRAIN_TIMEOUT).unwrap()).await;
    assert_eq!(report.outcome, DrainOutcome::Drained, "{report}");
    assert_eq!(shutdown.in_flight(), 0);

    assert_returns_by_the_deadline(server, "HTTP/1 client not reading").await;
    drop(client);
}

#[tokio::test]
async fn serve_returns_by_the_drain_deadline_when_an_http2_client_goes_silent() {
    let shutdown = Shutdown::new();
    let (addr, server, mut entered) = start(shutdown).await;

    let client = silent_http2_client(addr, &mut entered).await;

    // Nothing in flight: Drained at once.
    let report = bounded("the drain", shutdown.drain(DRAIN_TIMEOUT).unwrap()).await;
    assert_eq!(report.outcome, DrainOutcome::Drained, "{report}");

    assert_returns_by_the_deadline(server, "HTTP/2 client silent after GOAWAY").await;
    drop(client);
}

#[tokio::test]
async fn serve_returns_at_once_after_a_force_with_nothing_running_and_no_drain() {
    let shutdown = Shutdown::new();
    let (addr, server, mut entered) = start(shutdown).await;
    let client = silent_http2_client(addr, &mut entered).await;

    // A second signal before any drain, say: nothing is running, so nothing is cut, and
    // there is no drain deadline. A force is the deadline, now: the connection the silent
    // client holds open is closed.
    assert!(!shutdown.force(), "nothing was running to cut short");
    bounded("serve to return after the force", server)
        .await
        .unwrap();
    drop(client);
}

/// A faulty tracing subscriber: every event panics.
struct PanicsOnEvents;

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for PanicsOnEvents {
    fn on_event(&self, _: &tracing::Event<'_>, _: tracing_subscriber::layer::Context<'_, S>) {
        panic!("the subscriber fails");
    }
}

/// The same force, on a thread whose tracing subscriber panics on the controller's events:
/// the `force` call panics, yet the drain is decided and `serve` still closes the connection
/// the silent client holds, rather than waiting on it for ever with no deadline to come.
#[tokio::test]
async fn serve_returns_after_a_force_whose_subscriber_panics() {
    use tracing_subscriber::layer::SubscriberExt;

    let shutdown = Shutdown::new();
    let (addr, server, mut entered) = start(shutdown).await;
    let client = silent_http2_client(addr, &mut entered).await;

    let forcer = std::thread::spawn(move || {
        let panics = tracing_subscriber::registry().with(PanicsOnEvents);
        tracing::subscriber::with_default(panics, || shutdown.force())
    });
    assert!(forcer.join().is_err(), "the subscriber panicked");
    assert_eq!(shutdown.phase(), tower_drain::Phase::Drained);
    bounded("serve to return after the force", server)
        .await
        .unwrap();
    drop(client);
}

/// A response still running at the drain deadline is reported as such, even when nothing
/// awaits the `Drain` until `serve` has returned: `serve`'s own close at the deadline drops
/// the response, and so its count, which must not make the drain read `Drained`.
#[tokio::test]
async fn a_response_serve_closes_at_the_deadline_is_reported_still_running() {
    let shutdown = Shutdown::new();
    // One chunk, then nothing, for ever.
    let stalls = service_fn(|_request: Request<Incoming>| async {
        let chunk = Ok::<_, Infallible>(Frame::data(Bytes::from_static(b"chunk\n")));
        let body = StreamBody::new(stream::iter([chunk]).chain(stream::pending()));
        Ok::<_, Infallible>(Response::new(body))
    });
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let service = shutdown.layer().layer(stalls);
    let server = tokio::spawn(tower_drain::server::serve(listener, service, shutdown));
    let mut client = TcpStream::connect(addr).await.unwrap();
    write_get(&mut client, "/").await;
    let mut received = Vec::new();
    assert!(
        bounded(
            "the first chunk",
            read_until(&mut client, &mut received, b"chunk")
        )
        .await
    );

    // Awaited only after `serve` has returned, as `let drain = shutdown.drain(..)?;
    // server.await?; drain.await` would.
    let drain = shutdown.drain(Duration::from_millis(50)).unwrap();
    bounded("serve to return at the deadline", server)
        .await
        .unwrap();
    let report = bounded("the drain", drain).await;
    assert_eq!(report.outcome, DrainOutcome::TimedOut, "{report}");
    assert_eq!(report.still_running, 1, "{report}");
    assert_eq!(report.completed, 0, "{report}");
    drop(client);
}

/// A request whose handler is still stalled at the drain deadline gets the layer's 503 as
/// `serve` closes its connection, every time: not a connection closed with nothing on it.
#[tokio::test]
async fn a_handler_stalled_at_the_deadline_gets_the_503_as_serve_closes() {
    // Each round a fresh server; a race decided at random would show within a few.
    for round in 0..10 {
        let shutdown = Shutdown::new();
        let (entered_tx, mut entered) = mpsc::unbounded_channel();
        let stalled = service_fn(move |_request: Request<Incoming>| {
            let _ = entered_tx.send(());
            std::future::pending::<Result<Response<Full<Bytes>>, Infallible>>()
        });
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let service = shutdown.layer().layer(stalled);
        let server = tokio::spawn(tower_drain::server::serve(listener, service, shutdown));
        let mut client = TcpStream::connect(addr).await.unwrap();
        write_get(&mut client, "/").await;
        bounded("the handler to start", entered.recv())
            .await
            .unwrap();

        let drain = shutdown.drain(Duration::from_millis(20)).unwrap();
        bounded("serve to return at the deadline", server)
            .await
            .unwrap();
        let answer = read_to_eof(client).await;
        assert!(
            answer.starts_with("HTTP/1.1 503 "),
            "round {round}: {answer:?}"
        );
        let report = bounded("the drain", drain).await;
        assert_eq!(report.outcome, DrainOutcome::TimedOut, "{report}");
    }
}

/// Long enough that a test which waited for it would fail at its bound first.
const HOUR: Duration = Duration::from_secs(3600);

#[tokio::test]
async fn serve_returns_at_once_after_a_force_with_nothing_running_then_a_drain() {
    let shutdown = Shutdown::new();
    let (addr, server, mut entered) = start(shutdown).await;
    let client = silent_http2_client(addr, &mut entered).await;

    // A shutdown sequence's order: a second signal during the lame duck forces, finding
    // nothing running, and the drain call that follows at once joins that outcome. The
    // force is still the deadline; the drain's own, an hour away, must not replace it.
    assert!(shutdown.begin_lame_duck());
    assert!(!shutdown.force(), "nothing was running to cut short");
    let report = bounded("the drain", shutdown.drain(HOUR).unwrap()).await;
    assert_eq!(report.outcome, DrainOutcome::Drained, "{report}");
    bounded("serve to return after the force", server)
        .await
        .unwrap();
    drop(client);
}

#[tokio::test]
async fn serve_returns_at_once_after_a_force_that_follows_a_drained_drain() {
    let shutdown = Shutdown::new();
    let (addr, server, mut entered) = start(shutdown).await;
    let client = silent_http2_client(addr, &mut entered).await;

    // Nothing in flight: Drained at once, but the silent client holds its connection open.
    let report = bounded("the drain", shutdown.drain(HOUR).unwrap()).await;
    assert_eq!(report.outcome, DrainOutcome::Drained, "{report}");
    // A second signal: the outcome is already decided, yet the connection still open is
    // what holds the process now, and the force is the one way left to end it early.
    assert!(!shutdown.force(), "the outcome was already decided");
    bounded("serve to return after the force", server)
        .await
        .unwrap();
    drop(client);
}

/// An HTTP/2 client (the h2 crate, whose connection is driven only when polled here) that
/// completes one request and is then never polled again, like a frozen process: it reads
/// nothing more, so it never answers the PING of the server's graceful GOAWAY. Returned to
/// be held open.
async fn silent_http2_client(
    addr: std::net::SocketAddr,
    entered: &mut mpsc::UnboundedReceiver<()>,
) -> impl Sized {
    let tcp = TcpStream::connect(addr).await.unwrap();
    let (sender, connection) = bounded("the HTTP/2 handshake", h2::client::handshake(tcp))
        .await
        .unwrap();
    let mut connection = Box::pin(connection);
    let body = bounded("one request on the HTTP/2 connection", async {
        let mut sender = tokio::select! {
            ready = sender.ready() => ready.unwrap(),
            _ = &mut connection => panic!("client connection ended early"),
        };
        let request = Request::get(format!("http://{addr}/")).body(()).unwrap();
        let (response, _) = sender.send_request(request, true).unwrap();
        let response = tokio::select! {
            response = response => response.unwrap(),
            _ = &mut connection => panic!("client connection ended early"),
        };
        let mut body = response.into_body();
        let mut bytes = Vec::new();
        // Bounded: the body is three bytes.
        for _ in 0..16 {
            let chunk = tokio::select! {
                chunk = body.data() => chunk,
                _ = &mut connection => panic!("client connection ended early"),
            };
            match chunk {
                Some(chunk) => bytes.extend_from_slice(&chunk.unwrap()),
                None => break,
            }
        }
        (bytes, sender)
    })
    .await;
    assert_eq!(&body.0[..], b"ok\n");
    bounded("the handler to be called", entered.recv())
        .await
        .unwrap();
    (body, connection)
}
