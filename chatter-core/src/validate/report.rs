//! The validation report: issues with stable codes, severities and locations.

use serde::{Deserialize, Serialize};

/// How serious an issue is: errors make a definition invalid, warnings do not.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum Severity {
    /// The definition cannot run.
    Error,
    /// The definition runs, but probably not as meant.
    Warning,
}

impl std::fmt::Display for Severity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Severity::Error => "error",
            Severity::Warning => "warning",
        })
    }
}

/// One finding of the validator.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ValidationIssue {
    /// Stable code (`CHT-V001`, ...); each has a page under `docs/errors/`.
    pub code: String,
    /// Error or warning.
    pub severity: Severity,
    /// The node concerned, if any.
    pub node_id: Option<String>,
    /// The edge concerned, if any.
    pub edge_id: Option<String>,
    /// JSON path of the offending value in the document (`$.nodes[2].data.config.max_tokens`).
    pub path: String,
    /// What is wrong, precisely.
    pub message: String,
}

/// Every issue the validator found, in a deterministic order.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ValidationReport {
    /// The issues, errors and warnings together.
    pub issues: Vec<ValidationIssue>,
}

impl ValidationReport {
    /// True when no issue is an error.
    pub fn is_valid(&self) -> bool {
        self.errors().next().is_none()
    }

    /// The issues of severity error.
    pub fn errors(&self) -> impl Iterator<Item = &ValidationIssue> {
        self.issues.iter().filter(|i| i.severity == Severity::Error)
    }

    /// The issues of severity warning.
    pub fn warnings(&self) -> impl Iterator<Item = &ValidationIssue> {
        self.issues
            .iter()
            .filter(|i| i.severity == Severity::Warning)
    }

    /// Whether an issue with this code was reported.
    pub fn has_code(&self, code: &str) -> bool {
        self.issues.iter().any(|i| i.code == code)
    }

    /// One line: the error count and the first error.
    pub fn summary(&self) -> String {
        let errors: Vec<_> = self.errors().collect();
        match errors.first() {
            None => "no errors".to_owned(),
            Some(first) => format!(
                "{} error(s); first: {} {}",
                errors.len(),
                first.code,
                first.message
            ),
        }
    }
}
