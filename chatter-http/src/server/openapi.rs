//! The OpenAPI 3.1 document of the server, generated from the code with `utoipa` and served at
//! `GET /openapi.json` (no authentication).
//!
//! Each handler carries a `#[utoipa::path(...)]` attribute (method, path, operationId, tag,
//! parameters, body and answers) right above its function; the request and answer types are in
//! [`super::schemas`]. [`ApiDoc`] lists every annotated handler: a new endpoint is documented
//! by annotating its handler and adding it to the `paths(...)` list below. The operations of
//! the old platform's contract keep its operationIds and component names, which
//! `chatter-http/tests/openapi_contract.rs` checks against the contract file.
//!
//! ```
//! let doc = chatter_http::server::openapi::document();
//! assert!(doc["paths"]["/api/v1/workflows/definitions"]["get"].is_object());
//! ```

use std::sync::LazyLock;

use axum::Router;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use utoipa::openapi::header::HeaderBuilder;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{ContentBuilder, Ref, RefOr, ResponseBuilder};
use utoipa::{Modify, OpenApi};

use super::AppState;
use super::schemas::Problem;

/// Name of the bearer security scheme (the old contract's).
pub const SECURITY_SCHEME: &str = "CustomHTTPBearer";

/// The document's definition: every annotated handler and the schemas they use.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "Chatter API",
        description = "Chatter's HTTP API: the v1 workflow contract of the old platform \
                       (same paths, operationIds and shapes) plus the native endpoints \
                       (executions, jobs, workspaces, API keys, administration, audit). Errors are \
                       `application/problem+json`.",
    ),
    paths(
        // Health
        super::health::healthz,
        super::health::readyz,
        super::health::live,
        openapi_json,
        // Authentication, API keys, administration, audit
        super::auth_routes::login,
        super::auth_routes::refresh,
        super::auth_routes::me,
        super::auth_routes::update_me,
        super::auth_routes::logout,
        super::auth_routes::create_key,
        super::auth_routes::list_keys,
        super::auth_routes::revoke_key,
        super::auth_routes::list_users,
        super::auth_routes::admin_create_user,
        super::auth_routes::admin_update_user,
        super::auth_routes::audit_logs,
        // The v1 workflow contract
        super::workflows::list_definitions,
        super::workflows::create_definition,
        super::workflows::definition_from_template,
        super::workflows::get_definition,
        super::workflows::update_definition,
        super::workflows::delete_definition,
        super::workflows::list_templates,
        super::workflows::create_template,
        super::workflows::update_template,
        super::workflows::delete_template,
        super::workflows::export_template,
        super::workflows::import_template,
        super::workflows::load_template,
        super::workflows::validate_template,
        super::workflows::execute_template,
        super::workflows::execute_inline_template,
        super::workflows::definition_analytics,
        super::workflows::execute_definition,
        super::workflows::validate_definition,
        super::workflows::node_types,
        super::workflows::list_executions,
        super::workflows::list_definition_executions,
        super::workflows::get_execution,
        super::workflows::execution_logs,
        super::chat::chat,
        super::chat::chat_streaming,
        super::workflows::execute_custom,
        super::workflows::modern_node_types,
        super::workflows::configure_memory,
        super::workflows::configure_tools,
        super::workflows::defaults,
        // Native execution endpoints
        super::executions::resume,
        super::executions::approve,
        super::executions::cancel,
        super::executions::steps,
        super::executions::fork,
        super::executions::events,
        // Jobs
        super::jobs::submit,
        super::jobs::submit_batch,
        super::jobs::list_jobs,
        super::jobs::get_job,
        super::jobs::cancel_post,
        super::jobs::cancel,
        super::jobs::stats,
        // Workspaces
        super::workspaces::create,
        super::workspaces::list,
        super::workspaces::show,
        super::workspaces::remove,
        super::workspaces::set_member,
        super::workspaces::remove_member,
        super::workspaces::share,
        super::workspaces::unshare,
        // Operations: metrics, the global events stream, the OpenAI-compatible API
        super::metrics::metrics,
        super::events::stream,
        super::openai::list_models,
        super::openai::get_model,
        super::openai::completions,
    ),
    components(schemas(Problem)),
    modifiers(&Conventions),
    tags(
        (name = "Health", description = "Liveness, readiness and this document"),
        (name = "Authentication", description = "Login, tokens, profile and API keys"),
        (name = "Workflows", description = "The v1 workflow contract"),
        (name = "Executions", description = "Resume, approve, cancel, steps, fork and events of executions"),
        (name = "Jobs", description = "The durable priority job queue: asynchronous executions, batches, cancellation and counts"),
        (name = "Workspaces", description = "Team workspaces sharing definitions and templates"),
        (name = "Admin", description = "User administration and the audit trail"),
        (name = "Events", description = "The global stream of workflow events"),
        (name = "OpenAI", description = "The OpenAI-compatible API: workflows as models"),
    )
)]
pub struct ApiDoc;

/// What every operation shares, added after the annotations: the bearer security scheme, the
/// request id headers (`x-correlation-id`, `x-request-id`) on every answer, a `default` answer
/// (any other status) that is a problem document, and on the rate-limited operations (all but
/// the probes and `/metrics`, see [`super::ratelimit`]) the `X-RateLimit-*` headers on every
/// answer and a `429` answer with `Retry-After`.
struct Conventions;

/// A header whose value is a string.
fn string_header(description: &str) -> utoipa::openapi::header::Header {
    HeaderBuilder::new()
        .schema(
            utoipa::openapi::ObjectBuilder::new()
                .schema_type(utoipa::openapi::schema::Type::String),
        )
        .description(Some(description))
        .build()
}

/// A header whose value is an integer.
fn integer_header(description: &str) -> utoipa::openapi::header::Header {
    HeaderBuilder::new()
        .schema(
            utoipa::openapi::ObjectBuilder::new()
                .schema_type(utoipa::openapi::schema::Type::Integer),
        )
        .description(Some(description))
        .build()
}

/// The headers every answer of a rate-limited operation carries when the rate limits are
/// enabled (the default), as `super::ratelimit::limit` sends them.
fn rate_limit_headers() -> [(&'static str, utoipa::openapi::header::Header); 4] {
    [
        (
            "X-RateLimit-Limit-Minute",
            integer_header(
                "Requests allowed per minute (on this route, for this client); sent when the \
                 server limits requests (the default)",
            ),
        ),
        (
            "X-RateLimit-Limit-Hour",
            integer_header(
                "Requests allowed per hour (on this route, for this client); sent when the \
                 server limits requests (the default)",
            ),
        ),
        (
            "X-RateLimit-Remaining-Minute",
            integer_header("Requests remaining this minute"),
        ),
        (
            "X-RateLimit-Remaining-Hour",
            integer_header("Requests remaining this hour"),
        ),
    ]
}

impl Modify for Conventions {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            SECURITY_SCHEME,
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
        openapi.info.version = env!("CARGO_PKG_VERSION").to_owned();
        let request_id = string_header(
            "The request id: the client's `x-correlation-id` (or else `x-request-id`) when it \
             sent a sane one, else a new ULID (also the `request_id` of problem documents)",
        );
        let correlation_id =
            string_header("Request correlation ID for tracing: the same value as `x-request-id`");
        let rate_limited = ResponseBuilder::new()
            .description(
                "Too many requests: the client's rate limit on this route is spent \
                 (`application/problem+json` with `retry_after`)",
            )
            .content(
                super::problem::PROBLEM_JSON,
                ContentBuilder::new()
                    .schema(Some(Ref::from_schema_name("Problem")))
                    .build(),
            )
            .header(
                "Retry-After",
                integer_header("Seconds until the request would be allowed"),
            )
            .build();
        for (path, item) in openapi.paths.paths.iter_mut() {
            let limited = super::ratelimit::is_limited(path);
            let operations = [
                &mut item.get,
                &mut item.put,
                &mut item.post,
                &mut item.delete,
                &mut item.patch,
            ];
            for operation in operations.into_iter().flatten() {
                let responses = &mut operation.responses.responses;
                if limited {
                    responses
                        .entry("429".to_owned())
                        .or_insert_with(|| RefOr::T(rate_limited.clone()));
                }
                responses.entry("default".to_owned()).or_insert_with(|| {
                    RefOr::T(
                        ResponseBuilder::new()
                            .description("An error (`application/problem+json`)")
                            .content(
                                super::problem::PROBLEM_JSON,
                                ContentBuilder::new()
                                    .schema(Some(Ref::from_schema_name("Problem")))
                                    .build(),
                            )
                            .build(),
                    )
                });
                for response in responses.values_mut() {
                    if let RefOr::T(response) = response {
                        response
                            .headers
                            .entry("x-correlation-id".to_owned())
                            .or_insert_with(|| correlation_id.clone());
                        response
                            .headers
                            .entry("x-request-id".to_owned())
                            .or_insert_with(|| request_id.clone());
                        if limited {
                            for (name, header) in rate_limit_headers() {
                                response.headers.entry(name.to_owned()).or_insert(header);
                            }
                        }
                    }
                }
            }
        }
    }
}

/// Adds `additionalProperties: true` to every object schema that names no properties.
fn open_free_form_objects(value: &mut serde_json::Value) {
    use serde_json::Value;
    match value {
        Value::Object(map) => {
            let is_object = match map.get("type") {
                Some(Value::String(t)) => t == "object",
                Some(Value::Array(ts)) => ts.iter().any(|t| t == "object"),
                _ => false,
            };
            if is_object
                && !map.contains_key("properties")
                && !map.contains_key("additionalProperties")
            {
                map.insert("additionalProperties".to_owned(), Value::Bool(true));
            }
            map.values_mut().for_each(open_free_form_objects);
        }
        Value::Array(items) => items.iter_mut().for_each(open_free_form_objects),
        _ => {}
    }
}

/// The server's OpenAPI document as JSON: [`ApiDoc`] with free-form objects
/// (`serde_json::Map` fields) marked `additionalProperties: true`, as in the contract, so
/// generated clients accept any keys there (utoipa's typed model cannot express that for
/// every map, so it is added to the JSON form).
pub fn document() -> serde_json::Value {
    // Serialising a document of plain maps and strings cannot fail; `null` would be the
    // answer if it ever did.
    let mut doc = serde_json::to_value(ApiDoc::openapi()).unwrap_or_default();
    open_free_form_objects(&mut doc);
    doc
}

/// [`document`] pretty-printed: what `GET /openapi.json` answers and `chatter openapi` prints.
pub fn document_json() -> String {
    static JSON: LazyLock<String> = LazyLock::new(|| {
        serde_json::to_string_pretty(&document()).unwrap_or_else(|_| "{}".to_owned())
    });
    JSON.clone()
}

pub(super) fn routes() -> Router<AppState> {
    Router::new().route("/openapi.json", get(openapi_json))
}

/// This document.
#[utoipa::path(
    get,
    path = "/openapi.json",
    operation_id = "openapi_json",
    tag = "Health",
    responses((status = 200, description = "The OpenAPI 3.1 document", body = Object)),
)]
async fn openapi_json() -> Response {
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        document_json(),
    )
        .into_response()
}
