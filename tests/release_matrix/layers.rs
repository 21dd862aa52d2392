//! Requests ended by the stack around them: a handler panic (caught or not), a timeout layer,
//! a load shedder, and the crate's own refusal while draining.

use crate::client::send;
use crate::servers::{start, EVERY};
use crate::stacks::{behind_door, Stack};
use crate::support::gate::Gate;
use crate::{drained, serve, App, LONG};
use tower_drain::Shutdown;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_handler_ends_its_count() {
    for stack in [
        Stack::Plain,
        Stack::CatchPanicOutside,
        Stack::CatchPanicInside,
    ] {
        for on in EVERY {
            let case = format!("{on}, {stack:?}");
            let (app, server) = serve(on, stack).await;
            let mut exchange = send(server.addr, on.1, "GET", "/release/panic").await;
            app.gate.entered(1).await;
            assert_eq!(app.shutdown.in_flight(), 1, "{case}");
            let drain = app.shutdown.drain(LONG).unwrap();
            app.gate.release(1);
            let status = exchange.status().await;
            if stack == Stack::Plain {
                assert!(status.is_err(), "{case}: an uncaught panic sends nothing");
            } else {
                assert_eq!(status, Ok(500), "{case}: a caught panic is a 500");
                exchange.rest().await.unwrap();
            }
            let report = drained(&case, drain, app.shutdown).await;
            assert_eq!(report.in_flight_at_start, 1, "{case}: {report}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_a_timeout_layer_gives_up_on_ends_its_count() {
    for (stack, status) in [
        (Stack::TowerTimeoutOutside, 500),
        (Stack::TowerTimeoutInside, 500),
        (Stack::HttpTimeoutOutside, 408),
        (Stack::HttpTimeoutInside, 408),
    ] {
        for on in EVERY {
            let case = format!("{on}, {stack:?}");
            let (app, server) = serve(on, stack).await;
            let mut exchange = send(server.addr, on.1, "GET", "/release/pending").await;
            assert_eq!(exchange.status().await, Ok(status), "{case}");
            exchange.rest().await.unwrap();
            assert_eq!(app.seen(), 1, "{case}: counted while running");
            drained(&case, app.shutdown.drain(LONG).unwrap(), app.shutdown).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_a_load_shedder_turns_away_ends_its_count() {
    for stack in [Stack::ShedOutside, Stack::ShedInside] {
        for on in EVERY {
            let case = format!("{on}, {stack:?}");
            let (app, server) = serve(on, stack).await;
            let mut held = send(server.addr, on.1, "GET", "/release/held").await;
            app.gate.entered(1).await;
            let mut shed = send(server.addr, on.1, "GET", "/release/full").await;
            assert_eq!(shed.status().await, Ok(500), "{case}: shed");
            shed.rest().await.unwrap();
            assert_eq!(app.shutdown.in_flight(), 1, "{case}: only the held one");
            let drain = app.shutdown.drain(LONG).unwrap();
            app.gate.release(1);
            assert_eq!(held.status().await, Ok(200), "{case}");
            assert_eq!(held.rest().await.unwrap(), b"done", "{case}");
            let report = drained(&case, drain, app.shutdown).await;
            assert_eq!(report.in_flight_at_start, 1, "{case}: {report}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_refused_while_draining_ends_its_count() {
    for on in EVERY {
        let app = App::new(Shutdown::new());
        let door = Gate::new();
        let server = start(on.0, app.shutdown, behind_door(app.clone(), door.clone())).await;
        let mut held = send(server.addr, on.1, "GET", "/release/held").await;
        door.entered(1).await;
        door.release(1);
        app.gate.entered(1).await;
        // Sent before admission closes, let in after: on a connection and a stream the
        // server's graceful shutdown leaves open.
        let mut refused = send(server.addr, on.1, "GET", "/release/full").await;
        door.entered(1).await;
        let drain = app.shutdown.drain(LONG).unwrap();
        door.release(1);
        assert_eq!(refused.status().await, Ok(503), "{on}");
        refused.rest().await.unwrap();
        assert_eq!(app.shutdown.rejected(), 1, "{on}");
        assert_eq!(app.shutdown.in_flight(), 1, "{on}: only the held one");
        app.gate.release(1);
        assert_eq!(held.status().await, Ok(200), "{on}");
        assert_eq!(held.rest().await.unwrap(), b"done", "{on}");
        let report = drained(on, drain, app.shutdown).await;
        assert_eq!(report.in_flight_at_start, 1, "{on}: {report}");
        assert_eq!(report.rejected, 1, "{on}: {report}");
    }
}
