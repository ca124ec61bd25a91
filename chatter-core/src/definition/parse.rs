//! Reading definitions: strict JSON/YAML values (duplicate keys refused, depth bounded) and the
//! two shapes of the old platform.

use std::fmt;

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Number, Value};

use super::{
    ConditionSite, Edge, EdgeId, EdgeSource, NodeId, NodeKind, NodeSource, NodeSpec, Shape,
    WorkflowDefinition, canonical_config_key,
};
use crate::error::{Error, Format, Result};

/// Nesting deeper than this is refused while parsing (JSON and YAML alike), so hostile input
/// can neither overflow the stack nor build values too deep to drop.
pub(crate) const MAX_DEPTH: usize = 128;

/// A JSON value deserialised strictly: a repeated key in an object is an error, and nesting is
/// bounded by [`MAX_DEPTH`].
pub(crate) struct StrictValue(pub(crate) Value);

impl<'de> Deserialize<'de> for StrictValue {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer
            .deserialize_any(StrictVisitor { depth: 0 })
            .map(StrictValue)
    }
}

struct StrictVisitor {
    depth: usize,
}

struct Nested(usize);

impl<'de> de::DeserializeSeed<'de> for Nested {
    type Value = Value;
    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        if self.0 > MAX_DEPTH {
            return Err(de::Error::custom(format!(
                "nesting deeper than {MAX_DEPTH} levels"
            )));
        }
        deserializer.deserialize_any(StrictVisitor { depth: self.0 })
    }
}

/// An object key: strings, and (for YAML) numbers and booleans written as their text.
struct Key(String);

impl<'de> Deserialize<'de> for Key {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct KeyVisitor;
        impl Visitor<'_> for KeyVisitor {
            type Value = Key;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string key")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Key, E> {
                Ok(Key(v.to_owned()))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<Key, E> {
                Ok(Key(v))
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<Key, E> {
                Ok(Key(v.to_string()))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Key, E> {
                Ok(Key(v.to_string()))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Key, E> {
                Ok(Key(v.to_string()))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Key, E> {
                Ok(Key(v.to_string()))
            }
            fn visit_unit<E: de::Error>(self) -> Result<Key, E> {
                Ok(Key("null".to_owned()))
            }
        }
        deserializer.deserialize_any(KeyVisitor)
    }
}

impl<'de> Visitor<'de> for StrictVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Value, E> {
        Number::from_f64(v)
            .map(Value::Number)
            .ok_or_else(|| E::custom("numbers must be finite (no NaN or infinity)"))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }
    fn visit_string<E: de::Error>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }
    fn visit_unit<E: de::Error>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_none<E: de::Error>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        de::DeserializeSeed::deserialize(Nested(self.depth), d)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(4096));
        while let Some(item) = seq.next_element_seed(Nested(self.depth + 1))? {
            items.push(item);
        }
        Ok(Value::Array(items))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut out = Map::new();
        while let Some(Key(key)) = map.next_key::<Key>()? {
            if out.contains_key(&key) {
                return Err(de::Error::custom(format!("duplicate key `{key}`")));
            }
            let value = map.next_value_seed(Nested(self.depth + 1))?;
            out.insert(key, value);
        }
        Ok(Value::Object(out))
    }
}

/// Parses JSON text strictly.
pub(crate) fn json_value(text: &str) -> Result<Value> {
    let mut de = serde_json::Deserializer::from_str(text);
    let parsed = StrictValue::deserialize(&mut de).and_then(|v| de.end().map(|()| v));
    parsed.map(|v| v.0).map_err(|e| Error::Parse {
        format: Format::Json,
        line: e.line(),
        column: e.column(),
        message: strip_location(&e.to_string()),
    })
}

/// Parses YAML text strictly (a single document).
pub(crate) fn yaml_value(text: &str) -> Result<Value> {
    let de = serde_norway::Deserializer::from_str(text);
    StrictValue::deserialize(de)
        .map(|v| v.0)
        .map_err(|e: serde_norway::Error| {
            let (line, column) = e.location().map_or((0, 0), |l| (l.line(), l.column()));
            Error::Parse {
                format: Format::Yaml,
                line,
                column,
                message: strip_location(&e.to_string()),
            }
        })
}

/// Removes the " at line L column C" suffix parsers append, since the error carries both.
fn strip_location(message: &str) -> String {
    match message.find(" at line ") {
        Some(i) => message[..i].to_owned(),
        None => message.to_owned(),
    }
}

fn wrong_type(path: impl Into<String>, expected: &str, found: &Value) -> Error {
    Error::Definition {
        path: path.into(),
        message: format!("expected {expected}, found {}", type_name(found)),
    }
}

pub(crate) fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// An optional string field: absent or `null` is `None`; another type is an error.
fn opt_str(obj: &Map<String, Value>, key: &str, path: &str) -> Result<Option<String>> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(other) => Err(wrong_type(format!("{path}.{key}"), "a string", other)),
    }
}

/// Reads a whole definition.
pub(crate) fn definition(value: &Value) -> Result<WorkflowDefinition> {
    let Value::Object(top) = value else {
        return Err(wrong_type("$", "an object with `nodes` and `edges`", value));
    };
    let nodes = match top.get("nodes") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(items)) => items
            .iter()
            .enumerate()
            .map(|(i, raw)| node(raw, &format!("$.nodes[{i}]")))
            .collect::<Result<Vec<_>>>()?,
        Some(other) => return Err(wrong_type("$.nodes", "an array of nodes", other)),
    };
    let mut edges = match top.get("edges") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(items)) => items
            .iter()
            .enumerate()
            .map(|(i, raw)| edge(raw, &format!("$.edges[{i}]")))
            .collect::<Result<Vec<_>>>()?,
        Some(other) => return Err(wrong_type("$.edges", "an array of edges", other)),
    };
    assign_edge_ids(&mut edges);
    resolve_sentinels(&nodes, &mut edges);
    let (metadata, had_metadata) = match top.get("metadata") {
        None => (Map::new(), false),
        Some(Value::Null) => (Map::new(), true),
        Some(Value::Object(m)) => (m.clone(), true),
        Some(other) => return Err(wrong_type("$.metadata", "an object", other)),
    };
    let extra = top
        .iter()
        .filter(|(k, _)| !matches!(k.as_str(), "nodes" | "edges" | "metadata"))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    Ok(WorkflowDefinition {
        nodes,
        edges,
        metadata,
        extra,
        had_metadata,
        key_order: top.keys().cloned().collect(),
    })
}

/// Gives every edge without an id a fresh one (`e1`, `e2`, ... by position, skipping ids that
/// are taken). Generated ids are not written back.
fn assign_edge_ids(edges: &mut [Edge]) {
    let taken: std::collections::HashSet<String> = edges
        .iter()
        .filter(|e| !e.source_info.id_generated)
        .map(|e| e.id.0.clone())
        .collect();
    for (i, edge) in edges.iter_mut().enumerate() {
        if edge.source_info.id_generated {
            let mut id = format!("e{}", i + 1);
            while taken.contains(&id) {
                id.push('_');
            }
            edge.id = EdgeId(id);
        }
    }
}

/// Resolves LangGraph's `START`/`END` endpoint names to the single `start`/`end` node, when no
/// node has that id (see [`super::END_SENTINELS`]).
fn resolve_sentinels(nodes: &[NodeSpec], edges: &mut [Edge]) {
    let single = |kind: &str| {
        let mut found = nodes.iter().filter(|n| n.kind.as_str() == kind);
        match (found.next(), found.next()) {
            (Some(n), None) => Some(n.id.clone()),
            _ => None,
        }
    };
    let is_node = |id: &str| nodes.iter().any(|n| n.id.as_str() == id);
    let (start, end) = (single("start"), single("end"));
    for edge in edges.iter_mut() {
        if let Some(end) = &end {
            let target = edge.target.as_str();
            if super::END_SENTINELS.contains(&target) && !is_node(target) {
                edge.source_info.target_alias = Some((target.to_owned(), end.clone()));
                edge.target = end.clone();
            }
        }
        if let Some(start) = &start {
            let source = edge.source.as_str();
            if super::START_SENTINELS.contains(&source) && !is_node(source) {
                edge.source_info.source_alias = Some((source.to_owned(), start.clone()));
                edge.source = start.clone();
            }
        }
    }
}

/// Reads one node in either shape.
pub(crate) fn node(raw: &Value, path: &str) -> Result<NodeSpec> {
    let Value::Object(obj) = raw else {
        return Err(wrong_type(path, "a node object", raw));
    };
    let id = opt_str(obj, "id", path)?.unwrap_or_default();
    let type_field = opt_str(obj, "type", path)?;
    let data = match obj.get("data") {
        Some(Value::Object(d)) => Some(d),
        None | Some(Value::Null) => None,
        Some(other) => return Err(wrong_type(format!("{path}.data"), "an object", other)),
    };
    let shape = if data.is_some() {
        Shape::Editor
    } else {
        Shape::Flat
    };
    let data_path = format!("{path}.data");
    let (data_node_type, label, raw_config, config_path) = match data {
        Some(d) => (
            opt_str(d, "nodeType", &data_path)?,
            opt_str(d, "label", &data_path)?,
            d.get("config"),
            format!("{data_path}.config"),
        ),
        None => (
            None,
            opt_str(obj, "label", path)?,
            obj.get("config"),
            format!("{path}.config"),
        ),
    };
    let written_kind = data_node_type
        .as_deref()
        .or(type_field.as_deref())
        .unwrap_or("");
    let kind = NodeKind::canonical(written_kind);
    let mut config = Map::new();
    let mut key_spelling = Vec::new();
    match raw_config {
        None | Some(Value::Null) => {}
        Some(Value::Object(c)) => {
            for (key, value) in c {
                let canonical = canonical_config_key(key);
                if config.contains_key(canonical) {
                    return Err(Error::Definition {
                        path: format!("{config_path}.{key}"),
                        message: format!(
                            "`{key}` repeats `{canonical}`; write the key once, in either spelling"
                        ),
                    });
                }
                if canonical != key {
                    key_spelling.push((canonical.to_owned(), key.clone()));
                }
                config.insert(canonical.to_owned(), value.clone());
            }
        }
        Some(other) => return Err(wrong_type(config_path, "an object", other)),
    }
    Ok(NodeSpec {
        id: NodeId(id),
        kind,
        config,
        label,
        position: obj.get("position").filter(|p| !p.is_null()).cloned(),
        source: NodeSource {
            shape,
            raw: Some(obj.clone()),
            key_spelling,
        },
    })
}

/// Reads one edge in either shape.
pub(crate) fn edge(raw: &Value, path: &str) -> Result<Edge> {
    let Value::Object(obj) = raw else {
        return Err(wrong_type(path, "an edge object", raw));
    };
    let id = opt_str(obj, "id", path)?;
    let source = opt_str(obj, "source", path)?.unwrap_or_default();
    let target = opt_str(obj, "target", path)?.unwrap_or_default();
    let data = match obj.get("data") {
        Some(Value::Object(d)) => Some(d),
        None | Some(Value::Null) => None,
        Some(other) => return Err(wrong_type(format!("{path}.data"), "an object", other)),
    };
    let data_path = format!("{path}.data");
    let top_condition = opt_str(obj, "condition", path)?;
    let data_condition = match data {
        Some(d) => opt_str(d, "condition", &data_path)?,
        None => None,
    };
    let (condition, condition_site) = match (top_condition, data_condition) {
        (Some(c), _) => (Some(c), ConditionSite::TopLevel),
        (None, Some(c)) => (Some(c), ConditionSite::Data),
        (None, None) => (
            None,
            if data.is_some() {
                ConditionSite::Data
            } else {
                ConditionSite::TopLevel
            },
        ),
    };
    let source_handle = match opt_str(obj, "sourceHandle", path)? {
        Some(h) => Some(h),
        None => opt_str(obj, "source_handle", path)?,
    };
    let target_handle = match opt_str(obj, "targetHandle", path)? {
        Some(h) => Some(h),
        None => opt_str(obj, "target_handle", path)?,
    };
    let label = match data {
        Some(d) => opt_str(d, "label", &data_path)?,
        None => opt_str(obj, "label", path)?,
    };
    let shape = if id.is_some() || data.is_some() || obj.contains_key("sourceHandle") {
        Shape::Editor
    } else {
        Shape::Flat
    };
    Ok(Edge {
        id: EdgeId(id.clone().unwrap_or_default()),
        source: NodeId(source),
        target: NodeId(target),
        condition,
        source_handle,
        target_handle,
        label,
        source_info: EdgeSource {
            shape,
            id_generated: id.is_none(),
            source_alias: None,
            target_alias: None,
            condition_site,
            raw: Some(obj.clone()),
        },
    })
}
