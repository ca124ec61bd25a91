//! Team workspaces under `/api/v1/workspaces`: members share the definitions and templates put
//! into a workspace with the rights of their role there: `viewer` reads and runs, `editor`
//! also changes (never deletes) and shares, `admin` also manages members and the workspace.
//! Membership changes and shares are audited.

use axum::Router;
use axum::extract::State;
use axum::response::Response;
use axum::routing::{get, post, put};
use chatter_core::store::{MemberRecord, WORKSPACE_ROLES, WorkspaceRecord};
use chatter_core::time::rfc3339_ms;
use serde::Deserialize;
use serde_json::{Value, json};

use super::auth::Principal;
use super::problem::{ApiError, ApiJson, ApiPath};
use super::schemas;
use super::{AppState, ok};

pub(super) fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/v1/workspaces", post(create).get(list))
        .route(
            "/api/v1/workspaces/{workspace_id}",
            get(show).delete(remove),
        )
        .route(
            "/api/v1/workspaces/{workspace_id}/members/{user_id}",
            put(set_member).delete(remove_member),
        )
        .route("/api/v1/workspaces/{workspace_id}/resources", post(share))
        .route(
            "/api/v1/workspaces/{workspace_id}/resources/{resource_type}/{resource_id}",
            axum::routing::delete(unshare),
        )
}

/// Rank of a workspace role (`viewer` 0 … `admin` 2).
pub(super) fn rank(role: &str) -> Option<usize> {
    WORKSPACE_ROLES.iter().position(|r| *r == role)
}

/// Whether any of `roles` is at least `needed`.
pub(super) fn has_role(roles: &[String], needed: &str) -> bool {
    let needed = rank(needed).unwrap_or(usize::MAX);
    roles.iter().filter_map(|r| rank(r)).any(|r| r >= needed)
}

fn workspace_json(w: &WorkspaceRecord, role: Option<&str>) -> Value {
    json!({
        "id": w.id,
        "name": w.name,
        "owner_id": w.owner_id,
        "role": role,
        "created_at": rfc3339_ms(w.created_at),
    })
}

fn member_json(m: &MemberRecord) -> Value {
    json!({"user_id": m.user_id, "role": m.role, "joined_at": rfc3339_ms(m.created_at)})
}

/// The workspace and the caller's role in it (`admin` for platform admins); 404 when the
/// caller is not a member, 403 when their role is below `needed`.
async fn membership(
    state: &AppState,
    p: &Principal,
    id: &str,
    needed: &str,
) -> Result<(WorkspaceRecord, Vec<MemberRecord>, String), ApiError> {
    let store = state.store();
    let workspace = store
        .get_workspace(id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no workspace `{id}`")))?;
    let members = store.list_members(id).await?;
    let role = match members.iter().find(|m| m.user_id == p.id()) {
        Some(m) => m.role.clone(),
        None if p.is_admin() => "admin".to_owned(),
        None => return Err(ApiError::not_found(format!("no workspace `{id}`"))),
    };
    if !has_role(std::slice::from_ref(&role), needed) {
        return Err(ApiError::forbidden(format!(
            "this needs the `{needed}` role in the workspace (you are `{role}`)"
        )));
    }
    Ok((workspace, members, role))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NewWorkspace {
    name: String,
}

#[utoipa::path(
    post,
    path = "/api/v1/workspaces",
    operation_id = "create_workspace",
    tag = "Workspaces",
    request_body = schemas::WorkspaceCreate,
    responses(
        (status = 200, description = "The workspace (the caller is its admin)", body = schemas::WorkspaceResponse),
        (status = 422, description = "Validation Error", body = schemas::Problem, content_type = "application/problem+json"),
    ),
    security(("CustomHTTPBearer" = [])),
)]
async fn create(
    State(state): State<AppState>,
    p: Principal,
    ApiJson(body): ApiJson<NewWorkspace>,
) -> Result<Response, ApiError> {
    p.require("workflow:write")?;
    if body.name.trim().is_empty() || body.name.chars().count() > 255 {
        return Err(ApiError::unprocessable(
            "`name` must have 1 to 255 characters",
        ));
    }
    let workspace = state.store().create_workspace(&body.name, p.id()).await?;
    state
        .audit(
            Some(p.id()),
            "workspace.create",
            ("workspace", Some(&workspace.id)),
            "success",
            json!({"name": workspace.name}),
        )
        .await;
    Ok(ok(workspace_json(&workspace, Some("admin"))))
}

#[utoipa::path(
    get,
    path = "/api/v1/workspaces",
    operation_id = "list_workspaces",
    tag = "Workspaces",
    responses(
        (status = 200, description = "Successful Response", body = schemas::WorkspacesResponse),
    ),
    security(("CustomHTTPBearer" = [])),
)]
async fn list(State(state): State<AppState>, p: Principal) -> Result<Response, ApiError> {
    let workspaces = state.store().list_user_workspaces(p.id()).await?;
    let docs: Vec<Value> = workspaces
        .iter()
        .map(|(w, role)| workspace_json(w, Some(role)))
        .collect();
    Ok(ok(json!({"workspaces": docs, "total_count": docs.len()})))
}

#[utoipa::path(
    get,
    path = "/api/v1/workspaces/{workspace_id}",
    operation_id = "get_workspace",
    tag = "Workspaces",
    params(
        ("workspace_id" = String, Path, description = "Workspace ID"),
    ),
    responses(
        (status = 200, description = "The workspace with its members", body = schemas::WorkspaceResponse),
        (status = 404, description = "No such workspace of the caller", body = schemas::Problem, content_type = "application/problem+json"),
    ),
    security(("CustomHTTPBearer" = [])),
)]
async fn show(
    State(state): State<AppState>,
    p: Principal,
    ApiPath(id): ApiPath<String>,
) -> Result<Response, ApiError> {
    let (workspace, members, role) = membership(&state, &p, &id, "viewer").await?;
    let mut doc = workspace_json(&workspace, Some(&role));
    doc["members"] = Value::Array(members.iter().map(member_json).collect());
    Ok(ok(doc))
}

#[utoipa::path(
    delete,
    path = "/api/v1/workspaces/{workspace_id}",
    operation_id = "delete_workspace",
    tag = "Workspaces",
    params(
        ("workspace_id" = String, Path, description = "Workspace ID"),
    ),
    responses(
        (status = 200, description = "Successful Response", body = schemas::WorkspaceChangeResponse),
        (status = 403, description = "Not a workspace admin", body = schemas::Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such workspace of the caller", body = schemas::Problem, content_type = "application/problem+json"),
    ),
    security(("CustomHTTPBearer" = [])),
)]
async fn remove(
    State(state): State<AppState>,
    p: Principal,
    ApiPath(id): ApiPath<String>,
) -> Result<Response, ApiError> {
    membership(&state, &p, &id, "admin").await?;
    state.store().delete_workspace(&id).await?;
    state
        .audit(
            Some(p.id()),
            "workspace.delete",
            ("workspace", Some(&id)),
            "success",
            json!({}),
        )
        .await;
    Ok(ok(
        json!({"message": "Workspace deleted", "workspace_id": id}),
    ))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct MemberBody {
    role: String,
}

#[utoipa::path(
    put,
    path = "/api/v1/workspaces/{workspace_id}/members/{user_id}",
    operation_id = "set_workspace_member",
    tag = "Workspaces",
    params(
        ("workspace_id" = String, Path, description = "Workspace ID"),
        ("user_id" = String, Path, description = "User ID"),
    ),
    request_body = schemas::WorkspaceMemberUpdate,
    responses(
        (status = 200, description = "Successful Response", body = schemas::WorkspaceMember),
        (status = 403, description = "Not a workspace admin", body = schemas::Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such workspace of the caller", body = schemas::Problem, content_type = "application/problem+json"),
        (status = 409, description = "Demoting the owner", body = schemas::Problem, content_type = "application/problem+json"),
        (status = 422, description = "Validation Error", body = schemas::Problem, content_type = "application/problem+json"),
    ),
    security(("CustomHTTPBearer" = [])),
)]
async fn set_member(
    State(state): State<AppState>,
    p: Principal,
    ApiPath((id, user_id)): ApiPath<(String, String)>,
    ApiJson(body): ApiJson<MemberBody>,
) -> Result<Response, ApiError> {
    let (workspace, members, _) = membership(&state, &p, &id, "admin").await?;
    if rank(&body.role).is_none() {
        return Err(ApiError::unprocessable(format!(
            "unknown workspace role `{}` (expected viewer, editor or admin)",
            body.role
        )));
    }
    if user_id == workspace.owner_id && body.role != "admin" {
        return Err(ApiError::conflict("the workspace owner stays an admin"));
    }
    if state.store().get_user(&user_id).await?.is_none() {
        return Err(ApiError::not_found(format!("no user `{user_id}`")));
    }
    let before = members
        .iter()
        .find(|m| m.user_id == user_id)
        .map(|m| m.role.clone());
    let member = state.store().set_member(&id, &user_id, &body.role).await?;
    state
        .audit(
            Some(p.id()),
            "workspace.member.set",
            ("workspace", Some(&id)),
            "success",
            json!({"user_id": user_id, "before": before, "after": member.role}),
        )
        .await;
    Ok(ok(member_json(&member)))
}

#[utoipa::path(
    delete,
    path = "/api/v1/workspaces/{workspace_id}/members/{user_id}",
    operation_id = "remove_workspace_member",
    tag = "Workspaces",
    params(
        ("workspace_id" = String, Path, description = "Workspace ID"),
        ("user_id" = String, Path, description = "User ID"),
    ),
    responses(
        (status = 200, description = "Successful Response", body = schemas::WorkspaceChangeResponse),
        (status = 403, description = "Not a workspace admin", body = schemas::Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such workspace of the caller", body = schemas::Problem, content_type = "application/problem+json"),
        (status = 409, description = "Removing the owner", body = schemas::Problem, content_type = "application/problem+json"),
    ),
    security(("CustomHTTPBearer" = [])),
)]
async fn remove_member(
    State(state): State<AppState>,
    p: Principal,
    ApiPath((id, user_id)): ApiPath<(String, String)>,
) -> Result<Response, ApiError> {
    // Anyone may leave; removing someone else needs the admin role.
    let needed = if user_id == p.id() { "viewer" } else { "admin" };
    let (workspace, _, _) = membership(&state, &p, &id, needed).await?;
    if user_id == workspace.owner_id {
        return Err(ApiError::conflict("the workspace owner cannot be removed"));
    }
    if !state.store().remove_member(&id, &user_id).await? {
        return Err(ApiError::not_found(format!("`{user_id}` is not a member")));
    }
    state
        .audit(
            Some(p.id()),
            "workspace.member.remove",
            ("workspace", Some(&id)),
            "success",
            json!({"user_id": user_id}),
        )
        .await;
    Ok(ok(
        json!({"message": "Member removed", "workspace_id": id, "user_id": user_id}),
    ))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ShareBody {
    resource_type: String,
    resource_id: String,
}

/// The owner of a definition or template (404 when it does not exist).
async fn resource_owner(
    state: &AppState,
    resource_type: &str,
    resource_id: &str,
) -> Result<Option<String>, ApiError> {
    let store = state.store();
    match resource_type {
        "definition" => Ok(Some(
            store
                .get_definition(resource_id)
                .await?
                .ok_or_else(|| {
                    ApiError::not_found(format!("no workflow definition `{resource_id}`"))
                })?
                .owner_id,
        )),
        "template" => Ok(store
            .get_template(resource_id)
            .await?
            .ok_or_else(|| ApiError::not_found(format!("no workflow template `{resource_id}`")))?
            .owner_id),
        other => Err(ApiError::unprocessable(format!(
            "cannot share a `{other}` (expected definition or template)"
        ))),
    }
}

#[utoipa::path(
    post,
    path = "/api/v1/workspaces/{workspace_id}/resources",
    operation_id = "share_workspace_resource",
    tag = "Workspaces",
    params(
        ("workspace_id" = String, Path, description = "Workspace ID"),
    ),
    request_body = schemas::WorkspaceShareRequest,
    responses(
        (status = 200, description = "Successful Response", body = schemas::WorkspaceShareResponse),
        (status = 403, description = "Not a workspace editor", body = schemas::Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such workspace of the caller", body = schemas::Problem, content_type = "application/problem+json"),
        (status = 422, description = "Validation Error", body = schemas::Problem, content_type = "application/problem+json"),
    ),
    security(("CustomHTTPBearer" = [])),
)]
async fn share(
    State(state): State<AppState>,
    p: Principal,
    ApiPath(id): ApiPath<String>,
    ApiJson(body): ApiJson<ShareBody>,
) -> Result<Response, ApiError> {
    membership(&state, &p, &id, "editor").await?;
    let owner = resource_owner(&state, &body.resource_type, &body.resource_id).await?;
    // Only what is yours can be shared (platform admins may share anything).
    if owner.as_deref() != Some(p.id()) && !p.is_admin() {
        return Err(ApiError::not_found(format!(
            "no {} `{}` of yours",
            body.resource_type, body.resource_id
        )));
    }
    state
        .store()
        .share_resource(&id, &body.resource_type, &body.resource_id)
        .await?;
    state
        .audit(
            Some(p.id()),
            "workspace.share",
            ("workspace", Some(&id)),
            "success",
            json!({"resource_type": body.resource_type, "resource_id": body.resource_id}),
        )
        .await;
    Ok(ok(json!({
        "workspace_id": id,
        "resource_type": body.resource_type,
        "resource_id": body.resource_id,
    })))
}

#[utoipa::path(
    delete,
    path = "/api/v1/workspaces/{workspace_id}/resources/{resource_type}/{resource_id}",
    operation_id = "unshare_workspace_resource",
    tag = "Workspaces",
    params(
        ("workspace_id" = String, Path, description = "Workspace ID"),
        ("resource_type" = String, Path, description = "definition or template"),
        ("resource_id" = String, Path, description = "The resource's ID"),
    ),
    responses(
        (status = 200, description = "Successful Response", body = schemas::WorkspaceChangeResponse),
        (status = 403, description = "Not a workspace editor", body = schemas::Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such workspace of the caller", body = schemas::Problem, content_type = "application/problem+json"),
    ),
    security(("CustomHTTPBearer" = [])),
)]
async fn unshare(
    State(state): State<AppState>,
    p: Principal,
    ApiPath((id, resource_type, resource_id)): ApiPath<(String, String, String)>,
) -> Result<Response, ApiError> {
    membership(&state, &p, &id, "editor").await?;
    if !state
        .store()
        .unshare_resource(&id, &resource_type, &resource_id)
        .await?
    {
        return Err(ApiError::not_found(format!(
            "{resource_type} `{resource_id}` is not shared in this workspace"
        )));
    }
    state
        .audit(
            Some(p.id()),
            "workspace.unshare",
            ("workspace", Some(&id)),
            "success",
            json!({"resource_type": resource_type, "resource_id": resource_id}),
        )
        .await;
    Ok(ok(
        json!({"message": "Resource unshared", "workspace_id": id}),
    ))
}
