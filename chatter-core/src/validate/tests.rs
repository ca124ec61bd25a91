//! Tests of the validator: every rule positive and negative, both shapes, hostile graphs,
//! determinism, the contract shapes.

use proptest::prelude::*;
use serde_json::{Value, json};

use super::codes::*;
use super::*;
use crate::definition::{Branch, Edge, WorkflowBuilder};

fn validate(def: &WorkflowDefinition) -> ValidationReport {
    WorkflowValidator::default().validate(def)
}

fn def(value: Value) -> WorkflowDefinition {
    WorkflowDefinition::from_value(&value).unwrap()
}

fn codes_of(report: &ValidationReport) -> Vec<&str> {
    report.issues.iter().map(|i| i.code.as_str()).collect()
}

/// The single issue with this code (fails when there are none or several).
fn only<'r>(report: &'r ValidationReport, code: &str) -> &'r ValidationIssue {
    let found: Vec<_> = report.issues.iter().filter(|i| i.code == code).collect();
    assert_eq!(found.len(), 1, "expected one {code}, report: {report:#?}");
    found[0]
}

fn assert_issue(
    issue: &ValidationIssue,
    severity: Severity,
    node_id: Option<&str>,
    edge_id: Option<&str>,
    path: &str,
    fragments: &[&str],
) {
    assert_eq!(issue.severity, severity, "{issue:#?}");
    assert_eq!(issue.node_id.as_deref(), node_id, "{issue:#?}");
    assert_eq!(issue.edge_id.as_deref(), edge_id, "{issue:#?}");
    assert_eq!(issue.path, path, "{issue:#?}");
    for fragment in fragments {
        assert!(
            issue.message.contains(fragment),
            "message {:?} lacks {fragment:?}",
            issue.message
        );
    }
}

/// start → chat → end, in the editor shape.
fn simple_editor() -> Value {
    json!({
        "nodes": [
            {"id": "start", "type": "start", "position": {"x": 0, "y": 0},
             "data": {"label": "Start", "nodeType": "start"}},
            {"id": "chat", "type": "model", "position": {"x": 200, "y": 0},
             "data": {"label": "Chat", "nodeType": "model",
                      "config": {"systemMessage": "You are helpful.", "maxTokens": 300}}},
            {"id": "end", "type": "end", "position": {"x": 400, "y": 0},
             "data": {"label": "End", "nodeType": "end"}}
        ],
        "edges": [
            {"id": "e1", "source": "start", "target": "chat"},
            {"id": "e2", "source": "chat", "target": "end"}
        ]
    })
}

/// start → chat → end, in the flat shape.
fn simple_flat() -> Value {
    json!({
        "nodes": [
            {"id": "start", "type": "start"},
            {"id": "chat", "type": "llm", "config": {"system_message": "You are helpful.", "max_tokens": 300}},
            {"id": "end", "type": "end"}
        ],
        "edges": [
            {"source": "start", "target": "chat"},
            {"source": "chat", "target": "end"}
        ]
    })
}

fn big_limits() -> WorkflowValidator {
    WorkflowValidator::new(
        ValidatorConfig::default()
            .with_max_nodes(1_000_000)
            .with_max_edges(1_000_000),
    )
}

#[test]
fn simple_graphs_of_both_shapes_are_clean() {
    assert_eq!(validate(&def(simple_editor())).issues, vec![]);
    assert_eq!(validate(&def(simple_flat())).issues, vec![]);
}

// ---------------------------------------------------------------- structure

#[test]
fn v024_empty_definition() {
    let report = validate(&def(json!({"nodes": [], "edges": []})));
    assert_eq!(codes_of(&report), vec![EMPTY_DEFINITION]);
    assert_issue(
        &report.issues[0],
        Severity::Error,
        None,
        None,
        "$.nodes",
        &["no nodes"],
    );
    assert_eq!(codes_of(&validate(&def(json!({})))), vec![EMPTY_DEFINITION]);
    assert!(!validate(&def(simple_flat())).has_code(EMPTY_DEFINITION));
}

#[test]
fn v019_v020_count_limits_are_configurable() {
    let report = WorkflowValidator::new(
        ValidatorConfig::default()
            .with_max_nodes(2)
            .with_max_edges(1),
    )
    .validate(&def(simple_flat()));
    assert_eq!(codes_of(&report), vec![TOO_MANY_NODES, TOO_MANY_EDGES]);
    assert_issue(
        &report.issues[0],
        Severity::Error,
        None,
        None,
        "$.nodes",
        &["the definition has 3 nodes; the limit is 2"],
    );
    assert_issue(
        &report.issues[1],
        Severity::Error,
        None,
        None,
        "$.edges",
        &["the definition has 2 edges; the limit is 1"],
    );
    let at_limit = WorkflowValidator::new(
        ValidatorConfig::default()
            .with_max_nodes(3)
            .with_max_edges(2),
    )
    .validate(&def(simple_flat()));
    assert_eq!(at_limit.issues, vec![]);
    assert_eq!(ValidatorConfig::default().max_nodes, 100);
    assert_eq!(ValidatorConfig::default().max_edges, 200);
}

#[test]
fn v001_missing_and_blank_node_ids() {
    let mut doc = simple_flat();
    doc["nodes"]
        .as_array_mut()
        .unwrap()
        .push(json!({"type": "llm"}));
    doc["nodes"]
        .as_array_mut()
        .unwrap()
        .push(json!({"id": "  ", "type": "llm"}));
    let report = validate(&def(doc));
    let v001: Vec<_> = report
        .issues
        .iter()
        .filter(|i| i.code == NODE_ID_MISSING)
        .collect();
    assert_eq!(v001.len(), 2);
    assert_issue(
        v001[0],
        Severity::Error,
        None,
        None,
        "$.nodes[3].id",
        &["node $.nodes[3] has no id"],
    );
    assert_issue(
        v001[1],
        Severity::Error,
        None,
        None,
        "$.nodes[4].id",
        &["blank id"],
    );
    // Nodes without an id take no part in graph rules (no V007/V008 noise about them).
    assert_eq!(codes_of(&report), vec![NODE_ID_MISSING, NODE_ID_MISSING]);
}

#[test]
fn v002_duplicate_node_id() {
    let mut doc = simple_editor();
    doc["nodes"].as_array_mut().unwrap().push(json!(
        {"id": "chat", "type": "llm", "data": {"nodeType": "llm"}}
    ));
    let report = validate(&def(doc));
    assert_eq!(codes_of(&report), vec![DUPLICATE_NODE_ID]);
    assert_issue(
        &report.issues[0],
        Severity::Error,
        Some("chat"),
        None,
        "$.nodes[3].id",
        &["duplicate node id `chat` (first used by $.nodes[1])"],
    );
}

#[test]
fn v003_duplicate_edge_id_only_for_written_ids() {
    let mut doc = simple_editor();
    doc["edges"][1]["id"] = json!("e1");
    let report = validate(&def(doc));
    assert_eq!(codes_of(&report), vec![DUPLICATE_EDGE_ID]);
    assert_issue(
        &report.issues[0],
        Severity::Error,
        None,
        Some("e1"),
        "$.edges[1].id",
        &["duplicate edge id `e1` (first used by $.edges[0])"],
    );
    // Flat edges carry no ids: generated ones never clash.
    assert!(!validate(&def(simple_flat())).has_code(DUPLICATE_EDGE_ID));
}

#[test]
fn v004_v005_edges_to_nowhere() {
    let mut doc = simple_editor();
    let edges = doc["edges"].as_array_mut().unwrap();
    edges.push(json!({"id": "bad1", "source": "", "target": "end"}));
    edges.push(json!({"id": "bad2", "source": "chat", "target": "ghost"}));
    edges.push(json!({"id": "bad3", "source": "phantom", "target": "end"}));
    let report = validate(&def(doc));
    assert_eq!(
        codes_of(&report),
        vec![
            EDGE_SOURCE_UNKNOWN,
            EDGE_SOURCE_UNKNOWN,
            EDGE_TARGET_UNKNOWN
        ]
    );
    assert_issue(
        &report.issues[0],
        Severity::Error,
        None,
        Some("bad1"),
        "$.edges[2].source",
        &["edge `bad1` has no source"],
    );
    assert_issue(
        &report.issues[1],
        Severity::Error,
        None,
        Some("bad3"),
        "$.edges[4].source",
        &["edge `bad3` source `phantom` is not a node of this definition"],
    );
    assert_issue(
        &report.issues[2],
        Severity::Error,
        None,
        Some("bad2"),
        "$.edges[3].target",
        &["edge `bad2` target `ghost` is not a node of this definition"],
    );
}

#[test]
fn v006_unknown_or_missing_kind_in_both_shapes() {
    let mut editor = simple_editor();
    editor["nodes"][1]["type"] = json!("wizard");
    editor["nodes"][1]["data"]["nodeType"] = json!("wizard");
    let report = validate(&def(editor));
    assert_eq!(codes_of(&report), vec![UNKNOWN_KIND]);
    assert_issue(
        &report.issues[0],
        Severity::Error,
        Some("chat"),
        None,
        "$.nodes[1].data.nodeType",
        &["node `Chat` has unknown kind `wizard`"],
    );

    let mut flat = simple_flat();
    flat["nodes"][1]["type"] = json!("wizard");
    let report = validate(&def(flat));
    assert_issue(
        only(&report, UNKNOWN_KIND),
        Severity::Error,
        Some("chat"),
        None,
        "$.nodes[1].type",
        &["unknown kind `wizard`"],
    );

    let mut missing = simple_flat();
    missing["nodes"][1].as_object_mut().unwrap().remove("type");
    let report = validate(&def(missing));
    assert_issue(
        only(&report, UNKNOWN_KIND),
        Severity::Error,
        Some("chat"),
        None,
        "$.nodes[1].type",
        &["node `chat` has no kind"],
    );

    // Aliases are known kinds.
    for alias in [
        "model",
        "call_model",
        "tools",
        "execute_tools",
        "errorHandler",
    ] {
        let mut doc = simple_flat();
        doc["nodes"][1]["type"] = json!(alias);
        doc["nodes"][1]["config"] = json!({});
        assert!(!validate(&def(doc)).has_code(UNKNOWN_KIND), "{alias}");
    }
}

// ---------------------------------------------------------------- entry and reachability

#[test]
fn v007_several_start_nodes() {
    let d = WorkflowBuilder::new()
        .node("s1", "start")
        .node("s2", "start")
        .node("s3", "start")
        .node("end", "end")
        .edge("s1", "end")
        .edge("s2", "end")
        .edge("s3", "end")
        .build()
        .unwrap();
    let report = validate(&d);
    assert_eq!(codes_of(&report), vec![NO_SINGLE_ENTRY, NO_SINGLE_ENTRY]);
    assert_issue(
        &report.issues[0],
        Severity::Error,
        Some("s2"),
        None,
        "$.nodes[1]",
        &["`s2` is one of 3 `start` nodes (`s1`, `s2`, `s3`); a workflow has exactly one entry"],
    );
    assert_eq!(report.issues[1].node_id.as_deref(), Some("s3"));
}

#[test]
fn v007_no_start_node_needs_exactly_one_source() {
    // One node without in-edges: it is the entry.
    let single = WorkflowBuilder::new()
        .node("a", "llm")
        .node("end", "end")
        .edge("a", "end")
        .build()
        .unwrap();
    assert_eq!(validate(&single).issues, vec![]);

    let two = WorkflowBuilder::new()
        .node("a", "llm")
        .node("b", "llm")
        .node("end", "end")
        .edge("a", "end")
        .edge("b", "end")
        .build()
        .unwrap();
    let report = validate(&two);
    assert_eq!(codes_of(&report), vec![NO_SINGLE_ENTRY]);
    assert_issue(
        &report.issues[0],
        Severity::Error,
        None,
        None,
        "$.nodes",
        &["no single entry: there is no `start` node and 2 nodes have no in-edges (`a`, `b`)"],
    );

    let none = WorkflowBuilder::new()
        .node("a", "loop")
        .node("end", "end")
        .edge("a", "a")
        .edge("a", "end")
        .build()
        .unwrap();
    let report = validate(&none);
    assert_eq!(codes_of(&report), vec![NO_SINGLE_ENTRY]);
    assert!(
        report.issues[0]
            .message
            .contains("every node has an in-edge")
    );
}

#[test]
fn v008_unreachable_nodes() {
    let d = WorkflowBuilder::new()
        .node("start", "start")
        .node("chat", "llm")
        .node("island", "llm")
        .node("end", "end")
        .edge("start", "chat")
        .edge("chat", "end")
        .edge("island", "end")
        .build()
        .unwrap();
    let report = validate(&d);
    assert_eq!(codes_of(&report), vec![UNREACHABLE]);
    assert_issue(
        &report.issues[0],
        Severity::Error,
        Some("island"),
        None,
        "$.nodes[2]",
        &["node `island` cannot be reached from the entry `start`"],
    );
}

#[test]
fn v009_nodes_that_cannot_reach_an_end() {
    let d = WorkflowBuilder::new()
        .node("start", "start")
        .node("chat", "llm")
        .node("dead_end", "llm")
        .node("end", "end")
        .edge("start", "chat")
        .edge("chat", "end")
        .edge("start", "dead_end")
        .build()
        .unwrap();
    let report = validate(&d);
    assert_eq!(codes_of(&report), vec![CANNOT_REACH_END]);
    assert_issue(
        &report.issues[0],
        Severity::Error,
        Some("dead_end"),
        None,
        "$.nodes[2]",
        &["node `dead_end` cannot reach an `end` node"],
    );

    // Without an `end` node, nodes without out-edges are the exits.
    let no_end = WorkflowBuilder::new()
        .node("start", "start")
        .node("a", "llm")
        .node("b", "llm")
        .edge("start", "a")
        .edge("start", "b")
        .build()
        .unwrap();
    assert_eq!(validate(&no_end).issues, vec![]);

    // Without an `end` node and with no node lacking out-edges, nothing can finish.
    let trapped = WorkflowBuilder::new()
        .node("start", "start")
        .node("spin", "loop")
        .edge("start", "spin")
        .edge("spin", "spin")
        .build()
        .unwrap();
    let report = validate(&trapped);
    assert_eq!(codes_of(&report), vec![CANNOT_REACH_END, CANNOT_REACH_END]);
    assert!(
        report.issues[0]
            .message
            .contains("the graph has no `end` node")
    );
}

// ---------------------------------------------------------------- cycles

#[test]
fn v010_self_loop_on_llm_node_is_an_error_on_loop_node_legal() {
    let llm = WorkflowBuilder::new()
        .node("start", "start")
        .node("chat", "llm")
        .node("end", "end")
        .edge("start", "chat")
        .edge("chat", "chat")
        .edge("chat", "end")
        .build()
        .unwrap();
    let report = validate(&llm);
    assert_eq!(codes_of(&report), vec![CYCLE_WITHOUT_EXIT]);
    assert_issue(
        &report.issues[0],
        Severity::Error,
        Some("chat"),
        Some("e2"),
        "$.nodes[1]",
        &["cycle without exit: `chat` → `chat`; no node in it can leave the cycle"],
    );

    let looped = WorkflowBuilder::new()
        .node("start", "start")
        .node_with("again", "loop", json!({"max_iterations": 3}))
        .node("end", "end")
        .edge("start", "again")
        .edge("again", "again")
        .edge("again", "end")
        .build()
        .unwrap();
    assert_eq!(validate(&looped).issues, vec![]);
}

#[test]
fn v010_reports_the_cycle_in_order_from_its_first_node() {
    let d = WorkflowBuilder::new()
        .node("start", "start")
        .node("a", "llm")
        .node("b", "tool")
        .node("c", "llm")
        .node("end", "end")
        .edge("start", "c")
        .edge("c", "a")
        .edge("a", "b")
        .edge("b", "c")
        .edge("c", "end")
        .build()
        .unwrap();
    let report = validate(&d);
    assert_eq!(codes_of(&report), vec![CYCLE_WITHOUT_EXIT]);
    assert_issue(
        &report.issues[0],
        Severity::Error,
        Some("a"),
        Some("e2"),
        "$.nodes[1]",
        &["cycle without exit: `a` → `b` → `c` → `a`;"],
    );
}

#[test]
fn v010_cycles_with_a_conditional_exit_are_legal() {
    // The agent loop: chat calls tools while the model asks for them, else finishes.
    let agent = WorkflowBuilder::new()
        .node("start", "start")
        .node("chat", "llm")
        .node("tools", "tool")
        .node("end", "end")
        .edge("start", "chat")
        .edge_if("chat", "tools", "has_tool_calls")
        .edge("chat", "end")
        .edge("tools", "chat")
        .build()
        .unwrap();
    assert_eq!(validate(&agent).issues, vec![]);

    // A conditional edge leaving the cycle.
    let leaving = WorkflowBuilder::new()
        .node("start", "start")
        .node("chat", "llm")
        .node("tools", "tool")
        .node("end", "end")
        .edge("start", "chat")
        .edge("chat", "tools")
        .edge_if("tools", "end", "no_tool_calls")
        .edge("tools", "chat")
        .build()
        .unwrap();
    assert_eq!(validate(&leaving).issues, vec![]);

    // A conditional node whose `false` branch leaves the cycle.
    let branching = WorkflowBuilder::new()
        .node("start", "start")
        .node("chat", "llm")
        .node_with(
            "more",
            "conditional",
            json!({"condition": "usage.total_tokens < 1000"}),
        )
        .node("end", "end")
        .edge("start", "chat")
        .edge("chat", "more")
        .branch("more", "chat", Branch::True)
        .branch("more", "end", Branch::False)
        .build()
        .unwrap();
    assert_eq!(validate(&branching).issues, vec![]);

    // An error handler routing back for another try: normal flow leaves the cycle.
    let retry = WorkflowBuilder::new()
        .node("start", "start")
        .node("chat", "llm")
        .node("handler", "error_handler")
        .node("end", "end")
        .edge("start", "chat")
        .branch("chat", "handler", Branch::Error)
        .edge("handler", "chat")
        .edge("chat", "end")
        .build()
        .unwrap();
    assert_eq!(validate(&retry).issues, vec![]);
}

#[test]
fn v010_choices_that_all_stay_in_the_cycle_are_no_exit() {
    // Both branches of the conditional node stay inside the cycle.
    let d = WorkflowBuilder::new()
        .node("start", "start")
        .node("chat", "llm")
        .node_with(
            "check",
            "conditional",
            json!({"condition": "usage.total_tokens < 1000"}),
        )
        .node("tools", "tool")
        .node("end", "end")
        .edge("start", "chat")
        .edge("chat", "check")
        .branch("check", "tools", Branch::True)
        .branch("check", "chat", Branch::False)
        .edge("tools", "chat")
        .edge("tools", "end")
        .build()
        .unwrap();
    let report = validate(&d);
    assert_eq!(codes_of(&report), vec![CYCLE_WITHOUT_EXIT]);
    assert!(
        report.issues[0]
            .message
            .contains("`chat` → `check` → `tools` → `chat`"),
        "{:?}",
        report.issues[0].message
    );
}

// ---------------------------------------------------------------- conditional branches

fn conditional_with(edges: &[(&str, Option<Branch>, Option<&str>)]) -> WorkflowDefinition {
    let mut b = WorkflowBuilder::new()
        .node("start", "start")
        .node_with(
            "check",
            "conditional",
            json!({"condition": "input.message is defined"}),
        )
        .node("yes", "llm")
        .node("no", "llm")
        .node("end", "end")
        .edge("start", "check")
        .edge("yes", "end")
        .edge("no", "end");
    for (target, branch, condition) in edges {
        b = match (branch, condition) {
            (Some(branch), _) => b.branch("check", *target, *branch),
            (None, Some(c)) => b.edge_if("check", *target, *c),
            (None, None) => b.edge("check", *target),
        };
    }
    b.build().unwrap()
}

#[test]
fn v011_conditional_node_branches() {
    let both = conditional_with(&[
        ("yes", Some(Branch::True), None),
        ("no", Some(Branch::False), None),
    ]);
    assert_eq!(validate(&both).issues, vec![]);

    let none = conditional_with(&[("yes", None, None), ("no", None, None)]);
    let report = validate(&none);
    assert_issue(
        only(&report, MISSING_BRANCHES),
        Severity::Error,
        Some("check"),
        None,
        "$.nodes[1]",
        &["conditional node `check` has no `true`/`false` branches and no conditional out-edges"],
    );

    let only_true = conditional_with(&[("yes", Some(Branch::True), None), ("no", None, None)]);
    let report = validate(&only_true);
    assert_issue(
        only(&report, MISSING_BRANCHES),
        Severity::Warning,
        Some("check"),
        None,
        "$.nodes[1]",
        &["has no `false` branch: when its condition is false, the path ends here"],
    );
    assert!(report.is_valid());

    let only_false = conditional_with(&[("no", Some(Branch::False), None), ("yes", None, None)]);
    assert!(
        only(&validate(&only_false), MISSING_BRANCHES)
            .message
            .contains("no `true` branch")
    );

    // The old platform's style: the out-edges carry their own conditions.
    let old_style = conditional_with(&[
        ("yes", None, Some("message contains hello")),
        ("no", None, None),
    ]);
    assert!(!validate(&old_style).has_code(MISSING_BRANCHES));
}

// ---------------------------------------------------------------- config, expressions, templates

#[test]
fn v012_to_v016_config_checked_against_the_kind_schema() {
    let mut doc = simple_editor();
    doc["nodes"][1]["data"]["config"] = json!({
        "maxTokens": "a lot",
        "temperature": 3,
        "tool_choice": "sometimes",
        "temprature": 0.5
    });
    let report = validate(&def(doc));
    assert_issue(
        only(&report, CONFIG_WRONG_TYPE),
        Severity::Error,
        Some("chat"),
        None,
        "$.nodes[1].data.config.maxTokens",
        &["node `Chat` config `maxTokens`"],
    );
    assert_issue(
        only(&report, CONFIG_OUT_OF_RANGE),
        Severity::Error,
        Some("chat"),
        None,
        "$.nodes[1].data.config.temperature",
        &["node `Chat` config `temperature`"],
    );
    assert_issue(
        only(&report, CONFIG_NOT_ALLOWED),
        Severity::Error,
        Some("chat"),
        None,
        "$.nodes[1].data.config.tool_choice",
        &["node `Chat` config `tool_choice`"],
    );
    assert_issue(
        only(&report, CONFIG_UNKNOWN_KEY),
        Severity::Warning,
        Some("chat"),
        None,
        "$.nodes[1].data.config.temprature",
        &["node `Chat` config `temprature`"],
    );

    let mut flat = simple_flat();
    flat["nodes"][1] = json!({"id": "chat", "type": "variable", "config": {"variable_name": "x"}});
    let report = validate(&def(flat));
    assert_issue(
        only(&report, CONFIG_MISSING_KEY),
        Severity::Error,
        Some("chat"),
        None,
        "$.nodes[1].config.operation",
        &["node `chat` config `operation`"],
    );
    let mut retry = simple_flat();
    retry["nodes"][1]["config"] = json!({"retry": {"max_attempts": 50}});
    let report = validate(&def(retry));
    assert_eq!(
        only(&report, CONFIG_OUT_OF_RANGE).path,
        "$.nodes[1].config.retry.max_attempts"
    );
    // Valid configs of both shapes are clean.
    assert_eq!(validate(&def(simple_editor())).issues, vec![]);
}

#[test]
fn v017_empty_node_condition_does_not_compile() {
    let d = conditional_with(&[
        ("yes", Some(Branch::True), None),
        ("no", Some(Branch::False), None),
    ]);
    let mut d = d;
    d.nodes[1].set_config("condition", json!(""));
    let report = validate(&d);
    assert_issue(
        only(&report, EXPRESSION_INVALID),
        Severity::Error,
        Some("check"),
        None,
        "$.nodes[1].data.config.condition",
        &["node `check` `condition` does not compile"],
    );
}

#[test]
fn v017_expressions_that_do_not_parse_or_name_unknown_variables() {
    let mut doc = simple_editor();
    doc["edges"][1]["data"] = json!({"condition": "last_message.content =="});
    doc["edges"].as_array_mut().unwrap().push(json!(
        {"id": "e3", "source": "chat", "target": "end", "condition": "bogus.value > 1"}
    ));
    let report = validate(&def(doc));
    let v017: Vec<_> = report
        .issues
        .iter()
        .filter(|i| i.code == EXPRESSION_INVALID)
        .collect();
    assert_eq!(v017.len(), 2, "{report:#?}");
    assert_issue(
        v017[0],
        Severity::Error,
        None,
        Some("e2"),
        "$.edges[1].data.condition",
        &["edge `e2` condition `last_message.content ==` does not compile"],
    );
    assert_issue(
        v017[1],
        Severity::Error,
        None,
        Some("e3"),
        "$.edges[2].condition",
        &[
            "edge `e3` condition `bogus.value > 1` does not compile",
            "bogus",
        ],
    );

    let loop_def = WorkflowBuilder::new()
        .node("start", "start")
        .node_with(
            "again",
            "loop",
            json!({"condition": "loop.again.iteration <"}),
        )
        .node("end", "end")
        .edge("start", "again")
        .edge("again", "again")
        .edge("again", "end")
        .build()
        .unwrap();
    assert_eq!(
        only(&validate(&loop_def), EXPRESSION_INVALID).path,
        "$.nodes[1].data.config.condition"
    );
    // Old phrases and well-formed expressions compile.
    let fine = WorkflowBuilder::new()
        .node("start", "start")
        .node("chat", "llm")
        .node("tools", "tool")
        .node("end", "end")
        .edge("start", "chat")
        .edge_if("chat", "tools", "has_tool_calls AND tool_calls < 10")
        .edge_if("chat", "end", "variables.done == true")
        .edge("tools", "chat")
        .build()
        .unwrap();
    assert!(!validate(&fine).has_code(EXPRESSION_INVALID));
}

#[test]
fn v018_prompt_templates_must_compile() {
    let mut doc = simple_editor();
    doc["nodes"][1]["data"]["config"]["systemMessage"] = json!("Hello {{ input.message ");
    let report = validate(&def(doc));
    assert_issue(
        only(&report, TEMPLATE_INVALID),
        Severity::Error,
        Some("chat"),
        None,
        "$.nodes[1].data.config.systemMessage",
        &["node `Chat` template `systemMessage` does not compile"],
    );
    let mut fine = simple_editor();
    fine["nodes"][1]["data"]["config"]["systemMessage"] = json!("Answer {{ input.message }}");
    assert!(!validate(&def(fine)).has_code(TEMPLATE_INVALID));
}

// ---------------------------------------------------------------- secrets

#[test]
fn v021_secrets_are_warnings_with_their_path_and_never_echoed() {
    let key = "sk-proj-Q8zr2LmN4vX7pT1kW9sBq8Zr";
    let mut doc = simple_editor();
    doc["nodes"][1]["data"]["config"]["apiKey"] = json!(key);
    doc["nodes"][1]["data"]["label"] = json!("Token counter");
    doc["metadata"] = json!({"deploy": {"aws": "AKIAIOSFODNN7EXAMPLE"}});
    let report = validate(&def(doc));
    assert!(report.is_valid());
    let found: Vec<_> = report
        .issues
        .iter()
        .filter(|i| i.code == POSSIBLE_SECRET)
        .collect();
    assert_eq!(found.len(), 2, "{report:#?}");
    assert_issue(
        found[0],
        Severity::Warning,
        Some("chat"),
        None,
        "$.nodes[1].data.config.apiKey",
        &[
            "possible secret at node `chat` at $.nodes[1].data.config.apiKey",
            "an API key (`sk-…`)",
        ],
    );
    assert_issue(
        found[1],
        Severity::Warning,
        None,
        None,
        "$.metadata.deploy.aws",
        &["AWS access key id"],
    );
    assert!(report.issues.iter().all(|i| !i.message.contains(key)));

    let http = WorkflowBuilder::new()
        .flat()
        .node("start", "start")
        .node_with(
            "call",
            "http",
            json!({"url": "https://api.example.com", "allowed_hosts": ["api.example.com"],
                   "headers": {"Authorization": "Bearer q8Zr2LmN4vX7pT1kW9sB", "Accept": "application/json"}}),
        )
        .node("end", "end")
        .edge("start", "call")
        .edge("call", "end")
        .build()
        .unwrap();
    assert_issue(
        only(&validate(&http), POSSIBLE_SECRET),
        Severity::Warning,
        Some("call"),
        None,
        "$.nodes[1].config.headers.Authorization",
        &["a credential"],
    );
    let off = WorkflowValidator::new(ValidatorConfig::default().with_secret_detection(false));
    assert!(!off.validate(&http).has_code(POSSIBLE_SECRET));
}

#[test]
fn v021_ordinary_words_are_not_flagged() {
    let d = WorkflowBuilder::new()
        .node("start", "start")
        .labelled_node(
            "chat",
            "llm",
            "Token budget",
            json!({"system_prompt": "Count every token; never reveal a password or secret.",
                   "max_tokens": 500, "stop": ["token"]}),
        )
        .node("end", "end")
        .edge("start", "chat")
        .edge("chat", "end")
        .metadata("token", json!("session"))
        .build()
        .unwrap();
    assert!(!validate(&d).has_code(POSSIBLE_SECRET));
}

// ---------------------------------------------------------------- variables

#[test]
fn v022_variable_set_but_never_read() {
    let mut doc = simple_editor();
    doc["nodes"].as_array_mut().unwrap().insert(
        2,
        json!({"id": "remember", "type": "variable",
               "data": {"nodeType": "variable",
                        "config": {"operation": "set", "variableName": "topic", "value": "x"}}}),
    );
    doc["edges"] = json!([
        {"id": "e1", "source": "start", "target": "chat"},
        {"id": "e2", "source": "chat", "target": "remember"},
        {"id": "e3", "source": "remember", "target": "end"}
    ]);
    let report = validate(&def(doc.clone()));
    assert_eq!(codes_of(&report), vec![UNUSED_VARIABLE]);
    assert_issue(
        &report.issues[0],
        Severity::Warning,
        Some("remember"),
        None,
        "$.nodes[2].data.config.variableName",
        &["variable `topic` is set by node `remember` but never read"],
    );

    // A `get` reads it.
    let nodes = doc["nodes"].as_array_mut().unwrap();
    nodes.insert(
        3,
        json!({"id": "recall", "type": "variable",
               "data": {"nodeType": "variable",
                        "config": {"operation": "get", "variableName": "topic"}}}),
    );
    doc["edges"] = json!([
        {"id": "e1", "source": "start", "target": "chat"},
        {"id": "e2", "source": "chat", "target": "remember"},
        {"id": "e3", "source": "remember", "target": "recall"},
        {"id": "e4", "source": "recall", "target": "end"}
    ]);
    assert_eq!(validate(&def(doc)).issues, vec![]);
}

#[test]
fn v022_variables_read_by_conditions_and_templates_are_used() {
    let d = WorkflowBuilder::new()
        .node("start", "start")
        .node_with(
            "count",
            "variable",
            json!({"operation": "increment", "variable_name": "turns"}),
        )
        .node_with(
            "chat",
            "llm",
            json!({"system_prompt": "Mood: {{ variables.mood }}"}),
        )
        .node_with(
            "mood",
            "variable",
            json!({"operation": "set", "variable_name": "mood", "value": "calm"}),
        )
        .node("end", "end")
        .edge("start", "mood")
        .edge("mood", "count")
        .edge("count", "chat")
        .edge_if("chat", "end", "variables.turns >= 3")
        .edge("chat", "count")
        .build()
        .unwrap();
    assert_eq!(validate(&d).issues, vec![]);
    let old_phrase = WorkflowBuilder::new()
        .node("start", "start")
        .node_with(
            "flag",
            "variable",
            json!({"operation": "set", "variable_name": "mode", "value": "fast"}),
        )
        .node_with(
            "check",
            "conditional",
            json!({"condition": "variable mode equals fast"}),
        )
        .node("end", "end")
        .edge("start", "flag")
        .edge("flag", "check")
        .branch("check", "end", Branch::True)
        .branch("check", "end", Branch::False)
        .build()
        .unwrap();
    assert!(!validate(&old_phrase).has_code(UNUSED_VARIABLE));
}

// ---------------------------------------------------------------- dead branches, defaults

fn router(edges: &[(&str, Option<&str>)]) -> WorkflowDefinition {
    let mut b = WorkflowBuilder::new()
        .flat()
        .node("start", "start")
        .node("route", "llm")
        .node("a", "llm")
        .node("b", "llm")
        .node("end", "end")
        .edge("start", "route")
        .edge("a", "end")
        .edge("b", "end");
    for (target, condition) in edges {
        b = match condition {
            Some(c) => b.edge_if("route", *target, *c),
            None => b.edge("route", *target),
        };
    }
    b.build().unwrap()
}

#[test]
fn v023_duplicate_condition_of_an_earlier_edge() {
    let d = router(&[
        ("a", Some("message contains refund")),
        ("b", Some("message  contains refund")),
        ("end", None),
    ]);
    let report = validate(&d);
    assert_eq!(codes_of(&report), vec![DEAD_BRANCH]);
    assert_issue(
        &report.issues[0],
        Severity::Warning,
        Some("route"),
        Some("e5"),
        "$.edges[4].condition",
        &[
            "edge `e5` is never taken",
            "repeats the condition of the earlier edge `e4` of `route`",
        ],
    );
    let distinct = router(&[
        ("a", Some("has_tool_calls")),
        ("b", Some("has_errors")),
        ("end", None),
    ]);
    assert_eq!(validate(&distinct).issues, vec![]);
}

#[test]
fn v023_true_false_handle_on_a_node_without_such_branch() {
    let d = WorkflowBuilder::new()
        .node("start", "start")
        .node("chat", "llm")
        .node("end", "end")
        .edge("start", "chat")
        .branch("chat", "end", Branch::True)
        .edge("chat", "end")
        .build()
        .unwrap();
    let report = validate(&d);
    assert_eq!(codes_of(&report), vec![DEAD_BRANCH]);
    assert_issue(
        &report.issues[0],
        Severity::Warning,
        Some("chat"),
        Some("e2"),
        "$.edges[1].sourceHandle",
        &["edge `e2` leaves `chat` by the `true` branch, but `llm` nodes have no `true` branch"],
    );
    // `error` is a branch of every node.
    let error_branch = WorkflowBuilder::new()
        .node("start", "start")
        .node("chat", "llm")
        .node("handler", "error_handler")
        .node("end", "end")
        .edge("start", "chat")
        .branch("chat", "handler", Branch::Error)
        .edge("chat", "end")
        .edge("handler", "end")
        .build()
        .unwrap();
    assert_eq!(validate(&error_branch).issues, vec![]);
}

#[test]
fn v023_constant_conditions() {
    let d = router(&[
        ("a", Some("false")),
        ("b", Some("true")),
        ("end", Some("has_errors")),
        ("end", None),
    ]);
    let report = validate(&d);
    let dead: Vec<_> = report
        .issues
        .iter()
        .filter(|i| i.code == DEAD_BRANCH)
        .collect();
    assert_eq!(dead.len(), 3, "{report:#?}");
    assert_issue(
        dead[0],
        Severity::Warning,
        Some("route"),
        Some("e4"),
        "$.edges[3].condition",
        &["always false"],
    );
    assert_issue(
        dead[1],
        Severity::Warning,
        Some("route"),
        Some("e6"),
        "$.edges[5].condition",
        &["the earlier edge `e5` of `route` has a condition that is always true"],
    );
    assert_issue(
        dead[2],
        Severity::Warning,
        Some("route"),
        Some("e7"),
        "$.edges[6]",
        &["it is the default of `route`"],
    );

    let mut cond = conditional_with(&[
        ("yes", Some(Branch::True), None),
        ("no", Some(Branch::False), None),
    ]);
    cond.nodes[1].set_config("condition", json!("1 == 1"));
    assert_issue(
        only(&validate(&cond), DEAD_BRANCH),
        Severity::Warning,
        Some("check"),
        Some("e5"),
        "$.edges[4].sourceHandle",
        &["the condition of `check` is always true"],
    );
}

#[test]
fn v025_ambiguous_default() {
    let d = router(&[("a", Some("has_tool_calls")), ("b", None), ("end", None)]);
    let report = validate(&d);
    assert_eq!(codes_of(&report), vec![AMBIGUOUS_DEFAULT]);
    assert_issue(
        &report.issues[0],
        Severity::Warning,
        Some("route"),
        None,
        "$.nodes[1]",
        &["node `route` has conditional out-edges and 2 unconditional ones (`e5`, `e6`)"],
    );
    // Plain fan-out (no conditions) is not ambiguous.
    assert_eq!(
        validate(&router(&[("a", None), ("b", None)])).issues,
        vec![]
    );
}

// ---------------------------------------------------------------- shapes, order, contracts

#[test]
fn both_shapes_report_the_same_issues_at_their_own_paths() {
    let mut editor = simple_editor();
    editor["edges"][1]["target"] = json!("nowhere");
    let mut flat = simple_flat();
    flat["edges"][1]["target"] = json!("nowhere");
    let (re, rf) = (validate(&def(editor)), validate(&def(flat)));
    assert_eq!(codes_of(&re), codes_of(&rf));
    // `end` is cut off: unreachable, and nothing reaches it.
    assert_eq!(
        codes_of(&re),
        vec![
            EDGE_TARGET_UNKNOWN,
            UNREACHABLE,
            CANNOT_REACH_END,
            CANNOT_REACH_END
        ]
    );
    assert_eq!(re.issues[0].edge_id.as_deref(), Some("e2"));
    assert_eq!(re.issues[0].path, "$.edges[1].target");
    assert_eq!(rf.issues[0].path, "$.edges[1].target");
}

#[test]
fn issues_are_ordered_by_code_then_document_position() {
    let d = def(json!({
        "nodes": [
            {"id": "start", "type": "start"},
            {"id": "x", "type": "wizard"},
            {"id": "y", "type": "llm"},
            {"id": "x", "type": "llm"},
            {"id": "end", "type": "end"}
        ],
        "edges": [
            {"source": "start", "target": "end"},
            {"source": "y", "target": "ghost"},
            {"source": "x", "target": "end"}
        ]
    }));
    let report = validate(&d);
    let summary: Vec<(&str, &str)> = report
        .issues
        .iter()
        .map(|i| (i.code.as_str(), i.path.as_str()))
        .collect();
    assert_eq!(
        summary,
        vec![
            (DUPLICATE_NODE_ID, "$.nodes[3].id"),
            (EDGE_TARGET_UNKNOWN, "$.edges[1].target"),
            (UNKNOWN_KIND, "$.nodes[1].type"),
            (UNREACHABLE, "$.nodes[1]"),
            (UNREACHABLE, "$.nodes[2]"),
            (CANNOT_REACH_END, "$.nodes[2]"),
        ]
    );
}

#[test]
fn report_serialises_to_the_cli_shape() {
    let mut doc = simple_editor();
    doc["nodes"]
        .as_array_mut()
        .unwrap()
        .push(json!({"id": "island", "type": "llm"}));
    let edges = doc["edges"].as_array_mut().unwrap();
    edges.push(json!({"id": "e3", "source": "chat", "target": "nowhere"}));
    edges.push(json!({"id": "e4", "source": "island", "target": "end"}));
    let report = validate(&def(doc));
    let value = serde_json::to_value(&report).unwrap();
    assert_eq!(
        value,
        json!({
            "valid": false,
            "issues": [
                {"code": "CHT-V005", "severity": "error", "node_id": null, "edge_id": "e3",
                 "path": "$.edges[2].target",
                 "message": "edge `e3` target `nowhere` is not a node of this definition"},
                {"code": "CHT-V008", "severity": "error", "node_id": "island", "edge_id": null,
                 "path": "$.nodes[3]",
                 "message": "node `island` cannot be reached from the entry `start`"}
            ]
        })
    );
    let back: ValidationReport = serde_json::from_value(value).unwrap();
    assert_eq!(back, report);
    assert_eq!(
        serde_json::to_value(ValidationReport::default()).unwrap(),
        json!({"valid": true, "issues": []})
    );
}

#[test]
fn report_converts_to_the_old_api_shape() {
    let mut doc = simple_editor();
    doc["nodes"][1]["data"]["config"]["systemMessage"] =
        json!("Call the API with sk-Q8zr2LmN4vX7pT1kW9sBq8Zr.");
    doc["nodes"]
        .as_array_mut()
        .unwrap()
        .push(json!({"id": "island", "type": "llm"}));
    let edges = doc["edges"].as_array_mut().unwrap();
    edges.push(json!({"id": "e3", "source": "chat", "target": "nowhere"}));
    edges.push(json!({"id": "e4", "source": "island", "target": "end"}));
    let contract = validate(&def(doc)).to_contract();
    assert_eq!(
        serde_json::to_value(&contract).unwrap(),
        json!({
            "is_valid": false,
            "errors": [
                {"loc": ["edges", 2, "target"], "msg": "edge `e3` target `nowhere` is not a node of this definition", "type": "CHT-V005"},
                {"loc": ["nodes", 3], "msg": "node `island` cannot be reached from the entry `start`", "type": "CHT-V008"}
            ],
            "warnings": [
                {"loc": ["nodes", 1, "data", "config", "systemMessage"],
                 "msg": "possible secret at node `chat` at $.nodes[1].data.config.systemMessage: the value looks like an API key (`sk-…`); keep secrets out of definitions (use the provider configuration or a secret store)",
                 "type": "CHT-V021"}
            ],
            "suggestions": [
                "Point every edge at existing nodes, or remove the dangling edges.",
                "Connect unreachable nodes to the graph, or remove them.",
                "Move secrets out of the definition into a secret store."
            ]
        })
    );
    let clean = validate(&def(simple_flat())).to_contract();
    assert!(clean.is_valid && clean.errors.is_empty() && clean.suggestions.is_empty());
}

#[test]
fn validation_is_deterministic_and_survives_a_json_round_trip() {
    let mut doc = simple_editor();
    doc["nodes"]
        .as_array_mut()
        .unwrap()
        .push(json!({"id": "a", "type": "llm"}));
    doc["nodes"]
        .as_array_mut()
        .unwrap()
        .push(json!({"id": "b", "type": "wizard"}));
    doc["edges"]
        .as_array_mut()
        .unwrap()
        .push(json!({"source": "a", "target": "b"}));
    doc["edges"]
        .as_array_mut()
        .unwrap()
        .push(json!({"source": "b", "target": "a"}));
    let d = def(doc);
    let first = validate(&d);
    assert!(first.issues.len() >= 4, "{first:#?}");
    assert_eq!(validate(&d), first);
    let again = def(serde_json::from_str(&d.to_json_pretty()).unwrap());
    assert_eq!(validate(&again), first);
    let yaml = WorkflowDefinition::from_yaml(&d.to_yaml().unwrap()).unwrap();
    assert_eq!(validate(&yaml), first);
}

// ---------------------------------------------------------------- hostile graphs

#[test]
fn a_100_000_node_chain_reports_the_limit_and_still_runs_every_rule_fast() {
    let n = 100_000;
    let mut d = WorkflowDefinition::default();
    d.nodes
        .push(crate::NodeSpec::new("start", "start", Default::default()));
    for i in 0..n {
        d.nodes.push(crate::NodeSpec::new(
            format!("n{i}"),
            "llm",
            Default::default(),
        ));
    }
    d.nodes
        .push(crate::NodeSpec::new("end", "end", Default::default()));
    d.edges.push(Edge::new("e_start", "start", "n0"));
    for i in 1..n {
        d.edges.push(Edge::new(
            format!("e{i}"),
            format!("n{}", i - 1),
            format!("n{i}"),
        ));
    }
    d.edges
        .push(Edge::new("e_end", format!("n{}", n - 1), "end"));
    // One unreachable node at the far end, so the graph rules visibly ran.
    d.nodes
        .push(crate::NodeSpec::new("island", "llm", Default::default()));
    d.edges.push(Edge::new("e_island", "island", "end"));

    // How fast is the validator bench's business (benches/validate.rs); this test checks that
    // every rule still runs to completion on a graph this size.
    let report = validate(&d);
    assert_eq!(
        codes_of(&report),
        vec![UNREACHABLE, TOO_MANY_NODES, TOO_MANY_EDGES],
        "{:#?}",
        &report.issues[..report.issues.len().min(5)]
    );
    assert_eq!(report.issues[0].node_id.as_deref(), Some("island"));
    assert_eq!(
        report.issues[1].message,
        "the definition has 100003 nodes; the limit is 100"
    );
}

#[test]
fn a_10_000_node_cycle_is_one_issue_and_no_stack_overflow() {
    let n = 10_000;
    let mut b = WorkflowBuilder::new().node("start", "start");
    for i in 0..n {
        b = b.node(format!("n{i}"), "llm");
    }
    b = b.node("end", "end").edge("start", "n0");
    for i in 1..n {
        b = b.edge(format!("n{}", i - 1), format!("n{i}"));
    }
    let d = b
        .edge(format!("n{}", n - 1), "n0")
        .edge(format!("n{}", n - 1), "end")
        .build()
        .unwrap();
    let report = big_limits().validate(&d);
    assert_eq!(codes_of(&report), vec![CYCLE_WITHOUT_EXIT]);
    let issue = &report.issues[0];
    assert_eq!(issue.node_id.as_deref(), Some("n0"));
    assert!(
        issue
            .message
            .starts_with("cycle without exit: `n0` → `n1` → `n2`"),
        "{}",
        issue.message
    );
    assert!(issue.message.contains("… (10000 nodes in all) → `n0`"));
}

#[test]
fn garbage_graphs_give_reports_not_panics() {
    let d = def(json!({
        "nodes": [
            {"id": "a", "type": "llm"}, {"id": "a", "type": ""}, {"type": "start"},
            {"id": "b", "type": "conditional"}, {"id": "c", "type": "???"}
        ],
        "edges": [
            {"source": "a", "target": "a"}, {"source": "b", "target": "b", "sourceHandle": "true"},
            {"source": "", "target": ""}, {"source": "c", "target": "zzz", "condition": "  "},
            {"id": "x", "source": "a", "target": "b"}, {"id": "x", "source": "b", "target": "a"}
        ]
    }));
    let report = validate(&d);
    assert!(!report.is_valid());
    for code in [
        DUPLICATE_NODE_ID,
        NODE_ID_MISSING,
        UNKNOWN_KIND,
        DUPLICATE_EDGE_ID,
        EDGE_SOURCE_UNKNOWN,
        EDGE_TARGET_UNKNOWN,
    ] {
        assert!(report.has_code(code), "{code}: {report:#?}");
    }
}

// ---------------------------------------------------------------- the universal-chat graph

/// The old platform's universal-chat graph, from its description ("dynamically adapts to
/// different capability combinations using conditional and variable nodes") and DESIGN §7:
/// optional memory, optional retrieval, then the model with a tool loop under proper
/// conditions; the tool-call limit lives in a workflow variable.
fn universal_chat() -> WorkflowDefinition {
    def(json!({
        "name": "universal_chat",
        "nodes": [
            {"id": "start", "type": "start", "position": {"x": 0, "y": 0},
             "data": {"label": "Start", "nodeType": "start"}},
            {"id": "set_limits", "type": "variable", "position": {"x": 150, "y": 0},
             "data": {"label": "Tool limit", "nodeType": "variable",
                      "config": {"operation": "set", "variableName": "max_tool_calls", "value": 10}}},
            {"id": "check_memory", "type": "conditional", "position": {"x": 300, "y": 0},
             "data": {"label": "Memory?", "nodeType": "conditional",
                      "config": {"condition": "variable enable_memory equals true"}}},
            {"id": "manage_memory", "type": "memory", "position": {"x": 450, "y": -100},
             "data": {"label": "Memory", "nodeType": "memory",
                      "config": {"windowSize": 10, "summarize": true}}},
            {"id": "check_retrieval", "type": "conditional", "position": {"x": 600, "y": 0},
             "data": {"label": "Retrieval?", "nodeType": "conditional",
                      "config": {"condition": "variable enable_retrieval equals true"}}},
            {"id": "retrieve_context", "type": "retrieval", "position": {"x": 750, "y": -100},
             "data": {"label": "Retrieve", "nodeType": "retrieval",
                      "config": {"topK": 5, "scoreThreshold": 0.5}}},
            {"id": "call_model", "type": "model", "position": {"x": 900, "y": 0},
             "data": {"label": "Model", "nodeType": "model",
                      "config": {"provider": "openai", "model": "gpt-4", "temperature": 0.7,
                                 "maxTokens": 1000, "enableTools": true,
                                 "systemMessage": "You are a helpful AI assistant. Adapt your behavior based on the available capabilities and user needs."}}},
            {"id": "execute_tools", "type": "tools", "position": {"x": 1050, "y": 100},
             "data": {"label": "Tools", "nodeType": "tools",
                      "config": {"maxToolCalls": 10, "toolTimeoutMs": 30000}}},
            {"id": "end", "type": "end", "position": {"x": 1200, "y": 0},
             "data": {"label": "End", "nodeType": "end"}}
        ],
        "edges": [
            {"id": "e1", "source": "start", "target": "set_limits"},
            {"id": "e2", "source": "set_limits", "target": "check_memory"},
            {"id": "e3", "source": "check_memory", "target": "manage_memory", "sourceHandle": "true"},
            {"id": "e4", "source": "check_memory", "target": "check_retrieval", "sourceHandle": "false"},
            {"id": "e5", "source": "manage_memory", "target": "check_retrieval"},
            {"id": "e6", "source": "check_retrieval", "target": "retrieve_context", "sourceHandle": "true"},
            {"id": "e7", "source": "check_retrieval", "target": "call_model", "sourceHandle": "false"},
            {"id": "e8", "source": "retrieve_context", "target": "call_model"},
            {"id": "e9", "source": "call_model", "target": "end",
             "data": {"condition": "no_tool_calls OR tool_calls >= variable max_tool_calls"}},
            {"id": "e10", "source": "call_model", "target": "execute_tools",
             "data": {"condition": "has_tool_calls"}},
            {"id": "e11", "source": "execute_tools", "target": "call_model"}
        ]
    }))
}

#[test]
fn universal_chat_graph_has_no_errors() {
    let report = validate(&universal_chat());
    assert!(report.is_valid(), "{report:#?}");
    // Until expressions report the variables they read, the limit variable looks unread.
    assert!(
        report.issues.iter().all(|i| i.code == UNUSED_VARIABLE),
        "{report:#?}"
    );
}

#[test]
fn universal_chat_graph_validates_clean() {
    assert_eq!(validate(&universal_chat()).issues, vec![]);
}

// ---------------------------------------------------------------- docs

#[test]
fn every_code_has_a_documentation_page_listed_in_the_index() {
    let docs = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/errors");
    let index = std::fs::read_to_string(docs.join("README.md")).unwrap();
    for (code, title) in codes::ALL {
        let page = std::fs::read_to_string(docs.join(format!("{code}.md")))
            .unwrap_or_else(|e| panic!("{code}: {e}"));
        assert!(
            page.starts_with(&format!("# {code}: {title}")),
            "{code} page title"
        );
        assert!(
            index.contains(&format!("[{code}]({code}.md)")),
            "{code} not in index"
        );
        assert!(suggestion(code).is_some(), "{code} has no suggestion");
    }
}

// ---------------------------------------------------------------- properties

/// A random DAG of work nodes between a `start` and an `end`: edges only go forwards, every
/// node without in-edges hangs off `start`, every node without out-edges leads to `end`.
fn random_dag() -> impl Strategy<Value = (WorkflowDefinition, Vec<(usize, usize)>)> {
    (2usize..24).prop_flat_map(|n| {
        let kinds = proptest::collection::vec(
            prop_oneof![Just("llm"), Just("tool"), Just("retrieval"), Just("memory")],
            n,
        );
        let pairs = proptest::collection::vec((0..n, 0..n), 0..(3 * n));
        (kinds, pairs).prop_map(move |(kinds, pairs)| {
            let mut edges: Vec<(usize, usize)> = pairs.into_iter().filter(|(a, b)| a < b).collect();
            edges.sort_unstable();
            edges.dedup();
            let mut b = WorkflowBuilder::new().node("start", "start");
            for (i, kind) in kinds.iter().enumerate() {
                b = b.node(format!("n{i}"), kind);
            }
            b = b.node("end", "end");
            for i in 0..n {
                if !edges.iter().any(|&(_, t)| t == i) {
                    b = b.edge("start", format!("n{i}"));
                }
            }
            for &(s, t) in &edges {
                b = b.edge(format!("n{s}"), format!("n{t}"));
            }
            for i in 0..n {
                if !edges.iter().any(|&(s, _)| s == i) {
                    b = b.edge(format!("n{i}"), "end");
                }
            }
            (b.build().unwrap(), edges)
        })
    })
}

proptest! {
    #[test]
    fn random_dags_from_start_to_end_validate_clean((d, _) in random_dag()) {
        let report = big_limits().validate(&d);
        prop_assert_eq!(report.issues, vec![]);
    }

    #[test]
    fn a_back_edge_between_plain_llm_nodes_is_a_cycle_without_exit(
        (d, edges) in random_dag(),
        pick in any::<prop::sample::Index>(),
    ) {
        prop_assume!(!edges.is_empty());
        let (s, t) = edges[pick.index(edges.len())];
        let mut d = d;
        for i in [s, t] {
            d.node_mut(&format!("n{i}")).unwrap().kind = crate::NodeKind::from("llm");
        }
        d.edges.push(Edge::new("back", format!("n{t}"), format!("n{s}")));
        let report = big_limits().validate(&d);
        prop_assert!(report.has_code(CYCLE_WITHOUT_EXIT), "{:#?}", report);
        prop_assert!(report.issues.iter().all(|i| i.code == CYCLE_WITHOUT_EXIT));
    }
}

/// 1 000 nodes and 2 000 edges: start, 998 work nodes each linked to the next two, end.
pub(crate) fn thousand_node_graph() -> WorkflowDefinition {
    let n = 998;
    let kinds = ["llm", "tool", "retrieval", "memory"];
    let mut d = WorkflowDefinition::default();
    d.nodes
        .push(crate::NodeSpec::new("start", "start", Default::default()));
    for i in 0..n {
        d.nodes.push(crate::NodeSpec::new(
            format!("n{i}"),
            kinds[i % kinds.len()],
            Default::default(),
        ));
    }
    d.nodes
        .push(crate::NodeSpec::new("end", "end", Default::default()));
    let mut edge = |s: String, t: String| {
        let id = format!("e{}", d.edges.len());
        d.edges.push(Edge::new(id, s, t));
    };
    edge("start".into(), "n0".into());
    for i in 0..n {
        for step in [1, 2] {
            let target = if i + step < n {
                format!("n{}", i + step)
            } else {
                "end".to_owned()
            };
            edge(format!("n{i}"), target);
        }
    }
    for extra in ["end", "n1", "n2"] {
        edge("start".into(), extra.into());
    }
    d
}

#[test]
fn a_thousand_nodes_and_two_thousand_edges_validate_clean_every_time() {
    // Its speed is measured by the validator bench (benches/validate.rs), not here.
    let d = thousand_node_graph();
    assert_eq!((d.nodes.len(), d.edges.len()), (1000, 2000));
    let validator = big_limits();
    for _ in 0..3 {
        assert_eq!(validator.validate(&d).issues, vec![]);
    }
}

#[test]
fn map_bodies_are_validated_with_paths_into_the_body() {
    let d = WorkflowBuilder::new()
        .node("start", "start")
        .node_with(
            "each",
            "map",
            json!({
                "items": "input.items",
                "body": {
                    "nodes": [
                        {"id": "inner", "type": "map", "config": {
                            "items": "input.items",
                            "body": {"nodes": 5}
                        }},
                        {"id": "work", "type": "llm"}
                    ],
                    "edges": [
                        {"source": "inner", "target": "work"},
                        {"source": "work", "target": "ghost"}
                    ]
                }
            }),
        )
        .node("end", "end")
        .edge("start", "each")
        .edge("each", "end")
        .build()
        .unwrap();
    let report = validate(&d);
    assert_eq!(
        codes_of(&report),
        vec![EDGE_TARGET_UNKNOWN, CONFIG_WRONG_TYPE]
    );
    assert_issue(
        &report.issues[0],
        Severity::Error,
        None,
        Some("e2"),
        "$.nodes[1].data.config.body.edges[1].target",
        &[
            "in the body of map node `each`: edge `e2` target `ghost` is not a node of this definition",
        ],
    );
    assert_issue(
        &report.issues[1],
        Severity::Error,
        Some("inner"),
        None,
        "$.nodes[1].data.config.body.nodes[0].config.body.nodes",
        // Without a registry the body fails to read; with one, its schema check says so.
        &["in the body of map node `", "nodes", "found a"],
    );
}

/// Arbitrary graphs: random kinds (some unknown, some empty), duplicate and empty ids,
/// self-loops, edges to nowhere, random conditions and handles.
fn random_graph() -> impl Strategy<Value = WorkflowDefinition> {
    let kind = prop_oneof![
        Just("start"),
        Just("end"),
        Just("llm"),
        Just("tool"),
        Just("loop"),
        Just("conditional"),
        Just("variable"),
        Just("error_handler"),
        Just("wizard"),
        Just(""),
    ];
    let nodes = proptest::collection::vec((0usize..12, kind), 0..14);
    let edge = (
        0usize..14,
        0usize..14,
        prop_oneof![
            Just(None),
            Just(Some("true")),
            Just(Some("false")),
            Just(Some("error"))
        ],
        prop_oneof![
            Just(None),
            Just(Some("has_tool_calls")),
            Just(Some("true")),
            Just(Some("")),
            Just(Some("(("))
        ],
    );
    let edges = proptest::collection::vec(edge, 0..30);
    (nodes, edges).prop_map(|(nodes, edges)| {
        let mut d = WorkflowDefinition::default();
        for (id, kind) in nodes {
            let id = if id == 0 {
                String::new()
            } else {
                format!("n{id}")
            };
            d.nodes
                .push(crate::NodeSpec::new(id, kind, Default::default()));
        }
        for (i, (s, t, handle, condition)) in edges.into_iter().enumerate() {
            let mut e = Edge::new(format!("e{}", i % 20), format!("n{s}"), format!("n{t}"));
            e.source_handle = handle.map(str::to_owned);
            e.condition = condition.map(str::to_owned);
            d.edges.push(e);
        }
        d
    })
}

proptest! {
    #[test]
    fn any_graph_gets_a_deterministic_report_and_analytics(d in random_graph()) {
        let first = validate(&d);
        prop_assert_eq!(&validate(&d), &first);
        let reread = WorkflowDefinition::from_value(&d.to_value()).unwrap();
        prop_assert_eq!(&validate(&reread), &first);
        // Sorted by code, then position.
        let codes: Vec<&str> = codes_of(&first);
        let mut sorted = codes.clone();
        sorted.sort_unstable();
        prop_assert_eq!(codes, sorted);
        prop_assert_eq!(first.is_valid(), first.issues.iter().all(|i| i.severity == Severity::Warning));
        let analytics = crate::analytics::analyze(&d);
        prop_assert_eq!(&crate::analytics::analyze(&reread), &analytics);
    }
}

#[test]
fn check_fails_with_the_whole_report_only_on_errors() {
    let warned = router(&[("a", Some("has_tool_calls")), ("b", None), ("end", None)]);
    let report = WorkflowValidator::default().check(&warned).unwrap();
    assert_eq!(codes_of(&report), vec![AMBIGUOUS_DEFAULT]);

    let mut doc = simple_flat();
    doc["edges"][1]["target"] = json!("nowhere");
    match WorkflowValidator::default().check(&def(doc)) {
        Err(crate::Error::Invalid(report)) => {
            assert_eq!(report.issues.len(), 4);
            assert_eq!(
                crate::Error::Invalid(report).to_string(),
                "definition is invalid: 4 error(s); first: CHT-V005 edge `e2` target `nowhere` \
                 is not a node of this definition"
            );
        }
        other => panic!("expected Error::Invalid, got {other:?}"),
    }
}
