//! `audit_logs` on Postgres (append-only: a trigger refuses UPDATE, DELETE and TRUNCATE).

use async_trait::async_trait;
use chatter_core::store::{AuditFilter, AuditRecord, AuditStore, NewAuditEntry, Page, StoreResult};
use tokio_postgres::Row;

use super::{Pg, PostgresStore, col};
use crate::common::{object_or_empty, require};

fn audit_row(row: &Row) -> StoreResult<AuditRecord> {
    Ok(AuditRecord {
        id: col(row, "id")?,
        ts: col(row, "ts")?,
        actor_id: col(row, "actor_id")?,
        action: col(row, "action")?,
        resource_type: col(row, "resource_type")?,
        resource_id: col(row, "resource_id")?,
        outcome: col(row, "outcome")?,
        ip_address: col(row, "ip_address")?,
        details: col(row, "details")?,
    })
}

#[async_trait]
impl AuditStore for PostgresStore {
    async fn append_audit(&self, entry: NewAuditEntry) -> StoreResult<AuditRecord> {
        require("action", &entry.action)?;
        require("resource_type", &entry.resource_type)?;
        require("outcome", &entry.outcome)?;
        self.limits.json("audit details", &entry.details)?;
        let client = self.client().await?;
        let row = client
            .query_one(
                "INSERT INTO audit_logs (ts, actor_id, action, resource_type, resource_id, outcome, ip_address, details)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING *",
                &[
                    &entry.ts,
                    &entry.actor_id,
                    &entry.action,
                    &entry.resource_type,
                    &entry.resource_id,
                    &entry.outcome,
                    &entry.ip_address,
                    &object_or_empty(entry.details),
                ],
            )
            .await
            .pg()?;
        audit_row(&row)
    }

    async fn list_audit(&self, filter: &AuditFilter, page: Page) -> StoreResult<Vec<AuditRecord>> {
        let client = self.client().await?;
        let rows = client
            .query(
                "SELECT * FROM audit_logs
                 WHERE ($1::text IS NULL OR actor_id = $1) AND ($2::text IS NULL OR resource_type = $2)
                   AND ($3::text IS NULL OR resource_id = $3) AND ($4::bigint IS NULL OR ts >= $4)
                 ORDER BY id DESC LIMIT $5 OFFSET $6",
                &[
                    &filter.actor_id,
                    &filter.resource_type,
                    &filter.resource_id,
                    &filter.since,
                    &page.sql_limit(),
                    &page.sql_offset(),
                ],
            )
            .await
            .pg()?;
        rows.iter().map(audit_row).collect()
    }
}
