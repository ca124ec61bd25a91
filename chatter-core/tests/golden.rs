//! Golden event traces: a fixture (definition, input, limits, scripted behaviour) run with a
//! fixed clock and tokio's paused clock must produce exactly the recorded trace.
//!
//! Fixtures live in `tests/golden/<name>.fixture.json`, traces in `<name>.trace.json`.
//! `UPDATE_GOLDEN=1 cargo test -p chatter-core --test golden` rewrites the traces; review the
//! diff before committing it.
//!
//! Fixture keys: `definition` (or `template`: `{name, params}` of a built-in template), `input`, optional `limits` (fields of `Limits`), optional
//! `cancel_after_tokens` (cancel once that many `token` events were seen), optional `model`
//! (a scripted model, for fixtures of the built-in nodes) and `tools` (stub tools).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod engine_support;

use std::path::PathBuf;
use std::sync::Arc;

use chatter_core::engine::{Engine, ExecutionResult, Limits, RunOptions};
use chatter_core::event::EventKind;
use chatter_core::providers::ScriptedModel;
use chatter_core::templates::builtin_templates;
use chatter_core::tools::StubTools;
use chatter_core::{ModelRegistry, ToolRegistry, WorkflowDefinition};
use futures::StreamExt;
use serde_json::{Value, json};

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/golden")
}

fn read_json(path: &PathBuf) -> Value {
    let text = std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("bad JSON in {}: {e}", path.display()))
}

/// The recorded form of a result: everything but wall-clock-dependent fields is kept.
fn trace_of(r: &ExecutionResult) -> Value {
    json!({
        "status": r.status,
        "response": r.response,
        "error": r.error,
        "usage": r.usage,
        "variables": r.variables,
        "errors": r.errors,
        "node_runs": r.node_runs.iter().map(|n| json!({
            "node_id": n.node_id,
            "iteration": n.iteration,
            "attempt": n.attempt,
            "status": n.status,
            "error": n.error,
        })).collect::<Vec<_>>(),
        "events": r.events,
    })
}

async fn execute(engine: &Engine, name: &str, fixture: &Value) -> ExecutionResult {
    let def = match fixture.get("template") {
        // A built-in template, generated in memory with the given parameters.
        Some(t) => {
            let template = builtin_templates()
                .into_iter()
                .find(|b| b.name == t["name"].as_str().unwrap())
                .unwrap();
            let params = template.merge_params(&t["params"]).unwrap();
            template.generate(&params).unwrap()
        }
        None => WorkflowDefinition::from_value(&fixture["definition"]).unwrap(),
    };
    let mut limits = Limits::default();
    if let Some(l) = fixture.get("limits") {
        let mut merged = serde_json::to_value(&limits).unwrap();
        for (k, v) in l.as_object().unwrap() {
            merged[k] = v.clone();
        }
        limits = serde_json::from_value(merged).unwrap();
    }
    let options = RunOptions::default()
        .execution_id(format!("golden-{name}"))
        .limits(limits);
    let input = fixture.get("input").cloned().unwrap_or(json!({}));
    let handle = engine.start(&def, input, options).unwrap();
    if let Some(after) = fixture.get("cancel_after_tokens").and_then(Value::as_u64) {
        let mut stream = handle.subscribe();
        let mut tokens = 0;
        while let Some(event) = stream.next().await {
            if matches!(event.kind, EventKind::Token { .. }) {
                tokens += 1;
                if tokens == after {
                    handle.cancel();
                }
            }
        }
    }
    handle.result().await.unwrap()
}

fn check(name: &str, engine: Engine) {
    let fixture = read_json(&dir().join(format!("{name}.fixture.json")));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .unwrap();
    let result = rt.block_on(execute(&engine, name, &fixture));
    let actual = trace_of(&result);
    let path = dir().join(format!("{name}.trace.json"));
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        let text = serde_json::to_string_pretty(&actual).unwrap() + "\n";
        std::fs::write(&path, text).unwrap();
        return;
    }
    let expected = read_json(&path);
    if actual != expected {
        panic!(
            "golden trace {name} differs (UPDATE_GOLDEN=1 to regenerate)\n--- expected\n{}\n--- actual\n{}",
            serde_json::to_string_pretty(&expected).unwrap(),
            serde_json::to_string_pretty(&actual).unwrap()
        );
    }
}

/// The engine with the test node kinds (`tests/engine_support`) and a fixed clock.
fn test_kinds() -> Engine {
    engine_support::engine()
}

/// The engine with the built-in node kinds, the fixture's scripted model (`model`, registered
/// as provider `scripted`) and stub tools (`tools`), and a fixed clock.
fn builtins(name: &str) -> Engine {
    let fixture = read_json(&dir().join(format!("{name}.fixture.json")));
    let mut models = ModelRegistry::new();
    if let Some(model) = fixture.get("model") {
        let scripted = ScriptedModel::from_value(model.clone()).unwrap();
        models.register("scripted", Arc::new(scripted));
    }
    let tools = match fixture.get("tools") {
        Some(tools) => StubTools::from_value(tools.clone()).unwrap().registry(),
        None => ToolRegistry::new(),
    };
    Engine::builder()
        .models(models)
        .tools(tools)
        .clock(Arc::new(engine_support::FixedClock::new(1_700_000_000_000)))
        .build()
}

macro_rules! golden {
    ($($name:ident => $engine:expr),* $(,)?) => {
        $(
            #[test]
            fn $name() {
                check(stringify!($name), $engine);
            }
        )*
    };
}

golden! {
    chain => test_kinds(),
    fan_out_fan_in => test_kinds(),
    join_behind_conditional => test_kinds(),
    nested_loops => test_kinds(),
    error_branch => test_kinds(),
    retry_then_success => test_kinds(),
    node_timeout => test_kinds(),
    cancel_mid_stream => test_kinds(),
    budget_exceeded => test_kinds(),
    error_handler_retry => test_kinds(),
    max_steps => test_kinds(),
    panic_contained => test_kinds(),
    join_any => test_kinds(),
    stop_cancels_branch => test_kinds(),
    execution_timeout => test_kinds(),
    loop_side_exit => test_kinds(),
}

#[test]
fn universal_chat() {
    check("universal_chat", builtins("universal_chat"));
}

#[test]
fn tool_loop_max_tool_calls() {
    check(
        "tool_loop_max_tool_calls",
        builtins("tool_loop_max_tool_calls"),
    );
}

#[test]
fn conditional_routing_by_expression() {
    check(
        "conditional_routing_by_expression",
        builtins("conditional_routing_by_expression"),
    );
}
