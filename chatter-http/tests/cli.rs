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

fn run_json(args: &[&str]) -> (i32, Value) {
    let mut all = vec!["run"];
    all.extend_from_slice(args);
    all.extend_from_slice(&["--format", "json"]);
    let out = chatter(&all);
    let code = out.status.code().unwrap();
    let doc = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stderr)));
    (code, doc)
}

#[test]
fn run_examples_with_their_scripted_models() {
    let w = "examples/workflows";
    let (code, doc) = run_json(&[
        &format!("{w}/tools-loop.json"),
        "--model",
        &format!("scripted:{w}/tools-loop.scripted.json"),
        "--tools",
        &format!("{w}/tools-loop.tools.json"),
        "--input",
        r#"{"message": "What is the weather in Oslo?"}"#,
    ]);
    assert_eq!(code, 0, "{doc}");
    assert_eq!(doc["status"], "completed");
    assert_eq!(doc["response"], "It is 21 °C and sunny in Oslo.");
    assert_eq!(
        doc["usage"],
        json!({"prompt_tokens": 100, "completion_tokens": 20, "total_tokens": 120, "cost": 0.0})
    );
    let runs: Vec<(String, u64)> = doc["node_runs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["node_id"].as_str().unwrap().to_owned(),
                r["iteration"].as_u64().unwrap(),
            )
        })
        .collect();
    let expected: Vec<(String, u64)> = [
        ("start", 0),
        ("agent", 0),
        ("tools", 0),
        ("agent", 1),
        ("end", 0),
    ]
    .iter()
    .map(|(n, i)| ((*n).to_owned(), *i))
    .collect();
    assert_eq!(runs, expected);
    let first = &doc["node_runs"][0];
    let keys: Vec<&str> = first
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(
        keys,
        [
            "node_id",
            "iteration",
            "status",
            "started_at",
            "duration_ms",
            "error"
        ]
    );
    assert!(first["started_at"].as_str().unwrap().ends_with('Z'));
    assert!(doc.get("events").is_none());

    let (code, doc) = run_json(&[
        &format!("{w}/loop.json"),
        "--model",
        &format!("scripted:{w}/loop.scripted.json"),
        "--input",
        "Explain workflows",
    ]);
    assert_eq!(code, 0);
    assert_eq!(
        doc["response"],
        "Draft 3: workflows are durable graphs of nodes that Chatter runs."
    );

    let (code, doc) = run_json(&[
        &format!("{w}/map.json"),
        "--model",
        &format!("scripted:{w}/map.scripted.json"),
        "--input",
        r#"{"lines": ["good morning", "thank you", "see you soon"]}"#,
        "--events",
    ]);
    assert_eq!(code, 0);
    assert_eq!(doc["response"], "bonjour\nmerci\nà bientôt");
    let events = doc["events"].as_array().unwrap();
    assert_eq!(events.first().unwrap()["type"], "execution_started");
    assert_eq!(events.last().unwrap()["type"], "execution_completed");
    for (i, e) in events.iter().enumerate() {
        assert_eq!(e["seq"], i as u64 + 1);
    }
}

#[test]
fn run_text_mode_streams_progress_and_tokens() {
    let w = "examples/workflows";
    let out = chatter(&[
        "run",
        &format!("{w}/chat.json"),
        "--model",
        &format!("scripted:{w}/chat.scripted.json"),
        "--input",
        "hello",
    ]);
    assert_eq!(out.status.code(), Some(0));
    let text = String::from_utf8(out.stdout).unwrap();
    // The durations depend on the machine's load: every line but theirs is exact.
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[0], "> start (start)", "{text}");
    let took = lines[1]
        .strip_prefix("< start completed in ")
        .and_then(|rest| rest.strip_suffix(" ms"));
    assert!(took.is_some_and(|ms| ms.parse::<u64>().is_ok()), "{text}");
    assert_eq!(lines[2], "> chat (llm)", "{text}");
    assert_eq!(
        lines[3],
        "  [chat] Hello! I am a scripted assistant: I answer offline, the same way every time.",
        "{text}"
    );
    assert!(
        text.contains("\nresponse: Hello! I am a scripted assistant"),
        "{text}"
    );
}

#[test]
fn run_exit_codes_follow_the_outcome() {
    // A failing model fails the execution: exit 1, with the error in the document.
    let model = temp_file(
        "failing.json",
        r#"{"default": {"error": {"class": "bad_request", "message": "no thanks"}}}"#,
    );
    let (code, doc) = run_json(&[
        "examples/workflows/chat.json",
        "--model",
        &format!("scripted:{}", model.display()),
    ]);
    assert_eq!(code, 1, "{doc}");
    assert_eq!(doc["status"], "failed");
    assert!(
        doc["error"]["message"]
            .as_str()
            .unwrap()
            .contains("no thanks"),
        "{doc}"
    );
    // Unusable input: exit 2 with a message, nothing run.
    let out = chatter(&["run", "examples/workflows/chat.json"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8(out.stderr)
            .unwrap()
            .contains("pass --model scripted:FILE")
    );
    let out = chatter(&[
        "run",
        "examples/workflows/chat.json",
        "--model",
        "scripted:x.json",
        "--input",
        "{bad",
    ]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(err.contains("--input is not valid JSON"), "{err}");
    let out = chatter(&[
        "run",
        "examples/workflows/chat.json",
        "--model",
        "scripted:/nope/none.json",
    ]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(err.contains("cannot read /nope/none.json"), "{err}");
    // An invalid definition is refused before anything runs: exit 1 with the report.
    let bad = temp_file(
        "bad.json",
        r#"{"nodes": [{"id": "a", "type": "llm", "config": {"temperature": 9}}], "edges": []}"#,
    );
    let out = chatter(&[
        "run",
        bad.to_str().unwrap(),
        "--model",
        "scripted:examples/workflows/chat.scripted.json",
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8(out.stderr).unwrap().contains("CHT-V013"));
}

/// A fresh directory for one test's database.
fn temp_db(test: &str) -> (PathBuf, String) {
    let dir = std::env::temp_dir().join(format!(
        "chatter-cli-db-{}-{test}-{}",
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

#[test]
fn run_with_db_is_listed_and_shown_with_node_runs_and_events() {
    let (dir, db) = temp_db("run");
    let (code, run) = run_json(&[
        "examples/workflows/chat.json",
        "--model",
        "scripted:examples/workflows/chat.scripted.json",
        "--input",
        "hi",
        "--events",
        "--db",
        &db,
    ]);
    assert_eq!(code, 0, "{run}");
    let id = run["execution_id"].as_str().unwrap().to_owned();

    let out = chatter(&["executions", "list", "--db", &db, "--format", "json"]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let list: Value = serde_json::from_slice(&out.stdout).unwrap();
    let executions = list["executions"].as_array().unwrap();
    assert_eq!(executions.len(), 1, "{list}");
    assert_eq!(executions[0]["id"], id.as_str());
    assert_eq!(executions[0]["status"], "completed");
    assert_eq!(executions[0]["response"], run["response"]);
    assert_eq!(executions[0]["total_tokens"], run["usage"]["total_tokens"]);

    // Filters: no failed run; text lists the id and status.
    let out = chatter(&[
        "executions",
        "list",
        "--db",
        &db,
        "--status",
        "failed",
        "--format",
        "json",
    ]);
    let none: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(none, json!({"executions": []}));
    let out = chatter(&["executions", "list", "--db", &db, "--limit", "5"]);
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.starts_with(&format!("{id}  completed")), "{text}");

    let out = chatter(&["executions", "show", &id, "--db", &db, "--format", "json"]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let shown: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(shown["execution"]["id"], id.as_str());
    let mut nodes: Vec<&str> = shown["node_runs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["node_id"].as_str().unwrap())
        .collect();
    nodes.sort_unstable();
    assert_eq!(nodes, ["chat", "end", "start"]);
    // The stored events are the run's events, numbered alike.
    let stored: Vec<(i64, String)> = shown["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["seq"].as_i64().unwrap(),
                e["event_type"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let ran: Vec<(i64, String)> = run["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["seq"].as_i64().unwrap(),
                e["type"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(stored, ran);

    let out = chatter(&["executions", "show", &id, "--db", &db]);
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.starts_with(&format!("execution {id}\n  status   completed\n")),
        "{text}"
    );
    assert!(text.contains("node runs (3)\n"), "{text}");
    assert!(
        text.contains(&format!("events ({})\n", ran.len())),
        "{text}"
    );

    // An unknown id: exit 1 with a message.
    let out = chatter(&["executions", "show", "01NOPE", "--db", &db]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        String::from_utf8(out.stderr).unwrap(),
        "error: unknown execution `01NOPE`\n"
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn migrate_applies_once_then_is_a_no_op() {
    let (dir, db) = temp_db("migrate");
    let out = chatter(&["migrate", "--db", &db]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let migrations = chatter_store::migrate::SQLITE_MIGRATIONS;
    let applied: String = migrations
        .iter()
        .map(|m| format!("applied {:04}_{}\n", m.version, m.name))
        .collect();
    assert!(applied.starts_with("applied 0001_core\napplied 0002_auth_audit_jobs\n"));
    assert_eq!(String::from_utf8(out.stdout).unwrap(), applied);
    let out = chatter(&["migrate", "--db", &db]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert_eq!(
        String::from_utf8(out.stdout).unwrap(),
        format!(
            "up to date: {} migrations already applied\n",
            migrations.len()
        )
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn unusable_database_urls_exit_2_with_a_clear_message() {
    let out = chatter(&["migrate", "--db", "mysql://localhost/x"]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(
        err.starts_with(
            "error: --db mysql://localhost/x: storage error (config): unsupported database URL scheme `mysql`"
        ),
        "{err}"
    );
    let out = chatter(&[
        "executions",
        "list",
        "--db",
        "postgres://nobody@127.0.0.1:1/none",
    ]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(
        err.starts_with(
            "error: --db postgres://nobody@127.0.0.1:1/none: storage error (unavailable)"
        ),
        "{err}"
    );
    let out = chatter(&[
        "run",
        "examples/workflows/chat.json",
        "--model",
        "scripted:examples/workflows/chat.scripted.json",
        "--db",
        "nonsense",
    ]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
}

#[test]
fn run_rag_with_documents_answers_from_ranked_context() {
    let (code, doc) = run_json(&[
        "examples/workflows/rag.yaml",
        "--model",
        "scripted:examples/workflows/rag.scripted.json",
        "--documents",
        "examples/data/sample-data.json",
        "--input",
        "What providers does Chatter support?",
        "--events",
    ]);
    assert_eq!(code, 0, "{doc}");
    assert_eq!(
        doc["response"],
        "According to the documents, Chatter supports several model providers, document analysis and custom profiles."
    );
    // The retrieval node found ranked chunks of the sample documents.
    let completed = doc["events"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["type"] == "node_completed" && e["node_id"] == "retrieve")
        .unwrap();
    let count = completed["output"]["count"].as_u64().unwrap();
    assert!((1..=3).contains(&count), "{completed}");

    // A documents file that is not a list of {title, content}: exit 2.
    let bad = temp_file("docs.json", r#"[{"title": "x"}]"#);
    let out = chatter(&[
        "run",
        "examples/workflows/rag.yaml",
        "--model",
        "scripted:examples/workflows/rag.scripted.json",
        "--documents",
        bad.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(
        String::from_utf8(out.stderr)
            .unwrap()
            .contains("document 0 needs string fields `title` and `content`")
    );
}

// ---------------------------------------------------------------------------------------------
// chatter templates ... (SQLite; the same logic runs on Postgres in
// chatter-store/tests/templates.rs)
// ---------------------------------------------------------------------------------------------

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
    let (dir, db) = temp_db("templates-run");
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
    let (dir, _) = temp_db("templates-rag");
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
    let (dir, db) = temp_db("templates-import");
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

/// Every row of the execution tables of a SQLite database, to check that a refused command
/// changed nothing.
fn dump_executions(dir: &Path) -> Vec<String> {
    let conn = rusqlite::Connection::open(dir.join("chatter.db")).unwrap();
    let mut rows = Vec::new();
    for table in [
        "workflow_executions",
        "workflow_node_runs",
        "workflow_events",
        "workflow_checkpoints",
    ] {
        let mut stmt = conn.prepare(&format!("SELECT * FROM {table}")).unwrap();
        let columns = stmt.column_count();
        let mut query = stmt.query([]).unwrap();
        while let Some(row) = query.next().unwrap() {
            let values: Vec<String> = (0..columns)
                .map(|i| format!("{:?}", row.get::<_, rusqlite::types::Value>(i).unwrap()))
                .collect();
            rows.push(format!("{table}: {}", values.join(" | ")));
        }
    }
    rows.sort();
    rows
}

fn stderr_of(out: &Output) -> String {
    String::from_utf8(out.stderr.clone()).unwrap()
}

fn json_of(out: &Output) -> Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {out:?}"))
}

const APPROVAL: &str = "examples/workflows/approval.json";
const APPROVAL_MODEL: &str = "scripted:examples/workflows/approval.scripted.json";

#[test]
fn approval_waits_refuses_bad_decisions_then_completes_with_steps_and_forks() {
    let (dir, db) = temp_db("approval");
    approval_flow(&db, &|| dump_executions(&dir));
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn approval_flow_on_postgres() {
    let Ok(base) = std::env::var("CHATTER_TEST_POSTGRES_URL") else {
        println!("skipped: CHATTER_TEST_POSTGRES_URL not set");
        return;
    };
    let schema = format!(
        "cli_{}_{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    );
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let client = runtime.block_on(async {
        let (client, connection) = tokio_postgres::connect(&base, tokio_postgres::NoTls)
            .await
            .expect("CHATTER_TEST_POSTGRES_URL is set but Postgres is not usable");
        tokio::spawn(connection);
        client
            .batch_execute(&format!("CREATE SCHEMA \"{schema}\""))
            .await
            .unwrap();
        client
    });
    let separator = if base.contains('?') { '&' } else { '?' };
    let db = format!("{base}{separator}options=-csearch_path%3D{schema}");
    let dump = || {
        runtime.block_on(async {
            let mut rows = Vec::new();
            for table in [
                "workflow_executions",
                "workflow_node_runs",
                "workflow_events",
                "workflow_checkpoints",
            ] {
                for row in client
                    .query(&format!("SELECT t::text FROM \"{schema}\".{table} t"), &[])
                    .await
                    .unwrap()
                {
                    rows.push(format!("{table}: {}", row.get::<_, String>(0)));
                }
            }
            rows.sort();
            rows
        })
    };
    approval_flow(&db, &dump);
    runtime.block_on(async {
        client
            .batch_execute(&format!("DROP SCHEMA \"{schema}\" CASCADE"))
            .await
            .unwrap();
    });
}

/// Run → waiting → refused decisions (nothing changed) → approve → completed; steps; fork;
/// foreign executions. `dump` lists every row of the execution tables.
fn approval_flow(db: &str, dump: &dyn Fn() -> Vec<String>) {
    let db = db.to_owned();
    // Run: the execution waits at the approval; exit code 3 and the output say so.
    let out = chatter(&[
        "run",
        APPROVAL,
        "--model",
        APPROVAL_MODEL,
        "--input",
        "my refund?",
        "--db",
        &db,
    ]);
    assert_eq!(out.status.code(), Some(3), "{out:?}");
    let text = String::from_utf8(out.stdout.clone()).unwrap();
    let id = text
        .lines()
        .find_map(|l| l.strip_prefix("execution "))
        .and_then(|l| l.split(' ').next())
        .unwrap()
        .to_owned();
    assert!(
        text.contains(&format!("\nexecution {id} waiting in ")),
        "{text}"
    );
    assert!(
        text.contains(
            "waiting at review: Send this reply? Your refund was approved and is on its way. \
             (decisions: approve, reject)\n"
        ),
        "{text}"
    );
    assert!(
        text.contains(&format!(
            "resume with: chatter executions approve {id} --node review --decision approve --db {db}\n"
        )),
        "{text}"
    );
    let listed = json_of(&chatter(&[
        "executions",
        "list",
        "--db",
        &db,
        "--format",
        "json",
    ]));
    assert_eq!(listed["executions"][0]["status"], "waiting");

    // Refused: nothing changes in the database, exit 1 with the reason.
    let before = dump();
    // Its checkpoints are in the dump: rows of their own (Postgres), or held by its node run
    // rows (SQLite, migration 0011).
    assert!(
        before.iter().any(|row| {
            (row.starts_with("workflow_checkpoints: ") || row.starts_with("workflow_node_runs: "))
                && row.contains(&id)
                && row.contains("messages")
        }),
        "{before:?}"
    );
    let refusals: [(&[&str], String); 6] = [
        (
            &["approve", &id, "--decision", "maybe"],
            "error: invalid request: decision `maybe` is not allowed at approval `review`; allowed: approve, reject\n".into(),
        ),
        (
            &["approve", &id, "--decision", "approve", "--input", r#"{"x": 1}"#],
            "error: invalid request: the input of approval `review` does not match its input_schema: x: unknown key `x`\n".into(),
        ),
        (
            &["approve", &id, "--decision", "approve", "--node", "draft"],
            format!("error: invalid request: execution `{id}` is not waiting at `draft` (waiting: `review`)\n"),
        ),
        (
            &["resume", &id],
            format!("error: invalid request: execution `{id}` is waiting for a decision at `review`; resume it with one\n"),
        ),
        (
            &["approve", "01NOPE", "--decision", "approve"],
            "error: unknown execution `01NOPE`\n".into(),
        ),
        (
            &["fork", &id, "--step", "4"],
            format!("error: invalid request: execution `{id}` has steps 1..=3; there is no step 4 to fork from\n"),
        ),
    ];
    for (args, message) in &refusals {
        let mut all = vec!["executions"];
        all.extend_from_slice(args);
        all.extend_from_slice(&["--db", &db, "--model", APPROVAL_MODEL]);
        let out = chatter(&all);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {out:?}");
        assert_eq!(&stderr_of(&out), message, "{args:?}");
        assert_eq!(dump(), before, "{args:?} changed the database");
    }
    // Unusable arguments: exit 2.
    for args in [
        &["approve", &id, "--decision", "approve", "--input", "{nope"][..],
        &[
            "approve",
            &id,
            "--decision",
            "approve",
            "--durability",
            "later",
        ][..],
        &["fork", &id, "--step", "1", "--set", "draft"][..],
        &["fork", &id, "--step", "1", "--set", "draft=unquoted text"][..],
    ] {
        let mut all = vec!["executions"];
        all.extend_from_slice(args);
        all.extend_from_slice(&["--db", &db, "--model", APPROVAL_MODEL]);
        let out = chatter(&all);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {out:?}");
        assert_eq!(dump(), before, "{args:?} changed the database");
    }

    // Approved: the same execution completes on the approved branch.
    let out = chatter(&[
        "executions",
        "approve",
        &id,
        "--decision",
        "approve",
        "--input",
        r#"{"note": "fine"}"#,
        "--db",
        &db,
        "--model",
        APPROVAL_MODEL,
        "--format",
        "json",
    ]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let done = json_of(&out);
    assert_eq!(done["execution_id"], id.as_str());
    assert_eq!(done["status"], "completed");
    assert_eq!(
        done["response"],
        "sent: Your refund was approved and is on its way."
    );
    assert!(done.get("waiting").is_none(), "{done}");
    // Ended: resuming or approving again is refused.
    let before = dump();
    let out = chatter(&[
        "executions",
        "approve",
        &id,
        "--decision",
        "reject",
        "--db",
        &db,
        "--model",
        APPROVAL_MODEL,
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        stderr_of(&out),
        format!(
            "error: invalid request: execution `{id}` has ended (completed); it cannot be resumed\n"
        )
    );
    assert_eq!(dump(), before);

    // Steps: each node run's end with the state after it.
    let out = chatter(&["executions", "steps", &id, "--db", &db, "--format", "json"]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let steps = json_of(&out);
    assert_eq!(steps["status"], "completed");
    let rows: Vec<(i64, &str, i64, i64, &str)> = steps["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["step"].as_i64().unwrap(),
                s["node_id"].as_str().unwrap(),
                s["iteration"].as_i64().unwrap(),
                s["attempt"].as_i64().unwrap(),
                s["status"].as_str().unwrap(),
            )
        })
        .collect();
    let names: Vec<(&str, &str)> = rows.iter().map(|r| (r.1, r.4)).collect();
    assert_eq!(
        names,
        [
            ("start", "completed"),
            ("draft", "completed"),
            ("review", "completed"),
            ("rejected", "skipped"),
            ("send", "completed"),
            ("sent", "completed"),
        ]
    );
    assert!(rows.windows(2).all(|w| w[0].0 < w[1].0), "{rows:?}");
    assert!(rows.iter().all(|r| r.2 == 0 && r.3 == 1), "{rows:?}");
    let states: Vec<&Value> = steps["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| &s["state"])
        .collect();
    assert_eq!(states[0]["variables"], json!({}));
    assert_eq!(
        states[1]["variables"],
        json!({"draft": "Your refund was approved and is on its way."})
    );
    assert_eq!(
        states[2]["variables"]["review"],
        json!({"decision": "approve", "input": {"note": "fine"}, "timed_out": false})
    );
    assert_eq!(
        states[5]["variables"]["sent"],
        "Your refund was approved and is on its way."
    );
    let out = chatter(&["executions", "steps", &id, "--db", &db]);
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.starts_with(&format!(
            "execution {id} (completed): 6 steps\n  step  node  iteration  attempt  status\n     1  start  0  1  completed\n     2  draft  0  1  completed\n"
        )),
        "{text}"
    );

    // Fork from the draft with an edited draft: a new execution waits at the approval with the
    // edited text; the original is untouched.
    let before = dump();
    let original_steps = steps;
    let out = chatter(&[
        "executions",
        "fork",
        &id,
        "--step",
        "2",
        "--set",
        r#"draft="Sorry, no refund.""#,
        "--db",
        &db,
        "--model",
        APPROVAL_MODEL,
        "--format",
        "json",
    ]);
    assert_eq!(out.status.code(), Some(3), "{out:?}");
    let forked = json_of(&out);
    let fork_id = forked["execution_id"].as_str().unwrap().to_owned();
    assert_ne!(fork_id, id);
    assert_eq!(forked["status"], "waiting");
    assert_eq!(
        forked["waiting"],
        json!([{"node_id": "review", "question": "Send this reply? Sorry, no refund.",
                "allowed_decisions": ["approve", "reject"]}])
    );
    let out = chatter(&["executions", "steps", &id, "--db", &db, "--format", "json"]);
    assert_eq!(json_of(&out), original_steps);
    let after = dump();
    let original_rows = |rows: &[String]| -> Vec<String> {
        rows.iter()
            .filter(|r| !r.contains(&fork_id))
            .cloned()
            .collect()
    };
    assert_eq!(original_rows(&after), before);
    // The fork is rejected; its rejection branch runs.
    let out = chatter(&[
        "executions",
        "approve",
        &fork_id,
        "--decision",
        "reject",
        "--input",
        r#"{"note": "too curt"}"#,
        "--db",
        &db,
        "--model",
        APPROVAL_MODEL,
        "--format",
        "json",
    ]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert_eq!(json_of(&out)["response"], "not sent: too curt");

    // Another owner's execution is as unknown as a missing one.
    let foreign = tokio::runtime::Runtime::new().unwrap().block_on(async {
        let store = chatter_store::connect(&db).await.unwrap();
        store
            .create_execution(chatter_core::store::NewExecution::new(
                "someone-else",
                chatter_core::store::ExecutionKind::Adhoc,
                json!({}),
            ))
            .await
            .unwrap()
            .id
    });
    let before = dump();
    for args in [
        &["approve", &foreign, "--decision", "approve"][..],
        &["resume", &foreign][..],
        &["steps", &foreign][..],
        &["fork", &foreign, "--step", "1"][..],
        &["cancel", &foreign][..],
    ] {
        let mut all = vec!["executions"];
        all.extend_from_slice(args);
        all.extend_from_slice(&["--db", &db]);
        let out = chatter(&all);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {out:?}");
        assert_eq!(
            stderr_of(&out),
            format!("error: unknown execution `{foreign}`\n")
        );
    }
    assert_eq!(dump(), before);

    // A waiting execution nobody will approve is cancelled: its events end with the
    // cancellation; an ended one cannot be cancelled (nothing changes).
    let (code, waiting) = run_json(&[
        APPROVAL,
        "--model",
        APPROVAL_MODEL,
        "--input",
        "my refund?",
        "--db",
        &db,
    ]);
    assert_eq!(code, 3, "{waiting}");
    let waiting_id = waiting["execution_id"].as_str().unwrap().to_owned();
    let out = chatter(&[
        "executions",
        "cancel",
        &waiting_id,
        "--db",
        &db,
        "--reason",
        "nobody is there",
    ]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert_eq!(
        String::from_utf8(out.stdout).unwrap(),
        format!("execution {waiting_id}: cancelled\n")
    );
    let shown = json_of(&chatter(&[
        "executions",
        "show",
        &waiting_id,
        "--db",
        &db,
        "--format",
        "json",
    ]));
    assert_eq!(shown["execution"]["status"], "cancelled");
    assert_eq!(shown["execution"]["error"], "nobody is there");
    let events = shown["events"].as_array().unwrap();
    let last = events.last().unwrap();
    assert_eq!(last["event_type"], "execution_cancelled", "{last}");
    assert_eq!(last["payload"], json!({"reason": "nobody is there"}));
    assert_eq!(last["seq"], json!(events.len()));
    let before = dump();
    let out = chatter(&["executions", "cancel", &waiting_id, "--db", &db]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert_eq!(
        stderr_of(&out),
        format!(
            "error: invalid request: execution `{waiting_id}` has already ended (cancelled); it cannot be cancelled\n"
        )
    );
    assert_eq!(dump(), before);
}

#[test]
fn resume_due_takes_a_timed_out_approvals_decision() {
    let (dir, db) = temp_db("resume-due");
    let file = temp_file(
        "timeout.json",
        r#"{"nodes": [{"id": "start", "type": "start"},
                      {"id": "gate", "type": "approval",
                       "config": {"question": "Go on?", "timeout_ms": 1,
                                  "timeout_decision": "reject"}},
                      {"id": "yes", "type": "end", "config": {"output": "went on"}},
                      {"id": "no", "type": "end", "config": {"output": "stopped"}}],
            "edges": [{"source": "start", "target": "gate"},
                      {"source": "gate", "target": "yes", "sourceHandle": "approve"},
                      {"source": "gate", "target": "no", "sourceHandle": "reject"}]}"#,
    );
    let (code, run) = run_json(&[file.to_str().unwrap(), "--db", &db]);
    assert_eq!(code, 3, "{run}");
    let id = run["execution_id"].as_str().unwrap().to_owned();
    assert_eq!(run["status"], "waiting");

    let out = chatter(&["executions", "resume-due", "--db", &db]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert_eq!(
        String::from_utf8(out.stdout).unwrap(),
        format!("{id}  completed\n")
    );
    let shown = json_of(&chatter(&[
        "executions",
        "show",
        &id,
        "--db",
        &db,
        "--format",
        "json",
    ]));
    assert_eq!(shown["execution"]["status"], "completed");
    assert_eq!(shown["execution"]["response"], "stopped");
    let steps = json_of(&chatter(&[
        "executions",
        "steps",
        &id,
        "--db",
        &db,
        "--format",
        "json",
    ]));
    let last = steps["steps"].as_array().unwrap().last().unwrap();
    assert_eq!(
        last["state"]["variables"]["gate"],
        json!({"decision": "reject", "input": null, "timed_out": true})
    );
    // Nothing is due any more.
    let out = chatter(&["executions", "resume-due", "--db", &db, "--format", "json"]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert_eq!(json_of(&out), json!({"resumed": []}));
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn run_durability_modes_record_the_same_steps() {
    let (dir, db) = temp_db("modes");
    let mut recorded = Vec::new();
    for mode in ["sync", "async", "exit"] {
        let (code, run) = run_json(&[
            "examples/workflows/loop.json",
            "--model",
            "scripted:examples/workflows/loop.scripted.json",
            "--db",
            &db,
            "--durability",
            mode,
        ]);
        assert_eq!(code, 0, "{mode}: {run}");
        let id = run["execution_id"].as_str().unwrap();
        let steps = json_of(&chatter(&[
            "executions",
            "steps",
            id,
            "--db",
            &db,
            "--format",
            "json",
        ]));
        let nodes: Vec<(String, i64)> = steps["steps"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| {
                (
                    s["node_id"].as_str().unwrap().to_owned(),
                    s["iteration"].as_i64().unwrap(),
                )
            })
            .collect();
        let last =
            steps["steps"].as_array().unwrap().last().unwrap()["state"]["variables"]["draft"]
                .clone();
        recorded.push((nodes, last));
    }
    assert_eq!(
        recorded[0].1,
        "Draft 3: workflows are durable graphs of nodes that Chatter runs."
    );
    assert_eq!(recorded[0].0.len(), 8, "{:?}", recorded[0].0);
    assert_eq!(recorded[1], recorded[0]);
    assert_eq!(recorded[2], recorded[0]);

    let out = chatter(&[
        "run",
        "examples/workflows/chat.json",
        "--model",
        "scripted:examples/workflows/chat.scripted.json",
        "--db",
        &db,
        "--durability",
        "later",
    ]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert_eq!(
        stderr_of(&out),
        "error: --durability must be sync, async or exit (got `later`)\n"
    );
    let out = chatter(&[
        "run",
        "examples/workflows/chat.json",
        "--model",
        "scripted:examples/workflows/chat.scripted.json",
        "--durability",
        "sync",
    ]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert_eq!(
        stderr_of(&out),
        "error: --durability needs --db (the database the steps are written to)\n"
    );
    let _ = std::fs::remove_dir_all(dir);
}
