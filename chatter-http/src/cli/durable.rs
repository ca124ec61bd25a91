//! `chatter executions resume|approve|steps|fork|resume-due`: durable executions from the
//! command line (docs/durability.md).
//!
//! The graph of a recorded execution comes from the store ([`StoreGraphSource`]); models and
//! tools are given as for `chatter run`. The command line acts as the local owner: another
//! owner's execution is as unknown as a missing one (exit 1).

use std::io::Write;
use std::path::Path;
use std::sync::Arc;

use chatter_core::engine::{DurabilityMode, Engine, RunOptions};
use chatter_core::store::{ExecutionRecord, Store};
use chatter_core::tracker::{Decision, GraphSource, StoreGraphSource, TrackedRun, WorkflowTracker};
use serde_json::{Map, Value, json};

use super::run::{TextPrinter, needs_model, providers, report, warn_unrecorded};
use super::{OutputFormat, ResumeArgs, store, write_out};
use crate::error::Error;

/// How a command continues an execution.
#[derive(Debug, Clone)]
pub(crate) enum Continue {
    /// From its last step (a crash, or a timed-out approval).
    Resume,
    /// With an approval's decision.
    Approve(Decision),
    /// As a new execution from a step, with edited variables.
    Fork {
        step: i64,
        variables: Option<Map<String, Value>>,
    },
}

/// `chatter executions approve ID --decision D [--input JSON] [--node NODE]`.
pub(crate) fn approve(
    id: &str,
    decision: String,
    input: Option<&str>,
    node: Option<String>,
    with: &ResumeArgs,
    out: &mut dyn Write,
) -> Result<u8, Error> {
    let input = match input {
        None => Value::Null,
        Some(text) => serde_json::from_str(text)
            .map_err(|e| Error::Usage(format!("--input is not valid JSON: {e}")))?,
    };
    let mut decision = Decision::new(decision).input(input);
    if let Some(node) = node {
        decision = decision.at(node);
    }
    resume(id, Continue::Approve(decision), with, out)
}

/// `chatter executions fork ID --step N [--set name=JSON ...]`.
pub(crate) fn fork(
    id: &str,
    step: i64,
    set: &[String],
    with: &ResumeArgs,
    out: &mut dyn Write,
) -> Result<u8, Error> {
    let variables = if set.is_empty() {
        None
    } else {
        Some(parse_sets(set)?)
    };
    resume(id, Continue::Fork { step, variables }, with, out)
}

/// The variables of `--set name=JSON` arguments.
fn parse_sets(set: &[String]) -> Result<Map<String, Value>, Error> {
    let mut variables = Map::new();
    for item in set {
        let Some((name, value)) = item.split_once('=') else {
            return Err(Error::Usage(format!(
                "--set {item}: expected name=JSON (e.g. --set draft='\"short\"')"
            )));
        };
        let name = name.trim();
        if name.is_empty() {
            return Err(Error::Usage(format!(
                "--set {item}: the variable name is empty"
            )));
        }
        let value: Value = serde_json::from_str(value).map_err(|e| {
            Error::Usage(format!(
                "--set {item}: the value is not JSON ({e}); quote text: {name}='\"text\"'"
            ))
        })?;
        variables.insert(name.to_owned(), value);
    }
    Ok(variables)
}

/// The execution `id` when it exists and belongs to the command line's owner.
async fn local_execution(store: &Arc<dyn Store>, id: &str) -> Result<ExecutionRecord, Error> {
    match store.get_execution(id).await? {
        Some(record) if record.owner_id == store::LOCAL_OWNER => Ok(record),
        _ => Err(Error::Core(chatter_core::Error::NotFound {
            what: "execution".into(),
            name: id.to_owned(),
        })),
    }
}

/// `chatter executions resume ID` (and `approve`, `fork`): continues a recorded execution on
/// its stored graph and prints its outcome as `chatter run` does.
pub(crate) fn resume(
    id: &str,
    what: Continue,
    with: &ResumeArgs,
    out: &mut dyn Write,
) -> Result<u8, Error> {
    let mode = DurabilityMode::parse(&with.durability).map_err(|_| {
        Error::Usage(format!(
            "--durability must be sync, async or exit (got `{}`)",
            with.durability
        ))
    })?;
    let runtime = store::runtime()?;
    let forked = matches!(what, Continue::Fork { .. });
    let run = runtime.block_on(async {
        let db = store::open(&with.db).await?;
        let record = local_execution(&db, id).await?;
        let def = StoreGraphSource::new(db.clone())
            .definition_for(&record)
            .await?;
        let (models, tools, _) = providers(
            &with.models,
            with.tools.as_deref(),
            None,
            needs_model(&def).then_some("this workflow calls"),
        )?;
        let engine = Engine::builder().models(models).tools(tools).build();
        let tracker = WorkflowTracker::new(db).durability(mode);
        let options = RunOptions::default().owner(store::LOCAL_OWNER);
        let text = with.format == OutputFormat::Text;
        let mut printer = TextPrinter::default();
        let mut print_error = None;
        // The stored events are replayed first; print only the new ones.
        let seen = u64::try_from(record.last_event_seq).unwrap_or(0);
        let mut observe = |event: &chatter_core::Event| {
            if text && print_error.is_none() && event.seq > seen {
                print_error = printer.print(event, &mut *out).err();
            }
        };
        let run: TrackedRun = match what {
            Continue::Resume => {
                tracker
                    .resume_observed(&engine, &def, id, None, options, &mut observe)
                    .await?
            }
            Continue::Approve(decision) => {
                tracker
                    .resume_observed(&engine, &def, id, Some(decision), options, &mut observe)
                    .await?
            }
            Continue::Fork { step, variables } => {
                tracker
                    .fork(&engine, &def, id, step, variables, options)
                    .await?
            }
        };
        if let Some(error) = print_error {
            return Err(error);
        }
        Ok::<TrackedRun, Error>(run)
    })?;
    warn_unrecorded(&run);
    if forked && with.format == OutputFormat::Text {
        write_out(
            out,
            &format!("forked {id} into {}\n", run.result.execution_id),
        )?;
    }
    report(
        &run.result,
        with.format,
        with.events,
        None,
        Some(&with.db),
        out,
    )
}

/// `chatter executions cancel ID --db DB [--reason R]`.
pub(crate) fn cancel(
    url: &str,
    id: &str,
    reason: &str,
    format: OutputFormat,
    out: &mut dyn Write,
) -> Result<u8, Error> {
    let runtime = store::runtime()?;
    let record = runtime.block_on(async {
        let db = store::open(url).await?;
        local_execution(&db, id).await?;
        let now = chatter_core::engine::Clock::now_ms(&chatter_core::engine::SystemClock);
        let record = WorkflowTracker::new(db)
            .cancel(id, Some(store::LOCAL_OWNER), reason, now)
            .await?;
        Ok::<_, Error>(record)
    })?;
    let text = match format {
        OutputFormat::Json => {
            let doc = json!({"execution_id": id, "status": record.status, "error": record.error});
            serde_json::to_string_pretty(&doc).unwrap_or_default()
        }
        OutputFormat::Text => format!("execution {id}: {}", record.status.as_str()),
    };
    write_out(out, &format!("{text}\n"))?;
    Ok(0)
}

/// `chatter executions steps ID`: each step with the state after it (JSON).
pub(crate) fn steps(
    url: &str,
    id: &str,
    format: OutputFormat,
    out: &mut dyn Write,
) -> Result<u8, Error> {
    let runtime = store::runtime()?;
    let (record, steps) = runtime.block_on(async {
        let db = store::open(url).await?;
        let record = local_execution(&db, id).await?;
        let steps = WorkflowTracker::new(db).steps(id).await?;
        Ok::<_, Error>((record, steps))
    })?;
    match format {
        OutputFormat::Json => {
            let doc = json!({
                "execution_id": id,
                "status": record.status,
                "steps": steps,
            });
            let text = serde_json::to_string_pretty(&doc).unwrap_or_default();
            write_out(out, &format!("{text}\n"))?;
        }
        OutputFormat::Text => {
            let mut text = format!(
                "execution {id} ({}): {} steps\n",
                record.status.as_str(),
                steps.len()
            );
            if !steps.is_empty() {
                text.push_str("  step  node  iteration  attempt  status\n");
            }
            for s in &steps {
                text.push_str(&format!(
                    "  {:>4}  {}  {}  {}  {}\n",
                    s.step,
                    s.node_id,
                    s.iteration,
                    s.attempt,
                    s.status.as_str()
                ));
            }
            write_out(out, &text)?;
        }
    }
    Ok(0)
}

/// `chatter executions resume-due`: resumes every execution due now; exit 1 when one could
/// not be resumed.
pub(crate) fn resume_due(
    url: &str,
    models: &[String],
    tools: Option<&Path>,
    format: OutputFormat,
    out: &mut dyn Write,
) -> Result<u8, Error> {
    let models = super::run::models(models)?;
    let tools = super::run::tools(tools)?;
    let runtime = store::runtime()?;
    let outcomes = runtime.block_on(async {
        let db = store::open(url).await?;
        let engine = Engine::builder().models(models).tools(tools).build();
        let now = engine.services().clock.now_ms();
        let source = StoreGraphSource::new(db.clone());
        let outcomes = WorkflowTracker::new(db)
            .resume_due(&engine, &source, now)
            .await?;
        Ok::<_, Error>(outcomes)
    })?;
    let mut code = 0;
    let mut entries = Vec::with_capacity(outcomes.len());
    let mut text = String::new();
    if outcomes.is_empty() {
        text.push_str("no execution is due\n");
    }
    for (id, outcome) in &outcomes {
        match outcome {
            Ok(run) => {
                warn_unrecorded(run);
                let status = run.result.status.as_str();
                text.push_str(&format!("{id}  {status}\n"));
                entries.push(json!({"execution_id": id, "status": status}));
            }
            Err(error) => {
                code = 1;
                text.push_str(&format!("{id}  error: {error}\n"));
                entries.push(json!({"execution_id": id, "error": error.to_string()}));
            }
        }
    }
    match format {
        OutputFormat::Json => {
            let doc = json!({ "resumed": entries });
            let text = serde_json::to_string_pretty(&doc).unwrap_or_default();
            write_out(out, &format!("{text}\n"))?;
        }
        OutputFormat::Text => write_out(out, &text)?,
    }
    Ok(code)
}
