//! A gate that holds handlers in flight until the test lets them go.

use std::sync::Arc;

use tokio::sync::{mpsc, Mutex, Semaphore};

use super::bounded;

/// Holds handlers in flight until the test lets them go, and tells the test when each one
/// has started.
#[derive(Clone)]
pub struct Gate {
    inner: Arc<GateInner>,
}

struct GateInner {
    entered_tx: mpsc::UnboundedSender<()>,
    entered_rx: Mutex<mpsc::UnboundedReceiver<()>>,
    release: Semaphore,
}

impl Gate {
    pub fn new() -> Self {
        let (entered_tx, entered_rx) = mpsc::unbounded_channel();
        Gate {
            inner: Arc::new(GateInner {
                entered_tx,
                entered_rx: Mutex::new(entered_rx),
                release: Semaphore::new(0),
            }),
        }
    }

    /// Called by a handler: reports that it started.
    pub fn enter(&self) {
        let _ = self.inner.entered_tx.send(());
    }

    /// Called by a handler: reports that it started, then waits to be released.
    pub async fn pass(&self) {
        self.enter();
        self.inner
            .release
            .acquire()
            .await
            .expect("the gate is never closed")
            .forget();
    }

    /// Waits until `count` more handlers have started.
    pub async fn entered(&self, count: usize) {
        let mut entered = self.inner.entered_rx.lock().await;
        for _ in 0..count {
            bounded("a handler to start", entered.recv())
                .await
                .expect("the gate keeps a sender");
        }
    }

    /// Lets `count` held handlers finish.
    pub fn release(&self, count: usize) {
        self.inner.release.add_permits(count);
    }
}
