//! Operations over real HTTP: `/metrics` (Prometheus text, OpenMetrics, the old JSON), request
//! ids, rate limits. The cases run on SQLite; the pool series also on Postgres.

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

mod common;

use std::collections::BTreeMap;

use chatter_http::server::{Limit, ServerConfig};
use reqwest::header::{ACCEPT, AUTHORIZATION};
use serde_json::json;

use common::{ADMIN_KEY, Answer, Harness};

const W: &str = "/api/v1/workflows";
const CHAT: &str = "/api/v1/workflows/execute/chat";
const REPLY: &str = "Scripted answer.";

/// A server config with a scripted model that reports usage.
fn model_config() -> ServerConfig {
    let dir = std::env::temp_dir().join(format!("chatter-http-ops-{}", ulid::Ulid::new()));
    std::fs::create_dir_all(&dir).unwrap();
    let script = dir.join("model.json");
    std::fs::write(
        &script,
        json!({
            "default": {"content": REPLY},
            "usage": {"prompt_tokens": 12, "completion_tokens": 8},
        })
        .to_string(),
    )
    .unwrap();
    let mut config = common::config();
    config.models = vec![format!("scripted:{}", script.display())];
    config
}

async fn scrape(h: &Harness, accept: Option<&str>) -> Answer {
    let mut request = h.client.get(h.url("/metrics"));
    if let Some(accept) = accept {
        request = request.header(ACCEPT, accept);
    }
    common::answer(request.send().await.unwrap()).await
}

/// Parses the Prometheus text format strictly enough to catch malformed output: every line
/// is a `# HELP`/`# TYPE` comment or `name{labels} value`; every sample belongs to the family
/// typed before it. Returns the samples as `name{labels}` -> value.
fn parse_prometheus(text: &str) -> BTreeMap<String, f64> {
    let mut samples = BTreeMap::new();
    let mut family: Option<(String, String)> = None;
    for line in text.lines() {
        if line == "# EOF" {
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').expect(line);
            assert!(
                ["counter", "gauge", "histogram"].contains(&kind),
                "type: {line}"
            );
            family = Some((name.to_owned(), kind.to_owned()));
            continue;
        }
        if line.starts_with("# HELP ") {
            continue;
        }
        assert!(!line.starts_with('#'), "unknown comment: {line}");
        let (series, value) = line.rsplit_once(' ').expect(line);
        let value: f64 = match value {
            "+Inf" => f64::INFINITY,
            v => v.parse().unwrap_or_else(|_| panic!("value of {line}")),
        };
        let name = series.split('{').next().unwrap();
        assert!(
            !name.is_empty()
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':'),
            "name: {line}"
        );
        if let Some(labels) = series.strip_prefix(name)
            && !labels.is_empty()
        {
            assert!(
                labels.starts_with('{') && labels.ends_with('}'),
                "labels: {line}"
            );
            let inner = &labels[1..labels.len() - 1];
            // key="value" pairs, values with escaped quotes only.
            let mut rest = inner;
            while !rest.is_empty() {
                let (key, after) = rest.split_once("=\"").expect(line);
                assert!(
                    key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'),
                    "label key: {line}"
                );
                let mut end = None;
                let mut escaped = false;
                for (i, c) in after.char_indices() {
                    match (escaped, c) {
                        (true, _) => escaped = false,
                        (false, '\\') => escaped = true,
                        (false, '"') => {
                            end = Some(i);
                            break;
                        }
                        _ => {}
                    }
                }
                let end = end.expect(line);
                rest = after[end + 1..]
                    .strip_prefix(',')
                    .unwrap_or(&after[end + 1..]);
            }
        }
        let (fam, kind) = family.as_ref().expect("a sample before any # TYPE");
        let belongs = match kind.as_str() {
            "histogram" => [
                format!("{fam}_bucket"),
                format!("{fam}_sum"),
                format!("{fam}_count"),
            ]
            .contains(&name.to_owned()),
            // OpenMetrics names counter families without `_total`.
            "counter" => name == fam || name == format!("{fam}_total"),
            _ => name == fam,
        };
        assert!(belongs, "{name} is not of family {fam}");
        assert!(
            samples.insert(series.to_owned(), value).is_none(),
            "duplicate series {series}"
        );
    }
    samples
}

fn sample(samples: &BTreeMap<String, f64>, series: &str) -> f64 {
    *samples
        .get(series)
        .unwrap_or_else(|| panic!("no series {series} in {samples:#?}"))
}

/// A definition `start -> llm -> end` of alice's; returns its id.
async fn three_node_definition(h: &Harness, key: &str) -> String {
    let created = h
        .post(
            &format!("{W}/definitions"),
            Some(key),
            &json!({
                "name": "three nodes",
                "nodes": [
                    {"id": "start", "type": "start"},
                    {"id": "answer", "type": "llm", "config": {"system_prompt": "Be brief."}},
                    {"id": "end", "type": "end"}
                ],
                "edges": [
                    {"source": "start", "target": "answer"},
                    {"source": "answer", "target": "end"}
                ]
            }),
        )
        .await;
    assert_eq!(created.status, 200, "{}", created.text);
    created.body["id"].as_str().unwrap().to_owned()
}

mod sqlite {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn prometheus_counts_requests_by_route_template() {
        crate::common::run_sqlite(super::prometheus_counts_requests_by_route_template).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn openmetrics_and_json_formats() {
        crate::common::run_sqlite(super::openmetrics_and_json_formats).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn execution_node_and_model_series_move() {
        crate::common::run_sqlite_with(
            super::model_config(),
            super::execution_node_and_model_series_move,
        )
        .await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn metrics_token_guards_the_endpoint() {
        let mut config = crate::common::config();
        config.metrics_token = Some("scrape-secret".into());
        crate::common::run_sqlite_with(config, super::metrics_token_guards_the_endpoint).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn request_ids_are_echoed_or_made() {
        crate::common::run_sqlite(super::request_ids_are_echoed_or_made).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn chat_flood_is_limited_per_user_and_route() {
        crate::common::run_sqlite_with(
            super::limited_config(),
            super::chat_flood_is_limited_per_user_and_route,
        )
        .await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn anonymous_clients_are_limited_by_address() {
        crate::common::run_sqlite_with(
            super::limited_config(),
            super::anonymous_clients_are_limited_by_address,
        )
        .await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn pool_and_cache_series() {
        crate::common::run_sqlite(super::pool_and_cache_series).await;
    }
}

mod postgres {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn pool_and_cache_series() {
        crate::common::run_postgres(super::pool_and_cache_series).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn chat_flood_is_limited_per_user_and_route() {
        crate::common::run_postgres_with(
            super::limited_config(),
            super::chat_flood_is_limited_per_user_and_route,
        )
        .await;
    }
}

async fn prometheus_counts_requests_by_route_template(h: Harness) {
    for _ in 0..3 {
        assert_eq!(h.get("/healthz", None).await.status, 200);
    }
    // Two different ids, one route template.
    for id in ["01J0000000000000000000000A", "01J0000000000000000000000B"] {
        h.get(&format!("{W}/definitions/{id}"), Some(ADMIN_KEY))
            .await
            .assert_problem(404);
    }
    h.get("/no/such/path", None).await.assert_problem(404);
    h.get(&format!("{W}/definitions"), None)
        .await
        .assert_problem(401);

    let answer = scrape(&h, Some("text/plain")).await;
    assert_eq!(answer.status, 200, "{}", answer.text);
    assert_eq!(
        answer.content_type(),
        "text/plain; version=0.0.4; charset=utf-8"
    );
    let text = &answer.text;
    assert!(
        !text.contains("01J0000000000000000000000A"),
        "raw path in {text}"
    );
    assert!(!text.contains("/no/such/path"), "raw path in {text}");
    let s = parse_prometheus(text);
    let requests = |method: &str, route: &str, status: u16| {
        sample(
            &s,
            &format!(
                "chatter_http_requests_total{{method=\"{method}\",route=\"{route}\",status=\"{status}\"}}"
            ),
        )
    };
    assert_eq!(requests("GET", "/healthz", 200), 3.0);
    assert_eq!(
        requests("GET", "/api/v1/workflows/definitions/{workflow_id}", 404),
        2.0
    );
    assert_eq!(requests("GET", "unmatched", 404), 1.0);
    assert_eq!(requests("GET", "/api/v1/workflows/definitions", 401), 1.0);
    // Exactly those series: the scrape itself is counted once it is answered.
    let http_series: Vec<&String> = s
        .keys()
        .filter(|k| k.starts_with("chatter_http_requests_total{"))
        .collect();
    assert_eq!(http_series.len(), 4, "{http_series:#?}");
    let histogram = "chatter_http_request_duration_seconds";
    let labels = "method=\"GET\",route=\"/healthz\",status=\"200\"";
    assert_eq!(sample(&s, &format!("{histogram}_count{{{labels}}}")), 3.0);
    assert_eq!(
        sample(&s, &format!("{histogram}_bucket{{{labels},le=\"+Inf\"}}")),
        3.0
    );
    assert!(sample(&s, &format!("{histogram}_sum{{{labels}}}")) > 0.0);
    // Buckets are cumulative.
    let mut last = 0.0;
    for bound in chatter_http::server::metrics::DURATION_BUCKETS {
        let v = sample(
            &s,
            &format!("{histogram}_bucket{{{labels},le=\"{bound}\"}}"),
        );
        assert!(v >= last, "bucket {bound} decreased");
        last = v;
    }

    // A second scrape sees the first one.
    let s = parse_prometheus(&scrape(&h, Some("text/plain")).await.text);
    assert_eq!(
        sample(
            &s,
            "chatter_http_requests_total{method=\"GET\",route=\"/metrics\",status=\"200\"}"
        ),
        1.0
    );
}

async fn openmetrics_and_json_formats(h: Harness) {
    h.get("/healthz", None).await;
    let om = scrape(
        &h,
        Some("application/openmetrics-text; version=1.0.0, text/plain;q=0.5"),
    )
    .await;
    assert_eq!(om.status, 200);
    assert_eq!(
        om.content_type(),
        "application/openmetrics-text; version=1.0.0; charset=utf-8"
    );
    assert!(om.text.ends_with("\n# EOF\n"), "{}", om.text);
    assert_eq!(om.text.matches("# EOF").count(), 1);
    // Counter families are named without `_total`; their samples keep it.
    assert!(om.text.contains("# TYPE chatter_http_requests counter\n"));
    assert!(!om.text.contains("# TYPE chatter_http_requests_total"));
    assert!(om.text.contains("# TYPE llm_requests counter\n"));
    let s = parse_prometheus(&om.text);
    assert_eq!(
        sample(
            &s,
            "chatter_http_requests_total{method=\"GET\",route=\"/healthz\",status=\"200\"}"
        ),
        1.0
    );

    // Prometheus text is not OpenMetrics: no `# EOF`.
    let prom = scrape(&h, Some("text/plain;version=0.0.4")).await;
    assert!(!prom.text.contains("# EOF"));

    // Anything else: the old JSON document.
    for accept in [None, Some("application/json"), Some("*/*")] {
        let doc = scrape(&h, accept).await;
        assert_eq!(doc.status, 200, "{}", doc.text);
        assert!(doc.content_type().starts_with("application/json"));
        for key in [
            "timestamp",
            "service",
            "version",
            "environment",
            "health",
            "performance",
            "endpoints",
        ] {
            assert!(doc.body.get(key).is_some(), "no `{key}` in {}", doc.text);
        }
        assert_eq!(doc.body["service"], "chatter");
        for key in ["health", "performance", "endpoints"] {
            assert!(doc.body[key].is_object(), "{key} in {}", doc.text);
        }
        let ts = doc.body["timestamp"].as_str().unwrap();
        assert!(
            ts.len() >= 20 && ts.contains('T') && ts.ends_with('Z'),
            "{ts}"
        );
    }
    let doc = scrape(&h, None).await;
    let health = &doc.body["endpoints"]["GET /healthz"];
    assert_eq!(health["requests"], 1, "{}", doc.text);
    assert_eq!(health["errors"], 0);
    assert_eq!(health["status_codes"], json!({"200": 1}));
    // Two scrapes as text, one as OpenMetrics, three as JSON so far.
    assert_eq!(doc.body["endpoints"]["GET /metrics"]["requests"], 5);
}

async fn execution_node_and_model_series_move(h: Harness) {
    let alice = h.user("alice", &["user"]).await;
    let before = parse_prometheus(&scrape(&h, Some("text/plain")).await.text);
    assert_eq!(sample(&before, "chatter_executions_started_total"), 0.0);
    assert_eq!(
        sample(
            &before,
            "chatter_executions_finished_total{status=\"completed\"}"
        ),
        0.0
    );

    let id = three_node_definition(&h, &alice.key).await;
    for _ in 0..2 {
        let run = h
            .post(
                &format!("{W}/definitions/{id}/execute"),
                Some(&alice.key),
                &json!({"input_data": {"message": "hello"}}),
            )
            .await;
        assert_eq!(run.status, 200, "{}", run.text);
        assert_eq!(run.body["status"], "completed", "{}", run.text);
    }

    let s = parse_prometheus(&scrape(&h, Some("text/plain")).await.text);
    assert_eq!(sample(&s, "chatter_executions_started_total"), 2.0);
    assert_eq!(
        sample(
            &s,
            "chatter_executions_finished_total{status=\"completed\"}"
        ),
        2.0
    );
    assert_eq!(
        sample(&s, "chatter_executions_finished_total{status=\"failed\"}"),
        0.0
    );
    assert_eq!(
        sample(
            &s,
            "chatter_execution_duration_seconds_count{status=\"completed\"}"
        ),
        2.0
    );
    assert_eq!(sample(&s, "chatter_executions_in_progress"), 0.0);
    for kind in ["start", "llm", "end"] {
        assert_eq!(
            sample(
                &s,
                &format!(
                    "chatter_node_duration_seconds_count{{kind=\"{kind}\",status=\"completed\"}}"
                )
            ),
            2.0,
            "{kind}"
        );
    }
    // Model calls, counted by the core's counters under the provider's name.
    assert_eq!(sample(&s, "llm_requests_total{model=\"scripted\"}"), 2.0);
    assert_eq!(
        sample(&s, "llm_request_failures_total{model=\"scripted\"}"),
        0.0
    );
    assert_eq!(
        sample(&s, "llm_tokens_total{model=\"scripted\",type=\"prompt\"}"),
        24.0
    );
    assert_eq!(
        sample(
            &s,
            "llm_tokens_total{model=\"scripted\",type=\"completion\"}"
        ),
        16.0
    );

    let doc = scrape(&h, None).await;
    let perf = &doc.body["performance"];
    assert_eq!(perf["executions"]["started"], 2, "{}", doc.text);
    assert_eq!(perf["executions"]["completed"], 2);
    assert_eq!(perf["models"]["requests"], 2);
    assert_eq!(perf["models"]["tokens"], 40);

    // A failed execution: an `llm` node naming a provider that does not exist.
    let bad = h
        .post(
            &format!("{W}/definitions"),
            Some(&alice.key),
            &json!({
                "name": "bad provider",
                "nodes": [
                    {"id": "start", "type": "start"},
                    {"id": "answer", "type": "llm", "config": {"provider": "nope"}},
                    {"id": "end", "type": "end"}
                ],
                "edges": [
                    {"source": "start", "target": "answer"},
                    {"source": "answer", "target": "end"}
                ]
            }),
        )
        .await;
    assert_eq!(bad.status, 200, "{}", bad.text);
    let bad_id = bad.body["id"].as_str().unwrap();
    let run = h
        .post(
            &format!("{W}/definitions/{bad_id}/execute"),
            Some(&alice.key),
            &json!({"input_data": {"message": "hello"}}),
        )
        .await;
    assert_eq!(run.body["status"], "failed", "{}", run.text);
    let s = parse_prometheus(&scrape(&h, Some("text/plain")).await.text);
    assert_eq!(sample(&s, "chatter_executions_started_total"), 3.0);
    assert_eq!(
        sample(&s, "chatter_executions_finished_total{status=\"failed\"}"),
        1.0
    );
    assert_eq!(
        sample(
            &s,
            "chatter_node_duration_seconds_count{kind=\"llm\",status=\"failed\"}"
        ),
        1.0
    );
}

async fn metrics_token_guards_the_endpoint(h: Harness) {
    scrape(&h, Some("text/plain")).await.assert_problem(401);
    let wrong = h
        .client
        .get(h.url("/metrics"))
        .header(AUTHORIZATION, "Bearer not-it")
        .send()
        .await
        .unwrap();
    common::answer(wrong).await.assert_problem(401);
    let right = h
        .client
        .get(h.url("/metrics"))
        .header(AUTHORIZATION, "Bearer scrape-secret")
        .header(ACCEPT, "text/plain")
        .send()
        .await
        .unwrap();
    let right = common::answer(right).await;
    assert_eq!(right.status, 200, "{}", right.text);
    parse_prometheus(&right.text);
}

async fn request_ids_are_echoed_or_made(h: Harness) {
    let send = |header: Option<(&'static str, &'static str)>, path: &'static str| {
        let mut request = h.client.get(h.url(path));
        if let Some((name, value)) = header {
            request = request.header(name, value);
        }
        async move { common::answer(request.send().await.unwrap()).await }
    };
    let header = |a: &Answer, name: &str| a.headers[name].to_str().unwrap().to_owned();

    let echoed = send(Some(("x-correlation-id", "trace-abc_123")), "/healthz").await;
    assert_eq!(header(&echoed, "x-correlation-id"), "trace-abc_123");
    assert_eq!(header(&echoed, "x-request-id"), "trace-abc_123");
    let legacy = send(Some(("x-request-id", "legacy-1")), "/healthz").await;
    assert_eq!(header(&legacy, "x-correlation-id"), "legacy-1");

    let made = send(None, "/healthz").await;
    let id = header(&made, "x-correlation-id");
    assert_eq!(id.len(), 26);
    assert!(ulid::Ulid::from_string(&id).is_ok(), "{id}");
    assert_eq!(header(&made, "x-request-id"), id);

    // Not sane (spaces, too long): replaced by a new ULID.
    let long = "a".repeat(65);
    for bad in ["has space", long.as_str()] {
        let answer = common::answer(
            h.client
                .get(h.url("/healthz"))
                .header("x-correlation-id", bad)
                .send()
                .await
                .unwrap(),
        )
        .await;
        let id = header(&answer, "x-correlation-id");
        assert!(ulid::Ulid::from_string(&id).is_ok(), "{bad} -> {id}");
    }

    // Errors carry the same id in their problem document.
    let missing = send(Some(("x-correlation-id", "err-42")), "/nowhere").await;
    missing.assert_problem(404);
    assert_eq!(missing.body["request_id"], "err-42");
    assert_eq!(header(&missing, "x-correlation-id"), "err-42");
}

/// Chat limited to 3 a minute and 3 an hour (so no refill happens during the test, however
/// slow the machine), everything else to 50 a minute.
fn limited_config() -> ServerConfig {
    let mut config = model_config();
    config.rate_limits.enabled = true;
    config.rate_limits.default = Limit {
        per_minute: 50,
        per_hour: 1000,
    };
    config.rate_limits.routes.insert(
        CHAT.to_owned(),
        Limit {
            per_minute: 3,
            per_hour: 3,
        },
    );
    config
}

fn limit_headers(a: &Answer) -> [u64; 4] {
    [
        "x-ratelimit-limit-minute",
        "x-ratelimit-limit-hour",
        "x-ratelimit-remaining-minute",
        "x-ratelimit-remaining-hour",
    ]
    .map(|name| {
        a.headers
            .get(name)
            .unwrap_or_else(|| panic!("no {name} header"))
            .to_str()
            .unwrap()
            .parse()
            .unwrap()
    })
}

async fn chat_flood_is_limited_per_user_and_route(h: Harness) {
    let alice = h.user("alice", &["user"]).await;
    let bob = h.user("bob", &["user"]).await;
    let chat = |key: String| {
        let h = &h;
        async move { h.post(CHAT, Some(&key), &json!({"message": "hello"})).await }
    };
    for remaining in [2, 1, 0] {
        let ok = chat(alice.key.clone()).await;
        assert_eq!(ok.status, 200, "{}", ok.text);
        assert_eq!(limit_headers(&ok), [3, 3, remaining, remaining]);
    }
    let conversations_before = h
        .get("/api/v1/workflows/executions", Some(&alice.key))
        .await;
    assert_eq!(conversations_before.status, 200);

    // The flood: refused with 429, Retry-After, the headers and a problem; nothing runs.
    for _ in 0..3 {
        let refused = chat(alice.key.clone()).await;
        refused.assert_problem(429);
        assert_eq!(limit_headers(&refused), [3, 3, 0, 0]);
        let retry: u64 = refused.headers["retry-after"]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        // 3 an hour: the next token is 20 minutes away (less what the test took).
        assert!((1..=1200).contains(&retry), "Retry-After {retry}");
        assert!(retry > 60, "the hourly bucket decides: {retry}");
        assert_eq!(refused.body["retry_after"], retry);
        assert!(
            refused.body["detail"]
                .as_str()
                .unwrap()
                .contains("rate limit"),
            "{}",
            refused.text
        );
    }
    let executions = h
        .get("/api/v1/workflows/executions", Some(&alice.key))
        .await;
    assert_eq!(
        executions.body["total_count"], conversations_before.body["total_count"],
        "a refused chat ran: {}",
        executions.text
    );

    // Another user is not affected.
    let other = chat(bob.key.clone()).await;
    assert_eq!(other.status, 200, "{}", other.text);
    assert_eq!(limit_headers(&other), [3, 3, 2, 2]);

    // Another route of alice's is not affected: the default limit, with its own headers.
    let listing = h.get(&format!("{W}/definitions"), Some(&alice.key)).await;
    assert_eq!(listing.status, 200, "{}", listing.text);
    let [per_minute, per_hour, remaining_minute, _] = limit_headers(&listing);
    assert_eq!((per_minute, per_hour), (50, 1000));
    // Two listings of executions and this one.
    assert_eq!(remaining_minute, 47);

    // Health and metrics are not limited and carry no limit headers.
    for path in ["/healthz", "/live", "/metrics"] {
        let answer = h.get(path, None).await;
        assert_eq!(answer.status, 200, "{path}");
        assert!(answer.headers.get("x-ratelimit-limit-minute").is_none());
    }

    // The refusals are counted.
    let s = parse_prometheus(&scrape(&h, Some("text/plain")).await.text);
    assert_eq!(sample(&s, "chatter_http_rate_limited_total"), 3.0);
    assert_eq!(
        sample(
            &s,
            &format!(
                "chatter_http_requests_total{{method=\"POST\",route=\"{CHAT}\",status=\"429\"}}"
            )
        ),
        3.0
    );
}

async fn anonymous_clients_are_limited_by_address(h: Harness) {
    // No credentials: the client's address is the key (here 50 a minute on the default).
    for i in 0..50u64 {
        let answer = h.get(&format!("{W}/node-types"), None).await;
        assert_ne!(answer.status, 429, "request {i}");
        assert_eq!(limit_headers(&answer)[2], 49 - i);
    }
    let refused = h.get(&format!("{W}/definitions"), None).await;
    refused.assert_problem(429);
    assert!(refused.headers.contains_key("retry-after"));
    // An authenticated user from the same address has buckets of its own.
    let ok = h.get(&format!("{W}/definitions"), Some(ADMIN_KEY)).await;
    assert_eq!(ok.status, 200, "{}", ok.text);
}

async fn pool_and_cache_series(h: Harness) {
    let s = parse_prometheus(&scrape(&h, Some("text/plain")).await.text);
    let backend = h.store().backend();
    let pool = h.store().pool_stats();
    assert_eq!(
        sample(
            &s,
            &format!("chatter_db_pool_connections{{backend=\"{backend}\",state=\"max\"}}")
        ),
        pool.max_size as f64
    );
    assert!(pool.max_size >= 1);
    for name in [
        "chatter_store_cache_hits_total",
        "chatter_store_cache_misses_total",
        "chatter_db_pool_waiting",
    ] {
        sample(&s, &format!("{name}{{backend=\"{backend}\"}}"));
    }
    // Reading a definition twice: the store's cache answers the second read.
    let alice = h.user("alice", &["user"]).await;
    let id = three_node_definition(&h, &alice.key).await;
    let misses_before = sample(
        &s,
        &format!("chatter_store_cache_misses_total{{backend=\"{backend}\"}}"),
    );
    for _ in 0..2 {
        let got = h
            .get(&format!("{W}/definitions/{id}"), Some(&alice.key))
            .await;
        assert_eq!(got.status, 200, "{}", got.text);
    }
    let after = parse_prometheus(&scrape(&h, Some("text/plain")).await.text);
    let stats = h.store().cache_stats();
    assert_eq!(
        sample(
            &after,
            &format!("chatter_store_cache_hits_total{{backend=\"{backend}\"}}")
        ),
        stats.hits as f64
    );
    assert_eq!(
        sample(
            &after,
            &format!("chatter_store_cache_misses_total{{backend=\"{backend}\"}}")
        ),
        stats.misses as f64
    );
    assert!(stats.hits + stats.misses > 0);
    assert!(stats.misses as f64 >= misses_before);
}

#[test]
fn config_file_sets_limits_and_refuses_bad_ones() {
    let dir = std::env::temp_dir().join(format!("chatter-http-ops-cfg-{}", ulid::Ulid::new()));
    std::fs::create_dir_all(&dir).unwrap();
    let write = |name: &str, doc: serde_json::Value| {
        let path = dir.join(name);
        std::fs::write(&path, doc.to_string()).unwrap();
        path
    };
    let good = write(
        "good.json",
        json!({"metrics_token": "t0k3n", "rate_limits": {
            "default": {"per_minute": 7, "per_hour": 70},
            "routes": {"/api/v1/workflows/execute/chat": {"per_minute": 2, "per_hour": 9}}}}),
    );
    let config = ServerConfig::new("sqlite::memory:")
        .with_file(&good)
        .unwrap();
    assert_eq!(config.metrics_token.as_deref(), Some("t0k3n"));
    assert!(config.rate_limits.enabled);
    assert_eq!(
        config.rate_limits.default,
        Limit {
            per_minute: 7,
            per_hour: 70
        }
    );
    // The routes given replace the default routes.
    assert_eq!(config.rate_limits.routes.len(), 1);
    assert_eq!(config.rate_limits.routes[CHAT].per_hour, 9);

    for (name, doc, needle) in [
        (
            "zero.json",
            json!({"rate_limits": {"default": {"per_minute": 0, "per_hour": 1}}}),
            "must be positive",
        ),
        (
            "unknown.json",
            json!({"rate_limits": {"per_second": 3}}),
            "unknown field",
        ),
        (
            "half.json",
            json!({"rate_limits": {"default": {"per_minute": 3}}}),
            "per_hour",
        ),
        ("blank.json", json!({"metrics_token": "  "}), "blank"),
    ] {
        let path = write(name, doc);
        let err = ServerConfig::new("sqlite::memory:")
            .with_file(&path)
            .unwrap_err()
            .to_string();
        assert!(err.contains(needle), "{name}: {err}");
        assert!(err.contains(name), "{name}: the file is named: {err}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blank_metrics_token_or_zero_limit_does_not_start() {
    let mut config = common::config();
    config.metrics_token = Some(String::new());
    let store = chatter_store::connect("sqlite::memory:").await.unwrap();
    let err = chatter_http::server::Server::start_with_store(config, store)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("metrics token"), "{err}");

    let mut config = common::config();
    config.rate_limits.routes.insert(
        CHAT.to_owned(),
        Limit {
            per_minute: 0,
            per_hour: 5,
        },
    );
    let store = chatter_store::connect("sqlite::memory:").await.unwrap();
    let err = chatter_http::server::Server::start_with_store(config, store)
        .await
        .unwrap_err();
    assert!(err.to_string().contains(CHAT), "{err}");
}
