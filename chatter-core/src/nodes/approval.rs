//! The `approval` node: an interrupt. It pauses the execution until a person (or a program)
//! resumes it with a decision.
//!
//! **Config:**
//! - `question` (template, required): what the person is asked, rendered against the state.
//! - `allowed_decisions` (list of strings, default `["approve", "reject"]`): the decisions a
//!   resume may carry.
//! - `timeout_ms` (default 0: none): how long to wait; once it passes, the execution's
//!   `wake_at` is due and a resumer ([`crate::tracker::WorkflowTracker::resume_due`]) resumes it
//!   with `timeout_decision`.
//! - `timeout_decision`: the decision taken on timeout (one of `allowed_decisions`).
//! - `input_schema`: JSON Schema the resume's input (when it brings one) must satisfy.
//!
//! **First run:** emits `interrupted` (node, question, allowed decisions) and answers
//! [`Route::Wait`]: the node run is `waiting` and the execution ends `waiting` once nothing else
//! can run. **Run again on resume** (with [`NodeContext::resume_input`]
//! `{decision, input, timed_out}`): writes `variables.<node id> = {decision, input, timed_out}`
//! and takes the branch named after the decision (`sourceHandle: "approve"`), or, when its
//! out-edges name no branch, routes by their conditions (which can read the variable). The
//! branches not taken are dead, so an approval and a rejection are never both executed.

use std::sync::Arc;

use async_trait::async_trait;
use serde_json::{Value, json};

use crate::definition::NodeSpec;
use crate::engine::{Node, NodeContext, NodeFactory, NodeOutput, Route};
use crate::error::{Error, Result};
use crate::event::EventKind;
use crate::expr::PromptTemplate;
use crate::nodes::common::Config;
use crate::state::{StateDelta, VariableOp};

/// Config of an `approval` node.
#[derive(Debug, Clone)]
pub struct ApprovalConfig {
    /// The node's id.
    pub node_id: String,
    /// `question`.
    pub question: PromptTemplate,
    /// `allowed_decisions`.
    pub allowed_decisions: Vec<String>,
    /// `timeout_ms` (0: none).
    pub timeout_ms: u64,
    /// `timeout_decision`.
    pub timeout_decision: Option<String>,
    /// `input_schema`.
    pub input_schema: Option<Value>,
}

impl ApprovalConfig {
    /// Reads the config of `spec`.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] for a missing question, an empty decision list, a timeout decision
    /// that is not allowed (or missing while `timeout_ms` is set), an input schema that is not
    /// an object.
    pub fn from_spec(spec: &NodeSpec) -> Result<ApprovalConfig> {
        let config = Config::new(spec);
        let question = config
            .template("question")?
            .ok_or_else(|| config.error("question", "is required"))?;
        let allowed_decisions = config
            .string_list("allowed_decisions")?
            .unwrap_or_else(|| vec!["approve".into(), "reject".into()]);
        if allowed_decisions.is_empty() {
            return Err(config.error("allowed_decisions", "must name at least one decision"));
        }
        let timeout_ms = config.integer("timeout_ms", 0, u64::MAX)?.unwrap_or(0);
        let timeout_decision = config.name("timeout_decision")?;
        if let Some(decision) = &timeout_decision
            && !allowed_decisions.contains(decision)
        {
            return Err(config.error(
                "timeout_decision",
                format!("`{decision}` is not one of allowed_decisions {allowed_decisions:?}"),
            ));
        }
        if timeout_ms > 0 && timeout_decision.is_none() {
            return Err(config.error("timeout_decision", "is required when timeout_ms is set"));
        }
        let input_schema = match config.raw("input_schema") {
            None | Some(Value::Null) => None,
            Some(schema @ Value::Object(_)) => Some(schema.clone()),
            Some(_) => return Err(config.error("input_schema", "must be an object")),
        };
        Ok(ApprovalConfig {
            node_id: spec.id.as_str().to_owned(),
            question,
            allowed_decisions,
            timeout_ms,
            timeout_decision,
            input_schema,
        })
    }

    /// Checks a resume's decision and input against the config.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidInput`] naming the allowed decisions, or every way the input (when not
    /// null) breaks `input_schema`.
    pub fn check_decision(&self, decision: &str, input: &Value) -> Result<()> {
        if !self.allowed_decisions.iter().any(|d| d == decision) {
            return Err(Error::InvalidInput {
                message: format!(
                    "decision `{decision}` is not allowed at approval `{}`; allowed: {}",
                    self.node_id,
                    self.allowed_decisions.join(", ")
                ),
            });
        }
        if let Some(schema) = self.input_schema.as_ref().filter(|_| !input.is_null()) {
            let issues = crate::registry::check_schema(schema, input);
            if !issues.is_empty() {
                let issues: Vec<String> = issues.iter().map(ToString::to_string).collect();
                return Err(Error::InvalidInput {
                    message: format!(
                        "the input of approval `{}` does not match its input_schema: {}",
                        self.node_id,
                        issues.join("; ")
                    ),
                });
            }
        }
        Ok(())
    }
}

/// Builds [`ApprovalNode`]s.
#[derive(Debug, Clone, Copy, Default)]
pub struct ApprovalFactory;

impl NodeFactory for ApprovalFactory {
    fn build(&self, spec: &NodeSpec) -> Result<Arc<dyn Node>> {
        Ok(Arc::new(ApprovalNode {
            config: ApprovalConfig::from_spec(spec)?,
        }))
    }
}

/// Pauses for a decision.
#[derive(Debug, Clone)]
pub struct ApprovalNode {
    config: ApprovalConfig,
}

#[async_trait]
impl Node for ApprovalNode {
    async fn run(&self, ctx: NodeContext) -> Result<NodeOutput> {
        let config = &self.config;
        if let Some(resume) = &ctx.resume_input {
            let decision = resume
                .get("decision")
                .and_then(Value::as_str)
                .unwrap_or_default();
            let input = resume.get("input").cloned().unwrap_or(Value::Null);
            config.check_decision(decision, &input)?;
            let timed_out = resume
                .get("timed_out")
                .and_then(Value::as_bool)
                .unwrap_or(false);
            let record = json!({"decision": decision, "input": input, "timed_out": timed_out});
            return Ok(NodeOutput {
                delta: StateDelta {
                    variables: vec![(config.node_id.clone(), VariableOp::Set(record.clone()))],
                    ..StateDelta::default()
                },
                route: Route::Branch(decision.to_owned()),
                output: record.into(),
            });
        }
        let keys = config.question.state_reads().to_vec();
        let question = config.question.render(&ctx.expr_context_for(&keys))?;
        ctx.emit(EventKind::Interrupted {
            node_id: config.node_id.clone(),
            question: question.clone(),
            allowed_decisions: config.allowed_decisions.clone(),
        });
        let mut output = json!({
            "question": question,
            "allowed_decisions": config.allowed_decisions,
        });
        if config.timeout_ms > 0 {
            let wake_at = ctx
                .services
                .clock
                .now_ms()
                .saturating_add(i64::try_from(config.timeout_ms).unwrap_or(i64::MAX));
            output["wake_at"] = json!(wake_at);
            output["timeout_decision"] = json!(config.timeout_decision);
        }
        Ok(NodeOutput {
            delta: StateDelta::default(),
            route: Route::Wait,
            output: output.into(),
        })
    }
}
