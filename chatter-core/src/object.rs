//! JSON objects of fixed keys, built without hashing their keys.

use std::sync::OnceLock;

use serde_json::{Map, Number, Value};

use crate::model::{Message, ToolCall, Usage};

/// The keys of an object, in order. Its objects are copies of a template of these keys whose
/// values are then set in place: an insert into a `serde_json` map hashes its key with SipHash
/// (about half the cost of building a small object), while a copy keeps the template's hashes.
pub(crate) struct Keys<const N: usize> {
    names: [&'static str; N],
    template: OnceLock<Map<String, Value>>,
}

impl<const N: usize> Keys<N> {
    /// Objects of these keys, in this order (each key once).
    pub(crate) const fn new(names: [&'static str; N]) -> Keys<N> {
        Keys {
            names,
            template: OnceLock::new(),
        }
    }

    /// The object of these keys with `values`, in the keys' order.
    pub(crate) fn object(&self, values: [Value; N]) -> Value {
        let template = self.template.get_or_init(|| {
            let map: Map<String, Value> = self
                .names
                .iter()
                .map(|k| ((*k).to_owned(), Value::Null))
                .collect();
            debug_assert_eq!(map.len(), N, "repeated key in {:?}", self.names);
            map
        });
        let mut map = template.clone();
        for (slot, value) in map.values_mut().zip(values) {
            *slot = value;
        }
        Value::Object(map)
    }
}

/// A usage as `serde` writes it (`prompt_tokens`, `completion_tokens`, `total_tokens`, `cost`;
/// a cost JSON cannot hold is `null`).
pub(crate) fn usage(usage: &Usage) -> Value {
    static USAGE: Keys<4> =
        Keys::new(["prompt_tokens", "completion_tokens", "total_tokens", "cost"]);
    USAGE.object([
        Value::from(usage.prompt_tokens),
        Value::from(usage.completion_tokens),
        Value::from(usage.total_tokens),
        Number::from_f64(usage.cost).map_or(Value::Null, Value::Number),
    ])
}

/// A tool call as `serde` writes it (`id`, `name`, `arguments`).
pub(crate) fn tool_call(call: &ToolCall) -> Value {
    static CALL: Keys<3> = Keys::new(["id", "name", "arguments"]);
    CALL.object([
        Value::String(call.id.clone()),
        Value::String(call.name.clone()),
        call.arguments.clone(),
    ])
}

/// A message as `serde` writes it: `role` and `content`, then `tool_calls`, `tool_call_id` and
/// `name` when set.
pub(crate) fn message(m: &Message) -> Value {
    static PLAIN: Keys<2> = Keys::new(["role", "content"]);
    static CALLS: Keys<3> = Keys::new(["role", "content", "tool_calls"]);
    static RESULT: Keys<4> = Keys::new(["role", "content", "tool_call_id", "name"]);
    let role = Value::from(m.role.as_str());
    let content = Value::String(m.content.clone());
    match (m.tool_calls.is_empty(), &m.tool_call_id, &m.name) {
        (true, None, None) => PLAIN.object([role, content]),
        (false, None, None) => CALLS.object([
            role,
            content,
            Value::Array(m.tool_calls.iter().map(tool_call).collect()),
        ]),
        (true, Some(id), Some(name)) => RESULT.object([
            role,
            content,
            Value::String(id.clone()),
            Value::String(name.clone()),
        ]),
        _ => serde_json::to_value(m).unwrap_or(Value::Null),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn an_object_is_what_json_makes_of_the_same_keys_and_values_in_order() {
        static CALL: Keys<3> = Keys::new(["id", "name", "arguments"]);
        for _ in 0..2 {
            let made = CALL.object([json!("c1"), json!("search"), json!({"q": "x"})]);
            let expected = json!({"id": "c1", "name": "search", "arguments": {"q": "x"}});
            assert_eq!(made, expected);
            assert_eq!(made.to_string(), expected.to_string());
        }
        let other = CALL.object([Value::Null, json!(1), json!([])]);
        assert_eq!(other.to_string(), r#"{"id":null,"name":1,"arguments":[]}"#);
    }

    #[test]
    fn messages_tool_calls_and_usages_are_what_serde_makes_of_them() {
        use crate::model::Role;
        let call = ToolCall {
            id: "c1".into(),
            name: "search".into(),
            arguments: json!({"q": "x", "n": [1, 2.5, null]}),
        };
        let mut messages = vec![
            Message::user("hi"),
            Message::system(""),
            Message::tool_result("c1", "search", "found"),
            Message {
                tool_calls: vec![call.clone(), call.clone()],
                ..Message::assistant("")
            },
        ];
        // The shapes built through serde: any other mix of the optional fields.
        for (calls, id, name) in [
            (true, true, false),
            (true, false, true),
            (false, true, false),
        ] {
            messages.push(Message {
                role: Role::Tool,
                content: "x".into(),
                tool_calls: if calls { vec![call.clone()] } else { vec![] },
                tool_call_id: id.then(|| "c2".into()),
                name: name.then(|| "n".into()),
            });
        }
        for m in &messages {
            let expected = serde_json::to_value(m).unwrap();
            assert_eq!(message(m).to_string(), expected.to_string(), "{m:?}");
        }
        assert_eq!(
            tool_call(&call).to_string(),
            serde_json::to_value(&call).unwrap().to_string()
        );
        for cost in [0.0, 0.25, f64::NAN, f64::INFINITY] {
            let u = Usage {
                prompt_tokens: 3,
                completion_tokens: u64::MAX,
                total_tokens: 7,
                cost,
            };
            let expected = serde_json::to_value(u).unwrap();
            assert_eq!(usage(&u).to_string(), expected.to_string(), "{u:?}");
        }
    }
}
