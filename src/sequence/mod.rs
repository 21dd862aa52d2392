//! The shutdown sequence: trigger → lame duck → drain → hooks → report.
//!
//! ```text
//!  signal ─▶ lame duck ──delay──▶ drain ──zero or timeout──▶ hooks, in order ──▶ ShutdownReport
//!            readiness 503        admission closed             each bounded
//!  second signal at any point: skip to aborting what is left; the hooks still run
//! ```
//!
//! The whole plan is checked against a budget when it is built, so a configuration that
//! cannot finish inside the orchestrator's grace period fails at start-up, not at the first
//! deploy.
//!
//! ```no_run
//! use std::time::Duration;
//! use tower_drain::{Shutdown, ShutdownSequence};
//!
//! # #[tokio::main]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let shutdown = Shutdown::new();
//! let sequence = ShutdownSequence::builder(shutdown)
//!     .lame_duck(Duration::from_secs(5))
//!     .drain_timeout(Duration::from_secs(15))
//!     .hook("database pool", Duration::from_secs(3), || async {
//!         // close the pool here
//!         Ok::<(), std::io::Error>(())
//!     })
//!     .budget(Duration::from_secs(30))
//!     .build()?; // signal handlers are installed here
//!
//! // ... start the server with `shutdown.layer()` and `shutdown.closing()` ...
//!
//! let report = sequence.run().await; // waits for SIGTERM or SIGINT, then runs it all
//! eprintln!("{report}");
//! std::process::exit(if report.is_clean() { 0 } else { 1 });
//! # }
//! ```

mod builder;
mod error;
mod hook;
pub(crate) use hook::panic_message;
mod plan;
mod report;
mod trigger;

use std::fmt;
use std::future::Future;
use std::time::Duration;

use tokio::time::Instant;

pub use builder::SequenceBuilder;
pub use error::SequenceError;
use hook::millis;
use plan::Plan;
pub use report::{HookOutcome, HookReport, ShutdownReport};
pub use trigger::ShutdownTrigger;
use trigger::Triggers;

use crate::{Drain, DrainOutcome, DrainReport, Phase, Shutdown};

/// A checked shutdown plan, ready to run once: built by [`ShutdownSequence::builder`].
///
/// [`run`](ShutdownSequence::run) waits for the first trigger, then:
///
/// 1. **lame duck**: readiness fails, requests are still served, for the lame-duck delay,
///    counted from the trigger even if the application called [`Shutdown::begin_lame_duck`]
///    before it (or until admission closes, should the application call [`Shutdown::drain`]
///    or [`Shutdown::force`] itself meanwhile; skipped if it did before the trigger);
/// 2. **drain**: admission closes and in-flight requests are awaited up to the drain timeout,
///    then what is left is aborted (a drain the application began itself is joined, and cut
///    at this timeout if its own deadline is later);
/// 3. **hooks**: each clean-up hook runs in registration order, bounded by its own timeout;
///    one that fails, panics or hangs is reported and the rest still run;
///
/// and returns a [`ShutdownReport`]. A second trigger while it runs forces it: the rest of
/// the lame-duck delay and the drain are skipped (what is running is aborted, as at a
/// timeout), and the hooks still run. Later triggers change nothing; the sequence never runs
/// twice, since `run` consumes it. Signals of one kind that arrive before the sequence has
/// taken the first (`run` not yet polled, or its thread held) count as one: Tokio merges
/// them.
pub struct ShutdownSequence {
    plan: Plan,
    triggers: Triggers,
    trigger: ShutdownTrigger,
}

impl ShutdownSequence {
    /// A builder for `shutdown`'s sequence.
    pub fn builder(shutdown: Shutdown) -> SequenceBuilder {
        SequenceBuilder::new(shutdown)
    }

    /// A handle that starts the sequence by hand (and forces it, if already running).
    pub fn trigger(&self) -> ShutdownTrigger {
        self.trigger.clone()
    }

    /// The lame-duck delay, drain timeout and hook timeouts added up: the longest the
    /// sequence can take once triggered (within scheduling noise). Never over the budget.
    pub fn planned(&self) -> Duration {
        self.plan.planned()
    }

    /// The budget the plan was checked against.
    pub fn budget(&self) -> Duration {
        self.plan.budget
    }

    /// Waits for the first trigger, runs the sequence and returns its report.
    ///
    /// Needs a Tokio runtime with the time driver; hooks run on spawned tasks. The signal
    /// handlers were installed by [`SequenceBuilder::build`], so a signal that arrived before
    /// this is awaited starts the sequence at once.
    ///
    /// Once it has returned, those signals no longer end the process: their handlers stay
    /// installed (Tokio never removes one) and nothing listens any more. Bound any wait that
    /// follows (for the server's last connections), or listen for the next signal yourself
    /// and exit on it, as `examples/demo.rs` does.
    ///
    /// # Panics
    ///
    /// At its first poll, before anything changes: outside a Tokio runtime or inside one
    /// without the time driver (tokio's message asks for `enable_time`), and when nothing
    /// could ever trigger it (no signals, no trigger future or only ones that panicked at
    /// their first poll, and no [`ShutdownTrigger`] kept from [`trigger`](Self::trigger)),
    /// which would otherwise wait for ever. Later, when a tracing subscriber or a metrics
    /// recorder panics on one of the sequence's events or figures: the panic ends `run`
    /// there, with any phase change it was making complete (see [`Shutdown::drain`]).
    pub async fn run(self) -> ShutdownReport {
        let ShutdownSequence {
            plan:
                Plan {
                    shutdown,
                    lame_duck,
                    drain_timeout,
                    budget: _,
                    hooks,
                },
            mut triggers,
            trigger,
        } = self;
        // The sequence's own handle would keep the manual channel open for ever.
        drop(trigger);
        // Every step waits on a timer. Without a time driver (or outside a runtime) tokio
        // panics as it makes one: better here, as the server starts, than at the first signal
        // with readiness already failed and the drain and hooks never run.
        drop(tokio::time::sleep(Duration::ZERO));
        let mut run = Run {
            shutdown,
            triggers: &mut triggers,
            forced_by: None,
        };

        let cause = run.triggers.first().await;
        let began = Instant::now();
        tracing::info!(
            trigger = cause,
            lame_duck_ms = millis(lame_duck),
            drain_timeout_ms = millis(drain_timeout),
            hooks = hooks.len(),
            in_flight = shutdown.in_flight(),
            "shutdown triggered"
        );

        // Lame duck: readiness fails, requests still admitted. A zero delay skips the phase
        // (the drain then flips readiness): entering it would log a lame duck that never was
        // and wait a timer tick for a zero sleep. So does admission closed before the
        // trigger (the application drained or forced by itself): requests are refused
        // already, and the report would tell of a lame duck of a few microseconds.
        let skip_lame_duck = lame_duck.is_zero() || shutdown.phase().admission_closed();
        if !skip_lame_duck {
            if shutdown.begin_lame_duck() {
                crate::metrics::record(&shutdown);
            }
            // Waited out even when the application began the lame duck itself: how long
            // readiness has failed since is unknown, and the delay is what keeps load
            // balancers away before anything is refused. Over at once if admission is closed.
            run.lame_duck(lame_duck).await;
        }
        // Zero when skipped: the report then says so, rather than a lame duck of a microsecond.
        let lame_duck_elapsed = if skip_lame_duck {
            Duration::ZERO
        } else {
            began.elapsed()
        };

        // Drain. The timeout was bounded at build time, so this cannot fail.
        let drain_began = Instant::now();
        let drain = shutdown
            .drain(drain_timeout)
            .expect("drain timeout checked against Drain::MAX_TIMEOUT when built");
        crate::metrics::record(&shutdown);
        let cut_at = Instant::now() + drain_timeout;
        let drain = run.finish(within(drain, cut_at, shutdown)).await;
        let draining = drain_began.elapsed();
        crate::metrics::record(&shutdown);
        tracing::info!(
            outcome = %drain.outcome,
            forced = drain.forced,
            elapsed_ms = millis(drain.elapsed),
            in_flight_at_start = drain.in_flight_at_start,
            completed = drain.completed,
            still_running = drain.still_running,
            rejected = drain.rejected,
            "drain over; running clean-up hooks"
        );

        // Hooks, in order, each bounded.
        let hooks_began = Instant::now();
        let mut reports = Vec::with_capacity(hooks.len());
        for hook in hooks {
            reports.push(run.finish(hook.run()).await);
        }

        crate::metrics::record(&shutdown);
        let report = ShutdownReport {
            trigger: cause,
            forced_by: run.forced_by,
            lame_duck: lame_duck_elapsed,
            draining,
            hooks_elapsed: hooks_began.elapsed(),
            total: began.elapsed(),
            drain,
            hooks: reports,
        };
        let failed_hooks = report
            .hooks
            .iter()
            .filter(|hook| !hook.outcome.is_ok())
            .count();
        if report.is_clean() {
            tracing::info!(
                trigger = report.trigger,
                outcome = %report.drain.outcome,
                total_ms = millis(report.total),
                hooks = report.hooks.len(),
                "shutdown sequence complete"
            );
        } else {
            tracing::warn!(
                trigger = report.trigger,
                forced_by = report.forced_by,
                outcome = %report.drain.outcome,
                still_running = report.drain.still_running,
                long_lived_cut = report.drain.long_lived.len(),
                total_ms = millis(report.total),
                failed_hooks,
                "shutdown sequence complete, not cleanly"
            );
        }
        report
    }
}

impl fmt::Debug for ShutdownSequence {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ShutdownSequence")
            .field("plan", &self.plan)
            .finish_non_exhaustive()
    }
}

/// `drain`'s report, deciding it timed out at `cut_at` if it is still running then. The
/// sequence's own `drain` call fixes that same deadline, unless the application began the
/// drain itself with a later one, which the call joins: the sequence still keeps to its
/// drain timeout, which its budget was checked with.
async fn within(drain: Drain, cut_at: Instant, shutdown: Shutdown) -> DrainReport {
    tokio::pin!(drain);
    tokio::select! {
        biased;
        report = &mut drain => report,
        () = tokio::time::sleep_until(cut_at) => {
            // As the drain's own deadline decides it; no effect if decided meanwhile.
            shutdown.core.decide(DrainOutcome::TimedOut, false);
            drain.await
        }
    }
}

/// A running sequence: listens for further triggers while each step runs.
struct Run<'a> {
    shutdown: Shutdown,
    triggers: &'a mut Triggers,
    forced_by: Option<&'static str>,
}

impl Run<'_> {
    /// Sleeps for the lame-duck delay, or until a second trigger forces the shutdown, or
    /// until admission closes by another hand (`drain` or `force` called directly): requests
    /// are refused from then on, so the lame duck is over.
    async fn lame_duck(&mut self, delay: Duration) {
        let sleep = tokio::time::sleep(delay);
        let closing = self.shutdown.closing();
        tokio::pin!(sleep, closing);
        loop {
            tokio::select! {
                () = &mut sleep => return,
                () = &mut closing => return,
                cause = self.triggers.next() => if self.force(cause) { return },
            }
        }
    }

    /// Runs `step` to its end while listening for triggers. Forcing hastens the drain (it is
    /// decided at once) and leaves hooks running within their own timeouts.
    async fn finish<F: Future>(&mut self, step: F) -> F::Output {
        tokio::pin!(step);
        loop {
            tokio::select! {
                output = &mut step => return output,
                cause = self.triggers.next() => { self.force(cause); }
            }
        }
    }

    /// Handles a trigger after the first. Returns `true` the first time (it forces).
    fn force(&mut self, cause: &'static str) -> bool {
        if let Some(by) = self.forced_by {
            tracing::info!(
                trigger = cause,
                forced_by = by,
                "shutdown already forced; ignored"
            );
            return false;
        }
        self.forced_by = Some(cause);
        let (phase, in_flight) = (self.shutdown.phase(), self.shutdown.in_flight());
        // Closes admission if the drain has not begun, and decides it as timed out; no
        // effect once it is decided. The `drain` call that follows then joins that outcome.
        // `force` counts `tower_drain_forced_total` when it cuts the drain short.
        // Said apart when nothing was cut: an operator reading "aborting" would look for
        // work that was lost. And apart again when the drain had been cut short before this
        // trigger (read after the call, which may have lost a race with the deadline): what
        // it cut may still be counted (`in_flight`), and "nothing left running" beside it
        // would read as a contradiction.
        let what = if self.shutdown.force() {
            "aborting what is still running"
        } else if self.shutdown.phase() == Phase::TimedOut {
            "the drain was already cut short, nothing more to abort"
        } else {
            "nothing left running to abort"
        };
        tracing::warn!(
            trigger = cause,
            %phase,
            in_flight,
            "second trigger: forcing shutdown, {what}; hooks still run"
        );
        true
    }
}
