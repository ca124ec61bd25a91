//! The node kind registry: metadata and config schema of every node kind (DESIGN §4).
//!
//! [`NodeRegistry::builtin`] knows the fifteen built-in kinds with their aliases, display
//! metadata, what they read and write in the state, and the JSON Schema of their config. The
//! validator checks node configs with [`NodeKindInfo::check_config`]; the HTTP layer serves
//! [`NodeKindInfo::node_type`] at `/node-types`; `docs/node-kinds.md` is generated from it.
//!
//! ```
//! use chatter_core::registry::{ConfigIssueKind, NodeRegistry};
//! use serde_json::json;
//!
//! let registry = NodeRegistry::builtin();
//! let llm = registry.get("model").expect("`model` is an alias of `llm`");
//! assert_eq!(llm.kind, "llm");
//!
//! let config = json!({"temperature": 3, "maxTokns": 10, "retry": {"max_attempts": 50}});
//! let issues = llm.check_config(config.as_object().expect("an object"));
//! let found: Vec<(&str, &str)> =
//!     issues.iter().map(|i| (i.path.as_str(), i.message.as_str())).collect();
//! assert_eq!(found, [
//!     ("temperature", "must be between 0 and 2, found 3"),
//!     ("maxTokns", "unknown key `maxTokns` (did you mean `max_tokens`?)"),
//!     ("retry.max_attempts", "must be between 1 and 20, found 50"),
//! ]);
//! assert_eq!(issues[1].kind, ConfigIssueKind::Unknown);
//! ```
//!
//! # Adding a kind
//!
//! Node authors describe their kind with the builder methods of [`NodeKindInfo`] and
//! [`PropertySchema`], and register it; the common keys (`join`, `on_error`, `timeout_ms`,
//! `retry`, `description`) are part of every schema made by [`NodeKindInfo::new`].
//!
//! ```
//! use chatter_core::registry::{NodeKindInfo, NodeRegistry, PropertySchema};
//! use serde_json::json;
//!
//! let mut registry = NodeRegistry::builtin();
//! registry.register(
//!     NodeKindInfo::new("translate", "Translate", "model", "Translates the last message.")
//!         .with_alias("translator")
//!         .with_property(
//!             "target_language",
//!             PropertySchema::string().min_length(2).describe("ISO 639-1 code."),
//!         )
//!         .with_property("prompt", PropertySchema::template().describe("Extra instructions."))
//!         .with_required(&["target_language"])
//!         .with_reads(&["messages"])
//!         .with_writes(&["messages"]),
//! );
//! let info = registry.get("translator").expect("registered");
//! assert_eq!(info.template_keys, ["prompt"]);
//! let issues = info.check_config(json!({}).as_object().expect("an object"));
//! assert_eq!(issues[0].message, "`target_language` is required");
//! ```
//!
//! # The schema subset
//!
//! Config schemas use this subset of JSON Schema draft 2020-12, and the checker reports every
//! issue it finds, with a dotted path (`retry.max_attempts`, `allowed_tools[2]`,
//! `headers["X.Y"]` for keys that are not identifiers):
//!
//! | keyword | issue kind | message |
//! |---|---|---|
//! | `type` (a name or an array of names) | `WrongType` | `expected an integer, found a string`, `expected a string or null, found an array` |
//! | `minimum`, `maximum`, `exclusiveMinimum`, `exclusiveMaximum` | `OutOfRange` | `must be between 1 and 20, found 50`, `must be at least 1, found 0`, `must be greater than 0, found 0` |
//! | `minLength`, `maxLength` (characters) | `OutOfRange` | `must be at least 1 character long, found 0` |
//! | `minItems`, `maxItems` | `OutOfRange` | `must have at least 1 item, found 0` |
//! | `enum` | `NotAllowed` | `must be one of fixed, random, exponential, found "linear"` |
//! | `pattern` (the `regex` crate's syntax; unanchored unless written with `^...$`) | `NotAllowed` | ``must match the pattern `^[a-z]+$`, found "A1"`` |
//! | `required` | `Missing` | `` `variable_name` is required `` |
//! | `anyOf` of `required` sets | `Missing` | `` one of `workflow_id`, `template_id` is required `` (at the path of the first alternative) |
//! | `additionalProperties: false` | `Unknown` | ``unknown key `maxTokns` (did you mean `max_tokens`?)`` |
//! | `properties`, `items`, `additionalProperties` (a schema) | | checked recursively, at most [`MAX_CHECK_DEPTH`] levels deep |
//! | `x-member-of: "<sibling>"` (extension) | `NotAllowed` | ``must be one of the `allowed_decisions` (approve, reject), found "maybe"`` |
//! | `x-at-most: "<sibling>"` (extension) | `OutOfRange` | ``must be at most `max_delay_ms` (100), found 200`` |
//!
//! Integers are JSON numbers written without a fraction or an exponent: `5.0` is a number, not
//! an integer, because the engine reads integer keys exactly. `null` is a value of type `null`,
//! not an absent key. A value of the wrong type gets only the type issue. Any other `anyOf` is
//! satisfied by one matching branch; if none matches, the issues of the closest branch are
//! reported. `default`, `description`, `format` (`template`, `expression`), `deprecated` and
//! `x-replaced-by` are annotations.

mod builtin;
mod check;
mod docs;
mod schema;
mod view;

#[cfg(test)]
mod tests;

use serde_json::{Map, Value, json};

pub use check::MAX_CHECK_DEPTH;

/// Checks any JSON value against a schema of the registry's JSON Schema subset (the one node
/// configs use), returning every issue with its dotted path (empty for the value itself). Template
/// parameters are checked with it too.
pub fn check_schema(schema: &Value, value: &Value) -> Vec<ConfigIssue> {
    let mut issues = Vec::new();
    check::check_value(schema, value, "", 0, &mut issues);
    issues
}
pub use schema::{
    COMMON_KEYS, IDENTIFIER_PATTERN, PropertySchema, common_properties, retry_schema,
};
pub use view::{NodePropertyDefinition, NodeTypeResponse};

/// What kind of problem a config check found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ConfigIssueKind {
    /// A value has the wrong JSON type.
    WrongType,
    /// A number is outside its range (or a string/array outside its length bounds).
    OutOfRange,
    /// A value is not one of the allowed values (or does not match the key's pattern).
    NotAllowed,
    /// A required key is missing.
    Missing,
    /// A key the kind does not know (a warning).
    Unknown,
}

/// One problem in a node's config.
#[derive(Debug, Clone, PartialEq)]
pub struct ConfigIssue {
    /// Path inside the config, dotted (`retry.max_attempts`, `allowed_tools[2]`).
    pub path: String,
    /// What kind of problem.
    pub kind: ConfigIssueKind,
    /// What is wrong, precisely (names the expected type/range/values).
    pub message: String,
}

impl std::fmt::Display for ConfigIssue {
    /// `path: message`, or the message alone for an issue of the whole config.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.path.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "{}: {}", self.path, self.message)
        }
    }
}

/// Metadata of one node kind.
///
/// Build one with [`NodeKindInfo::new`] and the `with_*` methods; more fields may be added, so
/// the struct cannot be written as a literal outside this crate.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct NodeKindInfo {
    /// Canonical kind (`llm`).
    pub kind: String,
    /// Other names accepted for it (`model`, `call_model`).
    pub aliases: Vec<String>,
    /// Human-readable name.
    pub name: String,
    /// Category (`control`, `model`, `data`, ...).
    pub category: String,
    /// What it does.
    pub description: String,
    /// JSON Schema of its config (type object, properties with types, defaults, ranges).
    pub config_schema: Value,
    /// Config keys holding condition expressions.
    pub expression_keys: Vec<String>,
    /// Config keys holding prompt templates.
    pub template_keys: Vec<String>,
    /// Named branches it routes by (`true`/`false` for `conditional`).
    pub branches: Vec<String>,
    /// Whether a cycle through it can be left (a `loop`, a `conditional`).
    pub can_exit_cycle: bool,
    /// Icon name for editors (Material icon names for the built-in kinds).
    pub icon: Option<String>,
    /// Colour for editors (`#rrggbb`).
    pub color: Option<String>,
    /// Top-level state keys it reads (`messages`, `variables`, ...; see
    /// [`crate::expr::STATE_VARIABLES`]).
    pub reads: Vec<String>,
    /// Top-level state keys it writes.
    pub writes: Vec<String>,
    /// Example configs (each passes [`NodeKindInfo::check_config`]).
    pub examples: Vec<Value>,
}

impl NodeKindInfo {
    /// A kind whose config schema holds the common keys ([`common_properties`]) and rejects
    /// others as unknown.
    pub fn new(
        kind: impl Into<String>,
        name: impl Into<String>,
        category: impl Into<String>,
        description: impl Into<String>,
    ) -> NodeKindInfo {
        let mut properties = Map::new();
        for (key, schema) in common_properties() {
            properties.insert(key.to_owned(), schema.into_value());
        }
        NodeKindInfo {
            kind: kind.into(),
            aliases: Vec::new(),
            name: name.into(),
            category: category.into(),
            description: description.into(),
            config_schema: json!({
                "type": "object",
                "properties": properties,
                "additionalProperties": false,
            }),
            expression_keys: Vec::new(),
            template_keys: Vec::new(),
            branches: Vec::new(),
            can_exit_cycle: false,
            icon: None,
            color: None,
            reads: Vec::new(),
            writes: Vec::new(),
            examples: Vec::new(),
        }
    }

    /// Adds an alias.
    pub fn with_alias(mut self, alias: impl Into<String>) -> NodeKindInfo {
        let alias = alias.into();
        if !self.aliases.contains(&alias) {
            self.aliases.push(alias);
        }
        self
    }

    /// Sets the icon name.
    pub fn with_icon(mut self, icon: impl Into<String>) -> NodeKindInfo {
        self.icon = Some(icon.into());
        self
    }

    /// Sets the colour.
    pub fn with_color(mut self, color: impl Into<String>) -> NodeKindInfo {
        self.color = Some(color.into());
        self
    }

    /// Sets the state keys it reads.
    pub fn with_reads(mut self, keys: &[&str]) -> NodeKindInfo {
        self.reads = keys.iter().map(|k| (*k).to_owned()).collect();
        self
    }

    /// Sets the state keys it writes.
    pub fn with_writes(mut self, keys: &[&str]) -> NodeKindInfo {
        self.writes = keys.iter().map(|k| (*k).to_owned()).collect();
        self
    }

    /// Adds an example config.
    pub fn with_example(mut self, config: Value) -> NodeKindInfo {
        self.examples.push(config);
        self
    }

    /// Sets the named branches it routes by.
    pub fn with_branches(mut self, branches: &[&str]) -> NodeKindInfo {
        self.branches = branches.iter().map(|b| (*b).to_owned()).collect();
        self
    }

    /// Sets whether a cycle through it can be left.
    pub fn with_cycle_exit(mut self, can_exit_cycle: bool) -> NodeKindInfo {
        self.can_exit_cycle = can_exit_cycle;
        self
    }

    /// Adds (or replaces) a config key. New keys go before the common keys, so that the kind's
    /// own keys come first in listings. A `template` or `expression` schema adds the key to
    /// [`NodeKindInfo::template_keys`] or [`NodeKindInfo::expression_keys`].
    pub fn with_property(mut self, key: &str, schema: PropertySchema) -> NodeKindInfo {
        let schema = schema.into_value();
        self.edit_schema(|root| {
            let properties = match root.get_mut("properties") {
                Some(Value::Object(p)) => std::mem::take(p),
                _ => Map::new(),
            };
            let mut rebuilt = Map::new();
            let mut placed = properties.contains_key(key);
            for (k, v) in properties {
                if !placed && COMMON_KEYS.contains(&k.as_str()) {
                    rebuilt.insert(key.to_owned(), schema.clone());
                    placed = true;
                }
                let v = if k == key { schema.clone() } else { v };
                rebuilt.insert(k, v);
            }
            if !placed {
                rebuilt.insert(key.to_owned(), schema);
            }
            root.insert("properties".into(), Value::Object(rebuilt));
        });
        self.derive_key_lists();
        self
    }

    /// Adds required keys.
    pub fn with_required(mut self, keys: &[&str]) -> NodeKindInfo {
        self.edit_schema(|root| {
            let required = root
                .entry("required")
                .or_insert_with(|| Value::Array(Vec::new()));
            if let Value::Array(required) = required {
                for key in keys {
                    if !required.iter().any(|r| r == key) {
                        required.push(Value::from(*key));
                    }
                }
            }
        });
        self
    }

    /// Requires at least one of `keys` (an `anyOf` of `required` sets).
    pub fn with_required_one_of(mut self, keys: &[&str]) -> NodeKindInfo {
        let sets: Vec<Value> = keys.iter().map(|k| json!({"required": [k]})).collect();
        self.edit_schema(|root| {
            root.insert("anyOf".into(), Value::Array(sets));
        });
        self
    }

    /// Replaces the whole config schema (the common keys are then only those it lists) and
    /// derives the template and expression keys from it.
    pub fn with_config_schema(mut self, schema: Value) -> NodeKindInfo {
        self.config_schema = schema;
        self.derive_key_lists();
        self
    }

    /// Edits the schema's root object (made an object schema first if it is not one).
    fn edit_schema(&mut self, edit: impl FnOnce(&mut Map<String, Value>)) {
        let mut root = match std::mem::take(&mut self.config_schema) {
            Value::Object(map) => map,
            _ => {
                let mut map = Map::new();
                map.insert("type".into(), Value::from("object"));
                map
            }
        };
        edit(&mut root);
        self.config_schema = Value::Object(root);
    }

    fn derive_key_lists(&mut self) {
        let mut templates = Vec::new();
        let mut expressions = Vec::new();
        for (key, schema) in self.schema_properties() {
            match schema.get("format").and_then(Value::as_str) {
                Some("template") => templates.push(key.clone()),
                Some("expression") => expressions.push(key.clone()),
                _ => {}
            }
        }
        self.template_keys = templates;
        self.expression_keys = expressions;
    }

    /// The top-level `properties` of the config schema, in order.
    pub fn schema_properties(&self) -> impl Iterator<Item = (&String, &Value)> {
        self.config_schema
            .get("properties")
            .and_then(Value::as_object)
            .into_iter()
            .flat_map(|p| p.iter())
    }

    /// The schema of one config key.
    pub fn property_schema(&self, key: &str) -> Option<&Value> {
        self.config_schema.get("properties")?.get(key)
    }

    /// The required keys, in schema order (not counting "one of" alternatives).
    pub fn required_keys(&self) -> Vec<&str> {
        self.config_schema
            .get("required")
            .and_then(Value::as_array)
            .map(|r| r.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default()
    }

    /// Whether `key` is required.
    pub fn is_required(&self, key: &str) -> bool {
        self.config_schema
            .get("required")
            .and_then(Value::as_array)
            .is_some_and(|r| r.iter().any(|k| k == key))
    }

    /// Checks a config against the schema and returns every issue: those of each key in config
    /// order (nested issues right after their parent key), then sibling rules, missing keys and
    /// missing alternatives. See the [module docs](self) for the keywords and messages.
    pub fn check_config(&self, config: &Map<String, Value>) -> Vec<ConfigIssue> {
        let mut issues = Vec::new();
        let value = Value::Object(config.clone());
        check::check_value(&self.config_schema, &value, "", 0, &mut issues);
        issues
    }

    /// The schema defaults of the top-level keys, in schema order.
    pub fn defaults(&self) -> Map<String, Value> {
        self.schema_properties()
            .filter_map(|(k, s)| Some((k.clone(), s.get("default")?.clone())))
            .collect()
    }

    /// Problems of the schema itself: types it does not know, patterns that do not compile,
    /// defaults that do not satisfy their own schema. Empty for every built-in kind.
    pub fn schema_problems(&self) -> Vec<String> {
        let mut out = Vec::new();
        check::schema_problems(&self.config_schema, "", 0, &mut out);
        out
    }

    /// The metadata as one JSON object (the per-kind entry of [`NodeRegistry::schema_json`]).
    pub fn to_json(&self) -> Value {
        json!({
            "kind": self.kind,
            "aliases": self.aliases,
            "name": self.name,
            "category": self.category,
            "description": self.description,
            "icon": self.icon,
            "color": self.color,
            "reads": self.reads,
            "writes": self.writes,
            "expression_keys": self.expression_keys,
            "template_keys": self.template_keys,
            "branches": self.branches,
            "can_exit_cycle": self.can_exit_cycle,
            "config_schema": self.config_schema,
            "examples": self.examples,
        })
    }
}

/// The kinds a validator and an engine know.
#[derive(Debug, Clone, Default)]
pub struct NodeRegistry {
    kinds: Vec<NodeKindInfo>,
}

impl NodeRegistry {
    /// The built-in kinds of DESIGN §4, in the order of its table.
    pub fn builtin() -> NodeRegistry {
        NodeRegistry {
            kinds: builtin::kinds(),
        }
    }

    /// Adds a kind, or replaces the kind of the same canonical name (keeping its place in
    /// [`NodeRegistry::kinds`]).
    ///
    /// [`NodeRegistry::get`] resolves canonical names before aliases, so a kind registered as
    /// `model` is found as `model` even though `model` is also an alias of `llm`.
    pub fn register(&mut self, info: NodeKindInfo) {
        match self.kinds.iter_mut().find(|k| k.kind == info.kind) {
            Some(existing) => *existing = info,
            None => self.kinds.push(info),
        }
    }

    /// A kind by canonical name or alias.
    pub fn get(&self, kind: &str) -> Option<&NodeKindInfo> {
        self.kinds.iter().find(|k| k.kind == kind).or_else(|| {
            self.kinds
                .iter()
                .find(|k| k.aliases.iter().any(|a| a == kind))
        })
    }

    /// The registered kind or alias closest to an unknown kind name, when it looks like a typo
    /// of it (the same rule as for unknown config keys: `condtional` → `conditional`).
    pub fn suggest_kind(&self, name: &str) -> Option<&str> {
        let names: Vec<&String> = self
            .kinds
            .iter()
            .flat_map(|k| std::iter::once(&k.kind).chain(&k.aliases))
            .collect();
        let best = check::suggest(name, names.into_iter())?;
        self.get(best).map(|k| k.kind.as_str())
    }

    /// Every kind, in registration order (the built-ins first, in the order of DESIGN §4).
    pub fn kinds(&self) -> impl Iterator<Item = &NodeKindInfo> {
        self.kinds.iter()
    }

    /// How many kinds are registered.
    pub fn len(&self) -> usize {
        self.kinds.len()
    }

    /// Whether no kind is registered.
    pub fn is_empty(&self) -> bool {
        self.kinds.is_empty()
    }

    /// The whole catalogue as one JSON document: `{"$schema", "kinds": {kind: metadata}}`, kinds
    /// in registration order.
    pub fn schema_json(&self) -> Value {
        let kinds: Map<String, Value> = self
            .kinds
            .iter()
            .map(|k| (k.kind.clone(), k.to_json()))
            .collect();
        json!({
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            "kinds": kinds,
        })
    }

    /// The `/node-types` response: one entry per kind, in registration order.
    pub fn node_types(&self) -> Vec<NodeTypeResponse> {
        self.kinds.iter().map(NodeKindInfo::node_type).collect()
    }

    /// The `/node-types/modern` response of the old platform: `supported_types`,
    /// `type_details` (per kind: `description`, `required_config`, `optional_config` (the
    /// kind's own current keys, without the common ones), `examples` as `key: value` strings)
    /// and `capabilities`.
    pub fn modern_node_types(&self) -> Value {
        let details: Map<String, Value> = self
            .kinds
            .iter()
            .map(|k| (k.kind.clone(), view::modern_details(k)))
            .collect();
        json!({
            "supported_types": self.kinds.iter().map(|k| k.kind.as_str()).collect::<Vec<_>>(),
            "type_details": details,
            "capabilities": {
                "conditional_routing": self.get("conditional").is_some(),
                "loop_iteration": self.get("loop").is_some(),
                "variable_management": self.get("variable").is_some(),
                "error_recovery": self.get("error_handler").is_some(),
                "adaptive_memory": self.get("memory").is_some(),
                "intelligent_tool_execution": self.get("tool").is_some(),
                "human_approval": self.get("approval").is_some(),
                "map_over_items": self.get("map").is_some(),
                "subworkflows": self.get("subworkflow").is_some(),
                "http_requests": self.get("http").is_some(),
            },
        })
    }

    /// The reference documentation of every kind as Markdown (`docs/node-kinds.md`).
    pub fn markdown(&self) -> String {
        docs::markdown(self)
    }
}
