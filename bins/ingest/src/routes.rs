//! The public HTTP API. Routes arrive with the ingest issue; until then every path is a
//! problem+json 404 so clients get the error shape they will always get.

use axum::Router;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;

pub(crate) fn router() -> Router {
    Router::new().fallback(not_found)
}

async fn not_found() -> impl IntoResponse {
    (
        StatusCode::NOT_FOUND,
        [(header::CONTENT_TYPE, "application/problem+json")],
        r#"{"type":"about:blank","title":"Not Found","status":404,"code":"not_found"}"#,
    )
}
