//! The application under test: one route per way a request can end, held at a gate where
//! the test has to act in the middle.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::body::Body;
use bytes::Bytes;
use futures_util::stream::{self, StreamExt};
use http::header::{CONNECTION, UPGRADE};
use http::{Request, Response, StatusCode};
use tower::Service;
use tower_drain::Shutdown;

use crate::support::gate::Gate;

/// Every route lives under this prefix: tonic routes a service by its name.
pub const PREFIX: &str = "/release/";

static CHUNK: [u8; 16 * 1024] = [b'x'; 16 * 1024];

/// The routes, picked by the last segment of the path:
///
/// | route | what it does |
/// |---|---|
/// | `full` | answers `hello` |
/// | `held` | waits at the gate, then answers `done` |
/// | `endless` | an endless body |
/// | `pending` | never answers |
/// | `panic` | waits at the gate, then panics |
/// | `fail` | sends `part`, waits at the gate, then its body fails |
/// | `body-panic` | sends `part`, waits at the gate, then its body panics |
/// | `head` | answers `hello` to any method (hyper leaves the body out for `HEAD`) |
/// | `no-content`, `not-modified` | 204 and 304 with a streamed body that is not empty |
/// | `upgrade` | 101, then holds the upgraded connection until the gate lets it go |
///
/// `held`, `endless`, `pending`, `panic`, `fail`, `body-panic` and `upgrade` report at the
/// gate when they start; `fail` and `body-panic` report again when their body waits there.
#[derive(Clone)]
pub struct App {
    pub shutdown: Shutdown,
    pub gate: Gate,
    /// The in-flight count the last handler saw as it started.
    seen: Arc<AtomicUsize>,
}

impl App {
    pub fn new(shutdown: Shutdown) -> App {
        App {
            shutdown,
            gate: Gate::new(),
            seen: Arc::new(AtomicUsize::new(usize::MAX)),
        }
    }

    /// The in-flight count the last handler saw as it started: 1 if it was counted and was
    /// the only one running.
    pub fn seen(&self) -> usize {
        self.seen.load(Ordering::SeqCst)
    }

    async fn route(self, mut request: Request<Body>) -> Response<Body> {
        self.seen.store(self.shutdown.in_flight(), Ordering::SeqCst);
        let name = request.uri().path().strip_prefix(PREFIX).unwrap_or("");
        match name {
            "full" => Response::new(Body::from("hello")),
            "held" => {
                self.gate.pass().await;
                Response::new(Body::from("done"))
            }
            "endless" => {
                self.gate.enter();
                let chunks =
                    stream::repeat_with(|| Ok::<_, Infallible>(Bytes::from_static(&CHUNK)));
                Response::new(Body::from_stream(chunks))
            }
            "pending" => {
                self.gate.enter();
                std::future::pending().await
            }
            "panic" => {
                self.gate.pass().await;
                panic!("handler panicked on purpose")
            }
            "fail" | "body-panic" => {
                self.gate.enter();
                let gate = self.gate.clone();
                let panics = name == "body-panic";
                let first = stream::iter([Ok(Bytes::from_static(b"part"))]);
                let failure = stream::once(async move {
                    gate.pass().await;
                    if panics {
                        panic!("body panicked mid-stream on purpose");
                    }
                    Err::<Bytes, _>(io::Error::other("storage failed mid-stream on purpose"))
                });
                Response::new(Body::from_stream(first.chain(failure)))
            }
            "head" => Response::new(Body::from("hello")),
            "no-content" | "not-modified" => {
                let status = if name == "no-content" {
                    StatusCode::NO_CONTENT
                } else {
                    StatusCode::NOT_MODIFIED
                };
                // Streamed, so that it does not say it is empty: only the status tells the
                // server to send nothing.
                let body = stream::iter([Ok::<_, Infallible>(Bytes::from_static(b"ignored"))]);
                let mut response = Response::new(Body::from_stream(body));
                *response.status_mut() = status;
                response
            }
            "upgrade" => {
                self.gate.enter();
                let upgrade = hyper::upgrade::on(&mut request);
                let gate = self.gate.clone();
                tokio::spawn(async move {
                    if let Ok(upgraded) = upgrade.await {
                        gate.pass().await;
                        drop(upgraded);
                    }
                });
                Response::builder()
                    .status(StatusCode::SWITCHING_PROTOCOLS)
                    .header(CONNECTION, "upgrade")
                    .header(UPGRADE, "test")
                    .body(Body::empty())
                    .unwrap()
            }
            _ => {
                let mut response = Response::new(Body::from("not found"));
                *response.status_mut() = StatusCode::NOT_FOUND;
                response
            }
        }
    }
}

impl Service<Request<Body>> for App {
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response<Body>, Infallible>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<Body>) -> Self::Future {
        let app = self.clone();
        Box::pin(async move { Ok(app.route(request).await) })
    }
}
