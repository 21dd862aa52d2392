//! Model-checks the in-flight counter with loom: every interleaving of admissions, releases
//! and the close sweep, under the C++ memory model.
//!
//! The counter's source is compiled here against loom's atomics: `src/counter.rs` reaches its
//! atomics only through `crate::sync`, and this file supplies a `sync` module of its own.
//! So the model checks the exact code the library runs, in every `cargo test`.
//!
//! Weakening any Acquire or Release the protocol relies on makes at least one model here
//! fail, with one exception: the Release half of the closer's `fetch_or`, which orders its
//! store of `pending` before any release's update of it. loom cannot break that one (its
//! read-modify-writes always read the latest store, and a release reaches `pending` only
//! after reading the closed slot, so after the store); it rests on the memory model's
//! argument beside the code.
//!
//! Outside these models: the phase flag (a hint; exactness comes from the slot words), the
//! thread-to-slot choice (any slot is correct, as a guard releases on its own), and the
//! controller's decision, its `OnceLock`s and the `Notify` that wakes the drainer, which loom
//! cannot see into. Those are checked by `tests/model.rs`, the threads held mid-decision in
//! `tests/metrics.rs` and `tests/tracing_phase_events.rs`, and the stress and soak tests.

mod sync {
    pub(crate) mod atomic {
        pub(crate) use loom::sync::atomic::{AtomicUsize, Ordering};
    }
}

#[allow(dead_code)]
#[path = "../src/counter.rs"]
mod counter;

use counter::Counter;
use loom::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};
use loom::sync::Arc;
use loom::thread;

/// Test bookkeeping shared by the model's threads.
#[derive(Default)]
struct Witness {
    /// Set by whoever sees the zero edge; a release after it would be a request still running
    /// when the drain was declared complete.
    drained: AtomicBool,
    /// How many calls saw the zero edge: must end at exactly one.
    edges: AtomicUsize,
    /// Set once the close sweep has finished.
    closed: AtomicBool,
    admitted: AtomicUsize,
}

impl Witness {
    fn edge(&self, seen: bool) {
        if seen {
            self.drained.store(true, SeqCst);
            self.edges.fetch_add(1, SeqCst);
        }
    }
}

/// One request on `slot`: admit if still open, then release.
fn request(counter: &Counter, witness: &Witness, slot: usize) {
    let closed_before = witness.closed.load(SeqCst);
    if counter.try_acquire(slot) {
        assert!(!closed_before, "admitted after the close sweep finished");
        witness.admitted.fetch_add(1, SeqCst);
        assert!(
            !witness.drained.load(SeqCst),
            "drain completed while a request ran"
        );
        witness.edge(counter.release(slot));
    }
}

fn close(counter: &Counter, witness: &Witness) -> usize {
    let in_flight = counter.close();
    witness.closed.store(true, SeqCst);
    witness.edge(counter.finish_close());
    in_flight
}

fn check_end(counter: &Counter, witness: &Witness, in_flight_at_close: usize) {
    assert_eq!(witness.edges.load(SeqCst), 1, "exactly one zero edge");
    assert!(counter.is_drained());
    assert_eq!(counter.in_flight(), 0);
    assert!(in_flight_at_close <= witness.admitted.load(SeqCst));
}

/// Explores every interleaving of `model` with up to three preemptions, which covers each
/// race here and keeps the run to seconds.
fn check(model: impl Fn() + Sync + Send + 'static) {
    let mut builder = loom::model::Builder::new();
    builder.preemption_bound = Some(3);
    builder.check(model);
}

/// Spawns `requests` on the given slots, closes the counter meanwhile, and checks the end.
fn race_close(slots: usize, request_slots: &'static [usize]) {
    let counter = Arc::new(Counter::new(slots));
    let witness = Arc::new(Witness::default());
    let workers: Vec<_> = request_slots
        .iter()
        .map(|&slot| {
            let (counter, witness) = (counter.clone(), witness.clone());
            thread::spawn(move || request(&counter, &witness, slot))
        })
        .collect();
    let in_flight = close(&counter, &witness);
    for worker in workers {
        worker.join().unwrap();
    }
    check_end(&counter, &witness, in_flight);
}

/// Two requests on different slots race the close.
#[test]
fn admissions_on_two_slots_race_the_close() {
    check(|| race_close(2, &[0, 1]));
}

/// Two requests contend for one slot (its compare-and-swap retries) while it closes.
#[test]
fn admissions_on_one_slot_race_the_close() {
    check(|| race_close(1, &[0, 0]));
}

/// Requests admitted before the close are released on other threads while it sweeps: the
/// last release and the closer's own hold race for the zero edge.
#[test]
fn last_release_races_the_sweep() {
    check(|| {
        let counter = Arc::new(Counter::new(2));
        let witness = Arc::new(Witness::default());
        assert!(counter.try_acquire(0));
        assert!(counter.try_acquire(1));
        witness.admitted.store(2, SeqCst);
        let releasers: Vec<_> = (0..2)
            .map(|slot| {
                let (counter, witness) = (counter.clone(), witness.clone());
                thread::spawn(move || witness.edge(counter.release(slot)))
            })
            .collect();
        let in_flight = close(&counter, &witness);
        for releaser in releasers {
            releaser.join().unwrap();
        }
        check_end(&counter, &witness, in_flight);
    });
}

/// What a request did before its guard was released: written by the request, read by
/// whoever declares the drain over, which must happen after it.
struct Effect(loom::cell::UnsafeCell<usize>);

// SAFETY: the cell is written by the request's thread and read by the closer; loom checks
// that the two accesses are ordered and reports a causality violation if they are not.
unsafe impl Sync for Effect {}

/// A timeout (or a force) deciding right after the sweep reads the counter: if it finds
/// nothing in flight it declares the drain over, so the last request's effects must be
/// visible to it, as they are to whoever sees the zero edge.
#[test]
fn a_drain_found_empty_at_a_timeout_sees_the_last_requests_effects() {
    check(|| {
        let counter = Arc::new(Counter::new(1));
        let effect = Arc::new(Effect(loom::cell::UnsafeCell::new(0)));
        assert!(counter.try_acquire(0));
        let request = {
            let (counter, effect) = (counter.clone(), effect.clone());
            // SAFETY: the only write; the read below is ordered after it, as loom checks.
            thread::spawn(move || {
                effect.0.with_mut(|value| unsafe { *value = 1 });
                counter.release(0)
            })
        };
        counter.close();
        if counter.in_flight() == 0 {
            // SAFETY: the request released its guard, and this read is ordered after that.
            let value = effect.0.with(|value| unsafe { *value });
            assert_eq!(
                value, 1,
                "the drain was declared over before the request's effects"
            );
        }
        counter.finish_close();
        request.join().unwrap();
    });
}

/// The same across two slots: `in_flight()` is a sum of loads, one per slot, not one atomic
/// snapshot. Reading every slot empty after the close must still order both requests'
/// effects, released on different slots by different threads, before the declaration.
#[test]
fn a_drain_found_empty_across_slots_sees_every_requests_effects() {
    check(|| {
        let counter = Arc::new(Counter::new(2));
        let effects = Arc::new([
            Effect(loom::cell::UnsafeCell::new(0)),
            Effect(loom::cell::UnsafeCell::new(0)),
        ]);
        assert!(counter.try_acquire(0));
        assert!(counter.try_acquire(1));
        let requests: Vec<_> = (0..2)
            .map(|slot| {
                let (counter, effects) = (counter.clone(), effects.clone());
                // SAFETY: each cell's only write; the reads below are ordered after it, as
                // loom checks.
                thread::spawn(move || {
                    effects[slot].0.with_mut(|value| unsafe { *value = 1 });
                    counter.release(slot)
                })
            })
            .collect();
        counter.close();
        if counter.in_flight() == 0 {
            for effect in effects.iter() {
                // SAFETY: both requests released their guards, and this read is ordered
                // after that.
                let value = effect.0.with(|value| unsafe { *value });
                assert_eq!(
                    value, 1,
                    "the drain was declared over before a request's effects"
                );
            }
        }
        counter.finish_close();
        for request in requests {
            request.join().unwrap();
        }
    });
}

/// Whoever sees the zero edge (the last release, or the closer as it drops its hold) is the
/// one that declares the drain over; what the drainer does next (closing a database pool in
/// a hook) must come after everything the requests did, and after what the closer wrote
/// between its sweep and `finish_close` (the drain's starting figure). Reads every cell, so
/// that loom reports any write not ordered before the edge; returns how many were written.
fn declare(cells: &[Effect]) -> usize {
    cells
        .iter()
        // SAFETY: every write to these cells happens before the zero edge, as loom checks.
        .map(|cell| cell.0.with(|value| unsafe { *value }))
        .sum()
}

/// Two requests admitted before the close are released on other threads while it sweeps:
/// whichever of the three sees the zero edge must see both requests' effects and the
/// closer's figure. The edge reaches the drainer through the slot words and then `pending`,
/// a chain of read-modify-writes that each ordering along it must keep.
#[test]
fn the_zero_edge_sees_every_requests_effects_and_the_closers_figure() {
    check(|| {
        let counter = Arc::new(Counter::new(2));
        let cells: Arc<[Effect; 3]> = Arc::new(std::array::from_fn(|_| {
            Effect(loom::cell::UnsafeCell::new(0))
        }));
        assert!(counter.try_acquire(0));
        assert!(counter.try_acquire(1));
        let requests: Vec<_> = (0..2)
            .map(|slot| {
                let (counter, cells) = (counter.clone(), cells.clone());
                thread::spawn(move || {
                    // SAFETY: this cell's only write; the reads are ordered after it.
                    cells[slot].0.with_mut(|value| unsafe { *value = 1 });
                    if counter.release(slot) {
                        assert_eq!(declare(&cells[..]), 3, "declared before a write");
                    }
                })
            })
            .collect();
        counter.close();
        // SAFETY: the figure's only write, before the closer's hold is dropped.
        cells[2].0.with_mut(|value| unsafe { *value = 1 });
        if counter.finish_close() {
            assert_eq!(declare(&cells[..]), 3, "declared before a write");
        }
        for request in requests {
            request.join().unwrap();
        }
        assert!(counter.is_drained());
    });
}

/// The same with admission racing the close on one slot: a request admitted just before the
/// sweep is part of the drain, and its effects reach whoever sees the zero edge; one turned
/// away writes nothing. The other request was admitted before the close, on the same slot.
#[test]
fn a_request_admitted_in_the_race_reaches_the_zero_edge() {
    check(|| {
        let counter = Arc::new(Counter::new(1));
        let cells: Arc<[Effect; 3]> = Arc::new(std::array::from_fn(|_| {
            Effect(loom::cell::UnsafeCell::new(0))
        }));
        assert!(counter.try_acquire(0));
        // SAFETY: written before the thread that reads it is spawned.
        cells[0].0.with_mut(|value| unsafe { *value = 1 });
        let early = {
            let (counter, cells) = (counter.clone(), cells.clone());
            thread::spawn(move || counter.release(0).then(|| declare(&cells[..])))
        };
        let racing = {
            let (counter, cells) = (counter.clone(), cells.clone());
            thread::spawn(move || {
                // One turned away writes nothing and sees no edge.
                if !counter.try_acquire(0) {
                    return (false, None);
                }
                // SAFETY: this cell's only write, by an admitted request.
                cells[1].0.with_mut(|value| unsafe { *value = 1 });
                (true, counter.release(0).then(|| declare(&cells[..])))
            })
        };
        counter.close();
        // SAFETY: the figure's only write, before the closer's hold is dropped.
        cells[2].0.with_mut(|value| unsafe { *value = 1 });
        let by_closer = counter.finish_close().then(|| declare(&cells[..]));
        let by_early = early.join().unwrap();
        let (admitted, by_racing) = racing.join().unwrap();
        let seen: Vec<usize> = [by_closer, by_early, by_racing]
            .into_iter()
            .flatten()
            .collect();
        assert_eq!(
            seen,
            [2 + usize::from(admitted)],
            "one edge, after every write"
        );
        assert!(counter.is_drained());
    });
}
