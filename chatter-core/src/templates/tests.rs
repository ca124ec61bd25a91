use serde_json::{Value, json};

use super::*;

fn builtin(name: &str) -> TemplateSpec {
    builtin_templates()
        .into_iter()
        .find(|t| t.name == name)
        .unwrap_or_else(|| panic!("no built-in {name}"))
}

fn ids(def: &WorkflowDefinition) -> Vec<&str> {
    def.nodes.iter().map(|n| n.id.as_str()).collect()
}

#[test]
fn the_twelve_builtins_load_with_their_metadata() {
    let all = builtin_templates();
    let names: Vec<&str> = all.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "universal_chat",
            "general_chat",
            "document_qa",
            "code_assistant",
            "customer_support",
            "research_assistant",
            "data_analyst",
            "blog_writing_assistant",
            "meeting_summarizer",
            "learning_tutor",
            "document_reviewer",
            "workflow_validator"
        ]
    );
    assert!(
        all.iter()
            .all(|t| t.is_builtin && t.is_public && t.version == 1)
    );
    let support = builtin("customer_support");
    assert_eq!(support.category, TemplateCategory::CustomerSupport);
    assert_eq!(
        support.required_tools,
        ["search_kb", "create_ticket", "escalate"]
    );
    assert_eq!(support.required_retrievers, ["support_docs"]);
    assert_eq!(support.default_params["max_tool_calls"], 5);
    assert_eq!(
        builtin("universal_chat").generator(),
        Generator::UniversalChat
    );
    assert_eq!(
        builtin("document_qa").generator(),
        Generator::CapabilityBased
    );
}

#[test]
fn every_builtin_generates_a_readable_graph_with_its_defaults() {
    for template in builtin_templates() {
        let params = template
            .merge_params(&Value::Null)
            .expect("defaults are valid");
        let def = template.generate(&params).expect("generates");
        assert_eq!(def.nodes.first().map(|n| n.kind.as_str()), Some("start"));
        assert!(
            def.nodes.iter().any(|n| n.kind == "end"),
            "{}",
            template.name
        );
        assert!(
            def.nodes.iter().any(|n| n.kind == "llm"),
            "{}",
            template.name
        );
        for edge in &def.edges {
            assert!(
                def.node(edge.source.as_str()).is_some(),
                "{}: {edge:?}",
                template.name
            );
            assert!(
                def.node(edge.target.as_str()).is_some(),
                "{}: {edge:?}",
                template.name
            );
        }
        assert_eq!(def.metadata["generated_from_template"], template.name);
        // Every condition and prompt compiles.
        for edge in &def.edges {
            if let Some(c) = edge.condition() {
                crate::expr::Expression::compile(c)
                    .unwrap_or_else(|e| panic!("{}: edge {}: {e}", template.name, edge.id));
            }
        }
        for node in &def.nodes {
            if let Some(c) = node.config.get("condition").and_then(Value::as_str) {
                crate::expr::Expression::compile(c)
                    .unwrap_or_else(|e| panic!("{}: node {}: {e}", template.name, node.id));
            }
            if let Some(p) = node.config.get("system_message").and_then(Value::as_str) {
                crate::expr::PromptTemplate::compile(p)
                    .unwrap_or_else(|e| panic!("{}: node {}: {e}", template.name, node.id));
            }
        }
    }
}

#[test]
fn capability_graphs_follow_the_template_requirements() {
    let qa = builtin("document_qa");
    let def = qa
        .generate(&qa.merge_params(&Value::Null).unwrap())
        .unwrap();
    assert_eq!(ids(&def), ["start", "retrieval", "llm", "end"]);
    let retrieval = def.node("retrieval").unwrap();
    assert_eq!(retrieval.config["retriever"], "document_store");
    assert_eq!(retrieval.config["top_k"], 15);
    assert_eq!(retrieval.config["score_threshold"], 0.7);
    let system = def.node("llm").unwrap().config["system_message"]
        .as_str()
        .unwrap();
    assert!(system.starts_with("You are a document analysis assistant."));
    assert!(system.contains("{% for chunk in context %}"));

    let code = builtin("code_assistant");
    let def = code
        .generate(&code.merge_params(&Value::Null).unwrap())
        .unwrap();
    assert_eq!(ids(&def), ["start", "memory", "llm", "tools", "end"]);
    assert_eq!(def.node("memory").unwrap().config["window_size"], 100);
    assert_eq!(
        def.node("llm").unwrap().config["tools"],
        json!(["execute_code", "search_docs", "generate_tests"])
    );
    let conditions: Vec<(&str, &str, Option<&str>)> = def
        .edges
        .iter()
        .map(|e| (e.source.as_str(), e.target.as_str(), e.condition()))
        .collect();
    assert_eq!(
        conditions,
        [
            ("start", "memory", None),
            ("memory", "llm", None),
            ("llm", "tools", Some("has_tool_calls AND tool_calls < 10")),
            ("llm", "end", Some("no_tool_calls OR tool_calls >= 10")),
            ("tools", "llm", None),
        ]
    );

    let general = builtin("general_chat");
    let def = general
        .generate(
            &general
                .merge_params(&json!({"enable_memory": false}))
                .unwrap(),
        )
        .unwrap();
    assert_eq!(ids(&def), ["start", "llm", "end"]);
    // Provider and model are only set when given, so the engine's default provider answers.
    assert!(def.node("llm").unwrap().config.get("provider").is_none());
}

#[test]
fn universal_chat_conditions_read_the_capabilities_it_sets() {
    let t = builtin("universal_chat");
    let params = t
        .merge_params(&json!({"enable_tools": true, "max_tool_calls": 3}))
        .unwrap();
    let def = t.generate(&params).unwrap();
    assert_eq!(def.nodes.len(), 12);
    assert_eq!(def.edges.len(), 15);
    let caps = &def.node("set_capabilities").unwrap().config["value"];
    assert_eq!(caps["enable_tools"], true);
    assert_eq!(caps["max_tool_calls"], 3);
    assert_eq!(
        def.node("conditional_memory").unwrap().config["condition"],
        "variables.capabilities.enable_memory"
    );
    assert_eq!(
        def.node("conditional_finalize").unwrap().config["condition"],
        "tool_calls < variables.capabilities.max_tool_calls"
    );
    let branches: Vec<_> = def
        .out_edges("conditional_tools")
        .map(|e| (e.target.as_str(), e.source_handle.as_deref()))
        .collect();
    assert_eq!(
        branches,
        [("execute_tools", Some("true")), ("end", Some("false"))]
    );
    assert_eq!(
        def.node("execute_tools").unwrap().config["max_total_calls"],
        3
    );
    assert_eq!(def.node("call_model").unwrap().config["provider"], "openai");
}

#[test]
fn parameters_are_checked_with_every_problem_named() {
    let t = builtin("general_chat");
    let err = t
        .merge_params(
            &json!({"temperature": "hot", "max_tokens": 0, "memory_window": 5, "colour": "red"}),
        )
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("`temperature`: expected a number, found a string"),
        "{err}"
    );
    assert!(
        err.contains("`max_tokens`: must be between 1 and 1000000, found 0"),
        "{err}"
    );
    assert!(err.contains("`colour`: unknown key `colour`"), "{err}");
    assert!(!err.contains("`memory_window`:"), "{err}");
    let err = t.merge_params(&json!([1])).unwrap_err().to_string();
    assert!(
        err.contains("parameters must be an object, found an array"),
        "{err}"
    );
    let merged = t.merge_params(&json!({"memory_window": 5})).unwrap();
    assert_eq!(merged["memory_window"], 5);
    assert_eq!(merged["enable_memory"], true);
}

fn graph_template(graph: Value) -> TemplateSpec {
    TemplateSpec::from_value(&json!({
        "name": "greeter",
        "description": "greets",
        "category": "custom",
        "default_params": {"greeting": "Hello", "tokens": 64, "tools": ["a", "b"]},
        "parameter_schema": {
            "type": "object",
            "required": ["greeting"],
            "properties": {
                "greeting": {"type": "string"},
                "tokens": {"type": "integer", "minimum": 1, "maximum": 4096},
                "tools": {"type": "array"}
            }
        },
        "generator": {"kind": "graph", "graph": graph}
    }))
    .unwrap()
}

#[test]
fn graph_templates_render_only_their_params() {
    let t = graph_template(json!({
        "nodes": [
            {"id": "start", "type": "start"},
            {"id": "say", "type": "llm", "config": {
                "max_tokens": "{{ params.tokens }}",
                "tools": "{{ params.tools }}",
                "system_prompt": "{{ params.greeting }}, {{ variables.name | default('friend') }}! Count: {{ params.tokens * 2 }}"
            }},
            {"id": "end", "type": "end"}
        ],
        "edges": [{"source": "start", "target": "say"}, {"source": "say", "target": "end"}]
    }));
    let params = t.merge_params(&json!({"tokens": 100})).unwrap();
    let def = t.generate(&params).unwrap();
    let say = def.node("say").unwrap();
    assert_eq!(say.config["max_tokens"], 100);
    assert_eq!(say.config["tools"], json!(["a", "b"]));
    assert_eq!(
        say.config["system_prompt"],
        "Hello, {{ variables.name | default('friend') }}! Count: 200"
    );
    let err = t
        .merge_params(&json!({"tokens": 5000}))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("`tokens`: must be between 1 and 4096"),
        "{err}"
    );

    let mixed = graph_template(json!({"nodes": [{"id": "x", "type": "llm",
        "config": {"prompt": "{{ params.greeting ~ variables.name }}"}}], "edges": []}));
    let err = mixed
        .generate(&mixed.merge_params(&Value::Null).unwrap())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("mixes `params` with run-time variables"),
        "{err}"
    );

    let missing = graph_template(json!({"nodes": [{"id": "x", "type": "llm",
        "config": {"prompt": "{{ params.nope }}"}}], "edges": []}));
    let err = missing
        .generate(&missing.merge_params(&Value::Null).unwrap())
        .unwrap_err()
        .to_string();
    assert!(err.contains("names a parameter that is not set"), "{err}");
}

#[test]
fn bad_templates_are_refused_with_reasons() {
    let err = TemplateSpec::from_value(&json!({"name": " "}))
        .unwrap_err()
        .to_string();
    assert!(err.contains("non-empty `name`"), "{err}");
    let err = TemplateSpec::from_value(&json!({"name": "x", "category": "cooking"}))
        .unwrap_err()
        .to_string();
    assert!(err.contains("unknown variant `cooking`"), "{err}");
    let err =
        TemplateSpec::from_value(&json!({"name": "x", "generator": {"kind": "graph", "graph": 3}}))
            .unwrap_err()
            .to_string();
    assert!(err.contains("must be an object"), "{err}");
    assert!(TemplateCategory::parse("cooking").is_err());
    assert_eq!(
        TemplateCategory::parse("data_analysis").unwrap(),
        TemplateCategory::DataAnalysis
    );
}

#[test]
fn config_hash_is_canonical_and_tracks_the_configuration() {
    let a = builtin("code_assistant");
    let mut b = a.clone();
    b.description = "another text".into();
    b.version = 7;
    assert_eq!(a.config_hash(), b.config_hash());
    assert_eq!(a.config_hash().len(), 64);
    b.default_params.insert("max_tool_calls".into(), json!(11));
    assert_ne!(a.config_hash(), b.config_hash());
    assert_eq!(
        canonical_json(&json!({"b": 1, "a": {"d": [2, {"z": 1, "y": 2}], "c": null}})),
        r#"{"a":{"c":null,"d":[2,{"y":2,"z":1}]},"b":1}"#
    );
}

#[test]
fn generated_graphs_pass_the_validator_with_no_errors() {
    let validator = crate::WorkflowValidator::default();
    for template in builtin_templates() {
        for extra in [
            json!({}),
            json!({"enable_memory": true, "enable_retrieval": true, "enable_tools": true}),
        ] {
            let params = template.merge_params(&extra).unwrap();
            let def = template.generate(&params).unwrap();
            let report = validator.validate(&def);
            let errors: Vec<_> = report.errors().collect();
            assert!(errors.is_empty(), "{} {extra}: {errors:#?}", template.name);
        }
    }
}

#[test]
fn validate_template_returns_issues_instead_of_failing() {
    let ok = validate_template(&serde_json::to_value(builtin("code_assistant")).unwrap());
    assert!(ok.is_valid, "{ok:?}");
    assert!(ok.errors.is_empty());
    let info = ok.template_info.unwrap();
    assert_eq!(info["node_count"], 5);
    assert_eq!(
        info["config_hash"],
        json!(builtin("code_assistant").config_hash())
    );

    let bad = validate_template(&json!({"name": "x", "category": "nonsense"}));
    assert!(!bad.is_valid);
    assert!(
        bad.errors[0].starts_with("not a template: unknown variant `nonsense`"),
        "{bad:?}"
    );
    assert!(bad.template_info.is_none());

    let bad = validate_template(&json!({"name": "x", "parameter_schema": 3}));
    assert_eq!(
        bad.errors,
        ["`parameter_schema` must be a JSON Schema object"]
    );
}
