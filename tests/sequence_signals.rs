//! The sequence's OS signals, for real: each test runs this test binary again as a child
//! process (only that test, with `CHILD` set), and signals the child with `kill`, as the
//! demo's tests signal the demo. A signal sent to this process instead would reach every
//! test running beside it.
#![cfg(unix)]

use std::io::{BufRead, BufReader};
use std::os::unix::process::ExitStatusExt;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::thread;
use std::time::Duration;

use serde_json::Value;
use tokio::signal::unix::SignalKind;
use tower_drain::{Shutdown, ShutdownSequence};

/// Set in the child's environment: the test then plays the child's part.
const CHILD: &str = "TOWER_DRAIN_SEQUENCE_SIGNALS_CHILD";
/// Bound on every wait; only reached when something is broken.
const WAIT: Duration = Duration::from_secs(30);

/// This test binary run again with only `test` selected, playing the child's part.
struct ChildTest {
    /// Taken by [`ChildTest::exit`].
    child: Option<Child>,
    lines: Receiver<String>,
}

impl ChildTest {
    fn start(test: &str) -> ChildTest {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args([test, "--exact", "--nocapture", "--test-threads=1"])
            .env(CHILD, "1")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("the test binary starts again");
        let (send, lines) = mpsc::channel();
        let stdout = child.stdout.take().unwrap();
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = send.send(line);
            }
        });
        ChildTest {
            child: Some(child),
            lines,
        }
    }

    /// What follows `marker` on the next stdout line holding it. (The harness may have
    /// begun the line with the test's name.)
    fn wait_for(&self, marker: &str) -> String {
        loop {
            match self.lines.recv_timeout(WAIT) {
                Ok(line) => {
                    if let Some((_, rest)) = line.split_once(marker) {
                        return rest.to_owned();
                    }
                }
                Err(error) => panic!("no child line with {marker:?}: {error}"),
            }
        }
    }

    fn signal(&self, name: &str) {
        let id = self.child.as_ref().unwrap().id();
        let status = Command::new("kill")
            .args([&format!("-{name}"), &id.to_string()])
            .status()
            .expect("kill runs");
        assert!(status.success(), "kill -{name} {id}");
    }

    /// How the child exits, if it does within [`WAIT`].
    fn exit(mut self) -> Option<ExitStatus> {
        let mut child = self.child.take().unwrap();
        let (send, exited) = mpsc::channel();
        // A child that outlives this wait still ends by itself: its part waits at most
        // `WAIT` too.
        thread::spawn(move || {
            let _ = send.send(child.wait().expect("the child is waited for"));
        });
        exited.recv_timeout(WAIT).ok()
    }
}

impl Drop for ChildTest {
    fn drop(&mut self) {
        // A failed test must not leave its child running.
        if let Some(child) = self.child.as_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Builds `sequence` in the child, says `ready:` once its handlers are installed, runs it
/// and prints its report as `report:` and one JSON line.
fn run_child(build: impl FnOnce() -> ShutdownSequence) {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let sequence = build();
        println!("\nready:");
        let report = tokio::time::timeout(WAIT, sequence.run())
            .await
            .expect("the sequence ended");
        println!("\nreport:{}", serde_json::to_string(&report).unwrap());
    });
}

/// A signal listed twice is still one signal: it starts the sequence, and does not force it
/// as a second trigger would.
#[test]
fn a_signal_listed_twice_starts_the_sequence_without_forcing_it() {
    if std::env::var_os(CHILD).is_some() {
        return run_child(|| {
            ShutdownSequence::builder(Shutdown::new())
                .lame_duck(Duration::from_millis(100))
                .signals([SignalKind::terminate(), SignalKind::terminate()])
                .build()
                .unwrap()
        });
    }
    let child = ChildTest::start("a_signal_listed_twice_starts_the_sequence_without_forcing_it");
    child.wait_for("ready:");
    child.signal("TERM");
    let report: Value = serde_json::from_str(&child.wait_for("report:")).unwrap();
    assert_eq!(report["trigger"], "SIGTERM", "{report}");
    assert_eq!(
        report["forced_by"],
        Value::Null,
        "one signal forced: {report}"
    );
}

/// A signal tokio refuses to listen for (SIGKILL) fails the build, and must leave no handler
/// of the build's installed: tokio never takes one back, and an installed handler keeps its
/// signal from killing the process. An application that goes on after the error (logging it,
/// running without the sequence) must still be stopped by SIGTERM.
#[test]
fn a_refused_signal_leaves_sigterm_killing_the_process() {
    if std::env::var_os(CHILD).is_some() {
        let runtime = tokio::runtime::Runtime::new().unwrap();
        runtime.block_on(async {
            let built = ShutdownSequence::builder(Shutdown::new())
                .signals([SignalKind::terminate(), SignalKind::from_raw(9)])
                .build();
            let error = built.expect_err("SIGKILL cannot be listened for");
            println!("\nrefused:{error}");
        });
        // Wait to be killed; a child that outlives this failed the test.
        let (_keep, never) = mpsc::channel::<()>();
        let _ = never.recv_timeout(WAIT);
        return;
    }
    let child = ChildTest::start("a_refused_signal_leaves_sigterm_killing_the_process");
    let error = child.wait_for("refused:");
    assert!(error.contains("signal 9"), "{error}");
    child.signal("TERM");
    let status = child
        .exit()
        .expect("SIGTERM did not end the child: the refused build left its handler installed");
    assert_eq!(status.signal(), Some(15), "{status:?}");
}

/// Once `run` has returned, the signals it listened for no longer stop the process: their
/// handlers stay installed and nothing listens. So a wait after the sequence (for the server's
/// connections) must be bounded, or listen for the next signal itself.
#[test]
fn a_signal_after_the_sequence_has_run_is_ignored() {
    if std::env::var_os(CHILD).is_some() {
        let runtime = tokio::runtime::Runtime::new().unwrap();
        return runtime.block_on(async {
            let sequence = ShutdownSequence::builder(Shutdown::new())
                .lame_duck(Duration::ZERO)
                .build()
                .unwrap();
            sequence.trigger().fire();
            let report = tokio::time::timeout(WAIT, sequence.run())
                .await
                .expect("the sequence ended");
            assert!(report.is_clean(), "{report}");
            // A signal whose number is above SIGTERM's: sent after it, it comes after it.
            let mut window = tokio::signal::unix::signal(SignalKind::window_change()).unwrap();
            println!("\ndone:");
            tokio::time::timeout(WAIT, window.recv())
                .await
                .expect("SIGWINCH came");
            println!("\nstill running:");
        });
    }
    let child = ChildTest::start("a_signal_after_the_sequence_has_run_is_ignored");
    child.wait_for("done:");
    child.signal("TERM");
    child.signal("WINCH");
    child.wait_for("still running:");
    let status = child.exit().expect("the child exits once its part is done");
    assert!(status.success(), "{status}");
}
