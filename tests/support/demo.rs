//! The demo server (`examples/demo.rs`) run as a child process and driven from outside: real
//! signals, raw HTTP/1 bytes, its output lines. Every wait is on the demo's own output or
//! answers, and bounded.
//!
//! Needs the built example (`cargo test` builds it; for one test file alone, run
//! `cargo build --example demo` first): a missing or stale one fails with that advice.

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
pub const WAIT: Duration = Duration::from_secs(30);

pub fn demo_binary() -> PathBuf {
    super::example::example_binary("demo", &["examples/demo.rs", "src"])
}

/// A running demo: its address, and its output lines as they come.
pub struct Demo {
    child: Option<Child>,
    pub pid: u32,
    pub addr: SocketAddr,
    stderr: Lines,
    stdout: Lines,
}

/// How a demo ended.
pub struct Exit {
    pub code: Option<i32>,
    pub stdout: Vec<String>,
    pub stderr: Vec<String>,
}

/// The last line of the demo's banner.
const BANNER_END: &str = "kill -TERM";

/// What a test does with the demo's stderr.
#[derive(Clone, Copy)]
enum Stderr {
    /// Reads it to its end.
    Read,
    /// Reads it up to the line containing this, then closes it.
    CloseAfter(&'static str),
    /// Closes it at once, before the demo writes to it; the demo listens on this address,
    /// which its banner would have named.
    Closed(SocketAddr),
}

impl Demo {
    pub fn start(args: &[&str]) -> Demo {
        Demo::start_reading(args, true, Stderr::Read)
    }

    /// Starts the demo with its stdout a pipe nobody reads: closed from the start, so a
    /// write to it fails.
    pub fn start_with_stdout_closed(args: &[&str]) -> Demo {
        Demo::start_reading(args, false, Stderr::Read)
    }

    /// Starts the demo and closes its stderr pipe once the banner is read, as a caller
    /// that wanted only the address would: every later write to it fails. Returns once the
    /// pipe is closed.
    pub fn start_with_stderr_closed_after_banner(args: &[&str]) -> Demo {
        let demo = Demo::start_reading(args, true, Stderr::CloseAfter(BANNER_END));
        demo.stderr.wait_closed();
        demo
    }

    /// Starts the demo on a free port with its stderr pipe closed at once, before the demo
    /// writes its banner, as `demo 2>&1 | head -1` can leave it: every write to it fails.
    /// Returns once the demo answers `GET /` with `ok`.
    pub fn start_with_stderr_closed(args: &[&str]) -> Demo {
        // Free now, and not handed out again right away: the banner that would name the
        // address the demo picked is never read.
        let addr = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .expect("a free port");
        let mut demo = Demo::start_reading(args, true, Stderr::Closed(addr));
        // A refused connection fails at once; the demo listens within milliseconds, or has
        // exited. Bounded in count and in time.
        let deadline = Instant::now() + WAIT;
        let answered = (0..1_000_000)
            .take_while(|_| Instant::now() < deadline && demo.is_running())
            .find_map(|_| get(addr, "/").ok());
        let answered = answered.unwrap_or_else(|| {
            panic!(
                "the demo does not serve on {addr}; stdout:\n{}",
                demo.stdout.so_far().join("\n")
            )
        });
        assert_eq!(body_of(&answered), "ok\n", "{answered}");
        demo
    }

    fn start_reading(args: &[&str], read_stdout: bool, stderr: Stderr) -> Demo {
        let addr = match stderr {
            Stderr::Closed(addr) => addr,
            Stderr::Read | Stderr::CloseAfter(_) => SocketAddr::from(([127, 0, 0, 1], 0)),
        };
        let mut child = Command::new(demo_binary())
            .args(["--addr", &addr.to_string()])
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("demo starts");
        let pid = child.id();
        let stderr_pipe = child.stderr.take().unwrap();
        let stderr_lines = match stderr {
            Stderr::Read => Lines::of("stderr", stderr_pipe),
            Stderr::CloseAfter(last) => Lines::until("stderr", stderr_pipe, Some(last)),
            Stderr::Closed(_) => {
                drop(stderr_pipe);
                Lines::of("stderr", std::io::empty())
            }
        };
        let stdout = child.stdout.take().unwrap();
        let stdout = if read_stdout {
            Lines::of("stdout", stdout)
        } else {
            drop(stdout);
            Lines::of("stdout", std::io::empty())
        };
        let mut demo = Demo {
            child: Some(child),
            pid,
            addr,
            stderr: stderr_lines,
            stdout,
        };
        if let Stderr::Closed(_) = stderr {
            return demo;
        }
        let line = demo.wait_for("listening on http://");
        let addr = line.rsplit("http://").next().unwrap().trim();
        demo.addr = addr
            .parse()
            .unwrap_or_else(|_| panic!("address in {line:?}"));
        demo
    }

    /// False once the demo has exited.
    fn is_running(&mut self) -> bool {
        let child = self.child.as_mut().expect("not waited for yet");
        child.try_wait().expect("the demo's status").is_none()
    }

    /// The next stderr line containing `needle`.
    pub fn wait_for(&self, needle: &str) -> String {
        self.stderr.wait_for(needle)
    }

    /// The next stdout line containing `needle`.
    pub fn wait_for_stdout(&self, needle: &str) -> String {
        self.stdout.wait_for(needle)
    }

    /// Every stderr line so far.
    pub fn stderr_so_far(&self) -> Vec<String> {
        self.stderr.so_far()
    }

    pub fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .args([&format!("-{name}"), &self.pid.to_string()])
            .status()
            .expect("kill runs");
        assert!(status.success(), "kill -{name} {}", self.pid);
    }

    pub fn wait_exit(mut self) -> Exit {
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
                    self.stderr.so_far().join("\n")
                );
            }
        };
        Exit {
            code: status.code(),
            stdout: self.stdout.to_end(),
            stderr: self.stderr.to_end(),
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

/// The lines of one output pipe, as they come and all seen so far.
struct Lines {
    name: &'static str,
    next: Receiver<String>,
    seen: Arc<Mutex<Vec<String>>>,
}

impl Lines {
    fn of(name: &'static str, pipe: impl Read + Send + 'static) -> Lines {
        Lines::until(name, pipe, None)
    }

    /// Reads the pipe to its end, or only up to the line containing `last` and then closes
    /// it.
    fn until(
        name: &'static str,
        pipe: impl Read + Send + 'static,
        last: Option<&'static str>,
    ) -> Lines {
        let (send, next) = mpsc::channel();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = seen.clone();
        thread::spawn(move || {
            let mut reader = BufReader::new(pipe);
            for line in (&mut reader).lines().map_while(Result::ok) {
                let done = last.is_some_and(|last| line.contains(last));
                log.lock().unwrap().push(line.clone());
                let _ = send.send(line);
                if done {
                    break;
                }
            }
            // The pipe is closed before the channel: whoever sees the channel closed knows
            // the pipe is.
            drop(reader);
            drop(send);
        });
        Lines { name, next, seen }
    }

    /// Returns once the reader has closed the pipe (at its end, or after its last line).
    fn wait_closed(&self) {
        let deadline = Instant::now() + WAIT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.next.recv_timeout(left) {
                Ok(_) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => return,
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    panic!(
                        "{} still open; so far:\n{}",
                        self.name,
                        self.so_far().join("\n")
                    )
                }
            }
        }
    }

    /// The next line containing `needle`.
    fn wait_for(&self, needle: &str) -> String {
        let deadline = Instant::now() + WAIT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.next.recv_timeout(left) {
                Ok(line) if line.contains(needle) => return line,
                Ok(_) => {}
                Err(error) => panic!(
                    "no {} line with {needle:?} ({error}); so far:\n{}",
                    self.name,
                    self.so_far().join("\n")
                ),
            }
        }
    }

    fn so_far(&self) -> Vec<String> {
        self.seen.lock().unwrap().clone()
    }

    /// Every line, once the pipe has closed (the reader thread ends with it).
    fn to_end(&self) -> Vec<String> {
        while self.next.recv_timeout(WAIT).is_ok() {}
        self.so_far()
    }
}

/// Sends `GET path` on a new connection; returns the raw response (status line, headers,
/// body as sent, chunked framing included), or the I/O error (refused, reset).
pub fn get(addr: SocketAddr, path: &str) -> std::io::Result<String> {
    request(addr, "GET", path)
}

/// Sends `method path` (no request body) on a new connection and reads the raw response to
/// the server's close.
pub fn request(addr: SocketAddr, method: &str, path: &str) -> std::io::Result<String> {
    let mut stream = open_with(addr, method, path)?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response)?;
    Ok(String::from_utf8_lossy(&response).into_owned())
}

/// Sends `GET path` from this thread, so the request is in the server's socket before the
/// caller goes on (sends a signal, say), and reads the response to the server's close on a
/// thread: what [`get`] on a thread of its own would do, without racing that thread.
pub fn sent(addr: SocketAddr, path: &str) -> JoinHandle<std::io::Result<String>> {
    let stream = open(addr, path);
    thread::spawn(move || {
        let mut response = Vec::new();
        stream?.read_to_end(&mut response)?;
        Ok(String::from_utf8_lossy(&response).into_owned())
    })
}

pub fn open(addr: SocketAddr, path: &str) -> std::io::Result<TcpStream> {
    open_with(addr, "GET", path)
}

fn open_with(addr: SocketAddr, method: &str, path: &str) -> std::io::Result<TcpStream> {
    let mut stream = TcpStream::connect_timeout(&addr, WAIT)?;
    // A hang is a failure, never a wait for ever.
    stream.set_read_timeout(Some(WAIT))?;
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )?;
    Ok(stream)
}

/// The value of header `name` in a raw response, if present.
pub fn header_of<'a>(response: &'a str, name: &str) -> Option<&'a str> {
    let head = response.split("\r\n\r\n").next().unwrap_or_default();
    head.lines().skip(1).find_map(|line| {
        let (key, value) = line.split_once(':')?;
        key.eq_ignore_ascii_case(name).then(|| value.trim())
    })
}

pub fn status_of(response: &str) -> u16 {
    response
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {response:?}"))
}

pub fn body_of(response: &str) -> &str {
    response.split_once("\r\n\r\n").map_or("", |(_, body)| body)
}

/// A streaming request, read up to the line containing `first`: from then on it is
/// certainly in flight. The rest is read on a thread.
pub fn in_flight_stream(addr: SocketAddr, path: &str, first: &str) -> JoinHandle<String> {
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

pub fn json_report(exit: &Exit) -> Value {
    assert_eq!(
        exit.stdout.len(),
        1,
        "exactly one report line on stdout: {:?}",
        exit.stdout
    );
    serde_json::from_str(&exit.stdout[0]).expect("the report line is JSON")
}

pub fn count(lines: &[String], needle: &str) -> usize {
    lines.iter().filter(|line| line.contains(needle)).count()
}
