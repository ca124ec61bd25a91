//! The `conditional` node (alias `condition`): routes by an expression.
//!
//! **Config:**
//! - `condition` (expression): evaluated against the state; the node then takes only its
//!   `true` or `false` branch (out-edges with `sourceHandle: "true"` / `"false"`).
//!
//! Without a `condition`, the node routes by the conditions of its out-edges (the old platform's
//! style), like any other node ([`Route::Edges`]). Built with [`NodeFactory::build_in`], a node
//! that has neither a condition nor a conditional out-edge is refused.
//!
//! **Reads:** the state. **Writes:** nothing. Its output is `{condition, result}`.

use std::sync::Arc;

use async_trait::async_trait;
use serde_json::json;

use crate::definition::{NodeSpec, WorkflowDefinition};
use crate::engine::{Node, NodeContext, NodeFactory, NodeOutput, Route};
use crate::error::Result;
use crate::expr::Expression;
use crate::nodes::common::Config;

/// Config of a `conditional` node.
#[derive(Debug, Clone)]
pub struct ConditionalConfig {
    /// `condition`; `None` routes by the out-edges' conditions.
    pub condition: Option<Expression>,
}

impl ConditionalConfig {
    /// Reads the config of `spec`.
    ///
    /// # Errors
    ///
    /// [`crate::Error::Config`] when `condition` is not a string; [`crate::Error::Expression`]
    /// when it does not compile.
    pub fn from_spec(spec: &NodeSpec) -> Result<ConditionalConfig> {
        Ok(ConditionalConfig {
            condition: Config::new(spec).expression("condition")?,
        })
    }
}

/// Builds [`ConditionalNode`]s.
#[derive(Debug, Clone, Copy, Default)]
pub struct ConditionalFactory;

impl NodeFactory for ConditionalFactory {
    fn build(&self, spec: &NodeSpec) -> Result<Arc<dyn Node>> {
        Ok(Arc::new(ConditionalNode {
            config: ConditionalConfig::from_spec(spec)?,
        }))
    }

    fn build_in(&self, spec: &NodeSpec, definition: &WorkflowDefinition) -> Result<Arc<dyn Node>> {
        let config = ConditionalConfig::from_spec(spec)?;
        if config.condition.is_none()
            && !definition
                .out_edges(spec.id.as_str())
                .any(|e| e.condition().is_some())
        {
            return Err(Config::new(spec).error(
                "condition",
                "is required (the node has no out-edge with a condition to route by)",
            ));
        }
        Ok(Arc::new(ConditionalNode { config }))
    }
}

/// Routes by a condition.
#[derive(Debug, Clone)]
pub struct ConditionalNode {
    config: ConditionalConfig,
}

#[async_trait]
impl Node for ConditionalNode {
    /// It only computes from the state: in `sync` mode its step rides with the next write.
    fn pure(&self) -> bool {
        true
    }

    async fn run(&self, ctx: NodeContext) -> Result<NodeOutput> {
        let Some(condition) = &self.config.condition else {
            return Ok(NodeOutput {
                output: json!({"condition": null, "result": null}).into(),
                ..NodeOutput::default()
            });
        };
        let mut context = None;
        let result = condition.eval_on(&ctx.state, || {
            context.insert(ctx.expr_context_for(condition.state_reads()))
        })?;
        Ok(NodeOutput {
            route: Route::Branch(if result { "true" } else { "false" }.to_owned()),
            output: json!({"condition": condition.source(), "result": result}).into(),
            ..NodeOutput::default()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::Services;
    use crate::nodes::testing::{build, context, spec};
    use crate::state::{State, StateDelta};
    use serde_json::Value;

    async fn run(config: Value, state: State) -> NodeOutput {
        let s = spec("check", "conditional", config);
        let node = build(&ConditionalFactory, &s);
        node.run(context(s, state, Services::default()).0)
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn false_condition_takes_the_false_branch() {
        let out = run(
            json!({"condition": "variables.n > 5"}),
            State::new(json!({"variables": {"n": 1}}), vec![]),
        )
        .await;
        assert_eq!(out.route, Route::Branch("false".into()));
        assert_eq!(out.delta, StateDelta::default());
        assert_eq!(
            out.output,
            json!({"condition": "variables.n > 5", "result": false})
        );
    }

    #[tokio::test]
    async fn true_condition_takes_the_true_branch() {
        let out = run(
            json!({"condition": "variables.n > 5"}),
            State::new(json!({"variables": {"n": 9}}), vec![]),
        )
        .await;
        assert_eq!(out.route, Route::Branch("true".into()));
        let out = run(json!({"condition": "has_tool_calls"}), State::default()).await;
        assert_eq!(out.route, Route::Branch("false".into()));
    }

    #[tokio::test]
    async fn without_condition_it_routes_by_edges() {
        let out = run(json!({}), State::default()).await;
        assert_eq!(out.route, Route::Edges);
    }

    #[test]
    fn build_in_requires_a_condition_somewhere() {
        let def = WorkflowDefinition::from_json(
            r#"{"nodes": [{"id": "c", "type": "condition"}, {"id": "a", "type": "end"}],
                "edges": [{"source": "c", "target": "a"}]}"#,
        )
        .unwrap();
        let err = ConditionalFactory
            .build_in(def.node("c").unwrap(), &def)
            .err()
            .unwrap();
        assert_eq!(
            err.to_string(),
            "configuration error: node `c`: config `condition` is required (the node has no out-edge with a condition to route by)"
        );
        let def = WorkflowDefinition::from_json(
            r#"{"nodes": [{"id": "c", "type": "condition"}, {"id": "a", "type": "end"}],
                "edges": [{"source": "c", "target": "a", "condition": "has_errors"}]}"#,
        )
        .unwrap();
        assert!(
            ConditionalFactory
                .build_in(def.node("c").unwrap(), &def)
                .is_ok()
        );
    }

    #[test]
    fn bad_condition_is_refused() {
        let err = ConditionalFactory
            .build(&spec("c", "conditional", json!({"condition": ""})))
            .err()
            .unwrap();
        assert!(
            err.to_string().contains("node `c`, config `condition`"),
            "{err}"
        );
        let err = ConditionalFactory
            .build(&spec("c", "conditional", json!({"condition": 5})))
            .err()
            .unwrap();
        assert_eq!(
            err.to_string(),
            "configuration error: node `c`: config `condition` must be an expression string, found an integer"
        );
    }
}
