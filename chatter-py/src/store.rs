//! Persistence of finished executions to a `chatter-store` backend, and reading them back.
//!
//! The engine has no durability yet (DESIGN §8), so the binding persists in the `exit` mode:
//! when an execution ends, its record, its node runs (one step each, with its state delta) and
//! its events are written; nothing is written while it runs, and nothing can be resumed.

use std::sync::Arc;

use chatter_core::store::{
    ExecutionFilter, ExecutionKind, ExecutionOutcome, ExecutionStatus, NewEvent, NewExecution,
    NodeRunRecord, NodeRunStatus, Page, StepCommit, Store,
};
use chatter_core::{Error, ExecutionResult, Result};
use serde_json::{Value, json};

/// The owner recorded for executions run from Python.
pub(crate) const OWNER: &str = "python";

fn status<T: serde::de::DeserializeOwned>(name: &str) -> Result<T> {
    serde_json::from_value(Value::String(name.to_owned())).map_err(|e| Error::Internal {
        message: format!("status `{name}` has no stored equivalent: {e}"),
    })
}

fn event(e: &chatter_core::Event) -> NewEvent {
    let mut payload = serde_json::to_value(&e.kind).unwrap_or(Value::Null);
    if let Value::Object(map) = &mut payload {
        map.remove("type");
    }
    NewEvent::new(e.ts_ms, e.kind.type_name(), payload)
}

/// Writes a finished execution: its record, one step per node run, its events, its outcome.
///
/// # Errors
///
/// The store's errors ([`Error::Store`]).
pub(crate) async fn persist(
    store: &Arc<dyn Store>,
    input: Value,
    r: &ExecutionResult,
) -> Result<()> {
    let mut new = NewExecution::new(OWNER, ExecutionKind::Adhoc, input);
    new.id = Some(r.execution_id.clone());
    store.create_execution(new).await?;
    store
        .set_execution_status(&r.execution_id, ExecutionStatus::Running, r.started_at_ms)
        .await?;
    let steps: Vec<StepCommit> = r
        .node_runs
        .iter()
        .map(|run| {
            let mut record = NodeRunRecord::started(
                &r.execution_id,
                &run.node_id,
                i64::from(run.iteration),
                i64::from(run.attempt),
                run.started_at_ms,
            );
            record.status = status::<NodeRunStatus>(
                serde_json::to_value(run.status)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_owned))
                    .as_deref()
                    .unwrap_or("completed"),
            )?;
            let duration = i64::try_from(run.duration_ms).unwrap_or(i64::MAX);
            record.duration_ms = Some(duration);
            record.finished_at = Some(run.started_at_ms.saturating_add(duration));
            record.error = run.error.clone();
            record.output = (!run.output.is_null()).then(|| run.output.clone());
            if let Some(usage) = run.delta.usage {
                record.prompt_tokens = i64::try_from(usage.prompt_tokens).unwrap_or(i64::MAX);
                record.completion_tokens =
                    i64::try_from(usage.completion_tokens).unwrap_or(i64::MAX);
                record.cost = usage.cost;
            }
            Ok(StepCommit {
                node_run: record,
                state_delta: serde_json::to_value(&run.delta).unwrap_or(Value::Null),
                events: Vec::new(),
                snapshot: None,
            })
        })
        .collect::<Result<_>>()?;
    if !steps.is_empty() {
        store.commit_steps(&steps).await?;
    }
    let (last, before) = match r.events.split_last() {
        Some((last, before)) => (vec![event(last)], before),
        None => (Vec::new(), &r.events[..]),
    };
    if !before.is_empty() {
        let events: Vec<NewEvent> = before.iter().map(event).collect();
        store.append_events(&r.execution_id, &events).await?;
    }
    let outcome = ExecutionOutcome {
        status: status::<ExecutionStatus>(r.status.as_str())?,
        output: Some(json!({"variables": r.variables})),
        response: r.response.clone(),
        error: r.error.as_ref().map(|e| e.message.clone()),
        prompt_tokens: i64::try_from(r.usage.prompt_tokens).unwrap_or(i64::MAX),
        completion_tokens: i64::try_from(r.usage.completion_tokens).unwrap_or(i64::MAX),
        cost: r.usage.cost,
        finished_at: r
            .started_at_ms
            .saturating_add(i64::try_from(r.duration_ms).unwrap_or(i64::MAX)),
        events: last,
    };
    store.complete_execution(&r.execution_id, outcome).await?;
    Ok(())
}

/// The stored executions, newest first as the store lists them.
///
/// # Errors
///
/// The store's errors; an unknown status name.
pub(crate) async fn list(
    store: &Arc<dyn Store>,
    status_filter: Option<String>,
    limit: u32,
    offset: u64,
) -> Result<Value> {
    let filter = ExecutionFilter {
        status: status_filter
            .as_deref()
            .map(status::<ExecutionStatus>)
            .transpose()?,
        ..ExecutionFilter::default()
    };
    let records = store
        .list_executions(&filter, Page::new(limit, offset))
        .await?;
    Ok(serde_json::to_value(records).unwrap_or(Value::Null))
}

/// One stored execution with its node runs and events, or null.
///
/// # Errors
///
/// The store's errors.
pub(crate) async fn get(store: &Arc<dyn Store>, id: &str) -> Result<Value> {
    let Some(record) = store.get_execution(id).await? else {
        return Ok(Value::Null);
    };
    let runs = store.list_node_runs(id).await?;
    let events = store.list_events(id, 0, Page::MAX_LIMIT).await?;
    Ok(json!({
        "execution": record,
        "node_runs": runs,
        "events": events,
    }))
}
