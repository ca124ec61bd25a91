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

/// Every problem of `params` against `schema`, as messages naming the parameter.
pub(crate) fn check(schema: &Value, params: &Map<String, Value>) -> Vec<String> {
    crate::registry::check_schema(schema, &Value::Object(params.clone()))
        .into_iter()
        .map(|issue| {
            if issue.path.is_empty() {
                issue.message
            } else {
                format!("`{}`: {}", issue.path, issue.message)
            }
        })
        .collect()
}
