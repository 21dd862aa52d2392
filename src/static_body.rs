//! A response body of one static chunk: probe answers and rejections.

use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::header::{HeaderValue, CONTENT_LENGTH, CONTENT_TYPE};
use http::{Method, Request, Response, StatusCode};
use http_body::{Body, Frame, SizeHint};

/// A response body holding one `&'static` chunk, or nothing.
///
/// The body of the probe services ([`Shutdown::readiness`](crate::Shutdown::readiness),
/// [`Shutdown::liveness`](crate::Shutdown::liveness)) and of the middleware's rejections.
/// It never allocates: the chunk is handed out once as [`Bytes::from_static`].
#[derive(Debug, Clone, Default)]
pub struct StaticBody {
    data: Option<&'static [u8]>,
}

impl StaticBody {
    /// A body of `data` (an empty slice gives an empty body).
    pub const fn new(data: &'static [u8]) -> Self {
        StaticBody {
            data: if data.is_empty() { None } else { Some(data) },
        }
    }

    /// A body with no data.
    pub const fn empty() -> Self {
        StaticBody { data: None }
    }

    /// Hands out the chunk once. Lets a wrapping body turn it into its own data type
    /// (anything `From<&'static [u8]>`), as the middleware's `ResponseBody` does.
    pub(crate) fn take(&mut self) -> Option<&'static [u8]> {
        self.data.take()
    }
}

/// A `text/plain` response of `text` with `status`: what probes and rejections answer.
pub(crate) fn plain_text(status: StatusCode, text: &'static str) -> Response<StaticBody> {
    let mut response = Response::new(StaticBody::new(text.as_bytes()));
    *response.status_mut() = status;
    response.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

/// `response` fitted to `request`: for a `HEAD`, the same head with the `Content-Length` a
/// `GET` gets, and no body. A server must not send a body to a `HEAD`; hyper leaves it out on
/// HTTP/1 but sends it on HTTP/2, where the client then resets the stream as malformed: it
/// may read the head, but the exchange fails.
pub(crate) fn fit_to<B>(
    request: &Request<B>,
    response: Response<StaticBody>,
) -> Response<StaticBody> {
    if request.method() == Method::HEAD {
        head_only(response)
    } else {
        response
    }
}

/// The head of `response`, with the length of the body it leaves out.
pub(crate) fn head_only(mut response: Response<StaticBody>) -> Response<StaticBody> {
    let length = response.body_mut().take().map_or(0, <[u8]>::len);
    response
        .headers_mut()
        .insert(CONTENT_LENGTH, HeaderValue::from(length));
    response
}

impl Body for StaticBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        Poll::Ready(
            self.get_mut()
                .take()
                .map(|data| Ok(Frame::data(Bytes::from_static(data)))),
        )
    }

    fn is_end_stream(&self) -> bool {
        self.data.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.data.map_or(0, |data| data.len() as u64))
    }
}
