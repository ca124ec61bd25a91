//! The workflow definition model: nodes, edges and metadata, read from JSON or YAML.
//!
//! One canonical model, [`WorkflowDefinition`], accepts without loss the two shapes the old
//! platform produced (DESIGN §3):
//!
//! * the editor (React-Flow) shape: node `{id, type, position, data: {label, nodeType, config}}`,
//!   edge `{id, source, target, sourceHandle, targetHandle, type, data: {condition, label}}`;
//! * the flat shape: node `{id, type, config}`, edge `{source, target, condition}`.
//!
//! Reading normalises what the engine needs (kind aliases such as `model` → `llm`, camelCase
//! config keys such as `maxTokens` → `max_tokens`, conditions in `condition` or
//! `data.condition`) and remembers how the input spelled it, so [`WorkflowDefinition::to_value`]
//! writes back exactly what was read: positions, labels, handles, unknown fields and original key
//! spellings are kept.
//!
//! ```
//! use chatter_core::definition::WorkflowDefinition;
//!
//! let def = WorkflowDefinition::from_json(r#"{
//!   "nodes": [
//!     {"id": "start", "type": "start", "position": {"x": 0, "y": 0},
//!      "data": {"label": "Start", "nodeType": "start"}},
//!     {"id": "llm", "type": "model", "position": {"x": 200, "y": 0},
//!      "data": {"label": "Chat", "nodeType": "model", "config": {"maxTokens": 300}}}
//!   ],
//!   "edges": [{"id": "e1", "source": "start", "target": "llm"}]
//! }"#)?;
//! let llm = def.node("llm").expect("node exists");
//! assert_eq!(llm.kind.as_str(), "llm");
//! assert_eq!(llm.config["max_tokens"], 300);
//! // Written back, the definition equals its input.
//! assert_eq!(def.to_value()["nodes"][1]["data"]["config"]["maxTokens"], 300);
//! # Ok::<(), chatter_core::Error>(())
//! ```

mod builder;
mod parse;
mod write;

pub use builder::WorkflowBuilder;
pub(crate) use parse::type_name as json_type_name;

use std::fmt;

use serde_json::{Map, Value};

use crate::error::{Error, Format, Result};

/// The identifier of a node, unique within a definition.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NodeId(pub String);

/// The identifier of an edge, unique within a definition.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EdgeId(pub String);

/// The canonical kind of a node (`llm`, `tool`, `conditional`, ...); aliases resolved.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NodeKind(pub String);

macro_rules! string_newtype {
    ($t:ident) => {
        impl $t {
            /// The identifier as a string slice.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }
        impl fmt::Display for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
        impl From<&str> for $t {
            fn from(s: &str) -> Self {
                $t(s.to_owned())
            }
        }
        impl From<String> for $t {
            fn from(s: String) -> Self {
                $t(s)
            }
        }
        impl PartialEq<str> for $t {
            fn eq(&self, other: &str) -> bool {
                self.0 == other
            }
        }
        impl PartialEq<&str> for $t {
            fn eq(&self, other: &&str) -> bool {
                self.0 == *other
            }
        }
        impl std::borrow::Borrow<str> for $t {
            fn borrow(&self) -> &str {
                &self.0
            }
        }
    };
}
string_newtype!(NodeId);
string_newtype!(EdgeId);
string_newtype!(NodeKind);

impl NodeKind {
    /// The canonical kind for a kind name as written, resolving the built-in aliases
    /// (`model`/`call_model` → `llm`, `tools`/`execute_tools` → `tool`, `errorHandler` →
    /// `error_handler`, ...). Unknown names are kept as written: node authors register
    /// their own kinds, and the validator reports kinds no registry knows.
    pub fn canonical(name: &str) -> NodeKind {
        NodeKind(canonical_kind_name(name).to_owned())
    }
}

/// LangGraph's terminal names, which the old platform wrote as edge endpoints: an edge to `END`
/// (or `__end__`) means "to the end node", one from `START` (or `__start__`) "from the start node".
/// The reader resolves them to the graph's single `end` / `start` node when no node has that id.
pub const END_SENTINELS: &[&str] = &["END", "__end__"];
/// See [`END_SENTINELS`].
pub const START_SENTINELS: &[&str] = &["START", "__start__"];

/// Built-in kind aliases, as `(alias, canonical)`.
pub const KIND_ALIASES: &[(&str, &str)] = &[
    ("model", "llm"),
    ("call_model", "llm"),
    ("callModel", "llm"),
    ("tools", "tool"),
    ("execute_tools", "tool"),
    ("executeTools", "tool"),
    ("errorHandler", "error_handler"),
    ("condition", "conditional"),
    ("mapNode", "map"),
    ("subWorkflow", "subworkflow"),
    ("sub_workflow", "subworkflow"),
];

/// Resolves a built-in kind alias; returns the input when it is not an alias.
pub fn canonical_kind_name(name: &str) -> &str {
    KIND_ALIASES
        .iter()
        .find(|(alias, _)| *alias == name)
        .map_or(name, |(_, canonical)| canonical)
}

/// Config keys the editor writes in camelCase, as `(camelCase, snake_case)`.
///
/// Reading maps the left spelling to the right one; writing restores the spelling of the input.
pub const CONFIG_KEY_ALIASES: &[(&str, &str)] = &[
    ("systemMessage", "system_message"),
    ("systemPrompt", "system_prompt"),
    ("maxTokens", "max_tokens"),
    ("maxIterations", "max_iterations"),
    ("variableName", "variable_name"),
    ("retryCount", "retry_count"),
    ("fallbackAction", "fallback_action"),
    ("topK", "top_k"),
    ("maxDocuments", "max_documents"),
    ("scoreThreshold", "score_threshold"),
    ("similarityThreshold", "similarity_threshold"),
    ("memoryWindow", "memory_window"),
    ("windowSize", "window_size"),
    ("summaryModel", "summary_model"),
    ("summarizeOlder", "summarize_older"),
    ("maxToolCalls", "max_tool_calls"),
    ("maxTotalCalls", "max_total_calls"),
    ("maxConsecutiveCalls", "max_consecutive_calls"),
    ("toolTimeoutMs", "tool_timeout_ms"),
    ("allowedTools", "allowed_tools"),
    ("parallelCalls", "parallel_calls"),
    ("repetitionDetection", "repetition_detection"),
    ("enableTools", "enable_tools"),
    ("enableStreaming", "enable_streaming"),
    ("delayType", "delay_type"),
    ("delayMs", "delay_ms"),
    ("minDelayMs", "min_delay_ms"),
    ("maxDelayMs", "max_delay_ms"),
    ("baseDelayMs", "base_delay_ms"),
    ("retrieverName", "retriever"),
    ("onError", "on_error"),
    ("timeoutMs", "timeout_ms"),
    ("retryPolicy", "retry"),
    ("maxAttempts", "max_attempts"),
    ("backoffMs", "backoff_ms"),
    ("maxConcurrency", "max_concurrency"),
    ("itemsPath", "items"),
    ("itemVariable", "item_variable"),
    ("workflowId", "workflow_id"),
    ("templateId", "template_id"),
    ("allowedHosts", "allowed_hosts"),
    ("allowedDecisions", "allowed_decisions"),
    ("timeoutAction", "timeout_action"),
    ("outputVariable", "output_variable"),
    ("clientTools", "client_tools"),
    ("errorTypes", "error_types"),
];

/// The snake_case spelling of a config key (`maxTokens` → `max_tokens`); other keys unchanged.
pub fn canonical_config_key(key: &str) -> &str {
    CONFIG_KEY_ALIASES
        .iter()
        .find(|(camel, _)| *camel == key)
        .map_or(key, |(_, snake)| snake)
}

/// Which of the old platform's shapes an element was read in; writing uses the same shape.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Shape {
    /// React-Flow editor shape (`data: {label, nodeType, config}`).
    #[default]
    Editor,
    /// Flat shape (`{id, type, config}` / `{source, target, condition}`).
    Flat,
}

/// Where an edge's condition was written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum ConditionSite {
    /// `edge.condition`.
    #[default]
    TopLevel,
    /// `edge.data.condition`.
    Data,
}

/// One node of a workflow graph.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeSpec {
    /// Unique id.
    pub id: NodeId,
    /// Canonical kind (aliases resolved).
    pub kind: NodeKind,
    /// Config with canonical (snake_case) keys. An absent config reads as an empty map.
    pub config: Map<String, Value>,
    /// Display label (`data.label` in the editor shape, `label` in the flat shape).
    pub label: Option<String>,
    /// Editor position, kept verbatim (`{"x": .., "y": ..}`).
    pub position: Option<Value>,
    /// How the input was spelled, so writing back is lossless.
    pub(crate) source: NodeSource,
}

/// Bookkeeping of how a node was written, so that writing it back changes nothing.
#[derive(Debug, Clone, PartialEq, Default)]
pub(crate) struct NodeSource {
    pub(crate) shape: Shape,
    /// The node object as read; `None` for nodes built in code. Writing patches only the fields
    /// that changed since, so unknown fields, `null`s and key order survive.
    pub(crate) raw: Option<Map<String, Value>>,
    /// Original spelling of config keys that were normalised: canonical → as written.
    pub(crate) key_spelling: Vec<(String, String)>,
}

impl NodeSpec {
    /// A node with the given id, kind (aliases resolved) and config (keys normalised).
    pub fn new(id: impl Into<String>, kind: &str, config: Map<String, Value>) -> NodeSpec {
        let mut node = NodeSpec {
            id: NodeId(id.into()),
            kind: NodeKind::canonical(kind),
            config: Map::new(),
            label: None,
            position: None,
            source: NodeSource::default(),
        };
        for (key, value) in config {
            node.set_config(&key, value);
        }
        node
    }

    /// The kind as the input wrote it (`model`, `errorHandler`, ...), or the canonical kind.
    pub fn kind_as_written(&self) -> &str {
        let raw = self.source.raw.as_ref();
        raw.and_then(|r| r.get("data"))
            .and_then(|d| d.get("nodeType"))
            .or_else(|| raw.and_then(|r| r.get("type")))
            .and_then(Value::as_str)
            .filter(|written| NodeKind::canonical(written) == self.kind)
            .unwrap_or(self.kind.as_str())
    }

    /// The shape this node was read in (and will be written in).
    pub fn shape(&self) -> Shape {
        self.source.shape
    }

    /// The label, or the id when there is none.
    pub fn display_name(&self) -> &str {
        self.label.as_deref().unwrap_or(self.id.as_str())
    }

    /// A config value by canonical key.
    pub fn config_value(&self, key: &str) -> Option<&Value> {
        self.config.get(canonical_config_key(key))
    }

    /// Sets a config value; a camelCase key is stored under its snake_case spelling and written
    /// back as given.
    pub fn set_config(&mut self, key: &str, value: Value) {
        let canonical = canonical_config_key(key);
        if canonical != key {
            self.source
                .key_spelling
                .retain(|(c, _)| c.as_str() != canonical);
            self.source
                .key_spelling
                .push((canonical.to_owned(), key.to_owned()));
        }
        self.config.insert(canonical.to_owned(), value);
    }

    /// The config key as the input spelled it.
    pub fn config_key_as_written<'a>(&'a self, canonical: &'a str) -> &'a str {
        self.source
            .key_spelling
            .iter()
            .find(|(c, _)| c == canonical)
            .map_or(canonical, |(_, written)| written.as_str())
    }

    /// The join mode (`join: all` by default, or `any`), read from the config.
    pub fn join(&self) -> JoinMode {
        match self.config.get("join").and_then(Value::as_str) {
            Some("any") => JoinMode::Any,
            _ => JoinMode::All,
        }
    }
}

/// How a node with several in-edges waits for them (DESIGN §5).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum JoinMode {
    /// Run when every in-edge that can still be taken is resolved and one was taken.
    #[default]
    All,
    /// Run at the first taken in-edge.
    Any,
}

/// One edge of a workflow graph.
#[derive(Debug, Clone, PartialEq)]
pub struct Edge {
    /// Unique id (generated as `e<index>` when the input has none; not written back then).
    pub id: EdgeId,
    /// Source node.
    pub source: NodeId,
    /// Target node.
    pub target: NodeId,
    /// The condition expression as written (old phrases are translated when compiled).
    pub condition: Option<String>,
    /// The source handle: a branch name (`true`, `false`, `error`) or an editor port.
    pub source_handle: Option<String>,
    /// The target handle (editor port).
    pub target_handle: Option<String>,
    /// Display label (`data.label`).
    pub label: Option<String>,
    /// How the input was spelled.
    pub(crate) source_info: EdgeSource,
}

#[derive(Debug, Clone, PartialEq, Default)]
pub(crate) struct EdgeSource {
    pub(crate) shape: Shape,
    pub(crate) id_generated: bool,
    /// A LangGraph sentinel (`START`/`__start__`, `END`/`__end__`) written as the source or
    /// target, resolved to the graph's single `start`/`end` node: `(as written, resolved id)`.
    pub(crate) source_alias: Option<(String, NodeId)>,
    /// As `source_alias`, for the target.
    pub(crate) target_alias: Option<(String, NodeId)>,
    pub(crate) condition_site: ConditionSite,
    /// The edge object as read; `None` for edges built in code.
    pub(crate) raw: Option<Map<String, Value>>,
}

impl Edge {
    /// An unconditional edge.
    pub fn new(
        id: impl Into<String>,
        source: impl Into<String>,
        target: impl Into<String>,
    ) -> Edge {
        Edge {
            id: EdgeId(id.into()),
            source: NodeId(source.into()),
            target: NodeId(target.into()),
            condition: None,
            source_handle: None,
            target_handle: None,
            label: None,
            source_info: EdgeSource::default(),
        }
    }

    /// The branch this edge leaves its source by: `true`, `false` or `error`, from
    /// `sourceHandle`; `None` for an ordinary edge.
    pub fn branch(&self) -> Option<Branch> {
        match self.source_handle.as_deref()? {
            "true" => Some(Branch::True),
            "false" => Some(Branch::False),
            "error" => Some(Branch::Error),
            _ => None,
        }
    }

    /// The condition, when there is a non-blank one.
    pub fn condition(&self) -> Option<&str> {
        self.condition.as_deref().filter(|c| !c.trim().is_empty())
    }

    /// Whether the edge is taken only under a condition (a condition, or a `true`/`false` branch).
    pub fn is_conditional(&self) -> bool {
        self.condition().is_some() || matches!(self.branch(), Some(Branch::True | Branch::False))
    }

    /// The endpoint names as written, when a LangGraph sentinel (`END`, `START`) was resolved to
    /// a node: `(source as written, target as written)`.
    pub fn endpoints_as_written(&self) -> (&str, &str) {
        (
            self.source_info
                .source_alias
                .as_ref()
                .map_or(self.source.as_str(), |(w, _)| w.as_str()),
            self.source_info
                .target_alias
                .as_ref()
                .map_or(self.target.as_str(), |(w, _)| w.as_str()),
        )
    }

    /// The edge `type` field as written (`default`, `smoothstep`, ...).
    pub fn edge_type(&self) -> Option<&str> {
        self.source_info
            .raw
            .as_ref()
            .and_then(|r| r.get("type"))
            .and_then(Value::as_str)
    }

    /// The shape this edge was read in (and will be written in).
    pub fn shape(&self) -> Shape {
        self.source_info.shape
    }
}

/// The named branches an edge can leave a node by (`sourceHandle`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Branch {
    /// Taken when a conditional node's expression is true.
    True,
    /// Taken when a conditional node's expression is false.
    False,
    /// Taken when the source node fails.
    Error,
}

/// A workflow graph: nodes, edges, metadata, and any other top-level fields of the document.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct WorkflowDefinition {
    /// Nodes in document order.
    pub nodes: Vec<NodeSpec>,
    /// Edges in document order (the order in which conditional edges are tried).
    pub edges: Vec<Edge>,
    /// The `metadata` object (empty when absent).
    pub metadata: Map<String, Value>,
    /// Other top-level fields (`name`, `description`, `tags`, ...), in input order.
    pub extra: Map<String, Value>,
    /// Whether `metadata` was present in the input.
    pub(crate) had_metadata: bool,
    /// Top-level keys in input order, so writing keeps the order.
    pub(crate) key_order: Vec<String>,
}

impl WorkflowDefinition {
    /// Reads a definition from JSON text.
    ///
    /// # Errors
    ///
    /// [`Error::Parse`] (with line and column) for malformed JSON, duplicate keys or nesting
    /// deeper than 128 levels; [`Error::Definition`] when the document is not a definition.
    pub fn from_json(text: &str) -> Result<WorkflowDefinition> {
        let value = parse::json_value(text)?;
        WorkflowDefinition::from_value(&value)
    }

    /// Reads a definition from YAML text.
    ///
    /// # Errors
    ///
    /// As [`WorkflowDefinition::from_json`], for YAML.
    pub fn from_yaml(text: &str) -> Result<WorkflowDefinition> {
        let value = parse::yaml_value(text)?;
        WorkflowDefinition::from_value(&value)
    }

    /// Reads a definition from text in the given format.
    ///
    /// # Errors
    ///
    /// As [`WorkflowDefinition::from_json`].
    pub fn parse(text: &str, format: Format) -> Result<WorkflowDefinition> {
        match format {
            Format::Json => WorkflowDefinition::from_json(text),
            Format::Yaml => WorkflowDefinition::from_yaml(text),
        }
    }

    /// Reads a definition from a file, choosing YAML for `.yaml`/`.yml` and JSON otherwise.
    ///
    /// # Errors
    ///
    /// [`Error::Io`] when the file cannot be read, else as [`WorkflowDefinition::from_json`].
    pub fn load(path: impl AsRef<std::path::Path>) -> Result<WorkflowDefinition> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|e| Error::Io {
            path: path.display().to_string(),
            message: e.to_string(),
        })?;
        WorkflowDefinition::parse(&text, Format::from_path(path))
    }

    /// Reads a definition from a JSON value (already parsed).
    ///
    /// # Errors
    ///
    /// [`Error::Definition`] with the JSON path of the first value of the wrong type.
    pub fn from_value(value: &Value) -> Result<WorkflowDefinition> {
        parse::definition(value)
    }

    /// Writes the definition as a JSON value, in the shape and spelling it was read in.
    pub fn to_value(&self) -> Value {
        write::definition(self)
    }

    /// Writes the definition as pretty-printed JSON.
    pub fn to_json_pretty(&self) -> String {
        // Serialising a `Value` cannot fail.
        serde_json::to_string_pretty(&self.to_value()).unwrap_or_default()
    }

    /// Writes the definition as YAML.
    ///
    /// # Errors
    ///
    /// [`Error::Definition`] if the YAML emitter refuses a value (not expected for JSON values).
    pub fn to_yaml(&self) -> Result<String> {
        serde_norway::to_string(&self.to_value()).map_err(|e| Error::Definition {
            path: "$".into(),
            message: format!("cannot write YAML: {e}"),
        })
    }

    /// The node with this id.
    pub fn node(&self, id: &str) -> Option<&NodeSpec> {
        self.nodes.iter().find(|n| n.id.as_str() == id)
    }

    /// The node with this id, mutably.
    pub fn node_mut(&mut self, id: &str) -> Option<&mut NodeSpec> {
        self.nodes.iter_mut().find(|n| n.id.as_str() == id)
    }

    /// The edge with this id.
    pub fn edge(&self, id: &str) -> Option<&Edge> {
        self.edges.iter().find(|e| e.id.as_str() == id)
    }

    /// Edges leaving `node`, in document order.
    pub fn out_edges<'a>(&'a self, node: &'a str) -> impl Iterator<Item = &'a Edge> + 'a {
        self.edges.iter().filter(move |e| e.source.as_str() == node)
    }

    /// Edges entering `node`, in document order.
    pub fn in_edges<'a>(&'a self, node: &'a str) -> impl Iterator<Item = &'a Edge> + 'a {
        self.edges.iter().filter(move |e| e.target.as_str() == node)
    }

    /// The `name` field, when present.
    pub fn name(&self) -> Option<&str> {
        self.extra.get("name").and_then(Value::as_str)
    }

    /// The `description` field, when present.
    pub fn description(&self) -> Option<&str> {
        self.extra.get("description").and_then(Value::as_str)
    }
}

impl Format {
    /// YAML for `.yaml`/`.yml` paths, JSON otherwise.
    pub fn from_path(path: &std::path::Path) -> Format {
        match path.extension().and_then(|e| e.to_str()) {
            Some(ext) if ext.eq_ignore_ascii_case("yaml") || ext.eq_ignore_ascii_case("yml") => {
                Format::Yaml
            }
            _ => Format::Json,
        }
    }
}

impl serde::Serialize for WorkflowDefinition {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.to_value().serialize(serializer)
    }
}

impl<'de> serde::Deserialize<'de> for WorkflowDefinition {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let value = parse::StrictValue::deserialize(deserializer)?.0;
        WorkflowDefinition::from_value(&value).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests;
