//! `jobs` on Postgres: claims use `FOR UPDATE SKIP LOCKED`, so concurrent workers (in any
//! number of processes) never get the same job and never wait on each other.

use async_trait::async_trait;
use chatter_core::store::{
    JobCount, JobFilter, JobRecord, JobStats, JobStatus, JobStore, NewJob, Page, StoreResult,
};
use serde_json::Value;
use tokio_postgres::Row;

use super::{Pg, PostgresStore, col, enum_col};
use crate::common::{check_lease, check_new_job, conflict, not_found, now_ms, require};

fn job_row(row: &Row) -> StoreResult<JobRecord> {
    Ok(JobRecord {
        id: col(row, "id")?,
        queue: col(row, "queue")?,
        kind: col(row, "kind")?,
        payload: col(row, "payload")?,
        priority: col(row, "priority")?,
        status: enum_col(row, "status", JobStatus::parse)?,
        attempts: col(row, "attempts")?,
        max_attempts: col(row, "max_attempts")?,
        run_at: col(row, "run_at")?,
        lease_owner: col(row, "lease_owner")?,
        lease_expires_at: col(row, "lease_expires_at")?,
        last_error: col(row, "last_error")?,
        result: col(row, "result")?,
        created_at: col(row, "created_at")?,
        updated_at: col(row, "updated_at")?,
        owner_id: col(row, "owner_id")?,
        timeout_ms: col(row, "timeout_ms")?,
        execution_id: col(row, "execution_id")?,
        batch_id: col(row, "batch_id")?,
        batch_concurrency: col(row, "batch_concurrency")?,
        started_at: col(row, "started_at")?,
        finished_at: col(row, "finished_at")?,
    })
}

const INSERT_JOB: &str = "INSERT INTO jobs (id, queue, kind, payload, priority, status, attempts, max_attempts, run_at, created_at, updated_at,
         owner_id, timeout_ms, execution_id, batch_id, batch_concurrency)
     VALUES ($1, $2, $3, $4, $5, 'queued', 0, $6, $7, $8, $8, $9, $10, $11, $12, $13) RETURNING *";

fn insert_params<'a>(
    id: &'a String,
    new: &'a NewJob,
    now: &'a i64,
) -> [&'a (dyn tokio_postgres::types::ToSql + Sync); 13] {
    [
        id,
        &new.queue,
        &new.kind,
        &new.payload,
        &new.priority,
        &new.max_attempts,
        &new.run_at,
        now,
        &new.owner_id,
        &new.timeout_ms,
        &new.execution_id,
        &new.batch_id,
        &new.batch_concurrency,
    ]
}

impl PostgresStore {
    async fn held_or_explain(
        &self,
        job_id: &str,
        worker_id: &str,
        found: Option<Row>,
    ) -> StoreResult<JobRecord> {
        if let Some(row) = found {
            return job_row(&row);
        }
        let client = self.client().await?;
        match client
            .query_opt("SELECT 1 FROM jobs WHERE id = $1", &[&job_id])
            .await
            .pg()?
        {
            None => Err(not_found("job", job_id)),
            Some(_) => Err(conflict(format!(
                "job `{job_id}` is not held by worker `{worker_id}`"
            ))),
        }
    }
}

#[async_trait]
impl JobStore for PostgresStore {
    async fn enqueue_job(&self, new: NewJob) -> StoreResult<JobRecord> {
        check_new_job(&self.limits, &new)?;
        let id = self.ids.or_new(new.id.clone())?;
        let client = self.client().await?;
        let row = client
            .query_one(INSERT_JOB, &insert_params(&id, &new, &now_ms()))
            .await
            .pg()?;
        job_row(&row)
    }

    async fn enqueue_jobs(&self, new: Vec<NewJob>) -> StoreResult<Vec<JobRecord>> {
        let mut rows = Vec::with_capacity(new.len());
        for job in new {
            check_new_job(&self.limits, &job)?;
            rows.push((self.ids.or_new(job.id.clone())?, job));
        }
        let mut client = self.client().await?;
        let tx = client.transaction().await.pg()?;
        let now = now_ms();
        let mut out = Vec::with_capacity(rows.len());
        for (id, job) in &rows {
            let row = tx
                .query_one(INSERT_JOB, &insert_params(id, job, &now))
                .await
                .pg()?;
            out.push(job_row(&row)?);
        }
        tx.commit().await.pg()?;
        Ok(out)
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
        let mut client = self.client().await?;
        client
            .execute(
                "UPDATE jobs SET status = 'failed', lease_owner = NULL, lease_expires_at = NULL,
                     last_error = 'the worker running the last attempt stopped (its lease expired)',
                     finished_at = $2, updated_at = $2
                 WHERE queue = $1 AND status = 'running' AND lease_expires_at <= $2
                   AND attempts >= max_attempts",
                &[&queue, &now],
            )
            .await
            .pg()?;
        let tx = client.transaction().await.pg()?;
        let Some(candidate) = tx
            .query_opt(
                "SELECT id, batch_id, batch_concurrency FROM jobs AS j
                 WHERE queue = $1 AND (
                     (status = 'queued' AND run_at <= $2)
                     OR (status = 'running' AND lease_expires_at <= $2 AND attempts < max_attempts))
                   AND (batch_id IS NULL OR batch_concurrency IS NULL OR batch_concurrency > (
                       SELECT count(*) FROM jobs AS b
                       WHERE b.batch_id = j.batch_id AND b.status = 'running' AND b.id <> j.id))
                 ORDER BY priority DESC, run_at, id
                 LIMIT 1
                 FOR UPDATE SKIP LOCKED",
                &[&queue, &now],
            )
            .await
            .pg()?
        else {
            return Ok(None);
        };
        let id: String = col(&candidate, "id")?;
        let batch: Option<String> = col(&candidate, "batch_id")?;
        let cap: Option<i32> = col(&candidate, "batch_concurrency")?;
        if let (Some(batch), Some(cap)) = (batch, cap) {
            // Two claimers may each see one free slot of the batch in their snapshot: claims of
            // one batch are serialised, and the count is read again under that lock.
            tx.execute(
                "SELECT pg_advisory_xact_lock(hashtext('chatter_job_batch:' || $1))",
                &[&batch],
            )
            .await
            .pg()?;
            let running: i64 = tx
                .query_one(
                    "SELECT count(*) FROM jobs WHERE batch_id = $1 AND status = 'running' AND id <> $2",
                    &[&batch, &id],
                )
                .await
                .pg()?
                .try_get(0)
                .pg()?;
            if running >= i64::from(cap) {
                tx.rollback().await.pg()?;
                return Ok(None);
            }
        }
        let row = tx
            .query_one(
                "UPDATE jobs SET status = 'running', attempts = attempts + 1, lease_owner = $2,
                     lease_expires_at = $3::bigint + $4::bigint, updated_at = $3,
                     started_at = COALESCE(started_at, $3)
                 WHERE id = $1
                 RETURNING *",
                &[&id, &worker_id, &now, &lease_ms],
            )
            .await
            .pg()?;
        tx.commit().await.pg()?;
        job_row(&row).map(Some)
    }

    async fn renew_lease(
        &self,
        job_id: &str,
        worker_id: &str,
        lease_ms: i64,
        now: i64,
    ) -> StoreResult<JobRecord> {
        check_lease(lease_ms)?;
        let row = {
            let client = self.client().await?;
            client
                .query_opt(
                    "UPDATE jobs SET lease_expires_at = $3::bigint + $4::bigint, updated_at = $3
                     WHERE id = $1 AND status = 'running' AND lease_owner = $2 RETURNING *",
                    &[&job_id, &worker_id, &now, &lease_ms],
                )
                .await
                .pg()?
        };
        self.held_or_explain(job_id, worker_id, row).await
    }

    async fn complete_job(
        &self,
        job_id: &str,
        worker_id: &str,
        result: Value,
        now: i64,
    ) -> StoreResult<JobRecord> {
        self.limits.json("job result", &result)?;
        let row = {
            let client = self.client().await?;
            client
                .query_opt(
                    "UPDATE jobs SET status = 'completed', result = $3, lease_owner = NULL, lease_expires_at = NULL,
                         updated_at = $4, finished_at = $4
                     WHERE id = $1 AND status = 'running' AND lease_owner = $2 RETURNING *",
                    &[&job_id, &worker_id, &result, &now],
                )
                .await
                .pg()?
        };
        self.held_or_explain(job_id, worker_id, row).await
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
        let row = {
            let client = self.client().await?;
            client
                .query_opt(
                    "UPDATE jobs SET
                         status = CASE WHEN $4::bigint IS NOT NULL AND attempts < max_attempts THEN 'queued' ELSE 'failed' END,
                         run_at = CASE WHEN $4::bigint IS NOT NULL AND attempts < max_attempts THEN $4 ELSE run_at END,
                         finished_at = CASE WHEN $4::bigint IS NOT NULL AND attempts < max_attempts THEN NULL ELSE $5::bigint END,
                         last_error = $3, lease_owner = NULL, lease_expires_at = NULL, updated_at = $5
                     WHERE id = $1 AND status = 'running' AND lease_owner = $2 RETURNING *",
                    &[&job_id, &worker_id, &error, &retry_at, &now],
                )
                .await
                .pg()?
        };
        self.held_or_explain(job_id, worker_id, row).await
    }

    async fn get_job(&self, job_id: &str) -> StoreResult<Option<JobRecord>> {
        let client = self.client().await?;
        let row = client
            .query_opt("SELECT * FROM jobs WHERE id = $1", &[&job_id])
            .await
            .pg()?;
        row.as_ref().map(job_row).transpose()
    }

    async fn list_jobs(&self, filter: &JobFilter, page: Page) -> StoreResult<Vec<JobRecord>> {
        let client = self.client().await?;
        let rows = client
            .query(
                "SELECT * FROM jobs WHERE queue = $1 AND ($2::text IS NULL OR status = $2)
                     AND ($3::text IS NULL OR owner_id = $3) AND ($4::integer IS NULL OR priority = $4)
                     AND ($5::text IS NULL OR batch_id = $5)
                 ORDER BY created_at, id LIMIT $6 OFFSET $7",
                &[
                    &filter.queue,
                    &filter.status.map(JobStatus::as_str),
                    &filter.owner_id,
                    &filter.priority,
                    &filter.batch_id,
                    &page.sql_limit(),
                    &page.sql_offset(),
                ],
            )
            .await
            .pg()?;
        rows.iter().map(job_row).collect()
    }

    async fn cancel_job(&self, job_id: &str, now: i64) -> StoreResult<JobRecord> {
        let client = self.client().await?;
        if let Some(row) = client
            .query_opt(
                "UPDATE jobs SET status = 'cancelled', lease_owner = NULL, lease_expires_at = NULL,
                     finished_at = $2, updated_at = $2, last_error = COALESCE(last_error, 'cancelled')
                 WHERE id = $1 AND status IN ('queued', 'running') RETURNING *",
                &[&job_id, &now],
            )
            .await
            .pg()?
        {
            return job_row(&row);
        }
        match client
            .query_opt("SELECT * FROM jobs WHERE id = $1", &[&job_id])
            .await
            .pg()?
        {
            None => Err(not_found("job", job_id)),
            Some(row) => Err(conflict(format!(
                "job `{job_id}` has already ended ({})",
                job_row(&row)?.status
            ))),
        }
    }

    async fn set_job_execution(
        &self,
        job_id: &str,
        worker_id: &str,
        execution_id: &str,
        now: i64,
    ) -> StoreResult<JobRecord> {
        require("execution_id", execution_id)?;
        let row = {
            let client = self.client().await?;
            client
                .query_opt(
                    "UPDATE jobs SET execution_id = $3, updated_at = $4
                     WHERE id = $1 AND status = 'running' AND lease_owner = $2 RETURNING *",
                    &[&job_id, &worker_id, &execution_id, &now],
                )
                .await
                .pg()?
        };
        self.held_or_explain(job_id, worker_id, row).await
    }

    async fn job_stats(&self, queue: &str, owner_id: Option<&str>) -> StoreResult<JobStats> {
        let client = self.client().await?;
        let rows = client
            .query(
                "SELECT status, priority, count(*) AS n FROM jobs
                 WHERE queue = $1 AND ($2::text IS NULL OR owner_id = $2)
                 GROUP BY status, priority ORDER BY status, priority",
                &[&queue, &owner_id],
            )
            .await
            .pg()?;
        let counts = rows
            .iter()
            .map(|row| {
                Ok(JobCount {
                    status: enum_col(row, "status", JobStatus::parse)?,
                    priority: col(row, "priority")?,
                    count: col(row, "n")?,
                })
            })
            .collect::<StoreResult<Vec<_>>>()?;
        Ok(JobStats { counts })
    }
}
