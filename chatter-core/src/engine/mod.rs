//! The execution engine: a dataflow scheduler over a validated definition (DESIGN §5).
//!
//! Build an [`Engine`] once (services, limits, node kinds), then [`Engine::run`] a definition, or
//! [`Engine::start`] it and follow its [`EventStream`] while it runs.
//!
//! ```
//! use std::sync::Arc;
//! use async_trait::async_trait;
//! use chatter_core::engine::{Engine, ExecutionStatus, RunOptions};
//! use chatter_core::{Node, NodeContext, NodeOutput, NodeSpec, Result, StateDelta, VariableOp};
//! use chatter_core::WorkflowBuilder;
//! use serde_json::json;
//!
//! /// A node kind of our own: sets `variables.greeting`.
//! struct Greet;
//!
//! #[async_trait]
//! impl Node for Greet {
//!     async fn run(&self, _ctx: NodeContext) -> Result<NodeOutput> {
//!         Ok(NodeOutput::delta(StateDelta {
//!             variables: vec![("greeting".into(), VariableOp::Set(json!("hello")))],
//!             ..StateDelta::default()
//!         }))
//!     }
//! }
//!
//! # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
//! let engine = Engine::builder()
//!     .register_node("greet", |_: &NodeSpec| Ok(Arc::new(Greet) as Arc<dyn Node>))
//!     .build();
//! let def = WorkflowBuilder::new().node("hi", "greet").build()?;
//! let result = engine.run(&def, json!({}), RunOptions::default()).await?;
//! assert_eq!(result.status, ExecutionStatus::Completed);
//! assert_eq!(result.variables["greeting"], "hello");
//! # Ok::<(), chatter_core::Error>(())
//! # }).unwrap();
//! ```
//!
//! # Semantics
//!
//! * A node starts as soon as its own in-edges are resolved (no global barrier); concurrent
//!   nodes are bounded by [`Limits::max_concurrency`].
//! * Out-edges with a condition are tried in document order and the first true one is taken;
//!   else the unconditional out-edges are taken; else the path ends. [`Route::Branch`] first
//!   restricts the out-edges to those of that `sourceHandle` (a node none of whose out-edges
//!   names a handle, the old platform's style, routes by its edges' conditions instead). Edges not taken are *dead*, and
//!   deadness propagates, so a join (`join: all`) never waits forever and never runs twice in a
//!   wave; `join: any` runs at the first taken in-edge.
//! * Back-edges (found once per definition by depth-first search from the entry nodes) start a
//!   new iteration of their target. Entering a loop afresh from outside restarts the iteration
//!   counters of its nodes. Edges leaving a cycle are declared dead only once the cycle is at
//!   rest, since a later pass may take them.
//! * Node runs are recorded in the order their deltas were applied (with the deltas), so
//!   applying them in that order to the initial state replays the execution exactly.
//!
//! # Failures and limits
//!
//! A node attempt runs under its timeout (`timeout_ms`, else [`Limits::node_timeout_ms`]) with
//! panics contained; it is retried by its `retry` policy (`node_retrying` events). A node that
//! still fails takes, in this order: its `error` branch (`sourceHandle: "error"`), its edge to an
//! `error_handler` node (which runs with [`NodeContext::failure`] set and may answer
//! [`Route::RetryFailed`]), its `on_error: continue` (the error is recorded in `errors` and its
//! edges are followed), or else the execution fails. Budgets (tokens, cost), `max_steps`, a
//! loop node's `max_iterations` and the execution timeout end the execution as `failed` with
//! the limit as the failure's class (`budget_exceeded`, `max_steps`, `max_iterations`,
//! `timeout`); cancellation ends it as `cancelled`. Running nodes see their `ctx.cancel` and are
//! then dropped, so an execution never waits on a node that ignores it.
//!
//! # Events
//!
//! Every event goes to one log per execution, numbered from 1 and stamped by the engine's
//! [`Clock`]. [`ExecutionHandle::subscribe`] reads that log with a cursor, so a subscriber never
//! misses an event however slowly it reads, and one that comes late (or resumes after a
//! sequence number with [`ExecutionHandle::subscribe_from`]) starts where it likes. The log
//! lives as long as the execution's handle and is what [`ExecutionResult::events`] returns:
//! memory is bounded by the execution, not by the slowest reader.

mod durable;
mod events;
mod node;
mod observe;
mod plan;
mod policy;
mod result;
mod scheduler;

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio_util::sync::CancellationToken;
use tracing::Instrument as _;

pub use durable::{Durability, DurabilityMode, event_from_record};
pub(crate) use durable::{Replay, new_event, recorded_runs};
pub use events::EventStream;
pub use node::{
    Clock, DefinitionResolver, DiscardEvents, Node, NodeContext, NodeFactory, NodeFailure,
    NodeOutput, OutputValue, Route, Services, SubgraphOutcome, SubgraphRunner, SystemClock,
};
pub use observe::EngineObserver;
pub use plan::PreparedWorkflow;
pub use policy::RetryPolicy;
pub use result::{ExecutionFailure, ExecutionResult, ExecutionStatus, NodeRun, NodeRunStatus};

use crate::definition::{NodeSpec, WorkflowDefinition};
use crate::error::{Error, Result};
use crate::event::Event;
use crate::model::{Message, ModelRegistry};
use crate::registry::{NodeKindInfo, NodeRegistry};
use crate::retriever::RetrieverRegistry;
use crate::tool::ToolRegistry;
use crate::validate::{ValidatorConfig, WorkflowValidator};

/// The limits of one execution (DESIGN §5). The defaults are the old platform's.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Limits {
    /// Wall-clock limit of the whole execution, in milliseconds (default 300 000).
    pub execution_timeout_ms: u64,
    /// Limit of one node attempt when the node sets no `timeout_ms` (default 60 000).
    pub node_timeout_ms: u64,
    /// Token budget, summed over every model call (default 100 000; `None`: unlimited).
    pub max_tokens: Option<u64>,
    /// Cost budget in US dollars (default unset).
    pub max_cost: Option<f64>,
    /// Most node runs in one execution (default 1000).
    pub max_steps: u32,
    /// Most nodes running at once (default 16).
    pub max_concurrency: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            execution_timeout_ms: 300_000,
            node_timeout_ms: 60_000,
            max_tokens: Some(100_000),
            max_cost: None,
            max_steps: 1000,
            max_concurrency: 16,
        }
    }
}

impl Limits {
    /// Sets the execution timeout.
    #[must_use]
    pub fn execution_timeout_ms(mut self, ms: u64) -> Limits {
        self.execution_timeout_ms = ms;
        self
    }
    /// Sets the default node timeout.
    #[must_use]
    pub fn node_timeout_ms(mut self, ms: u64) -> Limits {
        self.node_timeout_ms = ms;
        self
    }
    /// Sets the token budget.
    #[must_use]
    pub fn max_tokens(mut self, tokens: Option<u64>) -> Limits {
        self.max_tokens = tokens;
        self
    }
    /// Sets the cost budget.
    #[must_use]
    pub fn max_cost(mut self, cost: Option<f64>) -> Limits {
        self.max_cost = cost;
        self
    }
    /// Sets the step limit.
    #[must_use]
    pub fn max_steps(mut self, steps: u32) -> Limits {
        self.max_steps = steps;
        self
    }
    /// Sets the concurrency limit (at least 1).
    #[must_use]
    pub fn max_concurrency(mut self, n: usize) -> Limits {
        self.max_concurrency = n.max(1);
        self
    }
}

/// Options of one execution.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct RunOptions {
    /// The execution id (default: a new ULID).
    pub execution_id: Option<String>,
    /// Limits replacing the engine's defaults.
    pub limits: Option<Limits>,
    /// Earlier messages of the thread (conversation), oldest first.
    pub history: Vec<Message>,
    /// Who runs it (also visible to nodes as `metadata.owner_id`).
    pub owner: Option<String>,
    /// Cancels the execution when cancelled (e.g. a client that went away).
    pub cancel: Option<CancellationToken>,
    /// Makes the execution durable: each step committed to a store (DESIGN §8). The
    /// execution's row must exist and be `running`; [`crate::tracker::WorkflowTracker`] sets
    /// this up.
    pub durability: Option<Durability>,
    /// Keeps no events: [`ExecutionResult::events`] comes back empty and streams of the
    /// execution end without an event, which saves building two events per step that the
    /// caller would throw away. Ignored by durable executions, whose events are their record.
    pub discard_events: bool,
    /// Runs a durable execution of [`crate::tracker::WorkflowTracker`] in the caller's task
    /// instead of a task of its own: no task to spawn, and no wake-up across threads for its
    /// events (its observers are called in that task too); the nodes run on the thread that
    /// polls the caller's future (a host that blocks on the run, as Python's `Engine.run`
    /// does, keeps its callbacks on its own thread). Only for a caller that drives its future
    /// to the end: dropping it stops the execution between two steps, where it stays,
    /// resumable, under its lease until that expires (a server that must not lose a run to a
    /// client hanging up drives it in a task of its own). Every execution of
    /// [`Engine::start`] gets its own task. Without a tracker, [`Engine::run`] always runs in
    /// place.
    pub in_place: bool,
}

impl RunOptions {
    /// Makes the execution durable (see [`RunOptions::durability`]).
    #[must_use]
    pub fn durability(mut self, durability: Durability) -> RunOptions {
        self.durability = Some(durability);
        self
    }

    /// Sets the execution id.
    #[must_use]
    pub fn execution_id(mut self, id: impl Into<String>) -> RunOptions {
        self.execution_id = Some(id.into());
        self
    }
    /// Sets the limits.
    #[must_use]
    pub fn limits(mut self, limits: Limits) -> RunOptions {
        self.limits = Some(limits);
        self
    }
    /// Sets the thread history.
    #[must_use]
    pub fn history(mut self, messages: Vec<Message>) -> RunOptions {
        self.history = messages;
        self
    }
    /// Sets the owner.
    #[must_use]
    pub fn owner(mut self, owner: impl Into<String>) -> RunOptions {
        self.owner = Some(owner.into());
        self
    }
    /// Sets a cancellation token.
    #[must_use]
    pub fn cancel(mut self, token: CancellationToken) -> RunOptions {
        self.cancel = Some(token);
        self
    }
    /// Keeps no events (see [`RunOptions::discard_events`]).
    #[must_use]
    pub fn discard_events(mut self, discard: bool) -> RunOptions {
        self.discard_events = discard;
        self
    }
    /// Runs a tracked execution in the caller's task (see [`RunOptions::in_place`]).
    #[must_use]
    pub fn in_place(mut self, in_place: bool) -> RunOptions {
        self.in_place = in_place;
        self
    }
}

/// The node factories of an engine, by canonical kind.
#[derive(Clone, Default)]
pub struct NodeFactories {
    factories: HashMap<String, Arc<dyn NodeFactory>>,
}

impl std::fmt::Debug for NodeFactories {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut kinds: Vec<&str> = self.kinds().collect();
        kinds.sort_unstable();
        f.debug_struct("NodeFactories")
            .field("kinds", &kinds)
            .finish()
    }
}

impl NodeFactories {
    /// No factories.
    pub fn new() -> NodeFactories {
        NodeFactories::default()
    }

    /// Registers (or replaces) the factory of a kind; an alias (`model`) registers its
    /// canonical kind (`llm`).
    pub fn register(&mut self, kind: &str, factory: impl NodeFactory + 'static) {
        self.factories.insert(
            crate::definition::canonical_kind_name(kind).to_owned(),
            Arc::new(factory),
        );
    }

    /// The factory of a kind.
    pub fn get(&self, kind: &str) -> Option<&Arc<dyn NodeFactory>> {
        self.factories.get(kind)
    }

    /// The registered kinds.
    pub fn kinds(&self) -> impl Iterator<Item = &str> {
        self.factories.keys().map(String::as_str)
    }

    /// Builds the node of a spec.
    ///
    /// # Errors
    ///
    /// [`Error::NotFound`] for a kind without a factory; the factory's error otherwise.
    pub fn build(&self, spec: &NodeSpec) -> Result<Arc<dyn Node>> {
        self.factory(spec)?.build(spec)
    }

    /// Builds the node of a spec that sits in `definition` (factories may look at the node's
    /// edges, e.g. the `loop` node's `continue`/`exit` handles).
    ///
    /// # Errors
    ///
    /// As [`NodeFactories::build`].
    pub fn build_in(
        &self,
        spec: &NodeSpec,
        definition: &WorkflowDefinition,
    ) -> Result<Arc<dyn Node>> {
        self.factory(spec)?.build_in(spec, definition)
    }

    fn factory(&self, spec: &NodeSpec) -> Result<&Arc<dyn NodeFactory>> {
        self.get(spec.kind.as_str()).ok_or_else(|| Error::NotFound {
            what: "node kind".into(),
            name: spec.kind.0.clone(),
        })
    }
}

/// Builds an [`Engine`].
#[derive(Debug, Default)]
#[must_use]
pub struct EngineBuilder {
    services: Services,
    factories: NodeFactories,
    kinds: NodeRegistry,
    limits: Limits,
    validator: ValidatorConfig,
    validate: bool,
    observer: Option<Arc<dyn EngineObserver>>,
}

impl std::fmt::Debug for dyn EngineObserver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("EngineObserver")
    }
}

impl EngineBuilder {
    /// A builder with the built-in node kinds and default limits.
    pub fn new() -> EngineBuilder {
        let mut factories = NodeFactories::new();
        crate::nodes::register_builtins(&mut |kind, factory| {
            factories.register(kind, crate::nodes::SharedFactory(factory));
        });
        #[cfg(feature = "http-tool")]
        factories.register("http", crate::tools::http::HttpNodeFactory);
        EngineBuilder {
            services: Services::default(),
            factories,
            kinds: NodeRegistry::builtin(),
            limits: Limits::default(),
            validator: ValidatorConfig::default(),
            validate: true,
            observer: None,
        }
    }

    /// Sets the chat model providers.
    pub fn models(mut self, models: ModelRegistry) -> EngineBuilder {
        self.services.models = models;
        self
    }
    /// Sets the tools.
    pub fn tools(mut self, tools: ToolRegistry) -> EngineBuilder {
        self.services.tools = tools;
        self
    }
    /// Sets the retrievers.
    pub fn retrievers(mut self, retrievers: RetrieverRegistry) -> EngineBuilder {
        self.services.retrievers = retrievers;
        self
    }
    /// Sets the resolver of `workflow_id`/`template_id` references.
    pub fn resolver(mut self, resolver: Arc<dyn DefinitionResolver>) -> EngineBuilder {
        self.services.resolver = Some(resolver);
        self
    }
    /// Sets the clock (tests fix it).
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> EngineBuilder {
        self.services.clock = clock;
        self
    }
    /// Sets all services at once.
    pub fn services(mut self, services: Services) -> EngineBuilder {
        self.services = services;
        self
    }
    /// Sets the default limits.
    pub fn limits(mut self, limits: Limits) -> EngineBuilder {
        self.limits = limits;
        self
    }
    /// Sets the validator's limits (nodes and edges per definition).
    pub fn validator(mut self, config: ValidatorConfig) -> EngineBuilder {
        self.validator = config;
        self
    }
    /// Registers a node kind's behaviour (or replaces a built-in one's). The validator accepts
    /// the kind's name; give its config schema and branches with
    /// [`EngineBuilder::register_node_kind`].
    pub fn register_node(
        mut self,
        kind: &str,
        factory: impl NodeFactory + 'static,
    ) -> EngineBuilder {
        self.factories.register(kind, factory);
        self
    }
    /// Registers a node kind with its metadata (config schema, branches, whether it can leave a
    /// cycle), which the validator checks definitions against, and its behaviour.
    pub fn register_node_kind(
        mut self,
        info: NodeKindInfo,
        factory: impl NodeFactory + 'static,
    ) -> EngineBuilder {
        self.factories.register(&info.kind, factory);
        self.kinds.register(info);
        self
    }
    /// Whether definitions are validated before they run (default true). A host that
    /// validates definitions when they are saved may turn the second check off.
    pub fn validate_before_run(mut self, validate: bool) -> EngineBuilder {
        self.validate = validate;
        self
    }
    /// Sets the observer told when executions and node runs end (for metrics).
    pub fn observer(mut self, observer: Arc<dyn EngineObserver>) -> EngineBuilder {
        self.observer = Some(observer);
        self
    }
    /// The factories registered so far.
    pub fn factories_mut(&mut self) -> &mut NodeFactories {
        &mut self.factories
    }
    /// Builds the engine.
    pub fn build(self) -> Engine {
        Engine {
            inner: Arc::new(EngineInner {
                services: Arc::new(self.services),
                factories: self.factories,
                validator: WorkflowValidator::with_registry(self.validator, self.kinds.clone()),
                kinds: self.kinds,
                limits: self.limits,
                validate: self.validate,
                observer: self.observer,
            }),
        }
    }
}

/// The `execution` span an execution (or a sub-graph of one) runs in.
fn execution_span(execution_id: &str) -> tracing::Span {
    tracing::info_span!(target: "chatter_core::engine", "execution", execution_id = %execution_id)
}

pub(crate) struct EngineInner {
    pub(crate) services: Arc<Services>,
    pub(crate) factories: NodeFactories,
    pub(crate) kinds: NodeRegistry,
    pub(crate) limits: Limits,
    pub(crate) validator: WorkflowValidator,
    pub(crate) validate: bool,
    pub(crate) observer: Option<Arc<dyn EngineObserver>>,
}

/// Runs workflow definitions. Cheap to clone (shared).
#[derive(Clone)]
pub struct Engine {
    inner: Arc<EngineInner>,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("services", &self.inner.services)
            .field("factories", &self.inner.factories)
            .field("limits", &self.inner.limits)
            .finish_non_exhaustive()
    }
}

impl Default for Engine {
    fn default() -> Self {
        Engine::builder().build()
    }
}

impl Engine {
    /// A builder.
    pub fn builder() -> EngineBuilder {
        EngineBuilder::new()
    }

    /// The services nodes get.
    pub fn services(&self) -> &Arc<Services> {
        &self.inner.services
    }

    /// The default limits.
    pub fn limits(&self) -> &Limits {
        &self.inner.limits
    }

    /// The metadata of the node kinds this engine validates against (the built-in kinds and
    /// those registered with [`EngineBuilder::register_node_kind`]).
    pub fn node_registry(&self) -> &NodeRegistry {
        &self.inner.kinds
    }

    /// The node kinds this engine can run.
    pub fn node_kinds(&self) -> Vec<&str> {
        let mut kinds: Vec<&str> = self.inner.factories.kinds().collect();
        kinds.sort_unstable();
        kinds
    }

    /// Validates a definition and compiles it for running (nodes built, conditions compiled,
    /// graph analysed). Run the result as often as needed.
    ///
    /// # Errors
    ///
    /// [`Error::Invalid`] with the validator's report; [`Error::NotFound`] for a node kind
    /// without a factory; a factory's [`Error::Config`]; [`Error::Expression`] for a condition
    /// that does not compile.
    pub fn prepare(&self, def: &WorkflowDefinition) -> Result<PreparedWorkflow> {
        if self.inner.validate {
            let mut report = self.inner.validator.validate(def);
            // A kind the validator does not know but this engine has a factory for is a node
            // author's kind, not an unknown one.
            let has_factory = |node_id: Option<&str>| {
                node_id
                    .and_then(|id| def.node(id))
                    .is_some_and(|n| self.inner.factories.get(n.kind.as_str()).is_some())
            };
            report.issues.retain(|issue| {
                issue.code != UNKNOWN_KIND_CODE || !has_factory(issue.node_id.as_deref())
            });
            if !report.is_valid() {
                return Err(Error::Invalid(Box::new(report)));
            }
        }
        let factories = &self.inner.factories;
        let plan = plan::compile(def, &|spec| factories.build_in(spec, def))?;
        Ok(PreparedWorkflow {
            plan: Arc::new(plan),
            definition: Arc::new(def.clone()),
            digest: Arc::default(),
            graph: Arc::default(),
        })
    }

    /// Runs a definition to its end.
    ///
    /// # Errors
    ///
    /// As [`Engine::prepare`]: an unusable definition is refused before anything runs. A
    /// failure while running is not an error: it is the result's status.
    pub async fn run(
        &self,
        def: &WorkflowDefinition,
        input: Value,
        options: RunOptions,
    ) -> Result<ExecutionResult> {
        let prepared = self.prepare(def)?;
        Ok(self.run_prepared(&prepared, input, options).await)
    }

    /// Runs a prepared definition to its end.
    pub async fn run_prepared(
        &self,
        workflow: &PreparedWorkflow,
        input: Value,
        options: RunOptions,
    ) -> ExecutionResult {
        self.run_replaying(workflow, input, options, None).await
    }

    /// A top-level run of a prepared definition, replaying recorded steps when given.
    fn new_run(
        &self,
        workflow: &PreparedWorkflow,
        input: Value,
        options: RunOptions,
        replay: Option<Replay>,
    ) -> scheduler::Run {
        scheduler::Run::new(
            self.clone(),
            workflow.plan.clone(),
            input,
            options,
            None,
            None,
            replay,
        )
    }

    /// Runs a prepared definition to its end in the caller's task, first replaying recorded
    /// steps (a resume or a fork) when given.
    pub(crate) async fn run_replaying(
        &self,
        workflow: &PreparedWorkflow,
        input: Value,
        options: RunOptions,
        replay: Option<Replay>,
    ) -> ExecutionResult {
        let run = self.new_run(workflow, input, options, replay);
        let span = execution_span(run.execution_id());
        run.execute().instrument(span).await.0
    }

    /// [`Engine::run_replaying`], calling `observe` with each event after sequence number
    /// `after`, in order, as the run makes it: the run and its observer share the caller's
    /// task, so an event wakes no other task.
    pub(crate) async fn run_replaying_observed(
        &self,
        workflow: &PreparedWorkflow,
        input: Value,
        options: RunOptions,
        replay: Option<Replay>,
        after: u64,
        mut observe: impl FnMut(&Event),
    ) -> ExecutionResult {
        let run = self.new_run(workflow, input, options, replay);
        let log = run.log();
        let mut events = log.stream(after);
        // The log is closed when the run ends (or is dropped), which ends the stream.
        let close = events::CloseOnDrop(log);
        let span = execution_span(run.execution_id());
        let execute = async move {
            let _close = close;
            run.execute().instrument(span).await.0
        };
        let forward = async move {
            while let Some(event) = futures::StreamExt::next(&mut events).await {
                observe(&event);
            }
        };
        futures::join!(execute, forward).0
    }

    /// Starts a definition on the current tokio runtime and returns at once.
    ///
    /// # Errors
    ///
    /// As [`Engine::prepare`], and [`Error::Config`] when called outside a tokio runtime.
    pub fn start(
        &self,
        def: &WorkflowDefinition,
        input: Value,
        options: RunOptions,
    ) -> Result<ExecutionHandle> {
        let prepared = self.prepare(def)?;
        self.start_prepared(&prepared, input, options)
    }

    /// Starts a prepared definition on the current tokio runtime and returns at once.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] when called outside a tokio runtime.
    pub fn start_prepared(
        &self,
        workflow: &PreparedWorkflow,
        input: Value,
        options: RunOptions,
    ) -> Result<ExecutionHandle> {
        self.start_replaying(workflow, input, options, None)
    }

    /// Starts a prepared definition that first replays recorded steps (a resume or a fork).
    pub(crate) fn start_replaying(
        &self,
        workflow: &PreparedWorkflow,
        input: Value,
        options: RunOptions,
        replay: Option<Replay>,
    ) -> Result<ExecutionHandle> {
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| Error::Config {
            message: "Engine::start needs a tokio runtime (with time enabled)".into(),
        })?;
        let run = self.new_run(workflow, input, options, replay);
        let execution_id = run.execution_id().to_owned();
        let log = run.log();
        let cancel = run.cancel_token();
        let guard = events::CloseOnDrop(log.clone());
        let span = execution_span(&execution_id);
        let task = runtime.spawn(
            async move {
                let _close = guard;
                run.execute().await.0
            }
            .instrument(span),
        );
        Ok(ExecutionHandle {
            execution_id,
            log,
            cancel,
            task,
        })
    }

    pub(crate) fn inner(&self) -> &EngineInner {
        &self.inner
    }
}

/// A running execution: its events, cancellation, and its result.
pub struct ExecutionHandle {
    execution_id: String,
    log: Arc<events::EventLog>,
    cancel: CancellationToken,
    task: tokio::task::JoinHandle<ExecutionResult>,
}

impl std::fmt::Debug for ExecutionHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExecutionHandle")
            .field("execution_id", &self.execution_id)
            .finish_non_exhaustive()
    }
}

impl ExecutionHandle {
    /// The execution's id.
    pub fn execution_id(&self) -> &str {
        &self.execution_id
    }

    /// Every event of the execution from the first, then each new one as it happens; the stream
    /// ends after the last event.
    pub fn subscribe(&self) -> EventStream {
        self.log.stream(0)
    }

    /// The events after sequence number `after_seq` (resuming a stream, `Last-Event-ID`).
    pub fn subscribe_from(&self, after_seq: u64) -> EventStream {
        self.log.stream(after_seq)
    }

    /// The events so far.
    pub fn events(&self) -> Vec<Event> {
        self.log.snapshot()
    }

    /// Asks the execution to stop: running nodes see their `ctx.cancel`, the execution ends as
    /// `cancelled`.
    pub fn cancel(&self) {
        self.cancel.cancel();
    }

    /// A token that cancels the execution (for hosts that cancel from elsewhere).
    pub fn cancel_token(&self) -> CancellationToken {
        self.cancel.clone()
    }

    /// Whether the execution has ended.
    pub fn is_finished(&self) -> bool {
        self.task.is_finished()
    }

    /// Waits for the result.
    ///
    /// # Errors
    ///
    /// [`Error::Internal`] if the execution's task died (a bug; its events are kept in the log).
    pub async fn result(self) -> Result<ExecutionResult> {
        self.task.await.map_err(|e| Error::Internal {
            message: format!("execution task ended abnormally: {e}"),
        })
    }
}

#[async_trait]
impl SubgraphRunner for Engine {
    async fn run_subgraph(
        &self,
        parent: &NodeContext,
        definition: Arc<WorkflowDefinition>,
        input: Value,
    ) -> Result<SubgraphOutcome> {
        let depth = parent.execution_id.matches('/').count();
        if depth >= MAX_SUBGRAPH_DEPTH {
            return Err(Error::LimitExceeded {
                limit: "subgraph_depth".into(),
                message: format!(
                    "node `{}` would nest sub-graphs deeper than {MAX_SUBGRAPH_DEPTH}",
                    parent.node_id()
                ),
            });
        }
        let prepared = self.prepare(&definition)?;
        let limits = Limits {
            max_tokens: parent.tokens_left,
            max_cost: parent.cost_left,
            ..self.inner.limits.clone()
        };
        let options = RunOptions {
            execution_id: Some(format!(
                "{}/{}#{}",
                parent.execution_id,
                parent.node_id(),
                parent.iteration
            )),
            limits: Some(limits),
            // Only the sub-graph's state, response and usage are read; the tokens and tool
            // calls its nodes emit reach the parent through the sink, not through this log.
            discard_events: true,
            ..RunOptions::default()
        };
        let run = scheduler::Run::new(
            self.clone(),
            prepared.plan.clone(),
            input,
            options,
            Some(parent.events.clone()),
            Some(&parent.cancel),
            None,
        );
        let span = execution_span(run.execution_id());
        let (result, state) = run.keep_state().execute().instrument(span).await;
        match (result.status, state) {
            (ExecutionStatus::Completed, Some(state)) => Ok(SubgraphOutcome {
                state,
                response: result.response,
                usage: result.usage,
            }),
            (ExecutionStatus::Cancelled, _) => Err(Error::Cancelled {
                reason: result
                    .error
                    .map_or_else(|| "sub-graph cancelled".into(), |e| e.message),
            }),
            _ => {
                let failure = result.error.unwrap_or(ExecutionFailure {
                    class: "internal".into(),
                    message: format!("sub-graph ended {}", result.status.as_str()),
                    node_id: None,
                });
                Err(parent.error(
                    class_from_name(&failure.class),
                    format!(
                        "sub-graph failed{}: {}",
                        failure
                            .node_id
                            .map(|n| format!(" at node `{n}`"))
                            .unwrap_or_default(),
                        failure.message
                    ),
                ))
            }
        }
    }
}

/// The validator's code for an unknown node kind.
const UNKNOWN_KIND_CODE: &str = "CHT-V006";

/// How deep `map`/`subworkflow` runs may nest (a workflow that runs itself stops here).
pub const MAX_SUBGRAPH_DEPTH: usize = 16;

fn class_from_name(name: &str) -> crate::ErrorClass {
    use crate::ErrorClass as C;
    match name {
        "timeout" => C::Timeout,
        "rate_limit" => C::RateLimit,
        "server" => C::Server,
        "connection" => C::Connection,
        "tool" => C::Tool,
        "model" => C::Model,
        "bad_request" => C::BadRequest,
        "auth" => C::Auth,
        _ => C::Internal,
    }
}
