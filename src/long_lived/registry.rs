//! The registry of long-lived responses: who they are, since when, and which were cut.
//!
//! Only long-lived responses ever touch it, so a plain `Mutex` around a slab is enough: the
//! short-request path never sees this file.

use std::fmt;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use http::Method;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::{LongLivedEntry, LongLivedKind};

/// Every long-lived response in progress, plus the long-lived deadline's state.
pub(crate) struct Registry {
    slab: Mutex<Slab>,
    /// Mirrors the slab's occupancy so `Shutdown::long_lived` needs no lock.
    count: AtomicUsize,
    /// Cancelled at the long-lived deadline (or when the drain is cut short): long-lived
    /// bodies still running abort.
    expired: CancellationToken,
    /// The configured grace in nanoseconds, or `u64::MAX` for the default.
    grace_nanos: AtomicU64,
}

#[derive(Default)]
struct Slab {
    records: Vec<Option<Record>>,
    free: Vec<usize>,
    /// Set when `expired` fires: what was registered then, for the report. Anything
    /// registered afterwards is aborted at once, so it is added here as it registers.
    cut: Option<Vec<LongLivedEntry>>,
}

struct Record {
    method: Option<Method>,
    path: Option<String>,
    kind: LongLivedKind,
    started: Instant,
}

impl Registry {
    pub(crate) fn new() -> Self {
        Registry {
            slab: Mutex::new(Slab::default()),
            count: AtomicUsize::new(0),
            expired: CancellationToken::new(),
            grace_nanos: AtomicU64::new(u64::MAX),
        }
    }

    fn slab(&self) -> MutexGuard<'_, Slab> {
        // A panic while holding the lock leaves the slab consistent (every update is one push
        // or one slot write), so a poisoned lock is still usable.
        self.slab.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Adds a long-lived response; it is removed when the returned registration drops.
    pub(crate) fn register(
        &'static self,
        kind: LongLivedKind,
        method: Option<Method>,
        path: Option<String>,
    ) -> Registration {
        let record = Record {
            method,
            path,
            kind,
            started: Instant::now(),
        };
        let mut slab = self.slab();
        if let Some(cut) = slab.cut.as_mut() {
            cut.push(LongLivedEntry {
                method: record.method.clone(),
                path: record.path.clone(),
                kind: record.kind,
                age: Duration::ZERO,
            });
        }
        let index = match slab.free.pop() {
            Some(index) => {
                slab.records[index] = Some(record);
                index
            }
            None => {
                slab.records.push(Some(record));
                slab.records.len() - 1
            }
        };
        // Relaxed: a statistic; the slab under its lock is the source of truth.
        self.count.fetch_add(1, Ordering::Relaxed);
        Registration {
            registry: self,
            index,
        }
    }

    /// Long-lived responses in progress now.
    pub(crate) fn count(&self) -> usize {
        // Relaxed: a statistic, see `register`.
        self.count.load(Ordering::Relaxed)
    }

    /// The long-lived deadline of a drain that started at `start` with `timeout`: the
    /// configured grace, or half the timeout, and never later than the drain's own deadline.
    /// The controller computes it once, with the drain deadline.
    pub(crate) fn deadline(&self, start: Instant, timeout: Duration) -> Instant {
        // Relaxed: a setting read once; setting it after the drain began has no effect.
        let grace = match self.grace_nanos.load(Ordering::Relaxed) {
            u64::MAX => timeout / 2,
            nanos => Duration::from_nanos(nanos),
        };
        start + grace.min(timeout)
    }

    pub(crate) fn set_grace(&self, grace: Duration) {
        let nanos = u64::try_from(grace.as_nanos()).unwrap_or(u64::MAX - 1);
        // Relaxed: read once when the drain starts (see `deadline`).
        self.grace_nanos
            .store(nanos.min(u64::MAX - 1), Ordering::Relaxed);
    }

    /// The long-lived deadline passed, or the drain was cut short: records what is still
    /// running, then tells those bodies to abort. Only the first call does anything.
    pub(crate) fn expire(&self) {
        let first = {
            let mut slab = self.slab();
            if slab.cut.is_some() {
                None
            } else {
                let cut = Self::snapshot(&slab, Instant::now());
                let count = cut.len();
                slab.cut = Some(cut);
                Some(count)
            }
        };
        if let Some(count @ 1..) = first {
            tracing::warn!(
                count,
                "long-lived deadline passed: aborting the long-lived responses still running"
            );
        }
        self.expired.cancel();
    }

    pub(crate) fn is_expired(&self) -> bool {
        self.expired.is_cancelled()
    }

    pub(crate) fn expired(&self) -> &CancellationToken {
        &self.expired
    }

    /// The long-lived responses cut at the long-lived deadline (or at the drain's outcome).
    pub(crate) fn cut(&self) -> Vec<LongLivedEntry> {
        self.slab().cut.clone().unwrap_or_default()
    }

    fn snapshot(slab: &Slab, now: Instant) -> Vec<LongLivedEntry> {
        let mut entries: Vec<LongLivedEntry> = slab
            .records
            .iter()
            .flatten()
            .map(|record| LongLivedEntry {
                method: record.method.clone(),
                path: record.path.clone(),
                kind: record.kind,
                age: now.saturating_duration_since(record.started),
            })
            .collect();
        // Oldest first: the ones most likely to be stuck lead the report.
        entries.sort_by_key(|entry| std::cmp::Reverse(entry.age));
        entries
    }
}

/// One long-lived response's place in the registry; dropping it removes the entry.
pub(crate) struct Registration {
    registry: &'static Registry,
    index: usize,
}

impl Registration {
    /// Corrects the kind once the response shows what it is (a marked route answering SSE).
    pub(crate) fn set_kind(&self, kind: LongLivedKind) {
        if let Some(record) = self.registry.slab().records[self.index].as_mut() {
            record.kind = kind;
        }
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        let mut slab = self.registry.slab();
        slab.records[self.index] = None;
        slab.free.push(self.index);
        // Relaxed: a statistic, see `Registry::register`.
        self.registry.count.fetch_sub(1, Ordering::Relaxed);
    }
}

impl fmt::Debug for Registration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Registration")
            .field("index", &self.index)
            .finish_non_exhaustive()
    }
}
