//! `/live`, `/healthz`, `/readyz`.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::AppState;
use super::schemas;

/// `CHATTER_ENVIRONMENT`, `development` when unset.
pub(super) fn environment() -> String {
    std::env::var("CHATTER_ENVIRONMENT").unwrap_or_else(|_| "development".into())
}

fn base(status: &str) -> Value {
    json!({
        "status": status,
        "service": "chatter",
        "version": env!("CARGO_PKG_VERSION"),
        "environment": environment(),
    })
}

/// The process is up.
#[utoipa::path(
    get,
    path = "/live",
    operation_id = "liveness_check_live_get",
    tag = "Health",
    responses(
        (status = 200, description = "Successful Response", body = schemas::HealthCheckResponse),
    ),
)]
pub(super) async fn live() -> Response {
    axum::Json(base("alive")).into_response()
}

/// The process is up and serving.
#[utoipa::path(
    get,
    path = "/healthz",
    operation_id = "health_check_endpoint_healthz_get",
    tag = "Health",
    responses(
        (status = 200, description = "Successful Response", body = schemas::HealthCheckResponse),
    ),
)]
pub(super) async fn healthz() -> Response {
    axum::Json(base("healthy")).into_response()
}

/// The database answers within the readiness timeout; 503 otherwise.
#[utoipa::path(
    get,
    path = "/readyz",
    operation_id = "readiness_check_readyz_get",
    tag = "Health",
    responses(
        (status = 200, description = "Successful Response", body = schemas::ReadinessCheckResponse),
        (status = 503, description = "The database does not answer", body = schemas::ReadinessCheckResponse),
    ),
)]
pub(super) async fn readyz(State(state): State<AppState>) -> Response {
    let timeout = state.config().readiness_timeout;
    let started = std::time::Instant::now();
    let check = tokio::time::timeout(timeout, state.store().health_check()).await;
    let elapsed_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
    let (ready, database) = match check {
        Ok(Ok(_)) => (
            true,
            json!({"status": "healthy", "backend": state.store().backend(), "response_time_ms": elapsed_ms}),
        ),
        Ok(Err(e)) => (
            false,
            json!({"status": "unhealthy", "backend": state.store().backend(), "error": e.to_string()}),
        ),
        Err(_) => (
            false,
            json!({"status": "unhealthy", "backend": state.store().backend(),
                   "error": format!("no answer within {} ms", timeout.as_millis())}),
        ),
    };
    let mut doc = base(if ready { "ready" } else { "not_ready" });
    doc["checks"] = json!({"database": database});
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, axum::Json(doc)).into_response()
}
