//! Rate limits as clients meet them: `429` with `Retry-After`, per address, per receipt, and
//! for everyone together.

use reqwest::StatusCode;
use serde_json::Value;

use crate::helpers::{Backend, TestApp, TestDb, sample_report};
use crate::on_both_backends;
use reliefline::ratelimit::Limit;

fn limit(per_minute: f64, burst: u32) -> Limit {
    Limit { per_minute, burst }
}

async fn assert_limited(r: reqwest::Response) {
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
    let wait: u64 = r.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(wait >= 1, "Retry-After {wait}");
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"], "rate_limited");
}

async fn reports_are_limited_per_client_address(backend: Backend) {
    let Some(db) = TestDb::new(backend).await else {
        return;
    };
    let app = TestApp::spawn_with(db.into(), |c| {
        c.rate_limits.normal.report_ip = limit(1.0, 3);
        c.rate_limits.trusted_proxies =
            reliefline::http::client_ip::TrustedProxies::parse(["127.0.0.1/32"]).unwrap();
    })
    .await;
    let submit_from = |forwarded: &'static str| {
        app.client
            .post(app.url("/api/v1/reports"))
            .header("x-forwarded-for", forwarded)
            .json(&sample_report())
            .send()
    };
    for _ in 0..3 {
        assert_eq!(
            submit_from("203.0.113.7").await.unwrap().status(),
            StatusCode::CREATED
        );
    }
    assert_limited(submit_from("203.0.113.7").await.unwrap()).await;
    // Behind our trusted proxy, another client has its own allowance.
    assert_eq!(
        submit_from("198.51.100.9").await.unwrap().status(),
        StatusCode::CREATED
    );
    // A client cannot escape by claiming a different address in front of the real one.
    assert_limited(submit_from("10.9.9.9, 203.0.113.7").await.unwrap()).await;

    let metrics = app.metrics_text().await;
    assert!(
        metrics.contains(r#"reliefline_rate_limited_total{limiter="report_ip"}"#),
        "{metrics}"
    );
    assert!(metrics.contains(r#"reliefline_reports_rejected_total{reason="rate_limited"}"#));
    app.stop().await;
}

async fn lookups_are_limited_per_receipt_whoever_asks(backend: Backend) {
    let Some(db) = TestDb::new(backend).await else {
        return;
    };
    let app = TestApp::spawn_with(db.into(), |c| {
        c.rate_limits.normal.lookup_receipt = limit(0.1, 3);
    })
    .await;
    let body: Value = app.submit(&sample_report()).await.json().await.unwrap();
    let receipt = body["receipt"].as_str().unwrap();
    // Guessing contacts for a known receipt: three tries, then refused — also the right one.
    for guess in ["010-0000-0001", "010-0000-0002", "010-0000-0003"] {
        assert_eq!(
            app.lookup(receipt, guess).await.status(),
            StatusCode::NOT_FOUND
        );
    }
    assert_limited(app.lookup(receipt, "010-1234-5678").await).await;
    // Other receipts are unaffected.
    let other: Value = app.submit(&sample_report()).await.json().await.unwrap();
    let other = other["receipt"].as_str().unwrap();
    assert_eq!(
        app.lookup(other, "010-1234-5678").await.status(),
        StatusCode::OK
    );
    app.stop().await;
}

async fn the_admission_limit_holds_for_everyone(backend: Backend) {
    let Some(db) = TestDb::new(backend).await else {
        return;
    };
    let app = TestApp::spawn_with(db.into(), |c| {
        c.rate_limits.normal.admission = limit(1.0, 2);
    })
    .await;
    for _ in 0..2 {
        assert_eq!(
            app.submit(&sample_report()).await.status(),
            StatusCode::CREATED
        );
    }
    assert_limited(app.submit(&sample_report()).await).await;
    app.stop().await;
}

on_both_backends!(
    reports_are_limited_per_client_address,
    lookups_are_limited_per_receipt_whoever_asks,
    the_admission_limit_holds_for_everyone,
);
