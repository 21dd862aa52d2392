//! The atomics the counter is built on.
//!
//! `counter.rs` names its atomics through `crate::sync` only, so the loom model in
//! `tests/loom_counter.rs` can compile that same file against loom's atomics by giving it a
//! `sync` module of its own. Nothing else in the crate needs to know.

pub(crate) mod atomic {
    pub(crate) use std::sync::atomic::{AtomicUsize, Ordering};
}
