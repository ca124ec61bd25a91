//! `jobs` on Postgres: claims use `FOR UPDATE SKIP LOCKED`, so concurrent workers (in any
//! number of processes) never get the same job and never wait on each other.

use async_trait::async_trait;
use chatter_core::store::{JobRecord, JobStatus, JobStore, NewJob, Page, StoreResult};
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
    })
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
            .query_one(
                "INSERT INTO jobs (id, queue, kind, payload, priority, status, attempts, max_attempts, run_at, created_at, updated_at)
                 VALUES ($1, $2, $3, $4, $5, 'queued', 0, $6, $7, $8, $8) RETURNING *",
                &[&id, &new.queue, &new.kind, &new.payload, &new.priority, &new.max_attempts, &new.run_at, &now_ms()],
            )
            .await
            .pg()?;
        job_row(&row)
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
        let client = self.client().await?;
        let row = client
            .query_opt(
                "UPDATE jobs SET status = 'running', attempts = attempts + 1, lease_owner = $2,
                     lease_expires_at = $3::bigint + $4::bigint, updated_at = $3
                 WHERE id = (
                     SELECT id FROM jobs
                     WHERE queue = $1 AND (
                         (status = 'queued' AND run_at <= $3)
                         OR (status = 'running' AND lease_expires_at <= $3 AND attempts < max_attempts))
                     ORDER BY priority DESC, run_at, id
                     LIMIT 1
                     FOR UPDATE SKIP LOCKED)
                 RETURNING *",
                &[&queue, &worker_id, &now, &lease_ms],
            )
            .await
            .pg()?;
        row.as_ref().map(job_row).transpose()
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
                         updated_at = $4
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

    async fn list_jobs(
        &self,
        queue: &str,
        status: Option<JobStatus>,
        page: Page,
    ) -> StoreResult<Vec<JobRecord>> {
        let client = self.client().await?;
        let rows = client
            .query(
                "SELECT * FROM jobs WHERE queue = $1 AND ($2::text IS NULL OR status = $2)
                 ORDER BY created_at, id LIMIT $3 OFFSET $4",
                &[
                    &queue,
                    &status.map(JobStatus::as_str),
                    &page.sql_limit(),
                    &page.sql_offset(),
                ],
            )
            .await
            .pg()?;
        rows.iter().map(job_row).collect()
    }
}
