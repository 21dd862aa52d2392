//! Two controllers on one path: a response tracked by one `Shutdown`'s layer is still tracked
//! by another's, and that other's drain asks it to finish. Registry entries of different
//! controllers share numbers, so a layer must never take another controller's entry for its own.

mod support;

use std::convert::Infallible;
use std::time::Duration;

use axum::response::sse::{Event, Sse};
use axum::routing::get;
use axum::Router;
use futures_util::stream::{self, StreamExt};
use support::bounded;
use support::http::serve_until_closing;
use support::sse::{open_until, parse_events, FINAL_EVENT};
use tower_drain::{DrainOutcome, LongLivedLayer, Shutdown};

const LONG: Duration = Duration::from_secs(60);

/// One `data: ready` event, then idle until something ends the stream.
async fn idle_events() -> Sse<impl futures_util::Stream<Item = Result<Event, Infallible>>> {
    let ready = stream::once(async { Ok(Event::default().data("ready")) });
    Sse::new(ready.chain(stream::pending()))
}

/// Drains `drained` and checks that the open event stream ended with one final event and a
/// clean end, that the drain did not wait for its timeout, and that both controllers' entries
/// leave with the body.
async fn drain_finishes_the_stream(app: Router, drained: Shutdown, other: Shutdown) {
    let server = serve_until_closing(app, drained).await;
    let reading = open_until(server.addr, "/events", b"data: ready\n\n").await;
    assert_eq!(drained.long_lived(), 1, "the drained controller tracks it");
    assert_eq!(other.long_lived(), 1, "the other controller tracks it too");

    let drain = drained.drain(LONG).unwrap();
    let reader = tokio::spawn(reading.finish());
    let report = bounded("the drain", drain).await;
    assert_eq!(report.outcome, DrainOutcome::Drained, "{report}");
    assert!(report.long_lived.is_empty(), "nothing was cut: {report}");

    let chunked = bounded("the client's read", reader).await.unwrap();
    assert!(chunked.terminated, "a clean chunked end");
    let (events, rest) = parse_events(&chunked.data);
    assert!(
        rest.is_empty(),
        "the stream ended inside an event: {rest:?}"
    );
    assert_eq!(events, ["data: ready", FINAL_EVENT]);
    // hyper drops a body as it ends, before it writes the chunked terminator.
    assert_eq!(
        drained.long_lived(),
        0,
        "the drained controller's entry left with the body"
    );
    assert_eq!(
        other.long_lived(),
        0,
        "the other controller's entry left with the body"
    );
    assert!(
        !other.phase().admission_closed(),
        "the other controller was left alone"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_stream_under_another_controllers_layer_finishes_on_this_ones_drain() {
    let (outer, inner) = (Shutdown::new(), Shutdown::new());
    let app = Router::new()
        .route("/events", get(idle_events))
        .layer(inner.layer())
        .layer(outer.layer());
    drain_finishes_the_stream(app, outer, inner).await;
    assert_eq!(outer.in_flight(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_marked_route_around_another_controllers_tracking_keeps_its_own_entry() {
    let (route_owner, detector) = (Shutdown::new(), Shutdown::new());
    let app = Router::new().route(
        "/events",
        get(idle_events)
            .layer::<_, Infallible>(LongLivedLayer::new(detector))
            .layer::<_, Infallible>(LongLivedLayer::route(route_owner)),
    );
    drain_finishes_the_stream(app, route_owner, detector).await;
}
