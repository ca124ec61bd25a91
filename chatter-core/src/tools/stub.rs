//! Stub tools: a JSON file mapping tool names to a fixed result, an error, or a delay, for
//! running workflows offline. Every call is recorded (name, arguments, idempotency key) so tests
//! can inspect what ran. The format is documented in `docs/stub-tools.md`.
//!
//! ```
//! use chatter_core::tools::StubTools;
//! use chatter_core::ToolRegistry;
//! use serde_json::json;
//!
//! let stubs = StubTools::from_value(json!({
//!     "get_weather": {"result": {"temp_c": 21}, "description": "Current weather"},
//!     "flaky": {"error": "service unavailable"}
//! }))?;
//! let mut registry = ToolRegistry::new();
//! stubs.register_into(&mut registry);
//! assert!(registry.contains("get_weather"));
//! # Ok::<(), chatter_core::Error>(())
//! ```

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::error::{Error, ErrorClass, Result};
use crate::tool::{Tool, ToolContext, ToolRegistry, ToolSpec};

/// One call a stub tool received.
#[derive(Debug, Clone, PartialEq)]
pub struct RecordedCall {
    /// The tool's name.
    pub tool: String,
    /// The arguments it was called with.
    pub arguments: Value,
    /// The call's idempotency key (`execution:node:iteration:attempt`).
    pub idempotency_key: String,
    /// The model's call id.
    pub call_id: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct StubFile {
    #[serde(default)]
    result: Option<Value>,
    #[serde(default)]
    error: Option<String>,
    #[serde(default)]
    error_class: Option<StubErrorClass>,
    #[serde(default)]
    fail_times: Option<u32>,
    #[serde(default)]
    delay_ms: u64,
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    parameters: Option<Value>,
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "snake_case")]
enum StubErrorClass {
    Timeout,
    RateLimit,
    Server,
    Connection,
    Tool,
    BadRequest,
    Auth,
    Internal,
}

impl From<StubErrorClass> for ErrorClass {
    fn from(c: StubErrorClass) -> ErrorClass {
        match c {
            StubErrorClass::Timeout => ErrorClass::Timeout,
            StubErrorClass::RateLimit => ErrorClass::RateLimit,
            StubErrorClass::Server => ErrorClass::Server,
            StubErrorClass::Connection => ErrorClass::Connection,
            StubErrorClass::Tool => ErrorClass::Tool,
            StubErrorClass::BadRequest => ErrorClass::BadRequest,
            StubErrorClass::Auth => ErrorClass::Auth,
            StubErrorClass::Internal => ErrorClass::Internal,
        }
    }
}

/// The call log shared by a set of stub tools; recording can be switched off for long runs.
#[derive(Debug, Default)]
struct Log {
    calls: Mutex<Vec<RecordedCall>>,
    off: AtomicBool,
}

type CallLog = Arc<Log>;

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // Only pushes happen under these locks: a poisoned lock still holds consistent data.
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// One stub tool: answers every call with its fixed result or error, after its delay.
#[derive(Debug)]
pub struct StubTool {
    spec: ToolSpec,
    result: Value,
    error: Option<(ErrorClass, String)>,
    /// With an error: fail only the first `n` calls, then answer `result`.
    fail_times: Option<u32>,
    delay: Duration,
    calls: CallLog,
    /// Calls received so far (numbering `fail_times`), kept apart from the log.
    count: AtomicU64,
}

impl StubTool {
    /// A tool answering `result` to every call.
    pub fn returning(name: impl Into<String>, result: Value) -> StubTool {
        StubTool::new(
            name.into(),
            result,
            None,
            None,
            0,
            None,
            None,
            Arc::default(),
        )
    }

    /// A tool failing every call with `message` (class `tool`).
    pub fn failing(name: impl Into<String>, message: impl Into<String>) -> StubTool {
        StubTool::new(
            name.into(),
            Value::Null,
            Some((ErrorClass::Tool, message.into())),
            None,
            0,
            None,
            None,
            Arc::default(),
        )
    }

    /// Waits `delay` before answering.
    #[must_use]
    pub fn with_delay(mut self, delay: Duration) -> StubTool {
        self.delay = delay;
        self
    }

    /// The calls this tool received, in order.
    pub fn calls(&self) -> Vec<RecordedCall> {
        lock(&self.calls.calls)
            .iter()
            .filter(|c| c.tool == self.spec.name)
            .cloned()
            .collect()
    }

    #[allow(clippy::too_many_arguments)]
    fn new(
        name: String,
        result: Value,
        error: Option<(ErrorClass, String)>,
        fail_times: Option<u32>,
        delay_ms: u64,
        description: Option<String>,
        parameters: Option<Value>,
        calls: CallLog,
    ) -> StubTool {
        StubTool {
            spec: ToolSpec {
                description: description.unwrap_or_else(|| format!("Stub tool `{name}`.")),
                parameters: parameters
                    .unwrap_or_else(|| json!({"type": "object", "properties": {}})),
                name,
            },
            result,
            error,
            fail_times,
            delay: Duration::from_millis(delay_ms),
            calls,
            count: AtomicU64::new(0),
        }
    }
}

#[async_trait]
impl Tool for StubTool {
    fn spec(&self) -> ToolSpec {
        self.spec.clone()
    }

    async fn call(&self, arguments: Value, context: &ToolContext) -> Result<Value> {
        let call_number = self.count.fetch_add(1, Ordering::SeqCst) + 1;
        if !self.calls.off.load(Ordering::Relaxed) {
            lock(&self.calls.calls).push(RecordedCall {
                tool: self.spec.name.clone(),
                arguments,
                idempotency_key: context.idempotency_key.clone(),
                call_id: context.call_id.clone(),
            });
        }
        if !self.delay.is_zero() {
            tokio::select! {
                () = tokio::time::sleep(self.delay) => {}
                () = context.cancel.cancelled() => {
                    return Err(Error::Cancelled {
                        reason: format!("tool `{}` call cancelled", self.spec.name),
                    });
                }
            }
        }
        match &self.error {
            Some((class, message))
                if self.fail_times.is_none_or(|n| call_number <= u64::from(n)) =>
            {
                Err(Error::Tool {
                    tool: self.spec.name.clone(),
                    class: *class,
                    message: message.clone(),
                })
            }
            _ => Ok(self.result.clone()),
        }
    }
}

/// A set of stub tools read from one JSON object (tool name → behaviour), sharing one call log.
#[derive(Debug, Clone)]
pub struct StubTools {
    tools: Vec<Arc<StubTool>>,
    calls: CallLog,
}

fn config_error(source: &str, path: &str, message: impl std::fmt::Display) -> Error {
    Error::Config {
        message: format!("stub tools {source}: at {path}: {message}"),
    }
}

impl StubTools {
    /// Reads stub tools from a JSON file.
    ///
    /// # Errors
    ///
    /// [`Error::Io`] when the file cannot be read; [`Error::Config`] naming the JSON path of the
    /// problem when it is not a valid stub file.
    pub fn from_file(path: impl AsRef<Path>) -> Result<StubTools> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|e| Error::Io {
            path: path.display().to_string(),
            message: e.to_string(),
        })?;
        let source = format!("file {}", path.display());
        let value: Value = serde_json::from_str(&text).map_err(|e| {
            config_error(
                &source,
                "$",
                format!(
                    "invalid JSON at line {}, column {}: {e}",
                    e.line(),
                    e.column()
                ),
            )
        })?;
        Self::build(value, &source)
    }

    /// Reads stub tools from a JSON value.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] naming the JSON path of the problem when it is not a valid stub object.
    pub fn from_value(value: Value) -> Result<StubTools> {
        Self::build(value, "value")
    }

    fn build(value: Value, source: &str) -> Result<StubTools> {
        let Value::Object(entries) = value else {
            return Err(config_error(
                source,
                "$",
                "expected an object mapping tool names to stubs",
            ));
        };
        let calls: CallLog = Arc::default();
        let mut tools = Vec::with_capacity(entries.len());
        for (name, entry) in entries {
            let at = format!("$.{name}");
            if name.trim().is_empty() {
                return Err(config_error(source, "$", "a tool name is empty"));
            }
            let stub: StubFile = serde_path_to_error::deserialize(entry).map_err(|e| {
                let inner = e.path().to_string();
                let path = if inner == "." {
                    at.clone()
                } else {
                    format!("{at}.{inner}")
                };
                config_error(source, &path, e.inner())
            })?;
            if stub.result.is_some() && stub.error.is_some() && stub.fail_times.is_none() {
                return Err(config_error(
                    source,
                    &at,
                    "has both `result` and `error`; add `fail_times` to fail the first calls and then succeed",
                ));
            }
            if stub.fail_times.is_some() && stub.error.is_none() {
                return Err(config_error(
                    source,
                    &format!("{at}.fail_times"),
                    "needs an `error`",
                ));
            }
            if stub.error_class.is_some() && stub.error.is_none() {
                return Err(config_error(
                    source,
                    &format!("{at}.error_class"),
                    "needs an `error`",
                ));
            }
            if let Some(parameters) = &stub.parameters
                && !parameters.is_object()
            {
                return Err(config_error(
                    source,
                    &format!("{at}.parameters"),
                    "must be a JSON Schema object",
                ));
            }
            let error = stub.error.map(|message| {
                (
                    stub.error_class.map_or(ErrorClass::Tool, ErrorClass::from),
                    message,
                )
            });
            tools.push(Arc::new(StubTool::new(
                name,
                stub.result.unwrap_or(Value::Null),
                error,
                stub.fail_times,
                stub.delay_ms,
                stub.description,
                stub.parameters,
                Arc::clone(&calls),
            )));
        }
        Ok(StubTools { tools, calls })
    }

    /// The tools, in file order.
    pub fn tools(&self) -> Vec<Arc<dyn Tool>> {
        self.tools
            .iter()
            .map(|t| Arc::clone(t) as Arc<dyn Tool>)
            .collect()
    }

    /// Names of the tools, in file order.
    pub fn names(&self) -> Vec<String> {
        self.tools.iter().map(|t| t.spec.name.clone()).collect()
    }

    /// Registers every tool in `registry` (replacing tools of the same name).
    pub fn register_into(&self, registry: &mut ToolRegistry) {
        for tool in &self.tools {
            registry.register(Arc::clone(tool) as Arc<dyn Tool>);
        }
    }

    /// Switches the call log on (the default) or off. With it off, [`StubTools::calls`] stays
    /// empty and memory stays flat however many calls are made (benchmarks, long-running hosts).
    pub fn record_calls(&self, on: bool) {
        self.calls.off.store(!on, Ordering::Relaxed);
    }

    /// A registry holding exactly these tools.
    pub fn registry(&self) -> ToolRegistry {
        let mut registry = ToolRegistry::new();
        self.register_into(&mut registry);
        registry
    }

    /// Every call any of these tools received, in the order they started.
    pub fn calls(&self) -> Vec<RecordedCall> {
        lock(&self.calls.calls).clone()
    }

    /// The calls the tool named `tool` received, in order.
    pub fn calls_of(&self, tool: &str) -> Vec<RecordedCall> {
        lock(&self.calls.calls)
            .iter()
            .filter(|c| c.tool == tool)
            .cloned()
            .collect()
    }
}
