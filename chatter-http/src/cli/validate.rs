//! `chatter validate` and `chatter analyze`.

use std::io::Write;
use std::path::Path;

use chatter_core::{ValidatorConfig, WorkflowDefinition, WorkflowValidator};
use serde_json::json;

use super::{OutputFormat, write_out};
use crate::error::Error;

/// Loads a definition file, naming the file in any error.
pub(crate) fn load(file: &Path) -> Result<WorkflowDefinition, Error> {
    WorkflowDefinition::load(file).map_err(|source| match source {
        chatter_core::Error::Io { .. } => Error::Core(source),
        source => Error::File {
            path: file.display().to_string(),
            source,
        },
    })
}

pub(crate) fn validate(
    file: &Path,
    format: OutputFormat,
    max_nodes: usize,
    max_edges: usize,
    out: &mut dyn Write,
) -> Result<u8, Error> {
    let def = load(file)?;
    let mut config = ValidatorConfig::default();
    config.max_nodes = max_nodes;
    config.max_edges = max_edges;
    let report = WorkflowValidator::new(config).validate(&def);
    let valid = report.is_valid();
    let text = match format {
        OutputFormat::Json => {
            let doc = json!({"valid": valid, "issues": report.issues});
            format!(
                "{}\n",
                serde_json::to_string_pretty(&doc).unwrap_or_default()
            )
        }
        OutputFormat::Text => {
            let errors = report.errors().count();
            let warnings = report.warnings().count();
            let mut text = format!(
                "{}: {} ({errors} error{}, {warnings} warning{})\n",
                file.display(),
                if valid { "valid" } else { "invalid" },
                if errors == 1 { "" } else { "s" },
                if warnings == 1 { "" } else { "s" },
            );
            for issue in &report.issues {
                let mut location = String::new();
                if let Some(node) = &issue.node_id {
                    location.push_str(&format!(" node `{node}`"));
                }
                if let Some(edge) = &issue.edge_id {
                    location.push_str(&format!(" edge `{edge}`"));
                }
                text.push_str(&format!(
                    "  {} {}{} at {}: {}\n",
                    issue.severity, issue.code, location, issue.path, issue.message
                ));
            }
            text
        }
    };
    write_out(out, &text)?;
    Ok(if valid { 0 } else { 1 })
}

pub(crate) fn analyze(file: &Path, out: &mut dyn Write) -> Result<u8, Error> {
    let def = load(file)?;
    let analytics = chatter_core::analytics::analyze(&def);
    let text = serde_json::to_string_pretty(&analytics).unwrap_or_default();
    write_out(out, &format!("{text}\n"))?;
    Ok(0)
}
