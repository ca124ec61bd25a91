//! JSON objects of fixed keys, built without hashing their keys.

use std::sync::OnceLock;

use serde_json::{Map, Value};

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
}
