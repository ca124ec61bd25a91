//! The JSON shapes of the server's requests and answers, as Rust types.
//!
//! They exist so the OpenAPI document (`GET /openapi.json`, see [`super::openapi`]) is generated
//! from the code: each type derives [`utoipa::ToSchema`] under the component name of the old
//! platform's contract (`WorkflowDefinitionResponse`, `ChatRequest`, ...) or, for native
//! endpoints, a name of its own. They also derive serde, so a Rust client can read the answers
//! with them; the contract test reads real answers of the server into them, which keeps these
//! types true to what the handlers send.
//!
//! Field order, names, types and required lists follow
//! `chatter-v1-contract.openapi.json`; where the server sends more than the contract (e.g.
//! `created_at` on definitions), the extra fields come after the contract's.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use utoipa::ToSchema;

/// A JSON object of any shape.
pub type Object = Map<String, Value>;

// ---------------------------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------------------------

/// An error answer (`application/problem+json`, RFC 9457). Every error of the server is one.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Problem {
    /// A URI naming the kind of problem (`https://chatter.dev/problems/{status}`).
    #[serde(rename = "type")]
    pub problem_type: String,
    /// The HTTP reason phrase of the status.
    pub title: String,
    /// The HTTP status.
    pub status: u16,
    /// What went wrong in this request.
    pub detail: String,
    /// The request path.
    pub instance: String,
    /// The request id (also in the `x-request-id` header).
    pub request_id: Option<String>,
    /// Validation issues of a 422 for an invalid workflow (`{loc, msg, type}` each).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub errors: Option<Vec<ValidationError>>,
    /// How to fix an invalid workflow (with `errors`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub suggestions: Option<Vec<String>>,
    /// Seconds until the request would be allowed (a 429 of the rate limits; also in the
    /// `Retry-After` header).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_after: Option<u64>,
}

/// One validation issue: where (`loc`), what (`msg`) and its kind (`type`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ValidationError {
    /// Path to the offending value (names and indexes).
    #[schema(inline)]
    pub loc: Vec<LocItem>,
    /// Human-readable message.
    pub msg: String,
    /// Kind of issue (a stable code).
    #[serde(rename = "type")]
    pub error_type: String,
}

/// One element of a [`ValidationError`] location: a key or an index.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(untagged)]
pub enum LocItem {
    /// An object key.
    Key(String),
    /// An array index.
    Index(i64),
}

// ---------------------------------------------------------------------------------------------
// Health
// ---------------------------------------------------------------------------------------------

/// `status` of `/healthz` and `/live`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum HealthStatus {
    /// Serving (`/healthz`).
    Healthy,
    /// The process is up (`/live`).
    Alive,
    /// Not serving.
    Unhealthy,
}

/// Answer of `/healthz` and `/live`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct HealthCheckResponse {
    /// The status.
    pub status: HealthStatus,
    /// Always `chatter`.
    pub service: String,
    /// The server's version.
    pub version: String,
    /// `CHATTER_ENVIRONMENT` (default `development`).
    pub environment: String,
}

/// `status` of `/readyz`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ReadinessStatus {
    /// The database answers.
    Ready,
    /// It does not (the answer is a 503).
    NotReady,
}

/// Answer of `/readyz` (200 when ready, 503 with the same shape when not).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ReadinessCheckResponse {
    /// The status.
    pub status: ReadinessStatus,
    /// Always `chatter`.
    pub service: String,
    /// The server's version.
    pub version: String,
    /// `CHATTER_ENVIRONMENT` (default `development`).
    pub environment: String,
    /// Per dependency: `database` with `status`, `backend`, `response_time_ms` or `error`.
    pub checks: Object,
}

/// The JSON answer of `/metrics` (the old platform's shape).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct MetricsResponse {
    /// When the metrics were read (RFC 3339).
    pub timestamp: String,
    /// Always `chatter`.
    pub service: String,
    /// The server's version.
    pub version: String,
    /// The environment name.
    pub environment: String,
    /// Health summary.
    pub health: MetricsHealth,
    /// Performance figures.
    pub performance: MetricsPerformance,
    /// Per endpoint (`"{METHOD} {route template}"`, e.g. `"GET /api/v1/workflows/definitions"`).
    pub endpoints: BTreeMap<String, EndpointMetrics>,
}

/// `health` of [`MetricsResponse`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct MetricsHealth {
    /// Always `healthy` (the server answers).
    pub status: String,
    /// Seconds since the server started.
    pub uptime_seconds: u64,
    /// The store.
    pub database: MetricsDatabase,
}

/// `health.database` of [`MetricsResponse`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct MetricsDatabase {
    /// `sqlite` or `postgres`.
    pub backend: String,
    /// The connection pool.
    pub pool: MetricsPool,
}

/// `health.database.pool` of [`MetricsResponse`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct MetricsPool {
    /// Most connections.
    pub max_size: u64,
    /// Connections open.
    pub size: u64,
    /// Open connections not in use.
    pub available: u64,
    /// Callers waiting for a connection.
    pub waiting: u64,
}

/// `performance` of [`MetricsResponse`] (since the server started).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct MetricsPerformance {
    /// HTTP requests answered.
    pub total_requests: u64,
    /// Of which answered with a status of 400 or more.
    pub total_errors: u64,
    /// `total_errors / total_requests` (0 without requests).
    pub error_rate: f64,
    /// Mean answer time (ms).
    pub average_response_time_ms: f64,
    /// 95th percentile of the answer times (ms; a histogram bucket's upper bound).
    pub p95_response_time_ms: f64,
    /// 99th percentile of the answer times (ms; a histogram bucket's upper bound).
    pub p99_response_time_ms: f64,
    /// Requests refused by the rate limits (429).
    pub rate_limited: u64,
    /// Workflow executions.
    pub executions: MetricsExecutions,
    /// Model requests.
    pub models: MetricsModels,
    /// The store's read cache.
    pub cache: MetricsCache,
}

/// `performance.executions` of [`MetricsResponse`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct MetricsExecutions {
    /// Executions started.
    pub started: u64,
    /// Executions completed.
    pub completed: u64,
    /// Executions failed.
    pub failed: u64,
    /// Executions cancelled.
    pub cancelled: u64,
    /// Executions running now.
    pub in_progress: u64,
}

/// `performance.models` of [`MetricsResponse`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct MetricsModels {
    /// Model requests.
    pub requests: u64,
    /// Model requests that failed.
    pub failures: u64,
    /// Tokens used.
    pub tokens: u64,
    /// Estimated cost (USD).
    pub cost_usd: f64,
}

/// `performance.cache` of [`MetricsResponse`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct MetricsCache {
    /// Reads answered from the cache.
    pub hits: u64,
    /// Reads that went to the database.
    pub misses: u64,
    /// `hits / (hits + misses)` (0 without reads).
    pub hit_rate: f64,
}

/// One entry of `endpoints` of [`MetricsResponse`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct EndpointMetrics {
    /// Requests answered.
    pub requests: u64,
    /// Of which answered with a status of 400 or more.
    pub errors: u64,
    /// Mean answer time (ms).
    pub average_response_time_ms: f64,
    /// Requests per status code (`"200"`, `"404"`, ...).
    pub status_codes: BTreeMap<String, u64>,
}

// ---------------------------------------------------------------------------------------------
// Authentication and users
// ---------------------------------------------------------------------------------------------

/// Body of `POST /api/v1/auth/login`: a `username` or an `email`, and the password.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct UserLogin {
    /// The e-mail address (instead of `username`).
    pub email: Option<String>,
    /// The user name.
    pub username: Option<String>,
    /// The password.
    pub password: String,
    /// Accepted and ignored (the refresh session always lasts its configured lifetime).
    #[serde(default)]
    pub remember_me: bool,
}

/// A user (`/api/v1/auth/me`, logins, the admin endpoints).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct UserResponse {
    /// E-mail address.
    pub email: String,
    /// User name.
    pub username: String,
    /// Full name.
    pub full_name: Option<String>,
    /// Profile text.
    pub bio: Option<String>,
    /// Avatar URL.
    pub avatar_url: Option<String>,
    /// Phone number.
    pub phone_number: Option<String>,
    /// User id.
    pub id: String,
    /// Whether the account may sign in.
    pub is_active: bool,
    /// Always true (accounts are created by operators).
    pub is_verified: bool,
    /// Whether the user has the `super_admin` role.
    pub is_superuser: bool,
    /// Preferred model provider.
    pub default_llm_provider: Option<String>,
    /// Preferred profile.
    pub default_profile_id: Option<String>,
    /// Not enforced by this server (always null).
    pub daily_message_limit: Option<i64>,
    /// Not enforced by this server (always null).
    pub monthly_message_limit: Option<i64>,
    /// Not enforced by this server (always null).
    pub max_file_size_mb: Option<i64>,
    /// Always null.
    pub api_key_name: Option<String>,
    /// Creation time (RFC 3339).
    pub created_at: String,
    /// Last change (RFC 3339).
    pub updated_at: String,
    /// Always null.
    pub last_login_at: Option<String>,
    /// The user's roles (`guest`, `user`, `power_user`, `admin`, `super_admin`).
    #[serde(default)]
    pub roles: Vec<String>,
}

/// Body of `PUT /api/v1/auth/me`: the profile fields to change (`email` may only repeat the
/// current address).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct UserUpdate {
    /// Must equal the current address when given.
    pub email: Option<String>,
    /// At most 255 characters.
    pub full_name: Option<String>,
    /// At most 1000 characters.
    pub bio: Option<String>,
    /// At most 500 characters.
    pub avatar_url: Option<String>,
    /// At most 20 characters.
    pub phone_number: Option<String>,
    /// Preferred model provider.
    pub default_llm_provider: Option<String>,
    /// Preferred profile.
    pub default_profile_id: Option<String>,
}

/// Answer of a login: the tokens and the user.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct TokenResponse {
    /// JWT access token (send as `Authorization: Bearer ...`).
    pub access_token: String,
    /// Refresh token (also set as the `chatter_refresh` cookie).
    pub refresh_token: Option<String>,
    /// Always `bearer`.
    #[serde(default = "bearer")]
    pub token_type: String,
    /// Seconds until the access token expires.
    pub expires_in: i64,
    /// The user.
    pub user: UserResponse,
}

fn yes() -> bool {
    true
}

fn bearer() -> String {
    "bearer".into()
}

/// Optional body of `POST /api/v1/auth/refresh` (else the `chatter_refresh` cookie is used).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct TokenRefreshRequest {
    /// The refresh token.
    pub refresh_token: Option<String>,
}

/// Answer of a refresh: new tokens (the old refresh token is spent).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct TokenRefreshResponse {
    /// New JWT access token.
    pub access_token: String,
    /// New refresh token.
    pub refresh_token: Option<String>,
    /// Always `bearer`.
    #[serde(default = "bearer")]
    pub token_type: String,
    /// Seconds until the access token expires.
    pub expires_in: i64,
}

/// Answer of `POST /api/v1/auth/logout`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct LogoutResponse {
    /// `Successfully logged out`.
    pub message: String,
}

/// Body of `POST /api/v1/auth/api-keys`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ApiKeyCreate {
    /// A name for the key (1 to 100 characters).
    pub name: String,
}

/// An API key (never the key itself, except in the answer that created it).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ApiKeyResponse {
    /// Key id.
    pub id: String,
    /// Its name.
    pub name: String,
    /// The key's first characters (to recognise it).
    pub prefix: String,
    /// Creation time (RFC 3339).
    pub created_at: String,
    /// Last use (RFC 3339).
    pub last_used_at: Option<String>,
    /// Revocation time (RFC 3339).
    pub revoked_at: Option<String>,
    /// The key, only in the answer of its creation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
}

/// Answer of `GET /api/v1/auth/api-keys`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ApiKeysResponse {
    /// The caller's keys.
    pub keys: Vec<ApiKeyResponse>,
}

/// Answer of `DELETE /api/v1/auth/api-keys/{key_id}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ApiKeyRevokeResponse {
    /// `API key revoked`.
    pub message: String,
    /// The key id.
    pub id: String,
}

/// Answer of `GET /api/v1/admin/users`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct UsersResponse {
    /// The users of the page.
    pub users: Vec<UserResponse>,
    /// How many are in `users`.
    pub total_count: i64,
}

/// Body of `POST /api/v1/admin/users`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct UserCreate {
    /// E-mail address.
    pub email: String,
    /// User name.
    pub username: String,
    /// Password (at least 8 characters); without one the user signs in with API keys only.
    pub password: Option<String>,
    /// Roles (default `user`); `admin` and `super_admin` need `admin:roles`.
    #[serde(default)]
    pub roles: Vec<String>,
}

/// Body of `PUT /api/v1/admin/users/{user_id}`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct UserAdminUpdate {
    /// The new roles.
    pub roles: Option<Vec<String>>,
    /// Whether the account may sign in.
    pub is_active: Option<bool>,
}

/// One audit entry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct AuditLogEntry {
    /// Increasing id.
    pub id: i64,
    /// When (RFC 3339).
    pub timestamp: String,
    /// Who acted.
    pub actor_id: Option<String>,
    /// What was done (`auth.login`, `definition.create`, ...).
    pub action: String,
    /// Kind of the thing acted on.
    pub resource_type: String,
    /// Its id.
    pub resource_id: Option<String>,
    /// `success`, `failure`, `denied`, ...
    pub outcome: String,
    /// Client address.
    pub ip_address: Option<String>,
    /// Details of the action.
    pub details: Value,
}

/// Answer of `GET /api/v1/audit/logs`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct AuditLogsResponse {
    /// Entries, newest first.
    pub logs: Vec<AuditLogEntry>,
    /// The page size asked for.
    pub limit: i64,
    /// The entries skipped.
    pub offset: i64,
}

// ---------------------------------------------------------------------------------------------
// Workflow definitions
// ---------------------------------------------------------------------------------------------

/// A node in the editor's shape (flat nodes `{id, type, config}` are accepted too and answered
/// in this shape).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct WorkflowNode {
    /// Node id.
    pub id: String,
    /// Node kind (`start`, `llm`, `tool`, ...).
    #[serde(rename = "type")]
    pub node_type: String,
    /// Editor position (`x`, `y`).
    pub position: BTreeMap<String, f64>,
    /// Label, kind and config.
    pub data: WorkflowNodeData,
    /// Editor state, kept as given.
    #[serde(default)]
    pub selected: Option<bool>,
    /// Editor state, kept as given.
    #[serde(default)]
    pub dragging: Option<bool>,
}

/// The `data` of a [`WorkflowNode`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct WorkflowNodeData {
    /// Label shown in the editor (the id when not given).
    pub label: String,
    /// Node kind.
    #[serde(rename = "nodeType")]
    pub node_type: String,
    /// The node's configuration (see docs/node-kinds.md).
    pub config: Option<Object>,
}

/// An edge in the editor's shape.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct WorkflowEdge {
    /// Edge id (generated when not given).
    pub id: String,
    /// Source node id.
    pub source: String,
    /// Target node id.
    pub target: String,
    /// Branch of the source (`true`/`false` of a conditional, `error`).
    #[serde(rename = "sourceHandle", default)]
    pub source_handle: Option<String>,
    /// Handle of the target.
    #[serde(rename = "targetHandle", default)]
    pub target_handle: Option<String>,
    /// Editor edge type.
    #[serde(rename = "type", default)]
    pub edge_type: Option<String>,
    /// Condition and label.
    #[serde(default)]
    pub data: Option<WorkflowEdgeData>,
}

/// The `data` of a [`WorkflowEdge`].
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct WorkflowEdgeData {
    /// Condition expression (see docs/expressions.md).
    pub condition: Option<String>,
    /// Label shown in the editor.
    pub label: Option<String>,
}

/// Body of `POST /api/v1/workflows/definitions` (nodes and edges may also be in the flat
/// shape; they are stored and answered in the editor's).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct WorkflowDefinitionCreate {
    /// Name (1 to 255 characters).
    pub name: String,
    /// Description.
    pub description: Option<String>,
    /// Nodes.
    pub nodes: Vec<WorkflowNode>,
    /// Edges.
    pub edges: Vec<WorkflowEdge>,
    /// Free metadata, kept as given.
    pub metadata: Option<Object>,
    /// Readable by everyone.
    #[serde(default)]
    pub is_public: bool,
    /// Tags.
    pub tags: Option<Vec<String>>,
    /// The template it was generated from.
    pub template_id: Option<String>,
}

/// Body of `POST /api/v1/workflows/definitions/validate`: a definition, or any object with
/// `nodes` and `edges`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(untagged)]
pub enum DefinitionValidationRequest {
    /// A definition as created.
    Definition(WorkflowDefinitionCreate),
    /// Any object with `nodes` and `edges` arrays.
    Graph(Object),
}

/// Answer of `POST /api/v1/workflows/definitions/custom/execute`: the execution, with its id
/// and reply repeated.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct CustomWorkflowExecutionResponse {
    /// The execution.
    #[serde(flatten)]
    pub execution: WorkflowExecutionResponse,
    /// Its id (as `id`).
    pub execution_id: String,
    /// The last assistant message.
    pub response: Option<String>,
}

/// A stored workflow definition.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct WorkflowDefinitionResponse {
    /// Name (1 to 255 characters).
    pub name: String,
    /// Description.
    pub description: Option<String>,
    /// Nodes.
    pub nodes: Vec<WorkflowNode>,
    /// Edges.
    pub edges: Vec<WorkflowEdge>,
    /// Free metadata, kept as given.
    pub metadata: Option<Object>,
    /// Readable by everyone.
    #[serde(default)]
    pub is_public: bool,
    /// Tags.
    pub tags: Option<Vec<String>>,
    /// The template it was generated from.
    pub template_id: Option<String>,
    /// Definition id.
    pub id: String,
    /// Owner's user id.
    pub owner_id: String,
    /// Version, from 1, increased by every change.
    #[serde(default)]
    pub version: i64,
    /// Creation time (RFC 3339).
    pub created_at: Option<String>,
    /// Last change (RFC 3339).
    pub updated_at: Option<String>,
}

/// Answer of `GET /api/v1/workflows/definitions`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct WorkflowDefinitionsResponse {
    /// The definitions of the page.
    pub definitions: Vec<WorkflowDefinitionResponse>,
    /// How many are in `definitions`.
    pub total_count: i64,
}

/// Answer of a delete (definitions and templates).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct WorkflowDeleteResponse {
    /// What was deleted.
    pub message: String,
    /// The id of what was deleted.
    pub workflow_id: String,
}

/// Body of `PUT /api/v1/workflows/definitions/{workflow_id}` (the fields to change).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct WorkflowDefinitionUpdate {
    /// Name (1 to 255 characters).
    pub name: Option<String>,
    /// Description.
    pub description: Option<String>,
    /// Nodes (validated with the edges).
    pub nodes: Option<Vec<WorkflowNode>>,
    /// Edges.
    pub edges: Option<Vec<WorkflowEdge>>,
    /// Metadata (replaces the stored one).
    pub metadata: Option<Object>,
    /// Readable by everyone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub is_public: Option<bool>,
    /// Tags.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tags: Option<Vec<String>>,
    /// The template it was generated from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template_id: Option<String>,
}

/// Answer of `POST /api/v1/workflows/definitions/validate` (always 200).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct WorkflowValidationResponse {
    /// Whether the definition is valid.
    pub is_valid: bool,
    /// Errors.
    pub errors: Vec<ValidationError>,
    /// Warnings.
    pub warnings: Vec<ValidationError>,
    /// How to fix the errors.
    pub suggestions: Vec<String>,
}

/// Static complexity figures of a definition.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ComplexityMetrics {
    /// Overall score.
    pub score: i64,
    /// Nodes.
    pub node_count: i64,
    /// Edges.
    pub edge_count: i64,
    /// Longest path.
    pub depth: i64,
    /// Mean out-degree.
    pub branching_factor: f64,
    /// Loop contribution.
    #[serde(default)]
    pub loop_complexity: i64,
    /// Conditional contribution.
    #[serde(default)]
    pub conditional_complexity: i64,
}

/// A node likely to slow an execution down.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct BottleneckInfo {
    /// Node id.
    pub node_id: String,
    /// Node kind.
    pub node_type: String,
    /// Why.
    pub reason: String,
    /// `low`, `medium`, `high`.
    pub severity: String,
    /// What to do.
    pub suggestions: Vec<String>,
}

/// A suggested improvement.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct OptimizationSuggestion {
    /// Kind of suggestion.
    #[serde(rename = "type")]
    pub suggestion_type: String,
    /// What to change.
    pub description: String,
    /// Expected impact.
    pub impact: String,
    /// Nodes concerned.
    pub node_ids: Option<Vec<String>>,
}

/// Answer of `GET /api/v1/workflows/definitions/{workflow_id}/analytics`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct WorkflowAnalyticsResponse {
    /// Complexity figures.
    pub complexity: ComplexityMetrics,
    /// Likely bottlenecks.
    pub bottlenecks: Vec<BottleneckInfo>,
    /// Suggested improvements.
    pub optimization_suggestions: Vec<OptimizationSuggestion>,
    /// Number of distinct paths from start to end.
    pub execution_paths: i64,
    /// Estimated run time.
    pub estimated_execution_time_ms: Option<i64>,
    /// Risks found.
    pub risk_factors: Vec<String>,
    /// How long the analysis took.
    pub total_execution_time_ms: i64,
    /// Always null.
    pub error: Option<String>,
    /// When the analysis started (RFC 3339).
    pub started_at: String,
    /// When it ended (RFC 3339).
    pub completed_at: Option<String>,
}

/// Body of `POST /api/v1/workflows/definitions/from-template`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct WorkflowDefinitionFromTemplateRequest {
    /// The template id (a built-in one's name).
    pub template_id: String,
    /// Appended to the template's name.
    pub name_suffix: Option<String>,
    /// The template's parameters.
    pub user_input: Option<Object>,
    /// Recorded in the definition's metadata (default true).
    #[serde(default = "yes")]
    pub is_temporary: bool,
}

// ---------------------------------------------------------------------------------------------
// Executions
// ---------------------------------------------------------------------------------------------

/// Body of `POST /api/v1/workflows/definitions/{workflow_id}/execute`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct WorkflowExecutionRequest {
    /// The run's input (`message`, `variables`, ...).
    pub input_data: Option<Object>,
    /// The definition to run: the id in the path (the server also accepts the body without
    /// it, and refuses a different one).
    pub definition_id: String,
    /// Accepted and ignored.
    #[serde(default)]
    pub debug_mode: bool,
}

/// An execution (every endpoint answering one).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct WorkflowExecutionResponse {
    /// The run's input.
    pub input_data: Option<Object>,
    /// Execution id.
    pub id: String,
    /// The definition (else the template) it ran, `""` for ad-hoc runs.
    pub definition_id: String,
    /// Who ran it.
    pub owner_id: String,
    /// `pending`, `running`, `waiting`, `completed`, `failed`, `cancelled`.
    pub status: String,
    /// Start (RFC 3339).
    pub started_at: Option<String>,
    /// End (RFC 3339).
    pub completed_at: Option<String>,
    /// Duration.
    pub execution_time_ms: Option<i64>,
    /// The run's output (with `response`, the last assistant message).
    pub output_data: Option<Object>,
    /// Why it failed.
    pub error_message: Option<String>,
    /// Tokens used by every model call.
    #[serde(default)]
    pub tokens_used: i64,
    /// Cost of every model call.
    #[serde(default)]
    pub cost: f64,
    /// Always null (see the `logs` of the detailed answer).
    pub execution_log: Option<Vec<Object>>,
    /// Always null.
    pub debug_info: Option<Object>,
    /// Creation time (RFC 3339).
    pub created_at: Option<String>,
    /// Last change (RFC 3339).
    pub updated_at: Option<String>,
    /// The template it ran, if any.
    pub template_id: Option<String>,
    /// `definition`, `template` or `adhoc`.
    pub kind: Option<String>,
}

/// Answer of `GET /api/v1/workflows/executions`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct WorkflowExecutionsPage {
    /// The executions of the page, newest first.
    pub executions: Vec<WorkflowExecutionResponse>,
    /// How many are in `executions`.
    pub total_count: i64,
    /// The page size asked for.
    pub limit: i64,
    /// The executions skipped.
    pub offset: i64,
}

/// One log entry of an execution (from its recorded events).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct WorkflowExecutionLogEntry {
    /// When (RFC 3339).
    pub timestamp: String,
    /// `debug`, `info`, `warning` or `error`.
    pub level: String,
    /// The node concerned.
    pub node_id: Option<String>,
    /// The event type.
    pub step_name: Option<String>,
    /// What happened.
    pub message: String,
    /// The event's payload.
    pub data: Option<Object>,
    /// The node run's duration.
    pub execution_time_ms: Option<i64>,
    /// The event's sequence number.
    pub sequence: Option<i64>,
}

/// Debug details of an execution (never filled by this server).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct WorkflowDebugInfo {
    /// The graph.
    pub workflow_structure: Object,
    /// Nodes in the order they ran.
    pub execution_path: Vec<String>,
    /// Node runs.
    pub node_executions: Vec<Object>,
    /// Variables over time.
    pub variable_states: Object,
    /// Timings.
    pub performance_metrics: Object,
    /// Model calls.
    #[serde(default)]
    pub llm_interactions: Vec<Object>,
    /// Tool calls.
    #[serde(default)]
    pub tool_calls: Vec<Object>,
}

/// Answer of `GET /api/v1/workflows/definitions/{workflow_id}/executions/{execution_id}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct DetailedWorkflowExecutionResponse {
    /// The run's input.
    pub input_data: Option<Object>,
    /// Execution id.
    pub id: String,
    /// The definition (else the template) it ran, `""` for ad-hoc runs.
    pub definition_id: String,
    /// Who ran it.
    pub owner_id: String,
    /// `pending`, `running`, `waiting`, `completed`, `failed`, `cancelled`.
    pub status: String,
    /// Start (RFC 3339).
    pub started_at: Option<String>,
    /// End (RFC 3339).
    pub completed_at: Option<String>,
    /// Duration.
    pub execution_time_ms: Option<i64>,
    /// The run's output.
    pub output_data: Option<Object>,
    /// Why it failed.
    pub error_message: Option<String>,
    /// Tokens used by every model call.
    #[serde(default)]
    pub tokens_used: i64,
    /// Cost of every model call.
    #[serde(default)]
    pub cost: f64,
    /// Always null.
    pub execution_log: Option<Vec<Object>>,
    /// Always null.
    pub debug_info: Option<Object>,
    /// Creation time (RFC 3339).
    pub created_at: Option<String>,
    /// Last change (RFC 3339).
    pub updated_at: Option<String>,
    /// Log entries from the recorded events (tokens left out).
    #[serde(default)]
    pub logs: Vec<WorkflowExecutionLogEntry>,
    /// Always null.
    pub debug_details: Option<WorkflowDebugInfo>,
    /// The template it ran, if any.
    pub template_id: Option<String>,
    /// `definition`, `template` or `adhoc`.
    pub kind: Option<String>,
}

/// Body of `POST /api/v1/workflows/definitions/custom/execute`: an ad-hoc graph.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[schema(as = Body_execute_custom_workflow_api_v1_workflows_definitions_custom_execute_post)]
pub struct CustomWorkflowBody {
    /// Nodes (editor or flat shape).
    pub nodes: Vec<Object>,
    /// Edges.
    pub edges: Vec<Object>,
}

/// Body of `POST /api/v1/workflows/executions/{execution_id}/approve`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ApprovalRequest {
    /// One of the approval node's `allowed_decisions`.
    pub decision: String,
    /// Input checked against the node's `input_schema`.
    #[serde(default)]
    pub input: Option<Value>,
    /// The waiting approval node (may be omitted when one waits).
    #[serde(default)]
    pub node_id: Option<String>,
}

/// Body of `POST /api/v1/workflows/executions/{execution_id}/fork`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ForkRequest {
    /// The step to start from (its state is the new execution's).
    pub step: i64,
    /// Variables to set in that state.
    #[serde(default)]
    pub variables: Option<Object>,
}

/// One recorded step of an execution with the state after it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ExecutionStep {
    /// Step number, from 1.
    pub step: i64,
    /// The node whose run ended.
    pub node_id: String,
    /// Its iteration.
    pub iteration: i64,
    /// Its attempt.
    pub attempt: i64,
    /// How the node run ended (`completed`, `failed`, `skipped`, ...).
    pub status: String,
    /// The state after the step (messages, variables, context, usage, errors, ...).
    pub state: Value,
}

/// Answer of `GET /api/v1/workflows/executions/{execution_id}/steps`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ExecutionStepsResponse {
    /// The execution.
    pub execution_id: String,
    /// Its steps in order.
    pub steps: Vec<ExecutionStep>,
}

// ---------------------------------------------------------------------------------------------
// Templates
// ---------------------------------------------------------------------------------------------

/// A template (stored or built in).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct WorkflowTemplateResponse {
    /// Name.
    pub name: String,
    /// Description.
    pub description: String,
    /// Category (default `custom`).
    #[serde(default)]
    pub category: String,
    /// Default parameters.
    #[serde(default)]
    pub default_params: Object,
    /// Tools it needs.
    pub required_tools: Option<Vec<String>>,
    /// Retrievers it needs.
    pub required_retrievers: Option<Vec<String>>,
    /// Tags.
    pub tags: Option<Vec<String>>,
    /// Readable by everyone.
    #[serde(default)]
    pub is_public: bool,
    /// Template id (a built-in one's name).
    pub id: String,
    /// Owner (`system` for built-in templates).
    pub owner_id: String,
    /// The template it derives from.
    pub base_template_id: Option<String>,
    /// Shipped with the server (read-only).
    #[serde(default)]
    pub is_builtin: bool,
    /// Version.
    #[serde(default)]
    pub version: i64,
    /// Always true.
    #[serde(default)]
    pub is_latest: bool,
    /// Always null.
    pub rating: Option<f64>,
    /// Always 0.
    #[serde(default)]
    pub rating_count: i64,
    /// Executions of the template.
    #[serde(default)]
    pub usage_count: i64,
    /// Share of successful executions.
    pub success_rate: Option<f64>,
    /// Hash of the template's configuration.
    pub config_hash: String,
    /// Always null.
    pub estimated_complexity: Option<i64>,
}

/// Answer of `GET /api/v1/workflows/templates`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct WorkflowTemplatesResponse {
    /// The templates (stored ones, then the built-in ones on the first page).
    pub templates: Vec<WorkflowTemplateResponse>,
    /// How many are in `templates`.
    pub total_count: i64,
}

/// Body of `POST /api/v1/workflows/templates`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct WorkflowTemplateCreate {
    /// Name (1 to 255 characters).
    pub name: String,
    /// Description.
    pub description: String,
    /// Category (default `custom`).
    #[serde(default)]
    pub category: String,
    /// Default parameters.
    #[serde(default)]
    pub default_params: Object,
    /// Tools it needs.
    pub required_tools: Option<Vec<String>>,
    /// Retrievers it needs.
    pub required_retrievers: Option<Vec<String>>,
    /// Tags.
    pub tags: Option<Vec<String>>,
    /// Readable by everyone (needs `template:publish`).
    #[serde(default)]
    pub is_public: bool,
    /// A definition whose graph the template carries.
    pub workflow_definition_id: Option<String>,
    /// The template it derives from.
    pub base_template_id: Option<String>,
}

/// Body of `PUT /api/v1/workflows/templates/{template_id}` (the fields to change; any other
/// field is a 422).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct WorkflowTemplateUpdate {
    /// Name.
    pub name: Option<String>,
    /// Description.
    pub description: Option<String>,
    /// Category.
    pub category: Option<String>,
    /// Default parameters.
    pub default_params: Option<Object>,
    /// Tools it needs.
    pub required_tools: Option<Vec<String>>,
    /// Retrievers it needs.
    pub required_retrievers: Option<Vec<String>>,
    /// Tags.
    pub tags: Option<Vec<String>>,
    /// Readable by everyone (needs `template:publish`).
    pub is_public: Option<bool>,
}

/// Answer of `GET /api/v1/workflows/templates/{template_id}/export`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct WorkflowTemplateExportResponse {
    /// The template's spec (importable as is).
    pub template: Object,
    /// Always `json`.
    #[serde(default)]
    pub export_format: String,
    /// When (RFC 3339).
    pub exported_at: String,
}

/// Body of `POST /api/v1/workflows/templates/import`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct WorkflowTemplateImportRequest {
    /// The template's spec (as exported).
    pub template: Object,
    /// A new name.
    pub override_name: Option<String>,
    /// Accepted and ignored (an import always creates a template).
    #[serde(default)]
    pub merge_with_existing: bool,
}

/// Body of `POST /api/v1/workflows/templates/validate`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct WorkflowTemplateValidationRequest {
    /// The template's spec.
    pub template: Object,
}

/// Answer of `POST /api/v1/workflows/templates/validate`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct WorkflowTemplateValidationResponse {
    /// Whether the template is valid and generates a valid definition.
    pub is_valid: bool,
    /// Errors.
    #[serde(default)]
    pub errors: Vec<ValidationError>,
    /// Warnings.
    #[serde(default)]
    pub warnings: Vec<ValidationError>,
    /// Name, category, node and edge counts, config hash.
    pub template_info: Option<Object>,
}

/// Body of `POST /api/v1/workflows/templates/{template_id}/execute`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct WorkflowTemplateExecutionRequest {
    /// `message` (and `variables`) for the run, every other key (or `params`) a parameter.
    pub input_data: Option<Object>,
    /// Accepted and ignored.
    #[serde(default)]
    pub debug_mode: bool,
}

/// Body of `POST /api/v1/workflows/templates/execute`: a template given inline.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct WorkflowTemplateDirectExecutionRequest {
    /// The template's spec.
    pub template: Object,
    /// As in [`WorkflowTemplateExecutionRequest`].
    pub input_data: Option<Object>,
    /// Accepted and ignored.
    #[serde(default)]
    pub debug_mode: bool,
}

// ---------------------------------------------------------------------------------------------
// Node types and settings
// ---------------------------------------------------------------------------------------------

/// One config key of a node kind.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct NodePropertyDefinition {
    /// Config key.
    pub name: String,
    /// `string`, `number`, `boolean`, `select`, ...
    #[serde(rename = "type")]
    pub property_type: String,
    /// Whether the key is required.
    #[serde(default)]
    pub required: bool,
    /// What it means.
    pub description: Option<String>,
    /// Its default.
    pub default_value: Option<Value>,
    /// Allowed values.
    pub options: Option<Vec<String>>,
    /// Lower bound.
    pub min_value: Option<f64>,
    /// Upper bound.
    pub max_value: Option<f64>,
}

/// A node kind of the registry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct NodeTypeResponse {
    /// Kind.
    #[serde(rename = "type")]
    pub node_type: String,
    /// Display name.
    pub name: String,
    /// What it does.
    pub description: String,
    /// Category.
    pub category: String,
    /// Its config keys.
    pub properties: Vec<NodePropertyDefinition>,
    /// Icon name.
    pub icon: Option<String>,
    /// Colour.
    pub color: Option<String>,
}

/// Answer of `POST /memory/configure` and `POST /tools/configure`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct SettingsResponse {
    /// What was saved.
    pub message: String,
    /// The saved settings.
    pub config: Object,
    /// Version of the preference.
    pub version: i64,
}

// ---------------------------------------------------------------------------------------------
// Chat
// ---------------------------------------------------------------------------------------------

/// Body of the chat endpoints.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ChatRequest {
    /// The user's message (1 to 100 000 characters).
    pub message: String,
    /// Continue this conversation (a new one when absent).
    pub conversation_id: Option<String>,
    /// Accepted and ignored.
    pub profile_id: Option<String>,
    /// Accepted and ignored.
    pub workflow_config: Option<Object>,
    /// Run this definition.
    pub workflow_definition_id: Option<String>,
    /// Else run this template (else `universal_chat`).
    pub workflow_template_name: Option<String>,
    /// Template parameter.
    #[serde(default)]
    pub enable_retrieval: bool,
    /// Template parameter.
    #[serde(default)]
    pub enable_tools: bool,
    /// Template parameter (default true).
    #[serde(default = "yes")]
    pub enable_memory: bool,
    /// Template parameter.
    #[serde(default)]
    pub enable_web_search: bool,
    /// Model provider (one of the server's).
    pub provider: Option<String>,
    /// Model.
    pub model: Option<String>,
    /// 0 to 2.
    pub temperature: Option<f64>,
    /// 1 to 8192.
    pub max_tokens: Option<i64>,
    /// At least 1.
    pub context_limit: Option<i64>,
    /// Accepted and ignored.
    pub document_ids: Option<Vec<String>>,
    /// Accepted and ignored.
    pub prompt_id: Option<String>,
    /// Replaces the system prompt.
    pub system_prompt_override: Option<String>,
    /// Accepted and ignored.
    #[serde(default)]
    pub enable_tracing: bool,
}

/// Role of a chat message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum MessageRole {
    /// The person.
    User,
    /// The model.
    Assistant,
    /// Instructions.
    System,
    /// A tool's result.
    Tool,
}

/// Status of a conversation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ConversationStatus {
    /// In use.
    Active,
    /// Archived.
    Archived,
    /// Deleted.
    Deleted,
}

/// A stored chat message.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct MessageResponse {
    /// Role.
    pub role: MessageRole,
    /// Text.
    pub content: String,
    /// Message id.
    pub id: String,
    /// Its conversation.
    pub conversation_id: String,
    /// Position in the conversation.
    pub sequence_number: i64,
    /// Input tokens of the answer.
    pub prompt_tokens: Option<i64>,
    /// Output tokens of the answer.
    pub completion_tokens: Option<i64>,
    /// Both.
    pub total_tokens: Option<i64>,
    /// Model that answered.
    pub model_used: Option<String>,
    /// Provider that answered.
    pub provider_used: Option<String>,
    /// How long the answer took.
    pub response_time_ms: Option<i64>,
    /// Cost of the answer.
    pub cost: Option<f64>,
    /// Why the model stopped.
    pub finish_reason: Option<String>,
    /// Rating.
    pub rating: Option<f64>,
    /// Ratings.
    #[serde(default)]
    pub rating_count: i64,
    /// Creation time (RFC 3339).
    pub created_at: String,
    /// The execution that produced an assistant message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub execution_id: Option<String>,
}

/// A conversation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ConversationResponse {
    /// Title.
    pub title: String,
    /// Description.
    pub description: Option<String>,
    /// Conversation id.
    pub id: String,
    /// Its user.
    pub user_id: String,
    /// Profile.
    pub profile_id: Option<String>,
    /// Status.
    pub status: ConversationStatus,
    /// Provider of the last answer.
    pub llm_provider: Option<String>,
    /// Model of the last answer.
    pub llm_model: Option<String>,
    /// Temperature.
    pub temperature: Option<f64>,
    /// Token limit.
    pub max_tokens: Option<i64>,
    /// Whether retrieval is on.
    pub enable_retrieval: bool,
    /// Messages.
    pub message_count: i64,
    /// Tokens of every answer.
    pub total_tokens: i64,
    /// Cost of every answer.
    pub total_cost: f64,
    /// System prompt.
    pub system_prompt: Option<String>,
    /// History window.
    pub context_window: i64,
    /// Whether memory is on.
    pub memory_enabled: bool,
    /// Memory strategy.
    pub memory_strategy: Option<String>,
    /// Retrieved documents per question.
    pub retrieval_limit: i64,
    /// Retrieval score threshold.
    pub retrieval_score_threshold: f64,
    /// Tags.
    pub tags: Option<Vec<String>>,
    /// Metadata.
    pub extra_metadata: Option<Object>,
    /// Workflow configuration.
    pub workflow_config: Option<Object>,
    /// Creation time (RFC 3339).
    pub created_at: String,
    /// Last change (RFC 3339).
    pub updated_at: String,
    /// Time of the last message (RFC 3339).
    pub last_message_at: Option<String>,
}

/// Answer of `POST /api/v1/workflows/execute/chat`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ChatResponse {
    /// The conversation.
    pub conversation_id: String,
    /// The assistant's message.
    pub message: MessageResponse,
    /// The conversation after it.
    pub conversation: ConversationResponse,
}

// ---------------------------------------------------------------------------------------------
// Workspaces
// ---------------------------------------------------------------------------------------------

/// Body of `POST /api/v1/workspaces`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct WorkspaceCreate {
    /// Name (1 to 255 characters).
    pub name: String,
}

/// A member of a workspace.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct WorkspaceMember {
    /// The user.
    pub user_id: String,
    /// `viewer`, `editor` or `admin`.
    pub role: String,
    /// When they joined (RFC 3339).
    pub joined_at: String,
}

/// A workspace with the caller's role (and, from `GET /api/v1/workspaces/{workspace_id}`, its
/// members).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct WorkspaceResponse {
    /// Workspace id.
    pub id: String,
    /// Name.
    pub name: String,
    /// Creator (always an admin of it).
    pub owner_id: String,
    /// The caller's role.
    pub role: Option<String>,
    /// Creation time (RFC 3339).
    pub created_at: String,
    /// Members (only in the answer of a single workspace).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub members: Option<Vec<WorkspaceMember>>,
}

/// Answer of `GET /api/v1/workspaces`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct WorkspacesResponse {
    /// The caller's workspaces.
    pub workspaces: Vec<WorkspaceResponse>,
    /// How many.
    pub total_count: i64,
}

/// Answer of workspace deletions, member removals and unshares.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct WorkspaceChangeResponse {
    /// What was done.
    pub message: String,
    /// The workspace.
    pub workspace_id: String,
    /// The member removed (member removals only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_id: Option<String>,
}

/// Body of `PUT /api/v1/workspaces/{workspace_id}/members/{user_id}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct WorkspaceMemberUpdate {
    /// `viewer`, `editor` or `admin`.
    pub role: String,
}

/// Body of `POST /api/v1/workspaces/{workspace_id}/resources`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct WorkspaceShareRequest {
    /// `definition` or `template` (one of the caller's).
    pub resource_type: String,
    /// Its id.
    pub resource_id: String,
}

/// Answer of `POST /api/v1/workspaces/{workspace_id}/resources`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct WorkspaceShareResponse {
    /// The workspace.
    pub workspace_id: String,
    /// `definition` or `template`.
    pub resource_type: String,
    /// Its id.
    pub resource_id: String,
}

// ---------------------------------------------------------------------------------------------
// Jobs
// ---------------------------------------------------------------------------------------------

/// A job's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum JobState {
    /// Waiting for a worker (or for its retry time).
    Queued,
    /// Claimed by a worker, under a lease.
    Running,
    /// Its execution completed (or paused `waiting` at an approval).
    Completed,
    /// Failed on its last attempt (or permanently).
    Failed,
    /// Cancelled through the API (or with its execution).
    Cancelled,
}

/// A job's priority; higher ones are served first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum JobPriority {
    /// Stored as 1.
    Low,
    /// Stored as 2 (the default).
    Normal,
    /// Stored as 3.
    High,
    /// Stored as 4.
    Critical,
}

/// What a finished attempt ran: its execution's outcome.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct JobResult {
    /// The execution.
    pub execution_id: String,
    /// Its status (`completed`, or `waiting` at an approval).
    pub status: String,
    /// Its output (with `response`, the last assistant message).
    pub output_data: Option<Object>,
    /// The last assistant message.
    pub response: Option<String>,
    /// Why it failed.
    pub error_message: Option<String>,
    /// Tokens used by every model call.
    pub tokens_used: i64,
    /// Cost of every model call.
    pub cost: f64,
    /// Duration.
    pub execution_time_ms: Option<i64>,
}

/// `metadata` of a job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct JobMetadata {
    /// The execution kind (`definition`, `template`, `adhoc`, ...).
    pub kind: Option<String>,
}

/// A job of the queue (the old platform's job fields and the queue's own). The submission
/// answers (202) also carry `job_id`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Job {
    /// Job id.
    pub id: String,
    /// The definition's or template's name.
    pub name: Option<String>,
    /// Always `execute_workflow`.
    pub function_name: String,
    /// State.
    pub status: JobState,
    /// Priority.
    pub priority: JobPriority,
    /// The stored priority (1 low .. 4 critical).
    pub priority_value: i32,
    /// Who submitted it.
    pub owner_id: Option<String>,
    /// The definition or template it runs (`""` for an inline template).
    pub workflow_id: String,
    /// The execution it runs (a retry after a failed execution runs a new one).
    pub execution_id: Option<String>,
    /// The batch it belongs to.
    pub batch_id: Option<String>,
    /// At most this many jobs of its batch run at once.
    pub batch_concurrency: Option<i32>,
    /// Submission (RFC 3339).
    pub created_at: String,
    /// Last change (RFC 3339).
    pub updated_at: String,
    /// When it may run next (RFC 3339; a retry's backoff moves it).
    pub scheduled_at: String,
    /// Start of its latest attempt (RFC 3339).
    pub started_at: Option<String>,
    /// End (RFC 3339).
    pub completed_at: Option<String>,
    /// The outcome of a completed job.
    pub result: Option<JobResult>,
    /// The last attempt's error (null once completed).
    pub error: Option<String>,
    /// Attempts made.
    pub attempts: i32,
    /// Attempts allowed.
    pub max_attempts: i32,
    /// `attempts - 1` (at least 0).
    pub retry_count: i32,
    /// `max_attempts - 1`.
    pub max_retries: i32,
    /// Longest run of one attempt (ms).
    pub timeout_ms: Option<i64>,
    /// `timeout_ms` in seconds.
    pub timeout: Option<f64>,
    /// 100 once completed, else 0.
    pub progress: f64,
    /// Always empty.
    pub tags: Vec<String>,
    /// What it runs.
    pub metadata: JobMetadata,
    /// The job's id again (submission answers only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job_id: Option<String>,
}

/// Body of `POST /api/v1/jobs`: one run of a definition or a template. Name exactly one of
/// `workflow_id` and `template_id`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct JobSubmit {
    /// A stored definition's id (alias `definition_id`).
    #[serde(default, alias = "definition_id")]
    pub workflow_id: Option<String>,
    /// A template's id (stored or built in).
    #[serde(default)]
    pub template_id: Option<String>,
    /// The execution input (for a template: `message`, `variables` and its parameters); alias
    /// `input_data`.
    #[serde(default, alias = "input_data")]
    pub input: Option<Object>,
    /// Priority (default `normal`).
    #[serde(default)]
    pub priority: Option<JobPriority>,
    /// Attempts allowed, 1..=20 (default 3).
    #[serde(default)]
    #[schema(minimum = 1, maximum = 20)]
    pub max_attempts: Option<i32>,
    /// Longest run of one attempt in ms, 1..=86400000 (default: the engine's limits only).
    #[serde(default)]
    #[schema(minimum = 1, maximum = 86_400_000)]
    pub timeout_ms: Option<i64>,
}

/// Body of `POST /api/v1/jobs/batch`: one job per input, all written or none.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct JobBatch {
    /// A stored definition's id (alias `definition_id`).
    #[serde(default, alias = "definition_id")]
    pub workflow_id: Option<String>,
    /// A template's id (stored or built in).
    #[serde(default)]
    pub template_id: Option<String>,
    /// The inputs, 1..=1000.
    pub inputs: Vec<Object>,
    /// At most this many of the batch run at once, 1..=1000 (default: all).
    #[serde(default)]
    #[schema(minimum = 1, maximum = 1000)]
    pub concurrency: Option<i32>,
    /// Priority (default `normal`).
    #[serde(default)]
    pub priority: Option<JobPriority>,
    /// Attempts allowed, 1..=20 (default 3).
    #[serde(default)]
    #[schema(minimum = 1, maximum = 20)]
    pub max_attempts: Option<i32>,
    /// Longest run of one attempt in ms, 1..=86400000.
    #[serde(default)]
    #[schema(minimum = 1, maximum = 86_400_000)]
    pub timeout_ms: Option<i64>,
}

/// Answer of `POST /api/v1/jobs/batch`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct JobBatchResponse {
    /// The batch (filter the listing with `batch_id`).
    pub batch_id: String,
    /// The concurrency cap.
    pub concurrency: i32,
    /// How many jobs.
    pub total_jobs: i64,
    /// The jobs, in input order.
    pub jobs: Vec<Job>,
}

/// Answer of `GET /api/v1/jobs`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct JobList {
    /// The page of jobs, oldest first.
    pub jobs: Vec<Job>,
    /// How many are on this page.
    pub total_count: i64,
    /// The page size asked for.
    pub limit: i64,
    /// The offset asked for.
    pub offset: i64,
}

/// Answer of `GET /api/v1/jobs/stats` (the caller's jobs; an admin's: all).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct JobStats {
    /// Every job.
    pub total_jobs: i64,
    /// Queued (the old field name).
    pub pending_jobs: i64,
    /// Queued.
    pub queued_jobs: i64,
    /// Running.
    pub running_jobs: i64,
    /// Completed.
    pub completed_jobs: i64,
    /// Failed.
    pub failed_jobs: i64,
    /// Cancelled.
    pub cancelled_jobs: i64,
    /// Queued (the old field name).
    pub queue_size: i64,
    /// Workers of this server.
    pub active_workers: i64,
    /// Count by state (`queued`, `running`, `completed`, `failed`, `cancelled`).
    pub by_status: BTreeMap<String, i64>,
    /// Count by priority (`low`, `normal`, `high`, `critical`).
    pub by_priority: BTreeMap<String, i64>,
}

// ---------------------------------------------------------------------------------------------
// The OpenAI-compatible API (`/v1/models`, `/v1/chat/completions`)
// ---------------------------------------------------------------------------------------------

/// Body of `POST /v1/chat/completions` (OpenAI's shape; the fields this server reads).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ChatCompletionRequest {
    /// A model id of `GET /v1/models`: `workflow:<definition>` or `template:<template>` (by id,
    /// or by name when one has it), or a bare id or name naming exactly one.
    pub model: String,
    /// The conversation: `system`/`developer`, `user`, `assistant` (with `tool_calls`) and
    /// `tool` messages, each `{role, content}` with string content or an array of `text` parts.
    pub messages: Vec<Object>,
    /// Answer as Server-Sent Events of [`ChatCompletionChunk`]s, ending with `data: [DONE]`.
    #[serde(default)]
    pub stream: bool,
    /// `{"include_usage": true}`: a last chunk with the usage (streaming only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream_options: Option<Object>,
    /// 0..=2, passed to a template that has a `temperature` parameter.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f64>,
    /// At least 1, passed to a template that has a `max_tokens` parameter.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_tokens: Option<u64>,
    /// As `max_tokens`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_completion_tokens: Option<u64>,
    /// Only 1 is supported.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub n: Option<u64>,
    /// Function tools (`{"type": "function", "function": {name, description, parameters}}`),
    /// passed to the workflow's `llm` nodes with `client_tools: true`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tools: Option<Vec<Object>>,
    /// `auto`, `none`, `required` (or OpenAI's object form).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_choice: Option<Value>,
}

/// A tool call the model asks for (in a message or a chunk's delta).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ChatCompletionToolCall {
    /// Its position (chunk deltas only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub index: Option<u64>,
    /// The call id (the `tool_call_id` of the answering `tool` message).
    pub id: String,
    /// Always `function`.
    #[serde(rename = "type")]
    pub call_type: String,
    /// The function and its arguments.
    pub function: ChatCompletionFunctionCall,
}

/// The function of a [`ChatCompletionToolCall`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ChatCompletionFunctionCall {
    /// The tool's name.
    pub name: String,
    /// Its arguments, a JSON text.
    pub arguments: String,
}

/// The assistant's message of a [`ChatCompletion`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ChatCompletionMessage {
    /// Always `assistant`.
    pub role: String,
    /// The answer (null when the model only asks for tool calls).
    pub content: Option<String>,
    /// The tool calls the model asks for (with `finish_reason: "tool_calls"`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_calls: Option<Vec<ChatCompletionToolCall>>,
}

/// A choice of a [`ChatCompletion`] (always one).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ChatCompletionChoice {
    /// Always 0.
    pub index: u64,
    /// The answer.
    pub message: ChatCompletionMessage,
    /// Always null.
    pub logprobs: Option<Object>,
    /// `stop`, `length` or `tool_calls`.
    pub finish_reason: String,
}

/// Token usage of a completion (the execution's).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct CompletionUsage {
    /// Prompt tokens.
    pub prompt_tokens: u64,
    /// Completion tokens.
    pub completion_tokens: u64,
    /// Both.
    pub total_tokens: u64,
}

/// Answer of `POST /v1/chat/completions` without `stream`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ChatCompletion {
    /// `chatcmpl-<execution id>`.
    pub id: String,
    /// Always `chat.completion`.
    pub object: String,
    /// Unix seconds.
    pub created: i64,
    /// The model id as requested.
    pub model: String,
    /// One choice.
    pub choices: Vec<ChatCompletionChoice>,
    /// Token usage.
    pub usage: CompletionUsage,
    /// Always null.
    pub system_fingerprint: Option<String>,
    /// The recorded execution (see the executions endpoints).
    pub execution_id: String,
}

/// The `delta` of a [`ChatCompletionChunkChoice`]: the role (first chunk), a piece of content,
/// or the tool calls; empty in the chunk with the `finish_reason`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ChatCompletionDelta {
    /// `assistant` (first chunk only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    /// A piece of the answer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content: Option<String>,
    /// The tool calls the model asks for, with their `index`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_calls: Option<Vec<ChatCompletionToolCall>>,
}

/// A choice of a [`ChatCompletionChunk`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ChatCompletionChunkChoice {
    /// Always 0.
    pub index: u64,
    /// What this chunk adds.
    pub delta: ChatCompletionDelta,
    /// Always null.
    pub logprobs: Option<Object>,
    /// `stop`, `length` or `tool_calls` in the last chunk, else null.
    pub finish_reason: Option<String>,
}

/// One item of the event stream of `POST /v1/chat/completions` with `stream: true`: each
/// frame is `data: <ChatCompletionChunk JSON>`, and the stream ends with `data: [DONE]`. A
/// run that fails sends a `data:` frame with an [`OpenAIError`] before `[DONE]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ChatCompletionChunk {
    /// `chatcmpl-<execution id>`, the same in every chunk.
    pub id: String,
    /// Always `chat.completion.chunk`.
    pub object: String,
    /// Unix seconds.
    pub created: i64,
    /// The model id as requested.
    pub model: String,
    /// Always null.
    pub system_fingerprint: Option<String>,
    /// One choice; none in the usage chunk.
    pub choices: Vec<ChatCompletionChunkChoice>,
    /// With `stream_options.include_usage`: null in every chunk but the last, which has the
    /// usage and no choice.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<CompletionUsage>,
}

/// A model of `GET /v1/models`: a workflow definition or template the caller may read.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Model {
    /// `workflow:<definition id>` or `template:<template id>`.
    pub id: String,
    /// Always `model`.
    pub object: String,
    /// Creation time, Unix seconds (0 for built-in templates).
    pub created: i64,
    /// The owner's user id (`system` for built-in templates).
    pub owned_by: String,
    /// The definition's or template's name.
    pub name: String,
    /// Its description.
    pub description: Option<String>,
}

/// Answer of `GET /v1/models`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ModelList {
    /// Always `list`.
    pub object: String,
    /// The caller's definitions, then the templates it may read.
    pub data: Vec<Model>,
}

/// An error of the OpenAI-compatible endpoints (OpenAI's shape, `application/json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct OpenAIError {
    /// What went wrong.
    pub error: OpenAIErrorDetail,
}

/// The `error` of an [`OpenAIError`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct OpenAIErrorDetail {
    /// What went wrong.
    pub message: String,
    /// `invalid_request_error` or `server_error`.
    #[serde(rename = "type")]
    pub error_type: String,
    /// The request field at fault (`model`, `messages`, `tools`, ...).
    pub param: Option<String>,
    /// `invalid_api_key`, `permission_denied`, `not_found`, `model_not_found`,
    /// `ambiguous_model`, `workflow_failed`, ...
    pub code: Option<String>,
    /// The failed execution (with `workflow_failed`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub execution_id: Option<String>,
}
