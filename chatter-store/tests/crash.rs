//! The crash-injection suite (DESIGN §8): a workflow that pays three amounts through a tool
//! runs in a child process, which is killed with `SIGKILL` at every persistence point in turn
//! (every pass through every failpoint, see `chatter_core::failpoint`, enumerated from an
//! uninterrupted run, not chosen by timing); a second child resumes it. For every point:
//!
//! - the execution completes with the uninterrupted run's response and variables;
//! - every payment is applied exactly once (the tool applies a payment once per idempotency
//!   key, and each key is called at most twice: the run that was killed and its re-run);
//! - the stored events are numbered 1..N without a gap or a repeat, with one
//!   `execution_started`, one `execution_completed`, and the uninterrupted run's node
//!   completions.
//!
//! It runs on SQLite (a file) and, when `CHATTER_TEST_POSTGRES_URL` is set, on Postgres (a fresh
//! schema per point). The binary is its own child: with `CHATTER_CRASH_CHILD` set it runs or
//! resumes the workflow instead of the suite.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::Write;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chatter_core::engine::{Engine, RunOptions};
use chatter_core::model::ModelRegistry;
use chatter_core::providers::scripted::ScriptedModel;
use chatter_core::store::{ExecutionKind, Store, StoreErrorKind};
use chatter_core::tool::{Tool, ToolContext, ToolRegistry, ToolSpec};
use chatter_core::tracker::{ExecutionMeta, WorkflowTracker};
use chatter_core::{ChatModel, WorkflowDefinition};
use chatter_store::{StoreOptions, connect_with};
use serde_json::{Value, json};

mod support;

const EXECUTION_ID: &str = "01JCRASHTEST0000000000000X";

fn main() {
    if let Ok(role) = std::env::var("CHATTER_CRASH_CHILD") {
        child(&role);
        return;
    }
    let mut failures = Vec::new();
    let mut backends = vec![Backend::Sqlite];
    match std::env::var("CHATTER_TEST_POSTGRES_URL") {
        Ok(url) if !url.is_empty() => backends.push(Backend::Postgres(url)),
        _ => println!("crash suite: CHATTER_TEST_POSTGRES_URL not set, Postgres skipped"),
    }
    for backend in &backends {
        failures.extend(suite(backend));
    }
    if !failures.is_empty() {
        eprintln!("\ncrash suite: {} failure(s):", failures.len());
        for failure in &failures {
            eprintln!("  - {failure}");
        }
        std::process::exit(1);
    }
    println!("crash suite: ok");
}

// ---------------------------------------------------------------------------------------------
// The suite (parent)
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone)]
enum Backend {
    Sqlite,
    Postgres(String),
}

impl Backend {
    fn name(&self) -> &'static str {
        match self {
            Backend::Sqlite => "sqlite",
            Backend::Postgres(_) => "postgres",
        }
    }
}

/// One isolated world: a database and a directory for the tool's ledger.
struct World {
    dir: PathBuf,
    db_url: String,
    pg_schema: Option<String>,
}

impl World {
    fn new(backend: &Backend, label: &str) -> World {
        let dir = std::env::temp_dir().join(format!(
            "chatter-crash-{}-{}-{}",
            backend.name(),
            label.replace(['.', '#'], "_"),
            ulid::Ulid::new()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let (db_url, pg_schema) = match backend {
            Backend::Sqlite => (format!("sqlite://{}/chatter.db", dir.display()), None),
            Backend::Postgres(url) => (url.clone(), Some(support::new_schema())),
        };
        World {
            dir,
            db_url,
            pg_schema,
        }
    }

    fn child(&self, role: &str) -> Command {
        let mut command = Command::new(std::env::current_exe().unwrap());
        command
            .env("CHATTER_CRASH_CHILD", role)
            .env("CHATTER_CRASH_DB", &self.db_url)
            .env("CHATTER_CRASH_DIR", &self.dir)
            .env_remove("CHATTER_FAILPOINT")
            .env_remove("CHATTER_FAILPOINT_TRACE");
        if let Some(schema) = &self.pg_schema {
            command.env("CHATTER_CRASH_PG_SCHEMA", schema);
        }
        command
    }

    fn cleanup(self) {
        if let Some(schema) = &self.pg_schema {
            runtime().block_on(support::drop_schema(&self.db_url, schema));
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// What a finished world looks like, compared with the uninterrupted run's.
#[derive(Debug, PartialEq)]
struct Outcome {
    status: String,
    response: Option<String>,
    output: Option<Value>,
    /// Node completions, counted by (node, iteration).
    completions: BTreeMap<(String, i64), usize>,
    /// Payments applied, by idempotency key.
    applied: BTreeMap<String, usize>,
}

fn suite(backend: &Backend) -> Vec<String> {
    let mut failures = Vec::new();
    // The uninterrupted run, tracing every failpoint it passes.
    let reference_world = World::new(backend, "reference");
    let trace = reference_world.dir.join("failpoints.trace");
    let status = reference_world
        .child("run")
        .env("CHATTER_FAILPOINT_TRACE", &trace)
        .status()
        .unwrap();
    assert!(status.success(), "the uninterrupted run failed: {status}");
    let reference = outcome_of(&reference_world);
    assert_eq!(reference.status, "completed", "{reference:?}");
    assert_eq!(reference.applied.len(), 3, "{reference:?}");
    let passes = std::fs::read_to_string(&trace).unwrap();
    reference_world.cleanup();

    // Every pass through every failpoint is a kill point.
    let mut seen: HashMap<&str, u64> = HashMap::new();
    let mut points = Vec::new();
    for name in passes.lines() {
        let n = seen.entry(name).or_insert(0);
        *n += 1;
        points.push(format!("{name}#{n}"));
    }
    let names: BTreeSet<&str> = seen.keys().copied().collect();
    println!(
        "crash suite ({}): {} kill points over {} failpoints: {:?}",
        backend.name(),
        points.len(),
        names.len(),
        names
    );
    assert!(
        points.len() >= 20,
        "only {} kill points were enumerated",
        points.len()
    );

    for point in &points {
        let world = World::new(backend, point);
        let killed = world
            .child("run")
            .env("CHATTER_FAILPOINT", point)
            .status()
            .unwrap();
        if killed.signal() != Some(9) {
            failures.push(format!(
                "{} {point}: the child was not killed there ({killed})",
                backend.name()
            ));
            world.cleanup();
            continue;
        }
        let resumed = world.child("resume").output().unwrap();
        if !resumed.status.success() {
            failures.push(format!(
                "{} {point}: the resume failed: {}",
                backend.name(),
                String::from_utf8_lossy(&resumed.stderr)
            ));
            world.cleanup();
            continue;
        }
        let outcome = outcome_of(&world);
        if outcome != reference {
            failures.push(format!(
                "{} {point}: after the resume\n      {outcome:?}\n    differs from the uninterrupted run\n      {reference:?}",
                backend.name()
            ));
        }
        if let Some(problem) = calls_problem(&world.dir) {
            failures.push(format!("{} {point}: {problem}", backend.name()));
        }
        if let Some(problem) = events_problem(&world) {
            failures.push(format!("{} {point}: {problem}", backend.name()));
        }
        world.cleanup();
    }
    println!(
        "crash suite ({}): {} kill points checked, {} failure(s)",
        backend.name(),
        points.len(),
        failures.len()
    );
    failures
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

async fn connect(db_url: &str, pg_schema: Option<String>) -> Arc<dyn Store> {
    let mut options = StoreOptions::default();
    if pg_schema.is_some() {
        options.pg_schema = pg_schema;
        options.pg_pool_size = 2;
    }
    connect_with(db_url, options).await.unwrap()
}

fn outcome_of(world: &World) -> Outcome {
    let runtime = runtime();
    let (status, response, output, completions) = runtime.block_on(async {
        let store = connect(&world.db_url, world.pg_schema.clone()).await;
        let row = store.get_execution(EXECUTION_ID).await.unwrap();
        let events = store.list_events(EXECUTION_ID, 0, 100_000).await.unwrap();
        let mut completions = BTreeMap::new();
        for event in events.iter().filter(|e| e.event_type == "node_completed") {
            let key = (
                event.payload["node_id"].as_str().unwrap_or("?").to_owned(),
                event.payload["iteration"].as_i64().unwrap_or(-1),
            );
            *completions.entry(key).or_insert(0) += 1;
        }
        match row {
            Some(row) => (
                row.status.as_str().to_owned(),
                row.response,
                row.output,
                completions,
            ),
            None => ("missing".into(), None, None, completions),
        }
    });
    let mut applied = BTreeMap::new();
    for key in read_lines(&world.dir.join("applied.log")) {
        *applied.entry(key).or_insert(0) += 1;
    }
    Outcome {
        status,
        response,
        output,
        completions,
        applied,
    }
}

fn read_lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(str::to_owned)
        .collect()
}

/// Each payment key is called at most twice: the killed run and its one re-run.
fn calls_problem(dir: &Path) -> Option<String> {
    let mut calls: HashMap<String, usize> = HashMap::new();
    for key in read_lines(&dir.join("calls.log")) {
        *calls.entry(key).or_insert(0) += 1;
    }
    calls
        .iter()
        .find(|(_, n)| **n > 2)
        .map(|(key, n)| format!("payment {key} was called {n} times"))
}

/// Stored events contiguous from 1, one start and one end.
fn events_problem(world: &World) -> Option<String> {
    let runtime = runtime();
    runtime.block_on(async {
        let store = connect(&world.db_url, world.pg_schema.clone()).await;
        let events = store.list_events(EXECUTION_ID, 0, 100_000).await.unwrap();
        let row = store.get_execution(EXECUTION_ID).await.unwrap()?;
        for (i, event) in events.iter().enumerate() {
            if event.seq != i as i64 + 1 {
                return Some(format!("event {} follows event {i}", event.seq));
            }
        }
        if row.last_event_seq != events.len() as i64 {
            return Some(format!(
                "the execution counts {} events but {} are stored",
                row.last_event_seq,
                events.len()
            ));
        }
        for (kind, expected) in [("execution_started", 1), ("execution_completed", 1)] {
            let n = events.iter().filter(|e| e.event_type == kind).count();
            if n != expected {
                return Some(format!("{n} `{kind}` events"));
            }
        }
        None
    })
}

// ---------------------------------------------------------------------------------------------
// The child: runs or resumes the workflow
// ---------------------------------------------------------------------------------------------

/// Pays an amount, once per idempotency key (the key of the node run plus the tool call id).
struct Ledger {
    dir: PathBuf,
}

#[async_trait]
impl Tool for Ledger {
    fn spec(&self) -> ToolSpec {
        ToolSpec {
            name: "pay".into(),
            description: "Pays an amount.".into(),
            parameters: json!({
                "type": "object",
                "properties": {"amount": {"type": "integer"}},
                "required": ["amount"]
            }),
        }
    }

    async fn call(&self, arguments: Value, context: &ToolContext) -> chatter_core::Result<Value> {
        let key = format!("{}/{}", context.idempotency_key, context.call_id);
        append_line(&self.dir.join("calls.log"), &key);
        let applied = read_lines(&self.dir.join("applied.log"));
        if !applied.contains(&key) {
            chatter_core::failpoint::hit("tool.before_effect");
            append_line(&self.dir.join("applied.log"), &key);
            chatter_core::failpoint::hit("tool.after_effect");
        }
        Ok(json!(format!("paid {}", arguments["amount"])))
    }
}

fn append_line(path: &Path, line: &str) {
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap();
    writeln!(file, "{line}").unwrap();
    file.sync_all().unwrap();
}

fn workflow() -> WorkflowDefinition {
    WorkflowDefinition::from_value(&json!({
        "nodes": [
            {"id": "start", "type": "start"},
            {"id": "agent", "type": "llm", "config": {"provider": "scripted", "enable_tools": true}},
            {"id": "tools", "type": "tool"},
            {"id": "end", "type": "end"}
        ],
        "edges": [
            {"source": "start", "target": "agent"},
            {"source": "agent", "target": "tools", "condition": "has_tool_calls"},
            {"source": "agent", "target": "end", "condition": "no_tool_calls"},
            {"source": "tools", "target": "agent"}
        ]
    }))
    .unwrap()
}

fn engine(dir: &Path) -> Engine {
    let model = ScriptedModel::from_value(json!({
        "rules": [
            {"match": {"role": "user", "contains": "pay"},
             "reply": {"tool_calls": [
                 {"name": "pay", "arguments": {"amount": 1}, "id": "call_1"},
                 {"name": "pay", "arguments": {"amount": 2}, "id": "call_2"}]}},
            {"match": {"contains": "paid 2"},
             "reply": {"tool_calls": [{"name": "pay", "arguments": {"amount": 3}, "id": "call_3"}]}},
            {"match": {"contains": "paid 3"}, "reply": {"content": "All three paid."}}
        ],
        "usage": {"prompt_tokens": 10, "completion_tokens": 4}
    }))
    .unwrap();
    let mut models = ModelRegistry::new();
    models.register("scripted", Arc::new(model) as Arc<dyn ChatModel>);
    let mut tools = ToolRegistry::new();
    tools.register(Arc::new(Ledger {
        dir: dir.to_path_buf(),
    }));
    Engine::builder().models(models).tools(tools).build()
}

fn child(role: &str) {
    let db_url = std::env::var("CHATTER_CRASH_DB").unwrap();
    let dir = PathBuf::from(std::env::var("CHATTER_CRASH_DIR").unwrap());
    let pg_schema = std::env::var("CHATTER_CRASH_PG_SCHEMA").ok();
    let runtime = runtime();
    runtime.block_on(async {
        let store = connect(&db_url, pg_schema).await;
        // A short lease, so the successor does not wait long for a killed run's to expire.
        let tracker = WorkflowTracker::new(store.clone()).lease_ms(300);
        let engine = engine(&dir);
        let def = workflow();
        let input = json!({"message": "Please pay the three invoices."});
        let existing = store.get_execution(EXECUTION_ID).await.unwrap();
        let fresh = role == "run" || existing.is_none();
        if fresh {
            tracker
                .run(
                    &engine,
                    &def,
                    input,
                    RunOptions::default().execution_id(EXECUTION_ID),
                    ExecutionMeta::new("crash-suite", ExecutionKind::Adhoc),
                )
                .await
                .unwrap()
                .into_result()
                .unwrap();
            return;
        }
        if existing.is_some_and(|e| e.status.is_terminal()) {
            return;
        }
        // Resume on demand; until the killed run's lease expires, it is refused.
        for _ in 0..100 {
            match tracker
                .resume(&engine, &def, EXECUTION_ID, None, RunOptions::default())
                .await
            {
                Ok(run) => {
                    run.into_result().unwrap();
                    return;
                }
                Err(e) if e.store_kind() == Some(StoreErrorKind::Conflict) => {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(e) => panic!("resume failed: {e}"),
            }
        }
        panic!("the killed run's lease never expired");
    });
}
