//! The `WorkflowTracker` and the `StoreRetriever` against real stores: SQLite (file and memory)
//! and Postgres (`CHATTER_TEST_POSTGRES_URL`, one fresh schema per test, as in the conformance
//! suite).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chatter_core::engine::{
    DurabilityMode, Engine, ExecutionStatus as RunStatus, Node, NodeContext, NodeOutput, RunOptions,
};
use chatter_core::model::ModelRegistry;
use chatter_core::providers::scripted::ScriptedModel;
use chatter_core::retriever::{RetrievalQuery, Retriever, RetrieverRegistry};
use chatter_core::store::*;
use chatter_core::tracker::{ExecutionMeta, TrackedRun, TrackerObserver, WorkflowTracker};
use chatter_core::{ChatModel, NodeSpec, WorkflowDefinition};
use chatter_store::{StoreOptions, connect_with};
use serde_json::{Value, json};

mod support;
use support::ingest_samples;

// ---------------------------------------------------------------------------------------------
// Harness (as in tests/conformance.rs)
// ---------------------------------------------------------------------------------------------

async fn run_sqlite_memory<F, Fut>(case: F)
where
    F: FnOnce(Arc<dyn Store>) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let store = connect_with("sqlite::memory:", StoreOptions::default())
        .await
        .unwrap();
    case(store).await;
}

async fn run_sqlite_file<F, Fut>(case: F)
where
    F: FnOnce(Arc<dyn Store>) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let dir = support::temp_dir("chatter-tracker-test");
    let url = format!("sqlite://{}/chatter.db", dir.display());
    let store = connect_with(&url, StoreOptions::default()).await.unwrap();
    case(store).await;
    let _ = std::fs::remove_dir_all(&dir);
}

/// Runs `case` as a host that blocks on its runs does (Python's `Engine.run`, a CLI): from
/// this thread, on a 2-worker runtime, against a SQLite file in a new directory.
fn run_sqlite_blocking(name: &str, case: impl FnOnce(&tokio::runtime::Runtime, Arc<dyn Store>)) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let dir = support::temp_dir(name);
    let url = format!("sqlite://{}/chatter.db", dir.display());
    let store = runtime
        .block_on(connect_with(&url, StoreOptions::default()))
        .unwrap();
    case(&runtime, store);
    drop(runtime);
    let _ = std::fs::remove_dir_all(&dir);
}

async fn run_postgres<F, Fut>(case: F)
where
    F: FnOnce(Arc<dyn Store>) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let Some((store, url, schema)) = support::postgres_store(StoreOptions::default(), 4).await
    else {
        return;
    };
    let outcome = tokio::spawn(case(store)).await;
    support::drop_schema(&url, &schema).await;
    if let Err(e) = outcome {
        std::panic::resume_unwind(e.into_panic());
    }
}

macro_rules! on_every_backend {
    ($($case:ident),* $(,)?) => {
        mod sqlite_memory {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() { super::run_sqlite_memory(super::cases::$case).await; })*
        }
        mod sqlite_file {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() { super::run_sqlite_file(super::cases::$case).await; })*
        }
        mod postgres {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() { super::run_postgres(super::cases::$case).await; })*
        }
    };
}

on_every_backend!(
    completed_run_is_recorded_step_by_step,
    chat_snapshots_do_not_copy_the_messages,
    failed_run_keeps_its_error_message,
    cancelled_run_is_recorded_cancelled,
    template_run_updates_analytics,
    store_failure_mid_run_keeps_the_result,
    retries_skips_and_grouped_commits,
    the_last_steps_are_written_with_the_end,
    a_run_whose_row_cannot_be_written_is_an_error,
    retriever_ranks_owner_scoped_chunks,
    rag_workflow_puts_ranked_context_into_the_prompt,
    orchestrated_costs_routing_and_fallbacks_reach_every_record,
    observer_sees_every_event_of_runs_and_forks,
);

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

fn chat_definition() -> WorkflowDefinition {
    WorkflowDefinition::from_json(
        r#"{
          "nodes": [
            {"id": "start", "type": "start"},
            {"id": "chat", "type": "llm", "config": {"provider": "scripted", "system_prompt": "Be brief."}},
            {"id": "end", "type": "end"}
          ],
          "edges": [
            {"source": "start", "target": "chat"},
            {"source": "chat", "target": "end"}
          ]
        }"#,
    )
    .unwrap()
}

/// `start -> one -> two -> end`, two model calls (`scripted`).
/// start → `nodes` (node objects) in order → end.
fn linear(nodes: &[Value]) -> WorkflowDefinition {
    let mut all = vec![json!({"id": "start", "type": "start"})];
    all.extend(nodes.iter().cloned());
    all.push(json!({"id": "end", "type": "end"}));
    let edges: Vec<Value> = all
        .windows(2)
        .map(|pair| json!({"source": pair[0]["id"], "target": pair[1]["id"]}))
        .collect();
    WorkflowDefinition::from_value(&json!({"nodes": all, "edges": edges})).unwrap()
}

fn two_model_calls() -> WorkflowDefinition {
    WorkflowDefinition::from_json(
        r#"{
          "nodes": [
            {"id": "start", "type": "start"},
            {"id": "one", "type": "llm", "config": {"provider": "scripted"}},
            {"id": "two", "type": "llm", "config": {"provider": "scripted"}},
            {"id": "end", "type": "end"}
          ],
          "edges": [
            {"source": "start", "target": "one"},
            {"source": "one", "target": "two"},
            {"source": "two", "target": "end"}
          ]
        }"#,
    )
    .unwrap()
}

/// `tracker` runs the chat definition for alice (ad hoc, message "hi", default options).
async fn run_chat(tracker: &WorkflowTracker, engine: &Engine) -> TrackedRun {
    tracker
        .run(
            engine,
            &chat_definition(),
            json!({"message": "hi"}),
            RunOptions::default(),
            ExecutionMeta::new("alice", ExecutionKind::Adhoc),
        )
        .await
        .unwrap()
}

fn engine_with(script: Value) -> (Engine, Arc<ScriptedModel>) {
    let model = Arc::new(ScriptedModel::from_value(script).unwrap());
    let mut models = ModelRegistry::new();
    models.register("scripted", model.clone() as Arc<dyn ChatModel>);
    (Engine::builder().models(models).build(), model)
}

/// Records what a [`TrackerObserver`] is shown: `(execution id, owner, event type, seq)`, and
/// `resumed:<id>` entries.
#[derive(Default)]
struct Recorder(std::sync::Mutex<Vec<(String, String, String, u64)>>);

impl TrackerObserver for Recorder {
    fn on_event(&self, execution: &ExecutionRecord, event: &chatter_core::Event) {
        self.0.lock().unwrap().push((
            execution.id.clone(),
            execution.owner_id.clone(),
            event.kind.type_name().to_owned(),
            event.seq,
        ));
    }

    fn on_resumed(&self, execution: &ExecutionRecord) {
        self.0.lock().unwrap().push((
            execution.id.clone(),
            execution.owner_id.clone(),
            "resumed".to_owned(),
            0,
        ));
    }
}

/// An execution store that delegates to a real one but fails step commits (`commit_steps`,
/// `commit_steps_with_intent`, `start_with_steps`) from the `fail_from`-th call on; it counts
/// those calls, the ones that carried an intent, the ones that created the execution's row
/// (`start_with_steps`, `start_and_finish`), the ends (`finish_execution`,
/// `start_and_finish`) and the steps of all, and holds the first call for `first_delay` (so
/// completions pile up meanwhile).
struct FailingCommits {
    inner: Arc<dyn Store>,
    calls: std::sync::atomic::AtomicUsize,
    fail_from: usize,
    steps: std::sync::atomic::AtomicUsize,
    intents: std::sync::atomic::AtomicUsize,
    starts: std::sync::atomic::AtomicUsize,
    finishes: std::sync::atomic::AtomicUsize,
    first_delay: Duration,
}

impl FailingCommits {
    fn new(inner: Arc<dyn Store>, fail_from: usize, first_delay: Duration) -> FailingCommits {
        FailingCommits {
            inner,
            calls: std::sync::atomic::AtomicUsize::new(0),
            fail_from,
            steps: std::sync::atomic::AtomicUsize::new(0),
            intents: std::sync::atomic::AtomicUsize::new(0),
            starts: std::sync::atomic::AtomicUsize::new(0),
            finishes: std::sync::atomic::AtomicUsize::new(0),
            first_delay,
        }
    }

    /// Counts a step commit of `steps`; fails it from the `fail_from`-th on.
    async fn step_commit(&self, steps: &[StepCommit]) -> StoreResult<()> {
        let n = self.calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        if n >= self.fail_from {
            return Err(chatter_core::Error::store(
                StoreErrorKind::Unavailable,
                "database went away",
            ));
        }
        if n == 0 {
            tokio::time::sleep(self.first_delay).await;
        }
        self.steps
            .fetch_add(steps.len(), std::sync::atomic::Ordering::SeqCst);
        Ok(())
    }
}

#[async_trait]
impl ExecutionStore for FailingCommits {
    async fn create_execution(&self, new: NewExecution) -> StoreResult<ExecutionRecord> {
        self.inner.create_execution(new).await
    }
    async fn get_execution(&self, id: &str) -> StoreResult<Option<ExecutionRecord>> {
        self.inner.get_execution(id).await
    }
    async fn list_executions(
        &self,
        filter: &ExecutionFilter,
        page: Page,
    ) -> StoreResult<Vec<ExecutionRecord>> {
        self.inner.list_executions(filter, page).await
    }
    async fn set_execution_status(
        &self,
        id: &str,
        status: ExecutionStatus,
        at: i64,
    ) -> StoreResult<ExecutionRecord> {
        self.inner.set_execution_status(id, status, at).await
    }
    async fn complete_execution(
        &self,
        id: &str,
        outcome: ExecutionOutcome,
    ) -> StoreResult<ExecutionRecord> {
        self.inner.complete_execution(id, outcome).await
    }
    async fn delete_execution(&self, id: &str) -> StoreResult<bool> {
        self.inner.delete_execution(id).await
    }
    async fn commit_steps(&self, steps: &[StepCommit]) -> StoreResult<Vec<StepReceipt>> {
        self.step_commit(steps).await?;
        self.inner.commit_steps(steps).await
    }
    async fn commit_steps_with_intent(
        &self,
        steps: &[StepCommit],
        intent: &NodeRunRecord,
    ) -> StoreResult<Vec<StepReceipt>> {
        self.step_commit(steps).await?;
        self.intents
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        self.inner.commit_steps_with_intent(steps, intent).await
    }
    async fn start_with_steps(
        &self,
        start: &ExecutionStart,
        steps: &[StepCommit],
        intent: Option<&NodeRunRecord>,
    ) -> StoreResult<Vec<StepReceipt>> {
        self.step_commit(steps).await?;
        self.starts
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        if intent.is_some() {
            self.intents
                .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
        self.inner.start_with_steps(start, steps, intent).await
    }
    async fn start_and_finish(
        &self,
        start: &ExecutionStart,
        steps: &[StepCommit],
        outcome: ExecutionOutcome,
    ) -> StoreResult<ExecutionRecord> {
        for counter in [&self.starts, &self.finishes] {
            counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
        self.steps
            .fetch_add(steps.len(), std::sync::atomic::Ordering::SeqCst);
        self.inner.start_and_finish(start, steps, outcome).await
    }
    async fn finish_execution(
        &self,
        id: &str,
        steps: &[StepCommit],
        outcome: ExecutionOutcome,
    ) -> StoreResult<ExecutionRecord> {
        self.finishes
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        self.steps
            .fetch_add(steps.len(), std::sync::atomic::Ordering::SeqCst);
        self.inner.finish_execution(id, steps, outcome).await
    }
    async fn append_events(
        &self,
        execution_id: &str,
        events: &[NewEvent],
    ) -> StoreResult<Vec<i64>> {
        self.inner.append_events(execution_id, events).await
    }
    async fn list_events(
        &self,
        execution_id: &str,
        after_seq: i64,
        limit: u32,
    ) -> StoreResult<Vec<EventRecord>> {
        self.inner.list_events(execution_id, after_seq, limit).await
    }
    async fn list_node_runs(&self, execution_id: &str) -> StoreResult<Vec<NodeRunRecord>> {
        self.inner.list_node_runs(execution_id).await
    }
    async fn list_checkpoints(&self, execution_id: &str) -> StoreResult<Vec<CheckpointRecord>> {
        self.inner.list_checkpoints(execution_id).await
    }
    async fn compact_checkpoints(&self, execution_id: &str) -> StoreResult<u64> {
        self.inner.compact_checkpoints(execution_id).await
    }
    async fn record_intent(&self, run: &NodeRunRecord) -> StoreResult<()> {
        self.inner.record_intent(run).await
    }
    async fn acquire_lease(
        &self,
        id: &str,
        owner: &str,
        until: i64,
        now: i64,
    ) -> StoreResult<bool> {
        self.inner.acquire_lease(id, owner, until, now).await
    }
    async fn release_lease(&self, id: &str, owner: &str) -> StoreResult<()> {
        self.inner.release_lease(id, owner).await
    }
    async fn set_wake_at(&self, id: &str, wake_at: Option<i64>) -> StoreResult<()> {
        self.inner.set_wake_at(id, wake_at).await
    }
    async fn list_resumable(&self, now: i64, limit: u32) -> StoreResult<Vec<ExecutionRecord>> {
        self.inner.list_resumable(now, limit).await
    }
    async fn apply_retention(&self, policy: &RetentionPolicy, now: i64) -> StoreResult<u64> {
        self.inner.apply_retention(policy, now).await
    }
}

/// A node that notes the thread it ran on.
struct NotesThread(Arc<std::sync::Mutex<Vec<std::thread::ThreadId>>>);

#[async_trait]
impl Node for NotesThread {
    async fn run(&self, _ctx: NodeContext) -> chatter_core::Result<NodeOutput> {
        self.0.lock().unwrap().push(std::thread::current().id());
        Ok(NodeOutput::default())
    }
}

/// A caller that blocks on a tracked run (as Python's `Engine.run` does) has it run on its own
/// thread with `RunOptions::in_place`, and on the runtime's workers without; both record the
/// same steps and end the execution the same way. Observed (an `observe` callback and the
/// tracker's observer), a run in place hands both the same events, in the same order, as one
/// in a task of its own.
#[test]
fn an_in_place_run_runs_on_the_callers_thread_and_is_recorded_alike() {
    run_sqlite_blocking("chatter-tracker-in-place", |runtime, store| {
        let threads = Arc::new(std::sync::Mutex::new(Vec::new()));
        let noted = threads.clone();
        let engine = Engine::builder()
            .register_node("notes_thread", move |_: &NodeSpec| {
                Ok(Arc::new(NotesThread(noted.clone())) as Arc<dyn Node>)
            })
            .build();
        let def = linear(&[
            json!({"id": "a", "type": "notes_thread"}),
            json!({"id": "b", "type": "notes_thread"}),
        ]);
        let caller = std::thread::current().id();
        let seen = Arc::new(Recorder::default());
        let mut recorded = Vec::new();
        let mut observed = Vec::new();
        for (in_place, observing) in [(true, false), (false, false), (true, true), (false, true)] {
            let mut tracker = WorkflowTracker::new(store.clone());
            if observing {
                tracker = tracker.observer(seen.clone());
            }
            let mut called = Vec::new();
            let options = RunOptions::default().in_place(in_place);
            let meta = ExecutionMeta::new("alice", ExecutionKind::Adhoc);
            let run = runtime
                .block_on(async {
                    if observing {
                        let observe =
                            |e: &chatter_core::Event| called.push((e.seq, e.kind.type_name()));
                        tracker
                            .run_observed(&engine, &def, json!({}), options, meta, observe)
                            .await
                    } else {
                        tracker.run(&engine, &def, json!({}), options, meta).await
                    }
                })
                .unwrap();
            assert!(run.store_error.is_none(), "{:?}", run.store_error);
            assert_eq!(run.result.status, RunStatus::Completed);
            let ran = std::mem::take(&mut *threads.lock().unwrap());
            assert_eq!(ran.len(), 2, "in_place {in_place}");
            assert_eq!(
                ran.iter().all(|t| *t == caller),
                in_place,
                "in_place {in_place}: the nodes ran on {ran:?}, the caller is {caller:?}"
            );
            let id = run.result.execution_id.clone();
            let record = runtime.block_on(store.get_execution(&id)).unwrap().unwrap();
            assert_eq!(record.status, ExecutionStatus::Completed);
            assert_eq!(record.lease_owner, None);
            assert_eq!(run.record.as_ref(), Some(&record));
            let steps = runtime.block_on(support::node_steps(&store, &id));
            let events = runtime.block_on(store.list_events(&id, 0, 100)).unwrap();
            let kinds: Vec<(i64, String)> = events
                .iter()
                .map(|e| (e.seq, e.event_type.clone()))
                .collect();
            if observing {
                let to_observer: Vec<(u64, String)> = std::mem::take(&mut *seen.0.lock().unwrap())
                    .into_iter()
                    .map(|(execution, owner, kind, seq)| {
                        assert_eq!((execution.as_str(), owner.as_str()), (id.as_str(), "alice"));
                        (seq, kind)
                    })
                    .collect();
                let called_owned: Vec<(u64, String)> = called
                    .iter()
                    .map(|(seq, kind)| (*seq, (*kind).to_owned()))
                    .collect();
                assert_eq!(to_observer, called_owned, "in_place {in_place}");
                let stored: Vec<(u64, &str)> = kinds
                    .iter()
                    .map(|(seq, kind)| (*seq as u64, kind.as_str()))
                    .collect();
                assert_eq!(called, stored, "in_place {in_place}: every event, in order");
                observed.push(called);
            }
            recorded.push((steps, kinds));
        }
        assert!(recorded.iter().all(|r| *r == recorded[0]));
        assert_eq!(
            recorded[0].0,
            [("start", 1), ("a", 2), ("b", 3), ("end", 4)]
                .map(|(node, step)| (node.to_owned(), Some(step)))
        );
        assert_eq!(observed[0], observed[1]);
        assert_eq!(observed[0].first(), Some(&(1, "execution_started")));
        assert_eq!(observed[0].last().map(|e| e.1), Some("execution_completed"));
    });
}

/// A run longer than its lease keeps it, in place or in a task of its own: the lease is
/// renewed while the run waits, so another worker's `resume_due` finds nothing to take over,
/// and the node runs once.
#[test]
fn a_long_run_renews_its_lease() {
    run_sqlite_blocking("chatter-tracker-renewal", |runtime, store| {
        let engine = Engine::builder().build();
        // 900 ms of waiting under a 300 ms lease, renewed every 100 ms.
        let def = linear(&[json!(
            {"id": "wait", "type": "delay", "config": {"delay_type": "fixed", "delay_ms": 900}}
        )]);
        for in_place in [true, false] {
            let tracker = WorkflowTracker::new(store.clone())
                .worker_id("w1")
                .lease_ms(300);
            let other = WorkflowTracker::new(store.clone())
                .worker_id("w2")
                .lease_ms(300);
            let taken_over = runtime.block_on(async {
                let run = tracker.run(
                    &engine,
                    &def,
                    json!({}),
                    RunOptions::default().in_place(in_place),
                    ExecutionMeta::new("alice", ExecutionKind::Adhoc),
                );
                let watch = async {
                    let mut taken = Vec::new();
                    for _ in 0..8 {
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        let source = chatter_core::tracker::StoreGraphSource::new(store.clone());
                        let now = engine.services().clock.now_ms();
                        let due = other.resume_due(&engine, &source, now).await.unwrap();
                        taken.extend(due.into_iter().map(|(id, _)| id));
                    }
                    taken
                };
                let (run, taken) = tokio::join!(run, watch);
                let run = run.unwrap();
                assert_eq!(
                    run.result.status,
                    RunStatus::Completed,
                    "in_place {in_place}"
                );
                let steps = support::node_steps(&store, &run.result.execution_id).await;
                assert_eq!(steps.len(), 3, "in_place {in_place}: {steps:?}");
                taken
            });
            assert!(
                taken_over.is_empty(),
                "in_place {in_place}: another worker took the execution over: {taken_over:?}"
            );
        }
    });
}

// ---------------------------------------------------------------------------------------------
// Cases
// ---------------------------------------------------------------------------------------------

mod cases {
    pub use super::orchestration_cases::*;
    use super::*;

    /// Snapshots are not written when the message list is most of the state (a chat): the
    /// deltas hold every message already. The steps listing rebuilds the same states.
    pub async fn chat_snapshots_do_not_copy_the_messages(s: Arc<dyn Store>) {
        let reply = "A long answer that makes the messages most of the state. ".repeat(10);
        let (engine, _) = engine_with(json!({"default": {"content": reply}}));
        let def = two_model_calls();
        let tracker = WorkflowTracker::new(s.clone()).snapshot_every(1);
        let run = tracker
            .run(
                &engine,
                &def,
                json!({"message": "hi"}),
                RunOptions::default(),
                ExecutionMeta::new("alice", ExecutionKind::Adhoc),
            )
            .await
            .unwrap();
        assert!(run.store_error.is_none(), "{:?}", run.store_error);
        let result = run.result;
        assert_eq!(result.status, RunStatus::Completed);
        let id = &result.execution_id;
        let snapshots: Vec<(i64, Value)> = s
            .list_checkpoints(id)
            .await
            .unwrap()
            .into_iter()
            .filter(|c| c.kind == CheckpointKind::Snapshot)
            .map(|c| (c.step, c.state))
            .collect();
        // The start step's snapshot (one short message) is written; none holds a reply.
        assert_eq!(snapshots.first().map(|(step, _)| *step), Some(1));
        for (step, state) in &snapshots {
            assert!(
                !state.to_string().contains(reply.trim_end()),
                "the snapshot of step {step} copies the messages"
            );
        }
        let steps = tracker.steps(id).await.unwrap();
        let last = steps.last().unwrap();
        assert_eq!(last.node_id, "end");
        assert_eq!(
            last.state["messages"],
            serde_json::to_value(&result.messages).unwrap()
        );
        let replies = last.state["messages"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|m| m["content"] == json!(reply))
            .count();
        assert_eq!(replies, 2);
    }

    pub async fn completed_run_is_recorded_step_by_step(s: Arc<dyn Store>) {
        let (engine, _) = engine_with(json!({
            "default": {"content": "Hello there."},
            "usage": {"prompt_tokens": 12, "completion_tokens": 3}
        }));
        let tracker = WorkflowTracker::new(s.clone());
        let id = ulid::Ulid::new().to_string();
        let run = tracker
            .run(
                &engine,
                &chat_definition(),
                json!({"message": "hi"}),
                RunOptions::default().execution_id(id.clone()),
                ExecutionMeta::new("alice", ExecutionKind::Adhoc).params(json!({"k": 1})),
            )
            .await
            .unwrap();
        assert!(run.store_error.is_none(), "{:?}", run.store_error);
        let result = run.result;
        assert_eq!(result.execution_id, id);
        assert_eq!(result.status, RunStatus::Completed);

        let record = s.get_execution(&id).await.unwrap().unwrap();
        assert_eq!(record.status, ExecutionStatus::Completed);
        assert_eq!(record.owner_id, "alice");
        assert_eq!(record.kind, ExecutionKind::Adhoc);
        assert_eq!(record.input, json!({"message": "hi"}));
        assert_eq!(record.params, json!({"k": 1}));
        assert_eq!(record.response.as_deref(), Some("Hello there."));
        assert_eq!(record.error, None);
        assert_eq!(record.prompt_tokens, 12);
        assert_eq!(record.completion_tokens, 3);
        assert_eq!(record.total_tokens, 15);
        assert!(record.started_at.is_some());
        assert_eq!(record.step_count, 3);

        let runs = s.list_node_runs(&id).await.unwrap();
        let mut summary: Vec<(String, NodeRunStatus, i64, i64, i64)> = runs
            .iter()
            .map(|r| {
                (
                    r.node_id.clone(),
                    r.status,
                    r.attempt,
                    r.prompt_tokens,
                    r.completion_tokens,
                )
            })
            .collect();
        summary.sort_by(|a, b| a.0.cmp(&b.0));
        assert_eq!(
            summary,
            vec![
                ("chat".into(), NodeRunStatus::Completed, 1, 12, 3),
                ("end".into(), NodeRunStatus::Completed, 1, 0, 0),
                ("start".into(), NodeRunStatus::Completed, 1, 0, 0),
            ]
        );
        for r in &runs {
            let engine_run = result.runs_of(&r.node_id).next().unwrap();
            assert_eq!(r.started_at, engine_run.started_at_ms, "{}", r.node_id);
            assert_eq!(
                r.duration_ms,
                Some(i64::try_from(engine_run.duration_ms).unwrap())
            );
        }

        // Every engine event, with the engine's sequence numbers, contiguous from 1.
        let events = s.list_events(&id, 0, 1000).await.unwrap();
        assert_eq!(events.len(), result.events.len());
        for (stored, engine_event) in events.iter().zip(&result.events) {
            assert_eq!(stored.seq, i64::try_from(engine_event.seq).unwrap());
            assert_eq!(stored.event_type, engine_event.kind.type_name());
            assert_eq!(stored.ts, engine_event.ts_ms);
        }
        let seqs: Vec<i64> = events.iter().map(|e| e.seq).collect();
        assert_eq!(
            seqs,
            (1..=i64::try_from(events.len()).unwrap()).collect::<Vec<_>>()
        );
        assert_eq!(events.first().unwrap().event_type, "execution_started");
        assert_eq!(events.last().unwrap().event_type, "execution_completed");
        assert_eq!(record.last_event_seq, i64::try_from(events.len()).unwrap());

        // The chat step's delta holds the assistant message and the usage, as the engine's.
        let checkpoints = s.list_checkpoints(&id).await.unwrap();
        let chat = checkpoints
            .iter()
            .find(|c| c.node_id.as_deref() == Some("chat"))
            .unwrap();
        assert_eq!(chat.kind, CheckpointKind::Delta);
        let engine_delta =
            serde_json::to_value(&result.runs_of("chat").next().unwrap().delta).unwrap();
        assert_eq!(chat.state, engine_delta);
        assert_eq!(chat.state["messages"][0]["content"], "Hello there.");
    }

    pub async fn failed_run_keeps_its_error_message(s: Arc<dyn Store>) {
        let (engine, _) = engine_with(json!({
            "default": {"error": {"class": "bad_request", "message": "context too long"}}
        }));
        let tracker = WorkflowTracker::new(s.clone());
        let run = run_chat(&tracker, &engine).await;
        assert!(run.store_error.is_none(), "{:?}", run.store_error);
        let result = run.result;
        assert_eq!(result.status, RunStatus::Failed);
        let message = result.error.clone().unwrap().message;
        assert!(message.contains("context too long"), "{message}");

        let record = s
            .get_execution(&result.execution_id)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(record.status, ExecutionStatus::Failed);
        assert_eq!(record.error.as_deref(), Some(message.as_str()));
        let runs = s.list_node_runs(&result.execution_id).await.unwrap();
        let chat = runs.iter().find(|r| r.node_id == "chat").unwrap();
        assert_eq!(chat.status, NodeRunStatus::Failed);
        assert!(
            chat.error.as_deref().unwrap().contains("context too long"),
            "{:?}",
            chat.error
        );
        let events = s.list_events(&result.execution_id, 0, 1000).await.unwrap();
        assert_eq!(events.len(), result.events.len());
        assert_eq!(events.last().unwrap().event_type, "execution_failed");
        // The failure's delta is the error the engine recorded in the state.
        let checkpoints = s.list_checkpoints(&result.execution_id).await.unwrap();
        let failed = checkpoints
            .iter()
            .find(|c| c.node_id.as_deref() == Some("chat"))
            .unwrap();
        assert_eq!(failed.state["errors"][0]["node_id"], "chat");
    }

    pub async fn cancelled_run_is_recorded_cancelled(s: Arc<dyn Store>) {
        let (engine, _) = engine_with(json!({"default": {"content": "Thinking", "hang": true}}));
        let tracker = WorkflowTracker::new(s.clone());
        let cancel = tokio_util_cancel();
        let id = ulid::Ulid::new().to_string();
        let options = RunOptions::default()
            .execution_id(id.clone())
            .cancel(cancel.clone());
        let task = {
            let tracker = tracker.clone();
            tokio::spawn(async move {
                tracker
                    .run(
                        &engine,
                        &chat_definition(),
                        json!({"message": "hi"}),
                        options,
                        ExecutionMeta::new("alice", ExecutionKind::Chat),
                    )
                    .await
            })
        };
        // Wait until the row says running, then cancel.
        for _ in 0..200 {
            if let Some(r) = s.get_execution(&id).await.unwrap()
                && r.status == ExecutionStatus::Running
            {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        cancel.cancel();
        let run = task.await.unwrap().unwrap();
        assert!(run.store_error.is_none(), "{:?}", run.store_error);
        assert_eq!(run.result.status, RunStatus::Cancelled);
        let record = s.get_execution(&id).await.unwrap().unwrap();
        assert_eq!(record.status, ExecutionStatus::Cancelled);
        assert_eq!(record.kind, ExecutionKind::Chat);
        let events = s.list_events(&id, 0, 1000).await.unwrap();
        assert_eq!(events.len(), run.result.events.len());
        assert_eq!(events.last().unwrap().event_type, "execution_cancelled");
    }

    fn tokio_util_cancel() -> tokio_util::sync::CancellationToken {
        tokio_util::sync::CancellationToken::new()
    }

    pub async fn template_run_updates_analytics(s: Arc<dyn Store>) {
        let template = s
            .create_template(NewTemplate {
                owner_id: Some("alice".into()),
                name: "chat".into(),
                category: "general".into(),
                spec: json!({"default_params": {}}),
                ..NewTemplate::default()
            })
            .await
            .unwrap();
        let (engine, _) = engine_with(json!({
            "default": {"content": "ok"},
            "usage": {"prompt_tokens": 10, "completion_tokens": 5}
        }));
        let tracker = WorkflowTracker::new(s.clone());
        for _ in 0..2 {
            let run = tracker
                .run(
                    &engine,
                    &chat_definition(),
                    json!({"message": "hi"}),
                    RunOptions::default(),
                    ExecutionMeta::new("alice", ExecutionKind::Template)
                        .template(template.id.clone())
                        .params(json!({"temperature": 0.1})),
                )
                .await
                .unwrap();
            assert!(run.store_error.is_none(), "{:?}", run.store_error);
            let record = s
                .get_execution(&run.result.execution_id)
                .await
                .unwrap()
                .unwrap();
            assert_eq!(record.template_id.as_deref(), Some(template.id.as_str()));
        }
        let stats = s.template_analytics(&template.id).await.unwrap().unwrap();
        assert_eq!(stats.usage_count, 2);
        assert_eq!(stats.success_count, 2);
        assert_eq!(stats.failure_count, 0);
        assert_eq!(stats.total_tokens, 30);
        assert!(stats.last_used_at.is_some());
    }

    pub async fn store_failure_mid_run_keeps_the_result(s: Arc<dyn Store>) {
        // start -> one -> two -> end, two model calls. The database goes away after the first
        // write (the row, start's step, one's intent): in sync mode nothing runs on without
        // being recorded, so the execution stops (class `storage`) before `two` calls its
        // model, its row is left running (resumable), and once the database is back a resume
        // completes it.
        let (engine, model) = engine_with(json!({"default": {"content": "Still answered."}}));
        let def = two_model_calls();
        let failing = Arc::new(FailingCommits::new(s.clone(), 1, Duration::ZERO));
        let run = WorkflowTracker::new(failing)
            .run(
                &engine,
                &def,
                json!({"message": "hi"}),
                RunOptions::default(),
                ExecutionMeta::new("alice", ExecutionKind::Adhoc),
            )
            .await
            .unwrap();
        assert_eq!(run.result.status, RunStatus::Failed);
        assert_eq!(model.call_count(), 1, "`two` never called its model");
        let failure = run.result.error.as_ref().unwrap();
        assert_eq!(failure.class, "storage");
        assert_eq!(
            failure.message,
            "the execution could not be recorded: storage error (unavailable): database went away"
        );
        let error = run.store_error.as_ref().unwrap();
        assert_eq!(error.store_kind(), Some(StoreErrorKind::Unavailable));
        assert_eq!(
            error.to_string(),
            "storage error (unavailable): database went away"
        );
        let id = run.result.execution_id.clone();
        let record = s.get_execution(&id).await.unwrap().unwrap();
        assert_eq!(record.status, ExecutionStatus::Running);
        assert_eq!(record.lease_owner, None, "the lease was given up");
        assert_eq!(
            support::node_steps(&s, &id).await,
            [("start".to_owned(), Some(1)), ("one".to_owned(), None)],
            "start's step and one's intent"
        );
        assert!(run.into_result().is_err(), "{id}");

        let resumed = WorkflowTracker::new(s.clone())
            .resume(&engine, &def, &id, None, RunOptions::default())
            .await
            .unwrap()
            .into_result()
            .unwrap();
        assert_eq!(resumed.status, RunStatus::Completed);
        assert_eq!(resumed.response.as_deref(), Some("Still answered."));
        let record = s.get_execution(&id).await.unwrap().unwrap();
        assert_eq!(record.status, ExecutionStatus::Completed);
        let events = s.list_events(&id, 0, 100).await.unwrap();
        assert_eq!(
            events
                .iter()
                .filter(|e| e.event_type == "execution_started")
                .count(),
            1
        );
    }

    pub async fn a_run_whose_row_cannot_be_written_is_an_error(s: Arc<dyn Store>) {
        // In sync mode the execution's row is written with its first write. When that write
        // fails, the execution does not exist: the run is an error, as when the row was
        // written before the run, and the model was not called.
        let (engine, model) = engine_with(json!({"default": {"content": "Hello."}}));
        let tracker = WorkflowTracker::new(s.clone());
        let first = run_chat(&tracker, &engine).await;
        let id = first.result.execution_id.clone();
        assert_eq!(model.call_count(), 1);
        // The same id again: a conflict, and the first execution is left as it was.
        let mut options = RunOptions::default();
        options.execution_id = Some(id.clone());
        let meta = || ExecutionMeta::new("alice", ExecutionKind::Adhoc);
        let error = tracker
            .run(
                &engine,
                &chat_definition(),
                json!({"message": "again"}),
                options,
                meta(),
            )
            .await
            .map(|run| run.result.status)
            .unwrap_err();
        assert_eq!(
            error.store_kind(),
            Some(StoreErrorKind::Conflict),
            "{error}"
        );
        assert_eq!(model.call_count(), 1);
        assert_eq!(s.get_execution(&id).await.unwrap(), first.record);
        assert_eq!(s.list_node_runs(&id).await.unwrap().len(), 3);
        // The database gone at the first write: nothing is stored under the new id.
        let failing = Arc::new(FailingCommits::new(s.clone(), 0, Duration::ZERO));
        let mut options = RunOptions::default();
        options.execution_id = Some("01JNEVERWRITTEN000000000000".into());
        let error = WorkflowTracker::new(failing)
            .run(
                &engine,
                &chat_definition(),
                json!({"message": "hi"}),
                options,
                meta(),
            )
            .await
            .map(|run| run.result.status)
            .unwrap_err();
        assert_eq!(
            error.store_kind(),
            Some(StoreErrorKind::Unavailable),
            "{error}"
        );
        assert_eq!(model.call_count(), 1);
        assert_eq!(
            s.get_execution("01JNEVERWRITTEN000000000000")
                .await
                .unwrap(),
            None
        );
        // A run of pure nodes only is written once, at its end, row and all.
        let counting = Arc::new(FailingCommits::new(s.clone(), usize::MAX, Duration::ZERO));
        let pure = WorkflowDefinition::from_json(
            r#"{"nodes": [{"id": "start", "type": "start"}, {"id": "end", "type": "end"}],
                "edges": [{"source": "start", "target": "end"}]}"#,
        )
        .unwrap();
        let run = WorkflowTracker::new(counting.clone())
            .run(
                &engine,
                &pure,
                json!({"message": "hi"}),
                RunOptions::default(),
                meta(),
            )
            .await
            .unwrap();
        let load = |n: &std::sync::atomic::AtomicUsize| n.load(std::sync::atomic::Ordering::SeqCst);
        assert_eq!(
            (
                load(&counting.calls),
                load(&counting.starts),
                load(&counting.finishes)
            ),
            (0, 1, 1)
        );
        let stored = s.get_execution(&run.result.execution_id).await.unwrap();
        assert_eq!(
            stored.as_ref().map(|r| (r.status, r.step_count)),
            Some((ExecutionStatus::Completed, 2))
        );
        assert_eq!(run.record, stored);
    }

    pub async fn the_last_steps_are_written_with_the_end(s: Arc<dyn Store>) {
        // start -> chat -> end: `sync` writes the execution's row, start's step and chat's
        // intent in one write, before chat calls the model; `end` is pure, so it runs before
        // chat's step is written, and both steps go with the outcome: two writes in all.
        // `exit` writes the row first and the three steps with the outcome; `async` hands
        // steps to its writer task and writes what is left with the outcome. (Step commit
        // calls, those carrying an intent, those creating the row; the rest of the 3 steps go
        // with the end.)
        for (mode, commits) in [
            (DurabilityMode::Sync, Some((1, 1, 1))),
            (DurabilityMode::Exit, Some((0, 0, 0))),
            (DurabilityMode::Async, None),
        ] {
            let (engine, _) = engine_with(json!({"default": {"content": "Hello."}}));
            let counting = Arc::new(FailingCommits::new(s.clone(), usize::MAX, Duration::ZERO));
            let tracker = WorkflowTracker::new(counting.clone()).durability(mode);
            let run = run_chat(&tracker, &engine).await;
            assert!(run.store_error.is_none(), "{mode:?}: {:?}", run.store_error);
            let id = &run.result.execution_id;
            let stored = s.get_execution(id).await.unwrap().unwrap();
            assert_eq!(stored.status, ExecutionStatus::Completed, "{mode:?}");
            assert_eq!(stored.step_count, 3, "{mode:?}");
            assert_eq!(stored.response.as_deref(), Some("Hello."), "{mode:?}");
            assert_eq!(run.record.as_ref(), Some(&stored), "{mode:?}");
            let load =
                |n: &std::sync::atomic::AtomicUsize| n.load(std::sync::atomic::Ordering::SeqCst);
            assert_eq!(load(&counting.finishes), 1, "{mode:?}");
            assert_eq!(load(&counting.steps), 3, "{mode:?}");
            if let Some((commits, intents, starts)) = commits {
                assert_eq!(load(&counting.calls), commits, "{mode:?}");
                assert_eq!(load(&counting.intents), intents, "{mode:?}");
                assert_eq!(load(&counting.starts), starts, "{mode:?}");
            }
            if mode == DurabilityMode::Sync {
                // The intent written with start's step holds chat's key.
                let runs = s.list_node_runs(id).await.unwrap();
                let chat = runs.iter().find(|r| r.node_id == "chat").unwrap();
                assert_eq!(chat.idempotency_key, Some(format!("{id}:chat:0:1")));
            }
            let nodes = support::node_steps(&s, id).await;
            assert_eq!(
                nodes,
                [
                    ("start".to_owned(), Some(1)),
                    ("chat".to_owned(), Some(2)),
                    ("end".to_owned(), Some(3))
                ],
                "{mode:?}"
            );
            let events = s.list_events(id, 0, 100).await.unwrap();
            assert_eq!(events.len(), run.result.events.len(), "{mode:?}");
            assert_eq!(
                events.last().map(|e| e.event_type.as_str()),
                Some("execution_completed")
            );
        }
    }

    pub async fn retries_skips_and_grouped_commits(s: Arc<dyn Store>) {
        // `flaky` fails once (retryable) then answers; `no` is on the dead branch; the fan-out
        // a/b/c completes while the first commit is held, so later steps share a transaction.
        let (engine, _) = engine_with(json!({
            "rules": [
                {"match": {"contains": "go"},
                 "reply": {"error": {"class": "server", "message": "flaked"}}, "times": 1}
            ],
            "default": {"content": "fine"},
            "usage": {"prompt_tokens": 7, "completion_tokens": 2}
        }));
        let def = WorkflowDefinition::from_json(
            r#"{
              "nodes": [
                {"id": "start", "type": "start"},
                {"id": "flaky", "type": "llm", "config": {"provider": "scripted",
                  "retry": {"max_attempts": 3, "backoff_ms": 1, "jitter": false}}},
                {"id": "check", "type": "conditional", "config": {"condition": "1 == 1"}},
                {"id": "a", "type": "variable", "config": {"operation": "set", "variable_name": "a", "value": 1}},
                {"id": "b", "type": "variable", "config": {"operation": "set", "variable_name": "b", "value": 2}},
                {"id": "c", "type": "variable", "config": {"operation": "set", "variable_name": "c", "value": 3}},
                {"id": "no", "type": "variable", "config": {"operation": "set", "variable_name": "no", "value": 0}}
              ],
              "edges": [
                {"source": "start", "target": "flaky"},
                {"source": "flaky", "target": "check"},
                {"source": "check", "target": "a", "sourceHandle": "true"},
                {"source": "check", "target": "b", "sourceHandle": "true"},
                {"source": "check", "target": "c", "sourceHandle": "true"},
                {"source": "check", "target": "no", "sourceHandle": "false"}
              ]
            }"#,
        )
        .unwrap();
        let counting = Arc::new(FailingCommits::new(
            s.clone(),
            usize::MAX,
            Duration::from_millis(100),
        ));
        let run = WorkflowTracker::new(counting.clone())
            .run(
                &engine,
                &def,
                json!({"message": "go"}),
                RunOptions::default(),
                ExecutionMeta::new("alice", ExecutionKind::Adhoc),
            )
            .await
            .unwrap();
        assert!(run.store_error.is_none(), "{:?}", run.store_error);
        let ended = run.record.clone().expect("the ended row");
        let result = run.result;
        assert_eq!(result.status, RunStatus::Completed, "{:?}", result.error);
        let id = &result.execution_id;

        let runs = s.list_node_runs(id).await.unwrap();
        let find = |node: &str| {
            runs.iter()
                .filter(|r| r.node_id == node)
                .max_by_key(|r| r.attempt)
                .unwrap()
        };
        // Every node run, plus the intent of flaky's first attempt, ended as failed by the
        // attempt that followed.
        assert_eq!(runs.len(), result.node_runs.len() + 1);
        let first = runs
            .iter()
            .find(|r| r.node_id == "flaky" && r.attempt == 1)
            .unwrap();
        assert_eq!(first.status, NodeRunStatus::Failed);
        assert_eq!(first.step, None);
        assert_eq!(
            first.error.as_deref(),
            Some("attempt 1 failed; attempt 2 followed")
        );
        assert_eq!(
            first.idempotency_key.as_deref(),
            Some(&*format!("{id}:flaky:0:1"))
        );
        assert_eq!(find("flaky").attempt, 2);
        assert_eq!(find("flaky").status, NodeRunStatus::Completed);
        assert_eq!(find("flaky").prompt_tokens, 7);
        assert_eq!(find("no").status, NodeRunStatus::Skipped);
        for node in ["a", "b", "c", "check", "start"] {
            assert_eq!(find(node).status, NodeRunStatus::Completed, "{node}");
        }

        // One step per node run, in fewer transactions than steps.
        let steps = counting.steps.load(std::sync::atomic::Ordering::SeqCst);
        let calls = counting.calls.load(std::sync::atomic::Ordering::SeqCst);
        assert_eq!(steps, result.node_runs.len());
        assert!(
            calls < steps,
            "{calls} commit_steps calls for {steps} steps"
        );
        let record = s.get_execution(id).await.unwrap().unwrap();
        assert_eq!(record.step_count, i64::try_from(steps).unwrap());
        // The last steps were written with the end, in one call; the run hands back the row
        // that call wrote.
        assert_eq!(
            counting.finishes.load(std::sync::atomic::Ordering::SeqCst),
            1
        );
        assert_eq!(ended, record);

        // Events: all of them, contiguous, retry events included.
        let events = s.list_events(id, 0, 1000).await.unwrap();
        assert_eq!(events.len(), result.events.len());
        assert!(events.iter().any(|e| e.event_type == "node_retrying"));
        assert!(
            events
                .iter()
                .enumerate()
                .all(|(i, e)| e.seq == i64::try_from(i).unwrap() + 1)
        );
        // The variable steps' deltas, as the engine applied them.
        let checkpoints = s.list_checkpoints(id).await.unwrap();
        for node in ["a", "b", "c"] {
            let delta = &checkpoints
                .iter()
                .find(|c| c.node_id.as_deref() == Some(node))
                .unwrap()
                .state;
            let engine_delta =
                serde_json::to_value(&result.runs_of(node).next().unwrap().delta).unwrap();
            assert_eq!(delta, &engine_delta, "{node}");
            assert!(
                delta["variables"]
                    .to_string()
                    .contains(&format!("\"{node}\"")),
                "{delta}"
            );
        }
    }

    pub async fn retriever_ranks_owner_scoped_chunks(s: Arc<dyn Store>) {
        let docs = ingest_samples(&s, "alice").await;
        assert!(docs.iter().all(|d| d.chunk_count >= 1));
        let retriever = StoreRetriever::new(s.clone());
        let query = |owner: Option<&str>, top_k, threshold| RetrievalQuery {
            query: "Which AI model providers are supported?".into(),
            top_k,
            score_threshold: threshold,
            owner_id: owner.map(str::to_owned),
        };
        let chunks = retriever
            .retrieve(&query(Some("alice"), 3, 0.0))
            .await
            .unwrap();
        assert!(!chunks.is_empty() && chunks.len() <= 3, "{chunks:?}");
        let titles: Vec<&str> = docs.iter().map(|d| d.title.as_str()).collect();
        for pair in chunks.windows(2) {
            assert!(pair[0].score >= pair[1].score, "{chunks:?}");
        }
        for chunk in &chunks {
            assert!(titles.contains(&chunk.source.as_str()), "{}", chunk.source);
            assert!(chunk.score > 0.0 && chunk.score <= 1.0);
            let doc_id = chunk.metadata["document_id"].as_str().unwrap();
            assert!(docs.iter().any(|d| d.id == doc_id));
        }
        // The best chunk is a real chunk of that document, verbatim.
        let best = &chunks[0];
        let stored = s
            .list_chunks(best.metadata["document_id"].as_str().unwrap())
            .await
            .unwrap();
        assert!(stored.iter().any(|c| c.content == best.content));
        // The same ranking as the store's own search.
        let hits = s
            .search_chunks(&SearchQuery {
                owner_id: "alice".into(),
                query: "Which AI model providers are supported?".into(),
                max_documents: 3,
                score_threshold: 0.0,
            })
            .await
            .unwrap();
        let expected: Vec<&str> = hits.iter().map(|h| h.content.as_str()).collect();
        let got: Vec<&str> = chunks.iter().map(|c| c.content.as_str()).collect();
        assert_eq!(got, expected);

        // top_k 1, a threshold above every score, another owner, the default owner.
        assert_eq!(
            retriever
                .retrieve(&query(Some("alice"), 1, 0.0))
                .await
                .unwrap()
                .len(),
            1
        );
        let above = best.score + 1e-9;
        assert!(
            retriever
                .retrieve(&query(Some("alice"), 3, above.min(1.0)))
                .await
                .unwrap()
                .iter()
                .all(|c| c.score >= above)
        );
        assert!(
            retriever
                .retrieve(&query(Some("bob"), 3, 0.0))
                .await
                .unwrap()
                .is_empty()
        );
        let err = retriever.retrieve(&query(None, 3, 0.0)).await.unwrap_err();
        assert_eq!(err.store_kind(), Some(StoreErrorKind::InvalidInput));
        let defaulted = StoreRetriever::new(s.clone()).default_owner("alice");
        assert_eq!(
            defaulted.retrieve(&query(None, 3, 0.0)).await.unwrap(),
            chunks
        );
    }

    pub async fn rag_workflow_puts_ranked_context_into_the_prompt(s: Arc<dyn Store>) {
        ingest_samples(&s, "alice").await;
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../examples/workflows/rag.yaml"
        );
        let def = WorkflowDefinition::from_yaml(&std::fs::read_to_string(path).unwrap()).unwrap();
        let model = Arc::new(
            ScriptedModel::from_file(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/../examples/workflows/rag.scripted.json"
            ))
            .unwrap(),
        );
        let mut models = ModelRegistry::new();
        models.register("scripted", model.clone() as Arc<dyn ChatModel>);
        let retriever = Arc::new(StoreRetriever::new(s.clone()).default_owner("alice"));
        let mut retrievers = RetrieverRegistry::new();
        retrievers.register("documents", retriever.clone());
        let engine = Engine::builder()
            .models(models)
            .retrievers(retrievers)
            .build();
        let question = "What providers does Chatter support?";
        let run = WorkflowTracker::new(s.clone())
            .run(
                &engine,
                &def,
                json!({"message": question}),
                RunOptions::default(),
                ExecutionMeta::new("alice", ExecutionKind::Adhoc),
            )
            .await
            .unwrap();
        assert!(run.store_error.is_none(), "{:?}", run.store_error);
        assert_eq!(run.result.status, RunStatus::Completed);

        let expected = retriever
            .retrieve(&RetrievalQuery {
                query: question.into(),
                top_k: 3,
                score_threshold: 0.1,
                owner_id: None,
            })
            .await
            .unwrap();
        assert!(!expected.is_empty());
        let requests = model.requests();
        assert_eq!(requests.len(), 1);
        let system = serde_json::to_string(&requests[0]).unwrap();
        for (i, chunk) in expected.iter().enumerate() {
            let line = format!("[{}] {}", i + 1, chunk.content);
            assert!(
                system.contains(&serde_json::to_string(&line).unwrap()[1..40]),
                "missing {line:?} in {system}"
            );
        }
        // The retrieval step's delta (the context) was committed.
        let checkpoints = s.list_checkpoints(&run.result.execution_id).await.unwrap();
        let retrieve = checkpoints
            .iter()
            .find(|c| c.node_id.as_deref() == Some("retrieve"))
            .unwrap();
        assert_eq!(
            retrieve.state["context"].as_array().unwrap().len(),
            expected.len()
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Orchestrated model calls: the registry loaded from the store, costs in every aggregate,
// routing decisions, retries and fallbacks in node runs and events
// ---------------------------------------------------------------------------------------------

mod orchestration_cases {
    use super::*;
    use chatter_core::orchestration::{Orchestrator, RegistryConfig};

    const REGISTRY: &str = r#"
providers:
  - {name: local, kind: openai, base_url: "http://127.0.0.1:9/v1", api_key_env: LOCAL_KEY, default: true}
models:
  - name: primary
    provider: local
    api_model: primary-2025
    tier: premium
    price: {input_per_1k: 0.0025, output_per_1k: 0.01}
  - name: backup
    provider: local
    tier: economy
    price: {input_per_1k: 0.001, output_per_1k: 0.002}
routing: {default_model: primary, default_fallbacks: [backup]}
resilience:
  max_attempts: 2
  initial_backoff_ms: 1
  max_backoff_ms: 1
  jitter: 0
  breaker: {failure_threshold: 0}
"#;

    fn two_calls() -> WorkflowDefinition {
        WorkflowDefinition::from_json(
            r#"{
              "nodes": [
                {"id": "start", "type": "start"},
                {"id": "first", "type": "llm", "config": {"prompt": "first question"}},
                {"id": "second", "type": "llm", "config": {"prompt": "second question"}},
                {"id": "end", "type": "end"}
              ],
              "edges": [
                {"source": "start", "target": "first"},
                {"source": "first", "target": "second"},
                {"source": "second", "target": "end"}
              ]
            }"#,
        )
        .unwrap()
    }

    pub async fn orchestrated_costs_routing_and_fallbacks_reach_every_record(s: Arc<dyn Store>) {
        // The registry goes into the store from its config text and comes back validated.
        s.save_registry(&RegistryConfig::from_yaml(REGISTRY).unwrap(), None)
            .await
            .unwrap();
        let config = s.load_registry().await.unwrap();
        // The provider never prices its calls: the registry's price table does. The first
        // question fails twice on `primary` (retried once, then given up), then `backup`
        // answers it.
        let provider = Arc::new(
            ScriptedModel::from_value(json!({
                "rules": [
                    {"match": {"model": "primary-2025", "contains": "first"},
                     "reply": {"error": {"class": "server", "message": "upstream 503"}}, "times": 2},
                    {"match": {"model": "backup"}, "reply": {"content": "backup answer"},
                     "usage": {"prompt_tokens": 1000, "completion_tokens": 500}},
                    {"match": {"model": "primary-2025"}, "reply": {"content": "primary answer"},
                     "usage": {"prompt_tokens": 1234, "completion_tokens": 567}}
                ],
                "default": {"content": "unexpected"}
            }))
            .unwrap(),
        );
        let orchestrator = Arc::new(
            Orchestrator::builder(config)
                .provider("local", provider.clone() as Arc<dyn ChatModel>)
                .build()
                .unwrap(),
        );
        let mut models = ModelRegistry::new();
        orchestrator.register(&mut models);
        let engine = Engine::builder().models(models).build();

        let template = s
            .create_template(NewTemplate {
                owner_id: Some("alice".into()),
                name: "two calls".into(),
                category: "general".into(),
                spec: json!({}),
                ..NewTemplate::default()
            })
            .await
            .unwrap();
        let conversation = s
            .create_conversation(NewConversation {
                user_id: "alice".into(),
                ..NewConversation::default()
            })
            .await
            .unwrap();
        let tracker = WorkflowTracker::new(s.clone());
        let first_run = tracker
            .run(
                &engine,
                &two_calls(),
                json!({}),
                RunOptions::default(),
                ExecutionMeta::new("alice", ExecutionKind::Template)
                    .template(template.id.clone())
                    .conversation(conversation.id.clone()),
            )
            .await
            .unwrap();
        assert!(
            first_run.store_error.is_none(),
            "{:?}",
            first_run.store_error
        );
        assert_eq!(first_run.result.status, RunStatus::Completed);
        let id = first_run.result.execution_id.clone();

        // Node runs: each call's exact cost, and how it was served.
        let runs = s.list_node_runs(&id).await.unwrap();
        let run = |node: &str| runs.iter().find(|r| r.node_id == node).unwrap().clone();
        let (first, second) = (run("first"), run("second"));
        // 1000 × 0.001/1k + 500 × 0.002/1k, and 1234 × 0.0025/1k + 567 × 0.01/1k.
        assert_eq!(
            (first.prompt_tokens, first.completion_tokens, first.cost),
            (1000, 500, 0.002)
        );
        assert_eq!(
            (second.prompt_tokens, second.completion_tokens, second.cost),
            (1234, 567, 0.008755)
        );
        let routing = &first.output.as_ref().unwrap()["routing"];
        assert_eq!(routing["model"], "primary");
        assert_eq!(routing["provider"], "local");
        assert_eq!(routing["explicit"], false);
        assert_eq!(routing["rule"], Value::Null);
        assert_eq!(
            routing["reason"],
            "no rule matched; default model `primary`"
        );
        assert_eq!(routing["fallbacks"], json!(["backup"]));
        assert_eq!(routing["answered_by"], "backup");
        assert_eq!(routing["from_memo"], false);
        let attempts: Vec<(String, u64, String, Value)> = routing["attempts"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| {
                (
                    a["model"].as_str().unwrap().to_owned(),
                    a["attempt"].as_u64().unwrap(),
                    a["outcome"].as_str().unwrap().to_owned(),
                    a["class"].clone(),
                )
            })
            .collect();
        assert_eq!(
            attempts,
            vec![
                ("primary".into(), 1, "failed".into(), json!("server")),
                ("primary".into(), 2, "failed".into(), json!("server")),
                ("backup".into(), 1, "succeeded".into(), Value::Null),
            ]
        );
        let second_routing = &second.output.as_ref().unwrap()["routing"];
        assert_eq!(second_routing["answered_by"], "primary");
        assert_eq!(second_routing["attempts"].as_array().unwrap().len(), 1);

        // Events: the decision, the retry and the fallback, in order, inside the step of the
        // node that made the call.
        let events = s.list_events(&id, 0, 1000).await.unwrap();
        let model_events: Vec<(String, Value)> = events
            .iter()
            .filter(|e| e.event_type.starts_with("model_"))
            .map(|e| (e.event_type.clone(), e.payload.clone()))
            .collect();
        assert_eq!(model_events.len(), 4, "{model_events:#?}");
        assert_eq!(model_events[0].0, "model_routed");
        assert_eq!(
            model_events[0].1,
            json!({"node_id": "first", "model": "primary", "provider": "local", "rule": null,
                   "explicit": false, "reason": "no rule matched; default model `primary`",
                   "fallbacks": ["backup"], "estimated_cost": model_events[0].1["estimated_cost"]})
        );
        assert!(model_events[0].1["estimated_cost"].as_f64().unwrap() > 0.0);
        assert_eq!(model_events[1].0, "model_retrying");
        assert_eq!(
            model_events[1].1,
            json!({"node_id": "first", "model": "primary", "attempt": 1, "class": "server",
                   "error": model_events[1].1["error"], "delay_ms": 1})
        );
        assert!(
            model_events[1].1["error"]
                .as_str()
                .unwrap()
                .contains("upstream 503")
        );
        assert_eq!(model_events[2].0, "model_fallback");
        assert_eq!(model_events[2].1["from"], "primary");
        assert_eq!(model_events[2].1["to"], "backup");
        assert_eq!(model_events[3].0, "model_routed");
        assert_eq!(model_events[3].1["node_id"], "second");
        let position = |kind: &str, node: &str| {
            events
                .iter()
                .position(|e| e.event_type == kind && e.payload["node_id"] == node)
                .unwrap()
        };
        assert!(position("node_started", "first") < position("model_routed", "first"));
        assert!(position("model_fallback", "first") < position("node_completed", "first"));

        // The execution, the template's analytics.
        let record = s.get_execution(&id).await.unwrap().unwrap();
        assert_eq!(
            (
                record.prompt_tokens,
                record.completion_tokens,
                record.total_tokens
            ),
            (2234, 1067, 3301)
        );
        assert_eq!(record.cost, 0.010755);
        let stats = s.template_analytics(&template.id).await.unwrap().unwrap();
        assert_eq!((stats.usage_count, stats.total_tokens), (1, 3301));
        assert_eq!(stats.total_cost, 0.010755);

        // A second execution in the same conversation: both calls on `primary`.
        let second_run = tracker
            .run(
                &engine,
                &two_calls(),
                json!({}),
                RunOptions::default(),
                ExecutionMeta::new("alice", ExecutionKind::Adhoc)
                    .conversation(conversation.id.clone()),
            )
            .await
            .unwrap();
        assert!(second_run.store_error.is_none());
        let other = s
            .get_execution(&second_run.result.execution_id)
            .await
            .unwrap()
            .unwrap();
        assert_eq!((other.total_tokens, other.cost), (3602, 0.01751));

        // The conversation sums its executions.
        let usage = s.conversation_usage(&conversation.id).await.unwrap();
        assert_eq!(
            (
                usage.executions,
                usage.prompt_tokens,
                usage.completion_tokens,
                usage.total_tokens
            ),
            (2, 4702, 2201, 6903)
        );
        assert_eq!(usage.cost, 0.028265);
        let err = s
            .conversation_usage("no-such-conversation")
            .await
            .unwrap_err();
        assert_eq!(err.store_kind(), Some(StoreErrorKind::NotFound));
        let empty = s
            .create_conversation(NewConversation {
                user_id: "alice".into(),
                ..NewConversation::default()
            })
            .await
            .unwrap();
        let none = s.conversation_usage(&empty.id).await.unwrap();
        assert_eq!((none.executions, none.total_tokens, none.cost), (0, 0, 0.0));

        // The counters, as a /metrics endpoint serves them.
        let text = orchestrator.metrics().render_prometheus();
        for line in [
            "llm_requests_total{model=\"primary\"} 5",
            "llm_request_failures_total{model=\"primary\"} 2",
            "llm_requests_total{model=\"backup\"} 1",
            "llm_fallbacks_total{model=\"primary\"} 1",
            "llm_tokens_total{model=\"primary\",type=\"prompt\"} 3702",
            "llm_cost_usd_total{model=\"backup\"} 0.002",
            "llm_cost_usd_total{model=\"primary\"} 0.026265",
            "llm_circuit_breaker_state{model=\"primary\",state=\"closed\"} 1",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "{line} missing from:\n{text}"
            );
        }
        assert_eq!(provider.requests().len(), 6);
    }

    pub async fn observer_sees_every_event_of_runs_and_forks(s: Arc<dyn Store>) {
        let (engine, _) = engine_with(json!({"default": {"content": "Hello there."}}));
        let recorder = Arc::new(Recorder::default());
        let tracker = WorkflowTracker::new(s.clone()).observer(recorder.clone());
        let run = run_chat(&tracker, &engine).await;
        let id = run.result.execution_id.clone();
        let expected: Vec<(String, String, String, u64)> = run
            .result
            .events
            .iter()
            .map(|e| {
                (
                    id.clone(),
                    "alice".to_owned(),
                    e.kind.type_name().to_owned(),
                    e.seq,
                )
            })
            .collect();
        let seen = std::mem::take(&mut *recorder.0.lock().unwrap());
        assert_eq!(seen, expected);
        assert_eq!(seen.first().unwrap().2, "execution_started");
        assert_eq!(seen.last().unwrap().2, "execution_completed");

        // A fork is a new execution of the same owner: its events under its own id.
        let fork = tracker
            .fork(
                &engine,
                &chat_definition(),
                &id,
                1,
                None,
                RunOptions::default(),
            )
            .await
            .unwrap();
        let fork_id = fork.result.execution_id.clone();
        assert_ne!(fork_id, id);
        let seen = std::mem::take(&mut *recorder.0.lock().unwrap());
        assert!(!seen.is_empty());
        assert!(
            seen.iter()
                .all(|(e, owner, _, _)| *e == fork_id && owner == "alice"),
            "{seen:?}"
        );
        assert_eq!(seen.last().unwrap().2, "execution_completed");
    }
}
