//! `POST /api/v1/reports` and `POST /api/v1/reports/lookup` against the running service.

use std::collections::HashSet;
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{Backend, ServiceProcess, TestApp, TestDb, sample_report};
use crate::notify::fakes::eventually;
use crate::on_both_backends;

impl TestApp {
    pub async fn submit(&self, body: &Value) -> reqwest::Response {
        self.client
            .post(self.url("/api/v1/reports"))
            .json(body)
            .send()
            .await
            .unwrap()
    }

    pub async fn submit_with_key(&self, body: &Value, key: &str) -> reqwest::Response {
        self.client
            .post(self.url("/api/v1/reports"))
            .header("idempotency-key", key)
            .json(body)
            .send()
            .await
            .unwrap()
    }

    pub async fn lookup(&self, receipt: &str, contact: &str) -> reqwest::Response {
        self.client
            .post(self.url("/api/v1/reports/lookup"))
            .json(&json!({"receipt": receipt, "contact": contact}))
            .send()
            .await
            .unwrap()
    }
}

async fn json_of(r: reqwest::Response) -> Value {
    r.json().await.unwrap()
}

async fn a_valid_report_gets_a_receipt_only_once_stored(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let r = app.submit(&sample_report()).await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let body = json_of(r).await;
    let receipt = body["receipt"].as_str().unwrap().to_owned();
    assert_eq!(body["status"], "received");
    assert!(body["incident_id"].is_null());
    assert!(body["received_at"].as_str().unwrap().ends_with('Z'));
    let shape = regex_like_receipt(&receipt);
    assert!(shape, "receipt shape: {receipt}");

    // Committed: the store has it, with both contacts' keyed hashes.
    let receipt = receipt.parse().unwrap();
    assert!(app.store.find_report(&receipt).await.unwrap().is_some());
    let hashes = app.store.contact_hashes(&receipt).await.unwrap();
    assert!(hashes.phone.is_some() && hashes.email.is_some());
    app.stop().await;
}

fn regex_like_receipt(r: &str) -> bool {
    let groups: Vec<&str> = r.split('-').collect();
    groups.len() == 5
        && groups[0] == "HR"
        && groups[1..]
            .iter()
            .all(|g| g.len() == 4 && g.chars().all(|c| c.is_ascii_alphanumeric()))
}

async fn every_accepted_phone_form_is_taken_and_found_again(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let forms = [
        "010-1234-5678",
        "01012345678",
        "010 1234 5678",
        "+82 10 1234 5678",
        "+82-10-1234-5678",
        "+821012345678",
        "０１０－１２３４－５６７８",
        "０１０１２３４５６７８",
    ];
    for form in forms {
        let mut report = sample_report();
        report["reporter"] = json!({"name": "김철수", "phone": form});
        let r = app.submit(&report).await;
        assert_eq!(r.status(), StatusCode::CREATED, "{form}");
        let receipt = json_of(r).await["receipt"].as_str().unwrap().to_owned();
        // Found again with any other form of the same number.
        for other in ["01012345678", "+82 10-1234-5678"] {
            let r = app.lookup(&receipt, other).await;
            assert_eq!(r.status(), StatusCode::OK, "{form} looked up as {other}");
        }
    }
    // A landline works for e-mail notifications but cannot receive SMS.
    let mut report = sample_report();
    report["reporter"] = json!({"name": "김철수", "phone": "02-123-4567"});
    report["notify"] = json!({"sms": false});
    assert_eq!(app.submit(&report).await.status(), StatusCode::CREATED);
    report["notify"] = json!({"sms": true});
    let r = app.submit(&report).await;
    assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert!(json_of(r).await["fields"]["notify.sms"].is_string());
    app.stop().await;
}

async fn client_mistakes_get_the_contract_codes_and_store_nothing(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let url = app.url("/api/v1/reports");

    // 400: not JSON.
    let r = app
        .client
        .post(&url)
        .header("content-type", "application/json")
        .body("{\"provider\": \"Kakao\",")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let body = json_of(r).await;
    assert_eq!(body["error"], "malformed_json");
    assert!(body["message"].as_str().unwrap().contains("JSON"));

    // 415: not declared as JSON.
    let r = app
        .client
        .post(&url)
        .header("content-type", "text/plain")
        .body(sample_report().to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
    assert_eq!(json_of(r).await["error"], "unsupported_media_type");
    let r = app
        .client
        .post(&url)
        .body(sample_report().to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);

    // 413: over 64 KiB, declared or streamed.
    let mut big = sample_report();
    big["description"] = json!("가".repeat(30_000));
    let r = app.submit(&big).await;
    assert_eq!(r.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(json_of(r).await["error"], "payload_too_large");
    // Streamed without a length: refused once 64 KiB have arrived. The client sends a little
    // more than the limit, then waits for the answer before finishing the body.
    let answer = {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        let mut stream = tokio::net::TcpStream::connect(app.addr).await.unwrap();
        stream
            .write_all(
                b"POST /api/v1/reports HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
                  Transfer-Encoding: chunked\r\n\r\n",
            )
            .await
            .unwrap();
        for _ in 0..65 {
            stream.write_all(b"400\r\n").await.unwrap();
            stream.write_all(&[b' '; 1024]).await.unwrap();
            stream.write_all(b"\r\n").await.unwrap();
        }
        let mut buf = vec![0u8; 4096];
        let n = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut buf))
            .await
            .expect("an answer")
            .unwrap();
        String::from_utf8_lossy(&buf[..n]).into_owned()
    };
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    // The rest of that body is never read, so the answer ends the connection and says so.
    assert!(
        answer.to_ascii_lowercase().contains("connection: close"),
        "{answer}"
    );

    // 422: each bad field named by its JSON path.
    let r = app
        .submit(&json!({
            "provider": "",
            "service": 7,
            "reporter_type": "alien",
            "harm_type": "service_unavailable",
            "occurred_at": "2999-01-01T00:00:00+09:00",
            "amount_krw": -5,
            "description": "x",
            "reporter": {"name": "홍길동", "phone": "12345", "email": "not-an-address", "age": 3},
            "notify": {"sms": "yes"},
            "consent": {"personal_info": false},
            "colour": "blue"
        }))
        .await;
    assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let body = json_of(r).await;
    assert_eq!(body["error"], "validation_failed");
    let fields = body["fields"].as_object().unwrap();
    for path in [
        "provider",
        "service",
        "reporter_type",
        "occurred_at",
        "amount_krw",
        "reporter.phone",
        "reporter.email",
        "reporter.age",
        "notify.sms",
        "consent.personal_info",
        "colour",
    ] {
        assert!(fields.contains_key(path), "missing {path} in {body}");
    }
    assert!(!fields.contains_key("harm_type"), "{body}");

    // No contact at all, no consent object, description too long, amount too big.
    let mut report = sample_report();
    report["reporter"] = json!({"name": "홍길동"});
    report.as_object_mut().unwrap().remove("consent");
    report["description"] = json!("a".repeat(5001));
    report["amount_krw"] = json!(1_000_000_000_001_i64);
    let r = app.submit(&report).await;
    let body = json_of(r).await;
    for path in ["reporter.phone", "consent", "description", "amount_krw"] {
        assert!(
            body["fields"].get(path).is_some(),
            "missing {path} in {body}"
        );
    }

    // A JSON value that is not an object.
    let r = app.submit(&json!([1, 2])).await;
    assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);

    // An unknown incident.
    let mut report = sample_report();
    report["incident_id"] = json!(uuid::Uuid::now_v7());
    let r = app.submit(&report).await;
    assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert!(json_of(r).await["fields"]["incident_id"].is_string());

    // A bad Idempotency-Key.
    let r = app
        .submit_with_key(&sample_report(), "has spaces in it")
        .await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert_eq!(json_of(r).await["error"], "invalid_idempotency_key");

    // Nothing of the above reached the store.
    let metrics = app.metrics_text().await;
    assert!(
        metrics.contains("reliefline_reports_rejected_total"),
        "{metrics}"
    );
    assert_eq!(count_reports(&app).await, 0);
    app.stop().await;
}

/// One HTTP/1.1 answer read from `stream`: its status and body (bodies here are sized by
/// `content-length`).
async fn read_answer(stream: &mut tokio::net::TcpStream) -> (u16, String) {
    use tokio::io::AsyncReadExt as _;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let text = String::from_utf8_lossy(&buf).into_owned();
        if let Some(end) = text.find("\r\n\r\n") {
            let length: usize = text[..end]
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length:")
                        .map(|v| v.trim().parse().unwrap())
                })
                .unwrap_or(0);
            if buf.len() >= end + 4 + length {
                let status = text[9..12].parse().unwrap();
                return (status, text[end + 4..].to_owned());
            }
        }
        let n = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut chunk))
            .await
            .expect("an answer in time")
            .unwrap();
        assert!(n > 0, "the connection closed after {text:?}");
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// An answer given before the body was read (a wrong content type, a missing token) still
/// leaves the connection open for the client's next request, even when the body was still
/// arriving when the head was judged.
async fn a_refused_request_leaves_its_connection_usable(backend: Backend) {
    use tokio::io::AsyncWriteExt as _;
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let mut stream = tokio::net::TcpStream::connect(app.addr).await.unwrap();
    let body = format!("{{\"text\": \"{}\"}}", "a".repeat(60_000));
    for (path, content_type, refused) in [
        ("/api/v1/reports", "text/plain", 415),
        ("/api/v1/incidents", "application/json", 401),
    ] {
        let head = format!(
            "POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: {content_type}\r\n\
             Content-Length: {}\r\n\r\n",
            body.len()
        );
        stream.write_all(head.as_bytes()).await.unwrap();
        stream.write_all(&body.as_bytes()[..20_000]).await.unwrap();
        // The rest follows a little later, as over a slow network.
        tokio::time::sleep(Duration::from_millis(200)).await;
        stream.write_all(&body.as_bytes()[20_000..]).await.unwrap();
        let (status, answer) = read_answer(&mut stream).await;
        assert_eq!(status, refused, "{path}: {answer}");
    }

    let report = sample_report().to_string();
    let next = format!(
        "POST /api/v1/reports HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\n\r\n{report}",
        report.len()
    );
    stream.write_all(next.as_bytes()).await.unwrap();
    let (status, answer) = read_answer(&mut stream).await;
    assert_eq!(status, 201, "{answer}");
    app.stop().await;
}

pub(crate) async fn count_reports(app: &TestApp) -> i64 {
    match app.store.backend() {
        "sqlite" => {
            let pool = sqlx::SqlitePool::connect(&app.db.url).await.unwrap();
            sqlx::query_scalar("SELECT count(*) FROM reports")
                .fetch_one(&pool)
                .await
                .unwrap()
        }
        _ => {
            let pool = sqlx::PgPool::connect(&app.db.url).await.unwrap();
            sqlx::query_scalar("SELECT count(*) FROM reports")
                .fetch_one(&pool)
                .await
                .unwrap()
        }
    }
}

async fn idempotent_replays_survive_a_restart(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let report = sample_report();
    let first = json_of(app.submit_with_key(&report, "retry-me-1").await).await;
    let again = app.submit_with_key(&report, "retry-me-1").await;
    assert_eq!(again.status(), StatusCode::CREATED);
    assert_eq!(json_of(again).await, first);

    // Same key, different body.
    let mut other = report.clone();
    other["amount_krw"] = json!(1);
    let r = app.submit_with_key(&other, "retry-me-1").await;
    assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(json_of(r).await["error"], "idempotency_mismatch");

    // After a restart the memory is gone; the store still knows.
    let db = app.stop().await;
    let app = TestApp::spawn_with(db, |_| {}).await;
    // Key order and whitespace do not make a different request.
    let reordered = report
        .as_object()
        .unwrap()
        .iter()
        .rev()
        .map(|(k, v)| format!("\n  \"{k}\" : {v}"))
        .collect::<Vec<_>>()
        .join(",");
    let r = app
        .client
        .post(app.url("/api/v1/reports"))
        .header("content-type", "application/json; charset=utf-8")
        .header("idempotency-key", "retry-me-1")
        .body(format!("{{{reordered}\n}}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    assert_eq!(json_of(r).await, first);
    let r = app.submit_with_key(&other, "retry-me-1").await;
    assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(count_reports(&app).await, 1);
    app.stop().await;
}

async fn concurrent_retries_with_one_key_store_one_report(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let report = sample_report();
    let answers =
        futures::future::join_all((0..16).map(|_| app.submit_with_key(&report, "double-click")))
            .await;
    let mut receipts = HashSet::new();
    for r in answers {
        assert_eq!(r.status(), StatusCode::CREATED);
        receipts.insert(json_of(r).await["receipt"].as_str().unwrap().to_owned());
    }
    assert_eq!(receipts.len(), 1);
    assert_eq!(count_reports(&app).await, 1);
    app.stop().await;
}

async fn lookup_shows_status_and_cannot_tell_unknown_from_wrong(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let body = json_of(app.submit(&sample_report()).await).await;
    let receipt = body["receipt"].as_str().unwrap().to_owned();

    for contact in ["010-1234-5678", "HONG@example.kr", " hong@EXAMPLE.KR "] {
        let r = app.lookup(&receipt, contact).await;
        assert_eq!(r.status(), StatusCode::OK, "{contact}");
        assert_eq!(r.headers()["cache-control"], "no-store");
        let found = json_of(r).await;
        assert_eq!(found["receipt"], receipt.as_str());
        assert_eq!(found["status"], "received");
        assert_eq!(found["history"][0]["status"], "received");
        assert!(found["result"].is_null());
        assert!(
            found.get("reporter").is_none(),
            "no personal data back: {found}"
        );
    }
    // Lower case and no dashes: still the receipt.
    let typed = receipt.to_lowercase().replace('-', "");
    assert_eq!(
        app.lookup(&typed, "01012345678").await.status(),
        StatusCode::OK
    );

    let wrong_contact = app.lookup(&receipt, "010-9999-0000").await;
    let unknown_receipt = app.lookup("HR-0000-0000-0000-0000", "010-1234-5678").await;
    assert_eq!(wrong_contact.status(), StatusCode::NOT_FOUND);
    assert_eq!(unknown_receipt.status(), StatusCode::NOT_FOUND);
    let a = wrong_contact.text().await.unwrap();
    let b = unknown_receipt.text().await.unwrap();
    assert_eq!(a, b, "identical bodies");
    assert_eq!(
        serde_json::from_str::<Value>(&a).unwrap()["error"],
        "not_found"
    );

    // Malformed input is a 422 naming the field, not a 404.
    let r = app.lookup("not a receipt", "010-1234-5678").await;
    assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert!(json_of(r).await["fields"]["receipt"].is_string());
    let r = app.lookup(&receipt, "nobody").await;
    assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert!(json_of(r).await["fields"]["contact"].is_string());
    app.stop().await;
}

async fn a_full_queue_answers_503_at_once_and_loses_nothing(backend: Backend) {
    let Some(db) = TestDb::new(backend).await else {
        return;
    };
    let app = TestApp::spawn_with(db.into(), |c| {
        c.intake.queue_capacity = 2;
        c.intake.batch_max = 1;
        c.intake.batch_wait_ms = 0;
        c.intake.postgres_writers = 1;
        c.database.busy_timeout_ms = 60_000;
        // Nothing else may wait for the write lock on SQLite's one writer connection: a
        // dispatcher claim stuck there would keep the batcher from its first batch and change
        // how many requests are held.
        c.notify.dispatcher.enabled = false;
        c.fanout.enabled = false;
    })
    .await;
    // Hold the write lock from outside so the writer is stuck on its first batch.
    let lock = WriteLock::take(&app).await;
    let submit = || {
        let client = app.client.clone();
        let url = app.url("/api/v1/reports");
        tokio::spawn(async move {
            client
                .post(url)
                .json(&sample_report())
                .send()
                .await
                .unwrap()
        })
    };
    // Two reports leave the queue: one is being committed, the next waits for the writer.
    let mut submits = vec![submit(), submit()];
    let batcher = app.state.intake.batcher();
    eventually("the batcher to hold both", || {
        batcher.in_flight() == 2 && batcher.depth() == 0
    })
    .await;
    assert_eq!((batcher.in_flight(), batcher.depth()), (2, 0));
    // Six more: two fit into the queue, the excess is refused at once.
    submits.extend((0..6).map(|_| submit()));
    eventually("four answers", || {
        submits.iter().filter(|t| t.is_finished()).count() >= 4
    })
    .await;
    let (done, pending): (Vec<_>, Vec<_>) = submits.into_iter().partition(|t| t.is_finished());
    let mut refused = Vec::new();
    for task in done {
        refused.push(task.await.unwrap());
    }
    // Held: one committing, one batch formed and waiting for the writer, two queued; the
    // other four were refused without waiting.
    assert_eq!(pending.len(), 4, "held: {}", pending.len());
    assert_eq!((batcher.in_flight(), batcher.depth()), (4, 2));
    for r in refused {
        assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert!(r.headers().contains_key("retry-after"));
        assert_eq!(json_of(r).await["error"], "overloaded");
    }
    let ready = app.client.get(app.url("/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(ready.text().await.unwrap().contains("intake_saturated"));

    lock.release().await;
    for task in pending {
        assert_eq!(task.await.unwrap().status(), StatusCode::CREATED);
    }
    assert_eq!(count_reports(&app).await, 4);
    app.stop().await;
}

/// An outside transaction that blocks report inserts until released.
pub(crate) enum WriteLock {
    Sqlite(sqlx::SqliteConnection),
    Postgres(sqlx::PgConnection),
}

impl WriteLock {
    pub(crate) async fn take(app: &TestApp) -> Self {
        use sqlx::Connection as _;
        match app.store.backend() {
            "sqlite" => {
                let mut conn = sqlx::SqliteConnection::connect(&app.db.url).await.unwrap();
                sqlx::raw_sql("BEGIN IMMEDIATE")
                    .execute(&mut conn)
                    .await
                    .unwrap();
                Self::Sqlite(conn)
            }
            _ => {
                let mut conn = sqlx::PgConnection::connect(&app.db.url).await.unwrap();
                sqlx::raw_sql("BEGIN; LOCK TABLE reports IN EXCLUSIVE MODE")
                    .execute(&mut conn)
                    .await
                    .unwrap();
                Self::Postgres(conn)
            }
        }
    }

    pub(crate) async fn release(self) {
        match self {
            Self::Sqlite(mut c) => {
                sqlx::raw_sql("ROLLBACK").execute(&mut c).await.unwrap();
            }
            Self::Postgres(mut c) => {
                sqlx::raw_sql("ROLLBACK").execute(&mut c).await.unwrap();
            }
        }
    }
}

async fn a_killed_process_keeps_every_acknowledged_report(backend: Backend) {
    let Some(db) = TestDb::new(backend).await else {
        return;
    };
    let service = ServiceProcess::start(&db, &[]);
    let client = reqwest::Client::new();
    let url = service.url("/api/v1/reports");
    let stop = tokio_util::sync::CancellationToken::new();
    // 16 clients submit as fast as they can; each keeps the receipts it was given.
    let clients: Vec<_> = (0..16)
        .map(|_| {
            let (client, url, stop) = (client.clone(), url.clone(), stop.clone());
            tokio::spawn(async move {
                let mut receipts = Vec::new();
                while !stop.is_cancelled() {
                    let Ok(r) = client.post(&url).json(&sample_report()).send().await else {
                        break;
                    };
                    if r.status() != StatusCode::CREATED {
                        continue;
                    }
                    let Ok(body) = r.json::<Value>().await else {
                        break;
                    };
                    receipts.push(body["receipt"].as_str().unwrap().to_owned());
                }
                receipts
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    service.kill();
    stop.cancel();
    let mut acknowledged = Vec::new();
    for c in clients {
        acknowledged.extend(c.await.unwrap());
    }
    assert!(
        acknowledged.len() > 10,
        "the load ran: {}",
        acknowledged.len()
    );

    let app = TestApp::spawn_with(db.into(), |_| {}).await;
    for receipt in &acknowledged {
        let found = app
            .store
            .find_report(&receipt.parse().unwrap())
            .await
            .unwrap();
        assert!(found.is_some(), "an acknowledged report was lost");
    }
    app.stop().await;
}

async fn sigterm_answers_requests_in_flight(backend: Backend) {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let Some(db) = TestDb::new(backend).await else {
        return;
    };
    let service = ServiceProcess::start(&db, &[]);
    let body = sample_report().to_string();
    let (head, tail) = body.as_bytes().split_at(body.len() / 2);
    // A request whose head and half its body are sent: it is in flight when SIGTERM arrives.
    let mut stream = tokio::net::TcpStream::connect(service.addr).await.unwrap();
    let request = format!(
        "POST /api/v1/reports HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\n\r\n",
        body.len()
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    stream.write_all(head).await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;

    let terminated = std::thread::spawn(move || service.terminate());
    tokio::time::sleep(Duration::from_millis(300)).await;
    stream.write_all(tail).await.unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(20), stream.read_to_end(&mut answer))
        .await
        .expect("answered before the grace period")
        .unwrap();
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 201"), "{answer}");
    let (status, output) = terminated.join().unwrap();
    assert!(status.success(), "clean exit: {status:?}\n{output}");
    assert!(output.contains("drained"), "{output}");

    let receipt: Value =
        serde_json::from_str(answer.split("\r\n\r\n").nth(1).unwrap_or("{}")).unwrap_or_default();
    let app = TestApp::spawn_with(db.into(), |_| {}).await;
    let receipt = receipt["receipt"].as_str().expect("receipt in the answer");
    assert!(
        app.store
            .find_report(&receipt.parse().unwrap())
            .await
            .unwrap()
            .is_some()
    );
    app.stop().await;
}

async fn intake_reports_its_catalogue_metrics(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let report = sample_report();
    futures::future::join_all((0..20).map(|_| app.submit(&report))).await;
    app.submit_with_key(&sample_report(), "metrics-key").await;
    app.submit_with_key(&sample_report(), "metrics-key").await;
    let text = app.metrics_text().await;
    for series in [
        r#"reliefline_reports_accepted_total{channel="api"}"#,
        "reliefline_intake_queue_depth",
        "reliefline_intake_batch_size_bucket",
        "reliefline_intake_commit_duration_seconds_bucket",
        r#"reliefline_cache_requests_total{cache="idempotency",result="hit"}"#,
        r#"reliefline_cache_requests_total{cache="idempotency",result="miss"}"#,
        r#"reliefline_http_requests_total{route="/api/v1/reports",method="POST",status="201"}"#,
    ] {
        assert!(text.contains(series), "{series} missing:\n{text}");
    }
    assert!(!text.contains("HR-"), "receipts never appear in metrics");
    app.stop().await;
}

async fn the_openapi_document_describes_the_routes(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let doc = app.openapi().await;
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    for path in [
        "/api/v1/reports",
        "/api/v1/reports/lookup",
        "/healthz",
        "/readyz",
        "/api/v1/status",
        "/api/v1/incidents",
        "/api/v1/incidents/{id}",
        "/api/v1/incidents/{id}/updates",
        "/api/v1/incidents/{id}/confirm",
        "/api/v1/incidents/{id}/dismiss",
        "/api/v1/incidents/{id}/updates/{update_id}/delivery",
        "/api/v1/mode",
        "/api/v1/subscriptions",
        "/api/v1/subscriptions/confirm",
        "/api/v1/outbox/dead",
        "/api/v1/notifications/sms/delivery",
    ] {
        assert!(doc["paths"].get(path).is_some(), "{path} documented");
    }
    // Every JSON route the router serves is in the document, with its methods.
    for (path, method) in [
        ("/api/v1/incidents", "get"),
        ("/api/v1/incidents", "post"),
        ("/api/v1/mode", "put"),
        ("/api/v1/subscriptions", "post"),
    ] {
        assert!(
            doc["paths"][path].get(method).is_some(),
            "{method} {path} documented"
        );
    }
    let subscribe = &doc["paths"]["/api/v1/subscriptions"]["post"]["responses"];
    for status in ["202", "422", "429"] {
        assert!(subscribe.get(status).is_some(), "{status} documented");
    }
    let submit = &doc["paths"]["/api/v1/reports"]["post"]["responses"];
    for status in ["201", "400", "413", "415", "422", "429", "503"] {
        assert!(submit.get(status).is_some(), "{status} documented");
    }
    let lookup = &doc["paths"]["/api/v1/reports/lookup"]["post"]["responses"];
    for status in ["200", "400", "404", "413", "415", "422", "429"] {
        assert!(lookup.get(status).is_some(), "lookup {status} documented");
    }
    app.stop().await;
}

async fn a_report_can_belong_to_a_declared_incident(backend: Backend) {
    let Some(db) = TestDb::new(backend).await else {
        return;
    };
    let token = "commander-token-0123456789";
    let app = TestApp::spawn_with(db.into(), |c| {
        c.admin.token = secrecy::SecretString::from(token);
    })
    .await;
    let declared = app
        .client
        .post(app.url("/api/v1/incidents"))
        .bearer_auth(token)
        .json(&json!({
            "title": {"ko": "카카오 서비스 장애"},
            "provider": "Kakao",
            "services": ["KakaoTalk"],
            "started_at": "2022-10-15T15:19:00+09:00",
            "severity": "critical",
            "message": {"ko": "데이터센터 화재로 서비스가 중단되었습니다."}
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(declared.status(), StatusCode::CREATED);
    let incident_id = json_of(declared).await["id"].as_str().unwrap().to_owned();

    let mut report = sample_report();
    report["incident_id"] = json!(incident_id);
    let r = app.submit(&report).await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let accepted = json_of(r).await;
    assert_eq!(accepted["incident_id"], incident_id.as_str());

    let found = json_of(
        app.lookup(accepted["receipt"].as_str().unwrap(), "010-1234-5678")
            .await,
    )
    .await;
    assert_eq!(found["incident"]["id"], incident_id.as_str());
    assert_eq!(found["incident"]["title"]["ko"], "카카오 서비스 장애");

    let detail = json_of(
        app.client
            .get(app.url(&format!("/api/v1/incidents/{incident_id}")))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(detail["reports_linked"], 1);
    // Committed reports feed surge detection.
    assert!(app.state.surge.rate_per_minute(chrono::Utc::now()) > 0.0);
    app.stop().await;
}

on_both_backends!(
    a_report_can_belong_to_a_declared_incident,
    intake_reports_its_catalogue_metrics,
    the_openapi_document_describes_the_routes,
    a_valid_report_gets_a_receipt_only_once_stored,
    every_accepted_phone_form_is_taken_and_found_again,
    client_mistakes_get_the_contract_codes_and_store_nothing,
    a_refused_request_leaves_its_connection_usable,
    idempotent_replays_survive_a_restart,
    concurrent_retries_with_one_key_store_one_report,
    lookup_shows_status_and_cannot_tell_unknown_from_wrong,
    a_full_queue_answers_503_at_once_and_loses_nothing,
    a_killed_process_keeps_every_acknowledged_report,
    sigterm_answers_requests_in_flight,
);
