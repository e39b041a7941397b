//! `GET /status/feed.atom`: one Atom entry per incident update (open incidents, and the most
//! recently resolved ones), newest first, in the request's language. Cached like the status
//! page.

use std::sync::Arc;

use askama::Template;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use chrono::SecondsFormat;

use super::cache::{PageCacheName, identity};
use super::i18n::{Lang, Text};
use crate::app::AppState;
use crate::http::ApiError;
use crate::incident::IncidentDetail;
use crate::incident::model::StateFilter;
use crate::store::IncidentRecord;

/// Resolved incidents the feed still carries.
const RESOLVED_IN_FEED: usize = 10;

struct Entry {
    id: String,
    incident_id: String,
    title: String,
    updated: String,
    content: String,
}

#[derive(Template)]
#[template(path = "feed.xml")]
struct Feed<'a> {
    lang: &'static str,
    t: &'static Text,
    base: &'a str,
    updated: String,
    entries: Vec<Entry>,
}

fn render(
    lang: Lang,
    base: &str,
    open: &[IncidentRecord],
    resolved: &[Arc<IncidentDetail>],
) -> Result<String, askama::Error> {
    let t = lang.text();
    let records = open.iter().chain(resolved.iter().map(|d| &d.record));
    let mut updates: Vec<_> = records
        .flat_map(|r| r.updates.iter().map(move |u| (r, u)))
        .collect();
    updates.sort_by_key(|(_, u)| std::cmp::Reverse(u.at));
    let stamp = |at: chrono::DateTime<chrono::Utc>| at.to_rfc3339_opts(SecondsFormat::Secs, true);
    let updated = updates
        .first()
        .map_or_else(|| stamp(chrono::DateTime::UNIX_EPOCH), |(_, u)| stamp(u.at));
    let entries = updates
        .into_iter()
        .map(|(record, update)| Entry {
            id: update.id.to_string(),
            incident_id: record.incident.id.to_string(),
            title: format!(
                "{} — {}",
                lang.pick(&record.incident.title),
                t.incident_status(update.status)
            ),
            updated: stamp(update.at),
            content: lang.pick(&update.message).to_owned(),
        })
        .collect();
    Feed {
        lang: lang.code(),
        t,
        base,
        updated,
        entries,
    }
    .render()
}

pub async fn atom(
    State(state): State<AppState>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Response {
    let chosen: Option<String> = query
        .as_deref()
        .and_then(|q| serde_urlencoded::from_str::<Vec<(String, String)>>(q).ok())
        .and_then(|q| q.into_iter().find(|(k, _)| k == "lang").map(|(_, v)| v));
    let (lang, _) = Lang::negotiate(chosen.as_deref(), &headers);
    match feed(&state, lang).await {
        Ok(body) => (
            [
                (
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("application/atom+xml; charset=utf-8"),
                ),
                (
                    header::CACHE_CONTROL,
                    HeaderValue::from_static("public, max-age=30"),
                ),
            ],
            body,
        )
            .into_response(),
        Err(e) => e.into_response(),
    }
}

async fn feed(state: &AppState, lang: Lang) -> Result<bytes::Bytes, ApiError> {
    let open = state.incidents.open_incidents().await?;
    let resolved = state.incidents.list(StateFilter::Resolved).await?;
    let key = (identity(&open), identity(&resolved));
    let mut details = Vec::new();
    for incident in resolved.iter().take(RESOLVED_IN_FEED) {
        details.push(state.incidents.detail(incident.id).await?);
    }
    let base = state
        .config
        .http
        .public_base_url
        .trim_end_matches('/')
        .to_owned();
    let keep = Arc::new((Arc::clone(&open), resolved));
    let page = state
        .web
        .pages
        .get(PageCacheName::Feed, lang, key, keep, |_| {
            render(lang, &base, &open.records, &details)
        })
        .await?;
    Ok(page.fill("", ""))
}
