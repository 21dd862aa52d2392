//! The demo server: the whole shutdown timeline on a small axum app, served by
//! `tower_drain::server::serve`.
//!
//! ```text
//! cargo run --release --example demo -- [--addr 127.0.0.1:3000] [--lame-duck-ms 2000]
//!                                        [--drain-timeout-ms 10000] [--json]
//! ```
//!
//! Start it, put some slow requests in flight, send SIGTERM (or press Ctrl-C) and watch:
//! readiness fails at once, requests are still served for the lame-duck delay, then new ones
//! are refused while those in flight finish, then the hooks close the stand-in database pool
//! and background worker, and a report is printed. Exit status: 0 when everything drained,
//! 1 when the drain timeout cut something, 2 for bad flags, a plan over its budget or an
//! address it cannot listen on.

use std::convert::Infallible;
use std::ffi::OsString;
use std::future::Future;
use std::io::{IsTerminal, Write};
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::Query;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use futures_util::stream;
use serde::Deserialize;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tower_drain::{DrainOutcome, LongLivedLayer, Shutdown, ShutdownReport, ShutdownSequence};

/// Kubernetes' default `terminationGracePeriodSeconds` less the 5 s `preStop` sleep of
/// `examples/kubernetes.yaml`: what the sequence must fit in.
const BUDGET: Duration = Duration::from_secs(25);
const HOOK_TIMEOUT: Duration = Duration::from_secs(1);
/// How long to wait, after the sequence, for the server to flush what it has written.
const FLUSH_WAIT: Duration = Duration::from_secs(5);
/// Shorter when the drain was cut (the connections left are being aborted anyway) or the
/// shutdown forced.
const FLUSH_WAIT_SHORT: Duration = Duration::from_millis(300);

const USAGE: &str = "\
usage: demo [--addr 127.0.0.1:3000] [--lame-duck-ms 2000] [--drain-timeout-ms 10000] [--json]";

#[tokio::main]
async fn main() -> ExitCode {
    if std::env::args_os()
        .skip(1)
        .any(|arg| arg == "-h" || arg == "--help")
    {
        // Help read by a pager closed early is still not an error.
        let _ = writeln!(std::io::stdout(), "{USAGE}");
        return ExitCode::SUCCESS;
    }
    let args = match Args::parse(std::env::args_os().skip(1)) {
        Ok(args) => args,
        Err(error) => return refuse(format_args!("{error}\n{USAGE}")),
    };
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_target(false)
        .with_ansi(std::io::stderr().is_terminal())
        // A log line that cannot be written (stderr's reader gone) is lost, nothing more.
        // Reported, the failure would go to that same stderr with `eprintln!`, whose panic
        // would end the shutdown and lose the report and the exit status.
        .log_internal_errors(false)
        .init();

    // Readiness stays down until the listener is bound and the worker runs.
    let shutdown = Shutdown::new().hold_until_ready();
    let pool = Arc::new(Pool::open());
    let worker = Worker::spawn(shutdown);

    let sequence = ShutdownSequence::builder(shutdown)
        .lame_duck(Duration::from_millis(args.lame_duck_ms))
        .drain_timeout(Duration::from_millis(args.drain_timeout_ms))
        .hook("database pool", HOOK_TIMEOUT, {
            let pool = Arc::clone(&pool);
            move || async move { pool.close().await }
        })
        .hook("background worker", HOOK_TIMEOUT, move || worker.stop())
        .budget(BUDGET)
        .build();
    let sequence = match sequence {
        Ok(sequence) => sequence,
        Err(error) => return refuse(format_args!("{error}")),
    };

    let listener = match TcpListener::bind(args.addr).await {
        Ok(listener) => listener,
        Err(error) => return refuse(format_args!("cannot listen on {}: {error}", args.addr)),
    };
    let addr = listener
        .local_addr()
        .expect("a bound listener has an address");
    // The crate's own server rather than `axum::serve`: besides GOAWAY and closing idle
    // connections when admission closes, it closes each finished connection gently (a
    // client's late bytes cannot reset away the tail of its last response) and closes what
    // is left at the drain deadline.
    let server = tokio::spawn(tower_drain::server::serve(
        listener,
        app(shutdown),
        shutdown,
    ));
    shutdown.mark_ready();
    banner(addr, &args, &sequence);

    let report = sequence.run().await;
    // A further signal ends the wait for the server below, as a second one forces every
    // step before it. Listening starts before the report is out, so that whoever reads
    // the report and then signals is heard.
    let another_signal = next_signal();
    // The report first: if the orchestrator's SIGKILL comes during the wait below, it is
    // already out.
    print_report(&report, args.json);

    // A forced shutdown was asked to hurry: it gets the short wait even if nothing was cut.
    // The outcome, not `is_drained`: a drain that ended `Drained` but cut a long-lived
    // response closed no connection, and those the server still holds may be protecting the
    // tail of a finished response.
    let flush = if report.drain.outcome == DrainOutcome::Drained && report.forced_by.is_none() {
        FLUSH_WAIT
    } else {
        FLUSH_WAIT_SHORT
    };
    // Never past the budget: a plan that fills it leaves no time before the orchestrator's
    // SIGKILL, which would lose the exit status.
    let flush = flush.min(BUDGET.saturating_sub(report.total));
    let_connections_close(server, flush, another_signal).await;
    if report.drain.is_drained() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

/// Says why the demo will not serve, and returns its exit status, 2. Written like the
/// banner: a stderr nobody reads any more loses the message, not the exit status.
fn refuse(why: std::fmt::Arguments<'_>) -> ExitCode {
    let _ = writeln!(std::io::stderr(), "demo: {why}");
    ExitCode::from(2)
}

/// Every response the drain counted as finished has been handed to hyper, not necessarily
/// written to the socket: waits for the server's connections to close, for at most `limit`
/// and not past `another_signal`.
async fn let_connections_close<S>(
    server: JoinHandle<S>,
    limit: Duration,
    another_signal: impl Future<Output = &'static str>,
) {
    tokio::select! {
        closed = tokio::time::timeout(limit, server) => if closed.is_err() {
            tracing::warn!(
                wait_ms = limit.as_millis() as u64,
                "server still had connections open; exiting anyway"
            );
        },
        trigger = another_signal => tracing::warn!(
            trigger,
            "another signal: exiting without waiting for the server's connections to close"
        ),
    }
}

/// Prints the report on stdout, as one JSON line with `json`. A stdout nobody reads any more
/// (`println!` would panic) must cost neither the wait for connections nor the exit status:
/// the report goes to the log instead.
fn print_report(report: &ShutdownReport, json: bool) {
    let text = if json {
        serde_json::to_string(report).expect("a report always serialises") + "\n"
    } else {
        report.to_string()
    };
    let mut stdout = std::io::stdout().lock();
    if let Err(error) = stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush())
    {
        tracing::warn!(%error, report = text.trim_end(), "could not print the report on stdout");
    }
}

/// Resolves at the next SIGTERM or SIGINT, with its name. Listening starts at the call, not
/// at the first poll.
#[cfg(unix)]
fn next_signal() -> impl Future<Output = &'static str> {
    use tokio::signal::unix::{signal, SignalKind};
    let terminate = signal(SignalKind::terminate());
    let interrupt = signal(SignalKind::interrupt());
    async move {
        // The sequence listened for both already, so neither can fail to install; if one
        // did, the wait simply runs its course.
        let (Ok(mut terminate), Ok(mut interrupt)) = (terminate, interrupt) else {
            return std::future::pending().await;
        };
        tokio::select! {
            Some(()) = terminate.recv() => "SIGTERM",
            Some(()) = interrupt.recv() => "SIGINT",
            else => std::future::pending().await,
        }
    }
}

/// Resolves at the next Ctrl-C.
#[cfg(not(unix))]
fn next_signal() -> impl Future<Output = &'static str> {
    let ctrl_c = tokio::signal::ctrl_c();
    async move {
        if ctrl_c.await.is_err() {
            return std::future::pending().await;
        }
        "Ctrl-C"
    }
}

fn app(shutdown: Shutdown) -> Router {
    Router::new()
        .route("/", get(|| async { "ok\n" }))
        .route("/slow", get(slow))
        .route("/stream", get(chunks))
        // Server-sent events are found by their content type: on drain the layer sends the
        // final `event: shutdown` with a `retry:` hint and ends the stream between events.
        .route("/events", get(long_lived::events))
        // A long-poll route is marked, so its handler gets a `DrainSignal` and the report
        // names it if it is still waiting at the long-lived deadline.
        .route(
            "/poll",
            get(long_lived::poll).layer(LongLivedLayer::route(shutdown)),
        )
        .route_service("/readyz", shutdown.readiness())
        .route_service("/livez", shutdown.liveness())
        // Probes bypass the layer: never counted, never turned away while draining.
        .layer(shutdown.layer().bypass(&["/readyz", "/livez"]))
}

/// Writes the banner in one piece, whose first line is the address: a reader that takes
/// that line and leaves (`demo 2>&1 | head -1`) was still there for the rest. A stderr
/// nobody reads any more is no reason to stop: the banner is lost, nothing more.
fn banner(addr: SocketAddr, args: &Args, sequence: &ShutdownSequence) {
    let pid = std::process::id();
    let banner = format!(
        "\
demo: listening on http://{addr}
  lame duck {lame}ms, drain timeout {drain}ms, hooks {hooks}ms; planned {planned:?} of a {budget:?} budget

  try, in another terminal:
    curl -i http://{addr}/readyz                      # 200 now, 503 from SIGTERM on
    curl 'http://{addr}/slow?ms=5000' &               # in flight during the shutdown: completes
    curl -N 'http://{addr}/stream?chunks=20&interval_ms=500' &
    curl -N http://{addr}/events &                    # ends with `event: shutdown` on drain
    curl 'http://{addr}/poll?ms=60000' &              # answers \"draining\" on drain
    kill -TERM {pid}                                       # or Ctrl-C here; a second one forces
",
        lame = args.lame_duck_ms,
        drain = args.drain_timeout_ms,
        hooks = 2 * HOOK_TIMEOUT.as_millis(),
        planned = sequence.planned(),
        budget = sequence.budget(),
    );
    let _ = std::io::stderr().write_all(banner.as_bytes());
}

// === plain routes ===

#[derive(Deserialize)]
struct SlowQuery {
    ms: u64,
}

async fn slow(Query(SlowQuery { ms }): Query<SlowQuery>) -> String {
    tokio::time::sleep(Duration::from_millis(ms)).await;
    format!("slow {ms}\n")
}

#[derive(Deserialize)]
struct StreamQuery {
    chunks: u64,
    interval_ms: u64,
}

/// `chunks` chunks, the first at once and then one every `interval_ms`; text like the
/// other plain routes.
async fn chunks(Query(query): Query<StreamQuery>) -> impl IntoResponse {
    let interval = Duration::from_millis(query.interval_ms);
    let chunks = stream::unfold(0, move |i| async move {
        if i >= query.chunks {
            return None;
        }
        if i > 0 {
            tokio::time::sleep(interval).await;
        }
        Some((Ok::<_, Infallible>(format!("chunk {i}\n")), i + 1))
    });
    (
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        Body::from_stream(chunks),
    )
}

// === long-lived routes ===

/// The long-lived routes: neither ends itself on shutdown; `shutdown.layer()` does that.
mod long_lived {
    use std::convert::Infallible;
    use std::time::Duration;

    use axum::extract::Query;
    use axum::response::sse::{Event, Sse};
    use axum::Extension;
    use futures_util::{stream, Stream};
    use serde::Deserialize;
    use tower_drain::DrainSignal;

    const TICK: Duration = Duration::from_millis(100);

    /// `data: tick i` every 100 ms, for ever. On drain the layer ends it after a final
    /// `event: shutdown` with a `retry:` hint, so an `EventSource` reconnects elsewhere.
    pub(super) async fn events() -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
        let ticks = stream::unfold(0u64, |i| async move {
            tokio::time::sleep(TICK).await;
            Some((Ok(Event::default().data(format!("tick {i}"))), i + 1))
        });
        Sse::new(ticks)
    }

    #[derive(Deserialize)]
    pub(super) struct PollQuery {
        ms: u64,
    }

    /// Answers `timeout` after `ms`, or `draining` as soon as the drain begins.
    pub(super) async fn poll(
        Extension(signal): Extension<DrainSignal>,
        Query(PollQuery { ms }): Query<PollQuery>,
    ) -> &'static str {
        tokio::select! {
            () = signal => "draining\n",
            () = tokio::time::sleep(Duration::from_millis(ms)) => "timeout\n",
        }
    }
}

// === the stand-ins closed by hooks ===

/// A stand-in database pool: the hook closes its connections.
struct Pool {
    open: AtomicBool,
}

impl Pool {
    fn open() -> Self {
        Pool {
            open: AtomicBool::new(true),
        }
    }

    async fn close(&self) -> Result<(), &'static str> {
        // Relaxed: a flag with nothing else published through it.
        if !self.open.swap(false, Ordering::Relaxed) {
            return Err("pool already closed");
        }
        tokio::time::sleep(Duration::from_millis(20)).await; // "closing the connections"
        tracing::info!("database pool closed");
        Ok(())
    }
}

/// A stand-in background worker: runs a job every 200 ms and takes no new job once draining.
/// It is not in flight: its hook, after the drain, waits for the job in progress (bounded by
/// the hook's timeout), so an idle server's drain never depends on where a job happens to be.
struct Worker {
    task: JoinHandle<u64>,
}

impl Worker {
    fn spawn(shutdown: Shutdown) -> Self {
        let done = Arc::new(AtomicU64::new(0));
        let task = tokio::spawn(async move {
            loop {
                tokio::select! {
                    () = shutdown.closing() => break,
                    () = tokio::time::sleep(Duration::from_millis(200)) => {}
                }
                // "The job".
                tokio::time::sleep(Duration::from_millis(50)).await;
                // Relaxed: a statistic.
                done.fetch_add(1, Ordering::Relaxed);
            }
            done.load(Ordering::Relaxed)
        });
        Worker { task }
    }

    async fn stop(self) -> Result<(), String> {
        let jobs = self
            .task
            .await
            .map_err(|error| format!("worker failed: {error}"))?;
        tracing::info!(jobs, "background worker stopped");
        Ok(())
    }
}

// === flags ===

struct Args {
    addr: SocketAddr,
    lame_duck_ms: u64,
    drain_timeout_ms: u64,
    json: bool,
}

impl Args {
    fn parse(args: impl Iterator<Item = OsString>) -> Result<Args, String> {
        // `std::env::args` would panic on an argument that is not UTF-8.
        let mut args = args
            .map(|arg| {
                arg.into_string()
                    .map_err(|arg| format!("argument `{}` is not UTF-8", arg.to_string_lossy()))
            })
            .collect::<Result<Vec<_>, _>>()?
            .into_iter();
        let mut parsed = Args {
            addr: SocketAddr::from(([127, 0, 0, 1], 3000)),
            lame_duck_ms: 2000,
            drain_timeout_ms: 10_000,
            json: false,
        };
        while let Some(flag) = args.next() {
            let (name, inline) = match flag.split_once('=') {
                Some((name, value)) => (name.to_owned(), Some(value.to_owned())),
                None => (flag, None),
            };
            let mut value = || {
                inline
                    .clone()
                    .or_else(|| args.next())
                    .ok_or_else(|| format!("{name} needs a value"))
            };
            match name.as_str() {
                "--addr" => {
                    let value = value()?;
                    parsed.addr = value.parse().map_err(|_| {
                        format!("--addr: `{value}` is not an address like 127.0.0.1:3000")
                    })?;
                }
                "--lame-duck-ms" => parsed.lame_duck_ms = millis(&name, &value()?)?,
                "--drain-timeout-ms" => parsed.drain_timeout_ms = millis(&name, &value()?)?,
                "--json" if inline.is_none() => parsed.json = true,
                "--json" => return Err("--json takes no value".to_owned()),
                _ => return Err(format!("unknown flag `{name}`")),
            }
        }
        Ok(parsed)
    }
}

fn millis(flag: &str, value: &str) -> Result<u64, String> {
    value
        .parse()
        .map_err(|_| format!("{flag}: `{value}` is not a whole number of milliseconds"))
}
