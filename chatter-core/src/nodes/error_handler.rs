//! The `error_handler` node (alias `errorHandler`): catches the failures of the nodes that route
//! to it (an out-edge from the failing node to the handler).
//!
//! **Config:**
//! - `retry_count` (0..=10, default 0): how many times the failed node is run again.
//! - `fallback_action` (`continue` | `clear_errors` | `stop`, default `continue`): what happens
//!   once the retries are spent.
//! - `fallback_message` (string): appended as an assistant message when the fallback runs.
//!
//! **Semantics.** The engine runs the handler with [`NodeContext::failure`] set. While
//! `failure.retries < retry_count` the handler answers [`Route::RetryFailed`] (the engine runs
//! the failed node again). Then the fallback: `continue` records the failure in `errors` (unless
//! the engine already recorded it) and follows the handler's out-edges; `clear_errors`
//! empties `errors` and follows the out-edges; `stop` ends the execution as failed with the
//! failure's message ([`Route::Stop`]). A handler reached without a failure (by an ordinary
//! edge) does nothing and follows its out-edges.
//!
//! **Reads:** the failure, `errors`. **Writes:** `errors`, `messages` (the fallback message).
//! Output: `{action, node_id, error, class, retries}` with `action` one of `retry`, `continue`,
//! `clear_errors`, `stop`, `none`.

use std::sync::Arc;

use async_trait::async_trait;
use serde_json::json;

use crate::definition::NodeSpec;
use crate::engine::{Node, NodeContext, NodeFactory, NodeOutput, Route};
use crate::error::Result;
use crate::model::Message;
use crate::nodes::common::Config;
use crate::state::{ErrorRecord, StateDelta};

/// What an error handler does once retries are spent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum FallbackAction {
    /// Record the error and follow the out-edges.
    Continue,
    /// Clear `errors` and follow the out-edges.
    ClearErrors,
    /// Fail the execution.
    Stop,
}

/// Config of an `error_handler` node.
#[derive(Debug, Clone)]
pub struct ErrorHandlerConfig {
    /// `retry_count`.
    pub retry_count: u32,
    /// `fallback_action`.
    pub fallback_action: FallbackAction,
    /// `fallback_message`.
    pub fallback_message: Option<String>,
}

impl ErrorHandlerConfig {
    /// Reads and checks the config of `spec`.
    ///
    /// # Errors
    ///
    /// [`crate::Error::Config`] naming the node and key for a wrong type or range.
    pub fn from_spec(spec: &NodeSpec) -> Result<ErrorHandlerConfig> {
        let c = Config::new(spec);
        Ok(ErrorHandlerConfig {
            retry_count: c.integer("retry_count", 0, 10)?.unwrap_or(0) as u32,
            fallback_action: match c
                .one_of("fallback_action", &["continue", "clear_errors", "stop"])?
            {
                Some("clear_errors") => FallbackAction::ClearErrors,
                Some("stop") => FallbackAction::Stop,
                _ => FallbackAction::Continue,
            },
            fallback_message: c.string("fallback_message")?.filter(|m| !m.is_empty()),
        })
    }
}

/// Builds [`ErrorHandlerNode`]s.
#[derive(Debug, Clone, Copy, Default)]
pub struct ErrorHandlerFactory;

impl NodeFactory for ErrorHandlerFactory {
    fn build(&self, spec: &NodeSpec) -> Result<Arc<dyn Node>> {
        Ok(Arc::new(ErrorHandlerNode {
            config: ErrorHandlerConfig::from_spec(spec)?,
        }))
    }
}

/// Retries a failed node, then falls back.
#[derive(Debug, Clone)]
pub struct ErrorHandlerNode {
    config: ErrorHandlerConfig,
}

#[async_trait]
impl Node for ErrorHandlerNode {
    async fn run(&self, ctx: NodeContext) -> Result<NodeOutput> {
        let Some(failure) = ctx.failure.as_deref() else {
            return Ok(NodeOutput {
                output: json!({"action": "none"}).into(),
                ..NodeOutput::default()
            });
        };
        let mut output = json!({
            "node_id": failure.node_id,
            "error": failure.message,
            "class": failure.class,
            "retries": failure.retries,
        });
        if failure.retries < self.config.retry_count {
            output["action"] = json!("retry");
            return Ok(NodeOutput {
                route: Route::RetryFailed,
                output: output.into(),
                ..NodeOutput::default()
            });
        }
        let mut delta = StateDelta::default();
        if let Some(message) = &self.config.fallback_message {
            delta.messages.push(Message::assistant(message.clone()));
        }
        let route = match self.config.fallback_action {
            FallbackAction::Continue => {
                let record = ErrorRecord {
                    node_id: failure.node_id.clone(),
                    message: failure.message.clone(),
                    kind: failure.class.clone(),
                };
                if !ctx.state.errors().contains(&record) {
                    delta.errors.push(record);
                }
                output["action"] = json!("continue");
                Route::Edges
            }
            FallbackAction::ClearErrors => {
                delta.clear_errors = true;
                output["action"] = json!("clear_errors");
                Route::Edges
            }
            FallbackAction::Stop => {
                output["action"] = json!("stop");
                Route::Stop {
                    error: Some(format!(
                        "node `{}` failed: {}",
                        failure.node_id, failure.message
                    )),
                }
            }
        };
        Ok(NodeOutput {
            delta,
            route,
            output: output.into(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::{NodeFailure, Services};
    use crate::nodes::testing::{build, context, spec};
    use crate::state::State;
    use serde_json::Value;

    async fn run(config: Value, retries: Option<u32>, state: State) -> NodeOutput {
        let s = spec("catch", "errorHandler", config);
        let node = build(&ErrorHandlerFactory, &s);
        let (mut ctx, _) = context(s, state, Services::default());
        ctx.failure = retries.map(|retries| {
            Arc::new(NodeFailure {
                node_id: "fetch".into(),
                message: "boom".into(),
                class: "tool".into(),
                retries,
            })
        });
        node.run(ctx).await.unwrap()
    }

    #[tokio::test]
    async fn retries_then_continues_recording_the_error() {
        let config = json!({"retry_count": 2, "fallback_message": "Sorry, that failed."});
        for retries in [0, 1] {
            let out = run(config.clone(), Some(retries), State::default()).await;
            assert_eq!(out.route, Route::RetryFailed);
            assert!(out.delta.is_empty());
            assert_eq!(out.output["action"], "retry");
        }
        let out = run(config, Some(2), State::default()).await;
        assert_eq!(out.route, Route::Edges);
        assert_eq!(
            out.delta,
            StateDelta {
                messages: vec![Message::assistant("Sorry, that failed.")],
                errors: vec![ErrorRecord {
                    node_id: "fetch".into(),
                    message: "boom".into(),
                    kind: "tool".into()
                }],
                ..StateDelta::default()
            }
        );
        assert_eq!(
            out.output,
            json!({"node_id": "fetch", "error": "boom", "class": "tool", "retries": 2, "action": "continue"})
        );
    }

    #[tokio::test]
    async fn continue_does_not_record_an_error_twice() {
        let mut state = State::default();
        state.apply(&StateDelta {
            errors: vec![ErrorRecord {
                node_id: "fetch".into(),
                message: "boom".into(),
                kind: "tool".into(),
            }],
            ..StateDelta::default()
        });
        let out = run(json!({}), Some(0), state).await;
        assert!(out.delta.errors.is_empty());
        assert_eq!(out.route, Route::Edges);
    }

    #[tokio::test]
    async fn clear_errors_and_stop() {
        let out = run(
            json!({"fallback_action": "clear_errors"}),
            Some(0),
            State::default(),
        )
        .await;
        assert!(out.delta.clear_errors);
        assert_eq!(out.route, Route::Edges);
        let out = run(
            json!({"fallback_action": "stop", "retry_count": 1}),
            Some(1),
            State::default(),
        )
        .await;
        assert_eq!(
            out.route,
            Route::Stop {
                error: Some("node `fetch` failed: boom".into())
            }
        );
        assert!(out.delta.is_empty());
    }

    #[tokio::test]
    async fn without_a_failure_it_does_nothing() {
        let out = run(json!({"retry_count": 3}), None, State::default()).await;
        assert_eq!(out.route, Route::Edges);
        assert!(out.delta.is_empty());
        assert_eq!(out.output, json!({"action": "none"}));
    }

    #[test]
    fn bad_configs_are_refused() {
        let err = ErrorHandlerFactory
            .build(&spec("catch", "error_handler", json!({"retry_count": 11})))
            .err()
            .unwrap();
        assert_eq!(
            err.to_string(),
            "configuration error: node `catch`: config `retry_count` must be between 0 and 10, found 11"
        );
        let err = ErrorHandlerFactory
            .build(&spec(
                "catch",
                "error_handler",
                json!({"fallback_action": "retry"}),
            ))
            .err()
            .unwrap();
        assert_eq!(
            err.to_string(),
            "configuration error: node `catch`: config `fallback_action` must be one of continue, clear_errors, stop, found \"retry\""
        );
    }
}
