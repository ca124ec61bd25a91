//! Measurements for hosts: an [`EngineObserver`] learns when executions and node runs end, for
//! metrics (the HTTP server's `/metrics`). Tracing spans are separate: every execution runs in
//! an `execution` span and every node run in a `node` span (target `chatter_core::engine`),
//! which cost a relaxed atomic load each when no `tracing` subscriber is installed.

use super::result::{ExecutionStatus, NodeRunStatus};

/// Receives the engine's measurements. Called synchronously on the execution's task, so keep
/// it quick (atomic counters). Every method has an empty default.
///
/// Executions are reported for top-level runs only (a `subworkflow` or `map` sub-graph is part
/// of its parent's execution); node runs are reported for every node, sub-graphs' included, as
/// they end live (not the recorded runs a resumed execution replays).
pub trait EngineObserver: Send + Sync {
    /// An execution started (not reported again when a paused or interrupted one resumes).
    fn execution_started(&self) {}

    /// An execution ended `completed`, `failed` or `cancelled` after `duration_ms` (from its
    /// start, or from its resume). A pause (`waiting`) is not an end.
    fn execution_ended(&self, status: ExecutionStatus, duration_ms: u64) {
        let _ = (status, duration_ms);
    }

    /// A node run of canonical `kind` ended `completed`, `failed`, `cancelled` or `waiting`
    /// after `duration_ms` (retries included).
    fn node_ended(&self, kind: &str, status: NodeRunStatus, duration_ms: u64) {
        let _ = (kind, status, duration_ms);
    }
}
