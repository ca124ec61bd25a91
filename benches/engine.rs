//! Scheduler overhead (issue 3, item 10): `cargo bench -p chatter-benches --bench engine`.
//!
//! * `chain_1000`: a 1 000-node chain of no-op nodes; the time per element is the per-step
//!   overhead (target ≤ 1 µs).
//! * `chain_10`: a 10-node chain, per run (target ≤ 20 µs).
//! * `fan_out_100`: 1 → 100 → 1 with a join.
//! * `loop_100`: a loop node driving 100 passes of a body (the scheduler part of a ReAct loop).
//! * `react_100_tool_calls`: the built-in `llm` ⇄ `tool` nodes with the scripted model asking for
//!   a stub tool 100 times (old condition phrases on the edges); time per tool call.
//!
//! Each run is a prepared definition run on a current-thread runtime, events and node runs
//! recorded as in production.

#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;

use async_trait::async_trait;
use chatter_benches::{chain, engine_builder};
use chatter_core::engine::{Engine, ExecutionStatus, Limits, PreparedWorkflow, RunOptions};
use chatter_core::providers::ScriptedModel;
use chatter_core::tools::StubTools;
use chatter_core::{
    ModelRegistry, Node, NodeContext, NodeOutput, NodeSpec, Result, Route, WorkflowBuilder,
    WorkflowDefinition,
};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use serde_json::{Value, json};

/// Continues while `ctx.iteration < max_iterations`.
struct Loop(u32);

#[async_trait]
impl Node for Loop {
    async fn run(&self, ctx: NodeContext) -> Result<NodeOutput> {
        let branch = if ctx.iteration < self.0 {
            "continue"
        } else {
            "done"
        };
        Ok(NodeOutput {
            route: Route::Branch(branch.into()),
            ..NodeOutput::default()
        })
    }
}

fn engine() -> Engine {
    engine_builder()
        .limits(Limits::default().max_steps(100_000).max_concurrency(128))
        .register_node("loop", |spec: &NodeSpec| {
            let max = spec
                .config_value("max_iterations")
                .and_then(Value::as_u64)
                .unwrap_or(10);
            Ok(Arc::new(Loop(max as u32)) as Arc<dyn Node>)
        })
        .build()
}

fn fan_out(width: usize) -> WorkflowDefinition {
    let mut b = WorkflowBuilder::new()
        .flat()
        .node("src", "noop")
        .node("sink", "noop");
    for i in 0..width {
        b = b
            .node(format!("m{i}"), "noop")
            .edge("src", format!("m{i}"))
            .edge(format!("m{i}"), "sink");
    }
    b.build().unwrap()
}

fn loop_def(passes: u64) -> WorkflowDefinition {
    WorkflowDefinition::from_value(&json!({
        "nodes": [
            {"id": "entry", "type": "noop"},
            {"id": "loop", "type": "loop", "config": {"max_iterations": passes}},
            {"id": "body", "type": "noop"},
            {"id": "done", "type": "noop"}
        ],
        "edges": [
            {"source": "entry", "target": "loop"},
            {"source": "loop", "target": "body", "sourceHandle": "continue"},
            {"source": "body", "target": "loop"},
            {"source": "loop", "target": "done", "sourceHandle": "done"}
        ]
    }))
    .unwrap()
}

fn bench_run(c: &mut Criterion, name: &str, def: &WorkflowDefinition, elements: u64) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let engine = engine();
    let prepared: PreparedWorkflow = engine
        .prepare(def)
        .unwrap_or_else(|e| panic!("{name}: {e}"));
    // Sanity: it runs to completion.
    let r = rt.block_on(engine.run_prepared(&prepared, json!({}), RunOptions::default()));
    assert_eq!(r.status, ExecutionStatus::Completed, "{:?}", r.error);
    let mut group = c.benchmark_group("engine");
    group.throughput(Throughput::Elements(elements));
    group.bench_function(name, |b| {
        b.iter(|| {
            rt.block_on(engine.run_prepared(
                &prepared,
                json!({}),
                RunOptions::default().execution_id("bench"),
            ))
        });
    });
    group.finish();
}

/// llm ⇄ tool until 100 tool calls were made (the tool node's `max_total_calls` ends it).
fn react_engine() -> Engine {
    let model = ScriptedModel::from_value(json!({
        "default": {"tool_calls": [{"name": "search", "arguments": {"q": "chatter"}}]},
        "usage": {"prompt_tokens": 10, "completion_tokens": 5}
    }))
    .unwrap();
    model.record_requests(false);
    let mut models = ModelRegistry::new();
    models.register("scripted", Arc::new(model));
    let stubs = StubTools::from_value(json!({"search": {"result": {"hits": 3}}})).unwrap();
    stubs.record_calls(false);
    let tools = stubs.registry();
    Engine::builder()
        .models(models)
        .tools(tools)
        .limits(Limits::default().max_steps(100_000).max_tokens(None))
        .build()
}

fn react_def() -> WorkflowDefinition {
    WorkflowDefinition::from_value(&json!({
        "nodes": [
            {"id": "start", "type": "start"},
            {"id": "agent", "type": "llm", "config": {"tools": ["search"], "stream": false}},
            {"id": "tools", "type": "tool", "config": {"max_total_calls": 100, "repetition_detection": "off", "max_consecutive_calls": 1000}},
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

fn bench_react(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let engine = react_engine();
    let prepared = engine.prepare(&react_def()).unwrap();
    let r = rt.block_on(engine.run_prepared(
        &prepared,
        json!({"message": "go"}),
        RunOptions::default(),
    ));
    assert_eq!(r.status, ExecutionStatus::Completed, "{:?}", r.error);
    let calls = r.node_runs.iter().filter(|n| n.node_id == "tools").count();
    assert_eq!(calls, 101, "100 calls and the run that stops");
    let mut group = c.benchmark_group("engine");
    group.throughput(Throughput::Elements(100));
    group.bench_function("react_100_tool_calls", |b| {
        b.iter(|| {
            rt.block_on(engine.run_prepared(
                &prepared,
                json!({"message": "go"}),
                RunOptions::default().execution_id("bench"),
            ))
        });
    });
    group.finish();
}

fn benches(c: &mut Criterion) {
    bench_react(c);
    bench_run(c, "chain_1000", &chain(1000), 1000);
    bench_run(c, "chain_10", &chain(10), 1);
    bench_run(c, "fan_out_100", &fan_out(100), 102);
    bench_run(c, "loop_100", &loop_def(100), 203);
    let engine = engine();
    let def = chain(10);
    c.bench_function("engine/prepare_chain_10", |b| {
        b.iter(|| engine.prepare(&def).unwrap());
    });
}

criterion_group!(engine_benches, benches);
criterion_main!(engine_benches);
