//! The page handlers: home, report form and receipt, lookup, status.

use std::sync::Arc;
use std::time::Duration;

use askama::Template;
use axum::body::Body;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use chrono::Utc;
use uuid::Uuid;

use super::cache::{PageCacheName, identity};
use super::form::{PageErrors, ReportForm, new_idempotency_key, page_errors};
use super::i18n::{LANG_COOKIE, Lang, Text};
use super::views::{IncidentCard, input_time, show_time};
use super::{Caching, Html, STYLESHEET_HREF, csrf};
use crate::app::AppState;
use crate::domain::{Channel, HarmType, Receipt, ReporterType};
use crate::http::ApiError;
use crate::http::client_ip::Client;
use crate::http::error::STORE_RETRY_AFTER;
use crate::incident::{IncidentDetail, Mode};
use crate::intake::lookup::{Contact, matching_report};
use crate::intake::{FieldErrors, IdempotencyKey, SubmitError, ValidReport, idempotency};

/// Largest form body accepted (the API's limit on a report).
const MAX_FORM_BYTES: usize = crate::intake::MAX_REPORT_BYTES;

/// The name of the language switch on a form page (`base.html`): a submit button whose value
/// is the other language. A post carrying it shows the form again in that language with
/// everything typed, and submits nothing.
const SWITCH_FIELD: &str = "switch_lang";

/// A hidden field on a form that was submitted and checked: a language switch from it shows the
/// findings again in the new language. A form not yet submitted switches without findings.
const CHECKED_FIELD: &str = "checked";

/// What every page's frame shows.
pub struct Chrome {
    pub t: &'static Text,
    pub lang: &'static str,
    pub other_lang: &'static str,
    pub title: &'static str,
    pub switch_href: String,
    /// The id of the form the language switch re-posts, instead of linking to `switch_href`.
    pub switch_form: Option<&'static str>,
    pub css: &'static str,
}

impl Chrome {
    /// `path` is the page's own address (with its query, if any) for the language switch.
    fn new(lang: Lang, title: &'static str, path: &str) -> Self {
        let sep = if path.contains('?') { '&' } else { '?' };
        Self {
            t: lang.text(),
            lang: lang.code(),
            other_lang: lang.other().code(),
            title,
            switch_href: format!("{path}{sep}lang={}", lang.other().code()),
            switch_form: None,
            css: STYLESHEET_HREF,
        }
    }

    /// On a form page a link to the other language would lose what the person typed: the
    /// switch re-posts form `form_id` instead ([`SWITCH_FIELD`]).
    fn reposting(self, form_id: &'static str) -> Self {
        Self {
            switch_form: Some(form_id),
            ..self
        }
    }
}

/// The value of `name` among query or form pairs.
fn field<'a>(pairs: &'a [(String, String)], name: &str) -> Option<&'a str> {
    pairs
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

/// The language of a request and its query parameters.
struct PageRequest {
    lang: Lang,
    /// Set when the language was chosen just now (`?lang=`, a form's switch): remember it.
    lang_cookie: Option<HeaderValue>,
    query: Vec<(String, String)>,
    /// A form post made by the language switch ([`SWITCH_FIELD`]): show, do not submit.
    switching: bool,
    /// A form post of a form that had been submitted and checked ([`CHECKED_FIELD`]).
    was_checked: bool,
}

impl PageRequest {
    /// A page asked for: `?lang=` chooses the language.
    fn new(query: Option<&str>, headers: &HeaderMap) -> Self {
        let query: Vec<(String, String)> = query
            .and_then(|q| serde_urlencoded::from_str(q).ok())
            .unwrap_or_default();
        let chosen = Self::choosing(field(&query, "lang"), headers);
        Self { query, ..chosen }
    }

    /// A form post: its language switch ([`SWITCH_FIELD`]) chooses the language.
    fn posted(pairs: &[(String, String)], headers: &HeaderMap) -> Self {
        let switch = field(pairs, SWITCH_FIELD);
        Self {
            switching: switch.is_some(),
            was_checked: field(pairs, CHECKED_FIELD).is_some(),
            ..Self::choosing(switch, headers)
        }
    }

    fn choosing(chosen: Option<&str>, headers: &HeaderMap) -> Self {
        let (lang, switched) = Lang::negotiate(chosen, headers);
        let lang_cookie = switched
            .then(|| {
                let cookie = cookie::Cookie::build((LANG_COOKIE, lang.code()))
                    .path("/")
                    .same_site(cookie::SameSite::Lax)
                    .max_age(cookie::time::Duration::days(365))
                    .build();
                HeaderValue::from_str(&cookie.to_string()).ok()
            })
            .flatten();
        Self {
            lang,
            lang_cookie,
            query: Vec::new(),
            switching: false,
            was_checked: false,
        }
    }

    fn param(&self, name: &str) -> Option<&str> {
        field(&self.query, name)
    }

    fn html(&self, body: impl Into<bytes::Bytes>, caching: Caching) -> Html {
        Html::new(body, self.lang, caching).cookie(self.lang_cookie.clone())
    }
}

#[derive(Template)]
#[template(path = "home.html")]
struct HomePage<'a> {
    chrome: Chrome,
    incidents: &'a [IncidentCard],
}

#[derive(Template)]
#[template(path = "status.html")]
struct StatusPage<'a> {
    chrome: Chrome,
    incidents: &'a [IncidentCard],
}

#[derive(Template)]
#[template(path = "message.html")]
struct MessagePage<'a> {
    chrome: Chrome,
    heading: &'a str,
    body: &'a str,
    link_href: Option<&'a str>,
    link_text: &'a str,
}

/// One choice of a radio group or a select.
pub struct Choice {
    pub value: &'static str,
    pub label: &'static str,
    pub selected: bool,
}

#[derive(Template)]
#[template(path = "report.html")]
struct ReportPage<'a> {
    chrome: Chrome,
    incident: Option<IncidentCard>,
    services: &'a [String],
    form: &'a ReportForm,
    errors: PageErrors,
    /// Submitted and checked: [`CHECKED_FIELD`] goes with the form.
    checked: bool,
    reporter_types: Vec<Choice>,
    harm_types: Vec<Choice>,
    busy_secs: Option<u64>,
    notice: Option<&'static str>,
    csrf: &'a str,
    idem: &'a str,
}

impl ReportPage<'_> {
    fn error(&self, field: &str) -> Option<&'static str> {
        self.errors.get(field).copied()
    }
}

#[derive(Template)]
#[template(path = "receipt.html")]
struct ReceiptPage<'a> {
    chrome: Chrome,
    receipt: &'a str,
    received_at: String,
}

pub struct LookupResult {
    pub receipt: String,
    pub status: &'static str,
    pub status_code: String,
    pub history: Vec<HistoryLine>,
    pub incident: Option<IncidentLink>,
}

pub struct HistoryLine {
    pub at: String,
    pub status: &'static str,
    pub note: Option<String>,
}

pub struct IncidentLink {
    pub id: String,
    pub title: String,
}

#[derive(Template)]
#[template(path = "lookup.html")]
struct LookupPage<'a> {
    chrome: Chrome,
    result: Option<LookupResult>,
    not_found: bool,
    busy_secs: Option<u64>,
    csrf: &'a str,
    receipt: &'a str,
    contact: &'a str,
    receipt_error: Option<&'static str>,
    contact_error: Option<&'static str>,
    /// Submitted and checked: [`CHECKED_FIELD`] goes with the form.
    checked: bool,
}

/// A page that failed to render or load is a fault on our side, shown as such.
fn render(template: &impl Template) -> Result<String, ApiError> {
    template
        .render()
        .map_err(|e| ApiError::Internal(anyhow::anyhow!("rendering a page: {e}")))
}

/// An error as a page in the person's language instead of the API's JSON.
fn error_page(lang: Lang, error: &ApiError) -> Response {
    let t = lang.text();
    let (status, heading, body) = match error {
        ApiError::NotFound => (StatusCode::NOT_FOUND, t.not_found_title, t.not_found_body),
        e => (e.status(), t.error_title, t.error_body),
    };
    if let ApiError::Internal(cause) = error {
        tracing::error!(error = %format!("{cause:#}"), "a page failed");
    }
    let page = MessagePage {
        chrome: Chrome::new(lang, heading, "/"),
        heading,
        body,
        link_href: Some("/"),
        link_text: t.nav_home,
    };
    let mut html =
        Html::new(page.render().unwrap_or_default(), lang, Caching::NoStore).status(status);
    html.retry_after = error.retry_after();
    html.into_response()
}

/// An address no page lives at: 404 as a page in the person's language.
pub fn not_found(query: Option<&str>, headers: &HeaderMap) -> Response {
    error_page(PageRequest::new(query, headers).lang, &ApiError::NotFound)
}

/// A form post that failed the cross-site check: 403, nothing done.
fn forbidden(lang: Lang, back: &'static str, refusal: csrf::Refusal) -> Response {
    tracing::info!(
        ?refusal,
        "form post refused by the cross-site request check"
    );
    let t = lang.text();
    let page = MessagePage {
        chrome: Chrome::new(lang, t.forbidden_title, back),
        heading: t.forbidden_title,
        body: t.forbidden_body,
        link_href: Some(back),
        link_text: t.forbidden_back,
    };
    Html::new(page.render().unwrap_or_default(), lang, Caching::NoStore)
        .status(StatusCode::FORBIDDEN)
        .into_response()
}

fn cards(records: &[crate::store::IncidentRecord], lang: Lang) -> Vec<IncidentCard> {
    records.iter().map(|r| IncidentCard::of(r, lang)).collect()
}

// ---- home and status (cached per language and data version) ----------------------------

pub async fn home(
    State(state): State<AppState>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Response {
    open_incidents_page(
        &state,
        query.as_deref(),
        &headers,
        PageCacheName::Home,
        |lang, incidents| {
            HomePage {
                chrome: Chrome::new(lang, lang.text().home_title, "/"),
                incidents,
            }
            .render()
        },
    )
    .await
}

pub async fn status(
    State(state): State<AppState>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Response {
    open_incidents_page(
        &state,
        query.as_deref(),
        &headers,
        PageCacheName::Status,
        |lang, incidents| {
            StatusPage {
                chrome: Chrome::new(lang, lang.text().status_title, "/status"),
                incidents,
            }
            .render()
        },
    )
    .await
}

/// A public page listing the open incidents, rendered once per language and data version.
async fn open_incidents_page(
    state: &AppState,
    query: Option<&str>,
    headers: &HeaderMap,
    cache: PageCacheName,
    render: fn(Lang, &[IncidentCard]) -> Result<String, askama::Error>,
) -> Response {
    let req = PageRequest::new(query, headers);
    let lang = req.lang;
    let result = async {
        let open = state.incidents.open_incidents().await?;
        let key = (identity(&open), 0);
        let records = Arc::clone(&open);
        state
            .web
            .pages
            .get(cache, lang, key, open, move |_| {
                render(lang, &cards(&records.records, lang))
            })
            .await
    }
    .await;
    match result {
        Ok(page) => req.html(page.fill("", ""), Caching::Public).into_response(),
        Err(e) => error_page(lang, &e),
    }
}

// ---- the report form -------------------------------------------------------------------

/// The incident a new form is for: `?incident=ID`, else in incident mode the most recently
/// started open incident, else none (the general form).
async fn form_incident(
    state: &AppState,
    requested: Option<&str>,
) -> Result<Option<Arc<IncidentDetail>>, ApiError> {
    if let Some(text) = requested.filter(|t| !t.is_empty()) {
        let id = Uuid::try_parse(text).map_err(|_| ApiError::NotFound)?;
        return state.incidents.detail(id).await.map(Some);
    }
    if state.mode.current() != Mode::Incident {
        return Ok(None);
    }
    let open = state.incidents.open_incidents().await?;
    match open.records.first() {
        Some(record) => state.incidents.detail(record.incident.id).await.map(Some),
        None => Ok(None),
    }
}

/// A blank form, with the incident's provider, service and outage start filled in.
fn prefilled(incident: Option<&IncidentDetail>) -> ReportForm {
    let Some(detail) = incident else {
        return ReportForm::default();
    };
    let incident = &detail.record.incident;
    ReportForm {
        incident_id: incident.id.to_string(),
        provider: incident.provider.clone().unwrap_or_default(),
        service: incident.services.first().cloned().unwrap_or_default(),
        occurred_at: input_time(incident.started_at),
        ..ReportForm::default()
    }
}

fn choices<T: Copy + AsRef<str>>(
    all: &'static [T],
    chosen: &str,
    label: impl Fn(T) -> &'static str,
) -> Vec<Choice> {
    all.iter()
        .map(|value| Choice {
            value: value.as_ref(),
            label: label(*value),
            selected: value.as_ref() == chosen,
        })
        .collect()
}

const REPORTER_TYPES: [ReporterType; 4] = [
    ReporterType::Individual,
    ReporterType::PaidUser,
    ReporterType::Merchant,
    ReporterType::Business,
];
const HARM_TYPES: [HarmType; 6] = [
    HarmType::ServiceUnavailable,
    HarmType::PaidServiceLoss,
    HarmType::BusinessLoss,
    HarmType::DataLoss,
    HarmType::PaymentFailure,
    HarmType::Other,
];

/// Everything a report page shows besides the form's own values.
struct FormState<'a> {
    lang: Lang,
    incident: Option<&'a IncidentDetail>,
    /// The form was submitted and checked (its findings, if any, are shown).
    checked: bool,
    errors: PageErrors,
    busy: Option<Duration>,
    notice: Option<&'static str>,
}

fn render_report(
    state: &FormState<'_>,
    form: &ReportForm,
    csrf: &str,
    idem: &str,
) -> Result<String, askama::Error> {
    let lang = state.lang;
    let t = lang.text();
    let incident = state.incident.map(|d| IncidentCard::of(&d.record, lang));
    let services = state
        .incident
        .map_or(&[][..], |d| d.record.incident.services.as_slice());
    let (title, path) = match &incident {
        Some(i) => (
            t.report_incident_title,
            format!("/report?incident={}", i.id),
        ),
        None => (t.report_title, "/report".to_owned()),
    };
    ReportPage {
        chrome: Chrome::new(lang, title, &path).reposting("report-form"),
        incident,
        services,
        form,
        errors: state.errors.clone(),
        checked: state.checked,
        reporter_types: choices(&REPORTER_TYPES, &form.reporter_type, |v| t.reporter_type(v)),
        harm_types: choices(&HARM_TYPES, &form.harm_type, |v| t.harm_type(v)),
        busy_secs: state.busy.map(|d| d.as_secs().max(1)),
        notice: state.notice,
        csrf,
        idem,
    }
    .render()
}

/// `GET /report`: the form, from the page cache with this request's token and key filled in.
pub async fn report_form(
    State(state): State<AppState>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Response {
    let req = PageRequest::new(query.as_deref(), &headers);
    let lang = req.lang;
    let (token, csrf_cookie) = csrf::for_page(&state.keys, &headers, state.web.secure_cookies);
    let result = async {
        let incident = form_incident(&state, req.param("incident")).await?;
        let (key, keep): (_, Arc<dyn std::any::Any + Send + Sync>) = match &incident {
            Some(detail) => ((identity(detail), 1), detail.clone()),
            None => ((0, 0), Arc::new(())),
        };
        state
            .web
            .pages
            .get(PageCacheName::ReportForm, lang, key, keep, |markers| {
                let view = FormState {
                    lang,
                    incident: incident.as_deref(),
                    checked: false,
                    errors: PageErrors::new(),
                    busy: None,
                    notice: None,
                };
                render_report(
                    &view,
                    &prefilled(incident.as_deref()),
                    &markers.csrf,
                    &markers.idempotency,
                )
            })
            .await
    }
    .await;
    match result {
        Ok(page) => req
            .html(page.fill(&token, &new_idempotency_key()), Caching::Private)
            .cookie(csrf_cookie)
            .into_response(),
        Err(e) => error_page(lang, &e),
    }
}

/// Read a form body (`application/x-www-form-urlencoded`) as name/value pairs.
async fn form_pairs(body: Body) -> Result<Vec<(String, String)>, ApiError> {
    let bytes = axum::body::to_bytes(body, MAX_FORM_BYTES)
        .await
        .map_err(|_| ApiError::PayloadTooLarge {
            limit: MAX_FORM_BYTES,
        })?;
    serde_urlencoded::from_bytes(&bytes).map_err(|_| ApiError::BadRequest {
        code: "malformed_form",
        message: "the form data could not be read".into(),
    })
}

/// `POST /report`: the same checks and intake path as the API; the receipt page on success,
/// otherwise the form again with everything typed and what to do. The form's language switch
/// shows it again in the other language and submits nothing.
pub async fn submit_report(
    State(state): State<AppState>,
    Client(client): Client,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let pairs = match form_pairs(body).await {
        Ok(pairs) => pairs,
        Err(e) => return error_page(PageRequest::new(None, &headers).lang, &e),
    };
    let req = PageRequest::posted(&pairs, &headers);
    let lang = req.lang;
    let form = ReportForm::from_pairs(pairs);
    if let Err(refusal) = csrf::check(
        &state.keys,
        &headers,
        Some(&form.csrf),
        &state.web.public_origin,
    ) {
        return forbidden(lang, "/report", refusal);
    }
    let incident = match Uuid::try_parse(form.incident_id.trim()) {
        Ok(id) => state.incidents.detail(id).await.ok(),
        Err(_) => None,
    };
    let mut view = FormState {
        lang,
        incident: incident.as_deref(),
        checked: true,
        errors: PageErrors::new(),
        busy: None,
        notice: None,
    };
    let again = |view: &FormState<'_>, form: &ReportForm, status: StatusCode| {
        let (token, cookie) = csrf::for_page(&state.keys, &headers, state.web.secure_cookies);
        let idem = if form.idem.is_empty() {
            new_idempotency_key()
        } else {
            form.idem.clone()
        };
        match render_report(view, form, &token, &idem) {
            Ok(body) => {
                let mut html = req
                    .html(body, Caching::NoStore)
                    .status(status)
                    .cookie(cookie);
                html.retry_after = view.busy;
                html.into_response()
            }
            Err(e) => error_page(lang, &ApiError::Internal(anyhow::anyhow!("{e}"))),
        }
    };

    // Switching language submits nothing, so it spends none of the submission allowance. On a
    // form already submitted, the findings are shown again in the new language: often why the
    // person switched. A form not yet submitted has no findings to show.
    if req.switching {
        view.checked = req.was_checked;
        let findings = view
            .checked
            .then(|| ValidReport::from_json(&form.to_json(), Utc::now()).err())
            .flatten();
        return match findings {
            Some(errors) => invalid(&mut view, &errors, &form, again),
            None => again(&view, &form, StatusCode::OK),
        };
    }
    // Refuse before any work: a refusal must stay cheap under a flood.
    if let Err(limited) = state
        .limiters
        .check_report_ip(&client)
        .and_then(|()| state.limiters.check_admission())
    {
        crate::intake::reject("rate_limited");
        view.busy = Some(limited.0);
        return again(&view, &form, StatusCode::TOO_MANY_REQUESTS);
    }
    let json = form.to_json();
    let report = match ValidReport::from_json(&json, Utc::now()) {
        Ok(report) => report,
        Err(errors) => {
            crate::intake::reject("validation");
            return invalid(&mut view, &errors, &form, again);
        }
    };
    let key = IdempotencyKey::parse(form.idem.as_bytes()).ok();
    let idempotency = key.map(|k| (k, idempotency::request_hash(&json)));
    match state
        .intake
        .submit(report, Channel::Web, lang.into(), idempotency)
        .await
    {
        Ok(accepted) => {
            let t = lang.text();
            let page = ReceiptPage {
                chrome: Chrome::new(lang, t.receipt_title, "/lookup"),
                receipt: accepted.receipt.as_str(),
                received_at: show_time(accepted.received_at),
            };
            match render(&page) {
                Ok(body) => Html::new(body, lang, Caching::NoStore).into_response(),
                Err(e) => error_page(lang, &e),
            }
        }
        Err(e) => {
            crate::intake::reject(e.reason());
            match e {
                SubmitError::Invalid(errors) => invalid(&mut view, &errors, &form, again),
                SubmitError::IdempotencyMismatch => {
                    view.notice = Some(lang.text().already_used);
                    let fresh = ReportForm {
                        idem: new_idempotency_key(),
                        ..form.clone()
                    };
                    again(&view, &fresh, StatusCode::UNPROCESSABLE_ENTITY)
                }
                SubmitError::Overloaded { retry_after } => {
                    view.busy = Some(retry_after);
                    again(&view, &form, StatusCode::SERVICE_UNAVAILABLE)
                }
                SubmitError::StoreUnavailable => {
                    view.busy = Some(STORE_RETRY_AFTER);
                    again(&view, &form, StatusCode::SERVICE_UNAVAILABLE)
                }
                SubmitError::Internal(cause) => error_page(lang, &ApiError::Internal(cause)),
            }
        }
    }
}

fn invalid<'a>(
    view: &mut FormState<'a>,
    errors: &FieldErrors,
    form: &ReportForm,
    again: impl Fn(&FormState<'a>, &ReportForm, StatusCode) -> Response,
) -> Response {
    view.errors = page_errors(errors, view.lang.text());
    again(view, form, StatusCode::UNPROCESSABLE_ENTITY)
}

// ---- lookup ----------------------------------------------------------------------------

/// The answer to a lookup post.
fn lookup_page(
    req: &PageRequest,
    page: &LookupPage<'_>,
    status: StatusCode,
    busy: Option<Duration>,
) -> Response {
    match render(page) {
        Ok(body) => {
            let mut html = req.html(body, Caching::NoStore).status(status);
            html.retry_after = busy;
            html.into_response()
        }
        Err(e) => error_page(req.lang, &e),
    }
}

/// The lookup form, blank. Its language switch re-posts what was typed; a page showing a
/// result has no form, and links.
fn empty_lookup<'a>(lang: Lang, csrf: &'a str) -> LookupPage<'a> {
    LookupPage {
        chrome: Chrome::new(lang, lang.text().lookup_title, "/lookup").reposting("lookup-form"),
        result: None,
        not_found: false,
        busy_secs: None,
        csrf,
        receipt: "",
        contact: "",
        receipt_error: None,
        contact_error: None,
        checked: false,
    }
}

/// `GET /lookup`: receipt and contact.
pub async fn lookup_form(
    State(state): State<AppState>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Response {
    let req = PageRequest::new(query.as_deref(), &headers);
    let (token, cookie) = csrf::for_page(&state.keys, &headers, state.web.secure_cookies);
    let page = empty_lookup(req.lang, &token);
    match render(&page) {
        Ok(body) => req
            .html(body, Caching::NoStore)
            .cookie(cookie)
            .into_response(),
        Err(e) => error_page(req.lang, &e),
    }
}

/// `POST /lookup`: the same rate limits and the same answer for an unknown receipt and a
/// wrong contact as the API. The form's language switch shows it again in the other language
/// and looks nothing up.
pub async fn lookup(
    State(state): State<AppState>,
    Client(client): Client,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let pairs = match form_pairs(body).await {
        Ok(pairs) => pairs,
        Err(e) => return error_page(PageRequest::new(None, &headers).lang, &e),
    };
    let req = PageRequest::posted(&pairs, &headers);
    let lang = req.lang;
    let t = lang.text();
    let value = |name: &str| field(&pairs, name).unwrap_or_default();
    if let Err(refusal) = csrf::check(
        &state.keys,
        &headers,
        Some(value(csrf::FIELD)),
        &state.web.public_origin,
    ) {
        return forbidden(lang, "/lookup", refusal);
    }
    let token = value(csrf::FIELD);
    let (receipt_text, contact_text) = (value("receipt").trim(), value("contact").trim());
    let mut page = LookupPage {
        receipt: receipt_text,
        contact: contact_text,
        checked: !req.switching || req.was_checked,
        ..empty_lookup(lang, token)
    };
    if !req.switching
        && let Err(limited) = state.limiters.check_lookup_ip(&client)
    {
        page.busy_secs = Some(limited.0.as_secs().max(1));
        return lookup_page(&req, &page, StatusCode::TOO_MANY_REQUESTS, Some(limited.0));
    }
    let receipt = Receipt::parse(receipt_text);
    let contact = Contact::parse(contact_text);
    let (receipt, contact) = match (receipt, contact) {
        (Ok(r), Ok(c)) if !req.switching => (r, c),
        // Unreadable, or a language switch: the form again, as typed, with its findings once
        // it has been submitted.
        (r, c) => {
            if page.checked {
                page.receipt_error = r.is_err().then_some(t.error_receipt);
                page.contact_error = c.is_err().then_some(t.error_contact);
            }
            let status = if page.receipt_error.is_none() && page.contact_error.is_none() {
                StatusCode::OK
            } else {
                StatusCode::UNPROCESSABLE_ENTITY
            };
            return lookup_page(&req, &page, status, None);
        }
    };
    if let Err(limited) = state.limiters.check_lookup_receipt(&receipt) {
        page.busy_secs = Some(limited.0.as_secs().max(1));
        return lookup_page(&req, &page, StatusCode::TOO_MANY_REQUESTS, Some(limited.0));
    }
    let report = match matching_report(&state, &receipt, &contact).await {
        Ok(report) => report,
        Err(e) if e.retry_after().is_some() => {
            let after = e.retry_after();
            page.busy_secs = after.map(|d| d.as_secs().max(1));
            return lookup_page(&req, &page, e.status(), after);
        }
        Err(e) => return error_page(lang, &e),
    };
    let Some(report) = report else {
        page.not_found = true;
        return lookup_page(&req, &page, StatusCode::NOT_FOUND, None);
    };
    let incident = match report.incident_id {
        Some(id) => state.incidents.detail(id).await.ok().map(|d| IncidentLink {
            id: id.to_string(),
            title: lang.pick(&d.record.incident.title).to_owned(),
        }),
        None => None,
    };
    // The result replaces the form: the language switch is a link again.
    page.chrome.switch_form = None;
    page.result = Some(LookupResult {
        receipt: report.receipt.to_string(),
        status: t.report_status(report.status),
        status_code: report.status.as_ref().to_owned(),
        history: report
            .history
            .iter()
            .rev()
            .map(|h| HistoryLine {
                at: show_time(h.at),
                status: t.report_status(h.status),
                note: h.note.clone(),
            })
            .collect(),
        incident,
    });
    lookup_page(&req, &page, StatusCode::OK, None)
}
