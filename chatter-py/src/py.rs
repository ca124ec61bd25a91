//! Python callables behind the engine's traits: tools, chat models, retrievers and node kinds.
//!
//! A plain function is called on the thread that polls the engine (inside
//! `tokio::task::block_in_place` on a runtime worker, so other executions move on meanwhile);
//! an `async def` function is awaited on the asyncio loop of the `arun`/`astream` call that runs
//! it, or, under a blocking `run`, driven by `asyncio.run` on that thread.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use async_trait::async_trait;
use chatter_core::engine::{Node, NodeContext, NodeFactory, NodeOutput};
use chatter_core::event::EventSink;
use chatter_core::model::{
    ChatModel, ChatRequest, ChatResponse, FinishReason, ObservedResponse, TokenSink,
};
use chatter_core::retriever::{ContextChunk, RetrievalQuery, Retriever};
use chatter_core::tool::{Tool, ToolContext, ToolSpec};
use chatter_core::{
    Error, ErrorClass, Message, NodeSpec, Result, Role, StateDelta, ToolCall, Usage, VariableOp,
};
use pyo3::exceptions::PyKeyboardInterrupt;
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList, PyString, PyTuple};
use pyo3_async_runtimes::TaskLocals;
use serde_json::{Map, Value, json};
use tokio_util::sync::CancellationToken;

use crate::convert::{
    Made, RequestSettings, error_text, message_matches, message_to_py, messages_to_py,
    object_to_py, request_settings, request_template, request_to_py, same_specs, to_json,
    to_json_fast, to_py_bound, tool_to_py,
};

tokio::task_local! {
    /// The asyncio loop of the `arun`/`astream` call whose future is being polled.
    pub(crate) static ASYNC_LOCALS: TaskLocals;
}

/// Runs blocking Python work without stalling a runtime worker's other tasks.
fn blocking<T>(f: impl FnOnce() -> T) -> T {
    match tokio::runtime::Handle::try_current() {
        Ok(handle) if handle.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(f)
        }
        _ => f(),
    }
}

/// The blocking `run` whose future is being polled: a `KeyboardInterrupt` raised by Python
/// code it calls cancels it and is raised by `run` once the execution has ended.
#[derive(Clone)]
pub(crate) struct Interrupt {
    pub(crate) cancel: CancellationToken,
    pub(crate) hit: Arc<AtomicBool>,
}

tokio::task_local! {
    /// The interrupt slot of the blocking `run` whose future is being polled.
    pub(crate) static INTERRUPT: Interrupt;
}

/// The text of an exception raised by a Python callable. A `KeyboardInterrupt` (Ctrl-C that
/// landed while Python code ran) must not become a failed call the run carries on after: under
/// a blocking `run` it cancels the execution and `run` raises it; elsewhere (asyncio, streams)
/// it is handed back to the interpreter as a pending interrupt.
fn failure_text(py: Python<'_>, err: &PyErr) -> String {
    let text = error_text(py, err);
    if err.is_instance_of::<PyKeyboardInterrupt>(py) {
        let in_run = INTERRUPT
            .try_with(|i| {
                i.hit.store(true, Ordering::SeqCst);
                i.cancel.cancel();
            })
            .is_ok();
        if !in_run && let Ok(thread) = py.import("_thread") {
            let _ = thread.call_method0("interrupt_main");
        }
    }
    text
}

/// How to call a Python callable: positional arguments and keyword arguments, built with the
/// GIL held, straight from the Rust values it borrows (no intermediate JSON value).
type ArgsBuilder<'a> = Box<
    dyn for<'py> FnOnce(Python<'py>) -> PyResult<(Bound<'py, PyTuple>, Option<Bound<'py, PyDict>>)>
        + Send
        + 'a,
>;

/// A synchronous Python call that took at least this long marks its callable as slow.
const SLOW_CALL: std::time::Duration = std::time::Duration::from_millis(1);

/// A Python callable (sync or `async def`).
#[derive(Debug)]
pub(crate) struct Callable {
    func: Py<PyAny>,
    is_async: bool,
    /// Whether a synchronous call of it has taken [`SLOW_CALL`] or more.
    slow: AtomicBool,
}

impl Callable {
    pub(crate) fn new(func: Py<PyAny>, is_async: bool) -> Callable {
        Callable {
            func,
            is_async,
            slow: AtomicBool::new(false),
        }
    }

    /// Runs `f`, a synchronous call of this callable. While its calls are quick they run
    /// where the execution runs: handing a runtime worker's other tasks to another thread
    /// ([`blocking`]) costs more than a short call (about 20 % of the CPU of a durable run of
    /// no-op Python nodes). Once a call has taken [`SLOW_CALL`] or more (the function waits on
    /// I/O, or on the GIL), its later calls are handed off, so a slow function holds a
    /// worker at most once.
    fn run_sync<T>(&self, f: impl FnOnce() -> T) -> T {
        if self.slow.load(Ordering::Relaxed) {
            return blocking(f);
        }
        let started = std::time::Instant::now();
        let out = f();
        if started.elapsed() >= SLOW_CALL {
            self.slow.store(true, Ordering::Relaxed);
        }
        out
    }

    /// Calls it and converts what it returns to JSON. The error is the Python exception's
    /// text with its traceback.
    async fn call(&self, args: ArgsBuilder<'_>) -> std::result::Result<Value, String> {
        self.call_map(args, to_json).await
    }

    /// Calls it and converts what it returns with `convert` (with the GIL held). The error is
    /// the Python exception's text with its traceback.
    async fn call_map<T>(
        &self,
        args: ArgsBuilder<'_>,
        convert: impl FnOnce(&Bound<'_, PyAny>) -> PyResult<T>,
    ) -> std::result::Result<T, String> {
        if !self.is_async {
            return self.run_sync(|| {
                Python::attach(|py| {
                    let outcome = (|| {
                        let (a, k) = args(py)?;
                        let out = self.func.bind(py).call(a, k.as_ref())?;
                        convert(&out)
                    })();
                    outcome.map_err(|e| failure_text(py, &e))
                })
            });
        }
        let locals = ASYNC_LOCALS.try_with(TaskLocals::clone).ok();
        let awaited = Python::attach(|py| {
            let outcome = (|| {
                let (a, k) = args(py)?;
                let coro = self.func.bind(py).call(a, k.as_ref())?;
                match &locals {
                    Some(locals) => Ok(Err(pyo3_async_runtimes::into_future_with_locals(
                        locals, coro,
                    )?)),
                    None => Ok(Ok(coro.unbind())),
                }
            })();
            outcome.map_err(|e: PyErr| failure_text(py, &e))
        })?;
        match awaited {
            Err(future) => {
                let out = future.await;
                Python::attach(|py| {
                    out.and_then(|o| convert(o.bind(py)))
                        .map_err(|e| failure_text(py, &e))
                })
            }
            Ok(coro) => blocking(|| {
                Python::attach(|py| {
                    let outcome = (|| {
                        let out = py.import("asyncio")?.call_method1("run", (coro,))?;
                        convert(&out)
                    })();
                    outcome.map_err(|e| failure_text(py, &e))
                })
            }),
        }
    }
}

/// A Python function registered as a tool; called with the model's arguments as keywords.
pub(crate) struct PyTool {
    pub(crate) spec: ToolSpec,
    pub(crate) callable: Callable,
}

#[async_trait]
impl Tool for PyTool {
    fn spec(&self) -> ToolSpec {
        self.spec.clone()
    }

    async fn call(&self, arguments: Value, context: &ToolContext) -> Result<Value> {
        self.call_borrowed(&arguments, context).await
    }

    async fn call_borrowed(&self, arguments: &Value, _context: &ToolContext) -> Result<Value> {
        let args: ArgsBuilder<'_> = Box::new(|py| {
            let empty = PyTuple::empty(py);
            match arguments {
                Value::Object(map) => Ok((empty, Some(object_to_py(py, map)?))),
                Value::Null => Ok((empty, None)),
                other => Ok((PyTuple::new(py, [to_py_bound(py, other)?])?, None)),
            }
        });
        self.callable
            .call(args)
            .await
            .map_err(|message| Error::Tool {
                tool: self.spec.name.clone(),
                class: ErrorClass::Tool,
                message,
            })
    }
}

/// The dicts a model's last request handed to Python code for a list of items (its messages,
/// its tool specs), handed out again for the next request's items they still match.
///
/// An agent's requests repeat: each sends the conversation so far and the same tools, so most
/// of its dicts are the ones the model saw last time, and making them again (and freeing them)
/// is most of what a request costs to build. Python code may have kept and changed them, so
/// each is compared with its item first ([`message_matches`], [`tool_matches`]: the same exact
/// types, text, numbers and key order, so nothing a change could leave shows); a dict that no
/// longer matches is made anew. The dicts of the last request stay alive until the next one,
/// or until the model is dropped.
#[derive(Default)]
pub(crate) struct Reused(Mutex<Vec<Py<PyDict>>>);

impl Reused {
    /// A new list of the dicts of `items`, the `i`-th the last list's `i`-th dict when
    /// `matches` accepts it and made by `make` otherwise.
    fn list<'py, T>(
        &self,
        py: Python<'py>,
        items: &[T],
        matches: fn(&Bound<'py, PyDict>, &T) -> bool,
        make: fn(Python<'py>, &T) -> PyResult<Bound<'py, PyDict>>,
    ) -> PyResult<Bound<'py, PyList>> {
        // Taken out of the lock, which is never held while Python objects are compared or
        // made: that may let another thread take the GIL and wait for the lock. A call on
        // another thread meanwhile finds nothing to reuse and makes its own dicts.
        let last = std::mem::take(&mut *self.0.lock().unwrap_or_else(PoisonError::into_inner));
        let mut dicts = Vec::with_capacity(items.len());
        for (i, item) in items.iter().enumerate() {
            let dict = match last.get(i).map(|d| d.bind(py)) {
                Some(d) if matches(d, item) => d.clone(),
                _ => make(py, item)?,
            };
            dicts.push(dict);
        }
        let list = PyList::new(py, &dicts)?;
        *self.0.lock().unwrap_or_else(PoisonError::into_inner) =
            dicts.into_iter().map(Bound::unbind).collect();
        Ok(list)
    }
}

/// The dicts of a model's last request's tool specs, with the specs they were made from and
/// what each was made of ([`Made`]).
///
/// Every request of an `llm` node offering the engine's tools shares one list of specs (until
/// a tool is registered); a node naming its tools makes an equal list each time
/// ([`same_specs`]). A request with the same specs hands out again each dict Python code left
/// as it was made: a check by identity ([`Made::is`]), which reads no text. A dict that changed
/// is made anew.
#[derive(Default)]
pub(crate) struct ReusedTools(Mutex<Option<MadeTools>>);

/// Tool specs and what the dict of each was made of.
type MadeTools = (Arc<[ToolSpec]>, Vec<Made>);

impl ReusedTools {
    /// A new list of the dicts of `specs`.
    fn list<'py>(&self, py: Python<'py>, specs: &Arc<[ToolSpec]>) -> PyResult<Bound<'py, PyList>> {
        // Taken out of the lock, as in `Reused::list`.
        let last = self.0.lock().unwrap_or_else(PoisonError::into_inner).take();
        let mut made = match last {
            Some((was, made)) if Arc::ptr_eq(&was, specs) || same_specs(&was, specs) => made,
            _ => Vec::with_capacity(specs.len()),
        };
        let mut dicts = Vec::with_capacity(specs.len());
        for (i, spec) in specs.iter().enumerate() {
            let kept = match made.get(i) {
                Some(record @ Made::Dict(dict, _)) => {
                    let dict = dict.bind(py);
                    record.is(dict.as_any()).then(|| dict.clone())
                }
                _ => None,
            };
            let dict = match kept {
                Some(dict) => dict,
                None => {
                    let (dict, record) = tool_to_py(py, spec)?;
                    match made.get_mut(i) {
                        Some(slot) => *slot = record,
                        None => made.push(record),
                    }
                    dict
                }
            };
            dicts.push(dict);
        }
        let list = PyList::new(py, &dicts)?;
        *self.0.lock().unwrap_or_else(PoisonError::into_inner) = Some((specs.clone(), made));
        Ok(list)
    }
}

/// A Python object with `chat(request)` (and optionally `stream(request)`) as a chat model.
pub(crate) struct PyModel {
    pub(crate) name: String,
    pub(crate) obj: Py<PyAny>,
    pub(crate) chat: Callable,
    /// A plain (sync) generator method `stream(request)` yielding text chunks.
    pub(crate) has_stream: bool,
    /// The dicts of the last request's messages.
    pub(crate) messages: Reused,
    /// The dicts of the last request's tool specs.
    pub(crate) tools: ReusedTools,
    /// The last request's settings and their [`request_template`].
    pub(crate) template: Mutex<Option<(RequestSettings, Py<PyDict>)>>,
}

impl PyModel {
    /// The `request` argument of `chat`/`stream`, built with the GIL held.
    fn request_args<'a>(&'a self, request: &'a ChatRequest) -> ArgsBuilder<'a> {
        Box::new(move |py| {
            let messages =
                self.messages
                    .list(py, &request.messages, message_matches, message_to_py)?;
            let tools = self.tools.list(py, &request.tools)?;
            let template = self.template(py, request)?;
            let dict = request_to_py(&template, request, messages, tools)?;
            Ok((PyTuple::new(py, [dict])?, None))
        })
    }

    /// The [`request_template`] of `request`'s settings: the last request's unless they
    /// changed.
    fn template<'py>(
        &self,
        py: Python<'py>,
        request: &ChatRequest,
    ) -> PyResult<Bound<'py, PyDict>> {
        let settings = request_settings(request);
        // The lock is never held while Python objects are made (see `Reused::list`).
        let kept = {
            let kept = self.template.lock().unwrap_or_else(PoisonError::into_inner);
            match &*kept {
                Some((s, template)) if *s == settings => Some(template.clone_ref(py)),
                _ => None,
            }
        };
        if let Some(template) = kept {
            return Ok(template.into_bound(py));
        }
        let template = request_template(py, &settings)?;
        *self.template.lock().unwrap_or_else(PoisonError::into_inner) =
            Some((settings, template.clone().unbind()));
        Ok(template)
    }

    fn fail(&self, message: String) -> Error {
        Error::Model {
            model: self.name.clone(),
            class: ErrorClass::Model,
            message,
            retry_after_ms: None,
        }
    }

    /// Reads what `chat` returned: a string (the reply text) or a dict with `content`,
    /// `tool_calls` (`[{id?, name, arguments}]`), `usage` and `finish_reason`.
    fn response(&self, value: Value) -> Result<ChatResponse> {
        let (content, calls, usage) = match value {
            Value::String(s) => (s, Vec::new(), Value::Null),
            Value::Object(mut map) => {
                let content = match map.remove("content") {
                    Some(Value::String(s)) => s,
                    None | Some(Value::Null) => String::new(),
                    Some(other) => {
                        return Err(self.fail(format!(
                            "`chat` returned `content` {other}; expected a string"
                        )));
                    }
                };
                let calls = match map.remove("tool_calls") {
                    Some(Value::Array(calls)) => calls,
                    None | Some(Value::Null) => Vec::new(),
                    Some(other) => {
                        return Err(self.fail(format!(
                            "`chat` returned `tool_calls` {other}; expected a list"
                        )));
                    }
                };
                (content, calls, map.remove("usage").unwrap_or(Value::Null))
            }
            other => {
                return Err(self.fail(format!(
                    "`chat` returned {other}; expected a str or a dict with `content`"
                )));
            }
        };
        let mut tool_calls = Vec::new();
        for (i, call) in calls.into_iter().enumerate() {
            let name = call
                .get("name")
                .and_then(Value::as_str)
                .ok_or_else(|| self.fail(format!("tool_calls[{i}] has no string `name`")))?;
            tool_calls.push(ToolCall {
                id: call
                    .get("id")
                    .and_then(Value::as_str)
                    .map_or_else(|| call_id(i), str::to_owned),
                name: name.to_owned(),
                arguments: call.get("arguments").cloned().unwrap_or_else(|| json!({})),
            });
        }
        Ok(self.reply(content, tool_calls, &usage))
    }

    /// What `chat` returned, read straight from the Python objects when it has the usual shape
    /// (a `str`, or a `dict` of built-in types whose `content` is a `str` or `None` and whose
    /// `tool_calls` is a `list` of `dict`s each with a `str` `name`, and an `id` that is a
    /// `str` or `None`): the same reply [`PyModel::response`] makes of its JSON, without
    /// building the JSON first. `None` for anything else, which `response` reads (and
    /// explains when it is wrong).
    fn reply_from_py(&self, obj: &Bound<'_, PyAny>) -> Option<ChatResponse> {
        let text = |o: &Bound<'_, PyAny>| -> Option<String> {
            o.cast_exact::<PyString>()
                .ok()?
                .to_str()
                .ok()
                .map(str::to_owned)
        };
        if obj.is_exact_instance_of::<PyString>() {
            return Some(self.reply(text(obj)?, Vec::new(), &Value::Null));
        }
        // A key is compared in place (not copied out); a value read for nothing (`role`) is
        // converted, and dropped, as the JSON of the reply would be, unless it is a `str`.
        fn key_text(k: Bound<'_, PyAny>) -> Option<Bound<'_, PyString>> {
            k.cast_into_exact::<PyString>().ok()
        }
        let check = |v: &Bound<'_, PyAny>, depth: usize| -> Option<()> {
            if !v.is_exact_instance_of::<PyString>() {
                drop(to_json_fast(v, depth)?);
            }
            Some(())
        };
        let dict = obj.cast_exact::<PyDict>().ok()?;
        let (mut content, mut tool_calls, mut usage) = (String::new(), Vec::new(), Value::Null);
        for (key, value) in dict.iter() {
            match key_text(key)?.to_str().ok()? {
                "content" if value.is_none() => {}
                "content" => content = text(&value)?,
                "tool_calls" if value.is_none() => {}
                "tool_calls" => {
                    let calls = value.cast_exact::<PyList>().ok()?;
                    tool_calls.reserve_exact(calls.len());
                    for (i, call) in calls.iter().enumerate() {
                        let (mut id, mut name, mut arguments) = (None, None, None);
                        for (key, value) in call.cast_exact::<PyDict>().ok()?.iter() {
                            match key_text(key)?.to_str().ok()? {
                                "id" if value.is_none() => {}
                                "id" => id = Some(text(&value)?),
                                "name" => name = Some(text(&value)?),
                                "arguments" => arguments = Some(to_json_fast(&value, 4)?),
                                _ => check(&value, 4)?,
                            }
                        }
                        tool_calls.push(ToolCall {
                            id: id.unwrap_or_else(|| call_id(i)),
                            name: name?,
                            arguments: arguments.unwrap_or_else(|| json!({})),
                        });
                    }
                }
                "usage" => usage = to_json_fast(&value, 1)?,
                _ => check(&value, 1)?,
            }
        }
        Some(self.reply(content, tool_calls, &usage))
    }

    /// The reply of `content` and `tool_calls`, with the usage `chat` returned.
    fn reply(&self, content: String, tool_calls: Vec<ToolCall>, usage: &Value) -> ChatResponse {
        let count = |key: &str| usage.get(key).and_then(Value::as_u64).unwrap_or(0);
        let (prompt, completion) = (count("prompt_tokens"), count("completion_tokens"));
        let finish_reason = if tool_calls.is_empty() {
            FinishReason::Stop
        } else {
            FinishReason::ToolCalls
        };
        ChatResponse {
            message: Message {
                tool_calls,
                ..Message::new(Role::Assistant, content)
            },
            usage: Usage {
                prompt_tokens: prompt,
                completion_tokens: completion,
                total_tokens: usage
                    .get("total_tokens")
                    .and_then(Value::as_u64)
                    .unwrap_or(prompt + completion),
                cost: usage.get("cost").and_then(Value::as_f64).unwrap_or(0.0),
            },
            finish_reason,
            model: self.name.clone(),
        }
    }
}

/// The id of a tool call the model returned without one: `call_<index>`.
fn call_id(index: usize) -> String {
    format!("call_{index}")
}

/// What a Python model's `chat` returned: read as a reply, or its JSON to read.
enum Returned {
    Reply(ChatResponse),
    Json(Value),
}

impl PyModel {
    /// Calls `chat(request)` and reads its reply.
    async fn call_chat(&self, request: &ChatRequest) -> Result<ChatResponse> {
        let returned = self
            .chat
            .call_map(self.request_args(request), |obj| {
                match self.reply_from_py(obj) {
                    Some(reply) => Ok(Returned::Reply(reply)),
                    None => to_json(obj).map(Returned::Json),
                }
            })
            .await
            .map_err(|m| self.fail(m))?;
        match returned {
            Returned::Reply(reply) => Ok(reply),
            Returned::Json(value) => self.response(value),
        }
    }

    /// Streams the reply: `stream(request)`'s chunks when the object has that method, else
    /// `chat(request)`'s whole text as one chunk.
    async fn call_stream(
        &self,
        request: &ChatRequest,
        sink: &dyn TokenSink,
    ) -> Result<ChatResponse> {
        if !self.has_stream {
            let response = self.call_chat(request).await?;
            if !response.message.content.is_empty() {
                sink.token(&response.message.content);
            }
            return Ok(response);
        }
        let args = self.request_args(request);
        let text = blocking(|| {
            Python::attach(|py| {
                let outcome = (|| -> PyResult<String> {
                    let (a, _) = args(py)?;
                    let chunks = self.obj.bind(py).call_method1("stream", a)?;
                    let mut text = String::new();
                    for chunk in chunks.try_iter()? {
                        let chunk: String = chunk?.extract()?;
                        sink.token(&chunk);
                        text.push_str(&chunk);
                    }
                    Ok(text)
                })();
                outcome.map_err(|e| failure_text(py, &e))
            })
        })
        .map_err(|m| self.fail(m))?;
        self.response(Value::String(text))
    }
}

#[async_trait]
impl ChatModel for PyModel {
    fn name(&self) -> &str {
        &self.name
    }

    async fn chat(&self, request: ChatRequest) -> Result<ChatResponse> {
        self.call_chat(&request).await
    }

    async fn chat_stream(
        &self,
        request: ChatRequest,
        sink: &dyn TokenSink,
    ) -> Result<ChatResponse> {
        self.call_stream(&request, sink).await
    }

    /// What the default does, in one future: an `llm` node's call goes through here, and each
    /// trait method the default went through boxed a future of its own.
    async fn chat_observed(
        &self,
        request: ChatRequest,
        sink: Option<&dyn TokenSink>,
        _events: &dyn EventSink,
    ) -> Result<ObservedResponse> {
        let response = match sink {
            Some(sink) => self.call_stream(&request, sink).await?,
            None => self.call_chat(&request).await?,
        };
        Ok(ObservedResponse::new(response))
    }
}

/// A Python function `retrieve(query, top_k)` returning strings or dicts
/// (`content`, `score`, `source`, `metadata`).
pub(crate) struct PyRetriever {
    pub(crate) name: String,
    pub(crate) callable: Callable,
}

#[async_trait]
impl Retriever for PyRetriever {
    async fn retrieve(&self, query: &RetrievalQuery) -> Result<Vec<ContextChunk>> {
        let (text, top_k) = (query.query.clone(), query.top_k);
        let fail = |message: String| Error::Node {
            node_id: format!("retriever:{}", self.name),
            class: ErrorClass::Tool,
            message,
        };
        let value = self
            .callable
            .call(Box::new(move |py| {
                Ok(((text, top_k).into_pyobject(py)?, None))
            }))
            .await
            .map_err(fail)?;
        let Value::Array(items) = value else {
            return Err(fail(format!("retriever returned {value}; expected a list")));
        };
        let mut chunks = Vec::new();
        for item in items {
            let chunk = match item {
                Value::String(content) => ContextChunk {
                    content,
                    score: 1.0,
                    source: self.name.clone(),
                    metadata: Value::Null,
                },
                Value::Object(map) => ContextChunk {
                    content: map
                        .get("content")
                        .and_then(Value::as_str)
                        .unwrap_or_default()
                        .to_owned(),
                    score: map.get("score").and_then(Value::as_f64).unwrap_or(1.0),
                    source: map
                        .get("source")
                        .and_then(Value::as_str)
                        .map_or_else(|| self.name.clone(), str::to_owned),
                    metadata: map.get("metadata").cloned().unwrap_or(Value::Null),
                },
                other => {
                    return Err(fail(format!(
                        "retriever returned an item {other}; expected a str or a dict"
                    )));
                }
            };
            chunks.push(chunk);
        }
        chunks.retain(|c| c.score >= query.score_threshold);
        chunks.truncate(query.top_k);
        Ok(chunks)
    }
}

/// A node kind implemented by a Python function `fn(state) -> dict | None`; the returned dict's
/// entries are set as workflow variables.
pub(crate) struct PyNodeKind {
    pub(crate) kind: String,
    pub(crate) callable: Arc<Callable>,
}

impl NodeFactory for PyNodeKind {
    fn build(&self, spec: &NodeSpec) -> Result<Arc<dyn Node>> {
        Ok(Arc::new(PyNode {
            kind: self.kind.clone(),
            config: spec.config.clone(),
            callable: self.callable.clone(),
        }))
    }
}

struct PyNode {
    kind: String,
    config: Map<String, Value>,
    callable: Arc<Callable>,
}

#[async_trait]
impl Node for PyNode {
    async fn run(&self, ctx: NodeContext) -> Result<NodeOutput> {
        let ctx = &ctx;
        let args: ArgsBuilder<'_> = Box::new(move |py| {
            // The state dict is built straight from the state (interned keys, no JSON detour).
            let state = PyDict::new(py);
            state.set_item(intern!(py, "node_id"), PyString::new(py, ctx.node_id()))?;
            state.set_item(intern!(py, "iteration"), ctx.iteration)?;
            state.set_item(intern!(py, "input"), to_py_bound(py, ctx.state.input())?)?;
            state.set_item(
                intern!(py, "variables"),
                object_to_py(py, ctx.state.variables())?,
            )?;
            state.set_item(
                intern!(py, "messages"),
                messages_to_py(py, ctx.state.messages())?,
            )?;
            state.set_item(intern!(py, "config"), object_to_py(py, &self.config)?)?;
            Ok((PyTuple::new(py, [state])?, None))
        });
        let value = self
            .callable
            .call(args)
            .await
            .map_err(|message| Error::Node {
                node_id: ctx.node_id().to_owned(),
                class: ErrorClass::Internal,
                message,
            })?;
        let variables = match value {
            Value::Null => Vec::new(),
            Value::Object(map) => map
                .into_iter()
                .map(|(k, v)| (k, VariableOp::Set(v)))
                .collect(),
            other => {
                return Err(Error::Node {
                    node_id: ctx.node_id().to_owned(),
                    class: ErrorClass::Internal,
                    message: format!(
                        "node kind `{}` returned {other}; expected a dict of variables or None",
                        self.kind
                    ),
                });
            }
        };
        Ok(NodeOutput::delta(StateDelta {
            variables,
            ..StateDelta::default()
        }))
    }
}
