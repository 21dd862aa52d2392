//! Memory: what each request in flight holds, what it allocates, and what the crate's own
//! structures cost.
//!
//! `cargo bench --bench memory [-- --json FILE]` prints one line per figure (and writes them
//! as JSON for `benches/report.sh`):
//!
//! * per request, for every variant of `overhead.rs` (same inner service, one frame): the
//!   bytes of the response future and of the response body, which a server keeps in the
//!   connection's task while the request runs, and the heap bytes and allocations per request
//!   (counted by a global allocator over 1,000 requests, after one to warm up);
//! * per long-lived response: the heap a tracked server-sent event stream holds while it
//!   runs, under `Shutdown::layer()` (detected by its content type) and on a route marked
//!   with `LongLivedLayer::route`;
//! * per controller: the heap `Shutdown::new()` takes, for the life of the process.
//!
//! Sizes and byte counts are exact and do not move with the machine's load.

mod common;

use std::convert::Infallible;
use std::future::{ready, Ready};
use std::task::Context;

use futures_util::task::noop_waker_ref;
use http::header::{HeaderValue, CONTENT_TYPE};
use http::{Request, Response};
use tower::{service_fn, Layer, Service};
use tower_drain::{LongLivedLayer, Shutdown};

use common::{ready_now, request, Chunks, Variants};

/// Requests measured per variant; the figures are per request.
const REQUESTS: u64 = 1000;
/// Long-lived responses held at once; the figure is per response.
const HELD: usize = 100;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    // Under `cargo test --benches` the harness passes no `--bench`: measure nothing there.
    if !args.iter().any(|arg| arg == "--bench") {
        return;
    }
    let json = args
        .iter()
        .position(|arg| arg == "--json")
        .map(|at| args.get(at + 1).expect("--json FILE").clone());

    let mut figures = Vec::new();
    let mut variants = Variants::new(1);
    for (name, runner) in &mut variants.list {
        let footprint = runner.footprint();
        // Warmed up by `Variants::new`; measured over many requests so that one-off lazy
        // set-up in a peer would show as a fraction, not a whole allocation.
        let heap = allocation_counter::measure(|| {
            runner.run_here(REQUESTS);
        });
        let line = format!(
            "{{\"variant\":\"{name}\",\"future_bytes\":{},\"body_bytes\":{},\
             \"heap_bytes_per_request\":{},\"allocations_per_request\":{}}}",
            footprint.future_bytes,
            footprint.body_bytes,
            heap.bytes_total as f64 / REQUESTS as f64,
            heap.count_total as f64 / REQUESTS as f64,
        );
        println!("{line}");
        figures.push(line);
    }

    // The handler's own response (its header map) is on the heap too: the bare figure is
    // subtracted in the report.
    let line = long_lived_line("sse_bare", service_fn(event_stream), None);
    println!("{line}");
    figures.push(line);

    let shutdown = Shutdown::new();
    let detected = shutdown.layer().layer(service_fn(event_stream));
    let line = long_lived_line("sse_detected", detected, Some(&shutdown));
    println!("{line}");
    figures.push(line);

    let shutdown = Shutdown::new();
    let marked = shutdown
        .layer()
        .layer(LongLivedLayer::route(shutdown).layer(service_fn(event_stream)));
    let line = long_lived_line("sse_marked_route", marked, Some(&shutdown));
    println!("{line}");
    figures.push(line);

    let controller = allocation_counter::measure(|| {
        std::hint::black_box(Shutdown::new());
    });
    let line = format!(
        "{{\"controller\":\"Shutdown::new\",\"heap_bytes\":{},\"slots\":{}}}",
        controller.bytes_current,
        slots(&Shutdown::new()),
    );
    println!("{line}");
    figures.push(line);

    if let Some(path) = json {
        let text = format!("[\n{}\n]\n", figures.join(",\n"));
        std::fs::write(&path, text).expect("write --json FILE");
    }
}

/// An event stream of unknown length, as a handler streaming events answers.
fn event_stream(_: Request<()>) -> Ready<Result<Response<Chunks>, Infallible>> {
    let mut response = Response::new(Chunks::new(1));
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
    ready(Ok(response))
}

/// Heap held per long-lived response while [`HELD`] of them run at once, and allocations
/// made per response (registration included), as a JSON line. `tracked_by` is the controller
/// that must be tracking them, if any.
fn long_lived_line<S, B>(name: &str, mut service: S, tracked_by: Option<&Shutdown>) -> String
where
    S: Service<Request<()>, Response = Response<B>>,
    S::Error: std::fmt::Debug,
{
    let mut cx = Context::from_waker(noop_waker_ref());
    let mut held = Vec::with_capacity(HELD);
    let mut hold_all = |held: &mut Vec<Response<B>>| {
        for _ in 0..HELD {
            assert!(service.poll_ready(&mut cx).is_ready());
            held.push(ready_now(service.call(request()), &mut cx).expect("answered"));
        }
        if let Some(shutdown) = tracked_by {
            assert_eq!(shutdown.long_lived(), HELD, "every response is tracked");
        }
    };
    // The registry grows to fit the most responses ever held at once and keeps that room:
    // fill it once, so that what is measured is what each response holds.
    hold_all(&mut held);
    held.clear();
    let heap = allocation_counter::measure(|| hold_all(&mut held));
    format!(
        "{{\"long_lived\":\"{name}\",\"heap_bytes_held\":{},\"allocations\":{}}}",
        heap.bytes_current as f64 / HELD as f64,
        heap.count_total as f64 / HELD as f64,
    )
}

/// The controller's counter slots, read from its `Debug` output (the count is not public).
fn slots(shutdown: &Shutdown) -> usize {
    let debug = format!("{shutdown:?}");
    let digits = debug
        .split("slots: ")
        .nth(1)
        .expect("Shutdown's Debug names its slots");
    digits
        .chars()
        .take_while(char::is_ascii_digit)
        .collect::<String>()
        .parse()
        .expect("a number of slots")
}
