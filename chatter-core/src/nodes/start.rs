//! The `start` node: the entry marker of a workflow.
//!
//! **Config:** none (only the common keys). **Reads:** nothing. **Writes:** nothing; it follows
//! its out-edges. Its output records the execution input.

use std::sync::Arc;

use async_trait::async_trait;

use crate::definition::NodeSpec;
use crate::engine::{Node, NodeContext, NodeFactory, NodeOutput};
use crate::error::Result;

/// Builds [`StartNode`]s.
#[derive(Debug, Clone, Copy, Default)]
pub struct StartFactory;

impl NodeFactory for StartFactory {
    fn build(&self, _spec: &NodeSpec) -> Result<Arc<dyn Node>> {
        Ok(Arc::new(StartNode))
    }
}

/// The entry marker.
#[derive(Debug, Clone, Copy, Default)]
pub struct StartNode;

#[async_trait]
impl Node for StartNode {
    /// It only computes from the state: in `sync` mode its step rides with the next write.
    fn pure(&self) -> bool {
        true
    }

    async fn run(&self, ctx: NodeContext) -> Result<NodeOutput> {
        Ok(NodeOutput {
            output: serde_json::json!({ "input": ctx.state.input() }).into(),
            ..NodeOutput::default()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::{Route, Services};
    use crate::nodes::testing::{build, context, spec};
    use crate::state::{State, StateDelta};
    use serde_json::json;

    #[tokio::test]
    async fn start_changes_nothing_and_follows_edges() {
        let s = spec("start", "start", json!({}));
        let node = build(&StartFactory, &s);
        let (ctx, events) = context(
            s,
            State::new(json!({"message": "hi"}), vec![]),
            Services::default(),
        );
        let out = node.run(ctx).await.unwrap();
        assert_eq!(out.delta, StateDelta::default());
        assert_eq!(out.route, Route::Edges);
        assert_eq!(out.output, json!({"input": {"message": "hi"}}));
        assert!(events.take().is_empty());
    }
}
