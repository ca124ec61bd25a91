//! `commit_step` latency against a bare single-row insert + commit, measured in the same run.
//!
//! SQLite (file, WAL, `synchronous=NORMAL`) always; Postgres when `CHATTER_TEST_POSTGRES_URL` is
//! set (in a fresh schema dropped at the end). Also the seed's list queries on 1 000 000 messages
//! with and without their indexes (`list_queries`).
//!
//! `cargo bench -p chatter-benches --bench store`

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::sync::Arc;
use std::time::Duration;

use chatter_benches::Paired;
use chatter_core::store::{
    ExecutionKind, NewEvent, NewExecution, NodeRunRecord, NodeRunStatus, StepCommit, Store,
};
use chatter_store::{StoreOptions, connect_with};
use criterion::{Criterion, criterion_group, criterion_main};
use serde_json::json;

fn step(execution_id: &str, i: i64) -> StepCommit {
    let mut run = NodeRunRecord::started(execution_id, "llm", i, 1, 1_000);
    run.status = NodeRunStatus::Completed;
    run.finished_at = Some(1_010);
    run.duration_ms = Some(10);
    run.prompt_tokens = 12;
    run.completion_tokens = 34;
    run.output = Some(json!({"text": "hello"}));
    StepCommit {
        node_run: run,
        state_delta: json!({"messages": [{"role": "assistant", "content": "hello"}]}),
        events: vec![NewEvent::new(
            1_010,
            "node_completed",
            json!({"node_id": "llm"}),
        )],
        snapshot: None,
    }
}

async fn running(store: &Arc<dyn Store>) -> String {
    let run = store
        .create_execution(NewExecution::new("bench", ExecutionKind::Adhoc, json!({})))
        .await
        .unwrap();
    store
        .set_execution_status(&run.id, chatter_core::store::ExecutionStatus::Running, 1)
        .await
        .unwrap();
    run.id
}

/// Alternates the two operations `rounds` times and prints both medians and their ratio, so
/// that a disk whose sync latency drifts (shared machines) affects both equally.
fn paired(label: &str, rounds: usize, step: impl FnMut(), bare: impl FnMut()) {
    Paired::measure(rounds, step, bare).print(label, "commit_step", "bare insert+commit", rounds);
}

fn sqlite(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let dir = std::env::temp_dir().join(format!("chatter-bench-{}", ulid::Ulid::new()));
    std::fs::create_dir_all(&dir).unwrap();
    let url = format!("sqlite://{}/bench.db", dir.display());
    let store = rt
        .block_on(connect_with(&url, StoreOptions::default()))
        .unwrap();
    let id = rt.block_on(running(&store));

    let mut group = c.benchmark_group("sqlite");
    group.measurement_time(Duration::from_secs(5));
    let mut i = 0;
    group.bench_function("commit_step", |b| {
        b.iter(|| {
            i += 1;
            rt.block_on(store.commit_step(&step(&id, i))).unwrap()
        })
    });

    group.bench_function("health_check_round_trip", |b| {
        b.iter(|| rt.block_on(store.health_check()).unwrap())
    });
    let ev = [NewEvent::new(1, "token", json!({"t": "x"}))];
    group.bench_function("append_one_event", |b| {
        b.iter(|| rt.block_on(store.append_events(&id, &ev)).unwrap())
    });

    let conn = rusqlite::Connection::open(dir.join("bare.db")).unwrap();
    conn.query_row("PRAGMA journal_mode=WAL", [], |_| Ok(()))
        .unwrap();
    conn.pragma_update(None, "synchronous", "NORMAL").unwrap();
    conn.execute_batch("CREATE TABLE t (id INTEGER PRIMARY KEY, payload TEXT NOT NULL)")
        .unwrap();
    group.bench_function("bare_insert_commit", |b| {
        b.iter(|| {
            conn.prepare_cached("INSERT INTO t (payload) VALUES (?1)")
                .unwrap()
                .execute([r#"{"node_id":"llm"}"#])
                .unwrap()
        })
    });
    group.finish();
    let mut j = 1_000_000;
    paired(
        "sqlite",
        2_000,
        || {
            j += 1;
            rt.block_on(store.commit_step(&step(&id, j))).unwrap();
        },
        || {
            conn.prepare_cached("INSERT INTO t (payload) VALUES (?1)")
                .unwrap()
                .execute([r#"{"node_id":"llm"}"#])
                .unwrap();
        },
    );
    drop(store);
    let _ = std::fs::remove_dir_all(&dir);
}

fn postgres(c: &mut Criterion) {
    let Some(url) = std::env::var("CHATTER_TEST_POSTGRES_URL")
        .ok()
        .filter(|u| !u.is_empty())
    else {
        println!("postgres benchmarks skipped: CHATTER_TEST_POSTGRES_URL not set");
        return;
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let schema = format!(
        "chatter_bench_{}",
        ulid::Ulid::new().to_string().to_lowercase()
    );
    let mut options = StoreOptions::default();
    options.pg_schema = Some(schema.clone());
    let store = rt.block_on(connect_with(&url, options)).unwrap();
    let id = rt.block_on(running(&store));
    let (client, connection) = rt
        .block_on(tokio_postgres::connect(&url, tokio_postgres::NoTls))
        .unwrap();
    rt.spawn(connection);
    rt.block_on(client.batch_execute(&format!(
        "SET search_path TO {schema}; CREATE TABLE bare (id BIGSERIAL PRIMARY KEY, payload JSONB NOT NULL)"
    )))
    .unwrap();
    let insert = rt
        .block_on(client.prepare("INSERT INTO bare (payload) VALUES ($1)"))
        .unwrap();

    let mut group = c.benchmark_group("postgres");
    group.measurement_time(Duration::from_secs(5));
    let mut i = 0;
    group.bench_function("commit_step", |b| {
        b.iter(|| {
            i += 1;
            rt.block_on(store.commit_step(&step(&id, i))).unwrap()
        })
    });
    let payload = json!({"node_id": "llm"});
    group.bench_function("bare_insert_commit", |b| {
        b.iter(|| rt.block_on(client.execute(&insert, &[&payload])).unwrap())
    });
    group.finish();
    let mut j = 1_000_000;
    paired(
        "postgres",
        300,
        || {
            j += 1;
            rt.block_on(store.commit_step(&step(&id, j))).unwrap();
        },
        || {
            rt.block_on(client.execute(&insert, &[&payload])).unwrap();
        },
    );
    rt.block_on(client.batch_execute(&format!("DROP SCHEMA {schema} CASCADE")))
        .unwrap();
}

/// The seed's list queries on `CHATTER_BENCH_MESSAGES` messages (default 1 000 000) in
/// messages/10 conversations of 1 000 users, through the migrated schema's indexes and with
/// `NOT INDEXED` (a full scan), in the same database.
fn list_queries(c: &mut Criterion) {
    let messages: i64 = std::env::var("CHATTER_BENCH_MESSAGES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let conversations = (messages / 10).max(1);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let dir = std::env::temp_dir().join(format!("chatter-bench-{}", ulid::Ulid::new()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("lists.db");
    drop(
        rt.block_on(connect_with(
            &format!("sqlite://{}", path.display()),
            StoreOptions::default(),
        ))
        .unwrap(),
    );
    std::thread::sleep(Duration::from_millis(100));
    let mut conn = rusqlite::Connection::open(&path).unwrap();
    conn.pragma_update(None, "synchronous", "OFF").unwrap();
    {
        let tx = conn.transaction().unwrap();
        {
            let mut conv = tx
                .prepare(
                    "INSERT INTO conversations (id, user_id, title, status, metadata, message_count, created_at, updated_at)
                     VALUES (?1, ?2, 'chat', ?3, '{}', 10, ?4, ?4)",
                )
                .unwrap();
            for i in 0..conversations {
                let status = if i % 10 == 0 { "archived" } else { "active" };
                conv.execute(rusqlite::params![
                    format!("c{i:08}"),
                    format!("u{:04}", i % 1000),
                    status,
                    i
                ])
                .unwrap();
            }
            let mut msg = tx
                .prepare(
                    "INSERT INTO messages (id, conversation_id, seq, role, content, metadata, created_at)
                     VALUES (?1, ?2, ?3, 'user', 'hello there', '{}', ?4)",
                )
                .unwrap();
            for i in 0..messages {
                msg.execute(rusqlite::params![
                    format!("m{i:09}"),
                    format!("c{:08}", i % conversations),
                    i / conversations + 1,
                    i
                ])
                .unwrap();
            }
        }
        tx.commit().unwrap();
    }
    conn.execute_batch("ANALYZE").unwrap();

    let queries = [
        (
            "conversations_by_user",
            "SELECT id FROM conversations {hint} WHERE user_id = 'u0042' ORDER BY created_at DESC LIMIT 20",
        ),
        (
            "conversations_by_status",
            "SELECT id FROM conversations {hint} WHERE status = 'archived' ORDER BY created_at DESC LIMIT 20",
        ),
        (
            "messages_by_conversation",
            "SELECT id, content FROM messages {hint} WHERE conversation_id = 'c00004242' ORDER BY created_at LIMIT 50",
        ),
    ];
    let mut group = c.benchmark_group(format!("list_{messages}_messages"));
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(3));
    for (name, sql) in queries {
        for (variant, hint) in [("indexed", ""), ("not_indexed", "NOT INDEXED")] {
            let sql = sql.replace("{hint}", hint);
            group.bench_function(format!("{name}/{variant}"), |b| {
                b.iter(|| {
                    let mut stmt = conn.prepare_cached(&sql).unwrap();
                    let rows: Vec<String> = stmt
                        .query_map([], |r| r.get(0))
                        .unwrap()
                        .collect::<Result<_, _>>()
                        .unwrap();
                    assert!(!rows.is_empty());
                    rows
                })
            });
        }
    }
    group.finish();
    drop(conn);
    let _ = std::fs::remove_dir_all(&dir);
}

criterion_group!(benches, sqlite, postgres, list_queries);
criterion_main!(benches);
