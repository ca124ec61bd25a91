//! `workspaces`, `workspace_members`, `workspace_resources` on SQLite.

use async_trait::async_trait;
use chatter_core::store::{
    MemberRecord, StoreErrorKind, StoreResult, WorkspaceRecord, WorkspaceStore,
};
use rusqlite::params;

use super::{Db, SqliteStore, query_all, query_opt};
use crate::common::{check_resource_type, check_workspace_role, not_found, now_ms, require};

fn workspace_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<WorkspaceRecord> {
    Ok(WorkspaceRecord {
        id: row.get("id")?,
        name: row.get("name")?,
        owner_id: row.get("owner_id")?,
        created_at: row.get("created_at")?,
    })
}

fn member_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<MemberRecord> {
    Ok(MemberRecord {
        workspace_id: row.get("workspace_id")?,
        user_id: row.get("user_id")?,
        role: row.get("role")?,
        created_at: row.get("created_at")?,
    })
}

#[async_trait]
impl WorkspaceStore for SqliteStore {
    async fn create_workspace(&self, name: &str, owner_id: &str) -> StoreResult<WorkspaceRecord> {
        require("name", name)?;
        require("owner_id", owner_id)?;
        let id = self.ids.next();
        let (name, owner) = (name.to_owned(), owner_id.to_owned());
        self.write(move |conn| {
            let tx = conn.transaction().db()?;
            let now = now_ms();
            let record = tx
                .prepare_cached(
                    "INSERT INTO workspaces (id, name, owner_id, created_at) VALUES (?1, ?2, ?3, ?4)
                     RETURNING *",
                )
                .db()?
                .query_row(params![id, name, owner, now], workspace_row)
                .db()
                .map_err(|e| match e.store_kind() {
                    Some(StoreErrorKind::NotFound) => not_found("user", &owner),
                    _ => e,
                })?;
            tx.execute(
                "INSERT INTO workspace_members (workspace_id, user_id, role, created_at)
                 VALUES (?1, ?2, 'admin', ?3)",
                params![record.id, owner, now],
            )
            .db()?;
            tx.commit().db()?;
            Ok(record)
        })
        .await
    }

    async fn get_workspace(&self, id: &str) -> StoreResult<Option<WorkspaceRecord>> {
        let id = id.to_owned();
        self.read(move |conn| {
            query_opt(
                conn,
                "SELECT * FROM workspaces WHERE id = ?1",
                [id],
                workspace_row,
            )
        })
        .await
    }

    async fn delete_workspace(&self, id: &str) -> StoreResult<bool> {
        let id = id.to_owned();
        let n = self
            .write(move |conn| {
                conn.execute("DELETE FROM workspaces WHERE id = ?1", [id])
                    .db()
            })
            .await?;
        Ok(n > 0)
    }

    async fn list_user_workspaces(
        &self,
        user_id: &str,
    ) -> StoreResult<Vec<(WorkspaceRecord, String)>> {
        let user_id = user_id.to_owned();
        self.read(move |conn| {
            query_all(
                conn,
                "SELECT w.*, m.role AS member_role FROM workspaces w
                 JOIN workspace_members m ON m.workspace_id = w.id
                 WHERE m.user_id = ?1 ORDER BY w.created_at, w.id",
                [user_id],
                |row| Ok((workspace_row(row)?, row.get("member_role")?)),
            )
        })
        .await
    }

    async fn set_member(
        &self,
        workspace_id: &str,
        user_id: &str,
        role: &str,
    ) -> StoreResult<MemberRecord> {
        check_workspace_role(role)?;
        let (ws, user, role) = (workspace_id.to_owned(), user_id.to_owned(), role.to_owned());
        self.write(move |conn| {
            conn.prepare_cached(
                "INSERT INTO workspace_members (workspace_id, user_id, role, created_at)
                 VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (workspace_id, user_id) DO UPDATE SET role = excluded.role
                 RETURNING *",
            )
            .db()?
            .query_row(params![ws, user, role, now_ms()], member_row)
            .db()
            .map_err(|e| match e.store_kind() {
                Some(StoreErrorKind::NotFound) => {
                    not_found("workspace or user", &format!("{ws}/{user}"))
                }
                _ => e,
            })
        })
        .await
    }

    async fn remove_member(&self, workspace_id: &str, user_id: &str) -> StoreResult<bool> {
        let (ws, user) = (workspace_id.to_owned(), user_id.to_owned());
        let n = self
            .write(move |conn| {
                conn.execute(
                    "DELETE FROM workspace_members WHERE workspace_id = ?1 AND user_id = ?2",
                    params![ws, user],
                )
                .db()
            })
            .await?;
        Ok(n > 0)
    }

    async fn list_members(&self, workspace_id: &str) -> StoreResult<Vec<MemberRecord>> {
        let ws = workspace_id.to_owned();
        self.read(move |conn| {
            query_all(
                conn,
                "SELECT * FROM workspace_members WHERE workspace_id = ?1 ORDER BY created_at, user_id",
                [ws],
                member_row,
            )
        })
        .await
    }

    async fn share_resource(
        &self,
        workspace_id: &str,
        resource_type: &str,
        resource_id: &str,
    ) -> StoreResult<()> {
        check_resource_type(resource_type)?;
        require("resource_id", resource_id)?;
        let (ws, kind, id) = (
            workspace_id.to_owned(),
            resource_type.to_owned(),
            resource_id.to_owned(),
        );
        self.write(move |conn| {
            conn.execute(
                "INSERT INTO workspace_resources (workspace_id, resource_type, resource_id, created_at)
                 VALUES (?1, ?2, ?3, ?4) ON CONFLICT DO NOTHING",
                params![ws, kind, id, now_ms()],
            )
            .db()
            .map_err(|e| match e.store_kind() {
                Some(StoreErrorKind::NotFound) => not_found("workspace", &ws),
                _ => e,
            })
        })
        .await?;
        Ok(())
    }

    async fn unshare_resource(
        &self,
        workspace_id: &str,
        resource_type: &str,
        resource_id: &str,
    ) -> StoreResult<bool> {
        let (ws, kind, id) = (
            workspace_id.to_owned(),
            resource_type.to_owned(),
            resource_id.to_owned(),
        );
        let n = self
            .write(move |conn| {
                conn.execute(
                    "DELETE FROM workspace_resources
                     WHERE workspace_id = ?1 AND resource_type = ?2 AND resource_id = ?3",
                    params![ws, kind, id],
                )
                .db()
            })
            .await?;
        Ok(n > 0)
    }

    async fn shared_roles(
        &self,
        user_id: &str,
        resource_type: &str,
        resource_id: &str,
    ) -> StoreResult<Vec<String>> {
        let (user, kind, id) = (
            user_id.to_owned(),
            resource_type.to_owned(),
            resource_id.to_owned(),
        );
        self.read(move |conn| {
            query_all(
                conn,
                "SELECT m.role FROM workspace_resources r
                 JOIN workspace_members m ON m.workspace_id = r.workspace_id
                 WHERE r.resource_type = ?1 AND r.resource_id = ?2 AND m.user_id = ?3
                 ORDER BY m.role",
                params![kind, id, user],
                |row| row.get(0),
            )
        })
        .await
    }

    async fn shared_resource_ids(
        &self,
        user_id: &str,
        resource_type: &str,
    ) -> StoreResult<Vec<String>> {
        let (user, kind) = (user_id.to_owned(), resource_type.to_owned());
        self.read(move |conn| {
            query_all(
                conn,
                "SELECT DISTINCT r.resource_id FROM workspace_resources r
                 JOIN workspace_members m ON m.workspace_id = r.workspace_id
                 WHERE m.user_id = ?1 AND r.resource_type = ?2 ORDER BY r.resource_id",
                params![user, kind],
                |row| row.get(0),
            )
        })
        .await
    }
}
