//! `workflow_templates` and `template_analytics` on SQLite.

use async_trait::async_trait;
use chatter_core::store::{
    NewTemplate, Page, StoreErrorKind, StoreResult, TemplateAnalytics, TemplateFilter,
    TemplateRecord, TemplateStore, TemplateUpdate, TemplateVersionRecord,
};
use rusqlite::params;

use super::{Db, SqliteStore, json_at, query_all, query_opt, strings_at};
use crate::common::{conflict, not_found, now_ms, require, strings_json, to_json_text};

const COLUMNS: &str = "id, owner_id, name, description, category, spec, tags, version, is_builtin, \
                       is_public, base_template_id, created_at, updated_at";

fn template_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<TemplateRecord> {
    Ok(TemplateRecord {
        id: row.get("id")?,
        owner_id: row.get("owner_id")?,
        name: row.get("name")?,
        description: row.get("description")?,
        category: row.get("category")?,
        spec: json_at(row, "spec")?,
        tags: strings_at(row, "tags")?,
        version: row.get("version")?,
        is_builtin: row.get("is_builtin")?,
        is_public: row.get("is_public")?,
        base_template_id: row.get("base_template_id")?,
        created_at: row.get("created_at")?,
        updated_at: row.get("updated_at")?,
    })
}

fn select_one(conn: &rusqlite::Connection, id: &str) -> StoreResult<Option<TemplateRecord>> {
    query_opt(
        conn,
        &format!("SELECT {COLUMNS} FROM workflow_templates WHERE id = ?1"),
        [id],
        template_row,
    )
}

fn duplicate(e: chatter_core::Error, what: String) -> chatter_core::Error {
    if e.store_kind() == Some(StoreErrorKind::Conflict) {
        conflict(what)
    } else {
        e
    }
}

#[async_trait]
impl TemplateStore for SqliteStore {
    async fn create_template(&self, new: NewTemplate) -> StoreResult<TemplateRecord> {
        require("name", &new.name)?;
        self.limits.json("spec", &new.spec)?;
        let id = self.ids.or_new(new.id.clone())?;
        self.write(move |conn| {
            let tx = conn.transaction().db()?;
            let record = insert_template(&tx, &id, new, now_ms())?;
            tx.commit().db()?;
            Ok(record)
        })
        .await
    }

    async fn get_template(&self, id: &str) -> StoreResult<Option<TemplateRecord>> {
        if let Some(hit) = self.templates_cache.get(id) {
            return Ok(Some(hit));
        }
        let generation = self.templates_cache.generation();
        let key = id.to_owned();
        let found = self.read(move |conn| select_one(conn, &key)).await?;
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
        let key = id.to_owned();
        self.templates_cache.invalidate(id);
        let result = self
            .write(move |conn| {
                let tx = conn.transaction().db()?;
                let Some(current) = select_one(&tx, &key)? else {
                    return Err(not_found("template", &key));
                };
                if let Some(expected) = update.expected_version
                    && expected != current.version
                {
                    return Err(conflict(format!(
                        "template `{key}` is at version {}, not {expected}",
                        current.version
                    )));
                }
                let name = update.name.unwrap_or(current.name);
                let record = tx
                    .prepare_cached(&format!(
                        "UPDATE workflow_templates SET name = ?2, description = ?3, category = ?4, spec = ?5,
                         tags = ?6, is_public = ?7, version = version + 1, updated_at = ?8
                         WHERE id = ?1 RETURNING {COLUMNS}"
                    ))
                    .db()?
                    .query_row(
                        params![
                            key,
                            name,
                            update.description.unwrap_or(current.description),
                            update.category.unwrap_or(current.category),
                            to_json_text(update.spec.as_ref().unwrap_or(&current.spec)),
                            strings_json(update.tags.as_ref().unwrap_or(&current.tags)),
                            update.is_public.unwrap_or(current.is_public),
                            now_ms().max(current.updated_at)
                        ],
                        template_row,
                    )
                    .db()
                    .map_err(|e| duplicate(e, format!("a template named `{name}` already exists")))?;
                insert_version(&tx, &record)?;
                tx.commit().db()?;
                Ok(record)
            })
            .await;
        self.templates_cache.invalidate(id);
        result
    }

    async fn delete_template(&self, id: &str) -> StoreResult<bool> {
        let key = id.to_owned();
        self.templates_cache.invalidate(id);
        let deleted = self
            .write(move |conn| {
                conn.execute("DELETE FROM workflow_templates WHERE id = ?1", [key])
                    .db()
            })
            .await?;
        self.templates_cache.invalidate(id);
        Ok(deleted > 0)
    }

    async fn list_templates(
        &self,
        filter: &TemplateFilter,
        page: Page,
    ) -> StoreResult<Vec<TemplateRecord>> {
        let filter = filter.clone();
        self.read(move |conn| {
            query_all(
                conn,
                &format!(
                    "SELECT {COLUMNS} FROM workflow_templates
                     WHERE (?1 IS NULL OR owner_id = ?1 OR (?2 AND (is_public = 1 OR is_builtin = 1)))
                       AND (?3 IS NULL OR category = ?3)
                     ORDER BY name, id LIMIT ?4 OFFSET ?5"
                ),
                params![filter.owner_id, filter.include_public, filter.category, page.sql_limit(), page.sql_offset()],
                template_row,
            )
        })
        .await
    }

    async fn template_analytics(
        &self,
        template_id: &str,
    ) -> StoreResult<Option<TemplateAnalytics>> {
        let key = template_id.to_owned();
        self.read(move |conn| {
            query_opt(
                conn,
                "SELECT template_id, usage_count, success_count, failure_count, total_tokens, total_cost,
                        total_duration_ms, last_used_at, last_success_at, last_failure_at
                 FROM template_analytics WHERE template_id = ?1",
                [key],
                |row| {
                    let usage_count: i64 = row.get("usage_count")?;
                    let total_duration_ms: i64 = row.get("total_duration_ms")?;
                    Ok(TemplateAnalytics {
                        template_id: row.get("template_id")?,
                        usage_count,
                        success_count: row.get("success_count")?,
                        failure_count: row.get("failure_count")?,
                        total_tokens: row.get("total_tokens")?,
                        total_cost: row.get("total_cost")?,
                        total_duration_ms,
                        avg_duration_ms: if usage_count == 0 {
                            0.0
                        } else {
                            total_duration_ms as f64 / usage_count as f64
                        },
                        last_used_at: row.get("last_used_at")?,
                        last_success_at: row.get("last_success_at")?,
                        last_failure_at: row.get("last_failure_at")?,
                    })
                },
            )
        })
        .await
    }

    async fn find_template_by_name(
        &self,
        owner_id: Option<&str>,
        name: &str,
    ) -> StoreResult<Option<TemplateRecord>> {
        let owner = owner_id.map(str::to_owned);
        let name = name.to_owned();
        self.read(move |conn| {
            query_opt(
                conn,
                &format!(
                    "SELECT {COLUMNS} FROM workflow_templates
                     WHERE COALESCE(owner_id, '') = COALESCE(?1, '') AND name = ?2"
                ),
                params![owner, name],
                template_row,
            )
        })
        .await
    }

    async fn list_template_versions(
        &self,
        template_id: &str,
    ) -> StoreResult<Vec<TemplateVersionRecord>> {
        let key = template_id.to_owned();
        self.read(move |conn| {
            query_all(
                conn,
                "SELECT v.template_id, v.version, v.version = t.version AS is_latest, v.name,
                        v.description, v.category, v.spec, v.tags, v.is_public, v.created_at
                 FROM workflow_template_versions v
                 JOIN workflow_templates t ON t.id = v.template_id
                 WHERE v.template_id = ?1 ORDER BY v.version",
                [key],
                |row| {
                    Ok(TemplateVersionRecord {
                        template_id: row.get("template_id")?,
                        version: row.get("version")?,
                        is_latest: row.get("is_latest")?,
                        name: row.get("name")?,
                        description: row.get("description")?,
                        category: row.get("category")?,
                        spec: json_at(row, "spec")?,
                        tags: strings_at(row, "tags")?,
                        is_public: row.get("is_public")?,
                        created_at: row.get("created_at")?,
                    })
                },
            )
        })
        .await
    }
}

/// Inserts a template at version 1 with its history row, inside the caller's transaction
/// (also used by marketplace installs).
pub(crate) fn insert_template(
    tx: &rusqlite::Transaction<'_>,
    id: &str,
    new: NewTemplate,
    now: i64,
) -> StoreResult<TemplateRecord> {
    let category = if new.category.is_empty() {
        "general".to_owned()
    } else {
        new.category
    };
    let record = tx
        .prepare_cached(&format!(
            "INSERT INTO workflow_templates ({COLUMNS})
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, 1, ?8, ?9, ?10, ?11, ?11)
             RETURNING {COLUMNS}"
        ))
        .db()?
        .query_row(
            params![
                id,
                new.owner_id,
                new.name,
                new.description,
                category,
                to_json_text(&new.spec),
                strings_json(&new.tags),
                new.is_builtin,
                new.is_public,
                new.base_template_id,
                now
            ],
            template_row,
        )
        .db()
        .map_err(|e| {
            duplicate(
                e,
                format!(
                    "a template with id `{id}` or name `{}` already exists",
                    new.name
                ),
            )
        })?;
    insert_version(tx, &record)?;
    Ok(record)
}

/// Records `record` as a version in `workflow_template_versions`.
fn insert_version(tx: &rusqlite::Transaction<'_>, record: &TemplateRecord) -> StoreResult<()> {
    tx.prepare_cached(
        "INSERT INTO workflow_template_versions
             (template_id, version, name, description, category, spec, tags, is_public, created_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
    )
    .db()?
    .execute(params![
        record.id,
        record.version,
        record.name,
        record.description,
        record.category,
        to_json_text(&record.spec),
        strings_json(&record.tags),
        record.is_public,
        record.updated_at
    ])
    .db()?;
    Ok(())
}
