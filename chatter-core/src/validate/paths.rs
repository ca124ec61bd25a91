//! JSON paths into a definition document as it was written (or as it would be written, for
//! definitions built in code).

use crate::definition::{ConditionSite, Edge, NodeSpec, Shape};

/// Whether a key can follow a `.` in a JSON path unquoted.
fn is_plain_key(key: &str) -> bool {
    let mut chars = key.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Appends an object key to a path: `.key`, or `['odd key']` when it needs quoting.
pub(crate) fn push_key(path: &mut String, key: &str) {
    if is_plain_key(key) {
        path.push('.');
        path.push_str(key);
    } else {
        path.push_str("['");
        for c in key.chars() {
            if c == '\'' || c == '\\' {
                path.push('\\');
            }
            path.push(c);
        }
        path.push_str("']");
    }
}

/// `base` followed by `key`.
pub(crate) fn with_key(base: &str, key: &str) -> String {
    let mut path = base.to_owned();
    push_key(&mut path, key);
    path
}

/// `$.nodes[i]`.
pub(crate) fn node(index: usize) -> String {
    format!("$.nodes[{index}]")
}

/// `$.edges[i]`.
pub(crate) fn edge(index: usize) -> String {
    format!("$.edges[{index}]")
}

/// The path of a node's config object: `$.nodes[i].data.config` (editor) or `$.nodes[i].config`.
pub(crate) fn node_config(index: usize, node: &NodeSpec) -> String {
    match node.shape() {
        Shape::Flat => format!("$.nodes[{index}].config"),
        _ => format!("$.nodes[{index}].data.config"),
    }
}

/// The path of one config key of a node, in the spelling the document used.
pub(crate) fn config_key(index: usize, node: &NodeSpec, canonical: &str) -> String {
    with_key(
        &node_config(index, node),
        node.config_key_as_written(canonical),
    )
}

/// The path of a place inside a node's config, given the path the registry reports
/// (`retry.max_attempts`, `allowed_tools[2]`, `headers["x.y"]`, or empty for the whole config):
/// the first key takes the spelling the document used, the rest is kept (quoted where needed).
pub(crate) fn config_inner(index: usize, node: &NodeSpec, inner: &str) -> String {
    let mut path = node_config(index, node);
    for (i, step) in registry_steps(inner).into_iter().enumerate() {
        match step {
            Step::Key(key) if i == 0 => push_key(&mut path, node.config_key_as_written(&key)),
            Step::Key(key) => push_key(&mut path, &key),
            Step::Index(n) => path.push_str(&format!("[{n}]")),
        }
    }
    path
}

/// Splits a registry config path: keys separated by `.`, `[n]` indexes, `["key"]` quoted keys
/// (JSON string syntax).
fn registry_steps(inner: &str) -> Vec<Step> {
    let mut out = Vec::new();
    let mut rest = inner;
    while !rest.is_empty() {
        if let Some(after) = rest.strip_prefix('.') {
            rest = after;
        } else if let Some(after) = rest.strip_prefix("[\"") {
            // A JSON string: find its closing quote, skipping escapes.
            let mut end = None;
            let mut escaped = false;
            for (i, c) in after.char_indices() {
                match c {
                    _ if escaped => escaped = false,
                    '\\' => escaped = true,
                    '"' => {
                        end = Some(i);
                        break;
                    }
                    _ => {}
                }
            }
            let Some(end) = end else {
                out.push(Step::Key(rest.to_owned()));
                break;
            };
            let literal = &rest[1..end + 2];
            let key = serde_json::from_str::<String>(literal)
                .unwrap_or_else(|_| literal.trim_matches('"').to_owned());
            out.push(Step::Key(key));
            rest = after[end + 1..]
                .strip_prefix(']')
                .unwrap_or(&after[end + 1..]);
        } else if let Some(after) = rest.strip_prefix('[') {
            let close = after.find(']').unwrap_or(after.len());
            match after[..close].parse::<u64>() {
                Ok(n) => out.push(Step::Index(n)),
                Err(_) => out.push(Step::Key(after[..close].to_owned())),
            }
            rest = after.get(close + 1..).unwrap_or("");
        } else {
            let end = rest.find(['.', '[']).unwrap_or(rest.len());
            out.push(Step::Key(rest[..end].to_owned()));
            rest = &rest[end..];
        }
    }
    out
}

/// Where a node's kind is written: `data.nodeType` when the document has it, else `type`.
pub(crate) fn node_kind(index: usize, node: &NodeSpec) -> String {
    let has_node_type = match &node.source.raw {
        Some(raw) => raw
            .get("data")
            .and_then(|d| d.get("nodeType"))
            .is_some_and(|t| !t.is_null()),
        None => node.shape() == Shape::Editor,
    };
    if has_node_type {
        format!("$.nodes[{index}].data.nodeType")
    } else {
        format!("$.nodes[{index}].type")
    }
}

/// Where an edge's condition is written: `condition` or `data.condition`.
pub(crate) fn edge_condition(index: usize, edge: &Edge) -> String {
    let in_data = match &edge.source_info.raw {
        Some(_) => edge.source_info.condition_site == ConditionSite::Data,
        // Built in code: the editor shape writes conditions under `data`.
        None => edge.shape() == Shape::Editor,
    };
    if in_data {
        format!("$.edges[{index}].data.condition")
    } else {
        format!("$.edges[{index}].condition")
    }
}

/// Where an edge's source handle is written (`sourceHandle` or `source_handle`).
pub(crate) fn edge_source_handle(index: usize, edge: &Edge) -> String {
    let snake = edge
        .source_info
        .raw
        .as_ref()
        .is_some_and(|r| r.contains_key("source_handle") && !r.contains_key("sourceHandle"));
    if snake {
        format!("$.edges[{index}].source_handle")
    } else {
        format!("$.edges[{index}].sourceHandle")
    }
}

/// One step of a location in the old API's `loc` arrays.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Step {
    Key(String),
    Index(u64),
}

/// Splits a JSON path written by this module into its steps:
/// `$.nodes[3].data['a b']` → `nodes`, `3`, `data`, `a b`.
pub(crate) fn steps(path: &str) -> Vec<Step> {
    let mut out = Vec::new();
    let rest = path.strip_prefix('$').unwrap_or(path);
    let chars: Vec<char> = rest.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        match chars[i] {
            '.' => {
                i += 1;
                let start = i;
                while i < chars.len() && chars[i] != '.' && chars[i] != '[' {
                    i += 1;
                }
                out.push(Step::Key(chars[start..i].iter().collect()));
            }
            '[' if chars.get(i + 1) == Some(&'\'') => {
                i += 2;
                let mut key = String::new();
                while i < chars.len() {
                    match chars[i] {
                        '\\' if i + 1 < chars.len() => {
                            key.push(chars[i + 1]);
                            i += 2;
                        }
                        '\'' => {
                            i += 1;
                            break;
                        }
                        c => {
                            key.push(c);
                            i += 1;
                        }
                    }
                }
                // Skip the closing `]`.
                if chars.get(i) == Some(&']') {
                    i += 1;
                }
                out.push(Step::Key(key));
            }
            '[' => {
                i += 1;
                let start = i;
                while i < chars.len() && chars[i] != ']' {
                    i += 1;
                }
                let text: String = chars[start..i].iter().collect();
                i += 1;
                match text.parse::<u64>() {
                    Ok(n) => out.push(Step::Index(n)),
                    Err(_) => out.push(Step::Key(text)),
                }
            }
            _ => {
                // Not a path this module writes; keep the remainder as one key.
                out.push(Step::Key(chars[i..].iter().collect()));
                break;
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn keys_are_quoted_only_when_needed() {
        assert_eq!(with_key("$", "maxTokens"), "$.maxTokens");
        assert_eq!(with_key("$", "x-api-key"), "$['x-api-key']");
        assert_eq!(with_key("$", "it's"), "$['it\\'s']");
    }

    #[test]
    fn steps_invert_paths() {
        assert_eq!(
            steps("$.nodes[3].data.config['x-api-key'].list[12]"),
            vec![
                Step::Key("nodes".into()),
                Step::Index(3),
                Step::Key("data".into()),
                Step::Key("config".into()),
                Step::Key("x-api-key".into()),
                Step::Key("list".into()),
                Step::Index(12),
            ]
        );
        assert_eq!(steps("$"), vec![]);
        assert_eq!(steps("$['it\\'s']"), vec![Step::Key("it's".into())]);
    }

    #[test]
    fn config_paths_use_the_written_spelling_and_shape() {
        let editor = crate::WorkflowDefinition::from_value(&json!({
            "nodes": [{"id": "a", "type": "llm", "data": {"config": {"maxTokens": 5}}}]
        }))
        .unwrap();
        let n = &editor.nodes[0];
        assert_eq!(
            config_key(0, n, "max_tokens"),
            "$.nodes[0].data.config.maxTokens"
        );
        assert_eq!(
            config_inner(0, n, "max_tokens"),
            "$.nodes[0].data.config.maxTokens"
        );
        assert_eq!(
            config_inner(0, n, "retry.max_attempts"),
            "$.nodes[0].data.config.retry.max_attempts"
        );
        assert_eq!(
            config_inner(0, n, "allowed_tools[2]"),
            "$.nodes[0].data.config.allowed_tools[2]"
        );
        assert_eq!(
            config_inner(0, n, "headers[\"x.y\"].list[3]"),
            "$.nodes[0].data.config.headers['x.y'].list[3]"
        );
        assert_eq!(
            config_inner(0, n, "headers.x-api-key"),
            "$.nodes[0].data.config.headers['x-api-key']"
        );
        assert_eq!(config_inner(0, n, ""), "$.nodes[0].data.config");
        assert_eq!(node_kind(0, n), "$.nodes[0].type");
        let flat = crate::WorkflowDefinition::from_value(&json!({
            "nodes": [{"id": "a", "type": "llm", "config": {"max_tokens": 5}}],
            "edges": [{"source": "a", "target": "a", "condition": "true"},
                      {"id": "x", "source": "a", "target": "a", "data": {"condition": "true"}}]
        }))
        .unwrap();
        assert_eq!(
            config_key(0, &flat.nodes[0], "max_tokens"),
            "$.nodes[0].config.max_tokens"
        );
        assert_eq!(edge_condition(0, &flat.edges[0]), "$.edges[0].condition");
        assert_eq!(
            edge_condition(1, &flat.edges[1]),
            "$.edges[1].data.condition"
        );
    }
}
