//! The response future: carries the in-flight guard until the response exists.

use std::future::Future;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use http::header::{HeaderValue, CONNECTION};
use http::Response;
use pin_project_lite::pin_project;

use super::rejection::Rejection;
use super::ResponseBody;
use crate::guard::InFlightGuard;
use crate::shutdown::Core;

pin_project! {
    /// The future of a [`DrainService`](super::DrainService) call.
    ///
    /// If it is dropped before the response exists (the client went away, a timeout layer
    /// fired, the handler panicked) its guard is dropped with it and the request stops counting.
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
        },
        Rejected {
            response: Option<Response<Rejection>>,
        },
    }
}

impl<F> ResponseFuture<F> {
    pub(crate) fn called(
        future: F,
        guard: Option<InFlightGuard>,
        close_if_draining: Option<&'static Core>,
    ) -> Self {
        ResponseFuture {
            kind: Kind::Called {
                future,
                guard,
                close_if_draining,
            },
        }
    }

    pub(crate) fn rejected(response: Response<Rejection>) -> Self {
        ResponseFuture {
            kind: Kind::Rejected {
                response: Some(response),
            },
        }
    }
}

impl<F, B, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<Response<B>, E>>,
{
    type Output = Result<Response<ResponseBody<B>>, E>;

    // Inlined so the response is re-wrapped in place rather than copied through a call.
    #[inline]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().kind.project() {
            KindProj::Called {
                future,
                guard,
                close_if_draining,
            } => {
                // An error drops the guard here: there is no body left to wait for.
                let mut response = ready!(future.poll(cx))?;
                if close_if_draining.is_some_and(|core| core.phase().admission_closed()) {
                    response
                        .headers_mut()
                        .insert(CONNECTION, HeaderValue::from_static("close"));
                }
                Poll::Ready(Ok(
                    response.map(|body| ResponseBody::new(body, guard.take()))
                ))
            }
            KindProj::Rejected { response } => Poll::Ready(Ok(response
                .take()
                .expect("ResponseFuture polled after completion")
                .map(ResponseBody::rejected))),
        }
    }
}
