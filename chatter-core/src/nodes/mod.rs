//! The built-in node kinds of DESIGN §4, one module per kind.
//!
//! Every kind has a typed config (parsed and checked once, when the engine builds the node, with
//! the defaults of the config contract), a [`NodeFactory`] that builds it, and documents what it
//! reads from the state and what it writes (its [`crate::StateDelta`]). Expressions and prompt
//! templates are compiled once, at build time.
//!
//! | kind | factory | module |
//! |---|---|---|
//! | `start` | [`StartFactory`] | [`start`] |
//! | `end` | [`EndFactory`] | [`end`] |
//! | `llm` | [`LlmFactory`] | [`llm`] |
//! | `tool` | [`ToolFactory`] | [`tool`] |
//! | `retrieval` | [`RetrievalFactory`] | [`retrieval`] |
//! | `memory` | [`MemoryFactory`] | [`memory`] |
//! | `conditional` | [`ConditionalFactory`] | [`conditional`] |
//! | `loop` | [`LoopFactory`] | `loop` (`nodes::r#loop`) |
//! | `variable` | [`VariableFactory`] | [`variable`] |
//! | `error_handler` | [`ErrorHandlerFactory`] | [`error_handler`] |
//! | `delay` | [`DelayFactory`] | [`delay`] |
//! | `map` | [`MapFactory`] | [`map`] |
//! | `subworkflow` | [`SubworkflowFactory`] | [`subworkflow`] |
//!
//! Kind aliases (`model`, `execute_tools`, `errorHandler`, ...) are resolved by the definition
//! reader, so only canonical kinds are registered.
//!
//! ```
//! use std::sync::Arc;
//! use chatter_core::engine::NodeFactory;
//!
//! let mut kinds: Vec<String> = Vec::new();
//! chatter_core::nodes::register_builtins(&mut |kind: &str, _factory: Arc<dyn NodeFactory>| {
//!     kinds.push(kind.to_owned());
//! });
//! assert!(kinds.iter().any(|k| k == "llm"));
//! assert!(kinds.iter().any(|k| k == "loop"));
//! ```

use std::sync::Arc;

use crate::definition::{NodeSpec, WorkflowDefinition};
use crate::engine::{Node, NodeFactory};
use crate::error::Result;

mod common;
#[cfg(test)]
mod testing;

pub mod approval;
pub mod conditional;
pub mod delay;
pub mod end;
pub mod error_handler;
pub mod llm;
pub mod r#loop;
pub mod map;
pub mod memory;
pub mod retrieval;
pub mod start;
pub mod subworkflow;
pub mod tool;
pub mod variable;

pub use approval::{ApprovalConfig, ApprovalFactory};
pub use conditional::ConditionalFactory;
pub use delay::DelayFactory;
pub use end::EndFactory;
pub use error_handler::ErrorHandlerFactory;
pub use llm::LlmFactory;
pub use r#loop::LoopFactory;
pub use map::MapFactory;
pub use memory::MemoryFactory;
pub use retrieval::RetrievalFactory;
pub use start::StartFactory;
pub use subworkflow::SubworkflowFactory;
pub use tool::ToolFactory;
pub use variable::VariableFactory;

/// Every built-in kind with its factory, as `(canonical kind, factory)`.
pub fn builtin_factories() -> Vec<(&'static str, Arc<dyn NodeFactory>)> {
    vec![
        ("start", Arc::new(start::StartFactory)),
        ("end", Arc::new(end::EndFactory)),
        ("llm", Arc::new(llm::LlmFactory)),
        ("tool", Arc::new(tool::ToolFactory)),
        ("retrieval", Arc::new(retrieval::RetrievalFactory)),
        ("memory", Arc::new(memory::MemoryFactory)),
        ("conditional", Arc::new(conditional::ConditionalFactory)),
        ("loop", Arc::new(r#loop::LoopFactory)),
        ("variable", Arc::new(variable::VariableFactory)),
        (
            "error_handler",
            Arc::new(error_handler::ErrorHandlerFactory),
        ),
        ("delay", Arc::new(delay::DelayFactory)),
        ("approval", Arc::new(approval::ApprovalFactory)),
        ("map", Arc::new(map::MapFactory)),
        ("subworkflow", Arc::new(subworkflow::SubworkflowFactory)),
    ]
}

/// Calls `register(kind, factory)` for every built-in kind (see [`builtin_factories`]).
pub fn register_builtins(register: &mut dyn FnMut(&str, Arc<dyn NodeFactory>)) {
    for (kind, factory) in builtin_factories() {
        register(kind, factory);
    }
}

/// A shared factory used where a `NodeFactory` value is wanted: it forwards both
/// [`NodeFactory::build`] and [`NodeFactory::build_in`] (wrapping an `Arc` in a closure would
/// lose `build_in`).
#[derive(Clone)]
pub struct SharedFactory(pub Arc<dyn NodeFactory>);

impl NodeFactory for SharedFactory {
    fn build(&self, spec: &NodeSpec) -> Result<Arc<dyn Node>> {
        self.0.build(spec)
    }

    fn build_in(&self, spec: &NodeSpec, definition: &WorkflowDefinition) -> Result<Arc<dyn Node>> {
        self.0.build_in(spec, definition)
    }
}

impl std::fmt::Debug for SharedFactory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SharedFactory")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_builtin_kind_is_registered_once() {
        let mut kinds = Vec::new();
        register_builtins(&mut |kind: &str, _f: Arc<dyn NodeFactory>| kinds.push(kind.to_owned()));
        assert_eq!(
            kinds,
            [
                "start",
                "end",
                "llm",
                "tool",
                "retrieval",
                "memory",
                "conditional",
                "loop",
                "variable",
                "error_handler",
                "delay",
                "approval",
                "map",
                "subworkflow"
            ]
        );
    }

    #[test]
    fn shared_factory_forwards_build_in() {
        let def = WorkflowDefinition::from_json(
            r#"{"nodes": [{"id": "c", "type": "conditional"}, {"id": "x", "type": "end"}],
                "edges": [{"source": "c", "target": "x"}]}"#,
        )
        .unwrap();
        let shared = SharedFactory(Arc::new(ConditionalFactory));
        let spec = def.node("c").unwrap();
        assert!(shared.build(spec).is_ok());
        // Only `build_in` sees that nothing routes this conditional.
        assert!(shared.build_in(spec, &def).is_err());
    }

    /// Every kind, in the editor shape with camelCase keys and old names, builds.
    #[test]
    fn editor_shaped_configs_of_every_kind_build() {
        let def = WorkflowDefinition::from_json(
            r#"{"nodes": [
              {"id": "s", "type": "start", "data": {"label": "Start", "nodeType": "start", "config": {}}},
              {"id": "m", "type": "model", "data": {"nodeType": "model", "config": {
                 "systemMessage": "Be nice.", "maxTokens": 200, "temperature": 0.7,
                 "enableTools": true, "allowedTools": ["search"], "enableStreaming": false}}},
              {"id": "t", "type": "execute_tools", "data": {"config": {
                 "maxToolCalls": 5, "toolTimeoutMs": 1000, "parallelCalls": false,
                 "repetitionDetection": "strict", "maxConsecutiveCalls": 2}}},
              {"id": "r", "type": "retrieval", "data": {"config": {
                 "retrieverName": "kb", "maxDocuments": 3, "similarityThreshold": 0.5}}},
              {"id": "mem", "type": "memory", "data": {"config": {"memoryWindow": 20, "summaryModel": "small"}}},
              {"id": "c", "type": "condition", "data": {"config": {"condition": "has_tool_calls"}}},
              {"id": "l", "type": "loop", "data": {"config": {"maxIterations": 4}}},
              {"id": "v", "type": "variable", "data": {"config": {
                 "operation": "increment", "variableName": "n"}}},
              {"id": "h", "type": "errorHandler", "data": {"config": {
                 "retryCount": 2, "fallbackAction": "clear_errors"}}},
              {"id": "d", "type": "delay", "data": {"config": {"delayType": "random", "minDelayMs": 1, "maxDelayMs": 2}}},
              {"id": "each", "type": "map", "data": {"config": {
                 "itemsPath": "input.items", "itemVariable": "doc", "maxConcurrency": 2,
                 "workflowId": "wf", "outputVariable": "out"}}},
              {"id": "sub", "type": "subWorkflow", "data": {"config": {"templateId": "tpl"}}},
              {"id": "e", "type": "end", "data": {"config": {}}}
            ], "edges": [
              {"source": "l", "target": "v", "sourceHandle": "continue"},
              {"source": "l", "target": "e", "sourceHandle": "exit"}
            ]}"#,
        )
        .unwrap();
        let factories = builtin_factories();
        for node in &def.nodes {
            let factory = &factories
                .iter()
                .find(|(kind, _)| *kind == node.kind.as_str())
                .unwrap_or_else(|| panic!("no factory for {}", node.kind))
                .1;
            if let Err(e) = factory.build_in(node, &def) {
                panic!("node {} did not build: {e}", node.id);
            }
        }
        let m = llm::LlmConfig::from_spec(def.node("m").unwrap()).unwrap();
        assert_eq!(m.max_tokens, Some(200));
        assert!(!m.stream);
        assert!(m.enable_tools);
        let t = tool::ToolConfig::from_spec(def.node("t").unwrap()).unwrap();
        assert_eq!(t.max_total_calls, 5);
        assert_eq!(t.repetition_detection, tool::RepetitionDetection::Strict);
        let r = retrieval::RetrievalConfig::from_spec(def.node("r").unwrap()).unwrap();
        assert_eq!(
            (r.retriever.as_str(), r.top_k, r.score_threshold),
            ("kb", 3, 0.5)
        );
        let each = map::MapConfig::from_spec(def.node("each").unwrap()).unwrap();
        assert_eq!(each.items.source(), "input.items");
        assert_eq!(each.item_variable, "doc");
    }
}
