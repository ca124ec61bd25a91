//! Tools: the [`Tool`] trait, the context a call gets (with its idempotency key), and the registry.

use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock};

use crate::cancel::CancelToken;
use async_trait::async_trait;
use serde_json::Value;

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
    pub cancel: CancelToken,
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

    /// [`Tool::call`] with the arguments borrowed: what the `tool` node calls (the model's
    /// arguments stay in the conversation). The default copies them for `call`; a tool that
    /// only reads them (the Python binding's, which converts them) overrides this and saves
    /// the copy.
    ///
    /// # Errors
    ///
    /// As [`Tool::call`].
    async fn call_borrowed(&self, arguments: &Value, context: &ToolContext) -> Result<Value> {
        self.call(arguments.clone(), context).await
    }
}

/// Tools by name.
#[derive(Clone, Default)]
pub struct ToolRegistry {
    tools: BTreeMap<String, Arc<dyn Tool>>,
    /// The specs of `tools`, in the same order, read at the first [`ToolRegistry::specs`]
    /// after a registration.
    specs: OnceLock<Arc<[ToolSpec]>>,
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
        self.specs = OnceLock::new();
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

    /// Specs of every tool, by name: one shared list, read from the tools at the first call
    /// after a registration and handed out until the next.
    pub fn specs(&self) -> Arc<[ToolSpec]> {
        self.specs
            .get_or_init(|| self.tools.values().map(|t| t.spec()).collect())
            .clone()
    }

    /// Names of every tool.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.tools.keys().map(String::as_str)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    struct Named(&'static str, &'static str);

    #[async_trait]
    impl Tool for Named {
        fn spec(&self) -> ToolSpec {
            ToolSpec {
                name: self.0.into(),
                description: self.1.into(),
                parameters: json!({"type": "object"}),
            }
        }

        async fn call(&self, arguments: Value, _context: &ToolContext) -> Result<Value> {
            Ok(json!({"tool": self.0, "got": arguments}))
        }
    }

    #[tokio::test]
    async fn a_borrowed_call_is_the_call_by_default() {
        let ctx = ToolContext {
            idempotency_key: "k".into(),
            execution_id: "e".into(),
            node_id: "n".into(),
            iteration: 0,
            attempt: 1,
            call_id: "c".into(),
            cancel: CancelToken::new(),
        };
        let tool = Named("search", "finds");
        let args = json!({"q": "x"});
        assert_eq!(
            tool.call_borrowed(&args, &ctx).await.unwrap(),
            json!({"tool": "search", "got": {"q": "x"}})
        );
    }

    fn described(specs: &[ToolSpec]) -> Vec<(&str, &str)> {
        specs
            .iter()
            .map(|s| (s.name.as_str(), s.description.as_str()))
            .collect()
    }

    #[test]
    fn specs_are_by_name_shared_until_a_registration_and_replaced_with_their_tool() {
        let mut registry = ToolRegistry::new();
        assert!(registry.specs().is_empty());
        registry.register(Arc::new(Named("search", "old")));
        registry.register(Arc::new(Named("add", "adds")));
        let first = registry.specs();
        assert_eq!(described(&first), [("add", "adds"), ("search", "old")]);
        assert!(Arc::ptr_eq(&first, &registry.specs()));

        registry.register(Arc::new(Named("search", "new")));
        let second = registry.specs();
        assert!(!Arc::ptr_eq(&first, &second));
        assert_eq!(described(&second), [("add", "adds"), ("search", "new")]);
        assert_eq!(
            registry.get("search").map(|t| t.spec().description).ok(),
            Some("new".to_owned())
        );
        assert_eq!(described(&first), [("add", "adds"), ("search", "old")]);
        assert_eq!(registry.names().collect::<Vec<_>>(), ["add", "search"]);

        // A copy made before the specs were read reads them on its own, the same.
        registry.register(Arc::new(Named("zap", "zaps")));
        let copy = registry.clone();
        assert_eq!(described(&copy.specs()), described(&registry.specs()));
        assert_eq!(copy.specs().len(), 3);
        // A copy made after the specs were read shares them.
        assert!(Arc::ptr_eq(&registry.clone().specs(), &registry.specs()));
    }
}
