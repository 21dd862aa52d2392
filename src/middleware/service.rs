//! The service: admits, rejects, or passes a request through.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use http::{Request, Response, Version};
use tokio_util::sync::WaitForCancellationFuture;
use tower_service::Service;

use super::rejection::Reply;
use super::{Policy, ResponseBody, ResponseFuture};
use crate::long_lived::{Track, Watch};
use crate::Shutdown;

/// The service every layer of this crate produces; what it does depends on the layer.
///
/// A layer that rejects is ready once admission has closed, even when the service it wraps
/// is not (a full concurrency limit or buffer): a request that arrives while draining is
/// answered 503 at once, and one already waiting for room there when admission closes is
/// answered then, not left waiting for room it would only be refused after.
pub struct DrainService<S> {
    inner: S,
    shutdown: Shutdown,
    policy: Policy,
    /// Set only while a rejecting layer waits for its inner service to have room with
    /// admission open: wakes the waiting task when admission closes. Never cloned (a clone
    /// has not waited), so an ordinary request's copy of the service carries a null here.
    closing: Option<Pin<Box<WaitForCancellationFuture<'static>>>>,
}

impl<S: Clone> Clone for DrainService<S> {
    fn clone(&self) -> Self {
        DrainService {
            inner: self.inner.clone(),
            shutdown: self.shutdown,
            policy: self.policy,
            closing: None,
        }
    }
}

impl<S: fmt::Debug> fmt::Debug for DrainService<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DrainService")
            .field("inner", &self.inner)
            .field("shutdown", &self.shutdown)
            .field("policy", &self.policy)
            .finish_non_exhaustive()
    }
}

impl<S> DrainService<S> {
    pub(crate) fn new(inner: S, shutdown: Shutdown, policy: Policy) -> Self {
        DrainService {
            inner,
            shutdown,
            policy,
            closing: None,
        }
    }

    /// The wrapped service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The wrapped service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// Unwraps the service.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for DrainService<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
    ResBody: http_body::Body,
{
    type Response = Response<ResponseBody<ResBody>>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future>;

    #[inline]
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        match self.inner.poll_ready(cx) {
            Poll::Pending => self.ready_to_reject(cx),
            ready => ready,
        }
    }

    // Inlined so the request and the future are built in place rather than copied through a
    // call. Always: as a hint it sat at the edge of the inliner's budget, and whether it was
    // taken changed with unrelated code elsewhere in the crate, moving the cost of a request
    // by about 60 instructions and 10 ns (`benches/report-notes.md`).
    #[inline(always)]
    fn call(&mut self, request: Request<ReqBody>) -> Self::Future {
        if self.policy.bypasses(&request) {
            // A layer the drain waits on also ends a bypassed gRPC stream (a health `Watch`)
            // once the drain is over; the others pass it untouched.
            let watch = if self.policy.count {
                Watch::bypassed(self.shutdown.core)
            } else {
                Watch::default()
            };
            return ResponseFuture::called(self.inner.call(request), None, None, watch);
        }
        if let Track::Route(tracking) = self.policy.track {
            // A marked route, under `LongLivedLayer::route`, which neither counts nor rejects.
            // Kept apart so the common path never lends the request out.
            let (request, watch) = Watch::route(tracking, self.shutdown.core, request);
            return ResponseFuture::called(self.inner.call(request), None, None, watch);
        }
        let core = self.shutdown.core;
        let (guard, closed) = if self.policy.count {
            let guard = core.admit();
            let closed = guard.is_none();
            (guard, closed)
        } else {
            (None, core.phase().admission_closed())
        };
        if closed && self.policy.reject {
            core.note_rejected();
            return ResponseFuture::rejected(Reply::for_request(&request, &self.policy));
        }
        // Only HTTP/1 has a `Connection` header; on HTTP/2 the server's GOAWAY does this job.
        let close_if_draining =
            (self.policy.reject && request.version() < Version::HTTP_2).then_some(core);
        // The watch is built after the call: one fewer copy of the request in the measured
        // code (`benches/long_lived.rs`).
        let future = self.inner.call(request);
        ResponseFuture::called(
            future,
            guard,
            close_if_draining,
            Watch::detect(self.policy.track),
        )
    }
}

impl<S> DrainService<S> {
    /// The inner service is not ready (a full concurrency limit or buffer). A rejecting
    /// layer whose admission has closed is ready all the same: the request it is about to
    /// be given is answered 503 without the inner service, and need not wait for room
    /// there, possibly until the drain deadline, to be told to go elsewhere.
    ///
    /// Admission never reopens, and the phase `call` reads is this one or a later one
    /// (loads of one atomic are never seen out of order, and a task moved to another thread
    /// in between is moved with a happens-before edge), so the `call` that follows rejects;
    /// but for a bypassed path (a probe), which goes to the inner service, and that service
    /// must not be called unready. So this service bypasses no path from now on, and refuses
    /// probes like late requests. Out of line and cold: an inner service that is ready never
    /// gets here, and `call` is left as it was (a flag read in its bypass branch cost every
    /// request 7 to 17 instructions, `benches/instructions.rs`).
    ///
    /// While admission is open, the task waits for the inner service's wake-up, and also for
    /// admission to close: a request waiting for room when the drain begins (every place of
    /// a concurrency limit held by a stream) is then refused at once, as one arriving later
    /// is, rather than when some room frees, which may be at the drain deadline.
    #[cold]
    #[inline(never)]
    fn ready_to_reject<E>(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), E>> {
        if !self.policy.reject {
            return Poll::Pending;
        }
        let core = self.shutdown.core;
        if !core.phase().admission_closed() {
            let closing = self
                .closing
                .get_or_insert_with(|| Box::pin(core.closing.cancelled()));
            if closing.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            // Admission closed between the two looks: `closing` fires only after the phase
            // has moved.
        }
        self.closing = None;
        self.policy.bypass = &[];
        Poll::Ready(Ok(()))
    }
}
