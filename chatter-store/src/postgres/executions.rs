//! Executions, node runs, events and checkpoints on Postgres.

use async_trait::async_trait;
use chatter_core::store::{
    CheckpointKind, CheckpointRecord, EventRecord, ExecutionFilter, ExecutionKind,
    ExecutionOutcome, ExecutionRecord, ExecutionStart, ExecutionStatus, ExecutionStore, NewEvent,
    NewExecution, NodeRunRecord, NodeRunStatus, Page, RetentionPolicy, StepCommit, StepReceipt,
    StoreResult,
};
use tokio_postgres::{GenericClient, Row, Statement};

use super::{Pg, PostgresStore, col, enum_col};
use crate::common::{
    StartColumns, check_events, check_finish, check_outcome, check_start, check_step, conflict,
    execution_insert_error, invalid, new_execution_record, new_execution_row, not_found, now_ms,
    require,
};

fn execution_row(row: &Row) -> StoreResult<ExecutionRecord> {
    Ok(ExecutionRecord {
        id: col(row, "id")?,
        owner_id: col(row, "owner_id")?,
        definition_id: col(row, "definition_id")?,
        template_id: col(row, "template_id")?,
        kind: enum_col(row, "kind", ExecutionKind::parse)?,
        status: enum_col(row, "status", ExecutionStatus::parse)?,
        input: col(row, "input")?,
        params: col(row, "params")?,
        output: col(row, "output")?,
        response: col(row, "response")?,
        error: col(row, "error")?,
        prompt_tokens: col(row, "prompt_tokens")?,
        completion_tokens: col(row, "completion_tokens")?,
        total_tokens: col(row, "total_tokens")?,
        cost: col(row, "cost")?,
        conversation_id: col(row, "conversation_id")?,
        last_event_seq: col(row, "last_event_seq")?,
        step_count: col(row, "step_count")?,
        created_at: col(row, "created_at")?,
        updated_at: col(row, "updated_at")?,
        started_at: col(row, "started_at")?,
        finished_at: col(row, "finished_at")?,
        duration_ms: col(row, "duration_ms")?,
        lease_owner: col(row, "lease_owner")?,
        lease_expires_at: col(row, "lease_expires_at")?,
        wake_at: col(row, "wake_at")?,
        graph: col::<Option<serde_json::Value>>(row, "graph")?.map(std::sync::Arc::new),
    })
}

fn node_run_row(row: &Row) -> StoreResult<NodeRunRecord> {
    Ok(NodeRunRecord {
        execution_id: col(row, "execution_id")?,
        node_id: col(row, "node_id")?,
        iteration: col(row, "iteration")?,
        attempt: col(row, "attempt")?,
        status: enum_col(row, "status", NodeRunStatus::parse)?,
        started_at: col(row, "started_at")?,
        finished_at: col(row, "finished_at")?,
        duration_ms: col(row, "duration_ms")?,
        prompt_tokens: col(row, "prompt_tokens")?,
        completion_tokens: col(row, "completion_tokens")?,
        cost: col(row, "cost")?,
        error: col(row, "error")?,
        output: col(row, "output")?,
        step: col(row, "step")?,
        route: col(row, "route")?,
        error_class: col(row, "error_class")?,
        idempotency_key: col(row, "idempotency_key")?,
    })
}

async fn explain_no_row<C: GenericClient>(
    tx: &C,
    id: &str,
    to: Option<ExecutionStatus>,
) -> chatter_core::Error {
    let status = match tx
        .query_opt(
            "SELECT status FROM workflow_executions WHERE id = $1",
            &[&id],
        )
        .await
        .pg()
    {
        Ok(row) => row,
        Err(e) => return e,
    };
    let Some(row) = status else {
        return not_found("execution", id);
    };
    let from = match enum_col(&row, "status", ExecutionStatus::parse) {
        Ok(from) => from,
        Err(e) => return e,
    };
    match to {
        Some(to) => conflict(format!("execution `{id}` cannot go from {from} to {to}")),
        None => conflict(format!("execution `{id}` has ended ({from})")),
    }
}

async fn reserve(
    tx: &deadpool_postgres::Transaction<'_>,
    id: &str,
    count: usize,
    step: bool,
    now: i64,
) -> StoreResult<(i64, i64)> {
    let count = i64::try_from(count).map_err(|_| invalid("too many events"))?;
    let stmt = tx
        .prepare_cached(
            "UPDATE workflow_executions
             SET last_event_seq = last_event_seq + $2, step_count = step_count + $3, updated_at = $4
             WHERE id = $1 AND status NOT IN ('completed', 'failed', 'cancelled')
             RETURNING last_event_seq, step_count",
        )
        .await
        .pg()?;
    let row = tx
        .query_opt(&stmt, &[&id, &count, &i64::from(step), &now])
        .await
        .pg()?;
    match row {
        Some(row) => Ok((col(&row, "last_event_seq")?, col(&row, "step_count")?)),
        None => Err(explain_no_row(&**tx, id, None).await),
    }
}

async fn insert_events(
    tx: &deadpool_postgres::Transaction<'_>,
    id: &str,
    first_seq: i64,
    events: &[NewEvent],
) -> StoreResult<()> {
    if events.is_empty() {
        return Ok(());
    }
    let stmt = tx
        .prepare_cached(
            "INSERT INTO workflow_events (execution_id, seq, ts, event_type, payload) VALUES ($1, $2, $3, $4, $5)",
        )
        .await
        .pg()?;
    for (offset, event) in (0_i64..).zip(events) {
        tx.execute(
            &stmt,
            &[
                &id,
                &(first_seq + offset),
                &event.ts,
                &event.event_type,
                &event.payload,
            ],
        )
        .await
        .pg()?;
    }
    Ok(())
}

/// One step in ONE statement: data-modifying CTEs reserve the sequence numbers and the step
/// number on the execution row (locking it), upsert the node run, insert the events and the
/// checkpoint rows. Outside a transaction it commits on its own: one round trip, one commit.
/// Nothing is written when the execution is unknown or has ended (every insert selects from
/// the UPDATE), and a failing constraint aborts the whole statement.
const COMMIT_STEP_SQL: &str = "
WITH ex AS (
    UPDATE workflow_executions
    SET last_event_seq = last_event_seq + $2::bigint, step_count = step_count + 1, updated_at = $3::bigint
    WHERE id = $1::text AND status NOT IN ('completed', 'failed', 'cancelled')
    RETURNING last_event_seq, step_count
), node_run AS (
    INSERT INTO workflow_node_runs (execution_id, node_id, iteration, attempt, status, started_at,
        finished_at, duration_ms, prompt_tokens, completion_tokens, cost, error, output,
        step, route, error_class, idempotency_key)
    SELECT $1::text, $4::text, $5::bigint, $6::bigint, $7::text, $8::bigint, $9::bigint, $10::bigint,
        $11::bigint, $12::bigint, $13::float8, $14::text, $15::jsonb, ex.step_count, $21::jsonb,
        $22::text, $23::text
    FROM ex
    ON CONFLICT (execution_id, node_id, iteration, attempt) DO UPDATE SET
        status = excluded.status, started_at = excluded.started_at,
        finished_at = excluded.finished_at, duration_ms = excluded.duration_ms,
        prompt_tokens = excluded.prompt_tokens, completion_tokens = excluded.completion_tokens,
        cost = excluded.cost, error = excluded.error, output = excluded.output,
        step = excluded.step, route = excluded.route, error_class = excluded.error_class,
        idempotency_key = COALESCE(excluded.idempotency_key, workflow_node_runs.idempotency_key)
), superseded AS (
    -- The intents of the attempts before this one (retried inside the node run) ended.
    UPDATE workflow_node_runs r
    SET status = 'failed', finished_at = $8::bigint,
        error = 'attempt ' || r.attempt || ' failed; attempt ' || $6::bigint || ' followed'
    FROM ex
    WHERE $6::bigint > 1 AND r.execution_id = $1::text AND r.node_id = $4::text
      AND r.iteration = $5::bigint AND r.attempt < $6::bigint AND r.status = 'running'
), events AS (
    INSERT INTO workflow_events (execution_id, seq, ts, event_type, payload)
    SELECT $1::text, ex.last_event_seq - $2::bigint + e.ord, e.ts, e.event_type, e.payload
    FROM ex, unnest($16::bigint[], $17::text[], $18::jsonb[]) WITH ORDINALITY AS e(ts, event_type, payload, ord)
), checkpoints AS (
    INSERT INTO workflow_checkpoints (execution_id, step, kind, node_id, state, created_at)
    SELECT $1::text, ex.step_count, c.kind, $4::text, c.state, $3::bigint
    FROM ex, (
        SELECT 'delta'::text AS kind, $19::jsonb AS state WHERE $19::jsonb IS NOT NULL
        UNION ALL
        SELECT 'snapshot'::text, $20::jsonb WHERE $20::jsonb IS NOT NULL
    ) c
)
SELECT last_event_seq, step_count FROM ex";

async fn commit_one<C: GenericClient>(
    client: &C,
    stmt: &Statement,
    step: &StepCommit,
    now: i64,
) -> StoreResult<StepReceipt> {
    let run = &step.node_run;
    let id = run.execution_id.as_str();
    let count = step.events.len() as i64;
    let ts: Vec<i64> = step.events.iter().map(|e| e.ts).collect();
    let types: Vec<&str> = step.events.iter().map(|e| e.event_type.as_str()).collect();
    let payloads: Vec<&serde_json::Value> = step.events.iter().map(|e| &e.payload).collect();
    let delta = (!step.state_delta.is_null()).then_some(&step.state_delta);
    let row = client
        .query_opt(
            stmt,
            &[
                &id,
                &count,
                &now,
                &run.node_id,
                &run.iteration,
                &run.attempt,
                &run.status.as_str(),
                &run.started_at,
                &run.finished_at,
                &run.duration_ms,
                &run.prompt_tokens,
                &run.completion_tokens,
                &run.cost,
                &run.error,
                &run.output,
                &ts,
                &types,
                &payloads,
                &delta,
                &step.snapshot,
                &run.route,
                &run.error_class,
                &run.idempotency_key,
            ],
        )
        .await
        .pg()?;
    let Some(row) = row else {
        return Err(explain_no_row(client, id, None).await);
    };
    let last_seq: i64 = col(&row, "last_event_seq")?;
    Ok(StepReceipt {
        step: col(&row, "step_count")?,
        first_seq: last_seq - count + 1,
        last_seq,
    })
}

fn predecessors(status: ExecutionStatus) -> Vec<&'static str> {
    status
        .allowed_predecessors()
        .iter()
        .map(|s| s.as_str())
        .collect()
}

/// Inserts `new` as execution `id` at `now` with its starting columns (no `RETURNING`: the
/// record is built from what was written, see `new_execution_record`).
async fn insert_in<C: GenericClient>(
    client: &C,
    id: &str,
    new: &NewExecution,
    start: &StartColumns,
    now: i64,
) -> StoreResult<()> {
    // `null` is stored as `{}`, as `object_or_empty` makes it.
    let empty = serde_json::Value::Object(serde_json::Map::new());
    let input = if new.input.is_null() {
        &empty
    } else {
        &new.input
    };
    let params = if new.params.is_null() {
        &empty
    } else {
        &new.params
    };
    client
        .execute(
            "INSERT INTO workflow_executions (id, owner_id, definition_id, template_id, kind, status, input, params,
                 conversation_id, created_at, updated_at, graph, lease_owner, lease_expires_at, started_at)
             VALUES ($1, $2, $3, $4, $5, $11, $6, $7, $8, $9, $15, $10, $12, $13, $14)",
            &[
                &id,
                &new.owner_id,
                &new.definition_id,
                &new.template_id,
                &new.kind.as_str(),
                input,
                params,
                &new.conversation_id,
                &now,
                &new.graph.as_deref(),
                &start.status.as_str(),
                &start.lease_owner,
                &start.lease_until,
                &start.started_at,
                &start.updated_at,
            ],
        )
        .await
        .pg()
        .map_err(|e| execution_insert_error(id, e))?;
    Ok(())
}

impl PostgresStore {
    /// Inserts an execution row: `pending`, or with `start` (lease owner, lease end, start
    /// time) `running` under that lease.
    async fn insert_execution(
        &self,
        mut new: NewExecution,
        start: Option<(&str, i64, i64)>,
    ) -> StoreResult<ExecutionRecord> {
        let now = now_ms();
        let start = new_execution_row(&self.limits, &new, start, now)?;
        let id = self.ids.or_new(new.id.take())?;
        let client = self.client().await?;
        insert_in(&**client, &id, &new, &start, now).await?;
        Ok(new_execution_record(id, new, start, now))
    }
}

/// Ends execution `id` with `outcome` inside the caller's transaction: status, output,
/// usage, final events, template analytics (`complete_execution`, `finish_execution`).
async fn complete_in(
    tx: &deadpool_postgres::Transaction<'_>,
    id: &str,
    outcome: &ExecutionOutcome,
) -> StoreResult<ExecutionRecord> {
    let status = outcome.status;
    let count = outcome.events.len() as i64;
    let row = tx
        .query_opt(
            "UPDATE workflow_executions SET status = $2, output = $3, response = $4, error = $5,
                 prompt_tokens = $6, completion_tokens = $7, total_tokens = $6::bigint + $7::bigint, cost = $8,
                 finished_at = $9, updated_at = $9, lease_owner = NULL, lease_expires_at = NULL,
                 duration_ms = GREATEST(0, $9 - COALESCE(started_at, created_at)),
                 last_event_seq = last_event_seq + $10
             WHERE id = $1 AND status = ANY($11) RETURNING *",
            &[
                &id,
                &status.as_str(),
                &outcome.output,
                &outcome.response,
                &outcome.error,
                &outcome.prompt_tokens,
                &outcome.completion_tokens,
                &outcome.cost,
                &outcome.finished_at,
                &count,
                &predecessors(status),
            ],
        )
        .await
        .pg()?;
    let Some(row) = row else {
        return Err(explain_no_row(&**tx, id, Some(status)).await);
    };
    let record = execution_row(&row)?;
    insert_events(tx, id, record.last_event_seq - count + 1, &outcome.events).await?;
    if let Some(template_id) = &record.template_id {
        let success = i64::from(status == ExecutionStatus::Completed);
        tx.execute(
            "INSERT INTO template_analytics AS a (template_id, usage_count, success_count, failure_count,
                 total_tokens, total_cost, total_duration_ms, last_used_at)
             VALUES ($1, 1, $2::bigint, 1 - $2::bigint, $3, $4, $5, $6)
             ON CONFLICT (template_id) DO UPDATE SET
                 usage_count = a.usage_count + 1,
                 success_count = a.success_count + excluded.success_count,
                 failure_count = a.failure_count + excluded.failure_count,
                 total_tokens = a.total_tokens + excluded.total_tokens,
                 total_cost = a.total_cost + excluded.total_cost,
                 total_duration_ms = a.total_duration_ms + excluded.total_duration_ms,
                 last_used_at = GREATEST(a.last_used_at, excluded.last_used_at)",
            &[
                template_id,
                &success,
                &record.total_tokens,
                &record.cost,
                &record.duration_ms.unwrap_or(0),
                &outcome.finished_at,
            ],
        )
        .await
        .pg()?;
    }
    Ok(record)
}

/// Writes `steps` (of one or more executions) inside transaction `tx`.
async fn commit_in(
    tx: &deadpool_postgres::Transaction<'_>,
    steps: &[StepCommit],
    now: i64,
) -> StoreResult<Vec<StepReceipt>> {
    if steps.is_empty() {
        return Ok(Vec::new());
    }
    let mut ids: Vec<&str> = steps
        .iter()
        .map(|s| s.node_run.execution_id.as_str())
        .collect();
    ids.sort_unstable();
    ids.dedup();
    if ids.len() > 1 {
        // Lock the executions in one order so concurrent groups cannot deadlock.
        tx.execute(
            "SELECT 1 FROM workflow_executions WHERE id = ANY($1) ORDER BY id FOR UPDATE",
            &[&ids],
        )
        .await
        .pg()?;
    }
    let stmt = tx.prepare_cached(COMMIT_STEP_SQL).await.pg()?;
    let mut receipts = Vec::with_capacity(steps.len());
    for step in steps {
        receipts.push(commit_one(&**tx, &stmt, step, now).await?);
        chatter_core::failpoint::hit("postgres.mid_group");
    }
    Ok(receipts)
}

/// Records node run `run`'s intent (`record_intent`, `commit_steps_with_intent`): one
/// statement, whose insert selects from the execution row (locked, not ended), so an unknown
/// or ended execution gets nothing written.
async fn intent_in<C: GenericClient>(client: &C, run: &NodeRunRecord) -> StoreResult<()> {
    let row = client
        .query_opt(
            "WITH ex AS (
                 SELECT id FROM workflow_executions
                 WHERE id = $1 AND status NOT IN ('completed', 'failed', 'cancelled') FOR UPDATE
             ), ins AS (
                 INSERT INTO workflow_node_runs (execution_id, node_id, iteration, attempt, status,
                     started_at, idempotency_key)
                 SELECT $1, $2, $3, $4, 'running', $5, $6 FROM ex
                 ON CONFLICT (execution_id, node_id, iteration, attempt) DO UPDATE SET
                     idempotency_key = excluded.idempotency_key
                 WHERE workflow_node_runs.status = 'running'
             )
             SELECT id FROM ex",
            &[
                &run.execution_id,
                &run.node_id,
                &run.iteration,
                &run.attempt,
                &run.started_at,
                &run.idempotency_key,
            ],
        )
        .await
        .pg()?;
    if row.is_none() {
        return Err(explain_no_row(client, &run.execution_id, None).await);
    }
    Ok(())
}

#[async_trait]
impl ExecutionStore for PostgresStore {
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

    async fn get_execution(&self, id: &str) -> StoreResult<Option<ExecutionRecord>> {
        let client = self.client().await?;
        let row = client
            .query_opt("SELECT * FROM workflow_executions WHERE id = $1", &[&id])
            .await
            .pg()?;
        row.as_ref().map(execution_row).transpose()
    }

    async fn list_executions(
        &self,
        filter: &ExecutionFilter,
        page: Page,
    ) -> StoreResult<Vec<ExecutionRecord>> {
        let client = self.client().await?;
        let status = filter.status.map(ExecutionStatus::as_str);
        let rows = client
            .query(
                "SELECT * FROM workflow_executions
                 WHERE ($1::text IS NULL OR owner_id = $1) AND ($2::text IS NULL OR definition_id = $2)
                   AND ($3::text IS NULL OR template_id = $3) AND ($4::text IS NULL OR status = $4)
                   AND ($5::text IS NULL OR conversation_id = $5) AND ($6::bigint IS NULL OR created_at >= $6)
                   AND ($7::bigint IS NULL OR created_at < $7)
                 ORDER BY created_at DESC, id DESC LIMIT $8 OFFSET $9",
                &[
                    &filter.owner_id,
                    &filter.definition_id,
                    &filter.template_id,
                    &status,
                    &filter.conversation_id,
                    &filter.created_after,
                    &filter.created_before,
                    &page.sql_limit(),
                    &page.sql_offset(),
                ],
            )
            .await
            .pg()?;
        rows.iter().map(execution_row).collect()
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
        let mut client = self.client().await?;
        let tx = client.transaction().await.pg()?;
        let row = tx
            .query_opt(
                "UPDATE workflow_executions SET status = $2, updated_at = $3,
                     started_at = CASE WHEN $2 = 'running' THEN COALESCE(started_at, $3) ELSE started_at END
                 WHERE id = $1 AND status = ANY($4) RETURNING *",
                &[&id, &status.as_str(), &at, &predecessors(status)],
            )
            .await
            .pg()?;
        let Some(row) = row else {
            return Err(explain_no_row(&*tx, id, Some(status)).await);
        };
        tx.commit().await.pg()?;
        execution_row(&row)
    }

    async fn complete_execution(
        &self,
        id: &str,
        outcome: ExecutionOutcome,
    ) -> StoreResult<ExecutionRecord> {
        check_outcome(&self.limits, &outcome)?;
        let mut client = self.client().await?;
        let tx = client.transaction().await.pg()?;
        let record = complete_in(&tx, id, &outcome).await?;
        tx.commit().await.pg()?;
        Ok(record)
    }

    async fn delete_execution(&self, id: &str) -> StoreResult<bool> {
        let client = self.client().await?;
        let n = client
            .execute("DELETE FROM workflow_executions WHERE id = $1", &[&id])
            .await
            .pg()?;
        Ok(n > 0)
    }

    async fn commit_steps(&self, steps: &[StepCommit]) -> StoreResult<Vec<StepReceipt>> {
        for step in steps {
            check_step(&self.limits, step)?;
        }
        if steps.is_empty() {
            return Ok(Vec::new());
        }
        let now = now_ms();
        let mut client = self.client().await?;
        chatter_core::failpoint::hit("postgres.before_commit");
        if let [step] = steps {
            let stmt = client.prepare_cached(COMMIT_STEP_SQL).await.pg()?;
            let receipt = commit_one(&**client, &stmt, step, now).await?;
            chatter_core::failpoint::hit("postgres.after_commit");
            return Ok(vec![receipt]);
        }
        let tx = client.transaction().await.pg()?;
        let receipts = commit_in(&tx, steps, now).await?;
        tx.commit().await.pg()?;
        chatter_core::failpoint::hit("postgres.after_commit");
        Ok(receipts)
    }

    async fn start_with_steps(
        &self,
        start: &ExecutionStart,
        steps: &[StepCommit],
        intent: Option<&NodeRunRecord>,
    ) -> StoreResult<Vec<StepReceipt>> {
        let now = now_ms();
        let (id, row) = check_start(&self.limits, start, steps, intent, now)?;
        let mut client = self.client().await?;
        let tx = client.transaction().await.pg()?;
        insert_in(&*tx, id, &start.new, &row, now).await?;
        let receipts = commit_in(&tx, steps, now).await?;
        if let Some(intent) = intent {
            intent_in(&*tx, intent).await?;
        }
        chatter_core::failpoint::hit("postgres.before_commit");
        tx.commit().await.pg()?;
        chatter_core::failpoint::hit("postgres.after_commit");
        Ok(receipts)
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
        let mut client = self.client().await?;
        let tx = client.transaction().await.pg()?;
        insert_in(&*tx, id, &start.new, &row, now).await?;
        commit_in(&tx, steps, now).await?;
        let record = complete_in(&tx, id, &outcome).await?;
        chatter_core::failpoint::hit("postgres.before_commit");
        tx.commit().await.pg()?;
        chatter_core::failpoint::hit("postgres.after_commit");
        Ok(record)
    }

    async fn finish_execution(
        &self,
        id: &str,
        steps: &[StepCommit],
        outcome: ExecutionOutcome,
    ) -> StoreResult<ExecutionRecord> {
        check_finish(&self.limits, id, steps, &outcome)?;
        let now = now_ms();
        let mut client = self.client().await?;
        let tx = client.transaction().await.pg()?;
        if !steps.is_empty() {
            // One execution: its row is locked by the first step, no ordering needed.
            let stmt = tx.prepare_cached(COMMIT_STEP_SQL).await.pg()?;
            for step in steps {
                commit_one(&*tx, &stmt, step, now).await?;
            }
        }
        let record = complete_in(&tx, id, &outcome).await?;
        chatter_core::failpoint::hit("postgres.before_commit");
        tx.commit().await.pg()?;
        chatter_core::failpoint::hit("postgres.after_commit");
        Ok(record)
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
        let mut client = self.client().await?;
        let tx = client.transaction().await.pg()?;
        let (last_seq, _) = reserve(&tx, execution_id, events.len(), false, now_ms()).await?;
        let first_seq = last_seq - events.len() as i64 + 1;
        insert_events(&tx, execution_id, first_seq, events).await?;
        tx.commit().await.pg()?;
        Ok((first_seq..=last_seq).collect())
    }

    async fn list_events(
        &self,
        execution_id: &str,
        after_seq: i64,
        limit: u32,
    ) -> StoreResult<Vec<EventRecord>> {
        let client = self.client().await?;
        let rows = client
            .query(
                "SELECT * FROM workflow_events WHERE execution_id = $1 AND seq > $2 ORDER BY seq LIMIT $3",
                &[&execution_id, &after_seq, &Page::new(limit, 0).sql_limit()],
            )
            .await
            .pg()?;
        rows.iter()
            .map(|row| {
                Ok(EventRecord {
                    execution_id: col(row, "execution_id")?,
                    seq: col(row, "seq")?,
                    ts: col(row, "ts")?,
                    event_type: col(row, "event_type")?,
                    payload: col(row, "payload")?,
                })
            })
            .collect()
    }

    async fn list_node_runs(&self, execution_id: &str) -> StoreResult<Vec<NodeRunRecord>> {
        let client = self.client().await?;
        let rows = client
            .query(
                "SELECT * FROM workflow_node_runs WHERE execution_id = $1
                 ORDER BY started_at, step NULLS LAST, node_id COLLATE \"C\", iteration, attempt",
                &[&execution_id],
            )
            .await
            .pg()?;
        rows.iter().map(node_run_row).collect()
    }

    async fn list_checkpoints(&self, execution_id: &str) -> StoreResult<Vec<CheckpointRecord>> {
        let client = self.client().await?;
        let rows = client
            .query(
                "SELECT * FROM workflow_checkpoints WHERE execution_id = $1
                 ORDER BY step, CASE kind WHEN 'snapshot' THEN 0 ELSE 1 END",
                &[&execution_id],
            )
            .await
            .pg()?;
        rows.iter()
            .map(|row| {
                Ok(CheckpointRecord {
                    execution_id: col(row, "execution_id")?,
                    step: col(row, "step")?,
                    kind: enum_col(row, "kind", CheckpointKind::parse)?,
                    node_id: col(row, "node_id")?,
                    state: col(row, "state")?,
                    created_at: col(row, "created_at")?,
                })
            })
            .collect()
    }

    async fn record_intent(&self, run: &NodeRunRecord) -> StoreResult<()> {
        require("node_run.execution_id", &run.execution_id)?;
        require("node_run.node_id", &run.node_id)?;
        let client = self.client().await?;
        intent_in(&**client, run).await
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
        let now = now_ms();
        let mut client = self.client().await?;
        let tx = client.transaction().await.pg()?;
        let receipts = commit_in(&tx, steps, now).await?;
        intent_in(&*tx, intent).await?;
        chatter_core::failpoint::hit("postgres.before_commit");
        tx.commit().await.pg()?;
        chatter_core::failpoint::hit("postgres.after_commit");
        Ok(receipts)
    }

    async fn acquire_lease(
        &self,
        id: &str,
        owner: &str,
        until: i64,
        now: i64,
    ) -> StoreResult<bool> {
        require("lease owner", owner)?;
        let client = self.client().await?;
        let updated = client
            .execute(
                "UPDATE workflow_executions SET lease_owner = $2, lease_expires_at = $3
                 WHERE id = $1 AND status NOT IN ('completed', 'failed', 'cancelled')
                   AND (lease_owner IS NULL OR lease_owner = $2 OR lease_expires_at IS NULL
                        OR lease_expires_at < $4)",
                &[&id, &owner, &until, &now],
            )
            .await
            .pg()?;
        if updated == 0 {
            let exists = client
                .query_opt("SELECT 1 FROM workflow_executions WHERE id = $1", &[&id])
                .await
                .pg()?;
            if exists.is_none() {
                return Err(not_found("execution", id));
            }
        }
        Ok(updated > 0)
    }

    async fn release_lease(&self, id: &str, owner: &str) -> StoreResult<()> {
        let client = self.client().await?;
        client
            .execute(
                "UPDATE workflow_executions SET lease_owner = NULL, lease_expires_at = NULL
                 WHERE id = $1 AND lease_owner = $2",
                &[&id, &owner],
            )
            .await
            .pg()?;
        Ok(())
    }

    async fn set_wake_at(&self, id: &str, wake_at: Option<i64>) -> StoreResult<()> {
        let client = self.client().await?;
        let updated = client
            .execute(
                "UPDATE workflow_executions SET wake_at = $2 WHERE id = $1",
                &[&id, &wake_at],
            )
            .await
            .pg()?;
        if updated == 0 {
            return Err(not_found("execution", id));
        }
        Ok(())
    }

    async fn list_resumable(&self, now: i64, limit: u32) -> StoreResult<Vec<ExecutionRecord>> {
        let client = self.client().await?;
        let limit = Page::new(limit, 0).sql_limit();
        client
            .query(
                "SELECT * FROM workflow_executions
                 WHERE (status = 'running' AND (lease_expires_at IS NULL OR lease_expires_at < $1))
                    OR (status = 'waiting' AND wake_at IS NOT NULL AND wake_at <= $1)
                 ORDER BY created_at, id LIMIT $2",
                &[&now, &limit],
            )
            .await
            .pg()?
            .iter()
            .map(execution_row)
            .collect()
    }

    async fn apply_retention(&self, policy: &RetentionPolicy, now: i64) -> StoreResult<u64> {
        policy.check()?;
        let keep = policy.keep_last_per_conversation.map(i64::from);
        let cutoff = policy.max_age_ms.map(|age| now.saturating_sub(age));
        let client = self.client().await?;
        client
            .execute(
                "DELETE FROM workflow_executions WHERE id IN (
                     SELECT id FROM (
                         SELECT id, finished_at, conversation_id,
                             ROW_NUMBER() OVER (PARTITION BY conversation_id
                                                ORDER BY created_at DESC, id DESC) AS rank
                         FROM workflow_executions
                         WHERE status IN ('completed', 'failed', 'cancelled')
                     ) ranked
                     WHERE ($1::bigint IS NOT NULL AND conversation_id IS NOT NULL AND rank > $1::bigint)
                        OR ($2::bigint IS NOT NULL AND finished_at < $2::bigint))",
                &[&keep, &cutoff],
            )
            .await
            .pg()
    }

    async fn compact_checkpoints(&self, execution_id: &str) -> StoreResult<u64> {
        let client = self.client().await?;
        client
            .execute(
                "WITH latest AS (SELECT MAX(step) AS step FROM workflow_checkpoints
                                 WHERE execution_id = $1 AND kind = 'snapshot')
                 DELETE FROM workflow_checkpoints c USING latest
                 WHERE c.execution_id = $1 AND (c.step < latest.step OR (c.kind = 'delta' AND c.step = latest.step))",
                &[&execution_id],
            )
            .await
            .pg()
    }
}
