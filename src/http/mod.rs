//! The HTTP surface: each area owns a `router()`; this module merges them and adds the layers
//! every request passes through.

pub mod body;
pub mod client_ip;
pub mod error;
pub mod json;
pub mod metrics;
pub mod openapi;
pub mod ops;
pub mod server;

use std::time::Duration;

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{HeaderName, HeaderValue, Method, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use tower::ServiceBuilder;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::set_header::SetResponseHeaderLayer;

use crate::app::AppState;
pub use error::ApiError;

/// How long clients are asked to wait after a request ran out of time.
const TIMEOUT_RETRY_AFTER: Duration = Duration::from_secs(2);

/// Content-Security-Policy for everything we serve: no inline script, no framing.
const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
     object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

/// The whole public application.
pub fn router(state: AppState) -> Router {
    let mut routes = Router::new()
        .merge(ops::router())
        .merge(openapi::router())
        .merge(crate::intake::router())
        .merge(crate::cases::router())
        .merge(crate::incident::api::router())
        .merge(crate::subscribe::router())
        .merge(crate::web::router())
        .merge(crate::notify::api::router());
    if state.config.metrics.listen.is_none() {
        routes = routes.merge(ops::metrics_router());
    }
    routes
        .route_layer(middleware::from_fn(metrics::track))
        .fallback(not_found)
        .layer(
            ServiceBuilder::new()
                .layer(SetRequestIdLayer::x_request_id(MakeRequestUuid))
                .layer(PropagateRequestIdLayer::x_request_id())
                .layer(set_if_missing(header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
                .layer(set_if_missing(header::REFERRER_POLICY, "no-referrer"))
                .layer(set_if_missing(header::X_FRAME_OPTIONS, "DENY"))
                .layer(set_if_missing(header::CONTENT_SECURITY_POLICY, CSP))
                .layer(CatchPanicLayer::custom(panic_response))
                .layer(middleware::from_fn_with_state(state.clone(), run_request))
                .layer(json::limit(state.config.http.max_body_bytes)),
        )
        .with_state(state)
}

fn set_if_missing(name: HeaderName, value: &'static str) -> SetResponseHeaderLayer<HeaderValue> {
    SetResponseHeaderLayer::if_not_present(name, HeaderValue::from_static(value))
}

/// Every request: a body its handler left unread is read before the answer goes out (see
/// [`body`]), and a request still running after `http.request_timeout_ms` gets 503 +
/// `Retry-After`.
async fn run_request(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let (request, unread) = body::track(request);
    let answer = async {
        let mut response = next.run(request).await;
        body::finish(unread, &mut response).await;
        response
    };
    match tokio::time::timeout(state.config.http.request_timeout(), answer).await {
        Ok(response) => response,
        Err(_) => ApiError::Overloaded {
            retry_after: TIMEOUT_RETRY_AFTER,
        }
        .into_response(),
    }
}

/// Paths of machine clients: an unknown address under them is answered in JSON, like the rest
/// of their answers.
const MACHINE_PATHS: [&str; 4] = ["/api", "/metrics", "/healthz", "/readyz"];

/// No route matched: a page in the person's language for a browser asking for an address on
/// the public site, the API's JSON error for everything else.
async fn not_found(request: Request) -> Response {
    let started = std::time::Instant::now();
    let method = request.method().clone();
    let path = request.uri().path();
    let machine = MACHINE_PATHS.iter().any(|prefix| {
        path.strip_prefix(prefix)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
    });
    let response = if !machine && (method == Method::GET || method == Method::HEAD) {
        crate::web::pages::not_found(request.uri().query(), request.headers())
    } else {
        ApiError::NotFound.into_response()
    };
    metrics::record(
        metrics::UNMATCHED,
        metrics::method_label(&method),
        404,
        started,
    );
    response
}

/// A panic is a bug, never the client's fault: answer an opaque 500 and log it.
#[allow(clippy::needless_pass_by_value)] // the signature CatchPanicLayer requires
fn panic_response(cause: Box<dyn std::any::Any + Send + 'static>) -> Response {
    tracing::error!(
        panic = crate::telemetry::panic_text(&*cause),
        "handler panicked"
    );
    ApiError::Internal(anyhow::anyhow!("handler panicked")).into_response()
}
