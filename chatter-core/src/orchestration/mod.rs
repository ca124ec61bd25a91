//! Multi-model orchestration: a model registry with prices, routing rules, retries with
//! backoff, fallback chains, per-model circuit breakers, per-execution budgets, a memo of calls
//! with record/replay, and counters.
//!
//! The [`Orchestrator`] wraps any [`ChatModel`] providers. It is used through
//! [`OrchestratedModel`]s registered in a [`ModelRegistry`] like any provider: one under the
//! router's name (`auto`, the registry's default), which routes, and one per provider, which
//! keeps calls on that provider. A call flows: prompt analysis → routing decision → budget check
//! → memo → attempts on the chosen model (retries with backoff) → fallbacks → cost → memo.
//!
//! ```
//! use std::sync::Arc;
//! use async_trait::async_trait;
//! use chatter_core::model::{ChatModel, ChatRequest, ChatResponse, FinishReason, Message, Usage};
//! use chatter_core::orchestration::{Orchestrator, RegistryConfig};
//!
//! struct Echo;
//! #[async_trait]
//! impl ChatModel for Echo {
//!     fn name(&self) -> &str { "echo" }
//!     async fn chat(&self, request: ChatRequest) -> chatter_core::Result<ChatResponse> {
//!         Ok(ChatResponse {
//!             message: Message::assistant("hi"),
//!             usage: Usage { prompt_tokens: 1000, completion_tokens: 500, total_tokens: 1500, cost: 0.0 },
//!             finish_reason: FinishReason::Stop,
//!             model: request.model.unwrap_or_default(),
//!         })
//!     }
//! }
//!
//! # tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap().block_on(async {
//! let config = RegistryConfig::from_yaml(r#"
//! providers:
//!   - {name: local, kind: openai, base_url: "http://127.0.0.1:8080/v1", default: true}
//! models:
//!   - {name: small, provider: local, price: {input_per_1k: 0.0002, output_per_1k: 0.0008}}
//! routing: {default_model: small}
//! "#)?;
//! let orchestrator = Arc::new(Orchestrator::builder(config).provider("local", Arc::new(Echo)).build()?);
//! let mut registry = chatter_core::ModelRegistry::new();
//! orchestrator.register(&mut registry);
//! let model = registry.get(None)?; // the router, `auto`
//! let reply = model.chat(ChatRequest { messages: vec![Message::user("hello")].into(), ..Default::default() }).await?;
//! assert_eq!(reply.usage.cost, 0.0006); // 1000 × 0.0002/1k + 500 × 0.0008/1k
//! # Ok::<(), chatter_core::Error>(()) }).unwrap();
//! ```

mod analysis;
mod budget;
mod config;
mod memo;
mod metered;
mod observer;
mod resilience;
mod routing;

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

pub use analysis::{
    Complexity, PromptAnalysis, analyze, estimate_text_tokens, estimate_tokens, looks_like_code,
};
pub use budget::{BUDGET_EXCEEDED, Budget, ExecutionScope, MAX_TRACKED_EXECUTIONS};
pub use config::{
    AnalysisConfig, BreakerConfig, BudgetConfig, Capabilities, DEFAULT_ROUTER_NAME, MemoConfig,
    ModelDefaults, ModelSpec, Price, ProviderConfig, RegistryConfig, ResilienceConfig, Resolution,
    RoutingConfig, RoutingRule, RuleMatch, Tier, is_env_var_name, round_nano,
};
pub use memo::{
    KEY_SCHEME, Memo, MemoKey, MemoMode, MemoStats, RECORDING_FORMAT, RECORDING_VERSION,
    canonical_json,
};
pub use metered::MeteredModel;
pub use observer::{
    MetricsSnapshot, ModelCounters, ModelMetrics, OrchestrationEvent, OrchestrationObserver,
};
pub use resilience::{BreakerState, backoff_ms};
pub use routing::{
    CallContext, DEFAULT_EXPECTED_OUTPUT_TOKENS, RoutingDecision, SkippedModel, estimate_cost,
    route,
};

use crate::engine::{Clock, SystemClock};
use crate::error::{Error, ErrorClass, Result};
use crate::event::{EventKind, EventSink};
use crate::model::{
    ChatModel, ChatRequest, ChatResponse, ModelRegistry, ObservedResponse, TokenSink, Usage,
};

use budget::Executions;
use resilience::{Admission, Breaker, Disposition, Jitter, Transition};

/// Builds the client of a configured provider (the OpenAI-compatible HTTP client, ...).
pub trait ProviderFactory: Send + Sync {
    /// The client for `provider`.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] when the provider's kind is not supported or its settings are unusable.
    fn build(&self, provider: &ProviderConfig) -> Result<Arc<dyn ChatModel>>;
}

impl<F> ProviderFactory for F
where
    F: Fn(&ProviderConfig) -> Result<Arc<dyn ChatModel>> + Send + Sync,
{
    fn build(&self, provider: &ProviderConfig) -> Result<Arc<dyn ChatModel>> {
        self(provider)
    }
}

/// The provider clients Chatter builds from a provider's config by its `kind`: `openai`, any
/// OpenAI-compatible server ([`crate::providers::OpenAiModel`], with the `openai` cargo feature),
/// reached at `base_url` with the key of the environment variable named by `api_key_env`.
#[derive(Debug, Clone, Copy, Default)]
pub struct BuiltinProviders;

impl ProviderFactory for BuiltinProviders {
    fn build(&self, provider: &ProviderConfig) -> Result<Arc<dyn ChatModel>> {
        match provider.kind.as_str() {
            #[cfg(feature = "openai")]
            "openai" => {
                let config = crate::providers::OpenAiConfig::for_provider(provider)?;
                Ok(Arc::new(crate::providers::OpenAiModel::new(config)?))
            }
            other => Err(Error::Config {
                message: format!(
                    "provider `{}`: no built-in client for kind `{other}` ({}); register a \
                     ChatModel under the provider's name",
                    provider.name,
                    if cfg!(feature = "openai") {
                        "built in: `openai`"
                    } else {
                        "`openai` needs the `openai` cargo feature"
                    }
                ),
            }),
        }
    }
}

/// How one attempt ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
#[non_exhaustive]
pub enum AttemptOutcome {
    /// It answered.
    Succeeded,
    /// It failed.
    Failed {
        /// The error class.
        class: String,
        /// The error.
        error: String,
    },
    /// Not sent: the model's circuit is open.
    CircuitOpen,
}

/// One attempt of a call, for the node run record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct AttemptRecord {
    /// The model.
    pub model: String,
    /// 1 for the first attempt on this model.
    pub attempt: u32,
    /// How it ended.
    #[serde(flatten)]
    pub outcome: AttemptOutcome,
    /// How long it took.
    pub duration_ms: u64,
    /// The wait before it (a retry's backoff).
    pub delay_before_ms: u64,
}

/// A call's answer with how it was obtained.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct OrchestratedResponse {
    /// The answer; its usage cost is filled from the price table when the provider did not
    /// price it; zero usage when served from the memo.
    pub response: ChatResponse,
    /// The routing decision.
    pub decision: RoutingDecision,
    /// The model that answered (catalogue name; the decision's model unless it fell back).
    pub answered_by: String,
    /// Every attempt, in order (empty when served from the memo).
    pub attempts: Vec<AttemptRecord>,
    /// Whether the memo answered.
    pub from_memo: bool,
}

impl OrchestratedResponse {
    /// How the call was served, as recorded in the `llm` node run's output under `routing`: the
    /// routing decision (model, provider, API name, rule, explicit, reason, fallbacks, estimated
    /// cost, skipped candidates, analysis), `answered_by`, `from_memo` and every attempt.
    pub fn report(&self) -> serde_json::Value {
        let mut report = serde_json::to_value(&self.decision).unwrap_or_default();
        if let serde_json::Value::Object(map) = &mut report {
            map.insert("answered_by".to_owned(), self.answered_by.clone().into());
            map.insert("from_memo".to_owned(), self.from_memo.into());
            map.insert(
                "attempts".to_owned(),
                serde_json::to_value(&self.attempts).unwrap_or_default(),
            );
        }
        report
    }
}

/// One call being served: who calls, and where its engine events go.
struct Call<'a> {
    ctx: &'a CallContext,
    events: Option<&'a dyn EventSink>,
}

impl std::ops::Deref for Call<'_> {
    type Target = CallContext;

    fn deref(&self) -> &CallContext {
        self.ctx
    }
}

/// The engine event recording an orchestration event, for those the event log keeps: routing
/// decisions, retries and fallbacks (attempt starts and successes are in the node run record).
fn engine_event(ctx: &CallContext, event: &OrchestrationEvent) -> Option<EventKind> {
    let node_id = ctx.node_id.clone().unwrap_or_default();
    match event {
        OrchestrationEvent::Routed { decision } => Some(EventKind::ModelRouted {
            node_id,
            model: decision.model.clone(),
            provider: decision.provider.clone(),
            rule: decision.rule.clone(),
            explicit: decision.explicit,
            reason: decision.reason.clone(),
            fallbacks: decision.fallbacks.clone(),
            estimated_cost: decision.estimated_cost,
        }),
        OrchestrationEvent::AttemptFailed {
            model,
            attempt,
            class,
            error,
            retry_in_ms: Some(delay_ms),
        } => Some(EventKind::ModelRetrying {
            node_id,
            model: model.clone(),
            attempt: *attempt,
            class: class.clone(),
            error: error.clone(),
            delay_ms: *delay_ms,
        }),
        OrchestrationEvent::Fallback { from, to, reason } => Some(EventKind::ModelFallback {
            node_id,
            from: from.clone(),
            to: to.clone(),
            reason: reason.clone(),
        }),
        _ => None,
    }
}

/// Builds an [`Orchestrator`].
pub struct OrchestratorBuilder {
    config: RegistryConfig,
    providers: BTreeMap<String, Arc<dyn ChatModel>>,
    factory: Option<Arc<dyn ProviderFactory>>,
    observers: Vec<Arc<dyn OrchestrationObserver>>,
    jitter_seed: Option<u64>,
    clock: Arc<dyn Clock>,
}

impl std::fmt::Debug for OrchestratorBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OrchestratorBuilder")
            .field("providers", &self.providers.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

impl OrchestratorBuilder {
    /// The client of the configured provider `name`.
    #[must_use]
    pub fn provider(mut self, name: impl Into<String>, model: Arc<dyn ChatModel>) -> Self {
        self.providers.insert(name.into(), model);
        self
    }

    /// Takes the clients of providers registered in `registry` under their configured names.
    #[must_use]
    pub fn providers_from(mut self, registry: &ModelRegistry) -> Self {
        for p in &self.config.providers {
            if let Ok(model) = registry.get(Some(&p.name)) {
                self.providers.insert(p.name.clone(), model);
            }
        }
        self
    }

    /// Builds the clients of providers not given explicitly.
    #[must_use]
    pub fn factory(mut self, factory: Arc<dyn ProviderFactory>) -> Self {
        self.factory = Some(factory);
        self
    }

    /// Adds an observer.
    #[must_use]
    pub fn observer(mut self, observer: Arc<dyn OrchestrationObserver>) -> Self {
        self.observers.push(observer);
        self
    }

    /// Seeds the jitter of retry delays (reproducible delays in tests).
    #[must_use]
    pub fn jitter_seed(mut self, seed: u64) -> Self {
        self.jitter_seed = Some(seed);
        self
    }

    /// The clock stamping recordings.
    #[must_use]
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// Builds the orchestrator.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] when the config is invalid, an active provider has no client (neither
    /// given nor built by the factory; allowed in `replay` mode, which never calls one), or the memo's recording is refused (see [`Memo::new`]);
    /// [`Error::Io`] when the recording cannot be opened.
    pub fn build(mut self) -> Result<Orchestrator> {
        self.config.validate()?;
        let mut missing = Vec::new();
        // A replay never reaches a provider: clients are optional (CI without keys).
        let replay = self.config.memo.mode == MemoMode::Replay;
        for p in self.config.providers.iter().filter(|p| p.active) {
            if self.providers.contains_key(&p.name) {
                continue;
            }
            match &self.factory {
                Some(f) => {
                    let model = f.build(p)?;
                    self.providers.insert(p.name.clone(), model);
                }
                None if replay => {}
                None => missing.push(format!("`{}` (kind `{}`)", p.name, p.kind)),
            }
        }
        if !missing.is_empty() {
            return Err(Error::Config {
                message: format!(
                    "no client for provider {}: register a ChatModel under that name or give a factory",
                    missing.join(", ")
                ),
            });
        }
        let memo = Memo::new(&self.config.memo)?;
        Ok(Orchestrator {
            executions: Executions::new(Budget::from(self.config.budgets)),
            config: self.config,
            providers: self.providers,
            breakers: Mutex::new(HashMap::new()),
            memo,
            metrics: ModelCounters::default(),
            observers: self.observers,
            jitter: self.jitter_seed.map_or_else(Jitter::from_time, Jitter::new),
            clock: self.clock,
        })
    }
}

/// The shared core: config, provider clients, breakers, memo, budgets, counters, observers.
pub struct Orchestrator {
    config: RegistryConfig,
    providers: BTreeMap<String, Arc<dyn ChatModel>>,
    breakers: Mutex<HashMap<String, Breaker>>,
    memo: Memo,
    metrics: ModelCounters,
    observers: Vec<Arc<dyn OrchestrationObserver>>,
    executions: Executions,
    jitter: Jitter,
    clock: Arc<dyn Clock>,
}

impl std::fmt::Debug for Orchestrator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Orchestrator")
            .field("providers", &self.providers.keys().collect::<Vec<_>>())
            .field("memo", &self.memo)
            .finish_non_exhaustive()
    }
}

/// Watches whether any text reached the caller's sink.
struct WatchSink<'a> {
    inner: &'a dyn TokenSink,
    streamed: AtomicBool,
}

impl TokenSink for WatchSink<'_> {
    fn token(&self, text: &str) {
        if !text.is_empty() {
            self.streamed.store(true, Ordering::Relaxed);
        }
        self.inner.token(text);
    }
}

impl WatchSink<'_> {
    fn streamed(&self) -> bool {
        self.streamed.load(Ordering::Relaxed)
    }
}

/// How trying one model ended without an answer.
struct ModelFailure {
    error: Error,
    /// Whether the next model of the chain may be tried.
    fall_back: bool,
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

impl Orchestrator {
    /// A builder for `config`.
    pub fn builder(config: RegistryConfig) -> OrchestratorBuilder {
        OrchestratorBuilder {
            config,
            providers: BTreeMap::new(),
            factory: None,
            observers: Vec::new(),
            jitter_seed: None,
            clock: Arc::new(SystemClock),
        }
    }

    /// The config.
    pub fn config(&self) -> &RegistryConfig {
        &self.config
    }

    /// Registers the router under `routing.router_name` (made the registry's default) and one
    /// provider-pinned model per active provider, under the provider's name.
    pub fn register(self: &Arc<Self>, registry: &mut ModelRegistry) {
        for p in self.config.providers.iter().filter(|p| p.active) {
            registry.register(p.name.clone(), Arc::new(self.model(Some(&p.name))));
        }
        let name = self.config.routing.router_name.clone();
        registry.register(name.clone(), Arc::new(self.model(None)));
        // Cannot fail: just registered.
        let _ = registry.set_default(&name);
    }

    /// A [`ChatModel`] served by this orchestrator, pinned to `provider` or routing freely.
    pub fn model(self: &Arc<Self>, provider: Option<&str>) -> OrchestratedModel {
        OrchestratedModel {
            orchestrator: Arc::clone(self),
            name: provider.map_or_else(|| self.config.routing.router_name.clone(), str::to_owned),
            provider: provider.map(str::to_owned),
        }
    }

    /// Starts tracking an execution: its routing attributes and budget (replacing the config's
    /// per-execution budget). Calls whose idempotency key starts with `execution_id` use it.
    pub fn begin_execution(&self, execution_id: &str, scope: ExecutionScope) {
        self.executions.begin(execution_id, scope);
    }

    /// Stops tracking an execution; returns what it spent.
    pub fn end_execution(&self, execution_id: &str) -> Option<Usage> {
        self.executions.end(execution_id)
    }

    /// What a tracked execution has spent so far.
    pub fn execution_usage(&self, execution_id: &str) -> Option<Usage> {
        self.executions.spent(execution_id)
    }

    /// The state of a model's circuit breaker.
    pub fn breaker_state(&self, model: &str) -> BreakerState {
        self.lock_breakers()
            .get(model)
            .map_or(BreakerState::Closed, Breaker::state)
    }

    /// The counters now.
    pub fn metrics(&self) -> MetricsSnapshot {
        self.metrics.snapshot(self.memo.stats())
    }

    /// The memo's statistics.
    pub fn memo_stats(&self) -> MemoStats {
        self.memo.stats()
    }

    fn lock_breakers(&self) -> std::sync::MutexGuard<'_, HashMap<String, Breaker>> {
        self.breakers
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn emit(&self, call: &Call<'_>, event: &OrchestrationEvent) {
        for o in &self.observers {
            o.on_event(call.ctx, event);
        }
        if let Some(events) = call.events
            && let Some(kind) = engine_event(call.ctx, event)
        {
            events.emit(kind);
        }
    }

    fn report(&self, ctx: &Call<'_>, model: &str, transition: Transition) {
        if let Some((from, to)) = transition {
            self.metrics.breaker(model, to);
            self.emit(
                ctx,
                &OrchestrationEvent::BreakerTransition {
                    model: model.to_owned(),
                    from,
                    to,
                },
            );
        }
    }

    /// Serves one call: analysis, routing, budget, memo, attempts, fallbacks, cost.
    ///
    /// `ctx` names the execution (for budgets) and carries the routing attributes; attributes
    /// given to [`Orchestrator::begin_execution`] fill those `ctx` leaves unset. With a `sink`,
    /// the answer streams; once any text has streamed, a failure is returned as is: neither
    /// retried nor passed to a fallback model, because the caller has already shown part of
    /// one answer and a second model would continue it with a different one.
    ///
    /// # Errors
    ///
    /// Routing errors (see [`route`]); [`Error::LimitExceeded`] with limit
    /// [`BUDGET_EXCEEDED`] when the execution's budget refuses the call; [`Error::NotFound`]
    /// for a call missing from a `replay` recording; otherwise the last model's error when
    /// every model of the chain failed (a model whose circuit is open fails with
    /// [`Error::Model`] of class `server` and the remaining cooldown as `retry_after_ms`).
    pub async fn call(
        &self,
        ctx: &CallContext,
        request: ChatRequest,
        sink: Option<&dyn TokenSink>,
    ) -> Result<OrchestratedResponse> {
        self.serve(ctx, request, sink, None).await
    }

    /// As [`Orchestrator::call`], also emitting the routing decision, retries and fallbacks to
    /// `events` as engine events (`model_routed`, `model_retrying`, `model_fallback`) for the
    /// node in `ctx`.
    ///
    /// # Errors
    ///
    /// As [`Orchestrator::call`].
    pub async fn call_observed(
        &self,
        ctx: &CallContext,
        request: ChatRequest,
        sink: Option<&dyn TokenSink>,
        events: &dyn EventSink,
    ) -> Result<OrchestratedResponse> {
        self.serve(ctx, request, sink, Some(events)).await
    }

    async fn serve(
        &self,
        ctx: &CallContext,
        request: ChatRequest,
        sink: Option<&dyn TokenSink>,
        events: Option<&dyn EventSink>,
    ) -> Result<OrchestratedResponse> {
        let mut ctx = ctx.clone();
        if let Some(scope) = ctx
            .execution_id
            .as_deref()
            .and_then(|id| self.executions.scope(id))
        {
            if ctx.workflow_type.is_none() {
                ctx.workflow_type = scope.workflow_type;
            }
            for t in scope.tags {
                if !ctx.tags.contains(&t) {
                    ctx.tags.push(t);
                }
            }
        }
        let call = Call { ctx: &ctx, events };
        let ctx = &call;
        let analysis = analyze(&request, &self.config.analysis);
        let decision = route(&self.config, &request, &analysis, ctx)?;
        self.emit(
            ctx,
            &OrchestrationEvent::Routed {
                decision: decision.clone(),
            },
        );
        if let Some(id) = ctx.execution_id.as_deref() {
            let prompt_cost = self
                .config
                .model(&decision.model)
                .and_then(|m| m.price)
                .map_or(0.0, |p| p.cost(analysis.estimated_tokens, 0));
            if let Err(e) = self
                .executions
                .check(id, analysis.estimated_tokens, prompt_cost)
            {
                self.metrics.budget_refusal();
                self.emit(
                    ctx,
                    &OrchestrationEvent::BudgetExceeded {
                        message: e.to_string(),
                    },
                );
                return Err(e);
            }
        }
        let key = (self.memo.mode() != MemoMode::Off).then(|| {
            let scope = ctx
                .provider
                .as_deref()
                .unwrap_or(&self.config.routing.router_name);
            MemoKey::new(scope, &request)
        });
        if let Some(key) = &key {
            if let Some(mut response) = self.memo.lookup(key) {
                response.usage = Usage::default();
                self.emit(
                    ctx,
                    &OrchestrationEvent::MemoHit {
                        key: key.hash.clone(),
                    },
                );
                if let Some(sink) = sink
                    && !response.message.content.is_empty()
                {
                    sink.token(&response.message.content);
                }
                return Ok(OrchestratedResponse {
                    response,
                    answered_by: decision.model.clone(),
                    decision,
                    attempts: Vec::new(),
                    from_memo: true,
                });
            }
            if self.memo.mode() == MemoMode::Replay {
                let last_user = request
                    .messages
                    .iter()
                    .rev()
                    .find(|m| m.role == crate::model::Role::User)
                    .map(|m| m.content.chars().take(60).collect::<String>())
                    .unwrap_or_default();
                return Err(Error::NotFound {
                    what: "recorded model call".to_owned(),
                    name: format!(
                        "{} (memo key {}; last user message \"{last_user}\")",
                        request.model.as_deref().unwrap_or("routed"),
                        key.hash
                    ),
                });
            }
        }
        let watch = sink.map(|inner| WatchSink {
            inner,
            streamed: AtomicBool::new(false),
        });
        let mut chain: Vec<&ModelSpec> = Vec::new();
        for name in std::iter::once(&decision.model).chain(decision.fallbacks.iter()) {
            if let Some(m) = self.config.model(name) {
                chain.push(m);
            }
        }
        let mut attempts = Vec::new();
        let mut last_error: Option<Error> = None;
        for (i, model) in chain.iter().enumerate() {
            if i > 0
                && let Some(previous) = chain.get(i - 1)
            {
                self.metrics.fallback(&previous.name);
                self.emit(
                    ctx,
                    &OrchestrationEvent::Fallback {
                        from: previous.name.clone(),
                        to: model.name.clone(),
                        reason: last_error
                            .as_ref()
                            .map(ToString::to_string)
                            .unwrap_or_default(),
                    },
                );
            }
            match self
                .try_model(ctx, model, &request, watch.as_ref(), &mut attempts)
                .await
            {
                Ok(response) => {
                    if let Some(id) = ctx.execution_id.as_deref() {
                        self.executions.spend(id, &response.usage);
                    }
                    if let Some(key) = &key {
                        self.memo.store(key, &response, self.clock.now_ms())?;
                    }
                    return Ok(OrchestratedResponse {
                        response,
                        answered_by: model.name.clone(),
                        decision,
                        attempts,
                        from_memo: false,
                    });
                }
                Err(failure) => {
                    let streamed = watch.as_ref().is_some_and(WatchSink::streamed);
                    if !failure.fall_back || streamed {
                        return Err(failure.error);
                    }
                    last_error = Some(failure.error);
                }
            }
        }
        Err(last_error.unwrap_or_else(|| Error::Config {
            message: "no model to call".to_owned(),
        }))
    }

    /// The request as sent to `model`: its API name, the provider's defaults for unset
    /// parameters, `max_tokens` clamped to the model's output limit.
    fn provider_request(&self, model: &ModelSpec, request: &ChatRequest) -> ChatRequest {
        let mut req = request.clone();
        req.model = Some(model.api_model().to_owned());
        if let Some(p) = self.config.provider(&model.provider) {
            let d = &p.default_config;
            req.temperature = req.temperature.or(d.temperature);
            req.top_p = req.top_p.or(d.top_p);
            req.max_tokens = req.max_tokens.or(d.max_tokens);
        }
        if let (Some(asked), Some(limit)) = (req.max_tokens, model.max_output_tokens) {
            req.max_tokens = Some(asked.min(limit));
        }
        req
    }

    /// Fills what the provider left out: total tokens, and the cost from the price table.
    fn price(model: &ModelSpec, usage: &mut Usage) {
        if usage.total_tokens == 0 {
            usage.total_tokens = usage.prompt_tokens + usage.completion_tokens;
        }
        if usage.cost == 0.0
            && let Some(price) = model.price
        {
            usage.cost = price.cost_of(usage);
        }
    }

    async fn try_model(
        &self,
        ctx: &Call<'_>,
        model: &ModelSpec,
        request: &ChatRequest,
        sink: Option<&WatchSink<'_>>,
        attempts: &mut Vec<AttemptRecord>,
    ) -> std::result::Result<ChatResponse, ModelFailure> {
        let resilience = &self.config.resilience;
        let Some(provider) = self.providers.get(&model.provider) else {
            return Err(ModelFailure {
                error: Error::NotFound {
                    what: "model provider".to_owned(),
                    name: model.provider.clone(),
                },
                fall_back: true,
            });
        };
        let mut delay_before_ms = 0;
        let mut attempt: u32 = 0;
        loop {
            attempt += 1;
            let (admission, transition) = self
                .lock_breakers()
                .entry(model.name.clone())
                .or_insert_with(Breaker::new)
                .admit(&resilience.breaker);
            self.report(ctx, &model.name, transition);
            if let Admission::Refused { retry_in_ms } = admission {
                attempts.push(AttemptRecord {
                    model: model.name.clone(),
                    attempt,
                    outcome: AttemptOutcome::CircuitOpen,
                    duration_ms: 0,
                    delay_before_ms,
                });
                return Err(ModelFailure {
                    error: Error::Model {
                        model: model.name.clone(),
                        class: ErrorClass::Server,
                        message: format!("circuit breaker open; next probe in {retry_in_ms} ms"),
                        retry_after_ms: Some(retry_in_ms),
                    },
                    fall_back: true,
                });
            }
            self.emit(
                ctx,
                &OrchestrationEvent::AttemptStarted {
                    model: model.name.clone(),
                    attempt,
                },
            );
            let req = self.provider_request(model, request);
            let started = Instant::now();
            let call = async {
                match sink {
                    Some(s) => provider.chat_stream(req, s).await,
                    None => provider.chat(req).await,
                }
            };
            let timeout = Duration::from_millis(resilience.timeout_ms);
            let result = tokio::time::timeout(timeout, call)
                .await
                .unwrap_or_else(|_| {
                    Err(Error::Model {
                        model: model.name.clone(),
                        class: ErrorClass::Timeout,
                        message: format!("no answer within {} ms", resilience.timeout_ms),
                        retry_after_ms: None,
                    })
                });
            let duration_ms = millis(started.elapsed());
            match result {
                Ok(mut response) => {
                    Orchestrator::price(model, &mut response.usage);
                    let transition = self
                        .lock_breakers()
                        .entry(model.name.clone())
                        .or_insert_with(Breaker::new)
                        .success();
                    self.report(ctx, &model.name, transition);
                    self.metrics.attempt(&model.name, true);
                    self.metrics.usage(&model.name, &response.usage);
                    attempts.push(AttemptRecord {
                        model: model.name.clone(),
                        attempt,
                        outcome: AttemptOutcome::Succeeded,
                        duration_ms,
                        delay_before_ms,
                    });
                    self.emit(
                        ctx,
                        &OrchestrationEvent::AttemptSucceeded {
                            model: model.name.clone(),
                            attempt,
                            usage: response.usage,
                            duration_ms,
                        },
                    );
                    return Ok(response);
                }
                Err(error) => {
                    self.metrics.attempt(&model.name, false);
                    let disposition = resilience::disposition(&error);
                    let (transition, now_open) = {
                        let mut breakers = self.lock_breakers();
                        let breaker = breakers
                            .entry(model.name.clone())
                            .or_insert_with(Breaker::new);
                        if resilience::counts_against_breaker(&error) {
                            let transition = breaker.failure(&resilience.breaker);
                            (transition, breaker.state() == BreakerState::Open)
                        } else {
                            breaker.release_probe();
                            (None, false)
                        }
                    };
                    self.report(ctx, &model.name, transition);
                    let class = error.class().map_or("internal", ErrorClass::as_str);
                    attempts.push(AttemptRecord {
                        model: model.name.clone(),
                        attempt,
                        outcome: AttemptOutcome::Failed {
                            class: class.to_owned(),
                            error: error.to_string(),
                        },
                        duration_ms,
                        delay_before_ms,
                    });
                    let streamed = sink.is_some_and(WatchSink::streamed);
                    let retry_in = match disposition {
                        Disposition::Retry
                            if !streamed && !now_open && attempt < resilience.max_attempts =>
                        {
                            match &error {
                                Error::Model {
                                    retry_after_ms: Some(after),
                                    ..
                                } => (*after <= resilience.max_backoff_ms).then_some(*after),
                                _ => Some(
                                    self.jitter
                                        .apply(backoff_ms(resilience, attempt), resilience.jitter),
                                ),
                            }
                        }
                        _ => None,
                    };
                    self.emit(
                        ctx,
                        &OrchestrationEvent::AttemptFailed {
                            model: model.name.clone(),
                            attempt,
                            class: class.to_owned(),
                            error: error.to_string(),
                            retry_in_ms: retry_in,
                        },
                    );
                    match retry_in {
                        Some(ms) => {
                            tokio::time::sleep(Duration::from_millis(ms)).await;
                            delay_before_ms = ms;
                        }
                        None => {
                            return Err(ModelFailure {
                                fall_back: !streamed && disposition != Disposition::Fail,
                                error,
                            });
                        }
                    }
                }
            }
        }
    }
}

/// A [`ChatModel`] served by an [`Orchestrator`]: routes (or stays on its pinned provider),
/// retries, falls back, prices, memoises and enforces budgets.
///
/// The execution is read from the request's idempotency key (`execution:node:iteration:attempt`),
/// which the engine sets on every model call, so budgets and execution attributes given to
/// [`Orchestrator::begin_execution`] apply without any other plumbing.
#[derive(Clone)]
pub struct OrchestratedModel {
    orchestrator: Arc<Orchestrator>,
    name: String,
    provider: Option<String>,
}

impl std::fmt::Debug for OrchestratedModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OrchestratedModel")
            .field("name", &self.name)
            .field("provider", &self.provider)
            .finish_non_exhaustive()
    }
}

impl OrchestratedModel {
    /// The call context of `request`: its execution and node, and the pinned provider.
    pub fn context(&self, request: &ChatRequest) -> CallContext {
        let mut ctx = request
            .idempotency_key
            .as_deref()
            .map(CallContext::from_idempotency_key)
            .unwrap_or_default();
        ctx.provider.clone_from(&self.provider);
        ctx
    }

    /// Serves a call with its routing decision and attempts.
    ///
    /// # Errors
    ///
    /// As [`Orchestrator::call`].
    pub async fn call(
        &self,
        request: ChatRequest,
        sink: Option<&dyn TokenSink>,
    ) -> Result<OrchestratedResponse> {
        let ctx = self.context(&request);
        self.orchestrator.call(&ctx, request, sink).await
    }
}

#[async_trait]
impl ChatModel for OrchestratedModel {
    fn name(&self) -> &str {
        &self.name
    }

    async fn chat(&self, request: ChatRequest) -> Result<ChatResponse> {
        self.call(request, None).await.map(|r| r.response)
    }

    async fn chat_stream(
        &self,
        request: ChatRequest,
        sink: &dyn TokenSink,
    ) -> Result<ChatResponse> {
        self.call(request, Some(sink)).await.map(|r| r.response)
    }

    async fn chat_observed(
        &self,
        request: ChatRequest,
        sink: Option<&dyn TokenSink>,
        events: &dyn EventSink,
    ) -> Result<ObservedResponse> {
        let ctx = self.context(&request);
        let served = self
            .orchestrator
            .call_observed(&ctx, request, sink, events)
            .await?;
        let report = served.report();
        let mut observed = ObservedResponse::new(served.response);
        observed.report = Some(report);
        Ok(observed)
    }
}
