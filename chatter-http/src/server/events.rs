//! The global events stream, `GET /api/v1/events/stream`: the start, end and status changes of
//! every execution the caller may see (their own; admins: all), as Server-Sent Events.
//!
//! Every execution the server's tracker drives (runs, chat, resumes, approvals, forks, the
//! resumer, queued jobs) reaches the stream through one place: the tracker's observer
//! ([`WorkflowEvents`]), which turns the engine's lifecycle events into workflow events on a
//! broadcast channel. What changes an execution outside the tracker (e.g. cancelling one that
//! is not running here) publishes with [`AppState::publish_workflow_event`].
//!
//! Frame format (one per event):
//!
//! ```text
//! id: 01J...            (the event's own ULID)
//! event: workflow.completed
//! data: {"type":"workflow.completed","id":"01J...","timestamp":"2026-...Z",
//!        "data":{"execution_id":"...","workflow_id":"...","status":"completed",...}}
//! ```
//!
//! Types: `workflow.started`, `workflow.completed`, `workflow.failed`, `workflow.status`
//! (`waiting` at an approval, `running` again when resumed, `cancelled`), and
//! `workflow.lagged` when this client fell behind and missed events (the stream goes on; the
//! executions endpoints have the full record). Heartbeats are `: keep-alive` comments every
//! `ServerConfig::sse_heartbeat`. A slow client never slows executions down: the channel keeps
//! the latest [`CAPACITY`] events and a lagging client is told what it missed.

use std::convert::Infallible;
use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use chatter_core::store::ExecutionRecord;
use chatter_core::time::rfc3339_ms;
use chatter_core::tracker::TrackerObserver;
use chatter_core::{Event, EventKind};
use futures::Stream;
use serde_json::{Map, Value, json};
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

use super::AppState;
use super::auth::{Principal, now_ms};
use super::problem::ApiError;

/// Events kept for slow clients before they lag.
pub(crate) const CAPACITY: usize = 1024;

pub(super) fn routes() -> Router<AppState> {
    Router::new().route("/api/v1/events/stream", get(stream))
}

/// The kinds of workflow events.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum WorkflowEventType {
    /// `workflow.started`.
    Started,
    /// `workflow.completed`.
    Completed,
    /// `workflow.failed`.
    Failed,
    /// `workflow.status` (any other change of status).
    Status,
}

impl WorkflowEventType {
    /// The `type` of the frame.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            WorkflowEventType::Started => "workflow.started",
            WorkflowEventType::Completed => "workflow.completed",
            WorkflowEventType::Failed => "workflow.failed",
            WorkflowEventType::Status => "workflow.status",
        }
    }
}

/// One event of the global stream.
#[derive(Debug, Clone)]
pub(crate) struct WorkflowEvent {
    /// Its own id (a ULID).
    id: String,
    event_type: WorkflowEventType,
    /// Who may see it (besides admins).
    owner_id: String,
    ts_ms: i64,
    data: Value,
}

impl WorkflowEvent {
    /// An event about `execution` with its `status`; `extra` is added to the data.
    pub(crate) fn new(
        event_type: WorkflowEventType,
        execution: &ExecutionRecord,
        status: &str,
        extra: Map<String, Value>,
    ) -> WorkflowEvent {
        let mut data = Map::new();
        data.insert("execution_id".into(), json!(execution.id));
        data.insert(
            "workflow_id".into(),
            json!(super::workflows::workflow_id(execution)),
        );
        data.insert("definition_id".into(), json!(execution.definition_id));
        data.insert(
            "template_id".into(),
            json!(execution.template_id.clone().or_else(|| {
                execution
                    .params
                    .get("template_id")
                    .cloned()
                    .and_then(|v| v.as_str().map(str::to_owned))
            })),
        );
        data.insert("kind".into(), json!(execution.kind.as_str()));
        data.insert("owner_id".into(), json!(execution.owner_id));
        data.insert("status".into(), json!(status));
        data.extend(extra);
        WorkflowEvent {
            id: ulid::Ulid::new().to_string(),
            event_type,
            owner_id: execution.owner_id.clone(),
            ts_ms: now_ms(),
            data: Value::Object(data),
        }
    }

    /// The SSE frame.
    fn frame(&self) -> SseEvent {
        let body = json!({
            "type": self.event_type.as_str(),
            "id": self.id,
            "timestamp": rfc3339_ms(self.ts_ms),
            "data": self.data,
        });
        SseEvent::default()
            .id(self.id.clone())
            .event(self.event_type.as_str())
            .data(body.to_string())
    }
}

/// The broadcast channel of workflow events; the tracker's observer.
#[derive(Debug, Clone)]
pub(crate) struct WorkflowEvents {
    sender: broadcast::Sender<Arc<WorkflowEvent>>,
}

impl WorkflowEvents {
    /// A channel keeping [`CAPACITY`] events for slow clients.
    pub(crate) fn new() -> WorkflowEvents {
        WorkflowEvents {
            sender: broadcast::Sender::new(CAPACITY),
        }
    }

    /// Sends an event to every connected stream (none connected: dropped).
    pub(crate) fn publish(&self, event: WorkflowEvent) {
        let _ = self.sender.send(Arc::new(event));
    }

    fn subscribe(&self) -> broadcast::Receiver<Arc<WorkflowEvent>> {
        self.sender.subscribe()
    }

    fn listened(&self) -> bool {
        self.sender.receiver_count() > 0
    }
}

impl TrackerObserver for WorkflowEvents {
    fn on_event(&self, execution: &ExecutionRecord, event: &Event) {
        if !self.listened() {
            return;
        }
        let mut extra = Map::new();
        let (event_type, status) = match &event.kind {
            EventKind::ExecutionStarted { .. } => (WorkflowEventType::Started, "running"),
            EventKind::ExecutionCompleted { response, usage } => {
                extra.insert("response".into(), json!(response));
                extra.insert("usage".into(), json!(usage));
                (WorkflowEventType::Completed, "completed")
            }
            EventKind::ExecutionFailed { error, class } => {
                extra.insert("error".into(), json!(error));
                extra.insert("error_class".into(), json!(class));
                (WorkflowEventType::Failed, "failed")
            }
            EventKind::ExecutionCancelled { reason } => {
                extra.insert("reason".into(), json!(reason));
                (WorkflowEventType::Status, "cancelled")
            }
            EventKind::Interrupted {
                node_id, question, ..
            } => {
                extra.insert("node_id".into(), json!(node_id));
                extra.insert("question".into(), json!(question));
                (WorkflowEventType::Status, "waiting")
            }
            _ => return,
        };
        extra.insert("seq".into(), json!(event.seq));
        self.publish(WorkflowEvent::new(event_type, execution, status, extra));
    }

    fn on_resumed(&self, execution: &ExecutionRecord) {
        if self.listened() {
            let mut extra = Map::new();
            extra.insert("resumed".into(), json!(true));
            self.publish(WorkflowEvent::new(
                WorkflowEventType::Status,
                execution,
                "running",
                extra,
            ));
        }
    }
}

async fn stream(State(state): State<AppState>, p: Principal) -> Result<Response, ApiError> {
    p.require("workflow:read")?;
    let follow = Follow {
        receiver: state.workflow_events().subscribe(),
        principal: p,
        shutdown: state.shutdown_token().clone(),
        greeted: false,
    };
    let keep_alive = KeepAlive::new()
        .interval(state.config().sse_heartbeat)
        .text("keep-alive");
    Ok(Sse::new(follow.into_stream())
        .keep_alive(keep_alive)
        .into_response())
}

/// One client's stream. Dropped (with its receiver) when the client disconnects; ends at
/// server shutdown. No task is spawned for it.
struct Follow {
    receiver: broadcast::Receiver<Arc<WorkflowEvent>>,
    principal: Principal,
    shutdown: CancellationToken,
    greeted: bool,
}

impl Follow {
    fn into_stream(self) -> impl Stream<Item = Result<SseEvent, Infallible>> {
        futures::stream::unfold(self, |mut f| async move {
            let event = f.next().await?;
            Some((Ok(event), f))
        })
    }

    fn visible(&self, event: &WorkflowEvent) -> bool {
        self.principal.is_admin() || event.owner_id == self.principal.id()
    }

    async fn next(&mut self) -> Option<SseEvent> {
        if !self.greeted {
            // Sent at once, so a client knows it is subscribed before anything happens.
            self.greeted = true;
            return Some(SseEvent::default().comment("connected"));
        }
        loop {
            let received = tokio::select! {
                () = self.shutdown.cancelled() => return None,
                received = self.receiver.recv() => received,
            };
            match received {
                Ok(event) if self.visible(&event) => return Some(event.frame()),
                Ok(_) => {}
                Err(broadcast::error::RecvError::Lagged(missed)) => return Some(lagged(missed)),
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    }
}

/// The notice to a client that fell behind.
fn lagged(missed: u64) -> SseEvent {
    let id = ulid::Ulid::new().to_string();
    let body = json!({
        "type": "workflow.lagged",
        "id": id,
        "timestamp": rfc3339_ms(now_ms()),
        "data": {
            "missed": missed,
            "hint": "this client fell behind and missed events (possibly of other users); \
                     read the executions endpoints for the current state",
        },
    });
    SseEvent::default()
        .id(id)
        .event("workflow.lagged")
        .data(body.to_string())
}
