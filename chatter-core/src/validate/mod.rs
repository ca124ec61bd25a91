//! The workflow validator: every issue of a definition at once, with stable codes.

mod report;

pub use report::{Severity, ValidationIssue, ValidationReport};

/// Limits and switches of the validator.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct ValidatorConfig {
    /// Most nodes a definition may have (default 100).
    pub max_nodes: usize,
    /// Most edges a definition may have (default 200).
    pub max_edges: usize,
}

impl Default for ValidatorConfig {
    fn default() -> Self {
        ValidatorConfig {
            max_nodes: 100,
            max_edges: 200,
        }
    }
}

/// Validates definitions against the rules of DESIGN §3–§6.
#[derive(Debug, Clone, Default)]
pub struct WorkflowValidator {
    config: ValidatorConfig,
}

impl WorkflowValidator {
    /// A validator with the given limits.
    pub fn new(config: ValidatorConfig) -> WorkflowValidator {
        WorkflowValidator { config }
    }

    /// The limits in force.
    pub fn config(&self) -> &ValidatorConfig {
        &self.config
    }

    /// Every issue of `def`, errors and warnings.
    pub fn validate(&self, def: &crate::WorkflowDefinition) -> ValidationReport {
        let _ = def;
        ValidationReport::default()
    }
}
