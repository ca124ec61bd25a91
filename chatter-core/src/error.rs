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
    /// A model call failed.
    #[error("model `{model}` failed ({class}): {message}")]
    Model {
        /// Provider/model name.
        model: String,
        /// What kind of failure (drives retries and fallback).
        class: ErrorClass,
        /// What the provider said.
        message: String,
        /// The provider's `Retry-After`, in milliseconds, when it gave one.
        retry_after_ms: Option<u64>,
    },
    /// A tool call failed.
    #[error("tool `{tool}` failed ({class}): {message}")]
    Tool {
        /// Tool name.
        tool: String,
        /// What kind of failure.
        class: ErrorClass,
        /// What went wrong.
        message: String,
    },
    /// A node failed for a reason of its own (bad state, bad config at run time, ...).
    #[error("node `{node_id}` failed: {message}")]
    Node {
        /// The node.
        node_id: String,
        /// What kind of failure.
        class: ErrorClass,
        /// What went wrong.
        message: String,
    },
    /// Something took longer than its limit.
    #[error("{what} timed out after {after_ms} ms")]
    Timeout {
        /// What timed out (`node llm`, `execution`, `tool search`).
        what: String,
        /// The limit.
        after_ms: u64,
    },
    /// The execution was cancelled.
    #[error("cancelled: {reason}")]
    Cancelled {
        /// Why (`by request`, `client disconnected`, ...).
        reason: String,
    },
    /// A limit of DESIGN §5 was reached (max_steps, max_iterations, tool-call limits, ...).
    #[error("limit `{limit}` exceeded: {message}")]
    LimitExceeded {
        /// Which limit (`max_steps`, `max_tokens`, `max_cost`, ...).
        limit: String,
        /// Details.
        message: String,
    },
    /// Something named does not exist (a model provider, a tool, a retriever, a definition).
    #[error("unknown {what} `{name}`")]
    NotFound {
        /// What was looked up (`model provider`, `tool`, `retriever`, `definition`).
        what: String,
        /// The name given.
        name: String,
    },
    /// The engine or a provider is configured wrongly (bad file, bad option).
    #[error("configuration error: {message}")]
    Config {
        /// What is wrong.
        message: String,
    },
    /// A request is not acceptable as given (resuming an execution that cannot be resumed, a
    /// decision an approval does not allow, forking past the last step); nothing was changed.
    #[error("invalid request: {message}")]
    InvalidInput {
        /// What is wrong.
        message: String,
    },
    /// A definition failed validation; the report lists every issue.
    #[error("definition is invalid: {}", .0.summary())]
    Invalid(Box<crate::validate::ValidationReport>),
    /// A failure inside the engine itself (a scheduler task that died); a bug, not bad input.
    #[error("internal error: {message}")]
    Internal {
        /// What went wrong.
        message: String,
    },
    /// A storage operation failed (see [`crate::store`]); `kind` says what a caller can do about it.
    #[error("storage error ({kind}): {message}")]
    Store {
        /// The class of failure.
        kind: crate::store::StoreErrorKind,
        /// What went wrong, in words.
        message: String,
    },
}

/// The class of a run-time failure: what a caller (or a retry policy) can act on.
///
/// The names match the `retry_on` values of a node's retry policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorClass {
    /// Took too long.
    Timeout,
    /// The provider asked us to slow down (HTTP 429).
    RateLimit,
    /// The provider failed (HTTP 5xx).
    Server,
    /// The connection failed or dropped.
    Connection,
    /// A tool failed.
    Tool,
    /// A model returned something unusable.
    Model,
    /// The request was refused as malformed (HTTP 4xx other than 429); never retried.
    BadRequest,
    /// Credentials were refused (HTTP 401/403); never retried.
    Auth,
    /// Anything else.
    Internal,
}

impl ErrorClass {
    /// The `retry_on` name of the class (`timeout`, `rate_limit`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorClass::Timeout => "timeout",
            ErrorClass::RateLimit => "rate_limit",
            ErrorClass::Server => "server",
            ErrorClass::Connection => "connection",
            ErrorClass::Tool => "tool",
            ErrorClass::Model => "model",
            ErrorClass::BadRequest => "bad_request",
            ErrorClass::Auth => "auth",
            ErrorClass::Internal => "internal",
        }
    }
}

impl fmt::Display for ErrorClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Error {
    /// The class of a run-time failure, for retry decisions; `None` for load-time errors.
    pub fn class(&self) -> Option<ErrorClass> {
        match self {
            Error::Model { class, .. } | Error::Tool { class, .. } | Error::Node { class, .. } => {
                Some(*class)
            }
            Error::Timeout { .. } => Some(ErrorClass::Timeout),
            _ => None,
        }
    }
}

/// Shorthand for results whose error is [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
