//! Health, readiness, metrics and the layers every response passes through.

use crate::helpers::{Backend, TestApp, TestDb};
use crate::on_both_backends;

async fn health_and_readiness(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let r = app.client.get(app.url("/healthz")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let r = app.client.get(app.url("/readyz")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["status"], "ready");
    assert_eq!(
        body["backend"],
        match backend {
            Backend::Sqlite => "sqlite",
            Backend::Postgres => "postgres",
        }
    );
    app.stop().await;
}

async fn metrics_are_labelled_by_route_not_path(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    for _ in 0..3 {
        app.client.get(app.url("/healthz")).send().await.unwrap();
    }
    let r = app
        .client
        .get(app.url("/api/no/such/path/8c1f2"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["error"], "not_found");
    // A client may send any token as a method: it never becomes a label of its own.
    let brew = reqwest::Method::from_bytes(b"BREW8C1F2").unwrap();
    let r = app
        .client
        .request(brew.clone(), app.url("/healthz"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 405);
    let r = app
        .client
        .request(brew, app.url("/api/no/such/path"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);

    let metrics_addr = app.metrics_addr.expect("own metrics listener");
    let text = app
        .client
        .get(format!("http://{metrics_addr}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        text.contains(
            r#"reliefline_http_requests_total{route="/healthz",method="GET",status="200"}"#
        ),
        "{text}"
    );
    assert!(text.contains(r#"route="unmatched""#), "{text}");
    assert!(
        text.contains(
            r#"reliefline_http_requests_total{route="/healthz",method="other",status="405"}"#
        ),
        "{text}"
    );
    assert!(
        text.contains(
            r#"reliefline_http_requests_total{route="unmatched",method="other",status="404"}"#
        ),
        "{text}"
    );
    assert!(
        !text.contains("8c1f2") && !text.contains("8C1F2"),
        "raw paths and methods must never become labels"
    );
    assert!(
        text.contains("reliefline_http_request_duration_seconds_bucket"),
        "{text}"
    );
    // Not on the public listener when it has its own.
    let r = app.client.get(app.url("/metrics")).send().await.unwrap();
    assert_eq!(r.status(), 404);
    app.stop().await;
}

async fn metrics_can_share_the_public_listener(backend: Backend) {
    let Some(db) = TestDb::new(backend).await else {
        return;
    };
    let app = TestApp::spawn_with(db.into(), |c| c.metrics.listen = None).await;
    let r = app.client.get(app.url("/metrics")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(
        r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain")
    );
    app.stop().await;
}

async fn security_headers_and_request_ids(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let r = app.client.get(app.url("/healthz")).send().await.unwrap();
    let h = r.headers();
    assert_eq!(h["x-content-type-options"], "nosniff");
    assert_eq!(h["x-frame-options"], "DENY");
    assert_eq!(h["referrer-policy"], "no-referrer");
    let csp = h["content-security-policy"].to_str().unwrap();
    assert!(csp.contains("frame-ancestors 'none'") && !csp.contains("unsafe-inline"));
    assert!(!h["x-request-id"].is_empty());
    let r = app
        .client
        .get(app.url("/healthz"))
        .header("x-request-id", "trace-me-42")
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["x-request-id"], "trace-me-42");
    app.stop().await;
}

async fn readiness_fails_while_the_store_is_unreachable(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    // Closing the store's connections is what an unreachable database looks like from here.
    app.store.close().await;
    let r = app.client.get(app.url("/readyz")).send().await.unwrap();
    assert_eq!(r.status(), 503);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["status"], "not_ready");
    assert_eq!(body["problems"][0], "store");
    // Liveness is unaffected.
    let r = app.client.get(app.url("/healthz")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    app.stop().await;
}

async fn slow_clients_cannot_hold_a_connection(backend: Backend) {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let Some(db) = TestDb::new(backend).await else {
        return;
    };
    let app = TestApp::spawn_with(db.into(), |c| c.http.header_read_timeout_ms = 300).await;
    let mut stream = tokio::net::TcpStream::connect(app.addr).await.unwrap();
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    // Never finish the head: the server must give up and close the connection.
    let mut buf = Vec::new();
    let read = tokio::time::timeout(
        std::time::Duration::from_secs(10),
        stream.read_to_end(&mut buf),
    )
    .await
    .expect("server closed the stalled connection");
    assert!(read.is_ok() || buf.is_empty());
    app.stop().await;
}

on_both_backends!(
    health_and_readiness,
    metrics_are_labelled_by_route_not_path,
    metrics_can_share_the_public_listener,
    security_headers_and_request_ids,
    readiness_fails_while_the_store_is_unreachable,
    slow_clients_cannot_hold_a_connection,
);
