//! Expressions and prompt templates never panic when compiled or evaluated.
#![no_main]

use chatter_core::expr::{Expression, PromptTemplate};
use chatter_core::State;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let context = State::new(
        serde_json::json!({"message": "hello", "variables": {"n": 3, "flag": true}}),
        Vec::new(),
    )
    .to_context(Some(("node", "llm", 0)));
    if let Ok(expr) = Expression::compile(text) {
        let _ = expr.eval(&context);
    }
    if let Ok(template) = PromptTemplate::compile(text) {
        let _ = template.render(&context);
    }
});
