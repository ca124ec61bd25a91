//! Tools: the [`Tool`] trait, the context a call gets (with its idempotency key), and the registry.

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use crate::error::Result;
pub use crate::model::ToolSpec;

/// What a tool call knows about where it runs.
#[derive(Debug, Clone)]
pub struct ToolContext {
    /// `execution:node:iteration:attempt` — the same on a re-run after a crash, so an idempotent
    /// tool can apply its effect once.
    pub idempotency_key: String,
    /// The execution.
    pub execution_id: String,
    /// The node running the call.
    pub node_id: String,
    /// The node's iteration (0 on the first pass).
    pub iteration: u32,
    /// The node's attempt (1 on the first try).
    pub attempt: u32,
    /// The id of the model's tool call.
    pub call_id: String,
    /// Cancelled when the execution is cancelled or the call times out.
    pub cancel: CancellationToken,
}

/// A tool a model can call.
#[async_trait]
pub trait Tool: Send + Sync {
    /// Name, description and JSON-Schema parameters.
    fn spec(&self) -> ToolSpec;

    /// Runs the tool with the model's arguments.
    ///
    /// # Errors
    ///
    /// [`crate::Error::Tool`] (or any error) when the call fails; the tool node turns it into a
    /// tool result message or a node failure according to its policy.
    async fn call(&self, arguments: Value, context: &ToolContext) -> Result<Value>;
}

/// Tools by name.
#[derive(Clone, Default)]
pub struct ToolRegistry {
    tools: BTreeMap<String, Arc<dyn Tool>>,
}

impl std::fmt::Debug for ToolRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.tools.keys()).finish()
    }
}

impl ToolRegistry {
    /// An empty registry.
    pub fn new() -> ToolRegistry {
        ToolRegistry::default()
    }

    /// Registers a tool under its spec's name (replacing one of the same name).
    pub fn register(&mut self, tool: Arc<dyn Tool>) {
        self.tools.insert(tool.spec().name, tool);
    }

    /// The tool named `name`.
    ///
    /// # Errors
    ///
    /// [`crate::Error::NotFound`] for an unknown name.
    pub fn get(&self, name: &str) -> Result<Arc<dyn Tool>> {
        self.tools
            .get(name)
            .cloned()
            .ok_or_else(|| crate::model::not_found("tool", name))
    }

    /// Whether a tool has this name.
    pub fn contains(&self, name: &str) -> bool {
        self.tools.contains_key(name)
    }

    /// Specs of every tool, by name.
    pub fn specs(&self) -> Vec<ToolSpec> {
        self.tools.values().map(|t| t.spec()).collect()
    }

    /// Names of every tool.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.tools.keys().map(String::as_str)
    }
}
