//! A thousand idle SSE connections: the drain ends them all with the final event and
//! completes, and the long-lived count returns to zero.

mod support;

use std::time::Duration;

use support::http::serve_until_closing;
use support::raw::{decode_chunked, split_head};
use support::sse::{
    connections_allowed, idle_sse_app, open_idle_clients, parse_events, FINAL_EVENT,
};
use tokio::time::timeout;
use tower_drain::{DrainOutcome, Shutdown};

const LONG: Duration = Duration::from_secs(60);
/// Longer than the shared bound: a thousand connections open and close here.
const BOUND: Duration = Duration::from_secs(120);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousand_idle_sse_connections_all_get_final_event_and_drain_completes() {
    let count = connections_allowed(1_000);
    assert!(
        count >= 100,
        "the open-files limit leaves room for only {count} connections"
    );
    let shutdown = Shutdown::new();
    let server = serve_until_closing(idle_sse_app(shutdown), shutdown).await;
    let clients = timeout(BOUND, open_idle_clients(server.addr, count))
        .await
        .expect("every client connected and saw its first event");
    assert_eq!(shutdown.long_lived(), count);
    assert_eq!(shutdown.in_flight(), count);

    let report = timeout(BOUND, shutdown.drain(LONG).unwrap()).await.unwrap();
    assert_eq!(report.outcome, DrainOutcome::Drained);
    assert_eq!(report.in_flight_at_start, count);
    assert!(report.long_lived.is_empty(), "{report}");
    assert_eq!(shutdown.long_lived(), 0);
    assert_eq!(shutdown.in_flight(), 0);

    for client in clients {
        let raw = timeout(BOUND, client).await.unwrap().unwrap();
        let decoded = decode_chunked(split_head(&raw).1);
        assert!(decoded.terminated, "every stream ended cleanly");
        let (events, rest) = parse_events(&decoded.data);
        assert!(rest.is_empty());
        assert_eq!(events, ["data: ready", FINAL_EVENT]);
    }
    timeout(BOUND, server.task).await.unwrap().unwrap();
}
