//! The node kind registry: metadata and config schema of every node kind (DESIGN §4).
//!
//! INTERFACE STUB: the signatures below are the contract; the bodies are filled by the
//! registry work.

use serde_json::{Map, Value};

/// What kind of problem a config check found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ConfigIssueKind {
    /// A value has the wrong JSON type.
    WrongType,
    /// A number is outside its range (or a string/array outside its length bounds).
    OutOfRange,
    /// A value is not one of the allowed values.
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

/// Metadata of one node kind.
#[derive(Debug, Clone, PartialEq)]
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
}

impl NodeKindInfo {
    /// Checks a config against the schema.
    pub fn check_config(&self, config: &Map<String, Value>) -> Vec<ConfigIssue> {
        let _ = config;
        Vec::new()
    }
}

/// The kinds a validator and an engine know.
#[derive(Debug, Clone, Default)]
pub struct NodeRegistry {
    kinds: Vec<NodeKindInfo>,
}

impl NodeRegistry {
    /// The built-in kinds of DESIGN §4.
    pub fn builtin() -> NodeRegistry {
        NodeRegistry::default()
    }

    /// Adds (or replaces) a kind.
    pub fn register(&mut self, info: NodeKindInfo) {
        self.kinds.retain(|k| k.kind != info.kind);
        self.kinds.push(info);
    }

    /// A kind by canonical name or alias.
    pub fn get(&self, kind: &str) -> Option<&NodeKindInfo> {
        self.kinds
            .iter()
            .find(|k| k.kind == kind || k.aliases.iter().any(|a| a == kind))
    }

    /// Every kind, in registration order.
    pub fn kinds(&self) -> impl Iterator<Item = &NodeKindInfo> {
        self.kinds.iter()
    }
}
