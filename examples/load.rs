//! End-to-end cost of the layer in a real HTTP server, measured from the server's side.
//!
//! ```text
//! cargo run --release --example load -- [--seconds 3] [--rounds 5] [--connections 16] [--json PATH]
//! ```
//!
//! One process, two threads that matter:
//! * the **server**: a single-threaded Tokio runtime serving `GET /` -> `200 "ok\n"` with
//!   hyper-util's auto (HTTP/1 + HTTP/2) connection builder on two listeners on 127.0.0.1, one
//!   with the bare service and one with `Shutdown::layer()` on it;
//! * the **load generator**: a single-threaded runtime driving keep-alive HTTP/1 connections
//!   with hyper's client, each sending its next request as soon as the last response body
//!   has been read.
//!
//! Each is pinned to its own core (with `taskset`) when the machine has two, so they do not
//! compete. Rounds alternate bare / layered so drifts in the machine's load hit both alike.
//! Per round it records requests completed, wall time, and the CPU time the server thread
//! used (`/proc/<pid>/task/<tid>/schedstat`, nanoseconds); it prints the medians, the
//! server CPU per request, and the ratios layered / bare (median over rounds of each round's
//! ratio, since a round's two sides ran back to back under the same load).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Empty, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use tokio::net::{TcpListener, TcpStream};
use tower::{service_fn, Layer};
use tower_drain::Shutdown;

/// Options from the command line.
struct Options {
    seconds: f64,
    rounds: usize,
    connections: usize,
    json: Option<String>,
}

impl Options {
    fn parse() -> Options {
        let mut options = Options {
            seconds: 3.0,
            rounds: 5,
            connections: 16,
            json: None,
        };
        let mut args = std::env::args().skip(1);
        while let Some(flag) = args.next() {
            let mut value = || args.next().unwrap_or_else(|| usage(&flag));
            match flag.as_str() {
                "--seconds" => {
                    options.seconds = value().parse().unwrap_or_else(|_| usage("--seconds"))
                }
                "--rounds" => {
                    options.rounds = value().parse().unwrap_or_else(|_| usage("--rounds"))
                }
                "--connections" => {
                    options.connections = value().parse().unwrap_or_else(|_| usage("--connections"))
                }
                "--json" => options.json = Some(value()),
                _ => usage(&flag),
            }
        }
        options
    }
}

fn usage(flag: &str) -> ! {
    eprintln!(
        "bad or incomplete option {flag}\nusage: load [--seconds S] [--rounds N] [--connections C] [--json PATH]"
    );
    std::process::exit(2)
}

// === threads and their CPU time ===

/// This thread's id as the kernel knows it (`/proc/thread-self` -> `<pid>/task/<tid>`).
fn thread_id() -> Option<u32> {
    let link = std::fs::read_link("/proc/thread-self").ok()?;
    link.file_name()?.to_str()?.parse().ok()
}

/// Pins thread `tid` to `cpu` with `taskset`; false if that is not possible here.
fn pin(tid: u32, cpu: usize) -> bool {
    std::process::Command::new("taskset")
        .args(["-p", "-c", &cpu.to_string(), &tid.to_string()])
        .output()
        .is_ok_and(|output| output.status.success())
}

/// CPU time used so far by thread `tid` of this process, from the scheduler's own account.
fn cpu_time(tid: u32) -> Duration {
    let path = format!("/proc/self/task/{tid}/schedstat");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let nanos: u64 = text
        .split_whitespace()
        .next()
        .and_then(|field| field.parse().ok())
        .unwrap_or_else(|| panic!("{path}: unexpected format {text:?}"));
    Duration::from_nanos(nanos)
}

// === the server ===

/// Serves `GET /` on `listener` forever with `service`, one task per connection.
async fn serve<S, B>(listener: TcpListener, service: S)
where
    S: tower::Service<Request<hyper::body::Incoming>, Response = Response<B>, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    B: http_body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let _ = stream.set_nodelay(true);
        let service = TowerToHyperService::new(service.clone());
        tokio::spawn(async move {
            // A client closing its connection at the end of a round is not an error here.
            let _ = auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

/// Starts the server thread; returns its thread id and its two addresses (bare, layered).
fn start_server(cpu: Option<usize>) -> (u32, SocketAddr, SocketAddr, bool) {
    let (ready_tx, ready_rx) = mpsc::channel();
    std::thread::Builder::new()
        .name("server".into())
        .spawn(move || {
            let tid = thread_id().expect("Linux /proc/thread-self");
            let pinned = cpu.is_some_and(|cpu| pin(tid, cpu));
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            runtime.block_on(async move {
                let hello = service_fn(|_request: Request<hyper::body::Incoming>| async {
                    Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"ok\n"))))
                });
                let bare = TcpListener::bind("127.0.0.1:0").await.expect("bind");
                let layered = TcpListener::bind("127.0.0.1:0").await.expect("bind");
                let addrs = (
                    bare.local_addr().expect("addr"),
                    layered.local_addr().expect("addr"),
                );
                let shutdown = Shutdown::new();
                tokio::spawn(serve(bare, hello));
                tokio::spawn(serve(layered, shutdown.layer().layer(hello)));
                ready_tx
                    .send((tid, addrs.0, addrs.1, pinned))
                    .expect("main waits");
                std::future::pending::<()>().await;
            });
        })
        .expect("spawn server");
    ready_rx
        .recv_timeout(Duration::from_secs(30))
        .expect("server started")
}

// === the load generator ===

/// One round against `addr`: what the load generator saw.
struct Round {
    requests: u64,
    wall: Duration,
}

/// Runs `connections` keep-alive connections against `addr` for `duration`.
async fn drive(addr: SocketAddr, connections: usize, duration: Duration) -> Round {
    let mut senders = Vec::with_capacity(connections);
    for _ in 0..connections {
        let stream = TcpStream::connect(addr).await.expect("connect");
        stream.set_nodelay(true).expect("nodelay");
        let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .expect("handshake");
        tokio::spawn(connection);
        senders.push(sender);
    }
    let start = Instant::now();
    let deadline = start + duration;
    let mut tasks = Vec::with_capacity(connections);
    for mut sender in senders {
        tasks.push(tokio::spawn(async move {
            let mut done = 0u64;
            while Instant::now() < deadline {
                sender.ready().await.expect("connection alive");
                let request = Request::get("/")
                    .header(http::header::HOST, addr.to_string())
                    .body(Empty::<Bytes>::new())
                    .expect("request");
                let response = sender.send_request(request).await.expect("response");
                assert!(response.status().is_success());
                response.into_body().collect().await.expect("body");
                done += 1;
            }
            done
        }));
    }
    let mut requests = 0;
    for task in tasks {
        requests += task.await.expect("load task");
    }
    Round {
        requests,
        wall: start.elapsed(),
    }
}

/// Starts the load generator thread; it runs one round per address it is sent.
fn start_client(
    cpu: Option<usize>,
    connections: usize,
    duration: Duration,
) -> (mpsc::Sender<SocketAddr>, mpsc::Receiver<Round>, bool) {
    let (job_tx, job_rx) = mpsc::channel::<SocketAddr>();
    let (round_tx, round_rx) = mpsc::channel();
    let (pinned_tx, pinned_rx) = mpsc::channel();
    std::thread::Builder::new()
        .name("load".into())
        .spawn(move || {
            let pinned = match (thread_id(), cpu) {
                (Some(tid), Some(cpu)) => pin(tid, cpu),
                _ => false,
            };
            pinned_tx.send(pinned).expect("main waits");
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            while let Ok(addr) = job_rx.recv() {
                let round = runtime.block_on(async {
                    tokio::time::timeout(
                        duration + Duration::from_secs(60),
                        drive(addr, connections, duration),
                    )
                    .await
                    .expect("a round ends soon after its duration")
                });
                if round_tx.send(round).is_err() {
                    return;
                }
            }
        })
        .expect("spawn load generator");
    let pinned = pinned_rx
        .recv_timeout(Duration::from_secs(30))
        .expect("load generator started");
    (job_tx, round_rx, pinned)
}

// === measurement ===

/// What one round cost the server.
struct Sample {
    requests: u64,
    per_second: f64,
    cpu_per_request: Duration,
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    let mid = values.len() / 2;
    if values.len() % 2 == 1 {
        values[mid]
    } else {
        (values[mid - 1] + values[mid]) / 2.0
    }
}

fn main() {
    let options = Options::parse();
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    // Server on CPU 0, load generator on CPU 1: one core each is all a two-core machine has.
    let (server_cpu, client_cpu) = if cpus >= 2 {
        (Some(0), Some(1))
    } else {
        (None, None)
    };
    let (server_tid, bare_addr, layered_addr, server_pinned) = start_server(server_cpu);
    let duration = Duration::from_secs_f64(options.seconds);
    let (jobs, rounds, client_pinned) = start_client(client_cpu, options.connections, duration);

    let measure = |addr: SocketAddr| -> Sample {
        let cpu_before = cpu_time(server_tid);
        jobs.send(addr).expect("load generator alive");
        let round = rounds
            .recv_timeout(duration + Duration::from_secs(120))
            .expect("round finished");
        let cpu = cpu_time(server_tid) - cpu_before;
        Sample {
            requests: round.requests,
            per_second: round.requests as f64 / round.wall.as_secs_f64(),
            cpu_per_request: cpu / u32::try_from(round.requests.max(1)).unwrap_or(u32::MAX),
        }
    };

    // Warm both paths (connections, allocator, caches) before anything counts.
    measure(bare_addr);
    measure(layered_addr);

    let mut bare = Vec::new();
    let mut layered = Vec::new();
    for round in 0..options.rounds {
        // Alternate which goes first so a trend in the machine's load favours neither.
        let order = if round % 2 == 0 {
            [(bare_addr, false), (layered_addr, true)]
        } else {
            [(layered_addr, true), (bare_addr, false)]
        };
        for (addr, is_layered) in order {
            let sample = measure(addr);
            println!(
                "round {round} {:<7} {:>8} requests {:>10.0} req/s {:>7.0} ns server CPU/request",
                if is_layered { "layered" } else { "bare" },
                sample.requests,
                sample.per_second,
                sample.cpu_per_request.as_nanos()
            );
            if is_layered {
                layered.push(sample);
            } else {
                bare.push(sample);
            }
        }
    }

    let summarise = |samples: &[Sample]| {
        (
            median(samples.iter().map(|s| s.per_second).collect()),
            median(
                samples
                    .iter()
                    .map(|s| s.cpu_per_request.as_nanos() as f64)
                    .collect(),
            ),
            samples.iter().map(|s| s.requests).sum::<u64>(),
        )
    };
    let (bare_rps, bare_cpu, bare_total) = summarise(&bare);
    let (layered_rps, layered_cpu, layered_total) = summarise(&layered);
    // Each round ran both sides back to back, under the same conditions on the machine, so
    // the median of the per-round ratios is steadier than the ratio of the two medians.
    let paired = |ratio: fn(&Sample, &Sample) -> f64| {
        median(
            bare.iter()
                .zip(&layered)
                .map(|(b, l)| ratio(b, l))
                .collect(),
        )
    };
    let throughput_ratio = paired(|b, l| l.per_second / b.per_second);
    let cpu_ratio =
        paired(|b, l| l.cpu_per_request.as_nanos() as f64 / b.cpu_per_request.as_nanos() as f64);
    println!(
        "median: bare {bare_rps:.0} req/s, {bare_cpu:.0} ns CPU/request; \
         layered {layered_rps:.0} req/s, {layered_cpu:.0} ns CPU/request"
    );
    println!(
        "per-round medians, layered/bare: throughput {throughput_ratio:.4}, \
         server CPU per request {cpu_ratio:.4}"
    );
    println!(
        "cpus {cpus}; server pinned {server_pinned}, load generator pinned {client_pinned} \
         (one core each is this machine's limit)"
    );

    if let Some(path) = options.json {
        let json = format!(
            concat!(
                "{{\"cpus\":{},\"server_pinned\":{},\"client_pinned\":{},",
                "\"seconds\":{},\"rounds\":{},\"connections\":{},",
                "\"bare\":{{\"requests_per_second\":{:.1},\"cpu_ns_per_request\":{:.1},\"requests\":{}}},",
                "\"layered\":{{\"requests_per_second\":{:.1},\"cpu_ns_per_request\":{:.1},\"requests\":{}}},",
                "\"throughput_ratio\":{:.5},\"cpu_ratio\":{:.5}}}\n"
            ),
            cpus,
            server_pinned,
            client_pinned,
            options.seconds,
            options.rounds,
            options.connections,
            bare_rps,
            bare_cpu,
            bare_total,
            layered_rps,
            layered_cpu,
            layered_total,
            throughput_ratio,
            cpu_ratio
        );
        std::fs::write(&path, json).unwrap_or_else(|e| panic!("{path}: {e}"));
    }
}
