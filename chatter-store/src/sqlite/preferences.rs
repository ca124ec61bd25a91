//! `user_preferences` on SQLite.

use async_trait::async_trait;
use chatter_core::store::{PreferenceRecord, PreferenceStore, StoreResult};
use rusqlite::params;
use serde_json::Value;

use super::{Db, SqliteStore, json_at, query_all, query_opt};
use crate::common::{conflict, now_ms, require, to_json_text};

fn preference_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<PreferenceRecord> {
    Ok(PreferenceRecord {
        user_id: row.get("user_id")?,
        preference_type: row.get("preference_type")?,
        value: json_at(row, "value")?,
        version: row.get("version")?,
        created_at: row.get("created_at")?,
        updated_at: row.get("updated_at")?,
    })
}

#[async_trait]
impl PreferenceStore for SqliteStore {
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
        let (user, kind) = (user_id.to_owned(), preference_type.to_owned());
        self.write(move |conn| {
            let now = now_ms();
            let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate).db()?;
            let current: Option<i64> = query_opt(
                &tx,
                "SELECT version FROM user_preferences WHERE user_id = ?1 AND preference_type = ?2",
                params![user, kind],
                |row| row.get(0),
            )?;
            if let Some(expected) = expected_version {
                let actual = current.unwrap_or(0);
                if actual != expected {
                    return Err(conflict(format!(
                        "preference `{kind}` of user `{user}` is at version {actual}, not {expected}"
                    )));
                }
            }
            let record = tx
                .prepare_cached(
                    "INSERT INTO user_preferences (user_id, preference_type, value, version, created_at, updated_at)
                     VALUES (?1, ?2, ?3, 1, ?4, ?4)
                     ON CONFLICT (user_id, preference_type) DO UPDATE SET
                         value = excluded.value, version = version + 1,
                         updated_at = MAX(updated_at, excluded.updated_at)
                     RETURNING *",
                )
                .db()?
                .query_row(params![user, kind, to_json_text(&value), now], preference_row)
                .db()?;
            tx.commit().db()?;
            Ok(record)
        })
        .await
    }

    async fn get_preference(
        &self,
        user_id: &str,
        preference_type: &str,
    ) -> StoreResult<Option<PreferenceRecord>> {
        let (user, kind) = (user_id.to_owned(), preference_type.to_owned());
        self.read(move |conn| {
            query_opt(
                conn,
                "SELECT * FROM user_preferences WHERE user_id = ?1 AND preference_type = ?2",
                params![user, kind],
                preference_row,
            )
        })
        .await
    }

    async fn list_preferences(&self, user_id: &str) -> StoreResult<Vec<PreferenceRecord>> {
        let user = user_id.to_owned();
        self.read(move |conn| {
            query_all(
                conn,
                "SELECT * FROM user_preferences WHERE user_id = ?1 ORDER BY preference_type",
                [user],
                preference_row,
            )
        })
        .await
    }

    async fn delete_preference(&self, user_id: &str, preference_type: &str) -> StoreResult<bool> {
        let (user, kind) = (user_id.to_owned(), preference_type.to_owned());
        let deleted = self
            .write(move |conn| {
                conn.execute(
                    "DELETE FROM user_preferences WHERE user_id = ?1 AND preference_type = ?2",
                    params![user, kind],
                )
                .db()
            })
            .await?;
        Ok(deleted > 0)
    }
}
