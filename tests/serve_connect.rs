//! `tower_drain::server::serve` and HTTP/2 `CONNECT` tunnels. hyper runs the sending half of
//! an upgraded HTTP/2 stream on a task of its own, through the same executor as the stream
//! tasks `serve` waits for: a tunnel must not keep `serve` from returning once its connection
//! is gone, nor past the drain deadline.
//!
//! Real server on 127.0.0.1, a real HTTP/2 client (h2).

mod support;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::Empty;
use hyper::body::Incoming;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tower::{service_fn, Layer};
use tower_drain::{DrainOutcome, Shutdown};

use support::bounded;

/// Serves `CONNECT` by accepting the tunnel and holding its upgraded end open for ever, on a
/// task of the handler's own; `tunnels` gets one message per tunnel held.
async fn start(shutdown: Shutdown) -> (SocketAddr, JoinHandle<()>, mpsc::UnboundedReceiver<()>) {
    let (held, tunnels) = mpsc::unbounded_channel();
    let routes = service_fn(move |mut request: Request<Incoming>| {
        let held = held.clone();
        async move {
            assert_eq!(request.method(), Method::CONNECT);
            let upgrade = hyper::upgrade::on(&mut request);
            tokio::spawn(async move {
                let upgraded = upgrade.await.expect("the tunnel opens");
                let _ = held.send(());
                // A tunnel whose far side never speaks: it holds the stream for ever.
                std::future::pending::<()>().await;
                drop(upgraded);
            });
            Ok::<_, Infallible>(Response::new(Empty::<Bytes>::new()))
        }
    });
    let service = shutdown.layer().layer(routes);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(tower_drain::server::serve(listener, service, shutdown));
    (addr, server, tunnels)
}

/// The client's side of a tunnel: open for as long as this lives.
type ClientSide = (
    h2::client::SendRequest<Bytes>,
    h2::SendStream<Bytes>,
    http::Response<h2::RecvStream>,
);

/// Opens a tunnel over HTTP/2; returns the client's connection task and side of the tunnel.
async fn open_tunnel(addr: SocketAddr) -> (JoinHandle<()>, ClientSide) {
    let tcp = TcpStream::connect(addr).await.unwrap();
    let (mut client, connection) = h2::client::handshake(tcp).await.unwrap();
    let connection = tokio::spawn(async move {
        let _ = connection.await;
    });
    let request = Request::builder()
        .method(Method::CONNECT)
        .uri(addr.to_string())
        .body(())
        .unwrap();
    let (response, send) = client.send_request(request, false).unwrap();
    let response = bounded("the tunnel's answer", response).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    (connection, (client, send, response))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_returns_after_an_http2_tunnel_whose_client_went_away() {
    let shutdown = Shutdown::new();
    let (addr, server, mut tunnels) = start(shutdown).await;
    let (connection, held) = open_tunnel(addr).await;
    bounded("the tunnel is held", tunnels.recv()).await.unwrap();
    // The client goes away: its connection closes, and so does the server's.
    connection.abort();
    let _ = connection.await;
    drop(held);
    let report = bounded(
        "the drain",
        shutdown.drain(Duration::from_secs(3600)).unwrap(),
    )
    .await;
    assert_eq!(report.outcome, DrainOutcome::Drained);
    // Well before the drain deadline, an hour away: nothing is left open.
    bounded("serve returns", server).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_returns_at_the_drain_deadline_with_an_http2_tunnel_open() {
    let shutdown = Shutdown::new();
    let (addr, server, mut tunnels) = start(shutdown).await;
    let (_connection, _held) = open_tunnel(addr).await;
    bounded("the tunnel is held", tunnels.recv()).await.unwrap();
    let report = bounded(
        "the drain",
        shutdown.drain(Duration::from_millis(200)).unwrap(),
    )
    .await;
    // The tunnel is not counted (its request ended with its answer): the drain is over at
    // once, and `serve` closes the connection still open at the drain deadline.
    assert_eq!(report.outcome, DrainOutcome::Drained);
    bounded("serve returns", server).await.unwrap();
}
