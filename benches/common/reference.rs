//! Reference middlewares that exist only to measure against: what wrapping costs, and what the
//! least a counting middleware can do costs. None of them is a usable middleware.
//!
//! * [`Passthrough`] wraps the response future and the response body and does nothing else.
//! * [`Counting`] counts a request from `call` to the end of its body with a guard carried from
//!   the future into the body, the shape of this crate's layers without their admission
//!   policy, rejection, abort or bypass: with a [`StaticCounter`] it is one relaxed add and one
//!   release subtract on a single atomic; with a `Shutdown` it takes the crate's own
//!   [`InFlightGuard`](tower_drain::InFlightGuard) through `Shutdown::guard`. With
//!   `AtEnd` the body drops its guard as it yields its last frame (as this crate's
//!   layers do); with `OnDrop` the guard goes when the body is dropped (as tower-http's does).
//!   With a [`ThreadCounter`] it is a per-thread count with no locked instruction.

use std::cell::Cell;
use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::atomic::{compiler_fence, AtomicU8, AtomicUsize, Ordering};
use std::task::{ready, Context, Poll};

use http::{Request, Response};
use http_body::{Body, Frame};
use pin_project_lite::pin_project;
use tower::Service;
use tower_drain::{InFlightGuard, Shutdown};

// === Passthrough ===

/// Wraps the future and the body, adds nothing.
#[derive(Clone)]
pub struct Passthrough<S>(pub S);

impl<S, B> Service<Request<()>> for Passthrough<S>
where
    S: Service<Request<()>, Response = Response<B>>,
{
    type Response = Response<Carried<B, (), OnDrop>>;
    type Error = S::Error;
    type Future = CarryingFuture<S::Future, (), OnDrop>;

    #[inline]
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.0.poll_ready(cx)
    }

    #[inline]
    fn call(&mut self, request: Request<()>) -> Self::Future {
        CarryingFuture {
            future: self.0.call(request),
            guard: None,
            release: PhantomData,
        }
    }
}

// === Counting ===

/// Where a [`Counting`] middleware takes its guards from.
pub trait Admit: Clone {
    /// Held from `call` until the body ends.
    type Guard;
    /// A guard, or `None` to pass the request uncounted.
    fn admit(&self) -> Option<Self::Guard>;
}

/// One counter on one cache line, shared by every thread: the simplest possible count.
#[derive(Clone, Copy)]
pub struct StaticCounter(&'static AtomicUsize);

impl StaticCounter {
    /// A fresh counter (leaked: a handful per bench run).
    pub fn new() -> Self {
        StaticCounter(Box::leak(Box::new(AtomicUsize::new(0))))
    }
}

/// Releases one count of a [`StaticCounter`].
pub struct StaticGuard(&'static AtomicUsize);

impl Drop for StaticGuard {
    #[inline]
    fn drop(&mut self) {
        // Release: what the request did happens-before a reader seeing the count drop.
        self.0.fetch_sub(1, Ordering::Release);
    }
}

impl Admit for StaticCounter {
    type Guard = StaticGuard;

    #[inline]
    fn admit(&self) -> Option<StaticGuard> {
        // Relaxed: a count, published to readers by the matching Release subtract.
        self.0.fetch_add(1, Ordering::Relaxed);
        Some(StaticGuard(self.0))
    }
}

/// A count kept per thread with plain loads and stores, beside a shared phase flag that is
/// only ever read: the hot path of a counter with no locked instruction at all. Such a
/// counter is correct only if the drainer forces a memory barrier on every other thread
/// before it sums the counts (Linux's `membarrier`), which this reference does not do; it
/// prices the request's side only.
#[derive(Clone, Copy)]
pub struct ThreadCounter(&'static AtomicU8);

thread_local! {
    static THREAD_COUNT: Cell<isize> = const { Cell::new(0) };
}

impl ThreadCounter {
    /// A fresh phase flag (leaked: a handful per bench run).
    pub fn new() -> Self {
        ThreadCounter(Box::leak(Box::new(AtomicU8::new(0))))
    }
}

/// Releases one count of a [`ThreadCounter`], on the thread that drops it.
pub struct ThreadGuard;

impl Drop for ThreadGuard {
    #[inline]
    fn drop(&mut self) {
        THREAD_COUNT.with(|count| count.set(count.get() - 1));
    }
}

impl Admit for ThreadCounter {
    type Guard = ThreadGuard;

    #[inline]
    fn admit(&self) -> Option<ThreadGuard> {
        THREAD_COUNT.with(|count| count.set(count.get() + 1));
        // The count is written before the phase is read; the drainer's barrier is what would
        // make that order visible to it.
        compiler_fence(Ordering::SeqCst);
        // Relaxed: a flag check.
        if self.0.load(Ordering::Relaxed) != 0 {
            drop(ThreadGuard);
            return None;
        }
        Some(ThreadGuard)
    }
}

impl Admit for Shutdown {
    type Guard = InFlightGuard;

    #[inline]
    fn admit(&self) -> Option<InFlightGuard> {
        self.guard()
    }
}

/// Counts each request from `call` until its body ends ([`AtEnd`]) or is dropped ([`OnDrop`]).
#[derive(Clone)]
pub struct Counting<S, A, R: Release = AtEnd> {
    inner: S,
    admit: A,
    release: PhantomData<R>,
}

impl<S, A, R: Release> Counting<S, A, R> {
    /// Wraps `inner`, taking guards from `admit`.
    pub fn new(inner: S, admit: A) -> Self {
        Counting {
            inner,
            admit,
            release: PhantomData,
        }
    }
}

impl<S, B, A, R: Release> Service<Request<()>> for Counting<S, A, R>
where
    S: Service<Request<()>, Response = Response<B>>,
    A: Admit,
{
    type Response = Response<Carried<B, A::Guard, R>>;
    type Error = S::Error;
    type Future = CarryingFuture<S::Future, A::Guard, R>;

    #[inline]
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    #[inline]
    fn call(&mut self, request: Request<()>) -> Self::Future {
        let guard = self.admit.admit();
        CarryingFuture {
            future: self.inner.call(request),
            guard,
            release: PhantomData,
        }
    }
}

/// When a [`Carried`] body lets its guard go.
pub trait Release: Clone {
    /// `true`: as it yields its last frame; `false`: when it is dropped.
    const AT_END: bool;
}

/// Releases as the body yields its last frame, as this crate's layers do.
#[derive(Clone)]
pub struct AtEnd;

impl Release for AtEnd {
    const AT_END: bool = true;
}

/// Releases when the body is dropped, as tower-http's `InFlightRequests` does.
#[derive(Clone)]
pub struct OnDrop;

impl Release for OnDrop {
    const AT_END: bool = false;
}

// === the future and the body they share ===

pin_project! {
    /// Carries `guard` until the response exists.
    pub struct CarryingFuture<F, G, R: Release> {
        #[pin]
        future: F,
        guard: Option<G>,
        release: PhantomData<R>,
    }
}

pin_project! {
    /// Carries `guard` until the body's last frame ([`AtEnd`]) or until it is dropped ([`OnDrop`]).
    pub struct Carried<B, G, R: Release> {
        #[pin]
        inner: B,
        guard: Option<G>,
        release: PhantomData<R>,
    }
}

impl<F, B, E, G, R: Release> Future for CarryingFuture<F, G, R>
where
    F: Future<Output = Result<Response<B>, E>>,
{
    type Output = Result<Response<Carried<B, G, R>>, E>;

    #[inline]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let response = ready!(this.future.poll(cx))?;
        let guard = this.guard.take();
        Poll::Ready(Ok(response.map(|inner| Carried {
            inner,
            guard,
            release: PhantomData,
        })))
    }
}

impl<B: Body, G, R: Release> Body for Carried<B, G, R> {
    type Data = B::Data;
    type Error = B::Error;

    #[inline]
    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<B::Data>, B::Error>>> {
        let this = self.project();
        if !R::AT_END {
            return this.inner.poll_frame(cx);
        }
        let frame = ready!(this.inner.poll_frame(cx));
        if !matches!(frame, Some(Ok(_))) {
            // End of stream or an error: the request is over.
            *this.guard = None;
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }
}
