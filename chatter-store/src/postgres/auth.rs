//! `user_credentials` and `auth_sessions` on Postgres.

use async_trait::async_trait;
use chatter_core::store::{
    AuthStore, CredentialRecord, NewSession, SessionRecord, StoreErrorKind, StoreResult,
};
use tokio_postgres::Row;

use super::{Pg, PostgresStore, col};
use crate::common::{conflict, not_found, now_ms, require};

fn credential_row(row: &Row) -> StoreResult<CredentialRecord> {
    Ok(CredentialRecord {
        user_id: col(row, "user_id")?,
        username: col(row, "username")?,
        password_hash: col(row, "password_hash")?,
        updated_at: col(row, "updated_at")?,
    })
}

fn session_row(row: &Row) -> StoreResult<SessionRecord> {
    Ok(SessionRecord {
        id: col(row, "id")?,
        user_id: col(row, "user_id")?,
        token_hash: col(row, "token_hash")?,
        created_at: col(row, "created_at")?,
        expires_at: col(row, "expires_at")?,
        revoked_at: col(row, "revoked_at")?,
    })
}

#[async_trait]
impl AuthStore for PostgresStore {
    async fn set_credentials(
        &self,
        user_id: &str,
        username: &str,
        password_hash: Option<&str>,
    ) -> StoreResult<CredentialRecord> {
        require("user_id", user_id)?;
        require("username", username)?;
        if let Some(hash) = password_hash {
            require("password_hash", hash)?;
        }
        let client = self.client().await?;
        let row = client
            .query_one(
                "INSERT INTO user_credentials (user_id, username, password_hash, updated_at)
                 VALUES ($1, $2, $3, $4)
                 ON CONFLICT (user_id) DO UPDATE SET username = excluded.username,
                     password_hash = excluded.password_hash, updated_at = excluded.updated_at
                 RETURNING *",
                &[&user_id, &username, &password_hash, &now_ms()],
            )
            .await
            .pg()
            .map_err(|e| match e.store_kind() {
                Some(StoreErrorKind::Conflict) => {
                    conflict(format!("the username `{username}` is taken"))
                }
                Some(StoreErrorKind::NotFound) => not_found("user", user_id),
                _ => e,
            })?;
        credential_row(&row)
    }

    async fn get_credentials(&self, user_id: &str) -> StoreResult<Option<CredentialRecord>> {
        let client = self.client().await?;
        let row = client
            .query_opt(
                "SELECT * FROM user_credentials WHERE user_id = $1",
                &[&user_id],
            )
            .await
            .pg()?;
        row.as_ref().map(credential_row).transpose()
    }

    async fn find_credentials(&self, login: &str) -> StoreResult<Option<CredentialRecord>> {
        let client = self.client().await?;
        let row = client
            .query_opt(
                "SELECT * FROM user_credentials WHERE lower(username) = lower($1)",
                &[&login],
            )
            .await
            .pg()?;
        if let Some(row) = row {
            return credential_row(&row).map(Some);
        }
        let row = client
            .query_opt(
                "SELECT c.* FROM user_credentials c JOIN users u ON u.id = c.user_id
                 WHERE lower(u.email) = lower($1)",
                &[&login],
            )
            .await
            .pg()?;
        row.as_ref().map(credential_row).transpose()
    }

    async fn create_session(&self, new: NewSession) -> StoreResult<SessionRecord> {
        require("user_id", &new.user_id)?;
        require("token_hash", &new.token_hash)?;
        let id = self.ids.next();
        let client = self.client().await?;
        let row = client
            .query_one(
                "INSERT INTO auth_sessions (id, user_id, token_hash, created_at, expires_at)
                 VALUES ($1, $2, $3, $4, $5) RETURNING *",
                &[
                    &id,
                    &new.user_id,
                    &new.token_hash,
                    &now_ms(),
                    &new.expires_at,
                ],
            )
            .await
            .pg()
            .map_err(|e| match e.store_kind() {
                Some(StoreErrorKind::Conflict) => {
                    conflict("a session with this token already exists")
                }
                Some(StoreErrorKind::NotFound) => not_found("user", &new.user_id),
                _ => e,
            })?;
        session_row(&row)
    }

    async fn get_session(&self, id: &str) -> StoreResult<Option<SessionRecord>> {
        let client = self.client().await?;
        let row = client
            .query_opt("SELECT * FROM auth_sessions WHERE id = $1", &[&id])
            .await
            .pg()?;
        row.as_ref().map(session_row).transpose()
    }

    async fn find_session(&self, token_hash: &str) -> StoreResult<Option<SessionRecord>> {
        let client = self.client().await?;
        let row = client
            .query_opt(
                "SELECT * FROM auth_sessions WHERE token_hash = $1",
                &[&token_hash],
            )
            .await
            .pg()?;
        row.as_ref().map(session_row).transpose()
    }

    async fn revoke_session(&self, id: &str, at: i64) -> StoreResult<bool> {
        let client = self.client().await?;
        let n = client
            .execute(
                "UPDATE auth_sessions SET revoked_at = $2 WHERE id = $1 AND revoked_at IS NULL",
                &[&id, &at],
            )
            .await
            .pg()?;
        Ok(n > 0)
    }
}
