//! Durable step latency through the engine (issue 5, item 10):
//! `cargo bench -p chatter-benches --bench durable`.
//!
//! A chain of 100 no-op nodes run by the [`WorkflowTracker`] (execution row, lease, one step
//! committed per node run, outcome) in `sync` mode on SQLite (a file in a temp dir, WAL,
//! `synchronous=NORMAL`) and, when `CHATTER_TEST_POSTGRES_URL` is set, on Postgres (a fresh
//! schema, dropped at the end); the time per element is the time per durable step. The same
//! chain run in memory (no store) is measured in the same run, alternating with the durable
//! run, and the paired medians are printed with their ratio. Also `async` and `exit` on
//! SQLite for comparison. Targets: SQLite ≤ 50 µs, Postgres ≤ 2.5 ms per step.
//! `CHATTER_BENCH_SQLITE_PARAMS` adds SQLite URL parameters (e.g. `inline_writes=false`, every
//! write through the writer thread, or `commit_spin_us=150`).

#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::time::Duration;

use chatter_benches::{Paired, chain, engine_builder, stored_definition};
use chatter_core::WorkflowDefinition;
use chatter_core::engine::{DurabilityMode, Engine, ExecutionStatus, RunOptions};
use chatter_core::store::Store;
use chatter_core::tracker::{ExecutionMeta, TrackedRun, WorkflowTracker};
use chatter_store::{StoreOptions, connect_with};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use serde_json::json;

const STEPS: usize = 100;

fn run_tracked(
    rt: &tokio::runtime::Runtime,
    tracker: &WorkflowTracker,
    engine: &Engine,
    def: &WorkflowDefinition,
    meta: &ExecutionMeta,
) -> TrackedRun {
    rt.block_on(tracker.run(engine, def, json!({}), RunOptions::default(), meta.clone()))
        .unwrap()
}

fn durable_vs_memory(
    c: &mut Criterion,
    label: &str,
    store: Arc<dyn Store>,
    modes: &[DurabilityMode],
) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let engine = engine_builder().build();
    let def = chain(STEPS);
    let meta = rt.block_on(stored_definition(&store, &def)).unwrap();
    let mut group = c.benchmark_group("durable");
    group.throughput(Throughput::Elements(STEPS as u64));
    group.measurement_time(Duration::from_secs(5));
    for &mode in modes {
        let tracker = WorkflowTracker::new(store.clone()).durability(mode);
        let run = || run_tracked(&rt, &tracker, &engine, &def, &meta);
        // Sanity: it completes and is fully recorded, one step per node.
        let first = run();
        assert_eq!(first.result.status, ExecutionStatus::Completed);
        assert!(first.store_error.is_none(), "{:?}", first.store_error);
        let record = rt
            .block_on(store.get_execution(&first.result.execution_id))
            .unwrap()
            .unwrap();
        assert_eq!(record.step_count, STEPS as i64);
        group.bench_function(format!("{label}_{mode}_chain_{STEPS}"), |b| b.iter(run));
    }
    group.bench_function(format!("memory_chain_{STEPS}_{label}_run"), |b| {
        b.iter(|| rt.block_on(engine.run(&def, json!({}), RunOptions::default())))
    });
    group.finish();

    // The same two, alternating, per step.
    let tracker = WorkflowTracker::new(store.clone()).durability(DurabilityMode::Sync);
    let rounds = 200;
    let paired = Paired::measure(
        rounds,
        || {
            run_tracked(&rt, &tracker, &engine, &def, &meta);
        },
        || {
            rt.block_on(engine.run(&def, json!({}), RunOptions::default()))
                .unwrap();
        },
    );
    let per_step = |d: Duration| d / STEPS as u32;
    println!(
        "{label} sync per step (paired medians over {rounds} runs of a {STEPS}-node chain): \
         durable {:?}, in memory {:?}, ratio {:.1}",
        per_step(paired.a[1]),
        per_step(paired.b[1]),
        paired.ratio()
    );
    println!(
        "{label} sync per step p10/p90/p99: durable {:?}/{:?}/{:?}, in memory {:?}/{:?}/{:?}",
        per_step(paired.a[0]),
        per_step(paired.a[2]),
        per_step(paired.a[3]),
        per_step(paired.b[0]),
        per_step(paired.b[2]),
        per_step(paired.b[3])
    );
}

fn sqlite(c: &mut Criterion) {
    let dir = std::env::temp_dir().join(format!("chatter-bench-{}", ulid::Ulid::new()));
    std::fs::create_dir_all(&dir).unwrap();
    // `CHATTER_BENCH_SQLITE_PARAMS=commit_spin_us=0` (URL parameters) compares settings in
    // one build.
    let params = std::env::var("CHATTER_BENCH_SQLITE_PARAMS")
        .map(|p| format!("?{p}"))
        .unwrap_or_default();
    let url = format!("sqlite://{}/durable.db{params}", dir.display());
    let store = tokio::runtime::Runtime::new()
        .unwrap()
        .block_on(connect_with(&url, StoreOptions::default()))
        .unwrap();
    durable_vs_memory(
        c,
        "sqlite",
        store,
        &[
            DurabilityMode::Sync,
            DurabilityMode::Async,
            DurabilityMode::Exit,
        ],
    );
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
    let rt = tokio::runtime::Runtime::new().unwrap();
    let schema = format!(
        "chatter_bench_{}",
        ulid::Ulid::new().to_string().to_lowercase()
    );
    let mut options = StoreOptions::default();
    options.pg_schema = Some(schema.clone());
    let store = rt.block_on(connect_with(&url, options)).unwrap();
    durable_vs_memory(
        c,
        "postgres",
        store,
        &[DurabilityMode::Sync, DurabilityMode::Exit],
    );
    rt.block_on(async {
        let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
            .await
            .unwrap();
        tokio::spawn(connection);
        client
            .batch_execute(&format!("DROP SCHEMA {schema} CASCADE"))
            .await
            .unwrap();
    });
}

criterion_group!(benches, sqlite, postgres);
criterion_main!(benches);
