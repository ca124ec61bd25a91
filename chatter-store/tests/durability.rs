//! Durable execution against real stores (DESIGN §8): resume after a crash without running
//! anything twice, approvals (also in loops and in a row), time travel, durability modes,
//! resumable event streams, retention. SQLite (a file, so a "crashed process" and its successor
//! can both open it) and Postgres (`CHATTER_TEST_POSTGRES_URL`, a fresh schema per test).
//!
//! A crash is simulated in-process by running the execution on its own tokio runtime with its
//! own store connection and dropping that runtime while a node is blocked: nothing after that
//! point runs or is written, as when a process dies. The crash-injection suite
//! (`tests/crash.rs`) does the same with real processes and `SIGKILL`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use chatter_core::engine::{
    DurabilityMode, Engine, ExecutionStatus as RunStatus, Node, NodeContext, NodeOutput, RunOptions,
};
use chatter_core::store::*;
use chatter_core::tracker::{
    Decision, ExecutionMeta, GraphSource, StoreGraphSource, WorkflowTracker,
};
use chatter_core::{
    Error, ExecutionResult, Message, NodeSpec, StateDelta, VariableOp, WorkflowDefinition,
};
use chatter_store::{StoreOptions, connect_with};
use serde_json::{Value, json};

mod support;

// ---------------------------------------------------------------------------------------------
// Harness: a backend is a URL and options, so a crashed "process" and its successor each
// connect on their own.
// ---------------------------------------------------------------------------------------------

#[derive(Clone)]
struct Backend {
    url: String,
    options: StoreOptions,
}

impl Backend {
    async fn connect(&self) -> Arc<dyn Store> {
        connect_with(&self.url, self.options.clone()).await.unwrap()
    }
}

async fn on_sqlite<F, Fut>(case: F)
where
    F: FnOnce(Backend) -> Fut,
    Fut: Future<Output = ()>,
{
    let dir = support::temp_dir("chatter-durability");
    let backend = Backend {
        url: format!("sqlite://{}/chatter.db", dir.display()),
        options: StoreOptions::default(),
    };
    case(backend).await;
    let _ = std::fs::remove_dir_all(&dir);
}

async fn on_postgres<F, Fut>(case: F)
where
    F: FnOnce(Backend) -> Fut,
    Fut: Future<Output = ()>,
{
    let Some(url) = support::postgres_url() else {
        println!("skipped: CHATTER_TEST_POSTGRES_URL not set");
        return;
    };
    let schema = support::new_schema();
    let mut options = StoreOptions::default();
    options.pg_schema = Some(schema.clone());
    options.pg_pool_size = 4;
    let backend = Backend {
        url: url.clone(),
        options,
    };
    // Fails (not skips) when the URL is set but Postgres is not usable.
    drop(backend.connect().await);
    let outcome =
        futures::FutureExt::catch_unwind(std::panic::AssertUnwindSafe(case(backend))).await;
    support::drop_schema(&url, &schema).await;
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
}

macro_rules! on_every_backend {
    ($($case:ident),* $(,)?) => {
        mod sqlite {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() { super::on_sqlite(super::cases::$case).await; })*
        }
        mod postgres {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() { super::on_postgres(super::cases::$case).await; })*
        }
    };
}

on_every_backend!(
    resume_after_a_crash_runs_nothing_twice,
    approval_pauses_and_resumes_with_a_decision,
    approval_in_a_loop_resumes_twice,
    state_after_two_interrupts_keeps_both_decisions,
    approval_timeout_takes_the_configured_decision,
    a_second_resume_in_one_process_is_refused,
    steps_list_states_and_fork_leaves_the_original_untouched,
    every_durability_mode_records_the_same_steps,
    retention_deletes_only_ended_executions,
    thread_history_survives_a_pause_the_steps_and_a_fork,
    an_edited_definition_is_not_resumed_or_forked,
);

fn now_ms() -> i64 {
    i64::try_from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis(),
    )
    .unwrap()
}

// ---------------------------------------------------------------------------------------------
// Nodes and workflows of the tests
// ---------------------------------------------------------------------------------------------

/// Effects applied, by idempotency key: how many times each key was *called*.
type Effects = Arc<Mutex<HashMap<String, u32>>>;

/// A side-effecting node: records its idempotency key (like a payment with a key) and appends
/// its id to `variables.trail`.
struct Effect {
    effects: Effects,
}

#[async_trait]
impl Node for Effect {
    async fn run(&self, ctx: NodeContext) -> chatter_core::Result<NodeOutput> {
        *self
            .effects
            .lock()
            .unwrap()
            .entry(ctx.idempotency_key())
            .or_insert(0) += 1;
        Ok(NodeOutput::delta(StateDelta {
            variables: vec![("trail".into(), VariableOp::Append(json!(ctx.node_id())))],
            ..StateDelta::default()
        }))
    }

    fn side_effects(&self) -> bool {
        true
    }
}

/// Blocks forever while `armed` (the moment a crash is simulated), else passes.
struct Gate {
    armed: Arc<AtomicBool>,
    reached: Arc<tokio::sync::Notify>,
}

#[async_trait]
impl Node for Gate {
    async fn run(&self, _ctx: NodeContext) -> chatter_core::Result<NodeOutput> {
        if self.armed.load(Ordering::SeqCst) {
            self.reached.notify_one();
            futures::future::pending::<()>().await;
        }
        Ok(NodeOutput::default())
    }
}

struct Kit {
    effects: Effects,
    armed: Arc<AtomicBool>,
    reached: Arc<tokio::sync::Notify>,
}

impl Kit {
    fn new() -> Kit {
        Kit {
            effects: Arc::default(),
            armed: Arc::new(AtomicBool::new(false)),
            reached: Arc::new(tokio::sync::Notify::new()),
        }
    }

    fn engine(&self) -> Engine {
        let effects = self.effects.clone();
        let (armed, reached) = (self.armed.clone(), self.reached.clone());
        Engine::builder()
            .register_node("effect", move |_: &NodeSpec| {
                Ok(Arc::new(Effect {
                    effects: effects.clone(),
                }) as Arc<dyn Node>)
            })
            .register_node("gate", move |_: &NodeSpec| {
                Ok(Arc::new(Gate {
                    armed: armed.clone(),
                    reached: reached.clone(),
                }) as Arc<dyn Node>)
            })
            .build()
    }

    fn calls(&self) -> HashMap<String, u32> {
        self.effects.lock().unwrap().clone()
    }
}

fn definition(value: Value) -> WorkflowDefinition {
    WorkflowDefinition::from_value(&value).unwrap()
}

/// start → a → b → gate → c → end, all effects but the gate.
fn effects_chain() -> WorkflowDefinition {
    definition(json!({
        "nodes": [
            {"id": "start", "type": "start"},
            {"id": "a", "type": "effect"},
            {"id": "b", "type": "effect"},
            {"id": "gate", "type": "gate"},
            {"id": "c", "type": "effect"},
            {"id": "end", "type": "end"}
        ],
        "edges": [
            {"source": "start", "target": "a"},
            {"source": "a", "target": "b"},
            {"source": "b", "target": "gate"},
            {"source": "gate", "target": "c"},
            {"source": "c", "target": "end"}
        ]
    }))
}

/// start → ask (approval) → yes / no → end.
fn approval_flow() -> WorkflowDefinition {
    definition(json!({
        "nodes": [
            {"id": "start", "type": "start"},
            {"id": "ask", "type": "approval", "config": {
                "question": "Send {{ input.item }}?",
                "allowed_decisions": ["approve", "reject"],
                "input_schema": {"type": "object", "properties": {"note": {"type": "string"}}}
            }},
            {"id": "yes", "type": "effect"},
            {"id": "no", "type": "effect"},
            {"id": "end", "type": "end"}
        ],
        "edges": [
            {"source": "start", "target": "ask"},
            {"source": "ask", "target": "yes", "sourceHandle": "approve"},
            {"source": "ask", "target": "no", "sourceHandle": "reject"},
            {"source": "yes", "target": "end"},
            {"source": "no", "target": "end"}
        ]
    }))
}

/// start → again (a loop of two passes) → ask (approval) → work → again …, then end.
fn approval_loop() -> WorkflowDefinition {
    definition(json!({
        "nodes": [
            {"id": "start", "type": "start"},
            {"id": "again", "type": "loop", "config": {"max_iterations": 2, "condition": "true"}},
            {"id": "ask", "type": "approval", "config": {"question": "Pass {{ loop.iteration }}?"}},
            {"id": "work", "type": "effect"},
            {"id": "end", "type": "end"}
        ],
        "edges": [
            {"source": "start", "target": "again"},
            {"source": "again", "target": "ask", "condition": "loop_again_continue"},
            {"source": "again", "target": "end", "condition": "not loop_again_continue"},
            {"source": "ask", "target": "work"},
            {"source": "work", "target": "again"}
        ]
    }))
}

fn meta() -> ExecutionMeta {
    ExecutionMeta::new("alice", ExecutionKind::Adhoc)
}

/// The stored events of an execution, checked contiguous from 1.
/// Resumes waiting execution `id` with `decision` (default options) and gives its result.
async fn decide(
    tracker: &WorkflowTracker,
    engine: &Engine,
    def: &WorkflowDefinition,
    id: &str,
    decision: Decision,
) -> ExecutionResult {
    tracker
        .resume(engine, def, id, Some(decision), RunOptions::default())
        .await
        .unwrap()
        .into_result()
        .unwrap()
}

async fn stored_events(s: &Arc<dyn Store>, id: &str) -> Vec<EventRecord> {
    let events = s.list_events(id, 0, 10_000).await.unwrap();
    let seqs: Vec<i64> = events.iter().map(|e| e.seq).collect();
    let expected: Vec<i64> = (1..=events.len() as i64).collect();
    assert_eq!(seqs, expected, "event sequence of {id} is not contiguous");
    events
}

fn count_of(events: &[EventRecord], event_type: &str) -> usize {
    events.iter().filter(|e| e.event_type == event_type).count()
}

/// `node_completed` events by node id, in order.
fn completed_nodes(events: &[EventRecord]) -> Vec<String> {
    events
        .iter()
        .filter(|e| e.event_type == "node_completed")
        .map(|e| e.payload["node_id"].as_str().unwrap().to_owned())
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Cases
// ---------------------------------------------------------------------------------------------

mod cases {
    use super::*;

    pub async fn resume_after_a_crash_runs_nothing_twice(backend: Backend) {
        // The reference: the same workflow, uninterrupted.
        let reference_kit = Kit::new();
        let s = backend.connect().await;
        let reference = WorkflowTracker::new(s.clone())
            .run(
                &reference_kit.engine(),
                &effects_chain(),
                json!({"message": "go"}),
                RunOptions::default(),
                meta(),
            )
            .await
            .unwrap()
            .into_result()
            .unwrap();
        assert_eq!(reference.status, RunStatus::Completed);

        // The crashing "process": its own runtime and store connection, dropped at the gate.
        let kit = Kit::new();
        kit.armed.store(true, Ordering::SeqCst);
        let id = ulid::Ulid::new().to_string();
        {
            let (backend, engine, id, reached) = (
                backend.clone(),
                kit.engine(),
                id.clone(),
                kit.reached.clone(),
            );
            std::thread::spawn(move || {
                let runtime = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(1)
                    .enable_all()
                    .build()
                    .unwrap();
                runtime.block_on(async move {
                    let store = backend.connect().await;
                    let tracker = WorkflowTracker::new(store).lease_ms(200);
                    let def = effects_chain();
                    let run = tokio::spawn(async move {
                        tracker
                            .run(
                                &engine,
                                &def,
                                json!({"message": "go"}),
                                RunOptions::default().execution_id(id),
                                meta(),
                            )
                            .await
                    });
                    reached.notified().await;
                    drop(run);
                });
                runtime.shutdown_background();
            })
            .join()
            .unwrap();
        }
        let crashed = s.get_execution(&id).await.unwrap().unwrap();
        assert_eq!(crashed.status, ExecutionStatus::Running);
        let before = stored_events(&s, &id).await;
        assert_eq!(completed_nodes(&before), ["start", "a", "b"]);

        // Its lease (200 ms) runs out; a new worker resumes everything due.
        kit.armed.store(false, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(300)).await;
        let tracker = WorkflowTracker::new(s.clone());
        let now = now_ms();
        let resumed = tracker
            .resume_due(&kit.engine(), &StoreGraphSource::new(s.clone()), now)
            .await
            .unwrap();
        assert_eq!(resumed.len(), 1);
        assert_eq!(resumed[0].0, id);
        let result = resumed
            .into_iter()
            .next()
            .unwrap()
            .1
            .unwrap()
            .into_result()
            .unwrap();

        assert_eq!(result.status, RunStatus::Completed);
        assert_eq!(result.execution_id, id);
        assert_eq!(result.variables, reference.variables);
        assert_eq!(result.variables["trail"], json!(["a", "b", "c"]));
        // Every effect once, under the key of its node run.
        let calls = kit.calls();
        let mut keys: Vec<&String> = calls.keys().collect();
        keys.sort();
        assert_eq!(
            keys,
            [
                &format!("{id}:a:0:1"),
                &format!("{id}:b:0:1"),
                &format!("{id}:c:0:1")
            ]
        );
        assert!(calls.values().all(|&n| n == 1), "{calls:?}");

        // The event log continues the same sequence: nothing lost, nothing repeated.
        let events = stored_events(&s, &id).await;
        assert_eq!(events[..before.len()], before[..]);
        assert_eq!(
            completed_nodes(&events),
            ["start", "a", "b", "gate", "c", "end"]
        );
        assert_eq!(count_of(&events, "execution_started"), 1);
        assert_eq!(count_of(&events, "execution_completed"), 1);
        let row = s.get_execution(&id).await.unwrap().unwrap();
        assert_eq!(row.status, ExecutionStatus::Completed);
        assert_eq!(row.last_event_seq, events.len() as i64);
        assert_eq!(row.lease_owner, None);
        // The side-effecting runs carry their idempotency keys.
        let runs = s.list_node_runs(&id).await.unwrap();
        let c = runs.iter().find(|r| r.node_id == "c").unwrap();
        assert_eq!(c.idempotency_key.as_deref(), Some(&*format!("{id}:c:0:1")));
        assert_eq!(c.status, NodeRunStatus::Completed);
        // Nothing is due any more.
        assert!(s.list_resumable(now + 60_000, 10).await.unwrap().is_empty());
    }

    /// The lease lets its own worker id through (that is how it is renewed), so without more
    /// one process could run an execution twice: a second resume, the resumer or a cancel of
    /// an execution this tracker (or a clone) is running is refused, and its nodes run once.
    pub async fn a_second_resume_in_one_process_is_refused(backend: Backend) {
        let s = backend.connect().await;
        let kit = Kit::new();
        let engine = kit.engine();
        let tracker = WorkflowTracker::new(s.clone());
        // start → ask → yes (effect) → gate → end
        let def = definition(json!({
            "nodes": [
                {"id": "start", "type": "start"},
                {"id": "ask", "type": "approval", "config": {"question": "Go?", "allowed_decisions": ["approve"]}},
                {"id": "yes", "type": "effect"},
                {"id": "gate", "type": "gate"},
                {"id": "end", "type": "end"}
            ],
            "edges": [
                {"source": "start", "target": "ask"},
                {"source": "ask", "target": "yes"},
                {"source": "yes", "target": "gate"},
                {"source": "gate", "target": "end"}
            ]
        }));
        let waiting = tracker
            .run(&engine, &def, json!({}), RunOptions::default(), meta())
            .await
            .unwrap()
            .into_result()
            .unwrap();
        assert_eq!(waiting.status, RunStatus::Waiting);
        let id = waiting.execution_id.clone();

        // The first approval runs `yes` and blocks at the gate.
        kit.armed.store(true, Ordering::SeqCst);
        let reached = kit.reached.notified();
        let token = tokio_util::sync::CancellationToken::new();
        let first = {
            let (tracker, engine, def, id) =
                (tracker.clone(), engine.clone(), def.clone(), id.clone());
            let mut options = RunOptions::default();
            options.cancel = Some(token.clone());
            tokio::spawn(async move {
                tracker
                    .resume(&engine, &def, &id, Some(Decision::new("approve")), options)
                    .await
            })
        };
        tokio::time::timeout(Duration::from_secs(30), reached)
            .await
            .expect("the first approval never reached the gate");
        assert!(tracker.is_active(&id));

        // A plain resume through a clone (same worker id), as `POST …/resume` does: refused,
        // nothing changed. (Without the claim it would take the lease again and run the
        // execution a second time, blocking at the gate.)
        let second = tokio::time::timeout(
            Duration::from_secs(30),
            tracker
                .clone()
                .resume(&engine, &def, &id, None, RunOptions::default()),
        )
        .await
        .expect("the second resume ran the execution again");
        let err = second.unwrap_err();
        assert_eq!(err.store_kind(), Some(StoreErrorKind::Conflict), "{err}");
        assert!(
            err.to_string()
                .contains("is already being run in this process"),
            "{err}"
        );
        // The resumer, whatever time it thinks it is (the lease looks expired to it), skips it.
        let far = now_ms() + 3_600_000;
        let due = tokio::time::timeout(
            Duration::from_secs(30),
            tracker.resume_due(&engine, &StoreGraphSource::new(s.clone()), far),
        )
        .await
        .expect("the resumer ran the execution again")
        .unwrap();
        assert!(due.iter().all(|(d, _)| d != &id), "{}", due.len());
        // A stored-execution cancel is refused too: cancel it through its token.
        let err = tracker.cancel(&id, None, "no", now_ms()).await.unwrap_err();
        assert_eq!(err.store_kind(), Some(StoreErrorKind::Conflict), "{err}");
        let row = s.get_execution(&id).await.unwrap().unwrap();
        assert_eq!(row.status, ExecutionStatus::Running);

        token.cancel();
        let run = first.await.unwrap().unwrap().into_result().unwrap();
        assert_eq!(run.status, RunStatus::Cancelled);
        assert!(!tracker.is_active(&id));
        let calls = kit.calls();
        assert_eq!(calls.len(), 1, "{calls:?}");
        assert_eq!(
            calls.values().copied().collect::<Vec<_>>(),
            [1],
            "{calls:?}"
        );
        let events = stored_events(&s, &id).await;
        assert_eq!(count_of(&events, "execution_cancelled"), 1);
    }

    /// A run given the thread's earlier messages starts from them; so do its resume (in
    /// another process, which does not have them), its steps and a fork of it.
    pub async fn thread_history_survives_a_pause_the_steps_and_a_fork(backend: Backend) {
        let s = backend.connect().await;
        let kit = Kit::new();
        let engine = kit.engine();
        let def = approval_flow();
        let history = vec![
            Message::user("What did I order?"),
            Message::assistant("The invoice for March."),
        ];
        let first = WorkflowTracker::new(s.clone())
            .run(
                &engine,
                &def,
                json!({"item": "the invoice"}),
                RunOptions::default().history(history.clone()),
                meta(),
            )
            .await
            .unwrap()
            .into_result()
            .unwrap();
        assert_eq!(first.status, RunStatus::Waiting);
        assert_eq!(first.messages, history);
        let id = first.execution_id.clone();

        // Another process: a new tracker, no history given.
        let other = WorkflowTracker::new(s.clone());
        let done = decide(&other, &engine, &def, &id, Decision::new("approve")).await;
        assert_eq!(done.status, RunStatus::Completed);
        assert_eq!(done.messages, history, "the resume lost the thread");

        let tracker = WorkflowTracker::new(s.clone());
        let steps = tracker.steps(&id).await.unwrap();
        let expected = serde_json::to_value(&history).unwrap();
        for step in &steps {
            assert_eq!(step.state["messages"], expected, "step {}", step.step);
        }
        let forked = tracker
            .fork(&engine, &def, &id, 1, None, RunOptions::default())
            .await
            .unwrap()
            .into_result()
            .unwrap();
        assert_eq!(forked.status, RunStatus::Waiting);
        assert_eq!(forked.messages, history, "the fork lost the thread");
    }

    /// An execution of a stored definition resumes on the definition read again from the
    /// store: once the definition is edited, resuming (or forking) it is refused with a clear
    /// error and nothing changes; the original graph back, it resumes.
    pub async fn an_edited_definition_is_not_resumed_or_forked(backend: Backend) {
        let s = backend.connect().await;
        let kit = Kit::new();
        let engine = kit.engine();
        let tracker = WorkflowTracker::new(s.clone());
        let original = approval_flow();
        let stored = s
            .create_definition(NewDefinition {
                owner_id: "alice".into(),
                name: "approval".into(),
                definition: original.to_value(),
                ..NewDefinition::default()
            })
            .await
            .unwrap();
        let first = tracker
            .run(
                &engine,
                &original,
                json!({"item": "the invoice"}),
                RunOptions::default(),
                ExecutionMeta::new("alice", ExecutionKind::Definition).definition(&stored.id),
            )
            .await
            .unwrap()
            .into_result()
            .unwrap();
        assert_eq!(first.status, RunStatus::Waiting);
        let id = first.execution_id.clone();
        let before = s.get_execution(&id).await.unwrap().unwrap();

        // The approval's branches are swapped in the stored definition.
        let mut edited = original.to_value();
        edited["edges"][1]["target"] = json!("no");
        edited["edges"][2]["target"] = json!("yes");
        s.update_definition(
            &stored.id,
            DefinitionUpdate {
                definition: Some(edited),
                ..DefinitionUpdate::default()
            },
        )
        .await
        .unwrap();
        let source = StoreGraphSource::new(s.clone());
        let current = source.definition_for(&before).await.unwrap();
        let refused = tracker
            .resume(
                &engine,
                &current,
                &id,
                Some(Decision::new("approve")),
                RunOptions::default(),
            )
            .await
            .unwrap_err();
        assert_eq!(
            refused.to_string(),
            format!(
                "invalid request: execution `{id}` started on another version of its definition; \
                 its steps cannot be replayed on the graph it has now"
            )
        );
        let err = tracker
            .fork(&engine, &current, &id, 1, None, RunOptions::default())
            .await
            .unwrap_err();
        assert_eq!(err.to_string(), refused.to_string());
        let unchanged = s.get_execution(&id).await.unwrap().unwrap();
        assert_eq!(
            (
                unchanged.status,
                unchanged.step_count,
                unchanged.last_event_seq
            ),
            (before.status, before.step_count, before.last_event_seq)
        );
        assert_eq!(kit.calls(), HashMap::new(), "no effect ran");

        // The original graph back in the store, it resumes and takes the approved branch.
        s.update_definition(
            &stored.id,
            DefinitionUpdate {
                definition: Some(original.to_value()),
                ..DefinitionUpdate::default()
            },
        )
        .await
        .unwrap();
        let restored = source.definition_for(&before).await.unwrap();
        let done = decide(&tracker, &engine, &restored, &id, Decision::new("approve")).await;
        assert_eq!(done.status, RunStatus::Completed);
        assert_eq!(kit.calls(), HashMap::from([(format!("{id}:yes:0:1"), 1)]));
    }

    pub async fn approval_pauses_and_resumes_with_a_decision(backend: Backend) {
        let s = backend.connect().await;
        let kit = Kit::new();
        let engine = kit.engine();
        let tracker = WorkflowTracker::new(s.clone());
        let def = approval_flow();
        let mut seen = Vec::new();
        let first = tracker
            .run_observed(
                &engine,
                &def,
                json!({"item": "the invoice"}),
                RunOptions::default(),
                meta(),
                |e| seen.push((e.seq, e.kind.type_name())),
            )
            .await
            .unwrap()
            .into_result()
            .unwrap();
        assert_eq!(first.status, RunStatus::Waiting);
        let id = first.execution_id.clone();
        let row = s.get_execution(&id).await.unwrap().unwrap();
        assert_eq!(row.status, ExecutionStatus::Waiting);
        let events = stored_events(&s, &id).await;
        let interrupted = events
            .iter()
            .find(|e| e.event_type == "interrupted")
            .unwrap();
        assert_eq!(interrupted.payload["question"], "Send the invoice?");
        assert_eq!(
            interrupted.payload["allowed_decisions"],
            json!(["approve", "reject"])
        );
        let runs = s.list_node_runs(&id).await.unwrap();
        let ask = runs.iter().find(|r| r.node_id == "ask").unwrap();
        assert_eq!(ask.status, NodeRunStatus::Waiting);

        // Refused, and nothing changes: a decision not allowed, input against the schema, no
        // decision at all.
        for (decision, expected) in [
            (
                Some(Decision::new("maybe")),
                "decision `maybe` is not allowed at approval `ask`; allowed: approve, reject",
            ),
            (
                Some(Decision::new("approve").input(json!({"note": 5}))),
                "does not match its input_schema",
            ),
            (None, "is waiting for a decision at `ask`"),
            (
                Some(Decision::new("approve").at("yes")),
                "is not waiting at `yes`",
            ),
        ] {
            let err = tracker
                .resume(&engine, &def, &id, decision, RunOptions::default())
                .await
                .unwrap_err();
            assert!(matches!(err, Error::InvalidInput { .. }), "{err}");
            assert!(err.to_string().contains(expected), "{err}");
        }
        let unchanged = s.get_execution(&id).await.unwrap().unwrap();
        assert_eq!(unchanged.status, ExecutionStatus::Waiting);
        assert_eq!(unchanged.step_count, row.step_count);
        assert_eq!(unchanged.last_event_seq, row.last_event_seq);
        // Someone else's execution is unknown to them.
        let err = tracker
            .resume(
                &engine,
                &def,
                &id,
                Some(Decision::new("approve")),
                RunOptions::default().owner("mallory"),
            )
            .await
            .unwrap_err();
        assert!(matches!(err, Error::NotFound { .. }), "{err}");

        let mut seen_after = Vec::new();
        let done = tracker
            .resume_observed(
                &engine,
                &def,
                &id,
                Some(Decision::new("approve").input(json!({"note": "ok"}))),
                RunOptions::default(),
                |e| seen_after.push((e.seq, e.kind.type_name())),
            )
            .await
            .unwrap()
            .into_result()
            .unwrap();
        assert_eq!(done.status, RunStatus::Completed);
        assert_eq!(
            done.variables["ask"],
            json!({"decision": "approve", "input": {"note": "ok"}, "timed_out": false})
        );
        assert_eq!(done.variables["trail"], json!(["yes"]));
        // The rejection branch never ran.
        assert_eq!(kit.calls().len(), 1);
        assert!(kit.calls().keys().all(|k| k.contains(":yes:")));
        let events = stored_events(&s, &id).await;
        // A stream that read up to the pause and then followed the resume saw every event once.
        // The stored log is exactly what the two streams saw, event types included (the
        // approval's `node_started` before the pause and again on resume among them).
        let all: Vec<(u64, &str)> = seen.iter().chain(&seen_after).copied().collect();
        let expected: Vec<(u64, &str)> = events
            .iter()
            .map(|e| (u64::try_from(e.seq).unwrap(), e.event_type.as_str()))
            .collect();
        assert_eq!(all, expected);
        let ask_started = events
            .iter()
            .filter(|e| e.event_type == "node_started" && e.payload["node_id"] == "ask")
            .count();
        assert_eq!(ask_started, 2, "{events:?}");
        assert_eq!(completed_nodes(&events), ["start", "ask", "yes", "end"]);
        assert_eq!(count_of(&events, "node_skipped"), 1);

        // Ended: cannot be resumed again.
        let err = tracker
            .resume(
                &engine,
                &def,
                &id,
                Some(Decision::new("approve")),
                RunOptions::default(),
            )
            .await
            .unwrap_err();
        assert!(err.to_string().contains("has ended (completed)"), "{err}");
        let err = tracker
            .resume(
                &engine,
                &def,
                "01JUNKNOWN0000000000000000",
                None,
                RunOptions::default(),
            )
            .await
            .unwrap_err();
        assert!(matches!(err, Error::NotFound { .. }), "{err}");
    }

    pub async fn approval_in_a_loop_resumes_twice(backend: Backend) {
        let s = backend.connect().await;
        let kit = Kit::new();
        let engine = kit.engine();
        let tracker = WorkflowTracker::new(s.clone());
        let def = approval_loop();
        let first = tracker
            .run(&engine, &def, json!({}), RunOptions::default(), meta())
            .await
            .unwrap()
            .into_result()
            .unwrap();
        assert_eq!(first.status, RunStatus::Waiting);
        let id = first.execution_id;
        let second = decide(&tracker, &engine, &def, &id, Decision::new("approve")).await;
        assert_eq!(
            second.status,
            RunStatus::Waiting,
            "the second pass asks again"
        );
        let third = decide(&tracker, &engine, &def, &id, Decision::new("approve")).await;
        assert_eq!(third.status, RunStatus::Completed);
        assert_eq!(third.variables["trail"], json!(["work", "work"]));
        let calls = kit.calls();
        assert_eq!(calls.len(), 2, "{calls:?}");
        assert!(calls.contains_key(&format!("{id}:work:0:1")));
        assert!(calls.contains_key(&format!("{id}:work:1:1")));
        let events = stored_events(&s, &id).await;
        assert_eq!(count_of(&events, "interrupted"), 2);
        assert_eq!(count_of(&events, "execution_completed"), 1);
    }

    pub async fn state_after_two_interrupts_keeps_both_decisions(backend: Backend) {
        let s = backend.connect().await;
        let kit = Kit::new();
        let engine = kit.engine();
        let tracker = WorkflowTracker::new(s.clone());
        let def = definition(json!({
            "nodes": [
                {"id": "start", "type": "start"},
                {"id": "first", "type": "approval", "config": {"question": "First?"}},
                {"id": "second", "type": "approval", "config": {"question": "Second?"}},
                {"id": "end", "type": "end"}
            ],
            "edges": [
                {"source": "start", "target": "first"},
                {"source": "first", "target": "second"},
                {"source": "second", "target": "end"}
            ]
        }));
        let id = tracker
            .run(&engine, &def, json!({}), RunOptions::default(), meta())
            .await
            .unwrap()
            .result
            .execution_id;
        let after_first = decide(
            &tracker,
            &engine,
            &def,
            &id,
            Decision::new("approve").input(json!("looks good")),
        )
        .await;
        assert_eq!(after_first.status, RunStatus::Waiting);
        let done = decide(
            &tracker,
            &engine,
            &def,
            &id,
            Decision::new("reject").at("second"),
        )
        .await;
        assert_eq!(done.status, RunStatus::Completed);
        assert_eq!(done.variables["first"]["decision"], "approve");
        assert_eq!(done.variables["first"]["input"], "looks good");
        assert_eq!(done.variables["second"]["decision"], "reject");
        // The stored steps rebuild the same final state.
        let steps = tracker.steps(&id).await.unwrap();
        let last = steps.last().unwrap();
        assert_eq!(last.state["variables"]["first"]["decision"], "approve");
        assert_eq!(last.state["variables"]["second"]["decision"], "reject");
    }

    pub async fn approval_timeout_takes_the_configured_decision(backend: Backend) {
        let s = backend.connect().await;
        let kit = Kit::new();
        let engine = kit.engine();
        let tracker = WorkflowTracker::new(s.clone());
        let mut def = approval_flow();
        let ask = def
            .nodes
            .iter_mut()
            .find(|n| n.id.as_str() == "ask")
            .unwrap();
        ask.config.insert("timeout_ms".into(), json!(60_000));
        ask.config
            .insert("timeout_decision".into(), json!("reject"));
        let id = tracker
            .run(
                &engine,
                &def,
                json!({"item": "x"}),
                RunOptions::default(),
                meta(),
            )
            .await
            .unwrap()
            .result
            .execution_id;
        let row = s.get_execution(&id).await.unwrap().unwrap();
        let wake_at = row
            .wake_at
            .expect("a waiting approval with a timeout sets wake_at");
        // Not due yet: nothing to resume.
        let source = StoreGraphSource::new(s.clone());
        assert!(
            tracker
                .resume_due(&engine, &source, wake_at - 1)
                .await
                .unwrap()
                .is_empty()
        );
        // Due: resumed with the timeout decision.
        let resumed = tracker.resume_due(&engine, &source, wake_at).await;
        let resumed = resumed.unwrap();
        assert_eq!(resumed.len(), 1);
        let outcome = resumed.into_iter().next().unwrap().1;
        match outcome {
            Ok(run) => {
                let result = run.into_result().unwrap();
                assert_eq!(result.status, RunStatus::Completed);
                assert_eq!(
                    result.variables["ask"],
                    json!({"decision": "reject", "input": null, "timed_out": true})
                );
                assert_eq!(result.variables["trail"], json!(["no"]));
            }
            Err(e) => panic!("resume of a timed-out approval failed: {e}"),
        }
    }

    pub async fn steps_list_states_and_fork_leaves_the_original_untouched(backend: Backend) {
        let s = backend.connect().await;
        let kit = Kit::new();
        let engine = kit.engine();
        let tracker = WorkflowTracker::new(s.clone()).snapshot_every(2);
        let def = effects_chain();
        let original = tracker
            .run(&engine, &def, json!({}), RunOptions::default(), meta())
            .await
            .unwrap()
            .into_result()
            .unwrap();
        let id = original.execution_id.clone();
        let steps = tracker.steps(&id).await.unwrap();
        let nodes: Vec<&str> = steps.iter().map(|s| s.node_id.as_str()).collect();
        assert_eq!(nodes, ["start", "a", "b", "gate", "c", "end"]);
        let numbers: Vec<i64> = steps.iter().map(|s| s.step).collect();
        assert_eq!(numbers, [1, 2, 3, 4, 5, 6]);
        let trails: Vec<Value> = steps
            .iter()
            .map(|s| s.state["variables"]["trail"].clone())
            .collect();
        assert_eq!(
            trails,
            [
                Value::Null,
                json!(["a"]),
                json!(["a", "b"]),
                json!(["a", "b"]),
                json!(["a", "b", "c"]),
                json!(["a", "b", "c"])
            ]
        );
        // Snapshots every 2 steps, deltas for the steps that changed something.
        let checkpoints = s.list_checkpoints(&id).await.unwrap();
        let snapshots: Vec<i64> = checkpoints
            .iter()
            .filter(|c| c.kind == CheckpointKind::Snapshot)
            .map(|c| c.step)
            .collect();
        assert_eq!(snapshots, [2, 4, 6]);

        let before = s.get_execution(&id).await.unwrap().unwrap();
        let before_events = stored_events(&s, &id).await;
        let mut edits = serde_json::Map::new();
        edits.insert("note".into(), json!("forked"));
        let fork = tracker
            .fork(&engine, &def, &id, 2, Some(edits), RunOptions::default())
            .await
            .unwrap()
            .into_result()
            .unwrap();
        assert_ne!(fork.execution_id, id);
        assert_eq!(fork.status, RunStatus::Completed);
        assert_eq!(fork.variables["trail"], json!(["a", "b", "c"]));
        assert_eq!(fork.variables["note"], "forked");
        // `a` was copied, not run again; `b` and `c` ran in the fork under its own keys.
        let calls = kit.calls();
        assert_eq!(calls.len(), 5, "{calls:?}");
        assert!(!calls.contains_key(&format!("{}:a:0:1", fork.execution_id)));
        assert!(calls.contains_key(&format!("{}:b:0:1", fork.execution_id)));
        let fork_row = s.get_execution(&fork.execution_id).await.unwrap().unwrap();
        assert_eq!(fork_row.params["fork"]["from"], json!(id));
        assert_eq!(fork_row.params["fork"]["step"], 2);
        let fork_steps = tracker.steps(&fork.execution_id).await.unwrap();
        let fork_nodes: Vec<&str> = fork_steps.iter().map(|s| s.node_id.as_str()).collect();
        assert_eq!(fork_nodes, ["start", "a", "b", "gate", "c", "end"]);
        stored_events(&s, &fork.execution_id).await;
        // The original is untouched.
        let after = s.get_execution(&id).await.unwrap().unwrap();
        assert_eq!(after, before);
        assert_eq!(stored_events(&s, &id).await, before_events);

        for step in [0, 7] {
            let err = tracker
                .fork(&engine, &def, &id, step, None, RunOptions::default())
                .await
                .unwrap_err();
            assert!(
                err.to_string()
                    .contains(&format!("has steps 1..=6; there is no step {step}")),
                "{err}"
            );
        }
    }

    pub async fn every_durability_mode_records_the_same_steps(backend: Backend) {
        let s = backend.connect().await;
        let kit = Kit::new();
        let engine = kit.engine();
        let def = effects_chain();
        let mut shapes = Vec::new();
        // The last run's caller discards events: a durable run records them all the same.
        for (mode, discard) in [
            (DurabilityMode::Sync, false),
            (DurabilityMode::Async, false),
            (DurabilityMode::Exit, false),
            (DurabilityMode::Sync, true),
        ] {
            let options = RunOptions::default().discard_events(discard);
            let run = WorkflowTracker::new(s.clone())
                .durability(mode)
                .run(&engine, &def, json!({}), options, meta())
                .await
                .unwrap()
                .into_result()
                .unwrap();
            let id = run.execution_id;
            let runs = s.list_node_runs(&id).await.unwrap();
            let mut rows: Vec<(i64, String, &str)> = runs
                .iter()
                .map(|r| (r.step.unwrap(), r.node_id.clone(), r.status.as_str()))
                .collect();
            rows.sort();
            let types: Vec<String> = stored_events(&s, &id)
                .await
                .into_iter()
                .map(|e| e.event_type)
                .collect();
            let row = s.get_execution(&id).await.unwrap().unwrap();
            assert_eq!(row.status, ExecutionStatus::Completed, "{mode}");
            shapes.push((rows, types, row.step_count));
        }
        assert_eq!(shapes[0], shapes[1], "async differs from sync");
        assert_eq!(shapes[0], shapes[2], "exit differs from sync");
        assert_eq!(shapes[0], shapes[3], "discarded events were not recorded");
        assert_eq!(shapes[0].2, 6);
    }

    pub async fn retention_deletes_only_ended_executions(backend: Backend) {
        let s = backend.connect().await;
        let kit = Kit::new();
        let engine = kit.engine();
        let tracker = WorkflowTracker::new(s.clone());
        let conversation = s
            .create_conversation(NewConversation {
                id: None,
                user_id: "alice".into(),
                title: None,
                metadata: json!({}),
            })
            .await
            .unwrap();
        let mut ended = Vec::new();
        for _ in 0..3 {
            let run = tracker
                .run(
                    &engine,
                    &effects_chain(),
                    json!({}),
                    RunOptions::default(),
                    meta().conversation(conversation.id.clone()),
                )
                .await
                .unwrap();
            ended.push(run.result.execution_id);
        }
        let waiting = tracker
            .run(
                &engine,
                &approval_flow(),
                json!({"item": "x"}),
                RunOptions::default(),
                meta().conversation(conversation.id.clone()),
            )
            .await
            .unwrap()
            .result
            .execution_id;
        let err = s
            .apply_retention(&RetentionPolicy::default(), 0)
            .await
            .unwrap_err();
        assert_eq!(err.store_kind(), Some(StoreErrorKind::InvalidInput));

        let keep_one = RetentionPolicy {
            keep_last_per_conversation: Some(1),
            max_age_ms: None,
        };
        let now = now_ms();
        assert_eq!(s.apply_retention(&keep_one, now).await.unwrap(), 2);
        assert!(s.get_execution(&ended[0]).await.unwrap().is_none());
        assert!(s.get_execution(&ended[1]).await.unwrap().is_none());
        assert!(s.get_execution(&ended[2]).await.unwrap().is_some());
        assert!(s.list_node_runs(&ended[0]).await.unwrap().is_empty());
        assert!(s.list_events(&ended[0], 0, 10).await.unwrap().is_empty());
        let everything_old = RetentionPolicy {
            keep_last_per_conversation: None,
            max_age_ms: Some(0),
        };
        assert_eq!(
            s.apply_retention(&everything_old, now + 60_000)
                .await
                .unwrap(),
            1
        );
        // The waiting execution stays, whatever its age.
        assert_eq!(
            s.get_execution(&waiting).await.unwrap().unwrap().status,
            ExecutionStatus::Waiting
        );
    }
}

/// Runs `def` on the SQLite store at `url` and, with `approvals` approvals, until it waits
/// again; the execution's id.
async fn run_until_waiting(
    url: &str,
    engine: &Engine,
    def: &WorkflowDefinition,
    approvals: usize,
) -> (Arc<dyn Store>, String) {
    let s = connect_with(url, StoreOptions::default()).await.unwrap();
    let tracker = WorkflowTracker::new(s.clone());
    let first = tracker
        .run(engine, def, json!({}), RunOptions::default(), meta())
        .await
        .unwrap()
        .into_result()
        .unwrap();
    assert_eq!(first.status, RunStatus::Waiting);
    let id = first.execution_id;
    for _ in 0..approvals {
        let next = decide(&tracker, engine, def, &id, Decision::new("approve")).await;
        assert_eq!(next.status, RunStatus::Waiting);
    }
    (s, id)
}

/// The text of table `name` in the database's schema.
fn table_sql(conn: &rusqlite::Connection, name: &str) -> String {
    conn.query_row(
        "SELECT sql FROM sqlite_master WHERE type = 'table' AND name = ?1",
        [name],
        |r| r.get(0),
    )
    .unwrap()
}

/// Migration 0012 rebuilds `workflow_node_runs` with a new primary key. An execution paused
/// on a database of the layout before it reads back the same after it (node runs, events
/// rebuilt from them, checkpoints held by them), and resumes: the rebuilt table's triggers
/// keep the waiting approval's folded event when its node run is written again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_execution_paused_before_migration_0012_resumes_after_it() {
    const NEW_KEY: &str = "PRIMARY KEY (execution_id, iteration, node_id, attempt)";
    const OLD_KEY: &str = "PRIMARY KEY (execution_id, node_id, iteration, attempt)";
    let dir = support::temp_dir("chatter-migration-0012");
    let path = dir.join("chatter.db");
    let url = format!("sqlite://{}", path.display());
    let kit = Kit::new();
    let engine = kit.engine();
    let def = approval_loop();
    // Paused at the second pass: node runs of iterations 0 and 1, one of them waiting.
    let (id, before) = {
        let (s, id) = run_until_waiting(&url, &engine, &def, 1).await;
        let read = (
            s.list_node_runs(&id).await.unwrap(),
            stored_events(&s, &id).await,
            s.list_checkpoints(&id).await.unwrap(),
        );
        (id, read)
    };
    // start, the loop and the approval twice, work once; four of them changed the state.
    assert_eq!((before.0.len(), before.2.len()), (6, 4), "{before:?}");
    let table_sql = |conn: &rusqlite::Connection| table_sql(conn, "workflow_node_runs");
    // Back to the layout of version 11: the same rebuild, with the old key.
    {
        let migration = chatter_store::migrate::SQLITE_MIGRATIONS
            .iter()
            .find(|m| m.version == 12)
            .unwrap();
        assert!(migration.sql.contains(NEW_KEY));
        let conn = rusqlite::Connection::open(&path).unwrap();
        conn.execute_batch(&format!(
            // Later migrations are undone too (0013 only rewrites a text it then finds as it
            // is, which does nothing).
            "BEGIN; {} DELETE FROM schema_migrations WHERE version >= 12; COMMIT;",
            migration.sql.replace(NEW_KEY, OLD_KEY)
        ))
        .unwrap();
        assert!(table_sql(&conn).contains(OLD_KEY));
    }
    let s = connect_with(&url, StoreOptions::default()).await.unwrap();
    {
        let conn = rusqlite::Connection::open(&path).unwrap();
        assert!(table_sql(&conn).contains(NEW_KEY));
        let triggers: Vec<String> = conn
            .prepare(
                "SELECT name FROM sqlite_master WHERE type = 'trigger'
                 AND tbl_name = 'workflow_node_runs' ORDER BY name",
            )
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap();
        assert_eq!(
            triggers,
            [
                "workflow_node_runs_keep_completed",
                "workflow_node_runs_keep_delta",
                "workflow_node_runs_keep_started"
            ]
        );
    }
    {
        // The status check still refuses what it refused.
        let conn = rusqlite::Connection::open(&path).unwrap();
        let err = conn
            .execute(
                "INSERT INTO workflow_node_runs (execution_id, node_id, iteration, attempt, status,
                     started_at) VALUES (?1, 'x', 0, 1, 'done', 0)",
                [&id],
            )
            .unwrap_err();
        assert!(err.to_string().contains("CHECK constraint failed"), "{err}");
    }
    let after = (
        s.list_node_runs(&id).await.unwrap(),
        stored_events(&s, &id).await,
        s.list_checkpoints(&id).await.unwrap(),
    );
    assert_eq!(after, before);

    let tracker = WorkflowTracker::new(s.clone());
    let done = decide(&tracker, &engine, &def, &id, Decision::new("approve")).await;
    assert_eq!(done.status, RunStatus::Completed);
    assert_eq!(done.variables["trail"], json!(["work", "work"]));
    assert_eq!(kit.calls().len(), 2, "{:?}", kit.calls());
    let events = stored_events(&s, &id).await;
    assert_eq!(count_of(&events, "interrupted"), 2);
    // The second pass's approval started before the pause and again on resume: both events
    // are kept (the first by the trigger, when its node run was written again).
    let ask_started: Vec<i64> = events
        .iter()
        .filter(|e| e.event_type == "node_started" && e.payload["node_id"] == "ask")
        .map(|e| e.payload["iteration"].as_i64().unwrap())
        .collect();
    assert_eq!(ask_started, [0, 0, 1, 1], "{events:?}");
    // What was read before the resume is still there, in the same order.
    assert_eq!(events[..before.1.len()], before.1[..]);
    drop(s);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Migration 0013 rewrites the `IN` list checks of `workflow_executions` as comparisons, in
/// the table's text: an execution paused before it reads back the same after it and resumes
/// to its end, the checks refuse what they refused, and inserting an execution no longer
/// builds a temporary b-tree per list.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_execution_paused_before_migration_0013_resumes_after_it() {
    const OLD_KIND: &str = "CHECK (kind IN ('definition', 'template', 'adhoc', 'chat'))";
    const OLD_STATUS: &str =
        "CHECK (status IN ('pending', 'running', 'waiting', 'completed', 'failed', 'cancelled'))";
    const NEW_KIND: &str =
        "CHECK (kind = 'definition' OR kind = 'template' OR kind = 'adhoc' OR kind = 'chat')";
    let dir = support::temp_dir("chatter-migration-0013");
    let path = dir.join("chatter.db");
    let url = format!("sqlite://{}", path.display());
    let kit = Kit::new();
    let engine = kit.engine();
    let def = approval_loop();
    let (id, before) = {
        let (s, id) = run_until_waiting(&url, &engine, &def, 0).await;
        let read = (
            s.get_execution(&id).await.unwrap(),
            s.list_node_runs(&id).await.unwrap(),
            stored_events(&s, &id).await,
            s.list_checkpoints(&id).await.unwrap(),
        );
        (id, read)
    };
    let table_sql = |conn: &rusqlite::Connection| table_sql(conn, "workflow_executions");
    // Back to the text of version 12.
    {
        let conn = rusqlite::Connection::open(&path).unwrap();
        let now = table_sql(&conn);
        assert!(now.contains(NEW_KIND) && !now.contains(OLD_KIND), "{now}");
        let status_at = now.find("CHECK (status = 'pending'").unwrap();
        let status_end = status_at + now[status_at..].find("'cancelled')").unwrap() + 12;
        let old = now.replacen(NEW_KIND, OLD_KIND, 1).replacen(
            &now[status_at..status_end],
            OLD_STATUS,
            1,
        );
        conn.execute_batch("BEGIN; PRAGMA writable_schema = ON;")
            .unwrap();
        conn.execute(
            "UPDATE sqlite_schema SET sql = ?1 WHERE type = 'table' AND name = 'workflow_executions'",
            [&old],
        )
        .unwrap();
        conn.execute_batch(
            "PRAGMA writable_schema = RESET; DELETE FROM schema_migrations WHERE version = 13;
             CREATE TABLE bump (x); DROP TABLE bump; COMMIT;",
        )
        .unwrap();
        assert_eq!(table_sql(&conn), old);
    }
    let s = connect_with(&url, StoreOptions::default()).await.unwrap();
    {
        let conn = rusqlite::Connection::open(&path).unwrap();
        let now = table_sql(&conn);
        assert!(now.contains(NEW_KIND), "{now}");
        assert!(!now.contains(" IN ("), "{now}");
        let ok: String = conn
            .query_row("PRAGMA integrity_check", [], |r| r.get(0))
            .unwrap();
        assert_eq!(ok, "ok");
        // The checks refuse what they refused.
        for (kind, status) in [("batch", "running"), ("adhoc", "done")] {
            let err = conn
                .execute(
                    "INSERT INTO workflow_executions (id, owner_id, kind, status, created_at,
                         updated_at) VALUES ('x', 'o', ?1, ?2, 0, 0)",
                    [kind, status],
                )
                .unwrap_err();
            assert!(err.to_string().contains("CHECK constraint failed"), "{err}");
        }
        // No temporary b-tree of a list when an execution is inserted.
        let ops: Vec<String> = conn
            .prepare(
                "EXPLAIN INSERT INTO workflow_executions (id, owner_id, kind, status, created_at,
                     updated_at) VALUES ('x', 'o', 'adhoc', 'running', 0, 0)",
            )
            .unwrap()
            .query_map([], |r| r.get(1))
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap();
        assert!(!ops.iter().any(|op| op == "OpenEphemeral"), "{ops:?}");
    }
    let after = (
        s.get_execution(&id).await.unwrap(),
        s.list_node_runs(&id).await.unwrap(),
        stored_events(&s, &id).await,
        s.list_checkpoints(&id).await.unwrap(),
    );
    assert_eq!(after, before);
    // It resumes, through every status change, to its end.
    let tracker = WorkflowTracker::new(s.clone());
    let second = decide(&tracker, &engine, &def, &id, Decision::new("approve")).await;
    assert_eq!(second.status, RunStatus::Waiting);
    let done = decide(&tracker, &engine, &def, &id, Decision::new("approve")).await;
    assert_eq!(done.status, RunStatus::Completed);
    assert_eq!(
        s.get_execution(&id).await.unwrap().map(|e| e.status),
        Some(ExecutionStatus::Completed)
    );
    drop(s);
    let _ = std::fs::remove_dir_all(&dir);
}
