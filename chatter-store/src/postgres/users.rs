//! `users`, `api_keys` and `roles` on Postgres.

use async_trait::async_trait;
use chatter_core::store::{
    ApiKeyRecord, NewApiKey, NewUser, Page, RoleRecord, StoreErrorKind, StoreResult, UserRecord,
    UserStore,
};
use serde_json::Value;
use tokio_postgres::Row;

use super::{Pg, PostgresStore, col, strings_col};
use crate::common::{conflict, not_found, now_ms, require};

fn user_row(row: &Row) -> StoreResult<UserRecord> {
    Ok(UserRecord {
        id: col(row, "id")?,
        email: col(row, "email")?,
        display_name: col(row, "display_name")?,
        roles: strings_col(row, "roles")?,
        is_active: col(row, "is_active")?,
        created_at: col(row, "created_at")?,
        updated_at: col(row, "updated_at")?,
    })
}

fn key_row(row: &Row) -> StoreResult<ApiKeyRecord> {
    Ok(ApiKeyRecord {
        id: col(row, "id")?,
        user_id: col(row, "user_id")?,
        name: col(row, "name")?,
        prefix: col(row, "prefix")?,
        key_hash: col(row, "key_hash")?,
        scopes: strings_col(row, "scopes")?,
        created_at: col(row, "created_at")?,
        last_used_at: col(row, "last_used_at")?,
        expires_at: col(row, "expires_at")?,
        revoked_at: col(row, "revoked_at")?,
    })
}

fn role_row(row: &Row) -> StoreResult<RoleRecord> {
    Ok(RoleRecord {
        name: col(row, "name")?,
        description: col(row, "description")?,
        permissions: strings_col(row, "permissions")?,
    })
}

#[async_trait]
impl UserStore for PostgresStore {
    async fn create_user(&self, new: NewUser) -> StoreResult<UserRecord> {
        require("email", &new.email)?;
        let id = self.ids.or_new(new.id.clone())?;
        let client = self.client().await?;
        let row = client
            .query_one(
                "INSERT INTO users (id, email, display_name, roles, is_active, created_at, updated_at)
                 VALUES ($1, $2, $3, $4, TRUE, $5, $5) RETURNING *",
                &[&id, &new.email, &new.display_name, &Value::from(new.roles.clone()), &now_ms()],
            )
            .await
            .pg()
            .map_err(|e| match e.store_kind() {
                Some(StoreErrorKind::Conflict) => {
                    conflict(format!("a user with id `{id}` or e-mail `{}` already exists", new.email))
                }
                _ => e,
            })?;
        user_row(&row)
    }

    async fn get_user(&self, id: &str) -> StoreResult<Option<UserRecord>> {
        let client = self.client().await?;
        let row = client
            .query_opt("SELECT * FROM users WHERE id = $1", &[&id])
            .await
            .pg()?;
        row.as_ref().map(user_row).transpose()
    }

    async fn get_user_by_email(&self, email: &str) -> StoreResult<Option<UserRecord>> {
        let client = self.client().await?;
        let row = client
            .query_opt(
                "SELECT * FROM users WHERE lower(email) = lower($1)",
                &[&email],
            )
            .await
            .pg()?;
        row.as_ref().map(user_row).transpose()
    }

    async fn list_users(&self, page: Page) -> StoreResult<Vec<UserRecord>> {
        let client = self.client().await?;
        let rows = client
            .query(
                "SELECT * FROM users ORDER BY created_at, id LIMIT $1 OFFSET $2",
                &[&page.sql_limit(), &page.sql_offset()],
            )
            .await
            .pg()?;
        rows.iter().map(user_row).collect()
    }

    async fn update_user(
        &self,
        id: &str,
        roles: Option<Vec<String>>,
        is_active: Option<bool>,
    ) -> StoreResult<UserRecord> {
        let client = self.client().await?;
        let roles = roles.map(Value::from);
        let row = client
            .query_opt(
                "UPDATE users SET roles = COALESCE($2, roles), is_active = COALESCE($3, is_active),
                     updated_at = GREATEST(updated_at, $4)
                 WHERE id = $1 RETURNING *",
                &[&id, &roles, &is_active, &now_ms()],
            )
            .await
            .pg()?;
        match row {
            Some(row) => user_row(&row),
            None => Err(not_found("user", id)),
        }
    }

    async fn create_api_key(&self, new: NewApiKey) -> StoreResult<ApiKeyRecord> {
        require("user_id", &new.user_id)?;
        require("key_hash", &new.key_hash)?;
        let id = self.ids.next();
        let client = self.client().await?;
        let row = client
            .query_one(
                "INSERT INTO api_keys (id, user_id, name, prefix, key_hash, scopes, created_at, expires_at)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING *",
                &[
                    &id,
                    &new.user_id,
                    &new.name,
                    &new.prefix,
                    &new.key_hash,
                    &Value::from(new.scopes.clone()),
                    &now_ms(),
                    &new.expires_at,
                ],
            )
            .await
            .pg()
            .map_err(|e| match e.store_kind() {
                Some(StoreErrorKind::Conflict) => conflict("an API key with this hash already exists"),
                Some(StoreErrorKind::NotFound) => not_found("user", &new.user_id),
                _ => e,
            })?;
        key_row(&row)
    }

    async fn find_api_key(&self, key_hash: &str) -> StoreResult<Option<ApiKeyRecord>> {
        let client = self.client().await?;
        let row = client
            .query_opt("SELECT * FROM api_keys WHERE key_hash = $1", &[&key_hash])
            .await
            .pg()?;
        row.as_ref().map(key_row).transpose()
    }

    async fn list_api_keys(&self, user_id: &str) -> StoreResult<Vec<ApiKeyRecord>> {
        let client = self.client().await?;
        let rows = client
            .query(
                "SELECT * FROM api_keys WHERE user_id = $1 ORDER BY created_at, id",
                &[&user_id],
            )
            .await
            .pg()?;
        rows.iter().map(key_row).collect()
    }

    async fn touch_api_key(&self, id: &str, at: i64) -> StoreResult<()> {
        let client = self.client().await?;
        let n = client
            .execute(
                "UPDATE api_keys SET last_used_at = GREATEST(last_used_at, $2) WHERE id = $1",
                &[&id, &at],
            )
            .await
            .pg()?;
        if n == 0 {
            Err(not_found("API key", id))
        } else {
            Ok(())
        }
    }

    async fn revoke_api_key(&self, id: &str, at: i64) -> StoreResult<bool> {
        let client = self.client().await?;
        let n = client
            .execute(
                "UPDATE api_keys SET revoked_at = $2 WHERE id = $1 AND revoked_at IS NULL",
                &[&id, &at],
            )
            .await
            .pg()?;
        Ok(n > 0)
    }

    async fn upsert_role(&self, role: RoleRecord) -> StoreResult<RoleRecord> {
        require("role name", &role.name)?;
        let client = self.client().await?;
        let row = client
            .query_one(
                "INSERT INTO roles (name, description, permissions) VALUES ($1, $2, $3)
                 ON CONFLICT (name) DO UPDATE SET description = excluded.description, permissions = excluded.permissions
                 RETURNING *",
                &[&role.name, &role.description, &Value::from(role.permissions.clone())],
            )
            .await
            .pg()?;
        role_row(&row)
    }

    async fn get_role(&self, name: &str) -> StoreResult<Option<RoleRecord>> {
        let client = self.client().await?;
        let row = client
            .query_opt("SELECT * FROM roles WHERE name = $1", &[&name])
            .await
            .pg()?;
        row.as_ref().map(role_row).transpose()
    }

    async fn list_roles(&self) -> StoreResult<Vec<RoleRecord>> {
        let client = self.client().await?;
        let rows = client
            .query("SELECT * FROM roles ORDER BY name COLLATE \"C\"", &[])
            .await
            .pg()?;
        rows.iter().map(role_row).collect()
    }

    async fn delete_role(&self, name: &str) -> StoreResult<bool> {
        let client = self.client().await?;
        Ok(client
            .execute("DELETE FROM roles WHERE name = $1", &[&name])
            .await
            .pg()?
            > 0)
    }
}
