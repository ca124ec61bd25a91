//! `/metrics`, the server's counters, and the per-request middleware that feeds them (request
//! ids, one access log line per request, the `request` span).
//!
//! Counters are atomics; a series (method, route template, status) is found under a read lock
//! and created once under a write lock, so the hot path never waits on a global mutex. The
//! Prometheus text is rendered at scrape time. See `docs/http.md` (Metrics, Logging).

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use chatter_core::engine::{EngineObserver, ExecutionStatus, NodeRunStatus};
use chatter_core::orchestration::{MemoStats, ModelCounters};
use serde_json::{Map, Value, json};
use tracing::Instrument as _;

use super::problem::ApiError;
use super::{AppState, RequestId, auth};

/// Upper bounds (seconds) of the duration histograms' buckets, `+Inf` implied.
pub const DURATION_BUCKETS: [f64; 16] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    60.0,
];
/// The same bounds in microseconds (what is recorded).
const BUCKET_MICROS: [u64; 16] = [
    500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000, 1_000_000,
    2_500_000, 5_000_000, 10_000_000, 30_000_000, 60_000_000,
];

/// A duration histogram with fixed buckets ([`DURATION_BUCKETS`]), updated with atomics.
#[derive(Debug, Default)]
pub(crate) struct Histogram {
    /// Observations per bucket (not cumulative); the last counts those above every bound.
    buckets: [AtomicU64; 17],
    count: AtomicU64,
    sum_micros: AtomicU64,
}

impl Histogram {
    pub(crate) fn observe_micros(&self, micros: u64) {
        let i = BUCKET_MICROS.partition_point(|&bound| bound < micros);
        self.buckets[i].fetch_add(1, Ordering::Relaxed);
        self.sum_micros.fetch_add(micros, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
    }

    fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }

    fn sum_seconds(&self) -> f64 {
        self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6
    }

    /// `_bucket`, `_sum` and `_count` samples under `labels` (without braces).
    fn render(&self, out: &mut String, name: &str, labels: &str) {
        let sep = if labels.is_empty() { "" } else { "," };
        let mut cumulative = 0;
        for (i, bound) in DURATION_BUCKETS.iter().enumerate() {
            cumulative += self.buckets[i].load(Ordering::Relaxed);
            let _ = writeln!(
                out,
                "{name}_bucket{{{labels}{sep}le=\"{bound}\"}} {cumulative}"
            );
        }
        cumulative += self.buckets[16].load(Ordering::Relaxed);
        let _ = writeln!(
            out,
            "{name}_bucket{{{labels}{sep}le=\"+Inf\"}} {cumulative}"
        );
        let braces = if labels.is_empty() {
            String::new()
        } else {
            format!("{{{labels}}}")
        };
        let _ = writeln!(out, "{name}_sum{braces} {}", self.sum_seconds());
        let _ = writeln!(out, "{name}_count{braces} {cumulative}");
    }

    /// The duration (ms) under which `q` of the observations fall, read from the buckets (the
    /// bucket's upper bound; the last bound when they lie beyond it); 0 without observations.
    fn quantile_ms(&self, q: f64) -> f64 {
        let total = self.count();
        if total == 0 {
            return 0.0;
        }
        let target = (total as f64 * q).ceil() as u64;
        let mut seen = 0;
        for (i, bound) in DURATION_BUCKETS.iter().enumerate() {
            seen += self.buckets[i].load(Ordering::Relaxed);
            if seen >= target {
                return bound * 1000.0;
            }
        }
        DURATION_BUCKETS[DURATION_BUCKETS.len() - 1] * 1000.0
    }
}

/// A map of labelled series: found under a read lock, created once under the write lock.
#[derive(Debug)]
struct Series<K, V> {
    map: RwLock<HashMap<K, Arc<V>>>,
}

impl<K, V> Default for Series<K, V> {
    fn default() -> Self {
        Series {
            map: RwLock::new(HashMap::new()),
        }
    }
}

impl<K: std::hash::Hash + Eq + Clone, V: Default> Series<K, V> {
    fn get<Q>(&self, key: &Q, owned: impl FnOnce() -> K) -> Arc<V>
    where
        K: std::borrow::Borrow<Q>,
        Q: std::hash::Hash + Eq + ?Sized,
    {
        if let Some(v) = self
            .map
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(key)
        {
            return v.clone();
        }
        self.map
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(owned())
            .or_default()
            .clone()
    }

    fn sorted(&self) -> Vec<(K, Arc<V>)>
    where
        K: Ord,
    {
        let mut all: Vec<(K, Arc<V>)> = self
            .map
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        all.sort_by(|a, b| a.0.cmp(&b.0));
        all
    }
}

/// The series of one route template: a histogram per (method, status).
#[derive(Debug, Default)]
struct RouteSeries {
    by_status: Series<(&'static str, u16), Histogram>,
}

/// Per node kind: a histogram per status.
#[derive(Debug, Default)]
struct NodeSeries {
    completed: Histogram,
    failed: Histogram,
    cancelled: Histogram,
    waiting: Histogram,
}

/// A method's label: the standard ones by name, any other `OTHER` (so a client cannot create
/// series at will).
fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::PATCH => "PATCH",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        _ => "OTHER",
    }
}

/// The route label of a request no route matched.
const UNMATCHED: &str = "unmatched";

/// Every counter of a server.
#[derive(Debug)]
pub(crate) struct ServerMetrics {
    started: Instant,
    http: Series<String, RouteSeries>,
    executions_started: AtomicU64,
    executions_completed: Histogram,
    executions_failed: Histogram,
    executions_cancelled: Histogram,
    nodes: Series<String, NodeSeries>,
    /// Model calls of the providers served (each wrapped in a `MeteredModel`).
    pub(crate) models: Arc<ModelCounters>,
}

impl ServerMetrics {
    pub(crate) fn new() -> ServerMetrics {
        ServerMetrics {
            started: Instant::now(),
            http: Series::default(),
            executions_started: AtomicU64::new(0),
            executions_completed: Histogram::default(),
            executions_failed: Histogram::default(),
            executions_cancelled: Histogram::default(),
            nodes: Series::default(),
            models: Arc::new(ModelCounters::default()),
        }
    }

    /// Records one answered request.
    fn request(&self, method: &Method, route: &str, status: u16, micros: u64) {
        let series = self.http.get(route, || route.to_owned());
        let key = (method_label(method), status);
        series.by_status.get(&key, || key).observe_micros(micros);
    }
}

impl EngineObserver for ServerMetrics {
    fn execution_started(&self) {
        self.executions_started.fetch_add(1, Ordering::Relaxed);
    }

    fn execution_ended(&self, status: ExecutionStatus, duration_ms: u64) {
        let histogram = match status {
            ExecutionStatus::Completed => &self.executions_completed,
            ExecutionStatus::Cancelled => &self.executions_cancelled,
            _ => &self.executions_failed,
        };
        histogram.observe_micros(duration_ms.saturating_mul(1000));
    }

    fn node_ended(&self, kind: &str, status: NodeRunStatus, duration_ms: u64) {
        let series = self.nodes.get(kind, || kind.to_owned());
        let histogram = match status {
            NodeRunStatus::Completed => &series.completed,
            NodeRunStatus::Cancelled => &series.cancelled,
            NodeRunStatus::Waiting => &series.waiting,
            _ => &series.failed,
        };
        histogram.observe_micros(duration_ms.saturating_mul(1000));
    }
}

/// One metric family of the exposition: `# HELP`, `# TYPE` and its samples.
#[derive(Debug, Clone, PartialEq)]
pub struct Family {
    /// The metric name (`chatter_jobs_queued`).
    pub name: String,
    /// `counter` or `gauge`.
    pub kind: &'static str,
    /// One line of help.
    pub help: String,
    /// Samples: label pairs and the value.
    pub samples: Vec<(Vec<(String, String)>, f64)>,
}

impl Family {
    fn render(&self, out: &mut String) {
        let _ = writeln!(out, "# HELP {} {}", self.name, self.help);
        let _ = writeln!(out, "# TYPE {} {}", self.name, self.kind);
        for (labels, value) in &self.samples {
            let pairs: Vec<(&str, &str)> = labels
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect();
            let labels = label_text(&pairs);
            let braces = if labels.is_empty() {
                String::new()
            } else {
                format!("{{{labels}}}")
            };
            let _ = writeln!(out, "{}{braces} {value}", self.name);
        }
    }
}

/// The job queue's series, read from the store when `/metrics` is scraped: `chatter_jobs`,
/// the jobs per status and priority (every pair, zeros included, so a series never vanishes).
/// A store failure leaves the series out (the scrape still answers) and is logged.
pub(crate) async fn job_series(state: &AppState) -> Vec<Family> {
    use chatter_core::store::JobStatus;
    let stats = match state.store().job_stats(super::jobs::QUEUE, None).await {
        Ok(stats) => stats,
        Err(error) => {
            tracing::warn!(%error, "metrics: reading the job counts failed");
            return Vec::new();
        }
    };
    let statuses = [
        JobStatus::Queued,
        JobStatus::Running,
        JobStatus::Completed,
        JobStatus::Failed,
        JobStatus::Cancelled,
    ];
    let mut samples = Vec::with_capacity(statuses.len() * super::jobs::PRIORITIES.len());
    for status in statuses {
        for &(priority, _) in super::jobs::PRIORITIES {
            let count: i64 = stats
                .counts
                .iter()
                .filter(|c| {
                    c.status == status && super::jobs::priority_name(c.priority) == priority
                })
                .map(|c| c.count)
                .sum();
            samples.push((
                vec![
                    ("status".to_owned(), status.as_str().to_owned()),
                    ("priority".to_owned(), priority.to_owned()),
                ],
                count as f64,
            ));
        }
    }
    vec![Family {
        name: "chatter_jobs".into(),
        kind: "gauge",
        help: "Jobs of the execution queue by status and priority.".into(),
        samples,
    }]
}

/// `k="v",...` with values escaped as the exposition format requires.
fn label_text(pairs: &[(&str, &str)]) -> String {
    let mut out = String::new();
    for (i, (k, v)) in pairs.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        let escaped = v
            .replace('\\', "\\\\")
            .replace('"', "\\\"")
            .replace('\n', "\\n");
        let _ = write!(out, "{k}=\"{escaped}\"");
    }
    out
}

fn head(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

/// The Prometheus text exposition (version 0.0.4) of every series; `extra` (the job queue's)
/// come last but one.
pub(crate) fn render_prometheus(state: &AppState, extra: &[Family]) -> String {
    let m = state.metrics();
    let mut out = String::with_capacity(16 * 1024);

    let routes = m.http.sorted();
    head(
        &mut out,
        "chatter_http_requests_total",
        "counter",
        "HTTP requests answered, by method, route template and status.",
    );
    let mut per_status = Vec::new();
    for (route, series) in &routes {
        for ((method, status), histogram) in series.by_status.sorted() {
            let labels = label_text(&[
                ("method", method),
                ("route", route),
                ("status", &status.to_string()),
            ]);
            let _ = writeln!(
                out,
                "chatter_http_requests_total{{{labels}}} {}",
                histogram.count()
            );
            per_status.push((labels, histogram));
        }
    }
    head(
        &mut out,
        "chatter_http_request_duration_seconds",
        "histogram",
        "HTTP request durations, by method, route template and status.",
    );
    for (labels, histogram) in &per_status {
        histogram.render(&mut out, "chatter_http_request_duration_seconds", labels);
    }
    head(
        &mut out,
        "chatter_http_rate_limited_total",
        "counter",
        "Requests refused by a rate limit (429).",
    );
    let refused = state.rate_limiter().map_or(0, |l| l.refused());
    let _ = writeln!(out, "chatter_http_rate_limited_total {refused}");

    head(
        &mut out,
        "chatter_executions_started_total",
        "counter",
        "Executions started in this process.",
    );
    let _ = writeln!(
        out,
        "chatter_executions_started_total {}",
        m.executions_started.load(Ordering::Relaxed)
    );
    let ended = [
        ("completed", &m.executions_completed),
        ("failed", &m.executions_failed),
        ("cancelled", &m.executions_cancelled),
    ];
    head(
        &mut out,
        "chatter_executions_finished_total",
        "counter",
        "Executions that ended, by status (completed, failed, cancelled).",
    );
    for (status, histogram) in ended {
        let _ = writeln!(
            out,
            "chatter_executions_finished_total{{status=\"{status}\"}} {}",
            histogram.count()
        );
    }
    head(
        &mut out,
        "chatter_executions_in_progress",
        "gauge",
        "Executions running in this process now.",
    );
    let _ = writeln!(out, "chatter_executions_in_progress {}", state.live_count());
    head(
        &mut out,
        "chatter_execution_duration_seconds",
        "histogram",
        "Execution durations (from start or resume to end), by status.",
    );
    for (status, histogram) in ended {
        histogram.render(
            &mut out,
            "chatter_execution_duration_seconds",
            &format!("status=\"{status}\""),
        );
    }
    head(
        &mut out,
        "chatter_node_duration_seconds",
        "histogram",
        "Node run durations (retries included), by node kind and status.",
    );
    for (kind, series) in m.nodes.sorted() {
        for (status, histogram) in [
            ("completed", &series.completed),
            ("failed", &series.failed),
            ("cancelled", &series.cancelled),
            ("waiting", &series.waiting),
        ] {
            if histogram.count() > 0 {
                let labels = label_text(&[("kind", &kind), ("status", status)]);
                histogram.render(&mut out, "chatter_node_duration_seconds", &labels);
            }
        }
    }

    // Model requests, tokens and cost: the core's own exposition of its counters.
    out.push_str(&m.models.snapshot(MemoStats::default()).render_prometheus());

    let store = state.store();
    let backend = store.backend();
    let cache = store.cache_stats();
    for (name, kind, help, value) in [
        (
            "chatter_store_cache_hits_total",
            "counter",
            "Definition and template reads answered by the store's cache.",
            cache.hits,
        ),
        (
            "chatter_store_cache_misses_total",
            "counter",
            "Definition and template reads that went to the database.",
            cache.misses,
        ),
        (
            "chatter_store_cache_evictions_total",
            "counter",
            "Entries dropped from the store's cache to stay within capacity.",
            cache.evictions,
        ),
        (
            "chatter_store_cache_entries",
            "gauge",
            "Entries in the store's cache.",
            cache.entries,
        ),
    ] {
        head(&mut out, name, kind, help);
        let _ = writeln!(out, "{name}{{backend=\"{backend}\"}} {value}");
    }
    let pool = store.pool_stats();
    head(
        &mut out,
        "chatter_db_pool_connections",
        "gauge",
        "Database connections: the pool's maximum, those open, those idle.",
    );
    for (state_name, value) in [
        ("max", pool.max_size),
        ("open", pool.size),
        ("idle", pool.available),
    ] {
        let _ = writeln!(
            out,
            "chatter_db_pool_connections{{backend=\"{backend}\",state=\"{state_name}\"}} {value}"
        );
    }
    head(
        &mut out,
        "chatter_db_pool_waiting",
        "gauge",
        "Callers waiting for a database connection.",
    );
    let _ = writeln!(
        out,
        "chatter_db_pool_waiting{{backend=\"{backend}\"}} {}",
        pool.waiting
    );

    for family in extra {
        family.render(&mut out);
    }

    head(
        &mut out,
        "chatter_uptime_seconds",
        "gauge",
        "Seconds since the server started.",
    );
    let _ = writeln!(
        out,
        "chatter_uptime_seconds {}",
        m.started.elapsed().as_secs_f64()
    );
    out
}

/// The same series as OpenMetrics text: counter families are named without their `_total`
/// suffix (which their samples keep), and the document ends with `# EOF`.
pub(crate) fn render_openmetrics(state: &AppState, extra: &[Family]) -> String {
    let text = render_prometheus(state, extra);
    let mut counters = std::collections::HashSet::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ")
            && let Some(name) = rest.strip_suffix(" counter")
        {
            counters.insert(name.to_owned());
        }
    }
    let mut out = String::with_capacity(text.len() + 8);
    for line in text.lines() {
        let meta = line
            .strip_prefix("# HELP ")
            .map(|r| ("# HELP ", r))
            .or_else(|| line.strip_prefix("# TYPE ").map(|r| ("# TYPE ", r)));
        match meta {
            Some((prefix, rest)) => {
                let (name, tail) = rest.split_once(' ').unwrap_or((rest, ""));
                let family = match name.strip_suffix("_total") {
                    Some(base) if counters.contains(name) => base,
                    _ => name,
                };
                let _ = writeln!(out, "{prefix}{family} {tail}");
            }
            None => {
                out.push_str(line);
                out.push('\n');
            }
        }
    }
    out.push_str("# EOF\n");
    out
}

/// The Prometheus text content type.
pub const PROMETHEUS_TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";
/// The OpenMetrics text content type.
pub const OPENMETRICS_TEXT: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    Json,
    Prometheus,
    OpenMetrics,
}

/// The format the `Accept` header asks for: OpenMetrics or Prometheus text when it names
/// them (the one with the higher `q`, OpenMetrics on a tie), JSON otherwise.
fn negotiate(headers: &HeaderMap) -> Format {
    let mut best: Option<(f32, Format)> = None;
    for value in headers.get_all(header::ACCEPT) {
        let Ok(value) = value.to_str() else { continue };
        for item in value.split(',') {
            let mut parts = item.split(';').map(str::trim);
            let media = parts.next().unwrap_or("").to_ascii_lowercase();
            let q = parts
                .find_map(|p| p.strip_prefix("q="))
                .and_then(|q| q.parse::<f32>().ok())
                .unwrap_or(1.0);
            let format = match media.as_str() {
                "application/openmetrics-text" => Format::OpenMetrics,
                "text/plain" => Format::Prometheus,
                _ => continue,
            };
            if q <= 0.0 {
                continue;
            }
            let better = match best {
                None => true,
                Some((bq, bf)) => {
                    q > bq || (q == bq && format == Format::OpenMetrics && bf != format)
                }
            };
            if better {
                best = Some((q, format));
            }
        }
    }
    best.map_or(Format::Json, |(_, f)| f)
}

/// `GET /metrics`.
#[utoipa::path(
    get,
    path = "/metrics",
    operation_id = "get_metrics_metrics_get",
    tag = "Health",
    description = "The server's metrics, in the format the `Accept` header asks for: Prometheus text \
                   (`text/plain`), OpenMetrics (`application/openmetrics-text`), or else the old \
                   platform's JSON document. When the server has a metrics token, requests need \
                   `Authorization: Bearer <metrics token>` (else 401). Not rate limited.",
    responses(
        (status = 200, description = "The metrics", content(
            (super::schemas::MetricsResponse = "application/json"),
            (String = "text/plain"),
            (String = "application/openmetrics-text"),
        )),
        (status = 401, description = "The server has a metrics token and the request did not present it", body = super::schemas::Problem, content_type = "application/problem+json"),
    ),
)]
pub(crate) async fn metrics(State(state): State<AppState>, headers: HeaderMap) -> Response {
    if let Some(token) = state.config().metrics_token.as_deref() {
        let given = auth::bearer(&headers).unwrap_or("");
        if !constant_time_eq(given.as_bytes(), token.as_bytes()) {
            return ApiError::unauthorized(
                "the metrics need `Authorization: Bearer <metrics token>`",
            )
            .into_response();
        }
    }
    let format = negotiate(&headers);
    if format == Format::Json {
        return axum::Json(json_document(&state)).into_response();
    }
    let jobs = job_series(&state).await;
    let (body, content_type) = match format {
        Format::OpenMetrics => (render_openmetrics(&state, &jobs), OPENMETRICS_TEXT),
        _ => (render_prometheus(&state, &jobs), PROMETHEUS_TEXT),
    };
    let mut response = (StatusCode::OK, body).into_response();
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Per method of a route: requests, errors, seconds spent, counts per status.
type EndpointTotals = (u64, u64, f64, Map<String, Value>);

/// The old `MetricsResponse` document.
fn json_document(state: &AppState) -> Value {
    let m = state.metrics();
    let mut endpoints = Map::new();
    let mut requests = 0u64;
    let mut errors = 0u64;
    let mut sum_seconds = 0.0;
    let all = Histogram::default();
    for (route, series) in m.http.sorted() {
        let mut by_method: std::collections::BTreeMap<&str, EndpointTotals> =
            std::collections::BTreeMap::new();
        for ((method, status), histogram) in series.by_status.sorted() {
            let count = histogram.count();
            let entry = by_method.entry(method).or_default();
            entry.0 += count;
            if status >= 400 {
                entry.1 += count;
            }
            entry.2 += histogram.sum_seconds();
            entry.3.insert(status.to_string(), json!(count));
            for (i, bucket) in histogram.buckets.iter().enumerate() {
                all.buckets[i].fetch_add(bucket.load(Ordering::Relaxed), Ordering::Relaxed);
            }
            all.count.fetch_add(count, Ordering::Relaxed);
        }
        for (method, (count, failed, seconds, statuses)) in by_method {
            requests += count;
            errors += failed;
            sum_seconds += seconds;
            endpoints.insert(
                format!("{method} {route}"),
                json!({
                    "requests": count,
                    "errors": failed,
                    "average_response_time_ms": average_ms(seconds, count),
                    "status_codes": statuses,
                }),
            );
        }
    }
    let models = m.models.snapshot(MemoStats::default());
    let cache = state.store().cache_stats();
    let pool = state.store().pool_stats();
    let finished = |h: &Histogram| h.count();
    json!({
        "timestamp": chatter_core::time::rfc3339_ms(auth::now_ms()),
        "service": "chatter",
        "version": env!("CARGO_PKG_VERSION"),
        "environment": super::health::environment(),
        "health": {
            "status": "healthy",
            "uptime_seconds": m.started.elapsed().as_secs(),
            "database": {
                "backend": state.store().backend(),
                "pool": {
                    "max_size": pool.max_size,
                    "size": pool.size,
                    "available": pool.available,
                    "waiting": pool.waiting,
                },
            },
        },
        "performance": {
            "total_requests": requests,
            "total_errors": errors,
            "error_rate": if requests == 0 { 0.0 } else { errors as f64 / requests as f64 },
            "average_response_time_ms": average_ms(sum_seconds, requests),
            "p95_response_time_ms": all.quantile_ms(0.95),
            "p99_response_time_ms": all.quantile_ms(0.99),
            "rate_limited": state.rate_limiter().map_or(0, |l| l.refused()),
            "executions": {
                "started": m.executions_started.load(Ordering::Relaxed),
                "completed": finished(&m.executions_completed),
                "failed": finished(&m.executions_failed),
                "cancelled": finished(&m.executions_cancelled),
                "in_progress": state.live_count(),
            },
            "models": {
                "requests": models.llm_requests_total,
                "failures": models.llm_request_failures_total,
                "tokens": models.llm_tokens_total,
                "cost_usd": models.llm_cost_usd_total,
            },
            "cache": {
                "hits": cache.hits,
                "misses": cache.misses,
                "hit_rate": cache.hit_rate,
            },
        },
        "endpoints": endpoints,
    })
}

fn average_ms(seconds: f64, count: u64) -> f64 {
    if count == 0 {
        0.0
    } else {
        (seconds * 1000.0 / count as f64 * 1000.0).round() / 1000.0
    }
}

/// The request id of a request: a sane incoming `x-correlation-id` (or `x-request-id`), else
/// a new ULID.
fn incoming_id(headers: &HeaderMap) -> String {
    ["x-correlation-id", "x-request-id"]
        .iter()
        .find_map(|name| {
            headers
                .get(*name)
                .and_then(|v| v.to_str().ok())
                .filter(|v| {
                    !v.is_empty()
                        && v.len() <= 64
                        && v.bytes()
                            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
                })
        })
        .map_or_else(|| ulid::Ulid::new().to_string(), str::to_owned)
}

/// Outermost middleware of every request: its id (echoed in `x-correlation-id` and
/// `x-request-id`), the `request` span its handling runs in, the HTTP series, and one access
/// log line (`tracing`, target `chatter_http::access`).
pub(crate) async fn observe(
    State(state): State<AppState>,
    mut request: Request,
    next: Next,
) -> Response {
    let started = Instant::now();
    let id = incoming_id(request.headers());
    request.extensions_mut().insert(RequestId(id.clone()));
    // The audit middleware fills the slot with the authenticated user; the log line reads it.
    let slot = auth::ActorSlot::default();
    request.extensions_mut().insert(slot.clone());
    let method = request.method().clone();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| UNMATCHED.to_owned(), |p| p.as_str().to_owned());
    let span = tracing::info_span!(
        target: "chatter_http::access",
        "request",
        request_id = %id,
        method = %method,
        route = %route,
    );
    let mut response = next.run(request).instrument(span).await;
    let micros = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
    let status = response.status().as_u16();
    state.metrics().request(&method, &route, status, micros);
    if let Ok(value) = HeaderValue::from_str(&id) {
        response
            .headers_mut()
            .insert("x-correlation-id", value.clone());
        response.headers_mut().insert("x-request-id", value);
    }
    if tracing::enabled!(target: "chatter_http::access", tracing::Level::INFO) {
        let user = slot.get().unwrap_or_else(|| "-".to_owned());
        tracing::info!(
            target: "chatter_http::access",
            request_id = %id,
            method = %method,
            route = %route,
            status,
            duration_ms = micros as f64 / 1000.0,
            user = %user,
            "request"
        );
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn accept(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::ACCEPT,
            HeaderValue::from_str(value).unwrap_or(HeaderValue::from_static("")),
        );
        headers
    }

    #[test]
    fn accept_picks_the_format() {
        assert_eq!(negotiate(&HeaderMap::new()), Format::Json);
        assert_eq!(negotiate(&accept("application/json")), Format::Json);
        assert_eq!(negotiate(&accept("text/plain")), Format::Prometheus);
        assert_eq!(
            negotiate(&accept(
                "text/plain;version=0.0.4;q=0.5, application/openmetrics-text;version=1.0.0;q=0.6, */*;q=0.1"
            )),
            Format::OpenMetrics
        );
        assert_eq!(
            negotiate(&accept(
                "application/openmetrics-text;q=0.2, text/plain;q=0.9"
            )),
            Format::Prometheus
        );
        assert_eq!(negotiate(&accept("text/plain;q=0")), Format::Json);
    }

    #[test]
    fn histogram_buckets_are_cumulative() {
        let h = Histogram::default();
        for micros in [100, 500, 501, 2_000_000, 100_000_000] {
            h.observe_micros(micros);
        }
        let mut out = String::new();
        h.render(&mut out, "x", "a=\"b\"");
        assert!(out.contains("x_bucket{a=\"b\",le=\"0.0005\"} 2\n"), "{out}");
        assert!(out.contains("x_bucket{a=\"b\",le=\"0.001\"} 3\n"), "{out}");
        assert!(out.contains("x_bucket{a=\"b\",le=\"2.5\"} 4\n"), "{out}");
        assert!(out.contains("x_bucket{a=\"b\",le=\"60\"} 4\n"), "{out}");
        assert!(out.contains("x_bucket{a=\"b\",le=\"+Inf\"} 5\n"), "{out}");
        assert!(out.contains("x_count{a=\"b\"} 5\n"), "{out}");
        assert!(out.contains("x_sum{a=\"b\"} 102.001101\n"), "{out}");
        assert_eq!(h.quantile_ms(0.5), 1.0);
        assert_eq!(h.quantile_ms(0.8), 2500.0);
    }
}
