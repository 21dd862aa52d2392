//! The response future: carries the in-flight guard until the response exists.

use std::future::Future;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use http::header::{HeaderValue, CONNECTION};
use http::{Response, StatusCode};
use pin_project_lite::pin_project;

use super::rejection::{self, Reply};
use super::ResponseBody;
use crate::core::Core;
use crate::guard::InFlightGuard;
use crate::long_lived::Watch;

pin_project! {
    /// The future of a [`DrainService`](super::DrainService) call.
    ///
    /// If it is dropped before the response exists (the client went away, a timeout layer
    /// fired, the handler panicked) its guard is dropped with it and the request stops counting.
    /// If it counts its request (under [`Shutdown::layer`](crate::Shutdown::layer) or
    /// [`InFlightLayer`](crate::InFlightLayer)) and is polled after the drain deadline passed,
    /// it stops waiting for the handler and answers `503 Service Unavailable` with
    /// `grpc-status: 14`, which gRPC clients read as UNAVAILABLE. A handler stalled on
    /// something else is not polled again; it ends when the server drops its connection at
    /// the deadline. `server::serve` (feature `hyper-server`) polls every HTTP/2 stream and
    /// then every connection once more as it closes them, so that such a request gets its
    /// 503 first.
    pub struct ResponseFuture<F> {
        #[pin]
        kind: Kind<F>,
    }
}

pin_project! {
    #[project = KindProj]
    enum Kind<F> {
        Called {
            #[pin]
            future: F,
            guard: Option<InFlightGuard>,
            // Set for HTTP/1 requests under a rejecting layer: add `Connection: close` if
            // admission has closed by the time the response is ready.
            close_if_draining: Option<&'static Core>,
            // Whether and how the response may turn out long-lived.
            watch: Watch,
        },
        Rejected {
            reply: Reply,
        },
    }
}

impl<F> ResponseFuture<F> {
    pub(crate) fn called(
        future: F,
        guard: Option<InFlightGuard>,
        close_if_draining: Option<&'static Core>,
        watch: Watch,
    ) -> Self {
        ResponseFuture {
            kind: Kind::Called {
                future,
                guard,
                close_if_draining,
                watch,
            },
        }
    }

    pub(crate) fn rejected(reply: Reply) -> Self {
        ResponseFuture {
            kind: Kind::Rejected { reply },
        }
    }
}

impl<F, B, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<Response<B>, E>>,
    B: http_body::Body,
{
    type Output = Result<Response<ResponseBody<B>>, E>;

    // Inlined so the response is re-wrapped in place rather than copied through a call;
    // always, for the reason given on `DrainService::call`.
    #[inline(always)]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().kind.project() {
            KindProj::Called {
                future,
                guard,
                close_if_draining,
                watch,
            } => {
                // Cost: one load of the phase per poll.
                if guard.as_ref().is_some_and(InFlightGuard::is_aborted) {
                    *guard = None;
                    let response = rejection::aborted(close_if_draining.is_some());
                    return Poll::Ready(Ok(response.map(ResponseBody::rejected)));
                }
                // An error leaves no body to wait for: the guard goes with this future, which
                // the server drops as soon as it has the error.
                let mut response = match future.poll(cx) {
                    Poll::Ready(result) => result?,
                    // Only a marked route's watch ever answers here (`Watch::poll_cut`).
                    Poll::Pending => {
                        let cut = ready!(watch.poll_cut(cx));
                        *guard = None;
                        return Poll::Ready(Ok(cut.map(ResponseBody::rejected)));
                    }
                };
                // Not on a 101: its `Connection: upgrade` is what hands the connection over,
                // and an upgraded connection is not reused for HTTP anyway.
                if close_if_draining.is_some_and(|core| core.phase().admission_closed())
                    && response.status() != StatusCode::SWITCHING_PROTOCOLS
                {
                    response
                        .headers_mut()
                        .insert(CONNECTION, HeaderValue::from_static("close"));
                }
                let guard = guard.take();
                let counted_by = guard.as_ref().map(InFlightGuard::core);
                let tracked = watch.classify(&mut response, counted_by);
                Poll::Ready(Ok(
                    response.map(|body| ResponseBody::passed(body, guard, tracked))
                ))
            }
            KindProj::Rejected { reply } => {
                Poll::Ready(Ok(reply.into_response().map(ResponseBody::rejected)))
            }
        }
    }
}
