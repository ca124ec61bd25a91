//! The OpenAI-compatible API: `GET /v1/models`, `GET /v1/models/{id}` and
//! `POST /v1/chat/completions`, where a "model" is a workflow definition or template the
//! caller may read, so any OpenAI client can run a workflow.
//!
//! **Model ids.** `workflow:<definition id>` and `template:<template id>` (built-in templates'
//! ids are their names, e.g. `template:universal_chat`). A request may also name a definition
//! or template after the prefix by its name (`workflow:Support bot`), or give a bare id or name
//! when exactly one definition or template has it; several are a 400 (`ambiguous_model`).
//!
//! **Messages.** `system` (and `developer`), `user`, `assistant` (with `tool_calls`) and `tool`
//! messages, with string content or arrays of `text` parts. When the last message is a `user`
//! message, it becomes the execution's `input.message` and the earlier ones its chat history;
//! when it is a `tool` message (a client answering tool calls), every message is history and
//! the workflow's model continues its turn. Each completion is a recorded execution (kind
//! `definition` or `template`) that the executions endpoints show; its id is in the
//! completion's id (`chatcmpl-<execution id>`) and in `execution_id`.
//!
//! **Sampling.** `temperature` and `max_tokens` (or `max_completion_tokens`) are passed to a
//! template that has such a parameter; a definition's nodes keep their own settings.
//!
//! **Tools.** `tools` (functions) are passed through to the workflow's `llm` nodes whose config
//! has `client_tools: true` ("the workflow allows client tools"); a workflow without such a node
//! answers 400 (`param: "tools"`). They are put in the execution's input (`input.tools`,
//! `input.tool_choice`). When the run ends with the model asking for tool calls, the answer has
//! `finish_reason: "tool_calls"` and `message.tool_calls`; the client runs them and sends a
//! follow-up request with the `tool` messages, which continues the conversation.
//!
//! **Streaming** (`stream: true`): `chat.completion.chunk` frames as `data: {json}`: the first
//! carries the role, then one per token the workflow's models stream, the tool calls, a last one
//! with the `finish_reason`, one with the `usage` when `stream_options.include_usage`, then
//! `data: [DONE]`. A client that disconnects changes nothing: the run finishes and is recorded.
//!
//! **Errors** are OpenAI's shape, `{"error": {"message", "type", "param", "code"}}`: 401 without
//! or with a bad key (`invalid_api_key`), 403 without the permission, 404 for an unknown model
//! (`model_not_found`), 400 for a bad request (bad JSON, bad messages), 502 when the workflow
//! failed (`workflow_failed`, with its `execution_id`).

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use chatter_core::engine::{ExecutionResult, RunOptions};
use chatter_core::model::{Role, ToolCall};
use chatter_core::store::{DefinitionRecord, ExecutionKind, Page};
use chatter_core::tracker::ExecutionMeta;
use chatter_core::{EventKind, Message, WorkflowDefinition};
use serde::Deserialize;
use serde_json::{Map, Value, json};
use tokio::sync::mpsc;

use super::AppState;
use super::auth::{Principal, now_ms};
use super::problem::{ApiError, ApiPath};
use super::schemas;
use super::workflows::{
    Template, readable_definition, readable_definitions, readable_template, readable_templates,
    run_live, stored_definition, template_definition,
};

pub(super) fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/models", get(list_models))
        .route("/v1/models/{model}", get(get_model))
        .route("/v1/chat/completions", post(completions))
}

/// Most definitions and templates looked through by name, and listed.
const LISTED: u32 = 1000;

// ---------------------------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------------------------

/// An error in OpenAI's shape.
#[derive(Debug, Clone, PartialEq)]
struct OpenAiError {
    status: StatusCode,
    message: String,
    kind: &'static str,
    param: Option<String>,
    code: Option<&'static str>,
    execution_id: Option<String>,
}

impl OpenAiError {
    fn new(status: StatusCode, message: impl Into<String>) -> OpenAiError {
        let (kind, code) = match status {
            StatusCode::UNAUTHORIZED => ("invalid_request_error", Some("invalid_api_key")),
            StatusCode::FORBIDDEN => ("invalid_request_error", Some("permission_denied")),
            StatusCode::NOT_FOUND => ("invalid_request_error", Some("not_found")),
            s if s.is_server_error() => ("server_error", None),
            _ => ("invalid_request_error", None),
        };
        OpenAiError {
            status,
            message: message.into(),
            kind,
            param: None,
            code,
            execution_id: None,
        }
    }

    /// 400 about `param`.
    fn bad(param: impl Into<String>, message: impl Into<String>) -> OpenAiError {
        OpenAiError {
            param: Some(param.into()),
            ..OpenAiError::new(StatusCode::BAD_REQUEST, message)
        }
    }

    fn model_not_found(model: &str) -> OpenAiError {
        OpenAiError {
            param: Some("model".into()),
            code: Some("model_not_found"),
            ..OpenAiError::new(
                StatusCode::NOT_FOUND,
                format!(
                    "The model `{model}` does not exist or you do not have access to it \
                     (models are `workflow:<definition>` and `template:<template>`; see /v1/models)."
                ),
            )
        }
    }

    fn code(mut self, code: &'static str) -> OpenAiError {
        self.code = Some(code);
        self
    }

    fn body(&self) -> Value {
        let mut error = json!({
            "message": self.message,
            "type": self.kind,
            "param": self.param,
            "code": self.code,
        });
        if let (Some(id), Some(map)) = (&self.execution_id, error.as_object_mut()) {
            map.insert("execution_id".into(), json!(id));
        }
        json!({ "error": error })
    }
}

impl From<ApiError> for OpenAiError {
    fn from(error: ApiError) -> OpenAiError {
        // The server's 422 (bad input) is OpenAI's 400.
        let status = if error.status == StatusCode::UNPROCESSABLE_ENTITY {
            StatusCode::BAD_REQUEST
        } else {
            error.status
        };
        OpenAiError::new(status, error.detail)
    }
}

impl IntoResponse for OpenAiError {
    fn into_response(self) -> Response {
        // `application/json`: the problem middleware leaves a handler's own document alone.
        let mut response = (self.status, axum::Json(self.body())).into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}

/// The caller, or the authentication error in OpenAI's shape.
fn caller(
    principal: Result<Principal, ApiError>,
    permission: &str,
) -> Result<Principal, OpenAiError> {
    let p = principal.map_err(OpenAiError::from)?;
    p.require(permission)?;
    Ok(p)
}

// ---------------------------------------------------------------------------------------------
// Models
// ---------------------------------------------------------------------------------------------

/// What a model id names.
enum Target {
    Definition(Box<DefinitionRecord>),
    Template(Box<Template>),
}

impl Target {
    /// The canonical model id.
    fn id(&self) -> String {
        match self {
            Target::Definition(d) => format!("workflow:{}", d.id),
            Target::Template(t) => format!("template:{}", t.id),
        }
    }

    fn json(&self) -> Value {
        let (created, owned_by, name, description) = match self {
            Target::Definition(d) => (
                d.created_at,
                d.owner_id.clone(),
                d.name.clone(),
                d.description.clone(),
            ),
            Target::Template(t) => (
                t.record.as_ref().map_or(0, |r| r.created_at),
                t.owner_id.clone().unwrap_or_else(|| "system".into()),
                t.spec.name.clone(),
                Some(t.spec.description.clone()),
            ),
        };
        json!({
            "id": self.id(),
            "object": "model",
            "created": created / 1000,
            "owned_by": owned_by,
            "name": name,
            "description": description,
        })
    }
}

/// Every definition and template the caller may read, definitions first.
async fn readable_targets(state: &AppState, p: &Principal) -> Result<Vec<Target>, OpenAiError> {
    let mut targets: Vec<Target> = readable_definitions(state, p, Page::new(LISTED, 0))
        .await?
        .into_iter()
        .map(|d| Target::Definition(Box::new(d)))
        .collect();
    if p.can("template:read") {
        targets.extend(
            readable_templates(state, p, Page::new(LISTED, 0))
                .await?
                .into_iter()
                .map(|t| Target::Template(Box::new(t))),
        );
    }
    Ok(targets)
}

/// The only one of `found`, else 404 (none) or 400 (several).
fn only(model: &str, mut found: Vec<Target>) -> Result<Target, OpenAiError> {
    match found.len() {
        0 => Err(OpenAiError::model_not_found(model)),
        1 => Ok(found.remove(0)),
        _ => {
            let ids: Vec<String> = found.iter().map(Target::id).collect();
            Err(OpenAiError::bad(
                "model",
                format!(
                    "the model `{model}` is ambiguous: it names {}; use one of these ids",
                    ids.join(", ")
                ),
            )
            .code("ambiguous_model"))
        }
    }
}

/// Resolves a model id (see the module docs): after a prefix, an id, else a name; bare, every
/// definition and template with that id or name.
async fn resolve(state: &AppState, p: &Principal, model: &str) -> Result<Target, OpenAiError> {
    let (want_definitions, want_templates, key, bare) =
        if let Some(key) = model.strip_prefix("workflow:") {
            (true, false, key, false)
        } else if let Some(key) = model.strip_prefix("template:") {
            (false, true, key, false)
        } else {
            (true, true, model, true)
        };
    if key.is_empty() {
        return Err(OpenAiError::model_not_found(model));
    }
    let mut found = Vec::new();
    if want_definitions {
        match readable_definition(state, p, key).await {
            Ok(record) => found.push(Target::Definition(Box::new(record))),
            Err(e) if e.status == StatusCode::NOT_FOUND => {}
            Err(e) => return Err(e.into()),
        }
    }
    if want_templates && p.can("template:read") {
        match readable_template(state, p, key).await {
            Ok(template) => found.push(Target::Template(Box::new(template))),
            Err(e) if e.status == StatusCode::NOT_FOUND => {}
            Err(e) => return Err(e.into()),
        }
    }
    if bare || found.is_empty() {
        for target in readable_targets(state, p).await? {
            let named = match &target {
                Target::Definition(d) => want_definitions && d.name == key,
                Target::Template(t) => want_templates && t.spec.name == key,
            };
            if named && !found.iter().any(|f| f.id() == target.id()) {
                found.push(target);
            }
        }
    }
    only(model, found)
}

/// `GET /v1/models`.
#[utoipa::path(
    get,
    path = "/v1/models",
    operation_id = "openai_list_models",
    tag = "OpenAI",
    description = "The workflow definitions and templates the caller may read, as OpenAI models \
                   (`workflow:<definition id>`, `template:<template id>`). Errors are OpenAI's shape.",
    responses(
        (status = 200, description = "The models", body = schemas::ModelList),
        (status = 401, description = "No or a bad key (`invalid_api_key`)", body = schemas::OpenAIError),
        (status = 403, description = "The key lacks the permission (`permission_denied`)", body = schemas::OpenAIError),
    ),
    security(("CustomHTTPBearer" = [])),
)]
async fn list_models(
    State(state): State<AppState>,
    principal: Result<Principal, ApiError>,
) -> Result<Response, OpenAiError> {
    let p = caller(principal, "workflow:read")?;
    let data: Vec<Value> = readable_targets(&state, &p)
        .await?
        .iter()
        .map(Target::json)
        .collect();
    Ok(super::ok(json!({"object": "list", "data": data})))
}

/// `GET /v1/models/{model}`.
#[utoipa::path(
    get,
    path = "/v1/models/{model}",
    operation_id = "openai_get_model",
    tag = "OpenAI",
    params(("model" = String, Path, description = "A model id, or a definition's or template's name (with or without its `workflow:`/`template:` prefix) naming exactly one")),
    responses(
        (status = 200, description = "The model", body = schemas::Model),
        (status = 400, description = "A name that names several (`ambiguous_model`)", body = schemas::OpenAIError),
        (status = 401, description = "No or a bad key (`invalid_api_key`)", body = schemas::OpenAIError),
        (status = 403, description = "The key lacks the permission (`permission_denied`)", body = schemas::OpenAIError),
        (status = 404, description = "No such model readable by the caller (`model_not_found`)", body = schemas::OpenAIError),
    ),
    security(("CustomHTTPBearer" = [])),
)]
async fn get_model(
    State(state): State<AppState>,
    principal: Result<Principal, ApiError>,
    ApiPath(model): ApiPath<String>,
) -> Result<Response, OpenAiError> {
    let p = caller(principal, "workflow:read")?;
    let target = resolve(&state, &p, &model).await?;
    Ok(super::ok(target.json()))
}

// ---------------------------------------------------------------------------------------------
// Chat completions
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Deserialize)]
struct CompletionRequest {
    model: String,
    messages: Vec<Value>,
    #[serde(default)]
    stream: bool,
    #[serde(default)]
    stream_options: Option<StreamOptions>,
    temperature: Option<f64>,
    max_tokens: Option<u64>,
    max_completion_tokens: Option<u64>,
    n: Option<u64>,
    #[serde(default)]
    tools: Vec<Value>,
    tool_choice: Option<Value>,
}

#[derive(Debug, Default, Deserialize)]
struct StreamOptions {
    #[serde(default)]
    include_usage: bool,
}

/// Reads the request body.
fn parse_request(body: Result<Bytes, BytesRejection>) -> Result<CompletionRequest, OpenAiError> {
    let bytes = body.map_err(|r| OpenAiError::new(r.status(), r.body_text()))?;
    let request: CompletionRequest = serde_json::from_slice(&bytes).map_err(|e| {
        OpenAiError::new(
            StatusCode::BAD_REQUEST,
            format!("the request body is not a valid chat completion request: {e}"),
        )
    })?;
    if request.n.is_some_and(|n| n != 1) {
        return Err(OpenAiError::bad("n", "only `n: 1` is supported"));
    }
    if request
        .temperature
        .is_some_and(|t| !(0.0..=2.0).contains(&t))
    {
        return Err(OpenAiError::bad(
            "temperature",
            "`temperature` must be within 0..=2",
        ));
    }
    for (name, value) in [
        ("max_tokens", request.max_tokens),
        ("max_completion_tokens", request.max_completion_tokens),
    ] {
        if value == Some(0) {
            return Err(OpenAiError::bad(
                name,
                format!("`{name}` must be at least 1"),
            ));
        }
    }
    Ok(request)
}

/// The text of a message's `content`: a string, `null`, or an array of `text` parts.
fn content_text(i: usize, content: Option<&Value>) -> Result<String, OpenAiError> {
    let param = format!("messages[{i}].content");
    match content {
        None | Some(Value::Null) => Ok(String::new()),
        Some(Value::String(text)) => Ok(text.clone()),
        Some(Value::Array(parts)) => {
            let mut texts = Vec::with_capacity(parts.len());
            for (j, part) in parts.iter().enumerate() {
                match (
                    part.get("type").and_then(Value::as_str),
                    part.get("text").and_then(Value::as_str),
                ) {
                    (Some("text"), Some(text)) => texts.push(text),
                    (Some("text"), None) => {
                        return Err(OpenAiError::bad(
                            format!("{param}[{j}].text"),
                            "a `text` content part needs a string `text`",
                        ));
                    }
                    (kind, _) => {
                        return Err(OpenAiError::bad(
                            format!("{param}[{j}].type"),
                            format!(
                                "content parts of type `{}` are not supported; only `text` parts are",
                                kind.unwrap_or("(none)")
                            ),
                        ));
                    }
                }
            }
            Ok(texts.join("\n"))
        }
        Some(_) => Err(OpenAiError::bad(
            param,
            "`content` must be a string or an array of content parts",
        )),
    }
}

/// The tool calls of an assistant message.
fn tool_calls_of(i: usize, message: &Value) -> Result<Vec<ToolCall>, OpenAiError> {
    let Some(calls) = message.get("tool_calls").filter(|v| !v.is_null()) else {
        return Ok(Vec::new());
    };
    let param = format!("messages[{i}].tool_calls");
    let calls = calls
        .as_array()
        .ok_or_else(|| OpenAiError::bad(&param, "`tool_calls` must be an array"))?;
    calls
        .iter()
        .enumerate()
        .map(|(j, call)| {
            let at = format!("{param}[{j}]");
            let id = call.get("id").and_then(Value::as_str);
            let function = call.get("function");
            let name = function.and_then(|f| f.get("name")).and_then(Value::as_str);
            let (Some(id), Some(name)) = (id, name) else {
                return Err(OpenAiError::bad(
                    at,
                    "a tool call needs an `id` and a `function.name`",
                ));
            };
            let arguments = match function.and_then(|f| f.get("arguments")) {
                None | Some(Value::Null) => json!({}),
                Some(Value::String(text)) if text.trim().is_empty() => json!({}),
                Some(Value::String(text)) => serde_json::from_str::<Value>(text)
                    .ok()
                    .filter(Value::is_object)
                    .ok_or_else(|| {
                        OpenAiError::bad(
                            format!("{at}.function.arguments"),
                            "`arguments` must be a JSON object encoded as a string",
                        )
                    })?,
                Some(other @ Value::Object(_)) => other.clone(),
                Some(_) => {
                    return Err(OpenAiError::bad(
                        format!("{at}.function.arguments"),
                        "`arguments` must be a JSON object encoded as a string",
                    ));
                }
            };
            Ok(ToolCall {
                id: id.to_owned(),
                name: name.to_owned(),
                arguments,
            })
        })
        .collect()
}

/// The request's messages as engine messages, checked.
fn messages_of(raw: &[Value]) -> Result<Vec<Message>, OpenAiError> {
    if raw.is_empty() {
        return Err(OpenAiError::bad("messages", "`messages` must not be empty"));
    }
    let mut out: Vec<Message> = Vec::with_capacity(raw.len());
    for (i, m) in raw.iter().enumerate() {
        if !m.is_object() {
            return Err(OpenAiError::bad(
                format!("messages[{i}]"),
                "a message must be an object",
            ));
        }
        let role = m.get("role").and_then(Value::as_str).unwrap_or_default();
        let content = content_text(i, m.get("content"))?;
        let message = match role {
            "system" | "developer" => Message::system(content),
            "user" => Message::user(content),
            "assistant" => Message {
                tool_calls: tool_calls_of(i, m)?,
                ..Message::assistant(content)
            },
            "tool" => {
                let call_id = m
                    .get("tool_call_id")
                    .and_then(Value::as_str)
                    .ok_or_else(|| {
                        OpenAiError::bad(
                            format!("messages[{i}].tool_call_id"),
                            "a `tool` message needs the `tool_call_id` it answers",
                        )
                    })?;
                let call = out
                    .iter()
                    .rev()
                    .flat_map(|m| m.tool_calls.iter())
                    .find(|c| c.id == call_id)
                    .ok_or_else(|| {
                        OpenAiError::bad(
                            format!("messages[{i}].tool_call_id"),
                            format!(
                                "no earlier assistant message has a tool call `{call_id}` for this \
                                 `tool` message to answer"
                            ),
                        )
                    })?;
                Message::tool_result(call_id, call.name.clone(), content)
            }
            other => {
                return Err(OpenAiError::bad(
                    format!("messages[{i}].role"),
                    format!(
                        "unsupported role `{other}`; use system, developer, user, assistant or tool"
                    ),
                ));
            }
        };
        out.push(message);
    }
    match out.last().map(|m| m.role) {
        Some(Role::User | Role::Tool) => Ok(out),
        _ => Err(OpenAiError::bad(
            format!("messages[{}].role", out.len() - 1),
            "the last message must be a `user` message (or `tool` results answering tool calls)",
        )),
    }
}

/// Client tools as the `llm` node's `client_tools` reads them (`input.tools`).
fn tool_specs(tools: &[Value]) -> Result<Vec<Value>, OpenAiError> {
    tools
        .iter()
        .enumerate()
        .map(|(i, tool)| {
            let function = tool
                .get("function")
                .filter(|_| tool.get("type").and_then(Value::as_str) == Some("function"));
            let name = function.and_then(|f| f.get("name")).and_then(Value::as_str);
            let Some(name) = name.filter(|n| !n.is_empty()) else {
                return Err(OpenAiError::bad(
                    format!("tools[{i}]"),
                    "a tool must be `{\"type\": \"function\", \"function\": {\"name\": ...}}`",
                ));
            };
            Ok(json!({
                "name": name,
                "description": function.and_then(|f| f.get("description")).cloned().unwrap_or(json!("")),
                "parameters": function
                    .and_then(|f| f.get("parameters"))
                    .cloned()
                    .unwrap_or(json!({"type": "object", "properties": {}})),
            }))
        })
        .collect()
}

/// `tool_choice` as the `llm` node takes it: `auto`, `none` or `required` (a named function is
/// `required`).
fn tool_choice_of(choice: Option<&Value>) -> Result<Option<&'static str>, OpenAiError> {
    match choice {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => match s.as_str() {
            "auto" => Ok(Some("auto")),
            "none" => Ok(Some("none")),
            "required" => Ok(Some("required")),
            other => Err(OpenAiError::bad(
                "tool_choice",
                format!("`tool_choice` must be auto, none, required or a function, not `{other}`"),
            )),
        },
        Some(Value::Object(o)) if o.get("type").and_then(Value::as_str) == Some("function") => {
            Ok(Some("required"))
        }
        Some(_) => Err(OpenAiError::bad(
            "tool_choice",
            "`tool_choice` must be auto, none, required or a function",
        )),
    }
}

/// Whether a workflow passes client tools to a model: one of its `llm` nodes has
/// `client_tools: true`.
fn allows_client_tools(def: &WorkflowDefinition) -> bool {
    def.nodes.iter().any(|node| {
        matches!(node.kind.as_str(), "llm" | "model" | "call_model")
            && ["client_tools", "clientTools"]
                .iter()
                .any(|k| node.config.get(*k).and_then(Value::as_bool) == Some(true))
    })
}

/// A completion ready to run.
struct Prepared {
    model: String,
    def: WorkflowDefinition,
    input: Value,
    history: Vec<Message>,
    meta: ExecutionMeta,
    execution_id: String,
    include_usage: bool,
}

async fn prepare(
    state: &AppState,
    p: &Principal,
    request: CompletionRequest,
) -> Result<Prepared, OpenAiError> {
    let mut history = messages_of(&request.messages)?;
    let target = resolve(state, p, &request.model).await?;
    let model = target.id();
    let (def, meta) = match &target {
        Target::Definition(record) => {
            let def = stored_definition(record)?;
            let meta = ExecutionMeta::new(p.id(), ExecutionKind::Definition)
                .definition(&record.id)
                .params(json!({"definition_id": record.id}));
            (def, meta)
        }
        Target::Template(template) => {
            let mut params = Map::new();
            let defaults = &template.spec.default_params;
            if let (Some(t), true) = (request.temperature, defaults.contains_key("temperature")) {
                params.insert("temperature".into(), json!(t));
            }
            let max_tokens = request.max_completion_tokens.or(request.max_tokens);
            if let (Some(t), true) = (max_tokens, defaults.contains_key("max_tokens")) {
                params.insert("max_tokens".into(), json!(t));
            }
            let (def, params) = template_definition(state, &template.spec, Value::Object(params))?;
            let mut recorded = params;
            recorded.insert("template_id".into(), json!(template.id));
            let mut meta =
                ExecutionMeta::new(p.id(), ExecutionKind::Template).params(Value::Object(recorded));
            if template.record.is_some() {
                meta = meta.template(&template.id);
            }
            (def, meta)
        }
    };
    let mut input = Map::new();
    if history.last().is_some_and(|m| m.role == Role::User)
        && let Some(last) = history.pop()
    {
        input.insert("message".into(), json!(last.content));
    }
    if !request.tools.is_empty() {
        if !allows_client_tools(&def) {
            return Err(OpenAiError::bad(
                "tools",
                format!(
                    "the workflow `{model}` does not take client tools (none of its `llm` nodes \
                     has `client_tools: true`)"
                ),
            )
            .code("tools_not_supported"));
        }
        input.insert("tools".into(), Value::Array(tool_specs(&request.tools)?));
        if let Some(choice) = tool_choice_of(request.tool_choice.as_ref())? {
            input.insert("tool_choice".into(), json!(choice));
        }
    }
    Ok(Prepared {
        model,
        def,
        input: Value::Object(input),
        history,
        meta,
        execution_id: ulid::Ulid::new().to_string(),
        include_usage: request.stream_options.is_some_and(|o| o.include_usage),
    })
}

/// Runs a prepared completion, calling `observe` with each event.
async fn run(
    state: &AppState,
    prepared: &Prepared,
    observe: impl FnMut(&chatter_core::Event) + Send,
) -> Result<ExecutionResult, OpenAiError> {
    let options = RunOptions::default()
        .history(prepared.history.clone())
        .execution_id(&prepared.execution_id);
    let run = run_live(
        state,
        &prepared.def,
        prepared.input.clone(),
        options,
        prepared.meta.clone(),
        observe,
    )
    .await?;
    if let Some(error) = &run.store_error {
        eprintln!(
            "chatter serve: execution {} was not fully recorded: {error}",
            run.result.execution_id
        );
    }
    let result = run.result;
    if let Some(failure) = &result.error {
        return Err(OpenAiError {
            code: Some("workflow_failed"),
            execution_id: Some(result.execution_id.clone()),
            ..OpenAiError::new(
                StatusCode::BAD_GATEWAY,
                format!(
                    "the workflow failed ({}): {}",
                    failure.class, failure.message
                ),
            )
        });
    }
    Ok(result)
}

/// What a finished run answers: content, tool calls, finish reason.
struct Answer {
    content: Option<String>,
    tool_calls: Vec<Value>,
    finish_reason: &'static str,
}

fn answer_of(result: &ExecutionResult) -> Answer {
    let asking = result
        .messages
        .last()
        .filter(|m| m.role == Role::Assistant && !m.tool_calls.is_empty());
    if let Some(message) = asking {
        let tool_calls = message
            .tool_calls
            .iter()
            .map(|c| {
                json!({
                    "id": c.id,
                    "type": "function",
                    "function": {"name": c.name, "arguments": c.arguments.to_string()},
                })
            })
            .collect();
        return Answer {
            content: Some(message.content.clone()).filter(|c| !c.is_empty()),
            tool_calls,
            finish_reason: "tool_calls",
        };
    }
    // `length` when the model that answered last stopped at its token limit.
    let stopped_at_limit = result
        .node_runs
        .iter()
        .rev()
        .find_map(|r| r.output.get("finish_reason").and_then(Value::as_str))
        == Some("length");
    Answer {
        content: Some(result.response.clone().unwrap_or_default()),
        tool_calls: Vec::new(),
        finish_reason: if stopped_at_limit { "length" } else { "stop" },
    }
}

fn usage_json(result: &ExecutionResult) -> Value {
    json!({
        "prompt_tokens": result.usage.prompt_tokens,
        "completion_tokens": result.usage.completion_tokens,
        "total_tokens": result.usage.total_tokens,
    })
}

/// `POST /v1/chat/completions`.
#[utoipa::path(
    post,
    path = "/v1/chat/completions",
    operation_id = "openai_create_chat_completion",
    tag = "OpenAI",
    description = "Runs the workflow the `model` names with the conversation as its input; each \
                   completion is a recorded execution. With `stream: true` the answer is Server-Sent \
                   Events: `data: <ChatCompletionChunk>` frames, then `data: [DONE]`. Errors are \
                   OpenAI's shape (`{\"error\": {message, type, param, code}}`).",
    request_body = schemas::ChatCompletionRequest,
    responses(
        (status = 200, description = "The completion, or with `stream: true` its chunks", content(
            (schemas::ChatCompletion = "application/json"),
            (schemas::ChatCompletionChunk = "text/event-stream"),
        )),
        (status = 400, description = "A bad request: bad JSON, bad messages, `tools` for a workflow without client tools, `n` other than 1, ...", body = schemas::OpenAIError),
        (status = 401, description = "No or a bad key (`invalid_api_key`)", body = schemas::OpenAIError),
        (status = 403, description = "The key lacks the permission (`permission_denied`)", body = schemas::OpenAIError),
        (status = 404, description = "No such model readable by the caller (`model_not_found`)", body = schemas::OpenAIError),
        (status = 502, description = "The workflow failed (`workflow_failed`, with its `execution_id`)", body = schemas::OpenAIError),
    ),
    security(("CustomHTTPBearer" = [])),
)]
async fn completions(
    State(state): State<AppState>,
    principal: Result<Principal, ApiError>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, OpenAiError> {
    let p = caller(principal, "workflow:execute")?;
    let request = parse_request(body)?;
    let stream = request.stream;
    let prepared = prepare(&state, &p, request).await?;
    if stream {
        return Ok(streaming(state, prepared));
    }
    let created = now_ms() / 1000;
    let result = run(&state, &prepared, |_| {}).await?;
    let answer = answer_of(&result);
    let mut message = json!({"role": "assistant", "content": answer.content});
    if !answer.tool_calls.is_empty() {
        message["tool_calls"] = Value::Array(answer.tool_calls);
    }
    Ok(super::ok(json!({
        "id": format!("chatcmpl-{}", result.execution_id),
        "object": "chat.completion",
        "created": created,
        "model": prepared.model,
        "choices": [{
            "index": 0,
            "message": message,
            "logprobs": null,
            "finish_reason": answer.finish_reason,
        }],
        "usage": usage_json(&result),
        "system_fingerprint": null,
        "execution_id": result.execution_id,
    })))
}

/// The chunks of one streamed completion.
struct Chunks {
    id: String,
    created: i64,
    model: String,
    include_usage: bool,
}

impl Chunks {
    fn chunk(&self, delta: Value, finish_reason: Option<&str>) -> Bytes {
        let mut chunk = json!({
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "system_fingerprint": null,
            "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish_reason}],
        });
        if self.include_usage {
            chunk["usage"] = Value::Null;
        }
        frame(&chunk)
    }

    fn usage(&self, result: &ExecutionResult) -> Bytes {
        frame(&json!({
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "system_fingerprint": null,
            "choices": [],
            "usage": usage_json(result),
        }))
    }
}

fn frame(value: &Value) -> Bytes {
    Bytes::from(format!("data: {value}\n\n"))
}

/// Answers `stream: true`: the run lives in its own task, so a client that disconnects (a
/// closed channel) does not stop it.
fn streaming(state: AppState, prepared: Prepared) -> Response {
    let (tx, rx) = mpsc::unbounded_channel::<Bytes>();
    let chunks = Chunks {
        id: format!("chatcmpl-{}", prepared.execution_id),
        created: now_ms() / 1000,
        model: prepared.model.clone(),
        include_usage: prepared.include_usage,
    };
    let _ = tx.send(chunks.chunk(json!({"role": "assistant", "content": ""}), None));
    tokio::spawn(async move {
        let mut streamed = false;
        let outcome = run(&state, &prepared, |event| {
            if let EventKind::Token { text, .. } = &event.kind
                && !text.is_empty()
            {
                streamed = true;
                let _ = tx.send(chunks.chunk(json!({"content": text}), None));
            }
        })
        .await;
        match outcome {
            Ok(result) => {
                let answer = answer_of(&result);
                // Models that do not stream (`stream: false` nodes) answer in one piece.
                if let Some(content) = answer
                    .content
                    .as_ref()
                    .filter(|c| !streamed && !c.is_empty())
                {
                    let _ = tx.send(chunks.chunk(json!({"content": content}), None));
                }
                if !answer.tool_calls.is_empty() {
                    let calls: Vec<Value> = answer
                        .tool_calls
                        .into_iter()
                        .enumerate()
                        .map(|(i, mut call)| {
                            call["index"] = json!(i);
                            call
                        })
                        .collect();
                    let _ = tx.send(chunks.chunk(json!({"tool_calls": calls}), None));
                }
                let _ = tx.send(chunks.chunk(json!({}), Some(answer.finish_reason)));
                if chunks.include_usage {
                    let _ = tx.send(chunks.usage(&result));
                }
            }
            Err(error) => {
                let _ = tx.send(frame(&error.body()));
            }
        }
        let _ = tx.send(Bytes::from_static(b"data: [DONE]\n\n"));
    });
    super::chat::event_stream(rx)
}
