//! The response sent to requests that arrive once admission has closed.

use http::header::{HeaderValue, CONNECTION, CONTENT_TYPE, RETRY_AFTER};
use http::{Request, Response, StatusCode, Version};

use super::Policy;
use crate::static_body::plain_text;

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
        http1: bool,
    },
    /// A plain-text 503 with `Retry-After`.
    Http {
        http1: bool,
        retry_after_secs: u64,
        message: &'static str,
    },
}

impl Reply {
    /// The reply for `request` under `policy`: UNAVAILABLE for gRPC calls, 503 otherwise.
    pub(crate) fn for_request<B>(request: &Request<B>, policy: &Policy) -> Reply {
        let http1 = request.version() < Version::HTTP_2;
        if let Some(content_type) = grpc_content_type(request) {
            return Reply::Grpc {
                content_type,
                http1,
            };
        }
        Reply::Http {
            http1,
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
                http1,
            } => grpc_unavailable(content_type, http1),
            Reply::Http {
                http1,
                retry_after_secs,
                message,
            } => unavailable(message, http1, retry_after_secs),
        }
    }
}

/// The answer to a request whose handler was still running at the drain deadline. The
/// request may be retried elsewhere, as a rejected one may.
#[cold]
#[inline(never)]
pub(crate) fn aborted(http1: bool) -> Response<Rejection> {
    unavailable(
        "request aborted: the server's shutdown deadline passed\n",
        http1,
        RETRY_SOON_SECS,
    )
}

/// `Retry-After` for the answers made at a deadline, where no layer's setting is at hand.
const RETRY_SOON_SECS: u64 = 1;

/// A plain-text 503 telling the client when to retry, closing HTTP/1 connections.
fn unavailable(message: &'static str, http1: bool, retry_after_secs: u64) -> Response<Rejection> {
    let mut response = plain_text(StatusCode::SERVICE_UNAVAILABLE, message);
    let headers = response.headers_mut();
    headers.insert(RETRY_AFTER, HeaderValue::from(retry_after_secs));
    if http1 {
        headers.insert(CONNECTION, HeaderValue::from_static("close"));
    }
    response
}

/// The answer given for a marked route whose handler was still waiting at the long-lived
/// deadline: the handler is dropped, the client told to retry elsewhere.
#[cold]
#[inline(never)]
pub(crate) fn long_lived_cut(http1: bool) -> Response<Rejection> {
    unavailable(
        "request cut short: the server is shutting down\n",
        http1,
        RETRY_SOON_SECS,
    )
}

/// The content type of the answer to a gRPC or gRPC-web call, or `None` for any other
/// request.
fn grpc_content_type<B>(request: &Request<B>) -> Option<&'static str> {
    let value = request.headers().get(CONTENT_TYPE)?.as_bytes();
    let rest = value.strip_prefix(b"application/grpc")?;
    match rest.strip_prefix(b"-web") {
        Some(web) => Some(grpc_web_content_type(web)),
        None => Some("application/grpc"),
    }
}

/// gRPC-web clients check the response's content type before its status, and refuse one
/// that is not gRPC-web in the encoding (`-text`: base64) and codec they asked for. So the
/// answer keeps both; `rest` is what follows `application/grpc-web`. A codec other than
/// proto or JSON is answered without one.
fn grpc_web_content_type(rest: &[u8]) -> &'static str {
    let (text, codec) = match rest.strip_prefix(b"-text") {
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
fn grpc_unavailable(content_type: &'static str, http1: bool) -> Response<Rejection> {
    let mut response = Response::new(Rejection::empty());
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert("grpc-status", HeaderValue::from_static(GRPC_UNAVAILABLE));
    headers.insert(
        "grpc-message",
        HeaderValue::from_static("server is shutting down"),
    );
    if http1 {
        headers.insert(CONNECTION, HeaderValue::from_static("close"));
    }
    response
}
