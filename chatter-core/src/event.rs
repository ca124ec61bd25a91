//! Events: the sequence-numbered record of what happened in an execution (DESIGN §10).
//!
//! The event log is the single source for streaming, tracking and replay.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::model::Usage;

/// One event of an execution.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// The execution.
    pub execution_id: String,
    /// Position in the execution's event log, contiguous from 1.
    pub seq: u64,
    /// When, in milliseconds since the Unix epoch.
    pub ts_ms: i64,
    /// What happened.
    #[serde(flatten)]
    pub kind: EventKind,
}

/// What happened. Serialised with a `type` tag in snake_case (`node_started`, `token`, ...).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
#[non_exhaustive]
pub enum EventKind {
    /// The execution began.
    ExecutionStarted {
        /// The input.
        input: Value,
    },
    /// A node run began.
    NodeStarted {
        /// The node.
        node_id: String,
        /// Its canonical kind.
        kind: String,
        /// Its iteration (0 on the first pass).
        iteration: u32,
        /// Its attempt (1 on the first try).
        attempt: u32,
    },
    /// A chunk of streamed model text.
    Token {
        /// The node streaming.
        node_id: String,
        /// The text.
        text: String,
    },
    /// A tool call began.
    ToolCallStarted {
        /// The node running it.
        node_id: String,
        /// The model's call id.
        call_id: String,
        /// Tool name.
        tool: String,
        /// Arguments.
        arguments: Value,
    },
    /// A tool call ended.
    ToolCallFinished {
        /// The node running it.
        node_id: String,
        /// The model's call id.
        call_id: String,
        /// Tool name.
        tool: String,
        /// Whether it succeeded.
        ok: bool,
        /// The result, or the error text.
        result: Value,
        /// How long it took.
        duration_ms: u64,
    },
    /// A node run completed.
    NodeCompleted {
        /// The node.
        node_id: String,
        /// Its iteration.
        iteration: u32,
        /// How long it took.
        duration_ms: u64,
        /// What it produced (for the node run record).
        output: Value,
    },
    /// A node run failed (after its retries).
    NodeFailed {
        /// The node.
        node_id: String,
        /// Its iteration.
        iteration: u32,
        /// The error.
        error: String,
        /// The error class.
        class: String,
    },
    /// A node run failed and will be tried again.
    NodeRetrying {
        /// The node.
        node_id: String,
        /// The attempt that failed.
        attempt: u32,
        /// Wait before the next attempt.
        delay_ms: u64,
        /// The error.
        error: String,
    },
    /// A model call was routed: which model serves it, and why (multi-model orchestration).
    ModelRouted {
        /// The node calling.
        node_id: String,
        /// The model tried first (catalogue name).
        model: String,
        /// Its provider.
        provider: String,
        /// The rule that chose it, if a rule did.
        rule: Option<String>,
        /// Whether the node or request named the model.
        explicit: bool,
        /// Why, in words.
        reason: String,
        /// Models tried next, in order, if it fails.
        fallbacks: Vec<String>,
        /// Estimated cost of the call on that model (dollars), when it has a price.
        estimated_cost: Option<f64>,
    },
    /// A model attempt failed and the same model will be tried again after a delay.
    ModelRetrying {
        /// The node calling.
        node_id: String,
        /// The model.
        model: String,
        /// The attempt that failed (1 for the first).
        attempt: u32,
        /// The error class (`rate_limit`, `server`, `timeout`, `connection`).
        class: String,
        /// The error.
        error: String,
        /// Wait before the next attempt.
        delay_ms: u64,
    },
    /// A model call moved on to the next model of its fallback chain.
    ModelFallback {
        /// The node calling.
        node_id: String,
        /// The model given up on.
        from: String,
        /// The model tried next.
        to: String,
        /// Why (the last error of `from`).
        reason: String,
    },
    /// A node was skipped (it lies on a dead path).
    NodeSkipped {
        /// The node.
        node_id: String,
    },
    /// The execution paused for input (an `approval` node).
    Interrupted {
        /// The node waiting.
        node_id: String,
        /// What it asks.
        question: String,
        /// Decisions it accepts.
        allowed_decisions: Vec<String>,
    },
    /// The execution completed.
    ExecutionCompleted {
        /// The final response.
        response: Option<String>,
        /// Tokens and cost.
        usage: Usage,
    },
    /// The execution failed.
    ExecutionFailed {
        /// The error.
        error: String,
        /// The error class or limit (`budget_exceeded`, `timeout`, ...).
        class: String,
    },
    /// The execution was cancelled.
    ExecutionCancelled {
        /// Why.
        reason: String,
    },
}

impl EventKind {
    /// The `type` tag (`node_started`).
    pub fn type_name(&self) -> &'static str {
        match self {
            EventKind::ExecutionStarted { .. } => "execution_started",
            EventKind::NodeStarted { .. } => "node_started",
            EventKind::Token { .. } => "token",
            EventKind::ToolCallStarted { .. } => "tool_call_started",
            EventKind::ToolCallFinished { .. } => "tool_call_finished",
            EventKind::NodeCompleted { .. } => "node_completed",
            EventKind::NodeFailed { .. } => "node_failed",
            EventKind::NodeRetrying { .. } => "node_retrying",
            EventKind::ModelRouted { .. } => "model_routed",
            EventKind::ModelRetrying { .. } => "model_retrying",
            EventKind::ModelFallback { .. } => "model_fallback",
            EventKind::NodeSkipped { .. } => "node_skipped",
            EventKind::Interrupted { .. } => "interrupted",
            EventKind::ExecutionCompleted { .. } => "execution_completed",
            EventKind::ExecutionFailed { .. } => "execution_failed",
            EventKind::ExecutionCancelled { .. } => "execution_cancelled",
        }
    }
}

/// Where nodes send the events they emit themselves (tokens, tool calls). The engine numbers and
/// timestamps them.
pub trait EventSink: Send + Sync {
    /// Records an event.
    fn emit(&self, kind: EventKind);

    /// Whether an event emitted now would be kept. `false` when it would be dropped (a run whose
    /// events are discarded), so a node can skip building it. Defaults to `true`.
    fn keeps_events(&self) -> bool {
        true
    }
}
