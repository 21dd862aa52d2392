//! A service wrapper that tells the test each time the service it wraps is not ready: the
//! signal that a request is waiting for room, without a sleep.

use std::task::{Context, Poll};

use tokio::sync::mpsc;

/// Sends on `pending` each time `inner` answers `poll_ready` with `Pending`.
#[derive(Clone)]
pub struct ReportsPending<S> {
    pub inner: S,
    pub pending: mpsc::UnboundedSender<()>,
}

impl<S: tower::Service<R>, R> tower::Service<R> for ReportsPending<S> {
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        let ready = self.inner.poll_ready(cx);
        if ready.is_pending() {
            // The test may have stopped listening; the service works on regardless.
            let _ = self.pending.send(());
        }
        ready
    }

    fn call(&mut self, request: R) -> S::Future {
        self.inner.call(request)
    }
}
