//! The job queue (`jobs`): priorities, leases and attempts, for asynchronous executions shared
//! by several processes (claimed with `FOR UPDATE SKIP LOCKED` on Postgres).

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{Page, StoreResult, string_enum};

string_enum! {
    /// Status of a job.
    JobStatus {
        /// Waiting to be claimed (from `run_at`).
        Queued => "queued",
        /// Claimed by a worker holding a lease.
        Running => "running",
        /// Done.
        Completed => "completed",
        /// Failed its last attempt.
        Failed => "failed",
    }
}

/// A stored job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobRecord {
    /// ULID.
    pub id: String,
    /// Queue name.
    pub queue: String,
    /// What to do (`execute_workflow`, ...).
    pub kind: String,
    /// Arguments.
    pub payload: Value,
    /// Higher runs first.
    pub priority: i32,
    /// Status.
    pub status: JobStatus,
    /// Claims so far.
    pub attempts: i32,
    /// Claims allowed.
    pub max_attempts: i32,
    /// Not claimed before (ms).
    pub run_at: i64,
    /// The worker holding the lease.
    pub lease_owner: Option<String>,
    /// When the lease ends (ms); an expired lease can be claimed by another worker.
    pub lease_expires_at: Option<i64>,
    /// Last failure.
    pub last_error: Option<String>,
    /// Result of a completed job.
    pub result: Option<Value>,
    /// Creation time (ms).
    pub created_at: i64,
    /// Last update time (ms).
    pub updated_at: i64,
}

/// What [`JobStore::enqueue_job`] needs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NewJob {
    /// Id to use; a new ULID when `None`.
    pub id: Option<String>,
    /// Queue name.
    pub queue: String,
    /// What to do.
    pub kind: String,
    /// Arguments.
    pub payload: Value,
    /// Higher runs first.
    pub priority: i32,
    /// Claims allowed (≥ 1).
    pub max_attempts: i32,
    /// Not claimed before (ms).
    pub run_at: i64,
}

impl NewJob {
    /// A job on `queue` of `kind` with `payload`, priority 0, 3 attempts, runnable from `run_at`.
    pub fn new(
        queue: impl Into<String>,
        kind: impl Into<String>,
        payload: Value,
        run_at: i64,
    ) -> Self {
        NewJob {
            id: None,
            queue: queue.into(),
            kind: kind.into(),
            payload,
            priority: 0,
            max_attempts: 3,
            run_at,
        }
    }
}

/// The job queue.
#[async_trait]
pub trait JobStore: Send + Sync {
    /// Adds a job (`queued`).
    ///
    /// # Errors
    ///
    /// `InvalidInput` (empty queue/kind, `max_attempts < 1`), `PayloadTooLarge`.
    async fn enqueue_job(&self, new: NewJob) -> StoreResult<JobRecord>;

    /// Claims the best runnable job of `queue` at `now`: highest priority, then earliest
    /// `run_at`, then id; either `queued` with `run_at <= now` or `running` with an expired lease
    /// and attempts left. Sets the lease to `now + lease_ms` and increments `attempts`.
    /// Concurrent claimers never get the same job.
    ///
    /// # Errors
    ///
    /// Database failures.
    async fn claim_job(
        &self,
        queue: &str,
        worker_id: &str,
        lease_ms: i64,
        now: i64,
    ) -> StoreResult<Option<JobRecord>>;

    /// Extends the lease of a job the worker holds.
    ///
    /// # Errors
    ///
    /// `Conflict` when the worker no longer holds it, `NotFound`.
    async fn renew_lease(
        &self,
        job_id: &str,
        worker_id: &str,
        lease_ms: i64,
        now: i64,
    ) -> StoreResult<JobRecord>;

    /// Marks a held job completed with its result.
    ///
    /// # Errors
    ///
    /// `Conflict` when the worker does not hold it, `NotFound`.
    async fn complete_job(
        &self,
        job_id: &str,
        worker_id: &str,
        result: Value,
        now: i64,
    ) -> StoreResult<JobRecord>;

    /// Records a failed attempt: back to `queued` at `retry_at` when attempts remain and
    /// `retry_at` is given, `failed` otherwise.
    ///
    /// # Errors
    ///
    /// `Conflict` when the worker does not hold it, `NotFound`.
    async fn fail_job(
        &self,
        job_id: &str,
        worker_id: &str,
        error: &str,
        retry_at: Option<i64>,
        now: i64,
    ) -> StoreResult<JobRecord>;

    /// Reads a job.
    ///
    /// # Errors
    ///
    /// Database failures.
    async fn get_job(&self, job_id: &str) -> StoreResult<Option<JobRecord>>;

    /// Jobs of a queue, optionally of one status, by creation (oldest first, then id).
    ///
    /// # Errors
    ///
    /// Database failures.
    async fn list_jobs(
        &self,
        queue: &str,
        status: Option<JobStatus>,
        page: Page,
    ) -> StoreResult<Vec<JobRecord>>;
}
