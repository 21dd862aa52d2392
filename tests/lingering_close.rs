//! `server::serve` closes a finished connection gently: the tail of the last response still
//! reaches a client that keeps sending after the server is done with the connection (HTTP/2
//! WINDOW_UPDATE and PING frames, the rest of an upload the handler did not read). Closing
//! such a socket outright makes the kernel reset it and drop what it had not sent yet.
//!
//! The client's receive buffer is kept small and it reads nothing until the server has
//! stopped sending, so that most of the response is still in the server's send buffer when
//! the client's late bytes arrive. Linux only: the server's side of the connection is
//! watched in `/proc/net/tcp`.
#![cfg(target_os = "linux")]

mod support;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http::header::{CONNECTION, UPGRADE};
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::task::JoinHandle;
use tower::{service_fn, Layer};
use tower_drain::{DrainOutcome, Shutdown};

use support::gate::Gate;
use support::raw::{kept_alive_connection, read_until};
use support::{bounded, BOUND};

/// Far more than the client's receive buffer, far less than what the server's send buffer
/// grows to.
const BODY: usize = 256 * 1024;

/// Serves a `BODY`-byte answer to any request once the gate lets it through, never reading
/// the request's body.
async fn start(shutdown: Shutdown, gate: &Gate) -> (SocketAddr, JoinHandle<()>) {
    let gate = gate.clone();
    let answer = service_fn(move |_request: Request<Incoming>| {
        let gate = gate.clone();
        async move {
            gate.pass().await;
            Ok::<_, Infallible>(Response::new(Full::new(Bytes::from(vec![b'x'; BODY]))))
        }
    });
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let service = shutdown.layer().layer(answer);
    (
        addr,
        tokio::spawn(tower_drain::server::serve(listener, service, shutdown)),
    )
}

/// A client connection with a receive buffer of a few kilobytes.
async fn connect_small(addr: SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    socket.connect(addr).await.unwrap()
}

/// Waits until the server's end of `client`'s connection has stopped sending (FIN_WAIT1 or
/// FIN_WAIT2: shut down or closed), which is when the server is done with it.
async fn server_stopped_sending(server: SocketAddr, client: &TcpStream) {
    let stopped = |fields: &[&str]| matches!(fields[0], "04" | "05");
    server_end_until(server, client, "stopped sending", stopped).await;
}

/// Waits until the server's end of `client`'s connection, as `/proc/net/tcp` lists it,
/// passes `ready`, which gets the line's fields after the two addresses (state, queues,
/// timers, retransmits, uid, timeout, inode).
async fn server_end_until(
    server: SocketAddr,
    client: &TcpStream,
    what: &str,
    ready: impl Fn(&[&str]) -> bool,
) {
    let client = client.local_addr().unwrap();
    // Bounded: 10,000 looks, a millisecond apart.
    for _ in 0..10_000 {
        let found = tcp_line(server, client)
            .map(|fields| ready(&fields.iter().map(String::as_str).collect::<Vec<_>>()));
        if found == Some(true) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    panic!("the server's end of the connection never {what}");
}

/// Starts the drain while the request is in flight, and returns its task.
async fn drain_with_request_in_flight(
    shutdown: Shutdown,
    gate: &Gate,
) -> JoinHandle<tower_drain::DrainReport> {
    bounded("the request to reach the handler", gate.entered(1)).await;
    tokio::spawn(shutdown.drain(BOUND).unwrap())
}

/// The server answers, is done, and drains; the drain counted the response whole.
async fn finish(drain: JoinHandle<tower_drain::DrainReport>, server: JoinHandle<()>) {
    let report = bounded("the drain", drain).await.unwrap();
    assert_eq!(report.outcome, DrainOutcome::Drained);
    bounded("the server to return", server).await.unwrap();
}

#[tokio::test]
async fn http2_response_tail_survives_frames_the_client_sends_after_the_server_is_done() {
    let shutdown = Shutdown::new();
    let gate = Gate::new();
    let (addr, server) = start(shutdown, &gate).await;
    let mut stream = connect_small(addr).await;
    // Windows large enough that the server sends the whole body without waiting for us.
    let mut opening = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    opening.extend(h2::frame(h2::SETTINGS, 0, 0, &h2::initial_window(1 << 30)));
    opening.extend(h2::frame(
        h2::WINDOW_UPDATE,
        0,
        0,
        &(1u32 << 30).to_be_bytes(),
    ));
    opening.extend(h2::frame(
        h2::HEADERS,
        h2::END_HEADERS | h2::END_STREAM,
        1,
        &h2::GET_ROOT,
    ));
    stream.write_all(&opening).await.unwrap();

    let drain = drain_with_request_in_flight(shutdown, &gate).await;
    // Answer the server's SETTINGS and the PING of its graceful GOAWAY, until the final
    // GOAWAY names our stream as the last one served.
    for _ in 0..16 {
        let (kind, flags, _, payload) = bounded("a frame", h2::read(&mut stream)).await.unwrap();
        match kind {
            h2::SETTINGS if flags & h2::ACK == 0 => {
                stream
                    .write_all(&h2::frame(h2::SETTINGS, h2::ACK, 0, &[]))
                    .await
                    .unwrap();
            }
            h2::PING if flags & h2::ACK == 0 => {
                stream
                    .write_all(&h2::frame(h2::PING, h2::ACK, 0, &payload))
                    .await
                    .unwrap();
            }
            h2::GOAWAY if payload[..4] == 1u32.to_be_bytes() => break,
            _ => {}
        }
    }
    gate.release(1);
    server_stopped_sending(addr, &stream).await;
    // A PING, as a client checking the connection would send.
    stream
        .write_all(&h2::frame(h2::PING, 0, 0, &[7; 8]))
        .await
        .unwrap();

    let mut received = 0;
    // Bounded: the body comes in at most a few hundred DATA frames.
    for _ in 0..10_000 {
        let (kind, flags, id, payload) = bounded("a frame", h2::read(&mut stream))
            .await
            .unwrap_or_else(|error| panic!("cut after {received} of {BODY} bytes: {error}"));
        if kind == h2::DATA && id == 1 {
            received += payload.len();
            if flags & h2::END_STREAM != 0 {
                break;
            }
        }
    }
    assert_eq!(received, BODY, "the whole body arrived");
    drop(stream);
    finish(drain, server).await;
}

#[tokio::test]
async fn http1_response_tail_survives_an_upload_the_handler_did_not_read() {
    let shutdown = Shutdown::new();
    let gate = Gate::new();
    let (addr, server) = start(shutdown, &gate).await;
    let mut stream = connect_small(addr).await;
    let head = "POST /upload HTTP/1.1\r\nhost: x\r\ncontent-length: 1048576\r\n\r\n";
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(&[b'u'; 1024]).await.unwrap();

    let drain = drain_with_request_in_flight(shutdown, &gate).await;
    gate.release(1);
    server_stopped_sending(addr, &stream).await;
    // More of the upload, which the server no longer reads.
    stream.write_all(&[b'u'; 4096]).await.unwrap();

    let mut response = Vec::new();
    let result = bounded("the response", stream.read_to_end(&mut response)).await;
    let end = response
        .windows(4)
        .position(|window| window == b"\r\n\r\n")
        .expect("a response head");
    let head = String::from_utf8_lossy(&response[..end]).to_lowercase();
    assert!(head.starts_with("http/1.1 200"), "{head}");
    assert!(head.contains("connection: close"), "{head}");
    let received = response.len() - end - 4;
    assert_eq!(received, BODY, "the whole body arrived (then: {result:?})");
    drop(stream);
    finish(drain, server).await;
}

#[tokio::test]
async fn upgraded_connection_is_left_to_its_owner() {
    // Echoes what the client sends once upgraded: whatever a lingering close read from the
    // socket would be missing from the echo.
    let echo = service_fn(|mut request: Request<Incoming>| async move {
        tokio::spawn(async move {
            let upgraded = hyper::upgrade::on(&mut request).await.unwrap();
            let (mut reader, mut writer) = tokio::io::split(TokioIo::new(upgraded));
            let _ = tokio::io::copy(&mut reader, &mut writer).await;
        });
        let response = Response::builder()
            .status(StatusCode::SWITCHING_PROTOCOLS)
            .header(CONNECTION, "upgrade")
            .header(UPGRADE, "echo")
            .body(Full::new(Bytes::new()))
            .unwrap();
        Ok::<_, Infallible>(response)
    });
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let shutdown = Shutdown::new();
    let server = tokio::spawn(tower_drain::server::serve(listener, echo, shutdown));

    let mut stream = TcpStream::connect(addr).await.unwrap();
    let request = "GET / HTTP/1.1\r\nhost: x\r\nconnection: upgrade\r\nupgrade: echo\r\n\r\n";
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut head = Vec::new();
    assert!(bounded("the 101", read_until(&mut stream, &mut head, b"\r\n\r\n")).await);
    assert!(head.starts_with(b"HTTP/1.1 101"), "{head:?}");
    // hyper's connection future ends as it hands the socket over, so these round trips run
    // while the connection's task would be lingering if it had taken the socket back.
    for round in 0..8u8 {
        let message = [b'm', round];
        stream.write_all(&message).await.unwrap();
        let mut echoed = [0u8; 2];
        bounded("the echo", stream.read_exact(&mut echoed))
            .await
            .unwrap();
        assert_eq!(echoed, message, "round {round}");
    }
    drop(stream);
    assert_eq!(
        shutdown.drain(BOUND).unwrap().await.outcome,
        DrainOutcome::Drained
    );
    bounded("the server to return", server).await.unwrap();
}

/// `serve`'s lingering close ends once no byte has gone either way for this long.
const LINGER_IDLE: Duration = Duration::from_secs(5);

/// Serves `ok` to any request at once.
async fn start_answering(shutdown: Shutdown) -> (SocketAddr, JoinHandle<()>) {
    let answer = service_fn(|_request: Request<Incoming>| async {
        Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"ok\n"))))
    });
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let service = shutdown.layer().layer(answer);
    (
        addr,
        tokio::spawn(tower_drain::server::serve(listener, service, shutdown)),
    )
}

/// Waits until the server has accepted `client`'s connection: a socket still in the accept
/// queue has no inode yet.
async fn accepted(server: SocketAddr, client: &TcpStream) {
    let has_inode = |fields: &[&str]| fields.get(6).is_some_and(|inode| *inode != "0");
    server_end_until(server, client, "was accepted", has_inode).await;
}

/// After a `Drained` drain whose deadline is an hour away, pauses the clock and gives
/// `server` a second, far less than a lingering close's wait for silence.
async fn assert_returns_without_lingering(server: JoinHandle<()>, what: &str) {
    tokio::time::pause();
    let returned = tokio::time::timeout(Duration::from_secs(1), server).await;
    assert!(
        returned.is_ok(),
        "serve still waiting on {what}: it lingers on a connection with no response to protect"
    );
}

#[tokio::test]
async fn serve_does_not_linger_on_a_connection_it_never_answered() {
    let shutdown = Shutdown::new();
    let (addr, server) = start_answering(shutdown).await;
    // Connected and silent, as a pre-opened connection or a browser's preconnect is.
    let silent = TcpStream::connect(addr).await.unwrap();
    accepted(addr, &silent).await;

    let drain = shutdown.drain(Duration::from_secs(3600)).unwrap();
    assert_eq!(
        bounded("the drain", drain).await.outcome,
        DrainOutcome::Drained
    );
    assert_returns_without_lingering(server, "a silent connection").await;
    drop(silent);
}

#[tokio::test]
async fn serve_does_not_linger_on_a_keep_alive_connection_idle_for_longer_than_the_linger() {
    let shutdown = Shutdown::new();
    let (addr, server) = start_answering(shutdown).await;
    // Answered, then left idle in a pool that neither reads it nor closes it until reused.
    let idle = kept_alive_connection(addr).await;
    tokio::time::pause();
    tokio::time::advance(LINGER_IDLE + Duration::from_secs(1)).await;
    tokio::time::resume();

    let drain = shutdown.drain(Duration::from_secs(3600)).unwrap();
    assert_eq!(
        bounded("the drain", drain).await.outcome,
        DrainOutcome::Drained
    );
    assert_returns_without_lingering(server, "an idle keep-alive connection").await;
    drop(idle);
}

/// The longest `serve`'s lingering close lasts, however much the client keeps sending.
const LINGER_LIMIT: Duration = Duration::from_secs(30);

/// The fields of the `/proc/net/tcp` line of the socket from `local` to `remote`, after the
/// two addresses (state, queues, timers, retransmits, uid, timeout, inode), if listed.
fn tcp_line(local: SocketAddr, remote: SocketAddr) -> Option<Vec<String>> {
    let pair = format!(
        "0100007F:{:04X} 0100007F:{:04X} ",
        local.port(),
        remote.port()
    );
    let table = std::fs::read_to_string("/proc/net/tcp").unwrap();
    table.lines().find_map(|line| {
        let (_, rest) = line.split_once(&pair)?;
        Some(rest.split_whitespace().map(str::to_owned).collect())
    })
}

/// True while the server still holds its end of `client`'s connection open: a socket the
/// server has closed is gone from `/proc/net/tcp`, or left there without an inode.
fn server_holds(server: SocketAddr, client: &TcpStream) -> bool {
    let line = tcp_line(server, client.local_addr().unwrap());
    line.is_some_and(|fields| fields.get(6).is_some_and(|inode| inode != "0"))
}

/// Waits until everything `client` sent has reached the server (acknowledged) and been read
/// there. Yields rather than sleeps, so a paused clock does not move meanwhile.
async fn server_read_everything(server: SocketAddr, client: &TcpStream) {
    let client = client.local_addr().unwrap();
    // `tx_queue:rx_queue`: unacknowledged bytes sent, and bytes received but not read.
    let queues = |local, remote| tcp_line(local, remote).map(|fields| fields[1].clone());
    // Bounded: 100,000 looks.
    for _ in 0..100_000 {
        let sent = queues(client, server).is_some_and(|q| q.starts_with("00000000:"));
        let read = queues(server, client).is_some_and(|q| q.ends_with(":00000000"));
        if sent && read {
            return;
        }
        tokio::task::yield_now().await;
    }
    panic!("the server never read what the client sent");
}

#[tokio::test]
async fn a_lingering_close_ends_within_its_limit_however_much_the_client_sends() {
    let shutdown = Shutdown::new();
    let (addr, server) = start_answering(shutdown).await;
    let mut client = TcpStream::connect(addr).await.unwrap();
    // Each byte leaves at once, not held by Nagle until the one before is acknowledged.
    client.set_nodelay(true).unwrap();
    client
        .write_all(b"GET / HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut response = Vec::new();
    bounded("the response", client.read_to_end(&mut response))
        .await
        .unwrap();
    assert!(response.starts_with(b"HTTP/1.1 200"));

    // The server lingers from here on. A byte every 4 s, always inside the linger's wait for
    // silence: only the overall limit can end it.
    let every = Duration::from_secs(4);
    tokio::time::pause();
    let mut waited = Duration::ZERO;
    // Bounded: far more bytes than the limit leaves room for.
    for _ in 0..20 {
        tokio::time::sleep(every).await;
        waited += every;
        if !server_holds(addr, &client) {
            break;
        }
        client.write_all(b"x").await.unwrap();
        server_read_everything(addr, &client).await;
    }
    tokio::time::resume();
    assert!(
        waited <= LINGER_LIMIT + every,
        "the server held the connection {waited:?} after its last response, past the limit"
    );
    assert!(
        waited > LINGER_LIMIT - every,
        "the server closed after {waited:?}: a client still sending keeps the linger going"
    );
    drop(client);
    let drain = shutdown.drain(BOUND).unwrap();
    assert_eq!(
        bounded("the drain", drain).await.outcome,
        DrainOutcome::Drained
    );
    bounded("the server to return", server).await.unwrap();
}

/// Just enough HTTP/2 framing (RFC 9113) to hold a connection at the byte level.
mod h2 {
    use tokio::io::AsyncReadExt;
    use tokio::net::TcpStream;

    pub const DATA: u8 = 0;
    pub const HEADERS: u8 = 1;
    pub const SETTINGS: u8 = 4;
    pub const PING: u8 = 6;
    pub const GOAWAY: u8 = 7;
    pub const WINDOW_UPDATE: u8 = 8;
    pub const ACK: u8 = 1;
    pub const END_STREAM: u8 = 1;
    pub const END_HEADERS: u8 = 4;
    /// HPACK: `GET`, `http`, `/` from the static table, then `:authority: localhost`.
    pub const GET_ROOT: [u8; 14] = [
        0x82, 0x86, 0x84, 0x41, 9, b'l', b'o', b'c', b'a', b'l', b'h', b'o', b's', b't',
    ];

    pub fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
        let length = u32::try_from(payload.len()).unwrap().to_be_bytes();
        let mut frame = length[1..].to_vec();
        frame.extend([kind, flags]);
        frame.extend(stream.to_be_bytes());
        frame.extend(payload);
        frame
    }

    /// A SETTINGS payload setting SETTINGS_INITIAL_WINDOW_SIZE.
    pub fn initial_window(size: u32) -> Vec<u8> {
        let mut setting = vec![0, 4];
        setting.extend(size.to_be_bytes());
        setting
    }

    /// One frame: its type, flags, stream and payload.
    pub async fn read(stream: &mut TcpStream) -> std::io::Result<(u8, u8, u32, Vec<u8>)> {
        let mut head = [0u8; 9];
        stream.read_exact(&mut head).await?;
        let length = u32::from_be_bytes([0, head[0], head[1], head[2]]) as usize;
        let id = u32::from_be_bytes([head[5], head[6], head[7], head[8]]) & 0x7fff_ffff;
        let mut payload = vec![0u8; length];
        stream.read_exact(&mut payload).await?;
        Ok((head[3], head[4], id, payload))
    }
}
