//! `GET /api/v1/openapi.json`: the OpenAPI 3 description generated from the handlers'
//! annotations and the wire types, so it changes when the code does.

use std::sync::OnceLock;

use axum::Router;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use utoipa::OpenApi;

use crate::app::AppState;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Reliefline",
        description = "Harm-report intake and outage notification for mass online-service \
            incidents. Errors are `{\"error\": CODE, \"message\": TEXT}` plus `fields` for \
            validation errors; 429 and 503 always carry Retry-After."
    ),
    paths(
        crate::intake::submit_report,
        crate::intake::lookup::lookup_report,
        crate::cases::change_status,
        super::ops::healthz,
        super::ops::readyz,
        super::ops::metrics,
        crate::notify::api::dead_letters,
        crate::notify::api::requeue,
        crate::notify::api::delivery_report,
        crate::incident::api::status,
        crate::incident::api::list,
        crate::incident::api::detail,
        crate::incident::api::declare,
        crate::incident::api::post_update,
        crate::incident::api::confirm,
        crate::incident::api::dismiss,
        crate::incident::api::set_mode,
        crate::subscribe::subscribe,
        crate::subscribe::confirm,
        crate::subscribe::delivery,
    ),
    tags(
        (name = "intake", description = "Harm reports from the public"),
        (name = "cases", description = "Staff work on reports"),
        (name = "ops", description = "Health, readiness and metrics"),
        (name = "notify", description = "Outbox dead letters and SMS delivery reports"),
        (name = "incidents", description = "Status, incidents and commander commands"),
        (name = "subscriptions", description = "Outage-notice subscriptions and fan-out progress"),
    )
)]
pub struct ApiDoc;

/// The document as JSON, built once.
pub fn document() -> &'static str {
    static DOC: OnceLock<String> = OnceLock::new();
    DOC.get_or_init(|| {
        ApiDoc::openapi()
            .to_json()
            .unwrap_or_else(|_| "{}".to_owned())
    })
}

pub fn router() -> Router<AppState> {
    Router::new().route(
        "/api/v1/openapi.json",
        get(|| async {
            ([(header::CONTENT_TYPE, "application/json")], document()).into_response()
        }),
    )
}

#[cfg(test)]
mod tests {
    use serde_json::Value;

    /// Every route that reads a body can answer 400 (broken), 413 (too long) and 415 (not the
    /// declared type); a client generated from the document must expect them.
    #[test]
    fn every_route_with_a_body_lists_the_body_refusals() {
        let doc: Value = serde_json::from_str(super::document()).unwrap();
        let mut missing = Vec::new();
        for (path, operations) in doc["paths"].as_object().unwrap() {
            for (method, operation) in operations.as_object().unwrap() {
                if operation.get("requestBody").is_none() {
                    continue;
                }
                for status in ["400", "413", "415"] {
                    if operation["responses"].get(status).is_none() {
                        missing.push(format!("{method} {path} {status}"));
                    }
                }
            }
        }
        assert!(missing.is_empty(), "not documented: {missing:#?}");
    }
}
