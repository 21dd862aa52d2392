//! Many requests with random cancellation leave the count at zero.

use std::convert::Infallible;
use std::future::{poll_fn, Future};
use std::pin::pin;
use std::task::Poll;
use std::time::Duration;

use bytes::Bytes;
use futures_util::{stream, FutureExt, StreamExt};
use http::{Request, Response};
use http_body::Frame;
use http_body_util::{BodyExt, StreamBody};
use tower::{service_fn, Layer, ServiceExt};
use tower_drain::{DrainOutcome, Shutdown};

const REQUESTS: u64 = 100_000;
const TASKS: u64 = 8;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_with_random_cancellation_leave_nothing_in_flight() {
    let shutdown = Shutdown::new();
    // Handlers yield a few times and answer with a few chunks, so cancellation can land in
    // the handler, between chunks, or not at all.
    let service = shutdown
        .layer()
        .layer(service_fn(|request: Request<u64>| async move {
            let yields = *request.body() % 3;
            for _ in 0..yields {
                tokio::task::yield_now().await;
            }
            let chunks = (0..3).map(|_| Ok::<_, Infallible>(Frame::data(Bytes::from_static(b"x"))));
            Ok::<_, Infallible>(Response::new(StreamBody::new(stream::iter(chunks).then(
                |chunk| async move {
                    tokio::task::yield_now().await;
                    chunk
                },
            ))))
        }));

    let tasks = (0..TASKS).map(|task| {
        let service = service.clone();
        tokio::spawn(async move {
            let mut rng = fastrand::Rng::with_seed(0x9E37_79B9_7F4A_7C15 ^ (task + 1));
            let mut finished = 0u64;
            for _ in 0..REQUESTS / TASKS {
                let call = service.clone().oneshot(Request::new(rng.u64(..3)));
                // Poll the call and then the body for a random number of steps; whatever is
                // left unfinished is dropped, which is the cancellation.
                let mut budget = rng.u64(..12);
                let mut call = pin!(call);
                let response = poll_fn(|cx| match call.as_mut().poll(cx) {
                    Poll::Pending if budget == 0 => Poll::Ready(None),
                    Poll::Pending => {
                        budget -= 1;
                        cx.waker().wake_by_ref();
                        Poll::Pending
                    }
                    Poll::Ready(result) => Poll::Ready(Some(result.unwrap())),
                })
                .await;
                let Some(response) = response else { continue };
                let mut body = pin!(response.into_body());
                while budget > 0 {
                    budget -= 1;
                    if body.frame().await.is_none() {
                        finished += 1;
                        break;
                    }
                }
            }
            finished
        })
    });
    let finished: u64 = futures_util::future::join_all(tasks)
        .await
        .into_iter()
        .map(Result::unwrap)
        .sum();
    assert!(
        finished > 0 && finished < REQUESTS,
        "both paths exercised: {finished}"
    );

    assert_eq!(shutdown.in_flight(), 0);
    let report = shutdown
        .drain(Duration::from_secs(10))
        .unwrap()
        .now_or_never()
        .expect("nothing left to wait for");
    assert_eq!(report.outcome, DrainOutcome::Drained);
    assert_eq!(report.in_flight_at_start, 0);
}
