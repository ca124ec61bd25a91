//! Chat: `/api/v1/workflows/execute/chat` and `/execute/chat/streaming`.

use axum::Router;

use super::AppState;

pub(super) fn routes() -> Router<AppState> {
    Router::new()
}
