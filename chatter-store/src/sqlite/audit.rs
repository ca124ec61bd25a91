//! `audit_logs` on SQLite (append-only: triggers refuse UPDATE and DELETE).

use async_trait::async_trait;
use chatter_core::store::{AuditFilter, AuditRecord, AuditStore, NewAuditEntry, Page, StoreResult};
use rusqlite::params;

use super::{Db, SqliteStore, json_at, query_all};
use crate::common::{object_or_empty, require, to_json_text};

fn audit_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<AuditRecord> {
    Ok(AuditRecord {
        id: row.get("id")?,
        ts: row.get("ts")?,
        actor_id: row.get("actor_id")?,
        action: row.get("action")?,
        resource_type: row.get("resource_type")?,
        resource_id: row.get("resource_id")?,
        outcome: row.get("outcome")?,
        ip_address: row.get("ip_address")?,
        details: json_at(row, "details")?,
    })
}

#[async_trait]
impl AuditStore for SqliteStore {
    async fn append_audit(&self, entry: NewAuditEntry) -> StoreResult<AuditRecord> {
        require("action", &entry.action)?;
        require("resource_type", &entry.resource_type)?;
        require("outcome", &entry.outcome)?;
        self.limits.json("audit details", &entry.details)?;
        self.write(move |conn| {
            conn.prepare_cached(
                "INSERT INTO audit_logs (ts, actor_id, action, resource_type, resource_id, outcome, ip_address, details)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8) RETURNING *",
            )
            .db()?
            .query_row(
                params![
                    entry.ts,
                    entry.actor_id,
                    entry.action,
                    entry.resource_type,
                    entry.resource_id,
                    entry.outcome,
                    entry.ip_address,
                    to_json_text(&object_or_empty(entry.details))
                ],
                audit_row,
            )
            .db()
        })
        .await
    }

    async fn list_audit(&self, filter: &AuditFilter, page: Page) -> StoreResult<Vec<AuditRecord>> {
        let filter = filter.clone();
        self.read(move |conn| {
            query_all(
                conn,
                "SELECT * FROM audit_logs
                 WHERE (?1 IS NULL OR actor_id = ?1) AND (?2 IS NULL OR resource_type = ?2)
                   AND (?3 IS NULL OR resource_id = ?3) AND (?4 IS NULL OR ts >= ?4)
                 ORDER BY id DESC LIMIT ?5 OFFSET ?6",
                params![
                    filter.actor_id,
                    filter.resource_type,
                    filter.resource_id,
                    filter.since,
                    page.sql_limit(),
                    page.sql_offset()
                ],
                audit_row,
            )
        })
        .await
    }
}
