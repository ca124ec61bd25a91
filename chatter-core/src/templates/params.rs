//! Template parameters: the standard chat parameter schema and the check of given parameters.

use serde_json::{Map, Value, json};

/// The parameters every chat template understands (the old platform's `default_params` keys),
/// as a JSON Schema. Unknown parameters are refused, so a typo is an error, not a silent default.
pub fn standard_parameter_schema() -> Value {
    json!({
        "type": "object",
        "additionalProperties": false,
        "properties": {
            "provider": {"type": "string", "description": "Model provider of the llm nodes."},
            "model": {"type": "string", "description": "Model name at the provider."},
            "temperature": {"type": "number", "minimum": 0, "maximum": 2},
            "max_tokens": {"type": "integer", "minimum": 1, "maximum": 1_000_000},
            "system_message": {"type": "string", "description": "System prompt (a prompt template)."},
            "system_prompt": {"type": "string", "description": "Same as system_message."},
            "enable_memory": {"type": "boolean"},
            "enable_retrieval": {"type": "boolean"},
            "enable_tools": {"type": "boolean"},
            "enable_streaming": {"type": "boolean"},
            "enable_tracing": {"type": "boolean"},
            "memory_window": {"type": "integer", "minimum": 1, "maximum": 10_000},
            "max_documents": {"type": "integer", "minimum": 1, "maximum": 100},
            "max_tool_calls": {"type": "integer", "minimum": 0, "maximum": 1000},
            "tool_timeout_ms": {"type": "integer", "minimum": 1, "maximum": 3_600_000},
            "parallel_tool_calls": {"type": "boolean"},
            "score_threshold": {"type": "number", "minimum": 0, "maximum": 1},
            "similarity_threshold": {"type": "number", "minimum": 0, "maximum": 1},
            "retriever": {"type": "string"},
            "workflow_type": {"type": "string"}
        }
    })
}

fn type_matches(expected: &str, value: &Value) -> bool {
    match expected {
        "string" => value.is_string(),
        "boolean" => value.is_boolean(),
        "integer" => value.as_i64().is_some() || value.as_u64().is_some(),
        "number" => value.is_number(),
        "object" => value.is_object(),
        "array" => value.is_array(),
        "null" => value.is_null(),
        _ => true,
    }
}

/// Every problem of `params` against `schema` (an object schema with `properties`, `required`,
/// `additionalProperties`, and per property `type`, `enum`, `minimum`, `maximum`), as messages.
pub(crate) fn check(schema: &Value, params: &Map<String, Value>) -> Vec<String> {
    let mut problems = Vec::new();
    let empty = Map::new();
    let properties = schema
        .get("properties")
        .and_then(Value::as_object)
        .unwrap_or(&empty);
    if let Some(required) = schema.get("required").and_then(Value::as_array) {
        for key in required.iter().filter_map(Value::as_str) {
            if !params.contains_key(key) {
                problems.push(format!("`{key}` is required"));
            }
        }
    }
    let closed = schema.get("additionalProperties") == Some(&Value::Bool(false));
    for (key, value) in params {
        let Some(prop) = properties.get(key) else {
            if closed {
                let mut known: Vec<&str> = properties.keys().map(String::as_str).collect();
                known.sort_unstable();
                problems.push(format!(
                    "unknown parameter `{key}` (known: {})",
                    known.join(", ")
                ));
            }
            continue;
        };
        let types: Vec<&str> = match prop.get("type") {
            Some(Value::String(t)) => vec![t.as_str()],
            Some(Value::Array(ts)) => ts.iter().filter_map(Value::as_str).collect(),
            _ => Vec::new(),
        };
        if !types.is_empty() && !types.iter().any(|t| type_matches(t, value)) {
            problems.push(format!(
                "`{key}` must be {}, found {}",
                types.join(" or "),
                crate::definition::json_type_name(value)
            ));
            continue;
        }
        if let Some(allowed) = prop.get("enum").and_then(Value::as_array)
            && !allowed.contains(value)
        {
            {
                let names: Vec<String> = allowed.iter().map(Value::to_string).collect();
                problems.push(format!(
                    "`{key}` must be one of {}, found {value}",
                    names.join(", ")
                ));
            }
        }
        if let Some(n) = value.as_f64() {
            let min = prop.get("minimum").and_then(Value::as_f64);
            let max = prop.get("maximum").and_then(Value::as_f64);
            if min.is_some_and(|m| n < m) || max.is_some_and(|m| n > m) {
                problems.push(format!(
                    "`{key}` must be between {} and {}, found {value}",
                    min.map_or("-inf".into(), |m| m.to_string()),
                    max.map_or("inf".into(), |m| m.to_string()),
                ));
            }
        }
    }
    problems
}
