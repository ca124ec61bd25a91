//! Expressions (edge and node conditions) and prompt templates (DESIGN §6).
//!
//! INTERFACE STUB: the signatures below are the contract; the bodies are filled by the
//! expressions work.

use serde_json::Value;

use crate::error::{Error, Result};

/// The top-level variables an expression or prompt template may name.
pub const STATE_VARIABLES: &[&str] = &[
    "input",
    "messages",
    "last_message",
    "variables",
    "context",
    "usage",
    "loop",
    "errors",
    "metadata",
    "tool_calls",
    "node",
];

/// A compiled condition expression.
#[derive(Debug, Clone)]
pub struct Expression {
    source: String,
    translated: String,
}

impl Expression {
    /// Compiles an expression, translating the old platform's phrases first.
    ///
    /// # Errors
    ///
    /// [`Error::Expression`] when it does not parse or names an unknown variable.
    pub fn compile(source: &str) -> Result<Expression> {
        if source.trim().is_empty() {
            return Err(Error::Expression {
                expression: source.to_owned(),
                message: "empty expression".into(),
            });
        }
        Ok(Expression {
            source: source.to_owned(),
            translated: source.to_owned(),
        })
    }

    /// The expression as written.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// The expression after translation of old phrases.
    pub fn translated(&self) -> &str {
        &self.translated
    }

    /// Names of workflow variables it reads (`variables.x` → `x`).
    pub fn variable_reads(&self) -> Vec<String> {
        Vec::new()
    }

    /// `Some(b)` when the expression is a constant (`true`, `false`, `1 == 2`).
    pub fn constant(&self) -> Option<bool> {
        None
    }

    /// Evaluates against a context object whose keys are the state variables.
    ///
    /// # Errors
    ///
    /// [`Error::Expression`] when evaluation fails.
    pub fn eval(&self, context: &Value) -> Result<bool> {
        let _ = context;
        Ok(false)
    }
}

/// A compiled prompt template.
#[derive(Debug, Clone)]
pub struct PromptTemplate {
    source: String,
}

impl PromptTemplate {
    /// Compiles a prompt template.
    ///
    /// # Errors
    ///
    /// [`Error::Template`] when it does not compile or names an unknown variable.
    pub fn compile(source: &str) -> Result<PromptTemplate> {
        Ok(PromptTemplate {
            source: source.to_owned(),
        })
    }

    /// The template as written.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// Names of workflow variables it reads.
    pub fn variable_reads(&self) -> Vec<String> {
        Vec::new()
    }

    /// Renders against a context object whose keys are the state variables.
    ///
    /// # Errors
    ///
    /// [`Error::Template`] when rendering fails.
    pub fn render(&self, context: &Value) -> Result<String> {
        let _ = context;
        Ok(self.source.clone())
    }
}
