//! Executing a template: the definition is generated in memory and run through the
//! [`WorkflowTracker`]; no definition row is ever written. The execution row records the
//! template (`template_id`, for a stored template) and the merged parameters, and the store
//! updates the template's analytics in the transaction that records the outcome.

use std::sync::Arc;

use serde_json::{Map, Value};

use super::TemplateSpec;
use super::lifecycle::{get_visible, spec_of};
use crate::WorkflowDefinition;
use crate::engine::{Engine, RunOptions};
use crate::error::Result;
use crate::event::Event;
use crate::store::{ExecutionKind, Store, TemplateStore};
use crate::tracker::{ExecutionMeta, TrackedRun, WorkflowTracker};

/// Which template to execute.
#[derive(Debug, Clone, PartialEq)]
pub enum TemplateRef {
    /// A stored template, by id (built-in, public, or the user's own).
    Stored(String),
    /// A temporary template given with the request; it is not stored, and the execution row
    /// has no `template_id`.
    Inline(Box<TemplateSpec>),
}

/// A template resolved, its parameters merged and checked, its definition generated.
#[derive(Debug, Clone)]
pub struct PreparedTemplate {
    /// The stored template's id (`None` for an inline template).
    pub template_id: Option<String>,
    /// The template.
    pub spec: TemplateSpec,
    /// The default parameters overlaid with the given ones, checked against the schema.
    pub params: Map<String, Value>,
    /// The generated definition (in memory only).
    pub definition: WorkflowDefinition,
}

impl PreparedTemplate {
    /// What the execution row records for `owner`: kind `template`, the template id and the
    /// merged parameters.
    pub fn meta(&self, owner: &str) -> ExecutionMeta {
        let meta = ExecutionMeta::new(owner, ExecutionKind::Template)
            .params(Value::Object(self.params.clone()));
        match &self.template_id {
            Some(id) => meta.template(id.clone()),
            None => meta,
        }
    }
}

/// Resolves `template` for `user`, merges `params` into its defaults (checked against its
/// parameter schema) and generates its definition. Nothing is written.
///
/// # Errors
///
/// [`crate::Error::NotFound`] for a template `user` cannot see; [`crate::Error::Template`]
/// naming every parameter of the wrong type, out of range or unknown, or a graph that cannot
/// be generated.
pub async fn prepare_template(
    store: &dyn TemplateStore,
    user: &str,
    template: &TemplateRef,
    params: &Value,
) -> Result<PreparedTemplate> {
    let (template_id, spec) = match template {
        TemplateRef::Stored(id) => {
            let record = get_visible(store, user, id).await?;
            (Some(record.id.clone()), spec_of(&record)?)
        }
        TemplateRef::Inline(spec) => (None, spec.as_ref().clone()),
    };
    let params = spec.merge_params(params)?;
    let definition = spec.generate(&params)?;
    Ok(PreparedTemplate {
        template_id,
        spec,
        params,
        definition,
    })
}

/// Executes a template for `user` on `engine`, recorded in `store`: [`prepare_template`], then
/// [`WorkflowTracker::run`]. A generated graph the engine refuses ([`crate::Error::Invalid`])
/// is an error before any row is written.
///
/// # Errors
///
/// As [`prepare_template`] and [`WorkflowTracker::run`].
pub async fn run_template(
    store: &Arc<dyn Store>,
    engine: &Engine,
    user: &str,
    template: &TemplateRef,
    params: &Value,
    input: Value,
    options: RunOptions,
) -> Result<TrackedRun> {
    run_template_observed(
        store,
        engine,
        user,
        template,
        params,
        input,
        options,
        |_| {},
    )
    .await
}

/// As [`run_template`], calling `observe` with each event as it happens.
///
/// # Errors
///
/// As [`run_template`].
#[allow(clippy::too_many_arguments)]
pub async fn run_template_observed<F: FnMut(&Event)>(
    store: &Arc<dyn Store>,
    engine: &Engine,
    user: &str,
    template: &TemplateRef,
    params: &Value,
    input: Value,
    options: RunOptions,
    observe: F,
) -> Result<TrackedRun> {
    let prepared = prepare_template(store.as_ref(), user, template, params).await?;
    let tracker = WorkflowTracker::new(store.clone());
    tracker
        .run_observed(
            engine,
            &prepared.definition,
            input,
            options,
            prepared.meta(user),
            observe,
        )
        .await
}
