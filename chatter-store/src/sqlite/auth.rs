//! `user_credentials` and `auth_sessions` on SQLite.

use async_trait::async_trait;
use chatter_core::store::{
    AuthStore, CredentialRecord, NewSession, SessionRecord, StoreErrorKind, StoreResult,
};
use rusqlite::params;

use super::{Db, SqliteStore, query_opt};
use crate::common::{conflict, not_found, now_ms, require};

fn credential_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<CredentialRecord> {
    Ok(CredentialRecord {
        user_id: row.get("user_id")?,
        username: row.get("username")?,
        password_hash: row.get("password_hash")?,
        updated_at: row.get("updated_at")?,
    })
}

fn session_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<SessionRecord> {
    Ok(SessionRecord {
        id: row.get("id")?,
        user_id: row.get("user_id")?,
        token_hash: row.get("token_hash")?,
        created_at: row.get("created_at")?,
        expires_at: row.get("expires_at")?,
        revoked_at: row.get("revoked_at")?,
    })
}

#[async_trait]
impl AuthStore for SqliteStore {
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
        let (user_id, username) = (user_id.to_owned(), username.to_owned());
        let hash = password_hash.map(str::to_owned);
        self.write(move |conn| {
            conn.prepare_cached(
                "INSERT INTO user_credentials (user_id, username, password_hash, updated_at)
                 VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (user_id) DO UPDATE SET username = excluded.username,
                     password_hash = excluded.password_hash, updated_at = excluded.updated_at
                 RETURNING *",
            )
            .db()?
            .query_row(params![user_id, username, hash, now_ms()], credential_row)
            .db()
            .map_err(|e| match e.store_kind() {
                Some(StoreErrorKind::Conflict) => {
                    conflict(format!("the username `{username}` is taken"))
                }
                Some(StoreErrorKind::NotFound) => not_found("user", &user_id),
                _ => e,
            })
        })
        .await
    }

    async fn get_credentials(&self, user_id: &str) -> StoreResult<Option<CredentialRecord>> {
        let user_id = user_id.to_owned();
        self.read(move |conn| {
            query_opt(
                conn,
                "SELECT * FROM user_credentials WHERE user_id = ?1",
                [user_id],
                credential_row,
            )
        })
        .await
    }

    async fn find_credentials(&self, login: &str) -> StoreResult<Option<CredentialRecord>> {
        let login = login.to_owned();
        self.read(move |conn| {
            if let Some(found) = query_opt(
                conn,
                "SELECT * FROM user_credentials WHERE username = ?1 COLLATE NOCASE",
                [&login],
                credential_row,
            )? {
                return Ok(Some(found));
            }
            query_opt(
                conn,
                "SELECT c.* FROM user_credentials c JOIN users u ON u.id = c.user_id
                 WHERE u.email = ?1 COLLATE NOCASE",
                [&login],
                credential_row,
            )
        })
        .await
    }

    async fn create_session(&self, new: NewSession) -> StoreResult<SessionRecord> {
        require("user_id", &new.user_id)?;
        require("token_hash", &new.token_hash)?;
        let id = self.ids.next();
        self.write(move |conn| {
            conn.prepare_cached(
                "INSERT INTO auth_sessions (id, user_id, token_hash, created_at, expires_at)
                 VALUES (?1, ?2, ?3, ?4, ?5) RETURNING *",
            )
            .db()?
            .query_row(
                params![id, new.user_id, new.token_hash, now_ms(), new.expires_at],
                session_row,
            )
            .db()
            .map_err(|e| match e.store_kind() {
                Some(StoreErrorKind::Conflict) => {
                    conflict("a session with this token already exists")
                }
                Some(StoreErrorKind::NotFound) => not_found("user", &new.user_id),
                _ => e,
            })
        })
        .await
    }

    async fn get_session(&self, id: &str) -> StoreResult<Option<SessionRecord>> {
        let id = id.to_owned();
        self.read(move |conn| {
            query_opt(
                conn,
                "SELECT * FROM auth_sessions WHERE id = ?1",
                [id],
                session_row,
            )
        })
        .await
    }

    async fn find_session(&self, token_hash: &str) -> StoreResult<Option<SessionRecord>> {
        let hash = token_hash.to_owned();
        self.read(move |conn| {
            query_opt(
                conn,
                "SELECT * FROM auth_sessions WHERE token_hash = ?1",
                [hash],
                session_row,
            )
        })
        .await
    }

    async fn revoke_session(&self, id: &str, at: i64) -> StoreResult<bool> {
        let id = id.to_owned();
        let n = self
            .write(move |conn| {
                conn.execute(
                    "UPDATE auth_sessions SET revoked_at = ?2 WHERE id = ?1 AND revoked_at IS NULL",
                    params![id, at],
                )
                .db()
            })
            .await?;
        Ok(n > 0)
    }
}
