//! The executor of hyper's HTTP/2 stream tasks, which `serve` waits for before it returns.
//!
//! hyper runs each HTTP/2 stream on a task of its own, apart from its connection's: that task,
//! not the connection, owns the request's service future and response body, and so the
//! request's in-flight count. Closing a connection (at the drain deadline, or at its graceful
//! end) only wakes its streams' tasks, which drop what they hold when they next run. `serve`
//! waits for them, so that when it returns nothing it ran is still counted or still running.

use std::convert::Infallible;
use std::future::Future;

use tokio::sync::mpsc;

/// Spawns hyper's stream tasks on Tokio, each holding a sender of one channel; the channel's
/// receiver, [`Streams`], sees it close once the last of them has ended.
#[derive(Clone)]
pub(super) struct StreamExecutor {
    alive: mpsc::Sender<Infallible>,
}

/// The receiving side: resolves once every stream task has ended.
pub(super) struct Streams {
    ended: mpsc::Receiver<Infallible>,
}

/// An executor for hyper, and what waits for the tasks it spawns. The executor's clones (the
/// one given to hyper's builder, and every connection's) count as tasks too, until dropped.
pub(super) fn executor() -> (StreamExecutor, Streams) {
    // Nothing is ever sent: the channel is only there to close when the last sender drops.
    let (alive, ended) = mpsc::channel(1);
    (StreamExecutor { alive }, Streams { ended })
}

impl<F> hyper::rt::Executor<F> for StreamExecutor
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    fn execute(&self, future: F) {
        let alive = self.alive.clone();
        tokio::spawn(async move {
            future.await;
            drop(alive);
        });
    }
}

impl Streams {
    /// Resolves once every sender (every stream task, every executor clone) is gone.
    pub(super) async fn ended(mut self) {
        // `None` once every sender is dropped; nothing is ever sent.
        if let Some(never) = self.ended.recv().await {
            match never {}
        }
    }
}
