//! Chat models: messages, requests, responses, usage, and the [`ChatModel`] trait.
//!
//! Providers (`openai`, `scripted`, a Python object, ...) implement [`ChatModel`]; the engine picks
//! one per `llm` node from the [`ModelRegistry`] by the node's `provider`, and passes the node's
//! `model` in the request.

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::{Error, Result};

/// Who wrote a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum Role {
    /// Instructions to the model.
    System,
    /// The person.
    User,
    /// The model.
    Assistant,
    /// A tool result.
    Tool,
}

impl Role {
    /// The lowercase name (`user`).
    pub fn as_str(self) -> &'static str {
        match self {
            Role::System => "system",
            Role::User => "user",
            Role::Assistant => "assistant",
            Role::Tool => "tool",
        }
    }
}

/// A tool call requested by the model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ToolCall {
    /// Call id, echoed by the tool result message.
    pub id: String,
    /// Tool name.
    pub name: String,
    /// Arguments (a JSON object).
    pub arguments: Value,
}

/// One chat message.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Message {
    /// Author.
    pub role: Role,
    /// Text content.
    pub content: String,
    /// Tool calls of an assistant message.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tool_calls: Vec<ToolCall>,
    /// For a tool result: the call it answers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_call_id: Option<String>,
    /// For a tool result: the tool's name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

impl Message {
    /// A message with a role and text.
    pub fn new(role: Role, content: impl Into<String>) -> Message {
        Message {
            role,
            content: content.into(),
            tool_calls: Vec::new(),
            tool_call_id: None,
            name: None,
        }
    }
    /// A system message.
    pub fn system(content: impl Into<String>) -> Message {
        Message::new(Role::System, content)
    }
    /// A user message.
    pub fn user(content: impl Into<String>) -> Message {
        Message::new(Role::User, content)
    }
    /// An assistant message.
    pub fn assistant(content: impl Into<String>) -> Message {
        Message::new(Role::Assistant, content)
    }
    /// A tool result answering `call_id`.
    pub fn tool_result(
        call_id: impl Into<String>,
        tool: impl Into<String>,
        content: impl Into<String>,
    ) -> Message {
        Message {
            tool_call_id: Some(call_id.into()),
            name: Some(tool.into()),
            ..Message::new(Role::Tool, content)
        }
    }
}

/// Tokens and cost of one or more model calls.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct Usage {
    /// Input tokens.
    pub prompt_tokens: u64,
    /// Output tokens.
    pub completion_tokens: u64,
    /// Input plus output tokens.
    pub total_tokens: u64,
    /// Cost in US dollars.
    pub cost: f64,
}

impl Usage {
    /// Adds another usage to this one.
    pub fn add(&mut self, other: &Usage) {
        self.prompt_tokens += other.prompt_tokens;
        self.completion_tokens += other.completion_tokens;
        self.total_tokens += other.total_tokens;
        self.cost += other.cost;
    }
}

/// Why the model stopped.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum FinishReason {
    /// A natural end.
    Stop,
    /// `max_tokens` reached.
    Length,
    /// It wants tools called.
    ToolCalls,
    /// Filtered by the provider.
    ContentFilter,
    /// Something else the provider named.
    Other(String),
}

/// A tool as offered to a model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ToolSpec {
    /// Name the model calls it by.
    pub name: String,
    /// What it does.
    pub description: String,
    /// JSON Schema of its arguments.
    pub parameters: Value,
}

/// How the model may use the offered tools.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum ToolChoice {
    /// The model decides.
    Auto,
    /// No tool calls.
    None,
    /// At least one tool call.
    Required,
}

impl ToolChoice {
    /// The lowercase name (`required`), as serialized.
    pub fn as_str(self) -> &'static str {
        match self {
            ToolChoice::Auto => "auto",
            ToolChoice::None => "none",
            ToolChoice::Required => "required",
        }
    }
}

/// One call to a chat model.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct ChatRequest {
    /// Model name at the provider (`gpt-4o-mini`); `None` for the provider's default.
    pub model: Option<String>,
    /// The conversation, system prompt first. Shared: an agent's `llm` node hands each call the
    /// run's history itself when it adds no system prompt or prompt of its own, rather than a
    /// copy (a model that wants to change it gets its own copy with [`Arc::make_mut`]).
    pub messages: Arc<Vec<Message>>,
    /// Sampling temperature.
    pub temperature: Option<f64>,
    /// Output token limit.
    pub max_tokens: Option<u64>,
    /// Nucleus sampling.
    pub top_p: Option<f64>,
    /// Stop sequences.
    pub stop: Vec<String>,
    /// Tools offered. Shared: an agent offers the same tools on every call, so the engine hands
    /// each request the registry's list rather than a copy (and a model may tell an unchanged
    /// list by [`Arc::ptr_eq`]).
    pub tools: Arc<[ToolSpec]>,
    /// How tools may be used.
    pub tool_choice: Option<ToolChoice>,
    /// Ask for a JSON object reply.
    pub json_mode: bool,
    /// Idempotency key of the call (`execution:node:iteration:attempt`), for providers that take one.
    pub idempotency_key: Option<String>,
}

/// A model's answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChatResponse {
    /// The assistant message (content and/or tool calls).
    pub message: Message,
    /// Tokens (and cost, when the provider or the engine priced it).
    pub usage: Usage,
    /// Why it stopped.
    pub finish_reason: FinishReason,
    /// The model that answered.
    pub model: String,
}

/// A model's answer with a report of how it was served, from [`ChatModel::chat_observed`].
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct ObservedResponse {
    /// The answer.
    pub response: ChatResponse,
    /// How the call was served (routing decision and reason, attempts, fallbacks), recorded in
    /// the node run's output; `None` from a plain provider.
    pub report: Option<serde_json::Value>,
}

impl ObservedResponse {
    /// An answer with no report.
    pub fn new(response: ChatResponse) -> ObservedResponse {
        ObservedResponse {
            response,
            report: None,
        }
    }
}

/// Receives streamed tokens.
pub trait TokenSink: Send + Sync {
    /// One chunk of text.
    fn token(&self, text: &str);
}

impl<F: Fn(&str) + Send + Sync> TokenSink for F {
    fn token(&self, text: &str) {
        self(text)
    }
}

/// A chat model provider.
#[async_trait]
pub trait ChatModel: Send + Sync {
    /// The provider's name (`openai`, `scripted`).
    fn name(&self) -> &str;

    /// One call, answered whole.
    ///
    /// # Errors
    ///
    /// [`Error::Model`] classified by [`crate::ErrorClass`] (rate limit, server, timeout, ...).
    async fn chat(&self, request: ChatRequest) -> Result<ChatResponse>;

    /// One call, streaming text to `sink` as it arrives; returns the whole answer at the end.
    /// The default calls [`ChatModel::chat`] and passes the content as one chunk.
    ///
    /// # Errors
    ///
    /// As [`ChatModel::chat`].
    async fn chat_stream(
        &self,
        request: ChatRequest,
        sink: &dyn TokenSink,
    ) -> Result<ChatResponse> {
        let response = self.chat(request).await?;
        if !response.message.content.is_empty() {
            sink.token(&response.message.content);
        }
        Ok(response)
    }

    /// One call, streamed to `sink` when given, reporting how it is served: models that route,
    /// retry or fall back (the orchestrator's) emit `model_routed`, `model_retrying` and
    /// `model_fallback` events to `events` as they happen and return a report for the node run.
    /// The default calls [`ChatModel::chat_stream`] or [`ChatModel::chat`] and reports nothing.
    ///
    /// # Errors
    ///
    /// As [`ChatModel::chat`].
    async fn chat_observed(
        &self,
        request: ChatRequest,
        sink: Option<&dyn TokenSink>,
        events: &dyn crate::event::EventSink,
    ) -> Result<ObservedResponse> {
        let _ = events;
        let response = match sink {
            Some(sink) => self.chat_stream(request, sink).await?,
            None => self.chat(request).await?,
        };
        Ok(ObservedResponse::new(response))
    }
}

/// Chat model providers by name, with a default.
#[derive(Clone, Default)]
pub struct ModelRegistry {
    providers: BTreeMap<String, Arc<dyn ChatModel>>,
    default: Option<String>,
}

impl std::fmt::Debug for ModelRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ModelRegistry")
            .field("providers", &self.providers.keys().collect::<Vec<_>>())
            .field("default", &self.default)
            .finish()
    }
}

impl ModelRegistry {
    /// An empty registry.
    pub fn new() -> ModelRegistry {
        ModelRegistry::default()
    }

    /// Registers a provider under `name`; the first one registered is the default.
    pub fn register(&mut self, name: impl Into<String>, model: Arc<dyn ChatModel>) {
        let name = name.into();
        if self.default.is_none() {
            self.default = Some(name.clone());
        }
        self.providers.insert(name, model);
    }

    /// Makes `name` the default provider.
    ///
    /// # Errors
    ///
    /// [`Error::NotFound`] when no provider has that name.
    pub fn set_default(&mut self, name: &str) -> Result<()> {
        if !self.providers.contains_key(name) {
            return Err(not_found("model provider", name));
        }
        self.default = Some(name.to_owned());
        Ok(())
    }

    /// The provider named `name`, or the default when `name` is `None`.
    ///
    /// # Errors
    ///
    /// [`Error::NotFound`] for an unknown name, or when there is no provider at all.
    pub fn get(&self, name: Option<&str>) -> Result<Arc<dyn ChatModel>> {
        let name = match name.or(self.default.as_deref()) {
            Some(n) => n,
            None => return Err(not_found("model provider", "(default)")),
        };
        self.providers
            .get(name)
            .cloned()
            .ok_or_else(|| not_found("model provider", name))
    }

    /// Names of the registered providers.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.providers.keys().map(String::as_str)
    }
}

pub(crate) fn not_found(what: &str, name: &str) -> Error {
    Error::NotFound {
        what: what.to_owned(),
        name: name.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_the_serialized_names() {
        for choice in [ToolChoice::Auto, ToolChoice::None, ToolChoice::Required] {
            assert_eq!(serde_json::to_value(choice).unwrap(), choice.as_str());
        }
        for role in [Role::System, Role::User, Role::Assistant, Role::Tool] {
            assert_eq!(serde_json::to_value(role).unwrap(), role.as_str());
        }
    }
}
