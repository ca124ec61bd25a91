//! Native execution endpoints under `/api/v1/workflows/executions/{id}`: resume, approve,
//! cancel, steps, fork, and the execution's events as Server-Sent Events.
//!
//! Owner scoping as everywhere: a caller reaches their own executions (admins: all); another
//! user's execution answers 404.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use chatter_core::WorkflowDefinition;
use chatter_core::engine::RunOptions;
use chatter_core::store::{EventRecord, ExecutionRecord, Store};
use chatter_core::tracker::{Decision, GraphSource, StoreGraphSource};
use futures::Stream;
use serde::Deserialize;
use serde_json::{Map, Value, json};
use tokio_util::sync::CancellationToken;

use super::auth::Principal;
use super::problem::{ApiError, ApiJson, ApiPath, ApiQuery};
use super::schemas;
use super::workflows::execution_json;
use super::{AppState, ok};

/// How often a followed execution's new events are looked for.
const POLL: Duration = Duration::from_millis(50);
/// How long `cancel` waits for a cancelled run to be recorded.
const CANCEL_WAIT: Duration = Duration::from_secs(30);
/// Events read per page by the stream.
const PAGE: u32 = 500;

pub(super) fn routes() -> Router<AppState> {
    let e = "/api/v1/workflows/executions/{execution_id}";
    Router::new()
        .route(&format!("{e}/resume"), post(resume))
        .route(&format!("{e}/approve"), post(approve))
        .route(&format!("{e}/cancel"), post(cancel))
        .route(&format!("{e}/steps"), get(steps))
        .route(&format!("{e}/fork"), post(fork))
        .route(&format!("{e}/events"), get(events))
}

/// The caller's execution (any for admins), else 404.
async fn owned(state: &AppState, p: &Principal, id: &str) -> Result<ExecutionRecord, ApiError> {
    state
        .store()
        .get_execution(id)
        .await?
        .filter(|e| p.is_admin() || e.owner_id == p.id())
        .ok_or_else(|| ApiError::not_found(format!("no execution `{id}`")))
}

async fn graph_of(
    state: &AppState,
    record: &ExecutionRecord,
) -> Result<WorkflowDefinition, ApiError> {
    Ok(StoreGraphSource::new(state.store().clone())
        .definition_for(record)
        .await?)
}

/// The stored execution after a tracked run, or the run's storage failure.
async fn reread(
    state: &AppState,
    run: chatter_core::tracker::TrackedRun,
) -> Result<Response, ApiError> {
    let id = run.result.execution_id.clone();
    if let Some(error) = run.store_error {
        return Err(ApiError::from(error));
    }
    let record = state
        .store()
        .get_execution(&id)
        .await?
        .ok_or_else(|| ApiError::internal(&format!("execution {id} was not recorded")))?;
    Ok(ok(execution_json(&record)))
}

/// Resumes (or approves, with a decision) an execution in this server.
async fn continue_execution(
    state: &AppState,
    p: &Principal,
    id: &str,
    decision: Option<Decision>,
) -> Result<Response, ApiError> {
    p.require("workflow:execute")?;
    let record = owned(state, p, id).await?;
    let def = graph_of(state, &record).await?;
    let token = CancellationToken::new();
    let mut options = RunOptions::default().owner(record.owner_id.clone());
    // A request to be refused (no decision where one is awaited, one not allowed, an ended
    // execution) is refused before it registers the execution: registered, even briefly, it
    // would turn away a valid approval racing it.
    state
        .tracker()
        .check_resume(state.engine(), &def, id, decision.clone(), &options)
        .await?;
    // Of two requests racing to resume it, one registers it and runs it; the other is
    // answered 409 here (and the tracker refuses a second resume in this process too).
    let _live = state.register_live(id, token.clone())?;
    options.cancel = Some(token);
    let run = state
        .tracker()
        .resume(state.engine(), &def, id, decision, options)
        .await?;
    state
        .audit(
            Some(p.id()),
            "execution.resume",
            ("workflow_execution", Some(id)),
            "success",
            json!({}),
        )
        .await;
    reread(state, run).await
}

#[utoipa::path(
    post,
    path = "/api/v1/workflows/executions/{execution_id}/resume",
    operation_id = "resume_execution",
    tag = "Executions",
    params(
        ("execution_id" = String, Path, description = "Execution ID"),
    ),
    responses(
        (status = 200, description = "The execution", body = schemas::WorkflowExecutionResponse),
        (status = 404, description = "No such execution of the caller", body = schemas::Problem, content_type = "application/problem+json"),
        (status = 409, description = "Already running in this server, or in another one under a live lease", body = schemas::Problem, content_type = "application/problem+json"),
        (status = 422, description = "The execution has ended", body = schemas::Problem, content_type = "application/problem+json"),
    ),
    security(("CustomHTTPBearer" = [])),
)]
async fn resume(
    State(state): State<AppState>,
    p: Principal,
    ApiPath(id): ApiPath<String>,
) -> Result<Response, ApiError> {
    continue_execution(&state, &p, &id, None).await
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ApproveBody {
    decision: String,
    #[serde(default)]
    input: Value,
    #[serde(default)]
    node_id: Option<String>,
}

#[utoipa::path(
    post,
    path = "/api/v1/workflows/executions/{execution_id}/approve",
    operation_id = "approve_execution",
    tag = "Executions",
    params(
        ("execution_id" = String, Path, description = "Execution ID"),
    ),
    request_body = schemas::ApprovalRequest,
    responses(
        (status = 200, description = "The execution once it ends or pauses again", body = schemas::WorkflowExecutionResponse),
        (status = 404, description = "No such execution of the caller", body = schemas::Problem, content_type = "application/problem+json"),
        (status = 409, description = "Already running in this server (another approval or resume went ahead), or in another one under a live lease", body = schemas::Problem, content_type = "application/problem+json"),
        (status = 422, description = "Not waiting, or a decision or input the approval does not allow", body = schemas::Problem, content_type = "application/problem+json"),
    ),
    security(("CustomHTTPBearer" = [])),
)]
async fn approve(
    State(state): State<AppState>,
    p: Principal,
    ApiPath(id): ApiPath<String>,
    ApiJson(body): ApiJson<ApproveBody>,
) -> Result<Response, ApiError> {
    let mut decision = Decision::new(body.decision).input(body.input);
    decision.node_id = body.node_id;
    continue_execution(&state, &p, &id, Some(decision)).await
}

#[utoipa::path(
    post,
    path = "/api/v1/workflows/executions/{execution_id}/cancel",
    operation_id = "cancel_execution",
    tag = "Executions",
    params(
        ("execution_id" = String, Path, description = "Execution ID"),
    ),
    responses(
        (status = 200, description = "The execution, recorded `cancelled`", body = schemas::WorkflowExecutionResponse),
        (status = 404, description = "No such execution of the caller", body = schemas::Problem, content_type = "application/problem+json"),
        (status = 409, description = "Already ended, or running in another server", body = schemas::Problem, content_type = "application/problem+json"),
    ),
    security(("CustomHTTPBearer" = [])),
)]
async fn cancel(
    State(state): State<AppState>,
    p: Principal,
    ApiPath(id): ApiPath<String>,
) -> Result<Response, ApiError> {
    p.require("workflow:execute")?;
    let record = owned(&state, &p, &id).await?;
    if record.status.is_terminal() {
        return Err(ApiError::conflict(format!(
            "execution `{id}` has already ended ({})",
            record.status
        )));
    }
    let now = state.engine().services().clock.now_ms();
    if let Some(token) = state.live_token(&id) {
        // Running here: the engine stops its running nodes and records `cancelled`. The answer
        // waits for that (at most `CANCEL_WAIT`; then it shows the execution as it is).
        token.cancel();
        let give_up = tokio::time::Instant::now() + CANCEL_WAIT;
        loop {
            let current = state.store().get_execution(&id).await?;
            if current.as_ref().is_none_or(|r| r.status.is_terminal())
                || tokio::time::Instant::now() >= give_up
            {
                break;
            }
            tokio::time::sleep(POLL).await;
        }
    } else {
        // Waiting, pending, or abandoned by a dead worker: the tracker ends it (and refuses
        // when another server holds its lease).
        state
            .tracker()
            .cancel(&id, None, "cancelled through the API", now)
            .await?;
        // Not driven by this server's tracker: the global stream hears of it here.
        state.publish_workflow_event(
            super::events::WorkflowEventType::Status,
            &record,
            "cancelled",
            Map::from_iter([("reason".to_owned(), json!("cancelled through the API"))]),
        );
    }
    state
        .audit(
            Some(p.id()),
            "execution.cancel",
            ("workflow_execution", Some(&id)),
            "success",
            json!({}),
        )
        .await;
    let record = owned(&state, &p, &id).await?;
    Ok(ok(execution_json(&record)))
}

#[utoipa::path(
    get,
    path = "/api/v1/workflows/executions/{execution_id}/steps",
    operation_id = "list_execution_steps",
    tag = "Executions",
    params(
        ("execution_id" = String, Path, description = "Execution ID"),
    ),
    responses(
        (status = 200, description = "Successful Response", body = schemas::ExecutionStepsResponse),
        (status = 404, description = "No such execution of the caller", body = schemas::Problem, content_type = "application/problem+json"),
    ),
    security(("CustomHTTPBearer" = [])),
)]
async fn steps(
    State(state): State<AppState>,
    p: Principal,
    ApiPath(id): ApiPath<String>,
) -> Result<Response, ApiError> {
    p.require("workflow:read")?;
    owned(&state, &p, &id).await?;
    let steps = state.tracker().steps(&id).await?;
    Ok(ok(json!({"execution_id": id, "steps": steps})))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ForkBody {
    step: i64,
    #[serde(default)]
    variables: Option<Map<String, Value>>,
}

#[utoipa::path(
    post,
    path = "/api/v1/workflows/executions/{execution_id}/fork",
    operation_id = "fork_execution",
    tag = "Executions",
    params(
        ("execution_id" = String, Path, description = "Execution ID"),
    ),
    request_body = schemas::ForkRequest,
    responses(
        (status = 200, description = "The new execution", body = schemas::WorkflowExecutionResponse),
        (status = 404, description = "No such execution of the caller", body = schemas::Problem, content_type = "application/problem+json"),
        (status = 422, description = "A step out of range", body = schemas::Problem, content_type = "application/problem+json"),
    ),
    security(("CustomHTTPBearer" = [])),
)]
async fn fork(
    State(state): State<AppState>,
    p: Principal,
    ApiPath(id): ApiPath<String>,
    ApiJson(body): ApiJson<ForkBody>,
) -> Result<Response, ApiError> {
    p.require("workflow:execute")?;
    let record = owned(&state, &p, &id).await?;
    let def = graph_of(&state, &record).await?;
    // The new execution is registered live, so `cancel` reaches it while it runs.
    let new_id = ulid::Ulid::new().to_string();
    let token = CancellationToken::new();
    let _live = state.register_live(&new_id, token.clone())?;
    let mut options = RunOptions::default()
        .owner(record.owner_id.clone())
        .execution_id(&new_id);
    options.cancel = Some(token);
    let run = state
        .tracker()
        .fork(
            state.engine(),
            &def,
            &id,
            body.step,
            body.variables,
            options,
        )
        .await?;
    let new_id = run.result.execution_id.clone();
    state
        .audit(
            Some(p.id()),
            "execution.fork",
            ("workflow_execution", Some(&new_id)),
            "success",
            json!({"from": id, "step": body.step}),
        )
        .await;
    reread(&state, run).await
}

#[derive(Debug, Deserialize)]
struct EventsQuery {
    after: Option<String>,
}

/// A sequence number from `Last-Event-ID` (or `?after=`).
fn parse_after(text: &str) -> Result<i64, ApiError> {
    text.trim()
        .parse::<i64>()
        .ok()
        .filter(|n| *n >= 0)
        .ok_or_else(|| {
            ApiError::unprocessable(format!(
                "`Last-Event-ID`/`after` must be an event sequence number, not `{text}`"
            ))
        })
}

#[utoipa::path(
    get,
    path = "/api/v1/workflows/executions/{execution_id}/events",
    operation_id = "stream_execution_events",
    tag = "Executions",
    params(
        ("execution_id" = String, Path, description = "Execution ID"),
        ("Last-Event-ID" = Option<String>, Header, description = "Resume after this event (its sequence number)"),
        ("after" = Option<String>, Query, description = "As `Last-Event-ID`"),
    ),
    responses(
        (status = 200, description = "The events as Server-Sent Events: `id:` the sequence number, `event:` the type, `data:` the event as JSON; `: keep-alive` comments while nothing happens", body = String, content_type = "text/event-stream"),
        (status = 404, description = "No such execution of the caller", body = schemas::Problem, content_type = "application/problem+json"),
        (status = 422, description = "A `Last-Event-ID` that is not a number or names no event of this execution", body = schemas::Problem, content_type = "application/problem+json"),
    ),
    security(("CustomHTTPBearer" = [])),
)]
async fn events(
    State(state): State<AppState>,
    p: Principal,
    ApiPath(id): ApiPath<String>,
    ApiQuery(query): ApiQuery<EventsQuery>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    p.require("workflow:read")?;
    owned(&state, &p, &id).await?;
    let header = headers
        .get("last-event-id")
        .map(|v| {
            v.to_str()
                .map(str::to_owned)
                .map_err(|_| ApiError::unprocessable("`Last-Event-ID` is not text"))
        })
        .transpose()?;
    let after = match header.or(query.after) {
        Some(text) => parse_after(&text)?,
        None => 0,
    };
    // Sequence numbers are contiguous from 1: an id with no event is from the future (or of
    // another execution).
    if after > 0 {
        let seen = state.store().list_events(&id, after - 1, 1).await?;
        if seen.first().is_none_or(|e| e.seq != after) {
            return Err(ApiError::unprocessable(format!(
                "execution `{id}` has no event {after}; resume from an id this stream sent"
            )));
        }
    }
    let follow = Follow {
        store: state.store().clone(),
        id,
        after,
        buffer: VecDeque::new(),
        done: false,
        shutdown: state.shutdown_token().clone(),
    };
    let keep_alive = KeepAlive::new()
        .interval(state.config().sse_heartbeat)
        .text("keep-alive");
    Ok(Sse::new(follow.into_stream())
        .keep_alive(keep_alive)
        .into_response())
}

/// The state of one events stream: what was sent (`after`), what is read but not yet sent.
struct Follow {
    store: Arc<dyn Store>,
    id: String,
    after: i64,
    buffer: VecDeque<EventRecord>,
    done: bool,
    shutdown: CancellationToken,
}

impl Follow {
    fn into_stream(self) -> impl Stream<Item = Result<SseEvent, Infallible>> {
        futures::stream::unfold(self, |mut f| async move {
            let event = f.next().await?;
            Some((Ok(event), f))
        })
    }

    /// The next frame, or `None` once the execution ended and every event was sent.
    async fn next(&mut self) -> Option<SseEvent> {
        loop {
            if let Some(record) = self.buffer.pop_front() {
                self.after = record.seq;
                return Some(frame(&record));
            }
            if self.done {
                return None;
            }
            // The status is read before the events: when it was terminal, every event
            // (the final ones are written with it) is in the read that follows.
            let ended = match self.store.get_execution(&self.id).await {
                Ok(record) => record.is_none_or(|r| r.status.is_terminal()),
                Err(e) => return Some(self.fail(&e)),
            };
            match self.store.list_events(&self.id, self.after, PAGE).await {
                Ok(rows) if !rows.is_empty() => self.buffer.extend(rows),
                Ok(_) if ended => self.done = true,
                Ok(_) => {
                    tokio::select! {
                        () = self.shutdown.cancelled() => self.done = true,
                        () = tokio::time::sleep(POLL) => {}
                    }
                }
                Err(e) => return Some(self.fail(&e)),
            }
        }
    }

    fn fail(&mut self, error: &dyn std::fmt::Display) -> SseEvent {
        self.done = true;
        SseEvent::default()
            .event("error")
            .data(json!({"detail": format!("reading the events failed: {error}")}).to_string())
    }
}

/// `id:` = sequence number, `event:` = type, `data:` = the event as JSON.
fn frame(record: &EventRecord) -> SseEvent {
    let data = json!({
        "seq": record.seq,
        "type": record.event_type,
        "ts": record.ts,
        "payload": record.payload,
    });
    SseEvent::default()
        .id(record.seq.to_string())
        .event(record.event_type.clone())
        .data(data.to_string())
}
