//! The baseline: the least an axum 0.8 server can do with a report — parse the same JSON into
//! a struct of the same shape and answer `201` with a small JSON body — and store nothing.
//! Intake throughput is quoted as a ratio to this, measured in the same run on the same machine.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::Context as _;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::serve::ListenerExt as _;
use axum::{Json, Router};
use serde::Deserialize;

/// The report shape of `POST /api/v1/reports`, unknown fields refused as the service does.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)] // Parsed to cost what parsing costs; the values are not used.
struct Report {
    incident_id: Option<String>,
    provider: String,
    service: String,
    reporter_type: String,
    harm_type: String,
    occurred_at: Option<String>,
    amount_krw: Option<i64>,
    title: Option<String>,
    description: String,
    reporter: Reporter,
    notify: Option<Notify>,
    consent: Consent,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
struct Reporter {
    name: String,
    phone: Option<String>,
    email: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
struct Notify {
    sms: Option<bool>,
    email: Option<bool>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
struct Consent {
    personal_info: bool,
}

async fn accept(
    State(counter): State<&'static AtomicU64>,
    Json(_report): Json<Report>,
) -> (StatusCode, Json<serde_json::Value>) {
    let n = counter.fetch_add(1, Ordering::Relaxed);
    (
        StatusCode::CREATED,
        Json(serde_json::json!({"receipt": format!("HR-{n:016X}"), "status": "received"})),
    )
}

/// Serve until the process is killed.
pub async fn serve(listen: SocketAddr) -> anyhow::Result<()> {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let app = Router::new()
        .route("/api/v1/reports", post(accept))
        .route("/healthz", get(|| async { "ok" }))
        .with_state(&COUNTER);
    // TCP_NODELAY as the service sets it, so both answer with the same packets.
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("bind {listen}"))?
        .tap_io(|tcp| drop(tcp.set_nodelay(true)));
    axum::serve(listener, app).await?;
    Ok(())
}
