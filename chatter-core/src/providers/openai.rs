//! A chat model on any OpenAI-compatible `/v1/chat/completions` server (OpenAI, Azure-style
//! gateways, vLLM, llama.cpp, Ollama, LiteLLM, ...). Cargo feature `openai`.
//!
//! Non-streaming and SSE streaming calls (`stream: true` with `stream_options.include_usage`),
//! tool calls (streamed tool-call fragments are assembled by their `index`), usage and finish
//! reason. Failures are [`Error::Model`] classified for retries: HTTP 429 → `rate_limit` (with
//! `retry_after_ms` from `Retry-After` / `retry-after-ms`), 5xx → `server`, 401/403 → `auth`,
//! other 4xx → `bad_request`, timeouts → `timeout`, connection failures → `connection`,
//! unparseable bodies → `model`.
//!
//! The API key is read from an environment variable (default `OPENAI_API_KEY`) when the model is
//! built; it is sent as a bearer token and never appears in errors or `Debug` output. Without a
//! key no `Authorization` header is sent (local servers rarely want one).
//!
//! ```no_run
//! use std::time::Duration;
//! use chatter_core::providers::{OpenAiConfig, OpenAiModel};
//!
//! let model = OpenAiModel::new(
//!     OpenAiConfig::default()
//!         .base_url("http://127.0.0.1:11434/v1")
//!         .default_model("llama3.2")
//!         .request_timeout(Duration::from_secs(30)),
//! )?;
//! # Ok::<(), chatter_core::Error>(())
//! ```

use std::collections::BTreeMap;
use std::time::Duration;

use async_trait::async_trait;
use reqwest::header::{AUTHORIZATION, CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue};
use serde_json::{Map, Value, json};

use crate::error::{Error, ErrorClass, Result};
use crate::model::{
    ChatModel, ChatRequest, ChatResponse, FinishReason, Message, Role, TokenSink, ToolCall,
    ToolChoice, Usage,
};

/// Default base URL.
pub const DEFAULT_BASE_URL: &str = "https://api.openai.com/v1";
/// Default name of the environment variable holding the API key.
pub const DEFAULT_API_KEY_ENV: &str = "OPENAI_API_KEY";

/// Price of a model, in US dollars per million tokens, for the `cost` of [`Usage`].
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct ModelPrice {
    /// Per million prompt (input) tokens.
    pub prompt_per_million: f64,
    /// Per million completion (output) tokens.
    pub completion_per_million: f64,
}

/// How to reach an OpenAI-compatible server. Build with the chained setters.
#[derive(Clone)]
#[non_exhaustive]
pub struct OpenAiConfig {
    /// Base URL up to and including `/v1` (default [`DEFAULT_BASE_URL`]).
    pub base_url: String,
    /// Environment variable holding the API key (default [`DEFAULT_API_KEY_ENV`]).
    pub api_key_env: String,
    /// An API key given directly; takes precedence over `api_key_env`.
    pub api_key: Option<String>,
    /// Model used when a request names none.
    pub default_model: Option<String>,
    /// Limit for establishing a connection (default 10 s).
    pub connect_timeout: Duration,
    /// Limit for a whole non-streaming call; for a streaming call, the limit for the response
    /// to start and for each gap between two chunks (default 120 s).
    pub request_timeout: Duration,
    /// Extra headers sent with every request (`OpenAI-Organization`, gateway keys, ...).
    pub headers: Vec<(String, String)>,
    /// The provider name reported by [`ChatModel::name`] and in errors (default `openai`).
    pub provider_name: String,
    /// Prices by model name, to fill in [`Usage::cost`].
    pub prices: BTreeMap<String, ModelPrice>,
    /// Send the output token limit as `max_completion_tokens` (newer OpenAI models refuse
    /// `max_tokens`) instead of `max_tokens` (what most compatible servers expect). Default false.
    pub max_completion_tokens: bool,
}

impl Default for OpenAiConfig {
    fn default() -> Self {
        OpenAiConfig {
            base_url: DEFAULT_BASE_URL.to_owned(),
            api_key_env: DEFAULT_API_KEY_ENV.to_owned(),
            api_key: None,
            default_model: None,
            connect_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(120),
            headers: Vec::new(),
            provider_name: "openai".to_owned(),
            prices: BTreeMap::new(),
            max_completion_tokens: false,
        }
    }
}

impl std::fmt::Debug for OpenAiConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpenAiConfig")
            .field("base_url", &self.base_url)
            .field("api_key_env", &self.api_key_env)
            .field("api_key", &self.api_key.as_ref().map(|_| "<redacted>"))
            .field("default_model", &self.default_model)
            .field("connect_timeout", &self.connect_timeout)
            .field("request_timeout", &self.request_timeout)
            .field(
                "headers",
                &self.headers.iter().map(|(k, _)| k).collect::<Vec<_>>(),
            )
            .field("provider_name", &self.provider_name)
            .finish_non_exhaustive()
    }
}

impl OpenAiConfig {
    /// The defaults, with `base_url` from `OPENAI_BASE_URL` and `default_model` from
    /// `OPENAI_MODEL` when those environment variables are set.
    pub fn from_env() -> OpenAiConfig {
        let mut config = OpenAiConfig::default();
        if let Ok(url) = std::env::var("OPENAI_BASE_URL")
            && !url.trim().is_empty()
        {
            config.base_url = url;
        }
        if let Ok(model) = std::env::var("OPENAI_MODEL")
            && !model.trim().is_empty()
        {
            config.default_model = Some(model);
        }
        config
    }
    /// The client config of a model registry provider: its `base_url` (default
    /// [`DEFAULT_BASE_URL`]), its name, and the API key read from the environment variable its
    /// `api_key_env` names. A provider naming no variable gets no key: the key of
    /// `OPENAI_API_KEY` is never sent to a server that did not ask for it.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] when the named variable is not set (or not UTF-8).
    pub fn for_provider(provider: &crate::orchestration::ProviderConfig) -> Result<OpenAiConfig> {
        let mut config = OpenAiConfig::default().provider_name(provider.name.clone());
        if let Some(url) = &provider.base_url {
            config = config.base_url(url.clone());
        }
        config.api_key_env = provider.api_key_env.clone().unwrap_or_default();
        config.api_key = provider.api_key()?;
        Ok(config)
    }

    /// Sets the base URL (up to and including `/v1`).
    #[must_use]
    pub fn base_url(mut self, url: impl Into<String>) -> Self {
        self.base_url = url.into();
        self
    }
    /// Sets the environment variable the API key is read from.
    #[must_use]
    pub fn api_key_env(mut self, name: impl Into<String>) -> Self {
        self.api_key_env = name.into();
        self
    }
    /// Sets the API key directly (instead of reading the environment).
    #[must_use]
    pub fn api_key(mut self, key: impl Into<String>) -> Self {
        self.api_key = Some(key.into());
        self
    }
    /// Sets the model used when a request names none.
    #[must_use]
    pub fn default_model(mut self, model: impl Into<String>) -> Self {
        self.default_model = Some(model.into());
        self
    }
    /// Sets the connect timeout.
    #[must_use]
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }
    /// Sets the request timeout (see [`OpenAiConfig::request_timeout`](OpenAiConfig#structfield.request_timeout)).
    #[must_use]
    pub fn request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = timeout;
        self
    }
    /// Adds a header sent with every request.
    #[must_use]
    pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }
    /// Sets the provider name.
    #[must_use]
    pub fn provider_name(mut self, name: impl Into<String>) -> Self {
        self.provider_name = name.into();
        self
    }
    /// Sends the output token limit as `max_completion_tokens` instead of `max_tokens`.
    #[must_use]
    pub fn max_completion_tokens(mut self, yes: bool) -> Self {
        self.max_completion_tokens = yes;
        self
    }
    /// Sets the price of a model.
    #[must_use]
    pub fn price(mut self, model: impl Into<String>, price: ModelPrice) -> Self {
        self.prices.insert(model.into(), price);
        self
    }
}

/// A chat model on an OpenAI-compatible server.
#[derive(Clone)]
pub struct OpenAiModel {
    client: reqwest::Client,
    endpoint: String,
    auth: Option<HeaderValue>,
    config: OpenAiConfig,
}

impl std::fmt::Debug for OpenAiModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpenAiModel")
            .field("endpoint", &self.endpoint)
            .field("authenticated", &self.auth.is_some())
            .field("config", &self.config)
            .finish()
    }
}

fn config_error(message: impl Into<String>) -> Error {
    Error::Config {
        message: message.into(),
    }
}

impl OpenAiModel {
    /// Builds the model (and its HTTP client), reading the API key from the environment.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] for a base URL that is not an `http(s)` URL, an invalid extra header, an
    /// API key that cannot be sent as a header, or an HTTP client that cannot be built.
    pub fn new(config: OpenAiConfig) -> Result<OpenAiModel> {
        let base = reqwest::Url::parse(config.base_url.trim())
            .map_err(|e| config_error(format!("invalid base URL `{}`: {e}", config.base_url)))?;
        if !matches!(base.scheme(), "http" | "https") {
            return Err(config_error(format!(
                "invalid base URL `{}`: the scheme must be http or https",
                config.base_url
            )));
        }
        let endpoint = format!("{}/chat/completions", base.as_str().trim_end_matches('/'));

        let mut headers = HeaderMap::new();
        for (name, value) in &config.headers {
            let header_name = HeaderName::from_bytes(name.as_bytes())
                .map_err(|e| config_error(format!("invalid header name `{name}`: {e}")))?;
            let header_value = HeaderValue::from_str(value)
                .map_err(|_| config_error(format!("invalid value for header `{name}`")))?;
            headers.insert(header_name, header_value);
        }
        let key = config
            .api_key
            .clone()
            .or_else(|| std::env::var(&config.api_key_env).ok())
            .filter(|k| !k.trim().is_empty());
        let auth = match key {
            Some(key) => {
                let mut value =
                    HeaderValue::from_str(&format!("Bearer {}", key.trim())).map_err(|_| {
                        config_error(format!(
                            "the API key (from `{}`) contains characters not allowed in a header",
                            config.api_key_env
                        ))
                    })?;
                value.set_sensitive(true);
                Some(value)
            }
            None => None,
        };

        super::ensure_crypto_provider();
        let client = reqwest::Client::builder()
            .connect_timeout(config.connect_timeout)
            .default_headers(headers)
            .build()
            .map_err(|e| config_error(format!("cannot build the HTTP client: {e}")))?;
        Ok(OpenAiModel {
            client,
            endpoint,
            auth,
            config,
        })
    }

    /// The URL requests are posted to (`{base_url}/chat/completions`).
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// The configuration.
    pub fn config(&self) -> &OpenAiConfig {
        &self.config
    }

    fn model_name(&self, request: &ChatRequest) -> Result<String> {
        request
            .model
            .clone()
            .or_else(|| self.config.default_model.clone())
            .ok_or_else(|| {
                config_error(format!(
                    "provider `{}`: the request names no model and no default model is configured",
                    self.config.provider_name
                ))
            })
    }

    fn error(&self, model: &str, class: ErrorClass, message: impl Into<String>) -> Error {
        Error::Model {
            model: format!("{}/{model}", self.config.provider_name),
            class,
            message: message.into(),
            retry_after_ms: None,
        }
    }

    fn timeout_error(&self, model: &str, what: &str) -> Error {
        self.error(
            model,
            ErrorClass::Timeout,
            format!(
                "{what} within {} ms",
                self.config.request_timeout.as_millis()
            ),
        )
    }

    fn transport_error(&self, model: &str, e: &reqwest::Error) -> Error {
        let class = if e.is_timeout() {
            ErrorClass::Timeout
        } else if e.is_decode() {
            ErrorClass::Model
        } else {
            ErrorClass::Connection
        };
        // The source chain says what really failed (refused, reset, DNS, TLS, ...).
        let mut message = e.to_string();
        let mut source = std::error::Error::source(e);
        while let Some(inner) = source {
            message.push_str(": ");
            message.push_str(&inner.to_string());
            source = inner.source();
        }
        self.error(model, class, message)
    }

    /// Posts the body; returns the response when its status is a success, else the classified
    /// error (reading the error body).
    async fn send(
        &self,
        model: &str,
        body: &Value,
        idempotency_key: Option<&str>,
    ) -> Result<reqwest::Response> {
        let payload = serde_json::to_vec(body)
            .map_err(|e| self.error(model, ErrorClass::Internal, e.to_string()))?;
        let mut builder = self
            .client
            .post(&self.endpoint)
            .header(CONTENT_TYPE, "application/json")
            .body(payload);
        if let Some(auth) = &self.auth {
            builder = builder.header(AUTHORIZATION, auth.clone());
        }
        if let Some(key) = idempotency_key
            && let Ok(value) = HeaderValue::from_str(key)
        {
            builder = builder.header("Idempotency-Key", value);
        }
        let response = builder
            .send()
            .await
            .map_err(|e| self.transport_error(model, &e))?;
        let status = response.status();
        if status.is_success() {
            return Ok(response);
        }
        let retry_after_ms = retry_after_ms(response.headers());
        let text = response.text().await.unwrap_or_default();
        let class = match status.as_u16() {
            429 => ErrorClass::RateLimit,
            401 | 403 => ErrorClass::Auth,
            500..=599 => ErrorClass::Server,
            400..=499 => ErrorClass::BadRequest,
            _ => ErrorClass::Model,
        };
        Err(Error::Model {
            model: format!("{}/{model}", self.config.provider_name),
            class,
            message: format!("HTTP {status}: {}", error_detail(&text)),
            retry_after_ms: if class == ErrorClass::RateLimit {
                retry_after_ms
            } else {
                None
            },
        })
    }

    fn body(&self, request: &ChatRequest, model: &str, stream: bool) -> Value {
        let mut body = Map::new();
        body.insert("model".into(), json!(model));
        body.insert(
            "messages".into(),
            Value::Array(request.messages.iter().map(wire_message).collect()),
        );
        if let Some(t) = request.temperature {
            body.insert("temperature".into(), json!(t));
        }
        if let Some(n) = request.max_tokens {
            let key = if self.config.max_completion_tokens {
                "max_completion_tokens"
            } else {
                "max_tokens"
            };
            body.insert(key.into(), json!(n));
        }
        if let Some(p) = request.top_p {
            body.insert("top_p".into(), json!(p));
        }
        if !request.stop.is_empty() {
            body.insert("stop".into(), json!(request.stop));
        }
        if !request.tools.is_empty() {
            let tools: Vec<Value> = request
                .tools
                .iter()
                .map(|t| {
                    json!({"type": "function", "function": {
                        "name": t.name, "description": t.description, "parameters": t.parameters}})
                })
                .collect();
            body.insert("tools".into(), Value::Array(tools));
            if let Some(choice) = request.tool_choice {
                let choice = match choice {
                    ToolChoice::None => "none",
                    ToolChoice::Required => "required",
                    _ => "auto",
                };
                body.insert("tool_choice".into(), json!(choice));
            }
        }
        if request.json_mode {
            body.insert("response_format".into(), json!({"type": "json_object"}));
        }
        if stream {
            body.insert("stream".into(), json!(true));
            body.insert("stream_options".into(), json!({"include_usage": true}));
        }
        Value::Object(body)
    }

    fn price(&self, model: &str, usage: &mut Usage) {
        if let Some(price) = self.config.prices.get(model) {
            usage.cost = usage.prompt_tokens as f64 * price.prompt_per_million / 1e6
                + usage.completion_tokens as f64 * price.completion_per_million / 1e6;
        }
    }

    async fn chat_once(&self, request: &ChatRequest, model: &str) -> Result<ChatResponse> {
        let body = self.body(request, model, false);
        let response = self
            .send(model, &body, request.idempotency_key.as_deref())
            .await?;
        let bytes = response
            .bytes()
            .await
            .map_err(|e| self.transport_error(model, &e))?;
        let value: Value = serde_json::from_slice(&bytes).map_err(|e| {
            self.error(
                model,
                ErrorClass::Model,
                format!("malformed response body: {e}"),
            )
        })?;
        self.parse_completion(model, &value)
    }

    fn parse_completion(&self, model: &str, value: &Value) -> Result<ChatResponse> {
        let malformed = |what: &str| {
            self.error(
                model,
                ErrorClass::Model,
                format!("malformed response body: {what}"),
            )
        };
        if let Some(error) = value.get("error").filter(|e| !e.is_null()) {
            return Err(self.error(model, ErrorClass::Server, error_text(error)));
        }
        let choice = value
            .get("choices")
            .and_then(Value::as_array)
            .and_then(|c| c.first())
            .ok_or_else(|| malformed("no `choices[0]`"))?;
        let message = choice
            .get("message")
            .and_then(Value::as_object)
            .ok_or_else(|| malformed("no `choices[0].message` object"))?;
        let content = match message.get("content") {
            None | Some(Value::Null) => String::new(),
            Some(Value::String(s)) => s.clone(),
            Some(_) => return Err(malformed("`choices[0].message.content` is not a string")),
        };
        let mut tool_calls = Vec::new();
        if let Some(calls) = message.get("tool_calls").filter(|c| !c.is_null()) {
            let calls = calls
                .as_array()
                .ok_or_else(|| malformed("`tool_calls` is not an array"))?;
            for (i, call) in calls.iter().enumerate() {
                let function = call.get("function");
                let name = function
                    .and_then(|f| f.get("name"))
                    .and_then(Value::as_str)
                    .ok_or_else(|| {
                        malformed(&format!("`tool_calls[{i}].function.name` missing"))
                    })?;
                let id = call
                    .get("id")
                    .and_then(Value::as_str)
                    .map_or_else(|| format!("call_{i}"), str::to_owned);
                let arguments = match function.and_then(|f| f.get("arguments")) {
                    Some(Value::String(text)) => parse_arguments(text)
                        .map_err(|e| malformed(&format!("`tool_calls[{i}]` arguments: {e}")))?,
                    Some(Value::Object(map)) => Value::Object(map.clone()),
                    None | Some(Value::Null) => Value::Object(Map::new()),
                    Some(_) => {
                        return Err(malformed(&format!(
                            "`tool_calls[{i}].function.arguments` is not a string"
                        )));
                    }
                };
                tool_calls.push(ToolCall {
                    id,
                    name: name.to_owned(),
                    arguments,
                });
            }
        }
        let finish_reason = finish_reason(
            choice.get("finish_reason").and_then(Value::as_str),
            !tool_calls.is_empty(),
        );
        let mut usage = parse_usage(value.get("usage"));
        self.price(model, &mut usage);
        Ok(ChatResponse {
            message: Message {
                tool_calls,
                ..Message::assistant(content)
            },
            usage,
            finish_reason,
            model: value
                .get("model")
                .and_then(Value::as_str)
                .unwrap_or(model)
                .to_owned(),
        })
    }

    async fn stream_once(
        &self,
        request: &ChatRequest,
        model: &str,
        sink: &dyn TokenSink,
    ) -> Result<ChatResponse> {
        let limit = self.config.request_timeout;
        let body = self.body(request, model, true);
        let mut response = tokio::time::timeout(
            limit,
            self.send(model, &body, request.idempotency_key.as_deref()),
        )
        .await
        .map_err(|_| self.timeout_error(model, "no response"))??;
        if is_json(response.headers()) {
            // Some servers ignore `stream: true` and answer whole: pass the text on as one chunk.
            let bytes = tokio::time::timeout(limit, response.bytes())
                .await
                .map_err(|_| self.timeout_error(model, "no complete response"))?
                .map_err(|e| self.transport_error(model, &e))?;
            let value: Value = serde_json::from_slice(&bytes).map_err(|e| {
                self.error(
                    model,
                    ErrorClass::Model,
                    format!("malformed response body: {e}"),
                )
            })?;
            let reply = self.parse_completion(model, &value)?;
            if !reply.message.content.is_empty() {
                sink.token(&reply.message.content);
            }
            return Ok(reply);
        }
        let mut parser = SseParser::default();
        let mut state = StreamState::default();
        let mut done = false;
        while !done {
            let chunk = tokio::time::timeout(limit, response.chunk())
                .await
                .map_err(|_| self.timeout_error(model, "the stream stalled: no data"))?
                .map_err(|e| self.transport_error(model, &e))?;
            let events = match chunk {
                Some(bytes) => parser.push(&bytes),
                None => {
                    done = true;
                    parser.finish()
                }
            };
            for data in events {
                let data = data.map_err(|e| self.error(model, ErrorClass::Model, e))?;
                if data.trim() == "[DONE]" {
                    state.saw_done = true;
                    done = true;
                    break;
                }
                state
                    .apply(&data, sink)
                    .map_err(|(class, message)| self.error(model, class, message))?;
            }
        }
        if !state.saw_done && state.finish_reason.is_none() {
            return Err(self.error(
                model,
                ErrorClass::Connection,
                "the stream ended before the model finished",
            ));
        }
        let mut response = state
            .finish(model)
            .map_err(|message| self.error(model, ErrorClass::Model, message))?;
        self.price(model, &mut response.usage);
        Ok(response)
    }
}

#[async_trait]
impl ChatModel for OpenAiModel {
    fn name(&self) -> &str {
        &self.config.provider_name
    }

    async fn chat(&self, request: ChatRequest) -> Result<ChatResponse> {
        let model = self.model_name(&request)?;
        tokio::time::timeout(
            self.config.request_timeout,
            self.chat_once(&request, &model),
        )
        .await
        .map_err(|_| self.timeout_error(&model, "no complete response"))?
    }

    async fn chat_stream(
        &self,
        request: ChatRequest,
        sink: &dyn TokenSink,
    ) -> Result<ChatResponse> {
        let model = self.model_name(&request)?;
        self.stream_once(&request, &model, sink).await
    }
}

// ---------------------------------------------------------------------------------------------
// Wire format helpers.

fn wire_message(message: &Message) -> Value {
    let mut out = Map::new();
    out.insert("role".into(), json!(message.role.as_str()));
    match message.role {
        Role::Assistant if !message.tool_calls.is_empty() => {
            out.insert(
                "content".into(),
                if message.content.is_empty() {
                    Value::Null
                } else {
                    json!(message.content)
                },
            );
            let calls: Vec<Value> = message
                .tool_calls
                .iter()
                .map(|c| {
                    json!({"id": c.id, "type": "function", "function": {
                        "name": c.name, "arguments": c.arguments.to_string()}})
                })
                .collect();
            out.insert("tool_calls".into(), Value::Array(calls));
        }
        Role::Tool => {
            out.insert("content".into(), json!(message.content));
            if let Some(id) = &message.tool_call_id {
                out.insert("tool_call_id".into(), json!(id));
            }
        }
        _ => {
            out.insert("content".into(), json!(message.content));
        }
    }
    Value::Object(out)
}

fn is_json(headers: &HeaderMap) -> bool {
    headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.trim_start()
                .to_ascii_lowercase()
                .starts_with("application/json")
        })
}

fn parse_arguments(text: &str) -> std::result::Result<Value, String> {
    if text.trim().is_empty() {
        return Ok(Value::Object(Map::new()));
    }
    match serde_json::from_str::<Value>(text) {
        Ok(value @ Value::Object(_)) => Ok(value),
        Ok(_) => Err("not a JSON object".to_owned()),
        Err(e) => Err(format!("not JSON ({e})")),
    }
}

fn finish_reason(reason: Option<&str>, has_tool_calls: bool) -> FinishReason {
    match reason {
        Some("stop") => FinishReason::Stop,
        Some("length") => FinishReason::Length,
        Some("tool_calls" | "function_call") => FinishReason::ToolCalls,
        Some("content_filter") => FinishReason::ContentFilter,
        Some(other) => FinishReason::Other(other.to_owned()),
        None if has_tool_calls => FinishReason::ToolCalls,
        None => FinishReason::Stop,
    }
}

fn parse_usage(value: Option<&Value>) -> Usage {
    let field = |name: &str| {
        value
            .and_then(|u| u.get(name))
            .and_then(Value::as_u64)
            .unwrap_or(0)
    };
    let prompt_tokens = field("prompt_tokens");
    let completion_tokens = field("completion_tokens");
    let total = value
        .and_then(|u| u.get("total_tokens"))
        .and_then(Value::as_u64)
        .unwrap_or(prompt_tokens.saturating_add(completion_tokens));
    Usage {
        prompt_tokens,
        completion_tokens,
        total_tokens: total,
        cost: 0.0,
    }
}

fn error_text(error: &Value) -> String {
    match error {
        Value::String(s) => s.clone(),
        other => other
            .get("message")
            .and_then(Value::as_str)
            .map_or_else(|| other.to_string(), str::to_owned),
    }
}

/// The useful part of an error body: `error.message` when it is OpenAI-shaped JSON, else the
/// (shortened) text.
fn error_detail(text: &str) -> String {
    if let Ok(value) = serde_json::from_str::<Value>(text)
        && let Some(error) = value.get("error")
    {
        return error_text(error);
    }
    let trimmed = text.trim();
    if trimmed.is_empty() {
        return "(empty body)".to_owned();
    }
    let mut short: String = trimmed.chars().take(500).collect();
    if short.len() < trimmed.len() {
        short.push('…');
    }
    short
}

/// `retry-after-ms` (milliseconds), else `Retry-After` (seconds, possibly fractional, or an
/// HTTP-date: the time left until then, zero when it has passed).
fn retry_after_ms(headers: &HeaderMap) -> Option<u64> {
    let number = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<f64>().ok())
            .filter(|n| n.is_finite() && *n >= 0.0)
    };
    if let Some(ms) = number("retry-after-ms") {
        return Some(ms.ceil() as u64);
    }
    if let Some(s) = number("retry-after") {
        return Some((s * 1000.0).ceil() as u64);
    }
    let date = headers
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(http_date_ms)?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .ok()?;
    Some(date.saturating_sub(u64::try_from(now.as_millis()).unwrap_or(u64::MAX)))
}

/// An IMF-fixdate (`Sun, 06 Nov 1994 08:49:37 GMT`, the HTTP-date form senders must use) as
/// milliseconds since the Unix epoch.
fn http_date_ms(text: &str) -> Option<u64> {
    let (_weekday, rest) = text.trim().split_once(", ")?;
    let fields: Vec<&str> = rest.split(' ').collect();
    let [day, month, year, time, "GMT"] = fields[..] else {
        return None;
    };
    let day: u64 = day.parse().ok()?;
    let month = 1 + [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ]
    .iter()
    .position(|m| *m == month)? as u64;
    let year: u64 = year.parse().ok()?;
    let hms: Vec<u64> = time
        .split(':')
        .map(|p| p.parse().ok())
        .collect::<Option<_>>()?;
    let [hour, minute, second] = hms[..] else {
        return None;
    };
    if !(1..=31).contains(&day) || year < 1970 || hour > 23 || minute > 59 || second > 60 {
        return None;
    }
    let days = u64::try_from(crate::time::days_from_civil(
        i64::try_from(year).ok()?,
        u32::try_from(month).ok()?,
        u32::try_from(day).ok()?,
    ))
    .ok()?;
    Some((days * 86_400 + hour * 3600 + minute * 60 + second) * 1000)
}

// ---------------------------------------------------------------------------------------------
// Server-sent events.

/// Splits a byte stream into SSE events and yields each event's `data` (lines joined by `\n`).
#[derive(Debug, Default)]
struct SseParser {
    buffer: Vec<u8>,
    data: Vec<String>,
}

impl SseParser {
    fn push(&mut self, bytes: &[u8]) -> Vec<std::result::Result<String, String>> {
        self.buffer.extend_from_slice(bytes);
        let mut out = Vec::new();
        let mut start = 0;
        while let Some(pos) = self.buffer[start..].iter().position(|b| *b == b'\n') {
            let end = start + pos;
            let mut line = &self.buffer[start..end];
            if line.last() == Some(&b'\r') {
                line = &line[..line.len() - 1];
            }
            match std::str::from_utf8(line) {
                Ok(text) => {
                    let text = text.to_owned();
                    if let Some(event) = self.line(&text) {
                        out.push(Ok(event));
                    }
                }
                Err(_) => out.push(Err("the stream is not valid UTF-8".to_owned())),
            }
            start = end + 1;
        }
        self.buffer.drain(..start);
        out
    }

    fn finish(&mut self) -> Vec<std::result::Result<String, String>> {
        let mut out = Vec::new();
        if !self.buffer.is_empty() {
            let rest = std::mem::take(&mut self.buffer);
            match String::from_utf8(rest) {
                Ok(text) => {
                    if let Some(event) = self.line(text.trim_end_matches('\r')) {
                        out.push(Ok(event));
                    }
                }
                Err(_) => out.push(Err("the stream is not valid UTF-8".to_owned())),
            }
        }
        if let Some(event) = self.line("") {
            out.push(Ok(event));
        }
        out
    }

    fn line(&mut self, line: &str) -> Option<String> {
        if line.is_empty() {
            if self.data.is_empty() {
                return None;
            }
            let event = self.data.join("\n");
            self.data.clear();
            return Some(event);
        }
        if let Some(rest) = line.strip_prefix("data:") {
            self.data
                .push(rest.strip_prefix(' ').unwrap_or(rest).to_owned());
        }
        // Comments (`:`) and other fields (`event:`, `id:`, `retry:`) carry nothing we use.
        None
    }
}

#[derive(Debug, Default)]
struct PartialCall {
    id: Option<String>,
    name: String,
    arguments: String,
}

/// What a stream has said so far.
#[derive(Debug, Default)]
struct StreamState {
    content: String,
    calls: BTreeMap<u64, PartialCall>,
    usage: Option<Usage>,
    finish_reason: Option<String>,
    model: Option<String>,
    saw_done: bool,
}

impl StreamState {
    fn apply(
        &mut self,
        data: &str,
        sink: &dyn TokenSink,
    ) -> std::result::Result<(), (ErrorClass, String)> {
        let chunk: Value = serde_json::from_str(data).map_err(|e| {
            (
                ErrorClass::Model,
                format!("malformed stream chunk ({e}): {}", shorten(data)),
            )
        })?;
        if let Some(error) = chunk.get("error").filter(|e| !e.is_null()) {
            return Err((ErrorClass::Server, error_text(error)));
        }
        if let Some(model) = chunk.get("model").and_then(Value::as_str) {
            self.model = Some(model.to_owned());
        }
        if let Some(usage) = chunk.get("usage").filter(|u| u.is_object()) {
            self.usage = Some(parse_usage(Some(usage)));
        }
        let Some(choice) = chunk
            .get("choices")
            .and_then(Value::as_array)
            .and_then(|c| c.first())
        else {
            return Ok(());
        };
        if let Some(delta) = choice.get("delta") {
            if let Some(text) = delta.get("content").and_then(Value::as_str)
                && !text.is_empty()
            {
                sink.token(text);
                self.content.push_str(text);
            }
            if let Some(calls) = delta.get("tool_calls").and_then(Value::as_array) {
                for (position, call) in calls.iter().enumerate() {
                    let index = call
                        .get("index")
                        .and_then(Value::as_u64)
                        .unwrap_or(position as u64);
                    let entry = self.calls.entry(index).or_default();
                    if let Some(id) = call.get("id").and_then(Value::as_str)
                        && !id.is_empty()
                    {
                        entry.id = Some(id.to_owned());
                    }
                    if let Some(function) = call.get("function") {
                        if let Some(name) = function.get("name").and_then(Value::as_str)
                            && !name.is_empty()
                        {
                            entry.name = name.to_owned();
                        }
                        if let Some(fragment) = function.get("arguments").and_then(Value::as_str) {
                            entry.arguments.push_str(fragment);
                        }
                    }
                }
            }
        }
        if let Some(reason) = choice.get("finish_reason").and_then(Value::as_str) {
            self.finish_reason = Some(reason.to_owned());
        }
        Ok(())
    }

    fn finish(self, model: &str) -> std::result::Result<ChatResponse, String> {
        let mut tool_calls = Vec::with_capacity(self.calls.len());
        for (index, call) in self.calls {
            if call.name.is_empty() {
                return Err(format!("streamed tool call {index} has no function name"));
            }
            let arguments = parse_arguments(&call.arguments).map_err(|e| {
                format!(
                    "streamed tool call {index} (`{}`) arguments: {e}",
                    call.name
                )
            })?;
            tool_calls.push(ToolCall {
                id: call.id.unwrap_or_else(|| format!("call_{index}")),
                name: call.name,
                arguments,
            });
        }
        let finish_reason = finish_reason(self.finish_reason.as_deref(), !tool_calls.is_empty());
        Ok(ChatResponse {
            message: Message {
                tool_calls,
                ..Message::assistant(self.content)
            },
            usage: self.usage.unwrap_or_default(),
            finish_reason,
            model: self.model.unwrap_or_else(|| model.to_owned()),
        })
    }
}

fn shorten(text: &str) -> String {
    let mut short: String = text.chars().take(200).collect();
    if short.len() < text.len() {
        short.push('…');
    }
    short
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sse_events_split_across_chunks_and_lines() {
        let mut parser = SseParser::default();
        let mut events = parser.push(b": keep-alive\n\ndata: {\"a\"");
        assert!(events.is_empty());
        events.extend(parser.push(b":1}\r\n\r\nevent: x\ndata: one\ndata: two\n\ndata: [DONE]"));
        events.extend(parser.finish());
        let events: Vec<String> = events.into_iter().map(|e| e.unwrap()).collect();
        assert_eq!(events, vec!["{\"a\":1}", "one\ntwo", "[DONE]"]);
    }

    #[test]
    fn retry_after_prefers_milliseconds_header() {
        let mut headers = HeaderMap::new();
        headers.insert("retry-after", HeaderValue::from_static("2"));
        assert_eq!(retry_after_ms(&headers), Some(2000));
        headers.insert("retry-after-ms", HeaderValue::from_static("150.5"));
        assert_eq!(retry_after_ms(&headers), Some(151));
        assert_eq!(retry_after_ms(&HeaderMap::new()), None);
    }

    #[test]
    fn retry_after_as_an_http_date() {
        assert_eq!(
            http_date_ms("Sun, 06 Nov 1994 08:49:37 GMT"),
            Some(784_111_777_000)
        );
        assert_eq!(
            http_date_ms("Tue, 29 Feb 2000 00:00:00 GMT"),
            Some(951_782_400_000)
        );
        for bad in [
            "Sun, 06 Nov 1994 08:49:37 CET",
            "Sun, 06 Foo 1994 08:49:37 GMT",
            "Sunday, 06-Nov-94 08:49:37 GMT",
            "Sun, 06 Nov 1994 08:49 GMT",
            "Sun, 32 Nov 1994 08:49:37 GMT",
            "soon",
        ] {
            assert_eq!(http_date_ms(bad), None, "{bad}");
        }
        // A date in the past: retry at once.
        let mut headers = HeaderMap::new();
        headers.insert(
            "retry-after",
            HeaderValue::from_static("Sun, 06 Nov 1994 08:49:37 GMT"),
        );
        assert_eq!(retry_after_ms(&headers), Some(0));
    }

    #[test]
    fn debug_output_never_shows_the_key() {
        let model = OpenAiModel::new(
            OpenAiConfig::default()
                .api_key("sk-secret-123")
                .base_url("http://127.0.0.1:9/v1"),
        )
        .unwrap();
        let text = format!("{model:?}");
        assert!(!text.contains("sk-secret-123"), "{text}");
        assert!(text.contains("authenticated: true"), "{text}");
    }
}
