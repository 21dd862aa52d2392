//! What long-lived tracking costs a short request, and what registering a long-lived one costs.
//!
//! Each iteration drives one request to completion by hand, without a runtime: `poll_ready`,
//! `call`, the response future polled once with `Waker::noop()` (a ready `service_fn` answers
//! at once), then the body polled until it ends. Short responses carry a `Content-Type`
//! header, as real ones do, so the header lookup tracking may add is a real lookup.
//!
//! * `short/bare`: the service alone, the floor.
//! * `short/shutdown_layer`: under `Shutdown::layer()`, a body of known length. Compare this
//!   figure between builds with and without long-lived tracking: the feature's cost on the
//!   short path (a look at the size hint).
//! * `short/shutdown_layer_unsized`: the same with a body of unknown length, the case that
//!   also pays the `Content-Type` lookup.
//! * `long_lived/sse_registered`: an SSE response under `Shutdown::layer()`, registered and
//!   removed (lock, slab slot, boxed state): paid only by long-lived responses.

// `Waker::noop` (Rust 1.85) is only needed to run the benchmark; the library's own minimum
// Rust version is unaffected.
#![allow(clippy::incompatible_msrv)]

use std::convert::Infallible;
use std::future::{ready, Future};
use std::pin::pin;
use std::task::{Context, Poll, Waker};

use bytes::Bytes;
use criterion::{black_box, criterion_group, Criterion};
use futures_util::stream::{iter, Iter};
use http::header::{HeaderValue, CONTENT_TYPE};
use http::{Request, Response};
use http_body::{Body, Frame};
use http_body_util::{Full, StreamBody};
use tower::{service_fn, Layer, Service};
use tower_drain::Shutdown;

/// The body of the long-lived case: one frame, length not known in advance, as a stream's.
type Stream = StreamBody<Iter<std::array::IntoIter<Result<Frame<Bytes>, Infallible>, 1>>>;

fn respond(content_type: &'static str) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from_static(b"ok")));
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

fn respond_stream(content_type: &'static str) -> Response<Stream> {
    let frames = iter([Ok(Frame::data(Bytes::from_static(b"data: ok\n\n")))]);
    let mut response = Response::new(StreamBody::new(frames));
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

/// One request start to finish; returns the bytes of body seen so nothing is optimised away.
fn drive<S, B>(service: &mut S) -> usize
where
    S: Service<Request<()>, Response = Response<B>>,
    S::Error: std::fmt::Debug,
    B: Body,
    B::Error: std::fmt::Debug,
{
    let mut cx = Context::from_waker(Waker::noop());
    assert!(service.poll_ready(&mut cx).is_ready());
    let future = pin!(service.call(Request::new(())));
    let Poll::Ready(Ok(response)) = future.poll(&mut cx) else {
        unreachable!("a ready service_fn answers at once")
    };
    let mut body = pin!(response.into_body());
    let mut seen = 0;
    while let Poll::Ready(Some(frame)) = body.as_mut().poll_frame(&mut cx) {
        seen += usize::from(frame.unwrap().is_data());
    }
    seen
}

fn short(c: &mut Criterion) {
    let mut group = c.benchmark_group("short");
    let handler = |_req: Request<()>| ready(Ok::<_, Infallible>(respond("text/plain")));

    let mut bare = service_fn(handler);
    group.bench_function("bare", |b| b.iter(|| black_box(drive(&mut bare))));

    let shutdown = Shutdown::new();
    let mut layered = shutdown.layer().layer(service_fn(handler));
    group.bench_function("shutdown_layer", |b| {
        b.iter(|| black_box(drive(&mut layered)))
    });

    let unsized_handler =
        |_req: Request<()>| ready(Ok::<_, Infallible>(respond_stream("text/plain")));
    let mut layered = shutdown.layer().layer(service_fn(unsized_handler));
    group.bench_function("shutdown_layer_unsized", |b| {
        b.iter(|| black_box(drive(&mut layered)))
    });
    group.finish();
}

fn long_lived(c: &mut Criterion) {
    let mut group = c.benchmark_group("long_lived");
    let shutdown = Shutdown::new();
    let handler =
        |_req: Request<()>| ready(Ok::<_, Infallible>(respond_stream("text/event-stream")));
    let mut layered = shutdown.layer().layer(service_fn(handler));
    group.bench_function("sse_registered", |b| {
        b.iter(|| black_box(drive(&mut layered)))
    });
    group.finish();
}

criterion_group!(benches, short, long_lived);

/// With `LONG_LIVED_COUNT=N` (and `LONG_LIVED_CASE=bare|layer|layer_unsized|sse`) it drives exactly N
/// requests and exits, without Criterion: run it under `perf stat -e instructions:u` for a
/// per-request instruction count that a busy machine does not blur.
fn main() {
    if let Some(count) = std::env::var_os("LONG_LIVED_COUNT") {
        let count: usize = count
            .to_str()
            .and_then(|n| n.parse().ok())
            .expect("a count");
        let case = std::env::var("LONG_LIVED_CASE").unwrap_or_default();
        let shutdown = Shutdown::new();
        let seen = match case.as_str() {
            "bare" => {
                let mut service = service_fn(|_req: Request<()>| {
                    ready(Ok::<_, Infallible>(respond("text/plain")))
                });
                (0..count).map(|_| drive(&mut service)).sum::<usize>()
            }
            "layer" => {
                let mut service = shutdown.layer().layer(service_fn(|_req: Request<()>| {
                    ready(Ok::<_, Infallible>(respond("text/plain")))
                }));
                (0..count).map(|_| drive(&mut service)).sum::<usize>()
            }
            "layer_unsized" => {
                let mut service = shutdown.layer().layer(service_fn(|_req: Request<()>| {
                    ready(Ok::<_, Infallible>(respond_stream("text/plain")))
                }));
                (0..count).map(|_| drive(&mut service)).sum::<usize>()
            }
            "sse" => {
                let mut service = shutdown.layer().layer(service_fn(|_req: Request<()>| {
                    ready(Ok::<_, Infallible>(respond_stream("text/event-stream")))
                }));
                (0..count).map(|_| drive(&mut service)).sum::<usize>()
            }
            other => panic!("LONG_LIVED_CASE: bare, layer, layer_unsized or sse, not {other:?}"),
        };
        black_box(seen);
        return;
    }
    benches();
    Criterion::default().configure_from_args().final_summary();
}
