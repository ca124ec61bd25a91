//! What an execution returns: [`ExecutionResult`] and its node runs.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::event::Event;
use crate::model::{Message, Usage};
use crate::state::{ErrorRecord, StateDelta};

/// The status of an execution (DESIGN §5).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ExecutionStatus {
    /// Not started yet.
    Pending,
    /// Running.
    Running,
    /// Paused for input (an interrupt).
    Waiting,
    /// Ran to its end.
    Completed,
    /// Ended by an error or a limit.
    Failed,
    /// Cancelled.
    Cancelled,
}

impl ExecutionStatus {
    /// The snake_case name (`completed`).
    pub fn as_str(self) -> &'static str {
        match self {
            ExecutionStatus::Pending => "pending",
            ExecutionStatus::Running => "running",
            ExecutionStatus::Waiting => "waiting",
            ExecutionStatus::Completed => "completed",
            ExecutionStatus::Failed => "failed",
            ExecutionStatus::Cancelled => "cancelled",
        }
    }
}

/// The status of one node run (DESIGN §5).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum NodeRunStatus {
    /// Running.
    Running,
    /// Completed.
    Completed,
    /// Failed (after its retries).
    Failed,
    /// Not run: it lies on a dead path.
    Skipped,
    /// Stopped by cancellation, a timeout of the execution, or the end of the execution.
    Cancelled,
    /// Paused for input.
    Waiting,
}

impl NodeRunStatus {
    /// The snake_case name (`completed`).
    pub fn as_str(self) -> &'static str {
        match self {
            NodeRunStatus::Running => "running",
            NodeRunStatus::Completed => "completed",
            NodeRunStatus::Failed => "failed",
            NodeRunStatus::Skipped => "skipped",
            NodeRunStatus::Cancelled => "cancelled",
            NodeRunStatus::Waiting => "waiting",
        }
    }
}

/// One run of one node. The node runs of an [`ExecutionResult`] are in the order their deltas
/// were applied to the state (completion order), which makes a replay exact.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeRun {
    /// The node.
    pub node_id: String,
    /// Its canonical kind.
    pub kind: String,
    /// Its iteration (0 on the first pass).
    pub iteration: u32,
    /// The last attempt made (1 on the first try; 0 for a skipped node).
    pub attempt: u32,
    /// How it ended.
    pub status: NodeRunStatus,
    /// When it started, in milliseconds since the Unix epoch.
    pub started_at_ms: i64,
    /// How long it took, retries included.
    pub duration_ms: u64,
    /// The error, when it failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// What it produced (the node's summary output).
    #[serde(default, skip_serializing_if = "is_null")]
    pub output: super::node::OutputValue,
    /// The state change it made.
    #[serde(default, skip_serializing_if = "StateDelta::is_empty")]
    pub delta: StateDelta,
    /// The class of its error (`timeout`, `tool`, ...), when it failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_class: Option<String>,
    /// How it routed (what a resume replays).
    #[serde(skip)]
    pub(crate) route: super::node::Route,
}

/// Why an execution did not complete.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExecutionFailure {
    /// The class: a node's error class (`timeout`, `tool`, `internal` for a panic, ...), the
    /// limit (`budget_exceeded`, `max_steps`, `max_iterations`, `timeout` for the execution,
    /// `subgraph_depth`), `stopped` (a node ended it with an error), or `cancelled`.
    pub class: String,
    /// What happened.
    pub message: String,
    /// The node that failed, when one did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_id: Option<String>,
}

/// The outcome of an execution.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExecutionResult {
    /// The execution's id (a ULID unless given).
    pub execution_id: String,
    /// How it ended.
    pub status: ExecutionStatus,
    /// The final response: what an `end` node set, else the last assistant message.
    pub response: Option<String>,
    /// The final messages.
    pub messages: Vec<Message>,
    /// The final workflow variables.
    pub variables: Map<String, Value>,
    /// Tokens and cost, summed over every model call.
    pub usage: Usage,
    /// Every node run, in the order their deltas were applied.
    pub node_runs: Vec<NodeRun>,
    /// The errors recorded in the state.
    pub errors: Vec<ErrorRecord>,
    /// Every event, in sequence order.
    pub events: Vec<Event>,
    /// Why it failed or was cancelled.
    pub error: Option<ExecutionFailure>,
    /// Who ran it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    /// When it started, in milliseconds since the Unix epoch.
    pub started_at_ms: i64,
    /// How long it took.
    pub duration_ms: u64,
    /// For a durable execution: why it was not (fully) recorded in its store, if it was not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage_error: Option<String>,
}

impl ExecutionResult {
    /// The runs of one node, in order.
    pub fn runs_of<'a>(&'a self, node_id: &'a str) -> impl Iterator<Item = &'a NodeRun> + 'a {
        self.node_runs.iter().filter(move |r| r.node_id == node_id)
    }

    /// Ids of the nodes that completed, in completion order (loops repeat ids).
    pub fn completed_nodes(&self) -> Vec<&str> {
        self.node_runs
            .iter()
            .filter(|r| r.status == NodeRunStatus::Completed)
            .map(|r| r.node_id.as_str())
            .collect()
    }
}

/// Whether a node run's output is `null` (then left out when serialized).
fn is_null(output: &super::node::OutputValue) -> bool {
    output.is_null()
}
