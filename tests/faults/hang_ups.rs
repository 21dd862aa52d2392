//! Clients that go away: at any byte of the body, during the drain, before the response.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::clients::hang_up_after;
use super::server::{expect_drained, Server};
use super::LONG_DRAIN;
use crate::support::bounded;

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
