//! Integration tests of the definition model and the validator over real files: golden reports
//! for every example in `examples/workflows/` (both old shapes, the old universal-chat graph), and
//! property tests of the JSON round trip.
//!
//! Regenerate the golden files with `UPDATE_GOLDEN=1 cargo test -p chatter-core --test definitions`.

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use std::path::{Path, PathBuf};

use chatter_core::{WorkflowDefinition, WorkflowValidator};
use proptest::prelude::*;
use serde_json::{Value, json};

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}

fn example_files() -> Vec<PathBuf> {
    let dir = workspace_root().join("examples/workflows");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("examples/workflows exists")
        .map(|e| e.expect("dir entry").path())
        .filter(|p| {
            matches!(
                p.extension().and_then(|e| e.to_str()),
                Some("json" | "yaml" | "yml")
            ) && !p
                .file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.contains(".scripted.") || n.contains(".tools."))
        })
        .collect();
    files.sort();
    files
}

/// Compares `actual` with the golden file, or rewrites it under `UPDATE_GOLDEN=1`.
fn check_golden(name: &str, actual: &Value) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden/validate")
        .join(format!("{name}.report.json"));
    let text = format!(
        "{}\n",
        serde_json::to_string_pretty(actual).expect("serialise")
    );
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(&path, &text).expect("write golden");
        return;
    }
    let expected = std::fs::read_to_string(&path).unwrap_or_else(|_| {
        panic!(
            "missing golden file {}; run with UPDATE_GOLDEN=1",
            path.display()
        )
    });
    assert_eq!(
        text,
        expected,
        "validation report of {name} differs from {}",
        path.display()
    );
}

#[test]
fn every_example_round_trips_and_matches_its_golden_report() {
    let files = example_files();
    assert!(files.len() >= 7, "examples missing: {files:?}");
    for file in files {
        let name = file.file_name().and_then(|n| n.to_str()).expect("name");
        let def = WorkflowDefinition::load(&file).expect("example parses");
        // Lossless: the written value equals the file's value.
        let text = std::fs::read_to_string(&file).expect("read");
        let original: Value = if name.ends_with(".json") {
            serde_json::from_str(&text).expect("json")
        } else {
            let again = WorkflowDefinition::from_yaml(&text).expect("yaml");
            again.to_value()
        };
        assert_eq!(def.to_value(), original, "{name} does not round-trip");
        let report = WorkflowValidator::default().validate(&def);
        check_golden(
            name,
            &json!({"valid": report.is_valid(), "issues": report.issues}),
        );
    }
}

#[test]
fn invalid_fixtures_report_every_issue() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    for name in ["invalid-editor.json", "invalid-flat.yaml"] {
        let def = WorkflowDefinition::load(dir.join(name)).expect("parses");
        let report = WorkflowValidator::default().validate(&def);
        assert!(!report.is_valid(), "{name} should be invalid");
        check_golden(
            name,
            &json!({"valid": report.is_valid(), "issues": report.issues}),
        );
    }
}

#[test]
fn the_old_universal_chat_graph_reads_in_full() {
    let def = WorkflowDefinition::load(
        workspace_root().join("examples/workflows/legacy-universal-chat.json"),
    )
    .expect("parses");
    assert_eq!(def.nodes.len(), 12);
    assert_eq!(def.edges.len(), 15);
    assert_eq!(def.node("execute_tools").expect("node").kind, "tool");
    // The old generator's `END` targets resolve to the `end` node and are written back as `END`.
    let to_end: Vec<_> = def.edges.iter().filter(|e| e.target == "end").collect();
    assert_eq!(to_end.len(), 2);
    assert!(to_end.iter().all(|e| e.endpoints_as_written().1 == "END"));
    assert_eq!(
        def.edge("conditional_tools-end").expect("edge").condition(),
        Some("variable enable_tools equals false OR no_tool_calls")
    );
}

fn arb_config() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(json!({})),
        (1u32..5000).prop_map(|n| json!({"maxTokens": n, "temperature": 0.5})),
        "[a-z ]{0,20}".prop_map(|s| json!({"system_message": s, "extra": {"nested": [1, 2]}})),
        Just(json!(null)),
    ]
}

prop_compose! {
    fn arb_definition()(
        n in 1usize..12,
        editor in any::<bool>(),
        configs in prop::collection::vec(arb_config(), 12),
        kinds in prop::collection::vec(prop::sample::select(vec!["llm", "model", "tools", "variable", "conditional", "end", "errorHandler"]), 12),
        edge_picks in prop::collection::vec((0usize..12, 0usize..12, prop::option::of("[a-z_ ]{1,12}"), any::<bool>()), 0..20),
    ) -> Value {
        let nodes: Vec<Value> = (0..n).map(|i| {
            let id = format!("n{i}");
            if editor {
                json!({"id": id, "type": kinds[i], "position": {"x": i * 10, "y": 0},
                       "data": {"label": format!("Node {i}"), "nodeType": kinds[i], "config": configs[i]}})
            } else {
                json!({"id": id, "type": kinds[i], "config": configs[i]})
            }
        }).collect();
        let edges: Vec<Value> = edge_picks.iter().enumerate().map(|(j, (a, b, cond, in_data))| {
            let (s, t) = (format!("n{}", a % n), format!("n{}", b % n));
            match (editor, cond, in_data) {
                (true, Some(c), true) => json!({"id": format!("x{j}"), "source": s, "target": t, "data": {"condition": c, "label": null}}),
                (true, c, _) => json!({"id": format!("x{j}"), "source": s, "target": t, "sourceHandle": null, "condition": c}),
                (false, Some(c), _) => json!({"source": s, "target": t, "condition": c}),
                (false, None, _) => json!({"source": s, "target": t}),
            }
        }).collect();
        json!({"name": "random", "nodes": nodes, "edges": edges, "metadata": {"n": n}})
    }
}

proptest! {
    #[test]
    fn json_round_trip_is_identity(doc in arb_definition()) {
        let def = WorkflowDefinition::from_value(&doc).expect("reads");
        prop_assert_eq!(&def.to_value(), &doc);
        let text = serde_json::to_string(&doc).expect("text");
        let from_text = WorkflowDefinition::from_json(&text).expect("reads text");
        prop_assert_eq!(from_text.to_value(), doc.clone());
        let yaml = def.to_yaml().expect("yaml");
        let from_yaml = WorkflowDefinition::from_yaml(&yaml).expect("reads yaml");
        prop_assert_eq!(from_yaml.to_value(), doc);
    }

    #[test]
    fn arbitrary_text_never_panics(text in "\\PC{0,200}") {
        let _ = WorkflowDefinition::from_json(&text);
        let _ = WorkflowDefinition::from_yaml(&text);
    }
}
