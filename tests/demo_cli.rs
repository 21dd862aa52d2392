//! The demo server's command line (DESIGN §5): its flags, the errors for bad ones (exit
//! status 2, nothing served), `--help`, and the commands its banner suggests.
//!
//! Needs the built example (`cargo test` builds it; for this file alone, run
//! `cargo build --example demo` first).

mod support;

use std::ffi::OsStr;
use std::net::TcpListener;
use std::process::{Command, Output, Stdio};

use support::demo::*;

/// Runs the demo with `args` to its end; it must end by itself, without a signal.
fn run<I, S>(args: I) -> Output
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    Command::new(demo_binary())
        .args(args)
        .output()
        .expect("demo runs")
}

/// Exit status and stderr of a run that must not serve.
fn refused<I, S>(args: I) -> (Option<i32>, String)
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let output = run(args);
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(
        !stderr.contains("listening on"),
        "nothing is served: {stderr}"
    );
    assert!(output.stdout.is_empty(), "no report: {stderr}");
    (output.status.code(), stderr)
}

#[test]
fn bad_flags_and_plans_over_budget_are_refused_with_clear_errors() {
    let (code, stderr) = refused(["--lame-duck-ms", "soon"]);
    assert_eq!(code, Some(2));
    assert!(
        stderr.contains("--lame-duck-ms: `soon` is not a whole number of milliseconds"),
        "{stderr}"
    );
    assert!(stderr.contains("usage: demo"), "{stderr}");

    let (code, stderr) = refused(["--drain-timeout-ms", "18446744073709551616"]);
    assert_eq!(code, Some(2));
    assert!(
        stderr.contains("`18446744073709551616` is not a whole number of milliseconds"),
        "{stderr}"
    );

    let (code, stderr) = refused(["--frobnicate"]);
    assert_eq!(code, Some(2));
    assert!(stderr.contains("unknown flag `--frobnicate`"), "{stderr}");

    let (code, stderr) = refused(["--addr"]);
    assert_eq!(code, Some(2));
    assert!(stderr.contains("--addr needs a value"), "{stderr}");

    let (code, stderr) = refused(["--addr", "localhost:3000"]);
    assert_eq!(code, Some(2));
    assert!(
        stderr.contains("`localhost:3000` is not an address like 127.0.0.1:3000"),
        "{stderr}"
    );

    let (code, stderr) = refused(["--drain-timeout-ms", "60000"]);
    assert_eq!(code, Some(2));
    assert!(stderr.contains("drain timeout 60s"), "{stderr}");
    assert!(stderr.contains("over its budget of 25s"), "{stderr}");
}

/// A refusal whose message cannot be written (stderr's reader already gone) still exits
/// with status 2, not in a panic.
#[test]
fn a_refusal_with_stderr_closed_still_exits_two() {
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    for args in [
        vec!["--frobnicate"],
        vec!["--drain-timeout-ms", "60000"],
        vec!["--addr", &addr],
    ] {
        let mut child = Command::new(demo_binary())
            .args(&args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("demo runs");
        // Closed before the demo has parsed its flags, let alone written a word.
        drop(child.stderr.take());
        assert_eq!(child.wait().unwrap().code(), Some(2), "{args:?}");
    }
}

/// `--json` is a switch: given a value, the error says so instead of calling the flag unknown.
#[test]
fn a_value_given_to_json_is_refused_as_such() {
    let (code, stderr) = refused(["--json=yes"]);
    assert_eq!(code, Some(2));
    assert!(stderr.contains("--json takes no value"), "{stderr}");
    assert!(!stderr.contains("unknown flag"), "{stderr}");
}

/// An argument that is not UTF-8 is a bad flag like any other: exit status 2 and a message,
/// not a panic.
#[cfg(unix)]
#[test]
fn an_argument_that_is_not_utf8_is_refused_with_a_clear_error() {
    use std::os::unix::ffi::OsStrExt;
    for args in [
        vec![
            OsStr::from_bytes(b"--addr"),
            OsStr::from_bytes(b"127.0.0.1:\xff"),
        ],
        vec![OsStr::from_bytes(b"--\xffjson")],
    ] {
        let (code, stderr) = refused(&args);
        assert_eq!(code, Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains("is not UTF-8"), "{args:?}: {stderr}");
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
    }
}

#[test]
fn an_address_in_use_is_refused_with_exit_status_two() {
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let (code, stderr) = refused(["--addr", &addr]);
    assert_eq!(code, Some(2));
    assert!(
        stderr.contains(&format!("demo: cannot listen on {addr}")),
        "{stderr}"
    );
}

/// Asking for help is not an error: the usage goes to stdout and the exit status is 0.
#[test]
fn help_prints_the_usage_on_stdout_and_exits_zero() {
    for flag in ["--help", "-h"] {
        let output = run([flag]);
        assert_eq!(output.status.code(), Some(0));
        assert!(String::from_utf8_lossy(&output.stdout).starts_with(
            "usage: demo [--addr 127.0.0.1:3000] [--lame-duck-ms 2000] \
             [--drain-timeout-ms 10000] [--json]"
        ));
    }
}

/// The banner's commands are pasted into shells: a URL with a `?` is quoted, or zsh refuses
/// it ("no matches found") and other shells may expand it.
#[test]
fn the_banner_quotes_every_url_with_a_query() {
    let demo = Demo::start(&["--lame-duck-ms", "0", "--drain-timeout-ms", "0"]);
    demo.wait_for("kill -TERM");
    let urls: Vec<String> = demo
        .stderr_so_far()
        .iter()
        .filter(|line| line.trim_start().starts_with("curl "))
        .flat_map(|line| {
            line.split_whitespace()
                .map(str::to_owned)
                .collect::<Vec<_>>()
        })
        .filter(|word| word.contains("http://"))
        .collect();
    assert_eq!(urls.len(), 5, "{urls:?}");
    for url in urls.iter().filter(|url| url.contains('?')) {
        assert!(
            url.starts_with('\'') && url.ends_with('\''),
            "{url} is quoted"
        );
    }
    demo.signal("TERM");
    assert_eq!(demo.wait_exit().code, Some(0));
}
