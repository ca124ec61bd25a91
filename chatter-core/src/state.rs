//! Execution state and the deltas nodes return (DESIGN §5).
//!
//! Nodes never mutate state: they read a snapshot ([`State`], cheap to clone: every field is
//! shared) and return a [`StateDelta`]; the engine applies deltas in completion order and records
//! that order, so replay is exact. Deltas are serialisable: they are what a step persists.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use crate::model::{Message, Usage};
use crate::retriever::ContextChunk;

/// An error recorded in the state (`errors`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorRecord {
    /// The node that failed.
    pub node_id: String,
    /// What went wrong.
    pub message: String,
    /// The error class (`timeout`, `tool`, ...).
    pub kind: String,
}

/// The state of one loop node (`loop.<id>` in expressions).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct LoopState {
    /// Passes completed so far (0 before the first).
    pub iteration: u32,
    /// The node's bound.
    pub max_iterations: u32,
    /// Whether the loop goes on.
    #[serde(rename = "continue")]
    pub continue_loop: bool,
}

/// A change to one workflow variable.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", content = "value", rename_all = "snake_case")]
#[non_exhaustive]
pub enum VariableOp {
    /// Set the value.
    Set(Value),
    /// Append to a list (a missing variable becomes a one-element list; a non-list value becomes
    /// the first element of a list).
    Append(Value),
    /// Add a number (a missing variable counts as 0). Decrement is a negative amount.
    Increment(f64),
    /// Remove the variable.
    Delete,
}

/// What a node changes. Every field defaults to "no change".
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct StateDelta {
    /// Messages appended, in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub messages: Vec<Message>,
    /// Replace the whole message list (the memory node); applied before `messages`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replace_messages: Option<Vec<Message>>,
    /// Variable changes, applied in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub variables: Vec<(String, VariableOp)>,
    /// Replace the retrieved context.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context: Option<Vec<ContextChunk>>,
    /// Usage added.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<Usage>,
    /// Errors appended.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<ErrorRecord>,
    /// Clear `errors` (applied before appending).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub clear_errors: bool,
    /// Metadata entries merged in.
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub metadata: Map<String, Value>,
    /// Tool calls executed (added to the count).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub tool_calls: u64,
    /// Loop states set (`None` removes one: a loop left, to count afresh when re-entered).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub loops: Vec<(String, Option<LoopState>)>,
    /// The execution's final response (set by `end` nodes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response: Option<String>,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

impl StateDelta {
    /// Whether the delta changes nothing.
    pub fn is_empty(&self) -> bool {
        // Field by field: a default delta to compare with would seed a hasher for its map.
        let StateDelta {
            messages,
            replace_messages,
            variables,
            context,
            usage,
            errors,
            clear_errors,
            metadata,
            tool_calls,
            loops,
            response,
        } = self;
        messages.is_empty()
            && replace_messages.is_none()
            && variables.is_empty()
            && context.is_none()
            && usage.is_none()
            && errors.is_empty()
            && !clear_errors
            && metadata.is_empty()
            && *tool_calls == 0
            && loops.is_empty()
            && response.is_none()
    }
}

/// The state of an execution.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct State {
    input: Arc<Value>,
    messages: Arc<Vec<Message>>,
    variables: Arc<Map<String, Value>>,
    context: Arc<Vec<ContextChunk>>,
    usage: Usage,
    errors: Arc<Vec<ErrorRecord>>,
    metadata: Arc<Map<String, Value>>,
    tool_calls: u64,
    loops: Arc<BTreeMap<String, LoopState>>,
    response: Option<String>,
}

impl State {
    /// The initial state for an input: `input.message` (a string) becomes the first user message,
    /// `input.variables` (an object) seeds the variables; `history` comes first (a thread's
    /// earlier messages).
    pub fn new(input: Value, history: Vec<Message>) -> State {
        let mut messages = history;
        if let Some(text) = input.get("message").and_then(Value::as_str) {
            messages.push(Message::user(text));
        }
        let variables = input
            .get("variables")
            .and_then(Value::as_object)
            .cloned()
            .unwrap_or_default();
        State {
            input: Arc::new(input),
            messages: Arc::new(messages),
            variables: Arc::new(variables),
            ..State::default()
        }
    }

    /// The execution input.
    pub fn input(&self) -> &Value {
        &self.input
    }
    /// The messages, oldest first.
    pub fn messages(&self) -> &[Message] {
        &self.messages
    }

    /// The messages, variables and errors, taken when nothing else shares them (copied when
    /// something does): what an execution's result holds once its state is no longer needed.
    pub(crate) fn into_result_parts(self) -> (Vec<Message>, Map<String, Value>, Vec<ErrorRecord>) {
        (
            Arc::unwrap_or_clone(self.messages),
            Arc::unwrap_or_clone(self.variables),
            Arc::unwrap_or_clone(self.errors),
        )
    }

    /// The conversation, shared (a clone of the `Arc`, not of the messages): what a model
    /// request that adds nothing to it hands the model.
    pub fn shared_messages(&self) -> Arc<Vec<Message>> {
        Arc::clone(&self.messages)
    }
    /// The last message.
    pub fn last_message(&self) -> Option<&Message> {
        self.messages.last()
    }
    /// The workflow variables.
    pub fn variables(&self) -> &Map<String, Value> {
        &self.variables
    }
    /// One variable.
    pub fn variable(&self, name: &str) -> Option<&Value> {
        self.variables.get(name)
    }
    /// The retrieved context.
    pub fn context(&self) -> &[ContextChunk] {
        &self.context
    }
    /// Tokens and cost so far.
    pub fn usage(&self) -> &Usage {
        &self.usage
    }
    /// Errors recorded so far.
    pub fn errors(&self) -> &[ErrorRecord] {
        &self.errors
    }
    /// Metadata.
    pub fn metadata(&self) -> &Map<String, Value> {
        &self.metadata
    }
    /// Tool calls executed so far.
    pub fn tool_calls(&self) -> u64 {
        self.tool_calls
    }
    /// The state of a loop node.
    pub fn loop_state(&self, node_id: &str) -> Option<&LoopState> {
        self.loops.get(node_id)
    }
    /// The final response, once an `end` node set it.
    pub fn response(&self) -> Option<&str> {
        self.response.as_deref()
    }

    /// Applies a delta. Shared fields are copied only when another snapshot still holds them.
    pub fn apply(&mut self, delta: &StateDelta) {
        if let Some(replacement) = &delta.replace_messages {
            self.messages = Arc::new(replacement.clone());
        }
        if !delta.messages.is_empty() {
            Arc::make_mut(&mut self.messages).extend(delta.messages.iter().cloned());
        }
        if !delta.variables.is_empty() {
            let vars = Arc::make_mut(&mut self.variables);
            for (name, op) in &delta.variables {
                apply_variable(vars, name, op);
            }
        }
        if let Some(context) = &delta.context {
            self.context = Arc::new(context.clone());
        }
        if let Some(usage) = &delta.usage {
            self.usage.add(usage);
        }
        if delta.clear_errors {
            self.errors = Arc::new(Vec::new());
        }
        if !delta.errors.is_empty() {
            Arc::make_mut(&mut self.errors).extend(delta.errors.iter().cloned());
        }
        if !delta.metadata.is_empty() {
            let meta = Arc::make_mut(&mut self.metadata);
            for (k, v) in &delta.metadata {
                meta.insert(k.clone(), v.clone());
            }
        }
        self.tool_calls += delta.tool_calls;
        if !delta.loops.is_empty() {
            let loops = Arc::make_mut(&mut self.loops);
            for (id, state) in &delta.loops {
                match state {
                    Some(s) => {
                        loops.insert(id.clone(), *s);
                    }
                    None => {
                        loops.remove(id);
                    }
                }
            }
        }
        if let Some(response) = &delta.response {
            self.response = Some(response.clone());
        }
    }

    /// The object expressions and prompt templates are evaluated against (the keys of
    /// [`crate::expr::STATE_VARIABLES`]); `node` is `(id, kind, iteration)` of the node evaluating.
    pub fn to_context(&self, node: Option<(&str, &str, u32)>) -> Value {
        self.to_context_keys(crate::expr::STATE_VARIABLES, node)
    }

    /// As [`State::to_context`], with only the given top-level keys (an expression's or
    /// template's `state_reads()`): building `messages` costs time linear in the conversation,
    /// so a condition that reads only `tool_calls` should not pay for it on every step.
    pub fn to_context_keys(&self, keys: &[&str], node: Option<(&str, &str, u32)>) -> Value {
        let mut map = Map::new();
        for key in keys {
            let value = match *key {
                "input" => (*self.input).clone(),
                "messages" => serde_json::to_value(&*self.messages).unwrap_or(Value::Null),
                "last_message" => serde_json::to_value(self.messages.last()).unwrap_or(Value::Null),
                "variables" => Value::Object((*self.variables).clone()),
                "context" => serde_json::to_value(&*self.context).unwrap_or(Value::Null),
                "usage" => serde_json::to_value(self.usage).unwrap_or(Value::Null),
                "loop" => Value::Object(
                    self.loops
                        .iter()
                        .map(|(id, s)| (id.clone(), serde_json::to_value(s).unwrap_or(Value::Null)))
                        .collect(),
                ),
                "errors" => serde_json::to_value(&*self.errors).unwrap_or(Value::Null),
                "metadata" => Value::Object((*self.metadata).clone()),
                "tool_calls" => json!(self.tool_calls),
                "node" => node.map_or(
                    Value::Null,
                    |(id, kind, iteration)| json!({"id": id, "kind": kind, "iteration": iteration}),
                ),
                _ => continue,
            };
            map.insert((*key).to_owned(), value);
        }
        Value::Object(map)
    }
}

fn apply_variable(vars: &mut Map<String, Value>, name: &str, op: &VariableOp) {
    match op {
        VariableOp::Set(v) => {
            vars.insert(name.to_owned(), v.clone());
        }
        VariableOp::Append(v) => match vars.get_mut(name) {
            Some(Value::Array(items)) => items.push(v.clone()),
            Some(Value::Null) | None => {
                vars.insert(name.to_owned(), Value::Array(vec![v.clone()]));
            }
            Some(other) => {
                let first = other.take();
                *other = Value::Array(vec![first, v.clone()]);
            }
        },
        VariableOp::Increment(amount) => {
            let current = vars.get(name);
            let next = match current.and_then(Value::as_i64) {
                Some(i) if amount.fract() == 0.0 && amount.abs() < 9.0e15 => {
                    json!(i.saturating_add(*amount as i64))
                }
                _ => {
                    let base = current.and_then(Value::as_f64).unwrap_or(0.0);
                    let sum = base + amount;
                    if current.is_none() && amount.fract() == 0.0 && amount.abs() < 9.0e15 {
                        json!(*amount as i64)
                    } else {
                        serde_json::Number::from_f64(sum).map_or(Value::Null, Value::Number)
                    }
                }
            };
            vars.insert(name.to_owned(), next);
        }
        VariableOp::Delete => {
            vars.shift_remove(name);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn input_seeds_messages_and_variables() {
        let s = State::new(
            json!({"message": "hi", "variables": {"n": 1}}),
            vec![Message::assistant("earlier")],
        );
        assert_eq!(s.messages().len(), 2);
        assert_eq!(s.messages()[1].content, "hi");
        assert_eq!(s.variable("n"), Some(&json!(1)));
    }

    #[test]
    fn variable_ops_apply_in_order() {
        let mut s = State::default();
        let delta = StateDelta {
            variables: vec![
                ("list".into(), VariableOp::Append(json!("a"))),
                ("list".into(), VariableOp::Append(json!("b"))),
                ("count".into(), VariableOp::Increment(2.0)),
                ("count".into(), VariableOp::Increment(-1.0)),
                ("ratio".into(), VariableOp::Set(json!(1.5))),
                ("ratio".into(), VariableOp::Increment(1.0)),
                ("gone".into(), VariableOp::Set(json!(true))),
                ("gone".into(), VariableOp::Delete),
                ("scalar".into(), VariableOp::Set(json!("x"))),
                ("scalar".into(), VariableOp::Append(json!("y"))),
            ],
            ..StateDelta::default()
        };
        s.apply(&delta);
        assert_eq!(
            Value::Object(s.variables().clone()),
            json!({"list": ["a", "b"], "count": 1, "ratio": 2.5, "scalar": ["x", "y"]})
        );
    }

    #[test]
    fn a_delta_is_empty_only_when_no_field_changes_anything() {
        assert!(StateDelta::default().is_empty());
        let mut metadata = Map::new();
        metadata.insert("k".into(), json!(1));
        let changes = [
            StateDelta {
                messages: vec![Message::user("m")],
                ..StateDelta::default()
            },
            StateDelta {
                replace_messages: Some(Vec::new()),
                ..StateDelta::default()
            },
            StateDelta {
                variables: vec![("v".into(), VariableOp::Delete)],
                ..StateDelta::default()
            },
            StateDelta {
                context: Some(Vec::new()),
                ..StateDelta::default()
            },
            StateDelta {
                usage: Some(Usage::default()),
                ..StateDelta::default()
            },
            StateDelta {
                errors: vec![ErrorRecord {
                    node_id: "n".into(),
                    message: "failed".into(),
                    kind: "internal".into(),
                }],
                ..StateDelta::default()
            },
            StateDelta {
                clear_errors: true,
                ..StateDelta::default()
            },
            StateDelta {
                metadata,
                ..StateDelta::default()
            },
            StateDelta {
                tool_calls: 1,
                ..StateDelta::default()
            },
            StateDelta {
                loops: vec![("l".into(), None)],
                ..StateDelta::default()
            },
            StateDelta {
                response: Some(String::new()),
                ..StateDelta::default()
            },
        ];
        for delta in changes {
            assert!(!delta.is_empty(), "{delta:?}");
        }
    }

    #[test]
    fn snapshots_are_unaffected_by_later_deltas() {
        let mut s = State::new(json!({"message": "q"}), Vec::new());
        let snapshot = s.clone();
        s.apply(&StateDelta {
            messages: vec![Message::assistant("a")],
            tool_calls: 2,
            usage: Some(Usage {
                prompt_tokens: 3,
                completion_tokens: 4,
                total_tokens: 7,
                cost: 0.5,
            }),
            ..StateDelta::default()
        });
        assert_eq!(snapshot.messages().len(), 1);
        assert_eq!(s.messages().len(), 2);
        assert_eq!(s.tool_calls(), 2);
        assert_eq!(s.usage().total_tokens, 7);
        let ctx = s.to_context(Some(("n", "llm", 0)));
        assert_eq!(ctx["last_message"]["content"], "a");
        assert_eq!(ctx["node"]["kind"], "llm");
        assert_eq!(ctx["usage"]["total_tokens"], 7);
    }
}
