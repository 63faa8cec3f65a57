//! The `Authorization: Bearer <api key>` extractor: every `/v1/jobs` handler receives the
//! caller's tenant from it and nothing else.

use axum::extract::FromRequestParts;
use axum::http::header;
use axum::http::request::Parts;
use tcoder::jobs::Tenant;

use crate::error::ApiError;
use crate::state::AppState;

/// The authenticated caller.
#[derive(Debug, Clone)]
pub(crate) struct Caller(pub Tenant);

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Caller, ApiError> {
        let key = bearer(parts).ok_or_else(ApiError::unauthorized)?;
        tenant_of(state, key).await.map(Caller)
    }
}

/// The tenant of API key `key`; an unknown or revoked key is a 401 (and counted).
pub(crate) async fn tenant_of(state: &AppState, key: &str) -> Result<Tenant, ApiError> {
    match state.keys.tenant_of(key).await {
        Ok(Some(tenant)) => Ok(tenant),
        Ok(None) => {
            state.metrics.auth_failures.inc();
            Err(ApiError::unauthorized())
        }
        Err(e) => Err(ApiError::unavailable("cannot check the API key", e)),
    }
}

/// The token of an `Authorization: Bearer <token>` header.
pub(crate) fn bearer(parts: &Parts) -> Option<&str> {
    bearer_of(&parts.headers)
}

/// [`bearer`] from the headers alone.
pub(crate) fn bearer_of(headers: &axum::http::HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim()).filter(|t| !t.is_empty())
}
