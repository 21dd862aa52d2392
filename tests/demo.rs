//! The demo server's shutdown timeline, driven from outside as a child process with real
//! signals.
//!
//! Needs the built example (`cargo test` builds it; for this file alone, run
//! `cargo build --example demo` first). Every step waits on the demo's own output lines or
//! HTTP answers, each wait bounded.

mod support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};

use serde_json::Value;
use support::demo::*;

#[test]
fn requests_in_flight_at_sigterm_complete_and_the_demo_exits_zero_with_a_json_report() {
    let demo = Demo::start(&[
        "--lame-duck-ms",
        "1000",
        "--drain-timeout-ms",
        "20000",
        "--json",
    ]);
    let addr = demo.addr;
    // Certainly in flight: its first chunk has arrived.
    let stream = in_flight_stream(addr, "/stream?chunks=3&interval_ms=1000", "chunk 0");
    // Sent before the signal, so admitted at the latest during the lame-duck delay.
    let slow = sent(addr, "/slow?ms=2000");
    demo.signal("TERM");

    let slow = slow.join().unwrap().expect("slow request answered");
    assert_eq!(status_of(&slow), 200, "{slow}");
    assert_eq!(body_of(&slow), "slow 2000\n");
    let stream = stream.join().unwrap();
    assert!(stream.starts_with("HTTP/1.1 200"), "{stream}");
    assert!(
        stream.contains("chunk 2\n"),
        "every chunk arrived: {stream}"
    );
    assert!(
        stream.ends_with("0\r\n\r\n"),
        "the body ended cleanly: {stream:?}"
    );

    let exit = demo.wait_exit();
    assert_eq!(exit.code, Some(0));
    let report = json_report(&exit);
    assert_eq!(report["trigger"], "SIGTERM");
    assert_eq!(report["forced_by"], Value::Null);
    assert_eq!(report["drain"]["outcome"], "drained");
    assert_eq!(report["drain"]["still_running"], 0);
    assert_eq!(
        report["drain"]["completed"],
        report["drain"]["in_flight_at_start"]
    );
    let hooks: Vec<_> = report["hooks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|hook| {
            (
                hook["name"].as_str().unwrap(),
                hook["outcome"]["status"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        hooks,
        [("database pool", "ok"), ("background worker", "ok")]
    );
}

#[test]
fn readiness_turns_503_before_requests_stop_and_late_requests_are_refused() {
    let demo = Demo::start(&["--lame-duck-ms", "3000", "--drain-timeout-ms", "20000"]);
    let addr = demo.addr;
    assert_eq!(status_of(&get(addr, "/readyz").unwrap()), 200);
    // Keeps the server draining (and so up) past the lame-duck delay.
    let stream = in_flight_stream(addr, "/stream?chunks=2&interval_ms=5000", "chunk 0");

    demo.signal("TERM");
    demo.wait_for("shutdown began: lame duck");
    let readyz = get(addr, "/readyz").unwrap();
    assert_eq!(
        (status_of(&readyz), body_of(&readyz)),
        (503, "shutting down\n")
    );
    let root = get(addr, "/").unwrap();
    assert_eq!(
        (status_of(&root), body_of(&root)),
        (200, "ok\n"),
        "still served in the lame-duck delay"
    );
    assert_eq!(status_of(&get(addr, "/livez").unwrap()), 200);

    demo.wait_for("admission closed");
    match get(addr, "/") {
        Ok(response) => assert_eq!(status_of(&response), 503, "{response}"),
        Err(error) => assert!(
            matches!(
                error.kind(),
                std::io::ErrorKind::ConnectionRefused | std::io::ErrorKind::ConnectionReset
            ),
            "refused, not hung: {error:?}"
        ),
    }

    assert!(stream.join().unwrap().contains("chunk 1\n"));
    let exit = demo.wait_exit();
    assert_eq!(exit.code, Some(0));
    assert!(
        exit.stdout
            .iter()
            .any(|line| line.contains("shutdown on SIGTERM")),
        "{:?}",
        exit.stdout
    );
}

#[test]
fn a_drain_timeout_shorter_than_a_request_in_flight_exits_one() {
    let demo = Demo::start(&["--lame-duck-ms", "0", "--drain-timeout-ms", "300", "--json"]);
    let stream = in_flight_stream(demo.addr, "/stream?chunks=2&interval_ms=60000", "chunk 0");
    demo.signal("TERM");

    let exit = demo.wait_exit();
    assert_eq!(exit.code, Some(1));
    let report = json_report(&exit);
    assert_eq!(report["drain"]["outcome"], "timed_out");
    assert_eq!(report["drain"]["forced"], false);
    assert_eq!(report["drain"]["still_running"], 1, "{report}");
    let stream = stream.join().unwrap();
    assert!(
        !stream.contains("chunk 1"),
        "the response was cut: {stream}"
    );
    assert!(
        !stream.ends_with("0\r\n\r\n"),
        "a cut response does not end cleanly: {stream:?}"
    );
}

/// Zero lame duck and zero drain timeout on an idle demo: "do not wait" cuts nothing, so the
/// drain is `Drained` and the demo exits 0, every time (its background worker is closed by
/// its hook, not counted in flight).
#[test]
fn an_idle_demo_with_zero_timeouts_drains_and_exits_zero() {
    for round in 0..5 {
        let demo = Demo::start(&["--lame-duck-ms", "0", "--drain-timeout-ms", "0", "--json"]);
        demo.signal("TERM");
        let exit = demo.wait_exit();
        let report = json_report(&exit);
        assert_eq!(exit.code, Some(0), "round {round}: {report}");
        assert_eq!(report["drain"]["outcome"], "drained", "round {round}");
        assert_eq!(report["drain"]["in_flight_at_start"], 0, "round {round}");
    }
}

/// SIGINT (Ctrl-C) runs the same timeline as SIGTERM, one log line per phase, in order.
/// (A lame duck of zero would skip its phase and its line.)
#[test]
fn sigint_runs_the_timeline_with_a_log_line_per_phase() {
    let demo = Demo::start(&["--lame-duck-ms", "1", "--drain-timeout-ms", "0", "--json"]);
    demo.signal("INT");
    let exit = demo.wait_exit();
    assert_eq!(exit.code, Some(0));
    assert_eq!(json_report(&exit)["trigger"], "SIGINT");
    let phases = [
        "shutdown triggered",
        "shutdown began: lame duck",
        "admission closed",
        "drained: every admitted request has finished",
        "clean-up hook done hook=database pool",
        "clean-up hook done hook=background worker",
        "shutdown sequence complete",
    ];
    let at: Vec<_> = phases
        .iter()
        .map(|phase| {
            let found = exit.stderr.iter().position(|line| line.contains(phase));
            found.unwrap_or_else(|| panic!("no {phase:?} line: {:#?}", exit.stderr))
        })
        .collect();
    assert!(at.is_sorted(), "in order: {:#?}", exit.stderr);
}

#[test]
fn a_second_sigterm_forces_and_the_sequence_runs_once() {
    let demo = Demo::start(&[
        "--lame-duck-ms",
        "10000",
        "--drain-timeout-ms",
        "10000",
        "--json",
    ]);
    let stream = in_flight_stream(demo.addr, "/stream?chunks=2&interval_ms=60000", "chunk 0");
    demo.signal("TERM");
    demo.wait_for("shutdown began: lame duck");
    demo.signal("TERM");
    demo.signal("TERM");

    let exit = demo.wait_exit();
    assert_eq!(exit.code, Some(1), "the forced drain cut the stream");
    let report = json_report(&exit);
    assert_eq!(report["forced_by"], "SIGTERM");
    assert_eq!(report["drain"]["forced"], true);
    assert_eq!(report["drain"]["outcome"], "timed_out");
    assert_eq!(
        count(&exit.stderr, "shutdown triggered"),
        1,
        "{:#?}",
        exit.stderr
    );
    assert_eq!(
        count(&exit.stderr, "second trigger: forcing"),
        1,
        "{:#?}",
        exit.stderr
    );
    assert_eq!(
        count(&exit.stderr, "shutdown sequence complete"),
        1,
        "{:#?}",
        exit.stderr
    );
    assert_eq!(
        count(&exit.stderr, "database pool closed"),
        1,
        "hooks run once, forced or not"
    );
    assert!(!stream.join().unwrap().contains("chunk 1"));
}

/// A second signal once admission has closed cuts what is still running then, rather than
/// at the drain timeout: the report names both signals and says the drain was forced, the
/// cut response ends without its terminator, the hooks still run, and the exit status is 1.
#[test]
fn a_second_signal_while_draining_cuts_what_is_left_and_exits_one() {
    let demo = Demo::start(&[
        "--lame-duck-ms",
        "0",
        "--drain-timeout-ms",
        "20000",
        "--json",
    ]);
    let stream = in_flight_stream(demo.addr, "/stream?chunks=2&interval_ms=60000", "chunk 0");
    demo.signal("TERM");
    demo.wait_for("admission closed");
    demo.signal("INT");

    let exit = demo.wait_exit();
    assert_eq!(exit.code, Some(1), "{:#?}", exit.stderr);
    let report = json_report(&exit);
    assert_eq!(report["trigger"], "SIGTERM", "{report}");
    assert_eq!(report["forced_by"], "SIGINT", "{report}");
    assert_eq!(report["drain"]["outcome"], "timed_out", "{report}");
    assert_eq!(report["drain"]["forced"], true, "{report}");
    assert_eq!(report["drain"]["in_flight_at_start"], 1, "{report}");
    assert_eq!(report["drain"]["still_running"], 1, "{report}");
    let hooks: Vec<_> = report["hooks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|hook| hook["outcome"]["status"].as_str().unwrap())
        .collect();
    assert_eq!(hooks, ["ok", "ok"], "{report}");
    let stream = stream.join().unwrap();
    assert!(!stream.contains("chunk 1"), "{stream}");
    assert!(
        !stream.ends_with("0\r\n\r\n"),
        "a cut response does not end cleanly: {stream:?}"
    );
}

/// A connection the server still holds after a drain that cut nothing (here an HTTP/2
/// client that never answers the GOAWAY, closed by the server only at the drain deadline)
/// is waited for a bounded time, then left: the demo says so and still exits 0.
#[test]
fn a_connection_still_open_after_a_clean_drain_is_left_and_the_exit_status_is_zero() {
    let demo = Demo::start(&[
        "--lame-duck-ms",
        "0",
        "--drain-timeout-ms",
        "20000",
        "--json",
    ]);
    let stalled = stalled_http2_connection(demo.addr);
    demo.signal("TERM");

    let exit = demo.wait_exit();
    assert_eq!(exit.code, Some(0), "{:#?}", exit.stderr);
    assert_eq!(json_report(&exit)["drain"]["outcome"], "drained");
    assert_eq!(
        count(&exit.stderr, "exiting anyway"),
        1,
        "the wait for the connection ran out: {:#?}",
        exit.stderr
    );
    drop(stalled);
}

#[test]
fn events_and_long_polls_end_when_the_drain_begins() {
    let demo = Demo::start(&["--lame-duck-ms", "1000", "--drain-timeout-ms", "20000"]);
    let addr = demo.addr;
    // Sent before the signal, so admitted at the latest during the lame-duck delay.
    // The longest poll there is: only the drain ends it.
    let poll = sent(addr, "/poll?ms=18446744073709551615");
    let events = in_flight_stream(addr, "/events", "data: tick 0");
    demo.signal("TERM");
    // Admitted while readiness already fails: they end the same way.
    demo.wait_for("shutdown began: lame duck");
    let late_poll = sent(addr, "/poll?ms=60000");
    let late_events = in_flight_stream(addr, "/events", "data: tick 0");

    for events in [events, late_events] {
        let events = events.join().unwrap();
        assert!(events.starts_with("HTTP/1.1 200"), "{events}");
        assert!(events.contains("text/event-stream"), "{events}");
        assert!(
            events.contains("event: shutdown\ndata: draining\nretry: 1000\n\n"),
            "a final event with a retry hint: {events}"
        );
        assert!(
            events.ends_with("0\r\n\r\n"),
            "then the stream ends cleanly: {events:?}"
        );
    }
    for poll in [poll, late_poll] {
        let poll = poll.join().unwrap().expect("long poll answered");
        assert_eq!((status_of(&poll), body_of(&poll)), (200, "draining\n"));
    }
    assert_eq!(demo.wait_exit().code, Some(0));
}

/// A report that cannot be printed (stdout closed, its reader gone) goes to the log instead,
/// and changes neither the exit status nor the wait for connections.
#[test]
fn a_closed_stdout_costs_neither_the_report_nor_the_exit_status() {
    let demo = Demo::start_with_stdout_closed(&[
        "--lame-duck-ms",
        "0",
        "--drain-timeout-ms",
        "0",
        "--json",
    ]);
    demo.signal("TERM");

    let exit = demo.wait_exit();
    assert_eq!(exit.code, Some(0), "{:#?}", exit.stderr);
    assert_eq!(count(&exit.stderr, "panicked"), 0, "{:#?}", exit.stderr);
    let logged: Vec<_> = exit
        .stderr
        .iter()
        .filter(|line| line.contains("could not print the report"))
        .collect();
    assert_eq!(logged.len(), 1, "{:#?}", exit.stderr);
    assert!(
        logged[0].contains(r#"report="{\"trigger\":\"SIGTERM\""#),
        "the report is in the log line: {logged:?}"
    );
}

/// A caller that reads the banner for the address and then closes the demo's stderr (a
/// pipe into `head`, a harness done with it) leaves every later log line unwritable: the
/// shutdown still runs its course, prints its report and exits with its own status.
#[test]
fn a_stderr_closed_after_the_banner_costs_neither_the_shutdown_nor_the_exit_status() {
    let demo = Demo::start_with_stderr_closed_after_banner(&[
        "--lame-duck-ms",
        "1",
        "--drain-timeout-ms",
        "1000",
        "--json",
    ]);
    let stream = in_flight_stream(demo.addr, "/stream?chunks=2&interval_ms=100", "chunk 0");
    demo.signal("TERM");

    assert!(
        stream.join().unwrap().ends_with("0\r\n\r\n"),
        "served to the end"
    );
    let exit = demo.wait_exit();
    assert_eq!(exit.code, Some(0));
    let report = json_report(&exit);
    assert_eq!(report["trigger"], "SIGTERM", "{report}");
    assert_eq!(report["drain"]["outcome"], "drained", "{report}");
    assert_eq!(report["drain"]["in_flight_at_start"], 1, "{report}");
}

/// A stderr whose reader is gone before the demo writes its banner (`demo 2>&1 | head -1`
/// can leave while the banner is still being written): the demo serves and shuts down all
/// the same, with its report and its own exit status.
#[test]
fn a_stderr_closed_before_the_banner_costs_neither_serving_nor_the_exit_status() {
    let demo = Demo::start_with_stderr_closed(&[
        "--lame-duck-ms",
        "0",
        "--drain-timeout-ms",
        "0",
        "--json",
    ]);
    demo.signal("TERM");

    let exit = demo.wait_exit();
    assert_eq!(exit.code, Some(0));
    let report = json_report(&exit);
    assert_eq!(report["trigger"], "SIGTERM", "{report}");
    assert_eq!(report["drain"]["outcome"], "drained", "{report}");
}

/// After its report the demo waits, up to 5 s, for the server's connections to close; a
/// further signal ends that wait at once, as a second signal forces every other step. The
/// drain deadline, at which the server would close the stalled connection itself and end
/// the wait, comes after those 5 s, so only the signal can end the wait early.
#[test]
fn a_signal_while_connections_are_closing_exits_at_once() {
    let demo = Demo::start(&[
        "--lame-duck-ms",
        "0",
        "--drain-timeout-ms",
        "10000",
        "--json",
    ]);
    let _stalled = stalled_http2_connection(demo.addr);
    demo.signal("TERM");
    demo.wait_for_stdout("\"trigger\":\"SIGTERM\"");
    demo.signal("INT");

    let exit = demo.wait_exit();
    assert_eq!(exit.code, Some(0), "nothing in flight was cut");
    assert_eq!(json_report(&exit)["drain"]["outcome"], "drained");
    let forced: Vec<_> = exit
        .stderr
        .iter()
        .filter(|line| line.contains("exiting without waiting"))
        .collect();
    assert_eq!(forced.len(), 1, "{:#?}", exit.stderr);
    assert!(forced[0].contains("SIGINT"), "{forced:?}");
    assert_eq!(
        count(&exit.stderr, "exiting anyway"),
        0,
        "the wait did not run out: {:#?}",
        exit.stderr
    );
}

/// A forced shutdown is in a hurry to the end: even when nothing was cut, the server closes
/// the connections it still holds at once (here one whose client never answers the GOAWAY),
/// rather than leaving the demo to wait for them.
#[test]
fn a_forced_shutdown_closes_the_connections_left_at_once() {
    let demo = Demo::start(&[
        "--lame-duck-ms",
        "10000",
        "--drain-timeout-ms",
        "1000",
        "--json",
    ]);
    let stalled = stalled_http2_connection(demo.addr);
    demo.signal("TERM");
    demo.wait_for("shutdown began: lame duck");
    demo.signal("TERM");

    let exit = demo.wait_exit();
    assert_eq!(exit.code, Some(0), "nothing in flight was cut");
    let report = json_report(&exit);
    assert_eq!(report["forced_by"], "SIGTERM", "{report}");
    assert_eq!(report["drain"]["outcome"], "drained", "{report}");
    assert_eq!(
        count(&exit.stderr, "exiting anyway"),
        0,
        "the server closed its connections itself: {:#?}",
        exit.stderr
    );
    drop(stalled);
}

/// An event stream the server cannot send on (its HTTP/2 client grants no flow-control
/// window) cannot end with its final event when the drain begins, and is cut at the
/// long-lived deadline; its client then goes. Everything counted has finished, so the
/// drain ends `Drained`, but something was cut: the report lists it and the exit status
/// is 1, not 0.
#[test]
fn an_event_stream_cut_at_the_long_lived_deadline_exits_one_though_the_drain_drained() {
    let demo = Demo::start(&[
        "--lame-duck-ms",
        "0",
        "--drain-timeout-ms",
        "4000",
        "--json",
    ]);
    let client = windowless_http2_events(demo.addr);
    demo.signal("TERM");
    demo.wait_for("long-lived deadline passed");
    drop(client);

    let exit = demo.wait_exit();
    assert_eq!(exit.code, Some(1), "{:#?}", exit.stderr);
    let report = json_report(&exit);
    assert_eq!(report["drain"]["outcome"], "drained", "{report}");
    assert_eq!(report["drain"]["still_running"], 0, "{report}");
    let cut = report["drain"]["long_lived"].as_array().unwrap();
    assert_eq!(cut.len(), 1, "{report}");
    assert_eq!(cut[0]["kind"], "sse", "{report}");
}

/// Opens an HTTP/2 connection (prior knowledge, raw frames) whose flow-control window for
/// streams is zero, sends `GET /events` on it and returns once the response's head has
/// arrived: the stream is in flight, and the server can send none of its body.
fn windowless_http2_events(addr: SocketAddr) -> TcpStream {
    // SETTINGS: INITIAL_WINDOW_SIZE (0x4) = 0.
    const NO_WINDOW: [u8; 15] = [0, 0, 6, 4, 0, 0, 0, 0, 0, 0, 4, 0, 0, 0, 0];
    // HEADERS on stream 1, END_STREAM | END_HEADERS: `:method: GET` and `:scheme: http`
    // from HPACK's static table, `:path: /events` as a literal with an indexed name.
    const GET_EVENTS: [u8; 20] = [
        0, 0, 11, 1, 0x5, 0, 0, 0, 1, 0x82, 0x86, 0x04, 7, b'/', b'e', b'v', b'e', b'n', b't', b's',
    ];
    // The head: a HEADERS frame.
    raw_http2_until(addr, &NO_WINDOW, &GET_EVENTS, |kind, _| kind == 1)
}

/// Opens an HTTP/2 connection (prior knowledge, raw frames), has `GET /` answered on it,
/// and returns it unread from then on: the server's graceful close waits for an answer to
/// the ping it sends with its GOAWAY, which never comes, so the connection stays open.
fn stalled_http2_connection(addr: SocketAddr) -> TcpStream {
    const EMPTY_SETTINGS: [u8; 9] = [0, 0, 0, 4, 0, 0, 0, 0, 0];
    // HEADERS on stream 1, END_STREAM | END_HEADERS; from HPACK's static table:
    // `:method: GET`, `:scheme: http`, `:path: /`.
    const GET_ROOT: [u8; 12] = [0, 0, 3, 1, 0x5, 0, 0, 0, 1, 0x82, 0x86, 0x84];
    // The answer's last frame: DATA or HEADERS with END_STREAM.
    raw_http2_until(addr, &EMPTY_SETTINGS, &GET_ROOT, |kind, flags| {
        kind <= 1 && flags & 0x1 != 0
    })
}

/// Opens an HTTP/2 connection (prior knowledge), sends `settings` and `request` (stream 1)
/// as raw frames, and reads until a frame on stream 1 whose type and flags satisfy `until`.
fn raw_http2_until(
    addr: SocketAddr,
    settings: &[u8],
    request: &[u8],
    until: impl Fn(u8, u8) -> bool,
) -> TcpStream {
    const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
    let mut stream = TcpStream::connect_timeout(&addr, WAIT).unwrap();
    stream.set_read_timeout(Some(WAIT)).unwrap();
    stream
        .write_all(&[PREFACE, settings, request].concat())
        .unwrap();
    let mut received = Vec::new();
    let mut buffer = [0u8; 4096];
    // Bounded: the answer comes in a few small frames.
    for _ in 0..64 {
        if frame_on_stream_1(&received, &until) {
            return stream;
        }
        let read = stream.read(&mut buffer).unwrap();
        assert_ne!(read, 0, "connection closed before the frame: {received:?}");
        received.extend_from_slice(&buffer[..read]);
    }
    panic!("no such frame on stream 1: {received:?}");
}

/// True once the frames in `bytes` include one on stream 1 whose type and flags satisfy
/// `wanted`.
fn frame_on_stream_1(mut bytes: &[u8], wanted: impl Fn(u8, u8) -> bool) -> bool {
    while bytes.len() >= 9 {
        let length =
            usize::from(bytes[0]) << 16 | usize::from(bytes[1]) << 8 | usize::from(bytes[2]);
        let (kind, flags) = (bytes[3], bytes[4]);
        let stream_id = u32::from_be_bytes([bytes[5], bytes[6], bytes[7], bytes[8]]) & 0x7fff_ffff;
        if stream_id == 1 && wanted(kind, flags) {
            return true;
        }
        bytes = bytes.get(9 + length..).unwrap_or_default();
    }
    false
}
