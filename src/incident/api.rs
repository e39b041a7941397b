//! Incident routes: public reads (cache-fronted) and commander commands (bearer token).
//!
//! Commands check the token before reading the body, so a request without the right token is
//! answered 401 whatever it carries, and changes nothing.

use std::collections::{BTreeMap, HashMap};

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use chrono::{DateTime, TimeZone as _, Utc};
use serde::Deserialize;
use uuid::Uuid;

use super::auth::{Commander, Viewer};
use super::mode::{Mode, ModeOverride};
use super::model::{IncidentStatus, Localized, Severity, StateFilter};
use super::views::IncidentView;
use super::{Declaration, IncidentDetail, SurgeDetails};
use crate::app::AppState;
use crate::http::ApiError;
use crate::http::error::ErrorBody;
use crate::http::json::{self, JsonBody};
use crate::store::Timestamp;

/// Commands are small; anything bigger is a mistake.
const COMMAND_BODY_LIMIT: usize = 64 * 1024;

const TITLE_MAX: usize = 200;
const MESSAGE_MAX: usize = 5000;
const NAME_MAX: usize = 100;
const SERVICES_MAX: usize = 50;

/// A `started_at` this far ahead of our clock is still accepted (the commander's clock may run
/// a little fast).
const CLOCK_SKEW: chrono::Duration = chrono::Duration::seconds(60);

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/v1/status", get(status))
        .route("/api/v1/incidents", get(list).post(declare))
        .route("/api/v1/incidents/{id}", get(detail))
        .route("/api/v1/incidents/{id}/updates", post(post_update))
        .route("/api/v1/incidents/{id}/confirm", post(confirm))
        .route("/api/v1/incidents/{id}/dismiss", post(dismiss))
        .route("/api/v1/mode", put(set_mode))
        .layer(json::limit(COMMAND_BODY_LIMIT))
}

// ---- public reads ------------------------------------------------------------------------

/// `{"mode": …, "incidents": [open incidents with their latest update]}`.
#[utoipa::path(
    get,
    path = "/api/v1/status",
    tag = "incidents",
    description = "The service mode and every open incident with its latest update; cache-fronted.",
    responses(
        (status = 200, description = "`{\"mode\": \"normal|incident\", \"incidents\": [...]}`"),
    )
)]
pub(crate) async fn status(State(state): State<AppState>) -> Result<Response, ApiError> {
    let open = state.incidents.open_incidents().await?;
    let mode = state.mode.current();
    // Rendered once per cache load for each mode; every answer shares those bytes.
    let body = open.status_body(mode);
    Ok((
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            ),
            (header::CACHE_CONTROL, public_cache_control(&state, mode)),
        ],
        body,
    )
        .into_response())
}

/// `?state=open|resolved|dismissed|all` (default `all`), most recently started first.
#[utoipa::path(
    get,
    path = "/api/v1/incidents",
    tag = "incidents",
    description = "Incidents, most recently started first; cache-fronted.",
    params(("state" = Option<String>, Query, description = "open, resolved, dismissed or all (default)")),
    responses(
        (status = 200, description = "`{\"state\", \"incidents\": [...]}`"),
        (status = 422, description = "An unknown `state` or query parameter", body = ErrorBody),
    )
)]
pub(crate) async fn list(
    State(state): State<AppState>,
    query: Result<Query<HashMap<String, String>>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(params) = query.map_err(|e| ApiError::BadRequest {
        code: "malformed_query",
        message: e.body_text(),
    })?;
    let mut problems = Problems::default();
    for name in params.keys().filter(|k| k.as_str() != "state") {
        problems.add(name.clone(), "unknown query parameter");
    }
    let filter = match params.get("state") {
        None => StateFilter::All,
        Some(value) => value.parse().unwrap_or_else(|_| {
            problems.add("state", "must be one of: open, resolved, dismissed, all");
            StateFilter::All
        }),
    };
    problems.finish()?;
    let incidents = state.incidents.list(filter).await?;
    let views: Vec<_> = incidents.iter().map(IncidentView::summary).collect();
    let body = serde_json::json!({"state": filter.as_ref(), "incidents": views});
    Ok((
        [(
            header::CACHE_CONTROL,
            public_cache_control(&state, state.mode.current()),
        )],
        axum::Json(body),
    )
        .into_response())
}

/// One incident with its updates and linked-report count; staff also see the notice clock.
#[utoipa::path(
    get,
    path = "/api/v1/incidents/{id}",
    tag = "incidents",
    description = "One incident with its updates and the count of linked reports; with a valid bearer token also the statutory notice clock and staff fields.",
    params(("id" = String, Path, description = "The incident id")),
    responses(
        (status = 200, description = "The incident"),
        (status = 404, description = "No such incident", body = ErrorBody),
    )
)]
pub(crate) async fn detail(
    viewer: Viewer,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let id = parse_id(&id)?;
    let detail = state.incidents.detail(id).await?;
    let staff = matches!(viewer, Viewer::Staff(_));
    let cache_control = if staff {
        HeaderValue::from_static("private, no-store")
    } else {
        public_cache_control(&state, state.mode.current())
    };
    Ok((
        [
            (header::CACHE_CONTROL, cache_control),
            (header::VARY, HeaderValue::from_static("authorization")),
        ],
        axum::Json(IncidentView::detail(
            &detail.record,
            detail.reports_linked,
            staff,
        )),
    )
        .into_response())
}

/// Shared caches may keep a public answer as long as we do.
fn public_cache_control(state: &AppState, mode: Mode) -> HeaderValue {
    let c = &state.config.incident;
    let ttl = match mode {
        Mode::Normal => c.read_cache_ttl(),
        Mode::Incident => c.read_cache_ttl_incident(),
    };
    HeaderValue::from_str(&format!("public, max-age={}", ttl.as_secs()))
        .unwrap_or(HeaderValue::from_static("no-cache"))
}

// ---- commands ------------------------------------------------------------------------------

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TextBody {
    ko: Option<String>,
    en: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct DeclareBody {
    title: Option<TextBody>,
    provider: Option<String>,
    services: Option<Vec<String>>,
    started_at: Option<String>,
    severity: Option<String>,
    message: Option<TextBody>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct UpdateBody {
    status: Option<String>,
    message: Option<TextBody>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ConfirmBody {
    title: Option<TextBody>,
    provider: Option<String>,
    services: Option<Vec<String>>,
    severity: Option<String>,
    message: Option<TextBody>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct DismissBody {
    message: Option<TextBody>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ModeBody {
    mode: Option<String>,
}

/// `POST /api/v1/incidents` → 201 with the incident; the service enters incident mode.
#[utoipa::path(
    post,
    path = "/api/v1/incidents",
    tag = "incidents",
    description = "Declare an incident (commander). Enters incident mode.",
    request_body(content = Object, content_type = "application/json", description = "`{\"title\": {\"ko\", \"en\"?}, \"provider\", \"services\": [..], \"started_at\": RFC 3339, \"severity\": \"minor|major|critical\", \"message\": {\"ko\", \"en\"?}}`"),
    responses(
        (status = 201, description = "The incident, `state: open`"),
        (status = 400, description = "Malformed JSON", body = ErrorBody),
        (status = 401, description = "No valid `Authorization: Bearer <admin.token>`", body = ErrorBody),
        (status = 413, description = "Body larger than 64 KiB", body = ErrorBody),
        (status = 415, description = "Not JSON", body = ErrorBody),
        (status = 422, description = "Invalid fields, by JSON path", body = ErrorBody),
    )
)]
pub(crate) async fn declare(
    by: Commander,
    State(state): State<AppState>,
    JsonBody(body): JsonBody<DeclareBody>,
) -> Result<Response, ApiError> {
    let declaration = parse_declaration(body, state.clock.now())?;
    let detail = state.incidents.declare(declaration, &by).await?;
    let location = format!("/api/v1/incidents/{}", detail.record.incident.id);
    let mut response = command_answer(StatusCode::CREATED, &detail);
    if let Ok(value) = HeaderValue::from_str(&location) {
        response.headers_mut().insert(header::LOCATION, value);
    }
    Ok(response)
}

/// `POST /api/v1/incidents/{id}/updates` → 201 with the incident; `resolved` closes it.
#[utoipa::path(
    post,
    path = "/api/v1/incidents/{id}/updates",
    tag = "incidents",
    description = "Post a lifecycle update (commander); `resolved` closes the incident. Fans out to subscribers and linked reporters.",
    params(("id" = String, Path, description = "The incident id")),
    request_body(content = Object, content_type = "application/json", description = "`{\"status\": \"investigating|identified|monitoring|resolved\", \"message\": {\"ko\", \"en\"?}}`"),
    responses(
        (status = 201, description = "The update"),
        (status = 400, description = "Malformed JSON", body = ErrorBody),
        (status = 401, description = "No valid `Authorization: Bearer <admin.token>`", body = ErrorBody),
        (status = 404, description = "No such incident", body = ErrorBody),
        (status = 413, description = "Body larger than 64 KiB", body = ErrorBody),
        (status = 415, description = "Not JSON", body = ErrorBody),
        (status = 422, description = "Invalid fields, or the incident is closed (`incident_closed`)", body = ErrorBody),
    )
)]
pub(crate) async fn post_update(
    by: Commander,
    State(state): State<AppState>,
    Path(id): Path<String>,
    JsonBody(body): JsonBody<UpdateBody>,
) -> Result<Response, ApiError> {
    let id = parse_id(&id)?;
    let mut problems = Problems::default();
    let status = match body.status.as_deref().map(str::trim) {
        None | Some("") => {
            problems.add("status", "is required");
            None
        }
        Some(value) => match value.parse::<IncidentStatus>() {
            Ok(status) if status.is_lifecycle() => Some(status),
            _ => {
                problems.add(
                    "status",
                    "must be one of: investigating, identified, monitoring, resolved",
                );
                None
            }
        },
    };
    let message = problems.text("message", body.message, MESSAGE_MAX, true, true);
    problems.finish()?;
    let (Some(status), Some(message)) = (status, message) else {
        return Err(ApiError::validation("status", "is required"));
    };
    let detail = state
        .incidents
        .post_update(id, status, message, &by)
        .await?;
    Ok(command_answer(StatusCode::CREATED, &detail))
}

/// `POST /api/v1/incidents/{id}/confirm` (body optional) → 200 with the incident.
#[utoipa::path(
    post,
    path = "/api/v1/incidents/{id}/confirm",
    tag = "incidents",
    description = "Confirm an unconfirmed surge incident (commander), optionally completing its details.",
    params(("id" = String, Path, description = "The incident id")),
    request_body(content = Object, content_type = "application/json", description = "Optional details: title, provider, services, severity, message"),
    responses(
        (status = 200, description = "The incident"),
        (status = 400, description = "Malformed JSON", body = ErrorBody),
        (status = 401, description = "No valid `Authorization: Bearer <admin.token>`", body = ErrorBody),
        (status = 404, description = "No such incident", body = ErrorBody),
        (status = 413, description = "Body larger than 64 KiB", body = ErrorBody),
        (status = 415, description = "Not JSON", body = ErrorBody),
        (status = 422, description = "Invalid fields, or not an unconfirmed surge", body = ErrorBody),
    )
)]
pub(crate) async fn confirm(
    by: Commander,
    State(state): State<AppState>,
    Path(id): Path<String>,
    body: Option<JsonBody<ConfirmBody>>,
) -> Result<Response, ApiError> {
    let id = parse_id(&id)?;
    let mut details = SurgeDetails::default();
    if let Some(JsonBody(body)) = body {
        let mut problems = Problems::default();
        details.title = problems.text("title", body.title, TITLE_MAX, false, false);
        details.provider = body
            .provider
            .and_then(|p| problems.name("provider", &p, NAME_MAX));
        details.services = body.services.and_then(|s| problems.services(&s));
        details.severity = body.severity.and_then(|s| problems.severity(&s));
        details.message = problems.text("message", body.message, MESSAGE_MAX, false, true);
        problems.finish()?;
    }
    let detail = state.incidents.confirm(id, details, &by).await?;
    Ok(command_answer(StatusCode::OK, &detail))
}

/// `POST /api/v1/incidents/{id}/dismiss` (body optional) → 200 with the incident.
#[utoipa::path(
    post,
    path = "/api/v1/incidents/{id}/dismiss",
    tag = "incidents",
    description = "Dismiss an unconfirmed surge incident as not an incident (commander).",
    params(("id" = String, Path, description = "The incident id")),
    request_body(content = Object, content_type = "application/json", description = "Optional `{\"message\": {\"ko\", \"en\"?}}`"),
    responses(
        (status = 200, description = "The incident, `state: dismissed`"),
        (status = 400, description = "Malformed JSON", body = ErrorBody),
        (status = 401, description = "No valid `Authorization: Bearer <admin.token>`", body = ErrorBody),
        (status = 404, description = "No such incident", body = ErrorBody),
        (status = 413, description = "Body larger than 64 KiB", body = ErrorBody),
        (status = 415, description = "Not JSON", body = ErrorBody),
        (status = 422, description = "Not an unconfirmed surge", body = ErrorBody),
    )
)]
pub(crate) async fn dismiss(
    by: Commander,
    State(state): State<AppState>,
    Path(id): Path<String>,
    body: Option<JsonBody<DismissBody>>,
) -> Result<Response, ApiError> {
    let id = parse_id(&id)?;
    let mut problems = Problems::default();
    let message =
        body.and_then(|JsonBody(b)| problems.text("message", b.message, MESSAGE_MAX, false, true));
    problems.finish()?;
    let detail = state.incidents.dismiss(id, message, &by).await?;
    Ok(command_answer(StatusCode::OK, &detail))
}

/// `PUT /api/v1/mode` `{"mode": "normal|incident|auto"}` → 200
/// `{"mode", "override", "automatic"}`.
#[utoipa::path(
    put,
    path = "/api/v1/mode",
    tag = "incidents",
    description = "Force the service mode, or give it back to incidents and surge detection (`auto`).",
    request_body(content = Object, content_type = "application/json", description = "`{\"mode\": \"normal|incident|auto\"}`"),
    responses(
        (status = 200, description = "The mode state"),
        (status = 400, description = "Malformed JSON", body = ErrorBody),
        (status = 401, description = "No valid `Authorization: Bearer <admin.token>`", body = ErrorBody),
        (status = 413, description = "Body larger than 64 KiB", body = ErrorBody),
        (status = 415, description = "Not JSON", body = ErrorBody),
        (status = 422, description = "Unknown mode", body = ErrorBody),
    )
)]
pub(crate) async fn set_mode(
    by: Commander,
    State(state): State<AppState>,
    JsonBody(body): JsonBody<ModeBody>,
) -> Result<Response, ApiError> {
    let forced = match body.mode.as_deref().map(str::trim) {
        None | Some("") => return Err(ApiError::validation("mode", "is required")),
        Some(value) => value
            .parse::<ModeOverride>()
            .map_err(|_| ApiError::validation("mode", "must be one of: normal, incident, auto"))?,
    };
    let state = state.incidents.set_mode(forced, &by).await?;
    Ok(axum::Json(state).into_response())
}

/// A command's answer: the incident as staff see it, never cached.
fn command_answer(status: StatusCode, detail: &IncidentDetail) -> Response {
    (
        status,
        [(header::CACHE_CONTROL, "no-store")],
        axum::Json(IncidentView::detail(
            &detail.record,
            detail.reports_linked,
            true,
        )),
    )
        .into_response()
}

/// A malformed id names no incident: 404, as for an unknown one.
fn parse_id(text: &str) -> Result<Uuid, ApiError> {
    Uuid::try_parse(text).map_err(|_| ApiError::NotFound)
}

fn parse_declaration(body: DeclareBody, now: Timestamp) -> Result<Declaration, ApiError> {
    let mut p = Problems::default();
    let title = p.text("title", body.title, TITLE_MAX, true, false);
    let provider = match body.provider {
        Some(provider) => p.name("provider", &provider, NAME_MAX),
        None => p.missing("provider"),
    };
    let services = match body.services {
        Some(services) => p.services(&services),
        None => p.missing("services"),
    };
    let started_at = match body.started_at {
        Some(text) => p.started_at(&text, now),
        None => p.missing("started_at"),
    };
    let severity = match body.severity {
        Some(text) => p.severity(&text),
        None => p.missing("severity"),
    };
    let message = p.text("message", body.message, MESSAGE_MAX, true, true);
    p.finish()?;
    match (title, provider, services, started_at, severity, message) {
        (
            Some(title),
            Some(provider),
            Some(services),
            Some(started_at),
            Some(severity),
            Some(message),
        ) => Ok(Declaration {
            title,
            provider,
            services,
            started_at,
            severity,
            message,
        }),
        // Every `None` above recorded a problem, so `finish` has already answered.
        _ => Err(ApiError::validation("(body)", "incomplete declaration")),
    }
}

/// Validation problems by JSON path, collected so one answer names them all.
#[derive(Debug, Default)]
pub(crate) struct Problems(BTreeMap<String, String>);

impl Problems {
    pub(crate) fn add(&mut self, path: impl Into<String>, problem: impl Into<String>) {
        self.0.entry(path.into()).or_insert_with(|| problem.into());
    }

    fn missing<T>(&mut self, path: &str) -> Option<T> {
        self.add(path, "is required");
        None
    }

    pub(crate) fn finish(self) -> Result<(), ApiError> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(ApiError::Validation(self.0))
        }
    }

    /// Trimmed, non-empty, at most `max` characters, no control characters (line breaks
    /// allowed in `multiline` text).
    pub(crate) fn checked(
        &mut self,
        path: &str,
        value: &str,
        max: usize,
        multiline: bool,
    ) -> Option<String> {
        let value = value.trim();
        if value.is_empty() {
            self.add(path, "must not be empty");
            return None;
        }
        if value.chars().count() > max {
            self.add(path, format!("must be at most {max} characters"));
            return None;
        }
        let allowed = |c: char| !c.is_control() || (multiline && matches!(c, '\n' | '\r' | '\t'));
        if !value.chars().all(allowed) {
            self.add(path, "must not contain control characters");
            return None;
        }
        Some(value.to_owned())
    }

    fn name(&mut self, path: &str, value: &str, max: usize) -> Option<String> {
        self.checked(path, value, max, false)
    }

    /// `{"ko": required, "en": optional}`; an empty `en` counts as absent.
    fn text(
        &mut self,
        path: &str,
        value: Option<TextBody>,
        max: usize,
        required: bool,
        multiline: bool,
    ) -> Option<Localized> {
        let Some(value) = value else {
            return if required { self.missing(path) } else { None };
        };
        let ko = match value.ko {
            Some(ko) => self.checked(&format!("{path}.ko"), &ko, max, multiline),
            None => self.missing(&format!("{path}.ko")),
        };
        let en = value
            .en
            .filter(|en| !en.trim().is_empty())
            .and_then(|en| self.checked(&format!("{path}.en"), &en, max, multiline));
        ko.map(|ko| Localized { ko, en })
    }

    /// One or more distinct service names; duplicates are dropped.
    fn services(&mut self, services: &[String]) -> Option<Vec<String>> {
        if services.is_empty() {
            self.add("services", "must name at least one affected service");
            return None;
        }
        if services.len() > SERVICES_MAX {
            self.add(
                "services",
                format!("must name at most {SERVICES_MAX} services"),
            );
            return None;
        }
        let mut names: Vec<String> = Vec::with_capacity(services.len());
        let mut ok = true;
        for (i, service) in services.iter().enumerate() {
            match self.checked(&format!("services[{i}]"), service, NAME_MAX, false) {
                Some(name) if !names.contains(&name) => names.push(name),
                Some(_) => {}
                None => ok = false,
            }
        }
        ok.then_some(names)
    }

    fn severity(&mut self, text: &str) -> Option<Severity> {
        text.trim().parse().ok().or_else(|| {
            self.add("severity", "must be one of: minor, major, critical");
            None
        })
    }

    /// RFC 3339, not in the future, not before 2000.
    fn started_at(&mut self, text: &str, now: Timestamp) -> Option<Timestamp> {
        let Ok(at) = DateTime::parse_from_rfc3339(text.trim()) else {
            self.add(
                "started_at",
                "must be an RFC 3339 time with an offset, e.g. 2022-10-15T15:30:00+09:00",
            );
            return None;
        };
        let at = at.with_timezone(&Utc);
        if at > now + CLOCK_SKEW {
            self.add("started_at", "must not be in the future");
            return None;
        }
        if Utc.with_ymd_and_hms(2000, 1, 1, 0, 0, 0).single() > Some(at) {
            self.add("started_at", "must not be before 2000");
            return None;
        }
        Some(at)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(json: serde_json::Value) -> DeclareBody {
        serde_json::from_value(json).unwrap()
    }

    fn now() -> Timestamp {
        Utc.with_ymd_and_hms(2022, 10, 15, 8, 0, 0).unwrap()
    }

    fn fields(error: ApiError) -> BTreeMap<String, String> {
        match error {
            ApiError::Validation(fields) => fields,
            other => panic!("expected a validation error, got {other:?}"),
        }
    }

    #[test]
    fn a_complete_declaration_parses() {
        let d = parse_declaration(
            body(serde_json::json!({
                "title": {"ko": " 카카오 서비스 장애 ", "en": ""},
                "provider": "Kakao",
                "services": ["KakaoTalk", "Kakao T", "KakaoTalk"],
                "started_at": "2022-10-15T15:30:00+09:00",
                "severity": "critical",
                "message": {"ko": "데이터센터 화재로 장애가 발생했습니다.\n복구 중입니다.",
                            "en": "A data-centre fire caused an outage."}
            })),
            now(),
        )
        .unwrap();
        assert_eq!(d.title.ko, "카카오 서비스 장애");
        assert_eq!(d.title.en, None);
        assert_eq!(d.services, ["KakaoTalk", "Kakao T"]);
        assert_eq!(
            d.started_at,
            Utc.with_ymd_and_hms(2022, 10, 15, 6, 30, 0).unwrap()
        );
        assert_eq!(d.severity, Severity::Critical);
    }

    #[test]
    fn every_problem_is_named_by_path() {
        let e = parse_declaration(
            body(serde_json::json!({
                "title": {"en": "no Korean title"},
                "services": ["KakaoTalk", " "],
                "started_at": "2022-10-15T20:00:00+09:00",
                "severity": "catastrophic",
                "message": {"ko": "x".repeat(MESSAGE_MAX + 1)}
            })),
            now(),
        )
        .unwrap_err();
        let f = fields(e);
        for path in [
            "title.ko",
            "provider",
            "services[1]",
            "started_at",
            "severity",
            "message.ko",
        ] {
            assert!(f.contains_key(path), "{path} missing from {f:?}");
        }
        assert_eq!(f["started_at"], "must not be in the future");
    }

    #[test]
    fn malformed_times_and_empty_services_are_refused() {
        let e = parse_declaration(
            body(serde_json::json!({
                "title": {"ko": "장애"}, "provider": "Kakao", "services": [],
                "started_at": "yesterday", "severity": "minor", "message": {"ko": "장애"}
            })),
            now(),
        )
        .unwrap_err();
        let f = fields(e);
        assert!(f["started_at"].contains("RFC 3339"));
        assert!(f.contains_key("services"));
    }
}
