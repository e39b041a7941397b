//! Staff routes for the outbox (bearer `admin.token`, as incident commands) and the public SMS
//! delivery-report callback (authenticated by a shared secret header).
//!
//! - `GET /api/v1/outbox/dead?limit=N` — dead letters, recipients masked;
//! - `POST /api/v1/outbox/{id}/requeue` — a dead letter gets a fresh set of attempts;
//! - `POST /api/v1/notifications/sms/delivery` — `{"message_id", "status"}` from the gateway.

use std::collections::HashMap;

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use chrono::SecondsFormat;
use serde::Deserialize;
use serde_json::json;
use sha2::{Digest as _, Sha256};
use subtle::ConstantTimeEq as _;
use uuid::Uuid;

use crate::app::AppState;
use crate::domain::{EmailAddress, PhoneNumber};
use crate::http::ApiError;
use crate::http::error::ErrorBody;
use crate::http::json;
use crate::incident::auth::Commander;
use crate::store::{AuditEntry, OutboxMessage, Requeue};

const DEAD_LIMIT_DEFAULT: u32 = 100;
const DEAD_LIMIT_MAX: u32 = 1_000;
const CALLBACK_BODY_LIMIT: usize = 16 * 1024;
const DELIVERY_STATUS_MAX: usize = 64;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/v1/outbox/dead", get(dead_letters))
        .route("/api/v1/outbox/{id}/requeue", post(requeue))
        .route("/api/v1/notifications/sms/delivery", post(delivery_report))
        .layer(json::limit(CALLBACK_BODY_LIMIT))
}

/// Dead letters, most recently dead first, recipients masked. Staff only.
#[utoipa::path(
    get,
    path = "/api/v1/outbox/dead",
    tag = "notify",
    params(("limit" = Option<u32>, Query, description = "1..1000, default 100")),
    responses(
        (status = 200, description = "`{\"messages\": [...]}`"),
        (status = 401, description = "No valid `Authorization: Bearer <admin.token>`", body = ErrorBody),
        (status = 422, description = "A bad `limit` or an unknown query parameter", body = ErrorBody),
    )
)]
pub(crate) async fn dead_letters(
    _by: Commander,
    State(state): State<AppState>,
    query: Result<Query<HashMap<String, String>>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(params) = query.map_err(|e| ApiError::BadRequest {
        code: "malformed_query",
        message: e.body_text(),
    })?;
    if let Some(name) = params.keys().find(|k| k.as_str() != "limit") {
        return Err(ApiError::validation(
            name.clone(),
            "unknown query parameter",
        ));
    }
    let limit = match params.get("limit") {
        None => DEAD_LIMIT_DEFAULT,
        Some(text) => text
            .parse::<u32>()
            .ok()
            .filter(|n| (1..=DEAD_LIMIT_MAX).contains(n))
            .ok_or_else(|| {
                ApiError::validation("limit", format!("must be between 1 and {DEAD_LIMIT_MAX}"))
            })?,
    };
    let messages = state.store.dead_letters(limit).await?;
    let views: Vec<_> = messages.iter().map(|m| view(&state, m)).collect();
    Ok((
        [(header::CACHE_CONTROL, "private, no-store")],
        axum::Json(json!({ "messages": views })),
    )
        .into_response())
}

/// A dead letter as staff see it: everything but the recipient in clear.
fn view(state: &AppState, m: &OutboxMessage) -> serde_json::Value {
    json!({
        "id": m.id,
        "channel": m.channel.as_ref(),
        "template": m.template,
        "lang": m.lang,
        "recipient": masked_recipient(state, &m.recipient),
        "source_kind": m.source_kind,
        "source_id": m.source_id,
        "state": m.state.as_ref(),
        "attempts": m.attempts,
        "last_error": m.last_error,
        "created_at": m.created_at.to_rfc3339_opts(SecondsFormat::Millis, true),
        "updated_at": m.updated_at.to_rfc3339_opts(SecondsFormat::Millis, true),
    })
}

fn masked_recipient(state: &AppState, sealed: &[u8]) -> String {
    let Ok(contact) = state.keys.open(sealed) else {
        return "(unreadable)".to_owned();
    };
    if contact.contains('@') {
        EmailAddress::parse(&contact).map_or_else(|_| "(invalid)".to_owned(), |e| e.masked())
    } else {
        PhoneNumber::parse(&contact).map_or_else(|_| "(invalid)".to_owned(), |p| p.masked())
    }
}

/// Give a dead letter a fresh set of attempts, due now. Staff only; audit-logged.
#[utoipa::path(
    post,
    path = "/api/v1/outbox/{id}/requeue",
    tag = "notify",
    params(("id" = String, Path, description = "The message id")),
    responses(
        (status = 200, description = "`{\"id\", \"state\": \"pending\"}`"),
        (status = 401, description = "No valid `Authorization: Bearer <admin.token>`", body = ErrorBody),
        (status = 404, description = "No such message", body = ErrorBody),
        (status = 422, description = "The message is not dead (`not_dead`)", body = ErrorBody),
    )
)]
pub(crate) async fn requeue(
    by: Commander,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let id = Uuid::try_parse(&id).map_err(|_| ApiError::NotFound)?;
    let now = state.clock.now();
    match state.store.requeue(id, now).await? {
        Requeue::Done => {}
        Requeue::NotFound => return Err(ApiError::NotFound),
        Requeue::NotDead(current) => {
            return Err(ApiError::Unprocessable {
                code: "not_dead",
                message: format!(
                    "only dead letters can be requeued; this message is {}",
                    current.as_ref()
                ),
            });
        }
    }
    state
        .store
        .append_audit(&AuditEntry {
            id: Uuid::now_v7(),
            at: now,
            actor: by.actor,
            action: "outbox.requeue".into(),
            target: Some(format!("outbox/{id}")),
            detail: None,
            client_addr: by.client_addr,
        })
        .await?;
    Ok((
        StatusCode::OK,
        [(header::CACHE_CONTROL, "no-store")],
        axum::Json(json!({ "id": id, "state": "pending" })),
    )
        .into_response())
}

/// A delivery report as JSON, or form-encoded as the large commercial gateways post it.
fn parse_report(headers: &HeaderMap, body: &[u8]) -> Result<DeliveryReport, ApiError> {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let mime = content_type.split(';').next().unwrap_or_default().trim();
    if mime.eq_ignore_ascii_case("application/x-www-form-urlencoded") {
        let mut report = DeliveryReport {
            message_id: None,
            status: None,
        };
        for (key, value) in form_urlencoded::parse(body) {
            match key.as_ref() {
                "message_id" => report.message_id = Some(value.into_owned()),
                "status" => report.status = Some(value.into_owned()),
                _ => {}
            }
        }
        return Ok(report);
    }
    if !mime.eq_ignore_ascii_case("application/json") {
        return Err(ApiError::UnsupportedMediaType(
            "send the delivery report as application/json or application/x-www-form-urlencoded"
                .into(),
        ));
    }
    json::parse(body)
}

#[derive(Debug, Deserialize)]
struct DeliveryReport {
    message_id: Option<String>,
    status: Option<String>,
}

/// The gateway's delivery report: `204` when stored, `404` for an unknown message id.
#[utoipa::path(
    post,
    path = "/api/v1/notifications/sms/delivery",
    tag = "notify",
    description = "`{\"message_id\", \"status\"}` as JSON or form-encoded, with the shared \
        secret `notify.sms.callback_secret` in the `notify.sms.callback_header` header.",
    responses(
        (status = 204, description = "Stored"),
        (status = 401, description = "Missing or wrong shared secret", body = ErrorBody),
        (status = 404, description = "No such message", body = ErrorBody),
        (status = 413, description = "Body larger than 16 KiB", body = ErrorBody),
        (status = 415, description = "Neither JSON nor form-encoded", body = ErrorBody),
        (status = 422, description = "A bad `message_id` or `status`", body = ErrorBody),
    )
)]
pub(crate) async fn delivery_report(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: axum::body::Body,
) -> Result<Response, ApiError> {
    let sms = &state.config.notify.sms;
    let presented = headers
        .get(sms.callback_header.as_str())
        .and_then(|v| v.to_str().ok());
    let authentic = match (sms.callback_secret(), presented) {
        (Some(expected), Some(presented)) => bool::from(
            Sha256::digest(presented.trim().as_bytes()).ct_eq(&Sha256::digest(expected.as_bytes())),
        ),
        _ => false,
    };
    if !authentic {
        return Err(ApiError::Unauthorized);
    }
    // Read only once the sender is known; the request layer drains what a refusal leaves.
    let body = json::read_limited(&headers, body, CALLBACK_BODY_LIMIT).await?;
    let report = parse_report(&headers, &body)?;
    let mut problems = std::collections::BTreeMap::new();
    let id = match report.message_id.as_deref().map(Uuid::try_parse) {
        Some(Ok(id)) => Some(id),
        Some(Err(_)) => {
            problems.insert(
                "message_id".to_owned(),
                "must be a message id (UUID)".to_owned(),
            );
            None
        }
        None => {
            problems.insert("message_id".to_owned(), "is required".to_owned());
            None
        }
    };
    let status = report.status.as_deref().map(str::trim).unwrap_or_default();
    let status_ok = !status.is_empty()
        && status.len() <= DELIVERY_STATUS_MAX
        && status.chars().all(|c| c.is_ascii_graphic());
    if !status_ok {
        problems.insert(
            "status".to_owned(),
            format!("must be 1..{DELIVERY_STATUS_MAX} visible ASCII characters"),
        );
    }
    let Some(id) = id.filter(|_| problems.is_empty()) else {
        return Err(ApiError::Validation(problems));
    };
    if state
        .store
        .set_delivery_status(id, status, state.clock.now())
        .await?
    {
        Ok(StatusCode::NO_CONTENT.into_response())
    } else {
        Err(ApiError::NotFound)
    }
}
