//! [`WorkflowBuilder`]: graphs constructed in code.

use serde_json::{Map, Value, json};

use super::{Branch, Edge, NodeSpec, Shape, WorkflowDefinition};
use crate::error::{Error, Result};

/// Builds a [`WorkflowDefinition`] in code.
///
/// Nodes and edges are added in order (the order in which conditional edges are tried).
/// `build` checks only what it must to produce a definition (configs are objects); run the
/// validator for everything else.
///
/// ```
/// use chatter_core::definition::{Branch, WorkflowBuilder};
/// use serde_json::json;
///
/// let def = WorkflowBuilder::new()
///     .name("triage")
///     .node("start", "start")
///     .node_with("check", "conditional", json!({"condition": "input.message is defined"}))
///     .node_with("answer", "llm", json!({"system_prompt": "Be brief."}))
///     .node("end", "end")
///     .edge("start", "check")
///     .branch("check", "answer", Branch::True)
///     .branch("check", "end", Branch::False)
///     .edge("answer", "end")
///     .build()?;
/// assert_eq!(def.nodes.len(), 4);
/// assert_eq!(def.edges[1].source_handle.as_deref(), Some("true"));
/// # Ok::<(), chatter_core::Error>(())
/// ```
#[derive(Debug, Clone, Default)]
#[must_use]
pub struct WorkflowBuilder {
    nodes: Vec<(String, String, Value, Option<String>)>,
    edges: Vec<Edge>,
    metadata: Map<String, Value>,
    extra: Map<String, Value>,
    shape: Shape,
}

impl WorkflowBuilder {
    /// An empty builder producing the editor shape (with generated positions).
    pub fn new() -> WorkflowBuilder {
        WorkflowBuilder::default()
    }

    /// Produce the flat shape (`{id, type, config}` nodes) instead of the editor shape.
    pub fn flat(mut self) -> WorkflowBuilder {
        self.shape = Shape::Flat;
        self
    }

    /// Sets the `name` field.
    pub fn name(mut self, name: impl Into<String>) -> WorkflowBuilder {
        self.extra.insert("name".into(), Value::String(name.into()));
        self
    }

    /// Sets the `description` field.
    pub fn description(mut self, description: impl Into<String>) -> WorkflowBuilder {
        self.extra
            .insert("description".into(), Value::String(description.into()));
        self
    }

    /// Sets a `metadata` entry.
    pub fn metadata(mut self, key: impl Into<String>, value: Value) -> WorkflowBuilder {
        self.metadata.insert(key.into(), value);
        self
    }

    /// Adds a node with an empty config. `kind` may be an alias (`model` → `llm`).
    pub fn node(self, id: impl Into<String>, kind: &str) -> WorkflowBuilder {
        self.node_with(id, kind, json!({}))
    }

    /// Adds a node with a config object (camelCase keys accepted).
    pub fn node_with(
        mut self,
        id: impl Into<String>,
        kind: &str,
        config: Value,
    ) -> WorkflowBuilder {
        self.nodes.push((id.into(), kind.to_owned(), config, None));
        self
    }

    /// Adds a node with a display label and a config object.
    pub fn labelled_node(
        mut self,
        id: impl Into<String>,
        kind: &str,
        label: impl Into<String>,
        config: Value,
    ) -> WorkflowBuilder {
        self.nodes
            .push((id.into(), kind.to_owned(), config, Some(label.into())));
        self
    }

    fn push_edge(&mut self, mut edge: Edge) {
        edge.source_info.shape = self.shape;
        self.edges.push(edge);
    }

    fn next_edge_id(&self) -> String {
        format!("e{}", self.edges.len() + 1)
    }

    /// Adds an unconditional edge.
    pub fn edge(mut self, source: impl Into<String>, target: impl Into<String>) -> WorkflowBuilder {
        let edge = Edge::new(self.next_edge_id(), source, target);
        self.push_edge(edge);
        self
    }

    /// Adds an edge taken when `condition` holds (an expression, or an old-platform phrase).
    pub fn edge_if(
        mut self,
        source: impl Into<String>,
        target: impl Into<String>,
        condition: impl Into<String>,
    ) -> WorkflowBuilder {
        let mut edge = Edge::new(self.next_edge_id(), source, target);
        edge.condition = Some(condition.into());
        self.push_edge(edge);
        self
    }

    /// Adds an edge leaving `source` by a named branch (`true`/`false` of a conditional node,
    /// `error` of any node).
    pub fn branch(
        mut self,
        source: impl Into<String>,
        target: impl Into<String>,
        branch: Branch,
    ) -> WorkflowBuilder {
        let mut edge = Edge::new(self.next_edge_id(), source, target);
        edge.source_handle = Some(
            match branch {
                Branch::True => "true",
                Branch::False => "false",
                Branch::Error => "error",
            }
            .to_owned(),
        );
        self.push_edge(edge);
        self
    }

    /// Builds the definition.
    ///
    /// # Errors
    ///
    /// [`Error::Definition`] when a node's config is not a JSON object.
    pub fn build(self) -> Result<WorkflowDefinition> {
        let mut nodes = Vec::with_capacity(self.nodes.len());
        for (index, (id, kind, config, label)) in self.nodes.into_iter().enumerate() {
            let config = match config {
                Value::Object(map) => map,
                Value::Null => Map::new(),
                other => {
                    return Err(Error::Definition {
                        path: format!("$.nodes[{index}].config"),
                        message: format!(
                            "node `{id}`: config must be an object, found {}",
                            super::parse::type_name(&other)
                        ),
                    });
                }
            };
            let mut node = NodeSpec::new(id, &kind, config);
            node.label = label;
            node.source.shape = self.shape;
            if self.shape == Shape::Editor {
                // A simple left-to-right layout, so the editor can open the graph.
                node.position = Some(json!({"x": (index as u64) * 220, "y": 0}));
            }
            nodes.push(node);
        }
        let mut key_order: Vec<String> = self.extra.keys().cloned().collect();
        key_order.extend(["nodes".into(), "edges".into()]);
        let had_metadata = !self.metadata.is_empty();
        if had_metadata {
            key_order.push("metadata".into());
        }
        Ok(WorkflowDefinition {
            nodes,
            edges: self.edges,
            metadata: self.metadata,
            extra: self.extra,
            had_metadata,
            key_order,
        })
    }
}
