//! Asynchronous executions: the durable priority job queue in the store, the worker pool that
//! runs it inside the server, and the `/api/v1/jobs` endpoints.
//!
//! A job runs one execution through the tracker, so the execution's row, steps and events exist
//! as for an inline run (the execution endpoints and the events stream work for it). Jobs are
//! claimed with a lease that the worker renews while the execution runs; a dead worker's job is
//! taken over when its lease expires, and its execution is resumed, not started again. Failed
//! attempts are retried with exponential backoff (doubling from `job_retry_base`, capped at
//! one hour) until `max_attempts`; an attempt over the job's timeout is cancelled and fails.
//!
//! Owner scoping as everywhere: a caller reaches their own jobs (admins: all); another user's
//! job answers 404.

use std::future::Future;
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use chatter_core::WorkflowDefinition;
use chatter_core::engine::RunOptions;
use chatter_core::store::{
    ExecutionKind, ExecutionRecord, ExecutionStatus, JobFilter, JobRecord, JobStatus, NewJob, Page,
    StoreErrorKind,
};
use chatter_core::time::rfc3339_ms;
use chatter_core::tracker::{ExecutionMeta, GraphSource, StoreGraphSource};
use serde::Deserialize;
use serde_json::{Map, Value, json};
use tokio_util::sync::CancellationToken;

use super::auth::Principal;
use super::problem::{ApiError, ApiJson, ApiPath, ApiQuery, check_limit};
use super::schemas;
use super::workflows::{
    readable_definition, readable_template, stored_definition, template_definition, template_input,
};
use super::{AppState, ok};

/// The queue the server's executions are enqueued on.
pub const QUEUE: &str = "workflow_executions";
/// The job kind of an execution.
pub const KIND: &str = "execute_workflow";
/// The longest wait between two attempts.
pub const RETRY_CAP: Duration = Duration::from_secs(3600);
/// The priorities, lowest first, with the integers stored.
pub const PRIORITIES: &[(&str, i32)] = &[("low", 1), ("normal", 2), ("high", 3), ("critical", 4)];
/// Most inputs of one batch.
const MAX_BATCH: usize = 1000;
/// How often a worker waiting for an execution run elsewhere looks at it.
const WAIT_POLL: Duration = Duration::from_millis(100);

pub(super) fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/v1/jobs", get(list_jobs).post(submit))
        .route("/api/v1/jobs/batch", post(submit_batch))
        .route("/api/v1/jobs/stats", get(stats))
        .route("/api/v1/jobs/{job_id}", get(get_job).delete(cancel))
        .route("/api/v1/jobs/{job_id}/cancel", post(cancel_post))
}

// ---------------------------------------------------------------------------------------------
// Priorities, options, JSON
// ---------------------------------------------------------------------------------------------

/// The stored integer of a priority name, else 422 naming the allowed ones.
pub(crate) fn parse_priority(name: &str) -> Result<i32, ApiError> {
    PRIORITIES
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name.trim()))
        .map(|(_, v)| *v)
        .ok_or_else(|| {
            ApiError::unprocessable(format!(
                "unknown priority `{name}`; expected one of low, normal, high, critical"
            ))
        })
}

/// The name of a stored priority.
pub(crate) fn priority_name(value: i32) -> &'static str {
    match value {
        i32::MIN..=1 => "low",
        2 => "normal",
        3 => "high",
        _ => "critical",
    }
}

/// The retry delay after `attempts` failed attempts: `base`, doubling, capped at one hour.
pub(crate) fn backoff(base: Duration, attempts: i32) -> Duration {
    let doublings = u32::try_from(attempts.saturating_sub(1))
        .unwrap_or(0)
        .min(30);
    base.saturating_mul(1u32 << doublings).min(RETRY_CAP)
}

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// The queue options a submission may carry (body of `/api/v1/jobs`, query of `?async=true`).
#[derive(Debug, Clone, Default, Deserialize)]
pub(crate) struct JobOptions {
    /// `low|normal|high|critical` (default `normal`).
    #[serde(default)]
    pub(crate) priority: Option<String>,
    /// Attempts allowed (1..=20, default 3).
    #[serde(default)]
    pub(crate) max_attempts: Option<i32>,
    /// Longest run of one attempt in milliseconds (default: none beyond the engine's limits).
    #[serde(default)]
    pub(crate) timeout_ms: Option<i64>,
}

struct Checked {
    priority: i32,
    max_attempts: i32,
    timeout_ms: Option<i64>,
}

impl JobOptions {
    fn check(&self) -> Result<Checked, ApiError> {
        let priority = match &self.priority {
            Some(name) => parse_priority(name)?,
            None => 2,
        };
        let max_attempts = self.max_attempts.unwrap_or(3);
        if !(1..=20).contains(&max_attempts) {
            return Err(ApiError::unprocessable(
                "`max_attempts` must be within 1..=20",
            ));
        }
        if let Some(t) = self.timeout_ms
            && !(1..=86_400_000).contains(&t)
        {
            return Err(ApiError::unprocessable(
                "`timeout_ms` must be within 1..=86400000",
            ));
        }
        Ok(Checked {
            priority,
            max_attempts,
            timeout_ms: self.timeout_ms,
        })
    }
}

/// `?async=true&priority=&max_attempts=&timeout_ms=` of the execute endpoints (documented as
/// these query parameters of each of them).
#[derive(Debug, Clone, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct AsyncQuery {
    /// `true`: enqueue the run as a job and answer 202 with the job, instead of running it
    /// inline.
    #[serde(default, rename = "async")]
    #[param(rename = "async", value_type = Option<bool>)]
    pub(crate) run_async: bool,
    /// The job's priority (`low`, `normal`, `high`, `critical`; default `normal`).
    #[serde(default)]
    #[param(value_type = Option<schemas::JobPriority>)]
    pub(crate) priority: Option<String>,
    /// The job's attempts, 1..=20 (default 3).
    #[serde(default)]
    pub(crate) max_attempts: Option<i32>,
    /// Longest run of one attempt in ms, 1..=86400000.
    #[serde(default)]
    pub(crate) timeout_ms: Option<i64>,
}

/// A job as the API shows it (the old job fields and the queue's own).
pub(crate) fn job_json(job: &JobRecord) -> Value {
    let payload = &job.payload;
    let status = job.status.as_str();
    json!({
        "id": job.id,
        "name": payload.get("name").cloned().unwrap_or(Value::Null),
        "function_name": job.kind,
        "status": status,
        "priority": priority_name(job.priority),
        "priority_value": job.priority,
        "owner_id": job.owner_id,
        "workflow_id": payload.get("workflow_id").cloned().unwrap_or(json!("")),
        "execution_id": job.execution_id,
        "batch_id": job.batch_id,
        "batch_concurrency": job.batch_concurrency,
        "created_at": rfc3339_ms(job.created_at),
        "updated_at": rfc3339_ms(job.updated_at),
        "scheduled_at": rfc3339_ms(job.run_at),
        "started_at": job.started_at.map(rfc3339_ms),
        "completed_at": job.finished_at.map(rfc3339_ms),
        "result": job.result,
        "error": if job.status == JobStatus::Completed { None } else { job.last_error.clone() },
        "attempts": job.attempts,
        "max_attempts": job.max_attempts,
        "retry_count": (job.attempts - 1).max(0),
        "max_retries": job.max_attempts - 1,
        "timeout_ms": job.timeout_ms,
        "timeout": job.timeout_ms.map(|t| t as f64 / 1000.0),
        "progress": if job.status == JobStatus::Completed { 100.0 } else { 0.0 },
        "tags": [],
        "metadata": {"kind": payload.get("meta").and_then(|m| m.get("kind")).cloned()},
    })
}

// ---------------------------------------------------------------------------------------------
// Submission
// ---------------------------------------------------------------------------------------------

/// What a job runs: the execution's input and record, and its graph (a stored definition is
/// read again when the job runs, so a deleted one fails the job).
pub(crate) struct Submission {
    pub(crate) name: String,
    pub(crate) input: Value,
    pub(crate) definition_id: Option<String>,
    pub(crate) graph: Option<Value>,
    pub(crate) meta: ExecutionMeta,
    /// The graph as it is now, checked before the job is queued.
    def: WorkflowDefinition,
}

impl Submission {
    /// A run of `def` (kept with the job unless `definition_id` names a stored definition).
    pub(crate) fn new(
        name: impl Into<String>,
        def: &WorkflowDefinition,
        input: Value,
        meta: ExecutionMeta,
    ) -> Submission {
        let definition_id = match meta.kind {
            ExecutionKind::Definition => meta.definition_id.clone(),
            _ => None,
        };
        Submission {
            name: name.into(),
            input,
            graph: definition_id.is_none().then(|| def.to_value()),
            definition_id,
            meta,
            def: def.clone(),
        }
    }

    fn payload(&self) -> Value {
        let m = &self.meta;
        let workflow_id = m
            .definition_id
            .clone()
            .or_else(|| m.template_id.clone())
            .or_else(|| {
                m.params
                    .get("template_id")
                    .and_then(Value::as_str)
                    .map(str::to_owned)
            })
            .unwrap_or_default();
        json!({
            "name": self.name,
            "workflow_id": workflow_id,
            "input": self.input,
            "definition_id": self.definition_id,
            "graph": self.graph,
            "meta": {
                "owner_id": m.owner_id,
                "kind": m.kind.as_str(),
                "definition_id": m.definition_id,
                "template_id": m.template_id,
                "params": m.params,
                "conversation_id": m.conversation_id,
            },
        })
    }
}

/// The job of a submission for the caller (its graph checked by the engine first: a graph it
/// refuses is refused now, 422, as an inline run would be).
fn new_job(
    state: &AppState,
    p: &Principal,
    submission: &Submission,
    options: &Checked,
    batch: Option<(&str, i32)>,
) -> Result<NewJob, ApiError> {
    state.engine().prepare(&submission.def)?;
    let now = state.engine().services().clock.now_ms();
    let mut new = NewJob::new(QUEUE, KIND, submission.payload(), now);
    new.priority = options.priority;
    new.max_attempts = options.max_attempts;
    new.timeout_ms = options.timeout_ms;
    new.owner_id = Some(p.id().to_owned());
    new.execution_id = Some(ulid::Ulid::new().to_string());
    if let Some((id, cap)) = batch {
        new.batch_id = Some(id.to_owned());
        new.batch_concurrency = Some(cap);
    }
    Ok(new)
}

/// Enqueues a submission for the caller; wakes a worker.
async fn enqueue(
    state: &AppState,
    p: &Principal,
    submission: &Submission,
    options: &Checked,
) -> Result<JobRecord, ApiError> {
    let new = new_job(state, p, submission, options, None)?;
    let job = state.store().enqueue_job(new).await?;
    state.job_wakeup().notify_waiters();
    Ok(job)
}

fn accepted(job: &JobRecord) -> Response {
    let mut doc = job_json(job);
    doc["job_id"] = json!(job.id);
    let mut response = (StatusCode::ACCEPTED, axum::Json(doc)).into_response();
    if let Ok(location) = HeaderValue::from_str(&format!("/api/v1/jobs/{}", job.id)) {
        response.headers_mut().insert(header::LOCATION, location);
    }
    response
}

/// For the execute endpoints: with `?async=true`, enqueues the run and answers 202 with the
/// job (its `execution_id` is the execution it will run); `None` to run inline.
pub(crate) async fn enqueue_if_async(
    state: &AppState,
    p: &Principal,
    query: &AsyncQuery,
    submission: impl FnOnce() -> Submission,
) -> Result<Option<Response>, ApiError> {
    let options = JobOptions {
        priority: query.priority.clone(),
        max_attempts: query.max_attempts,
        timeout_ms: query.timeout_ms,
    }
    .check()?;
    if !query.run_async {
        return Ok(None);
    }
    let submission = submission();
    let job = enqueue(state, p, &submission, &options).await?;
    audit_submit(state, p, &job).await;
    Ok(Some(accepted(&job)))
}

async fn audit_submit(state: &AppState, p: &Principal, job: &JobRecord) {
    state
        .audit(
            Some(p.id()),
            "job.submit",
            ("job", Some(&job.id)),
            "success",
            json!({"execution_id": job.execution_id, "priority": priority_name(job.priority)}),
        )
        .await;
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct JobSubmit {
    /// A stored definition's id.
    #[serde(default, alias = "definition_id")]
    workflow_id: Option<String>,
    /// A template's id (stored or built in).
    #[serde(default)]
    template_id: Option<String>,
    /// The execution input (for a template: `message`, `variables`, and its parameters).
    #[serde(default, alias = "input_data")]
    input: Option<Map<String, Value>>,
    #[serde(default)]
    priority: Option<String>,
    #[serde(default)]
    max_attempts: Option<i32>,
    #[serde(default)]
    timeout_ms: Option<i64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct BatchSubmit {
    #[serde(default, alias = "definition_id")]
    workflow_id: Option<String>,
    #[serde(default)]
    template_id: Option<String>,
    inputs: Vec<Map<String, Value>>,
    /// At most this many of the batch run at once (default: no cap beyond the workers).
    #[serde(default)]
    concurrency: Option<i32>,
    #[serde(default)]
    priority: Option<String>,
    #[serde(default)]
    max_attempts: Option<i32>,
    #[serde(default)]
    timeout_ms: Option<i64>,
}

/// The submission for a definition or template id and one input.
async fn submission_for(
    state: &AppState,
    p: &Principal,
    workflow_id: Option<&str>,
    template_id: Option<&str>,
    input: Map<String, Value>,
) -> Result<Submission, ApiError> {
    match (workflow_id, template_id) {
        (Some(id), None) => {
            let record = readable_definition(state, p, id).await?;
            let def = stored_definition(&record)?;
            let meta = ExecutionMeta::new(p.id(), ExecutionKind::Definition)
                .definition(&record.id)
                .params(json!({"definition_id": record.id}));
            Ok(Submission::new(
                record.name.clone(),
                &def,
                Value::Object(input),
                meta,
            ))
        }
        (None, Some(id)) => {
            let template = readable_template(state, p, id).await?;
            let (params, run_input) = template_input(input);
            let (def, params) = template_definition(state, &template.spec, params)?;
            let mut recorded = params.clone();
            recorded.insert("template_id".into(), json!(template.id));
            let mut meta =
                ExecutionMeta::new(p.id(), ExecutionKind::Template).params(Value::Object(recorded));
            if template.is_stored() {
                meta = meta.template(&template.id);
            }
            Ok(Submission::new(
                template.spec.name.clone(),
                &def,
                run_input,
                meta,
            ))
        }
        _ => Err(ApiError::unprocessable(
            "name exactly one of `workflow_id` (a definition) and `template_id`",
        )),
    }
}

/// Enqueues one run of a definition or template.
#[utoipa::path(
    post,
    path = "/api/v1/jobs",
    operation_id = "submit_job",
    tag = "Jobs",
    request_body = schemas::JobSubmit,
    responses(
        (status = 202, description = "The job, queued (`Location`: the job's URL)", body = schemas::Job,
         headers(("location" = String, description = "The job's URL"))),
        (status = 404, description = "No such definition or template readable by the caller", body = schemas::Problem, content_type = "application/problem+json"),
        (status = 422, description = "Not exactly one of `workflow_id` and `template_id`, an unknown priority, options out of range, or a graph the engine refuses", body = schemas::Problem, content_type = "application/problem+json"),
    ),
    security(("CustomHTTPBearer" = [])),
)]
async fn submit(
    State(state): State<AppState>,
    p: Principal,
    ApiJson(body): ApiJson<JobSubmit>,
) -> Result<Response, ApiError> {
    p.require("workflow:execute")?;
    let options = JobOptions {
        priority: body.priority.clone(),
        max_attempts: body.max_attempts,
        timeout_ms: body.timeout_ms,
    }
    .check()?;
    let submission = submission_for(
        &state,
        &p,
        body.workflow_id.as_deref(),
        body.template_id.as_deref(),
        body.input.unwrap_or_default(),
    )
    .await?;
    let job = enqueue(&state, &p, &submission, &options).await?;
    audit_submit(&state, &p, &job).await;
    Ok(accepted(&job))
}

/// Enqueues one run per input, in one transaction (a bad input writes no job).
#[utoipa::path(
    post,
    path = "/api/v1/jobs/batch",
    operation_id = "submit_job_batch",
    tag = "Jobs",
    request_body = schemas::JobBatch,
    responses(
        (status = 202, description = "The batch, queued", body = schemas::JobBatchResponse),
        (status = 404, description = "No such definition or template readable by the caller", body = schemas::Problem, content_type = "application/problem+json"),
        (status = 422, description = "No inputs or more than 1000, a concurrency out of range, an unknown priority, or an input the engine refuses", body = schemas::Problem, content_type = "application/problem+json"),
    ),
    security(("CustomHTTPBearer" = [])),
)]
async fn submit_batch(
    State(state): State<AppState>,
    p: Principal,
    ApiJson(body): ApiJson<BatchSubmit>,
) -> Result<Response, ApiError> {
    p.require("workflow:execute")?;
    let options = JobOptions {
        priority: body.priority.clone(),
        max_attempts: body.max_attempts,
        timeout_ms: body.timeout_ms,
    }
    .check()?;
    if body.inputs.is_empty() || body.inputs.len() > MAX_BATCH {
        return Err(ApiError::unprocessable(format!(
            "`inputs` must hold 1..={MAX_BATCH} inputs"
        )));
    }
    let count = i32::try_from(body.inputs.len()).unwrap_or(i32::MAX);
    let concurrency = body.concurrency.unwrap_or(count);
    if !(1..=i32::try_from(MAX_BATCH).unwrap_or(i32::MAX)).contains(&concurrency) {
        return Err(ApiError::unprocessable(format!(
            "`concurrency` must be within 1..={MAX_BATCH}"
        )));
    }
    // Every input is checked, then the jobs are written in one transaction: a bad batch
    // writes nothing.
    let batch_id = ulid::Ulid::new().to_string();
    let mut new = Vec::with_capacity(body.inputs.len());
    for input in body.inputs {
        let submission = submission_for(
            &state,
            &p,
            body.workflow_id.as_deref(),
            body.template_id.as_deref(),
            input,
        )
        .await?;
        new.push(new_job(
            &state,
            &p,
            &submission,
            &options,
            Some((&batch_id, concurrency)),
        )?);
    }
    let jobs: Vec<Value> = state
        .store()
        .enqueue_jobs(new)
        .await?
        .iter()
        .map(job_json)
        .collect();
    state.job_wakeup().notify_waiters();
    state
        .audit(
            Some(p.id()),
            "job.submit_batch",
            ("job_batch", Some(&batch_id)),
            "success",
            json!({"jobs": jobs.len(), "concurrency": concurrency}),
        )
        .await;
    Ok((
        StatusCode::ACCEPTED,
        axum::Json(json!({
            "batch_id": batch_id,
            "concurrency": concurrency,
            "total_jobs": jobs.len(),
            "jobs": jobs,
        })),
    )
        .into_response())
}

// ---------------------------------------------------------------------------------------------
// Reading and cancelling
// ---------------------------------------------------------------------------------------------

/// The caller's job (any for admins), else 404.
async fn owned(state: &AppState, p: &Principal, id: &str) -> Result<JobRecord, ApiError> {
    state
        .store()
        .get_job(id)
        .await?
        .filter(|j| j.queue == QUEUE)
        .filter(|j| p.is_admin() || j.owner_id.as_deref() == Some(p.id()))
        .ok_or_else(|| ApiError::not_found(format!("no job `{id}`")))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ListQuery {
    status: Option<String>,
    priority: Option<String>,
    batch_id: Option<String>,
    #[serde(default = "fifty")]
    limit: u32,
    #[serde(default)]
    offset: u64,
}

fn fifty() -> u32 {
    50
}

/// The caller's jobs (an admin's: everyone's), oldest first.
#[utoipa::path(
    get,
    path = "/api/v1/jobs",
    operation_id = "list_jobs",
    tag = "Jobs",
    params(
        ("status" = Option<schemas::JobState>, Query, description = "Only jobs in this state"),
        ("priority" = Option<schemas::JobPriority>, Query, description = "Only jobs of this priority"),
        ("batch_id" = Option<String>, Query, description = "Only the jobs of this batch"),
        ("limit" = Option<u32>, Query, description = "Page size, 1..=1000 (default 50)"),
        ("offset" = Option<u64>, Query, description = "Jobs skipped (default 0)"),
    ),
    responses(
        (status = 200, description = "A page of jobs", body = schemas::JobList),
        (status = 422, description = "An unknown state or priority, or a limit out of range", body = schemas::Problem, content_type = "application/problem+json"),
    ),
    security(("CustomHTTPBearer" = [])),
)]
async fn list_jobs(
    State(state): State<AppState>,
    p: Principal,
    ApiQuery(query): ApiQuery<ListQuery>,
) -> Result<Response, ApiError> {
    p.require("workflow:read")?;
    check_limit(query.limit, 1000)?;
    let status = query
        .status
        .as_deref()
        .map(|s| {
            JobStatus::parse(s).map_err(|_| {
                ApiError::unprocessable(format!(
                    "unknown status `{s}`; expected one of queued, running, completed, failed, cancelled"
                ))
            })
        })
        .transpose()?;
    let priority = query.priority.as_deref().map(parse_priority).transpose()?;
    let filter = JobFilter {
        queue: QUEUE.to_owned(),
        owner_id: (!p.is_admin()).then(|| p.id().to_owned()),
        status,
        priority,
        batch_id: query.batch_id,
    };
    let jobs = state
        .store()
        .list_jobs(&filter, Page::new(query.limit, query.offset))
        .await?;
    let jobs: Vec<Value> = jobs.iter().map(job_json).collect();
    Ok(ok(json!({
        "jobs": jobs,
        "total_count": jobs.len(),
        "limit": query.limit,
        "offset": query.offset,
    })))
}

/// One job of the caller (an admin: any).
#[utoipa::path(
    get,
    path = "/api/v1/jobs/{job_id}",
    operation_id = "get_job",
    tag = "Jobs",
    params(("job_id" = String, Path, description = "Job ID")),
    responses(
        (status = 200, description = "The job", body = schemas::Job),
        (status = 404, description = "No such job of the caller", body = schemas::Problem, content_type = "application/problem+json"),
    ),
    security(("CustomHTTPBearer" = [])),
)]
async fn get_job(
    State(state): State<AppState>,
    p: Principal,
    ApiPath(id): ApiPath<String>,
) -> Result<Response, ApiError> {
    p.require("workflow:read")?;
    let job = owned(&state, &p, &id).await?;
    Ok(ok(job_json(&job)))
}

/// Cancels a job that has not ended; a running one's execution is stopped.
#[utoipa::path(
    post,
    path = "/api/v1/jobs/{job_id}/cancel",
    operation_id = "cancel_job",
    tag = "Jobs",
    params(("job_id" = String, Path, description = "Job ID")),
    responses(
        (status = 200, description = "The job, cancelled", body = schemas::Job),
        (status = 404, description = "No such job of the caller", body = schemas::Problem, content_type = "application/problem+json"),
        (status = 409, description = "The job has already ended", body = schemas::Problem, content_type = "application/problem+json"),
    ),
    security(("CustomHTTPBearer" = [])),
)]
async fn cancel_post(
    state: State<AppState>,
    p: Principal,
    id: ApiPath<String>,
) -> Result<Response, ApiError> {
    cancel(state, p, id).await
}

/// As `POST /api/v1/jobs/{job_id}/cancel`.
#[utoipa::path(
    delete,
    path = "/api/v1/jobs/{job_id}",
    operation_id = "delete_job",
    tag = "Jobs",
    params(("job_id" = String, Path, description = "Job ID")),
    responses(
        (status = 200, description = "The job, cancelled", body = schemas::Job),
        (status = 404, description = "No such job of the caller", body = schemas::Problem, content_type = "application/problem+json"),
        (status = 409, description = "The job has already ended", body = schemas::Problem, content_type = "application/problem+json"),
    ),
    security(("CustomHTTPBearer" = [])),
)]
async fn cancel(
    State(state): State<AppState>,
    p: Principal,
    ApiPath(id): ApiPath<String>,
) -> Result<Response, ApiError> {
    p.require("workflow:execute")?;
    let job = owned(&state, &p, &id).await?;
    if job.status.is_terminal() {
        return Err(ApiError::conflict(format!(
            "job `{id}` has already ended ({})",
            job.status
        )));
    }
    let now = state.engine().services().clock.now_ms();
    let job = state.store().cancel_job(&id, now).await?;
    // A worker of this server stops the execution at once; one of another server notices when
    // it next renews the job's lease.
    if let Some(token) = job
        .execution_id
        .as_deref()
        .and_then(|e| state.live_token(e))
    {
        token.cancel();
    }
    state
        .audit(
            Some(p.id()),
            "job.cancel",
            ("job", Some(&id)),
            "success",
            json!({}),
        )
        .await;
    Ok(ok(job_json(&job)))
}

/// Counts of the caller's jobs (an admin's: everyone's) by state and priority.
#[utoipa::path(
    get,
    path = "/api/v1/jobs/stats",
    operation_id = "job_stats",
    tag = "Jobs",
    responses((status = 200, description = "The counts", body = schemas::JobStats)),
    security(("CustomHTTPBearer" = [])),
)]
async fn stats(State(state): State<AppState>, p: Principal) -> Result<Response, ApiError> {
    p.require("workflow:read")?;
    let owner = (!p.is_admin()).then(|| p.id().to_owned());
    let stats = state.store().job_stats(QUEUE, owner.as_deref()).await?;
    let mut by_status = Map::new();
    for status in JobStatus::ALL {
        by_status.insert(status.as_str().into(), json!(stats.with_status(*status)));
    }
    let mut by_priority = Map::new();
    for (name, value) in PRIORITIES {
        by_priority.insert((*name).into(), json!(stats.with_priority(*value)));
    }
    let queued = stats.with_status(JobStatus::Queued);
    Ok(ok(json!({
        "total_jobs": stats.total(),
        "pending_jobs": queued,
        "queued_jobs": queued,
        "running_jobs": stats.with_status(JobStatus::Running),
        "completed_jobs": stats.with_status(JobStatus::Completed),
        "failed_jobs": stats.with_status(JobStatus::Failed),
        "cancelled_jobs": stats.with_status(JobStatus::Cancelled),
        "queue_size": queued,
        "active_workers": state.config().job_workers,
        "by_status": by_status,
        "by_priority": by_priority,
    })))
}

// ---------------------------------------------------------------------------------------------
// Workers
// ---------------------------------------------------------------------------------------------

/// Starts `config.job_workers` workers; they stop at shutdown.
pub(crate) fn start_workers(state: &AppState) -> Vec<tokio::task::JoinHandle<()>> {
    let prefix = format!("jobs-{}", ulid::Ulid::new());
    (0..state.config().job_workers)
        .map(|n| tokio::spawn(worker_loop(state.clone(), format!("{prefix}-{n}"))))
        .collect()
}

async fn worker_loop(state: AppState, worker_id: String) {
    let lease = millis(state.config().job_lease);
    loop {
        if state.shutdown_token().is_cancelled() {
            return;
        }
        // Registered before the claim, so an enqueue between the claim and the wait wakes it.
        let wakeup = state.job_wakeup().notified();
        let now = state.engine().services().clock.now_ms();
        match state.store().claim_job(QUEUE, &worker_id, lease, now).await {
            Ok(Some(job)) => {
                run_job(&state, &worker_id, job).await;
                continue;
            }
            Ok(None) => {}
            Err(e) => eprintln!("chatter serve: {worker_id}: claiming a job failed: {e}"),
        }
        tokio::select! {
            () = state.shutdown_token().cancelled() => return,
            () = wakeup => {}
            () = tokio::time::sleep(state.config().job_poll_interval) => {}
        }
    }
}

/// Why a supervised attempt stopped early.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stop {
    /// It ran to its end.
    No,
    /// The job was cancelled.
    Cancelled,
    /// The attempt ran over the job's timeout.
    TimedOut,
    /// Another worker holds the job now (this one's lease expired).
    Lost,
}

/// How an attempt ended.
enum Attempt {
    /// The execution ended (or waits for an approval): the stored row.
    Ran(Box<ExecutionRecord>),
    /// Failed without retry (a deleted definition, an unusable graph).
    Permanent(String),
    /// Failed; retried when attempts remain.
    Retry(String),
}

/// Drives `work` while renewing the job's lease; cancels `token` when the job is cancelled or
/// its timeout passes.
async fn supervise<F: Future>(
    state: &AppState,
    worker_id: &str,
    job: &JobRecord,
    token: &CancellationToken,
    work: F,
) -> (F::Output, Stop) {
    let lease = state.config().job_lease;
    let period = (lease / 3).max(Duration::from_millis(10));
    let mut renew = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    let deadline = job.timeout_ms.map(|t| {
        tokio::time::Instant::now() + Duration::from_millis(u64::try_from(t).unwrap_or(0))
    });
    let mut stop = Stop::No;
    tokio::pin!(work);
    loop {
        tokio::select! {
            out = &mut work => return (out, stop),
            // A timed-out attempt keeps its lease until its failure is recorded.
            _ = renew.tick(), if matches!(stop, Stop::No | Stop::TimedOut) => {
                let now = state.engine().services().clock.now_ms();
                if let Err(e) = state
                    .store()
                    .renew_lease(&job.id, worker_id, millis(lease), now)
                    .await
                {
                    let current = state.store().get_job(&job.id).await.ok().flatten();
                    if current.as_ref().is_some_and(|j| j.status == JobStatus::Cancelled) {
                        stop = Stop::Cancelled;
                        token.cancel();
                    } else if stop == Stop::No && e.store_kind() == Some(StoreErrorKind::Conflict) {
                        // Another worker took the job over; it waits for this execution.
                        stop = Stop::Lost;
                    }
                }
            }
            () = async {
                if let Some(at) = deadline { tokio::time::sleep_until(at).await }
                else { std::future::pending::<()>().await }
            }, if stop == Stop::No => {
                stop = Stop::TimedOut;
                token.cancel();
            }
        }
    }
}

/// Runs one claimed job to the end of this attempt and records the outcome.
async fn run_job(state: &AppState, worker_id: &str, job: JobRecord) {
    let token = CancellationToken::new();
    let (attempt, stop) = supervise(
        state,
        worker_id,
        &job,
        &token,
        attempt(state, worker_id, &job, &token),
    )
    .await;
    let now = state.engine().services().clock.now_ms();
    let store = state.store();
    let recorded = match (stop, attempt) {
        (Stop::Cancelled | Stop::Lost, _) => Ok(()),
        // Ended just as the timeout passed: the run stands.
        (Stop::TimedOut, Attempt::Ran(record))
            if matches!(
                record.status,
                ExecutionStatus::Completed | ExecutionStatus::Waiting
            ) =>
        {
            store
                .complete_job(&job.id, worker_id, result_json(&record), now)
                .await
                .map(drop)
        }
        (Stop::TimedOut, attempt) => {
            let execution = match &attempt {
                Attempt::Ran(record) => format!("; execution {} was cancelled", record.id),
                _ => String::new(),
            };
            let error = format!(
                "the attempt timed out after {} ms{execution}",
                job.timeout_ms.unwrap_or_default()
            );
            fail(state, worker_id, &job, &error, true, now).await
        }
        (Stop::No, Attempt::Permanent(error)) => {
            fail(state, worker_id, &job, &error, false, now).await
        }
        (Stop::No, Attempt::Retry(error)) => fail(state, worker_id, &job, &error, true, now).await,
        (Stop::No, Attempt::Ran(record)) => match record.status {
            ExecutionStatus::Completed | ExecutionStatus::Waiting => store
                .complete_job(&job.id, worker_id, result_json(&record), now)
                .await
                .map(drop),
            ExecutionStatus::Cancelled => {
                // Cancelled through the execution endpoints: the job ends with it.
                store.cancel_job(&job.id, now).await.map(drop)
            }
            ExecutionStatus::Failed => {
                let error = format!(
                    "execution {} failed: {}",
                    record.id,
                    record.error.as_deref().unwrap_or("no error recorded")
                );
                fail(state, worker_id, &job, &error, true, now).await
            }
            ExecutionStatus::Pending | ExecutionStatus::Running => {
                let error = format!("execution {} did not finish ({})", record.id, record.status);
                fail(state, worker_id, &job, &error, true, now).await
            }
        },
    };
    match recorded {
        Ok(()) => {}
        // Cancelled (or taken over) meanwhile: the job's row already says so.
        Err(e) if e.store_kind() == Some(StoreErrorKind::Conflict) => {}
        Err(e) => eprintln!(
            "chatter serve: {worker_id}: recording the outcome of job {} failed: {e}",
            job.id
        ),
    }
}

async fn fail(
    state: &AppState,
    worker_id: &str,
    job: &JobRecord,
    error: &str,
    retry: bool,
    now: i64,
) -> chatter_core::Result<()> {
    eprintln!(
        "chatter serve: {worker_id}: job {} attempt {}/{} failed: {error}",
        job.id, job.attempts, job.max_attempts
    );
    let retry_at = retry
        .then(|| now.saturating_add(millis(backoff(state.config().job_retry_base, job.attempts))));
    state
        .store()
        .fail_job(&job.id, worker_id, error, retry_at, now)
        .await
        .map(drop)
}

fn result_json(record: &ExecutionRecord) -> Value {
    let doc = super::workflows::execution_json(record);
    json!({
        "execution_id": record.id,
        "status": record.status.as_str(),
        "output_data": doc["output_data"],
        "response": record.response,
        "error_message": record.error,
        "tokens_used": record.total_tokens,
        "cost": record.cost,
        "execution_time_ms": record.duration_ms,
    })
}

/// The graph a job runs: its stored definition as it is now, else the graph it carries.
async fn job_graph(state: &AppState, payload: &Value) -> Result<WorkflowDefinition, Attempt> {
    if let Some(id) = payload.get("definition_id").and_then(Value::as_str) {
        let record = state
            .store()
            .get_definition(id)
            .await
            .map_err(|e| Attempt::Retry(format!("reading definition `{id}` failed: {e}")))?
            .ok_or_else(|| {
                Attempt::Permanent(format!(
                    "workflow definition `{id}` was deleted before the job ran"
                ))
            })?;
        return stored_definition(&record)
            .map_err(|e| Attempt::Permanent(format!("definition `{id}`: {}", e.detail)));
    }
    match payload.get("graph") {
        Some(graph) if graph.is_object() => WorkflowDefinition::from_value(graph)
            .map_err(|e| Attempt::Permanent(format!("the job's graph is unusable: {e}"))),
        _ => Err(Attempt::Permanent(
            "the job names neither a definition nor a graph".into(),
        )),
    }
}

fn job_meta(payload: &Value) -> Result<ExecutionMeta, Attempt> {
    let meta = payload.get("meta").cloned().unwrap_or(Value::Null);
    let text = |key: &str| meta.get(key).and_then(Value::as_str).map(str::to_owned);
    let owner = text("owner_id")
        .ok_or_else(|| Attempt::Permanent("the job's payload has no owner".into()))?;
    let kind = text("kind")
        .and_then(|k| ExecutionKind::parse(&k).ok())
        .ok_or_else(|| Attempt::Permanent("the job's payload has no execution kind".into()))?;
    let mut out =
        ExecutionMeta::new(owner, kind).params(meta.get("params").cloned().unwrap_or(json!({})));
    if let Some(id) = text("definition_id") {
        out = out.definition(id);
    }
    if let Some(id) = text("template_id") {
        out = out.template(id);
    }
    if let Some(id) = text("conversation_id") {
        out = out.conversation(id);
    }
    Ok(out)
}

/// One attempt: runs the job's execution, resumes it when a dead worker left it unfinished,
/// or waits for it when another worker runs it; a retry after a failed execution runs a new
/// one.
async fn attempt(
    state: &AppState,
    worker_id: &str,
    job: &JobRecord,
    token: &CancellationToken,
) -> Attempt {
    match try_attempt(state, worker_id, job, token).await {
        Ok(record) => Attempt::Ran(Box::new(record)),
        Err(attempt) => attempt,
    }
}

async fn try_attempt(
    state: &AppState,
    worker_id: &str,
    job: &JobRecord,
    token: &CancellationToken,
) -> Result<ExecutionRecord, Attempt> {
    let store = state.store();
    let retry = |what: &str, e: &dyn std::fmt::Display| Attempt::Retry(format!("{what}: {e}"));
    let mut execution_id = job
        .execution_id
        .clone()
        .unwrap_or_else(|| ulid::Ulid::new().to_string());
    let mut existing = store
        .get_execution(&execution_id)
        .await
        .map_err(|e| retry("reading the execution failed", &e))?;
    if existing.as_ref().is_some_and(|r| {
        matches!(
            r.status,
            ExecutionStatus::Failed | ExecutionStatus::Cancelled
        )
    }) {
        // The previous attempt's execution failed: this attempt runs a new one.
        execution_id = ulid::Ulid::new().to_string();
        existing = None;
    }
    if job.execution_id.as_deref() != Some(execution_id.as_str()) {
        let now = state.engine().services().clock.now_ms();
        store
            .set_job_execution(&job.id, worker_id, &execution_id, now)
            .await
            .map_err(|e| retry("recording the job's execution failed", &e))?;
    }
    let Some(_live) = state.try_register_live(&execution_id, token.clone()) else {
        // Live in this server already (a resume or approve request, the resumer): its runner
        // records the outcome; this attempt waits for it.
        wait_for_end(state, &execution_id, token).await?;
        return store
            .get_execution(&execution_id)
            .await
            .map_err(|e| retry("reading the execution failed", &e))?
            .ok_or_else(|| Attempt::Retry(format!("execution {execution_id} was not recorded")));
    };
    // The execution's lease is held in this worker's name: the server's resumer (and other
    // workers) then see it as taken, and never run the same execution at the same time.
    let tracker = state.tracker().clone().worker_id(worker_id);
    match existing {
        None => {
            let def = job_graph(state, &job.payload).await?;
            let meta = job_meta(&job.payload)?;
            let input = job.payload.get("input").cloned().unwrap_or(json!({}));
            let mut options = RunOptions::default()
                .owner(meta.owner_id.clone())
                .execution_id(&execution_id);
            options.cancel = Some(token.clone());
            let run = tracker
                .run(state.engine(), &def, input, options, meta)
                .await
                .map_err(|e| match ApiError::from(e) {
                    e if e.status.is_server_error() => Attempt::Retry(e.detail),
                    e => Attempt::Permanent(e.detail),
                })?;
            if let Some(error) = run.store_error {
                return Err(retry("the execution was not fully recorded", &error));
            }
            if let Some(record) = run.record {
                return Ok(record);
            }
        }
        Some(record)
            if record.status.is_terminal() || record.status == ExecutionStatus::Waiting =>
        {
            // A dead worker's execution that had ended (or paused): its outcome is the job's.
        }
        Some(record) => {
            let def = StoreGraphSource::new(store.clone())
                .definition_for(&record)
                .await
                .map_err(|e| Attempt::Permanent(format!("the execution's graph: {e}")))?;
            let mut options = RunOptions::default().owner(record.owner_id.clone());
            options.cancel = Some(token.clone());
            match tracker
                .resume(state.engine(), &def, &execution_id, None, options)
                .await
            {
                Ok(run) => {
                    if let Some(error) = run.store_error {
                        return Err(retry("the execution was not fully recorded", &error));
                    }
                    if let Some(record) = run.record {
                        return Ok(record);
                    }
                }
                Err(e) => {
                    // Another worker (or the server's resumer) runs it, or has just finished
                    // it: wait for its end.
                    let now_ended = store
                        .get_execution(&execution_id)
                        .await
                        .map_err(|e| retry("reading the execution failed", &e))?
                        .is_some_and(|r| {
                            r.status.is_terminal() || r.status == ExecutionStatus::Waiting
                        });
                    if !now_ended && e.store_kind() != Some(StoreErrorKind::Conflict) {
                        return Err(retry("resuming the execution failed", &e));
                    }
                    wait_for_end(state, &execution_id, token).await?;
                }
            }
        }
    }
    store
        .get_execution(&execution_id)
        .await
        .map_err(|e| retry("reading the execution failed", &e))?
        .ok_or_else(|| Attempt::Retry(format!("execution {execution_id} was not recorded")))
}

/// Waits until an execution run elsewhere ends or pauses (or `token` is cancelled).
async fn wait_for_end(
    state: &AppState,
    execution_id: &str,
    token: &CancellationToken,
) -> Result<(), Attempt> {
    loop {
        let record = state
            .store()
            .get_execution(execution_id)
            .await
            .map_err(|e| Attempt::Retry(format!("reading the execution failed: {e}")))?;
        if record
            .as_ref()
            .is_none_or(|r| r.status.is_terminal() || r.status == ExecutionStatus::Waiting)
        {
            return Ok(());
        }
        tokio::select! {
            () = token.cancelled() => return Ok(()),
            () = tokio::time::sleep(WAIT_POLL) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_from_the_base_and_is_capped_at_an_hour() {
        let base = Duration::from_secs(1);
        let delays: Vec<u64> = (1..=4).map(|a| backoff(base, a).as_secs()).collect();
        assert_eq!(delays, [1, 2, 4, 8]);
        assert_eq!(backoff(base, 13), RETRY_CAP);
        assert_eq!(backoff(base, 1000), RETRY_CAP);
        assert_eq!(backoff(base, 0), base);
    }

    #[test]
    fn priorities_round_trip_and_unknown_ones_are_named() {
        for (name, value) in PRIORITIES {
            assert_eq!(parse_priority(name).ok(), Some(*value));
            assert_eq!(priority_name(*value), *name);
        }
        assert_eq!(parse_priority("HIGH").ok(), Some(3));
        let err = parse_priority("urgent").err().map(|e| e.detail);
        assert_eq!(
            err.as_deref(),
            Some("unknown priority `urgent`; expected one of low, normal, high, critical")
        );
    }
}
