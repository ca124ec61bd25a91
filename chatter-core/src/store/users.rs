//! Users (`users`), API keys (`api_keys`) and roles (`roles`).
//!
//! The store never sees a plaintext API key: callers hash it (e.g. SHA-256, hex) and store and
//! look up the hash.

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use super::{Page, StoreResult};

/// A stored user.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserRecord {
    /// ULID (or an external subject id).
    pub id: String,
    /// Unique e-mail address (compared case-insensitively).
    pub email: String,
    /// Display name.
    pub display_name: Option<String>,
    /// Role names.
    pub roles: Vec<String>,
    /// Disabled users cannot authenticate.
    pub is_active: bool,
    /// Creation time (ms).
    pub created_at: i64,
    /// Last update time (ms).
    pub updated_at: i64,
}

/// What [`UserStore::create_user`] needs.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct NewUser {
    /// Id to use; a new ULID when `None`.
    pub id: Option<String>,
    /// E-mail (not empty, unique).
    pub email: String,
    /// Display name.
    pub display_name: Option<String>,
    /// Role names.
    pub roles: Vec<String>,
}

/// A stored API key (its hash, never the key).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiKeyRecord {
    /// ULID.
    pub id: String,
    /// Owner.
    pub user_id: String,
    /// Label.
    pub name: String,
    /// First characters of the key, for display.
    pub prefix: String,
    /// Hash of the key (unique).
    pub key_hash: String,
    /// Scopes granted.
    pub scopes: Vec<String>,
    /// Creation time (ms).
    pub created_at: i64,
    /// Last use (ms).
    pub last_used_at: Option<i64>,
    /// Expiry (ms).
    pub expires_at: Option<i64>,
    /// Revocation time (ms).
    pub revoked_at: Option<i64>,
}

/// What [`UserStore::create_api_key`] needs.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct NewApiKey {
    /// Owner.
    pub user_id: String,
    /// Label.
    pub name: String,
    /// Display prefix.
    pub prefix: String,
    /// Hash of the key.
    pub key_hash: String,
    /// Scopes.
    pub scopes: Vec<String>,
    /// Expiry (ms).
    pub expires_at: Option<i64>,
}

/// A role and its permissions.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoleRecord {
    /// Unique name.
    pub name: String,
    /// Description.
    pub description: Option<String>,
    /// Permission names (`workflows:read`, ...).
    pub permissions: Vec<String>,
}

/// Storage of users, API keys and roles.
#[async_trait]
pub trait UserStore: Send + Sync {
    /// Creates a user.
    ///
    /// # Errors
    ///
    /// `InvalidInput` for an empty e-mail, `Conflict` for a duplicate id or e-mail.
    async fn create_user(&self, new: NewUser) -> StoreResult<UserRecord>;

    /// Reads a user by id.
    ///
    /// # Errors
    ///
    /// Database failures.
    async fn get_user(&self, id: &str) -> StoreResult<Option<UserRecord>>;

    /// Reads a user by e-mail (case-insensitive).
    ///
    /// # Errors
    ///
    /// Database failures.
    async fn get_user_by_email(&self, email: &str) -> StoreResult<Option<UserRecord>>;

    /// Users by creation (oldest first, then id).
    ///
    /// # Errors
    ///
    /// Database failures.
    async fn list_users(&self, page: Page) -> StoreResult<Vec<UserRecord>>;

    /// Replaces a user's roles and active flag.
    ///
    /// # Errors
    ///
    /// `NotFound`.
    async fn update_user(
        &self,
        id: &str,
        roles: Option<Vec<String>>,
        is_active: Option<bool>,
    ) -> StoreResult<UserRecord>;

    /// Stores an API key hash.
    ///
    /// # Errors
    ///
    /// `NotFound` for an unknown user, `Conflict` for a duplicate hash, `InvalidInput` for an
    /// empty hash.
    async fn create_api_key(&self, new: NewApiKey) -> StoreResult<ApiKeyRecord>;

    /// Finds a key by hash (revoked and expired keys are returned too; the caller decides).
    ///
    /// # Errors
    ///
    /// Database failures.
    async fn find_api_key(&self, key_hash: &str) -> StoreResult<Option<ApiKeyRecord>>;

    /// A user's keys by creation.
    ///
    /// # Errors
    ///
    /// Database failures.
    async fn list_api_keys(&self, user_id: &str) -> StoreResult<Vec<ApiKeyRecord>>;

    /// Records a use of a key.
    ///
    /// # Errors
    ///
    /// `NotFound`.
    async fn touch_api_key(&self, id: &str, at: i64) -> StoreResult<()>;

    /// Revokes a key; returns whether it was active.
    ///
    /// # Errors
    ///
    /// Database failures.
    async fn revoke_api_key(&self, id: &str, at: i64) -> StoreResult<bool>;

    /// Creates or replaces a role.
    ///
    /// # Errors
    ///
    /// `InvalidInput` for an empty name.
    async fn upsert_role(&self, role: RoleRecord) -> StoreResult<RoleRecord>;

    /// Reads a role.
    ///
    /// # Errors
    ///
    /// Database failures.
    async fn get_role(&self, name: &str) -> StoreResult<Option<RoleRecord>>;

    /// Every role by name.
    ///
    /// # Errors
    ///
    /// Database failures.
    async fn list_roles(&self) -> StoreResult<Vec<RoleRecord>>;

    /// Deletes a role; returns whether it existed.
    ///
    /// # Errors
    ///
    /// Database failures.
    async fn delete_role(&self, name: &str) -> StoreResult<bool>;
}
