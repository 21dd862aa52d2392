//! The long-lived deadline's edges: a zero grace, and answers that meet the deadline. What
//! the report lists as cut is what was cut: a response sent whole is never among them.

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use axum::routing::get;
use axum::{Extension, Router};
use http::Method;
use support::http::serve_until_closing;
use support::raw::{read_to_close, split_head};
use support::sse::{idle_sse_app, open_event_stream, open_until, parse_events, FINAL_EVENT};
use support::{assert_only_the_watcher_was_cut, bounded, drain_past_the_long_lived_deadline};
use tokio::sync::oneshot;
use tower_drain::{DrainOutcome, DrainSignal, LongLivedKind, LongLivedLayer, Shutdown};

const LONG: Duration = Duration::from_secs(60);

/// How many times the zero-grace drain is run. Whether the drain's long-lived timer or the
/// stream's own wake-up comes first is up to the scheduler; before the two were ordered, about
/// one run in twenty cut the stream, so this many runs all but always showed it.
const ROUNDS: usize = 1000;

/// With a zero grace an idle event stream is asked to finish and then, at once, cut if it has
/// not: being between events, it can finish at once, so it always ends with the final event
/// and a clean end, and the report lists nothing cut.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zero_grace_finishes_an_idle_event_stream_with_its_final_event_every_time() {
    for round in 0..ROUNDS {
        let shutdown = Shutdown::new();
        shutdown.set_long_lived_grace(Duration::ZERO);
        let server = serve_until_closing(idle_sse_app(shutdown), shutdown).await;
        let reading = open_until(server.addr, "/events", b"data: ready\n\n").await;

        let report = bounded("drain", shutdown.drain(LONG).unwrap()).await;
        let decoded = reading.finish().await;
        assert!(decoded.terminated, "round {round}: the stream was cut");
        let (events, rest) = parse_events(&decoded.data);
        assert!(rest.is_empty(), "round {round}");
        assert_eq!(events, ["data: ready", FINAL_EVENT], "round {round}");
        assert!(report.is_drained(), "round {round}: {report}");
        bounded("the server", server.task).await.unwrap();
    }
}

/// A server on a runtime and thread of its own, which the test can hold still: what the
/// server would do once woken then happens only when the test lets it.
struct HeldServer {
    addr: SocketAddr,
    runtime: tokio::runtime::Handle,
    stopped: oneshot::Receiver<()>,
}

impl HeldServer {
    /// Serves `app` until the drain begins (axum's graceful shutdown on `closing`).
    async fn start(app: Router, shutdown: Shutdown) -> HeldServer {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let (runtime_tx, runtime_rx) = oneshot::channel();
        let (stopped_tx, stopped) = oneshot::channel();
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime_tx.send(runtime.handle().clone()).unwrap();
            runtime.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).unwrap();
                axum::serve(listener, app)
                    .with_graceful_shutdown(shutdown.closing())
                    .await
                    .unwrap();
            });
            let _ = stopped_tx.send(());
        });
        let runtime = bounded("the server's runtime", runtime_rx).await.unwrap();
        HeldServer {
            addr,
            runtime,
            stopped,
        }
    }

    /// Holds the server's only thread until the returned sender is used or dropped.
    async fn hold(&self) -> std::sync::mpsc::Sender<()> {
        let (held_tx, held) = oneshot::channel();
        let (release, released) = std::sync::mpsc::channel::<()>();
        self.runtime.spawn(async move {
            held_tx.send(()).unwrap();
            // Blocks the thread on purpose: nothing else on this runtime runs meanwhile.
            let _ = released.recv();
        });
        bounded("the server to be held", held).await.unwrap();
        release
    }
}

/// The order the race above leaves to chance, made certain: the long-lived deadline passes
/// before the server polls the idle stream again. The stream can still end between events,
/// at once, so it does, with its final event; the report lists nothing cut but the guard
/// that watched for the deadline.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zero_grace_finishes_an_event_stream_first_polled_after_the_deadline() {
    let shutdown = Shutdown::new();
    shutdown.set_long_lived_grace(Duration::ZERO);
    let server = HeldServer::start(idle_sse_app(shutdown), shutdown).await;
    let reading = open_until(server.addr, "/events", b"data: ready\n\n").await;

    let release = server.hold().await;
    let drain = drain_past_the_long_lived_deadline(shutdown, LONG).await;
    release.send(()).unwrap();

    let decoded = reading.finish().await;
    assert!(decoded.terminated, "the stream was cut");
    let (events, rest) = parse_events(&decoded.data);
    assert!(rest.is_empty());
    assert_eq!(events, ["data: ready", FINAL_EVENT]);
    let report = bounded("drain", drain).await.unwrap();
    assert_eq!(report.outcome, DrainOutcome::Drained, "{report}");
    assert_only_the_watcher_was_cut(&report);
    bounded("the server", server.stopped).await.unwrap();
}

/// The same for a long-poll: with a zero grace, one whose handler answers its `DrainSignal`
/// at once sends that answer whole, even when the server first polls it after the deadline,
/// and is not listed as cut.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zero_grace_delivers_a_long_polls_answer_to_its_signal_and_does_not_list_it() {
    let shutdown = Shutdown::new();
    shutdown.set_long_lived_grace(Duration::ZERO);
    let (entered_tx, mut entered) = tokio::sync::mpsc::channel::<()>(1);
    let poll = move |Extension(signal): Extension<DrainSignal>| async move {
        entered_tx.send(()).await.unwrap();
        signal.await;
        "draining\n"
    };
    let app = Router::new()
        .route("/poll", get(poll).layer(LongLivedLayer::route(shutdown)))
        .layer(shutdown.layer());
    let server = HeldServer::start(app, shutdown).await;
    let mut client = open_event_stream(server.addr, "/poll").await;
    bounded("the long-poll to start", entered.recv())
        .await
        .unwrap();

    let release = server.hold().await;
    let drain = drain_past_the_long_lived_deadline(shutdown, LONG).await;
    release.send(()).unwrap();

    let mut raw = Vec::new();
    bounded("the answer", read_to_close(&mut client, &mut raw)).await;
    let (head, body) = split_head(&raw);
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert_eq!(body, b"draining\n");
    let report = bounded("drain", drain).await.unwrap();
    assert_only_the_watcher_was_cut(&report);
    bounded("the server", server.stopped).await.unwrap();
}

/// A zero grace cuts at once: the long-lived deadline has passed by the drain's first poll,
/// as a zero drain timeout is decided there, rather than at the timer's next tick.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zero_grace_passes_the_long_lived_deadline_at_the_drains_first_poll() {
    use futures_util::FutureExt;

    let shutdown = Shutdown::new();
    shutdown.set_long_lived_grace(Duration::ZERO);
    let guard = shutdown
        .long_lived_guard(LongLivedKind::Upgrade, Method::GET, "/ws")
        .unwrap();
    let mut drain = Box::pin(shutdown.drain(LONG).unwrap());
    assert!(
        (&mut drain).now_or_never().is_none(),
        "the guard holds the drain"
    );
    assert!(
        guard.deadline().now_or_never().is_some(),
        "the long-lived deadline has not passed"
    );
    drop(guard);
    let report = bounded("drain", drain).await;
    assert_eq!(report.outcome, DrainOutcome::Drained, "{report}");
    assert_eq!(report.long_lived.len(), 1, "the guard was cut: {report}");
}
