//! Instructions per request for each overhead variant, for counting under valgrind, whose
//! counts do not move with the machine's load the way wall time does.
//!
//! `instructions VARIANT FRAMES ITERS` runs `ITERS` requests of one variant of
//! `overhead.rs` (one thread, `FRAMES` body frames) and exits. Run it under
//! `valgrind --tool=cachegrind --cache-sim=no` at two iteration counts: the difference in total
//! instructions, divided by the difference in iterations, is the cost of one request with all
//! set-up cancelled out. `benches/report.sh` does exactly this. Without arguments (as under
//! `cargo bench`) it does nothing.

mod common;

use common::{Variants, NAMES};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [variant, frames, iters] = match &args[..] {
        [variant, frames, iters] => [variant, frames, iters],
        _ => return,
    };
    let frames: u8 = frames.parse().expect("FRAMES: a number of body frames");
    let iters: u64 = iters.parse().expect("ITERS: a number of requests");
    assert!(
        NAMES.contains(&variant.as_str()),
        "VARIANT: one of {NAMES:?}"
    );
    let mut variants = Variants::new(frames);
    let (_, runner) = variants
        .list
        .iter_mut()
        .find(|(name, _)| name == variant)
        .expect("listed above");
    runner.run_here(iters);
}
