//! The registry of long-lived responses: who they are, since when, and which were cut.
//!
//! Only long-lived responses ever touch it, so a plain `Mutex` around a slab is enough: the
//! short-request path never sees this file.

use std::fmt;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard, OnceLock, PoisonError};
use std::time::Duration;

use http::Method;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::{LongLivedEntry, LongLivedKind, Tracking};
use crate::core::Core;
use crate::middleware::rejection::grpc_content_type_of;
use crate::Shutdown;

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
    /// The settings of bypassed paths' responses, made at the first bypassed request.
    bypassed: OnceLock<Tracking>,
}

/// The id the next record gets, in any registry. Unique in the process, not only in one
/// registry: a response's mark names its entry by id, and a layer of another controller must
/// find no entry of its own under it.
static NEXT_ID: AtomicU64 = AtomicU64::new(0);

#[derive(Default)]
struct Slab {
    records: Vec<Option<Record>>,
    free: Vec<usize>,
    /// Set when `expired` fires: what was registered then, for the report. Anything
    /// registered afterwards is ended at its first chance, so it is added here as it
    /// registers. A response that is then sent whole after all (see
    /// [`Registration::sent_whole`]) leaves the list: the report lists what was cut, nothing
    /// else.
    cut: Option<Vec<Cut>>,
}

/// An entry of the cut list, with the id of the record it was taken from.
struct Cut {
    id: u64,
    entry: LongLivedEntry,
}

/// Names one registry entry for as long as its [`Registration`] lives: its slot, and the id
/// that tells it from a later record in the same slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct EntryId {
    index: usize,
    id: u64,
}

struct Record {
    id: u64,
    method: Option<Method>,
    path: Option<String>,
    kind: LongLivedKind,
    started: Instant,
    /// Sent whole, as a marked route further out found when it handed its name over (its
    /// answer to a `HEAD`): never listed as cut.
    whole: bool,
}

impl Registry {
    pub(crate) fn new() -> Self {
        Registry {
            slab: Mutex::new(Slab::default()),
            count: AtomicUsize::new(0),
            expired: CancellationToken::new(),
            grace_nanos: AtomicU64::new(u64::MAX),
            bypassed: OnceLock::new(),
        }
    }

    /// The settings with which a layer that counts looks at the response of a request on a
    /// bypassed path: a gRPC stream (a health `Watch`) is neither registered nor counted, and
    /// ends once the drain is over (see `Watch::bypassed`). Kept here, once per controller,
    /// so that the response future of a bypassed request carries one reference, as any other
    /// does; `core` is the controller this registry belongs to.
    pub(crate) fn bypassed_tracking(&'static self, core: &'static Core) -> &'static Tracking {
        self.bypassed.get_or_init(|| Tracking {
            final_event: None,
            on_drain: None,
            kind: None,
            predicate: Some(grpc_stream),
            shutdown: Some(Shutdown { core }),
            bypassed: true,
        })
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
        let mut slab = self.slab();
        let late = slab.cut.is_some();
        // Relaxed: the ids need only be unique, which the atomic add alone ensures.
        let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
        let record = Record {
            id,
            method,
            path,
            kind,
            started: Instant::now(),
            whole: false,
        };
        if let Some(cut) = slab.cut.as_mut() {
            cut.push(Cut {
                id,
                entry: record.entry(Duration::ZERO),
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
            entry: EntryId { index, id },
            whole: false,
            late,
        }
    }

    /// Whether `entry` is one of this registry's, in place: a response's mark may come from
    /// a layer of another controller.
    pub(crate) fn holds(&self, entry: EntryId) -> bool {
        self.slab().record_mut(entry).is_some()
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
        self.abort_recorded(self.record_cut());
    }

    /// Records the long-lived responses still running as cut, once: the count on the call
    /// that did, `None` on any later one. Runs no user code.
    pub(crate) fn record_cut(&self) -> Option<usize> {
        let mut slab = self.slab();
        if slab.cut.is_some() {
            return None;
        }
        let cut = Self::snapshot(&slab, Instant::now());
        let count = cut.len();
        slab.cut = Some(cut);
        Some(count)
    }

    /// Tells the bodies of long-lived responses to abort (those [`record_cut`] did not list
    /// have ended, or can still end whole), and warns of the `recorded` ones.
    ///
    /// [`record_cut`]: Registry::record_cut
    pub(crate) fn abort_recorded(&self, recorded: Option<usize>) {
        // Before the warning: a tracing subscriber that panics on it must not leave the
        // bodies just listed as cut running on.
        self.expired.cancel();
        if let Some(count @ 1..) = recorded {
            tracing::warn!(
                count,
                "long-lived deadline passed: aborting the long-lived responses still running \
                 that cannot finish at once"
            );
        }
    }

    pub(crate) fn is_expired(&self) -> bool {
        self.expired.is_cancelled()
    }

    pub(crate) fn expired(&self) -> &CancellationToken {
        &self.expired
    }

    /// The long-lived responses cut at the long-lived deadline (or at the drain's outcome).
    pub(crate) fn cut(&self) -> Vec<LongLivedEntry> {
        let slab = self.slab();
        let cut = slab.cut.iter().flatten();
        cut.map(|cut| cut.entry.clone()).collect()
    }

    fn snapshot(slab: &Slab, now: Instant) -> Vec<Cut> {
        let mut entries: Vec<Cut> = slab
            .records
            .iter()
            .flatten()
            .filter(|record| !record.whole)
            .map(|record| Cut {
                id: record.id,
                entry: record.entry(now.saturating_duration_since(record.started)),
            })
            .collect();
        // Oldest first: the ones most likely to be stuck lead the report.
        entries.sort_by_key(|cut| std::cmp::Reverse(cut.entry.age));
        entries
    }
}

impl Record {
    fn entry(&self, age: Duration) -> LongLivedEntry {
        LongLivedEntry {
            method: self.method.clone(),
            path: self.path.clone(),
            kind: self.kind,
            age,
        }
    }
}

impl Slab {
    fn record_mut(&mut self, entry: EntryId) -> Option<&mut Record> {
        self.records
            .get_mut(entry.index)?
            .as_mut()
            .filter(|record| record.id == entry.id)
    }

    fn listed_mut(&mut self, id: u64) -> Option<&mut Cut> {
        self.cut.as_mut()?.iter_mut().find(|cut| cut.id == id)
    }

    fn unlist(&mut self, id: u64) -> Option<Cut> {
        let cut = self.cut.as_mut()?;
        let at = cut.iter().position(|cut| cut.id == id)?;
        Some(cut.remove(at))
    }

    /// `hand_name_to`'s renaming of `other` after `mine`, in the records and the cut list.
    fn rename(&mut self, mine: EntryId, other: EntryId, kind: Option<LongLivedKind>, whole: bool) {
        let Some(record) = self.record_mut(mine) else {
            return;
        };
        let (method, path, started) = (record.method.clone(), record.path.clone(), record.started);
        let Some(theirs) = self.record_mut(other) else {
            return;
        };
        theirs.method.clone_from(&method);
        theirs.path.clone_from(&path);
        theirs.started = started;
        if let Some(kind) = kind {
            theirs.kind = kind;
        }
        let kind = theirs.kind;
        if whole {
            // One response: the other's body is dropped unread, which would leave it listed.
            theirs.whole = true;
            self.unlist(mine.id);
            self.unlist(other.id);
            return;
        }
        let Some(mine) = self.unlist(mine.id) else {
            return;
        };
        // Both are listed once the deadline has passed: the other's listing stays, under this
        // name and this age (the response's, from when the route first saw its request).
        if let Some(theirs) = self.listed_mut(other.id) {
            theirs.entry = LongLivedEntry { kind, ..mine.entry };
        }
        // Oldest first, as `snapshot` orders them.
        if let Some(cut) = self.cut.as_mut() {
            cut.sort_by_key(|cut| std::cmp::Reverse(cut.entry.age));
        }
    }
}

/// One long-lived response's place in the registry; dropping it removes the entry.
pub(crate) struct Registration {
    registry: &'static Registry,
    entry: EntryId,
    /// The response was sent whole: it leaves the cut list, if the deadline listed it.
    whole: bool,
    /// Registered after the long-lived deadline, and so listed as cut from the start.
    late: bool,
}

impl Registration {
    /// Which entry this is, for a marked route further out to name it (see `hand_name_to`).
    pub(crate) fn entry(&self) -> EntryId {
        self.entry
    }

    /// Corrects the kind once the response shows what it is (a marked route answering SSE),
    /// in its listing as cut too: past the long-lived deadline, what is cut from here on is
    /// this response, not the long-poll it was.
    pub(crate) fn set_kind(&self, kind: LongLivedKind) {
        let mut slab = self.registry.slab();
        if let Some(record) = slab.record_mut(self.entry) {
            record.kind = kind;
        }
        if let Some(listed) = slab.listed_mut(self.entry.id) {
            listed.entry.kind = kind;
        }
    }

    /// The response has been sent whole (its last byte handed to the server, or its end, a
    /// final event's or its own): when the registration goes, so does any listing of it as
    /// cut. Past the long-lived deadline such a response was let through (an answer that came
    /// as the deadline passed) or ended cleanly at its first chance (an event stream between
    /// events): it was not cut, and the report must not say it was.
    pub(crate) fn sent_whole(&mut self) {
        self.whole = true;
    }

    /// The response's body is dropped before the server ever asked it for a frame. Past the
    /// long-lived deadline, a body is cut when it is polled; one registered after that
    /// deadline and never polled was not cut: the answer to a `HEAD` (whose body the server
    /// drops unread, the head being the whole answer), or one whose client left first. It
    /// leaves the cut list. One listed by the deadline itself stays: it was running then.
    pub(crate) fn dropped_unpolled(&mut self) {
        if self.late {
            self.whole = true;
        }
    }

    /// Gives this entry's method, path and start to `other`, the entry a layer further in
    /// made for the same response (a marked route around a layer that tracks by content
    /// type), which is the one kept: the response is one entry, named. `kind`, if set,
    /// names it too. A listing of this entry as cut moves to `other`; if this entry was sent
    /// whole (the answer to a `HEAD`), so was `other`, which is then not listed. This entry
    /// leaves the registry under the same lock: a deadline passing between the two would
    /// list the response twice, once under each entry.
    pub(crate) fn hand_name_to(self, other: EntryId, kind: Option<LongLivedKind>) {
        let mut slab = self.registry.slab();
        slab.rename(self.entry, other, kind, self.whole);
        self.leave(&mut slab);
        drop(slab);
        // Left already; the drop would free the slot a second time.
        std::mem::forget(self);
    }

    /// Takes this entry out of the registry, and out of the cut list if it was sent whole.
    fn leave(&self, slab: &mut Slab) {
        slab.records[self.entry.index] = None;
        slab.free.push(self.entry.index);
        if self.whole {
            slab.unlist(self.entry.id);
        }
        // Relaxed: a statistic, see `Registry::register`.
        self.registry.count.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        let mut slab = self.registry.slab();
        self.leave(&mut slab);
    }
}

impl fmt::Debug for Registration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Registration")
            .field("index", &self.entry.index)
            .finish_non_exhaustive()
    }
}

/// Picks gRPC responses (gRPC and gRPC-web, as the rejection's answers recognise them) among
/// the responses of unknown length on a bypassed path.
fn grpc_stream(_: http::StatusCode, headers: &http::HeaderMap) -> Option<LongLivedKind> {
    grpc_content_type_of(headers).map(|_| LongLivedKind::Stream)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A marked route around a layer that tracks by content type hands its name to that
    /// layer's entry and leaves; the deadline's snapshot may come at any moment on another
    /// thread, right after the hand-over included. It must find the response once.
    #[test]
    fn a_response_handed_over_is_listed_once_by_a_deadline_right_after() {
        let registry: &'static Registry = Box::leak(Box::new(Registry::new()));
        let route = registry.register(
            LongLivedKind::LongPoll,
            Some(Method::GET),
            Some("/events".to_owned()),
        );
        let detected = registry.register(LongLivedKind::Sse, None, None);
        route.hand_name_to(detected.entry(), None);
        registry.expire();
        let cut = registry.cut();
        assert_eq!(cut.len(), 1, "listed more than once: {cut:?}");
        assert_eq!(cut[0].path.as_deref(), Some("/events"));
        assert_eq!(cut[0].kind, LongLivedKind::Sse);
        drop(detected);
        assert_eq!(registry.count(), 0);
    }
}
