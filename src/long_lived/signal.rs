//! `DrainSignal`: tells a long-poll handler or an upgraded connection's task to finish.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use super::Wait;
use crate::core::Core;
use crate::Shutdown;

/// Resolves when the drain begins (admission closes): a long-poll should answer now, an
/// upgraded connection should say goodbye.
///
/// Get one from [`Shutdown::signal`], from a [`LongLivedGuard`](super::LongLivedGuard), or
/// from the request extensions of a route marked with
/// [`LongLivedLayer::route`](super::LongLivedLayer::route). Ordinary requests never get one:
/// inserting an extension allocates, and the short path allocates nothing.
///
/// Cheap to clone; each clone waits on its own. Awaiting it allocates once, the first time it
/// has to wait.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// use std::time::Duration;
/// use tower_drain::Shutdown;
///
/// let shutdown = Shutdown::new();
/// let signal = shutdown.signal();
/// assert!(!signal.is_draining());
/// let _drain = shutdown.drain(Duration::from_secs(5)).unwrap();
/// signal.clone().await; // ready: the drain has begun
/// assert!(signal.is_draining());
/// # }
/// ```
pub struct DrainSignal {
    shutdown: Shutdown,
    wait: Option<Wait>,
}

impl DrainSignal {
    pub(crate) fn new(shutdown: Shutdown) -> Self {
        DrainSignal {
            shutdown,
            wait: None,
        }
    }

    /// True once the drain has begun.
    pub fn is_draining(&self) -> bool {
        self.shutdown.phase().admission_closed()
    }

    /// Waits for the drain to begin, without consuming the signal.
    pub async fn recv(&self) {
        self.shutdown.closing().await;
    }

    /// Whether this signal is `core`'s: a marked route's mark is its own only beside its own
    /// signal.
    pub(crate) fn is_of(&self, core: &'static Core) -> bool {
        std::ptr::eq(self.shutdown.core, core)
    }
}

impl Future for DrainSignal {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.is_draining() {
            return Poll::Ready(());
        }
        let shutdown = self.shutdown;
        self.wait
            .get_or_insert_with(|| Box::pin(shutdown.closing()))
            .as_mut()
            .poll(cx)
    }
}

impl Clone for DrainSignal {
    fn clone(&self) -> Self {
        DrainSignal::new(self.shutdown)
    }
}

impl fmt::Debug for DrainSignal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DrainSignal")
            .field("draining", &self.is_draining())
            .finish_non_exhaustive()
    }
}
