//! Chat: `POST /api/v1/workflows/execute/chat` and `/execute/chat/streaming`.
//!
//! Both persist the same things: the user message before the run, then the execution (through
//! the tracker), the assistant message and the conversation's aggregates (`total_tokens`,
//! `total_cost` in its metadata). The streaming variant runs the workflow in its own task and
//! forwards events to the client through a channel, so a client that disconnects mid-stream
//! changes nothing about what is stored: the run finishes and is persisted all the same.
//!
//! Stream format (the old platform's): `data: {json}\n\n` chunks of type `start`, `token`,
//! `complete` (`total_tokens`, `input_tokens`, `output_tokens`, `model_used`,
//! `response_time_ms`, ...), `done` or `error`, then `data: [DONE]`.

use std::convert::Infallible;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use chatter_core::engine::{ExecutionResult, RunOptions};
use chatter_core::store::{
    ConversationRecord, ConversationUpdate, ExecutionKind, MessageRecord, MessageRole,
    NewConversation, NewMessage, Page,
};
use chatter_core::time::rfc3339_ms;
use chatter_core::tracker::ExecutionMeta;
use chatter_core::{EventKind, Message, WorkflowDefinition};
use serde::Deserialize;
use serde_json::{Map, Value, json};
use tokio::sync::mpsc;

use super::auth::{Principal, now_ms};
use super::problem::{ApiError, ApiJson};
use super::schemas;
use super::workflows::{
    readable_definition, readable_template, stored_definition, template_definition,
};
use super::{AppState, ok};

pub(super) fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/v1/workflows/execute/chat", post(chat))
        .route(
            "/api/v1/workflows/execute/chat/streaming",
            post(chat_streaming),
        )
}

/// The template a chat runs when it names neither a definition nor a template.
const DEFAULT_CHAT_TEMPLATE: &str = "universal_chat";

/// Most history messages given to the model.
const HISTORY_LIMIT: u32 = 200;

#[derive(Debug, Deserialize)]
#[allow(dead_code)]
struct ChatRequest {
    message: String,
    conversation_id: Option<String>,
    profile_id: Option<String>,
    workflow_config: Option<Map<String, Value>>,
    workflow_definition_id: Option<String>,
    workflow_template_name: Option<String>,
    #[serde(default)]
    enable_retrieval: bool,
    #[serde(default)]
    enable_tools: bool,
    #[serde(default = "yes")]
    enable_memory: bool,
    #[serde(default)]
    enable_web_search: bool,
    provider: Option<String>,
    model: Option<String>,
    temperature: Option<f64>,
    max_tokens: Option<i64>,
    context_limit: Option<i64>,
    document_ids: Option<Vec<String>>,
    prompt_id: Option<String>,
    system_prompt_override: Option<String>,
    #[serde(default)]
    enable_tracing: bool,
}

fn yes() -> bool {
    true
}

/// Everything prepared before the run (the user message is already stored).
struct Prepared {
    conversation: ConversationRecord,
    def: WorkflowDefinition,
    input: Value,
    history: Vec<Message>,
    meta: ExecutionMeta,
    model_used: String,
    provider_used: String,
}

fn check(request: &ChatRequest) -> Result<(), ApiError> {
    if request.message.trim().is_empty() {
        return Err(ApiError::unprocessable("`message` must not be empty"));
    }
    if request.message.chars().count() > 100_000 {
        return Err(ApiError::unprocessable(
            "`message` is longer than 100000 characters",
        ));
    }
    if request
        .temperature
        .is_some_and(|t| !(0.0..=2.0).contains(&t))
    {
        return Err(ApiError::unprocessable(
            "`temperature` must be within 0..=2",
        ));
    }
    if request.max_tokens.is_some_and(|t| !(1..=8192).contains(&t)) {
        return Err(ApiError::unprocessable(
            "`max_tokens` must be within 1..=8192",
        ));
    }
    if request.context_limit.is_some_and(|t| t < 1) {
        return Err(ApiError::unprocessable(
            "`context_limit` must be at least 1",
        ));
    }
    Ok(())
}

async fn prepare(
    state: &AppState,
    p: &Principal,
    request: &ChatRequest,
) -> Result<Prepared, ApiError> {
    p.require("chat:execute")?;
    check(request)?;
    let store = state.store();
    if let Some(provider) = &request.provider
        && !state.model_names().iter().any(|m| m == provider)
    {
        return Err(ApiError::unprocessable(format!(
            "unknown provider `{provider}` (this server has: {})",
            state.model_names().join(", ")
        )));
    }
    let provider_used = request
        .provider
        .clone()
        .unwrap_or_else(|| super::default_model_name(state));

    // The workflow first, so a bad one stores nothing.
    let (def, meta) = if let Some(id) = &request.workflow_definition_id {
        let record = readable_definition(state, p, id).await?;
        let def = stored_definition(&record)?;
        let meta = ExecutionMeta::new(p.id(), ExecutionKind::Chat)
            .definition(&record.id)
            .params(json!({"definition_id": record.id}));
        (def, meta)
    } else {
        let name = request
            .workflow_template_name
            .as_deref()
            .unwrap_or(DEFAULT_CHAT_TEMPLATE);
        let template = readable_template(state, p, name).await?;
        let mut params = Map::new();
        params.insert("provider".into(), json!(provider_used));
        if let Some(model) = &request.model {
            params.insert("model".into(), json!(model));
        }
        if let Some(t) = request.temperature {
            params.insert("temperature".into(), json!(t));
        }
        if let Some(t) = request.max_tokens {
            params.insert("max_tokens".into(), json!(t));
        }
        if let Some(prompt) = &request.system_prompt_override {
            params.insert("system_prompt".into(), json!(prompt));
        }
        params.insert("enable_memory".into(), json!(request.enable_memory));
        params.insert("enable_tools".into(), json!(request.enable_tools));
        params.insert("enable_retrieval".into(), json!(request.enable_retrieval));
        let (def, params) = template_definition(state, &template.spec, Value::Object(params))?;
        let mut recorded = params;
        recorded.insert("template_id".into(), json!(template.id));
        let meta = ExecutionMeta::new(p.id(), ExecutionKind::Chat).params(Value::Object(recorded));
        (def, meta)
    };

    let conversation = match &request.conversation_id {
        Some(id) => store
            .get_conversation(id)
            .await?
            .filter(|c| c.user_id == p.id())
            .ok_or_else(|| ApiError::not_found(format!("no conversation `{id}`")))?,
        None => {
            let title: String = request.message.chars().take(60).collect();
            store
                .create_conversation(NewConversation {
                    id: None,
                    user_id: p.id().to_owned(),
                    title: Some(title),
                    metadata: json!({"total_tokens": 0, "total_cost": 0.0}),
                })
                .await?
        }
    };
    let history = store
        .list_messages(&conversation.id, Page::new(HISTORY_LIMIT, 0))
        .await?
        .into_iter()
        .filter_map(|m| match m.role {
            MessageRole::User => Some(Message::user(m.content)),
            MessageRole::Assistant => Some(Message::assistant(m.content)),
            MessageRole::System => Some(Message::system(m.content)),
            _ => None,
        })
        .collect();
    store
        .add_message(NewMessage::new(
            &conversation.id,
            MessageRole::User,
            &request.message,
        ))
        .await?;
    let meta = meta.conversation(&conversation.id);
    Ok(Prepared {
        conversation,
        def,
        input: json!({"message": request.message}),
        history,
        meta,
        model_used: request
            .model
            .clone()
            .unwrap_or_else(|| provider_used.clone()),
        provider_used,
    })
}

/// What the run left: the assistant message and the updated conversation.
struct Outcome {
    message: MessageRecord,
    conversation: ConversationRecord,
    result: ExecutionResult,
    response_time_ms: i64,
}

/// Runs the prepared chat, calling `observe` for every event, and persists the outcome.
async fn run_and_persist(
    state: &AppState,
    prepared: Prepared,
    mut observe: impl FnMut(&chatter_core::Event) + Send,
) -> Result<Outcome, ApiError> {
    let started = now_ms();
    let owner = prepared.meta.owner_id.clone();
    // Registered live, so `…/executions/{id}/cancel` stops it like any other run here.
    let id = ulid::Ulid::new().to_string();
    let token = tokio_util::sync::CancellationToken::new();
    let _live = state.register_live(&id, token.clone())?;
    let mut options = RunOptions::default()
        .owner(owner)
        .history(prepared.history)
        .execution_id(&id);
    options.cancel = Some(token);
    let run = state
        .tracker()
        .run_observed(
            state.engine(),
            &prepared.def,
            prepared.input,
            options,
            prepared.meta,
            |event| observe(event),
        )
        .await?;
    if let Some(error) = &run.store_error {
        eprintln!(
            "chatter serve: execution {} was not fully recorded: {error}",
            run.result.execution_id
        );
    }
    let result = run.result;
    let response_time_ms = now_ms() - started;
    let store = state.store();
    let usage = &result.usage;
    let content = result
        .response
        .clone()
        .or_else(|| result.error.as_ref().map(|e| e.message.clone()))
        .unwrap_or_default();
    let finish_reason = if result.error.is_some() {
        "error"
    } else {
        "stop"
    };
    let mut new = NewMessage::new(&prepared.conversation.id, MessageRole::Assistant, content);
    new.token_count = i64::try_from(usage.completion_tokens).ok();
    new.execution_id = Some(result.execution_id.clone());
    new.metadata = json!({
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.completion_tokens,
        "total_tokens": usage.total_tokens,
        "cost": usage.cost,
        "model_used": prepared.model_used,
        "provider_used": prepared.provider_used,
        "response_time_ms": response_time_ms,
        "finish_reason": finish_reason,
    });
    let message = store.add_message(new).await?;
    // Aggregates: re-read, add, write (the latest message count comes with the record).
    let current = store
        .get_conversation(&prepared.conversation.id)
        .await?
        .unwrap_or(prepared.conversation);
    let mut metadata = current.metadata.as_object().cloned().unwrap_or_default();
    let tokens = metadata
        .get("total_tokens")
        .and_then(Value::as_i64)
        .unwrap_or(0)
        + i64::try_from(usage.total_tokens).unwrap_or(0);
    let cost = metadata
        .get("total_cost")
        .and_then(Value::as_f64)
        .unwrap_or(0.0)
        + usage.cost;
    metadata.insert("total_tokens".into(), json!(tokens));
    metadata.insert("total_cost".into(), json!(cost));
    metadata.insert("llm_provider".into(), json!(prepared.provider_used));
    metadata.insert("llm_model".into(), json!(prepared.model_used));
    metadata.insert("last_message_at".into(), json!(message.created_at));
    let conversation = store
        .update_conversation(
            &current.id,
            ConversationUpdate {
                metadata: Some(Value::Object(metadata)),
                ..ConversationUpdate::default()
            },
        )
        .await?;
    Ok(Outcome {
        message,
        conversation,
        result,
        response_time_ms,
    })
}

fn message_json(m: &MessageRecord) -> Value {
    let meta = &m.metadata;
    json!({
        "role": m.role.as_str(),
        "content": m.content,
        "id": m.id,
        "conversation_id": m.conversation_id,
        "sequence_number": m.seq,
        "prompt_tokens": meta.get("prompt_tokens"),
        "completion_tokens": meta.get("completion_tokens"),
        "total_tokens": meta.get("total_tokens"),
        "model_used": meta.get("model_used"),
        "provider_used": meta.get("provider_used"),
        "response_time_ms": meta.get("response_time_ms"),
        "cost": meta.get("cost"),
        "finish_reason": meta.get("finish_reason"),
        "rating": null,
        "rating_count": 0,
        "created_at": rfc3339_ms(m.created_at),
        "execution_id": m.execution_id,
    })
}

fn conversation_json(c: &ConversationRecord) -> Value {
    let meta = &c.metadata;
    json!({
        "title": c.title.clone().unwrap_or_default(),
        "description": null,
        "id": c.id,
        "user_id": c.user_id,
        "profile_id": null,
        "status": c.status.as_str(),
        "llm_provider": meta.get("llm_provider"),
        "llm_model": meta.get("llm_model"),
        "temperature": null,
        "max_tokens": null,
        "enable_retrieval": false,
        "message_count": c.message_count,
        "total_tokens": meta.get("total_tokens").and_then(Value::as_i64).unwrap_or(0),
        "total_cost": meta.get("total_cost").and_then(Value::as_f64).unwrap_or(0.0),
        "system_prompt": null,
        "context_window": 4096,
        "memory_enabled": true,
        "memory_strategy": null,
        "retrieval_limit": 5,
        "retrieval_score_threshold": 0.5,
        "tags": null,
        "extra_metadata": null,
        "workflow_config": null,
        "created_at": rfc3339_ms(c.created_at),
        "updated_at": rfc3339_ms(c.updated_at),
        "last_message_at": meta.get("last_message_at").and_then(Value::as_i64).map(rfc3339_ms),
    })
}

#[utoipa::path(
    post,
    path = "/api/v1/workflows/execute/chat",
    operation_id = "execute_chat_workflow_api_v1_workflows_execute_chat_post",
    tag = "Workflows",
    request_body = schemas::ChatRequest,
    responses(
        (status = 200, description = "Successful Response", body = schemas::ChatResponse),
        (status = 422, description = "Validation Error", body = schemas::Problem, content_type = "application/problem+json"),
    ),
    security(("CustomHTTPBearer" = [])),
)]
async fn chat(
    State(state): State<AppState>,
    p: Principal,
    ApiJson(request): ApiJson<ChatRequest>,
) -> Result<Response, ApiError> {
    let prepared = prepare(&state, &p, &request).await?;
    let outcome = run_and_persist(&state, prepared, |_| {}).await?;
    if let Some(error) = &outcome.result.error {
        return Err(
            ApiError::new(StatusCode::BAD_GATEWAY, error.message.clone())
                .with("conversation_id", json!(outcome.conversation.id))
                .with("execution_id", json!(outcome.result.execution_id)),
        );
    }
    Ok(ok(json!({
        "conversation_id": outcome.conversation.id,
        "message": message_json(&outcome.message),
        "conversation": conversation_json(&outcome.conversation),
    })))
}

fn frame(value: &Value) -> Bytes {
    Bytes::from(format!("data: {value}\n\n"))
}

#[utoipa::path(
    post,
    path = "/api/v1/workflows/execute/chat/streaming",
    operation_id = "execute_chat_workflow_streaming_api_v1_workflows_execute_chat_streaming_post",
    tag = "Workflows",
    request_body = schemas::ChatRequest,
    responses(
        (status = 200, description = "Streaming chat response: `data: {json}` chunks of type start, token, complete, done or error, then `data: [DONE]`", body = String, content_type = "text/event-stream"),
        (status = 422, description = "Validation Error", body = schemas::Problem, content_type = "application/problem+json"),
    ),
    security(("CustomHTTPBearer" = [])),
)]
async fn chat_streaming(
    State(state): State<AppState>,
    p: Principal,
    ApiJson(request): ApiJson<ChatRequest>,
) -> Result<Response, ApiError> {
    // Bad input is still a problem document; once streaming, failures are `error` chunks.
    let prepared = prepare(&state, &p, &request).await?;
    let (tx, rx) = mpsc::unbounded_channel::<Bytes>();
    let conversation_id = prepared.conversation.id.clone();
    let _ = tx.send(frame(
        &json!({"type": "start", "conversation_id": conversation_id}),
    ));
    let task_state = state.clone();
    // The run lives in its own task: a disconnected client (a closed channel) does not stop
    // it, and what it stores is the same as for `/execute/chat`.
    tokio::spawn(async move {
        let events = tx.clone();
        let outcome = run_and_persist(&task_state, prepared, move |event| {
            if let EventKind::Token { text, node_id } = &event.kind {
                let _ = events.send(frame(
                    &json!({"type": "token", "content": text, "node_id": node_id}),
                ));
            }
        })
        .await;
        match outcome {
            Ok(outcome) => {
                if let Some(error) = &outcome.result.error {
                    let _ = tx.send(frame(&json!({
                        "type": "error",
                        "error": error.message,
                        "execution_id": outcome.result.execution_id,
                    })));
                } else {
                    let usage = &outcome.result.usage;
                    let _ = tx.send(frame(&json!({
                        "type": "complete",
                        "message_id": outcome.message.id,
                        "conversation_id": outcome.conversation.id,
                        "execution_id": outcome.result.execution_id,
                        "content": outcome.message.content,
                        "total_tokens": usage.total_tokens,
                        "input_tokens": usage.prompt_tokens,
                        "output_tokens": usage.completion_tokens,
                        "cost": usage.cost,
                        "model_used": outcome.message.metadata.get("model_used"),
                        "provider_used": outcome.message.metadata.get("provider_used"),
                        "response_time_ms": outcome.response_time_ms,
                    })));
                    let _ = tx.send(frame(&json!({"type": "done"})));
                }
            }
            Err(error) => {
                let _ = tx.send(frame(&json!({"type": "error", "error": error.detail})));
            }
        }
        let _ = tx.send(Bytes::from_static(b"data: [DONE]\n\n"));
    });
    Ok(event_stream(rx))
}

/// A `text/event-stream` answer (not cached, not buffered by proxies) whose body is the frames
/// sent on `rx`, ending when its sender is dropped.
pub(super) fn event_stream(rx: mpsc::UnboundedReceiver<Bytes>) -> Response {
    let stream = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv()
            .await
            .map(|chunk| (Ok::<Bytes, Infallible>(chunk), rx))
    });
    let mut response = Body::from_stream(stream).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert("x-accel-buffering", HeaderValue::from_static("no"));
    response
}
