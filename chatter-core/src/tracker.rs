//! The [`WorkflowTracker`]: records every execution in an [`ExecutionStore`] while it runs.
//!
//! The tracker starts the execution on an [`Engine`] with the id of the row it created (the id
//! callers get back is the row's id), moves the row `pending → running`, then follows the
//! execution's event stream and commits each node completion as one step
//! ([`ExecutionStore::commit_steps`]): the node run (timings, attempt, tokens, cost, error,
//! output), its state delta and the events since the previous step, in the engine's order, so
//! the stored sequence numbers are the engine's. Completions that arrive together are grouped
//! into one `commit_steps` call. When the execution ends, [`ExecutionStore::complete_execution`]
//! writes the outcome (status, response, usage, error message, final events); for a template
//! execution the store updates the template's analytics in that same transaction. An execution
//! that ends paused by an interrupt is left `waiting` (its last events appended) instead.
//!
//! A storage failure never loses the run: the execution goes on, the tracker stops writing, and
//! [`TrackedRun::store_error`] says what failed next to the [`ExecutionResult`].
//!
//! ```
//! # use std::sync::Arc;
//! # use chatter_core::engine::{Engine, RunOptions};
//! # use chatter_core::store::{ExecutionKind, ExecutionStore};
//! # use chatter_core::tracker::{ExecutionMeta, WorkflowTracker};
//! # use chatter_core::WorkflowDefinition;
//! # async fn demo(store: Arc<dyn ExecutionStore>, def: WorkflowDefinition) -> chatter_core::Result<()> {
//! let tracker = WorkflowTracker::new(store);
//! let run = tracker
//!     .run(
//!         &Engine::default(),
//!         &def,
//!         serde_json::json!({"message": "hi"}),
//!         RunOptions::default(),
//!         ExecutionMeta::new("alice", ExecutionKind::Adhoc),
//!     )
//!     .await?;
//! if let Some(error) = &run.store_error {
//!     eprintln!("the run was not fully recorded: {error}");
//! }
//! println!("{} {:?}", run.result.execution_id, run.result.status);
//! # Ok(()) }
//! ```

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use async_trait::async_trait;
use futures::StreamExt;
use serde_json::{Value, json};

use crate::WorkflowDefinition;
use crate::engine::{
    Engine, ExecutionResult, ExecutionStatus as RunStatus, Node, NodeContext, NodeOutput,
    RunOptions,
};
use crate::error::{Error, Result};
use crate::event::{Event, EventKind};
use crate::state::{ErrorRecord, StateDelta};
use crate::store::{
    ExecutionKind, ExecutionOutcome, ExecutionStatus, ExecutionStore, NewEvent, NewExecution,
    NodeRunRecord, NodeRunStatus, StepCommit, StoreErrorKind,
};

/// Most events read from the stream before a commit (bounds one `commit_steps` call).
const MAX_BATCH_EVENTS: usize = 512;

/// What the execution row records besides the input: who runs what.
#[derive(Debug, Clone, PartialEq)]
pub struct ExecutionMeta {
    /// The user who runs it (also passed to the engine as the run's owner when the run
    /// options name none).
    pub owner_id: String,
    /// What kind of thing runs.
    pub kind: ExecutionKind,
    /// The stored definition run, if any.
    pub definition_id: Option<String>,
    /// The template run, if any (its analytics are updated when the execution ends).
    pub template_id: Option<String>,
    /// Merged template parameters / run options to record.
    pub params: Value,
    /// The conversation (thread) it belongs to.
    pub conversation_id: Option<String>,
}

impl ExecutionMeta {
    /// An execution of `kind` by `owner_id`, with nothing else recorded.
    pub fn new(owner_id: impl Into<String>, kind: ExecutionKind) -> ExecutionMeta {
        ExecutionMeta {
            owner_id: owner_id.into(),
            kind,
            definition_id: None,
            template_id: None,
            params: Value::Object(serde_json::Map::new()),
            conversation_id: None,
        }
    }

    /// Records the definition run.
    #[must_use]
    pub fn definition(mut self, id: impl Into<String>) -> ExecutionMeta {
        self.definition_id = Some(id.into());
        self
    }

    /// Records the template run.
    #[must_use]
    pub fn template(mut self, id: impl Into<String>) -> ExecutionMeta {
        self.template_id = Some(id.into());
        self
    }

    /// Records the parameters.
    #[must_use]
    pub fn params(mut self, params: Value) -> ExecutionMeta {
        self.params = params;
        self
    }

    /// Records the conversation.
    #[must_use]
    pub fn conversation(mut self, id: impl Into<String>) -> ExecutionMeta {
        self.conversation_id = Some(id.into());
        self
    }
}

/// The outcome of a tracked execution.
#[derive(Debug)]
pub struct TrackedRun {
    /// What the engine returned; always complete, whatever happened to the store.
    pub result: ExecutionResult,
    /// The first storage failure after the execution row was created, if any. From then on
    /// the tracker stopped writing steps (it still tried to record the outcome), so the stored
    /// execution is incomplete.
    pub store_error: Option<Error>,
}

impl TrackedRun {
    /// The result, or the storage failure when the run was not fully recorded.
    ///
    /// # Errors
    ///
    /// The first storage failure ([`TrackedRun::store_error`]).
    pub fn into_result(self) -> Result<ExecutionResult> {
        match self.store_error {
            Some(error) => Err(error),
            None => Ok(self.result),
        }
    }
}

/// Records executions in an [`ExecutionStore`] while they run. Cheap to clone.
#[derive(Clone)]
pub struct WorkflowTracker {
    store: Arc<dyn ExecutionStore>,
}

impl std::fmt::Debug for WorkflowTracker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WorkflowTracker").finish_non_exhaustive()
    }
}

impl WorkflowTracker {
    /// A tracker writing to `store` (an `Arc<dyn Store>` coerces to it).
    pub fn new(store: Arc<dyn ExecutionStore>) -> WorkflowTracker {
        WorkflowTracker { store }
    }

    /// The store written to.
    pub fn store(&self) -> &Arc<dyn ExecutionStore> {
        &self.store
    }

    /// Runs `def` on `engine` and records it: the execution row (with the id the result
    /// carries: `options.execution_id`, or a new ULID), its status transitions, one step per
    /// node completion while it runs, and the outcome.
    ///
    /// # Errors
    ///
    /// Before anything runs: the engine's [`Engine::prepare`] errors (an unusable definition
    /// creates no row) and the store's `create_execution`/`set_execution_status` errors (the
    /// execution is not started then). A storage failure once the execution runs is not an
    /// error: see [`TrackedRun::store_error`].
    pub async fn run(
        &self,
        engine: &Engine,
        def: &WorkflowDefinition,
        input: Value,
        options: RunOptions,
        meta: ExecutionMeta,
    ) -> Result<TrackedRun> {
        self.run_observed(engine, def, input, options, meta, |_| {})
            .await
    }

    /// As [`WorkflowTracker::run`], calling `observe` with each event as the tracker reads it
    /// (before it is committed), e.g. to stream progress to a terminal.
    ///
    /// # Errors
    ///
    /// As [`WorkflowTracker::run`].
    pub async fn run_observed<F: FnMut(&Event)>(
        &self,
        engine: &Engine,
        def: &WorkflowDefinition,
        input: Value,
        mut options: RunOptions,
        meta: ExecutionMeta,
        mut observe: F,
    ) -> Result<TrackedRun> {
        let mut prepared = engine.prepare(def)?;
        let deltas = DeltaTaps::default();
        // The plan was just compiled, so it is not shared yet: wrap its nodes to see the delta
        // each node run returns (the event stream carries outputs, not deltas).
        if let Some(plan) = Arc::get_mut(&mut prepared.plan) {
            for node in &mut plan.nodes {
                node.node = Arc::new(TapNode {
                    inner: node.node.clone(),
                    taps: deltas.clone(),
                });
            }
        }

        let id = options
            .execution_id
            .clone()
            .unwrap_or_else(|| ulid::Ulid::new().to_string());
        options.execution_id = Some(id.clone());
        if options.owner.is_none() {
            options.owner = Some(meta.owner_id.clone());
        }
        let clock = engine.services().clock.clone();
        self.store
            .create_execution(NewExecution {
                id: Some(id.clone()),
                owner_id: meta.owner_id,
                definition_id: meta.definition_id,
                template_id: meta.template_id,
                kind: meta.kind,
                input: input.clone(),
                params: meta.params,
                conversation_id: meta.conversation_id,
            })
            .await?;
        // Running from just before the engine starts, so the row's duration covers the run.
        if let Err(error) = self
            .store
            .set_execution_status(&id, ExecutionStatus::Running, clock.now_ms())
            .await
        {
            self.abandon(&id, &error, clock.now_ms()).await;
            return Err(error);
        }
        let handle = match engine.start_prepared(&prepared, input, options) {
            Ok(handle) => handle,
            Err(error) => {
                self.abandon(&id, &error, clock.now_ms()).await;
                return Err(error);
            }
        };

        let mut steps = StepBuilder::new(id.clone(), deltas);
        let mut store_error: Option<Error> = None;
        let mut stream = handle.subscribe().ready_chunks(MAX_BATCH_EVENTS);
        while let Some(batch) = stream.next().await {
            for event in &batch {
                observe(event);
            }
            let commits = steps.push_events(batch);
            if commits.is_empty() || store_error.is_some() {
                continue;
            }
            if let Err(error) = self.commit(&commits).await {
                store_error = Some(error);
            }
        }
        let result = handle.result().await?;

        let final_events = steps.take_pending();
        if result.status == RunStatus::Waiting {
            // Paused by an interrupt: not ended; its last events and the `waiting` status.
            if store_error.is_none()
                && let Err(error) = self.store.append_events(&id, &final_events).await
            {
                store_error = Some(error);
            }
            if let Err(error) = self
                .store
                .set_execution_status(&id, ExecutionStatus::Waiting, clock.now_ms())
                .await
            {
                store_error.get_or_insert(error);
            }
            return Ok(TrackedRun {
                result,
                store_error,
            });
        }
        let mut outcome = outcome_of(&result, final_events);
        if store_error.is_some() {
            // Steps are missing: do not number final events after a gap.
            outcome.events.clear();
        }
        if let Err(error) = self.store.complete_execution(&id, outcome).await {
            store_error.get_or_insert(error);
        }
        Ok(TrackedRun {
            result,
            store_error,
        })
    }

    /// Commits steps in one transaction and checks that the store numbered their events as the
    /// engine did.
    async fn commit(&self, commits: &[(StepCommit, Option<u64>)]) -> Result<()> {
        let steps: Vec<StepCommit> = commits.iter().map(|(s, _)| s.clone()).collect();
        let receipts = self.store.commit_steps(&steps).await?;
        for ((step, first_seq), receipt) in commits.iter().zip(&receipts) {
            if let Some(first) = first_seq
                && i64::try_from(*first).ok() != Some(receipt.first_seq)
            {
                return Err(Error::store(
                    StoreErrorKind::Conflict,
                    format!(
                        "execution `{}`: the store numbered the events of node `{}` from {} but the engine from {first}",
                        step.node_run.execution_id, step.node_run.node_id, receipt.first_seq
                    ),
                ));
            }
        }
        Ok(())
    }

    /// Marks a created execution failed when it could not be started (best effort).
    async fn abandon(&self, id: &str, error: &Error, at: i64) {
        let _ = self
            .store
            .complete_execution(
                id,
                ExecutionOutcome {
                    status: ExecutionStatus::Failed,
                    output: None,
                    response: None,
                    error: Some(error.to_string()),
                    prompt_tokens: 0,
                    completion_tokens: 0,
                    cost: 0.0,
                    finished_at: at,
                    events: Vec::new(),
                },
            )
            .await;
    }
}

/// The final outcome of a result, with the events after the last step.
fn outcome_of(result: &ExecutionResult, events: Vec<NewEvent>) -> ExecutionOutcome {
    let status = match result.status {
        RunStatus::Completed => ExecutionStatus::Completed,
        RunStatus::Cancelled => ExecutionStatus::Cancelled,
        _ => ExecutionStatus::Failed,
    };
    let finished_at = result
        .started_at_ms
        .saturating_add(i64::try_from(result.duration_ms).unwrap_or(i64::MAX))
        .max(result.started_at_ms);
    ExecutionOutcome {
        status,
        output: Some(json!({
            "variables": result.variables,
            "errors": result.errors,
        })),
        response: result.response.clone(),
        error: result.error.as_ref().map(|e| e.message.clone()),
        prompt_tokens: saturating_i64(result.usage.prompt_tokens),
        completion_tokens: saturating_i64(result.usage.completion_tokens),
        cost: result.usage.cost,
        finished_at,
        events,
    }
}

fn saturating_i64(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// The deltas node runs returned, by (node, iteration, attempt).
#[derive(Clone, Default)]
struct DeltaTaps(Arc<Mutex<HashMap<RunKey, StateDelta>>>);

/// (node, iteration, attempt).
type RunKey = (String, u32, u32);

impl DeltaTaps {
    fn put(&self, key: (String, u32, u32), delta: StateDelta) {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(key, delta);
    }

    fn take(&self, key: &(String, u32, u32)) -> Option<StateDelta> {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(key)
    }
}

/// A node that records the delta of each successful attempt before the engine applies it (and
/// before the engine emits `node_completed`, so the tracker finds it there).
struct TapNode {
    inner: Arc<dyn Node>,
    taps: DeltaTaps,
}

#[async_trait]
impl Node for TapNode {
    async fn run(&self, ctx: NodeContext) -> Result<NodeOutput> {
        let key = (ctx.node_id().to_owned(), ctx.iteration, ctx.attempt);
        let output = self.inner.run(ctx).await?;
        self.taps.put(key, output.delta.clone());
        Ok(output)
    }
}

/// A node run seen starting.
struct Started {
    attempt: u32,
    started_at: i64,
}

/// Turns the event stream into steps.
struct StepBuilder {
    execution_id: String,
    deltas: DeltaTaps,
    /// Events since the last step, with the engine's sequence number of the first.
    pending: Vec<NewEvent>,
    pending_first_seq: Option<u64>,
    /// Runs started and not yet ended, by (node, iteration).
    running: HashMap<(String, u32), Started>,
    /// The last iteration each node ran (for skipped runs, which carry none).
    last_iteration: HashMap<String, u32>,
}

impl StepBuilder {
    fn new(execution_id: String, deltas: DeltaTaps) -> StepBuilder {
        StepBuilder {
            execution_id,
            deltas,
            pending: Vec::new(),
            pending_first_seq: None,
            running: HashMap::new(),
            last_iteration: HashMap::new(),
        }
    }

    /// Events after the last step (the execution's final events).
    fn take_pending(&mut self) -> Vec<NewEvent> {
        self.pending_first_seq = None;
        std::mem::take(&mut self.pending)
    }

    /// Reads a batch of events; returns the steps it completed, each with the engine's
    /// sequence number of its first event.
    fn push_events(&mut self, batch: Vec<Event>) -> Vec<(StepCommit, Option<u64>)> {
        let mut commits = Vec::new();
        for event in batch {
            let node_run = self.node_run_of(&event);
            if self.pending.is_empty() {
                self.pending_first_seq = Some(event.seq);
            }
            self.pending.push(new_event(&event));
            if let Some((node_run, delta)) = node_run {
                let first_seq = self.pending_first_seq.take();
                commits.push((
                    StepCommit {
                        node_run,
                        state_delta: delta,
                        events: std::mem::take(&mut self.pending),
                        snapshot: None,
                    },
                    first_seq,
                ));
            }
        }
        commits
    }

    /// The node run (and its delta) an event ends, if it ends one.
    fn node_run_of(&mut self, event: &Event) -> Option<(NodeRunRecord, Value)> {
        let ts = event.ts_ms;
        match &event.kind {
            EventKind::NodeStarted {
                node_id,
                iteration,
                attempt,
                ..
            } => {
                let started =
                    self.running
                        .entry((node_id.clone(), *iteration))
                        .or_insert(Started {
                            attempt: *attempt,
                            started_at: ts,
                        });
                started.attempt = *attempt;
                None
            }
            EventKind::NodeCompleted {
                node_id,
                iteration,
                duration_ms,
                output,
            } => {
                let (attempt, started_at) = self.end_run(node_id, *iteration, ts);
                let duration = i64::try_from(*duration_ms).unwrap_or(i64::MAX);
                let delta = self
                    .deltas
                    .take(&(node_id.clone(), *iteration, attempt))
                    .unwrap_or_default();
                let usage = delta.usage.unwrap_or_default();
                let mut run = NodeRunRecord::started(
                    &self.execution_id,
                    node_id,
                    i64::from(*iteration),
                    i64::from(attempt),
                    started_at,
                );
                run.status = NodeRunStatus::Completed;
                run.finished_at = Some(ts);
                run.duration_ms = Some(duration);
                run.prompt_tokens = saturating_i64(usage.prompt_tokens);
                run.completion_tokens = saturating_i64(usage.completion_tokens);
                run.cost = usage.cost;
                run.output = (!output.is_null()).then(|| output.clone());
                Some((run, delta_value(&delta)))
            }
            EventKind::NodeFailed {
                node_id,
                iteration,
                error,
                class,
            } => {
                let (attempt, started_at) = self.end_run(node_id, *iteration, ts);
                let mut run = NodeRunRecord::started(
                    &self.execution_id,
                    node_id,
                    i64::from(*iteration),
                    i64::from(attempt),
                    started_at,
                );
                run.status = if class == "cancelled" {
                    NodeRunStatus::Cancelled
                } else {
                    NodeRunStatus::Failed
                };
                run.finished_at = Some(ts);
                run.duration_ms = Some(ts.saturating_sub(started_at).max(0));
                run.error = Some(error.clone());
                // The engine records a failure in `errors`: the same delta it applied.
                let delta = StateDelta {
                    errors: vec![ErrorRecord {
                        node_id: node_id.clone(),
                        message: error.clone(),
                        kind: class.clone(),
                    }],
                    ..StateDelta::default()
                };
                Some((run, delta_value(&delta)))
            }
            EventKind::NodeSkipped { node_id } => {
                let iteration = self.last_iteration.get(node_id).map_or(0, |i| i + 1);
                self.last_iteration.insert(node_id.clone(), iteration);
                let mut run = NodeRunRecord::started(
                    &self.execution_id,
                    node_id,
                    i64::from(iteration),
                    1,
                    ts,
                );
                run.status = NodeRunStatus::Skipped;
                run.finished_at = Some(ts);
                run.duration_ms = Some(0);
                Some((run, Value::Null))
            }
            _ => None,
        }
    }

    /// Ends the run of `node_id` at `iteration`: its last attempt and first start.
    fn end_run(&mut self, node_id: &str, iteration: u32, ts: i64) -> (u32, i64) {
        self.last_iteration.insert(node_id.to_owned(), iteration);
        match self.running.remove(&(node_id.to_owned(), iteration)) {
            Some(started) => (started.attempt.max(1), started.started_at),
            None => (1, ts),
        }
    }
}

/// A delta as stored: `null` for an empty one (no checkpoint row).
fn delta_value(delta: &StateDelta) -> Value {
    if delta.is_empty() {
        Value::Null
    } else {
        serde_json::to_value(delta).unwrap_or(Value::Null)
    }
}

/// An engine event as stored: its type and its payload (the event without the envelope).
fn new_event(event: &Event) -> NewEvent {
    let mut payload = serde_json::to_value(&event.kind).unwrap_or(Value::Null);
    if let Value::Object(map) = &mut payload {
        map.remove("type");
    }
    NewEvent::new(event.ts_ms, event.kind.type_name(), payload)
}
