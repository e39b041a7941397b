//! Incidents over real HTTP: commands, public reads and their caches, the statutory notice
//! clock, and incident mode with surge detection, driven by a manual clock.

use std::net::SocketAddr;
use std::time::Duration;

use chrono::{TimeZone as _, Utc};
use reliefline::incident::{CacheCounts, CacheName, ManualClock, Mode};
use reliefline::store::Timestamp;
use reliefline::{App, AppState, Config};
use reqwest::{Method, StatusCode};
use secrecy::SecretString;
use serde_json::{Value, json};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::helpers::{Backend, TestDb, test_config};
use crate::on_both_backends;

const TOKEN: &str = "commander-token-for-tests-0123456789";
const HOLD_DOWN_SECS: u64 = 600;

/// 16:00 KST on the day of the Pangyo fire; the outage began at 15:30 KST.
fn start() -> Timestamp {
    Utc.with_ymd_and_hms(2022, 10, 15, 7, 0, 0).unwrap()
}
const STARTED_AT: &str = "2022-10-15T15:30:00+09:00";

/// The service with a manual clock and its state within reach.
struct IncidentApp {
    addr: SocketAddr,
    metrics_addr: SocketAddr,
    state: AppState,
    clock: ManualClock,
    client: reqwest::Client,
    shutdown: CancellationToken,
    task: Option<JoinHandle<anyhow::Result<()>>>,
    _db: TestDb,
}

impl IncidentApp {
    async fn spawn(backend: Backend) -> Option<Self> {
        Self::spawn_with(backend, |_| {}).await
    }

    async fn spawn_with(backend: Backend, adjust: impl FnOnce(&mut Config)) -> Option<Self> {
        let db = TestDb::new(backend).await?;
        let mut config = test_config(&db);
        config.admin.token = SecretString::from(TOKEN);
        config.incident.surge_threshold_per_minute = 60;
        config.incident.surge_window_secs = 60;
        config.incident.hold_down_secs = HOLD_DOWN_SECS;
        // Tests evaluate explicitly; the background task runs once at start and then waits.
        config.incident.evaluate_interval_ms = 3_600_000;
        // Long lifetimes: expiry must never be what makes a test pass.
        config.incident.read_cache_ttl_ms = 3_600_000;
        config.incident.read_cache_ttl_incident_ms = 3_600_000;
        adjust(&mut config);
        let clock = ManualClock::new(start());
        let app = App::build_with_clock(config, clock.clone().into())
            .await
            .expect("app builds");
        let addr = app.local_addr();
        let metrics_addr = app.metrics_addr().expect("metrics listener");
        let state = app.state().clone();
        let shutdown = CancellationToken::new();
        let signal = shutdown.clone();
        let task = tokio::spawn(app.run(async move { signal.cancelled().await }));
        Some(Self {
            addr,
            metrics_addr,
            state,
            clock,
            client: reqwest::Client::new(),
            shutdown,
            task: Some(task),
            _db: db,
        })
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    async fn call(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut request = self.client.request(method, self.url(path));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.unwrap();
        let status = response.status();
        let text = response.text().await.unwrap();
        let value = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("{status} answered non-JSON ({e}): {text}"));
        (status, value)
    }

    async fn get(&self, path: &str) -> Value {
        let (status, body) = self.call(Method::GET, path, None, None).await;
        assert_eq!(status, StatusCode::OK, "GET {path}: {body}");
        body
    }

    async fn command(&self, method: Method, path: &str, body: Value) -> (StatusCode, Value) {
        self.call(method, path, Some(TOKEN), Some(body)).await
    }

    async fn declare(&self, title: &str) -> Value {
        let (status, body) = self
            .command(Method::POST, "/api/v1/incidents", declaration(title))
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        body
    }

    async fn post_update(&self, id: &str, status: &str) -> (StatusCode, Value) {
        self.command(
            Method::POST,
            &format!("/api/v1/incidents/{id}/updates"),
            json!({"status": status, "message": {"ko": format!("{status} 안내"), "en": format!("{status} notice")}}),
        )
        .await
    }

    async fn mode(&self) -> String {
        self.get("/api/v1/status").await["mode"]
            .as_str()
            .unwrap()
            .to_owned()
    }

    async fn evaluate(&self) -> reliefline::incident::Evaluation {
        self.state.incidents.evaluate().await.unwrap()
    }

    fn counts(&self, cache: CacheName) -> CacheCounts {
        self.state.incidents.cache_counts(cache)
    }

    async fn metrics(&self) -> String {
        self.client
            .get(format!("http://{}/metrics", self.metrics_addr))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    async fn stop(mut self) {
        self.shutdown.cancel();
        if let Some(task) = self.task.take() {
            task.await.unwrap().unwrap();
        }
    }
}

impl Drop for IncidentApp {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

fn declaration(title: &str) -> Value {
    json!({
        "title": {"ko": title, "en": format!("{title} (en)")},
        "provider": "Kakao",
        "services": ["KakaoTalk", "Kakao T"],
        "started_at": STARTED_AT,
        "severity": "critical",
        "message": {"ko": "판교 데이터센터 화재로 서비스가 중단되었습니다.",
                    "en": "A fire at the Pangyo data centre interrupted the services."}
    })
}

fn id_of(incident: &Value) -> String {
    incident["id"].as_str().unwrap().to_owned()
}

async fn the_full_lifecycle(backend: Backend) {
    let Some(app) = IncidentApp::spawn(backend).await else {
        return;
    };
    let response = app
        .client
        .post(app.url("/api/v1/incidents"))
        .bearer_auth(TOKEN)
        .json(&declaration("카카오 서비스 장애"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);
    let location = response.headers()["location"].to_str().unwrap().to_owned();
    let declared: Value = response.json().await.unwrap();
    let id = id_of(&declared);
    assert_eq!(location, format!("/api/v1/incidents/{id}"));
    assert_eq!(declared["state"], "open");
    assert_eq!(declared["status"], "investigating");
    assert_eq!(declared["origin"], "declared");
    assert_eq!(declared["confirmed"], true);
    assert_eq!(declared["title"]["ko"], "카카오 서비스 장애");
    assert_eq!(declared["provider"], "Kakao");
    assert_eq!(declared["services"], json!(["KakaoTalk", "Kakao T"]));
    assert_eq!(declared["severity"], "critical");
    assert_eq!(declared["started_at"], "2022-10-15T06:30:00Z");
    assert_eq!(declared["updates"].as_array().unwrap().len(), 1);
    assert_eq!(declared["reports_linked"], 0);

    for status in ["identified", "monitoring"] {
        app.clock.advance(Duration::from_secs(1800));
        let (code, body) = app.post_update(&id, status).await;
        assert_eq!(code, StatusCode::CREATED, "{body}");
        assert_eq!(body["status"], status);
        assert_eq!(body["state"], "open");
        assert_eq!(
            body["latest_update"]["message"]["en"],
            format!("{status} notice")
        );
    }
    app.clock.advance(Duration::from_secs(1800));
    let (code, resolved) = app.post_update(&id, "resolved").await;
    assert_eq!(code, StatusCode::CREATED, "{resolved}");
    assert_eq!(resolved["state"], "resolved");
    assert_eq!(resolved["resolved_at"], "2022-10-15T08:30:00Z");
    let statuses: Vec<_> = resolved["updates"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["status"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        statuses,
        ["investigating", "identified", "monitoring", "resolved"]
    );

    // A closed incident takes no more updates, and the refusal changes nothing.
    let (code, body) = app.post_update(&id, "monitoring").await;
    assert_eq!(code, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(body["error"], "incident_closed");
    let detail = app.get(&format!("/api/v1/incidents/{id}")).await;
    assert_eq!(detail["updates"].as_array().unwrap().len(), 4);
    assert_eq!(detail["state"], "resolved");

    let status = app.get("/api/v1/status").await;
    assert_eq!(status["incidents"], json!([]));
    let resolved_list = app.get("/api/v1/incidents?state=resolved").await;
    assert_eq!(resolved_list["incidents"][0]["id"], id.as_str());
    assert_eq!(
        app.get("/api/v1/incidents?state=open").await["incidents"],
        json!([])
    );

    // Every command is on the audit trail, by token id, with the client address.
    let audit = app.state.store.recent_audit(50).await.unwrap();
    let actions: Vec<_> = audit.iter().rev().map(|e| e.action.as_str()).collect();
    assert_eq!(
        actions,
        [
            "incident.declare",
            "incident.update",
            "incident.update",
            "incident.update"
        ]
    );
    let token_id = reliefline::incident::auth::token_id(TOKEN);
    for entry in &audit {
        assert_eq!(entry.actor, token_id);
        assert_eq!(
            entry.target.as_deref(),
            Some(format!("incident/{id}").as_str())
        );
        assert_eq!(entry.client_addr.as_deref(), Some("127.0.0.1"));
        let detail = entry.detail.as_ref().unwrap().to_string();
        assert!(!detail.contains(TOKEN), "{detail}");
    }
    app.stop().await;
}

async fn several_incidents_are_open_at_once(backend: Backend) {
    let Some(app) = IncidentApp::spawn(backend).await else {
        return;
    };
    let first = id_of(&app.declare("카카오톡 장애").await);
    app.clock.advance(Duration::from_secs(60));
    let second = id_of(&app.declare("카카오 T 장애").await);
    app.post_update(&first, "identified").await;

    let status = app.get("/api/v1/status").await;
    assert_eq!(status["mode"], "incident");
    let open = status["incidents"].as_array().unwrap();
    assert_eq!(open.len(), 2);
    let by_id = |id: &str| open.iter().find(|i| i["id"] == id).unwrap().clone();
    assert_eq!(by_id(&first)["latest_update"]["status"], "identified");
    assert_eq!(by_id(&second)["latest_update"]["status"], "investigating");
    assert!(by_id(&first).get("staff").is_none());
    assert!(by_id(&first).get("updates").is_none());

    let list = app.get("/api/v1/incidents?state=open").await;
    assert_eq!(list["incidents"].as_array().unwrap().len(), 2);
    let all = app.get("/api/v1/incidents").await;
    assert_eq!(all["state"], "all");
    assert_eq!(all["incidents"].as_array().unwrap().len(), 2);
    assert_eq!(app.evaluate().await.open_incidents, 2);
    app.stop().await;
}

async fn commands_need_the_token_and_change_nothing_without_it(backend: Backend) {
    let Some(app) = IncidentApp::spawn(backend).await else {
        return;
    };
    let id = id_of(&app.declare("장애").await);
    let audit_before = app.state.store.recent_audit(50).await.unwrap().len();

    let attempts = [
        (
            Method::POST,
            "/api/v1/incidents".to_owned(),
            declaration("가짜"),
        ),
        (
            Method::POST,
            format!("/api/v1/incidents/{id}/updates"),
            json!({"status": "resolved", "message": {"ko": "해결"}}),
        ),
        (
            Method::PUT,
            "/api/v1/mode".to_owned(),
            json!({"mode": "normal"}),
        ),
        (
            Method::POST,
            format!("/api/v1/incidents/{id}/dismiss"),
            json!({}),
        ),
    ];
    for (method, path, body) in attempts {
        for token in [None, Some("wrong-token-wrong-token"), Some("")] {
            let mut request = app
                .client
                .request(method.clone(), app.url(&path))
                .json(&body);
            if let Some(token) = token {
                request = request.header("authorization", format!("Bearer {token}"));
            }
            let response = request.send().await.unwrap();
            assert_eq!(
                response.status(),
                StatusCode::UNAUTHORIZED,
                "{method} {path} {token:?}"
            );
            assert!(response.headers().contains_key("www-authenticate"));
            let body: Value = response.json().await.unwrap();
            assert_eq!(body["error"], "unauthorized");
        }
    }
    // A malformed body is not looked at before the token.
    let response = app
        .client
        .post(app.url("/api/v1/incidents"))
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);

    let detail = app.get(&format!("/api/v1/incidents/{id}")).await;
    assert_eq!(detail["state"], "open");
    assert_eq!(detail["updates"].as_array().unwrap().len(), 1);
    assert_eq!(
        app.get("/api/v1/incidents").await["incidents"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    assert_eq!(app.mode().await, "incident");
    assert_eq!(
        app.state.store.recent_audit(50).await.unwrap().len(),
        audit_before
    );
    // A wrong token on a public read is refused too, rather than silently ignored.
    let (code, _) = app
        .call(
            Method::GET,
            &format!("/api/v1/incidents/{id}"),
            Some("nope-nope-nope-nope"),
            None,
        )
        .await;
    assert_eq!(code, StatusCode::UNAUTHORIZED);
    app.stop().await;
}

async fn without_a_configured_token_commands_are_disabled(backend: Backend) {
    let Some(app) =
        IncidentApp::spawn_with(backend, |c| c.admin.token = SecretString::from("")).await
    else {
        return;
    };
    for token in [None, Some(TOKEN)] {
        let (code, body) = app
            .call(
                Method::POST,
                "/api/v1/incidents",
                token,
                Some(declaration("장애")),
            )
            .await;
        assert_eq!(code, StatusCode::UNAUTHORIZED);
        assert_eq!(body["error"], "commands_disabled", "{body}");
    }
    let (code, body) = app
        .call(
            Method::PUT,
            "/api/v1/mode",
            Some(TOKEN),
            Some(json!({"mode": "incident"})),
        )
        .await;
    assert_eq!(code, StatusCode::UNAUTHORIZED);
    assert!(
        body["message"].as_str().unwrap().contains("admin.token"),
        "{body}"
    );
    // Public reads work all the same.
    assert_eq!(
        app.get("/api/v1/status").await,
        json!({"mode": "normal", "incidents": []})
    );
    app.stop().await;
}

async fn bad_requests_are_named(backend: Backend) {
    let Some(app) = IncidentApp::spawn(backend).await else {
        return;
    };
    let (code, body) = app
        .command(
            Method::POST,
            "/api/v1/incidents",
            json!({
                "title": {"en": "English only"},
                "provider": "",
                "services": ["KakaoTalk", 7],
                "started_at": STARTED_AT,
                "severity": "major",
                "message": {"ko": "안내"}
            }),
        )
        .await;
    assert_eq!(code, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert!(body["fields"].get("services[1]").is_some(), "{body}");

    let (code, body) = app
        .command(
            Method::POST,
            "/api/v1/incidents",
            json!({
                "title": {"en": "English only"},
                "provider": "",
                "services": [],
                "started_at": "2022-10-15T23:00:00+09:00",
                "severity": "apocalyptic",
                "message": {"ko": " "}
            }),
        )
        .await;
    assert_eq!(code, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(body["error"], "validation_failed");
    let fields = body["fields"].as_object().unwrap();
    for path in [
        "title.ko",
        "provider",
        "services",
        "started_at",
        "severity",
        "message.ko",
    ] {
        assert!(fields.contains_key(path), "{path} not in {body}");
    }
    assert_eq!(fields["started_at"], "must not be in the future");

    let mut unknown = declaration("장애");
    unknown["title"]["jp"] = json!("障害");
    let (code, body) = app
        .command(Method::POST, "/api/v1/incidents", unknown)
        .await;
    assert_eq!(code, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(body["fields"]["title.jp"], "unknown field", "{body}");

    let response = app
        .client
        .post(app.url("/api/v1/incidents"))
        .bearer_auth(TOKEN)
        .header("content-type", "application/json")
        .body(r#"{"title": {"ko": "장애"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    assert_eq!(
        response.json::<Value>().await.unwrap()["error"],
        "malformed_json"
    );

    let response = app
        .client
        .post(app.url("/api/v1/incidents"))
        .bearer_auth(TOKEN)
        .header("content-type", "text/plain")
        .body(declaration("장애").to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
    assert_eq!(
        response.json::<Value>().await.unwrap()["error"],
        "unsupported_media_type"
    );

    let response = app
        .client
        .put(app.url("/api/v1/mode"))
        .bearer_auth(TOKEN)
        .header("content-type", "application/json")
        .body(format!(r#"{{"mode": "{}"}}"#, "x".repeat(70 * 1024)))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);

    let id = id_of(&app.declare("장애").await);
    let (code, body) = app
        .command(
            Method::POST,
            &format!("/api/v1/incidents/{id}/updates"),
            json!({"status": "unconfirmed", "message": {"ko": "?"}}),
        )
        .await;
    assert_eq!(code, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        body["fields"]["status"]
            .as_str()
            .unwrap()
            .contains("investigating")
    );
    let (code, body) = app
        .command(
            Method::POST,
            &format!("/api/v1/incidents/{id}/updates"),
            json!({}),
        )
        .await;
    assert_eq!(code, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(body["fields"].get("status").is_some() && body["fields"].get("message").is_some());
    let (code, body) = app
        .command(Method::PUT, "/api/v1/mode", json!({"mode": "panic"}))
        .await;
    assert_eq!(code, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(body["fields"].get("mode").is_some());

    let (code, body) = app
        .call(Method::GET, "/api/v1/incidents?state=closed", None, None)
        .await;
    assert_eq!(code, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(body["fields"].get("state").is_some());

    // Unknown and malformed ids are both simply not found, in our format.
    let unknown = Uuid::now_v7();
    for path in [
        format!("/api/v1/incidents/{unknown}"),
        "/api/v1/incidents/not-a-uuid".to_owned(),
        "/api/v1/incidents/%27%3B--".to_owned(),
    ] {
        let (code, body) = app.call(Method::GET, &path, None, None).await;
        assert_eq!(code, StatusCode::NOT_FOUND, "{path}");
        assert_eq!(body["error"], "not_found");
    }
    for path in [
        format!("/api/v1/incidents/{unknown}/updates"),
        "/api/v1/incidents/xyz/updates".to_owned(),
    ] {
        let (code, body) = app
            .command(
                Method::POST,
                &path,
                json!({"status": "monitoring", "message": {"ko": "안내"}}),
            )
            .await;
        assert_eq!(code, StatusCode::NOT_FOUND, "{path}: {body}");
    }
    app.stop().await;
}

async fn staff_see_the_notice_clock_and_alerts_can_use_it(backend: Backend) {
    let Some(app) = IncidentApp::spawn(backend).await else {
        return;
    };
    let id = id_of(&app.declare("카카오 서비스 장애").await);
    let path = format!("/api/v1/incidents/{id}");

    let public = app.get(&path).await;
    assert!(public.get("staff").is_none(), "{public}");
    assert!(!public.to_string().contains("notice_due"), "{public}");
    let response = app.client.get(app.url(&path)).send().await.unwrap();
    assert!(
        response.headers()["cache-control"]
            .to_str()
            .unwrap()
            .starts_with("public")
    );

    let (code, staff) = app.call(Method::GET, &path, Some(TOKEN), None).await;
    assert_eq!(code, StatusCode::OK);
    assert_eq!(
        staff["staff"]["individual_notice_due_at"],
        "2022-10-15T08:30:00Z"
    );
    assert_eq!(staff["staff"]["damages_notice_due_at"], Value::Null);

    // At 16:00 KST the two-hour mark (17:30 KST) is 5,400 seconds away.
    app.evaluate().await;
    let series = format!(
        "reliefline_incident_notice_deadline_seconds{{incident=\"{id}\",notice=\"individual\"}}"
    );
    let metrics = app.metrics().await;
    assert!(metrics.contains(&format!("{series} 5400")), "{metrics}");

    // Past the mark the value turns negative: overdue.
    app.clock.advance(Duration::from_secs(3 * 3600));
    app.evaluate().await;
    assert!(app.metrics().await.contains(&format!("{series} -5400")));

    // Resolved at 19:00 KST: the individual clock closes, the 30-day damages clock starts.
    app.post_update(&id, "resolved").await;
    let (_, staff) = app.call(Method::GET, &path, Some(TOKEN), None).await;
    assert_eq!(
        staff["staff"]["damages_notice_due_at"],
        "2022-11-14T10:00:00Z"
    );
    let metrics = app.metrics().await;
    assert!(
        !metrics.contains(&series),
        "closed clock still exported: {metrics}"
    );
    let damages = format!(
        "reliefline_incident_notice_deadline_seconds{{incident=\"{id}\",notice=\"damages\"}} {}",
        30 * 24 * 3600
    );
    assert!(metrics.contains(&damages), "{metrics}");
    app.stop().await;
}

async fn public_reads_come_from_the_cache_until_a_command(backend: Backend) {
    let Some(app) = IncidentApp::spawn(backend).await else {
        return;
    };
    let before = app.counts(CacheName::Status);
    app.get("/api/v1/status").await;
    app.get("/api/v1/status").await;
    let after = app.counts(CacheName::Status);
    assert_eq!(after.misses - before.misses, 1, "one store load");
    assert_eq!(after.hits - before.hits, 1, "the second read is a hit");

    // Many readers at once still cost one load.
    let id = id_of(&app.declare("장애").await);
    let before = app.counts(CacheName::Status);
    let reads = (0..50).map(|_| app.get("/api/v1/status"));
    let bodies = futures::future::join_all(reads).await;
    assert!(
        bodies
            .iter()
            .all(|b| b["incidents"][0]["id"] == id.as_str())
    );
    let after = app.counts(CacheName::Status);
    assert_eq!(after.misses - before.misses, 1);
    assert_eq!(after.hits - before.hits, 49);

    // A command makes the next read load afresh.
    let detail_path = format!("/api/v1/incidents/{id}");
    app.get(&detail_path).await;
    let cached = app.get(&detail_path).await;
    assert_eq!(cached["updates"].as_array().unwrap().len(), 1);
    let detail_before = app.counts(CacheName::Incident);
    app.post_update(&id, "identified").await;
    let fresh = app.get(&detail_path).await;
    assert_eq!(fresh["status"], "identified");
    assert_eq!(fresh["updates"].as_array().unwrap().len(), 2);
    assert_eq!(
        app.counts(CacheName::Incident).misses - detail_before.misses,
        1
    );
    let status = app.get("/api/v1/status").await;
    assert_eq!(
        status["incidents"][0]["latest_update"]["status"],
        "identified"
    );

    // The hit/miss counter of the catalogue is exported.
    let metrics = app.metrics().await;
    assert!(
        metrics.contains(r#"reliefline_cache_requests_total{cache="status",result="hit"}"#),
        "{metrics}"
    );
    assert!(metrics.contains(r#"reliefline_cache_requests_total{cache="incident",result="miss"}"#));
    app.stop().await;
}

async fn declaring_enters_incident_mode_and_the_hold_down_ends_it(backend: Backend) {
    let Some(app) = IncidentApp::spawn(backend).await else {
        return;
    };
    let mut switches = app.state.mode.subscribe();
    assert_eq!(app.mode().await, "normal");
    let id = id_of(&app.declare("장애").await);
    assert_eq!(app.state.mode.current(), Mode::Incident);
    assert!(switches.has_changed().unwrap());
    assert_eq!(*switches.borrow_and_update(), Mode::Incident);
    assert_eq!(app.mode().await, "incident");

    app.clock.advance(Duration::from_secs(3600));
    app.post_update(&id, "resolved").await;
    assert_eq!(
        app.mode().await,
        "incident",
        "held until the hold-down passes"
    );
    app.clock.advance(Duration::from_secs(HOLD_DOWN_SECS - 1));
    assert_eq!(app.evaluate().await.mode.mode, Mode::Incident);
    app.clock.advance(Duration::from_secs(2));
    let evaluation = app.evaluate().await;
    assert_eq!(evaluation.mode.mode, Mode::Normal);
    assert_eq!(evaluation.open_incidents, 0);
    assert_eq!(app.mode().await, "normal");
    assert_eq!(*switches.borrow_and_update(), Mode::Normal);
    app.stop().await;
}

async fn commanders_can_force_the_mode(backend: Backend) {
    let Some(app) = IncidentApp::spawn(backend).await else {
        return;
    };
    let (code, body) = app
        .command(Method::PUT, "/api/v1/mode", json!({"mode": "incident"}))
        .await;
    assert_eq!(code, StatusCode::OK, "{body}");
    assert_eq!(
        body,
        json!({"mode": "incident", "override": "incident", "automatic": "normal"})
    );
    assert_eq!(app.mode().await, "incident");
    // Forced: evaluation does not take it back.
    app.clock.advance(Duration::from_secs(HOLD_DOWN_SECS * 2));
    app.evaluate().await;
    assert_eq!(app.mode().await, "incident");

    let (_, body) = app
        .command(Method::PUT, "/api/v1/mode", json!({"mode": "auto"}))
        .await;
    assert_eq!(body["mode"], "normal");
    assert_eq!(app.mode().await, "normal");

    app.declare("장애").await;
    let (_, body) = app
        .command(Method::PUT, "/api/v1/mode", json!({"mode": "normal"}))
        .await;
    assert_eq!(
        body,
        json!({"mode": "normal", "override": "normal", "automatic": "incident"})
    );
    assert_eq!(app.mode().await, "normal");
    let (_, body) = app
        .command(Method::PUT, "/api/v1/mode", json!({"mode": "auto"}))
        .await;
    assert_eq!(body["mode"], "incident");

    let audit = app.state.store.recent_audit(50).await.unwrap();
    let modes: Vec<_> = audit
        .iter()
        .rev()
        .filter(|e| e.action == "mode.set")
        .map(|e| e.detail.as_ref().unwrap()["override"].clone())
        .collect();
    assert_eq!(
        modes,
        [
            json!("incident"),
            json!("auto"),
            json!("normal"),
            json!("auto")
        ]
    );
    app.stop().await;
}

/// The unconfirmed surge incident(s) currently open.
async fn open_surges(app: &IncidentApp) -> Vec<Value> {
    app.get("/api/v1/incidents?state=open").await["incidents"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|i| i["origin"] == "surge" && i["confirmed"] == false)
        .cloned()
        .collect()
}

async fn a_surge_opens_an_unconfirmed_incident_to_confirm(backend: Backend) {
    let Some(app) = IncidentApp::spawn(backend).await else {
        return;
    };
    // 59 reports in the 60-second window: at the threshold of 60/min, not above it.
    app.state.surge.record_accepted(59);
    let evaluation = app.evaluate().await;
    assert!(!evaluation.surging);
    assert_eq!(evaluation.mode.mode, Mode::Normal);
    assert!(open_surges(&app).await.is_empty());

    app.state.surge.record_accepted(41);
    let evaluation = app.evaluate().await;
    assert!(evaluation.surging);
    assert!((evaluation.rate_per_minute - 100.0).abs() < 1e-9);
    assert_eq!(evaluation.mode.mode, Mode::Incident);
    let surges = open_surges(&app).await;
    assert_eq!(surges.len(), 1);
    let surge = &surges[0];
    assert_eq!(surge["status"], "unconfirmed");
    assert_eq!(surge["provider"], Value::Null);
    let id = id_of(surge);

    // Only one unconfirmed surge at a time, however often it is evaluated.
    app.state.surge.record_accepted(500);
    app.evaluate().await;
    app.evaluate().await;
    assert_eq!(open_surges(&app).await.len(), 1);
    let status = app.get("/api/v1/status").await;
    assert_eq!(status["mode"], "incident");
    assert_eq!(
        status["incidents"][0]["latest_update"]["status"],
        "unconfirmed"
    );

    // Not yet an incident to post updates to.
    let (code, body) = app.post_update(&id, "identified").await;
    assert_eq!(code, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(body["error"], "incident_unconfirmed");

    let (code, confirmed) = app
        .command(
            Method::POST,
            &format!("/api/v1/incidents/{id}/confirm"),
            json!({"provider": "Kakao", "services": ["KakaoTalk"], "severity": "critical",
                   "title": {"ko": "카카오톡 장애", "en": "KakaoTalk outage"}}),
        )
        .await;
    assert_eq!(code, StatusCode::OK, "{confirmed}");
    assert_eq!(confirmed["confirmed"], true);
    assert_eq!(confirmed["status"], "investigating");
    assert_eq!(confirmed["provider"], "Kakao");
    assert_eq!(confirmed["title"]["en"], "KakaoTalk outage");
    assert_eq!(confirmed["origin"], "surge");
    let (code, body) = app.post_update(&id, "identified").await;
    assert_eq!(code, StatusCode::CREATED, "{body}");
    // Confirmed is no longer dismissable.
    let (code, body) = app
        .command(
            Method::POST,
            &format!("/api/v1/incidents/{id}/dismiss"),
            json!({}),
        )
        .await;
    assert_eq!(code, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(body["error"], "incident_confirmed");

    let audit = app.state.store.recent_audit(50).await.unwrap();
    let opened = audit
        .iter()
        .find(|e| e.action == "incident.surge_open")
        .unwrap();
    assert_eq!(opened.actor, "system:surge");
    assert!(audit.iter().any(|e| e.action == "incident.confirm"));
    app.stop().await;
}

async fn a_dismissed_surge_leaves_incident_mode_after_the_hold_down(backend: Backend) {
    let Some(app) = IncidentApp::spawn(backend).await else {
        return;
    };
    app.state.surge.record_accepted(120);
    app.evaluate().await;
    let id = id_of(&open_surges(&app).await[0]);

    // The confirm and dismiss commands need no body.
    let response = app
        .client
        .post(app.url(&format!("/api/v1/incidents/{id}/dismiss")))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let dismissed: Value = response.json().await.unwrap();
    assert_eq!(dismissed["state"], "dismissed");
    assert_eq!(dismissed["staff"]["individual_notice_due_at"], Value::Null);
    assert!(open_surges(&app).await.is_empty());
    assert_eq!(
        app.get("/api/v1/incidents?state=dismissed").await["incidents"][0]["id"],
        id.as_str()
    );

    // The same surge goes on: it is not opened again, and the mode stays while it lasts.
    app.clock.advance(Duration::from_secs(30));
    app.state.surge.record_accepted(120);
    let evaluation = app.evaluate().await;
    assert!(evaluation.surging);
    assert_eq!(evaluation.opened_surge, None);
    assert!(open_surges(&app).await.is_empty());
    assert_eq!(evaluation.mode.mode, Mode::Incident);

    // The rate falls below the threshold; the hold-down runs from there.
    app.clock.advance(Duration::from_secs(60));
    let evaluation = app.evaluate().await;
    assert!(!evaluation.surging);
    assert_eq!(evaluation.mode.mode, Mode::Incident);
    app.clock.advance(Duration::from_secs(HOLD_DOWN_SECS));
    assert_eq!(app.evaluate().await.mode.mode, Mode::Normal);
    assert_eq!(app.mode().await, "normal");

    // A new surge is a new episode: a new unconfirmed incident.
    app.state.surge.record_accepted(100);
    app.evaluate().await;
    let surges = open_surges(&app).await;
    assert_eq!(surges.len(), 1);
    assert_ne!(id_of(&surges[0]), id);
    assert_eq!(app.mode().await, "incident");
    app.stop().await;
}

on_both_backends!(
    the_full_lifecycle,
    several_incidents_are_open_at_once,
    commands_need_the_token_and_change_nothing_without_it,
    without_a_configured_token_commands_are_disabled,
    bad_requests_are_named,
    staff_see_the_notice_clock_and_alerts_can_use_it,
    public_reads_come_from_the_cache_until_a_command,
    declaring_enters_incident_mode_and_the_hold_down_ends_it,
    commanders_can_force_the_mode,
    a_surge_opens_an_unconfirmed_incident_to_confirm,
    a_dismissed_surge_leaves_incident_mode_after_the_hold_down,
);
