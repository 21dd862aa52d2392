//! Per-request overhead of this crate's layers and of their peers, side by side, in wall time.
//!
//! Groups:
//! * `per_request_1_thread`: one thread, a one-frame body.
//! * `per_request_2_threads`: two threads run the same loop at once against clones of one
//!   layered service, so whatever state the middleware shares is contended. The figure is the
//!   wall time for N requests on each thread divided by N: with no contention at all it would
//!   equal the one-thread figure.
//!   `shutdown_layer_per_thread` is the control: each thread has a controller of its own, so
//!   nothing is shared and what remains is the cost of running two threads on this machine.
//! * `per_request_16_chunks`: one thread, a sixteen-frame body, to price body wrappers per
//!   frame.
//!
//! Peers: tower-http's `InFlightRequests`, tokio-util's `TaskTracker::track_future` around the
//! call, linkerd's `drain::Retain`, tower's `ConcurrencyLimit` with a limit never reached, and a
//! tokio-graceful `ShutdownGuard` cloned before the call and dropped after the body. See
//! `common/mod.rs` for how one request is driven.

mod common;

use criterion::{criterion_group, criterion_main, Criterion};

use common::Variants;

/// Runs every variant for one body size and thread count as one criterion group.
fn bench_variants(c: &mut Criterion, group_name: &str, frames: u8, threads: usize) {
    let mut variants = if threads == 1 {
        Variants::new(frames)
    } else {
        Variants::with_per_thread_control(frames)
    };
    let mut group = c.benchmark_group(group_name);
    // The bare service runs first and once more last, as `bare_last`: every added cost is
    // relative to it, so a drift of the machine across the group shows as a gap between the
    // two, and the report subtracts their mean.
    let names: Vec<&'static str> = variants.list.iter().map(|(name, _)| *name).collect();
    let bare = names
        .iter()
        .position(|name| *name == "bare")
        .expect("listed");
    let runs = names.into_iter().enumerate().chain([(bare, "bare_last")]);
    for (index, name) in runs {
        let runner = &mut variants.list[index].1;
        if threads == 1 {
            group.bench_function(name, |b| b.iter_custom(|iters| runner.run_here(iters)));
        } else {
            let pair = runner.pair();
            group.bench_function(name, |b| b.iter_custom(|iters| pair.run(iters)));
        }
    }
    group.finish();
}

fn per_request(c: &mut Criterion) {
    bench_variants(c, "per_request_1_thread", 1, 1);
    bench_variants(c, "per_request_2_threads", 1, 2);
    bench_variants(c, "per_request_16_chunks", 16, 1);
}

criterion_group!(benches, per_request);
criterion_main!(benches);
