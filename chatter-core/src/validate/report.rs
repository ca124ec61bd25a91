//! The validation report: issues with stable codes, severities and locations.

use serde::ser::SerializeStruct;
use serde::{Deserialize, Serialize, Serializer};

use super::paths::{self, Step};

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
///
/// Serialised, it is the command-line JSON shape `{"valid": bool, "issues": [{"code",
/// "severity", "node_id", "edge_id", "path", "message"}]}`; reading accepts that shape (and
/// ignores `valid`, which follows from the issues).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
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

    /// The report itself when it has no error (warnings are fine), else
    /// [`Error::Invalid`](crate::Error::Invalid) carrying it.
    ///
    /// # Errors
    ///
    /// [`Error::Invalid`](crate::Error::Invalid) when an issue is an error.
    pub fn into_result(self) -> crate::Result<ValidationReport> {
        if self.is_valid() {
            Ok(self)
        } else {
            Err(crate::Error::Invalid(Box::new(self)))
        }
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

impl Serialize for ValidationReport {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut out = serializer.serialize_struct("ValidationReport", 2)?;
        out.serialize_field("valid", &self.is_valid())?;
        out.serialize_field("issues", &self.issues)?;
        out.end()
    }
}

/// One step of a location in the old API's `loc` arrays: an object key or an array index.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum LocStep {
    /// An array index.
    Index(u64),
    /// An object key.
    Key(String),
}

/// One issue in the old API's shape (`ValidationError` of the v1 contract).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContractIssue {
    /// The location as steps: `["nodes", 3, "data", "config", "maxTokens"]`.
    pub loc: Vec<LocStep>,
    /// The message.
    pub msg: String,
    /// The issue code (`CHT-V013`).
    #[serde(rename = "type")]
    pub kind: String,
}

/// The old API's `WorkflowValidationResponse`: `{is_valid, errors, warnings, suggestions}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContractReport {
    /// True when there is no error.
    pub is_valid: bool,
    /// The errors, in report order.
    pub errors: Vec<ContractIssue>,
    /// The warnings, in report order.
    pub warnings: Vec<ContractIssue>,
    /// One suggestion per distinct code found, in code order.
    pub suggestions: Vec<String>,
}

/// What to do about an issue of a code, for the old API's `suggestions`.
pub fn suggestion(code: &str) -> Option<&'static str> {
    use super::codes::*;
    Some(match code {
        NODE_ID_MISSING => "Give every node a non-empty id.",
        DUPLICATE_NODE_ID => "Rename nodes so that every id is unique.",
        DUPLICATE_EDGE_ID => "Rename edges so that every id is unique.",
        EDGE_SOURCE_UNKNOWN | EDGE_TARGET_UNKNOWN => {
            "Point every edge at existing nodes, or remove the dangling edges."
        }
        UNKNOWN_KIND => "Use a registered node kind (see the node catalogue).",
        NO_SINGLE_ENTRY => "Keep exactly one `start` node as the entry of the workflow.",
        UNREACHABLE => "Connect unreachable nodes to the graph, or remove them.",
        CANNOT_REACH_END => "Connect every node to an `end` node.",
        CYCLE_WITHOUT_EXIT => {
            "Put a `loop` node in each cycle, or give it a conditional edge that leaves it."
        }
        MISSING_BRANCHES => "Give conditional nodes both a `true` and a `false` branch.",
        CONFIG_WRONG_TYPE | CONFIG_OUT_OF_RANGE | CONFIG_NOT_ALLOWED | CONFIG_MISSING_KEY => {
            "Fix node configurations to match their kind's schema."
        }
        CONFIG_UNKNOWN_KEY => "Remove config keys the node kind does not use (check spelling).",
        EXPRESSION_INVALID => "Fix conditions so that they parse and name only known variables.",
        TEMPLATE_INVALID => "Fix prompt templates so that they compile.",
        TOO_MANY_NODES | TOO_MANY_EDGES => {
            "Split the workflow into sub-workflows, or raise the configured limits."
        }
        POSSIBLE_SECRET => "Move secrets out of the definition into a secret store.",
        UNUSED_VARIABLE => "Remove variables nothing reads, or read them where intended.",
        DEAD_BRANCH => "Remove edges that can never be taken, or fix their conditions.",
        EMPTY_DEFINITION => "Add a `start` node, the work, and an `end` node.",
        AMBIGUOUS_DEFAULT => "Keep a single unconditional default edge per routing node.",
        _ => return None,
    })
}

impl ValidationIssue {
    /// The path as `loc` steps: `$.nodes[3].data.config.maxTokens` →
    /// `["nodes", 3, "data", "config", "maxTokens"]`.
    pub fn loc(&self) -> Vec<LocStep> {
        paths::steps(&self.path)
            .into_iter()
            .map(|step| match step {
                Step::Key(k) => LocStep::Key(k),
                Step::Index(i) => LocStep::Index(i),
            })
            .collect()
    }

    fn to_contract(&self) -> ContractIssue {
        ContractIssue {
            loc: self.loc(),
            msg: self.message.clone(),
            kind: self.code.clone(),
        }
    }
}

impl ValidationReport {
    /// The report in the old API's shape (`WorkflowValidationResponse` of the v1 contract):
    /// `{is_valid, errors: [{loc, msg, type}], warnings: [...], suggestions: [...]}`, `type`
    /// being the issue code.
    pub fn to_contract(&self) -> ContractReport {
        let mut codes: Vec<&str> = self.issues.iter().map(|i| i.code.as_str()).collect();
        codes.sort_unstable();
        codes.dedup();
        let mut suggestions: Vec<String> = Vec::new();
        for text in codes.into_iter().filter_map(suggestion) {
            if !suggestions.iter().any(|s| s == text) {
                suggestions.push(text.to_owned());
            }
        }
        ContractReport {
            is_valid: self.is_valid(),
            errors: self.errors().map(ValidationIssue::to_contract).collect(),
            warnings: self.warnings().map(ValidationIssue::to_contract).collect(),
            suggestions,
        }
    }
}
