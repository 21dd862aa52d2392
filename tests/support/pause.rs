//! A waker that stops the thread that wakes it: a way to hold one thread at a chosen point
//! inside the crate (the moment it fires one of its own signals) while another thread acts.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::task::{Context, Wake, Waker};

use super::BOUND;

/// The first wake hands control to the other thread and blocks the waking thread until that
/// thread says it is done.
pub struct Pause {
    fired: AtomicBool,
    go: mpsc::SyncSender<()>,
    done: Mutex<mpsc::Receiver<()>>,
}

impl Pause {
    /// True once the signal fired (and so the pause happened).
    pub fn fired(&self) -> bool {
        self.fired.load(Ordering::SeqCst)
    }
}

impl Wake for Pause {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        if !self.fired.swap(true, Ordering::SeqCst) {
            self.go.send(()).unwrap();
            self.done
                .lock()
                .unwrap()
                .recv_timeout(BOUND)
                .expect("the other thread never said it was done");
        }
    }
}

/// A pause armed on `signal`, which must still be pending.
pub struct Armed<F> {
    /// Keep it alive until the pause has happened: dropping it disarms the pause.
    pub signal: Pin<Box<F>>,
    pub pause: Arc<Pause>,
    /// The other thread waits on this for its turn, with [`wait_turn`].
    pub go: mpsc::Receiver<()>,
    /// The other thread sends on this when it is done, releasing the paused thread.
    pub done: mpsc::SyncSender<()>,
}

/// Called by the other thread: waits for its turn, the moment the signal fired.
pub fn wait_turn(go: &mpsc::Receiver<()>) {
    go.recv_timeout(BOUND)
        .expect("the signal never fired, so the pause never came");
}

/// Arms a pause on `signal`: whichever thread fires it stops there until `done` is sent.
pub fn pause_on<F: Future<Output = ()>>(signal: F) -> Armed<F> {
    let (go_tx, go) = mpsc::sync_channel(1);
    let (done, done_rx) = mpsc::sync_channel(1);
    let pause = Arc::new(Pause {
        fired: AtomicBool::new(false),
        go: go_tx,
        done: Mutex::new(done_rx),
    });
    let waker = Waker::from(Arc::clone(&pause));
    let mut signal = Box::pin(signal);
    assert!(
        signal
            .as_mut()
            .poll(&mut Context::from_waker(&waker))
            .is_pending(),
        "the signal must not have fired yet"
    );
    Armed {
        signal,
        pause,
        go,
        done,
    }
}
