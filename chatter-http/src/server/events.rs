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

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::State;
use axum::http::HeaderMap;
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

/// The broadcast channel of workflow events and the latest [`CAPACITY`] of them (for
/// `Last-Event-ID`); the tracker's observer. Cheap to clone.
#[derive(Debug, Clone)]
pub(crate) struct WorkflowEvents(Arc<Channel>);

#[derive(Debug)]
struct Channel {
    sender: broadcast::Sender<Arc<WorkflowEvent>>,
    /// The latest events, oldest first. Published and subscribed to under this lock, so a
    /// subscriber's backlog and its live events neither overlap nor leave a gap.
    recent: Mutex<Recent>,
    /// When this channel (this server process) started, in ms since the epoch.
    started_ms: u64,
}

/// The latest events and whether older ones were dropped.
#[derive(Debug, Default)]
struct Recent {
    events: VecDeque<Arc<WorkflowEvent>>,
    dropped_any: bool,
}

/// Where a new subscriber starts.
struct Subscription {
    receiver: broadcast::Receiver<Arc<WorkflowEvent>>,
    /// Kept events after its `Last-Event-ID`.
    backlog: VecDeque<Arc<WorkflowEvent>>,
    /// Its `Last-Event-ID` is older than the kept events: it may have missed some.
    missed_older: bool,
}

impl WorkflowEvents {
    /// A channel keeping [`CAPACITY`] events for slow and returning clients.
    pub(crate) fn new() -> WorkflowEvents {
        WorkflowEvents(Arc::new(Channel {
            sender: broadcast::Sender::new(CAPACITY),
            recent: Mutex::new(Recent {
                events: VecDeque::with_capacity(CAPACITY),
                dropped_any: false,
            }),
            started_ms: u64::try_from(now_ms()).unwrap_or_default(),
        }))
    }

    fn recent(&self) -> std::sync::MutexGuard<'_, Recent> {
        self.0
            .recent
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Keeps an event and sends it to every connected stream.
    pub(crate) fn publish(&self, event: WorkflowEvent) {
        let event = Arc::new(event);
        let mut recent = self.recent();
        if recent.events.len() == CAPACITY {
            recent.events.pop_front();
            recent.dropped_any = true;
        }
        recent.events.push_back(event.clone());
        let _ = self.0.sender.send(event);
    }

    /// Subscribes from now, or after the event `last_event_id`.
    fn subscribe(&self, last_event_id: Option<&str>) -> Result<Subscription, ApiError> {
        let recent = self.recent();
        let receiver = self.0.sender.subscribe();
        let Some(last) = last_event_id else {
            return Ok(Subscription {
                receiver,
                backlog: VecDeque::new(),
                missed_older: false,
            });
        };
        if let Some(at) = recent.events.iter().position(|e| e.id == last) {
            return Ok(Subscription {
                receiver,
                backlog: recent.events.iter().skip(at + 1).cloned().collect(),
                missed_older: false,
            });
        }
        let unknown = || {
            ApiError::unprocessable(format!(
                "`Last-Event-ID` `{last}` is not the id of an event this stream sent"
            ))
        };
        let sent_at = ulid::Ulid::from_string(last)
            .map_err(|_| unknown())?
            .timestamp_ms();
        let now = u64::try_from(now_ms()).unwrap_or_default();
        if sent_at > now + 1000 {
            return Err(ApiError::unprocessable(format!(
                "`Last-Event-ID` `{last}` is from the future; resume from an id this stream sent"
            )));
        }
        // Older than this process, or than the kept events once some were dropped: it may
        // have been sent and forgotten. Otherwise this stream never sent it.
        let before_start = sent_at < self.0.started_ms;
        let dropped = recent.dropped_any
            && recent
                .events
                .front()
                .is_none_or(|oldest| sent_at <= oldest.ulid_ms());
        if !before_start && !dropped {
            return Err(unknown());
        }
        Ok(Subscription {
            receiver,
            backlog: recent.events.iter().cloned().collect(),
            missed_older: true,
        })
    }
}

impl WorkflowEvent {
    /// The time in the event's ULID.
    fn ulid_ms(&self) -> u64 {
        ulid::Ulid::from_string(&self.id).map_or(0, |u| u.timestamp_ms())
    }
}

impl TrackerObserver for WorkflowEvents {
    fn on_event(&self, execution: &ExecutionRecord, event: &Event) {
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

/// `GET /api/v1/events/stream`.
#[utoipa::path(
    get,
    path = "/api/v1/events/stream",
    operation_id = "events_stream_api_v1_events_stream_get",
    tag = "Events",
    description = "The workflow events of the caller's executions as Server-Sent Events, in the old \
                   platform's frame format: a `: connected` comment, then `id:` (the event's id), \
                   `event:` (`workflow.started`, `workflow.completed`, `workflow.failed`, \
                   `workflow.status`) and `data:` (the event as JSON) per event, and `: keep-alive` \
                   comments while nothing happens. `Last-Event-ID` resumes after that event.",
    params(
        ("Last-Event-ID" = Option<String>, Header, description = "Resume after this event (an `id:` of this stream)"),
    ),
    responses(
        (status = 200, description = "Server-Sent Events stream for real-time updates", body = String, content_type = "text/event-stream"),
        (status = 422, description = "A `Last-Event-ID` that is not an event id of this server (or from the future)", body = super::schemas::Problem, content_type = "application/problem+json"),
    ),
    security(("CustomHTTPBearer" = [])),
)]
async fn stream(
    State(state): State<AppState>,
    p: Principal,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    p.require("workflow:read")?;
    let last = headers
        .get("last-event-id")
        .map(|v| {
            v.to_str()
                .map(|s| s.trim().to_owned())
                .map_err(|_| ApiError::unprocessable("`Last-Event-ID` is not text"))
        })
        .transpose()?;
    let subscription = state.workflow_events().subscribe(last.as_deref())?;
    let follow = Follow {
        receiver: subscription.receiver,
        backlog: subscription.backlog,
        missed_older: subscription.missed_older,
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
    /// Events to send before the live ones (after a `Last-Event-ID`).
    backlog: VecDeque<Arc<WorkflowEvent>>,
    /// Whether to say first that events may have been missed.
    missed_older: bool,
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
        if self.missed_older {
            self.missed_older = false;
            return Some(lagged(None));
        }
        while let Some(event) = self.backlog.pop_front() {
            if self.visible(&event) {
                return Some(event.frame());
            }
        }
        loop {
            let received = tokio::select! {
                () = self.shutdown.cancelled() => return None,
                received = self.receiver.recv() => received,
            };
            match received {
                Ok(event) if self.visible(&event) => return Some(event.frame()),
                Ok(_) => {}
                Err(broadcast::error::RecvError::Lagged(missed)) => {
                    return Some(lagged(Some(missed)));
                }
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    }
}

/// The notice to a client that fell behind (`missed` events, possibly of other users), or
/// whose `Last-Event-ID` is older than the events kept (`None`: an unknown number).
fn lagged(missed: Option<u64>) -> SseEvent {
    let hint = if missed.is_some() {
        "this client fell behind and missed events; read the executions endpoints for the \
         current state"
    } else {
        "`Last-Event-ID` is older than the events this server keeps (or than its start): \
         events may have been missed; read the executions endpoints for the current state"
    };
    // No `id:` line: a reconnect resumes after the last real event.
    let body = json!({
        "type": "workflow.lagged",
        "timestamp": rfc3339_ms(now_ms()),
        "data": {"missed": missed, "hint": hint},
    });
    SseEvent::default()
        .event("workflow.lagged")
        .data(body.to_string())
}
