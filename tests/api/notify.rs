//! Notification delivery against a real SMTP server on loopback and a scripted SMS gateway:
//! delivery with stable ids, retries and backoff, permanent failures, dead letters and requeue,
//! lapsed leases, two dispatchers sharing one PostgreSQL, SMS/LMS by EUC-KR length, delivery
//! reports, and the file spools of the embedded default.

pub(crate) mod fakes;

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use reliefline::Config;
use reliefline::crypto::Keys;
use reliefline::incident::Clock;
use reliefline::notify::config::{EmailTransportKind, SmsFormat, SmsTransportKind, SmtpSecurity};
use reliefline::notify::{Dispatcher, Round, euckr};
use reliefline::store::{MessageChannel, MessageState, NewMessage, OutboxMessage, Outcome};
use secrecy::SecretString;
use uuid::Uuid;

use self::fakes::{Answer, SmsGateway, SmtpMode, SmtpServer, eventually};
use crate::helpers::{Backend, TestApp, TestDb, sample_report};
use crate::on_both_backends;

const TOKEN: &str = "outbox-staff-token-0123456789";
const CALLBACK_SECRET: &str = "gateway-callback-secret";
const PHONE: &str = "+821012345678";

struct Harness {
    app: TestApp,
    smtp: SmtpServer,
    gateway: SmsGateway,
}

async fn harness(backend: Backend, adjust: impl FnOnce(&mut Config)) -> Option<Harness> {
    harness_on(backend, SmtpServer::start(), adjust).await
}

/// As [`harness`], with the SMTP server `smtp` will start.
async fn harness_on(
    backend: Backend,
    smtp: impl Future<Output = SmtpServer>,
    adjust: impl FnOnce(&mut Config),
) -> Option<Harness> {
    let db = TestDb::new(backend).await?;
    let smtp = smtp.await;
    let gateway = SmsGateway::start().await;
    let (port, url) = (smtp.port, gateway.url());
    let app = TestApp::spawn_with(Arc::new(db), move |c| {
        c.admin.token = SecretString::from(TOKEN);
        let e = &mut c.notify.email;
        e.transport = EmailTransportKind::Smtp;
        e.host = "127.0.0.1".into();
        e.port = port;
        e.security = SmtpSecurity::None;
        e.pool_size = 2;
        e.timeout_ms = 5_000;
        let s = &mut c.notify.sms;
        s.transport = SmsTransportKind::Http;
        s.url = url;
        s.sender = "15880000".into();
        s.auth_header_value = SecretString::from("Bearer gateway-credential");
        s.timeout_ms = 500;
        s.callback_secret = SecretString::from(CALLBACK_SECRET);
        let d = &mut c.notify.dispatcher;
        // Tests drive their own dispatchers, round by round, unless they turn this back on.
        d.enabled = false;
        d.batch_size = 50;
        d.lease_secs = 10;
        d.max_attempts = 5;
        d.backoff_base_ms = 1;
        d.backoff_max_ms = 5;
        d.poll_interval_ms = 20;
        d.stats_interval_ms = 50;
        adjust(c);
    })
    .await;
    Some(Harness { app, smtp, gateway })
}

impl Harness {
    /// The outbox id of each message the SMTP server took, in order.
    fn delivered_ids(&self) -> Vec<String> {
        self.smtp
            .messages()
            .iter()
            .map(|m| {
                header_value(m, "X-Reliefline-Message-Id")
                    .expect("every message carries its outbox id")
                    .to_owned()
            })
            .collect()
    }

    fn dispatcher(&self) -> Dispatcher {
        let config = &self.app.state.config;
        Dispatcher::new(
            &config.notify,
            &config.http.public_base_url,
            self.app.store.clone(),
            Arc::clone(&self.app.state.keys),
            Clock::System,
        )
        .unwrap()
    }

    fn keys(&self) -> &Keys {
        &self.app.state.keys
    }

    /// Claim up to `limit` due SMS for `owner`, as a dispatcher elsewhere would.
    async fn claim_sms(
        &self,
        owner: &str,
        lease: chrono::Duration,
        limit: u32,
    ) -> Vec<OutboxMessage> {
        let now = Utc::now();
        let store = &self.app.store;
        let claimed = store.claim_due(owner, MessageChannel::Sms, now, now + lease, limit);
        claimed.await.unwrap()
    }

    async fn enqueue(
        &self,
        channel: MessageChannel,
        to: &str,
        template: &str,
        payload: serde_json::Value,
    ) -> Uuid {
        let message = NewMessage {
            id: Uuid::now_v7(),
            channel,
            template: template.into(),
            lang: "ko".into(),
            recipient: self.keys().seal(to),
            payload,
            source_kind: "report".into(),
            source_id: Some(Uuid::now_v7()),
            not_before: Utc::now(),
            lease: None,
        };
        self.app
            .store
            .enqueue(std::slice::from_ref(&message))
            .await
            .unwrap();
        message.id
    }

    /// `n` status notices by SMS to [`PHONE`], queued; their ids.
    /// A status notice by SMS to `PHONE`, due now.
    async fn enqueue_sms_notice(&self) -> Uuid {
        self.enqueue(
            MessageChannel::Sms,
            PHONE,
            "report_status",
            status_payload(""),
        )
        .await
    }

    async fn enqueue_sms_notices(&self, n: usize) -> Vec<Uuid> {
        let mut ids = Vec::with_capacity(n);
        for _ in 0..n {
            ids.push(self.enqueue_sms_notice().await);
        }
        ids
    }

    /// Stop the service (orderly, as on SIGTERM) and open its store afresh; the SMS gateway
    /// stays up for the next start.
    async fn stop(self) -> (Arc<TestDb>, reliefline::store::DynStore, SmsGateway) {
        let db = self.app.stop().await;
        let config = crate::helpers::test_config(&db);
        let store = reliefline::store::connect(&config.database).await.unwrap();
        (db, store, self.gateway)
    }

    async fn state_of(&self, id: Uuid) -> OutboxMessage {
        self.app
            .store
            .find_message(id)
            .await
            .unwrap()
            .expect("message exists")
    }
}

fn status_payload(note: &str) -> serde_json::Value {
    serde_json::json!({"receipt": "HR-7K3M-Q9XD-2PZA-8WNE", "status": "in_review", "note": note})
}

/// Run rounds until one finds work (a retried message becomes due after its backoff).
async fn round_with_work(dispatcher: &Dispatcher) -> Round {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let round = dispatcher.run_once().await.unwrap();
        if round.claimed > 0 {
            return round;
        }
        assert!(tokio::time::Instant::now() < deadline, "nothing became due");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

pub(crate) fn header_value<'a>(eml: &'a str, name: &str) -> Option<&'a str> {
    eml.lines().find_map(|line| {
        let (key, value) = line.split_once(':')?;
        key.eq_ignore_ascii_case(name).then(|| value.trim())
    })
}

// ---- delivery -------------------------------------------------------------------------------

/// Submit a report that asks for notices by SMS and e-mail; its receipt.
async fn report_on_both_channels(app: &TestApp) -> String {
    let mut report = sample_report();
    report["notify"] = serde_json::json!({"sms": true, "email": true});
    let response = app
        .client
        .post(app.url("/api/v1/reports"))
        .json(&report)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    response.json::<serde_json::Value>().await.unwrap()["receipt"]
        .as_str()
        .unwrap()
        .to_owned()
}

impl Harness {
    /// Submit a report that asks for notices by SMS and e-mail and wait until both receipt
    /// confirmations arrived; its receipt.
    async fn report_confirmed_on_both_channels(&self) -> String {
        let receipt = report_on_both_channels(&self.app).await;
        eventually("one e-mail and one SMS", || {
            self.gateway.seen().len() == 1 && self.smtp.messages().len() == 1
        })
        .await;
        receipt
    }
}

async fn a_report_confirmation_is_delivered_by_email_and_sms(backend: Backend) {
    let Some(h) = harness(backend, |c| c.notify.dispatcher.enabled = true).await else {
        return;
    };
    let receipt = h.report_confirmed_on_both_channels().await;

    let stored = h
        .app
        .store
        .find_report(&receipt.parse().unwrap())
        .await
        .unwrap()
        .unwrap();
    let mut progress = h.app.store.outbox_progress(stored.id).await.unwrap();
    for _ in 0..200 {
        if progress.sent == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
        progress = h.app.store.outbox_progress(stored.id).await.unwrap();
    }
    assert_eq!(progress.sent, 2, "{progress:?}");
    assert_eq!(progress.total(), 2);

    // The SMS carries the outbox row id in the body and a header; the gateway got the
    // configured credential.
    let sms = &h.gateway.seen()[0];
    let sms_id: Uuid = sms.message_id.parse().unwrap();
    assert_eq!(sms.id_header.as_deref(), Some(sms.message_id.as_str()));
    assert_eq!(
        sms.authorization.as_deref(),
        Some("Bearer gateway-credential")
    );
    assert_eq!(sms.to, PHONE);
    assert!(sms.text.contains(&receipt), "{}", sms.text);
    let row = h.state_of(sms_id).await;
    assert_eq!(row.channel, MessageChannel::Sms);
    assert_eq!(row.source_id, Some(stored.id));
    assert_eq!(row.state, MessageState::Sent);
    assert_eq!(
        row.gateway_ref.as_deref(),
        Some(format!("gw-{sms_id}").as_str())
    );

    // The e-mail: both message-id headers name the outbox row; text and HTML parts.
    let eml = &h.smtp.messages()[0];
    let email_id: Uuid = header_value(eml, "X-Reliefline-Message-Id")
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(
        header_value(eml, "Message-ID"),
        Some(format!("<{email_id}@reliefline>").as_str())
    );
    assert!(eml.contains("multipart/alternative"), "{eml}");
    assert!(eml.contains("text/html"), "{eml}");
    assert_eq!(header_value(eml, "To"), Some("hong@example.kr"));
    let row = h.state_of(email_id).await;
    assert_eq!(
        (row.channel, row.state),
        (MessageChannel::Email, MessageState::Sent)
    );
    assert_eq!(row.source_id, Some(stored.id));
    assert_eq!(row.template, "receipt_confirmation");
    assert_eq!(row.attempts, 1);

    // The pending gauges are published from the store.
    let metrics = h.app.metrics_text().await;
    assert!(
        metrics.contains("reliefline_notifications_total{channel=\"sms\",outcome=\"sent\"}"),
        "{metrics}"
    );
    assert!(
        metrics.contains("reliefline_outbox_pending{channel=\"email\"}"),
        "{metrics}"
    );
    assert!(metrics.contains("reliefline_outbox_oldest_pending_seconds{channel=\"sms\"}"));
    assert!(metrics.contains("reliefline_notification_send_duration_seconds_bucket"));
}

/// A consultant's status change reaches the reporter on each channel they chose, with the new
/// status and the note, written in the change's own transaction.
async fn a_status_change_is_sent_to_the_reporter(backend: Backend) {
    let Some(h) = harness(backend, |c| c.notify.dispatcher.enabled = true).await else {
        return;
    };
    let receipt = h.report_confirmed_on_both_channels().await;

    let changed = h
        .app
        .client
        .post(h.app.url(&format!("/api/v1/reports/{receipt}/status")))
        .bearer_auth(TOKEN)
        .json(&serde_json::json!({"status": "referred", "note": "분쟁조정위원회에 사건을 넘겼습니다."}))
        .send()
        .await
        .unwrap();
    assert_eq!(changed.status(), 200);
    assert_eq!(
        changed.json::<serde_json::Value>().await.unwrap()["notices"],
        2
    );
    eventually("the status notices", || {
        h.gateway.seen().len() == 2 && h.smtp.messages().len() == 2
    })
    .await;

    let sms = &h.gateway.seen()[1];
    assert_eq!(sms.to, PHONE);
    assert!(sms.text.contains(&receipt), "{}", sms.text);
    assert!(sms.text.contains("분쟁조정위원회 이관"), "{}", sms.text);
    assert!(sms.text.contains("사건을 넘겼습니다"), "{}", sms.text);
    let row = h.state_of(sms.message_id.parse().unwrap()).await;
    assert_eq!(row.template, "report_status");
    assert_eq!(row.source_kind, "report_status");

    let eml = &h.smtp.messages()[1];
    assert_eq!(header_value(eml, "To"), Some("hong@example.kr"));
    let text = decoded_text(eml);
    assert!(text.contains("분쟁조정위원회 이관"), "{text}");
    assert!(text.contains("사건을 넘겼습니다"), "{text}");
    let stored = h
        .app
        .store
        .find_report(&receipt.parse().unwrap())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(row.source_id, Some(stored.id));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let progress = h.app.store.outbox_progress(stored.id).await.unwrap();
        if progress.sent == 4 {
            assert_eq!(progress.total(), 4, "{progress:?}");
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{progress:?}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

async fn transient_failures_are_retried_with_backoff_then_sent(backend: Backend) {
    let Some(h) = harness(backend, |c| c.notify.dispatcher.max_attempts = 6).await else {
        return;
    };
    let d = h.dispatcher();
    h.gateway.script(&[
        Answer::Status(500),
        Answer::TooMany(1),
        Answer::Close,
        Answer::Hang,
        Answer::Status(503),
    ]);
    let id = h.enqueue_sms_notice().await;

    let round = round_with_work(&d).await;
    assert_eq!((round.claimed, round.retried), (1, 1));
    let row = h.state_of(id).await;
    assert_eq!((row.state, row.attempts), (MessageState::Pending, 1));
    assert!(row.last_error.unwrap().contains("500"));

    // 429 with Retry-After: 1 — not due again for at least a second, whatever the backoff says.
    let round = round_with_work(&d).await;
    assert_eq!(round.retried, 1);
    let row = h.state_of(id).await;
    assert_eq!(row.attempts, 2);
    // The wait counts from the answer; the outcome is written a moment later (`updated_at`).
    // The backoff here is a few milliseconds, so 900 ms can only come from Retry-After.
    assert!(
        row.next_attempt_at - row.updated_at >= chrono::Duration::milliseconds(900),
        "Retry-After honoured: due {} after the outcome was written",
        row.next_attempt_at - row.updated_at
    );
    assert_eq!(
        d.run_once().await.unwrap().claimed,
        0,
        "not due before Retry-After"
    );

    for (attempt, answer) in [(3, "dropped connection"), (4, "timeout"), (5, "503")] {
        let round = round_with_work(&d).await;
        assert_eq!(round.retried, 1, "attempt {attempt} ({answer}) is retried");
    }
    let round = round_with_work(&d).await;
    assert_eq!(round.sent, 1);
    let row = h.state_of(id).await;
    assert_eq!((row.state, row.attempts), (MessageState::Sent, 6));
    // Every attempt carried the same message id, so the receiver can deduplicate.
    assert_eq!(h.gateway.counts().get(&id.to_string()), Some(&6));
    assert_eq!(d.run_once().await.unwrap().claimed, 0, "nothing left");
}

async fn permanent_failures_are_not_retried(backend: Backend) {
    let Some(h) = harness(backend, |c| c.notify.sms.format = SmsFormat::Form).await else {
        return;
    };
    let d = h.dispatcher();
    h.gateway.script(&[Answer::Status(400)]);
    let sms = h.enqueue_sms_notice().await;
    let refused = h
        .enqueue(
            MessageChannel::Email,
            "reject@example.kr",
            "report_status",
            status_payload(""),
        )
        .await;
    let invalid = h
        .enqueue(
            MessageChannel::Email,
            "not an address",
            "report_status",
            status_payload(""),
        )
        .await;
    let round = d.run_once().await.unwrap();
    assert_eq!((round.claimed, round.failed), (3, 3), "{round:?}");
    for id in [sms, refused, invalid] {
        let row = h.state_of(id).await;
        assert_eq!(
            (row.state, row.attempts),
            (MessageState::Failed, 1),
            "{row:?}"
        );
    }
    assert!(
        h.state_of(refused)
            .await
            .last_error
            .unwrap()
            .contains("550")
    );
    // Nothing is due any more, and the gateway saw the SMS once, form-encoded.
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(d.run_once().await.unwrap().claimed, 0);
    let seen = h.gateway.seen();
    assert_eq!(seen.len(), 1);
    assert!(seen[0].form);
    assert_eq!(seen[0].message_id, sms.to_string());
    assert!(h.smtp.messages().is_empty());
}

async fn exhausted_messages_are_dead_lettered_listed_and_requeued(backend: Backend) {
    let Some(h) = harness(backend, |c| c.notify.dispatcher.max_attempts = 2).await else {
        return;
    };
    let d = h.dispatcher();
    h.gateway
        .script(&[Answer::Status(502), Answer::Status(502)]);
    let id = h.enqueue_sms_notice().await;
    assert_eq!(round_with_work(&d).await.retried, 1);
    assert_eq!(round_with_work(&d).await.dead, 1);
    let row = h.state_of(id).await;
    assert_eq!((row.state, row.attempts), (MessageState::Dead, 2));

    // Staff see it, recipient masked; the public does not.
    let dead_url = h.app.url("/api/v1/outbox/dead");
    let unauthenticated = h.app.client.get(&dead_url).send().await.unwrap();
    assert_eq!(unauthenticated.status(), 401);
    let listed = h.app.get_json_as("/api/v1/outbox/dead", TOKEN).await;
    let messages = listed["messages"].as_array().unwrap();
    assert_eq!(messages.len(), 1);
    assert_eq!(messages[0]["id"], id.to_string());
    assert_eq!(messages[0]["recipient"], "010-****-5678");
    assert_eq!(messages[0]["attempts"], 2);
    assert!(!listed.to_string().contains("12345678"), "{listed}");
    let bad_limit = h
        .app
        .client
        .get(format!("{dead_url}?limit=0"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(bad_limit.status(), 422);

    // Requeue: 401 without the token, 404 for an unknown id, then done, then 422 (not dead).
    let requeue = |id: String| {
        h.app
            .client
            .post(h.app.url(&format!("/api/v1/outbox/{id}/requeue")))
    };
    assert_eq!(requeue(id.to_string()).send().await.unwrap().status(), 401);
    let unknown = requeue(Uuid::now_v7().to_string())
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(unknown.status(), 404);
    assert_eq!(
        requeue("not-an-id".into())
            .bearer_auth(TOKEN)
            .send()
            .await
            .unwrap()
            .status(),
        404
    );
    let done = requeue(id.to_string())
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(done.status(), 200);
    let again = requeue(id.to_string())
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 422);
    let body: serde_json::Value = again.json().await.unwrap();
    assert_eq!(body["error"], "not_dead");
    let audit = h.app.store.recent_audit(10).await.unwrap();
    assert!(audit.iter().any(|a| a.action == "outbox.requeue"
        && a.target.as_deref() == Some(format!("outbox/{id}").as_str())));

    // A fresh set of attempts, and this time the gateway takes it.
    let round = round_with_work(&d).await;
    assert_eq!(round.sent, 1);
    let row = h.state_of(id).await;
    assert_eq!((row.state, row.attempts), (MessageState::Sent, 1));
    assert_eq!(h.gateway.counts().get(&id.to_string()), Some(&3));
    assert!(h.app.store.dead_letters(10).await.unwrap().is_empty());
}

async fn a_lapsed_lease_makes_the_message_due_again(backend: Backend) {
    let Some(h) = harness(backend, |_| {}).await else {
        return;
    };
    let d = h.dispatcher();
    let id = h.enqueue_sms_notice().await;
    // A replica claims it and dies before sending: nothing is recorded.
    let taken = h
        .claim_sms("crashed-replica", chrono::Duration::milliseconds(300), 10)
        .await;
    assert_eq!(taken.len(), 1);
    assert_eq!(
        d.run_once().await.unwrap().claimed,
        0,
        "leased to someone else"
    );
    // After the lease the message is due again and this dispatcher delivers it.
    let round = round_with_work(&d).await;
    assert_eq!(round.sent, 1);
    let row = h.state_of(id).await;
    assert_eq!((row.state, row.attempts), (MessageState::Sent, 2));
    assert_eq!(h.gateway.counts().get(&id.to_string()), Some(&1));
    // The dead replica's late outcome no longer counts.
    let late = h
        .app
        .store
        .record_outcome(
            id,
            "crashed-replica",
            &Outcome::Failed {
                error: "late".into(),
            },
            Utc::now(),
        )
        .await
        .unwrap();
    assert!(!late);
    assert_eq!(h.state_of(id).await.state, MessageState::Sent);
}

async fn sms_or_lms_follows_the_euc_kr_length(backend: Backend) {
    let Some(h) = harness(backend, |_| {}).await else {
        return;
    };
    let d = h.dispatcher();
    // The rendered SMS is "[Reliefline] 접수번호 {receipt} 처리 상황: 상담 진행 중. {note}".
    let prefix = "[Reliefline] 접수번호 HR-7K3M-Q9XD-2PZA-8WNE 처리 상황: 상담 진행 중. ";
    let room = euckr::SMS_MAX_BYTES - euckr::byte_len(prefix);
    let mut note = "가".repeat(room / 2);
    if room % 2 == 1 {
        note.push('a');
    }
    let exactly_90 = h
        .enqueue(
            MessageChannel::Sms,
            PHONE,
            "report_status",
            status_payload(&note),
        )
        .await;
    let one_more = h
        .enqueue(
            MessageChannel::Sms,
            PHONE,
            "report_status",
            status_payload(&format!("{note}b")),
        )
        .await;
    let long_note = "복구 작업이 진행 중입니다. ".repeat(150);
    let too_long = h
        .enqueue(
            MessageChannel::Sms,
            PHONE,
            "report_status",
            status_payload(&long_note),
        )
        .await;
    assert_eq!(d.run_once().await.unwrap().sent, 3);
    let seen = h.gateway.seen();
    let of = |id: Uuid| {
        seen.iter()
            .find(|s| s.message_id == id.to_string())
            .unwrap()
            .clone()
    };
    let short = of(exactly_90);
    assert_eq!(euckr::byte_len(&short.text), 90, "{}", short.text);
    assert_eq!(short.kind, "SMS");
    let longer = of(one_more);
    assert_eq!(euckr::byte_len(&longer.text), 91);
    assert_eq!(longer.kind, "LMS");
    let cut = of(too_long);
    assert_eq!(cut.kind, "LMS");
    assert!(euckr::byte_len(&cut.text) <= euckr::LMS_MAX_BYTES);
    assert!(
        cut.text.ends_with('…'),
        "cut on a character boundary: {}",
        cut.text
    );
}

async fn delivery_reports_update_the_message(backend: Backend) {
    let Some(h) = harness(backend, |_| {}).await else {
        return;
    };
    let id = h.enqueue_sms_notice().await;
    let url = h.app.url("/api/v1/notifications/sms/delivery");
    let post = |secret: Option<&str>, body: serde_json::Value| {
        let mut request = h.app.client.post(&url).json(&body);
        if let Some(secret) = secret {
            request = request.header("X-Reliefline-Callback-Secret", secret);
        }
        request.send()
    };
    let report = serde_json::json!({"message_id": id, "status": "delivered", "carrier": "SKT"});
    assert_eq!(post(None, report.clone()).await.unwrap().status(), 401);
    assert_eq!(
        post(Some("wrong"), report.clone()).await.unwrap().status(),
        401
    );
    assert_eq!(h.state_of(id).await.delivery_status, None);
    let unknown = serde_json::json!({"message_id": Uuid::now_v7(), "status": "delivered"});
    assert_eq!(
        post(Some(CALLBACK_SECRET), unknown).await.unwrap().status(),
        404
    );
    let bad = post(
        Some(CALLBACK_SECRET),
        serde_json::json!({"message_id": "x", "status": ""}),
    )
    .await
    .unwrap();
    assert_eq!(bad.status(), 422);
    let body: serde_json::Value = bad.json().await.unwrap();
    assert!(body["fields"]["message_id"].is_string() && body["fields"]["status"].is_string());
    // Over the 16 KiB a delivery report may take: 413 for the gateway, 401 for anyone else.
    let padded =
        serde_json::json!({"message_id": id, "status": "delivered", "pad": "x".repeat(17_000)});
    assert_eq!(
        post(Some(CALLBACK_SECRET), padded.clone())
            .await
            .unwrap()
            .status(),
        413
    );
    assert_eq!(post(None, padded).await.unwrap().status(), 401);
    assert_eq!(h.state_of(id).await.delivery_status, None);
    assert_eq!(
        post(Some(CALLBACK_SECRET), report).await.unwrap().status(),
        204
    );
    assert_eq!(
        h.state_of(id).await.delivery_status.as_deref(),
        Some("delivered")
    );
}

async fn the_embedded_default_spools_to_files(backend: Backend) {
    let Some(db) = TestDb::new(backend).await else {
        return;
    };
    let spool = db.dir().join("spool");
    let (email_dir, sms_file) = (spool.join("email"), spool.join("sms.jsonl"));
    let (e, s) = (email_dir.clone(), sms_file.clone());
    let app = TestApp::spawn_with(Arc::new(db), move |c| {
        assert_eq!(c.notify.email.transport, EmailTransportKind::File);
        assert_eq!(c.notify.sms.transport, SmsTransportKind::File);
        assert!(c.notify.dispatcher.enabled);
        c.notify.email.spool_dir = e;
        c.notify.sms.spool_path = s;
        c.notify.dispatcher.poll_interval_ms = 20;
    })
    .await;
    let receipt = report_on_both_channels(&app).await;
    let emails = || {
        std::fs::read_dir(&email_dir)
            .map(|d| {
                d.filter_map(Result::ok)
                    .map(|e| e.path())
                    .filter(|p| p.extension().is_some_and(|x| x == "eml"))
                    .collect::<Vec<_>>()
            })
            .unwrap_or_default()
    };
    eventually("spooled e-mail and SMS", || {
        emails().len() == 1 && fakes::read_lines(&sms_file).len() == 1
    })
    .await;
    let eml = std::fs::read_to_string(&emails()[0]).unwrap();
    let email_id = header_value(&eml, "X-Reliefline-Message-Id").unwrap();
    assert!(emails()[0].ends_with(format!("{email_id}.eml")));
    let line: serde_json::Value = serde_json::from_str(&fakes::read_lines(&sms_file)[0]).unwrap();
    assert_eq!(line["to"], PHONE);
    assert_eq!(line["type"], "SMS");
    assert!(line["text"].as_str().unwrap().contains(&receipt));
    let sms_id: Uuid = line["message_id"].as_str().unwrap().parse().unwrap();
    let mut state = app.store.find_message(sms_id).await.unwrap().unwrap().state;
    for _ in 0..200 {
        if state == MessageState::Sent {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
        state = app.store.find_message(sms_id).await.unwrap().unwrap().state;
    }
    assert_eq!(state, MessageState::Sent);
    app.stop().await;
}

/// The waiting counts behind the `reliefline_outbox_pending` gauges: a row per channel,
/// pending and sending both counted, the oldest creation time while any waits.
async fn waiting_messages_are_counted_per_channel(backend: Backend) {
    let Some(h) = harness(backend, |_| {}).await else {
        return;
    };
    let waiting = || async {
        let mut stats = h.app.store.pending_stats().await.unwrap();
        stats.sort_by_key(|s| s.channel.as_ref().to_owned());
        stats
            .iter()
            .map(|s| (s.channel, s.count, s.oldest_created_at.is_some()))
            .collect::<Vec<_>>()
    };
    let nothing = vec![
        (MessageChannel::Email, 0, false),
        (MessageChannel::Sms, 0, false),
    ];
    assert_eq!(waiting().await, nothing);
    h.enqueue_sms_notices(2).await;
    let claimed = h
        .claim_sms("counter", chrono::Duration::seconds(60), 1)
        .await;
    assert_eq!(claimed.len(), 1);
    assert_eq!(
        waiting().await,
        vec![
            (MessageChannel::Email, 0, false),
            (MessageChannel::Sms, 2, true),
        ]
    );
    let sent: Vec<_> = claimed
        .iter()
        .map(|m| (m.id, Outcome::Sent { gateway_ref: None }))
        .collect();
    h.app
        .store
        .record_outcomes("counter", &sent, Utc::now())
        .await
        .unwrap();
    assert_eq!(
        waiting().await,
        vec![
            (MessageChannel::Email, 0, false),
            (MessageChannel::Sms, 1, true),
        ]
    );
}

on_both_backends!(
    a_report_confirmation_is_delivered_by_email_and_sms,
    a_status_change_is_sent_to_the_reporter,
    transient_failures_are_retried_with_backoff_then_sent,
    permanent_failures_are_not_retried,
    exhausted_messages_are_dead_lettered_listed_and_requeued,
    a_lapsed_lease_makes_the_message_due_again,
    sms_or_lms_follows_the_euc_kr_length,
    delivery_reports_update_the_message,
    the_embedded_default_spools_to_files,
    waiting_messages_are_counted_per_channel,
);

/// Two dispatchers on one PostgreSQL, racing over the same messages: each message reaches the
/// gateway exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_dispatchers_on_postgres_send_each_message_once() {
    let Some(h) = harness(Backend::Postgres, |c| c.notify.dispatcher.batch_size = 7).await else {
        return;
    };
    const N: usize = 120;
    let messages: Vec<NewMessage> = (0..N)
        .map(|_| NewMessage {
            id: Uuid::now_v7(),
            channel: MessageChannel::Sms,
            template: "report_status".into(),
            lang: "en".into(),
            recipient: h.keys().seal(PHONE),
            payload: status_payload(""),
            source_kind: "report".into(),
            source_id: None,
            not_before: Utc::now(),
            lease: None,
        })
        .collect();
    h.app.store.enqueue(&messages).await.unwrap();
    h.gateway.delay(Duration::from_millis(2));
    let (a, b) = (Arc::new(h.dispatcher()), Arc::new(h.dispatcher()));
    assert_ne!(a.owner(), b.owner());
    let drain = |d: Arc<Dispatcher>| {
        tokio::spawn(async move {
            let mut sent = 0;
            loop {
                let round = d.run_once().await.unwrap();
                sent += round.sent;
                if round.claimed == 0 {
                    return sent;
                }
            }
        })
    };
    let (sent_a, sent_b) = (drain(Arc::clone(&a)), drain(Arc::clone(&b)));
    let (sent_a, sent_b) = (sent_a.await.unwrap(), sent_b.await.unwrap());
    assert_eq!(sent_a + sent_b, N);
    assert!(
        sent_a > 0 && sent_b > 0,
        "both shared the work: {sent_a} + {sent_b}"
    );
    let counts = h.gateway.counts();
    assert_eq!(counts.len(), N);
    assert!(
        counts.values().all(|&n| n == 1),
        "a message was sent twice: {counts:?}"
    );
}

/// A report and its notifications are committed together, or neither is.
async fn reports_and_their_outbox_rows_commit_together(backend: Backend) {
    let Some(h) = harness(backend, |_| {}).await else {
        return;
    };
    let keys = h.keys();
    let write = |receipt: reliefline::domain::Receipt| {
        let report = reliefline::store::NewReport {
            id: Uuid::now_v7(),
            receipt,
            incident_id: None,
            channel: reliefline::domain::Channel::Api,
            provider: "Kakao".into(),
            service: "KakaoTalk".into(),
            reporter_type: reliefline::domain::ReporterType::Individual,
            harm_type: reliefline::domain::HarmType::ServiceUnavailable,
            occurred_at: None,
            amount_krw: None,
            title: None,
            description: "메시지가 전송되지 않습니다.".into(),
            reporter_name: keys.seal("홍길동"),
            phone: Some(keys.seal_contact(PHONE)),
            email: Some(keys.seal_contact("hong@example.kr")),
            notify_sms: true,
            notify_email: true,
            lang: "ko".into(),
            idempotency: None,
            received_at: Utc::now(),
        };
        let outbox = reliefline::notify::receipt_confirmation(
            keys,
            &report,
            Some(PHONE),
            Some("hong@example.kr"),
            reliefline::notify::Lang::En,
        );
        reliefline::store::ReportWrite { report, outbox }
    };
    let first = write(reliefline::domain::Receipt::generate());
    assert_eq!(first.outbox.len(), 2);
    h.app
        .store
        .insert_reports(std::slice::from_ref(&first))
        .await
        .unwrap();
    let progress = h.app.store.outbox_progress(first.report.id).await.unwrap();
    assert_eq!(progress.pending, 2);

    // A batch that fails (its second report reuses a receipt) leaves no outbox rows behind.
    let fresh = write(reliefline::domain::Receipt::generate());
    let clash = write(first.report.receipt.clone());
    assert!(
        h.app
            .store
            .insert_reports(&[fresh.clone(), clash])
            .await
            .is_err()
    );
    assert_eq!(
        h.app
            .store
            .outbox_progress(fresh.report.id)
            .await
            .unwrap()
            .total(),
        0
    );

    // Asked for no notification, none is written.
    let mut quiet = write(reliefline::domain::Receipt::generate()).report;
    quiet.notify_sms = false;
    quiet.notify_email = false;
    assert!(
        reliefline::notify::receipt_confirmation(
            keys,
            &quiet,
            Some(PHONE),
            None,
            reliefline::notify::Lang::Ko
        )
        .is_empty()
    );
}

on_both_backends!(reports_and_their_outbox_rows_commit_together);

/// The service is killed while the gateway holds its send: after the lease lapses, another
/// instance delivers the message — once more than necessary at most.
async fn a_message_is_delivered_after_a_kill_mid_send(backend: Backend) {
    let Some(db) = TestDb::new(backend).await else {
        return;
    };
    let gateway = SmsGateway::start().await;
    gateway.script(&[Answer::Hang]);
    let url = gateway.url();
    let process = crate::helpers::ServiceProcess::start(
        &db,
        &[
            ("RELIEFLINE_NOTIFY__SMS__TRANSPORT", "http"),
            ("RELIEFLINE_NOTIFY__SMS__URL", &url),
            ("RELIEFLINE_NOTIFY__SMS__TIMEOUT_MS", "1500"),
            ("RELIEFLINE_NOTIFY__EMAIL__TIMEOUT_MS", "1000"),
            ("RELIEFLINE_NOTIFY__DISPATCHER__LEASE_SECS", "2"),
            ("RELIEFLINE_NOTIFY__DISPATCHER__POLL_INTERVAL_MS", "50"),
        ],
    );
    let response = reqwest::Client::new()
        .post(process.url("/api/v1/reports"))
        .json(&sample_report())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    eventually("the first send to reach the gateway", || {
        gateway.seen().len() == 1
    })
    .await;
    process.kill();
    let id: Uuid = gateway.seen()[0].message_id.parse().unwrap();

    let app = TestApp::spawn_with(Arc::new(db), move |c| {
        c.notify.sms.transport = SmsTransportKind::Http;
        c.notify.sms.url = url;
        c.notify.sms.timeout_ms = 1_500;
        c.notify.dispatcher.lease_secs = 2;
        c.notify.dispatcher.poll_interval_ms = 50;
    })
    .await;
    eventually("the second send", || gateway.seen().len() >= 2).await;
    let mut row = app.store.find_message(id).await.unwrap().unwrap();
    for _ in 0..200 {
        if row.state == MessageState::Sent {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
        row = app.store.find_message(id).await.unwrap().unwrap();
    }
    assert_eq!(row.state, MessageState::Sent);
    assert_eq!(row.attempts, 2);
    assert_eq!(gateway.counts().get(&id.to_string()), Some(&2));
    app.stop().await;
}

on_both_backends!(a_message_is_delivered_after_a_kill_mid_send);

/// The SMS rate limit holds sends back; on shutdown the dispatcher stops, finishes what is in
/// flight and hands back what it had claimed but not sent, which the next start delivers.
async fn rate_limits_hold_sends_back_and_shutdown_releases_claims(backend: Backend) {
    let Some(h) = harness(backend, |c| {
        c.notify.dispatcher.enabled = true;
        // Two at once, then one every 15 s, the slowest a 60 s lease allows.
        c.notify.dispatcher.lease_secs = 60;
        c.notify.rate_limits.sms.per_minute = 4.0;
        c.notify.rate_limits.sms.burst = 2;
    })
    .await
    else {
        return;
    };
    let ids = h.enqueue_sms_notices(5).await;
    eventually("the burst to be sent", || h.gateway.seen().len() == 2).await;
    let store = h.app.store.clone();
    eventually_async(&store, &ids, |rows| {
        rows.iter()
            .filter(|r| r.state == MessageState::Sent)
            .count()
            == 2
    })
    .await;
    // The others are claimed but held back by the limit.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(h.gateway.seen().len(), 2, "the limit holds the rest back");

    let (db, store, gateway) = h.stop().await;
    let port_url = gateway.url();
    let mut held = 0;
    for id in &ids {
        let row = store.find_message(*id).await.unwrap().unwrap();
        match row.state {
            MessageState::Sent => assert_eq!(row.attempts, 1),
            MessageState::Pending => {
                held += 1;
                assert_eq!(row.attempts, 0, "a released claim is not an attempt");
            }
            other => panic!("left {other:?} after shutdown"),
        }
    }
    assert_eq!(held, 3);

    // The next start delivers the rest, each once.
    let app = TestApp::spawn_with(db, move |c| {
        c.notify.sms.transport = SmsTransportKind::Http;
        c.notify.sms.url = port_url;
        c.notify.dispatcher.poll_interval_ms = 20;
    })
    .await;
    eventually("all five delivered", || gateway.seen().len() == 5).await;
    let counts = gateway.counts();
    assert!(
        ids.iter().all(|id| counts.get(&id.to_string()) == Some(&1)),
        "{counts:?}"
    );
    app.stop().await;
}

/// A message the rate limit would hold past half its lease is handed back unsent (another
/// replica could take it once the lease lapses mid-send): pending, due at once, its attempt
/// given back. Later rounds send it; every message goes out once.
async fn a_message_held_past_half_its_lease_is_released_and_sent_later(backend: Backend) {
    let Some(h) = harness(backend, |c| {
        c.notify.dispatcher.lease_secs = 1;
        c.notify.email.timeout_ms = 400;
        c.notify.sms.timeout_ms = 400;
        // One send every 0.25 s after a burst of 8: a claim takes 8 + 1 (what the limit lets
        // out in a quarter of the lease).
        c.notify.rate_limits.sms.per_minute = 240.0;
        c.notify.rate_limits.sms.burst = 8;
    })
    .await
    else {
        return;
    };
    let ids = h.enqueue_sms_notices(18).await;
    let dispatcher = h.dispatcher();
    // The burst and one more: all sent within half the lease.
    let first = dispatcher.run_once().await.unwrap();
    assert_eq!(first.claimed, 9, "{first:?}");
    assert_eq!(first.sent, 9, "{first:?}");
    // Straight after, with the bucket empty, one permit per 0.25 s: the messages that could
    // not begin within half of their 1 s lease go back unsent and without using a permit.
    let second = dispatcher.run_once().await.unwrap();
    assert_eq!(second.claimed, 9, "{second:?}");
    assert!(second.released >= 1, "{second:?}");
    assert_eq!(second.sent + second.released, 9, "{second:?}");
    assert_eq!(h.gateway.seen().len(), first.sent + second.sent);
    for id in &ids[9..] {
        let row = h.state_of(*id).await;
        match row.state {
            MessageState::Sent => assert_eq!(row.attempts, 1),
            MessageState::Pending => {
                assert_eq!(row.attempts, 0, "a release is not an attempt");
                assert!(row.next_attempt_at <= Utc::now(), "due again at once");
                assert_eq!(row.last_error, None);
            }
            other => panic!("{other:?} after the round: {row:?}"),
        }
    }

    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while h.gateway.seen().len() < ids.len() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "not all sent: {:?}",
            h.gateway.counts()
        );
        dispatcher.run_once().await.unwrap();
    }
    let counts = h.gateway.counts();
    assert!(
        ids.iter().all(|id| counts.get(&id.to_string()) == Some(&1)),
        "{counts:?}"
    );
    for id in &ids {
        let row = h.state_of(*id).await;
        assert_eq!(
            (row.state, row.attempts),
            (MessageState::Sent, 1),
            "{row:?}"
        );
    }
}

async fn eventually_async(
    store: &reliefline::store::DynStore,
    ids: &[Uuid],
    check: impl Fn(&[OutboxMessage]) -> bool,
) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let mut rows = Vec::new();
        for id in ids {
            rows.push(store.find_message(*id).await.unwrap().unwrap());
        }
        if check(&rows) {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out: {rows:?}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// What a report's receipt confirmations are, by state, summed over `receipts`.
async fn confirmations_by_state(
    store: &reliefline::store::DynStore,
    receipts: &[String],
) -> reliefline::store::OutboxProgress {
    let mut sum = reliefline::store::OutboxProgress::default();
    for receipt in receipts {
        let report = store
            .find_report(&receipt.parse().unwrap())
            .await
            .unwrap()
            .expect("a committed report");
        let p = store.outbox_progress(report.id).await.unwrap();
        sum.pending += p.pending;
        sum.sending += p.sending;
        sum.sent += p.sent;
        sum.failed += p.failed;
        sum.dead += p.dead;
    }
    sum
}

/// Intake hands a report's confirmation straight to the dispatcher of its own process, written
/// already leased in the report's transaction: the dispatcher here never polls during the test,
/// so only the hand-over can bring these confirmations to a sender. With the SMS lane full
/// (one send a minute: one message waiting for the limit, one queued) the rest are written
/// pending. On shutdown the confirmations handed over but not sent are handed back; the next
/// start sends every one, each once.
async fn receipt_confirmations_go_straight_to_the_dispatcher(backend: Backend) {
    let Some(h) = harness(backend, |c| {
        c.notify.dispatcher.enabled = true;
        c.notify.dispatcher.poll_interval_ms = 600_000;
        c.notify.dispatcher.lease_secs = 60;
        c.notify.rate_limits.sms.per_minute = 1.0;
        c.notify.rate_limits.sms.burst = 1;
    })
    .await
    else {
        return;
    };
    let submit = || async {
        let response = h
            .app
            .client
            .post(h.app.url("/api/v1/reports"))
            .json(&sample_report())
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 201);
        let body: serde_json::Value = response.json().await.unwrap();
        body["receipt"].as_str().unwrap().to_owned()
    };
    let mut receipts = vec![submit().await];
    eventually("the first confirmation", || h.gateway.seen().len() == 1).await;
    for _ in 0..4 {
        receipts.push(submit().await);
    }
    let store = h.app.store.clone();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let held = loop {
        let held = confirmations_by_state(&store, &receipts).await;
        if held.sent == 1 || tokio::time::Instant::now() > deadline {
            break held;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    };
    assert_eq!(h.gateway.seen().len(), 1, "the limit holds the rest back");
    assert_eq!(held.sent, 1, "{held:?}");
    assert!((1..=2).contains(&held.sending), "handed over: {held:?}");
    assert_eq!(held.pending, 4 - held.sending, "no room: {held:?}");

    let (db, store, gateway) = h.stop().await;
    let gateway_url = gateway.url();
    let stopped = confirmations_by_state(&store, &receipts).await;
    assert_eq!((stopped.sent, stopped.sending), (1, 0), "{stopped:?}");
    assert_eq!(stopped.pending, 4, "{stopped:?}");

    let app = TestApp::spawn_with(db, move |c| {
        c.notify.sms.transport = SmsTransportKind::Http;
        c.notify.sms.url = gateway_url;
        c.notify.dispatcher.poll_interval_ms = 20;
    })
    .await;
    eventually("all five confirmed", || gateway.seen().len() == 5).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let counts = gateway.counts();
    assert_eq!(counts.len(), 5, "{counts:?}");
    assert!(counts.values().all(|n| *n == 1), "{counts:?}");
    for id in counts.keys() {
        let row = app
            .store
            .find_message(id.parse().unwrap())
            .await
            .unwrap()
            .unwrap();
        // A confirmation handed back gave its attempt back.
        assert_eq!(
            (row.state, row.attempts),
            (MessageState::Sent, 1),
            "{row:?}"
        );
    }
    app.stop().await;
}

on_both_backends!(
    rate_limits_hold_sends_back_and_shutdown_releases_claims,
    a_message_held_past_half_its_lease_is_released_and_sent_later,
    receipt_confirmations_go_straight_to_the_dispatcher,
);

/// The outage notice for an incident update names the outage, its cause and response, a
/// contact for consultation, and carries one-click unsubscribe for a subscriber.
async fn an_incident_update_goes_out_as_the_statutory_notice(backend: Backend) {
    let Some(h) = harness(backend, |c| c.notify.contact_phone = "1335".into()).await else {
        return;
    };
    let declared = h
        .app
        .client
        .post(h.app.url("/api/v1/incidents"))
        .bearer_auth(TOKEN)
        .json(&serde_json::json!({
            "title": {"ko": "카카오 서비스 장애", "en": "Kakao outage"},
            "provider": "Kakao",
            "services": ["KakaoTalk", "Kakao T"],
            "started_at": "2022-10-15T15:30:00+09:00",
            "severity": "critical",
            "message": {"ko": "데이터센터 화재로 전원이 차단되었습니다.",
                        "en": "A data-centre fire cut the power."}
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(declared.status(), 201);
    let incident_id: Uuid = declared.json::<serde_json::Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let record = h
        .app
        .store
        .find_incident(incident_id)
        .await
        .unwrap()
        .unwrap();
    let update_id = record.updates[0].id;
    let subscription = Uuid::now_v7();
    let payload = serde_json::json!({
        "incident_id": incident_id, "update_id": update_id, "subscription_id": subscription
    });
    let mut ids = Vec::new();
    for (channel, to, lang) in [
        (MessageChannel::Email, "sub@example.kr", "en"),
        (MessageChannel::Sms, PHONE, "ko"),
        (MessageChannel::Email, "linked@example.kr", "ko"),
    ] {
        let mut p = payload.clone();
        if to == "linked@example.kr" {
            // A linked reporter, not a subscriber: no unsubscribe link.
            p["subscription_id"] = serde_json::Value::Null;
        }
        let message = NewMessage {
            id: Uuid::now_v7(),
            channel,
            template: "incident_update".into(),
            lang: lang.into(),
            recipient: h.keys().seal(to),
            payload: p,
            source_kind: "incident_update".into(),
            source_id: Some(update_id),
            not_before: Utc::now(),
            lease: None,
        };
        ids.push(message.id);
        h.app.store.enqueue(&[message]).await.unwrap();
    }
    assert_eq!(h.dispatcher().run_once().await.unwrap().sent, 3);
    let progress = h.app.store.outbox_progress(update_id).await.unwrap();
    assert_eq!(progress.sent, 3);

    let token = h.keys().token("unsubscribe", subscription);
    let unsubscribe = format!("http://127.0.0.1:8080/unsubscribe/{subscription}/{token}");
    let mails = h.smtp.messages();
    let subscriber = mails
        .iter()
        .find(|m| header_value(m, "To") == Some("sub@example.kr"))
        .unwrap();
    assert_eq!(
        header_value(subscriber, "List-Unsubscribe"),
        Some(format!("<{unsubscribe}>").as_str())
    );
    assert_eq!(
        header_value(subscriber, "List-Unsubscribe-Post"),
        Some("List-Unsubscribe=One-Click")
    );
    let body = decoded_text(subscriber);
    for expected in [
        "Kakao outage",
        "KakaoTalk, Kakao T",
        "2022-10-15 15:30 KST",
        "A data-centre fire cut the power.",
        "1335",
        "http://127.0.0.1:8080/status",
    ] {
        assert!(body.contains(expected), "missing {expected:?} in {body}");
    }
    let linked = mails
        .iter()
        .find(|m| header_value(m, "To") == Some("linked@example.kr"))
        .unwrap();
    assert_eq!(header_value(linked, "List-Unsubscribe"), None);
    assert!(decoded_text(linked).contains("데이터센터 화재로 전원이 차단되었습니다."));

    let sms = &h.gateway.seen()[0];
    assert_eq!(sms.kind, "LMS");
    assert!(
        sms.text.contains("1335") && sms.text.contains(&unsubscribe),
        "{}",
        sms.text
    );
}

/// The text part of a message, its transfer encoding undone.
pub(crate) fn decoded_text(eml: &str) -> String {
    let message = mail_parser::MessageParser::default()
        .parse(eml.as_bytes())
        .expect("a parsable message");
    message.body_text(0).expect("a text part").into_owned()
}

on_both_backends!(an_incident_update_goes_out_as_the_statutory_notice);

/// SMTP connections are pooled: many messages, at most `pool_size` sessions.
async fn smtp_connections_are_reused(backend: Backend) {
    let Some(h) = harness(backend, |c| c.notify.email.pool_size = 2).await else {
        return;
    };
    let mut ids = Vec::new();
    for n in 0..20 {
        let to = format!("user{n}@example.kr");
        ids.push(
            h.enqueue(
                MessageChannel::Email,
                &to,
                "report_status",
                status_payload(""),
            )
            .await,
        );
    }
    let d = h.dispatcher();
    let round = d.run_once().await.unwrap();
    let first = h.state_of(ids[0]).await;
    assert_eq!(round.sent, 20, "{round:?} {first:?}");
    assert_eq!(h.smtp.messages().len(), 20);
    let sessions = h.smtp.sessions();
    assert!(
        (1..=2).contains(&sessions),
        "{sessions} SMTP sessions for 20 messages"
    );
    // The relay offers PIPELINING: every transaction's commands went out together.
    assert_eq!(h.smtp.pipelined(), 20);
    // Every message id arrived once.
    let mut seen = h.delivered_ids();
    seen.sort();
    let mut expected: Vec<String> = ids.iter().map(Uuid::to_string).collect();
    expected.sort();
    assert_eq!(seen, expected);
}

on_both_backends!(smtp_connections_are_reused);

/// Where the relay offers PIPELINING, `MAIL`, `RCPT` and `DATA` go out together; a refused
/// recipient fails its message alone and the session carries on (one connection for all).
/// Where it does not, each command waits for its answer, and the outcomes are the same.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smtp_pipelines_where_the_relay_offers_it() {
    for pipelining in [true, false] {
        let smtp = async move {
            if pipelining {
                SmtpServer::start().await
            } else {
                SmtpServer::start_serial().await
            }
        };
        let h = harness_on(Backend::Sqlite, smtp, |c| c.notify.email.pool_size = 1)
            .await
            .expect("SQLite needs no server");
        let mut ids = Vec::new();
        for to in ["first@example.kr", "reject@example.kr", "third@example.kr"] {
            let id = h
                .enqueue(
                    MessageChannel::Email,
                    to,
                    "report_status",
                    status_payload(""),
                )
                .await;
            ids.push(id);
        }
        let round = h.dispatcher().run_once().await.unwrap();
        assert_eq!(
            (round.sent, round.failed),
            (2, 1),
            "{pipelining}: {round:?}"
        );
        let refused = h.state_of(ids[1]).await;
        assert_eq!(refused.state, MessageState::Failed);
        assert!(refused.last_error.unwrap().contains("550"));
        let delivered = h.delivered_ids();
        assert_eq!(delivered.len(), 2, "{pipelining}");
        for id in [ids[0], ids[2]] {
            assert!(delivered.contains(&id.to_string()), "{pipelining}: {id}");
        }
        if pipelining {
            assert_eq!(h.smtp.pipelined(), 3);
            assert_eq!(h.smtp.sessions(), 1, "the refusal ended the session");
        } else {
            assert_eq!(h.smtp.pipelined(), 0);
        }
        h.app.stop().await;
    }
}

/// STARTTLS and implicit TLS to a relay whose certificate comes from a private CA
/// (`notify.email.ca_file`); without that CA the relay is not trusted and nothing is sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smtp_over_starttls_and_implicit_tls() {
    for (mode, security) in [
        (SmtpMode::Starttls, SmtpSecurity::Starttls),
        (SmtpMode::Tls, SmtpSecurity::Tls),
    ] {
        let server = SmtpServer::start_with(mode).await;
        let db = TestDb::new(Backend::Sqlite).await.unwrap();
        let (port, ca) = (server.port, server.ca_file());
        let app = TestApp::spawn_with(Arc::new(db), move |c| {
            let e = &mut c.notify.email;
            e.transport = EmailTransportKind::Smtp;
            e.host = "localhost".into();
            e.port = port;
            e.security = security;
            e.ca_file = ca;
            c.notify.dispatcher.enabled = false;
            c.notify.dispatcher.backoff_base_ms = 1;
            c.notify.dispatcher.backoff_max_ms = 5;
        })
        .await;
        let config = &app.state.config;
        let dispatcher = |ca: Option<std::path::PathBuf>| {
            let mut notify = config.notify.clone();
            if let Some(ca) = ca {
                notify.email.ca_file = ca;
            }
            Dispatcher::new(
                &notify,
                &config.http.public_base_url,
                app.store.clone(),
                Arc::clone(&app.state.keys),
                Clock::System,
            )
            .unwrap()
        };
        let enqueue = || async {
            let message = NewMessage {
                id: Uuid::now_v7(),
                channel: MessageChannel::Email,
                template: "report_status".into(),
                lang: "ko".into(),
                recipient: app.state.keys.seal("hong@example.kr"),
                payload: status_payload(""),
                source_kind: "report".into(),
                source_id: None,
                not_before: Utc::now(),
                lease: None,
            };
            app.store
                .enqueue(std::slice::from_ref(&message))
                .await
                .unwrap();
            message.id
        };

        // Only the public roots: the private CA's certificate is refused, the message retried.
        let untrusted = enqueue().await;
        let round = dispatcher(Some(std::path::PathBuf::new()))
            .run_once()
            .await
            .unwrap();
        assert_eq!(round.retried, 1, "{mode:?}: {round:?}");
        let row = app.store.find_message(untrusted).await.unwrap().unwrap();
        assert_eq!(row.state, MessageState::Pending, "{mode:?}");
        assert!(server.messages().is_empty());

        // With the CA configured it goes through.
        let trusted = dispatcher(None);
        let round = round_with_work(&trusted).await;
        let row = app.store.find_message(untrusted).await.unwrap().unwrap();
        assert_eq!(round.sent, 1, "{mode:?}: {round:?} {row:?}");
        assert_eq!(server.messages().len(), 1, "{mode:?}");
        let eml = &server.messages()[0];
        assert_eq!(
            header_value(eml, "X-Reliefline-Message-Id"),
            Some(untrusted.to_string().as_str())
        );
        app.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_outbox_and_case_routes_are_in_the_openapi_document() {
    let app = TestApp::spawn(Backend::Sqlite).await.unwrap();
    let doc = app.openapi().await;
    for (path, method, statuses) in [
        ("/api/v1/outbox/dead", "get", &["200", "401", "422"][..]),
        (
            "/api/v1/outbox/{id}/requeue",
            "post",
            &["200", "401", "404", "422"],
        ),
        (
            "/api/v1/notifications/sms/delivery",
            "post",
            &["204", "401", "404", "415", "422"],
        ),
        (
            "/api/v1/reports/{receipt}/status",
            "post",
            &["200", "401", "404", "422"],
        ),
    ] {
        let responses = &doc["paths"][path][method]["responses"];
        for status in statuses {
            assert!(responses.get(status).is_some(), "{method} {path} {status}");
        }
    }
    app.stop().await;
}
