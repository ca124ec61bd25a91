//! Prompt templates.

use std::fmt;
use std::sync::Arc;

use serde_json::Value;

use super::{MAX_TEMPLATE_BYTES, STATE_VARIABLES, engine};
use crate::error::{Error, Result};

/// A minijinja template borrowing the source its cell owns.
type Borrowed<'a> = minijinja::Template<'a, 'a>;

self_cell::self_cell! {
    /// A template compiled against the shared environment, owning its source.
    struct Compiled {
        owner: Box<str>,
        #[covariant]
        dependent: Borrowed,
    }
}

/// A compiled prompt template.
///
/// Cheap to clone (shared), `Send + Sync`; compiled once against the shared environment,
/// rendered without re-parsing. Auto-escaping is off and a trailing newline is kept: the output
/// is the text as written with its `{{ ... }}` / `{% ... %}` parts evaluated.
#[derive(Clone)]
pub struct PromptTemplate {
    inner: Arc<TemplateInner>,
}

struct TemplateInner {
    compiled: Compiled,
    state_reads: Vec<&'static str>,
    variable_reads: Vec<String>,
    dynamic_variable_reads: bool,
}

impl fmt::Debug for PromptTemplate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PromptTemplate")
            .field("source", &self.source())
            .finish_non_exhaustive()
    }
}

fn template_error(message: String) -> Error {
    Error::Template { message }
}

/// `line N: message` for an error of minijinja.
fn located(err: &minijinja::Error) -> String {
    match err.line() {
        Some(line) => format!("line {line}: {}", engine::describe(err)),
        None => engine::describe(err),
    }
}

impl PromptTemplate {
    /// Compiles a prompt template.
    ///
    /// Every top-level name must be one of [`super::STATE_VARIABLES`], a name the template
    /// binds itself (`{% for m in messages %}`, `{% set %}`, macro arguments), or a global
    /// function (`range`, `dict`, `namespace`).
    ///
    /// # Errors
    ///
    /// [`Error::Template`] when it is too long or too complex, does not compile, or names an
    /// unknown variable; the message starts with the line (`line 3: ...`).
    pub fn compile(source: &str) -> Result<PromptTemplate> {
        if source.len() > MAX_TEMPLATE_BYTES {
            return Err(template_error(format!(
                "too long: {} bytes (the limit is {MAX_TEMPLATE_BYTES})",
                source.len()
            )));
        }
        let scan = engine::scan(source, false)
            .map_err(|(message, line)| template_error(format!("line {line}: {message}")))?;
        let compiled = Compiled::try_new(Box::from(source), |source| {
            let env: &minijinja::Environment<'_> = &engine::ENV;
            env.template_from_named_str("<prompt>", source)
        })
        .map_err(|err| template_error(located(&err)))?;
        let mut names = compiled.borrow_dependent().undeclared_variables(false);
        // As for expressions: names inside slices escape minijinja's tracker. (`loop` is left
        // to the tracker: inside `{% for %}` it is Jinja's own loop object.)
        names.extend(
            scan.first_line
                .keys()
                .filter(|name| *name != "loop" && STATE_VARIABLES.contains(&name.as_str()))
                .cloned(),
        );
        let state_reads = engine::check_names(&names).map_err(|name| {
            let message = engine::unknown_name_message(&name);
            template_error(match scan.first_line.get(&name) {
                Some(line) => format!("line {line}: {message}"),
                None => message,
            })
        })?;
        let reads_variables = state_reads.contains(&"variables");
        Ok(PromptTemplate {
            inner: Arc::new(TemplateInner {
                compiled,
                state_reads,
                variable_reads: if reads_variables {
                    scan.variable_reads
                } else {
                    Vec::new()
                },
                dynamic_variable_reads: reads_variables && scan.dynamic_variable_reads,
            }),
        })
    }

    /// The template as written.
    pub fn source(&self) -> &str {
        self.inner.compiled.borrow_owner()
    }

    /// Names of workflow variables it reads (`variables.x` or `variables["x"]` → `x`), in order
    /// of first appearance.
    pub fn variable_reads(&self) -> Vec<String> {
        self.inner.variable_reads.clone()
    }

    /// Whether it also reads workflow variables whose names cannot be known before rendering
    /// (`variables[name]`, `{% for k, v in variables | items %}`).
    pub fn reads_variables_dynamically(&self) -> bool {
        self.inner.dynamic_variable_reads
    }

    /// The state variables it reads, in [`super::STATE_VARIABLES`] order.
    pub fn state_reads(&self) -> &[&'static str] {
        &self.inner.state_reads
    }

    /// Renders against a context object whose keys are the state variables. Only the state
    /// variables the template reads are converted.
    ///
    /// # Errors
    ///
    /// [`Error::Template`] when rendering fails (type errors, unknown filters, running out of
    /// [`super::FUEL`]) or the context is not an object; the message starts with the line.
    pub fn render(&self, context: &Value) -> Result<String> {
        let root =
            engine::context_value(context, &self.inner.state_reads).map_err(template_error)?;
        self.render_value(&root)
    }

    /// Renders against a context already converted to an engine value (see
    /// [`super::context_value`]).
    ///
    /// # Errors
    ///
    /// [`Error::Template`] when rendering fails.
    pub fn render_value(&self, context: &minijinja::Value) -> Result<String> {
        self.inner
            .compiled
            .borrow_dependent()
            .render(context.clone())
            .map_err(|err| template_error(located(&err)))
    }
}
