//! Orchestration end to end over real HTTP: the `Orchestrator` and its `OrchestratedModel`s over
//! real `OpenAiModel` clients, each pointed at its own fake OpenAI-compatible server on
//! 127.0.0.1. The servers answer from a script (replies, HTTP errors with headers, hangs, slow
//! or broken SSE streams) and record every request with its arrival time, so the tests prove
//! request counts exactly and delays as lower bounds (never upper wall-clock bounds: the
//! machine is shared).

#![cfg(feature = "openai")]
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use chatter_core::model::{ChatModel, ChatRequest, ChatResponse, FinishReason, Message, Usage};
use chatter_core::orchestration::{
    AttemptOutcome, AttemptRecord, BreakerState, Budget, BuiltinProviders, CallContext,
    ExecutionScope, OrchestratedResponse, OrchestrationEvent, Orchestrator, ProviderConfig,
    ProviderFactory, RegistryConfig, estimate_tokens,
};
use chatter_core::providers::{OpenAiConfig, OpenAiModel};
use chatter_core::{Error, ErrorClass, ModelRegistry};
use futures::StreamExt;
use serde_json::{Value, json};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

// ---------------------------------------------------------------------------------------------
// The fake OpenAI-compatible server

/// How an SSE stream ends.
#[derive(Clone, Debug)]
enum End {
    /// A `finish_reason: stop` chunk, a usage chunk, then `[DONE]`.
    Done { prompt: u64, completion: u64 },
    /// The body just ends (no finish reason, no `[DONE]`): a broken connection.
    Cut,
    /// Nothing more is ever sent.
    Stall,
}

/// What the server does with one request.
#[derive(Clone, Debug)]
enum Answer {
    /// 200 with a `chat.completion` body and this usage.
    Reply {
        text: &'static str,
        prompt: u64,
        completion: u64,
    },
    /// This HTTP status with these headers and an OpenAI-shaped error body.
    Status {
        code: u16,
        headers: Vec<(&'static str, String)>,
    },
    /// Never answers.
    Hang,
    /// Waits this long, then answers.
    Late(u64, Box<Answer>),
    /// An SSE stream: each chunk after `delay_ms`, then `end`.
    Stream {
        chunks: Vec<&'static str>,
        delay_ms: u64,
        end: End,
    },
}

fn reply(text: &'static str, prompt: u64, completion: u64) -> Answer {
    Answer::Reply {
        text,
        prompt,
        completion,
    }
}

fn status(code: u16) -> Answer {
    Answer::Status {
        code,
        headers: Vec::new(),
    }
}

fn status_with(code: u16, headers: &[(&'static str, &str)]) -> Answer {
    Answer::Status {
        code,
        headers: headers.iter().map(|(k, v)| (*k, (*v).to_owned())).collect(),
    }
}

/// One request as the server saw it.
#[derive(Clone, Debug)]
struct Hit {
    at: Instant,
    body: Value,
    idempotency_key: Option<String>,
    authorization: Option<String>,
}

struct ServerState {
    name: &'static str,
    script: Mutex<VecDeque<Answer>>,
    otherwise: Answer,
    hits: Mutex<Vec<Hit>>,
}

/// A fake OpenAI-compatible server on a free loopback port.
struct Server {
    base: String,
    state: Arc<ServerState>,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<()>,
}

impl Server {
    /// Starts a server answering `script` in order, then `otherwise` forever.
    async fn start(name: &'static str, script: Vec<Answer>, otherwise: Answer) -> Server {
        let state = Arc::new(ServerState {
            name,
            script: Mutex::new(script.into()),
            otherwise,
            hits: Mutex::new(Vec::new()),
        });
        let app = Router::new()
            .route("/v1/chat/completions", post(completions))
            .with_state(Arc::clone(&state));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(async move {
                    let _ = stopped.await;
                })
                .await
                .unwrap();
        });
        Server {
            base: format!("http://{addr}/v1"),
            state,
            stop: Some(stop),
            task,
        }
    }

    fn hits(&self) -> Vec<Hit> {
        self.state.hits.lock().unwrap().clone()
    }

    fn count(&self) -> usize {
        self.state.hits.lock().unwrap().len()
    }

    fn arrivals(&self) -> Vec<Instant> {
        self.hits().into_iter().map(|h| h.at).collect()
    }

    /// Stops listening and closes every connection; afterwards connections are refused.
    async fn shut_down(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        tokio::time::timeout(Duration::from_secs(5), &mut self.task)
            .await
            .expect("the server stops within 5 s")
            .unwrap();
    }
}

async fn completions(
    State(state): State<Arc<ServerState>>,
    headers: HeaderMap,
    body: String,
) -> Response {
    let body: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
    state.hits.lock().unwrap().push(Hit {
        at: Instant::now(),
        body: body.clone(),
        idempotency_key: headers
            .get("idempotency-key")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned),
        authorization: headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned),
    });
    let mut answer = state
        .script
        .lock()
        .unwrap()
        .pop_front()
        .unwrap_or_else(|| state.otherwise.clone());
    if let Answer::Late(delay, then) = answer {
        tokio::time::sleep(ms(delay)).await;
        answer = *then;
    }
    // The answering model names its server, so a response shows where it came from.
    let model = format!("{}@{}", body["model"].as_str().unwrap_or(""), state.name);
    match answer {
        Answer::Reply {
            text,
            prompt,
            completion,
        } => axum::Json(json!({
            "id": "chatcmpl-1", "object": "chat.completion", "model": model,
            "choices": [{"index": 0, "finish_reason": "stop",
                         "message": {"role": "assistant", "content": text}}],
            "usage": {"prompt_tokens": prompt, "completion_tokens": completion,
                      "total_tokens": prompt + completion}
        }))
        .into_response(),
        Answer::Status { code, headers } => {
            let mut response = (
                StatusCode::from_u16(code).unwrap(),
                axum::Json(json!({"error": {"message": format!("{} says {code}", state.name)}})),
            )
                .into_response();
            for (name, value) in headers {
                response.headers_mut().insert(
                    HeaderName::from_static(name),
                    HeaderValue::from_str(&value).unwrap(),
                );
            }
            response
        }
        Answer::Hang | Answer::Late(..) => std::future::pending::<Response>().await,
        Answer::Stream {
            chunks,
            delay_ms,
            end,
        } => {
            let chunk = |delta: Value, finish: Option<&str>| {
                let c = json!({"id": "c1", "object": "chat.completion.chunk", "model": model,
                               "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]});
                format!("data: {c}\n\n")
            };
            let mut parts: Vec<(String, u64)> = chunks
                .into_iter()
                .map(|text| (chunk(json!({"content": text}), None), delay_ms))
                .collect();
            let tail = if let End::Done { prompt, completion } = end {
                parts.push((chunk(json!({}), Some("stop")), 0));
                let usage = json!({"model": model, "choices": [],
                    "usage": {"prompt_tokens": prompt, "completion_tokens": completion,
                              "total_tokens": prompt + completion}});
                parts.push((format!("data: {usage}\n\n"), 0));
                parts.push(("data: [DONE]\n\n".to_owned(), 0));
                false
            } else {
                matches!(end, End::Stall)
            };
            let stream = futures::stream::iter(parts).then(|(part, delay)| async move {
                // Separate writes, each after its delay: the client sees the chunks one by one.
                tokio::time::sleep(Duration::from_millis(delay)).await;
                Ok::<_, std::convert::Infallible>(part)
            });
            let stream = if tail {
                stream.chain(futures::stream::pending()).boxed()
            } else {
                stream.boxed()
            };
            Response::builder()
                .header(header::CONTENT_TYPE, "text/event-stream")
                .body(Body::from_stream(stream))
                .unwrap()
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The orchestrator over real clients

/// Builds the real OpenAI-compatible client of a configured provider.
fn openai_client(p: &ProviderConfig) -> chatter_core::Result<Arc<dyn ChatModel>> {
    let model = OpenAiModel::new(
        OpenAiConfig::default()
            .base_url(p.base_url.clone().unwrap_or_default())
            .provider_name(p.name.clone())
            .api_key("sk-test")
            .request_timeout(Duration::from_secs(10)),
    )?;
    Ok(Arc::new(model))
}

fn factory() -> Arc<dyn ProviderFactory> {
    Arc::new(openai_client)
}

/// Three providers, one model each, one server each; the default route is
/// `a-large` → `b-medium` → `c-small`. No jitter, so backoffs are exact; no breaker unless a
/// test turns it on.
fn config(servers: &Servers, extra: &str) -> RegistryConfig {
    let base = format!(
        r#"
providers:
  - {{name: alpha, kind: openai, base_url: "{a}", default: true, default_config: {{temperature: 0.3}}}}
  - {{name: beta, kind: openai, base_url: "{b}"}}
  - {{name: gamma, kind: openai, base_url: "{c}"}}
models:
  - name: a-large
    provider: alpha
    api_model: large-2025
    max_output_tokens: 4096
    capabilities: {{tools: true, json: true, streaming: true}}
    price: {{input_per_1k: 0.0025, output_per_1k: 0.01}}
  - name: b-medium
    provider: beta
    api_model: medium-2025
    capabilities: {{tools: true, json: true, streaming: true}}
    price: {{input_per_1k: 0.001, output_per_1k: 0.002}}
  - name: c-small
    provider: gamma
    api_model: small-2025
    capabilities: {{tools: true, json: true, streaming: true}}
    price: {{input_per_1k: 0.0005, output_per_1k: 0.0015}}
routing:
  default_model: a-large
  default_fallbacks: [b-medium, c-small]
resilience:
  max_attempts: 3
  initial_backoff_ms: 20
  max_backoff_ms: 2000
  multiplier: 2
  jitter: 0
  timeout_ms: 5000
  breaker: {{failure_threshold: 0}}
"#,
        a = servers.alpha.base,
        b = servers.beta.base,
        c = servers.gamma.base,
    );
    let mut value: Value = serde_norway::from_str(&base).unwrap();
    let extra: Value = serde_norway::from_str(extra).unwrap();
    merge(&mut value, extra);
    RegistryConfig::from_json(&value.to_string()).unwrap()
}

/// Merges `extra` into `base`, object keys recursively (the config here is three levels deep).
fn merge(base: &mut Value, extra: Value) {
    match (base, extra) {
        (Value::Object(b), Value::Object(e)) => {
            for (k, v) in e {
                match b.get_mut(&k) {
                    Some(slot) => merge(slot, v),
                    None => {
                        b.insert(k, v);
                    }
                }
            }
        }
        (slot, v) => *slot = v,
    }
}

struct Servers {
    alpha: Server,
    beta: Server,
    gamma: Server,
}

impl Servers {
    /// Alpha and beta answer from their scripts, then with `ok`; gamma always answers.
    async fn start(alpha: Vec<Answer>, beta: Vec<Answer>) -> Servers {
        Servers::with_defaults(
            alpha,
            reply("alpha ok", 10, 2),
            beta,
            reply("beta ok", 10, 2),
        )
        .await
    }

    async fn with_defaults(
        alpha: Vec<Answer>,
        alpha_otherwise: Answer,
        beta: Vec<Answer>,
        beta_otherwise: Answer,
    ) -> Servers {
        Servers {
            alpha: Server::start("alpha", alpha, alpha_otherwise).await,
            beta: Server::start("beta", beta, beta_otherwise).await,
            gamma: Server::start("gamma", vec![], reply("gamma ok", 1000, 500)).await,
        }
    }

    fn counts(&self) -> [usize; 3] {
        [self.alpha.count(), self.beta.count(), self.gamma.count()]
    }
}

/// Collects observer events.
#[derive(Default)]
struct Log(Mutex<Vec<OrchestrationEvent>>);

impl Log {
    fn events(&self) -> Vec<OrchestrationEvent> {
        self.0.lock().unwrap().clone()
    }
    fn fallbacks(&self) -> Vec<(String, String)> {
        self.events()
            .into_iter()
            .filter_map(|e| match e {
                OrchestrationEvent::Fallback { from, to, .. } => Some((from, to)),
                _ => None,
            })
            .collect()
    }
    fn transitions(&self) -> Vec<(BreakerState, BreakerState)> {
        self.events()
            .into_iter()
            .filter_map(|e| match e {
                OrchestrationEvent::BreakerTransition { from, to, .. } => Some((from, to)),
                _ => None,
            })
            .collect()
    }
    fn retry_waits(&self) -> Vec<Option<u64>> {
        self.events()
            .into_iter()
            .filter_map(|e| match e {
                OrchestrationEvent::AttemptFailed { retry_in_ms, .. } => Some(retry_in_ms),
                _ => None,
            })
            .collect()
    }
}

struct Rig {
    orchestrator: Arc<Orchestrator>,
    registry: ModelRegistry,
    log: Arc<Log>,
}

fn rig(config: RegistryConfig) -> Rig {
    let log = Arc::new(Log::default());
    let sink = Arc::clone(&log);
    let orchestrator = Arc::new(
        Orchestrator::builder(config)
            .factory(factory())
            .observer(Arc::new(move |_: &CallContext, e: &OrchestrationEvent| {
                sink.0.lock().unwrap().push(e.clone());
            }))
            .build()
            .unwrap(),
    );
    let mut registry = ModelRegistry::new();
    orchestrator.register(&mut registry);
    Rig {
        orchestrator,
        registry,
        log,
    }
}

impl Rig {
    async fn call(&self, request: ChatRequest) -> chatter_core::Result<OrchestratedResponse> {
        self.orchestrator
            .call(&CallContext::default(), request, None)
            .await
    }
}

fn user(text: &str) -> ChatRequest {
    ChatRequest {
        messages: vec![Message::user(text)].into(),
        ..ChatRequest::default()
    }
}

fn explicit(model: &str, text: &str) -> ChatRequest {
    ChatRequest {
        model: Some(model.to_owned()),
        ..user(text)
    }
}

/// `(model, attempt, class or outcome, delay before)` of each attempt.
fn summary(attempts: &[AttemptRecord]) -> Vec<(String, u32, String, u64)> {
    attempts
        .iter()
        .map(|a| {
            let outcome = match &a.outcome {
                AttemptOutcome::Succeeded => "ok".to_owned(),
                AttemptOutcome::Failed { class, .. } => class.clone(),
                AttemptOutcome::CircuitOpen => "circuit_open".to_owned(),
                other => format!("{other:?}"),
            };
            (a.model.clone(), a.attempt, outcome, a.delay_before_ms)
        })
        .collect()
}

fn row(model: &str, attempt: u32, outcome: &str, delay: u64) -> (String, u32, String, u64) {
    (model.to_owned(), attempt, outcome.to_owned(), delay)
}

fn ms(d: u64) -> Duration {
    Duration::from_millis(d)
}

/// Asserts `later - earlier >= at_least` (a lower bound only).
fn assert_gap(earlier: Instant, later: Instant, at_least: u64, what: &str) {
    let gap = later.saturating_duration_since(earlier);
    assert!(
        gap >= ms(at_least),
        "{what}: {gap:?} apart, expected at least {at_least} ms"
    );
}

// ---------------------------------------------------------------------------------------------
// Retries

#[tokio::test]
async fn a_429_with_retry_after_is_retried_once_after_the_advertised_delay() {
    let s = Servers::start(
        vec![
            status_with(429, &[("retry-after", "1")]),
            reply("Bonjour.", 10, 2),
            status_with(429, &[("retry-after-ms", "150")]),
            reply("Salut.", 10, 2),
        ],
        vec![],
    )
    .await;
    let r = rig(config(&s, "{}"));

    let out = r.call(user("hello")).await.unwrap();
    assert_eq!(out.response.message.content, "Bonjour.");
    assert_eq!(out.answered_by, "a-large");
    assert_eq!(s.counts(), [2, 0, 0]);
    let t = s.alpha.arrivals();
    assert_gap(t[0], t[1], 1000, "retry after `Retry-After: 1`");
    assert_eq!(
        summary(&out.attempts),
        [
            row("a-large", 1, "rate_limit", 0),
            row("a-large", 2, "ok", 1000)
        ]
    );
    match &out.attempts[0].outcome {
        AttemptOutcome::Failed { error, .. } => assert_eq!(
            error,
            "model `alpha/large-2025` failed (rate_limit): HTTP 429 Too Many Requests: alpha says 429"
        ),
        other => panic!("{other:?}"),
    }
    assert_eq!(r.log.retry_waits(), [Some(1000)]);

    // `retry-after-ms` (OpenAI's precise header) is honoured too.
    let out = r.call(user("hello again")).await.unwrap();
    assert_eq!(out.response.message.content, "Salut.");
    assert_eq!(s.counts(), [4, 0, 0]);
    let t = s.alpha.arrivals();
    assert_gap(t[2], t[3], 150, "retry after `retry-after-ms: 150`");
    assert_eq!(out.attempts[1].delay_before_ms, 150);
}

/// `unix_secs` as an IMF-fixdate (`Sun, 06 Nov 1994 08:49:37 GMT`), the HTTP-date form.
fn http_date(unix_secs: u64) -> String {
    let (days, secs) = (unix_secs / 86_400, unix_secs % 86_400);
    // Civil from days (H. Hinnant), for dates after 1970.
    let z = days + 719_468;
    let (era, doe) = (z / 146_097, z % 146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    let weekday = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"][(days % 7) as usize];
    let months = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    format!(
        "{weekday}, {day:02} {} {year} {:02}:{:02}:{:02} GMT",
        months[(month - 1) as usize],
        secs / 3600,
        secs % 3600 / 60,
        secs % 60
    )
}

#[test]
fn http_dates_are_formatted_as_imf_fixdate() {
    assert_eq!(http_date(784_111_777), "Sun, 06 Nov 1994 08:49:37 GMT");
    assert_eq!(http_date(951_782_400), "Tue, 29 Feb 2000 00:00:00 GMT");
}

#[tokio::test]
async fn a_429_with_an_http_date_retry_after_waits_until_that_date() {
    // Two to three seconds ahead, on a whole second as an HTTP-date must be.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let date = http_date(now + 3);
    let s = Servers::start(
        vec![
            status_with(429, &[("retry-after", &date)]),
            reply("Later.", 10, 2),
        ],
        vec![],
    )
    .await;
    let r = rig(config(&s, "resilience: {max_backoff_ms: 5000}"));
    let out = r.call(user("hello")).await.unwrap();
    assert_eq!(out.response.message.content, "Later.");
    assert_eq!(s.counts(), [2, 0, 0]);
    let waited = out.attempts[1].delay_before_ms;
    // Up to 3 s; far more than the 20 ms backoff unless this machine stalled for seconds.
    assert!(
        (500..=3000).contains(&waited),
        "waited {waited} ms for {date}"
    );
    let t = s.alpha.arrivals();
    assert_gap(t[0], t[1], waited, "retry after the HTTP-date");
}

#[tokio::test]
async fn server_errors_500_500_200_take_three_requests_with_exponential_backoff() {
    let s = Servers::start(
        vec![status(500), status(500), reply("Done.", 1234, 567)],
        vec![],
    )
    .await;
    let r = rig(config(&s, "{}"));
    let request = ChatRequest {
        max_tokens: Some(10_000),
        ..user("do it")
    };
    let out = r.call(request).await.unwrap();

    assert_eq!(s.counts(), [3, 0, 0]);
    let t = s.alpha.arrivals();
    assert_gap(t[0], t[1], 20, "first retry");
    assert_gap(t[1], t[2], 40, "second retry");
    assert_eq!(
        summary(&out.attempts),
        [
            row("a-large", 1, "server", 0),
            row("a-large", 2, "server", 20),
            row("a-large", 3, "ok", 40)
        ]
    );
    assert_eq!(r.log.retry_waits(), [Some(20), Some(40)]);

    // Every attempt sent the same request: the API model name, the provider's default
    // temperature, max_tokens clamped to the model's output limit.
    let bodies: Vec<Value> = s.alpha.hits().into_iter().map(|h| h.body).collect();
    assert_eq!(
        bodies[0],
        json!({"model": "large-2025", "messages": [{"role": "user", "content": "do it"}],
               "temperature": 0.3, "max_tokens": 4096})
    );
    assert!(bodies.iter().all(|b| *b == bodies[0]));

    // Priced from the table: 1234 × 0.0025/1k + 567 × 0.01/1k, exactly.
    assert_eq!(
        out.response.usage,
        Usage {
            prompt_tokens: 1234,
            completion_tokens: 567,
            total_tokens: 1801,
            cost: 0.008755
        }
    );
    assert_eq!(out.response.model, "large-2025@alpha");
    let m = r.orchestrator.metrics();
    assert_eq!(
        (
            m.llm_requests_total,
            m.llm_request_failures_total,
            m.llm_tokens_total,
            m.llm_cost_usd_total
        ),
        (3, 2, 1801, 0.008755)
    );
}

#[tokio::test]
async fn when_retries_are_spent_the_call_falls_back_in_chain_order() {
    let s = Servers::with_defaults(vec![], status(500), vec![], status(502)).await;
    let r = rig(config(&s, "{}"));
    let out = r.call(user("anyone?")).await.unwrap();
    assert_eq!(out.answered_by, "c-small");
    assert_eq!(out.response.message.content, "gamma ok");
    assert_eq!(s.counts(), [3, 3, 1]);
    // Every alpha request came before every beta request, and those before gamma's.
    let (a, b, c) = (s.alpha.arrivals(), s.beta.arrivals(), s.gamma.arrivals());
    assert!(a[2] <= b[0] && b[2] <= c[0]);
    assert_gap(b[0], b[1], 20, "beta's first retry");
    assert_gap(b[1], b[2], 40, "beta's second retry");
    assert_eq!(
        summary(&out.attempts),
        [
            row("a-large", 1, "server", 0),
            row("a-large", 2, "server", 20),
            row("a-large", 3, "server", 40),
            row("b-medium", 1, "server", 0),
            row("b-medium", 2, "server", 20),
            row("b-medium", 3, "server", 40),
            row("c-small", 1, "ok", 0),
        ]
    );
    assert_eq!(
        r.log.fallbacks(),
        [
            ("a-large".to_owned(), "b-medium".to_owned()),
            ("b-medium".to_owned(), "c-small".to_owned())
        ]
    );
    // 1000 × 0.0005/1k + 500 × 0.0015/1k.
    assert_eq!(out.response.usage.cost, 0.00125);
    let m = r.orchestrator.metrics();
    assert_eq!(
        (
            m.llm_requests_total,
            m.llm_fallbacks_total,
            m.llm_cost_usd_total
        ),
        (7, 2, 0.00125)
    );
    assert_eq!(m.models["a-large"].fallbacks_from, 1);
    assert_eq!(m.models["b-medium"].failures, 3);
}

#[tokio::test]
async fn client_errors_are_never_retried_and_only_auth_failures_fall_back() {
    let s = Servers::start(
        vec![
            status(400),
            status(401),
            status_with(429, &[("retry-after", "5")]),
        ],
        vec![],
    )
    .await;
    let r = rig(config(&s, "{}"));

    // 400: the request itself is at fault; no retry, no other model.
    let err = r.call(user("malformed")).await.unwrap_err();
    assert_eq!(
        err.to_string(),
        "model `alpha/large-2025` failed (bad_request): HTTP 400 Bad Request: alpha says 400"
    );
    assert_eq!(s.counts(), [1, 0, 0]);

    // 401: not retried on alpha, but another provider may take it.
    let out = r.call(user("locked out")).await.unwrap();
    assert_eq!(out.answered_by, "b-medium");
    assert_eq!(s.counts(), [2, 1, 0]);
    assert_eq!(
        summary(&out.attempts),
        [row("a-large", 1, "auth", 0), row("b-medium", 1, "ok", 0)]
    );

    // 429 asking for 5 s, beyond max_backoff_ms (2 s): the next model at once.
    let out = r.call(user("busy")).await.unwrap();
    assert_eq!(out.answered_by, "b-medium");
    assert_eq!(s.counts(), [3, 2, 0]);
    assert_eq!(
        summary(&out.attempts),
        [
            row("a-large", 1, "rate_limit", 0),
            row("b-medium", 1, "ok", 0)
        ]
    );
    assert_eq!(r.log.retry_waits(), [None, None, None]);
}

#[tokio::test]
async fn a_hanging_server_is_cut_per_attempt_then_the_second_server_answers() {
    let s = Servers::with_defaults(vec![], Answer::Hang, vec![], reply("beta ok", 10, 2)).await;
    let r = rig(config(&s, "resilience: {timeout_ms: 200}"));
    let started = Instant::now();
    let out = r.call(user("are you there?")).await.unwrap();

    assert_eq!(out.answered_by, "b-medium");
    assert_eq!(s.counts(), [3, 1, 0]);
    // Each attempt's clock starts before its request arrives, so the bounds are counted from
    // the start of the call: timeout, backoff 20, timeout, backoff 40, timeout.
    let (a, b) = (s.alpha.arrivals(), s.beta.arrivals());
    assert_gap(started, a[1], 200 + 20, "first timeout and backoff");
    assert_gap(
        started,
        a[2],
        200 + 20 + 200 + 40,
        "second timeout and backoff",
    );
    assert_gap(started, b[0], 200 + 20 + 200 + 40 + 200, "third timeout");
    assert_eq!(
        summary(&out.attempts),
        [
            row("a-large", 1, "timeout", 0),
            row("a-large", 2, "timeout", 20),
            row("a-large", 3, "timeout", 40),
            row("b-medium", 1, "ok", 0),
        ]
    );
    match &out.attempts[2].outcome {
        AttemptOutcome::Failed { error, .. } => {
            assert_eq!(
                error,
                "model `a-large` failed (timeout): no answer within 200 ms"
            );
        }
        other => panic!("{other:?}"),
    }
    assert!(out.attempts[..3].iter().all(|a| a.duration_ms >= 200));
    assert_eq!(
        r.log.fallbacks(),
        [("a-large".to_owned(), "b-medium".to_owned())]
    );
}

#[tokio::test]
async fn a_server_that_is_down_is_retried_as_a_connection_failure_then_falls_back() {
    let mut s = Servers::start(vec![], vec![]).await;
    s.alpha.shut_down().await;
    let r = rig(config(&s, "{}"));
    let out = r.call(user("hello?")).await.unwrap();
    assert_eq!(out.answered_by, "b-medium");
    assert_eq!(s.counts(), [0, 1, 0]);
    assert_eq!(
        summary(&out.attempts),
        [
            row("a-large", 1, "connection", 0),
            row("a-large", 2, "connection", 20),
            row("a-large", 3, "connection", 40),
            row("b-medium", 1, "ok", 0),
        ]
    );
}

// ---------------------------------------------------------------------------------------------
// Circuit breaker

#[tokio::test]
async fn the_breaker_opens_keeps_requests_off_the_server_then_probes_once_after_the_cooldown() {
    let s = Servers::start(
        vec![
            status(500),
            status(500),
            status(500),
            status(500),
            Answer::Late(100, Box::new(reply("alpha is back", 10, 2))),
        ],
        vec![],
    )
    .await;
    let r = rig(config(
        &s,
        "resilience: {max_attempts: 2, breaker: {failure_threshold: 3, cooldown_ms: 600}}",
    ));
    let ask = || user("status?");

    // Two failures, then the fallback.
    let out = r.call(ask()).await.unwrap();
    assert_eq!(out.answered_by, "b-medium");
    assert_eq!(s.counts(), [2, 1, 0]);
    // The third consecutive failure opens the circuit, which also ends the retries.
    let out = r.call(ask()).await.unwrap();
    assert_eq!(
        summary(&out.attempts),
        [row("a-large", 1, "server", 0), row("b-medium", 1, "ok", 0)]
    );
    assert_eq!(s.counts(), [3, 2, 0]);
    assert_eq!(r.orchestrator.breaker_state("a-large"), BreakerState::Open);

    // Open: the call does not reach alpha's server at all.
    let out = r.call(ask()).await.unwrap();
    assert_eq!(
        summary(&out.attempts),
        [
            row("a-large", 1, "circuit_open", 0),
            row("b-medium", 1, "ok", 0)
        ]
    );
    assert_eq!(s.counts(), [3, 3, 0]);
    // Named explicitly (no fallbacks), it fails with the cooldown left.
    match r.call(explicit("a-large", "status?")).await {
        Err(Error::Model {
            class: ErrorClass::Server,
            retry_after_ms: Some(left),
            message,
            ..
        }) => {
            assert!(left > 0 && left <= 600, "{left}");
            assert_eq!(
                message,
                format!("circuit breaker open; next probe in {left} ms")
            );
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(s.counts(), [3, 3, 0]);

    // After the cooldown exactly one probe reaches alpha; it fails and the circuit reopens.
    tokio::time::sleep(ms(650)).await;
    let out = r.call(ask()).await.unwrap();
    assert_eq!(
        summary(&out.attempts),
        [row("a-large", 1, "server", 0), row("b-medium", 1, "ok", 0)]
    );
    assert_eq!(s.counts(), [4, 4, 0]);
    let t = s.alpha.arrivals();
    assert_gap(t[2], t[3], 600, "the probe waited for the cooldown");
    assert_eq!(r.orchestrator.breaker_state("a-large"), BreakerState::Open);
    r.call(ask()).await.unwrap();
    assert_eq!(s.counts(), [4, 5, 0], "reopened: alpha is skipped again");

    // The next probe succeeds and the circuit closes. While it is in flight a concurrent call
    // is not let through: one probe only.
    tokio::time::sleep(ms(650)).await;
    let (probe, other) = tokio::join!(r.call(ask()), r.call(ask()));
    let (probe, other) = (probe.unwrap(), other.unwrap());
    assert_eq!(probe.answered_by, "a-large");
    assert_eq!(probe.response.message.content, "alpha is back");
    assert_eq!(
        summary(&other.attempts),
        [
            row("a-large", 1, "circuit_open", 0),
            row("b-medium", 1, "ok", 0)
        ]
    );
    assert_eq!(s.counts(), [5, 6, 0]);
    let t = s.alpha.arrivals();
    assert_gap(t[3], t[4], 600, "the second probe waited for the cooldown");
    assert_eq!(
        r.orchestrator.breaker_state("a-large"),
        BreakerState::Closed
    );

    use BreakerState::{Closed, HalfOpen, Open};
    assert_eq!(
        r.log.transitions(),
        [
            (Closed, Open),
            (Open, HalfOpen),
            (HalfOpen, Open),
            (Open, HalfOpen),
            (HalfOpen, Closed)
        ]
    );
    let m = &r.orchestrator.metrics().models["a-large"];
    assert_eq!((m.requests, m.failures, m.breaker), (5, 4, Closed));
}

// ---------------------------------------------------------------------------------------------
// Streaming

/// Collects streamed tokens with their arrival times.
#[derive(Default, Clone)]
struct Tokens(Arc<Mutex<Vec<(Instant, String)>>>);

impl Tokens {
    fn sink(&self) -> impl Fn(&str) + Send + Sync + use<> {
        let tokens = Arc::clone(&self.0);
        move |t: &str| tokens.lock().unwrap().push((Instant::now(), t.to_owned()))
    }
    fn texts(&self) -> Vec<String> {
        self.0
            .lock()
            .unwrap()
            .iter()
            .map(|(_, t)| t.clone())
            .collect()
    }
    fn times(&self) -> Vec<Instant> {
        self.0.lock().unwrap().iter().map(|(t, _)| *t).collect()
    }
}

#[tokio::test]
async fn a_slow_sse_stream_reaches_the_caller_token_by_token_in_order() {
    let s = Servers::start(
        vec![Answer::Stream {
            chunks: vec!["One ", "two ", "three"],
            delay_ms: 80,
            end: End::Done {
                prompt: 20,
                completion: 3,
            },
        }],
        vec![],
    )
    .await;
    let r = rig(config(&s, "{}"));
    let auto = r.registry.get(None).unwrap();
    assert_eq!(auto.name(), "auto");
    let tokens = Tokens::default();
    let response = auto
        .chat_stream(user("count to three"), &tokens.sink())
        .await
        .unwrap();

    assert_eq!(tokens.texts(), ["One ", "two ", "three"]);
    // Chunk k is written 80 ms × k after the request arrived: it cannot be seen earlier.
    let arrived = s.alpha.arrivals()[0];
    for (k, at) in tokens.times().into_iter().enumerate() {
        assert_gap(arrived, at, 80 * (k as u64 + 1), "token");
    }
    assert_eq!(response.message.content, "One two three");
    assert_eq!(response.finish_reason, FinishReason::Stop);
    assert_eq!(response.model, "large-2025@alpha");
    // 20 × 0.0025/1k + 3 × 0.01/1k.
    assert_eq!(
        response.usage,
        Usage {
            prompt_tokens: 20,
            completion_tokens: 3,
            total_tokens: 23,
            cost: 0.00008
        }
    );
    let body = &s.alpha.hits()[0].body;
    assert_eq!(body["stream"], json!(true));
    assert_eq!(body["stream_options"], json!({"include_usage": true}));
    assert_eq!(s.counts(), [1, 0, 0]);
}

#[tokio::test]
async fn streams_fall_back_before_the_first_token_and_never_after_it() {
    let s = Servers::start(
        vec![
            // Refused before any token: retried, then the fallback streams.
            status(503),
            status(503),
            status(503),
            // Cut after one token: returned as is.
            Answer::Stream {
                chunks: vec!["Hel"],
                delay_ms: 10,
                end: End::Cut,
            },
        ],
        vec![Answer::Stream {
            chunks: vec!["From ", "beta"],
            delay_ms: 10,
            end: End::Done {
                prompt: 5,
                completion: 2,
            },
        }],
    )
    .await;
    let r = rig(config(&s, "{}"));
    let auto = r.registry.get(None).unwrap();

    let tokens = Tokens::default();
    let response = auto
        .chat_stream(user("first"), &tokens.sink())
        .await
        .unwrap();
    assert_eq!(tokens.texts(), ["From ", "beta"]);
    assert_eq!(response.message.content, "From beta");
    assert_eq!(s.counts(), [3, 1, 0]);

    let tokens = Tokens::default();
    let err = auto
        .chat_stream(user("second"), &tokens.sink())
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "model `alpha/large-2025` failed (connection): the stream ended before the model finished"
    );
    assert_eq!(tokens.texts(), ["Hel"]);
    assert_eq!(
        s.counts(),
        [4, 1, 0],
        "neither retried nor passed on after a token"
    );
}

#[tokio::test]
async fn a_stream_that_stalls_after_a_token_is_cut_by_the_attempt_timeout_and_not_retried() {
    let s = Servers::start(
        vec![Answer::Stream {
            chunks: vec!["partial"],
            delay_ms: 0,
            end: End::Stall,
        }],
        vec![],
    )
    .await;
    let r = rig(config(&s, "resilience: {timeout_ms: 1000}"));
    let tokens = Tokens::default();
    let started = Instant::now();
    let err = r
        .orchestrator
        .call(&CallContext::default(), user("go"), Some(&tokens.sink()))
        .await
        .unwrap_err();
    assert_gap(started, Instant::now(), 1000, "the attempt timeout");
    assert_eq!(
        err.to_string(),
        "model `a-large` failed (timeout): no answer within 1000 ms"
    );
    assert_eq!(tokens.texts(), ["partial"]);
    assert_eq!(s.counts(), [1, 0, 0]);
}

// ---------------------------------------------------------------------------------------------
// Budgets

#[tokio::test]
async fn budgets_refuse_calls_before_any_request_reaches_a_server() {
    let s = Servers::start(vec![reply("Sure.", 60, 30)], vec![]).await;
    let r = rig(config(&s, "{}"));
    let auto = r.registry.get(None).unwrap();

    // A token budget: 90 spent, then a call whose prompt alone would overrun it.
    r.orchestrator.begin_execution(
        "exec-1",
        ExecutionScope::with_budget(Budget::new(Some(100), None)),
    );
    let call = |text: &str| ChatRequest {
        idempotency_key: Some("exec-1:ask:0:1".into()),
        ..user(text)
    };
    auto.chat(call("hi")).await.unwrap();
    assert_eq!(
        s.alpha.hits()[0].idempotency_key.as_deref(),
        Some("exec-1:ask:0:1")
    );
    assert_eq!(
        r.orchestrator
            .execution_usage("exec-1")
            .unwrap()
            .total_tokens,
        90
    );
    let next = call("and now something a little longer");
    let needs = estimate_tokens(&next);
    assert!(needs > 10, "{needs}");
    match auto.chat(next).await {
        Err(Error::LimitExceeded { limit, message }) => {
            assert_eq!(limit, "budget_exceeded");
            assert_eq!(
                message,
                format!(
                    "execution `exec-1` has spent 90 of its 100 tokens; this call needs about {needs} more"
                )
            );
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(s.counts(), [1, 0, 0]);

    // A cost budget too small for the prompt of a fresh execution: nothing is sent at all.
    r.orchestrator.begin_execution(
        "exec-2",
        ExecutionScope::with_budget(Budget::new(None, Some(0.001))),
    );
    let big = ChatRequest {
        idempotency_key: Some("exec-2:ask:0:1".into()),
        ..user(&"lorem ipsum ".repeat(200))
    };
    let err = auto.chat(big).await.unwrap_err();
    assert!(
        matches!(&err, Error::LimitExceeded { limit, .. } if limit == "budget_exceeded"),
        "{err}"
    );
    assert_eq!(s.counts(), [1, 0, 0]);
    assert_eq!(r.orchestrator.metrics().llm_budget_refusals_total, 2);
    let refusals = r
        .log
        .events()
        .into_iter()
        .filter(|e| matches!(e, OrchestrationEvent::BudgetExceeded { .. }))
        .count();
    assert_eq!(refusals, 2);
    assert_eq!(
        r.orchestrator.end_execution("exec-1").unwrap().total_tokens,
        90
    );
}

#[tokio::test]
async fn a_cost_budget_is_spent_to_the_exact_cent_then_refuses() {
    let s = Servers::start(vec![reply("Pricey.", 1000, 750)], vec![]).await;
    let r = rig(config(&s, "budgets: {max_cost_per_execution: 0.01}"));
    let auto = r.registry.get(None).unwrap();
    let call = ChatRequest {
        idempotency_key: Some("exec-c:n:0:1".into()),
        ..user("hi")
    };
    // 1000 × 0.0025/1k + 750 × 0.01/1k = 0.0025 + 0.0075.
    let reply = auto.chat(call.clone()).await.unwrap();
    assert_eq!(reply.usage.cost, 0.01);
    assert_eq!(r.orchestrator.execution_usage("exec-c").unwrap().cost, 0.01);
    match auto.chat(call).await {
        Err(Error::LimitExceeded { limit, message }) => {
            assert_eq!(limit, "budget_exceeded");
            assert!(
                message.starts_with("execution `exec-c` has spent $0.01 of its $0.01 budget"),
                "{message}"
            );
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(s.counts(), [1, 0, 0]);
}

// ---------------------------------------------------------------------------------------------
// Memo

#[tokio::test]
async fn the_read_write_memo_answers_a_repeat_without_a_request_and_with_zero_tokens() {
    let s = Servers::start(
        vec![reply("Once.", 40, 10), reply("Cooler.", 40, 10)],
        vec![],
    )
    .await;
    let r = rig(config(&s, "memo: {mode: read_write, ttl_ms: 60000}"));
    let auto = r.registry.get(None).unwrap();
    let first = auto.chat(user("say it once")).await.unwrap();
    // 40 × 0.0025/1k + 10 × 0.01/1k.
    assert_eq!(first.usage.cost, 0.0002);
    let tokens = Tokens::default();
    let again = auto
        .chat_stream(user("say it once"), &tokens.sink())
        .await
        .unwrap();
    assert_eq!(s.counts(), [1, 0, 0]);
    assert_eq!(
        again,
        ChatResponse {
            usage: Usage::default(),
            ..first
        }
    );
    assert_eq!(tokens.texts(), ["Once."]);
    // Different parameters are another call.
    let cooler = ChatRequest {
        temperature: Some(0.1),
        ..user("say it once")
    };
    assert_eq!(auto.chat(cooler).await.unwrap().message.content, "Cooler.");
    assert_eq!(s.counts(), [2, 0, 0]);
    assert_eq!(s.alpha.hits()[1].body["temperature"], json!(0.1));
    let m = r.orchestrator.metrics();
    assert_eq!(
        (m.memo.hits, m.memo.misses, m.llm_tokens_total),
        (1, 2, 100)
    );
}

// ---------------------------------------------------------------------------------------------
// Record → replay

fn temp_dir(name: &str) -> std::path::PathBuf {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let dir = std::env::temp_dir().join(format!("chatter-{name}-{}-{nanos}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[tokio::test]
async fn a_recording_replays_equal_answers_with_every_server_shut_down() {
    let dir = temp_dir("orchestration-http");
    let path = dir.join("support.jsonl");
    let mut s = Servers::start(
        vec![
            reply("Paris.", 12, 2),
            status(500),
            reply("Lyon.", 14, 2),
            Answer::Stream {
                chunks: vec!["Tou", "louse."],
                delay_ms: 10,
                end: End::Done {
                    prompt: 16,
                    completion: 3,
                },
            },
        ],
        vec![reply("Marseille.", 15, 3), reply("Nice.", 15, 2)],
    )
    .await;
    let memo = |mode: &str| {
        config(
            &s,
            &format!("memo: {{mode: {mode}, path: '{}'}}", path.display()),
        )
    };
    let (record_config, replay_config) = (memo("record"), memo("replay"));

    // The calls a workflow makes: routed, retried, explicit, pinned to a provider, streamed.
    let stream_q = user("fourth city?");
    let calls: Vec<(Option<&str>, ChatRequest)> = vec![
        (None, user("capital?")),
        (None, user("second city?")),
        (None, explicit("b-medium", "third city?")),
        (Some("beta"), user("fifth city?")),
    ];
    let recorded_stream = Tokens::default();
    let (recorded, streamed) = {
        let r = rig(record_config);
        let mut recorded = Vec::new();
        for (provider, request) in &calls {
            let model = r.registry.get(*provider).unwrap();
            recorded.push(model.chat(request.clone()).await.unwrap());
        }
        let streamed = r
            .registry
            .get(None)
            .unwrap()
            .chat_stream(stream_q.clone(), &recorded_stream.sink())
            .await
            .unwrap();
        assert_eq!(r.orchestrator.memo_stats().recorded, 5);
        (recorded, streamed)
    };
    let contents: Vec<&str> = recorded
        .iter()
        .map(|r| r.message.content.as_str())
        .collect();
    assert_eq!(contents, ["Paris.", "Lyon.", "Marseille.", "Nice."]);
    assert_eq!(recorded_stream.texts(), ["Tou", "louse."]);
    assert_eq!(s.counts(), [4, 2, 0]);

    // The file: a header, then one line per call with its priced answer.
    let text = std::fs::read_to_string(&path).unwrap();
    let lines: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 6);
    assert_eq!(
        lines[0],
        json!({"format": "chatter-memo", "version": 1, "key": "sha256"})
    );
    let answers: Vec<&str> = lines[1..]
        .iter()
        .map(|l| l["response"]["message"]["content"].as_str().unwrap())
        .collect();
    assert_eq!(
        answers,
        ["Paris.", "Lyon.", "Marseille.", "Nice.", "Toulouse."]
    );
    for line in &lines[1..] {
        assert_eq!(line["key"].as_str().unwrap().len(), 64);
        assert!(line["request"].is_object() && line["recorded_ms"].is_i64());
    }
    // 12 × 0.0025/1k + 2 × 0.01/1k.
    assert_eq!(lines[1]["response"]["usage"]["cost"], json!(0.00005));

    // Every server goes away; a direct client now finds nobody.
    s.alpha.shut_down().await;
    s.beta.shut_down().await;
    s.gamma.shut_down().await;
    let direct = openai_client(&replay_config.providers[0]).unwrap();
    match direct.chat(explicit("large-2025", "anyone?")).await {
        Err(Error::Model { class, .. }) => assert_eq!(class, ErrorClass::Connection),
        other => panic!("{other:?}"),
    }

    // Replay: the same calls get the same answers, with zero tokens and zero requests.
    let r = rig(replay_config);
    for ((provider, request), want) in calls.iter().zip(&recorded) {
        let got = r
            .registry
            .get(*provider)
            .unwrap()
            .chat(request.clone())
            .await
            .unwrap();
        assert_eq!(
            got,
            ChatResponse {
                usage: Usage::default(),
                ..want.clone()
            }
        );
    }
    let replayed_stream = Tokens::default();
    let got = r
        .registry
        .get(None)
        .unwrap()
        .chat_stream(stream_q, &replayed_stream.sink())
        .await
        .unwrap();
    assert_eq!(
        got,
        ChatResponse {
            usage: Usage::default(),
            ..streamed
        }
    );
    assert_eq!(replayed_stream.texts(), ["Toulouse."]);

    // A call that was never recorded fails without trying a server.
    match r.call(user("capital of Spain?")).await {
        Err(Error::NotFound { what, name }) => {
            assert_eq!(what, "recorded model call");
            assert!(
                name.ends_with("last user message \"capital of Spain?\")"),
                "{name}"
            );
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(s.counts(), [4, 2, 0]);
    let m = r.orchestrator.metrics();
    assert_eq!((m.llm_requests_total, m.llm_tokens_total), (0, 0));
    assert_eq!((m.memo.hits, m.memo.misses), (5, 1));
    std::fs::remove_dir_all(&dir).unwrap();
}

// ---------------------------------------------------------------------------------------------
// Clients built from the registry

#[tokio::test]
async fn builtin_clients_come_from_the_registry_and_a_missing_key_is_refused_at_build() {
    let server = Server::start("local", vec![reply("hi", 10, 5)], status(500)).await;
    let config = RegistryConfig::from_yaml(&format!(
        r#"
providers:
  - {{name: local, kind: openai, base_url: "{}", default: true}}
models:
  - {{name: m, provider: local, api_model: m-1, price: {{input_per_1k: 0.001, output_per_1k: 0.002}}}}
routing: {{default_model: m}}
"#,
        server.base
    ))
    .unwrap();
    let orchestrator = Orchestrator::builder(config.clone())
        .factory(Arc::new(BuiltinProviders))
        .build()
        .unwrap();
    let got = orchestrator
        .call(&CallContext::default(), user("hello"), None)
        .await
        .unwrap();
    assert_eq!(got.response.message.content, "hi");
    // 10 × 0.001/1k + 5 × 0.002/1k.
    assert_eq!(got.response.usage.cost, 0.00002);
    let hits = server.hits();
    assert_eq!(hits.len(), 1);
    assert_eq!(hits[0].body["model"], "m-1");
    // No `api_key_env`: no key is sent (not even OPENAI_API_KEY's).
    assert_eq!(hits[0].authorization, None);

    // A provider naming a variable that is not set is refused when the orchestrator is built.
    let mut keyed = config.clone();
    keyed.providers[0].api_key_env = Some("CHATTER_TEST_SURELY_UNSET_KEY_VAR".into());
    let err = Orchestrator::builder(keyed.clone())
        .factory(Arc::new(BuiltinProviders))
        .build()
        .unwrap_err();
    assert!(
        err.to_string().starts_with(
            "configuration error: provider `local`: environment variable `CHATTER_TEST_SURELY_UNSET_KEY_VAR`"
        ),
        "{err}"
    );
    keyed.providers[0].kind = "anthropic".into();
    keyed.providers[0].api_key_env = None;
    let err = Orchestrator::builder(keyed)
        .factory(Arc::new(BuiltinProviders))
        .build()
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("provider `local`: no built-in client for kind `anthropic`"),
        "{err}"
    );
}
