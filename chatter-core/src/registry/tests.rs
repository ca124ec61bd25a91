use serde_json::{Map, Value, json};

use super::schema::PropertySchema as P;
use super::*;
use crate::definition::{CONFIG_KEY_ALIASES, KIND_ALIASES};
use crate::expr::STATE_VARIABLES;

fn obj(value: Value) -> Map<String, Value> {
    match value {
        Value::Object(map) => map,
        other => panic!("not an object: {other}"),
    }
}

fn check(kind: &str, config: Value) -> Vec<(String, ConfigIssueKind, String)> {
    let registry = NodeRegistry::builtin();
    let info = registry.get(kind).unwrap();
    info.check_config(&obj(config))
        .into_iter()
        .map(|i| (i.path, i.kind, i.message))
        .collect()
}

fn issue(path: &str, kind: ConfigIssueKind, message: &str) -> (String, ConfigIssueKind, String) {
    (path.to_owned(), kind, message.to_owned())
}

use ConfigIssueKind::{Missing, NotAllowed, OutOfRange, Unknown, WrongType};

#[test]
fn every_kind_of_design_4_is_present_in_order_with_its_aliases() {
    let registry = NodeRegistry::builtin();
    let kinds: Vec<(&str, Vec<&str>)> = registry
        .kinds()
        .map(|k| {
            (
                k.kind.as_str(),
                k.aliases.iter().map(String::as_str).collect(),
            )
        })
        .collect();
    assert_eq!(
        kinds,
        [
            ("start", vec![]),
            ("end", vec![]),
            ("llm", vec!["model", "call_model", "callModel"]),
            ("tool", vec!["tools", "execute_tools", "executeTools"]),
            ("retrieval", vec![]),
            ("memory", vec![]),
            ("conditional", vec!["condition"]),
            ("loop", vec![]),
            ("variable", vec![]),
            ("error_handler", vec!["errorHandler"]),
            ("delay", vec![]),
            ("approval", vec![]),
            ("map", vec!["mapNode"]),
            ("subworkflow", vec!["subWorkflow", "sub_workflow"]),
            ("http", vec![]),
        ]
    );
    assert_eq!(registry.len(), 15);
    assert_eq!(registry.get("call_model").unwrap().kind, "llm");
    assert_eq!(registry.get("execute_tools").unwrap().kind, "tool");
    assert_eq!(registry.get("errorHandler").unwrap().kind, "error_handler");
    assert!(registry.get("transform").is_none());
    // The registry and the definition reader agree on every alias.
    for (alias, canonical) in KIND_ALIASES {
        assert_eq!(registry.get(alias).unwrap().kind, *canonical, "{alias}");
    }
}

#[test]
fn kinds_declare_templates_expressions_branches_and_cycle_exits() {
    let registry = NodeRegistry::builtin();
    type Row<'a> = (&'a str, Vec<String>, Vec<String>, Vec<String>, bool);
    let summary: Vec<Row<'_>> = registry
        .kinds()
        .filter(|k| {
            !k.template_keys.is_empty()
                || !k.expression_keys.is_empty()
                || !k.branches.is_empty()
                || k.can_exit_cycle
        })
        .map(|k| {
            (
                k.kind.as_str(),
                k.template_keys.clone(),
                k.expression_keys.clone(),
                k.branches.clone(),
                k.can_exit_cycle,
            )
        })
        .collect();
    let s = |v: &[&str]| v.iter().map(|x| (*x).to_owned()).collect::<Vec<_>>();
    assert_eq!(
        summary,
        [
            ("end", s(&["output"]), s(&[]), s(&[]), false),
            (
                "llm",
                s(&["system_prompt", "system_message", "prompt"]),
                s(&[]),
                s(&[]),
                false
            ),
            ("retrieval", s(&["query"]), s(&[]), s(&[]), false),
            ("memory", s(&["summary_prompt"]), s(&[]), s(&[]), false),
            (
                "conditional",
                s(&[]),
                s(&["condition"]),
                s(&["true", "false"]),
                true
            ),
            (
                "loop",
                s(&[]),
                s(&["condition"]),
                s(&["continue", "exit"]),
                true
            ),
            ("variable", s(&["value_template"]), s(&[]), s(&[]), false),
            ("approval", s(&["question"]), s(&[]), s(&[]), false),
            ("map", s(&[]), s(&["items"]), s(&[]), false),
            ("http", s(&["url"]), s(&[]), s(&[]), false),
        ]
    );
}

#[test]
fn metadata_is_complete_and_reads_writes_name_state_keys() {
    for info in NodeRegistry::builtin().kinds() {
        assert!(
            !info.name.is_empty() && !info.description.is_empty(),
            "{}",
            info.kind
        );
        assert!(info.icon.is_some() && info.color.is_some(), "{}", info.kind);
        for key in info.reads.iter().chain(&info.writes) {
            assert!(
                STATE_VARIABLES.contains(&key.as_str()),
                "{}: {key}",
                info.kind
            );
        }
        assert_eq!(
            info.schema_problems(),
            Vec::<String>::new(),
            "{}",
            info.kind
        );
        for common in COMMON_KEYS {
            assert!(
                info.property_schema(common).is_some(),
                "{}: {common}",
                info.kind
            );
        }
    }
}

#[test]
fn camel_case_keys_of_the_reader_are_known_where_the_kind_uses_them() {
    // Every snake_case key the definition reader produces is a key of at least one kind, except
    // keys of the old platform that no longer mean anything.
    let registry = NodeRegistry::builtin();
    let unused = ["summarize_older", "timeout_action", "error_types"];
    let retry = retry_schema().into_value();
    for (_, snake) in CONFIG_KEY_ALIASES {
        let known = registry.kinds().any(|k| k.property_schema(snake).is_some())
            || retry["properties"].get(snake).is_some();
        assert_eq!(known, !unused.contains(snake), "{snake}");
    }
}

/// The smallest config each kind needs besides its defaults.
fn required_values(kind: &str) -> Value {
    match kind {
        "conditional" => json!({"condition": "has_tool_calls"}),
        "variable" => json!({"operation": "increment", "variable_name": "count"}),
        "approval" => json!({"question": "Send {{ variables.draft }}?"}),
        "map" => json!({"items": "variables.urls", "workflow_id": "wf-1"}),
        "subworkflow" => json!({"template_id": "general_chat"}),
        "http" => json!({"url": "https://api.example.com/x", "allowed_hosts": ["api.example.com"]}),
        _ => json!({}),
    }
}

#[test]
fn every_schema_accepts_its_defaults() {
    for info in NodeRegistry::builtin().kinds() {
        let mut config = info.defaults();
        config.extend(obj(required_values(&info.kind)));
        assert_eq!(info.check_config(&config), [], "{}", info.kind);
        // Without the required values, only `Missing` issues remain.
        let defaults = info.defaults();
        assert!(
            info.check_config(&defaults)
                .iter()
                .all(|i| i.kind == Missing),
            "{}",
            info.kind
        );
    }
}

#[test]
fn defaults_are_those_of_the_contract() {
    let registry = NodeRegistry::builtin();
    let retry = json!({
        "max_attempts": 1, "backoff_ms": 500, "max_backoff_ms": 30000, "multiplier": 2,
        "jitter": true, "retry_on": ["timeout", "rate_limit", "server", "connection"]
    });
    assert_eq!(
        Value::Object(registry.get("tool").unwrap().defaults()),
        json!({
            "max_total_calls": 10, "max_consecutive_calls": 3, "parallel_calls": true,
            "tool_timeout_ms": 30000, "repetition_detection": "adaptive",
            "join": "all", "on_error": "fail", "timeout_ms": 60000, "retry": retry
        })
    );
    assert_eq!(
        Value::Object(registry.get("loop").unwrap().defaults()),
        json!({"condition": "true", "max_iterations": 10, "join": "all", "on_error": "fail",
               "timeout_ms": 60000, "retry": retry})
    );
    let approval = registry.get("approval").unwrap().defaults();
    assert_eq!(approval["allowed_decisions"], json!(["approve", "reject"]));
    assert_eq!(approval["timeout_ms"], 0);
    let defaults = |kind: &str| Value::Object(registry.get(kind).unwrap().defaults());
    assert_eq!(defaults("retrieval")["top_k"], 5);
    assert_eq!(defaults("retrieval")["retriever"], "documents");
    assert_eq!(defaults("retrieval")["score_threshold"], 0);
    assert_eq!(defaults("memory")["window_size"], 10);
    assert_eq!(defaults("memory")["keep_system"], true);
    assert_eq!(defaults("llm")["stream"], true);
    assert_eq!(defaults("error_handler")["fallback_action"], "continue");
    assert_eq!(defaults("error_handler")["retry_count"], 0);
    assert_eq!(defaults("delay")["delay_type"], "fixed");
    assert_eq!(defaults("map")["max_concurrency"], 4);
    assert_eq!(defaults("map")["item_variable"], "item");
    assert_eq!(defaults("map")["output_variable"], "results");
    assert_eq!(defaults("http")["method"], "GET");
    assert_eq!(defaults("http")["max_response_bytes"], 1_000_000);
    assert_eq!(defaults("variable")["amount"], 1);
}

#[test]
fn realistic_configs_pass() {
    let configs = [
        ("start", json!({"isEntryPoint": true})),
        ("end", json!({"output": "{{ last_message.content }}"})),
        (
            "llm",
            json!({
                "provider": "openai", "model": "gpt-4", "temperature": 0.7, "max_tokens": 1000,
                "top_p": 0.9, "system_message": "You are a helpful AI assistant.",
                "prompt": "Answer: {{ input.message }}", "enable_tools": true,
                "allowed_tools": ["search_kb", "create_ticket"], "tool_choice": "auto",
                "stream": false, "enable_streaming": true, "response_format": "json",
                "stop": ["\n\n"], "output_variable": "answer",
                "retry": {"max_attempts": 3, "retry_on": ["rate_limit", "server"]},
                "timeout_ms": 120000, "on_error": "continue", "join": "any",
                "description": "main model call"
            }),
        ),
        (
            "tool",
            json!({"allowed_tools": ["execute_code"], "max_tool_calls": 15,
                   "max_calls_per_tool": 5, "max_consecutive_calls": 2, "parallel_calls": false,
                   "tool_timeout_ms": 30000, "repetition_detection": "strict"}),
        ),
        (
            "retrieval",
            json!({"retriever": "support_docs", "query": "{{ input.message }}",
                   "max_documents": 15, "similarity_threshold": 0.7, "output_variable": "docs"}),
        ),
        (
            "memory",
            json!({"memory_window": 50, "summarize": true, "summary_model": "gpt-4o-mini",
                   "summary_prompt": "Summarise briefly.", "keep_system": false}),
        ),
        (
            "conditional",
            json!({"condition": "variable user_type equals premium"}),
        ),
        (
            "loop",
            json!({"condition": "tool_calls < 10", "max_iterations": 5}),
        ),
        (
            "variable",
            json!({"operation": "set", "variable_name": "user_type", "value": {"tier": 2}}),
        ),
        (
            "error_handler",
            json!({"retry_count": 3, "fallback_action": "clear_errors",
                   "fallback_message": "Sorry, something went wrong."}),
        ),
        (
            "delay",
            json!({"delay_type": "exponential", "base_delay_ms": 100, "multiplier": 1.5,
                   "max_delay_cap_ms": 5000}),
        ),
        (
            "approval",
            json!({"question": "Refund {{ variables.amount }}?",
                   "allowed_decisions": ["approve", "reject", "escalate"],
                   "timeout_ms": 86_400_000, "timeout_decision": "reject",
                   "input_schema": {"type": "object"}}),
        ),
        (
            "map",
            json!({"items": "variables.urls", "item_variable": "url", "max_concurrency": 8,
                   "body": {"nodes": [{"id": "fetch", "type": "http"}], "edges": []}}),
        ),
        (
            "subworkflow",
            json!({"workflow_id": "01J0000000000000000000000", "input": {"message": "hi"},
                   "output_variable": "sub"}),
        ),
        (
            "http",
            json!({"method": "POST", "url": "https://api.example.com/v1/{{ variables.id }}",
                   "headers": {"Authorization": "Bearer x", "X-Trace": "1"},
                   "body": {"q": 1}, "allowed_hosts": ["api.example.com"],
                   "timeout_ms": 10000, "max_response_bytes": 65536, "output_variable": "resp"}),
        ),
    ];
    let registry = NodeRegistry::builtin();
    assert_eq!(configs.len(), registry.len());
    for (kind, config) in configs {
        assert_eq!(check(kind, config), [], "{kind}");
    }
}

#[test]
fn every_kind_has_examples_that_pass_its_checker() {
    for info in NodeRegistry::builtin().kinds() {
        assert!(!info.examples.is_empty(), "{}", info.kind);
        for example in &info.examples {
            let config = example.as_object().unwrap();
            assert_eq!(info.check_config(config), [], "{}: {example}", info.kind);
        }
    }
}

#[test]
fn modern_node_types_follow_the_old_shape() {
    let registry = NodeRegistry::builtin();
    let modern = registry.modern_node_types();
    assert_eq!(modern["supported_types"].as_array().unwrap().len(), 15);
    assert_eq!(modern["supported_types"][2], "llm");
    assert_eq!(
        modern["type_details"]["variable"],
        json!({
            "description": "Sets, reads, appends to, increments, decrements or deletes a \
                            workflow variable.",
            "required_config": ["operation", "variable_name"],
            "optional_config": ["value", "value_template", "amount", "output_variable"],
            "examples": ["operation: \"increment\", variable_name: \"count\", amount: 1"],
        })
    );
    assert_eq!(modern["capabilities"]["loop_iteration"], true);
    assert_eq!(
        NodeRegistry::default().modern_node_types()["capabilities"]["loop_iteration"],
        false
    );
}

#[test]
fn wrong_types_are_named_precisely() {
    assert_eq!(
        check(
            "llm",
            json!({"max_tokens": "many", "temperature": true, "stop": "END", "stream": null,
                   "model": 4, "tools": {"a": 1}})
        ),
        [
            issue(
                "max_tokens",
                WrongType,
                "expected an integer, found a string"
            ),
            issue(
                "temperature",
                WrongType,
                "expected a number, found a boolean"
            ),
            issue("stop", WrongType, "expected an array, found a string"),
            issue("stream", WrongType, "expected a boolean, found null"),
            issue("model", WrongType, "expected a string, found an integer"),
            issue("tools", WrongType, "expected an array, found an object"),
        ]
    );
}

#[test]
fn integers_have_no_fraction() {
    assert_eq!(
        check("loop", json!({"max_iterations": 5.0})),
        [issue(
            "max_iterations",
            WrongType,
            "expected an integer, found a number"
        )]
    );
    assert_eq!(
        check("loop", json!({"max_iterations": 2.5})),
        [issue(
            "max_iterations",
            WrongType,
            "expected an integer, found a number"
        )]
    );
    // A number key takes integers.
    assert_eq!(check("llm", json!({"temperature": 1})), []);
}

#[test]
fn ranges_are_reported_with_bounds_and_value() {
    assert_eq!(
        check(
            "llm",
            json!({"temperature": 2.5, "max_tokens": 0, "top_p": -0.1, "timeout_ms": 3_600_001})
        ),
        [
            issue(
                "temperature",
                OutOfRange,
                "must be between 0 and 2, found 2.5"
            ),
            issue(
                "max_tokens",
                OutOfRange,
                "must be between 1 and 1000000, found 0"
            ),
            issue("top_p", OutOfRange, "must be between 0 and 1, found -0.1"),
            issue(
                "timeout_ms",
                OutOfRange,
                "must be between 1 and 3600000, found 3600001"
            ),
        ]
    );
    assert_eq!(
        check("tool", json!({"max_total_calls": 0})),
        [issue(
            "max_total_calls",
            OutOfRange,
            "must be at least 1, found 0"
        )]
    );
    assert_eq!(
        check(
            "approval",
            json!({"question": "ok?", "timeout_ms": -1, "allowed_decisions": []})
        ),
        [
            issue("timeout_ms", OutOfRange, "must be at least 0, found -1"),
            issue(
                "allowed_decisions",
                OutOfRange,
                "must have at least 1 item, found 0"
            ),
        ]
    );
}

#[test]
fn enums_and_patterns_list_what_is_allowed() {
    assert_eq!(
        check("delay", json!({"delay_type": "linear"})),
        [issue(
            "delay_type",
            NotAllowed,
            "must be one of fixed, random, exponential, found \"linear\""
        )]
    );
    assert_eq!(
        check(
            "variable",
            json!({"operation": "multiply", "variable_name": "2fast"})
        ),
        [
            issue(
                "operation",
                NotAllowed,
                "must be one of set, get, append, increment, decrement, delete, found \"multiply\""
            ),
            issue(
                "variable_name",
                NotAllowed,
                "must match the pattern `^[A-Za-z_][A-Za-z0-9_]*$`, found \"2fast\""
            ),
        ]
    );
    assert_eq!(
        check(
            "http",
            json!({"method": "get", "url": "u", "allowed_hosts": ["h"]})
        ),
        [issue(
            "method",
            NotAllowed,
            "must be one of GET, POST, PUT, PATCH, DELETE, HEAD, found \"get\""
        )]
    );
}

#[test]
fn keys_are_checked_against_their_siblings() {
    assert_eq!(
        check(
            "approval",
            json!({"question": "ok?", "timeout_decision": "maybe"})
        ),
        [issue(
            "timeout_decision",
            NotAllowed,
            "must be one of the `allowed_decisions` (approve, reject), found \"maybe\""
        )]
    );
    assert_eq!(
        check(
            "approval",
            json!({"question": "ok?", "allowed_decisions": ["yes", "no"],
                   "timeout_decision": "reject"})
        ),
        [issue(
            "timeout_decision",
            NotAllowed,
            "must be one of the `allowed_decisions` (yes, no), found \"reject\""
        )]
    );
    assert_eq!(
        check(
            "approval",
            json!({"question": "ok?", "allowed_decisions": ["yes", "no"],
                   "timeout_decision": "no"})
        ),
        []
    );
    assert_eq!(
        check(
            "delay",
            json!({"delay_type": "random", "min_delay_ms": 200, "max_delay_ms": 100})
        ),
        [issue(
            "min_delay_ms",
            OutOfRange,
            "must be at most `max_delay_ms` (100), found 200"
        )]
    );
    assert_eq!(
        check(
            "delay",
            json!({"delay_type": "random", "min_delay_ms": 100, "max_delay_ms": 100})
        ),
        []
    );
}

#[test]
fn missing_keys_are_reported_each() {
    assert_eq!(
        check("variable", json!({})),
        [
            issue("operation", Missing, "`operation` is required"),
            issue("variable_name", Missing, "`variable_name` is required"),
        ]
    );
    assert_eq!(
        check("conditional", json!({})),
        [issue("condition", Missing, "`condition` is required")]
    );
    assert_eq!(
        check("subworkflow", json!({"input": {}})),
        [issue(
            "workflow_id",
            Missing,
            "one of `workflow_id`, `template_id` is required"
        )]
    );
    assert_eq!(
        check("map", json!({})),
        [
            issue("items", Missing, "`items` is required"),
            issue("body", Missing, "one of `body`, `workflow_id` is required"),
        ]
    );
    assert_eq!(
        check("http", json!({"url": "https://x"})),
        [issue(
            "allowed_hosts",
            Missing,
            "`allowed_hosts` is required"
        )]
    );
}

#[test]
fn unknown_keys_get_a_suggestion_when_close() {
    assert_eq!(
        check(
            "llm",
            json!({"maxTokns": 5, "temprature": 1, "keepSystem": true, "branches": {}})
        ),
        [
            issue(
                "maxTokns",
                Unknown,
                "unknown key `maxTokns` (did you mean `max_tokens`?)"
            ),
            issue(
                "temprature",
                Unknown,
                "unknown key `temprature` (did you mean `temperature`?)"
            ),
            issue("keepSystem", Unknown, "unknown key `keepSystem`"),
            issue("branches", Unknown, "unknown key `branches`"),
        ]
    );
    assert_eq!(
        check("memory", json!({"keepSystem": true})),
        [issue(
            "keepSystem",
            Unknown,
            "unknown key `keepSystem` (did you mean `keep_system`?)"
        )]
    );
}

#[test]
fn nested_retry_is_checked_member_by_member() {
    assert_eq!(
        check(
            "tool",
            json!({"retry": {"max_attempts": 50, "backof_ms": 10, "multiplier": 0.5,
                             "jitter": "yes", "retry_on": ["timeout", "sometimes", 3]}})
        ),
        [
            issue(
                "retry.max_attempts",
                OutOfRange,
                "must be between 1 and 20, found 50"
            ),
            issue(
                "retry.backof_ms",
                Unknown,
                "unknown key `backof_ms` (did you mean `backoff_ms`?)"
            ),
            issue(
                "retry.multiplier",
                OutOfRange,
                "must be between 1 and 10, found 0.5"
            ),
            issue(
                "retry.jitter",
                WrongType,
                "expected a boolean, found a string"
            ),
            issue(
                "retry.retry_on[1]",
                NotAllowed,
                "must be one of timeout, rate_limit, server, connection, tool, model, any, \
                 found \"sometimes\""
            ),
            issue(
                "retry.retry_on[2]",
                WrongType,
                "expected a string, found an integer"
            ),
        ]
    );
    assert_eq!(
        check("llm", json!({"retry": 3})),
        [issue(
            "retry",
            WrongType,
            "expected an object, found an integer"
        )]
    );
}

#[test]
fn arrays_and_objects_are_checked_inside() {
    assert_eq!(
        check(
            "http",
            json!({"url": "u", "allowed_hosts": ["a", 2], "headers": {"X.Trace": 1, "Ok": "y"}})
        ),
        [
            issue(
                "allowed_hosts[1]",
                WrongType,
                "expected a string, found an integer"
            ),
            issue(
                "headers[\"X.Trace\"]",
                WrongType,
                "expected a string, found an integer"
            ),
        ]
    );
    assert_eq!(
        check(
            "map",
            json!({"items": "variables.xs", "body": {"nodes": [], "edges": [1]}})
        ),
        [
            issue(
                "body.nodes",
                OutOfRange,
                "must have at least 1 item, found 0"
            ),
            issue(
                "body.edges[0]",
                WrongType,
                "expected an object, found an integer"
            ),
        ]
    );
}

#[test]
fn schema_subset_keywords_beyond_the_builtins() {
    let info = NodeKindInfo::new("custom", "Custom", "test", "Exercises the checker.")
        .with_property(
            "label",
            P::types(&["string", "null"]).min_length(2).max_length(4),
        )
        .with_property("ratio", P::number().exclusive_min(0).max(1))
        .with_property("tags", P::array(P::string()).min_items(1).max_items(2))
        .with_property("code", P::string().pattern("^[A-Z]{3}$"))
        .with_property(
            "either",
            P::any().set(
                "anyOf",
                json!([{"type": "integer", "minimum": 10}, {"type": "string"}]),
            ),
        );
    let run = |config: Value| -> Vec<(String, ConfigIssueKind, String)> {
        info.check_config(&obj(config))
            .into_iter()
            .map(|i| (i.path, i.kind, i.message))
            .collect()
    };
    assert_eq!(
        run(json!({"label": null, "ratio": 1, "tags": ["a"], "code": "ABC", "either": "x"})),
        []
    );
    assert_eq!(
        run(
            json!({"label": 5, "ratio": 0, "tags": ["a", "b", "c"], "code": "abcd",
                   "either": 3})
        ),
        [
            issue(
                "label",
                WrongType,
                "expected a string or null, found an integer"
            ),
            issue(
                "ratio",
                OutOfRange,
                "must be greater than 0 and at most 1, found 0"
            ),
            issue(
                "tags",
                OutOfRange,
                "must have between 1 and 2 items, found 3"
            ),
            issue(
                "code",
                NotAllowed,
                "must match the pattern `^[A-Z]{3}$`, found \"abcd\""
            ),
            issue("either", OutOfRange, "must be at least 10, found 3"),
        ]
    );
    assert_eq!(
        run(json!({"label": "abcdef"})),
        [issue(
            "label",
            OutOfRange,
            "must be between 2 and 4 characters long, found 6"
        )]
    );
    assert_eq!(
        run(json!({"label": "a"})),
        [issue(
            "label",
            OutOfRange,
            "must be between 2 and 4 characters long, found 1"
        )]
    );
}

#[test]
fn nesting_is_checked_to_a_bounded_depth() {
    // A schema and a value nested far deeper than the bound: the checker stops descending
    // instead of recursing without limit, and still reports the shallow issue.
    let mut schema = P::integer();
    let mut value = json!("deep");
    for _ in 0..(MAX_CHECK_DEPTH * 3) {
        schema = P::object().property("x", schema);
        value = json!({ "x": value });
    }
    let info = NodeKindInfo::new("deep", "Deep", "test", "Deep nesting.")
        .with_property("tree", schema)
        .with_property("n", P::integer());
    let issues = info.check_config(&obj(json!({"tree": value, "n": "1"})));
    assert_eq!(
        issues,
        [ConfigIssue {
            path: "n".into(),
            kind: WrongType,
            message: "expected an integer, found a string".into(),
        }]
    );
    assert!(info.schema_problems()[0].ends_with("nests deeper than 32 levels"));
}

#[test]
fn unknown_kinds_get_a_suggestion_and_issues_display_with_their_path() {
    let registry = NodeRegistry::builtin();
    assert_eq!(registry.suggest_kind("condtional"), Some("conditional"));
    assert_eq!(registry.suggest_kind("callModle"), Some("llm"));
    assert_eq!(registry.suggest_kind("Http"), Some("http"));
    assert_eq!(registry.suggest_kind("transform"), None);
    let issue = &registry
        .get("llm")
        .unwrap()
        .check_config(&obj(json!({"retry": {"max_attempts": 0}})))[0];
    assert_eq!(
        issue.to_string(),
        "retry.max_attempts: must be between 1 and 20, found 0"
    );
}

#[test]
fn registering_adds_replaces_and_resolves_names() {
    let mut registry = NodeRegistry::builtin();
    let translate = NodeKindInfo::new("translate", "Translate", "model", "Translates.")
        .with_alias("translator")
        .with_property("target_language", P::string().min_length(2))
        .with_property("prompt", P::template())
        .with_required(&["target_language"]);
    registry.register(translate);
    assert_eq!(registry.len(), 16);
    assert_eq!(registry.kinds().last().unwrap().kind, "translate");
    let info = registry.get("translator").unwrap();
    assert_eq!(info.template_keys, ["prompt"]);
    assert!(info.property_schema("retry").is_some());
    assert_eq!(
        info.check_config(&obj(
            json!({"target_language": "f", "retry": {"jitter": 1}})
        )),
        [
            ConfigIssue {
                path: "target_language".into(),
                kind: OutOfRange,
                message: "must be at least 2 characters long, found 1".into(),
            },
            ConfigIssue {
                path: "retry.jitter".into(),
                kind: WrongType,
                message: "expected a boolean, found an integer".into(),
            },
        ]
    );
    // The kind's own keys come before the common keys.
    let keys: Vec<&String> = info.schema_properties().map(|(k, _)| k).collect();
    assert_eq!(
        keys,
        [
            "target_language",
            "prompt",
            "join",
            "on_error",
            "timeout_ms",
            "retry",
            "description"
        ]
    );

    // Replacing keeps the place; a canonical name wins over an alias.
    registry.register(NodeKindInfo::new("delay", "Pause", "utility", "Replaced."));
    assert_eq!(registry.kinds().nth(10).unwrap().name, "Pause");
    assert_eq!(registry.len(), 16);
    registry.register(NodeKindInfo::new(
        "model",
        "Model",
        "model",
        "Shadows the alias.",
    ));
    assert_eq!(registry.get("model").unwrap().name, "Model");
    assert_eq!(registry.get("call_model").unwrap().kind, "llm");
}

#[test]
fn properties_view_of_retrieval_matches_the_contract_shape() {
    let registry = NodeRegistry::builtin();
    let props = serde_json::to_value(registry.get("retrieval").unwrap().properties()).unwrap();
    let retry_default = json!({
        "max_attempts": 1, "backoff_ms": 500, "max_backoff_ms": 30000, "multiplier": 2,
        "jitter": true, "retry_on": ["timeout", "rate_limit", "server", "connection"]
    });
    let prop = |name: &str, ty: &str, desc: &str, default: Value, min: Value, max: Value| {
        json!({"name": name, "type": ty, "required": false, "description": desc,
               "default_value": default, "options": null, "min_value": min, "max_value": max})
    };
    assert_eq!(
        props,
        json!([
            prop("retriever", "string", "Name of the retriever.", json!("documents"),
                 Value::Null, Value::Null),
            prop("query", "template", "The query; by default the last user message.",
                 Value::Null, Value::Null, Value::Null),
            prop("top_k", "integer", "Most chunks to keep.", json!(5), json!(1), json!(100)),
            prop("score_threshold", "number", "Lowest score a chunk may have.", json!(0),
                 json!(0), json!(1)),
            prop("output_variable", "string",
                 "Also store the chunks in `variables.<output_variable>`.",
                 Value::Null, Value::Null, Value::Null),
            {"name": "join", "type": "select", "required": false,
             "description": "With several in-edges: `all` waits for every in-edge that can still \
                             be taken, `any` runs at the first taken one.",
             "default_value": "all", "options": ["all", "any"], "min_value": null,
             "max_value": null},
            {"name": "on_error", "type": "select", "required": false,
             "description": "What a failure does when no `error` edge or `error_handler` \
                             catches it: `fail` the execution, or record it in `errors` and \
                             `continue`.",
             "default_value": "fail", "options": ["fail", "continue"], "min_value": null,
             "max_value": null},
            prop("timeout_ms", "integer",
                 "Longest time one attempt of the node may take, in milliseconds.",
                 json!(60000), json!(1), json!(3_600_000)),
            prop("retry", "object",
                 "Retry policy: attempts, exponential backoff with jitter, which errors are \
                  retried.", retry_default, Value::Null, Value::Null),
            prop("description", "string", "Free text for the author; ignored by the engine.",
                 Value::Null, Value::Null, Value::Null),
        ])
    );
}

#[test]
fn node_type_response_serialises_like_the_contract() {
    let registry = NodeRegistry::builtin();
    let conditional = serde_json::to_value(registry.get("condition").unwrap().node_type()).unwrap();
    assert_eq!(conditional["type"], "conditional");
    assert_eq!(conditional["name"], "Conditional");
    assert_eq!(conditional["category"], "control");
    assert_eq!(conditional["icon"], "CallSplit");
    assert_eq!(conditional["color"], "#9c27b0");
    assert_eq!(
        conditional["properties"][0],
        json!({"name": "condition", "type": "expression", "required": true,
               "description": "The expression that picks the `true` or `false` branch.",
               "default_value": null, "options": null, "min_value": null, "max_value": null})
    );
    // Multiselect for arrays of enums, and deprecated names left out.
    let llm = registry.get("llm").unwrap().properties();
    assert!(
        llm.iter()
            .all(|p| p.name != "system_message" && p.name != "enable_streaming")
    );
    let start: Vec<String> = registry
        .get("start")
        .unwrap()
        .properties()
        .into_iter()
        .map(|p| p.name)
        .collect();
    assert_eq!(start, COMMON_KEYS);
    let tool = registry.get("tool").unwrap().properties();
    assert!(tool.iter().all(|p| p.name != "max_tool_calls"));
    let round_trip: NodeTypeResponse = serde_json::from_value(conditional).unwrap();
    assert_eq!(round_trip, registry.get("conditional").unwrap().node_type());
    assert_eq!(registry.node_types().len(), 15);
}

#[test]
fn schema_json_holds_the_whole_catalogue() {
    let registry = NodeRegistry::builtin();
    let doc = registry.schema_json();
    assert_eq!(
        doc["$schema"],
        "https://json-schema.org/draft/2020-12/schema"
    );
    let kinds = doc["kinds"].as_object().unwrap();
    let names: Vec<&String> = kinds.keys().collect();
    let expected: Vec<String> = registry.kinds().map(|k| k.kind.clone()).collect();
    assert_eq!(names, expected.iter().collect::<Vec<_>>());
    assert_eq!(
        kinds["llm"]["aliases"],
        json!(["model", "call_model", "callModel"])
    );
    assert_eq!(
        kinds["variable"]["config_schema"]["required"],
        json!(["operation", "variable_name"])
    );
    assert_eq!(
        kinds["llm"]["config_schema"]["properties"]["max_tokens"],
        json!({"type": "integer", "minimum": 1, "maximum": 1_000_000,
               "description": "Most tokens the reply may have."})
    );
    assert_eq!(
        kinds["tool"]["config_schema"]["additionalProperties"],
        false
    );
}

#[test]
fn docs_are_current() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/node-kinds.md");
    let generated = NodeRegistry::builtin().markdown();
    if std::env::var_os("UPDATE_DOCS").is_some() {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, &generated).unwrap();
    }
    let on_disk = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        on_disk == generated,
        "docs/node-kinds.md is stale; run `UPDATE_DOCS=1 cargo test -p chatter-core docs_are_current`"
    );
    assert!(generated.contains("## `llm`: LLM"));
    assert!(
        generated.contains(
            "| `max_tokens` | integer |  | 1..=1000000 | Most tokens the reply may have. |"
        )
    );
}

mod properties {
    use proptest::prelude::*;
    use serde_json::{Map, Value};

    use super::super::NodeRegistry;

    /// Keys that config checks care about, plus noise, so that generated configs hit real
    /// schemas as well as unknown keys.
    const KEYS: &[&str] = &[
        "retry",
        "timeout_ms",
        "join",
        "max_tokens",
        "temperature",
        "allowed_tools",
        "body",
        "headers",
        "condition",
        "operation",
        "variable_name",
        "items",
        "question",
        "allowed_decisions",
        "timeout_decision",
        "min_delay_ms",
        "max_delay_ms",
        "x",
        "maxTokns",
    ];

    fn json_value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            (-1.0e6f64..1.0e6).prop_map(Value::from),
            "[a-z_]{0,6}".prop_map(Value::from),
        ];
        leaf.prop_recursive(4, 32, 4, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Value::from),
                prop::collection::vec((prop::sample::select(KEYS), inner), 0..4).prop_map(
                    |members| {
                        Value::Object(
                            members
                                .into_iter()
                                .map(|(k, v)| (k.to_owned(), v))
                                .collect(),
                        )
                    }
                ),
            ]
        })
    }

    proptest! {
        /// Any config gets a list of issues (no panic), and every issue points at a key the
        /// config has or a key the kind requires.
        #[test]
        fn any_config_is_checked_without_panicking(
            members in prop::collection::vec((prop::sample::select(KEYS), json_value()), 0..6)
        ) {
            let config: Map<String, Value> =
                members.into_iter().map(|(k, v)| (k.to_owned(), v)).collect();
            let registry = NodeRegistry::builtin();
            for info in registry.kinds() {
                for issue in info.check_config(&config) {
                    let head = issue.path.split(['.', '[']).next().unwrap_or_default();
                    let alternatives = info
                        .config_schema
                        .get("anyOf")
                        .map(Value::to_string)
                        .unwrap_or_default();
                    prop_assert!(
                        config.contains_key(head)
                            || info.is_required(head)
                            || alternatives.contains(&format!("\"{head}\"")),
                        "{}: {issue:?}", info.kind
                    );
                    prop_assert!(!issue.message.is_empty());
                }
            }
        }
    }
}
