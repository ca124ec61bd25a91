//! `workflow_definitions` on SQLite.

use async_trait::async_trait;
use chatter_core::store::{
    DefinitionFilter, DefinitionRecord, DefinitionStore, DefinitionUpdate, NewDefinition, Page,
    StoreResult,
};
use rusqlite::params;

use super::{Db, SqliteStore, json_at, query_all, query_opt, strings_at};
use crate::common::{conflict, not_found, now_ms, require, strings_json, to_json_text};

const COLUMNS: &str =
    "id, owner_id, name, description, definition, version, is_public, tags, created_at, updated_at";

pub(crate) fn definition_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<DefinitionRecord> {
    Ok(DefinitionRecord {
        id: row.get("id")?,
        owner_id: row.get("owner_id")?,
        name: row.get("name")?,
        description: row.get("description")?,
        definition: json_at(row, "definition")?,
        version: row.get("version")?,
        is_public: row.get("is_public")?,
        tags: strings_at(row, "tags")?,
        created_at: row.get("created_at")?,
        updated_at: row.get("updated_at")?,
    })
}

fn select_one(conn: &rusqlite::Connection, id: &str) -> StoreResult<Option<DefinitionRecord>> {
    query_opt(
        conn,
        &format!("SELECT {COLUMNS} FROM workflow_definitions WHERE id = ?1"),
        [id],
        definition_row,
    )
}

#[async_trait]
impl DefinitionStore for SqliteStore {
    async fn create_definition(&self, new: NewDefinition) -> StoreResult<DefinitionRecord> {
        require("owner_id", &new.owner_id)?;
        require("name", &new.name)?;
        self.limits.json("definition", &new.definition)?;
        self.limits
            .opt_text("description", new.description.as_deref())?;
        let id = self.ids.or_new(new.id)?;
        let now = now_ms();
        self.write(move |conn| {
            let inserted = conn
                .prepare_cached(&format!(
                    "INSERT INTO workflow_definitions ({COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, 1, ?6, ?7, ?8, ?8)
                     RETURNING {COLUMNS}"
                ))
                .db()?
                .query_row(
                    params![
                        id,
                        new.owner_id,
                        new.name,
                        new.description,
                        to_json_text(&new.definition),
                        new.is_public,
                        strings_json(&new.tags),
                        now
                    ],
                    definition_row,
                );
            inserted.map_err(|e| match super::db_err(e) {
                err if err.store_kind() == Some(chatter_core::store::StoreErrorKind::Conflict) => {
                    conflict(format!("definition `{id}` already exists"))
                }
                err => err,
            })
        })
        .await
    }

    async fn get_definition(&self, id: &str) -> StoreResult<Option<DefinitionRecord>> {
        if let Some(hit) = self.definitions_cache.get(id) {
            return Ok(Some(hit));
        }
        let generation = self.definitions_cache.generation();
        let key = id.to_owned();
        let found = self.read(move |conn| select_one(conn, &key)).await?;
        if let Some(record) = &found {
            self.definitions_cache
                .put_if_current(id, record.clone(), generation);
        }
        Ok(found)
    }

    async fn update_definition(
        &self,
        id: &str,
        update: DefinitionUpdate,
    ) -> StoreResult<DefinitionRecord> {
        if let Some(name) = &update.name {
            require("name", name)?;
        }
        self.limits
            .opt_json("definition", update.definition.as_ref())?;
        let key = id.to_owned();
        self.definitions_cache.invalidate(id);
        let result = self
            .write(move |conn| {
                let tx = conn.transaction().db()?;
                let Some(current) = select_one(&tx, &key)? else {
                    return Err(not_found("definition", &key));
                };
                if let Some(expected) = update.expected_version
                    && expected != current.version
                {
                    return Err(conflict(format!(
                        "definition `{key}` is at version {}, not {expected}",
                        current.version
                    )));
                }
                let description = match update.description {
                    Some(d) => d,
                    None => current.description,
                };
                let record = tx
                    .prepare_cached(&format!(
                        "UPDATE workflow_definitions SET name = ?2, description = ?3, definition = ?4,
                         is_public = ?5, tags = ?6, version = version + 1, updated_at = ?7
                         WHERE id = ?1 RETURNING {COLUMNS}"
                    ))
                    .db()?
                    .query_row(
                        params![
                            key,
                            update.name.unwrap_or(current.name),
                            description,
                            to_json_text(update.definition.as_ref().unwrap_or(&current.definition)),
                            update.is_public.unwrap_or(current.is_public),
                            strings_json(update.tags.as_ref().unwrap_or(&current.tags)),
                            now_ms().max(current.updated_at)
                        ],
                        definition_row,
                    )
                    .db()?;
                tx.commit().db()?;
                Ok(record)
            })
            .await;
        self.definitions_cache.invalidate(id);
        result
    }

    async fn delete_definition(&self, id: &str) -> StoreResult<bool> {
        let key = id.to_owned();
        self.definitions_cache.invalidate(id);
        let deleted = self
            .write(move |conn| {
                conn.execute("DELETE FROM workflow_definitions WHERE id = ?1", [key])
                    .db()
            })
            .await?;
        self.definitions_cache.invalidate(id);
        Ok(deleted > 0)
    }

    async fn list_definitions(
        &self,
        filter: &DefinitionFilter,
        page: Page,
    ) -> StoreResult<Vec<DefinitionRecord>> {
        let filter = filter.clone();
        self.read(move |conn| {
            query_all(
                conn,
                &format!(
                    "SELECT {COLUMNS} FROM workflow_definitions
                     WHERE (?1 IS NULL OR owner_id = ?1 OR (?2 AND is_public = 1))
                       AND (?3 IS NULL OR EXISTS (SELECT 1 FROM json_each(tags) WHERE value = ?3))
                     ORDER BY created_at DESC, id DESC LIMIT ?4 OFFSET ?5"
                ),
                params![
                    filter.owner_id,
                    filter.include_public,
                    filter.tag,
                    page.sql_limit(),
                    page.sql_offset()
                ],
                definition_row,
            )
        })
        .await
    }
}
