//! The execution engine: a dataflow scheduler over a validated definition (DESIGN §5).
//!
//! INTERFACE STUB: `node.rs` is the contract node authors and the built-in nodes code against;
//! the scheduler is filled by the engine work.

mod node;

pub use node::{
    Clock, DefinitionResolver, DiscardEvents, Node, NodeContext, NodeFactory, NodeFailure,
    NodeOutput, Route, Services, SubgraphOutcome, SubgraphRunner, SystemClock,
};
