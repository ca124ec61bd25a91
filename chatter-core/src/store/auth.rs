//! Login credentials (`user_credentials`) and refresh sessions (`auth_sessions`) of the HTTP
//! server: a username and a password hash per user, and one row per refresh token (its hash,
//! never the token), revocable and rotated on every refresh.

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use super::StoreResult;

/// A user's login credentials.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CredentialRecord {
    /// The user.
    pub user_id: String,
    /// Unique login name (compared case-insensitively).
    pub username: String,
    /// Password hash (a PHC string such as `$argon2id$...`), never the password.
    pub password_hash: Option<String>,
    /// Last update time (ms).
    pub updated_at: i64,
}

/// A refresh session: the hash of one refresh token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionRecord {
    /// ULID (also carried by the session's access tokens as `sid`).
    pub id: String,
    /// The user.
    pub user_id: String,
    /// Hash of the refresh token (unique).
    pub token_hash: String,
    /// Creation time (ms).
    pub created_at: i64,
    /// Expiry (ms).
    pub expires_at: i64,
    /// Revocation time (ms): logout, or rotation by a refresh.
    pub revoked_at: Option<i64>,
}

/// What [`AuthStore::create_session`] needs.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct NewSession {
    /// The user.
    pub user_id: String,
    /// Hash of the refresh token.
    pub token_hash: String,
    /// Expiry (ms).
    pub expires_at: i64,
}

/// Storage of login credentials and refresh sessions.
#[async_trait]
pub trait AuthStore: Send + Sync {
    /// Creates or replaces a user's username and password hash (`None` keeps no password:
    /// the user can only authenticate with API keys).
    ///
    /// # Errors
    ///
    /// `InvalidInput` for an empty username, `NotFound` for an unknown user, `Conflict` when
    /// another user has the username.
    async fn set_credentials(
        &self,
        user_id: &str,
        username: &str,
        password_hash: Option<&str>,
    ) -> StoreResult<CredentialRecord>;

    /// A user's credentials.
    ///
    /// # Errors
    ///
    /// Database failures.
    async fn get_credentials(&self, user_id: &str) -> StoreResult<Option<CredentialRecord>>;

    /// The credentials whose username (case-insensitive) is `login`, else those of the user
    /// whose e-mail (case-insensitive) is `login`.
    ///
    /// # Errors
    ///
    /// Database failures.
    async fn find_credentials(&self, login: &str) -> StoreResult<Option<CredentialRecord>>;

    /// Stores a new refresh session.
    ///
    /// # Errors
    ///
    /// `InvalidInput` for an empty hash, `NotFound` for an unknown user, `Conflict` for a
    /// duplicate hash.
    async fn create_session(&self, new: NewSession) -> StoreResult<SessionRecord>;

    /// Reads a session by id.
    ///
    /// # Errors
    ///
    /// Database failures.
    async fn get_session(&self, id: &str) -> StoreResult<Option<SessionRecord>>;

    /// Finds a session by the hash of its refresh token (revoked and expired ones too).
    ///
    /// # Errors
    ///
    /// Database failures.
    async fn find_session(&self, token_hash: &str) -> StoreResult<Option<SessionRecord>>;

    /// Revokes a session; returns whether it was active (so of two concurrent refreshes with
    /// the same token only one wins).
    ///
    /// # Errors
    ///
    /// Database failures.
    async fn revoke_session(&self, id: &str, at: i64) -> StoreResult<bool>;
}
