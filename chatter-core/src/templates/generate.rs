//! The generators: universal chat, capability-based, and graph templates with placeholders.

use serde_json::{Map, Value, json};

use super::TemplateSpec;
use crate::error::{Error, Result};

fn param<'a>(params: &'a Map<String, Value>, key: &str) -> Option<&'a Value> {
    params.get(key).filter(|v| !v.is_null())
}

fn flag(params: &Map<String, Value>, key: &str, default: bool) -> bool {
    param(params, key)
        .and_then(Value::as_bool)
        .unwrap_or(default)
}

fn int(params: &Map<String, Value>, key: &str, default: i64) -> i64 {
    param(params, key)
        .and_then(Value::as_i64)
        .unwrap_or(default)
}

fn number(params: &Map<String, Value>, key: &str, default: f64) -> Value {
    param(params, key)
        .filter(|v| v.is_number())
        .cloned()
        .unwrap_or_else(|| json!(default))
}

fn system_message(params: &Map<String, Value>) -> String {
    param(params, "system_message")
        .or_else(|| param(params, "system_prompt"))
        .and_then(Value::as_str)
        .unwrap_or("You are a helpful assistant.")
        .to_owned()
}

/// The llm config shared by both chat generators: provider and model only when given (so the
/// engine's default provider answers otherwise), sampling and the system prompt.
fn llm_config(params: &Map<String, Value>, system: &str) -> Map<String, Value> {
    let mut config = Map::new();
    for key in ["provider", "model"] {
        if let Some(v) = param(params, key) {
            config.insert(key.into(), v.clone());
        }
    }
    config.insert("temperature".into(), number(params, "temperature", 0.7));
    config.insert("max_tokens".into(), json!(int(params, "max_tokens", 1000)));
    config.insert("system_message".into(), json!(system));
    config.insert(
        "stream".into(),
        json!(flag(params, "enable_streaming", true)),
    );
    config
}

fn node(id: &str, kind: &str, label: &str, x: i64, y: i64, config: Value) -> Value {
    json!({
        "id": id,
        "type": kind,
        "position": {"x": x, "y": y},
        "data": {"label": label, "nodeType": kind, "config": config}
    })
}

fn edge(source: &str, target: &str) -> Value {
    json!({"id": format!("{source}-{target}"), "source": source, "target": target, "type": "default"})
}

fn branch(source: &str, target: &str, handle: &str) -> Value {
    json!({
        "id": format!("{source}-{target}"),
        "source": source,
        "target": target,
        "sourceHandle": handle,
        "type": "conditional",
        "data": {"label": handle}
    })
}

fn conditional_edge(source: &str, target: &str, condition: &str) -> Value {
    json!({
        "id": format!("{source}-{target}"),
        "source": source,
        "target": target,
        "type": "conditional",
        "data": {"condition": condition}
    })
}

fn definition(
    spec: &TemplateSpec,
    nodes: Vec<Value>,
    edges: Vec<Value>,
    params: &Map<String, Value>,
) -> Value {
    json!({
        "name": spec.name,
        "description": spec.description,
        "nodes": nodes,
        "edges": edges,
        "metadata": {
            "generated_from_template": spec.name,
            "template_version": spec.version,
            "params": params,
        }
    })
}

/// The old platform's universal-chat graph, with its conditions fixed: they read the
/// `capabilities` variable the graph sets (the old ones read variables that were never set, so
/// every branch was silently dropped), conditional nodes route by `true`/`false` branches, and
/// the edges to the end point at the `end` node.
pub(crate) fn universal_chat(spec: &TemplateSpec, params: &Map<String, Value>) -> Value {
    let max_tool_calls = int(params, "max_tool_calls", 10);
    let capabilities = json!({
        "enable_memory": flag(params, "enable_memory", false),
        "enable_retrieval": flag(params, "enable_retrieval", false),
        "enable_tools": flag(params, "enable_tools", false),
        "memory_window": int(params, "memory_window", 10),
        "max_tool_calls": max_tool_calls,
        "max_documents": int(params, "max_documents", 5),
    });
    let mut call_model = llm_config(params, &system_message(params));
    call_model.insert(
        "enable_tools".into(),
        json!(flag(params, "enable_tools", false)),
    );
    if !spec.required_tools.is_empty() {
        call_model.insert("tools".into(), json!(spec.required_tools));
    }
    let mut finalize = llm_config(
        params,
        "Provide a final response based on the tool results.",
    );
    finalize.insert("tool_choice".into(), json!("none"));
    let mut retrieval = json!({
        "top_k": int(params, "max_documents", 5),
        "score_threshold": number(params, "score_threshold", 0.5),
    });
    if let Some(name) = param(params, "retriever") {
        retrieval["retriever"] = name.clone();
    } else if let Some(first) = spec.required_retrievers.first() {
        retrieval["retriever"] = json!(first);
    }
    let nodes = vec![
        node("start", "start", "Start", 100, 100, json!({})),
        node(
            "set_capabilities",
            "variable",
            "Set Capabilities",
            300,
            100,
            json!({"operation": "set", "variable_name": "capabilities", "value": capabilities}),
        ),
        node(
            "conditional_memory",
            "conditional",
            "Memory Check",
            500,
            100,
            json!({"condition": "variables.capabilities.enable_memory"}),
        ),
        node(
            "manage_memory",
            "memory",
            "Manage Memory",
            500,
            200,
            json!({"window_size": int(params, "memory_window", 10)}),
        ),
        node(
            "conditional_retrieval",
            "conditional",
            "Retrieval Check",
            700,
            100,
            json!({"condition": "variables.capabilities.enable_retrieval"}),
        ),
        node(
            "retrieve_context",
            "retrieval",
            "Retrieve Context",
            700,
            200,
            retrieval,
        ),
        node(
            "call_model",
            "llm",
            "LLM Response",
            900,
            100,
            Value::Object(call_model),
        ),
        node(
            "conditional_tools",
            "conditional",
            "Tools Check",
            1100,
            100,
            json!({"condition": "variables.capabilities.enable_tools and ((last_message.tool_calls or []) | length > 0)"}),
        ),
        node(
            "execute_tools",
            "tool",
            "Execute Tools",
            1100,
            200,
            json!({
                "max_total_calls": max_tool_calls.max(1),
                "tool_timeout_ms": int(params, "tool_timeout_ms", 30_000),
                "parallel_calls": flag(params, "parallel_tool_calls", true),
            }),
        ),
        node(
            "conditional_finalize",
            "conditional",
            "Finalize Check",
            1300,
            100,
            json!({"condition": "tool_calls < variables.capabilities.max_tool_calls"}),
        ),
        node(
            "finalize_response",
            "llm",
            "Finalize Response",
            1300,
            200,
            Value::Object(finalize),
        ),
        node("end", "end", "End", 1500, 100, json!({})),
    ];
    let edges = vec![
        edge("start", "set_capabilities"),
        edge("set_capabilities", "conditional_memory"),
        branch("conditional_memory", "manage_memory", "true"),
        branch("conditional_memory", "conditional_retrieval", "false"),
        edge("manage_memory", "conditional_retrieval"),
        branch("conditional_retrieval", "retrieve_context", "true"),
        branch("conditional_retrieval", "call_model", "false"),
        edge("retrieve_context", "call_model"),
        edge("call_model", "conditional_tools"),
        branch("conditional_tools", "execute_tools", "true"),
        branch("conditional_tools", "end", "false"),
        edge("execute_tools", "conditional_finalize"),
        branch("conditional_finalize", "call_model", "true"),
        branch("conditional_finalize", "finalize_response", "false"),
        edge("finalize_response", "end"),
    ];
    definition(spec, nodes, edges, params)
}

/// start → memory (when `enable_memory`) → retrieval (when the template requires retrievers or
/// `enable_retrieval`) → llm ⇄ tools (when it requires tools or `enable_tools`) → end.
pub(crate) fn capability_based(spec: &TemplateSpec, params: &Map<String, Value>) -> Value {
    let memory = flag(params, "enable_memory", false);
    let retrieval = !spec.required_retrievers.is_empty() || flag(params, "enable_retrieval", false);
    let tools = !spec.required_tools.is_empty() || flag(params, "enable_tools", false);
    let max_tool_calls = int(params, "max_tool_calls", 10).max(1);

    let mut nodes = vec![node("start", "start", "Start", 100, 100, json!({}))];
    let mut edges = Vec::new();
    let mut previous = "start";
    let mut x = 300;
    if memory {
        nodes.push(node(
            "memory",
            "memory",
            "Memory",
            x,
            100,
            json!({"window_size": int(params, "memory_window", 10)}),
        ));
        edges.push(edge(previous, "memory"));
        previous = "memory";
        x += 200;
    }
    let mut system = system_message(params);
    if retrieval {
        let retriever = param(params, "retriever")
            .and_then(Value::as_str)
            .map(str::to_owned)
            .or_else(|| spec.required_retrievers.first().cloned())
            .unwrap_or_else(|| "documents".to_owned());
        let threshold = param(params, "score_threshold")
            .or_else(|| param(params, "similarity_threshold"))
            .cloned()
            .unwrap_or_else(|| json!(0.0));
        nodes.push(node(
            "retrieval",
            "retrieval",
            "Document Retrieval",
            x,
            100,
            json!({
                "retriever": retriever,
                "top_k": int(params, "max_documents", 5),
                "score_threshold": threshold,
            }),
        ));
        edges.push(edge(previous, "retrieval"));
        previous = "retrieval";
        x += 200;
        system.push_str(
            "\n\n{% if context %}Context:\n{% for chunk in context %}[{{ loop.index }}] ({{ chunk.source }}) {{ chunk.content }}\n{% endfor %}{% endif %}",
        );
    }
    let label = match (tools, retrieval) {
        (true, true) => "LLM with Tools & Context",
        (true, false) => "LLM with Tools",
        (false, true) => "LLM with Context",
        (false, false) => "LLM Response",
    };
    let mut llm = llm_config(params, &system);
    if tools {
        llm.insert("tools".into(), json!(spec.required_tools));
        if spec.required_tools.is_empty() {
            llm.insert("enable_tools".into(), json!(true));
        }
    }
    nodes.push(node("llm", "llm", label, x, 100, Value::Object(llm)));
    edges.push(edge(previous, "llm"));
    if tools {
        nodes.push(node(
            "tools",
            "tool",
            "Tool Execution",
            x + 200,
            200,
            json!({
                "allowed_tools": spec.required_tools,
                "max_total_calls": max_tool_calls,
                "parallel_calls": flag(params, "parallel_tool_calls", true),
                "tool_timeout_ms": int(params, "tool_timeout_ms", 30_000),
            }),
        ));
        edges.push(conditional_edge(
            "llm",
            "tools",
            &format!("has_tool_calls AND tool_calls < {max_tool_calls}"),
        ));
        edges.push(conditional_edge(
            "llm",
            "end",
            &format!("no_tool_calls OR tool_calls >= {max_tool_calls}"),
        ));
        edges.push(edge("tools", "llm"));
    } else {
        edges.push(edge("llm", "end"));
    }
    nodes.push(node("end", "end", "End", x + 400, 100, json!({})));
    if spec.required_tools.is_empty() && tools {
        // `enable_tools` without a tool list binds every registered tool; the tool node then
        // allows them all.
        if let Some(tools_node) = nodes.iter_mut().find(|n| n["id"] == "tools")
            && let Some(config) = tools_node["data"]["config"].as_object_mut()
        {
            config.remove("allowed_tools");
        }
    }
    definition(spec, nodes, edges, params)
}

/// A graph template: every string of `graph` is scanned for `{{ ... }}` blocks; a block whose
/// expression reads only `params` is replaced by its value (the typed JSON value when the block
/// is the whole string, its text otherwise); other blocks are run-time templates and are kept.
pub(crate) fn graph(graph: &Value, params: &Map<String, Value>) -> Result<Value> {
    let env = minijinja::Environment::new();
    let context =
        minijinja::context! { params => minijinja::Value::from(minijinja::value::Serde(params)) };
    render_value(graph, &env, &context)
}

fn render_value(
    value: &Value,
    env: &minijinja::Environment<'_>,
    context: &minijinja::Value,
) -> Result<Value> {
    Ok(match value {
        Value::String(s) => render_string(s, env, context)?,
        Value::Array(items) => Value::Array(
            items
                .iter()
                .map(|v| render_value(v, env, context))
                .collect::<Result<_>>()?,
        ),
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(k, v)| Ok((k.clone(), render_value(v, env, context)?)))
                .collect::<Result<_>>()?,
        ),
        other => other.clone(),
    })
}

/// Evaluates one `{{ ... }}` block when it reads only `params`; `None` for a run-time block.
fn eval_placeholder(
    block: &str,
    env: &minijinja::Environment<'_>,
    context: &minijinja::Value,
) -> Result<Option<Value>> {
    let inner = block[2..block.len() - 2].trim().trim_matches('-').trim();
    // Not an expression on its own (part of a run-time template): kept as written.
    let Ok(expr) = env.compile_expression(inner) else {
        return Ok(None);
    };
    let names = expr.undeclared_variables(false);
    if !names.contains("params") {
        return Ok(None);
    }
    if names.len() > 1 {
        return Err(Error::Template {
            message: format!("placeholder `{block}` mixes `params` with run-time variables"),
        });
    }
    let value = expr.eval(context).map_err(|e| Error::Template {
        message: format!("placeholder `{block}` failed: {e}"),
    })?;
    if value.is_undefined() {
        return Err(Error::Template {
            message: format!("placeholder `{block}` names a parameter that is not set"),
        });
    }
    Ok(Some(serde_json::to_value(&value).unwrap_or(Value::Null)))
}

fn render_string(
    text: &str,
    env: &minijinja::Environment<'_>,
    context: &minijinja::Value,
) -> Result<Value> {
    let trimmed = text.trim();
    // A string that is one placeholder takes the parameter's JSON type (`"{{ params.n }}"` → 5).
    if trimmed.starts_with("{{")
        && trimmed.ends_with("}}")
        && trimmed.matches("{{").count() == 1
        && let Some(value) = eval_placeholder(trimmed, env, context)?
    {
        return Ok(value);
    }
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(open) = rest.find("{{") {
        let Some(close) = rest[open..].find("}}") else {
            break;
        };
        let block = &rest[open..open + close + 2];
        out.push_str(&rest[..open]);
        match eval_placeholder(block, env, context)? {
            Some(Value::String(s)) => out.push_str(&s),
            Some(other) => out.push_str(&other.to_string()),
            None => out.push_str(block),
        }
        rest = &rest[open + close + 2..];
    }
    out.push_str(rest);
    Ok(Value::String(out))
}
