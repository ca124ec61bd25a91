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

use crate::engine::NodeFactory;

mod common;
#[cfg(test)]
mod testing;

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

pub use common::ValueExpression;
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
                "map",
                "subworkflow"
            ]
        );
    }
}
