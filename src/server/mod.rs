//! A plain hyper server whose connections drain with the [`Shutdown`] controller.
//!
//! Middleware sees requests, not connections: it cannot send an HTTP/2 GOAWAY nor close an
//! idle keep-alive connection. [`serve`] does that part. It accepts TCP connections, speaks
//! HTTP/1 or HTTP/2 on each (hyper-util's automatic connection builder picks by the client's
//! first bytes), and follows the controller:
//!
//! | when | what the server does |
//! |---|---|
//! | [`Shutdown::closing`] (admission closes) | stops accepting and shuts every connection down gracefully: HTTP/2 gets GOAWAY, HTTP/1 closes after the response in progress, idle keep-alive connections close at once |
//! | [`Shutdown::aborted`] (drain cut short), the drain deadline whatever the outcome, or any [`Shutdown::force`] call, even one that found nothing to cut | closes whatever connection is still open, after one last poll of it and of its HTTP/2 streams, in which a request whose handler is stalled answers its 503; an HTTP/1.0 one, whose exchange is then unfinished (a response unsent in part, or its body stalled outside any count), is reset |
//! | hyper is done with a connection | shuts its sending side and reads what the client still sends until it closes or goes quiet (a lingering close), so those bytes cannot make the kernel reset the connection and drop the unsent tail of its last response; a connection with no response to protect (never written to, or idle past the linger's wait) closes at once; an HTTP/1.0 connection whose response the server cut short (a body cut at the deadline or failing) is reset, so that a body only its end delimits is not taken as whole |
//! | every connection closed, and every HTTP/2 stream's task ended | [`serve`] returns: nothing it ran is still counted |
//!
//! Put [`Shutdown::layer`] on the service so that requests in flight are counted and late
//! ones answered 503, and await [`Shutdown::drain`] beside the server: the drain makes the
//! report and ends long-lived responses at their own deadline. At the drain deadline, either
//! of them ends the drain (whichever acts first), firing [`Shutdown::aborted`] if anything is
//! still running.
//!
//! [`serve_with_peer`] does the same with a service made for each connection from the
//! client's address, for handlers that need it (axum's `ConnectInfo`).
//!
//! Available with the `hyper-server` cargo feature.
//!
//! # Example
//!
//! ```no_run
//! use std::convert::Infallible;
//! use std::time::Duration;
//!
//! use http::{Request, Response};
//! use http_body_util::Full;
//! use hyper::body::Incoming;
//! use tower::{service_fn, Layer};
//! use tower_drain::Shutdown;
//!
//! # #[tokio::main]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let shutdown = Shutdown::new();
//! let hello = service_fn(|_req: Request<Incoming>| async {
//!     Ok::<_, Infallible>(Response::new(Full::new(&b"hello\n"[..])))
//! });
//! let service = shutdown.layer().layer(hello);
//!
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:3000").await?;
//! let server = tokio::spawn(tower_drain::server::serve(listener, service, shutdown));
//!
//! tokio::signal::ctrl_c().await?;
//! // Closing admission makes the server stop accepting and wind its connections down; the
//! // drain waits for the requests in flight, and its deadline closes what is left.
//! let report = shutdown.drain(Duration::from_secs(10))?.await;
//! server.await?;
//! println!("{report}");
//! # Ok(())
//! # }
//! ```

use std::error::Error as StdError;
use std::io;
use std::net::SocketAddr;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::pin::pin;
use std::time::Duration;

use http::{Request, Response};
use http_body::Body;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tower_service::Service;

use crate::{DrainOutcome, Shutdown};

mod linger;
mod streams;

use streams::StreamExecutor;

type BoxError = Box<dyn StdError + Send + Sync>;

/// Serves `service` on every connection `listener` accepts, until `shutdown` has closed
/// admission and every connection is closed.
///
/// Each connection speaks HTTP/1.1 or HTTP/2 (with prior knowledge, as gRPC clients do),
/// chosen by its first bytes; HTTP/1 upgrades (WebSocket) are supported. Once
/// [`Shutdown::closing`] fires, the listener is dropped and every connection is shut down
/// gracefully: HTTP/2 connections get GOAWAY and finish the streams already open, HTTP/1
/// connections close after the response in progress, idle ones at once. Connections still
/// open when [`Shutdown::aborted`] fires (the drain deadline, or [`Shutdown::force`]) are
/// closed then, after one last poll in which a request whose handler is stalled answers its
/// 503, and so are those still open at the drain deadline after a drain that ended
/// `Drained` (a client not reading the tail of a finished response, an HTTP/2 client that
/// never answers the GOAWAY), so `serve` returns by the drain deadline. Any `force` call is
/// the deadline too, even one that found nothing running to cut: before a drain, or after
/// one that ended `Drained` with connections still open. At the deadline the drain is
/// decided before anything is closed, as the `Drain` future's own timer would decide it, so
/// the responses `serve` closes are reported still running, not completed, whether or not
/// the `Drain` was being awaited.
///
/// A connection hyper is done with is closed gently: its sending side is shut, so the
/// client reads the last response to its end, and what the client still sends (an HTTP/2
/// client's WINDOW_UPDATE or PING, the rest of an upload the handler did not read) is read
/// and discarded until the client closes, 5 s pass with nothing written by the server nor
/// read from the client (the idle time before the close counts, so a keep-alive connection
/// idle that long closes at once), 30 s pass in all, or the drain deadline comes. Closed
/// outright, such a socket is reset by the kernel, which drops whatever part of the
/// response it had not sent yet. A connection the server never wrote a byte on (a client
/// that connected and sent nothing, or never a whole request head) has no response to
/// protect, and is closed at once. An HTTP/1.0 connection that hyper ended because of the
/// server's own side (a response body that failed, cut at the drain deadline included) is
/// reset: sent to an HTTP/1.0 client, a body of unknown length ends where the connection
/// does, and a clean end would complete the part sent. So is an HTTP/1.0 connection closed
/// at the deadline, with an exchange unfinished: part of a response unsent, or not yet given
/// by a body no layer counts. Over HTTP/1.1 and HTTP/2 the framing shows a cut response as
/// cut, and such connections close as any other.
///
/// Returns once every connection is closed and the task of every HTTP/2 stream has ended
/// (hyper runs each stream on a task apart from its connection's), so that nothing it ran
/// is still counted or running. Errors of single connections (a client that resets, a
/// malformed request) end that connection only and are logged at `debug`; accept errors
/// (out of file descriptors) are logged and retried after a short pause. An HTTP/1 client
/// that shuts its sending side before its answer is taken to have gone, as nginx and Go's
/// server take it: its request is cancelled unanswered, so a client that hung up does not
/// hold the drain (a client that half-closes on purpose gets no answer).
///
/// An upgraded connection (WebSocket) leaves hyper's hands once upgraded, and with it this
/// server's; hold a [`Shutdown::long_lived_guard`] in its task so the drain counts it and
/// names it in the report, close it when the guard's `signal()` fires at drain start, and
/// drop it at the guard's `deadline()` if the peer never answers (`examples/websocket.rs`).
pub async fn serve<S, B>(listener: TcpListener, service: S, shutdown: Shutdown)
where
    S: Service<Request<Incoming>, Response = Response<B>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    serve_with_peer(listener, move |_peer| service.clone(), shutdown).await;
}

/// As [`serve`], with each connection served by the service `make_service` returns for the
/// connection's peer address: for handlers that need the client's address (logging, rate
/// limits), which `serve` does not pass on. With axum, give the router the `ConnectInfo`
/// that axum's `into_make_service_with_connect_info` would:
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> std::io::Result<()> {
/// # let (app, shutdown) = (axum::Router::new(), tower_drain::Shutdown::new());
/// use std::net::SocketAddr;
///
/// use axum::extract::ConnectInfo;
/// use axum::Extension;
/// use tower::Layer;
///
/// # let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
/// let server = tokio::spawn(tower_drain::server::serve_with_peer(
///     listener,
///     move |peer: SocketAddr| Extension(ConnectInfo(peer)).layer(app.clone()),
///     shutdown,
/// ));
/// # let _report = shutdown.drain(std::time::Duration::ZERO).unwrap().await;
/// # server.await.unwrap();
/// # Ok(())
/// # }
/// ```
///
/// `make_service` is called once per accepted connection, on the accepting task: keep it
/// cheap (a clone and a wrapper), since the next connection waits for it. If it panics, that
/// connection is closed unanswered (the panic is logged) and `serve` goes on.
pub async fn serve_with_peer<M, S, B>(
    listener: TcpListener,
    mut make_service: M,
    shutdown: Shutdown,
) where
    M: FnMut(SocketAddr) -> S,
    S: Service<Request<Incoming>, Response = Response<B>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    // Fired at the deadline, before `cut`: every HTTP/2 stream's task is polled once more,
    // so that a request whose handler is stalled answers its 503, and then ends.
    let last_poll = CancellationToken::new();
    let (executor, mut streams) = streams::executor(last_poll.clone());
    let mut builder = auto::Builder::new(executor);
    // A timer lets hyper enforce its HTTP/1 header-read timeout, so a client that never
    // finishes its request head cannot hold a connection (and so the shutdown) open.
    builder.http1().timer(TokioTimer::new());
    builder.http2().timer(TokioTimer::new());
    let graceful = GracefulShutdown::new();
    // Cancelled at `aborted`, at any `force`, or at the drain deadline whatever the drain's
    // outcome: closes the connections still open then. A drain that ended `Drained` never
    // fires `aborted`, yet a connection can outlive every request it counted (a client not
    // reading the tail of a response already handed to hyper, an HTTP/2 client that never
    // answers the GOAWAY's PING).
    let cut = CancellationToken::new();

    let mut closing = pin!(shutdown.closing());
    loop {
        let accepted = tokio::select! {
            biased;
            () = &mut closing => break,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((stream, peer)) => {
                // As tonic's server does. Otherwise a small write that should go at once
                // (an HTTP/2 control frame such as the GOAWAY, a streamed message or event)
                // waits for the ACK of the one before, up to a delayed ACK's 40 ms each.
                if let Err(error) = stream.set_nodelay(true) {
                    tracing::debug!(%error, "could not set TCP_NODELAY; serving anyway");
                }
                // The application's code. A panic in it (a failed lookup for this peer)
                // must not end `serve`, which would leave the connections already accepted
                // unwatched: this connection is closed unanswered, as a panicking handler's
                // request is.
                match catch_unwind(AssertUnwindSafe(|| make_service(peer))) {
                    Ok(service) => spawn_connection(&builder, &graceful, stream, service, &cut),
                    Err(payload) => tracing::error!(
                        %peer,
                        panic = %crate::sequence::panic_message(payload),
                        "the service for a connection panicked as it was made: connection closed"
                    ),
                }
            }
            Err(error) => {
                if is_connection_error(&error) {
                    // The peer gave up between SYN and accept: nothing to do.
                    continue;
                }
                // Out of file descriptors and the like: a busy loop would not help, a pause
                // lets connections close and free what is missing.
                tracing::error!(%error, "accept failed; retrying in one second");
                tokio::select! {
                    () = &mut closing => break,
                    () = tokio::time::sleep(Duration::from_secs(1)) => {}
                }
            }
        }
    }
    // Refuse new connections from now on, rather than leave them in the backlog unanswered.
    drop(listener);
    tracing::debug!("stopped accepting; shutting connections down gracefully");
    // Resolves once every watched connection has ended, or was closed at the deadline.
    let connections = graceful.shutdown();
    tokio::pin!(connections);
    tokio::select! {
        () = &mut connections => {}
        () = drain_deadline(shutdown) => {
            tracing::debug!("drain deadline passed or aborted: closing the connections still open");
            // The HTTP/2 streams first, each polled once more (queueing the 503 of a stalled
            // handler) and ended; then the connections, each polled once more (sending what
            // its streams queued) and closed. Each stream task ends at that poll.
            last_poll.cancel();
            streams.ended().await;
            cut.cancel();
            connections.await;
        }
    }
    // An HTTP/2 stream runs on a task of its own, which its connection's close only wakes:
    // wait for those tasks to drop the requests they hold, so that nothing `serve` ran is
    // still counted, or still running, when it returns. Each was woken as its connection
    // closed (h2 tells every stream of a closed connection) and ends when it next runs.
    streams.ended().await;
    tracing::debug!("every connection closed");
}

/// Resolves at the drain deadline, at [`Shutdown::aborted`] if that comes first, or at any
/// [`Shutdown::force`] call. Called once admission has closed. A force is the deadline
/// whether it cut anything or not, and whenever it comes: before any drain (there is then no
/// deadline until the `drain` call that follows, which must not put the deadline back), or
/// after a drain that ended `Drained` while connections are still open.
async fn drain_deadline(shutdown: Shutdown) {
    let core = shutdown.core;
    let deadline = async {
        match core.drain_deadline() {
            Some(deadline) => {
                tokio::time::sleep_until(deadline).await;
                // Decided before anything is cut, as the `Drain` future decides at the same
                // instant: closing a connection drops its requests, and a request dropped
                // first would be counted as finished, the drain reported `Drained` and
                // `aborted` never fired.
                core.decide(DrainOutcome::TimedOut, false);
            }
            // A `drain` call fixes the deadline before it closes admission, so `force`
            // closed it, and `force_called` below is about to resolve.
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        () = shutdown.aborted() => {}
        () = core.force_called() => {}
        () = deadline => {}
    }
    // A `decide` that found the outcome already fixed returns at once, while the call that
    // fixed it may still be recording the long-lived responses it cut: closing connections
    // now would drop them from the registry before they are named in the report. Closing
    // waits for the report to be published. Armed before the check, so it cannot miss it.
    let published = core.decided_notify().notified();
    if core.report().is_none() {
        published.await;
    }
}

/// Serves one connection on its own task, watched for graceful shutdown and cut at the drain
/// deadline.
fn spawn_connection<S, B>(
    builder: &auto::Builder<StreamExecutor>,
    graceful: &GracefulShutdown,
    stream: TcpStream,
    service: S,
    cut: &CancellationToken,
) where
    S: Service<Request<Incoming>, Response = Response<B>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    let (socket, returned) = linger::lend(stream);
    let connection = builder
        .serve_connection_with_upgrades(TokioIo::new(socket), TowerToHyperService::new(service))
        .into_owned();
    let connection = graceful.watch(connection);
    // Held until the lingering close ends, so that `serve` waits for it as for the
    // connection itself: returning earlier could let the process exit and reset the socket.
    let lingering = graceful.watcher();
    let cut = cut.clone().cancelled_owned();
    tokio::spawn(async move {
        tokio::pin!(cut);
        let cut_short = tokio::select! {
            // The connection first: woken by the cut, it gets one last poll, in which a
            // counted HTTP/1 request whose handler is stalled answers its 503 (the deadline
            // has been decided by then), and the 503s its HTTP/2 streams queued in their own
            // last poll are sent, before the socket closes, rather than nothing at random.
            biased;
            result = connection => match result {
                Ok(()) => false,
                Err(error) => {
                    tracing::debug!(%error, "connection ended with an error");
                    failed_on_the_server(&*error)
                }
            },
            // Dropping the connection closes its socket: the drain deadline has passed.
            () = &mut cut => {
                tracing::debug!("connection closed at the drain deadline");
                returned.close_at_deadline();
                return;
            }
        };
        tokio::select! {
            // The linger first: a connection to reset is reset in its first poll, even when
            // the deadline that cut its response has passed already.
            biased;
            () = returned.linger(cut_short) => {}
            () = cut => tracing::debug!("lingering connection closed at the drain deadline"),
        }
        drop(lingering);
    });
}

/// True when a connection ended because the server's own code failed mid-exchange: a
/// response body that failed (cut at the drain deadline, or failing by itself), or the
/// service's error. These are hyper's "user" errors that carry the application's error; the
/// others (a `1xx` status, a forbidden header) are answered by hyper with a `500` of its
/// own, which a reset could throw away. The exchange in progress was not answered whole, so
/// an HTTP/1.0 connection is reset rather than closed gently (see `Returned::linger`).
/// Only HTTP/1 connections end this way: over HTTP/2 such a failure resets its stream alone.
fn failed_on_the_server(error: &(dyn StdError + 'static)) -> bool {
    let mut source = Some(error);
    // Bounded by the chain's length, which is finite: each error owns its source.
    while let Some(error) = source {
        if let Some(hyper) = error.downcast_ref::<hyper::Error>() {
            return hyper.is_user() && hyper.source().is_some();
        }
        source = error.source();
    }
    false
}

/// Accept errors that concern one half-open connection only, not the listener.
fn is_connection_error(error: &io::Error) -> bool {
    matches!(
        error.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
    )
}
