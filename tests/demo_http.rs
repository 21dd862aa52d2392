//! The demo server's HTTP surface (DESIGN §5) as an outside client sees it, byte for byte:
//! every route's status, content type and body, the answers to wrong methods, unknown paths
//! and bad query values, and what extreme values do to a shutdown.
//!
//! Needs the built example (`cargo test` builds it; for this file alone, run
//! `cargo build --example demo` first).

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;

use support::demo::*;
use support::raw::{decode_chunked, split_head};

const TEXT: &str = "text/plain; charset=utf-8";

/// Status, content type and body of `GET path`, chunked framing decoded.
fn answer(demo: &Demo, path: &str) -> (u16, Option<String>, String) {
    let response = get(demo.addr, path).unwrap_or_else(|error| panic!("GET {path}: {error}"));
    let content_type = header_of(&response, "content-type").map(str::to_owned);
    let body = if header_of(&response, "transfer-encoding") == Some("chunked") {
        let chunked = decode_chunked(split_head(response.as_bytes()).1);
        assert!(chunked.terminated, "GET {path} ended cleanly: {response:?}");
        String::from_utf8(chunked.data).unwrap()
    } else {
        body_of(&response).to_owned()
    };
    (status_of(&response), content_type, body)
}

#[test]
fn every_route_answers_with_its_status_content_type_and_exact_body() {
    let demo = Demo::start(&["--lame-duck-ms", "0", "--drain-timeout-ms", "5000"]);
    let text = |status: u16, body: &str| (status, Some(TEXT.to_owned()), body.to_owned());

    assert_eq!(answer(&demo, "/"), text(200, "ok\n"));
    assert_eq!(answer(&demo, "/slow?ms=1"), text(200, "slow 1\n"));
    assert_eq!(answer(&demo, "/slow?ms=0"), text(200, "slow 0\n"));
    assert_eq!(
        answer(&demo, "/stream?chunks=3&interval_ms=0"),
        text(200, "chunk 0\nchunk 1\nchunk 2\n"),
        "text, chunks counted from 0 like the events' ticks"
    );
    assert_eq!(
        answer(&demo, "/stream?chunks=0&interval_ms=0"),
        text(200, "")
    );
    assert_eq!(answer(&demo, "/poll?ms=1"), text(200, "timeout\n"));
    assert_eq!(answer(&demo, "/poll?ms=0"), text(200, "timeout\n"));
    assert_eq!(answer(&demo, "/readyz"), text(200, "ready\n"));
    assert_eq!(answer(&demo, "/livez"), text(200, "alive\n"));

    let events = in_flight_stream(demo.addr, "/events", "data: tick 1");
    demo.signal("TERM");
    let events = events.join().unwrap();
    assert_eq!(
        header_of(&events, "content-type"),
        Some("text/event-stream")
    );
    let events = decode_chunked(split_head(events.as_bytes()).1);
    assert!(
        String::from_utf8(events.data)
            .unwrap()
            .starts_with("data: tick 0\n\ndata: tick 1\n\n"),
        "ticks counted from 0, one event each"
    );
    assert_eq!(demo.wait_exit().code, Some(0));
}

#[test]
fn wrong_methods_unknown_paths_and_bad_query_values_are_client_errors() {
    let demo = Demo::start(&["--lame-duck-ms", "0", "--drain-timeout-ms", "0"]);
    let addr = demo.addr;

    let head = request(addr, "HEAD", "/").unwrap();
    assert_eq!(status_of(&head), 200, "{head}");
    assert_eq!(header_of(&head, "content-length"), Some("3"));
    assert_eq!(body_of(&head), "", "HEAD has no body");
    let post = request(addr, "POST", "/").unwrap();
    assert_eq!(status_of(&post), 405, "{post}");
    assert_eq!(header_of(&post, "allow"), Some("GET,HEAD"));
    assert_eq!(status_of(&get(addr, "/nowhere").unwrap()), 404);

    for path in [
        "/slow",
        "/slow?ms=",
        "/slow?ms=-1",
        "/slow?ms=soon",
        "/slow?ms=18446744073709551616",
        "/stream?chunks=2",
        "/stream?chunks=-2&interval_ms=0",
        "/stream?chunks=2&interval_ms=x",
        "/poll",
        "/poll?ms=1.5",
    ] {
        let response = get(addr, path).unwrap();
        assert_eq!(status_of(&response), 400, "GET {path}: {response}");
        assert!(
            body_of(&response).contains("query string"),
            "GET {path} says what is wrong: {response}"
        );
    }

    demo.signal("TERM");
    let exit = demo.wait_exit();
    assert_eq!(exit.code, Some(0), "none of them was left in flight");
}

/// The largest values the query accepts put no bound of their own on a request; the drain
/// timeout does: the shutdown cuts them and ends on time, with exit status 1.
#[test]
fn the_largest_query_values_are_cut_by_the_drain_timeout() {
    let demo = Demo::start(&["--lame-duck-ms", "0", "--drain-timeout-ms", "300", "--json"]);
    let addr = demo.addr;
    let endless = in_flight_stream(addr, "/stream?chunks=4294967296&interval_ms=0", "chunk 2");
    let stalled = in_flight_stream(
        addr,
        "/stream?chunks=2&interval_ms=18446744073709551615",
        "chunk 0",
    );
    demo.signal("TERM");

    let exit = demo.wait_exit();
    assert_eq!(exit.code, Some(1));
    let report = json_report(&exit);
    assert_eq!(report["drain"]["outcome"], "timed_out", "{report}");
    assert_eq!(report["drain"]["still_running"], 2, "{report}");
    assert!(!endless.join().unwrap().ends_with("0\r\n\r\n"));
    assert!(!stalled.join().unwrap().contains("chunk 1"));
}

/// A request whose head was still arriving when admission closed is answered, not dropped:
/// 503 with `Retry-After` and `Connection: close`, so the client retries elsewhere.
#[test]
fn a_request_completed_after_admission_closed_gets_503_retry_after_and_connection_close() {
    let demo = Demo::start(&["--lame-duck-ms", "1000", "--drain-timeout-ms", "1000"]);
    let mut client = TcpStream::connect(demo.addr).unwrap();
    client.set_read_timeout(Some(WAIT)).unwrap();
    // Half a request head, read by the server during the lame-duck delay at the latest.
    client.write_all(b"GET /slow?ms=1 HTTP/1.1\r\nHo").unwrap();
    demo.signal("TERM");
    demo.wait_for("admission closed");
    client.write_all(b"st: demo\r\n\r\n").unwrap();

    let mut response = String::new();
    client.read_to_string(&mut response).unwrap();
    assert_eq!(status_of(&response), 503, "{response}");
    assert_eq!(header_of(&response, "retry-after"), Some("1"), "{response}");
    assert_eq!(
        header_of(&response, "connection"),
        Some("close"),
        "{response}"
    );
    assert_eq!(demo.wait_exit().code, Some(0));
}

/// The probes in every phase, as an orchestrator sees them: `/readyz` answers 503
/// `shutting down` from the lame duck on, draining included, and `/livez` 200 `alive`
/// throughout. Probes are never refused nor counted: one whose head completes after
/// admission closed is answered by the probe itself, not with the layer's 503.
#[test]
fn probes_answer_in_every_phase_and_are_never_refused_nor_counted() {
    let demo = Demo::start(&[
        "--lame-duck-ms",
        "1000",
        "--drain-timeout-ms",
        "20000",
        "--json",
    ]);
    let text = |status: u16, body: &str| (status, Some(TEXT.to_owned()), body.to_owned());
    assert_eq!(answer(&demo, "/readyz"), text(200, "ready\n"));
    assert_eq!(answer(&demo, "/livez"), text(200, "alive\n"));

    demo.signal("TERM");
    demo.wait_for("shutdown began: lame duck");
    assert_eq!(answer(&demo, "/readyz"), text(503, "shutting down\n"));
    assert_eq!(answer(&demo, "/livez"), text(200, "alive\n"));
    // Half a request head each, read by the server during the lame duck; the rest is sent
    // once admission has closed.
    let probes: Vec<_> = ["/readyz", "/livez"]
        .into_iter()
        .map(|path| {
            let mut client = TcpStream::connect(demo.addr).unwrap();
            client.set_read_timeout(Some(WAIT)).unwrap();
            write!(client, "GET {path} HTTP/1.1\r\nHo").unwrap();
            (path, client)
        })
        .collect();
    demo.wait_for("admission closed");

    let mut answers = Vec::new();
    for (path, mut client) in probes {
        client.write_all(b"st: demo\r\n\r\n").unwrap();
        let mut response = String::new();
        client.read_to_string(&mut response).unwrap();
        answers.push((path, status_of(&response), body_of(&response).to_owned()));
    }
    assert_eq!(
        answers,
        [
            ("/readyz", 503, "shutting down\n".to_owned()),
            ("/livez", 200, "alive\n".to_owned()),
        ]
    );

    let exit = demo.wait_exit();
    assert_eq!(exit.code, Some(0));
    let report = json_report(&exit);
    assert_eq!(report["drain"]["in_flight_at_start"], 0, "{report}");
    assert_eq!(report["drain"]["rejected"], 0, "{report}");
}
