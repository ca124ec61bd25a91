//! `jobs` on SQLite. The single writer thread serialises claims, so two claimers never get the
//! same job.

use async_trait::async_trait;
use chatter_core::store::{
    JobCount, JobFilter, JobRecord, JobStats, JobStatus, JobStore, NewJob, Page, StoreResult,
};
use rusqlite::{Connection, params};
use serde_json::Value;

use super::{Db, SqliteStore, enum_at, json_at, opt_json_at, query_all, query_opt};
use crate::common::{
    check_lease, check_new_job, conflict, not_found, now_ms, require, to_json_text,
};

fn job_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<JobRecord> {
    Ok(JobRecord {
        id: row.get("id")?,
        queue: row.get("queue")?,
        kind: row.get("kind")?,
        payload: json_at(row, "payload")?,
        priority: row.get("priority")?,
        status: enum_at(row, "status", JobStatus::parse)?,
        attempts: row.get("attempts")?,
        max_attempts: row.get("max_attempts")?,
        run_at: row.get("run_at")?,
        lease_owner: row.get("lease_owner")?,
        lease_expires_at: row.get("lease_expires_at")?,
        last_error: row.get("last_error")?,
        result: opt_json_at(row, "result")?,
        created_at: row.get("created_at")?,
        updated_at: row.get("updated_at")?,
        owner_id: row.get("owner_id")?,
        timeout_ms: row.get("timeout_ms")?,
        execution_id: row.get("execution_id")?,
        batch_id: row.get("batch_id")?,
        batch_concurrency: row.get("batch_concurrency")?,
        started_at: row.get("started_at")?,
        finished_at: row.get("finished_at")?,
    })
}

fn insert_job(conn: &Connection, id: &str, new: &NewJob) -> StoreResult<JobRecord> {
    conn.prepare_cached(
        "INSERT INTO jobs (id, queue, kind, payload, priority, status, attempts, max_attempts, run_at, created_at, updated_at,
             owner_id, timeout_ms, execution_id, batch_id, batch_concurrency)
         VALUES (?1, ?2, ?3, ?4, ?5, 'queued', 0, ?6, ?7, ?8, ?8, ?9, ?10, ?11, ?12, ?13) RETURNING *",
    )
    .db()?
    .query_row(
        params![id, new.queue, new.kind, to_json_text(&new.payload), new.priority, new.max_attempts, new.run_at, now_ms(),
            new.owner_id, new.timeout_ms, new.execution_id, new.batch_id, new.batch_concurrency],
        job_row,
    )
    .db()
}

fn held_or_explain(
    conn: &Connection,
    job_id: &str,
    worker_id: &str,
    found: Option<JobRecord>,
) -> StoreResult<JobRecord> {
    if let Some(job) = found {
        return Ok(job);
    }
    let exists: Option<i64> =
        query_opt(conn, "SELECT 1 FROM jobs WHERE id = ?1", [job_id], |row| {
            row.get(0)
        })?;
    match exists {
        None => Err(not_found("job", job_id)),
        Some(_) => Err(conflict(format!(
            "job `{job_id}` is not held by worker `{worker_id}`"
        ))),
    }
}

#[async_trait]
impl JobStore for SqliteStore {
    async fn enqueue_job(&self, new: NewJob) -> StoreResult<JobRecord> {
        check_new_job(&self.limits, &new)?;
        let id = self.ids.or_new(new.id.clone())?;
        self.write(move |conn| insert_job(conn, &id, &new)).await
    }

    async fn enqueue_jobs(&self, new: Vec<NewJob>) -> StoreResult<Vec<JobRecord>> {
        let mut rows = Vec::with_capacity(new.len());
        for job in new {
            check_new_job(&self.limits, &job)?;
            rows.push((self.ids.or_new(job.id.clone())?, job));
        }
        self.write(move |conn| {
            let tx = conn.transaction().db()?;
            let mut out = Vec::with_capacity(rows.len());
            for (id, job) in &rows {
                out.push(insert_job(&tx, id, job)?);
            }
            tx.commit().db()?;
            Ok(out)
        })
        .await
    }

    async fn claim_job(
        &self,
        queue: &str,
        worker_id: &str,
        lease_ms: i64,
        now: i64,
    ) -> StoreResult<Option<JobRecord>> {
        require("worker_id", worker_id)?;
        check_lease(lease_ms)?;
        let (queue, worker) = (queue.to_owned(), worker_id.to_owned());
        self.write(move |conn| {
            conn.prepare_cached(REAP_EXPIRED)
                .db()?
                .execute(params![queue, now])
                .db()?;
            query_opt(
                conn,
                "UPDATE jobs SET status = 'running', attempts = attempts + 1, lease_owner = ?2,
                     lease_expires_at = ?3 + ?4, updated_at = ?3, started_at = COALESCE(started_at, ?3)
                 WHERE id = (
                     SELECT id FROM jobs AS j
                     WHERE queue = ?1 AND (
                         (status = 'queued' AND run_at <= ?3)
                         OR (status = 'running' AND lease_expires_at <= ?3 AND attempts < max_attempts))
                       AND (batch_id IS NULL OR batch_concurrency IS NULL OR batch_concurrency > (
                           SELECT count(*) FROM jobs AS b
                           WHERE b.batch_id = j.batch_id AND b.status = 'running' AND b.id <> j.id))
                     ORDER BY priority DESC, run_at, id LIMIT 1)
                 RETURNING *",
                params![queue, worker, now, lease_ms],
                job_row,
            )
        })
        .await
    }

    async fn renew_lease(
        &self,
        job_id: &str,
        worker_id: &str,
        lease_ms: i64,
        now: i64,
    ) -> StoreResult<JobRecord> {
        check_lease(lease_ms)?;
        let (id, worker) = (job_id.to_owned(), worker_id.to_owned());
        self.write(move |conn| {
            let found = query_opt(
                conn,
                "UPDATE jobs SET lease_expires_at = ?3 + ?4, updated_at = ?3
                 WHERE id = ?1 AND status = 'running' AND lease_owner = ?2 RETURNING *",
                params![id, worker, now, lease_ms],
                job_row,
            )?;
            held_or_explain(conn, &id, &worker, found)
        })
        .await
    }

    async fn complete_job(
        &self,
        job_id: &str,
        worker_id: &str,
        result: Value,
        now: i64,
    ) -> StoreResult<JobRecord> {
        self.limits.json("job result", &result)?;
        let (id, worker) = (job_id.to_owned(), worker_id.to_owned());
        self.write(move |conn| {
            let found = query_opt(
                conn,
                "UPDATE jobs SET status = 'completed', result = ?3, lease_owner = NULL, lease_expires_at = NULL,
                     updated_at = ?4, finished_at = ?4
                 WHERE id = ?1 AND status = 'running' AND lease_owner = ?2 RETURNING *",
                params![id, worker, to_json_text(&result), now],
                job_row,
            )?;
            held_or_explain(conn, &id, &worker, found)
        })
        .await
    }

    async fn fail_job(
        &self,
        job_id: &str,
        worker_id: &str,
        error: &str,
        retry_at: Option<i64>,
        now: i64,
    ) -> StoreResult<JobRecord> {
        self.limits.text("job error", error)?;
        let (id, worker, error) = (job_id.to_owned(), worker_id.to_owned(), error.to_owned());
        self.write(move |conn| {
            let found = query_opt(
                conn,
                "UPDATE jobs SET
                     status = CASE WHEN ?4 IS NOT NULL AND attempts < max_attempts THEN 'queued' ELSE 'failed' END,
                     run_at = CASE WHEN ?4 IS NOT NULL AND attempts < max_attempts THEN ?4 ELSE run_at END,
                     finished_at = CASE WHEN ?4 IS NOT NULL AND attempts < max_attempts THEN NULL ELSE ?5 END,
                     last_error = ?3, lease_owner = NULL, lease_expires_at = NULL, updated_at = ?5
                 WHERE id = ?1 AND status = 'running' AND lease_owner = ?2 RETURNING *",
                params![id, worker, error, retry_at, now],
                job_row,
            )?;
            held_or_explain(conn, &id, &worker, found)
        })
        .await
    }

    async fn get_job(&self, job_id: &str) -> StoreResult<Option<JobRecord>> {
        let id = job_id.to_owned();
        self.read(move |conn| query_opt(conn, "SELECT * FROM jobs WHERE id = ?1", [id], job_row))
            .await
    }

    async fn list_jobs(&self, filter: &JobFilter, page: Page) -> StoreResult<Vec<JobRecord>> {
        let filter = filter.clone();
        self.read(move |conn| {
            query_all(
                conn,
                "SELECT * FROM jobs WHERE queue = ?1 AND (?2 IS NULL OR status = ?2)
                     AND (?3 IS NULL OR owner_id = ?3) AND (?4 IS NULL OR priority = ?4)
                     AND (?5 IS NULL OR batch_id = ?5)
                 ORDER BY created_at, id LIMIT ?6 OFFSET ?7",
                params![
                    filter.queue,
                    filter.status.map(JobStatus::as_str),
                    filter.owner_id,
                    filter.priority,
                    filter.batch_id,
                    page.sql_limit(),
                    page.sql_offset()
                ],
                job_row,
            )
        })
        .await
    }

    async fn cancel_job(&self, job_id: &str, now: i64) -> StoreResult<JobRecord> {
        let id = job_id.to_owned();
        self.write(move |conn| {
            let found = query_opt(
                conn,
                "UPDATE jobs SET status = 'cancelled', lease_owner = NULL, lease_expires_at = NULL,
                     finished_at = ?2, updated_at = ?2, last_error = COALESCE(last_error, 'cancelled')
                 WHERE id = ?1 AND status IN ('queued', 'running') RETURNING *",
                params![id, now],
                job_row,
            )?;
            if let Some(job) = found {
                return Ok(job);
            }
            match query_opt(conn, "SELECT * FROM jobs WHERE id = ?1", [&id], job_row)? {
                None => Err(not_found("job", &id)),
                Some(job) => Err(conflict(format!(
                    "job `{id}` has already ended ({})",
                    job.status
                ))),
            }
        })
        .await
    }

    async fn set_job_execution(
        &self,
        job_id: &str,
        worker_id: &str,
        execution_id: &str,
        now: i64,
    ) -> StoreResult<JobRecord> {
        require("execution_id", execution_id)?;
        let (id, worker, execution) = (
            job_id.to_owned(),
            worker_id.to_owned(),
            execution_id.to_owned(),
        );
        self.write(move |conn| {
            let found = query_opt(
                conn,
                "UPDATE jobs SET execution_id = ?3, updated_at = ?4
                 WHERE id = ?1 AND status = 'running' AND lease_owner = ?2 RETURNING *",
                params![id, worker, execution, now],
                job_row,
            )?;
            held_or_explain(conn, &id, &worker, found)
        })
        .await
    }

    async fn job_stats(&self, queue: &str, owner_id: Option<&str>) -> StoreResult<JobStats> {
        let (queue, owner) = (queue.to_owned(), owner_id.map(str::to_owned));
        self.read(move |conn| {
            let counts = query_all(
                conn,
                "SELECT status, priority, count(*) AS n FROM jobs
                 WHERE queue = ?1 AND (?2 IS NULL OR owner_id = ?2)
                 GROUP BY status, priority ORDER BY status, priority",
                params![queue, owner],
                |row| {
                    Ok(JobCount {
                        status: enum_at(row, "status", JobStatus::parse)?,
                        priority: row.get("priority")?,
                        count: row.get("n")?,
                    })
                },
            )?;
            Ok(JobStats { counts })
        })
        .await
    }
}

/// Marks failed the running jobs of a queue whose lease expired with no attempt left (their
/// last worker died), so they do not stay `running` forever.
const REAP_EXPIRED: &str = "UPDATE jobs SET status = 'failed', lease_owner = NULL, lease_expires_at = NULL,
        last_error = 'the worker running the last attempt stopped (its lease expired)',
        finished_at = ?2, updated_at = ?2
    WHERE queue = ?1 AND status = 'running' AND lease_expires_at <= ?2 AND attempts >= max_attempts";
