//! Tests of the analytics: exact numbers on small graphs, both shapes, determinism.

use serde_json::json;

use super::*;
use crate::definition::{Branch, WorkflowBuilder};

fn linear() -> WorkflowDefinition {
    WorkflowBuilder::new()
        .node("start", "start")
        .node("a", "llm")
        .node("b", "tool")
        .node("end", "end")
        .edge("start", "a")
        .edge("a", "b")
        .edge("b", "end")
        .build()
        .unwrap()
}

#[test]
fn linear_chain_numbers() {
    let r = analyze(&linear());
    assert_eq!(
        r.complexity,
        ComplexityMetrics {
            score: 4 + 3 + 3,
            node_count: 4,
            edge_count: 3,
            depth: 3,
            branching_factor: 1.0,
            loop_complexity: 0,
            conditional_complexity: 0,
        }
    );
    assert_eq!(r.execution_paths, 1);
    assert_eq!(r.estimated_execution_time_ms, Some(3000));
    // A single path: no "on every path" bottleneck is reported.
    assert_eq!(r.bottlenecks, vec![]);
    assert_eq!(
        r.risk_factors,
        vec![
            "No error handling around 2 model/tool/HTTP call(s) (`a`, `b`): one failure fails the execution"
        ]
    );
    assert_eq!(r.optimization_suggestions.len(), 1);
    assert_eq!(r.optimization_suggestions[0].kind, "error_handling");
    assert_eq!(
        r.optimization_suggestions[0].node_ids,
        Some(vec!["a".to_owned(), "b".to_owned()])
    );
}

fn diamond() -> WorkflowDefinition {
    WorkflowBuilder::new()
        .node("start", "start")
        .node_with("check", "conditional", json!({"condition": "has_errors"}))
        .node("x", "llm")
        .node("y", "retrieval")
        .node("end", "end")
        .edge("start", "check")
        .branch("check", "x", Branch::True)
        .branch("check", "y", Branch::False)
        .edge("x", "end")
        .edge("y", "end")
        .build()
        .unwrap()
}

#[test]
fn diamond_numbers() {
    let r = analyze(&diamond());
    assert_eq!(r.complexity.depth, 3);
    assert_eq!(r.complexity.branching_factor, 1.25);
    assert_eq!(r.complexity.conditional_complexity, 3);
    assert_eq!(r.complexity.loop_complexity, 0);
    assert_eq!(r.complexity.score, 5 + 5 + 3 + 2 * 3);
    assert_eq!(r.execution_paths, 2);
    // Critical path: start 0 + check 1 + llm 2000 + end 0.
    assert_eq!(r.estimated_execution_time_ms, Some(2001));
}

#[test]
fn agent_loop_numbers_and_exits() {
    let d = WorkflowBuilder::new()
        .node("start", "start")
        .node_with("chat", "llm", json!({"max_tokens": 8000}))
        .node("tools", "tool")
        .node("end", "end")
        .edge("start", "chat")
        .edge_if("chat", "tools", "has_tool_calls")
        .edge("chat", "end")
        .edge("tools", "chat")
        .build()
        .unwrap();
    let r = analyze(&d);
    assert_eq!(r.complexity.depth, 2);
    assert_eq!(r.complexity.branching_factor, 1.33);
    assert_eq!(r.complexity.loop_complexity, 2);
    assert_eq!(r.complexity.conditional_complexity, 1);
    // `tools` only leads back into the loop: it is not an exit.
    assert_eq!(r.execution_paths, 1);
    assert_eq!(r.estimated_execution_time_ms, Some(3000));
    assert_eq!(
        r.bottlenecks,
        vec![BottleneckInfo {
            node_id: "chat".into(),
            node_type: "llm".into(),
            reason: "model call inside a loop with max_tokens 8000 and no timeout_ms".into(),
            severity: "high".into(),
            suggestions: vec![
                "Lower max_tokens for calls that repeat.".into(),
                "Set timeout_ms so one slow iteration cannot stall the loop.".into(),
            ],
        }]
    );
    assert_eq!(
        r.risk_factors[0],
        "Cycle through `chat`, `tools` has no loop node: only its conditions and the execution's max_steps bound it"
    );
    let kinds: Vec<&str> = r
        .optimization_suggestions
        .iter()
        .map(|s| s.kind.as_str())
        .collect();
    assert_eq!(kinds, vec!["error_handling", "reduce_max_tokens"]);
}

#[test]
fn loop_nodes_and_risky_limits() {
    let d = WorkflowBuilder::new()
        .node("start", "start")
        .node_with("again", "loop", json!({"max_iterations": 500}))
        .node_with(
            "tools",
            "tool",
            json!({"max_total_calls": 50, "on_error": "continue"}),
        )
        .node("end", "end")
        .edge("start", "again")
        .edge("again", "tools")
        .edge("tools", "again")
        .edge("again", "end")
        .build()
        .unwrap();
    let r = analyze(&d);
    // One back-edge (tools → again) and ⌈500 / 10⌉ for the loop node.
    assert_eq!(r.complexity.loop_complexity, 2 + 50);
    assert_eq!(
        r.risk_factors,
        vec![
            "Loop `again` allows up to 500 iterations, which looks unbounded".to_owned(),
            "Tool node `tools` in a loop allows up to 50 tool calls".to_owned(),
        ]
    );
    assert_eq!(r.optimization_suggestions[0].kind, "reduce_iterations");
    assert_eq!(
        r.optimization_suggestions[0].description,
        "Lower max_iterations of `again` from 500"
    );
}

#[test]
fn joins_and_nodes_on_every_path_are_bottlenecks() {
    let d = WorkflowBuilder::new()
        .node("start", "start")
        .node_with("first", "llm", json!({"retry": {"max_attempts": 3}}))
        .node("a", "variable")
        .node("b", "variable")
        .node("c", "variable")
        .node("merge", "variable")
        .node("end", "end")
        .edge("start", "first")
        .edge("first", "a")
        .edge("first", "b")
        .edge("first", "c")
        .edge("a", "merge")
        .edge("b", "merge")
        .edge("c", "merge")
        .edge("merge", "end")
        .build()
        .unwrap();
    let r = analyze(&d);
    assert_eq!(r.execution_paths, 3);
    let found: Vec<(&str, &str, &str)> = r
        .bottlenecks
        .iter()
        .map(|b| (b.node_id.as_str(), b.severity.as_str(), b.reason.as_str()))
        .collect();
    assert_eq!(
        found,
        vec![
            (
                "first",
                "medium",
                "on every path from the entry to an exit: a slow or failing `llm` call here holds up every execution"
            ),
            (
                "merge",
                "medium",
                "join of 3 in-edges: waits for every branch that can still arrive"
            ),
        ]
    );
    assert!(r.risk_factors.is_empty(), "{:?}", r.risk_factors);
    assert_eq!(r.optimization_suggestions[0].kind, "relax_join");
}

#[test]
fn independent_sequential_llm_calls_can_run_in_parallel() {
    let d = WorkflowBuilder::new()
        .node("start", "start")
        .node_with(
            "summary",
            "llm",
            json!({"prompt": "Summarise {{ input.message }}", "on_error": "continue"}),
        )
        .node_with(
            "title",
            "llm",
            json!({"prompt": "Give a title for {{ input.message }}", "on_error": "continue"}),
        )
        .node_with(
            "answer",
            "llm",
            json!({"prompt": "Reply to {{ last_message.content }}", "on_error": "continue"}),
        )
        .node("end", "end")
        .edge("start", "summary")
        .edge("summary", "title")
        .edge("title", "answer")
        .edge("answer", "end")
        .build()
        .unwrap();
    let r = analyze(&d);
    assert_eq!(
        r.optimization_suggestions,
        vec![OptimizationSuggestion {
            kind: "parallelize".into(),
            description:
                "Run `summary` and `title` in parallel: the second does not use the first's answer"
                    .into(),
            impact: "medium".into(),
            node_ids: Some(vec!["summary".into(), "title".into()]),
        }]
    );
}

#[test]
fn path_counts_saturate() {
    // 70 diamonds in a row: 2^70 paths.
    let mut b = WorkflowBuilder::new().node("start", "start");
    let mut prev = "start".to_owned();
    for i in 0..70 {
        let (l, r, j) = (format!("l{i}"), format!("r{i}"), format!("j{i}"));
        b = b
            .node(&l, "variable")
            .node(&r, "variable")
            .node(&j, "variable")
            .edge(&prev, &l)
            .edge(&prev, &r)
            .edge(&l, &j)
            .edge(&r, &j);
        prev = j;
    }
    let d = b.node("end", "end").edge(&prev, "end").build().unwrap();
    let r = analyze(&d);
    assert_eq!(r.execution_paths, u64::MAX);
    assert_eq!(r.complexity.depth, 70 * 2 + 1);
}

#[test]
fn both_shapes_give_the_same_numbers_and_results_are_deterministic() {
    let editor = diamond();
    let flat_doc = json!({
        "nodes": [
            {"id": "start", "type": "start"},
            {"id": "check", "type": "condition", "config": {"condition": "has_errors"}},
            {"id": "x", "type": "model"},
            {"id": "y", "type": "retrieval"},
            {"id": "end", "type": "end"}
        ],
        "edges": [
            {"source": "start", "target": "check"},
            {"source": "check", "target": "x", "sourceHandle": "true"},
            {"source": "check", "target": "y", "sourceHandle": "false"},
            {"source": "x", "target": "end"},
            {"source": "y", "target": "end"}
        ]
    });
    let flat = WorkflowDefinition::from_value(&flat_doc).unwrap();
    let a = analyze(&editor);
    assert_eq!(analyze(&flat), a);
    assert_eq!(analyze(&editor), a);
    let round_trip = WorkflowDefinition::from_json(&editor.to_json_pretty()).unwrap();
    assert_eq!(analyze(&round_trip), a);
    let json = serde_json::to_value(&a).unwrap();
    assert_eq!(json["complexity"]["branching_factor"], 1.25);
    assert!(json["optimization_suggestions"][0].get("type").is_some());
}

#[test]
fn broken_and_empty_definitions_get_numbers_not_panics() {
    let empty = analyze(&WorkflowDefinition::default());
    assert_eq!(empty.estimated_execution_time_ms, None);
    assert_eq!(empty.execution_paths, 0);
    assert_eq!(empty.complexity.branching_factor, 0.0);

    let cycle_only = WorkflowBuilder::new()
        .node("a", "llm")
        .node("b", "llm")
        .edge("a", "b")
        .edge("b", "a")
        .edge("b", "nowhere")
        .build()
        .unwrap();
    let r = analyze(&cycle_only);
    assert_eq!(r.execution_paths, 0);
    assert_eq!(r.complexity.depth, 1);
    assert_eq!(r.complexity.loop_complexity, 2);

    let n = 100_000;
    let mut b = WorkflowBuilder::new().node("start", "start");
    for i in 0..n {
        b = b.node(format!("n{i}"), "variable");
    }
    b = b.edge("start", "n0");
    for i in 1..n {
        b = b.edge(format!("n{}", i - 1), format!("n{i}"));
    }
    let long = b.edge(format!("n{}", n - 1), "n0").build().unwrap();
    let r = analyze(&long);
    assert_eq!(r.complexity.depth, n as u64);
    assert_eq!(r.estimated_execution_time_ms, Some(n as u64));
}
