//! The storage conformance suite: one set of cases over `Arc<dyn Store>`, run against SQLite
//! (file and memory) and Postgres.
//!
//! Postgres cases read `CHATTER_TEST_POSTGRES_URL` (e.g. `postgres://postgres@127.0.0.1:5432/test`);
//! each creates its own schema and drops it at the end, so they run in parallel and leave
//! nothing. When the variable is unset they print `skipped: CHATTER_TEST_POSTGRES_URL not set`
//! and pass; when it is set and Postgres is unreachable they fail.
//!
//! Every store here is opened with a 64 KiB payload limit.

// Test helpers outside `#[test]` functions unwrap too.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use chatter_core::store::*;
use chatter_store::{StoreOptions, connect_with};
use serde_json::{Value, json};

mod support;

const PAYLOAD_LIMIT: usize = 64 * 1024;

fn options() -> StoreOptions {
    let mut options = StoreOptions::default();
    options.max_payload_bytes = PAYLOAD_LIMIT;
    options
}

fn kind(err: &chatter_core::Error) -> Option<StoreErrorKind> {
    err.store_kind()
}

// ---------------------------------------------------------------------------------------------
// Harness
// ---------------------------------------------------------------------------------------------

async fn run_sqlite_memory<F, Fut>(case: F)
where
    F: FnOnce(Arc<dyn Store>) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let store = connect_with("sqlite::memory:", options()).await.unwrap();
    assert_eq!(store.backend(), "sqlite");
    case(store).await;
}

async fn run_sqlite_file<F, Fut>(case: F)
where
    F: FnOnce(Arc<dyn Store>) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let dir = temp_dir();
    let url = format!("sqlite://{}/chatter.db", dir.display());
    let store = connect_with(&url, options()).await.unwrap();
    case(store).await;
    let _ = std::fs::remove_dir_all(&dir);
}

async fn run_sqlite_writer_thread<F, Fut>(case: F)
where
    F: FnOnce(Arc<dyn Store>) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let dir = temp_dir();
    let url = format!("sqlite://{}/chatter.db", dir.display());
    let store = connect_with(&url, options().sqlite_inline_writes(false))
        .await
        .unwrap();
    case(store).await;
    let _ = std::fs::remove_dir_all(&dir);
}

fn temp_dir() -> std::path::PathBuf {
    support::temp_dir("chatter-store-test")
}

use support::{drop_schema, postgres_url};

async fn run_postgres<F, Fut>(case: F)
where
    F: FnOnce(Arc<dyn Store>) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let Some((store, url, schema)) = support::postgres_store(options(), 8).await else {
        return;
    };
    let outcome = tokio::spawn(case(store)).await;
    drop_schema(&url, &schema).await;
    if let Err(e) = outcome {
        std::panic::resume_unwind(e.into_panic());
    }
}

macro_rules! conformance {
    ($($case:ident),* $(,)?) => {
        mod sqlite_memory {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() { super::run_sqlite_memory(super::cases::$case).await; })*
        }
        mod sqlite_file {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() { super::run_sqlite_file(super::cases::$case).await; })*
        }
        /// Every write through the SQLite writer thread (`inline_writes=false`): the path
        /// `synchronous=full` takes, and the one a busy connection falls back to.
        mod sqlite_writer_thread {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() { super::run_sqlite_writer_thread(super::cases::$case).await; })*
        }
        mod postgres {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() { super::run_postgres(super::cases::$case).await; })*
        }
    };
}

conformance!(
    health_and_backend,
    definitions_crud_versioning_and_cache,
    definitions_listing_scoping_and_pagination,
    templates_crud_and_listing,
    template_analytics_updated_on_completion,
    execution_lifecycle_and_transitions,
    executions_listing_filters_and_pagination,
    commit_step_writes_run_events_and_checkpoints,
    model_steps_read_back_exactly,
    intents_leases_and_resumable_executions,
    start_execution_is_running_under_its_lease,
    commit_steps_groups_and_is_atomic,
    finish_execution_writes_the_last_steps_with_the_end,
    commit_steps_with_intent_writes_both_or_neither,
    start_with_steps_writes_the_row_with_its_first_steps,
    failed_transaction_leaves_nothing,
    concurrent_writers_keep_sequences_contiguous,
    concurrent_failures_leave_other_commits_intact,
    many_concurrent_executions_commit_every_step,
    events_paging_and_append,
    conversations_and_messages,
    documents_ingestion_and_search,
    search_scoping_threshold_and_limits,
    preferences_upsert_with_versions,
    audit_log_append_and_filter,
    jobs_priority_lease_retry,
    concurrent_claimers_get_distinct_jobs,
    jobs_cancel_owner_filters_and_stats,
    jobs_batch_concurrency_cap,
    jobs_expired_last_attempt_fails,
    users_keys_and_roles,
    credentials_and_sessions,
    workspaces_members_and_shares,
    sql_looking_strings_are_stored_verbatim,
    oversized_payloads_are_refused_before_the_database,
    invalid_input_is_refused,
    model_registry_round_trips_in_order,
    model_registry_edits_keep_it_valid,
    model_registry_refuses_bad_input_and_stale_versions,
);

// ---------------------------------------------------------------------------------------------
// Cases
// ---------------------------------------------------------------------------------------------

mod cases {
    pub use super::registry_cases::*;
    use super::*;

    fn new_def(owner: &str, name: &str) -> NewDefinition {
        NewDefinition {
            owner_id: owner.into(),
            name: name.into(),
            definition: json!({"nodes": [{"id": "start", "type": "start"}], "edges": []}),
            ..NewDefinition::default()
        }
    }

    pub async fn running_execution(s: &Arc<dyn Store>, owner: &str) -> ExecutionRecord {
        let run = s
            .create_execution(NewExecution::new(
                owner,
                ExecutionKind::Adhoc,
                json!({"message": "hi"}),
            ))
            .await
            .unwrap();
        s.set_execution_status(&run.id, ExecutionStatus::Running, run.created_at + 1)
            .await
            .unwrap()
    }

    pub fn step(execution_id: &str, node: &str, events: usize) -> StepCommit {
        let mut run = NodeRunRecord::started(execution_id, node, 0, 1, 1_000);
        run.status = NodeRunStatus::Completed;
        run.finished_at = Some(1_010);
        run.duration_ms = Some(10);
        run.prompt_tokens = 3;
        run.completion_tokens = 4;
        run.cost = 0.5;
        run.output = Some(json!({"text": node}));
        StepCommit {
            node_run: run,
            state_delta: json!({"variables": {node: true}}),
            events: (0..events)
                .map(|i| NewEvent::new(1_000 + i as i64, "token", json!({"node": node, "i": i})))
                .collect(),
            snapshot: None,
        }
    }

    pub fn outcome(status: ExecutionStatus) -> ExecutionOutcome {
        ExecutionOutcome {
            status,
            output: Some(json!({"answer": 42})),
            response: Some("done".into()),
            error: (status == ExecutionStatus::Failed).then(|| "model timed out".to_owned()),
            prompt_tokens: 10,
            completion_tokens: 5,
            cost: 0.25,
            finished_at: i64::MAX / 4,
            events: vec![NewEvent::new(9_999, "execution_completed", json!({}))],
        }
    }

    pub async fn health_and_backend(s: Arc<dyn Store>) {
        s.health_check().await.unwrap();
        assert!(matches!(s.backend(), "sqlite" | "postgres"));
        assert_eq!(s.max_payload_bytes(), PAYLOAD_LIMIT);
        assert!(s.pool_stats().max_size >= 1);
        // One `Arc<dyn Store>` hands out each concern as its own trait object (trait upcasting).
        let executions: Arc<dyn ExecutionStore> = s.clone();
        assert!(executions.get_execution("none").await.unwrap().is_none());
    }

    pub async fn definitions_crud_versioning_and_cache(s: Arc<dyn Store>) {
        let mut new = new_def("alice", "Support bot");
        new.tags = vec!["b".into(), "a".into()];
        new.description = Some("first".into());
        let created = s.create_definition(new.clone()).await.unwrap();
        assert_eq!(created.version, 1);
        assert_eq!(created.tags, ["b", "a"]);
        assert_eq!(created.definition, new.definition);
        assert_eq!(created.id.len(), 26, "a ULID");

        let before = s.cache_stats();
        let read = s.get_definition(&created.id).await.unwrap().unwrap();
        assert_eq!(read, created);
        let again = s.get_definition(&created.id).await.unwrap().unwrap();
        assert_eq!(again, created);
        let after = s.cache_stats();
        assert_eq!(after.misses, before.misses + 1);
        assert_eq!(after.hits, before.hits + 1);
        assert!((0.0..=1.0).contains(&after.hit_rate));

        let updated = s
            .update_definition(
                &created.id,
                DefinitionUpdate {
                    name: Some("Support bot v2".into()),
                    description: Some(None),
                    expected_version: Some(1),
                    ..DefinitionUpdate::default()
                },
            )
            .await
            .unwrap();
        assert_eq!(updated.version, 2);
        assert_eq!(updated.name, "Support bot v2");
        assert_eq!(updated.description, None);
        assert_eq!(updated.definition, created.definition);
        // The cache was invalidated by the write.
        assert_eq!(
            s.get_definition(&created.id).await.unwrap().unwrap(),
            updated
        );

        let stale = s
            .update_definition(
                &created.id,
                DefinitionUpdate {
                    expected_version: Some(1),
                    ..Default::default()
                },
            )
            .await
            .unwrap_err();
        assert_eq!(kind(&stale), Some(StoreErrorKind::Conflict));
        assert!(
            stale.to_string().contains("is at version 2, not 1"),
            "{stale}"
        );

        let missing = s
            .update_definition("nope", DefinitionUpdate::default())
            .await
            .unwrap_err();
        assert_eq!(
            missing.to_string(),
            "storage error (not_found): definition `nope` not found"
        );

        let mut dup = new_def("alice", "dup");
        dup.id = Some(created.id.clone());
        assert_eq!(
            kind(&s.create_definition(dup).await.unwrap_err()),
            Some(StoreErrorKind::Conflict)
        );

        assert!(s.delete_definition(&created.id).await.unwrap());
        assert!(!s.delete_definition(&created.id).await.unwrap());
        assert_eq!(s.get_definition(&created.id).await.unwrap(), None);
    }

    pub async fn definitions_listing_scoping_and_pagination(s: Arc<dyn Store>) {
        let mut ids = Vec::new();
        for i in 0..5 {
            let mut new = new_def("alice", &format!("a{i}"));
            new.tags = if i % 2 == 0 {
                vec!["even".into()]
            } else {
                vec![]
            };
            ids.push(s.create_definition(new).await.unwrap().id);
        }
        let mut public = new_def("bob", "bob public");
        public.is_public = true;
        let public = s.create_definition(public).await.unwrap();
        s.create_definition(new_def("bob", "bob private"))
            .await
            .unwrap();

        let alice = DefinitionFilter {
            owner_id: Some("alice".into()),
            ..Default::default()
        };
        let all: Vec<_> = s.list_definitions(&alice, Page::new(100, 0)).await.unwrap();
        let names: Vec<_> = all.iter().map(|d| d.name.as_str()).collect();
        assert_eq!(names, ["a4", "a3", "a2", "a1", "a0"], "newest first");

        let page2 = s.list_definitions(&alice, Page::new(2, 2)).await.unwrap();
        let names: Vec<_> = page2.iter().map(|d| d.name.as_str()).collect();
        assert_eq!(names, ["a2", "a1"]);

        let with_public = DefinitionFilter {
            include_public: true,
            ..alice.clone()
        };
        let listed = s
            .list_definitions(&with_public, Page::new(100, 0))
            .await
            .unwrap();
        assert_eq!(listed.len(), 6);
        assert_eq!(listed[0].id, public.id);
        assert!(listed.iter().all(|d| d.owner_id == "alice" || d.is_public));

        let even = DefinitionFilter {
            tag: Some("even".into()),
            ..alice
        };
        let names: Vec<_> = s
            .list_definitions(&even, Page::new(100, 0))
            .await
            .unwrap()
            .into_iter()
            .map(|d| d.name)
            .collect();
        assert_eq!(names, ["a4", "a2", "a0"]);

        let everyone = s
            .list_definitions(&DefinitionFilter::default(), Page::new(100, 0))
            .await
            .unwrap();
        assert_eq!(everyone.len(), 7);
    }

    fn new_template(owner: Option<&str>, name: &str, category: &str) -> NewTemplate {
        NewTemplate {
            owner_id: owner.map(str::to_owned),
            name: name.into(),
            category: category.into(),
            spec: json!({"default_params": {"model": "gpt"}, "required_tools": []}),
            ..NewTemplate::default()
        }
    }

    pub async fn templates_crud_and_listing(s: Arc<dyn Store>) {
        let mut builtin = new_template(None, "general_chat", "general");
        builtin.id = Some("general_chat".into());
        builtin.is_builtin = true;
        let builtin = s.create_template(builtin).await.unwrap();
        assert_eq!(builtin.id, "general_chat");
        let mine = s
            .create_template(new_template(Some("alice"), "mine", "support"))
            .await
            .unwrap();
        s.create_template(new_template(Some("bob"), "bobs", "support"))
            .await
            .unwrap();

        let dup = s
            .create_template(new_template(Some("alice"), "mine", "x"))
            .await
            .unwrap_err();
        assert_eq!(kind(&dup), Some(StoreErrorKind::Conflict));
        // The same name under another owner is fine.
        s.create_template(new_template(Some("carol"), "mine", "x"))
            .await
            .unwrap();

        let alice = TemplateFilter {
            owner_id: Some("alice".into()),
            include_public: true,
            category: None,
        };
        let names: Vec<_> = s
            .list_templates(&alice, Page::default())
            .await
            .unwrap()
            .into_iter()
            .map(|t| t.name)
            .collect();
        assert_eq!(names, ["general_chat", "mine"]);
        let support = TemplateFilter {
            category: Some("support".into()),
            ..Default::default()
        };
        assert_eq!(
            s.list_templates(&support, Page::default())
                .await
                .unwrap()
                .len(),
            2
        );

        assert_eq!(s.get_template(&mine.id).await.unwrap().unwrap(), mine);
        let updated = s
            .update_template(
                &mine.id,
                TemplateUpdate {
                    spec: Some(json!({"v": 2})),
                    expected_version: Some(1),
                    ..Default::default()
                },
            )
            .await
            .unwrap();
        assert_eq!(
            (updated.version, updated.spec.clone()),
            (2, json!({"v": 2}))
        );
        assert_eq!(
            s.get_template(&mine.id).await.unwrap().unwrap(),
            updated,
            "cache invalidated"
        );
        let stale = s
            .update_template(
                &mine.id,
                TemplateUpdate {
                    expected_version: Some(1),
                    ..Default::default()
                },
            )
            .await
            .unwrap_err();
        assert_eq!(kind(&stale), Some(StoreErrorKind::Conflict));
        assert_eq!(s.template_analytics(&mine.id).await.unwrap(), None);
        assert!(s.delete_template(&mine.id).await.unwrap());
        assert_eq!(s.get_template(&mine.id).await.unwrap(), None);
        assert!(!s.delete_template(&mine.id).await.unwrap());
    }

    pub async fn template_analytics_updated_on_completion(s: Arc<dyn Store>) {
        let template = s
            .create_template(new_template(Some("alice"), "t", "general"))
            .await
            .unwrap();
        for status in [
            ExecutionStatus::Completed,
            ExecutionStatus::Failed,
            ExecutionStatus::Completed,
        ] {
            let mut new = NewExecution::new("alice", ExecutionKind::Template, json!({}));
            new.template_id = Some(template.id.clone());
            new.params = json!({"temperature": 0.2});
            let run = s.create_execution(new).await.unwrap();
            let run = s
                .set_execution_status(&run.id, ExecutionStatus::Running, run.created_at)
                .await
                .unwrap();
            let mut done = outcome(status);
            done.finished_at = run.started_at.unwrap() + 100;
            s.complete_execution(&run.id, done).await.unwrap();
        }
        let stats = s.template_analytics(&template.id).await.unwrap().unwrap();
        assert_eq!(stats.usage_count, 3);
        assert_eq!(stats.success_count, 2);
        assert_eq!(stats.failure_count, 1);
        assert_eq!(stats.total_tokens, 45);
        assert!((stats.total_cost - 0.75).abs() < 1e-9);
        assert_eq!(stats.total_duration_ms, 300);
        assert!((stats.avg_duration_ms - 100.0).abs() < 1e-9);
        assert!(stats.last_used_at.is_some());
    }

    pub async fn execution_lifecycle_and_transitions(s: Arc<dyn Store>) {
        let def = s.create_definition(new_def("alice", "d")).await.unwrap();
        let mut new = NewExecution::new(
            "alice",
            ExecutionKind::Definition,
            json!({"message": "hello"}),
        );
        new.definition_id = Some(def.id.clone());
        let run = s.create_execution(new).await.unwrap();
        assert_eq!(run.status, ExecutionStatus::Pending);
        assert_eq!(run.definition_id.as_deref(), Some(def.id.as_str()));
        assert_eq!(run.params, json!({}));
        assert_eq!(
            (run.last_event_seq, run.step_count, run.started_at),
            (0, 0, None)
        );

        let err = s
            .set_execution_status(&run.id, ExecutionStatus::Waiting, 5)
            .await
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "storage error (conflict): execution `{}` cannot go from pending to waiting",
                run.id
            )
        );
        let err = s
            .set_execution_status(&run.id, ExecutionStatus::Completed, 5)
            .await
            .unwrap_err();
        assert_eq!(kind(&err), Some(StoreErrorKind::InvalidInput));

        let running = s
            .set_execution_status(&run.id, ExecutionStatus::Running, run.created_at + 5)
            .await
            .unwrap();
        assert_eq!(running.started_at, Some(run.created_at + 5));
        let waiting = s
            .set_execution_status(&run.id, ExecutionStatus::Waiting, run.created_at + 6)
            .await
            .unwrap();
        assert_eq!(waiting.status, ExecutionStatus::Waiting);
        let resumed = s
            .set_execution_status(&run.id, ExecutionStatus::Running, run.created_at + 7)
            .await
            .unwrap();
        assert_eq!(
            resumed.started_at,
            Some(run.created_at + 5),
            "started_at kept on resume"
        );

        let mut failed = outcome(ExecutionStatus::Failed);
        failed.finished_at = run.created_at + 105;
        let ended = s.complete_execution(&run.id, failed).await.unwrap();
        assert_eq!(ended.status, ExecutionStatus::Failed);
        assert_eq!(ended.error.as_deref(), Some("model timed out"));
        assert_eq!(ended.response.as_deref(), Some("done"));
        assert_eq!(ended.output, Some(json!({"answer": 42})));
        assert_eq!(
            (
                ended.prompt_tokens,
                ended.completion_tokens,
                ended.total_tokens
            ),
            (10, 5, 15)
        );
        assert_eq!(ended.duration_ms, Some(100));
        assert_eq!(ended.finished_at, Some(run.created_at + 105));
        assert_eq!(ended.last_event_seq, 1);
        let events = s.list_events(&run.id, 0, 10).await.unwrap();
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].event_type, "execution_completed");

        let again = s
            .complete_execution(&run.id, outcome(ExecutionStatus::Completed))
            .await
            .unwrap_err();
        assert_eq!(
            again.to_string(),
            format!(
                "storage error (conflict): execution `{}` cannot go from failed to completed",
                run.id
            )
        );
        let after_end = s.commit_step(&step(&run.id, "late", 1)).await.unwrap_err();
        assert_eq!(
            after_end.to_string(),
            format!(
                "storage error (conflict): execution `{}` has ended (failed)",
                run.id
            )
        );
        let bad = s
            .complete_execution(&run.id, outcome(ExecutionStatus::Running))
            .await
            .unwrap_err();
        assert_eq!(kind(&bad), Some(StoreErrorKind::InvalidInput));
        let missing = s
            .complete_execution("nope", outcome(ExecutionStatus::Completed))
            .await
            .unwrap_err();
        assert_eq!(
            missing.to_string(),
            "storage error (not_found): execution `nope` not found"
        );

        // A pending execution can be cancelled directly.
        let pending = s
            .create_execution(NewExecution::new("alice", ExecutionKind::Chat, json!({})))
            .await
            .unwrap();
        let cancelled = s
            .complete_execution(&pending.id, outcome(ExecutionStatus::Cancelled))
            .await
            .unwrap();
        assert_eq!(cancelled.status, ExecutionStatus::Cancelled);

        // Deleting the definition keeps the execution.
        assert!(s.delete_definition(&def.id).await.unwrap());
        assert_eq!(
            s.get_execution(&run.id)
                .await
                .unwrap()
                .unwrap()
                .definition_id,
            None
        );

        let mut unknown = NewExecution::new("alice", ExecutionKind::Definition, json!({}));
        unknown.definition_id = Some("missing-def".into());
        assert_eq!(
            kind(&s.create_execution(unknown).await.unwrap_err()),
            Some(StoreErrorKind::NotFound)
        );

        assert!(s.delete_execution(&run.id).await.unwrap());
        assert_eq!(s.get_execution(&run.id).await.unwrap(), None);
        assert!(s.list_events(&run.id, 0, 10).await.unwrap().is_empty());
    }

    pub async fn executions_listing_filters_and_pagination(s: Arc<dyn Store>) {
        let def = s.create_definition(new_def("alice", "d")).await.unwrap();
        let mut ids = Vec::new();
        for i in 0..6 {
            let owner = if i < 4 { "alice" } else { "bob" };
            let mut new = NewExecution::new(owner, ExecutionKind::Definition, json!({"i": i}));
            if i % 2 == 0 {
                new.definition_id = Some(def.id.clone());
            }
            ids.push(s.create_execution(new).await.unwrap().id);
        }
        s.set_execution_status(&ids[1], ExecutionStatus::Running, 1)
            .await
            .unwrap();

        let alice = ExecutionFilter {
            owner_id: Some("alice".into()),
            ..Default::default()
        };
        let listed: Vec<_> = s
            .list_executions(&alice, Page::new(10, 0))
            .await
            .unwrap()
            .into_iter()
            .map(|e| e.id)
            .collect();
        assert_eq!(
            listed,
            [
                ids[3].clone(),
                ids[2].clone(),
                ids[1].clone(),
                ids[0].clone()
            ]
        );
        let page: Vec<_> = s
            .list_executions(&alice, Page::new(2, 1))
            .await
            .unwrap()
            .into_iter()
            .map(|e| e.id)
            .collect();
        assert_eq!(page, [ids[2].clone(), ids[1].clone()]);

        let by_def = ExecutionFilter {
            definition_id: Some(def.id.clone()),
            ..Default::default()
        };
        assert_eq!(
            s.list_executions(&by_def, Page::default())
                .await
                .unwrap()
                .len(),
            3
        );
        let running = ExecutionFilter {
            status: Some(ExecutionStatus::Running),
            ..Default::default()
        };
        let found = s.list_executions(&running, Page::default()).await.unwrap();
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].id, ids[1]);
        let bob_def = ExecutionFilter {
            owner_id: Some("bob".into()),
            definition_id: Some(def.id.clone()),
            ..Default::default()
        };
        let found = s.list_executions(&bob_def, Page::default()).await.unwrap();
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].id, ids[4]);
        let created = s.get_execution(&ids[0]).await.unwrap().unwrap().created_at;
        let future = ExecutionFilter {
            created_after: Some(created + 60_000),
            ..Default::default()
        };
        assert!(
            s.list_executions(&future, Page::default())
                .await
                .unwrap()
                .is_empty()
        );
        let window = ExecutionFilter {
            created_after: Some(created),
            created_before: Some(created + 60_000),
            ..Default::default()
        };
        assert_eq!(
            s.list_executions(&window, Page::default())
                .await
                .unwrap()
                .len(),
            6
        );
    }

    /// `start_execution`: the row is `running` under the lease from the first read, exactly
    /// as the three calls it replaces leave it; bad input writes nothing.
    pub async fn start_execution_is_running_under_its_lease(s: Arc<dyn Store>) {
        let mut new = NewExecution::new("alice", ExecutionKind::Adhoc, json!({"message": "hi"}));
        new.id = Some("exec-started".into());
        new.params = json!({"temperature": 0.7, "nested": {"list": [1, -2, 2.5, "x", null, true]}});
        new.graph = Some(Arc::new(json!({
            "nodes": [{"id": "start", "type": "start", "config": {"max": 1e300}}],
            "edges": []
        })));
        let row = s.start_execution(new, "w1", 5_000, 1_000).await.unwrap();
        // The row returned is the row stored, JSON columns included.
        assert_eq!(row.params["nested"]["list"][2], json!(2.5));
        assert_eq!(
            row.graph
                .as_ref()
                .map(|g| g["nodes"][0]["config"]["max"].clone()),
            Some(json!(1e300))
        );
        assert_eq!(row.id, "exec-started");
        assert_eq!(row.status, ExecutionStatus::Running);
        assert_eq!(
            (row.lease_owner.as_deref(), row.lease_expires_at),
            (Some("w1"), Some(5_000))
        );
        assert_eq!((row.started_at, row.updated_at), (Some(1_000), 1_000));
        assert_eq!(s.get_execution(&row.id).await.unwrap().unwrap(), row);
        // Another worker cannot take it before the lease ends; then it is due.
        assert!(!s.acquire_lease(&row.id, "w2", 6_000, 4_999).await.unwrap());
        assert!(s.list_resumable(4_999, 10).await.unwrap().is_empty());
        assert_eq!(s.list_resumable(5_001, 10).await.unwrap().len(), 1);
        // It goes on like any running execution.
        let done = s
            .complete_execution(&row.id, outcome(ExecutionStatus::Completed))
            .await
            .unwrap();
        assert_eq!(done.lease_owner, None);
        // A pending execution with a `null` input and parameters stores (and returns) `{}`.
        let mut pending = NewExecution::new("alice", ExecutionKind::Adhoc, Value::Null);
        pending.params = Value::Null;
        let row = s.create_execution(pending).await.unwrap();
        assert_eq!(
            (row.input.clone(), row.params.clone()),
            (json!({}), json!({}))
        );
        assert_eq!(
            (row.status, row.started_at),
            (ExecutionStatus::Pending, None)
        );
        assert_eq!(s.get_execution(&row.id).await.unwrap().unwrap(), row);

        // Bad input: nothing written.
        let mut again = NewExecution::new("alice", ExecutionKind::Adhoc, json!({}));
        again.id = Some("exec-started".into());
        assert_eq!(
            kind(
                &s.start_execution(again, "w1", 5_000, 1_000)
                    .await
                    .unwrap_err()
            ),
            Some(StoreErrorKind::Conflict)
        );
        let mut no_owner = NewExecution::new("alice", ExecutionKind::Adhoc, json!({}));
        no_owner.id = Some("exec-no-lease-owner".into());
        assert_eq!(
            kind(
                &s.start_execution(no_owner, "", 5_000, 1_000)
                    .await
                    .unwrap_err()
            ),
            Some(StoreErrorKind::InvalidInput)
        );
        let mut missing = NewExecution::new("alice", ExecutionKind::Definition, json!({}));
        missing.id = Some("exec-missing-definition".into());
        missing.definition_id = Some("no-such-definition".into());
        assert_eq!(
            kind(
                &s.start_execution(missing, "w1", 5_000, 1_000)
                    .await
                    .unwrap_err()
            ),
            Some(StoreErrorKind::NotFound)
        );
        for id in ["exec-no-lease-owner", "exec-missing-definition"] {
            assert!(s.get_execution(id).await.unwrap().is_none(), "{id}");
        }
        let all = s
            .list_executions(&ExecutionFilter::default(), Page::default())
            .await
            .unwrap();
        assert_eq!(all.len(), 2, "the started one and the pending one");
    }

    pub async fn intents_leases_and_resumable_executions(s: Arc<dyn Store>) {
        let run = running_execution(&s, "alice").await;
        // An intent is a running node run with its key, outside any step.
        let mut intent = NodeRunRecord::started(&run.id, "pay", 0, 1, 1_000);
        intent.idempotency_key = Some(format!("{}:pay:0:1", run.id));
        s.record_intent(&intent).await.unwrap();
        let runs = s.list_node_runs(&run.id).await.unwrap();
        assert_eq!(runs.len(), 1);
        assert_eq!(runs[0].status, NodeRunStatus::Running);
        assert_eq!(runs[0].step, None);
        assert_eq!(runs[0].idempotency_key, intent.idempotency_key);
        let row = s.get_execution(&run.id).await.unwrap().unwrap();
        assert_eq!((row.step_count, row.last_event_seq), (0, 0));
        // The step replaces it, keeping the key; a later intent does not touch the ended run.
        let mut done = step(&run.id, "pay", 0);
        done.node_run.route = Some(json!({"branch": "ok"}));
        done.node_run.error_class = None;
        s.commit_step(&done).await.unwrap();
        s.record_intent(&intent).await.unwrap();
        let runs = s.list_node_runs(&run.id).await.unwrap();
        assert_eq!(runs.len(), 1);
        assert_eq!(runs[0].status, NodeRunStatus::Completed);
        assert_eq!(runs[0].step, Some(1));
        assert_eq!(runs[0].route, Some(json!({"branch": "ok"})));
        assert_eq!(runs[0].idempotency_key, intent.idempotency_key);

        // Leases: one holder at a time until it expires.
        assert!(s.acquire_lease(&run.id, "w1", 2_000, 1_000).await.unwrap());
        assert!(!s.acquire_lease(&run.id, "w2", 2_500, 1_500).await.unwrap());
        assert!(s.acquire_lease(&run.id, "w1", 3_000, 1_500).await.unwrap());
        assert!(s.list_resumable(2_999, 10).await.unwrap().is_empty());
        let due = s.list_resumable(3_001, 10).await.unwrap();
        assert_eq!(
            due.iter().map(|e| e.id.as_str()).collect::<Vec<_>>(),
            [&*run.id]
        );
        assert!(s.acquire_lease(&run.id, "w2", 9_000, 3_001).await.unwrap());
        let row = s.get_execution(&run.id).await.unwrap().unwrap();
        assert_eq!(row.lease_owner.as_deref(), Some("w2"));
        assert_eq!(row.lease_expires_at, Some(9_000));
        s.release_lease(&run.id, "w1").await.unwrap();
        assert_eq!(
            s.get_execution(&run.id)
                .await
                .unwrap()
                .unwrap()
                .lease_owner
                .as_deref(),
            Some("w2"),
            "only the holder releases"
        );
        s.release_lease(&run.id, "w2").await.unwrap();
        assert_eq!(
            s.get_execution(&run.id).await.unwrap().unwrap().lease_owner,
            None
        );

        // A waiting execution is due once its wake-up time passes.
        s.acquire_lease(&run.id, "w1", 10_000, 5_000).await.unwrap();
        s.set_execution_status(&run.id, ExecutionStatus::Waiting, 5_000)
            .await
            .unwrap();
        s.set_wake_at(&run.id, Some(20_000)).await.unwrap();
        assert!(s.list_resumable(19_999, 10).await.unwrap().is_empty());
        assert_eq!(s.list_resumable(20_000, 10).await.unwrap().len(), 1);

        // Unknown and ended executions.
        let err = s.acquire_lease("nope", "w1", 1, 0).await.unwrap_err();
        assert_eq!(err.store_kind(), Some(StoreErrorKind::NotFound));
        let err = s.set_wake_at("nope", None).await.unwrap_err();
        assert_eq!(err.store_kind(), Some(StoreErrorKind::NotFound));
        let err = s
            .record_intent(&NodeRunRecord::started("nope", "pay", 0, 1, 0))
            .await
            .unwrap_err();
        assert_eq!(err.store_kind(), Some(StoreErrorKind::NotFound));
        s.complete_execution(&run.id, outcome(ExecutionStatus::Cancelled))
            .await
            .unwrap();
        let ended = s.get_execution(&run.id).await.unwrap().unwrap();
        assert_eq!(
            (ended.lease_owner, ended.lease_expires_at),
            (None, None),
            "ending an execution releases its lease"
        );
        assert!(
            !s.acquire_lease(&run.id, "w9", 99_000, 90_000)
                .await
                .unwrap()
        );
        let err = s.record_intent(&intent).await.unwrap_err();
        assert_eq!(err.store_kind(), Some(StoreErrorKind::Conflict));
        assert!(s.list_resumable(i64::MAX, 10).await.unwrap().is_empty());
    }

    /// A model step as the engine commits it: `node_started` and `node_completed` events, the
    /// reply in the node output, the event and the delta's appended message.
    fn reply_step(execution_id: &str, node: &str, started_at: i64, reply: &str) -> StepCommit {
        let mut run = NodeRunRecord::started(execution_id, node, 0, 1, started_at);
        run.status = NodeRunStatus::Completed;
        run.finished_at = Some(started_at + 5);
        run.duration_ms = Some(5);
        let output =
            json!({"content": reply, "tool_calls": [], "model": "m", "usage": {"total_tokens": 7}});
        run.output = Some(output.clone());
        StepCommit {
            node_run: run,
            state_delta: json!({
                "messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": reply}],
                "usage": {"total_tokens": 7}
            }),
            events: vec![
                NewEvent::new(
                    started_at,
                    "node_started",
                    json!({"node_id": node, "kind": "llm", "iteration": 0, "attempt": 1}),
                ),
                NewEvent::new(
                    started_at + 5,
                    "node_completed",
                    json!({"node_id": node, "iteration": 0, "duration_ms": 5, "output": output}),
                ),
            ],
            snapshot: None,
        }
    }

    pub async fn model_steps_read_back_exactly(s: Arc<dyn Store>) {
        let run = running_execution(&s, "alice").await;
        let reply = "A reply long enough to be stored once: ".repeat(4);
        let one = reply_step(&run.id, "a", 1_000, &reply);
        // Two runs ending together: the events of both ride on the first step (as the engine
        // stages them), and a started event whose time differs from its run's start.
        let mut two = reply_step(&run.id, "b", 2_000, &format!("{reply} (b)"));
        let mut three = reply_step(&run.id, "c", 2_000, "short");
        three.events[0].ts = 1_999;
        two.events.append(&mut three.events);
        let receipts = s.commit_steps(std::slice::from_ref(&one)).await.unwrap();
        assert_eq!(receipts[0].last_seq, 2);
        s.commit_steps(&[two.clone(), three.clone()]).await.unwrap();
        // The same run committed again (an approval decided): its events are appended.
        let mut again = reply_step(&run.id, "a", 3_000, "decided");
        again.node_run.status = NodeRunStatus::Completed;
        s.commit_step(&again).await.unwrap();

        let events = s.list_events(&run.id, 0, 100).await.unwrap();
        let seqs: Vec<i64> = events.iter().map(|e| e.seq).collect();
        assert_eq!(seqs, (1..=8).collect::<Vec<_>>());
        let written: Vec<&NewEvent> = one
            .events
            .iter()
            .chain(&two.events)
            .chain(&again.events)
            .collect();
        for (stored, written) in events.iter().zip(written) {
            assert_eq!(stored.event_type, written.event_type);
            assert_eq!(stored.payload, written.payload);
            assert_eq!(stored.ts, written.ts);
        }
        // Paging from the middle sees the same events.
        let page = s.list_events(&run.id, 3, 2).await.unwrap();
        assert_eq!(page, events[3..5]);

        let runs = s.list_node_runs(&run.id).await.unwrap();
        let output_of = |node: &str| {
            runs.iter()
                .find(|r| r.node_id == node)
                .and_then(|r| r.output.clone())
        };
        assert_eq!(output_of("a"), again.node_run.output);
        assert_eq!(output_of("b"), two.node_run.output);
        assert_eq!(output_of("c"), three.node_run.output);

        let deltas: Vec<(i64, Value)> = s
            .list_checkpoints(&run.id)
            .await
            .unwrap()
            .into_iter()
            .map(|c| (c.step, c.state))
            .collect();
        assert_eq!(
            deltas,
            [
                (1, one.state_delta),
                (2, two.state_delta),
                (3, three.state_delta),
                (4, again.state_delta)
            ]
        );
    }

    pub async fn commit_step_writes_run_events_and_checkpoints(s: Arc<dyn Store>) {
        let run = running_execution(&s, "alice").await;
        let first = s.commit_step(&step(&run.id, "llm", 3)).await.unwrap();
        assert_eq!(
            first,
            StepReceipt {
                step: 1,
                first_seq: 1,
                last_seq: 3
            }
        );
        let mut second = step(&run.id, "tool", 0);
        second.snapshot = Some(json!({"messages": [], "variables": {"llm": true, "tool": true}}));
        let second_receipt = s.commit_step(&second).await.unwrap();
        assert_eq!(
            second_receipt,
            StepReceipt {
                step: 2,
                first_seq: 4,
                last_seq: 3
            }
        );
        let third = s.commit_step(&step(&run.id, "end", 2)).await.unwrap();
        assert_eq!(
            third,
            StepReceipt {
                step: 3,
                first_seq: 4,
                last_seq: 5
            }
        );

        let events = s.list_events(&run.id, 0, 100).await.unwrap();
        let seqs: Vec<_> = events.iter().map(|e| e.seq).collect();
        assert_eq!(seqs, [1, 2, 3, 4, 5]);
        assert_eq!(events[0].payload, json!({"node": "llm", "i": 0}));
        assert_eq!(events[4].payload, json!({"node": "end", "i": 1}));
        assert_eq!(events[0].event_type, "token");

        let runs = s.list_node_runs(&run.id).await.unwrap();
        assert_eq!(runs.len(), 3);
        let llm = runs.iter().find(|r| r.node_id == "llm").unwrap();
        let mut expected = step(&run.id, "llm", 0).node_run;
        // The store records the step a run was committed in.
        expected.step = Some(1);
        assert_eq!(llm, &expected);

        // Committing the same (node, iteration, attempt) again updates the run.
        let mut retry = step(&run.id, "llm", 0);
        retry.node_run.status = NodeRunStatus::Failed;
        retry.node_run.error = Some("boom".into());
        retry.state_delta = Value::Null;
        let receipt = s.commit_step(&retry).await.unwrap();
        assert_eq!(receipt.step, 4);
        let runs = s.list_node_runs(&run.id).await.unwrap();
        assert_eq!(runs.len(), 3);
        let llm = runs.iter().find(|r| r.node_id == "llm").unwrap();
        assert_eq!(
            (llm.status, llm.error.as_deref()),
            (NodeRunStatus::Failed, Some("boom"))
        );

        let checkpoints = s.list_checkpoints(&run.id).await.unwrap();
        let shape: Vec<_> = checkpoints.iter().map(|c| (c.step, c.kind)).collect();
        assert_eq!(
            shape,
            [
                (1, CheckpointKind::Delta),
                (2, CheckpointKind::Snapshot),
                (2, CheckpointKind::Delta),
                (3, CheckpointKind::Delta)
            ],
            "no delta row for a null delta"
        );
        let resume = s.load_checkpoint(&run.id).await.unwrap();
        assert_eq!(resume.snapshot.as_ref().unwrap().step, 2);
        assert_eq!(
            resume.snapshot.as_ref().unwrap().state,
            second.snapshot.clone().unwrap()
        );
        let delta_steps: Vec<_> = resume.deltas.iter().map(|d| d.step).collect();
        assert_eq!(delta_steps, [3]);
        assert_eq!(resume.deltas[0].state, json!({"variables": {"end": true}}));
        assert_eq!(resume.deltas[0].node_id.as_deref(), Some("end"));

        assert_eq!(s.compact_checkpoints(&run.id).await.unwrap(), 2);
        let shape: Vec<_> = s
            .list_checkpoints(&run.id)
            .await
            .unwrap()
            .iter()
            .map(|c| (c.step, c.kind))
            .collect();
        assert_eq!(
            shape,
            [(2, CheckpointKind::Snapshot), (3, CheckpointKind::Delta)]
        );
        assert_eq!(
            s.load_checkpoint(&run.id).await.unwrap(),
            resume,
            "compaction keeps what resuming needs"
        );

        let record = s.get_execution(&run.id).await.unwrap().unwrap();
        assert_eq!((record.last_event_seq, record.step_count), (5, 4));

        let missing = s.commit_step(&step("nope", "x", 1)).await.unwrap_err();
        assert_eq!(
            missing.to_string(),
            "storage error (not_found): execution `nope` not found"
        );
    }

    pub async fn commit_steps_groups_and_is_atomic(s: Arc<dyn Store>) {
        let a = running_execution(&s, "alice").await;
        let b = running_execution(&s, "alice").await;
        let receipts = s
            .commit_steps(&[
                step(&a.id, "x", 2),
                step(&b.id, "y", 1),
                step(&a.id, "z", 1),
            ])
            .await
            .unwrap();
        assert_eq!(
            receipts,
            [
                StepReceipt {
                    step: 1,
                    first_seq: 1,
                    last_seq: 2
                },
                StepReceipt {
                    step: 1,
                    first_seq: 1,
                    last_seq: 1
                },
                StepReceipt {
                    step: 2,
                    first_seq: 3,
                    last_seq: 3
                },
            ]
        );
        assert!(s.commit_steps(&[]).await.unwrap().is_empty());

        // A group with one bad step writes nothing at all.
        let err = s
            .commit_steps(&[
                step(&a.id, "ok", 2),
                step(&b.id, "ok", 1),
                step("missing", "bad", 1),
            ])
            .await
            .unwrap_err();
        assert_eq!(kind(&err), Some(StoreErrorKind::NotFound));
        assert_eq!(s.list_events(&a.id, 0, 100).await.unwrap().len(), 3);
        assert_eq!(s.list_events(&b.id, 0, 100).await.unwrap().len(), 1);
        assert!(
            s.list_node_runs(&a.id)
                .await
                .unwrap()
                .iter()
                .all(|r| r.node_id != "ok")
        );
        let a_now = s.get_execution(&a.id).await.unwrap().unwrap();
        assert_eq!((a_now.last_event_seq, a_now.step_count), (3, 2));
        assert_eq!(s.list_checkpoints(&a.id).await.unwrap().len(), 2);
    }

    pub async fn finish_execution_writes_the_last_steps_with_the_end(s: Arc<dyn Store>) {
        let run = running_execution(&s, "alice").await;
        s.commit_step(&step(&run.id, "first", 1)).await.unwrap();
        let other = running_execution(&s, "alice").await;

        // A step of another execution, or one the database refuses (attempt 0 breaks a
        // CHECK constraint after its events were inserted): nothing of the call is written.
        let err = s
            .finish_execution(
                &run.id,
                &[step(&run.id, "second", 2), step(&other.id, "elsewhere", 1)],
                outcome(ExecutionStatus::Completed),
            )
            .await
            .unwrap_err();
        assert_eq!(kind(&err), Some(StoreErrorKind::InvalidInput), "{err}");
        let mut bad = step(&run.id, "third", 1);
        bad.node_run.attempt = 0;
        let err = s
            .finish_execution(
                &run.id,
                &[step(&run.id, "second", 2), bad],
                outcome(ExecutionStatus::Completed),
            )
            .await
            .unwrap_err();
        assert_eq!(kind(&err), Some(StoreErrorKind::InvalidInput), "{err}");
        // An end the store refuses keeps the steps out too.
        let mut negative = outcome(ExecutionStatus::Completed);
        negative.prompt_tokens = -1;
        let err = s
            .finish_execution(&run.id, &[step(&run.id, "second", 2)], negative)
            .await
            .unwrap_err();
        assert_eq!(kind(&err), Some(StoreErrorKind::InvalidInput), "{err}");
        let unchanged = s.get_execution(&run.id).await.unwrap().unwrap();
        assert_eq!(unchanged.status, ExecutionStatus::Running);
        assert_eq!((unchanged.last_event_seq, unchanged.step_count), (1, 1));
        assert_eq!(s.list_node_runs(&run.id).await.unwrap().len(), 1);
        assert!(s.list_events(&other.id, 0, 100).await.unwrap().is_empty());

        // The steps, then the end: one call, the row as it was written.
        let ended = s
            .finish_execution(
                &run.id,
                &[step(&run.id, "second", 2), step(&run.id, "third", 1)],
                outcome(ExecutionStatus::Completed),
            )
            .await
            .unwrap();
        assert_eq!(ended.status, ExecutionStatus::Completed);
        assert_eq!((ended.last_event_seq, ended.step_count), (5, 3));
        assert_eq!(ended.response.as_deref(), Some("done"));
        assert_eq!(ended.lease_owner, None);
        assert_eq!(s.get_execution(&run.id).await.unwrap().unwrap(), ended);
        let events = s.list_events(&run.id, 0, 100).await.unwrap();
        let seqs: Vec<(i64, &str)> = events
            .iter()
            .map(|e| (e.seq, e.event_type.as_str()))
            .collect();
        assert_eq!(
            seqs,
            [
                (1, "token"),
                (2, "token"),
                (3, "token"),
                (4, "token"),
                (5, "execution_completed")
            ]
        );
        let nodes = support::node_steps(&s, &run.id).await;
        assert_eq!(
            nodes,
            [
                ("first".to_owned(), Some(1)),
                ("second".to_owned(), Some(2)),
                ("third".to_owned(), Some(3))
            ]
        );
        assert_eq!(s.list_checkpoints(&run.id).await.unwrap().len(), 3);

        // An ended execution takes neither steps nor a second end.
        let err = s
            .finish_execution(
                &run.id,
                &[step(&run.id, "late", 1)],
                outcome(ExecutionStatus::Completed),
            )
            .await
            .unwrap_err();
        assert_eq!(kind(&err), Some(StoreErrorKind::Conflict), "{err}");
        assert_eq!(s.list_events(&run.id, 0, 100).await.unwrap().len(), 5);
        assert_eq!(s.list_node_runs(&run.id).await.unwrap().len(), 3);

        // With no steps it is `complete_execution`.
        let ended = s
            .finish_execution(&other.id, &[], outcome(ExecutionStatus::Failed))
            .await
            .unwrap();
        assert_eq!(ended.status, ExecutionStatus::Failed);
        assert_eq!(ended.error.as_deref(), Some("model timed out"));
        assert_eq!(ended.last_event_seq, 1);
    }

    pub async fn commit_steps_with_intent_writes_both_or_neither(s: Arc<dyn Store>) {
        let run = running_execution(&s, "alice").await;
        let mut intent = NodeRunRecord::started(&run.id, "pay", 0, 1, 2_000);
        intent.idempotency_key = Some(format!("{}:pay:0:1", run.id));

        // An intent the store refuses (an unknown execution, an empty node id) keeps the
        // steps out, and a step the database refuses keeps the intent out.
        let mut stray = intent.clone();
        stray.execution_id = "01JNOSUCHEXECUTION00000000".into();
        let err = s
            .commit_steps_with_intent(&[step(&run.id, "first", 2)], &stray)
            .await
            .unwrap_err();
        assert_eq!(kind(&err), Some(StoreErrorKind::NotFound), "{err}");
        let mut unnamed = intent.clone();
        unnamed.node_id = String::new();
        let err = s
            .commit_steps_with_intent(&[step(&run.id, "first", 2)], &unnamed)
            .await
            .unwrap_err();
        assert_eq!(kind(&err), Some(StoreErrorKind::InvalidInput), "{err}");
        let mut bad = step(&run.id, "first", 2);
        bad.node_run.attempt = 0;
        let err = s
            .commit_steps_with_intent(&[bad], &intent)
            .await
            .unwrap_err();
        assert_eq!(kind(&err), Some(StoreErrorKind::InvalidInput), "{err}");
        let unchanged = s.get_execution(&run.id).await.unwrap().unwrap();
        assert_eq!((unchanged.last_event_seq, unchanged.step_count), (0, 0));
        assert!(s.list_node_runs(&run.id).await.unwrap().is_empty());
        assert!(s.list_events(&run.id, 0, 100).await.unwrap().is_empty());

        // Both in one call: the steps numbered as `commit_steps` numbers them, the intent a
        // running node run with its key and no step.
        let receipts = s
            .commit_steps_with_intent(
                &[step(&run.id, "first", 2), step(&run.id, "second", 1)],
                &intent,
            )
            .await
            .unwrap();
        let numbered: Vec<(i64, i64, i64)> = receipts
            .iter()
            .map(|r| (r.step, r.first_seq, r.last_seq))
            .collect();
        assert_eq!(numbered, [(1, 1, 2), (2, 3, 3)]);
        let runs = s.list_node_runs(&run.id).await.unwrap();
        let pay = runs.iter().find(|r| r.node_id == "pay").unwrap();
        assert_eq!(pay.status, NodeRunStatus::Running);
        assert_eq!(pay.step, None);
        assert_eq!(pay.idempotency_key, intent.idempotency_key);
        assert_eq!(
            support::node_steps(&s, &run.id).await,
            [
                ("first".to_owned(), Some(1)),
                ("second".to_owned(), Some(2)),
                ("pay".to_owned(), None)
            ]
        );
        // With no steps it is `record_intent`; an ended execution takes neither.
        let mut next = NodeRunRecord::started(&run.id, "ship", 0, 1, 3_000);
        next.idempotency_key = Some(format!("{}:ship:0:1", run.id));
        assert!(
            s.commit_steps_with_intent(&[], &next)
                .await
                .unwrap()
                .is_empty()
        );
        assert_eq!(s.list_node_runs(&run.id).await.unwrap().len(), 4);
        s.complete_execution(&run.id, outcome(ExecutionStatus::Completed))
            .await
            .unwrap();
        let err = s
            .commit_steps_with_intent(&[step(&run.id, "late", 1)], &intent)
            .await
            .unwrap_err();
        assert_eq!(kind(&err), Some(StoreErrorKind::Conflict), "{err}");
        assert_eq!(s.list_node_runs(&run.id).await.unwrap().len(), 4);
    }

    pub async fn start_with_steps_writes_the_row_with_its_first_steps(s: Arc<dyn Store>) {
        let start = |id: &str| {
            let mut new =
                NewExecution::new("alice", ExecutionKind::Adhoc, json!({"message": "hi"}));
            new.id = Some(id.to_owned());
            ExecutionStart {
                new,
                lease_owner: "w1".into(),
                lease_until: 9_000,
                at: 1_000,
            }
        };
        let mut intent = NodeRunRecord::started("exec-a", "pay", 0, 1, 1_500);
        intent.idempotency_key = Some("exec-a:pay:0:1".into());

        // A step the database refuses, a step or an intent of another execution, a start
        // without an id: nothing is written, not even the row.
        let mut bad = step("exec-a", "second", 1);
        bad.node_run.attempt = 0;
        let mut stray = intent.clone();
        stray.execution_id = "exec-b".into();
        let mut anonymous = start("exec-a");
        anonymous.new.id = None;
        let refused = [
            s.start_with_steps(&start("exec-a"), &[step("exec-a", "first", 2), bad], None)
                .await,
            s.start_with_steps(&start("exec-a"), &[step("exec-b", "first", 2)], None)
                .await,
            s.start_with_steps(&start("exec-a"), &[], Some(&stray))
                .await,
            s.start_with_steps(&anonymous, &[], None).await,
        ];
        for err in refused {
            let err = err.unwrap_err();
            assert_eq!(kind(&err), Some(StoreErrorKind::InvalidInput), "{err}");
        }
        assert_eq!(s.get_execution("exec-a").await.unwrap(), None);
        assert!(s.list_events("exec-a", 0, 100).await.unwrap().is_empty());

        // The row, two steps and an intent in one call: numbered as `commit_steps` numbers
        // them, the row running under its lease with its counters past them.
        let receipts = s
            .start_with_steps(
                &start("exec-a"),
                &[step("exec-a", "first", 2), step("exec-a", "second", 1)],
                Some(&intent),
            )
            .await
            .unwrap();
        let numbered: Vec<(i64, i64, i64)> = receipts
            .iter()
            .map(|r| (r.step, r.first_seq, r.last_seq))
            .collect();
        assert_eq!(numbered, [(1, 1, 2), (2, 3, 3)]);
        let row = s.get_execution("exec-a").await.unwrap().unwrap();
        assert_eq!(row.status, ExecutionStatus::Running);
        assert_eq!(
            (
                row.lease_owner.as_deref(),
                row.lease_expires_at,
                row.started_at
            ),
            (Some("w1"), Some(9_000), Some(1_000))
        );
        assert_eq!((row.last_event_seq, row.step_count), (3, 2));
        assert_eq!(
            support::node_steps(&s, "exec-a").await,
            [
                ("first".to_owned(), Some(1)),
                ("second".to_owned(), Some(2)),
                ("pay".to_owned(), None)
            ]
        );
        // The next commit goes on from there; the same id again is a conflict.
        let next = s.commit_step(&step("exec-a", "third", 1)).await.unwrap();
        assert_eq!((next.step, next.first_seq), (3, 4));
        let err = s
            .start_with_steps(&start("exec-a"), &[step("exec-a", "again", 1)], None)
            .await
            .unwrap_err();
        assert_eq!(kind(&err), Some(StoreErrorKind::Conflict), "{err}");
        assert_eq!(s.list_events("exec-a", 0, 100).await.unwrap().len(), 4);

        // `start_and_finish`: the row, its steps and its end in one write; an end the store
        // refuses keeps the row out.
        let mut negative = outcome(ExecutionStatus::Completed);
        negative.prompt_tokens = -1;
        let err = s
            .start_and_finish(&start("exec-b"), &[step("exec-b", "only", 2)], negative)
            .await
            .unwrap_err();
        assert_eq!(kind(&err), Some(StoreErrorKind::InvalidInput), "{err}");
        assert_eq!(s.get_execution("exec-b").await.unwrap(), None);
        let ended = s
            .start_and_finish(
                &start("exec-b"),
                &[step("exec-b", "only", 2)],
                outcome(ExecutionStatus::Completed),
            )
            .await
            .unwrap();
        assert_eq!(ended.status, ExecutionStatus::Completed);
        assert_eq!((ended.last_event_seq, ended.step_count), (3, 1));
        assert_eq!(ended.lease_owner, None);
        assert_eq!(s.get_execution("exec-b").await.unwrap(), Some(ended));
    }

    pub async fn failed_transaction_leaves_nothing(s: Arc<dyn Store>) {
        let run = running_execution(&s, "alice").await;
        s.commit_step(&step(&run.id, "first", 1)).await.unwrap();
        // attempt 0 violates a CHECK constraint after the events were inserted: all rolled back.
        let mut bad = step(&run.id, "second", 4);
        bad.node_run.attempt = 0;
        bad.snapshot = Some(json!({"big": "state"}));
        let err = s.commit_step(&bad).await.unwrap_err();
        assert_eq!(kind(&err), Some(StoreErrorKind::InvalidInput), "{err}");
        assert_eq!(s.list_events(&run.id, 0, 100).await.unwrap().len(), 1);
        assert_eq!(s.list_node_runs(&run.id).await.unwrap().len(), 1);
        assert_eq!(s.list_checkpoints(&run.id).await.unwrap().len(), 1);
        let record = s.get_execution(&run.id).await.unwrap().unwrap();
        assert_eq!((record.last_event_seq, record.step_count), (1, 1));
        // The next step continues the sequence without a gap.
        let next = s.commit_step(&step(&run.id, "second", 1)).await.unwrap();
        assert_eq!(
            next,
            StepReceipt {
                step: 2,
                first_seq: 2,
                last_seq: 2
            }
        );

        // Completion with a bad event (empty type) is refused before anything is written.
        let mut done = outcome(ExecutionStatus::Completed);
        done.events.push(NewEvent::new(1, "", json!({})));
        assert_eq!(
            kind(&s.complete_execution(&run.id, done).await.unwrap_err()),
            Some(StoreErrorKind::InvalidInput)
        );
        assert_eq!(
            s.get_execution(&run.id).await.unwrap().unwrap().status,
            ExecutionStatus::Running
        );
    }

    pub async fn concurrent_writers_keep_sequences_contiguous(s: Arc<dyn Store>) {
        let run = running_execution(&s, "alice").await;
        let mut tasks = Vec::new();
        for writer in 0..8 {
            let s = Arc::clone(&s);
            let id = run.id.clone();
            tasks.push(tokio::spawn(async move {
                for i in 0..10 {
                    if i % 2 == 0 {
                        let mut st = step(&id, &format!("w{writer}"), 2);
                        st.node_run.iteration = i;
                        s.commit_step(&st).await.unwrap();
                    } else {
                        s.append_events(&id, &[NewEvent::new(i, "token", json!({"w": writer}))])
                            .await
                            .unwrap();
                    }
                }
                // Independent executions written at the same time.
                let own = s
                    .create_execution(NewExecution::new(
                        format!("u{writer}"),
                        ExecutionKind::Chat,
                        json!({}),
                    ))
                    .await
                    .unwrap();
                s.append_events(&own.id, &[NewEvent::new(0, "execution_started", json!({}))])
                    .await
                    .unwrap();
            }));
        }
        for task in tasks {
            task.await.unwrap();
        }
        let events = s.list_events(&run.id, 0, 1000).await.unwrap();
        let seqs: Vec<_> = events.iter().map(|e| e.seq).collect();
        assert_eq!(
            seqs,
            (1..=120).collect::<Vec<_>>(),
            "8 writers x (5 steps x 2 + 5 x 1) events"
        );
        let record = s.get_execution(&run.id).await.unwrap().unwrap();
        assert_eq!((record.last_event_seq, record.step_count), (120, 40));
        assert_eq!(s.list_node_runs(&run.id).await.unwrap().len(), 40);
        let all = s
            .list_executions(&ExecutionFilter::default(), Page::default())
            .await
            .unwrap();
        assert_eq!(all.len(), 9);
    }

    pub async fn concurrent_failures_leave_other_commits_intact(s: Arc<dyn Store>) {
        let run = running_execution(&s, "alice").await;
        let mut tasks = Vec::new();
        for i in 0..24_i64 {
            let s = Arc::clone(&s);
            let id = run.id.clone();
            tasks.push(tokio::spawn(async move {
                let mut st = step(&id, &format!("n{i}"), 2);
                match i % 3 {
                    0 => st.node_run.attempt = 0, // CHECK violation after the events went in
                    1 => st.node_run.execution_id = "missing".into(),
                    _ => {}
                }
                (i % 3, s.commit_step(&st).await)
            }));
        }
        for task in tasks {
            let (case, result) = task.await.unwrap();
            match case {
                0 => assert_eq!(
                    kind(&result.unwrap_err()),
                    Some(StoreErrorKind::InvalidInput)
                ),
                1 => assert_eq!(kind(&result.unwrap_err()), Some(StoreErrorKind::NotFound)),
                _ => {
                    let receipt = result.unwrap();
                    assert_eq!(receipt.last_seq - receipt.first_seq, 1);
                }
            }
        }
        let seqs: Vec<_> = s
            .list_events(&run.id, 0, 1000)
            .await
            .unwrap()
            .into_iter()
            .map(|e| e.seq)
            .collect();
        assert_eq!(
            seqs,
            (1..=16).collect::<Vec<_>>(),
            "8 good steps x 2 events, no gap"
        );
        let runs = s.list_node_runs(&run.id).await.unwrap();
        assert_eq!(runs.len(), 8);
        assert!(runs.iter().all(|r| r.attempt == 1));
        assert_eq!(s.list_checkpoints(&run.id).await.unwrap().len(), 8);
        let record = s.get_execution(&run.id).await.unwrap().unwrap();
        assert_eq!((record.last_event_seq, record.step_count), (16, 8));
    }

    /// 24 executions committing 30 steps each at the same time, on as many tasks: every step
    /// lands once, in order, whichever caller ends up committing it (on SQLite, callers that
    /// find the write connection busy are committed in a group by whoever holds it). A step
    /// left behind in a queue would hang here, so the whole case has a deadline.
    pub async fn many_concurrent_executions_commit_every_step(s: Arc<dyn Store>) {
        const EXECUTIONS: usize = 24;
        const STEPS: i64 = 30;
        let mut ids = Vec::new();
        for _ in 0..EXECUTIONS {
            ids.push(running_execution(&s, "alice").await.id);
        }
        let mut tasks = Vec::new();
        for id in ids.clone() {
            let s = Arc::clone(&s);
            tasks.push(tokio::spawn(async move {
                let mut seqs = Vec::new();
                for i in 0..STEPS {
                    let mut st = step(&id, &format!("n{i}"), 1 + (i as usize % 3));
                    st.node_run.iteration = i;
                    let receipt = s.commit_step(&st).await.unwrap();
                    seqs.push((receipt.step, receipt.first_seq, receipt.last_seq));
                }
                seqs
            }));
        }
        let all = tokio::time::timeout(std::time::Duration::from_secs(120), async {
            let mut all = Vec::new();
            for task in tasks {
                all.push(task.await.unwrap());
            }
            all
        })
        .await
        .expect("every concurrent step commit is answered");
        let events_per_run: i64 = (0..STEPS).map(|i| 1 + i % 3).sum();
        for (id, seqs) in ids.iter().zip(all) {
            // Steps numbered 1..=30 and event sequences contiguous, in the order committed.
            let mut next_seq = 1;
            for (i, (step, first, last)) in seqs.into_iter().enumerate() {
                assert_eq!(step, i as i64 + 1);
                assert_eq!(first, next_seq);
                assert_eq!(last - first, i as i64 % 3);
                next_seq = last + 1;
            }
            let record = s.get_execution(id).await.unwrap().unwrap();
            assert_eq!(
                (record.step_count, record.last_event_seq),
                (STEPS, events_per_run)
            );
            let seqs: Vec<_> = s
                .list_events(id, 0, 1000)
                .await
                .unwrap()
                .into_iter()
                .map(|e| e.seq)
                .collect();
            assert_eq!(seqs, (1..=events_per_run).collect::<Vec<_>>());
            assert_eq!(s.list_node_runs(id).await.unwrap().len(), STEPS as usize);
        }
    }

    pub async fn events_paging_and_append(s: Arc<dyn Store>) {
        let run = running_execution(&s, "alice").await;
        let events: Vec<_> = (0..7)
            .map(|i| NewEvent::new(i, format!("e{i}"), json!(i)))
            .collect();
        assert_eq!(
            s.append_events(&run.id, &events).await.unwrap(),
            [1, 2, 3, 4, 5, 6, 7]
        );
        assert!(s.append_events(&run.id, &[]).await.unwrap().is_empty());
        let page: Vec<_> = s
            .list_events(&run.id, 2, 3)
            .await
            .unwrap()
            .into_iter()
            .map(|e| (e.seq, e.event_type))
            .collect();
        assert_eq!(
            page,
            [
                (3, "e2".to_owned()),
                (4, "e3".to_owned()),
                (5, "e4".to_owned())
            ]
        );
        assert!(s.list_events(&run.id, 7, 10).await.unwrap().is_empty());
        assert_eq!(
            s.list_events(&run.id, 0, 100).await.unwrap()[6].payload,
            json!(6)
        );
        let missing = s.append_events("nope", &events).await.unwrap_err();
        assert_eq!(kind(&missing), Some(StoreErrorKind::NotFound));
    }

    pub async fn conversations_and_messages(s: Arc<dyn Store>) {
        let conv = s
            .create_conversation(NewConversation {
                user_id: "alice".into(),
                title: Some("Hi".into()),
                ..Default::default()
            })
            .await
            .unwrap();
        assert_eq!(
            (conv.status, conv.metadata.clone(), conv.message_count),
            (ConversationStatus::Active, json!({}), 0)
        );
        let other = s
            .create_conversation(NewConversation {
                user_id: "alice".into(),
                ..Default::default()
            })
            .await
            .unwrap();
        s.create_conversation(NewConversation {
            user_id: "bob".into(),
            ..Default::default()
        })
        .await
        .unwrap();

        for (i, role) in [
            MessageRole::System,
            MessageRole::User,
            MessageRole::Assistant,
            MessageRole::Tool,
        ]
        .into_iter()
        .enumerate()
        {
            let mut m = NewMessage::new(&conv.id, role, format!("m{i}"));
            if role == MessageRole::Tool {
                m.metadata = json!({"tool_call_id": "c1", "name": "search"});
            }
            m.token_count = Some(i as i64);
            let stored = s.add_message(m).await.unwrap();
            assert_eq!(stored.seq, i as i64 + 1);
        }
        let messages = s.list_messages(&conv.id, Page::default()).await.unwrap();
        let texts: Vec<_> = messages.iter().map(|m| m.content.as_str()).collect();
        assert_eq!(texts, ["m0", "m1", "m2", "m3"]);
        assert_eq!(
            messages[3].metadata,
            json!({"tool_call_id": "c1", "name": "search"})
        );
        assert_eq!(messages[0].metadata, json!({}));
        let page: Vec<_> = s
            .list_messages(&conv.id, Page::new(2, 1))
            .await
            .unwrap()
            .into_iter()
            .map(|m| m.seq)
            .collect();
        assert_eq!(page, [2, 3]);
        assert_eq!(
            s.get_conversation(&conv.id)
                .await
                .unwrap()
                .unwrap()
                .message_count,
            4
        );

        let missing = s
            .add_message(NewMessage::new("nope", MessageRole::User, "x"))
            .await
            .unwrap_err();
        assert_eq!(
            missing.to_string(),
            "storage error (not_found): conversation `nope` not found"
        );

        let listed: Vec<_> = s
            .list_conversations("alice", None, Page::default())
            .await
            .unwrap()
            .into_iter()
            .map(|c| c.id)
            .collect();
        assert_eq!(listed, [other.id.clone(), conv.id.clone()]);
        let archived = s
            .update_conversation(
                &conv.id,
                ConversationUpdate {
                    status: Some(ConversationStatus::Archived),
                    title: Some(None),
                    ..Default::default()
                },
            )
            .await
            .unwrap();
        assert_eq!(
            (archived.status, archived.title),
            (ConversationStatus::Archived, None)
        );
        let active: Vec<_> = s
            .list_conversations("alice", Some(ConversationStatus::Active), Page::default())
            .await
            .unwrap()
            .into_iter()
            .map(|c| c.id)
            .collect();
        assert_eq!(active, vec![other.id.clone()]);
        assert_eq!(
            kind(
                &s.update_conversation("nope", ConversationUpdate::default())
                    .await
                    .unwrap_err()
            ),
            Some(StoreErrorKind::NotFound)
        );

        // An execution in a thread; deleting the conversation keeps it and drops the messages.
        let mut new = NewExecution::new("alice", ExecutionKind::Chat, json!({}));
        new.conversation_id = Some(conv.id.clone());
        let run = s.create_execution(new).await.unwrap();
        let in_thread = ExecutionFilter {
            conversation_id: Some(conv.id.clone()),
            ..Default::default()
        };
        assert_eq!(
            s.list_executions(&in_thread, Page::default())
                .await
                .unwrap()
                .len(),
            1
        );
        assert!(s.delete_conversation(&conv.id).await.unwrap());
        assert!(
            s.list_messages(&conv.id, Page::default())
                .await
                .unwrap()
                .is_empty()
        );
        assert_eq!(
            s.get_execution(&run.id)
                .await
                .unwrap()
                .unwrap()
                .conversation_id,
            None
        );
        assert!(!s.delete_conversation(&conv.id).await.unwrap());
    }

    fn doc(owner: &str, title: &str, text: &str) -> NewDocument {
        NewDocument {
            owner_id: owner.into(),
            title: title.into(),
            text: text.into(),
            metadata: json!({"lang": "en"}),
            chunking: ChunkingOptions {
                chunk_size: 60,
                overlap: 10,
            },
            ..Default::default()
        }
    }

    pub async fn documents_ingestion_and_search(s: Arc<dyn Store>) {
        let text = "Rust is a systems programming language. It guarantees memory safety without a garbage \
                    collector. Cargo is the Rust package manager and build tool.";
        let d = s.create_document(doc("alice", "Rust", text)).await.unwrap();
        assert_eq!(d.status, DocumentStatus::Ready);
        assert_eq!(d.char_count, text.chars().count() as i64);
        let chunks = s.list_chunks(&d.id).await.unwrap();
        assert_eq!(chunks.len() as i64, d.chunk_count);
        assert!(chunks.len() >= 3, "{chunks:?}");
        let expected = split_into_chunks(
            text,
            ChunkingOptions {
                chunk_size: 60,
                overlap: 10,
            },
        )
        .unwrap();
        let expected: Vec<_> = expected
            .iter()
            .map(|c| (c.index as i64, c.start as i64, c.content.clone()))
            .collect();
        let got: Vec<_> = chunks
            .iter()
            .map(|c| (c.chunk_index, c.start_offset, c.content.clone()))
            .collect();
        assert_eq!(got, expected);

        s.create_document(doc(
            "alice",
            "Python",
            "Python is a dynamic language with a garbage collector.",
        ))
        .await
        .unwrap();

        let hits = s
            .search_chunks(&SearchQuery {
                owner_id: "alice".into(),
                query: "garbage collector".into(),
                max_documents: 10,
                score_threshold: 0.0,
            })
            .await
            .unwrap();
        assert!(hits.len() >= 2, "{hits:?}");
        assert!(
            hits.iter()
                .all(|h| h.content.to_lowercase().contains("garbage")
                    || h.content.to_lowercase().contains("collector"))
        );
        assert!(hits.windows(2).all(|w| w[0].score >= w[1].score), "ranked");
        assert!(hits.iter().all(|h| h.score > 0.0 && h.score < 1.0));
        assert_eq!(hits[0].metadata, json!({"lang": "en"}));

        // Stemming / case-insensitivity: "Managers" finds "manager".
        let hits = s
            .search_chunks(&SearchQuery {
                owner_id: "alice".into(),
                query: "package Managers".into(),
                max_documents: 5,
                score_threshold: 0.0,
            })
            .await
            .unwrap();
        assert_eq!(hits[0].document_id, d.id);
        assert!(hits[0].content.contains("package manager"));

        let none = s
            .search_chunks(&SearchQuery {
                owner_id: "alice".into(),
                query: "  ;;  ".into(),
                max_documents: 5,
                score_threshold: 0.0,
            })
            .await
            .unwrap();
        assert!(none.is_empty());

        assert_eq!(
            s.list_documents("alice", None, Page::default())
                .await
                .unwrap()
                .len(),
            2
        );
        assert_eq!(
            s.list_documents("alice", Some(DocumentStatus::Failed), Page::default())
                .await
                .unwrap()
                .len(),
            0
        );
        let failed = s
            .set_document_status(&d.id, DocumentStatus::Failed)
            .await
            .unwrap();
        assert_eq!(failed.status, DocumentStatus::Failed);
        let hits = s
            .search_chunks(&SearchQuery {
                owner_id: "alice".into(),
                query: "cargo".into(),
                max_documents: 5,
                score_threshold: 0.0,
            })
            .await
            .unwrap();
        assert!(hits.is_empty(), "only ready documents are searched");
        assert!(s.delete_document(&d.id).await.unwrap());
        assert!(s.list_chunks(&d.id).await.unwrap().is_empty());
        assert_eq!(s.get_document(&d.id).await.unwrap(), None);
        assert!(!s.delete_document(&d.id).await.unwrap());
    }

    pub async fn search_scoping_threshold_and_limits(s: Arc<dyn Store>) {
        for i in 0..6 {
            let text = format!("{} kubernetes cluster notes {i}", "kubernetes ".repeat(i));
            let mut d = doc("alice", &format!("k{i}"), &text);
            d.chunking = ChunkingOptions {
                chunk_size: 1000,
                overlap: 0,
            };
            s.create_document(d).await.unwrap();
        }
        s.create_document(doc(
            "bob",
            "secret",
            "kubernetes kubernetes kubernetes secret",
        ))
        .await
        .unwrap();
        let q = |max: u32, threshold: f64| SearchQuery {
            owner_id: "alice".into(),
            query: "kubernetes".into(),
            max_documents: max,
            score_threshold: threshold,
        };
        let all = s.search_chunks(&q(100, 0.0)).await.unwrap();
        assert_eq!(all.len(), 6, "bob's document is not visible to alice");
        assert!(all.iter().all(|h| h.title != "secret"));
        let top = s.search_chunks(&q(2, 0.0)).await.unwrap();
        assert_eq!(top.len(), 2);
        assert_eq!(top, all[..2].to_vec());
        let median = all[3].score;
        let above = s.search_chunks(&q(100, median)).await.unwrap();
        assert!(above.iter().all(|h| h.score >= median));
        assert_eq!(
            above.len(),
            all.iter().filter(|h| h.score >= median).count()
        );
        assert!(s.search_chunks(&q(100, 1.0)).await.unwrap().is_empty());
        assert!(s.search_chunks(&q(0, 0.0)).await.unwrap().is_empty());
        let err = s.search_chunks(&q(5, 1.5)).await.unwrap_err();
        assert_eq!(
            err.to_string(),
            "storage error (invalid_input): score_threshold must be within 0..=1 (got 1.5)"
        );
        let bob = SearchQuery {
            owner_id: "bob".into(),
            ..q(10, 0.0)
        };
        assert_eq!(s.search_chunks(&bob).await.unwrap().len(), 1);
    }

    pub async fn preferences_upsert_with_versions(s: Arc<dyn Store>) {
        assert_eq!(s.get_preference("alice", "model").await.unwrap(), None);
        let v1 = s
            .upsert_preference("alice", "model", json!({"name": "a"}), Some(0))
            .await
            .unwrap();
        assert_eq!(v1.version, 1);
        let v2 = s
            .upsert_preference("alice", "model", json!({"name": "b"}), None)
            .await
            .unwrap();
        assert_eq!(
            (v2.version, v2.value.clone(), v2.created_at),
            (2, json!({"name": "b"}), v1.created_at)
        );
        let stale = s
            .upsert_preference("alice", "model", json!(1), Some(1))
            .await
            .unwrap_err();
        assert_eq!(
            stale.to_string(),
            "storage error (conflict): preference `model` of user `alice` is at version 2, not 1"
        );
        let v3 = s
            .upsert_preference("alice", "model", json!("c"), Some(2))
            .await
            .unwrap();
        assert_eq!(v3.version, 3);
        s.upsert_preference("alice", "memory", json!({"window": 10}), None)
            .await
            .unwrap();
        s.upsert_preference("bob", "model", json!("x"), None)
            .await
            .unwrap();
        let types: Vec<_> = s
            .list_preferences("alice")
            .await
            .unwrap()
            .into_iter()
            .map(|p| (p.preference_type, p.version))
            .collect();
        assert_eq!(types, [("memory".to_owned(), 1), ("model".to_owned(), 3)]);
        assert_eq!(
            s.get_preference("alice", "model")
                .await
                .unwrap()
                .unwrap()
                .value,
            json!("c")
        );
        assert!(s.delete_preference("alice", "model").await.unwrap());
        assert!(!s.delete_preference("alice", "model").await.unwrap());
        assert_eq!(
            s.get_preference("bob", "model")
                .await
                .unwrap()
                .unwrap()
                .version,
            1
        );
    }

    pub async fn audit_log_append_and_filter(s: Arc<dyn Store>) {
        let mut ids = Vec::new();
        for i in 0..5 {
            let entry = NewAuditEntry {
                ts: 1_000 + i,
                actor_id: Some(if i % 2 == 0 { "alice" } else { "bob" }.into()),
                action: "workflow.create".into(),
                resource_type: if i < 3 { "workflow" } else { "template" }.into(),
                resource_id: Some(format!("r{i}")),
                outcome: "success".into(),
                ip_address: Some("10.0.0.1".into()),
                details: json!({"i": i}),
            };
            ids.push(s.append_audit(entry).await.unwrap().id);
        }
        assert!(ids.windows(2).all(|w| w[0] < w[1]), "increasing ids");
        let all = s
            .list_audit(&AuditFilter::default(), Page::default())
            .await
            .unwrap();
        let got: Vec<_> = all.iter().map(|a| a.id).collect();
        assert_eq!(
            got,
            ids.iter().rev().copied().collect::<Vec<_>>(),
            "newest first"
        );
        assert_eq!(all[0].details, json!({"i": 4}));
        let alice = AuditFilter {
            actor_id: Some("alice".into()),
            ..Default::default()
        };
        assert_eq!(
            s.list_audit(&alice, Page::default()).await.unwrap().len(),
            3
        );
        let wf = AuditFilter {
            resource_type: Some("workflow".into()),
            since: Some(1_001),
            ..Default::default()
        };
        let found: Vec<_> = s
            .list_audit(&wf, Page::default())
            .await
            .unwrap()
            .into_iter()
            .map(|a| a.resource_id.unwrap())
            .collect();
        assert_eq!(found, ["r2", "r1"]);
        let one = AuditFilter {
            resource_id: Some("r3".into()),
            ..Default::default()
        };
        assert_eq!(s.list_audit(&one, Page::default()).await.unwrap().len(), 1);
        assert_eq!(
            s.list_audit(&AuditFilter::default(), Page::new(2, 1))
                .await
                .unwrap()[0]
                .id,
            ids[3]
        );
    }

    pub async fn jobs_priority_lease_retry(s: Arc<dyn Store>) {
        let low = s
            .enqueue_job(NewJob::new("q", "run", json!({"n": "low"}), 0))
            .await
            .unwrap();
        let mut high = NewJob::new("q", "run", json!({"n": "high"}), 0);
        high.priority = 10;
        high.max_attempts = 2;
        let high = s.enqueue_job(high).await.unwrap();
        let later = s
            .enqueue_job(NewJob::new("q", "run", json!({"n": "later"}), 5_000))
            .await
            .unwrap();
        s.enqueue_job(NewJob::new("other", "run", json!({}), 0))
            .await
            .unwrap();
        assert_eq!((low.status, low.attempts), (JobStatus::Queued, 0));

        let first = s.claim_job("q", "w1", 1_000, 100).await.unwrap().unwrap();
        assert_eq!(first.id, high.id, "highest priority first");
        assert_eq!(
            (
                first.status,
                first.attempts,
                first.lease_owner.as_deref(),
                first.lease_expires_at
            ),
            (JobStatus::Running, 1, Some("w1"), Some(1_100))
        );
        let second = s.claim_job("q", "w2", 1_000, 100).await.unwrap().unwrap();
        assert_eq!(second.id, low.id);
        assert_eq!(
            s.claim_job("q", "w3", 1_000, 100).await.unwrap(),
            None,
            "later job not due"
        );

        let err = s.renew_lease(&high.id, "w2", 1_000, 200).await.unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "storage error (conflict): job `{}` is not held by worker `w2`",
                high.id
            )
        );
        assert_eq!(
            s.renew_lease(&high.id, "w1", 1_000, 200)
                .await
                .unwrap()
                .lease_expires_at,
            Some(1_200)
        );
        assert_eq!(
            kind(&s.renew_lease("nope", "w1", 1_000, 200).await.unwrap_err()),
            Some(StoreErrorKind::NotFound)
        );

        // w1's lease expires: another worker takes the job over (attempt 2 of 2).
        let taken = s.claim_job("q", "w9", 1_000, 1_300).await.unwrap().unwrap();
        assert_eq!(
            (
                taken.id.clone(),
                taken.attempts,
                taken.lease_owner.as_deref()
            ),
            (high.id.clone(), 2, Some("w9"))
        );
        assert_eq!(
            kind(
                &s.complete_job(&high.id, "w1", json!({}), 1_301)
                    .await
                    .unwrap_err()
            ),
            Some(StoreErrorKind::Conflict)
        );
        // Failing the last attempt fails the job even with a retry time.
        let failed = s
            .fail_job(&high.id, "w9", "boom", Some(2_000), 1_400)
            .await
            .unwrap();
        assert_eq!(
            (
                failed.status,
                failed.last_error.as_deref(),
                failed.lease_owner
            ),
            (JobStatus::Failed, Some("boom"), None)
        );

        // A failure with attempts left is re-queued at retry_at.
        let requeued = s
            .fail_job(&low.id, "w2", "flaky", Some(3_000), 1_500)
            .await
            .unwrap();
        assert_eq!(
            (requeued.status, requeued.run_at),
            (JobStatus::Queued, 3_000)
        );
        assert_eq!(s.claim_job("q", "w2", 1_000, 2_999).await.unwrap(), None);
        let retried = s.claim_job("q", "w2", 1_000, 3_000).await.unwrap().unwrap();
        assert_eq!((retried.id.clone(), retried.attempts), (low.id.clone(), 2));
        let done = s
            .complete_job(&low.id, "w2", json!({"ok": true}), 3_100)
            .await
            .unwrap();
        assert_eq!(
            (done.status, done.result),
            (JobStatus::Completed, Some(json!({"ok": true})))
        );

        let next = s.claim_job("q", "w2", 1_000, 6_000).await.unwrap().unwrap();
        assert_eq!(next.id, later.id);
        assert_eq!(
            s.get_job(&later.id).await.unwrap().unwrap().status,
            JobStatus::Running
        );
        let all: Vec<_> = s
            .list_jobs(&JobFilter::queue("q"), Page::default())
            .await
            .unwrap()
            .into_iter()
            .map(|j| j.id)
            .collect();
        assert_eq!(all, [low.id.clone(), high.id.clone(), later.id.clone()]);
        assert_eq!(
            s.list_jobs(
                &JobFilter {
                    status: Some(JobStatus::Failed),
                    ..JobFilter::queue("q")
                },
                Page::default()
            )
            .await
            .unwrap()
            .len(),
            1
        );
        assert_eq!(s.get_job("nope").await.unwrap(), None);
    }

    pub async fn concurrent_claimers_get_distinct_jobs(s: Arc<dyn Store>) {
        for i in 0..20 {
            s.enqueue_job(NewJob::new("q", "run", json!({"i": i}), 0))
                .await
                .unwrap();
        }
        let mut tasks = Vec::new();
        for w in 0..5 {
            let s = Arc::clone(&s);
            tasks.push(tokio::spawn(async move {
                let mut got = Vec::new();
                while let Some(job) = s
                    .claim_job("q", &format!("w{w}"), 60_000, 10)
                    .await
                    .unwrap()
                {
                    got.push(job.id);
                }
                got
            }));
        }
        let mut all = Vec::new();
        for t in tasks {
            all.extend(t.await.unwrap());
        }
        all.sort();
        let before = all.len();
        all.dedup();
        assert_eq!((before, all.len()), (20, 20));
    }

    pub async fn jobs_cancel_owner_filters_and_stats(s: Arc<dyn Store>) {
        let job = |owner: &str, priority: i32| {
            let mut new = NewJob::new("q", "run", json!({"owner": owner}), 0);
            new.owner_id = Some(owner.into());
            new.priority = priority;
            new.timeout_ms = Some(5_000);
            new.execution_id = Some(format!("exec-{owner}-{priority}"));
            new
        };
        let a1 = s.enqueue_job(job("alice", 1)).await.unwrap();
        let a4 = s.enqueue_job(job("alice", 4)).await.unwrap();
        let b2 = s.enqueue_job(job("bob", 2)).await.unwrap();
        assert_eq!(
            (
                a1.owner_id.as_deref(),
                a1.timeout_ms,
                a1.execution_id.as_deref(),
                a1.started_at,
                a1.finished_at
            ),
            (Some("alice"), Some(5_000), Some("exec-alice-1"), None, None)
        );

        // Critical first; the claim stamps `started_at`.
        let running = s.claim_job("q", "w1", 1_000, 100).await.unwrap().unwrap();
        assert_eq!(
            (running.id.clone(), running.started_at),
            (a4.id.clone(), Some(100))
        );
        let moved = s
            .set_job_execution(&a4.id, "w1", "exec-retry", 150)
            .await
            .unwrap();
        assert_eq!(moved.execution_id.as_deref(), Some("exec-retry"));
        assert_eq!(
            kind(
                &s.set_job_execution(&a4.id, "w2", "x", 150)
                    .await
                    .unwrap_err()
            ),
            Some(StoreErrorKind::Conflict)
        );

        // Cancel: a queued job at once; a running one loses its lease, so its worker's next
        // renewal (or completion) is refused.
        let cancelled = s.cancel_job(&a1.id, 200).await.unwrap();
        assert_eq!(
            (cancelled.status, cancelled.finished_at),
            (JobStatus::Cancelled, Some(200))
        );
        let cancelled = s.cancel_job(&a4.id, 210).await.unwrap();
        assert_eq!(
            (cancelled.status, cancelled.lease_owner.clone()),
            (JobStatus::Cancelled, None)
        );
        assert_eq!(
            kind(&s.renew_lease(&a4.id, "w1", 1_000, 220).await.unwrap_err()),
            Some(StoreErrorKind::Conflict)
        );
        assert_eq!(
            kind(
                &s.complete_job(&a4.id, "w1", json!({}), 230)
                    .await
                    .unwrap_err()
            ),
            Some(StoreErrorKind::Conflict)
        );
        let again = s.cancel_job(&a4.id, 240).await.unwrap_err();
        assert_eq!(
            again.to_string(),
            format!(
                "storage error (conflict): job `{}` has already ended (cancelled)",
                a4.id
            )
        );
        assert_eq!(
            kind(&s.cancel_job("nope", 240).await.unwrap_err()),
            Some(StoreErrorKind::NotFound)
        );
        // A cancelled job is never claimed: bob's is next.
        let next = s.claim_job("q", "w1", 1_000, 300).await.unwrap().unwrap();
        assert_eq!(next.id, b2.id);
        assert_eq!(s.claim_job("q", "w1", 1_000, 300).await.unwrap(), None);

        let alices = s
            .list_jobs(
                &JobFilter {
                    owner_id: Some("alice".into()),
                    ..JobFilter::queue("q")
                },
                Page::default(),
            )
            .await
            .unwrap();
        assert_eq!(
            alices.iter().map(|j| j.id.clone()).collect::<Vec<_>>(),
            [a1.id.clone(), a4.id.clone()]
        );
        let critical = s
            .list_jobs(
                &JobFilter {
                    priority: Some(4),
                    status: Some(JobStatus::Cancelled),
                    ..JobFilter::queue("q")
                },
                Page::default(),
            )
            .await
            .unwrap();
        assert_eq!(critical.len(), 1);
        assert_eq!(critical[0].id, a4.id);

        let all = s.job_stats("q", None).await.unwrap();
        assert_eq!(
            all.counts,
            [
                JobCount {
                    status: JobStatus::Cancelled,
                    priority: 1,
                    count: 1
                },
                JobCount {
                    status: JobStatus::Cancelled,
                    priority: 4,
                    count: 1
                },
                JobCount {
                    status: JobStatus::Running,
                    priority: 2,
                    count: 1
                },
            ]
        );
        assert_eq!(
            (
                all.total(),
                all.with_status(JobStatus::Cancelled),
                all.with_priority(2)
            ),
            (3, 2, 1)
        );
        let bobs = s.job_stats("q", Some("bob")).await.unwrap();
        assert_eq!((bobs.total(), bobs.with_status(JobStatus::Running)), (1, 1));
        assert_eq!(s.job_stats("other", None).await.unwrap().total(), 0);

        // Bad input is refused before anything is written.
        let mut bad = NewJob::new("q", "run", json!({}), 0);
        bad.timeout_ms = Some(0);
        assert_eq!(
            kind(&s.enqueue_job(bad).await.unwrap_err()),
            Some(StoreErrorKind::InvalidInput)
        );
        let mut bad = NewJob::new("q", "run", json!({}), 0);
        bad.batch_concurrency = Some(2);
        assert_eq!(
            kind(&s.enqueue_job(bad).await.unwrap_err()),
            Some(StoreErrorKind::InvalidInput)
        );
        assert_eq!(s.job_stats("q", None).await.unwrap().total(), 3);

        // Several at once: all or none.
        let mut twins = vec![
            NewJob::new("q", "run", json!({"twin": 1}), 0),
            NewJob::new("q", "run", json!({"twin": 2}), 0),
        ];
        twins[0].id = Some("01JTWIN0000000000000000000".into());
        twins[1].id = Some("01JTWIN0000000000000000000".into());
        assert!(s.enqueue_jobs(twins).await.is_err());
        let mut bad = vec![NewJob::new("q", "run", json!({}), 0); 2];
        bad[1].max_attempts = 0;
        assert_eq!(
            kind(&s.enqueue_jobs(bad).await.unwrap_err()),
            Some(StoreErrorKind::InvalidInput)
        );
        assert_eq!(s.job_stats("q", None).await.unwrap().total(), 3);
        let pair = s
            .enqueue_jobs(vec![NewJob::new("q", "run", json!({"n": 1}), 0); 2])
            .await
            .unwrap();
        assert_eq!(pair.len(), 2);
        assert_ne!(pair[0].id, pair[1].id);
        assert_eq!(s.job_stats("q", None).await.unwrap().total(), 5);
    }

    pub async fn jobs_batch_concurrency_cap(s: Arc<dyn Store>) {
        for i in 0..6 {
            let mut new = NewJob::new("q", "run", json!({"i": i}), 0);
            new.batch_id = Some("batch-1".into());
            new.batch_concurrency = Some(2);
            s.enqueue_job(new).await.unwrap();
        }
        let free = s
            .enqueue_job(NewJob::new("q", "run", json!({"free": true}), 0))
            .await
            .unwrap();
        // Five claimers at once: only two jobs of the batch (and the free job) are handed out.
        let mut tasks = Vec::new();
        for w in 0..5 {
            let s = Arc::clone(&s);
            tasks.push(tokio::spawn(async move {
                let mut got = Vec::new();
                for _ in 0..3 {
                    if let Some(job) = s
                        .claim_job("q", &format!("w{w}"), 60_000, 10)
                        .await
                        .unwrap()
                    {
                        got.push(job);
                    }
                }
                got
            }));
        }
        let mut claimed = Vec::new();
        for t in tasks {
            claimed.extend(t.await.unwrap());
        }
        let batch: Vec<_> = claimed
            .iter()
            .filter(|j| j.batch_id.is_some())
            .cloned()
            .collect();
        assert_eq!(batch.len(), 2, "{claimed:?}");
        assert!(claimed.iter().any(|j| j.id == free.id));
        // A finished one frees its slot for exactly one more.
        s.complete_job(
            &batch[0].id,
            batch[0].lease_owner.as_deref().unwrap(),
            json!({}),
            20,
        )
        .await
        .unwrap();
        let third = s.claim_job("q", "w9", 60_000, 30).await.unwrap().unwrap();
        assert_eq!(third.batch_id.as_deref(), Some("batch-1"));
        assert_eq!(s.claim_job("q", "w9", 60_000, 30).await.unwrap(), None);
        let running = s
            .list_jobs(
                &JobFilter {
                    batch_id: Some("batch-1".into()),
                    status: Some(JobStatus::Running),
                    ..JobFilter::queue("q")
                },
                Page::default(),
            )
            .await
            .unwrap();
        assert_eq!(running.len(), 2);
    }

    pub async fn jobs_expired_last_attempt_fails(s: Arc<dyn Store>) {
        let mut new = NewJob::new("q", "run", json!({}), 0);
        new.max_attempts = 1;
        let job = s.enqueue_job(new).await.unwrap();
        s.claim_job("q", "w1", 1_000, 0).await.unwrap().unwrap();
        // The worker died; its lease expired and no attempt is left: the job fails instead of
        // staying `running` forever.
        assert_eq!(s.claim_job("q", "w2", 1_000, 5_000).await.unwrap(), None);
        let failed = s.get_job(&job.id).await.unwrap().unwrap();
        assert_eq!(
            (
                failed.status,
                failed.last_error.as_deref(),
                failed.finished_at
            ),
            (
                JobStatus::Failed,
                Some("the worker running the last attempt stopped (its lease expired)"),
                Some(5_000)
            )
        );
    }

    pub async fn workspaces_members_and_shares(s: Arc<dyn Store>) {
        let mut ids = Vec::new();
        for email in ["own@example.com", "mem@example.com", "out@example.com"] {
            let user = s
                .create_user(NewUser {
                    email: email.into(),
                    ..Default::default()
                })
                .await
                .unwrap();
            ids.push(user.id);
        }
        let (owner, member, outsider) = (&ids[0], &ids[1], &ids[2]);
        let ws = s.create_workspace("Team", owner).await.unwrap();
        assert_eq!(s.get_workspace(&ws.id).await.unwrap(), Some(ws.clone()));
        // The owner is its first admin, in the same transaction.
        let members = s.list_members(&ws.id).await.unwrap();
        assert_eq!(members.len(), 1);
        assert_eq!(
            (members[0].user_id.as_str(), members[0].role.as_str()),
            (owner.as_str(), "admin")
        );
        let unknown = s.create_workspace("X", "nobody").await.unwrap_err();
        assert_eq!(kind(&unknown), Some(StoreErrorKind::NotFound));
        let empty = s.create_workspace("", owner).await.unwrap_err();
        assert_eq!(kind(&empty), Some(StoreErrorKind::InvalidInput));

        s.set_member(&ws.id, member, "viewer").await.unwrap();
        let changed = s.set_member(&ws.id, member, "editor").await.unwrap();
        assert_eq!(changed.role, "editor");
        assert_eq!(s.list_members(&ws.id).await.unwrap().len(), 2);
        let bad = s.set_member(&ws.id, member, "owner").await.unwrap_err();
        assert_eq!(kind(&bad), Some(StoreErrorKind::InvalidInput));
        let gone = s.set_member("nope", member, "viewer").await.unwrap_err();
        assert_eq!(kind(&gone), Some(StoreErrorKind::NotFound));
        let listed = s.list_user_workspaces(member).await.unwrap();
        assert_eq!(listed, vec![(ws.clone(), "editor".to_owned())]);

        s.share_resource(&ws.id, "definition", "d1").await.unwrap();
        s.share_resource(&ws.id, "definition", "d1").await.unwrap();
        s.share_resource(&ws.id, "template", "t1").await.unwrap();
        let bad = s
            .share_resource(&ws.id, "execution", "e1")
            .await
            .unwrap_err();
        assert_eq!(kind(&bad), Some(StoreErrorKind::InvalidInput));
        assert_eq!(
            s.shared_roles(member, "definition", "d1").await.unwrap(),
            ["editor"]
        );
        assert!(
            s.shared_roles(outsider, "definition", "d1")
                .await
                .unwrap()
                .is_empty()
        );
        assert_eq!(
            s.shared_resource_ids(member, "definition").await.unwrap(),
            ["d1"]
        );
        assert_eq!(
            s.shared_resource_ids(member, "template").await.unwrap(),
            ["t1"]
        );
        assert!(
            s.unshare_resource(&ws.id, "definition", "d1")
                .await
                .unwrap()
        );
        assert!(
            !s.unshare_resource(&ws.id, "definition", "d1")
                .await
                .unwrap()
        );
        assert!(
            s.shared_resource_ids(member, "definition")
                .await
                .unwrap()
                .is_empty()
        );

        assert!(s.remove_member(&ws.id, member).await.unwrap());
        assert!(!s.remove_member(&ws.id, member).await.unwrap());
        assert!(s.delete_workspace(&ws.id).await.unwrap());
        assert!(s.list_user_workspaces(owner).await.unwrap().is_empty());
        assert!(
            s.shared_resource_ids(owner, "template")
                .await
                .unwrap()
                .is_empty()
        );
    }

    pub async fn credentials_and_sessions(s: Arc<dyn Store>) {
        let alice = s
            .create_user(NewUser {
                email: "alice@example.com".into(),
                ..Default::default()
            })
            .await
            .unwrap();
        let bob = s
            .create_user(NewUser {
                email: "bob@example.com".into(),
                ..Default::default()
            })
            .await
            .unwrap();
        assert_eq!(s.get_credentials(&alice.id).await.unwrap(), None);
        let cred = s
            .set_credentials(&alice.id, "Alice", Some("$argon2id$hash1"))
            .await
            .unwrap();
        assert_eq!(cred.username, "Alice");
        assert_eq!(cred.password_hash.as_deref(), Some("$argon2id$hash1"));
        // By username (any case) and by e-mail (any case).
        assert_eq!(
            s.find_credentials("ALICE").await.unwrap(),
            Some(cred.clone())
        );
        assert_eq!(
            s.find_credentials("Alice@Example.COM").await.unwrap(),
            Some(cred.clone())
        );
        assert_eq!(s.find_credentials("nobody").await.unwrap(), None);
        // Replacing keeps one row; another user cannot take the name.
        let replaced = s
            .set_credentials(&alice.id, "alice", Some("$argon2id$hash2"))
            .await
            .unwrap();
        assert_eq!(s.get_credentials(&alice.id).await.unwrap(), Some(replaced));
        let taken = s.set_credentials(&bob.id, "ALICE", None).await.unwrap_err();
        assert_eq!(kind(&taken), Some(StoreErrorKind::Conflict));
        assert_eq!(s.get_credentials(&bob.id).await.unwrap(), None);
        let unknown = s
            .set_credentials("nobody", "nobody", None)
            .await
            .unwrap_err();
        assert_eq!(kind(&unknown), Some(StoreErrorKind::NotFound));
        let empty = s.set_credentials(&bob.id, "", None).await.unwrap_err();
        assert_eq!(kind(&empty), Some(StoreErrorKind::InvalidInput));

        let session = s
            .create_session(NewSession {
                user_id: alice.id.clone(),
                token_hash: "h1".into(),
                expires_at: 10,
            })
            .await
            .unwrap();
        assert_eq!(session.revoked_at, None);
        assert_eq!(s.find_session("h1").await.unwrap(), Some(session.clone()));
        assert_eq!(
            s.get_session(&session.id).await.unwrap(),
            Some(session.clone())
        );
        let dup = s
            .create_session(NewSession {
                user_id: bob.id.clone(),
                token_hash: "h1".into(),
                expires_at: 10,
            })
            .await
            .unwrap_err();
        assert_eq!(kind(&dup), Some(StoreErrorKind::Conflict));
        assert!(s.revoke_session(&session.id, 5).await.unwrap());
        assert!(!s.revoke_session(&session.id, 6).await.unwrap());
        assert_eq!(
            s.get_session(&session.id)
                .await
                .unwrap()
                .unwrap()
                .revoked_at,
            Some(5)
        );
        assert_eq!(s.find_session("nope").await.unwrap(), None);
    }

    pub async fn users_keys_and_roles(s: Arc<dyn Store>) {
        let alice = s
            .create_user(NewUser {
                email: "Alice@Example.com".into(),
                display_name: Some("Alice".into()),
                roles: vec!["user".into()],
                ..Default::default()
            })
            .await
            .unwrap();
        assert!(alice.is_active);
        let dup = s
            .create_user(NewUser {
                email: "alice@example.com".into(),
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_eq!(kind(&dup), Some(StoreErrorKind::Conflict));
        assert_eq!(
            s.get_user_by_email("ALICE@example.COM")
                .await
                .unwrap()
                .unwrap()
                .id,
            alice.id
        );
        assert_eq!(s.get_user(&alice.id).await.unwrap().unwrap(), alice);
        assert_eq!(s.get_user("nobody").await.unwrap(), None);
        let bob = s
            .create_user(NewUser {
                id: Some("bob".into()),
                email: "bob@example.com".into(),
                ..Default::default()
            })
            .await
            .unwrap();
        let users: Vec<_> = s
            .list_users(Page::default())
            .await
            .unwrap()
            .into_iter()
            .map(|u| u.id)
            .collect();
        assert_eq!(users, [alice.id.clone(), bob.id.clone()]);
        let updated = s
            .update_user(&alice.id, Some(vec!["admin".into()]), Some(false))
            .await
            .unwrap();
        assert_eq!(
            (updated.roles, updated.is_active),
            (vec!["admin".to_owned()], false)
        );
        assert_eq!(
            kind(&s.update_user("nope", None, None).await.unwrap_err()),
            Some(StoreErrorKind::NotFound)
        );

        let key = s
            .create_api_key(NewApiKey {
                user_id: alice.id.clone(),
                name: "ci".into(),
                prefix: "cht_ab".into(),
                key_hash: "h1".into(),
                scopes: vec!["workflows:read".into()],
                expires_at: Some(99),
            })
            .await
            .unwrap();
        assert_eq!(s.find_api_key("h1").await.unwrap().unwrap(), key);
        assert_eq!(s.find_api_key("h2").await.unwrap(), None);
        let dup = s
            .create_api_key(NewApiKey {
                user_id: bob.id.clone(),
                key_hash: "h1".into(),
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_eq!(kind(&dup), Some(StoreErrorKind::Conflict));
        let orphan = s
            .create_api_key(NewApiKey {
                user_id: "ghost".into(),
                key_hash: "h3".into(),
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_eq!(
            orphan.to_string(),
            "storage error (not_found): user `ghost` not found"
        );
        s.touch_api_key(&key.id, 50).await.unwrap();
        assert!(s.revoke_api_key(&key.id, 60).await.unwrap());
        assert!(!s.revoke_api_key(&key.id, 70).await.unwrap());
        let keys = s.list_api_keys(&alice.id).await.unwrap();
        assert_eq!(
            (keys[0].last_used_at, keys[0].revoked_at),
            (Some(50), Some(60))
        );
        assert_eq!(
            kind(&s.touch_api_key("nope", 1).await.unwrap_err()),
            Some(StoreErrorKind::NotFound)
        );

        let role = RoleRecord {
            name: "editor".into(),
            description: None,
            permissions: vec!["workflows:write".into()],
        };
        assert_eq!(s.upsert_role(role.clone()).await.unwrap(), role);
        let changed = RoleRecord {
            description: Some("Edits".into()),
            ..role.clone()
        };
        s.upsert_role(changed.clone()).await.unwrap();
        s.upsert_role(RoleRecord {
            name: "admin".into(),
            description: None,
            permissions: vec![],
        })
        .await
        .unwrap();
        assert_eq!(s.get_role("editor").await.unwrap().unwrap(), changed);
        let names: Vec<_> = s
            .list_roles()
            .await
            .unwrap()
            .into_iter()
            .map(|r| r.name)
            .collect();
        assert_eq!(names, ["admin", "editor"]);
        assert!(s.delete_role("admin").await.unwrap());
        assert!(!s.delete_role("admin").await.unwrap());
    }

    pub async fn sql_looking_strings_are_stored_verbatim(s: Arc<dyn Store>) {
        let nasty = "Robert'); DROP TABLE workflow_definitions; -- \" ' \\ %_ $1 ?1 é😀 \t\n";
        let mut new = new_def(nasty, nasty);
        new.description = Some(nasty.into());
        new.tags = vec![nasty.into()];
        new.definition = json!({"nodes": [], "edges": [], "metadata": {nasty: nasty}});
        let d = s.create_definition(new).await.unwrap();
        let read = s.get_definition(&d.id).await.unwrap().unwrap();
        assert_eq!(
            (
                read.owner_id.as_str(),
                read.name.as_str(),
                read.description.as_deref()
            ),
            (nasty, nasty, Some(nasty))
        );
        assert_eq!(read.tags, [nasty]);
        assert_eq!(read.definition["metadata"][nasty], json!(nasty));
        let filter = DefinitionFilter {
            owner_id: Some(nasty.into()),
            tag: Some(nasty.into()),
            ..Default::default()
        };
        assert_eq!(
            s.list_definitions(&filter, Page::default())
                .await
                .unwrap()
                .len(),
            1
        );

        let conv = s
            .create_conversation(NewConversation {
                user_id: nasty.into(),
                ..Default::default()
            })
            .await
            .unwrap();
        let msg = s
            .add_message(NewMessage::new(&conv.id, MessageRole::User, nasty))
            .await
            .unwrap();
        assert_eq!(
            s.list_messages(&conv.id, Page::default()).await.unwrap()[0].content,
            msg.content
        );
        assert_eq!(msg.content, nasty);

        let d = s
            .create_document(doc(
                nasty,
                "doc",
                "the DROP TABLE statement removes a table",
            ))
            .await
            .unwrap();
        let hits = s
            .search_chunks(&SearchQuery {
                owner_id: nasty.into(),
                query: "\"DROP\" TABLE*) OR NEAR(x".into(),
                max_documents: 5,
                score_threshold: 0.0,
            })
            .await
            .unwrap();
        assert_eq!(hits.len(), 1);
        assert_eq!(hits[0].document_id, d.id);
        s.upsert_preference(nasty, nasty, json!(nasty), None)
            .await
            .unwrap();
        assert_eq!(
            s.get_preference(nasty, nasty).await.unwrap().unwrap().value,
            json!(nasty)
        );
        // The tables are still there.
        assert_eq!(
            s.list_definitions(&DefinitionFilter::default(), Page::default())
                .await
                .unwrap()
                .len(),
            1
        );
    }

    pub async fn oversized_payloads_are_refused_before_the_database(s: Arc<dyn Store>) {
        let big = "x".repeat(PAYLOAD_LIMIT + 1);
        let mut new = new_def("alice", "big");
        new.definition = json!({"nodes": [], "blob": big});
        let err = s.create_definition(new).await.unwrap_err();
        assert_eq!(kind(&err), Some(StoreErrorKind::PayloadTooLarge));
        assert!(
            err.to_string().contains(&format!(
                "definition is {} bytes, over the limit of {PAYLOAD_LIMIT} bytes",
                PAYLOAD_LIMIT + 1 + r#"{"nodes":[],"blob":""}"#.len()
            )),
            "{err}"
        );
        assert!(
            s.list_definitions(&DefinitionFilter::default(), Page::default())
                .await
                .unwrap()
                .is_empty()
        );

        let run = running_execution(&s, "alice").await;
        let mut st = step(&run.id, "n", 1);
        st.events.push(NewEvent::new(0, "token", json!(big)));
        let err = s
            .commit_steps(&[step(&run.id, "ok", 1), st])
            .await
            .unwrap_err();
        assert_eq!(kind(&err), Some(StoreErrorKind::PayloadTooLarge));
        assert!(err.to_string().contains("event payload is"), "{err}");
        assert!(s.list_events(&run.id, 0, 10).await.unwrap().is_empty());

        let conv = s
            .create_conversation(NewConversation {
                user_id: "a".into(),
                ..Default::default()
            })
            .await
            .unwrap();
        let err = s
            .add_message(NewMessage::new(&conv.id, MessageRole::User, big.clone()))
            .await
            .unwrap_err();
        assert_eq!(kind(&err), Some(StoreErrorKind::PayloadTooLarge));
        let err = s.create_document(doc("a", "t", &big)).await.unwrap_err();
        assert_eq!(kind(&err), Some(StoreErrorKind::PayloadTooLarge));
        let err = s
            .upsert_preference("a", "t", json!(big), None)
            .await
            .unwrap_err();
        assert_eq!(kind(&err), Some(StoreErrorKind::PayloadTooLarge));
        let err = s
            .create_execution(NewExecution::new(
                "a",
                ExecutionKind::Adhoc,
                json!({"m": big}),
            ))
            .await
            .unwrap_err();
        assert_eq!(kind(&err), Some(StoreErrorKind::PayloadTooLarge));
        let err = s
            .enqueue_job(NewJob::new("q", "k", json!(big), 0))
            .await
            .unwrap_err();
        assert_eq!(kind(&err), Some(StoreErrorKind::PayloadTooLarge));
        assert_eq!(
            s.list_executions(&ExecutionFilter::default(), Page::default())
                .await
                .unwrap()
                .len(),
            1
        );
    }

    pub async fn invalid_input_is_refused(s: Arc<dyn Store>) {
        let err = s.create_definition(new_def("", "x")).await.unwrap_err();
        assert_eq!(
            err.to_string(),
            "storage error (invalid_input): owner_id must not be empty"
        );
        let err = s.create_definition(new_def("a", " ")).await.unwrap_err();
        assert_eq!(
            err.to_string(),
            "storage error (invalid_input): name must not be empty"
        );
        let err = s
            .create_execution(NewExecution::new("", ExecutionKind::Adhoc, json!({})))
            .await
            .unwrap_err();
        assert_eq!(kind(&err), Some(StoreErrorKind::InvalidInput));
        let mut bad_chunks = doc("a", "t", "text");
        bad_chunks.chunking = ChunkingOptions {
            chunk_size: 10,
            overlap: 10,
        };
        assert_eq!(
            kind(&s.create_document(bad_chunks).await.unwrap_err()),
            Some(StoreErrorKind::InvalidInput)
        );
        let mut job = NewJob::new("q", "k", json!({}), 0);
        job.max_attempts = 0;
        assert_eq!(
            s.enqueue_job(job).await.unwrap_err().to_string(),
            "storage error (invalid_input): max_attempts must be at least 1 (got 0)"
        );
        assert_eq!(
            kind(&s.claim_job("q", "w", 0, 0).await.unwrap_err()),
            Some(StoreErrorKind::InvalidInput)
        );
        assert_eq!(
            kind(
                &s.upsert_preference("", "t", json!(1), None)
                    .await
                    .unwrap_err()
            ),
            Some(StoreErrorKind::InvalidInput)
        );
        let entry = NewAuditEntry {
            action: "".into(),
            resource_type: "r".into(),
            outcome: "ok".into(),
            ..Default::default()
        };
        assert_eq!(
            kind(&s.append_audit(entry).await.unwrap_err()),
            Some(StoreErrorKind::InvalidInput)
        );
        assert_eq!(
            kind(&s.create_user(NewUser::default()).await.unwrap_err()),
            Some(StoreErrorKind::InvalidInput)
        );
        let mut run = step("x", "", 0);
        run.node_run.node_id = String::new();
        assert_eq!(
            kind(&s.commit_step(&run).await.unwrap_err()),
            Some(StoreErrorKind::InvalidInput)
        );
        let err = s
            .create_definition(NewDefinition {
                id: Some(String::new()),
                ..new_def("a", "b")
            })
            .await
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "storage error (invalid_input): id must not be empty"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Backend-specific behaviour
// ---------------------------------------------------------------------------------------------

mod sqlite_specific {
    use super::*;

    /// Under a steady stream of commits the WAL is not left to grow: past 16 MiB the
    /// checkpointer has SQLite start it over (a passive checkpoint alone never lets it), so
    /// the file stays near the limit while the writes go on, and it is emptied once they stop.
    /// 1 500 steps of about 50 KB each write about 80 MiB of WAL; every step reads back.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_wal_is_started_over_past_its_limit_and_emptied_when_writes_stop() {
        const LIMIT: u64 = 16 * 1024 * 1024;
        const STEPS: i64 = 1500;
        let dir = temp_dir();
        let url = format!("sqlite://{}/chatter.db", dir.display());
        let s = connect_with(&url, options()).await.unwrap();
        let run = cases::running_execution(&s, "alice").await;
        let wal = dir.join("chatter.db-wal");
        let size = || std::fs::metadata(&wal).map_or(0, |m| m.len());
        let mut largest = 0;
        for i in 0..STEPS {
            let mut st = cases::step(&run.id, &format!("n{i}"), 0);
            st.events.push(NewEvent::new(
                i,
                "big",
                json!({"text": format!("{i}:{}", "x".repeat(50_000))}),
            ));
            s.commit_step(&st).await.unwrap();
            largest = largest.max(size());
        }
        // Without starting over, the file would have reached four times the limit before
        // being emptied.
        assert!(
            largest < 3 * LIMIT,
            "the WAL reached {largest} bytes while the writes went on"
        );
        let mut waited = 0;
        while size() > LIMIT && waited < 600 {
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            waited += 1;
        }
        assert!(size() <= LIMIT, "the WAL holds {} bytes", size());
        let record = s.get_execution(&run.id).await.unwrap().unwrap();
        assert_eq!((record.step_count, record.last_event_seq), (STEPS, STEPS));
        let last = s.list_events(&run.id, STEPS - 1, 10).await.unwrap();
        assert_eq!(last.len(), 1);
        assert_eq!(
            last[0].payload["text"].as_str(),
            Some(format!("{}:{}", STEPS - 1, "x".repeat(50_000)).as_str())
        );
        drop(s);
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// Migration 0007 rebuilds `jobs` (to allow `cancelled`): the rows of a database at
    /// version 6 are kept, and so are the indexes.
    #[tokio::test]
    async fn jobs_migration_keeps_rows_and_indexes() {
        let dir = temp_dir();
        let path = dir.join("v6.db");
        {
            let conn = rusqlite::Connection::open(&path).unwrap();
            conn.execute_batch(
                "CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, name TEXT NOT NULL,
                     checksum TEXT NOT NULL, applied_at INTEGER NOT NULL)",
            )
            .unwrap();
            for m in chatter_store::migrate::SQLITE_MIGRATIONS
                .iter()
                .filter(|m| m.version <= 6)
            {
                conn.execute_batch(m.sql).unwrap();
                conn.execute(
                    "INSERT INTO schema_migrations VALUES (?1, ?2, ?3, 0)",
                    rusqlite::params![m.version, m.name, m.checksum()],
                )
                .unwrap();
            }
            conn.execute(
                "INSERT INTO jobs (id, queue, kind, payload, priority, status, attempts, max_attempts,
                     run_at, lease_owner, lease_expires_at, last_error, result, created_at, updated_at)
                 VALUES ('old-1', 'q', 'run', '{\"n\":1}', 7, 'failed', 2, 2, 10, NULL, NULL, 'boom',
                         NULL, 5, 6),
                        ('old-2', 'q', 'run', '{}', 0, 'queued', 0, 3, 10, NULL, NULL, NULL, NULL, 8, 8)",
                [],
            )
            .unwrap();
        }
        let url = format!("sqlite://{}", path.display());
        let store = connect_with(&url, options()).await.unwrap();
        let old = store.get_job("old-1").await.unwrap().unwrap();
        assert_eq!(
            (
                old.payload.clone(),
                old.priority,
                old.status,
                old.attempts,
                old.last_error.as_deref(),
                old.created_at,
                old.updated_at,
                old.owner_id.clone(),
                old.finished_at
            ),
            (
                json!({"n": 1}),
                7,
                JobStatus::Failed,
                2,
                Some("boom"),
                5,
                6,
                None,
                None
            )
        );
        let cancelled = store.cancel_job("old-2", 20).await.unwrap();
        assert_eq!(cancelled.status, JobStatus::Cancelled);
        drop(store);
        let conn = rusqlite::Connection::open(&path).unwrap();
        let mut stmt = conn
            .prepare("SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'jobs' AND name LIKE 'idx_%' ORDER BY name")
            .unwrap();
        let names: Vec<String> = stmt
            .query_map([], |row| row.get(0))
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap();
        assert_eq!(
            names,
            [
                "idx_jobs_batch",
                "idx_jobs_claim",
                "idx_jobs_owner",
                "idx_jobs_queue_created"
            ]
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[tokio::test]
    async fn file_store_uses_wal_and_reopens_without_remigrating() {
        let dir = temp_dir();
        let path = dir.join("c.db");
        let url = format!("sqlite://{}", path.display());
        let store = connect_with(&url, options()).await.unwrap();
        let d = store
            .create_definition(NewDefinition {
                owner_id: "a".into(),
                name: "n".into(),
                definition: json!({}),
                ..Default::default()
            })
            .await
            .unwrap();
        drop(store);
        let store = connect_with(&url, options()).await.unwrap();
        assert_eq!(
            store.get_definition(&d.id).await.unwrap().unwrap().name,
            "n"
        );
        drop(store);
        tokio::time::sleep(Duration::from_millis(50)).await;
        let conn = rusqlite::Connection::open(&path).unwrap();
        let mode: String = conn
            .query_row("PRAGMA journal_mode", [], |r| r.get(0))
            .unwrap();
        assert_eq!(mode, "wal");
        let applied: Vec<(i64, String)> = conn
            .prepare("SELECT version, name FROM schema_migrations ORDER BY version")
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        let embedded: Vec<(i64, String)> = chatter_store::migrate::SQLITE_MIGRATIONS
            .iter()
            .map(|m| (m.version, m.name.to_owned()))
            .collect();
        assert_eq!(
            applied[..2],
            [(1, "core".to_owned()), (2, "auth_audit_jobs".to_owned())]
        );
        assert_eq!(applied, embedded);
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// A model reply is stored once (in its `node_completed` event), a `node_started` event
    /// inside its node run row; rows written before migration 0008 (output in place, every
    /// event a row) read as they did.
    #[tokio::test]
    async fn model_replies_are_stored_once_and_old_rows_still_read() {
        let dir = temp_dir();
        let path = dir.join("compact.db");
        let store = connect_with(&format!("sqlite://{}", path.display()), options())
            .await
            .unwrap();
        let new_run = || async {
            let run = store
                .create_execution(NewExecution::new("alice", ExecutionKind::Adhoc, json!({})))
                .await
                .unwrap();
            store
                .set_execution_status(&run.id, ExecutionStatus::Running, run.created_at)
                .await
                .unwrap()
        };
        let reply = "x".repeat(400);
        let output = json!({"content": reply, "usage": {"total_tokens": 1}});
        let mut node_run = NodeRunRecord::started("", "m", 0, 1, 1_000);
        node_run.status = NodeRunStatus::Completed;
        node_run.output = Some(output.clone());
        let delta = json!({"messages": [{"role": "assistant", "content": reply}]});
        let events = vec![
            NewEvent::new(
                1_000,
                "node_started",
                json!({"node_id": "m", "kind": "llm", "iteration": 0, "attempt": 1}),
            ),
            NewEvent::new(
                1_001,
                "node_completed",
                json!({"node_id": "m", "iteration": 0, "duration_ms": 1, "output": output}),
            ),
        ];

        // Written now: one event row, the output and the reply not repeated.
        let compact = new_run().await;
        node_run.execution_id.clone_from(&compact.id);
        let step = StepCommit {
            node_run: node_run.clone(),
            state_delta: delta.clone(),
            events: events.clone(),
            snapshot: None,
        };
        store.commit_step(&step).await.unwrap();
        {
            let conn = rusqlite::Connection::open(&path).unwrap();
            let rows: i64 = conn
                .query_row(
                    "SELECT COUNT(*) FROM workflow_events WHERE execution_id = ?1",
                    [&compact.id],
                    |r| r.get(0),
                )
                .unwrap();
            assert_eq!(rows, 1);
            let (output, output_seq, started_seq): (Option<String>, i64, i64) = conn
                .query_row(
                    "SELECT output, output_seq, started_seq FROM workflow_node_runs WHERE execution_id = ?1",
                    [&compact.id],
                    |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
                )
                .unwrap();
            assert_eq!((output, output_seq, started_seq), (None, 2, 1));
            let state: String = conn
                .query_row(
                    "SELECT delta FROM workflow_node_runs WHERE execution_id = ?1",
                    [&compact.id],
                    |r| r.get(0),
                )
                .unwrap();
            assert!(!state.contains(&reply), "{state}");
        }

        // Written the old way (as before migration 0008).
        let old = new_run().await;
        {
            let conn = rusqlite::Connection::open(&path).unwrap();
            conn.execute(
                "INSERT INTO workflow_node_runs (execution_id, node_id, iteration, attempt, status,
                     started_at, output, step) VALUES (?1, 'm', 0, 1, 'completed', 1000, ?2, 1)",
                rusqlite::params![old.id, output.to_string()],
            )
            .unwrap();
            for (seq, event) in (1_i64..).zip(&events) {
                conn.execute(
                    "INSERT INTO workflow_events (execution_id, seq, ts, event_type, payload)
                     VALUES (?1, ?2, ?3, ?4, ?5)",
                    rusqlite::params![
                        old.id,
                        seq,
                        event.ts,
                        event.event_type,
                        event.payload.to_string()
                    ],
                )
                .unwrap();
            }
            conn.execute(
                "INSERT INTO workflow_checkpoints (execution_id, step, kind, node_id, state, created_at)
                 VALUES (?1, 1, 'delta', 'm', ?2, 1000)",
                rusqlite::params![old.id, delta.to_string()],
            )
            .unwrap();
        }

        for id in [&compact.id, &old.id] {
            let stored = store.list_events(id, 0, 10).await.unwrap();
            let read: Vec<(i64, i64, &str, &Value)> = stored
                .iter()
                .map(|e| (e.seq, e.ts, e.event_type.as_str(), &e.payload))
                .collect();
            let written: Vec<(i64, i64, &str, &Value)> = (1_i64..)
                .zip(&events)
                .map(|(seq, e)| (seq, e.ts, e.event_type.as_str(), &e.payload))
                .collect();
            assert_eq!(read, written, "{id}");
            let runs = store.list_node_runs(id).await.unwrap();
            assert_eq!(runs.len(), 1);
            assert_eq!(runs[0].output.as_ref(), Some(&output));
            let checkpoints = store.list_checkpoints(id).await.unwrap();
            assert_eq!(checkpoints.len(), 1);
            assert_eq!(checkpoints[0].state, delta);
        }
        drop(store);
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// A step's `node_completed` event that holds nothing but what its node run row holds is
    /// stored in that row (migration 0010), as its `node_started` event is: such steps write
    /// no event row. Events, outputs and a later write under the same key read back exactly.
    #[tokio::test]
    async fn small_completions_are_folded_into_their_node_runs() {
        let dir = temp_dir();
        let path = dir.join("fold.db");
        let store = connect_with(&format!("sqlite://{}", path.display()), options())
            .await
            .unwrap();
        let run = super::cases::running_execution(&store, "alice").await;
        // (node, output, started, finished, the completed event's time)
        let cases: [(&str, Value, i64, i64, i64); 3] = [
            (
                "a",
                json!({"text": "é \"quoted\" \u{1}", "n": 1.5, "big": u64::MAX}),
                1_000,
                1_003,
                1_003,
            ),
            ("b", Value::Null, 1_003, 1_004, 1_004),
            // Its event's time is not the run's end: it stays an event row.
            ("c", json!({"short": true}), 1_004, 1_006, 1_007),
        ];
        let mut written = Vec::new();
        let steps: Vec<StepCommit> = cases
            .iter()
            .map(|(node, output, started, finished, at)| {
                let mut node_run = NodeRunRecord::started(&run.id, *node, 0, 1, *started);
                node_run.status = NodeRunStatus::Completed;
                node_run.finished_at = Some(*finished);
                node_run.duration_ms = Some(finished - started);
                node_run.output = (!output.is_null()).then(|| output.clone());
                let events = vec![
                    NewEvent::new(
                        *started,
                        "node_started",
                        json!({"node_id": node, "kind": "noop", "iteration": 0, "attempt": 1}),
                    ),
                    NewEvent::new(
                        *at,
                        "node_completed",
                        json!({"node_id": node, "iteration": 0,
                               "duration_ms": finished - started, "output": output}),
                    ),
                ];
                written.extend(events.iter().cloned());
                StepCommit {
                    node_run,
                    state_delta: json!({"variables": [[node, {"set": 1}]]}),
                    events,
                    snapshot: None,
                }
            })
            .collect();
        store.commit_steps(&steps).await.unwrap();
        let rows = |conn: &rusqlite::Connection| -> Vec<i64> {
            conn.prepare("SELECT seq FROM workflow_events WHERE execution_id = ?1 ORDER BY seq")
                .unwrap()
                .query_map([&run.id], |r| r.get(0))
                .unwrap()
                .collect::<Result<_, _>>()
                .unwrap()
        };
        {
            let conn = rusqlite::Connection::open(&path).unwrap();
            assert_eq!(rows(&conn), [6], "only c's completion is an event row");
            let folded: Vec<(String, Option<i64>, Option<String>)> = conn
                .prepare(
                    "SELECT node_id, completed_seq, output FROM workflow_node_runs
                     WHERE execution_id = ?1 ORDER BY node_id",
                )
                .unwrap()
                .query_map([&run.id], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
                .unwrap()
                .collect::<Result<_, _>>()
                .unwrap();
            assert_eq!(
                folded
                    .iter()
                    .map(|(n, seq, _)| (n.as_str(), *seq))
                    .collect::<Vec<_>>(),
                [("a", Some(2)), ("b", Some(4)), ("c", None)]
            );
            assert_eq!(folded[1].2, None, "b's null output");
        }
        let read_back = |events: &[EventRecord]| -> Vec<(i64, i64, String, Value)> {
            events
                .iter()
                .map(|e| (e.seq, e.ts, e.event_type.clone(), e.payload.clone()))
                .collect()
        };
        let mut expected: Vec<(i64, i64, String, Value)> = (1_i64..)
            .zip(&written)
            .map(|(seq, e)| (seq, e.ts, e.event_type.clone(), e.payload.clone()))
            .collect();
        let events = store.list_events(&run.id, 0, 100).await.unwrap();
        assert_eq!(read_back(&events), expected);
        assert_eq!(
            read_back(&store.list_events(&run.id, 3, 2).await.unwrap()),
            expected[3..5]
        );
        let runs = store.list_node_runs(&run.id).await.unwrap();
        let outputs: Vec<Option<Value>> = runs.iter().map(|r| r.output.clone()).collect();
        assert_eq!(
            outputs,
            [Some(cases[0].1.clone()), None, Some(cases[2].1.clone())]
        );

        // Written again under the same key (as a decided approval is), `a` keeps the events it
        // held as event rows.
        let mut again = NodeRunRecord::started(&run.id, "a", 0, 1, 1_010);
        again.status = NodeRunStatus::Completed;
        again.finished_at = Some(1_012);
        again.duration_ms = Some(2);
        again.output = Some(json!({"second": 2}));
        let completed = NewEvent::new(
            1_012,
            "node_completed",
            json!({"node_id": "a", "iteration": 0, "duration_ms": 2, "output": {"second": 2}}),
        );
        store
            .commit_step(&StepCommit {
                node_run: again,
                state_delta: Value::Null,
                events: vec![completed.clone()],
                snapshot: None,
            })
            .await
            .unwrap();
        expected.push((7, 1_012, "node_completed".into(), completed.payload.clone()));
        let events = store.list_events(&run.id, 0, 100).await.unwrap();
        assert_eq!(read_back(&events), expected);
        {
            let conn = rusqlite::Connection::open(&path).unwrap();
            assert_eq!(rows(&conn), [1, 2, 6], "a's first events became rows");
        }
        drop(store);
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// A step's state delta is stored in its node run row (migration 0011), a snapshot as a
    /// row: checkpoints read back exactly as written (state, step, node, time, order), a delta
    /// that repeats a long reply included; a node run written again for a later step keeps its
    /// earlier delta; compaction clears folded deltas and counts them.
    #[tokio::test]
    async fn deltas_are_folded_into_their_node_runs() {
        let dir = temp_dir();
        let path = dir.join("deltas.db");
        let store = connect_with(&format!("sqlite://{}", path.display()), options())
            .await
            .unwrap();
        let run = super::cases::running_execution(&store, "alice").await;
        let now = || {
            let since = std::time::UNIX_EPOCH.elapsed().unwrap();
            i64::try_from(since.as_millis()).unwrap()
        };
        let reply = "r".repeat(100);
        let step = |node: &str, finished: i64, delta: Value, snapshot: Option<Value>| {
            let mut node_run = NodeRunRecord::started(&run.id, node, 0, 1, finished - 1);
            node_run.status = NodeRunStatus::Completed;
            node_run.finished_at = Some(finished);
            node_run.duration_ms = Some(1);
            StepCommit {
                node_run,
                state_delta: delta,
                events: Vec::new(),
                snapshot,
            }
        };
        let mut model = step(
            "m",
            now(),
            json!({"messages": [{"role": "assistant", "content": reply}]}),
            None,
        );
        model.node_run.output = Some(json!({"content": reply}));
        model.events.push(NewEvent::new(
            model.node_run.finished_at.unwrap(),
            "node_completed",
            json!({"node_id": "m", "iteration": 0, "duration_ms": 1,
                   "output": {"content": reply}}),
        ));
        let steps = vec![
            model,
            // Ended long before it is committed: its time is kept apart.
            step(
                "a",
                1_000,
                json!({"variables": [["x", {"op": "set", "value": "é \"q\""}]]}),
                None,
            ),
            step("none", now(), Value::Null, None),
            step(
                "s",
                now(),
                json!({"variables": [["y", {"op": "set", "value": 2}]]}),
                Some(json!({"variables": {"x": 1, "y": 2}})),
            ),
        ];
        let before = now();
        store.commit_steps(&steps).await.unwrap();
        let after = now();
        // (step, kind, node, state) of each checkpoint.
        type Read = (i64, CheckpointKind, String, Value);
        let read = |checkpoints: &[CheckpointRecord]| -> Vec<Read> {
            checkpoints
                .iter()
                .map(|c| {
                    (
                        c.step,
                        c.kind,
                        c.node_id.clone().unwrap_or_default(),
                        c.state.clone(),
                    )
                })
                .collect()
        };
        let delta = |step: i64, node: &str, state: &Value| -> Read {
            (step, CheckpointKind::Delta, node.to_owned(), state.clone())
        };
        let snapshot = |step: i64, node: &str, state: &Value| -> Read {
            (
                step,
                CheckpointKind::Snapshot,
                node.to_owned(),
                state.clone(),
            )
        };
        let checkpoints = store.list_checkpoints(&run.id).await.unwrap();
        assert_eq!(
            read(&checkpoints),
            [
                delta(1, "m", &steps[0].state_delta),
                delta(2, "a", &steps[1].state_delta),
                snapshot(4, "s", steps[3].snapshot.as_ref().unwrap()),
                delta(4, "s", &steps[3].state_delta),
            ]
        );
        for c in &checkpoints {
            assert!((before..=after).contains(&c.created_at), "{c:?}");
        }
        let table_rows = |conn: &rusqlite::Connection| -> Vec<(i64, String)> {
            conn.prepare(
                "SELECT step, kind FROM workflow_checkpoints WHERE execution_id = ?1 ORDER BY step, kind",
            )
            .unwrap()
            .query_map([&run.id], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap()
        };
        {
            let conn = rusqlite::Connection::open(&path).unwrap();
            assert_eq!(table_rows(&conn), [(4, "snapshot".into())]);
            let (delta, ref_seq): (String, Option<i64>) = conn
                .query_row(
                    "SELECT delta, delta_ref_seq FROM workflow_node_runs
                     WHERE execution_id = ?1 AND node_id = 'm'",
                    [&run.id],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
                .unwrap();
            assert!(!delta.contains(&reply), "the reply is stored once: {delta}");
            assert_eq!(ref_seq, Some(1));
        }

        // `a` written again for a later step (as a decided approval is): its first delta stays.
        let again = step(
            "a",
            now(),
            json!({"variables": [["x", {"op": "set", "value": 3}]]}),
            None,
        );
        store.commit_step(&again).await.unwrap();
        let checkpoints = store.list_checkpoints(&run.id).await.unwrap();
        assert_eq!(
            read(&checkpoints)[1..],
            [
                delta(2, "a", &steps[1].state_delta),
                snapshot(4, "s", steps[3].snapshot.as_ref().unwrap()),
                delta(4, "s", &steps[3].state_delta),
                delta(5, "a", &again.state_delta),
            ]
        );
        assert!((before..=after).contains(&checkpoints[1].created_at));

        // Compaction: everything up to the snapshot but the snapshot (m, a's first delta and
        // s's delta) goes, folded or not.
        assert_eq!(store.compact_checkpoints(&run.id).await.unwrap(), 3);
        assert_eq!(
            read(&store.list_checkpoints(&run.id).await.unwrap()),
            [
                snapshot(4, "s", steps[3].snapshot.as_ref().unwrap()),
                delta(5, "a", &again.state_delta),
            ]
        );
        assert_eq!(store.compact_checkpoints(&run.id).await.unwrap(), 0);
        drop(store);
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// Step commits do not write the execution row's counters (the writer keeps them while the
    /// execution runs): reads still see them current, and numbering goes on without a gap or
    /// a duplicate across a second store on the same file (another process), a failed commit
    /// (rolled back with its numbers), a restart and the end, whose row holds them again.
    #[tokio::test]
    async fn counters_stay_exact_across_writers_failures_and_restarts() {
        use super::cases::{outcome, running_execution, step};
        let dir = temp_dir();
        let url = format!("sqlite://{}", dir.join("heads.db").display());
        let a = connect_with(&url, options()).await.unwrap();
        let run = running_execution(&a, "alice").await;
        let id = run.id.as_str();
        let numbers = |r: &[StepReceipt]| -> Vec<(i64, i64, i64)> {
            r.iter()
                .map(|r| (r.step, r.first_seq, r.last_seq))
                .collect()
        };
        let stored_row = || {
            let conn = rusqlite::Connection::open(dir.join("heads.db")).unwrap();
            conn.query_row(
                "SELECT last_event_seq, step_count FROM workflow_executions WHERE id = ?1",
                [id],
                |r| Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?)),
            )
            .unwrap()
        };
        let current = |s: &Arc<dyn Store>| {
            let s = Arc::clone(s);
            async move {
                let record = s.get_execution(id).await.unwrap().unwrap();
                (record.last_event_seq, record.step_count)
            }
        };

        let first = a
            .commit_steps(&[step(id, "n1", 2), step(id, "n2", 0), step(id, "n3", 1)])
            .await
            .unwrap();
        assert_eq!(numbers(&first), [(1, 1, 2), (2, 3, 2), (3, 3, 3)]);
        assert_eq!(stored_row(), (0, 0), "the steps did not write the row");
        assert_eq!(current(&a).await, (3, 3));

        // Another store on the same file (as another process would be) goes on from there, and
        // so does the first one after it.
        let b = connect_with(&url, options()).await.unwrap();
        assert_eq!(current(&b).await, (3, 3));
        let from_b = b.commit_step(&step(id, "n4", 2)).await.unwrap();
        assert_eq!(numbers(&[from_b]), [(4, 4, 5)]);
        // Its latest step's end is its last update.
        let late = 4_000_000_000_000;
        let mut n5 = step(id, "n5", 1);
        n5.node_run.finished_at = Some(late);
        let from_a = a.commit_step(&n5).await.unwrap();
        assert_eq!(numbers(&[from_a]), [(5, 6, 6)]);
        assert_eq!(b.get_execution(id).await.unwrap().unwrap().updated_at, late);
        assert_eq!(
            a.append_events(id, &[NewEvent::new(1, "note", json!({}))])
                .await
                .unwrap(),
            [7]
        );

        // A call that fails (its second step names no execution) takes its numbers back.
        let failed = a
            .commit_steps(&[step(id, "n6", 3), step("no-such-execution", "x", 1)])
            .await
            .unwrap_err();
        assert_eq!(
            failed.store_kind(),
            Some(StoreErrorKind::NotFound),
            "{failed}"
        );
        let after_failure = a.commit_step(&step(id, "n6", 1)).await.unwrap();
        assert_eq!(numbers(&[after_failure]), [(6, 8, 8)]);
        drop((a, b));
        tokio::time::sleep(Duration::from_millis(50)).await;

        // Restarted: the numbers come from the rows.
        let c = connect_with(&url, options()).await.unwrap();
        assert_eq!(current(&c).await, (8, 6));
        let waiting = c
            .set_execution_status(id, ExecutionStatus::Waiting, 5_000)
            .await
            .unwrap();
        assert_eq!((waiting.last_event_seq, waiting.step_count), (8, 6));
        assert_eq!(stored_row(), (8, 6), "a status change writes them");
        c.set_execution_status(id, ExecutionStatus::Running, 5_001)
            .await
            .unwrap();
        let last = c.commit_step(&step(id, "n7", 2)).await.unwrap();
        assert_eq!(numbers(&[last]), [(7, 9, 10)]);
        let ended = c
            .complete_execution(id, outcome(ExecutionStatus::Completed))
            .await
            .unwrap();
        assert_eq!((ended.last_event_seq, ended.step_count), (11, 7));
        assert_eq!(stored_row(), (11, 7));
        let seqs: Vec<i64> = c
            .list_events(id, 0, 100)
            .await
            .unwrap()
            .iter()
            .map(|e| e.seq)
            .collect();
        assert_eq!(seqs, (1..=11).collect::<Vec<_>>());
        let mut steps: Vec<i64> = c
            .list_node_runs(id)
            .await
            .unwrap()
            .iter()
            .filter_map(|r| r.step)
            .collect();
        steps.sort_unstable();
        assert_eq!(steps, (1..=7).collect::<Vec<_>>());

        // Deleted and created again under the same id, it starts from nothing.
        assert!(c.delete_execution(id).await.unwrap());
        let mut again = NewExecution::new("alice", ExecutionKind::Adhoc, json!({}));
        again.id = Some(id.to_owned());
        c.create_execution(again).await.unwrap();
        let fresh = c.commit_step(&step(id, "n1", 1)).await.unwrap();
        assert_eq!(numbers(&[fresh]), [(1, 1, 1)]);
        drop(c);
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// With `commit_spin_us`, step commits wait for the writer by spinning first: the same
    /// receipts and rows as parking at once.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn spinning_commits_record_the_same_steps() {
        let dir = temp_dir();
        let url = format!("sqlite://{}/spin.db?commit_spin_us=500", dir.display());
        let store = connect_with(&url, options()).await.unwrap();
        let run = store
            .create_execution(NewExecution::new("alice", ExecutionKind::Adhoc, json!({})))
            .await
            .unwrap();
        store
            .set_execution_status(&run.id, ExecutionStatus::Running, run.created_at)
            .await
            .unwrap();
        for i in 0..20_i64 {
            let mut node_run = NodeRunRecord::started(&run.id, format!("n{i}"), 0, 1, 1_000 + i);
            node_run.status = NodeRunStatus::Completed;
            let receipt = store
                .commit_step(&StepCommit {
                    node_run,
                    state_delta: json!({"variables": [[format!("v{i}"), {"set": i}]]}),
                    events: vec![NewEvent::new(1_000 + i, "token", json!({"i": i}))],
                    snapshot: None,
                })
                .await
                .unwrap();
            assert_eq!(
                (receipt.step, receipt.first_seq, receipt.last_seq),
                (i + 1, i + 1, i + 1)
            );
        }
        let events = store.list_events(&run.id, 0, 100).await.unwrap();
        assert_eq!(events.len(), 20);
        assert_eq!(store.list_node_runs(&run.id).await.unwrap().len(), 20);
        drop(store);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[tokio::test]
    async fn changed_or_missing_migrations_refuse_to_start() {
        let dir = temp_dir();
        let path = dir.join("c.db");
        let url = format!("sqlite://{}", path.display());
        drop(connect_with(&url, options()).await.unwrap());
        tokio::time::sleep(Duration::from_millis(50)).await;
        {
            let conn = rusqlite::Connection::open(&path).unwrap();
            conn.execute(
                "UPDATE schema_migrations SET checksum = 'abc' WHERE version = 1",
                [],
            )
            .unwrap();
        }
        let err = connect_with(&url, options()).await.unwrap_err();
        assert_eq!(err.store_kind(), Some(StoreErrorKind::Migration));
        assert!(
            err.to_string().contains(
                "migration 0001_core was changed after it was applied (checksum abc in the database"
            ),
            "{err}"
        );
        {
            let conn = rusqlite::Connection::open(&path).unwrap();
            conn.execute("DELETE FROM schema_migrations WHERE version = 1", [])
                .unwrap();
        }
        let err = connect_with(&url, options()).await.unwrap_err();
        let last = chatter_store::migrate::SQLITE_MIGRATIONS
            .last()
            .unwrap()
            .version;
        assert_eq!(
            err.to_string(),
            format!(
                "storage error (migration): migration 0001_core is missing from schema_migrations although later migration {last:04} was applied; refusing to start"
            )
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_migrations_do_not_corrupt_the_schema() {
        let dir = temp_dir();
        let url = format!("sqlite://{}/race.db", dir.display());
        let mut tasks = Vec::new();
        for _ in 0..4 {
            let url = url.clone();
            tasks.push(tokio::spawn(async move {
                connect_with(&url, options()).await.map(|_| ())
            }));
        }
        for t in tasks {
            t.await.unwrap().unwrap();
        }
        let conn = rusqlite::Connection::open(dir.join("race.db")).unwrap();
        let n: i64 = conn
            .query_row("SELECT COUNT(*) FROM schema_migrations", [], |r| r.get(0))
            .unwrap();
        assert_eq!(n, chatter_store::migrate::SQLITE_MIGRATIONS.len() as i64);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[tokio::test]
    async fn audit_log_refuses_update_and_delete() {
        let dir = temp_dir();
        let path = dir.join("a.db");
        let store = connect_with(&format!("sqlite://{}", path.display()), options())
            .await
            .unwrap();
        store
            .append_audit(NewAuditEntry {
                action: "x".into(),
                resource_type: "y".into(),
                outcome: "ok".into(),
                ..Default::default()
            })
            .await
            .unwrap();
        let conn = rusqlite::Connection::open(&path).unwrap();
        let err = conn
            .execute("UPDATE audit_logs SET action = 'z'", [])
            .unwrap_err();
        assert!(
            err.to_string().contains("audit_logs is append-only"),
            "{err}"
        );
        let err = conn.execute("DELETE FROM audit_logs", []).unwrap_err();
        assert!(
            err.to_string().contains("audit_logs is append-only"),
            "{err}"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[tokio::test]
    async fn unopenable_file_is_unavailable() {
        let err = connect_with("sqlite:///nonexistent-dir-chatter/x/y.db", options())
            .await
            .unwrap_err();
        assert_eq!(err.store_kind(), Some(StoreErrorKind::Unavailable));
        assert!(
            err.to_string()
                .contains("cannot open SQLite database `/nonexistent-dir-chatter/x/y.db`"),
            "{err}"
        );
    }

    #[tokio::test]
    async fn bad_urls_are_config_errors() {
        let err = chatter_store::connect("mysql://localhost/db")
            .await
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "storage error (config): unsupported database URL scheme `mysql` (expected sqlite or postgres)"
        );
        let err = chatter_store::connect("postgres://user@[bad")
            .await
            .unwrap_err();
        assert_eq!(err.store_kind(), Some(StoreErrorKind::Config), "{err}");
    }
}
mod postgres_specific {
    use super::*;

    #[tokio::test]
    async fn unreachable_server_fails_fast() {
        let mut opts = options();
        opts.pg_connect_timeout = Duration::from_secs(2);
        let started = std::time::Instant::now();
        // Port 1 on localhost: connection refused.
        let err = connect_with("postgres://postgres@127.0.0.1:1/db", opts)
            .await
            .unwrap_err();
        assert_eq!(err.store_kind(), Some(StoreErrorKind::Unavailable), "{err}");
        assert!(
            err.to_string().contains("cannot connect to Postgres"),
            "{err}"
        );
        assert!(started.elapsed() < Duration::from_secs(5));
    }

    async fn with_schema<F, Fut>(case: F)
    where
        F: FnOnce(String, String) -> Fut,
        Fut: Future<Output = ()>,
    {
        let Some(url) = postgres_url() else {
            println!("skipped: CHATTER_TEST_POSTGRES_URL not set");
            return;
        };
        let schema = super::support::new_schema();
        case(url.clone(), schema.clone()).await;
        drop_schema(&url, &schema).await;
    }

    fn pg_options(schema: &str) -> StoreOptions {
        let mut opts = options();
        opts.pg_schema = Some(schema.to_owned());
        opts.pg_pool_size = 4;
        opts
    }

    async fn client(url: &str, schema: &str) -> tokio_postgres::Client {
        let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
            .await
            .unwrap();
        tokio::spawn(connection);
        client
            .batch_execute(&format!("SET search_path TO \"{schema}\""))
            .await
            .unwrap();
        client
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn migrations_checksums_and_concurrent_migration() {
        with_schema(|url, schema| async move {
            let mut tasks = Vec::new();
            for _ in 0..4 {
                let (url, opts) = (url.clone(), pg_options(&schema));
                tasks.push(tokio::spawn(async move {
                    connect_with(&url, opts).await.map(|_| ())
                }));
            }
            for t in tasks {
                t.await.unwrap().unwrap();
            }
            let c = client(&url, &schema).await;
            let n: i64 = c
                .query_one("SELECT COUNT(*) FROM schema_migrations", &[])
                .await
                .unwrap()
                .get(0);
            assert_eq!(n, chatter_store::migrate::POSTGRES_MIGRATIONS.len() as i64);
            c.execute(
                "UPDATE schema_migrations SET checksum = 'abc' WHERE version = 2",
                &[],
            )
            .await
            .unwrap();
            let err = connect_with(&url, pg_options(&schema)).await.unwrap_err();
            assert!(
                err.to_string()
                    .contains("migration 0002_auth_audit_jobs was changed after it was applied"),
                "{err}"
            );
            c.execute("DELETE FROM schema_migrations WHERE version = 1", &[])
                .await
                .unwrap();
            c.execute(
                "UPDATE schema_migrations SET checksum = $1 WHERE version = 2",
                &[&chatter_store::migrate::POSTGRES_MIGRATIONS[1].checksum()],
            )
            .await
            .unwrap();
            let err = connect_with(&url, pg_options(&schema)).await.unwrap_err();
            assert!(
                err.to_string()
                    .contains("migration 0001_core is missing from schema_migrations"),
                "{err}"
            );
        })
        .await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_killed_pooled_connection_is_replaced() {
        with_schema(|url, schema| async move {
            let mut opts = pg_options(&schema);
            opts.pg_pool_size = 1;
            let store = connect_with(&url, opts).await.unwrap();
            store.health_check().await.unwrap();
            let c = client(&url, &schema).await;
            let killed: i64 = c
                .query_one(
                    "SELECT COUNT(*) FROM (SELECT pg_terminate_backend(pid) FROM pg_stat_activity
                     WHERE application_name = $1) t",
                    &[&format!("chatter:{schema}")],
                )
                .await
                .unwrap()
                .get(0);
            assert_eq!(killed, 1, "the pooled connection was found and killed");
            tokio::time::sleep(Duration::from_millis(1_200)).await;
            // The idle connection is verified on checkout, found dead, and replaced.
            store.health_check().await.unwrap();
            assert_eq!(store.pool_stats().size, 1);
        })
        .await;
    }

    #[tokio::test]
    async fn audit_log_refuses_update_and_delete() {
        with_schema(|url, schema| async move {
            let store = connect_with(&url, pg_options(&schema)).await.unwrap();
            store
                .append_audit(NewAuditEntry {
                    action: "x".into(),
                    resource_type: "y".into(),
                    outcome: "ok".into(),
                    ..Default::default()
                })
                .await
                .unwrap();
            let stats = store.pool_stats();
            assert_eq!(stats.max_size, 4);
            let c = client(&url, &schema).await;
            let err = c
                .execute("UPDATE audit_logs SET action = 'z'", &[])
                .await
                .unwrap_err();
            assert!(
                format!("{err:?}").contains("audit_logs is append-only"),
                "{err:?}"
            );
            let err = c.execute("DELETE FROM audit_logs", &[]).await.unwrap_err();
            assert!(
                format!("{err:?}").contains("audit_logs is append-only"),
                "{err:?}"
            );
            let n: i64 = c
                .query_one("SELECT COUNT(*) FROM audit_logs", &[])
                .await
                .unwrap()
                .get(0);
            assert_eq!(n, 1);
        })
        .await;
    }
}

// ---------------------------------------------------------------------------------------------
// The model registry
// ---------------------------------------------------------------------------------------------

mod registry_cases {
    use super::*;
    use chatter_core::orchestration::{
        Complexity, ModelSpec, Price, ProviderConfig, RegistryConfig, RoutingRule, Tier,
    };

    /// Every stored column used: two providers (one inactive), models with and without prices,
    /// capabilities, tiers, limits and fallbacks, rules with conditions, and non-default settings.
    pub const REGISTRY: &str = r#"
providers:
  - name: openai
    kind: openai
    base_url: https://api.openai.com/v1
    api_key_env: OPENAI_API_KEY
    default_config: {temperature: 0.7, max_tokens: 1024}
    default_model: gpt-4o-mini
    default: true
  - name: local
    kind: openai
    base_url: http://127.0.0.1:11434/v1
  - name: spare
    kind: openai
    active: false
models:
  - name: gpt-4o-mini
    provider: openai
    context_length: 128000
    max_output_tokens: 16384
    capabilities: {tools: true, json: true, streaming: true, vision: true}
    tier: economy
    price: {input_per_1k: 0.00015, output_per_1k: 0.0006}
  - name: gpt-4o
    provider: openai
    capabilities: {tools: true, json: true}
    tier: premium
    price: {input_per_1k: 0.0025, output_per_1k: 0.01}
    fallbacks: [gpt-4o-mini]
  - name: llama
    provider: local
    api_model: "llama3.1:8b"
    context_length: 8192
    capabilities: {streaming: true}
  - name: old
    provider: spare
    active: false
routing:
  router_name: auto
  default_model: gpt-4o
  default_fallbacks: [gpt-4o-mini]
  rules:
    - name: simple-chat
      priority: 10
      match: {complexity: [simple], max_tokens: 2000, tools_needed: false}
      target: llama
      fallbacks: [gpt-4o-mini]
    - name: vip
      priority: 20
      match: {workflow_types: [support], tags: [vip]}
      target: gpt-4o
      max_cost_per_request: 0.05
    - name: retired
      enabled: false
      target: old
resilience: {max_attempts: 2, initial_backoff_ms: 100, breaker: {failure_threshold: 3, cooldown_ms: 1000}}
budgets: {max_tokens_per_execution: 5000, max_cost_per_execution: 0.25}
memo: {mode: read_write, ttl_ms: 60000, max_entries: 10}
analysis: {short_max_tokens: 500, long_min_tokens: 4000, documents_min_tokens: 800}
"#;

    pub async fn model_registry_round_trips_in_order(s: Arc<dyn Store>) {
        let empty = s.registry().await.unwrap();
        assert_eq!(empty.version, 0);
        assert_eq!(empty.updated_at, None);
        assert_eq!(empty.config, RegistryConfig::default());
        let err = s.load_registry().await.unwrap_err();
        assert_eq!(kind(&err), Some(StoreErrorKind::NotFound));

        let config = RegistryConfig::from_yaml(REGISTRY).unwrap();
        let saved = s.save_registry(&config, Some(0)).await.unwrap();
        assert_eq!(saved.version, 1);
        assert!(saved.updated_at.is_some());
        // Everything comes back as saved, in the saved order (the default route and rule ties
        // depend on it).
        assert_eq!(saved.config, config);
        assert_eq!(s.registry().await.unwrap(), saved);
        let loaded = s.load_registry().await.unwrap();
        assert_eq!(loaded, config);
        let names: Vec<&str> = loaded.models.iter().map(|m| m.name.as_str()).collect();
        assert_eq!(names, ["gpt-4o-mini", "gpt-4o", "llama", "old"]);
        let mini = loaded.model("gpt-4o-mini").unwrap();
        assert_eq!(mini.price, Some(Price::new(0.00015, 0.0006)));
        assert_eq!(mini.tier, Tier::Economy);
        assert_eq!(mini.context_length, Some(128_000));
        assert!(mini.capabilities.vision && mini.capabilities.tools);
        assert_eq!(loaded.model("llama").unwrap().api_model(), "llama3.1:8b");
        assert_eq!(loaded.model("llama").unwrap().price, None);
        assert_eq!(
            loaded.routing.rules[0].conditions.complexity,
            [Complexity::Simple]
        );
        assert_eq!(loaded.routing.rules[1].max_cost_per_request, Some(0.05));
        assert!(!loaded.routing.rules[2].enabled);
        assert_eq!(loaded.resilience.breaker.failure_threshold, 3);
        assert_eq!(loaded.budgets.max_cost_per_execution, Some(0.25));
        assert_eq!(
            loaded.provider("openai").unwrap().api_key_env.as_deref(),
            Some("OPENAI_API_KEY")
        );

        // A second save replaces the whole registry: what is gone is gone.
        let mut smaller = config.clone();
        smaller.routing.rules.clear();
        smaller.models.retain(|m| m.provider == "openai");
        smaller.providers.retain(|p| p.name == "openai");
        let saved = s.save_registry(&smaller, None).await.unwrap();
        assert_eq!(saved.version, 2);
        assert_eq!(s.load_registry().await.unwrap(), smaller);
    }

    pub async fn model_registry_edits_keep_it_valid(s: Arc<dyn Store>) {
        let config = RegistryConfig::from_yaml(REGISTRY).unwrap();
        s.save_registry(&config, None).await.unwrap();

        // A new provider and model, then a rule using them; each edit is a new version.
        let mut groq = ProviderConfig::new("groq", "openai");
        groq.base_url = Some("https://api.groq.com/openai/v1".into());
        groq.api_key_env = Some("GROQ_API_KEY".into());
        groq.default = true;
        let v2 = s.put_provider(groq).await.unwrap();
        assert_eq!(v2.version, 2);
        // Made the only default.
        let defaults: Vec<&str> = v2
            .config
            .providers
            .iter()
            .filter(|p| p.default)
            .map(|p| p.name.as_str())
            .collect();
        assert_eq!(defaults, ["groq"]);
        let mut mixtral = ModelSpec::new("mixtral", "groq");
        mixtral.price = Some(Price::new(0.00024, 0.00024));
        mixtral.tier = Tier::Economy;
        s.put_model(mixtral.clone()).await.unwrap();
        let mut rule = RoutingRule::new("cheap", "mixtral");
        rule.priority = 30;
        let v4 = s.put_routing_rule(rule).await.unwrap();
        assert_eq!(v4.version, 4);
        assert_eq!(v4.config.routing.rules.last().unwrap().name, "cheap");

        // Replacing keeps the place.
        mixtral.price = Some(Price::new(0.0003, 0.0003));
        let v5 = s.put_model(mixtral).await.unwrap();
        let position = v5.config.models.iter().position(|m| m.name == "mixtral");
        assert_eq!(position, Some(4));
        assert_eq!(
            v5.config.model("mixtral").unwrap().price,
            Some(Price::new(0.0003, 0.0003))
        );

        // What other entries depend on cannot go; nothing changes.
        let err = s.delete_model("mixtral").await.unwrap_err();
        assert_eq!(kind(&err), Some(StoreErrorKind::Conflict));
        assert!(
            err.to_string()
                .contains("$.routing.rules[3].target: unknown model `mixtral`"),
            "{err}"
        );
        let err = s.delete_provider("groq").await.unwrap_err();
        assert_eq!(kind(&err), Some(StoreErrorKind::Conflict));
        assert!(
            err.to_string()
                .contains("provider `groq` still serves models `mixtral`"),
            "{err}"
        );
        assert_eq!(s.registry().await.unwrap().version, 5);

        // In dependency order it works.
        s.delete_routing_rule("cheap").await.unwrap();
        s.delete_model("mixtral").await.unwrap();
        let last = s.delete_provider("groq").await.unwrap();
        assert_eq!(last.version, 8);
        assert!(last.config.provider("groq").is_none());
        for err in [
            s.delete_model("mixtral").await.unwrap_err(),
            s.delete_provider("groq").await.unwrap_err(),
            s.delete_routing_rule("cheap").await.unwrap_err(),
        ] {
            assert_eq!(kind(&err), Some(StoreErrorKind::NotFound), "{err}");
        }
    }

    pub async fn model_registry_refuses_bad_input_and_stale_versions(s: Arc<dyn Store>) {
        let config = RegistryConfig::from_yaml(REGISTRY).unwrap();
        s.save_registry(&config, None).await.unwrap();
        let before = s.registry().await.unwrap();

        // The same load-time checks as a config file: every problem named, nothing written.
        let mut bad = config.clone();
        bad.models[0].provider = "anthropic".into();
        bad.models[1].price = Some(Price::new(-0.01, 0.01));
        bad.routing.rules[0].target = "nowhere".into();
        let err = s.save_registry(&bad, None).await.unwrap_err();
        assert_eq!(kind(&err), Some(StoreErrorKind::InvalidInput));
        let text = err.to_string();
        for expected in [
            "$.models[0].provider: unknown provider `anthropic`",
            "$.models[1].price.input_per_1k: must be a non-negative number, found -0.01",
            "$.routing.rules[0].target: unknown model `nowhere`",
        ] {
            assert!(text.contains(expected), "{text}");
        }
        assert_eq!(s.registry().await.unwrap(), before);

        let mut model = ModelSpec::new("claude", "anthropic");
        model.price = Some(Price::new(0.003, 0.015));
        let err = s.put_model(model).await.unwrap_err();
        assert_eq!(kind(&err), Some(StoreErrorKind::InvalidInput));
        assert!(
            err.to_string().contains("unknown provider `anthropic`"),
            "{err}"
        );
        let err = s
            .put_routing_rule(RoutingRule::new("r", "ghost"))
            .await
            .unwrap_err();
        assert!(err.to_string().contains("unknown model `ghost`"), "{err}");

        // A key pasted in place of the variable's name is refused, and not echoed back.
        let mut leaky = ProviderConfig::new("leaky", "openai");
        leaky.api_key_env = Some("sk-proj-abc123secret".into());
        let err = s.put_provider(leaky).await.unwrap_err();
        assert_eq!(kind(&err), Some(StoreErrorKind::InvalidInput));
        assert!(
            err.to_string()
                .contains("api_key_env: not an environment variable name"),
            "{err}"
        );
        assert!(!err.to_string().contains("secret"), "{err}");
        assert_eq!(s.registry().await.unwrap(), before);

        // Optimistic versions: a save from a stale read is refused.
        let err = s.save_registry(&config, Some(0)).await.unwrap_err();
        assert_eq!(kind(&err), Some(StoreErrorKind::Conflict));
        assert!(
            err.to_string()
                .contains("the model registry is at version 1, not 0"),
            "{err}"
        );
        s.save_registry(&config, Some(1)).await.unwrap();
        assert_eq!(s.registry().await.unwrap().version, 2);
    }
}
