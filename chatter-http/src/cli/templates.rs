//! `chatter templates list|show|run|export|import`.
//!
//! Every command opens the database given by `--db` (an in-memory SQLite database when it is
//! omitted, so the built-ins can be listed, shown, exported and run offline) and seeds the
//! twelve built-in templates into it first (idempotent). Templates are looked up by id or by
//! name (the local user's own first, then the built-ins); everything belongs to the local user.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use chatter_core::RetrieverRegistry;
use chatter_core::engine::{Engine, ExecutionResult, RunOptions};
use chatter_core::store::{Page, Store, TemplateRecord};
use chatter_core::templates::{self, ImportOptions, TemplateRef};
use chatter_core::time::rfc3339_ms;
use serde_json::{Value, json};

use super::run::{TextPrinter, parse_input, providers, report, warn_unrecorded};
use super::{OutputFormat, store, write_out};
use crate::error::Error;

/// Opens the store (in memory without `--db`) and seeds the built-ins.
async fn open_seeded(db: Option<&str>) -> Result<Arc<dyn Store>, Error> {
    let store = store::open(db.unwrap_or("sqlite::memory:")).await?;
    templates::seed_builtins(&*store).await?;
    Ok(store)
}

fn pretty(doc: &Value) -> String {
    format!(
        "{}\n",
        serde_json::to_string_pretty(doc).unwrap_or_default()
    )
}

/// `chatter templates list`.
pub(crate) fn list(
    db: Option<&str>,
    category: Option<&str>,
    format: OutputFormat,
    out: &mut dyn Write,
) -> Result<u8, Error> {
    let runtime = store::runtime()?;
    let records = runtime.block_on(async {
        let store = open_seeded(db).await?;
        Ok::<_, Error>(
            templates::list_visible(&*store, store::LOCAL_OWNER, category, Page::default()).await?,
        )
    })?;
    match format {
        OutputFormat::Json => write_out(out, &pretty(&json!({"templates": records})))?,
        OutputFormat::Text => {
            let mut text = String::new();
            if records.is_empty() {
                text.push_str("no templates\n");
            }
            for r in &records {
                text.push_str(&format!(
                    "{:<24} {:<16} v{:<3} {:<8} {}\n",
                    r.name,
                    r.category,
                    r.version,
                    if r.is_builtin { "built-in" } else { "own" },
                    r.description.as_deref().unwrap_or("")
                ));
            }
            write_out(out, &text)?;
        }
    }
    Ok(0)
}

/// `chatter templates show NAME`: the template, its parameters, versions and analytics.
pub(crate) fn show(
    db: Option<&str>,
    name: &str,
    format: OutputFormat,
    out: &mut dyn Write,
) -> Result<u8, Error> {
    let runtime = store::runtime()?;
    let (record, versions, analytics) = runtime.block_on(async {
        let store = open_seeded(db).await?;
        let record = templates::resolve(&*store, store::LOCAL_OWNER, name).await?;
        let versions = store.list_template_versions(&record.id).await?;
        let analytics = store.template_analytics(&record.id).await?;
        Ok::<_, Error>((record, versions, analytics))
    })?;
    let spec = templates::spec_of(&record)?;
    let params = spec.merge_params(&Value::Null)?;
    let definition = spec.generate(&params)?;
    match format {
        OutputFormat::Json => {
            let doc = json!({
                "template": record,
                "config_hash": spec.config_hash(),
                "parameter_schema": spec.parameter_schema(),
                "versions": versions.iter().map(|v| json!({
                    "version": v.version, "is_latest": v.is_latest, "created_at": v.created_at
                })).collect::<Vec<_>>(),
                "analytics": analytics,
                "definition": definition.to_value(),
            });
            write_out(out, &pretty(&doc))?;
        }
        OutputFormat::Text => {
            let mut text = show_text(&record);
            text.push_str(&format!("  config hash {}\n", spec.config_hash()));
            if !spec.required_tools.is_empty() {
                text.push_str(&format!(
                    "  tools      {}\n",
                    spec.required_tools.join(", ")
                ));
            }
            if !spec.required_retrievers.is_empty() {
                text.push_str(&format!(
                    "  retrievers {}\n",
                    spec.required_retrievers.join(", ")
                ));
            }
            text.push_str("parameters (defaults)\n");
            for (k, v) in &params {
                text.push_str(&format!("  {k} = {v}\n"));
            }
            let nodes: Vec<String> = definition
                .nodes
                .iter()
                .map(|n| format!("{} ({})", n.id, n.kind))
                .collect();
            text.push_str(&format!("graph\n  {}\n", nodes.join(" ")));
            match analytics {
                Some(a) => text.push_str(&format!(
                    "analytics\n  used {} (ok {}, failed {}), tokens {}, cost ${:.6}, avg {:.0} ms\n",
                    a.usage_count,
                    a.success_count,
                    a.failure_count,
                    a.total_tokens,
                    a.total_cost,
                    a.avg_duration_ms
                )),
                None => text.push_str("analytics\n  never run\n"),
            }
            write_out(out, &text)?;
        }
    }
    Ok(0)
}

fn show_text(r: &TemplateRecord) -> String {
    let mut text = format!(
        "template {}\n  id         {}\n  category   {}\n  version    {}\n  built-in   {}\n  public     {}\n  updated    {}\n",
        r.name,
        r.id,
        r.category,
        r.version,
        r.is_builtin,
        r.is_public,
        rfc3339_ms(r.updated_at)
    );
    if let Some(d) = &r.description {
        text.push_str(&format!("  about      {d}\n"));
    }
    if let Some(base) = &r.base_template_id {
        text.push_str(&format!("  based on   {base}\n"));
    }
    text
}

/// What `chatter templates run` was asked to do.
#[derive(Debug, Clone)]
pub(crate) struct TemplateRunArgs {
    pub(crate) name: String,
    pub(crate) params: Option<String>,
    pub(crate) input: Option<String>,
    pub(crate) models: Vec<String>,
    pub(crate) tools: Option<PathBuf>,
    pub(crate) documents: Option<PathBuf>,
    pub(crate) events: bool,
    pub(crate) format: OutputFormat,
    pub(crate) db: Option<String>,
}

fn parse_params(params: Option<&str>) -> Result<Value, Error> {
    match params {
        None => Ok(Value::Null),
        Some(text) => match serde_json::from_str::<Value>(text) {
            Ok(Value::Object(map)) => Ok(Value::Object(map)),
            Ok(other) => Err(Error::Usage(format!(
                "--params must be a JSON object, found {other}"
            ))),
            Err(e) => Err(Error::Usage(format!("--params is not valid JSON: {e}"))),
        },
    }
}

/// `chatter templates run NAME`: generates the template's graph in memory and runs it, recorded
/// as a template execution (in `--db`, or an in-memory database). Exit 0 when it completed, 1
/// when it failed or was cancelled, 2 on unusable input.
pub(crate) fn run(args: TemplateRunArgs, out: &mut dyn Write) -> Result<u8, Error> {
    let params = parse_params(args.params.as_deref())?;
    let input = parse_input(args.input.as_deref())?;
    let (models, tools, documents) = providers(
        &args.models,
        args.tools.as_deref(),
        args.documents.as_deref(),
        Some("templates call"),
    )?;
    let runtime = store::runtime()?;
    let result = runtime.block_on(async {
        let db = open_seeded(args.db.as_deref()).await?;
        let record = templates::resolve(&*db, store::LOCAL_OWNER, &args.name).await?;
        let spec = templates::spec_of(&record)?;
        let mut builder = Engine::builder().models(models).tools(tools);
        if let Some(documents) = documents {
            // The documents answer as `documents` and as every retriever the template names.
            let retriever = Arc::new(store::ingest(&db, documents).await?);
            let mut retrievers = RetrieverRegistry::new();
            retrievers.register("documents", retriever.clone());
            for name in &spec.required_retrievers {
                retrievers.register(name.clone(), retriever.clone());
            }
            builder = builder.retrievers(retrievers);
        }
        let engine = builder.build();
        let mut printer = TextPrinter::default();
        let mut print_error = None;
        let text = args.format == OutputFormat::Text;
        let run = templates::run_template_observed(
            &db,
            &engine,
            store::LOCAL_OWNER,
            &TemplateRef::Stored(record.id.clone()),
            &params,
            input,
            RunOptions::default().owner(store::LOCAL_OWNER),
            |event| {
                if text && print_error.is_none() {
                    print_error = printer.print(event, &mut *out).err();
                }
            },
        )
        .await
        .map_err(|e| match e {
            // Parameters of the wrong type or out of range: unusable input.
            chatter_core::Error::Template { .. } => Error::Usage(e.to_string()),
            other => Error::Core(other),
        })?;
        if let Some(error) = print_error {
            return Err(error);
        }
        warn_unrecorded(&run);
        Ok::<ExecutionResult, Error>(run.result)
    })?;
    report(
        &result,
        args.format,
        args.events,
        Some(&args.name),
        args.db.as_deref(),
        out,
    )
}

/// `chatter templates export NAME [--output FILE]`: the old export format.
pub(crate) fn export(
    db: Option<&str>,
    name: &str,
    output: Option<&Path>,
    out: &mut dyn Write,
) -> Result<u8, Error> {
    let runtime = store::runtime()?;
    let doc = runtime.block_on(async {
        let store = open_seeded(db).await?;
        let record = templates::resolve(&*store, store::LOCAL_OWNER, name).await?;
        Ok::<_, Error>(templates::export_template(&*store, store::LOCAL_OWNER, &record.id).await?)
    })?;
    match output {
        Some(path) => {
            std::fs::write(path, pretty(&doc)).map_err(|source| Error::Io {
                context: format!("writing {}", path.display()),
                source,
            })?;
            write_out(out, &format!("exported {name} to {}\n", path.display()))?;
        }
        None => write_out(out, &pretty(&doc))?,
    }
    Ok(0)
}

/// `chatter templates import FILE --db URL [--name NAME] [--merge]`.
pub(crate) fn import(
    db: &str,
    file: &Path,
    name: Option<String>,
    merge: bool,
    format: OutputFormat,
    out: &mut dyn Write,
) -> Result<u8, Error> {
    let file_error = |source: chatter_core::Error| Error::File {
        path: file.display().to_string(),
        source,
    };
    let text = std::fs::read_to_string(file).map_err(|e| {
        file_error(chatter_core::Error::Io {
            path: file.display().to_string(),
            message: e.to_string(),
        })
    })?;
    let doc: Value = serde_json::from_str(&text).map_err(|e| {
        file_error(chatter_core::Error::Template {
            message: format!("malformed import: invalid JSON: {e}"),
        })
    })?;
    let runtime = store::runtime()?;
    let record = runtime.block_on(async {
        let store = open_seeded(Some(db)).await?;
        let options = ImportOptions {
            override_name: name,
            merge_with_existing: merge,
        };
        templates::import_template(&*store, store::LOCAL_OWNER, &doc, &options)
            .await
            .map_err(|e| match e {
                chatter_core::Error::Template { .. } => file_error(e),
                other => Error::Core(other),
            })
    })?;
    match format {
        OutputFormat::Json => write_out(out, &pretty(&json!({"template": record})))?,
        OutputFormat::Text => write_out(
            out,
            &format!(
                "imported {} as {} (version {})\n",
                record.name, record.id, record.version
            ),
        )?,
    }
    Ok(0)
}
