//! `chatter migrate`, `chatter executions list|show`, and the store side of `chatter run`
//! (`--db`, `--documents`).
//!
//! Database URLs: `sqlite://chatter.db` (a file, created when missing), `sqlite::memory:`,
//! `postgres://user@host:5432/db`. An unusable URL or an unreachable database exits 2.

use std::io::Write;
use std::path::Path;
use std::sync::Arc;

use chatter_core::store::{
    ChunkingOptions, EventRecord, ExecutionFilter, ExecutionRecord, ExecutionStatus, NewDocument,
    NodeRunRecord, Page, Store, StoreErrorKind, StoreRetriever,
};
use chatter_core::time::rfc3339_ms;
use chatter_store::DatabaseUrl;
use chatter_store::migrate::{Migration, POSTGRES_MIGRATIONS, SQLITE_MIGRATIONS};
use serde_json::{Value, json};

use super::{OutputFormat, write_out};
use crate::error::Error;

/// The owner of everything the command line stores and searches.
pub(crate) const LOCAL_OWNER: &str = "local";

/// Most events `executions show` prints.
const MAX_EVENTS: u32 = 100_000;

/// A runtime for one command.
pub(crate) fn runtime() -> Result<tokio::runtime::Runtime, Error> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|source| Error::Io {
            context: "starting the runtime".into(),
            source,
        })
}

/// Opens (and migrates) the store at `url`; an unusable URL or database is a usage error
/// (exit 2) naming the URL.
pub(crate) async fn open(url: &str) -> Result<Arc<dyn Store>, Error> {
    chatter_store::connect(url)
        .await
        .map_err(|e| db_error(url, e))
}

fn db_error(url: &str, error: chatter_core::Error) -> Error {
    match error.store_kind() {
        Some(StoreErrorKind::Config | StoreErrorKind::Unavailable | StoreErrorKind::Migration) => {
            Error::Usage(format!("--db {url}: {error}"))
        }
        _ => Error::Core(error),
    }
}

/// The documents of a JSON file: a list of `{title, content}`, or an object whose
/// `sample_documents` (or `documents`) is such a list.
pub(crate) fn load_documents(path: &Path) -> Result<Vec<(String, String)>, Error> {
    let file_error = |message: String| Error::File {
        path: path.display().to_string(),
        source: chatter_core::Error::Config { message },
    };
    let text = std::fs::read_to_string(path).map_err(|e| Error::File {
        path: path.display().to_string(),
        source: chatter_core::Error::Io {
            path: path.display().to_string(),
            message: e.to_string(),
        },
    })?;
    let value: Value =
        serde_json::from_str(&text).map_err(|e| file_error(format!("invalid JSON: {e}")))?;
    let list = match &value {
        Value::Array(items) => items,
        Value::Object(map) => match map.get("sample_documents").or_else(|| map.get("documents")) {
            Some(Value::Array(items)) => items,
            _ => {
                return Err(file_error(
                    "expected a JSON list of {title, content} or an object with `sample_documents`"
                        .into(),
                ));
            }
        },
        _ => {
            return Err(file_error(
                "expected a JSON list of {title, content} or an object with `sample_documents`"
                    .into(),
            ));
        }
    };
    let mut documents = Vec::with_capacity(list.len());
    for (i, item) in list.iter().enumerate() {
        let field = |name: &str| item.get(name).and_then(Value::as_str).map(str::to_owned);
        let (Some(title), Some(content)) = (field("title"), field("content")) else {
            return Err(file_error(format!(
                "document {i} needs string fields `title` and `content`"
            )));
        };
        documents.push((title, content));
    }
    Ok(documents)
}

/// Stores documents for [`LOCAL_OWNER`] and returns the `documents` retriever over them.
pub(crate) async fn ingest(
    store: &Arc<dyn Store>,
    documents: Vec<(String, String)>,
) -> Result<StoreRetriever, Error> {
    for (title, text) in documents {
        store
            .create_document(NewDocument {
                owner_id: LOCAL_OWNER.into(),
                title,
                text,
                chunking: ChunkingOptions::default(),
                ..NewDocument::default()
            })
            .await?;
    }
    Ok(StoreRetriever::new(store.clone()).default_owner(LOCAL_OWNER))
}

/// The versions recorded in `schema_migrations` before connecting (none when the database or
/// the table does not exist yet, or cannot be read: `connect` then reports the problem).
async fn applied_before(url: &str) -> Vec<i64> {
    match DatabaseUrl::parse(url) {
        Ok(DatabaseUrl::SqliteFile(path)) => {
            if !Path::new(&path).exists() {
                return Vec::new();
            }
            let Ok(conn) = rusqlite::Connection::open_with_flags(
                &path,
                rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
            ) else {
                return Vec::new();
            };
            let versions = conn
                .prepare("SELECT version FROM schema_migrations")
                .and_then(|mut stmt| {
                    stmt.query_map([], |row| row.get::<_, i64>(0))?
                        .collect::<Result<Vec<i64>, _>>()
                });
            versions.unwrap_or_default()
        }
        Ok(DatabaseUrl::Postgres(url)) => {
            let Ok((client, connection)) =
                tokio_postgres::connect(&url, tokio_postgres::NoTls).await
            else {
                return Vec::new();
            };
            let task = tokio::spawn(connection);
            let versions = client
                .query("SELECT version FROM schema_migrations", &[])
                .await
                .map(|rows| rows.iter().filter_map(|r| r.try_get(0).ok()).collect())
                .unwrap_or_default();
            drop(client);
            let _ = task.await;
            versions
        }
        _ => Vec::new(),
    }
}

/// `chatter migrate --db URL`: applies the pending migrations and prints them.
pub(crate) fn migrate(url: &str, out: &mut dyn Write) -> Result<u8, Error> {
    let runtime = runtime()?;
    let (before, backend) = runtime.block_on(async {
        let before = applied_before(url).await;
        let store = open(url).await?;
        Ok::<_, Error>((before, store.backend()))
    })?;
    let embedded: &[Migration] = if backend == "postgres" {
        POSTGRES_MIGRATIONS
    } else {
        SQLITE_MIGRATIONS
    };
    let mut text = String::new();
    for m in embedded.iter().filter(|m| !before.contains(&m.version)) {
        text.push_str(&format!("applied {:04}_{}\n", m.version, m.name));
    }
    if text.is_empty() {
        text = format!(
            "up to date: {} migrations already applied\n",
            embedded.len()
        );
    }
    write_out(out, &text)?;
    Ok(0)
}

/// `chatter executions list`.
pub(crate) fn list(
    url: &str,
    limit: u32,
    status: Option<&str>,
    format: OutputFormat,
    out: &mut dyn Write,
) -> Result<u8, Error> {
    let status = status
        .map(|s| {
            ExecutionStatus::parse(s).map_err(|_| {
                Error::Usage(format!(
                    "--status must be one of pending, running, waiting, completed, failed, cancelled (got `{s}`)"
                ))
            })
        })
        .transpose()?;
    let runtime = runtime()?;
    let executions = runtime.block_on(async {
        let store = open(url).await?;
        let filter = ExecutionFilter {
            status,
            ..ExecutionFilter::default()
        };
        Ok::<_, Error>(store.list_executions(&filter, Page::new(limit, 0)).await?)
    })?;
    match format {
        OutputFormat::Json => {
            let doc = json!({"executions": executions});
            write_out(out, &format!("{}\n", pretty(&doc)))?;
        }
        OutputFormat::Text => {
            let mut text = String::new();
            if executions.is_empty() {
                text.push_str("no executions\n");
            }
            for e in &executions {
                text.push_str(&summary_line(e));
            }
            write_out(out, &text)?;
        }
    }
    Ok(0)
}

fn summary_line(e: &ExecutionRecord) -> String {
    format!(
        "{}  {:<9}  {:<10}  {}  {}  tokens {}\n",
        e.id,
        e.status.as_str(),
        e.kind.as_str(),
        rfc3339_ms(e.created_at),
        e.duration_ms
            .map_or_else(|| "-".to_owned(), |d| format!("{d} ms")),
        e.total_tokens,
    )
}

/// `chatter executions show ID`: the execution, its node runs and its events; exit 1 when it
/// does not exist.
pub(crate) fn show(
    url: &str,
    id: &str,
    format: OutputFormat,
    out: &mut dyn Write,
) -> Result<u8, Error> {
    let runtime = runtime()?;
    let found = runtime.block_on(async {
        let store = open(url).await?;
        let Some(execution) = store.get_execution(id).await? else {
            return Ok::<_, Error>(None);
        };
        let runs = store.list_node_runs(id).await?;
        let events = store.list_events(id, 0, MAX_EVENTS).await?;
        Ok(Some((execution, runs, events)))
    })?;
    let Some((execution, runs, events)) = found else {
        return Err(Error::Core(chatter_core::Error::NotFound {
            what: "execution".into(),
            name: id.into(),
        }));
    };
    match format {
        OutputFormat::Json => {
            let doc = json!({"execution": execution, "node_runs": runs, "events": events});
            write_out(out, &format!("{}\n", pretty(&doc)))?;
        }
        OutputFormat::Text => write_out(out, &show_text(&execution, &runs, &events))?,
    }
    Ok(0)
}

fn show_text(e: &ExecutionRecord, runs: &[NodeRunRecord], events: &[EventRecord]) -> String {
    let mut text = format!(
        "execution {}\n  status   {}\n  kind     {}\n  owner    {}\n  created  {}\n",
        e.id,
        e.status.as_str(),
        e.kind.as_str(),
        e.owner_id,
        rfc3339_ms(e.created_at)
    );
    if let Some(d) = e.duration_ms {
        text.push_str(&format!("  duration {d} ms\n"));
    }
    text.push_str(&format!(
        "  tokens   {} (prompt {}, completion {}), cost ${:.6}\n",
        e.total_tokens, e.prompt_tokens, e.completion_tokens, e.cost
    ));
    if let Some(template) = &e.template_id {
        text.push_str(&format!("  template {template}\n"));
    }
    if let Some(definition) = &e.definition_id {
        text.push_str(&format!("  definition {definition}\n"));
    }
    if let Some(response) = &e.response {
        text.push_str(&format!("  response {response}\n"));
    }
    if let Some(error) = &e.error {
        text.push_str(&format!("  error    {error}\n"));
    }
    text.push_str(&format!("node runs ({})\n", runs.len()));
    for r in runs {
        text.push_str(&format!(
            "  {} #{} attempt {}  {}  {}  tokens {}/{}",
            r.node_id,
            r.iteration,
            r.attempt,
            r.status.as_str(),
            r.duration_ms
                .map_or_else(|| "-".to_owned(), |d| format!("{d} ms")),
            r.prompt_tokens,
            r.completion_tokens,
        ));
        if let Some(error) = &r.error {
            text.push_str(&format!("  error: {error}"));
        }
        text.push('\n');
    }
    text.push_str(&format!("events ({})\n", events.len()));
    for ev in events {
        text.push_str(&format!(
            "  {:>4} {} {} {}\n",
            ev.seq,
            rfc3339_ms(ev.ts),
            ev.event_type,
            ev.payload
        ));
    }
    text
}

fn pretty(doc: &Value) -> String {
    serde_json::to_string_pretty(doc).unwrap_or_default()
}
