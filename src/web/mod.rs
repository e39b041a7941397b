//! The public pages: server-rendered HTML that works without JavaScript and stays light for a
//! phone on a congested network. Korean by default, English on request ([`i18n`]); every form
//! protected against cross-site posts ([`csrf`]); public reads served from rendered-page
//! caches ([`cache`]) in front of the incident read caches.
//!
//! Routes: `GET /`, `GET|POST /report`, `GET|POST /lookup`, `GET /status`,
//! `GET /status/feed.atom`, `GET /static/site.css`.

pub mod cache;
pub mod csrf;
pub mod feed;
pub mod form;
pub mod i18n;
pub mod pages;
mod views;

use std::time::Duration;

use axum::Router;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use bytes::Bytes;

pub use cache::{PageCache, PageCacheName};
pub use i18n::Lang;

use crate::app::AppState;
use crate::config::Config;
use crate::incident::ModeHandle;

/// The one stylesheet, cached for a year: pages link it with a version query
/// ([`STYLESHEET_HREF`]) that changes whenever it does.
pub const STYLESHEET_PATH: &str = "/static/site.css";
pub const STYLESHEET_HREF: &str = "/static/site.css?v=2";
const STYLESHEET: &str = include_str!("static/site.css");

/// State of the pages: the rendered-page caches.
pub struct Web {
    pages: PageCache,
    /// `Secure` on cookies: the public address is HTTPS.
    secure_cookies: bool,
    /// `scheme://host[:port]` of `http.public_base_url`, for the same-origin check.
    public_origin: String,
}

impl Web {
    pub fn new(config: &Config, mode: &ModeHandle) -> Self {
        let base = config.http.public_base_url.trim_end_matches('/');
        let origin = base
            .find("://")
            .and_then(|i| base[i + 3..].find('/').map(|j| &base[..i + 3 + j]))
            .unwrap_or(base);
        Self {
            pages: PageCache::new(
                mode,
                config.incident.read_cache_ttl(),
                config.incident.read_cache_ttl_incident(),
            ),
            secure_cookies: base.starts_with("https://"),
            public_origin: origin.to_owned(),
        }
    }

    /// Hits and misses of one page cache in this process; each miss is one rendering.
    pub fn cache_counts(&self, name: PageCacheName) -> crate::telemetry::CacheCounts {
        self.pages.counts(name)
    }
}

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/", get(pages::home))
        .route(
            "/report",
            get(pages::report_form).post(pages::submit_report),
        )
        .route("/lookup", get(pages::lookup_form).post(pages::lookup))
        .route("/status", get(pages::status))
        .route("/status/feed.atom", get(feed::atom))
        .route(STYLESHEET_PATH, get(stylesheet))
}

async fn stylesheet() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::CACHE_CONTROL, "public, max-age=31536000, immutable"),
        ],
        STYLESHEET,
    )
        .into_response()
}

/// The value of cookie `name` in the request, if any.
pub(crate) fn cookie_value(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(cookie::Cookie::split_parse)
        .filter_map(Result::ok)
        .find(|c| c.name() == name)
        .map(|c| c.value().to_owned())
}

/// How an HTML answer may be kept by caches along the way.
#[derive(Debug, Clone, Copy)]
pub enum Caching {
    /// The same for everyone in a language: shared caches may keep it briefly.
    Public,
    /// Carries a form token: the browser may show it again, nobody else may keep it.
    Private,
    /// Personal (a receipt, a lookup): never stored anywhere.
    NoStore,
}

/// An HTML answer with the headers every page carries.
pub struct Html {
    pub status: StatusCode,
    pub body: Bytes,
    pub lang: Lang,
    pub caching: Caching,
    pub set_cookies: Vec<HeaderValue>,
    pub retry_after: Option<Duration>,
}

impl Html {
    pub fn new(body: impl Into<Bytes>, lang: Lang, caching: Caching) -> Self {
        Self {
            status: StatusCode::OK,
            body: body.into(),
            lang,
            caching,
            set_cookies: Vec::new(),
            retry_after: None,
        }
    }

    pub fn status(mut self, status: StatusCode) -> Self {
        self.status = status;
        self
    }

    pub fn cookie(mut self, cookie: Option<HeaderValue>) -> Self {
        self.set_cookies.extend(cookie);
        self
    }
}

impl IntoResponse for Html {
    fn into_response(self) -> Response {
        let cache_control = match self.caching {
            // An answer that sets a cookie is for this browser only.
            Caching::Public if !self.set_cookies.is_empty() => "private, no-cache",
            Caching::Public => "public, max-age=5",
            Caching::Private => "private, no-cache",
            Caching::NoStore => "no-store",
        };
        let mut response = (self.status, self.body).into_response();
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/html; charset=utf-8"),
        );
        headers.insert(
            header::CACHE_CONTROL,
            HeaderValue::from_static(cache_control),
        );
        headers.insert(
            header::CONTENT_LANGUAGE,
            HeaderValue::from_static(self.lang.code()),
        );
        // Our own form posts then carry their origin; other sites still learn nothing.
        headers.insert(
            header::REFERRER_POLICY,
            HeaderValue::from_static("same-origin"),
        );
        headers.insert(
            header::VARY,
            HeaderValue::from_static("Accept-Language, Cookie"),
        );
        if let Some(after) = self.retry_after {
            headers.insert(
                header::RETRY_AFTER,
                HeaderValue::from(after.as_secs().max(1)),
            );
        }
        for cookie in self.set_cookies {
            headers.append(header::SET_COOKIE, cookie);
        }
        response
    }
}
