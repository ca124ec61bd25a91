//! `workflow_templates` and `template_analytics` on Postgres.

use async_trait::async_trait;
use chatter_core::store::{
    NewTemplate, Page, StoreErrorKind, StoreResult, TemplateAnalytics, TemplateFilter,
    TemplateRecord, TemplateStore, TemplateUpdate, TemplateVersionRecord,
};
use serde_json::Value;
use tokio_postgres::Row;

use super::{Pg, PostgresStore, col, strings_col};
use crate::common::{conflict, not_found, now_ms, require};

fn template_row(row: &Row) -> StoreResult<TemplateRecord> {
    Ok(TemplateRecord {
        id: col(row, "id")?,
        owner_id: col(row, "owner_id")?,
        name: col(row, "name")?,
        description: col(row, "description")?,
        category: col(row, "category")?,
        spec: col(row, "spec")?,
        tags: strings_col(row, "tags")?,
        version: col(row, "version")?,
        is_builtin: col(row, "is_builtin")?,
        is_public: col(row, "is_public")?,
        base_template_id: col(row, "base_template_id")?,
        created_at: col(row, "created_at")?,
        updated_at: col(row, "updated_at")?,
    })
}

fn duplicate(e: chatter_core::Error, what: String) -> chatter_core::Error {
    if e.store_kind() == Some(StoreErrorKind::Conflict) {
        conflict(what)
    } else {
        e
    }
}

#[async_trait]
impl TemplateStore for PostgresStore {
    async fn create_template(&self, new: NewTemplate) -> StoreResult<TemplateRecord> {
        require("name", &new.name)?;
        self.limits.json("spec", &new.spec)?;
        let id = self.ids.or_new(new.id.clone())?;
        let mut client = self.client().await?;
        let tx = client.transaction().await.pg()?;
        let record = insert_template(&tx, &id, new, now_ms()).await?;
        tx.commit().await.pg()?;
        Ok(record)
    }

    async fn get_template(&self, id: &str) -> StoreResult<Option<TemplateRecord>> {
        if let Some(hit) = self.templates_cache.get(id) {
            return Ok(Some(hit));
        }
        let generation = self.templates_cache.generation();
        let client = self.client().await?;
        let row = client
            .query_opt("SELECT * FROM workflow_templates WHERE id = $1", &[&id])
            .await
            .pg()?;
        let found = row.as_ref().map(template_row).transpose()?;
        if let Some(record) = &found {
            self.templates_cache
                .put_if_current(id, record.clone(), generation);
        }
        Ok(found)
    }

    async fn update_template(
        &self,
        id: &str,
        update: TemplateUpdate,
    ) -> StoreResult<TemplateRecord> {
        if let Some(name) = &update.name {
            require("name", name)?;
        }
        self.limits.opt_json("spec", update.spec.as_ref())?;
        self.templates_cache.invalidate(id);
        let result = async {
            let mut client = self.client().await?;
            let tx = client.transaction().await.pg()?;
            let Some(row) = tx
                .query_opt("SELECT * FROM workflow_templates WHERE id = $1 FOR UPDATE", &[&id])
                .await
                .pg()?
            else {
                return Err(not_found("template", id));
            };
            let current = template_row(&row)?;
            if let Some(expected) = update.expected_version
                && expected != current.version
            {
                return Err(conflict(format!("template `{id}` is at version {}, not {expected}", current.version)));
            }
            let name = update.name.unwrap_or(current.name);
            let tags = Value::from(update.tags.unwrap_or(current.tags));
            let row = tx
                .query_one(
                    "UPDATE workflow_templates SET name = $2, description = $3, category = $4, spec = $5, tags = $6,
                         is_public = $7, version = version + 1, updated_at = GREATEST(updated_at, $8)
                     WHERE id = $1 RETURNING *",
                    &[
                        &id,
                        &name,
                        &update.description.unwrap_or(current.description),
                        &update.category.unwrap_or(current.category),
                        &update.spec.unwrap_or(current.spec),
                        &tags,
                        &update.is_public.unwrap_or(current.is_public),
                        &now_ms(),
                    ],
                )
                .await
                .pg()
                .map_err(|e| duplicate(e, format!("a template named `{name}` already exists")))?;
            let record = template_row(&row)?;
            insert_version(&tx, &record).await?;
            tx.commit().await.pg()?;
            Ok(record)
        }
        .await;
        self.templates_cache.invalidate(id);
        result
    }

    async fn delete_template(&self, id: &str) -> StoreResult<bool> {
        self.templates_cache.invalidate(id);
        let client = self.client().await?;
        let n = client
            .execute("DELETE FROM workflow_templates WHERE id = $1", &[&id])
            .await
            .pg()?;
        self.templates_cache.invalidate(id);
        Ok(n > 0)
    }

    async fn list_templates(
        &self,
        filter: &TemplateFilter,
        page: Page,
    ) -> StoreResult<Vec<TemplateRecord>> {
        let client = self.client().await?;
        let rows = client
            .query(
                "SELECT * FROM workflow_templates
                 WHERE ($1::text IS NULL OR owner_id = $1 OR ($2 AND (is_public OR is_builtin)))
                   AND ($3::text IS NULL OR category = $3)
                 ORDER BY name, id LIMIT $4 OFFSET $5",
                &[
                    &filter.owner_id,
                    &filter.include_public,
                    &filter.category,
                    &page.sql_limit(),
                    &page.sql_offset(),
                ],
            )
            .await
            .pg()?;
        rows.iter().map(template_row).collect()
    }

    async fn template_analytics(
        &self,
        template_id: &str,
    ) -> StoreResult<Option<TemplateAnalytics>> {
        let client = self.client().await?;
        let row = client
            .query_opt(
                "SELECT * FROM template_analytics WHERE template_id = $1",
                &[&template_id],
            )
            .await
            .pg()?;
        row.map(|row| {
            let usage_count: i64 = col(&row, "usage_count")?;
            let total_duration_ms: i64 = col(&row, "total_duration_ms")?;
            Ok(TemplateAnalytics {
                template_id: col(&row, "template_id")?,
                usage_count,
                success_count: col(&row, "success_count")?,
                failure_count: col(&row, "failure_count")?,
                total_tokens: col(&row, "total_tokens")?,
                total_cost: col(&row, "total_cost")?,
                total_duration_ms,
                avg_duration_ms: if usage_count == 0 {
                    0.0
                } else {
                    total_duration_ms as f64 / usage_count as f64
                },
                last_used_at: col(&row, "last_used_at")?,
                last_success_at: col(&row, "last_success_at")?,
                last_failure_at: col(&row, "last_failure_at")?,
            })
        })
        .transpose()
    }

    async fn find_template_by_name(
        &self,
        owner_id: Option<&str>,
        name: &str,
    ) -> StoreResult<Option<TemplateRecord>> {
        let client = self.client().await?;
        let row = client
            .query_opt(
                "SELECT * FROM workflow_templates
                 WHERE COALESCE(owner_id, '') = COALESCE($1::text, '') AND name = $2",
                &[&owner_id, &name],
            )
            .await
            .pg()?;
        row.as_ref().map(template_row).transpose()
    }

    async fn list_template_versions(
        &self,
        template_id: &str,
    ) -> StoreResult<Vec<TemplateVersionRecord>> {
        let client = self.client().await?;
        let rows = client
            .query(
                "SELECT v.*, v.version = t.version AS is_latest
                 FROM workflow_template_versions v
                 JOIN workflow_templates t ON t.id = v.template_id
                 WHERE v.template_id = $1 ORDER BY v.version",
                &[&template_id],
            )
            .await
            .pg()?;
        rows.iter()
            .map(|row| {
                Ok(TemplateVersionRecord {
                    template_id: col(row, "template_id")?,
                    version: col(row, "version")?,
                    is_latest: col(row, "is_latest")?,
                    name: col(row, "name")?,
                    description: col(row, "description")?,
                    category: col(row, "category")?,
                    spec: col(row, "spec")?,
                    tags: strings_col(row, "tags")?,
                    is_public: col(row, "is_public")?,
                    created_at: col(row, "created_at")?,
                })
            })
            .collect()
    }
}

/// Inserts a template at version 1 with its history row, inside the caller's transaction
/// (also used by marketplace installs).
pub(crate) async fn insert_template(
    tx: &tokio_postgres::Transaction<'_>,
    id: &str,
    new: NewTemplate,
    now: i64,
) -> StoreResult<TemplateRecord> {
    let category = if new.category.is_empty() {
        "general".to_owned()
    } else {
        new.category
    };
    let tags = Value::from(new.tags);
    let row = tx
        .query_one(
            "INSERT INTO workflow_templates (id, owner_id, name, description, category, spec, tags, version,
                 is_builtin, is_public, base_template_id, created_at, updated_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, 1, $8, $9, $10, $11, $11) RETURNING *",
            &[
                &id,
                &new.owner_id,
                &new.name,
                &new.description,
                &category,
                &new.spec,
                &tags,
                &new.is_builtin,
                &new.is_public,
                &new.base_template_id,
                &now,
            ],
        )
        .await
        .pg()
        .map_err(|e| {
            duplicate(
                e,
                format!(
                    "a template with id `{id}` or name `{}` already exists",
                    new.name
                ),
            )
        })?;
    let record = template_row(&row)?;
    insert_version(tx, &record).await?;
    Ok(record)
}

/// Records `record` as a version in `workflow_template_versions`.
async fn insert_version(
    tx: &tokio_postgres::Transaction<'_>,
    record: &TemplateRecord,
) -> StoreResult<()> {
    let tags = Value::from(record.tags.clone());
    tx.execute(
        "INSERT INTO workflow_template_versions
             (template_id, version, name, description, category, spec, tags, is_public, created_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        &[
            &record.id,
            &record.version,
            &record.name,
            &record.description,
            &record.category,
            &record.spec,
            &tags,
            &record.is_public,
            &record.updated_at,
        ],
    )
    .await
    .pg()?;
    Ok(())
}
