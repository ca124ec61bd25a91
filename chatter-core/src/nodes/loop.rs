//! The `loop` node: bounded iteration.
//!
//! The node sits at the head of a cycle and decides, each time it runs, whether the loop goes on.
//!
//! **Config:**
//! - `condition` (expression, default `true`): the loop continues while it holds. It is evaluated
//!   with `loop.<id>` already showing this pass: `{iteration, max_iterations, continue: true}`.
//! - `max_iterations` (1..=10 000, default 10): the most passes.
//!
//! **Semantics.** `iteration` counts the passes completed so far: 0 on entry, then 1, 2, ...
//! The loop continues when the condition holds AND `iteration < max_iterations`, so with the
//! defaults the body runs at most 10 times and the node itself runs once more to exit. While it
//! continues the node writes `loop.<id> = {iteration, max_iterations, continue: true}`; when it
//! exits it removes `loop.<id>`, so a later entry (an inner loop on each pass of an outer one)
//! counts from zero again, and `loop_<id>_continue` reads false.
//!
//! **Routing.** By default the node follows its out-edges ([`Route::Edges`]): the continue edge
//! carries `loop_<id>_continue` (or `loop.<id>.continue`), the exit edge is the default. When
//! the node is built with [`NodeFactory::build_in`] and its out-edges are named branches
//! (`sourceHandle` `continue` and `exit` — or `done`, or `break` — or `true` and `false`), it
//! takes the matching branch ([`Route::Branch`]) instead.
//!
//! **Reads:** the state, `loop.<id>`. **Writes:** `loop.<id>`. Output:
//! `{iteration, max_iterations, continue, reason}` with `reason` one of `condition`,
//! `condition_false`, `max_iterations`.

use std::sync::Arc;

use async_trait::async_trait;
use serde_json::{Value, json};

use crate::definition::{NodeSpec, WorkflowDefinition};
use crate::engine::{Node, NodeContext, NodeFactory, NodeOutput, Route};
use crate::error::Result;
use crate::expr::Expression;
use crate::nodes::common::Config;
use crate::state::{LoopState, StateDelta};

/// Config of a `loop` node.
#[derive(Debug, Clone)]
pub struct LoopConfig {
    /// `condition`; `None` means always true.
    pub condition: Option<Expression>,
    /// `max_iterations`.
    pub max_iterations: u32,
}

impl LoopConfig {
    /// Default `max_iterations`.
    pub const DEFAULT_MAX_ITERATIONS: u32 = 10;

    /// Reads the config of `spec`.
    ///
    /// # Errors
    ///
    /// [`crate::Error::Config`] for a bad `max_iterations`; [`crate::Error::Expression`] for a
    /// condition that does not compile.
    pub fn from_spec(spec: &NodeSpec) -> Result<LoopConfig> {
        let c = Config::new(spec);
        Ok(LoopConfig {
            condition: c.expression("condition")?,
            max_iterations: c
                .integer("max_iterations", 1, 10_000)?
                .map_or(Self::DEFAULT_MAX_ITERATIONS, |n| n as u32),
        })
    }
}

/// How a loop node names its way on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LoopRouting {
    /// Follow the out-edges' conditions.
    Edges,
    /// Take the branch named `continue` or `exit` (the two names).
    Branches {
        /// Branch taken to go on (`continue` or `true`).
        continue_branch: String,
        /// Branch taken to leave (`exit` or `false`).
        exit_branch: String,
    },
}

impl LoopRouting {
    /// The routing style the node's out-edges in `definition` call for: `continue` with the
    /// first of `exit`, `done` or `break` found (`exit` when none is), else `true`/`false`,
    /// else [`LoopRouting::Edges`].
    pub fn for_node(definition: &WorkflowDefinition, node_id: &str) -> LoopRouting {
        let handles: Vec<&str> = definition
            .out_edges(node_id)
            .filter_map(|e| e.source_handle.as_deref())
            .collect();
        let pair = |a: &str, b: &str| LoopRouting::Branches {
            continue_branch: a.to_owned(),
            exit_branch: b.to_owned(),
        };
        let exit = handles.iter().copied().find(|h| EXIT_BRANCHES.contains(h));
        if exit.is_some() || handles.contains(&"continue") {
            pair("continue", exit.unwrap_or("exit"))
        } else if handles.iter().any(|h| *h == "true" || *h == "false") {
            pair("true", "false")
        } else {
            LoopRouting::Edges
        }
    }
}

/// Branch names a loop node leaves by, besides `false`.
const EXIT_BRANCHES: [&str; 3] = ["exit", "done", "break"];

/// Builds [`LoopNode`]s.
#[derive(Debug, Clone, Copy, Default)]
pub struct LoopFactory;

impl NodeFactory for LoopFactory {
    fn build(&self, spec: &NodeSpec) -> Result<Arc<dyn Node>> {
        Ok(Arc::new(LoopNode::new(
            spec.id.as_str(),
            LoopConfig::from_spec(spec)?,
            LoopRouting::Edges,
        )))
    }

    fn build_in(&self, spec: &NodeSpec, definition: &WorkflowDefinition) -> Result<Arc<dyn Node>> {
        Ok(Arc::new(LoopNode::new(
            spec.id.as_str(),
            LoopConfig::from_spec(spec)?,
            LoopRouting::for_node(definition, spec.id.as_str()),
        )))
    }
}

/// Decides whether a loop goes on.
#[derive(Debug, Clone)]
pub struct LoopNode {
    id: String,
    config: LoopConfig,
    routing: LoopRouting,
}

impl LoopNode {
    /// A loop node with this id, config and routing.
    pub fn new(id: &str, config: LoopConfig, routing: LoopRouting) -> LoopNode {
        LoopNode {
            id: id.to_owned(),
            config,
            routing,
        }
    }
}

#[async_trait]
impl Node for LoopNode {
    /// It only computes from the state: in `sync` mode its step rides with the next write.
    fn pure(&self) -> bool {
        true
    }

    async fn run(&self, ctx: NodeContext) -> Result<NodeOutput> {
        let max = self.config.max_iterations;
        let iteration = match ctx.state.loop_state(&self.id) {
            Some(previous) if previous.continue_loop => previous.iteration.saturating_add(1),
            _ => 0,
        };
        let this_pass = LoopState {
            iteration,
            max_iterations: max,
            continue_loop: true,
        };
        let holds = match &self.config.condition {
            None => true,
            Some(condition) => {
                let mut built = None;
                condition.eval_on(&ctx.state, || {
                    let mut keys = condition.state_reads().to_vec();
                    if !keys.contains(&"loop") {
                        keys.push("loop");
                    }
                    let context = built.insert(ctx.expr_context_for(&keys));
                    if let Some(loops) = context.get_mut("loop").and_then(Value::as_object_mut) {
                        loops.insert(
                            self.id.clone(),
                            serde_json::to_value(this_pass).unwrap_or_default(),
                        );
                    }
                    context
                })?
            }
        };
        let go_on = holds && iteration < max;
        let reason = if !holds {
            "condition_false"
        } else if go_on {
            "condition"
        } else {
            "max_iterations"
        };
        let delta = StateDelta {
            loops: vec![(self.id.clone(), go_on.then_some(this_pass))],
            ..StateDelta::default()
        };
        let route = match &self.routing {
            LoopRouting::Edges => Route::Edges,
            LoopRouting::Branches {
                continue_branch,
                exit_branch,
            } => Route::Branch(if go_on { continue_branch } else { exit_branch }.clone()),
        };
        Ok(NodeOutput {
            delta,
            route,
            output: json!({
                "iteration": iteration,
                "max_iterations": max,
                "continue": go_on,
                "reason": reason,
            })
            .into(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::Services;
    use crate::nodes::testing::{build, context, spec};
    use crate::state::State;

    /// Runs the node repeatedly, applying its delta each time, until it exits; returns the
    /// outputs.
    async fn run_until_exit(
        node: &Arc<dyn Node>,
        s: &NodeSpec,
        mut state: State,
    ) -> (Vec<NodeOutput>, State) {
        let mut outputs = Vec::new();
        for _ in 0..100 {
            let out = node
                .run(context(s.clone(), state.clone(), Services::default()).0)
                .await
                .unwrap();
            state.apply(&out.delta);
            let done = out.output["continue"] == false;
            outputs.push(out);
            if done {
                break;
            }
        }
        (outputs, state)
    }

    #[tokio::test]
    async fn counts_passes_and_exits_at_max_iterations() {
        let s = spec("lp", "loop", json!({"max_iterations": 3}));
        let node = build(&LoopFactory, &s);
        let (outs, state) = run_until_exit(&node, &s, State::default()).await;
        assert_eq!(outs.len(), 4);
        let its: Vec<Value> = outs.iter().map(|o| o.output["iteration"].clone()).collect();
        assert_eq!(its, [json!(0), json!(1), json!(2), json!(3)]);
        assert_eq!(
            outs[1].delta.loops,
            vec![(
                "lp".to_owned(),
                Some(LoopState {
                    iteration: 1,
                    max_iterations: 3,
                    continue_loop: true
                })
            )]
        );
        assert_eq!(outs[3].delta.loops, vec![("lp".to_owned(), None)]);
        assert_eq!(outs[3].output["reason"], "max_iterations");
        assert!(outs.iter().all(|o| o.route == Route::Edges));
        assert_eq!(state.loop_state("lp"), None);

        // Re-entered afresh, it counts from zero again.
        let out = node
            .run(context(s.clone(), state, Services::default()).0)
            .await
            .unwrap();
        assert_eq!(out.output["iteration"], 0);
        assert_eq!(out.output["continue"], true);
    }

    #[tokio::test]
    async fn false_condition_exits_at_once() {
        let s = spec(
            "lp",
            "loop",
            json!({"condition": "variables.more", "max_iterations": 5}),
        );
        let node = build(&LoopFactory, &s);
        let out = node
            .run(context(s, State::default(), Services::default()).0)
            .await
            .unwrap();
        assert_eq!(
            out.output,
            json!({"iteration": 0, "max_iterations": 5, "continue": false, "reason": "condition_false"})
        );
        assert_eq!(out.delta.loops, vec![("lp".to_owned(), None)]);
    }

    #[tokio::test]
    async fn condition_sees_this_pass() {
        let s = spec(
            "lp",
            "loop",
            json!({"condition": "loop.lp.iteration < 2", "max_iterations": 5}),
        );
        let node = build(&LoopFactory, &s);
        let (outs, _) = run_until_exit(&node, &s, State::default()).await;
        assert_eq!(outs.len(), 3);
        assert_eq!(outs[2].output["reason"], "condition_false");
    }

    #[tokio::test]
    async fn routes_by_named_branches_when_the_edges_use_them() {
        let def = WorkflowDefinition::from_json(
            r#"{"nodes": [{"id": "lp", "type": "loop", "config": {"max_iterations": 1}},
                          {"id": "body", "type": "variable"}, {"id": "done", "type": "end"}],
                "edges": [{"source": "lp", "target": "body", "sourceHandle": "continue"},
                          {"source": "lp", "target": "done", "sourceHandle": "exit"},
                          {"source": "body", "target": "lp"}]}"#,
        )
        .unwrap();
        let s = def.node("lp").unwrap().clone();
        let node = LoopFactory.build_in(&s, &def).unwrap();
        let (outs, _) = run_until_exit(&node, &s, State::default()).await;
        let routes: Vec<Route> = outs.into_iter().map(|o| o.route).collect();
        assert_eq!(
            routes,
            [
                Route::Branch("continue".into()),
                Route::Branch("exit".into())
            ]
        );

        let def = WorkflowDefinition::from_json(
            r#"{"nodes": [{"id": "lp", "type": "loop"}, {"id": "x", "type": "end"}],
                "edges": [{"source": "lp", "target": "x", "sourceHandle": "false"}]}"#,
        )
        .unwrap();
        assert_eq!(
            LoopRouting::for_node(&def, "lp"),
            LoopRouting::Branches {
                continue_branch: "true".into(),
                exit_branch: "false".into()
            }
        );
        let def = WorkflowDefinition::from_json(
            r#"{"nodes": [{"id": "lp", "type": "loop"}, {"id": "x", "type": "end"}],
                "edges": [{"source": "lp", "target": "x", "condition": "loop_lp_continue"}]}"#,
        )
        .unwrap();
        assert_eq!(LoopRouting::for_node(&def, "lp"), LoopRouting::Edges);
        let def = WorkflowDefinition::from_json(
            r#"{"nodes": [{"id": "lp", "type": "loop"}, {"id": "x", "type": "end"}, {"id": "y", "type": "end"}],
                "edges": [{"source": "lp", "target": "x", "sourceHandle": "continue"},
                          {"source": "lp", "target": "y", "sourceHandle": "done"}]}"#,
        )
        .unwrap();
        assert_eq!(
            LoopRouting::for_node(&def, "lp"),
            LoopRouting::Branches {
                continue_branch: "continue".into(),
                exit_branch: "done".into()
            }
        );
    }

    #[test]
    fn bad_max_iterations_is_refused() {
        let err = LoopFactory
            .build(&spec("lp", "loop", json!({"max_iterations": 0})))
            .err()
            .unwrap();
        assert_eq!(
            err.to_string(),
            "configuration error: node `lp`: config `max_iterations` must be between 1 and 10000, found 0"
        );
    }
}
