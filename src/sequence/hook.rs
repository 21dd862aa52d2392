//! Clean-up hooks: each runs on its own task, bounded by its own timeout.

use std::any::Any;
use std::fmt::Display;
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio::time::Instant;
use tracing::Instrument;

use super::report::{one_line, HookOutcome, HookReport};

type HookFuture = Pin<Box<dyn Future<Output = Result<(), String>> + Send>>;

/// One registered clean-up step.
pub(crate) struct Hook {
    pub(crate) name: String,
    pub(crate) timeout: Duration,
    start: Box<dyn FnOnce() -> HookFuture + Send>,
}

impl Hook {
    pub(crate) fn new<F, Fut, E>(name: String, timeout: Duration, hook: F) -> Self
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = Result<(), E>> + Send + 'static,
        E: Display + 'static,
    {
        Hook {
            name,
            timeout,
            start: Box::new(move || {
                // The alternate form: anyhow's and eyre's errors add their causes there
                // ("closing the pool: connection refused"); other errors read the same.
                Box::pin(async move { hook().await.map_err(|e| format!("{e:#}")) })
            }),
        }
    }

    /// Runs the hook to its end or its timeout, whichever is first.
    ///
    /// It runs on a task of its own: that is what catches a panic (the task's `JoinError`)
    /// without `catch_unwind` plumbing, and what lets a hung hook be aborted at its timeout.
    /// The hook closure itself is called on that task, so a panic there is caught too.
    pub(crate) async fn run(self) -> HookReport {
        let Hook {
            name,
            timeout,
            start,
        } = self;
        // Escaped like the table's rows: a name or message with a line break would split an
        // event in a plain-text log, and could forge a line that looks like one of ours.
        let logged = one_line(&name);
        tracing::info!(hook = %logged, timeout_ms = millis(timeout), "clean-up hook starting");
        let began = Instant::now();
        // Aborted when dropped: at the timeout, and with the sequence should it be dropped
        // while the hook runs. A plain `JoinHandle` would detach the task then, and a hung
        // hook would run on with nothing left to enforce its timeout.
        // A spawned task starts outside every span: without this, the hook's own log lines
        // would lose the span `run` is called in (a service, a pod) and not say which hook
        // wrote them.
        let span = tracing::info_span!("hook", hook = %logged);
        let mut task = AbortOnDrop(tokio::spawn(async move { start().await }.instrument(span)));
        let outcome = match tokio::time::timeout(timeout, &mut task.0).await {
            Ok(Ok(Ok(()))) => HookOutcome::Ok,
            Ok(Ok(Err(error))) => HookOutcome::Failed(error),
            Ok(Err(join)) if join.is_panic() => {
                HookOutcome::Panicked(panic_message(join.into_panic()))
            }
            Ok(Err(_cancelled)) => HookOutcome::Panicked("cancelled by the runtime".to_owned()),
            Err(_elapsed) => HookOutcome::TimedOut(timeout),
        };
        drop(task);
        let report = HookReport {
            name,
            outcome,
            elapsed: began.elapsed(),
        };
        if report.outcome.is_ok() {
            tracing::info!(hook = %logged, elapsed_ms = millis(report.elapsed), "clean-up hook done");
        } else {
            tracing::warn!(
                hook = %logged,
                elapsed_ms = millis(report.elapsed),
                outcome = %one_line(&report.outcome.to_string()),
                "clean-up hook did not succeed; the next ones still run"
            );
        }
        report
    }
}

/// A hook's task, aborted when this is dropped. tokio-util's `AbortOnDropHandle` does the
/// same, but only with its `rt` feature, which would add futures-util to the library's
/// dependencies for these few lines.
struct AbortOnDrop(JoinHandle<Result<(), String>>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        // No effect on a task that has ended.
        self.0.abort();
    }
}

/// The message a panic was raised with, for reports and logs.
pub(crate) fn panic_message(payload: Box<dyn Any + Send>) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|message| (*message).to_owned())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "panicked with a non-string payload".to_owned())
}

/// A duration in whole milliseconds, for log fields.
pub(crate) fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}
