//! The wire shapes of the intake routes, as the OpenAPI document describes them.
//!
//! Requests are parsed by the field walker in [`super::request`] (it names every bad field);
//! tests check that these shapes and the walker accept exactly the same fields, so the
//! document cannot drift from the code.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use crate::domain::{HarmType, ReportStatus, ReporterType};

/// A harm report.
#[derive(Debug, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({
    "provider": "Kakao",
    "service": "KakaoTalk",
    "reporter_type": "merchant",
    "harm_type": "business_loss",
    "occurred_at": "2022-10-15T15:30:00+09:00",
    "amount_krw": 250000,
    "title": "주문 알림이 오지 않음",
    "description": "카카오톡 채널 주문 알림이 멈춰 매출을 잃었습니다.",
    "reporter": {"name": "홍길동", "phone": "010-1234-5678", "email": "hong@example.kr"},
    "notify": {"sms": true, "email": false},
    "consent": {"personal_info": true}
}))]
pub struct ReportRequest {
    /// Id of a declared incident this report belongs to.
    pub incident_id: Option<Uuid>,
    #[schema(min_length = 1, max_length = 100)]
    pub provider: String,
    #[schema(min_length = 1, max_length = 100)]
    pub service: String,
    pub reporter_type: ReporterType,
    pub harm_type: HarmType,
    /// RFC 3339, not in the future.
    #[schema(format = DateTime)]
    pub occurred_at: Option<String>,
    #[schema(minimum = 0, maximum = 1_000_000_000_000_i64)]
    pub amount_krw: Option<i64>,
    #[schema(max_length = 200)]
    pub title: Option<String>,
    #[schema(min_length = 1, max_length = 5000)]
    pub description: String,
    pub reporter: ReporterRequest,
    pub notify: Option<NotifyRequest>,
    pub consent: ConsentRequest,
}

/// Who reports. At least one of `phone` and `email`.
#[derive(Debug, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReporterRequest {
    #[schema(min_length = 1, max_length = 100)]
    pub name: String,
    /// Korean number in any common form (`010-1234-5678`, `+82 10 1234 5678`, full-width).
    pub phone: Option<String>,
    pub email: Option<String>,
}

/// Which channels the reporter wants to hear back on.
#[derive(Debug, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NotifyRequest {
    pub sms: Option<bool>,
    pub email: Option<bool>,
}

#[derive(Debug, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ConsentRequest {
    /// Must be `true`.
    pub personal_info: bool,
}

/// The answer to an accepted report, given only after it was committed.
#[derive(Debug, Serialize, ToSchema)]
pub struct ReportAccepted {
    /// Crockford base32, e.g. `HR-7K3M-Q9XD-2PZA-8WNE`; case-insensitive on input.
    pub receipt: String,
    /// Always `received`.
    pub status: String,
    pub incident_id: Option<Uuid>,
    #[schema(format = DateTime)]
    pub received_at: String,
}

/// The receipt and the phone number or e-mail address given with the report.
#[derive(Debug, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LookupRequest {
    pub receipt: String,
    pub contact: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct LookupResponse {
    pub receipt: String,
    pub status: ReportStatus,
    pub history: Vec<LookupHistoryItem>,
    /// The result of consultation, once there is one.
    pub result: Option<serde_json::Value>,
    pub incident: Option<serde_json::Value>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct LookupHistoryItem {
    pub status: ReportStatus,
    #[schema(format = DateTime)]
    pub at: String,
    pub note: Option<String>,
}

#[cfg(test)]
mod tests {
    use serde_json::Value;
    use utoipa::OpenApi as _;

    use super::super::request::{
        CONSENT_FIELDS, NOTIFY_FIELDS, REPORT_FIELDS, REPORTER_FIELDS, ValidReport,
    };
    use crate::http::openapi::ApiDoc;

    fn properties(doc: &Value, schema: &str) -> Vec<String> {
        let mut names: Vec<String> = doc["components"]["schemas"][schema]["properties"]
            .as_object()
            .unwrap_or_else(|| panic!("{schema} documented"))
            .keys()
            .cloned()
            .collect();
        names.sort();
        names
    }

    fn sorted(fields: &[&str]) -> Vec<String> {
        let mut names: Vec<String> = fields.iter().map(|f| (*f).to_owned()).collect();
        names.sort();
        names
    }

    #[test]
    fn the_document_and_the_parser_accept_the_same_fields() {
        let doc = serde_json::to_value(ApiDoc::openapi()).unwrap();
        assert_eq!(properties(&doc, "ReportRequest"), sorted(REPORT_FIELDS));
        assert_eq!(properties(&doc, "ReporterRequest"), sorted(REPORTER_FIELDS));
        assert_eq!(properties(&doc, "NotifyRequest"), sorted(NOTIFY_FIELDS));
        assert_eq!(properties(&doc, "ConsentRequest"), sorted(CONSENT_FIELDS));
        let required = &doc["components"]["schemas"]["ReportRequest"]["required"];
        for field in [
            "provider",
            "service",
            "reporter_type",
            "harm_type",
            "description",
        ] {
            assert!(
                required.as_array().unwrap().iter().any(|r| r == field),
                "{field}"
            );
        }
    }

    #[test]
    fn the_documented_example_is_a_valid_report() {
        let doc = serde_json::to_value(ApiDoc::openapi()).unwrap();
        let example = &doc["components"]["schemas"]["ReportRequest"]["example"];
        assert!(example.is_object(), "example documented");
        ValidReport::from_json(example, chrono::Utc::now()).expect("the example validates");
        serde_json::from_value::<super::ReportRequest>(example.clone()).expect("typed shape");
    }
}
