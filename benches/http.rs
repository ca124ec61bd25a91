//! The HTTP server under load (issue 9, item 7): a bench program (no criterion) that starts the
//! real server in-process and drives it over loopback with its own load generator
//! (`cargo bench -p chatter-benches --bench http`).
//!
//! * **Server**: [`Server::start`] on `127.0.0.1:0`, a SQLite file in a temp dir (WAL, the
//!   server's `sync` durability: every step committed), a known admin API key, the `scripted`
//!   model. It runs on its own multi-threaded tokio runtime with 2 workers (what
//!   `chatter serve` gets on this 2-core machine).
//! * **Load generator**: one OS thread with a current-thread tokio runtime, `C` keep-alive
//!   HTTP/1.1 connections (hyper's client connection API, no pool), each sending its next
//!   request as soon as the previous answer is read, until a fixed number of requests has
//!   been issued. Every answer is checked (200 and a completed execution).
//! * **execute**: `POST /api/v1/workflows/definitions/{id}/execute` of a 3-node definition
//!   (`start -> llm -> end`, the scripted model, no streaming): requests per second and
//!   latency percentiles (p50/p99/p99.9), for each connection count.
//! * **sse**: `GET /api/v1/workflows/executions/{id}/events` of a finished execution whose
//!   `llm` node streamed a 80 000-character reply in 8-character chunks (10 000 `token`
//!   events, 10 006 events in all): events per second from the first byte of the body to its
//!   end.
//! * **jobs**: job throughput through the durable queue: a batch of `HTTP_BENCH_JOBS` (default
//!   1000) executions of the 3-node definition, timed from the submission until every job
//!   completed ([`bench_jobs`]).
//!
//! Each figure is the median over `REPS` repetitions (after a warm-up). Server and load
//! generator share the same 2 cores, so the figures are a floor for a server with a machine
//! to itself.
//!
//! Environment: `HTTP_BENCH_REQUESTS` (requests per repetition, default 4000),
//! `HTTP_BENCH_CONNECTIONS` (comma-separated connection counts, default `1,16`),
//! `HTTP_BENCH_REPS` (default 5), `HTTP_BENCH_ONLY` (`execute`, `sse` or `jobs`),
//! `HTTP_BENCH_JOBS` (default 1000).

#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use chatter_http::server::{Server, ServerConfig};
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Bytes;
use hyper::{Request, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};

/// The allocator of the `chatter` binary (`chatter-http/src/bin/chatter.rs`), so the server
/// in this process allocates as `chatter serve` does.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Job workers of the benchmarked server (its default).
const JOB_WORKERS: usize = 2;
const ADMIN_KEY: &str = "chatter_api_bench0123456789abcdef0123456789abcdef";
/// Characters of the streamed reply of the SSE run (8-character chunks: 10 000 token events).
const LONG_REPLY_CHARS: usize = 80_000;

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(default)
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    let n = values.len();
    if n == 0 {
        return f64::NAN;
    }
    if n % 2 == 1 {
        values[n / 2]
    } else {
        f64::midpoint(values[n / 2 - 1], values[n / 2])
    }
}

/// The value at quantile `q` of sorted latencies (nearest rank).
fn percentile(sorted: &[Duration], q: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

// ---------------------------------------------------------------------------------------------
// The server and its fixtures

struct Fixture {
    addr: SocketAddr,
    /// The 3-node definition (`start -> llm -> end`, no streaming).
    definition_id: String,
    /// A finished execution with ~10 000 events.
    sse_execution_id: String,
    sse_events: usize,
}

/// The scripted model: a short answer, or the long streamed one when the message says `long`.
fn script_file(dir: &std::path::Path) -> std::path::PathBuf {
    let mut long = String::with_capacity(LONG_REPLY_CHARS);
    for i in 0_usize.. {
        if long.len() >= LONG_REPLY_CHARS {
            break;
        }
        long.push_str(&format!("word{} ", i * 7919 % 10_007));
    }
    long.truncate(LONG_REPLY_CHARS);
    let script = json!({
        "rules": [{"match": {"contains": "long"}, "reply": {"content": long}}],
        "default": {"content": "Hello from the scripted model."},
        "usage": {"prompt_tokens": 10, "completion_tokens": 5},
        "chunk_size": 8
    });
    let path = dir.join("script.json");
    std::fs::write(&path, script.to_string()).unwrap();
    path
}

async fn post_json(client: &mut reqwest_like::Client, path: &str, body: &Value) -> Value {
    let (status, text) = client.request("POST", path, Some(body.to_string())).await;
    assert!(status.is_success(), "POST {path}: {status} {text}");
    serde_json::from_str(&text).unwrap()
}

async fn setup(dir: &std::path::Path) -> (Server, Fixture) {
    let mut config = ServerConfig::new(format!("sqlite://{}", dir.join("bench.db").display()));
    config.admin_api_key = Some(ADMIN_KEY.to_owned());
    config.models = vec![format!("scripted:{}", script_file(dir).display())];
    // The load is one client far beyond the per-user limits: measure the server, not the 429s.
    config.rate_limits.enabled = false;
    config.job_workers = JOB_WORKERS;
    let server = Server::start(config).await.unwrap();
    let addr = server.local_addr();
    let mut client = reqwest_like::Client::connect(addr).await;

    let graph = |stream: bool| {
        json!({
            "nodes": [
                {"id": "start", "type": "start", "config": {}},
                {"id": "llm", "type": "llm", "config": {"stream": stream}},
                {"id": "end", "type": "end", "config": {}}
            ],
            "edges": [
                {"source": "start", "target": "llm"},
                {"source": "llm", "target": "end"}
            ]
        })
    };
    let create = |name: &str, stream: bool| {
        let mut body = graph(stream);
        body["name"] = json!(name);
        body
    };
    let definition = post_json(
        &mut client,
        "/api/v1/workflows/definitions",
        &create("bench 3 nodes", false),
    )
    .await;
    let definition_id = definition["id"].as_str().unwrap().to_owned();
    let streamed = post_json(
        &mut client,
        "/api/v1/workflows/definitions",
        &create("bench streamed", true),
    )
    .await;
    let streamed_id = streamed["id"].as_str().unwrap();
    let execution = post_json(
        &mut client,
        &format!("/api/v1/workflows/definitions/{streamed_id}/execute"),
        &json!({"input_data": {"message": "a long answer please"}}),
    )
    .await;
    assert_eq!(execution["status"], "completed", "{execution}");
    let sse_execution_id = execution["id"].as_str().unwrap().to_owned();
    let (_, frames, _) = read_events(addr, &sse_execution_id).await;
    assert!(frames > LONG_REPLY_CHARS / 8, "only {frames} events");
    (
        server,
        Fixture {
            addr,
            definition_id,
            sse_execution_id,
            sse_events: frames,
        },
    )
}

/// A minimal one-connection client for the set-up requests (no pool, no TLS).
mod reqwest_like {
    use super::{ADMIN_KEY, BodyExt, Bytes, Full, Request, SocketAddr, StatusCode, TokioIo};

    pub(super) struct Client {
        sender: hyper::client::conn::http1::SendRequest<Full<Bytes>>,
    }

    impl Client {
        pub(super) async fn connect(addr: SocketAddr) -> Client {
            let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
            stream.set_nodelay(true).unwrap();
            let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
                .await
                .unwrap();
            tokio::spawn(conn);
            Client { sender }
        }

        pub(super) async fn request(
            &mut self,
            method: &str,
            path: &str,
            body: Option<String>,
        ) -> (StatusCode, String) {
            let sender = &mut self.sender;
            sender.ready().await.unwrap();
            let request = Request::builder()
                .method(method)
                .uri(path)
                .header("host", "bench")
                .header("authorization", format!("Bearer {ADMIN_KEY}"))
                .header("content-type", "application/json")
                .body(Full::new(Bytes::from(body.unwrap_or_default())))
                .unwrap();
            let response = sender.send_request(request).await.unwrap();
            let status = response.status();
            let bytes = response.into_body().collect().await.unwrap().to_bytes();
            (status, String::from_utf8_lossy(&bytes).into_owned())
        }
    }
}

// ---------------------------------------------------------------------------------------------
// execute

/// One repetition's figures.
struct Run {
    rps: f64,
    p50: Duration,
    p99: Duration,
    p999: Duration,
    errors: usize,
}

/// `total` requests over `connections` keep-alive connections.
async fn execute_load(addr: SocketAddr, path: Arc<str>, connections: usize, total: usize) -> Run {
    let issued = Arc::new(AtomicUsize::new(0));
    let body = Bytes::from(json!({"input_data": {"message": "hello"}}).to_string());
    let auth = format!("Bearer {ADMIN_KEY}");
    let started = Instant::now();
    let mut tasks = Vec::with_capacity(connections);
    for _ in 0..connections {
        let issued = issued.clone();
        let body = body.clone();
        let auth = auth.clone();
        let path = path.clone();
        tasks.push(tokio::spawn(async move {
            let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
            stream.set_nodelay(true).unwrap();
            let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
                .await
                .unwrap();
            tokio::spawn(conn);
            let mut latencies = Vec::with_capacity(total / connections + 1);
            let mut errors = 0;
            while issued.fetch_add(1, Ordering::Relaxed) < total {
                sender.ready().await.unwrap();
                let request = Request::post(&*path)
                    .header("host", "bench")
                    .header("authorization", &auth)
                    .header("content-type", "application/json")
                    .body(Full::new(body.clone()))
                    .unwrap();
                let sent = Instant::now();
                let response = sender.send_request(request).await.unwrap();
                let status = response.status();
                let bytes = response.into_body().collect().await.unwrap().to_bytes();
                latencies.push(sent.elapsed());
                let completed = memchr_find(&bytes, br#""status":"completed""#);
                if status != StatusCode::OK || !completed {
                    if errors == 0 {
                        eprintln!(
                            "unexpected answer {status}: {}",
                            String::from_utf8_lossy(&bytes)
                        );
                    }
                    errors += 1;
                }
            }
            (latencies, errors)
        }));
    }
    let mut latencies = Vec::with_capacity(total);
    let mut errors = 0;
    for task in tasks {
        let (l, e) = task.await.unwrap();
        latencies.extend(l);
        errors += e;
    }
    let elapsed = started.elapsed();
    latencies.sort_unstable();
    #[allow(clippy::cast_precision_loss)]
    let rps = latencies.len() as f64 / elapsed.as_secs_f64();
    Run {
        rps,
        p50: percentile(&latencies, 0.50),
        p99: percentile(&latencies, 0.99),
        p999: percentile(&latencies, 0.999),
        errors,
    }
}

fn memchr_find(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

// ---------------------------------------------------------------------------------------------
// sse

/// Reads an execution's whole event stream; returns (time from the first body byte to the
/// end, frames with an `id:`, bytes).
async fn read_events(addr: SocketAddr, execution_id: &str) -> (Duration, usize, usize) {
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream.set_nodelay(true).unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    let request = Request::get(format!(
        "/api/v1/workflows/executions/{execution_id}/events"
    ))
    .header("host", "bench")
    .header("authorization", format!("Bearer {ADMIN_KEY}"))
    .body(Empty::<Bytes>::new())
    .unwrap();
    let response = sender.send_request(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let mut body = response.into_body();
    let mut first = None;
    let mut frames = 0;
    let mut bytes = 0;
    // `id:` at the start of a line; a line may be split across chunks, so carry the last byte.
    let mut at_line_start = true;
    let mut partial: Vec<u8> = Vec::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.unwrap();
        let Ok(data) = frame.into_data() else {
            continue;
        };
        first.get_or_insert_with(Instant::now);
        bytes += data.len();
        for &b in data.iter() {
            if at_line_start || !partial.is_empty() {
                partial.push(b);
                if partial.len() == 3 {
                    if partial == b"id:" {
                        frames += 1;
                    }
                    partial.clear();
                }
            }
            at_line_start = b == b'\n';
            if at_line_start {
                partial.clear();
            }
        }
    }
    let elapsed = first.map_or(Duration::ZERO, |t| t.elapsed());
    (elapsed, frames, bytes)
}

// ---------------------------------------------------------------------------------------------
// jobs

/// Job throughput through the durable queue: `JOBS` executions of the 3-node definition
/// submitted as one batch (`POST /api/v1/jobs/batch`, one transaction), then
/// `/api/v1/jobs/stats` polled until every job ended; jobs per second from the submission to the
/// last end, and the submission alone. Every job must complete.
async fn bench_jobs(fixture: &Fixture, reps: usize, jobs: usize) -> Vec<String> {
    let mut client = reqwest_like::Client::connect(fixture.addr).await;
    let inputs: Vec<Value> = (0..jobs)
        .map(|i| json!({"message": format!("job {i}")}))
        .collect();
    let body = json!({"workflow_id": fixture.definition_id, "inputs": inputs, "priority": "high"});
    let mut rates = Vec::new();
    let mut submits = Vec::new();
    let mut completed_before = 0_i64;
    for _ in 0..reps {
        let started = Instant::now();
        let batch = post_json(&mut client, "/api/v1/jobs/batch", &body).await;
        submits.push(ms(started.elapsed()));
        assert_eq!(batch["total_jobs"], json!(jobs), "{batch}");
        loop {
            let (status, text) = client.request("GET", "/api/v1/jobs/stats", None).await;
            assert!(status.is_success(), "stats: {status} {text}");
            let stats: Value = serde_json::from_str(&text).unwrap();
            let (queued, running) = (&stats["queued_jobs"], &stats["running_jobs"]);
            if queued == 0 && running == 0 {
                let completed = stats["completed_jobs"].as_i64().unwrap();
                assert_eq!(
                    completed - completed_before,
                    jobs as i64,
                    "not every job completed: {stats}"
                );
                completed_before = completed;
                break;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        #[allow(clippy::cast_precision_loss)]
        rates.push(jobs as f64 / started.elapsed().as_secs_f64());
    }
    vec![format!(
        "| jobs (batch of {jobs}, {JOB_WORKERS} workers) | - | {jobs} x {reps} | {:>8.0} jobs/s | submit {:>6.1} ms | | | 0 |",
        median(&mut rates),
        median(&mut submits),
    )]
}

// ---------------------------------------------------------------------------------------------

fn main() {
    let total = env_usize("HTTP_BENCH_REQUESTS", 4000);
    let reps = env_usize("HTTP_BENCH_REPS", 5).max(1);
    let connections: Vec<usize> = std::env::var("HTTP_BENCH_CONNECTIONS")
        .unwrap_or_else(|_| "1,16".into())
        .split(',')
        .filter_map(|c| c.trim().parse().ok())
        .filter(|c| *c > 0)
        .collect();
    let only = std::env::var("HTTP_BENCH_ONLY").unwrap_or_default();
    let jobs = env_usize("HTTP_BENCH_JOBS", 1000).max(1);

    let dir = std::env::temp_dir().join(format!("chatter-http-bench-{}", ulid::Ulid::new()));
    std::fs::create_dir_all(&dir).unwrap();
    let server_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let (server, fixture) = server_rt.block_on(setup(&dir));
    let fixture = Arc::new(fixture);

    // The load generator: its own thread and runtime, as a separate client process would be.
    let client = {
        let fixture = fixture.clone();
        let connections = connections.clone();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let mut rows = Vec::new();
                let path: Arc<str> = format!(
                    "/api/v1/workflows/definitions/{}/execute",
                    fixture.definition_id
                )
                .into();
                if only.is_empty() || only == "execute" {
                    for &c in &connections {
                        // Warm-up: connections, caches, the SQLite page cache.
                        execute_load(fixture.addr, path.clone(), c, (total / 10).max(c)).await;
                        let mut rps = Vec::new();
                        let (mut p50, mut p99, mut p999) = (Vec::new(), Vec::new(), Vec::new());
                        let mut errors = 0;
                        for _ in 0..reps {
                            let run = execute_load(fixture.addr, path.clone(), c, total).await;
                            rps.push(run.rps);
                            p50.push(ms(run.p50));
                            p99.push(ms(run.p99));
                            p999.push(ms(run.p999));
                            errors += run.errors;
                        }
                        rows.push(format!(
                            "| execute 3-node | {c:>3} | {total} x {reps} | {:>8.0} req/s | {:>6.2} | {:>6.2} | {:>6.2} | {errors} |",
                            median(&mut rps),
                            median(&mut p50),
                            median(&mut p99),
                            median(&mut p999),
                        ));
                    }
                }
                if only.is_empty() || only == "sse" {
                    let mut rates = Vec::new();
                    let mut times = Vec::new();
                    for _ in 0..reps {
                        let (elapsed, frames, _) =
                            read_events(fixture.addr, &fixture.sse_execution_id).await;
                        assert_eq!(frames, fixture.sse_events);
                        #[allow(clippy::cast_precision_loss)]
                        rates.push(frames as f64 / elapsed.as_secs_f64());
                        times.push(ms(elapsed));
                    }
                    rows.push(format!(
                        "| sse replay ({} events) | 1 | {reps} streams | {:>8.0} events/s | {:>6.1} ms per stream | | | 0 |",
                        fixture.sse_events,
                        median(&mut rates),
                        median(&mut times),
                    ));
                }
                if only.is_empty() || only == "jobs" {
                    rows.extend(bench_jobs(&fixture, reps, jobs).await);
                }
                rows
            })
        })
    };
    let rows = client.join().unwrap();

    println!();
    println!(
        "HTTP server, SQLite file (WAL, sync durability), scripted model; medians of {reps} repetitions"
    );
    println!(
        "| what | connections | requests | throughput | p50 ms | p99 ms | p99.9 ms | errors |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    for row in rows {
        println!("{row}");
    }
    server_rt.block_on(server.shutdown()).unwrap();
    drop(server_rt);
    let _ = std::fs::remove_dir_all(&dir);
}
