//! The report a member of the public submits, parsed once into a [`ValidReport`].
//!
//! The body is walked field by field rather than deserialised in one go, so a `422` can name
//! every bad field by its JSON path (`reporter.phone`, `notify.sms`), not just the first.

use std::collections::BTreeMap;
use std::fmt::Display;
use std::str::FromStr;

use chrono::{DateTime, Duration, Utc};
use serde_json::{Map, Value};
use uuid::Uuid;

use crate::domain::{EmailAddress, HarmType, PhoneNumber, ReporterType};

pub const MAX_AMOUNT_KRW: i64 = 1_000_000_000_000;
const MAX_DESCRIPTION: usize = 5000;
const MAX_TITLE: usize = 200;
const MAX_NAME: usize = 100;
const MAX_PROVIDER: usize = 100;
/// Phones and PCs are often a little ahead; "in the future" means beyond this.
const CLOCK_SKEW: Duration = Duration::minutes(5);

/// The fields a report may carry, per object; anything else is refused.
pub const REPORT_FIELDS: &[&str] = &[
    "incident_id",
    "provider",
    "service",
    "reporter_type",
    "harm_type",
    "occurred_at",
    "amount_krw",
    "title",
    "description",
    "reporter",
    "notify",
    "consent",
];
pub const REPORTER_FIELDS: &[&str] = &["name", "phone", "email"];
pub const NOTIFY_FIELDS: &[&str] = &["sms", "email"];
pub const CONSENT_FIELDS: &[&str] = &["personal_info"];

/// Every JSON path a report may carry (`provider`, `reporter.phone`, …), as a `422` names them.
pub fn field_paths() -> impl Iterator<Item = String> {
    let nested = |object: &'static str, fields: &'static [&'static str]| {
        fields.iter().map(move |f| format!("{object}.{f}"))
    };
    REPORT_FIELDS
        .iter()
        .map(|f| (*f).to_owned())
        .chain(nested("reporter", REPORTER_FIELDS))
        .chain(nested("notify", NOTIFY_FIELDS))
        .chain(nested("consent", CONSENT_FIELDS))
}

/// JSON path → what is wrong with it.
pub type FieldErrors = BTreeMap<String, String>;

/// A harm report whose every field has been checked.
#[derive(Debug, Clone, PartialEq)]
pub struct ValidReport {
    pub incident_id: Option<Uuid>,
    pub provider: String,
    pub service: String,
    pub reporter_type: ReporterType,
    pub harm_type: HarmType,
    pub occurred_at: Option<DateTime<Utc>>,
    pub amount_krw: Option<i64>,
    pub title: Option<String>,
    pub description: String,
    pub reporter: Reporter,
    pub notify_sms: bool,
    pub notify_email: bool,
}

/// Who reported, and how to reach them. `Debug` shows only masked contacts.
#[derive(Debug, Clone, PartialEq)]
pub struct Reporter {
    pub name: String,
    pub phone: Option<PhoneNumber>,
    pub email: Option<EmailAddress>,
}

impl ValidReport {
    /// Check a parsed JSON body. `now` decides what "in the future" means.
    pub fn from_json(body: &Value, now: DateTime<Utc>) -> Result<Self, FieldErrors> {
        let mut errors = FieldErrors::new();
        let Some(root) = body.as_object() else {
            errors.insert("$".into(), "the body must be a JSON object".into());
            return Err(errors);
        };
        let mut f = Fields::new(root, "", &mut errors);
        f.reject_unknown(REPORT_FIELDS);
        let incident_id = f.parsed("incident_id", false, |s| {
            Uuid::parse_str(s).map_err(|_| "not an incident id")
        });
        let provider = f.text("provider", true, MAX_PROVIDER);
        let service = f.text("service", true, MAX_PROVIDER);
        let reporter_type = f.one_of::<ReporterType>("reporter_type", &REPORTER_TYPES);
        let harm_type = f.one_of::<HarmType>("harm_type", &HARM_TYPES);
        let occurred_at = f.parsed("occurred_at", false, |s| {
            let at = DateTime::parse_from_rfc3339(s)
                .map_err(|_| "must be an RFC 3339 time such as 2022-10-15T15:30:00+09:00")?
                .with_timezone(&Utc);
            if at > now + CLOCK_SKEW {
                return Err("must not be in the future");
            }
            Ok(at)
        });
        let amount_krw = f.integer("amount_krw", 0, MAX_AMOUNT_KRW);
        let title = f.text("title", false, MAX_TITLE);
        let description = f.text("description", true, MAX_DESCRIPTION);

        let (name, phone, email) = match f.object("reporter", true) {
            Some(obj) => {
                let mut r = Fields::new(obj, "reporter.", f.errors);
                r.reject_unknown(REPORTER_FIELDS);
                let name = r.text("name", true, MAX_NAME);
                let phone = r.parsed("phone", false, PhoneNumber::parse);
                let email = r.parsed("email", false, EmailAddress::parse);
                let (phone_given, email_given) = (r.present("phone"), r.present("email"));
                if !phone_given && !email_given {
                    r.error(
                        "phone",
                        "give a phone number or an e-mail address (or both)",
                    );
                }
                (name, phone, email)
            }
            None => (None, None, None),
        };
        let (notify_sms, notify_email) = match f.object("notify", false) {
            Some(obj) => {
                let mut n = Fields::new(obj, "notify.", f.errors);
                n.reject_unknown(NOTIFY_FIELDS);
                (
                    n.boolean("sms").unwrap_or(false),
                    n.boolean("email").unwrap_or(false),
                )
            }
            None => (false, false),
        };
        if let Some(obj) = f.object("consent", true) {
            let mut c = Fields::new(obj, "consent.", f.errors);
            c.reject_unknown(CONSENT_FIELDS);
            if c.boolean("personal_info") != Some(true) && !c.has_error("personal_info") {
                c.error(
                    "personal_info",
                    "consent to the use of personal information is required",
                );
            }
        }
        if notify_sms {
            match &phone {
                Some(p) if !p.is_mobile() => {
                    errors.insert(
                        "notify.sms".into(),
                        "SMS needs a mobile number (010-…) in reporter.phone".into(),
                    );
                }
                None if !errors.contains_key("reporter.phone") => {
                    errors.insert("notify.sms".into(), "SMS needs reporter.phone".into());
                }
                _ => {}
            }
        }
        if notify_email && email.is_none() && !errors.contains_key("reporter.email") {
            errors.insert("notify.email".into(), "e-mail needs reporter.email".into());
        }

        match (
            provider,
            service,
            reporter_type,
            harm_type,
            description,
            name,
        ) {
            (
                Some(provider),
                Some(service),
                Some(reporter_type),
                Some(harm_type),
                Some(description),
                Some(name),
            ) if errors.is_empty() => Ok(Self {
                incident_id,
                provider,
                service,
                reporter_type,
                harm_type,
                occurred_at,
                amount_krw,
                title,
                description,
                reporter: Reporter { name, phone, email },
                notify_sms,
                notify_email,
            }),
            _ => Err(errors),
        }
    }
}

const REPORTER_TYPES: [ReporterType; 4] = [
    ReporterType::Individual,
    ReporterType::PaidUser,
    ReporterType::Merchant,
    ReporterType::Business,
];
const HARM_TYPES: [HarmType; 6] = [
    HarmType::ServiceUnavailable,
    HarmType::PaidServiceLoss,
    HarmType::BusinessLoss,
    HarmType::DataLoss,
    HarmType::PaymentFailure,
    HarmType::Other,
];

/// Reads the fields of one JSON object, recording problems under `prefix` + field name.
pub(crate) struct Fields<'a> {
    obj: &'a Map<String, Value>,
    prefix: &'static str,
    pub(crate) errors: &'a mut FieldErrors,
}

impl<'a> Fields<'a> {
    pub(crate) fn new(
        obj: &'a Map<String, Value>,
        prefix: &'static str,
        errors: &'a mut FieldErrors,
    ) -> Self {
        Self {
            obj,
            prefix,
            errors,
        }
    }

    pub(crate) fn error(&mut self, name: &str, problem: impl Into<String>) {
        self.errors
            .entry(format!("{}{name}", self.prefix))
            .or_insert_with(|| problem.into());
    }

    fn has_error(&self, name: &str) -> bool {
        self.errors.contains_key(&format!("{}{name}", self.prefix))
    }

    /// The field is there with a non-null, non-blank value.
    fn present(&self, name: &str) -> bool {
        match self.obj.get(name) {
            None | Some(Value::Null) => false,
            Some(Value::String(s)) => !s.trim().is_empty(),
            Some(_) => true,
        }
    }

    pub(crate) fn reject_unknown(&mut self, known: &[&str]) {
        let unknown: Vec<String> = self
            .obj
            .keys()
            .filter(|k| !known.contains(&k.as_str()))
            .cloned()
            .collect();
        for key in unknown {
            self.error(&key, "unknown field");
        }
    }

    /// A trimmed string of at most `max` characters, without control characters.
    pub(crate) fn text(&mut self, name: &str, required: bool, max: usize) -> Option<String> {
        let text = match self.obj.get(name) {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => Some(s.trim()),
            Some(_) => {
                self.error(name, "must be a string");
                return None;
            }
        };
        let Some(text) = text.filter(|t| !t.is_empty()) else {
            if required {
                self.error(name, "required");
            }
            return None;
        };
        if text.chars().count() > max {
            self.error(name, format!("must be at most {max} characters"));
            return None;
        }
        if text
            .chars()
            .any(|c| c.is_control() && !matches!(c, '\n' | '\r' | '\t'))
        {
            self.error(name, "must not contain control characters");
            return None;
        }
        Some(text.to_owned())
    }

    /// A string field turned into a domain value by `parse`.
    pub(crate) fn parsed<T, E: Display>(
        &mut self,
        name: &str,
        required: bool,
        parse: impl FnOnce(&str) -> Result<T, E>,
    ) -> Option<T> {
        let text = self.text(name, required, 1000)?;
        match parse(&text) {
            Ok(value) => Some(value),
            Err(e) => {
                self.error(name, e.to_string());
                None
            }
        }
    }

    fn one_of<T: FromStr + AsRef<str>>(&mut self, name: &str, all: &[T]) -> Option<T> {
        let choices = || all.iter().map(AsRef::as_ref).collect::<Vec<_>>().join(", ");
        let text = self.text(name, true, 100)?;
        match text.parse() {
            Ok(value) => Some(value),
            Err(_) => {
                self.error(name, format!("must be one of: {}", choices()));
                None
            }
        }
    }

    fn integer(&mut self, name: &str, min: i64, max: i64) -> Option<i64> {
        match self.obj.get(name) {
            None | Some(Value::Null) => None,
            Some(Value::Number(n)) => match n.as_i64() {
                Some(v) if (min..=max).contains(&v) => Some(v),
                _ => {
                    self.error(name, format!("must be a whole number from {min} to {max}"));
                    None
                }
            },
            Some(_) => {
                self.error(name, "must be a number");
                None
            }
        }
    }

    pub(crate) fn boolean(&mut self, name: &str) -> Option<bool> {
        match self.obj.get(name) {
            None | Some(Value::Null) => None,
            Some(Value::Bool(b)) => Some(*b),
            Some(_) => {
                self.error(name, "must be true or false");
                None
            }
        }
    }

    fn object(&mut self, name: &str, required: bool) -> Option<&'a Map<String, Value>> {
        match self.obj.get(name) {
            None | Some(Value::Null) => {
                if required {
                    self.error(name, "required");
                }
                None
            }
            Some(Value::Object(obj)) => Some(obj),
            Some(_) => {
                self.error(name, "must be an object");
                None
            }
        }
    }
}

#[cfg(test)]
pub(super) mod tests {
    use chrono::TimeZone as _;
    use serde_json::json;

    use super::*;

    /// The instant the tests validate at.
    pub(in crate::intake) fn now() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2022, 10, 16, 0, 0, 0).unwrap()
    }

    fn valid() -> Value {
        json!({
            "provider": " Kakao ",
            "service": "KakaoTalk",
            "reporter_type": "paid_user",
            "harm_type": "paid_service_loss",
            "occurred_at": "2022-10-15T15:30:00+09:00",
            "description": "이모티콘 구독이 중단되었습니다.",
            "reporter": {"name": "홍길동", "email": "Hong@Example.kr"},
            "notify": {"email": true},
            "consent": {"personal_info": true}
        })
    }

    fn errors_of(body: &Value) -> FieldErrors {
        ValidReport::from_json(body, now()).unwrap_err()
    }

    #[test]
    fn a_valid_report_is_trimmed_and_typed() {
        let r = ValidReport::from_json(&valid(), now()).unwrap();
        assert_eq!(r.provider, "Kakao");
        assert_eq!(r.reporter_type, ReporterType::PaidUser);
        assert_eq!(r.harm_type, HarmType::PaidServiceLoss);
        assert_eq!(
            r.occurred_at,
            Some(Utc.with_ymd_and_hms(2022, 10, 15, 6, 30, 0).unwrap())
        );
        assert!(r.notify_email && !r.notify_sms);
        assert!(r.reporter.phone.is_none());
        assert_eq!(r.reporter.email.unwrap().normalised(), "hong@example.kr");
    }

    #[test]
    fn the_future_starts_after_a_little_clock_skew() {
        let mut body = valid();
        body["occurred_at"] = json!("2022-10-16T09:04:00+09:00");
        assert!(ValidReport::from_json(&body, now()).is_ok());
        body["occurred_at"] = json!("2022-10-16T09:06:00+09:00");
        assert_eq!(errors_of(&body)["occurred_at"], "must not be in the future");
        body["occurred_at"] = json!("yesterday");
        assert!(errors_of(&body)["occurred_at"].contains("RFC 3339"));
    }

    #[test]
    fn notification_channels_need_their_contact() {
        let mut body = valid();
        body["notify"] = json!({"sms": true, "email": true});
        let e = errors_of(&body);
        assert_eq!(e["notify.sms"], "SMS needs reporter.phone");
        assert!(!e.contains_key("notify.email"));

        body["reporter"] = json!({"name": "홍길동", "phone": "010-1234-5678"});
        let e = errors_of(&body);
        assert_eq!(e["notify.email"], "e-mail needs reporter.email");
        assert!(!e.contains_key("notify.sms"));
    }

    #[test]
    fn every_problem_is_reported_at_once() {
        let e = errors_of(&json!({
            "provider": "K\u{0007}akao",
            "reporter_type": "alien",
            "title": "t".repeat(201),
            "amount_krw": 1.5,
            "reporter": "홍길동",
            "notify": true,
            "consent": {"personal_info": "yes"}
        }));
        assert_eq!(e["provider"], "must not contain control characters");
        assert_eq!(e["service"], "required");
        assert!(e["reporter_type"].starts_with("must be one of: individual, paid_user"));
        assert_eq!(e["harm_type"], "required");
        assert_eq!(e["title"], "must be at most 200 characters");
        assert!(e["amount_krw"].contains("whole number"));
        assert_eq!(e["description"], "required");
        assert_eq!(e["reporter"], "must be an object");
        assert_eq!(e["notify"], "must be an object");
        assert_eq!(e["consent.personal_info"], "must be true or false");
    }

    #[test]
    fn lengths_count_characters_not_bytes() {
        let mut body = valid();
        body["description"] = json!("가".repeat(5000));
        assert!(ValidReport::from_json(&body, now()).is_ok());
        body["description"] = json!("가".repeat(5001));
        assert!(errors_of(&body).contains_key("description"));
        body["description"] = json!("   \n  ");
        assert_eq!(errors_of(&body)["description"], "required");
    }

    #[test]
    fn blank_optional_contacts_count_as_absent() {
        let mut body = valid();
        body["reporter"] = json!({"name": "홍길동", "phone": "  ", "email": null});
        assert!(errors_of(&body)["reporter.phone"].starts_with("give a phone number"));
    }
}
