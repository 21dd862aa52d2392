//! What a shutdown sequence reports: time per phase, the drain, every hook.

use std::fmt;
use std::time::Duration;

use crate::report::DrainReport;

/// The full account of one [`ShutdownSequence`](super::ShutdownSequence) run, returned by
/// [`ShutdownSequence::run`](super::ShutdownSequence::run).
///
/// `Display` prints a short table; with the `serde` feature it serialises (durations as
/// milliseconds, fields ending in `_ms`).
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[non_exhaustive]
pub struct ShutdownReport {
    /// What started the sequence: a signal's name (`"SIGTERM"`, `"SIGINT"`, `"SIGHUP"`,
    /// `"SIGQUIT"`, `"SIGUSR1"`, `"SIGUSR2"`, `"signal"` for another one, `"Ctrl-C"` off
    /// Unix), `"manual trigger"` or `"trigger future"`.
    pub trigger: &'static str,
    /// What forced it, if a second trigger came while it ran (named as `trigger` is).
    pub forced_by: Option<&'static str>,
    /// Time spent in the lame-duck delay (shorter than configured if forced, or if
    /// admission closed first); zero when the phase was skipped, by a zero delay or by
    /// admission closed before the trigger, which `Display` then shows as skipped.
    #[cfg_attr(
        feature = "serde",
        serde(
            rename = "lame_duck_ms",
            serialize_with = "crate::serde_fields::millis"
        )
    )]
    pub lame_duck: Duration,
    /// Time the sequence spent in its drain step: from its `drain` call, which closes
    /// admission unless the application closed it earlier, to the drain's outcome.
    /// [`DrainReport::elapsed`] is counted from admission closing.
    #[cfg_attr(
        feature = "serde",
        serde(rename = "drain_ms", serialize_with = "crate::serde_fields::millis")
    )]
    pub draining: Duration,
    /// Time spent running the hooks, all together.
    #[cfg_attr(
        feature = "serde",
        serde(rename = "hooks_ms", serialize_with = "crate::serde_fields::millis")
    )]
    pub hooks_elapsed: Duration,
    /// From the trigger to the end of the last hook.
    #[cfg_attr(
        feature = "serde",
        serde(rename = "total_ms", serialize_with = "crate::serde_fields::millis")
    )]
    pub total: Duration,
    /// The drain's own report.
    pub drain: DrainReport,
    /// Each hook, in the order it ran (the order it was registered).
    pub hooks: Vec<HookReport>,
}

impl ShutdownReport {
    /// True when a second trigger forced the sequence.
    pub fn forced(&self) -> bool {
        self.forced_by.is_some()
    }

    /// True when the drain cut nothing short ([`DrainReport::is_drained`]: it ended
    /// `Drained`, and no long-lived response was cut at the long-lived deadline) and every
    /// hook succeeded.
    pub fn is_clean(&self) -> bool {
        self.drain.is_drained() && self.hooks.iter().all(|hook| hook.outcome.is_ok())
    }
}

/// One hook's result.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[non_exhaustive]
pub struct HookReport {
    /// The name it was registered under.
    pub name: String,
    /// How it ended.
    pub outcome: HookOutcome,
    /// How long it ran.
    #[cfg_attr(
        feature = "serde",
        serde(rename = "elapsed_ms", serialize_with = "crate::serde_fields::millis")
    )]
    pub elapsed: Duration,
}

/// How a hook ended.
///
/// With `serde`: `{"status": "ok"}`, `{"status": "failed", "detail": "<error>"}`,
/// `{"status": "timed_out", "timeout_ms": 3000.0}`,
/// `{"status": "panicked", "detail": "<message>"}`.
///
/// Non-exhaustive: a later version may tell more endings apart (a hook cancelled by its
/// runtime reads as [`Panicked`](HookOutcome::Panicked) today); [`is_ok`](HookOutcome::is_ok)
/// is the question most callers ask.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum HookOutcome {
    /// It returned `Ok(())`.
    Ok,
    /// It returned an error; its `Display` text in the alternate form (`{:#}`), which for
    /// `anyhow` and `eyre` errors includes their causes.
    Failed(String),
    /// It was still running at its timeout (given here), and was aborted.
    TimedOut(Duration),
    /// It panicked; the panic message.
    Panicked(String),
}

#[cfg(feature = "serde")]
impl serde::Serialize for HookOutcome {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut map = serializer.serialize_map(Some(match self {
            HookOutcome::Ok => 1,
            _ => 2,
        }))?;
        match self {
            HookOutcome::Ok => map.serialize_entry("status", "ok")?,
            HookOutcome::Failed(error) => {
                map.serialize_entry("status", "failed")?;
                map.serialize_entry("detail", error)?;
            }
            HookOutcome::TimedOut(timeout) => {
                map.serialize_entry("status", "timed_out")?;
                map.serialize_entry("timeout_ms", &(timeout.as_micros() as f64 / 1000.0))?;
            }
            HookOutcome::Panicked(message) => {
                map.serialize_entry("status", "panicked")?;
                map.serialize_entry("detail", message)?;
            }
        }
        map.end()
    }
}

impl HookOutcome {
    /// True for [`HookOutcome::Ok`].
    pub fn is_ok(&self) -> bool {
        matches!(self, HookOutcome::Ok)
    }
}

impl fmt::Display for HookOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HookOutcome::Ok => f.write_str("ok"),
            HookOutcome::Failed(error) => write!(f, "failed: {error}"),
            HookOutcome::TimedOut(timeout) => write!(f, "timed out after {timeout:?}"),
            HookOutcome::Panicked(message) => write!(f, "panicked: {message}"),
        }
    }
}

impl fmt::Display for ShutdownReport {
    /// A short table: one row per phase and per hook. Control characters in a hook's name or
    /// message (the line breaks of an `assert_eq!` panic, a terminal escape) are shown
    /// escaped (`\n`, `\u{1b}`), so each row stays one line; the report's values keep them.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "shutdown on {}", self.trigger)?;
        if let Some(by) = self.forced_by {
            write!(f, ", forced by {by}")?;
        }
        writeln!(f, ", {} in all", Short(self.total))?;
        let hooks: Vec<(String, String)> = self
            .hooks
            .iter()
            .map(|hook| {
                (
                    one_line(&format!("hook {}", hook.name)),
                    one_line(&hook.outcome.to_string()),
                )
            })
            .collect();
        // In characters, as the padding below counts them.
        let width = hooks
            .iter()
            .map(|(name, _)| name.chars().count())
            .chain([9])
            .max()
            .unwrap_or(9);
        let row = |f: &mut fmt::Formatter<'_>, name: &str, took: Duration, what: &str| {
            writeln!(
                f,
                "  {name:<width$}  {:>8}  {what}",
                Short(took).to_string()
            )
        };
        let lame_duck = if self.lame_duck.is_zero() {
            "skipped: readiness failed with the drain"
        } else {
            "readiness failed, requests admitted"
        };
        row(f, "lame duck", self.lame_duck, lame_duck)?;
        let mut drain = format!(
            "{}{}: ",
            self.drain.outcome,
            if self.drain.forced { " (forced)" } else { "" },
        );
        self.drain.write_counts(&mut drain)?;
        self.drain.write_long_lived(&mut drain)?;
        row(f, "drain", self.draining, &one_line(&drain))?;
        for (hook, (name, outcome)) in self.hooks.iter().zip(&hooks) {
            row(f, name, hook.elapsed, outcome)?;
        }
        Ok(())
    }
}

/// `text` with each control character escaped as Rust writes it (`\n`, `\r`, `\u{1b}`),
/// and every other character, non-ASCII ones included, as it is. For the table's rows, and
/// for log fields holding an application's text: a line-based log pipeline makes each line
/// an entry of its own.
pub(super) fn one_line(text: &str) -> String {
    let mut line = String::with_capacity(text.len());
    for c in text.chars() {
        if c.is_control() {
            line.extend(c.escape_default());
        } else {
            line.push(c);
        }
    }
    line
}

/// A duration rounded for people: `1.2s`, `15ms`, `0ms`.
struct Short(Duration);

impl fmt::Display for Short {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let millis = self.0.as_millis();
        if millis >= 1000 {
            write!(f, "{:.1}s", self.0.as_secs_f64())
        } else {
            write!(f, "{millis}ms")
        }
    }
}
