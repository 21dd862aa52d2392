//! What a request that arrives while draining gets back, on HTTP/1, HTTP/2 and gRPC.

mod support;

use std::time::Duration;

use axum::routing::{get, post};
use axum::Router;
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use support::bounded;
use support::gate::Gate;
use support::http::{http1_client, http2_client, serve};
use support::raw::{has_connection_close, raw_get, read_response, read_to_eof, write_get};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::sync::{oneshot, Mutex};
use tower_drain::{DrainOutcome, InFlightLayer, LongLivedLayer, Shutdown};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http1_rejection_is_503_with_retry_after_and_connection_close() {
    let shutdown = Shutdown::new();
    let app = Router::new()
        .route("/", get(|| async { "ok\n" }))
        .layer(shutdown.layer().retry_after(Duration::from_millis(2500)));
    let (addr, _server) = serve(app).await;
    let _ = shutdown.drain(Duration::from_secs(1)).unwrap().await;

    // Read to the end: the server must also close the connection.
    let raw = String::from_utf8(raw_get(addr, "/", usize::MAX).await).unwrap();
    let (head, body) = raw.split_once("\r\n\r\n").unwrap();
    let head = head.to_ascii_lowercase();
    assert!(
        head.starts_with("http/1.1 503 service unavailable"),
        "{head}"
    );
    assert!(
        head.contains("\r\nretry-after: 3\r\n"),
        "rounded up to whole seconds: {head}"
    );
    assert!(head.contains("\r\nconnection: close"), "{head}");
    assert!(head.contains("\r\ncontent-type: text/plain"), "{head}");
    assert_eq!(body, "service is shutting down\n");
    assert_eq!(shutdown.rejected(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_rejection_is_503_without_connection_header() {
    let shutdown = Shutdown::new();
    let app = Router::new()
        .route("/", get(|| async { "ok\n" }))
        .layer(shutdown.layer());
    let (addr, _server) = serve(app).await;
    let client = http2_client();
    // Open the connection first: a draining server may refuse new ones.
    let (status, _, _) = support::http::get(&client, addr, "/").await;
    assert_eq!(status, 200);

    let _ = shutdown.drain(Duration::from_secs(1)).unwrap().await;
    let (status, headers, body) = support::http::get(&client, addr, "/").await;
    assert_eq!(status, 503);
    assert_eq!(headers["retry-after"], "1");
    assert!(
        headers.get("connection").is_none(),
        "connection headers are illegal in HTTP/2"
    );
    assert_eq!(body, "service is shutting down\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rejection_message_is_the_body_of_plain_http_rejections_only() {
    let shutdown = Shutdown::new();
    let app = Router::new()
        .route("/", get(|| async { "ok\n" }))
        .route("/echo.Echo/Say", post(|| async { "not reached" }))
        .layer(shutdown.layer().message("back in a minute\n"));
    let (addr, _server) = serve(app).await;
    let client = http2_client();
    // Open the connection first: a draining server may refuse new ones.
    let (status, _, _) = support::http::get(&client, addr, "/").await;
    assert_eq!(status, 200);
    let _ = shutdown.drain(Duration::from_secs(1)).unwrap().await;

    let (status, _, body) = support::http::get(&client, addr, "/").await;
    assert_eq!(status, 503);
    assert_eq!(body, "back in a minute\n");

    // A gRPC call gets the trailers-only UNAVAILABLE, whose message is not the text body's.
    let request = http::Request::post(format!("http://{addr}/echo.Echo/Say"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(Empty::<Bytes>::new())
        .unwrap();
    let response = bounded("grpc call", client.request(request)).await.unwrap();
    assert_eq!(response.headers()["grpc-status"], "14");
    assert_eq!(
        response.headers()["grpc-message"],
        "server is shutting down"
    );
    let body = bounded("grpc body", response.into_body().collect())
        .await
        .unwrap();
    assert!(body.to_bytes().is_empty());
    assert_eq!(shutdown.rejected(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_rejection_is_trailers_only_unavailable() {
    let shutdown = Shutdown::new();
    let app = Router::new()
        .route("/echo.Echo/Say", post(|| async { "not reached" }))
        .layer(shutdown.layer());
    let (addr, _server) = serve(app).await;
    let _ = shutdown.drain(Duration::from_secs(1)).unwrap().await;

    let request = http::Request::post(format!("http://{addr}/echo.Echo/Say"))
        .header("content-type", "application/grpc+proto")
        .header("te", "trailers")
        .body(Empty::<Bytes>::new())
        .unwrap();
    let response = bounded("grpc call", http2_client().request(request))
        .await
        .unwrap();
    assert_eq!(
        response.status(),
        200,
        "gRPC errors travel in grpc-status, not HTTP status"
    );
    assert_eq!(response.headers()["grpc-status"], "14");
    assert_eq!(response.headers()["content-type"], "application/grpc");
    assert!(response.headers().contains_key("grpc-message"));
    let body = bounded("grpc body", response.into_body().collect())
        .await
        .unwrap();
    assert!(
        body.trailers().is_none(),
        "trailers-only: the status is in the headers"
    );
    assert!(body.to_bytes().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn responses_passed_through_while_draining_close_http1_connections() {
    let shutdown = Shutdown::new();
    let (release_tx, release_rx) = oneshot::channel::<()>();
    let (entered_tx, entered_rx) = oneshot::channel::<()>();
    let gate = std::sync::Arc::new(Mutex::new(Some((entered_tx, release_rx))));
    let app = Router::new()
        .route("/", get(|| async { "ok\n" }))
        .route(
            "/gated",
            get(move || {
                let gate = gate.clone();
                async move {
                    let (entered, release) = gate.lock().await.take().unwrap();
                    entered.send(()).unwrap();
                    release.await.unwrap();
                    "done\n"
                }
            }),
        )
        .layer(shutdown.layer());
    let (addr, _server) = serve(app).await;
    let client = http1_client();

    let (_, headers, _) = support::http::get(&client, addr, "/").await;
    assert!(
        headers.get("connection").is_none(),
        "keep-alive while serving"
    );

    let in_flight = tokio::spawn({
        let client = client.clone();
        async move { support::http::get(&client, addr, "/gated").await }
    });
    bounded("handler entered", entered_rx).await.unwrap();
    let drain = shutdown.drain(Duration::from_secs(60)).unwrap();
    release_tx.send(()).unwrap();

    let (status, headers, body) = bounded("gated", in_flight).await.unwrap();
    assert_eq!(status, 200, "admitted before draining: served in full");
    assert_eq!(body, "done\n");
    assert_eq!(headers["connection"], "close");
    assert!(bounded("drain", drain).await.is_drained());
}

/// Sends a gRPC-web call (`content_type`) with an empty body on a raw HTTP/1.1 connection
/// and returns the connection, the response read so far.
async fn raw_grpc_web_call(addr: std::net::SocketAddr, content_type: &str) -> (TcpStream, String) {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let request = format!(
        "POST /echo.Echo/Say HTTP/1.1\r\nhost: localhost\r\ncontent-type: {content_type}\r\n\
         x-grpc-web: 1\r\ncontent-length: 0\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let response = read_response(&mut stream).await;
    (stream, response)
}

fn grpc_app(shutdown: Shutdown) -> Router {
    Router::new()
        .route("/echo.Echo/Say", post(|| async { "not reached" }))
        .layer(shutdown.layer())
}

/// A gRPC-web call (browsers, over HTTP/1.1) refused while draining closes its connection
/// like every other HTTP/1 rejection, so the client reconnects to another instance rather
/// than send its next call to this one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_web_rejection_over_http1_closes_the_connection() {
    let shutdown = Shutdown::new();
    let (addr, _server) = serve(grpc_app(shutdown)).await;
    let _ = shutdown.drain(Duration::from_secs(1)).unwrap().await;

    let (stream, response) = raw_grpc_web_call(addr, "application/grpc-web+proto").await;
    let head = response.to_ascii_lowercase();
    assert!(head.starts_with("http/1.1 200 ok\r\n"), "{response}");
    assert!(head.contains("\r\ngrpc-status: 14\r\n"), "{response}");
    assert!(has_connection_close(&response), "{response}");
    assert_eq!(read_to_eof(stream).await, "", "the server closes");
}

/// A gRPC-web call is refused in gRPC-web's own content type, keeping the request's
/// encoding (`-text`) and codec (`+proto`, `+json`): gRPC-web clients check the response's
/// content type before its status (connect-es answers `application/grpc` with INTERNAL,
/// "unexpected response content type"), so anything else hides the UNAVAILABLE.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_web_rejection_answers_in_the_request_content_type() {
    let shutdown = Shutdown::new();
    let (addr, _server) = serve(grpc_app(shutdown)).await;
    let client = http2_client();
    // Open the HTTP/2 connection first: a draining server may refuse new ones.
    let (status, _, _) = support::http::get(&client, addr, "/").await;
    assert_eq!(status, 404);
    let _ = shutdown.drain(Duration::from_secs(1)).unwrap().await;

    for content_type in [
        "application/grpc-web",
        "application/grpc-web+proto",
        "application/grpc-web+json",
        "application/grpc-web-text",
        "application/grpc-web-text+proto",
    ] {
        let (_, response) = raw_grpc_web_call(addr, content_type).await;
        let head = response.to_ascii_lowercase();
        assert!(head.contains("\r\ngrpc-status: 14\r\n"), "{response}");
        assert!(
            head.contains(&format!("\r\ncontent-type: {content_type}\r\n")),
            "HTTP/1 answer to {content_type}: {response}"
        );

        let request = http::Request::post(format!("http://{addr}/echo.Echo/Say"))
            .header("content-type", content_type)
            .header("x-grpc-web", "1")
            .body(Empty::<Bytes>::new())
            .unwrap();
        let response = bounded("grpc-web call", client.request(request))
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        assert_eq!(response.headers()["grpc-status"], "14");
        assert_eq!(response.headers()["content-type"], content_type, "HTTP/2");
        assert!(response.headers().get("connection").is_none());
    }
    assert_eq!(shutdown.rejected(), 10);
}

/// Media types are case-insensitive: a gRPC call whose content type is spelled in capitals is
/// still answered as gRPC (trailers-only UNAVAILABLE), in its protocol's lower-case type.
#[tokio::test]
async fn grpc_content_types_are_recognised_whatever_their_case() {
    let shutdown = Shutdown::new();
    let (addr, _server) = serve(grpc_app(shutdown)).await;
    let client = http2_client();
    // Open the HTTP/2 connection first: a draining server may refuse new ones.
    let (status, _, _) = support::http::get(&client, addr, "/").await;
    assert_eq!(status, 404);
    let _ = shutdown.drain(Duration::from_secs(1)).unwrap().await;

    for (sent, answered) in [
        ("Application/gRPC", "application/grpc"),
        ("APPLICATION/GRPC+PROTO", "application/grpc"),
        ("application/grpc-Web", "application/grpc-web"),
        (
            "Application/gRPC-Web-Text+Proto",
            "application/grpc-web-text+proto",
        ),
    ] {
        let request = http::Request::post(format!("http://{addr}/echo.Echo/Say"))
            .header("content-type", sent)
            .body(Empty::<Bytes>::new())
            .unwrap();
        let response = bounded("grpc call", client.request(request)).await.unwrap();
        assert_eq!(response.status(), 200, "{sent}");
        assert_eq!(response.headers()["grpc-status"], "14", "{sent}");
        assert_eq!(response.headers()["content-type"], answered, "{sent}");
    }
}

/// A marked long-poll whose handler ignores its signal is answered 503 at the long-lived
/// deadline; on HTTP/1 that answer closes the connection like every other 503 of the crate,
/// even with no rejecting layer around the route to add it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_poll_cut_at_its_deadline_closes_the_http1_connection() {
    let shutdown = Shutdown::new();
    // The long-lived deadline at the drain's start: the cut follows at once.
    shutdown.set_long_lived_grace(Duration::ZERO);
    let gate = Gate::new();
    let handler = {
        let gate = gate.clone();
        move || async move {
            gate.enter();
            std::future::pending::<&'static str>().await
        }
    };
    let app = Router::new()
        .route("/poll", get(handler).layer(LongLivedLayer::route(shutdown)))
        .layer(InFlightLayer::new(shutdown));
    let (addr, _server) = serve(app).await;

    let mut stream = TcpStream::connect(addr).await.unwrap();
    write_get(&mut stream, "/poll").await;
    gate.entered(1).await;
    // Spawned: the drain future fires the long-lived deadline as it runs.
    let drain = tokio::spawn(shutdown.drain(Duration::from_secs(60)).unwrap());

    let response = read_response(&mut stream).await;
    assert!(response.starts_with("HTTP/1.1 503 "), "{response}");
    assert!(has_connection_close(&response), "{response}");
    assert_eq!(read_to_eof(stream).await, "", "the server closes");
    let report = bounded("the drain", drain).await.unwrap();
    assert_eq!(report.outcome, DrainOutcome::Drained);
    assert_eq!(report.long_lived.len(), 1, "the cut poll is reported");
}
