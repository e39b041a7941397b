//! A consultant moves a report to a new status: the lookup shows it with the note, the change is
//! audited, and whatever cannot be changed is refused with nothing written.

use reliefline::domain::ReportStatus;
use reqwest::StatusCode;
use secrecy::SecretString;
use serde_json::{Value, json};

use crate::helpers::{Backend, TestApp, TestDb, sample_report};
use crate::on_both_backends;

const TOKEN: &str = "consultant-token-for-tests-0123456789";

async fn app(backend: Backend) -> Option<TestApp> {
    let db = TestDb::new(backend).await?;
    Some(
        TestApp::spawn_with(std::sync::Arc::new(db), |c| {
            c.admin.token = SecretString::from(TOKEN);
        })
        .await,
    )
}

impl TestApp {
    async fn change_status(
        &self,
        receipt: &str,
        body: &Value,
        token: Option<&str>,
    ) -> reqwest::Response {
        let mut request = self
            .client
            .post(self.url(&format!("/api/v1/reports/{receipt}/status")))
            .json(body);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        request.send().await.unwrap()
    }

    async fn receipt_of_new_report(&self, report: &Value) -> String {
        let r = self.submit(report).await;
        assert_eq!(r.status(), StatusCode::CREATED);
        r.json::<Value>().await.unwrap()["receipt"]
            .as_str()
            .unwrap()
            .to_owned()
    }
}

async fn error_of(r: reqwest::Response, status: StatusCode) -> Value {
    assert_eq!(r.status(), status);
    r.json().await.unwrap()
}

async fn a_status_change_shows_in_the_lookup_with_its_note(backend: Backend) {
    let Some(app) = app(backend).await else {
        return;
    };
    let receipt = app.receipt_of_new_report(&sample_report()).await;
    // Staff may type the receipt as read over the phone: any case, no dashes.
    let typed = receipt.replace('-', "").to_lowercase();
    let r = app
        .change_status(
            &typed,
            &json!({"status": "in_review", "note": "상담원이 배정되었습니다."}),
            Some(TOKEN),
        )
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.headers()["cache-control"], "no-store");
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["receipt"], receipt.as_str());
    assert_eq!(body["status"], "in_review");
    assert_eq!(body["previous_status"], "received");
    assert_eq!(body["note"], "상담원이 배정되었습니다.");
    // The sample report asks for notices by SMS only.
    assert_eq!(body["notices"], 1);

    let r = app
        .change_status(&receipt, &json!({"status": "resolved"}), Some(TOKEN))
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(
        r.json::<Value>().await.unwrap()["previous_status"],
        "in_review"
    );

    let looked_up: Value = app
        .lookup(&receipt, "010-1234-5678")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(looked_up["status"], "resolved");
    let history: Vec<(&str, &Value)> = looked_up["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| (h["status"].as_str().unwrap(), &h["note"]))
        .collect();
    assert_eq!(
        history,
        [
            ("received", &Value::Null),
            ("in_review", &json!("상담원이 배정되었습니다.")),
            ("resolved", &Value::Null),
        ]
    );

    let stored = app
        .store
        .find_report(&receipt.parse().unwrap())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(stored.status, ReportStatus::Resolved);
    let audit = app.store.recent_audit(10).await.unwrap();
    let changes: Vec<_> = audit
        .iter()
        .filter(|a| a.action == "report.status")
        .collect();
    assert_eq!(changes.len(), 2, "{audit:?}");
    assert!(changes.iter().all(|a| a.actor.starts_with("token:")));
    assert_eq!(
        changes[0].target.as_deref(),
        Some(format!("report/{receipt}").as_str())
    );
    assert_eq!(changes[0].detail, Some(json!({"status": "resolved"})));
}

async fn changes_that_cannot_be_made_are_refused_and_change_nothing(backend: Backend) {
    let Some(app) = app(backend).await else {
        return;
    };
    let receipt = app.receipt_of_new_report(&sample_report()).await;
    let progress = |app: &TestApp| {
        let store = app.store.clone();
        let receipt = receipt.clone();
        async move {
            let report = store
                .find_report(&receipt.parse().unwrap())
                .await
                .unwrap()
                .unwrap();
            let outbox = store.outbox_progress(report.id).await.unwrap().total();
            (report.status, report.history.len(), outbox)
        }
    };
    let before = progress(&app).await;
    assert_eq!(before, (ReportStatus::Received, 1, 1));

    // No token, a wrong token.
    let change = json!({"status": "in_review"});
    for token in [None, Some("not-the-token-0123456789")] {
        let body = error_of(
            app.change_status(&receipt, &change, token).await,
            StatusCode::UNAUTHORIZED,
        )
        .await;
        assert_eq!(body["error"], "unauthorized");
    }
    // Unknown or malformed receipts name no report.
    for unknown in ["HR-0000-0000-0000-0000", "not-a-receipt"] {
        let body = error_of(
            app.change_status(unknown, &change, Some(TOKEN)).await,
            StatusCode::NOT_FOUND,
        )
        .await;
        assert_eq!(body["error"], "not_found");
    }
    // Bad fields, each named; unknown fields refused.
    let body = error_of(
        app.change_status(
            &receipt,
            &json!({"status": "received", "note": "x".repeat(2001)}),
            Some(TOKEN),
        )
        .await,
        StatusCode::UNPROCESSABLE_ENTITY,
    )
    .await;
    assert_eq!(body["error"], "validation_failed");
    assert!(body["fields"]["status"].is_string(), "{body}");
    assert!(body["fields"]["note"].is_string(), "{body}");
    let r = app
        .change_status(
            &receipt,
            &json!({"status": "in_review", "public": false}),
            Some(TOKEN),
        )
        .await;
    assert!(r.status().is_client_error(), "{}", r.status());
    // Not JSON.
    let r = app
        .client
        .post(app.url(&format!("/api/v1/reports/{receipt}/status")))
        .bearer_auth(TOKEN)
        .body("{\"status\": ")
        .header("content-type", "application/json")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert_eq!(progress(&app).await, before);

    // A closed report takes no more changes; a change must change something.
    let r = app
        .change_status(&receipt, &json!({"status": "closed"}), Some(TOKEN))
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    let closed = progress(&app).await;
    assert_eq!(closed, (ReportStatus::Closed, 2, 2));
    for status in ["closed", "in_review"] {
        let body = error_of(
            app.change_status(&receipt, &json!({"status": status}), Some(TOKEN))
                .await,
            StatusCode::UNPROCESSABLE_ENTITY,
        )
        .await;
        assert_eq!(body["error"], "status_refused");
        assert!(
            body["message"].as_str().unwrap().contains("closed"),
            "{body}"
        );
    }
    assert_eq!(progress(&app).await, closed);
}

on_both_backends!(
    a_status_change_shows_in_the_lookup_with_its_note,
    changes_that_cannot_be_made_are_refused_and_change_nothing,
);
