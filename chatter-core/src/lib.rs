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
pub mod definition;
pub mod error;
pub mod expr;
pub mod registry;
pub mod store;
pub mod validate;

pub use definition::{
    Branch, Edge, EdgeId, JoinMode, NodeId, NodeKind, NodeSpec, Shape, WorkflowBuilder,
    WorkflowDefinition,
};
pub use error::{Error, Format, Result};
pub use validate::{
    Severity, ValidationIssue, ValidationReport, ValidatorConfig, WorkflowValidator,
};
