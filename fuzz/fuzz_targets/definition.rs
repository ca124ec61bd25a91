//! Definition parsing (JSON and YAML) and validation never panic, and a parsed definition writes
//! back to a value that parses to the same definition.
#![no_main]

use chatter_core::{WorkflowDefinition, WorkflowValidator};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    for parsed in [
        WorkflowDefinition::from_json(text),
        WorkflowDefinition::from_yaml(text),
    ] {
        if let Ok(def) = parsed {
            let report = WorkflowValidator::default().validate(&def);
            let _ = report.is_valid();
            let again = WorkflowDefinition::from_value(&def.to_value())
                .expect("a written definition reads back");
            assert_eq!(again.to_value(), def.to_value());
            let _ = chatter_core::analytics::analyze(&def);
        }
    }
});
