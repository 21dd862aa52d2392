//! The response body: carries the in-flight guard until the last frame is sent.

use std::error::Error;
use std::fmt;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;

use super::rejection::Rejection;
use super::BoxError;
use crate::guard::InFlightGuard;
use crate::long_lived::{Next, TrackedState};
use bytes::Buf;

pin_project! {
    /// The response body of a [`DrainService`](super::DrainService).
    ///
    /// Wraps the inner body without boxing it. The request stops counting when this body
    /// yields its last frame, yields an error, or is dropped (the client went away). If the
    /// body counts its request (under [`Shutdown::layer`](crate::Shutdown::layer) or
    /// [`InFlightLayer`](crate::InFlightLayer)) and the drain deadline passes first, or it is
    /// long-lived and its own deadline passes, the next poll yields [`Aborted`] instead of
    /// data, so the server resets the stream and the client can tell a cut response from a
    /// whole one.
    pub struct ResponseBody<B> {
        #[pin]
        kind: Kind<B>,
    }
}

pin_project! {
    #[project = KindProj]
    enum Kind<B> {
        Passed {
            #[pin]
            inner: B,
            guard: Option<InFlightGuard>,
            aborted: bool,
        },
        // A long-lived response (see `crate::long_lived`), which ends or aborts on drain by
        // its own rules. A variant of its own, so that the frames of other responses never
        // pass its checks. Fields drop in declaration order: it leaves the registry before
        // its count drops, so a report taken at the zero edge never lists finished work.
        Tracked {
            #[pin]
            inner: B,
            // Boxed so that short responses do not carry its size.
            state: Box<TrackedState>,
            guard: Option<InFlightGuard>,
            aborted: bool,
        },
        Rejected {
            rejection: Rejection,
        },
    }
}

impl<B> ResponseBody<B> {
    /// The inner body, counted by `guard` if any, and long-lived if `tracked` is set.
    pub(crate) fn passed(
        inner: B,
        guard: Option<InFlightGuard>,
        tracked: Option<Box<TrackedState>>,
    ) -> Self {
        let kind = match tracked {
            None => Kind::Passed {
                inner,
                guard,
                aborted: false,
            },
            Some(state) => Kind::Tracked {
                inner,
                state,
                guard,
                aborted: false,
            },
        };
        ResponseBody { kind }
    }

    pub(crate) fn rejected(rejection: Rejection) -> Self {
        ResponseBody {
            kind: Kind::Rejected { rejection },
        }
    }
}

impl<B> Body for ResponseBody<B>
where
    B: Body,
    B::Error: Into<BoxError>,
    B::Data: From<&'static [u8]>,
{
    type Data = B::Data;
    type Error = BoxError;

    // Cost: inlined, an ordinary frame passes through for two flag checks and one load of the
    // phase. A long-lived body's decisions sit in functions that are not inlined and answer a
    // small `Next`, never a frame: a call that returns the frame, even one never taken, puts
    // every frame of every response through memory (`benches/overhead.rs`, 16 frames).
    // Always inlined, for the reason given on `DrainService::call`.
    #[inline(always)]
    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<B::Data>, BoxError>>> {
        match self.project().kind.project() {
            KindProj::Passed {
                inner,
                guard,
                aborted,
            } => {
                if *aborted {
                    return Poll::Ready(None);
                }
                // Cost: one load of the phase per frame.
                if guard.as_ref().is_some_and(InFlightGuard::is_aborted) {
                    *guard = None;
                    *aborted = true;
                    return Poll::Ready(Some(Err(Box::new(Aborted))));
                }
                // One arm per outcome rather than `Option::map`: the data arm then moves the
                // frame straight into the return value.
                match inner.poll_frame(cx) {
                    Poll::Ready(Some(Ok(frame))) => Poll::Ready(Some(Ok(frame))),
                    // End of stream or an error: the response is over either way.
                    Poll::Ready(Some(Err(error))) => {
                        *guard = None;
                        Poll::Ready(Some(Err(error.into())))
                    }
                    Poll::Ready(None) => {
                        *guard = None;
                        Poll::Ready(None)
                    }
                    Poll::Pending => Poll::Pending,
                }
            }
            KindProj::Tracked {
                mut inner,
                state,
                guard,
                aborted,
            } => loop {
                // Bounded: another pass happens only after the body's wake-up fired, and
                // then `next` no longer answers `Poll` for the same reason (a gRPC response
                // asked to finish takes one pass more, to find its inner body waiting).
                match state.next(guard) {
                    Next::Poll => {}
                    Next::Yield(chunk) => {
                        return Poll::Ready(Some(Ok(Frame::data(chunk.into()))));
                    }
                    Next::End => return Poll::Ready(None),
                    Next::Abort => {
                        *aborted = true;
                        return Poll::Ready(Some(Err(Box::new(Aborted))));
                    }
                }
                match inner.as_mut().poll_frame(cx) {
                    Poll::Ready(Some(Ok(frame))) => {
                        // Its bytes, not the frame: the frame stays where it is.
                        if let Some(data) = frame.data_ref() {
                            state.sent(data.chunk(), data.remaining());
                        }
                        return Poll::Ready(Some(Ok(frame)));
                    }
                    // End of stream or an error: the response is over either way.
                    Poll::Ready(Some(Err(error))) => {
                        state.end(guard);
                        return Poll::Ready(Some(Err(error.into())));
                    }
                    Poll::Ready(None) => {
                        state.end_whole(guard);
                        return Poll::Ready(None);
                    }
                    // Arms its wake-up; if that has already fired, decide again.
                    Poll::Pending => ready!(state.poll_wait(cx)),
                }
            },
            KindProj::Rejected { rejection } => {
                Poll::Ready(rejection.take().map(|data| Ok(Frame::data(data.into()))))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Passed { inner, aborted, .. } => *aborted || inner.is_end_stream(),
            Kind::Tracked {
                inner,
                state,
                aborted,
                ..
            } => *aborted || state.is_end_stream() || inner.is_end_stream(),
            Kind::Rejected { rejection } => rejection.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Passed { inner, .. } | Kind::Tracked { inner, .. } => inner.size_hint(),
            Kind::Rejected { rejection } => rejection.size_hint(),
        }
    }
}

/// The inner body's default, counting no request. Layers outside this one build their own
/// answers with it: tower-http's `TimeoutLayer` answers a request it gave up on (whose count
/// ended with the future it dropped) with a default body.
impl<B: Default> Default for ResponseBody<B> {
    fn default() -> Self {
        ResponseBody::passed(B::default(), None, None)
    }
}

impl<B> fmt::Debug for ResponseBody<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match &self.kind {
            Kind::Tracked { .. } => "long-lived",
            Kind::Passed { guard, .. } if guard.is_some() => "counted",
            Kind::Passed { .. } => "passed",
            Kind::Rejected { .. } => "rejected",
        };
        f.debug_struct("ResponseBody")
            .field("kind", &kind)
            .finish_non_exhaustive()
    }
}

/// The body error a response gets when shutdown cuts it short: at the drain deadline, at the
/// long-lived deadline for a long-lived response, or when shutdown is forced.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct Aborted;

impl fmt::Display for Aborted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("response aborted: the server is shutting down and cut it short")
    }
}

impl Error for Aborted {}
