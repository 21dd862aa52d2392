//! The server under test: a hyper HTTP/1 server on 127.0.0.1 with `shutdown.layer()` in front
//! of routes that stream, hang, panic or fail on request.

use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;

use bytes::Bytes;
use futures_util::stream::{self, StreamExt};
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tower::{Layer, ServiceExt};
use tower_drain::{Drain, DrainOutcome, DrainReport, Shutdown};

use super::{Body, BoxError};
use crate::support::bounded;

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
pub(super) struct Server {
    pub(super) addr: SocketAddr,
    pub(super) shutdown: Shutdown,
    entered: mpsc::UnboundedReceiver<&'static str>,
    gate: watch::Sender<bool>,
    accept: JoinHandle<()>,
    /// Every connection task holds a sender; `recv` returns `None` once all have ended.
    connections: mpsc::Receiver<()>,
}

impl Server {
    pub(super) async fn start() -> Server {
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
    pub(super) async fn wait_entered(&mut self, n: usize) {
        for _ in 0..n {
            bounded("a handler to be admitted", self.entered.recv())
                .await
                .expect("the server is gone");
        }
    }

    pub(super) fn open_gate(&self) {
        self.gate.send_replace(true);
    }

    /// Stops accepting, then waits for every connection to end, so that every response body
    /// the server held has been dropped. Clients must have closed their connections first.
    pub(super) async fn close(mut self) -> Shutdown {
        self.accept.abort();
        let _ = self.accept.await;
        bounded("every server connection to end", self.connections.recv()).await;
        self.shutdown
    }
}

/// Awaits `drain` and checks that it drained: the way to wait for the count to return to zero.
pub(super) async fn expect_drained(drain: Drain) -> DrainReport {
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
