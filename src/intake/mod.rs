//! Surge intake: `POST /api/v1/reports` (a harm report in, a durable receipt out) and
//! `POST /api/v1/reports/lookup` (the reporter checks on it).
//!
//! Path of a report: rate limits → content type and size → JSON → [`ValidReport`] →
//! idempotency → group-commit [`Batcher`] → `201` only after COMMIT.

pub mod batcher;
pub mod idempotency;
pub(crate) mod lookup;
pub mod request;
pub mod schema;

#[cfg(test)]
mod properties;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use chrono::{DateTime, SubsecRound as _, Utc};
use serde::Serialize;
use uuid::Uuid;

pub use batcher::{Batcher, BatcherOptions, CommitError, CommitObserver, Committed};
pub use idempotency::{Idempotency, IdempotencyKey, Seen};
pub use request::{FieldErrors, Reporter, ValidReport};

use crate::app::AppState;
use crate::config::IntakeConfig;
use crate::crypto::Keys;
use crate::domain::{Channel, EmailAddress, PhoneNumber, Receipt};
use crate::http::ApiError;
use crate::http::client_ip::Client;
use crate::http::error::ErrorBody;
use crate::http::json;
use crate::notify::Lang;
use crate::store::{DynStore, IdempotencyRecord, NewReport, ReportWrite};
use crate::telemetry::names;

/// The contract's limit on a report body.
pub const MAX_REPORT_BYTES: usize = 64 * 1024;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/v1/reports", post(submit_report))
        .route("/api/v1/reports/lookup", post(lookup::lookup_report))
}

/// The answer to an accepted report (and to its idempotent replays).
#[derive(Debug, Clone, PartialEq)]
pub struct Accepted {
    pub receipt: Receipt,
    pub incident_id: Option<Uuid>,
    pub received_at: DateTime<Utc>,
}

#[derive(Serialize)]
struct AcceptedBody<'a> {
    receipt: &'a Receipt,
    status: &'static str,
    incident_id: Option<Uuid>,
    received_at: String,
}

impl IntoResponse for Accepted {
    fn into_response(self) -> Response {
        let body = AcceptedBody {
            receipt: &self.receipt,
            status: "received",
            incident_id: self.incident_id,
            received_at: self
                .received_at
                .to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        };
        (
            StatusCode::CREATED,
            [(header::CACHE_CONTROL, "no-store")],
            axum::Json(body),
        )
            .into_response()
    }
}

/// Why a submission was not accepted, for the channel (API or page) to present.
#[derive(Debug, thiserror::Error)]
pub enum SubmitError {
    #[error("the report has invalid fields")]
    Invalid(FieldErrors),
    #[error("this Idempotency-Key was used with a different request")]
    IdempotencyMismatch,
    #[error("busy")]
    Overloaded { retry_after: Duration },
    #[error("storage unavailable")]
    StoreUnavailable,
    #[error(transparent)]
    Internal(anyhow::Error),
}

impl SubmitError {
    /// The `reason` label of `reliefline_reports_rejected_total`.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Invalid(_) => "validation",
            Self::IdempotencyMismatch => "idempotency",
            Self::Overloaded { .. } => "overloaded",
            Self::StoreUnavailable => "store_unavailable",
            Self::Internal(_) => "internal",
        }
    }
}

impl From<SubmitError> for ApiError {
    fn from(e: SubmitError) -> Self {
        metrics::counter!(names::REPORTS_REJECTED, "reason" => e.reason()).increment(1);
        match e {
            SubmitError::Invalid(fields) => Self::Validation(fields),
            SubmitError::IdempotencyMismatch => Self::Unprocessable {
                code: "idempotency_mismatch",
                message: "this Idempotency-Key was already used with a different request body"
                    .into(),
            },
            SubmitError::Overloaded { retry_after } => Self::Overloaded { retry_after },
            SubmitError::StoreUnavailable => Self::StoreUnavailable {
                retry_after: crate::http::error::STORE_RETRY_AFTER,
            },
            SubmitError::Internal(e) => Self::Internal(e),
        }
    }
}

/// Intake as the rest of the service uses it: the API handler here, the HTML form elsewhere.
#[derive(Clone)]
pub struct Intake {
    batcher: Batcher,
    idempotency: Idempotency,
    keys: Arc<Keys>,
    overload_retry_after: Duration,
}

impl Intake {
    pub fn new(config: &IntakeConfig, batcher: Batcher, store: DynStore, keys: Arc<Keys>) -> Self {
        Self {
            batcher,
            idempotency: Idempotency::new(
                store,
                config.idempotency_cache_entries,
                Duration::from_secs(config.idempotency_cache_ttl_secs),
            ),
            keys,
            overload_retry_after: Duration::from_secs(config.overload_retry_after_secs.max(1)),
        }
    }

    pub fn batcher(&self) -> &Batcher {
        &self.batcher
    }

    /// Commit a checked report, honouring an idempotency key and the hash of its request.
    pub async fn submit(
        &self,
        report: ValidReport,
        channel: Channel,
        lang: Lang,
        idempotency: Option<(IdempotencyKey, [u8; 32])>,
    ) -> Result<Accepted, SubmitError> {
        if let Some((key, hash)) = &idempotency {
            match self.idempotency.check(key, hash).await {
                Ok(Seen::New) => {}
                Ok(Seen::Replay(answer)) => return Ok(answer),
                Ok(Seen::Mismatch) => return Err(SubmitError::IdempotencyMismatch),
                Err(e) if e.is_unavailable() => return Err(SubmitError::StoreUnavailable),
                Err(e) => return Err(SubmitError::Internal(e.into())),
            }
        }
        let incident_id = report.incident_id;
        let write = sealed_write(&self.keys, report, channel, lang, idempotency.as_ref());
        let received_at = write.report.received_at;
        match self.batcher.submit(write).await {
            Ok(Committed { receipt }) => {
                let label: &'static str = channel.into();
                metrics::counter!(names::REPORTS_ACCEPTED, "channel" => label).increment(1);
                let answer = Accepted {
                    receipt,
                    incident_id,
                    received_at,
                };
                if let Some((key, hash)) = idempotency {
                    self.idempotency.remember(key, hash, answer.clone()).await;
                }
                Ok(answer)
            }
            // A concurrent request with the same key won the race: answer as it did.
            Err(CommitError::IdempotencyKeyTaken) => {
                let Some((key, hash)) = idempotency else {
                    return Err(SubmitError::Internal(anyhow::anyhow!(
                        "idempotency conflict without a key"
                    )));
                };
                match self.idempotency.check(&key, &hash).await {
                    Ok(Seen::Replay(answer)) => Ok(answer),
                    Ok(Seen::Mismatch) => Err(SubmitError::IdempotencyMismatch),
                    Ok(Seen::New) => Err(SubmitError::Internal(anyhow::anyhow!(
                        "idempotency key conflicted but is not stored"
                    ))),
                    Err(_) => Err(SubmitError::StoreUnavailable),
                }
            }
            Err(CommitError::UnknownIncident) => Err(SubmitError::Invalid(FieldErrors::from([(
                "incident_id".to_owned(),
                "no incident with this id".to_owned(),
            )]))),
            Err(CommitError::QueueFull | CommitError::ShuttingDown) => {
                Err(SubmitError::Overloaded {
                    retry_after: self.overload_retry_after,
                })
            }
            Err(CommitError::StoreUnavailable) => Err(SubmitError::StoreUnavailable),
            Err(CommitError::Store(e)) => Err(SubmitError::Internal(e.into())),
        }
    }
}

/// Everything an accepted report writes: the report with its personal data sealed, a fresh
/// receipt and a time-ordered id, and the receipt confirmations the reporter asked for, in the
/// reporter's language (as every later notice to them).
pub fn sealed_write(
    keys: &Keys,
    report: ValidReport,
    channel: Channel,
    lang: Lang,
    idempotency: Option<&(IdempotencyKey, [u8; 32])>,
) -> ReportWrite {
    let reporter = &report.reporter;
    // Each contact normalised once: sealed and hashed for the report, and the address its
    // confirmation goes to.
    let phone = reporter.phone.as_ref().map(PhoneNumber::e164);
    let email = reporter.email.as_ref().map(EmailAddress::normalised);
    let reporter_name = keys.seal(&reporter.name);
    let report = NewReport {
        id: Uuid::now_v7(),
        receipt: Receipt::generate(),
        incident_id: report.incident_id,
        channel,
        provider: report.provider,
        service: report.service,
        reporter_type: report.reporter_type,
        harm_type: report.harm_type,
        occurred_at: report.occurred_at,
        amount_krw: report.amount_krw,
        title: report.title,
        description: report.description,
        reporter_name,
        phone: phone.as_deref().map(|p| keys.seal_contact(p)),
        email: email.as_deref().map(|e| keys.seal_contact(e)),
        notify_sms: report.notify_sms,
        notify_email: report.notify_email,
        lang: lang.as_str().to_owned(),
        idempotency: idempotency.map(|(key, hash)| IdempotencyRecord {
            key: key.as_str().to_owned(),
            request_hash: *hash,
        }),
        // Millisecond precision: what is stored is exactly what was answered.
        received_at: Utc::now().trunc_subsecs(3),
    };
    let outbox = crate::notify::receipt_confirmation(
        keys,
        &report,
        phone.as_deref(),
        email.as_deref(),
        lang,
    );
    ReportWrite { report, outbox }
}

/// Submit a harm report. `201` comes only after the report is durably committed.
#[utoipa::path(
    post,
    path = "/api/v1/reports",
    tag = "intake",
    request_body(content = schema::ReportRequest, content_type = "application/json"),
    params(("Idempotency-Key" = Option<String>, Header,
        description = "1..255 visible ASCII; the same key and body replay the first answer")),
    responses(
        (status = 201, description = "Committed; keep the receipt", body = schema::ReportAccepted),
        (status = 400, description = "Malformed JSON or a bad Idempotency-Key", body = ErrorBody),
        (status = 413, description = "Body larger than 64 KiB", body = ErrorBody),
        (status = 415, description = "Not JSON", body = ErrorBody),
        (status = 422, description = "Invalid fields (each named by JSON path), or the \
            Idempotency-Key was used with another body (`idempotency_mismatch`)", body = ErrorBody),
        (status = 429, description = "Rate limited; see Retry-After", body = ErrorBody),
        (status = 503, description = "Overloaded or storage unavailable; see Retry-After",
            body = ErrorBody),
    )
)]
pub(crate) async fn submit_report(
    State(state): State<AppState>,
    Client(client): Client,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    // Refuse before parsing the body (the request layer reads and drops it after the answer):
    // a refusal must stay cheap under a flood.
    state
        .limiters
        .check_report_ip(&client)
        .and_then(|()| state.limiters.check_admission())
        .inspect_err(|_| reject("rate_limited"))?;
    let value = json::read_value(&headers, body, MAX_REPORT_BYTES)
        .await
        .inspect_err(|_| reject("validation"))?;
    let idempotency = match headers.get("idempotency-key") {
        None => None,
        Some(raw) => Some(IdempotencyKey::parse(raw.as_bytes()).map_err(|e| {
            reject("validation");
            ApiError::BadRequest {
                code: "invalid_idempotency_key",
                message: e.to_string(),
            }
        })?),
    };
    let report = ValidReport::from_json(&value, Utc::now()).map_err(SubmitError::Invalid)?;
    let idempotency = idempotency.map(|key| (key, idempotency::request_hash(&value)));
    // The body has no language field (the contract is fixed); the client's Accept-Language
    // chooses the language of the notices, Korean when it names neither.
    let (lang, _) = crate::web::i18n::Lang::negotiate(None, &headers);
    let accepted = state
        .intake
        .submit(report, Channel::Api, lang.into(), idempotency)
        .await?;
    Ok(accepted.into_response())
}

pub(crate) fn reject(reason: &'static str) {
    metrics::counter!(names::REPORTS_REJECTED, "reason" => reason).increment(1);
}
