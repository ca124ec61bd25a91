//! A deterministic chat model read from a JSON script, for running workflows offline.
//!
//! The script is an ordered list of rules, each matching the LAST message of the request (its
//! role, a substring, a regex, or "a tool result of tool X") and giving the reply (content and/or
//! tool calls, an error, or a hang), plus a `default` reply. Replies stream in chunks of
//! `chunk_size` characters and report a fixed usage. The full format is documented in
//! `docs/scripted-model.md`.
//!
//! ```
//! use chatter_core::providers::ScriptedModel;
//! use chatter_core::{ChatModel, ChatRequest, Message};
//! use serde_json::json;
//!
//! let model = ScriptedModel::from_value(json!({
//!     "rules": [{"match": {"contains": "weather"},
//!                "reply": {"tool_calls": [{"name": "get_weather", "arguments": {"city": "Oslo"}}]}}],
//!     "default": {"content": "Hello!"},
//!     "usage": {"prompt_tokens": 10, "completion_tokens": 5}
//! }))?;
//! let request = ChatRequest { messages: vec![Message::user("hi")].into(), ..ChatRequest::default() };
//! let rt = tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap();
//! let reply = rt.block_on(model.chat(request))?;
//! assert_eq!(reply.message.content, "Hello!");
//! assert_eq!(reply.usage.total_tokens, 15);
//! # Ok::<(), chatter_core::Error>(())
//! ```

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use regex::Regex;
use serde::Deserialize;
use serde_json::{Map, Value};

use crate::error::{Error, ErrorClass, Result};
use crate::model::{
    ChatModel, ChatRequest, ChatResponse, FinishReason, Message, Role, TokenSink, ToolCall, Usage,
};

/// The provider name a scripted model reports.
pub const SCRIPTED_PROVIDER: &str = "scripted";

/// Default number of characters per streamed chunk.
pub const DEFAULT_CHUNK_SIZE: usize = 8;

// ---------------------------------------------------------------------------------------------
// The file format (deserialised with unknown keys refused, so typos are reported with their path).

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ScriptFile {
    #[serde(default)]
    rules: Vec<RuleFile>,
    #[serde(default)]
    default: Option<ReplyFile>,
    #[serde(default)]
    usage: Option<UsageFile>,
    #[serde(default)]
    chunk_size: Option<usize>,
    #[serde(default)]
    delay_ms: u64,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleFile {
    #[serde(rename = "match", default)]
    matcher: MatchFile,
    reply: ReplyFile,
    #[serde(default)]
    usage: Option<UsageFile>,
    #[serde(default)]
    times: Option<u32>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct MatchFile {
    #[serde(default)]
    role: Option<Role>,
    #[serde(default)]
    contains: Option<String>,
    #[serde(default)]
    regex: Option<String>,
    #[serde(default)]
    tool_result_for: Option<String>,
    #[serde(default)]
    model: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ReplyFile {
    #[serde(default)]
    content: String,
    #[serde(default)]
    tool_calls: Vec<ToolCallFile>,
    #[serde(default)]
    error: Option<ErrorFile>,
    #[serde(default)]
    hang: bool,
    #[serde(default)]
    finish_reason: Option<FinishReason>,
    #[serde(default)]
    delay_ms: Option<u64>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct ToolCallFile {
    #[serde(default)]
    id: Option<String>,
    name: String,
    #[serde(default = "empty_object")]
    arguments: Value,
}

fn empty_object() -> Value {
    Value::Object(Map::new())
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "snake_case")]
enum ClassFile {
    Timeout,
    RateLimit,
    Server,
    Connection,
    Tool,
    Model,
    BadRequest,
    Auth,
    Internal,
}

impl From<ClassFile> for ErrorClass {
    fn from(class: ClassFile) -> ErrorClass {
        match class {
            ClassFile::Timeout => ErrorClass::Timeout,
            ClassFile::RateLimit => ErrorClass::RateLimit,
            ClassFile::Server => ErrorClass::Server,
            ClassFile::Connection => ErrorClass::Connection,
            ClassFile::Tool => ErrorClass::Tool,
            ClassFile::Model => ErrorClass::Model,
            ClassFile::BadRequest => ErrorClass::BadRequest,
            ClassFile::Auth => ErrorClass::Auth,
            ClassFile::Internal => ErrorClass::Internal,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ErrorFile {
    class: ClassFile,
    #[serde(default)]
    message: Option<String>,
    #[serde(default)]
    retry_after_ms: Option<u64>,
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
struct UsageFile {
    #[serde(default)]
    prompt_tokens: u64,
    #[serde(default)]
    completion_tokens: u64,
    #[serde(default)]
    total_tokens: Option<u64>,
    #[serde(default)]
    cost: f64,
}

impl From<UsageFile> for Usage {
    fn from(u: UsageFile) -> Usage {
        Usage {
            prompt_tokens: u.prompt_tokens,
            completion_tokens: u.completion_tokens,
            total_tokens: u
                .total_tokens
                .unwrap_or(u.prompt_tokens.saturating_add(u.completion_tokens)),
            cost: u.cost,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The compiled script.

#[derive(Debug)]
struct Matcher {
    role: Option<Role>,
    contains: Option<String>,
    regex: Option<Regex>,
    tool_result_for: Option<String>,
    model: Option<String>,
}

#[derive(Debug, Clone)]
struct ScriptedError {
    class: ErrorClass,
    message: String,
    retry_after_ms: Option<u64>,
}

#[derive(Debug, Clone)]
struct Reply {
    content: String,
    tool_calls: Vec<ToolCallFile>,
    error: Option<ScriptedError>,
    hang: bool,
    finish_reason: Option<FinishReason>,
    delay_ms: Option<u64>,
}

#[derive(Debug)]
struct Rule {
    matcher: Matcher,
    reply: Reply,
    usage: Option<Usage>,
    times: Option<u32>,
}

/// A deterministic chat model driven by a JSON script (see the [module docs](self) and
/// `docs/scripted-model.md`).
///
/// It records every request it receives, so tests can check what a node sent
/// ([`ScriptedModel::requests`]).
#[derive(Debug)]
pub struct ScriptedModel {
    rules: Vec<Rule>,
    default: Option<Reply>,
    usage: Usage,
    chunk_size: usize,
    delay_ms: u64,
    /// How many times each rule has answered (for `times`).
    uses: Mutex<Vec<u32>>,
    requests: Mutex<Vec<ChatRequest>>,
    /// Calls answered or refused so far.
    calls: AtomicUsize,
    /// Whether requests are kept for [`ScriptedModel::requests`].
    recording: AtomicBool,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding these locks cannot leave the data inconsistent (plain pushes and
    // increments), so a poisoned lock is still usable.
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn config_error(source: &str, path: &str, message: impl std::fmt::Display) -> Error {
    Error::Config {
        message: format!("scripted model {source}: at {path}: {message}"),
    }
}

fn json_path(path: &serde_path_to_error::Path) -> String {
    let text = path.to_string();
    if text == "." || text.is_empty() {
        "$".to_owned()
    } else if text.starts_with('[') {
        format!("${text}")
    } else {
        format!("$.{text}")
    }
}

impl ScriptedModel {
    /// Reads a script from a JSON file.
    ///
    /// # Errors
    ///
    /// [`Error::Io`] when the file cannot be read; [`Error::Config`] naming the JSON path of the
    /// problem when it is not a valid script (bad JSON, unknown key, wrong type, bad regex, ...).
    pub fn from_file(path: impl AsRef<Path>) -> Result<ScriptedModel> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|e| Error::Io {
            path: path.display().to_string(),
            message: e.to_string(),
        })?;
        Self::parse_str(&text, &format!("file {}", path.display()))
    }

    /// Reads a script from JSON text.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] naming the JSON path of the problem when it is not a valid script.
    pub fn from_json(text: &str) -> Result<ScriptedModel> {
        Self::parse_str(text, "script")
    }

    /// Reads a script from a JSON value.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] naming the JSON path of the problem when it is not a valid script.
    pub fn from_value(value: Value) -> Result<ScriptedModel> {
        Self::from_value_in(value, "script")
    }

    fn from_value_in(value: Value, source: &str) -> Result<ScriptedModel> {
        if !value.is_object() {
            return Err(config_error(
                source,
                "$",
                "expected a JSON object with `rules` and/or `default`",
            ));
        }
        let file: ScriptFile = serde_path_to_error::deserialize(value)
            .map_err(|e| config_error(source, &json_path(e.path()), e.inner()))?;
        Self::compile(file, source)
    }

    /// A model that always answers `content` (no rules), with zero usage.
    pub fn always(content: impl Into<String>) -> ScriptedModel {
        ScriptedModel {
            rules: Vec::new(),
            default: Some(Reply {
                content: content.into(),
                tool_calls: Vec::new(),
                error: None,
                hang: false,
                finish_reason: None,
                delay_ms: None,
            }),
            usage: Usage::default(),
            chunk_size: DEFAULT_CHUNK_SIZE,
            delay_ms: 0,
            uses: Mutex::new(Vec::new()),
            requests: Mutex::new(Vec::new()),
            calls: AtomicUsize::new(0),
            recording: AtomicBool::new(true),
        }
    }

    fn parse_str(text: &str, source: &str) -> Result<ScriptedModel> {
        let value: Value = serde_json::from_str(text).map_err(|e| {
            config_error(
                source,
                "$",
                format!(
                    "invalid JSON at line {}, column {}: {e}",
                    e.line(),
                    e.column()
                ),
            )
        })?;
        Self::from_value_in(value, source)
    }

    fn compile(file: ScriptFile, source: &str) -> Result<ScriptedModel> {
        let chunk_size = file.chunk_size.unwrap_or(DEFAULT_CHUNK_SIZE);
        if chunk_size == 0 {
            return Err(config_error(source, "$.chunk_size", "must be at least 1"));
        }
        let mut rules = Vec::with_capacity(file.rules.len());
        for (i, rule) in file.rules.into_iter().enumerate() {
            let at = format!("$.rules[{i}]");
            let regex = match &rule.matcher.regex {
                Some(pattern) => Some(
                    Regex::new(pattern)
                        .map_err(|e| config_error(source, &format!("{at}.match.regex"), e))?,
                ),
                None => None,
            };
            if rule.times == Some(0) {
                return Err(config_error(
                    source,
                    &format!("{at}.times"),
                    "must be at least 1",
                ));
            }
            rules.push(Rule {
                matcher: Matcher {
                    role: rule.matcher.role,
                    contains: rule.matcher.contains,
                    regex,
                    tool_result_for: rule.matcher.tool_result_for,
                    model: rule.matcher.model,
                },
                reply: compile_reply(rule.reply, source, &format!("{at}.reply"))?,
                usage: rule.usage.map(Usage::from),
                times: rule.times,
            });
        }
        let default = match file.default {
            Some(reply) => Some(compile_reply(reply, source, "$.default")?),
            None => None,
        };
        Ok(ScriptedModel {
            uses: Mutex::new(vec![0; rules.len()]),
            rules,
            default,
            usage: file.usage.map(Usage::from).unwrap_or_default(),
            chunk_size,
            delay_ms: file.delay_ms,
            requests: Mutex::new(Vec::new()),
            calls: AtomicUsize::new(0),
            recording: AtomicBool::new(true),
        })
    }

    /// Every request received so far, in order.
    pub fn requests(&self) -> Vec<ChatRequest> {
        lock(&self.requests).clone()
    }

    /// How many calls the model has answered (or refused) so far.
    pub fn call_count(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }

    /// Switches the request log on (the default) or off. With it off,
    /// [`ScriptedModel::requests`] stays empty and memory stays flat however many calls are
    /// made (benchmarks, long-running hosts).
    pub fn record_requests(&self, on: bool) {
        self.recording.store(on, Ordering::Relaxed);
    }

    /// Picks the reply for a request: the first rule that matches and is not used up, else the
    /// default. Records the request.
    fn select(&self, request: &ChatRequest) -> Result<(Reply, Usage)> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        if self.recording.load(Ordering::Relaxed) {
            lock(&self.requests).push(request.clone());
        }
        let last = request.messages.last();
        let mut uses = lock(&self.uses);
        for (i, rule) in self.rules.iter().enumerate() {
            let used = uses.get(i).copied().unwrap_or(0);
            if rule.times.is_some_and(|times| used >= times) {
                continue;
            }
            if rule.matcher.matches(request, last) {
                if let Some(slot) = uses.get_mut(i) {
                    *slot = used.saturating_add(1);
                }
                return Ok((rule.reply.clone(), rule.usage.unwrap_or(self.usage)));
            }
        }
        match &self.default {
            Some(reply) => Ok((reply.clone(), self.usage)),
            None => Err(Error::Model {
                model: SCRIPTED_PROVIDER.to_owned(),
                class: ErrorClass::Model,
                message: match last {
                    Some(m) => format!(
                        "no rule matches the last message ({} message {:?}) and the script has no default",
                        m.role.as_str(),
                        m.content
                    ),
                    None => "no rule matches an empty conversation and the script has no default"
                        .to_owned(),
                },
                retry_after_ms: None,
            }),
        }
    }

    async fn answer(
        &self,
        request: ChatRequest,
        sink: Option<&dyn TokenSink>,
    ) -> Result<ChatResponse> {
        let (reply, usage) = self.select(&request)?;
        let delay = Duration::from_millis(reply.delay_ms.unwrap_or(self.delay_ms));
        match sink {
            Some(sink) if !reply.content.is_empty() => {
                let chars: Vec<char> = reply.content.chars().collect();
                for chunk in chars.chunks(self.chunk_size) {
                    pause(delay).await;
                    sink.token(&chunk.iter().collect::<String>());
                }
            }
            _ => pause(delay).await,
        }
        if reply.hang {
            std::future::pending::<()>().await;
        }
        if let Some(error) = reply.error {
            return Err(Error::Model {
                model: SCRIPTED_PROVIDER.to_owned(),
                class: error.class,
                message: error.message,
                retry_after_ms: error.retry_after_ms,
            });
        }
        // Ids continue the numbering of the conversation, so they are the same on every run and
        // unique within one conversation even when the model is shared.
        let earlier_calls: usize = request.messages.iter().map(|m| m.tool_calls.len()).sum();
        let tool_calls: Vec<ToolCall> = reply
            .tool_calls
            .iter()
            .enumerate()
            .map(|(j, call)| ToolCall {
                id: call
                    .id
                    .clone()
                    .unwrap_or_else(|| format!("call_{}", earlier_calls + j + 1)),
                name: call.name.clone(),
                arguments: call.arguments.clone(),
            })
            .collect();
        let finish_reason = reply
            .finish_reason
            .clone()
            .unwrap_or(if tool_calls.is_empty() {
                FinishReason::Stop
            } else {
                FinishReason::ToolCalls
            });
        Ok(ChatResponse {
            message: Message {
                tool_calls,
                ..Message::assistant(reply.content)
            },
            usage,
            finish_reason,
            model: request
                .model
                .unwrap_or_else(|| SCRIPTED_PROVIDER.to_owned()),
        })
    }
}

async fn pause(delay: Duration) {
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
}

fn compile_reply(reply: ReplyFile, source: &str, at: &str) -> Result<Reply> {
    for (j, call) in reply.tool_calls.iter().enumerate() {
        if call.name.trim().is_empty() {
            return Err(config_error(
                source,
                &format!("{at}.tool_calls[{j}].name"),
                "must not be empty",
            ));
        }
        if !call.arguments.is_object() {
            return Err(config_error(
                source,
                &format!("{at}.tool_calls[{j}].arguments"),
                "must be a JSON object",
            ));
        }
    }
    let error = reply.error.map(|e| {
        let class = ErrorClass::from(e.class);
        ScriptedError {
            class,
            message: e
                .message
                .unwrap_or_else(|| format!("scripted {class} error")),
            retry_after_ms: e.retry_after_ms,
        }
    });
    Ok(Reply {
        content: reply.content,
        tool_calls: reply.tool_calls,
        error,
        hang: reply.hang,
        finish_reason: reply.finish_reason,
        delay_ms: reply.delay_ms,
    })
}

impl Matcher {
    fn matches(&self, request: &ChatRequest, last: Option<&Message>) -> bool {
        if let Some(model) = &self.model
            && request.model.as_deref() != Some(model.as_str())
        {
            return false;
        }
        let needs_message = self.role.is_some()
            || self.contains.is_some()
            || self.regex.is_some()
            || self.tool_result_for.is_some();
        let Some(last) = last else {
            return !needs_message;
        };
        if self.role.is_some_and(|role| role != last.role) {
            return false;
        }
        if let Some(needle) = &self.contains
            && !last.content.contains(needle.as_str())
        {
            return false;
        }
        if let Some(regex) = &self.regex
            && !regex.is_match(&last.content)
        {
            return false;
        }
        if let Some(tool) = &self.tool_result_for
            && !is_result_of(request, last, tool)
        {
            return false;
        }
        true
    }
}

/// Whether `last` is a tool result of the tool named `tool`: by its `name`, or (when it carries
/// none) by the assistant tool call its `tool_call_id` answers.
fn is_result_of(request: &ChatRequest, last: &Message, tool: &str) -> bool {
    if last.role != Role::Tool {
        return false;
    }
    if let Some(name) = &last.name {
        return name == tool;
    }
    let Some(call_id) = &last.tool_call_id else {
        return false;
    };
    request
        .messages
        .iter()
        .flat_map(|m| m.tool_calls.iter())
        .any(|call| &call.id == call_id && call.name == tool)
}

#[async_trait]
impl ChatModel for ScriptedModel {
    fn name(&self) -> &str {
        SCRIPTED_PROVIDER
    }

    async fn chat(&self, request: ChatRequest) -> Result<ChatResponse> {
        self.answer(request, None).await
    }

    async fn chat_stream(
        &self,
        request: ChatRequest,
        sink: &dyn TokenSink,
    ) -> Result<ChatResponse> {
        self.answer(request, Some(sink)).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn paths_are_reported_for_nested_problems() {
        let err = ScriptedModel::from_value(
            json!({"rules": [{"reply": {}}, {"match": {"regex": "("}, "reply": {}}]}),
        )
        .unwrap_err();
        let text = err.to_string();
        assert!(text.contains("at $.rules[1].match.regex:"), "{text}");

        let err =
            ScriptedModel::from_value(json!({"rules": [{"mach": {}, "reply": {}}]})).unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("at $.rules[0].mach: unknown field `mach`"),
            "{text}"
        );

        let err = ScriptedModel::from_value(json!([])).unwrap_err();
        assert!(err.to_string().contains("at $:"), "{err}");
    }
}
