//! Consultants' work on reports. For now one command: move a report to a new status, which the
//! reporter sees in the lookup and is told about by the channels they chose. Until staff accounts
//! exist it takes the commander's bearer token, like the incident commands.

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use chrono::SecondsFormat;
use serde::Deserialize;
use serde_json::json;
use uuid::Uuid;

use crate::app::AppState;
use crate::domain::{Receipt, ReportStatus};
use crate::http::ApiError;
use crate::http::error::ErrorBody;
use crate::http::json::{self, JsonBody};
use crate::incident::api::Problems;
use crate::incident::auth::Commander;
use crate::store::{AuditEntry, StatusChange, StatusNotice, StatusOutcome};

const BODY_LIMIT: usize = 16 * 1024;

/// The longest note a reporter is shown with a status change.
const NOTE_MAX: usize = 2000;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/v1/reports/{receipt}/status", post(change_status))
        .layer(json::limit(BODY_LIMIT))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct StatusBody {
    status: Option<String>,
    note: Option<String>,
}

/// The change asked for, once every field is known valid.
struct Asked {
    status: ReportStatus,
    note: Option<String>,
}

fn parse(body: StatusBody) -> Result<Asked, ApiError> {
    let mut problems = Problems::default();
    let status = match body.status.as_deref().map(str::trim) {
        None | Some("") => {
            problems.add("status", "is required");
            None
        }
        Some(text) => match text.parse::<ReportStatus>() {
            Ok(status) if status != ReportStatus::Received => Some(status),
            _ => {
                problems.add(
                    "status",
                    "must be one of: in_review, awaiting_reporter, referred, resolved, closed",
                );
                None
            }
        },
    };
    let note = body
        .note
        .filter(|n| !n.trim().is_empty())
        .and_then(|n| problems.checked("note", &n, NOTE_MAX, true));
    problems.finish()?;
    let status = status.ok_or_else(|| ApiError::validation("status", "is required"))?;
    Ok(Asked { status, note })
}

/// `POST /api/v1/reports/{receipt}/status` → 200 with the new status.
#[utoipa::path(
    post,
    path = "/api/v1/reports/{receipt}/status",
    tag = "cases",
    description = "Move a report to a new status (staff). The reporter sees it, with the note, \
        in the lookup, and is told by SMS and/or e-mail as they asked when reporting; the notice \
        is written in the same transaction as the change. `received` is only the first status, \
        `closed` is final.",
    params(("receipt" = String, Path, description = "The report's receipt, any case, dashes optional")),
    request_body(content = Object, content_type = "application/json",
        description = "`{\"status\": \"in_review|awaiting_reporter|referred|resolved|closed\", \"note\"?: \"shown to the reporter\"}`"),
    responses(
        (status = 200, description = "`{\"receipt\", \"status\", \"previous_status\", \"note\", \"at\", \"notices\"}`"),
        (status = 400, description = "Malformed JSON", body = ErrorBody),
        (status = 401, description = "No valid `Authorization: Bearer <admin.token>`", body = ErrorBody),
        (status = 404, description = "No report has this receipt", body = ErrorBody),
        (status = 413, description = "Body larger than 16 KiB", body = ErrorBody),
        (status = 415, description = "Not JSON", body = ErrorBody),
        (status = 422, description = "Invalid fields, or the report cannot take this status (`status_refused`)", body = ErrorBody),
    )
)]
pub(crate) async fn change_status(
    by: Commander,
    State(state): State<AppState>,
    Path(receipt): Path<String>,
    JsonBody(body): JsonBody<StatusBody>,
) -> Result<Response, ApiError> {
    let receipt: Receipt = receipt.parse().map_err(|_| ApiError::NotFound)?;
    let asked = parse(body)?;
    let at = state.clock.now();
    let change = StatusChange {
        notice: StatusNotice {
            sms_id: Uuid::now_v7(),
            email_id: Uuid::now_v7(),
            template: crate::notify::REPORT_STATUS_TEMPLATE.to_owned(),
            payload: crate::notify::report_status_payload(
                &receipt,
                asked.status,
                asked.note.as_deref(),
            ),
        },
        receipt,
        status: asked.status,
        note: asked.note,
        event_id: Uuid::now_v7(),
        actor: by.actor.clone(),
        at,
    };
    let audit = AuditEntry {
        id: Uuid::now_v7(),
        at,
        actor: by.actor,
        action: "report.status".into(),
        target: Some(format!("report/{}", change.receipt.as_str())),
        detail: Some(json!({ "status": change.status })),
        client_addr: by.client_addr,
    };
    match state.store.change_report_status(&change, &audit).await? {
        StatusOutcome::Changed {
            previous, notices, ..
        } => Ok((
            StatusCode::OK,
            [(header::CACHE_CONTROL, "no-store")],
            axum::Json(json!({
                "receipt": change.receipt.as_str(),
                "status": change.status,
                "previous_status": previous,
                "note": change.note,
                "at": at.to_rfc3339_opts(SecondsFormat::Millis, true),
                "notices": notices,
            })),
        )
            .into_response()),
        StatusOutcome::Refused { current, reason } => Err(ApiError::Unprocessable {
            code: "status_refused",
            message: format!(
                "the report is {current} and cannot become {}: {reason}",
                change.status
            ),
        }),
        StatusOutcome::NotFound => Err(ApiError::NotFound),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(status: Option<&str>, note: Option<&str>) -> StatusBody {
        StatusBody {
            status: status.map(str::to_owned),
            note: note.map(str::to_owned),
        }
    }

    fn fields(result: Result<Asked, ApiError>) -> Vec<String> {
        match result {
            Err(ApiError::Validation(fields)) => fields.into_keys().collect(),
            Err(other) => panic!("not a validation error: {other}"),
            Ok(_) => panic!("accepted"),
        }
    }

    #[test]
    fn a_status_other_than_received_and_a_trimmed_note_are_taken() {
        let asked = parse(body(
            Some(" in_review "),
            Some("  상담원이 배정되었습니다.\n  "),
        ))
        .unwrap();
        assert_eq!(asked.status, ReportStatus::InReview);
        assert_eq!(asked.note.as_deref(), Some("상담원이 배정되었습니다."));
        let asked = parse(body(Some("closed"), Some("   "))).unwrap();
        assert_eq!(asked.note, None, "a blank note is no note");
    }

    #[test]
    fn each_bad_field_is_named() {
        assert_eq!(fields(parse(body(None, None))), ["status"]);
        assert_eq!(fields(parse(body(Some("received"), None))), ["status"]);
        assert_eq!(fields(parse(body(Some("done"), None))), ["status"]);
        let long = "가".repeat(NOTE_MAX + 1);
        assert_eq!(
            fields(parse(body(Some("bogus"), Some(&long)))),
            ["note", "status"]
        );
        assert_eq!(
            fields(parse(body(Some("resolved"), Some("a\u{0}b")))),
            ["note"]
        );
    }
}
