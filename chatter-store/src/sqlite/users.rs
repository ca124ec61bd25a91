//! `users`, `api_keys` and `roles` on SQLite.

use async_trait::async_trait;
use chatter_core::store::{
    ApiKeyRecord, NewApiKey, NewUser, Page, RoleRecord, StoreErrorKind, StoreResult, UserRecord,
    UserStore,
};
use rusqlite::params;

use super::{Db, SqliteStore, query_all, query_opt, strings_at};
use crate::common::{conflict, not_found, now_ms, require, strings_json};

fn user_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<UserRecord> {
    Ok(UserRecord {
        id: row.get("id")?,
        email: row.get("email")?,
        display_name: row.get("display_name")?,
        roles: strings_at(row, "roles")?,
        is_active: row.get("is_active")?,
        created_at: row.get("created_at")?,
        updated_at: row.get("updated_at")?,
    })
}

fn key_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<ApiKeyRecord> {
    Ok(ApiKeyRecord {
        id: row.get("id")?,
        user_id: row.get("user_id")?,
        name: row.get("name")?,
        prefix: row.get("prefix")?,
        key_hash: row.get("key_hash")?,
        scopes: strings_at(row, "scopes")?,
        created_at: row.get("created_at")?,
        last_used_at: row.get("last_used_at")?,
        expires_at: row.get("expires_at")?,
        revoked_at: row.get("revoked_at")?,
    })
}

fn role_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<RoleRecord> {
    Ok(RoleRecord {
        name: row.get("name")?,
        description: row.get("description")?,
        permissions: strings_at(row, "permissions")?,
    })
}

#[async_trait]
impl UserStore for SqliteStore {
    async fn create_user(&self, new: NewUser) -> StoreResult<UserRecord> {
        require("email", &new.email)?;
        let id = self.ids.or_new(new.id.clone())?;
        self.write(move |conn| {
            conn.prepare_cached(
                "INSERT INTO users (id, email, display_name, roles, is_active, created_at, updated_at)
                 VALUES (?1, ?2, ?3, ?4, 1, ?5, ?5) RETURNING *",
            )
            .db()?
            .query_row(params![id, new.email, new.display_name, strings_json(&new.roles), now_ms()], user_row)
            .db()
            .map_err(|e| match e.store_kind() {
                Some(StoreErrorKind::Conflict) => {
                    conflict(format!("a user with id `{id}` or e-mail `{}` already exists", new.email))
                }
                _ => e,
            })
        })
        .await
    }

    async fn get_user(&self, id: &str) -> StoreResult<Option<UserRecord>> {
        let id = id.to_owned();
        self.read(move |conn| query_opt(conn, "SELECT * FROM users WHERE id = ?1", [id], user_row))
            .await
    }

    async fn get_user_by_email(&self, email: &str) -> StoreResult<Option<UserRecord>> {
        let email = email.to_owned();
        self.read(move |conn| {
            query_opt(
                conn,
                "SELECT * FROM users WHERE email = ?1 COLLATE NOCASE",
                [email],
                user_row,
            )
        })
        .await
    }

    async fn list_users(&self, page: Page) -> StoreResult<Vec<UserRecord>> {
        self.read(move |conn| {
            query_all(
                conn,
                "SELECT * FROM users ORDER BY created_at, id LIMIT ?1 OFFSET ?2",
                params![page.sql_limit(), page.sql_offset()],
                user_row,
            )
        })
        .await
    }

    async fn update_user(
        &self,
        id: &str,
        roles: Option<Vec<String>>,
        is_active: Option<bool>,
    ) -> StoreResult<UserRecord> {
        let id = id.to_owned();
        self.write(move |conn| {
            query_opt(
                conn,
                "UPDATE users SET roles = COALESCE(?2, roles), is_active = COALESCE(?3, is_active),
                     updated_at = MAX(updated_at, ?4)
                 WHERE id = ?1 RETURNING *",
                params![id, roles.as_deref().map(strings_json), is_active, now_ms()],
                user_row,
            )?
            .ok_or_else(|| not_found("user", &id))
        })
        .await
    }

    async fn create_api_key(&self, new: NewApiKey) -> StoreResult<ApiKeyRecord> {
        require("user_id", &new.user_id)?;
        require("key_hash", &new.key_hash)?;
        let id = self.ids.next();
        self.write(move |conn| {
            conn.prepare_cached(
                "INSERT INTO api_keys (id, user_id, name, prefix, key_hash, scopes, created_at, expires_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8) RETURNING *",
            )
            .db()?
            .query_row(
                params![id, new.user_id, new.name, new.prefix, new.key_hash, strings_json(&new.scopes), now_ms(), new.expires_at],
                key_row,
            )
            .db()
            .map_err(|e| match e.store_kind() {
                Some(StoreErrorKind::Conflict) => conflict("an API key with this hash already exists"),
                Some(StoreErrorKind::NotFound) => not_found("user", &new.user_id),
                _ => e,
            })
        })
        .await
    }

    async fn find_api_key(&self, key_hash: &str) -> StoreResult<Option<ApiKeyRecord>> {
        let hash = key_hash.to_owned();
        self.read(move |conn| {
            query_opt(
                conn,
                "SELECT * FROM api_keys WHERE key_hash = ?1",
                [hash],
                key_row,
            )
        })
        .await
    }

    async fn list_api_keys(&self, user_id: &str) -> StoreResult<Vec<ApiKeyRecord>> {
        let user = user_id.to_owned();
        self.read(move |conn| {
            query_all(
                conn,
                "SELECT * FROM api_keys WHERE user_id = ?1 ORDER BY created_at, id",
                [user],
                key_row,
            )
        })
        .await
    }

    async fn touch_api_key(&self, id: &str, at: i64) -> StoreResult<()> {
        let id = id.to_owned();
        self.write(move |conn| {
            let n = conn
                .execute(
                    "UPDATE api_keys SET last_used_at = MAX(COALESCE(last_used_at, 0), ?2) WHERE id = ?1",
                    params![id, at],
                )
                .db()?;
            if n == 0 { Err(not_found("API key", &id)) } else { Ok(()) }
        })
        .await
    }

    async fn revoke_api_key(&self, id: &str, at: i64) -> StoreResult<bool> {
        let id = id.to_owned();
        let n = self
            .write(move |conn| {
                conn.execute(
                    "UPDATE api_keys SET revoked_at = ?2 WHERE id = ?1 AND revoked_at IS NULL",
                    params![id, at],
                )
                .db()
            })
            .await?;
        Ok(n > 0)
    }

    async fn upsert_role(&self, role: RoleRecord) -> StoreResult<RoleRecord> {
        require("role name", &role.name)?;
        self.write(move |conn| {
            conn.prepare_cached(
                "INSERT INTO roles (name, description, permissions) VALUES (?1, ?2, ?3)
                 ON CONFLICT (name) DO UPDATE SET description = excluded.description, permissions = excluded.permissions
                 RETURNING *",
            )
            .db()?
            .query_row(params![role.name, role.description, strings_json(&role.permissions)], role_row)
            .db()
        })
        .await
    }

    async fn get_role(&self, name: &str) -> StoreResult<Option<RoleRecord>> {
        let name = name.to_owned();
        self.read(move |conn| {
            query_opt(
                conn,
                "SELECT * FROM roles WHERE name = ?1",
                [name],
                role_row,
            )
        })
        .await
    }

    async fn list_roles(&self) -> StoreResult<Vec<RoleRecord>> {
        self.read(|conn| query_all(conn, "SELECT * FROM roles ORDER BY name", [], role_row))
            .await
    }

    async fn delete_role(&self, name: &str) -> StoreResult<bool> {
        let name = name.to_owned();
        let n = self
            .write(move |conn| {
                conn.execute("DELETE FROM roles WHERE name = ?1", [name])
                    .db()
            })
            .await?;
        Ok(n > 0)
    }
}
