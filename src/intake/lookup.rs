//! `POST /api/v1/reports/lookup`: the reporter proves who they are with the receipt and the
//! contact they gave, and sees where their report is.
//!
//! An unknown receipt and a wrong contact must look the same from outside: same status, same
//! body, and the same work on the way (one store query that answers one row either way, keyed
//! hashes compared in constant time), so neither can be told apart to probe for receipts or
//! contacts.

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde_json::Value;
use uuid::Uuid;

use super::request::{FieldErrors, Fields};
use crate::app::AppState;
use crate::crypto::hashes_equal;
use crate::domain::{EmailAddress, PhoneNumber, Receipt, ReportStatus};
use crate::http::ApiError;
use crate::http::client_ip::Client;
use crate::http::error::ErrorBody;
use crate::http::json;
use crate::incident::views::IncidentView;
use crate::store::StoredReport;

const MAX_LOOKUP_BYTES: usize = 4 * 1024;

/// What the reporter may see.
#[derive(Serialize)]
struct LookupBody {
    receipt: Receipt,
    status: ReportStatus,
    history: Vec<HistoryItem>,
    /// The result of consultation, once there is one.
    result: Option<Value>,
    /// The incident the report belongs to, as the public sees it.
    incident: Option<Value>,
}

#[derive(Serialize)]
struct HistoryItem {
    status: ReportStatus,
    at: String,
    note: Option<String>,
}

/// The contact a reporter gave, normalised the way it was hashed at submission.
pub enum Contact {
    Phone(PhoneNumber),
    Email(EmailAddress),
}

impl Contact {
    pub fn parse(text: &str) -> Result<Self, String> {
        if text.contains('@') {
            EmailAddress::parse(text)
                .map(Self::Email)
                .map_err(|e| e.to_string())
        } else {
            PhoneNumber::parse(text)
                .map(Self::Phone)
                .map_err(|e| e.to_string())
        }
    }

    fn normalised(&self) -> String {
        match self {
            Self::Phone(p) => p.e164(),
            Self::Email(e) => e.normalised(),
        }
    }
}

/// Parse `{"receipt", "contact"}`, naming every bad field.
fn parse_request(body: &Value) -> Result<(Receipt, Contact), FieldErrors> {
    let mut errors = FieldErrors::new();
    let Some(obj) = body.as_object() else {
        errors.insert("$".into(), "the body must be a JSON object".into());
        return Err(errors);
    };
    let mut f = Fields::new(obj, "", &mut errors);
    f.reject_unknown(&["receipt", "contact"]);
    let receipt = f.parsed("receipt", true, Receipt::parse);
    let contact = f.parsed("contact", true, Contact::parse);
    match (receipt, contact) {
        (Some(r), Some(c)) if errors.is_empty() => Ok((r, c)),
        _ => Err(errors),
    }
}

/// The reporter checks on a report with its receipt and the contact given with it.
#[utoipa::path(
    post,
    path = "/api/v1/reports/lookup",
    tag = "intake",
    request_body(content = super::schema::LookupRequest, content_type = "application/json"),
    responses(
        (status = 200, description = "Status and public history",
            body = super::schema::LookupResponse),
        (status = 400, description = "Malformed JSON", body = ErrorBody),
        (status = 404, description = "Unknown receipt or wrong contact (indistinguishable)",
            body = ErrorBody),
        (status = 413, description = "Body larger than 4 KiB", body = ErrorBody),
        (status = 415, description = "Not JSON", body = ErrorBody),
        (status = 422, description = "Malformed receipt or contact", body = ErrorBody),
        (status = 429, description = "Rate limited; see Retry-After", body = ErrorBody),
    )
)]
pub(crate) async fn lookup_report(
    State(state): State<AppState>,
    Client(client): Client,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    state.limiters.check_lookup_ip(&client)?;
    let value = json::read_value(&headers, body, MAX_LOOKUP_BYTES).await?;
    let (receipt, contact) = parse_request(&value).map_err(ApiError::Validation)?;
    // Per receipt, whoever asks: guessing the contact of a known receipt is not possible.
    state.limiters.check_lookup_receipt(&receipt)?;
    match matching_report(&state, &receipt, &contact).await? {
        Some(report) => {
            let incident = match report.incident_id {
                Some(id) => incident_summary(&state, id).await,
                None => None,
            };
            Ok(found(report, incident))
        }
        None => Err(ApiError::NotFound),
    }
}

/// The report with `receipt` if `contact` is one given with it; `None` alike for an unknown
/// receipt and a wrong contact. Rate limits are the caller's.
///
/// Both of those do the same work: one query that returns one row either way (the contact
/// hashes, or NULLs), two constant-time comparisons (against a dummy where there is no hash).
/// Only a match goes on to read the report. What the store still does differently (a known
/// receipt's row is read for its hashes) is hidden by answering no match no sooner than
/// [`NO_MATCH_FLOOR`] after the check began.
pub(crate) async fn matching_report(
    state: &AppState,
    receipt: &Receipt,
    contact: &Contact,
) -> Result<Option<StoredReport>, ApiError> {
    let floor = tokio::time::Instant::now() + NO_MATCH_FLOOR;
    let given = state.keys.hash(&contact.normalised());
    let stored = state.store.contact_hashes(receipt).await?;
    let dummy = [0u8; 32];
    let phone_matches = hashes_equal(&given, stored.phone.as_ref().unwrap_or(&dummy));
    let email_matches = hashes_equal(&given, stored.email.as_ref().unwrap_or(&dummy));
    if !(phone_matches | email_matches) {
        tokio::time::sleep_until(floor).await;
        return Ok(None);
    }
    Ok(state.store.find_report(receipt).await?)
}

/// The least time a lookup without a match takes: far above the few microseconds by which
/// the two kinds of miss differ, far below what a person notices.
const NO_MATCH_FLOOR: std::time::Duration = std::time::Duration::from_millis(2);

/// The public summary of the incident a report belongs to, from the incident cache.
async fn incident_summary(state: &AppState, id: Uuid) -> Option<Value> {
    let detail = state.incidents.detail(id).await.ok()?;
    serde_json::to_value(IncidentView::summary(&detail.record.incident)).ok()
}

fn found(report: StoredReport, incident: Option<Value>) -> Response {
    let body = LookupBody {
        receipt: report.receipt,
        status: report.status,
        history: report
            .history
            .into_iter()
            .map(|h| HistoryItem {
                status: h.status,
                at: h.at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
                note: h.note,
            })
            .collect(),
        result: None,
        incident,
    };
    ([(header::CACHE_CONTROL, "no-store")], axum::Json(body)).into_response()
}
