//! Plain hyper (HTTP/1 and HTTP/2) with `tower_drain::server::serve`.
//!
//! ```sh
//! cargo run --example hyper              # serves on 127.0.0.1:3000
//! curl -i 'localhost:3000/slow?ms=5000'   # from another terminal, then Ctrl-C the server:
//!                                         # curl still gets its answer, with `connection: close`
//! ```
//!
//! `serve` does at the connection level what middleware cannot: when admission closes it
//! stops accepting, sends GOAWAY on HTTP/2 connections, closes HTTP/1 connections after
//! their response in progress (idle ones at once), and closes what is left at the drain
//! deadline. It returns once every connection is closed.

use std::convert::Infallible;
use std::error::Error;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use tokio::net::TcpListener;
use tower::{service_fn, Layer};
use tower_drain::{Shutdown, ShutdownSequence};

#[tokio::main]
async fn main() -> Result<(), Box<dyn Error>> {
    let shutdown = Shutdown::new();
    // SIGTERM or Ctrl-C starts it: lame duck 2 s, drain up to 10 s; a second signal forces.
    let sequence = ShutdownSequence::builder(shutdown)
        .lame_duck(Duration::from_secs(2))
        .drain_timeout(Duration::from_secs(10))
        .budget(Duration::from_secs(15))
        .build()?;
    let routes = service_fn(move |request| route(shutdown, request));
    // Counts every request until its body is sent; 503 once draining. Probes pass through.
    let service = shutdown
        .layer()
        .bypass(&["/readyz", "/livez"])
        .layer(routes);

    let listener = TcpListener::bind("127.0.0.1:3000").await?;
    println!("listening on http://{}", listener.local_addr()?);
    let server = tokio::spawn(tower_drain::server::serve(listener, service, shutdown));

    // When the drain closes admission, the server stops accepting and winds its
    // connections down; at the drain deadline it closes what is left.
    let report = sequence.run().await;
    server.await?;
    println!("{report}");
    std::process::exit(if report.is_clean() { 0 } else { 1 })
}

async fn route(
    shutdown: Shutdown,
    request: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let (status, text) = match request.uri().path() {
        "/readyz" if shutdown.phase().shutting_down() => {
            (StatusCode::SERVICE_UNAVAILABLE, "shutting down\n".into())
        }
        "/readyz" | "/livez" | "/" => (StatusCode::OK, "ok\n".to_owned()),
        "/slow" => {
            let ms = query_number(&request, "ms").unwrap_or(1000);
            tokio::time::sleep(Duration::from_millis(ms)).await;
            (StatusCode::OK, format!("slow {ms}\n"))
        }
        _ => (StatusCode::NOT_FOUND, "not found\n".into()),
    };
    let mut response = Response::new(Full::new(Bytes::from(text)));
    *response.status_mut() = status;
    Ok(response)
}

/// `name=N` from the query string.
fn query_number<B>(request: &Request<B>, name: &str) -> Option<u64> {
    request
        .uri()
        .query()?
        .split('&')
        .find_map(|pair| pair.strip_prefix(name)?.strip_prefix('=')?.parse().ok())
}
