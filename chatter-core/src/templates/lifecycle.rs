//! Templates in a store: seeding the built-ins, who may see and change what, and the lifecycle
//! (create, update with version history, delete, export, import, validate, fork).
//!
//! Every function here is store-agnostic: it works on any [`TemplateStore`]. Access rules:
//!
//! * a user sees built-in templates, public templates and their own;
//! * a user changes or deletes only their own templates; built-ins are read-only for everyone
//!   (only [`seed_builtins`] writes them), which is an [`Error::Template`] saying so;
//! * a template a user may not see is reported as unknown ([`Error::NotFound`]), never as
//!   forbidden, so ids of other users' private templates do not leak.
//!
//! A stored template's `spec` column holds the [`TemplateSpec`] as JSON; the record's columns
//! (name, description, category, tags, flags, version, lineage) win over the same fields in it.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use super::{TemplateSpec, builtin_templates};
use crate::error::{Error, Result};
use crate::store::{
    NewTemplate, Page, StoreErrorKind, TemplateFilter, TemplateRecord, TemplateStore,
    TemplateUpdate, TemplateVersionRecord,
};

/// The `export_version` written by [`export_template`] and accepted by [`import_template`].
pub const EXPORT_VERSION: &str = "1.0";

/// What [`seed_builtins`] did, by template name.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SeedReport {
    /// Built-ins stored for the first time.
    pub created: Vec<String>,
    /// Built-ins whose stored copy differed from this build's and was updated (new version).
    pub updated: Vec<String>,
    /// Built-ins already stored as this build ships them.
    pub unchanged: Vec<String>,
}

fn builtin_record(spec: &TemplateSpec) -> NewTemplate {
    NewTemplate {
        id: Some(spec.name.clone()),
        owner_id: None,
        name: spec.name.clone(),
        description: Some(spec.description.clone()),
        category: spec.category.as_str().to_owned(),
        spec: spec_value(spec),
        tags: spec.tags.clone(),
        is_builtin: true,
        is_public: true,
        base_template_id: None,
    }
}

/// The JSON stored in the `spec` column: the spec without the fields the record's columns hold.
fn spec_value(spec: &TemplateSpec) -> Value {
    let mut value = serde_json::to_value(spec).unwrap_or(Value::Null);
    if let Value::Object(map) = &mut value {
        for key in [
            "name",
            "description",
            "category",
            "tags",
            "is_public",
            "is_builtin",
            "version",
            "base_template_id",
        ] {
            map.remove(key);
        }
    }
    value
}

/// Stores the twelve built-in templates ([`builtin_templates`]) with their names as ids, no
/// owner, `is_builtin` and public. Idempotent: a built-in already stored as this build ships it
/// is left alone; one stored by an older build is updated (its version history keeps the old
/// one). Run it at start-up (the command line and the HTTP server do).
///
/// # Errors
///
/// Storage failures; [`StoreErrorKind::Conflict`] when a non-built-in template holds a
/// built-in's id.
pub async fn seed_builtins(store: &dyn TemplateStore) -> Result<SeedReport> {
    let mut report = SeedReport::default();
    for spec in builtin_templates() {
        let wanted = builtin_record(&spec);
        let existing = match store.get_template(&spec.name).await? {
            Some(existing) => existing,
            None => match store.create_template(wanted.clone()).await {
                Ok(_) => {
                    report.created.push(spec.name.clone());
                    continue;
                }
                // Seeded meanwhile by another process: compare with what it wrote.
                Err(e) if e.store_kind() == Some(StoreErrorKind::Conflict) => {
                    store.get_template(&spec.name).await?.ok_or(e)?
                }
                Err(e) => return Err(e),
            },
        };
        if !existing.is_builtin {
            return Err(Error::store(
                StoreErrorKind::Conflict,
                format!(
                    "template `{}` is not a built-in but holds a built-in's id",
                    existing.id
                ),
            ));
        }
        let same = existing.spec == wanted.spec
            && existing.description == wanted.description
            && existing.category == wanted.category
            && existing.tags == wanted.tags;
        if same {
            report.unchanged.push(spec.name.clone());
        } else {
            store
                .update_template(
                    &existing.id,
                    TemplateUpdate {
                        description: Some(wanted.description),
                        category: Some(wanted.category),
                        spec: Some(wanted.spec),
                        tags: Some(wanted.tags),
                        expected_version: Some(existing.version),
                        ..TemplateUpdate::default()
                    },
                )
                .await?;
            report.updated.push(spec.name.clone());
        }
    }
    Ok(report)
}

/// The [`TemplateSpec`] of a stored template (the record's columns override the `spec` JSON).
///
/// # Errors
///
/// [`Error::Template`] when the stored `spec` is not a template.
pub fn spec_of(record: &TemplateRecord) -> Result<TemplateSpec> {
    let mut value = match &record.spec {
        Value::Object(map) => Value::Object(map.clone()),
        _ => Value::Object(Map::new()),
    };
    value["name"] = json!(record.name);
    value["description"] = json!(record.description.clone().unwrap_or_default());
    value["tags"] = json!(record.tags);
    value["is_public"] = json!(record.is_public);
    value["is_builtin"] = json!(record.is_builtin);
    value["version"] = json!(u32::try_from(record.version).unwrap_or(u32::MAX));
    value["base_template_id"] = json!(record.base_template_id);
    if super::TemplateCategory::parse(&record.category).is_ok() {
        value["category"] = json!(record.category);
    }
    TemplateSpec::from_value(&value).map_err(|e| Error::Template {
        message: format!("stored template `{}`: {e}", record.id),
    })
}

fn can_see(record: &TemplateRecord, user: &str) -> bool {
    record.is_builtin || record.is_public || record.owner_id.as_deref() == Some(user)
}

fn unknown(id: &str) -> Error {
    Error::NotFound {
        what: "template".into(),
        name: id.into(),
    }
}

/// The template `id` as `user` sees it.
///
/// # Errors
///
/// [`Error::NotFound`] when it does not exist or `user` may not see it; storage failures.
pub async fn get_visible(
    store: &dyn TemplateStore,
    user: &str,
    id: &str,
) -> Result<TemplateRecord> {
    match store.get_template(id).await? {
        Some(record) if can_see(&record, user) => Ok(record),
        _ => Err(unknown(id)),
    }
}

/// Finds a template by id or by name: an id `user` may see, else `user`'s own template of that
/// name, else the built-in of that name.
///
/// # Errors
///
/// [`Error::NotFound`] when none matches; storage failures.
pub async fn resolve(store: &dyn TemplateStore, user: &str, key: &str) -> Result<TemplateRecord> {
    if let Some(record) = store.get_template(key).await?
        && can_see(&record, user)
    {
        return Ok(record);
    }
    if let Some(record) = store.find_template_by_name(Some(user), key).await? {
        return Ok(record);
    }
    match store.find_template_by_name(None, key).await? {
        Some(record) if can_see(&record, user) => Ok(record),
        _ => Err(unknown(key)),
    }
}

/// The templates `user` sees (built-ins, public ones and their own), by name.
///
/// # Errors
///
/// Storage failures.
pub async fn list_visible(
    store: &dyn TemplateStore,
    user: &str,
    category: Option<&str>,
    page: Page,
) -> Result<Vec<TemplateRecord>> {
    store
        .list_templates(
            &TemplateFilter {
                owner_id: Some(user.to_owned()),
                include_public: true,
                category: category.map(str::to_owned),
            },
            page,
        )
        .await
}

/// The template `id` as `user` may change it.
async fn get_editable(store: &dyn TemplateStore, user: &str, id: &str) -> Result<TemplateRecord> {
    let record = get_visible(store, user, id).await?;
    if record.is_builtin {
        return Err(Error::Template {
            message: format!(
                "template `{}` is built-in and read-only; fork it to get a copy you can change",
                record.name
            ),
        });
    }
    if record.owner_id.as_deref() != Some(user) {
        return Err(unknown(id));
    }
    Ok(record)
}

/// The result of [`validate_template`]: issues, never an error.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TemplateValidation {
    /// No error.
    pub is_valid: bool,
    /// What makes the template unusable.
    pub errors: Vec<String>,
    /// What may surprise (validator warnings of the generated graph).
    pub warnings: Vec<String>,
    /// What was understood (name, category, generator, required tools and retrievers, node
    /// and edge counts, config hash) when the template could be read.
    pub template_info: Option<Value>,
}

/// Validates a template given as JSON (this crate's shape or the old export's `template`
/// object): it must read as a template, its default parameters must satisfy its parameter
/// schema, and the graph it generates with them must pass the workflow validator. Every
/// problem is returned; nothing is thrown.
pub fn validate_template(value: &Value) -> TemplateValidation {
    let mut out = TemplateValidation::default();
    let spec = match TemplateSpec::from_value(value) {
        Ok(spec) => spec,
        Err(e) => {
            out.errors.push(message_of(e));
            return out;
        }
    };
    check_spec(&spec, &mut out);
    out.is_valid = out.errors.is_empty();
    out
}

fn message_of(e: Error) -> String {
    match e {
        Error::Template { message } => message,
        other => other.to_string(),
    }
}

fn check_spec(spec: &TemplateSpec, out: &mut TemplateValidation) {
    let mut info = json!({
        "name": spec.name,
        "category": spec.category.as_str(),
        "generator": spec.generator(),
        "required_tools": spec.required_tools,
        "required_retrievers": spec.required_retrievers,
        "config_hash": spec.config_hash(),
    });
    if let Some(schema) = &spec.parameter_schema
        && !schema.is_object()
    {
        out.errors
            .push("`parameter_schema` must be a JSON Schema object".into());
    }
    if out.errors.is_empty() {
        match spec
            .merge_params(&Value::Null)
            .and_then(|params| spec.generate(&params))
        {
            Ok(def) => {
                info["node_count"] = json!(def.nodes.len());
                info["edge_count"] = json!(def.edges.len());
                let report = crate::WorkflowValidator::default().validate(&def);
                for issue in &report.issues {
                    let text = format!("{} at {}: {}", issue.code, issue.path, issue.message);
                    if report.errors().any(|e| std::ptr::eq(e, issue)) {
                        out.errors.push(format!("generated graph: {text}"));
                    } else {
                        out.warnings.push(format!("generated graph: {text}"));
                    }
                }
            }
            Err(e) => out.errors.push(message_of(e)),
        }
    }
    out.template_info = Some(info);
}

/// Refuses a spec that does not validate, with every error.
fn require_valid(spec: &TemplateSpec) -> Result<()> {
    let mut out = TemplateValidation::default();
    check_spec(spec, &mut out);
    if out.errors.is_empty() {
        Ok(())
    } else {
        Err(Error::Template {
            message: format!(
                "template `{}` is not valid: {}",
                spec.name,
                out.errors.join("; ")
            ),
        })
    }
}

/// Stores a new template owned by `user` (`is_builtin` is ignored: users cannot make
/// built-ins). The spec is validated first ([`validate_template`]); a `base_template_id` must
/// be a template `user` may see.
///
/// # Errors
///
/// [`Error::Template`] listing what is invalid (nothing written); [`Error::NotFound`] for an
/// unknown base; `Conflict` when `user` already has a template of that name.
pub async fn create_template(
    store: &dyn TemplateStore,
    user: &str,
    spec: &TemplateSpec,
) -> Result<TemplateRecord> {
    require_valid(spec)?;
    if let Some(base) = &spec.base_template_id {
        get_visible(store, user, base).await?;
    }
    store
        .create_template(NewTemplate {
            id: None,
            owner_id: Some(user.to_owned()),
            name: spec.name.clone(),
            description: (!spec.description.is_empty()).then(|| spec.description.clone()),
            category: spec.category.as_str().to_owned(),
            spec: spec_value(spec),
            tags: spec.tags.clone(),
            is_builtin: false,
            is_public: spec.is_public,
            base_template_id: spec.base_template_id.clone(),
        })
        .await
}

/// Replaces `user`'s template `id` with `spec` as a new version (the previous one stays in the
/// history, [`template_versions`]). `expected_version` makes it an optimistic update.
///
/// # Errors
///
/// [`Error::Template`] for a built-in or an invalid spec; [`Error::NotFound`] for a template
/// `user` does not own; `Conflict` for a stale `expected_version` or a duplicate name.
pub async fn update_template(
    store: &dyn TemplateStore,
    user: &str,
    id: &str,
    spec: &TemplateSpec,
    expected_version: Option<i64>,
) -> Result<TemplateRecord> {
    get_editable(store, user, id).await?;
    require_valid(spec)?;
    store
        .update_template(
            id,
            TemplateUpdate {
                name: Some(spec.name.clone()),
                description: Some((!spec.description.is_empty()).then(|| spec.description.clone())),
                category: Some(spec.category.as_str().to_owned()),
                spec: Some(spec_value(spec)),
                tags: Some(spec.tags.clone()),
                is_public: Some(spec.is_public),
                expected_version,
            },
        )
        .await
}

/// Deletes `user`'s template `id` (its history and analytics with it; executions keep their
/// rows with no template).
///
/// # Errors
///
/// [`Error::Template`] for a built-in; [`Error::NotFound`] for a template `user` does not own.
pub async fn delete_template(store: &dyn TemplateStore, user: &str, id: &str) -> Result<()> {
    get_editable(store, user, id).await?;
    if store.delete_template(id).await? {
        Ok(())
    } else {
        Err(unknown(id))
    }
}

/// Every version of a template `user` may see, oldest first (`is_latest` on the current one).
///
/// # Errors
///
/// [`Error::NotFound`]; storage failures.
pub async fn template_versions(
    store: &dyn TemplateStore,
    user: &str,
    id: &str,
) -> Result<Vec<TemplateVersionRecord>> {
    get_visible(store, user, id).await?;
    store.list_template_versions(id).await
}

/// A copy of template `id` (any `user` may see, built-ins included) owned by `user`, at version
/// 1, private, with `base_template_id` pointing at the original. `name` defaults to the
/// original's name (a user's names are unique, so forking one's own template needs a name).
///
/// # Errors
///
/// [`Error::NotFound`]; `Conflict` for a name `user` already uses.
pub async fn fork_template(
    store: &dyn TemplateStore,
    user: &str,
    id: &str,
    name: Option<&str>,
) -> Result<TemplateRecord> {
    let original = get_visible(store, user, id).await?;
    let mut spec = spec_of(&original)?;
    if let Some(name) = name {
        spec.name = name.to_owned();
    }
    spec.is_public = false;
    spec.is_builtin = false;
    spec.base_template_id = Some(original.id.clone());
    create_template(store, user, &spec).await
}

/// The old platform's export document of template `id`:
/// `{"template": {..., "export_version": "1.0", "config_hash": ...}, "export_format": "json",
/// "exported_at": RFC 3339}`.
///
/// # Errors
///
/// [`Error::NotFound`]; storage failures.
pub async fn export_template(store: &dyn TemplateStore, user: &str, id: &str) -> Result<Value> {
    let record = get_visible(store, user, id).await?;
    let spec = spec_of(&record)?;
    let mut template = serde_json::to_value(&spec).unwrap_or(Value::Null);
    template["id"] = json!(record.id);
    template["owner_id"] = json!(record.owner_id);
    template["config_hash"] = json!(spec.config_hash());
    template["export_version"] = json!(EXPORT_VERSION);
    template["created_at"] = json!(crate::time::rfc3339_ms(record.created_at));
    template["updated_at"] = json!(crate::time::rfc3339_ms(record.updated_at));
    Ok(json!({
        "template": template,
        "export_format": "json",
        "exported_at": crate::time::rfc3339_ms(now_ms()),
    }))
}

/// How [`import_template`] stores what it reads.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImportOptions {
    /// Store under this name instead of the exported one.
    pub override_name: Option<String>,
    /// When `user` already has a template of that name, store the import as its next version
    /// instead of failing with `Conflict`.
    pub merge_with_existing: bool,
}

/// Reads an export document (or a bare template object) into `user`'s templates. The export's
/// ids, owner, flags and hash are not trusted: the import is private, owned by `user`, not
/// built-in; `export_version`, when present, must be `1.x`. Nothing is written unless the
/// template validates.
///
/// # Errors
///
/// [`Error::Template`] naming what is malformed or invalid; `Conflict` for a name `user`
/// already uses (without `merge_with_existing`).
pub async fn import_template(
    store: &dyn TemplateStore,
    user: &str,
    document: &Value,
    options: &ImportOptions,
) -> Result<TemplateRecord> {
    let malformed = |message: String| Error::Template {
        message: format!("malformed import: {message}"),
    };
    let Value::Object(outer) = document else {
        return Err(malformed(format!(
            "expected a JSON object, found {}",
            crate::definition::json_type_name(document)
        )));
    };
    let template = match outer.get("template") {
        Some(Value::Object(inner)) => inner.clone(),
        Some(other) => {
            return Err(malformed(format!(
                "`template` must be an object, found {}",
                crate::definition::json_type_name(other)
            )));
        }
        None => outer.clone(),
    };
    match template
        .get("export_version")
        .or_else(|| outer.get("export_version"))
    {
        None => {}
        Some(Value::String(v)) if v == "1" || v.starts_with("1.") => {}
        Some(other) => {
            return Err(malformed(format!(
                "unsupported export_version {other} (this version reads {EXPORT_VERSION})"
            )));
        }
    }
    let mut value = Value::Object(template);
    if let Value::Object(map) = &mut value {
        for key in [
            "id",
            "owner_id",
            "config_hash",
            "export_version",
            "created_at",
            "updated_at",
            "is_builtin",
            "version",
        ] {
            map.remove(key);
        }
        if let Some(name) = &options.override_name {
            map.insert("name".into(), json!(name));
        }
    }
    let mut spec = TemplateSpec::from_value(&value).map_err(|e| malformed(message_of(e)))?;
    spec.is_public = false;
    // A base that does not exist here (exported from elsewhere) is dropped, not an error.
    if let Some(base) = &spec.base_template_id
        && get_visible(store, user, base).await.is_err()
    {
        spec.base_template_id = None;
    }
    if options.merge_with_existing
        && let Some(existing) = store.find_template_by_name(Some(user), &spec.name).await?
    {
        return update_template(store, user, &existing.id, &spec, Some(existing.version)).await;
    }
    create_template(store, user, &spec).await
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}
