//! Per-request metrics labelled by the matched route template (`/api/v1/incidents/{id}`),
//! never by the raw path, so label cardinality stays bounded whatever clients send.

use std::time::Instant;

use axum::extract::{MatchedPath, Request};
use axum::middleware::Next;
use axum::response::Response;

use crate::telemetry::names;

/// Label for requests that matched no route.
pub const UNMATCHED: &str = "unmatched";

/// Count and time every routed request, and log the cause of a 5xx once
/// ([`super::error::log_server_error`]): one layer, so one boxed future per request.
pub async fn track(request: Request, next: Next) -> Response {
    let started = Instant::now();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or(UNMATCHED, MatchedPath::as_str)
        .to_owned();
    let method = request.method().as_str().to_owned();
    let request_id = request.headers().get("x-request-id").cloned();
    let mut response = next.run(request).await;
    let id = request_id.as_ref().and_then(|v| v.to_str().ok());
    super::error::log_server_error(&mut response, &method, &route, id.unwrap_or_default());
    record(route, method, response.status().as_u16(), started);
    response
}

pub fn record(route: String, method: String, status: u16, started: Instant) {
    let elapsed = started.elapsed().as_secs_f64();
    metrics::counter!(
        names::HTTP_REQUESTS,
        "route" => route.clone(),
        "method" => method.clone(),
        "status" => status.to_string()
    )
    .increment(1);
    metrics::histogram!(names::HTTP_DURATION, "route" => route, "method" => method).record(elapsed);
}
