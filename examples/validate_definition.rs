//! Validates a definition file and prints every issue.
//!
//! `cargo run -p chatter-examples --example validate_definition -- examples/workflows/legacy-universal-chat.json`

use chatter_core::{WorkflowDefinition, WorkflowValidator};

fn main() -> Result<(), chatter_core::Error> {
    let path = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "examples/workflows/legacy-universal-chat.json".to_owned());
    let def = WorkflowDefinition::load(&path)?;
    let report = WorkflowValidator::default().validate(&def);
    println!(
        "{path}: {}",
        if report.is_valid() {
            "valid"
        } else {
            "invalid"
        }
    );
    for issue in &report.issues {
        println!(
            "  {} {} {}: {}",
            issue.severity, issue.code, issue.path, issue.message
        );
    }
    Ok(())
}
