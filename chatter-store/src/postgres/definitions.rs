//! `workflow_definitions` on Postgres.

use async_trait::async_trait;
use chatter_core::store::{
    DefinitionFilter, DefinitionRecord, DefinitionStore, DefinitionUpdate, NewDefinition, Page,
    StoreErrorKind, StoreResult,
};
use serde_json::Value;
use tokio_postgres::Row;

use super::{Pg, PostgresStore, col, strings_col};
use crate::common::{conflict, not_found, now_ms, require};

fn definition_row(row: &Row) -> StoreResult<DefinitionRecord> {
    Ok(DefinitionRecord {
        id: col(row, "id")?,
        owner_id: col(row, "owner_id")?,
        name: col(row, "name")?,
        description: col(row, "description")?,
        definition: col(row, "definition")?,
        version: col(row, "version")?,
        is_public: col(row, "is_public")?,
        tags: strings_col(row, "tags")?,
        created_at: col(row, "created_at")?,
        updated_at: col(row, "updated_at")?,
    })
}

#[async_trait]
impl DefinitionStore for PostgresStore {
    async fn create_definition(&self, new: NewDefinition) -> StoreResult<DefinitionRecord> {
        require("owner_id", &new.owner_id)?;
        require("name", &new.name)?;
        self.limits.json("definition", &new.definition)?;
        self.limits
            .opt_text("description", new.description.as_deref())?;
        let id = self.ids.or_new(new.id)?;
        let now = now_ms();
        let tags = Value::from(new.tags);
        let client = self.client().await?;
        let row = client
            .query_one(
                "INSERT INTO workflow_definitions (id, owner_id, name, description, definition, version, is_public, tags, created_at, updated_at)
                 VALUES ($1, $2, $3, $4, $5, 1, $6, $7, $8, $8) RETURNING *",
                &[&id, &new.owner_id, &new.name, &new.description, &new.definition, &new.is_public, &tags, &now],
            )
            .await
            .pg()
            .map_err(|e| match e.store_kind() {
                Some(StoreErrorKind::Conflict) => conflict(format!("definition `{id}` already exists")),
                _ => e,
            })?;
        definition_row(&row)
    }

    async fn get_definition(&self, id: &str) -> StoreResult<Option<DefinitionRecord>> {
        if let Some(hit) = self.definitions_cache.get(id) {
            return Ok(Some(hit));
        }
        let generation = self.definitions_cache.generation();
        let client = self.client().await?;
        let row = client
            .query_opt("SELECT * FROM workflow_definitions WHERE id = $1", &[&id])
            .await
            .pg()?;
        let found = row.as_ref().map(definition_row).transpose()?;
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
        self.definitions_cache.invalidate(id);
        let result = async {
            let mut client = self.client().await?;
            let tx = client.transaction().await.pg()?;
            let Some(row) = tx
                .query_opt("SELECT * FROM workflow_definitions WHERE id = $1 FOR UPDATE", &[&id])
                .await
                .pg()?
            else {
                return Err(not_found("definition", id));
            };
            let current = definition_row(&row)?;
            if let Some(expected) = update.expected_version
                && expected != current.version
            {
                return Err(conflict(format!(
                    "definition `{id}` is at version {}, not {expected}",
                    current.version
                )));
            }
            let description = match update.description {
                Some(d) => d,
                None => current.description,
            };
            let tags = Value::from(update.tags.unwrap_or(current.tags));
            let row = tx
                .query_one(
                    "UPDATE workflow_definitions SET name = $2, description = $3, definition = $4, is_public = $5,
                         tags = $6, version = version + 1, updated_at = GREATEST(updated_at, $7)
                     WHERE id = $1 RETURNING *",
                    &[
                        &id,
                        &update.name.unwrap_or(current.name),
                        &description,
                        &update.definition.unwrap_or(current.definition),
                        &update.is_public.unwrap_or(current.is_public),
                        &tags,
                        &now_ms(),
                    ],
                )
                .await
                .pg()?;
            tx.commit().await.pg()?;
            definition_row(&row)
        }
        .await;
        self.definitions_cache.invalidate(id);
        result
    }

    async fn delete_definition(&self, id: &str) -> StoreResult<bool> {
        self.definitions_cache.invalidate(id);
        let client = self.client().await?;
        let n = client
            .execute("DELETE FROM workflow_definitions WHERE id = $1", &[&id])
            .await
            .pg()?;
        self.definitions_cache.invalidate(id);
        Ok(n > 0)
    }

    async fn list_definitions(
        &self,
        filter: &DefinitionFilter,
        page: Page,
    ) -> StoreResult<Vec<DefinitionRecord>> {
        let client = self.client().await?;
        let rows = client
            .query(
                "SELECT * FROM workflow_definitions
                 WHERE ($1::text IS NULL OR owner_id = $1 OR ($2 AND is_public))
                   AND ($3::text IS NULL OR tags ? $3)
                 ORDER BY created_at DESC, id DESC LIMIT $4 OFFSET $5",
                &[
                    &filter.owner_id,
                    &filter.include_public,
                    &filter.tag,
                    &page.sql_limit(),
                    &page.sql_offset(),
                ],
            )
            .await
            .pg()?;
        rows.iter().map(definition_row).collect()
    }
}
