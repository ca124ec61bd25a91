//! `workspaces`, `workspace_members`, `workspace_resources` on Postgres.

use async_trait::async_trait;
use chatter_core::store::{
    MemberRecord, StoreErrorKind, StoreResult, WorkspaceRecord, WorkspaceStore,
};
use tokio_postgres::Row;

use super::{Pg, PostgresStore, col};
use crate::common::{check_resource_type, check_workspace_role, not_found, now_ms, require};

fn workspace_row(row: &Row) -> StoreResult<WorkspaceRecord> {
    Ok(WorkspaceRecord {
        id: col(row, "id")?,
        name: col(row, "name")?,
        owner_id: col(row, "owner_id")?,
        created_at: col(row, "created_at")?,
    })
}

fn member_row(row: &Row) -> StoreResult<MemberRecord> {
    Ok(MemberRecord {
        workspace_id: col(row, "workspace_id")?,
        user_id: col(row, "user_id")?,
        role: col(row, "role")?,
        created_at: col(row, "created_at")?,
    })
}

#[async_trait]
impl WorkspaceStore for PostgresStore {
    async fn create_workspace(&self, name: &str, owner_id: &str) -> StoreResult<WorkspaceRecord> {
        require("name", name)?;
        require("owner_id", owner_id)?;
        let id = self.ids.next();
        let now = now_ms();
        let mut client = self.client().await?;
        let tx = client.transaction().await.pg()?;
        let row = tx
            .query_one(
                "INSERT INTO workspaces (id, name, owner_id, created_at) VALUES ($1, $2, $3, $4)
                 RETURNING *",
                &[&id, &name, &owner_id, &now],
            )
            .await
            .pg()
            .map_err(|e| match e.store_kind() {
                Some(StoreErrorKind::NotFound) => not_found("user", owner_id),
                _ => e,
            })?;
        tx.execute(
            "INSERT INTO workspace_members (workspace_id, user_id, role, created_at)
             VALUES ($1, $2, 'admin', $3)",
            &[&id, &owner_id, &now],
        )
        .await
        .pg()?;
        tx.commit().await.pg()?;
        workspace_row(&row)
    }

    async fn get_workspace(&self, id: &str) -> StoreResult<Option<WorkspaceRecord>> {
        let client = self.client().await?;
        let row = client
            .query_opt("SELECT * FROM workspaces WHERE id = $1", &[&id])
            .await
            .pg()?;
        row.as_ref().map(workspace_row).transpose()
    }

    async fn delete_workspace(&self, id: &str) -> StoreResult<bool> {
        let client = self.client().await?;
        let n = client
            .execute("DELETE FROM workspaces WHERE id = $1", &[&id])
            .await
            .pg()?;
        Ok(n > 0)
    }

    async fn list_user_workspaces(
        &self,
        user_id: &str,
    ) -> StoreResult<Vec<(WorkspaceRecord, String)>> {
        let client = self.client().await?;
        let rows = client
            .query(
                "SELECT w.*, m.role AS member_role FROM workspaces w
                 JOIN workspace_members m ON m.workspace_id = w.id
                 WHERE m.user_id = $1 ORDER BY w.created_at, w.id",
                &[&user_id],
            )
            .await
            .pg()?;
        rows.iter()
            .map(|row| Ok((workspace_row(row)?, col(row, "member_role")?)))
            .collect()
    }

    async fn set_member(
        &self,
        workspace_id: &str,
        user_id: &str,
        role: &str,
    ) -> StoreResult<MemberRecord> {
        check_workspace_role(role)?;
        let client = self.client().await?;
        let row = client
            .query_one(
                "INSERT INTO workspace_members (workspace_id, user_id, role, created_at)
                 VALUES ($1, $2, $3, $4)
                 ON CONFLICT (workspace_id, user_id) DO UPDATE SET role = excluded.role
                 RETURNING *",
                &[&workspace_id, &user_id, &role, &now_ms()],
            )
            .await
            .pg()
            .map_err(|e| match e.store_kind() {
                Some(StoreErrorKind::NotFound) => {
                    not_found("workspace or user", &format!("{workspace_id}/{user_id}"))
                }
                _ => e,
            })?;
        member_row(&row)
    }

    async fn remove_member(&self, workspace_id: &str, user_id: &str) -> StoreResult<bool> {
        let client = self.client().await?;
        let n = client
            .execute(
                "DELETE FROM workspace_members WHERE workspace_id = $1 AND user_id = $2",
                &[&workspace_id, &user_id],
            )
            .await
            .pg()?;
        Ok(n > 0)
    }

    async fn list_members(&self, workspace_id: &str) -> StoreResult<Vec<MemberRecord>> {
        let client = self.client().await?;
        let rows = client
            .query(
                "SELECT * FROM workspace_members WHERE workspace_id = $1 ORDER BY created_at, user_id",
                &[&workspace_id],
            )
            .await
            .pg()?;
        rows.iter().map(member_row).collect()
    }

    async fn share_resource(
        &self,
        workspace_id: &str,
        resource_type: &str,
        resource_id: &str,
    ) -> StoreResult<()> {
        check_resource_type(resource_type)?;
        require("resource_id", resource_id)?;
        let client = self.client().await?;
        client
            .execute(
                "INSERT INTO workspace_resources (workspace_id, resource_type, resource_id, created_at)
                 VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
                &[&workspace_id, &resource_type, &resource_id, &now_ms()],
            )
            .await
            .pg()
            .map_err(|e| match e.store_kind() {
                Some(StoreErrorKind::NotFound) => not_found("workspace", workspace_id),
                _ => e,
            })?;
        Ok(())
    }

    async fn unshare_resource(
        &self,
        workspace_id: &str,
        resource_type: &str,
        resource_id: &str,
    ) -> StoreResult<bool> {
        let client = self.client().await?;
        let n = client
            .execute(
                "DELETE FROM workspace_resources
                 WHERE workspace_id = $1 AND resource_type = $2 AND resource_id = $3",
                &[&workspace_id, &resource_type, &resource_id],
            )
            .await
            .pg()?;
        Ok(n > 0)
    }

    async fn shared_roles(
        &self,
        user_id: &str,
        resource_type: &str,
        resource_id: &str,
    ) -> StoreResult<Vec<String>> {
        let client = self.client().await?;
        let rows = client
            .query(
                "SELECT m.role FROM workspace_resources r
                 JOIN workspace_members m ON m.workspace_id = r.workspace_id
                 WHERE r.resource_type = $1 AND r.resource_id = $2 AND m.user_id = $3
                 ORDER BY m.role",
                &[&resource_type, &resource_id, &user_id],
            )
            .await
            .pg()?;
        rows.iter().map(|row| col(row, "role")).collect()
    }

    async fn shared_resource_ids(
        &self,
        user_id: &str,
        resource_type: &str,
    ) -> StoreResult<Vec<String>> {
        let client = self.client().await?;
        let rows = client
            .query(
                "SELECT DISTINCT r.resource_id FROM workspace_resources r
                 JOIN workspace_members m ON m.workspace_id = r.workspace_id
                 WHERE m.user_id = $1 AND r.resource_type = $2 ORDER BY r.resource_id",
                &[&user_id, &resource_type],
            )
            .await
            .pg()?;
        rows.iter().map(|row| col(row, "resource_id")).collect()
    }
}
