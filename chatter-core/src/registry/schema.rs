//! A small builder for the JSON Schema (draft 2020-12 subset) of node configs.
//!
//! The registry describes every config key with a schema built here, so that node authors can
//! describe their own kinds the same way:
//!
//! ```
//! use chatter_core::registry::PropertySchema;
//!
//! let attempts = PropertySchema::integer()
//!     .range(1, 20)
//!     .default(1)
//!     .describe("How many times to try.");
//! assert_eq!(
//!     attempts.into_value(),
//!     serde_json::json!({
//!         "type": "integer", "minimum": 1, "maximum": 20, "default": 1,
//!         "description": "How many times to try."
//!     })
//! );
//! ```
//!
//! Besides the standard keywords, two annotations are used: `"format": "template"` marks a
//! prompt template and `"format": "expression"` a condition expression (the registry derives
//! [`NodeKindInfo::template_keys`](super::NodeKindInfo::template_keys) and
//! [`NodeKindInfo::expression_keys`](super::NodeKindInfo::expression_keys) from them), and
//! `"deprecated": true` with `"x-replaced-by": "<key>"` marks an old name of a key.

use serde_json::{Map, Value, json};

/// The identifier pattern of variable names (`[A-Za-z_][A-Za-z0-9_]*`, anchored).
pub const IDENTIFIER_PATTERN: &str = "^[A-Za-z_][A-Za-z0-9_]*$";

/// The JSON Schema of one config value, built step by step.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct PropertySchema(Map<String, Value>);

impl PropertySchema {
    fn with_type(ty: &str) -> PropertySchema {
        let mut map = Map::new();
        map.insert("type".into(), Value::from(ty));
        PropertySchema(map)
    }

    /// Any JSON value (no `type`).
    pub fn any() -> PropertySchema {
        PropertySchema(Map::new())
    }

    /// A string.
    pub fn string() -> PropertySchema {
        PropertySchema::with_type("string")
    }

    /// A prompt template (a string, `"format": "template"`).
    pub fn template() -> PropertySchema {
        PropertySchema::string().set("format", "template")
    }

    /// A condition expression (a string, `"format": "expression"`).
    pub fn expression() -> PropertySchema {
        PropertySchema::string().set("format", "expression")
    }

    /// An integer (a JSON number written without fraction or exponent).
    pub fn integer() -> PropertySchema {
        PropertySchema::with_type("integer")
    }

    /// A number.
    pub fn number() -> PropertySchema {
        PropertySchema::with_type("number")
    }

    /// A boolean.
    pub fn boolean() -> PropertySchema {
        PropertySchema::with_type("boolean")
    }

    /// An object; add members with [`PropertySchema::property`].
    pub fn object() -> PropertySchema {
        PropertySchema::with_type("object")
    }

    /// An array whose items all match `items`.
    pub fn array(items: PropertySchema) -> PropertySchema {
        PropertySchema::with_type("array").set("items", items.into_value())
    }

    /// A value of one of several JSON types (`["string", "null"]`).
    pub fn types(types: &[&str]) -> PropertySchema {
        let mut map = Map::new();
        map.insert("type".into(), json!(types));
        PropertySchema(map)
    }

    /// A string that must be one of `values`.
    pub fn string_enum(values: &[&str]) -> PropertySchema {
        PropertySchema::string().set("enum", json!(values))
    }

    /// Sets any keyword.
    pub fn set(mut self, keyword: &str, value: impl Into<Value>) -> PropertySchema {
        self.0.insert(keyword.to_owned(), value.into());
        self
    }

    /// `minimum` (inclusive).
    pub fn min(self, min: impl Into<Value>) -> PropertySchema {
        self.set("minimum", min)
    }

    /// `maximum` (inclusive).
    pub fn max(self, max: impl Into<Value>) -> PropertySchema {
        self.set("maximum", max)
    }

    /// `minimum` and `maximum` (both inclusive).
    pub fn range(self, min: impl Into<Value>, max: impl Into<Value>) -> PropertySchema {
        self.min(min).max(max)
    }

    /// `exclusiveMinimum`.
    pub fn exclusive_min(self, min: impl Into<Value>) -> PropertySchema {
        self.set("exclusiveMinimum", min)
    }

    /// `minLength` (characters).
    pub fn min_length(self, n: u64) -> PropertySchema {
        self.set("minLength", n)
    }

    /// `maxLength` (characters).
    pub fn max_length(self, n: u64) -> PropertySchema {
        self.set("maxLength", n)
    }

    /// `minItems`.
    pub fn min_items(self, n: u64) -> PropertySchema {
        self.set("minItems", n)
    }

    /// `maxItems`.
    pub fn max_items(self, n: u64) -> PropertySchema {
        self.set("maxItems", n)
    }

    /// `pattern` (a regular expression of the `regex` crate; anchor it with `^...$`).
    pub fn pattern(self, pattern: &str) -> PropertySchema {
        self.set("pattern", pattern)
    }

    /// `enum`: the allowed values.
    pub fn one_of(self, values: impl Into<Value>) -> PropertySchema {
        self.set("enum", values)
    }

    /// `default`.
    pub fn default(self, value: impl Into<Value>) -> PropertySchema {
        self.set("default", value)
    }

    /// `description`.
    pub fn describe(self, text: &str) -> PropertySchema {
        self.set("description", text)
    }

    /// `x-member-of`: a string that must be one of the strings of the sibling array `key` (or
    /// of its default when it is absent).
    pub fn member_of(self, key: &str) -> PropertySchema {
        self.set("x-member-of", key)
    }

    /// `x-at-most`: a number that must not exceed the sibling number `key` (when present).
    pub fn at_most_key(self, key: &str) -> PropertySchema {
        self.set("x-at-most", key)
    }

    /// Marks this key as the old name of `replaced_by` (`deprecated`, `x-replaced-by`).
    pub fn old_name_of(self, replaced_by: &str) -> PropertySchema {
        self.set("deprecated", true)
            .set("x-replaced-by", replaced_by)
    }

    /// Adds a member to an object schema (`properties`).
    pub fn property(mut self, name: &str, schema: PropertySchema) -> PropertySchema {
        let props = self
            .0
            .entry("properties")
            .or_insert_with(|| Value::Object(Map::new()));
        if let Value::Object(props) = props {
            props.insert(name.to_owned(), schema.into_value());
        }
        self
    }

    /// Adds keys to `required`.
    pub fn required(mut self, keys: &[&str]) -> PropertySchema {
        let required = self
            .0
            .entry("required")
            .or_insert_with(|| Value::Array(Vec::new()));
        if let Value::Array(required) = required {
            required.extend(keys.iter().map(|k| Value::from(*k)));
        }
        self
    }

    /// Requires at least one of `keys` (`anyOf` of `required` sets).
    pub fn required_one_of(self, keys: &[&str]) -> PropertySchema {
        let sets: Vec<Value> = keys.iter().map(|k| json!({"required": [k]})).collect();
        self.set("anyOf", sets)
    }

    /// `additionalProperties: false`: keys not listed are reported as unknown.
    pub fn closed(self) -> PropertySchema {
        self.set("additionalProperties", false)
    }

    /// `additionalProperties`: every other member must match `schema`.
    pub fn additional(self, schema: PropertySchema) -> PropertySchema {
        self.set("additionalProperties", schema.into_value())
    }

    /// The schema as a JSON value.
    pub fn into_value(self) -> Value {
        Value::Object(self.0)
    }

    /// The schema as a JSON object.
    pub fn into_map(self) -> Map<String, Value> {
        self.0
    }
}

impl From<PropertySchema> for Value {
    fn from(schema: PropertySchema) -> Value {
        schema.into_value()
    }
}

/// The `retry` policy object of every kind, with its defaults.
pub fn retry_schema() -> PropertySchema {
    let retry_on = [
        "timeout",
        "rate_limit",
        "server",
        "connection",
        "tool",
        "model",
        "any",
    ];
    let default_retry_on = ["timeout", "rate_limit", "server", "connection"];
    PropertySchema::object()
        .describe(
            "Retry policy: attempts, exponential backoff with jitter, which errors are retried.",
        )
        .property(
            "max_attempts",
            PropertySchema::integer()
                .range(1, 20)
                .default(1)
                .describe("Attempts in all, the first included (1 = no retry)."),
        )
        .property(
            "backoff_ms",
            PropertySchema::integer()
                .range(0, 600_000)
                .default(500)
                .describe("Wait before the first retry, in milliseconds."),
        )
        .property(
            "max_backoff_ms",
            PropertySchema::integer()
                .range(0, 3_600_000)
                .default(30_000)
                .describe("Longest wait between attempts, in milliseconds."),
        )
        .property(
            "multiplier",
            PropertySchema::number()
                .range(1, 10)
                .default(2)
                .describe("Factor applied to the wait after each retry."),
        )
        .property(
            "jitter",
            PropertySchema::boolean()
                .default(true)
                .describe("Randomise each wait (full jitter) so retries do not synchronise."),
        )
        .property(
            "retry_on",
            PropertySchema::array(PropertySchema::string_enum(&retry_on))
                .default(json!(default_retry_on))
                .describe("Error classes that are retried."),
        )
        .closed()
        .default(json!({
            "max_attempts": 1,
            "backoff_ms": 500,
            "max_backoff_ms": 30_000,
            "multiplier": 2,
            "jitter": true,
            "retry_on": default_retry_on,
        }))
}

/// The keys every kind accepts (`join`, `on_error`, `timeout_ms`, `retry`, `description`), as
/// `(name, schema)` in documentation order.
pub fn common_properties() -> Vec<(&'static str, PropertySchema)> {
    vec![
        (
            "join",
            PropertySchema::string_enum(&["all", "any"])
                .default("all")
                .describe(
                    "With several in-edges: `all` waits for every in-edge that can still be taken, \
                     `any` runs at the first taken one.",
                ),
        ),
        (
            "on_error",
            PropertySchema::string_enum(&["fail", "continue"])
                .default("fail")
                .describe(
                    "What a failure does when no `error` edge or `error_handler` catches it: \
                     `fail` the execution, or record it in `errors` and `continue`.",
                ),
        ),
        (
            "timeout_ms",
            PropertySchema::integer()
                .range(1, 3_600_000)
                .default(60_000)
                .describe("Longest time one attempt of the node may take, in milliseconds."),
        ),
        ("retry", retry_schema()),
        (
            "description",
            PropertySchema::string().describe("Free text for the author; ignored by the engine."),
        ),
    ]
}

/// The names of the common keys.
pub const COMMON_KEYS: &[&str] = &["join", "on_error", "timeout_ms", "retry", "description"];
