//! Logs (tracing) and metrics (Prometheus) set-up.
//!
//! Metric names are part of the contract with dashboards and alert rules (DESIGN.md, "Metrics
//! catalogue"); they are declared once here so a typo cannot create a second series.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock, PoisonError};

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

use crate::config::{LogConfig, LogFormat};

pub mod names {
    pub const HTTP_REQUESTS: &str = "reliefline_http_requests_total";
    pub const HTTP_DURATION: &str = "reliefline_http_request_duration_seconds";
    pub const REPORTS_ACCEPTED: &str = "reliefline_reports_accepted_total";
    pub const REPORTS_REJECTED: &str = "reliefline_reports_rejected_total";
    pub const INTAKE_QUEUE_DEPTH: &str = "reliefline_intake_queue_depth";
    pub const INTAKE_BATCH_SIZE: &str = "reliefline_intake_batch_size";
    pub const INTAKE_COMMIT_DURATION: &str = "reliefline_intake_commit_duration_seconds";
    pub const RATE_LIMITED: &str = "reliefline_rate_limited_total";
    pub const RATE_LIMITER_KEYS: &str = "reliefline_rate_limiter_keys";
    pub const CACHE_REQUESTS: &str = "reliefline_cache_requests_total";
    pub const INCIDENT_MODE: &str = "reliefline_incident_mode";
    pub const INCIDENTS_OPEN: &str = "reliefline_incidents_open";
    pub const NOTIFICATIONS: &str = "reliefline_notifications_total";
    pub const OUTBOX_PENDING: &str = "reliefline_outbox_pending";
    pub const OUTBOX_OLDEST_PENDING: &str = "reliefline_outbox_oldest_pending_seconds";
    pub const NOTIFICATION_SEND_DURATION: &str = "reliefline_notification_send_duration_seconds";
    pub const INCIDENT_NOTICE_DEADLINE: &str = "reliefline_incident_notice_deadline_seconds";
    pub const SURGE_RATE: &str = "reliefline_surge_rate_per_minute";

    /// Every metric the service exports: what dashboards and alert rules may refer to.
    pub const CATALOGUE: &[&str] = &[
        HTTP_REQUESTS,
        HTTP_DURATION,
        REPORTS_ACCEPTED,
        REPORTS_REJECTED,
        INTAKE_QUEUE_DEPTH,
        INTAKE_BATCH_SIZE,
        INTAKE_COMMIT_DURATION,
        RATE_LIMITED,
        RATE_LIMITER_KEYS,
        CACHE_REQUESTS,
        INCIDENT_MODE,
        INCIDENTS_OPEN,
        NOTIFICATIONS,
        OUTBOX_PENDING,
        OUTBOX_OLDEST_PENDING,
        NOTIFICATION_SEND_DURATION,
        INCIDENT_NOTICE_DEADLINE,
        SURGE_RATE,
    ];
}

/// Latency buckets in seconds: fine below 100 ms, where a surge-ready intake must stay.
const LATENCY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];
const BATCH_SIZE_BUCKETS: &[f64] = &[
    1.0, 2.0, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2000.0,
];

/// Install the JSON or human-readable log subscriber. Calling it twice is harmless.
pub fn init_tracing(config: &LogConfig) {
    let filter = EnvFilter::try_new(&config.level).unwrap_or_else(|_| EnvFilter::new("info"));
    let registry = tracing_subscriber::registry().with(filter);
    let result = match config.format {
        LogFormat::Json => registry
            .with(
                tracing_subscriber::fmt::layer()
                    .json()
                    .flatten_event(true)
                    .with_current_span(false),
            )
            .try_init(),
        LogFormat::Pretty => registry
            .with(tracing_subscriber::fmt::layer().compact())
            .try_init(),
    };
    // Tests initialise several apps in one process; only the first subscriber wins.
    drop(result);
}

/// Look-ups answered by one cache so far. Every miss is exactly one load (callers that joined
/// a load already running count as hits).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CacheCounts {
    pub hits: u64,
    pub misses: u64,
}

/// Hits and misses of one cache: counted in the process (tests and benchmarks read them) and
/// exported as `reliefline_cache_requests_total{cache, result}`. The two series are registered
/// once, so a look-up costs two atomic additions, not a registry search.
pub struct CacheTally {
    hits: AtomicU64,
    misses: AtomicU64,
    hit: metrics::Counter,
    miss: metrics::Counter,
}

impl CacheTally {
    /// `cache` is the value of the `cache` label.
    pub fn new(cache: &'static str) -> Self {
        Self {
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
            hit: metrics::counter!(names::CACHE_REQUESTS, "cache" => cache, "result" => "hit"),
            miss: metrics::counter!(names::CACHE_REQUESTS, "cache" => cache, "result" => "miss"),
        }
    }

    pub fn record(&self, missed: bool) {
        if missed {
            self.misses.fetch_add(1, Ordering::Relaxed);
            self.miss.increment(1);
        } else {
            self.hits.fetch_add(1, Ordering::Relaxed);
            self.hit.increment(1);
        }
    }

    pub fn counts(&self) -> CacheCounts {
        CacheCounts {
            hits: self.hits.load(Ordering::Relaxed),
            misses: self.misses.load(Ordering::Relaxed),
        }
    }
}

/// The process-wide Prometheus recorder. The `metrics` facade has one global recorder, so every
/// app in a process (several in tests) shares it.
pub fn metrics_handle() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(install_recorder).clone()
}

fn install_recorder() -> PrometheusHandle {
    let builder = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), LATENCY_BUCKETS)
        .and_then(|b| {
            b.set_buckets_for_metric(
                Matcher::Full(names::INTAKE_BATCH_SIZE.into()),
                BATCH_SIZE_BUCKETS,
            )
        });
    let builder = match builder {
        Ok(builder) => builder,
        // Only reachable with an empty bucket list, which the constants above are not.
        Err(e) => {
            tracing::error!(error = %e, "histogram buckets rejected; using summaries");
            PrometheusBuilder::new()
        }
    };
    let recorder = builder.build_recorder();
    let handle = recorder.handle();
    if metrics::set_global_recorder(recorder).is_err() {
        tracing::warn!("a metrics recorder was already installed; /metrics may be empty");
    }
    describe_metrics();
    handle
}

fn describe_metrics() {
    use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
    use names::*;
    describe_counter!(HTTP_REQUESTS, "HTTP requests answered, by matched route");
    describe_histogram!(HTTP_DURATION, Unit::Seconds, "HTTP request latency");
    describe_counter!(REPORTS_ACCEPTED, "Harm reports committed and acknowledged");
    describe_counter!(REPORTS_REJECTED, "Harm reports refused, by reason");
    describe_gauge!(
        INTAKE_QUEUE_DEPTH,
        "Reports waiting for the group-commit writer"
    );
    describe_histogram!(INTAKE_BATCH_SIZE, "Reports per group commit");
    describe_histogram!(
        INTAKE_COMMIT_DURATION,
        Unit::Seconds,
        "Duration of one group commit"
    );
    describe_counter!(RATE_LIMITED, "Requests refused by a rate limiter");
    describe_gauge!(RATE_LIMITER_KEYS, "Keys held by a keyed rate limiter");
    describe_counter!(CACHE_REQUESTS, "Cache look-ups, by result");
    describe_gauge!(INCIDENT_MODE, "1 while in incident mode, 0 otherwise");
    describe_gauge!(INCIDENTS_OPEN, "Incidents not yet resolved");
    describe_gauge!(
        SURGE_RATE,
        "Accepted reports per minute over the surge detection window"
    );
    describe_counter!(
        NOTIFICATIONS,
        "Notification attempts, by channel and outcome"
    );
    describe_gauge!(OUTBOX_PENDING, "Notifications waiting to be sent");
    describe_gauge!(
        OUTBOX_OLDEST_PENDING,
        Unit::Seconds,
        "Age of the oldest notification waiting to be sent"
    );
    describe_histogram!(
        NOTIFICATION_SEND_DURATION,
        Unit::Seconds,
        "Duration of one gateway send"
    );
}

/// The `/metrics` exposition: everything the recorder holds, then the [`OwnedGauge`] families.
pub fn render() -> String {
    let mut text = metrics_handle().render();
    let owned = owned_families()
        .lock()
        .unwrap_or_else(PoisonError::into_inner);
    let mut names: Vec<&'static str> = owned.keys().map(|(name, _)| *name).collect();
    names.dedup();
    for name in names {
        let mut members = owned.range((name, 0)..=(name, u64::MAX)).map(|(_, f)| f);
        let Some(first) = members.next() else {
            continue;
        };
        let _ = writeln!(text, "# HELP {name} {}", first.help);
        let _ = writeln!(text, "# TYPE {name} gauge");
        for family in std::iter::once(first).chain(members) {
            for (labels, value) in &family.samples {
                let _ = writeln!(text, "{name}{{{labels}}} {value}");
            }
        }
        text.push('\n');
    }
    text
}

/// A gauge family whose series must disappear when what they measure ends (a closed notice
/// clock): the recorder cannot forget a series, so the owner publishes its complete current set
/// and [`render`] writes it. Dropping the owner removes its series.
#[derive(Debug)]
pub struct OwnedGauge {
    name: &'static str,
    help: &'static str,
    owner: u64,
}

struct OwnedFamily {
    help: &'static str,
    /// Rendered label sets (`a="x",b="y"`) and values.
    samples: Vec<(String, f64)>,
}

type OwnedFamilies = Mutex<BTreeMap<(&'static str, u64), OwnedFamily>>;

fn owned_families() -> &'static OwnedFamilies {
    static FAMILIES: OnceLock<OwnedFamilies> = OnceLock::new();
    FAMILIES.get_or_init(Default::default)
}

impl OwnedGauge {
    pub fn new(name: &'static str, help: &'static str) -> Self {
        static NEXT_OWNER: AtomicU64 = AtomicU64::new(0);
        Self {
            name,
            help,
            owner: NEXT_OWNER.fetch_add(1, Ordering::Relaxed),
        }
    }

    /// Replace this owner's series with `samples`: (labels, value) pairs.
    pub fn publish<I, L>(&self, samples: I)
    where
        I: IntoIterator<Item = (L, f64)>,
        L: IntoIterator<Item = (&'static str, String)>,
    {
        let samples = samples
            .into_iter()
            .map(|(labels, value)| {
                let labels = labels
                    .into_iter()
                    .map(|(k, v)| format!("{k}=\"{}\"", escape_label(&v)))
                    .collect::<Vec<_>>()
                    .join(",");
                (labels, value)
            })
            .collect();
        owned_families()
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(
                (self.name, self.owner),
                OwnedFamily {
                    help: self.help,
                    samples,
                },
            );
    }
}

impl Drop for OwnedGauge {
    fn drop(&mut self) {
        owned_families()
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&(self.name, self.owner));
    }
}

fn escape_label(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// What a caught panic said, for the log: its message when it had one.
pub fn panic_text(cause: &(dyn std::any::Any + Send)) -> &str {
    cause
        .downcast_ref::<String>()
        .map(String::as_str)
        .or_else(|| cause.downcast_ref::<&str>().copied())
        .unwrap_or("unknown")
}

#[cfg(test)]
mod tests {
    use super::names::CATALOGUE;

    const DASHBOARD: &str = include_str!("../dashboards/reliefline.json");
    const ALERTS: &str = include_str!("../dashboards/alerts.yml");

    /// Every `reliefline_…` metric name in `text`, histogram series suffixes removed.
    fn metric_names(text: &str) -> Vec<String> {
        let mut found = Vec::new();
        let mut rest = text;
        while let Some(start) = rest.find("reliefline_") {
            let tail = &rest[start..];
            let end = tail
                .find(|c: char| !(c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'))
                .unwrap_or(tail.len());
            let name = &tail[..end];
            let base = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|suffix| name.strip_suffix(suffix))
                .unwrap_or(name);
            found.push(base.to_owned());
            rest = &tail[end..];
        }
        found
    }

    #[test]
    fn dashboards_and_alerts_use_only_catalogue_metrics() {
        for (file, text) in [("reliefline.json", DASHBOARD), ("alerts.yml", ALERTS)] {
            let names = metric_names(text);
            assert!(!names.is_empty(), "{file} refers to no metric");
            for name in names {
                // `reliefline-overview` style identifiers are not metrics.
                assert!(
                    CATALOGUE.contains(&name.as_str()),
                    "{file} refers to {name}, which the service does not export"
                );
            }
        }
    }

    #[test]
    fn the_dashboard_shows_every_catalogue_metric() {
        let dashboard: serde_json::Value =
            serde_json::from_str(DASHBOARD).expect("dashboard is JSON");
        let mut exprs = String::new();
        for panel in dashboard["panels"].as_array().expect("panels") {
            for target in panel["targets"].as_array().into_iter().flatten() {
                let expr = target["expr"].as_str().expect("every target has a query");
                exprs.push_str(expr);
                exprs.push('\n');
            }
        }
        let shown = metric_names(&exprs);
        for metric in CATALOGUE {
            assert!(
                shown.iter().any(|name| name == metric),
                "no dashboard panel shows {metric}"
            );
        }
    }
}
