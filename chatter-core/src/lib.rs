//! # chatter-core
//!
//! The embeddable engine of Chatter, for LLM chat workflows: the definition model, the
//! validator, expressions and prompt templates, and static analytics of a graph.
//!
//! ```
//! use chatter_core::{WorkflowDefinition, WorkflowValidator};
//!
//! let def = WorkflowDefinition::from_json(r#"{
//!   "nodes": [
//!     {"id": "start", "type": "start"},
//!     {"id": "chat", "type": "llm", "config": {"system_prompt": "You are helpful."}},
//!     {"id": "end", "type": "end"}
//!   ],
//!   "edges": [
//!     {"source": "start", "target": "chat"},
//!     {"source": "chat", "target": "end"}
//!   ]
//! }"#)?;
//! let report = WorkflowValidator::default().validate(&def);
//! assert!(report.is_valid(), "{report:?}");
//! # Ok::<(), chatter_core::Error>(())
//! ```

pub mod analytics;
mod cancel;
pub mod definition;
pub mod engine;
pub mod error;
pub mod event;
pub mod expr;
pub mod failpoint;
mod graph;
pub mod model;
pub mod nodes;
mod object;
pub mod orchestration;
pub mod providers;
pub mod registry;
pub mod retriever;
pub mod state;
pub mod store;
pub mod templates;
pub mod time;
pub mod tool;
pub mod tools;
pub mod tracker;
pub mod validate;

pub use cancel::CancelToken;
pub use definition::{
    Branch, Edge, EdgeId, JoinMode, NodeId, NodeKind, NodeSpec, Shape, WorkflowBuilder,
    WorkflowDefinition,
};
pub use engine::{
    Engine, ExecutionHandle, ExecutionResult, ExecutionStatus, Limits, Node, NodeContext,
    NodeOutput, NodeRun, NodeRunStatus, OutputValue, Route, RunOptions, Services,
};
pub use error::{Error, ErrorClass, Format, Result};
pub use event::{Event, EventKind};
pub use model::{
    ChatModel, ChatRequest, ChatResponse, Message, ModelRegistry, Role, ToolCall, Usage,
};
pub use retriever::{ContextChunk, Retriever, RetrieverRegistry};
pub use state::{State, StateDelta, VariableOp};
pub use tool::{Tool, ToolContext, ToolRegistry, ToolSpec};
pub use validate::{
    Severity, ValidationIssue, ValidationReport, ValidatorConfig, WorkflowValidator,
};
