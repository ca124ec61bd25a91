//! The `chatter` binary, run as a user runs it: exact output and exit codes.
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::{Value, json};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace")
        .to_path_buf()
}

fn chatter(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_chatter"))
        .args(args)
        .current_dir(root())
        .output()
        .expect("runs")
}

fn temp_file(name: &str, text: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("chatter-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn validate_json_of_a_valid_example_is_exact() {
    let out = chatter(&[
        "validate",
        "examples/workflows/chat.json",
        "--format",
        "json",
    ]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let doc: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(doc, json!({"valid": true, "issues": []}));
}

#[test]
fn validate_json_of_an_invalid_definition_lists_every_issue_and_exits_1() {
    let file = temp_file(
        "cycle.json",
        r#"{"nodes": [{"id": "start", "type": "start"}, {"id": "a", "type": "llm"},
                      {"id": "b", "type": "llm"}, {"id": "end", "type": "end"}],
            "edges": [{"id": "s", "source": "start", "target": "a"},
                      {"id": "ab", "source": "a", "target": "b"},
                      {"id": "ba", "source": "b", "target": "a"}]}"#,
    );
    let out = chatter(&["validate", file.to_str().unwrap(), "--format", "json"]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let doc: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(doc["valid"], false);
    let issues = doc["issues"].as_array().unwrap();
    for issue in issues {
        let keys: Vec<&str> = issue
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(
            keys,
            ["code", "severity", "node_id", "edge_id", "path", "message"]
        );
    }
    let codes: Vec<&str> = issues.iter().map(|i| i["code"].as_str().unwrap()).collect();
    assert!(codes.contains(&"CHT-V010"), "{codes:?}");
    assert!(codes.contains(&"CHT-V009"), "{codes:?}");
    let cycle = issues.iter().find(|i| i["code"] == "CHT-V010").unwrap();
    assert_eq!(cycle["severity"], "error");
    assert_eq!(cycle["node_id"], "a");
}

#[test]
fn validate_text_names_the_file_and_each_issue() {
    let out = chatter(&["validate", "examples/workflows/legacy-universal-chat.json"]);
    assert_eq!(out.status.code(), Some(0));
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.starts_with(
            "examples/workflows/legacy-universal-chat.json: valid (0 errors, 1 warning)\n"
        ),
        "{text}"
    );
    assert!(
        text.contains(
            "warning CHT-V022 node `set_capabilities` at $.nodes[1].data.config.variable_name"
        ),
        "{text}"
    );
}

#[test]
fn unreadable_or_unparsable_files_exit_2_with_line_and_column() {
    let file = temp_file("broken.json", "{\n  \"nodes\": [\n    {\"id\": }\n  ]\n}\n");
    let out = chatter(&["validate", file.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(
        err.contains("broken.json: JSON parse error at line 3, column"),
        "{err}"
    );
    let file = temp_file("broken.yaml", "nodes:\n  - id: a\n   type: llm\n");
    let out = chatter(&["validate", file.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8(out.stderr)
            .unwrap()
            .contains("YAML parse error at line")
    );
    let out = chatter(&["validate", "does/not/exist.json"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8(out.stderr)
            .unwrap()
            .contains("cannot read does/not/exist.json")
    );
    let file = temp_file("dupe.json", r#"{"nodes": [], "nodes": []}"#);
    let out = chatter(&["validate", file.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8(out.stderr)
            .unwrap()
            .contains("duplicate key `nodes`")
    );
}

#[test]
fn analyze_prints_the_analytics_as_json() {
    let out = chatter(&["analyze", "examples/workflows/branching.json"]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let doc: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(doc["complexity"]["node_count"], 6);
    assert_eq!(doc["complexity"]["edge_count"], 6);
    assert_eq!(doc["execution_paths"], 2);
    assert!(doc["bottlenecks"].is_array());
    assert!(doc["risk_factors"].is_array());
    assert!(doc["optimization_suggestions"].is_array());
}
