//! Per-request metrics labelled by the matched route template (`/api/v1/incidents/{id}`),
//! never by the raw path, and by a method from a fixed list, so label cardinality stays bounded
//! whatever clients send.

use std::cell::RefCell;
use std::collections::HashMap;
use std::time::Instant;

use axum::extract::{MatchedPath, Request};
use axum::http::Method;
use axum::middleware::Next;
use axum::response::Response;
use metrics::{Counter, Histogram};

use crate::telemetry::names;

/// Label for requests that matched no route.
pub const UNMATCHED: &str = "unmatched";

/// Count and time every routed request, and log the cause of a 5xx once
/// ([`super::error::log_server_error`]): one layer, so one boxed future per request.
pub async fn track(request: Request, next: Next) -> Response {
    let started = Instant::now();
    let route = request.extensions().get::<MatchedPath>().cloned();
    let method = request.method().clone();
    let request_id = request.headers().get("x-request-id").cloned();
    let mut response = next.run(request).await;
    let route = route.as_ref().map_or(UNMATCHED, MatchedPath::as_str);
    let method = method_label(&method);
    let id = request_id.as_ref().and_then(|v| v.to_str().ok());
    super::error::log_server_error(&mut response, method, route, id.unwrap_or_default());
    record(route, method, response.status().as_u16(), started);
    response
}

/// The method as a label: the standard ones by name, anything else (a client may send any token
/// as a method) as `other`.
pub fn method_label(method: &Method) -> &'static str {
    const STANDARD: [Method; 9] = [
        Method::GET,
        Method::HEAD,
        Method::POST,
        Method::PUT,
        Method::PATCH,
        Method::DELETE,
        Method::OPTIONS,
        Method::CONNECT,
        Method::TRACE,
    ];
    STANDARD
        .iter()
        .find(|m| *m == method)
        .map_or("other", Method::as_str)
}

/// Count one answer and record how long it took.
pub fn record(route: &str, method: &'static str, status: u16, started: Instant) {
    let elapsed = started.elapsed().as_secs_f64();
    SERIES.with_borrow_mut(|series| {
        // Look up by `&str` first: the owned key is made once per route and thread.
        if let Some(of_route) = series.get_mut(route) {
            of_route.record(route, method, status, elapsed);
        } else {
            let mut of_route = RouteSeries::default();
            of_route.record(route, method, status, elapsed);
            series.insert(route.to_owned(), of_route);
        }
    });
}

thread_local! {
    /// The series each worker thread has used, by route. Looking a labelled series up in the
    /// recorder means building its key (three label strings) and a registry lookup; every
    /// request paid that before. The label sets are bounded (route templates, the fixed method
    /// list, status codes), so is this.
    static SERIES: RefCell<HashMap<String, RouteSeries>> = RefCell::new(HashMap::new());
}

/// One route's registered series: a handful per route, so a list is searched.
#[derive(Default)]
struct RouteSeries {
    counters: Vec<((&'static str, u16), Counter)>,
    histograms: Vec<(&'static str, Histogram)>,
}

impl RouteSeries {
    fn record(&mut self, route: &str, method: &'static str, status: u16, elapsed: f64) {
        registered(&mut self.counters, (method, status), || {
            metrics::counter!(
                names::HTTP_REQUESTS,
                "route" => route.to_owned(),
                "method" => method,
                "status" => status.to_string()
            )
        })
        .increment(1);
        registered(&mut self.histograms, method, || {
            metrics::histogram!(
                names::HTTP_DURATION,
                "route" => route.to_owned(),
                "method" => method
            )
        })
        .record(elapsed);
    }
}

/// The handle kept under `key`, registered with `register` the first time.
fn registered<K: PartialEq, H>(list: &mut Vec<(K, H)>, key: K, register: impl FnOnce() -> H) -> &H {
    let at = match list.iter().position(|(k, _)| *k == key) {
        Some(at) => at,
        None => {
            list.push((key, register()));
            list.len() - 1
        }
    };
    &list[at].1
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn methods_outside_the_standard_list_share_one_label() {
        assert_eq!(method_label(&Method::GET), "GET");
        assert_eq!(method_label(&Method::PATCH), "PATCH");
        let custom = Method::from_bytes(b"BREW").expect("a valid token");
        assert_eq!(method_label(&custom), "other");
    }
}
