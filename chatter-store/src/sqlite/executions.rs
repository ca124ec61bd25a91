//! Executions, node runs, events and checkpoints on SQLite.

use async_trait::async_trait;
use chatter_core::store::{
    CheckpointKind, CheckpointRecord, EventRecord, ExecutionFilter, ExecutionOutcome,
    ExecutionRecord, ExecutionStatus, ExecutionStore, NewEvent, NewExecution, NodeRunRecord,
    NodeRunStatus, Page, RetentionPolicy, StepCommit, StepReceipt, StoreResult,
};
use rusqlite::{Connection, params};

use super::{Db, SqliteStore, enum_at, json_at, opt_json_at, query_all, query_opt};
use crate::common::Limits;
use crate::common::{conflict, invalid, not_found, now_ms, object_or_empty, require, to_json_text};

const COLUMNS: &str = "id, owner_id, definition_id, template_id, kind, status, input, params, output, \
    response, error, prompt_tokens, completion_tokens, total_tokens, cost, conversation_id, \
    last_event_seq, step_count, created_at, updated_at, started_at, finished_at, duration_ms, \
    lease_owner, lease_expires_at, wake_at, graph";

fn execution_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<ExecutionRecord> {
    Ok(ExecutionRecord {
        id: row.get("id")?,
        owner_id: row.get("owner_id")?,
        definition_id: row.get("definition_id")?,
        template_id: row.get("template_id")?,
        kind: enum_at(row, "kind", chatter_core::store::ExecutionKind::parse)?,
        status: enum_at(row, "status", ExecutionStatus::parse)?,
        input: json_at(row, "input")?,
        params: json_at(row, "params")?,
        output: opt_json_at(row, "output")?,
        response: row.get("response")?,
        error: row.get("error")?,
        prompt_tokens: row.get("prompt_tokens")?,
        completion_tokens: row.get("completion_tokens")?,
        total_tokens: row.get("total_tokens")?,
        cost: row.get("cost")?,
        conversation_id: row.get("conversation_id")?,
        last_event_seq: row.get("last_event_seq")?,
        step_count: row.get("step_count")?,
        created_at: row.get("created_at")?,
        updated_at: row.get("updated_at")?,
        started_at: row.get("started_at")?,
        finished_at: row.get("finished_at")?,
        duration_ms: row.get("duration_ms")?,
        lease_owner: row.get("lease_owner")?,
        lease_expires_at: row.get("lease_expires_at")?,
        wake_at: row.get("wake_at")?,
        graph: opt_json_at(row, "graph")?,
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
        output: opt_json_at(row, "output")?,
        step: row.get("step")?,
        route: opt_json_at(row, "route")?,
        error_class: row.get("error_class")?,
        idempotency_key: row.get("idempotency_key")?,
    })
}

fn select_one(conn: &Connection, id: &str) -> StoreResult<Option<ExecutionRecord>> {
    query_opt(
        conn,
        &format!("SELECT {COLUMNS} FROM workflow_executions WHERE id = ?1"),
        [id],
        execution_row,
    )
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

/// Reserves `count` event sequence numbers (and a step number when `step`), returning
/// (last_seq after the reservation, step_count after it). Fails on unknown or ended executions.
fn reserve(
    conn: &Connection,
    id: &str,
    count: usize,
    step: bool,
    now: i64,
) -> StoreResult<(i64, i64)> {
    let count = i64::try_from(count).map_err(|_| invalid("too many events"))?;
    // No `RETURNING` here: SQLite buffers returned rows in an ephemeral table, and opening
    // and closing that table's b-tree (pager, page cache) cost more than the step's own
    // writes. The SELECT reads the page the UPDATE just wrote, from the page cache.
    let updated = conn
        .prepare_cached(
            "UPDATE workflow_executions
             SET last_event_seq = last_event_seq + ?2, step_count = step_count + ?3, updated_at = ?4
             WHERE id = ?1 AND status NOT IN ('completed', 'failed', 'cancelled')",
        )
        .db()?
        .execute(params![id, count, i64::from(step), now])
        .db()?;
    if updated == 0 {
        return Err(explain_no_row(conn, id, None));
    }
    let reserved = query_opt(
        conn,
        "SELECT last_event_seq, step_count FROM workflow_executions WHERE id = ?1",
        [id],
        |row| Ok((row.get(0)?, row.get(1)?)),
    )?;
    reserved.ok_or_else(|| not_found("execution", id))
}

fn insert_events(
    conn: &Connection,
    id: &str,
    first_seq: i64,
    events: &[NewEvent],
) -> StoreResult<()> {
    let mut stmt = conn
        .prepare_cached(
            "INSERT INTO workflow_events (execution_id, seq, ts, event_type, payload) VALUES (?1, ?2, ?3, ?4, ?5)",
        )
        .db()?;
    for (offset, event) in (0_i64..).zip(events) {
        stmt.execute(params![
            id,
            first_seq + offset,
            event.ts,
            event.event_type,
            to_json_text(&event.payload)
        ])
        .db()?;
    }
    Ok(())
}

fn check_events(limits: &Limits, events: &[NewEvent]) -> StoreResult<()> {
    for event in events {
        require("event type", &event.event_type)?;
        limits.json("event payload", &event.payload)?;
    }
    Ok(())
}

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

fn commit_one(conn: &Connection, step: &StepCommit, now: i64) -> StoreResult<StepReceipt> {
    let run = &step.node_run;
    let id = run.execution_id.as_str();
    let (last_seq, step_no) = reserve(conn, id, step.events.len(), true, now)?;
    let first_seq = last_seq - step.events.len() as i64 + 1;
    conn.prepare_cached(
        "INSERT INTO workflow_node_runs (execution_id, node_id, iteration, attempt, status, started_at,
             finished_at, duration_ms, prompt_tokens, completion_tokens, cost, error, output,
             step, route, error_class, idempotency_key)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17)
         ON CONFLICT (execution_id, node_id, iteration, attempt) DO UPDATE SET
             status = excluded.status, started_at = excluded.started_at,
             finished_at = excluded.finished_at, duration_ms = excluded.duration_ms,
             prompt_tokens = excluded.prompt_tokens, completion_tokens = excluded.completion_tokens,
             cost = excluded.cost, error = excluded.error, output = excluded.output,
             step = excluded.step, route = excluded.route, error_class = excluded.error_class,
             idempotency_key = COALESCE(excluded.idempotency_key, idempotency_key)",
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
        run.output.as_ref().map(to_json_text),
        step_no,
        run.route.as_ref().map(to_json_text),
        run.error_class,
        run.idempotency_key
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
    insert_events(conn, id, first_seq, &step.events)?;
    let mut checkpoint = conn
        .prepare_cached(
            "INSERT INTO workflow_checkpoints (execution_id, step, kind, node_id, state, created_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        )
        .db()?;
    if !step.state_delta.is_null() {
        checkpoint
            .execute(params![
                id,
                step_no,
                "delta",
                run.node_id,
                to_json_text(&step.state_delta),
                now
            ])
            .db()?;
    }
    if let Some(snapshot) = &step.snapshot {
        checkpoint
            .execute(params![
                id,
                step_no,
                "snapshot",
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

/// Commits a group of `commit_steps` calls in ONE transaction, each call in its own savepoint
/// (all of a call's steps or none of them); returns each call's result. An error here means
/// the transaction itself failed and nothing was written.
pub(crate) fn commit_group(
    conn: &mut Connection,
    calls: &[&[StepCommit]],
) -> StoreResult<Vec<StoreResult<Vec<StepReceipt>>>> {
    let now = now_ms();
    let mut tx = conn
        .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
        .db()?;
    let mut results = Vec::with_capacity(calls.len());
    for steps in calls {
        let savepoint = tx.savepoint().db()?;
        let receipts: StoreResult<Vec<StepReceipt>> = steps
            .iter()
            .map(|step| commit_one(&savepoint, step, now))
            .collect();
        if receipts.is_ok() {
            savepoint.commit().db()?;
        }
        // Dropping an uncommitted savepoint rolls it back.
        results.push(receipts);
    }
    chatter_core::failpoint::hit("sqlite.before_commit");
    tx.commit().db()?;
    chatter_core::failpoint::hit("sqlite.after_commit");
    Ok(results)
}

#[async_trait]
impl ExecutionStore for SqliteStore {
    async fn create_execution(&self, new: NewExecution) -> StoreResult<ExecutionRecord> {
        require("owner_id", &new.owner_id)?;
        self.limits.json("input", &new.input)?;
        self.limits.json("params", &new.params)?;
        self.limits.opt_json("graph", new.graph.as_ref())?;
        let id = self.ids.or_new(new.id)?;
        let now = now_ms();
        self.write(move |conn| {
            conn.prepare_cached(&format!(
                "INSERT INTO workflow_executions (id, owner_id, definition_id, template_id, kind, status,
                     input, params, conversation_id, created_at, updated_at, graph)
                 VALUES (?1, ?2, ?3, ?4, ?5, 'pending', ?6, ?7, ?8, ?9, ?9, ?10) RETURNING {COLUMNS}"
            ))
            .db()?
            .query_row(
                params![
                    id,
                    new.owner_id,
                    new.definition_id,
                    new.template_id,
                    new.kind.as_str(),
                    to_json_text(&object_or_empty(new.input)),
                    to_json_text(&object_or_empty(new.params)),
                    new.conversation_id,
                    now,
                    new.graph.as_ref().map(to_json_text)
                ],
                execution_row,
            )
            .db()
            .map_err(|e| match e.store_kind() {
                Some(chatter_core::store::StoreErrorKind::Conflict) => {
                    conflict(format!("execution `{id}` already exists"))
                }
                Some(chatter_core::store::StoreErrorKind::NotFound) => chatter_core::Error::store(
                    chatter_core::store::StoreErrorKind::NotFound,
                    "the execution's definition, template or conversation does not exist",
                ),
                _ => e,
            })
        })
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
            query_all(
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
            )
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
        self.write(move |conn| {
            let from: Vec<&str> = status.allowed_predecessors().iter().map(|s| s.as_str()).collect();
            let from = serde_json::to_string(&from).unwrap_or_default();
            let updated = query_opt(
                conn,
                &format!(
                    "UPDATE workflow_executions SET status = ?2, updated_at = ?3,
                         started_at = CASE WHEN ?2 = 'running' THEN COALESCE(started_at, ?3) ELSE started_at END
                     WHERE id = ?1 AND status IN (SELECT value FROM json_each(?4)) RETURNING {COLUMNS}"
                ),
                params![key, status.as_str(), at, from],
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
        if !outcome.status.is_terminal() {
            return Err(invalid(format!(
                "complete_execution needs completed, failed or cancelled (got {})",
                outcome.status
            )));
        }
        if outcome.prompt_tokens < 0 || outcome.completion_tokens < 0 || outcome.cost < 0.0 {
            return Err(invalid("token counts and cost must not be negative"));
        }
        self.limits.opt_json("output", outcome.output.as_ref())?;
        self.limits
            .opt_text("response", outcome.response.as_deref())?;
        self.limits.opt_text("error", outcome.error.as_deref())?;
        check_events(&self.limits, &outcome.events)?;
        let key = id.to_owned();
        self.write(move |conn| {
            let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate).db()?;
            let status = outcome.status;
            let from: Vec<&str> = status.allowed_predecessors().iter().map(|s| s.as_str()).collect();
            let from = serde_json::to_string(&from).unwrap_or_default();
            let count = outcome.events.len() as i64;
            let updated = query_opt(
                &tx,
                &format!(
                    "UPDATE workflow_executions SET status = ?2, output = ?3, response = ?4, error = ?5,
                         prompt_tokens = ?6, completion_tokens = ?7, total_tokens = ?6 + ?7, cost = ?8,
                         finished_at = ?9, updated_at = ?9, lease_owner = NULL, lease_expires_at = NULL,
                         duration_ms = MAX(0, ?9 - COALESCE(started_at, created_at)),
                         last_event_seq = last_event_seq + ?10
                     WHERE id = ?1 AND status IN (SELECT value FROM json_each(?11)) RETURNING {COLUMNS}"
                ),
                params![
                    key,
                    status.as_str(),
                    outcome.output.as_ref().map(to_json_text),
                    outcome.response,
                    outcome.error,
                    outcome.prompt_tokens,
                    outcome.completion_tokens,
                    outcome.cost,
                    outcome.finished_at,
                    count,
                    from
                ],
                execution_row,
            )?;
            let Some(record) = updated else {
                return Err(explain_no_row(&tx, &key, Some(status)));
            };
            insert_events(&tx, &key, record.last_event_seq - count + 1, &outcome.events)?;
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
            tx.commit().db()?;
            Ok(record)
        })
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
        self.commit_on_writer(steps.to_vec()).await
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
        self.write(move |conn| {
            let tx = conn
                .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
                .db()?;
            let (last_seq, _) = reserve(&tx, &key, events.len(), false, now_ms())?;
            let first_seq = last_seq - events.len() as i64 + 1;
            insert_events(&tx, &key, first_seq, &events)?;
            tx.commit().db()?;
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
                "SELECT execution_id, seq, ts, event_type, payload FROM workflow_events
                 WHERE execution_id = ?1 AND seq > ?2 ORDER BY seq LIMIT ?3",
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
                "SELECT * FROM workflow_node_runs WHERE execution_id = ?1
                 ORDER BY started_at, node_id, iteration, attempt",
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
                "SELECT execution_id, step, kind, node_id, state, created_at FROM workflow_checkpoints
                 WHERE execution_id = ?1 ORDER BY step, CASE kind WHEN 'snapshot' THEN 0 ELSE 1 END",
                [key],
                |row| {
                    Ok(CheckpointRecord {
                        execution_id: row.get("execution_id")?,
                        step: row.get("step")?,
                        kind: enum_at(row, "kind", CheckpointKind::parse)?,
                        node_id: row.get("node_id")?,
                        state: json_at(row, "state")?,
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
        self.write(move |conn| {
            let tx = conn
                .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
                .db()?;
            match status_of(&tx, &run.execution_id)? {
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
            tx.commit().db()?;
            Ok(())
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
        self.write(move |conn| {
            let updated = conn
                .prepare_cached(
                    "UPDATE workflow_executions SET lease_owner = ?2, lease_expires_at = ?3
                     WHERE id = ?1 AND status NOT IN ('completed', 'failed', 'cancelled')
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
        self.write(move |conn| {
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
        self.write(move |conn| {
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
            query_all(
                conn,
                &format!(
                    "SELECT {COLUMNS} FROM workflow_executions
                     WHERE (status = 'running' AND (lease_expires_at IS NULL OR lease_expires_at < ?1))
                        OR (status = 'waiting' AND wake_at IS NOT NULL AND wake_at <= ?1)
                     ORDER BY created_at, id LIMIT ?2"
                ),
                params![now, limit],
                execution_row,
            )
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
                    [key],
                )
                .db()?;
            Ok(deleted as u64)
        })
        .await
    }
}
