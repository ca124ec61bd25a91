//! Templates against real stores: seeding the built-ins, executing templates (stored and
//! inline) with the rows they write, each built-in end to end, the lifecycle (versions,
//! export/import, validate, fork, delete) and analytics under concurrency. SQLite (file) and
//! Postgres (`CHATTER_TEST_POSTGRES_URL`, one fresh schema per test, as in the conformance
//! suite).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;

use chatter_core::engine::{Engine, ExecutionStatus as RunStatus, RunOptions};
use chatter_core::model::ModelRegistry;
use chatter_core::providers::scripted::ScriptedModel;
use chatter_core::retriever::RetrieverRegistry;
use chatter_core::store::*;
use chatter_core::templates::{self, ImportOptions, TemplateRef, TemplateSpec};
use chatter_core::tools::StubTools;
use chatter_core::tracker::GraphSource;
use chatter_core::{ChatModel, Error};
use chatter_store::{StoreOptions, connect_with};
use serde_json::{Value, json};

mod support;
use support::{ingest_samples, sample_documents};

// ---------------------------------------------------------------------------------------------
// Harness (as in tests/conformance.rs), with raw access to count rows per table.
// ---------------------------------------------------------------------------------------------

/// How to read the database behind a store directly.
#[derive(Clone)]
enum Raw {
    Sqlite(String),
    Postgres { url: String, schema: String },
}

impl Raw {
    /// Runs a statement directly; its error message, if it fails.
    async fn execute(&self, sql: &str) -> Option<String> {
        match self {
            Raw::Sqlite(path) => {
                let conn = rusqlite::Connection::open(path).unwrap();
                conn.execute_batch(sql).err().map(|e| e.to_string())
            }
            Raw::Postgres { url, schema } => {
                let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
                    .await
                    .unwrap();
                let task = tokio::spawn(connection);
                let result = client
                    .batch_execute(&format!("SET search_path TO \"{schema}\"; {sql}"))
                    .await
                    .err()
                    .map(|e| format!("{e:?}"));
                drop(client);
                let _ = task.await;
                result
            }
        }
    }

    /// Rows per table (FTS shadow tables left out).
    async fn counts(&self) -> BTreeMap<String, i64> {
        match self {
            Raw::Sqlite(path) => {
                let conn = rusqlite::Connection::open(path).unwrap();
                let names: Vec<String> = conn
                    .prepare(
                        "SELECT name FROM sqlite_master WHERE type = 'table'
                         AND name NOT LIKE 'sqlite_%' AND name NOT LIKE '%fts%'",
                    )
                    .unwrap()
                    .query_map([], |r| r.get(0))
                    .unwrap()
                    .collect::<Result<_, _>>()
                    .unwrap();
                names
                    .into_iter()
                    .map(|n| {
                        let c: i64 = conn
                            .query_row(&format!("SELECT COUNT(*) FROM \"{n}\""), [], |r| r.get(0))
                            .unwrap();
                        (n, c)
                    })
                    .collect()
            }
            Raw::Postgres { url, schema } => {
                let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
                    .await
                    .unwrap();
                let task = tokio::spawn(connection);
                let rows = client
                    .query(
                        "SELECT table_name::text FROM information_schema.tables
                         WHERE table_schema = $1 AND table_type = 'BASE TABLE'",
                        &[schema],
                    )
                    .await
                    .unwrap();
                let mut out = BTreeMap::new();
                for row in rows {
                    let name: String = row.get(0);
                    let count: i64 = client
                        .query_one(
                            &format!("SELECT COUNT(*) FROM \"{schema}\".\"{name}\""),
                            &[],
                        )
                        .await
                        .unwrap()
                        .get(0);
                    out.insert(name, count);
                }
                drop(client);
                let _ = task.await;
                out
            }
        }
    }
}

async fn run_sqlite_file<F, Fut>(case: F)
where
    F: FnOnce(Arc<dyn Store>, Raw) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let dir = support::temp_dir("chatter-templates-test");
    let path = format!("{}/chatter.db", dir.display());
    let store = connect_with(&format!("sqlite://{path}"), StoreOptions::default())
        .await
        .unwrap();
    case(store, Raw::Sqlite(path)).await;
    let _ = std::fs::remove_dir_all(&dir);
}

async fn run_postgres<F, Fut>(case: F)
where
    F: FnOnce(Arc<dyn Store>, Raw) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let Some((store, url, schema)) = support::postgres_store(StoreOptions::default(), 8).await
    else {
        return;
    };
    let raw = Raw::Postgres {
        url: url.clone(),
        schema: schema.clone(),
    };
    let outcome = tokio::spawn(case(store, raw)).await;
    support::drop_schema(&url, &schema).await;
    if let Err(e) = outcome {
        std::panic::resume_unwind(e.into_panic());
    }
}

macro_rules! on_every_backend {
    ($($case:ident),* $(,)?) => {
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
    builtins_are_seeded_idempotently_and_read_only,
    template_execution_writes_no_definition_row,
    parameters_and_unknown_templates_are_refused_before_any_write,
    every_builtin_executes_end_to_end,
    lifecycle_versions_export_import_validate_fork_delete,
    analytics_count_every_concurrent_execution,
    marketplace_status_flow_versions_and_reviews,
    marketplace_ratings_installs_and_search,
);

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

const QUESTION: &str = "Which AI model providers are supported?";

/// An engine whose default provider (and `openai`, which `universal_chat` names) is `model`,
/// with stub tools `tools` and a store retriever over alice's documents under each name of
/// `retrievers`.
fn engine(
    s: &Arc<dyn Store>,
    model: Arc<ScriptedModel>,
    tools: &StubTools,
    retrievers: &[String],
) -> Engine {
    let mut models = ModelRegistry::new();
    models.register("scripted", model.clone() as Arc<dyn ChatModel>);
    models.register("openai", model as Arc<dyn ChatModel>);
    let mut registry = RetrieverRegistry::new();
    for name in retrievers {
        registry.register(
            name.clone(),
            Arc::new(StoreRetriever::new(s.clone()).default_owner("alice")),
        );
    }
    Engine::builder()
        .models(models)
        .tools(tools.registry())
        .retrievers(registry)
        .build()
}

fn chat_engine(s: &Arc<dyn Store>) -> Engine {
    let model = Arc::new(
        ScriptedModel::from_value(json!({
            "default": {"content": "Hello from the template."},
            "usage": {"prompt_tokens": 7, "completion_tokens": 3}
        }))
        .unwrap(),
    );
    engine(s, model, &StubTools::from_value(json!({})).unwrap(), &[])
}

fn user_spec(name: &str, system: &str) -> TemplateSpec {
    TemplateSpec::from_value(&json!({
        "name": name,
        "description": "A test template",
        "category": "custom",
        "workflow_type": "simple_chat",
        "default_params": {"system_message": system, "temperature": 0.2},
        "tags": ["test"]
    }))
    .unwrap()
}

fn diff(before: &BTreeMap<String, i64>, after: &BTreeMap<String, i64>) -> BTreeMap<String, i64> {
    after
        .iter()
        .map(|(k, v)| (k.clone(), v - before.get(k).copied().unwrap_or(0)))
        .filter(|(_, d)| *d != 0)
        .collect()
}

fn template_error(e: &Error) -> &str {
    match e {
        Error::Template { message } => message,
        other => panic!("expected a template error, got {other:?}"),
    }
}

// ---------------------------------------------------------------------------------------------
// Cases
// ---------------------------------------------------------------------------------------------

mod cases {
    use super::*;

    pub async fn builtins_are_seeded_idempotently_and_read_only(s: Arc<dyn Store>, raw: Raw) {
        let first = templates::seed_builtins(&*s).await.unwrap();
        assert_eq!(first.created.len(), 12, "{first:?}");
        assert!(first.updated.is_empty() && first.unchanged.is_empty());
        let counts = raw.counts().await;
        assert_eq!(counts["workflow_templates"], 12);
        assert_eq!(counts["workflow_template_versions"], 12);

        let again = templates::seed_builtins(&*s).await.unwrap();
        assert_eq!(again.unchanged.len(), 12, "{again:?}");
        assert!(again.created.is_empty() && again.updated.is_empty());
        assert_eq!(raw.counts().await, counts, "a second seed writes nothing");

        // Readable by everyone, with the built-in's metadata.
        for user in ["alice", "bob"] {
            let visible = templates::list_visible(&*s, user, None, Page::default())
                .await
                .unwrap();
            assert_eq!(visible.len(), 12);
            assert!(
                visible
                    .iter()
                    .all(|t| t.is_builtin && t.is_public && t.owner_id.is_none())
            );
        }
        let support = templates::get_visible(&*s, "bob", "customer_support")
            .await
            .unwrap();
        assert_eq!(support.category, "customer_support");
        let spec = templates::spec_of(&support).unwrap();
        assert_eq!(
            spec.required_tools,
            ["search_kb", "create_ticket", "escalate"]
        );
        assert_eq!(spec.required_retrievers, ["support_docs"]);
        assert!(spec.is_builtin);

        // Not editable, not deletable: a clear error, nothing changed.
        let err = templates::update_template(&*s, "alice", "general_chat", &spec, None)
            .await
            .unwrap_err();
        assert_eq!(
            template_error(&err),
            "template `general_chat` is built-in and read-only; fork it to get a copy you can change"
        );
        let err = templates::delete_template(&*s, "alice", "general_chat")
            .await
            .unwrap_err();
        assert!(template_error(&err).contains("read-only"));
        assert_eq!(raw.counts().await, counts);

        // A built-in stored by an older build is brought up to date (a new version).
        s.update_template(
            "document_qa",
            TemplateUpdate {
                spec: Some(json!({"workflow_type": "rag_chat", "default_params": {}})),
                ..TemplateUpdate::default()
            },
        )
        .await
        .unwrap();
        let third = templates::seed_builtins(&*s).await.unwrap();
        assert_eq!(third.updated, ["document_qa"]);
        assert_eq!(third.unchanged.len(), 11);
        let qa = s.get_template("document_qa").await.unwrap().unwrap();
        assert_eq!(qa.version, 3);
        assert_eq!(
            templates::spec_of(&qa).unwrap().default_params["max_documents"],
            15
        );
    }

    pub async fn template_execution_writes_no_definition_row(s: Arc<dyn Store>, raw: Raw) {
        templates::seed_builtins(&*s).await.unwrap();
        let engine = chat_engine(&s);
        let template = TemplateRef::Stored("general_chat".into());
        let params = json!({"temperature": 0.3});
        // A first run creates the template's analytics row; measure the second.
        templates::run_template(
            &s,
            &engine,
            "alice",
            &template,
            &params,
            json!({"message": "hi"}),
            RunOptions::default(),
        )
        .await
        .unwrap();

        let before = raw.counts().await;
        let run = templates::run_template(
            &s,
            &engine,
            "alice",
            &template,
            &params,
            json!({"message": "hi"}),
            RunOptions::default(),
        )
        .await
        .unwrap();
        assert!(run.store_error.is_none(), "{:?}", run.store_error);
        assert_eq!(run.result.status, RunStatus::Completed);
        let by_template = diff(&before, &raw.counts().await);

        let record = s
            .get_execution(&run.result.execution_id)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(record.kind, ExecutionKind::Template);
        assert_eq!(record.template_id.as_deref(), Some("general_chat"));
        assert_eq!(record.definition_id, None);
        assert_eq!(record.params["temperature"], 0.3);
        assert_eq!(record.params["memory_window"], 20, "defaults are merged");
        assert_eq!(record.params["enable_memory"], true);

        // The same graph, stored as a definition and run from it.
        let prepared = templates::prepare_template(&*s, "alice", &template, &params)
            .await
            .unwrap();
        let before = raw.counts().await;
        let definition = s
            .create_definition(NewDefinition {
                owner_id: "alice".into(),
                name: "general chat copy".into(),
                definition: prepared.definition.to_value(),
                ..NewDefinition::default()
            })
            .await
            .unwrap();
        let run = chatter_core::tracker::WorkflowTracker::new(s.clone())
            .run(
                &engine,
                &prepared.definition,
                json!({"message": "hi"}),
                RunOptions::default(),
                chatter_core::tracker::ExecutionMeta::new("alice", ExecutionKind::Definition)
                    .definition(definition.id.clone()),
            )
            .await
            .unwrap();
        assert_eq!(run.result.status, RunStatus::Completed);
        let by_definition = diff(&before, &raw.counts().await);

        println!("rows written per template execution: {by_template:?}");
        println!("rows written per definition execution: {by_definition:?}");
        assert_eq!(
            by_template.get("workflow_definitions"),
            None,
            "{by_template:?}"
        );
        assert_eq!(by_template["workflow_executions"], 1);
        assert_eq!(by_definition["workflow_definitions"], 1);
        assert_eq!(by_definition["workflow_executions"], 1);
        let total = |m: &BTreeMap<String, i64>| m.values().sum::<i64>();
        assert!(
            total(&by_template) < total(&by_definition),
            "{by_template:?} vs {by_definition:?}"
        );
        // Apart from the definition row, both executions wrote the same rows.
        let mut without = by_definition.clone();
        without.remove("workflow_definitions");
        assert_eq!(by_template, without);
    }

    pub async fn parameters_and_unknown_templates_are_refused_before_any_write(
        s: Arc<dyn Store>,
        raw: Raw,
    ) {
        templates::seed_builtins(&*s).await.unwrap();
        let engine = chat_engine(&s);
        let before = raw.counts().await;
        let run = |template: TemplateRef, params: Value| {
            let s = s.clone();
            let engine = engine.clone();
            async move {
                templates::run_template(
                    &s,
                    &engine,
                    "alice",
                    &template,
                    &params,
                    json!({"message": "hi"}),
                    RunOptions::default(),
                )
                .await
            }
        };
        let stored = || TemplateRef::Stored("general_chat".into());

        let err = run(stored(), json!({"temperature": "hot"}))
            .await
            .unwrap_err();
        assert_eq!(
            template_error(&err),
            "template `general_chat`: invalid parameters: `temperature`: expected a number, found a string"
        );
        let err = run(stored(), json!({"temperature": 5})).await.unwrap_err();
        assert!(template_error(&err).contains("`temperature`"), "{err}");
        assert!(template_error(&err).contains('2'), "{err}");
        let err = run(stored(), json!({"tempreature": 0.5}))
            .await
            .unwrap_err();
        assert!(template_error(&err).contains("tempreature"), "{err}");
        let err = run(stored(), json!([1, 2])).await.unwrap_err();
        assert_eq!(
            template_error(&err),
            "template `general_chat`: parameters must be an object, found an array"
        );
        let err = run(TemplateRef::Stored("no_such_template".into()), json!({}))
            .await
            .unwrap_err();
        assert_eq!(err.to_string(), "unknown template `no_such_template`");
        // Another user's private template is unknown too.
        let private = templates::create_template(&*s, "bob", &user_spec("bobs", "Hi"))
            .await
            .unwrap();
        let err = run(TemplateRef::Stored(private.id.clone()), json!({}))
            .await
            .unwrap_err();
        assert!(matches!(err, Error::NotFound { .. }), "{err:?}");
        // A graph template whose graph does not validate: refused by the engine, no row.
        let broken = TemplateSpec::from_value(&json!({
            "name": "broken",
            "parameter_schema": {"type": "object"},
            "generator": {"kind": "graph", "graph": {
                "nodes": [{"id": "start", "type": "start"}, {"id": "x", "type": "llm"}],
                "edges": [{"source": "start", "target": "nowhere"}]
            }}
        }))
        .unwrap();
        let err = run(TemplateRef::Inline(Box::new(broken)), json!({}))
            .await
            .unwrap_err();
        assert!(matches!(err, Error::Invalid(_)), "{err:?}");
        let mut after = raw.counts().await;
        after.insert("workflow_templates".into(), before["workflow_templates"]);
        after.insert(
            "workflow_template_versions".into(),
            before["workflow_template_versions"],
        );
        assert_eq!(after, before, "nothing but bob's template was written");

        // An inline template runs without being stored: no template row, no template id.
        let inline = TemplateRef::Inline(Box::new(user_spec("temporary", "Be brief.")));
        let templates_before = raw.counts().await["workflow_templates"];
        let inline_run = run(inline, json!({"max_tokens": 64})).await.unwrap();
        assert_eq!(inline_run.result.status, RunStatus::Completed);
        let record = s
            .get_execution(&inline_run.result.execution_id)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(record.kind, ExecutionKind::Template);
        assert_eq!(record.template_id, None);
        assert_eq!(record.params["max_tokens"], 64);
        assert_eq!(record.params["system_message"], "Be brief.");
        assert_eq!(raw.counts().await["workflow_templates"], templates_before);
        assert_eq!(raw.counts().await["workflow_definitions"], 0);
        // A resumer finds the graph of both kinds of template execution: an inline template's
        // is kept on its row, a stored template's is generated again with the recorded params.
        let source = chatter_core::tracker::StoreGraphSource::new(s.clone());
        let inline_graph = source.definition_for(&record).await.unwrap();
        let expected = templates::prepare_template(
            &*s,
            "alice",
            &TemplateRef::Inline(Box::new(user_spec("temporary", "Be brief."))),
            &json!({"max_tokens": 64}),
        )
        .await
        .unwrap();
        assert_eq!(inline_graph.to_value(), expected.definition.to_value());
        let stored = run(stored(), json!({"temperature": 0.4})).await.unwrap();
        let stored = s
            .get_execution(&stored.result.execution_id)
            .await
            .unwrap()
            .unwrap();
        let regenerated = source.definition_for(&stored).await.unwrap();
        let expected = templates::prepare_template(
            &*s,
            "alice",
            &TemplateRef::Stored("general_chat".into()),
            &json!({"temperature": 0.4}),
        )
        .await
        .unwrap();
        assert_eq!(regenerated.to_value(), expected.definition.to_value());
    }

    pub async fn every_builtin_executes_end_to_end(s: Arc<dyn Store>, _raw: Raw) {
        templates::seed_builtins(&*s).await.unwrap();
        ingest_samples(&s, "alice").await;
        let sample_text: Vec<String> = sample_documents().into_iter().map(|(_, c)| c).collect();
        for spec in templates::builtin_templates() {
            let name = spec.name.clone();
            // Tools answer with a marker; the model calls the first required tool, then answers
            // once it has the tool's result.
            let mut stubs = serde_json::Map::new();
            for tool in &spec.required_tools {
                stubs.insert(tool.clone(), json!({"result": {"tool": tool, "ok": true}}));
            }
            let tools = StubTools::from_value(Value::Object(stubs)).unwrap();
            tools.record_calls(true);
            let script = match spec.required_tools.first() {
                Some(tool) => json!({
                    "rules": [{"match": {"role": "tool"}, "reply": {"content": format!("{name}: done")}}],
                    "default": {"tool_calls": [{"name": tool, "arguments": {"q": "x"}}]},
                    "usage": {"prompt_tokens": 11, "completion_tokens": 4}
                }),
                None => json!({
                    "default": {"content": format!("{name}: done")},
                    "usage": {"prompt_tokens": 11, "completion_tokens": 4}
                }),
            };
            let model = Arc::new(ScriptedModel::from_value(script).unwrap());
            model.record_requests(true);
            let engine = engine(&s, model.clone(), &tools, &spec.required_retrievers);
            // The old thresholds (0.7) were cosine similarities; full-text scores are on another
            // scale (and differ between SQLite's bm25 and Postgres' ts_rank), so take every hit.
            let params = if spec.required_retrievers.is_empty() {
                Value::Null
            } else {
                json!({"score_threshold": 0.0})
            };
            let run = templates::run_template(
                &s,
                &engine,
                "alice",
                &TemplateRef::Stored(name.clone()),
                &params,
                json!({"message": QUESTION}),
                RunOptions::default(),
            )
            .await
            .unwrap_or_else(|e| panic!("{name}: {e}"));
            assert!(run.store_error.is_none(), "{name}: {:?}", run.store_error);
            assert_eq!(
                run.result.status,
                RunStatus::Completed,
                "{name}: {:?}",
                run.result.error
            );
            assert_eq!(
                run.result.response.as_deref(),
                Some(format!("{name}: done").as_str()),
                "{name}"
            );
            let record = s
                .get_execution(&run.result.execution_id)
                .await
                .unwrap()
                .unwrap();
            assert_eq!(record.status, ExecutionStatus::Completed, "{name}");
            assert_eq!(record.template_id.as_deref(), Some(name.as_str()), "{name}");
            if let Some(tool) = spec.required_tools.first() {
                assert_eq!(tools.calls_of(tool).len(), 1, "{name}: {tool} called once");
                assert_eq!(model.call_count(), 2, "{name}");
            } else {
                assert_eq!(model.call_count(), 1, "{name}");
            }
            if !spec.required_retrievers.is_empty() {
                let request = serde_json::to_string(&model.requests()[0]).unwrap();
                assert!(
                    sample_text
                        .iter()
                        .any(|doc| request
                            .contains(&serde_json::to_string(&doc[..40]).unwrap()[1..30])),
                    "{name}: no sample document in the prompt: {request}"
                );
            }
            let stats = s.template_analytics(&name).await.unwrap().unwrap();
            assert_eq!((stats.usage_count, stats.success_count), (1, 1), "{name}");
        }
    }

    pub async fn lifecycle_versions_export_import_validate_fork_delete(
        s: Arc<dyn Store>,
        raw: Raw,
    ) {
        templates::seed_builtins(&*s).await.unwrap();
        let created = templates::create_template(&*s, "alice", &user_spec("helper", "v1"))
            .await
            .unwrap();
        assert_eq!(
            (created.version, created.owner_id.as_deref()),
            (1, Some("alice"))
        );
        assert!(!created.is_builtin);
        for text in ["v2", "v3"] {
            templates::update_template(&*s, "alice", &created.id, &user_spec("helper", text), None)
                .await
                .unwrap();
        }
        let versions = templates::template_versions(&*s, "alice", &created.id)
            .await
            .unwrap();
        let summary: Vec<(i64, bool, Value)> = versions
            .iter()
            .map(|v| {
                (
                    v.version,
                    v.is_latest,
                    v.spec["default_params"]["system_message"].clone(),
                )
            })
            .collect();
        assert_eq!(
            summary,
            [
                (1, false, json!("v1")),
                (2, false, json!("v2")),
                (3, true, json!("v3"))
            ]
        );
        // Others cannot change it; a stale version is a conflict.
        let err =
            templates::update_template(&*s, "bob", &created.id, &user_spec("helper", "x"), None)
                .await
                .unwrap_err();
        assert!(matches!(err, Error::NotFound { .. }), "{err:?}");
        let err = templates::update_template(
            &*s,
            "alice",
            &created.id,
            &user_spec("helper", "x"),
            Some(1),
        )
        .await
        .unwrap_err();
        assert_eq!(err.store_kind(), Some(StoreErrorKind::Conflict));
        // An invalid spec is refused with its problems, nothing written.
        let mut bad = user_spec("helper", "x");
        bad.default_params.insert("temperature".into(), json!(9));
        let err = templates::update_template(&*s, "alice", &created.id, &bad, None)
            .await
            .unwrap_err();
        assert!(
            template_error(&err).starts_with("template `helper` is not valid:"),
            "{err}"
        );
        assert_eq!(
            s.get_template(&created.id).await.unwrap().unwrap().version,
            3
        );

        // Export: the old format with export_version.
        let export = templates::export_template(&*s, "alice", &created.id)
            .await
            .unwrap();
        assert_eq!(export["export_format"], "json");
        assert_eq!(
            export["template"]["export_version"],
            templates::EXPORT_VERSION
        );
        assert_eq!(export["template"]["name"], "helper");
        assert_eq!(export["template"]["default_params"]["system_message"], "v3");
        let hash = templates::spec_of(&s.get_template(&created.id).await.unwrap().unwrap())
            .unwrap()
            .config_hash();
        assert_eq!(export["template"]["config_hash"], hash);
        assert!(export["exported_at"].as_str().unwrap().ends_with('Z'));

        // Import: same name is a conflict; override_name makes a new one; merge makes a version.
        let err = templates::import_template(&*s, "alice", &export, &ImportOptions::default())
            .await
            .unwrap_err();
        assert_eq!(err.store_kind(), Some(StoreErrorKind::Conflict));
        let copy = templates::import_template(
            &*s,
            "alice",
            &export,
            &ImportOptions {
                override_name: Some("helper copy".into()),
                merge_with_existing: false,
            },
        )
        .await
        .unwrap();
        assert_eq!((copy.name.as_str(), copy.version), ("helper copy", 1));
        assert_ne!(copy.id, created.id);
        let merged = templates::import_template(
            &*s,
            "alice",
            &export,
            &ImportOptions {
                override_name: None,
                merge_with_existing: true,
            },
        )
        .await
        .unwrap();
        assert_eq!(
            (merged.id.as_str(), merged.version),
            (created.id.as_str(), 4)
        );
        // Bob imports alice's export as his own.
        let bobs = templates::import_template(&*s, "bob", &export, &ImportOptions::default())
            .await
            .unwrap();
        assert_eq!(bobs.owner_id.as_deref(), Some("bob"));
        assert!(!bobs.is_public && !bobs.is_builtin);

        // Malformed exports: a clear error each, nothing written.
        let before = raw.counts().await;
        let malformed = [
            (
                json!("text"),
                "malformed import: expected a JSON object, found a string",
            ),
            (
                json!({"template": [1]}),
                "malformed import: `template` must be an object, found an array",
            ),
            (
                json!({"template": {"name": "x", "export_version": "2.0"}}),
                "malformed import: unsupported export_version \"2.0\" (this version reads 1.0)",
            ),
            (
                json!({"template": {"description": "no name"}}),
                "malformed import: not a template: missing field `name`",
            ),
            (
                json!({"template": {"name": "  "}}),
                "malformed import: a template needs a non-empty `name`",
            ),
            (
                json!({"template": {"name": "hot", "default_params": {"temperature": 9}}}),
                "template `hot` is not valid: template `hot`: invalid parameters:",
            ),
        ];
        for (doc, expected) in malformed {
            let err = templates::import_template(&*s, "alice", &doc, &ImportOptions::default())
                .await
                .unwrap_err();
            assert!(
                template_error(&err).starts_with(expected),
                "{doc}: {err} (expected {expected})"
            );
        }
        assert_eq!(raw.counts().await, before);

        // Validate returns issues instead of failing.
        let ok = templates::validate_template(&export["template"]);
        assert!(ok.is_valid && ok.errors.is_empty(), "{ok:?}");
        assert_eq!(ok.template_info.as_ref().unwrap()["config_hash"], hash);
        let bad = templates::validate_template(&json!({
            "name": "bad",
            "default_params": {"temperature": "warm", "max_tokens": 0}
        }));
        assert!(!bad.is_valid);
        assert_eq!(bad.errors.len(), 1, "{bad:?}");
        assert!(bad.errors[0].contains("`temperature`") && bad.errors[0].contains("`max_tokens`"));
        let graph = templates::validate_template(&json!({
            "name": "g",
            "parameter_schema": {"type": "object"},
            "generator": {"kind": "graph", "graph": {"nodes": [{"id": "start", "type": "start"}], "edges": [
                {"source": "start", "target": "ghost"}]}}
        }));
        assert!(!graph.is_valid);
        assert!(
            graph
                .errors
                .iter()
                .all(|e| e.starts_with("generated graph: CHT-V")),
            "{graph:?}"
        );
        assert!(!templates::validate_template(&json!(42)).is_valid);

        // Fork: a built-in and one's own template; lineage kept.
        let fork = templates::fork_template(&*s, "alice", "code_assistant", None)
            .await
            .unwrap();
        assert_eq!(fork.base_template_id.as_deref(), Some("code_assistant"));
        assert_eq!(
            (fork.owner_id.as_deref(), fork.version, fork.is_builtin),
            (Some("alice"), 1, false)
        );
        assert_eq!(
            templates::spec_of(&fork).unwrap().required_tools,
            ["execute_code", "search_docs", "generate_tests"]
        );
        let err = templates::fork_template(&*s, "alice", &created.id, None)
            .await
            .unwrap_err();
        assert_eq!(err.store_kind(), Some(StoreErrorKind::Conflict), "{err}");
        let own_fork = templates::fork_template(&*s, "alice", &created.id, Some("helper fork"))
            .await
            .unwrap();
        assert_eq!(
            own_fork.base_template_id.as_deref(),
            Some(created.id.as_str())
        );
        let err = templates::fork_template(&*s, "alice", &bobs.id, Some("x"))
            .await
            .unwrap_err();
        assert!(
            matches!(err, Error::NotFound { .. }),
            "bob's template is private: {err:?}"
        );

        // Delete: history goes with it; forks keep running with no base.
        let err = templates::delete_template(&*s, "bob", &created.id)
            .await
            .unwrap_err();
        assert!(matches!(err, Error::NotFound { .. }));
        templates::delete_template(&*s, "alice", &created.id)
            .await
            .unwrap();
        assert!(s.get_template(&created.id).await.unwrap().is_none());
        assert!(
            s.list_template_versions(&created.id)
                .await
                .unwrap()
                .is_empty()
        );
        let own_fork = s.get_template(&own_fork.id).await.unwrap().unwrap();
        assert_eq!(own_fork.base_template_id, None);
        let err = templates::delete_template(&*s, "alice", &created.id)
            .await
            .unwrap_err();
        assert!(matches!(err, Error::NotFound { .. }));
    }

    pub async fn analytics_count_every_concurrent_execution(s: Arc<dyn Store>, _raw: Raw) {
        templates::seed_builtins(&*s).await.unwrap();
        let engine = chat_engine(&s);
        let mut tasks = Vec::new();
        for _ in 0..8 {
            let s = s.clone();
            let engine = engine.clone();
            tasks.push(tokio::spawn(async move {
                templates::run_template(
                    &s,
                    &engine,
                    "alice",
                    &TemplateRef::Stored("general_chat".into()),
                    &Value::Null,
                    json!({"message": "hi"}),
                    RunOptions::default(),
                )
                .await
                .unwrap()
            }));
        }
        let mut durations = 0;
        for task in tasks {
            let run = task.await.unwrap();
            assert!(run.store_error.is_none(), "{:?}", run.store_error);
            let record = s
                .get_execution(&run.result.execution_id)
                .await
                .unwrap()
                .unwrap();
            durations += record.duration_ms.unwrap();
        }
        // A failing execution counts as a failure.
        let failing = Arc::new(
            ScriptedModel::from_value(json!({
                "default": {"error": {"class": "bad_request", "message": "no"}}
            }))
            .unwrap(),
        );
        let failing_engine = engine_with_model(&s, failing);
        let run = templates::run_template(
            &s,
            &failing_engine,
            "alice",
            &TemplateRef::Stored("general_chat".into()),
            &Value::Null,
            json!({"message": "hi"}),
            RunOptions::default(),
        )
        .await
        .unwrap();
        assert_eq!(run.result.status, RunStatus::Failed);
        let failed = s
            .get_execution(&run.result.execution_id)
            .await
            .unwrap()
            .unwrap();

        let stats = s.template_analytics("general_chat").await.unwrap().unwrap();
        assert_eq!(stats.usage_count, 9);
        assert_eq!(stats.success_count, 8);
        assert_eq!(stats.failure_count, 1);
        assert_eq!(stats.total_tokens, 8 * 10);
        assert_eq!(
            stats.total_duration_ms,
            durations + failed.duration_ms.unwrap()
        );
        assert_eq!(stats.last_failure_at, failed.finished_at);
        assert_eq!(stats.last_used_at, failed.finished_at);
        assert!(stats.last_success_at.unwrap() <= failed.finished_at.unwrap());
        assert!(stats.last_success_at.is_some());
    }

    fn engine_with_model(s: &Arc<dyn Store>, model: Arc<ScriptedModel>) -> Engine {
        engine(s, model, &StubTools::from_value(json!({})).unwrap(), &[])
    }

    fn listing(
        slug: &str,
        title: &str,
        summary: &str,
        tags: &[&str],
        category: &str,
    ) -> NewListing {
        NewListing {
            slug: slug.into(),
            title: title.into(),
            summary: summary.into(),
            readme: "# Readme".into(),
            category: category.into(),
            tags: tags.iter().map(|t| (*t).to_owned()).collect(),
            license: "MIT".into(),
            ..NewListing::default()
        }
    }

    fn conflict_message(e: &Error) -> String {
        assert_eq!(e.store_kind(), Some(StoreErrorKind::Conflict), "{e:?}");
        e.to_string()
    }

    /// A published, approved listing of a new template of `user`.
    async fn approved(s: &Arc<dyn Store>, user: &str, new: NewListing) -> ListingRecord {
        let template = templates::create_template(&**s, user, &user_spec(&new.slug, "Hi"))
            .await
            .unwrap();
        let (listing, _) = templates::publish_template(&**s, user, &template.id, new, "first")
            .await
            .unwrap();
        s.set_listing_status(&listing.id, ListingStatus::Submitted)
            .await
            .unwrap();
        s.review_listing(&listing.id, "moderator", ReviewDecision::Approved, "ok")
            .await
            .unwrap()
            .1
    }

    pub async fn marketplace_status_flow_versions_and_reviews(s: Arc<dyn Store>, raw: Raw) {
        templates::seed_builtins(&*s).await.unwrap();
        let template = templates::create_template(&*s, "alice", &user_spec("support bot", "v1"))
            .await
            .unwrap();
        let (draft, v1) = templates::publish_template(
            &*s,
            "alice",
            &template.id,
            listing("support-bot", "", "", &[], ""),
            "first release",
        )
        .await
        .unwrap();
        assert_eq!(draft.status, ListingStatus::Draft);
        assert_eq!(
            (draft.title.as_str(), draft.category.as_str()),
            ("support bot", "custom")
        );
        assert_eq!(draft.summary, "A test template");
        assert_eq!(draft.tags, ["test"]);
        assert_eq!(draft.template_id.as_deref(), Some(template.id.as_str()));
        assert_eq!(draft.latest_version, 1);
        assert_eq!(v1.version, 1);
        assert_eq!(v1.snapshot, templates::snapshot_of(&template));
        assert_eq!(
            v1.content_hash,
            chatter_core::store::marketplace::content_hash(&v1.snapshot)
        );
        assert_eq!(v1.changelog, "first release");

        // Bad slugs, taken slugs, built-ins and other users' templates.
        let err = s
            .create_listing(NewListing {
                publisher_id: "alice".into(),
                ..listing("Bad Slug", "t", "", &[], "")
            })
            .await
            .unwrap_err();
        assert_eq!(err.store_kind(), Some(StoreErrorKind::InvalidInput));
        let err = templates::publish_template(
            &*s,
            "alice",
            &template.id,
            listing("support-bot", "t", "", &[], ""),
            "",
        )
        .await
        .unwrap_err();
        assert_eq!(
            conflict_message(&err),
            "storage error (conflict): a listing with slug `support-bot` already exists"
        );
        let err = templates::publish_template(
            &*s,
            "alice",
            "general_chat",
            listing("gc", "t", "", &[], ""),
            "",
        )
        .await
        .unwrap_err();
        assert!(template_error(&err).contains("not yours to publish"));

        // A draft cannot be installed, rated, reviewed or approved directly.
        let err = templates::install_listing(&*s, "bob", "support-bot", None, None)
            .await
            .unwrap_err();
        assert_eq!(
            conflict_message(&err),
            "storage error (conflict): listing `support-bot` is draft; only approved listings can be installed"
        );
        let err = s.rate_listing(&draft.id, "bob", 5, "").await.unwrap_err();
        assert!(conflict_message(&err).contains("only approved listings can be rated"));
        let err = s
            .review_listing(&draft.id, "moderator", ReviewDecision::Approved, "")
            .await
            .unwrap_err();
        assert!(conflict_message(&err).contains("only submitted listings can be reviewed"));
        let err = s
            .set_listing_status(&draft.id, ListingStatus::Approved)
            .await
            .unwrap_err();
        assert!(conflict_message(&err).contains("is draft; it cannot become approved"));
        // Submitting needs a version.
        let empty = s
            .create_listing(NewListing {
                publisher_id: "alice".into(),
                ..listing("empty", "Empty", "", &[], "")
            })
            .await
            .unwrap();
        let err = s
            .set_listing_status(&empty.id, ListingStatus::Submitted)
            .await
            .unwrap_err();
        assert!(conflict_message(&err).contains("has no version yet"));

        // draft → submitted → rejected → submitted → approved, reviews recorded.
        let submitted = s
            .set_listing_status(&draft.id, ListingStatus::Submitted)
            .await
            .unwrap();
        assert_eq!(submitted.status, ListingStatus::Submitted);
        let err = s
            .set_listing_status(&draft.id, ListingStatus::Approved)
            .await
            .unwrap_err();
        assert!(conflict_message(&err).contains("(approval and rejection are moderation reviews)"));
        let (review, rejected) = s
            .review_listing(
                &draft.id,
                "moderator",
                ReviewDecision::Rejected,
                "needs a readme",
            )
            .await
            .unwrap();
        assert_eq!(rejected.status, ListingStatus::Rejected);
        assert_eq!(
            (review.decision, review.version),
            (ReviewDecision::Rejected, 1)
        );
        s.set_listing_status(&draft.id, ListingStatus::Submitted)
            .await
            .unwrap();
        let (_, approved) = s
            .review_listing(&draft.id, "moderator", ReviewDecision::Approved, "good")
            .await
            .unwrap();
        assert_eq!(approved.status, ListingStatus::Approved);
        assert!(approved.approved_at.is_some());
        let reviews = s.list_reviews(&draft.id).await.unwrap();
        let decisions: Vec<(ReviewDecision, &str)> = reviews
            .iter()
            .map(|r| (r.decision, r.comment.as_str()))
            .collect();
        assert_eq!(
            decisions,
            [
                (ReviewDecision::Rejected, "needs a readme"),
                (ReviewDecision::Approved, "good")
            ]
        );

        // New versions: refused when nothing changed, numbered, hashed, immutable.
        let err = templates::publish_version(&*s, "alice", &draft.id, "same")
            .await
            .unwrap_err();
        assert!(conflict_message(&err).contains("version 1 already holds this template"));
        let err = templates::publish_version(&*s, "bob", &draft.id, "not mine")
            .await
            .unwrap_err();
        assert!(matches!(err, Error::NotFound { .. }), "{err:?}");
        templates::update_template(
            &*s,
            "alice",
            &template.id,
            &user_spec("support bot", "v2"),
            None,
        )
        .await
        .unwrap();
        let v2 = templates::publish_version(&*s, "alice", &draft.id, "better prompt")
            .await
            .unwrap();
        assert_eq!(v2.version, 2);
        assert_ne!(v2.content_hash, v1.content_hash);
        let versions = s.list_listing_versions(&draft.id).await.unwrap();
        assert_eq!(versions, [v1.clone(), v2.clone()]);
        let refused = raw
            .execute("UPDATE marketplace_versions SET changelog = 'rewritten'")
            .await
            .expect("versions are immutable");
        assert!(
            refused.contains("marketplace versions are immutable"),
            "{refused}"
        );
        assert_eq!(s.list_listing_versions(&draft.id).await.unwrap(), versions);

        // Unlisted: hidden and not installable; relisted: back.
        let search = ListingSearch::default();
        assert_eq!(
            s.search_listings(&search, Page::default())
                .await
                .unwrap()
                .len(),
            1
        );
        s.set_listing_status(&draft.id, ListingStatus::Unlisted)
            .await
            .unwrap();
        assert!(
            s.search_listings(&search, Page::default())
                .await
                .unwrap()
                .is_empty()
        );
        let err = templates::install_listing(&*s, "bob", "support-bot", None, None)
            .await
            .unwrap_err();
        assert!(conflict_message(&err).contains("is unlisted"));
        s.set_listing_status(&draft.id, ListingStatus::Approved)
            .await
            .unwrap();
        assert_eq!(
            s.search_listings(&search, Page::default())
                .await
                .unwrap()
                .len(),
            1
        );
        // Removed is final.
        s.set_listing_status(&draft.id, ListingStatus::Removed)
            .await
            .unwrap();
        for to in [ListingStatus::Approved, ListingStatus::Draft] {
            let err = s.set_listing_status(&draft.id, to).await.unwrap_err();
            assert!(conflict_message(&err).contains("is removed"));
        }
        let err = s
            .update_listing(&draft.id, ListingUpdate::default())
            .await
            .unwrap_err();
        assert!(conflict_message(&err).contains("is removed"));
    }

    pub async fn marketplace_ratings_installs_and_search(s: Arc<dyn Store>, raw: Raw) {
        let support = approved(
            &s,
            "alice",
            listing(
                "support-desk",
                "Support desk",
                "Answers customer questions",
                &["support", "billing"],
                "customer_support",
            ),
        )
        .await;
        let coder = approved(
            &s,
            "alice",
            listing(
                "code-helper",
                "Code helper",
                "Reviews pull requests and supports refactoring",
                &["code"],
                "programming",
            ),
        )
        .await;
        let tutor = approved(
            &s,
            "carol",
            listing(
                "math-tutor",
                "Math tutor",
                "Explains algebra step by step",
                &["education"],
                "educational",
            ),
        )
        .await;

        // Ratings: one per user, average and count recomputed, publisher excluded.
        let rated = s
            .rate_listing(&support.id, "bob", 5, "great")
            .await
            .unwrap();
        assert_eq!((rated.rating_avg, rated.rating_count), (5.0, 1));
        let rated = s.rate_listing(&support.id, "carol", 4, "").await.unwrap();
        assert_eq!((rated.rating_avg, rated.rating_count), (4.5, 2));
        let err = s
            .rate_listing(&support.id, "bob", 1, "again")
            .await
            .unwrap_err();
        assert_eq!(
            conflict_message(&err),
            format!(
                "storage error (conflict): user `bob` already rated listing `{}`; delete the rating to rate again",
                support.id
            )
        );
        for (user, rating) in [("dave", 0), ("dave", 6)] {
            let err = s
                .rate_listing(&support.id, user, rating, "")
                .await
                .unwrap_err();
            assert_eq!(err.store_kind(), Some(StoreErrorKind::InvalidInput));
        }
        let err = s
            .rate_listing(&support.id, "alice", 5, "")
            .await
            .unwrap_err();
        assert_eq!(err.store_kind(), Some(StoreErrorKind::InvalidInput));
        let now = s.get_listing(&support.id).await.unwrap().unwrap();
        assert_eq!((now.rating_avg, now.rating_count), (4.5, 2));
        assert!(s.delete_rating(&support.id, "bob").await.unwrap());
        assert!(!s.delete_rating(&support.id, "bob").await.unwrap());
        let now = s.get_listing(&support.id).await.unwrap().unwrap();
        assert_eq!((now.rating_avg, now.rating_count), (4.0, 1));
        // Concurrent ratings are all counted.
        let mut tasks = Vec::new();
        for i in 0..10 {
            let s = s.clone();
            let id = coder.id.clone();
            tasks.push(tokio::spawn(async move {
                s.rate_listing(&id, &format!("user{i}"), 1 + i % 5, "")
                    .await
                    .unwrap()
            }));
        }
        for task in tasks {
            task.await.unwrap();
        }
        let now = s.get_listing(&coder.id).await.unwrap().unwrap();
        assert_eq!((now.rating_count, now.rating_avg), (10, 3.0));
        assert_eq!(
            s.list_ratings(&coder.id, Page::new(3, 0))
                .await
                .unwrap()
                .len(),
            3
        );
        s.rate_listing(&tutor.id, "bob", 2, "").await.unwrap();

        // Installs: a private copy with lineage, counted; nothing half-written on a conflict.
        let (install, copy) = templates::install_listing(&*s, "bob", "support-desk", None, None)
            .await
            .unwrap();
        assert_eq!(copy.owner_id.as_deref(), Some("bob"));
        assert_eq!(copy.name, "support-desk");
        assert_eq!(copy.base_template_id, support.template_id);
        assert!(!copy.is_public && !copy.is_builtin);
        assert_eq!(install.version, 1);
        assert_eq!(install.template_id.as_deref(), Some(copy.id.as_str()));
        let original = s
            .get_template(support.template_id.as_deref().unwrap())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(copy.spec, original.spec);
        templates::prepare_template(
            &*s,
            "bob",
            &TemplateRef::Stored(copy.id.clone()),
            &Value::Null,
        )
        .await
        .unwrap();
        let before = raw.counts().await;
        let err = templates::install_listing(&*s, "bob", "support-desk", None, None)
            .await
            .unwrap_err();
        assert!(conflict_message(&err).contains("already exists"));
        let err =
            templates::install_listing(&*s, "bob", "support-desk", Some(9), Some("v9".into()))
                .await
                .unwrap_err();
        assert!(
            matches!(err.store_kind(), Some(StoreErrorKind::NotFound)),
            "{err:?}"
        );
        let err = templates::install_listing(&*s, "bob", "no-such-listing", None, None)
            .await
            .unwrap_err();
        assert_eq!(err.to_string(), "unknown listing `no-such-listing`");
        assert_eq!(raw.counts().await, before, "failed installs write nothing");
        templates::install_listing(&*s, "bob", &support.id, Some(1), Some("desk 2".into()))
            .await
            .unwrap();
        templates::install_listing(&*s, "dave", "support-desk", None, None)
            .await
            .unwrap();
        templates::install_listing(&*s, "dave", "math-tutor", None, None)
            .await
            .unwrap();
        assert_eq!(
            s.get_listing(&support.id)
                .await
                .unwrap()
                .unwrap()
                .install_count,
            3
        );
        assert_eq!(
            s.list_installs(&support.id, Page::default())
                .await
                .unwrap()
                .len(),
            3
        );

        // Search: full text (stemmed) over title, summary and tags, filters, sorts, pages.
        let slugs = |found: Vec<ListingRecord>| -> Vec<String> {
            found.into_iter().map(|l| l.slug).collect()
        };
        let find = |query: Option<&str>, sort: ListingSort| ListingSearch {
            query: query.map(str::to_owned),
            sort,
            ..ListingSearch::default()
        };
        let got = slugs(
            s.search_listings(
                &find(Some("billing"), ListingSort::Relevance),
                Page::default(),
            )
            .await
            .unwrap(),
        );
        assert_eq!(got, ["support-desk"], "tags are searched");
        let got = slugs(
            s.search_listings(
                &find(Some("algebra"), ListingSort::Relevance),
                Page::default(),
            )
            .await
            .unwrap(),
        );
        assert_eq!(got, ["math-tutor"], "summaries are searched");
        let mut got = slugs(
            s.search_listings(
                &find(Some("supporting"), ListingSort::Relevance),
                Page::default(),
            )
            .await
            .unwrap(),
        );
        got.sort();
        assert_eq!(
            got,
            ["code-helper", "support-desk"],
            "stemmed: supports, support"
        );
        let got = slugs(
            s.search_listings(
                &find(Some("support billing"), ListingSort::Relevance),
                Page::default(),
            )
            .await
            .unwrap(),
        );
        assert_eq!(got, ["support-desk"], "every word must match");
        assert!(
            s.search_listings(
                &find(Some("zebra"), ListingSort::Relevance),
                Page::default()
            )
            .await
            .unwrap()
            .is_empty()
        );
        let got = slugs(
            s.search_listings(&find(None, ListingSort::Rating), Page::default())
                .await
                .unwrap(),
        );
        assert_eq!(got, ["support-desk", "code-helper", "math-tutor"]);
        let got = slugs(
            s.search_listings(&find(None, ListingSort::Installs), Page::default())
                .await
                .unwrap(),
        );
        assert_eq!(got, ["support-desk", "math-tutor", "code-helper"]);
        let got = slugs(
            s.search_listings(&find(None, ListingSort::Newest), Page::default())
                .await
                .unwrap(),
        );
        assert_eq!(got, ["math-tutor", "code-helper", "support-desk"]);
        let got = slugs(
            s.search_listings(&find(None, ListingSort::Newest), Page::new(1, 1))
                .await
                .unwrap(),
        );
        assert_eq!(got, ["code-helper"]);
        let by_category = ListingSearch {
            category: Some("programming".into()),
            ..ListingSearch::default()
        };
        assert_eq!(
            slugs(
                s.search_listings(&by_category, Page::default())
                    .await
                    .unwrap()
            ),
            ["code-helper"]
        );
        let by_tag = ListingSearch {
            tag: Some("education".into()),
            ..ListingSearch::default()
        };
        assert_eq!(
            slugs(s.search_listings(&by_tag, Page::default()).await.unwrap()),
            ["math-tutor"]
        );
        // Drafts only show when asked for, e.g. a publisher's own.
        let template = templates::create_template(&*s, "carol", &user_spec("draft one", "x"))
            .await
            .unwrap();
        templates::publish_template(
            &*s,
            "carol",
            &template.id,
            listing("draft-one", "Draft support", "", &[], ""),
            "",
        )
        .await
        .unwrap();
        assert_eq!(
            s.search_listings(&find(Some("support"), ListingSort::Newest), Page::default())
                .await
                .unwrap()
                .len(),
            2
        );
        let mine = ListingSearch {
            publisher_id: Some("carol".into()),
            statuses: vec![ListingStatus::Draft, ListingStatus::Approved],
            ..ListingSearch::default()
        };
        assert_eq!(
            slugs(s.search_listings(&mine, Page::default()).await.unwrap()),
            ["draft-one", "math-tutor"]
        );
    }
}
