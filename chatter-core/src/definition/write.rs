//! Writing definitions back in the shape and spelling they were read in.
//!
//! A node or edge read from a document keeps its raw object; writing starts from it and patches
//! only the fields that changed since, so positions, labels, handles, unknown fields, `null`s and
//! key order survive a read/write round trip unchanged.

use serde_json::{Map, Value, json};

use super::{ConditionSite, Edge, NodeSpec, Shape, WorkflowDefinition, parse};

pub(crate) fn definition(def: &WorkflowDefinition) -> Value {
    let mut out = Map::new();
    let emit = |out: &mut Map<String, Value>, key: &str| match key {
        "nodes" => {
            out.insert(
                "nodes".into(),
                Value::Array(def.nodes.iter().map(node).collect()),
            );
        }
        "edges" => {
            out.insert(
                "edges".into(),
                Value::Array(def.edges.iter().map(edge).collect()),
            );
        }
        "metadata" => {
            if def.had_metadata || !def.metadata.is_empty() {
                out.insert("metadata".into(), Value::Object(def.metadata.clone()));
            }
        }
        other => {
            if let Some(v) = def.extra.get(other) {
                out.insert(other.to_owned(), v.clone());
            }
        }
    };
    for key in &def.key_order {
        emit(&mut out, key);
    }
    for key in def.extra.keys() {
        if !out.contains_key(key) {
            emit(&mut out, key);
        }
    }
    for key in ["nodes", "edges", "metadata"] {
        if !out.contains_key(key) {
            emit(&mut out, key);
        }
    }
    Value::Object(out)
}

/// The config object with each key in the spelling the input used.
fn written_config(n: &NodeSpec) -> Map<String, Value> {
    n.config
        .iter()
        .map(|(k, v)| (n.config_key_as_written(k).to_owned(), v.clone()))
        .collect()
}

fn set_or_remove(obj: &mut Map<String, Value>, key: &str, value: Option<Value>) {
    match value {
        Some(v) => {
            obj.insert(key.to_owned(), v);
        }
        None => {
            obj.shift_remove(key);
        }
    }
}

/// Runs `f` on the `data` object of `obj`, creating it when absent (or not an object).
fn with_data(obj: &mut Map<String, Value>, f: impl FnOnce(&mut Map<String, Value>)) {
    let mut data = match obj.get_mut("data").map(Value::take) {
        Some(Value::Object(map)) => map,
        _ => Map::new(),
    };
    f(&mut data);
    obj.insert("data".into(), Value::Object(data));
}

pub(crate) fn node(n: &NodeSpec) -> Value {
    let original = n
        .source
        .raw
        .as_ref()
        .and_then(|raw| Some((raw, parse::node(&Value::Object(raw.clone()), "$").ok()?)));
    let Some((raw, orig)) = original else {
        return fresh_node(n);
    };
    let mut out = raw.clone();
    if orig.id != n.id {
        out.insert("id".into(), json!(n.id.as_str()));
    }
    let editor = n.source.shape == Shape::Editor;
    if orig.kind != n.kind {
        let kind = json!(n.kind.as_str());
        if editor {
            with_data(&mut out, |d| {
                d.insert("nodeType".into(), kind.clone());
            });
        }
        if !editor || out.contains_key("type") {
            out.insert("type".into(), kind);
        }
    }
    if orig.label != n.label {
        let label = n.label.clone().map(Value::String);
        if editor {
            with_data(&mut out, |d| set_or_remove(d, "label", label));
        } else {
            set_or_remove(&mut out, "label", label);
        }
    }
    if orig.position != n.position {
        set_or_remove(&mut out, "position", n.position.clone());
    }
    if orig.config != n.config || orig.source.key_spelling != n.source.key_spelling {
        let config = Value::Object(written_config(n));
        if editor {
            with_data(&mut out, |d| {
                d.insert("config".into(), config);
            });
        } else {
            out.insert("config".into(), config);
        }
    }
    Value::Object(out)
}

fn fresh_node(n: &NodeSpec) -> Value {
    let config = Value::Object(written_config(n));
    match n.source.shape {
        Shape::Flat => {
            let mut out = Map::new();
            out.insert("id".into(), json!(n.id.as_str()));
            out.insert("type".into(), json!(n.kind.as_str()));
            if let Some(label) = &n.label {
                out.insert("label".into(), json!(label));
            }
            if let Some(position) = &n.position {
                out.insert("position".into(), position.clone());
            }
            out.insert("config".into(), config);
            Value::Object(out)
        }
        _ => json!({
            "id": n.id.as_str(),
            "type": n.kind.as_str(),
            "position": n.position.clone().unwrap_or_else(|| json!({"x": 0, "y": 0})),
            "data": {
                "label": n.label.as_deref().unwrap_or(n.id.as_str()),
                "nodeType": n.kind.as_str(),
                "config": config,
            }
        }),
    }
}

pub(crate) fn edge(e: &Edge) -> Value {
    let original = e
        .source_info
        .raw
        .as_ref()
        .and_then(|raw| Some((raw, parse::edge(&Value::Object(raw.clone()), "$").ok()?)));
    let Some((raw, mut orig)) = original else {
        return fresh_edge(e);
    };
    // A resolved `START`/`END` sentinel is unchanged while the edge still points at its node.
    if let Some((written, resolved)) = &e.source_info.source_alias
        && orig.source.as_str() == written
    {
        orig.source = resolved.clone();
    }
    if let Some((written, resolved)) = &e.source_info.target_alias
        && orig.target.as_str() == written
    {
        orig.target = resolved.clone();
    }
    let mut out = raw.clone();
    if !e.source_info.id_generated && orig.id != e.id {
        out.insert("id".into(), json!(e.id.as_str()));
    }
    if orig.source != e.source {
        out.insert("source".into(), json!(e.source.as_str()));
    }
    if orig.target != e.target {
        out.insert("target".into(), json!(e.target.as_str()));
    }
    if orig.source_handle != e.source_handle {
        let key = if raw.contains_key("source_handle") {
            "source_handle"
        } else {
            "sourceHandle"
        };
        set_or_remove(&mut out, key, e.source_handle.clone().map(Value::String));
    }
    if orig.target_handle != e.target_handle {
        let key = if raw.contains_key("target_handle") {
            "target_handle"
        } else {
            "targetHandle"
        };
        set_or_remove(&mut out, key, e.target_handle.clone().map(Value::String));
    }
    if orig.condition != e.condition {
        let condition = e.condition.clone().map(Value::String);
        match e.source_info.condition_site {
            ConditionSite::Data => {
                with_data(&mut out, |d| set_or_remove(d, "condition", condition));
            }
            _ => set_or_remove(&mut out, "condition", condition),
        }
    }
    if orig.label != e.label {
        let label = e.label.clone().map(Value::String);
        if out.get("data").is_some_and(Value::is_object) || e.shape() == Shape::Editor {
            with_data(&mut out, |d| set_or_remove(d, "label", label));
        } else {
            set_or_remove(&mut out, "label", label);
        }
    }
    Value::Object(out)
}

fn fresh_edge(e: &Edge) -> Value {
    let mut out = Map::new();
    match e.source_info.shape {
        Shape::Flat => {
            out.insert("source".into(), json!(e.source.as_str()));
            out.insert("target".into(), json!(e.target.as_str()));
            if let Some(c) = &e.condition {
                out.insert("condition".into(), json!(c));
            }
            if let Some(h) = &e.source_handle {
                out.insert("sourceHandle".into(), json!(h));
            }
            if let Some(l) = &e.label {
                out.insert("label".into(), json!(l));
            }
        }
        _ => {
            out.insert("id".into(), json!(e.id.as_str()));
            out.insert("source".into(), json!(e.source.as_str()));
            out.insert("target".into(), json!(e.target.as_str()));
            if let Some(h) = &e.source_handle {
                out.insert("sourceHandle".into(), json!(h));
            }
            if let Some(h) = &e.target_handle {
                out.insert("targetHandle".into(), json!(h));
            }
            let mut data = Map::new();
            if let Some(c) = &e.condition {
                data.insert("condition".into(), json!(c));
            }
            if let Some(l) = &e.label {
                data.insert("label".into(), json!(l));
            }
            if !data.is_empty() {
                out.insert("data".into(), Value::Object(data));
            }
        }
    }
    Value::Object(out)
}
