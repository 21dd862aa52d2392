//! The executor of hyper's HTTP/2 stream tasks, which `serve` polls once more at the drain
//! deadline and waits for before it closes connections and before it returns.
//!
//! hyper runs each HTTP/2 stream on a task of its own, apart from its connection's: that task,
//! not the connection, owns the request's service future and response body, and so the
//! request's in-flight count. At the deadline each stream task gets one last poll, in which a
//! counted request whose handler is stalled answers its 503, before `serve` gives the
//! connections theirs (which sends what the streams queued) and closes them. Closing a
//! connection only wakes its streams' tasks; `serve` waits for them, so that when it returns
//! nothing it ran is still counted or still running.

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// Spawns hyper's stream tasks on Tokio, each holding a sender of one channel, whose receiver
/// ([`Streams`]) sees it close once the last of them has ended.
#[derive(Clone)]
pub(super) struct StreamExecutor {
    /// Weak: the executor's own clones (one in every connection) are not stream tasks.
    tasks: mpsc::WeakSender<Infallible>,
    /// Fired at the drain deadline: every stream task is polled once more, then ends. Shared
    /// behind an `Arc`: the executor is cloned for every stream (hyper's stream future holds
    /// one), and cloning or dropping a `CancellationToken` locks a mutex that every stream of
    /// every connection would share (about 50 ns a stream alone, 150 ns on two busy threads,
    /// against 8 and 20 for the `Arc`).
    last_poll: Arc<CancellationToken>,
}

/// What waits for the stream tasks.
pub(super) struct Streams {
    /// `serve`'s own sender, which keeps the channel open for the tasks to join (a weak
    /// sender upgrades only while a strong one lives) until `serve` waits for them.
    hold: Option<mpsc::Sender<Infallible>>,
    ended: mpsc::Receiver<Infallible>,
}

/// An executor for hyper, whose stream tasks end after one last poll once `last_poll` fires,
/// and what waits for them.
pub(super) fn executor(last_poll: CancellationToken) -> (StreamExecutor, Streams) {
    // Nothing is ever sent: the channel is only there to close when the last sender drops.
    let (hold, ended) = mpsc::channel(1);
    let tasks = hold.downgrade();
    let streams = Streams {
        hold: Some(hold),
        ended,
    };
    let last_poll = Arc::new(last_poll);
    (StreamExecutor { tasks, last_poll }, streams)
}

impl<F> hyper::rt::Executor<F> for StreamExecutor
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    fn execute(&self, future: F) {
        // `None` once `serve` has stopped waiting for streams: a stream opened after that
        // (its connection not yet closed) runs untracked, as every stream did before.
        let alive = self.tasks.upgrade();
        let last_poll = Arc::clone(&self.last_poll);
        tokio::spawn(async move {
            tokio::select! {
                // The stream first: woken by the deadline, it is polled once more, and a
                // request whose handler is stalled answers then (the deadline has been
                // decided), queueing its 503 for the connection's own last poll to send.
                biased;
                _ = future => {}
                // Registers a waker only if polled: a stream ready at its first poll never is.
                () = last_poll.cancelled() => {}
            }
            drop(alive);
        });
    }
}

impl Streams {
    /// Resolves once every stream task spawned so far has ended. Streams spawned after the
    /// first call are not waited for.
    pub(super) async fn ended(&mut self) {
        self.hold = None;
        // `None` once every sender is dropped; nothing is ever sent.
        if let Some(never) = self.ended.recv().await {
            match never {}
        }
    }
}
