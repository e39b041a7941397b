//! Subscriptions: the public follows one incident, or every incident of a provider, by e-mail or
//! SMS, with double opt-in and one-click unsubscribe; and the fan-out that brings every incident
//! update to confirmed subscribers and to the reporters of the incident.
//!
//! - `POST /api/v1/subscriptions` → `202 {"status": "pending", "id"}`: the pending subscription
//!   and its confirmation message (a link for e-mail, a six-digit code for SMS) are written in one
//!   transaction. The answer is the same whether or not the contact already subscribed, and the id
//!   is fresh every time, so the form reveals nothing about anyone's subscriptions.
//! - Abuse: per client address (`rate_limits.*.subscribe_ip`) and per contact
//!   (`subscriptions.max_confirmations_per_contact_per_day`, counted in the store), both `429`
//!   with `Retry-After`; a confirmation code is refused after `confirm_code_attempts` wrong tries.
//! - `POST /api/v1/subscriptions/confirm` `{"id", "code"|"token"}` and the e-mail link
//!   `GET /subscriptions/confirm?id=&token=`.
//! - `GET|POST /unsubscribe/{id}/{token}`: a confirmation page, and the RFC 8058 one-click POST.
//! - `GET|POST /notices/stop/{report}/{token}`: the same for a reporter's incident notices (the
//!   link goes with every incident update sent to a reporter).
//! - `GET /api/v1/incidents/{id}/updates/{update_id}/delivery` (staff): fan-out progress.
//!
//! Tokens are recomputed from the subscription or report id ([`Keys::token`]) rather than
//! stored; the code is stored only as a keyed hash bound to the id.

pub mod config;
pub mod fanout;
mod pages;
mod progress;
pub mod request;

use std::collections::HashMap;
use std::time::Duration;

use axum::Router;
use axum::extract::{FromRequest as _, Path, Query, Request, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::json;
use uuid::Uuid;

pub use config::{FanoutConfig, SubscriptionsConfig};
pub use fanout::FanoutWorker;
pub use progress::DeliveryCounts;
use request::{ConfirmBody, ConfirmWith, Lang, SubscribeBody, Target, ValidSubscribe};

use crate::app::AppState;
use crate::crypto::Keys;
use crate::http::ApiError;
use crate::http::client_ip::Client;
use crate::http::error::ErrorBody;
use crate::http::json::{self, JsonBody};
use crate::incident::Commander;
use crate::incident::model::{IncidentState, StateFilter};
use crate::store::{
    Confirm, ConfirmOutcome, ContactLimit, NewMessage, NewSubscription, Proof, Scope,
    SubscribeOutcome,
};
use crate::telemetry::names;

/// Subscription bodies are a few fields.
const BODY_LIMIT: usize = 4 * 1024;

/// Purposes of the per-subscription tokens (see [`Keys::token`]).
pub const CONFIRM_TOKEN: &str = "confirm";
pub const STOP_NOTICES_TOKEN: &str = "stop-notices";
pub const UNSUBSCRIBE_TOKEN: &str = "unsubscribe";

/// Outbox templates and source kinds this module writes.
pub const CONFIRM_TEMPLATE: &str = "subscription_confirm";
pub const SUBSCRIPTION_SOURCE: &str = "subscription";

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/v1/subscriptions", post(subscribe))
        .route("/api/v1/subscriptions/confirm", post(confirm))
        .route("/subscriptions/confirm", get(confirm_link))
        .route(
            "/unsubscribe/{id}/{token}",
            get(unsubscribe_page).post(unsubscribe),
        )
        .route(
            "/notices/stop/{id}/{token}",
            get(stop_notices_page).post(stop_notices),
        )
        .route(
            "/api/v1/incidents/{id}/updates/{update_id}/delivery",
            get(delivery),
        )
        .layer(json::limit(BODY_LIMIT))
}

/// The keyed hash a confirmation code is stored as: bound to its subscription, so the same code
/// of two subscriptions hashes differently.
pub fn code_hmac(keys: &Keys, id: Uuid, code: &str) -> [u8; 32] {
    keys.hash(&format!("confirm-code:{id}:{code}"))
}

/// The link that confirms an e-mail subscription.
pub fn confirm_url(base: &str, keys: &Keys, id: Uuid) -> String {
    format!(
        "{}/subscriptions/confirm?id={id}&token={}",
        base.trim_end_matches('/'),
        keys.token(CONFIRM_TOKEN, id)
    )
}

/// The one-click unsubscribe link of a subscription (also the `List-Unsubscribe` target).
pub fn unsubscribe_url(base: &str, keys: &Keys, id: Uuid) -> String {
    format!(
        "{}/unsubscribe/{id}/{}",
        base.trim_end_matches('/'),
        keys.token(UNSUBSCRIBE_TOKEN, id)
    )
}

/// The link that stops a reporter's notices about the incident of report `id` (also the
/// `List-Unsubscribe` target of those messages).
pub fn stop_notices_url(base: &str, keys: &Keys, id: Uuid) -> String {
    format!(
        "{}/notices/stop/{id}/{}",
        base.trim_end_matches('/'),
        keys.token(STOP_NOTICES_TOKEN, id)
    )
}

// ---- subscribe ---------------------------------------------------------------------------------

#[utoipa::path(
    post,
    path = "/api/v1/subscriptions",
    tag = "subscriptions",
    description = "Subscribe to outage notices of one open incident or of a provider; a confirmation (link by e-mail, code by SMS) is sent and nothing else until it is confirmed. The answer is the same whether or not the contact was known.",
    request_body(content = Object, content_type = "application/json", description = "`{\"email\"|\"phone\", \"incident_id\"|\"provider\", \"lang\": \"ko|en\"}`"),
    responses(
        (status = 202, description = "`{\"status\": \"pending\", \"id\"}`"),
        (status = 400, description = "Malformed JSON", body = ErrorBody),
        (status = 413, description = "Body larger than 4 KiB", body = ErrorBody),
        (status = 415, description = "Not JSON", body = ErrorBody),
        (status = 422, description = "Invalid fields, by JSON path", body = ErrorBody),
        (status = 429, description = "Too many requests from this address, or confirmations to this contact today", body = ErrorBody),
    )
)]
pub(crate) async fn subscribe(
    State(state): State<AppState>,
    Client(client): Client,
    request: Request,
) -> Result<Response, ApiError> {
    // Refuse before parsing the body (the request layer reads and drops it after the answer):
    // a refusal must stay cheap under a flood.
    state.limiters.check_subscribe_ip(&client)?;
    let JsonBody(body) = JsonBody::<SubscribeBody>::from_request(request, &state).await?;
    let valid = body.validate().map_err(ApiError::Validation)?;
    let (scope, scope_label) = resolve_target(&state, &valid).await?;
    let ValidSubscribe { contact, lang, .. } = valid;

    let now = state.clock.now();
    let id = Uuid::now_v7();
    let code = format!("{:06}", rand::random_range(0..1_000_000_u32));
    let sealed = state.keys.seal_contact(&contact.normalised());
    let channel = contact.channel();
    let confirmation = NewMessage {
        id: Uuid::now_v7(),
        channel,
        template: CONFIRM_TEMPLATE.into(),
        lang: lang.as_ref().to_owned(),
        recipient: sealed.ciphertext.clone(),
        payload: json!({"subscription_id": id, "code": code, "scope": scope_label}),
        source_kind: SUBSCRIPTION_SOURCE.into(),
        source_id: Some(id),
        not_before: now,
        lease: None,
    };
    let request = NewSubscription {
        id,
        channel,
        contact: sealed,
        scope,
        lang: lang.as_ref().to_owned(),
        confirm_code_hmac: code_hmac(&state.keys, id, &code),
        unsubscribe_token_hmac: state.keys.hash(&format!(
            "unsubscribe-token:{}",
            state.keys.token(UNSUBSCRIBE_TOKEN, id)
        )),
        at: now,
        confirmation,
    };
    let limit = ContactLimit {
        max: state
            .config
            .subscriptions
            .max_confirmations_per_contact_per_day,
        since: now - fanout::CONTACT_WINDOW,
    };
    let outcome = match state.store.request_subscription(&request, limit).await {
        // Another request for the same subscription committed first; it sends the message.
        Err(crate::store::StoreError::Conflict(_)) => SubscribeOutcome::AlreadyConfirmed,
        other => other?,
    };
    match outcome {
        SubscribeOutcome::Pending => {
            tracing::info!(subscription = %id, channel = channel.as_ref(),
                contact = %contact.masked(), "subscription requested");
        }
        SubscribeOutcome::AlreadyConfirmed => {
            tracing::info!(channel = channel.as_ref(), contact = %contact.masked(),
                "subscription requested again; already confirmed, nothing sent");
        }
        SubscribeOutcome::Limited { oldest } => {
            metrics::counter!(names::RATE_LIMITED, "limiter" => "subscribe_contact").increment(1);
            tracing::info!(contact = %contact.masked(),
                "subscription refused: daily confirmation limit of this contact reached");
            let wait = (oldest + fanout::CONTACT_WINDOW - now)
                .to_std()
                .unwrap_or_default()
                .max(Duration::from_secs(1));
            return Err(ApiError::RateLimited { retry_after: wait });
        }
    }
    let message = match (channel, lang) {
        (crate::store::MessageChannel::Sms, Lang::Ko) => {
            "확인 코드를 문자로 보냈습니다. 코드를 입력하면 구독이 시작됩니다."
        }
        (crate::store::MessageChannel::Email, Lang::Ko) => {
            "확인 메일을 보냈습니다. 메일의 링크를 열면 구독이 시작됩니다."
        }
        (crate::store::MessageChannel::Sms, Lang::En) => {
            "We sent a confirmation code by SMS. Enter it to start the subscription."
        }
        (crate::store::MessageChannel::Email, Lang::En) => {
            "We sent a confirmation e-mail. Open its link to start the subscription."
        }
    };
    Ok((
        StatusCode::ACCEPTED,
        [(header::CACHE_CONTROL, "no-store")],
        axum::Json(json!({
            "status": "pending",
            "id": id,
            "channel": channel.as_ref(),
            "message": message,
        })),
    )
        .into_response())
}

/// The stored scope and the words the confirmation message uses for it. An incident must exist
/// and be open; a provider is spelt as in its incidents when one matches regardless of case, so
/// "kakao" follows the incidents of "Kakao".
async fn resolve_target(
    state: &AppState,
    valid: &ValidSubscribe,
) -> Result<(Scope, String), ApiError> {
    match &valid.target {
        Target::Incident(id) => {
            let detail = match state.incidents.detail(*id).await {
                Ok(detail) => Some(detail),
                Err(ApiError::NotFound) => None,
                Err(e) => return Err(e),
            };
            let Some(incident) = detail
                .map(|d| d.record.incident.clone())
                .filter(|i| i.state == IncidentState::Open)
            else {
                return Err(ApiError::validation(
                    "incident_id",
                    "no open incident with this id",
                ));
            };
            let title = match valid.lang {
                Lang::En => incident.title.en.unwrap_or(incident.title.ko),
                Lang::Ko => incident.title.ko,
            };
            Ok((Scope::Incident(*id), title))
        }
        Target::Provider(name) => {
            let known = state.incidents.list(StateFilter::All).await?;
            let name = known
                .iter()
                .filter_map(|i| i.provider.as_deref())
                .find(|p| p.to_lowercase() == name.to_lowercase())
                .map_or_else(|| name.clone(), str::to_owned);
            Ok((Scope::Provider(name.clone()), name))
        }
    }
}

// ---- confirm -----------------------------------------------------------------------------------

#[utoipa::path(
    post,
    path = "/api/v1/subscriptions/confirm",
    tag = "subscriptions",
    description = "Confirm a subscription with the SMS code or the e-mail link's token.",
    request_body(content = Object, content_type = "application/json", description = "`{\"id\", \"code\"}` or `{\"id\", \"token\"}`"),
    responses(
        (status = 200, description = "`{\"status\": \"confirmed\", \"id\"}`"),
        (status = 400, description = "Malformed JSON", body = ErrorBody),
        (status = 404, description = "No such pending subscription", body = ErrorBody),
        (status = 413, description = "Body larger than 4 KiB", body = ErrorBody),
        (status = 415, description = "Not JSON", body = ErrorBody),
        (status = 422, description = "Invalid fields or a wrong code (`invalid_code`)", body = ErrorBody),
    )
)]
pub(crate) async fn confirm(
    State(state): State<AppState>,
    JsonBody(body): JsonBody<ConfirmBody>,
) -> Result<Response, ApiError> {
    let (id, with) = body.validate().map_err(ApiError::Validation)?;
    match confirm_with(&state, id, &with).await? {
        ConfirmOutcome::Confirmed | ConfirmOutcome::AlreadyConfirmed => Ok((
            [(header::CACHE_CONTROL, "no-store")],
            axum::Json(json!({"status": "confirmed", "id": id})),
        )
            .into_response()),
        ConfirmOutcome::Invalid => Err(invalid_code()),
    }
}

/// Every failed confirmation looks the same, whatever the reason.
fn invalid_code() -> ApiError {
    ApiError::Unprocessable {
        code: "invalid_code",
        message: "the code or link is wrong or has expired; after several wrong codes, \
                  subscribe again to get a new one"
            .into(),
    }
}

async fn confirm_with(
    state: &AppState,
    id: Uuid,
    with: &ConfirmWith,
) -> Result<ConfirmOutcome, ApiError> {
    let proof = match with {
        ConfirmWith::Code(code) => Proof::CodeHmac(code_hmac(&state.keys, id, code)),
        ConfirmWith::Token(token) if state.keys.token_matches(CONFIRM_TOKEN, id, token) => {
            Proof::VerifiedToken
        }
        ConfirmWith::Token(_) => return Ok(ConfirmOutcome::Invalid),
    };
    let now = state.clock.now();
    let config = &state.config.subscriptions;
    let outcome = state
        .store
        .confirm_subscription(&Confirm {
            id,
            proof,
            at: now,
            max_attempts: config.confirm_code_attempts,
            issued_after: now - config.pending_expiry(),
        })
        .await?;
    if outcome == ConfirmOutcome::Confirmed {
        tracing::info!(subscription = %id, "subscription confirmed");
    }
    Ok(outcome)
}

/// The link in the confirmation e-mail.
async fn confirm_link(
    State(state): State<AppState>,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let id = params.get("id").and_then(|id| Uuid::try_parse(id).ok());
    let token = params.get("token");
    let outcome = match (id, token) {
        (Some(id), Some(token)) => {
            confirm_with(&state, id, &ConfirmWith::Token(token.clone())).await?
        }
        _ => ConfirmOutcome::Invalid,
    };
    Ok(match outcome {
        ConfirmOutcome::Confirmed | ConfirmOutcome::AlreadyConfirmed => pages::confirmed(),
        ConfirmOutcome::Invalid => pages::invalid_confirmation(),
    })
}

// ---- unsubscribe -------------------------------------------------------------------------------

/// The id whose token for `purpose` is `token`.
fn link_target(state: &AppState, purpose: &str, id: &str, token: &str) -> Option<Uuid> {
    Uuid::try_parse(id)
        .ok()
        .filter(|id| state.keys.token_matches(purpose, *id, token))
}

/// Opening the link shows a button; only the POST unsubscribes, so a mail scanner that follows
/// links does not unsubscribe anyone.
async fn unsubscribe_page(
    State(state): State<AppState>,
    Path((id, token)): Path<(String, String)>,
) -> Response {
    match link_target(&state, UNSUBSCRIBE_TOKEN, &id, &token) {
        Some(id) => pages::unsubscribe_form(&format!("/unsubscribe/{id}/{token}")),
        None => pages::unknown_link(),
    }
}

/// RFC 8058 one-click (`List-Unsubscribe=One-Click`) and the page's button. The token in the
/// path is the authority, so no CSRF token is needed or possible; the body is not read.
async fn unsubscribe(
    State(state): State<AppState>,
    Path((id, token)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let Some(id) = link_target(&state, UNSUBSCRIBE_TOKEN, &id, &token) else {
        return Ok(pages::unknown_link());
    };
    if state.store.unsubscribe(id, state.clock.now()).await? {
        tracing::info!(subscription = %id, "unsubscribed");
    }
    // Unsubscribing twice, or after the subscription expired, has the same result.
    Ok(pages::unsubscribed())
}

/// A reporter's stop link: a page with a button, as for a subscription.
async fn stop_notices_page(
    State(state): State<AppState>,
    Path((id, token)): Path<(String, String)>,
) -> Response {
    match link_target(&state, STOP_NOTICES_TOKEN, &id, &token) {
        Some(id) => pages::stop_notices_form(&format!("/notices/stop/{id}/{token}")),
        None => pages::unknown_link(),
    }
}

/// The button, or a mail client's RFC 8058 one-click POST: no more incident notices for this
/// report's contact. Messages about the report itself are not affected.
async fn stop_notices(
    State(state): State<AppState>,
    Path((id, token)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let Some(id) = link_target(&state, STOP_NOTICES_TOKEN, &id, &token) else {
        return Ok(pages::unknown_link());
    };
    if state.store.stop_incident_notices(id).await? {
        tracing::info!(report = %id, "incident notices stopped");
    }
    Ok(pages::notices_stopped())
}

// ---- delivery progress -------------------------------------------------------------------------

/// `{"fanout", "enqueued", "queued", "sending", "sent", "failed", "dead"}` for one update.
#[utoipa::path(
    get,
    path = "/api/v1/incidents/{id}/updates/{update_id}/delivery",
    tag = "subscriptions",
    description = "Fan-out and delivery progress of one incident update (staff).",
    params(("id" = String, Path, description = "The incident id"), ("update_id" = String, Path, description = "The update id")),
    responses(
        (status = 200, description = "`{\"fanout\": \"pending|running|done\", \"enqueued\", \"queued\", \"sending\", \"sent\", \"failed\", \"dead\"}`"),
        (status = 401, description = "No valid `Authorization: Bearer <admin.token>`", body = ErrorBody),
        (status = 404, description = "No such update", body = ErrorBody),
    )
)]
pub(crate) async fn delivery(
    _by: Commander,
    State(state): State<AppState>,
    Path((id, update_id)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let (Ok(id), Ok(update_id)) = (Uuid::try_parse(&id), Uuid::try_parse(&update_id)) else {
        return Err(ApiError::NotFound);
    };
    let progress = state
        .delivery
        .get(&state.store, id, update_id)
        .await?
        .ok_or(ApiError::NotFound)?;
    Ok((
        [(header::CACHE_CONTROL, "no-store")],
        axum::Json(json!({
            "incident_id": id,
            "update_id": update_id,
            "fanout": progress.state.as_ref(),
            "enqueued": progress.enqueued,
            "queued": progress.messages.pending,
            "sending": progress.messages.sending,
            "sent": progress.messages.sent,
            "failed": progress.messages.failed,
            "dead": progress.messages.dead,
        })),
    )
        .into_response())
}
