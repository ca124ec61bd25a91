//! Durable executions in a `chatter-store` backend: runs go through
//! [`chatter_core::tracker::WorkflowTracker`] (each step committed as it happens, in the
//! engine's durability mode), and are resumed, approved, listed step by step and forked
//! through it; this module adds the binding's owner check and reads executions back.

use std::sync::Arc;

use chatter_core::engine::{DurabilityMode, Engine, PreparedWorkflow, RunOptions};
use chatter_core::store::{
    ExecutionFilter, ExecutionKind, ExecutionRecord, ExecutionStatus, Page, Store,
};
use chatter_core::tracker::{
    Decision, ExecutionMeta, GraphSource, StoreGraphSource, WorkflowTracker,
};
use chatter_core::{Error, ExecutionResult, Result, WorkflowDefinition};
use serde_json::{Map, Value, json};

/// The owner recorded for executions run from Python.
pub(crate) const OWNER: &str = "python";

/// A store and the tracker that writes executions to it.
#[derive(Clone)]
pub(crate) struct Durable {
    /// The store.
    pub(crate) store: Arc<dyn Store>,
    /// The tracker over it.
    pub(crate) tracker: WorkflowTracker,
    /// The tracker's durability mode.
    pub(crate) mode: DurabilityMode,
}

fn status<T: serde::de::DeserializeOwned>(name: &str) -> Result<T> {
    serde_json::from_value(Value::String(name.to_owned())).map_err(|e| Error::InvalidInput {
        message: format!("unknown status `{name}`: {e}"),
    })
}

fn not_found(id: &str) -> Error {
    Error::NotFound {
        what: "execution".into(),
        name: id.to_owned(),
    }
}

/// The record of `id` when it is one of the binding's executions.
async fn owned(store: &Arc<dyn Store>, id: &str) -> Result<ExecutionRecord> {
    match store.get_execution(id).await? {
        Some(record) if record.owner_id == OWNER => Ok(record),
        _ => Err(not_found(id)),
    }
}

/// `options` with the binding's owner (so another owner's execution is not found).
fn owned_options(mut options: RunOptions) -> RunOptions {
    options.owner = Some(OWNER.to_owned());
    options
}

/// The graph an execution runs: `given`, else the one the store knows.
async fn graph_of(
    d: &Durable,
    record: &ExecutionRecord,
    given: Option<Arc<WorkflowDefinition>>,
) -> Result<Arc<WorkflowDefinition>> {
    match given {
        Some(def) => Ok(def),
        None => StoreGraphSource::new(d.store.clone())
            .definition_for(record)
            .await
            .map(Arc::new),
    }
}

impl Durable {
    /// Runs `def` durably; calls `observe` (when given) with each event. Unobserved, the
    /// calling thread is not woken for each event (`WorkflowTracker::run`).
    ///
    /// # Errors
    ///
    /// As [`WorkflowTracker::run_observed`]; the storage failure of a run not fully recorded.
    pub(crate) async fn run(
        &self,
        engine: &Engine,
        prepared: &PreparedWorkflow,
        input: Value,
        options: RunOptions,
        observe: Option<impl FnMut(&chatter_core::Event)>,
    ) -> Result<ExecutionResult> {
        let meta = ExecutionMeta::new(OWNER, ExecutionKind::Adhoc);
        match observe {
            Some(observe) => {
                self.tracker
                    .run_prepared_observed(engine, prepared, input, options, meta, observe)
                    .await
            }
            None => {
                self.tracker
                    .run_prepared(engine, prepared, input, options, meta)
                    .await
            }
        }?
        .into_result()
    }

    /// Resumes execution `id` (with a decision for a waiting approval).
    ///
    /// # Errors
    ///
    /// `NotFound` for an unknown or foreign execution; as [`WorkflowTracker::resume`].
    pub(crate) async fn resume(
        &self,
        engine: &Engine,
        id: &str,
        given: Option<Arc<WorkflowDefinition>>,
        decision: Option<Decision>,
        options: RunOptions,
    ) -> Result<ExecutionResult> {
        let record = owned(&self.store, id).await?;
        let def = graph_of(self, &record, given).await?;
        self.tracker
            .resume(engine, &def, id, decision, owned_options(options))
            .await?
            .into_result()
    }

    /// Cancels stored execution `id` that no process runs (waiting, pending, or abandoned).
    ///
    /// # Errors
    ///
    /// As [`WorkflowTracker::cancel`] (`NotFound` for a foreign execution too).
    pub(crate) async fn cancel(&self, id: &str, reason: &str) -> Result<()> {
        let now = chatter_core::engine::Clock::now_ms(&chatter_core::engine::SystemClock);
        self.tracker.cancel(id, Some(OWNER), reason, now).await?;
        Ok(())
    }

    /// A new execution from step `step` of `id`, with `variables` set.
    ///
    /// # Errors
    ///
    /// `NotFound` for an unknown or foreign execution; as [`WorkflowTracker::fork`].
    pub(crate) async fn fork(
        &self,
        engine: &Engine,
        id: &str,
        step: i64,
        variables: Option<Map<String, Value>>,
        given: Option<Arc<WorkflowDefinition>>,
        options: RunOptions,
    ) -> Result<ExecutionResult> {
        let record = owned(&self.store, id).await?;
        let def = graph_of(self, &record, given).await?;
        self.tracker
            .fork(engine, &def, id, step, variables, owned_options(options))
            .await?
            .into_result()
    }

    /// The steps of `id`, each with the state after it.
    ///
    /// # Errors
    ///
    /// `NotFound` for an unknown or foreign execution; as [`WorkflowTracker::steps`].
    pub(crate) async fn steps(&self, id: &str) -> Result<Value> {
        owned(&self.store, id).await?;
        let steps = self.tracker.steps(id).await?;
        Ok(serde_json::to_value(steps).unwrap_or(Value::Null))
    }

    /// Resumes every due execution of the binding's owner: expired leases, timed-out approvals.
    ///
    /// # Errors
    ///
    /// The listing's storage errors; each execution's own failure is in its entry.
    pub(crate) async fn resume_due(
        &self,
        engine: &Engine,
    ) -> Result<Vec<(String, Result<ExecutionResult>)>> {
        let now = engine.services().clock.now_ms();
        let source = StoreGraphSource::new(self.store.clone());
        let due = self.tracker.resume_due(engine, &source, now).await?;
        Ok(due
            .into_iter()
            .map(|(id, outcome)| (id, outcome.and_then(|run| run.into_result())))
            .collect())
    }
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
