//! Workflow templates (`workflow_templates`) and their usage analytics (`template_analytics`).

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{Page, StoreResult};

/// A stored template.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TemplateRecord {
    /// Id (ULID, or the built-in template's name).
    pub id: String,
    /// The owning user; `None` for built-ins.
    pub owner_id: Option<String>,
    /// Unique-per-owner display name.
    pub name: String,
    /// Free text.
    pub description: Option<String>,
    /// Category (`general`, `customer_support`, ...).
    pub category: String,
    /// The blueprint: default params, required tools/retrievers, parameter schema, generator or
    /// graph. Stored as given.
    pub spec: Value,
    /// Tags.
    pub tags: Vec<String>,
    /// Starts at 1, incremented by every update.
    pub version: i64,
    /// Shipped with Chatter.
    pub is_builtin: bool,
    /// Visible to every user.
    pub is_public: bool,
    /// The template this one was forked, imported or installed from (`None` once that one is
    /// deleted).
    pub base_template_id: Option<String>,
    /// Creation time (ms).
    pub created_at: i64,
    /// Last update time (ms).
    pub updated_at: i64,
}

/// What [`TemplateStore::create_template`] needs.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct NewTemplate {
    /// Id to use; a new ULID when `None`.
    pub id: Option<String>,
    /// Owner; `None` for built-ins.
    pub owner_id: Option<String>,
    /// Display name (not empty).
    pub name: String,
    /// Free text.
    pub description: Option<String>,
    /// Category.
    pub category: String,
    /// The blueprint.
    pub spec: Value,
    /// Tags.
    pub tags: Vec<String>,
    /// Built-in flag.
    pub is_builtin: bool,
    /// Public flag.
    pub is_public: bool,
    /// Lineage: the template this one derives from (must exist).
    pub base_template_id: Option<String>,
}

/// A partial update; `None` fields are left as they are.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct TemplateUpdate {
    /// New name.
    pub name: Option<String>,
    /// New description (`Some(None)` clears it).
    pub description: Option<Option<String>>,
    /// New category.
    pub category: Option<String>,
    /// New blueprint.
    pub spec: Option<Value>,
    /// New tags.
    pub tags: Option<Vec<String>>,
    /// New public flag.
    pub is_public: Option<bool>,
    /// Optimistic locking: apply only at this version.
    pub expected_version: Option<i64>,
}

/// Which templates [`TemplateStore::list_templates`] returns.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct TemplateFilter {
    /// Only this owner's templates (plus built-in and public ones when `include_public`).
    pub owner_id: Option<String>,
    /// Also return built-in and public templates.
    pub include_public: bool,
    /// Only this category.
    pub category: Option<String>,
}

/// Usage analytics of one template, updated when an execution of it ends.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct TemplateAnalytics {
    /// The template.
    pub template_id: String,
    /// Executions ended (any terminal status).
    pub usage_count: i64,
    /// Executions completed.
    pub success_count: i64,
    /// Executions failed or cancelled.
    pub failure_count: i64,
    /// Tokens summed over ended executions.
    pub total_tokens: i64,
    /// Cost summed over ended executions.
    pub total_cost: f64,
    /// Duration summed over ended executions (ms).
    pub total_duration_ms: i64,
    /// `total_duration_ms / usage_count` (0 when unused).
    pub avg_duration_ms: f64,
    /// When an execution of it last ended (ms).
    pub last_used_at: Option<i64>,
    /// When an execution of it last completed (ms).
    pub last_success_at: Option<i64>,
    /// When an execution of it last failed or was cancelled (ms).
    pub last_failure_at: Option<i64>,
}

/// One version of a template, as it was when that version was written
/// (`workflow_template_versions`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TemplateVersionRecord {
    /// The template.
    pub template_id: String,
    /// The version number (from 1).
    pub version: i64,
    /// Whether this is the template's current version.
    pub is_latest: bool,
    /// Name at that version.
    pub name: String,
    /// Description at that version.
    pub description: Option<String>,
    /// Category at that version.
    pub category: String,
    /// Blueprint at that version.
    pub spec: Value,
    /// Tags at that version.
    pub tags: Vec<String>,
    /// Public flag at that version.
    pub is_public: bool,
    /// When the version was written (ms).
    pub created_at: i64,
}

/// Storage of templates.
#[async_trait]
pub trait TemplateStore: Send + Sync {
    /// Stores a new template at version 1 (and its version-1 history row).
    ///
    /// # Errors
    ///
    /// `InvalidInput` for an empty name, `Conflict` for a duplicate id or (owner, name),
    /// `NotFound` for a `base_template_id` that does not exist, `PayloadTooLarge` over the
    /// payload limit.
    async fn create_template(&self, new: NewTemplate) -> StoreResult<TemplateRecord>;

    /// Reads a template by id.
    ///
    /// # Errors
    ///
    /// Database failures.
    async fn get_template(&self, id: &str) -> StoreResult<Option<TemplateRecord>>;

    /// Applies `update`, increments the version and records the new version in the history
    /// (same transaction).
    ///
    /// # Errors
    ///
    /// `NotFound`, `Conflict` (stale version or duplicate name).
    async fn update_template(
        &self,
        id: &str,
        update: TemplateUpdate,
    ) -> StoreResult<TemplateRecord>;

    /// Deletes a template, its history and its analytics; returns whether it existed.
    ///
    /// # Errors
    ///
    /// Database failures.
    async fn delete_template(&self, id: &str) -> StoreResult<bool>;

    /// Lists templates by name (then id).
    ///
    /// # Errors
    ///
    /// Database failures.
    async fn list_templates(
        &self,
        filter: &TemplateFilter,
        page: Page,
    ) -> StoreResult<Vec<TemplateRecord>>;

    /// Usage analytics of a template (`None` if it never ended an execution).
    ///
    /// # Errors
    ///
    /// Database failures.
    async fn template_analytics(&self, template_id: &str)
    -> StoreResult<Option<TemplateAnalytics>>;

    /// The template of `owner_id` (`None`: the owner-less built-ins) named `name`.
    ///
    /// # Errors
    ///
    /// Database failures.
    async fn find_template_by_name(
        &self,
        owner_id: Option<&str>,
        name: &str,
    ) -> StoreResult<Option<TemplateRecord>>;

    /// Every version of a template, oldest first (empty for an unknown template).
    ///
    /// # Errors
    ///
    /// Database failures.
    async fn list_template_versions(
        &self,
        template_id: &str,
    ) -> StoreResult<Vec<TemplateVersionRecord>>;
}
