//! Fast paths for the commonest conditions.
//!
//! A loop or a ReAct agent evaluates its condition on every pass; going through minijinja means
//! converting the context to engine values each time. The shapes below are recognised at compile
//! time (on the translated text) and evaluated straight on the JSON context. They only answer
//! when the values they meet are ones whose result is certain (an integer compared with an
//! integer, a list of tool calls, ...); for anything else they return `None` and the expression
//! is evaluated by minijinja as before, so the result is always the same.

use serde_json::Value;

use crate::state::State;

/// A comparison operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Op {
    Lt,
    Le,
    Gt,
    Ge,
    Eq,
    Ne,
}

impl Op {
    fn parse(text: &str) -> Option<Op> {
        Some(match text {
            "<" => Op::Lt,
            "<=" => Op::Le,
            ">" => Op::Gt,
            ">=" => Op::Ge,
            "==" => Op::Eq,
            "!=" => Op::Ne,
            _ => return None,
        })
    }

    fn holds<T: PartialOrd>(self, a: T, b: T) -> bool {
        match self {
            Op::Lt => a < b,
            Op::Le => a <= b,
            Op::Gt => a > b,
            Op::Ge => a >= b,
            Op::Eq => a == b,
            Op::Ne => a != b,
        }
    }
}

/// What a comparison reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Operand {
    /// `tool_calls`.
    ToolCalls,
    /// `variables.<name>`.
    Variable(String),
}

/// A condition with a fast path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Fast {
    /// `(last_message.tool_calls or []) | length > 0` (`has_tool_calls`), or `== 0`
    /// (`no_tool_calls`) when `false`.
    HasToolCalls(bool),
    /// `<operand> <op> <integer>`.
    Compare(Operand, Op, i64),
}

/// Integers whose conversion to `f64` is exact (minijinja compares an integer with a float as
/// two floats).
const EXACT_F64: i64 = 1 << 53;

impl Fast {
    /// Recognises a translated expression, if it has one of the fast shapes.
    pub(super) fn recognise(translated: &str) -> Option<Fast> {
        match translated {
            "(last_message.tool_calls or []) | length > 0" => {
                return Some(Fast::HasToolCalls(true));
            }
            "(last_message.tool_calls or []) | length == 0" => {
                return Some(Fast::HasToolCalls(false));
            }
            _ => {}
        }
        let mut words = translated.split_ascii_whitespace();
        let (Some(lhs), Some(op), Some(rhs), None) =
            (words.next(), words.next(), words.next(), words.next())
        else {
            return None;
        };
        let operand = if lhs == "tool_calls" {
            Operand::ToolCalls
        } else {
            let name = lhs.strip_prefix("variables.")?;
            let mut chars = name.chars();
            let starts = chars
                .next()
                .is_some_and(|c| c.is_ascii_alphabetic() || c == '_');
            if !starts || !chars.all(|c| c.is_ascii_alphanumeric() || c == '_') {
                return None;
            }
            Operand::Variable(name.to_owned())
        };
        let op = Op::parse(op)?;
        let digits = rhs.strip_prefix('-').unwrap_or(rhs);
        if digits.is_empty() || digits.len() > 15 || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let literal: i64 = rhs.parse().ok()?;
        Some(Fast::Compare(operand, op, literal))
    }

    /// The value of the condition on `context`, when certain; `None` to evaluate it fully.
    pub(super) fn eval(&self, context: &Value) -> Option<bool> {
        let map = context.as_object()?;
        match self {
            Fast::HasToolCalls(has) => {
                let last = map.get("last_message")?.as_object()?;
                let count = match last.get("tool_calls") {
                    None | Some(Value::Null) => 0,
                    Some(Value::Array(calls)) => calls.len(),
                    Some(_) => return None,
                };
                Some((count > 0) == *has)
            }
            Fast::Compare(operand, op, literal) => {
                let value = match operand {
                    Operand::ToolCalls => map.get("tool_calls")?,
                    Operand::Variable(name) => map.get("variables")?.as_object()?.get(name)?,
                };
                compare(value, *op, *literal)
            }
        }
    }

    /// The value of the condition read straight from the state, without building a context:
    /// the same answer as [`Fast::eval`] on the state's context (`last_message` is the state's
    /// last message as JSON, whose `tool_calls` is a list, absent when empty).
    pub(super) fn eval_state(&self, state: &State) -> Option<bool> {
        match self {
            Fast::HasToolCalls(has) => Some(
                state
                    .last_message()
                    .is_some_and(|m| !m.tool_calls.is_empty())
                    == *has,
            ),
            Fast::Compare(Operand::ToolCalls, op, literal) => {
                compare(&Value::from(state.tool_calls()), *op, *literal)
            }
            Fast::Compare(Operand::Variable(name), op, literal) => {
                compare(state.variables().get(name)?, *op, *literal)
            }
        }
    }
}

/// `value <op> literal` when `value` is a number whose comparison is certain.
fn compare(value: &Value, op: Op, literal: i64) -> Option<bool> {
    let Value::Number(number) = value else {
        return None;
    };
    if let Some(i) = number.as_i64() {
        Some(op.holds(i, literal))
    } else if number.is_f64() {
        let f = number.as_f64()?;
        if f.is_nan() || literal.abs() >= EXACT_F64 {
            return None;
        }
        #[allow(clippy::cast_precision_loss)]
        Some(op.holds(f, literal as f64))
    } else {
        None
    }
}
