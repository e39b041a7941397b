//! The store contract: the same story, told to SQLite and to PostgreSQL, must end the same way.

use chrono::{TimeZone as _, Utc};
use reliefline::crypto::Keys;
use reliefline::domain::{Channel, HarmType, Receipt, ReportStatus, ReporterType};
use reliefline::store::{
    self, AuditEntry, Conflict, ContactHashes, DynStore, IdempotencyRecord, Lease, MessageChannel,
    MessageState, NewMessage, NewReport, Outcome, ReportWrite, StoreError,
};
use uuid::Uuid;

use crate::helpers::{Backend, TestDb, test_config};
use crate::on_both_backends;

async fn open(backend: Backend) -> Option<(TestDb, DynStore)> {
    let db = TestDb::new(backend).await?;
    let config = test_config(&db);
    let store = store::connect(&config.database).await.unwrap();
    store.migrate().await.unwrap();
    Some((db, store))
}

fn keys() -> Keys {
    Keys::from_master(&[3u8; 32])
}

fn report(n: u32) -> ReportWrite {
    let k = keys();
    let id = Uuid::now_v7();
    let phone = format!("+8210{:08}", n);
    ReportWrite {
        report: NewReport {
            id,
            receipt: Receipt::generate(),
            incident_id: None,
            channel: Channel::Api,
            provider: "Kakao".into(),
            service: "KakaoTalk".into(),
            reporter_type: ReporterType::Merchant,
            harm_type: HarmType::BusinessLoss,
            occurred_at: Some(Utc.with_ymd_and_hms(2022, 10, 15, 6, 30, 0).unwrap()),
            amount_krw: Some(250_000),
            title: Some("주문 알림 중단".into()),
            description: "카카오톡 주문 알림이 오지 않아 영업 손실이 발생했습니다.".into(),
            reporter_name: k.seal("홍길동"),
            phone: Some(k.seal_contact(&phone)),
            email: None,
            notify_sms: true,
            notify_email: false,
            lang: "ko".into(),
            idempotency: None,
            received_at: Utc::now(),
        },
        outbox: vec![NewMessage {
            id: Uuid::now_v7(),
            channel: MessageChannel::Sms,
            template: "receipt".into(),
            lang: "ko".into(),
            recipient: k.seal(&phone),
            payload: serde_json::json!({"receipt": "x"}),
            source_kind: "report".into(),
            source_id: Some(id),
            not_before: Utc::now(),
            lease: None,
        }],
    }
}

async fn migrations_are_idempotent_and_ping_works(backend: Backend) {
    let Some((_db, store)) = open(backend).await else {
        return;
    };
    store.migrate().await.unwrap();
    store.ping().await.unwrap();
    assert_eq!(
        store.backend(),
        match backend {
            Backend::Sqlite => "sqlite",
            Backend::Postgres => "postgres",
        }
    );
}

async fn a_batch_commits_reports_with_history(backend: Backend) {
    let Some((_db, store)) = open(backend).await else {
        return;
    };
    let batch: Vec<_> = (0..250).map(report).collect();
    store.insert_reports(&batch).await.unwrap();

    for w in [&batch[0], &batch[137], &batch[249]] {
        let found = store.find_report(&w.report.receipt).await.unwrap().unwrap();
        assert_eq!(found.id, w.report.id);
        assert_eq!(found.receipt, w.report.receipt);
        assert_eq!(found.status, ReportStatus::Received);
        assert_eq!(
            found.received_at.timestamp_millis(),
            w.report.received_at.timestamp_millis()
        );
        assert_eq!(found.history.len(), 1);
        assert_eq!(found.history[0].status, ReportStatus::Received);
        // What a lookup checks first: the contact hashes alone.
        let hashes = store.contact_hashes(&w.report.receipt).await.unwrap();
        assert_eq!(hashes.phone, w.report.phone.as_ref().map(|p| p.hmac));
        assert_eq!(hashes.email, None);
    }
    let unknown = Receipt::generate();
    assert!(store.find_report(&unknown).await.unwrap().is_none());
    assert_eq!(
        store.contact_hashes(&unknown).await.unwrap(),
        ContactHashes::default()
    );
}

async fn a_conflicting_row_fails_its_whole_batch(backend: Backend) {
    let Some((_db, store)) = open(backend).await else {
        return;
    };
    let first = report(1);
    store
        .insert_reports(std::slice::from_ref(&first))
        .await
        .unwrap();

    let mut clash = report(2);
    clash.report.receipt = first.report.receipt.clone();
    let innocent = report(3);
    let err = store
        .insert_reports(&[innocent.clone(), clash])
        .await
        .unwrap_err();
    assert!(
        matches!(err, StoreError::Conflict(Conflict::Receipt)),
        "{err:?}"
    );
    // All or nothing: the innocent row of the failed batch is not there.
    assert!(
        store
            .find_report(&innocent.report.receipt)
            .await
            .unwrap()
            .is_none()
    );
}

async fn idempotency_keys_are_unique_and_found(backend: Backend) {
    let Some((_db, store)) = open(backend).await else {
        return;
    };
    let mut first = report(1);
    first.report.idempotency = Some(IdempotencyRecord {
        key: "key-123".into(),
        request_hash: [9u8; 32],
    });
    store
        .insert_reports(std::slice::from_ref(&first))
        .await
        .unwrap();

    let found = store.find_idempotent("key-123").await.unwrap().unwrap();
    assert_eq!(found.receipt, first.report.receipt);
    assert_eq!(found.request_hash, [9u8; 32]);
    assert!(store.find_idempotent("other").await.unwrap().is_none());

    let mut second = report(2);
    second.report.idempotency = first.report.idempotency.clone();
    let err = store.insert_reports(&[second]).await.unwrap_err();
    assert!(
        matches!(err, StoreError::Conflict(Conflict::IdempotencyKey)),
        "{err:?}"
    );
}

async fn a_report_for_an_unknown_incident_is_refused(backend: Backend) {
    let Some((_db, store)) = open(backend).await else {
        return;
    };
    let mut orphan = report(1);
    orphan.report.incident_id = Some(Uuid::now_v7());
    let err = store.insert_reports(&[orphan]).await.unwrap_err();
    assert!(matches!(err, StoreError::MissingReference), "{err:?}");
}

async fn audit_entries_are_kept_in_order(backend: Backend) {
    let Some((_db, store)) = open(backend).await else {
        return;
    };
    for (i, action) in ["incident.declare", "incident.update", "mode.set"]
        .iter()
        .enumerate()
    {
        store
            .append_audit(&AuditEntry {
                id: Uuid::now_v7(),
                at: Utc
                    .timestamp_millis_opt(1_700_000_000_000 + i as i64)
                    .unwrap(),
                actor: "token:admin".into(),
                action: (*action).into(),
                target: Some("incident/1".into()),
                detail: Some(serde_json::json!({"step": i})),
                client_addr: Some("127.0.0.1".into()),
            })
            .await
            .unwrap();
    }
    let recent = store.recent_audit(2).await.unwrap();
    assert_eq!(recent.len(), 2);
    assert_eq!(recent[0].action, "mode.set");
    assert_eq!(recent[1].action, "incident.update");
    assert_eq!(recent[0].detail, Some(serde_json::json!({"step": 2})));
}

on_both_backends!(
    migrations_are_idempotent_and_ping_works,
    a_batch_commits_reports_with_history,
    a_conflicting_row_fails_its_whole_batch,
    idempotency_keys_are_unique_and_found,
    a_report_for_an_unknown_incident_is_refused,
    audit_entries_are_kept_in_order,
    a_group_of_outcomes_is_recorded_only_where_the_lease_is_held,
    claims_in_the_same_instant_take_different_messages_whole,
    a_message_written_leased_is_held_until_its_lease_lapses,
);

/// Claims by one owner with the same clock and lease take different messages, and each comes
/// back whole: SQLite reads a claim back as one JSON value (blobs in hex, a missing source as
/// null), PostgreSQL as rows; both must give what was enqueued.
async fn claims_in_the_same_instant_take_different_messages_whole(backend: Backend) {
    let Some((_db, store)) = open(backend).await else {
        return;
    };
    let mut messages: Vec<NewMessage> = (0..5).flat_map(|n| report(n).outbox).collect();
    messages[4].source_id = None;
    messages[4].payload = serde_json::json!({"quote": "\"따옴표\" and \\ 역슬래시", "n": [1, 2]});
    store.enqueue(&messages).await.unwrap();
    let now = Utc::now();
    let lease = now + chrono::Duration::seconds(60);
    let mut claimed = Vec::new();
    for limit in [2, 2, 10] {
        let batch = store
            .claim_due("a", MessageChannel::Sms, now, lease, limit)
            .await
            .unwrap();
        claimed.push(batch);
    }
    let sizes: Vec<usize> = claimed.iter().map(Vec::len).collect();
    assert_eq!(sizes, [2, 2, 1]);
    let mut seen = std::collections::HashSet::new();
    for got in claimed.iter().flatten() {
        assert!(seen.insert(got.id), "{} claimed twice", got.id);
        let sent = messages
            .iter()
            .find(|m| m.id == got.id)
            .expect("an enqueued message");
        assert_eq!(got.channel, MessageChannel::Sms);
        assert_eq!(got.template, sent.template);
        assert_eq!(got.lang, sent.lang);
        assert_eq!(got.recipient, sent.recipient);
        assert_eq!(got.payload, sent.payload);
        assert_eq!(got.source_kind, sent.source_kind);
        assert_eq!(got.source_id, sent.source_id);
        assert_eq!(got.state, MessageState::Sending);
        assert_eq!(got.attempts, 1);
        assert!(got.next_attempt_at >= lease - chrono::Duration::milliseconds(1));
        assert_eq!(got.last_error, None);
        assert_eq!(got.sent_at, None);
    }
    assert!(
        store
            .claim_due("a", MessageChannel::Sms, now, lease, 10)
            .await
            .unwrap()
            .is_empty()
    );
}

/// A report's confirmation written already leased (handed to the local dispatcher) is a claimed
/// row like any other: no claim takes it while the lease holds, not even a claim by the same
/// owner asking for the same lease end (SQLite reads a claim back by owner and lease end), and
/// once the lease lapses anyone may take it.
async fn a_message_written_leased_is_held_until_its_lease_lapses(backend: Backend) {
    let Some((_db, store)) = open(backend).await else {
        return;
    };
    let ids =
        |claimed: &[store::OutboxMessage]| -> Vec<Uuid> { claimed.iter().map(|m| m.id).collect() };
    let pending: Vec<NewMessage> = (0..2).flat_map(|n| report(n).outbox).collect();
    let now = Utc::now();
    let wanted = now + chrono::Duration::seconds(60);
    store.enqueue(&pending[..1]).await.unwrap();
    let before = store
        .claim_due("a", MessageChannel::Sms, now, wanted, 10)
        .await
        .unwrap();
    assert_eq!(ids(&before), [pending[0].id]);

    let mut leased = report(7);
    let until = store.lease_end(wanted);
    let (until_ms, wanted_ms) = (until.timestamp_millis(), wanted.timestamp_millis());
    assert!(until_ms >= wanted_ms, "{until} is before {wanted}");
    if backend == Backend::Sqlite {
        assert!(until_ms > wanted_ms, "the claim before ended at {wanted}");
    }
    leased.outbox[0].lease = Some(Lease {
        owner: "a".into(),
        until,
    });
    store
        .insert_reports(std::slice::from_ref(&leased))
        .await
        .unwrap();
    store.enqueue(&pending[1..]).await.unwrap();
    let after = store
        .claim_due("a", MessageChannel::Sms, now, wanted, 10)
        .await
        .unwrap();
    assert_eq!(ids(&after), [pending[1].id], "a claim gets what it took");

    let message = leased.outbox[0].clone();
    let row = store.find_message(message.id).await.unwrap().unwrap();
    assert_eq!((row.state, row.attempts), (MessageState::Sending, 1));
    assert_eq!(
        row.next_attempt_at.timestamp_millis(),
        until.timestamp_millis()
    );
    let (view, view_until) = message.into_claimed().expect("written leased");
    assert_eq!(view_until, until);
    assert_eq!(
        (view.id, view.state, view.attempts),
        (row.id, row.state, row.attempts)
    );
    assert_eq!(
        (
            &view.recipient,
            &view.payload,
            &view.template,
            view.source_id
        ),
        (&row.recipient, &row.payload, &row.template, row.source_id)
    );
    assert!(report(8).outbox[0].clone().into_claimed().is_none());

    // Another owner's claim at `at`, leasing for a minute.
    let claim_by_b = |at: chrono::DateTime<Utc>| {
        store.claim_due(
            "b",
            MessageChannel::Sms,
            at,
            at + chrono::Duration::seconds(60),
            10,
        )
    };
    // Held: another owner finds nothing due while the lease runs.
    let none = claim_by_b(now + chrono::Duration::seconds(30))
        .await
        .unwrap();
    assert!(none.is_empty(), "{:?}", ids(&none));
    // Lapsed (the process died before sending it): due to anyone, a second attempt.
    let retaken = claim_by_b(until + chrono::Duration::minutes(5))
        .await
        .unwrap();
    let again = retaken
        .iter()
        .find(|m| m.id == row.id)
        .expect("due once the lease lapsed");
    assert_eq!(again.attempts, 2);
}

/// One group, three answers: the two messages `a` holds are recorded, the one `b` holds and an
/// id nobody holds are not, and nothing of `b`'s changes.
async fn a_group_of_outcomes_is_recorded_only_where_the_lease_is_held(backend: Backend) {
    let Some((_db, store)) = open(backend).await else {
        return;
    };
    let messages: Vec<NewMessage> = (0..3).flat_map(|n| report(n).outbox).collect();
    store.enqueue(&messages).await.unwrap();
    let now = Utc::now();
    let lease = now + chrono::Duration::seconds(60);
    let held_by_a = store
        .claim_due("a", MessageChannel::Sms, now, lease, 2)
        .await
        .unwrap();
    let held_by_b = store
        .claim_due("b", MessageChannel::Sms, now, lease, 10)
        .await
        .unwrap();
    assert_eq!((held_by_a.len(), held_by_b.len()), (2, 1));
    let sent = || Outcome::Sent {
        gateway_ref: Some("gw-1".into()),
    };
    let group = vec![
        (held_by_a[0].id, sent()),
        (held_by_b[0].id, sent()),
        (Uuid::now_v7(), sent()),
        (held_by_a[1].id, sent()),
    ];
    let recorded = store
        .record_outcomes("a", &group, Utc::now())
        .await
        .unwrap();
    assert_eq!(recorded, [true, false, false, true]);
    for (message, state, gateway_ref) in [
        (&held_by_a[0], MessageState::Sent, Some("gw-1")),
        (&held_by_a[1], MessageState::Sent, Some("gw-1")),
        (&held_by_b[0], MessageState::Sending, None),
    ] {
        let row = store.find_message(message.id).await.unwrap().unwrap();
        assert_eq!(row.state, state, "{}", message.id);
        assert_eq!(row.gateway_ref.as_deref(), gateway_ref);
    }
    // An empty group records nothing and is no error.
    assert!(
        store
            .record_outcomes("a", &[], Utc::now())
            .await
            .unwrap()
            .is_empty()
    );
}

/// On SQLite the writer never checkpoints; a connection of its own copies the log into the
/// database file on a timer. The file only grows by checkpoints, so it growing while nothing is
/// closed shows the checkpointer at work (without it the rows would sit in the log for ever).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_checkpoints_run_beside_the_writer() {
    let db = TestDb::new(Backend::Sqlite)
        .await
        .expect("SQLite needs no server");
    let mut config = test_config(&db);
    config.database.sqlite_checkpoint_ms = 20;
    let store = store::connect(&config.database).await.unwrap();
    store.migrate().await.unwrap();
    let file = db.dir().join("reliefline.db");
    let wal = db.dir().join("reliefline.db-wal");
    let size = |p: &std::path::Path| std::fs::metadata(p).map_or(0, |m| m.len());
    let before = size(&file);
    let mut receipts = Vec::new();
    for batch in 0..20 {
        let writes: Vec<_> = (0..100).map(|n| report(batch * 100 + n)).collect();
        receipts.extend(writes.iter().map(|w| w.report.receipt.clone()));
        store.insert_reports(&writes).await.unwrap();
    }
    assert!(size(&wal) > 0, "the writes went to the log");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while size(&file) <= before + 512 * 1024 {
        assert!(
            std::time::Instant::now() < deadline,
            "the database file did not grow beyond {before} bytes: no checkpoint ran"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    for receipt in [&receipts[0], &receipts[receipts.len() - 1]] {
        assert!(store.find_report(receipt).await.unwrap().is_some());
    }
    store.close().await;
}
