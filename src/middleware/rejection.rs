//! The response sent to requests that arrive once admission has closed.

use http::header::{HeaderValue, CONNECTION, CONTENT_TYPE, RETRY_AFTER};
use http::{Request, Response, StatusCode, Version};
use http_body::SizeHint;

use super::Policy;

/// The body of a rejection: one static chunk, or nothing (gRPC's trailers-only form).
#[derive(Debug)]
pub(crate) struct Rejection {
    data: Option<&'static [u8]>,
}

impl Rejection {
    pub(crate) fn take(&mut self) -> Option<&'static [u8]> {
        self.data.take()
    }

    pub(crate) fn is_end_stream(&self) -> bool {
        self.data.is_none()
    }

    pub(crate) fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.data.map_or(0, |data| data.len() as u64))
    }
}

/// `grpc-status` for UNAVAILABLE: the client may retry elsewhere.
const GRPC_UNAVAILABLE: &str = "14";

/// Builds the rejection for `request`: gRPC's UNAVAILABLE for gRPC calls, 503 otherwise.
pub(crate) fn response<B>(request: &Request<B>, policy: &Policy) -> Response<Rejection> {
    if is_grpc(request) {
        return grpc_unavailable();
    }
    let mut response = Response::new(Rejection {
        data: Some(policy.message.as_bytes()),
    });
    *response.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
    let headers = response.headers_mut();
    headers.insert(RETRY_AFTER, HeaderValue::from(policy.retry_after_secs));
    headers.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    if request.version() < Version::HTTP_2 {
        headers.insert(CONNECTION, HeaderValue::from_static("close"));
    }
    response
}

/// The answer given for a marked route whose handler was still waiting at the long-lived
/// deadline: the handler is dropped, the client told to retry elsewhere.
pub(crate) fn long_lived_cut() -> Response<Rejection> {
    let mut response = Response::new(Rejection {
        data: Some(b"request cut short: the server is shutting down\n"),
    });
    *response.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
    let headers = response.headers_mut();
    headers.insert(RETRY_AFTER, HeaderValue::from(1));
    headers.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
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
    let mut response = Response::new(Rejection { data: None });
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/grpc"));
    headers.insert("grpc-status", HeaderValue::from_static(GRPC_UNAVAILABLE));
    headers.insert(
        "grpc-message",
        HeaderValue::from_static("server is shutting down"),
    );
    response
}
