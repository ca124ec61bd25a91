//! The `/node-types` view of a kind (schemas `NodeTypeResponse` and `NodePropertyDefinition` of
//! the v1 contract).

use serde::{Deserialize, Serialize};
use serde_json::{Number, Value, json};

use super::{COMMON_KEYS, NodeKindInfo};

/// One config key as the v1 contract's `NodePropertyDefinition` describes it.
///
/// `type` is one of `string`, `template` (a prompt template), `expression` (a condition),
/// `integer`, `number`, `boolean`, `select` (a string out of `options`), `multiselect` (an
/// array of strings out of `options`), `array`, `object`, `any`; a key of several JSON types
/// gets its first non-null type.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodePropertyDefinition {
    /// Config key (snake_case).
    pub name: String,
    /// Property type (see above).
    #[serde(rename = "type")]
    pub property_type: String,
    /// Whether the key is required.
    #[serde(default)]
    pub required: bool,
    /// What the key means.
    pub description: Option<String>,
    /// The default value.
    pub default_value: Option<Value>,
    /// Allowed values of a `select`/`multiselect`.
    pub options: Option<Vec<String>>,
    /// Lower bound of a number (`minimum`, else `exclusiveMinimum`).
    pub min_value: Option<Number>,
    /// Upper bound of a number (`maximum`, else `exclusiveMaximum`).
    pub max_value: Option<Number>,
}

/// One kind as the v1 contract's `NodeTypeResponse` describes it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeTypeResponse {
    /// Canonical kind.
    #[serde(rename = "type")]
    pub node_type: String,
    /// Human-readable name.
    pub name: String,
    /// What it does.
    pub description: String,
    /// Category.
    pub category: String,
    /// Its config keys.
    pub properties: Vec<NodePropertyDefinition>,
    /// Icon name.
    pub icon: Option<String>,
    /// Colour.
    pub color: Option<String>,
}

fn first_type(schema: &Value) -> Option<&str> {
    match schema.get("type")? {
        Value::String(t) => Some(t.as_str()),
        Value::Array(ts) => ts
            .iter()
            .filter_map(Value::as_str)
            .find(|t| *t != "null")
            .or_else(|| ts.iter().find_map(Value::as_str)),
        _ => None,
    }
}

fn string_options(schema: &Value) -> Option<Vec<String>> {
    let options = schema.get("enum")?.as_array()?;
    options
        .iter()
        .map(|o| o.as_str().map(str::to_owned))
        .collect()
}

fn bound(schema: &Value, inclusive: &str, exclusive: &str) -> Option<Number> {
    match schema.get(inclusive).or_else(|| schema.get(exclusive))? {
        Value::Number(n) => Some(n.clone()),
        _ => None,
    }
}

/// The property view of one config key.
pub(crate) fn property(name: &str, schema: &Value, required: bool) -> NodePropertyDefinition {
    let json_type = first_type(schema);
    let format = schema.get("format").and_then(Value::as_str);
    let mut options = None;
    let property_type = match (json_type, format) {
        (Some("string"), Some(f @ ("template" | "expression"))) => f.to_owned(),
        (Some("string"), _) => match string_options(schema) {
            Some(o) => {
                options = Some(o);
                "select".to_owned()
            }
            None => "string".to_owned(),
        },
        (Some("array"), _) => match schema.get("items").and_then(string_options) {
            Some(o) => {
                options = Some(o);
                "multiselect".to_owned()
            }
            None => "array".to_owned(),
        },
        (Some(t), _) => t.to_owned(),
        (None, _) => "any".to_owned(),
    };
    let numeric = matches!(json_type, Some("integer" | "number"));
    NodePropertyDefinition {
        name: name.to_owned(),
        property_type,
        required,
        description: schema
            .get("description")
            .and_then(Value::as_str)
            .map(str::to_owned),
        default_value: schema.get("default").cloned(),
        options,
        min_value: numeric
            .then(|| bound(schema, "minimum", "exclusiveMinimum"))
            .flatten(),
        max_value: numeric
            .then(|| bound(schema, "maximum", "exclusiveMaximum"))
            .flatten(),
    }
}

impl NodeKindInfo {
    /// The config keys as `NodePropertyDefinition`s, in schema order (the kind's own keys, then
    /// the common keys). Old names of keys (`deprecated`) are left out: they are accepted, but
    /// an editor should offer only the current name.
    pub fn properties(&self) -> Vec<NodePropertyDefinition> {
        self.schema_properties()
            .filter(|(_, s)| s.get("deprecated") != Some(&Value::Bool(true)))
            .map(|(k, s)| property(k, s, self.is_required(k)))
            .collect()
    }

    /// The kind as the contract's `NodeTypeResponse`.
    pub fn node_type(&self) -> NodeTypeResponse {
        NodeTypeResponse {
            node_type: self.kind.clone(),
            name: self.name.clone(),
            description: self.description.clone(),
            category: self.category.clone(),
            properties: self.properties(),
            icon: self.icon.clone(),
            color: self.color.clone(),
        }
    }
}

/// One kind's entry of the old `/node-types/modern` response.
pub(crate) fn modern_details(info: &NodeKindInfo) -> Value {
    let required = info.required_keys();
    let optional: Vec<&str> = info
        .schema_properties()
        .filter(|(k, s)| {
            !required.contains(&k.as_str())
                && !COMMON_KEYS.contains(&k.as_str())
                && s.get("deprecated") != Some(&Value::Bool(true))
        })
        .map(|(k, _)| k.as_str())
        .collect();
    let examples: Vec<String> = info
        .examples
        .iter()
        .filter_map(Value::as_object)
        .map(|config| {
            config
                .iter()
                .map(|(k, v)| format!("{k}: {v}"))
                .collect::<Vec<_>>()
                .join(", ")
        })
        .collect();
    json!({
        "description": info.description,
        "required_config": required,
        "optional_config": optional,
        "examples": examples,
    })
}
