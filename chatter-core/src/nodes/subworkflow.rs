//! The `subworkflow` node: runs another definition (or template) as one node.
//!
//! **Config:**
//! - `workflow_id` or `template_id` (one required): resolved through the host's
//!   [`crate::engine::DefinitionResolver`] (the id is passed as written; a resolver that serves
//!   both kinds tells them apart).
//! - `input` (object): the sub-workflow's input. By default
//!   `{"message": <the last user message>, "variables": <the parent's variables>}` (without
//!   `message` when there is no user message).
//! - `output_variable`: receives the sub-workflow's result — its response, else its last
//!   assistant message, else its variables.
//!
//! The run goes through the engine's [`crate::engine::SubgraphRunner`], sharing cancellation and
//! budgets; its failure fails this node.
//!
//! **Reads:** `messages`, `variables`. **Writes:** `variables.<output_variable>`, `usage` (the
//! sub-workflow's). Output: `{workflow_id, response}`.

use std::sync::Arc;

use async_trait::async_trait;
use serde_json::{Map, Value, json};

use crate::definition::NodeSpec;
use crate::engine::{Node, NodeContext, NodeFactory, NodeOutput};
use crate::error::{ErrorClass, Result};
use crate::model::Role;
use crate::nodes::common::{Config, cancellable, last_content, type_name};
use crate::nodes::map::outcome_value;
use crate::state::{StateDelta, VariableOp};

/// Config of a `subworkflow` node.
#[derive(Debug, Clone)]
pub struct SubworkflowConfig {
    /// `workflow_id` or `template_id`.
    pub target: String,
    /// `input`.
    pub input: Option<Map<String, Value>>,
    /// `output_variable`.
    pub output_variable: Option<String>,
}

impl SubworkflowConfig {
    /// Reads and checks the config of `spec`.
    ///
    /// # Errors
    ///
    /// [`crate::Error::Config`] naming the node and key: neither or both of `workflow_id` and
    /// `template_id`, an `input` that is not an object, a bad type.
    pub fn from_spec(spec: &NodeSpec) -> Result<SubworkflowConfig> {
        let c = Config::new(spec);
        let target = match (c.name("workflow_id")?, c.name("template_id")?) {
            (Some(_), Some(_)) => {
                return Err(c.error(
                    "workflow_id",
                    "and `template_id` exclude each other; give one",
                ));
            }
            (None, None) => return Err(c.error("workflow_id", "or `template_id` is required")),
            (Some(id), None) | (None, Some(id)) => id,
        };
        let input = match c.raw("input") {
            None => None,
            Some(Value::Object(map)) => Some(map.clone()),
            Some(other) => {
                return Err(c.error(
                    "input",
                    format!("must be an object, found {}", type_name(other)),
                ));
            }
        };
        Ok(SubworkflowConfig {
            target,
            input,
            output_variable: c.name("output_variable")?,
        })
    }
}

/// Builds [`SubworkflowNode`]s.
#[derive(Debug, Clone, Copy, Default)]
pub struct SubworkflowFactory;

impl NodeFactory for SubworkflowFactory {
    fn build(&self, spec: &NodeSpec) -> Result<Arc<dyn Node>> {
        Ok(Arc::new(SubworkflowNode {
            config: SubworkflowConfig::from_spec(spec)?,
        }))
    }
}

/// Runs another workflow.
#[derive(Debug, Clone)]
pub struct SubworkflowNode {
    config: SubworkflowConfig,
}

#[async_trait]
impl Node for SubworkflowNode {
    /// It calls the outside world (models, tools, HTTP endpoints): a durable execution records
    /// its intent first.
    fn side_effects(&self) -> bool {
        true
    }

    async fn run(&self, ctx: NodeContext) -> Result<NodeOutput> {
        let config = &self.config;
        let Some(resolver) = ctx.services.resolver.clone() else {
            return Err(ctx.error(
                ErrorClass::Internal,
                format!(
                    "no definition resolver is configured to find `{}`",
                    config.target
                ),
            ));
        };
        let Some(runner) = ctx.subgraphs.clone() else {
            return Err(ctx.error(ErrorClass::Internal, "no sub-graph runner is available"));
        };
        let definition = cancellable(&ctx, resolver.resolve(&config.target)).await?;
        let input = match &config.input {
            Some(input) => Value::Object(input.clone()),
            None => {
                let mut input = Map::new();
                if let Some(text) = last_content(ctx.state.messages(), Role::User) {
                    input.insert("message".into(), json!(text));
                }
                input.insert(
                    "variables".into(),
                    Value::Object(ctx.state.variables().clone()),
                );
                Value::Object(input)
            }
        };
        let outcome = cancellable(&ctx, runner.run_subgraph(&ctx, definition, input)).await?;
        let result = outcome_value(&outcome);
        let mut delta = StateDelta {
            usage: Some(outcome.usage),
            ..StateDelta::default()
        };
        if let Some(name) = &config.output_variable {
            delta
                .variables
                .push((name.clone(), VariableOp::Set(result.clone())));
        }
        Ok(NodeOutput {
            delta,
            output: json!({"workflow_id": config.target, "response": outcome.response}).into(),
            ..NodeOutput::default()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::definition::WorkflowDefinition;
    use crate::engine::{DefinitionResolver, Services};
    use crate::error::Error;
    use crate::model::Message;
    use crate::nodes::map::tests::FakeRunner;
    use crate::nodes::testing::*;
    use crate::state::State;

    struct Resolver;

    #[async_trait]
    impl DefinitionResolver for Resolver {
        async fn resolve(&self, id: &str) -> Result<Arc<WorkflowDefinition>> {
            match id {
                "summarise" | "tpl-qa" => Ok(Arc::new(WorkflowDefinition::from_json(&format!(
                    r#"{{"nodes": [{{"id": "{id}", "type": "end"}}], "edges": []}}"#
                ))?)),
                _ => Err(Error::NotFound {
                    what: "definition".into(),
                    name: id.into(),
                }),
            }
        }
    }

    async fn run(config: Value, state: State, runner: Arc<FakeRunner>) -> Result<NodeOutput> {
        let s = spec("sub", "subworkflow", config);
        let node = SubworkflowFactory.build(&s)?;
        let services = Services {
            resolver: Some(Arc::new(Resolver)),
            ..Services::default()
        };
        let (mut ctx, _) = context(s, state, services);
        ctx.subgraphs = Some(runner);
        node.run(ctx).await
    }

    #[tokio::test]
    async fn runs_the_resolved_workflow_with_the_default_input() {
        let runner = Arc::new(FakeRunner::default());
        let state = State::new(
            json!({"variables": {"item": "x", "n": 1}}),
            vec![Message::user("hello"), Message::assistant("hi")],
        );
        let out = run(
            json!({"workflow_id": "summarise", "output_variable": "summary"}),
            state,
            runner.clone(),
        )
        .await
        .unwrap();
        assert_eq!(
            runner.inputs.lock().unwrap()[0],
            json!({"message": "hello", "variables": {"item": "x", "n": 1}})
        );
        assert_eq!(
            out.delta,
            StateDelta {
                variables: vec![("summary".into(), VariableOp::Set(json!("summarise:null")))],
                usage: Some(usage(3, 2)),
                ..StateDelta::default()
            }
        );
        assert_eq!(
            out.output,
            json!({"workflow_id": "summarise", "response": "summarise:null"})
        );
    }

    #[tokio::test]
    async fn template_id_and_explicit_input() {
        let runner = Arc::new(FakeRunner::default());
        let out = run(
            json!({"template_id": "tpl-qa", "input": {"item": "q"}}),
            State::default(),
            runner.clone(),
        )
        .await
        .unwrap();
        assert_eq!(runner.inputs.lock().unwrap()[0], json!({"item": "q"}));
        assert_eq!(out.output["response"], "tpl-qa:q");
        assert!(out.delta.variables.is_empty());
        let err = run(json!({"workflow_id": "nope"}), State::default(), runner)
            .await
            .unwrap_err();
        assert_eq!(err.to_string(), "unknown definition `nope`");
    }

    #[tokio::test]
    async fn child_failure_fails_the_node() {
        let runner = Arc::new(FakeRunner::default());
        let err = run(
            json!({"workflow_id": "summarise", "input": {"item": "bad"}}),
            State::default(),
            runner,
        )
        .await
        .unwrap_err();
        assert_eq!(err.to_string(), "tool `t` failed (tool): bad item");
    }

    #[test]
    fn bad_configs_are_refused() {
        let cases = [
            (
                json!({}),
                "config `workflow_id` or `template_id` is required",
            ),
            (
                json!({"workflow_id": "a", "template_id": "b"}),
                "config `workflow_id` and `template_id` exclude each other; give one",
            ),
            (
                json!({"workflow_id": "a", "input": "x"}),
                "config `input` must be an object, found a string",
            ),
        ];
        for (config, message) in cases {
            let err = SubworkflowFactory
                .build(&spec("sub", "subworkflow", config))
                .err()
                .unwrap();
            assert_eq!(
                err.to_string(),
                format!("configuration error: node `sub`: {message}")
            );
        }
    }
}
