//! Expressions (edge and node conditions) and prompt templates (DESIGN §6).
//!
//! Both are written in the [minijinja](https://docs.rs/minijinja) language and read the same
//! state variables ([`STATE_VARIABLES`]). They are compiled once, at load time, where every
//! syntax error and every unknown top-level name is reported; evaluation never re-parses and is
//! bounded by [`FUEL`]. The old platform's condition phrases (`has_tool_calls`,
//! `tool_calls < 10`, `variable mode equals fast`, ... joined by `AND`/`OR`) are translated into
//! native expressions with the same meaning ([`translate_legacy`]). The language, the variables,
//! every old phrase and its translation are described in `docs/expressions.md`.
//!
//! ```
//! use chatter_core::expr::{Expression, PromptTemplate};
//! use serde_json::json;
//!
//! let state = json!({
//!     "messages": [{"role": "assistant", "content": "Let me look.",
//!                   "tool_calls": [{"id": "c1", "name": "search", "arguments": {}}]}],
//!     "last_message": {"role": "assistant", "content": "Let me look.",
//!                      "tool_calls": [{"id": "c1", "name": "search", "arguments": {}}]},
//!     "variables": {"max_tool_calls": 5},
//!     "tool_calls": 2,
//! });
//! let old = Expression::compile("has_tool_calls AND tool_calls < variable max_tool_calls")?;
//! assert!(old.eval(&state)?);
//! let native = Expression::compile("last_message.role == 'assistant' and tool_calls >= 3")?;
//! assert!(!native.eval(&state)?);
//! assert!(Expression::compile("has_tool_cals").is_err()); // unknown name: an error, never true
//!
//! let prompt = PromptTemplate::compile("You may call {{ variables.max_tool_calls }} tools.")?;
//! assert_eq!(prompt.render(&state)?, "You may call 5 tools.");
//! # Ok::<(), chatter_core::Error>(())
//! ```

use std::fmt;
use std::sync::Arc;

use serde_json::Value;

use crate::error::{Error, Result};

mod engine;
mod fast;
mod legacy;
mod template;

#[cfg(test)]
mod tests;

pub use template::PromptTemplate;

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

/// The fuel of one evaluation or rendering.
///
/// Every executed instruction costs one unit; producing or visiting data costs one unit per
/// 64 bytes (more for serialisation and sorting), see minijinja's fuel documentation. 100 000
/// units allow a prompt that loops over a thousand messages or emits a few megabytes; running
/// out is an error ("engine ran out of fuel"), never a partial result.
pub const FUEL: u64 = 100_000;

/// The most operators (`+`, `.`, `|`, `(`, `not`, `and`, ...) one expression, or one
/// `{{ ... }}` / `{% ... %}` tag of a template, may contain.
///
/// The underlying parser builds and walks trees as deep as a chain of operators is long; this
/// cap keeps compilation within a 2 MiB thread stack whatever the input.
pub const MAX_OPERATORS_PER_EXPRESSION: usize = 256;

/// The longest expression accepted, in bytes.
pub const MAX_EXPRESSION_BYTES: usize = 16 * 1024;

/// The longest prompt template accepted, in bytes.
pub const MAX_TEMPLATE_BYTES: usize = 1024 * 1024;

/// How deeply a context value may nest (JSON parsers stop at 128 by default).
pub const MAX_CONTEXT_DEPTH: usize = 256;

/// How deeply template macros may call each other.
pub const MAX_RECURSION: usize = 100;

/// A compiled condition expression.
///
/// Cheap to clone (shared), `Send + Sync`; compiled once, evaluated without re-parsing.
#[derive(Clone)]
pub struct Expression {
    inner: Arc<ExpressionInner>,
}

struct ExpressionInner {
    source: String,
    translated: String,
    legacy: bool,
    compiled: minijinja::Expression<'static, 'static>,
    state_reads: Vec<&'static str>,
    variable_reads: Vec<String>,
    dynamic_variable_reads: bool,
    constant: Option<bool>,
    /// A fast path for the commonest shapes (`has_tool_calls`, `variables.i < 100`).
    fast: Option<fast::Fast>,
}

impl fmt::Debug for Expression {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Expression")
            .field("source", &self.inner.source)
            .field("translated", &self.inner.translated)
            .finish_non_exhaustive()
    }
}

impl fmt::Display for Expression {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.inner.source)
    }
}

fn expression_error(source: &str, message: impl Into<String>) -> Error {
    Error::Expression {
        expression: source.to_owned(),
        message: message.into(),
    }
}

/// Translates a condition written in the old platform's phrases into a native expression.
///
/// Returns `None` when `source` is not written in the old phrases (it is then read as a native
/// expression), `Some(Ok(translation))` when it is, and `Some(Err(..))` when it is meant as old
/// phrases (it uses a word only they use, such as `has_errors`, `AND` or `equals`) but is
/// malformed. The translation is not checked further; [`Expression::compile`] does that.
///
/// ```
/// use chatter_core::expr::translate_legacy;
///
/// let t = translate_legacy("has_tool_calls AND tool_calls < 10").unwrap().unwrap();
/// assert_eq!(t, "(last_message.tool_calls or []) | length > 0 and tool_calls < 10");
/// assert!(translate_legacy("variables.x == 1").is_none());
/// assert!(translate_legacy("variable equals 3").unwrap().is_err());
/// ```
///
/// # Errors
///
/// [`Error::Expression`] (inside the `Some`) for malformed old phrases.
pub fn translate_legacy(source: &str) -> Option<Result<String>> {
    match legacy::translate(source) {
        Ok(translated) => Some(Ok(translated)),
        Err(failure) if failure.committed => Some(Err(expression_error(
            source,
            format!("old phrase: {}", failure.message),
        ))),
        Err(_) => None,
    }
}

impl Expression {
    /// Compiles an expression, translating the old platform's phrases first.
    ///
    /// Every top-level name must be one of [`STATE_VARIABLES`], a name the expression binds
    /// itself, or a global function (`range`, `dict`, `namespace`). An expression that names
    /// no state variable is evaluated once here, so one that always fails is rejected.
    ///
    /// # Errors
    ///
    /// [`Error::Expression`] when it is empty, too long or too complex, does not parse, names
    /// an unknown variable, or is a constant whose evaluation fails.
    pub fn compile(source: &str) -> Result<Expression> {
        if source.trim().is_empty() {
            return Err(expression_error(source, "empty expression"));
        }
        if source.len() > MAX_EXPRESSION_BYTES {
            return Err(expression_error(
                source,
                format!(
                    "too long: {} bytes (the limit is {MAX_EXPRESSION_BYTES})",
                    source.len()
                ),
            ));
        }
        match legacy::translate(source) {
            Ok(translated) => Self::compile_native(source, translated, true),
            Err(failure) if failure.committed => Err(expression_error(
                source,
                format!("old phrase: {}", failure.message),
            )),
            Err(failure) => match Self::compile_native(source, source.to_owned(), false) {
                Ok(expression) => Ok(expression),
                Err(_) if failure.started => Err(expression_error(
                    source,
                    format!("old phrase: {}", failure.message),
                )),
                Err(err) => Err(err),
            },
        }
    }

    fn compile_native(source: &str, translated: String, legacy: bool) -> Result<Expression> {
        // On a translation, positions refer to the translated text: say so.
        let locate = |message: String, offset: Option<usize>| {
            let located = match offset {
                Some(offset) => format!(
                    "{message} (at column {})",
                    engine::column(&translated, offset)
                ),
                None => message,
            };
            if legacy {
                format!("{located} in the translation `{translated}`")
            } else {
                located
            }
        };
        let scan = engine::scan(&translated, true)
            .map_err(|(message, _line)| expression_error(source, locate(message, None)))?;
        let compiled = engine::ENV
            .compile_expression_owned(translated.clone())
            .map_err(|err| {
                expression_error(
                    source,
                    locate(engine::describe(&err), err.range().map(|r| r.start)),
                )
            })?;
        let mut names = compiled.undeclared_variables(false);
        // minijinja's tracker misses names inside slices (`variables.xs[:2]`): add the state
        // variables the token scan saw at the top level, so they are converted and the
        // expression is not mistaken for a constant.
        names.extend(
            scan.first_line
                .keys()
                .filter(|name| STATE_VARIABLES.contains(&name.as_str()))
                .cloned(),
        );
        let state_reads = engine::check_names(&names)
            .map_err(|name| expression_error(source, engine::unknown_name_message(&name)))?;
        let reads_variables = state_reads.contains(&"variables");
        let mut inner = ExpressionInner {
            source: source.to_owned(),
            translated,
            legacy,
            compiled,
            state_reads,
            variable_reads: if reads_variables {
                scan.variable_reads
            } else {
                Vec::new()
            },
            dynamic_variable_reads: reads_variables && scan.dynamic_variable_reads,
            constant: None,
            fast: None,
        };
        inner.fast = fast::Fast::recognise(&inner.translated);
        if inner.state_reads.is_empty() {
            let value = inner
                .compiled
                .eval(minijinja::Value::from(()))
                .map_err(|err| {
                    expression_error(source, format!("always fails: {}", engine::describe(&err)))
                })?;
            inner.constant = Some(value.is_true());
        }
        Ok(Expression {
            inner: Arc::new(inner),
        })
    }

    /// The expression as written.
    pub fn source(&self) -> &str {
        &self.inner.source
    }

    /// The expression after translation of old phrases (the source itself for a native one).
    pub fn translated(&self) -> &str {
        &self.inner.translated
    }

    /// Whether it was written in the old platform's phrases.
    pub fn is_legacy(&self) -> bool {
        self.inner.legacy
    }

    /// Names of workflow variables it reads (`variables.x` or `variables["x"]` → `x`), in order
    /// of first appearance.
    pub fn variable_reads(&self) -> Vec<String> {
        self.inner.variable_reads.clone()
    }

    /// Whether it also reads workflow variables whose names cannot be known before running
    /// (`variables[name]`, `variables | length`, `variables.items()`).
    pub fn reads_variables_dynamically(&self) -> bool {
        self.inner.dynamic_variable_reads
    }

    /// The state variables it reads, in [`STATE_VARIABLES`] order.
    pub fn state_reads(&self) -> &[&'static str] {
        &self.inner.state_reads
    }

    /// `Some(b)` when the expression reads no state variable at all (`true`, `1 > 2`): its
    /// value, computed once at compile time.
    pub fn constant(&self) -> Option<bool> {
        self.inner.constant
    }

    /// Evaluates against a context object whose keys are the state variables; the result is
    /// the truthiness of the value (empty lists, `0`, `""`, none and undefined are false).
    ///
    /// Only the state variables the expression reads are converted; to evaluate several
    /// expressions over a large state (long `messages`), convert it once with
    /// [`context_value`] and call [`Expression::eval_value`].
    ///
    /// # Errors
    ///
    /// [`Error::Expression`] when evaluation fails (type errors, unknown filters, running out of
    /// [`FUEL`]) or the context is not an object.
    pub fn eval(&self, context: &Value) -> Result<bool> {
        if let Some(constant) = self.inner.constant {
            return Ok(constant);
        }
        if let Some(result) = self.inner.fast.as_ref().and_then(|f| f.eval(context)) {
            return Ok(result);
        }
        let root = engine::context_value(context, &self.inner.state_reads)
            .map_err(|message| expression_error(&self.inner.source, message))?;
        self.eval_value(&root)
    }

    /// The value on `state` when it is known without building a context: a constant, or one of
    /// the shapes with a fast path (`has_tool_calls`, `no_tool_calls`, `tool_calls < 10`,
    /// `variables.i < 100`) meeting values whose result is certain. `None` means: evaluate
    /// [`Expression::eval`] on the state's context. A loop or an agent evaluates its condition
    /// on every pass; this spares converting the state (its last message) to JSON each time.
    pub fn eval_state(&self, state: &crate::state::State) -> Option<bool> {
        if let Some(constant) = self.inner.constant {
            return Some(constant);
        }
        self.inner.fast.as_ref().and_then(|f| f.eval_state(state))
    }

    /// Evaluates on `state`: straight from it when [`Expression::eval_state`] can, else by
    /// [`Expression::eval`] on the context `context` gives (called only then, so a caller
    /// builds, or reuses, a context only when one is needed).
    ///
    /// # Errors
    ///
    /// As [`Expression::eval`].
    pub fn eval_on<'c>(
        &self,
        state: &crate::state::State,
        context: impl FnOnce() -> &'c Value,
    ) -> Result<bool> {
        match self.eval_state(state) {
            Some(result) => Ok(result),
            None => self.eval(context()),
        }
    }

    /// Evaluates against a context already converted to an engine value (a map whose keys are
    /// the state variables), for callers that evaluate many expressions on one state.
    ///
    /// # Errors
    ///
    /// [`Error::Expression`] when evaluation fails.
    pub fn eval_value(&self, context: &minijinja::Value) -> Result<bool> {
        self.eval_raw(context).map(|value| value.is_true())
    }

    /// Evaluates and returns the value itself as JSON (for expressions that yield data, such
    /// as the `items` of a `map` node). Undefined becomes null.
    ///
    /// # Errors
    ///
    /// [`Error::Expression`] when evaluation fails.
    pub fn eval_json(&self, context: &Value) -> Result<Value> {
        let root = engine::context_value(context, &self.inner.state_reads)
            .map_err(|message| expression_error(&self.inner.source, message))?;
        let value = self.eval_raw(&root)?;
        engine::value_to_json(&value, 0)
            .map_err(|message| expression_error(&self.inner.source, message))
    }

    /// Whether a fast path evaluates it (tests).
    #[cfg(test)]
    pub(crate) fn has_fast_path(&self) -> bool {
        self.inner.fast.is_some()
    }

    /// [`Expression::eval`] without the fast path (tests compare the two).
    #[cfg(test)]
    pub(crate) fn eval_slow(&self, context: &Value) -> Result<bool> {
        let root = engine::context_value(context, &self.inner.state_reads)
            .map_err(|message| expression_error(&self.inner.source, message))?;
        self.eval_value(&root)
    }

    fn eval_raw(&self, context: &minijinja::Value) -> Result<minijinja::Value> {
        self.inner
            .compiled
            .eval(context.clone())
            .map_err(|err| expression_error(&self.inner.source, engine::describe(&err)))
    }
}

/// Converts a JSON state object into the engine's value, for [`Expression::eval_value`] and
/// [`PromptTemplate::render_value`].
///
/// # Errors
///
/// [`Error::Expression`] when the value nests deeper than [`MAX_CONTEXT_DEPTH`].
pub fn context_value(context: &Value) -> Result<minijinja::Value> {
    engine::json_to_value(context, 0).map_err(|message| expression_error("", message))
}
