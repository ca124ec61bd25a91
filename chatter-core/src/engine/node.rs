//! The [`Node`] trait node authors implement, and what a node run sees ([`NodeContext`]) and
//! returns ([`NodeOutput`]).

use std::sync::Arc;

use async_trait::async_trait;
use serde_json::Value;

use crate::cancel::CancelToken;
use crate::definition::{NodeSpec, WorkflowDefinition};
use crate::error::{Error, Result};
use crate::event::{EventKind, EventSink};
use crate::model::{ModelRegistry, Usage};
use crate::retriever::RetrieverRegistry;
use crate::state::{State, StateDelta};
use crate::tool::ToolRegistry;

/// One kind of node's behaviour. Built once per node of a definition by a [`NodeFactory`]
/// (config parsed and expressions compiled then), run once per node run.
#[async_trait]
pub trait Node: Send + Sync {
    /// Runs the node.
    ///
    /// # Errors
    ///
    /// Any error; the engine applies the node's retry and `on_error` policy to it.
    async fn run(&self, ctx: NodeContext) -> Result<NodeOutput>;

    /// Whether a run of this node acts on the outside world (calls a model, a tool, an HTTP
    /// endpoint). With a durable execution in `sync` mode the engine records the run's intent
    /// and idempotency key before it starts, so a resume after a crash knows it may have
    /// happened (and runs it again with the same key). Default: `false`.
    fn side_effects(&self) -> bool {
        false
    }

    /// Whether a run of this node only computes from the state, at once: no outside world, no
    /// waiting, nothing a user could observe twice (`start`, `end`, `condition`, `variable`,
    /// `loop`). With a durable execution in `sync` mode such a node starts without the steps
    /// before it being written first, and its own step is written with the next write (the
    /// next node's intent or steps, or the execution's end): a crash in between loses only
    /// work that a resume does again at no cost. Default: `false` (a node that is not pure
    /// starts only once every step before it is stored).
    fn pure(&self) -> bool {
        false
    }
}

/// Builds the [`Node`] for one node of a definition.
pub trait NodeFactory: Send + Sync {
    /// Builds it, checking and compiling its config.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] (or an expression/template error) when the config is unusable.
    fn build(&self, spec: &NodeSpec) -> Result<Arc<dyn Node>>;

    /// Builds it knowing the definition it belongs to, for kinds whose behaviour depends on the
    /// node's edges (a `loop` whose out-edges are `continue`/`exit` branches, a `conditional`
    /// without a condition of its own). The engine should call this one; the default ignores
    /// the definition and calls [`NodeFactory::build`].
    ///
    /// # Errors
    ///
    /// As [`NodeFactory::build`].
    fn build_in(&self, spec: &NodeSpec, definition: &WorkflowDefinition) -> Result<Arc<dyn Node>> {
        let _ = definition;
        self.build(spec)
    }
}

impl<F> NodeFactory for F
where
    F: Fn(&NodeSpec) -> Result<Arc<dyn Node>> + Send + Sync,
{
    fn build(&self, spec: &NodeSpec) -> Result<Arc<dyn Node>> {
        self(spec)
    }
}

/// Where a node's run goes next.
#[derive(Debug, Clone, PartialEq, Default)]
#[non_exhaustive]
pub enum Route {
    /// Follow the out-edges by the rules of DESIGN §5 (conditions in order, else the default).
    #[default]
    Edges,
    /// Take only the out-edges of this branch (`sourceHandle`), e.g. `true`/`false`.
    Branch(String),
    /// End the execution here: completed, or failed with the error.
    Stop {
        /// `Some` to fail the execution with this message.
        error: Option<String>,
    },
    /// Run the failed node that routed to this error handler again (error_handler retries).
    RetryFailed,
    /// Pause here (an interrupt): the node run is `waiting`, its out-edges stay open, and the
    /// execution ends `waiting` once nothing else can run. Resuming the execution runs the
    /// node again with [`NodeContext::resume_input`] set.
    Wait,
}

/// What a node run produced.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct NodeOutput {
    /// State changes.
    pub delta: StateDelta,
    /// Where to go next.
    pub route: Route,
    /// A summary recorded on the node run (the reply text, the tool results, ...).
    pub output: OutputValue,
}

/// A node run's summary output ([`NodeOutput::output`], [`crate::NodeRun::output`]): a JSON
/// value, or what makes it, made when first read and kept.
///
/// It reads as the [`Value`] it is (`Deref`, `==` with a `Value`, `Serialize` as the value).
/// A node whose summary is costly to build and rarely read gives it lazily
/// ([`OutputValue::lazy`]): the built-in `llm` and `tool` nodes do, since building a JSON object
/// of fixed keys costs more than the rest of their step, and a run whose events and records
/// nobody keeps never reads it.
///
/// ```
/// use chatter_core::engine::OutputValue;
/// use serde_json::json;
///
/// let eager = OutputValue::from(json!({"n": 1}));
/// let lazy = OutputValue::lazy(|| json!({"n": 1}));
/// assert_eq!(eager, lazy);
/// assert_eq!(lazy["n"], 1);
/// assert_eq!(serde_json::to_string(&lazy).unwrap(), r#"{"n":1}"#);
/// ```
#[derive(Clone, Default)]
pub struct OutputValue {
    value: std::sync::OnceLock<Value>,
    make: Option<Arc<dyn Fn() -> Value + Send + Sync>>,
}

impl OutputValue {
    /// The value `make` returns, made when first read.
    pub fn lazy(make: impl Fn() -> Value + Send + Sync + 'static) -> OutputValue {
        OutputValue {
            value: std::sync::OnceLock::new(),
            make: Some(Arc::new(make)),
        }
    }

    /// The value (made now if it was not yet).
    pub fn value(&self) -> &Value {
        self.value
            .get_or_init(|| self.make.as_ref().map_or(Value::Null, |make| make()))
    }

    /// The value, owned.
    pub fn into_value(self) -> Value {
        match self.value.into_inner() {
            Some(value) => value,
            None => self.make.map_or(Value::Null, |make| make()),
        }
    }
}

impl std::ops::Deref for OutputValue {
    type Target = Value;

    fn deref(&self) -> &Value {
        self.value()
    }
}

impl From<Value> for OutputValue {
    fn from(value: Value) -> OutputValue {
        OutputValue {
            value: std::sync::OnceLock::from(value),
            make: None,
        }
    }
}

impl std::fmt::Debug for OutputValue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.value().fmt(f)
    }
}

impl PartialEq for OutputValue {
    fn eq(&self, other: &OutputValue) -> bool {
        self.value() == other.value()
    }
}

impl PartialEq<Value> for OutputValue {
    fn eq(&self, other: &Value) -> bool {
        self.value() == other
    }
}

impl serde::Serialize for OutputValue {
    fn serialize<S: serde::Serializer>(
        &self,
        serializer: S,
    ) -> std::result::Result<S::Ok, S::Error> {
        self.value().serialize(serializer)
    }
}

impl<'de> serde::Deserialize<'de> for OutputValue {
    fn deserialize<D: serde::Deserializer<'de>>(
        deserializer: D,
    ) -> std::result::Result<OutputValue, D::Error> {
        Value::deserialize(deserializer).map(OutputValue::from)
    }
}

impl NodeOutput {
    /// Output with a delta, following the edges.
    pub fn delta(delta: StateDelta) -> NodeOutput {
        NodeOutput {
            delta,
            ..NodeOutput::default()
        }
    }
}

/// The failure that routed execution to an `error_handler` node.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeFailure {
    /// The node that failed.
    pub node_id: String,
    /// Its error message.
    pub message: String,
    /// Its error class (`timeout`, `tool`, ...).
    pub class: String,
    /// How many times the handler already retried it.
    pub retries: u32,
}

/// What the `map` and `subworkflow` nodes get back from a sub-graph run.
#[derive(Debug, Clone, PartialEq)]
pub struct SubgraphOutcome {
    /// The sub-graph's final state.
    pub state: State,
    /// Its final response.
    pub response: Option<String>,
    /// Tokens and cost it spent.
    pub usage: Usage,
}

/// Runs sub-graphs for the `map` and `subworkflow` nodes (implemented by the engine).
#[async_trait]
pub trait SubgraphRunner: Send + Sync {
    /// Runs `definition` with `input` as a child of the node in `parent`, sharing its services,
    /// cancellation and budgets.
    ///
    /// # Errors
    ///
    /// The child's validation or execution error.
    async fn run_subgraph(
        &self,
        parent: &NodeContext,
        definition: Arc<WorkflowDefinition>,
        input: Value,
    ) -> Result<SubgraphOutcome>;
}

/// Resolves `workflow_id` / `template_id` references of `subworkflow` and `map` nodes.
#[async_trait]
pub trait DefinitionResolver: Send + Sync {
    /// The definition with this id.
    ///
    /// # Errors
    ///
    /// [`Error::NotFound`] for an unknown id.
    async fn resolve(&self, id: &str) -> Result<Arc<WorkflowDefinition>>;
}

/// A source of the current time, so tests can fix the clock.
pub trait Clock: Send + Sync {
    /// Milliseconds since the Unix epoch.
    fn now_ms(&self) -> i64;
}

/// The system clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> i64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
    }
}

/// What nodes can call: providers, tools, retrievers, definitions, the clock.
#[derive(Clone)]
#[non_exhaustive]
pub struct Services {
    /// Chat model providers.
    pub models: ModelRegistry,
    /// Tools.
    pub tools: ToolRegistry,
    /// Retrievers.
    pub retrievers: RetrieverRegistry,
    /// Definitions for `subworkflow`/`map` by id.
    pub resolver: Option<Arc<dyn DefinitionResolver>>,
    /// The clock.
    pub clock: Arc<dyn Clock>,
}

impl Default for Services {
    fn default() -> Self {
        Services {
            models: ModelRegistry::default(),
            tools: ToolRegistry::default(),
            retrievers: RetrieverRegistry::default(),
            resolver: None,
            clock: Arc::new(SystemClock),
        }
    }
}

impl std::fmt::Debug for Services {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Services")
            .field("models", &self.models)
            .field("tools", &self.tools)
            .field("retrievers", &self.retrievers)
            .finish_non_exhaustive()
    }
}

/// What one node run sees. Cheap to clone (shared handles).
#[derive(Clone)]
#[non_exhaustive]
pub struct NodeContext {
    /// The execution.
    pub execution_id: Arc<str>,
    /// The node's definition.
    pub spec: Arc<NodeSpec>,
    /// Iteration (0 on the first pass through the node).
    pub iteration: u32,
    /// Attempt (1 on the first try).
    pub attempt: u32,
    /// The state snapshot the node reads.
    pub state: Arc<State>,
    /// Providers, tools, retrievers, clock.
    pub services: Arc<Services>,
    /// Where tokens and tool-call events go.
    pub events: Arc<dyn EventSink>,
    /// Cancelled when the execution is cancelled or the node times out.
    pub cancel: CancelToken,
    /// For an `error_handler`: the failure that routed here.
    pub failure: Option<Arc<NodeFailure>>,
    /// Runs sub-graphs (`map`, `subworkflow`).
    pub subgraphs: Option<Arc<dyn SubgraphRunner>>,
    /// Token budget left for this execution (`None`: unlimited).
    pub tokens_left: Option<u64>,
    /// Cost budget left for this execution, in US dollars (`None`: unlimited).
    pub cost_left: Option<f64>,
    /// For a node that paused the execution ([`Route::Wait`]) and runs again on resume: what
    /// the resume brought (an approval's decision and input). `None` otherwise.
    pub resume_input: Option<Arc<Value>>,
}

impl NodeContext {
    /// A context for running one node outside an engine (tests, tools, custom hosts).
    pub fn new(execution_id: &str, spec: NodeSpec, state: State, services: Arc<Services>) -> Self {
        NodeContext {
            execution_id: Arc::from(execution_id),
            spec: Arc::new(spec),
            iteration: 0,
            attempt: 1,
            state: Arc::new(state),
            services,
            events: Arc::new(DiscardEvents),
            cancel: CancelToken::new(),
            failure: None,
            subgraphs: None,
            tokens_left: None,
            cost_left: None,
            resume_input: None,
        }
    }

    /// The node's id.
    pub fn node_id(&self) -> &str {
        self.spec.id.as_str()
    }

    /// The idempotency key of this node run: `execution:node:iteration:attempt`.
    pub fn idempotency_key(&self) -> String {
        // Joined, not `format!`ted: that costs about five times as much, several times a step.
        let (mut iteration, mut attempt) = (itoa::Buffer::new(), itoa::Buffer::new());
        [
            &*self.execution_id,
            self.spec.id.as_str(),
            iteration.format(self.iteration),
            attempt.format(self.attempt),
        ]
        .join(":")
    }

    /// Emits an event (tokens, tool calls).
    pub fn emit(&self, kind: EventKind) {
        self.events.emit(kind);
    }

    /// Whether an event emitted now would be kept ([`EventSink::keeps_events`]): a node need not
    /// build events a run discards.
    pub fn keeps_events(&self) -> bool {
        self.events.keeps_events()
    }

    /// The object an expression or template reading `keys` (its `state_reads()`) is evaluated
    /// against: only those state variables are built.
    pub fn expr_context_for(&self, keys: &[&str]) -> Value {
        self.state.to_context_keys(
            keys,
            Some((
                self.spec.id.as_str(),
                self.spec.kind.as_str(),
                self.iteration,
            )),
        )
    }

    /// The object expressions and templates are evaluated against (every state variable).
    pub fn expr_context(&self) -> Value {
        self.state.to_context(Some((
            self.spec.id.as_str(),
            self.spec.kind.as_str(),
            self.iteration,
        )))
    }

    /// A node error for this node.
    pub fn error(&self, class: crate::ErrorClass, message: impl Into<String>) -> Error {
        Error::Node {
            node_id: self.spec.id.0.clone(),
            class,
            message: message.into(),
        }
    }
}

impl std::fmt::Debug for NodeContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeContext")
            .field("execution_id", &self.execution_id)
            .field("node", &self.spec.id)
            .field("iteration", &self.iteration)
            .field("attempt", &self.attempt)
            .finish_non_exhaustive()
    }
}

/// An [`EventSink`] that drops everything.
#[derive(Debug, Clone, Copy, Default)]
pub struct DiscardEvents;

impl EventSink for DiscardEvents {
    fn emit(&self, _kind: EventKind) {}

    fn keeps_events(&self) -> bool {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[test]
    fn a_lazy_output_is_made_once_when_first_read_and_reads_as_its_value() {
        let made = Arc::new(AtomicUsize::new(0));
        let counter = made.clone();
        let output = OutputValue::lazy(move || {
            counter.fetch_add(1, Ordering::SeqCst);
            json!({"content": "hi", "n": [1, 2]})
        });
        assert_eq!(made.load(Ordering::SeqCst), 0, "not made until read");
        assert_eq!(output["content"], "hi");
        assert_eq!(output, json!({"content": "hi", "n": [1, 2]}));
        assert_eq!(
            serde_json::to_string(&output).unwrap(),
            r#"{"content":"hi","n":[1,2]}"#
        );
        let copy = output.clone();
        assert_eq!(copy.into_value(), json!({"content": "hi", "n": [1, 2]}));
        assert_eq!(made.load(Ordering::SeqCst), 1, "made once, kept");

        // Never read: made only when taken.
        let unread = OutputValue::lazy(|| json!(7));
        assert_eq!(unread.into_value(), json!(7));
        assert!(OutputValue::default().is_null());
        assert!(OutputValue::lazy(|| Value::Null).is_null());
        let back: OutputValue = serde_json::from_str(r#"{"a":1}"#).unwrap();
        assert_eq!(back, OutputValue::from(json!({"a": 1})));
        assert_eq!(format!("{back:?}"), format!("{:?}", json!({"a": 1})));
    }
}
