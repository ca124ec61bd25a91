//! The crate's error type.

use std::fmt;

/// The text format a definition was read from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Format {
    /// JSON.
    Json,
    /// YAML.
    Yaml,
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Format::Json => "JSON",
            Format::Yaml => "YAML",
        })
    }
}

/// Everything that can go wrong in `chatter-core`, classified by what a caller can act on.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The text is not well-formed JSON/YAML (or nests too deeply, or repeats a key).
    #[error("{format} parse error at line {line}, column {column}: {message}")]
    Parse {
        /// Format being read.
        format: Format,
        /// 1-based line of the error (0 when unknown).
        line: usize,
        /// 1-based column of the error (0 when unknown).
        column: usize,
        /// What the parser said.
        message: String,
    },
    /// A file could not be read.
    #[error("cannot read {path}: {message}")]
    Io {
        /// The path as given.
        path: String,
        /// What the operating system said.
        message: String,
    },
    /// The document parsed but is not a workflow definition (wrong types, missing keys).
    #[error("invalid definition at {path}: {message}")]
    Definition {
        /// JSON path of the offending value, e.g. `$.nodes[3].id`.
        path: String,
        /// What is wrong.
        message: String,
    },
    /// A condition expression does not parse or names an unknown variable.
    #[error("invalid expression `{expression}`: {message}")]
    Expression {
        /// The expression as written.
        expression: String,
        /// What is wrong.
        message: String,
    },
    /// A prompt template does not compile or fails to render.
    #[error("invalid template: {message}")]
    Template {
        /// What is wrong.
        message: String,
    },
    /// A definition failed validation; the report lists every issue.
    #[error("definition is invalid: {}", .0.summary())]
    Invalid(Box<crate::validate::ValidationReport>),
    /// A storage operation failed (see [`crate::store`]); `kind` says what a caller can do about it.
    #[error("storage error ({kind}): {message}")]
    Store {
        /// The class of failure.
        kind: crate::store::StoreErrorKind,
        /// What went wrong, in words.
        message: String,
    },
}

/// Shorthand for results whose error is [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
