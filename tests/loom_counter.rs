//! Model-checks the in-flight counter with loom: every interleaving of admissions, releases
//! and the close sweep, under the C++ memory model.
//!
//! The counter's source is compiled here against loom's atomics: `src/counter.rs` reaches its
//! atomics only through `crate::sync`, and this file supplies a `sync` module of its own.
//! So the model checks the exact code the library runs, in every `cargo test`.

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
