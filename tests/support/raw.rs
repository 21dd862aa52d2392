//! Raw HTTP/1 over a `TcpStream`: the bytes on the wire, chunk framing and connection
//! closes included, which a pooling client would hide.

use std::net::SocketAddr;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::bounded;

/// Writes a `GET` for `path` on a raw HTTP/1.1 connection (keep-alive, the 1.1 default).
pub async fn write_get(stream: &mut TcpStream, path: &str) {
    let request = format!("GET {path} HTTP/1.1\r\nhost: localhost\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
}

/// Sends a raw HTTP/1.1 GET and reads until the server closes or `limit` bytes arrived.
pub async fn raw_get(addr: SocketAddr, path: &str, limit: usize) -> Vec<u8> {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    write_get(&mut stream, path).await;
    let mut received = Vec::new();
    let mut buffer = [0u8; 4096];
    while received.len() < limit {
        match bounded("raw read", stream.read(&mut buffer)).await {
            Ok(0) | Err(_) => break,
            Ok(n) => received.extend_from_slice(&buffer[..n]),
        }
    }
    received
}

/// Reads one whole response with a `content-length` body, leaving the connection open.
/// Header names come back lower-cased, as hyper writes them.
pub async fn read_response(stream: &mut TcpStream) -> String {
    let mut bytes = Vec::new();
    let mut chunk = [0u8; 4096];
    // Bounded: a response of these tests is far smaller than 64 reads.
    for _ in 0..64 {
        if let Some(length) = complete_length(&bytes) {
            assert_eq!(length, bytes.len(), "more bytes than one response");
            return String::from_utf8(bytes).unwrap();
        }
        let read = bounded("response bytes", stream.read(&mut chunk))
            .await
            .unwrap();
        assert_ne!(read, 0, "connection closed mid-response: {bytes:?}");
        bytes.extend_from_slice(&chunk[..read]);
    }
    panic!("response never completed: {bytes:?}");
}

/// Opens a connection to `addr`, has `GET /` answered on it, and checks the server kept it
/// open for more: the connection a client would reuse.
pub async fn kept_alive_connection(addr: SocketAddr) -> TcpStream {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    write_get(&mut stream, "/").await;
    let response = read_response(&mut stream).await;
    assert!(
        !has_connection_close(&response),
        "kept alive while serving: {response}"
    );
    stream
}

/// Reads until the server closes the connection, returning everything read, then closes the
/// client side as a client does at end of stream (the server lingers until it does).
pub async fn read_to_eof(mut stream: TcpStream) -> String {
    let mut bytes = Vec::new();
    bounded(
        "the server to close the connection",
        stream.read_to_end(&mut bytes),
    )
    .await
    .unwrap();
    String::from_utf8(bytes).unwrap()
}

/// Reads into `buf` until it contains `needle`. Returns false at end of stream. Unbounded:
/// callers bound it.
pub async fn read_until(stream: &mut TcpStream, buf: &mut Vec<u8>, needle: &[u8]) -> bool {
    let mut chunk = [0u8; 4096];
    while !contains(buf, needle) {
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return false,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
    true
}

/// Reads until the peer closes the connection or resets it. Unbounded: callers bound it.
pub async fn read_to_close(stream: &mut TcpStream, buf: &mut Vec<u8>) {
    let mut chunk = [0u8; 16 * 1024];
    loop {
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

pub fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack
        .windows(needle.len())
        .any(|window| window == needle)
}

/// The length of the first response in `bytes` once it is all there.
fn complete_length(bytes: &[u8]) -> Option<usize> {
    let head_end = bytes.windows(4).position(|w| w == b"\r\n\r\n")? + 4;
    let head = std::str::from_utf8(&bytes[..head_end])
        .unwrap()
        .to_ascii_lowercase();
    let body_len: usize = head
        .lines()
        .find_map(|line| line.strip_prefix("content-length:"))
        .map_or(0, |value| value.trim().parse().unwrap());
    (bytes.len() >= head_end + body_len).then_some(head_end + body_len)
}

/// True when the response head has `connection: close`.
pub fn has_connection_close(response: &str) -> bool {
    let head = response.split("\r\n\r\n").next().unwrap_or_default();
    head.lines()
        .any(|line| line.eq_ignore_ascii_case("connection: close"))
}

/// Splits a raw HTTP/1 response into its head and body bytes.
pub fn split_head(raw: &[u8]) -> (String, &[u8]) {
    let end = raw
        .windows(4)
        .position(|window| window == b"\r\n\r\n")
        .expect("a complete response head");
    (
        String::from_utf8_lossy(&raw[..end]).into_owned(),
        &raw[end + 4..],
    )
}

/// A chunked body, decoded.
pub struct Chunked {
    pub data: Vec<u8>,
    /// True when the body ended with the last-chunk `0\r\n\r\n`: a clean end.
    pub terminated: bool,
    pub chunks: usize,
}

/// Decodes HTTP/1 chunked framing as far as the bytes go.
pub fn decode_chunked(mut body: &[u8]) -> Chunked {
    let mut decoded = Chunked {
        data: Vec::new(),
        terminated: false,
        chunks: 0,
    };
    loop {
        let Some(line_end) = body.windows(2).position(|window| window == b"\r\n") else {
            return decoded;
        };
        let size_text = std::str::from_utf8(&body[..line_end]).unwrap();
        let size = usize::from_str_radix(size_text.split(';').next().unwrap().trim(), 16)
            .expect("a chunk size");
        body = &body[line_end + 2..];
        if size == 0 {
            decoded.terminated = body == b"\r\n";
            return decoded;
        }
        if body.len() < size + 2 {
            // Cut inside a chunk.
            decoded
                .data
                .extend_from_slice(&body[..size.min(body.len())]);
            return decoded;
        }
        decoded.data.extend_from_slice(&body[..size]);
        decoded.chunks += 1;
        body = &body[size + 2..];
    }
}
