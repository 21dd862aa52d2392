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

pin_project! {
    /// The response body of a [`DrainService`](super::DrainService).
    ///
    /// Wraps the inner body without boxing it. The request stops counting when this body
    /// yields its last frame, yields an error, or is dropped (the client went away). If the
    /// body counts its request (under [`Shutdown::layer`](crate::Shutdown::layer) or
    /// [`InFlightLayer`](crate::InFlightLayer)) and the drain deadline passes first, or it is
    /// long-lived and its own deadline passes, the next poll yields [`Aborted`] instead of data, so
    /// the server resets the stream and the client can tell a cut response from a whole one.
    pub struct ResponseBody<B> {
        #[pin]
        kind: Kind<B>,
    }
}

pin_project! {
    #[project = KindProj]
    enum Kind<B> {
        // Fields drop in declaration order: a long-lived response leaves the registry before
        // its count drops, so a report taken at the zero edge never lists finished work.
        Passed {
            #[pin]
            inner: B,
            // Set for a long-lived response (see `crate::long_lived`), which ends or aborts on
            // drain by its own rules. Boxed so that short responses carry one null pointer.
            tracked: Option<Box<TrackedState>>,
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
        ResponseBody {
            kind: Kind::Passed {
                inner,
                tracked,
                guard,
                aborted: false,
            },
        }
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
    // phase. A long-lived body's logic sits in functions that are not inlined and answer a
    // small `Next`, never a frame: a call that returns the frame, even one never taken, puts
    // every frame of every response through memory (`benches/overhead.rs`, 16 frames).
    #[inline]
    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<B::Data>, BoxError>>> {
        match self.project().kind.project() {
            KindProj::Passed {
                mut inner,
                guard,
                aborted,
                tracked,
            } => loop {
                // Bounded: a second pass happens only after a long-lived body's wake-up fired,
                // and then `next` no longer answers `Poll` for the same reason.
                let next = match tracked {
                    Some(state) => state.next(guard),
                    None if *aborted => Next::End,
                    // Cost: one load of the phase per frame.
                    None if guard.as_ref().is_some_and(InFlightGuard::is_aborted) => {
                        *guard = None;
                        Next::Abort
                    }
                    None => Next::Poll,
                };
                match next {
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
                // One arm per outcome rather than `Option::map`: the data arm then moves the
                // frame straight into the return value.
                match inner.as_mut().poll_frame(cx) {
                    Poll::Ready(Some(Ok(frame))) => return Poll::Ready(Some(Ok(frame))),
                    // End of stream or an error: the response is over either way.
                    Poll::Ready(Some(Err(error))) => {
                        ended(tracked, guard);
                        return Poll::Ready(Some(Err(error.into())));
                    }
                    Poll::Ready(None) => {
                        ended(tracked, guard);
                        return Poll::Ready(None);
                    }
                    Poll::Pending => match tracked {
                        // Arms its wake-up; if that has already fired, decide again.
                        Some(state) => ready!(state.poll_wait(cx)),
                        None => return Poll::Pending,
                    },
                }
            },
            KindProj::Rejected { rejection } => {
                Poll::Ready(rejection.take().map(|data| Ok(Frame::data(data.into()))))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Passed {
                inner,
                aborted,
                tracked,
                ..
            } => {
                *aborted
                    || tracked.as_ref().is_some_and(|state| state.is_end_stream())
                    || inner.is_end_stream()
            }
            Kind::Rejected { rejection } => rejection.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Passed { inner, .. } => inner.size_hint(),
            Kind::Rejected { rejection } => rejection.size_hint(),
        }
    }
}

/// The inner body ended or failed: nothing is held any more.
#[inline]
fn ended(tracked: &mut Option<Box<TrackedState>>, guard: &mut Option<InFlightGuard>) {
    match tracked {
        Some(state) => state.end(guard),
        None => *guard = None,
    }
}

impl<B> fmt::Debug for ResponseBody<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match &self.kind {
            Kind::Passed {
                tracked: Some(_), ..
            } => "long-lived",
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
