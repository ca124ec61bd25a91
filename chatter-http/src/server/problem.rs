//! `application/problem+json` errors (RFC 9457): every error response of the server is one.
//!
//! Handlers return [`ApiError`]; its response carries the problem in an extension and the
//! [`finish`] middleware writes the body, adding `instance` (the request path) and the request
//! id. Responses that are errors without a problem (axum's 405, a body over the limit, ...) are
//! turned into problems there too, so a client only ever sees one error format.

use axum::Json;
use axum::body::Body;
use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde::de::DeserializeOwned;
use serde_json::{Map, Value, json};

use super::RequestId;

/// Content type of problem documents.
pub const PROBLEM_JSON: &str = "application/problem+json";

/// An error answered as a problem document.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// Human-readable explanation of this occurrence.
    pub detail: String,
    /// Extra members of the problem document (e.g. validation `errors`).
    pub extensions: Map<String, Value>,
}

impl ApiError {
    /// An error with a status and a detail.
    pub fn new(status: StatusCode, detail: impl Into<String>) -> ApiError {
        ApiError {
            status,
            detail: detail.into(),
            extensions: Map::new(),
        }
    }

    /// 400.
    pub fn bad_request(detail: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, detail)
    }

    /// 401.
    pub fn unauthorized(detail: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::UNAUTHORIZED, detail)
    }

    /// 403.
    pub fn forbidden(detail: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::FORBIDDEN, detail)
    }

    /// 404.
    pub fn not_found(detail: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, detail)
    }

    /// 409.
    pub fn conflict(detail: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::CONFLICT, detail)
    }

    /// 422.
    pub fn unprocessable(detail: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, detail)
    }

    /// 500 (the detail stays generic; the cause is logged, not sent).
    pub fn internal(cause: &dyn std::fmt::Display) -> ApiError {
        eprintln!("chatter serve: internal error: {cause}");
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal server error")
    }

    /// Adds a member to the problem document.
    #[must_use]
    pub fn with(mut self, key: &str, value: Value) -> ApiError {
        self.extensions.insert(key.to_owned(), value);
        self
    }
}

impl From<chatter_core::Error> for ApiError {
    fn from(error: chatter_core::Error) -> ApiError {
        use chatter_core::store::StoreErrorKind as K;
        match error.store_kind() {
            Some(K::NotFound) => ApiError::not_found(error.to_string()),
            Some(K::Conflict) => ApiError::conflict(error.to_string()),
            Some(K::InvalidInput) => ApiError::unprocessable(error.to_string()),
            Some(K::PayloadTooLarge) => {
                ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, error.to_string())
            }
            Some(K::Unavailable) => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "the database is unavailable",
            ),
            Some(_) => ApiError::internal(&error),
            None => match error {
                chatter_core::Error::Parse { .. }
                | chatter_core::Error::Definition { .. }
                | chatter_core::Error::Invalid(_)
                | chatter_core::Error::Template { .. }
                | chatter_core::Error::InvalidInput { .. }
                | chatter_core::Error::Expression { .. } => {
                    ApiError::unprocessable(error.to_string())
                }
                chatter_core::Error::NotFound { .. } => ApiError::not_found(error.to_string()),
                other => ApiError::internal(&other),
            },
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = self.status.into_response();
        response.extensions_mut().insert(self);
        response
    }
}

fn title(status: StatusCode) -> &'static str {
    status.canonical_reason().unwrap_or("Error")
}

/// Writes the problem body of error responses (see the module docs).
pub async fn finish(request: Request, next: Next) -> Response {
    let instance = request.uri().path().to_owned();
    let request_id = request.extensions().get::<RequestId>().cloned();
    let mut response = next.run(request).await;
    let status = response.status();
    if !(status.is_client_error() || status.is_server_error()) {
        return response;
    }
    let problem = match response.extensions_mut().remove::<ApiError>() {
        Some(problem) => problem,
        None => {
            // A handler's own JSON document (e.g. `/readyz` answering 503) stays as it is.
            let has_document = response
                .headers()
                .get(header::CONTENT_TYPE)
                .is_some_and(|v| {
                    v.as_bytes().starts_with(b"application/json")
                        || v.as_bytes().starts_with(PROBLEM_JSON.as_bytes())
                });
            if has_document {
                return response;
            }
            let detail = match status {
                StatusCode::METHOD_NOT_ALLOWED => "method not allowed on this resource",
                StatusCode::PAYLOAD_TOO_LARGE => "the request body is larger than the limit",
                StatusCode::NOT_FOUND => "no such resource",
                _ => title(status),
            };
            ApiError::new(status, detail)
        }
    };
    let mut doc = Map::new();
    doc.insert(
        "type".into(),
        json!(format!("https://chatter.dev/problems/{}", status.as_u16())),
    );
    doc.insert("title".into(), json!(title(status)));
    doc.insert("status".into(), json!(status.as_u16()));
    doc.insert("detail".into(), json!(problem.detail));
    doc.insert("instance".into(), json!(instance));
    if let Some(id) = request_id {
        doc.insert("request_id".into(), json!(id.0));
    }
    for (key, value) in problem.extensions {
        doc.entry(key).or_insert(value);
    }
    let body = serde_json::to_vec(&Value::Object(doc)).unwrap_or_default();
    let (mut parts, _) = response.into_parts();
    parts
        .headers
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
    parts.headers.remove(header::CONTENT_LENGTH);
    if status == StatusCode::UNAUTHORIZED {
        parts
            .headers
            .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    }
    Response::from_parts(parts, Body::from(body))
}

/// `?limit=&offset=` of the listing endpoints (`limit` 100 by default).
#[derive(Debug, Clone, Copy, serde::Deserialize)]
pub struct PageQuery {
    /// Most items answered.
    #[serde(default = "default_page_limit")]
    pub limit: u32,
    /// Items skipped.
    #[serde(default)]
    pub offset: u64,
}

fn default_page_limit() -> u32 {
    100
}

/// 422 unless `value` (the query parameter `name`) is within `1..=max`.
///
/// # Errors
///
/// [`ApiError`] 422 naming the parameter and the range.
pub fn check_range(name: &str, value: i64, max: i64) -> Result<(), ApiError> {
    if !(1..=max).contains(&value) {
        return Err(ApiError::unprocessable(format!(
            "`{name}` must be within 1..={max}"
        )));
    }
    Ok(())
}

/// 422 unless `limit` is within `1..=max`.
///
/// # Errors
///
/// [`ApiError`] 422 naming the range.
pub fn check_limit(limit: u32, max: u32) -> Result<(), ApiError> {
    if limit == 0 || limit > max {
        return Err(ApiError::unprocessable(format!(
            "`limit` must be within 1..={max}"
        )));
    }
    Ok(())
}

/// A JSON body whose rejections (malformed JSON, wrong types, wrong content type, too large)
/// are problems.
#[derive(Debug, Clone, Copy, Default)]
pub struct ApiJson<T>(pub T);

impl<T, S> FromRequest<S> for ApiJson<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        match Json::<T>::from_request(req, state).await {
            Ok(Json(value)) => Ok(ApiJson(value)),
            Err(rejection) => Err(json_rejection(&rejection)),
        }
    }
}

fn json_rejection(rejection: &JsonRejection) -> ApiError {
    let status = match rejection {
        JsonRejection::JsonDataError(_) => StatusCode::UNPROCESSABLE_ENTITY,
        JsonRejection::JsonSyntaxError(_) => StatusCode::BAD_REQUEST,
        JsonRejection::MissingJsonContentType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
        other => other.status(),
    };
    ApiError::new(status, rejection.body_text())
}

/// Query parameters whose rejections are 422 problems.
#[derive(Debug, Clone, Copy, Default)]
pub struct ApiQuery<T>(pub T);

impl<T, S> FromRequestParts<S> for ApiQuery<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &S,
    ) -> Result<Self, Self::Rejection> {
        match axum::extract::Query::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Query(value)) => Ok(ApiQuery(value)),
            Err(rejection) => Err(query_rejection(&rejection)),
        }
    }
}

fn query_rejection(rejection: &QueryRejection) -> ApiError {
    ApiError::unprocessable(rejection.body_text())
}

/// Path parameters whose rejections are problems.
#[derive(Debug, Clone, Copy, Default)]
pub struct ApiPath<T>(pub T);

impl<T, S> FromRequestParts<S> for ApiPath<T>
where
    T: DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &S,
    ) -> Result<Self, Self::Rejection> {
        match axum::extract::Path::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Path(value)) => Ok(ApiPath(value)),
            Err(rejection) => Err(path_rejection(&rejection)),
        }
    }
}

fn path_rejection(rejection: &PathRejection) -> ApiError {
    ApiError::new(rejection.status(), rejection.body_text())
}
