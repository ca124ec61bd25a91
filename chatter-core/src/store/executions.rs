//! Executions (`workflow_executions`), node runs (`workflow_node_runs`), events
//! (`workflow_events`) and checkpoints (`workflow_checkpoints`).
//!
//! The unit of durability is the step ([`StepCommit`]): one node run, the state delta it
//! produced, its events and optionally a state snapshot, written in ONE transaction by
//! [`ExecutionStore::commit_step`]. [`ExecutionStore::commit_steps`] groups several concurrent
//! completions in one transaction.

use std::sync::Arc;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{Page, StoreResult, string_enum};

string_enum! {
    /// What an execution runs.
    ExecutionKind {
        /// A stored definition.
        Definition => "definition",
        /// A template, built in memory.
        Template => "template",
        /// An ad-hoc graph given with the request.
        Adhoc => "adhoc",
        /// A chat turn.
        Chat => "chat",
    }
}

string_enum! {
    /// Status of an execution. Transitions: `pending → running → completed|failed|cancelled|waiting`,
    /// `waiting → running|cancelled|failed`, `pending → cancelled|failed`.
    ExecutionStatus {
        /// Created, not started.
        Pending => "pending",
        /// Running.
        Running => "running",
        /// Paused by an interrupt, waiting to be resumed.
        Waiting => "waiting",
        /// Ended successfully.
        Completed => "completed",
        /// Ended with an error.
        Failed => "failed",
        /// Cancelled.
        Cancelled => "cancelled",
    }
}

impl ExecutionStatus {
    /// Whether the execution has ended.
    #[must_use]
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            ExecutionStatus::Completed | ExecutionStatus::Failed | ExecutionStatus::Cancelled
        )
    }

    /// The statuses an execution may move to `self` from.
    #[must_use]
    pub fn allowed_predecessors(self) -> &'static [ExecutionStatus] {
        use ExecutionStatus::{Cancelled, Completed, Failed, Pending, Running, Waiting};
        match self {
            Pending => &[],
            Running => &[Pending, Waiting],
            Waiting => &[Running],
            Completed => &[Running],
            Failed | Cancelled => &[Pending, Running, Waiting],
        }
    }

    /// Whether moving from `self` to `to` is allowed.
    #[must_use]
    pub fn can_transition_to(self, to: ExecutionStatus) -> bool {
        to.allowed_predecessors().contains(&self)
    }
}

string_enum! {
    /// Status of a node run.
    NodeRunStatus {
        /// Started.
        Running => "running",
        /// Ended successfully.
        Completed => "completed",
        /// Ended with an error.
        Failed => "failed",
        /// Not run: on a dead path.
        Skipped => "skipped",
        /// Stopped by cancellation.
        Cancelled => "cancelled",
        /// Paused by an interrupt.
        Waiting => "waiting",
    }
}

string_enum! {
    /// What a checkpoint row holds.
    CheckpointKind {
        /// The whole state.
        Snapshot => "snapshot",
        /// What one step changed.
        Delta => "delta",
    }
}

/// A stored execution.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExecutionRecord {
    /// ULID, the id returned to callers.
    pub id: String,
    /// The user who started it.
    pub owner_id: String,
    /// The definition run, if any.
    pub definition_id: Option<String>,
    /// The template run, if any.
    pub template_id: Option<String>,
    /// What kind of thing ran.
    pub kind: ExecutionKind,
    /// Current status.
    pub status: ExecutionStatus,
    /// The input object.
    pub input: Value,
    /// Merged template parameters / run options.
    pub params: Value,
    /// Final output (state excerpt), once ended.
    pub output: Option<Value>,
    /// Final response text, once ended.
    pub response: Option<String>,
    /// Error message of a failed execution.
    pub error: Option<String>,
    /// Prompt tokens used.
    pub prompt_tokens: i64,
    /// Completion tokens used.
    pub completion_tokens: i64,
    /// Total tokens used.
    pub total_tokens: i64,
    /// Cost in the model router's currency.
    pub cost: f64,
    /// The conversation (thread) it belongs to.
    pub conversation_id: Option<String>,
    /// Number of events recorded (the last event's `seq`).
    pub last_event_seq: i64,
    /// Number of steps committed.
    pub step_count: i64,
    /// Creation time (ms).
    pub created_at: i64,
    /// Last update time (ms).
    pub updated_at: i64,
    /// When it first ran (ms).
    pub started_at: Option<i64>,
    /// When it ended (ms).
    pub finished_at: Option<i64>,
    /// `finished_at - started_at` (ms), once ended.
    pub duration_ms: Option<i64>,
    /// Who holds the execution's lease (runs it), if anyone.
    #[serde(default)]
    pub lease_owner: Option<String>,
    /// Until when (ms) the lease holds; a `running` execution past it is resumable.
    #[serde(default)]
    pub lease_expires_at: Option<i64>,
    /// When (ms) a `waiting` execution must be woken (an approval's timeout).
    #[serde(default)]
    pub wake_at: Option<i64>,
    /// The graph run, for executions with no stored source (ad-hoc, chat). Shared: every run
    /// of one prepared workflow holds the same graph, which a store need not copy or write out
    /// again.
    #[serde(default)]
    pub graph: Option<Arc<Value>>,
}

/// What [`ExecutionStore::create_execution`] needs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NewExecution {
    /// Id to use; a new ULID when `None`.
    pub id: Option<String>,
    /// The user who starts it.
    pub owner_id: String,
    /// The definition run, if any.
    pub definition_id: Option<String>,
    /// The template run, if any.
    pub template_id: Option<String>,
    /// What kind of thing runs.
    pub kind: ExecutionKind,
    /// The input object.
    pub input: Value,
    /// Merged parameters / options.
    pub params: Value,
    /// The conversation it belongs to.
    pub conversation_id: Option<String>,
    /// The graph run, recorded when it has no stored source (ad-hoc, chat), so the execution
    /// can be resumed. Shared (see [`ExecutionRecord::graph`]).
    #[serde(default)]
    pub graph: Option<Arc<Value>>,
}

impl NewExecution {
    /// A new execution of `kind` for `owner_id` with `input`, everything else empty.
    pub fn new(owner_id: impl Into<String>, kind: ExecutionKind, input: Value) -> Self {
        NewExecution {
            id: None,
            owner_id: owner_id.into(),
            definition_id: None,
            template_id: None,
            kind,
            input,
            params: Value::Object(serde_json::Map::new()),
            conversation_id: None,
            graph: None,
        }
    }
}

/// A new execution to record `running` under a lease: the arguments of
/// [`ExecutionStore::start_execution`], kept to be written with the execution's first steps
/// ([`ExecutionStore::start_with_steps`], [`ExecutionStore::start_and_finish`]). In `sync`
/// mode the tracker starts an execution this way: nothing is written before the first node
/// that is not pure, and the row comes with that write.
#[derive(Debug, Clone, PartialEq)]
pub struct ExecutionStart {
    /// The execution (its id set).
    pub new: NewExecution,
    /// Who runs it.
    pub lease_owner: String,
    /// Until when (ms) the lease holds.
    pub lease_until: i64,
    /// When it started (ms).
    pub at: i64,
}

impl ExecutionStart {
    /// The row [`ExecutionStore::start_execution`] writes for it, with `created_at` at
    /// `now`: `running` under its lease, `null` input and parameters as `{}`.
    #[must_use]
    pub fn record(&self, id: &str, now: i64) -> ExecutionRecord {
        ExecutionRecord::new_row(
            id.to_owned(),
            self.new.clone(),
            ExecutionStatus::Running,
            Some((self.lease_owner.clone(), self.lease_until, self.at)),
            now,
        )
    }
}

impl ExecutionRecord {
    /// The row of `new` as a store inserts it with id `id` at `now`: `status`, with `lease`
    /// (owner, until, start time) or without; `null` input and parameters as `{}`; nothing
    /// run yet. The stores return it from an insert instead of reading the row back.
    #[must_use]
    pub fn new_row(
        id: String,
        new: NewExecution,
        status: ExecutionStatus,
        lease: Option<(String, i64, i64)>,
        now: i64,
    ) -> ExecutionRecord {
        let object = |v: Value| {
            if v.is_null() {
                Value::Object(serde_json::Map::new())
            } else {
                v
            }
        };
        let (lease_owner, lease_expires_at, started_at, updated_at) = match lease {
            Some((owner, until, at)) => (Some(owner), Some(until), Some(at), at),
            None => (None, None, None, now),
        };
        ExecutionRecord {
            id,
            owner_id: new.owner_id,
            definition_id: new.definition_id,
            template_id: new.template_id,
            kind: new.kind,
            status,
            input: object(new.input),
            params: object(new.params),
            output: None,
            response: None,
            error: None,
            prompt_tokens: 0,
            completion_tokens: 0,
            total_tokens: 0,
            cost: 0.0,
            conversation_id: new.conversation_id,
            last_event_seq: 0,
            step_count: 0,
            created_at: now,
            updated_at,
            started_at,
            finished_at: None,
            duration_ms: None,
            lease_owner,
            lease_expires_at,
            wake_at: None,
            graph: new.graph,
        }
    }
}

/// Which executions [`ExecutionStore::list_executions`] returns; fields combine with AND.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ExecutionFilter {
    /// Owner.
    pub owner_id: Option<String>,
    /// Definition.
    pub definition_id: Option<String>,
    /// Template.
    pub template_id: Option<String>,
    /// Status.
    pub status: Option<ExecutionStatus>,
    /// Conversation.
    pub conversation_id: Option<String>,
    /// Created at or after (ms).
    pub created_after: Option<i64>,
    /// Created before (ms).
    pub created_before: Option<i64>,
}

/// One run of one node.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeRunRecord {
    /// The execution.
    pub execution_id: String,
    /// The node.
    pub node_id: String,
    /// Loop iteration (0 outside loops).
    pub iteration: i64,
    /// Attempt, from 1.
    pub attempt: i64,
    /// Status.
    pub status: NodeRunStatus,
    /// Start time (ms).
    pub started_at: i64,
    /// End time (ms).
    pub finished_at: Option<i64>,
    /// `finished_at - started_at` (ms).
    pub duration_ms: Option<i64>,
    /// Prompt tokens.
    pub prompt_tokens: i64,
    /// Completion tokens.
    pub completion_tokens: i64,
    /// Cost.
    pub cost: f64,
    /// Error message.
    pub error: Option<String>,
    /// Output of the node.
    pub output: Option<Value>,
    /// The step it was committed in (`None` for an intent: started, not yet ended). Set by
    /// the store; ignored when writing.
    #[serde(default)]
    pub step: Option<i64>,
    /// How the node routed (`None`: by its edges); what a resume replays.
    #[serde(default)]
    pub route: Option<Value>,
    /// The class of its error (`timeout`, `tool`, ...), when it failed.
    #[serde(default)]
    pub error_class: Option<String>,
    /// `execution:node:iteration:attempt`, the key handed to its side effects.
    #[serde(default)]
    pub idempotency_key: Option<String>,
}

impl NodeRunRecord {
    /// A running node run started at `started_at`, everything else empty.
    pub fn started(
        execution_id: impl Into<String>,
        node_id: impl Into<String>,
        iteration: i64,
        attempt: i64,
        started_at: i64,
    ) -> Self {
        NodeRunRecord {
            execution_id: execution_id.into(),
            node_id: node_id.into(),
            iteration,
            attempt,
            status: NodeRunStatus::Running,
            started_at,
            finished_at: None,
            duration_ms: None,
            prompt_tokens: 0,
            completion_tokens: 0,
            cost: 0.0,
            error: None,
            output: None,
            step: None,
            route: None,
            error_class: None,
            idempotency_key: None,
        }
    }
}

/// An event to append; the store assigns its sequence number.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NewEvent {
    /// Time (ms).
    pub ts: i64,
    /// Type (`node_started`, `token`, ...).
    pub event_type: String,
    /// Payload.
    pub payload: Value,
}

impl NewEvent {
    /// An event of `event_type` at `ts` with `payload`.
    pub fn new(ts: i64, event_type: impl Into<String>, payload: Value) -> Self {
        NewEvent {
            ts,
            event_type: event_type.into(),
            payload,
        }
    }
}

/// A stored event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EventRecord {
    /// The execution.
    pub execution_id: String,
    /// Sequence number: contiguous from 1 within the execution.
    pub seq: i64,
    /// Time (ms).
    pub ts: i64,
    /// Type.
    pub event_type: String,
    /// Payload.
    pub payload: Value,
}

/// A stored checkpoint row.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CheckpointRecord {
    /// The execution.
    pub execution_id: String,
    /// Step number, from 1.
    pub step: i64,
    /// Snapshot or delta.
    pub kind: CheckpointKind,
    /// The node run that produced it (`node_id`).
    pub node_id: Option<String>,
    /// The state (snapshot) or what changed (delta).
    pub state: Value,
    /// Time (ms).
    pub created_at: i64,
}

/// What is needed to resume: the latest snapshot and the deltas after it, in step order.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct CheckpointState {
    /// The latest snapshot, if any.
    pub snapshot: Option<CheckpointRecord>,
    /// Deltas of the steps after the snapshot (all of them when there is none).
    pub deltas: Vec<CheckpointRecord>,
}

/// One step: a node run, its state delta, its events, and optionally a full snapshot, committed
/// together.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepCommit {
    /// The node run; inserted, or updated when (execution, node, iteration, attempt) exists.
    pub node_run: NodeRunRecord,
    /// What the step changed in the state (`Value::Null` for nothing: no delta row).
    pub state_delta: Value,
    /// Events of the step, in order.
    pub events: Vec<NewEvent>,
    /// A full state snapshot taken at this step.
    pub snapshot: Option<Value>,
}

/// What a committed step was assigned.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct StepReceipt {
    /// The step number (checkpoint `step`).
    pub step: i64,
    /// Sequence number of the step's first event (`last_seq + 1` when it has none).
    pub first_seq: i64,
    /// Sequence number of the step's last event.
    pub last_seq: i64,
}

/// How an execution ended, written by [`ExecutionStore::complete_execution`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExecutionOutcome {
    /// `completed`, `failed` or `cancelled`.
    pub status: ExecutionStatus,
    /// Final output.
    pub output: Option<Value>,
    /// Final response text.
    pub response: Option<String>,
    /// Error message.
    pub error: Option<String>,
    /// Prompt tokens.
    pub prompt_tokens: i64,
    /// Completion tokens.
    pub completion_tokens: i64,
    /// Cost.
    pub cost: f64,
    /// End time (ms).
    pub finished_at: i64,
    /// Final events (`execution_completed`, ...), appended in the same transaction.
    pub events: Vec<NewEvent>,
}

impl ExecutionOutcome {
    /// An execution that failed with `error` at `finished_at` (ms) before it produced
    /// anything: no output, no usage, no events.
    pub fn failed(error: &crate::Error, finished_at: i64) -> ExecutionOutcome {
        ExecutionOutcome {
            status: ExecutionStatus::Failed,
            output: None,
            response: None,
            error: Some(error.to_string()),
            prompt_tokens: 0,
            completion_tokens: 0,
            cost: 0.0,
            finished_at,
            events: Vec::new(),
        }
    }
}

/// Which ended executions [`ExecutionStore::apply_retention`] deletes. Rules combine: an ended
/// execution is deleted when any rule says so. Running and waiting executions are never deleted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct RetentionPolicy {
    /// Keep only the newest N ended executions of each conversation (thread).
    pub keep_last_per_conversation: Option<u32>,
    /// Delete ended executions that finished more than this many milliseconds ago.
    pub max_age_ms: Option<i64>,
}

impl RetentionPolicy {
    /// Checks the policy names a rule and its numbers make sense.
    ///
    /// # Errors
    ///
    /// `InvalidInput` for no rule or a negative age.
    pub fn check(&self) -> StoreResult<()> {
        if self.keep_last_per_conversation.is_none() && self.max_age_ms.is_none() {
            return Err(crate::Error::store(
                super::StoreErrorKind::InvalidInput,
                "a retention policy needs keep_last_per_conversation or max_age_ms",
            ));
        }
        if self.max_age_ms.is_some_and(|age| age < 0) {
            return Err(crate::Error::store(
                super::StoreErrorKind::InvalidInput,
                "retention max_age_ms must not be negative",
            ));
        }
        Ok(())
    }
}

/// The id of the execution `start` describes, which it must carry (the steps written with it
/// name it).
///
/// # Errors
///
/// `InvalidInput` when it has none.
pub fn start_id(start: &ExecutionStart) -> StoreResult<&str> {
    start.new.id.as_deref().ok_or_else(|| {
        crate::Error::store(
            super::StoreErrorKind::InvalidInput,
            "an execution started with its first steps needs its id",
        )
    })
}

/// Writes the row `start` describes with [`ExecutionStore::start_execution`] (the defaults of
/// the combined writes).
async fn start_row<S: ExecutionStore + ?Sized>(
    store: &S,
    start: &ExecutionStart,
) -> StoreResult<ExecutionRecord> {
    store
        .start_execution(
            start.new.clone(),
            &start.lease_owner,
            start.lease_until,
            start.at,
        )
        .await
}

/// Storage of executions and everything recorded while they run.
#[async_trait]
pub trait ExecutionStore: Send + Sync {
    /// Records a new execution as `pending`.
    ///
    /// # Errors
    ///
    /// `InvalidInput` for an empty owner, `PayloadTooLarge`, `Conflict` for a duplicate id,
    /// `NotFound` when the definition/template/conversation does not exist.
    async fn create_execution(&self, new: NewExecution) -> StoreResult<ExecutionRecord>;

    /// Records a new execution already `running` (started at `at`, ms) under the lease of
    /// `lease_owner` until `lease_until`: what [`ExecutionStore::create_execution`],
    /// [`ExecutionStore::acquire_lease`] and [`ExecutionStore::set_execution_status`] to
    /// `running` do in turn, so a run starts with one write. The SQLite and Postgres stores
    /// write it in one statement (all or nothing); this default makes the three calls and,
    /// when a later one fails, marks the new row failed.
    ///
    /// # Errors
    ///
    /// As [`ExecutionStore::create_execution`]; `InvalidInput` for an empty lease owner.
    async fn start_execution(
        &self,
        new: NewExecution,
        lease_owner: &str,
        lease_until: i64,
        at: i64,
    ) -> StoreResult<ExecutionRecord> {
        let record = self.create_execution(new).await?;
        let started = match self
            .acquire_lease(&record.id, lease_owner, lease_until, at)
            .await
        {
            Ok(_) => {
                self.set_execution_status(&record.id, ExecutionStatus::Running, at)
                    .await
            }
            Err(error) => Err(error),
        };
        if let Err(error) = &started {
            let _ = self
                .complete_execution(&record.id, ExecutionOutcome::failed(error, at))
                .await;
        }
        started
    }

    /// Records the execution `start` describes (as [`ExecutionStore::start_execution`]),
    /// then commits `steps` (possibly none, all of that execution) and records `intent` when
    /// given, in ONE transaction: all or nothing. In `sync` mode the engine writes an
    /// execution's row with its first write (the steps of the pure nodes that ran first, and
    /// the intent of the first node that acts on the outside world).
    ///
    /// The default makes the calls in turn; the backends override it.
    ///
    /// # Errors
    ///
    /// As [`ExecutionStore::start_execution`], [`ExecutionStore::commit_steps`] and
    /// [`ExecutionStore::record_intent`]; `InvalidInput` for a step of another execution.
    async fn start_with_steps(
        &self,
        start: &ExecutionStart,
        steps: &[StepCommit],
        intent: Option<&NodeRunRecord>,
    ) -> StoreResult<Vec<StepReceipt>> {
        let id = start_id(start)?;
        super::check_steps_of(id, steps)?;
        start_row(self, start).await?;
        match intent {
            Some(intent) => self.commit_steps_with_intent(steps, intent).await,
            None => self.commit_steps(steps).await,
        }
    }

    /// Records the execution `start` describes, commits its `steps` and ends it with
    /// `outcome`, in ONE transaction: an execution of pure nodes only (or one that ended
    /// before its first other node) is written once, when it ends.
    ///
    /// The default makes the calls in turn; the backends override it.
    ///
    /// # Errors
    ///
    /// As [`ExecutionStore::start_execution`] and [`ExecutionStore::finish_execution`].
    async fn start_and_finish(
        &self,
        start: &ExecutionStart,
        steps: &[StepCommit],
        outcome: ExecutionOutcome,
    ) -> StoreResult<ExecutionRecord> {
        let id = start_id(start)?;
        super::check_steps_of(id, steps)?;
        start_row(self, start).await?;
        self.finish_execution(id, steps, outcome).await
    }

    /// Reads an execution.
    ///
    /// # Errors
    ///
    /// Database failures.
    async fn get_execution(&self, id: &str) -> StoreResult<Option<ExecutionRecord>>;

    /// Lists executions, newest first (`created_at` desc, then id desc).
    ///
    /// # Errors
    ///
    /// Database failures.
    async fn list_executions(
        &self,
        filter: &ExecutionFilter,
        page: Page,
    ) -> StoreResult<Vec<ExecutionRecord>>;

    /// Moves an execution to a non-terminal status (`running`, `waiting`) at `at` (ms); the first
    /// move to `running` sets `started_at`. Use [`ExecutionStore::complete_execution`] to end it.
    ///
    /// # Errors
    ///
    /// `NotFound`; `Conflict` when the transition is not allowed (see [`ExecutionStatus`]);
    /// `InvalidInput` for a terminal target status.
    async fn set_execution_status(
        &self,
        id: &str,
        status: ExecutionStatus,
        at: i64,
    ) -> StoreResult<ExecutionRecord>;

    /// Ends an execution: status, output, usage, error, final events, and (for template
    /// executions) the template's analytics, in one transaction. Its lease is released
    /// (`lease_owner` and `lease_expires_at` cleared).
    ///
    /// # Errors
    ///
    /// `NotFound`; `Conflict` when it already ended; `InvalidInput` for a non-terminal status.
    async fn complete_execution(
        &self,
        id: &str,
        outcome: ExecutionOutcome,
    ) -> StoreResult<ExecutionRecord>;

    /// Deletes an execution with its node runs, events and checkpoints; returns whether it existed.
    ///
    /// # Errors
    ///
    /// Database failures.
    async fn delete_execution(&self, id: &str) -> StoreResult<bool>;

    /// Commits several steps of one or more executions in ONE transaction: either all are
    /// written or none.
    ///
    /// # Errors
    ///
    /// `NotFound` for an unknown execution, `Conflict` when it has ended, `PayloadTooLarge`
    /// (checked before the transaction starts).
    async fn commit_steps(&self, steps: &[StepCommit]) -> StoreResult<Vec<StepReceipt>>;

    /// Commits an execution's last steps (possibly none, all of execution `id`) and ends it
    /// with `outcome`: what [`ExecutionStore::commit_steps`] then
    /// [`ExecutionStore::complete_execution`] do, in ONE transaction, so either both are
    /// written or neither. The engine ends a durable execution with it: in `sync` mode the
    /// final step is committed with the outcome, not in a transaction of its own just before.
    ///
    /// The default makes the two calls (two transactions); the backends override it.
    ///
    /// # Errors
    ///
    /// As [`ExecutionStore::commit_steps`] and [`ExecutionStore::complete_execution`];
    /// `InvalidInput` for a step of another execution.
    async fn finish_execution(
        &self,
        id: &str,
        steps: &[StepCommit],
        outcome: ExecutionOutcome,
    ) -> StoreResult<ExecutionRecord> {
        super::check_steps_of(id, steps)?;
        if !steps.is_empty() {
            self.commit_steps(steps).await?;
        }
        self.complete_execution(id, outcome).await
    }

    /// Commits one step in one transaction.
    ///
    /// # Errors
    ///
    /// As [`ExecutionStore::commit_steps`].
    async fn commit_step(&self, step: &StepCommit) -> StoreResult<StepReceipt> {
        let receipts = self.commit_steps(std::slice::from_ref(step)).await?;
        receipts.into_iter().next().ok_or_else(|| {
            crate::Error::store(
                super::StoreErrorKind::Backend,
                "commit_steps returned no receipt",
            )
        })
    }

    /// Appends events outside a step (tokens, ...); returns their sequence numbers.
    ///
    /// # Errors
    ///
    /// `NotFound`, `PayloadTooLarge`.
    async fn append_events(&self, execution_id: &str, events: &[NewEvent])
    -> StoreResult<Vec<i64>>;

    /// Events with `seq > after_seq`, in order, at most `limit`.
    ///
    /// # Errors
    ///
    /// Database failures.
    async fn list_events(
        &self,
        execution_id: &str,
        after_seq: i64,
        limit: u32,
    ) -> StoreResult<Vec<EventRecord>>;

    /// Node runs of an execution by start time, then by the step they were committed in (runs
    /// started in the same millisecond keep the order they ran in; intents, with no step yet,
    /// last), then node id, iteration, attempt.
    ///
    /// # Errors
    ///
    /// Database failures.
    async fn list_node_runs(&self, execution_id: &str) -> StoreResult<Vec<NodeRunRecord>>;

    /// Checkpoint rows of an execution in step order (snapshot before delta at the same step).
    ///
    /// # Errors
    ///
    /// Database failures.
    async fn list_checkpoints(&self, execution_id: &str) -> StoreResult<Vec<CheckpointRecord>>;

    /// The latest snapshot and the deltas after it.
    ///
    /// # Errors
    ///
    /// Database failures.
    async fn load_checkpoint(&self, execution_id: &str) -> StoreResult<CheckpointState> {
        let rows = self.list_checkpoints(execution_id).await?;
        let mut state = CheckpointState::default();
        for row in rows {
            match row.kind {
                CheckpointKind::Snapshot => {
                    state.deltas.clear();
                    state.snapshot = Some(row);
                }
                CheckpointKind::Delta => {
                    // A delta at the snapshot's own step is already inside the snapshot.
                    if state.snapshot.as_ref().is_none_or(|s| row.step > s.step) {
                        state.deltas.push(row);
                    }
                }
            }
        }
        Ok(state)
    }

    /// Records an intent: node run `run` is about to call the outside world (a model, a tool,
    /// an HTTP endpoint) with its idempotency key. Written as a `running` node run outside any
    /// step; a later step with the same (node, iteration, attempt) replaces it. An existing
    /// ended run is left alone.
    ///
    /// # Errors
    ///
    /// `NotFound` for an unknown execution, `Conflict` when it has ended.
    async fn record_intent(&self, run: &NodeRunRecord) -> StoreResult<()>;

    /// Commits `steps` (possibly none), then records `intent`
    /// ([`ExecutionStore::record_intent`]), in ONE transaction: either both are written or
    /// neither. In `sync` mode the engine writes the steps staged before a node that acts on
    /// the outside world together with that node's intent, in one write instead of two.
    ///
    /// The default makes the two calls (two transactions, the steps first); the backends
    /// override it.
    ///
    /// # Errors
    ///
    /// As [`ExecutionStore::commit_steps`] and [`ExecutionStore::record_intent`].
    async fn commit_steps_with_intent(
        &self,
        steps: &[StepCommit],
        intent: &NodeRunRecord,
    ) -> StoreResult<Vec<StepReceipt>> {
        let receipts = self.commit_steps(steps).await?;
        self.record_intent(intent).await?;
        Ok(receipts)
    }

    /// Takes (or renews) the lease of a non-terminal execution for `owner` until `until` (ms):
    /// succeeds when nobody holds it, `owner` holds it, or the holder's lease expired before
    /// `now`. Returns whether `owner` holds it now.
    ///
    /// # Errors
    ///
    /// `NotFound` for an unknown execution.
    async fn acquire_lease(&self, id: &str, owner: &str, until: i64, now: i64)
    -> StoreResult<bool>;

    /// Gives up `owner`'s lease (nothing happens when someone else holds it).
    ///
    /// # Errors
    ///
    /// Database failures.
    async fn release_lease(&self, id: &str, owner: &str) -> StoreResult<()>;

    /// Sets (or clears) when a `waiting` execution must be woken.
    ///
    /// # Errors
    ///
    /// `NotFound` for an unknown execution.
    async fn set_wake_at(&self, id: &str, wake_at: Option<i64>) -> StoreResult<()>;

    /// Executions due for resumption at `now`, oldest first, at most `limit`: `running` ones
    /// whose lease expired (or that have none), and `waiting` ones whose wake-up time passed.
    ///
    /// # Errors
    ///
    /// Database failures.
    async fn list_resumable(&self, now: i64, limit: u32) -> StoreResult<Vec<ExecutionRecord>>;

    /// Retention: deletes ended executions (with their node runs, events and checkpoints) by
    /// `policy` at `now`; returns how many were deleted.
    ///
    /// # Errors
    ///
    /// `InvalidInput` for a policy that keeps nothing and names no rule; database failures.
    async fn apply_retention(&self, policy: &RetentionPolicy, now: i64) -> StoreResult<u64>;

    /// Compaction: deletes checkpoint rows older than the latest snapshot; returns how many.
    ///
    /// # Errors
    ///
    /// Database failures.
    async fn compact_checkpoints(&self, execution_id: &str) -> StoreResult<u64>;
}
