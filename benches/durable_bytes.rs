//! Bytes on disk of durable executions (issue 5, item 10): a small program that prints them
//! (`cargo bench -p chatter-benches --bench durable_bytes`; no timing, so no criterion).
//!
//! Each figure is the growth of the SQLite database (file in a temp dir, WAL,
//! `synchronous=NORMAL`, `sync` durability) after `PRAGMA wal_checkpoint(TRUNCATE)`: main file
//! plus WAL, measured after the migrations and again after the runs.
//!
//! * `chat_append`: 4 runs of a 200-step chat workflow: a chain of 200 `llm` nodes
//!   (`stream: false`) whose scripted model answers 400 characters each time, so every step
//!   appends a 400-character assistant message (target ≤ 1 MB for the 4 runs; LangGraph's
//!   SQLite saver: 61 MB). `chat_append_streamed`: the same with streaming on, so each reply
//!   is also stored as token events (the scripted model's 8-character chunks).
//! * `chain_10`: 100 runs of a 10-node chain of no-op nodes; bytes per run (target ≤ 3 KB;
//!   LangGraph ≈ 30 KB).
//!
//! The definitions are stored once (executions of a stored definition record its id, not
//! the graph). It also prints what the rows of one chat-append run hold, by table.

#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;
use std::sync::Arc;

use chatter_benches::{chain, engine_builder, stored_definition};
use chatter_core::engine::{Engine, ExecutionStatus, Limits, RunOptions};
use chatter_core::providers::ScriptedModel;
use chatter_core::tracker::WorkflowTracker;
use chatter_core::{ModelRegistry, WorkflowDefinition};
use chatter_store::{StoreOptions, connect_with};
use serde_json::{Value, json};

const CHAT_STEPS: usize = 200;
const CHAT_RUNS: usize = 4;
const REPLY_CHARS: usize = 400;
const CHAIN_RUNS: usize = 100;

fn engine() -> Engine {
    // 400 characters of varied text (a repeated pattern would not change the byte count).
    let mut reply = String::new();
    for i in 0_usize.. {
        if reply.len() >= REPLY_CHARS {
            break;
        }
        reply.push_str(&format!("word{} ", i * 7919 % 10_007));
    }
    reply.truncate(REPLY_CHARS);
    let model = ScriptedModel::from_value(json!({
        "default": {"content": reply},
        "usage": {"prompt_tokens": 10, "completion_tokens": 100}
    }))
    .unwrap();
    model.record_requests(false);
    let mut models = ModelRegistry::new();
    models.register("scripted", Arc::new(model));
    engine_builder()
        .models(models)
        .limits(Limits::default().max_steps(100_000).max_tokens(None))
        .build()
}

/// `n` `llm` nodes in a chain; `stream`: whether they stream tokens (each token chunk is an
/// event, stored with the execution's log).
fn chat_chain(n: usize, stream: bool) -> WorkflowDefinition {
    let nodes: Vec<Value> = (0..n)
        .map(|i| json!({"id": format!("m{i}"), "type": "llm", "config": {"stream": stream}}))
        .collect();
    let edges: Vec<Value> = (1..n)
        .map(|i| json!({"source": format!("m{}", i - 1), "target": format!("m{i}")}))
        .collect();
    WorkflowDefinition::from_value(&json!({"nodes": nodes, "edges": edges})).unwrap()
}

/// Main file + WAL after a truncating checkpoint.
fn size_after_checkpoint(db: &Path) -> u64 {
    let conn = rusqlite::Connection::open(db).unwrap();
    // The store's own connections may hold a read snapshot for a moment: retry.
    let mut tries = 0;
    loop {
        let (busy, _, _): (i64, i64, i64) = conn
            .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?))
            })
            .unwrap();
        if busy == 0 {
            break;
        }
        tries += 1;
        assert!(tries < 100, "the checkpoint stayed blocked");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let len = |p: &Path| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0);
    len(db) + len(&db.with_extension("db-wal"))
}

/// Runs `def` `runs` times in a fresh database; prints what the last run's rows hold and
/// returns the growth in bytes.
async fn growth(def: &WorkflowDefinition, runs: usize, input: Value) -> u64 {
    let dir = std::env::temp_dir().join(format!("chatter-bytes-{}", ulid::Ulid::new()));
    std::fs::create_dir_all(&dir).unwrap();
    let db = dir.join("bytes.db");
    let store = connect_with(
        &format!("sqlite://{}", db.display()),
        StoreOptions::default(),
    )
    .await
    .unwrap();
    let meta = stored_definition(&store, def).await.unwrap();
    let before = size_after_checkpoint(&db);
    let engine = engine();
    let tracker = WorkflowTracker::new(store.clone());
    let mut last = String::new();
    for _ in 0..runs {
        let run = tracker
            .run(
                &engine,
                def,
                input.clone(),
                RunOptions::default(),
                meta.clone(),
            )
            .await
            .unwrap();
        assert_eq!(
            run.result.status,
            ExecutionStatus::Completed,
            "{:?}",
            run.result.error
        );
        assert!(run.store_error.is_none(), "{:?}", run.store_error);
        last = run.result.execution_id;
    }
    let after = size_after_checkpoint(&db);
    print_rows(&db, &last);
    drop(store);
    if std::env::var_os("KEEP_DB").is_some() {
        println!("    kept {}", db.display());
    } else {
        let _ = std::fs::remove_dir_all(&dir);
    }
    after - before
}

/// Prints what the rows of one execution hold, by table (sum of the lengths of their columns).
fn print_rows(db: &Path, id: &str) {
    let conn = rusqlite::Connection::open(db).unwrap();
    for (table, key) in [
        ("workflow_executions", "id"),
        ("workflow_node_runs", "execution_id"),
        ("workflow_events", "execution_id"),
        ("workflow_checkpoints", "execution_id"),
    ] {
        let mut stmt = conn
            .prepare(&format!("SELECT * FROM {table} WHERE {key} = ?1"))
            .unwrap();
        let columns = stmt.column_count();
        let mut rows = stmt.query([id]).unwrap();
        let (mut count, mut bytes) = (0u64, 0u64);
        while let Some(row) = rows.next().unwrap() {
            count += 1;
            for i in 0..columns {
                bytes += match row.get::<_, rusqlite::types::Value>(i).unwrap() {
                    rusqlite::types::Value::Text(t) => t.len() as u64,
                    rusqlite::types::Value::Blob(b) => b.len() as u64,
                    rusqlite::types::Value::Null => 0,
                    _ => 8,
                };
            }
        }
        println!("    {table}: {count} rows, {bytes} bytes of column data");
    }
    let mut stmt = conn
        .prepare(
            "SELECT kind, COUNT(*), SUM(LENGTH(state)) FROM workflow_checkpoints \
             WHERE execution_id = ?1 GROUP BY kind ORDER BY kind",
        )
        .unwrap();
    let kinds = stmt
        .query_map([id], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, i64>(1)?,
                r.get::<_, i64>(2)?,
            ))
        })
        .unwrap();
    for kind in kinds {
        let (kind, count, bytes) = kind.unwrap();
        println!("      {kind}: {count} rows, {bytes} bytes of state");
    }
    // Deltas held by node run rows (migration 0011).
    let (count, bytes): (i64, Option<i64>) = conn
        .query_row(
            "SELECT COUNT(*), SUM(LENGTH(delta)) FROM workflow_node_runs \
             WHERE execution_id = ?1 AND delta IS NOT NULL",
            [id],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    println!(
        "      delta in node runs: {count} rows, {} bytes of state",
        bytes.unwrap_or(0)
    );
}

fn main() {
    // `cargo bench` passes `--bench`; nothing to parse.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        for stream in [false, true] {
            let label = if stream {
                "chat_append_streamed"
            } else {
                "chat_append"
            };
            println!("one {label} run ({CHAT_STEPS} steps of {REPLY_CHARS} characters):");
            let bytes = growth(
                &chat_chain(CHAT_STEPS, stream),
                CHAT_RUNS,
                json!({"message": "hi"}),
            )
            .await;
            println!(
                "{label}: {CHAT_RUNS} runs of {CHAT_STEPS} steps (+{REPLY_CHARS} characters each): \
                 {bytes} bytes ({:.2} MB; target <= 1 MB)",
                bytes as f64 / 1e6
            );
        }
        println!("one chain_10 run:");
        let bytes = growth(&chain(10), CHAIN_RUNS, json!({})).await;
        println!(
            "chain_10: {CHAIN_RUNS} runs: {bytes} bytes, {} bytes per run (target <= 3 KB)",
            bytes / CHAIN_RUNS as u64
        );
    });
}
