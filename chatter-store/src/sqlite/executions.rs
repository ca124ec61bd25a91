//! Executions, node runs, events and checkpoints on SQLite.

use async_trait::async_trait;
use chatter_core::store::{
    CheckpointKind, CheckpointRecord, EventRecord, ExecutionFilter, ExecutionOutcome,
    ExecutionRecord, ExecutionStart, ExecutionStatus, ExecutionStore, NewEvent, NewExecution,
    NodeRunRecord, NodeRunStatus, Page, RetentionPolicy, StepCommit, StepReceipt, StoreResult,
};
use rusqlite::{Connection, params};

use super::{
    Db, SqliteStore, enum_at, graph_at, graph_text, json_at, opt_json_at, query_all, query_opt,
};
use crate::common::{
    StartColumns, check_events, check_finish, check_outcome, check_start, check_step, conflict,
    execution_insert_error, invalid, new_execution_record, new_execution_row, not_found, now_ms,
    object_text, require, to_json_text,
};

/// Defines `COLUMNS` (the list for SQL) and `COLUMN_NAMES` from one list of names.
macro_rules! execution_columns {
    ($first:literal $(, $rest:literal)* $(,)?) => {
        /// The columns of an execution row. Its counters and `updated_at` are behind while it
        /// runs: records read for callers are [`settle`]d.
        const COLUMNS: &str = concat!($first $(, ", ", $rest)*);
        /// The names of [`COLUMNS`], in order.
        const COLUMN_NAMES: &[&str] = &[$first $(, $rest)*];
    };
}

execution_columns!(
    "id",
    "owner_id",
    "definition_id",
    "template_id",
    "kind",
    "status",
    "input",
    "params",
    "output",
    "response",
    "error",
    "prompt_tokens",
    "completion_tokens",
    "total_tokens",
    "cost",
    "conversation_id",
    "last_event_seq",
    "step_count",
    "created_at",
    "updated_at",
    "started_at",
    "finished_at",
    "duration_ms",
    "lease_owner",
    "lease_expires_at",
    "wake_at",
    "graph",
);

/// The position of column `name` in [`COLUMNS`] (evaluated at compile time where it is used:
/// a name that is not there does not compile). Rows are read by position: a lookup by name
/// compares the name with every column's, case-insensitively, on every read (a third of the
/// cost of reading an execution row).
#[allow(
    clippy::panic,
    reason = "only ever evaluated at compile time: a name that is not a column must not compile"
)]
const fn col(name: &str) -> usize {
    let name = name.as_bytes();
    let mut i = 0;
    while i < COLUMN_NAMES.len() {
        let candidate = COLUMN_NAMES[i].as_bytes();
        if candidate.len() == name.len() {
            let mut j = 0;
            while j < name.len() && candidate[j] == name[j] {
                j += 1;
            }
            if j == name.len() {
                return i;
            }
        }
        i += 1;
    }
    panic!("not a column of COLUMNS");
}

/// Brings the counters (and `updated_at`) of an execution that has not ended, read from its
/// row, up to date from its rows (see the comment on the counters below; `updated_at`: its
/// latest node run's start or end). One scan of its node runs; the events' and checkpoints'
/// maxima come from their primary keys.
fn settle(conn: &Connection, record: &mut ExecutionRecord) -> StoreResult<()> {
    if record.status.is_terminal() {
        return Ok(());
    }
    let (seq, step, time) = rows_maxima(conn, &record.id)?;
    record.last_event_seq = record.last_event_seq.max(seq);
    record.step_count = record.step_count.max(step);
    record.updated_at = record.updated_at.max(time);
    Ok(())
}

/// The largest event sequence number, step number and node run time stored in the rows of
/// execution `id` (0 for none).
fn rows_maxima(conn: &Connection, id: &str) -> StoreResult<(i64, i64, i64)> {
    conn.prepare_cached(
        "SELECT MAX(COALESCE(MAX(started_seq), 0), COALESCE(MAX(completed_seq), 0),
                    (SELECT COALESCE(MAX(seq), 0) FROM workflow_events WHERE execution_id = ?1)),
                MAX(COALESCE(MAX(step), 0),
                    (SELECT COALESCE(MAX(step), 0) FROM workflow_checkpoints WHERE execution_id = ?1)),
                COALESCE(MAX(MAX(started_at), COALESCE(MAX(finished_at), 0)), 0)
         FROM workflow_node_runs WHERE execution_id = ?1",
    )
    .db()?
    .query_row([id], |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)))
    .db()
}

/// Rows of `workflow_executions` (`COLUMNS`) as records, settled (see [`settle`]).
fn settled(
    conn: &Connection,
    mut records: Vec<ExecutionRecord>,
) -> StoreResult<Vec<ExecutionRecord>> {
    for record in &mut records {
        settle(conn, record)?;
    }
    Ok(records)
}

// Counters (`last_event_seq`, `step_count`). Every event sequence number and step number a
// commit reserves is stored by that commit: an event row, or a node run's `started_seq` /
// `completed_seq` (0008, 0010), and each step's node run `step` (a node run written again is
// written for a later step). An execution's current counters are so the larger of its row's
// columns and the largest numbers stored in its rows.
//
// Writing the row's columns on every commit cost a page of the WAL per commit (the execution
// row's leaf; a third of the pages of a no-op step). So while an execution has not ended, the
// writer connection keeps them in memory instead ([`Heads`], undone with the transaction or
// savepoint that changed them), and writes them to the row when its status changes
// (`set_execution_status`, its end, which drops the entry). Readers work them out of the rows
// (`settle`), and so does the writer for an execution it has no entry for: after a restart, or
// when another connection (another process) has written to the database since the entries were
// made, which the pager's data version ([`data_version`]) tells at the start of each write
// transaction.
//
// An entry also means the execution exists and has not ended: this connection ends an
// execution only in `complete_in` (which drops its entry), any other write on it outside a
// group of short writes (a delete, retention) that changed rows drops every entry, and so does
// any other connection's write.

/// Entries kept at most: past this they are all dropped when a write transaction begins
/// (entries of executions that never end, such as abandoned ones, would otherwise accumulate).
const MAX_HEADS: usize = 65_536;

/// The writer connection's counters of the executions it is writing, `(last_event_seq,
/// step_count)` by execution (see the comment on the counters), with what undoes the changes
/// of the open transaction.
///
/// They belong to whoever holds the writer connection: [`Heads::install`] makes them this
/// thread's for a group of short writes, and the transaction and savepoint code
/// (`WriteTx`, `in_savepoint`) tells them where a transaction begins, commits or rolls back.
#[derive(Debug, Default)]
pub(crate) struct Heads {
    entries: FastMap<String, (i64, i64)>,
    /// The data version ([`data_version`]) the entries are valid at.
    version: Option<i64>,
    /// What each change of the open transaction replaced, in order.
    undo: Vec<(String, Option<(i64, i64)>)>,
}

thread_local! {
    /// The heads of the writer connection this thread holds, while it runs a group of writes.
    static INSTALLED: std::cell::RefCell<Option<Heads>> = const { std::cell::RefCell::new(None) };
}

/// Heads made this thread's by [`Heads::install`]; given back when dropped.
pub(crate) struct Installed<'h>(&'h mut Heads);

impl Drop for Installed<'_> {
    fn drop(&mut self) {
        if let Some(heads) = INSTALLED.with_borrow_mut(Option::take) {
            *self.0 = heads;
        }
    }
}

impl Heads {
    /// Makes them this thread's until the guard is dropped (the holder of the writer connection
    /// running a group of writes).
    pub(crate) fn install(&mut self) -> Installed<'_> {
        let heads = std::mem::take(self);
        INSTALLED.with_borrow_mut(|slot| {
            // Groups of writes do not nest: one writer connection, held by one thread at a time.
            debug_assert!(slot.is_none(), "writer heads installed twice on one thread");
            *slot = Some(heads);
        });
        Installed(self)
    }

    /// Runs `f` on this thread's heads; `None` when none are installed (then nothing is kept,
    /// and counters are worked out of the rows).
    pub(crate) fn with<T>(f: impl FnOnce(&mut Heads) -> T) -> Option<T> {
        INSTALLED.with_borrow_mut(|slot| slot.as_mut().map(f))
    }

    /// A write transaction began, at data version `version`: entries made before another
    /// connection's write are dropped, and so are all of them when there are too many.
    pub(crate) fn begin(&mut self, version: i64) {
        if self.version != Some(version) || self.entries.len() >= MAX_HEADS {
            self.entries.clear();
            self.version = Some(version);
        }
        self.undo.clear();
    }

    /// The open transaction committed, which left the connection at data version `version`
    /// (`None` when it could not be read: the entries are dropped when the next transaction
    /// begins).
    pub(crate) fn committed(&mut self, version: Option<i64>) {
        self.undo.clear();
        self.version = version;
    }

    /// The open transaction rolled back.
    pub(crate) fn rolled_back(&mut self) {
        self.undo_to(0);
    }

    /// Where the open transaction's changes stand (for a savepoint).
    pub(crate) fn mark(&self) -> usize {
        self.undo.len()
    }

    /// Undoes the changes made since `mark` (a savepoint rolled back).
    pub(crate) fn undo_to(&mut self, mark: usize) {
        while self.undo.len() > mark {
            let Some((id, before)) = self.undo.pop() else {
                break;
            };
            match before {
                Some(values) => self.entries.insert(id, values),
                None => self.entries.remove(&id),
            };
        }
    }

    /// Drops every entry (the writer ran something that may have changed any execution).
    pub(crate) fn forget_all(&mut self) {
        self.entries.clear();
        self.version = None;
        self.undo.clear();
    }

    fn get(&self, id: &str) -> Option<(i64, i64)> {
        self.entries.get(id).copied()
    }

    fn set(&mut self, id: &str, values: (i64, i64)) {
        let before = self.entries.insert(id.to_owned(), values);
        self.undo.push((id.to_owned(), before));
    }

    fn remove(&mut self, id: &str) {
        if let Some(before) = self.entries.remove(id) {
            self.undo.push((id.to_owned(), Some(before)));
        }
    }
}

/// Creates what the writer connection needs beyond the schema.
pub(super) fn prepare_writer(conn: &Connection) -> StoreResult<()> {
    // Temporary b-trees (sorts, `IN` lists, statement journals) in memory.
    conn.execute_batch("PRAGMA temp_store = MEMORY;").db()
}

/// Execution `id`'s current counters for the writer, `(last_event_seq, step_count)`: its
/// entry in the installed [`Heads`], or worked out of its rows (`None`: no such execution, or
/// it has ended).
fn current_counters(conn: &Connection, id: &str) -> StoreResult<Option<(i64, i64)>> {
    if let Some(values) = Heads::with(|heads| heads.get(id)).flatten() {
        return Ok(Some(values));
    }
    let row = query_opt(
        conn,
        "SELECT status, last_event_seq, step_count FROM workflow_executions WHERE id = ?1",
        [id],
        |row| {
            Ok((
                row.get::<_, String>(0)?,
                row.get::<_, i64>(1)?,
                row.get::<_, i64>(2)?,
            ))
        },
    )?;
    match row {
        Some((status, seq, step)) if !ExecutionStatus::parse(&status)?.is_terminal() => {
            let (rows_seq, rows_step, _) = rows_maxima(conn, id)?;
            Ok(Some((seq.max(rows_seq), step.max(rows_step))))
        }
        _ => Ok(None),
    }
}

/// The data version of the connection's pager (`SQLITE_FCNTL_DATA_VERSION`): it changes with
/// each commit of this connection, and when a transaction begins after another connection
/// wrote. So it is the same at the start of a write transaction as after this connection's
/// last commit exactly when no other connection wrote in between. (`PRAGMA data_version`
/// tells the same without this connection's commits, but it is a statement to run: a cache
/// lookup and a step, about 2k instructions per commit; this reads a field.)
pub(super) fn data_version(conn: &Connection) -> rusqlite::Result<i64> {
    let mut version: std::ffi::c_uint = 0;
    conn.file_control(
        rusqlite::DEFAULT_NAME,
        rusqlite::FileControl::DataVersion(&mut version),
    )?;
    Ok(i64::from(version))
}

/// Keeps execution `id`'s current counters in the installed [`Heads`].
fn set_head(id: &str, counters: (i64, i64)) {
    Heads::with(|heads| heads.set(id, counters));
}

fn execution_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<ExecutionRecord> {
    Ok(ExecutionRecord {
        id: row.get(const { col("id") })?,
        owner_id: row.get(const { col("owner_id") })?,
        definition_id: row.get(const { col("definition_id") })?,
        template_id: row.get(const { col("template_id") })?,
        kind: enum_at(
            row,
            const { col("kind") },
            chatter_core::store::ExecutionKind::parse,
        )?,
        status: enum_at(row, const { col("status") }, ExecutionStatus::parse)?,
        input: json_at(row, const { col("input") })?,
        params: json_at(row, const { col("params") })?,
        output: opt_json_at(row, const { col("output") })?,
        response: row.get(const { col("response") })?,
        error: row.get(const { col("error") })?,
        prompt_tokens: row.get(const { col("prompt_tokens") })?,
        completion_tokens: row.get(const { col("completion_tokens") })?,
        total_tokens: row.get(const { col("total_tokens") })?,
        cost: row.get(const { col("cost") })?,
        conversation_id: row.get(const { col("conversation_id") })?,
        last_event_seq: row.get(const { col("last_event_seq") })?,
        step_count: row.get(const { col("step_count") })?,
        created_at: row.get(const { col("created_at") })?,
        updated_at: row.get(const { col("updated_at") })?,
        started_at: row.get(const { col("started_at") })?,
        finished_at: row.get(const { col("finished_at") })?,
        duration_ms: row.get(const { col("duration_ms") })?,
        lease_owner: row.get(const { col("lease_owner") })?,
        lease_expires_at: row.get(const { col("lease_expires_at") })?,
        wake_at: row.get(const { col("wake_at") })?,
        graph: graph_at(row, const { col("graph") })?,
    })
}

fn node_run_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<NodeRunRecord> {
    Ok(NodeRunRecord {
        execution_id: row.get("execution_id")?,
        node_id: row.get("node_id")?,
        iteration: row.get("iteration")?,
        attempt: row.get("attempt")?,
        status: enum_at(row, "status", NodeRunStatus::parse)?,
        started_at: row.get("started_at")?,
        finished_at: row.get("finished_at")?,
        duration_ms: row.get("duration_ms")?,
        prompt_tokens: row.get("prompt_tokens")?,
        completion_tokens: row.get("completion_tokens")?,
        cost: row.get("cost")?,
        error: row.get("error")?,
        output: match row.get::<_, Option<i64>>("output_seq")? {
            Some(seq) => Some(referenced_output(row.get("ref_payload")?, seq)?),
            None => opt_json_at(row, "output")?,
        },
        step: row.get("step")?,
        route: opt_json_at(row, "route")?,
        error_class: row.get("error_class")?,
        idempotency_key: row.get("idempotency_key")?,
    })
}

fn select_one(conn: &Connection, id: &str) -> StoreResult<Option<ExecutionRecord>> {
    let mut record = query_opt(
        conn,
        &format!("SELECT {COLUMNS} FROM workflow_executions WHERE id = ?1"),
        [id],
        execution_row,
    )?;
    if let Some(record) = &mut record {
        settle(conn, record)?;
    }
    Ok(record)
}

fn status_of(conn: &Connection, id: &str) -> StoreResult<Option<ExecutionStatus>> {
    let status: Option<String> = query_opt(
        conn,
        "SELECT status FROM workflow_executions WHERE id = ?1",
        [id],
        |row| row.get(0),
    )?;
    status.map(|s| ExecutionStatus::parse(&s)).transpose()
}

/// Why an update of an execution matched no row.
fn explain_no_row(conn: &Connection, id: &str, to: Option<ExecutionStatus>) -> chatter_core::Error {
    match status_of(conn, id) {
        Ok(None) => not_found("execution", id),
        Ok(Some(from)) => match to {
            Some(to) => conflict(format!("execution `{id}` cannot go from {from} to {to}")),
            None => conflict(format!("execution `{id}` has ended ({from})")),
        },
        Err(e) => e,
    }
}

/// Reserves `count` event sequence numbers and `steps` step numbers, returning (last_seq
/// after the reservation, step_count after it). Fails on unknown or ended executions. The
/// execution row is not written (see the comment on the counters).
fn reserve(conn: &Connection, id: &str, count: usize, steps: usize) -> StoreResult<(i64, i64)> {
    let count = i64::try_from(count).map_err(|_| invalid("too many events"))?;
    let steps = i64::try_from(steps).map_err(|_| invalid("too many steps"))?;
    let Some((last_seq, step_count)) = current_counters(conn, id)? else {
        return Err(explain_no_row(conn, id, None));
    };
    let reserved = (last_seq + count, step_count + steps);
    set_head(id, reserved);
    Ok(reserved)
}

/// Inserts event rows of execution `id`, each with its sequence number (no statement is
/// prepared for none).
fn insert_events<'e>(
    conn: &Connection,
    id: &str,
    events: impl IntoIterator<Item = (i64, &'e NewEvent)>,
) -> StoreResult<()> {
    let mut events = events.into_iter().peekable();
    if events.peek().is_none() {
        return Ok(());
    }
    let mut stmt = conn
        .prepare_cached(
            "INSERT INTO workflow_events (execution_id, seq, ts, event_type, payload) VALUES (?1, ?2, ?3, ?4, ?5)",
        )
        .db()?;
    for (seq, event) in events {
        stmt.execute(params![
            id,
            seq,
            event.ts,
            event.event_type,
            to_json_text(&event.payload)
        ])
        .db()?;
    }
    Ok(())
}

/// How the steps of one `commit_steps` call are stored compactly (migration 0008), worked out
/// before anything is written:
///
/// * a step's `node_started` event, when it is in the same call and its payload and time are
///   exactly what the node run row holds (node, kind, iteration, attempt, `started_at`), is not
///   stored as an event row: the node run keeps its sequence number (`started_seq`) and
///   `kind`, and the event is rebuilt from them when events are read;
/// * a step's `node_completed` event in the same call, when its payload and time are exactly
///   what the node run row holds (node, iteration, duration, output, `finished_at`), is not
///   stored as an event row either (migration 0010): the node run keeps its sequence number
///   (`completed_seq`) and its output, unless the step's delta repeats a long reply of that
///   output (below), which is then kept once, in the event row;
/// * otherwise, a node run whose output is the `output` of its `node_completed` event in the
///   same call refers to that event (`output_seq`) instead of storing the output again.
///
/// Events are named by (index of the step carrying them, index in its events).
struct CallPlan<'a> {
    /// Per step: its `node_started` event folded into its node run, with the node's kind.
    started: Vec<Option<(usize, usize, &'a str)>>,
    /// Per step: the `node_completed` event holding its node run's output.
    completed: Vec<Option<(usize, usize)>>,
    /// Per step: its `node_completed` event folded into its node run.
    completed_in_row: Vec<Option<(usize, usize)>>,
    /// Events not stored as rows.
    folded: FastSet<(usize, usize)>,
}

type FastMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;
type FastSet<K> = std::collections::HashSet<K, foldhash::fast::RandomState>;

impl<'a> CallPlan<'a> {
    fn new(steps: &'a [StepCommit]) -> CallPlan<'a> {
        // Keyed by execution, node, iteration (and attempt for `node_started`). Built on every
        // commit, so with foldhash (randomly seeded) rather than SipHash.
        let mut started_events: FastMap<(&str, &str, i64, i64), Found<'a>> = FastMap::default();
        let mut completed_events: FastMap<(&str, &str, i64), Found<'a>> = FastMap::default();
        let mut plan = CallPlan {
            started: vec![None; steps.len()],
            completed: vec![None; steps.len()],
            completed_in_row: vec![None; steps.len()],
            folded: FastSet::default(),
        };
        for (i, step) in steps.iter().enumerate() {
            let exec = step.node_run.execution_id.as_str();
            for (k, event) in step.events.iter().enumerate() {
                let started = match event.event_type.as_str() {
                    "node_started" => true,
                    "node_completed" => false,
                    _ => continue,
                };
                let fields = RunEventFields::of(&event.payload);
                let (Some(node), Some(iteration)) = (fields.node_id, fields.iteration) else {
                    continue;
                };
                if !started {
                    completed_events.insert((exec, node, iteration), ((i, k), fields));
                } else if let Some(attempt) = fields.attempt {
                    started_events.insert((exec, node, iteration, attempt), ((i, k), fields));
                }
            }
            let run = &step.node_run;
            let key = (exec, run.node_id.as_str(), run.iteration);
            if let Some(&((ei, ek), ref fields)) =
                started_events.get(&(key.0, key.1, key.2, run.attempt))
            {
                // Folded only when the row rebuilds exactly this event: its time, and a
                // payload of exactly attempt, node_id, kind and iteration (checked above).
                let exact = steps[ei].events[ek].ts == run.started_at
                    && fields.len == 4
                    && !plan.folded.contains(&(ei, ek));
                if let (true, Some(kind)) = (exact, fields.kind) {
                    plan.started[i] = Some((ei, ek, kind));
                    plan.folded.insert((ei, ek));
                }
            }
            let Some(&((ei, ek), ref fields)) = completed_events.get(&key) else {
                continue;
            };
            let output = fields.output;
            // Folded only when the row rebuilds exactly this event: its time, and a payload of
            // exactly node_id, iteration (checked above), duration_ms and the run's output.
            let exact = Some(steps[ei].events[ek].ts) == run.finished_at
                && fields.len == 4
                && fields.duration_ms == run.duration_ms
                && output.is_some_and(|o| match &run.output {
                    Some(run_output) => same_json(o, run_output),
                    None => o.is_null(),
                })
                && !plan.folded.contains(&(ei, ek));
            let referenced = output.is_some_and(|o| repeated_reply(&step.state_delta, o).is_some());
            if exact && !referenced {
                plan.completed_in_row[i] = Some((ei, ek));
                plan.folded.insert((ei, ek));
            } else if let (Some(o), Some(run_output)) = (output, &run.output)
                && same_json(o, run_output)
            {
                plan.completed[i] = Some((ei, ek));
            }
        }
        plan
    }
}

/// A `node_started` or `node_completed` event of a commit: where it is (step, index in its
/// events), and its fields.
type Found<'a> = ((usize, usize), RunEventFields<'a>);

/// The fields of a `node_started` or `node_completed` payload that [`CallPlan`] reads, found
/// in one pass over its entries (a lookup by key hashes the key: six SipHash lookups per step
/// were a third of planning a commit).
#[derive(Debug, Clone, Copy, Default)]
struct RunEventFields<'a> {
    node_id: Option<&'a str>,
    iteration: Option<i64>,
    attempt: Option<i64>,
    kind: Option<&'a str>,
    output: Option<&'a serde_json::Value>,
    duration_ms: Option<i64>,
    /// How many entries the payload has (0 when it is not an object).
    len: usize,
}

impl<'a> RunEventFields<'a> {
    fn of(payload: &'a serde_json::Value) -> RunEventFields<'a> {
        let mut fields = RunEventFields::default();
        let Some(map) = payload.as_object() else {
            return fields;
        };
        fields.len = map.len();
        for (key, value) in map {
            match key.as_str() {
                "node_id" => fields.node_id = value.as_str(),
                "iteration" => fields.iteration = value.as_i64(),
                "attempt" => fields.attempt = value.as_i64(),
                "kind" => fields.kind = value.as_str(),
                "output" => fields.output = Some(value),
                "duration_ms" => fields.duration_ms = value.as_i64(),
                _ => {}
            }
        }
        fields
    }
}

/// `a == b`, comparing objects entry by entry in their order first: a node run's output is
/// usually a copy of its event's, in the same order, and then no key is hashed (`==` on
/// objects looks each key of one up in the other). Objects whose keys are in another order
/// are compared with `==`.
fn same_json(a: &serde_json::Value, b: &serde_json::Value) -> bool {
    use serde_json::Value;
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && (x
                    .iter()
                    .zip(y.iter())
                    .all(|((kx, vx), (ky, vy))| kx == ky && same_json(vx, vy))
                    || x == y)
        }
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(vx, vy)| same_json(vx, vy))
        }
        _ => a == b,
    }
}

/// Replies shorter than this are stored in the delta as they are: the reference would not
/// save anything worth the lookup.
const MIN_REFERENCED_REPLY: usize = 32;

/// The delta's text, with the contents of appended messages that repeat the node's reply
/// (`output.content` of the event `source`) written as `null`, and the event's sequence
/// number when it did so. A delta that already holds a `null` content is written as it is.
fn encode_delta(
    delta: &serde_json::Value,
    source: Option<(i64, &serde_json::Value)>,
) -> (String, Option<i64>) {
    if let Some((seq, output)) = source
        && let Some(text) = repeated_reply(delta, output)
    {
        let mut compact = delta.clone();
        if let Some(messages) = compact
            .get_mut("messages")
            .and_then(serde_json::Value::as_array_mut)
        {
            for message in messages {
                if let Some(content) = message.get_mut("content")
                    && content.as_str() == Some(text)
                {
                    *content = serde_json::Value::Null;
                }
            }
        }
        return (to_json_text(&compact), Some(seq));
    }
    (to_json_text(delta), None)
}

/// The reply (`output.content`, at least [`MIN_REFERENCED_REPLY`] bytes) that the messages
/// appended by `delta` repeat, when [`encode_delta`] stores it by reference: none of those
/// messages holds a `null` content already.
fn repeated_reply<'o>(delta: &serde_json::Value, output: &'o serde_json::Value) -> Option<&'o str> {
    let text = output.get("content")?.as_str()?;
    if text.len() < MIN_REFERENCED_REPLY {
        return None;
    }
    let messages = delta.get("messages")?.as_array()?;
    let contents = || messages.iter().map(|m| m.get("content"));
    let repeats = contents().any(|c| c.and_then(serde_json::Value::as_str) == Some(text));
    let has_null = contents().any(|c| c.is_some_and(serde_json::Value::is_null));
    (repeats && !has_null).then_some(text)
}

/// The output stored in event payload `payload` (a `node_completed` event's `output`).
fn referenced_output(payload: Option<String>, seq: i64) -> rusqlite::Result<serde_json::Value> {
    let missing = || {
        rusqlite::Error::FromSqlConversionFailure(
            0,
            rusqlite::types::Type::Null,
            format!("the event {seq} holding a stored output is missing").into(),
        )
    };
    let payload = payload.ok_or_else(missing)?;
    let mut payload: serde_json::Value = serde_json::from_str(&payload).map_err(|e| {
        rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Text, Box::new(e))
    })?;
    payload
        .get_mut("output")
        .map(serde_json::Value::take)
        .ok_or_else(missing)
}

/// Puts the reply (`output.content`) back into the appended messages of a delta written by
/// [`encode_delta`].
fn restore_reply(delta: &mut serde_json::Value, output: &serde_json::Value) {
    let Some(text) = output.get("content").and_then(serde_json::Value::as_str) else {
        return;
    };
    if let Some(messages) = delta
        .get_mut("messages")
        .and_then(serde_json::Value::as_array_mut)
    {
        for message in messages {
            if let Some(content) = message.get_mut("content")
                && content.is_null()
            {
                *content = serde_json::Value::String(text.to_owned());
            }
        }
    }
}

/// Writes step `index` of `steps`, numbered `(last_seq, step_no)` by [`reserve_all`].
fn commit_one(
    conn: &Connection,
    steps: &[StepCommit],
    index: usize,
    (last_seq, step_no): (i64, i64),
    plan: &CallPlan<'_>,
    first_seqs: &mut Vec<i64>,
    now: i64,
) -> StoreResult<StepReceipt> {
    let step = &steps[index];
    let run = &step.node_run;
    let id = run.execution_id.as_str();
    let first_seq = last_seq - step.events.len() as i64 + 1;
    first_seqs.push(first_seq);
    let seq_of = |(i, k): (usize, usize)| first_seqs[i] + k as i64;
    let started = plan.started[index].map(|(i, k, kind)| (seq_of((i, k)), kind));
    let completed = plan.completed_in_row[index].map(seq_of);
    let source = plan.completed[index].and_then(|(i, k)| {
        let output = steps[i].events[k].payload.get("output")?;
        Some((seq_of((i, k)), output))
    });
    // The delta is stored in the node run row (migration 0011), its time only when it is not
    // the run's end.
    let delta = (!step.state_delta.is_null()).then(|| encode_delta(&step.state_delta, source));
    let delta_at = (run.finished_at != Some(now)).then_some(now);
    conn.prepare_cached(
        "INSERT INTO workflow_node_runs (execution_id, node_id, iteration, attempt, status, started_at,
             finished_at, duration_ms, prompt_tokens, completion_tokens, cost, error, output,
             step, route, error_class, idempotency_key, output_seq, started_seq, kind,
             completed_seq, delta, delta_at, delta_ref_seq)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18,
                 ?19, ?20, ?21, ?22, ?23, ?24)
         ON CONFLICT (execution_id, node_id, iteration, attempt) DO UPDATE SET
             status = excluded.status, started_at = excluded.started_at,
             finished_at = excluded.finished_at, duration_ms = excluded.duration_ms,
             prompt_tokens = excluded.prompt_tokens, completion_tokens = excluded.completion_tokens,
             cost = excluded.cost, error = excluded.error, output = excluded.output,
             step = excluded.step, route = excluded.route, error_class = excluded.error_class,
             idempotency_key = COALESCE(excluded.idempotency_key, idempotency_key),
             output_seq = excluded.output_seq, started_seq = excluded.started_seq,
             kind = excluded.kind, completed_seq = excluded.completed_seq,
             delta = excluded.delta, delta_at = excluded.delta_at,
             delta_ref_seq = excluded.delta_ref_seq",
    )
    .db()?
    .execute(params![
        id,
        run.node_id,
        run.iteration,
        run.attempt,
        run.status.as_str(),
        run.started_at,
        run.finished_at,
        run.duration_ms,
        run.prompt_tokens,
        run.completion_tokens,
        run.cost,
        run.error,
        if source.is_some() {
            None
        } else {
            run.output.as_ref().map(to_json_text)
        },
        step_no,
        run.route.as_ref().map(to_json_text),
        run.error_class,
        run.idempotency_key,
        source.map(|(seq, _)| seq),
        started.map(|(seq, _)| seq),
        started.map(|(_, kind)| kind),
        completed,
        delta.as_ref().map(|(text, _)| text),
        delta.as_ref().and(delta_at),
        delta.as_ref().and_then(|(_, ref_seq)| *ref_seq)
    ])
    .db()?;
    if run.attempt > 1 {
        // The intents of the attempts before this one (retried inside the node run) ended.
        conn.prepare_cached(
            "UPDATE workflow_node_runs SET status = 'failed', finished_at = ?5,
                 error = 'attempt ' || attempt || ' failed; attempt ' || ?4 || ' followed'
             WHERE execution_id = ?1 AND node_id = ?2 AND iteration = ?3 AND attempt < ?4
               AND status = 'running'",
        )
        .db()?
        .execute(params![
            id,
            run.node_id,
            run.iteration,
            run.attempt,
            run.started_at
        ])
        .db()?;
    }
    // Killed here, the transaction is half-written: the store must come back without it.
    chatter_core::failpoint::hit("sqlite.mid_step");
    insert_events(
        conn,
        id,
        (first_seq..)
            .zip(&step.events)
            .enumerate()
            .filter(|(k, _)| !plan.folded.contains(&(index, *k)))
            .map(|(_, numbered)| numbered),
    )?;
    if let Some(snapshot) = &step.snapshot {
        conn.prepare_cached(
            "INSERT INTO workflow_checkpoints (execution_id, step, kind, node_id, state, created_at)
             VALUES (?1, ?2, 'snapshot', ?3, ?4, ?5)",
        )
        .db()?
        .execute(params![
            id,
            step_no,
            run.node_id,
            to_json_text(snapshot),
            now
        ])
        .db()?;
    }
    Ok(StepReceipt {
        step: step_no,
        first_seq,
        last_seq,
    })
}

/// Writes the steps of one `commit_steps` call (inside the caller's transaction).
pub(crate) fn commit_call(
    conn: &Connection,
    steps: &[StepCommit],
    now: i64,
) -> StoreResult<Vec<StepReceipt>> {
    let numbers = reserve_all(conn, steps)?;
    commit_numbered(conn, steps, &numbers, now)
}

/// Writes the steps of one call numbered `numbers` (each step's `(last_seq, step_no)`,
/// reserved by [`reserve_all`] or given by [`fresh_numbers`]).
pub(crate) fn commit_numbered(
    conn: &Connection,
    steps: &[StepCommit],
    numbers: &[(i64, i64)],
    now: i64,
) -> StoreResult<Vec<StepReceipt>> {
    let plan = CallPlan::new(steps);
    let mut first_seqs = Vec::with_capacity(steps.len());
    (0..steps.len())
        .map(|index| {
            commit_one(
                conn,
                steps,
                index,
                numbers[index],
                &plan,
                &mut first_seqs,
                now,
            )
        })
        .collect()
}

/// The numbers of the first steps of a new execution (all of it), as [`reserve_all`] would
/// reserve them on its new row, and the counters (`last_event_seq`, `step_count`) the row is
/// inserted with so that no reservation is needed.
fn fresh_numbers(steps: &[StepCommit]) -> (Vec<(i64, i64)>, (i64, i64)) {
    let mut numbers = Vec::with_capacity(steps.len());
    let (mut seq, mut step) = (0_i64, 0_i64);
    for s in steps {
        seq += s.events.len() as i64;
        step += 1;
        numbers.push((seq, step));
    }
    (numbers, (seq, step))
}

/// Reserves every step's numbers, `(last_seq, step_no)` in step order: one reservation for
/// each run of consecutive steps of the same execution (an execution's last steps, written
/// with its end, are usually several), numbered as reserving them one by one would.
fn reserve_all(conn: &Connection, steps: &[StepCommit]) -> StoreResult<Vec<(i64, i64)>> {
    let mut numbers = Vec::with_capacity(steps.len());
    let mut rest = steps;
    while let Some(first) = rest.first() {
        let id = first.node_run.execution_id.as_str();
        let n = rest
            .iter()
            .take_while(|s| s.node_run.execution_id == id)
            .count();
        let (group, after) = rest.split_at(n);
        let events: usize = group.iter().map(|s| s.events.len()).sum();
        let (last_seq, step_count) = reserve(conn, id, events, n)?;
        let (mut seq, mut step) = (last_seq - events as i64, step_count - n as i64);
        for s in group {
            seq += s.events.len() as i64;
            step += 1;
            numbers.push((seq, step));
        }
        rest = after;
    }
    Ok(numbers)
}

/// An execution row to insert, its JSON already text (so a queued write owns it, and the
/// caller keeps the `NewExecution` to build the record from).
struct InsertRow {
    id: String,
    owner_id: String,
    definition_id: Option<String>,
    template_id: Option<String>,
    kind: &'static str,
    status: &'static str,
    input: String,
    params: String,
    conversation_id: Option<String>,
    now: i64,
    graph: Option<std::sync::Arc<str>>,
    start: (Option<String>, Option<i64>, Option<i64>),
    updated_at: i64,
    /// `last_event_seq` and `step_count` (past the steps written with the row).
    counters: (i64, i64),
}

impl InsertRow {
    fn new(id: &str, new: &NewExecution, row: &StartColumns, now: i64) -> InsertRow {
        InsertRow {
            id: id.to_owned(),
            owner_id: new.owner_id.clone(),
            definition_id: new.definition_id.clone(),
            template_id: new.template_id.clone(),
            kind: new.kind.as_str(),
            status: row.status.as_str(),
            input: object_text(&new.input),
            params: object_text(&new.params),
            conversation_id: new.conversation_id.clone(),
            now,
            graph: new.graph.as_ref().map(graph_text),
            start: (row.lease_owner.clone(), row.lease_until, row.started_at),
            updated_at: row.updated_at,
            counters: (0, 0),
        }
    }

    /// Inserts it (no `RETURNING`: the record is built from what was written, see
    /// `new_execution_record`).
    fn insert(&self, conn: &Connection) -> StoreResult<()> {
        conn.prepare_cached(
            "INSERT INTO workflow_executions (id, owner_id, definition_id, template_id, kind, status,
                 input, params, conversation_id, created_at, updated_at, graph, lease_owner,
                 lease_expires_at, started_at, last_event_seq, step_count)
             VALUES (?1, ?2, ?3, ?4, ?5, ?11, ?6, ?7, ?8, ?9, ?15, ?10, ?12, ?13, ?14, ?16, ?17)",
        )
        .db()?
        .execute(params![
            self.id,
            self.owner_id,
            self.definition_id,
            self.template_id,
            self.kind,
            self.input,
            self.params,
            self.conversation_id,
            self.now,
            self.graph,
            self.status,
            self.start.0,
            self.start.1,
            self.start.2,
            self.updated_at,
            self.counters.0,
            self.counters.1
        ])
        .db()
        .map(|_| ())
        .map_err(|e| execution_insert_error(&self.id, e))
    }
}

impl SqliteStore {
    /// Inserts an execution row: `pending`, or with `start` (lease owner, lease end, start
    /// time) `running` under that lease.
    async fn insert_execution(
        &self,
        mut new: NewExecution,
        start: Option<(&str, i64, i64)>,
    ) -> StoreResult<ExecutionRecord> {
        let now = now_ms();
        let row = new_execution_row(&self.limits, &new, start, now)?;
        let id = self.ids.or_new(new.id.take())?;
        let insert = InsertRow::new(&id, &new, &row, now);
        self.write_short(move |conn| insert.insert(conn)).await?;
        Ok(new_execution_record(id, new, row, now))
    }
}

/// The statuses an execution may move to `status` from, for `status IN (?, ?, ?)` (unused
/// places `NULL`, which matches nothing). Bound as parameters, SQLite compares them one by one;
/// a list read from `json_each` (as before) was built into a temporary b-tree on every run.
fn predecessors(status: ExecutionStatus) -> [Option<&'static str>; 3] {
    let mut from = [None; 3];
    let allowed = status.allowed_predecessors();
    debug_assert!(allowed.len() <= from.len(), "{status}: {allowed:?}");
    for (slot, s) in from.iter_mut().zip(allowed) {
        *slot = Some(s.as_str());
    }
    from
}

/// Ends execution `key` with `outcome` inside the caller's transaction: status, output,
/// usage, final events, template analytics (`complete_execution`, `finish_execution`).
///
/// `counters`: the execution's current counters when the caller knows them (a row inserted in
/// the same write with its steps); `None` reads them (see the comment on the counters).
fn complete_in(
    tx: &Connection,
    key: &str,
    outcome: &ExecutionOutcome,
    counters: Option<(i64, i64)>,
) -> StoreResult<ExecutionRecord> {
    let status = outcome.status;
    let [from_a, from_b, from_c] = predecessors(status);
    let count = outcome.events.len() as i64;
    let counters = match counters {
        Some(counters) => Some(counters),
        None => current_counters(tx, key)?,
    };
    let Some((last_seq, steps)) = counters else {
        return Err(explain_no_row(tx, key, Some(status)));
    };
    // No `RETURNING` (SQLite buffers returned rows in an ephemeral table, which costs more
    // than the write): the row is read back from the page the UPDATE wrote. Its counters are
    // written as they are now, past the final events. The predecessors are compared one by
    // one: an `IN` list of three is a temporary b-tree too.
    let updated = tx
        .prepare_cached(
            "UPDATE workflow_executions SET status = ?2, output = ?3, response = ?4, error = ?5,
                 prompt_tokens = ?6, completion_tokens = ?7, total_tokens = ?6 + ?7, cost = ?8,
                 finished_at = ?9, updated_at = ?9, lease_owner = NULL, lease_expires_at = NULL,
                 duration_ms = MAX(0, ?9 - COALESCE(started_at, created_at)),
                 last_event_seq = ?10, step_count = ?11
             WHERE id = ?1 AND (status = ?12 OR status = ?13 OR status = ?14)",
        )
        .db()?
        .execute(params![
            key,
            status.as_str(),
            outcome.output.as_ref().map(to_json_text),
            outcome.response,
            outcome.error,
            outcome.prompt_tokens,
            outcome.completion_tokens,
            outcome.cost,
            outcome.finished_at,
            last_seq + count,
            steps,
            from_a,
            from_b,
            from_c
        ])
        .db()?;
    if updated == 0 {
        return Err(explain_no_row(tx, key, Some(status)));
    }
    // Ended: its row holds its counters from now on.
    Heads::with(|heads| heads.remove(key));
    let record = select_one(tx, key)?.ok_or_else(|| not_found("execution", key))?;
    insert_events(tx, key, (last_seq + 1..).zip(&outcome.events))?;
    if let Some(template_id) = &record.template_id {
        let success = i64::from(status == ExecutionStatus::Completed);
        tx.prepare_cached(
            "INSERT INTO template_analytics (template_id, usage_count, success_count, failure_count,
                 total_tokens, total_cost, total_duration_ms, last_used_at)
             VALUES (?1, 1, ?2, 1 - ?2, ?3, ?4, ?5, ?6)
             ON CONFLICT (template_id) DO UPDATE SET
                 usage_count = usage_count + 1,
                 success_count = success_count + excluded.success_count,
                 failure_count = failure_count + excluded.failure_count,
                 total_tokens = total_tokens + excluded.total_tokens,
                 total_cost = total_cost + excluded.total_cost,
                 total_duration_ms = total_duration_ms + excluded.total_duration_ms,
                 last_used_at = MAX(COALESCE(last_used_at, 0), excluded.last_used_at)",
        )
        .db()?
        .execute(params![
            template_id,
            success,
            record.total_tokens,
            record.cost,
            record.duration_ms.unwrap_or(0),
            outcome.finished_at
        ])
        .db()?;
    }
    Ok(record)
}

/// Records node run `run`'s intent inside the caller's transaction (`record_intent`,
/// `commit_steps_with_intent`): a `running` row with its idempotency key, unless the run has
/// ended already. Fails on an unknown or ended execution.
///
/// `live`: the caller's transaction has already found the execution existing and not ended (it
/// reserved numbers for the execution's steps, or inserted its row), so its status is not read
/// again.
fn intent_in(tx: &Connection, run: &NodeRunRecord, live: bool) -> StoreResult<()> {
    let status = if live {
        None
    } else {
        Some(status_of(tx, &run.execution_id)?)
    };
    match status.unwrap_or(Some(ExecutionStatus::Running)) {
        None => return Err(not_found("execution", &run.execution_id)),
        Some(status) if status.is_terminal() => {
            return Err(conflict(format!(
                "execution `{}` has ended ({status})",
                run.execution_id
            )));
        }
        Some(_) => {}
    }
    tx.prepare_cached(
        "INSERT INTO workflow_node_runs (execution_id, node_id, iteration, attempt, status,
             started_at, idempotency_key)
         VALUES (?1, ?2, ?3, ?4, 'running', ?5, ?6)
         ON CONFLICT (execution_id, node_id, iteration, attempt) DO UPDATE SET
             idempotency_key = excluded.idempotency_key
         WHERE status = 'running'",
    )
    .db()?
    .execute(params![
        run.execution_id,
        run.node_id,
        run.iteration,
        run.attempt,
        run.started_at,
        run.idempotency_key
    ])
    .db()?;
    Ok(())
}

#[async_trait]
impl ExecutionStore for SqliteStore {
    async fn create_execution(&self, new: NewExecution) -> StoreResult<ExecutionRecord> {
        self.insert_execution(new, None).await
    }

    async fn start_execution(
        &self,
        new: NewExecution,
        lease_owner: &str,
        lease_until: i64,
        at: i64,
    ) -> StoreResult<ExecutionRecord> {
        self.insert_execution(new, Some((lease_owner, lease_until, at)))
            .await
    }

    async fn start_with_steps(
        &self,
        start: &ExecutionStart,
        steps: &[StepCommit],
        intent: Option<&NodeRunRecord>,
    ) -> StoreResult<Vec<StepReceipt>> {
        let now = now_ms();
        let (id, row) = check_start(&self.limits, start, steps, intent, now)?;
        let mut insert = InsertRow::new(id, &start.new, &row, now);
        let (numbers, counters) = fresh_numbers(steps);
        insert.counters = counters;
        let intent = intent.cloned();
        let key = id.to_owned();
        // The row (its counters past the steps), its steps, the intent: one write. The writer
        // keeps the counters, so the execution's next commit does not work them out of its rows.
        self.write_around(
            move |conn| insert.insert(conn),
            steps,
            Some(numbers),
            move |conn, receipts| {
                if let Some(intent) = &intent {
                    // Of this execution (`check_start`), whose row was just inserted.
                    intent_in(conn, intent, true)?;
                }
                set_head(&key, counters);
                Ok(receipts)
            },
        )
        .await
    }

    async fn start_and_finish(
        &self,
        start: &ExecutionStart,
        steps: &[StepCommit],
        outcome: ExecutionOutcome,
    ) -> StoreResult<ExecutionRecord> {
        let now = now_ms();
        let (id, row) = check_start(&self.limits, start, steps, None, now)?;
        check_outcome(&self.limits, &outcome)?;
        let mut insert = InsertRow::new(id, &start.new, &row, now);
        let (numbers, counters) = fresh_numbers(steps);
        insert.counters = counters;
        let key = id.to_owned();
        // The row (its counters past the steps), its steps, its end: one write.
        self.write_around(
            move |conn| insert.insert(conn),
            steps,
            Some(numbers),
            move |conn, _| complete_in(conn, &key, &outcome, Some(counters)),
        )
        .await
    }

    async fn get_execution(&self, id: &str) -> StoreResult<Option<ExecutionRecord>> {
        let key = id.to_owned();
        self.read(move |conn| select_one(conn, &key)).await
    }

    async fn list_executions(
        &self,
        filter: &ExecutionFilter,
        page: Page,
    ) -> StoreResult<Vec<ExecutionRecord>> {
        let filter = filter.clone();
        self.read(move |conn| {
            let records = query_all(
                conn,
                &format!(
                    "SELECT {COLUMNS} FROM workflow_executions
                     WHERE (?1 IS NULL OR owner_id = ?1) AND (?2 IS NULL OR definition_id = ?2)
                       AND (?3 IS NULL OR template_id = ?3) AND (?4 IS NULL OR status = ?4)
                       AND (?5 IS NULL OR conversation_id = ?5) AND (?6 IS NULL OR created_at >= ?6)
                       AND (?7 IS NULL OR created_at < ?7)
                     ORDER BY created_at DESC, id DESC LIMIT ?8 OFFSET ?9"
                ),
                params![
                    filter.owner_id,
                    filter.definition_id,
                    filter.template_id,
                    filter.status.map(ExecutionStatus::as_str),
                    filter.conversation_id,
                    filter.created_after,
                    filter.created_before,
                    page.sql_limit(),
                    page.sql_offset()
                ],
                execution_row,
            )?;
            settled(conn, records)
        })
        .await
    }

    async fn set_execution_status(
        &self,
        id: &str,
        status: ExecutionStatus,
        at: i64,
    ) -> StoreResult<ExecutionRecord> {
        if status.is_terminal() || status == ExecutionStatus::Pending {
            return Err(invalid(format!(
                "set_execution_status moves to running or waiting; use complete_execution to end an execution (got {status})"
            )));
        }
        let key = id.to_owned();
        self.write_short(move |conn| {
            let [from_a, from_b, from_c] = predecessors(status);
            let Some((last_seq, steps)) = current_counters(conn, &key)? else {
                return Err(explain_no_row(conn, &key, Some(status)));
            };
            // The row's counters are made current with its status.
            let updated = query_opt(
                conn,
                &format!(
                    "UPDATE workflow_executions SET status = ?2, updated_at = ?3,
                         started_at = CASE WHEN ?2 = 'running' THEN COALESCE(started_at, ?3) ELSE started_at END,
                         last_event_seq = ?5, step_count = ?6
                     WHERE id = ?1 AND (status = ?4 OR status = ?7 OR status = ?8)
                     RETURNING {COLUMNS}"
                ),
                params![key, status.as_str(), at, from_a, last_seq, steps, from_b, from_c],
                execution_row,
            )?;
            updated.ok_or_else(|| explain_no_row(conn, &key, Some(status)))
        })
        .await
    }

    async fn complete_execution(
        &self,
        id: &str,
        outcome: ExecutionOutcome,
    ) -> StoreResult<ExecutionRecord> {
        check_outcome(&self.limits, &outcome)?;
        let key = id.to_owned();
        // Inside the transaction of the group this write is part of.
        self.write_short(move |conn| complete_in(conn, &key, &outcome, None))
            .await
    }

    async fn delete_execution(&self, id: &str) -> StoreResult<bool> {
        let key = id.to_owned();
        let deleted = self
            .write(move |conn| {
                conn.execute("DELETE FROM workflow_executions WHERE id = ?1", [key])
                    .db()
            })
            .await?;
        Ok(deleted > 0)
    }

    async fn commit_steps(&self, steps: &[StepCommit]) -> StoreResult<Vec<StepReceipt>> {
        for step in steps {
            check_step(&self.limits, step)?;
        }
        if steps.is_empty() {
            return Ok(Vec::new());
        }
        self.commit(steps).await
    }

    async fn finish_execution(
        &self,
        id: &str,
        steps: &[StepCommit],
        outcome: ExecutionOutcome,
    ) -> StoreResult<ExecutionRecord> {
        check_finish(&self.limits, id, steps, &outcome)?;
        let key = id.to_owned();
        // The steps, then the end, in one write: a failure of either leaves neither.
        self.commit_then(steps, move |conn, _| {
            complete_in(conn, &key, &outcome, None)
        })
        .await
    }

    async fn append_events(
        &self,
        execution_id: &str,
        events: &[NewEvent],
    ) -> StoreResult<Vec<i64>> {
        check_events(&self.limits, events)?;
        if events.is_empty() {
            return Ok(Vec::new());
        }
        let key = execution_id.to_owned();
        let events = events.to_vec();
        self.write_short(move |conn| {
            // Inside the transaction of the group this write is part of.
            let tx = conn;
            let (last_seq, _) = reserve(tx, &key, events.len(), 0)?;
            let first_seq = last_seq - events.len() as i64 + 1;
            insert_events(tx, &key, (first_seq..).zip(&events))?;
            Ok((first_seq..=last_seq).collect())
        })
        .await
    }

    async fn list_events(
        &self,
        execution_id: &str,
        after_seq: i64,
        limit: u32,
    ) -> StoreResult<Vec<EventRecord>> {
        let key = execution_id.to_owned();
        let limit = Page::new(limit, 0).sql_limit();
        self.read(move |conn| {
            query_all(
                conn,
                // `node_started` events folded into their node run rows are rebuilt here.
                "SELECT ?1 AS execution_id, seq, ts, event_type, payload FROM (
                     SELECT seq, ts, event_type, payload FROM workflow_events
                     WHERE execution_id = ?1 AND seq > ?2
                     UNION ALL
                     SELECT started_seq, started_at, 'node_started',
                         json_object('attempt', attempt, 'node_id', node_id, 'kind', kind,
                                     'iteration', iteration)
                     FROM workflow_node_runs WHERE execution_id = ?1 AND started_seq > ?2
                     UNION ALL
                     SELECT completed_seq, finished_at, 'node_completed',
                         json_object('node_id', node_id, 'iteration', iteration,
                                     'duration_ms', duration_ms, 'output', json(output))
                     FROM workflow_node_runs WHERE execution_id = ?1 AND completed_seq > ?2
                 ) ORDER BY seq LIMIT ?3",
                params![key, after_seq, limit],
                |row| {
                    Ok(EventRecord {
                        execution_id: row.get("execution_id")?,
                        seq: row.get("seq")?,
                        ts: row.get("ts")?,
                        event_type: row.get("event_type")?,
                        payload: json_at(row, "payload")?,
                    })
                },
            )
        })
        .await
    }

    async fn list_node_runs(&self, execution_id: &str) -> StoreResult<Vec<NodeRunRecord>> {
        let key = execution_id.to_owned();
        self.read(move |conn| {
            query_all(
                conn,
                "SELECT r.*, e.payload AS ref_payload FROM workflow_node_runs r
                 LEFT JOIN workflow_events e ON e.execution_id = r.execution_id AND e.seq = r.output_seq
                 WHERE r.execution_id = ?1
                 ORDER BY r.started_at, r.step IS NULL, r.step, r.node_id, r.iteration, r.attempt",
                [key],
                node_run_row,
            )
        })
        .await
    }

    async fn list_checkpoints(&self, execution_id: &str) -> StoreResult<Vec<CheckpointRecord>> {
        let key = execution_id.to_owned();
        self.read(move |conn| {
            query_all(
                conn,
                // Deltas stored in their node run rows (migration 0011) are rebuilt here.
                "SELECT c.execution_id, c.step, c.kind, c.node_id, c.state, c.created_at, c.ref_seq,
                     e.payload AS ref_payload
                 FROM (
                     SELECT execution_id, step, kind, node_id, state, created_at, ref_seq
                     FROM workflow_checkpoints WHERE execution_id = ?1
                     UNION ALL
                     SELECT execution_id, step, 'delta', node_id, delta,
                         COALESCE(delta_at, finished_at), delta_ref_seq
                     FROM workflow_node_runs WHERE execution_id = ?1 AND delta IS NOT NULL
                 ) c
                 LEFT JOIN workflow_events e ON e.execution_id = c.execution_id AND e.seq = c.ref_seq
                 ORDER BY c.step, CASE c.kind WHEN 'snapshot' THEN 0 ELSE 1 END",
                [key],
                |row| {
                    let mut state = json_at(row, "state")?;
                    if let Some(seq) = row.get::<_, Option<i64>>("ref_seq")? {
                        restore_reply(&mut state, &referenced_output(row.get("ref_payload")?, seq)?);
                    }
                    Ok(CheckpointRecord {
                        execution_id: row.get("execution_id")?,
                        step: row.get("step")?,
                        kind: enum_at(row, "kind", CheckpointKind::parse)?,
                        node_id: row.get("node_id")?,
                        state,
                        created_at: row.get("created_at")?,
                    })
                },
            )
        })
        .await
    }

    async fn record_intent(&self, run: &NodeRunRecord) -> StoreResult<()> {
        require("node_run.execution_id", &run.execution_id)?;
        require("node_run.node_id", &run.node_id)?;
        let run = run.clone();
        // Inside the transaction of the group this write is part of.
        self.write_short(move |conn| intent_in(conn, &run, false))
            .await
    }

    async fn commit_steps_with_intent(
        &self,
        steps: &[StepCommit],
        intent: &NodeRunRecord,
    ) -> StoreResult<Vec<StepReceipt>> {
        for step in steps {
            check_step(&self.limits, step)?;
        }
        require("node_run.execution_id", &intent.execution_id)?;
        require("node_run.node_id", &intent.node_id)?;
        let intent = intent.clone();
        // Reserving the numbers of a step of the intent's execution has checked it.
        let live = steps
            .iter()
            .any(|s| s.node_run.execution_id == intent.execution_id);
        // The steps, then the intent, in one write: a failure of either leaves neither.
        self.commit_then(steps, move |conn, receipts| {
            intent_in(conn, &intent, live)?;
            Ok(receipts)
        })
        .await
    }

    async fn acquire_lease(
        &self,
        id: &str,
        owner: &str,
        until: i64,
        now: i64,
    ) -> StoreResult<bool> {
        require("lease owner", owner)?;
        let (key, owner) = (id.to_owned(), owner.to_owned());
        self.write_short(move |conn| {
            let updated = conn
                .prepare_cached(
                    "UPDATE workflow_executions SET lease_owner = ?2, lease_expires_at = ?3
                     WHERE id = ?1 AND status <> 'completed' AND status <> 'failed'
                       AND status <> 'cancelled'
                       AND (lease_owner IS NULL OR lease_owner = ?2 OR lease_expires_at IS NULL
                            OR lease_expires_at < ?4)",
                )
                .db()?
                .execute(params![key, owner, until, now])
                .db()?;
            if updated == 0 && status_of(conn, &key)?.is_none() {
                return Err(not_found("execution", &key));
            }
            Ok(updated > 0)
        })
        .await
    }

    async fn release_lease(&self, id: &str, owner: &str) -> StoreResult<()> {
        let (key, owner) = (id.to_owned(), owner.to_owned());
        self.write_short(move |conn| {
            conn.prepare_cached(
                "UPDATE workflow_executions SET lease_owner = NULL, lease_expires_at = NULL
                 WHERE id = ?1 AND lease_owner = ?2",
            )
            .db()?
            .execute(params![key, owner])
            .db()?;
            Ok(())
        })
        .await
    }

    async fn set_wake_at(&self, id: &str, wake_at: Option<i64>) -> StoreResult<()> {
        let key = id.to_owned();
        self.write_short(move |conn| {
            let updated = conn
                .prepare_cached("UPDATE workflow_executions SET wake_at = ?2 WHERE id = ?1")
                .db()?
                .execute(params![key, wake_at])
                .db()?;
            if updated == 0 {
                return Err(not_found("execution", &key));
            }
            Ok(())
        })
        .await
    }

    async fn list_resumable(&self, now: i64, limit: u32) -> StoreResult<Vec<ExecutionRecord>> {
        let limit = Page::new(limit, 0).sql_limit();
        self.read(move |conn| {
            let records = query_all(
                conn,
                &format!(
                    "SELECT {COLUMNS} FROM workflow_executions
                     WHERE (status = 'running' AND (lease_expires_at IS NULL OR lease_expires_at < ?1))
                        OR (status = 'waiting' AND wake_at IS NOT NULL AND wake_at <= ?1)
                     ORDER BY created_at, id LIMIT ?2"
                ),
                params![now, limit],
                execution_row,
            )?;
            settled(conn, records)
        })
        .await
    }

    async fn apply_retention(&self, policy: &RetentionPolicy, now: i64) -> StoreResult<u64> {
        policy.check()?;
        let policy = *policy;
        self.write(move |conn| {
            let keep = policy.keep_last_per_conversation.map(i64::from);
            let cutoff = policy.max_age_ms.map(|age| now.saturating_sub(age));
            let deleted = conn
                .execute(
                    "DELETE FROM workflow_executions WHERE id IN (
                         SELECT id FROM (
                             SELECT id, finished_at, conversation_id,
                                 ROW_NUMBER() OVER (PARTITION BY conversation_id
                                                    ORDER BY created_at DESC, id DESC) AS rank
                             FROM workflow_executions
                             WHERE status IN ('completed', 'failed', 'cancelled')
                         )
                         WHERE (?1 IS NOT NULL AND conversation_id IS NOT NULL AND rank > ?1)
                            OR (?2 IS NOT NULL AND finished_at < ?2))",
                    params![keep, cutoff],
                )
                .db()?;
            Ok(deleted as u64)
        })
        .await
    }

    async fn compact_checkpoints(&self, execution_id: &str) -> StoreResult<u64> {
        let key = execution_id.to_owned();
        self.write(move |conn| {
            let deleted = conn
                .execute(
                    "DELETE FROM workflow_checkpoints WHERE execution_id = ?1 AND (
                         step < (SELECT MAX(step) FROM workflow_checkpoints WHERE execution_id = ?1 AND kind = 'snapshot')
                         OR (kind = 'delta' AND step = (SELECT MAX(step) FROM workflow_checkpoints
                                                       WHERE execution_id = ?1 AND kind = 'snapshot')))",
                    [&key],
                )
                .db()?;
            // The deltas held by node run rows (migration 0011) up to the last snapshot.
            let cleared = conn
                .execute(
                    "UPDATE workflow_node_runs SET delta = NULL, delta_at = NULL, delta_ref_seq = NULL
                     WHERE execution_id = ?1 AND delta IS NOT NULL
                       AND step <= (SELECT MAX(step) FROM workflow_checkpoints
                                    WHERE execution_id = ?1 AND kind = 'snapshot')",
                    [&key],
                )
                .db()?;
            Ok((deleted + cleared) as u64)
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sqlite::{PendingWrite, WriteSide, pending_write};
    use tokio::sync::oneshot;

    /// A group's write that keeps counters for `id` and succeeds or fails.
    fn keep(id: &'static str, values: (i64, i64), ok: bool) -> impl FnMut(&Connection) -> bool {
        move |_| {
            set_head(id, values);
            ok
        }
    }

    /// The counters kept in memory follow the transactions and savepoints that changed them:
    /// kept when committed, undone when rolled back (a lone write, or one write of a group),
    /// and all dropped when another connection writes or the writer runs a job that changed
    /// rows; installed only while a group runs.
    #[test]
    fn kept_counters_follow_commits_and_rollbacks() {
        let dir = std::env::temp_dir().join(format!(
            "chatter-heads-{}-{}",
            std::process::id(),
            ulid::Ulid::new()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("heads.db");
        let mut conn = Connection::open(&path).unwrap();
        // Busy at once (below), not after rusqlite's default 5 s wait.
        conn.busy_timeout(std::time::Duration::ZERO).unwrap();
        conn.execute_batch("PRAGMA journal_mode=WAL; CREATE TABLE t (v TEXT);")
            .unwrap();
        let mut heads = Heads::default();
        let mut group = |heads: &mut Heads,
                         own: &mut dyn FnMut(&Connection) -> bool,
                         others: Vec<PendingWrite>| {
            WriteSide::run_group(&mut conn, heads, Some(own), others).unwrap();
        };

        group(&mut heads, &mut keep("e1", (5, 1), false), Vec::new());
        assert_eq!(heads.get("e1"), None, "a failed lone write keeps nothing");
        group(&mut heads, &mut keep("e1", (5, 1), true), Vec::new());
        assert_eq!(heads.get("e1"), Some((5, 1)));
        assert!(
            Heads::with(|_| ()).is_none(),
            "installed only while a group runs"
        );
        // Kept from one transaction to the next while no other connection writes.
        for _ in 0..2 {
            let mut seen = None;
            group(
                &mut heads,
                &mut |_: &Connection| {
                    seen = Heads::with(|heads| heads.get("e1"));
                    true
                },
                Vec::new(),
            );
            assert_eq!(seen, Some(Some((5, 1))));
        }

        // In a group, the failed write's changes are undone alone.
        let (tx, _rx) = oneshot::channel::<StoreResult<()>>();
        let failing = pending_write(
            |_: &Connection| {
                set_head("e1", (99, 9));
                set_head("e3", (1, 1));
                Err(invalid("no"))
            },
            tx,
        );
        let (tx, _rx) = oneshot::channel::<StoreResult<()>>();
        let kept = pending_write(
            |_: &Connection| {
                set_head("e2", (3, 1));
                Ok(())
            },
            tx,
        );
        group(
            &mut heads,
            &mut keep("e1", (7, 2), true),
            vec![failing, kept],
        );
        assert_eq!(heads.get("e1"), Some((7, 2)));
        assert_eq!(heads.get("e2"), Some((3, 1)));
        assert_eq!(heads.get("e3"), None);

        // A transaction that fails to commit keeps nothing: another connection holds the
        // write lock, so BEGIN IMMEDIATE fails and nothing runs.
        let other = Connection::open(&path).unwrap();
        other.execute_batch("BEGIN IMMEDIATE").unwrap();
        let mut ran = false;
        let mut own = |_: &Connection| {
            ran = true;
            true
        };
        assert!(WriteSide::run_group(&mut conn, &mut heads, Some(&mut own), Vec::new()).is_err());
        assert!(!ran);
        // Another connection's write: every entry is dropped when the next transaction begins.
        other
            .execute_batch("INSERT INTO t VALUES ('x'); COMMIT;")
            .unwrap();
        let mut seen = None;
        let mut own = |_: &Connection| {
            seen = Heads::with(|heads| (heads.get("e1"), heads.get("e2")));
            set_head("e4", (2, 1));
            true
        };
        WriteSide::run_group(&mut conn, &mut heads, Some(&mut own), Vec::new()).unwrap();
        assert_eq!(seen, Some((None, None)));

        // A job on the writer that changed no row keeps the entries; one that did drops them.
        let side = WriteSide::new(Connection::open_in_memory().unwrap());
        *side.heads() = heads;
        side.run_job(
            &mut conn,
            Box::new(|conn| {
                let _: i64 = conn
                    .query_row("SELECT COUNT(*) FROM t", [], |r| r.get(0))
                    .unwrap();
            }),
        );
        assert_eq!(side.heads().get("e4"), Some((2, 1)));
        side.run_job(
            &mut conn,
            Box::new(|conn| {
                conn.execute("INSERT INTO t VALUES ('y')", []).unwrap();
            }),
        );
        assert_eq!(side.heads().get("e4"), None);
        drop((conn, other, side));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// `same_json` is `==`: in the same order or not, nested, and for values that differ
    /// anywhere.
    #[test]
    fn same_json_is_equality_whatever_the_order_of_keys() {
        use serde_json::json;
        let cases = [
            (
                json!({"a": 1, "b": [1, {"c": "x", "d": null}]}),
                json!({"a": 1, "b": [1, {"c": "x", "d": null}]}),
            ),
            (
                json!({"a": 1, "b": {"c": 2, "d": 3}}),
                json!({"b": {"d": 3, "c": 2}, "a": 1}),
            ),
            (
                json!({"a": 1, "b": {"c": 2, "d": 3}}),
                json!({"a": 1, "b": {"c": 2, "d": 4}}),
            ),
            (json!({"a": 1, "b": 2}), json!({"b": 2, "c": 1})),
            (json!({"a": 1}), json!({"a": 1, "b": 2})),
            (json!([1, 2]), json!([2, 1])),
            (json!([{"x": 1}]), json!([{"x": 1.0}])),
            (json!("s"), json!("s")),
            (json!(null), json!({})),
        ];
        for (a, b) in &cases {
            assert_eq!(same_json(a, b), a == b, "{a} vs {b}");
            assert_eq!(same_json(b, a), a == b, "{b} vs {a}");
        }
        assert!(
            same_json(&cases[1].0, &cases[1].1),
            "equal in another order"
        );
    }

    /// Every status's predecessors fit the three places of the status guards.
    #[test]
    fn predecessors_fit_their_places() {
        for &status in ExecutionStatus::ALL {
            let listed: Vec<&str> = predecessors(status).into_iter().flatten().collect();
            let allowed: Vec<&str> = status
                .allowed_predecessors()
                .iter()
                .map(|s| s.as_str())
                .collect();
            assert_eq!(listed, allowed, "{status}");
        }
    }
}
