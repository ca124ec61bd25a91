//! Team workspaces (`workspaces`, `workspace_members`, `workspace_resources`): members share
//! the definitions and templates put into a workspace, with the rights of their role there.

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use super::StoreResult;

/// A stored workspace.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkspaceRecord {
    /// ULID.
    pub id: String,
    /// Display name.
    pub name: String,
    /// The user who created it.
    pub owner_id: String,
    /// Creation time (ms).
    pub created_at: i64,
}

/// A member of a workspace.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberRecord {
    /// The workspace.
    pub workspace_id: String,
    /// The user.
    pub user_id: String,
    /// `viewer` (read, run), `editor` (also change), `admin` (also manage members).
    pub role: String,
    /// When they joined (ms).
    pub created_at: i64,
}

/// The member roles, from least to most privileged.
pub const WORKSPACE_ROLES: [&str; 3] = ["viewer", "editor", "admin"];

/// Storage of workspaces, their members and shared resources.
#[async_trait]
pub trait WorkspaceStore: Send + Sync {
    /// Creates a workspace with its owner as its first `admin` member (one transaction).
    ///
    /// # Errors
    ///
    /// `InvalidInput` for an empty name, `NotFound` for an unknown owner.
    async fn create_workspace(&self, name: &str, owner_id: &str) -> StoreResult<WorkspaceRecord>;

    /// Reads a workspace.
    ///
    /// # Errors
    ///
    /// Database failures.
    async fn get_workspace(&self, id: &str) -> StoreResult<Option<WorkspaceRecord>>;

    /// Deletes a workspace (members and shares go with it); returns whether it existed.
    ///
    /// # Errors
    ///
    /// Database failures.
    async fn delete_workspace(&self, id: &str) -> StoreResult<bool>;

    /// The workspaces a user belongs to, with their role, by creation.
    ///
    /// # Errors
    ///
    /// Database failures.
    async fn list_user_workspaces(
        &self,
        user_id: &str,
    ) -> StoreResult<Vec<(WorkspaceRecord, String)>>;

    /// Adds a member or changes their role.
    ///
    /// # Errors
    ///
    /// `InvalidInput` for a role not in [`WORKSPACE_ROLES`], `NotFound` for an unknown
    /// workspace or user.
    async fn set_member(
        &self,
        workspace_id: &str,
        user_id: &str,
        role: &str,
    ) -> StoreResult<MemberRecord>;

    /// Removes a member; returns whether they were one.
    ///
    /// # Errors
    ///
    /// Database failures.
    async fn remove_member(&self, workspace_id: &str, user_id: &str) -> StoreResult<bool>;

    /// A workspace's members by joining time.
    ///
    /// # Errors
    ///
    /// Database failures.
    async fn list_members(&self, workspace_id: &str) -> StoreResult<Vec<MemberRecord>>;

    /// Shares a resource (`definition`, `template`) in a workspace (idempotent).
    ///
    /// # Errors
    ///
    /// `InvalidInput` for another resource type or an empty id, `NotFound` for an unknown
    /// workspace.
    async fn share_resource(
        &self,
        workspace_id: &str,
        resource_type: &str,
        resource_id: &str,
    ) -> StoreResult<()>;

    /// Stops sharing a resource in a workspace; returns whether it was shared.
    ///
    /// # Errors
    ///
    /// Database failures.
    async fn unshare_resource(
        &self,
        workspace_id: &str,
        resource_type: &str,
        resource_id: &str,
    ) -> StoreResult<bool>;

    /// The roles a user has on a resource through the workspaces sharing it.
    ///
    /// # Errors
    ///
    /// Database failures.
    async fn shared_roles(
        &self,
        user_id: &str,
        resource_type: &str,
        resource_id: &str,
    ) -> StoreResult<Vec<String>>;

    /// The ids of the resources of a type shared with a user through their workspaces.
    ///
    /// # Errors
    ///
    /// Database failures.
    async fn shared_resource_ids(
        &self,
        user_id: &str,
        resource_type: &str,
    ) -> StoreResult<Vec<String>>;
}
