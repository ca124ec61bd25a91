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
        /// Cancelled before it ended (a running job's worker stops its work).
        Cancelled => "cancelled",
    }
}

impl JobStatus {
    /// Whether the job has ended (`completed`, `failed` or `cancelled`).
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            JobStatus::Completed | JobStatus::Failed | JobStatus::Cancelled
        )
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
    /// The user the job belongs to (`None`: a system job).
    pub owner_id: Option<String>,
    /// Longest run of one attempt (ms); the worker stops an attempt over it.
    pub timeout_ms: Option<i64>,
    /// The execution the job runs (set at submission or by the worker).
    pub execution_id: Option<String>,
    /// The batch the job belongs to.
    pub batch_id: Option<String>,
    /// At most this many jobs of the batch run at once.
    pub batch_concurrency: Option<i32>,
    /// When it was first claimed (ms).
    pub started_at: Option<i64>,
    /// When it ended (ms).
    pub finished_at: Option<i64>,
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
    /// The user the job belongs to.
    pub owner_id: Option<String>,
    /// Longest run of one attempt (ms, > 0).
    pub timeout_ms: Option<i64>,
    /// The execution the job will run.
    pub execution_id: Option<String>,
    /// The batch the job belongs to (with `batch_concurrency`).
    pub batch_id: Option<String>,
    /// At most this many jobs of `batch_id` are claimed (running) at once (≥ 1).
    pub batch_concurrency: Option<i32>,
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
            owner_id: None,
            timeout_ms: None,
            execution_id: None,
            batch_id: None,
            batch_concurrency: None,
        }
    }
}

/// Which jobs [`JobStore::list_jobs`] returns (every set field must match).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobFilter {
    /// Queue name (required).
    pub queue: String,
    /// Only this user's jobs.
    pub owner_id: Option<String>,
    /// Only jobs in this status.
    pub status: Option<JobStatus>,
    /// Only jobs of this priority.
    pub priority: Option<i32>,
    /// Only jobs of this batch.
    pub batch_id: Option<String>,
}

impl JobFilter {
    /// Every job of `queue`.
    pub fn queue(queue: impl Into<String>) -> JobFilter {
        JobFilter {
            queue: queue.into(),
            ..JobFilter::default()
        }
    }
}

/// The number of jobs in one status with one priority.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobCount {
    /// Status.
    pub status: JobStatus,
    /// Priority.
    pub priority: i32,
    /// How many.
    pub count: i64,
}

/// Counts of a queue's jobs per status and priority ([`JobStore::job_stats`]).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobStats {
    /// One entry per (status, priority) pair that has jobs, by status then priority.
    pub counts: Vec<JobCount>,
}

impl JobStats {
    /// Every job counted.
    pub fn total(&self) -> i64 {
        self.counts.iter().map(|c| c.count).sum()
    }

    /// The jobs in `status`.
    pub fn with_status(&self, status: JobStatus) -> i64 {
        self.counts
            .iter()
            .filter(|c| c.status == status)
            .map(|c| c.count)
            .sum()
    }

    /// The jobs of `priority`.
    pub fn with_priority(&self, priority: i32) -> i64 {
        self.counts
            .iter()
            .filter(|c| c.priority == priority)
            .map(|c| c.count)
            .sum()
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

    /// Adds several jobs in one transaction: all of them or none.
    ///
    /// # Errors
    ///
    /// As [`JobStore::enqueue_job`], for any of them (then none is added).
    async fn enqueue_jobs(&self, new: Vec<NewJob>) -> StoreResult<Vec<JobRecord>>;

    /// Claims the best runnable job of `queue` at `now`: highest priority, then earliest
    /// `run_at`, then id; either `queued` with `run_at <= now` or `running` with an expired lease
    /// and attempts left. Sets the lease to `now + lease_ms`, increments `attempts` and sets
    /// `started_at` on the first claim. Concurrent claimers never get the same job. A job of a
    /// batch is skipped while `batch_concurrency` other jobs of its batch are running. A
    /// `running` job whose lease expired with no attempt left is marked `failed` first.
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

    /// The jobs matching `filter`, by creation (oldest first, then id).
    ///
    /// # Errors
    ///
    /// Database failures.
    async fn list_jobs(&self, filter: &JobFilter, page: Page) -> StoreResult<Vec<JobRecord>>;

    /// Cancels a job that has not ended: a `queued` one is never claimed; a `running` one loses
    /// its lease (its worker notices when it renews the lease, or completes, and stops).
    ///
    /// # Errors
    ///
    /// `NotFound`; `Conflict` when the job has already ended.
    async fn cancel_job(&self, job_id: &str, now: i64) -> StoreResult<JobRecord>;

    /// Records the execution a held job runs (a retry runs a new execution).
    ///
    /// # Errors
    ///
    /// `Conflict` when the worker does not hold it, `NotFound`.
    async fn set_job_execution(
        &self,
        job_id: &str,
        worker_id: &str,
        execution_id: &str,
        now: i64,
    ) -> StoreResult<JobRecord>;

    /// Counts the jobs of `queue` (of one owner when given) per status and priority; cheap
    /// enough to read at every metrics scrape.
    ///
    /// # Errors
    ///
    /// Database failures.
    async fn job_stats(&self, queue: &str, owner_id: Option<&str>) -> StoreResult<JobStats>;
}
