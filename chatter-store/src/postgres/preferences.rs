//! `user_preferences` on Postgres.

use async_trait::async_trait;
use chatter_core::store::{PreferenceRecord, PreferenceStore, StoreResult};
use serde_json::Value;
use tokio_postgres::Row;

use super::{Pg, PostgresStore, col};
use crate::common::{conflict, now_ms, require};

fn preference_row(row: &Row) -> StoreResult<PreferenceRecord> {
    Ok(PreferenceRecord {
        user_id: col(row, "user_id")?,
        preference_type: col(row, "preference_type")?,
        value: col(row, "value")?,
        version: col(row, "version")?,
        created_at: col(row, "created_at")?,
        updated_at: col(row, "updated_at")?,
    })
}

#[async_trait]
impl PreferenceStore for PostgresStore {
    async fn upsert_preference(
        &self,
        user_id: &str,
        preference_type: &str,
        value: Value,
        expected_version: Option<i64>,
    ) -> StoreResult<PreferenceRecord> {
        require("user_id", user_id)?;
        require("preference_type", preference_type)?;
        self.limits.json("preference value", &value)?;
        let now = now_ms();
        let client = self.client().await?;
        // Each form is one statement, so concurrent writers cannot both pass a version check.
        let row = match expected_version {
            None => Some(
                client
                    .query_one(
                        "INSERT INTO user_preferences AS p (user_id, preference_type, value, version, created_at, updated_at)
                         VALUES ($1, $2, $3, 1, $4, $4)
                         ON CONFLICT (user_id, preference_type) DO UPDATE SET
                             value = excluded.value, version = p.version + 1,
                             updated_at = GREATEST(p.updated_at, excluded.updated_at)
                         RETURNING *",
                        &[&user_id, &preference_type, &value, &now],
                    )
                    .await
                    .pg()?,
            ),
            Some(0) => client
                .query_opt(
                    "INSERT INTO user_preferences (user_id, preference_type, value, version, created_at, updated_at)
                     VALUES ($1, $2, $3, 1, $4, $4) ON CONFLICT (user_id, preference_type) DO NOTHING RETURNING *",
                    &[&user_id, &preference_type, &value, &now],
                )
                .await
                .pg()?,
            Some(expected) => client
                .query_opt(
                    "UPDATE user_preferences SET value = $3, version = version + 1, updated_at = GREATEST(updated_at, $4)
                     WHERE user_id = $1 AND preference_type = $2 AND version = $5 RETURNING *",
                    &[&user_id, &preference_type, &value, &now, &expected],
                )
                .await
                .pg()?,
        };
        match row {
            Some(row) => preference_row(&row),
            None => {
                let actual: i64 = match client
                    .query_opt(
                        "SELECT version FROM user_preferences WHERE user_id = $1 AND preference_type = $2",
                        &[&user_id, &preference_type],
                    )
                    .await
                    .pg()?
                {
                    Some(row) => col(&row, "version")?,
                    None => 0,
                };
                Err(conflict(format!(
                    "preference `{preference_type}` of user `{user_id}` is at version {actual}, not {}",
                    expected_version.unwrap_or_default()
                )))
            }
        }
    }

    async fn get_preference(
        &self,
        user_id: &str,
        preference_type: &str,
    ) -> StoreResult<Option<PreferenceRecord>> {
        let client = self.client().await?;
        let row = client
            .query_opt(
                "SELECT * FROM user_preferences WHERE user_id = $1 AND preference_type = $2",
                &[&user_id, &preference_type],
            )
            .await
            .pg()?;
        row.as_ref().map(preference_row).transpose()
    }

    async fn list_preferences(&self, user_id: &str) -> StoreResult<Vec<PreferenceRecord>> {
        let client = self.client().await?;
        let rows = client
            .query(
                "SELECT * FROM user_preferences WHERE user_id = $1 ORDER BY preference_type COLLATE \"C\"",
                &[&user_id],
            )
            .await
            .pg()?;
        rows.iter().map(preference_row).collect()
    }

    async fn delete_preference(&self, user_id: &str, preference_type: &str) -> StoreResult<bool> {
        let client = self.client().await?;
        Ok(client
            .execute(
                "DELETE FROM user_preferences WHERE user_id = $1 AND preference_type = $2",
                &[&user_id, &preference_type],
            )
            .await
            .pg()?
            > 0)
    }
}
