//! The demo server's HTTP surface (DESIGN §5) as an outside client sees it, byte for byte:
//! every route's status, content type and body, the answers to wrong methods, unknown paths
//! and bad query values, and what extreme values do to a shutdown.
//!
//! Needs the built example (`cargo test` builds it; for this file alone, run
//! `cargo build --example demo` first).

mod support;

use support::demo::*;

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
