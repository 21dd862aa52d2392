//! The sequence builder: durations, hooks, triggers, and the budget check.

use std::fmt::{self, Display};
use std::future::Future;
use std::time::Duration;

#[cfg(unix)]
use tokio::signal::unix::SignalKind;

use super::hook::Hook;
use super::plan::Plan;
use super::trigger::{SignalChoice, Triggers};
use super::{SequenceError, ShutdownSequence};
use crate::{Drain, Shutdown};

/// Builds a [`ShutdownSequence`]; from [`ShutdownSequence::builder`].
///
/// Defaults: 5 s lame duck, 20 s drain timeout, a 30 s budget (Kubernetes' default
/// `terminationGracePeriodSeconds`), no hooks, SIGTERM and SIGINT (Ctrl-C off Unix).
pub struct SequenceBuilder {
    plan: Plan,
    signals: SignalChoice,
    futures: Vec<std::pin::Pin<Box<dyn Future<Output = ()> + Send>>>,
}

impl SequenceBuilder {
    pub(crate) fn new(shutdown: Shutdown) -> Self {
        SequenceBuilder {
            plan: Plan {
                shutdown,
                lame_duck: Duration::from_secs(5),
                drain_timeout: Duration::from_secs(20),
                budget: Duration::from_secs(30),
                hooks: Vec::new(),
            },
            signals: SignalChoice::Default,
            futures: Vec::new(),
        }
    }

    /// How long readiness fails while requests are still served, so load balancers stop
    /// routing here before anything is refused. Make it at least the readiness probe's
    /// period × failure threshold. Zero skips the lame-duck phase.
    pub fn lame_duck(mut self, delay: Duration) -> Self {
        self.plan.lame_duck = delay;
        self
    }

    /// The longest wait for in-flight requests once admission closes; what is still running
    /// then is aborted. Zero means "do not wait" (see [`Shutdown::drain`]).
    pub fn drain_timeout(mut self, timeout: Duration) -> Self {
        self.plan.drain_timeout = timeout;
        self
    }

    /// The time the whole sequence must fit in, checked by [`build`](Self::build): the
    /// orchestrator's grace period (Kubernetes `terminationGracePeriodSeconds`, minus any
    /// `preStop` sleep), less a margin for the process to exit.
    pub fn budget(mut self, budget: Duration) -> Self {
        self.plan.budget = budget;
        self
    }

    /// Adds a clean-up hook, run after the drain in registration order, for at most
    /// `timeout`. A hook that fails, panics or times out is reported, and the next one runs.
    /// A failure is reported in the error's alternate form (`{:#}`), which for `anyhow` and
    /// `eyre` errors includes their causes.
    ///
    /// The closure is called once, on a task of its own (hence `Send + 'static`), inside a
    /// `hook` tracing span naming it, itself inside the span `run` is called in, so the
    /// hook's own log lines say where they come from. At its timeout the task is aborted,
    /// which stops it at its next `.await`, as it is when the sequence's `run` future is
    /// dropped while the hook runs. A hook that blocks its thread instead (a synchronous
    /// close, `std::thread::sleep`) cannot be stopped. On a current-thread runtime, or a
    /// multi-thread one with a single worker (Tokio's default on a machine or pod with one
    /// CPU), it also blocks the thread that drives the timers: its timeout cannot fire, and
    /// it holds the whole sequence up, to be reported by how it ended after all. On any
    /// runtime it holds up the runtime's shutdown. Run such clean-up in
    /// `tokio::task::spawn_blocking`, which the timeout then leaves behind, and end the
    /// process with `std::process::exit`.
    pub fn hook<F, Fut, E>(mut self, name: impl Into<String>, timeout: Duration, hook: F) -> Self
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = Result<(), E>> + Send + 'static,
        E: Display + 'static,
    {
        self.plan.hooks.push(Hook::new(name.into(), timeout, hook));
        self
    }

    /// Listens for exactly these signals instead of SIGTERM and SIGINT. A signal listed more
    /// than once is listened for once; an empty list listens for none, as
    /// [`no_signals`](Self::no_signals) does. Unix only.
    #[cfg(unix)]
    pub fn signals(mut self, signals: impl IntoIterator<Item = SignalKind>) -> Self {
        // One signal wakes every listener of its kind: a kind listed twice would count each
        // signal as two triggers, and the second forces the shutdown.
        let mut kinds: Vec<SignalKind> = Vec::new();
        for kind in signals {
            if !kinds.contains(&kind) {
                kinds.push(kind);
            }
        }
        self.signals = if kinds.is_empty() {
            SignalChoice::None
        } else {
            SignalChoice::These(kinds)
        };
        self
    }

    /// Listens for no OS signal: only futures ([`trigger_on`](Self::trigger_on)) and
    /// [`ShutdownTrigger`](super::ShutdownTrigger)s start the sequence.
    pub fn no_signals(mut self) -> Self {
        self.signals = SignalChoice::None;
        self
    }

    /// Also triggers when `future` completes (an admin endpoint, a parent process gone).
    /// It is polled inside [`ShutdownSequence::run`]; one that panics is logged and dropped,
    /// and triggers nothing.
    ///
    /// Completing after the first trigger forces the sequence, as any later trigger does. So
    /// a future must not end because of the shutdown itself: one that waits on a channel
    /// whose sender the router holds ends when the server returns during the drain, and
    /// forces it, unless it waits for a message and ignores the channel closing.
    pub fn trigger_on(mut self, future: impl Future<Output = ()> + Send + 'static) -> Self {
        self.futures.push(Box::pin(future));
        self
    }

    /// Checks the durations against each other and the budget, and installs the signal
    /// handlers (from here on, a listened-for signal no longer kills the process).
    ///
    /// # Errors
    ///
    /// * [`SequenceError::OverBudget`] when lame duck + drain timeout + hook timeouts exceed
    ///   the budget;
    /// * [`SequenceError::Zero`] for a zero budget or hook timeout;
    /// * [`SequenceError::TooLong`] for any duration over [`Drain::MAX_TIMEOUT`] (one day);
    /// * [`SequenceError::NoRuntime`] when signals are on and this runs outside a Tokio
    ///   runtime, [`SequenceError::Signal`] when a handler cannot be installed (tokio refuses
    ///   SIGKILL, SIGSTOP and the like). The build then leaves SIGTERM, SIGINT, SIGHUP,
    ///   SIGQUIT, SIGUSR1 and SIGUSR2 as they were: tokio never removes a handler, and those
    ///   are installed last.
    pub fn build(self) -> Result<ShutdownSequence, SequenceError> {
        let plan = self.plan;
        check_durations(&plan)?;
        let needed = plan.planned();
        if needed > plan.budget {
            return Err(SequenceError::OverBudget {
                lame_duck: plan.lame_duck,
                drain_timeout: plan.drain_timeout,
                hooks: plan
                    .hooks
                    .iter()
                    .map(|hook| (hook.name.clone(), hook.timeout))
                    .collect(),
                needed,
                budget: plan.budget,
            });
        }
        let (triggers, trigger) = Triggers::install(&self.signals, self.futures)?;
        Ok(ShutdownSequence {
            plan,
            triggers,
            trigger,
        })
    }
}

/// Checks each duration of `plan` on its own: nonzero where zero means nothing, and never
/// over [`Drain::MAX_TIMEOUT`], which also keeps their sum from overflowing.
fn check_durations(plan: &Plan) -> Result<(), SequenceError> {
    let bounded = |what: String, value: Duration, zero_ok: bool| {
        if value.is_zero() && !zero_ok {
            Err(SequenceError::Zero { what })
        } else if value > Drain::MAX_TIMEOUT {
            Err(SequenceError::TooLong {
                what,
                value,
                max: Drain::MAX_TIMEOUT,
            })
        } else {
            Ok(())
        }
    };
    bounded("the shutdown budget".into(), plan.budget, false)?;
    bounded("the lame-duck delay".into(), plan.lame_duck, true)?;
    bounded("the drain timeout".into(), plan.drain_timeout, true)?;
    for hook in &plan.hooks {
        bounded(
            format!("the timeout of hook `{}`", hook.name),
            hook.timeout,
            false,
        )?;
    }
    Ok(())
}

impl fmt::Debug for SequenceBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SequenceBuilder")
            .field("plan", &self.plan)
            .finish_non_exhaustive()
    }
}
