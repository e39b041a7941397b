//! The report form as a person fills it in: every field kept as typed (so a refused submission
//! comes back intact), turned into the API's JSON for the one validation path, and the
//! validator's findings placed next to their fields in the page's language.

use std::collections::BTreeMap;

use serde_json::{Map, Value, json};

use super::i18n::Text;
use crate::intake::FieldErrors;

/// Form fields, as typed. Check boxes are `true` when ticked.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReportForm {
    pub incident_id: String,
    pub provider: String,
    pub service: String,
    pub reporter_type: String,
    pub harm_type: String,
    pub occurred_at: String,
    pub amount: String,
    pub title: String,
    pub description: String,
    pub name: String,
    pub phone: String,
    pub email: String,
    pub notify_sms: bool,
    pub notify_email: bool,
    pub consent: bool,
    /// The hidden idempotency key: a double submit or a retry gets the first receipt.
    pub idem: String,
    pub csrf: String,
}

/// Idempotency keys of the form are in their own namespace, apart from API clients' keys.
pub const IDEMPOTENCY_PREFIX: &str = "form-";

/// A fresh idempotency key for a new form.
pub fn new_idempotency_key() -> String {
    let mut bytes = [0u8; 16];
    rand::fill(&mut bytes);
    format!("{IDEMPOTENCY_PREFIX}{}", hex::encode(bytes))
}

impl ReportForm {
    /// Read `application/x-www-form-urlencoded` pairs; unknown names are ignored, as browsers
    /// send what the page had.
    pub fn from_pairs(pairs: Vec<(String, String)>) -> Self {
        let mut form = Self::default();
        for (name, value) in pairs {
            let slot = match name.as_str() {
                "incident_id" => &mut form.incident_id,
                "provider" => &mut form.provider,
                "service" => &mut form.service,
                "reporter_type" => &mut form.reporter_type,
                "harm_type" => &mut form.harm_type,
                "occurred_at" => &mut form.occurred_at,
                "amount" => &mut form.amount,
                "title" => &mut form.title,
                "description" => &mut form.description,
                "name" => &mut form.name,
                "phone" => &mut form.phone,
                "email" => &mut form.email,
                "idem" => &mut form.idem,
                "csrf" => &mut form.csrf,
                "notify_sms" => {
                    form.notify_sms = true;
                    continue;
                }
                "notify_email" => {
                    form.notify_email = true;
                    continue;
                }
                "consent" => {
                    form.consent = true;
                    continue;
                }
                _ => continue,
            };
            *slot = value;
        }
        form
    }

    /// The report as `POST /api/v1/reports` takes it, so both channels share one validator.
    /// Blank optional fields are left out; the form's own formats (a `datetime-local` in
    /// Korean time, an amount with separators) are brought to the API's.
    pub fn to_json(&self) -> Value {
        let mut body = Map::new();
        let mut put = |key: &str, value: &str| {
            let value = value.trim();
            if !value.is_empty() {
                body.insert(key.to_owned(), Value::String(value.to_owned()));
            }
        };
        put("incident_id", &self.incident_id);
        put("provider", &self.provider);
        put("service", &self.service);
        put("reporter_type", &self.reporter_type);
        put("harm_type", &self.harm_type);
        put("occurred_at", &occurred_at_rfc3339(&self.occurred_at));
        put("title", &self.title);
        put("description", &self.description);
        let amount: String = self
            .amount
            .chars()
            .filter(|c| !matches!(c, ',' | ' ' | '_' | '원'))
            .collect();
        if !amount.is_empty() {
            let value = amount
                .parse::<i64>()
                .map_or_else(|_| Value::String(amount.clone()), Value::from);
            body.insert("amount_krw".into(), value);
        }
        let mut reporter = Map::new();
        for (key, value) in [
            ("name", &self.name),
            ("phone", &self.phone),
            ("email", &self.email),
        ] {
            if !value.trim().is_empty() {
                reporter.insert(key.into(), Value::String(value.trim().to_owned()));
            }
        }
        body.insert("reporter".into(), Value::Object(reporter));
        body.insert(
            "notify".into(),
            json!({"sms": self.notify_sms, "email": self.notify_email}),
        );
        body.insert("consent".into(), json!({"personal_info": self.consent}));
        Value::Object(body)
    }
}

/// `2022-10-15T15:30` (what a `datetime-local` input sends) is Korean time; anything else is
/// passed on for the validator to judge.
fn occurred_at_rfc3339(input: &str) -> String {
    let input = input.trim();
    for format in ["%Y-%m-%dT%H:%M", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%d %H:%M"] {
        if let Ok(local) = chrono::NaiveDateTime::parse_from_str(input, format) {
            return format!("{}+09:00", local.format("%Y-%m-%dT%H:%M:%S"));
        }
    }
    input.to_owned()
}

/// Form field name → what to show next to it.
pub type PageErrors = BTreeMap<&'static str, &'static str>;

/// Place the validator's findings (by JSON path) next to the form's fields, in words of the
/// page's language.
pub fn page_errors(errors: &FieldErrors, t: &Text) -> PageErrors {
    let mut out = PageErrors::new();
    for (path, detail) in errors {
        let field = match path.as_str() {
            "incident_id" => "incident_id",
            "provider" => "provider",
            "service" => "service",
            "reporter_type" => "reporter_type",
            "harm_type" => "harm_type",
            "occurred_at" => "occurred_at",
            "amount_krw" => "amount",
            "title" => "title",
            "description" => "description",
            "reporter" | "reporter.name" => "name",
            "reporter.phone" => "phone",
            "reporter.email" => "email",
            "notify" | "notify.sms" => "notify_sms",
            "notify.email" => "notify_email",
            _ => "consent",
        };
        let message = if detail == "required" {
            if field == "consent" {
                t.error_consent
            } else {
                t.error_required
            }
        } else if detail.starts_with("must be at most") {
            t.error_too_long
        } else {
            match field {
                "incident_id" => t.error_incident,
                "occurred_at" => t.error_occurred_at,
                "amount" => t.error_amount,
                "phone" if detail.starts_with("give a phone") => t.error_contact_needed,
                "phone" => t.error_phone,
                "email" => t.error_email,
                "notify_sms" => t.error_notify_sms,
                "notify_email" => t.error_notify_email,
                "consent" => t.error_consent,
                _ => t.error_invalid,
            }
        };
        out.entry(field).or_insert(message);
    }
    out
}

#[cfg(test)]
mod tests {
    use chrono::{TimeZone as _, Utc};

    use super::*;
    use crate::intake::ValidReport;
    use crate::web::i18n::{EN, KO};

    fn pairs(items: &[(&str, &str)]) -> Vec<(String, String)> {
        items
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    fn filled() -> ReportForm {
        ReportForm::from_pairs(pairs(&[
            ("provider", "Kakao"),
            ("service", "KakaoTalk"),
            ("reporter_type", "merchant"),
            ("harm_type", "business_loss"),
            ("occurred_at", "2022-10-15T15:30"),
            ("amount", "250,000원"),
            ("title", ""),
            ("description", "주문 알림이 멈췄습니다."),
            ("name", "홍길동"),
            ("phone", "010-1234-5678"),
            ("email", " "),
            ("notify_sms", "on"),
            ("consent", "on"),
            ("idem", "form-1"),
            ("unexpected", "ignored"),
        ]))
    }

    #[test]
    fn a_filled_form_passes_the_api_validator() {
        let form = filled();
        assert!(form.notify_sms && !form.notify_email && form.consent);
        let now = Utc.with_ymd_and_hms(2022, 10, 16, 0, 0, 0).unwrap();
        let report = ValidReport::from_json(&form.to_json(), now).unwrap();
        assert_eq!(report.amount_krw, Some(250_000));
        assert_eq!(
            report.occurred_at,
            Some(Utc.with_ymd_and_hms(2022, 10, 15, 6, 30, 0).unwrap())
        );
        assert_eq!(report.title, None);
        assert!(report.reporter.email.is_none());
    }

    #[test]
    fn findings_land_next_to_their_fields_in_either_language() {
        let mut form = filled();
        form.phone = "12345".into();
        form.amount = "많이".into();
        form.consent = false;
        form.description = String::new();
        let now = Utc.with_ymd_and_hms(2022, 10, 16, 0, 0, 0).unwrap();
        let errors = ValidReport::from_json(&form.to_json(), now).unwrap_err();
        let ko = page_errors(&errors, &KO);
        assert_eq!(ko["phone"], KO.error_phone);
        assert_eq!(ko["amount"], KO.error_amount);
        assert_eq!(ko["consent"], KO.error_consent);
        assert_eq!(ko["description"], KO.error_required);
        let en = page_errors(&errors, &EN);
        assert_eq!(en["phone"], EN.error_phone);
        assert_eq!(en.len(), ko.len());
    }
}
