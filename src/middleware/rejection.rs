//! The response sent to requests that arrive once admission has closed.

use http::header::{HeaderValue, CONNECTION, CONTENT_TYPE, RETRY_AFTER};
use http::{HeaderMap, Method, Request, Response, StatusCode, Version};

use super::Policy;
use crate::static_body::{head_only, plain_text};

/// The body of a rejection: one static chunk, or nothing (gRPC's trailers-only form).
pub(crate) use crate::static_body::StaticBody as Rejection;

/// `grpc-status` for UNAVAILABLE: the client may retry elsewhere.
const GRPC_UNAVAILABLE: &str = "14";

/// How a request turned away is answered: decided at the call, and built into a response only
/// when the future is polled. A few words instead of a whole response keep every response
/// future small, and the futures of admitted requests are the ones that matter.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Reply {
    /// gRPC's trailers-only UNAVAILABLE, in the content type of the call's protocol (gRPC or
    /// gRPC-web).
    Grpc {
        content_type: &'static str,
        closing: Closing,
    },
    /// A plain-text 503 with `Retry-After`; only its head for a `HEAD` request.
    Http {
        closing: Closing,
        head: bool,
        retry_after_secs: u64,
        message: &'static str,
    },
}

impl Reply {
    /// The reply for `request` under `policy`: UNAVAILABLE for gRPC calls, 503 otherwise.
    pub(crate) fn for_request<B>(request: &Request<B>, policy: &Policy) -> Reply {
        let closing = Closing::for_version(request.version());
        if let Some(content_type) = grpc_content_type(request) {
            return Reply::Grpc {
                content_type,
                closing,
            };
        }
        Reply::Http {
            closing,
            head: request.method() == Method::HEAD,
            retry_after_secs: policy.retry_after_secs,
            message: policy.message,
        }
    }

    #[cold]
    #[inline(never)]
    pub(crate) fn into_response(self) -> Response<Rejection> {
        match self {
            Reply::Grpc {
                content_type,
                closing,
            } => grpc_unavailable(content_type, closing),
            Reply::Http {
                closing,
                head,
                retry_after_secs,
                message,
            } => {
                let response = unavailable(message, closing, retry_after_secs);
                if head {
                    head_only(response)
                } else {
                    response
                }
            }
        }
    }
}

/// How an answer made here closes the connection it travels on, decided by the request's
/// HTTP version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Closing {
    /// Left to the server: HTTP/2 forbids connection headers; its GOAWAY does this job.
    Untouched,
    /// HTTP/1.1: `Connection: close`.
    Http11,
    /// HTTP/1.0: `Connection: close`, in a response marked HTTP/1.0. When an HTTP/1.0 client
    /// asked for keep-alive, hyper appends `keep-alive` to the `Connection` header of a
    /// response marked HTTP/1.1 (the default), `close` or not; clients that look for that
    /// token then reuse a connection hyper closes. A response marked HTTP/1.0 it leaves alone.
    Http10,
}

impl Closing {
    pub(crate) fn for_version(version: Version) -> Closing {
        if version >= Version::HTTP_2 {
            Closing::Untouched
        } else if version == Version::HTTP_11 {
            Closing::Http11
        } else {
            Closing::Http10
        }
    }

    fn apply<B>(self, response: &mut Response<B>) {
        match self {
            Closing::Untouched => return,
            Closing::Http11 => {}
            Closing::Http10 => *response.version_mut() = Version::HTTP_10,
        }
        response
            .headers_mut()
            .insert(CONNECTION, HeaderValue::from_static("close"));
    }
}

/// The answer to a request whose handler was still running at the drain deadline. The
/// request may be retried elsewhere, as a rejected one may.
#[cold]
#[inline(never)]
pub(crate) fn aborted(http1: bool) -> Response<Rejection> {
    // The request's exact HTTP/1 version is not kept on the path of every request: an
    // HTTP/1.0 client is answered as an HTTP/1.1 one here.
    let closing = if http1 {
        Closing::Http11
    } else {
        Closing::Untouched
    };
    let mut response = unavailable(
        "request aborted: the server's shutdown deadline passed\n",
        closing,
        RETRY_SOON_SECS,
    );
    grpc_status_too(&mut response, "the server's shutdown deadline passed");
    response
}

/// `Retry-After` for the answers made at a deadline, where no layer's setting is at hand.
const RETRY_SOON_SECS: u64 = 1;

/// A plain-text 503 telling the client when to retry, closing HTTP/1 connections.
fn unavailable(
    message: &'static str,
    closing: Closing,
    retry_after_secs: u64,
) -> Response<Rejection> {
    let mut response = plain_text(StatusCode::SERVICE_UNAVAILABLE, message);
    response
        .headers_mut()
        .insert(RETRY_AFTER, HeaderValue::from(retry_after_secs));
    closing.apply(&mut response);
    response
}

/// The answer given for a marked route whose handler was still waiting at the long-lived
/// deadline: the handler is dropped, the client told to retry elsewhere.
#[cold]
#[inline(never)]
pub(crate) fn long_lived_cut(closing: Closing) -> Response<Rejection> {
    let mut response = unavailable(
        "request cut short: the server is shutting down\n",
        closing,
        RETRY_SOON_SECS,
    );
    grpc_status_too(&mut response, "server is shutting down");
    response
}

/// Makes a 503 answered where the request is gone also a gRPC UNAVAILABLE. Whether the request
/// was a gRPC call is not known there (keeping its content type would cost every request), and
/// a gRPC client reads the text body as gRPC frames: tonic's then reports INTERNAL (a bad
/// frame), not UNAVAILABLE. A `grpc-status` in the headers is the call's status before any
/// body is read (a trailers-only answer); HTTP clients ignore it.
fn grpc_status_too(response: &mut Response<Rejection>, message: &'static str) {
    let headers = response.headers_mut();
    headers.insert("grpc-status", HeaderValue::from_static(GRPC_UNAVAILABLE));
    headers.insert("grpc-message", HeaderValue::from_static(message));
}

/// The content type of the answer to a gRPC or gRPC-web call, or `None` for any other
/// request.
fn grpc_content_type<B>(request: &Request<B>) -> Option<&'static str> {
    grpc_content_type_of(request.headers())
}

/// The gRPC or gRPC-web content type `headers` name, normalised; `None` for any other.
pub(crate) fn grpc_content_type_of(headers: &HeaderMap) -> Option<&'static str> {
    let value = headers.get(CONTENT_TYPE)?.as_bytes();
    // Media types are case-insensitive.
    let rest = strip_prefix_ignore_case(value, b"application/grpc")?;
    match strip_prefix_ignore_case(rest, b"-web") {
        Some(web) => Some(grpc_web_content_type(web)),
        None => Some("application/grpc"),
    }
}

fn strip_prefix_ignore_case<'a>(value: &'a [u8], prefix: &[u8]) -> Option<&'a [u8]> {
    let (head, rest) = value.split_at_checked(prefix.len())?;
    head.eq_ignore_ascii_case(prefix).then_some(rest)
}

/// gRPC-web clients check the response's content type before its status, and refuse one
/// that is not gRPC-web in the encoding (`-text`: base64) and codec they asked for. So the
/// answer keeps both; `rest` is what follows `application/grpc-web`. A codec other than
/// proto or JSON is answered without one.
fn grpc_web_content_type(rest: &[u8]) -> &'static str {
    let (text, codec) = match strip_prefix_ignore_case(rest, b"-text") {
        Some(codec) => (true, codec),
        None => (false, rest),
    };
    // Parameters (`; charset=utf-8`) do not change the codec.
    let codec = codec
        .split(|&byte| byte == b';')
        .next()
        .unwrap_or_default()
        .trim_ascii();
    let proto = codec.eq_ignore_ascii_case(b"+proto");
    let json = codec.eq_ignore_ascii_case(b"+json");
    match (text, proto, json) {
        (false, true, _) => "application/grpc-web+proto",
        (false, _, true) => "application/grpc-web+json",
        (false, _, _) => "application/grpc-web",
        (true, true, _) => "application/grpc-web-text+proto",
        (true, _, true) => "application/grpc-web-text+json",
        (true, _, _) => "application/grpc-web-text",
    }
}

/// A trailers-only gRPC response: HTTP 200 whose single HEADERS frame carries the status and
/// ends the stream, as gRPC servers answer a call they refuse outright. Over HTTP/1 (gRPC-web)
/// it closes the connection, as every rejection does.
fn grpc_unavailable(content_type: &'static str, closing: Closing) -> Response<Rejection> {
    let mut response = Response::new(Rejection::empty());
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert("grpc-status", HeaderValue::from_static(GRPC_UNAVAILABLE));
    headers.insert("grpc-message", HeaderValue::from_static(SHUTTING_DOWN));
    closing.apply(&mut response);
    response
}

/// How a gRPC response that the drain ends early (a long-lived one finished when the drain
/// begins) says so: with the status UNAVAILABLE, in the form of its protocol. A gRPC response
/// that just ends, without a status, is read by clients as a broken stream (tonic: UNKNOWN,
/// "missing grpc-status trailer"), which no retry policy retries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum GrpcEnd {
    /// gRPC: its status is a trailers frame of HTTP/2, which the drain does not add (see
    /// `TrackedState::next`); the response ends without one.
    Trailers,
    /// gRPC-web: trailers travel inside the body, as a frame of their own.
    Web,
    /// gRPC-web in base64 (`application/grpc-web-text`).
    WebText,
}

/// The status message of every UNAVAILABLE this crate ends a gRPC response with.
const SHUTTING_DOWN: &str = "server is shutting down";

/// A gRPC-web trailer frame: flag 0x80, the length (54, big-endian), then the trailers as
/// HTTP/1 header lines.
const GRPC_WEB_UNAVAILABLE: &[u8] =
    b"\x80\x00\x00\x00\x36grpc-status:14\r\ngrpc-message:server is shutting down\r\n";

/// The same frame in base64, for `application/grpc-web-text`, whose body is base64 chunks
/// that clients may receive one after another, each with its padding.
const GRPC_WEB_TEXT_UNAVAILABLE: &[u8] =
    b"gAAAADZncnBjLXN0YXR1czoxNA0KZ3JwYy1tZXNzYWdlOnNlcnZlciBpcyBzaHV0dGluZyBkb3duDQo=";

impl GrpcEnd {
    /// How a response with `headers` ends early: `None` if it is not gRPC, or has its status
    /// in its headers already (a trailers-only answer).
    #[cold]
    pub(crate) fn for_response(headers: &HeaderMap) -> Option<GrpcEnd> {
        if headers.contains_key("grpc-status") {
            return None;
        }
        Some(match grpc_content_type_of(headers)? {
            "application/grpc" => GrpcEnd::Trailers,
            text if text.starts_with("application/grpc-web-text") => GrpcEnd::WebText,
            _ => GrpcEnd::Web,
        })
    }

    /// The bytes of gRPC-web's trailer frame saying UNAVAILABLE; `None` for gRPC, whose
    /// trailers are a frame of HTTP/2.
    pub(crate) fn frame(self) -> Option<&'static [u8]> {
        match self {
            GrpcEnd::Trailers => None,
            GrpcEnd::Web => Some(GRPC_WEB_UNAVAILABLE),
            GrpcEnd::WebText => Some(GRPC_WEB_TEXT_UNAVAILABLE),
        }
    }

    /// Whether `chunk`, a data frame of the response, is gRPC-web's trailer frame: the
    /// response has its status already, and must not get a second one. tonic-web sends the
    /// trailer frame as a chunk of its own, and encodes each chunk in base64 on its own: its
    /// flag byte has the high bit set (0x80, or 0x81 compressed), which base64 begins with `g`.
    /// gRPC's trailers are not data, so never seen here.
    pub(crate) fn is_status(self, chunk: &[u8]) -> bool {
        let Some(&first) = chunk.first() else {
            return false;
        };
        match self {
            GrpcEnd::Trailers => false,
            GrpcEnd::Web => first & 0x80 != 0,
            GrpcEnd::WebText => first == b'g',
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Decodes standard, padded base64.
    fn base64_decode(text: &[u8]) -> Vec<u8> {
        const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        let mut bytes = Vec::new();
        for group in text.chunks(4) {
            let mut bits = 0u32;
            let mut padding = 0;
            for &symbol in group {
                bits <<= 6;
                match ALPHABET.iter().position(|&known| known == symbol) {
                    Some(value) => bits |= value as u32,
                    None => padding += 1,
                }
            }
            bytes.extend_from_slice(&bits.to_be_bytes()[1..4 - padding]);
        }
        bytes
    }

    #[test]
    fn grpc_web_trailer_frame_carries_its_length_and_unavailable() {
        let (head, trailers) = GRPC_WEB_UNAVAILABLE.split_at(5);
        assert_eq!(head[0], 0x80, "a trailer frame");
        let length = u32::from_be_bytes(head[1..5].try_into().unwrap());
        assert_eq!(length as usize, trailers.len());
        let expected =
            format!("grpc-status:{GRPC_UNAVAILABLE}\r\ngrpc-message:{SHUTTING_DOWN}\r\n");
        assert_eq!(trailers, expected.as_bytes());
    }

    #[test]
    fn grpc_web_text_trailer_frame_is_the_binary_one_in_base64() {
        assert_eq!(
            base64_decode(GRPC_WEB_TEXT_UNAVAILABLE),
            GRPC_WEB_UNAVAILABLE
        );
    }

    #[test]
    fn grpc_end_follows_the_content_type() {
        let end = |content_type: &'static str| {
            let mut headers = HeaderMap::new();
            headers.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
            GrpcEnd::for_response(&headers)
        };
        assert_eq!(end("application/grpc"), Some(GrpcEnd::Trailers));
        assert_eq!(end("application/grpc+proto"), Some(GrpcEnd::Trailers));
        assert_eq!(end("application/grpc-web+proto"), Some(GrpcEnd::Web));
        assert_eq!(end("application/grpc-web-text"), Some(GrpcEnd::WebText));
        assert_eq!(end("text/event-stream"), None);
        let mut trailers_only = HeaderMap::new();
        trailers_only.insert(CONTENT_TYPE, HeaderValue::from_static("application/grpc"));
        trailers_only.insert("grpc-status", HeaderValue::from_static("0"));
        assert_eq!(GrpcEnd::for_response(&trailers_only), None);
    }

    /// A stream whose own trailer frame went out just as the drain began must not get a
    /// second one: each form of the trailer frame is recognised, and a message is not.
    #[test]
    fn grpc_web_trailer_frames_are_told_from_messages() {
        let message = b"\x00\x00\x00\x00\x02\x08\x01";
        for end in [GrpcEnd::Web, GrpcEnd::WebText] {
            assert!(end.is_status(end.frame().unwrap()));
        }
        assert!(!GrpcEnd::Web.is_status(message));
        // The message in base64.
        assert!(!GrpcEnd::WebText.is_status(b"AAAAAAIIAQ=="));
        assert!(!GrpcEnd::Web.is_status(b""));
    }
}
