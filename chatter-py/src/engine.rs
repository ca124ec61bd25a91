//! The native classes: workflows, the engine (registrations, runs), event streams, templates.

use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use chatter_core::engine::{
    DurabilityMode, Engine, EngineBuilder, Limits, PreparedWorkflow, RunOptions,
};
use chatter_core::model::{ChatModel, ModelRegistry};
use chatter_core::providers::ScriptedModel;
use chatter_core::retriever::RetrieverRegistry;
use chatter_core::templates::builtin_templates;
use chatter_core::tool::{ToolRegistry, ToolSpec};
use chatter_core::tracker::{Decision, WorkflowTracker};
use chatter_core::{Error, Format, ValidatorConfig, WorkflowDefinition, WorkflowValidator};
use futures::future::BoxFuture;
use futures::stream::BoxStream;
use futures::{FutureExt, StreamExt};
use pyo3::exceptions::{PyKeyboardInterrupt, PyStopAsyncIteration, PyTypeError};
use pyo3::prelude::*;
use pyo3::types::PyDict;
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use crate::convert::{to_json, to_py, to_py_err};
use crate::py::{
    ASYNC_LOCALS, Callable, INTERRUPT, Interrupt, PyModel, PyNodeKind, PyRetriever, PyTool, Reused,
    ReusedTools,
};
use crate::store::{self, Durable};

/// How often a blocking call looks for a pending signal (Ctrl-C).
const SIGNAL_POLL: Duration = Duration::from_millis(50);

fn runtime() -> &'static tokio::runtime::Runtime {
    pyo3_async_runtimes::tokio::get_runtime()
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Drives `fut` to its end on this thread with the GIL released, checking for signals; on a
/// signal (KeyboardInterrupt), `on_signal` runs once and the future is still driven to its end,
/// then the signal's exception is returned. A signal pending when the future ends is raised
/// too (its output is dropped).
fn block_on_interruptible<T>(
    py: Python<'_>,
    fut: impl Future<Output = T> + Send,
    on_signal: impl Fn() + Send + Sync,
) -> PyResult<T>
where
    T: Send,
{
    // A run's future is large (about 20 KiB with a store): pinned where it is and used through
    // a pointer from here on. Boxing it copied all of it to the heap on every run (a fifth of
    // the instructions of a 10-node run in memory).
    let mut fut = std::pin::pin!(fut);
    let (out, interrupted) = py.detach(|| {
        runtime().block_on(async {
            // Most runs end without waiting: polled once first, they need no timer.
            if let std::task::Poll::Ready(out) = futures::poll!(fut.as_mut()) {
                return (out, None);
            }
            let mut interrupted: Option<PyErr> = None;
            loop {
                tokio::select! {
                    out = fut.as_mut() => return (out, interrupted),
                    () = tokio::time::sleep(SIGNAL_POLL), if interrupted.is_none() => {
                        if let Err(e) = Python::attach(|py| py.check_signals()) {
                            interrupted = Some(e);
                            on_signal();
                        }
                    }
                }
            }
        })
    });
    match interrupted {
        Some(e) => Err(e),
        // A signal that came in after the last check (or a KeyboardInterrupt a Python callable
        // handed back, see `py::failure_text`) is raised now.
        None => py.check_signals().map(|()| out),
    }
}

/// A workflow definition (immutable), with its compiled form cached per engine.
#[pyclass(module = "chatter._native", frozen)]
pub struct NativeWorkflow {
    def: Arc<WorkflowDefinition>,
    prepared: Mutex<Option<(u64, PreparedWorkflow)>>,
}

impl NativeWorkflow {
    fn new(def: WorkflowDefinition) -> NativeWorkflow {
        NativeWorkflow {
            def: Arc::new(def),
            prepared: Mutex::new(None),
        }
    }
}

#[pymethods]
impl NativeWorkflow {
    /// Parses JSON (`format="json"`) or YAML (`format="yaml"`) text.
    #[staticmethod]
    fn parse(text: &str, format: &str) -> PyResult<NativeWorkflow> {
        let format = match format {
            "json" => Format::Json,
            "yaml" => Format::Yaml,
            other => {
                return Err(PyTypeError::new_err(format!(
                    "format must be \"json\" or \"yaml\", not {other:?}"
                )));
            }
        };
        WorkflowDefinition::parse(text, format)
            .map(NativeWorkflow::new)
            .map_err(to_py_err)
    }

    /// Reads a definition from a dict.
    #[staticmethod]
    fn from_value(value: &Bound<'_, PyAny>) -> PyResult<NativeWorkflow> {
        let value = to_json(value)?;
        WorkflowDefinition::from_value(&value)
            .map(NativeWorkflow::new)
            .map_err(to_py_err)
    }

    /// Reads a definition from a `.json`, `.yaml` or `.yml` file.
    #[staticmethod]
    fn load(path: &str) -> PyResult<NativeWorkflow> {
        WorkflowDefinition::load(path)
            .map(NativeWorkflow::new)
            .map_err(to_py_err)
    }

    /// The definition as a dict.
    fn to_value(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        to_py(py, &self.def.to_value())
    }

    /// The definition as pretty JSON.
    fn to_json(&self) -> String {
        self.def.to_json_pretty()
    }

    /// The definition as YAML.
    fn to_yaml(&self) -> PyResult<String> {
        self.def.to_yaml().map_err(to_py_err)
    }

    /// Every validation issue (dicts with code, severity, node_id, edge_id, path, message).
    fn validate(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        let report = py.detach(|| WorkflowValidator::default().validate(&self.def));
        to_py(
            py,
            &serde_json::to_value(&report.issues).unwrap_or(Value::Null),
        )
    }

    /// The workflow's name, from its metadata.
    #[getter]
    fn name(&self) -> Option<String> {
        self.def.name().map(str::to_owned)
    }
}

/// What the engine is built from; rebuilt lazily after each registration.
struct Parts {
    models: ModelRegistry,
    tools: ToolRegistry,
    retrievers: RetrieverRegistry,
    nodes: Vec<PyNodeKind>,
    limits: Limits,
    validator: ValidatorConfig,
    built: Option<(u64, Engine)>,
}

static GENERATION: AtomicU64 = AtomicU64::new(1);

/// The engine with its registries, and the store executions are run durably in.
#[pyclass(module = "chatter._native", frozen)]
pub struct NativeEngine {
    parts: Mutex<Parts>,
    durable: Option<Durable>,
    live: Live,
}

/// The cancellation tokens of the executions this engine is running, by execution id, so
/// `cancel(execution_id)` reaches a run started from another thread or task.
#[derive(Default, Clone)]
struct Live(Arc<Mutex<LiveMap>>);

#[derive(Default)]
struct LiveMap {
    serial: u64,
    runs: std::collections::HashMap<String, (u64, CancellationToken)>,
}

impl Live {
    /// Registers a run until the guard drops.
    fn register(&self, id: &str, token: &CancellationToken) -> LiveGuard {
        let mut map = lock(&self.0);
        map.serial += 1;
        let serial = map.serial;
        map.runs.insert(id.to_owned(), (serial, token.clone()));
        LiveGuard {
            live: self.clone(),
            id: id.to_owned(),
            serial,
        }
    }

    fn token(&self, id: &str) -> Option<CancellationToken> {
        lock(&self.0).runs.get(id).map(|(_, t)| t.clone())
    }
}

/// Removes a run from [`Live`] when it ends (unless a later run took the same id).
struct LiveGuard {
    live: Live,
    id: String,
    serial: u64,
}

impl Drop for LiveGuard {
    fn drop(&mut self) {
        let mut map = lock(&self.live.0);
        if map
            .runs
            .get(&self.id)
            .is_some_and(|(s, _)| *s == self.serial)
        {
            map.runs.remove(&self.id);
        }
    }
}

impl NativeEngine {
    fn engine(&self) -> (u64, Engine) {
        let mut parts = lock(&self.parts);
        if let Some((generation, engine)) = &parts.built {
            return (*generation, engine.clone());
        }
        let mut builder = EngineBuilder::new()
            .models(parts.models.clone())
            .tools(parts.tools.clone())
            .retrievers(parts.retrievers.clone())
            .limits(parts.limits.clone())
            .validator(parts.validator.clone());
        for node in &parts.nodes {
            builder = builder.register_node(
                &node.kind,
                PyNodeKind {
                    kind: node.kind.clone(),
                    callable: node.callable.clone(),
                },
            );
        }
        let engine = builder.build();
        let generation = GENERATION.fetch_add(1, Ordering::Relaxed);
        parts.built = Some((generation, engine.clone()));
        (generation, engine)
    }

    fn changed(&self, f: impl FnOnce(&mut Parts)) {
        let mut parts = lock(&self.parts);
        f(&mut parts);
        parts.built = None;
    }

    fn prepare(&self, wf: &NativeWorkflow) -> PyResult<(Engine, PreparedWorkflow)> {
        let (generation, engine) = self.engine();
        let mut cached = lock(&wf.prepared);
        if let Some((g, prepared)) = &*cached
            && *g == generation
        {
            return Ok((engine, prepared.clone()));
        }
        let prepared = engine.prepare(&wf.def).map_err(to_py_err)?;
        *cached = Some((generation, prepared.clone()));
        Ok((engine, prepared))
    }

    fn options(
        limits: Option<&Bound<'_, PyDict>>,
        execution_id: Option<String>,
        engine: &Engine,
    ) -> PyResult<RunOptions> {
        let mut options = RunOptions::default();
        if let Some(id) = execution_id {
            options = options.execution_id(id);
        }
        if let Some(limits) = limits {
            options = options.limits(parse_limits(engine.limits().clone(), limits)?);
        }
        Ok(options)
    }
}

fn parse_limits(mut limits: Limits, given: &Bound<'_, PyDict>) -> PyResult<Limits> {
    for (key, value) in given.iter() {
        let key: String = key.extract()?;
        limits = match key.as_str() {
            "timeout_ms" | "execution_timeout_ms" => limits.execution_timeout_ms(value.extract()?),
            "node_timeout_ms" => limits.node_timeout_ms(value.extract()?),
            "max_tokens" => limits.max_tokens(value.extract()?),
            "max_cost" => limits.max_cost(value.extract()?),
            "max_steps" => limits.max_steps(value.extract()?),
            "max_concurrency" => limits.max_concurrency(value.extract()?),
            other => {
                return Err(PyTypeError::new_err(format!(
                    "unknown limit `{other}` (expected timeout_ms, node_timeout_ms, max_tokens, \
                     max_cost, max_steps, max_concurrency)"
                )));
            }
        };
    }
    Ok(limits)
}

/// Runs a workflow to its end without observing its events (`run` and `arun`): durably
/// through `durable` when the engine has a store, else in memory on `prepared`.
async fn run_unobserved(
    durable: Option<Durable>,
    engine: Engine,
    prepared: PreparedWorkflow,
    input: Value,
    options: RunOptions,
) -> chatter_core::Result<chatter_core::ExecutionResult> {
    match durable {
        Some(d) => {
            d.run(
                &engine,
                &prepared,
                input,
                options,
                None::<fn(&chatter_core::Event)>,
            )
            .await
        }
        None => Ok(engine.run_prepared(&prepared, input, options).await),
    }
}

fn result_to_py(py: Python<'_>, result: chatter_core::ExecutionResult) -> PyResult<Py<PyAny>> {
    Ok(Py::new(py, NativeResult { inner: result })?.into_any())
}

fn value_to_py<T: serde::Serialize>(py: Python<'_>, value: &T) -> PyResult<Py<PyAny>> {
    to_py(py, &serde_json::to_value(value).unwrap_or(Value::Null))
}

/// An execution's result, kept in Rust; each part is converted to Python when read.
#[pyclass(module = "chatter._native", frozen)]
pub struct NativeResult {
    inner: chatter_core::ExecutionResult,
}

#[pymethods]
impl NativeResult {
    /// The execution's id.
    #[getter]
    fn execution_id(&self) -> &str {
        &self.inner.execution_id
    }
    /// `completed`, `failed`, `cancelled`, ...
    #[getter]
    fn status(&self) -> &'static str {
        self.inner.status.as_str()
    }
    /// The final response.
    #[getter]
    fn response(&self) -> Option<&str> {
        self.inner.response.as_deref()
    }
    /// When it started (ms since the epoch).
    #[getter]
    fn started_at_ms(&self) -> i64 {
        self.inner.started_at_ms
    }
    /// How long it took.
    #[getter]
    fn duration_ms(&self) -> u64 {
        self.inner.duration_ms
    }
    /// The final variables (a dict).
    #[getter]
    fn variables(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        value_to_py(py, &self.inner.variables)
    }
    /// The usage (a dict).
    #[getter]
    fn usage(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        value_to_py(py, &self.inner.usage)
    }
    /// The final messages (dicts).
    #[getter]
    fn messages(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        value_to_py(py, &self.inner.messages)
    }
    /// The node runs (dicts).
    #[getter]
    fn node_runs(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        value_to_py(py, &self.inner.node_runs)
    }
    /// The errors recorded in the state (dicts).
    #[getter]
    fn errors(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        value_to_py(py, &self.inner.errors)
    }
    /// The events (dicts).
    #[getter]
    fn events(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        value_to_py(py, &self.inner.events)
    }
    /// Why it failed (a dict with class, message, node_id), or None.
    #[getter]
    fn error(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        value_to_py(py, &self.inner.error)
    }
    /// The whole result as a dict.
    fn to_dict(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        value_to_py(py, &self.inner)
    }
}

#[pymethods]
impl NativeEngine {
    #[new]
    #[pyo3(signature = (limits=None, max_nodes=None, max_edges=None, store=None, pg_schema=None, durability=None))]
    fn new(
        py: Python<'_>,
        limits: Option<&Bound<'_, PyDict>>,
        max_nodes: Option<usize>,
        max_edges: Option<usize>,
        store: Option<String>,
        pg_schema: Option<String>,
        durability: Option<String>,
    ) -> PyResult<NativeEngine> {
        let mode = durability
            .as_deref()
            .map(DurabilityMode::parse)
            .transpose()
            .map_err(to_py_err)?
            .unwrap_or_default();
        let durable = match store {
            Some(url) => {
                let mut options = chatter_store::StoreOptions::default();
                options.pg_schema = pg_schema;
                let store = py
                    .detach(|| runtime().block_on(chatter_store::connect_with(&url, options)))
                    .map_err(to_py_err)?;
                Some(Durable {
                    tracker: WorkflowTracker::new(store.clone()).durability(mode),
                    store,
                    mode,
                })
            }
            None if durability.is_some() => {
                return Err(to_py_err(Error::Config {
                    message:
                        "durability needs a store: Engine(store=\"sqlite://...\", durability=...)"
                            .into(),
                }));
            }
            None => None,
        };
        let limits = match limits {
            Some(l) => parse_limits(Limits::default(), l)?,
            None => Limits::default(),
        };
        let mut validator = ValidatorConfig::default();
        if let Some(n) = max_nodes {
            validator.max_nodes = n;
        }
        if let Some(n) = max_edges {
            validator.max_edges = n;
        }
        Ok(NativeEngine {
            parts: Mutex::new(Parts {
                models: ModelRegistry::new(),
                tools: ToolRegistry::new(),
                retrievers: RetrieverRegistry::new(),
                nodes: Vec::new(),
                limits,
                validator,
                built: None,
            }),
            durable,
            live: Live::default(),
        })
    }

    /// Registers a Python function as a tool.
    fn register_tool(
        &self,
        name: String,
        description: String,
        schema: &Bound<'_, PyAny>,
        func: Py<PyAny>,
        is_async: bool,
    ) -> PyResult<()> {
        let parameters = to_json(schema)?;
        let tool = PyTool {
            spec: ToolSpec {
                name,
                description,
                parameters,
            },
            callable: Callable::new(func, is_async),
        };
        self.changed(|p| p.tools.register(Arc::new(tool)));
        Ok(())
    }

    /// Registers a Python object with `chat(request)` as a chat model.
    fn register_model(
        &self,
        name: String,
        obj: Py<PyAny>,
        chat: Py<PyAny>,
        chat_is_async: bool,
        has_stream: bool,
    ) {
        let model = PyModel {
            name: name.clone(),
            obj,
            chat: Callable::new(chat, chat_is_async),
            has_stream,
            messages: Reused::default(),
            tools: ReusedTools::default(),
            template: Mutex::new(None),
        };
        self.changed(|p| p.models.register(name, Arc::new(model)));
    }

    /// Registers the built-in scripted model from its script (a JSON string).
    fn register_scripted(&self, name: String, script: &str) -> PyResult<()> {
        let model = ScriptedModel::from_json(script).map_err(to_py_err)?;
        self.changed(|p| p.models.register(name, Arc::new(model)));
        Ok(())
    }

    /// Registers the built-in OpenAI-compatible provider.
    #[pyo3(signature = (name, base_url=None, api_key=None, default_model=None))]
    fn register_openai(
        &self,
        name: String,
        base_url: Option<String>,
        api_key: Option<String>,
        default_model: Option<String>,
    ) -> PyResult<()> {
        use chatter_core::providers::{OpenAiConfig, OpenAiModel};
        let mut config = OpenAiConfig::from_env().provider_name(name.clone());
        if let Some(url) = base_url {
            config = config.base_url(url);
        }
        if let Some(key) = api_key {
            config = config.api_key(key);
        }
        if let Some(model) = default_model {
            config = config.default_model(model);
        }
        let model: Arc<dyn ChatModel> = Arc::new(OpenAiModel::new(config).map_err(to_py_err)?);
        self.changed(|p| p.models.register(name, model));
        Ok(())
    }

    /// Makes a registered model the default one.
    fn set_default_model(&self, name: &str) -> PyResult<()> {
        let mut parts = lock(&self.parts);
        parts.models.set_default(name).map_err(to_py_err)?;
        parts.built = None;
        Ok(())
    }

    /// Registers a Python function `fn(query, top_k)` as a retriever.
    fn register_retriever(&self, name: String, func: Py<PyAny>, is_async: bool) {
        let retriever = PyRetriever {
            name: name.clone(),
            callable: Callable::new(func, is_async),
        };
        self.changed(|p| p.retrievers.register(name, Arc::new(retriever)));
    }

    /// Registers a node kind run by a Python function `fn(state) -> dict | None`.
    fn register_node(&self, kind: String, func: Py<PyAny>, is_async: bool) {
        let node = PyNodeKind {
            kind,
            callable: Arc::new(Callable::new(func, is_async)),
        };
        self.changed(|p| {
            p.nodes.retain(|n| n.kind != node.kind);
            p.nodes.push(node);
        });
    }

    /// The names of the registered models, tools and retrievers.
    fn registered(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        let parts = lock(&self.parts);
        let value = serde_json::json!({
            "models": parts.models.names().collect::<Vec<_>>(),
            "tools": parts.tools.names().collect::<Vec<_>>(),
            "retrievers": parts.retrievers.names().collect::<Vec<_>>(),
            "nodes": parts.nodes.iter().map(|n| n.kind.as_str()).collect::<Vec<_>>(),
        });
        to_py(py, &value)
    }

    /// Checks a workflow against this engine (its node kinds included) without running it.
    fn check(&self, wf: &NativeWorkflow) -> PyResult<()> {
        self.prepare(wf).map(|_| ())
    }

    /// Runs a workflow to its end with the GIL released; returns the result as a dict (without
    /// its events when `events` is false). KeyboardInterrupt cancels the execution, waits for
    /// it to end, and is raised.
    #[pyo3(signature = (wf, input, limits=None, execution_id=None, events=true))]
    fn run(
        &self,
        py: Python<'_>,
        wf: &NativeWorkflow,
        input: &Bound<'_, PyAny>,
        limits: Option<&Bound<'_, PyDict>>,
        execution_id: Option<String>,
        events: bool,
    ) -> PyResult<Py<PyAny>> {
        let input = to_json(input)?;
        let (engine, prepared) = self.prepare(wf)?;
        let cancel = CancellationToken::new();
        let execution_id = execution_id.unwrap_or_else(|| ulid::Ulid::new().to_string());
        let _live = self.live.register(&execution_id, &cancel);
        // Driven to its end on this thread: a durable run runs here too, so its Python
        // callables are called on the thread that called `run`.
        let options = Self::options(limits, Some(execution_id), &engine)?
            .cancel(cancel.clone())
            .discard_events(!events)
            .in_place(true);
        let durable = self.durable.clone();
        let interrupt = Interrupt {
            cancel: cancel.clone(),
            hit: Arc::new(AtomicBool::new(false)),
        };
        let hit = interrupt.hit.clone();
        let outcome = block_on_interruptible(
            py,
            INTERRUPT.scope(
                interrupt,
                run_unobserved(durable, engine, prepared, input, options),
            ),
            || cancel.cancel(),
        )?;
        if hit.load(Ordering::SeqCst) {
            return Err(PyKeyboardInterrupt::new_err(
                "KeyboardInterrupt raised by Python code the execution called; it was cancelled",
            ));
        }
        let mut result = outcome.map_err(to_py_err)?;
        if !events {
            result.events = Vec::new();
        }
        result_to_py(py, result)
    }

    /// Runs a workflow on asyncio: returns an awaitable of the result dict. No thread per run.
    #[pyo3(signature = (wf, input, limits=None, execution_id=None, events=true))]
    fn arun<'py>(
        &self,
        py: Python<'py>,
        wf: &NativeWorkflow,
        input: &Bound<'py, PyAny>,
        limits: Option<&Bound<'py, PyDict>>,
        execution_id: Option<String>,
        events: bool,
    ) -> PyResult<Bound<'py, PyAny>> {
        let input = to_json(input)?;
        let (engine, prepared) = self.prepare(wf)?;
        let cancel = CancellationToken::new();
        let execution_id = execution_id.unwrap_or_else(|| ulid::Ulid::new().to_string());
        let live = self.live.register(&execution_id, &cancel);
        let options = Self::options(limits, Some(execution_id), &engine)?
            .cancel(cancel)
            .discard_events(!events);
        let locals = pyo3_async_runtimes::tokio::get_current_locals(py)?;
        let durable = self.durable.clone();
        pyo3_async_runtimes::tokio::future_into_py(py, async move {
            let _live = live;
            let run = run_unobserved(durable, engine, prepared, input, options);
            let mut result = ASYNC_LOCALS.scope(locals, run).await.map_err(to_py_err)?;
            if !events {
                result.events = Vec::new();
            }
            Python::attach(|py| result_to_py(py, result))
        })
    }

    /// Whether executions are run durably in a store.
    #[getter]
    fn has_store(&self) -> bool {
        self.durable.is_some()
    }

    /// The durability mode (`sync`, `async`, `exit`), or None without a store.
    #[getter]
    fn durability(&self) -> Option<&'static str> {
        self.durable.as_ref().map(|d| d.mode.as_str())
    }

    /// The stored executions (dicts), optionally of one status.
    #[pyo3(signature = (status=None, limit=100, offset=0))]
    fn list_executions(
        &self,
        py: Python<'_>,
        status: Option<String>,
        limit: u32,
        offset: u64,
    ) -> PyResult<Py<PyAny>> {
        let store = self.require_store()?;
        let value = py
            .detach(|| runtime().block_on(store::list(&store, status, limit, offset)))
            .map_err(to_py_err)?;
        to_py(py, &value)
    }

    /// One stored execution with its node runs and events (a dict), or None.
    fn get_execution(&self, py: Python<'_>, execution_id: &str) -> PyResult<Py<PyAny>> {
        let store = self.require_store()?;
        let value = py
            .detach(|| runtime().block_on(store::get(&store, execution_id)))
            .map_err(to_py_err)?;
        to_py(py, &value)
    }

    /// Resumes a stored execution from its last step (after a crash, or an approval's
    /// `decision`); returns its result, or an awaitable of it when `asynchronous`. The graph is
    /// `wf`, else the one the store knows.
    #[pyo3(signature = (execution_id, wf=None, decision=None, input=None, node_id=None, asynchronous=false))]
    #[allow(clippy::too_many_arguments)]
    fn resume(
        &self,
        py: Python<'_>,
        execution_id: String,
        wf: Option<&NativeWorkflow>,
        decision: Option<String>,
        input: Option<&Bound<'_, PyAny>>,
        node_id: Option<String>,
        asynchronous: bool,
    ) -> PyResult<Py<PyAny>> {
        let durable = self.require_durable()?;
        let decision = match decision {
            Some(d) => {
                let mut decision = Decision::new(d);
                if let Some(input) = input {
                    decision = decision.input(to_json(input)?);
                }
                if let Some(node) = node_id {
                    decision = decision.at(node);
                }
                Some(decision)
            }
            None => None,
        };
        let def = wf.map(|w| w.def.clone());
        let (_, engine) = self.engine();
        let live_id = execution_id.clone();
        self.finish(
            py,
            asynchronous,
            Some(&live_id),
            move |options| async move {
                durable
                    .resume(&engine, &execution_id, def, decision, options)
                    .await
            },
        )
    }

    /// Starts a new execution from step `step` of a stored one, with `variables` set; the
    /// original is not touched.
    #[pyo3(signature = (execution_id, step, variables=None, wf=None, asynchronous=false))]
    fn fork(
        &self,
        py: Python<'_>,
        execution_id: String,
        step: i64,
        variables: Option<&Bound<'_, PyAny>>,
        wf: Option<&NativeWorkflow>,
        asynchronous: bool,
    ) -> PyResult<Py<PyAny>> {
        let durable = self.require_durable()?;
        let variables = match variables {
            Some(v) => match to_json(v)? {
                Value::Object(map) => Some(map),
                _ => {
                    return Err(PyTypeError::new_err("variables must be a dict"));
                }
            },
            None => None,
        };
        let def = wf.map(|w| w.def.clone());
        let (_, engine) = self.engine();
        self.finish(py, asynchronous, None, move |options| async move {
            durable
                .fork(&engine, &execution_id, step, variables, def, options)
                .await
        })
    }

    /// Cancels an execution: one this engine is running (from any thread or task: it stops
    /// and ends `cancelled`), else a stored one no process runs (waiting at an approval,
    /// pending, or abandoned by a dead process), which ends `cancelled` with `reason`.
    #[pyo3(signature = (execution_id, reason))]
    fn cancel(&self, py: Python<'_>, execution_id: &str, reason: &str) -> PyResult<()> {
        if let Some(token) = self.live.token(execution_id) {
            token.cancel();
            return Ok(());
        }
        let Some(durable) = self.durable.clone() else {
            return Err(to_py_err(Error::NotFound {
                what: "running execution".into(),
                name: execution_id.to_owned(),
            }));
        };
        py.detach(|| runtime().block_on(durable.cancel(execution_id, reason)))
            .map_err(to_py_err)
    }

    /// The steps of a stored execution (dicts: step, node_id, iteration, attempt, status,
    /// state after it).
    fn steps(&self, py: Python<'_>, execution_id: &str) -> PyResult<Py<PyAny>> {
        let durable = self.require_durable()?;
        let value = py
            .detach(|| runtime().block_on(durable.steps(execution_id)))
            .map_err(to_py_err)?;
        to_py(py, &value)
    }

    /// Resumes every execution due now (expired leases, timed-out approvals); returns a list
    /// of `(execution_id, result or exception)`.
    fn resume_due(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        let durable = self.require_durable()?;
        let (_, engine) = self.engine();
        let outcomes =
            block_on_interruptible(py, durable.resume_due(&engine), || {})?.map_err(to_py_err)?;
        let list = pyo3::types::PyList::empty(py);
        for (id, outcome) in outcomes {
            let value = match outcome {
                Ok(result) => result_to_py(py, result)?,
                Err(error) => to_py_err(error).into_value(py).into_any(),
            };
            list.append((id, value))?;
        }
        Ok(list.into_any().unbind())
    }

    /// Starts a workflow and returns its event stream (sync iterator).
    #[pyo3(signature = (wf, input, limits=None, execution_id=None))]
    fn stream(
        &self,
        wf: &NativeWorkflow,
        input: &Bound<'_, PyAny>,
        limits: Option<&Bound<'_, PyDict>>,
        execution_id: Option<String>,
    ) -> PyResult<NativeStream> {
        let started = self.start(wf, input, limits, execution_id)?;
        Ok(NativeStream {
            cancel: started.cancel,
            execution_id: started.execution_id,
            events: Mutex::new(Some(started.events)),
            result: Mutex::new(Some(started.result)),
        })
    }

    /// Starts a workflow and returns its event stream (async iterator).
    #[pyo3(signature = (wf, input, limits=None, execution_id=None))]
    fn astream(
        &self,
        wf: &NativeWorkflow,
        input: &Bound<'_, PyAny>,
        limits: Option<&Bound<'_, PyDict>>,
        execution_id: Option<String>,
    ) -> PyResult<NativeAsyncStream> {
        let started = self.start(wf, input, limits, execution_id)?;
        Ok(NativeAsyncStream {
            cancel: started.cancel,
            execution_id: started.execution_id,
            events: Arc::new(tokio::sync::Mutex::new(started.events)),
            result: Arc::new(tokio::sync::Mutex::new(Some(started.result))),
        })
    }
}

impl NativeEngine {
    fn require_store(&self) -> PyResult<Arc<dyn chatter_core::store::Store>> {
        self.require_durable().map(|d| d.store)
    }

    fn require_durable(&self) -> PyResult<Durable> {
        self.durable.clone().ok_or_else(|| {
            to_py_err(Error::Config {
                message: "this engine has no store: create it with Engine(store=\"sqlite://...\")"
                    .into(),
            })
        })
    }

    fn start(
        &self,
        wf: &NativeWorkflow,
        input: &Bound<'_, PyAny>,
        limits: Option<&Bound<'_, PyDict>>,
        execution_id: Option<String>,
    ) -> PyResult<Started> {
        let input = to_json(input)?;
        let (engine, prepared) = self.prepare(wf)?;
        let options = Self::options(limits, execution_id, &engine)?;
        let Some(durable) = self.durable.clone() else {
            let _guard = runtime().enter();
            let handle = engine
                .start_prepared(&prepared, input, options)
                .map_err(to_py_err)?;
            let live = self
                .live
                .register(handle.execution_id(), &handle.cancel_token());
            let events = handle.subscribe().boxed();
            return Ok(Started {
                cancel: handle.cancel_token(),
                execution_id: handle.execution_id().to_owned(),
                events,
                result: async move {
                    let _live = live;
                    handle.result().await
                }
                .boxed(),
            });
        };
        // Durable: the tracker runs it on the runtime; its events come through a channel that
        // closes when the run ends.
        let execution_id = options
            .execution_id
            .clone()
            .unwrap_or_else(|| ulid::Ulid::new().to_string());
        let cancel = CancellationToken::new();
        let options = options
            .execution_id(execution_id.clone())
            .cancel(cancel.clone());
        let (tx, rx) = futures::channel::mpsc::unbounded();
        let live = self.live.register(&execution_id, &cancel);
        let task = runtime().spawn(async move {
            let _live = live;
            durable
                .run(
                    &engine,
                    &prepared,
                    input,
                    options,
                    Some(move |event: &chatter_core::Event| {
                        // The reader may be gone; the run goes on.
                        let _ = tx.unbounded_send(event.clone());
                    }),
                )
                .await
        });
        let result = async move {
            task.await.map_err(|e| Error::Internal {
                message: format!("execution task ended abnormally: {e}"),
            })?
        };
        Ok(Started {
            cancel,
            execution_id,
            events: rx.boxed(),
            result: result.boxed(),
        })
    }

    /// Runs `make`'s future (given options with a cancellation token) to a result: blocking
    /// with the GIL released (KeyboardInterrupt cancels it), or as an awaitable when
    /// `asynchronous`. With `execution_id`, `cancel(execution_id)` reaches it while it runs.
    fn finish<F>(
        &self,
        py: Python<'_>,
        asynchronous: bool,
        execution_id: Option<&str>,
        make: impl FnOnce(RunOptions) -> F,
    ) -> PyResult<Py<PyAny>>
    where
        F: Future<Output = chatter_core::Result<chatter_core::ExecutionResult>> + Send + 'static,
    {
        let cancel = CancellationToken::new();
        // A resumed execution can be cancelled by its id while it runs.
        let live = execution_id.map(|id| self.live.register(id, &cancel));
        // A blocking call drives the run to its end on this thread, where it runs
        // (`RunOptions::in_place`).
        let fut = make(
            RunOptions::default()
                .cancel(cancel.clone())
                .in_place(!asynchronous),
        );
        if asynchronous {
            let locals = pyo3_async_runtimes::tokio::get_current_locals(py)?;
            let awaitable = pyo3_async_runtimes::tokio::future_into_py(py, async move {
                let _live = live;
                let result = ASYNC_LOCALS.scope(locals, fut).await.map_err(to_py_err)?;
                Python::attach(|py| result_to_py(py, result))
            })?;
            return Ok(awaitable.unbind());
        }
        let interrupt = Interrupt {
            cancel: cancel.clone(),
            hit: Arc::new(AtomicBool::new(false)),
        };
        let hit = interrupt.hit.clone();
        let outcome =
            block_on_interruptible(py, INTERRUPT.scope(interrupt, fut), || cancel.cancel())?;
        if hit.load(Ordering::SeqCst) {
            return Err(PyKeyboardInterrupt::new_err(
                "KeyboardInterrupt raised by Python code the execution called; it was cancelled",
            ));
        }
        result_to_py(py, outcome.map_err(to_py_err)?)
    }
}

/// A started execution: its cancellation, id, events and result.
struct Started {
    cancel: CancellationToken,
    execution_id: String,
    events: BoxStream<'static, chatter_core::Event>,
    result: BoxFuture<'static, chatter_core::Result<chatter_core::ExecutionResult>>,
}

/// The events of a running execution, as a blocking iterator of dicts.
#[pyclass(module = "chatter._native", frozen)]
pub struct NativeStream {
    cancel: CancellationToken,
    execution_id: String,
    events: Mutex<Option<BoxStream<'static, chatter_core::Event>>>,
    result: Mutex<Option<BoxFuture<'static, chatter_core::Result<chatter_core::ExecutionResult>>>>,
}

#[pymethods]
impl NativeStream {
    fn __iter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    fn __next__(&self, py: Python<'_>) -> PyResult<Option<Py<PyAny>>> {
        let Some(mut events) = lock(&self.events).take() else {
            return Ok(None);
        };
        let cancel = self.cancel.clone();
        let (next, events) = block_on_interruptible(
            py,
            async move {
                let next = events.next().await;
                (next, events)
            },
            move || cancel.cancel(),
        )?;
        match next {
            Some(event) => {
                *lock(&self.events) = Some(events);
                to_py(py, &serde_json::to_value(&event).unwrap_or(Value::Null)).map(Some)
            }
            None => Ok(None),
        }
    }

    /// The execution's id.
    #[getter]
    fn execution_id(&self) -> &str {
        &self.execution_id
    }

    /// Asks the execution to stop.
    fn cancel(&self) {
        self.cancel.cancel();
    }

    /// Waits for the execution's result (a dict).
    fn result(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        let Some(result) = lock(&self.result).take() else {
            return Err(to_py_err(Error::Config {
                message: "the result of this stream was already taken".into(),
            }));
        };
        let cancel = self.cancel.clone();
        let result =
            block_on_interruptible(py, result, move || cancel.cancel())?.map_err(to_py_err)?;
        result_to_py(py, result)
    }
}

/// The events of a running execution, as an async iterator of dicts.
#[pyclass(module = "chatter._native", frozen)]
pub struct NativeAsyncStream {
    cancel: CancellationToken,
    execution_id: String,
    events: Arc<tokio::sync::Mutex<BoxStream<'static, chatter_core::Event>>>,
    #[allow(clippy::type_complexity)]
    result: Arc<
        tokio::sync::Mutex<
            Option<BoxFuture<'static, chatter_core::Result<chatter_core::ExecutionResult>>>,
        >,
    >,
}

#[pymethods]
impl NativeAsyncStream {
    fn __aiter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    fn __anext__<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let events = self.events.clone();
        pyo3_async_runtimes::tokio::future_into_py(py, async move {
            let next = events.lock().await.next().await;
            match next {
                Some(event) => Python::attach(|py| {
                    to_py(py, &serde_json::to_value(&event).unwrap_or(Value::Null))
                }),
                None => Err(PyStopAsyncIteration::new_err(())),
            }
        })
    }

    /// The execution's id.
    #[getter]
    fn execution_id(&self) -> &str {
        &self.execution_id
    }

    /// Asks the execution to stop.
    fn cancel(&self) {
        self.cancel.cancel();
    }

    /// An awaitable of the execution's result (a dict).
    fn result<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let result = self.result.clone();
        pyo3_async_runtimes::tokio::future_into_py(py, async move {
            let Some(result) = result.lock().await.take() else {
                return Err(to_py_err(Error::Config {
                    message: "the result of this stream was already taken".into(),
                }));
            };
            let result = result.await.map_err(to_py_err)?;
            Python::attach(|py| result_to_py(py, result))
        })
    }
}

/// The built-in templates, as dicts.
#[pyfunction]
pub(crate) fn templates_list(py: Python<'_>) -> PyResult<Py<PyAny>> {
    let templates: Vec<Value> = builtin_templates()
        .iter()
        .map(|t| {
            let mut v = serde_json::to_value(t).unwrap_or(Value::Null);
            if let Value::Object(map) = &mut v {
                map.insert("parameter_schema".into(), t.parameter_schema());
            }
            v
        })
        .collect();
    to_py(py, &Value::Array(templates))
}

/// The workflow a built-in template generates with these parameters.
#[pyfunction]
pub(crate) fn template_generate(name: &str, params: &Bound<'_, PyAny>) -> PyResult<NativeWorkflow> {
    let params = to_json(params)?;
    let template_error = |e: Error| match e {
        Error::Template { .. } | Error::Invalid(_) => to_py_err(e),
        other => to_py_err(Error::Template {
            message: other.to_string(),
        }),
    };
    let Some(spec) = builtin_templates().into_iter().find(|t| t.name == name) else {
        return Err(template_error(Error::Template {
            message: format!("unknown template `{name}`"),
        }));
    };
    let merged = spec.merge_params(&params).map_err(template_error)?;
    spec.generate(&merged)
        .map(NativeWorkflow::new)
        .map_err(template_error)
}
