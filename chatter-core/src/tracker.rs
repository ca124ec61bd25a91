//! The [`WorkflowTracker`]: runs executions durably in an [`ExecutionStore`], and resumes,
//! approves, lists and forks them (DESIGN §8).
//!
//! The tracker creates the execution's row (the id callers get back is the row's id), moves it
//! `pending → running`, takes its lease, and runs it on an [`Engine`] with
//! [`crate::engine::Durability`]: the engine commits each node run's end as one step (node run,
//! state delta, events) in the tracker's [`DurabilityMode`], records the intent of each
//! side-effecting node run before it starts (`sync` mode), and writes the outcome (for a
//! template execution the store updates the template's analytics in that transaction), or the
//! `waiting` status when an `approval` node paused it. The lease is renewed while it runs and
//! given up at the end.
//!
//! [`WorkflowTracker::resume`] continues an execution from its last step, with the same id and
//! its events continuing the same sequence: after a crash (its lease expired), or with an
//! approval's decision. [`WorkflowTracker::resume_due`] does this for every execution due (run
//! it at start-up and periodically). [`WorkflowTracker::steps`] lists an execution's steps with
//! the state after each; [`WorkflowTracker::fork`] starts a new execution from any step,
//! optionally with edited variables, leaving the original untouched.
//!
//! A lease held by a worker id can be taken again by the same id (that is how it is renewed),
//! so the lease alone does not keep one process from running an execution twice. The tracker
//! and its clones therefore also keep the ids of the executions they are running: resuming or
//! cancelling one of them through the same tracker (or a clone, whatever its worker id) is
//! refused with a `Conflict` storage error.
//!
//! A storage failure never loses the run's result: the execution ends (`failed`, class
//! `storage`, in `sync` mode), and [`TrackedRun::store_error`] says what failed.
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

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use crate::Message;
use crate::WorkflowDefinition;
use crate::engine::{
    Durability, DurabilityMode, Engine, ExecutionResult, PreparedWorkflow, Replay, RunOptions,
    event_from_record, recorded_runs,
};
use crate::error::{Error, Result};
use crate::event::{Event, EventKind};
use crate::state::{State, StateDelta, VariableOp};
use crate::store::{
    CheckpointKind, ExecutionKind, ExecutionOutcome, ExecutionRecord, ExecutionStart,
    ExecutionStatus, ExecutionStore, NewExecution, NodeRunRecord, NodeRunStatus, Store,
    StoreErrorKind,
};

/// Events read per page when a resume loads an execution's events.
const EVENT_PAGE: u32 = 5_000;

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
    /// Why the execution was not fully recorded, if it was not.
    pub store_error: Option<Error>,
    /// The execution's row as its end wrote it (status, output, usage, times), so a host
    /// need not read it back; `None` when it paused (`waiting`) or was not fully recorded.
    pub record: Option<ExecutionRecord>,
}

impl TrackedRun {
    /// The result, or the storage failure when the run was not fully recorded.
    ///
    /// # Errors
    ///
    /// The storage failure ([`TrackedRun::store_error`]).
    pub fn into_result(self) -> Result<ExecutionResult> {
        match self.store_error {
            Some(error) => Err(error),
            None => Ok(self.result),
        }
    }
}

/// A decision that resumes an execution paused at an `approval` node.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Decision {
    /// The approval node; may be omitted when exactly one approval is waiting.
    #[serde(default)]
    pub node_id: Option<String>,
    /// One of the node's `allowed_decisions`.
    pub decision: String,
    /// Input the person gave (checked against the node's `input_schema`).
    #[serde(default)]
    pub input: Value,
}

impl Decision {
    /// `decision` for whichever approval is waiting, with no input.
    pub fn new(decision: impl Into<String>) -> Decision {
        Decision {
            node_id: None,
            decision: decision.into(),
            input: Value::Null,
        }
    }

    /// Names the approval node.
    #[must_use]
    pub fn at(mut self, node_id: impl Into<String>) -> Decision {
        self.node_id = Some(node_id.into());
        self
    }

    /// Adds input.
    #[must_use]
    pub fn input(mut self, input: Value) -> Decision {
        self.input = input;
        self
    }
}

/// One step of an execution with the state after it ([`WorkflowTracker::steps`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepState {
    /// The step number, from 1.
    pub step: i64,
    /// The node whose run ended.
    pub node_id: String,
    /// Its iteration.
    pub iteration: i64,
    /// Its attempt.
    pub attempt: i64,
    /// How it ended.
    pub status: NodeRunStatus,
    /// The state after the step (messages, variables, context, usage, errors, ...).
    pub state: Value,
}

/// Where a resumer finds the graph of a stored execution.
#[async_trait]
pub trait GraphSource: Send + Sync {
    /// The definition `execution` runs.
    ///
    /// # Errors
    ///
    /// [`Error::NotFound`] when its source is gone; parse and generation errors.
    async fn definition_for(&self, execution: &ExecutionRecord) -> Result<WorkflowDefinition>;
}

/// Sees every event of every execution a [`WorkflowTracker`] drives (runs, resumes, forks,
/// [`WorkflowTracker::resume_due`]), as it happens: e.g. a server publishing the start and end of
/// executions to its clients. Set with [`WorkflowTracker::observer`].
///
/// It is called on the task driving the execution, between two events: it must be quick and
/// must not block (hand the event to a channel).
pub trait TrackerObserver: Send + Sync {
    /// An event of `execution` (its row as the run, or the resume, began: the ids, the owner
    /// and the kind are current; its status is not).
    fn on_event(&self, execution: &ExecutionRecord, event: &Event);

    /// `execution` (its row before the resume) is resumed: after a pause for approval or after
    /// its worker died. Its new events follow.
    fn on_resumed(&self, execution: &ExecutionRecord) {
        let _ = execution;
    }
}

/// "No `observe` callback" for the internal run, resume and fork paths.
const NO_OBSERVER: Option<fn(&Event)> = None;

/// The graph of an execution from the store: the graph recorded on the row (ad-hoc and chat
/// executions), else its stored definition, else its template generated again with its
/// recorded parameters.
#[derive(Clone)]
pub struct StoreGraphSource {
    store: Arc<dyn Store>,
}

impl StoreGraphSource {
    /// Reads from `store`.
    pub fn new(store: Arc<dyn Store>) -> StoreGraphSource {
        StoreGraphSource { store }
    }
}

impl std::fmt::Debug for StoreGraphSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreGraphSource").finish_non_exhaustive()
    }
}

#[async_trait]
impl GraphSource for StoreGraphSource {
    async fn definition_for(&self, execution: &ExecutionRecord) -> Result<WorkflowDefinition> {
        if let Some(graph) = &execution.graph {
            return WorkflowDefinition::from_value(graph);
        }
        if let Some(id) = &execution.definition_id {
            let record = self
                .store
                .get_definition(id)
                .await?
                .ok_or_else(|| Error::NotFound {
                    what: "definition".into(),
                    name: id.clone(),
                })?;
            return WorkflowDefinition::from_value(&record.definition);
        }
        if let Some(id) = &execution.template_id {
            let record = self
                .store
                .get_template(id)
                .await?
                .ok_or_else(|| Error::NotFound {
                    what: "template".into(),
                    name: id.clone(),
                })?;
            let spec = crate::templates::spec_of(&record)?;
            let mut params = execution.params.clone();
            if let Value::Object(map) = &mut params {
                map.remove("fork");
                map.remove(HISTORY_PARAM);
                map.remove(GRAPH_DIGEST_PARAM);
            }
            return spec.generate(&spec.merge_params(&params)?);
        }
        Err(Error::NotFound {
            what: "graph of execution".into(),
            name: execution.id.clone(),
        })
    }
}

/// Runs executions durably in a store; resumes, approves, lists and forks them. Cheap to clone.
#[derive(Clone)]
pub struct WorkflowTracker {
    store: Arc<dyn ExecutionStore>,
    mode: DurabilityMode,
    snapshot_every: u32,
    lease_ms: i64,
    worker_id: String,
    observer: Option<Arc<dyn TrackerObserver>>,
    /// The executions this tracker and its clones are running (resuming, cancelling) now.
    active: Arc<Mutex<HashSet<String>>>,
}

/// Keeps an execution in [`WorkflowTracker`]'s active set until dropped.
struct ActiveClaim {
    active: Arc<Mutex<HashSet<String>>>,
    id: String,
}

impl Drop for ActiveClaim {
    fn drop(&mut self) {
        self.active
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&self.id);
    }
}

impl std::fmt::Debug for WorkflowTracker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WorkflowTracker")
            .field("mode", &self.mode)
            .field("snapshot_every", &self.snapshot_every)
            .field("lease_ms", &self.lease_ms)
            .field("worker_id", &self.worker_id)
            .field("observer", &self.observer.is_some())
            .finish_non_exhaustive()
    }
}

impl WorkflowTracker {
    /// The default lease: 30 s, renewed every 10 s while the execution runs.
    pub const DEFAULT_LEASE_MS: i64 = 30_000;

    /// A tracker writing to `store` (an `Arc<dyn Store>` coerces to it), in `sync` mode, with
    /// a new worker id.
    pub fn new(store: Arc<dyn ExecutionStore>) -> WorkflowTracker {
        WorkflowTracker {
            store,
            mode: DurabilityMode::Sync,
            snapshot_every: Durability::DEFAULT_SNAPSHOT_EVERY,
            lease_ms: Self::DEFAULT_LEASE_MS,
            worker_id: format!("worker-{}", ulid::Ulid::new()),
            observer: None,
            active: Arc::default(),
        }
    }

    /// Marks an execution as run by this process until the claim is dropped; `Conflict` when
    /// it already is (checked and marked at once, so two racing callers cannot both pass).
    fn claim(&self, execution_id: &str) -> Result<ActiveClaim> {
        let mut active = self.active.lock().unwrap_or_else(PoisonError::into_inner);
        if !active.insert(execution_id.to_owned()) {
            return Err(Error::store(
                StoreErrorKind::Conflict,
                format!("execution `{execution_id}` is already being run in this process"),
            ));
        }
        Ok(ActiveClaim {
            active: self.active.clone(),
            id: execution_id.to_owned(),
        })
    }

    /// Whether this tracker (or a clone) is running, resuming or cancelling the execution now.
    pub fn is_active(&self, execution_id: &str) -> bool {
        self.active
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .contains(execution_id)
    }

    /// Sets the durability mode.
    #[must_use]
    pub fn durability(mut self, mode: DurabilityMode) -> WorkflowTracker {
        self.mode = mode;
        self
    }

    /// Sets the number of steps between state snapshots (0: never). A due snapshot is
    /// skipped when the message list is most of the state: the deltas hold the messages.
    #[must_use]
    pub fn snapshot_every(mut self, steps: u32) -> WorkflowTracker {
        self.snapshot_every = steps;
        self
    }

    /// Sets the lease length (at least 100 ms).
    #[must_use]
    pub fn lease_ms(mut self, ms: i64) -> WorkflowTracker {
        self.lease_ms = ms.max(100);
        self
    }

    /// Names this worker (the lease holder); default: a new unique name.
    #[must_use]
    pub fn worker_id(mut self, id: impl Into<String>) -> WorkflowTracker {
        self.worker_id = id.into();
        self
    }

    /// Shows every event of every execution this tracker drives to `observer` (besides the
    /// per-call `observe` closures).
    #[must_use]
    pub fn observer(mut self, observer: Arc<dyn TrackerObserver>) -> WorkflowTracker {
        self.observer = Some(observer);
        self
    }

    /// The store written to.
    pub fn store(&self) -> &Arc<dyn ExecutionStore> {
        &self.store
    }

    /// Runs `def` on `engine` and records it: the execution row (with the id the result
    /// carries: `options.execution_id`, or a new ULID), its status, one step per node run's end
    /// and the outcome.
    ///
    /// # Errors
    ///
    /// Before anything runs: the engine's [`Engine::prepare`] errors (an unusable definition
    /// creates no row) and the store's `create_execution`/`set_execution_status` errors. A
    /// storage failure once the execution runs is not an error: see [`TrackedRun::store_error`].
    pub async fn run(
        &self,
        engine: &Engine,
        def: &WorkflowDefinition,
        input: Value,
        options: RunOptions,
        meta: ExecutionMeta,
    ) -> Result<TrackedRun> {
        self.run_with(engine, def, input, options, meta, NO_OBSERVER)
            .await
    }

    /// As [`WorkflowTracker::run`], calling `observe` with each event as it happens (e.g. to
    /// stream progress to a terminal).
    ///
    /// # Errors
    ///
    /// As [`WorkflowTracker::run`].
    pub async fn run_observed<F: FnMut(&Event)>(
        &self,
        engine: &Engine,
        def: &WorkflowDefinition,
        input: Value,
        options: RunOptions,
        meta: ExecutionMeta,
        observe: F,
    ) -> Result<TrackedRun> {
        self.run_with(engine, def, input, options, meta, Some(observe))
            .await
    }

    /// As [`WorkflowTracker::run`], for a definition prepared once ([`Engine::prepare`]) and
    /// run many times (see [`WorkflowTracker::run_prepared_observed`]).
    ///
    /// # Errors
    ///
    /// As [`WorkflowTracker::run`], except the preparation's.
    pub async fn run_prepared(
        &self,
        engine: &Engine,
        prepared: &PreparedWorkflow,
        input: Value,
        options: RunOptions,
        meta: ExecutionMeta,
    ) -> Result<TrackedRun> {
        self.run_prepared_with(engine, prepared, input, options, meta, NO_OBSERVER)
            .await
    }

    /// As [`WorkflowTracker::run_observed`], for a definition prepared once
    /// ([`Engine::prepare`]) and run many times: a host that keeps the preparation of a
    /// stored definition saves validating and compiling it (and taking its digest) again on
    /// every execution.
    ///
    /// # Errors
    ///
    /// As [`WorkflowTracker::run`], except the preparation's.
    pub async fn run_prepared_observed<F: FnMut(&Event)>(
        &self,
        engine: &Engine,
        prepared: &PreparedWorkflow,
        input: Value,
        options: RunOptions,
        meta: ExecutionMeta,
        observe: F,
    ) -> Result<TrackedRun> {
        self.run_prepared_with(engine, prepared, input, options, meta, Some(observe))
            .await
    }

    /// [`WorkflowTracker::run_observed`], or [`WorkflowTracker::run`] when `observe` is `None`.
    async fn run_with<F: FnMut(&Event)>(
        &self,
        engine: &Engine,
        def: &WorkflowDefinition,
        input: Value,
        options: RunOptions,
        meta: ExecutionMeta,
        observe: Option<F>,
    ) -> Result<TrackedRun> {
        let prepared = engine.prepare(def)?;
        self.run_prepared_with(engine, &prepared, input, options, meta, observe)
            .await
    }

    async fn run_prepared_with<F: FnMut(&Event)>(
        &self,
        engine: &Engine,
        prepared: &PreparedWorkflow,
        input: Value,
        mut options: RunOptions,
        meta: ExecutionMeta,
        observe: Option<F>,
    ) -> Result<TrackedRun> {
        let def = prepared.definition();
        let id = options
            .execution_id
            .clone()
            .unwrap_or_else(|| ulid::Ulid::new().to_string());
        options.execution_id = Some(id.clone());
        if options.owner.is_none() {
            options.owner = Some(meta.owner_id.clone());
        }
        let _claim = self.claim(&id)?;
        // Executions with no stored source (ad-hoc, chat, inline templates) keep their graph, so
        // they can be resumed.
        let graph = (matches!(meta.kind, ExecutionKind::Adhoc | ExecutionKind::Chat)
            || (meta.kind == ExecutionKind::Template && meta.template_id.is_none()))
        .then(|| {
            prepared
                .graph
                .get_or_init(|| Arc::new(def.to_value()))
                .clone()
        });
        // The thread's earlier messages are part of the starting state: a resume, the steps
        // listing and a fork start from them too.
        let mut params = meta.params;
        let mut extra = Vec::new();
        if !options.history.is_empty() {
            extra.push((
                HISTORY_PARAM,
                serde_json::to_value(&options.history).unwrap_or(Value::Null),
            ));
        }
        // A graph read again from its source on resume (a stored definition, a template) must
        // be the one this run started with: its digest is recorded to check it.
        if graph.is_none() {
            let digest = prepared.digest.get_or_init(|| graph_digest(def));
            extra.push((GRAPH_DIGEST_PARAM, Value::String(digest.clone())));
        }
        if !extra.is_empty() {
            if !params.is_object() {
                params = Value::Object(Map::new());
            }
            if let Value::Object(map) = &mut params {
                for (key, value) in extra {
                    map.insert(key.to_owned(), value);
                }
            }
        }
        let new = NewExecution {
            id: Some(id.clone()),
            owner_id: meta.owner_id,
            definition_id: meta.definition_id,
            template_id: meta.template_id,
            kind: meta.kind,
            input: input.clone(),
            params,
            conversation_id: meta.conversation_id,
            graph,
        };
        if self.mode != DurabilityMode::Sync {
            let record = self.open_row(engine, new).await?;
            return self
                .drive(
                    engine, prepared, &record, input, options, None, observe, None,
                )
                .await;
        }
        // `sync`: nothing is written before the first node that is not pure, and the row,
        // `running` under this worker's lease, comes with that write
        // (`ExecutionStore::start_with_steps`), or with the end when only pure nodes ran.
        let now = engine.services().clock.now_ms();
        let start = ExecutionStart {
            new,
            lease_owner: self.worker_id.clone(),
            lease_until: now + self.lease_ms,
            at: now,
        };
        let record = start.record(&id, now);
        let start = Some(Arc::new(start));
        self.drive(
            engine, prepared, &record, input, options, None, observe, start,
        )
        .await
    }

    /// Creates an execution's row, `running` under this worker's lease, in one write. The
    /// lease is taken with the row: a `running` row without a lease is what `resume_due` takes
    /// over, so another worker (or this server's resumer) could otherwise start it a second
    /// time.
    async fn open_row(&self, engine: &Engine, new: NewExecution) -> Result<ExecutionRecord> {
        let now = engine.services().clock.now_ms();
        let record = self
            .store
            .start_execution(new, &self.worker_id, now + self.lease_ms, now)
            .await?;
        crate::failpoint::hit("tracker.after_running");
        Ok(record)
    }

    /// Resumes an execution from its last step, with the same id, its events continuing the
    /// same sequence: completed steps are replayed, not run again; node runs that were in
    /// flight run again with the same idempotency key. A `waiting` execution needs a
    /// `decision` for its approval (unless the approval timed out: then its
    /// `timeout_decision` is taken). `def` must be the graph the execution ran (see
    /// [`GraphSource`]); `options.owner`, when set, must be the execution's owner.
    ///
    /// # Errors
    ///
    /// [`Error::NotFound`] for an unknown execution (or one of another owner);
    /// [`Error::InvalidInput`] for an ended execution, a decision that is not allowed or not
    /// expected, a waiting execution without a decision; `Conflict` (storage) when another
    /// worker holds its lease, or when this tracker (or a clone) is running it already.
    /// Nothing is changed then.
    pub async fn resume(
        &self,
        engine: &Engine,
        def: &WorkflowDefinition,
        execution_id: &str,
        decision: Option<Decision>,
        options: RunOptions,
    ) -> Result<TrackedRun> {
        let now = engine.services().clock.now_ms();
        self.resume_at(
            engine,
            def,
            execution_id,
            decision,
            options,
            NO_OBSERVER,
            now,
        )
        .await
    }

    /// Whether a resume of execution `execution_id` with `decision` would be taken, checked
    /// without claiming or changing anything: the refusals of [`WorkflowTracker::resume`] for an
    /// execution that is unknown to the caller, has ended, waits for a decision not given, or
    /// does not expect the one given. A host that claims an execution itself before resuming
    /// it (the HTTP server's registry of live executions) checks first, so that a request to be
    /// refused never holds the claim that a valid request racing it needs. `resume` checks
    /// again once it holds its own claim.
    ///
    /// # Errors
    ///
    /// As [`WorkflowTracker::resume`], but never `Conflict`.
    pub async fn check_resume(
        &self,
        engine: &Engine,
        def: &WorkflowDefinition,
        execution_id: &str,
        decision: Option<Decision>,
        options: &RunOptions,
    ) -> Result<()> {
        let now = engine.services().clock.now_ms();
        self.resumable(def, execution_id, decision, options, now)
            .await
            .map(|_| ())
    }

    /// As [`WorkflowTracker::resume`], calling `observe` with each new event (those after the
    /// stored ones: a stream that read the execution up to its pause continues without a gap
    /// or a repeat).
    ///
    /// # Errors
    ///
    /// As [`WorkflowTracker::resume`].
    pub async fn resume_observed<F: FnMut(&Event)>(
        &self,
        engine: &Engine,
        def: &WorkflowDefinition,
        execution_id: &str,
        decision: Option<Decision>,
        options: RunOptions,
        observe: F,
    ) -> Result<TrackedRun> {
        let now = engine.services().clock.now_ms();
        self.resume_at(
            engine,
            def,
            execution_id,
            decision,
            options,
            Some(observe),
            now,
        )
        .await
    }

    /// [`WorkflowTracker::resume_observed`] with `now` the time wake-up times are compared with.
    #[allow(clippy::too_many_arguments)]
    async fn resume_at<F: FnMut(&Event)>(
        &self,
        engine: &Engine,
        def: &WorkflowDefinition,
        execution_id: &str,
        decision: Option<Decision>,
        mut options: RunOptions,
        observe: Option<F>,
        due: i64,
    ) -> Result<TrackedRun> {
        // A request that is to be refused (an ended execution, a waiting one without a
        // decision, a decision it does not expect) is refused before the claim: holding it,
        // even briefly, would turn away a valid request racing this one.
        self.resumable(def, execution_id, decision.clone(), &options, due)
            .await?;
        // Claimed before anything is read again: a second resume racing this one is refused
        // here, since the lease below would let the same worker id through.
        let _claim = self.claim(execution_id)?;
        let (record, runs, resume_input) = self
            .resumable(def, execution_id, decision, &options, due)
            .await?;
        let prepared = engine.prepare(def)?;
        let clock = engine.services().clock.clone();
        let now = clock.now_ms();
        let deltas = self.deltas_of(execution_id).await?;
        let recorded = recorded_runs(runs, &deltas, None)?;
        let events = self.events_of(execution_id).await?;
        // A forked execution applies its edits again at the same point.
        let edits = fork_edits(&record.params)?;

        self.take_lease(&record, now, "").await?;
        if record.status == ExecutionStatus::Waiting {
            self.store
                .set_execution_status(execution_id, ExecutionStatus::Running, now)
                .await?;
            self.store.set_wake_at(execution_id, None).await?;
        } else if record.status == ExecutionStatus::Pending {
            self.store
                .set_execution_status(execution_id, ExecutionStatus::Running, now)
                .await?;
        }
        options.execution_id = Some(execution_id.to_owned());
        options.owner = Some(record.owner_id.clone());
        options.history = history_of(&record)?;
        let replay = Replay {
            runs: recorded,
            events,
            record: false,
            edits,
            resume_inputs: resume_input.into_iter().collect(),
        };
        if let Some(observer) = &self.observer {
            observer.on_resumed(&record);
        }
        self.drive(
            engine,
            &prepared,
            &record,
            record.input.clone(),
            options,
            Some(replay),
            observe,
            None,
        )
        .await
    }

    /// Resumes every execution due at `now`: `running` ones whose lease expired (their worker
    /// died) and `waiting` ones whose approval timed out. Returns each one's id and outcome.
    ///
    /// # Errors
    ///
    /// Only the listing's storage errors; each execution's own failure is in its entry.
    pub async fn resume_due(
        &self,
        engine: &Engine,
        source: &dyn GraphSource,
        now: i64,
    ) -> Result<Vec<(String, Result<TrackedRun>)>> {
        let due = self.store.list_resumable(now, 100).await?;
        let mut outcomes = Vec::with_capacity(due.len());
        // One this process is running is not due here (its lease looks expired only because
        // its renewal is late).
        for record in due.into_iter().filter(|r| !self.is_active(&r.id)) {
            let outcome = match source.definition_for(&record).await {
                Ok(def) => {
                    let options = RunOptions::default();
                    self.resume_at(engine, &def, &record.id, None, options, NO_OBSERVER, now)
                        .await
                }
                Err(error) => Err(error),
            };
            outcomes.push((record.id, outcome));
        }
        Ok(outcomes)
    }

    /// Cancels a stored execution that is not running in this process: a `waiting` one (an
    /// approval nobody will give), a `pending` one, or a `running` one whose worker died (its
    /// lease expired). It ends `cancelled` with `reason` as its error, and an
    /// `execution_cancelled` event continues its event sequence. To stop an execution this
    /// process is running, cancel the token of its [`RunOptions`] instead. `owner`, when given,
    /// must be the execution's owner.
    ///
    /// # Errors
    ///
    /// [`Error::NotFound`] for an unknown execution (or one of another owner);
    /// [`Error::InvalidInput`] for an execution that has already ended; `Conflict` (storage)
    /// when a live worker holds its lease, or this tracker (or a clone) is running it (cancel
    /// it there). Nothing is changed then.
    pub async fn cancel(
        &self,
        execution_id: &str,
        owner: Option<&str>,
        reason: &str,
        now: i64,
    ) -> Result<ExecutionRecord> {
        let options = RunOptions {
            owner: owner.map(str::to_owned),
            ..RunOptions::default()
        };
        let _claim = self.claim(execution_id)?;
        let record = self.owned_execution(execution_id, &options).await?;
        if record.status.is_terminal() {
            return Err(Error::InvalidInput {
                message: format!(
                    "execution `{execution_id}` has already ended ({}); it cannot be cancelled",
                    record.status
                ),
            });
        }
        // Taking the lease shuts out a worker that would resume it meanwhile.
        self.take_lease(&record, now, "; cancel it there").await?;
        let event = crate::engine::new_event(&Event {
            execution_id: execution_id.to_owned(),
            seq: 0,
            ts_ms: now,
            kind: EventKind::ExecutionCancelled {
                reason: reason.to_owned(),
            },
        });
        let outcome = ExecutionOutcome {
            status: ExecutionStatus::Cancelled,
            output: None,
            response: None,
            error: Some(reason.to_owned()),
            prompt_tokens: record.prompt_tokens,
            completion_tokens: record.completion_tokens,
            cost: record.cost,
            finished_at: now,
            events: vec![event],
        };
        let ended = self.store.complete_execution(execution_id, outcome).await;
        // Tidying only: an ended execution is never resumed, whatever its lease or wake-up.
        let _ = self
            .store
            .release_lease(execution_id, &self.worker_id)
            .await;
        if ended.is_ok() {
            let _ = self.store.set_wake_at(execution_id, None).await;
        }
        ended
    }

    /// The steps of an execution in order, each with the state after it (rebuilt from the
    /// latest snapshot before it and the deltas since).
    ///
    /// # Errors
    ///
    /// [`Error::NotFound`] for an unknown execution; stored data the engine cannot read.
    pub async fn steps(&self, execution_id: &str) -> Result<Vec<StepState>> {
        let record = self
            .store
            .get_execution(execution_id)
            .await?
            .ok_or_else(|| not_found(execution_id))?;
        let mut runs = self.store.list_node_runs(execution_id).await?;
        runs.retain(|r| r.step.is_some());
        runs.sort_by_key(|r| r.step);
        let checkpoints = self.store.list_checkpoints(execution_id).await?;
        let mut state = State::new(record.input.clone(), history_of(&record)?);
        let mut checkpoints = checkpoints.into_iter().peekable();
        let mut snapshot_step = 0;
        let mut out = Vec::with_capacity(runs.len());
        for run in runs {
            let step = run.step.unwrap_or_default();
            while let Some(row) = checkpoints.next_if(|c| c.step <= step) {
                match row.kind {
                    CheckpointKind::Snapshot => {
                        state = serde_json::from_value(row.state).map_err(|e| {
                            stored(format!(
                                "the snapshot of step {} is unreadable: {e}",
                                row.step
                            ))
                        })?;
                        snapshot_step = row.step;
                    }
                    // A delta at the snapshot's own step is already inside the snapshot.
                    CheckpointKind::Delta if row.step == snapshot_step => {}
                    CheckpointKind::Delta => {
                        let delta: StateDelta = serde_json::from_value(row.state).map_err(|e| {
                            stored(format!("the delta of step {} is unreadable: {e}", row.step))
                        })?;
                        state.apply(&delta);
                    }
                }
            }
            out.push(StepState {
                step,
                node_id: run.node_id,
                iteration: run.iteration,
                attempt: run.attempt,
                status: run.status,
                state: serde_json::to_value(&state).unwrap_or(Value::Null),
            });
        }
        Ok(out)
    }

    /// Starts a new execution from step `step` of `execution_id`: the steps up to it are
    /// copied into the new execution (replayed, not run), `variables` (when given) are set,
    /// and the new execution goes on live. The original is not touched. The new execution's id
    /// is `options.execution_id` when set (else a new ULID).
    ///
    /// # Errors
    ///
    /// [`Error::NotFound`] for an unknown execution (or one of another owner);
    /// [`Error::InvalidInput`] for a step before 1 or past the execution's last step; as
    /// [`WorkflowTracker::run`].
    pub async fn fork(
        &self,
        engine: &Engine,
        def: &WorkflowDefinition,
        execution_id: &str,
        step: i64,
        variables: Option<Map<String, Value>>,
        options: RunOptions,
    ) -> Result<TrackedRun> {
        let record = self.owned_execution(execution_id, &options).await?;
        if step < 1 || step > record.step_count {
            return Err(Error::InvalidInput {
                message: format!(
                    "execution `{execution_id}` has steps 1..={}; there is no step {step} to fork from",
                    record.step_count
                ),
            });
        }
        same_graph(&record, def)?;
        let prepared = engine.prepare(def)?;
        let runs = self.store.list_node_runs(execution_id).await?;
        let deltas = self.deltas_of(execution_id).await?;
        let recorded = recorded_runs(runs, &deltas, Some(step))?;
        let replayed = recorded.len();
        let edits = variables.clone().map(|vars| {
            (
                replayed,
                StateDelta {
                    variables: vars
                        .into_iter()
                        .map(|(k, v)| (k, VariableOp::Set(v)))
                        .collect(),
                    ..StateDelta::default()
                },
            )
        });
        let mut params = match &record.params {
            Value::Object(map) => map.clone(),
            _ => Map::new(),
        };
        params.insert(
            "fork".into(),
            json!({
                "from": execution_id,
                "step": step,
                "replayed": replayed,
                "variables": variables,
            }),
        );
        let id = options
            .execution_id
            .clone()
            .unwrap_or_else(|| ulid::Ulid::new().to_string());
        let _claim = self.claim(&id)?;
        let new = NewExecution {
            id: Some(id.clone()),
            owner_id: record.owner_id.clone(),
            definition_id: record.definition_id.clone(),
            template_id: record.template_id.clone(),
            kind: record.kind,
            input: record.input.clone(),
            params: Value::Object(params),
            conversation_id: record.conversation_id.clone(),
            graph: record.graph.clone(),
        };
        let forked = self.open_row(engine, new).await?;
        let mut options = options;
        options.execution_id = Some(id.clone());
        options.owner = Some(record.owner_id.clone());
        options.history = history_of(&record)?;
        let replay = Replay {
            runs: recorded,
            events: Vec::new(),
            record: true,
            edits,
            resume_inputs: Vec::new(),
        };
        self.drive(
            engine,
            &prepared,
            &forked,
            record.input.clone(),
            options,
            Some(replay),
            NO_OBSERVER,
            None,
        )
        .await
    }

    /// Runs a prepared execution whose row (`record`) is `running` and whose lease this worker
    /// holds (or, with `start`, whose row the run's first write creates): durable engine run
    /// with the lease renewed, events to `observe` and the tracker's observer, lease given up.
    /// An execution whose row could not be created is an error, as when the row is written
    /// before the run.
    #[allow(clippy::too_many_arguments)]
    async fn drive<F: FnMut(&Event)>(
        &self,
        engine: &Engine,
        prepared: &PreparedWorkflow,
        record: &ExecutionRecord,
        input: Value,
        mut options: RunOptions,
        replay: Option<Replay>,
        mut observe: Option<F>,
        start: Option<Arc<ExecutionStart>>,
    ) -> Result<TrackedRun> {
        let id = record.id.as_str();
        let clock = engine.services().clock.clone();
        let mut durability = Durability::new(self.store.clone(), self.mode);
        durability.snapshot_every = self.snapshot_every;
        durability.start.clone_from(&start);
        options.durability = Some(durability.clone());
        // A resumed execution's stored events are in its log already: observers get the new ones.
        let known = replay
            .as_ref()
            .filter(|r| !r.record)
            .map_or(0, |r| r.events.len() as u64);
        // Each event goes to `observe` and the tracker's observer, when there is either.
        let watched = observe.is_some() || self.observer.is_some();
        let observer = self.observer.as_deref();
        let mut each = |event: &Event| {
            if let Some(observe) = &mut observe {
                observe(event);
            }
            if let Some(observer) = observer {
                observer.on_event(record, event);
            }
        };
        // A caller that drives the run to its end may have it run in the caller's task
        // (`RunOptions::in_place`), with its observers.
        let result = if options.in_place {
            let run = async {
                if watched {
                    engine
                        .run_replaying_observed(prepared, input, options, replay, known, &mut each)
                        .await
                } else {
                    engine.run_replaying(prepared, input, options, replay).await
                }
            };
            // The lease is renewed in the same task, polled only once the run has waited: a
            // run that ends in its first poll sets no timer and wakes no other thread.
            let mut run = std::pin::pin!(run);
            let renewal = std::pin::pin!(self.lease_renewal(id, clock.clone()));
            tokio::select! {
                biased;
                result = &mut run => result,
                () = renewal => run.await,
            }
        } else {
            let handle = match engine.start_replaying(prepared, input, options, replay) {
                Ok(handle) => handle,
                Err(error) => {
                    let at = clock.now_ms();
                    match &start {
                        // The row is written failed, as `abandon` leaves a row written before.
                        Some(start) => {
                            let failed = ExecutionOutcome::failed(&error, at);
                            let _ = self.store.start_and_finish(start, &[], failed).await;
                        }
                        None => self.abandon(id, &error, at).await,
                    }
                    return Err(error);
                }
            };
            let renewer = tokio::spawn(self.lease_renewal(id, clock.clone()));
            // Unwatched, the caller sleeps until the result: a caller on another thread than
            // the run (a `block_on` from Python or a CLI) is not woken for each event.
            if watched {
                let mut events = handle.subscribe_from(known);
                while let Some(event) = events.next().await {
                    each(&event);
                }
            }
            let result = handle.result().await;
            renewer.abort();
            result?
        };
        let store_error = durability.take_failure().or_else(|| {
            result
                .storage_error
                .clone()
                .map(|message| Error::store(StoreErrorKind::Backend, message))
        });
        if let Some(start) = start.as_deref()
            && durability.never_started()
            && store_error.is_some()
            && !self.wrote_row(id, start).await
            && let Some(error) = store_error
        {
            // The write that was to create the execution failed (a duplicate id, a deleted
            // definition, the database gone): it does not exist, and only pure nodes ran.
            return Err(error);
        }
        // An ended execution's lease was cleared with its outcome (`complete_execution`):
        // one store round trip less per run.
        let ended = matches!(
            result.status,
            crate::engine::ExecutionStatus::Completed
                | crate::engine::ExecutionStatus::Failed
                | crate::engine::ExecutionStatus::Cancelled
        );
        if !ended || store_error.is_some() {
            let _ = self.store.release_lease(id, &self.worker_id).await;
        }
        let record = durability.take_ended().filter(|_| store_error.is_none());
        Ok(TrackedRun {
            result,
            store_error,
            record,
        })
    }

    /// Whether execution `id`'s row, as `start` describes it, is stored: a store whose
    /// `start_with_steps` is not one transaction may have written it and failed after it
    /// (then the execution stays, resumable, as after any failed write). A row of the same id
    /// written before (a duplicate) is not under this run's lease.
    async fn wrote_row(&self, id: &str, start: &ExecutionStart) -> bool {
        matches!(
            self.store.get_execution(id).await,
            Ok(Some(row)) if row.lease_owner.as_deref() == Some(start.lease_owner.as_str())
                && row.lease_expires_at == Some(start.lease_until)
        )
    }

    /// Renews the lease every third of its length while polled; ends if the store refuses.
    fn lease_renewal(
        &self,
        id: &str,
        clock: Arc<dyn crate::engine::Clock>,
    ) -> impl Future<Output = ()> + Send + 'static {
        let store = self.store.clone();
        let (id, worker, lease_ms) = (id.to_owned(), self.worker_id.clone(), self.lease_ms);
        async move {
            let period = Duration::from_millis(u64::try_from(lease_ms / 3).unwrap_or(1).max(1));
            loop {
                tokio::time::sleep(period).await;
                let now = clock.now_ms();
                if store
                    .acquire_lease(&id, &worker, now + lease_ms, now)
                    .await
                    .is_err()
                {
                    return;
                }
            }
        }
    }

    /// The execution, when it exists and (if `options.owner` is set) belongs to that owner.
    /// Takes the lease of `record`'s execution for this worker.
    ///
    /// # Errors
    ///
    /// `Conflict` (storage) naming the worker that holds it, then `hint`.
    async fn take_lease(&self, record: &ExecutionRecord, now: i64, hint: &str) -> Result<()> {
        let id = &record.id;
        if self
            .store
            .acquire_lease(id, &self.worker_id, now + self.lease_ms, now)
            .await?
        {
            return Ok(());
        }
        Err(Error::store(
            StoreErrorKind::Conflict,
            format!(
                "execution `{id}` is being run by `{}` (lease until {} ms){hint}",
                record.lease_owner.as_deref().unwrap_or("another worker"),
                record.lease_expires_at.unwrap_or_default()
            ),
        ))
    }

    async fn owned_execution(&self, id: &str, options: &RunOptions) -> Result<ExecutionRecord> {
        let record = self
            .store
            .get_execution(id)
            .await?
            .ok_or_else(|| not_found(id))?;
        if options
            .owner
            .as_deref()
            .is_some_and(|owner| owner != record.owner_id)
        {
            // Someone else's execution is as good as unknown to this caller.
            return Err(not_found(id));
        }
        Ok(record)
    }

    /// Execution `execution_id` as a resume with `decision` at `due` finds it: its row, its
    /// node runs and the input the resume gives its waiting approval (checked: the decision
    /// given, or on timeout the node's timeout decision).
    ///
    /// # Errors
    ///
    /// As [`WorkflowTracker::resume`].
    async fn resumable(
        &self,
        def: &WorkflowDefinition,
        execution_id: &str,
        decision: Option<Decision>,
        options: &RunOptions,
        due: i64,
    ) -> Result<(ExecutionRecord, Vec<NodeRunRecord>, Option<(String, Value)>)> {
        let record = self.owned_execution(execution_id, options).await?;
        if record.status.is_terminal() {
            return Err(Error::InvalidInput {
                message: format!(
                    "execution `{execution_id}` has ended ({}); it cannot be resumed",
                    record.status
                ),
            });
        }
        same_graph(&record, def)?;
        let runs = self.store.list_node_runs(execution_id).await?;
        let waiting: Vec<&str> = runs
            .iter()
            .filter(|r| r.status == NodeRunStatus::Waiting)
            .map(|r| r.node_id.as_str())
            .collect();
        let resume_input = self.decision_input(&record, def, &waiting, decision, due)?;
        Ok((record, runs, resume_input))
    }

    fn decision_input(
        &self,
        record: &ExecutionRecord,
        def: &WorkflowDefinition,
        waiting: &[&str],
        decision: Option<Decision>,
        now: i64,
    ) -> Result<Option<(String, Value)>> {
        let id = &record.id;
        let Some(decision) = decision else {
            if record.status != ExecutionStatus::Waiting {
                return Ok(None);
            }
            // Woken by its timeout: the first waiting approval with a timeout decision.
            if record.wake_at.is_some_and(|at| at <= now) {
                for node_id in waiting {
                    let config = approval_config(def, node_id)?;
                    if let (Some(timeout), true) =
                        (config.timeout_decision.clone(), config.timeout_ms > 0)
                    {
                        let input = json!({"decision": timeout, "input": null, "timed_out": true});
                        return Ok(Some(((*node_id).to_owned(), input)));
                    }
                }
            }
            return Err(Error::InvalidInput {
                message: format!(
                    "execution `{id}` is waiting for a decision at {}; resume it with one",
                    describe(waiting)
                ),
            });
        };
        let node_id = match (&decision.node_id, waiting) {
            (Some(node_id), _) if waiting.contains(&node_id.as_str()) => node_id.clone(),
            (Some(node_id), _) => {
                return Err(Error::InvalidInput {
                    message: format!(
                        "execution `{id}` is not waiting at `{node_id}` (waiting: {})",
                        describe(waiting)
                    ),
                });
            }
            (None, [only]) => (*only).to_owned(),
            (None, []) => {
                return Err(Error::InvalidInput {
                    message: format!("execution `{id}` is not waiting for a decision"),
                });
            }
            (None, several) => {
                return Err(Error::InvalidInput {
                    message: format!(
                        "execution `{id}` waits at several approvals ({}); name the node",
                        describe(several)
                    ),
                });
            }
        };
        approval_config(def, &node_id)?.check_decision(&decision.decision, &decision.input)?;
        let input =
            json!({"decision": decision.decision, "input": decision.input, "timed_out": false});
        Ok(Some((node_id, input)))
    }

    /// The delta checkpoints of an execution by step.
    async fn deltas_of(&self, id: &str) -> Result<HashMap<i64, Value>> {
        Ok(self
            .store
            .list_checkpoints(id)
            .await?
            .into_iter()
            .filter(|c| c.kind == CheckpointKind::Delta)
            .map(|c| (c.step, c.state))
            .collect())
    }

    /// Every stored event of an execution, as engine events.
    async fn events_of(&self, id: &str) -> Result<Vec<Event>> {
        let mut events = Vec::new();
        let mut after = 0;
        loop {
            let page = self.store.list_events(id, after, EVENT_PAGE).await?;
            let Some(last) = page.last() else {
                break;
            };
            after = last.seq;
            let full = page.len() == EVENT_PAGE as usize;
            for record in &page {
                if record.seq != events.len() as i64 + 1 {
                    return Err(stored(format!(
                        "the events of execution `{id}` are not contiguous (event {} after {})",
                        record.seq,
                        events.len()
                    )));
                }
                events.push(event_from_record(record)?);
            }
            if !full {
                break;
            }
        }
        Ok(events)
    }

    /// Marks a created execution failed when it could not be started (best effort).
    async fn abandon(&self, id: &str, error: &Error, at: i64) {
        let _ = self
            .store
            .complete_execution(id, ExecutionOutcome::failed(error, at))
            .await;
    }
}

/// The approval config of node `node_id` of `def`.
fn approval_config(
    def: &WorkflowDefinition,
    node_id: &str,
) -> Result<crate::nodes::ApprovalConfig> {
    let spec = def.node(node_id).ok_or_else(|| Error::NotFound {
        what: "node".into(),
        name: node_id.to_owned(),
    })?;
    crate::nodes::ApprovalConfig::from_spec(spec)
}

/// The key of an execution's `params` holding the thread history it started with.
const HISTORY_PARAM: &str = "history";

/// The key of an execution's `params` holding the digest of the graph it started with, when
/// that graph is read again from its source on resume (a stored definition, a template).
const GRAPH_DIGEST_PARAM: &str = "graph_digest";

/// A stable digest of a graph: FNV-1a (64 bits) over its JSON form with every object's keys
/// in sorted order (a store may give them back in another order: Postgres `jsonb`), as 16
/// hex digits.
fn graph_digest(def: &WorkflowDefinition) -> String {
    /// FNV-1a fed through `io::Write`, so keys and scalars are hashed as `serde_json` writes
    /// them, without a string per key or per scalar (the digest is taken on every execution
    /// of a stored definition).
    struct Fnv(u64);
    impl std::io::Write for Fnv {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            for byte in bytes {
                self.0 = (self.0 ^ u64::from(*byte)).wrapping_mul(0x0100_0000_01b3);
            }
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    fn json(hash: &mut Fnv, value: &(impl serde::Serialize + ?Sized)) {
        // Writing a string or a scalar to this writer cannot fail.
        let _ = serde_json::to_writer(&mut *hash, value);
    }
    fn walk(hash: &mut Fnv, value: &Value) {
        use std::io::Write as _;
        match value {
            Value::Object(map) => {
                let mut entries: Vec<(&String, &Value)> = map.iter().collect();
                entries.sort_unstable_by(|a, b| a.0.cmp(b.0));
                let _ = hash.write(b"{");
                for (key, item) in entries {
                    json(hash, key);
                    let _ = hash.write(b":");
                    walk(hash, item);
                    let _ = hash.write(b",");
                }
                let _ = hash.write(b"}");
            }
            Value::Array(items) => {
                let _ = hash.write(b"[");
                for item in items {
                    walk(hash, item);
                    let _ = hash.write(b",");
                }
                let _ = hash.write(b"]");
            }
            scalar => json(hash, scalar),
        }
    }
    let mut hash = Fnv(0xcbf2_9ce4_8422_2325);
    walk(&mut hash, &def.to_value());
    format!("{:016x}", hash.0)
}

/// Refuses to resume or fork an execution on a graph other than the one it started with
/// (its definition or template was edited since): its recorded steps would be replayed
/// against other nodes.
fn same_graph(record: &ExecutionRecord, def: &WorkflowDefinition) -> Result<()> {
    match record
        .params
        .get(GRAPH_DIGEST_PARAM)
        .and_then(Value::as_str)
    {
        Some(digest) if digest != graph_digest(def) => Err(Error::InvalidInput {
            message: format!(
                "execution `{}` started on another version of its {}; its steps cannot be \
                 replayed on the graph it has now",
                record.id,
                if record.template_id.is_some() {
                    "template"
                } else {
                    "definition"
                }
            ),
        }),
        _ => Ok(()),
    }
}

/// The thread history an execution started with (recorded in its `params`), oldest first.
fn history_of(record: &ExecutionRecord) -> Result<Vec<Message>> {
    match record.params.get(HISTORY_PARAM) {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(value) => serde_json::from_value(value.clone()).map_err(|e| {
            stored(format!(
                "the history of execution `{}` is unreadable: {e}",
                record.id
            ))
        }),
    }
}

/// A fork's edits as recorded in its parameters.
fn fork_edits(params: &Value) -> Result<Option<(usize, StateDelta)>> {
    let Some(fork) = params.get("fork") else {
        return Ok(None);
    };
    let Some(Value::Object(vars)) = fork.get("variables") else {
        return Ok(None);
    };
    let replayed = fork
        .get("replayed")
        .and_then(Value::as_u64)
        .and_then(|n| usize::try_from(n).ok())
        .ok_or_else(|| stored("a fork's recorded parameters lack `replayed`".into()))?;
    Ok(Some((
        replayed,
        StateDelta {
            variables: vars
                .iter()
                .map(|(k, v)| (k.clone(), VariableOp::Set(v.clone())))
                .collect(),
            ..StateDelta::default()
        },
    )))
}

fn describe(nodes: &[&str]) -> String {
    if nodes.is_empty() {
        return "no node".into();
    }
    nodes
        .iter()
        .map(|n| format!("`{n}`"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn not_found(id: &str) -> Error {
    Error::NotFound {
        what: "execution".into(),
        name: id.to_owned(),
    }
}

fn stored(message: String) -> Error {
    Error::store(StoreErrorKind::InvalidInput, message)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The digest as first written (a string per key and per scalar): stored executions carry
    /// digests made by it, so any faster version must give the same 16 hex digits.
    fn reference_digest(def: &WorkflowDefinition) -> String {
        fn feed(hash: &mut u64, bytes: &[u8]) {
            for byte in bytes {
                *hash = (*hash ^ u64::from(*byte)).wrapping_mul(0x0100_0000_01b3);
            }
        }
        fn walk(hash: &mut u64, value: &Value) {
            match value {
                Value::Object(map) => {
                    let mut keys: Vec<&String> = map.keys().collect();
                    keys.sort();
                    feed(hash, b"{");
                    for key in keys {
                        feed(hash, Value::String(key.clone()).to_string().as_bytes());
                        feed(hash, b":");
                        walk(hash, &map[key]);
                        feed(hash, b",");
                    }
                    feed(hash, b"}");
                }
                Value::Array(items) => {
                    feed(hash, b"[");
                    for item in items {
                        walk(hash, item);
                        feed(hash, b",");
                    }
                    feed(hash, b"]");
                }
                scalar => feed(hash, scalar.to_string().as_bytes()),
            }
        }
        let mut hash = 0xcbf2_9ce4_8422_2325_u64;
        walk(&mut hash, &def.to_value());
        format!("{hash:016x}")
    }

    #[test]
    fn graph_digest_is_stable_and_ignores_key_order() {
        let def = |nodes: Value| {
            WorkflowDefinition::from_value(&serde_json::json!({
                "name": "digest \"quoted\" \u{e9}\\ \n",
                "nodes": nodes,
                "edges": [{"source": "start", "target": "llm"}, {"source": "llm", "target": "end"}],
            }))
            .expect("a valid definition")
        };
        let a = def(serde_json::json!([
            {"id": "start", "type": "start"},
            {"id": "llm", "type": "llm", "config": {"temperature": 0.25, "max_tokens": 300,
             "stop": ["\u{1}", "é"], "prompt": "Say {{ input.message }}", "nested": {"z": null, "a": [1, -2, 3.5e10, true]}}},
            {"id": "end", "type": "end"},
        ]));
        // The same graph with its config keys in another order (as Postgres `jsonb` returns them).
        let b = def(serde_json::json!([
            {"type": "start", "id": "start"},
            {"config": {"nested": {"a": [1, -2, 3.5e10, true], "z": null}, "prompt": "Say {{ input.message }}",
             "stop": ["\u{1}", "é"], "max_tokens": 300, "temperature": 0.25}, "type": "llm", "id": "llm"},
            {"type": "end", "id": "end"},
        ]));
        assert_eq!(graph_digest(&a), reference_digest(&a));
        assert_eq!(graph_digest(&a), graph_digest(&b));
        let edited = def(serde_json::json!([
            {"id": "start", "type": "start"},
            {"id": "llm", "type": "llm", "config": {"temperature": 0.5}},
            {"id": "end", "type": "end"},
        ]));
        assert_eq!(graph_digest(&edited), reference_digest(&edited));
        assert_ne!(graph_digest(&a), graph_digest(&edited));
        assert_eq!(graph_digest(&a).len(), 16);
    }
}
