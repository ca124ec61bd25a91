//! Scheduler tests (issue 3): dataflow, routing, joins, loops, errors, limits, cancellation,
//! events.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod engine_support;

use std::sync::Arc;

use async_trait::async_trait;
use chatter_core::engine::{ExecutionStatus, Limits, NodeRunStatus, RunOptions, SubgraphRunner};
use chatter_core::event::EventKind;
use chatter_core::{
    Error, Node, NodeContext, NodeOutput, NodeSpec, Result, StateDelta, VariableOp,
    WorkflowDefinition,
};
use engine_support::{engine, event_types, node_events, trace};
use futures::StreamExt;
use serde_json::{Value, json};

/// A definition from compact JSON: nodes `[id, kind, config?]`, edges `[source, target,
/// handle?]` or `{source, target, ...}`.
fn graph(nodes: Value, edges: Value) -> WorkflowDefinition {
    let nodes: Vec<Value> = nodes
        .as_array()
        .unwrap()
        .iter()
        .map(|n| {
            let a = n.as_array().unwrap();
            json!({"id": a[0], "type": a[1], "config": a.get(2).cloned().unwrap_or(json!({}))})
        })
        .collect();
    let edges: Vec<Value> = edges
        .as_array()
        .unwrap()
        .iter()
        .map(|e| match e {
            Value::Array(a) => {
                let mut edge = json!({"source": a[0], "target": a[1]});
                if let Some(h) = a.get(2) {
                    edge["sourceHandle"] = h.clone();
                }
                edge
            }
            other => other.clone(),
        })
        .collect();
    WorkflowDefinition::from_value(&json!({"nodes": nodes, "edges": edges})).unwrap()
}

async fn run(def: &WorkflowDefinition) -> chatter_core::ExecutionResult {
    engine()
        .run(def, json!({"message": "hi"}), RunOptions::default())
        .await
        .unwrap()
}

async fn run_with(def: &WorkflowDefinition, limits: Limits) -> chatter_core::ExecutionResult {
    engine()
        .run(def, json!({}), RunOptions::default().limits(limits))
        .await
        .unwrap()
}

#[tokio::test]
async fn chain_runs_in_order_with_contiguous_events() {
    let def = graph(
        json!([["start", "start"], ["a", "noop"], ["b", "emit", {"tokens": ["Hel", "lo"]}], ["end", "end"]]),
        json!([["start", "a"], ["a", "b"], ["b", "end"]]),
    );
    let r = engine()
        .run(
            &def,
            json!({"message": "hi"}),
            RunOptions::default().execution_id("ex-1"),
        )
        .await
        .unwrap();
    assert_eq!(r.status, ExecutionStatus::Completed);
    assert_eq!(r.execution_id, "ex-1");
    assert_eq!(trace(&r), ["start#0", "a#0", "b#0", "end#0"]);
    assert_eq!(r.response.as_deref(), Some("Hello"));
    assert_eq!(r.usage.total_tokens, 4);
    assert_eq!(r.messages.len(), 2);
    assert_eq!(
        event_types(&r),
        [
            "execution_started",
            "node_started",
            "node_completed",
            "node_started",
            "node_completed",
            "node_started",
            "token",
            "token",
            "node_completed",
            "node_started",
            "node_completed",
            "execution_completed"
        ]
    );
    let seqs: Vec<u64> = r.events.iter().map(|e| e.seq).collect();
    assert_eq!(seqs, (1..=r.events.len() as u64).collect::<Vec<_>>());
    assert!(r.events.iter().all(|e| e.execution_id == "ex-1"));
    assert_eq!(
        r.node_runs
            .iter()
            .map(|n| n.node_id.as_str())
            .collect::<Vec<_>>(),
        ["start", "a", "b", "end"]
    );
    assert!(
        r.node_runs
            .iter()
            .all(|n| n.status == NodeRunStatus::Completed && n.attempt == 1)
    );
}

#[tokio::test]
async fn discarded_events_leave_the_result_whole_and_the_stream_empty() {
    let def = graph(
        json!([["start", "start"], ["a", "noop"], ["b", "emit", {"tokens": ["Hel", "lo"]}], ["end", "end"]]),
        json!([["start", "a"], ["a", "b"], ["b", "end"]]),
    );
    let engine = engine();
    let kept = engine
        .run(&def, json!({"message": "hi"}), RunOptions::default())
        .await
        .unwrap();
    let handle = engine
        .start(
            &def,
            json!({"message": "hi"}),
            RunOptions::default().discard_events(true),
        )
        .unwrap();
    let streamed: Vec<_> = handle.subscribe().collect().await;
    let quiet = handle.result().await.unwrap();
    assert!(streamed.is_empty(), "{streamed:?}");
    assert!(quiet.events.is_empty(), "{:?}", quiet.events);
    assert_eq!(quiet.status, ExecutionStatus::Completed);
    assert_eq!(quiet.response.as_deref(), Some("Hello"));
    assert_eq!(quiet.usage.total_tokens, kept.usage.total_tokens);
    assert_eq!(quiet.messages, kept.messages);
    assert_eq!(trace(&quiet), trace(&kept));
    // The next run of the same engine keeps its events again.
    let again = engine
        .run(&def, json!({"message": "hi"}), RunOptions::default())
        .await
        .unwrap();
    assert_eq!(event_types(&again), event_types(&kept));
}

#[tokio::test]
async fn default_execution_id_is_a_ulid() {
    let def = graph(json!([["a", "noop"]]), json!([]));
    let r = run(&def).await;
    assert_eq!(r.execution_id.len(), 26);
    assert!(r.execution_id.parse::<ulid::Ulid>().is_ok());
}

#[tokio::test]
async fn fan_out_and_join_all_runs_the_join_once_after_every_branch() {
    let def = graph(
        json!([
            ["start", "start"],
            ["a1", "noop"],
            ["a2", "noop"],
            ["a3", "noop"],
            ["b", "noop"],
            ["join", "noop"],
            ["end", "end"]
        ]),
        json!([
            ["start", "a1"],
            ["a1", "a2"],
            ["a2", "a3"],
            ["a3", "join"],
            ["start", "b"],
            ["b", "join"],
            ["join", "end"]
        ]),
    );
    let r = run(&def).await;
    assert_eq!(r.status, ExecutionStatus::Completed);
    let t = trace(&r);
    assert_eq!(t.iter().filter(|s| *s == "join#0").count(), 1);
    let pos = |s: &str| t.iter().position(|x| x == s).unwrap();
    assert!(pos("join#0") > pos("a3#0") && pos("join#0") > pos("b#0"));
    assert_eq!(t.last().unwrap(), "end#0");
}

#[tokio::test(start_paused = true)]
async fn a_slow_branch_does_not_delay_an_unrelated_branch() {
    // start -> slow (10 s) -> slow_end; start -> f1 -> f2 -> f3 (fast, no join with slow).
    let def = graph(
        json!([["start", "start"], ["slow", "sleep", {"ms": 10000}], ["slow_end", "noop"],
               ["f1", "sleep", {"ms": 1}], ["f2", "sleep", {"ms": 1}], ["f3", "noop"]]),
        json!([
            ["start", "slow"],
            ["slow", "slow_end"],
            ["start", "f1"],
            ["f1", "f2"],
            ["f2", "f3"]
        ]),
    );
    let r = run(&def).await;
    let ev = node_events(&r);
    let pos = |s: &str| ev.iter().position(|x| x == s).unwrap();
    // The fast branch finishes entirely while the slow node is still running.
    assert!(pos("done f3#0") < pos("done slow#0"), "{ev:?}");
    assert!(pos("start slow#0") < pos("start f2#0"));
}

#[tokio::test]
async fn exclusive_branch_kills_the_other_path_and_the_join_still_runs_once() {
    // A join behind a conditional: the false path (two nodes long) is dead.
    let def = graph(
        json!([["start", "start"], ["check", "branch", {"take": "true"}], ["yes", "noop"],
               ["no1", "noop"], ["no2", "noop"], ["join", "noop"], ["end", "end"]]),
        json!([
            ["start", "check"],
            ["check", "yes", "true"],
            ["check", "no1", "false"],
            ["no1", "no2"],
            ["yes", "join"],
            ["no2", "join"],
            ["join", "end"]
        ]),
    );
    let r = run(&def).await;
    assert_eq!(r.status, ExecutionStatus::Completed);
    assert_eq!(
        trace(&r),
        ["start#0", "check#0", "yes#0", "join#0", "end#0"]
    );
    let skipped: Vec<&str> = r
        .node_runs
        .iter()
        .filter(|n| n.status == NodeRunStatus::Skipped)
        .map(|n| n.node_id.as_str())
        .collect();
    assert_eq!(skipped, ["no1", "no2"]);
    assert!(event_types(&r).contains(&"node_skipped"));
}

#[tokio::test]
async fn a_join_whose_inputs_are_all_dead_is_skipped_and_deadness_propagates() {
    let def = graph(
        json!([["start", "start"], ["check", "branch", {"take": "false"}], ["a", "noop"], ["b", "noop"],
               ["join", "noop"], ["after", "noop"], ["other", "noop"], ["end", "end"]]),
        json!([
            ["check", "a", "true"],
            ["check", "b", "true"],
            ["a", "join"],
            ["b", "join"],
            ["join", "after"],
            ["after", "end"],
            ["check", "other", "false"],
            ["other", "end"],
            ["start", "check"]
        ]),
    );
    let r = run(&def).await;
    assert_eq!(r.status, ExecutionStatus::Completed);
    assert_eq!(trace(&r), ["start#0", "check#0", "other#0", "end#0"]);
    for id in ["a", "b", "join", "after"] {
        assert_eq!(
            r.runs_of(id).next().unwrap().status,
            NodeRunStatus::Skipped,
            "{id}"
        );
    }
}

#[tokio::test]
async fn join_any_runs_at_the_first_taken_edge_and_only_once() {
    let def = graph(
        json!([["start", "start"], ["fast", "noop"], ["slow", "sleep", {"ms": 30}], ["any", "noop", {"join": "any"}]]),
        json!([
            ["start", "fast"],
            ["start", "slow"],
            ["fast", "any"],
            ["slow", "any"]
        ]),
    );
    let r = run(&def).await;
    let t = trace(&r);
    assert_eq!(t.iter().filter(|s| *s == "any#0").count(), 1);
    let ev = node_events(&r);
    let pos = |s: &str| ev.iter().position(|x| x == s).unwrap();
    assert!(pos("done any#0") < pos("done slow#0"), "{ev:?}");
}

#[tokio::test]
async fn conditions_that_do_not_hold_fall_back_to_the_unconditional_edge() {
    // With every condition false the unconditional edge is the default; a node with only
    // conditional edges ends its path.
    let def = graph(
        json!([
            ["start", "start"],
            ["a", "noop"],
            ["b", "noop"],
            ["default", "noop"],
            ["c", "noop"],
            ["d", "noop"]
        ]),
        json!([
            {"source": "start", "target": "a", "condition": "variables.x == 1"},
            {"source": "start", "target": "b", "condition": "variables.x == 2"},
            ["start", "default"],
            {"source": "default", "target": "c", "condition": "variables.y == 1"},
            {"source": "c", "target": "d"}
        ]),
    );
    let r = run(&def).await;
    assert_eq!(r.status, ExecutionStatus::Completed);
    assert_eq!(trace(&r), ["start#0", "default#0"]);
    let skipped: Vec<&str> = r
        .node_runs
        .iter()
        .filter(|n| n.status == NodeRunStatus::Skipped)
        .map(|n| n.node_id.as_str())
        .collect();
    assert_eq!(skipped, ["a", "b", "c", "d"]);
}

#[tokio::test]
async fn the_first_true_condition_in_document_order_is_taken_exclusively() {
    let def = graph(
        json!([
            ["start", "start"],
            ["a", "noop"],
            ["b", "noop"],
            ["default", "noop"]
        ]),
        json!([
            {"source": "start", "target": "a", "condition": "input.n > 1"},
            {"source": "start", "target": "b", "condition": "input.n > 0"},
            ["start", "default"]
        ]),
    );
    let r = engine()
        .run(&def, json!({"n": 5}), RunOptions::default())
        .await
        .unwrap();
    assert_eq!(trace(&r), ["start#0", "a#0"]);
    let r = engine()
        .run(&def, json!({"n": 1}), RunOptions::default())
        .await
        .unwrap();
    assert_eq!(trace(&r), ["start#0", "b#0"]);
}

#[tokio::test]
async fn a_loop_iterates_then_exits_and_the_exit_path_is_not_skipped_early() {
    let def = graph(
        json!([["start", "start"], ["loop", "loop", {"max_iterations": 3}], ["body", "noop"], ["end", "end"]]),
        json!([
            ["start", "loop"],
            ["loop", "body", "continue"],
            ["body", "loop"],
            ["loop", "end", "done"]
        ]),
    );
    let r = run(&def).await;
    assert_eq!(r.status, ExecutionStatus::Completed);
    assert_eq!(
        trace(&r),
        [
            "start#0", "loop#0", "body#0", "loop#1", "body#1", "loop#2", "body#2", "loop#3",
            "end#0"
        ]
    );
    assert!(
        !event_types(&r).contains(&"node_skipped"),
        "{:?}",
        node_events(&r)
    );
}

#[tokio::test]
async fn nested_loops_count_afresh_on_each_outer_pass() {
    // outer (2 passes) -> inner (3 passes) -> body -> inner; inner done -> tail -> outer.
    let def = graph(
        json!([["start", "start"], ["outer", "loop", {"max_iterations": 2, "trace": true}],
               ["inner", "loop", {"max_iterations": 3}], ["body", "noop", {"trace": false}],
               ["tail", "noop", {"trace": false}], ["end", "end", {"trace": false}]]),
        json!([
            ["start", "outer"],
            ["outer", "inner", "continue"],
            ["inner", "body", "continue"],
            ["body", "inner"],
            ["inner", "tail", "done"],
            ["tail", "outer"],
            ["outer", "end", "done"]
        ]),
    );
    let r = run(&def).await;
    assert_eq!(r.status, ExecutionStatus::Completed, "{:?}", r.error);
    assert_eq!(
        trace(&r),
        [
            "start#0", "outer#0", "inner#0", "inner#1", "inner#2", "inner#3", "outer#1", "inner#0",
            "inner#1", "inner#2", "inner#3", "outer#2"
        ]
    );
    assert_eq!(
        r.runs_of("body").map(|b| b.iteration).collect::<Vec<_>>(),
        [0, 1, 2, 0, 1, 2]
    );
    assert_eq!(r.runs_of("end").count(), 1);
    assert!(!event_types(&r).contains(&"node_skipped"));
}

#[tokio::test]
async fn a_loop_that_ignores_its_bound_is_stopped_by_max_iterations() {
    let def = graph(
        json!([["start", "start"], ["loop", "loop", {"max_iterations": 2, "exit_at": 100}], ["body", "noop"]]),
        json!([
            ["start", "loop"],
            ["loop", "body", "continue"],
            ["body", "loop"]
        ]),
    );
    let r = run(&def).await;
    // Passes 0, 1 and 2 run; pass 3 exceeds the bound of 2 the node should have honoured.
    assert_eq!(r.runs_of("loop").count(), 3);
    assert_eq!(r.status, ExecutionStatus::Failed);
    let err = r.error.clone().unwrap();
    assert_eq!(err.class, "max_iterations");
    assert_eq!(
        err.message,
        "limit `max_iterations` exceeded: loop node `loop` entered for pass 3 of at most 2"
    );
}

#[tokio::test]
async fn max_steps_ends_an_endless_cycle() {
    // A cycle without a loop node: only max_steps bounds it.
    let def = graph(
        json!([["start", "start"], ["a", "noop", {"trace": false}], ["b", "noop", {"trace": false}]]),
        json!([["start", "a"], ["a", "b"], ["b", "a"]]),
    );
    let r = run_with(&def, Limits::default().max_steps(25)).await;
    assert_eq!(r.status, ExecutionStatus::Failed);
    let err = r.error.as_ref().unwrap();
    assert_eq!(err.class, "max_steps");
    assert!(
        err.message
            .starts_with("limit `max_steps` exceeded: 25 node runs"),
        "{}",
        err.message
    );
    assert_eq!(r.node_runs.len(), 25);
    assert_eq!(r.runs_of("a").last().unwrap().iteration, 11);
    match &r.events.last().unwrap().kind {
        EventKind::ExecutionFailed { class, .. } => assert_eq!(class, "max_steps"),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn error_branch_is_taken_instead_of_failing() {
    let def = graph(
        json!([["start", "start"], ["risky", "fail", {"message": "boom"}], ["ok", "noop"], ["recover", "noop"], ["end", "end"]]),
        json!([
            ["start", "risky"],
            ["risky", "ok"],
            ["risky", "recover", "error"],
            ["ok", "end"],
            ["recover", "end"]
        ]),
    );
    let r = run(&def).await;
    assert_eq!(r.status, ExecutionStatus::Completed);
    assert_eq!(trace(&r), ["start#0", "recover#0", "end#0"]);
    assert_eq!(
        r.runs_of("risky").next().unwrap().status,
        NodeRunStatus::Failed
    );
    assert_eq!(
        r.runs_of("ok").next().unwrap().status,
        NodeRunStatus::Skipped
    );
    assert_eq!(r.errors.len(), 1);
    assert_eq!(r.errors[0].node_id, "risky");
    assert_eq!(r.errors[0].kind, "tool");
    assert_eq!(r.errors[0].message, "node `risky` failed: boom");
}

#[tokio::test]
async fn on_error_continue_records_the_error_and_follows_the_edges() {
    let def = graph(
        json!([["start", "start"], ["risky", "fail", {"on_error": "continue"}], ["next", "noop"]]),
        json!([["start", "risky"], ["risky", "next"]]),
    );
    let r = run(&def).await;
    assert_eq!(r.status, ExecutionStatus::Completed);
    assert_eq!(trace(&r), ["start#0", "next#0"]);
    assert_eq!(r.errors.len(), 1);
}

#[tokio::test]
async fn an_unhandled_failure_fails_the_execution() {
    let def = graph(
        json!([["start", "start"], ["risky", "fail", {"class": "model", "message": "garbage"}], ["next", "noop"]]),
        json!([["start", "risky"], ["risky", "next"]]),
    );
    let r = run(&def).await;
    assert_eq!(r.status, ExecutionStatus::Failed);
    let err = r.error.clone().unwrap();
    assert_eq!(
        (err.class.as_str(), err.node_id.as_deref()),
        ("model", Some("risky"))
    );
    assert_eq!(err.message, "node `risky` failed: garbage");
    assert!(r.runs_of("next").next().is_none());
    assert_eq!(event_types(&r).last(), Some(&"execution_failed"));
}

#[tokio::test(start_paused = true)]
async fn retry_then_success_with_exponential_backoff() {
    let def = graph(
        json!([["start", "start"], ["flaky", "flaky", {"fail_times": 2, "class": "rate_limit",
               "retry": {"max_attempts": 3, "backoff_ms": 100, "jitter": false}}], ["end", "end"]]),
        json!([["start", "flaky"], ["flaky", "end"]]),
    );
    let r = run(&def).await;
    assert_eq!(r.status, ExecutionStatus::Completed);
    let retries: Vec<(u32, u64)> = r
        .events
        .iter()
        .filter_map(|e| match &e.kind {
            EventKind::NodeRetrying {
                attempt, delay_ms, ..
            } => Some((*attempt, *delay_ms)),
            _ => None,
        })
        .collect();
    assert_eq!(retries, [(1, 100), (2, 200)]);
    let run = r.runs_of("flaky").next().unwrap();
    assert_eq!((run.attempt, run.status), (3, NodeRunStatus::Completed));
    assert_eq!(
        node_events(&r),
        [
            "start start#0",
            "done start#0",
            "start flaky#0",
            "retry flaky",
            "start flaky#0",
            "retry flaky",
            "start flaky#0",
            "done flaky#0",
            "start end#0",
            "done end#0"
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn retries_only_the_classes_of_retry_on() {
    let def = graph(
        json!([["flaky", "flaky", {"fail_times": 1, "class": "tool",
                 "retry": {"max_attempts": 3, "backoff_ms": 1}}]]),
        json!([]),
    );
    let r = run(&def).await;
    assert_eq!(r.status, ExecutionStatus::Failed);
    assert!(!event_types(&r).contains(&"node_retrying"));
    let mut def = def;
    def.node_mut("flaky").unwrap().set_config(
        "retry",
        json!({"max_attempts": 2, "backoff_ms": 1, "retry_on": ["tool"]}),
    );
    let r = run(&def).await;
    assert_eq!(r.status, ExecutionStatus::Completed);
}

#[tokio::test(start_paused = true)]
async fn a_node_timeout_fails_the_node_with_class_timeout() {
    let def = graph(
        json!([["start", "start"], ["slow", "sleep", {"ms": 5000, "timeout_ms": 100}], ["end", "end"]]),
        json!([["start", "slow"], ["slow", "end"]]),
    );
    let r = run(&def).await;
    assert_eq!(r.status, ExecutionStatus::Failed);
    let err = r.error.clone().unwrap();
    assert_eq!(err.class, "timeout");
    assert_eq!(err.message, "node `slow` timed out after 100 ms");
    // The engine default applies when the node sets none.
    let mut def2 = def.clone();
    def2.node_mut("slow").unwrap().config.remove("timeout_ms");
    let r = run_with(&def2, Limits::default().node_timeout_ms(50)).await;
    assert_eq!(
        r.error.unwrap().message,
        "node `slow` timed out after 50 ms"
    );
}

#[tokio::test(start_paused = true)]
async fn the_execution_timeout_stops_everything() {
    let def = graph(json!([["slow", "sleep", {"ms": 5000}]]), json!([]));
    let r = run_with(&def, Limits::default().execution_timeout_ms(1000)).await;
    assert_eq!(r.status, ExecutionStatus::Failed);
    assert_eq!(r.error.as_ref().unwrap().class, "timeout");
    assert_eq!(
        r.runs_of("slow").next().unwrap().status,
        NodeRunStatus::Cancelled
    );
}

#[tokio::test(start_paused = true)]
async fn cancellation_mid_run_stops_running_nodes_and_keeps_every_event() {
    let def = graph(
        json!([["start", "start"], ["talk", "emit", {"tokens": ["a", "b", "c", "d"], "pause_ms": 100}], ["end", "end"]]),
        json!([["start", "talk"], ["talk", "end"]]),
    );
    let handle = engine()
        .start(&def, json!({}), RunOptions::default())
        .unwrap();
    let mut stream = handle.subscribe();
    let mut seen = Vec::new();
    while let Some(event) = stream.next().await {
        let is_token = matches!(event.kind, EventKind::Token { .. });
        seen.push(event);
        if is_token
            && seen
                .iter()
                .filter(|e| matches!(e.kind, EventKind::Token { .. }))
                .count()
                == 2
        {
            handle.cancel();
        }
    }
    let r = handle.result().await.unwrap();
    assert_eq!(r.status, ExecutionStatus::Cancelled);
    assert_eq!(r.events, seen, "the stream saw every event");
    assert_eq!(event_types(&r).last(), Some(&"execution_cancelled"));
    assert_eq!(
        r.runs_of("talk").next().unwrap().status,
        NodeRunStatus::Cancelled
    );
    assert!(r.runs_of("end").next().is_none());
    let tokens = event_types(&r).iter().filter(|t| **t == "token").count();
    assert_eq!(tokens, 2);
}

#[tokio::test]
async fn a_token_budget_exceeded_fails_with_budget_exceeded() {
    let def = graph(
        json!([["start", "start"], ["u1", "usage", {"tokens": 60}], ["u2", "usage", {"tokens": 60}], ["u3", "noop"]]),
        json!([["start", "u1"], ["u1", "u2"], ["u2", "u3"]]),
    );
    let r = run_with(&def, Limits::default().max_tokens(Some(100))).await;
    assert_eq!(r.status, ExecutionStatus::Failed);
    let err = r.error.clone().unwrap();
    assert_eq!(err.class, "budget_exceeded");
    assert_eq!(err.node_id.as_deref(), Some("u2"));
    assert_eq!(
        err.message,
        "limit `max_tokens` exceeded: 120 tokens used, budget 100"
    );
    assert_eq!(r.usage.total_tokens, 120);
    assert!(r.runs_of("u3").next().is_none());
    match &r.events.last().unwrap().kind {
        EventKind::ExecutionFailed { class, .. } => assert_eq!(class, "budget_exceeded"),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn a_panicking_node_is_contained_and_fails_by_its_policy() {
    let def = graph(
        json!([["start", "start"], ["bad", "panic"], ["next", "noop"]]),
        json!([["start", "bad"], ["bad", "next"]]),
    );
    let r = run(&def).await;
    assert_eq!(r.status, ExecutionStatus::Failed);
    let err = r.error.clone().unwrap();
    assert_eq!(err.class, "internal");
    assert_eq!(
        err.message,
        "node `bad` failed: node panicked: test node bad panicked"
    );
    let mut def = def;
    def.node_mut("bad")
        .unwrap()
        .set_config("on_error", json!("continue"));
    let r = run(&def).await;
    assert_eq!(r.status, ExecutionStatus::Completed);
    assert_eq!(trace(&r), ["start#0", "next#0"]);
}

#[tokio::test]
async fn an_error_handler_catches_and_continues() {
    let def = graph(
        json!([
            ["start", "start"],
            ["risky", "fail"],
            ["handler", "error_handler"],
            ["end", "end"]
        ]),
        json!([
            ["start", "risky"],
            ["risky", "end"],
            ["risky", "handler"],
            ["handler", "end"]
        ]),
    );
    let r = run(&def).await;
    assert_eq!(r.status, ExecutionStatus::Completed, "{:?}", r.error);
    assert_eq!(trace(&r), ["start#0", "handler#0", "end#0"]);
    assert_eq!(
        r.variables["handled"],
        json!([{"node": "risky", "class": "tool", "retries": 0}])
    );
    assert_eq!(r.runs_of("end").count(), 1);
}

#[tokio::test]
async fn an_error_handler_is_skipped_when_nothing_fails() {
    let def = graph(
        json!([
            ["start", "start"],
            ["fine", "noop"],
            ["handler", "error_handler"],
            ["end", "end"]
        ]),
        json!([
            ["start", "fine"],
            ["fine", "end"],
            ["fine", "handler"],
            ["handler", "end"]
        ]),
    );
    let r = run(&def).await;
    assert_eq!(r.status, ExecutionStatus::Completed);
    assert_eq!(trace(&r), ["start#0", "fine#0", "end#0"]);
    assert_eq!(
        r.runs_of("handler").next().unwrap().status,
        NodeRunStatus::Skipped
    );
}

#[tokio::test]
async fn an_error_handler_retries_the_failed_node_until_it_succeeds() {
    let def = graph(
        json!([["start", "start"], ["flaky", "flaky", {"fail_times": 2, "class": "tool"}],
               ["handler", "error_handler", {"retry_count": 3}], ["after", "noop"], ["end", "end"]]),
        json!([
            ["start", "flaky"],
            ["flaky", "end"],
            ["flaky", "handler"],
            ["handler", "after"],
            ["after", "end"]
        ]),
    );
    let r = run(&def).await;
    assert_eq!(r.status, ExecutionStatus::Completed, "{:?}", r.error);
    assert_eq!(
        r.variables["handled"],
        json!([{"node": "flaky", "class": "tool", "retries": 0},
               {"node": "flaky", "class": "tool", "retries": 1}])
    );
    assert_eq!(
        trace(&r),
        ["start#0", "handler#0", "handler#1", "flaky#0", "end#0"]
    );
    let attempts: Vec<(u32, NodeRunStatus)> =
        r.runs_of("flaky").map(|n| (n.attempt, n.status)).collect();
    assert_eq!(
        attempts,
        [
            (1, NodeRunStatus::Failed),
            (2, NodeRunStatus::Failed),
            (3, NodeRunStatus::Completed)
        ]
    );
    assert_eq!(
        r.runs_of("after").next().unwrap().status,
        NodeRunStatus::Skipped
    );
}

#[tokio::test]
async fn an_error_handler_that_gives_up_stops_the_execution() {
    let def = graph(
        json!([["start", "start"], ["risky", "fail"],
               ["handler", "error_handler", {"retry_count": 1, "fallback_action": "stop"}], ["end", "end"]]),
        json!([
            ["start", "risky"],
            ["risky", "end"],
            ["risky", "handler"],
            ["handler", "end"]
        ]),
    );
    let r = run(&def).await;
    assert_eq!(r.status, ExecutionStatus::Failed);
    let err = r.error.clone().unwrap();
    assert_eq!(err.message, "handler gave up on risky");
    assert_eq!(err.node_id.as_deref(), Some("handler"));
    assert_eq!(r.runs_of("risky").count(), 2);
}

#[tokio::test(start_paused = true)]
async fn stop_ends_the_execution_and_cancels_other_branches() {
    let def = graph(
        json!([["start", "start"], ["pre", "sleep", {"ms": 10}], ["halt", "stop"],
               ["slow", "sleep", {"ms": 1000}], ["never", "noop"]]),
        json!([
            ["start", "pre"],
            ["pre", "halt"],
            ["start", "slow"],
            ["halt", "never"]
        ]),
    );
    let r = run(&def).await;
    assert_eq!(r.status, ExecutionStatus::Completed);
    assert_eq!(
        r.runs_of("slow").next().unwrap().status,
        NodeRunStatus::Cancelled
    );
    assert!(r.runs_of("never").next().is_none());
    assert_eq!(event_types(&r).last(), Some(&"execution_completed"));
}

#[tokio::test(start_paused = true)]
async fn max_concurrency_bounds_the_fan_out() {
    let def = graph(
        json!([["start", "start"], ["a", "sleep", {"ms": 10}], ["b", "sleep", {"ms": 10}], ["c", "sleep", {"ms": 10}]]),
        json!([["start", "a"], ["start", "b"], ["start", "c"]]),
    );
    let r = run_with(&def, Limits::default().max_concurrency(1)).await;
    assert_eq!(
        node_events(&r),
        [
            "start start#0",
            "done start#0",
            "start a#0",
            "done a#0",
            "start b#0",
            "done b#0",
            "start c#0",
            "done c#0"
        ]
    );
    let r = run_with(&def, Limits::default().max_concurrency(3)).await;
    assert_eq!(
        &node_events(&r)[2..5],
        ["start a#0", "start b#0", "start c#0"]
    );
}

#[tokio::test(start_paused = true)]
async fn late_and_resuming_subscribers_see_every_event_in_order() {
    let def = graph(
        json!([["start", "start"], ["talk", "emit", {"tokens": ["x", "y"], "pause_ms": 5}], ["end", "end"]]),
        json!([["start", "talk"], ["talk", "end"]]),
    );
    let handle = engine()
        .start(&def, json!({}), RunOptions::default())
        .unwrap();
    let early = handle.subscribe();
    let r_events: Vec<_> = early.collect().await;
    let late: Vec<_> = handle.subscribe().collect().await;
    let resumed: Vec<_> = handle.subscribe_from(3).collect().await;
    let r = handle.result().await.unwrap();
    assert_eq!(r_events, r.events);
    assert_eq!(late, r.events);
    assert_eq!(resumed, r.events[3..].to_vec());
}

#[tokio::test]
async fn an_unknown_node_kind_is_refused_before_anything_runs() {
    let def = graph(json!([["x", "no_such_kind"]]), json!([]));
    match engine().run(&def, json!({}), RunOptions::default()).await {
        Err(Error::NotFound { what, name }) => {
            assert_eq!(
                (what.as_str(), name.as_str()),
                ("node kind", "no_such_kind")
            );
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn an_invalid_definition_is_refused_with_the_report() {
    // An edge to a node that does not exist is a validation error; nothing runs.
    let def = WorkflowDefinition::from_value(&json!({
        "nodes": [{"id": "a", "type": "noop"}],
        "edges": [{"source": "a", "target": "ghost"}]
    }))
    .unwrap();
    let e = engine_support::builder().validate_before_run(true).build();
    match e.run(&def, json!({}), RunOptions::default()).await {
        Err(Error::Invalid(report)) => {
            assert!(!report.is_valid());
            assert!(report.errors().all(|i| i.code != "CHT-V006"), "{report:?}");
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn kinds_with_a_factory_pass_validation_and_run() {
    let e = engine_support::builder().validate_before_run(true).build();
    let def = graph(json!([["a", "noop"], ["b", "noop"]]), json!([["a", "b"]]));
    let r = e.run(&def, json!({}), RunOptions::default()).await.unwrap();
    assert_eq!(trace(&r), ["a#0", "b#0"]);
}

#[tokio::test]
async fn history_and_owner_reach_the_state() {
    let def = graph(json!([["a", "noop"]]), json!([]));
    let r = engine()
        .run(
            &def,
            json!({"message": "now", "variables": {"k": 1}}),
            RunOptions::default()
                .history(vec![chatter_core::Message::user("before")])
                .owner("u1"),
        )
        .await
        .unwrap();
    let texts: Vec<&str> = r.messages.iter().map(|m| m.content.as_str()).collect();
    assert_eq!(texts, ["before", "now"]);
    assert_eq!(r.variables["k"], 1);
    assert_eq!(r.owner.as_deref(), Some("u1"));
}

#[tokio::test]
async fn the_result_serialises_with_snake_case_statuses() {
    let def = graph(json!([["a", "noop"]]), json!([]));
    let r = run(&def).await;
    let v = serde_json::to_value(&r).unwrap();
    assert_eq!(v["status"], "completed");
    assert_eq!(v["node_runs"][0]["status"], "completed");
    assert_eq!(v["node_runs"][0]["node_id"], "a");
    assert_eq!(v["events"][0]["type"], "execution_started");
    let back: chatter_core::ExecutionResult = serde_json::from_value(v).unwrap();
    assert_eq!(back, r);
}

/// A node that runs a child graph through the engine's [`SubgraphRunner`].
struct Child;

#[async_trait]
impl Node for Child {
    async fn run(&self, ctx: NodeContext) -> Result<NodeOutput> {
        let def = graph(
            json!([["c1", "usage", {"tokens": 5}], ["c2", "emit", {"tokens": ["sub"]}]]),
            json!([["c1", "c2"]]),
        );
        let runner: Arc<dyn SubgraphRunner> = ctx.subgraphs.clone().unwrap();
        let out = runner
            .run_subgraph(
                &ctx,
                Arc::new(def),
                json!({"variables": {"from": "parent"}}),
            )
            .await?;
        Ok(NodeOutput::delta(StateDelta {
            usage: Some(out.usage),
            variables: vec![(
                "child".into(),
                VariableOp::Set(json!({
                    "response": out.response,
                    "trace": out.state.variable("trace"),
                    "from": out.state.variable("from"),
                })),
            )],
            ..StateDelta::default()
        }))
    }
}

#[tokio::test]
async fn subgraphs_run_through_the_engine_and_share_budgets() {
    let e = engine_support::builder()
        .register_node("child", |_: &NodeSpec| Ok(Arc::new(Child) as Arc<dyn Node>))
        .build();
    let def = graph(json!([["parent", "child"]]), json!([]));
    let r = e.run(&def, json!({}), RunOptions::default()).await.unwrap();
    assert_eq!(r.status, ExecutionStatus::Completed, "{:?}", r.error);
    assert_eq!(
        r.variables["child"],
        json!({"response": "sub", "trace": ["c1#0", "c2#0"], "from": "parent"})
    );
    assert_eq!(r.usage.total_tokens, 7);
    // The child's tokens are forwarded to the parent's stream.
    assert!(
        r.events
            .iter()
            .any(|e| matches!(&e.kind, EventKind::Token { text, .. } if text == "sub"))
    );
    // A budget smaller than the child needs fails the child, and so the parent node.
    let r = e
        .run(
            &def,
            json!({}),
            RunOptions::default().limits(Limits::default().max_tokens(Some(4))),
        )
        .await
        .unwrap();
    assert_eq!(r.status, ExecutionStatus::Failed);
    assert!(
        r.error
            .unwrap()
            .message
            .contains("sub-graph failed at node `c1`")
    );
}

#[test]
fn start_outside_a_runtime_is_an_error_not_a_panic() {
    let def = graph(json!([["a", "noop"]]), json!([]));
    match engine().start(&def, json!({}), RunOptions::default()) {
        Err(Error::Config { message }) => assert!(message.contains("tokio runtime")),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn a_branch_without_handles_routes_by_the_edge_conditions() {
    // The old platform's conditional: conditions on the edges, no true/false handles.
    let def = graph(
        json!([["start", "start"], ["check", "branch", {"take": "true"}], ["a", "noop"], ["fallback", "noop"]]),
        json!([
            ["start", "check"],
            {"source": "check", "target": "a", "condition": "variables.x == 1"},
            ["check", "fallback"]
        ]),
    );
    let r = run(&def).await;
    assert_eq!(trace(&r), ["start#0", "check#0", "fallback#0"]);
}

#[tokio::test]
async fn an_edge_leaving_a_loop_on_every_pass_starts_a_wave_per_pass() {
    // body -> side leaves the cycle on each pass; the loop's exit joins with side's path later.
    let def = graph(
        json!([["start", "start"], ["loop", "loop", {"max_iterations": 3}], ["body", "noop"],
               ["side", "noop"], ["end", "end"]]),
        json!([
            ["start", "loop"],
            ["loop", "body", "continue"],
            ["body", "loop"],
            ["body", "side"],
            ["loop", "end", "done"]
        ]),
    );
    let r = run(&def).await;
    assert_eq!(r.status, ExecutionStatus::Completed);
    assert_eq!(
        r.runs_of("side").map(|n| n.iteration).collect::<Vec<_>>(),
        [0, 1, 2]
    );
    assert_eq!(r.runs_of("end").count(), 1);
    assert!(
        !event_types(&r).contains(&"node_skipped"),
        "{:?}",
        node_events(&r)
    );
}

#[tokio::test]
async fn a_join_after_a_loop_waits_for_the_loop_to_finish() {
    // start -> loop (3 passes) -> end; start -> other -> end. `end` joins both, once.
    let def = graph(
        json!([["start", "start"], ["loop", "loop", {"max_iterations": 3}], ["body", "sleep", {"ms": 1}],
               ["other", "noop"], ["end", "end"]]),
        json!([
            ["start", "loop"],
            ["loop", "body", "continue"],
            ["body", "loop"],
            ["loop", "end", "done"],
            ["start", "other"],
            ["other", "end"]
        ]),
    );
    let r = run(&def).await;
    assert_eq!(r.status, ExecutionStatus::Completed);
    let t = trace(&r);
    assert_eq!(
        t.iter().filter(|s| s.starts_with("end")).count(),
        1,
        "{t:?}"
    );
    assert_eq!(t.last().unwrap(), "end#0");
    assert!(t.iter().position(|s| s == "loop#3") < t.iter().position(|s| s == "end#0"));
}

#[tokio::test]
async fn a_join_inside_a_loop_body_runs_once_per_pass() {
    // Each pass: check picks a branch, the other is dead, the join inside the body runs once.
    let def = graph(
        json!([["start", "start"], ["loop", "loop", {"max_iterations": 2}], ["check", "branch", {"take": "true"}],
               ["yes", "noop"], ["no", "noop"], ["join", "noop"], ["end", "end"]]),
        json!([
            ["start", "loop"],
            ["loop", "check", "continue"],
            ["check", "yes", "true"],
            ["check", "no", "false"],
            ["yes", "join"],
            ["no", "join"],
            ["join", "loop"],
            ["loop", "end", "done"]
        ]),
    );
    let r = run(&def).await;
    assert_eq!(r.status, ExecutionStatus::Completed);
    assert_eq!(
        trace(&r),
        [
            "start#0", "loop#0", "check#0", "yes#0", "join#0", "loop#1", "check#1", "yes#1",
            "join#1", "loop#2", "end#0"
        ]
    );
    assert!(r.runs_of("no").next().is_none());
}

#[tokio::test]
async fn a_loop_on_a_dead_path_is_skipped_and_its_exit_resolved() {
    let def = graph(
        json!([["start", "start"], ["check", "branch", {"take": "false"}], ["loop", "loop"], ["body", "noop"],
               ["other", "noop"], ["end", "end"]]),
        json!([
            ["start", "check"],
            ["check", "loop", "true"],
            ["loop", "body", "continue"],
            ["body", "loop"],
            ["loop", "end", "done"],
            ["check", "other", "false"],
            ["other", "end"]
        ]),
    );
    let r = run(&def).await;
    assert_eq!(r.status, ExecutionStatus::Completed);
    assert_eq!(trace(&r), ["start#0", "check#0", "other#0", "end#0"]);
    assert_eq!(
        r.runs_of("loop").next().unwrap().status,
        NodeRunStatus::Skipped
    );
    assert_eq!(
        r.runs_of("body").next().unwrap().status,
        NodeRunStatus::Skipped
    );
}

/// A node that runs a sub-graph made of itself: only the depth limit stops it.
struct Recurse;

#[async_trait]
impl Node for Recurse {
    async fn run(&self, ctx: NodeContext) -> Result<NodeOutput> {
        let def = graph(json!([["again", "recurse"]]), json!([]));
        let runner = ctx.subgraphs.clone().unwrap();
        runner.run_subgraph(&ctx, Arc::new(def), json!({})).await?;
        Ok(NodeOutput::default())
    }
}

#[tokio::test]
async fn self_nesting_subgraphs_stop_at_the_depth_limit() {
    let e = engine_support::builder()
        .register_node("recurse", |_: &NodeSpec| {
            Ok(Arc::new(Recurse) as Arc<dyn Node>)
        })
        .build();
    let def = graph(json!([["top", "recurse"]]), json!([]));
    let r = e
        .run(&def, json!({}), RunOptions::default().execution_id("x"))
        .await
        .unwrap();
    assert_eq!(r.status, ExecutionStatus::Failed);
    let message = r.error.unwrap().message;
    assert!(
        message.contains("limit `subgraph_depth` exceeded"),
        "{message}"
    );
}

#[tokio::test]
async fn a_cost_budget_exceeded_fails_with_budget_exceeded() {
    let def = graph(
        json!([["u1", "usage", {"tokens": 1, "cost": 0.75}], ["u2", "usage", {"tokens": 1, "cost": 0.5}]]),
        json!([["u1", "u2"]]),
    );
    let r = run_with(&def, Limits::default().max_cost(Some(1.0))).await;
    assert_eq!(r.status, ExecutionStatus::Failed);
    let err = r.error.clone().unwrap();
    assert_eq!(err.class, "budget_exceeded");
    assert_eq!(
        err.message,
        "limit `max_cost` exceeded: cost 1.250000 USD, budget 1 USD"
    );
    let r = run_with(&def, Limits::default().max_cost(None)).await;
    assert_eq!(r.status, ExecutionStatus::Completed);
    assert!((r.usage.cost - 1.25).abs() < 1e-9);
}

#[tokio::test]
async fn join_any_fires_on_a_later_taken_edge_when_the_first_is_dead() {
    let def = graph(
        json!([["start", "start"], ["check", "branch", {"take": "false"}], ["a", "noop"],
               ["b", "sleep", {"ms": 5}], ["any", "noop", {"join": "any"}]]),
        json!([
            ["start", "check"],
            ["check", "a", "true"],
            ["check", "b", "false"],
            ["a", "any"],
            ["b", "any"]
        ]),
    );
    let r = run(&def).await;
    assert_eq!(trace(&r), ["start#0", "check#0", "b#0", "any#0"]);
}

#[tokio::test(start_paused = true)]
async fn replaying_the_recorded_deltas_in_order_reproduces_the_final_state() {
    // Concurrent branches finishing in an order unrelated to document order.
    let def = graph(
        json!([["start", "start"], ["slow", "sleep", {"ms": 30, "set": {"last": "slow"}}],
               ["fast", "sleep", {"ms": 10, "set": {"last": "fast"}}],
               ["talk", "emit", {"tokens": ["a", "b"], "pause_ms": 8}], ["end", "end"]]),
        json!([
            ["start", "slow"],
            ["start", "fast"],
            ["start", "talk"],
            ["slow", "end"],
            ["fast", "end"],
            ["talk", "end"]
        ]),
    );
    let input = json!({"message": "q", "variables": {"seed": 1}});
    let r = engine()
        .run(&def, input.clone(), RunOptions::default())
        .await
        .unwrap();
    assert_eq!(
        r.completed_nodes(),
        ["start", "fast", "talk", "slow", "end"],
        "node runs are in completion order"
    );
    assert_eq!(r.variables["last"], "slow");
    let mut state = chatter_core::State::new(input, Vec::new());
    for run in &r.node_runs {
        state.apply(&run.delta);
    }
    assert_eq!(state.variables(), &r.variables);
    assert_eq!(state.messages(), r.messages.as_slice());
    assert_eq!(state.usage(), &r.usage);
}

#[tokio::test(start_paused = true)]
async fn a_slow_subscriber_misses_nothing() {
    let tokens: Vec<String> = (0..2000).map(|i| format!("t{i} ")).collect();
    let def = graph(json!([["talk", "emit", {"tokens": tokens}]]), json!([]));
    let handle = engine()
        .start(&def, json!({}), RunOptions::default())
        .unwrap();
    let mut stream = handle.subscribe();
    let mut seen = Vec::new();
    while let Some(event) = stream.next().await {
        if seen.len() % 100 == 0 {
            // Read slowly now and then: the execution runs ahead, the stream catches up.
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        seen.push(event);
    }
    let r = handle.result().await.unwrap();
    assert_eq!(seen.len(), 2000 + 4);
    assert_eq!(seen, r.events);
    let texts: Vec<String> = seen
        .iter()
        .filter_map(|e| match &e.kind {
            EventKind::Token { text, .. } => Some(text.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(texts, tokens);
}

#[tokio::test]
async fn a_node_no_entry_leads_to_is_dead_and_its_join_still_runs() {
    let def = graph(
        json!([
            ["start", "start"],
            ["a", "noop"],
            ["orphan", "noop"],
            ["join", "noop"]
        ]),
        json!([["start", "a"], ["a", "join"], ["orphan", "join"]]),
    );
    let r = run(&def).await;
    assert_eq!(trace(&r), ["start#0", "a#0", "join#0"]);
    assert_eq!(
        r.runs_of("orphan").next().unwrap().status,
        NodeRunStatus::Skipped
    );
}

/// Records what the engine reports to its observer.
#[derive(Default)]
struct Recorder(std::sync::Mutex<Vec<String>>);

impl chatter_core::engine::EngineObserver for Recorder {
    fn execution_started(&self) {
        self.0.lock().unwrap().push("started".into());
    }
    fn execution_ended(&self, status: ExecutionStatus, duration_ms: u64) {
        self.0
            .lock()
            .unwrap()
            .push(format!("ended {} {duration_ms}", status.as_str()));
    }
    fn node_ended(&self, kind: &str, status: NodeRunStatus, duration_ms: u64) {
        self.0
            .lock()
            .unwrap()
            .push(format!("node {kind} {} {duration_ms}", status.as_str()));
    }
}

#[tokio::test]
async fn the_observer_sees_top_level_executions_and_every_node_run() {
    let recorder = Arc::new(Recorder::default());
    let e = engine_support::builder()
        .clock(Arc::new(engine_support::FixedClock::new(1_700_000_000_000)))
        .register_node("child", |_: &NodeSpec| Ok(Arc::new(Child) as Arc<dyn Node>))
        .observer(recorder.clone())
        .build();
    let def = graph(json!([["parent", "child"]]), json!([]));
    let r = e.run(&def, json!({}), RunOptions::default()).await.unwrap();
    assert_eq!(r.status, ExecutionStatus::Completed, "{:?}", r.error);
    // The sub-graph's nodes end first, then its parent node; the sub-graph is no execution
    // of its own. The fixed clock makes every duration 0.
    assert_eq!(
        *recorder.0.lock().unwrap(),
        [
            "started",
            "node usage completed 0",
            "node emit completed 0",
            "node child completed 0",
            "ended completed 0",
        ]
    );
    recorder.0.lock().unwrap().clear();

    // A failing execution: the budget fails the child's first node, and so the parent.
    let r = e
        .run(
            &def,
            json!({}),
            RunOptions::default().limits(Limits::default().max_tokens(Some(4))),
        )
        .await
        .unwrap();
    assert_eq!(r.status, ExecutionStatus::Failed);
    let seen = recorder.0.lock().unwrap().clone();
    assert_eq!(seen.first().map(String::as_str), Some("started"));
    assert_eq!(seen.last().map(String::as_str), Some("ended failed 0"));
    assert!(seen.contains(&"node child failed 0".to_owned()), "{seen:?}");
    assert_eq!(seen.iter().filter(|s| *s == "started").count(), 1);
}

/// A clock one millisecond later at each read.
#[derive(Debug, Default)]
struct TickingClock(std::sync::atomic::AtomicI64);

impl chatter_core::engine::Clock for TickingClock {
    fn now_ms(&self) -> i64 {
        self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1
    }
}

#[tokio::test]
async fn a_node_run_starts_when_the_one_before_it_ended() {
    let e = engine_support::builder()
        .clock(Arc::new(TickingClock::default()))
        .build();
    let def = graph(
        json!([["s", "start"], ["a", "noop"], ["b", "noop"], ["z", "sleep", {"ms": 1}], ["c", "noop"], ["e", "end"]]),
        json!([["s", "a"], ["a", "b"], ["b", "z"], ["z", "c"], ["c", "e"]]),
    );
    let r = e.run(&def, json!({}), RunOptions::default()).await.unwrap();
    assert_eq!(r.status, ExecutionStatus::Completed, "{:?}", r.error);
    let times: Vec<(&str, i64, u64)> = r
        .node_runs
        .iter()
        .map(|n| (n.node_id.as_str(), n.started_at_ms, n.duration_ms))
        .collect();
    // Each node starts at the clock reading that ended the node before it (one read per
    // step), also after `z`, which waited: its end is read when its wait is over, and nothing
    // is awaited between that and `c`'s start.
    let ids: Vec<&str> = times.iter().map(|t| t.0).collect();
    assert_eq!(ids, ["s", "a", "b", "z", "c", "e"]);
    for pair in times.windows(2) {
        let ((_, start, duration), (_, next, _)) = (pair[0], pair[1]);
        assert_eq!(next, start + i64::try_from(duration).unwrap(), "{times:?}");
    }
    assert!(times.iter().all(|(_, _, d)| *d == 1), "{times:?}");
}

/// Hands its token to a task of its own (work a node started that outlives its future), which
/// records `id` in `seen` once the token is cancelled; then waits for a long time. With
/// `sub`, it first runs a sub-graph of one such node (`inner`).
struct Watch {
    id: String,
    sub: bool,
    seen: Arc<std::sync::Mutex<Vec<String>>>,
}

#[async_trait]
impl Node for Watch {
    async fn run(&self, ctx: NodeContext) -> Result<NodeOutput> {
        let (token, seen, id) = (ctx.cancel.clone(), self.seen.clone(), self.id.clone());
        tokio::spawn(async move {
            token.cancelled().await;
            seen.lock().unwrap().push(id);
        });
        if self.sub {
            let def = graph(json!([["inner", "watch"]]), json!([]));
            let runner = ctx.subgraphs.clone().unwrap();
            runner.run_subgraph(&ctx, Arc::new(def), json!({})).await?;
        }
        tokio::time::sleep(std::time::Duration::from_secs(3600)).await;
        Ok(NodeOutput::default())
    }
}

fn watching_engine(seen: &Arc<std::sync::Mutex<Vec<String>>>) -> chatter_core::Engine {
    let kind = |sub: bool| {
        let seen = seen.clone();
        move |spec: &NodeSpec| {
            Ok(Arc::new(Watch {
                id: spec.id.0.clone(),
                sub,
                seen: seen.clone(),
            }) as Arc<dyn Node>)
        }
    };
    engine_support::builder()
        .register_node("watch", kind(false))
        .register_node("watch_sub", kind(true))
        .build()
}

#[tokio::test(start_paused = true)]
async fn a_node_timeout_or_a_cancellation_reaches_the_work_a_node_handed_its_token() {
    // A node that times out: its token is cancelled, not only its future dropped.
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let e = watching_engine(&seen);
    let def = graph(
        json!([["s", "start"], ["slow", "watch", {"timeout_ms": 100}], ["other", "watch_sub"]]),
        json!([["s", "slow"]]),
    );
    // `other` (no edge in) is dead: only `slow` runs.
    let r = e.run(&def, json!({}), RunOptions::default()).await.unwrap();
    assert_eq!(r.status, ExecutionStatus::Failed);
    assert_eq!(r.error.unwrap().class, "timeout");
    tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    assert_eq!(*seen.lock().unwrap(), ["slow"]);

    // A cancelled execution: its nodes' tokens are cancelled, down into a sub-graph.
    seen.lock().unwrap().clear();
    let def = graph(
        json!([["s", "start"], ["outer", "watch_sub"]]),
        json!([["s", "outer"]]),
    );
    let handle = e.start(&def, json!({}), RunOptions::default()).unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    assert!(seen.lock().unwrap().is_empty(), "nothing cancelled yet");
    handle.cancel();
    let r = handle.result().await.unwrap();
    assert_eq!(r.status, ExecutionStatus::Cancelled);
    tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    let mut got = seen.lock().unwrap().clone();
    got.sort();
    assert_eq!(got, ["inner", "outer"]);
}

/// Runs a sub-graph whose one node sleeps for an hour (and does not look at its token),
/// cancels its own token after 50 ms, and records in `sub` how the sub-graph ended.
struct CancelsItsSubgraph;

/// Sleeps for an hour, deaf to its token.
struct Deaf;

#[async_trait]
impl Node for Deaf {
    async fn run(&self, _ctx: NodeContext) -> Result<NodeOutput> {
        tokio::time::sleep(std::time::Duration::from_secs(3600)).await;
        Ok(NodeOutput::default())
    }
}

#[async_trait]
impl Node for CancelsItsSubgraph {
    async fn run(&self, ctx: NodeContext) -> Result<NodeOutput> {
        let def = graph(json!([["nap", "deaf"]]), json!([]));
        let runner = ctx.subgraphs.clone().unwrap();
        let token = ctx.cancel.clone();
        let cancel = async move {
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            token.cancel();
        };
        let (ended, ()) = tokio::join!(runner.run_subgraph(&ctx, Arc::new(def), json!({})), cancel);
        let how = match ended {
            Err(Error::Cancelled { .. }) => "cancelled",
            Err(_) => "failed",
            Ok(_) => "completed",
        };
        Ok(NodeOutput::delta(StateDelta {
            variables: vec![("sub".into(), VariableOp::Set(json!(how)))],
            ..StateDelta::default()
        }))
    }
}

#[tokio::test(start_paused = true)]
async fn a_sub_graph_ends_cancelled_when_its_parent_nodes_token_is_cancelled() {
    let e = engine_support::builder()
        .register_node("parent", |_: &NodeSpec| {
            Ok(Arc::new(CancelsItsSubgraph) as Arc<dyn Node>)
        })
        .register_node("deaf", |_: &NodeSpec| Ok(Arc::new(Deaf) as Arc<dyn Node>))
        .build();
    let def = graph(
        json!([["s", "start"], ["p", "parent"]]),
        json!([["s", "p"]]),
    );
    let r = tokio::time::timeout(
        std::time::Duration::from_secs(60),
        e.run(&def, json!({}), RunOptions::default()),
    )
    .await
    .expect("the sub-graph stops when its parent's token is cancelled, though its node is deaf")
    .unwrap();
    assert_eq!(r.status, ExecutionStatus::Completed, "{:?}", r.error);
    assert_eq!(r.variables["sub"], "cancelled");
}
