//! What starts the sequence, and what forces it: OS signals, futures, manual calls.

use std::fmt;
use std::future::{poll_fn, Future};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::sync::mpsc;

#[cfg(unix)]
use tokio::signal::unix::{signal, Signal, SignalKind};
#[cfg(windows)]
use tokio::signal::windows::CtrlC;

use super::panic_message;
use super::SequenceError;

/// A handle that triggers a [`ShutdownSequence`](super::ShutdownSequence) by hand, from
/// [`ShutdownSequence::trigger`](super::ShutdownSequence::trigger). Cheap to clone.
///
/// Every trigger counts the same, whatever its source: the first one (signal, future or
/// [`fire`](ShutdownTrigger::fire)) starts the sequence, any later one forces it.
#[derive(Clone)]
pub struct ShutdownTrigger {
    sender: mpsc::UnboundedSender<()>,
}

impl ShutdownTrigger {
    /// Starts the sequence, or forces it if it is already running. Does nothing once the
    /// sequence has finished or been dropped.
    pub fn fire(&self) {
        // An error only means the sequence is gone, and then there is nothing to trigger.
        let _ = self.sender.send(());
    }
}

impl fmt::Debug for ShutdownTrigger {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ShutdownTrigger").finish_non_exhaustive()
    }
}

/// Which OS signals to listen for.
#[derive(Debug, Clone)]
pub(crate) enum SignalChoice {
    /// SIGTERM and SIGINT (Ctrl-C on other platforms).
    Default,
    /// Exactly these.
    #[cfg(unix)]
    These(Vec<SignalKind>),
    /// None: the sequence is triggered by futures and manual calls only.
    None,
}

type TriggerFuture = Pin<Box<dyn Future<Output = ()> + Send>>;

/// Every source of triggers, polled together; yields the name of each trigger's cause.
pub(crate) struct Triggers {
    #[cfg(unix)]
    signals: Vec<(&'static str, Signal)>,
    #[cfg(windows)]
    ctrl_c: Option<CtrlC>,
    futures: Vec<TriggerFuture>,
    manual: mpsc::UnboundedReceiver<()>,
    /// False once every [`ShutdownTrigger`] is gone (the receiver then yields `None` forever).
    manual_open: bool,
    /// A trigger future panicked and was dropped: named when nothing is left to trigger.
    lost_future: bool,
}

impl Triggers {
    /// Installs the signal handlers now, so a signal that arrives before the sequence runs is
    /// kept (and no longer kills the process) rather than lost.
    pub(crate) fn install(
        choice: &SignalChoice,
        futures: Vec<TriggerFuture>,
    ) -> Result<(Triggers, ShutdownTrigger), SequenceError> {
        let (sender, manual) = mpsc::unbounded_channel();
        let wants_signals = !matches!(choice, SignalChoice::None);
        if wants_signals && tokio::runtime::Handle::try_current().is_err() {
            return Err(SequenceError::NoRuntime);
        }
        let triggers = Triggers {
            #[cfg(unix)]
            signals: install_signals(choice)?,
            #[cfg(windows)]
            ctrl_c: wants_signals.then(install_ctrl_c).transpose()?,
            futures,
            manual,
            manual_open: true,
            lost_future: false,
        };
        Ok((triggers, ShutdownTrigger { sender }))
    }

    /// The first trigger's cause.
    ///
    /// Panics at the first poll if nothing could ever trigger: a sequence that would wait for
    /// ever, and a process that would never shut down gracefully, is a mistake to report as
    /// the server starts. Sources lost later (the last trigger dropped, a trigger future that
    /// panicked) are logged instead: the server is serving then, and a panic would end it.
    pub(crate) async fn first(&mut self) -> &'static str {
        let mut first_poll = true;
        let mut reported = false;
        poll_fn(|cx| {
            let polled = self.poll_next(cx);
            if polled.is_pending() && self.exhausted() {
                if first_poll {
                    let futures = if self.lost_future {
                        "its trigger futures panicked (logged above)"
                    } else {
                        "has no trigger future"
                    };
                    panic!(
                        "nothing can trigger this shutdown sequence: it listens for no signal, \
                         {futures}, and no `ShutdownTrigger` is left; keep one from \
                         `sequence.trigger()` before calling `run`, or listen for signals"
                    );
                }
                if !reported {
                    reported = true;
                    tracing::error!(
                        "nothing can trigger the shutdown sequence any more: no signal, no \
                         trigger future and no `ShutdownTrigger` left"
                    );
                }
            }
            first_poll = false;
            polled
        })
        .await
    }

    /// The next trigger's cause. Pending for ever once every source is exhausted.
    pub(crate) async fn next(&mut self) -> &'static str {
        poll_fn(|cx| self.poll_next(cx)).await
    }

    /// True when no source is left that could ever yield a trigger.
    fn exhausted(&self) -> bool {
        #[cfg(unix)]
        let no_signals = self.signals.is_empty();
        #[cfg(windows)]
        let no_signals = self.ctrl_c.is_none();
        // Asked of the channel too: its `poll_recv` may have answered `Pending` without
        // looking, when the task had used up its cooperative budget.
        let manual_gone = !self.manual_open || (self.manual.is_closed() && self.manual.is_empty());
        no_signals && self.futures.is_empty() && manual_gone
    }

    fn poll_next(&mut self, cx: &mut Context<'_>) -> Poll<&'static str> {
        if self.manual_open {
            match self.manual.poll_recv(cx) {
                Poll::Ready(Some(())) => return Poll::Ready("manual trigger"),
                Poll::Ready(None) => self.manual_open = false,
                Poll::Pending => {}
            }
        }
        #[cfg(unix)]
        for (name, signal) in &mut self.signals {
            // `None` means the runtime's signal driver is gone: no more signals will come.
            if let Poll::Ready(Some(())) = signal.poll_recv(cx) {
                return Poll::Ready(name);
            }
        }
        #[cfg(windows)]
        if let Some(ctrl_c) = &mut self.ctrl_c {
            // `None` means the runtime's signal driver is gone, as on Unix.
            if let Poll::Ready(Some(())) = ctrl_c.poll_recv(cx) {
                return Poll::Ready("Ctrl-C");
            }
        }
        let mut index = 0;
        while index < self.futures.len() {
            // A trigger future is the application's code. One that panics (an `expect` on a
            // channel whose sender went away) must not take the sequence down with it, which
            // would skip the drain and every hook: it is dropped, and triggers nothing.
            let future = &mut self.futures[index];
            match catch_unwind(AssertUnwindSafe(|| future.as_mut().poll(cx))) {
                Ok(Poll::Pending) => index += 1,
                Ok(Poll::Ready(())) => {
                    // Completed futures must not be polled again.
                    drop(self.futures.swap_remove(index));
                    return Poll::Ready("trigger future");
                }
                Err(payload) => {
                    tracing::error!(
                        // One line, as the hooks' messages are logged.
                        panic = %super::report::one_line(&panic_message(payload)),
                        "a trigger future panicked: dropped, it triggers nothing"
                    );
                    drop(self.futures.swap_remove(index));
                    self.lost_future = true;
                }
            }
        }
        Poll::Pending
    }
}

/// Installs the Ctrl-C handler now, as `build` promises: `tokio::signal::ctrl_c()` is an
/// `async fn` that installs it only when first polled, which would leave a Ctrl-C before
/// `run` to kill the process and an installation failure unreported.
#[cfg(windows)]
fn install_ctrl_c() -> Result<CtrlC, SequenceError> {
    tokio::signal::windows::ctrl_c().map_err(|source| SequenceError::Signal {
        signal: "Ctrl-C",
        source,
    })
}

#[cfg(unix)]
fn install_signals(choice: &SignalChoice) -> Result<Vec<(&'static str, Signal)>, SequenceError> {
    let mut kinds = match choice {
        SignalChoice::Default => vec![SignalKind::terminate(), SignalKind::interrupt()],
        SignalChoice::These(kinds) => kinds.clone(),
        SignalChoice::None => Vec::new(),
    };
    // Tokio refuses some signals (SIGKILL, SIGSTOP, a number out of range), but never takes
    // back a handler it installed, and an installed handler keeps its signal from killing
    // the process. So the signals it may refuse (any but the well-known ones) go first: a
    // refusal then leaves SIGTERM and the like as they were, for an application that goes
    // on after the error. The order of the rest is kept.
    kinds.sort_by_key(|&kind| well_known(kind).is_some());
    kinds
        .into_iter()
        .map(|kind| {
            let name = signal_name(kind);
            // Tokio panics, rather than erring, in a runtime built without `enable_io` (its
            // signal driver lives in the I/O driver), and offers no way to ask first.
            let installed = std::panic::catch_unwind(|| signal(kind)).unwrap_or_else(|_| {
                Err(std::io::Error::other(
                    "the Tokio runtime has I/O disabled (`enable_io`), which signals need",
                ))
            });
            installed
                .map(|signal| (name, signal))
                .map_err(|source| SequenceError::Signal {
                    signal: name,
                    source,
                })
        })
        .collect()
}

#[cfg(unix)]
fn signal_name(kind: SignalKind) -> &'static str {
    well_known(kind).unwrap_or("signal")
}

/// The name of a signal that tokio always accepts; `None` for any other.
#[cfg(unix)]
fn well_known(kind: SignalKind) -> Option<&'static str> {
    let known = [
        (SignalKind::terminate(), "SIGTERM"),
        (SignalKind::interrupt(), "SIGINT"),
        (SignalKind::hangup(), "SIGHUP"),
        (SignalKind::quit(), "SIGQUIT"),
        (SignalKind::user_defined1(), "SIGUSR1"),
        (SignalKind::user_defined2(), "SIGUSR2"),
    ];
    known
        .into_iter()
        .find(|(known, _)| *known == kind)
        .map(|(_, name)| name)
}
