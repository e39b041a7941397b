//! Generated client input against the running service: whatever bytes, headers and JSON a
//! client sends to intake, the answer is one of the contract's client codes with an error body
//! that says what is wrong, never a 5xx; what was refused left nothing behind, and every report
//! acknowledged with `201` is stored and found again with its contact. The same for the report
//! and lookup forms of the pages: a page in every case, a receipt only for what was stored.
//!
//! Each run draws a fresh seed (printed with any failure); `RELIEFLINE_FUZZ_SEED` replays one.

use std::collections::{HashMap, HashSet};

use rand::rngs::StdRng;
use rand::{RngExt as _, SeedableRng as _};
use reliefline::intake::request::field_paths;
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{Backend, TestApp, sample_report};
use crate::intake::count_reports;
use crate::on_both_backends;
use crate::web;

const REQUESTS: usize = 1_000;
const FORMS: usize = 400;
const LIMIT: usize = 64 * 1024;

/// Bytes that change what a JSON parser sees: structure, escapes, broken UTF-8, digits.
const INTERESTING: &[&[u8]] = &[
    b"\"",
    b"{",
    b"}",
    b"[",
    b"]",
    b",",
    b":",
    b"\\",
    b"\\u0000",
    b"\\ud800",
    b"null",
    b"-",
    b"1e999",
    b"0.5",
    b"\xff",
    b"\xc3",
    b"\xed\xa0\x80",
    b" ",
    b"\x00",
    "가".as_bytes(),
];

/// Values to put in place of a field.
fn odd_value(rng: &mut StdRng) -> Value {
    match rng.random_range(0..14) {
        0 => Value::Null,
        1 => json!(-1),
        2 => json!(1.5),
        3 => json!(u64::MAX),
        4 => json!(""),
        5 => json!("가".repeat(rng.random_range(4990..5010))),
        6 => json!([]),
        7 => json!({}),
        8 => json!(true),
        9 => json!("\u{0}\u{7}"),
        10 => json!("+82 10 1234 5678"),
        11 => json!("hong@예시.한국"),
        12 => json!({"name": "홍길동", "nested": {"deeper": [1, 2, 3]}}),
        _ => json!("2999-12-31T23:59:59Z"),
    }
}

fn mutate_bytes(rng: &mut StdRng, mut bytes: Vec<u8>) -> Vec<u8> {
    for _ in 0..rng.random_range(1..4) {
        let at = rng.random_range(0..=bytes.len());
        match rng.random_range(0..5) {
            0 if at < bytes.len() => bytes[at] = rng.random(),
            1 => {
                let piece = INTERESTING[rng.random_range(0..INTERESTING.len())];
                bytes.splice(at..at, piece.iter().copied());
            }
            2 => {
                let end = (at + rng.random_range(1..16)).min(bytes.len());
                bytes.drain(at..end);
            }
            3 => bytes.truncate(at),
            _ => {
                let end = (at + rng.random_range(1..64)).min(bytes.len());
                let piece = bytes[at..end].to_vec();
                bytes.splice(at..at, piece);
            }
        }
    }
    bytes
}

fn mutate_fields(rng: &mut StdRng, mut report: Value) -> Value {
    let paths: Vec<String> = field_paths()
        .chain(["colour", "reporter.age"].map(String::from))
        .collect();
    for _ in 0..rng.random_range(1..3) {
        let path = paths[rng.random_range(0..paths.len())].as_str();
        let value = odd_value(rng);
        let (parent, key) = match path.split_once('.') {
            Some((parent, key)) => (&mut report[parent], key),
            None => (&mut report, path),
        };
        if let Some(obj) = parent.as_object_mut() {
            if rng.random_bool(0.2) {
                obj.remove(key);
            } else {
                obj.insert(key.to_owned(), value);
            }
        }
    }
    report
}

/// A report body that differs from its neighbours (so idempotent replays are deliberate).
fn fresh_report(rng: &mut StdRng) -> Value {
    let mut report = sample_report();
    report["description"] = json!(format!("주문 알림 중단 {}", rng.random::<u32>()));
    if rng.random_bool(0.3) {
        report["reporter"] = json!({"name": "김민지", "email": "minji@example.kr"});
        report["notify"] = json!({"email": true});
    }
    report
}

/// One generated request: its path, content type, idempotency key and body.
#[derive(Clone)]
struct Request {
    path: &'static str,
    content_type: Option<Vec<u8>>,
    key: Option<Vec<u8>>,
    body: Vec<u8>,
}

fn generate(rng: &mut StdRng, receipts: &[(String, String)]) -> Request {
    let lookup = rng.random_bool(0.2);
    let body = if lookup {
        let (receipt, contact) = match receipts.get(rng.random_range(0..receipts.len().max(1))) {
            Some((r, c)) if rng.random_bool(0.7) => (r.clone(), c.clone()),
            _ => (
                "HR-0000-0000-0000-0000".to_owned(),
                "010-1234-5678".to_owned(),
            ),
        };
        let body = json!({"receipt": receipt, "contact": contact});
        match rng.random_range(0..3) {
            0 => body.to_string().into_bytes(),
            1 => mutate_fields(rng, body).to_string().into_bytes(),
            _ => mutate_bytes(rng, body.to_string().into_bytes()),
        }
    } else {
        match rng.random_range(0..10) {
            0..=2 => fresh_report(rng).to_string().into_bytes(),
            3..=5 => {
                let report = fresh_report(rng);
                mutate_fields(rng, report).to_string().into_bytes()
            }
            6..=7 => {
                let bytes = fresh_report(rng).to_string().into_bytes();
                mutate_bytes(rng, bytes)
            }
            8 => {
                // Nesting far beyond any parser's recursion limit.
                let depth = rng.random_range(100..50_000);
                let mut b = vec![b'['; depth];
                b.extend(std::iter::repeat_n(b']', depth));
                b
            }
            _ => {
                // A body of about the size limit: one side of it or the other.
                let mut report = fresh_report(rng);
                let base = report.to_string().len();
                let target = LIMIT - 64 + rng.random_range(0..128);
                report["title"] = json!("a".repeat(target.saturating_sub(base)));
                report.to_string().into_bytes()
            }
        }
    };
    let content_type = match rng.random_range(0..20) {
        0 => None,
        1 => Some(b"text/plain".to_vec()),
        2 => Some(b"APPLICATION/JSON; charset=utf-8".to_vec()),
        3 => Some(b"application/json\xff".to_vec()),
        4 => Some(b"application/jsonx".to_vec()),
        _ => Some(b"application/json".to_vec()),
    };
    let key = match rng.random_range(0..10) {
        0 => Some(format!("key-{}", rng.random_range(0..3)).into_bytes()),
        1 => Some(match rng.random_range(0..4) {
            0 => b"has spaces".to_vec(),
            1 => vec![b'k'; 256],
            2 => b"\xc3\xa9t\xc3\xa9".to_vec(),
            _ => Vec::new(),
        }),
        _ => None,
    };
    Request {
        path: if lookup {
            "/api/v1/reports/lookup"
        } else {
            "/api/v1/reports"
        },
        content_type,
        key,
        body,
    }
}

/// This run's seed (`RELIEFLINE_FUZZ_SEED`, or a fresh one) and its generator.
fn seeded() -> (u64, StdRng) {
    let seed = std::env::var("RELIEFLINE_FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random::<u64>);
    (seed, StdRng::seed_from_u64(seed))
}

/// The contact a report body names, as a lookup would give it.
fn contact_of(body: &[u8]) -> Option<String> {
    let report: Value = serde_json::from_slice(body).ok()?;
    let reporter = &report["reporter"];
    // A blank contact counts as not given.
    let given = |name: &str| reporter[name].as_str().filter(|c| !c.trim().is_empty());
    given("phone").or_else(|| given("email")).map(str::to_owned)
}

async fn generated_requests_get_client_answers_and_store_only_what_was_accepted(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let (seed, mut rng) = seeded();
    let mut receipts: Vec<(String, String)> = Vec::new();
    // Per idempotency key: the body (as JSON) first accepted with it, and its receipt.
    let mut first_by_key: HashMap<Vec<u8>, (Value, String)> = HashMap::new();
    let mut statuses: HashMap<(&str, u16), usize> = HashMap::new();
    let mut last: Option<Request> = None;

    for n in 0..REQUESTS {
        // Now and then the same request again, as a client retrying after a lost answer.
        let request = match last.take() {
            Some(previous) if rng.random_bool(0.1) => previous,
            _ => generate(&mut rng, &receipts),
        };
        last = Some(request.clone());
        let sent: Option<Value> = serde_json::from_slice(&request.body).ok();
        let mut builder = app.client.post(app.url(request.path));
        if let Some(ct) = &request.content_type {
            builder = builder.header("content-type", ct.as_slice());
        }
        if let Some(key) = &request.key {
            builder = builder.header("idempotency-key", key.as_slice());
        }
        let response = builder.body(request.body.clone()).send().await;
        let context = || {
            format!(
                "seed {seed}, request {n}: {} {:?} key {:?} body {:?}",
                request.path,
                request.content_type.as_deref().map(String::from_utf8_lossy),
                request.key.as_deref().map(String::from_utf8_lossy),
                String::from_utf8_lossy(&request.body[..request.body.len().min(300)]),
            )
        };
        let response = response.unwrap_or_else(|e| panic!("transport error {e:?}; {}", context()));
        let status = response.status();
        let text = response.text().await.unwrap();
        *statuses.entry((request.path, status.as_u16())).or_default() += 1;
        let allowed: &[StatusCode] = if request.path.ends_with("lookup") {
            &[
                StatusCode::OK,
                StatusCode::BAD_REQUEST,
                StatusCode::NOT_FOUND,
                StatusCode::PAYLOAD_TOO_LARGE,
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                StatusCode::UNPROCESSABLE_ENTITY,
            ]
        } else {
            &[
                StatusCode::CREATED,
                StatusCode::BAD_REQUEST,
                StatusCode::PAYLOAD_TOO_LARGE,
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                StatusCode::UNPROCESSABLE_ENTITY,
            ]
        };
        assert!(allowed.contains(&status), "{status} {text}; {}", context());
        let body: Value = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("{status} body is not JSON ({e}): {text}; {}", context()));
        if status.is_success() {
            if status == StatusCode::CREATED {
                let receipt = body["receipt"].as_str().unwrap().to_owned();
                if let Some(key) = &request.key {
                    let sent = sent.clone().expect("an accepted body is JSON");
                    let first = first_by_key
                        .entry(key.clone())
                        .or_insert_with(|| (sent.clone(), receipt.clone()));
                    assert_eq!(
                        first.0,
                        sent,
                        "a key replayed with another body; {}",
                        context()
                    );
                    assert_eq!(
                        first.1,
                        receipt,
                        "a replay got another receipt; {}",
                        context()
                    );
                }
                let contact = contact_of(&request.body).expect("an accepted report has a contact");
                receipts.push((receipt, contact));
            }
            continue;
        }
        let code = body["error"].as_str().unwrap_or_default();
        assert!(!code.is_empty(), "no error code: {text}; {}", context());
        if status == StatusCode::UNPROCESSABLE_ENTITY && code != "idempotency_mismatch" {
            let fields = body["fields"].as_object();
            assert!(
                fields.is_some_and(|f| !f.is_empty()),
                "no fields named: {text}; {}",
                context()
            );
        }
        if code == "idempotency_mismatch" {
            let first = request.key.as_ref().and_then(|key| first_by_key.get(key));
            let first =
                first.unwrap_or_else(|| panic!("a mismatch without a first use; {}", context()));
            assert_ne!(
                Some(&first.0),
                sent.as_ref(),
                "the same body was refused; {}",
                context()
            );
        }
    }

    // Every acknowledged report is stored once and is found again with its contact; nothing
    // refused was stored.
    let distinct: HashSet<&str> = receipts.iter().map(|(r, _)| r.as_str()).collect();
    assert_eq!(
        count_reports(&app).await,
        i64::try_from(distinct.len()).unwrap(),
        "seed {seed}; answers {statuses:?}"
    );
    for (receipt, contact) in &receipts {
        let r = app.lookup(receipt, contact).await;
        assert_eq!(
            r.status(),
            StatusCode::OK,
            "{receipt} with {contact}; seed {seed}"
        );
    }
    // The run reached both sides: acceptances and refusals of several kinds.
    assert!(distinct.len() >= 20, "seed {seed}; answers {statuses:?}");
    assert!(statuses.len() >= 5, "seed {seed}; answers {statuses:?}");
    all_documented(&app, &statuses).await;
    app.stop().await;
}

/// Subscriptions and their confirmation, generated the same way: every answer a client code
/// (or success) with an error body in the API's format, never a 5xx.
async fn generated_subscriptions_get_client_answers(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let (seed, mut rng) = seeded();
    let mut statuses: HashMap<(&str, u16), usize> = HashMap::new();
    for n in 0..FORMS {
        let confirm = rng.random_bool(0.3);
        let (path, good) = if confirm {
            let id = uuid::Uuid::now_v7().to_string();
            (
                "/api/v1/subscriptions/confirm",
                json!({"id": id, "code": "123456"}),
            )
        } else {
            let contact = if rng.random_bool(0.5) {
                (
                    "phone",
                    format!("010-{:04}-{:04}", rng.random_range(2000..10_000), n),
                )
            } else {
                ("email", format!("sub{n}@example.kr"))
            };
            let mut body = json!({"provider": "Kakao", "lang": "ko"});
            body[contact.0] = json!(contact.1);
            ("/api/v1/subscriptions", body)
        };
        let mut changed = good;
        for _ in 0..rng.random_range(0..3) {
            let keys = [
                "provider",
                "incident_id",
                "lang",
                "phone",
                "email",
                "id",
                "code",
                "x",
            ];
            changed[keys[rng.random_range(0..keys.len())]] = odd_value(&mut rng);
        }
        let mut body = changed.to_string().into_bytes();
        if rng.random_bool(0.2) {
            body = mutate_bytes(&mut rng, body);
        }
        let content_type = if rng.random_bool(0.9) {
            "application/json"
        } else {
            "text/plain"
        };
        let r = app
            .client
            .post(app.url(path))
            .header("content-type", content_type)
            .body(body.clone())
            .send()
            .await
            .unwrap_or_else(|e| panic!("transport error {e:?}; seed {seed}, request {n}"));
        let status = r.status();
        let text = r.text().await.unwrap();
        *statuses.entry((path, status.as_u16())).or_default() += 1;
        let context = || {
            format!(
                "seed {seed}, request {n} to {path}: {}",
                String::from_utf8_lossy(&body[..body.len().min(300)])
            )
        };
        assert!(
            status.is_success() || status.is_client_error(),
            "{status} {text}; {}",
            context()
        );
        let answer: Value = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("{status} body is not JSON ({e}): {text}; {}", context()));
        if status.is_client_error() {
            assert!(answer["error"].is_string(), "{text}; {}", context());
        }
    }
    let accepted = statuses
        .get(&("/api/v1/subscriptions", 202))
        .copied()
        .unwrap_or(0);
    assert!(accepted >= 10, "seed {seed}; answers {statuses:?}");
    all_documented(&app, &statuses).await;
    app.stop().await;
}

/// Every answer a route gave is among the responses the OpenAPI document lists for it.
async fn all_documented(app: &TestApp, statuses: &HashMap<(&str, u16), usize>) {
    let doc = app.openapi().await;
    for &(path, status) in statuses.keys() {
        let responses = &doc["paths"][path]["post"]["responses"];
        assert!(
            responses.get(status.to_string()).is_some(),
            "POST {path} answered {status}, which its OpenAPI entry does not list"
        );
    }
}

/// Values a person (or a script) might put in a form field.
fn odd_field(rng: &mut StdRng) -> String {
    const VALUES: &[&str] = &[
        "",
        "   ",
        "\u{0}",
        "1e5",
        "-3",
        "２５００００",
        "250,000",
        "2999-01-01T00:00",
        "2022-13-45T99:99",
        "+82 10 1234 5678",
        "hong@예시.한국",
        "on",
        "off",
        "paid_user",
        "alien",
        "0193a0c4-2f3e-7d7a-9b1e-5f2c8a4d6e10",
        "<script>alert(1)</script>",
        "\"'&<>",
    ];
    match rng.random_range(0..VALUES.len() + 1) {
        i if i < VALUES.len() => VALUES[i].to_owned(),
        _ => "가".repeat(rng.random_range(190..5010)),
    }
}

/// The report and lookup forms filled in oddly: fields changed, left out, sent twice or made
/// up, the token changed, or the encoded body itself damaged.
async fn generated_forms_get_a_page_and_store_only_what_was_accepted(backend: Backend) {
    let Some(app) = web::spawn(backend, |_| {}).await else {
        return;
    };
    let (seed, mut rng) = seeded();
    let client = web::browser();
    let (csrf, _, _) = web::open_form(&app, &client, "/report").await;
    let mut receipts: HashSet<String> = HashSet::new();
    let mut statuses: HashMap<u16, usize> = HashMap::new();

    for n in 0..FORMS {
        let lookup = rng.random_bool(0.2);
        let mut form: Vec<(String, String)> = if lookup {
            let receipt = receipts.iter().next().cloned().unwrap_or_default();
            vec![
                ("csrf".into(), csrf.clone()),
                ("receipt".into(), receipt),
                ("contact".into(), "010-1234-5678".into()),
            ]
        } else {
            web::filled_form(&csrf, &format!("fuzz-{seed}-{n}"), "")
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v))
                .collect()
        };
        for _ in 0..rng.random_range(1..4) {
            let at = rng.random_range(0..form.len());
            match rng.random_range(0..5) {
                0 => form[at].1 = odd_field(&mut rng),
                1 if form.len() > 1 => drop(form.remove(at)),
                2 => form.push((form[at].0.clone(), odd_field(&mut rng))),
                3 => form.push(("colour".into(), odd_field(&mut rng))),
                _ if rng.random_bool(0.2) => form[0].1 = "a".repeat(64),
                _ => {}
            }
        }
        let mut body = serde_urlencoded::to_string(&form).unwrap().into_bytes();
        if rng.random_bool(0.15) {
            body = mutate_bytes(&mut rng, body);
        }
        let path = if lookup { "/lookup" } else { "/report" };
        let r = client
            .post(app.url(path))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body.clone())
            .send()
            .await
            .unwrap_or_else(|e| panic!("transport error {e:?}; seed {seed}, form {n}"));
        let status = r.status();
        *statuses.entry(status.as_u16()).or_default() += 1;
        let content_type = r.headers()["content-type"].to_str().unwrap().to_owned();
        let html = r.text().await.unwrap();
        let context = || {
            format!(
                "seed {seed}, form {n} to {path}: {:?}",
                String::from_utf8_lossy(&body[..body.len().min(300)])
            )
        };
        // 404: a lookup of an unknown receipt, or with a contact it was not given with.
        let allowed: &[u16] = if lookup {
            &[200, 400, 403, 404, 413, 422]
        } else {
            &[200, 400, 403, 413, 422]
        };
        assert!(
            allowed.contains(&status.as_u16()),
            "{status}; {}",
            context()
        );
        assert!(
            content_type.starts_with("text/html"),
            "{content_type}; {}",
            context()
        );
        if !lookup && status == StatusCode::OK && html.contains("id=\"receipt\"") {
            receipts.insert(web::receipt_of(&html));
        }
    }
    assert_eq!(
        count_reports(&app).await,
        i64::try_from(receipts.len()).unwrap(),
        "seed {seed}; answers {statuses:?}"
    );
    assert!(receipts.len() >= 10, "seed {seed}; answers {statuses:?}");
    assert!(statuses.len() >= 3, "seed {seed}; answers {statuses:?}");
    app.stop().await;
}

on_both_backends!(
    generated_requests_get_client_answers_and_store_only_what_was_accepted,
    generated_forms_get_a_page_and_store_only_what_was_accepted,
    generated_subscriptions_get_client_answers,
);
