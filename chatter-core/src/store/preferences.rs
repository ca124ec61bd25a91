//! Per-user preferences (`user_preferences`), upserted by `(user_id, preference_type)`.

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::StoreResult;

/// A stored preference.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PreferenceRecord {
    /// The user.
    pub user_id: String,
    /// What it is about (`memory`, `tool_config`, `model`, ...).
    pub preference_type: String,
    /// The value.
    pub value: Value,
    /// 1 when created, incremented by every upsert.
    pub version: i64,
    /// Creation time (ms).
    pub created_at: i64,
    /// Last update time (ms).
    pub updated_at: i64,
}

/// Storage of user preferences.
#[async_trait]
pub trait PreferenceStore: Send + Sync {
    /// Creates or replaces the preference; when `expected_version` is set the write only
    /// applies if the stored version equals it (`0` meaning "does not exist yet").
    ///
    /// # Errors
    ///
    /// `InvalidInput` for an empty user or type, `Conflict` for a stale version,
    /// `PayloadTooLarge`.
    async fn upsert_preference(
        &self,
        user_id: &str,
        preference_type: &str,
        value: Value,
        expected_version: Option<i64>,
    ) -> StoreResult<PreferenceRecord>;

    /// Reads one preference.
    ///
    /// # Errors
    ///
    /// Database failures.
    async fn get_preference(
        &self,
        user_id: &str,
        preference_type: &str,
    ) -> StoreResult<Option<PreferenceRecord>>;

    /// A user's preferences by type.
    ///
    /// # Errors
    ///
    /// Database failures.
    async fn list_preferences(&self, user_id: &str) -> StoreResult<Vec<PreferenceRecord>>;

    /// Deletes one preference; returns whether it existed.
    ///
    /// # Errors
    ///
    /// Database failures.
    async fn delete_preference(&self, user_id: &str, preference_type: &str) -> StoreResult<bool>;
}
