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
        if !series.contains_key(route) {
            series.insert(route.to_owned(), RouteSeries::default());
        }
        let Some(of_route) = series.get_mut(route) else {
            return;
        };
        of_route.counter(route, method, status).increment(1);
        of_route.histogram(route, method).record(elapsed);
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
    counters: Vec<(&'static str, u16, Counter)>,
    histograms: Vec<(&'static str, Histogram)>,
}

impl RouteSeries {
    fn counter(&mut self, route: &str, method: &'static str, status: u16) -> &Counter {
        let at = match self
            .counters
            .iter()
            .position(|(m, s, _)| *m == method && *s == status)
        {
            Some(at) => at,
            None => {
                let counter = metrics::counter!(
                    names::HTTP_REQUESTS,
                    "route" => route.to_owned(),
                    "method" => method,
                    "status" => status.to_string()
                );
                self.counters.push((method, status, counter));
                self.counters.len() - 1
            }
        };
        &self.counters[at].2
    }

    fn histogram(&mut self, route: &str, method: &'static str) -> &Histogram {
        let at = match self.histograms.iter().position(|(m, _)| *m == method) {
            Some(at) => at,
            None => {
                let histogram = metrics::histogram!(
                    names::HTTP_DURATION,
                    "route" => route.to_owned(),
                    "method" => method
                );
                self.histograms.push((method, histogram));
                self.histograms.len() - 1
            }
        };
        &self.histograms[at].1
    }
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
