//! The incident store contract, told to SQLite and to PostgreSQL alike.

use chrono::{Duration, TimeZone as _, Utc};
use reliefline::crypto::Keys;
use reliefline::domain::{Channel, HarmType, Receipt, ReporterType};
use reliefline::incident::model::{
    IncidentState, IncidentStatus, Localized, Origin, Severity, StateFilter,
};
use reliefline::store::{
    self, AuditEntry, Confirmation, DynStore, NewIncident, NewIncidentUpdate, NewReport,
    ReportWrite, Timestamp, Transition,
};
use uuid::Uuid;

use crate::helpers::{Backend, TestDb, test_config};
use crate::on_both_backends;

async fn open(backend: Backend) -> Option<(TestDb, DynStore)> {
    let db = TestDb::new(backend).await?;
    let store = store::connect(&test_config(&db).database).await.unwrap();
    store.migrate().await.unwrap();
    Some((db, store))
}

fn t(minutes: i64) -> Timestamp {
    Utc.with_ymd_and_hms(2022, 10, 15, 6, 30, 0).unwrap() + Duration::minutes(minutes)
}

fn audit(action: &str, at: Timestamp) -> AuditEntry {
    AuditEntry {
        id: Uuid::now_v7(),
        at,
        actor: "token:0a1b2c3d".into(),
        action: action.into(),
        target: None,
        detail: Some(serde_json::json!({"step": action})),
        client_addr: Some("127.0.0.1".into()),
    }
}

fn update(id: Uuid, status: IncidentStatus, at: Timestamp) -> NewIncidentUpdate {
    NewIncidentUpdate {
        id: Uuid::now_v7(),
        incident_id: id,
        status,
        message: Localized::new(format!("{status} 안내"), format!("{status} notice")),
        actor: "token:0a1b2c3d".into(),
        at,
    }
}

fn declared(started: Timestamp) -> NewIncident {
    let id = Uuid::now_v7();
    NewIncident {
        id,
        title: Localized::new("카카오 서비스 장애", "Kakao services outage"),
        provider: Some("Kakao".into()),
        services: vec!["KakaoTalk".into(), "Kakao T".into()],
        severity: Severity::Critical,
        origin: Origin::Declared,
        confirmed: true,
        started_at: started,
        first_update: update(
            id,
            IncidentStatus::Investigating,
            started + Duration::minutes(5),
        ),
    }
}

fn surge(at: Timestamp) -> NewIncident {
    let id = Uuid::now_v7();
    NewIncident {
        id,
        title: Localized::new("신고 급증 감지 (확인 전)", "Surge in reports detected"),
        provider: None,
        services: vec![],
        severity: Severity::Major,
        origin: Origin::Surge,
        confirmed: false,
        started_at: at,
        first_update: NewIncidentUpdate {
            actor: "system:surge".into(),
            ..update(id, IncidentStatus::Unconfirmed, at)
        },
    }
}

fn report_for(incident: Option<Uuid>) -> ReportWrite {
    let keys = Keys::from_master(&[5u8; 32]);
    ReportWrite {
        report: NewReport {
            id: Uuid::now_v7(),
            receipt: Receipt::generate(),
            incident_id: incident,
            channel: Channel::Api,
            provider: "Kakao".into(),
            service: "KakaoTalk".into(),
            reporter_type: ReporterType::Individual,
            harm_type: HarmType::ServiceUnavailable,
            occurred_at: None,
            amount_krw: None,
            title: None,
            description: "메시지를 보낼 수 없습니다.".into(),
            reporter_name: keys.seal("홍길동"),
            phone: None,
            email: Some(keys.seal_contact("hong@example.kr")),
            notify_sms: false,
            notify_email: false,
            lang: "ko".into(),
            idempotency: None,
            received_at: Utc::now(),
        },
        outbox: vec![],
    }
}

async fn an_incident_is_created_with_its_first_update(backend: Backend) {
    let Some((_db, store)) = open(backend).await else {
        return;
    };
    let new = declared(t(0));
    store
        .create_incident(&new, &audit("incident.declare", t(5)))
        .await
        .unwrap();

    let record = store.find_incident(new.id).await.unwrap().unwrap();
    let i = &record.incident;
    assert_eq!(i.id, new.id);
    assert_eq!(i.title, new.title);
    assert_eq!(i.provider.as_deref(), Some("Kakao"));
    assert_eq!(i.services, ["KakaoTalk", "Kakao T"]);
    assert_eq!(i.severity, Severity::Critical);
    assert_eq!(i.state, IncidentState::Open);
    assert_eq!(i.status, IncidentStatus::Investigating);
    assert_eq!(i.origin, Origin::Declared);
    assert!(i.confirmed);
    assert_eq!(i.started_at, t(0));
    assert_eq!(i.resolved_at, None);
    assert_eq!(i.created_at, t(5));
    assert_eq!(record.updates.len(), 1);
    assert_eq!(record.updates[0].message, new.first_update.message);
    assert_eq!(record.updates[0].actor, "token:0a1b2c3d");

    assert!(store.find_incident(Uuid::now_v7()).await.unwrap().is_none());
    let audit = store.recent_audit(10).await.unwrap();
    assert_eq!(audit.len(), 1);
    assert_eq!(audit[0].action, "incident.declare");
}

async fn updates_follow_the_lifecycle_and_resolve_closes(backend: Backend) {
    let Some((_db, store)) = open(backend).await else {
        return;
    };
    let new = declared(t(0));
    let id = new.id;
    store
        .create_incident(&new, &audit("incident.declare", t(5)))
        .await
        .unwrap();

    for (minute, status) in [
        (30, IncidentStatus::Identified),
        (60, IncidentStatus::Monitoring),
    ] {
        let applied = store
            .append_incident_update(
                &update(id, status, t(minute)),
                &audit("incident.update", t(minute)),
            )
            .await
            .unwrap();
        let Transition::Applied(incident) = applied else {
            panic!("{status} refused: {applied:?}");
        };
        assert_eq!(incident.status, status);
        assert_eq!(incident.state, IncidentState::Open);
        assert_eq!(incident.updated_at, t(minute));
    }
    let resolved = store
        .append_incident_update(
            &update(id, IncidentStatus::Resolved, t(300)),
            &audit("incident.update", t(300)),
        )
        .await
        .unwrap();
    let Transition::Applied(incident) = resolved else {
        panic!("resolve refused: {resolved:?}");
    };
    assert_eq!(incident.state, IncidentState::Resolved);
    assert_eq!(incident.resolved_at, Some(t(300)));

    // Closed: refused, and neither an update nor an audit entry is written.
    let late = store
        .append_incident_update(
            &update(id, IncidentStatus::Monitoring, t(400)),
            &audit("incident.update", t(400)),
        )
        .await
        .unwrap();
    assert!(
        matches!(&late, Transition::Refused(i) if i.state == IncidentState::Resolved),
        "{late:?}"
    );
    let record = store.find_incident(id).await.unwrap().unwrap();
    let statuses: Vec<_> = record.updates.iter().map(|u| u.status).collect();
    assert_eq!(
        statuses,
        [
            IncidentStatus::Investigating,
            IncidentStatus::Identified,
            IncidentStatus::Monitoring,
            IncidentStatus::Resolved
        ]
    );
    assert_eq!(store.recent_audit(100).await.unwrap().len(), 4);

    let missing = store
        .append_incident_update(
            &update(Uuid::now_v7(), IncidentStatus::Monitoring, t(400)),
            &audit("incident.update", t(400)),
        )
        .await
        .unwrap();
    assert_eq!(missing, Transition::NotFound);
    assert_eq!(store.recent_audit(100).await.unwrap().len(), 4);
}

async fn listings_filter_by_state_newest_first(backend: Backend) {
    let Some((_db, store)) = open(backend).await else {
        return;
    };
    let first = declared(t(0));
    let second = declared(t(10));
    let third = surge(t(20));
    for new in [&first, &second, &third] {
        store
            .create_incident(new, &audit("incident.declare", t(30)))
            .await
            .unwrap();
    }
    store
        .append_incident_update(
            &update(first.id, IncidentStatus::Resolved, t(40)),
            &audit("incident.update", t(40)),
        )
        .await
        .unwrap();

    let ids = |list: Vec<store::Incident>| list.into_iter().map(|i| i.id).collect::<Vec<_>>();
    assert_eq!(
        ids(store.list_incidents(StateFilter::All, 100).await.unwrap()),
        [third.id, second.id, first.id]
    );
    assert_eq!(
        ids(store.list_incidents(StateFilter::Open, 100).await.unwrap()),
        [third.id, second.id]
    );
    assert_eq!(
        ids(store
            .list_incidents(StateFilter::Resolved, 100)
            .await
            .unwrap()),
        [first.id]
    );
    assert_eq!(
        ids(store.list_incidents(StateFilter::All, 2).await.unwrap()),
        [third.id, second.id]
    );

    let open = store.open_incidents().await.unwrap();
    assert_eq!(open.len(), 2);
    assert_eq!(open[0].incident.id, third.id);
    assert_eq!(open[0].incident.provider, None);
    assert_eq!(
        open[0].latest_update().unwrap().status,
        IncidentStatus::Unconfirmed
    );
    assert_eq!(open[1].updates.len(), 1);

    // Clocks: open incidents, and resolved ones only if resolved recently enough.
    let clocked = ids(store.incidents_with_clocks(t(40)).await.unwrap());
    assert_eq!(clocked, [third.id, second.id, first.id]);
    let clocked = ids(store.incidents_with_clocks(t(41)).await.unwrap());
    assert_eq!(clocked, [third.id, second.id]);
}

async fn a_surge_is_confirmed_or_dismissed_once(backend: Backend) {
    let Some((_db, store)) = open(backend).await else {
        return;
    };
    let confirmed = surge(t(0));
    let dismissed = surge(t(1));
    for new in [&confirmed, &dismissed] {
        store
            .create_incident(new, &audit("incident.surge_open", t(2)))
            .await
            .unwrap();
    }

    // An unconfirmed surge takes no lifecycle updates.
    let early = store
        .append_incident_update(
            &update(confirmed.id, IncidentStatus::Identified, t(3)),
            &audit("incident.update", t(3)),
        )
        .await
        .unwrap();
    assert!(
        matches!(&early, Transition::Refused(i) if !i.confirmed),
        "{early:?}"
    );

    let confirmation = Confirmation {
        update: update(confirmed.id, IncidentStatus::Investigating, t(5)),
        title: Some(Localized {
            ko: "네이버 로그인 장애".into(),
            en: None,
        }),
        provider: Some("Naver".into()),
        services: Some(vec!["Naver Login".into()]),
        severity: None,
    };
    let done = store
        .confirm_incident(&confirmation, &audit("incident.confirm", t(5)))
        .await
        .unwrap();
    let Transition::Applied(incident) = done else {
        panic!("confirm refused: {done:?}");
    };
    assert!(incident.confirmed);
    assert_eq!(incident.status, IncidentStatus::Investigating);
    assert_eq!(incident.title.ko, "네이버 로그인 장애");
    assert_eq!(
        incident.title.en, None,
        "a new title replaces both languages"
    );
    assert_eq!(incident.provider.as_deref(), Some("Naver"));
    assert_eq!(incident.services, ["Naver Login"]);
    assert_eq!(
        incident.severity,
        Severity::Major,
        "unchanged when not given"
    );
    assert_eq!(incident.origin, Origin::Surge);

    let again = store
        .confirm_incident(&confirmation, &audit("incident.confirm", t(6)))
        .await
        .unwrap();
    assert!(matches!(again, Transition::Refused(_)), "{again:?}");
    let not_dismissable = store
        .dismiss_incident(
            &update(confirmed.id, IncidentStatus::Dismissed, t(6)),
            &audit("incident.dismiss", t(6)),
        )
        .await
        .unwrap();
    assert!(matches!(not_dismissable, Transition::Refused(_)));

    let gone = store
        .dismiss_incident(
            &update(dismissed.id, IncidentStatus::Dismissed, t(7)),
            &audit("incident.dismiss", t(7)),
        )
        .await
        .unwrap();
    let Transition::Applied(incident) = gone else {
        panic!("dismiss refused: {gone:?}");
    };
    assert_eq!(incident.state, IncidentState::Dismissed);
    assert_eq!(incident.status, IncidentStatus::Dismissed);
    assert_eq!(incident.resolved_at, None);
    let record = store.find_incident(dismissed.id).await.unwrap().unwrap();
    assert_eq!(record.updates.len(), 2);

    let open = store.list_incidents(StateFilter::Open, 10).await.unwrap();
    assert_eq!(open.len(), 1);
    let listed = store
        .list_incidents(StateFilter::Dismissed, 10)
        .await
        .unwrap();
    assert_eq!(listed.len(), 1);
    // Audit: two surge openings, one confirmation, one dismissal; refusals wrote nothing.
    assert_eq!(store.recent_audit(100).await.unwrap().len(), 4);
}

async fn linked_reports_are_counted(backend: Backend) {
    let Some((_db, store)) = open(backend).await else {
        return;
    };
    let a = declared(t(0));
    let b = declared(t(1));
    for new in [&a, &b] {
        store
            .create_incident(new, &audit("incident.declare", t(2)))
            .await
            .unwrap();
    }
    let batch: Vec<_> = (0..5)
        .map(|i| report_for(Some(if i < 3 { a.id } else { b.id })))
        .chain([report_for(None)])
        .collect();
    store.insert_reports(&batch).await.unwrap();
    assert_eq!(store.count_incident_reports(a.id).await.unwrap(), 3);
    assert_eq!(store.count_incident_reports(b.id).await.unwrap(), 2);
    assert_eq!(
        store.count_incident_reports(Uuid::now_v7()).await.unwrap(),
        0
    );
}

on_both_backends!(
    an_incident_is_created_with_its_first_update,
    updates_follow_the_lifecycle_and_resolve_closes,
    listings_filter_by_state_newest_first,
    a_surge_is_confirmed_or_dismissed_once,
    linked_reports_are_counted,
);
