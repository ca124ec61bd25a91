//! `/api/v1/auth/*` (login, refresh, logout, me, API keys) and `/api/v1/audit/logs`.

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::Response;
use axum::routing::{get, post};
use chatter_core::store::{AuditFilter, Page, UserRecord};
use chatter_core::time::rfc3339_ms;
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::auth::{
    self, Credential, Principal, REFRESH_COOKIE, check_password, now_ms, refresh_cookie,
    sha256_hex, start_session, token_json,
};
use super::problem::{ApiError, ApiJson, ApiPath, ApiQuery, PageQuery, check_limit};
use super::schemas;
use super::{AppState, ok};

pub(super) fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/v1/auth/login", post(login))
        .route("/api/v1/auth/refresh", post(refresh))
        .route("/api/v1/auth/logout", post(logout))
        .route("/api/v1/auth/me", get(me).put(update_me))
        .route("/api/v1/auth/api-keys", post(create_key).get(list_keys))
        .route(
            "/api/v1/auth/api-keys/{key_id}",
            axum::routing::delete(revoke_key),
        )
        .route("/api/v1/audit/logs", get(audit_logs))
        .route(
            "/api/v1/admin/users",
            get(list_users).post(admin_create_user),
        )
        .route(
            "/api/v1/admin/users/{user_id}",
            axum::routing::put(admin_update_user),
        )
}

/// The profile fields of `UserUpdate` kept in the `profile` preference.
const PROFILE_FIELDS: &[&str] = &[
    "full_name",
    "bio",
    "avatar_url",
    "phone_number",
    "default_llm_provider",
    "default_profile_id",
];

/// `UserResponse` of the v1 contract.
pub(super) async fn user_response(state: &AppState, user: &UserRecord) -> Result<Value, ApiError> {
    let store = state.store();
    let username = store
        .get_credentials(&user.id)
        .await?
        .map_or_else(|| user.email.clone(), |c| c.username);
    let profile = store
        .get_preference(&user.id, "profile")
        .await?
        .map(|p| p.value)
        .unwrap_or_else(|| json!({}));
    let mut doc = json!({
        "email": user.email,
        "username": username,
        "full_name": user.display_name,
        "bio": null,
        "avatar_url": null,
        "phone_number": null,
        "id": user.id,
        "is_active": user.is_active,
        "is_verified": true,
        "is_superuser": user.roles.iter().any(|r| r == "super_admin"),
        "default_llm_provider": null,
        "default_profile_id": null,
        "daily_message_limit": null,
        "monthly_message_limit": null,
        "max_file_size_mb": null,
        "api_key_name": null,
        "created_at": rfc3339_ms(user.created_at),
        "updated_at": rfc3339_ms(user.updated_at),
        "last_login_at": null,
        "roles": user.roles,
    });
    for field in PROFILE_FIELDS {
        if let Some(value) = profile.get(*field).filter(|v| !v.is_null()) {
            doc[*field] = value.clone();
        }
    }
    Ok(doc)
}

#[derive(Debug, Deserialize)]
struct UserLogin {
    email: Option<String>,
    username: Option<String>,
    password: String,
    #[serde(default)]
    #[allow(dead_code)]
    remember_me: bool,
}

fn cookie(state: &AppState, token: &str, max_age_s: u64) -> Option<HeaderValue> {
    let secure = if state.config().secure_cookies {
        "; Secure"
    } else {
        ""
    };
    HeaderValue::from_str(&format!(
        "{REFRESH_COOKIE}={token}; HttpOnly; SameSite=Strict; Path=/api/v1/auth; Max-Age={max_age_s}{secure}"
    ))
    .ok()
}

fn with_cookie(mut response: Response, value: Option<HeaderValue>) -> Response {
    if let Some(value) = value {
        response.headers_mut().append(header::SET_COOKIE, value);
    }
    response
}

#[utoipa::path(
    post,
    path = "/api/v1/auth/login",
    operation_id = "login_api_v1_auth_login_post",
    tag = "Authentication",
    request_body = schemas::UserLogin,
    responses(
        (status = 200, description = "Successful Response", body = schemas::TokenResponse),
        (status = 401, description = "Wrong credentials", body = schemas::Problem, content_type = "application/problem+json"),
        (status = 422, description = "Validation Error", body = schemas::Problem, content_type = "application/problem+json"),
    ),
)]
async fn login(
    State(state): State<AppState>,
    ApiJson(body): ApiJson<UserLogin>,
) -> Result<Response, ApiError> {
    let login = body
        .username
        .as_deref()
        .or(body.email.as_deref())
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .ok_or_else(|| ApiError::unprocessable("give a `username` or an `email`"))?
        .to_owned();
    let Some(user) = check_password(&state, &login, &body.password).await? else {
        state
            .audit(
                None,
                "auth.login",
                ("user", None),
                "failure",
                json!({"login": login}),
            )
            .await;
        return Err(ApiError::unauthorized(
            "invalid username, e-mail or password",
        ));
    };
    let (session_id, refresh_token, access) = start_session(&state, &user.id).await?;
    state
        .audit(
            Some(&user.id),
            "auth.login",
            ("user", Some(&user.id)),
            "success",
            json!({"login": login, "session_id": session_id}),
        )
        .await;
    let mut doc = token_json(&refresh_token, &access);
    doc["user"] = user_response(&state, &user).await?;
    let cookie = cookie(&state, &refresh_token, state.config().refresh_ttl.as_secs());
    Ok(with_cookie(ok(doc), cookie))
}

#[derive(Debug, Default, Deserialize)]
struct RefreshBody {
    refresh_token: Option<String>,
}

#[utoipa::path(
    post,
    path = "/api/v1/auth/refresh",
    operation_id = "refresh_token_api_v1_auth_refresh_post",
    tag = "Authentication",
    request_body = Option<schemas::TokenRefreshRequest>,
    responses(
        (status = 200, description = "Successful Response", body = schemas::TokenRefreshResponse),
        (status = 401, description = "No, an invalid, an expired or a spent refresh token", body = schemas::Problem, content_type = "application/problem+json"),
    ),
)]
async fn refresh(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    let from_body = if body.is_empty() {
        None
    } else {
        serde_json::from_slice::<RefreshBody>(&body)
            .map_err(|e| ApiError::bad_request(format!("invalid JSON body: {e}")))?
            .refresh_token
    };
    let token = from_body
        .or_else(|| refresh_cookie(&headers))
        .ok_or_else(|| ApiError::unauthorized("no refresh token (cookie or `refresh_token`)"))?;
    let store = state.store();
    let session = store
        .find_session(&sha256_hex(&token))
        .await?
        .ok_or_else(|| ApiError::unauthorized("invalid refresh token"))?;
    if session.expires_at <= now_ms() {
        return Err(ApiError::unauthorized("the refresh token has expired"));
    }
    // Rotation: the old session ends here; of two refreshes with one token only one wins.
    let revoked =
        session.revoked_at.is_none() && store.revoke_session(&session.id, now_ms()).await?;
    state.forget_principals();
    if !revoked {
        state
            .audit(
                Some(&session.user_id),
                "auth.refresh",
                ("session", Some(&session.id)),
                "denied",
                json!({"reason": "refresh token already used or revoked"}),
            )
            .await;
        return Err(ApiError::unauthorized(
            "the refresh token was already used or revoked",
        ));
    }
    let user = store
        .get_user(&session.user_id)
        .await?
        .filter(|u| u.is_active)
        .ok_or_else(|| ApiError::unauthorized("the account is disabled or gone"))?;
    let (session_id, refresh_token, access) = start_session(&state, &user.id).await?;
    state
        .audit(
            Some(&user.id),
            "auth.refresh",
            ("session", Some(&session_id)),
            "success",
            json!({"previous_session_id": session.id}),
        )
        .await;
    let doc = token_json(&refresh_token, &access);
    let cookie = cookie(&state, &refresh_token, state.config().refresh_ttl.as_secs());
    Ok(with_cookie(ok(doc), cookie))
}

#[utoipa::path(
    post,
    path = "/api/v1/auth/logout",
    operation_id = "logout_api_v1_auth_logout_post",
    tag = "Authentication",
    responses(
        (status = 200, description = "Successful Response", body = schemas::LogoutResponse),
    ),
    security(("CustomHTTPBearer" = [])),
)]
async fn logout(
    State(state): State<AppState>,
    principal: Principal,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let store = state.store();
    let mut revoked = Vec::new();
    if let Credential::Access { session_id } = &principal.credential
        && store.revoke_session(session_id, now_ms()).await?
    {
        revoked.push(session_id.clone());
    }
    if let Some(token) = refresh_cookie(&headers)
        && let Some(session) = store.find_session(&sha256_hex(&token)).await?
        && session.user_id == principal.user.id
        && store.revoke_session(&session.id, now_ms()).await?
    {
        revoked.push(session.id);
    }
    state.forget_principals();
    state
        .audit(
            Some(principal.id()),
            "auth.logout",
            ("user", Some(principal.id())),
            "success",
            json!({"revoked_sessions": revoked}),
        )
        .await;
    let doc = json!({"message": "Successfully logged out"});
    Ok(with_cookie(ok(doc), cookie(&state, "", 0)))
}

#[utoipa::path(
    get,
    path = "/api/v1/auth/me",
    operation_id = "get_current_user_info_api_v1_auth_me_get",
    tag = "Authentication",
    responses(
        (status = 200, description = "Successful Response", body = schemas::UserResponse),
    ),
    security(("CustomHTTPBearer" = [])),
)]
async fn me(State(state): State<AppState>, principal: Principal) -> Result<Response, ApiError> {
    Ok(ok(user_response(&state, &principal.user).await?))
}

#[utoipa::path(
    put,
    path = "/api/v1/auth/me",
    operation_id = "update_profile_api_v1_auth_me_put",
    tag = "Authentication",
    request_body = schemas::UserUpdate,
    responses(
        (status = 200, description = "Successful Response", body = schemas::UserResponse),
        (status = 422, description = "Validation Error", body = schemas::Problem, content_type = "application/problem+json"),
    ),
    security(("CustomHTTPBearer" = [])),
)]
async fn update_me(
    State(state): State<AppState>,
    principal: Principal,
    ApiJson(body): ApiJson<Map<String, Value>>,
) -> Result<Response, ApiError> {
    if let Some((key, _)) = body
        .iter()
        .find(|(k, _)| !PROFILE_FIELDS.contains(&k.as_str()) && k.as_str() != "email")
    {
        return Err(ApiError::unprocessable(format!("unknown field `{key}`")));
    }
    if body
        .get("email")
        .is_some_and(|e| !e.is_null() && e.as_str() != Some(&principal.user.email))
    {
        return Err(ApiError::unprocessable(
            "the e-mail address cannot be changed through the profile",
        ));
    }
    for (key, value) in &body {
        let limit = match key.as_str() {
            "full_name" => 255,
            "bio" => 1000,
            "avatar_url" => 500,
            "phone_number" => 20,
            _ => 255,
        };
        match value {
            Value::Null => {}
            Value::String(s) if s.chars().count() <= limit => {}
            Value::String(_) => {
                return Err(ApiError::unprocessable(format!(
                    "`{key}` is longer than {limit} characters"
                )));
            }
            _ => return Err(ApiError::unprocessable(format!("`{key}` must be a string"))),
        }
    }
    let store = state.store();
    let mut profile = store
        .get_preference(principal.id(), "profile")
        .await?
        .and_then(|p| p.value.as_object().cloned())
        .unwrap_or_default();
    for field in PROFILE_FIELDS {
        if let Some(value) = body.get(*field) {
            profile.insert((*field).to_owned(), value.clone());
        }
    }
    store
        .upsert_preference(principal.id(), "profile", Value::Object(profile), None)
        .await?;
    Ok(ok(user_response(&state, &principal.user).await?))
}

#[derive(Debug, Deserialize)]
struct AuditQuery {
    actor_id: Option<String>,
    resource_type: Option<String>,
    resource_id: Option<String>,
    action: Option<String>,
    since: Option<i64>,
    #[serde(default = "hundred")]
    limit: u32,
    #[serde(default)]
    offset: u64,
}

fn hundred() -> u32 {
    100
}

/// `GET /api/v1/audit/logs` (permission `audit:read`).
#[utoipa::path(
    get,
    path = "/api/v1/audit/logs",
    operation_id = "list_audit_logs",
    tag = "Admin",
    params(
        ("actor_id" = Option<String>, Query, description = "Only entries of this actor"),
        ("resource_type" = Option<String>, Query, description = "Only entries about this kind of resource"),
        ("resource_id" = Option<String>, Query, description = "Only entries about this resource"),
        ("action" = Option<String>, Query, description = "Only entries with this action (applied within the page read)"),
        ("since" = Option<i64>, Query, description = "Only entries at or after this time (ms since the epoch)"),
        ("limit" = Option<i64>, Query, description = "Number of results per page (default 100)"),
        ("offset" = Option<i64>, Query, description = "Number of results to skip (default 0)"),
    ),
    responses(
        (status = 200, description = "Successful Response", body = schemas::AuditLogsResponse),
        (status = 403, description = "Needs `audit:read`", body = schemas::Problem, content_type = "application/problem+json"),
        (status = 422, description = "Validation Error", body = schemas::Problem, content_type = "application/problem+json"),
    ),
    security(("CustomHTTPBearer" = [])),
)]
async fn audit_logs(
    State(state): State<AppState>,
    principal: Principal,
    ApiQuery(query): ApiQuery<AuditQuery>,
) -> Result<Response, ApiError> {
    principal.require("audit:read")?;
    check_limit(query.limit, 1000)?;
    let filter = AuditFilter {
        actor_id: query.actor_id,
        resource_type: query.resource_type,
        resource_id: query.resource_id,
        since: query.since,
    };
    // The action filter is applied after reading, so read generously when it is set.
    let entries = state
        .store()
        .list_audit(&filter, Page::new(query.limit, query.offset))
        .await?;
    let logs: Vec<Value> = entries
        .into_iter()
        .filter(|e| query.action.as_deref().is_none_or(|a| e.action == a))
        .map(|e| {
            json!({
                "id": e.id,
                "timestamp": rfc3339_ms(e.ts),
                "actor_id": e.actor_id,
                "action": e.action,
                "resource_type": e.resource_type,
                "resource_id": e.resource_id,
                "outcome": e.outcome,
                "ip_address": e.ip_address,
                "details": e.details,
            })
        })
        .collect();
    Ok(ok(
        json!({"logs": logs, "limit": query.limit, "offset": query.offset}),
    ))
}

#[derive(Debug, Deserialize)]
struct NewKeyBody {
    name: String,
}

fn key_json(key: &chatter_core::store::ApiKeyRecord) -> Value {
    json!({
        "id": key.id,
        "name": key.name,
        "prefix": key.prefix,
        "created_at": rfc3339_ms(key.created_at),
        "last_used_at": key.last_used_at.map(rfc3339_ms),
        "revoked_at": key.revoked_at.map(rfc3339_ms),
    })
}

/// `POST /api/v1/auth/api-keys`: a new key for the caller, shown once.
#[utoipa::path(
    post,
    path = "/api/v1/auth/api-keys",
    operation_id = "create_api_key",
    tag = "Authentication",
    request_body = schemas::ApiKeyCreate,
    responses(
        (status = 200, description = "The new key (the only answer that holds `key`)", body = schemas::ApiKeyResponse),
        (status = 422, description = "Validation Error", body = schemas::Problem, content_type = "application/problem+json"),
    ),
    security(("CustomHTTPBearer" = [])),
)]
async fn create_key(
    State(state): State<AppState>,
    principal: Principal,
    ApiJson(body): ApiJson<NewKeyBody>,
) -> Result<Response, ApiError> {
    if body.name.trim().is_empty() || body.name.chars().count() > 100 {
        return Err(ApiError::unprocessable(
            "`name` must have 1 to 100 characters",
        ));
    }
    let (record, key) =
        auth::create_api_key(state.store(), principal.id(), &body.name, None).await?;
    state
        .audit(
            Some(principal.id()),
            "apikey.create",
            ("api_key", Some(&record.id)),
            "success",
            json!({"name": record.name, "prefix": record.prefix}),
        )
        .await;
    let mut doc = key_json(&record);
    doc["key"] = json!(key);
    Ok(ok(doc))
}

/// `GET /api/v1/auth/api-keys`: the caller's keys (never the keys themselves).
#[utoipa::path(
    get,
    path = "/api/v1/auth/api-keys",
    operation_id = "list_api_keys",
    tag = "Authentication",
    responses(
        (status = 200, description = "Successful Response", body = schemas::ApiKeysResponse),
    ),
    security(("CustomHTTPBearer" = [])),
)]
async fn list_keys(
    State(state): State<AppState>,
    principal: Principal,
) -> Result<Response, ApiError> {
    let keys = state.store().list_api_keys(principal.id()).await?;
    Ok(ok(
        json!({"keys": keys.iter().map(key_json).collect::<Vec<_>>()}),
    ))
}

/// `DELETE /api/v1/auth/api-keys/{id}`: revokes one of the caller's keys (any key for
/// `admin:users`).
#[utoipa::path(
    delete,
    path = "/api/v1/auth/api-keys/{key_id}",
    operation_id = "revoke_api_key",
    tag = "Authentication",
    params(
        ("key_id" = String, Path, description = "API key ID"),
    ),
    responses(
        (status = 200, description = "Successful Response", body = schemas::ApiKeyRevokeResponse),
        (status = 404, description = "No such active key of the caller", body = schemas::Problem, content_type = "application/problem+json"),
        (status = 409, description = "Already revoked", body = schemas::Problem, content_type = "application/problem+json"),
    ),
    security(("CustomHTTPBearer" = [])),
)]
async fn revoke_key(
    State(state): State<AppState>,
    principal: Principal,
    ApiPath(key_id): ApiPath<String>,
) -> Result<Response, ApiError> {
    let store = state.store();
    let owned = store
        .list_api_keys(principal.id())
        .await?
        .iter()
        .any(|k| k.id == key_id);
    if !owned && !principal.can("admin:users") {
        return Err(ApiError::not_found(format!("no API key `{key_id}`")));
    }
    let revoked = store.revoke_api_key(&key_id, now_ms()).await?;
    state.forget_principals();
    if !revoked && owned {
        return Err(ApiError::conflict("this API key is already revoked"));
    }
    if !revoked {
        return Err(ApiError::not_found(format!("no active API key `{key_id}`")));
    }
    state
        .audit(
            Some(principal.id()),
            "apikey.revoke",
            ("api_key", Some(&key_id)),
            "success",
            json!({}),
        )
        .await;
    Ok(ok(json!({"message": "API key revoked", "id": key_id})))
}

/// Roles only `admin:roles` may grant or take away.
const PRIVILEGED_ROLES: &[&str] = &["admin", "super_admin"];

fn touches_privileged(roles: &[String]) -> bool {
    roles.iter().any(|r| PRIVILEGED_ROLES.contains(&r.as_str()))
}

/// `GET /api/v1/admin/users` (permission `admin:users`).
#[utoipa::path(
    get,
    path = "/api/v1/admin/users",
    operation_id = "list_users",
    tag = "Admin",
    params(
        ("limit" = Option<i64>, Query, description = "Number of results per page (default 100)"),
        ("offset" = Option<i64>, Query, description = "Number of results to skip (default 0)"),
    ),
    responses(
        (status = 200, description = "Successful Response", body = schemas::UsersResponse),
        (status = 403, description = "Needs `admin:users`", body = schemas::Problem, content_type = "application/problem+json"),
        (status = 422, description = "Validation Error", body = schemas::Problem, content_type = "application/problem+json"),
    ),
    security(("CustomHTTPBearer" = [])),
)]
async fn list_users(
    State(state): State<AppState>,
    principal: Principal,
    ApiQuery(query): ApiQuery<PageQuery>,
) -> Result<Response, ApiError> {
    principal.require("admin:users")?;
    check_limit(query.limit, 1000)?;
    let users = state
        .store()
        .list_users(Page::new(query.limit, query.offset))
        .await?;
    let mut docs = Vec::with_capacity(users.len());
    for user in &users {
        docs.push(user_response(&state, user).await?);
    }
    Ok(ok(json!({"users": docs, "total_count": docs.len()})))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NewUserBody {
    email: String,
    username: String,
    password: Option<String>,
    #[serde(default)]
    roles: Vec<String>,
}

/// `POST /api/v1/admin/users` (permission `admin:users`; privileged roles need `admin:roles`).
#[utoipa::path(
    post,
    path = "/api/v1/admin/users",
    operation_id = "create_user",
    tag = "Admin",
    request_body = schemas::UserCreate,
    responses(
        (status = 200, description = "Successful Response", body = schemas::UserResponse),
        (status = 403, description = "Needs `admin:users` (privileged roles: `admin:roles`)", body = schemas::Problem, content_type = "application/problem+json"),
        (status = 409, description = "The e-mail or user name is taken", body = schemas::Problem, content_type = "application/problem+json"),
        (status = 422, description = "Validation Error", body = schemas::Problem, content_type = "application/problem+json"),
    ),
    security(("CustomHTTPBearer" = [])),
)]
async fn admin_create_user(
    State(state): State<AppState>,
    principal: Principal,
    ApiJson(body): ApiJson<NewUserBody>,
) -> Result<Response, ApiError> {
    principal.require("admin:users")?;
    let roles = if body.roles.is_empty() {
        vec!["user".to_owned()]
    } else {
        body.roles
    };
    if touches_privileged(&roles) {
        principal.require("admin:roles")?;
    }
    if body
        .password
        .as_deref()
        .is_some_and(|p| p.chars().count() < 8)
    {
        return Err(ApiError::unprocessable(
            "the password must have at least 8 characters",
        ));
    }
    let user = auth::create_user(
        state.store(),
        &body.email,
        &body.username,
        body.password.as_deref(),
        roles,
    )
    .await?;
    state
        .audit(
            Some(principal.id()),
            "user.create",
            ("user", Some(&user.id)),
            "success",
            json!({"roles": user.roles, "username": body.username}),
        )
        .await;
    Ok(ok(user_response(&state, &user).await?))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct UserPatch {
    roles: Option<Vec<String>>,
    is_active: Option<bool>,
}

/// `PUT /api/v1/admin/users/{id}`: roles and the active flag (permission `admin:users`;
/// granting, removing or touching privileged roles needs `admin:roles`).
#[utoipa::path(
    put,
    path = "/api/v1/admin/users/{user_id}",
    operation_id = "update_user",
    tag = "Admin",
    params(
        ("user_id" = String, Path, description = "User ID"),
    ),
    request_body = schemas::UserAdminUpdate,
    responses(
        (status = 200, description = "Successful Response", body = schemas::UserResponse),
        (status = 403, description = "Needs `admin:users` (privileged roles: `admin:roles`)", body = schemas::Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such user", body = schemas::Problem, content_type = "application/problem+json"),
        (status = 409, description = "Deactivating yourself", body = schemas::Problem, content_type = "application/problem+json"),
        (status = 422, description = "Validation Error", body = schemas::Problem, content_type = "application/problem+json"),
    ),
    security(("CustomHTTPBearer" = [])),
)]
async fn admin_update_user(
    State(state): State<AppState>,
    principal: Principal,
    ApiPath(user_id): ApiPath<String>,
    ApiJson(body): ApiJson<UserPatch>,
) -> Result<Response, ApiError> {
    principal.require("admin:users")?;
    let store = state.store();
    let before = store
        .get_user(&user_id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no user `{user_id}`")))?;
    if let Some(roles) = &body.roles {
        if let Some(unknown) = roles
            .iter()
            .find(|r| auth::builtin_role_permissions(r).is_none())
        {
            return Err(ApiError::unprocessable(format!("unknown role `{unknown}`")));
        }
        if touches_privileged(roles) || touches_privileged(&before.roles) {
            principal.require("admin:roles")?;
        }
    }
    if body.is_active.is_some() && touches_privileged(&before.roles) {
        principal.require("admin:roles")?;
    }
    if user_id == principal.id() && body.is_active == Some(false) {
        return Err(ApiError::conflict("you cannot deactivate yourself"));
    }
    let after = store
        .update_user(&user_id, body.roles.clone(), body.is_active)
        .await?;
    state.forget_principals();
    if body.roles.is_some() {
        state
            .audit(
                Some(principal.id()),
                "user.roles",
                ("user", Some(&user_id)),
                "success",
                json!({"before": before.roles, "after": after.roles}),
            )
            .await;
    }
    if let Some(active) = body.is_active {
        state
            .audit(
                Some(principal.id()),
                if active {
                    "user.activate"
                } else {
                    "user.deactivate"
                },
                ("user", Some(&user_id)),
                "success",
                json!({}),
            )
            .await;
    }
    Ok(ok(user_response(&state, &after).await?))
}
