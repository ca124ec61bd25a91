//! The `variable` node: changes or reads one workflow variable.
//!
//! **Config:**
//! - `operation` (required): `set`, `get`, `append`, `increment`, `decrement` or `delete`.
//! - `variable_name` (required): an identifier `[A-Za-z_][A-Za-z0-9_]*`.
//! - `value` (any JSON) or `value_template` (a template, rendered against the state to a string;
//!   it wins over `value`): the value of `set` and `append` (one of them is required there).
//! - `amount` (number, default 1): the step of `increment` / `decrement`.
//! - `output_variable`: for `get`, the variable receiving a copy of the value (`null` when the
//!   variable is missing).
//!
//! **Semantics.** `append` to a missing variable creates a one-element list (a scalar becomes the
//! first element of a list). `increment`/`decrement` count a missing variable as 0 and fail on a
//! variable that holds something other than a number. `delete` of a missing variable does
//! nothing.
//!
//! **Reads:** `variables` (and the state for `value_template`). **Writes:** `variables`.
//! Output: `{operation, variable, value}` with the variable's value after the operation.

use std::sync::Arc;

use async_trait::async_trait;
use serde_json::{Map, Value, json};

use crate::definition::NodeSpec;
use crate::engine::{Node, NodeContext, NodeFactory, NodeOutput};
use crate::error::{ErrorClass, Result};
use crate::expr::PromptTemplate;
use crate::nodes::common::{Config, is_identifier, type_name};
use crate::state::{StateDelta, VariableOp};

/// What a `variable` node does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Operation {
    /// Set the value.
    Set,
    /// Copy the value into `output_variable`.
    Get,
    /// Append to a list.
    Append,
    /// Add `amount`.
    Increment,
    /// Subtract `amount`.
    Decrement,
    /// Remove the variable.
    Delete,
}

/// The value a `set`/`append` writes.
#[derive(Debug, Clone)]
pub enum ValueSource {
    /// `value`, as given.
    Literal(Value),
    /// `value_template`, rendered to a string.
    Template(PromptTemplate),
}

/// Config of a `variable` node.
#[derive(Debug, Clone)]
pub struct VariableConfig {
    /// `operation`.
    pub operation: Operation,
    /// `variable_name`.
    pub variable_name: String,
    /// `value` / `value_template` (required by `set` and `append`).
    pub value: Option<ValueSource>,
    /// `amount`.
    pub amount: f64,
    /// `output_variable`.
    pub output_variable: Option<String>,
}

impl VariableConfig {
    /// Reads and checks the config of `spec`.
    ///
    /// # Errors
    ///
    /// [`crate::Error::Config`] naming the node and key: a missing or unknown `operation`, a
    /// missing or non-identifier `variable_name`, a `set`/`append` without a value, a bad type.
    pub fn from_spec(spec: &NodeSpec) -> Result<VariableConfig> {
        let c = Config::new(spec);
        let operation = match c.one_of(
            "operation",
            &["set", "get", "append", "increment", "decrement", "delete"],
        )? {
            Some("set") => Operation::Set,
            Some("get") => Operation::Get,
            Some("append") => Operation::Append,
            Some("increment") => Operation::Increment,
            Some("decrement") => Operation::Decrement,
            Some(_) => Operation::Delete,
            None => return Err(c.error("operation", "is required")),
        };
        let variable_name = c
            .string("variable_name")?
            .ok_or_else(|| c.error("variable_name", "is required"))?;
        if !is_identifier(&variable_name) {
            return Err(c.error(
                "variable_name",
                format!(
                    "must be an identifier ([A-Za-z_][A-Za-z0-9_]*), found \"{variable_name}\""
                ),
            ));
        }
        let value = match c.template("value_template")? {
            Some(t) => Some(ValueSource::Template(t)),
            None => spec.config.get("value").cloned().map(ValueSource::Literal),
        };
        if value.is_none() && matches!(operation, Operation::Set | Operation::Append) {
            return Err(c.error("value", "or `value_template` is required by this operation"));
        }
        let output_variable = c.name("output_variable")?;
        if let Some(out) = &output_variable
            && !is_identifier(out)
        {
            return Err(c.error(
                "output_variable",
                format!("must be an identifier ([A-Za-z_][A-Za-z0-9_]*), found \"{out}\""),
            ));
        }
        Ok(VariableConfig {
            operation,
            variable_name,
            value,
            amount: c.any_number("amount")?.unwrap_or(1.0),
            output_variable,
        })
    }
}

/// Builds [`VariableNode`]s.
#[derive(Debug, Clone, Copy, Default)]
pub struct VariableFactory;

impl NodeFactory for VariableFactory {
    fn build(&self, spec: &NodeSpec) -> Result<Arc<dyn Node>> {
        Ok(Arc::new(VariableNode {
            config: VariableConfig::from_spec(spec)?,
        }))
    }
}

/// Changes or reads a variable.
#[derive(Debug, Clone)]
pub struct VariableNode {
    config: VariableConfig,
}

impl VariableNode {
    fn value(&self, ctx: &NodeContext) -> Result<Value> {
        match &self.config.value {
            Some(ValueSource::Template(t)) => Ok(Value::String(
                t.render(&ctx.expr_context_for(t.state_reads()))?,
            )),
            Some(ValueSource::Literal(v)) => Ok(v.clone()),
            None => Ok(Value::Null),
        }
    }
}

#[async_trait]
impl Node for VariableNode {
    /// It only computes from the state: in `sync` mode its step rides with the next write.
    fn pure(&self) -> bool {
        true
    }

    async fn run(&self, ctx: NodeContext) -> Result<NodeOutput> {
        let name = &self.config.variable_name;
        let current = ctx.state.variable(name);
        let op = match self.config.operation {
            Operation::Set => Some(VariableOp::Set(self.value(&ctx)?)),
            Operation::Append => Some(VariableOp::Append(self.value(&ctx)?)),
            Operation::Increment | Operation::Decrement => {
                if let Some(v) = current.filter(|v| !v.is_null() && !v.is_number()) {
                    return Err(ctx.error(
                        ErrorClass::Internal,
                        format!("variable `{name}` holds {}, not a number", type_name(v)),
                    ));
                }
                let amount = if self.config.operation == Operation::Decrement {
                    -self.config.amount
                } else {
                    self.config.amount
                };
                Some(VariableOp::Increment(amount))
            }
            Operation::Delete => Some(VariableOp::Delete),
            Operation::Get => None,
        };
        let mut delta = StateDelta::default();
        let value_after = match op {
            Some(op) => {
                // The value after the change, computed the way the engine will apply it.
                let mut scratch = Map::new();
                if let Some(v) = current {
                    scratch.insert(name.clone(), v.clone());
                }
                let mut state =
                    crate::state::State::new(json!({ "variables": scratch }), Vec::new());
                let change = StateDelta {
                    variables: vec![(name.clone(), op.clone())],
                    ..StateDelta::default()
                };
                state.apply(&change);
                delta.variables.push((name.clone(), op));
                state.variable(name).cloned().unwrap_or(Value::Null)
            }
            None => {
                let value = current.cloned().unwrap_or(Value::Null);
                if let Some(out) = &self.config.output_variable {
                    delta
                        .variables
                        .push((out.clone(), VariableOp::Set(value.clone())));
                }
                value
            }
        };
        let operation = match self.config.operation {
            Operation::Set => "set",
            Operation::Get => "get",
            Operation::Append => "append",
            Operation::Increment => "increment",
            Operation::Decrement => "decrement",
            Operation::Delete => "delete",
        };
        Ok(NodeOutput {
            delta,
            output: json!({"operation": operation, "variable": name, "value": value_after}).into(),
            ..NodeOutput::default()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::{Route, Services};
    use crate::nodes::testing::{build, context, spec};
    use crate::state::State;

    async fn run(config: Value, vars: Value) -> Result<NodeOutput> {
        let s = spec("var", "variable", config);
        let node = build(&VariableFactory, &s);
        let state = State::new(json!({ "variables": vars }), vec![]);
        node.run(context(s, state, Services::default()).0).await
    }

    fn applied(vars: Value, out: &NodeOutput) -> Value {
        let mut state = State::new(json!({ "variables": vars }), vec![]);
        state.apply(&out.delta);
        Value::Object(state.variables().clone())
    }

    #[tokio::test]
    async fn append_to_a_missing_variable_creates_the_list() {
        let out = run(
            json!({"operation": "append", "variable_name": "seen", "value": "a"}),
            json!({}),
        )
        .await
        .unwrap();
        assert_eq!(
            out.delta.variables,
            vec![("seen".to_owned(), VariableOp::Append(json!("a")))]
        );
        assert_eq!(
            out.output,
            json!({"operation": "append", "variable": "seen", "value": ["a"]})
        );
        assert_eq!(applied(json!({}), &out), json!({"seen": ["a"]}));
        let out = run(
            json!({"operation": "append", "variable_name": "seen", "value": "b"}),
            json!({"seen": ["a"]}),
        )
        .await
        .unwrap();
        assert_eq!(
            applied(json!({"seen": ["a"]}), &out),
            json!({"seen": ["a", "b"]})
        );
        assert_eq!(out.route, Route::Edges);
    }

    #[tokio::test]
    async fn set_get_delete() {
        let out = run(
            json!({"operation": "set", "variable_name": "x", "value": {"k": [1]}}),
            json!({}),
        )
        .await
        .unwrap();
        assert_eq!(applied(json!({}), &out), json!({"x": {"k": [1]}}));
        let out = run(json!({"operation": "set", "variable_name": "x", "value_template": "plain text", "value": 1}), json!({})).await.unwrap();
        assert_eq!(
            out.delta.variables,
            vec![("x".to_owned(), VariableOp::Set(json!("plain text")))]
        );
        let out = run(
            json!({"operation": "get", "variable_name": "x", "output_variable": "copy"}),
            json!({"x": 4}),
        )
        .await
        .unwrap();
        assert_eq!(
            out.delta.variables,
            vec![("copy".to_owned(), VariableOp::Set(json!(4)))]
        );
        assert_eq!(out.output["value"], 4);
        let out = run(
            json!({"operation": "get", "variable_name": "nope", "output_variable": "copy"}),
            json!({}),
        )
        .await
        .unwrap();
        assert_eq!(
            out.delta.variables,
            vec![("copy".to_owned(), VariableOp::Set(Value::Null))]
        );
        let out = run(
            json!({"operation": "get", "variable_name": "x"}),
            json!({"x": 4}),
        )
        .await
        .unwrap();
        assert!(out.delta.is_empty());
        let out = run(
            json!({"operation": "delete", "variable_name": "x"}),
            json!({"x": 4, "y": 1}),
        )
        .await
        .unwrap();
        assert_eq!(applied(json!({"x": 4, "y": 1}), &out), json!({"y": 1}));
        assert_eq!(out.output["value"], Value::Null);
    }

    #[tokio::test]
    async fn value_template_is_rendered() {
        let out = run(json!({"operation": "set", "variable_name": "greeting", "value_template": "hi {{ variables.name }}"}), json!({"name": "Ada"})).await.unwrap();
        assert_eq!(
            out.delta.variables,
            vec![("greeting".to_owned(), VariableOp::Set(json!("hi Ada")))]
        );
    }

    #[tokio::test]
    async fn increment_and_decrement() {
        let out = run(
            json!({"operation": "increment", "variable_name": "n"}),
            json!({}),
        )
        .await
        .unwrap();
        assert_eq!(applied(json!({}), &out), json!({"n": 1}));
        assert_eq!(out.output["value"], 1);
        let out = run(
            json!({"operation": "decrement", "variable_name": "n", "amount": 2}),
            json!({"n": 5}),
        )
        .await
        .unwrap();
        assert_eq!(
            out.delta.variables,
            vec![("n".to_owned(), VariableOp::Increment(-2.0))]
        );
        assert_eq!(applied(json!({"n": 5}), &out), json!({"n": 3}));
        let out = run(
            json!({"operation": "increment", "variable_name": "n", "amount": 0.5}),
            json!({"n": 1}),
        )
        .await
        .unwrap();
        assert_eq!(out.output["value"], 1.5);
        let err = run(
            json!({"operation": "increment", "variable_name": "n"}),
            json!({"n": "seven"}),
        )
        .await
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "node `var` failed: variable `n` holds a string, not a number"
        );
    }

    #[test]
    fn bad_configs_are_refused() {
        let cases = [
            (
                json!({"variable_name": "x"}),
                "config `operation` is required",
            ),
            (
                json!({"operation": "mul", "variable_name": "x"}),
                "config `operation` must be one of set, get, append, increment, decrement, delete, found \"mul\"",
            ),
            (
                json!({"operation": "get"}),
                "config `variable_name` is required",
            ),
            (
                json!({"operation": "get", "variable_name": "a-b"}),
                "config `variable_name` must be an identifier ([A-Za-z_][A-Za-z0-9_]*), found \"a-b\"",
            ),
            (
                json!({"operation": "set", "variable_name": "x"}),
                "config `value` or `value_template` is required by this operation",
            ),
            (
                json!({"operation": "increment", "variable_name": "x", "amount": "2"}),
                "config `amount` must be a number, found a string",
            ),
        ];
        for (config, message) in cases {
            let err = VariableFactory
                .build(&spec("var", "variable", config))
                .err()
                .unwrap();
            assert_eq!(
                err.to_string(),
                format!("configuration error: node `var`: {message}")
            );
        }
    }
}
