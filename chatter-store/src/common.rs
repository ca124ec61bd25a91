//! Helpers shared by the backends: ids, clocks, validation, payload limits.

use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use chatter_core::Error;
use chatter_core::store::documents::query_terms;
use chatter_core::store::{
    ExecutionOutcome, ExecutionRecord, ExecutionStart, ExecutionStatus, NewEvent, NewExecution,
    NewJob, NodeRunRecord, SearchQuery, StepCommit,
};
use chatter_core::store::{
    StoreErrorKind, StoreResult, check_payload_size, check_steps_of, json_size, start_id,
};
use serde_json::Value;

/// Milliseconds since the Unix epoch.
pub(crate) fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// Monotonic ULID generator: ids made by one store sort in creation order, even within one
/// millisecond, so "newest first" is stable.
#[derive(Default)]
pub(crate) struct IdGen(Mutex<ulid::Generator>);

impl IdGen {
    pub(crate) fn next(&self) -> String {
        let generated = match self.0.lock() {
            Ok(mut generator) => generator.generate().ok(),
            Err(_) => None,
        };
        generated.unwrap_or_else(ulid::Ulid::new).to_string()
    }

    /// `id` if given (and not empty), a new ULID otherwise.
    pub(crate) fn or_new(&self, id: Option<String>) -> StoreResult<String> {
        match id {
            Some(id) if id.is_empty() => Err(invalid("id must not be empty")),
            Some(id) => Ok(id),
            None => Ok(self.next()),
        }
    }
}

pub(crate) fn invalid(message: impl Into<String>) -> Error {
    Error::store(StoreErrorKind::InvalidInput, message)
}

pub(crate) fn not_found(what: &str, id: &str) -> Error {
    Error::store(StoreErrorKind::NotFound, format!("{what} `{id}` not found"))
}

pub(crate) fn conflict(message: impl Into<String>) -> Error {
    Error::store(StoreErrorKind::Conflict, message)
}

pub(crate) fn require(field: &str, value: &str) -> StoreResult<()> {
    if value.trim().is_empty() {
        return Err(invalid(format!("{field} must not be empty")));
    }
    Ok(())
}

/// The columns of a new execution row that say how it starts: `pending`, or `running` under
/// a lease.
pub(crate) struct StartColumns {
    pub(crate) status: ExecutionStatus,
    pub(crate) lease_owner: Option<String>,
    pub(crate) lease_until: Option<i64>,
    pub(crate) started_at: Option<i64>,
    pub(crate) updated_at: i64,
}

/// Checks a new execution before anything is written (owner, payload sizes) and gives its
/// starting columns at `now`: `pending`, or with `start` (lease owner, lease end, start time)
/// `running` under that lease.
pub(crate) fn new_execution_row(
    limits: &Limits,
    new: &NewExecution,
    start: Option<(&str, i64, i64)>,
    now: i64,
) -> StoreResult<StartColumns> {
    require("owner_id", &new.owner_id)?;
    limits.json("input", &new.input)?;
    limits.json("params", &new.params)?;
    limits.opt_json("graph", new.graph.as_deref())?;
    Ok(match start {
        Some((owner, until, at)) => {
            require("lease owner", owner)?;
            StartColumns {
                status: ExecutionStatus::Running,
                lease_owner: Some(owner.to_owned()),
                lease_until: Some(until),
                started_at: Some(at),
                updated_at: at,
            }
        }
        None => StartColumns {
            status: ExecutionStatus::Pending,
            lease_owner: None,
            lease_until: None,
            started_at: None,
            updated_at: now,
        },
    })
}

/// The row an insert of `new` as execution `id` at `now` with `start` wrote, built from what
/// was written ([`ExecutionRecord::new_row`]) instead of read back: a `RETURNING` would parse
/// the row's JSON again, the whole graph of an ad-hoc execution included.
pub(crate) fn new_execution_record(
    id: String,
    new: NewExecution,
    start: StartColumns,
    now: i64,
) -> ExecutionRecord {
    let lease = match (start.lease_owner, start.lease_until, start.started_at) {
        (Some(owner), Some(until), Some(at)) => Some((owner, until, at)),
        _ => None,
    };
    ExecutionRecord::new_row(id, new, start.status, lease, now)
}

/// A failed insert of execution `id`, in the store's words.
pub(crate) fn execution_insert_error(id: &str, e: Error) -> Error {
    match e.store_kind() {
        Some(StoreErrorKind::Conflict) => conflict(format!("execution `{id}` already exists")),
        Some(StoreErrorKind::NotFound) => Error::store(
            StoreErrorKind::NotFound,
            "the execution's definition, template or conversation does not exist",
        ),
        _ => e,
    }
}

/// `null` becomes `{}` (for metadata-like columns).
pub(crate) fn object_or_empty(value: Value) -> Value {
    if value.is_null() {
        Value::Object(serde_json::Map::new())
    } else {
        value
    }
}

/// Checks every payload of a write against the limit, before touching the database.
pub(crate) struct Limits(pub(crate) usize);

impl Limits {
    pub(crate) fn json(&self, what: &str, value: &Value) -> StoreResult<()> {
        // Most payloads are far under the limit: a bound on their size, summed without
        // serialising, proves it. The exact size is counted only when the bound is over.
        if json_size_bound(value, self.0) <= self.0 {
            return Ok(());
        }
        check_payload_size(what, json_size(value), self.0)
    }

    pub(crate) fn text(&self, what: &str, value: &str) -> StoreResult<()> {
        check_payload_size(what, value.len(), self.0)
    }

    pub(crate) fn opt_json(&self, what: &str, value: Option<&Value>) -> StoreResult<()> {
        value.map_or(Ok(()), |v| self.json(what, v))
    }

    pub(crate) fn opt_text(&self, what: &str, value: Option<&str>) -> StoreResult<()> {
        value.map_or(Ok(()), |v| self.text(what, v))
    }
}

/// An upper bound of the size of `value` serialised as JSON (each string byte counted as an
/// escape of six bytes, each number as the longest one), or the first partial sum over `stop`.
///
/// Recursive, like the serialiser that writes the value afterwards (a value nested deeper than
/// the stack allows could not be written either); no allocation, so a step's small payloads
/// cost a few instructions per item.
fn json_size_bound(value: &Value, stop: usize) -> usize {
    /// The longest number serde_json writes (`-2.2250738585072014e-308`; `i64::MIN` and
    /// `u64::MAX` are 20 bytes).
    const NUMBER: usize = 24;
    fn string(s: &str) -> usize {
        2 + 6 * s.len()
    }
    fn add(value: &Value, total: usize, stop: usize) -> usize {
        match value {
            Value::Null | Value::Bool(_) => total + 5,
            Value::Number(_) => total + NUMBER,
            Value::String(s) => total + string(s),
            Value::Array(items) => {
                let mut total = total + 2 + items.len();
                for item in items {
                    if total > stop {
                        break;
                    }
                    total = add(item, total, stop);
                }
                total
            }
            Value::Object(map) => {
                let mut total = total + 2;
                for (key, item) in map {
                    total += string(key) + 2;
                    if total > stop {
                        break;
                    }
                    total = add(item, total, stop);
                }
                total
            }
        }
    }
    add(value, 0, stop)
}

/// Checks the events of a write (types present, payloads within the limit).
pub(crate) fn check_events(limits: &Limits, events: &[NewEvent]) -> StoreResult<()> {
    for event in events {
        require("event type", &event.event_type)?;
        limits.json("event payload", &event.payload)?;
    }
    Ok(())
}

/// Checks a step of `commit_steps` before the transaction starts.
pub(crate) fn check_step(limits: &Limits, step: &StepCommit) -> StoreResult<()> {
    let run = &step.node_run;
    require("node_run.execution_id", &run.execution_id)?;
    require("node_run.node_id", &run.node_id)?;
    limits.json("state delta", &step.state_delta)?;
    limits.opt_json("snapshot", step.snapshot.as_ref())?;
    limits.opt_json("node output", run.output.as_ref())?;
    limits.opt_text("node error", run.error.as_deref())?;
    check_events(limits, &step.events)
}

/// Checks the outcome of `complete_execution` before the transaction starts: a terminal
/// status, no negative usage, payloads within the limit.
pub(crate) fn check_outcome(limits: &Limits, outcome: &ExecutionOutcome) -> StoreResult<()> {
    if !outcome.status.is_terminal() {
        return Err(invalid(format!(
            "complete_execution needs completed, failed or cancelled (got {})",
            outcome.status
        )));
    }
    if outcome.prompt_tokens < 0 || outcome.completion_tokens < 0 || outcome.cost < 0.0 {
        return Err(invalid("token counts and cost must not be negative"));
    }
    limits.opt_json("output", outcome.output.as_ref())?;
    limits.opt_text("response", outcome.response.as_deref())?;
    limits.opt_text("error", outcome.error.as_deref())?;
    check_events(limits, &outcome.events)
}

/// Checks a `finish_execution` call: every step is execution `id`'s and valid, and so is
/// the outcome.
/// Checks a `start_with_steps` or `start_and_finish` call before anything is written: the
/// execution as `start_execution` checks it, its steps (all of it), the intent (of it);
/// gives its id and starting columns at `now`.
pub(crate) fn check_start<'a>(
    limits: &Limits,
    start: &'a ExecutionStart,
    steps: &[StepCommit],
    intent: Option<&NodeRunRecord>,
    now: i64,
) -> StoreResult<(&'a str, StartColumns)> {
    let id = start_id(start)?;
    require("id", id)?;
    check_steps_of(id, steps)?;
    for step in steps {
        check_step(limits, step)?;
    }
    if let Some(intent) = intent {
        require("node_run.node_id", &intent.node_id)?;
        if intent.execution_id != id {
            return Err(invalid(format!(
                "a write of execution `{id}` got the intent of execution `{}`",
                intent.execution_id
            )));
        }
    }
    let row = new_execution_row(
        limits,
        &start.new,
        Some((&start.lease_owner, start.lease_until, start.at)),
        now,
    )?;
    Ok((id, row))
}

pub(crate) fn check_finish(
    limits: &Limits,
    id: &str,
    steps: &[StepCommit],
    outcome: &ExecutionOutcome,
) -> StoreResult<()> {
    check_steps_of(id, steps)?;
    for step in steps {
        check_step(limits, step)?;
    }
    check_outcome(limits, outcome)
}

/// A conversation's usage: the sums over its executions, one row when it exists (both
/// backends; `?1` is its id, BIGINT casts because Postgres sums BIGINT as NUMERIC).
pub(crate) const CONVERSATION_USAGE_SQL: &str = "SELECT COUNT(e.id),
        CAST(COALESCE(SUM(e.prompt_tokens), 0) AS BIGINT),
        CAST(COALESCE(SUM(e.completion_tokens), 0) AS BIGINT),
        CAST(COALESCE(SUM(e.total_tokens), 0) AS BIGINT),
        CAST(COALESCE(SUM(e.cost), 0) AS DOUBLE PRECISION)
     FROM conversations c LEFT JOIN workflow_executions e ON e.conversation_id = c.id
     WHERE c.id = ?1 GROUP BY c.id";

/// A stored count (a column checked `>= 1`) as the config's `u64`.
pub(crate) fn from_db_count(value: Option<i64>) -> Option<u64> {
    value.and_then(|v| u64::try_from(v).ok())
}

/// A config's `u64` count as a column value (saturating).
pub(crate) fn to_db_count(value: Option<u64>) -> Option<i64> {
    value.map(|v| i64::try_from(v).unwrap_or(i64::MAX))
}

/// The JSON text of `value`, written straight into bytes: `Display` (`to_string`) goes through
/// the formatting machinery piece by piece, at about twice the instructions.
pub(crate) fn to_json_text(value: &Value) -> String {
    // Serialising a `Value` cannot fail (its keys are strings); the fallback is never taken.
    serde_json::to_string(value).unwrap_or_else(|_| value.to_string())
}

/// The JSON text of `value` as [`object_or_empty`] makes it (`null` is `{}`).
pub(crate) fn object_text(value: &Value) -> String {
    if value.is_null() {
        "{}".to_owned()
    } else {
        to_json_text(value)
    }
}

pub(crate) fn strings_json(values: &[String]) -> String {
    to_json_text(&Value::from(values.to_vec()))
}

pub(crate) fn strings_from_json(value: Value) -> Vec<String> {
    match value {
        Value::Array(items) => items
            .into_iter()
            .filter_map(|v| match v {
                Value::String(s) => Some(s),
                _ => None,
            })
            .collect(),
        _ => Vec::new(),
    }
}

pub(crate) fn check_search(query: &SearchQuery) -> StoreResult<Vec<String>> {
    require("owner_id", &query.owner_id)?;
    if !(0.0..=1.0).contains(&query.score_threshold) {
        return Err(invalid(format!(
            "score_threshold must be within 0..=1 (got {})",
            query.score_threshold
        )));
    }
    Ok(query_terms(&query.query))
}

pub(crate) fn check_new_job(limits: &Limits, new: &NewJob) -> StoreResult<()> {
    require("queue", &new.queue)?;
    require("kind", &new.kind)?;
    if new.max_attempts < 1 {
        return Err(invalid(format!(
            "max_attempts must be at least 1 (got {})",
            new.max_attempts
        )));
    }
    if let Some(timeout) = new.timeout_ms
        && timeout <= 0
    {
        return Err(invalid(format!(
            "timeout_ms must be positive (got {timeout})"
        )));
    }
    match (&new.batch_id, new.batch_concurrency) {
        (_, Some(n)) if n < 1 => {
            return Err(invalid(format!(
                "batch_concurrency must be at least 1 (got {n})"
            )));
        }
        (None, Some(_)) => {
            return Err(invalid("batch_concurrency needs a batch_id"));
        }
        _ => {}
    }
    if let Some(owner) = &new.owner_id {
        require("owner_id", owner)?;
    }
    limits.json("job payload", &new.payload)
}

pub(crate) fn check_lease(lease_ms: i64) -> StoreResult<()> {
    if lease_ms <= 0 {
        return Err(invalid(format!(
            "lease_ms must be positive (got {lease_ms})"
        )));
    }
    Ok(())
}

/// `InvalidInput` unless `role` is a workspace role.
pub(crate) fn check_workspace_role(role: &str) -> StoreResult<()> {
    if chatter_core::store::WORKSPACE_ROLES.contains(&role) {
        Ok(())
    } else {
        Err(invalid(format!(
            "unknown workspace role `{role}` (expected viewer, editor or admin)"
        )))
    }
}

/// `InvalidInput` unless resources of this type can be shared in a workspace.
pub(crate) fn check_resource_type(resource_type: &str) -> StoreResult<()> {
    if matches!(resource_type, "definition" | "template") {
        Ok(())
    } else {
        Err(invalid(format!(
            "cannot share a `{resource_type}` (expected definition or template)"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_monotonic() {
        let ids = IdGen::default();
        let a = ids.next();
        let b = ids.next();
        assert!(a < b, "{a} < {b}");
        assert_eq!(a.len(), 26);
    }

    /// The bound is never under the exact size (escapes, extreme numbers, nesting), and the
    /// limit is exact: a payload of exactly the limit passes, one byte more is refused with
    /// its exact size.
    #[test]
    fn payload_limit_is_exact_and_the_bound_is_never_under() {
        let values = [
            serde_json::json!(null),
            serde_json::json!([true, false, null]),
            serde_json::json!({"\u{1}\"\\": "\u{0}\u{1f}\n\t\"é😀", "": ""}),
            serde_json::json!([i64::MIN, u64::MAX, -2.2250738585072014e-308, f64::MAX, 0.1]),
            serde_json::json!({"a": [{"b": [[], {}]}, "x".repeat(100)]}),
        ];
        for value in &values {
            let exact = json_size(value);
            assert!(json_size_bound(value, usize::MAX) >= exact, "{value}");
        }
        let value = serde_json::json!({"text": "\u{1}".repeat(50)});
        let exact = json_size(&value);
        Limits(exact).json("input", &value).unwrap();
        let err = Limits(exact - 1).json("input", &value).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "storage error (payload_too_large): input is {exact} bytes, over the limit of {} bytes",
                exact - 1
            )
        );
    }

    #[test]
    fn explicit_empty_id_is_refused() {
        let err = IdGen::default().or_new(Some(String::new())).unwrap_err();
        assert_eq!(
            err.to_string(),
            "storage error (invalid_input): id must not be empty"
        );
    }
}
