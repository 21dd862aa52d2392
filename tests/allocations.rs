//! The combined layer allocates nothing per request in steady state.

use std::convert::Infallible;
use std::future::{ready, Future, Ready};
use std::pin::pin;
use std::task::{Context, Poll, Waker};

use bytes::Bytes;
use http::{Request, Response};
use http_body::Body;
use http_body_util::Full;
use tower::{service_fn, Layer, Service};
use tower_drain::Shutdown;

/// Drives one request to the end of its body without a runtime: the services here are ready
/// at once and their bodies hold one frame.
fn one_request<S, B>(service: &mut S)
where
    S: Service<Request<()>, Response = Response<B>>,
    S::Error: std::fmt::Debug,
    B: Body,
{
    let mut cx = Context::from_waker(Waker::noop());
    assert!(service.poll_ready(&mut cx).is_ready());
    let Poll::Ready(Ok(response)) = pin!(service.call(Request::new(()))).poll(&mut cx) else {
        panic!("the inner service answers at once");
    };
    let mut body = pin!(response.into_body());
    while let Poll::Ready(Some(frame)) = body.as_mut().poll_frame(&mut cx) {
        assert!(frame.is_ok());
    }
}

fn hello(_: Request<()>) -> Ready<Result<Response<Full<Bytes>>, Infallible>> {
    ready(Ok(Response::new(Full::new(Bytes::from_static(b"hello")))))
}

fn allocations_per_1000<S, B>(service: &mut S) -> u64
where
    S: Service<Request<()>, Response = Response<B>>,
    S::Error: std::fmt::Debug,
    B: Body,
{
    // Warm up: the first request on a thread takes its counter-slot ticket.
    one_request(service);
    allocation_counter::measure(|| {
        for _ in 0..1000 {
            one_request(service);
        }
    })
    .count_total
}

#[test]
fn combined_layer_allocates_nothing_per_request() {
    let shutdown = Shutdown::new();
    let mut bare = service_fn(hello);
    let mut layered = shutdown.layer().layer(service_fn(hello));

    let bare = allocations_per_1000(&mut bare);
    let layered = allocations_per_1000(&mut layered);
    assert_eq!(bare, 0, "the inner service itself allocates nothing");
    assert_eq!(layered, bare, "the layer added allocations");
    assert_eq!(shutdown.in_flight(), 0);
}

#[test]
fn cloning_the_layered_service_allocates_nothing() {
    // axum clones the route's service for every request.
    let shutdown = Shutdown::new();
    let layered = shutdown.layer().layer(service_fn(hello));
    let clones = allocation_counter::measure(|| {
        for _ in 0..1000 {
            let mut service = layered.clone();
            one_request(&mut service);
        }
    });
    assert_eq!(clones.count_total, 0);
}
