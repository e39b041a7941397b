//! Subscriptions over real HTTP (double opt-in, one-click unsubscribe, the per-address and
//! per-contact limits) and the fan-out of incident updates into the outbox, on a large subscriber
//! set, across a restart. Sending is the dispatcher's business: these tests look at outbox rows.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use reliefline::incident::ManualClock;
use reliefline::ratelimit::Limit;
use reliefline::store::{MessageChannel, OutboxProgress, Outcome};
use reliefline::subscribe::FanoutWorker;
use reliefline::{App, AppState, Config};
use reqwest::{Method, StatusCode};
use secrecy::SecretString;
use serde_json::{Value, json};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::helpers::{Backend, TestDb, test_config};
use crate::on_both_backends;

const TOKEN: &str = "commander-token-for-subscription-tests";

/// The service on a manual clock, with the fan-out worker idle unless a test asks for it.
struct SubApp {
    addr: SocketAddr,
    state: AppState,
    clock: ManualClock,
    client: reqwest::Client,
    backend: Backend,
    db: Arc<TestDb>,
    shutdown: CancellationToken,
    task: Option<JoinHandle<anyhow::Result<()>>>,
}

impl SubApp {
    async fn spawn(backend: Backend) -> Option<Self> {
        let db = Arc::new(TestDb::new(backend).await?);
        Some(Self::start(backend, db, |_| {}).await)
    }

    async fn start(backend: Backend, db: Arc<TestDb>, adjust: impl FnOnce(&mut Config)) -> Self {
        let mut config = test_config(&db);
        config.admin.token = SecretString::from(TOKEN);
        // No background worker: tests expand fan-outs step by step.
        config.fanout.enabled = false;
        config.incident.evaluate_interval_ms = 3_600_000;
        // These tests look at what is written to the outbox; sending it is the notification
        // tests' subject (and the seeded contacts are not deliverable).
        config.notify.dispatcher.enabled = false;
        adjust(&mut config);
        let clock = ManualClock::new(Utc::now());
        let app = App::build_with_clock(config, clock.clone().into())
            .await
            .expect("app builds");
        let addr = app.local_addr();
        let state = app.state().clone();
        let shutdown = CancellationToken::new();
        let signal = shutdown.clone();
        let task = tokio::spawn(app.run(async move { signal.cancelled().await }));
        Self {
            addr,
            state,
            clock,
            client: reqwest::Client::new(),
            backend,
            db,
            shutdown,
            task: Some(task),
        }
    }

    async fn stop(mut self) -> Arc<TestDb> {
        self.shutdown.cancel();
        if let Some(task) = self.task.take() {
            task.await.expect("app task").expect("app ran cleanly");
        }
        Arc::clone(&self.db)
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    async fn call(&self, method: Method, path: &str, body: Option<Value>) -> (StatusCode, Value) {
        let mut request = self.client.request(method, self.url(path));
        if path.starts_with("/api/v1/incidents") {
            request = request.bearer_auth(TOKEN);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.unwrap();
        let status = response.status();
        let text = response.text().await.unwrap();
        let value = serde_json::from_str(&text).unwrap_or(Value::String(text));
        (status, value)
    }

    async fn subscribe(&self, body: Value) -> (StatusCode, Value) {
        self.call(Method::POST, "/api/v1/subscriptions", Some(body))
            .await
    }

    /// Subscribe and return the id answered.
    async fn subscribed(&self, body: Value) -> Uuid {
        let (status, answer) = self.subscribe(body).await;
        assert_eq!(status, StatusCode::ACCEPTED, "{answer}");
        assert_eq!(answer["status"], "pending");
        answer["id"].as_str().unwrap().parse().unwrap()
    }

    async fn confirm(&self, body: Value) -> (StatusCode, Value) {
        self.call(Method::POST, "/api/v1/subscriptions/confirm", Some(body))
            .await
    }

    /// Subscribe and confirm with the code from the outbox.
    async fn confirmed(&self, body: Value) -> Uuid {
        let id = self.subscribed(body).await;
        let code = self.code_of(id).await;
        let (status, answer) = self.confirm(json!({"id": id, "code": code})).await;
        assert_eq!(status, StatusCode::OK, "{answer}");
        id
    }

    async fn declare(&self, provider: &str) -> Uuid {
        let (status, body) = self
            .call(
                Method::POST,
                "/api/v1/incidents",
                Some(json!({
                    "title": {"ko": "카카오 장애", "en": "Kakao outage"},
                    "provider": provider,
                    "services": ["KakaoTalk"],
                    "started_at": "2022-10-15T15:30:00+09:00",
                    "severity": "critical",
                    "message": {"ko": "장애가 발생했습니다."}
                })),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        body["id"].as_str().unwrap().parse().unwrap()
    }

    /// Post an update; the id of the update posted.
    async fn post_update(&self, incident: Uuid) -> Uuid {
        let (status, body) = self
            .call(
                Method::POST,
                &format!("/api/v1/incidents/{incident}/updates"),
                Some(json!({"status": "identified", "message": {"ko": "원인을 찾았습니다."}})),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        let updates = body["updates"].as_array().unwrap();
        updates.last().unwrap()["id"]
            .as_str()
            .unwrap()
            .parse()
            .unwrap()
    }

    async fn delivery(&self, incident: Uuid, update: Uuid) -> Value {
        let (status, body) = self
            .call(
                Method::GET,
                &format!("/api/v1/incidents/{incident}/updates/{update}/delivery"),
                None,
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        body
    }

    /// The RFC 8058 one-click `POST` a mail client sends to `path`.
    async fn one_click(&self, path: &str) -> StatusCode {
        self.client
            .post(self.url(path))
            .header("content-type", "application/x-www-form-urlencoded")
            .body("List-Unsubscribe=One-Click")
            .send()
            .await
            .unwrap()
            .status()
    }

    fn worker(&self, batch_rows: u32) -> FanoutWorker {
        let mut fanout = self.state.config.fanout.clone();
        fanout.batch_rows = batch_rows;
        FanoutWorker::new(
            self.state.store.clone(),
            self.clock.clone().into(),
            &fanout,
            &self.state.config.subscriptions,
        )
    }

    /// The code in the confirmation message of subscription `id`.
    async fn code_of(&self, id: Uuid) -> String {
        let payload = text(
            &self.db,
            &format!(
                "SELECT payload FROM outbox WHERE source_id = {}",
                uuid_sql(self.backend, id)
            ),
        )
        .await;
        let payload: Value = serde_json::from_str(&payload).unwrap();
        payload["code"].as_str().unwrap().to_owned()
    }

    async fn count(&self, sql: &str) -> i64 {
        count(&self.db, sql).await
    }
}

impl Drop for SubApp {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

// ---- direct database access ---------------------------------------------------------------------

async fn with_pool<T>(
    db: &TestDb,
    sqlite: impl AsyncFnOnce(sqlx::SqlitePool) -> T,
    postgres: impl AsyncFnOnce(sqlx::PgPool) -> T,
) -> T {
    if db.url.starts_with("sqlite") {
        let pool = sqlx::SqlitePool::connect(&db.url).await.unwrap();
        let out = sqlite(pool.clone()).await;
        pool.close().await;
        out
    } else {
        let pool = sqlx::PgPool::connect(&db.url).await.unwrap();
        let out = postgres(pool.clone()).await;
        pool.close().await;
        out
    }
}

async fn count(db: &TestDb, sql: &str) -> i64 {
    let sql = sql.to_owned();
    let sql2 = sql.clone();
    with_pool(
        db,
        async move |p| {
            sqlx::query_scalar::<_, i64>(sqlx::AssertSqlSafe(sql))
                .fetch_one(&p)
                .await
                .unwrap()
        },
        async move |p| {
            sqlx::query_scalar::<_, i64>(sqlx::AssertSqlSafe(sql2))
                .fetch_one(&p)
                .await
                .unwrap()
        },
    )
    .await
}

async fn text(db: &TestDb, sql: &str) -> String {
    texts(db, sql).await.into_iter().next().expect("one row")
}

async fn texts(db: &TestDb, sql: &str) -> Vec<String> {
    let sql = sql.to_owned();
    let sql2 = sql.clone();
    with_pool(
        db,
        async move |p| {
            sqlx::query_scalar::<_, String>(sqlx::AssertSqlSafe(sql))
                .fetch_all(&p)
                .await
                .unwrap()
        },
        async move |p| {
            sqlx::query_scalar::<_, String>(sqlx::AssertSqlSafe(sql2))
                .fetch_all(&p)
                .await
                .unwrap()
        },
    )
    .await
}

async fn execute(db: &TestDb, sql: &str) {
    let sql = sql.to_owned();
    let sql2 = sql.clone();
    with_pool(
        db,
        async move |p| {
            sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
                .execute(&p)
                .await
                .unwrap();
        },
        async move |p| {
            sqlx::raw_sql(sqlx::AssertSqlSafe(sql2))
                .execute(&p)
                .await
                .unwrap();
        },
    )
    .await;
}

fn uuid_sql(backend: Backend, id: Uuid) -> String {
    match backend {
        Backend::Sqlite => format!("X'{}'", id.simple()),
        Backend::Postgres => format!("'{id}'::uuid"),
    }
}

/// A 32-hex-digit (16-byte) value unique per `(group, i)`, as SQL over the series column `i`.
fn hex16(backend: Backend, group: u32) -> String {
    match backend {
        Backend::Sqlite => format!("printf('%08x%024x', {group}, i)"),
        Backend::Postgres => format!("(lpad(to_hex({group}), 8, '0') || lpad(to_hex(i), 24, '0'))"),
    }
}

fn series(backend: Backend, n: u32) -> String {
    match backend {
        Backend::Sqlite => format!(
            "WITH RECURSIVE series(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM series \
             WHERE i < {n}) "
        ),
        Backend::Postgres => format!("WITH series(i) AS (SELECT generate_series(1, {n})) "),
    }
}

fn bytes(backend: Backend, hex: &str) -> String {
    match backend {
        Backend::Sqlite => format!("unhex({hex})"),
        Backend::Postgres => format!("decode({hex}, 'hex')"),
    }
}

fn id_of(backend: Backend, hex: &str) -> String {
    match backend {
        Backend::Sqlite => format!("unhex({hex})"),
        Backend::Postgres => format!("({hex})::uuid"),
    }
}

/// Who a seeded subscription follows.
#[derive(Clone, Copy)]
enum SeedScope<'a> {
    Provider(&'a str),
    Incident(Uuid),
}

/// `n` subscriptions in one statement: ids from `group`, contacts from `contacts` (the same
/// `contacts` group and number make the same contact), so the database does the work.
#[allow(clippy::too_many_arguments)]
async fn seed_subscriptions(
    db: &TestDb,
    backend: Backend,
    group: u32,
    contacts: u32,
    n: u32,
    channel: &str,
    state: &str,
    scope: SeedScope<'_>,
) {
    let id = id_of(backend, &hex16(backend, group));
    let contact = hex16(backend, contacts);
    let contact_hmac = bytes(backend, &format!("{contact} || {contact}"));
    let contact_enc = bytes(backend, &contact);
    let unsubscribe = bytes(
        backend,
        &format!("'ff' || {} || 'ff'", hex16(backend, group)),
    );
    let (incident, provider) = match scope {
        SeedScope::Provider(p) => ("NULL".to_owned(), format!("'{p}'")),
        SeedScope::Incident(i) => (uuid_sql(backend, i), "NULL".to_owned()),
    };
    let sql = format!(
        "{series}INSERT INTO subscriptions (id, channel, contact_enc, contact_hmac, incident_id, \
         provider, lang, state, confirm_token_hmac, unsubscribe_token_hmac, created_at, \
         confirmed_at, confirm_attempts) \
         SELECT {id}, '{channel}', {contact_enc}, {contact_hmac}, {incident}, {provider}, 'ko', \
         '{state}', NULL, {unsubscribe}, 0, 0, 0 FROM series",
        series = series(backend, n)
    );
    execute(db, &sql).await;
}

/// `n` reports naming `incident`, with the given notice choices; phone and e-mail contacts
/// from the `contacts` group (hashes as [`seed_subscriptions`] makes them).
#[allow(clippy::too_many_arguments)]
async fn seed_reports(
    db: &TestDb,
    backend: Backend,
    group: u32,
    contacts: u32,
    n: u32,
    incident: Uuid,
    notify_sms: bool,
    notify_email: bool,
) {
    let id = id_of(backend, &hex16(backend, group));
    let contact = hex16(backend, contacts);
    let phone_hmac = bytes(backend, &format!("{contact} || {contact}"));
    let phone_enc = bytes(backend, &format!("'01' || {contact}"));
    let email_hmac = bytes(backend, &format!("'ee' || {contact} || {contact}"));
    let email_enc = bytes(backend, &format!("'02' || {contact}"));
    let receipt = hex16(backend, group);
    let incident = uuid_sql(backend, incident);
    let sql = format!(
        "{series}INSERT INTO reports (id, receipt, incident_id, channel, provider, service, \
         reporter_type, harm_type, description, reporter_name_enc, phone_enc, phone_hmac, \
         email_enc, email_hmac, notify_sms, notify_email, status, received_at, updated_at) \
         SELECT {id}, {receipt}, {incident}, 'api', 'Kakao', 'KakaoTalk', 'individual', \
         'service_unavailable', 'x', {phone_enc}, {phone_enc}, {phone_hmac}, {email_enc}, \
         {email_hmac}, {notify_sms}, {notify_email}, 'received', 0, 0 FROM series",
        series = series(backend, n),
    );
    execute(db, &sql).await;
}

async fn wait_for_done(app: &SubApp, incident: Uuid, update: Uuid) -> Value {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(180);
    loop {
        let progress = app.delivery(incident, update).await;
        if progress["fanout"] == "done" {
            return progress;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "fan-out did not finish: {progress}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

// ---- the tests ---------------------------------------------------------------------------------

on_both_backends!(
    bad_requests_are_refused_and_store_nothing,
    confirming_by_code_and_by_link,
    wrong_codes_run_out,
    repeated_requests_reveal_nothing_and_send_nothing_new,
    each_contact_gets_few_confirmations_a_day,
    one_address_is_rate_limited,
    one_click_unsubscribe_stops_later_updates,
    a_reporter_can_stop_the_notices_of_an_incident,
    unconfirmed_subscriptions_expire,
    fan_out_reaches_a_large_set_once_across_a_restart,
    delivery_progress_is_counted_once_per_lifetime,
    each_reporter_hears_in_the_language_they_reported_in,
);

async fn bad_requests_are_refused_and_store_nothing(backend: Backend) {
    let Some(app) = SubApp::spawn(backend).await else {
        return;
    };
    let cases = [
        (json!({"provider": "Kakao"}), "email"),
        (
            json!({"email": "a@b.kr", "phone": "010-1234-5678", "provider": "Kakao"}),
            "phone",
        ),
        (
            json!({"email": "not-an-address", "provider": "Kakao"}),
            "email",
        ),
        (json!({"phone": "12", "provider": "Kakao"}), "phone"),
        (
            json!({"phone": "02-123-4567", "provider": "Kakao"}),
            "phone",
        ),
        (json!({"email": "a@b.kr"}), "incident_id"),
        (
            json!({"email": "a@b.kr", "provider": "Kakao", "incident_id": Uuid::now_v7()}),
            "provider",
        ),
        (
            json!({"email": "a@b.kr", "incident_id": "17"}),
            "incident_id",
        ),
        (
            json!({"email": "a@b.kr", "incident_id": Uuid::now_v7()}),
            "incident_id",
        ),
        (
            json!({"email": "a@b.kr", "provider": "Kakao", "lang": "jp"}),
            "lang",
        ),
        (
            json!({"email": "a@b.kr", "provider": "Kakao", "extra": 1}),
            "extra",
        ),
    ];
    for (body, field) in cases {
        let (status, answer) = app.subscribe(body.clone()).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}: {answer}");
        assert_eq!(answer["error"], "validation_failed", "{answer}");
        assert!(
            answer["fields"].get(field).is_some(),
            "{body}: {field} not named in {answer}"
        );
    }
    let r = app
        .client
        .post(app.url("/api/v1/subscriptions"))
        .header("content-type", "text/plain")
        .body("email=a@b.kr")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
    let r = app
        .client
        .post(app.url("/api/v1/subscriptions"))
        .header("content-type", "application/json")
        .body("{\"email\": ")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let (status, answer) = app.confirm(json!({"id": "nope", "code": "12"})).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{answer}");
    assert!(answer["fields"].get("id").is_some() && answer["fields"].get("code").is_some());

    // A resolved incident takes no new subscribers.
    let incident = app.declare("Kakao").await;
    let (status, _) = app
        .call(
            Method::POST,
            &format!("/api/v1/incidents/{incident}/updates"),
            Some(json!({"status": "resolved", "message": {"ko": "복구되었습니다."}})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    let (status, answer) = app
        .subscribe(json!({"email": "a@b.kr", "incident_id": incident}))
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{answer}");

    assert_eq!(app.count("SELECT count(*) FROM subscriptions").await, 0);
    assert_eq!(
        app.count("SELECT count(*) FROM outbox WHERE source_kind = 'subscription'")
            .await,
        0
    );
}

async fn confirming_by_code_and_by_link(backend: Backend) {
    let Some(app) = SubApp::spawn(backend).await else {
        return;
    };
    // SMS: a code.
    let sms = app
        .subscribed(json!({"phone": "010-1234-5678", "provider": "Kakao"}))
        .await;
    let source = uuid_sql(backend, sms);
    assert_eq!(
        app.count(&format!(
            "SELECT count(*) FROM outbox WHERE source_id = {source} \
             AND template = 'subscription_confirm' AND source_kind = 'subscription' \
             AND channel = 'sms' AND state = 'pending'"
        ))
        .await,
        1
    );
    let payload: Value = serde_json::from_str(
        &text(
            &app.db,
            &format!("SELECT payload FROM outbox WHERE source_id = {source}"),
        )
        .await,
    )
    .unwrap();
    assert_eq!(payload["subscription_id"], sms.to_string());
    assert_eq!(payload["scope"], "Kakao");
    let code = payload["code"].as_str().unwrap().to_owned();
    assert_eq!(code.len(), 6);
    assert!(code.chars().all(|c| c.is_ascii_digit()));
    // The recipient is sealed, and opens to the normalised number.
    let recipient = with_pool(
        &app.db,
        async |p| {
            sqlx::query_scalar::<_, Vec<u8>>("SELECT recipient_enc FROM outbox")
                .fetch_one(&p)
                .await
                .unwrap()
        },
        async |p| {
            sqlx::query_scalar::<_, Vec<u8>>("SELECT recipient_enc FROM outbox")
                .fetch_one(&p)
                .await
                .unwrap()
        },
    )
    .await;
    assert_eq!(app.state.keys.open(&recipient).unwrap(), "+821012345678");

    let wrong = if code == "000000" { "000001" } else { "000000" };
    let (status, answer) = app.confirm(json!({"id": sms, "code": wrong})).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(answer["error"], "invalid_code");
    let (status, answer) = app.confirm(json!({"id": sms, "code": code})).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(answer["status"], "confirmed");
    // Confirming twice is harmless.
    let (status, _) = app.confirm(json!({"id": sms, "code": code})).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        app.count(&format!(
            "SELECT count(*) FROM subscriptions WHERE id = {source} AND state = 'confirmed'"
        ))
        .await,
        1
    );

    // E-mail: a link, to an open incident.
    let incident = app.declare("Kakao").await;
    let email = app
        .subscribed(json!({"email": "Hong@Example.kr", "incident_id": incident, "lang": "en"}))
        .await;
    let payload: Value = serde_json::from_str(
        &text(
            &app.db,
            &format!(
                "SELECT payload FROM outbox WHERE source_id = {}",
                uuid_sql(backend, email)
            ),
        )
        .await,
    )
    .unwrap();
    assert_eq!(payload["scope"], "Kakao outage");
    let page = app
        .client
        .get(app.url(&format!(
            "/subscriptions/confirm?id={email}&token={}",
            "0".repeat(32)
        )))
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), StatusCode::NOT_FOUND);
    let token = app.state.keys.token("confirm", email);
    let (status, answer) = app
        .confirm(json!({"id": email, "token": "0".repeat(32)}))
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{answer}");
    let page = app
        .client
        .get(app.url(&format!("/subscriptions/confirm?id={email}&token={token}")))
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), StatusCode::OK);
    assert!(page.text().await.unwrap().contains("confirmed"));
    let (status, _) = app.confirm(json!({"id": email, "token": token})).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        app.count("SELECT count(*) FROM subscriptions WHERE state = 'confirmed'")
            .await,
        2
    );
}

async fn wrong_codes_run_out(backend: Backend) {
    let Some(app) = SubApp::spawn(backend).await else {
        return;
    };
    let id = app
        .subscribed(json!({"phone": "010-2222-3333", "provider": "Kakao"}))
        .await;
    let code = app.code_of(id).await;
    let wrong = if code == "000000" { "000001" } else { "000000" };
    let attempts = app.state.config.subscriptions.confirm_code_attempts;
    for _ in 0..attempts {
        let (status, _) = app.confirm(json!({"id": id, "code": wrong})).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    }
    // The right code no longer helps; a new request does.
    let (status, answer) = app.confirm(json!({"id": id, "code": code})).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{answer}");
    assert_eq!(answer["error"], "invalid_code");
    let again = app
        .confirmed(json!({"phone": "010-2222-3333", "provider": "Kakao"}))
        .await;
    assert_ne!(again, id);
    assert_eq!(app.count("SELECT count(*) FROM subscriptions").await, 1);
}

async fn repeated_requests_reveal_nothing_and_send_nothing_new(backend: Backend) {
    let Some(app) = SubApp::spawn(backend).await else {
        return;
    };
    let body = json!({"email": "kim@example.kr", "provider": "Kakao"});
    let first = app.confirmed(body.clone()).await;
    let (status, again) = app.subscribe(body.clone()).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let (_, fresh) = app
        .subscribe(json!({"email": "lee@example.kr", "provider": "Kakao"}))
        .await;
    // Same shape as for a contact never seen, and a fresh id.
    let keys = |v: &Value| {
        let mut k: Vec<_> = v.as_object().unwrap().keys().cloned().collect();
        k.sort();
        k
    };
    assert_eq!(keys(&again), keys(&fresh));
    assert_eq!(again["status"], fresh["status"]);
    assert_ne!(again["id"], first.to_string());
    // Confirmed already: no second confirmation message, no second subscription.
    let kim = app.state.keys.hash("kim@example.kr");
    let rows = with_pool(
        &app.db,
        async |p| {
            sqlx::query_scalar::<_, i64>(
                "SELECT count(*) FROM subscriptions WHERE contact_hmac = $1",
            )
            .bind(kim.as_slice())
            .fetch_one(&p)
            .await
            .unwrap()
        },
        async |p| {
            sqlx::query_scalar::<_, i64>(
                "SELECT count(*) FROM subscriptions WHERE contact_hmac = $1",
            )
            .bind(kim.as_slice())
            .fetch_one(&p)
            .await
            .unwrap()
        },
    )
    .await;
    assert_eq!(rows, 1);
    assert_eq!(
        app.count("SELECT count(*) FROM outbox WHERE template = 'subscription_confirm'")
            .await,
        2,
        "one for kim, one for lee"
    );
}

async fn each_contact_gets_few_confirmations_a_day(backend: Backend) {
    let Some(app) = SubApp::spawn(backend).await else {
        return;
    };
    let max = app
        .state
        .config
        .subscriptions
        .max_confirmations_per_contact_per_day;
    assert_eq!(max, 3, "the documented default");
    // Different scopes and a different spelling of the number: still one contact.
    let numbers = ["010-5555-6666", "01055556666", "+82 10 5555 6666"];
    for (i, phone) in numbers.iter().enumerate() {
        let (status, answer) = app
            .subscribe(json!({"phone": phone, "provider": format!("Provider {i}")}))
            .await;
        assert_eq!(status, StatusCode::ACCEPTED, "{answer}");
        app.clock.advance(Duration::from_secs(3600));
    }
    let r = app
        .client
        .post(app.url("/api/v1/subscriptions"))
        .json(&json!({"phone": "010-5555-6666", "provider": "Kakao"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
    let wait: u64 = r.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    // The first went out three hours ago; it stops counting 21 hours from now.
    assert_eq!(wait, 21 * 3600);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"], "rate_limited");
    assert_eq!(
        app.count("SELECT count(*) FROM outbox WHERE template = 'subscription_confirm'")
            .await,
        3
    );
    assert_eq!(app.count("SELECT count(*) FROM subscriptions").await, 3);
    // Someone else is not affected.
    let (status, _) = app
        .subscribe(json!({"phone": "010-7777-8888", "provider": "Kakao"}))
        .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    // Once the first send is a day old, one more is allowed.
    app.clock.advance(Duration::from_secs(21 * 3600));
    let (status, answer) = app
        .subscribe(json!({"phone": "010-5555-6666", "provider": "Kakao"}))
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{answer}");
    let (status, _) = app
        .subscribe(json!({"phone": "010-5555-6666", "provider": "Naver"}))
        .await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
}

async fn one_address_is_rate_limited(backend: Backend) {
    let Some(db) = TestDb::new(backend).await else {
        return;
    };
    let app = SubApp::start(backend, Arc::new(db), |c| {
        c.rate_limits.normal.subscribe_ip = Limit {
            per_minute: 1.0,
            burst: 2,
        };
    })
    .await;
    for i in 0..2 {
        let (status, _) = app
            .subscribe(json!({"email": format!("p{i}@example.kr"), "provider": "Kakao"}))
            .await;
        assert_eq!(status, StatusCode::ACCEPTED);
    }
    let r = app
        .client
        .post(app.url("/api/v1/subscriptions"))
        .json(&json!({"email": "p9@example.kr", "provider": "Kakao"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
    let wait: u64 = r.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(wait >= 1);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"], "rate_limited");
    assert_eq!(app.count("SELECT count(*) FROM subscriptions").await, 2);
}

async fn one_click_unsubscribe_stops_later_updates(backend: Backend) {
    let Some(app) = SubApp::spawn(backend).await else {
        return;
    };
    let incident = app.declare("Kakao").await;
    app.worker(100).drain().await.unwrap();
    let stays = app
        .confirmed(json!({"email": "stay@example.kr", "provider": "Kakao"}))
        .await;
    let leaves = app
        .confirmed(json!({"phone": "010-3333-4444", "incident_id": incident}))
        .await;
    let token = app.state.keys.token("unsubscribe", leaves);
    let path = format!("/unsubscribe/{leaves}/{token}");

    let page = app.client.get(app.url(&path)).send().await.unwrap();
    assert_eq!(page.status(), StatusCode::OK);
    let html = page.text().await.unwrap();
    assert!(html.contains(&format!("action=\"{path}\"")), "{html}");
    // Opening the page changes nothing.
    assert_eq!(
        app.count("SELECT count(*) FROM subscriptions WHERE state = 'confirmed'")
            .await,
        2
    );
    let forged = app
        .client
        .post(app.url(&format!("/unsubscribe/{leaves}/{}", "a".repeat(32))))
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status(), StatusCode::NOT_FOUND);
    let other = app.state.keys.token("unsubscribe", stays);
    let crossed = app
        .client
        .post(app.url(&format!("/unsubscribe/{leaves}/{other}")))
        .send()
        .await
        .unwrap();
    assert_eq!(crossed.status(), StatusCode::NOT_FOUND);

    // RFC 8058: what a mail client sends.
    assert_eq!(app.one_click(&path).await, StatusCode::OK);
    assert_eq!(
        app.count(&format!(
            "SELECT count(*) FROM subscriptions WHERE id = {} AND state = 'unsubscribed'",
            uuid_sql(backend, leaves)
        ))
        .await,
        1
    );

    let update = app.post_update(incident).await;
    app.worker(100).drain().await.unwrap();
    let source = uuid_sql(backend, update);
    assert_eq!(
        app.count(&format!(
            "SELECT count(*) FROM outbox WHERE source_id = {source} \
             AND template = 'incident_update'"
        ))
        .await,
        1
    );
    let payload: Value = serde_json::from_str(
        &text(
            &app.db,
            &format!("SELECT payload FROM outbox WHERE source_id = {source}"),
        )
        .await,
    )
    .unwrap();
    assert_eq!(payload["subscription_id"], stays.to_string());
    assert_eq!(payload["update_id"], update.to_string());
    assert_eq!(payload["incident_id"], incident.to_string());
    // The message id made in SQL is a time-ordered UUIDv7 carrying the fan-out's time.
    let id = with_pool(
        &app.db,
        async |p| {
            sqlx::query_scalar::<_, Uuid>(
                "SELECT id FROM outbox WHERE template = 'incident_update'",
            )
            .fetch_one(&p)
            .await
            .unwrap()
        },
        async |p| {
            sqlx::query_scalar::<_, Uuid>(
                "SELECT id FROM outbox WHERE template = 'incident_update'",
            )
            .fetch_one(&p)
            .await
            .unwrap()
        },
    )
    .await;
    assert_eq!(id.get_version_num(), 7, "{id}");
    assert_eq!(id.get_variant(), uuid::Variant::RFC4122, "{id}");
    let (secs, nanos) = id.get_timestamp().unwrap().to_unix();
    let millis = i64::try_from(secs).unwrap() * 1000 + i64::from(nanos / 1_000_000);
    assert_eq!(millis, app.clock.now().timestamp_millis(), "{id}");
    let progress = app.delivery(incident, update).await;
    assert_eq!(progress["fanout"], "done");
    assert_eq!(progress["enqueued"], 1);
    assert_eq!(progress["queued"], 1);
}

async fn a_reporter_can_stop_the_notices_of_an_incident(backend: Backend) {
    let Some(app) = SubApp::spawn(backend).await else {
        return;
    };
    let incident = app.declare("Kakao").await;
    app.worker(100).drain().await.unwrap();
    // Three reporters asking for SMS notices; the first of them reported twice.
    seed_reports(&app.db, backend, 21, 21, 3, incident, true, false).await;
    seed_reports(&app.db, backend, 22, 21, 1, incident, true, false).await;
    let report = |group: u32, i: u32| Uuid::parse_str(&format!("{group:08x}{i:024x}")).unwrap();
    let (stops, again) = (report(21, 1), report(22, 1));
    let reached = async |update: Uuid| -> Vec<String> {
        let source = uuid_sql(backend, update);
        let sql = format!("SELECT payload FROM outbox WHERE source_id = {source}");
        let payloads = texts(&app.db, &sql).await;
        let mut reports: Vec<String> = payloads
            .iter()
            .map(|p| serde_json::from_str::<Value>(p).unwrap()["report_id"].to_string())
            .collect();
        reports.sort();
        reports
    };
    // One report per step: the contact of the first report is remembered across steps.
    let first = app.post_update(incident).await;
    app.worker(1).drain().await.unwrap();
    assert_eq!(app.count("SELECT count(*) FROM fanout_contacts").await, 0);
    let everyone: Vec<String> = [stops, report(21, 2), report(21, 3)]
        .iter()
        .map(|id| format!("\"{id}\""))
        .collect();
    assert_eq!(reached(first).await, everyone);

    let token = app.state.keys.token("stop-notices", stops);
    let path = format!("/notices/stop/{stops}/{token}");
    let page = app.client.get(app.url(&path)).send().await.unwrap();
    assert_eq!(page.status(), StatusCode::OK);
    assert!(
        page.text()
            .await
            .unwrap()
            .contains(&format!("action=\"{path}\""))
    );
    let forged = format!(
        "/notices/stop/{stops}/{}",
        app.state.keys.token("unsubscribe", stops)
    );
    for wrong in [forged, format!("/notices/stop/{again}/{token}")] {
        let r = app.client.post(app.url(&wrong)).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::NOT_FOUND, "{wrong}");
    }
    let opted_out = "SELECT count(*) FROM reports WHERE NOT incident_notices";
    assert_eq!(
        app.count(opted_out).await,
        0,
        "nothing changes before the POST"
    );
    for _ in 0..2 {
        assert_eq!(app.one_click(&path).await, StatusCode::OK);
    }
    assert_eq!(app.count(opted_out).await, 1);

    // The next update reaches the two others, and not the contact that stopped it, whose later
    // report still loses to the first.
    let second = app.post_update(incident).await;
    app.worker(100).drain().await.unwrap();
    assert_eq!(reached(second).await, everyone[1..].to_vec());
}

async fn fan_out_reaches_a_large_set_once_across_a_restart(backend: Backend) {
    let Some(app) = SubApp::spawn(backend).await else {
        return;
    };
    let incident = app.declare("Kakao").await;
    app.worker(100).drain().await.unwrap();
    let db = Arc::clone(&app.db);
    let kakao = SeedScope::Provider("Kakao");
    let this = SeedScope::Incident(incident);
    // Who gets the update:
    seed_subscriptions(&db, backend, 1, 1, 50_000, "sms", "confirmed", kakao).await;
    seed_subscriptions(&db, backend, 5, 5, 500, "email", "confirmed", this).await;
    seed_reports(&db, backend, 11, 11, 300, incident, true, false).await;
    seed_reports(&db, backend, 12, 12, 200, incident, true, true).await;
    seed_reports(&db, backend, 14, 14, 50, incident, false, true).await;
    let expected: i64 = 50_000 + 500 + 300 + 2 * 200 + 50;
    // Who does not:
    seed_subscriptions(&db, backend, 2, 2, 1_000, "sms", "pending", kakao).await;
    seed_subscriptions(&db, backend, 3, 3, 1_000, "sms", "unsubscribed", kakao).await;
    let naver = SeedScope::Provider("Naver");
    seed_subscriptions(&db, backend, 4, 4, 1_000, "sms", "confirmed", naver).await;
    seed_reports(&db, backend, 13, 13, 100, incident, false, false).await;
    // Already reached as subscribers (to the provider) or by an earlier report: once only.
    seed_subscriptions(&db, backend, 6, 1, 100, "sms", "confirmed", this).await;
    seed_reports(&db, backend, 15, 1, 20, incident, true, false).await;
    seed_reports(&db, backend, 16, 11, 30, incident, true, false).await;

    let update = app.post_update(incident).await;
    // The update was answered before any of its messages was written.
    let progress = app.delivery(incident, update).await;
    assert_eq!(progress["fanout"], "pending", "{progress}");
    assert_eq!(progress["enqueued"], 0);

    // One batch, then the process goes away mid-fan-out.
    let step = app.worker(10_000).run_once().await.unwrap();
    assert!(matches!(
        step,
        reliefline::store::FanoutStep::Expanded {
            rows: 10_000,
            finished: false,
            ..
        }
    ));
    let progress = app.delivery(incident, update).await;
    assert_eq!(progress["fanout"], "running", "{progress}");
    assert_eq!(progress["enqueued"], 10_000);
    let db = app.stop().await;

    // A new process picks the job up in the background and finishes it.
    let app = SubApp::start(backend, db, |c| {
        c.fanout.enabled = true;
        c.fanout.poll_interval_ms = 20;
    })
    .await;
    let progress = wait_for_done(&app, incident, update).await;
    assert_eq!(progress["enqueued"], expected, "{progress}");
    assert_eq!(progress["queued"], expected, "{progress}");
    assert_eq!(progress["sent"], 0);
    let source = uuid_sql(backend, update);
    assert_eq!(
        app.count(&format!(
            "SELECT count(*) FROM outbox WHERE source_id = {source} \
             AND template = 'incident_update' AND source_kind = 'incident_update' \
             AND state = 'pending'"
        ))
        .await,
        expected
    );
    // Each recipient once: every seeded contact's ciphertext is distinct.
    assert_eq!(
        app.count(&format!(
            "SELECT count(DISTINCT recipient_enc) FROM outbox WHERE source_id = {source}"
        ))
        .await,
        expected
    );
    assert_eq!(
        app.count(&format!(
            "SELECT count(DISTINCT id) FROM outbox WHERE source_id = {source}"
        ))
        .await,
        expected
    );
    assert_eq!(
        app.count(&format!(
            "SELECT count(*) FROM outbox WHERE source_id = {source} AND channel = 'email'"
        ))
        .await,
        500 + 200 + 50
    );
    assert_eq!(
        app.count(&format!(
            "SELECT count(*) FROM outbox WHERE source_id = {source} AND lang = 'ko'"
        ))
        .await,
        expected
    );
    // The worker has nothing left to do, and doing nothing writes nothing.
    assert_eq!(app.worker(10_000).drain().await.unwrap(), 0);
    assert_eq!(
        app.count(&format!(
            "SELECT count(*) FROM outbox WHERE source_id = {source}"
        ))
        .await,
        expected
    );
}

/// Staff screens polling an update's delivery progress share one count per cache lifetime: the
/// count walks every message of the update.
async fn delivery_progress_is_counted_once_per_lifetime(backend: Backend) {
    let Some(db) = TestDb::new(backend).await else {
        return;
    };
    let app = SubApp::start(backend, Arc::new(db), |c| {
        c.fanout.progress_cache_ms = 3_600_000;
    })
    .await;
    let incident = app.declare("Kakao").await;
    app.worker(100).drain().await.unwrap();
    let kakao = SeedScope::Provider("Kakao");
    seed_subscriptions(&app.db, backend, 1, 1, 300, "sms", "confirmed", kakao).await;
    let update = app.post_update(incident).await;
    let first = app.delivery(incident, update).await;
    assert_eq!(
        (&first["fanout"], &first["enqueued"]),
        (&json!("pending"), &json!(0))
    );

    app.worker(100).drain().await.unwrap();
    // The store has moved on; the screens see the count made for the first of them until the
    // entry's lifetime ends.
    let stored = app
        .state
        .store
        .fanout_progress(incident, update)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(stored.enqueued, 300);
    assert_eq!(stored.messages.pending, 300);
    // Messages in every state: the count of each is exact, the sent ones counted as the rest.
    let store = &app.state.store;
    let now = Utc::now();
    let claimed = store
        .claim_due(
            "counter",
            MessageChannel::Sms,
            now,
            now + chrono::Duration::seconds(60),
            40,
        )
        .await
        .unwrap();
    let outcome = |n: usize| match n {
        0..10 => Outcome::Sent { gateway_ref: None },
        10..15 => Outcome::Failed { error: "x".into() },
        15..18 => Outcome::Dead { error: "x".into() },
        _ => Outcome::Released,
    };
    let group: Vec<_> = claimed[..20]
        .iter()
        .enumerate()
        .map(|(n, m)| (m.id, outcome(n)))
        .collect();
    store.record_outcomes("counter", &group, now).await.unwrap();
    let counted = store
        .fanout_progress(incident, update)
        .await
        .unwrap()
        .unwrap()
        .messages;
    let expected = OutboxProgress {
        pending: 262,
        sending: 20,
        sent: 10,
        failed: 5,
        dead: 3,
    };
    assert_eq!(counted, expected);
    // The sent count moves only with messages first marked sent by their holder: an outcome
    // repeated, or reported by a dispatcher that does not hold the message, counts nothing.
    let sent = |messages: &[reliefline::store::OutboxMessage]| -> Vec<_> {
        messages
            .iter()
            .map(|m| (m.id, Outcome::Sent { gateway_ref: None }))
            .collect()
    };
    let record = |owner: &'static str, group: Vec<_>| async move {
        store.record_outcomes(owner, &group, now).await.unwrap();
    };
    record("counter", sent(&claimed[..10])).await;
    record("intruder", sent(&claimed[20..25])).await;
    let progress = || async move {
        let p = store.fanout_progress(incident, update).await.unwrap();
        p.unwrap().messages
    };
    assert_eq!(progress().await, expected);
    record("counter", sent(&claimed[20..25])).await;
    let after = OutboxProgress {
        sending: 15,
        sent: 15,
        ..expected
    };
    assert_eq!(progress().await, after);
    for _ in 0..3 {
        assert_eq!(app.delivery(incident, update).await, first);
    }
    // Another update is counted on its own.
    let next = app.post_update(incident).await;
    assert_eq!(app.delivery(incident, next).await["fanout"], "pending");
    // An unknown update is still 404.
    let (status, _) = app
        .call(
            Method::GET,
            &format!(
                "/api/v1/incidents/{incident}/updates/{}/delivery",
                Uuid::now_v7()
            ),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

async fn unconfirmed_subscriptions_expire(backend: Backend) {
    let Some(app) = SubApp::spawn(backend).await else {
        return;
    };
    let old = app
        .subscribed(json!({"phone": "010-4444-5555", "provider": "Kakao"}))
        .await;
    let code = app.code_of(old).await;
    let hours = app.state.config.subscriptions.pending_expiry_hours;
    app.clock
        .advance(Duration::from_secs(u64::from(hours) * 3600 + 1));
    let (status, answer) = app.confirm(json!({"id": old, "code": code})).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{answer}");
    let fresh = app
        .subscribed(json!({"email": "new@example.kr", "provider": "Kakao"}))
        .await;
    let pruned = app.worker(100).prune().await.unwrap();
    assert_eq!(
        pruned, 2,
        "the expired subscription and its day-old confirmation send"
    );
    assert_eq!(app.count("SELECT count(*) FROM subscriptions").await, 1);
    assert_eq!(
        app.count(&format!(
            "SELECT count(*) FROM subscriptions WHERE id = {}",
            uuid_sql(backend, fresh)
        ))
        .await,
        1
    );
    assert_eq!(
        app.count("SELECT count(*) FROM confirmation_sends").await,
        1
    );
}

/// A reporter who reads English (the page's language, or the API client's `Accept-Language`)
/// gets the receipt confirmation, status notices and incident notices in English; everyone
/// else in Korean.
async fn each_reporter_hears_in_the_language_they_reported_in(backend: Backend) {
    let Some(app) = SubApp::spawn(backend).await else {
        return;
    };
    let incident = app.declare("Kakao").await;
    app.worker(100).drain().await.unwrap();
    let mut receipts = Vec::new();
    for (n, accept) in [
        (1, Some("en-GB,en;q=0.9,ko;q=0.5")),
        (2, Some("fr-FR, ko;q=0.3")),
        (3, None),
    ] {
        let mut report = crate::helpers::sample_report();
        report["incident_id"] = json!(incident);
        report["reporter"]["phone"] = json!(format!("010-5555-000{n}"));
        let mut request = app.client.post(app.url("/api/v1/reports")).json(&report);
        if let Some(accept) = accept {
            request = request.header("accept-language", accept);
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), StatusCode::CREATED);
        let body: Value = response.json().await.unwrap();
        receipts.push(body["receipt"].as_str().unwrap().to_owned());
    }
    let langs = async |source_kind: &str| {
        // Receipt confirmations and status notices name their report as the source; incident
        // notices name it in the payload.
        let report_id_text = match backend {
            Backend::Sqlite => {
                "lower(substr(hex(r.id), 1, 8) || '-' || substr(hex(r.id), 9, 4) || '-' || \
                 substr(hex(r.id), 13, 4) || '-' || substr(hex(r.id), 17, 4) || '-' || \
                 substr(hex(r.id), 21, 12))"
            }
            Backend::Postgres => "r.id::text",
        };
        let payload_report = match backend {
            Backend::Sqlite => "json_extract(o.payload, '$.report_id')",
            Backend::Postgres => "(o.payload::json ->> 'report_id')",
        };
        let sql = format!(
            "SELECT r.receipt || ' ' || o.lang FROM outbox o JOIN reports r ON \
             r.id = o.source_id OR {report_id_text} = {payload_report} \
             WHERE o.source_kind = '{source_kind}'"
        );
        let mut rows = texts(&app.db, &sql).await;
        rows.sort();
        rows
    };
    let expected = |langs: [&str; 3]| {
        let mut rows: Vec<String> = receipts
            .iter()
            .zip(langs)
            .map(|(r, l)| format!("{r} {l}"))
            .collect();
        rows.sort();
        rows
    };
    assert_eq!(langs("report").await, expected(["en", "ko", "ko"]));

    let update = app.post_update(incident).await;
    app.worker(100).drain().await.unwrap();
    assert_eq!(
        app.count(&format!(
            "SELECT count(*) FROM outbox WHERE source_kind = 'incident_update' AND source_id = {}",
            uuid_sql(backend, update)
        ))
        .await,
        3
    );
    assert_eq!(langs("incident_update").await, expected(["en", "ko", "ko"]));

    for receipt in &receipts {
        let changed = app
            .client
            .post(app.url(&format!("/api/v1/reports/{receipt}/status")))
            .bearer_auth(TOKEN)
            .json(&json!({"status": "in_review"}))
            .send()
            .await
            .unwrap();
        assert_eq!(changed.status(), StatusCode::OK);
    }
    assert_eq!(langs("report_status").await, expected(["en", "ko", "ko"]));
}
