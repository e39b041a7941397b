//! The one error type every handler returns, rendered as the contract's JSON error body:
//! `{"error": CODE, "message": TEXT, "fields"?: {PATH: TEXT}}`.
//!
//! Client mistakes are 4xx and name the problem. Server faults are opaque 5xx; their cause is
//! attached to the response and logged once by [`log_server_error`].

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// 400 with a machine-readable code, e.g. `malformed_json`.
    #[error("{message}")]
    BadRequest { code: &'static str, message: String },
    #[error("request body is larger than {limit} bytes")]
    PayloadTooLarge { limit: usize },
    #[error("{0}")]
    UnsupportedMediaType(String),
    /// 422: each offending field by JSON path.
    #[error("the request has invalid fields")]
    Validation(BTreeMap<String, String>),
    /// 422 with its own code, e.g. `idempotency_mismatch`.
    #[error("{message}")]
    Unprocessable { code: &'static str, message: String },
    #[error("not found")]
    NotFound,
    #[error("missing or invalid credentials")]
    Unauthorized,
    #[error("too many requests; try again in {} seconds", retry_after.as_secs().max(1))]
    RateLimited { retry_after: Duration },
    #[error("the service is busy; try again in {} seconds", retry_after.as_secs().max(1))]
    Overloaded { retry_after: Duration },
    #[error("storage is temporarily unavailable; try again in {} seconds", retry_after.as_secs().max(1))]
    StoreUnavailable { retry_after: Duration },
    #[error("internal error")]
    Internal(#[source] anyhow::Error),
}

/// How long clients are asked to wait when storage is briefly away.
pub const STORE_RETRY_AFTER: Duration = Duration::from_secs(5);

/// Every error answer: a machine-readable code, a sentence for people, and for validation
/// errors each bad field by JSON path.
#[derive(Serialize, utoipa::ToSchema)]
pub struct ErrorBody {
    #[schema(example = "validation_failed")]
    pub error: String,
    pub message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fields: Option<BTreeMap<String, String>>,
}

/// Cause of a 5xx, carried to the logging middleware in the response extensions.
#[derive(Clone)]
pub struct ServerErrorCause(pub Arc<anyhow::Error>);

impl ApiError {
    pub fn status(&self) -> StatusCode {
        match self {
            Self::BadRequest { .. } => StatusCode::BAD_REQUEST,
            Self::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Self::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::Validation(_) | Self::Unprocessable { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            Self::NotFound => StatusCode::NOT_FOUND,
            Self::Unauthorized => StatusCode::UNAUTHORIZED,
            Self::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            Self::Overloaded { .. } | Self::StoreUnavailable { .. } => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    pub fn code(&self) -> &'static str {
        match self {
            Self::BadRequest { code, .. } | Self::Unprocessable { code, .. } => code,
            Self::PayloadTooLarge { .. } => "payload_too_large",
            Self::UnsupportedMediaType(_) => "unsupported_media_type",
            Self::Validation(_) => "validation_failed",
            Self::NotFound => "not_found",
            Self::Unauthorized => "unauthorized",
            Self::RateLimited { .. } => "rate_limited",
            Self::Overloaded { .. } => "overloaded",
            Self::StoreUnavailable { .. } => "store_unavailable",
            Self::Internal(_) => "internal",
        }
    }

    /// `Retry-After` for the answers that promise one.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::RateLimited { retry_after }
            | Self::Overloaded { retry_after }
            | Self::StoreUnavailable { retry_after } => Some(*retry_after),
            _ => None,
        }
    }

    pub fn validation(path: impl Into<String>, problem: impl Into<String>) -> Self {
        Self::Validation(BTreeMap::from([(path.into(), problem.into())]))
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        if e.is_unavailable() {
            tracing::warn!(error = %e, "store unavailable");
            Self::StoreUnavailable {
                retry_after: STORE_RETRY_AFTER,
            }
        } else {
            Self::Internal(anyhow::Error::new(e))
        }
    }
}

impl From<crate::ratelimit::RetryAfter> for ApiError {
    fn from(wait: crate::ratelimit::RetryAfter) -> Self {
        Self::RateLimited {
            retry_after: wait.0,
        }
    }
}

impl From<anyhow::Error> for ApiError {
    fn from(e: anyhow::Error) -> Self {
        Self::Internal(e)
    }
}

/// Seconds for a `Retry-After` header, rounded up so clients never retry early.
pub fn retry_after_secs(d: Duration) -> u64 {
    d.as_secs() + u64::from(d.subsec_nanos() > 0)
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        let body = ErrorBody {
            error: self.code().to_owned(),
            message: self.to_string(),
            fields: match &self {
                Self::Validation(fields) => Some(fields.clone()),
                _ => None,
            },
        };
        let mut response = (status, Json(body)).into_response();
        if let Some(wait) = self.retry_after() {
            response.headers_mut().insert(
                header::RETRY_AFTER,
                HeaderValue::from(retry_after_secs(wait).max(1)),
            );
        }
        if let Self::Internal(cause) = self {
            response
                .extensions_mut()
                .insert(ServerErrorCause(Arc::new(cause)));
        }
        response
    }
}

/// Log the cause chain of a 5xx exactly once, with the request it belongs to ([`track`]
/// calls this for every routed request).
///
/// [`track`]: super::metrics::track
pub fn log_server_error(response: &mut Response, method: &str, route: &str, request_id: &str) {
    if let Some(ServerErrorCause(cause)) = response.extensions_mut().remove::<ServerErrorCause>() {
        tracing::error!(
            method,
            route,
            request_id,
            status = response.status().as_u16(),
            error = format!("{cause:#}"),
            "request failed"
        );
    }
}
