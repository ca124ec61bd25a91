//! Markdown reference of the registered kinds (`docs/node-kinds.md`).

use std::fmt::Write as _;

use serde_json::Value;

use super::schema::common_properties;
use super::{NodeKindInfo, NodeRegistry};

fn cell(text: &str) -> String {
    text.replace('|', "\\|").replace('\n', " ")
}

fn code_list(items: &[String]) -> String {
    if items.is_empty() {
        "nothing".to_owned()
    } else {
        items
            .iter()
            .map(|i| format!("`{i}`"))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

fn type_text(schema: &Value) -> String {
    let base = match schema.get("type") {
        Some(Value::String(t)) => t.clone(),
        Some(Value::Array(ts)) => ts
            .iter()
            .filter_map(Value::as_str)
            .collect::<Vec<_>>()
            .join(" or "),
        _ => "any".to_owned(),
    };
    match (base.as_str(), schema.get("format").and_then(Value::as_str)) {
        ("string", Some(f @ ("template" | "expression"))) => f.to_owned(),
        ("array", _) => match schema.get("items") {
            Some(items) => format!("array of {}", type_text(items)),
            None => base,
        },
        ("object", _) if schema.get("properties").is_some() => "object (below)".to_owned(),
        _ => base,
    }
}

fn range_text(schema: &Value) -> String {
    let get = |k: &str| schema.get(k).map(Value::to_string);
    let mut parts = Vec::new();
    match (get("minimum"), get("maximum")) {
        (Some(lo), Some(hi)) => parts.push(format!("{lo}..={hi}")),
        (Some(lo), None) => parts.push(format!(">= {lo}")),
        (None, Some(hi)) => parts.push(format!("<= {hi}")),
        (None, None) => {}
    }
    if let Some(x) = get("exclusiveMinimum") {
        parts.push(format!("> {x}"));
    }
    if let Some(x) = get("exclusiveMaximum") {
        parts.push(format!("< {x}"));
    }
    match (get("minLength"), get("maxLength")) {
        (Some(lo), Some(hi)) => parts.push(format!("{lo}..={hi} characters")),
        (Some(lo), None) => parts.push(format!(">= {lo} characters")),
        (None, Some(hi)) => parts.push(format!("<= {hi} characters")),
        (None, None) => {}
    }
    match (get("minItems"), get("maxItems")) {
        (Some(lo), Some(hi)) => parts.push(format!("{lo}..={hi} items")),
        (Some(lo), None) => parts.push(format!(">= {lo} items")),
        (None, Some(hi)) => parts.push(format!("<= {hi} items")),
        (None, None) => {}
    }
    let options = schema
        .get("enum")
        .or_else(|| schema.get("items").and_then(|i| i.get("enum")));
    if let Some(Value::Array(options)) = options {
        let listed: Vec<String> = options
            .iter()
            .map(|o| match o {
                Value::String(s) => format!("`{s}`"),
                other => format!("`{other}`"),
            })
            .collect();
        parts.push(format!("one of {}", listed.join(", ")));
    }
    if let Some(Value::String(p)) = schema.get("pattern") {
        parts.push(format!("matches `{p}`"));
    }
    if let Some(Value::String(k)) = schema.get("x-member-of") {
        parts.push(format!("one of `{k}`"));
    }
    if let Some(Value::String(k)) = schema.get("x-at-most") {
        parts.push(format!("<= `{k}`"));
    }
    parts.join("; ")
}

fn default_text(schema: &Value, required: bool) -> String {
    match (schema.get("default"), required) {
        (_, true) => "**required**".to_owned(),
        (Some(d), false) => format!("`{d}`"),
        (None, false) => String::new(),
    }
}

fn meaning_text(schema: &Value) -> String {
    let mut text = schema
        .get("description")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    if let Some(Value::String(new)) = schema.get("x-replaced-by") {
        if !text.is_empty() {
            text.push(' ');
        }
        let _ = write!(text, "Accepted; prefer `{new}`.");
    }
    text
}

fn table(out: &mut String, rows: &[(String, &Value, bool)]) {
    out.push_str("| key | type | default | range | meaning |\n|---|---|---|---|---|\n");
    for (key, schema, required) in rows {
        let _ = writeln!(
            out,
            "| `{}` | {} | {} | {} | {} |",
            key,
            cell(&type_text(schema)),
            cell(&default_text(schema, *required)),
            cell(&range_text(schema)),
            cell(&meaning_text(schema)),
        );
    }
}

/// Nested object members (`retry.max_attempts`, `body.nodes`) as extra rows.
fn nested_rows<'a>(prefix: &str, schema: &'a Value, rows: &mut Vec<(String, &'a Value, bool)>) {
    let Some(props) = schema.get("properties").and_then(Value::as_object) else {
        return;
    };
    let required = |k: &str| {
        schema
            .get("required")
            .and_then(Value::as_array)
            .is_some_and(|r| r.iter().any(|x| x == k))
    };
    for (k, s) in props {
        rows.push((format!("{prefix}.{k}"), s, required(k)));
    }
}

fn kind_section(out: &mut String, info: &NodeKindInfo, common: &[(&str, Value)]) {
    let _ = writeln!(out, "## `{}`: {}\n", info.kind, info.name);
    let _ = writeln!(out, "{}\n", info.description);
    let aliases = if info.aliases.is_empty() {
        "none".to_owned()
    } else {
        code_list(&info.aliases)
    };
    let _ = writeln!(out, "- Category: {}", info.category);
    let _ = writeln!(out, "- Aliases: {aliases}");
    let _ = writeln!(out, "- Reads: {}", code_list(&info.reads));
    let _ = writeln!(out, "- Writes: {}", code_list(&info.writes));
    if !info.branches.is_empty() {
        let _ = writeln!(out, "- Branches: {}", code_list(&info.branches));
    }
    if info.can_exit_cycle {
        let _ = writeln!(out, "- Can leave a cycle: yes");
    }
    if !info.template_keys.is_empty() {
        let _ = writeln!(out, "- Templates: {}", code_list(&info.template_keys));
    }
    if !info.expression_keys.is_empty() {
        let _ = writeln!(out, "- Expressions: {}", code_list(&info.expression_keys));
    }
    if let Some(Value::Array(sets)) = info.config_schema.get("anyOf") {
        let keys: Vec<String> = sets
            .iter()
            .filter_map(|s| s.get("required")?.as_array()?.first()?.as_str())
            .map(|k| format!("`{k}`"))
            .collect();
        let _ = writeln!(out, "- Requires one of: {}", keys.join(", "));
    }
    out.push('\n');
    let mut rows = Vec::new();
    for (key, schema) in info.schema_properties() {
        let is_common = common.iter().any(|(k, s)| k == key && s == schema);
        if is_common {
            continue;
        }
        rows.push((key.clone(), schema, info.is_required(key)));
        nested_rows(key, schema, &mut rows);
    }
    if rows.is_empty() {
        out.push_str("Config: only the common keys.\n\n");
    } else {
        out.push_str("Config (besides the common keys):\n\n");
        table(out, &rows);
        out.push('\n');
    }
    for example in &info.examples {
        let text = serde_json::to_string_pretty(example).unwrap_or_default();
        let _ = writeln!(out, "Example:\n\n```json\n{text}\n```\n");
    }
}

/// The Markdown reference of every kind of `registry`.
pub(super) fn markdown(registry: &NodeRegistry) -> String {
    let common: Vec<(&str, Value)> = common_properties()
        .into_iter()
        .map(|(k, s)| (k, s.into_value()))
        .collect();
    let mut out = String::new();
    out.push_str(
        "# Node kinds\n\n\
         <!-- Generated from `chatter_core::registry::NodeRegistry::builtin()` by the test \
         `registry::tests::docs_are_current`; run it with `UPDATE_DOCS=1` to regenerate. -->\n\n\
         Every node has a kind and a config. Config keys are snake_case (the editor's camelCase \
         spellings are accepted); keys a kind does not know are reported as warnings. Integers \
         are JSON numbers without a fraction. \"Templates\" are prompt templates and \
         \"expressions\" are conditions (see the expression language); both see the state: \
         `input`, `messages`, `last_message`, `variables`, `context`, `usage`, `loop`, \
         `errors`, `metadata`, `tool_calls`, `node`.\n\n",
    );
    out.push_str("## Kinds\n\n| kind | aliases | category | what it does |\n|---|---|---|---|\n");
    for info in registry.kinds() {
        let _ = writeln!(
            out,
            "| [`{}`](#{}) | {} | {} | {} |",
            info.kind,
            anchor(info),
            cell(&if info.aliases.is_empty() {
                String::new()
            } else {
                code_list(&info.aliases)
            }),
            info.category,
            cell(&info.description)
        );
    }
    out.push_str("\n## Common keys\n\nEvery kind accepts these keys.\n\n");
    let mut rows = Vec::new();
    for (key, schema) in &common {
        rows.push(((*key).to_owned(), schema, false));
        nested_rows(key, schema, &mut rows);
    }
    table(&mut out, &rows);
    out.push('\n');
    for info in registry.kinds() {
        kind_section(&mut out, info, &common);
    }
    while out.ends_with("\n\n") {
        out.pop();
    }
    out
}

/// The GitHub-style anchor of a kind's heading (`## \`llm\`: LLM` → `llm-llm`).
fn anchor(info: &NodeKindInfo) -> String {
    format!("{}: {}", info.kind, info.name)
        .to_lowercase()
        .chars()
        .filter_map(|c| match c {
            'a'..='z' | '0'..='9' | '_' | '-' => Some(c),
            ' ' => Some('-'),
            _ => None,
        })
        .collect()
}
