use serde_json::{Value, json};

use super::*;

fn editor_doc() -> Value {
    json!({
        "name": "support",
        "description": "editor shape",
        "nodes": [
            {"id": "start", "type": "start", "position": {"x": 0, "y": 0},
             "data": {"label": "Start", "nodeType": "start"}, "selected": false},
            {"id": "llm", "type": "model", "position": {"x": 200.5, "y": 10},
             "data": {"label": "Chat", "nodeType": "model",
                      "config": {"systemMessage": "Hi", "maxTokens": 300, "temperature": 0.2}},
             "dragging": false, "width": 150},
            {"id": "err", "type": "errorHandler", "position": {"x": 1, "y": 2},
             "data": {"label": "Errors", "nodeType": "errorHandler",
                      "config": {"retryCount": 2, "fallbackAction": "continue"}}},
            {"id": "end", "type": "end", "position": {"x": 400, "y": 0},
             "data": {"label": "End", "nodeType": "end", "config": null}}
        ],
        "edges": [
            {"id": "e1", "source": "start", "target": "llm", "sourceHandle": null,
             "targetHandle": null, "type": "default", "data": {"condition": null, "label": null}},
            {"id": "e2", "source": "llm", "target": "end", "type": "smoothstep",
             "data": {"condition": "no_tool_calls", "label": "done"}},
            {"id": "e3", "source": "llm", "target": "err", "sourceHandle": "error"}
        ],
        "metadata": {"version": 2}
    })
}

#[test]
fn editor_shape_reads_canonically_and_writes_back_unchanged() {
    let doc = editor_doc();
    let def = WorkflowDefinition::from_value(&doc).unwrap();
    assert_eq!(def.nodes.len(), 4);
    let llm = def.node("llm").unwrap();
    assert_eq!(llm.kind, "llm");
    assert_eq!(llm.kind_as_written(), "model");
    assert_eq!(llm.config["system_message"], "Hi");
    assert_eq!(llm.config["max_tokens"], 300);
    assert_eq!(llm.label.as_deref(), Some("Chat"));
    let err = def.node("err").unwrap();
    assert_eq!(err.kind, "error_handler");
    assert_eq!(err.config["retry_count"], 2);
    assert_eq!(def.edges[1].condition(), Some("no_tool_calls"));
    assert_eq!(def.edges[2].branch(), Some(Branch::Error));
    assert_eq!(def.edges[0].condition(), None);
    assert_eq!(def.name(), Some("support"));
    assert_eq!(def.metadata["version"], 2);
    let written = def.to_value();
    assert_eq!(written, doc);
    // Key order survives too.
    assert_eq!(
        serde_json::to_string(&written).unwrap(),
        serde_json::to_string(&doc).unwrap()
    );
}

#[test]
fn flat_shape_reads_and_writes_back_unchanged() {
    let doc = json!({
        "nodes": [
            {"id": "a", "type": "start"},
            {"id": "b", "type": "call_model", "config": {"max_tokens": 10}},
            {"id": "c", "type": "execute_tools", "config": {}},
            {"id": "d", "type": "end"}
        ],
        "edges": [
            {"source": "a", "target": "b"},
            {"source": "b", "target": "c", "condition": "has_tool_calls"},
            {"source": "c", "target": "b"},
            {"source": "b", "target": "d", "condition": "no_tool_calls"}
        ]
    });
    let def = WorkflowDefinition::from_value(&doc).unwrap();
    assert_eq!(def.node("b").unwrap().kind, "llm");
    assert_eq!(def.node("c").unwrap().kind, "tool");
    assert_eq!(def.edges[1].condition(), Some("has_tool_calls"));
    assert_eq!(def.edges[0].id, "e1");
    assert_eq!(def.edges[3].id, "e4");
    assert_eq!(def.to_value(), doc);
}

#[test]
fn edits_are_written_in_the_original_spelling_and_place() {
    let mut def = WorkflowDefinition::from_value(&editor_doc()).unwrap();
    let llm = def.node_mut("llm").unwrap();
    llm.set_config("max_tokens", json!(512));
    llm.label = Some("Assistant".into());
    def.edges[1].condition = Some("has_errors".into());
    let out = def.to_value();
    assert_eq!(out["nodes"][1]["data"]["config"]["maxTokens"], 512);
    assert!(
        out["nodes"][1]["data"]["config"]
            .get("max_tokens")
            .is_none()
    );
    assert_eq!(out["nodes"][1]["data"]["label"], "Assistant");
    assert_eq!(out["edges"][1]["data"]["condition"], "has_errors");
    assert!(out["edges"][1].get("condition").is_none());
    assert_eq!(out["nodes"][1]["width"], 150);
}

#[test]
fn yaml_reads_like_json() {
    let yaml = "nodes:\n  - id: s\n    type: start\n  - id: m\n    type: llm\n    config:\n      maxTokens: 5\nedges:\n  - source: s\n    target: m\n";
    let def = WorkflowDefinition::from_yaml(yaml).unwrap();
    assert_eq!(def.node("m").unwrap().config["max_tokens"], 5);
    let again = WorkflowDefinition::from_yaml(&def.to_yaml().unwrap()).unwrap();
    assert_eq!(again.to_value(), def.to_value());
}

#[test]
fn malformed_text_reports_line_and_column() {
    let err =
        WorkflowDefinition::from_json("{\n  \"nodes\": [\n    {\"id\": }\n  ]\n}").unwrap_err();
    match err {
        Error::Parse {
            format,
            line,
            column,
            ..
        } => {
            assert_eq!(format, Format::Json);
            assert_eq!(line, 3);
            assert!(column > 0);
        }
        other => panic!("unexpected {other:?}"),
    }
    let err = WorkflowDefinition::from_yaml("nodes:\n  - id: [\n").unwrap_err();
    assert!(
        matches!(err, Error::Parse { format: Format::Yaml, line, .. } if line >= 2),
        "{err}"
    );
}

#[test]
fn duplicate_keys_are_refused() {
    let err = WorkflowDefinition::from_json(r#"{"nodes": [], "nodes": []}"#).unwrap_err();
    assert!(err.to_string().contains("duplicate key `nodes`"), "{err}");
    let err = WorkflowDefinition::from_yaml("nodes: []\nnodes: []\n").unwrap_err();
    assert!(err.to_string().contains("duplicate"), "{err}");
    let err = WorkflowDefinition::from_json(
        r#"{"nodes": [{"id": "a", "type": "llm", "config": {"maxTokens": 1, "max_tokens": 2}}]}"#,
    )
    .unwrap_err();
    assert!(
        matches!(&err, Error::Definition { path, .. } if path == "$.nodes[0].config.max_tokens"),
        "{err}"
    );
}

#[test]
fn deep_nesting_is_an_error_not_a_stack_overflow() {
    let depth = 10_000;
    let text = format!(
        "{{\"nodes\": [], \"metadata\": {{\"x\": {}1{}}}}}",
        "[".repeat(depth),
        "]".repeat(depth)
    );
    let err = WorkflowDefinition::from_json(&text).unwrap_err();
    assert!(matches!(err, Error::Parse { .. }), "{err}");
    let yaml = format!("metadata: {}1{}\n", "[".repeat(depth), "]".repeat(depth));
    assert!(WorkflowDefinition::from_yaml(&yaml).is_err());
}

#[test]
fn wrong_types_name_the_path() {
    let cases = [
        (json!([]), "$"),
        (json!({"nodes": {}}), "$.nodes"),
        (json!({"nodes": [1]}), "$.nodes[0]"),
        (json!({"nodes": [{"id": 5}]}), "$.nodes[0].id"),
        (
            json!({"nodes": [{"id": "a", "config": []}]}),
            "$.nodes[0].config",
        ),
        (
            json!({"nodes": [{"id": "a", "data": {"config": 3}}]}),
            "$.nodes[0].data.config",
        ),
        (json!({"edges": [{"source": 1}]}), "$.edges[0].source"),
        (
            json!({"edges": [{"data": {"condition": true}}]}),
            "$.edges[0].data.condition",
        ),
        (json!({"metadata": "x"}), "$.metadata"),
    ];
    for (doc, expected) in cases {
        match WorkflowDefinition::from_value(&doc) {
            Err(Error::Definition { path, .. }) => assert_eq!(path, expected, "{doc}"),
            other => panic!("{doc}: unexpected {other:?}"),
        }
    }
}

#[test]
fn builder_output_round_trips_in_both_shapes() {
    for flat in [false, true] {
        let mut b = WorkflowBuilder::new().name("b");
        if flat {
            b = b.flat();
        }
        let def = b
            .node("s", "start")
            .node_with("m", "model", json!({"maxTokens": 3}))
            .node("e", "end")
            .edge("s", "m")
            .edge_if("m", "e", "no_tool_calls")
            .build()
            .unwrap();
        assert_eq!(def.node("m").unwrap().kind, "llm");
        let text = def.to_json_pretty();
        let again = WorkflowDefinition::from_json(&text).unwrap();
        assert_eq!(again.to_value(), def.to_value());
        assert_eq!(again.node("m").unwrap().config["max_tokens"], 3);
        assert_eq!(again.edges[1].condition(), Some("no_tool_calls"));
    }
    let err = WorkflowBuilder::new()
        .node_with("x", "llm", json!([1]))
        .build()
        .unwrap_err();
    assert!(matches!(err, Error::Definition { .. }));
}

#[test]
fn langgraph_end_sentinel_resolves_to_the_end_node_and_writes_back() {
    let doc = json!({
        "nodes": [
            {"id": "start", "type": "start"},
            {"id": "m", "type": "llm"},
            {"id": "end", "type": "end"}
        ],
        "edges": [
            {"id": "a", "source": "START", "target": "m"},
            {"id": "b", "source": "m", "target": "END"}
        ]
    });
    let mut def = WorkflowDefinition::from_value(&doc).unwrap();
    assert_eq!(def.edges[0].source, "start");
    assert_eq!(def.edges[1].target, "end");
    assert_eq!(def.edges[1].endpoints_as_written(), ("m", "END"));
    assert_eq!(def.to_value(), doc);
    def.edges[1].target = NodeId::from("m");
    assert_eq!(def.to_value()["edges"][1]["target"], "m");
    // With a node really called END, the name means that node.
    let doc = json!({
        "nodes": [{"id": "END", "type": "llm"}, {"id": "end", "type": "end"}],
        "edges": [{"source": "END", "target": "end"}]
    });
    let def = WorkflowDefinition::from_value(&doc).unwrap();
    assert_eq!(def.edges[0].source, "END");
}
