//! Helpers shared by the built-in nodes: typed config reading with precise errors, value
//! expressions, budget and cancellation checks, and the model call.

use std::future::Future;

use serde_json::Value;

use crate::definition::NodeSpec;
use crate::engine::NodeContext;
use crate::error::{Error, Result};
use crate::event::EventKind;
use crate::expr::{Expression, PromptTemplate};
use crate::model::{ChatModel, ChatRequest, Message, ObservedResponse, Role};

/// Reads one node's config, turning bad values into [`Error::Config`] naming the node and key.
pub(crate) struct Config<'a> {
    spec: &'a NodeSpec,
}

/// A human description of a JSON value's type, for error messages.
pub(crate) fn type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "an integer",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

impl<'a> Config<'a> {
    pub(crate) fn new(spec: &'a NodeSpec) -> Config<'a> {
        Config { spec }
    }

    /// The node id.
    pub(crate) fn node_id(&self) -> &str {
        self.spec.id.as_str()
    }

    /// An [`Error::Config`] about `key` of this node.
    pub(crate) fn error(&self, key: &str, message: impl std::fmt::Display) -> Error {
        Error::Config {
            message: format!("node `{}`: config `{key}` {message}", self.spec.id),
        }
    }

    /// The value of `key` (a `null` counts as absent).
    pub(crate) fn raw(&self, key: &str) -> Option<&'a Value> {
        self.spec.config.get(key).filter(|v| !v.is_null())
    }

    /// The key present among `keys` (first wins: the canonical name before old names).
    pub(crate) fn first_present<'k>(&self, keys: &[&'k str]) -> Option<(&'k str, &'a Value)> {
        keys.iter().find_map(|k| self.raw(k).map(|v| (*k, v)))
    }

    pub(crate) fn string(&self, key: &str) -> Result<Option<String>> {
        match self.raw(key) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(other) => {
                Err(self.error(key, format!("must be a string, found {}", type_name(other))))
            }
        }
    }

    /// A non-empty string.
    pub(crate) fn name(&self, key: &str) -> Result<Option<String>> {
        match self.string(key)? {
            Some(s) if s.trim().is_empty() => Err(self.error(key, "must not be empty")),
            other => Ok(other),
        }
    }

    pub(crate) fn boolean(&self, key: &str) -> Result<Option<bool>> {
        match self.raw(key) {
            None => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(other) => Err(self.error(
                key,
                format!("must be a boolean, found {}", type_name(other)),
            )),
        }
    }

    /// An integer in `min..=max`, read from the first present of `keys`.
    pub(crate) fn integer_of(&self, keys: &[&str], min: u64, max: u64) -> Result<Option<u64>> {
        let Some((key, value)) = self.first_present(keys) else {
            return Ok(None);
        };
        let n = match value {
            Value::Number(n) => n.as_u64().or_else(|| {
                n.as_f64()
                    .filter(|f| f.fract() == 0.0 && *f >= 0.0 && *f < 1e19)
                    .map(|f| f as u64)
            }),
            _ => None,
        };
        let range = if max == u64::MAX {
            format!("at least {min}")
        } else {
            format!("between {min} and {max}")
        };
        match n {
            Some(n) if (min..=max).contains(&n) => Ok(Some(n)),
            Some(_) => Err(self.error(key, format!("must be {range}, found {value}"))),
            None if value.is_number() && value.as_i64().is_some() => {
                Err(self.error(key, format!("must be {range}, found {value}")))
            }
            None => Err(self.error(
                key,
                format!("must be an integer {range}, found {}", describe(value)),
            )),
        }
    }

    pub(crate) fn integer(&self, key: &str, min: u64, max: u64) -> Result<Option<u64>> {
        self.integer_of(&[key], min, max)
    }

    /// A number in `min..=max`, read from the first present of `keys`.
    pub(crate) fn number_of(&self, keys: &[&str], min: f64, max: f64) -> Result<Option<f64>> {
        let Some((key, value)) = self.first_present(keys) else {
            return Ok(None);
        };
        match value.as_f64() {
            Some(n) if n >= min && n <= max => Ok(Some(n)),
            Some(_) => Err(self.error(
                key,
                format!("must be between {min} and {max}, found {value}"),
            )),
            None => Err(self.error(
                key,
                format!(
                    "must be a number between {min} and {max}, found {}",
                    describe(value)
                ),
            )),
        }
    }

    /// Any finite number.
    pub(crate) fn any_number(&self, key: &str) -> Result<Option<f64>> {
        match self.raw(key) {
            None => Ok(None),
            Some(v) => match v.as_f64() {
                Some(n) => Ok(Some(n)),
                None => Err(self.error(key, format!("must be a number, found {}", type_name(v)))),
            },
        }
    }

    pub(crate) fn number(&self, key: &str, min: f64, max: f64) -> Result<Option<f64>> {
        self.number_of(&[key], min, max)
    }

    /// One of `allowed` (returned as the static spelling).
    pub(crate) fn one_of(
        &self,
        key: &str,
        allowed: &[&'static str],
    ) -> Result<Option<&'static str>> {
        match self.raw(key) {
            None => Ok(None),
            Some(Value::String(s)) => allowed
                .iter()
                .find(|a| **a == s.as_str())
                .copied()
                .map(Some)
                .ok_or_else(|| {
                    self.error(
                        key,
                        format!("must be one of {}, found \"{s}\"", allowed.join(", ")),
                    )
                }),
            Some(other) => Err(self.error(
                key,
                format!(
                    "must be one of {}, found {}",
                    allowed.join(", "),
                    type_name(other)
                ),
            )),
        }
    }

    /// A list of strings.
    pub(crate) fn string_list(&self, key: &str) -> Result<Option<Vec<String>>> {
        match self.raw(key) {
            None => Ok(None),
            Some(Value::Array(items)) => items
                .iter()
                .enumerate()
                .map(|(i, item)| match item {
                    Value::String(s) => Ok(s.clone()),
                    other => Err(self.error(
                        &format!("{key}[{i}]"),
                        format!("must be a string, found {}", type_name(other)),
                    )),
                })
                .collect::<Result<Vec<_>>>()
                .map(Some),
            Some(other) => Err(self.error(
                key,
                format!("must be a list of strings, found {}", type_name(other)),
            )),
        }
    }

    /// A prompt template, compiled.
    pub(crate) fn template_of(&self, keys: &[&str]) -> Result<Option<PromptTemplate>> {
        let Some((key, value)) = self.first_present(keys) else {
            return Ok(None);
        };
        let Value::String(source) = value else {
            return Err(self.error(
                key,
                format!("must be a template string, found {}", type_name(value)),
            ));
        };
        PromptTemplate::compile(source)
            .map(Some)
            .map_err(|e| self.error(key, format!("is not a valid template: {e}")))
    }

    pub(crate) fn template(&self, key: &str) -> Result<Option<PromptTemplate>> {
        self.template_of(&[key])
    }

    /// A condition expression, compiled.
    pub(crate) fn expression(&self, key: &str) -> Result<Option<Expression>> {
        match self.raw(key) {
            None => Ok(None),
            Some(Value::String(source)) => {
                Expression::compile(source).map(Some).map_err(|e| match e {
                    Error::Expression {
                        expression,
                        message,
                    } => Error::Expression {
                        expression,
                        message: format!("node `{}`, config `{key}`: {message}", self.spec.id),
                    },
                    other => other,
                })
            }
            Some(Value::Bool(b)) => {
                Expression::compile(if *b { "true" } else { "false" }).map(Some)
            }
            Some(other) => Err(self.error(
                key,
                format!("must be an expression string, found {}", type_name(other)),
            )),
        }
    }
}

fn describe(value: &Value) -> String {
    match value {
        Value::Number(_) => value.to_string(),
        other => type_name(other).to_owned(),
    }
}

/// Whether `name` is an identifier `[A-Za-z_][A-Za-z0-9_]*`.
pub(crate) fn is_identifier(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Refuses a model call when the execution's token or cost budget is spent.
pub(crate) fn check_budget(ctx: &NodeContext) -> Result<()> {
    if ctx.tokens_left == Some(0) {
        return Err(Error::LimitExceeded {
            limit: "max_tokens".into(),
            message: format!(
                "the execution's token budget is spent; node `{}` did not call the model",
                ctx.node_id()
            ),
        });
    }
    if let Some(cost) = ctx.cost_left
        && cost <= 0.0
    {
        return Err(Error::LimitExceeded {
            limit: "max_cost".into(),
            message: format!(
                "the execution's cost budget is spent; node `{}` did not call the model",
                ctx.node_id()
            ),
        });
    }
    Ok(())
}

/// The error of a node run stopped by `ctx.cancel`.
pub(crate) fn cancelled(ctx: &NodeContext) -> Error {
    Error::Cancelled {
        reason: format!("node `{}` was cancelled", ctx.node_id()),
    }
}

/// Runs `fut` unless (or until) the node is cancelled.
pub(crate) async fn cancellable<T>(
    ctx: &NodeContext,
    fut: impl Future<Output = Result<T>>,
) -> Result<T> {
    if ctx.cancel.is_cancelled() {
        return Err(cancelled(ctx));
    }
    // Most calls (a Python tool, a scripted model) finish on their first poll: that poll needs
    // no cancellation future (registering one takes the token's locks). A call that waits is
    // raced against the token from then on, the token first.
    let mut fut = std::pin::pin!(fut);
    if let std::task::Poll::Ready(result) = futures::poll!(fut.as_mut()) {
        return result;
    }
    tokio::select! {
        biased;
        () = ctx.cancel.cancelled() => Err(cancelled(ctx)),
        result = fut => result,
    }
}

/// Calls a model, streaming tokens as `token` events when `stream` is set, cancellable. Models
/// that route or fall back (the orchestrator's) emit their `model_*` events to the node's event
/// sink and return a report of how the call was served.
pub(crate) async fn call_model(
    ctx: &NodeContext,
    model: &dyn ChatModel,
    request: ChatRequest,
    stream: bool,
) -> Result<ObservedResponse> {
    let events = ctx.events.as_ref();
    if stream {
        let node_id = ctx.node_id().to_owned();
        let token_events = ctx.events.clone();
        let sink = move |text: &str| {
            if token_events.keeps_events() {
                token_events.emit(EventKind::Token {
                    node_id: node_id.clone(),
                    text: text.to_owned(),
                });
            }
        };
        cancellable(ctx, model.chat_observed(request, Some(&sink), events)).await
    } else {
        cancellable(ctx, model.chat_observed(request, None, events)).await
    }
}

/// The text of a JSON value as put into a message: strings as they are, the rest as JSON.
pub(crate) fn value_text(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// The content of the last message with this role.
pub(crate) fn last_content(messages: &[Message], role: Role) -> Option<&str> {
    messages
        .iter()
        .rev()
        .find(|m| m.role == role)
        .map(|m| m.content.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Map, json};

    fn spec(config: Value) -> NodeSpec {
        let Value::Object(map) = config else {
            panic!("config must be an object")
        };
        NodeSpec::new("n1", "llm", map)
    }

    #[test]
    fn config_errors_name_node_key_and_problem() {
        let s = spec(
            json!({"temperature": 3, "top_p": "x", "max_tokens": 1.5, "stop": ["a", 2],
                            "stream": "yes", "tool_choice": "maybe"}),
        );
        let c = Config::new(&s);
        let msg = |e: Error| e.to_string();
        assert_eq!(
            msg(c.number("temperature", 0.0, 2.0).unwrap_err()),
            "configuration error: node `n1`: config `temperature` must be between 0 and 2, found 3"
        );
        assert_eq!(
            msg(c.number("top_p", 0.0, 1.0).unwrap_err()),
            "configuration error: node `n1`: config `top_p` must be a number between 0 and 1, found a string"
        );
        assert_eq!(
            msg(c.integer("max_tokens", 1, 10).unwrap_err()),
            "configuration error: node `n1`: config `max_tokens` must be an integer between 1 and 10, found 1.5"
        );
        assert_eq!(
            msg(c.string_list("stop").unwrap_err()),
            "configuration error: node `n1`: config `stop[1]` must be a string, found an integer"
        );
        assert_eq!(
            msg(c.boolean("stream").unwrap_err()),
            "configuration error: node `n1`: config `stream` must be a boolean, found a string"
        );
        assert_eq!(
            msg(c
                .one_of("tool_choice", &["auto", "none", "required"])
                .unwrap_err()),
            "configuration error: node `n1`: config `tool_choice` must be one of auto, none, required, found \"maybe\""
        );
    }

    #[test]
    fn config_reads_values_and_old_names() {
        let s = spec(json!({"max_documents": 7, "n": 4.0, "absent": null}));
        let c = Config::new(&s);
        assert_eq!(
            c.integer_of(&["top_k", "max_documents"], 1, 100).unwrap(),
            Some(7)
        );
        assert_eq!(c.integer("n", 1, 10).unwrap(), Some(4));
        assert_eq!(c.integer("absent", 1, 10).unwrap(), None);
        assert_eq!(c.integer("missing", 1, 10).unwrap(), None);
        let empty = NodeSpec::new("n2", "llm", Map::new());
        assert_eq!(Config::new(&empty).string("x").unwrap(), None);
    }

    #[test]
    fn identifiers() {
        assert!(is_identifier("count_2"));
        assert!(is_identifier("_x"));
        assert!(!is_identifier("2x"));
        assert!(!is_identifier("a-b"));
        assert!(!is_identifier(""));
    }

    #[test]
    fn value_expressions_yield_values() {
        let ctx = json!({"variables": {"xs": [1, 2, 3]}, "input": {"n": 2}});
        let e = Expression::compile("variables.xs").unwrap();
        assert_eq!(e.eval_json(&ctx).unwrap(), json!([1, 2, 3]));
        let e = Expression::compile("variables.xs[:input.n]").unwrap();
        assert_eq!(e.eval_json(&ctx).unwrap(), json!([1, 2]));
        let e = Expression::compile("variables.missing").unwrap();
        assert_eq!(e.eval_json(&ctx).unwrap(), Value::Null);
        let err = Expression::compile("items").unwrap_err();
        assert!(
            err.to_string().contains("unknown variable `items`"),
            "{err}"
        );
        assert!(Expression::compile("variables.(").is_err());
        assert!(Expression::compile("  ").is_err());
    }

    #[test]
    fn value_expressions_are_bounded_by_fuel() {
        // A constant that exhausts the fuel is refused when compiled...
        let err = Expression::compile("range(100000) | map('string') | join(',')").unwrap_err();
        assert!(err.to_string().to_lowercase().contains("fuel"), "{err}");
        // ...and one over the state when evaluated.
        let e = Expression::compile("range(input.n) | map('string') | join(',')").unwrap();
        let err = e.eval_json(&json!({"input": {"n": 100000}})).unwrap_err();
        assert!(err.to_string().to_lowercase().contains("fuel"), "{err}");
    }
}
