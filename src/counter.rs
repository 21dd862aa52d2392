//! The sharded in-flight counter with close-and-detect-zero semantics.
//!
//! This is the idea of Linux's `percpu_ref`, without RCU:
//!
//! * **Serving.** Each thread counts on its own cache-padded slot, so admitting and releasing
//!   requests on different threads never touch the same cache line. A slot word holds
//!   `count << 1 | CLOSED`.
//! * **Close.** The closer sets `CLOSED` on every slot with one `fetch_or` each. That read-modify-
//!   write returns the slot's exact count at the instant it closed, and after it no admission can
//!   succeed on that slot: admission is a compare-and-swap that refuses a closed word. So the sum
//!   of what the sweep saw is exactly what is left to wait for. There is no grace period to wait
//!   out, because nothing is ever added to a closed slot.
//! * **Detect zero.** `pending` counts the slots that still hold requests, plus one hold taken
//!   by the closer for the length of its sweep. A release that takes a closed slot from one to
//!   zero drops that slot's share of `pending`; whoever drops `pending` to zero, a release or
//!   the closer itself, has seen the drain complete, and is the only one that does.
//!
//! A guard always releases on the slot it was admitted on, so no slot ever goes below zero and
//! "this slot just emptied" is a property of one word. Only the drainer ever waits, and it waits
//! on one event; requests never touch `pending` while serving.
//!
//! This file uses only `crate::sync`, so `tests/loom_counter.rs` model-checks this exact source.

use crate::sync::atomic::{AtomicUsize, Ordering};

/// Set on a slot word once the slot is closed; never cleared.
const CLOSED: usize = 1;
/// One request, in slot-word units (the low bit is `CLOSED`).
const ONE: usize = 2;

/// One cache line (two on CPUs that prefetch pairs, hence 128) so that neighbouring slots
/// never share a line.
#[repr(align(128))]
struct Slot {
    word: AtomicUsize,
}

/// The counter. See the module documentation for the protocol.
pub(crate) struct Counter {
    slots: Box<[Slot]>,
    /// Slots still holding requests after close, plus the closer's hold during its sweep.
    /// Starts at 1 so that [`Counter::is_drained`] is false before any close.
    pending: AtomicUsize,
}

impl Counter {
    /// A counter with `slots` slots, rounded up to a power of two (at least one).
    pub(crate) fn new(slots: usize) -> Self {
        let slots = slots.max(1).next_power_of_two();
        Counter {
            slots: (0..slots)
                .map(|_| Slot {
                    word: AtomicUsize::new(0),
                })
                .collect(),
            pending: AtomicUsize::new(1),
        }
    }

    /// Maps any number (a thread's ticket) onto a slot index.
    #[inline]
    pub(crate) fn slot_index(&self, ticket: usize) -> usize {
        ticket & (self.slots.len() - 1)
    }

    /// Admits one request on slot `slot` unless the slot is closed.
    ///
    /// Cost: one load and one uncontended compare-and-swap on this thread's own cache line.
    #[inline]
    pub(crate) fn try_acquire(&self, slot: usize) -> bool {
        let word = &self.slots[slot].word;
        // Relaxed: a hint for the first compare-and-swap; the CAS itself re-reads the word.
        let mut current = word.load(Ordering::Relaxed);
        loop {
            if current & CLOSED != 0 {
                return false;
            }
            // Relaxed on both arms: whether this admission lands before or after the close is
            // decided by the modification order of this one word (the closer's `fetch_or` and
            // this CAS are read-modify-writes of it), and no other memory is published here.
            match word.compare_exchange_weak(
                current,
                current + ONE,
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => return true,
                Err(actual) => current = actual,
            }
        }
    }

    /// Releases one request admitted on `slot`. Returns `true` for exactly one call overall:
    /// the release that completed a drain.
    ///
    /// Cost while serving: one uncontended `fetch_sub` and a compare.
    #[inline]
    pub(crate) fn release(&self, slot: usize) -> bool {
        // AcqRel. Release: the request's own effects happen-before whoever sees the slot empty.
        // Acquire, needed only when this empties a closed slot: reading the closer's
        // `fetch_or` (or a later update of this word) orders the closer's store of `pending`
        // before our `fetch_sub` of it; and reading the earlier releases of this slot (each
        // heads a release sequence this read-modify-write continues) carries their effects
        // into our `pending` update, where the drainer acquires them. An Acquire fence in
        // that branch would do instead; on x86 both compile to the same `lock xadd`.
        let old = self.slots[slot].word.fetch_sub(ONE, Ordering::AcqRel);
        debug_assert!(old >= ONE, "release without a matching acquire");
        if old == ONE | CLOSED {
            self.drop_pending()
        } else {
            false
        }
    }

    /// Closes every slot and returns the number of requests in flight at that moment.
    ///
    /// Must be called at most once. The counter is not drained until [`Counter::finish_close`]
    /// drops the closer's hold, so the caller can publish the returned figure first.
    pub(crate) fn close(&self) -> usize {
        // No release touches `pending` until it sees a closed slot, and the `fetch_or` below
        // publishes this store (AcqRel) to any release that does, so a plain store is enough
        // and Relaxed would do; SeqCst costs nothing that matters here, once per drain.
        self.pending.store(self.slots.len() + 1, Ordering::SeqCst);
        let mut in_flight = 0;
        for slot in self.slots.iter() {
            // AcqRel. Release: this thread's `pending` store reaches the slot's later
            // releasers. Acquire: reading the count (zero included) synchronises with the
            // releases before it, so whoever takes `pending` to zero sees their effects.
            let old = slot.word.fetch_or(CLOSED, Ordering::AcqRel);
            debug_assert_eq!(old & CLOSED, 0, "counter closed twice");
            let count = old >> 1;
            in_flight += count;
            if count == 0 {
                // Cannot complete the drain: the closer's own hold is still in `pending`.
                self.drop_pending();
            }
        }
        in_flight
    }

    /// Drops the closer's hold on `pending`. Returns `true` if nothing was left in flight, in
    /// which case the closer itself has completed the drain.
    pub(crate) fn finish_close(&self) -> bool {
        self.drop_pending()
    }

    /// True once closed and every admitted request has been released.
    pub(crate) fn is_drained(&self) -> bool {
        // Acquire would do (pairing with `drop_pending`); read only by a debug assertion and
        // by tests, so the strongest ordering costs nothing that matters.
        self.pending.load(Ordering::SeqCst) == 0
    }

    /// The number of requests in flight now: exact when nothing races, a snapshot otherwise.
    /// Once closed it only falls, and `Core::decide` takes a zero here as the drain's end.
    pub(crate) fn in_flight(&self) -> usize {
        self.slots
            .iter()
            // Acquire: `Core::decide` records `Drained` when this reads zero after the close,
            // so reading a release's zero must synchronise with it (every update of a slot
            // word is a read-modify-write, so the last one carries all earlier releases).
            .map(|slot| slot.word.load(Ordering::Acquire) >> 1)
            .sum()
    }

    /// How many slots this counter spreads requests over.
    pub(crate) fn slot_count(&self) -> usize {
        self.slots.len()
    }

    #[cold]
    fn drop_pending(&self) -> bool {
        // AcqRel is what this needs: the updates form one read-modify-write chain, each one's
        // Release carrying what its caller saw (a slot's releases, the closer's figure), so
        // the call that reaches zero (Acquire) has seen every earlier release and whatever
        // the closer wrote before `finish_close`. SeqCst on top is free here: a cold path,
        // and the same instruction on x86.
        self.pending.fetch_sub(1, Ordering::SeqCst) == 1
    }
}
