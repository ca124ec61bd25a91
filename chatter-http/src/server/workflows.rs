//! The v1 contract under `/api/v1/workflows`: definitions, templates, executions, validation,
//! node types, defaults and preferences.
//!
//! Owner scoping: a caller reads their own resources, public ones and built-in templates;
//! writes only their own. `workflow:admin` (admins) reads and writes everything. Another
//! user's private resource answers 404, never 403, so ids do not leak.

use std::collections::HashMap;
use std::sync::Mutex;

use axum::Router;
use axum::extract::State;
use axum::response::Response;
use axum::routing::{get, post};
use chatter_core::definition::WorkflowDefinition;
use chatter_core::engine::{PreparedWorkflow, RunOptions};
use chatter_core::registry::NodeRegistry;
use chatter_core::store::{
    DefinitionFilter, DefinitionRecord, DefinitionUpdate, EventRecord, ExecutionFilter,
    ExecutionKind, ExecutionRecord, NewDefinition, Page, TemplateFilter, TemplateRecord,
};
use chatter_core::templates::{TemplateSpec, builtin_templates};
use chatter_core::time::rfc3339_ms;
use chatter_core::tracker::ExecutionMeta;
use chatter_core::validate::{ValidatorConfig, WorkflowValidator};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::auth::Principal;
use super::jobs::{AsyncQuery, Submission, enqueue_if_async};
use super::problem::{ApiError, ApiJson, ApiPath, ApiQuery, PageQuery, check_limit, check_range};
use super::schemas;
use super::{AppState, ok};

pub(super) fn routes() -> Router<AppState> {
    let w = "/api/v1/workflows";
    Router::new()
        .route(
            &format!("{w}/definitions"),
            get(list_definitions).post(create_definition),
        )
        .route(
            &format!("{w}/definitions/from-template"),
            post(definition_from_template),
        )
        .route(
            &format!("{w}/definitions/validate"),
            post(validate_definition),
        )
        .route(
            &format!("{w}/definitions/custom/execute"),
            post(execute_custom),
        )
        .route(
            &format!("{w}/definitions/{{workflow_id}}"),
            get(get_definition)
                .put(update_definition)
                .delete(delete_definition),
        )
        .route(
            &format!("{w}/definitions/{{workflow_id}}/analytics"),
            get(definition_analytics),
        )
        .route(
            &format!("{w}/definitions/{{workflow_id}}/execute"),
            post(execute_definition),
        )
        .route(
            &format!("{w}/definitions/{{workflow_id}}/executions"),
            get(list_definition_executions),
        )
        .route(
            &format!("{w}/definitions/{{workflow_id}}/executions/{{execution_id}}"),
            get(get_execution),
        )
        .route(
            &format!("{w}/definitions/{{workflow_id}}/executions/{{execution_id}}/logs"),
            get(execution_logs),
        )
        .route(&format!("{w}/executions"), get(list_executions))
        .route(
            &format!("{w}/templates"),
            get(list_templates).post(create_template),
        )
        .route(&format!("{w}/templates/import"), post(import_template))
        .route(&format!("{w}/templates/validate"), post(validate_template))
        .route(
            &format!("{w}/templates/execute"),
            post(execute_inline_template),
        )
        .route(
            &format!("{w}/templates/{{template_id}}"),
            axum::routing::put(update_template).delete(delete_template),
        )
        .route(
            &format!("{w}/templates/{{template_id}}/export"),
            get(export_template),
        )
        .route(
            &format!("{w}/templates/{{template_id}}/load"),
            get(load_template),
        )
        .route(
            &format!("{w}/templates/{{template_id}}/execute"),
            post(execute_template),
        )
        .route(&format!("{w}/node-types"), get(node_types))
        .route(&format!("{w}/node-types/modern"), get(modern_node_types))
        .route(&format!("{w}/defaults"), get(defaults))
        .route(&format!("{w}/memory/configure"), post(configure_memory))
        .route(&format!("{w}/tools/configure"), post(configure_tools))
}

// ---------------------------------------------------------------------------------------------
// Scoping
// ---------------------------------------------------------------------------------------------

fn can_read(p: &Principal, owner: Option<&str>, is_public: bool) -> bool {
    is_public || p.is_admin() || owner == Some(p.id())
}

fn can_write(p: &Principal, owner: Option<&str>) -> bool {
    p.is_admin() || owner == Some(p.id())
}

/// The caller's roles on a resource through the workspaces sharing it.
async fn shared_roles(
    state: &AppState,
    p: &Principal,
    resource_type: &str,
    id: &str,
) -> Result<Vec<String>, ApiError> {
    Ok(state
        .store()
        .shared_roles(p.id(), resource_type, id)
        .await?)
}

/// A definition the caller may read (own, public, shared with them, or any for admins),
/// else 404.
pub(super) async fn readable_definition(
    state: &AppState,
    p: &Principal,
    id: &str,
) -> Result<DefinitionRecord, ApiError> {
    let missing = || ApiError::not_found(format!("no workflow definition `{id}`"));
    let record = state
        .store()
        .get_definition(id)
        .await?
        .ok_or_else(missing)?;
    if can_read(p, Some(&record.owner_id), record.is_public)
        || !shared_roles(state, p, "definition", id).await?.is_empty()
    {
        Ok(record)
    } else {
        Err(missing())
    }
}

/// What a caller wants to do to a definition or template.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Change {
    /// Update it (owners, admins, workspace editors).
    Update,
    /// Delete it (owners and admins only).
    Delete,
}

/// A definition the caller may change: 404 when unreadable, 403 when only readable.
async fn writable_definition(
    state: &AppState,
    p: &Principal,
    id: &str,
    change: Change,
) -> Result<DefinitionRecord, ApiError> {
    let record = readable_definition(state, p, id).await?;
    let allowed = can_write(p, Some(&record.owner_id))
        || (change == Change::Update
            && super::workspaces::has_role(
                &shared_roles(state, p, "definition", id).await?,
                "editor",
            ));
    if !allowed {
        return Err(ApiError::forbidden(format!(
            "workflow definition `{id}` belongs to another user"
        )));
    }
    Ok(record)
}

// ---------------------------------------------------------------------------------------------
// Definitions
// ---------------------------------------------------------------------------------------------

/// Nodes with `position` and `data.{label,nodeType}`, edges with an `id` (what strict clients
/// require), everything else kept as given.
fn normalize_graph(nodes: &[Value], edges: &[Value]) -> Result<(Vec<Value>, Vec<Value>), ApiError> {
    let mut out_nodes = Vec::with_capacity(nodes.len());
    for (i, node) in nodes.iter().enumerate() {
        let Some(obj) = node.as_object() else {
            return Err(ApiError::unprocessable(format!(
                "nodes[{i}] must be an object"
            )));
        };
        let mut obj = obj.clone();
        let id = obj
            .get("id")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        let data = obj.get("data").and_then(Value::as_object).cloned();
        let kind = data
            .as_ref()
            .and_then(|d| d.get("nodeType"))
            .or_else(|| obj.get("type"))
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        let mut data = data.unwrap_or_else(|| {
            // Flat shape: move `label` and `config` under `data`.
            let mut d = Map::new();
            if let Some(config) = obj.remove("config") {
                d.insert("config".into(), config);
            }
            if let Some(label) = obj.remove("label") {
                d.insert("label".into(), label);
            }
            d
        });
        if !data.get("label").is_some_and(Value::is_string) {
            data.insert("label".into(), json!(id));
        }
        if !data.get("nodeType").is_some_and(Value::is_string) {
            data.insert("nodeType".into(), json!(kind));
        }
        obj.insert("data".into(), Value::Object(data));
        if !obj.get("type").is_some_and(Value::is_string) {
            obj.insert("type".into(), json!(kind));
        }
        if !obj.get("position").is_some_and(Value::is_object) {
            obj.insert("position".into(), json!({"x": 0, "y": 0}));
        }
        out_nodes.push(Value::Object(obj));
    }
    let mut out_edges = Vec::with_capacity(edges.len());
    for (i, edge) in edges.iter().enumerate() {
        let Some(obj) = edge.as_object() else {
            return Err(ApiError::unprocessable(format!(
                "edges[{i}] must be an object"
            )));
        };
        let mut obj = obj.clone();
        if !obj.get("id").is_some_and(Value::is_string) {
            let source = obj
                .get("source")
                .and_then(Value::as_str)
                .unwrap_or_default();
            let target = obj
                .get("target")
                .and_then(Value::as_str)
                .unwrap_or_default();
            obj.insert("id".into(), json!(format!("e{i}-{source}-{target}")));
        }
        out_edges.push(Value::Object(obj));
    }
    Ok((out_nodes, out_edges))
}

fn validator() -> WorkflowValidator {
    WorkflowValidator::new(ValidatorConfig::default())
}

/// Parses and validates a graph: 422 with the contract's `errors` when invalid.
fn checked_definition(nodes: &[Value], edges: &[Value]) -> Result<WorkflowDefinition, ApiError> {
    let def = WorkflowDefinition::from_value(&json!({"nodes": nodes, "edges": edges}))?;
    let report = validator().validate(&def).to_contract();
    if !report.is_valid {
        let detail = report
            .errors
            .iter()
            .map(|e| e.msg.clone())
            .collect::<Vec<_>>()
            .join("; ");
        return Err(
            ApiError::unprocessable(format!("the workflow is invalid: {detail}"))
                .with(
                    "errors",
                    serde_json::to_value(&report.errors).unwrap_or_default(),
                )
                .with("suggestions", json!(report.suggestions)),
        );
    }
    Ok(def)
}

/// The runnable definition of a stored record.
pub(super) fn stored_definition(record: &DefinitionRecord) -> Result<WorkflowDefinition, ApiError> {
    Ok(WorkflowDefinition::from_value(&json!({
        "nodes": record.definition.get("nodes").cloned().unwrap_or_else(|| json!([])),
        "edges": record.definition.get("edges").cloned().unwrap_or_else(|| json!([])),
    }))?)
}

fn definition_json(record: &DefinitionRecord) -> Value {
    let d = &record.definition;
    json!({
        "name": record.name,
        "description": record.description,
        "nodes": d.get("nodes").cloned().unwrap_or_else(|| json!([])),
        "edges": d.get("edges").cloned().unwrap_or_else(|| json!([])),
        "metadata": d.get("metadata").cloned().unwrap_or(Value::Null),
        "is_public": record.is_public,
        "tags": record.tags,
        "template_id": d.get("template_id").cloned().unwrap_or(Value::Null),
        "id": record.id,
        "owner_id": record.owner_id,
        "version": record.version,
        "created_at": rfc3339_ms(record.created_at),
        "updated_at": rfc3339_ms(record.updated_at),
    })
}

#[derive(Debug, Deserialize)]
struct DefinitionCreate {
    name: String,
    description: Option<String>,
    nodes: Vec<Value>,
    edges: Vec<Value>,
    metadata: Option<Map<String, Value>>,
    #[serde(default)]
    is_public: bool,
    tags: Option<Vec<String>>,
    template_id: Option<String>,
}

fn check_name(name: &str) -> Result<(), ApiError> {
    if name.trim().is_empty() || name.chars().count() > 255 {
        return Err(ApiError::unprocessable(
            "`name` must have 1 to 255 characters",
        ));
    }
    Ok(())
}

#[utoipa::path(
    post,
    path = "/api/v1/workflows/definitions",
    operation_id = "create_workflow_definition_api_v1_workflows_definitions_post",
    tag = "Workflows",
    request_body = schemas::WorkflowDefinitionCreate,
    responses(
        (status = 200, description = "Successful Response", body = schemas::WorkflowDefinitionResponse),
        (status = 422, description = "Validation Error", body = schemas::Problem, content_type = "application/problem+json"),
    ),
    security(("CustomHTTPBearer" = [])),
)]
async fn create_definition(
    State(state): State<AppState>,
    p: Principal,
    ApiJson(body): ApiJson<DefinitionCreate>,
) -> Result<Response, ApiError> {
    p.require("workflow:write")?;
    check_name(&body.name)?;
    let (nodes, edges) = normalize_graph(&body.nodes, &body.edges)?;
    checked_definition(&nodes, &edges)?;
    let record = state
        .store()
        .create_definition(NewDefinition {
            id: None,
            owner_id: p.id().to_owned(),
            name: body.name,
            description: body.description,
            definition: json!({
                "nodes": nodes,
                "edges": edges,
                "metadata": body.metadata,
                "template_id": body.template_id,
            }),
            is_public: body.is_public,
            tags: body.tags.unwrap_or_default(),
        })
        .await?;
    state
        .audit(
            Some(p.id()),
            "definition.create",
            ("workflow_definition", Some(&record.id)),
            "success",
            json!({"name": record.name}),
        )
        .await;
    Ok(ok(definition_json(&record)))
}

/// Appends the resources of `shared` (ids shared with the caller through workspaces) that
/// `records` does not hold yet, read with `fetch`; ids that no longer exist are skipped.
async fn append_shared<T, Fut>(
    records: &mut Vec<T>,
    shared: Vec<String>,
    id_of: impl Fn(&T) -> &String,
    fetch: impl Fn(String) -> Fut,
) -> Result<(), ApiError>
where
    Fut: std::future::Future<Output = chatter_core::Result<Option<T>>>,
{
    for id in shared {
        if records.iter().any(|r| id_of(r) == &id) {
            continue;
        }
        if let Some(record) = fetch(id).await? {
            records.push(record);
        }
    }
    Ok(())
}

/// A page of the definitions the caller may read: own and public ones (any for admins), then
/// on the first page those shared with them through workspaces.
pub(super) async fn readable_definitions(
    state: &AppState,
    p: &Principal,
    page: Page,
) -> Result<Vec<DefinitionRecord>, ApiError> {
    let filter = DefinitionFilter {
        owner_id: (!p.is_admin()).then(|| p.id().to_owned()),
        include_public: true,
        tag: None,
    };
    let mut records = state.store().list_definitions(&filter, page).await?;
    if page.offset == 0 && !p.is_admin() {
        let store = state.store();
        let shared = store.shared_resource_ids(p.id(), "definition").await?;
        append_shared(
            &mut records,
            shared,
            |r| &r.id,
            |id| async move { store.get_definition(&id).await },
        )
        .await?;
    }
    Ok(records)
}

#[utoipa::path(
    get,
    path = "/api/v1/workflows/definitions",
    operation_id = "list_workflow_definitions_api_v1_workflows_definitions_get",
    tag = "Workflows",
    params(
        ("limit" = Option<i64>, Query, description = "Number of results per page (default 100)"),
        ("offset" = Option<i64>, Query, description = "Number of results to skip (default 0)"),
    ),
    responses(
        (status = 200, description = "Successful Response", body = schemas::WorkflowDefinitionsResponse),
    ),
    security(("CustomHTTPBearer" = [])),
)]
async fn list_definitions(
    State(state): State<AppState>,
    p: Principal,
    ApiQuery(query): ApiQuery<PageQuery>,
) -> Result<Response, ApiError> {
    p.require("workflow:read")?;
    check_limit(query.limit, 1000)?;
    let records = readable_definitions(&state, &p, Page::new(query.limit, query.offset)).await?;
    let definitions: Vec<Value> = records.iter().map(definition_json).collect();
    Ok(ok(
        json!({"total_count": definitions.len(), "definitions": definitions}),
    ))
}

#[utoipa::path(
    get,
    path = "/api/v1/workflows/definitions/{workflow_id}",
    operation_id = "get_workflow_definition_api_v1_workflows_definitions__workflow_id__get",
    tag = "Workflows",
    params(
        ("workflow_id" = String, Path, description = "Workflow ID"),
    ),
    responses(
        (status = 200, description = "Successful Response", body = schemas::WorkflowDefinitionResponse),
        (status = 404, description = "No such definition readable by the caller", body = schemas::Problem, content_type = "application/problem+json"),
        (status = 422, description = "Validation Error", body = schemas::Problem, content_type = "application/problem+json"),
    ),
    security(("CustomHTTPBearer" = [])),
)]
async fn get_definition(
    State(state): State<AppState>,
    p: Principal,
    ApiPath(id): ApiPath<String>,
) -> Result<Response, ApiError> {
    p.require("workflow:read")?;
    let record = readable_definition(&state, &p, &id).await?;
    Ok(ok(definition_json(&record)))
}

#[derive(Debug, Deserialize)]
struct DefinitionPatch {
    name: Option<String>,
    description: Option<String>,
    nodes: Option<Vec<Value>>,
    edges: Option<Vec<Value>>,
    metadata: Option<Map<String, Value>>,
    is_public: Option<bool>,
    tags: Option<Vec<String>>,
    template_id: Option<String>,
}

#[utoipa::path(
    put,
    path = "/api/v1/workflows/definitions/{workflow_id}",
    operation_id = "update_workflow_definition_api_v1_workflows_definitions__workflow_id__put",
    tag = "Workflows",
    params(
        ("workflow_id" = String, Path, description = "Workflow ID"),
    ),
    request_body = schemas::WorkflowDefinitionUpdate,
    responses(
        (status = 200, description = "Successful Response", body = schemas::WorkflowDefinitionResponse),
        (status = 403, description = "Readable but not the caller's", body = schemas::Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such definition readable by the caller", body = schemas::Problem, content_type = "application/problem+json"),
        (status = 422, description = "Validation Error", body = schemas::Problem, content_type = "application/problem+json"),
    ),
    security(("CustomHTTPBearer" = [])),
)]
async fn update_definition(
    State(state): State<AppState>,
    p: Principal,
    ApiPath(id): ApiPath<String>,
    ApiJson(body): ApiJson<DefinitionPatch>,
) -> Result<Response, ApiError> {
    p.require("workflow:write")?;
    let record = writable_definition(&state, &p, &id, Change::Update).await?;
    if let Some(name) = &body.name {
        check_name(name)?;
    }
    let mut definition = record.definition.clone();
    let graph_changed = body.nodes.is_some() || body.edges.is_some();
    if graph_changed {
        let nodes = body.nodes.clone().unwrap_or_else(|| {
            definition
                .get("nodes")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default()
        });
        let edges = body.edges.clone().unwrap_or_else(|| {
            definition
                .get("edges")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default()
        });
        let (nodes, edges) = normalize_graph(&nodes, &edges)?;
        checked_definition(&nodes, &edges)?;
        definition["nodes"] = json!(nodes);
        definition["edges"] = json!(edges);
    }
    if let Some(metadata) = body.metadata {
        definition["metadata"] = Value::Object(metadata);
    }
    if let Some(template_id) = body.template_id {
        definition["template_id"] = json!(template_id);
    }
    let updated = state
        .store()
        .update_definition(
            &id,
            DefinitionUpdate {
                name: body.name,
                description: body.description.map(Some),
                definition: (definition != record.definition).then_some(definition),
                is_public: body.is_public,
                tags: body.tags,
                expected_version: None,
            },
        )
        .await?;
    state
        .audit(
            Some(p.id()),
            "definition.update",
            ("workflow_definition", Some(&id)),
            "success",
            json!({"version": updated.version}),
        )
        .await;
    Ok(ok(definition_json(&updated)))
}

#[utoipa::path(
    delete,
    path = "/api/v1/workflows/definitions/{workflow_id}",
    operation_id = "delete_workflow_definition_api_v1_workflows_definitions__workflow_id__delete",
    tag = "Workflows",
    params(
        ("workflow_id" = String, Path, description = "Workflow ID"),
    ),
    responses(
        (status = 200, description = "Successful Response", body = schemas::WorkflowDeleteResponse),
        (status = 403, description = "Readable but not the caller's", body = schemas::Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such definition readable by the caller", body = schemas::Problem, content_type = "application/problem+json"),
        (status = 422, description = "Validation Error", body = schemas::Problem, content_type = "application/problem+json"),
    ),
    security(("CustomHTTPBearer" = [])),
)]
async fn delete_definition(
    State(state): State<AppState>,
    p: Principal,
    ApiPath(id): ApiPath<String>,
) -> Result<Response, ApiError> {
    p.require("workflow:write")?;
    writable_definition(&state, &p, &id, Change::Delete).await?;
    if !state.store().delete_definition(&id).await? {
        return Err(ApiError::not_found(format!(
            "no workflow definition `{id}`"
        )));
    }
    state
        .audit(
            Some(p.id()),
            "definition.delete",
            ("workflow_definition", Some(&id)),
            "success",
            json!({}),
        )
        .await;
    Ok(ok(
        json!({"message": "Workflow definition deleted successfully", "workflow_id": id}),
    ))
}

#[utoipa::path(
    post,
    path = "/api/v1/workflows/definitions/validate",
    operation_id = "validate_workflow_definition_api_v1_workflows_definitions_validate_post",
    tag = "Workflows",
    request_body = inline(schemas::DefinitionValidationRequest),
    responses(
        (status = 200, description = "Successful Response", body = schemas::WorkflowValidationResponse),
        (status = 422, description = "Validation Error", body = schemas::Problem, content_type = "application/problem+json"),
    ),
    security(("CustomHTTPBearer" = [])),
)]
async fn validate_definition(
    p: Principal,
    ApiJson(body): ApiJson<Value>,
) -> Result<Response, ApiError> {
    p.require("workflow:read")?;
    let (Some(nodes), Some(edges)) = (
        body.get("nodes").and_then(Value::as_array),
        body.get("edges").and_then(Value::as_array),
    ) else {
        return Err(ApiError::unprocessable(
            "the body needs `nodes` and `edges` arrays",
        ));
    };
    let report = match WorkflowDefinition::from_value(&json!({"nodes": nodes, "edges": edges})) {
        Ok(def) => serde_json::to_value(validator().validate(&def).to_contract()),
        // Unparsable graphs are an invalid result, not an error of the request.
        Err(e) => Ok(json!({
            "is_valid": false,
            "errors": [{"loc": ["body"], "msg": e.to_string(), "type": "parse_error"}],
            "warnings": [],
            "suggestions": ["Fix the definition so that it parses: nodes need `id` and a type, edges `source` and `target`."],
        })),
    }
    .map_err(|e| ApiError::internal(&e))?;
    Ok(ok(report))
}

#[utoipa::path(
    get,
    path = "/api/v1/workflows/definitions/{workflow_id}/analytics",
    operation_id = "get_workflow_analytics_api_v1_workflows_definitions__workflow_id__analytics_get",
    tag = "Workflows",
    params(
        ("workflow_id" = String, Path, description = "Workflow ID"),
    ),
    responses(
        (status = 200, description = "Successful Response", body = schemas::WorkflowAnalyticsResponse),
        (status = 404, description = "No such definition readable by the caller", body = schemas::Problem, content_type = "application/problem+json"),
        (status = 422, description = "Validation Error", body = schemas::Problem, content_type = "application/problem+json"),
    ),
    security(("CustomHTTPBearer" = [])),
)]
async fn definition_analytics(
    State(state): State<AppState>,
    p: Principal,
    ApiPath(id): ApiPath<String>,
) -> Result<Response, ApiError> {
    p.require("workflow:read")?;
    let record = readable_definition(&state, &p, &id).await?;
    let started = chatter_core::time::rfc3339_ms(super::auth::now_ms());
    let clock = std::time::Instant::now();
    let def = stored_definition(&record)?;
    let analytics = chatter_core::analytics::analyze(&def);
    let mut doc = serde_json::to_value(&analytics).map_err(|e| ApiError::internal(&e))?;
    doc["total_execution_time_ms"] =
        json!(u64::try_from(clock.elapsed().as_millis()).unwrap_or(u64::MAX));
    doc["error"] = Value::Null;
    doc["started_at"] = json!(started);
    doc["completed_at"] = json!(rfc3339_ms(super::auth::now_ms()));
    Ok(ok(doc))
}

#[derive(Debug, Deserialize)]
struct FromTemplate {
    template_id: String,
    name_suffix: Option<String>,
    user_input: Option<Map<String, Value>>,
    #[serde(default = "yes")]
    is_temporary: bool,
}

fn yes() -> bool {
    true
}

#[utoipa::path(
    post,
    path = "/api/v1/workflows/definitions/from-template",
    operation_id = "create_workflow_definition_from_template_api_v1_workflows_definitions_from_template_post",
    tag = "Workflows",
    request_body = schemas::WorkflowDefinitionFromTemplateRequest,
    responses(
        (status = 200, description = "Successful Response", body = schemas::WorkflowDefinitionResponse),
        (status = 404, description = "No such template", body = schemas::Problem, content_type = "application/problem+json"),
        (status = 422, description = "Validation Error", body = schemas::Problem, content_type = "application/problem+json"),
    ),
    security(("CustomHTTPBearer" = [])),
)]
async fn definition_from_template(
    State(state): State<AppState>,
    p: Principal,
    ApiJson(body): ApiJson<FromTemplate>,
) -> Result<Response, ApiError> {
    p.require("workflow:write")?;
    let template = readable_template(&state, &p, &body.template_id).await?;
    let params = template
        .spec
        .merge_params(&body.user_input.map_or(Value::Null, Value::Object))?;
    let def = template.spec.generate(&params)?;
    let written = def.to_value();
    let nodes = written
        .get("nodes")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let edges = written
        .get("edges")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let (nodes, edges) = normalize_graph(&nodes, &edges)?;
    let name = match &body.name_suffix {
        Some(suffix) => format!("{} {suffix}", template.spec.name),
        None => template.spec.name.clone(),
    };
    let record = state
        .store()
        .create_definition(NewDefinition {
            id: None,
            owner_id: p.id().to_owned(),
            name,
            description: Some(template.spec.description.clone()),
            definition: json!({
                "nodes": nodes,
                "edges": edges,
                "metadata": {"is_temporary": body.is_temporary, "params": params},
                "template_id": template.id,
            }),
            is_public: false,
            tags: template.spec.tags.clone(),
        })
        .await?;
    state
        .audit(
            Some(p.id()),
            "definition.create",
            ("workflow_definition", Some(&record.id)),
            "success",
            json!({"from_template": template.id}),
        )
        .await;
    Ok(ok(definition_json(&record)))
}

// ---------------------------------------------------------------------------------------------
// Executions
// ---------------------------------------------------------------------------------------------

fn object_or_wrapped(value: Option<&Value>, key: &str) -> Value {
    match value {
        None | Some(Value::Null) => Value::Null,
        Some(Value::Object(map)) => Value::Object(map.clone()),
        Some(other) => json!({ key: other }),
    }
}

fn param(record: &ExecutionRecord, key: &str) -> Option<String> {
    record
        .params
        .get(key)
        .and_then(Value::as_str)
        .map(str::to_owned)
}

/// The contract's `definition_id` of an execution: its definition, else its template (also
/// after either was deleted), else `""` for ad-hoc runs. Never null.
pub(super) fn workflow_id(record: &ExecutionRecord) -> String {
    record
        .definition_id
        .clone()
        .or_else(|| param(record, "definition_id"))
        .or_else(|| record.template_id.clone())
        .or_else(|| param(record, "template_id"))
        .unwrap_or_default()
}

pub(super) fn execution_json(record: &ExecutionRecord) -> Value {
    let mut output = object_or_wrapped(record.output.as_ref(), "output");
    if let (Some(response), Some(map)) = (&record.response, output.as_object_mut()) {
        map.entry("response").or_insert_with(|| json!(response));
    } else if let Some(response) = &record.response {
        output = json!({"response": response});
    }
    json!({
        "id": record.id,
        "definition_id": workflow_id(record),
        "owner_id": record.owner_id,
        "status": record.status.as_str(),
        "started_at": record.started_at.map(rfc3339_ms),
        "completed_at": record.finished_at.map(rfc3339_ms),
        "execution_time_ms": record.duration_ms,
        "input_data": object_or_wrapped(Some(&record.input), "input"),
        "output_data": output,
        "error_message": record.error,
        "tokens_used": record.total_tokens,
        "cost": record.cost,
        "execution_log": null,
        "debug_info": null,
        "created_at": rfc3339_ms(record.created_at),
        "updated_at": rfc3339_ms(record.updated_at),
        "template_id": record.template_id.clone().or_else(|| param(record, "template_id")),
        "kind": record.kind.as_str(),
    })
}

fn log_level(event_type: &str) -> &'static str {
    match event_type {
        "node_failed" | "execution_failed" => "error",
        "node_retrying" | "execution_cancelled" | "interrupted" => "warning",
        "token" => "debug",
        _ => "info",
    }
}

fn log_entry(event: &EventRecord) -> Value {
    let payload = &event.payload;
    let node_id = payload.get("node_id").and_then(Value::as_str);
    let message = match (event.event_type.as_str(), node_id) {
        ("node_failed", Some(n)) => format!(
            "node {n} failed: {}",
            payload
                .get("error")
                .map(|e| e.get("message").unwrap_or(e).to_string())
                .unwrap_or_default()
        ),
        (kind, Some(n)) => format!("{} {n}", kind.replace('_', " ")),
        (kind, None) => kind.replace('_', " "),
    };
    json!({
        "timestamp": rfc3339_ms(event.ts),
        "level": log_level(&event.event_type),
        "node_id": node_id,
        "step_name": event.event_type,
        "message": message,
        "data": object_or_wrapped(Some(payload), "payload"),
        "execution_time_ms": payload.get("duration_ms").and_then(Value::as_i64),
        "sequence": event.seq,
    })
}

/// Runs a definition through the tracker as an execution of this server (so `cancel` reaches
/// it), calling `observe` with each event; `options` may carry history and the execution id
/// (default: a new ULID), the owner is `meta`'s.
pub(super) async fn run_live(
    state: &AppState,
    def: &WorkflowDefinition,
    input: Value,
    options: RunOptions,
    meta: ExecutionMeta,
    observe: impl FnMut(&chatter_core::Event) + Send,
) -> Result<chatter_core::tracker::TrackedRun, ApiError> {
    let prepared = state.engine().prepare(def)?;
    run_live_prepared(state, &prepared, input, options, meta, observe).await
}

/// [`run_live`] of a definition prepared already.
async fn run_live_prepared(
    state: &AppState,
    prepared: &PreparedWorkflow,
    input: Value,
    options: RunOptions,
    meta: ExecutionMeta,
    observe: impl FnMut(&chatter_core::Event) + Send,
) -> Result<chatter_core::tracker::TrackedRun, ApiError> {
    let id = options
        .execution_id
        .clone()
        .unwrap_or_else(|| ulid::Ulid::new().to_string());
    let token = tokio_util::sync::CancellationToken::new();
    let _live = state.register_live(&id, token.clone())?;
    let mut options = options.owner(meta.owner_id.clone()).execution_id(&id);
    options.cancel = Some(token);
    Ok(state
        .tracker()
        .run_prepared_observed(state.engine(), prepared, input, options, meta, observe)
        .await?)
}

/// Runs a prepared definition recorded in the store; returns the stored execution.
pub(super) async fn run_recorded(
    state: &AppState,
    prepared: &PreparedWorkflow,
    input: Value,
    meta: ExecutionMeta,
) -> Result<ExecutionRecord, ApiError> {
    // The execution runs in a task of its own, which goes on when the client hangs up; its
    // events reach the observers in that task (in place), waking no other task, and this one
    // is woken once, with the result.
    let (task_state, prepared) = (state.clone(), prepared.clone());
    let options = RunOptions::default().in_place(true);
    let run = tokio::spawn(async move {
        run_live_prepared(&task_state, &prepared, input, options, meta, |_| {}).await
    })
    .await
    .map_err(|e| ApiError::internal(&format!("the execution's task failed: {e}")))??;
    let id = run.result.execution_id.clone();
    if let Some(error) = run.store_error {
        return Err(ApiError::from(error));
    }
    if let Some(record) = run.record {
        return Ok(record);
    }
    state
        .store()
        .get_execution(&id)
        .await?
        .ok_or_else(|| ApiError::internal(&format!("execution {id} was not recorded")))
}

/// Most stored definitions kept prepared in a [`PreparedDefinitions`]; past it, all are
/// dropped.
const MAX_PREPARED_DEFINITIONS: usize = 1024;

/// Stored definitions validated and compiled, by id, each with the version and update time
/// it was prepared from: executing a stored definition again neither parses, validates,
/// compiles nor digests it again until it changes.
#[derive(Debug, Default)]
pub(crate) struct PreparedDefinitions {
    entries: Mutex<HashMap<String, (i64, i64, PreparedWorkflow)>>,
}

impl PreparedDefinitions {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, (i64, i64, PreparedWorkflow)>> {
        self.entries
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The preparation of `record`, from the cache when it is of this version.
    fn prepare(
        &self,
        engine: &chatter_core::Engine,
        record: &DefinitionRecord,
    ) -> Result<PreparedWorkflow, ApiError> {
        if let Some((version, updated_at, prepared)) = self.lock().get(&record.id)
            && (*version, *updated_at) == (record.version, record.updated_at)
        {
            return Ok(prepared.clone());
        }
        let prepared = engine.prepare(&stored_definition(record)?)?;
        let mut entries = self.lock();
        if entries.len() >= MAX_PREPARED_DEFINITIONS {
            entries.clear();
        }
        entries.insert(
            record.id.clone(),
            (record.version, record.updated_at, prepared.clone()),
        );
        Ok(prepared)
    }
}

#[derive(Debug, Deserialize)]
struct ExecutionRequest {
    input_data: Option<Map<String, Value>>,
    definition_id: Option<String>,
    #[serde(default)]
    #[allow(dead_code)]
    debug_mode: bool,
}

#[utoipa::path(
    post,
    path = "/api/v1/workflows/definitions/{workflow_id}/execute",
    operation_id = "execute_workflow_api_v1_workflows_definitions__workflow_id__execute_post",
    tag = "Workflows",
    params(
        ("workflow_id" = String, Path, description = "Workflow ID"),
        AsyncQuery,
    ),
    request_body = schemas::WorkflowExecutionRequest,
    responses(
        (status = 200, description = "Successful Response", body = schemas::WorkflowExecutionResponse),
        (status = 202, description = "With `async=true`: the run, queued as a job (`Location`: the job's URL; `execution_id`: the execution it will run)", body = schemas::Job,
         headers(("location" = String, description = "The job's URL"))),
        (status = 404, description = "No such definition readable by the caller", body = schemas::Problem, content_type = "application/problem+json"),
        (status = 422, description = "Validation Error", body = schemas::Problem, content_type = "application/problem+json"),
    ),
    security(("CustomHTTPBearer" = [])),
)]
async fn execute_definition(
    State(state): State<AppState>,
    p: Principal,
    ApiPath(id): ApiPath<String>,
    ApiQuery(job): ApiQuery<AsyncQuery>,
    ApiJson(body): ApiJson<ExecutionRequest>,
) -> Result<Response, ApiError> {
    p.require("workflow:execute")?;
    if body.definition_id.as_deref().is_some_and(|d| d != id) {
        return Err(ApiError::unprocessable(
            "`definition_id` in the body differs from the one in the path",
        ));
    }
    let record = readable_definition(&state, &p, &id).await?;
    let prepared = state
        .prepared_definitions()
        .prepare(state.engine(), &record)?;
    let def = prepared.definition();
    let input = Value::Object(body.input_data.unwrap_or_default());
    // The id is also kept in `params`: the column is cleared when the definition is deleted,
    // and the contract wants `definition_id` to stay a string.
    let meta = ExecutionMeta::new(p.id(), ExecutionKind::Definition)
        .definition(&record.id)
        .params(json!({"definition_id": record.id}));
    let submission = || Submission::new(record.name.clone(), def, input.clone(), meta.clone());
    if let Some(accepted) = enqueue_if_async(&state, &p, &job, submission).await? {
        return Ok(accepted);
    }
    let execution = run_recorded(&state, &prepared, input, meta).await?;
    Ok(ok(execution_json(&execution)))
}

#[derive(Debug, Deserialize)]
struct CustomQuery {
    message: Option<String>,
    #[allow(dead_code)]
    entry_point: Option<String>,
    provider: Option<String>,
    model: Option<String>,
    conversation_id: Option<String>,
}

#[derive(Debug, Deserialize)]
struct CustomBody {
    nodes: Vec<Value>,
    edges: Vec<Value>,
}

#[utoipa::path(
    post,
    path = "/api/v1/workflows/definitions/custom/execute",
    operation_id = "execute_custom_workflow_api_v1_workflows_definitions_custom_execute_post",
    tag = "Workflows",
    params(
        ("message" = String, Query, description = "The user message"),
        ("entry_point" = Option<String>, Query, description = "Accepted and ignored (the graph's start node is the entry)"),
        ("provider" = Option<String>, Query, description = "Model provider recorded with the execution"),
        ("model" = Option<String>, Query, description = "Model recorded with the execution"),
        ("conversation_id" = Option<String>, Query, description = "A conversation of the caller"),
        AsyncQuery,
    ),
    request_body = schemas::CustomWorkflowBody,
    responses(
        (status = 200, description = "Successful Response", body = schemas::CustomWorkflowExecutionResponse),
        (status = 202, description = "With `async=true`: the run, queued as a job (`Location`: the job's URL; `execution_id`: the execution it will run)", body = schemas::Job,
         headers(("location" = String, description = "The job's URL"))),
        (status = 404, description = "No such conversation of the caller", body = schemas::Problem, content_type = "application/problem+json"),
        (status = 422, description = "Validation Error", body = schemas::Problem, content_type = "application/problem+json"),
    ),
    security(("CustomHTTPBearer" = [])),
)]
async fn execute_custom(
    State(state): State<AppState>,
    p: Principal,
    ApiQuery(query): ApiQuery<CustomQuery>,
    ApiQuery(job): ApiQuery<AsyncQuery>,
    ApiJson(body): ApiJson<CustomBody>,
) -> Result<Response, ApiError> {
    p.require("workflow:execute")?;
    let (nodes, edges) = normalize_graph(&body.nodes, &body.edges)?;
    let def = checked_definition(&nodes, &edges)?;
    let mut input = Map::new();
    if let Some(message) = &query.message {
        input.insert("message".into(), json!(message));
    }
    let mut meta = ExecutionMeta::new(p.id(), ExecutionKind::Adhoc).params(json!({
        "provider": query.provider,
        "model": query.model,
    }));
    if let Some(conversation) = &query.conversation_id {
        let visible = state
            .store()
            .get_conversation(conversation)
            .await?
            .is_some_and(|c| c.user_id == p.id());
        if !visible {
            return Err(ApiError::not_found(format!(
                "no conversation `{conversation}`"
            )));
        }
        meta = meta.conversation(conversation);
    }
    let input = Value::Object(input);
    let submission = || Submission::new("custom workflow", &def, input.clone(), meta.clone());
    if let Some(accepted) = enqueue_if_async(&state, &p, &job, submission).await? {
        return Ok(accepted);
    }
    let prepared = state.engine().prepare(&def)?;
    let execution = run_recorded(&state, &prepared, input, meta).await?;
    let mut doc = execution_json(&execution);
    doc["execution_id"] = json!(execution.id);
    doc["response"] = json!(execution.response);
    Ok(ok(doc))
}

#[derive(Debug, Deserialize)]
struct ExecutionsQuery {
    #[serde(default = "twenty")]
    limit: u32,
    #[serde(default)]
    offset: u64,
}

fn twenty() -> u32 {
    20
}

#[utoipa::path(
    get,
    path = "/api/v1/workflows/executions",
    operation_id = "list_all_workflow_executions_api_v1_workflows_executions_get",
    tag = "Workflows",
    params(
        ("limit" = Option<i64>, Query, description = "Number of results per page (default 20)"),
        ("offset" = Option<i64>, Query, description = "Number of results to skip (default 0)"),
    ),
    responses(
        (status = 200, description = "Successful Response", body = schemas::WorkflowExecutionsPage),
        (status = 422, description = "Validation Error", body = schemas::Problem, content_type = "application/problem+json"),
    ),
    security(("CustomHTTPBearer" = [])),
)]
async fn list_executions(
    State(state): State<AppState>,
    p: Principal,
    ApiQuery(query): ApiQuery<ExecutionsQuery>,
) -> Result<Response, ApiError> {
    p.require("workflow:read")?;
    check_limit(query.limit, 1000)?;
    let filter = ExecutionFilter {
        owner_id: (!p.is_admin()).then(|| p.id().to_owned()),
        ..ExecutionFilter::default()
    };
    let records = state
        .store()
        .list_executions(&filter, Page::new(query.limit, query.offset))
        .await?;
    let executions: Vec<Value> = records.iter().map(execution_json).collect();
    Ok(ok(json!({
        "executions": executions,
        "total_count": executions.len(),
        "limit": query.limit,
        "offset": query.offset,
    })))
}

#[utoipa::path(
    get,
    path = "/api/v1/workflows/definitions/{workflow_id}/executions",
    operation_id = "list_workflow_executions_api_v1_workflows_definitions__workflow_id__executions_get",
    tag = "Workflows",
    params(
        ("workflow_id" = String, Path, description = "Workflow ID"),
    ),
    responses(
        (status = 200, description = "Successful Response", body = Vec<schemas::WorkflowExecutionResponse>),
        (status = 404, description = "No such definition readable by the caller", body = schemas::Problem, content_type = "application/problem+json"),
        (status = 422, description = "Validation Error", body = schemas::Problem, content_type = "application/problem+json"),
    ),
    security(("CustomHTTPBearer" = [])),
)]
async fn list_definition_executions(
    State(state): State<AppState>,
    p: Principal,
    ApiPath(id): ApiPath<String>,
) -> Result<Response, ApiError> {
    p.require("workflow:read")?;
    readable_definition(&state, &p, &id).await?;
    let filter = ExecutionFilter {
        owner_id: (!p.is_admin()).then(|| p.id().to_owned()),
        definition_id: Some(id),
        ..ExecutionFilter::default()
    };
    let records = state
        .store()
        .list_executions(&filter, Page::new(1000, 0))
        .await?;
    Ok(ok(Value::Array(
        records.iter().map(execution_json).collect(),
    )))
}

/// An execution of the caller (any for admins) under the given workflow id (a definition or
/// a template id; executions of deleted definitions stay reachable).
async fn readable_execution(
    state: &AppState,
    p: &Principal,
    workflow_id: &str,
    execution_id: &str,
) -> Result<ExecutionRecord, ApiError> {
    state
        .store()
        .get_execution(execution_id)
        .await?
        .filter(|e| p.is_admin() || e.owner_id == p.id())
        .filter(|e| {
            let id = self::workflow_id(e);
            id == workflow_id || id.is_empty()
        })
        .ok_or_else(|| {
            ApiError::not_found(format!("no execution `{execution_id}` of `{workflow_id}`"))
        })
}

#[utoipa::path(
    get,
    path = "/api/v1/workflows/definitions/{workflow_id}/executions/{execution_id}",
    operation_id = "get_workflow_execution_details_api_v1_workflows_definitions__workflow_id__executions__execution_id__get",
    tag = "Workflows",
    params(
        ("workflow_id" = String, Path, description = "Workflow ID"),
        ("execution_id" = String, Path, description = "Execution ID"),
    ),
    responses(
        (status = 200, description = "Successful Response", body = schemas::DetailedWorkflowExecutionResponse),
        (status = 404, description = "No such execution of the caller under this workflow", body = schemas::Problem, content_type = "application/problem+json"),
        (status = 422, description = "Validation Error", body = schemas::Problem, content_type = "application/problem+json"),
    ),
    security(("CustomHTTPBearer" = [])),
)]
async fn get_execution(
    State(state): State<AppState>,
    p: Principal,
    ApiPath((workflow_id, execution_id)): ApiPath<(String, String)>,
) -> Result<Response, ApiError> {
    p.require("workflow:read")?;
    let record = readable_execution(&state, &p, &workflow_id, &execution_id).await?;
    let events = state.store().list_events(&record.id, 0, 10_000).await?;
    let logs: Vec<Value> = events
        .iter()
        .filter(|e| e.event_type != "token")
        .map(log_entry)
        .collect();
    let mut doc = execution_json(&record);
    doc["logs"] = Value::Array(logs);
    doc["debug_details"] = Value::Null;
    Ok(ok(doc))
}

#[derive(Debug, Deserialize)]
struct LogsQuery {
    log_level: Option<String>,
    #[serde(default = "thousand")]
    limit: u32,
}

fn thousand() -> u32 {
    1000
}

#[utoipa::path(
    get,
    path = "/api/v1/workflows/definitions/{workflow_id}/executions/{execution_id}/logs",
    operation_id = "get_workflow_execution_logs_api_v1_workflows_definitions__workflow_id__executions__execution_id__logs_get",
    tag = "Workflows",
    params(
        ("workflow_id" = String, Path, description = "Workflow ID"),
        ("execution_id" = String, Path, description = "Execution ID"),
        ("log_level" = Option<String>, Query, description = "Only entries of this level: debug, info, warning or error (default: every level but the tokens)"),
        ("limit" = Option<i64>, Query, description = "Number of results per page (default 1000)"),
    ),
    responses(
        (status = 200, description = "Successful Response", body = Vec<schemas::WorkflowExecutionLogEntry>),
        (status = 404, description = "No such execution of the caller under this workflow", body = schemas::Problem, content_type = "application/problem+json"),
        (status = 422, description = "Validation Error", body = schemas::Problem, content_type = "application/problem+json"),
    ),
    security(("CustomHTTPBearer" = [])),
)]
async fn execution_logs(
    State(state): State<AppState>,
    p: Principal,
    ApiPath((workflow_id, execution_id)): ApiPath<(String, String)>,
    ApiQuery(query): ApiQuery<LogsQuery>,
) -> Result<Response, ApiError> {
    p.require("workflow:read")?;
    check_limit(query.limit, 10_000)?;
    let level = query.log_level.map(|l| l.to_ascii_lowercase());
    if let Some(l) = &level
        && !["debug", "info", "warning", "error"].contains(&l.as_str())
    {
        return Err(ApiError::unprocessable(
            "`log_level` must be one of debug, info, warning, error",
        ));
    }
    let record = readable_execution(&state, &p, &workflow_id, &execution_id).await?;
    let events = state.store().list_events(&record.id, 0, 10_000).await?;
    let logs: Vec<Value> = events
        .iter()
        .filter(|e| match &level {
            Some(l) => log_level(&e.event_type) == l,
            None => e.event_type != "token",
        })
        .take(query.limit as usize)
        .map(log_entry)
        .collect();
    Ok(ok(Value::Array(logs)))
}

// ---------------------------------------------------------------------------------------------
// Templates
// ---------------------------------------------------------------------------------------------

/// A template: stored, or built in (id = its name).
pub(super) struct Template {
    pub(super) id: String,
    pub(super) owner_id: Option<String>,
    pub(super) spec: TemplateSpec,
    pub(super) record: Option<TemplateRecord>,
}

impl Template {
    /// Whether the template is stored (not only built into the code).
    pub(super) fn is_stored(&self) -> bool {
        self.record.is_some()
    }

    fn from_record(record: TemplateRecord) -> Result<Template, ApiError> {
        // The record's columns win over the spec's fields (templates stored by the core
        // lifecycle keep those fields in the columns only).
        let mut spec = chatter_core::templates::spec_of(&record)?;
        spec.is_public = record.is_public;
        spec.is_builtin = record.is_builtin;
        Ok(Template {
            id: record.id.clone(),
            owner_id: record.owner_id.clone(),
            spec,
            record: Some(record),
        })
    }

    fn json(&self, usage: Option<&chatter_core::store::TemplateAnalytics>) -> Value {
        let spec = &self.spec;
        let success_rate = usage
            .filter(|u| u.usage_count > 0)
            .map(|u| u.success_count as f64 / u.usage_count as f64);
        json!({
            "name": spec.name,
            "description": spec.description,
            "category": spec.category.as_str(),
            "default_params": spec.default_params,
            "required_tools": spec.required_tools,
            "required_retrievers": spec.required_retrievers,
            "tags": spec.tags,
            "is_public": spec.is_public,
            "id": self.id,
            "owner_id": self.owner_id.clone().unwrap_or_else(|| "system".into()),
            "base_template_id": spec.base_template_id,
            "is_builtin": spec.is_builtin,
            "version": self.record.as_ref().map_or(i64::from(spec.version), |r| r.version),
            "is_latest": true,
            "rating": null,
            "rating_count": 0,
            "usage_count": usage.map_or(0, |u| u.usage_count),
            "success_rate": success_rate,
            "config_hash": spec.config_hash(),
            "estimated_complexity": null,
        })
    }
}

fn builtin(id: &str) -> Option<Template> {
    builtin_templates()
        .into_iter()
        .find(|t| t.name == id)
        .map(|spec| Template {
            id: spec.name.clone(),
            owner_id: None,
            spec,
            record: None,
        })
}

pub(super) async fn readable_template(
    state: &AppState,
    p: &Principal,
    id: &str,
) -> Result<Template, ApiError> {
    p.require("template:read")?;
    if let Some(record) = state.store().get_template(id).await? {
        if record.is_builtin
            || can_read(p, record.owner_id.as_deref(), record.is_public)
            || !shared_roles(state, p, "template", id).await?.is_empty()
        {
            return Template::from_record(record);
        }
    } else if let Some(t) = builtin(id) {
        return Ok(t);
    }
    Err(ApiError::not_found(format!("no workflow template `{id}`")))
}

async fn writable_template(
    state: &AppState,
    p: &Principal,
    id: &str,
    change: Change,
) -> Result<TemplateRecord, ApiError> {
    let template = readable_template(state, p, id).await?;
    match template.record {
        Some(record) if !record.is_builtin => {
            let allowed = can_write(p, record.owner_id.as_deref())
                || (change == Change::Update
                    && super::workspaces::has_role(
                        &shared_roles(state, p, "template", id).await?,
                        "editor",
                    ));
            if allowed {
                return Ok(record);
            }
            Err(ApiError::forbidden(format!(
                "workflow template `{id}` belongs to another user"
            )))
        }
        _ => Err(ApiError::forbidden(format!(
            "workflow template `{id}` is built in"
        ))),
    }
}

/// A page of the templates the caller may read: own and public ones (any for admins), then on
/// the first page those shared with them and the built-ins not stored.
pub(super) async fn readable_templates(
    state: &AppState,
    p: &Principal,
    page: Page,
) -> Result<Vec<Template>, ApiError> {
    let filter = TemplateFilter {
        owner_id: (!p.is_admin()).then(|| p.id().to_owned()),
        include_public: true,
        category: None,
    };
    let mut records = state.store().list_templates(&filter, page).await?;
    if page.offset == 0 && !p.is_admin() {
        let store = state.store();
        let shared = store.shared_resource_ids(p.id(), "template").await?;
        append_shared(
            &mut records,
            shared,
            |r| &r.id,
            |id| async move { store.get_template(&id).await },
        )
        .await?;
    }
    let mut templates = Vec::new();
    let mut names = std::collections::HashSet::new();
    for record in records {
        let template = Template::from_record(record)?;
        names.insert(template.spec.name.clone());
        templates.push(template);
    }
    if page.offset == 0 {
        for spec in builtin_templates() {
            if names.contains(&spec.name) {
                continue;
            }
            templates.push(Template {
                id: spec.name.clone(),
                owner_id: None,
                spec,
                record: None,
            });
        }
    }
    Ok(templates)
}

#[utoipa::path(
    get,
    path = "/api/v1/workflows/templates",
    operation_id = "list_workflow_templates_api_v1_workflows_templates_get",
    tag = "Workflows",
    params(
        ("limit" = Option<i64>, Query, description = "Number of results per page (default 100)"),
        ("offset" = Option<i64>, Query, description = "Number of results to skip (default 0)"),
    ),
    responses(
        (status = 200, description = "Successful Response", body = schemas::WorkflowTemplatesResponse),
    ),
    security(("CustomHTTPBearer" = [])),
)]
async fn list_templates(
    State(state): State<AppState>,
    p: Principal,
    ApiQuery(query): ApiQuery<PageQuery>,
) -> Result<Response, ApiError> {
    p.require("template:read")?;
    check_limit(query.limit, 1000)?;
    let mut templates = Vec::new();
    for t in readable_templates(&state, &p, Page::new(query.limit, query.offset)).await? {
        let usage = state.store().template_analytics(&t.id).await?;
        templates.push(t.json(usage.as_ref()));
    }
    Ok(ok(
        json!({"total_count": templates.len(), "templates": templates}),
    ))
}

#[derive(Debug, Deserialize)]
struct TemplateCreate {
    name: String,
    description: String,
    #[serde(default = "custom")]
    category: String,
    #[serde(default)]
    default_params: Map<String, Value>,
    required_tools: Option<Vec<String>>,
    required_retrievers: Option<Vec<String>>,
    tags: Option<Vec<String>>,
    #[serde(default)]
    is_public: bool,
    workflow_definition_id: Option<String>,
    base_template_id: Option<String>,
}

fn custom() -> String {
    "custom".into()
}

#[utoipa::path(
    post,
    path = "/api/v1/workflows/templates",
    operation_id = "create_workflow_template_api_v1_workflows_templates_post",
    tag = "Workflows",
    request_body = schemas::WorkflowTemplateCreate,
    responses(
        (status = 200, description = "Successful Response", body = schemas::WorkflowTemplateResponse),
        (status = 422, description = "Validation Error", body = schemas::Problem, content_type = "application/problem+json"),
    ),
    security(("CustomHTTPBearer" = [])),
)]
async fn create_template(
    State(state): State<AppState>,
    p: Principal,
    ApiJson(body): ApiJson<TemplateCreate>,
) -> Result<Response, ApiError> {
    p.require("template:write")?;
    check_name(&body.name)?;
    if body.is_public {
        p.require("template:publish")?;
    }
    let mut spec = json!({
        "name": body.name,
        "description": body.description,
        "category": body.category,
        "default_params": body.default_params,
        "required_tools": body.required_tools,
        "required_retrievers": body.required_retrievers,
        "tags": body.tags,
        "is_public": body.is_public,
        "base_template_id": body.base_template_id,
    });
    if let Some(definition_id) = &body.workflow_definition_id {
        let record = readable_definition(&state, &p, definition_id).await?;
        spec["generator"] = json!({"kind": "graph", "graph": {
            "nodes": record.definition.get("nodes").cloned().unwrap_or_else(|| json!([])),
            "edges": record.definition.get("edges").cloned().unwrap_or_else(|| json!([])),
        }});
    }
    store_new_template(&state, &p, spec).await
}

async fn store_new_template(
    state: &AppState,
    p: &Principal,
    spec_value: Value,
) -> Result<Response, ApiError> {
    let spec = TemplateSpec::from_value(&spec_value)?;
    if spec.is_public {
        p.require("template:publish")?;
    }
    let record =
        chatter_core::templates::create_template(state.store().as_ref(), p.id(), &spec).await?;
    state
        .audit(
            Some(p.id()),
            "template.create",
            ("workflow_template", Some(&record.id)),
            "success",
            json!({"name": record.name}),
        )
        .await;
    Ok(ok(Template::from_record(record)?.json(None)))
}

#[utoipa::path(
    put,
    path = "/api/v1/workflows/templates/{template_id}",
    operation_id = "update_workflow_template_api_v1_workflows_templates__template_id__put",
    tag = "Workflows",
    params(
        ("template_id" = String, Path, description = "Template ID"),
    ),
    request_body = schemas::WorkflowTemplateUpdate,
    responses(
        (status = 200, description = "Successful Response", body = schemas::WorkflowTemplateResponse),
        (status = 403, description = "Built in, or not the caller's", body = schemas::Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such template readable by the caller", body = schemas::Problem, content_type = "application/problem+json"),
        (status = 422, description = "Validation Error", body = schemas::Problem, content_type = "application/problem+json"),
    ),
    security(("CustomHTTPBearer" = [])),
)]
async fn update_template(
    State(state): State<AppState>,
    p: Principal,
    ApiPath(id): ApiPath<String>,
    ApiJson(body): ApiJson<Map<String, Value>>,
) -> Result<Response, ApiError> {
    p.require("template:write")?;
    let record = writable_template(&state, &p, &id, Change::Update).await?;
    const FIELDS: &[&str] = &[
        "name",
        "description",
        "category",
        "default_params",
        "required_tools",
        "required_retrievers",
        "tags",
        "is_public",
    ];
    // The stored spec keeps some fields in the record's columns: start from the whole spec.
    let mut spec = serde_json::to_value(chatter_core::templates::spec_of(&record)?)
        .map_err(|e| ApiError::internal(&e))?;
    for (key, value) in &body {
        if !FIELDS.contains(&key.as_str()) {
            return Err(ApiError::unprocessable(format!("unknown field `{key}`")));
        }
        if !value.is_null() {
            spec[key.as_str()] = value.clone();
        }
    }
    let parsed = TemplateSpec::from_value(&spec)?;
    if parsed.is_public && !record.is_public {
        p.require("template:publish")?;
    }
    // The server's access rules (admins, workspace editors) were checked above; the core
    // lifecycle writes the new version (the previous one stays in the history) as the owner.
    let owner = record.owner_id.clone().unwrap_or_default();
    let updated = chatter_core::templates::update_template(
        state.store().as_ref(),
        &owner,
        &id,
        &parsed,
        None,
    )
    .await?;
    state
        .audit(
            Some(p.id()),
            "template.update",
            ("workflow_template", Some(&id)),
            "success",
            json!({"version": updated.version}),
        )
        .await;
    let usage = state.store().template_analytics(&id).await?;
    Ok(ok(Template::from_record(updated)?.json(usage.as_ref())))
}

#[utoipa::path(
    delete,
    path = "/api/v1/workflows/templates/{template_id}",
    operation_id = "delete_workflow_template_api_v1_workflows_templates__template_id__delete",
    tag = "Workflows",
    params(
        ("template_id" = String, Path, description = "Template ID"),
    ),
    responses(
        (status = 200, description = "Successful Response", body = schemas::WorkflowDeleteResponse),
        (status = 403, description = "Built in, or not the caller's", body = schemas::Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such template readable by the caller", body = schemas::Problem, content_type = "application/problem+json"),
        (status = 422, description = "Validation Error", body = schemas::Problem, content_type = "application/problem+json"),
    ),
    security(("CustomHTTPBearer" = [])),
)]
async fn delete_template(
    State(state): State<AppState>,
    p: Principal,
    ApiPath(id): ApiPath<String>,
) -> Result<Response, ApiError> {
    p.require("template:write")?;
    let record = writable_template(&state, &p, &id, Change::Delete).await?;
    let owner = record.owner_id.unwrap_or_default();
    chatter_core::templates::delete_template(state.store().as_ref(), &owner, &id).await?;
    state
        .audit(
            Some(p.id()),
            "template.delete",
            ("workflow_template", Some(&id)),
            "success",
            json!({}),
        )
        .await;
    Ok(ok(
        json!({"message": "Workflow template deleted successfully", "workflow_id": id}),
    ))
}

#[utoipa::path(
    get,
    path = "/api/v1/workflows/templates/{template_id}/export",
    operation_id = "export_workflow_template_api_v1_workflows_templates__template_id__export_get",
    tag = "Workflows",
    params(
        ("template_id" = String, Path, description = "Template ID"),
    ),
    responses(
        (status = 200, description = "Successful Response", body = schemas::WorkflowTemplateExportResponse),
        (status = 404, description = "No such template readable by the caller", body = schemas::Problem, content_type = "application/problem+json"),
        (status = 422, description = "Validation Error", body = schemas::Problem, content_type = "application/problem+json"),
    ),
    security(("CustomHTTPBearer" = [])),
)]
async fn export_template(
    State(state): State<AppState>,
    p: Principal,
    ApiPath(id): ApiPath<String>,
) -> Result<Response, ApiError> {
    let template = readable_template(&state, &p, &id).await?;
    let spec = serde_json::to_value(&template.spec).map_err(|e| ApiError::internal(&e))?;
    Ok(ok(json!({
        "template": spec,
        "export_format": "json",
        "exported_at": rfc3339_ms(super::auth::now_ms()),
    })))
}

#[utoipa::path(
    get,
    path = "/api/v1/workflows/templates/{template_id}/load",
    operation_id = "load_workflow_template_api_v1_workflows_templates__template_id__load_get",
    tag = "Workflows",
    params(
        ("template_id" = String, Path, description = "Template ID"),
    ),
    responses(
        (status = 200, description = "Successful Response", body = schemas::WorkflowTemplateResponse),
        (status = 404, description = "No such template readable by the caller", body = schemas::Problem, content_type = "application/problem+json"),
        (status = 422, description = "Validation Error", body = schemas::Problem, content_type = "application/problem+json"),
    ),
    security(("CustomHTTPBearer" = [])),
)]
async fn load_template(
    State(state): State<AppState>,
    p: Principal,
    ApiPath(id): ApiPath<String>,
) -> Result<Response, ApiError> {
    let template = readable_template(&state, &p, &id).await?;
    let usage = state.store().template_analytics(&template.id).await?;
    Ok(ok(template.json(usage.as_ref())))
}

#[derive(Debug, Deserialize)]
struct TemplateImport {
    template: Map<String, Value>,
    override_name: Option<String>,
    #[serde(default)]
    #[allow(dead_code)]
    merge_with_existing: bool,
}

#[utoipa::path(
    post,
    path = "/api/v1/workflows/templates/import",
    operation_id = "import_workflow_template_api_v1_workflows_templates_import_post",
    tag = "Workflows",
    request_body = schemas::WorkflowTemplateImportRequest,
    responses(
        (status = 200, description = "Successful Response", body = schemas::WorkflowTemplateResponse),
        (status = 422, description = "Validation Error", body = schemas::Problem, content_type = "application/problem+json"),
    ),
    security(("CustomHTTPBearer" = [])),
)]
async fn import_template(
    State(state): State<AppState>,
    p: Principal,
    ApiJson(body): ApiJson<TemplateImport>,
) -> Result<Response, ApiError> {
    p.require("template:write")?;
    let mut spec = Value::Object(body.template);
    if let Some(name) = body.override_name {
        check_name(&name)?;
        spec["name"] = json!(name);
    }
    // An import never becomes built in.
    spec["is_builtin"] = json!(false);
    store_new_template(&state, &p, spec).await
}

#[derive(Debug, Deserialize)]
struct TemplateValidation {
    template: Value,
}

#[utoipa::path(
    post,
    path = "/api/v1/workflows/templates/validate",
    operation_id = "validate_workflow_template_api_v1_workflows_templates_validate_post",
    tag = "Workflows",
    request_body = schemas::WorkflowTemplateValidationRequest,
    responses(
        (status = 200, description = "Successful Response", body = schemas::WorkflowTemplateValidationResponse),
        (status = 422, description = "Validation Error", body = schemas::Problem, content_type = "application/problem+json"),
    ),
    security(("CustomHTTPBearer" = [])),
)]
async fn validate_template(
    p: Principal,
    ApiJson(body): ApiJson<TemplateValidation>,
) -> Result<Response, ApiError> {
    p.require("template:read")?;
    let doc = match TemplateSpec::from_value(&body.template) {
        Err(e) => json!({
            "is_valid": false,
            "errors": [{"loc": ["template"], "msg": e.to_string(), "type": "template_invalid"}],
            "warnings": [],
            "template_info": null,
        }),
        Ok(spec) => {
            let generated = spec
                .merge_params(&Value::Null)
                .and_then(|params| spec.generate(&params));
            match generated {
                Err(e) => json!({
                    "is_valid": false,
                    "errors": [{"loc": ["template"], "msg": e.to_string(), "type": "template_invalid"}],
                    "warnings": [],
                    "template_info": {"name": spec.name},
                }),
                Ok(def) => {
                    let report = validator().validate(&def).to_contract();
                    json!({
                        "is_valid": report.is_valid,
                        "errors": report.errors,
                        "warnings": report.warnings,
                        "template_info": {
                            "name": spec.name,
                            "category": spec.category.as_str(),
                            "node_count": def.nodes.len(),
                            "edge_count": def.edges.len(),
                            "config_hash": spec.config_hash(),
                        },
                    })
                }
            }
        }
    };
    Ok(ok(doc))
}

#[derive(Debug, Deserialize)]
struct TemplateExecution {
    input_data: Option<Map<String, Value>>,
    #[serde(default)]
    #[allow(dead_code)]
    debug_mode: bool,
}

/// Splits `input_data` into the template parameters (`params`, or every key but `message`
/// and `variables`) and the run input.
pub(super) fn template_input(input: Map<String, Value>) -> (Value, Value) {
    let mut run = Map::new();
    let mut params = Map::new();
    for (key, value) in input {
        match key.as_str() {
            "message" | "variables" => {
                run.insert(key, value);
            }
            "params" => {
                if let Value::Object(p) = value {
                    params.extend(p);
                }
            }
            _ => {
                params.insert(key, value);
            }
        }
    }
    (Value::Object(params), Value::Object(run))
}

/// The definition a template generates for the given parameters. A template naming a
/// provider this server does not have runs on the server's default one (e.g. the offline
/// `scripted` model), unless the caller chose a provider.
pub(super) fn template_definition(
    state: &AppState,
    spec: &TemplateSpec,
    mut params: Value,
) -> Result<(WorkflowDefinition, Map<String, Value>), ApiError> {
    let named = spec.default_params.get("provider").and_then(Value::as_str);
    if params.get("provider").is_none()
        && named.is_some_and(|n| !state.model_names().iter().any(|m| m == n))
    {
        if params.is_null() {
            params = json!({});
        }
        if let Some(map) = params.as_object_mut() {
            map.insert("provider".into(), json!(super::default_model_name(state)));
        }
    }
    let params = spec.merge_params(&params)?;
    let def = spec.generate(&params)?;
    Ok((def, params))
}

async fn run_template(
    state: &AppState,
    p: &Principal,
    template: &Template,
    input: Map<String, Value>,
    template_id: Option<&str>,
    job: &AsyncQuery,
) -> Result<Response, ApiError> {
    let (params, run_input) = template_input(input);
    let (def, params) = template_definition(state, &template.spec, params)?;
    let mut recorded = params.clone();
    if let Some(id) = template_id {
        recorded.insert("template_id".into(), json!(id));
    }
    let mut meta =
        ExecutionMeta::new(p.id(), ExecutionKind::Template).params(Value::Object(recorded));
    // Only stored templates can be referenced by the column; built-ins served from the
    // code are named in `params`.
    if let (Some(id), Some(_)) = (template_id, &template.record) {
        meta = meta.template(id);
    }
    let name = template.spec.name.clone();
    let submission = || Submission::new(name, &def, run_input.clone(), meta.clone());
    if let Some(accepted) = enqueue_if_async(state, p, job, submission).await? {
        return Ok(accepted);
    }
    let prepared = state.engine().prepare(&def)?;
    let execution = run_recorded(state, &prepared, run_input, meta).await?;
    Ok(ok(execution_json(&execution)))
}

#[utoipa::path(
    post,
    path = "/api/v1/workflows/templates/{template_id}/execute",
    operation_id = "execute_workflow_template_api_v1_workflows_templates__template_id__execute_post",
    tag = "Workflows",
    params(
        ("template_id" = String, Path, description = "Template ID"),
        AsyncQuery,
    ),
    request_body = schemas::WorkflowTemplateExecutionRequest,
    responses(
        (status = 200, description = "Successful Response", body = schemas::WorkflowExecutionResponse),
        (status = 202, description = "With `async=true`: the run, queued as a job (`Location`: the job's URL; `execution_id`: the execution it will run)", body = schemas::Job,
         headers(("location" = String, description = "The job's URL"))),
        (status = 404, description = "No such template readable by the caller", body = schemas::Problem, content_type = "application/problem+json"),
        (status = 422, description = "Validation Error", body = schemas::Problem, content_type = "application/problem+json"),
    ),
    security(("CustomHTTPBearer" = [])),
)]
async fn execute_template(
    State(state): State<AppState>,
    p: Principal,
    ApiPath(id): ApiPath<String>,
    ApiQuery(job): ApiQuery<AsyncQuery>,
    ApiJson(body): ApiJson<TemplateExecution>,
) -> Result<Response, ApiError> {
    p.require("workflow:execute")?;
    let template = readable_template(&state, &p, &id).await?;
    let id = template.id.clone();
    run_template(
        &state,
        &p,
        &template,
        body.input_data.unwrap_or_default(),
        Some(&id),
        &job,
    )
    .await
}

#[derive(Debug, Deserialize)]
struct InlineTemplateExecution {
    template: Value,
    input_data: Option<Map<String, Value>>,
    #[serde(default)]
    #[allow(dead_code)]
    debug_mode: bool,
}

#[utoipa::path(
    post,
    path = "/api/v1/workflows/templates/execute",
    operation_id = "execute_temporary_workflow_template_api_v1_workflows_templates_execute_post",
    tag = "Workflows",
    params(AsyncQuery),
    request_body = schemas::WorkflowTemplateDirectExecutionRequest,
    responses(
        (status = 200, description = "Successful Response", body = schemas::WorkflowExecutionResponse),
        (status = 202, description = "With `async=true`: the run, queued as a job (`Location`: the job's URL; `execution_id`: the execution it will run)", body = schemas::Job,
         headers(("location" = String, description = "The job's URL"))),
        (status = 422, description = "Validation Error", body = schemas::Problem, content_type = "application/problem+json"),
    ),
    security(("CustomHTTPBearer" = [])),
)]
async fn execute_inline_template(
    State(state): State<AppState>,
    p: Principal,
    ApiQuery(job): ApiQuery<AsyncQuery>,
    ApiJson(body): ApiJson<InlineTemplateExecution>,
) -> Result<Response, ApiError> {
    p.require("workflow:execute")?;
    let spec = TemplateSpec::from_value(&body.template)?;
    let template = Template {
        id: String::new(),
        owner_id: Some(p.id().to_owned()),
        spec,
        record: None,
    };
    run_template(
        &state,
        &p,
        &template,
        body.input_data.unwrap_or_default(),
        None,
        &job,
    )
    .await
}

// ---------------------------------------------------------------------------------------------
// Node types, defaults, preferences
// ---------------------------------------------------------------------------------------------

#[utoipa::path(
    get,
    path = "/api/v1/workflows/node-types",
    operation_id = "get_supported_node_types_api_v1_workflows_node_types_get",
    tag = "Workflows",
    responses(
        (status = 200, description = "Successful Response", body = Vec<schemas::NodeTypeResponse>),
    ),
    security(("CustomHTTPBearer" = [])),
)]
async fn node_types(p: Principal) -> Result<Response, ApiError> {
    p.require("workflow:read")?;
    let types = NodeRegistry::builtin().node_types();
    Ok(ok(
        serde_json::to_value(types).map_err(|e| ApiError::internal(&e))?
    ))
}

#[utoipa::path(
    get,
    path = "/api/v1/workflows/node-types/modern",
    operation_id = "get_modern_supported_node_types_api_v1_workflows_node_types_modern_get",
    tag = "Workflows",
    responses(
        (status = 200, description = "`supported_types`, `type_details`, ... of the node registry", body = Object),
    ),
    security(("CustomHTTPBearer" = [])),
)]
async fn modern_node_types(p: Principal) -> Result<Response, ApiError> {
    p.require("workflow:read")?;
    Ok(ok(NodeRegistry::builtin().modern_node_types()))
}

/// Preference types written by `/memory/configure` and `/tools/configure`.
const MEMORY_PREFERENCE: &str = "workflow_memory";
const TOOLS_PREFERENCE: &str = "workflow_tools";

fn memory_defaults() -> Value {
    json!({"adaptive_mode": true, "base_window_size": 10, "max_window_size": 50, "summary_strategy": "intelligent"})
}

fn tools_defaults() -> Value {
    json!({"max_total_calls": 10, "max_consecutive_calls": 3, "recursion_strategy": "adaptive", "enable_recursion_detection": true})
}

#[derive(Debug, Deserialize)]
struct DefaultsQuery {
    node_type: Option<String>,
}

#[utoipa::path(
    get,
    path = "/api/v1/workflows/defaults",
    operation_id = "get_workflow_defaults_api_v1_workflows_defaults_get",
    tag = "Workflows",
    params(
        ("node_type" = Option<String>, Query, description = "Only this node kind's defaults"),
    ),
    responses(
        (status = 200, description = "Node config defaults, the caller's memory and tool settings, the model providers", body = Object),
        (status = 404, description = "Unknown node kind", body = schemas::Problem, content_type = "application/problem+json"),
        (status = 422, description = "Validation Error", body = schemas::Problem, content_type = "application/problem+json"),
    ),
    security(("CustomHTTPBearer" = [])),
)]
async fn defaults(
    State(state): State<AppState>,
    p: Principal,
    ApiQuery(query): ApiQuery<DefaultsQuery>,
) -> Result<Response, ApiError> {
    p.require("workflow:read")?;
    let registry = NodeRegistry::builtin();
    let store = state.store();
    let memory = store
        .get_preference(p.id(), MEMORY_PREFERENCE)
        .await?
        .map_or_else(memory_defaults, |r| r.value);
    let tools = store
        .get_preference(p.id(), TOOLS_PREFERENCE)
        .await?
        .map_or_else(tools_defaults, |r| r.value);
    let model = json!({
        "provider": super::default_model_name(&state),
        "available_providers": state.model_names(),
    });
    if let Some(kind) = query.node_type {
        let info = registry
            .get(&kind)
            .ok_or_else(|| ApiError::not_found(format!("unknown node type `{kind}`")))?;
        return Ok(ok(json!({
            "node_type": kind,
            "defaults": info.defaults(),
            "memory": memory,
            "tools": tools,
            "model": model,
        })));
    }
    let node_defaults: Map<String, Value> = registry
        .kinds()
        .map(|k| (k.kind.clone(), Value::Object(k.defaults())))
        .collect();
    Ok(ok(json!({
        "node_types": node_defaults,
        "memory": memory,
        "tools": tools,
        "model": model,
    })))
}

/// Saves validated settings as one of the caller's preferences.
async fn save_settings(
    state: &AppState,
    p: &Principal,
    preference: &str,
    config: Value,
    message: &str,
) -> Result<Response, ApiError> {
    let record = state
        .store()
        .upsert_preference(p.id(), preference, config.clone(), None)
        .await?;
    Ok(ok(json!({
        "message": message,
        "config": config,
        "version": record.version,
    })))
}

#[derive(Debug, Deserialize)]
struct MemoryQuery {
    #[serde(default = "yes")]
    adaptive_mode: bool,
    #[serde(default = "ten")]
    base_window_size: i64,
    #[serde(default = "fifty")]
    max_window_size: i64,
    #[serde(default = "intelligent")]
    summary_strategy: String,
}

fn ten() -> i64 {
    10
}
fn fifty() -> i64 {
    50
}
fn intelligent() -> String {
    "intelligent".into()
}

#[utoipa::path(
    post,
    path = "/api/v1/workflows/memory/configure",
    operation_id = "configure_memory_settings_api_v1_workflows_memory_configure_post",
    tag = "Workflows",
    params(
        ("adaptive_mode" = Option<bool>, Query, description = "Default true"),
        ("base_window_size" = Option<i64>, Query, description = "1 to 1000, default 10"),
        ("max_window_size" = Option<i64>, Query, description = "1 to 1000, default 50"),
        ("summary_strategy" = Option<String>, Query, description = "intelligent (default), simple, truncate or none"),
    ),
    responses(
        (status = 200, description = "Successful Response", body = schemas::SettingsResponse),
        (status = 422, description = "Validation Error", body = schemas::Problem, content_type = "application/problem+json"),
    ),
    security(("CustomHTTPBearer" = [])),
)]
async fn configure_memory(
    State(state): State<AppState>,
    p: Principal,
    ApiQuery(q): ApiQuery<MemoryQuery>,
) -> Result<Response, ApiError> {
    p.require("workflow:write")?;
    check_range("base_window_size", q.base_window_size, 1000)?;
    check_range("max_window_size", q.max_window_size, 1000)?;
    if q.base_window_size > q.max_window_size {
        return Err(ApiError::unprocessable(
            "`base_window_size` must not exceed `max_window_size`",
        ));
    }
    if !["intelligent", "simple", "truncate", "none"].contains(&q.summary_strategy.as_str()) {
        return Err(ApiError::unprocessable(
            "`summary_strategy` must be one of intelligent, simple, truncate, none",
        ));
    }
    let config = json!({
        "adaptive_mode": q.adaptive_mode,
        "base_window_size": q.base_window_size,
        "max_window_size": q.max_window_size,
        "summary_strategy": q.summary_strategy,
    });
    save_settings(
        &state,
        &p,
        MEMORY_PREFERENCE,
        config,
        "Memory settings saved",
    )
    .await
}

#[derive(Debug, Deserialize)]
struct ToolsQuery {
    #[serde(default = "ten")]
    max_total_calls: i64,
    #[serde(default = "three")]
    max_consecutive_calls: i64,
    #[serde(default = "adaptive")]
    recursion_strategy: String,
    #[serde(default = "yes")]
    enable_recursion_detection: bool,
}

fn three() -> i64 {
    3
}
fn adaptive() -> String {
    "adaptive".into()
}

#[utoipa::path(
    post,
    path = "/api/v1/workflows/tools/configure",
    operation_id = "configure_tool_settings_api_v1_workflows_tools_configure_post",
    tag = "Workflows",
    params(
        ("max_total_calls" = Option<i64>, Query, description = "1 to 1000, default 10"),
        ("max_consecutive_calls" = Option<i64>, Query, description = "1 to 1000, default 3"),
        ("recursion_strategy" = Option<String>, Query, description = "adaptive (default), strict or lenient"),
        ("enable_recursion_detection" = Option<bool>, Query, description = "Default true"),
    ),
    responses(
        (status = 200, description = "Successful Response", body = schemas::SettingsResponse),
        (status = 422, description = "Validation Error", body = schemas::Problem, content_type = "application/problem+json"),
    ),
    security(("CustomHTTPBearer" = [])),
)]
async fn configure_tools(
    State(state): State<AppState>,
    p: Principal,
    ApiQuery(q): ApiQuery<ToolsQuery>,
) -> Result<Response, ApiError> {
    p.require("workflow:write")?;
    check_range("max_total_calls", q.max_total_calls, 1000)?;
    check_range("max_consecutive_calls", q.max_consecutive_calls, 1000)?;
    if q.max_consecutive_calls > q.max_total_calls {
        return Err(ApiError::unprocessable(
            "`max_consecutive_calls` must not exceed `max_total_calls`",
        ));
    }
    if !["adaptive", "strict", "lenient"].contains(&q.recursion_strategy.as_str()) {
        return Err(ApiError::unprocessable(
            "`recursion_strategy` must be one of adaptive, strict, lenient",
        ));
    }
    let config = json!({
        "max_total_calls": q.max_total_calls,
        "max_consecutive_calls": q.max_consecutive_calls,
        "recursion_strategy": q.recursion_strategy,
        "enable_recursion_detection": q.enable_recursion_detection,
    });
    save_settings(&state, &p, TOOLS_PREFERENCE, config, "Tool settings saved").await
}
