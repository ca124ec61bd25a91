//! Multi-model orchestration: config loading, costs, analysis, routing, retries, fallback,
//! circuit breakers, budgets, memo and record/replay, against scripted in-process models on
//! tokio's paused clock (delays are asserted exactly, without waiting).

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use chatter_core::model::{
    ChatModel, ChatRequest, ChatResponse, FinishReason, Message, TokenSink, ToolSpec, Usage,
};
use chatter_core::orchestration::{
    AttemptOutcome, BreakerState, Budget, CallContext, Complexity, ExecutionScope, MemoMode,
    OrchestratedResponse, OrchestrationEvent, Orchestrator, Price, RegistryConfig, Resolution,
    analyze, backoff_ms, canonical_json, estimate_tokens,
};
use chatter_core::{Error, ErrorClass, ModelRegistry, WorkflowDefinition};
use serde_json::json;
use tokio::time::Instant;

// ---------------------------------------------------------------------------------------------
// Scripted models

/// What a fake model does on one call.
#[derive(Clone, Debug)]
enum Step {
    /// Answers `text` with these token counts (and this provider-reported cost).
    Reply {
        text: String,
        prompt: u64,
        completion: u64,
        cost: f64,
    },
    /// Fails with an `Error::Model` of this class.
    Fail {
        class: ErrorClass,
        retry_after_ms: Option<u64>,
    },
    /// Never answers.
    Hang,
    /// Streams these chunks with a delay before each, then ends with `then`.
    Stream {
        chunks: Vec<(&'static str, u64)>,
        then: Box<Step>,
    },
}

fn reply(text: &str, prompt: u64, completion: u64) -> Step {
    Step::Reply {
        text: text.to_owned(),
        prompt,
        completion,
        cost: 0.0,
    }
}

fn fail(class: ErrorClass) -> Step {
    Step::Fail {
        class,
        retry_after_ms: None,
    }
}

/// A provider answering from a script; records every request it received and when.
struct Fake {
    name: String,
    script: Mutex<VecDeque<Step>>,
    otherwise: Step,
    calls: Mutex<Vec<(Instant, ChatRequest)>>,
}

impl Fake {
    fn new(name: &str, script: Vec<Step>) -> Arc<Fake> {
        Fake::with_default(name, script, reply("default", 10, 5))
    }
    fn with_default(name: &str, script: Vec<Step>, otherwise: Step) -> Arc<Fake> {
        Arc::new(Fake {
            name: name.to_owned(),
            script: Mutex::new(script.into()),
            otherwise,
            calls: Mutex::new(Vec::new()),
        })
    }
    fn calls(&self) -> Vec<(Instant, ChatRequest)> {
        self.calls.lock().unwrap().clone()
    }
    fn models_called(&self) -> Vec<String> {
        self.calls()
            .into_iter()
            .map(|(_, r)| r.model.unwrap_or_default())
            .collect()
    }
    fn next(&self, request: &ChatRequest) -> Step {
        self.calls
            .lock()
            .unwrap()
            .push((Instant::now(), request.clone()));
        self.script
            .lock()
            .unwrap()
            .pop_front()
            .unwrap_or_else(|| self.otherwise.clone())
    }
    fn answer(&self, step: Step, request: &ChatRequest) -> chatter_core::Result<ChatResponse> {
        match step {
            Step::Reply {
                text,
                prompt,
                completion,
                cost,
            } => Ok(ChatResponse {
                message: Message::assistant(text),
                usage: Usage {
                    prompt_tokens: prompt,
                    completion_tokens: completion,
                    total_tokens: 0,
                    cost,
                },
                finish_reason: FinishReason::Stop,
                model: request.model.clone().unwrap_or_default(),
            }),
            Step::Fail {
                class,
                retry_after_ms,
            } => Err(Error::Model {
                model: self.name.clone(),
                class,
                message: format!("scripted {class}"),
                retry_after_ms,
            }),
            Step::Hang | Step::Stream { .. } => unreachable!(),
        }
    }
}

#[async_trait]
impl ChatModel for Fake {
    fn name(&self) -> &str {
        &self.name
    }
    async fn chat(&self, request: ChatRequest) -> chatter_core::Result<ChatResponse> {
        match self.next(&request) {
            Step::Hang => std::future::pending().await,
            Step::Stream { then, .. } => self.answer(*then, &request),
            step => self.answer(step, &request),
        }
    }
    async fn chat_stream(
        &self,
        request: ChatRequest,
        sink: &dyn TokenSink,
    ) -> chatter_core::Result<ChatResponse> {
        match self.next(&request) {
            Step::Hang => std::future::pending().await,
            Step::Stream { chunks, then } => {
                for (text, delay) in chunks {
                    tokio::time::sleep(Duration::from_millis(delay)).await;
                    sink.token(text);
                }
                self.answer(*then, &request)
            }
            step => {
                let r = self.answer(step, &request)?;
                sink.token(&r.message.content);
                Ok(r)
            }
        }
    }
}

/// Collects observer events.
#[derive(Default)]
struct Log(Mutex<Vec<(CallContext, OrchestrationEvent)>>);

impl Log {
    fn events(&self) -> Vec<OrchestrationEvent> {
        self.0
            .lock()
            .unwrap()
            .iter()
            .map(|(_, e)| e.clone())
            .collect()
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
    fn transitions(&self) -> Vec<(String, BreakerState, BreakerState)> {
        self.events()
            .into_iter()
            .filter_map(|e| match e {
                OrchestrationEvent::BreakerTransition { model, from, to } => {
                    Some((model, from, to))
                }
                _ => None,
            })
            .collect()
    }
}

fn observed(log: &Arc<Log>) -> Arc<dyn chatter_core::orchestration::OrchestrationObserver> {
    let log = Arc::clone(log);
    Arc::new(move |ctx: &CallContext, e: &OrchestrationEvent| {
        log.0.lock().unwrap().push((ctx.clone(), e.clone()));
    })
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

/// Two providers, four models; no jitter so delays are exact.
const BASE: &str = r#"
providers:
  - name: alpha
    kind: openai
    base_url: "http://127.0.0.1:1/v1"
    api_key_env: ALPHA_KEY
    default: true
  - name: beta
    kind: openai
    base_url: "http://127.0.0.1:2/v1"
models:
  - name: a-small
    provider: alpha
    api_model: small-2025
    capabilities: {tools: false, json: true, streaming: true}
    tier: economy
    price: {input_per_1k: 0.0005, output_per_1k: 0.0015}
  - name: a-large
    provider: alpha
    api_model: large-2025
    context_length: 128000
    max_output_tokens: 4096
    capabilities: {tools: true, json: true, streaming: true}
    tier: premium
    price: {input_per_1k: 0.0025, output_per_1k: 0.01}
  - name: b-medium
    provider: beta
    capabilities: {tools: true, json: true, streaming: true}
    price: {input_per_1k: 0.001, output_per_1k: 0.002}
  - name: b-free
    provider: beta
    capabilities: {tools: true}
routing:
  default_model: a-large
  default_fallbacks: [b-medium]
resilience:
  max_attempts: 3
  initial_backoff_ms: 100
  max_backoff_ms: 2000
  multiplier: 2
  jitter: 0
  timeout_ms: 5000
  breaker: {failure_threshold: 3, cooldown_ms: 10000}
"#;

fn config_with(extra: &str) -> RegistryConfig {
    let mut value: serde_json::Value = serde_norway::from_str(BASE).unwrap();
    let extra: serde_json::Value = serde_norway::from_str(extra).unwrap();
    if let serde_json::Value::Object(map) = extra {
        for (k, v) in map {
            value[k] = v;
        }
    }
    RegistryConfig::from_json(&value.to_string()).unwrap()
}

struct Rig {
    orchestrator: Arc<Orchestrator>,
    alpha: Arc<Fake>,
    beta: Arc<Fake>,
    log: Arc<Log>,
}

fn rig(config: RegistryConfig, alpha: Vec<Step>, beta: Vec<Step>) -> Rig {
    let alpha = Fake::new("alpha", alpha);
    let beta = Fake::new("beta", beta);
    let log = Arc::new(Log::default());
    let orchestrator = Orchestrator::builder(config)
        .provider("alpha", alpha.clone())
        .provider("beta", beta.clone())
        .observer(observed(&log))
        .build()
        .unwrap();
    Rig {
        orchestrator: Arc::new(orchestrator),
        alpha,
        beta,
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

fn config_error(text: &str) -> String {
    match RegistryConfig::from_yaml(text) {
        Err(Error::Config { message }) => message,
        other => panic!("expected a config error, got {other:?}"),
    }
}

// ---------------------------------------------------------------------------------------------
// Config

#[test]
fn a_valid_config_loads_with_defaults_filled() {
    let config = RegistryConfig::from_yaml(BASE).unwrap();
    assert_eq!(config.providers.len(), 2);
    assert_eq!(config.models[0].api_model(), "small-2025");
    assert_eq!(config.models[2].api_model(), "b-medium");
    assert!(config.providers[1].active);
    assert_eq!(config.default_provider().unwrap().name, "alpha");
    assert_eq!(config.routing.router_name, "auto");
    assert_eq!(config.memo.mode, MemoMode::Off);
    // It round-trips through JSON (the store persists these records).
    let again: RegistryConfig =
        serde_json::from_value(serde_json::to_value(&config).unwrap()).unwrap();
    assert_eq!(again, config);
}

#[test]
fn the_documented_example_config_loads() {
    let doc = include_str!("../../docs/models.md");
    let start = doc.find("```yaml\n").expect("a yaml block") + "```yaml\n".len();
    let end = start + doc[start..].find("```").unwrap();
    let config = RegistryConfig::from_yaml(&doc[start..end]).unwrap();
    assert_eq!(config.models.len(), 3);
    assert_eq!(config.routing.rules.len(), 2);
    assert_eq!(config.memo.mode, MemoMode::Off);
    assert_eq!(config.budgets.max_cost_per_execution, Some(1.0));
}

#[test]
fn a_model_of_an_unknown_provider_is_refused_at_load_naming_the_path() {
    let message = config_error(
        "providers: [{name: alpha, kind: openai}]\nmodels: [{name: m, provider: gamma}]",
    );
    assert_eq!(
        message,
        "model registry config is invalid: $.models[0].provider: unknown provider `gamma` (known: `alpha`)"
    );
}

#[test]
fn negative_prices_duplicates_and_dangling_references_are_all_reported() {
    let message = config_error(
        r#"
providers:
  - {name: alpha, kind: openai}
  - {name: alpha, kind: openai}
models:
  - {name: m, provider: alpha, price: {input_per_1k: -0.001, output_per_1k: 0.002}}
  - {name: m, provider: alpha}
routing:
  rules:
    - {name: r1, target: nowhere}
    - {name: r2, target: m, fallbacks: [m, ghost]}
"#,
    );
    let issues: Vec<&str> = message
        .trim_start_matches("model registry config is invalid: ")
        .split("; ")
        .collect();
    assert_eq!(
        issues,
        [
            "$.providers[1].name: duplicate provider name `alpha`",
            "$.models[0].price.input_per_1k: must be a non-negative number, found -0.001",
            "$.models[1].name: duplicate model name `m`",
            "$.routing.rules[0].target: unknown model `nowhere` (known: `m`)",
            "$.routing.rules[1].fallbacks[1]: unknown model `ghost` (known: `m`)",
        ]
    );
}

#[test]
fn only_disabled_rules_may_point_at_inactive_models() {
    let base = r#"
providers: [{name: alpha, kind: openai}, {name: old, kind: openai, active: false}]
models: [{name: m, provider: alpha}, {name: retired, provider: alpha, active: false}, {name: o, provider: old}]
"#;
    let disabled = format!(
        "{base}routing: {{rules: [{{name: r, enabled: false, target: retired, fallbacks: [o]}}]}}"
    );
    RegistryConfig::from_yaml(&disabled).unwrap();
    let enabled =
        format!("{base}routing: {{rules: [{{name: r, target: retired, fallbacks: [o, gone]}}]}}");
    assert_eq!(
        config_error(&enabled),
        "model registry config is invalid: $.routing.rules[0].target: model `retired` is inactive; \
         $.routing.rules[0].fallbacks[0]: model `o` belongs to inactive provider `old`; \
         $.routing.rules[0].fallbacks[1]: unknown model `gone` (known: `m`, `o`, `retired`)"
    );
    let disabled_unknown =
        format!("{base}routing: {{rules: [{{name: r, enabled: false, target: gone}}]}}");
    assert!(
        config_error(&disabled_unknown).contains("$.routing.rules[0].target: unknown model `gone`")
    );
}

#[test]
fn bad_settings_are_refused_at_load() {
    let message = config_error(
        r#"
providers: [{name: alpha, kind: openai, base_url: "ftp://x", default_config: {temperature: 3}}]
resilience: {max_attempts: 0, jitter: 1.5}
memo: {mode: replay}
"#,
    );
    assert!(
        message.contains("$.providers[0].base_url: `ftp://x` is not an http:// or https:// URL"),
        "{message}"
    );
    assert!(
        message.contains(
            "$.providers[0].default_config.temperature: must be between 0 and 2, found 3"
        ),
        "{message}"
    );
    assert!(
        message.contains("$.resilience.max_attempts: must be at least 1"),
        "{message}"
    );
    assert!(
        message.contains("$.resilience.jitter: must be between 0 and 1, found 1.5"),
        "{message}"
    );
    assert!(
        message.contains("$.memo.path: required in `replay` mode"),
        "{message}"
    );
}

#[test]
fn unknown_keys_and_wrong_types_are_parse_errors_with_a_position() {
    match RegistryConfig::from_json(r#"{"models": [{"name": "m", "provider": "p", "prise": 1}]}"#) {
        Err(Error::Parse {
            line: 1, message, ..
        }) => {
            assert!(message.starts_with("unknown field `prise`"), "{message}")
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn loading_a_file_names_the_file() {
    let dir = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    let path = dir.join("orchestration-bad-models.yaml");
    std::fs::write(
        &path,
        "providers: []\nmodels: [{name: m, provider: nope}]\n",
    )
    .unwrap();
    match RegistryConfig::load(&path) {
        Err(Error::Config { message }) => assert_eq!(
            message,
            format!(
                "`{}` is invalid: $.models[0].provider: unknown provider `nope` (known: none)",
                path.display()
            )
        ),
        other => panic!("{other:?}"),
    }
    let good = dir.join("orchestration-good-models.yaml");
    std::fs::write(&good, BASE).unwrap();
    assert_eq!(RegistryConfig::load(&good).unwrap().models.len(), 4);
}

#[test]
fn node_provider_and_model_resolve_through_the_registry() {
    let config = RegistryConfig::from_yaml(BASE).unwrap();
    let name = |r: Resolution<'_>| match r {
        Resolution::Model(m) => m.name.clone(),
        Resolution::Route { provider } => format!("route:{provider:?}"),
        _ => unreachable!(),
    };
    assert_eq!(
        name(config.resolve(None, Some("a-small")).unwrap()),
        "a-small"
    );
    // By the API name too.
    assert_eq!(
        name(config.resolve(None, Some("large-2025")).unwrap()),
        "a-large"
    );
    assert_eq!(
        name(config.resolve(Some("beta"), Some("b-medium")).unwrap()),
        "b-medium"
    );
    assert_eq!(
        name(config.resolve(Some("auto"), None).unwrap()),
        "route:None"
    );
    assert_eq!(
        name(config.resolve(Some("beta"), None).unwrap()),
        "route:Some(\"beta\")"
    );
    match config.resolve(Some("alpha"), Some("b-medium")) {
        Err(Error::NotFound { what, name }) => {
            assert_eq!((what.as_str(), name.as_str()), ("model", "alpha/b-medium"))
        }
        other => panic!("{other:?}"),
    }
    match config.resolve(Some("gamma"), None) {
        Err(Error::NotFound { what, name }) => {
            assert_eq!((what.as_str(), name.as_str()), ("model provider", "gamma"))
        }
        other => panic!("{other:?}"),
    }

    let def = WorkflowDefinition::from_json(
        r#"{"nodes": [
            {"id": "start", "type": "start"},
            {"id": "ok", "type": "llm", "config": {"provider": "alpha", "model": "a-small"}},
            {"id": "bad", "type": "llm", "config": {"model": "gpt-9"}},
            {"id": "mem", "type": "memory", "config": {"summary_provider": "gamma"}},
            {"id": "end", "type": "end"}],
          "edges": [{"source": "start", "target": "ok"}, {"source": "ok", "target": "bad"},
                    {"source": "bad", "target": "mem"}, {"source": "mem", "target": "end"}]}"#,
    )
    .unwrap();
    let problems: Vec<(String, String)> = config
        .check_definition(&def)
        .into_iter()
        .map(|(id, e)| (id, e.to_string()))
        .collect();
    assert_eq!(
        problems,
        [
            ("bad".to_owned(), "unknown model `gpt-9`".to_owned()),
            (
                "mem".to_owned(),
                "unknown model provider `gamma`".to_owned()
            ),
        ]
    );
}

#[test]
fn an_active_provider_without_a_client_is_refused_at_build() {
    let config = RegistryConfig::from_yaml(BASE).unwrap();
    let err = Orchestrator::builder(config)
        .provider("alpha", Fake::new("alpha", vec![]))
        .build()
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "configuration error: no client for provider `beta` (kind `openai`): register a ChatModel under that name or give a factory"
    );
}

// ---------------------------------------------------------------------------------------------
// Cost

#[test]
fn prices_are_exact_to_the_micro_dollar() {
    let price = Price::new(0.0025, 0.01);
    assert_eq!(price.cost(1234, 567), 0.008755);
    assert_eq!(price.cost(1, 0), 0.0000025);
    assert_eq!(Price::new(0.00015, 0.0006).cost(1_000_000, 1_000_000), 0.75);
    assert_eq!(Price::new(0.0, 0.0).cost(5, 5), 0.0);
}

#[tokio::test(start_paused = true)]
async fn every_call_is_priced_unless_the_provider_priced_it() {
    let r = rig(
        config_with("{}"),
        vec![reply("one", 1234, 567), reply("two", 1000, 1000)],
        vec![Step::Reply {
            text: "priced".into(),
            prompt: 10,
            completion: 10,
            cost: 0.5,
        }],
    );
    let first = r.call(explicit("a-large", "hi")).await.unwrap();
    assert_eq!(
        first.response.usage,
        Usage {
            prompt_tokens: 1234,
            completion_tokens: 567,
            total_tokens: 1801,
            cost: 0.008755
        }
    );
    let second = r.call(explicit("a-small", "hi")).await.unwrap();
    assert_eq!(second.response.usage.cost, 0.002); // 1000 × 0.0005/1k + 1000 × 0.0015/1k
    let third = r.call(explicit("b-medium", "hi")).await.unwrap();
    assert_eq!(third.response.usage.cost, 0.5);
    let m = r.orchestrator.metrics();
    assert_eq!(m.llm_cost_usd_total, 0.510755);
    assert_eq!(m.llm_tokens_total, 1801 + 2000 + 20);
    assert_eq!(m.models["a-large"].cost_usd, 0.008755);
    assert_eq!(m.models["a-large"].prompt_tokens, 1234);
}

// ---------------------------------------------------------------------------------------------
// Analysis

#[test]
fn the_estimator_counts_a_quarter_token_per_character_plus_framing() {
    // "hello" is 5 characters: 2 tokens, + 4 of framing, + 3 priming the reply.
    assert_eq!(estimate_tokens(&user("hello")), 9);
    let two = ChatRequest {
        messages: vec![
            Message::system("x".repeat(400)),
            Message::user("y".repeat(41)),
        ]
        .into(),
        ..ChatRequest::default()
    };
    assert_eq!(estimate_tokens(&two), 100 + 4 + 11 + 4 + 3);
}

#[test]
fn analysis_finds_tools_code_json_and_documents() {
    let config = RegistryConfig::default();
    let simple = analyze(&user("What's the capital of France?"), &config.analysis);
    assert_eq!(simple.complexity, Complexity::Simple);
    assert!(!simple.tools_needed && !simple.code_present && !simple.json_requested);

    let tool = ToolSpec {
        name: "search".into(),
        description: "web".into(),
        parameters: json!({}),
    };
    let with_tools = ChatRequest {
        tools: vec![tool].into(),
        ..user("find the weather")
    };
    let a = analyze(&with_tools, &config.analysis);
    assert!(a.tools_needed);
    assert_eq!(a.complexity, Complexity::Moderate);

    let code =
        user("Why does this fail?\n```rust\nfn main() { let x: u8 = 300; }\n```\nReply in JSON.");
    let a = analyze(&code, &config.analysis);
    assert!(a.code_present && a.json_requested);
    assert_eq!(a.complexity, Complexity::Moderate);

    let docs = ChatRequest {
        messages: vec![
            Message::system("Context:\n".to_owned() + &"lorem ipsum ".repeat(400)),
            Message::user("summarise"),
        ]
        .into(),
        tools: with_tools.tools.clone(),
        ..code.clone()
    };
    let a = analyze(&docs, &config.analysis);
    assert!(a.documents_attached && a.tools_needed);
    assert_eq!(a.context_tokens, 1203);
    assert_eq!(a.complexity, Complexity::Complex);

    let long = user(&"word ".repeat(8000));
    assert_eq!(
        analyze(&long, &config.analysis).complexity,
        Complexity::Complex
    );
}

// ---------------------------------------------------------------------------------------------
// Routing

const RULES: &str = r#"
routing:
  default_model: a-large
  default_fallbacks: [b-medium]
  rules:
    - {name: cheap-simple, priority: 10, match: {complexity: [simple], max_tokens: 200}, target: a-small, fallbacks: [b-medium]}
    - {name: disabled, priority: 100, enabled: false, target: b-free}
    - {name: tools, priority: 20, match: {tools_needed: true}, target: b-medium, fallbacks: [a-large]}
    - {name: support, priority: 30, match: {workflow_types: [support], tags: [vip]}, target: a-large}
    - {name: capped, priority: 5, match: {complexity: [moderate]}, target: a-large, fallbacks: [b-medium], max_cost_per_request: 0.002}
"#;

#[tokio::test(start_paused = true)]
async fn rules_route_by_priority_and_explicit_models_always_win() {
    let r = rig(config_with(RULES), vec![], vec![]);
    let out = r.call(user("hi there")).await.unwrap();
    assert_eq!(out.decision.model, "a-small");
    assert_eq!(out.decision.rule.as_deref(), Some("cheap-simple"));
    assert_eq!(out.decision.fallbacks, ["b-medium"]);
    assert_eq!(
        out.decision.reason,
        "rule `cheap-simple` (priority 10) matched a simple call of about 9 tokens"
    );
    assert!(!out.decision.explicit);
    assert_eq!(r.alpha.models_called(), ["small-2025"]);

    // The same short message with an explicit model goes where it is told.
    let out = r.call(explicit("b-free", "hi there")).await.unwrap();
    assert_eq!(out.decision.model, "b-free");
    assert!(out.decision.explicit);
    assert_eq!(out.decision.reason, "explicit model `b-free` requested");

    // Tools: the higher-priority tools rule wins over cheap-simple.
    let tool = ToolSpec {
        name: "search".into(),
        description: String::new(),
        parameters: json!({}),
    };
    let out = r
        .call(ChatRequest {
            tools: vec![tool].into(),
            ..user("hi")
        })
        .await
        .unwrap();
    assert_eq!(out.decision.rule.as_deref(), Some("tools"));
    assert_eq!(out.decision.model, "b-medium");

    // Workflow type and tags come from the execution.
    r.orchestrator.begin_execution(
        "exec-1",
        ExecutionScope::default()
            .workflow_type("support")
            .tag("vip")
            .tag("eu"),
    );
    let ctx = CallContext::for_execution("exec-1");
    let out = r.orchestrator.call(&ctx, user("hi"), None).await.unwrap();
    assert_eq!(out.decision.rule.as_deref(), Some("support"));
    // Tags must all be present.
    let ctx = CallContext::default().workflow_type("support");
    let out = r.orchestrator.call(&ctx, user("hi"), None).await.unwrap();
    assert_eq!(out.decision.rule.as_deref(), Some("cheap-simple"));

    // No rule matches: the default route.
    let out = r.call(user(&"word ".repeat(300))).await.unwrap();
    assert_eq!(out.decision.rule, None);
    assert_eq!(out.decision.model, "a-large");
    assert_eq!(out.decision.fallbacks, ["b-medium"]);
    assert_eq!(
        out.decision.reason,
        "no rule matched; default model `a-large`"
    );

    // Every decision went to the observer.
    let routed = r
        .log
        .events()
        .iter()
        .filter(|e| matches!(e, OrchestrationEvent::Routed { .. }))
        .count();
    assert_eq!(routed, 6);
}

#[tokio::test(start_paused = true)]
async fn candidates_over_the_rule_cost_cap_or_lacking_capabilities_are_skipped() {
    let r = rig(config_with(RULES), vec![], vec![]);
    // Moderate (code), 85 characters: 22 + 4 + 3 = 29 prompt tokens, max_tokens 200:
    // a-large 29×0.0025/1k + 200×0.01/1k = 0.0020725 > 0.002 → skipped; b-medium fits.
    let code = ChatRequest {
        max_tokens: Some(200),
        ..user(
            "```\nfn main() {}\n```\nexplain this code to me please, in detail, line by line, thanks.",
        )
    };
    let out = r.call(code.clone()).await.unwrap();
    assert_eq!(out.decision.rule.as_deref(), Some("capped"));
    assert_eq!(out.decision.model, "b-medium");
    assert_eq!(out.decision.skipped.len(), 1);
    assert_eq!(out.decision.skipped[0].model, "a-large");
    assert_eq!(
        out.decision.skipped[0].reason,
        "estimated cost $0.0020725 exceeds the rule's max_cost_per_request $0.002"
    );
    // 29 × 0.001/1k + 200 × 0.002/1k
    assert_eq!(out.decision.estimated_cost, Some(0.000429));

    // Nothing affordable: a clear refusal.
    let err = r
        .call(ChatRequest {
            max_tokens: Some(5000),
            ..code
        })
        .await
        .unwrap_err();
    assert!(
        matches!(&err, Error::LimitExceeded { limit, .. } if limit == "max_cost_per_request"),
        "{err}"
    );

    // JSON mode: a model without JSON support is skipped from the default route.
    let cfg = config_with("routing: {default_model: b-free, default_fallbacks: [b-medium]}");
    let r = rig(cfg, vec![], vec![]);
    let out = r
        .call(ChatRequest {
            json_mode: true,
            ..user("give json")
        })
        .await
        .unwrap();
    assert_eq!(out.decision.model, "b-medium");
    assert_eq!(out.decision.skipped[0].reason, "does not support JSON mode");
}

// ---------------------------------------------------------------------------------------------
// Retries, timeouts, fallback

fn gaps(calls: &[(Instant, ChatRequest)]) -> Vec<u64> {
    calls
        .windows(2)
        .map(|w| (w[1].0 - w[0].0).as_millis() as u64)
        .collect()
}

#[tokio::test(start_paused = true)]
async fn server_errors_are_retried_with_exponential_backoff() {
    let r = rig(
        config_with("{}"),
        vec![
            fail(ErrorClass::Server),
            fail(ErrorClass::Server),
            reply("ok", 1, 1),
        ],
        vec![],
    );
    let out = r.call(explicit("a-large", "hi")).await.unwrap();
    assert_eq!(out.response.message.content, "ok");
    assert_eq!(gaps(&r.alpha.calls()), [100, 200]);
    let delays: Vec<u64> = out.attempts.iter().map(|a| a.delay_before_ms).collect();
    assert_eq!(delays, [0, 100, 200]);
    assert_eq!(
        out.attempts[0].outcome,
        AttemptOutcome::Failed {
            class: "server".into(),
            error: "model `alpha` failed (server): scripted server".into()
        }
    );
    assert_eq!(r.orchestrator.metrics().llm_requests_total, 3);
    assert_eq!(r.orchestrator.metrics().llm_request_failures_total, 2);
}

#[tokio::test(start_paused = true)]
async fn a_rate_limit_honours_retry_after() {
    let r = rig(
        config_with("{}"),
        vec![
            Step::Fail {
                class: ErrorClass::RateLimit,
                retry_after_ms: Some(1500),
            },
            reply("ok", 1, 1),
        ],
        vec![],
    );
    r.call(explicit("a-large", "hi")).await.unwrap();
    assert_eq!(gaps(&r.alpha.calls()), [1500]);
    let retry = r.log.events().into_iter().find_map(|e| match e {
        OrchestrationEvent::AttemptFailed {
            retry_in_ms, class, ..
        } => Some((class, retry_in_ms)),
        _ => None,
    });
    assert_eq!(retry, Some(("rate_limit".to_owned(), Some(1500))));
}

#[tokio::test(start_paused = true)]
async fn a_retry_after_beyond_the_longest_backoff_falls_back_at_once() {
    let r = rig(
        config_with("{}"),
        vec![Step::Fail {
            class: ErrorClass::RateLimit,
            retry_after_ms: Some(60_000),
        }],
        vec![reply("from beta", 1, 1)],
    );
    let start = Instant::now();
    let out = r.call(user(&"word ".repeat(300))).await.unwrap();
    assert_eq!(out.answered_by, "b-medium");
    assert_eq!(start.elapsed(), Duration::ZERO);
    assert_eq!(r.alpha.calls().len(), 1);
}

#[tokio::test(start_paused = true)]
async fn bad_requests_are_never_retried_nor_passed_on() {
    let r = rig(
        config_with("{}"),
        vec![fail(ErrorClass::BadRequest)],
        vec![],
    );
    let err = r.call(user(&"word ".repeat(300))).await.unwrap_err();
    assert!(matches!(
        err,
        Error::Model {
            class: ErrorClass::BadRequest,
            ..
        }
    ));
    assert_eq!(r.alpha.calls().len(), 1);
    assert_eq!(r.beta.calls().len(), 0);
}

#[tokio::test(start_paused = true)]
async fn auth_failures_are_not_retried_but_fall_back() {
    let r = rig(
        config_with("{}"),
        vec![fail(ErrorClass::Auth)],
        vec![reply("beta", 1, 1)],
    );
    let out = r.call(user(&"word ".repeat(300))).await.unwrap();
    assert_eq!(out.answered_by, "b-medium");
    assert_eq!(r.alpha.calls().len(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_hanging_model_times_out_is_retried_then_falls_back_in_order() {
    let cfg = config_with(
        "routing: {rules: [{name: chain, target: a-small, fallbacks: [a-large, b-medium]}]}",
    );
    let r = rig(
        cfg,
        vec![
            Step::Hang,
            Step::Hang,
            Step::Hang,
            fail(ErrorClass::Connection),
            fail(ErrorClass::Server),
            fail(ErrorClass::Server),
        ],
        vec![reply("finally", 3, 4)],
    );
    let start = Instant::now();
    let out = r.call(user("hi")).await.unwrap();
    assert_eq!(out.response.message.content, "finally");
    assert_eq!(out.answered_by, "b-medium");
    // Three timeouts of 5 s with waits of 100 and 200 ms, then three failures with waits of 100 and 200 ms.
    assert_eq!(start.elapsed(), Duration::from_millis(3 * 5000 + 300 + 300));
    assert_eq!(
        r.alpha.models_called(),
        [
            "small-2025",
            "small-2025",
            "small-2025",
            "large-2025",
            "large-2025",
            "large-2025"
        ]
    );
    assert_eq!(
        r.log.fallbacks(),
        [
            ("a-small".to_owned(), "a-large".to_owned()),
            ("a-large".to_owned(), "b-medium".to_owned())
        ]
    );
    let timeout = &out.attempts[0];
    assert_eq!(timeout.duration_ms, 5000);
    assert_eq!(
        timeout.outcome,
        AttemptOutcome::Failed {
            class: "timeout".into(),
            error: "model `a-small` failed (timeout): no answer within 5000 ms".into()
        }
    );
    let m = r.orchestrator.metrics();
    assert_eq!(m.llm_fallbacks_total, 2);
    assert_eq!(m.llm_requests_total, 7);
    assert_eq!(m.models["a-small"].fallbacks_from, 1);
}

#[test]
fn backoff_grows_exponentially_up_to_its_cap() {
    let cfg = config_with(
        "resilience: {initial_backoff_ms: 500, max_backoff_ms: 3000, multiplier: 2, jitter: 0}",
    );
    let delays: Vec<u64> = (1..=5).map(|n| backoff_ms(&cfg.resilience, n)).collect();
    assert_eq!(delays, [500, 1000, 2000, 3000, 3000]);
}

#[tokio::test(start_paused = true)]
async fn jitter_shortens_each_wait_by_at_most_its_fraction() {
    let cfg = config_with(
        "resilience: {max_attempts: 6, initial_backoff_ms: 1000, max_backoff_ms: 1000, jitter: 0.5, breaker: {failure_threshold: 0}}",
    );
    let alpha = Fake::new("alpha", vec![fail(ErrorClass::Server); 5]);
    let orchestrator = Orchestrator::builder(cfg)
        .provider("alpha", alpha.clone())
        .provider("beta", Fake::new("beta", vec![]))
        .jitter_seed(7)
        .build()
        .unwrap();
    orchestrator
        .call(&CallContext::default(), explicit("a-large", "hi"), None)
        .await
        .unwrap();
    let waits = gaps(&alpha.calls());
    assert_eq!(waits.len(), 5);
    assert!(waits.iter().all(|w| (500..=1000).contains(w)), "{waits:?}");
    assert!(
        waits.windows(2).any(|w| w[0] != w[1]),
        "jitter should vary: {waits:?}"
    );
}

// ---------------------------------------------------------------------------------------------
// Circuit breaker

#[tokio::test(start_paused = true)]
async fn the_breaker_opens_after_consecutive_failures_probes_after_cooldown_and_closes() {
    let cfg = config_with(
        "resilience: {max_attempts: 1, jitter: 0, breaker: {failure_threshold: 2, cooldown_ms: 10000}}",
    );
    let r = rig(
        cfg,
        vec![
            fail(ErrorClass::Server),
            fail(ErrorClass::Server),
            fail(ErrorClass::Server),
            reply("back", 1, 1),
        ],
        vec![],
    );
    let long = || user(&"word ".repeat(300)); // default route: a-large then b-medium
    for _ in 0..2 {
        assert_eq!(r.call(long()).await.unwrap().answered_by, "b-medium");
    }
    assert_eq!(r.orchestrator.breaker_state("a-large"), BreakerState::Open);
    assert_eq!(
        r.orchestrator.metrics().models["a-large"].breaker,
        BreakerState::Open
    );

    // Open: a-large is not called at all.
    let out = r.call(long()).await.unwrap();
    assert_eq!(out.attempts[0].outcome, AttemptOutcome::CircuitOpen);
    assert_eq!(r.alpha.calls().len(), 2);

    // After the cooldown one probe goes through; it fails and the circuit reopens.
    tokio::time::advance(Duration::from_millis(10_000)).await;
    r.call(long()).await.unwrap();
    assert_eq!(r.alpha.calls().len(), 3);
    assert_eq!(r.orchestrator.breaker_state("a-large"), BreakerState::Open);

    // Another cooldown; the probe succeeds and the circuit closes.
    tokio::time::advance(Duration::from_millis(9_999)).await;
    r.call(long()).await.unwrap();
    assert_eq!(
        r.alpha.calls().len(),
        3,
        "still open 1 ms before the cooldown ends"
    );
    tokio::time::advance(Duration::from_millis(1)).await;
    assert_eq!(r.call(long()).await.unwrap().answered_by, "a-large");
    assert_eq!(
        r.orchestrator.breaker_state("a-large"),
        BreakerState::Closed
    );

    use BreakerState::*;
    let a = |from, to| ("a-large".to_owned(), from, to);
    assert_eq!(
        r.log.transitions(),
        [
            a(Closed, Open),
            a(Open, HalfOpen),
            a(HalfOpen, Open),
            a(Open, HalfOpen),
            a(HalfOpen, Closed)
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn an_open_circuit_with_no_fallback_fails_with_the_remaining_cooldown() {
    let cfg = config_with(
        "resilience: {max_attempts: 1, breaker: {failure_threshold: 1, cooldown_ms: 4000}}",
    );
    let r = rig(cfg, vec![fail(ErrorClass::Server)], vec![]);
    r.call(explicit("a-small", "hi")).await.unwrap_err();
    tokio::time::advance(Duration::from_millis(1000)).await;
    match r.call(explicit("a-small", "hi")).await {
        Err(Error::Model {
            class: ErrorClass::Server,
            retry_after_ms: Some(3000),
            message,
            ..
        }) => {
            assert_eq!(message, "circuit breaker open; next probe in 3000 ms")
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test(start_paused = true)]
async fn a_probe_refused_as_a_bad_request_lets_the_next_call_probe_at_once() {
    let cfg = config_with(
        "resilience: {max_attempts: 1, breaker: {failure_threshold: 1, cooldown_ms: 1000}}",
    );
    let r = rig(
        cfg,
        vec![
            fail(ErrorClass::Server),
            fail(ErrorClass::BadRequest),
            reply("ok", 1, 1),
        ],
        vec![],
    );
    r.call(explicit("a-small", "hi")).await.unwrap_err();
    tokio::time::advance(Duration::from_millis(1000)).await;
    let err = r.call(explicit("a-small", "bad")).await.unwrap_err();
    assert!(matches!(
        err,
        Error::Model {
            class: ErrorClass::BadRequest,
            ..
        }
    ));
    assert_eq!(
        r.orchestrator.breaker_state("a-small"),
        BreakerState::HalfOpen
    );
    // The bad request said nothing about the model's health: no second cooldown.
    r.call(explicit("a-small", "hi")).await.unwrap();
    assert_eq!(r.alpha.calls().len(), 3);
    assert_eq!(
        r.orchestrator.breaker_state("a-small"),
        BreakerState::Closed
    );
}

// ---------------------------------------------------------------------------------------------
// Streaming

#[tokio::test(start_paused = true)]
async fn slow_streams_arrive_in_order_and_fall_back_only_before_the_first_token() {
    let r = rig(
        config_with("{}"),
        vec![
            // Fails before any token: falls back to b-medium.
            Step::Stream {
                chunks: vec![],
                then: Box::new(fail(ErrorClass::Auth)),
            },
            // Fails mid-stream: returned as is.
            Step::Stream {
                chunks: vec![("Hel", 300), ("lo", 300)],
                then: Box::new(fail(ErrorClass::Connection)),
            },
        ],
        vec![Step::Stream {
            chunks: vec![("One ", 1000), ("two", 1000)],
            then: Box::new(reply("One two", 2, 2)),
        }],
    );
    let got = Arc::new(Mutex::new(Vec::<String>::new()));
    let sink = {
        let got = got.clone();
        move |t: &str| got.lock().unwrap().push(t.to_owned())
    };
    let long = || user(&"word ".repeat(300));
    let start = Instant::now();
    let out = r
        .orchestrator
        .call(&CallContext::default(), long(), Some(&sink))
        .await
        .unwrap();
    assert_eq!(out.answered_by, "b-medium");
    assert_eq!(*got.lock().unwrap(), ["One ", "two"]);
    assert_eq!(start.elapsed(), Duration::from_millis(2000));

    got.lock().unwrap().clear();
    let err = r
        .orchestrator
        .call(&CallContext::default(), long(), Some(&sink))
        .await
        .unwrap_err();
    assert!(matches!(
        err,
        Error::Model {
            class: ErrorClass::Connection,
            ..
        }
    ));
    assert_eq!(*got.lock().unwrap(), ["Hel", "lo"]);
    assert_eq!(
        r.alpha.calls().len(),
        2,
        "no retry after tokens were streamed"
    );
    assert_eq!(
        r.beta.calls().len(),
        1,
        "no fallback after tokens were streamed"
    );
}

#[tokio::test(start_paused = true)]
async fn a_stream_slower_than_the_timeout_is_cut() {
    let cfg = config_with("resilience: {max_attempts: 1, timeout_ms: 1500}");
    let r = rig(
        cfg,
        vec![Step::Stream {
            chunks: vec![("a", 1000), ("b", 1000)],
            then: Box::new(reply("ab", 1, 1)),
        }],
        vec![],
    );
    let sink = |_: &str| {};
    let err = r
        .orchestrator
        .call(
            &CallContext::default(),
            explicit("a-small", "hi"),
            Some(&sink),
        )
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "model `a-small` failed (timeout): no answer within 1500 ms"
    );
}

// ---------------------------------------------------------------------------------------------
// Budgets

#[tokio::test(start_paused = true)]
async fn token_and_cost_budgets_refuse_calls_cleanly() {
    let r = rig(
        config_with("{}"),
        vec![reply("a", 60, 30), reply("b", 1, 1)],
        vec![],
    );
    let model = r.orchestrator.model(None);
    r.orchestrator.begin_execution(
        "exec-t",
        ExecutionScope::with_budget(Budget::new(Some(100), None)),
    );
    let call = |text: &str| ChatRequest {
        idempotency_key: Some("exec-t:chat:0:1".into()),
        ..explicit("a-large", text)
    };
    model.chat(call("hi")).await.unwrap();
    assert_eq!(
        r.orchestrator
            .execution_usage("exec-t")
            .unwrap()
            .total_tokens,
        90
    );
    // 90 spent; "hi" needs about 8 more: allowed. Then 92 + about 8 + ... is refused.
    model.chat(call("hi")).await.unwrap();
    match model.chat(call("hello again")).await {
        Err(Error::LimitExceeded { limit, message }) => {
            assert_eq!(limit, "budget_exceeded");
            assert_eq!(
                message,
                "execution `exec-t` has spent 92 of its 100 tokens; this call needs about 10 more"
            );
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(r.alpha.calls().len(), 2);
    assert_eq!(r.orchestrator.metrics().llm_budget_refusals_total, 1);
    assert!(
        r.log
            .events()
            .iter()
            .any(|e| matches!(e, OrchestrationEvent::BudgetExceeded { .. }))
    );
    assert_eq!(
        r.orchestrator.end_execution("exec-t").unwrap().total_tokens,
        92
    );

    // The config's per-execution cost budget applies to every execution.
    let cfg = config_with("budgets: {max_cost_per_execution: 0.01}");
    let r = rig(cfg, vec![reply("a", 1000, 750)], vec![]);
    let model = r.orchestrator.model(None);
    let call = ChatRequest {
        idempotency_key: Some("exec-c:n:0:1".into()),
        ..explicit("a-large", "hi")
    };
    model.chat(call.clone()).await.unwrap(); // 0.0025 + 0.0075 = 0.01 spent
    let err = model.chat(call).await.unwrap_err();
    assert!(
        matches!(&err, Error::LimitExceeded { limit, .. } if limit == "budget_exceeded"),
        "{err}"
    );
    assert_eq!(r.orchestrator.execution_usage("exec-c").unwrap().cost, 0.01);
    // Another execution has its own budget.
    let other = ChatRequest {
        idempotency_key: Some("exec-d:n:0:1".into()),
        ..explicit("a-large", "hi")
    };
    model.chat(other).await.unwrap();
}

// ---------------------------------------------------------------------------------------------
// Memo

#[tokio::test(start_paused = true)]
async fn the_memo_serves_repeats_with_zero_tokens_until_the_ttl() {
    let cfg = config_with("memo: {mode: read_write, ttl_ms: 60000, max_entries: 2}");
    let r = rig(
        cfg,
        vec![reply("first", 10, 10), reply("second", 10, 10)],
        vec![],
    );
    let a = r.call(explicit("a-large", "same")).await.unwrap();
    let b = r.call(explicit("a-large", "same")).await.unwrap();
    assert!(!a.from_memo && b.from_memo);
    assert_eq!(b.response.message, a.response.message);
    assert_eq!(b.response.usage, Usage::default());
    assert_eq!(r.alpha.calls().len(), 1);
    // Different parameters are a different call.
    r.call(ChatRequest {
        temperature: Some(0.2),
        ..explicit("a-large", "same")
    })
    .await
    .unwrap();
    assert_eq!(r.alpha.calls().len(), 2);
    let s = r.orchestrator.memo_stats();
    assert_eq!((s.hits, s.misses, s.entries, s.evictions), (1, 2, 2, 0));
    assert!((s.hit_rate - 1.0 / 3.0).abs() < 1e-12);

    // Beyond max_entries the oldest goes; after the TTL entries expire.
    r.call(explicit("a-large", "third")).await.unwrap();
    assert_eq!(r.orchestrator.memo_stats().evictions, 1);
    tokio::time::advance(Duration::from_millis(60_000)).await;
    let again = r.call(explicit("a-large", "third")).await.unwrap();
    assert!(!again.from_memo);
    let s = r.orchestrator.memo_stats();
    // Both remaining entries expired (2 more evictions); "third" is stored again.
    assert_eq!((s.hits, s.misses, s.entries, s.evictions), (1, 4, 1, 3));
    assert_eq!(r.orchestrator.metrics().memo, s);
}

#[test]
fn canonical_json_sorts_keys_so_equal_values_hash_equally() {
    let a = json!({"b": [1, {"y": 2, "x": "é"}], "a": null});
    assert_eq!(canonical_json(&a), r#"{"a":null,"b":[1,{"x":"é","y":2}]}"#);
    let r1 = ChatRequest {
        messages: vec![].into(),
        ..user("x")
    };
    let k1 = chatter_core::orchestration::MemoKey::new("auto", &r1);
    let k2 = chatter_core::orchestration::MemoKey::new("alpha", &r1);
    assert_eq!(k1.hash.len(), 64);
    assert_ne!(k1.hash, k2.hash);
}

fn recording(name: &str) -> std::path::PathBuf {
    let path = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(name);
    let _ = std::fs::remove_file(&path);
    path
}

fn memo_config(mode: &str, path: &std::path::Path) -> RegistryConfig {
    config_with(&format!(
        "memo: {{mode: {mode}, path: '{}'}}",
        path.display()
    ))
}

#[tokio::test(start_paused = true)]
async fn a_recording_replays_the_same_answers_with_zero_tokens() {
    let path = recording("orchestration-record-replay.jsonl");
    let r = rig(
        memo_config("record", &path),
        vec![
            reply("Paris.", 12, 2),
            reply("Lyon.", 14, 2),
            reply("Lyon, again.", 14, 3),
        ],
        vec![],
    );
    let questions = ["capital?", "second city?", "second city?"];
    let mut recorded = Vec::new();
    for q in questions {
        recorded.push(r.call(user(q)).await.unwrap().response);
    }
    assert_eq!(r.alpha.calls().len(), 3);
    assert_eq!(r.orchestrator.memo_stats().recorded, 3);
    let lines = std::fs::read_to_string(&path).unwrap();
    assert_eq!(lines.lines().count(), 4);
    assert_eq!(
        lines.lines().next().unwrap(),
        r#"{"format":"chatter-memo","version":1,"key":"sha256"}"#
    );

    // Recording again appends to the same file under the same header.
    let more = rig(
        memo_config("record", &path),
        vec![reply("Marseille.", 14, 2)],
        vec![],
    );
    more.call(user("third city?")).await.unwrap();
    let lines = std::fs::read_to_string(&path).unwrap();
    assert_eq!(lines.lines().count(), 5);
    assert_eq!(lines.matches("chatter-memo").count(), 1);

    // Replay needs no provider clients at all (CI without keys)...
    let bare = Orchestrator::builder(memo_config("replay", &path))
        .build()
        .unwrap();
    let got = bare
        .call(&CallContext::default(), user("capital?"), None)
        .await
        .unwrap();
    assert_eq!(got.response.message, recorded[0].message);

    // ...and with providers that would fail every call, nothing reaches them.
    let alpha = Fake::with_default("alpha", vec![], fail(ErrorClass::Server));
    let beta = Fake::with_default("beta", vec![], fail(ErrorClass::Server));
    let replay = Orchestrator::builder(memo_config("replay", &path))
        .provider("alpha", alpha.clone())
        .provider("beta", beta.clone())
        .build()
        .unwrap();
    for (q, want) in questions.iter().zip(&recorded) {
        let got = replay
            .call(&CallContext::default(), user(q), None)
            .await
            .unwrap();
        assert!(got.from_memo);
        assert_eq!(got.response.message, want.message);
        assert_eq!(got.response.finish_reason, want.finish_reason);
        assert_eq!(got.response.model, want.model);
        assert_eq!(got.response.usage, Usage::default());
    }
    // A repeated question keeps its last recorded answer.
    let again = replay
        .call(&CallContext::default(), user("second city?"), None)
        .await
        .unwrap();
    assert_eq!(again.response.message.content, "Lyon, again.");
    assert_eq!(alpha.calls().len() + beta.calls().len(), 0);
    assert_eq!(replay.metrics().llm_tokens_total, 0);

    // A call not in the recording fails clearly.
    match replay
        .call(&CallContext::default(), user("capital of Spain?"), None)
        .await
    {
        Err(Error::NotFound { what, name }) => {
            assert_eq!(what, "recorded model call");
            assert!(name.starts_with("routed (memo key "), "{name}");
            assert!(
                name.ends_with("last user message \"capital of Spain?\")"),
                "{name}"
            );
        }
        other => panic!("{other:?}"),
    }
    let s = replay.memo_stats();
    assert_eq!((s.hits, s.misses, s.entries), (4, 1, 3));
}

#[test]
fn recordings_that_do_not_parse_or_match_are_refused_at_load() {
    let build = |path: &std::path::Path, mode: &str| {
        Orchestrator::builder(memo_config(mode, path))
            .provider("alpha", Fake::new("alpha", vec![]))
            .provider("beta", Fake::new("beta", vec![]))
            .build()
            .map(|_| ())
    };
    let path = recording("orchestration-bad-recording.jsonl");
    let shown = path.display().to_string();

    std::fs::write(&path, "").unwrap();
    assert_eq!(
        build(&path, "replay").unwrap_err().to_string(),
        format!("configuration error: memo recording `{shown}` line 1: empty file (no header)")
    );

    std::fs::write(
        &path,
        "{\"format\":\"chatter-memo\",\"version\":2,\"key\":\"sha256\"}\n",
    )
    .unwrap();
    let err = build(&path, "replay").unwrap_err().to_string();
    assert!(
        err.contains("line 1: header says format `chatter-memo` version 2 key `sha256`"),
        "{err}"
    );
    // Record mode refuses to append to a foreign file too.
    assert!(build(&path, "record").is_err());

    let header = r#"{"format":"chatter-memo","version":1,"key":"sha256"}"#;
    std::fs::write(&path, format!("{header}\nnot json\n")).unwrap();
    let err = build(&path, "replay").unwrap_err().to_string();
    assert!(
        err.contains(&format!(
            "memo recording `{shown}` line 2: not a recorded call"
        )),
        "{err}"
    );

    // A key that does not match its request (an edited recording).
    let request = json!({"scope": "auto", "model": null, "messages": []});
    let response = json!({"message": {"role": "assistant", "content": "x"}, "usage": {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0, "cost": 0.0}, "finish_reason": "stop", "model": "m"});
    let line = json!({"key": "00", "request": request, "response": response, "recorded_ms": 0});
    std::fs::write(&path, format!("{header}\n{line}\n")).unwrap();
    let err = build(&path, "replay").unwrap_err().to_string();
    assert!(
        err.contains("line 2: the key does not match the recorded request"),
        "{err}"
    );

    match build(std::path::Path::new("/nonexistent/dir/rec.jsonl"), "replay") {
        Err(Error::Io { path, .. }) => assert_eq!(path, "/nonexistent/dir/rec.jsonl"),
        other => panic!("{other:?}"),
    }
}

// ---------------------------------------------------------------------------------------------
// Records

#[tokio::test(start_paused = true)]
async fn decisions_attempts_and_events_serialise_for_the_store_and_event_log() {
    let r = rig(
        config_with("{}"),
        vec![fail(ErrorClass::Server), reply("ok", 1, 1)],
        vec![],
    );
    let out = r.call(explicit("a-small", "hi")).await.unwrap();
    assert_eq!(
        serde_json::to_value(&out.attempts).unwrap(),
        json!([
            {"model": "a-small", "attempt": 1, "outcome": "failed", "class": "server",
             "error": "model `alpha` failed (server): scripted server", "duration_ms": 0, "delay_before_ms": 0},
            {"model": "a-small", "attempt": 2, "outcome": "succeeded", "duration_ms": 0, "delay_before_ms": 100}
        ])
    );
    let decision = serde_json::to_value(&out.decision).unwrap();
    assert_eq!(decision["model"], "a-small");
    assert_eq!(decision["api_model"], "small-2025");
    assert_eq!(decision["explicit"], true);
    assert_eq!(decision["analysis"]["complexity"], "simple");
    let back: chatter_core::orchestration::RoutingDecision =
        serde_json::from_value(decision).unwrap();
    assert_eq!(back, out.decision);
    let failed = r
        .log
        .events()
        .into_iter()
        .find(|e| matches!(e, OrchestrationEvent::AttemptFailed { .. }))
        .unwrap();
    assert_eq!(
        serde_json::to_value(&failed).unwrap(),
        json!({"type": "attempt_failed", "model": "a-small", "attempt": 1, "class": "server",
               "error": "model `alpha` failed (server): scripted server", "retry_in_ms": 100})
    );
    let metrics = serde_json::to_value(r.orchestrator.metrics()).unwrap();
    assert_eq!(metrics["llm_requests_total"], 2);
    assert_eq!(metrics["models"]["a-small"]["breaker"], "closed");
}

// ---------------------------------------------------------------------------------------------
// Registry integration

#[tokio::test(start_paused = true)]
async fn registered_models_route_or_stay_on_their_provider() {
    let r = rig(config_with(RULES), vec![], vec![]);
    let mut registry = ModelRegistry::new();
    r.orchestrator.register(&mut registry);
    assert_eq!(
        registry.names().collect::<Vec<_>>(),
        ["alpha", "auto", "beta"]
    );
    let router = registry.get(None).unwrap();
    assert_eq!(router.name(), "auto");
    router.chat(user("hi")).await.unwrap();
    assert_eq!(r.alpha.models_called(), ["small-2025"]);

    // Pinned to beta: the simple rule's target (alpha) is out of scope, its fallback fits.
    let beta = registry.get(Some("beta")).unwrap();
    beta.chat(user("hi")).await.unwrap();
    assert_eq!(r.beta.models_called(), ["b-medium"]);
    // A model of another provider is refused on a pinned provider.
    let err = beta.chat(explicit("a-small", "hi")).await.unwrap_err();
    assert_eq!(err.to_string(), "unknown model `beta/a-small`");

    // The execution and node come from the idempotency key, and reach observers.
    let req = ChatRequest {
        idempotency_key: Some("01J:node:a:2:1".into()),
        ..user("hi")
    };
    router.chat(req).await.unwrap();
    let (ctx, _) = r.log.0.lock().unwrap().last().unwrap().clone();
    assert_eq!(ctx.execution_id.as_deref(), Some("01J"));
    assert_eq!(ctx.node_id.as_deref(), Some("node:a"));
}

// ---------------------------------------------------------------------------------------------
// Whole workflows on the engine

mod on_the_engine {
    use super::*;
    use chatter_core::EventKind;
    use chatter_core::engine::{Engine, ExecutionStatus, RunOptions};
    use chatter_core::providers::ScriptedModel;

    const ONE_MODEL: &str = r#"
providers: [{name: local, kind: openai, default: true}]
models:
  - {name: m, provider: local, price: {input_per_1k: 0.001, output_per_1k: 0.002}}
routing: {default_model: m}
"#;

    fn three_calls() -> WorkflowDefinition {
        WorkflowDefinition::from_json(
            r#"{
              "nodes": [
                {"id": "start", "type": "start"},
                {"id": "a", "type": "llm", "config": {"prompt": "one"}},
                {"id": "b", "type": "llm", "config": {"prompt": "two"}},
                {"id": "c", "type": "llm", "config": {"prompt": "three"}},
                {"id": "end", "type": "end"}
              ],
              "edges": [
                {"source": "start", "target": "a"}, {"source": "a", "target": "b"},
                {"source": "b", "target": "c"}, {"source": "c", "target": "end"}
              ]
            }"#,
        )
        .unwrap()
    }

    fn scripted() -> Arc<ScriptedModel> {
        Arc::new(
            ScriptedModel::from_value(json!({
                "rules": [
                    {"match": {"contains": "one"}, "reply": {"content": "first answer"}},
                    {"match": {"contains": "two"}, "reply": {"content": "second answer"}},
                    {"match": {"contains": "three"}, "reply": {"content": "third answer"}}
                ],
                "default": {"content": "?"},
                "usage": {"prompt_tokens": 1000, "completion_tokens": 500}
            }))
            .unwrap(),
        )
    }

    fn engine(orchestrator: &Arc<Orchestrator>) -> Engine {
        let mut models = ModelRegistry::new();
        orchestrator.register(&mut models);
        Engine::builder().models(models).build()
    }

    #[tokio::test]
    async fn an_execution_budget_stops_the_workflow_with_budget_exceeded() {
        let provider = scripted();
        let orchestrator = Arc::new(
            Orchestrator::builder(RegistryConfig::from_yaml(ONE_MODEL).unwrap())
                .provider("local", provider.clone())
                .build()
                .unwrap(),
        );
        // 1 500 tokens: the first call spends them all, the second is refused before it is
        // sent, the third never runs.
        orchestrator.begin_execution(
            "exec-budget",
            ExecutionScope::with_budget(Budget::new(Some(1500), None)),
        );
        let r = engine(&orchestrator)
            .run(
                &three_calls(),
                json!({}),
                RunOptions::default().execution_id("exec-budget"),
            )
            .await
            .unwrap();
        assert_eq!(r.status, ExecutionStatus::Failed);
        let err = r.error.clone().unwrap();
        assert_eq!(err.class, "budget_exceeded");
        assert_eq!(err.node_id.as_deref(), Some("b"));
        assert!(
            err.message
                .contains("execution `exec-budget` has spent 1500 of its 1500 tokens"),
            "{}",
            err.message
        );
        assert!(r.runs_of("c").next().is_none());
        assert_eq!(provider.requests().len(), 1);
        assert_eq!((r.usage.total_tokens, r.usage.cost), (1500, 0.002));
        match &r.events.last().unwrap().kind {
            EventKind::ExecutionFailed { class, .. } => assert_eq!(class, "budget_exceeded"),
            other => panic!("{other:?}"),
        }
        assert_eq!(
            orchestrator
                .end_execution("exec-budget")
                .unwrap()
                .total_tokens,
            1500
        );
        assert_eq!(orchestrator.metrics().llm_budget_refusals_total, 1);
    }

    #[tokio::test]
    async fn a_recorded_workflow_replays_to_the_same_result_with_zero_tokens() {
        let path = recording("orchestration-engine-record-replay.jsonl");
        let with_memo = |mode: &str| {
            let mut config = RegistryConfig::from_yaml(ONE_MODEL).unwrap();
            config.memo.mode = match mode {
                "record" => MemoMode::Record,
                _ => MemoMode::Replay,
            };
            config.memo.path = Some(path.display().to_string());
            config
        };
        let provider = scripted();
        let recorder = Arc::new(
            Orchestrator::builder(with_memo("record"))
                .provider("local", provider.clone())
                .build()
                .unwrap(),
        );
        let run = |engine: Engine, def: WorkflowDefinition| async move {
            engine
                .run(&def, json!({"message": "go"}), RunOptions::default())
                .await
                .unwrap()
        };
        let recorded = run(engine(&recorder), three_calls()).await;
        assert_eq!(recorded.status, ExecutionStatus::Completed);
        assert_eq!(recorded.usage.total_tokens, 4500);
        assert_eq!(provider.requests().len(), 3);

        // Replayed with no provider at all: the same answers, no tokens, no cost.
        let replayer = Arc::new(Orchestrator::builder(with_memo("replay")).build().unwrap());
        let replayed = run(engine(&replayer), three_calls()).await;
        assert_eq!(replayed.status, ExecutionStatus::Completed);
        assert_eq!(replayed.response, recorded.response);
        assert_eq!(replayed.response.as_deref(), Some("third answer"));
        assert_eq!(replayed.messages, recorded.messages);
        assert_eq!(replayed.usage, Usage::default());
        for node in ["a", "b", "c"] {
            let (was, now) = (
                &recorded.runs_of(node).next().unwrap().output,
                &replayed.runs_of(node).next().unwrap().output,
            );
            assert_eq!(now["content"], was["content"], "{node}");
            assert_eq!(was["routing"]["from_memo"], false);
            assert_eq!(now["routing"]["from_memo"], true);
            assert_eq!(now["routing"]["attempts"], json!([]));
        }
        assert_eq!(replayer.memo_stats().hits, 3);

        // A workflow that asks something else fails at the first unrecorded call.
        let changed = WorkflowDefinition::from_json(
            &serde_json::to_string(&three_calls().to_value())
                .unwrap()
                .replace("\"two\"", "\"two, reworded\""),
        )
        .unwrap();
        let r = run(engine(&replayer), changed).await;
        assert_eq!(r.status, ExecutionStatus::Failed);
        let err = r.error.unwrap();
        assert_eq!(err.node_id.as_deref(), Some("b"));
        assert!(
            err.message.contains("recorded model call"),
            "{}",
            err.message
        );
        assert!(err.message.contains("two, reworded"), "{}", err.message);
    }
}
