//! `chatter templates ...`, run as a user runs it: exact output and exit codes (SQLite; the
//! same logic is tested on Postgres in chatter-store/tests/templates.rs).
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

/// A fresh directory for one test's files and database.
fn temp_dir(test: &str) -> (PathBuf, String) {
    let dir = std::env::temp_dir().join(format!(
        "chatter-cli-templates-{}-{test}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let url = format!("sqlite://{}/chatter.db", dir.display());
    (dir, url)
}

fn stdout_json(out: &Output) -> Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {out:?}"))
}

fn stderr(out: &Output) -> String {
    String::from_utf8(out.stderr.clone()).unwrap()
}

fn script(dir: &Path, content: &str) -> String {
    let path = dir.join("model.json");
    std::fs::write(
        &path,
        json!({"default": {"content": content}, "usage": {"prompt_tokens": 5, "completion_tokens": 2}})
            .to_string(),
    )
    .unwrap();
    format!("scripted:{}", path.display())
}

#[test]
fn list_and_show_the_builtins_without_a_database() {
    let out = chatter(&["templates", "list", "--format", "json"]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let doc = stdout_json(&out);
    let mut names: Vec<&str> = doc["templates"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    names.sort_unstable();
    assert_eq!(
        names,
        [
            "blog_writing_assistant",
            "code_assistant",
            "customer_support",
            "data_analyst",
            "document_qa",
            "document_reviewer",
            "general_chat",
            "learning_tutor",
            "meeting_summarizer",
            "research_assistant",
            "universal_chat",
            "workflow_validator"
        ]
    );
    let out = chatter(&["templates", "list", "--category", "research"]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let text = String::from_utf8(out.stdout).unwrap();
    let listed: Vec<&str> = text
        .lines()
        .map(|l| l.split_whitespace().next().unwrap())
        .collect();
    assert_eq!(listed, ["document_qa", "research_assistant"], "{text}");

    let out = chatter(&["templates", "show", "customer_support"]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.starts_with("template customer_support\n  id         customer_support\n  category   customer_support\n  version    1\n  built-in   true\n"), "{text}");
    assert!(
        text.contains("  tools      search_kb, create_ticket, escalate\n"),
        "{text}"
    );
    assert!(text.contains("  retrievers support_docs\n"), "{text}");
    assert!(text.contains("  max_tool_calls = 5\n"), "{text}");
    assert!(
        text.contains("retrieval (retrieval) llm (llm) tools (tool) end (end)"),
        "{text}"
    );
    assert!(text.ends_with("analytics\n  never run\n"), "{text}");

    let out = chatter(&["templates", "show", "document_qa", "--format", "json"]);
    let doc = stdout_json(&out);
    assert_eq!(doc["template"]["is_builtin"], true);
    assert_eq!(doc["config_hash"].as_str().unwrap().len(), 64);
    assert_eq!(
        doc["versions"],
        json!([{"version": 1, "is_latest": true, "created_at": doc["versions"][0]["created_at"]}])
    );
    assert_eq!(doc["definition"]["nodes"][1]["data"]["config"]["top_k"], 15);

    let out = chatter(&["templates", "show", "no_such_template"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(stderr(&out), "error: unknown template `no_such_template`\n");
}

#[test]
fn run_records_a_template_execution_and_refuses_bad_parameters() {
    let (dir, db) = temp_dir("run");
    let model = script(&dir, "Hello from general chat.");
    let out = chatter(&[
        "templates",
        "run",
        "general_chat",
        "--model",
        &model,
        "--input",
        "hi",
        "--params",
        r#"{"temperature": 0.1}"#,
        "--db",
        &db,
        "--format",
        "json",
    ]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let doc = stdout_json(&out);
    assert_eq!(doc["status"], "completed");
    assert_eq!(doc["response"], "Hello from general chat.");
    assert_eq!(doc["template"], "general_chat");
    let id = doc["execution_id"].as_str().unwrap();

    let out = chatter(&["executions", "show", id, "--db", &db, "--format", "json"]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let shown = stdout_json(&out);
    assert_eq!(shown["execution"]["kind"], "template");
    assert_eq!(shown["execution"]["template_id"], "general_chat");
    assert_eq!(shown["execution"]["definition_id"], Value::Null);
    assert_eq!(shown["execution"]["params"]["temperature"], 0.1);
    assert_eq!(shown["execution"]["params"]["memory_window"], 20);

    let out = chatter(&["templates", "show", "general_chat", "--db", &db]);
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.contains("analytics\n  used 1 (ok 1, failed 0), tokens 7,"),
        "{text}"
    );

    // Bad parameters: exit 2 naming the parameter; nothing recorded.
    for (params, expected) in [
        (
            r#"{"temperature": 7}"#,
            "error: invalid template: template `general_chat`: invalid parameters: `temperature`: must be between 0 and 2, found 7\n",
        ),
        (
            r#"{"temperature": "hot"}"#,
            "error: invalid template: template `general_chat`: invalid parameters: `temperature`: expected a number, found a string\n",
        ),
        (
            r#"[1]"#,
            "error: --params must be a JSON object, found [1]\n",
        ),
    ] {
        let out = chatter(&[
            "templates",
            "run",
            "general_chat",
            "--model",
            &model,
            "--params",
            params,
            "--db",
            &db,
        ]);
        assert_eq!(out.status.code(), Some(2), "{params}: {out:?}");
        assert_eq!(stderr(&out), expected);
    }
    let out = chatter(&["templates", "run", "nope", "--model", &model, "--db", &db]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(stderr(&out), "error: unknown template `nope`\n");
    let out = chatter(&["templates", "run", "general_chat"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("pass --model scripted:FILE"));
    let out = chatter(&["executions", "list", "--db", &db, "--format", "json"]);
    assert_eq!(stdout_json(&out)["executions"].as_array().unwrap().len(), 1);
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn run_a_rag_template_over_documents() {
    let (dir, _) = temp_dir("rag");
    let model = script(&dir, "Answered from the documents.");
    let out = chatter(&[
        "templates",
        "run",
        "document_qa",
        "--model",
        &model,
        "--documents",
        "examples/data/sample-data.json",
        "--input",
        "Which AI model providers are supported?",
        "--params",
        r#"{"score_threshold": 0.0, "max_documents": 2}"#,
        "--format",
        "json",
        "--events",
    ]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let doc = stdout_json(&out);
    assert_eq!(doc["response"], "Answered from the documents.");
    let nodes: Vec<&str> = doc["node_runs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["node_id"].as_str().unwrap())
        .collect();
    assert_eq!(nodes, ["start", "retrieval", "llm", "end"]);
    let retrieved = doc["events"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["type"] == "node_completed" && e["node_id"] == "retrieval")
        .unwrap();
    assert_eq!(
        retrieved["output"],
        json!({"retriever": "document_store", "query": "Which AI model providers are supported?", "count": 2}),
        "{retrieved}"
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn export_then_import_with_name_merge_and_malformed_files() {
    let (dir, db) = temp_dir("import");
    let file = dir.join("export.json");
    let out = chatter(&[
        "templates",
        "export",
        "code_assistant",
        "--output",
        file.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert_eq!(
        String::from_utf8(out.stdout).unwrap(),
        format!("exported code_assistant to {}\n", file.display())
    );
    let export: Value = serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
    assert_eq!(export["template"]["export_version"], "1.0");
    assert_eq!(export["export_format"], "json");

    // The built-in's name is free for the local user: the import is theirs, not built-in.
    let out = chatter(&[
        "templates",
        "import",
        file.to_str().unwrap(),
        "--db",
        &db,
        "--format",
        "json",
    ]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let imported = stdout_json(&out)["template"].clone();
    assert_eq!(imported["owner_id"], "local");
    assert_eq!(imported["is_builtin"], false);
    assert_eq!(imported["version"], 1);
    let out = chatter(&["templates", "import", file.to_str().unwrap(), "--db", &db]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("conflict"), "{}", stderr(&out));
    let out = chatter(&[
        "templates",
        "import",
        file.to_str().unwrap(),
        "--db",
        &db,
        "--merge",
    ]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert_eq!(
        String::from_utf8(out.stdout).unwrap(),
        format!(
            "imported code_assistant as {} (version 2)\n",
            imported["id"].as_str().unwrap()
        )
    );
    let out = chatter(&[
        "templates",
        "import",
        file.to_str().unwrap(),
        "--db",
        &db,
        "--name",
        "my coder",
    ]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert!(
        String::from_utf8(out.stdout)
            .unwrap()
            .starts_with("imported my coder as ")
    );

    let listed = |db: &str| {
        let out = chatter(&["templates", "list", "--db", db, "--format", "json"]);
        stdout_json(&out)["templates"].as_array().unwrap().len()
    };
    assert_eq!(listed(&db), 14);
    for (name, text, expected) in [
        (
            "bad.json",
            "{\"template\": ",
            "malformed import: invalid JSON",
        ),
        (
            "array.json",
            "[1, 2]",
            "malformed import: expected a JSON object, found an array",
        ),
        (
            "version.json",
            r#"{"template": {"name": "x", "export_version": "9"}}"#,
            "malformed import: unsupported export_version \"9\"",
        ),
    ] {
        let bad = dir.join(name);
        std::fs::write(&bad, text).unwrap();
        let out = chatter(&["templates", "import", bad.to_str().unwrap(), "--db", &db]);
        assert_eq!(out.status.code(), Some(2), "{name}: {out:?}");
        let err = stderr(&out);
        assert!(
            err.starts_with(&format!(
                "error: {}: invalid template: {expected}",
                bad.display()
            )),
            "{err}"
        );
    }
    assert_eq!(listed(&db), 14, "nothing written");
    let _ = std::fs::remove_dir_all(dir);
}
