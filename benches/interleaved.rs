//! One thread against two, every variant side by side, in interleaved rounds.
//!
//! `cargo bench --bench interleaved [-- --rounds R --requests N --json FILE]`
//!
//! `overhead.rs` gives each variant its own criterion run, one after another, for several
//! seconds each: the bare service and the layer it is compared with are measured minutes apart.
//! On a shared two-vCPU machine the speed of the machine drifts over minutes, and the
//! two-thread figures, a difference of differences, moved by tens of nanoseconds between runs.
//! Here every round measures every variant, on one thread and then on two, in one short burst
//! (`N` requests per thread, about 50 ms), and each round's added costs are taken against the
//! bare service of the same round. A drift then shifts a whole round, not one variant, and the
//! medians over rounds are what the report quotes, with their quartiles for the spread.
//!
//! The order of the variants turns by one each round, so no variant always runs first or
//! right after the same neighbour.

mod common;

use std::time::Duration;

use common::{Pair, Variants};

/// Requests per thread per measurement: about 50 ms at the layer's speed.
const REQUESTS: u64 = 1_000_000;
/// Rounds: an odd count, so the median is one round's figure.
const ROUNDS: usize = 21;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    // Under `cargo test --benches` the harness passes no `--bench`: measure nothing there.
    if !args.iter().any(|arg| arg == "--bench") {
        return;
    }
    let value = |flag: &str| {
        args.iter().position(|arg| arg == flag).map(|at| {
            args.get(at + 1)
                .unwrap_or_else(|| panic!("{flag} needs a value"))
        })
    };
    let rounds: usize = value("--rounds").map_or(ROUNDS, |v| v.parse().expect("--rounds R"));
    let requests: u64 = value("--requests").map_or(REQUESTS, |v| v.parse().expect("--requests N"));
    assert!(
        rounds > 0 && requests > 0,
        "--rounds and --requests must be positive"
    );

    let mut variants = Variants::with_per_thread_control(1);
    let pairs: Vec<Pair> = variants
        .list
        .iter()
        .map(|(_, runner)| runner.pair())
        .collect();
    let names: Vec<&str> = variants.list.iter().map(|(name, _)| *name).collect();
    let count = names.len();

    // samples[variant] = one (1 thread, 2 threads) figure per round, in ns per request.
    let mut samples: Vec<Vec<(f64, f64)>> = vec![Vec::with_capacity(rounds); count];
    let per_request = |elapsed: Duration| elapsed.as_secs_f64() * 1e9 / requests as f64;
    for round in 0..rounds {
        for step in 0..count {
            let index = (round + step) % count;
            let one = per_request(variants.list[index].1.run_here(requests));
            let two = per_request(pairs[index].run(requests));
            samples[index].push((one, two));
        }
        eprintln!("round {}/{rounds}", round + 1);
    }

    let bare = names
        .iter()
        .position(|name| *name == "bare")
        .expect("listed");
    let ours = names
        .iter()
        .position(|name| *name == "shutdown_layer")
        .expect("listed");
    let control = names
        .iter()
        .position(|name| *name == "shutdown_layer_per_thread")
        .expect("listed");
    // Against the bare service of the same round.
    let added = |variant: usize, round: usize| {
        let (one, two) = samples[variant][round];
        let (bare_one, bare_two) = samples[bare][round];
        (one - bare_one, two - bare_two)
    };
    let over_rounds = |f: &dyn Fn(usize) -> f64| Quartiles::of((0..rounds).map(f));
    for (index, name) in names.iter().enumerate() {
        let one = over_rounds(&|round| added(index, round).0);
        let two = over_rounds(&|round| added(index, round).1);
        println!(
            "{name:40} added, 1 thread {:+6.1} ns ({:+.1}..{:+.1}), 2 threads {:+6.1} ns ({:+.1}..{:+.1})",
            one.median, one.low, one.high, two.median, two.low, two.high,
        );
    }
    let scaling = over_rounds(&|round| {
        let (one, two) = added(ours, round);
        two / one
    });
    let contention = over_rounds(&|round| samples[ours][round].1 - samples[control][round].1);
    println!(
        "shutdown_layer, added at 2 threads ÷ at 1 thread: {:.2}× ({:.2}..{:.2}); \
         shared controller − one per thread, 2 threads: {:+.1} ns ({:+.1}..{:+.1})",
        scaling.median,
        scaling.low,
        scaling.high,
        contention.median,
        contention.low,
        contention.high,
    );
    if let Some(path) = value("--json") {
        // Every round's figures: the report takes its medians and per-round ratios from them.
        let variants: Vec<String> = names
            .iter()
            .zip(&samples)
            .map(|(name, rounds)| {
                let pairs: Vec<String> = rounds
                    .iter()
                    .map(|(one, two)| format!("[{one:.3},{two:.3}]"))
                    .collect();
                format!("\"{name}\":[{}]", pairs.join(","))
            })
            .collect();
        let json = format!(
            "{{\"rounds\":{rounds},\"requests\":{requests},\"samples\":{{{}}}}}\n",
            variants.join(",")
        );
        std::fs::write(path, json).expect("write --json FILE");
    }
}

/// Median and quartiles of a set of figures.
struct Quartiles {
    low: f64,
    median: f64,
    high: f64,
}

impl Quartiles {
    fn of(values: impl Iterator<Item = f64>) -> Quartiles {
        let mut sorted: Vec<f64> = values.collect();
        sorted.sort_by(f64::total_cmp);
        let at = |fraction: f64| sorted[((sorted.len() - 1) as f64 * fraction).round() as usize];
        Quartiles {
            low: at(0.25),
            median: at(0.5),
            high: at(0.75),
        }
    }
}
