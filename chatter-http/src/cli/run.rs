//! `chatter run`: runs a definition with a model provider and tools, streaming as it goes.

use std::io::Write;
use std::path::{Path, PathBuf};

use chatter_core::engine::{
    DurabilityMode, Engine, ExecutionResult, ExecutionStatus, NodeRunStatus, RunOptions,
};
use chatter_core::providers;
use chatter_core::tools::StubTools;
use chatter_core::{Event, EventKind, ModelRegistry, ToolRegistry, WorkflowDefinition};
use futures::StreamExt;
use serde_json::{Value, json};

use std::sync::Arc;

use chatter_core::RetrieverRegistry;
use chatter_core::store::ExecutionKind;
use chatter_core::tracker::{ExecutionMeta, TrackedRun, WorkflowTracker};

use super::{OutputFormat, store, write_out};
use crate::error::Error;

/// What `chatter run` was asked to do.
#[derive(Debug, Clone)]
pub(crate) struct RunArgs {
    pub(crate) file: PathBuf,
    pub(crate) input: Option<String>,
    pub(crate) models: Vec<String>,
    pub(crate) tools: Option<PathBuf>,
    pub(crate) events: bool,
    pub(crate) format: OutputFormat,
    pub(crate) db: Option<String>,
    pub(crate) documents: Option<PathBuf>,
    pub(crate) durability: Option<String>,
}

/// The exit code of a run that paused at an approval, waiting for a decision.
pub(crate) const EXIT_WAITING: u8 = 3;

/// The input object: `--input` as JSON, or a bare string taken as `{"message": ...}`.
pub(crate) fn parse_input(input: Option<&str>) -> Result<Value, Error> {
    let Some(text) = input else {
        return Ok(json!({}));
    };
    match serde_json::from_str::<Value>(text) {
        Ok(Value::Object(map)) => Ok(Value::Object(map)),
        Ok(other) => Err(Error::Usage(format!(
            "--input must be a JSON object (or plain text for the message), found {other}"
        ))),
        Err(_) if !text.trim_start().starts_with('{') => Ok(json!({"message": text})),
        Err(e) => Err(Error::Usage(format!("--input is not valid JSON: {e}"))),
    }
}

/// The model providers named by `--model` (`scripted:FILE`, `openai:MODEL`).
pub(crate) fn models(specs: &[String]) -> Result<ModelRegistry, Error> {
    let mut registry = ModelRegistry::new();
    for spec in specs {
        let (name, model) = providers::from_spec(spec).map_err(|e| match e {
            chatter_core::Error::Io { .. } | chatter_core::Error::Config { .. } => Error::File {
                path: spec.clone(),
                source: e,
            },
            other => Error::Core(other),
        })?;
        registry.register(name, model);
    }
    Ok(registry)
}

pub(crate) fn tools(file: Option<&Path>) -> Result<ToolRegistry, Error> {
    let mut registry = ToolRegistry::new();
    if let Some(file) = file {
        let stubs = StubTools::from_file(file).map_err(|source| Error::File {
            path: file.display().to_string(),
            source,
        })?;
        stubs.register_into(&mut registry);
    }
    Ok(registry)
}

/// Whether the definition calls a model (so a provider is needed).
pub(crate) fn needs_model(def: &WorkflowDefinition) -> bool {
    def.nodes
        .iter()
        .any(|n| matches!(n.kind.as_str(), "llm" | "memory"))
}

/// `--durability`: a mode name, only with `--db` (default `sync`).
fn durability(name: Option<&str>, db: Option<&str>) -> Result<DurabilityMode, Error> {
    match (name, db) {
        (None, _) => Ok(DurabilityMode::Sync),
        (Some(name), Some(_)) => DurabilityMode::parse(name).map_err(|_| {
            Error::Usage(format!(
                "--durability must be sync, async or exit (got `{name}`)"
            ))
        }),
        (Some(_), None) => Err(Error::Usage(
            "--durability needs --db (the database the steps are written to)".into(),
        )),
    }
}

/// The exit code of an execution's outcome: 0 completed, [`EXIT_WAITING`] waiting for a
/// decision, 1 otherwise.
pub(crate) fn exit_code(result: &ExecutionResult) -> u8 {
    match result.status {
        ExecutionStatus::Completed => 0,
        ExecutionStatus::Waiting => EXIT_WAITING,
        _ => 1,
    }
}

pub(crate) fn run(args: RunArgs, out: &mut dyn Write) -> Result<u8, Error> {
    let def = super::validate::load(&args.file)?;
    let input = parse_input(args.input.as_deref())?;
    let mode = durability(args.durability.as_deref(), args.db.as_deref())?;
    let (models, tools, documents) = providers(
        &args.models,
        args.tools.as_deref(),
        args.documents.as_deref(),
        needs_model(&def).then_some("this workflow calls"),
    )?;
    let runtime = store::runtime()?;
    let result = runtime.block_on(async {
        let mut builder = Engine::builder().models(models).tools(tools);
        let db = match (&args.db, &documents) {
            (Some(url), _) => Some(store::open(url).await?),
            (None, Some(_)) => Some(store::open("sqlite::memory:").await?),
            (None, None) => None,
        };
        if let (Some(db), Some(documents)) = (&db, documents) {
            let retriever = store::ingest(db, documents).await?;
            let mut retrievers = RetrieverRegistry::new();
            retrievers.register("documents", Arc::new(retriever));
            builder = builder.retrievers(retrievers);
        }
        let engine = builder.build();
        if let (Some(db), Some(_)) = (db, &args.db) {
            // Recorded: the tracker follows the event stream and commits as it goes.
            let tracker = WorkflowTracker::new(db).durability(mode);
            let options = RunOptions::default().owner(store::LOCAL_OWNER);
            let mut printer = TextPrinter::default();
            let mut print_error = None;
            let text = args.format == OutputFormat::Text;
            let run = tracker
                .run_observed(
                    &engine,
                    &def,
                    input,
                    options,
                    ExecutionMeta::new(store::LOCAL_OWNER, ExecutionKind::Adhoc),
                    |event| {
                        if text && print_error.is_none() {
                            print_error = printer.print(event, &mut *out).err();
                        }
                    },
                )
                .await?;
            if let Some(error) = print_error {
                return Err(error);
            }
            warn_unrecorded(&run);
            return Ok::<ExecutionResult, Error>(run.result);
        }
        let handle = engine.start(&def, input, RunOptions::default())?;
        let mut stream = handle.subscribe();
        let mut printer = TextPrinter::default();
        while let Some(event) = stream.next().await {
            if args.format == OutputFormat::Text {
                printer.print(&event, out)?;
            }
        }
        let result = handle.result().await?;
        Ok::<ExecutionResult, Error>(result)
    })?;
    report(
        &result,
        args.format,
        args.events,
        None,
        args.db.as_deref(),
        out,
    )
}

/// The models, tools and documents named by `--model`, `--tools` and `--documents`. With
/// `require_model` (what needs one: "this workflow calls"), no `--model` is a usage error.
pub(crate) type Providers = (ModelRegistry, ToolRegistry, Option<Vec<(String, String)>>);

/// Reads `--model`, `--tools` and `--documents` (see [`Providers`]).
pub(crate) fn providers(
    model_specs: &[String],
    tools_file: Option<&Path>,
    documents: Option<&Path>,
    require_model: Option<&str>,
) -> Result<Providers, Error> {
    let models = models(model_specs)?;
    if let Some(what) = require_model
        && models.names().next().is_none()
    {
        return Err(Error::Usage(format!(
            "{what} a model: pass --model scripted:FILE (offline) or --model \
             openai:MODEL (OPENAI_API_KEY, OPENAI_BASE_URL)"
        )));
    }
    let tools = tools(tools_file)?;
    let documents = documents.map(store::load_documents).transpose()?;
    Ok((models, tools, documents))
}

/// Writes the outcome of an execution (`--format`: the JSON document, where `template` adds the
/// template's name; or the text summary, with how to resume it when it waits for a decision
/// and was recorded in `db`) and returns the exit code ([`exit_code`]).
pub(crate) fn report(
    result: &ExecutionResult,
    format: OutputFormat,
    with_events: bool,
    template: Option<&str>,
    db: Option<&str>,
    out: &mut dyn Write,
) -> Result<u8, Error> {
    match format {
        OutputFormat::Json => {
            let mut doc = json_report(result, with_events);
            if let Some(name) = template {
                doc["template"] = json!(name);
            }
            let text = serde_json::to_string_pretty(&doc).unwrap_or_default();
            write_out(out, &format!("{text}\n"))?;
        }
        OutputFormat::Text => write_out(out, &text_summary(result, db))?,
    }
    Ok(exit_code(result))
}

/// Warns on stderr when a tracked run was not fully recorded.
pub(crate) fn warn_unrecorded(run: &TrackedRun) {
    if let Some(error) = &run.store_error {
        eprintln!(
            "warning: execution {} was not fully recorded: {error}",
            run.result.execution_id
        );
    }
}

/// The approvals an execution waits at: `(node id, question, allowed decisions)`.
fn waiting_at(result: &ExecutionResult) -> Vec<(&str, &str, Vec<&str>)> {
    if result.status != ExecutionStatus::Waiting {
        return Vec::new();
    }
    let mut waiting: Vec<(&str, &str, Vec<&str>)> = Vec::new();
    for run in result
        .node_runs
        .iter()
        .filter(|r| r.status == NodeRunStatus::Waiting)
    {
        let question = run
            .output
            .get("question")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let decisions = run
            .output
            .get("allowed_decisions")
            .and_then(Value::as_array)
            .map(|list| list.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        waiting.retain(|(node, _, _)| *node != run.node_id);
        waiting.push((&run.node_id, question, decisions));
    }
    waiting
}

/// The JSON document of `chatter run --format json`.
pub(crate) fn json_report(result: &ExecutionResult, with_events: bool) -> Value {
    let node_runs: Vec<Value> = result
        .node_runs
        .iter()
        .map(|r| {
            json!({
                "node_id": r.node_id,
                "iteration": r.iteration,
                "status": r.status,
                "started_at": chatter_core::time::rfc3339_ms(r.started_at_ms),
                "duration_ms": r.duration_ms,
                "error": r.error,
            })
        })
        .collect();
    let mut doc = json!({
        "execution_id": result.execution_id,
        "status": result.status,
        "response": result.response,
        "usage": {
            "prompt_tokens": result.usage.prompt_tokens,
            "completion_tokens": result.usage.completion_tokens,
            "total_tokens": result.usage.total_tokens,
            "cost": result.usage.cost,
        },
        "node_runs": node_runs,
    });
    if let Some(error) = &result.error {
        doc["error"] = serde_json::to_value(error).unwrap_or(Value::Null);
    }
    let waiting = waiting_at(result);
    if !waiting.is_empty() {
        doc["waiting"] = waiting
            .iter()
            .map(|(node_id, question, decisions)| {
                json!({"node_id": node_id, "question": question, "allowed_decisions": decisions})
            })
            .collect();
    }
    if with_events {
        doc["events"] = serde_json::to_value(&result.events).unwrap_or(Value::Null);
    }
    doc
}

/// Prints tokens and node progress as they happen.
#[derive(Default)]
pub(crate) struct TextPrinter {
    /// The node whose tokens are being printed (a newline ends its line).
    streaming: Option<String>,
}

impl TextPrinter {
    pub(crate) fn print(&mut self, event: &Event, out: &mut dyn Write) -> Result<(), Error> {
        let line = match &event.kind {
            EventKind::Token { node_id, text } => {
                let mut s = String::new();
                if self.streaming.as_deref() != Some(node_id) {
                    s.push_str(&format!("  [{node_id}] "));
                    self.streaming = Some(node_id.clone());
                }
                s.push_str(text);
                return write_out(out, &s);
            }
            EventKind::NodeStarted {
                node_id,
                kind,
                iteration,
                attempt,
            } => {
                let mut s = format!("> {node_id} ({kind})");
                if *iteration > 0 {
                    s.push_str(&format!(" iteration {iteration}"));
                }
                if *attempt > 1 {
                    s.push_str(&format!(" attempt {attempt}"));
                }
                s
            }
            EventKind::ToolCallStarted {
                tool, arguments, ..
            } => format!("  tool {tool} {arguments}"),
            EventKind::ToolCallFinished {
                tool,
                ok,
                result,
                duration_ms,
                ..
            } => format!(
                "  tool {tool} {} in {duration_ms} ms: {result}",
                if *ok { "ok" } else { "failed" }
            ),
            EventKind::NodeCompleted {
                node_id,
                duration_ms,
                ..
            } => format!("< {node_id} completed in {duration_ms} ms"),
            EventKind::NodeFailed { node_id, error, .. } => format!("! {node_id} failed: {error}"),
            EventKind::NodeRetrying {
                node_id,
                attempt,
                delay_ms,
                error,
            } => {
                format!("! {node_id} attempt {attempt} failed ({error}); retrying in {delay_ms} ms")
            }
            EventKind::NodeSkipped { node_id } => format!("- {node_id} skipped"),
            EventKind::Interrupted {
                node_id, question, ..
            } => format!("? {node_id} waits: {question}"),
            _ => return Ok(()),
        };
        let mut text = String::new();
        if self.streaming.take().is_some() {
            text.push('\n');
        }
        text.push_str(&line);
        text.push('\n');
        write_out(out, &text)
    }
}

fn text_summary(result: &ExecutionResult, db: Option<&str>) -> String {
    let mut text = format!(
        "\nexecution {} {} in {} ms; tokens {} (prompt {}, completion {}), cost ${:.6}\n",
        result.execution_id,
        serde_json::to_value(result.status)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default(),
        result.duration_ms,
        result.usage.total_tokens,
        result.usage.prompt_tokens,
        result.usage.completion_tokens,
        result.usage.cost,
    );
    if let Some(error) = &result.error {
        text.push_str(&format!("error: {}\n", error.message));
    }
    if let Some(response) = &result.response {
        text.push_str(&format!("response: {response}\n"));
    }
    for (node_id, question, decisions) in waiting_at(result) {
        text.push_str(&format!(
            "waiting at {node_id}: {question} (decisions: {})\n",
            decisions.join(", ")
        ));
        if let Some(db) = db {
            text.push_str(&format!(
                "resume with: chatter executions approve {} --node {node_id} --decision {} --db {db}\n",
                result.execution_id,
                decisions.first().copied().unwrap_or("DECISION")
            ));
        }
    }
    text
}
