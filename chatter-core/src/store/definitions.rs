//! Versioned workflow definitions (`workflow_definitions`).

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{Page, StoreResult};

/// A stored workflow definition.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DefinitionRecord {
    /// ULID.
    pub id: String,
    /// The owning user.
    pub owner_id: String,
    /// Display name.
    pub name: String,
    /// Free text.
    pub description: Option<String>,
    /// The graph as JSON (`{nodes, edges, metadata}`), kept as written (editor fields included).
    pub definition: Value,
    /// Starts at 1, incremented by every update.
    pub version: i64,
    /// Visible to every user when true.
    pub is_public: bool,
    /// Tags, in the order given.
    pub tags: Vec<String>,
    /// Creation time (ms).
    pub created_at: i64,
    /// Last update time (ms).
    pub updated_at: i64,
}

/// What [`DefinitionStore::create_definition`] needs.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct NewDefinition {
    /// Id to use; a new ULID when `None`.
    pub id: Option<String>,
    /// The owning user.
    pub owner_id: String,
    /// Display name (not empty).
    pub name: String,
    /// Free text.
    pub description: Option<String>,
    /// The graph as JSON.
    pub definition: Value,
    /// Public flag.
    pub is_public: bool,
    /// Tags.
    pub tags: Vec<String>,
}

/// A partial update; `None` fields are left as they are.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct DefinitionUpdate {
    /// New name.
    pub name: Option<String>,
    /// New description (`Some(None)` clears it).
    pub description: Option<Option<String>>,
    /// New graph.
    pub definition: Option<Value>,
    /// New public flag.
    pub is_public: Option<bool>,
    /// New tags.
    pub tags: Option<Vec<String>>,
    /// When set, the update only applies if the stored version equals it (optimistic locking).
    pub expected_version: Option<i64>,
}

/// Which definitions [`DefinitionStore::list_definitions`] returns.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct DefinitionFilter {
    /// Only this owner's definitions (plus public ones when `include_public`); all when `None`.
    pub owner_id: Option<String>,
    /// Also return other owners' public definitions.
    pub include_public: bool,
    /// Only definitions carrying this tag.
    pub tag: Option<String>,
}

/// Storage of workflow definitions.
#[async_trait]
pub trait DefinitionStore: Send + Sync {
    /// Stores a new definition at version 1.
    ///
    /// # Errors
    ///
    /// `InvalidInput` for an empty name or owner, `PayloadTooLarge` over the payload limit,
    /// `Conflict` when the id exists.
    async fn create_definition(&self, new: NewDefinition) -> StoreResult<DefinitionRecord>;

    /// Reads a definition by id.
    ///
    /// # Errors
    ///
    /// Database failures.
    async fn get_definition(&self, id: &str) -> StoreResult<Option<DefinitionRecord>>;

    /// Applies `update`, increments the version and returns the new record.
    ///
    /// # Errors
    ///
    /// `NotFound` for an unknown id, `Conflict` when `expected_version` is stale.
    async fn update_definition(
        &self,
        id: &str,
        update: DefinitionUpdate,
    ) -> StoreResult<DefinitionRecord>;

    /// Deletes a definition; returns whether it existed. Executions keep their rows (their
    /// `definition_id` becomes null).
    ///
    /// # Errors
    ///
    /// Database failures.
    async fn delete_definition(&self, id: &str) -> StoreResult<bool>;

    /// Lists definitions, newest first (`created_at` desc, then id desc).
    ///
    /// # Errors
    ///
    /// Database failures.
    async fn list_definitions(
        &self,
        filter: &DefinitionFilter,
        page: Page,
    ) -> StoreResult<Vec<DefinitionRecord>>;
}
