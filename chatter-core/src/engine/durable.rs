//! Durable execution (DESIGN §8): the engine commits each step to an [`ExecutionStore`] while it
//! runs, and replays the committed steps of an execution to resume it.
//!
//! A *step* is one node run's end (completed, failed, skipped, cancelled or waiting) with its
//! state delta and the events since the previous step, written in one transaction by
//! [`ExecutionStore::commit_steps`]. Completions that happen together share a transaction. How
//! soon a step is written is the [`DurabilityMode`].
//!
//! Before a node that calls the outside world (see [`crate::Node::side_effects`]) runs, the
//! engine records its *intent* (a `running` node run with its idempotency key
//! `execution:node:iteration:attempt`) in `sync` mode.
//!
//! Resuming replays the committed completions in their commit order through the scheduler
//! without running their nodes (their recorded deltas and routes are applied, their events are
//! not emitted again), so every bookkeeping decision (joins, loops, iterations, attempts) is
//! the one the original run took. Node runs that had started but not ended are then run again
//! with the same idempotency key, and the execution continues live, its events numbered after
//! the last stored one.

use std::collections::VecDeque;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::node::Route;
use crate::error::{Error, Result};
use crate::event::{Event, EventKind};
use crate::state::StateDelta;
use crate::store::{
    ExecutionRecord, ExecutionStart, ExecutionStore, NewEvent, NodeRunRecord, StepCommit,
    StoreErrorKind,
};

/// How soon the engine writes each step (DESIGN §8).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DurabilityMode {
    /// Each step is committed before the next node that is not [pure](crate::engine::Node::pure)
    /// starts, with that node's intent when it acts on the outside world (completions that end
    /// together share one transaction; a pure node's step rides with the next write). A crash
    /// loses at most the node runs in flight, which a resume runs again with the same
    /// idempotency key, and pure node runs, which it runs again at no cost.
    #[default]
    Sync,
    /// Steps are handed to a writer task and committed in batches while the execution goes on;
    /// the execution's end waits for them. A crash may lose the last steps.
    Async,
    /// Everything is written when the execution ends (or pauses), in one transaction. A crash
    /// loses the execution in flight.
    Exit,
}

impl DurabilityMode {
    /// The snake_case name.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            DurabilityMode::Sync => "sync",
            DurabilityMode::Async => "async",
            DurabilityMode::Exit => "exit",
        }
    }

    /// Parses `sync`, `async` or `exit`.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] for another name.
    pub fn parse(name: &str) -> Result<DurabilityMode> {
        match name {
            "sync" => Ok(DurabilityMode::Sync),
            "async" => Ok(DurabilityMode::Async),
            "exit" => Ok(DurabilityMode::Exit),
            other => Err(Error::Config {
                message: format!(
                    "unknown durability mode `{other}` (expected sync, async or exit)"
                ),
            }),
        }
    }
}

impl std::fmt::Display for DurabilityMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where and how an execution is made durable ([`super::RunOptions::durability`]).
///
/// The execution's row must exist in the store and be `running` (the
/// [`crate::tracker::WorkflowTracker`] creates it; in `sync` mode it hands the row over to be
/// written with the execution's first write instead): the engine writes the steps, and the
/// outcome when the execution ends (or the `waiting` status when it pauses).
#[derive(Clone)]
pub struct Durability {
    /// The store written to.
    pub store: Arc<dyn ExecutionStore>,
    /// How soon steps are written.
    pub mode: DurabilityMode,
    /// A full state snapshot is written every this many steps (0: never), so reading the
    /// state at a step applies at most this many deltas; skipped when the message list is
    /// most of the state (the deltas hold every message already, see `docs/durability.md`).
    pub snapshot_every: u32,
    /// Where the first storage failure is left for the host (the result carries its text).
    pub(crate) failure: Arc<std::sync::Mutex<Option<Error>>>,
    /// Where the ended execution's row, as the store wrote it, is left for the host.
    pub(crate) ended: Arc<std::sync::Mutex<Option<ExecutionRecord>>>,
    /// The execution's row, when it is written with the execution's first write instead of
    /// before the run (`sync` mode; the tracker sets it).
    pub(crate) start: Option<Arc<ExecutionStart>>,
    /// Set once that row is written.
    pub(crate) started: Arc<std::sync::atomic::AtomicBool>,
}

impl Durability {
    /// Takes the first storage failure of the execution, once it has ended.
    pub(crate) fn take_failure(&self) -> Option<Error> {
        self.failure
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take()
    }

    /// Whether the execution's row was to be written with its first write and never was
    /// (that write failed, or nothing was written): the execution does not exist.
    pub(crate) fn never_started(&self) -> bool {
        self.start.is_some() && !self.started.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Takes the execution's row as its end wrote it (none when it paused or was not
    /// fully recorded).
    pub(crate) fn take_ended(&self) -> Option<ExecutionRecord> {
        self.ended
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take()
    }
}

impl std::fmt::Debug for Durability {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Durability")
            .field("mode", &self.mode)
            .field("snapshot_every", &self.snapshot_every)
            .finish_non_exhaustive()
    }
}

impl Durability {
    /// The default number of steps between snapshots.
    pub const DEFAULT_SNAPSHOT_EVERY: u32 = 100;

    /// Durability in `store` with `mode` and the default snapshot interval.
    pub fn new(store: Arc<dyn ExecutionStore>, mode: DurabilityMode) -> Durability {
        Durability {
            store,
            mode,
            snapshot_every: Self::DEFAULT_SNAPSHOT_EVERY,
            failure: Arc::default(),
            ended: Arc::default(),
            start: None,
            started: Arc::default(),
        }
    }
}

/// Counts the bytes written to it.
#[derive(Default)]
struct ByteCount(usize);

impl std::io::Write for ByteCount {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0 += buf.len();
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The length of `value` as JSON text.
fn json_len<T: serde::Serialize + ?Sized>(value: &T) -> usize {
    let mut count = ByteCount::default();
    // Serialising into a counter cannot fail on I/O; a value that cannot be serialised
    // counts what was written before it failed.
    let _ = serde_json::to_writer(&mut count, value);
    count.0
}

/// Whether a due snapshot is written. Not when the message list is most of the state (more
/// than half its JSON): messages are only ever appended by deltas (or replaced by one), so
/// the deltas hold them already, and a snapshot would copy the whole chat again every
/// `snapshot_every` steps. The steps listing rebuilds such states from the deltas.
pub(crate) fn snapshot_worth_writing(state: &crate::state::State) -> bool {
    json_len(state.messages()).saturating_mul(2) <= json_len(state)
}

/// One committed node run end, as a resume replays it.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct RecordedRun {
    pub(crate) node_id: String,
    pub(crate) iteration: u32,
    pub(crate) attempt: u32,
    pub(crate) started_at_ms: i64,
    pub(crate) duration_ms: u64,
    pub(crate) outcome: RecordedOutcome,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum RecordedOutcome {
    Completed {
        delta: Box<StateDelta>,
        route: Route,
        output: Value,
    },
    Failed {
        class: String,
        message: String,
    },
}

/// What a resumed (or forked) execution replays before it goes on live.
#[derive(Debug, Clone, Default)]
pub(crate) struct Replay {
    /// Completions to apply, in their original order.
    pub(crate) runs: VecDeque<RecordedRun>,
    /// The stored events (the log continues after them); empty for a fork.
    pub(crate) events: Vec<Event>,
    /// Whether replayed runs are recorded again as steps of this execution (a fork copies
    /// them into its own record) rather than silently applied (a resume).
    pub(crate) record: bool,
    /// Variables edited by a fork, applied once this many runs have been replayed.
    pub(crate) edits: Option<(usize, StateDelta)>,
    /// Input for a waiting node (an approval's decision), by node id.
    pub(crate) resume_inputs: Vec<(String, Value)>,
}

/// A route as stored on a node run (`None`: by the edges).
pub(crate) fn route_to_json(route: &Route) -> Option<Value> {
    match route {
        Route::Edges => None,
        Route::Branch(name) => Some(json!({ "branch": name })),
        Route::Stop { error } => Some(json!({ "stop": error })),
        Route::RetryFailed => Some(json!("retry_failed")),
        Route::Wait => Some(json!("wait")),
    }
}

/// A stored route back.
///
/// # Errors
///
/// [`Error::Store`] (`invalid_input`) for a value that is no route.
pub(crate) fn route_from_json(value: Option<&Value>) -> Result<Route> {
    let Some(value) = value else {
        return Ok(Route::Edges);
    };
    match value {
        Value::Null => Ok(Route::Edges),
        Value::String(s) if s == "retry_failed" => Ok(Route::RetryFailed),
        Value::String(s) if s == "wait" => Ok(Route::Wait),
        Value::Object(map) => {
            if let Some(Value::String(branch)) = map.get("branch") {
                return Ok(Route::Branch(branch.clone()));
            }
            if let Some(stop) = map.get("stop") {
                return Ok(Route::Stop {
                    error: stop.as_str().map(str::to_owned),
                });
            }
            Err(bad_route(value))
        }
        _ => Err(bad_route(value)),
    }
}

fn bad_route(value: &Value) -> Error {
    Error::store(
        StoreErrorKind::InvalidInput,
        format!("stored node route {value} is not a route"),
    )
}

/// An engine event as stored: its type and its payload (the event without the envelope).
///
/// The events of every step (a node run's start and end, a tool call's) are built here
/// directly; the others go through `serde`. Both give the same payload, keys in the same order
/// (`serde`'s, with the `type` tag taken out by `swap_remove`: the last field comes first).
pub(crate) fn new_event(event: &Event) -> NewEvent {
    let payload = fast_payload(&event.kind).unwrap_or_else(|| serde_payload(&event.kind));
    NewEvent::new(event.ts_ms, event.kind.type_name(), payload)
}

/// A step's delta as stored: what `serde` makes of it (`Value::Null` for an empty delta).
pub(crate) fn delta_value(delta: &StateDelta) -> Value {
    if delta.is_empty() {
        return Value::Null;
    }
    fast_delta(delta).unwrap_or_else(|| serde_json::to_value(delta).unwrap_or(Value::Null))
}

/// The stored delta of the fields nodes usually change (messages, set and append variables,
/// usage, tool calls, response), built without `serde`'s serializer; `None` for any other.
fn fast_delta(delta: &StateDelta) -> Option<Value> {
    use crate::object::{self, Keys};
    use crate::state::VariableOp;
    static OP: Keys<2> = Keys::new(["op", "value"]);
    let StateDelta {
        messages,
        replace_messages: None,
        variables,
        context: None,
        usage,
        errors,
        clear_errors: false,
        metadata,
        tool_calls,
        loops,
        response,
    } = delta
    else {
        return None;
    };
    if !errors.is_empty() || !metadata.is_empty() || !loops.is_empty() {
        return None;
    }
    let mut map = serde_json::Map::new();
    if !messages.is_empty() {
        let messages = messages.iter().map(object::message).collect();
        map.insert("messages".to_owned(), Value::Array(messages));
    }
    if !variables.is_empty() {
        let mut changes = Vec::with_capacity(variables.len());
        for (name, op) in variables {
            let op = match op {
                VariableOp::Set(v) => OP.object([Value::from("set"), v.clone()]),
                VariableOp::Append(v) => OP.object([Value::from("append"), v.clone()]),
                _ => return None,
            };
            changes.push(Value::Array(vec![Value::String(name.clone()), op]));
        }
        map.insert("variables".to_owned(), Value::Array(changes));
    }
    if let Some(usage) = usage {
        map.insert("usage".to_owned(), object::usage(usage));
    }
    if *tool_calls != 0 {
        map.insert("tool_calls".to_owned(), Value::from(*tool_calls));
    }
    if let Some(response) = response {
        map.insert("response".to_owned(), Value::String(response.clone()));
    }
    Some(Value::Object(map))
}

/// The payload of `kind` through `serde`.
fn serde_payload(kind: &EventKind) -> Value {
    let mut payload = serde_json::to_value(kind).unwrap_or(Value::Null);
    if let Value::Object(map) = &mut payload {
        map.remove("type");
    }
    payload
}

/// The payload of the events every step emits, built without `serde`'s serializer (a third of
/// the instructions of staging a step); `None` for the other kinds.
fn fast_payload(kind: &EventKind) -> Option<Value> {
    use crate::object::Keys;
    static STARTED: Keys<4> = Keys::new(["attempt", "node_id", "kind", "iteration"]);
    static COMPLETED: Keys<4> = Keys::new(["output", "node_id", "iteration", "duration_ms"]);
    static TOKEN: Keys<2> = Keys::new(["text", "node_id"]);
    static CALL_STARTED: Keys<4> = Keys::new(["arguments", "node_id", "call_id", "tool"]);
    static CALL_FINISHED: Keys<6> =
        Keys::new(["duration_ms", "node_id", "call_id", "tool", "ok", "result"]);
    let text = |s: &String| Value::String(s.clone());
    Some(match kind {
        EventKind::NodeStarted {
            node_id,
            kind,
            iteration,
            attempt,
        } => STARTED.object([
            Value::from(*attempt),
            text(node_id),
            text(kind),
            Value::from(*iteration),
        ]),
        EventKind::NodeCompleted {
            node_id,
            iteration,
            duration_ms,
            output,
        } => COMPLETED.object([
            output.clone(),
            text(node_id),
            Value::from(*iteration),
            Value::from(*duration_ms),
        ]),
        EventKind::Token { node_id, text: t } => TOKEN.object([text(t), text(node_id)]),
        EventKind::ToolCallStarted {
            node_id,
            call_id,
            tool,
            arguments,
        } => CALL_STARTED.object([arguments.clone(), text(node_id), text(call_id), text(tool)]),
        EventKind::ToolCallFinished {
            node_id,
            call_id,
            tool,
            ok,
            result,
            duration_ms,
        } => CALL_FINISHED.object([
            Value::from(*duration_ms),
            text(node_id),
            text(call_id),
            text(tool),
            Value::Bool(*ok),
            result.clone(),
        ]),
        _ => return None,
    })
}

/// A stored event back into an engine event.
///
/// # Errors
///
/// [`Error::Store`] (`invalid_input`) for an event type or payload the engine does not know.
pub fn event_from_record(record: &crate::store::EventRecord) -> Result<Event> {
    let mut payload = record.payload.clone();
    match &mut payload {
        Value::Object(map) => {
            map.insert("type".into(), Value::String(record.event_type.clone()));
        }
        Value::Null => {
            payload = json!({ "type": record.event_type });
        }
        _ => {
            return Err(Error::store(
                StoreErrorKind::InvalidInput,
                format!(
                    "stored event {} has a payload that is not an object",
                    record.seq
                ),
            ));
        }
    }
    let kind: EventKind = serde_json::from_value(payload).map_err(|e| {
        Error::store(
            StoreErrorKind::InvalidInput,
            format!(
                "stored event {} (`{}`) is not an engine event: {e}",
                record.seq, record.event_type
            ),
        )
    })?;
    Ok(Event {
        execution_id: record.execution_id.clone(),
        seq: u64::try_from(record.seq).unwrap_or(0),
        ts_ms: record.ts,
        kind,
    })
}

/// Turns the stored node runs and delta checkpoints of an execution into the runs a resume
/// replays: the completed and failed ones, in step order, up to `last_step` when given.
///
/// # Errors
///
/// [`Error::Store`] (`invalid_input`) for a stored delta or route the engine cannot read.
pub(crate) fn recorded_runs(
    mut runs: Vec<NodeRunRecord>,
    deltas: &std::collections::HashMap<i64, Value>,
    last_step: Option<i64>,
) -> Result<VecDeque<RecordedRun>> {
    runs.retain(|r| {
        r.step
            .is_some_and(|s| last_step.is_none_or(|last| s <= last))
            && matches!(
                r.status,
                crate::store::NodeRunStatus::Completed | crate::store::NodeRunStatus::Failed
            )
    });
    runs.sort_by_key(|r| r.step);
    let mut out = VecDeque::with_capacity(runs.len());
    for run in runs {
        let step = run.step.unwrap_or_default();
        let outcome = match run.status {
            crate::store::NodeRunStatus::Completed => {
                let delta = match deltas.get(&step) {
                    Some(value) => serde_json::from_value(value.clone()).map_err(|e| {
                        Error::store(
                            StoreErrorKind::InvalidInput,
                            format!("the stored delta of step {step} is not a state delta: {e}"),
                        )
                    })?,
                    None => StateDelta::default(),
                };
                RecordedOutcome::Completed {
                    delta: Box::new(delta),
                    route: route_from_json(run.route.as_ref())?,
                    output: run.output.clone().unwrap_or(Value::Null),
                }
            }
            _ => RecordedOutcome::Failed {
                class: run.error_class.clone().unwrap_or_else(|| "internal".into()),
                message: run.error.clone().unwrap_or_default(),
            },
        };
        out.push_back(RecordedRun {
            node_id: run.node_id,
            iteration: u32::try_from(run.iteration).unwrap_or(0),
            attempt: u32::try_from(run.attempt).unwrap_or(1),
            started_at_ms: run.started_at,
            duration_ms: u64::try_from(run.duration_ms.unwrap_or(0)).unwrap_or(0),
            outcome,
        });
    }
    Ok(out)
}

/// The async mode's writer task and the channel feeding it.
type BackgroundWriter = (
    tokio::sync::mpsc::UnboundedSender<Vec<StepCommit>>,
    tokio::task::JoinHandle<Result<()>>,
);

/// Writes the steps of one execution as its [`DurabilityMode`] says.
pub(crate) struct StepWriter {
    pub(crate) store: Arc<dyn ExecutionStore>,
    pub(crate) mode: DurabilityMode,
    pub(crate) snapshot_every: u32,
    /// Steps staged and not yet handed to the store.
    pub(crate) staged: Vec<StepCommit>,
    /// Steps written or handed over so far (for the snapshot interval).
    pub(crate) steps: u64,
    /// The async mode's writer task.
    background: Option<BackgroundWriter>,
    /// The first failure; no more steps are written after it.
    pub(crate) failed: Option<Error>,
    /// Where the first failure is handed to the host.
    failure_slot: Arc<std::sync::Mutex<Option<Error>>>,
    /// Where the ended execution's row is handed to the host.
    ended_slot: Arc<std::sync::Mutex<Option<ExecutionRecord>>>,
    /// The execution's row, until the first write (which writes it) is made.
    pub(crate) start: Option<Arc<ExecutionStart>>,
    /// Set once it is written.
    started: Arc<std::sync::atomic::AtomicBool>,
}

impl StepWriter {
    pub(crate) fn new(durability: Durability) -> StepWriter {
        StepWriter {
            store: durability.store.clone(),
            mode: durability.mode,
            snapshot_every: durability.snapshot_every,
            staged: Vec::new(),
            steps: 0,
            background: None,
            failed: None,
            failure_slot: durability.failure,
            ended_slot: durability.ended,
            start: durability.start,
            started: durability.started,
        }
    }

    /// Hands the first failure to the host; returns its text.
    pub(crate) fn report(&mut self, error: Error) -> String {
        let text = error.to_string();
        let mut slot = self
            .failure_slot
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        slot.get_or_insert(error);
        text
    }

    /// Hands the ended execution's row, as the store wrote it, to the host.
    pub(crate) fn ended(&self, record: ExecutionRecord) {
        *self
            .ended_slot
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(record);
    }

    /// Whether a snapshot is due with the next step.
    pub(crate) fn snapshot_due(&mut self) -> bool {
        self.steps += 1;
        self.snapshot_every > 0 && self.steps.is_multiple_of(u64::from(self.snapshot_every))
    }

    /// `sync` mode: writes the staged steps and then `intent` in one transaction
    /// ([`crate::store::ExecutionStore::commit_steps_with_intent`]), before the node of
    /// `intent` starts. Nothing is written once a write failed.
    pub(crate) async fn write_with_intent(&mut self, intent: &crate::store::NodeRunRecord) {
        if self.failed.is_some() {
            return;
        }
        let steps = std::mem::take(&mut self.staged);
        crate::failpoint::hit("engine.before_intent");
        let written = match self.start.take() {
            Some(start) => self
                .store
                .start_with_steps(&start, &steps, Some(intent))
                .await
                .map(|_| self.mark_started()),
            None => self
                .store
                .commit_steps_with_intent(&steps, intent)
                .await
                .map(|_| ()),
        };
        if let Err(error) = written {
            self.failed = Some(error);
        }
        crate::failpoint::hit("engine.after_intent");
    }

    /// Notes that the execution's row is written.
    fn mark_started(&self) {
        self.started
            .store(true, std::sync::atomic::Ordering::SeqCst);
    }

    /// `sync` mode: ends the execution whose row was never written (pure nodes only ran):
    /// the row, its steps and its end in one write
    /// ([`crate::store::ExecutionStore::start_and_finish`]); else the steps and the end
    /// ([`crate::store::ExecutionStore::finish_execution`]).
    pub(crate) async fn write_end(
        &mut self,
        id: &str,
        steps: &[StepCommit],
        outcome: crate::store::ExecutionOutcome,
    ) -> Result<ExecutionRecord> {
        match self.start.take() {
            Some(start) => {
                let record = self.store.start_and_finish(&start, steps, outcome).await?;
                self.mark_started();
                Ok(record)
            }
            None => self.store.finish_execution(id, steps, outcome).await,
        }
    }

    /// Writes (sync), hands over (async) or keeps (exit) the staged steps.
    pub(crate) async fn flush(&mut self, at_end: bool) {
        if (self.staged.is_empty() && self.start.is_none()) || self.failed.is_some() {
            return;
        }
        match self.mode {
            DurabilityMode::Sync => {
                let steps = std::mem::take(&mut self.staged);
                crate::failpoint::hit("engine.before_commit_steps");
                let written = match self.start.take() {
                    Some(start) => self
                        .store
                        .start_with_steps(&start, &steps, None)
                        .await
                        .map(|_| self.mark_started()),
                    None => self.store.commit_steps(&steps).await.map(|_| ()),
                };
                if let Err(error) = written {
                    self.failed = Some(error);
                }
                crate::failpoint::hit("engine.after_commit_steps");
            }
            DurabilityMode::Async => {
                let steps = std::mem::take(&mut self.staged);
                let (sender, _) = self.background.get_or_insert_with(|| {
                    let (sender, receiver) = tokio::sync::mpsc::unbounded_channel();
                    let task = tokio::spawn(write_in_background(self.store.clone(), receiver));
                    (sender, task)
                });
                if sender.send(steps).is_err() {
                    self.failed = Some(Error::Internal {
                        message: "the step writer task has stopped".into(),
                    });
                }
            }
            DurabilityMode::Exit => {
                if at_end {
                    let steps = std::mem::take(&mut self.staged);
                    if let Err(error) = self.store.commit_steps(&steps).await {
                        self.failed = Some(error);
                    }
                }
            }
        }
    }

    /// Flushes everything and waits for the async writer; returns the first failure.
    pub(crate) async fn finish(&mut self) -> Option<Error> {
        self.flush(true).await;
        self.wait_background().await;
        self.failed.take()
    }

    /// Waits for the async writer and hands back the steps still staged (in `exit` mode all
    /// of them), for the store to write with the execution's end in one transaction
    /// ([`crate::store::ExecutionStore::finish_execution`]); the first failure instead.
    pub(crate) async fn settle(&mut self) -> Result<Vec<StepCommit>> {
        self.wait_background().await;
        match self.failed.take() {
            Some(error) => Err(error),
            None => Ok(std::mem::take(&mut self.staged)),
        }
    }

    /// Closes the async writer's channel and waits for it to write what it was sent.
    async fn wait_background(&mut self) {
        if let Some((sender, task)) = self.background.take() {
            drop(sender);
            match task.await {
                Ok(Ok(())) => {}
                Ok(Err(error)) => {
                    self.failed.get_or_insert(error);
                }
                Err(error) => {
                    self.failed.get_or_insert(Error::Internal {
                        message: format!("the step writer task died: {error}"),
                    });
                }
            }
        }
    }
}

/// The async mode's writer: commits what arrives, grouping what queued up meanwhile.
async fn write_in_background(
    store: Arc<dyn ExecutionStore>,
    mut receiver: tokio::sync::mpsc::UnboundedReceiver<Vec<StepCommit>>,
) -> Result<()> {
    while let Some(mut batch) = receiver.recv().await {
        while let Ok(more) = receiver.try_recv() {
            batch.extend(more);
        }
        store.commit_steps(&batch).await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_round_trip_through_json() {
        for route in [
            Route::Edges,
            Route::Branch("approve".into()),
            Route::Stop { error: None },
            Route::Stop {
                error: Some("no".into()),
            },
            Route::RetryFailed,
            Route::Wait,
        ] {
            let stored = route_to_json(&route);
            assert_eq!(route_from_json(stored.as_ref()).unwrap(), route);
        }
        assert!(route_from_json(Some(&json!(42))).is_err());
        assert!(route_from_json(Some(&json!({"elsewhere": 1}))).is_err());
    }

    #[test]
    fn step_deltas_are_stored_as_serde_would_store_them() {
        use crate::model::{Message, ToolCall, Usage};
        use crate::state::{ErrorRecord, LoopState, VariableOp};
        let reply = Message {
            tool_calls: vec![ToolCall {
                id: "c0".into(),
                name: "lookup".into(),
                arguments: json!({"q": "q0"}),
            }],
            ..Message::assistant("")
        };
        let usage = Some(Usage {
            prompt_tokens: 5,
            completion_tokens: 2,
            total_tokens: 7,
            cost: 0.125,
        });
        let mut metadata = serde_json::Map::new();
        metadata.insert("why".into(), json!("limit"));
        let deltas = [
            StateDelta::default(),
            StateDelta {
                messages: vec![reply],
                usage,
                ..StateDelta::default()
            },
            StateDelta {
                messages: vec![Message::tool_result("c0", "lookup", "q0")],
                tool_calls: 1,
                ..StateDelta::default()
            },
            StateDelta {
                response: Some("done".into()),
                ..StateDelta::default()
            },
            StateDelta {
                variables: vec![
                    ("i".into(), VariableOp::Set(json!(3))),
                    ("seen".into(), VariableOp::Append(json!({"a": [1]}))),
                ],
                ..StateDelta::default()
            },
            // Through serde: the other operations and the other fields.
            StateDelta {
                variables: vec![
                    ("n".into(), VariableOp::Increment(-1.5)),
                    ("gone".into(), VariableOp::Delete),
                ],
                usage: Some(Usage::default()),
                ..StateDelta::default()
            },
            StateDelta {
                messages: vec![Message::user("again")],
                replace_messages: Some(vec![Message::system("fresh")]),
                errors: vec![ErrorRecord {
                    node_id: "n".into(),
                    message: "boom".into(),
                    kind: "tool".into(),
                }],
                clear_errors: true,
                metadata,
                loops: vec![
                    (
                        "l".into(),
                        Some(LoopState {
                            iteration: 1,
                            max_iterations: 3,
                            continue_loop: true,
                        }),
                    ),
                    ("m".into(), None),
                ],
                tool_calls: 2,
                response: Some("r".into()),
                ..StateDelta::default()
            },
        ];
        for delta in &deltas {
            let expected = if delta.is_empty() {
                Value::Null
            } else {
                serde_json::to_value(delta).unwrap()
            };
            let stored = delta_value(delta);
            assert_eq!(stored.to_string(), expected.to_string(), "{delta:?}");
            if !delta.is_empty() {
                assert_eq!(
                    &serde_json::from_value::<StateDelta>(stored).unwrap(),
                    delta
                );
            }
        }
    }

    #[test]
    fn step_events_are_stored_as_serde_would_store_them() {
        let output = json!({"content": "hi", "tool_calls": [{"id": "c0", "arguments": {"q": 1}}],
                            "usage": {"total_tokens": 3, "cost": 0.5}});
        let kinds = [
            EventKind::NodeStarted {
                node_id: "agent".into(),
                kind: "llm".into(),
                iteration: 2,
                attempt: 3,
            },
            EventKind::NodeCompleted {
                node_id: "agent".into(),
                iteration: 2,
                duration_ms: 17,
                output: output.clone(),
            },
            EventKind::NodeCompleted {
                node_id: "end".into(),
                iteration: 0,
                duration_ms: 0,
                output: Value::Null,
            },
            EventKind::Token {
                node_id: "agent".into(),
                text: "h\"i\n".into(),
            },
            EventKind::ToolCallStarted {
                node_id: "tools".into(),
                call_id: "c0".into(),
                tool: "lookup".into(),
                arguments: json!({"q": "x", "n": [1, 2.5, null]}),
            },
            EventKind::ToolCallFinished {
                node_id: "tools".into(),
                call_id: "c0".into(),
                tool: "lookup".into(),
                ok: false,
                result: json!("boom"),
                duration_ms: u64::MAX,
            },
        ];
        for kind in kinds {
            let fast = fast_payload(&kind).expect("a step event");
            // Same keys, same values, same order: the stored text is the same.
            assert_eq!(
                serde_json::to_string(&fast).unwrap(),
                serde_json::to_string(&serde_payload(&kind)).unwrap(),
                "{kind:?}"
            );
            let event = Event {
                execution_id: "e1".into(),
                seq: 4,
                ts_ms: 1_000,
                kind: kind.clone(),
            };
            let stored = new_event(&event);
            assert_eq!(stored.event_type, kind.type_name());
            let record = crate::store::EventRecord {
                execution_id: "e1".into(),
                seq: 4,
                ts: 1_000,
                event_type: stored.event_type,
                payload: stored.payload,
            };
            assert_eq!(event_from_record(&record).unwrap(), event);
        }
        // The other kinds go through serde.
        assert!(
            fast_payload(&EventKind::ExecutionStarted {
                input: json!({"m": 1})
            })
            .is_none()
        );
    }

    #[test]
    fn durability_modes_parse_and_refuse_unknown_names() {
        for mode in [
            DurabilityMode::Sync,
            DurabilityMode::Async,
            DurabilityMode::Exit,
        ] {
            assert_eq!(DurabilityMode::parse(mode.as_str()).unwrap(), mode);
        }
        let err = DurabilityMode::parse("eventually").unwrap_err();
        assert!(
            err.to_string()
                .contains("unknown durability mode `eventually`")
        );
    }
}
