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
    /// gRPC's trailers-only UNAVAILABLE.
    Grpc,
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
        if is_grpc(request) {
            return Reply::Grpc;
        }
        Reply::Http {
            http1: request.version() < Version::HTTP_2,
            retry_after_secs: policy.retry_after_secs,
            message: policy.message,
        }
    }

    #[cold]
    #[inline(never)]
    pub(crate) fn into_response(self) -> Response<Rejection> {
        match self {
            Reply::Grpc => grpc_unavailable(),
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

fn is_grpc<B>(request: &Request<B>) -> bool {
    request
        .headers()
        .get(CONTENT_TYPE)
        .is_some_and(|value| value.as_bytes().starts_with(b"application/grpc"))
}

/// A trailers-only gRPC response: HTTP 200 whose single HEADERS frame carries the status and
/// ends the stream, as gRPC servers answer a call they refuse outright.
fn grpc_unavailable() -> Response<Rejection> {
    let mut response = Response::new(Rejection::empty());
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/grpc"));
    headers.insert("grpc-status", HeaderValue::from_static(GRPC_UNAVAILABLE));
    headers.insert(
        "grpc-message",
        HeaderValue::from_static("server is shutting down"),
    );
    response
}
