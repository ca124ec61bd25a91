//! The `map` node: runs a sub-graph once per item of a list, at most `max_concurrency` at once,
//! and gathers the results in item order.
//!
//! **Config:**
//! - `items` (expression, required): evaluated against the state; must yield a list
//!   (e.g. `variables.cities`, `input.documents`). Compiled once as an [`Expression`] yielding a value.
//! - `item_variable` (identifier, default `item`): the name the item goes by in the sub-graph.
//! - `max_concurrency` (1..=64, default 4).
//! - `body` (object `{nodes, edges}`): the sub-graph, read like a definition at build time; or
//!   `workflow_id`: a definition resolved through [`crate::engine::DefinitionResolver`] at run
//!   time. Exactly one of them.
//! - `output_variable` (default `results`): receives the list of results.
//!
//! **Per item** the sub-graph runs (through the engine's [`crate::engine::SubgraphRunner`],
//! sharing cancellation and budgets) with the input
//! `{<item_variable>: item, "index": i, "variables": {..the parent's variables..,
//! <item_variable>: item}}`. Its result is its response; without one, the content of its last
//! assistant message; without one, its variables (an object). The first failing item (in item
//! order) fails the node.
//!
//! **Reads:** the state (for `items`), `variables`. **Writes:**
//! `variables.<output_variable>`, `usage` (the sum over the items). Output: `{count}`.

use std::sync::Arc;

use async_trait::async_trait;
use futures::{StreamExt, TryStreamExt, stream};
use serde_json::{Map, Value, json};

use crate::definition::{NodeSpec, WorkflowDefinition};
use crate::engine::{Node, NodeContext, NodeFactory, NodeOutput, SubgraphOutcome};
use crate::error::{Error, ErrorClass, Result};
use crate::expr::Expression;
use crate::model::{Role, Usage};
use crate::nodes::common::{Config, cancellable, is_identifier, last_content, type_name};
use crate::state::{StateDelta, VariableOp};

/// What a `map` node runs per item.
#[derive(Debug, Clone)]
pub enum MapBody {
    /// `body`: an inline sub-graph.
    Inline(Arc<WorkflowDefinition>),
    /// `workflow_id`: a stored definition.
    Workflow(String),
}

/// Config of a `map` node.
#[derive(Debug, Clone)]
pub struct MapConfig {
    /// `items`.
    pub items: Arc<Expression>,
    /// `item_variable`.
    pub item_variable: String,
    /// `max_concurrency`.
    pub max_concurrency: usize,
    /// `body` / `workflow_id`.
    pub body: MapBody,
    /// `output_variable`.
    pub output_variable: String,
}

impl MapConfig {
    /// Reads and checks the config of `spec`.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] naming the node and key: a missing `items`, neither or both of `body`
    /// and `workflow_id`, a `body` that is not a sub-graph, a bad type or range;
    /// [`Error::Expression`] when `items` does not compile.
    pub fn from_spec(spec: &NodeSpec) -> Result<MapConfig> {
        let c = Config::new(spec);
        let items = match c.raw("items") {
            None => return Err(c.error("items", "is required")),
            Some(Value::String(source)) => Expression::compile(source).map_err(|e| match e {
                Error::Expression {
                    expression,
                    message,
                } => Error::Expression {
                    expression,
                    message: format!("node `{}`, config `items`: {message}", c.node_id()),
                },
                other => other,
            })?,
            Some(other) => {
                return Err(c.error(
                    "items",
                    format!("must be an expression string, found {}", type_name(other)),
                ));
            }
        };
        let item_variable = c
            .string("item_variable")?
            .unwrap_or_else(|| "item".to_owned());
        if !is_identifier(&item_variable) {
            return Err(c.error(
                "item_variable",
                format!(
                    "must be an identifier ([A-Za-z_][A-Za-z0-9_]*), found \"{item_variable}\""
                ),
            ));
        }
        let body = match (c.raw("body"), c.name("workflow_id")?) {
            (Some(_), Some(_)) => {
                return Err(c.error("body", "and `workflow_id` exclude each other; give one"));
            }
            (None, None) => return Err(c.error("body", "or `workflow_id` is required")),
            (None, Some(id)) => MapBody::Workflow(id),
            (Some(body @ Value::Object(_)), None) => MapBody::Inline(Arc::new(
                WorkflowDefinition::from_value(body)
                    .map_err(|e| c.error("body", format!("is not a valid sub-graph: {e}")))?,
            )),
            (Some(other), None) => {
                return Err(c.error(
                    "body",
                    format!(
                        "must be an object {{nodes, edges}}, found {}",
                        type_name(other)
                    ),
                ));
            }
        };
        Ok(MapConfig {
            items: Arc::new(items),
            item_variable,
            max_concurrency: c.integer("max_concurrency", 1, 64)?.unwrap_or(4) as usize,
            body,
            output_variable: c
                .name("output_variable")?
                .unwrap_or_else(|| "results".to_owned()),
        })
    }
}

/// Builds [`MapNode`]s.
#[derive(Debug, Clone, Copy, Default)]
pub struct MapFactory;

impl NodeFactory for MapFactory {
    fn build(&self, spec: &NodeSpec) -> Result<Arc<dyn Node>> {
        Ok(Arc::new(MapNode {
            config: MapConfig::from_spec(spec)?,
        }))
    }
}

/// Maps a sub-graph over a list.
#[derive(Debug, Clone)]
pub struct MapNode {
    config: MapConfig,
}

/// The result of one sub-graph run: its response, else its last assistant message, else its
/// variables.
pub(crate) fn outcome_value(outcome: &SubgraphOutcome) -> Value {
    if let Some(response) = &outcome.response {
        return Value::String(response.clone());
    }
    if let Some(text) = last_content(outcome.state.messages(), Role::Assistant) {
        return Value::String(text.to_owned());
    }
    Value::Object(outcome.state.variables().clone())
}

#[async_trait]
impl Node for MapNode {
    /// It calls the outside world (models, tools, HTTP endpoints): a durable execution records
    /// its intent first.
    fn side_effects(&self) -> bool {
        true
    }

    async fn run(&self, ctx: NodeContext) -> Result<NodeOutput> {
        let config = &self.config;
        let items = match config
            .items
            .eval_json(&ctx.expr_context_for(config.items.state_reads()))?
        {
            Value::Array(items) => items,
            other => {
                return Err(ctx.error(
                    ErrorClass::Internal,
                    format!(
                        "`items` ({}) gave {}, not a list",
                        config.items.source(),
                        type_name(&other)
                    ),
                ));
            }
        };
        let Some(runner) = ctx.subgraphs.clone() else {
            return Err(ctx.error(ErrorClass::Internal, "no sub-graph runner is available"));
        };
        let definition = match &config.body {
            MapBody::Inline(def) => def.clone(),
            MapBody::Workflow(id) => match &ctx.services.resolver {
                Some(resolver) => cancellable(&ctx, resolver.resolve(id)).await?,
                None => {
                    return Err(ctx.error(
                        ErrorClass::Internal,
                        format!("no definition resolver is configured to find `{id}`"),
                    ));
                }
            },
        };
        let parent_variables = ctx.state.variables();
        let inputs: Vec<Value> = items
            .into_iter()
            .enumerate()
            .map(|(index, item)| {
                let mut variables: Map<String, Value> = parent_variables.clone();
                variables.insert(config.item_variable.clone(), item.clone());
                let mut input = Map::new();
                input.insert(config.item_variable.clone(), item);
                input.insert("index".into(), json!(index));
                input.insert("variables".into(), Value::Object(variables));
                Value::Object(input)
            })
            .collect();
        let count = inputs.len();
        let ctx_ref = &ctx;
        let outcomes: Vec<SubgraphOutcome> = cancellable(
            &ctx,
            stream::iter(inputs.into_iter().enumerate())
                .map(|(index, input)| {
                    let runner = runner.clone();
                    let definition = definition.clone();
                    async move {
                        runner
                            .run_subgraph(ctx_ref, definition, input)
                            .await
                            .map_err(|e| match e {
                                Error::Cancelled { .. } => e,
                                other => ctx_ref.error(
                                    other.class().unwrap_or(ErrorClass::Internal),
                                    format!("item {index}: {other}"),
                                ),
                            })
                    }
                })
                .buffered(config.max_concurrency)
                .try_collect(),
        )
        .await?;
        let mut usage = Usage::default();
        let results: Vec<Value> = outcomes
            .iter()
            .map(|o| {
                usage.add(&o.usage);
                outcome_value(o)
            })
            .collect();
        let delta = StateDelta {
            variables: vec![(
                config.output_variable.clone(),
                VariableOp::Set(Value::Array(results)),
            )],
            usage: Some(usage),
            ..StateDelta::default()
        };
        Ok(NodeOutput {
            delta,
            output: json!({ "count": count }).into(),
            ..NodeOutput::default()
        })
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::engine::{DefinitionResolver, Route, Services, SubgraphRunner};
    use crate::model::Message;
    use crate::nodes::testing::*;
    use crate::state::State;
    use std::sync::Mutex;
    use std::time::Duration;

    /// A fake sub-graph runner: replies `"<node ids>:<item>"`, sleeping `item` ms when the item
    /// is a number, failing on the item `"bad"`, tracking concurrency.
    #[derive(Default)]
    pub(crate) struct FakeRunner {
        pub(crate) inputs: Mutex<Vec<Value>>,
        running: Mutex<(usize, usize)>,
    }

    impl FakeRunner {
        pub(crate) fn peak(&self) -> usize {
            self.running.lock().unwrap().1
        }
    }

    #[async_trait]
    impl SubgraphRunner for FakeRunner {
        async fn run_subgraph(
            &self,
            parent: &NodeContext,
            definition: Arc<WorkflowDefinition>,
            input: Value,
        ) -> Result<SubgraphOutcome> {
            self.inputs.lock().unwrap().push(input.clone());
            {
                let mut r = self.running.lock().unwrap();
                r.0 += 1;
                r.1 = r.1.max(r.0);
            }
            let item = input
                .get("item")
                .or_else(|| input.get("city"))
                .cloned()
                .unwrap_or(Value::Null);
            if let Some(ms) = item.as_u64() {
                tokio::time::sleep(Duration::from_millis(ms)).await;
            }
            self.running.lock().unwrap().0 -= 1;
            if item == "bad" {
                return Err(Error::Tool {
                    tool: "t".into(),
                    class: ErrorClass::Tool,
                    message: "bad item".into(),
                });
            }
            let ids: Vec<&str> = definition.nodes.iter().map(|n| n.id.as_str()).collect();
            let mut state = State::new(input.clone(), vec![]);
            if item == "quiet" {
                state.apply(&StateDelta {
                    messages: vec![Message::assistant("from messages")],
                    ..StateDelta::default()
                });
                return Ok(SubgraphOutcome {
                    state,
                    response: None,
                    usage: usage(1, 1),
                });
            }
            if item == "silent" {
                return Ok(SubgraphOutcome {
                    state,
                    response: None,
                    usage: Usage::default(),
                });
            }
            assert_eq!(parent.node_id(), parent.spec.id.as_str());
            Ok(SubgraphOutcome {
                state,
                response: Some(format!(
                    "{}:{}",
                    ids.join("+"),
                    crate::nodes::common::value_text(&item)
                )),
                usage: usage(3, 2),
            })
        }
    }

    const BODY: &str = r#"{"nodes": [{"id": "s", "type": "start"}, {"id": "e", "type": "end"}],
                           "edges": [{"source": "s", "target": "e"}]}"#;

    fn map_spec(extra: Value) -> NodeSpec {
        let mut config = json!({"items": "variables.cities", "body": serde_json::from_str::<Value>(BODY).unwrap()});
        for (k, v) in extra.as_object().unwrap() {
            config[k] = v.clone();
        }
        spec("each", "map", config)
    }

    async fn run(
        s: NodeSpec,
        vars: Value,
        runner: Arc<FakeRunner>,
        services: Services,
    ) -> Result<NodeOutput> {
        let node = MapFactory.build(&s)?;
        let (mut ctx, _) = context(s, State::new(json!({"variables": vars}), vec![]), services);
        ctx.subgraphs = Some(runner);
        node.run(ctx).await
    }

    #[tokio::test(start_paused = true)]
    async fn results_come_back_in_item_order_with_bounded_concurrency() {
        let runner = Arc::new(FakeRunner::default());
        let out = run(
            map_spec(json!({"max_concurrency": 2, "output_variable": "answers"})),
            json!({"cities": [50, 10, 30, 5, 20], "lang": "en"}),
            runner.clone(),
            Services::default(),
        )
        .await
        .unwrap();
        assert_eq!(
            out.delta.variables,
            vec![(
                "answers".to_owned(),
                VariableOp::Set(json!(["s+e:50", "s+e:10", "s+e:30", "s+e:5", "s+e:20"]))
            )]
        );
        assert_eq!(
            out.delta.usage,
            Some(Usage {
                prompt_tokens: 15,
                completion_tokens: 10,
                total_tokens: 25,
                cost: 0.0
            })
        );
        assert_eq!(out.output, json!({"count": 5}));
        assert_eq!(out.route, Route::Edges);
        assert_eq!(runner.peak(), 2);
        let first = runner.inputs.lock().unwrap()[0].clone();
        assert_eq!(
            first,
            json!({"item": 50, "index": 0, "variables": {"cities": [50, 10, 30, 5, 20], "lang": "en", "item": 50}})
        );
    }

    #[tokio::test]
    async fn item_variable_and_result_fallbacks() {
        let runner = Arc::new(FakeRunner::default());
        let out = run(
            map_spec(json!({"item_variable": "city"})),
            json!({"cities": ["quiet", "silent"]}),
            runner.clone(),
            Services::default(),
        )
        .await
        .unwrap();
        assert_eq!(
            out.delta.variables[0].1,
            VariableOp::Set(
                json!(["from messages", {"cities": ["quiet", "silent"], "city": "silent"}])
            )
        );
        assert_eq!(runner.inputs.lock().unwrap()[0]["city"], "quiet");
    }

    #[tokio::test]
    async fn a_failing_item_fails_the_node_and_non_lists_are_refused() {
        let runner = Arc::new(FakeRunner::default());
        let err = run(
            map_spec(json!({})),
            json!({"cities": ["ok", "bad"]}),
            runner.clone(),
            Services::default(),
        )
        .await
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "node `each` failed: item 1: tool `t` failed (tool): bad item"
        );
        assert_eq!(err.class(), Some(ErrorClass::Tool));
        let err = run(
            map_spec(json!({})),
            json!({"cities": "Oslo"}),
            runner.clone(),
            Services::default(),
        )
        .await
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "node `each` failed: `items` (variables.cities) gave a string, not a list"
        );
        let out = run(
            map_spec(json!({})),
            json!({"cities": []}),
            runner,
            Services::default(),
        )
        .await
        .unwrap();
        assert_eq!(out.delta.variables[0].1, VariableOp::Set(json!([])));
    }

    struct OneDefinition;

    #[async_trait]
    impl DefinitionResolver for OneDefinition {
        async fn resolve(&self, id: &str) -> Result<Arc<WorkflowDefinition>> {
            if id == "wf-1" {
                Ok(Arc::new(WorkflowDefinition::from_json(
                    r#"{"nodes": [{"id": "only", "type": "end"}], "edges": []}"#,
                )?))
            } else {
                Err(Error::NotFound {
                    what: "definition".into(),
                    name: id.into(),
                })
            }
        }
    }

    #[tokio::test]
    async fn workflow_id_is_resolved() {
        let runner = Arc::new(FakeRunner::default());
        let services = Services {
            resolver: Some(Arc::new(OneDefinition)),
            ..Services::default()
        };
        let s = spec(
            "each",
            "map",
            json!({"items": "variables.cities", "workflow_id": "wf-1"}),
        );
        let out = run(
            s,
            json!({"cities": ["x"]}),
            runner.clone(),
            services.clone(),
        )
        .await
        .unwrap();
        assert_eq!(
            out.delta.variables,
            vec![("results".to_owned(), VariableOp::Set(json!(["only:x"])))]
        );
        let s = spec(
            "each",
            "map",
            json!({"items": "variables.cities", "workflow_id": "wf-2"}),
        );
        let err = run(s, json!({"cities": ["x"]}), runner, services)
            .await
            .unwrap_err();
        assert_eq!(err.to_string(), "unknown definition `wf-2`");
    }

    #[test]
    fn bad_configs_are_refused() {
        let body = serde_json::from_str::<Value>(BODY).unwrap();
        let cases = [
            (json!({"body": body.clone()}), "config `items` is required"),
            (
                json!({"items": "variables.x"}),
                "config `body` or `workflow_id` is required",
            ),
            (
                json!({"items": "variables.x", "body": body.clone(), "workflow_id": "w"}),
                "config `body` and `workflow_id` exclude each other; give one",
            ),
            (
                json!({"items": "variables.x", "body": []}),
                "config `body` must be an object {nodes, edges}, found a list",
            ),
            (
                json!({"items": "variables.x", "body": {"nodes": 3}}),
                "config `body` is not a valid sub-graph: invalid definition at $.nodes: expected an array of nodes, found a number",
            ),
            (
                json!({"items": "variables.x", "body": body.clone(), "max_concurrency": 65}),
                "config `max_concurrency` must be between 1 and 64, found 65",
            ),
            (
                json!({"items": "variables.x", "body": body.clone(), "item_variable": "my item"}),
                "config `item_variable` must be an identifier ([A-Za-z_][A-Za-z0-9_]*), found \"my item\"",
            ),
        ];
        for (config, message) in cases {
            let err = MapFactory
                .build(&spec("each", "map", config))
                .err()
                .unwrap();
            assert_eq!(
                err.to_string(),
                format!("configuration error: node `each`: {message}")
            );
        }
        let err = MapFactory
            .build(&spec(
                "each",
                "map",
                json!({"items": "cities", "body": body}),
            ))
            .err()
            .unwrap();
        assert!(
            err.to_string()
                .contains("node `each`, config `items`: unknown variable `cities`"),
            "{err}"
        );
    }
}
