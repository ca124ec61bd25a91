//! The `end` node: the exit marker; it sets the execution's final response.
//!
//! **Config:**
//! - `output` (prompt template, optional): the final response, rendered against the state.
//!
//! **Reads:** the state (for `output`), else the last assistant message.
//! **Writes:** `response` — the rendered `output`, or the content of the last assistant message
//! (no response when there is neither).

use std::sync::Arc;

use async_trait::async_trait;
use serde_json::json;

use crate::definition::NodeSpec;
use crate::engine::{Node, NodeContext, NodeFactory, NodeOutput};
use crate::error::Result;
use crate::expr::PromptTemplate;
use crate::model::Role;
use crate::nodes::common::{Config, last_content};
use crate::state::StateDelta;

/// Config of an `end` node.
#[derive(Debug, Clone, Default)]
pub struct EndConfig {
    /// `output`: the final response template.
    pub output: Option<PromptTemplate>,
}

impl EndConfig {
    /// Reads the config of `spec`.
    ///
    /// # Errors
    ///
    /// [`crate::Error::Config`] when `output` is not a valid template string.
    pub fn from_spec(spec: &NodeSpec) -> Result<EndConfig> {
        Ok(EndConfig {
            output: Config::new(spec).template("output")?,
        })
    }
}

/// Builds [`EndNode`]s.
#[derive(Debug, Clone, Copy, Default)]
pub struct EndFactory;

impl NodeFactory for EndFactory {
    fn build(&self, spec: &NodeSpec) -> Result<Arc<dyn Node>> {
        Ok(Arc::new(EndNode {
            config: EndConfig::from_spec(spec)?,
        }))
    }
}

/// The exit marker.
#[derive(Debug, Clone)]
pub struct EndNode {
    config: EndConfig,
}

#[async_trait]
impl Node for EndNode {
    /// It only computes from the state: in `sync` mode its step rides with the next write.
    fn pure(&self) -> bool {
        true
    }

    async fn run(&self, ctx: NodeContext) -> Result<NodeOutput> {
        let response = match &self.config.output {
            Some(template) => Some(template.render(&ctx.expr_context_for(template.state_reads()))?),
            None => last_content(ctx.state.messages(), Role::Assistant).map(str::to_owned),
        };
        Ok(NodeOutput {
            output: json!({ "response": response }).into(),
            delta: StateDelta {
                response,
                ..StateDelta::default()
            },
            ..NodeOutput::default()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::{Route, Services};
    use crate::model::Message;
    use crate::nodes::testing::{build, context, spec};
    use crate::state::State;

    async fn run(config: serde_json::Value, state: State) -> NodeOutput {
        let s = spec("end", "end", config);
        let node = build(&EndFactory, &s);
        node.run(context(s, state, Services::default()).0)
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn response_is_the_last_assistant_message() {
        let state = State::new(
            json!({}),
            vec![
                Message::user("q"),
                Message::assistant("first"),
                Message::assistant("final answer"),
                Message::tool_result("c1", "t", "tool text"),
            ],
        );
        let out = run(json!({}), state).await;
        assert_eq!(out.delta.response.as_deref(), Some("final answer"));
        assert_eq!(out.route, Route::Edges);
        assert_eq!(out.output, json!({"response": "final answer"}));
    }

    #[tokio::test]
    async fn no_assistant_message_means_no_response() {
        let out = run(json!({}), State::new(json!({"message": "q"}), vec![])).await;
        assert_eq!(out.delta, StateDelta::default());
    }

    #[tokio::test]
    async fn output_template_is_the_response() {
        let state = State::new(json!({}), vec![Message::assistant("ignored")]);
        let out = run(json!({"output": "Done."}), state).await;
        assert_eq!(out.delta.response.as_deref(), Some("Done."));
    }

    #[tokio::test]
    async fn output_template_renders_the_state() {
        let state = State::new(json!({"variables": {"name": "Ada"}}), vec![]);
        let out = run(json!({"output": "Bye {{ variables.name }}"}), state).await;
        assert_eq!(out.delta.response.as_deref(), Some("Bye Ada"));
    }

    #[test]
    fn bad_output_is_a_config_error() {
        let err = EndFactory
            .build(&spec("fin", "end", json!({"output": 3})))
            .err()
            .unwrap();
        assert_eq!(
            err.to_string(),
            "configuration error: node `fin`: config `output` must be a template string, found an integer"
        );
    }
}
