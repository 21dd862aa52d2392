//! The demo server, driven from outside as a child process with real signals.
//!
//! Needs the built example (`cargo test` builds it; for this file alone, run
//! `cargo build --example demo` first). Every step waits on the demo's own output lines or
//! HTTP answers, each wait bounded.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use serde_json::Value;

/// Bound on every wait; only reached when something is broken.
const WAIT: Duration = Duration::from_secs(30);

fn demo_binary() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    // target/debug/deps/demo-<hash> → target/debug/examples/demo
    let debug = exe.parent().and_then(|deps| deps.parent()).unwrap();
    let binary = debug
        .join("examples")
        .join(format!("demo{}", std::env::consts::EXE_SUFFIX));
    assert!(
        binary.exists(),
        "{} is missing: run `cargo build --example demo` (plain `cargo test` builds it)",
        binary.display()
    );
    binary
}

/// A running demo: its address, and its output lines as they come.
struct Demo {
    child: Option<Child>,
    pid: u32,
    addr: SocketAddr,
    stderr: Receiver<String>,
    stderr_seen: Arc<Mutex<Vec<String>>>,
    stdout: Option<JoinHandle<Vec<String>>>,
}

/// How a demo ended.
struct Exit {
    code: Option<i32>,
    stdout: Vec<String>,
    stderr: Vec<String>,
}

impl Demo {
    fn start(args: &[&str]) -> Demo {
        let mut child = Command::new(demo_binary())
            .args(["--addr", "127.0.0.1:0"])
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("demo starts");
        let pid = child.id();
        let (stderr, stderr_seen) = lines_of(child.stderr.take().unwrap());
        let stdout = child.stdout.take().unwrap();
        let stdout = thread::spawn(move || {
            BufReader::new(stdout)
                .lines()
                .map_while(Result::ok)
                .collect()
        });
        let mut demo = Demo {
            child: Some(child),
            pid,
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            stderr,
            stderr_seen,
            stdout: Some(stdout),
        };
        let line = demo.wait_for("listening on http://");
        let addr = line.rsplit("http://").next().unwrap().trim();
        demo.addr = addr
            .parse()
            .unwrap_or_else(|_| panic!("address in {line:?}"));
        demo
    }

    /// The next stderr line containing `needle`.
    fn wait_for(&self, needle: &str) -> String {
        let deadline = Instant::now() + WAIT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.stderr.recv_timeout(left) {
                Ok(line) if line.contains(needle) => return line,
                Ok(_) => {}
                Err(error) => panic!(
                    "no line with {needle:?} ({error}); stderr so far:\n{}",
                    self.stderr_seen.lock().unwrap().join("\n")
                ),
            }
        }
    }

    fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .args([&format!("-{name}"), &self.pid.to_string()])
            .status()
            .expect("kill runs");
        assert!(status.success(), "kill -{name} {}", self.pid);
    }

    fn wait_exit(mut self) -> Exit {
        let mut child = self.child.take().unwrap();
        let (done, exited) = mpsc::channel();
        thread::spawn(move || {
            let _ = done.send(child.wait());
        });
        let status = match exited.recv_timeout(WAIT) {
            Ok(status) => status.unwrap(),
            Err(_) => {
                let _ = Command::new("kill")
                    .args(["-KILL", &self.pid.to_string()])
                    .status();
                panic!(
                    "demo did not exit; stderr:\n{}",
                    self.stderr_seen.lock().unwrap().join("\n")
                );
            }
        };
        let stdout = self.stdout.take().unwrap().join().unwrap();
        // The reader thread ends with the pipe; collect what it saw.
        while self.stderr.recv_timeout(WAIT).is_ok() {}
        let stderr = self.stderr_seen.lock().unwrap().clone();
        Exit {
            code: status.code(),
            stdout,
            stderr,
        }
    }
}

impl Drop for Demo {
    fn drop(&mut self) {
        // A failed test must not leave its demo running.
        if let Some(child) = &mut self.child {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn lines_of(pipe: impl Read + Send + 'static) -> (Receiver<String>, Arc<Mutex<Vec<String>>>) {
    let (send, receive) = mpsc::channel();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    thread::spawn(move || {
        for line in BufReader::new(pipe).lines().map_while(Result::ok) {
            log.lock().unwrap().push(line.clone());
            let _ = send.send(line);
        }
    });
    (receive, seen)
}

/// Sends `GET path` on a new connection; returns the raw response (status line, headers,
/// body as sent, chunked framing included), or the I/O error (refused, reset).
fn get(addr: SocketAddr, path: &str) -> std::io::Result<String> {
    let mut stream = open(addr, path)?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response)?;
    Ok(String::from_utf8_lossy(&response).into_owned())
}

fn open(addr: SocketAddr, path: &str) -> std::io::Result<TcpStream> {
    let mut stream = TcpStream::connect_timeout(&addr, WAIT)?;
    // A hang is a failure, never a wait for ever.
    stream.set_read_timeout(Some(WAIT))?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )?;
    Ok(stream)
}

fn status_of(response: &str) -> u16 {
    response
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {response:?}"))
}

fn body_of(response: &str) -> &str {
    response.split_once("\r\n\r\n").map_or("", |(_, body)| body)
}

/// A streaming request, read up to the line containing `first`: from then on it is
/// certainly in flight. The rest is read on a thread.
fn in_flight_stream(addr: SocketAddr, path: &str, first: &str) -> JoinHandle<String> {
    let stream = open(addr, path).expect("streaming request sent");
    let mut reader = BufReader::new(stream);
    let mut seen = String::new();
    while !seen.contains(first) {
        let read = reader.read_line(&mut seen).expect("stream answers");
        assert!(read > 0, "stream ended before {first:?}: {seen:?}");
    }
    thread::spawn(move || {
        let mut rest = Vec::new();
        // An aborted response ends in an error; what arrived before it is what counts.
        let _ = reader.read_to_end(&mut rest);
        seen + &String::from_utf8_lossy(&rest)
    })
}

fn json_report(exit: &Exit) -> Value {
    assert_eq!(
        exit.stdout.len(),
        1,
        "exactly one report line on stdout: {:?}",
        exit.stdout
    );
    serde_json::from_str(&exit.stdout[0]).expect("the report line is JSON")
}

fn count(lines: &[String], needle: &str) -> usize {
    lines.iter().filter(|line| line.contains(needle)).count()
}

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
    let slow = thread::spawn(move || get(addr, "/slow?ms=2000"));
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

#[test]
fn events_and_long_polls_end_when_the_drain_begins() {
    let demo = Demo::start(&["--lame-duck-ms", "1000", "--drain-timeout-ms", "20000"]);
    let addr = demo.addr;
    // Sent before the signal, so admitted at the latest during the lame-duck delay.
    let poll = thread::spawn(move || get(addr, "/poll?ms=60000"));
    let events = in_flight_stream(addr, "/events", "data: tick 0");
    demo.signal("TERM");

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
    let poll = poll.join().unwrap().expect("long poll answered");
    assert_eq!((status_of(&poll), body_of(&poll)), (200, "draining\n"));
    assert_eq!(demo.wait_exit().code, Some(0));
}

#[test]
fn bad_flags_and_plans_over_budget_are_refused_with_clear_errors() {
    let run = |args: &[&str]| {
        let output = Command::new(demo_binary())
            .args(args)
            .output()
            .expect("demo runs");
        (
            output.status.code(),
            String::from_utf8_lossy(&output.stderr).into_owned(),
        )
    };
    let (code, stderr) = run(&["--lame-duck-ms", "soon"]);
    assert_eq!(code, Some(2));
    assert!(
        stderr.contains("--lame-duck-ms: `soon` is not a whole number of milliseconds"),
        "{stderr}"
    );
    assert!(stderr.contains("usage: demo"), "{stderr}");

    let (code, stderr) = run(&["--frobnicate"]);
    assert_eq!(code, Some(2));
    assert!(stderr.contains("unknown flag `--frobnicate`"), "{stderr}");

    let (code, stderr) = run(&["--drain-timeout-ms", "60000"]);
    assert_eq!(code, Some(2));
    assert!(stderr.contains("drain timeout 60s"), "{stderr}");
    assert!(stderr.contains("over its budget of 25s"), "{stderr}");

    // Asking for help is not an error: the usage goes to stdout and the exit status is 0.
    let output = Command::new(demo_binary())
        .arg("--help")
        .output()
        .expect("demo runs");
    assert_eq!(output.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&output.stdout).starts_with("usage: demo"));
}
