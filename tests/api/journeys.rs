//! Whole journeys across capabilities, through the public API and the real dispatcher with the
//! embedded default's file spools: a member of the public subscribes by SMS and by e-mail,
//! confirms from the messages that arrive, receives the outage notice of each incident update,
//! and unsubscribes with the link the notice carries.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use secrecy::SecretString;
use serde_json::{Value, json};

use crate::helpers::{Backend, TestApp, TestDb};
use crate::notify::fakes::{eventually, read_lines};
use crate::notify::{decoded_text, header_value};
use crate::on_both_backends;

const TOKEN: &str = "journey-commander-token-0123456789";
const PHONE_E164: &str = "+821022223333";

struct Journey {
    app: TestApp,
    sms_spool: PathBuf,
    email_spool: PathBuf,
}

impl Journey {
    async fn start(backend: Backend) -> Option<Self> {
        let db = TestDb::new(backend).await?;
        let sms_spool = db.dir().join("spool/sms.jsonl");
        let email_spool = db.dir().join("spool/email");
        let app = TestApp::spawn_with(Arc::new(db), |c| {
            c.admin.token = SecretString::from(TOKEN);
            c.notify.dispatcher.poll_interval_ms = 20;
            c.fanout.poll_interval_ms = 20;
        })
        .await;
        Some(Self {
            app,
            sms_spool,
            email_spool,
        })
    }

    /// POST `body` as JSON (as the commander when `staff`), check the status, return the answer.
    async fn post(&self, path: &str, body: &Value, staff: bool, status: u16) -> Value {
        let mut request = self.app.client.post(self.app.url(path)).json(body);
        if staff {
            request = request.bearer_auth(TOKEN);
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), status, "POST {path}");
        response.json().await.unwrap_or(Value::Null)
    }

    /// GET a staff route's JSON answer.
    async fn get_staff(&self, path: &str) -> Value {
        self.app.get_json_as(path, TOKEN).await
    }

    /// Spooled SMS to `to`, oldest first.
    fn sms_to(&self, to: &str) -> Vec<Value> {
        read_lines(&self.sms_spool)
            .iter()
            .map(|line| serde_json::from_str::<Value>(line).unwrap())
            .filter(|sms| sms["to"] == to)
            .collect()
    }

    /// Spooled e-mails to `to`, parsed: (headers as text, decoded text part).
    fn emails_to(&self, to: &str) -> Vec<(String, String)> {
        eml_files(&self.email_spool)
            .iter()
            .filter_map(|path| {
                let raw = std::fs::read_to_string(path).ok()?;
                let addressed = header_value(&raw, "To").is_some_and(|value| value.contains(to));
                addressed.then(|| {
                    let text = decoded_text(&raw);
                    (raw, text)
                })
            })
            .collect()
    }
}

fn eml_files(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|x| x == "eml"))
                .collect()
        })
        .unwrap_or_default()
}

/// The first run of six digits in `text`.
fn six_digit_code(text: &str) -> Option<String> {
    let chars: Vec<char> = text.chars().collect();
    chars.windows(6).enumerate().find_map(|(i, w)| {
        let digits = w.iter().all(char::is_ascii_digit);
        let bounded_left = i == 0 || !chars[i - 1].is_ascii_digit();
        let bounded_right = chars.get(i + 6).is_none_or(|c| !c.is_ascii_digit());
        (digits && bounded_left && bounded_right).then(|| w.iter().collect())
    })
}

/// The path and query of the first link in `text` that contains `needle`.
fn link_path(text: &str, needle: &str) -> String {
    let url = text
        .split(|c: char| c.is_whitespace() || c == '<' || c == '>')
        .find(|word| word.starts_with("http") && word.contains(needle))
        .unwrap_or_else(|| panic!("no link with {needle} in {text}"));
    let after_scheme = &url[url.find("://").expect("absolute link") + 3..];
    after_scheme[after_scheme.find('/').expect("a path")..].to_owned()
}

async fn a_subscriber_follows_an_incident_from_confirmation_to_unsubscribe(backend: Backend) {
    let Some(j) = Journey::start(backend).await else {
        return;
    };

    // A commander declares the outage.
    let declared = j
        .post(
            "/api/v1/incidents",
            &json!({
                "title": {"ko": "카카오 서비스 장애", "en": "Kakao outage"},
                "provider": "Kakao",
                "services": ["KakaoTalk"],
                "started_at": "2022-10-15T15:30:00+09:00",
                "severity": "critical",
                "message": {"ko": "판교 데이터센터 화재로 서비스가 중단되었습니다.",
                            "en": "A fire at the Pangyo data centre interrupted the services."}
            }),
            true,
            201,
        )
        .await;
    let incident = declared["id"].as_str().unwrap().to_owned();

    // Two people subscribe to the provider's notices: one by SMS in Korean (the phone typed
    // the way people type it), one by e-mail in English.
    let by_sms = j
        .post(
            "/api/v1/subscriptions",
            &json!({"phone": "010-2222-3333", "provider": "Kakao", "lang": "ko"}),
            false,
            202,
        )
        .await;
    let sms_subscription = by_sms["id"].as_str().unwrap().to_owned();
    j.post(
        "/api/v1/subscriptions",
        &json!({"email": "fan@example.kr", "provider": "Kakao", "lang": "en"}),
        false,
        202,
    )
    .await;

    // Each gets exactly one confirmation; nothing else is sent before they confirm.
    eventually("both confirmation messages", || {
        j.sms_to(PHONE_E164).len() == 1 && j.emails_to("fan@example.kr").len() == 1
    })
    .await;
    let sms = &j.sms_to(PHONE_E164)[0];
    let text = sms["text"].as_str().unwrap();
    assert!(text.contains("확인 코드"), "{text}");
    let code = six_digit_code(text).expect("a six-digit code in the SMS");
    j.post(
        "/api/v1/subscriptions/confirm",
        &json!({"id": sms_subscription, "code": code}),
        false,
        200,
    )
    .await;

    let (_, email_text) = &j.emails_to("fan@example.kr")[0];
    assert!(
        email_text.contains("Open this link to confirm"),
        "{email_text}"
    );
    let confirm_path = link_path(email_text, "/subscriptions/confirm");
    let opened = j
        .app
        .client
        .get(j.app.url(&confirm_path))
        .send()
        .await
        .unwrap();
    assert_eq!(opened.status(), 200, "{confirm_path}");

    // The commander posts an update: both receive the outage notice, in their language.
    j.post(
        &format!("/api/v1/incidents/{incident}/updates"),
        &json!({"status": "identified",
                    "message": {"ko": "전원 설비 화재가 원인으로 확인되었습니다.",
                                "en": "The cause is a fire in the power equipment."}}),
        true,
        201,
    )
    .await;
    eventually("the first notice on both channels", || {
        j.sms_to(PHONE_E164).len() == 2 && j.emails_to("fan@example.kr").len() == 2
    })
    .await;
    let notice_sms = &j.sms_to(PHONE_E164)[1];
    assert!(
        notice_sms["text"]
            .as_str()
            .unwrap()
            .contains("전원 설비 화재"),
        "{notice_sms}"
    );
    let (notice_eml, notice_text) = j
        .emails_to("fan@example.kr")
        .into_iter()
        .find(|(_, text)| text.contains("power equipment"))
        .expect("the English notice");
    assert!(notice_text.contains("/status"), "{notice_text}");
    let unsubscribe = header_value(&notice_eml, "List-Unsubscribe").expect("List-Unsubscribe");
    assert_eq!(
        header_value(&notice_eml, "List-Unsubscribe-Post"),
        Some("List-Unsubscribe=One-Click")
    );

    // One click (RFC 8058) from the mail client ends the e-mail subscription.
    let unsubscribe_path = link_path(unsubscribe, "/unsubscribe/");
    let clicked = j
        .app
        .client
        .post(j.app.url(&unsubscribe_path))
        .header("content-type", "application/x-www-form-urlencoded")
        .body("List-Unsubscribe=One-Click")
        .send()
        .await
        .unwrap();
    assert!(clicked.status().is_success(), "{}", clicked.status());

    // The next update reaches the SMS subscriber only.
    j.post(
        &format!("/api/v1/incidents/{incident}/updates"),
        &json!({"status": "resolved",
                    "message": {"ko": "모든 서비스가 복구되었습니다.",
                                "en": "Every service is back."}}),
        true,
        201,
    )
    .await;
    eventually("the second notice by SMS", || {
        j.sms_to(PHONE_E164).len() == 3
    })
    .await;
    // The fan-out of that update is complete and every message of it was sent.
    let detail = j.get_staff(&format!("/api/v1/incidents/{incident}")).await;
    let last_update = detail["updates"]
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["status"] == "resolved")
        .expect("the resolved update")["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let delivery_path = format!("/api/v1/incidents/{incident}/updates/{last_update}/delivery");
    let mut delivery = Value::Null;
    for _ in 0..400 {
        delivery = j.get_staff(&delivery_path).await;
        if delivery["fanout"] == "done" && delivery["sent"] == 1 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    assert_eq!(delivery["fanout"], "done", "{delivery}");
    assert_eq!(
        delivery["enqueued"], 1,
        "only the SMS subscriber: {delivery}"
    );
    assert_eq!(delivery["sent"], 1, "{delivery}");
    assert_eq!(
        j.emails_to("fan@example.kr").len(),
        2,
        "nothing more after unsubscribing"
    );
    j.app.stop().await;
}

on_both_backends!(a_subscriber_follows_an_incident_from_confirmation_to_unsubscribe);
